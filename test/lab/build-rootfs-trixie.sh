#!/usr/bin/env bash
# Builds (once, cached) the Debian 13 (trixie) root file system of the "rpios-trixie" lab
# guests: NetworkManager 1.52 like Raspberry Pi OS's Trixie release, no ifupdown, no dhcpcd.
# Only this flavour needs a debootstrap of its own; the others share build-rootfs.sh's.
# Prints the path of the finished root. The mirror is read from this machine's apt sources.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cache=${PROVISION_LAB_CACHE:-$here/../../.cache/lab}
mkdir -p "$cache"
cache=$(cd "$cache" && pwd)
packages=systemd-sysv,udev,dbus,openssh-server,iproute2,kmod,iputils-ping,python3,python3-apt,sudo,procps,netbase,nftables,ca-certificates,network-manager,wpasupplicant,iw,hostapd
stamp=$(printf '%s\n' "$packages" "$(sha256sum "$0" | cut -c1-16)" | sha256sum | cut -c1-12)
root=$cache/rootfs-trixie-$stamp

exec 9>"$cache/rootfs-trixie.lock"
flock 9
if [ -f "$root/.complete" ]; then echo "$root"; exit 0; fi

mirror=$(sed -n 's/^URIs: *\([^ ]*debian\)$/\1/p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -1)
[ -n "$mirror" ] || mirror=$(awk '$1=="deb" && $2 !~ /security/ {print $2; exit}' /etc/apt/sources.list 2>/dev/null)
[ -n "$mirror" ] || { echo "build-rootfs-trixie: no Debian mirror found in this machine's apt sources" >&2; exit 1; }

rm -rf "$root" "$root.tmp"
echo "build-rootfs-trixie: debootstrap trixie into $root" >&2
start=$(date +%s)
# minbase leaves out ifupdown (priority important); the exclude says so should that change
debootstrap --variant=minbase --include="$packages" --exclude=ifupdown,dhcpcd-base trixie "$root.tmp" "$mirror" \
  >"$cache/debootstrap-trixie.log" 2>&1 || { tail -20 "$cache/debootstrap-trixie.log" >&2; exit 1; }
chmod 1777 "$root.tmp/tmp"
: > "$root.tmp/etc/apt/sources.list"
rm -f "$root.tmp"/etc/apt/sources.list.d/*
rm -f "$root.tmp"/etc/ssh/ssh_host_*key* "$root.tmp/etc/machine-id"
: > "$root.tmp/etc/machine-id"
rm -rf "$root.tmp"/var/cache/apt/archives/*.deb "$root.tmp"/var/lib/apt/lists/*_Packages
mv "$root.tmp" "$root"
touch "$root/.complete"
echo "build-rootfs-trixie: done in $(( $(date +%s) - start ))s" >&2
echo "$root"
