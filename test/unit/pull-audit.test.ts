import { test } from "node:test";
import assert from "node:assert/strict";
import { AuditDiff, DEFAULT_SCHEDULE, nextAuditDelay, nextHeartbeatDelay, type AuditResult } from "../../core/pull/audit.js";
import { fleetStatus } from "../../core/pull/fleet-status.js";
import { reportWithin } from "../../core/pull/device.js";
import { advance, recordResult, startRollout, DEFAULT_POLICY } from "../../core/pull/rollout.js";

const result = (fingerprint: string): AuditResult => ({ version: 1, drift: fingerprint !== "clean", changed: fingerprint === "clean" ? 0 : 1, fingerprint });

test("audits come every interval ± splay, heartbeats never later than their interval", () => {
  const s = DEFAULT_SCHEDULE;
  assert.equal(
    nextAuditDelay(s, () => 0),
    s.auditMs - s.auditSplayMs,
  );
  assert.equal(
    nextAuditDelay(s, () => 0.5),
    s.auditMs,
  );
  assert.equal(
    nextAuditDelay(s, () => 0.999999),
    s.auditMs + s.auditSplayMs,
  );
  assert.equal(
    nextAuditDelay({ auditMs: 1000, auditSplayMs: 5000, heartbeatMs: 1 }, () => 0),
    100,
    "never below a tenth of the interval",
  );
  assert.equal(
    nextHeartbeatDelay(s, () => 0),
    s.heartbeatMs * 0.9,
  );
  assert.equal(
    nextHeartbeatDelay(s, () => 1),
    s.heartbeatMs,
  );
  // the steady load the README states: 10,000 devices, one heartbeat each per interval at most
  assert.ok(10_000 / (s.heartbeatMs / 1000) <= 100 / 5, "10,000 heartbeats per interval stay far below 100 messages/s");
});

test("an audit is reported only when its result differs from the last one stored", () => {
  const diff = new AuditDiff();
  assert.ok(diff.shouldSend(result("clean")), "the first one");
  diff.sent(result("clean"));
  assert.ok(!diff.shouldSend(result("clean")), "unchanged: not sent");
  assert.ok(diff.shouldSend(result("motd changed")), "drift: sent");
  // not acknowledged: still to be sent next time
  assert.ok(diff.shouldSend(result("motd changed")));
  diff.sent(result("motd changed"));
  assert.ok(!diff.shouldSend(result("motd changed")));
  assert.ok(diff.shouldSend(result("clean")), "back in sync: sent");
});

const enc = new TextEncoder();
const msg = (seq: number, subject: string, body: unknown) => ({ subject, seq, data: enc.encode(JSON.stringify(body)), time: new Date(Date.UTC(2026, 0, 1, 0, 0, seq)) });

test("status from the latest report of each kind: the applied version a device states survives a later failed result; an audit's drift shows", () => {
  const rows = fleetStatus(
    ["a", "b"],
    new Map([
      ["a", { version: 2 }],
      ["b", { version: 1 }],
    ]),
    [
      msg(5, "reports.a.result", { version: 2, outcome: "failed", detail: "no such slave" }),
      msg(6, "reports.a.heartbeat", { applied: 1 }),
      msg(3, "reports.b.result", { version: 1, outcome: "applied" }),
      msg(7, "reports.b.audit", { version: 1, applied: 1, drift: true, changed: 1 }),
    ],
  );
  assert.deepEqual(
    rows.map((r) => [r.device, r.desired, r.applied, r.drift, r.lastSeen, r.lastError ?? null]),
    [
      ["a", 2, 1, "failed", "2026-01-01T00:00:06.000Z", "version 2 failed: no such slave"],
      ["b", 1, 1, "drift", "2026-01-01T00:00:07.000Z", null],
    ],
  );
});

test("recording the results of 20,000 devices is linear (it was quadratic)", () => {
  const devices = Array.from({ length: 20_000 }, (_, i) => `pi${i}`);
  let s = advance(startRollout("big", 1, devices, { ...DEFAULT_POLICY, canary: devices.length }, 0), 0).state;
  const t = Date.now();
  for (const d of devices) s = recordResult(s, d, { outcome: "applied", at: 1 });
  const ms = Date.now() - t;
  assert.equal(Object.keys(s.results).length, devices.length);
  assert.ok(ms < 2_000, `20,000 results in ${ms} ms`);
});

test("a result's run report travels with it up to 512 KiB; a larger one is left out and said so, so the result can still be stored", () => {
  const small = { mode: "apply", hosts: [{ host: "pi1" }] };
  assert.deepEqual(reportWithin(small), { report: small });
  assert.deepEqual(reportWithin(undefined), {});
  const large = { mode: "apply", hosts: [{ host: "pi1", diff: "x".repeat(600 * 1024) }] };
  const within = reportWithin(large);
  assert.equal(within.report, undefined);
  assert.match(within.reportOmitted ?? "", /^the run report has 6\d{5} bytes \(at most 524288 are sent\)$/);
});
