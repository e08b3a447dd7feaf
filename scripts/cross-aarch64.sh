#!/usr/bin/env bash
# Cross-builds opentwins-edge for aarch64-unknown-linux-gnu (release: thin LTO, one codegen unit,
# stripped) and smoke-tests it under qemu-aarch64: --print-default-config, then a start with the
# HTTP API on a free port and MQTT off, a /health request, and a SIGTERM stop.
#   scripts/cross-aarch64.sh            build + smoke test, prints the binary size
# Needs Debian's gcc-aarch64-linux-gnu, libc6-dev-arm64-cross and qemu-user (installed when
# missing) and the rustup target (added). OpenSSL for the MQTT client's TLS is built from source
# for the target (feature vendored-openssl), so no arm64 system libraries are needed.
set -euo pipefail
cd "$(dirname "$0")/.."
target=aarch64-unknown-linux-gnu

packages=(gcc-aarch64-linux-gnu g++-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user cmake perl make curl)
missing=()
for pkg in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  sudo=""; [ "$(id -u)" -ne 0 ] && sudo=sudo
  echo "==> installing ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}"
fi
rustup target list --installed | grep -q "^$target\$" || rustup target add "$target"

export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
export CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc
export CXX_aarch64_unknown_linux_gnu=aarch64-linux-gnu-g++
export AR_aarch64_unknown_linux_gnu=aarch64-linux-gnu-ar
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="qemu-aarch64 -L /usr/aarch64-linux-gnu"

echo "==> cargo build --release --target $target -p opentwins-edge --features vendored-openssl"
start=$(date +%s)
cargo build --release -j2 --target "$target" -p opentwins-edge --features vendored-openssl
echo "    built in $(( $(date +%s) - start )) s"
target_dir="${CARGO_TARGET_DIR:-target}"
bin="$target_dir/$target/release/opentwins-edge"
file "$bin" 2>/dev/null || true
size=$(stat -c %s "$bin")
echo "==> binary size: $size bytes ($(( size / 1024 / 1024 )) MiB)"

run() { qemu-aarch64 -L /usr/aarch64-linux-gnu "$bin" "$@"; }
echo "==> smoke test: --print-default-config"
run --print-default-config | grep -q '^instance_id = "edge"'

echo "==> smoke test: start, /health, SIGTERM"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cat > "$work/edge.toml" <<TOML
listen = "127.0.0.1:0"
data_dir = "$work/data"
[enable]
mqtt = false
TOML
# Started directly (not through `run`) so that $! is the emulator running the edge.
qemu-aarch64 -L /usr/aarch64-linux-gnu "$bin" --config "$work/edge.toml" \
  > "$work/stdout" 2> "$work/stderr" &
pid=$!
for _ in $(seq 600); do
  grep -q "listening on" "$work/stdout" 2>/dev/null && break
  kill -0 "$pid" 2>/dev/null || { cat "$work/stderr"; echo "the edge exited" >&2; exit 1; }
  sleep 0.1
done
addr=$(sed -n 's/^listening on //p' "$work/stdout")
[ -n "$addr" ] || { cat "$work/stderr"; echo "the edge did not start" >&2; exit 1; }
curl -fsS "$addr/health" > /dev/null
rss_kb=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")
kill -TERM "$pid"
status=0
wait "$pid" || status=$?
[ "$status" -eq 0 ] || { cat "$work/stderr"; echo "the edge exited with $status on SIGTERM" >&2; exit 1; }
echo "==> ok: $addr answered /health; RSS under qemu ${rss_kb} kB; stopped cleanly on SIGTERM"
