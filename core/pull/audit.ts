// What a device tells the fleet between bundles: a check-mode audit of the bundle it
// applied, every few minutes with splay, reported only when its result changed
// (differential, like osquery), and a small heartbeat at a low rate so that
// `provision status --fleet` can say when it was last seen. Any report sent resets the
// heartbeat's clock: a device that just reported does not also send a heartbeat.
//
// The steady load is what the cluster has to carry for the whole fleet: N devices with a
// heartbeat every H seconds send N / H messages a second (10,000 / 600 s ≈ 17/s); an
// unchanged audit sends nothing.
import { messageOf } from "../errors.js";
import type { Broker, Stoppable } from "./broker.js";
import { reportSubject } from "./subjects.js";

export interface ReportingSchedule {
  /** Between two audits, on average. */
  auditMs: number;
  /** Each wait is auditMs ± splayMs (uniform), so that a fleet started at once spreads out. */
  auditSplayMs: number;
  /** At most this long without any report (± 10 %). */
  heartbeatMs: number;
}

export const DEFAULT_SCHEDULE: ReportingSchedule = { auditMs: 5 * 60_000, auditSplayMs: 60_000, heartbeatMs: 10 * 60_000 };

export interface AuditResult {
  /** The bundle version that was audited. */
  version: number;
  drift: boolean;
  /** How many tasks would change something. */
  changed: number;
  /** Why the audit could not run, if it could not. */
  error?: string;
  /** What decides "changed since the last report": no times, no run ids. */
  fingerprint: string;
  /** The --report JSON of the check run, sent along. */
  report?: unknown;
}

export type ReportingEvent = { type: "audit"; result: AuditResult; sent: boolean } | { type: "heartbeat" } | { type: "report-failed"; message: string };

export interface ReportingOptions {
  schedule: ReportingSchedule;
  /** A check-mode audit of what this device applied; null when there is nothing to audit yet. */
  audit: () => Promise<AuditResult | null>;
  /** The version this device applied last, sent with every report. */
  applied: () => number | undefined;
  onEvent?: (e: ReportingEvent) => void;
  random?: () => number;
}

/** auditMs ± splayMs, never below a tenth of auditMs. */
export function nextAuditDelay(s: ReportingSchedule, random: () => number = Math.random): number {
  return Math.max(s.auditMs / 10, Math.round(s.auditMs + (2 * random() - 1) * s.auditSplayMs));
}

/** heartbeatMs - 0..10 %: never later than the interval the status display counts on. */
export function nextHeartbeatDelay(s: ReportingSchedule, random: () => number = Math.random): number {
  return Math.round(s.heartbeatMs * (0.9 + 0.1 * random()));
}

/** Differential reporting: a result is sent when it differs from the last one the cluster stored. */
export class AuditDiff {
  private lastSent: string | undefined;

  shouldSend(result: AuditResult): boolean {
    return result.fingerprint !== this.lastSent;
  }

  sent(result: AuditResult): void {
    this.lastSent = result.fingerprint;
  }
}

const enc = new TextEncoder();

export function startReporting(broker: Broker, device: string, opts: ReportingOptions): Stoppable {
  const random = opts.random ?? Math.random;
  const emit = (e: ReportingEvent) => opts.onEvent?.(e);
  const diff = new AuditDiff();
  let stopped = false;
  let auditTimer: NodeJS.Timeout | undefined;
  let heartbeatTimer: NodeJS.Timeout | undefined;
  let running = Promise.resolve();

  const send = async (kind: "audit" | "heartbeat", body: Record<string, unknown>): Promise<boolean> => {
    try {
      await broker.publish(reportSubject(device, kind), enc.encode(JSON.stringify({ ...body, applied: opts.applied(), at: new Date().toISOString() })));
      scheduleHeartbeat(); // any stored report says "seen"
      return true;
    } catch (error) {
      emit({ type: "report-failed", message: `${kind}: ${messageOf(error)}` });
      return false;
    }
  };
  const scheduleHeartbeat = (first = false): void => {
    clearTimeout(heartbeatTimer);
    if (stopped) return;
    // the first one anywhere in the interval: a fleet that starts at once does not beat in step
    const delay = first ? Math.round(random() * opts.schedule.heartbeatMs) : nextHeartbeatDelay(opts.schedule, random);
    heartbeatTimer = setTimeout(() => {
      running = running.then(async () => {
        if (stopped) return;
        if (await send("heartbeat", {})) emit({ type: "heartbeat" });
        else scheduleHeartbeat();
      });
    }, delay);
  };
  const auditOnce = async (): Promise<void> => {
    let result: AuditResult | null;
    try {
      result = await opts.audit();
    } catch (error) {
      result = { version: opts.applied() ?? 0, drift: false, changed: 0, error: messageOf(error), fingerprint: `error:${messageOf(error)}` };
    }
    if (!result || stopped) return;
    let sent = false;
    if (diff.shouldSend(result)) {
      const { fingerprint: _, ...body } = result;
      sent = await send("audit", body);
      if (sent) diff.sent(result); // not stored: sent again after the next audit
    }
    emit({ type: "audit", result, sent });
  };
  const scheduleAudit = (): void => {
    if (stopped) return;
    auditTimer = setTimeout(
      () => {
        running = running.then(auditOnce).finally(scheduleAudit);
      },
      nextAuditDelay(opts.schedule, random),
    );
  };
  scheduleAudit();
  scheduleHeartbeat(true);
  return {
    stop: async () => {
      stopped = true;
      clearTimeout(auditTimer);
      clearTimeout(heartbeatTimer);
      await running.catch(() => {});
    },
  };
}
