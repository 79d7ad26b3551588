#!/bin/sh
# provision lab: a real radio for the guest (see /work/shared/wifi-lab-notes.md).
# mac80211_hwsim radios only hear radios of the same kernel, so the access point lives in
# this guest too: radio 2 (wlan1) moves into netns "air", bridged there with the NIC
# "airlink" that sits on the lab's bridge, and runs hostapd. Radio 1 stays as the guest's
# own wlan0, which nothing here configures.
set -eu
# shellcheck source=lab-wifi.env # the image keeps it as /etc/provision-lab/wifi.env
. /etc/provision-lab/wifi.env   # ssid=, psk=

modprobe mac80211_hwsim radios=2
i=0
while [ ! -e /sys/class/net/wlan1 ] || [ ! -e /sys/class/net/airlink ]; do
  i=$((i + 1))
  # a guest booting beside others under TCG may take its time; 20 s once proved too short
  [ $i -le 1200 ] || { echo "provision-lab-air: no wlan1 or airlink after 120 s: $(ls /sys/class/net)" >&2; exit 1; }
  sleep 0.1
done
ap_phy=phy$(cat /sys/class/net/wlan1/phy80211/index)

ip netns add air
iw phy "$ap_phy" set netns name air
ip link set airlink netns air
ip -n air link set lo up
ip -n air link add br0 type bridge
ip -n air link set airlink master br0
ip -n air link set airlink up
ip -n air link set br0 up

dir=/run/provision-lab-air
mkdir -p "$dir"
umask 077
# no country_code: without wireless-regdb hostapd would wait seconds in COUNTRY_UPDATE
cat > "$dir/hostapd.conf" <<END
interface=wlan1
bridge=br0
driver=nl80211
ctrl_interface=$dir/ctrl
ssid=$ssid
hw_mode=g
channel=1
wpa=2
wpa_key_mgmt=WPA-PSK
wpa_pairwise=CCMP
rsn_pairwise=CCMP
wpa_passphrase=$psk
END
ip netns exec air hostapd -B -P "$dir/hostapd.pid" "$dir/hostapd.conf"
