// What a device does with the broker, whatever it then does with a bundle: follow its
// own desired-state key, refuse (and report) a bundle that is unsigned, tampered,
// expired, replayed, older or not its own, check that the bundle's rollout is still open,
// hand it over, and report the outcome with a JetStream acknowledgement (sent again until
// the cluster stores it). The agent (cli/agent.ts) plugs the engine in as `apply`.
import { messageOf } from "../errors.js";
import { backoffDelay, DEFAULT_BACKOFF, type Backoff, type Broker, type Entry, type Stoppable } from "./broker.js";
import { BundleRefused, openBundle, type OpenedBundle } from "./bundle.js";
import { rolloutOpen, type Outcome, type ResultReport } from "./rollout.js";
import { desiredKey, DESIRED_BUCKET, reportSubject } from "./subjects.js";

export interface DeviceIdentity {
  name: string;
  /** The fleet's public key (PEM) that bundles must be signed with. */
  verifyKey: string;
  /** This device's age identity, for the bundle's secrets. */
  identity: string;
}

export type DeviceEvent =
  | { type: "refused"; version?: number; reason: string; message: string }
  | { type: "held"; version: number; rollout: string; status: string; reason?: string }
  | { type: "result"; version: number; outcome: Outcome; detail?: string }
  | { type: "report-failed"; message: string };

export interface FollowOptions {
  /** The last version this device tried, whatever the outcome (kept on the device across restarts): never tried again. */
  appliedVersion: () => number | undefined;
  /**
   * Apply the bundle (`bytes`: as signed); its outcome is reported. The caller records the
   * version as tried, even when it failed or was reverted (no retry loop). null: no outcome
   * yet, this machine reboots and the run goes on after the boot (see `resume`).
   */
  apply: (bundle: OpenedBundle, bytes: Uint8Array) => Promise<Applied | null>;
  /**
   * Before any bundle: finish the run that rebooted this machine (or whatever else the agent
   * left undone before it stopped), whose outcome is then reported like any; null: nothing to report.
   */
  resume?: () => Promise<{ bundle: OpenedBundle; result: Applied } | null>;
  onEvent?: (e: DeviceEvent) => void;
  now?: () => Date;
  /** How often a bundle held by a paused (or not yet visible) rollout is checked again; default 30 s. */
  recheckMs?: number;
  /** The bundle this device runs now: the one it applied, or (after a restart) the one it applied before, seen again. For audits. */
  onCurrent?: (bundle: OpenedBundle, outcome: Exclude<Outcome, "timeout"> | "applied before") => void;
  /** The version this device runs now (the last one applied), told with every result. */
  running?: () => number | undefined;
  /** Between attempts to send a report the cluster did not acknowledge. */
  reportBackoff?: Backoff;
}

const enc = new TextEncoder();

export interface Applied {
  outcome: Exclude<Outcome, "timeout">;
  detail?: string;
  /** The run's --report JSON, sent with the result. */
  report?: unknown;
}

/**
 * A message holds at most 1 MB (NATS's default max_payload): a result whose run report is
 * larger is sent without it (a result that can never be stored would be sent again for ever).
 */
const MAX_REPORT_BYTES = 512 * 1024;
export function reportWithin(report: unknown): { report?: unknown; reportOmitted?: string } {
  if (report === undefined) return {};
  const bytes = Buffer.byteLength(JSON.stringify(report));
  return bytes <= MAX_REPORT_BYTES ? { report } : { reportOmitted: `the run report has ${bytes} bytes (at most ${MAX_REPORT_BYTES} are sent)` };
}

export async function followDesiredState(broker: Broker, device: DeviceIdentity, opts: FollowOptions): Promise<Stoppable> {
  const emit = (e: DeviceEvent) => opts.onEvent?.(e);
  let stopped = false;
  // a report is sent until the cluster stores it (the cluster may be away for a while: the
  // outcome is told when it is back); the message id makes a resent one a duplicate
  const report = async (kind: "result" | "refused", body: Record<string, unknown>, id?: string): Promise<void> => {
    for (let attempt = 0; !stopped; attempt++) {
      try {
        await broker.publish(reportSubject(device.name, kind), enc.encode(JSON.stringify(body)), id ? { id } : {});
        return;
      } catch (error) {
        emit({ type: "report-failed", message: messageOf(error) });
        await new Promise((r) => setTimeout(r, backoffDelay(attempt, opts.reportBackoff ?? DEFAULT_BACKOFF)));
      }
    }
  };
  /** Tell the outcome of a bundle's run. */
  const told = async (bundle: OpenedBundle, result: Applied): Promise<void> => {
    emit({ type: "result", version: bundle.version, outcome: result.outcome, ...(result.detail ? { detail: result.detail } : {}) });
    opts.onCurrent?.(bundle, result.outcome);
    const body: ResultReport = {
      version: bundle.version,
      outcome: result.outcome,
      ...(bundle.rollout ? { rollout: bundle.rollout } : {}),
      ...(result.detail ? { detail: result.detail } : {}),
      ...(opts.running?.() !== undefined ? { applied: opts.running() } : {}),
      ...reportWithin(result.report),
    };
    // the message id makes a retried report of the same result a duplicate, not a second result
    await report("result", body as unknown as Record<string, unknown>, `${device.name}-${bundle.version}-result`);
  };
  // the run left from before this machine's reboot goes first: a bundle waits for it
  let busy = opts.resume
    ? opts
        .resume()
        .then((r) => (r ? told(r.bundle, r.result) : undefined))
        .catch((error) => emit({ type: "report-failed", message: messageOf(error) }))
    : Promise.resolve();
  let latest: Entry | null = null;
  let recheck: NodeJS.Timeout | undefined;
  const handle = async (entry: Entry): Promise<void> => {
    if (entry !== latest) return; // a newer bundle arrived meanwhile
    let bundle: OpenedBundle;
    try {
      bundle = await openBundle(entry.value, { ...device, device: device.name, appliedVersion: opts.appliedVersion(), now: opts.now?.() });
    } catch (error) {
      if (!(error instanceof BundleRefused)) throw error;
      if (error.reason === "replayed") {
        // what it tried already, seen again after a reconnect or a restart: not applied again, but audited
        if (opts.onCurrent) {
          const current = await openBundle(entry.value, { ...device, device: device.name, now: opts.now?.() }).catch(() => null);
          if (current) opts.onCurrent(current, "applied before");
        }
        return;
      }
      emit({ type: "refused", reason: error.reason, message: error.message });
      await report("refused", { revision: entry.revision, reason: error.reason, message: error.message });
      return;
    }
    if (bundle.rollout) {
      const r = await rolloutOpen(broker, bundle.rollout);
      if (!r.open) {
        emit({ type: "held", version: bundle.version, rollout: bundle.rollout, status: r.status, reason: r.reason });
        if (r.status !== "aborted" && r.status !== "done") {
          recheck = setTimeout(() => queue(entry), opts.recheckMs ?? 30_000);
          recheck.unref();
        }
        return;
      }
    }
    const result = await opts.apply(bundle, entry.value);
    if (result) await told(bundle, result);
  };
  const queue = (entry: Entry): void => {
    busy = busy.then(() => handle(entry)).catch((error) => emit({ type: "report-failed", message: messageOf(error) }));
  };
  const watch = await broker.watch(DESIRED_BUCKET, desiredKey(device.name), (entry) => {
    clearTimeout(recheck);
    latest = entry;
    if (entry) queue(entry);
  });
  return {
    stop: async () => {
      stopped = true;
      clearTimeout(recheck);
      latest = null;
      await watch.stop();
      await busy;
    },
  };
}
