// Rollouts in pull mode: a bundle version opens to a canary set, then to waves that grow
// by a factor; the rollout aborts by itself once enough devices have reported and the
// failed + reverted + timed-out share exceeds max_fail_percentage (AWS IoT Jobs' abort
// criteria, in the words of push runs). The first half of this file is pure (state in,
// state and actions out); the second half drives it against the broker: bundles go into
// the device's KV key when its wave opens, results come from the REPORTS stream, the
// state is kept in KV (so the controller can stop and go on, and a device that was
// offline can check that the rollout is still open before it applies).
import { ConfigError, messageOf, quote } from "../errors.js";
import { BrokerError, type Broker, type Stoppable } from "./broker.js";
import { desiredKey, DESIRED_BUCKET, reportDevice, REPORTS_STREAM, rolloutControlKey, rolloutId, rolloutPlanKey, rolloutStateKey, ROLLOUTS_BUCKET } from "./subjects.js";

export type Outcome = "applied" | "failed" | "reverted" | "timeout";
export const BAD_OUTCOMES: readonly Outcome[] = ["failed", "reverted", "timeout"];
export type Status = "open" | "paused" | "aborted" | "done";

export interface RolloutPolicy {
  /** The first wave: a count or a percentage ("5%") of the devices. */
  canary: number | string;
  /** The wave after the canary (default: as large as the canary); each next one `growth` times the last. */
  serial?: number | string;
  growth: number;
  /** Abort when more than this share of the devices that reported failed, reverted or timed out… */
  maxFailPercentage: number;
  /** …once at least this many have reported. */
  minReported: number;
  /** A device with no result this long after its wave opened counts as timed out. */
  timeoutMs: number;
}

export const DEFAULT_POLICY: RolloutPolicy = { canary: 1, growth: 2, maxFailPercentage: 0, minReported: 1, timeoutMs: 15 * 60_000 };

export interface DeviceResult {
  outcome: Outcome;
  at: number;
  detail?: string;
}

export interface RolloutState {
  id: string;
  version: number;
  status: Status;
  reason?: string;
  policy: RolloutPolicy;
  waves: string[][];
  /**
   * When each opened wave's clock started (ms): when its bundles were all stored, moved on
   * by any time the controller could not reach the cluster since (its devices could not
   * report then). Its length is the number of waves opened.
   */
  openedAt: number[];
  results: Record<string, DeviceResult>;
  created: number;
  updated: number;
  /** The last REPORTS sequence and control revision taken into account (to go on after a restart). */
  reportsSeq?: number;
  controlRevision?: number;
}

/** What devices may read about a rollout (KV rollouts/state.<id>). */
export interface PublicRolloutState {
  id: string;
  version: number;
  status: Status;
  reason?: string;
  updated: number;
}

export type Action = { type: "open"; wave: number; devices: string[] } | { type: "aborted"; reason: string } | { type: "done" };

// --- pure logic ---------------------------------------------------------------------------

function size(spec: number | string, total: number, what: string): number {
  if (typeof spec === "number") {
    if (!Number.isInteger(spec) || spec < 1) throw new ConfigError(`${what} must be a whole number of at least 1 (got ${spec}).`);
    return spec;
  }
  const m = /^(\d+(?:\.\d+)?)%$/.exec(spec.trim());
  if (!m) throw new ConfigError(`${what} must be a number or a percentage like "5%" (got ${quote(spec)}).`);
  return Math.max(1, Math.ceil((Number(m[1]) / 100) * total));
}

export function checkPolicy(policy: RolloutPolicy): void {
  if (!(policy.growth >= 1)) throw new ConfigError(`growth must be at least 1 (got ${policy.growth}); 1 keeps every wave the size of the first.`);
  if (!(policy.maxFailPercentage >= 0 && policy.maxFailPercentage <= 100)) throw new ConfigError(`max_fail_percentage must be 0-100 (got ${policy.maxFailPercentage}).`);
  if (!Number.isInteger(policy.minReported) || policy.minReported < 1) throw new ConfigError(`the minimum number of reports must be at least 1 (got ${policy.minReported}).`);
  if (!(policy.timeoutMs > 0)) throw new ConfigError(`the timeout must be positive (got ${policy.timeoutMs} ms).`);
}

