// multiwan: a router over several internet uplinks (seeds rpi-multipath-connmark and
// linux-multipath-upload-bonding). A weighted multipath default route spreads new
// connections over the uplinks; nftables marks each connection with the uplink it left
// through and `ip rule fwmark` keeps its later packets there (what the route cache did
// before Linux 3.6); a health agent on the host pings through each uplink and takes a
// dead one out of the multipath route. Everything it owns carries its name: the
// nftables table, one priority range of ip rules, one range of routing tables.
import { PATTERNS, defineModule, fileChange, PlanError, type Change, type CommandOutput, type FileState, type Verdict,
} from "../../core/module-api.js";
import { quote } from "../../core/transport/shell.js";

const IFNAME = PATTERNS.ifname;
const IPV4 = PATTERNS.ipv4;

export interface Uplink {
  name: string;
  interface: string;
  /** Without it: "dev IF" on a point-to-point link (PPP), else the gateway of IF's default route in main (DHCP). */
  gateway?: string;
  weight: number;
  masquerade: boolean;
  /** Addresses pinged through this uplink (default: the play-wide check targets). */
  check_targets?: string[];
}

export interface MultiwanArgs {
  uplinks: Uplink[];
  check: { targets: string[]; interval: number; timeout: number; fail_after: number; recover_after: number; wait: number; required_up?: number };
  priority_base: number;
  table_base: number;
  /** nftables (preferred), or iptables where that is what the host has. */
  firewall: "nftables" | "iptables";
}

export const PATHS = {
  agent: "/usr/local/sbin/provision-multiwan",
  config: "/etc/provision/multiwan.conf",
  nftRuleset: "/etc/provision/multiwan.nft",
  iptablesRuleset: "/etc/provision/multiwan.iptables",
  sysctl: "/etc/sysctl.d/90-provision-multiwan.conf",
  unit: "/etc/systemd/system/provision-multiwan.service",
  status: "/run/provision-multiwan/status",
};
const SERVICE = "provision-multiwan";
const NFT_TABLE = "provision_multiwan";
/** iptables: a chain of our own per hook, entered by one jump rule tagged with this comment. */
const IPT_TAG = "provision-multiwan";
const IPT_CHAINS: Record<string, { table: string; parent: string; chain: string }> = {
  prerouting: { table: "mangle", parent: "PREROUTING", chain: "PROVISION_MW_PRE" },
  output: { table: "mangle", parent: "OUTPUT", chain: "PROVISION_MW_OUT" },
  postrouting: { table: "mangle", parent: "POSTROUTING", chain: "PROVISION_MW_POST" },
  nat: { table: "nat", parent: "POSTROUTING", chain: "PROVISION_MW_NAT" },
};
const rulesetPath = (a: MultiwanArgs) => (a.firewall === "iptables" ? PATHS.iptablesRuleset : PATHS.nftRuleset);
/** Connection marks live in these bits; everything else in a mark is left alone. */
const MARK_MASK = 0xff0000;
const SYSCTLS: Record<string, string> = {
  "net.ipv4.ip_forward": "1",
  // hash on ports too, so many connections to one server still spread over the uplinks
  "net.ipv4.fib_multipath_hash_policy": "1",
  // loose: a reply may arrive on an uplink other than the one the main table would pick
  "net.ipv4.conf.all.rp_filter": "2",
};

/** How often the agent re-reads gateways and repairs its rules and routes, besides on every change. */
const REFRESH_SECONDS = 2;
const hex = (n: number) => `0x${n.toString(16)}`;
const markOf = (index: number) => (index + 1) << 16;
const tableOf = (a: MultiwanArgs, index: number) => a.table_base + 1 + index;
const rulePriorityOf = (a: MultiwanArgs, index: number) => a.priority_base + 10 + index;
const balancedPriority = (a: MultiwanArgs) => a.priority_base + 90;
const targetsOf = (a: MultiwanArgs, u: Uplink) => u.check_targets ?? a.check.targets;

