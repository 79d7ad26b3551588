import { test } from "node:test";
import assert from "node:assert/strict";
import { batches, haltReason } from "../../core/run/rollout.js";

const hosts = ["a", "b", "c", "d", "e", "f", "g"];

test("serial as a number, a percentage and a list (the last size repeats)", () => {
  assert.deepEqual(batches(hosts, undefined), [hosts]);
  assert.deepEqual(batches(hosts, 3), [["a", "b", "c"], ["d", "e", "f"], ["g"]]);
  assert.deepEqual(batches(hosts, "30%"), [["a", "b", "c"], ["d", "e", "f"], ["g"]], "30% of 7 rounds up to 3");
  assert.deepEqual(batches(hosts, [1, "50%", "100%"]), [["a"], ["b", "c", "d", "e"], ["f", "g"]]);
  assert.deepEqual(batches(hosts, [2, 1]), [["a", "b"], ["c"], ["d"], ["e"], ["f"], ["g"]]);
  assert.deepEqual(batches(["a"], "1%"), [["a"]], "never an empty batch");
});

test("bad serial values are configuration errors", () => {
  assert.throws(() => batches(hosts, "half"), /serial must be a number, a percentage/);
  assert.throws(() => batches(hosts, 0), /at least 1/);
});

test("a batch halts the rollout when its failures exceed the threshold", () => {
  assert.equal(haltReason(0, 3, { anyErrorsFatal: true }), null);
  assert.match(haltReason(1, 3, { maxFailPercentage: 20, anyErrorsFatal: false })!, /33% > max_fail_percentage 20%/);
  assert.equal(haltReason(1, 5, { maxFailPercentage: 20, anyErrorsFatal: false }), null, "20% does not exceed 20%");
  assert.match(haltReason(1, 10, { anyErrorsFatal: true })!, /any_errors_fatal/);
  assert.equal(haltReason(2, 3, { anyErrorsFatal: false }), null, "no threshold: go on");
});
