# provision: the Wi-Fi link of station $1 as the kernel sees it, once the access point
# is authorized (the WPA 4-way handshake completed) or after $2 seconds: `iw dev link`
# (association, SSID), then `iw dev station dump` (the AP's "authorized" flag).
# A station with a wrong PSK associates again and again, so association alone proves nothing.
# iw prints the SSID escaped (a backslash, a leading or trailing space, unprintable bytes as
# \xhh): it is read back by iwLinkSsid (modules/network/wifi.ts), never compared here.
iface=$1 timeout=$2
command -v iw >/dev/null 2>&1 || exit 127
tries=$((timeout * 2))
while [ "$tries" -gt 0 ] && ! iw dev "$iface" station dump 2>/dev/null | grep -q 'authorized:[[:space:]]*yes'; do
  sleep 0.5
  tries=$((tries - 1))
done
iw dev "$iface" link
echo "--- station dump"
iw dev "$iface" station dump
