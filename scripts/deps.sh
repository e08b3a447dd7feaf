#!/usr/bin/env bash
# Installs the system packages the build and tests need (only those missing) and starts the
# services the tests use (Mosquitto on 127.0.0.1:1883) if they are not running.
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
