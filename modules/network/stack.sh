# provision: which network stack runs this host. Read-only; prints one fact a line:
#   service NAME STATE        systemd's view of each network service
#   installed NAME yes|no     the stack's program is on this host
#   nm-version VERSION        NetworkManager's version (when it runs)
#   nm-device NAME:TYPE:STATE one line per device NetworkManager knows (nmcli -t)
#   networkd-link IDX NAME TYPE OPERATIONAL SETUP   networkctl's view (when it runs)
#   default-route DEV         the interface of the IPv4 default route
# followed by the ifupdown configuration (interfaces and interfaces.d/*) after "ifupdown-config".
# without systemd (containers, test hosts) no service state is known: no systemctl started for it
{ [ -d /run/systemd/system ] && systemctl is-active NetworkManager.service systemd-networkd.service networking.service dhcpcd.service 2>/dev/null; } |
  { for name in NetworkManager systemd-networkd networking dhcpcd; do read -r state || state=unknown; echo "service $name $state"; done; }
for program in ifup NetworkManager dhcpcd; do
  if command -v "$program" >/dev/null 2>&1; then echo "installed $program yes"; else echo "installed $program no"; fi
done
if [ -d /run/NetworkManager ] && command -v nmcli >/dev/null 2>&1; then
  echo "nm-version $(NetworkManager --version 2>/dev/null)"
  nmcli -t -f DEVICE,TYPE,STATE device 2>/dev/null | sed 's/^/nm-device /'
fi
if [ -d /run/systemd/netif/links ] && command -v networkctl >/dev/null 2>&1; then
  networkctl list --no-legend --no-pager 2>/dev/null | sed 's/^ */networkd-link /'
fi
while read -r dev destination rest; do
  if [ "$destination" = 00000000 ]; then echo "default-route $dev"; break; fi
done < /proc/net/route
echo ifupdown-config
cat /etc/network/interfaces /etc/network/interfaces.d/* 2>/dev/null
exit 0
