#!/usr/bin/env bash
# The paper's tests on this machine (docs/benchmarks.md, "The paper's tests"): installs what is
# missing (Mosquitto, cmake: scripts/deps.sh), builds the release binaries, runs a program.
#   benches/scripts/paper.sh latency   [args]   Test 1: latency, centralized vs distributed
#   benches/scripts/paper.sh resources [args]   Test 2: CPU, memory, network, full vs light
#   benches/scripts/paper.sh scale     [args]   N vehicles through one hub
#   benches/scripts/paper.sh all                the three, default arguments
# Results (CSV, JSON, SVG) go to docs/results/paper unless --out says otherwise. Test 2 also runs
# the aarch64 edge under qemu when scripts/cross-aarch64.sh has built it (CARGO_TARGET_DIR, or
# target/, then target-aarch64/ in that order).
set -euo pipefail
cd "$(dirname "$0")/../.."
[ $# -ge 1 ] || { sed -n '2,10p' "$0"; exit 2; }
scripts/deps.sh
cargo build --release -j2 --workspace --bins
release="${CARGO_TARGET_DIR:-target}/release"

aarch64_args=()
for dir in "${CARGO_TARGET_DIR:-target}" target-aarch64 "${AARCH64_TARGET_DIR:-}"; do
  bin="$dir/aarch64-unknown-linux-gnu/release/opentwins-edge"
  if [ -n "$dir" ] && [ -x "$bin" ] && command -v qemu-aarch64 >/dev/null; then
    aarch64_args=(--edge-aarch64 "$bin")
    break
  fi
done

program=$1
shift
case "$program" in
  latency | scale) "$release/$program" "$@" ;;
  resources) "$release/resources" "${aarch64_args[@]}" "$@" ;;
  all)
    "$release/latency"
    "$release/resources" "${aarch64_args[@]}"
    "$release/scale"
    ;;
  *) echo "unknown program '$program' (latency, resources, scale, all)" >&2; exit 2 ;;
esac