/** The canary, then waves starting at `serial` and growing by `growth`; every device in exactly one. */
export function planWaves(devices: readonly string[], policy: RolloutPolicy): string[][] {
  if (new Set(devices).size !== devices.length) throw new ConfigError("a rollout lists a device twice.");
  const waves: string[][] = [];
  if (!devices.length) return waves;
  const canary = size(policy.canary, devices.length, "canary");
  waves.push(devices.slice(0, canary));
  let next = policy.serial === undefined ? canary : size(policy.serial, devices.length, "serial");
  for (let i = canary; i < devices.length;) {
    const n = Math.max(1, Math.round(next));
    waves.push(devices.slice(i, i + n));
    i += n;
    next *= policy.growth;
  }
  return waves;
}

export function startRollout(id: string, version: number, devices: readonly string[], policy: RolloutPolicy, now: number): RolloutState {
  checkPolicy(policy);
  if (!devices.length) throw new ConfigError(`rollout ${quote(id)} has no devices.`);
  return { id: rolloutId(id), version, status: "open", policy, waves: planWaves(devices, policy), openedAt: [], results: {}, created: now, updated: now };
}

export interface Counts {
  total: number;
  opened: number;
  waiting: number;
  reported: number;
  applied: number;
  failed: number;
  reverted: number;
  timeout: number;
  bad: number;
}

export function counts(state: RolloutState): Counts {
  const c: Counts = { total: 0, opened: 0, waiting: 0, reported: 0, applied: 0, failed: 0, reverted: 0, timeout: 0, bad: 0 };
  for (const w of state.waves) c.total += w.length;
  for (const w of state.waves.slice(0, state.openedAt.length)) c.opened += w.length;
  for (const r of Object.values(state.results)) {
    c[r.outcome]++;
    c.reported++;
    if (BAD_OUTCOMES.includes(r.outcome)) c.bad++;
  }
  c.waiting = c.opened - c.reported;
  return c;
}

/** Why the rollout must abort now, or null. */
export function abortReason(c: Counts, policy: RolloutPolicy): string | null {
  if (c.reported < policy.minReported || !c.bad) return null;
  const pct = (c.bad / c.reported) * 100;
  if (pct <= policy.maxFailPercentage) return null;
  return (
    `${c.bad} of ${c.reported} devices that reported failed, reverted or timed out ` +
    `(${c.failed} failed, ${c.reverted} reverted, ${c.timeout} timed out: ${pct.toFixed(0)}% > max_fail_percentage ${policy.maxFailPercentage}%)`
  );
}

/** Each device's wave, made once per plan (the waves never change once planned). */
const waveIndexes = new WeakMap<string[][], Map<string, number>>();
function waveOf(waves: string[][], device: string): number {
  let index = waveIndexes.get(waves);
  if (!index) {
    index = new Map(waves.flatMap((w, i) => w.map((d) => [d, i] as const)));
    waveIndexes.set(waves, index);
  }
  return index.get(device) ?? -1;
}

/**
 * A device's result; the first one counts (a late "applied" after a timeout does not undo
 * it). The results are added in place: searching the waves and copying the results for
 * every report made a rollout of N devices cost O(N²) (seconds at 10,000 devices).
 */
export function recordResult(state: RolloutState, device: string, result: DeviceResult): RolloutState {
  const wave = waveOf(state.waves, device);
  if (wave < 0 || wave >= state.openedAt.length || state.results[device]) return state;
  state.results[device] = result;
  return { ...state, updated: result.at };
}

/** Time passes: timeouts, the abort criteria, the next wave or the end. */
export function advance(state: RolloutState, now: number): { state: RolloutState; actions: Action[] } {
  if (state.status === "aborted" || state.status === "done") return { state, actions: [] };
  let s = state;
  s.openedAt.forEach((openedAt, wave) => {
    if (now - openedAt < s.policy.timeoutMs) return;
    for (const device of s.waves[wave])
      if (!s.results[device]) s = recordResult(s, device, { outcome: "timeout", at: now, detail: `no result ${Math.round(s.policy.timeoutMs / 1000)} s after its wave opened` });
  });
  const reason = abortReason(counts(s), s.policy);
  if (reason) return { state: { ...s, status: "aborted", reason, updated: now }, actions: [{ type: "aborted", reason }] };
  if (s.status !== "open") return { state: s, actions: [] };
  const c = counts(s);
  if (c.waiting > 0) return { state: s, actions: [] };
  const wave = s.openedAt.length;
  if (wave >= s.waves.length) return { state: { ...s, status: "done", updated: now }, actions: [{ type: "done" }] };
  return { state: { ...s, openedAt: [...s.openedAt, now], updated: now }, actions: [{ type: "open", wave, devices: s.waves[wave] }] };
}

