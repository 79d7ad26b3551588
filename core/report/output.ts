// What the user reads after a run: per-host changes (with diffs), a summary table,
// and the JSON report. Everything here is already masked.
import { writeFileSync } from "node:fs";
import type { Outcome } from "../run/results.js";
import type { ShownChange, ShownHost as HostResult, ShownRun as RunResult, ShownTask as TaskResult } from "./changes.js";

export function renderChanges(run: RunResult, showDiff: boolean): string {
  const out: string[] = [];
  for (const host of run.hosts) {
    const changed = host.tasks.filter((t) => t.changes.length || t.problems.length || t.notes.length);
    const tx = notableTransaction(host);
    const facts = Object.entries(host.facts ?? {});
    const notes = host.notes ?? [];
    if (!changed.length && !host.error && !tx && !facts.length && !notes.length) continue;
    out.push(`\n${host.host} (${host.address}): ${host.status.replace("_", " ")}`);
    for (const [name, description] of facts) out.push(`  ${name}: ${description}`);
    if (host.error) out.push(`  error: ${host.error}`);
    if (tx) out.push(`  ${tx}`);
    for (const note of notes) out.push(`  note: ${note}`);
    for (const task of changed) {
      out.push(`  ${task.handler ? "handler" : "task"} "${task.name}" [${task.module}]: ${taskVerb(task, run.check)}`);
      for (const change of task.changes) {
        out.push(`    ${change.summary}${change.reboot ? "  (takes effect after reboot)" : ""}${outcomeNote(change)}`);
        if (showDiff && change.diff) out.push(indent(change.diff.trimEnd(), "      "));
      }
      for (const problem of task.problems) out.push(`    ✖ ${problem}`);
      for (const note of task.notes) out.push(`    note: ${note}`);
    }
  }
  return out.join("\n") + (out.length ? "\n" : "");
}

/** A check run tells about a transaction that did not simply commit. */
function notableTransaction(host: HostResult): string | null {
  const tx = host.lastTransaction;
  if (!tx || (tx.state === "committed" && !tx.armed)) return null;
  const what = {
    pending: "left pending (its controller stopped before committing; `provision rollback` restores it)",
    reverting: "being reverted by the host",
    reverted: "reverted by the host (not confirmed in time)",
    rolled_back: "rolled back",
    committed: "committed",
    unknown: "in an unknown state",
  }[tx.state];
  return `last transaction ${tx.id}: ${what}${tx.armed ? "; host-side revert still armed" : ""}`;
}

function taskVerb(task: TaskResult, check: boolean): string {
  const counts = outcomeCounts(task.changes);
  const partly = counts.unknown || counts.not_applied ? ` (${describeOutcomes(counts)})` : "";
  if (task.status === "failed") return `failed${partly}`;
  if (task.status === "skipped") return "skipped";
  if (!task.changes.length) return task.status === "changed" ? "changed" : "ok"; // changed before a reboot the run was taken up after
  if (partly) return describeOutcomes(counts);
  const n = task.changes.length;
  return `${n} change${n === 1 ? "" : "s"}${check ? " to make" : " made"}`;
}

/** How many changes got each outcome (apply runs; a check run has none). */
export function outcomeCounts(changes: ShownChange[]): Record<Outcome, number> {
  const counts = { applied: 0, not_applied: 0, unknown: 0 };
  for (const c of changes) if (c.outcome) counts[c.outcome]++;
  return counts;
}

/** "3 applied, 2 unknown, 1 not applied": only the outcomes that occur. */
export function describeOutcomes(counts: Record<Outcome, number>): string {
  return (["applied", "unknown", "not_applied"] as const)
    .filter((o) => counts[o])
    .map((o) => `${counts[o]} ${OUTCOME_WORDS[o]}`)
    .join(", ");
}

const OUTCOME_WORDS: Record<Outcome, string> = { applied: "applied", unknown: "unknown", not_applied: "not applied" };

/** After a change that the host did not confirm: what became of it. */
function outcomeNote(change: ShownChange): string {
  if (change.outcome === "unknown") return "  [unknown: sent, no answer from the host]";
  if (change.outcome === "not_applied") return "  [not applied]";
  return "";
}

function hostOutcomes(host: HostResult): Record<Outcome, number> {
  return outcomeCounts(host.tasks.flatMap((t) => t.changes));
}

function indent(text: string, prefix: string): string {
  return text
    .split("\n")
    .map((l) => prefix + l)
    .join("\n");
}

