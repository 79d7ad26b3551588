import { test } from "node:test";
import assert from "node:assert/strict";
import {
  abortReason,
  advance,
  control,
  counts,
  DEFAULT_POLICY,
  joinPlan,
  pauseClocks,
  PLAN_CHUNK,
  planWaves,
  publicState,
  recordResult,
  splitPlan,
  startRollout,
  type RolloutPolicy,
  type RolloutState,
} from "../../core/pull/rollout.js";

const devices = (n: number) => Array.from({ length: n }, (_, i) => `pi${i + 1}`);
const policy = (p: Partial<RolloutPolicy> = {}): RolloutPolicy => ({ ...DEFAULT_POLICY, timeoutMs: 1000, ...p });

/** Every device of the open waves reports `outcome` (or the one `results` names). */
function reportAll(s: RolloutState, at: number, results: Record<string, "applied" | "failed" | "reverted"> = {}): RolloutState {
  for (const d of s.waves.slice(0, s.openedAt.length).flat()) s = recordResult(s, d, { outcome: results[d] ?? "applied", at });
  return s;
}

test("waves: the canary, then growing by the factor; every device in exactly one wave", () => {
  const w = planWaves(devices(20), policy({ canary: 1, growth: 2 }));
  assert.deepEqual(
    w.map((x) => x.length),
    [1, 1, 2, 4, 8, 4],
  );
  assert.deepEqual(w.flat(), devices(20));
  assert.deepEqual(
    planWaves(devices(100), policy({ canary: "5%", serial: "10%", growth: 3 })).map((x) => x.length),
    [5, 10, 30, 55],
  );
  assert.deepEqual(
    planWaves(devices(5), policy({ canary: 2, growth: 1 })).map((x) => x.length),
    [2, 2, 1],
    "growth 1: the serial size repeats",
  );
  assert.deepEqual(
    planWaves(devices(3), policy({ canary: 10 })).map((x) => x.length),
    [3],
    "a canary larger than the fleet is the fleet",
  );
  assert.throws(() => planWaves(["a", "a"], policy()), /lists a device twice/);
  assert.throws(() => planWaves(devices(3), policy({ canary: "some" })), /canary must be a number or a percentage/);
  assert.throws(() => startRollout("r1", 1, devices(3), policy({ growth: 0.5 }), 0), /growth must be at least 1/);
});

test("a wave opens when every device of the open waves has reported; then done", () => {
  let s = startRollout("r1", 7, devices(4), policy({ canary: 1, growth: 2 }), 0);
  let step = advance(s, 0);
  assert.deepEqual(step.actions, [{ type: "open", wave: 0, devices: ["pi1"] }]);
  s = step.state;
  assert.deepEqual(advance(s, 10).actions, [], "the canary has not reported");
  s = recordResult(s, "pi1", { outcome: "applied", at: 20 });
  step = advance(s, 20);
  assert.deepEqual(step.actions, [{ type: "open", wave: 1, devices: ["pi2"] }]);
  s = reportAll(step.state, 30);
  step = advance(s, 30);
  assert.deepEqual(step.actions, [{ type: "open", wave: 2, devices: ["pi3", "pi4"] }]);
  s = reportAll(step.state, 40);
  step = advance(s, 40);
  assert.deepEqual(step.actions, [{ type: "done" }]);
  assert.equal(step.state.status, "done");
  assert.deepEqual(advance(step.state, 50).actions, [], "done stays done");
  assert.deepEqual(publicState(step.state), { id: "r1", version: 7, status: "done", updated: 40 });
});

test("a failed canary aborts the rollout before any other device gets the bundle", () => {
  let s = advance(startRollout("r1", 1, devices(50), policy({ canary: 1, maxFailPercentage: 10 }), 0), 0).state;
  s = recordResult(s, "pi1", { outcome: "reverted", at: 5, detail: "confirm timed out" });
  const step = advance(s, 5);
  assert.equal(step.state.status, "aborted");
  assert.equal(step.actions.length, 1);
  assert.equal(step.actions[0].type, "aborted");
  assert.match(step.state.reason!, /1 of 1 devices that reported failed, reverted or timed out \(0 failed, 1 reverted, 0 timed out: 100% > max_fail_percentage 10%\)/);
  assert.equal(counts(step.state).opened, 1, "no other wave opened");
});

test("the threshold counts failures, reverts and timeouts together, once the minimum have reported", () => {
  const p = policy({ maxFailPercentage: 20, minReported: 5 });
  const c = (applied: number, failed: number, reverted: number, timeout: number) => {
    const reported = applied + failed + reverted + timeout;
    return { total: 100, opened: reported, waiting: 0, reported, applied, failed, reverted, timeout, bad: failed + reverted + timeout };
  };
  assert.equal(abortReason(c(0, 2, 0, 0), p), null, "2 reports < minimum 5");
  assert.equal(abortReason(c(4, 1, 0, 0), p), null, "20% does not exceed 20%");
  assert.match(abortReason(c(7, 1, 1, 1), p)!, /3 of 10 devices .*30% > max_fail_percentage 20%/);
  assert.equal(abortReason(c(10, 0, 0, 0), policy({ maxFailPercentage: 0 })), null);
});

