// `provision status --fleet`: per device, what it should run (its bundle's version in
// KV), what it ran (its last result report), when it was last heard of, drift, and its
// last error, folded from the REPORTS stream. Pure: the CLI reads the broker.
//
// Reports read (reports.<device>.<kind>, the device taken from the subject):
//   result    {"version", "outcome": applied|failed|reverted, "detail"?, "rollout"?, "report"?}
//   refused   {"reason", "message"}
//   audit     {"version"?, "drift": boolean | "changed": number, "report"?}
//   heartbeat {"applied"?}
// "report", when an agent sends it, is the JSON that --report writes for its own run.
// "applied" (any kind) is the version the device runs now, as it says itself: status
// reads only the latest message of each subject, so an applied result followed by a
// failed one would otherwise lose the version that is still applied.
import type { ShownHost, ShownRun } from "../report/changes.js";
import type { Message } from "./broker.js";
import { reportDevice } from "./subjects.js";

export type DriftState = "in sync" | "pending" | "drift" | "failed" | "never seen";

export interface DeviceStatus {
  device: string;
  /** The version of the bundle in its KV key. */
  desired?: number;
  rollout?: string;
  /** The version of its last result with outcome "applied". */
  applied?: number;
  lastResult?: { version: number; outcome: string; at: string };
  lastSeen?: string;
  drift: DriftState;
  lastError?: string;
  /** Its last run's host entry, from the --report JSON its agent sent. */
  run?: { host: ShownHost; check: boolean; startedAt: string; finishedAt: string; runId: string };
}

type RunReport = { runId?: string; mode?: string; startedAt?: string; finishedAt?: string; hosts?: ShownHost[] };

const dec = new TextDecoder();

function body(m: Message): Record<string, unknown> | null {
  try {
    const v = JSON.parse(dec.decode(m.data));
    return v && typeof v === "object" ? v : null;
  } catch {
    return null;
  }
}

const short = (s: unknown): string => String(s).replace(/\s+/g, " ").slice(0, 200);

/** Fold the stream (in sequence order) into one row per device of `devices` (and any other that reported). */
export function fleetStatus(devices: string[], desired: Map<string, { version: number; rollout?: string }>, messages: Message[]): DeviceStatus[] {
  const rows = new Map<string, DeviceStatus>(devices.map((d) => [d, { device: d, drift: "never seen" }]));
  const audits = new Map<string, { version?: number; drift: boolean }>();
  for (const m of [...messages].sort((a, b) => a.seq - b.seq)) {
    const device = reportDevice(m.subject);
    const b = body(m);
    if (!device || !b) continue;
    const row = rows.get(device) ?? rows.set(device, { device, drift: "never seen" }).get(device)!;
    row.lastSeen = m.time.toISOString();
    const kind = m.subject.split(".")[2];
    if (typeof b.applied === "number") row.applied = b.applied;
    if (kind === "result" && typeof b.version === "number" && typeof b.outcome === "string") {
      row.lastResult = { version: b.version, outcome: b.outcome, at: m.time.toISOString() };
      if (b.outcome === "applied") {
        row.applied = b.version;
        audits.delete(device); // an apply is newer than any audit before it
      } else row.lastError = `version ${b.version} ${b.outcome}${b.detail ? `: ${short(b.detail)}` : ""}`;
    } else if (kind === "refused") row.lastError = `refused a bundle (${short(b.reason)}): ${short(b.message)}`;
    else if (kind === "audit") {
      audits.set(device, { version: typeof b.version === "number" ? b.version : undefined, drift: b.drift === true || (typeof b.changed === "number" && b.changed > 0) });
      if (typeof b.error === "string") row.lastError = `audit: ${short(b.error)}`;
    }
    const run = runOf(b.report, device);
    if (run && (kind === "result" || kind === "audit")) row.run = run;
  }
  for (const row of rows.values()) {
    const d = desired.get(row.device);
    if (d) {
      row.desired = d.version;
      if (d.rollout) row.rollout = d.rollout;
    }
    row.drift = driftOf(row, audits.get(row.device));
  }
  return [...rows.values()];
}

function driftOf(row: DeviceStatus, audit: { drift: boolean } | undefined): DriftState {
  if (!row.lastSeen) return "never seen";
  if (audit?.drift) return "drift";
  if (row.desired !== undefined && row.lastResult?.version === row.desired && row.lastResult.outcome !== "applied") return "failed";
  if (row.desired !== undefined && row.applied !== row.desired) return "pending";
  return "in sync";
}

function runOf(report: unknown, device: string): DeviceStatus["run"] | undefined {
  const r = report as RunReport | undefined;
  const host = Array.isArray(r?.hosts) ? r.hosts.find((h) => h && h.host === device && Array.isArray(h.tasks)) : undefined;
  if (!r || !host) return undefined;
  return { host, check: r.mode === "check", startedAt: String(r.startedAt ?? ""), finishedAt: String(r.finishedAt ?? ""), runId: String(r.runId ?? "") };
}

/**
 * One run of the fleet for the HTML grid: each device's last run report, side by side.
 * Null when no device sent one; `missing` names the devices that did not.
 */
export function fleetRun(rows: DeviceStatus[]): { run: ShownRun | null; missing: string[] } {
  const withRun = rows.filter((r) => r.run);
  const missing = rows.filter((r) => !r.run).map((r) => r.device);
  if (!withRun.length) return { run: null, missing };
  const runs = withRun.map((r) => r.run!);
  const started = runs.map((r) => r.startedAt).sort();
  const finished = runs.map((r) => r.finishedAt).sort();
  return {
    run: {
      runId: "fleet",
      check: runs.every((r) => r.check),
      startedAt: started[0],
      finishedAt: finished[finished.length - 1],
      hosts: runs.map((r) => r.host),
    },
    missing,
  };
}

const ago = (iso: string | undefined, now: number): string => {
  if (!iso) return "never";
  const s = Math.max(0, Math.round((now - Date.parse(iso)) / 1000));
  return s < 120 ? `${s}s ago` : s < 7200 ? `${Math.round(s / 60)}m ago` : s < 172800 ? `${Math.round(s / 3600)}h ago` : `${Math.round(s / 86400)}d ago`;
};

/** The table `provision status --fleet` prints. */
export function renderFleetStatus(rows: DeviceStatus[], now = Date.now()): string {
  const table = [
    ["DEVICE", "DESIRED", "APPLIED", "LAST SEEN", "DRIFT", "LAST ERROR"],
    ...rows.map((r) => [
      r.device,
      r.desired === undefined ? "-" : `v${r.desired}${r.rollout ? ` (${r.rollout})` : ""}`,
      r.applied === undefined ? "-" : `v${r.applied}`,
      ago(r.lastSeen, now),
      r.drift,
      r.lastError ?? "",
    ]),
  ];
  const widths = table[0].map((_, c) => Math.max(...table.map((row) => row[c].length)));
  const lines = table.map((row) =>
    row
      .map((cell, c) => (c === row.length - 1 ? cell : cell.padEnd(widths[c])))
      .join("  ")
      .trimEnd(),
  );
  const count = (s: DriftState) => rows.filter((r) => r.drift === s).length;
  const states: DriftState[] = ["in sync", "pending", "drift", "failed", "never seen"];
  return `${lines.join("\n")}\n${rows.length} devices: ${states.map((s) => `${count(s)} ${s}`).join(", ")}\n`;
}
