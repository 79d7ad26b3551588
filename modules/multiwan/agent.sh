#!/bin/sh
# shellcheck disable=SC2154 # get() below assigns variables through eval, where shellcheck cannot see it
# provision-multiwan: policy routing over several uplinks with per-connection marks,
# and an uplink health loop. Installed and configured by provision's multiwan module
# (change the playbook, not this file or /etc/provision/multiwan.conf).
#   start    load the sysctls, the nftables table, the ip rules and the routes
#   watch    ping through each uplink; take a dead uplink out of the multipath route and
#            put it back when it recovers; repair rules, table and routes if they change
#   stop     remove the rules, routes and nftables table (the sysctls stay)
#   status [SECONDS]  each uplink's health, waiting up to SECONDS for a verdict on each
set -u
RUN=/run/provision-multiwan
# shellcheck source=/dev/null # the settings provision renders (render.ts: renderConfig)
. /etc/provision/multiwan.conf

say() { echo "provision-multiwan: $*"; }
get() { eval "$1=\${$2_$3:-}"; } # get VAR A B: VAR=${A_B}, without a subshell
# include clear-state.sh
fw_check() {
  case $FIREWALL in
    nftables) command -v nft >/dev/null && nft -c -f "$RULESET" ;;
    iptables) command -v iptables-restore >/dev/null && iptables-restore --test --noflush < "$RULESET" ;;
  esac
}
fw_load() {
  case $FIREWALL in
    nftables) nft -f "$RULESET" ;;
    iptables) iptables-restore --noflush < "$RULESET" ;;
  esac
}
fw_loaded() {
  case $FIREWALL in
    nftables) nft list table inet provision_multiwan >/dev/null 2>&1 ;;
    iptables) iptables -t mangle -C PREROUTING -m comment --comment provision-multiwan -j PROVISION_MW_PRE 2>/dev/null ;;
  esac
}
our_rules() { ip -4 rule show | awk -F: -v lo="$PRIORITY" '$1 >= lo && $1 < lo + 100'; }

add_rules() {
  ip -4 rule add pref "$PRIORITY" lookup main suppress_prefixlength 0 || return 1
  for u in $UPLINKS; do
    get pref "$u" PRIORITY; get mark "$u" MARK; get table "$u" TABLE
    ip -4 rule add pref "$pref" fwmark "$mark/$MASK" lookup "$table" || return 1
  done
  ip -4 rule add pref "$BALANCED_PRIORITY" lookup "$TABLE"
}

# How to reach uplink $1 now: "via GW dev IF", "dev IF" (point-to-point), or nothing.
nexthop() {
  get ifc "$1" IFACE; get gw "$1" GATEWAY
  [ -e "/sys/class/net/$ifc" ] || return 0
  if [ -z "$gw" ]; then
    if ip -o link show dev "$ifc" | grep -q POINTOPOINT; then echo "dev $ifc"; return 0; fi
    gw=$(ip -4 route show table main default dev "$ifc" | awk '$1 == "default" && $2 == "via" { print $3; exit }')
    [ -n "$gw" ] || return 0
  fi
  echo "via $gw dev $ifc"
}

# Each uplink's own table always routes through it (marked connections, health pings);
# the balanced table holds the uplinks that are up.
set_routes() {
  hops=
  for u in $UPLINKS; do
    hop=$(nexthop "$u")
    eval "hop_$u=\$hop"
    get table "$u" TABLE; get state state "$u"; get weight "$u" WEIGHT
    if [ -n "$hop" ]; then
      # shellcheck disable=SC2086 # $hop is several words ("via GW dev IF")
      ip -4 route replace default $hop table "$table" 2>/dev/null
      [ "$state" = down ] || hops="$hops nexthop $hop weight $weight"
    else
      ip -4 route flush table "$table" 2>/dev/null
    fi
  done
  # shellcheck disable=SC2086 # $hops is several words (nexthop … weight N, per uplink)
  if [ -n "$hops" ]; then ip -4 route replace default table "$TABLE" $hops 2>/dev/null
  else ip -4 route flush table "$TABLE" 2>/dev/null; fi
  return 0
}

