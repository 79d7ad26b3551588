// The module registry. Built-ins and plugins go through the same loader.
import { createRequire } from "node:module";
import { isAbsolute, resolve, dirname } from "node:path";
import { pathToFileURL } from "node:url";
import type { ValidateFunction } from "ajv";
import type { HostFact, ModuleDefinition, PluginExport } from "../module-api.js";
import { compile } from "./schema.js";
import { ConfigError, ModuleBug, messageOf, quote, shorten } from "../errors.js";

/** The origin of the modules that ship with provision (their schemas are checked by its tests). */
export const BUILT_IN = "built-in";

export class Registry {
  private modules = new Map<string, { module: ModuleDefinition; origin: string }>();

  register(module: ModuleDefinition, origin: string): void {
    const problem = contractProblem(module);
    if (problem) throw new ConfigError(`${origin}: not a provision module: ${problem}. ${EXPORTS}`);
    const existing = this.modules.get(module.name);
    if (existing) throw new ConfigError(`${origin}: module "${module.name}" is already provided by ${existing.origin}. Rename one of them.`);
    this.modules.set(module.name, { module: synchronous(module, origin), origin });
  }

  /** A plugin's export: a module object, a list of them, or { modules: [...] }; anything else is refused, saying what it is. */
  registerExport(exported: unknown, origin: string): void {
    const what = (v: unknown) =>
      v === undefined
        ? "nothing"
        : v !== null && typeof v === "object" && !Array.isArray(v)
          ? "an object"
          : `${typeof v === "string" || typeof v === "number" || typeof v === "boolean" || typeof v === "bigint" ? `a ${typeof v} ` : ""}${quote(v)}`;
    let list: unknown[];
    if (Array.isArray(exported)) list = exported;
    else if (exported !== null && typeof exported === "object" && "modules" in exported) {
      const modules = (exported as { modules: unknown }).modules;
      if (!Array.isArray(modules)) throw new ConfigError(`${origin}: exports "modules" that is ${what(modules)}, not a list of modules. ${EXPORTS}`);
      list = modules;
    } else if (exported !== null && typeof exported === "object") list = [exported];
    else throw new ConfigError(`${origin}: exports ${what(exported)}, not a provision module. ${EXPORTS}`);
    if (!list.length) throw new ConfigError(`${origin}: exports an empty list of modules. ${EXPORTS}`);
    list.forEach((module, i) => {
      if (module === null || typeof module !== "object" || Array.isArray(module))
        throw new ConfigError(`${origin}: item [${i}] of its export is ${what(module)}, not a module object. ${EXPORTS}`);
      this.register(module as ModuleDefinition, list.length > 1 ? `${origin} (item [${i}])` : origin);
    });
  }

  /** Load a plugin from a path (relative to `baseDir`) or an npm package name. */
  async loadPlugin(specifier: string, baseDir: string): Promise<void> {
    const isPath = specifier.startsWith(".") || isAbsolute(specifier);
    let url: string;
    try {
      const require = createRequire(resolve(baseDir, "noop.js"));
      url = pathToFileURL(require.resolve(isPath ? resolve(baseDir, specifier) : specifier)).href;
    } catch {
      throw new ConfigError(`plugin ${quote(specifier)}: cannot find it from ${baseDir}. Install the package (npm install ${quote(specifier)}) or fix the path.`);
    }
    let loaded: Record<string, unknown>;
    try {
      loaded = await import(url);
    } catch (error) {
      throw new ConfigError(`plugin ${quote(specifier)}: failed to load: ${shorten(messageOf(error), 300)}`, { cause: error });
    }
    // a module with no default export may export { modules }; a default of null is an error, not "no default"
    const exported = "default" in loaded ? loaded.default : loaded;
    this.registerExport(exported as PluginExport, `plugin ${quote(specifier)}`);
  }

  has(name: string): boolean {
    return this.modules.has(name);
  }

  get(name: string): ModuleDefinition {
    return this.entry(name).module;
  }

  private entry(name: string): { module: ModuleDefinition; origin: string } {
    const entry = this.modules.get(name);
    if (!entry) throw new ConfigError(`unknown module ${quote(name)}`);
    return entry;
  }

  names(): string[] {
    return [...this.modules.keys()].sort();
  }

  /** Every host fact a registered module contributes, by name (for when:). */
  hostFacts(): Map<string, HostFact> {
    return new Map([...this.modules.values()].flatMap(({ module }) => (module.hostFacts ?? []).map((f) => [f.name, f] as const)));
  }

