# provision multiwan: remove what a configuration set up (its ip rules, routing tables and
# firewall rules). Shared by the agent's stop and the rollback of its activation, each of
# which gets this text in place of its "# include clear-state.sh" line.
clear_firewall() {
  nft delete table inet provision_multiwan 2>/dev/null
  # only if there is something of ours: listing can create empty tables on iptables-nft
  iptables-save 2>/dev/null | grep -q PROVISION_MW_ || return 0
  while iptables -t mangle -D PREROUTING -m comment --comment provision-multiwan -j PROVISION_MW_PRE 2>/dev/null; do :; done
  iptables -t mangle -F PROVISION_MW_PRE 2>/dev/null; iptables -t mangle -X PROVISION_MW_PRE 2>/dev/null
  while iptables -t mangle -D OUTPUT -m comment --comment provision-multiwan -j PROVISION_MW_OUT 2>/dev/null; do :; done
  iptables -t mangle -F PROVISION_MW_OUT 2>/dev/null; iptables -t mangle -X PROVISION_MW_OUT 2>/dev/null
  while iptables -t mangle -D POSTROUTING -m comment --comment provision-multiwan -j PROVISION_MW_POST 2>/dev/null; do :; done
  iptables -t mangle -F PROVISION_MW_POST 2>/dev/null; iptables -t mangle -X PROVISION_MW_POST 2>/dev/null
  while iptables -t nat -D POSTROUTING -m comment --comment provision-multiwan -j PROVISION_MW_NAT 2>/dev/null; do :; done
  iptables -t nat -F PROVISION_MW_NAT 2>/dev/null; iptables -t nat -X PROVISION_MW_NAT 2>/dev/null
  return 0
}
clear_state() { # PRIORITY FIRST_TABLE LAST_TABLE
  for p in $(ip -4 rule show | sed -n 's/^\([0-9]*\):.*/\1/p' | awk -v lo="$1" '$1 >= lo && $1 < lo + 100' | sort -un); do
    while ip -4 rule del pref "$p" 2>/dev/null; do :; done
  done
  t=$2
  while [ "$t" -le "$3" ]; do ip -4 route flush table "$t" 2>/dev/null; t=$((t + 1)); done
  clear_firewall
}
