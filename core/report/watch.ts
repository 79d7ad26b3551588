// What `provision watch` keeps and shows of each host: the last audit, boiled down to a
// few bounded fields (no file contents, no diffs), masked here like every report; a new
// audit that differs from it is a change, told as a table row, a line or a JSON line.
import type { Audit, ErrorClass } from "../run/watch.js";
import { showHost } from "./changes.js";
import { shorten } from "../errors.js";

/** At most this many pending changes are kept per host (the count is always exact). */
export const MAX_PENDING_KEPT = 20;
const MAX_TEXT = 200;

export interface HostState {
  host: string;
  status: "ok" | "drift" | "failed" | "unreachable";
  up: boolean;
  changesPending: number;
  /** The pending changes' summaries ("~ /etc/motd"), the first MAX_PENDING_KEPT. */
  pending: string[];
  errorClass: ErrorClass;
  error?: string;
  /** When the audit started, ms since the epoch. */
  auditedAt: number;
  durationMs: number;
}

/** The state a host's audit leaves (masked, bounded). */
export function hostState(audit: Audit): HostState {
  const shown = showHost(audit.result);
  const changes = shown.tasks.flatMap((t) => t.changes.map((c) => c.summary));
  const status = shown.status === "drift" || shown.status === "ok" || shown.status === "unreachable" ? shown.status : "failed";
  return {
    host: shown.host,
    status,
    up: status !== "unreachable",
    changesPending: changes.length,
    pending: changes.slice(0, MAX_PENDING_KEPT).map((c) => shorten(c, MAX_TEXT)),
    errorClass: audit.errorClass,
    ...(shown.error ? { error: shorten(shown.error.replace(`${shown.host}: `, ""), MAX_TEXT) } : {}),
    auditedAt: audit.startedAt,
    durationMs: shown.durationMs,
  };
}

/** A change worth telling: status, reachability, error class or the pending changes differ. */
export function changed(before: HostState | undefined, after: HostState): boolean {
  if (!before) return true;
  return (
    before.status !== after.status ||
    before.errorClass !== after.errorClass ||
    before.changesPending !== after.changesPending ||
    before.pending.join("\n") !== after.pending.join("\n")
  );
}

/** One JSON line per change (`--json`). */
export function jsonLine(state: HostState, before: HostState | undefined): string {
  return JSON.stringify({
    time: new Date(state.auditedAt).toISOString(),
    event: "host",
    host: state.host,
    status: state.status,
    previous: before?.status ?? null,
    up: state.up,
    changes_pending: state.changesPending,
    pending: state.pending,
    error_class: state.errorClass,
    ...(state.error ? { error: state.error } : {}),
    duration_ms: state.durationMs,
  });
}

/** One plain line per change (not a terminal, not --json). */
export function changeLine(state: HostState, before: HostState | undefined): string {
  const time = new Date(state.auditedAt).toISOString().slice(11, 19);
  const was = before ? ` (was ${before.status})` : "";
  return `${time} ${state.host}: ${describeState(state)}${was}`;
}

function describeState(state: HostState): string {
  if (state.status === "drift") {
    const n = state.changesPending;
    return `drift: ${n} change${n === 1 ? "" : "s"} pending: ${state.pending.join(", ")}${n > state.pending.length ? ", …" : ""}`;
  }
  if (state.error) return `${state.status} [${state.errorClass}]: ${state.error}`;
  return state.status;
}

const ORDER = { unreachable: 0, failed: 1, drift: 2, ok: 3 } as const;

/**
 * The live table: the hosts that need a look first (unreachable, failed, drift), then ok;
 * cut to `rows` lines with a count of the rest. `now` ages the last audit.
 */
export function renderTable(states: HostState[], total: number, now: number, rows: number, intervalSeconds: number): string {
  const counts = { ok: 0, drift: 0, failed: 0, unreachable: 0 };
  for (const s of states) counts[s.status]++;
  const sorted = [...states].sort((a, b) => ORDER[a.status] - ORDER[b.status] || a.host.localeCompare(b.host, "en", { numeric: true }));
  const room = Math.max(1, rows - 4);
  const shown = sorted.length > room ? sorted.slice(0, room - 1) : sorted;
  const header = ["HOST", "STATUS", "PENDING", "LAST AUDIT", "TOOK", "DETAIL"];
  const cells = shown.map((s) => [
    s.host,
    s.status,
    String(s.changesPending),
    `${Math.max(0, Math.round((now - s.auditedAt) / 1000))}s ago`,
    `${(s.durationMs / 1000).toFixed(2)}s`,
    s.status === "drift" ? s.pending.join(", ") : s.error ? `${s.errorClass}: ${s.error}` : "",
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...cells.map((c) => (i < 5 ? c[i].length : 0))));
  const line = (c: string[]) =>
    c
      .map((v, i) => (i === 2 || i === 4 ? v.padStart(widths[i]) : v.padEnd(widths[i])))
      .join("  ")
      .trimEnd();
  const rest = sorted.length - shown.length;
  return [
    `provision watch: ${total} host(s), audit every ${intervalSeconds}s: ${counts.ok} ok, ${counts.drift} drift, ${counts.failed} failed, ${counts.unreachable} unreachable${total > states.length ? `, ${total - states.length} not audited yet` : ""}`,
    line(header),
    ...cells.map(line),
    ...(rest ? [`… ${rest} more host(s)`] : []),
  ].join("\n");
}