/**
 * The cluster was away for `awayMs`: the waves still waiting for results get that time
 * back (no device could fetch a bundle or report while it was away).
 */
export function pauseClocks(state: RolloutState, awayMs: number): RolloutState {
  const waiting = (wave: number) => state.waves[wave].some((d) => !state.results[d]);
  return { ...state, openedAt: state.openedAt.map((at, wave) => (waiting(wave) ? at + awayMs : at)) };
}

export type Command = "pause" | "resume" | "abort";

export function control(state: RolloutState, command: Command, now: number, reason?: string): RolloutState {
  if (state.status === "aborted" || state.status === "done") return state;
  switch (command) {
    case "pause":
      return { ...state, status: "paused", reason: reason ?? "paused by request", updated: now };
    case "resume":
      return state.status === "paused" ? { ...state, status: "open", reason: undefined, updated: now } : state;
    case "abort":
      return { ...state, status: "aborted", reason: reason ?? "aborted by request", updated: now };
  }
}

export const publicState = (s: RolloutState): PublicRolloutState => ({
  id: s.id,
  version: s.version,
  status: s.status,
  ...(s.reason ? { reason: s.reason } : {}),
  updated: s.updated,
});

// --- against the broker -------------------------------------------------------------------

/** What an agent sends to reports.<device>.result after trying a bundle. */
export interface ResultReport {
  rollout?: string;
  version: number;
  outcome: Outcome;
  detail?: string;
  /** The run's --report JSON (secrets masked), when a run took place. */
  report?: unknown;
  /** Why the report was left out (too large for one message). */
  reportOmitted?: string;
  /** The version the device runs after this result (its last applied one): status --fleet reads only the latest report. */
  applied?: number;
}

const enc = new TextEncoder();
const dec = new TextDecoder();
const json = (v: unknown): Uint8Array => enc.encode(JSON.stringify(v));

export interface RolloutRun {
  broker: Broker;
  id: string;
  version: number;
  devices: string[];
  policy: RolloutPolicy;
  /** The signed bundle of each device, put into its KV key when its wave opens. */
  bundle: (device: string) => Uint8Array | Promise<Uint8Array>;
  tickMs?: number;
  now?: () => number;
  onProgress?: (state: RolloutState, counts: Counts) => void;
  /** How long the rollout waits for an unreachable cluster before it stops (default 30 min; started again, it goes on). */
  unreachableMs?: number;
  /** The cluster stopped answering: the rollout waits (no wave opens, no clock runs). Once per outage. */
  onUnreachable?: (detail: string) => void;
  /** The cluster answers again after `awayMs`: the rollout goes on. */
  onReachable?: (awayMs: number) => void;
}

export const DEFAULT_UNREACHABLE_MS = 30 * 60_000;
class ClusterAway extends Error {}
const RETRY_UNREACHABLE_MS = 2_000;

/**
 * Drive a rollout to its end (done or aborted). A rollout already in KV under this id
 * goes on from where it was (a controller that stopped), with the results it had. While
 * the cluster cannot be reached the rollout waits: its writes are tried again, no wave
 * opens and no wave's clock runs; after `unreachableMs` it stops (started again, it goes on).
 */
