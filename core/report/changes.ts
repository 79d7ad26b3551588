// A run's data as it is shown: summaries with their symbol, unified diffs, every text
// masked. This is the one place where secrets are masked (presentRun); text, JSON and
// HTML are all rendered from its result.
import { createTwoFilesPatch } from "diff";
import type { Change } from "../module-api.js";
import type { ChangeResult, HostResult, Mask, Outcome, TaskResult } from "../run/results.js";
import type { RunResult } from "../run/run.js";
import { maskReplaced } from "../config/secrets.js";

export interface ShownChange {
  kind: Change["kind"];
  summary: string;
  path?: string;
  command?: string;
  diff?: string;
  reboot?: boolean;
  /** Apply runs: what became of the change (see Outcome). */
  outcome?: Outcome;
}

export type ShownTask = Omit<TaskResult, "changes" | "mask" | "diff"> & { changes: ShownChange[] };
export type ShownHost = Omit<HostResult, "tasks"> & { tasks: ShownTask[] };
export type ShownRun = Omit<RunResult, "hosts"> & { hosts: ShownHost[] };

function symbol(change: Change | ShownChange): string {
  if (change.kind === "file" && "before" in change) return change.before === null ? "+" : change.after === null ? "-" : "~";
  return { file: "~", command: "!", pending: "…", reboot: "⟳" }[change.kind];
}

export function unifiedDiff(path: string, before: string | null, after: string | null): string {
  return createTwoFilesPatch(before === null ? "/dev/null" : `a${path}`, after === null ? "/dev/null" : `b${path}`, before ?? "", after ?? "", undefined, undefined, { context: 3 })
    .replace(/^=+\n/m, "")
    .replace(/^Index:.*\n/m, "");
}

/** Render a change for output and reports, with secrets masked and diffs optional. */
export function showChange(change: Change, mask: Mask, showDiff: boolean, outcome?: Outcome): ShownChange {
  const shown: ShownChange = { kind: change.kind, summary: `${symbol(change)} ${mask(change.summary)}`, reboot: change.reboot };
  if (outcome) shown.outcome = outcome;
  if (change.kind === "file") {
    shown.path = change.path;
    const after = change.after === null ? null : mask(change.after);
    const before = change.before === null ? null : maskReplaced(mask(change.before), after ?? "");
    shown.diff = showDiff ? unifiedDiff(change.path, before, after) : "(diff hidden: the task sets diff: false)\n";
  }
  if (change.kind === "command") shown.command = mask(change.argv.join(" "));
  return shown;
}

function showTask(task: TaskResult): ShownTask {
  const { mask, diff, changes, ...rest } = task;
  return {
    ...rest,
    changes: changes.map((c: ChangeResult) => showChange(c.change, mask, diff, c.outcome)),
    problems: task.problems.map(mask),
    notes: task.notes.map(mask),
  };
}

/** Every task's mask in one: a host's error may quote any of its tasks' values. */
export function maskOfHost(host: HostResult): Mask {
  return (text) => host.tasks.reduce((t, task) => task.mask(t), text);
}

export function showHost(host: HostResult): ShownHost {
  const mask = maskOfHost(host);
  return { ...host, ...(host.error === undefined ? {} : { error: mask(host.error) }), notes: host.notes.map(mask), tasks: host.tasks.map(showTask) };
}

/** The run as every report shows it: secrets masked once, here. */
export function presentRun(run: RunResult): ShownRun {
  return { ...run, hosts: run.hosts.map(showHost) };
}
