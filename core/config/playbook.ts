// Playbooks: plays with hosts, vars, tasks, handlers; one module per task.
import { compile } from "./schema.js";
import { YamlSource, type Decrypted, type Path } from "./yaml-source.js";
import { ConfigError, ModuleBug, messageOf, quote } from "../errors.js";
import type { ArgProblem, ModuleDefinition, PlayTask } from "../module-api.js";
import { checkTemplates, render, TemplateError, UndefinedVariable } from "./template.js";
import { SHORTEST_MASKED, secretPaths, taintedStrings, variableTaint } from "./secrets.js";
import type { Registry } from "./registry.js";

const TASK_KEYWORDS = ["name", "tags", "notify", "diff", "when"] as const;

export interface Task {
  name: string;
  /** The one module the task runs ("" when it names none or several: see moduleKeys). */
  module: string;
  /** Every key of the task that is not a task keyword: exactly one module name when valid. */
  moduleKeys?: string[];
  rawArgs: unknown;
  tags: string[];
  notify: string[];
  /** false hides this task's diffs (secrets). */
  diff: boolean;
  /** Host fact name → the values for which the task runs (all must match). */
  when: Record<string, string[]>;
  path: Path;
}

export interface Play {
  name: string;
  hosts: string;
  vars: Record<string, unknown>;
  plugins: string[];
  tasks: Task[];
  handlers: Task[];
  serial?: number | string | (number | string)[];
  maxFailPercentage?: number;
  anyErrorsFatal: boolean;
  /** Seconds a host waits for confirmation before reverting a disruptive change (0 = off). */
  confirmTimeout?: number;
  path: Path;
}

export interface Playbook {
  file: string;
  source: YamlSource;
  plays: Play[];
}

const taskSchema = {
  type: "object",
  minProperties: 1,
  properties: {
    name: { type: "string" },
    tags: { type: "array", items: { type: "string" } },
    notify: { type: ["string", "array"], items: { type: "string" } },
    diff: { type: "boolean" },
    when: {
      type: "object",
      minProperties: 1,
      additionalProperties: {
        anyOf: [
          { type: "string", minLength: 1 },
          { type: "array", minItems: 1, items: { type: "string", minLength: 1 } },
        ],
      },
    },
  },
};

export const playbookSchema = {
  type: "array",
  minItems: 1,
  items: {
    type: "object",
    required: ["hosts"],
    additionalProperties: false,
    properties: {
      name: { type: "string" },
      hosts: { type: "string", minLength: 1 },
      vars: { type: "object" },
      plugins: { type: "array", items: { type: "string" } },
      tasks: { type: "array", items: taskSchema },
      handlers: { type: "array", items: taskSchema },
      serial: { type: ["integer", "string", "array"], items: { type: ["integer", "string"] } },
      max_fail_percentage: { type: "number", minimum: 0, maximum: 100 },
      any_errors_fatal: { type: "boolean" },
      confirm_timeout: { type: "integer", minimum: 0 },
    },
  },
};

/** Parse and validate structure; plugins are named here but loaded by the caller. `decrypted`: as for loadInventory. */
export function loadPlaybook(file: string, decrypted: Decrypted = new Map()): Playbook {
  const source = YamlSource.load(file, "a playbook", { decrypted });
  const doc = source.toJS();
  if (!Array.isArray(doc))
    throw new ConfigError(
      `${source.position([])}: playbook: ${doc === null || doc === undefined ? "the file is empty" : `must be a list of plays (got ${quote(doc)})`}. Start each play with "- hosts: PATTERN".`,
    );
  const validate = compile(playbookSchema);
  if (!validate(doc)) throw source.schemaError(validate.errors ?? [], [], "playbook");
  const plays = (doc as Record<string, unknown>[]).map((play, i) => readPlay(play, [i]));
  return { file: source.file, source, plays };
}

