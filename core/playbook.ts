// Playbooks: plays with hosts, vars, tasks, handlers; one module per task.
import { compile } from "./schema.js";
import { YamlSource, type Path } from "./yaml-source.js";
import { ConfigError } from "./errors.js";
import { render, UndefinedVariable } from "./template.js";
import type { Registry } from "./registry.js";

const TASK_KEYWORDS = ["name", "tags", "notify", "diff", "when"] as const;

export interface Task {
  name: string;
  module: string;
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
        anyOf: [{ type: "string", minLength: 1 }, { type: "array", minItems: 1, items: { type: "string", minLength: 1 } }],
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

/** Parse and validate structure; plugins are named here but loaded by the caller. */
export function loadPlaybook(file: string): Playbook {
  const source = YamlSource.load(file);
  const doc = source.toJS();
  const validate = compile(playbookSchema);
  if (!validate(doc)) throw source.schemaError(validate.errors ?? [], [], "playbook");
  const plays = (doc as Record<string, unknown>[]).map((play, i) => readPlay(play, [i]));
  return { file: source.file, source, plays };
}

function readPlay(play: Record<string, unknown>, path: Path): Play {
  const tasks = (list: unknown, key: string) =>
    ((list as Record<string, unknown>[] | undefined) ?? []).map((t, i) => readTask(t, [...path, key, i]));
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
  const notify = task.notify === undefined ? [] : [task.notify].flat() as string[];
  return {
    name: (task.name as string) ?? moduleKeys[0] ?? "?",
    module: moduleKeys.length === 1 ? moduleKeys[0] : moduleKeys.join(","),
    rawArgs: moduleKeys.length === 1 ? task[moduleKeys[0]] ?? {} : undefined,
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
      if (task.module.includes(",") || task.module === "?")
        throw new ConfigError(`${at}: task "${task.name}": names ${task.module === "?" ? "no module" : `several modules (${task.module})`}. A task runs exactly one module; split it.`);
      if (!registry.has(task.module))
        throw new ConfigError(`${playbook.source.keyPosition(task.path, task.module)}: task "${task.name}": unknown module "${task.module}".${registry.suggest(task.module)} Known modules: ${registry.names().join(", ")}.`);
      registry.validator(task.module); // a plugin's broken schema is reported before any host is contacted
      checkConditions(playbook, task, registry);
      for (const handler of task.notify)
        if (!handlerNames.has(handler))
          throw new ConfigError(`${playbook.source.position([...task.path, "notify"])}: task "${task.name}": notifies unknown handler "${handler}". Define it under handlers: or fix the name.`);
    }
  }
}

/** when: names known host facts and values they can take. */
function checkConditions(playbook: Playbook, task: Task, registry: Registry): void {
  const facts = registry.hostFacts();
  for (const [name, values] of Object.entries(task.when)) {
    const fact = facts.get(name);
    const at = playbook.source.keyPosition([...task.path, "when"], name);
    if (!fact)
      throw new ConfigError(`${at}: task "${task.name}": when: names unknown host fact "${name}". Known host facts: ${[...facts.keys()].join(", ") || "none"}.`);
    values.forEach((value, i) => {
      if (!fact.values.includes(value))
        throw new ConfigError(`${playbook.source.position([...task.path, "when", name, i])}: task "${task.name}": when: ${name} is never "${value}". Use one of: ${fact.values.join(", ")}.`);
    });
  }
}

/** Template a task's args for one host and validate them against the module's schema. */
export function resolveArgs(playbook: Playbook, task: Task, vars: Record<string, unknown>, registry: Registry, host: string): unknown {
  const argsPath = [...task.path, task.module];
  let args: unknown;
  try {
    args = render(structuredClone(task.rawArgs), vars);
  } catch (error) {
    if (!(error instanceof UndefinedVariable)) throw error;
    const at = playbook.source.position([...argsPath, ...error.path]);
    throw new ConfigError(`${at}: task "${task.name}" (host ${host}): undefined variable "${error.variable}". Define it in the play's vars or the inventory.`);
  }
  const validate = registry.validator(task.module);
  if (!validate(args)) throw playbook.source.schemaError(validate.errors ?? [], argsPath, `task "${task.name}" > ${task.module}`);
  return args;
}