test("a device that does not report in time counts as timed out, and a late result does not undo it", () => {
  let s = advance(startRollout("r1", 1, devices(3), policy({ canary: 2, timeoutMs: 1000, maxFailPercentage: 50, minReported: 2 }), 0), 0).state;
  s = recordResult(s, "pi1", { outcome: "applied", at: 100 });
  let step = advance(s, 999);
  assert.deepEqual(step.actions, []);
  step = advance(step.state, 1000);
  assert.equal(step.state.results.pi2.outcome, "timeout");
  assert.deepEqual(step.actions, [{ type: "open", wave: 1, devices: ["pi3"] }], "1 of 2 = 50% does not exceed 50%: go on");
  const late = recordResult(step.state, "pi2", { outcome: "applied", at: 1100 });
  assert.equal(late.results.pi2.outcome, "timeout");
  assert.equal(recordResult(late, "nobody", { outcome: "failed", at: 1 }), late, "a device not in the rollout is ignored");
  assert.equal(recordResult(late, "pi3", { outcome: "failed", at: 1 }).results.pi3.outcome, "failed");
});

test("time the cluster was away is given back to the waves still waiting, not to those that have every result", () => {
  let s = advance(startRollout("r1", 1, devices(3), policy({ canary: 1, timeoutMs: 1000 }), 0), 0).state;
  s = advance(reportAll(s, 100), 100).state; // wave 2 (pi2) opens at 100
  s = pauseClocks(s, 5000);
  assert.deepEqual(s.openedAt, [0, 5100], "the canary's wave has its result: its clock is not moved");
  assert.deepEqual(advance(s, 5099).state.results, { pi1: { outcome: "applied", at: 100 } }, "no timeout inside the given-back time");
  assert.equal(advance(s, 6100).state.results.pi2.outcome, "timeout", "the clock runs again afterwards");
});

test("a device of a wave not yet open cannot report into the rollout", () => {
  const s = advance(startRollout("r1", 1, devices(3), policy(), 0), 0).state;
  assert.equal(recordResult(s, "pi3", { outcome: "failed", at: 1 }), s);
});

test("pause holds the next wave (timeouts and the abort criteria still count); resume goes on; abort ends it", () => {
  let s = advance(startRollout("r1", 1, devices(4), policy({ canary: 1, timeoutMs: 1000, maxFailPercentage: 0 }), 0), 0).state;
  s = control(s, "pause", 1, "looking at the canary");
  assert.equal(s.status, "paused");
  s = recordResult(s, "pi1", { outcome: "applied", at: 2 });
  assert.deepEqual(advance(s, 3).actions, [], "no wave opens while paused");
  s = control(s, "resume", 4);
  assert.equal(s.status, "open");
  assert.equal(s.reason, undefined);
  let step = advance(s, 5);
  assert.deepEqual(step.actions, [{ type: "open", wave: 1, devices: ["pi2"] }]);
  s = control(step.state, "pause", 6);
  step = advance(s, 1006);
  assert.equal(step.state.status, "aborted", "a timeout while paused still aborts");
  const aborted = control(advance(startRollout("r2", 1, devices(2), policy(), 0), 0).state, "abort", 9, "wrong bundle");
  assert.equal(aborted.status, "aborted");
  assert.equal(aborted.reason, "wrong bundle");
  assert.equal(control(aborted, "resume", 10), aborted, "an aborted rollout stays aborted");
});

test("the record of a 30,000-device rollout splits into KV values far below 1 MB and joins back unchanged", () => {
  const names = Array.from({ length: 30_000 }, (_, i) => `raspberry-pi-in-field-${String(i).padStart(6, "0")}`);
  // a record as the controller holds it when the rollout ended (built directly: recordResult copies the map per result)
  let s = startRollout("big", 7, names, policy({ canary: "1%", growth: 2, maxFailPercentage: 5 }), 1000);
  const results: RolloutState["results"] = {};
  names.forEach((d, i) => (results[d] = i % 97 ? { outcome: "applied", at: 5000 + i } : { outcome: "failed", at: 5000 + i, detail: "bond0 has no slave up" }));
  results[names[5]] = { outcome: "reverted", at: 9, detail: "x".repeat(500) };
  s = { ...s, status: "done", openedAt: s.waves.map((_, i) => 2000 + i), results, reportsSeq: 61234, controlRevision: 3 };
  const whole = Buffer.byteLength(JSON.stringify(s));
  assert.ok(whole > 1_000_000, `the unsplit record would be ${whole} bytes`);
  const { head, chunks } = splitPlan(s);
  assert.equal(chunks.length, Math.ceil(names.length / PLAN_CHUNK));
  const sizes = [head, ...chunks].map((v) => Buffer.byteLength(JSON.stringify(v)));
  assert.ok(Math.max(...sizes) < 250_000, `largest value ${Math.max(...sizes)} bytes`);
  assert.deepEqual(joinPlan(JSON.parse(JSON.stringify(head)), JSON.parse(JSON.stringify(chunks))), s);
  assert.throws(() => joinPlan(head, chunks.slice(1)), /has 14 of 15 parts/);
  console.log(`30,000 devices: ${whole} bytes in one value, or ${sizes.length} values of at most ${Math.max(...sizes)} bytes`);
});
