#!/usr/bin/env bash
# Builds (once, cached) what the real-kernel QEMU lab boots, for one guest flavour:
#   build-images.sh [debian12|rpios-bookworm|rpios-trixie|networkd]   (default debian12)
#   vmlinuz      Debian 12's own kernel (the host kernel has no bonding), and
#   vmlinux      the same, uncompressed (booted through PVH: no decompression under TCG)
#   initrd.gz    a busybox initramfs: insmod virtio + ext4, mount /dev/vda, switch_root
#   rootfs.img   raw ext4 disk made from a COPY of a base root (build-rootfs.sh, shared with
#                the sshd test hosts; trixie: build-rootfs.sh trixie) plus the flavour's
#                network stack, the kernel's modules, sshd with a lab key, the lab radio's
#                oneshot and a boot-time oneshot that fills in the guest's address from the
#                kernel command line (scripts and units in guest/)
#   id_ed25519   the lab's SSH client key (generated once, kept across rebuilds)
#   host_key.pub the guests' (shared) ssh host key, for the lab's known_hosts
#   kernel-version
# Flavours (every one has wpasupplicant, iw, hostapd):
#   debian12        Debian 12, ifupdown + dhcpcd-base (the lab's original guest)
#   rpios-bookworm  Debian 12 like Raspberry Pi OS Bookworm: NetworkManager 1.42, no ifupdown, no dhcpcd
#   rpios-trixie    Debian 13 like Raspberry Pi OS Trixie: NetworkManager 1.52, no ifupdown, no dhcpcd;
#                   it boots Debian 12's 6.1 kernel like every flavour (the lab has one kernel)
#   networkd        Debian 12 with systemd-networkd owning eth0, no ifupdown, no NetworkManager
# The output folder is keyed by a stamp of this script, guest/ and the base root (by its
# own stamped name, not where the cache is: a cache copied elsewhere is still found), so a
# changed script rebuilds. Prints the folder's path on stdout; progress goes to stderr.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cache=${PROVISION_LAB_CACHE:-$here/../../.cache/lab}
mkdir -p "$cache"
cache=$(cd "$cache" && pwd)
flavour=${1:-debian12}
case $flavour in
  debian12|rpios-bookworm|networkd) base=$(bash "$here/build-rootfs.sh") ;;
  rpios-trixie) base=$(bash "$here/build-rootfs.sh" trixie) ;;
  *) echo "build-images: unknown flavour $flavour" >&2; exit 64 ;;
esac
stamp=$(printf '%s\n' "$flavour" "$(basename "$base")" "$(cat "$0" "$here/chroot-apt.sh" "$here"/guest/* | sha256sum | cut -c1-16)" | sha256sum | cut -c1-12)
out=$cache/images-$flavour-$stamp

exec 8>"$cache/images-$flavour.lock"
flock 8
if [ -f "$out/.complete" ]; then echo "$out"; exit 0; fi

say() { echo "build-images $flavour: $*" >&2; }
t0=$(date +%s.%N); tp=$t0
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%6.1fs", b - a }'; }
phase() { local now; now=$(date +%s.%N); say "$(printf '%-28s' "$1") $(elapsed "$tp" "$now")"; tp=$now; }

work=$cache/images-$flavour-$stamp.tmp
rm -rf "$work" "$out"
mkdir -p "$work"
trap 'rm -rf "$work"' EXIT