export const multiwanSchema = {
  type: "object",
  additionalProperties: false,
  required: ["uplinks"],
  properties: {
    uplinks: {
      type: "array", minItems: 2, maxItems: 8,
      items: {
        type: "object",
        additionalProperties: false,
        required: ["name", "interface"],
        properties: {
          name: { type: "string", pattern: "^[a-z][a-z0-9]{0,11}$" },
          interface: { type: "string", pattern: IFNAME },
          gateway: { type: "string", pattern: IPV4 },
          weight: { type: "integer", minimum: 1, maximum: 256, default: 1 },
          masquerade: { type: "boolean", default: true },
          check_targets: { type: "array", minItems: 1, maxItems: 4, items: { type: "string", pattern: IPV4 } },
        },
      },
    },
    check: {
      type: "object",
      additionalProperties: false,
      default: {},
      properties: {
        targets: { type: "array", minItems: 1, maxItems: 4, items: { type: "string", pattern: IPV4 }, default: [] },
        interval: { type: "number", minimum: 0.2, maximum: 60, default: 1 },
        timeout: { type: "number", minimum: 0.2, maximum: 10, default: 1 },
        fail_after: { type: "integer", minimum: 1, maximum: 100, default: 3 },
        recover_after: { type: "integer", minimum: 1, maximum: 100, default: 3 },
        /** How long verification waits for the agent's first verdict on every uplink. */
        wait: { type: "integer", minimum: 1, maximum: 600, default: 30 },
        /** How many uplinks must answer for the run to pass (default: all); the others are reported. */
        required_up: { type: "integer", minimum: 1, maximum: 8 },
      },
    },
    priority_base: { type: "integer", minimum: 1, maximum: 32600, default: 30000 },
    table_base: { type: "integer", minimum: 1, maximum: 250, default: 200 },
    firewall: { type: "string", enum: ["nftables", "iptables"], default: "nftables" },
  },
};

// ---- rendering ---------------------------------------------------------------------------------

interface FirewallRule {
  /** Identifies the rule in the live ruleset (nftables and iptables both keep comments). */
  comment: string;
  nft: string;
  iptables: { match: string; target: string };
}

/** The connection-marking rules, by chain, for either firewall. */
function firewallRules(a: MultiwanArgs): Record<string, FirewallRule[]> {
  const m = hex(MARK_MASK);
  const keep = hex(~MARK_MASK >>> 0);
  const setMark = (i: number) => ({ nft: `ct mark set ct mark & ${keep} | ${hex(markOf(i))}`, iptables: `CONNMARK --set-xmark ${hex(markOf(i))}/${m}` });
  const restore: FirewallRule = {
    comment: "restore the uplink mark",
    nft: `ct mark & ${m} != 0 meta mark set ct mark & ${m}`,
    iptables: { match: `-m connmark ! --mark 0x0/${m}`, target: `CONNMARK --restore-mark --nfmask ${m} --ctmask ${m}` },
  };
  const quoted = (u: Uplink) => JSON.stringify(u.interface);
  return {
    prerouting: [
      restore,
      ...a.uplinks.map((u, i) => ({
        comment: `${u.name}: mark connections from it`,
        nft: `ct state new iifname ${quoted(u)} ${setMark(i).nft}`,
        iptables: { match: `-i ${u.interface} -m conntrack --ctstate NEW`, target: setMark(i).iptables },
      })),
    ],
    output: [restore],
    postrouting: a.uplinks.map((u, i) => ({
      comment: `${u.name}: mark new connections`,
      nft: `ct mark & ${m} == 0 oifname ${quoted(u)} ${setMark(i).nft}`,
      iptables: { match: `-o ${u.interface} -m connmark --mark 0x0/${m}`, target: setMark(i).iptables },
    })),
    nat: a.uplinks.filter((u) => u.masquerade).map((u) => ({
      comment: `${u.name}: masquerade`,
      nft: `oifname ${quoted(u)} masquerade`,
      iptables: { match: `-o ${u.interface}`, target: "MASQUERADE" },
    })),
  };
}

const CHAIN_HOOKS: Record<string, string> = {
  prerouting: "type filter hook prerouting priority mangle",
  output: "type route hook output priority mangle",
  postrouting: "type filter hook postrouting priority mangle",
  nat: "type nat hook postrouting priority srcnat",
};

