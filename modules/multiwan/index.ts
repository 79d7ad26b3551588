// multiwan: a router over several internet uplinks (seeds rpi-multipath-connmark and
// linux-multipath-upload-bonding). A weighted multipath default route spreads new
// connections over the uplinks; nftables marks each connection with the uplink it left
// through and `ip rule fwmark` keeps its later packets there (what the route cache did
// before Linux 3.6); a health agent on the host pings through each uplink and takes a
// dead one out of the multipath route. Everything it owns carries its name: the
// nftables table, one priority range of ip rules, one range of routing tables.
//   schema.ts  arguments, names and numbering     render.ts  the files it writes on the host
//   plan.ts    files + activation, or a restart   verify.ts  the live state read back and judged
//   agent.sh   the health agent (with clear-state.sh; undo-activate.sh is the activation's rollback)
import { defineModule, type CommandOutput } from "../../core/module-api.js";
import { planChanges, type PlanFacts } from "./plan.js";
import { PATHS, multiwanSchema, type MultiwanArgs } from "./schema.js";
import { healthVerdict, liveProbes, liveProblems, parseHealth, uplinkDown, type LiveFacts } from "./verify.js";

export { PATHS, multiwanSchema, type MultiwanArgs, type Uplink } from "./schema.js";
export { AGENT, UNIT, renderConfig, renderIptables, renderNft, renderSysctl } from "./render.js";
export { desiredRules, firewallProblems, healthVerdict, liveProblems, parseHealth, routeProblems, ruleProblems, type UplinkHealth } from "./verify.js";

export default defineModule({
  name: "multiwan",
  description: "Route over several uplinks: weighted multipath, per-connection marks (nftables or iptables), and a health agent that withdraws dead uplinks",
  schema: multiwanSchema,
  disruptive: true,
  facts: (a: MultiwanArgs) =>
    ({ ...liveProbes(a), ...Object.fromEntries(Object.entries(PATHS).map(([k, path]) => [k, { file: path }])) }) as Record<string, { file: string } | { command: string[] }>,
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