function readPlay(play: Record<string, unknown>, path: Path): Play {
  const tasks = (list: unknown, key: string) => ((list as Record<string, unknown>[] | undefined) ?? []).map((t, i) => readTask(t, [...path, key, i]));
  return {
    name: (play.name as string) ?? (play.hosts as string),
    hosts: play.hosts as string,
    vars: (play.vars as Record<string, unknown>) ?? {},
    plugins: (play.plugins as string[]) ?? [],
    tasks: tasks(play.tasks, "tasks"),
    handlers: tasks(play.handlers, "handlers"),
    serial: play.serial as Play["serial"],
    maxFailPercentage: play.max_fail_percentage as number | undefined,
    anyErrorsFatal: (play.any_errors_fatal as boolean) ?? false,
    confirmTimeout: play.confirm_timeout as number | undefined,
    path,
  };
}

function readTask(task: Record<string, unknown>, path: Path): Task {
  const moduleKeys = Object.keys(task).filter((k) => !(TASK_KEYWORDS as readonly string[]).includes(k));
  const notify = task.notify === undefined ? [] : ([task.notify].flat() as string[]);
  const one = moduleKeys.length === 1 && moduleKeys[0] !== "";
  return {
    name: (task.name as string) ?? (one ? moduleKeys[0] : `#${Number(path[path.length - 1]) + 1}`),
    module: one ? moduleKeys[0] : "",
    moduleKeys,
    rawArgs: one ? (task[moduleKeys[0]] ?? {}) : undefined,
    tags: (task.tags as string[]) ?? [],
    notify,
    diff: (task.diff as boolean) ?? true,
    when: Object.fromEntries(Object.entries((task.when as Record<string, string | string[]>) ?? {}).map(([k, v]) => [k, [v].flat()])),
    path,
  };
}

/** Every task names exactly one known module (after plugins are loaded). */
export function checkModules(playbook: Playbook, registry: Registry): void {
  for (const play of playbook.plays) {
    const handlerNames = new Set(play.handlers.map((h) => h.name));
    for (const task of [...play.tasks, ...play.handlers]) {
      const at = playbook.source.position(task.path);
      const keys = task.moduleKeys ?? [task.module];
      const named = keys.filter((k) => k !== "");
      if (!named.length)
        throw new ConfigError(`${at}: task ${quote(task.name)} names no module. Add one, e.g. "apt: { name: ifenslave }" (known modules: ${registry.names().join(", ")}).`);
      if (keys.length > 1)
        throw new ConfigError(`${at}: task ${quote(task.name)} names several modules (${keys.map((k) => quote(k)).join(", ")}). A task runs exactly one module; split it.`);
      if (!registry.has(task.module))
        throw new ConfigError(
          `${playbook.source.keyPosition(task.path, task.module)}: task ${quote(task.name)}: unknown module ${quote(task.module)}.${registry.suggest(task.module)} Known modules: ${registry.names().join(", ")}.`,
        );
      registry.validator(task.module); // a plugin's broken schema is reported before any host is contacted
      checkConditions(playbook, task, registry);
      try {
        checkTemplates(task.rawArgs); // syntax errors once per task, even for a play that matches no host
      } catch (error) {
        throw templateError(playbook, task, error, "");
      }
      for (const handler of task.notify)
        if (!handlerNames.has(handler))
          throw new ConfigError(
            `${playbook.source.position([...task.path, "notify"])}: task ${quote(task.name)}: notifies unknown handler ${quote(handler)}. Define it under handlers: or fix the name.`,
          );
    }
  }
}

/** when: names known host facts and values they can take. */
function checkConditions(playbook: Playbook, task: Task, registry: Registry): void {
  const facts = registry.hostFacts();
  for (const [name, values] of Object.entries(task.when)) {
    const fact = facts.get(name);
    const at = playbook.source.keyPosition([...task.path, "when"], name);
    if (!fact) throw new ConfigError(`${at}: task "${task.name}": when: names unknown host fact "${name}". Known host facts: ${[...facts.keys()].join(", ") || "none"}.`);
    values.forEach((value, i) => {
      if (!fact.values.includes(value))
        throw new ConfigError(
          `${playbook.source.position([...task.path, "when", name, i])}: task "${task.name}": when: ${name} is never "${value}". Use one of: ${fact.values.join(", ")}.`,
        );
    });
  }
}

