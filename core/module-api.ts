// The plugin API. Built-in modules and third-party plugins use exactly this.
//
// A module reads the host with declarative probes (the core batches every task's
// probes into one remote command), plans purely from those facts, and returns
// changes the core knows how to apply, back up and undo.

import { readFileSync } from "node:fs";

/**
 * Quote one word for a POSIX shell ('it'\''s' style, safe for any byte string). Changes run
 * argv arrays and need no quoting; use it where a module writes shell text itself, e.g. a
 * `KEY=value` file its `.sh` agent sources (multiwan's config).
 */
export { quote } from "./transport/shell.js";

export type JsonSchema = Record<string, unknown>;

const OCTET = "(25[0-5]|2[0-4]\\d|1\\d\\d|[1-9]?\\d)";
/** Schema patterns the built-in modules share (plugins may use them too). */
export const PATTERNS = {
  /** A Linux interface name: at most 15 characters, nothing a shell or ifupdown would trip on. */
  ifname: "^[A-Za-z][A-Za-z0-9_.-]{0,14}$",
  ipv4: `^${OCTET}(\\.${OCTET}){3}$`,
  /** An absolute path of plain characters. */
  path: "^/[A-Za-z0-9_./@+-]+$",
};

/** What a module may ask of a host. All probes are read-only. */
export type Probe = { file: string } | { dir: string } | { command: string[] };

export interface FileState {
  path: string;
  /** null when the file does not exist. */
  content: string | null;
  mode?: string;
  owner?: string;
  /** seconds since the epoch. */
  mtime?: number;
}
export interface DirState {
  path: string;
  /** file name → content; null when the directory does not exist. */
  entries: Record<string, string> | null;
}
export interface CommandOutput {
  code: number;
  stdout: string;
}

export type ProbeSet = Record<string, Probe>;
type ResultOf<P> = P extends { file: string } ? FileState : P extends { dir: string } ? DirState : CommandOutput;
export type Facts<P extends ProbeSet> = { [K in keyof P]: ResultOf<P[K]> };

/** Facts every plan may use, gathered once per host. */
export interface HostFacts {
  bootId: string;
  bootTime: number;
  /** systemd runs the host (it can arm a host-side revert). */
  systemd: boolean;
  hostname: string;
}

export interface PlanContext {
  host: string;
  hostFacts: HostFacts;
  /** Named host facts (see HostFact) that the play's modules or its when: conditions use. */
  facts: Readonly<Record<string, unknown>>;
  /** An earlier change in this run (or the host's state) needs a reboot to take effect. */
  rebootPending: boolean;
  rebootReasons: string[];
}

interface ChangeBase {
  /** Imperative, human: "install ifenslave". */
  summary: string;
  /** The change takes effect only after a reboot (or networking restart). */
  reboot?: boolean;
  /** Applying it can cut the management path: the host is armed to revert first. */
  disruptive?: boolean;
  /** Once it takes effect the host answers at this address (the controller confirms there). */
  address?: string;
}
export interface FileChange extends ChangeBase {
  kind: "file";
  path: string;
  before: string | null;
  /** null deletes the file. */
  after: string | null;
  /** octal mode for a new file (an existing file keeps its mode and owner). */
  mode?: string;
}
export interface CommandChange extends ChangeBase {
  kind: "command";
  argv: string[];
  /** argv that reverses it on rollback (recorded on the host before the command runs). */
  undo?: string[];
  /** The undo can cut the management path (e.g. unloading a module that holds the address): a rollback that reboots skips it. */
  undoDisruptive?: boolean;
}
/** Nothing to run, but the host is not in the desired state until it reboots. */
export interface PendingChange extends ChangeBase {
  kind: "pending";
}
export interface RebootChange extends ChangeBase {
  kind: "reboot";
  timeoutSeconds: number;
}
export type Change = FileChange | CommandChange | PendingChange | RebootChange;

