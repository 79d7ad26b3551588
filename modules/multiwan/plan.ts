// multiwan's plan: the files it writes, then one activation of the agent whose undo
// restores what the host ran before; or, when the files are in place, a restart if the
// live state drifted.
import { PlanError, fileChange, type Change, type CommandOutput, type FileState } from "../../core/module-api.js";
import { AGENT, UNDO_ACTIVATE, UNIT, renderConfig, renderIptables, renderNft, renderSysctl } from "./render.js";
import { PATHS, SERVICE, SYSCTLS, tableOf, targetsOf, type MultiwanArgs } from "./schema.js";
import { describeRule, inRange, liveProblems, parseHealth, parseJson, parseSysctls, type IpRoute, type IpRule, type LiveFacts } from "./verify.js";

const ACTIVATE = `systemctl daemon-reload && systemctl enable --quiet ${SERVICE} && systemctl restart ${SERVICE}`;

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
  unique(
    a.uplinks.map((u) => u.name),
    "name",
  );
  unique(
    a.uplinks.map((u) => u.interface),
    "interface",
  );
  const missing = a.uplinks.find((u) => !targetsOf(a, u).length);
  if (missing) throw new PlanError(`uplink ${missing.name} has nothing to ping: set check.targets (or its check_targets) to addresses on the internet that answer ping`);
  if ((a.check.required_up ?? 0) > a.uplinks.length) throw new PlanError(`check.required_up is ${a.check.required_up} but there are only ${a.uplinks.length} uplinks`);
  if (tableOf(a, a.uplinks.length - 1) > 252) throw new PlanError(`table_base ${a.table_base} leaves no room for ${a.uplinks.length} uplink tables below 253`);
}

export type PlanFacts = LiveFacts & { [K in keyof typeof PATHS]: FileState };

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
  const restoreSysctls = Object.keys(SYSCTLS)
    .filter((k) => old[k] !== undefined && old[k] !== SYSCTLS[k])
    .map((k) => `${k}=${old[k]}`);
  const was = (out: CommandOutput, state: string) => (out.stdout.trim() === state ? "1" : "0");
  return {
    kind: "command",
    summary,
    argv: ["sh", "-c", ACTIVATE],
    undo: [
      "sh",
      "-c",
      UNDO_ACTIVATE,
      "provision",
      was(facts.active, "active"),
      was(facts.enabled, "enabled"),
      String(a.priority_base),
      String(a.table_base),
      String(tableOf(a, a.uplinks.length - 1)),
      ...restoreSysctls,
    ],
    disruptive: true,
  };
}

export function planChanges(a: MultiwanArgs, facts: PlanFacts): Change[] {
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
