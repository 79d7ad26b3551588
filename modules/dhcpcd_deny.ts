// dhcpcd_deny: keep dhcpcd off interfaces it must not touch (bond slaves, the bond).
import { defineModule, fileChange, lines, type FileState, type PlanContext } from "../core/module-api.js";
import { STACK_NAMES, networkStackFact, type NetworkStack } from "./network/stack.js";

export interface DhcpcdDenyArgs {
  interfaces: string[];
  path: string;
}

const DENY = /^\s*denyinterfaces\b(.*)$/;

/** One denyinterfaces line holding the existing entries plus the wanted ones, in order, no duplicates. */
export function withDenied(current: string | null, wanted: string[]): string {
  const all = lines(current);
  const first = all.findIndex((l) => DENY.test(l));
  const existing = all.flatMap((l) => DENY.exec(l)?.[1].trim().split(/\s+/).filter(Boolean) ?? []);
  const merged = [...new Set([...existing, ...wanted])];
  const line = `denyinterfaces ${merged.join(" ")}`;
  if (first < 0) return [...all, line].join("\n") + "\n";
  const result = all.filter((l, i) => i === first || !DENY.test(l));
  result[result.findIndex((l) => DENY.test(l))] = line;
  return result.join("\n") + "\n";
}

export default defineModule({
  name: "dhcpcd_deny",
  description: "Ensure one 'denyinterfaces' line in /etc/dhcpcd.conf covers the listed interfaces (merged with any existing entries)",
  schema: {
    type: "object",
    additionalProperties: false,
    required: ["interfaces"],
    properties: {
      interfaces: { type: "array", minItems: 1, items: { type: "string", pattern: "^[A-Za-z0-9_.*?-]{1,15}$" } },
      path: { type: "string", pattern: "^/[A-Za-z0-9_./-]+$", default: "/etc/dhcpcd.conf" },
    },
  },
  hostFacts: [networkStackFact],
  facts: (a: DhcpcdDenyArgs) => ({ conf: { file: a.path } }),
  plan(a: DhcpcdDenyArgs, facts: { conf: FileState }, context: PlanContext) {
    if (!hasDhcpcd(facts, context)) return [];
    const desired = withDenied(facts.conf.content, a.interfaces);
    const current = lines(facts.conf.content).filter((l) => DENY.test(l));
    const covered = current.length === 1 && a.interfaces.every((i) => current[0].split(/\s+/).includes(i));
    if (covered) return [];
    return fileChange(facts.conf, desired, { summary: `deny ${a.interfaces.join(", ")} to dhcpcd in ${a.path}`, reboot: true });
  },
  notes(_a: DhcpcdDenyArgs, facts: { conf: FileState }, context: PlanContext) {
    const stack = context.facts[networkStackFact.name] as NetworkStack | undefined;
    return hasDhcpcd(facts, context) ? [] : [`no dhcpcd on this host (${STACK_NAMES[stack?.stack ?? "none"]} runs its network): nothing to deny`];
  },
});

/** dhcpcd is there to keep away when it is installed or its configuration exists. */
function hasDhcpcd(facts: { conf: FileState }, context: PlanContext): boolean {
  const stack = context.facts[networkStackFact.name] as NetworkStack | undefined;
  return facts.conf.content !== null || !stack || stack.installed.dhcpcd !== false;
}
