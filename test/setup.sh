#!/usr/bin/env bash
# Installs everything provision's tests and lab need on a fresh Debian 12 machine
# (as root), then the npm dependencies, then builds. Quick when all is there.
# Extra Debian packages may be named as arguments (the benchmark adds ansible and time).
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(debootstrap qemu-system-x86 qemu-utils openssh-server openssh-client iproute2 dpkg-dev
  e2fsprogs iputils-ping cpio busybox-static kmod python3 util-linux ca-certificates chromium age nats-server "$@")
missing=()
# GLib's own key-file reader (python3-gi), for the unit tests of the NetworkManager keyfile reader
packages+=(python3-gi gir1.2-glib-2.0)
# npm run lint checks every shell script the project ships
packages+=(shellcheck)
for p in "${packages[@]}"; do
  dpkg-query -W -f '${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  [ "$(id -u)" = 0 ] || { echo "setup: need root to install: ${missing[*]}" >&2; exit 1; }
  echo "setup: installing ${missing[*]}"
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund
fi
npm run build --silent