  /** Compiled on first use: compiling every module's schema at start-up costs tens of ms. */
  validator(name: string): ValidateFunction {
    try {
      const { module, origin } = this.entry(name);
      return compile(module.schema, { checkSchema: origin !== BUILT_IN });
    } catch (error) {
      throw new ConfigError(`module "${name}" has an invalid schema: ${(error as Error).message}`, { cause: error });
    }
  }

  suggest(name: string): string {
    if (name.length > 64) return ""; // the edit distance is quadratic
    const best = this.names()
      .map((n) => [n, distance(n, name)] as const)
      .sort((a, b) => a[1] - b[1])[0];
    return best && best[1] <= Math.max(2, name.length / 3) ? ` Did you mean "${best[0]}"?` : "";
  }
}

const EXPORTS = `A plugin exports (default) a module object, a list of them, or { modules: [...] }. See "Writing a module" in README.md.`;

function contractProblem(m: ModuleDefinition): string | null {
  if (!m || typeof m !== "object") return "the export is not an object";
  if (typeof m.name !== "string" || !/^[a-z][a-z0-9_]*$/.test(m.name)) return `"name" must be snake_case (got ${quote(m.name)})`;
  if (!m.schema || typeof m.schema !== "object") return `module "${m.name}" has no JSON "schema" for its arguments`;
  for (const fn of ["facts", "plan"] as const) if (typeof m[fn] !== "function") return `module "${m.name}" has no ${fn}() function`;
  if (m.notes !== undefined && typeof m.notes !== "function") return `module "${m.name}": notes must be a function`;
  if (m.hostFacts !== undefined && (!Array.isArray(m.hostFacts) || m.hostFacts.some((f) => typeof f?.name !== "string" || typeof f.parse !== "function" || !f.probe)))
    return `module "${m.name}": hostFacts must be a list of { name, probe, parse, value, describe }`;
  for (const fn of ["secrets", "check", "checkPlay"] as const) if (m[fn] !== undefined && typeof m[fn] !== "function") return `module "${m.name}": ${fn} must be a function`;
  if (m.verify && (typeof m.verify.probes !== "function" || typeof m.verify.check !== "function")) return `module "${m.name}": verify needs probes() and check()`;
  return null;
}

const AsyncFunction = (async () => {}).constructor;

/**
 * The module with every function checked for the contract's one rule the type system cannot
 * enforce at run time: it returns its result, not a Promise (plan must be synchronous: I/O is
 * done by the core through probes). An async function is refused when the plugin is loaded.
 */
function synchronous(module: ModuleDefinition, origin: string): ModuleDefinition {
  const check = <F extends (...args: never[]) => unknown>(what: string, fn: F | undefined, self: object): F | undefined => {
    if (typeof fn !== "function") return fn;
    const problem = `module "${module.name}" (${origin}): ${what} must be synchronous`;
    if (fn instanceof AsyncFunction) throw new ModuleBug(`${problem}, but it is an async function. Return the result itself; read the host with probes (facts).`);
    return ((...args: never[]) => {
      const result = fn.apply(self, args);
      if (result !== null && typeof (result as { then?: unknown })?.then === "function") {
        (result as Promise<unknown>).then(undefined, () => {}); // its rejection is this error, not a crash
        throw new ModuleBug(`${problem}, but it returned a Promise. Return the result itself; read the host with probes (facts).`);
      }
      return result;
    }) as F;
  };
  // Object.create keeps every other property, including a class-based module's prototype methods.
  const wrapped: ModuleDefinition = Object.create(module);
  for (const fn of ["facts", "plan", "notes", "secrets", "check", "checkPlay"] as const) if (module[fn]) wrapped[fn] = check(fn, module[fn], module) as never;
  if (module.verify) {
    const verify: NonNullable<ModuleDefinition["verify"]> = Object.create(module.verify);
    verify.probes = check("verify.probes", module.verify.probes, module.verify)!;
    verify.check = check("verify.check", module.verify.check, module.verify)!;
    wrapped.verify = verify;
  }
  return wrapped;
}

function distance(a: string, b: string): number {
  const d = Array.from({ length: a.length + 1 }, (_, i) => [i, ...Array(b.length).fill(0)]);
  for (let j = 1; j <= b.length; j++) d[0][j] = j;
  for (let i = 1; i <= a.length; i++) for (let j = 1; j <= b.length; j++) d[i][j] = Math.min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1));
  return d[a.length][b.length];
}

export function playbookDir(file: string): string {
  return dirname(resolve(file));
}