export function renderNft(a: MultiwanArgs): string {
  const chains = Object.entries(firewallRules(a)).map(([chain, rules]) => [
    `\tchain ${chain} {`,
    `\t\t${CHAIN_HOOKS[chain]}; policy accept;`,
    ...rules.map((r) => `\t\t${r.nft} comment ${JSON.stringify(r.comment)}`),
    "\t}",
  ].join("\n"));
  // declare, delete, define: one atomic transaction that also replaces an older version
  return [
    "#!/usr/sbin/nft -f",
    "# Managed by provision (multiwan module): loaded by provision-multiwan.service.",
    `table inet ${NFT_TABLE}`,
    `delete table inet ${NFT_TABLE}`,
    `table inet ${NFT_TABLE} {`,
    chains.join("\n\n"),
    "}",
    "",
  ].join("\n");
}

/** iptables-restore --noflush input; the agent removes the old chains and jumps first. */
export function renderIptables(a: MultiwanArgs): string {
  const rules = firewallRules(a);
  const table = (name: string) => {
    const chains = Object.entries(IPT_CHAINS).filter(([, c]) => c.table === name);
    return [
      `*${name}`,
      ...chains.map(([, c]) => `:${c.chain} - [0:0]`),
      ...chains.map(([, c]) => `-A ${c.parent} -m comment --comment ${IPT_TAG} -j ${c.chain}`),
      ...chains.flatMap(([key, c]) => rules[key].map((r) => `-A ${c.chain} ${r.iptables.match} -m comment --comment ${JSON.stringify(r.comment)} -j ${r.iptables.target}`)),
      "COMMIT",
    ];
  };
  return ["# Managed by provision (multiwan module): loaded by provision-multiwan.service.", ...table("mangle"), ...table("nat"), ""].join("\n");
}

export function renderConfig(a: MultiwanArgs): string {
  const line = (k: string, v: string | number) => `${k}=${quote(String(v))}`;
  return [
    "# Managed by provision (multiwan module). Read by /usr/local/sbin/provision-multiwan.",
    line("FIREWALL", a.firewall),
    line("RULESET", rulesetPath(a)),
    line("PRIORITY", a.priority_base),
    line("BALANCED_PRIORITY", balancedPriority(a)),
    line("TABLE", a.table_base),
    line("LAST_TABLE", tableOf(a, a.uplinks.length - 1)),
    line("MASK", MARK_MASK),
    line("INTERVAL", a.check.interval),
    line("TIMEOUT", a.check.timeout),
    line("FAIL_AFTER", a.check.fail_after),
    line("RECOVER_AFTER", a.check.recover_after),
    line("REFRESH", Math.max(1, Math.round(REFRESH_SECONDS / a.check.interval))),
    line("UPLINKS", a.uplinks.map((u) => u.name).join(" ")),
    ...a.uplinks.flatMap((u, i) => [
      line(`${u.name}_IFACE`, u.interface),
      line(`${u.name}_GATEWAY`, u.gateway ?? ""),
      line(`${u.name}_WEIGHT`, u.weight),
      line(`${u.name}_MARK`, markOf(i)),
      line(`${u.name}_TABLE`, tableOf(a, i)),
      line(`${u.name}_PRIORITY`, rulePriorityOf(a, i)),
      line(`${u.name}_TARGETS`, targetsOf(a, u).join(" ")),
    ]),
    "",
  ].join("\n");
}

export function renderSysctl(): string {
  return ["# Managed by provision (multiwan module).", ...Object.entries(SYSCTLS).map(([k, v]) => `${k} = ${v}`), ""].join("\n");
}

export const UNIT = `# Managed by provision (multiwan module).
[Unit]
Description=provision multi-WAN: policy routing, connection marks, uplink health
Wants=network-online.target
After=network-online.target nftables.service

[Service]
Type=simple
ExecStartPre=${PATHS.agent} start
ExecStart=${PATHS.agent} watch
ExecStopPost=${PATHS.agent} stop
Restart=on-failure
RestartSec=5

[Install]
WantedBy=multi-user.target
`;

