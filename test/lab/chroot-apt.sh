#!/usr/bin/env bash
# Runs apt-get inside a root file system being built, with this machine's Debian mirror
# as its only source, downloaded .debs kept in CACHE across builds, and no service started.
#   chroot-apt.sh ROOT SUITE CACHE MIRROR PACKAGE...   (PACKAGE- purges it, as apt-get install does)
# Runs in its own mount namespace (unshare -m), so its mounts vanish with it.
set -euo pipefail
root=$1 suite=$2 cache=$3 mirror=$4
shift 4
if [ "${UNSHARED:-}" != 1 ]; then
  exec env UNSHARED=1 unshare -m --propagation private "$0" "$root" "$suite" "$cache" "$mirror" "$@"
fi
mkdir -p "$cache"
mount -t proc proc "$root/proc"
mount --bind /dev "$root/dev"
mount --bind "$cache" "$root/var/cache/apt/archives"
cp "$root/etc/apt/sources.list" "$root/etc/apt/sources.list.provision-lab"
echo "deb $mirror $suite main" > "$root/etc/apt/sources.list"
[ -e "$root/etc/resolv.conf" ] && cp -a "$root/etc/resolv.conf" "$root/etc/resolv.conf.provision-lab"
rm -f "$root/etc/resolv.conf"
cp /etc/resolv.conf "$root/etc/resolv.conf"
printf '#!/bin/sh\nexit 101\n' > "$root/usr/sbin/policy-rc.d"
chmod 755 "$root/usr/sbin/policy-rc.d"
restore() {
  rm -f "$root/usr/sbin/policy-rc.d" "$root/etc/resolv.conf"
  [ -e "$root/etc/resolv.conf.provision-lab" ] && mv "$root/etc/resolv.conf.provision-lab" "$root/etc/resolv.conf"
  mv "$root/etc/apt/sources.list.provision-lab" "$root/etc/apt/sources.list"
  find "$root/var/lib/apt/lists" -maxdepth 1 -type f -delete
}
trap restore EXIT
export DEBIAN_FRONTEND=noninteractive
[ -n "$(find "$root/var/lib/apt/lists" -maxdepth 1 -name '*_Packages*' -print -quit)" ] || chroot "$root" apt-get -q update
chroot "$root" apt-get -q install -y --purge --no-install-recommends "$@"
