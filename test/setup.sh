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
# the pull lab's NAT router (test/lab/pull-lab.ts): nft in a namespace of the lab's own
packages+=(nftables)
for p in "${packages[@]}"; do
  dpkg-query -W -f '${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  [ "$(id -u)" = 0 ] || { echo "setup: need root to install: ${missing[*]}" >&2; exit 1; }
  echo "setup: installing ${missing[*]}"
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# promtool (Prometheus' own text-format checker) for the metrics tests, taken out of Debian's
# prometheus .deb without installing the package: no prometheus daemon is ever started.
tools="${PROVISION_LAB_CACHE:-.cache/lab}/tools"
if ! "$tools/promtool" --version >/dev/null 2>&1; then
  echo "setup: extracting promtool from Debian's prometheus package into $tools"
  mkdir -p "$tools"
  scratch=$(mktemp -d)
  trap 'rm -rf "$scratch"' EXIT
  chmod 0755 "$scratch" # apt's download sandbox (user _apt) writes there
  (cd "$scratch" && { apt-get download -q -o APT::Sandbox::User=root prometheus || { apt-get update -q && apt-get download -q -o APT::Sandbox::User=root prometheus; }; })
  dpkg-deb -x "$scratch"/prometheus_*.deb "$scratch/root"
  install -m 0755 "$scratch/root/usr/bin/promtool" "$tools/promtool.new"
  mv "$tools/promtool.new" "$tools/promtool"
fi

if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund
fi
npm run build --silent