/** Template a task's args for one host and validate them against the module's schema. */
export function resolveArgs(playbook: Playbook, task: Task, vars: Record<string, unknown>, registry: Registry, host: string): unknown {
  return resolveTask(playbook, task, vars, registry, host).args;
}

/**
 * Template a task's args for one host and validate them; `secrets` are the strings to mask
 * in everything about this task: the secret variables it uses and what it renders from them.
 * `decrypted` are the plaintexts of encrypted values (secret whatever their name).
 */
export function resolveTask(
  playbook: Playbook,
  task: Task,
  vars: Record<string, unknown>,
  registry: Registry,
  host: string,
  decrypted: ReadonlySet<string> = new Set(),
): { args: unknown; secrets: string[] } {
  const argsPath = [...task.path, task.module];
  const taint = variableTaint(decrypted);
  let args: unknown;
  try {
    args = render(structuredClone(task.rawArgs), vars, [], taint);
  } catch (error) {
    throw templateError(playbook, task, error, ` (host ${host})`);
  }
  const secrets = [...taint.values, ...taintedStrings(args, taint.paths)].filter((s) => s.length >= SHORTEST_MASKED);
  const validate = registry.validator(task.module);
  if (!validate(args))
    throw playbook.source.schemaError(validate.errors ?? [], argsPath, `task ${quote(task.name)} > ${task.module}`, {
      hidden: secretPaths(registry.get(task.module), args, taint),
    });
  return { args, secrets };
}

function templateError(playbook: Playbook, task: Task, error: unknown, forHost: string): unknown {
  if (!(error instanceof TemplateError)) return error;
  const path = [...task.path, task.module, ...error.path];
  const at = error.inKey ? playbook.source.keyPosition(path.slice(0, -1), String(path[path.length - 1])) : playbook.source.position(path);
  const fix = error instanceof UndefinedVariable ? "Define it in the play's vars or the inventory." : "Write the value out, or set a variable to it.";
  return new ConfigError(`${at}: task ${quote(task.name)}${forHost}: ${error.message}. ${fix}`);
}

/** The module's own cross-field checks of one task's (valid) args on one host: every problem at its file:line:col. */
export function checkArgs(playbook: Playbook, task: Task, module: ModuleDefinition, args: unknown, host: string, mask: (text: string) => string): void {
  const problems = callCheck(module, task, () => module.check?.(args) ?? []);
  if (problems.length) throw argProblemsError(playbook, [...problems.map((p) => ({ ...p, task, host }))], mask);
}

/** The module's checks across its tasks in one play on all its hosts (one address on two hosts…). */
export function checkPlayTasks(playbook: Playbook, module: ModuleDefinition, tasks: (PlayTask & { source: Task; mask: (text: string) => string })[]): void {
  if (!module.checkPlay || !tasks.length) return;
  const problems = callCheck(module, tasks[0].source, () => module.checkPlay!(tasks.map(({ host, task, args, when }) => ({ host, task, args, when }))));
  if (!problems.length) return;
  const masks = (text: string) => tasks.reduce((t, entry) => entry.mask(t), text);
  throw argProblemsError(
    playbook,
    problems.map((p) => ({ ...p, task: tasks[p.index].source, host: tasks[p.index].host })),
    masks,
  );
}

function callCheck<T>(module: ModuleDefinition, task: Task, check: () => T[]): T[] {
  try {
    const problems = check();
    if (!Array.isArray(problems)) throw new Error("it must return a list of problems");
    return problems;
  } catch (error) {
    throw new ModuleBug(`module "${module.name}" failed to check task ${quote(task.name)}: ${messageOf(error)}`, { cause: error });
  }
}

function argProblemsError(playbook: Playbook, problems: (ArgProblem & { task: Task; host: string })[], mask: (text: string) => string): ConfigError {
  return new ConfigError(
    problems
      .map(({ task, host, path, message }) => {
        const at = playbook.source.position([...task.path, task.module, ...path]);
        const where = path
          .map((p) => (typeof p === "number" ? `[${p}]` : p))
          .join(".")
          .replace(/\.\[/g, "[");
        return mask(`${at}: task ${quote(task.name)} > ${task.module}${where ? ` > ${where}` : ""} (host ${host}): ${message}`);
      })
      .join("\n"),
  );
}
