#!/usr/bin/env bash
# Builds (once, cached) a debootstrapped root file system and prints its path:
#   build-rootfs.sh [bookworm]  Debian 12, shared by the lightweight sshd test hosts and the
#                               Debian 12 lab flavours (debian12, rpios-bookworm, networkd)
#   build-rootfs.sh trixie      Debian 13 for the rpios-trixie flavour: NetworkManager 1.52 like
#                               Raspberry Pi OS's Trixie release, no ifupdown, no dhcpcd
# The mirror is read from this machine's own apt sources, so no host is named here.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cache=${PROVISION_LAB_CACHE:-$here/../../.cache/lab}
mkdir -p "$cache"
cache=$(cd "$cache" && pwd)
suite=${1:-bookworm}
case $suite in
  bookworm)
    packages=systemd-sysv,udev,openssh-server,ifupdown,iproute2,kmod,iputils-ping,python3,python3-apt,sudo,dhcpcd-base,procps,netbase,nftables,ca-certificates
    exclude='' name=rootfs ;;
  trixie)
    packages=systemd-sysv,udev,dbus,openssh-server,iproute2,kmod,iputils-ping,python3,python3-apt,sudo,procps,netbase,nftables,ca-certificates,network-manager,wpasupplicant,iw,hostapd
    # minbase leaves out ifupdown (priority important); the exclude says so should that change
    exclude=--exclude=ifupdown,dhcpcd-base name=rootfs-trixie ;;
  *) echo "build-rootfs: unknown suite $suite (bookworm or trixie)" >&2; exit 64 ;;
esac
stamp=$(printf '%s\n' "$packages" "$(sha256sum "$0" | cut -c1-16)" | sha256sum | cut -c1-12)
root=$cache/$name-$stamp

exec 9>"$cache/$name.lock"
flock 9
if [ -f "$root/.complete" ]; then echo "$root"; exit 0; fi

mirror=$(sed -n 's/^URIs: *\([^ ]*debian\)$/\1/p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -1)
[ -n "$mirror" ] || mirror=$(awk '$1=="deb" && $2 !~ /security/ {print $2; exit}' /etc/apt/sources.list 2>/dev/null)
[ -n "$mirror" ] || { echo "build-rootfs: no Debian mirror found in this machine's apt sources" >&2; exit 1; }

rm -rf "$root" "$root.tmp"
echo "build-rootfs: debootstrap $suite into $root (1-3 minutes)" >&2
start=$(date +%s)
# shellcheck disable=SC2086 # $exclude is one word or none
debootstrap --variant=minbase --include="$packages" $exclude "$suite" "$root.tmp" "$mirror" >"$cache/debootstrap-$suite.log" 2>&1 \
  || { tail -20 "$cache/debootstrap-$suite.log" >&2; exit 1; }
chmod 1777 "$root.tmp/tmp"
# The hosts get their apt sources from the lab; the build mirror is not reachable from them.
: > "$root.tmp/etc/apt/sources.list"
rm -f "$root.tmp"/etc/apt/sources.list.d/*
rm -f "$root.tmp"/etc/ssh/ssh_host_*key* "$root.tmp/etc/machine-id"
: > "$root.tmp/etc/machine-id"
rm -rf "$root.tmp"/var/cache/apt/archives/*.deb "$root.tmp"/var/lib/apt/lists/*_Packages
mv "$root.tmp" "$root"
touch "$root/.complete"
echo "build-rootfs: done in $(( $(date +%s) - start ))s" >&2
echo "$root"
