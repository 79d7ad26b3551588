// What multiwan writes on a host: the agent's config, the connection-marking rules for
// nftables or iptables, the sysctls, the systemd unit, and the agent itself (agent.sh).
import { quote, readShellAsset } from "../../core/module-api.js";
import {
  IPT_CHAINS,
  IPT_TAG,
  MARK_MASK,
  NFT_TABLE,
  PATHS,
  SYSCTLS,
  balancedPriority,
  hex,
  markOf,
  rulePriorityOf,
  rulesetPath,
  tableOf,
  targetsOf,
  type MultiwanArgs,
  type Uplink,
} from "./schema.js";

/** How often the agent re-reads gateways and repairs its rules and routes, besides on every change. */
const REFRESH_SECONDS = 2;

interface FirewallRule {
  /** Identifies the rule in the live ruleset (nftables and iptables both keep comments). */
  comment: string;
  nft: string;
  iptables: { match: string; target: string };
}

/** The connection-marking rules, by chain, for either firewall. */
export function firewallRules(a: MultiwanArgs): Record<string, FirewallRule[]> {
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
    nat: a.uplinks
      .filter((u) => u.masquerade)
      .map((u) => ({
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
  const chains = Object.entries(firewallRules(a)).map(([chain, rules]) =>
    [`\tchain ${chain} {`, `\t\t${CHAIN_HOOKS[chain]}; policy accept;`, ...rules.map((r) => `\t\t${r.nft} comment ${JSON.stringify(r.comment)}`), "\t}"].join("\n"),
  );
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

/**
 * A shell program of this folder as the host gets it: each line "# include NAME.sh" replaced
 * by that file's text (without its header comment), and the lines that only talk to
 * shellcheck left out (so the installed agent stays byte for byte what it was).
 */
function shellProgram(name: string): string {
  const include = (file: string) => readShellAsset(import.meta.url, file).replace(/^(#.*\n)+/, "");
  return readShellAsset(import.meta.url, name)
    .replace(/^# include (\S+\.sh)\n/gm, (_, file: string) => include(file))
    .replace(/^[ \t]*# shellcheck .*\n/gm, "");
}

/** The agent installed on the host; all its settings come from the config file. */
export const AGENT = shellProgram("agent.sh");

/** Rollback of the activation (undo-activate.sh says what it does). */
export const UNDO_ACTIVATE = shellProgram("undo-activate.sh");