start() {
  mkdir -p "$RUN"
  sysctl -q -p /etc/sysctl.d/90-provision-multiwan.conf >/dev/null || say "some sysctls could not be set"
  fw_check || { say "$RULESET does not load (is $FIREWALL installed?)"; exit 1; }
  clear_state "$PRIORITY" "$TABLE" "$LAST_TABLE"
  fw_load || exit 1
  add_rules || { say "adding ip rules failed"; exit 1; }
  our_rules > "$RUN/rules"
  set_routes
}

# Hysteresis: an uplink changes state after FAIL_AFTER failed (RECOVER_AFTER good) checks in a row.
# The loop runs every INTERVAL on a Pi's small CPU: no subshells here.
record() { # UPLINK OK(1|0); sets flipped=1 when the uplink changes state
  get state state "$1"; get streak streak "$1"; get checks checks "$1"
  case "$state$2" in up1|down0) streak=0 ;; *) streak=$((streak + 1)) ;; esac
  need=$FAIL_AFTER
  [ "$state" = down ] && need=$RECOVER_AFTER
  if [ "$streak" -ge "$need" ]; then
    if [ "$state" = up ]; then state=down; else state=up; fi
    streak=0 flipped=1
    eval "since_$1=$(date +%s)"
    get ifc "$1" IFACE
    say "uplink $1 ($ifc) is $state"
  fi
  eval "state_$1=$state streak_$1=$streak checks_$1=$((checks + 1))"
}

probe() { # UPLINK: exit 0 when a target answers through it
  get targets "$1" TARGETS; get mark "$1" MARK
  for t in $targets; do
    ping -n -q -c 1 -W "$TIMEOUT" -m "$mark" "$t" >/dev/null 2>&1 && return 0
  done
  return 1
}

write_status() {
  for u in $UPLINKS; do
    get state state "$u"; get checks checks "$u"; get since since "$u"; get hop hop "$u"
    echo "$u $state $checks $since $hop"
  done > "$RUN/status.new" && mv "$RUN/status.new" "$RUN/status"
}

repair() {
  fw_loaded || { say "the $FIREWALL rules are gone: loading them again"; clear_firewall; fw_load; }
  if [ "$(our_rules)" != "$(cat "$RUN/rules" 2>/dev/null)" ]; then
    say "ip rules in $PRIORITY..$((PRIORITY + 99)) changed: restoring them"
    for p in $(our_rules | cut -d: -f1); do ip -4 rule del pref "$p" 2>/dev/null; done
    add_rules
    our_rules > "$RUN/rules"
  fi
}

watch() {
  mkdir -p "$RUN"
  now=$(date +%s)
  for u in $UPLINKS; do eval "state_$u=up streak_$u=0 checks_$u=0 since_$u=$now"; done
  round=0
  while :; do
    for u in $UPLINKS; do probe "$u" & eval "pid_$u=$!"; done
    flipped=0
    for u in $UPLINKS; do
      get pid pid "$u"
      if wait "$pid"; then record "$u" 1; else record "$u" 0; fi
    done
    # on a change at once, else every REFRESH rounds: follow new gateways, repair rules and routes
    if [ "$flipped" = 1 ] || [ $((round % REFRESH)) = 0 ]; then
      repair
      set_routes
    fi
    write_status
    round=$((round + 1))
    sleep "$INTERVAL"
  done
}

status() { # [SECONDS]: wait until every uplink has had FAIL_AFTER checks
  deadline=$(( $(date +%s) + ${1:-0} ))
  while :; do
    pending=0
    for u in $UPLINKS; do
      checks=$(awk -v u="$u" '$1 == u { print $3 }' "$RUN/status" 2>/dev/null)
      [ "${checks:-0}" -ge "$FAIL_AFTER" ] || pending=1
    done
    [ "$pending" = 0 ] || [ "$(date +%s)" -ge "$deadline" ] && break
    sleep 0.5
  done
  cat "$RUN/status" 2>/dev/null
}

case "${1:-}" in
  start) start ;;
  watch) watch ;;
  stop) clear_state "$PRIORITY" "$TABLE" "$LAST_TABLE"; rm -rf "$RUN" ;;
  status) status "${2:-0}" ;;
  *) echo "usage: $0 start|watch|stop|status [SECONDS]" >&2; exit 64 ;;
esac