export async function runRollout(run: RolloutRun): Promise<RolloutState> {
  const { broker } = run;
  const now = run.now ?? Date.now;
  const saved = await loadPlan(broker, run.id);
  let state: RolloutState = saved ? saved.state : startRollout(run.id, run.version, run.devices, run.policy, now());
  if (state.version !== run.version) throw new ConfigError(`rollout ${quote(run.id)} exists already for version ${state.version}, not ${run.version}; use a new rollout id.`);
  let planRevision = saved?.revision ?? 0;
  let lastPublic = "";
  const savedChunks: string[] = [];

  /** The head, only if it is still ours; a write whose answer was lost may have been stored. */
  const putHead = async (head: PlanHead): Promise<number> => {
    const text = JSON.stringify(head);
    try {
      return await broker.put(ROLLOUTS_BUCKET, rolloutPlanKey(state.id), enc.encode(text), { previousRevision: planRevision });
    } catch (error) {
      if (broker.unavailable(error)) throw error;
      const stored = await broker.get(ROLLOUTS_BUCKET, rolloutPlanKey(state.id));
      if (stored && dec.decode(stored.value) === text) return stored.revision;
      throw error;
    }
  };
  const save = async (): Promise<void> => {
    const { head, chunks } = splitPlan(state);
    for (const [n, chunk] of chunks.entries()) {
      const text = JSON.stringify(chunk);
      if (savedChunks[n] === text) continue;
      await broker.put(ROLLOUTS_BUCKET, planChunkKey(state.id, n), enc.encode(text));
      savedChunks[n] = text;
    }
    planRevision = await putHead(head);
    const pub = JSON.stringify(publicState(state));
    if (pub !== lastPublic) {
      await broker.put(ROLLOUTS_BUCKET, rolloutStateKey(state.id), enc.encode(pub));
      lastPublic = pub;
    }
  };
  const storeBundles = async (devices: string[]): Promise<void> => {
    for (let i = 0; i < devices.length; i += 64) await Promise.all(devices.slice(i, i + 64).map(async (d) => broker.put(DESIRED_BUCKET, desiredKey(d), await run.bundle(d))));
  };

  let dirty = !saved;
  /** A wave open in the plan whose bundles are not all stored yet. */
  let opening: number | undefined;
  /** Since when the cluster has not answered. */
  let awaySince: number | undefined;
  const subscriptions: Stoppable[] = [];
  try {
    subscriptions.push(
      await broker.consume(
        REPORTS_STREAM,
        "reports.*.result",
        (m) => {
          const device = reportDevice(m.subject); // the server let only this device publish here
          state.reportsSeq = m.seq;
          dirty = true;
          if (!device) return;
          let report: ResultReport;
          try {
            report = JSON.parse(dec.decode(m.data));
          } catch {
            return;
          }
          if (report.version !== state.version || (report.rollout ?? state.id) !== state.id || !["applied", "failed", "reverted"].includes(report.outcome)) return;
          state = recordResult(state, device, { outcome: report.outcome, at: now(), ...(report.detail ? { detail: String(report.detail).slice(0, 500) } : {}) });
        },
        state.reportsSeq ? { fromSeq: state.reportsSeq + 1 } : {},
      ),
    );
    subscriptions.push(
      await broker.watch(ROLLOUTS_BUCKET, rolloutControlKey(state.id), (entry) => {
        if (!entry || entry.revision <= (state.controlRevision ?? 0)) return;
        try {
          const { command, reason } = JSON.parse(dec.decode(entry.value)) as { command: Command; reason?: string };
          if (["pause", "resume", "abort"].includes(command)) state = control(state, command, now(), reason);
        } catch {
          /* not a command: ignored */
        }
        state.controlRevision = entry.revision;
        dirty = true;
      }),
    );
    // A controller that stopped mid-wave: the opened waves' devices without a result get their bundle again (same version: no effect on those that have it).
    if (saved)
      await storeBundles(
        state.waves
          .slice(0, state.openedAt.length)
          .flat()
          .filter((d) => !state.results[d]),
      );

    for (;;) {
      if (opening === undefined && awaySince === undefined) {
        const step = advance(state, now());
        state = step.state;
        if (step.actions.length) dirty = true;
        for (const action of step.actions) if (action.type === "open") opening = action.wave;
      }
      try {
        if (broker.server() === undefined) throw new ClusterAway("connected to no server of the cluster");
        if (dirty) {
          dirty = false; // before the write: a report that comes in meanwhile makes it dirty again
          await save(); // a wave is open in KV before any device gets its bundle
        }
        if (opening !== undefined) {
          await storeBundles(state.waves[opening]);
          state.openedAt[opening] = now(); // its clock starts once its devices can fetch their bundles
          opening = undefined;
          await save();
        }
        if (awaySince !== undefined) {
          const awayMs = now() - awaySince;
          state = pauseClocks(state, awayMs);
          awaySince = undefined;
          dirty = true;
          run.onReachable?.(awayMs);
          continue;
        }
      } catch (error) {
        if (!(error instanceof ClusterAway) && !broker.unavailable(error)) throw error;
        if (awaySince === undefined) run.onUnreachable?.(messageOf(error));
        awaySince ??= now();
        dirty = true; // the plan is written again to tell that the cluster is back
        const limit = run.unreachableMs ?? DEFAULT_UNREACHABLE_MS;
        if (now() - awaySince >= limit)
          throw new BrokerError(
            `the cluster has not answered for ${Math.round(limit / 60_000)} min (${messageOf(error)}); rollout ${quote(state.id)} stopped where the cluster last stored it: start it again with the same id to go on.`,
          );
        await new Promise((r) => setTimeout(r, RETRY_UNREACHABLE_MS));
        continue;
      }
      run.onProgress?.(state, counts(state));
      if (state.status === "done" || state.status === "aborted") return state;
      await new Promise((r) => setTimeout(r, run.tickMs ?? 200));
    }
  } finally {
    for (const s of subscriptions) await s.stop().catch(() => {});
  }
}