/** Removes what a configuration set up: shared by the agent's stop and the rollback. */
const CLEAR_STATE = `clear_firewall() {
  nft delete table inet ${NFT_TABLE} 2>/dev/null
  # only if there is something of ours: listing can create empty tables on iptables-nft
  iptables-save 2>/dev/null | grep -q PROVISION_MW_ || return 0
${Object.values(IPT_CHAINS).map((c) => `  while iptables -t ${c.table} -D ${c.parent} -m comment --comment ${IPT_TAG} -j ${c.chain} 2>/dev/null; do :; done
  iptables -t ${c.table} -F ${c.chain} 2>/dev/null; iptables -t ${c.table} -X ${c.chain} 2>/dev/null`).join("\n")}
  return 0
}
clear_state() { # PRIORITY FIRST_TABLE LAST_TABLE
  for p in $(ip -4 rule show | sed -n 's/^\\([0-9]*\\):.*/\\1/p' | awk -v lo="$1" '$1 >= lo && $1 < lo + 100' | sort -un); do
    while ip -4 rule del pref "$p" 2>/dev/null; do :; done
  done
  t=$2
  while [ "$t" -le "$3" ]; do ip -4 route flush table "$t" 2>/dev/null; t=$((t + 1)); done
  clear_firewall
}`;

/** The agent installed on the host; all its settings come from the config file. */
export const AGENT = `#!/bin/sh
# provision-multiwan: policy routing over several uplinks with per-connection marks,
# and an uplink health loop. Installed and configured by provision's multiwan module
# (change the playbook, not this file or ${PATHS.config}).
#   start    load the sysctls, the nftables table, the ip rules and the routes
#   watch    ping through each uplink; take a dead uplink out of the multipath route and
#            put it back when it recovers; repair rules, table and routes if they change
#   stop     remove the rules, routes and nftables table (the sysctls stay)
#   status [SECONDS]  each uplink's health, waiting up to SECONDS for a verdict on each
set -u
RUN=/run/${SERVICE}
. ${PATHS.config}

say() { echo "${SERVICE}: $*"; }
get() { eval "$1=\\\${$2_$3:-}"; } # get VAR A B: VAR=\${A_B}, without a subshell
${CLEAR_STATE}
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
    nftables) nft list table inet ${NFT_TABLE} >/dev/null 2>&1 ;;
    iptables) iptables -t mangle -C PREROUTING -m comment --comment ${IPT_TAG} -j ${IPT_CHAINS.prerouting.chain} 2>/dev/null ;;
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
    eval "hop_$u=\\\$hop"
    get table "$u" TABLE; get state state "$u"; get weight "$u" WEIGHT
    if [ -n "$hop" ]; then
      ip -4 route replace default $hop table "$table" 2>/dev/null
      [ "$state" = down ] || hops="$hops nexthop $hop weight $weight"
    else
      ip -4 route flush table "$table" 2>/dev/null
    fi
  done
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
  deadline=$(( $(date +%s) + \${1:-0} ))
  while :; do
    pending=0
    for u in $UPLINKS; do
      checks=$(awk -v u="$u" '$1 == u { print $3 }' "$RUN/status" 2>/dev/null)
      [ "\${checks:-0}" -ge "$FAIL_AFTER" ] || pending=1
    done
    [ "$pending" = 0 ] || [ "$(date +%s)" -ge "$deadline" ] && break
    sleep 0.5
  done
  cat "$RUN/status" 2>/dev/null
}

case "\${1:-}" in
  start) start ;;
  watch) watch ;;
  stop) clear_state "$PRIORITY" "$TABLE" "$LAST_TABLE"; rm -rf "$RUN" ;;
  status) status "\${2:-0}" ;;
  *) echo "usage: $0 start|watch|stop|status [SECONDS]" >&2; exit 64 ;;
esac
`;

/**
 * Rollback of "activate": the files are already restored when it runs. Stop the agent,
 * clear what this run's configuration set up (the restored files may describe another),
 * put the sysctls back, and start the old configuration again if there was one.
 */
const UNDO_ACTIVATE = `was_active=$1 was_enabled=$2 priority=$3 first=$4 last=$5
shift 5
${CLEAR_STATE}
systemctl stop ${SERVICE} 2>/dev/null
clear_state "$priority" "$first" "$last"
[ $# -gt 0 ] && sysctl -q -w "$@"
if [ "$was_enabled" != 1 ]; then
  systemctl disable ${SERVICE} 2>/dev/null
  rm -f /etc/systemd/system/multi-user.target.wants/${SERVICE}.service
fi
systemctl daemon-reload
systemctl reset-failed ${SERVICE} 2>/dev/null
[ "$was_active" = 1 ] && systemctl start ${SERVICE}
exit 0`;

