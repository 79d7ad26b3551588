// reboot: reboot when an earlier change needs it (or always), wait for a new boot_id.
import { defineModule, type Change, type PlanContext } from "../core/module-api.js";

export interface RebootArgs {
  when: "needed" | "always";
  timeout: number;
}

export default defineModule({
  name: "reboot",
  disruptive: true,
  description: "Reboot when an earlier task reported 'reboot needed' (or always), then wait until the host answers with a new boot_id; verification runs after it",
  schema: {
    type: "object",
    additionalProperties: false,
    properties: {
      when: { type: "string", enum: ["needed", "always"], default: "needed" },
      timeout: { type: "integer", minimum: 10, default: 600 },
    },
  },
  facts: () => ({}),
  plan(a: RebootArgs, _facts: Record<string, never>, context: PlanContext): Change[] {
    if (a.when === "needed" && !context.rebootPending) return [];
    const why = a.when === "always" ? "always" : `needed by ${context.rebootReasons.length} change(s)`;
    return [{ kind: "reboot", summary: `reboot (${why}) and wait up to ${a.timeout}s for a new boot_id`, timeoutSeconds: a.timeout }];
  },
});