# --- 1. Debian's kernel ------------------------------------------------------------
debs=$cache/debs
mkdir -p "$debs"
chmod 755 "$debs"
download() { # apt-get download into $debs, refreshing the lists once if needed
  (cd "$debs" && apt-get download "$@" >/dev/null 2>&1) \
    || { apt-get update >/dev/null && (cd "$debs" && apt-get download "$@" >/dev/null 2>&1); } \
    || { say "apt-get download $* failed"; exit 1; }
}
first() { for f in "$@"; do [ -e "$f" ] && { echo "$f"; return; }; done; return 0; } # the first path a glob matched, if any
meta=$(first "$debs"/linux-image-amd64_*.deb)
if [ -z "$meta" ]; then download linux-image-amd64; meta=$(first "$debs"/linux-image-amd64_*.deb); fi
kpkg=$(dpkg-deb -f "$meta" Depends | tr ',|' '\n' | sed 's/(.*//; s/ //g' | grep -E '^linux-image-[0-9].*-amd64$' | head -1)
[ -n "$kpkg" ] || { say "no versioned kernel in the Depends of $meta"; exit 1; }
kdeb=$(first "$debs"/"${kpkg}"_*.deb)
if [ -z "$kdeb" ]; then download "$kpkg"; kdeb=$(first "$debs"/"${kpkg}"_*.deb); fi
kernel=$work/kernel
mkdir -p "$kernel"
dpkg-deb -x "$kdeb" "$kernel"
kver=$(first "$kernel"/lib/modules/*); kver=${kver##*/}
cp "$kernel/boot/vmlinuz-$kver" "$work/vmlinuz"
echo "$kver" > "$work/kernel-version"
# The bzImage decompresses itself (xz) under TCG before printing a line: 3-10 s of every boot
# and reboot. QEMU boots the uncompressed ELF vmlinux directly through its PVH entry point
# (CONFIG_PVH=y) in well under a second, so extract it; the lab falls back to vmlinuz.
offset=$(LC_ALL=C grep -obUaP '\xfd7zXZ\x00' "$work/vmlinuz" | head -1 | cut -d: -f1 || true)
if [ -n "$offset" ] && grep -qx 'CONFIG_PVH=y' "$kernel/boot/config-$kver"; then
  tail -c +$((offset + 1)) "$work/vmlinuz" | xz -dc > "$work/vmlinux" 2>/dev/null || true   # trailing data after the stream
  [ "$(head -c 4 "$work/vmlinux" | od -An -tx1 | tr -d ' ')" = 7f454c46 ] || rm -f "$work/vmlinux"
fi
[ -f "$work/vmlinux" ] || say "could not extract an uncompressed vmlinux; guests boot the (slower) vmlinuz"
phase "kernel $kver"

# --- 2. busybox initramfs --------------------------------------------------------------
depmod -b "$kernel" "$kver"
initramfs=$work/initramfs
mkdir -p "$initramfs"/{bin,dev,proc,sys,newroot,modules}
busybox=$(command -v busybox)
if ldd "$busybox" >/dev/null 2>&1; then say "$busybox is not static (install busybox-static)"; exit 1; fi
cp "$busybox" "$initramfs/bin/busybox"
: > "$initramfs/modules/order"
for m in virtio_pci virtio_blk crc32c_generic ext4; do
  modprobe -C /dev/null -d "$kernel" -S "$kver" --show-depends "$m" | awk '$1=="insmod"{print $2}' |
  while read -r ko; do
    name=$(basename "$ko")
    case $name in crc32c-intel.ko) continue ;; esac   # a softdep of ext4; needs SSE4.2, which TCG lacks
    grep -qx "$name" "$initramfs/modules/order" && continue
    cp "$ko" "$initramfs/modules/$name"
    echo "$name" >> "$initramfs/modules/order"
  done
done
cat > "$initramfs/init" <<'EOF'
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
while read -r m; do insmod "/modules/$m" || echo "initramfs: insmod $m failed"; done < /modules/order
i=0
while [ ! -b /dev/vda ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
if ! mount -t ext4 -o rw /dev/vda /newroot; then echo "initramfs: cannot mount /dev/vda"; exec sh; fi
umount /proc /sys
mount --move /dev /newroot/dev
exec switch_root /newroot /sbin/init
EOF
chmod 755 "$initramfs/init"
(cd "$initramfs" && find . | cpio -o -H newc --quiet | gzip -1) > "$work/initrd.gz"
phase "initramfs ($(wc -l < "$initramfs/modules/order") modules)"

# --- 3. keys (generated once, outside the stamped folder) -------------------------------
keys=$cache/lab-keys
mkdir -p "$keys"
chmod 700 "$keys"
[ -f "$keys/id_ed25519" ] || ssh-keygen -q -t ed25519 -N '' -C provision-lab -f "$keys/id_ed25519"
for t in ed25519 ecdsa rsa; do
  [ -f "$keys/ssh_host_${t}_key" ] || ssh-keygen -q -t "$t" -N '' -C provision-lab-guest -f "$keys/ssh_host_${t}_key"
done
cp "$keys/id_ed25519" "$keys/id_ed25519.pub" "$work/"
chmod 600 "$work/id_ed25519"
cp "$keys/ssh_host_ed25519_key.pub" "$work/host_key.pub"
phase "keys"

# --- 4. root file system: a copy of the base, then the guest's own bits -----------------
root=$work/root
cp -a "$base" "$root"
rm -f "$root/.complete"
mkdir -p "$root/lib/modules"
cp -a "$kernel/lib/modules/$kver" "$root/lib/modules/"
chroot "$root" depmod "$kver"
phase "copy root + modules"

# the flavour's network stack (Debian 12 flavours; trixie's debootstrap already has its own)
mirror=$(sed -n 's/^URIs: *\([^ ]*debian\)$/\1/p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -1)
[ -n "$mirror" ] || mirror=$(awk '$1=="deb" && $2 !~ /security/ {print $2; exit}' /etc/apt/sources.list 2>/dev/null)
wifi_tools=(wpasupplicant iw hostapd)
case $flavour in
  debian12) bash "$here/chroot-apt.sh" "$root" bookworm "$cache/debs-bookworm" "$mirror" "${wifi_tools[@]}" ;;
  rpios-bookworm) bash "$here/chroot-apt.sh" "$root" bookworm "$cache/debs-bookworm" "$mirror" network-manager dbus "${wifi_tools[@]}" ifupdown- dhcpcd-base- ;;
  networkd) bash "$here/chroot-apt.sh" "$root" bookworm "$cache/debs-bookworm" "$mirror" dbus "${wifi_tools[@]}" ifupdown- dhcpcd-base- ;;
  rpios-trixie) : ;;
