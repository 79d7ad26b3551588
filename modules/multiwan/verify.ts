// What multiwan reads back from a running host (ip -j rule/route, nft -j or iptables-save,
// sysctl, systemd, the agent's status) and how that differs from the configuration.
import type { CommandOutput, Verdict } from "../../core/module-api.js";
import { firewallRules } from "./render.js";
import {
  IPT_CHAINS,
  IPT_TAG,
  MARK_MASK,
  NFT_TABLE,
  SERVICE,
  SYSCTLS,
  balancedPriority,
  hex,
  markOf,
  rulePriorityOf,
  tableOf,
  targetsOf,
  type MultiwanArgs,
  type Uplink,
} from "./schema.js";

export interface IpRule {
  priority: number;
  table?: string;
  fwmark?: string;
  fwmask?: string;
  suppress_prefixlen?: number;
  src?: string;
}
export interface IpRoute {
  dst: string;
  table?: string;
  gateway?: string;
  dev?: string;
  nexthops?: { gateway?: string; dev: string; weight?: number }[];
}
export interface UplinkHealth {
  name: string;
  state: string;
  checks: number;
  nexthop: string;
}

export const describeRule = (r: IpRule) =>
  `${r.priority}: ${r.fwmark ? `fwmark ${r.fwmark}${r.fwmask ? `/${r.fwmask}` : ""} ` : ""}lookup ${r.table}${r.suppress_prefixlen !== undefined ? ` suppress_prefixlength ${r.suppress_prefixlen}` : ""}`;

export function desiredRules(a: MultiwanArgs): string[] {
  return [
    describeRule({ priority: a.priority_base, table: "main", suppress_prefixlen: 0 }),
    ...a.uplinks.map((_, i) => describeRule({ priority: rulePriorityOf(a, i), fwmark: hex(markOf(i)), fwmask: hex(MARK_MASK), table: String(tableOf(a, i)) })),
    describeRule({ priority: balancedPriority(a), table: String(a.table_base) }),
  ];
}

export const inRange = (a: MultiwanArgs, priority: number) => priority >= a.priority_base && priority < a.priority_base + 100;
export const parseJson = <T>(out: CommandOutput): T | null => {
  if (out.code !== 0) return null;
  try {
    return JSON.parse(out.stdout) as T;
  } catch {
    return null;
  }
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
  return (text ?? "")
    .split("\n")
    .filter(Boolean)
    .map((line) => {
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
    if (!route) {
      if (known) problems.push(`table ${tableOf(a, i)} (${u.name}) has no default route`);
      return;
    }
    if (route.dev !== u.interface || (u.gateway && route.gateway !== u.gateway))
      problems.push(`table ${tableOf(a, i)} (${u.name}) routes via ${route.gateway ?? "-"} dev ${route.dev}, want ${u.gateway ?? "its gateway"} dev ${u.interface}`);
  });
  if (!health.length) return problems;
  const balanced = defaultIn(a.table_base);
  const hops = balanced ? (balanced.nexthops ?? [{ gateway: balanced.gateway, dev: balanced.dev! }]) : [];
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

export function parseSysctls(out: CommandOutput): Record<string, string> {
  return Object.fromEntries(
    out.stdout
      .split("\n")
      .map((l) => /^(\S+)\s*=\s*(.*)$/.exec(l.trim()))
      .filter((m) => m !== null)
      .map((m) => [m![1], m![2]]),
  );
}

function sysctlProblems(live: Record<string, string>): string[] {
  return Object.entries(SYSCTLS)
    .filter(([k, v]) => live[k] !== v)
    .map(([k, v]) => `${k} is ${live[k] ?? "unset"}, want ${v}`);
}

export const uplinkDown = (a: MultiwanArgs, u: Uplink) => `uplink ${u.name} (${u.interface}) is down: no answer from ${targetsOf(a, u).join(" or ")} through it`;

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

export const liveProbes = (a: MultiwanArgs) => ({
  rules: { command: ["ip", "-j", "-4", "rule", "show"] },
  routes: { command: ["ip", "-j", "-4", "route", "show", "table", "all"] },
  firewall: { command: a.firewall === "iptables" ? ["iptables-save"] : ["nft", "-j", "list", "table", "inet", NFT_TABLE] },
  active: { command: ["systemctl", "is-active", SERVICE] },
  enabled: { command: ["systemctl", "is-enabled", SERVICE] },
  sysctls: { command: ["sysctl", ...Object.keys(SYSCTLS)] },
});
export type LiveFacts = { [K in keyof ReturnType<typeof liveProbes>]: CommandOutput };

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
