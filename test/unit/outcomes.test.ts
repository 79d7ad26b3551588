// What became of each change of an apply run, and how the reports say it.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Change } from "../../core/module-api.js";
import type { Step } from "../../core/transport/batch.js";
import { batchOutcomes, settleTask, unansweredOutcomes, type Span } from "../../core/run/outcomes.js";
import type { RunResult } from "../../core/run/run.js";
import type { TaskResult } from "../../core/run/results.js";
import { presentRun } from "../../core/report/changes.js";
import { renderChanges, renderSummary, writeJsonReport } from "../../core/report/output.js";
import { renderHtmlReport } from "../../core/report/html-report.js";

const step = (what: string): Step => ({ what, argv: ["true"] });
const file = (path: string): Change => ({ kind: "file", path, before: "old\n", after: "new\n", summary: `update ${path}` });

/** A batch like the engine's: a heartbeat, then per change its steps (a pending change has none). */
function batch() {
  const a = file("/etc/a"),
    b = file("/etc/b"),
    pending: Change = { kind: "pending", summary: "bond0 after reboot" },
    c = file("/etc/c");
  const steps = { renew: step("renew"), a1: step("back up a"), a2: step("write a"), b1: step("back up b"), b2: step("write b"), c1: step("back up c"), c2: step("write c") };
  const spans: Span[] = [
    { change: a, first: steps.a1, last: steps.a2 },
    { change: b, first: steps.b1, last: steps.b2 },
    { change: pending, first: steps.b2, last: steps.b2 },
    { change: c, first: steps.c1, last: steps.c2 },
  ];
  return { a, b, pending, c, spans, todo: Object.values(steps) };
}

test("a whole batch confirmed: every change applied", () => {
  const { spans, todo } = batch();
  assert.deepEqual([...batchOutcomes(spans, todo, todo.length, "applied").values()], ["applied", "applied", "applied", "applied"]);
});

test("a failed step: the changes before it applied, its change not applied, the rest never ran", () => {
  const { a, b, pending, c, spans, todo } = batch();
  const failedAt = todo.findIndex((s) => s.what === "write b");
  const o = batchOutcomes(spans, todo, failedAt, "not_applied");
  assert.deepEqual([o.get(a), o.get(b), o.get(pending), o.get(c)], ["applied", "not_applied", "not_applied", "not_applied"]);
});

test("no answer: the change the batch stopped in is unknown, the ones after it were never run; a lost connection leaves all unknown", () => {
  const { a, b, pending, c, spans, todo } = batch();
  const cut = batchOutcomes(
    spans,
    todo,
    todo.findIndex((s) => s.what === "write b"),
    "unknown",
  );
  assert.deepEqual([cut.get(a), cut.get(b), cut.get(pending), cut.get(c)], ["applied", "unknown", "unknown", "not_applied"]);
  const lost = unansweredOutcomes(spans);
  assert.deepEqual([lost.get(a), lost.get(b), lost.get(c)], ["unknown", "unknown", "unknown"], "no answer at all: the whole batch may have run");
});

const task = (name: string, changes: Change[], status: TaskResult["status"] = "changed"): TaskResult => ({
  name,
  module: "m",
  handler: false,
  status,
  changes: changes.map((change) => ({ change })),
  diff: true,
  problems: [],
  notes: [],
  mask: (s) => s,
});

test("a task is changed only for applied changes; an unknown change fails it and says so", () => {
  const { a, b, c } = batch();
  const applied = task("applied", [a]);
  const unknown = task("unknown", [b]);
  const never = task("never sent", [c]);
  const outcomes = new Map<Change, "applied" | "unknown">([
    [a, "applied"],
    [b, "unknown"],
  ]);
  [applied, unknown, never].forEach((t) => settleTask(t, outcomes));
  assert.deepEqual([applied.status, unknown.status, never.status], ["changed", "failed", "skipped"]);
  assert.deepEqual(unknown.problems, ["1 change sent without an answer: unknown whether the host applied it"]);
  assert.deepEqual(
    never.changes.map((x) => x.outcome),
    ["not_applied"],
  );
});

test("text, JSON and HTML say each change's outcome and count them in the summary", () => {
  const { a, b, c } = batch();
  const t1 = task("files", [a, b], "failed");
  const t2 = task("later", [c], "skipped");
  settleTask(
    t1,
    new Map([
      [a, "applied"],
      [b, "unknown"],
    ]),
  );
  settleTask(t2, new Map());
  const run: RunResult = {
    runId: "r",
    check: false,
    startedAt: "2026-01-01T00:00:00Z",
    finishedAt: "2026-01-01T00:00:01Z",
    hosts: [{ host: "pi", address: "10.0.0.2", status: "failed", error: "pi: lost connection", rebooted: false, notes: [], durationMs: 1, tasks: [t1, t2] }],
  };
  const shown = presentRun(run);
  const text = renderChanges(shown, false);
  assert.match(text, /task "files" \[m\]: failed \(1 applied, 1 unknown\)/);
  assert.match(text, /~ update \/etc\/b {2}\[unknown: sent, no answer from the host\]/);
  assert.match(text, /~ update \/etc\/c {2}\[not applied\]/);
  assert.match(renderSummary(shown), /^changes: 1 applied, 1 unknown, 1 not applied\.$/m);
  const dir = mkdtempSync(join(tmpdir(), "outcomes-"));
  try {
    writeJsonReport(join(dir, "r.json"), shown);
    const report = JSON.parse(readFileSync(join(dir, "r.json"), "utf8"));
    assert.deepEqual(
      report.hosts[0].tasks.flatMap((t: { changes: { outcome: string }[] }) => t.changes.map((x) => x.outcome)),
      ["applied", "unknown", "not_applied"],
    );
    assert.deepEqual(report.summary[0].changes, { applied: 1, not_applied: 1, unknown: 1 });
    assert.equal(report.hosts[0].tasks[0].mask, undefined, "no function leaks into the report");
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  assert.match(renderHtmlReport(shown), /unknown: sent, no answer from the host/);
});

/** An apply run of one host, "pi", that changed with these tasks. */
const changedRun = (tasks: TaskResult[], o: { rebooted?: boolean } = {}): RunResult => ({
  runId: "r",
  check: false,
  startedAt: "x",
  finishedAt: "x",
  hosts: [{ host: "pi", address: "a", status: "changed", rebooted: o.rebooted ?? false, notes: [], durationMs: 1, tasks }],
});

test("an apply run where everything was applied reads as before: no outcome marks, no changes line", () => {
  const { a } = batch();
  const t = task("files", [a]);
  settleTask(t, new Map([[a, "applied"]]));
  const shown = presentRun(changedRun([t]));
  assert.match(renderChanges(shown, false), /task "files" \[m\]: 1 change made\n {4}~ update \/etc\/a\n/);
  assert.doesNotMatch(renderSummary(shown), /changes:/);
});

test("a task that changed the host before a reboot the run was taken up after reads changed, not ok", () => {
  const before: TaskResult = { ...task("bond", [], "changed"), notes: ["changed before the reboot"] };
  assert.match(renderChanges(presentRun(changedRun([before], { rebooted: true })), false), /task "bond" \[m\]: changed\n {4}note: changed before the reboot\n/);
});