export interface ModuleDefinition<Args = unknown, P extends ProbeSet = ProbeSet, V extends ProbeSet = ProbeSet> {
  name: string;
  description: string;
  /** JSON Schema of the task's arguments (ajv, with defaults applied). */
  schema: JsonSchema;
  /** Its tasks can cut the management path (listed before a run; see confirm_timeout). */
  disruptive?: boolean;
  /** Host facts its plans read from context.facts (gathered only when a play uses the module). */
  hostFacts?: HostFact[];
  /** Values in args that must never be printed (Wi-Fi PSKs…). */
  secrets?(args: Args): string[];
  /** Optional: what contradicts itself in one task's args (a gateway outside the subnet…), checked before any host is contacted. */
  check?(args: Args): ArgProblem[];
  /** Optional: what contradicts itself across this module's tasks in a play, on all its hosts (one address on two hosts…), checked before any host is contacted. */
  checkPlay?(tasks: PlayTask<Args>[]): PlayProblem[];
  /** Read-only probes of the current state. */
  facts(args: Args): P;
  /** Pure: args + facts → changes; [] means already in the desired state. */
  plan(args: Args, facts: Facts<P>, context: PlanContext): Change[];
  /** Optional: what is worth reporting about a host already as planned (no changes) that is not a change (shown by runs and --check). */
  notes?(args: Args, facts: Facts<P>, context: PlanContext): string[];
  /** After apply (and any reboot): probes, and the problems they show ([] = healthy). */
  verify?: {
    probes(args: Args): V;
    check(args: Args, facts: Facts<V>): string[] | Verdict;
  };
}

/** A problem with a task's args: `path` (within the args) leads to the value it is about. */
export interface ArgProblem {
  path: (string | number)[];
  /** What is wrong (got X). How to fix it. */
  message: string;
}

/** One task of a play on one of its hosts, as checkPlay sees it. */
export interface PlayTask<Args = unknown> {
  host: string;
  task: string;
  args: Args;
  /** The task's when: (host fact → the values it runs for). */
  when: Record<string, string[]>;
}
/** A problem checkPlay found, reported at `tasks[index]`. */
export interface PlayProblem extends ArgProblem {
  index: number;
}

/** Whether two tasks' when: conditions can hold on one host at once (no fact named by both with disjoint values). */
export function mayRunTogether(a: Record<string, string[]>, b: Record<string, string[]>): boolean {
  return Object.entries(a).every(([fact, values]) => !b[fact] || b[fact].some((v) => values.includes(v)));
}

/**
 * A named fact about a whole host (e.g. network_stack), contributed by a module: gathered
 * once per host in the same round trip as the probes, shown per host in the plan and the
 * reports, and usable in a task's `when:`.
 */
export interface HostFact<T = unknown> {
  name: string;
  description: string;
  /** The values `when:` may compare the fact with. */
  values: string[];
  probe: Probe;
  parse(result: ProbeResult): T;
  /** The value `when:` compares. */
  value(fact: T): string;
  /** One line for the plan and the reports. */
  describe(fact: T): string;
}

export type ProbeResult = FileState | DirState | CommandOutput;

/** The text of a shell script shipped beside a module (a .sh file, copied into dist by the build). */
export function readShellAsset(moduleUrl: string, name: string): string {
  return readFileSync(new URL(name, moduleUrl), "utf8");
}

/** What verify found: problems fail the host (and roll it back); notes are only reported. */
export interface Verdict {
  problems: string[];
  notes?: string[];
}

/** Thrown by plan when this host cannot take the task as given (a fact contradicts the args): the host fails with the message; not a bug. */
export class PlanError extends Error {
  override name = "PlanError";
}

export function defineModule<Args, P extends ProbeSet, V extends ProbeSet = ProbeSet>(definition: ModuleDefinition<Args, P, V>): ModuleDefinition<Args, P, V> {
  return definition;
}

/** A plugin package or file exports a module or a list of them (default export or `modules`). */
export type PluginExport = ModuleDefinition | ModuleDefinition[] | { modules: ModuleDefinition[] };

/** [] when the file already has `after`, else one change (with the diff rendered by the core). */
export function fileChange(file: FileState, after: string | null, opts: { summary?: string; mode?: string; reboot?: boolean } = {}): FileChange[] {
  if (file.content === after) return [];
  const summary = opts.summary ?? (after === null ? `remove ${file.path}` : file.content === null ? `create ${file.path}` : `update ${file.path}`);
  return [{ kind: "file", path: file.path, before: file.content, after, mode: opts.mode, reboot: opts.reboot, summary }];
}

export function commandChange(summary: string, argv: string[], undo?: string[], reboot?: boolean): CommandChange {
  return { kind: "command", summary, argv, undo, reboot };
}

/** Split text into lines without the trailing empty one. */
export function lines(text: string | null): string[] {
  if (!text) return [];
  const all = text.split("\n");
  if (all[all.length - 1] === "") all.pop();
  return all;
}
