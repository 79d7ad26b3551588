// The agent's side of a bundle's playbook (format "provision-device-playbook/1", written
// by provision publish: core/pull/publish.ts): the plays exactly as a push run prepared
// them for this device (variables resolved, templates rendered), turned back into the
// engine's prepared plays. Arguments are checked again against the agent's own modules
// (a bundle may come from a controller with other versions of them).
//
//   {"format": "provision-device-playbook/1", "secrets"?: [...],
//    "plays": [{"name", "confirm_timeout", "tasks": [{"name", "module", "args", "when"?, "notify"?, "tags"?, "diff"?}], "handlers": [...]}]}
//
// `secrets` (optional) lists values to mask beyond those the modules name (a PSK templated
// into a file); like every string holding a secret it travels encrypted in the bundle.
import type { Task } from "../config/playbook.js";
import type { Registry } from "../config/registry.js";
import { masker, secretsOf } from "../config/secrets.js";
import { ConfigError, quote } from "../errors.js";
import type { HostWork, TaskInstance } from "../run/engine.js";
import type { PreparedPlay } from "../run/run.js";
import type { ConnectionTarget } from "../transport/transport.js";

export const DEVICE_PLAYBOOK_FORMAT = "provision-device-playbook/1";

type DeviceTask = { name: string; module: string; args: unknown; when?: Record<string, string[]>; notify?: string[]; tags?: string[]; diff?: false };
type DevicePlay = { name: string; confirm_timeout: number; tasks: DeviceTask[]; handlers: DeviceTask[] };

function fail(problem: string): never {
  throw new ConfigError(`the bundle's playbook ${problem}. Publish it again with this version of provision.`);
}

function readTask(t: DeviceTask, where: string): DeviceTask {
  if (!t || typeof t.name !== "string" || typeof t.module !== "string") fail(`has a task without name or module (${where})`);
  if (t.when !== undefined && (typeof t.when !== "object" || Object.values(t.when).some((v) => !Array.isArray(v)))) fail(`has a malformed when: in task ${quote(t.name)}`);
  return t;
}

/** The bundle's plays, checked for shape. */
export function readDevicePlaybook(doc: unknown): { plays: DevicePlay[]; secrets: string[] } {
  const d = doc as { format?: unknown; plays?: unknown; secrets?: unknown } | null;
  if (!d || typeof d !== "object" || d.format !== DEVICE_PLAYBOOK_FORMAT) fail(`is not in the format "${DEVICE_PLAYBOOK_FORMAT}" (got ${quote(String(d?.format ?? null))})`);
  if (!Array.isArray(d.plays)) fail("has no plays");
  const plays = (d.plays as DevicePlay[]).map((p, i) => {
    if (!p || typeof p.name !== "string" || !Number.isInteger(p.confirm_timeout) || !Array.isArray(p.tasks) || !Array.isArray(p.handlers ?? []))
      fail(`has a malformed play (#${i + 1})`);
    return {
      ...p,
      tasks: p.tasks.map((t, j) => readTask(t, `play #${i + 1}, task #${j + 1}`)),
      handlers: (p.handlers ?? []).map((t, j) => readTask(t, `play #${i + 1}, handler #${j + 1}`)),
    };
  });
  const secrets =
    d.secrets === undefined ? [] : Array.isArray(d.secrets) && d.secrets.every((s) => typeof s === "string") ? (d.secrets as string[]) : fail("has secrets that are not strings");
  return { plays, secrets };
}

/** The engine's plays for this device, run through `target` (the local transport). */
export function devicePlays(doc: unknown, registry: Registry, target: ConnectionTarget): { plays: PreparedPlay[]; mask: (text: string) => string } {
  const { plays, secrets } = readDevicePlaybook(doc);
  const hostFacts = registry.hostFacts();
  const named = new Set<string>(secrets);
  const instance = (t: DeviceTask, handler: boolean, play: number): TaskInstance => {
    if (!registry.has(t.module)) fail(`uses module ${quote(t.module)} (task ${quote(t.name)}), which this agent does not have. Add its plugin to the agent's plugins:`);
    const module = registry.get(t.module);
    const args = structuredClone(t.args);
    const validate = registry.validator(t.module);
    if (!validate(args))
      fail(`has invalid arguments for module ${t.module} in task ${quote(t.name)} (${validate.errors?.map((e) => `${e.instancePath || "args"} ${e.message}`).join("; ")})`);
    const conditions = Object.entries(t.when ?? {}).map(([fact, values]) => {
      const f = hostFacts.get(fact);
      if (!f) fail(`names host fact ${quote(fact)} in task ${quote(t.name)}'s when:, which no module of this agent gathers`);
      return { fact: f, values };
    });
    const own = secretsOf(module, args, quote(t.name));
    own.forEach((s) => named.add(s));
    const task: Task = { name: t.name, module: t.module, rawArgs: t.args, tags: t.tags ?? [], notify: t.notify ?? [], diff: t.diff !== false, when: t.when ?? {}, path: [play] };
    return { task, module, args, handler, conditions, mask: masker([...own, ...secrets]) };
  };
  const prepared = plays.map((p, i): PreparedPlay => {
    const host: HostWork = {
      name: target.name,
      target,
      confirmTimeoutSeconds: p.confirm_timeout,
      tasks: p.tasks.map((t) => instance(t, false, i)),
      handlers: p.handlers.map((t) => instance(t, true, i)),
    };
    return { name: p.name, hosts: [host], disruptive: p.tasks.filter((t) => registry.get(t.module).disruptive).map((t) => t.name), anyErrorsFatal: false };
  });
  return { plays: prepared, mask: masker([...named]) };
}
