// What became of each change of an apply run: the host confirmed it ("applied"), it was
// never sent or its batch stopped before it ("not_applied"), or it was sent and no answer
// came ("unknown"). Reports count them; a task is "changed" only for applied changes.
import type { Change } from "../module-api.js";
import type { Step } from "../transport/batch.js";
import type { Outcome, TaskResult } from "./results.js";

/** A change's steps in its batch: its first and last (a change without steps: the step before it). */
export interface Span {
  change: Change;
  first?: Step;
  last?: Step;
}

/**
 * Outcomes for a batch whose first `finished` steps the host confirmed: a change whose
 * steps all finished is applied; the change the batch stopped in is `stopped` (a failed
 * step: "not_applied"; no answer: "unknown"); the changes after it never ran.
 * `stopped` "applied" means the whole batch finished.
 */
export function batchOutcomes(spans: Span[], todo: Step[], finished: number, stopped: Outcome): Map<Change, Outcome> {
  const outcomes = new Map<Change, Outcome>();
  for (const { change, first, last } of spans) {
    const start = first ? todo.indexOf(first) : 0;
    const end = last ? todo.indexOf(last) + 1 : 0;
    if (stopped === "applied" || (end > 0 ? end <= finished : finished > 0)) outcomes.set(change, "applied");
    else outcomes.set(change, start <= finished ? stopped : "not_applied");
  }
  return outcomes;
}

/** The batch was sent and no answer came (connection lost): any of its changes may have been applied. */
export function unansweredOutcomes(spans: Span[]): Map<Change, Outcome> {
  return new Map(spans.map(({ change }) => [change, "unknown"]));
}

export const NOT_APPLIED_EARLIER_FAILED = "not applied: an earlier task failed";

/**
 * Each change of a task of an apply run gets its outcome (a change never sent: not
 * applied). Any unknown change fails the task; a task none of whose changes was
 * applied did not change anything.
 */
export function settleTask(task: TaskResult, outcomes: Map<Change, Outcome>): void {
  if (!task.changes.length) return;
  for (const c of task.changes) c.outcome = outcomes.get(c.change) ?? "not_applied";
  const count = (o: Outcome) => task.changes.filter((c) => c.outcome === o).length;
  const unknown = count("unknown");
  if (unknown) {
    task.status = "failed";
    task.notes = task.notes.filter((n) => n !== NOT_APPLIED_EARLIER_FAILED);
    task.problems.push(`${unknown} change${unknown === 1 ? "" : "s"} sent without an answer: unknown whether the host applied ${unknown === 1 ? "it" : "them"}`);
  } else if (task.status === "changed" && !count("applied")) {
    task.status = "skipped";
    task.notes.push("not applied: the run stopped before it");
  }
}