esac >"$cache/apt-$flavour.log" 2>&1 || { tail -20 "$cache/apt-$flavour.log" >&2; exit 1; }
phase "packages"

# sshd: the lab key for root, shared pre-generated host keys
install -d -m 700 "$root/root/.ssh"
install -m 600 "$keys/id_ed25519.pub" "$root/root/.ssh/authorized_keys"
for t in ed25519 ecdsa rsa; do
  install -m 600 "$keys/ssh_host_${t}_key" "$root/etc/ssh/"
  install -m 644 "$keys/ssh_host_${t}_key.pub" "$root/etc/ssh/"
done
mkdir -p "$root/etc/ssh/sshd_config.d"
cat > "$root/etc/ssh/sshd_config.d/provision-lab.conf" <<'EOF'
PermitRootLogin prohibit-password
UseDNS no
EOF

# A machine id in the image means systemd does not treat each boot of a fresh overlay as
# a "first boot" (which would run preset-all and enable systemd-networkd & co.).
echo 5c0ffee0b0a710adf00d000000000001 > "$root/etc/machine-id"
echo "/dev/vda / ext4 rw,errors=remount-ro 0 0" > "$root/etc/fstab"

# apt: the lab repository is the only source
echo "deb [trusted=yes] http://10.77.0.1:8080 ./" > "$root/etc/apt/sources.list"
rm -f "$root"/etc/apt/sources.list.d/*
find "$root/var/lib/apt/lists" -maxdepth 1 -type f -delete   # the build mirror's lists
# shellcheck disable=SC2016 # ${Status} is dpkg-query's field, not the shell's
if chroot "$root" dpkg-query -W -f='${Status}' ifenslave 2>/dev/null | grep -q 'ok installed'; then
  say "the base root has ifenslave installed; guests must not"; exit 1
fi

# NIC names: net.ifnames=0 gives eth0, eth1; a NIC whose MAC is 52:54:00:77:* becomes wlan0
cat > "$root/etc/udev/rules.d/70-provision-lab-wlan0.rules" <<'EOF'
# provision lab: the guest's "Wi-Fi" NIC (a virtio NIC with a 52:54:00:77:* MAC) is named wlan0
SUBSYSTEM=="net", ACTION=="add", KERNEL=="eth*", DRIVERS=="virtio_net", ATTR{address}=="52:54:00:77:*", NAME="wlan0"
EOF

# A NIC with a 52:54:00:a1:* MAC is the lab radio's access point side (see guest/provision-lab-air.sh)
cat > "$root/etc/udev/rules.d/70-provision-lab-airlink.rules" <<'EOF'
# provision lab: the access point's link to the lab bridge (a virtio NIC with a 52:54:00:a1:* MAC) is named airlink
SUBSYSTEM=="net", ACTION=="add", KERNEL=="eth*", DRIVERS=="virtio_net", ATTR{address}=="52:54:00:a1:*", NAME="airlink"
EOF

# hostname and the network stack's files are per guest: filled in at boot from the kernel
# command line (provision.addr=, provision.gw=, provision.hostname=) by provision-lab-config,
# but only while they are still the lab's unconfigured templates, so what provision writes
# later survives.
echo lab-unconfigured > "$root/etc/hostname"
install -m 755 "$here/guest/provision-lab-config.sh" "$root/usr/local/sbin/provision-lab-config"
install -m 755 "$here/guest/provision-lab-air.sh" "$root/usr/local/sbin/provision-lab-air"
install -m 755 "$here/guest/provision-lab-station.sh" "$root/usr/local/sbin/provision-lab-station"
install -d -m 700 "$root/etc/provision-lab"
install -m 600 "$here/guest/lab-wifi.env" "$root/etc/provision-lab/wifi.env"
install -m 644 "$here/guest/provision-lab-config.service" "$here/guest/provision-lab-air.service" "$root/etc/systemd/system/"
services=(ssh.service provision-lab-config.service provision-lab-air.service)
case $flavour in
  debian12)
    cat > "$root/etc/network/interfaces" <<'EOF'
# interfaces(5) file used by ifup(8) and ifdown(8)
# provision-lab: unconfigured template, filled in at boot from provision.addr= on the kernel command line
source /etc/network/interfaces.d/*
EOF
    services+=(networking.service)
    # wpasupplicant's own unit is its D-Bus service; this flavour has no D-Bus (ifupdown starts wpa_supplicant itself)
    chroot "$root" systemctl disable -q wpa_supplicant.service ;;
  rpios-*)
    rm -rf "$root/etc/network/interfaces" "$root/etc/network/interfaces.d"
    install -m 644 "$here/guest/90-provision-lab-air.conf" "$root/etc/NetworkManager/conf.d/"
    mkdir -p "$root/var/lib/provision-lab"
    touch "$root/var/lib/provision-lab/unconfigured"
    services+=(NetworkManager.service) ;;
  networkd)
    rm -rf "$root/etc/network/interfaces" "$root/etc/network/interfaces.d"
    mkdir -p "$root/var/lib/provision-lab" "$root/etc/systemd/network"
    touch "$root/var/lib/provision-lab/unconfigured"
    services+=(systemd-networkd.service) ;;
esac
# each flavour has its own stack and none of the others'
for p in ifupdown dhcpcd-base network-manager; do
  # shellcheck disable=SC2016 # ${Status} is dpkg-query's field, not the shell's
  installed=$(chroot "$root" dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
  case "$flavour $p" in
    "debian12 ifupdown"|"debian12 dhcpcd-base"|"rpios-bookworm network-manager"|"rpios-trixie network-manager") wanted=yes ;;
    *) wanted=no ;;
  esac
  have=no
  [ "$installed" = "install ok installed" ] && have=yes
  [ "$have" = "$wanted" ] || { say "$flavour: $p installed=$have, should be $wanted"; exit 1; }
done

chroot "$root" systemctl enable -q "${services[@]}"
# boot fast: nothing periodic, no consoles, no competing network managers
masks=(apt-daily.timer apt-daily-upgrade.timer apt-daily.service apt-daily-upgrade.service
  dpkg-db-backup.timer e2scrub_all.timer e2scrub_reap.service fstrim.timer systemd-tmpfiles-clean.timer
  systemd-networkd-wait-online.service systemd-resolved.service
  systemd-firstboot.service getty@tty1.service serial-getty@ttyS0.service
  systemd-timesyncd.service systemd-pstore.service hostapd.service)
[ "$flavour" = networkd ] || masks+=(systemd-networkd.service)
chroot "$root" systemctl mask -q "${masks[@]}"
phase "configure root"

mkfs.ext4 -q -F -L lab-root -d "$root" "$work/rootfs.img" 2G >/dev/null
rm -rf "$root" "$kernel" "$initramfs"
phase "mkfs rootfs.img"

trap - EXIT
touch "$work/.complete"
mv "$work" "$out"
# older builds are no longer needed (guests still running on them keep their open files)
for old in "$cache"/images-"$flavour"-*; do
  [ "$old" = "$out" ] || [ ! -d "$old" ] || rm -rf "$old"
done
say "$(printf '%-28s' total) $(elapsed "$t0" "$(date +%s.%N)")"
echo "$out"