const ACTIVATE = `systemctl daemon-reload && systemctl enable --quiet ${SERVICE} && systemctl restart ${SERVICE}`;

// ---- live state ----------------------------------------------------------------------------------

interface IpRule { priority: number; table?: string; fwmark?: string; fwmask?: string; suppress_prefixlen?: number; src?: string }
interface IpRoute { dst: string; table?: string; gateway?: string; dev?: string; nexthops?: { gateway?: string; dev: string; weight?: number }[] }
export interface UplinkHealth { name: string; state: string; checks: number; nexthop: string }

const describeRule = (r: IpRule) =>
  `${r.priority}: ${r.fwmark ? `fwmark ${r.fwmark}${r.fwmask ? `/${r.fwmask}` : ""} ` : ""}lookup ${r.table}${r.suppress_prefixlen !== undefined ? ` suppress_prefixlength ${r.suppress_prefixlen}` : ""}`;

export function desiredRules(a: MultiwanArgs): string[] {
  return [
    describeRule({ priority: a.priority_base, table: "main", suppress_prefixlen: 0 }),
    ...a.uplinks.map((_, i) => describeRule({ priority: rulePriorityOf(a, i), fwmark: hex(markOf(i)), fwmask: hex(MARK_MASK), table: String(tableOf(a, i)) })),
    describeRule({ priority: balancedPriority(a), table: String(a.table_base) }),
  ];
}

const inRange = (a: MultiwanArgs, priority: number) => priority >= a.priority_base && priority < a.priority_base + 100;
const parseJson = <T>(out: CommandOutput): T | null => {
  if (out.code !== 0) return null;
  try { return JSON.parse(out.stdout) as T; } catch { return null; }
};

export function ruleProblems(a: MultiwanArgs, ipRule: CommandOutput): string[] {
  const live = (parseJson<IpRule[]>(ipRule) ?? []).filter((r) => inRange(a, r.priority)).map(describeRule);
  const want = desiredRules(a);
  return [
    ...want.filter((r) => !live.includes(r)).map((r) => `ip rule missing: ${r}`),
    ...live.filter((r) => !want.includes(r)).map((r) => `unexpected ip rule in provision's range: ${r}`),
  ];
}

export function parseHealth(text: string | null): UplinkHealth[] {
  return (text ?? "").split("\n").filter(Boolean).map((line) => {
    const [name, state, checks, , ...hop] = line.split(" ");
    return { name, state, checks: Number(checks), nexthop: hop.join(" ") };
  });
}

export function routeProblems(a: MultiwanArgs, routes: CommandOutput, health: UplinkHealth[]): string[] {
  const all = parseJson<IpRoute[]>(routes) ?? [];
  const defaultIn = (table: number) => all.find((r) => r.dst === "default" && r.table === String(table));
  const problems: string[] = [];
  a.uplinks.forEach((u, i) => {
    const route = defaultIn(tableOf(a, i));
    const known = u.gateway || health.find((h) => h.name === u.name)?.nexthop;
    if (!route) { if (known) problems.push(`table ${tableOf(a, i)} (${u.name}) has no default route`); return; }
    if (route.dev !== u.interface || (u.gateway && route.gateway !== u.gateway))
      problems.push(`table ${tableOf(a, i)} (${u.name}) routes via ${route.gateway ?? "-"} dev ${route.dev}, want ${u.gateway ?? "its gateway"} dev ${u.interface}`);
  });
  if (!health.length) return problems;
  const balanced = defaultIn(a.table_base);
  const hops = balanced ? balanced.nexthops ?? [{ gateway: balanced.gateway, dev: balanced.dev! }] : [];
  for (const u of a.uplinks) {
    const up = health.find((h) => h.name === u.name)?.state === "up";
    const hop = hops.find((h) => h.dev === u.interface);
    if (up && !hop) problems.push(`${u.name} is up but not in the multipath route (table ${a.table_base})`);
    if (!up && hop) problems.push(`${u.name} is down but still in the multipath route (table ${a.table_base})`);
    if (hop?.weight !== undefined && hops.length > 1 && hop.weight !== u.weight) problems.push(`${u.name} has weight ${hop.weight} in the multipath route, want ${u.weight}`);
  }
  return problems;
}

