#!/usr/bin/env bash
# Installs the system packages the build and tests need (only those missing) and starts the
# services the tests use (Mosquitto on 127.0.0.1:1883, PostgreSQL on 127.0.0.1:5432) if they are
# not running.
# Debian/Ubuntu; needs root (or sudo) only when something must be installed.
set -euo pipefail

# mosquitto: the reference MQTT 5 broker for the transport tests;
# cmake, libssl-dev, pkg-config: paho-mqtt's bundled C build (with TLS).
packages=(mosquitto cmake libssl-dev pkg-config)
missing=()
for pkg in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "please install: ${missing[*]} (as root)" >&2; exit 1; }
    sudo=sudo
  fi
  echo "==> installing ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}"
fi

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
if ! port_open 1883; then
  echo "==> starting mosquitto on 127.0.0.1:1883"
  if [ -f /etc/mosquitto/mosquitto.conf ]; then
    mosquitto -d -c /etc/mosquitto/mosquitto.conf
  else
    mosquitto -d -p 1883
  fi
  for _ in $(seq 50); do port_open 1883 && break; sleep 0.1; done
  port_open 1883 || { echo "mosquitto did not start" >&2; exit 1; }
fi

# PostgreSQL on 127.0.0.1:5432 for the PostgreSQL store's tests (user root, database test).
if ! port_open 5432; then
  if ! command -v pg_ctlcluster >/dev/null; then
    echo "==> installing postgresql"
    sudo=""; [ "$(id -u)" -ne 0 ] && sudo=sudo
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq postgresql
    # A cluster we just installed: trust loopback connections, as the tests' machines do.
    hba=$(ls /etc/postgresql/*/main/pg_hba.conf | sort -V | tail -1)
    $sudo sed -i '1i host all all 127.0.0.1/32 trust' "$hba"
  fi
  version=$(ls /etc/postgresql | sort -V | tail -1)
  echo "==> starting postgresql $version on 127.0.0.1:5432"
  pg_ctlcluster --skip-systemctl-redirect "$version" main start
  for _ in $(seq 100); do port_open 5432 && break; sleep 0.1; done
  port_open 5432 || { echo "postgresql did not start" >&2; exit 1; }
fi
# The role and database the tests use (a fresh install has neither).
if command -v psql >/dev/null && [ "$(id -u)" -eq 0 ] && id postgres >/dev/null 2>&1; then
  su postgres -c "psql -Atqc \"SELECT 1 FROM pg_roles WHERE rolname = 'root'\"" | grep -q 1 \
    || su postgres -c "createuser --superuser root"
  su postgres -c "psql -Atqc \"SELECT 1 FROM pg_database WHERE datname = 'test'\"" | grep -q 1 \
    || su postgres -c "createdb --owner root test"
fi
