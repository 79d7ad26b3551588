// The module registry. Built-ins and plugins go through the same loader.
import { createRequire } from "node:module";
import { isAbsolute, resolve, dirname } from "node:path";
import { pathToFileURL } from "node:url";
import type { ValidateFunction } from "ajv";
import type { HostFact, ModuleDefinition, PluginExport } from "./module-api.js";
import { compile } from "./schema.js";
import { ConfigError } from "./errors.js";

/** The origin of the modules that ship with provision (their schemas are checked by its tests). */
export const BUILT_IN = "built-in";

export class Registry {
  private modules = new Map<string, { module: ModuleDefinition; origin: string }>();

  register(module: ModuleDefinition, origin: string): void {
    const problem = contractProblem(module);
    if (problem) throw new ConfigError(`${origin}: not a provision module: ${problem}. See "Writing a module" in README.md.`);
    const existing = this.modules.get(module.name);
    if (existing) throw new ConfigError(`${origin}: module "${module.name}" is already provided by ${existing.origin}. Rename one of them.`);
    this.modules.set(module.name, { module, origin });
  }

  registerExport(exported: PluginExport, origin: string): void {
    const list = Array.isArray(exported) ? exported : "modules" in exported && Array.isArray(exported.modules) ? exported.modules : [exported as ModuleDefinition];
    for (const module of list) this.register(module, origin);
  }

  /** Load a plugin from a path (relative to `baseDir`) or an npm package name. */
  async loadPlugin(specifier: string, baseDir: string): Promise<void> {
    const isPath = specifier.startsWith(".") || isAbsolute(specifier);
    let url: string;
    try {
      const require = createRequire(resolve(baseDir, "noop.js"));
      url = pathToFileURL(require.resolve(isPath ? resolve(baseDir, specifier) : specifier)).href;
    } catch {
      throw new ConfigError(`plugin "${specifier}": cannot find it from ${baseDir}. Install the package (npm install ${specifier}) or fix the path.`);
    }
    let loaded: Record<string, unknown>;
    try {
      loaded = await import(url);
    } catch (error) {
      throw new ConfigError(`plugin "${specifier}": failed to load: ${(error as Error).message}`, { cause: error });
    }
    const exported = (loaded.default ?? loaded) as PluginExport;
    this.registerExport(exported, `plugin "${specifier}"`);
  }

  has(name: string): boolean {
    return this.modules.has(name);
  }

  get(name: string): ModuleDefinition {
    return this.entry(name).module;
  }

  private entry(name: string): { module: ModuleDefinition; origin: string } {
    const entry = this.modules.get(name);
    if (!entry) throw new ConfigError(`unknown module "${name}"`);
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
    const best = this.names().map((n) => [n, distance(n, name)] as const).sort((a, b) => a[1] - b[1])[0];
    return best && best[1] <= Math.max(2, name.length / 3) ? ` Did you mean "${best[0]}"?` : "";
  }
}

function contractProblem(m: ModuleDefinition): string | null {
  if (!m || typeof m !== "object") return "the export is not an object";
  if (typeof m.name !== "string" || !/^[a-z][a-z0-9_]*$/.test(m.name)) return `"name" must be snake_case (got ${JSON.stringify(m.name)})`;
  if (!m.schema || typeof m.schema !== "object") return `module "${m.name}" has no JSON "schema" for its arguments`;
  for (const fn of ["facts", "plan"] as const) if (typeof m[fn] !== "function") return `module "${m.name}" has no ${fn}() function`;
  if (m.notes !== undefined && typeof m.notes !== "function") return `module "${m.name}": notes must be a function`;
  if (m.hostFacts !== undefined && (!Array.isArray(m.hostFacts) || m.hostFacts.some((f) => typeof f?.name !== "string" || typeof f.parse !== "function" || !f.probe)))
    return `module "${m.name}": hostFacts must be a list of { name, probe, parse, value, describe }`;
  if (m.verify && (typeof m.verify.probes !== "function" || typeof m.verify.check !== "function")) return `module "${m.name}": verify needs probes() and check()`;
  return null;
}

function distance(a: string, b: string): number {
  const d = Array.from({ length: a.length + 1 }, (_, i) => [i, ...Array(b.length).fill(0)]);
  for (let j = 1; j <= b.length; j++) d[0][j] = j;
  for (let i = 1; i <= a.length; i++)
    for (let j = 1; j <= b.length; j++)
      d[i][j] = Math.min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1));
  return d[a.length][b.length];
}

export function playbookDir(file: string): string {
  return dirname(resolve(file));
}