/** Rule comments by chain, as the live ruleset has them (null: not loaded). */
function liveNftComments(nft: CommandOutput): Map<string, string[]> | null {
  const listing = parseJson<{ nftables: Array<{ chain?: { name: string }; rule?: { chain: string; comment?: string } }> }>(nft);
  if (!listing) return null;
  const live = new Map<string, string[]>();
  for (const item of listing.nftables) {
    if (item.chain) live.set(item.chain.name, live.get(item.chain.name) ?? []);
    if (item.rule) live.set(item.rule.chain, [...(live.get(item.rule.chain) ?? []), item.rule.comment ?? "(no comment)"]);
  }
  return live;
}

/** The same from iptables-save, keyed like firewallRules (prerouting…), plus the jump rules. */
function liveIptablesComments(save: CommandOutput): Map<string, string[]> | null {
  if (save.code !== 0) return null;
  const live = new Map<string, string[]>();
  for (const line of save.stdout.split("\n")) {
    const m = /^-A (\S+) .*--comment (?:"([^"]*)"|(\S+))/.exec(line);
    if (!m) continue;
    const [, chain, quotedComment, bareComment] = m;
    const comment = quotedComment ?? bareComment;
    const key = Object.entries(IPT_CHAINS).find(([, c]) => c.chain === chain)?.[0];
    if (key) live.set(key, [...(live.get(key) ?? []), comment]);
    else if (comment === IPT_TAG) live.set(`jump:${chain}`, [...(live.get(`jump:${chain}`) ?? []), line]);
  }
  return live;
}

export function firewallProblems(a: MultiwanArgs, out: CommandOutput): string[] {
  const iptables = a.firewall === "iptables";
  const live = iptables ? liveIptablesComments(out) : liveNftComments(out);
  const what = (chain: string) => (iptables ? `iptables chain ${IPT_CHAINS[chain].chain}` : `nftables chain ${chain}`);
  if (!live) return [iptables ? "iptables-save failed: is iptables installed?" : `nftables table inet ${NFT_TABLE} is missing`];
  const wanted = firewallRules(a);
  const problems: string[] = [];
  for (const [chain, rules] of Object.entries(wanted)) {
    const have = live.get(chain);
    const want = rules.map((r) => r.comment);
    if (!have && !(iptables && !want.length)) problems.push(`${what(chain)} is missing`);
    else if (have && have.join("|") !== want.join("|")) problems.push(`${what(chain)} has rules [${have.join(", ")}], want [${want.join(", ")}]`);
  }
  if (iptables) {
    for (const [chain, c] of Object.entries(IPT_CHAINS)) {
      const jumps = (live.get(`jump:${c.parent}`) ?? []).filter((l) => l.endsWith(`-j ${c.chain}`));
      if (jumps.length !== 1 && (wanted[chain].length || jumps.length)) problems.push(`${c.table} ${c.parent} has ${jumps.length} jumps to ${c.chain}, want 1`);
    }
  } else for (const chain of live.keys()) if (!(chain in wanted)) problems.push(`unexpected nftables chain ${chain}`);
  return problems;
}

function parseSysctls(out: CommandOutput): Record<string, string> {
  return Object.fromEntries(out.stdout.split("\n").map((l) => /^(\S+)\s*=\s*(.*)$/.exec(l.trim())).filter((m) => m !== null).map((m) => [m![1], m![2]]));
}

function sysctlProblems(live: Record<string, string>): string[] {
  return Object.entries(SYSCTLS).filter(([k, v]) => live[k] !== v).map(([k, v]) => `${k} is ${live[k] ?? "unset"}, want ${v}`);
}

const uplinkDown = (a: MultiwanArgs, u: Uplink) => `uplink ${u.name} (${u.interface}) is down: no answer from ${targetsOf(a, u).join(" or ")} through it`;

/**
 * The agent's verdict on every uplink. An uplink that does not answer fails the run unless
 * `required_up` others do: then it is only reported (it stays out of the balance until it answers).
 */