export function summaryRow(host: HostResult) {
  const count = (s: string) => host.tasks.filter((t) => t.status === s).length;
  return {
    host: host.host,
    status: host.status === "rolled_back" && host.rolledBackBy === "host" ? "rolled back by host" : host.status.replace("_", " "),
    ok: count("ok"),
    changed: count("changed"),
    failed: count("failed") + (host.status === "unreachable" ? 1 : 0),
    rolledBack: host.status !== "rolled_back" ? "no" : host.rolledBackBy === "host" ? "by host" : "yes",
    changes: hostOutcomes(host),
  };
}

export function renderSummary(run: RunResult): string {
  const header = ["HOST", "STATUS", "OK", run.check ? "TO CHANGE" : "CHANGED", "FAILED", "ROLLED BACK"];
  const rows = run.hosts.map(summaryRow).map((r) => [r.host, r.status, String(r.ok), String(r.changed), String(r.failed), r.rolledBack]);
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (cells: string[]) =>
    cells
      .map((c, i) => (i >= 2 && i <= 4 ? c.padStart(widths[i]) : c.padEnd(widths[i])))
      .join("  ")
      .trimEnd();
  const totals = countBy(run.hosts.map((h) => h.status));
  const totalLine = Object.entries(totals)
    .map(([s, n]) => `${n} ${s.replace("_", " ")}`)
    .join(", ");
  const verdict = run.check ? (totals.drift ? `${totals.drift} host(s) would change.` : "No changes.") : "";
  const halt = run.halted
    ? [
        `ROLLOUT HALTED in play "${run.halted.play}": ${run.halted.reason}.`,
        `  done: ${names(run, (h) => h.status === "ok" || h.status === "changed" || h.status === "drift")}`,
        `  failed: ${names(run, (h) => ["failed", "rolled_back", "unreachable"].includes(h.status), true)}`,
        `  never touched: ${run.halted.untouched.join(", ") || "none"}`,
      ]
    : [];
  const outcomes = outcomeCounts(run.hosts.flatMap((h) => h.tasks.flatMap((t) => t.changes)));
  // every change confirmed is the usual case; anything else is said
  const changesLine = !run.check && (outcomes.unknown || outcomes.not_applied) ? [`changes: ${describeOutcomes(outcomes)}.`] : [];
  const notes = run.hosts.flatMap((h) => [...(h.notes ?? []), ...(notableTransaction(h) ? [notableTransaction(h)!] : [])].map((n) => `note: ${h.host}: ${n}`));
  return ["", line(header), ...rows.map(line), "", `${run.hosts.length} host(s): ${totalLine || "none"}. ${verdict}`.trimEnd(), ...changesLine, ...notes, ...halt, ""].join("\n");
}

function names(run: RunResult, pick: (h: HostResult) => boolean, withStatus = false): string {
  const picked = run.hosts.filter(pick).map((h) => (withStatus ? `${h.host} (${h.status.replace("_", " ")}${h.rolledBackBy === "host" ? " by host" : ""})` : h.host));
  return picked.join(", ") || "none";
}

/** Hosts a retry should run: the failed ones and those a halted rollout never touched. */
export function hostsToRetry(run: RunResult): string[] {
  return run.hosts.filter((h) => ["failed", "rolled_back", "unreachable", "not_run"].includes(h.status)).map((h) => h.host);
}

function countBy(values: string[]): Record<string, number> {
  const counts: Record<string, number> = {};
  for (const v of values) counts[v] = (counts[v] ?? 0) + 1;
  return counts;
}

/** The --report JSON of a run (also what a pull agent sends with its results). */
export function runReport(run: RunResult) {
  return {
    tool: "provision",
    runId: run.runId,
    mode: run.check ? "check" : "apply",
    startedAt: run.startedAt,
    finishedAt: run.finishedAt,
    summary: run.hosts.map(summaryRow),
    halted: run.halted ?? null,
    hosts: run.hosts,
  };
}

export function writeJsonReport(file: string, run: RunResult): void {
  writeFileSync(file, JSON.stringify(runReport(run), null, 2) + "\n");
}

/** 0 ok/no drift, 2 drift in check mode, 1 any failure. */
export function exitCode(run: RunResult): number {
  if (run.halted || run.hosts.some((h) => ["failed", "rolled_back", "unreachable"].includes(h.status))) return 1;
  if (run.check && run.hosts.some((h) => h.status === "drift")) return 2;
  return 0;
}
