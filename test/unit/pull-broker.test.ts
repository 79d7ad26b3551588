import { test } from "node:test";
import assert from "node:assert/strict";
import { backoffDelay } from "../../core/pull/broker.js";

test("reconnect back-off doubles up to its cap, half of it random", () => {
  const b = { baseMs: 100, capMs: 1000 };
  assert.deepEqual(
    [0, 1, 2, 3, 4, 10, 1000].map((a) => backoffDelay(a, b, () => 0)),
    [50, 100, 200, 400, 500, 500, 500],
  );
  assert.deepEqual(
    [0, 1, 2, 3, 4].map((a) => backoffDelay(a, b, () => 1)),
    [100, 200, 400, 800, 1000],
  );
  const spread = new Set(Array.from({ length: 50 }, () => backoffDelay(5, b)));
  assert.ok(spread.size > 10, "devices that lost the same server do not retry in step");
  for (const d of spread) assert.ok(d >= 500 && d <= 1000);
});