export function healthVerdict(a: MultiwanArgs, health: UplinkHealth[]): Verdict {
  if (!health.length) return { problems: [`the health agent (${SERVICE}.service) reports nothing: it is not running`] };
  const verdicts = a.uplinks.map((u) => ({ u, h: health.find((x) => x.name === u.name) }));
  const pending = verdicts.filter(({ h }) => !h || h.checks < a.check.fail_after).map(({ u }) => `no verdict on ${u.name} yet from the health agent`);
  const down = verdicts.filter(({ h }) => h && h.checks >= a.check.fail_after && h.state !== "up").map(({ u }) => uplinkDown(a, u));
  const required = a.check.required_up ?? a.uplinks.length;
  if (a.uplinks.length - pending.length - down.length >= required) {
    return { problems: pending, notes: down.map((d) => `${d}; it carries nothing until it answers (${required} of ${a.uplinks.length} uplinks required)`) };
  }
  return { problems: [...pending, ...down] };
}

const liveProbes = (a: MultiwanArgs) => ({
  rules: { command: ["ip", "-j", "-4", "rule", "show"] },
  routes: { command: ["ip", "-j", "-4", "route", "show", "table", "all"] },
  firewall: { command: a.firewall === "iptables" ? ["iptables-save"] : ["nft", "-j", "list", "table", "inet", NFT_TABLE] },
  active: { command: ["systemctl", "is-active", SERVICE] },
  enabled: { command: ["systemctl", "is-enabled", SERVICE] },
  sysctls: { command: ["sysctl", ...Object.keys(SYSCTLS)] },
});
type LiveFacts = { [K in keyof ReturnType<typeof liveProbes>]: CommandOutput };

/** Where the running host differs from the configuration ([] = as configured). */
export function liveProblems(a: MultiwanArgs, live: LiveFacts, health: UplinkHealth[]): string[] {
  return [
    ...(live.active.stdout.trim() === "active" ? [] : [`${SERVICE}.service is ${live.active.stdout.trim() || "not installed"}`]),
    ...(live.enabled.stdout.trim() === "enabled" ? [] : [`${SERVICE}.service is not enabled at boot`]),
    ...sysctlProblems(parseSysctls(live.sysctls)),
    ...ruleProblems(a, live.rules),
    ...routeProblems(a, live.routes, health),
    ...firewallProblems(a, live.firewall),
  ];
}

/** Someone else's rules or routes where this configuration would put its own. */
function conflicts(a: MultiwanArgs, live: LiveFacts): string[] {
  const rules = (parseJson<IpRule[]>(live.rules) ?? []).filter((r) => inRange(a, r.priority));
  const tables = new Set(Array.from({ length: a.uplinks.length + 1 }, (_, i) => String(a.table_base + i)));
  const routes = (parseJson<IpRoute[]>(live.routes) ?? []).filter((r) => r.table && tables.has(r.table));
  return [
    ...rules.map((r) => `ip rule ${describeRule(r)} (choose another priority_base)`),
    ...routes.map((r) => `a route to ${r.dst} in table ${r.table} (choose another table_base)`),
  ];
}

function validate(a: MultiwanArgs): void {
  const unique = (values: string[], what: string) => {
    const dup = values.find((v, i) => values.indexOf(v) !== i);
    if (dup) throw new PlanError(`two uplinks have the ${what} ${dup}`);
  };
  unique(a.uplinks.map((u) => u.name), "name");
  unique(a.uplinks.map((u) => u.interface), "interface");
  const missing = a.uplinks.find((u) => !targetsOf(a, u).length);
  if (missing) throw new PlanError(`uplink ${missing.name} has nothing to ping: set check.targets (or its check_targets) to addresses on the internet that answer ping`);
  if ((a.check.required_up ?? 0) > a.uplinks.length) throw new PlanError(`check.required_up is ${a.check.required_up} but there are only ${a.uplinks.length} uplinks`);
  if (tableOf(a, a.uplinks.length - 1) > 252) throw new PlanError(`table_base ${a.table_base} leaves no room for ${a.uplinks.length} uplink tables below 253`);
}

