// kernel_module: load a kernel module now and at boot, with its options.
import { defineModule, fileChange, commandChange, lines, type Change, type FileState, type DirState, type PlanContext } from "../core/module-api.js";

const NAME = "^[A-Za-z0-9_-]+$";

export interface KernelModuleArgs {
  name: string;
  state: "present" | "absent";
  persist: boolean;
  persist_file?: string;
  options?: Record<string, string | number | boolean>;
}

const persistFile = (a: KernelModuleArgs) => a.persist_file ?? `/etc/modules-load.d/${a.name}.conf`;
const optionsFile = (a: KernelModuleArgs) => `/etc/modprobe.d/${a.name}.conf`;
/** The kernel lists modules with underscores. */
const kernelName = (name: string) => name.replace(/-/g, "_");

export function optionsLine(a: KernelModuleArgs): string {
  const pairs = Object.entries(a.options ?? {}).map(([k, v]) => `${k}=${v === true ? 1 : v === false ? 0 : v}`);
  return `options ${a.name} ${pairs.join(" ")}`;
}

/**
 * The options file with the module's options set: /etc/modprobe.d/NAME.conf may hold lines
 * of others (alias, blacklist, softdep, their own options). modprobe applies every options
 * line of a module, so ours goes where the first one was, and the others lose only the
 * parameters ours sets (a line left with none goes); everything else is kept.
 */
export function optionsContent(a: KernelModuleArgs, current: string | null): string {
  const ours = new Set(Object.keys(a.options ?? {}));
  const existing = lines(current);
  const isOptions = (l: string) => {
    const [keyword, module] = l.trim().split(/\s+/);
    return keyword === "options" && module === a.name;
  };
  const first = existing.findIndex(isOptions);
  const kept = existing.flatMap((l, i) => {
    if (!isOptions(l)) return [l];
    const params = l.trim().split(/\s+/).slice(2);
    const others = params.filter((p) => !ours.has(p.split("=")[0]));
    const rest = others.length === params.length ? [l] : others.length ? [`options ${a.name} ${others.join(" ")}`] : [];
    return i === first ? [optionsLine(a), ...rest] : rest;
  });
  return [...kept, ...(first < 0 ? [optionsLine(a)] : [])].join("\n") + "\n";
}

/** The persist file with the module's line present (or absent), other lines kept. */
export function persistContent(a: KernelModuleArgs, current: string | null): string | null {
  const existing = lines(current);
  const has = existing.some((l) => l.trim() === a.name);
  if (a.state === "present") return has ? current : [...existing, a.name].join("\n") + "\n";
  if (!has) return current;
  const kept = existing.filter((l) => l.trim() !== a.name);
  return kept.length || a.persist_file ? kept.join("\n") + (kept.length ? "\n" : "") : null;
}

function isLoaded(name: string, procModules: string | null): boolean {
  return lines(procModules).some((l) => l.split(" ")[0] === kernelName(name));
}

/**
 * Loaded parameters that differ from the wanted options. Parameters the module
 * does not expose in sysfs cannot be compared; they are judged by whether the
 * options file was written after boot (then the loaded module predates it).
 */
export function staleParameters(a: KernelModuleArgs, params: DirState, optionsConf: FileState, bootTime: number): string[] {
  const stale: string[] = [];
  let unreadable = false;
  for (const [key, value] of Object.entries(a.options ?? {})) {
    const loaded = params.entries?.[key];
    if (loaded === undefined || loaded.trim() === "") {
      unreadable = true;
      continue;
    }
    const want = value === true ? "1" : value === false ? "0" : String(value);
    const have = loaded.trim();
    if (have !== want && have.split(" ")[0] !== want && !(want === "1" && have === "Y") && !(want === "0" && have === "N")) stale.push(`${key}=${have} (want ${want})`);
  }
  if (unreadable && (optionsConf.mtime ?? 0) > bootTime) stale.push("options written after the module was loaded");
  return stale;
}

type Facts = { modules: FileState; persisted: FileState; options: FileState; parameters: DirState };

export default defineModule({
  name: "kernel_module",
  description: "Load a kernel module now (modprobe) and at boot, with options in /etc/modprobe.d; reports 'reboot needed' when the loaded module has other options",
  schema: {
    type: "object",
    additionalProperties: false,
    required: ["name"],
    properties: {
      name: { type: "string", pattern: NAME },
      state: { type: "string", enum: ["present", "absent"], default: "present" },
      persist: { type: "boolean", default: true },
      persist_file: { type: "string", pattern: "^/[A-Za-z0-9_./-]+$" },
      options: {
        type: "object",
        propertyNames: { pattern: "^[A-Za-z0-9_]+$" },
        additionalProperties: { type: ["string", "number", "boolean"], pattern: "^[A-Za-z0-9_.,:+-]+$" },
      },
    },
  },
  facts: (a: KernelModuleArgs) => ({
    modules: { file: "/proc/modules" },
    persisted: { file: persistFile(a) },
    options: { file: optionsFile(a) },
    parameters: { dir: `/sys/module/${kernelName(a.name)}/parameters` },
  }),
  plan(a: KernelModuleArgs, facts: Facts, context: PlanContext): Change[] {
    const loaded = isLoaded(a.name, facts.modules.content);
    const changes: Change[] = [];
    if (a.state === "present" && a.options) {
      const wanted = optionsContent(a, facts.options.content);
      changes.push(...fileChange(facts.options, wanted, { summary: `set ${a.name} options in ${optionsFile(a)}`, reboot: loaded }));
      if (loaded && !changes.length) {
        const stale = staleParameters(a, facts.parameters, facts.options, context.hostFacts.bootTime);
        if (stale.length) changes.push({ kind: "pending", summary: `reboot needed: ${a.name} is loaded with other options (${stale.join(", ")})`, reboot: true });
      }
    }
    if (a.persist)
      changes.push(
        ...fileChange(facts.persisted, persistContent(a, facts.persisted.content), {
          summary: `${a.state === "present" ? "load" : "stop loading"} ${a.name} at boot (${persistFile(a)})`,
        }),
      );
    if (a.state === "present" && !loaded) changes.push({ ...commandChange(`load ${a.name} (modprobe)`, ["modprobe", a.name], ["modprobe", "-r", a.name]), undoDisruptive: true });
    if (a.state === "absent" && loaded) changes.push(commandChange(`unload ${a.name}`, ["modprobe", "-r", a.name], ["modprobe", a.name]));
    return changes;
  },
  verify: {
    probes: () => ({ modules: { file: "/proc/modules" } }),
    check: (a: KernelModuleArgs, facts: { modules: FileState }) =>
      isLoaded(a.name, facts.modules.content) === (a.state === "present") ? [] : [`${a.name} is ${a.state === "present" ? "not loaded" : "still loaded"}`],
  },
});
