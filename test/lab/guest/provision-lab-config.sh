#!/bin/sh
# provision lab: per-guest settings from the kernel command line, applied only to the
# image's unconfigured templates, so what provision writes later survives a reboot.
#   provision.addr=10.77.0.11/24 provision.gw=10.77.0.1 provision.hostname=pi1
#   provision.net=eth1=10.10.1.1/24,eth2=…   more NICs with static addresses (no gateway)
#   provision.air=1   the lab radio (rpios-*: an Imager-like profile for the network in /etc/provision-lab/wifi.env)
addr='' gw='' name='' net='' air='' ssid='' psk=''
# shellcheck disable=SC2013 # the kernel command line is one line of words
for word in $(cat /proc/cmdline); do
  case "$word" in
    provision.addr=*) addr=${word#provision.addr=} ;;
    provision.net=*) net=${word#provision.net=} ;;
    provision.gw=*) gw=${word#provision.gw=} ;;
    provision.hostname=*) name=${word#provision.hostname=} ;;
    provision.air=*) air=${word#provision.air=} ;;
  esac
done
if [ -n "$name" ] && [ "$(cat /etc/hostname 2>/dev/null)" = lab-unconfigured ]; then
  echo "$name" > /etc/hostname
  printf '127.0.1.1\t%s\n' "$name" >> /etc/hosts
fi
[ -s /etc/hostname ] && hostname "$(cat /etc/hostname)"

# ifupdown (debian12): /etc/network/interfaces while it is the image's template
if [ -n "$addr" ] && [ -e /sbin/ifup ] && { [ ! -e /etc/network/interfaces ] || grep -q '^# provision-lab: unconfigured template' /etc/network/interfaces; }; then
  cat > /etc/network/interfaces.new <<END
# This file describes the network interfaces available on your system
# and how to activate them. For more information, see interfaces(5).

source /etc/network/interfaces.d/*

# The loopback network interface
auto lo
iface lo inet loopback

# The primary network interface
auto eth0
iface eth0 inet static
	address $addr
END
  [ -n "$gw" ] && printf '\tgateway %s\n' "$gw" >> /etc/network/interfaces.new
  for pair in $(echo "$net" | tr ',' ' '); do
    printf '\nauto %s\niface %s inet static\n\taddress %s\n' "${pair%%=*}" "${pair%%=*}" "${pair#*=}" >> /etc/network/interfaces.new
  done
  mv /etc/network/interfaces.new /etc/network/interfaces
fi

# NetworkManager and systemd-networkd flavours: their files are written once, on the first
# boot of a guest (the image carries this marker, removed once they are written).
marker=/var/lib/provision-lab/unconfigured
[ -e "$marker" ] && [ -n "$addr" ] || exit 0

nm_profile() { # FILE ID: an NM keyfile, root-only like every keyfile NM accepts
  umask 077
  cat > "/etc/NetworkManager/system-connections/$1.nmconnection"
  umask 022
}

if [ -d /etc/NetworkManager/system-connections ]; then
  # named like the profile `nmcli connection modify "Wired connection 1" …` leaves on a Pi
  nm_profile "Wired connection 1" <<END
[connection]
id=Wired connection 1
uuid=$(cat /proc/sys/kernel/random/uuid)
type=ethernet
interface-name=eth0
autoconnect-priority=-999

[ethernet]

[ipv4]
method=manual
address1=$addr${gw:+,$gw}

[ipv6]
method=disabled
END
  for pair in $(echo "$net" | tr ',' ' '); do
    nm_profile "${pair%%=*}" <<END
[connection]
id=${pair%%=*}
uuid=$(cat /proc/sys/kernel/random/uuid)
type=ethernet
interface-name=${pair%%=*}

[ethernet]

[ipv4]
method=manual
address1=${pair#*=}

[ipv6]
method=disabled
END
  done
  # what Raspberry Pi Imager's Wi-Fi settings become (raspberrypi-sys-mods imager_custom set_wlan)
  # shellcheck source=lab-wifi.env # the image keeps it as /etc/provision-lab/wifi.env
  [ "$air" = 1 ] && . /etc/provision-lab/wifi.env
  if [ "$air" = 1 ] && [ -n "$ssid" ]; then
    nm_profile preconfigured <<END
[connection]
id=preconfigured
uuid=$(cat /proc/sys/kernel/random/uuid)
type=wifi
interface-name=wlan0

[wifi]
mode=infrastructure
ssid=$ssid

[wifi-security]
key-mgmt=wpa-psk
psk=$psk

[ipv4]
method=auto

[ipv6]
addr-gen-mode=default
method=auto

[proxy]
END
  fi
elif [ -d /etc/systemd/network ]; then
  {
    printf '[Match]\nName=eth0\n\n[Network]\nAddress=%s\n' "$addr"
    [ -n "$gw" ] && printf 'Gateway=%s\n' "$gw"
    printf 'LinkLocalAddressing=no\nIPv6AcceptRA=no\n'
  } > /etc/systemd/network/20-eth0.network
  for pair in $(echo "$net" | tr ',' ' '); do
    printf '[Match]\nName=%s\n\n[Network]\nAddress=%s\nLinkLocalAddressing=no\nIPv6AcceptRA=no\n' "${pair%%=*}" "${pair#*=}" \
      > "/etc/systemd/network/30-${pair%%=*}.network"
  done
fi
rm -f "$marker"
exit 0