type PlanFacts = LiveFacts & { [K in keyof typeof PATHS]: FileState };

function fileChanges(a: MultiwanArgs, facts: PlanFacts): Change[] {
  const [used, unused] = a.firewall === "iptables" ? [facts.iptablesRuleset, facts.nftRuleset] : [facts.nftRuleset, facts.iptablesRuleset];
  return [
    ...fileChange(facts.agent, AGENT, { mode: "0755", summary: `install the multi-WAN agent ${PATHS.agent}` }),
    ...fileChange(facts.config, renderConfig(a), { mode: "0644" }),
    ...fileChange(used, a.firewall === "iptables" ? renderIptables(a) : renderNft(a), { mode: "0644", summary: `write the connection-marking rules ${used.path}` }),
    ...fileChange(unused, null),
    ...fileChange(facts.sysctl, renderSysctl(), { mode: "0644" }),
    ...fileChange(facts.unit, UNIT, { mode: "0644" }),
  ];
}

/** (Re)start the agent; its undo needs what the host ran before, read from the facts now. */
function activation(a: MultiwanArgs, facts: PlanFacts, summary: string): Change {
  const old = parseSysctls(facts.sysctls);
  const restoreSysctls = Object.keys(SYSCTLS).filter((k) => old[k] !== undefined && old[k] !== SYSCTLS[k]).map((k) => `${k}=${old[k]}`);
  const was = (out: CommandOutput, state: string) => (out.stdout.trim() === state ? "1" : "0");
  return {
    kind: "command",
    summary,
    argv: ["sh", "-c", ACTIVATE],
    undo: ["sh", "-c", UNDO_ACTIVATE, "provision", was(facts.active, "active"), was(facts.enabled, "enabled"),
      String(a.priority_base), String(a.table_base), String(tableOf(a, a.uplinks.length - 1)), ...restoreSysctls],
    disruptive: true,
  };
}

function planChanges(a: MultiwanArgs, facts: PlanFacts): Change[] {
  validate(a);
  const installed = facts.config.content !== null;
  const taken = installed ? [] : conflicts(a, facts);
  if (taken.length) throw new PlanError(`provision's multiwan would own what is already in use: ${taken.join("; ")}`);
  const files = fileChanges(a, facts);
  const drift = installed ? liveProblems(a, facts, parseHealth(facts.status.content)) : [];
  if (files.length) {
    const names = a.uplinks.map((u) => `${u.name} (${u.interface}, weight ${u.weight})`).join(" + ");
    return [...files, activation(a, facts, `(re)start ${SERVICE}: ${names}`)];
  }
  return drift.length ? [activation(a, facts, `restart ${SERVICE}, the live state drifted: ${drift.join("; ")}`)] : [];
}

export default defineModule({
  name: "multiwan",
  description: "Route over several uplinks: weighted multipath, per-connection marks (nftables or iptables), and a health agent that withdraws dead uplinks",
  schema: multiwanSchema,
  disruptive: true,
  facts: (a: MultiwanArgs) => ({ ...liveProbes(a), ...Object.fromEntries(Object.entries(PATHS).map(([k, path]) => [k, { file: path }])) }) as Record<string, { file: string } | { command: string[] }>,
  plan: planChanges,
  /** An audit of a router that runs as configured still says which uplinks are dead right now. */
  notes(a: MultiwanArgs, facts: PlanFacts): string[] {
    if (facts.active.stdout.trim() !== "active") return []; // its last verdict would be stale
    const health = parseHealth(facts.status.content);
    return a.uplinks.filter((u) => health.find((h) => h.name === u.name)?.state === "down").map((u) => `${uplinkDown(a, u)} (the health agent's last verdict)`);
  },
  verify: {
    probes: (a: MultiwanArgs) => ({
      // first: wait for the agent's verdict on every uplink, then read the state it left
      health: { command: [PATHS.agent, "status", String(a.check.wait)] },
      ...liveProbes(a),
    }),
    check(a: MultiwanArgs, facts: LiveFacts & { health: CommandOutput }) {
      const health = parseHealth(facts.health.stdout);
      const verdict = healthVerdict(a, health);
      return { problems: [...verdict.problems, ...liveProblems(a, facts, health)], notes: verdict.notes };
    },
  },
});