/** Ask the controller running rollout `id` to pause, resume or abort it. */
export async function requestControl(broker: Broker, id: string, command: Command, reason?: string): Promise<void> {
  await broker.put(ROLLOUTS_BUCKET, rolloutControlKey(id), json({ command, ...(reason ? { reason } : {}), at: new Date().toISOString() }));
}

/** What a device checks before it applies a bundle of rollout `id`: is it still open? */
export async function rolloutOpen(broker: Broker, id: string): Promise<{ open: boolean; status: Status | "unknown"; reason?: string }> {
  let entry;
  try {
    entry = await broker.get(ROLLOUTS_BUCKET, rolloutStateKey(id));
  } catch (error) {
    return { open: false, status: "unknown", reason: `cannot read the rollout's state: ${messageOf(error)}` };
  }
  if (!entry) return { open: false, status: "unknown", reason: `rollout ${quote(id)} is not known to the broker` };
  const s = JSON.parse(dec.decode(entry.value)) as PublicRolloutState;
  return { open: s.status === "open", status: s.status, ...(s.reason ? { reason: s.reason } : {}) };
}

export async function readRollout(broker: Broker, id: string): Promise<RolloutState | null> {
  return (await loadPlan(broker, id))?.state ?? null;
}

// --- the record in KV, split ----------------------------------------------------------------
// One KV value holds at most 1 MB (NATS's default max_payload). A whole record costs ~60
// bytes a device, so it is split: plan.<id> holds the head (status, policy, wave sizes,
// when each opened) and plan.<id>.c<n> the devices and results of PLAN_CHUNK devices
// each, in wave order. Chunks are written before the head and only when they changed.

export const PLAN_CHUNK = 2_000;

export type PlanHead = Omit<RolloutState, "waves" | "results"> & { waveSizes: number[]; chunks: number };
export interface PlanChunk {
  devices: string[];
  results: Record<string, DeviceResult>;
}

export const planChunkKey = (id: string, n: number): string => `${rolloutPlanKey(id)}.c${n}`;

/** The record as KV values: a head and the chunks of PLAN_CHUNK devices. */
export function splitPlan(state: RolloutState, chunkSize = PLAN_CHUNK): { head: PlanHead; chunks: PlanChunk[] } {
  const { waves, results, ...rest } = state;
  const all = waves.flat();
  const chunks: PlanChunk[] = [];
  for (let i = 0; i < all.length; i += chunkSize) {
    const devices = all.slice(i, i + chunkSize);
    chunks.push({ devices, results: Object.fromEntries(devices.filter((d) => results[d]).map((d) => [d, results[d]])) });
  }
  return { head: { ...rest, waveSizes: waves.map((w) => w.length), chunks: chunks.length }, chunks };
}

export function joinPlan(head: PlanHead, chunks: PlanChunk[]): RolloutState {
  const { waveSizes, chunks: count, ...rest } = head;
  if (chunks.length !== count) throw new ConfigError(`rollout ${quote(head.id)}: its record has ${chunks.length} of ${count} parts in KV; it cannot go on.`);
  const all = chunks.flatMap((c) => c.devices);
  const waves: string[][] = [];
  let at = 0;
  for (const n of waveSizes) {
    waves.push(all.slice(at, at + n));
    at += n;
  }
  return { ...rest, waves, results: Object.assign({}, ...chunks.map((c) => c.results)) };
}

async function loadPlan(broker: Broker, id: string): Promise<{ state: RolloutState; revision: number } | null> {
  const entry = await broker.get(ROLLOUTS_BUCKET, rolloutPlanKey(id));
  if (!entry) return null;
  const head = JSON.parse(dec.decode(entry.value)) as PlanHead;
  const chunks: PlanChunk[] = [];
  for (let n = 0; n < head.chunks; n++) {
    const chunk = await broker.get(ROLLOUTS_BUCKET, planChunkKey(id, n));
    if (chunk) chunks.push(JSON.parse(dec.decode(chunk.value)));
  }
  return { state: joinPlan(head, chunks), revision: entry.revision };
}
