// What a run returns and tells as it goes: data only. core/report turns it into text,
// diffs, JSON and HTML afterwards, and masks secrets there (each task carries its mask).
import type { Change } from "../module-api.js";
import type { LastTransaction } from "./transaction.js";

/** Hides a task's secrets in any text made from its data. */
export type Mask = (text: string) => string;

/**
 * What became of a change in an apply run: "applied" (the host confirmed its steps),
 * "not_applied" (never sent, or the batch stopped before it) or "unknown" (sent, and no
 * answer came: the connection was lost or the host stopped mid-step).
 */
export type Outcome = "applied" | "not_applied" | "unknown";

export interface ChangeResult {
  change: Change;
  /** Set in an apply run; a check run plans only. */
  outcome?: Outcome;
}

export type TaskStatus = "ok" | "changed" | "failed" | "skipped";
export interface TaskResult {
  name: string;
  module: string;
  handler: boolean;
  status: TaskStatus;
  changes: ChangeResult[];
  /** The task's diff: setting (false: file contents are never shown). */
  diff: boolean;
  /** Unmasked, like everything here: see mask. */
  problems: string[];
  notes: string[];
  mask: Mask;
}

/** Where a run that rebooted its own machine goes on after the boot. */
export interface ResumePoint {
  /** Index of the task that rebooted (in the play's tasks, then its notified handlers). */
  task: number;
  /** Handlers notified by the tasks before the reboot. */
  notified: string[];
  /** Indexes (as `task`) of the tasks that changed the host before the reboot: the run after it reports them changed. */
  changed?: number[];
}

export type HostStatus = "ok" | "changed" | "drift" | "failed" | "rolled_back" | "unreachable" | "not_run";
export interface HostResult {
  host: string;
  address: string;
  status: HostStatus;
  error?: string;
  rebooted: boolean;
  rolledBackBy?: "controller" | "host";
  lastTransaction?: LastTransaction;
  /** Host facts the play used (name → one line), e.g. network_stack. */
  facts?: Record<string, string>;
  /**
   * The local transport's own machine reboots now (a playbook's reboot): the run is not
   * over; it goes on after the boot from the task after `task` (RunOptions.resume).
   */
  resumes?: ResumePoint;
  /** Host-level notes: a stale lock taken over, a lock seen by --check. */
  notes: string[];
  tasks: TaskResult[];
  durationMs: number;
}

/** Live progress of one host, in the order it happens; the CLI renders it. */
export type HostEvent =
  | { type: "connecting" }
  | { type: "gathering"; locking: boolean }
  | { type: "lock_taken_over"; detail: string }
  | { type: "unarmed_no_systemd" }
  | { type: "arming"; timeoutSeconds: number }
  | { type: "change"; task: string; change: Change; mask: Mask }
  | { type: "connection_lost"; step: string; error: string; budgetSeconds: number }
  | { type: "reconnected"; step: string; afterSeconds: number }
  | { type: "transport"; message: string }
  | { type: "verifying" }
  | { type: "failed"; reason: string; mask: Mask }
  | { type: "rolling_back_as_host" }
  | { type: "awaiting_host_revert"; address: string };
