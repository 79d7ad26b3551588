#!/bin/sh
# provision lab: join the lab's Wi-Fi on wlan0 by hand (tests only; the product's own
# configuration does this with NetworkManager, networkd + wpa_supplicant or ifupdown).
#   provision-lab-station up     start wpa_supplicant on wlan0 with the lab SSID/PSK
#   provision-lab-station down   stop it
set -eu
dir=/run/provision-lab-station
case ${1:-} in
  up)
    # shellcheck source=lab-wifi.env # the image keeps it as /etc/provision-lab/wifi.env
    . /etc/provision-lab/wifi.env
    mkdir -p "$dir"
    umask 077
    printf 'ctrl_interface=%s/ctrl\nnetwork={\n ssid="%s"\n key_mgmt=WPA-PSK\n psk="%s"\n}\n' "$dir" "$ssid" "$psk" > "$dir/wlan0.conf"
    ip link set wlan0 up
    wpa_supplicant -B -D nl80211 -i wlan0 -P "$dir/wpa_supplicant.pid" -c "$dir/wlan0.conf"
    ;;
  down)
    [ -f "$dir/wpa_supplicant.pid" ] && kill "$(cat "$dir/wpa_supplicant.pid")"
    rm -rf "$dir"
    ;;
  *) echo "usage: provision-lab-station up|down" >&2; exit 64 ;;
esac
