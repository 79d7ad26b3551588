import { test } from "node:test";
import assert from "node:assert/strict";
import { contentDigest, digestKey, parseDuration, planPublish, type RenderedDevice } from "../../core/pull/publish.js";
import { fleetRun, fleetStatus, renderFleetStatus } from "../../core/pull/fleet-status.js";
import { DEFAULT_POLICY, startRollout, recordResult, advance, counts } from "../../core/pull/rollout.js";
import { progressLine, renderRollout, renderSummary, rolloutPolicy } from "../../cli/fleet.js";
import type { Message } from "../../core/pull/broker.js";

const device = (psk: string, iface = "eth5"): RenderedDevice => ({
  playbook: {
    format: "provision-device-playbook/1",
    plays: [{ name: "p", confirm_timeout: 300, tasks: [{ name: "t", module: "dhcpcd_deny", args: { interfaces: [iface, psk] } }], handlers: [] }],
  },
  secrets: [psk],
});

test("content digest: equal for equal content, different when only the secret changes, keyed by the fleet's signing key", () => {
  const key = digestKey("-----BEGIN PRIVATE KEY-----\nA\n-----END PRIVATE KEY-----\n");
  assert.equal(contentDigest(key, device("s1")), contentDigest(key, device("s1")));
  assert.notEqual(contentDigest(key, device("s1")), contentDigest(key, device("s2")));
  assert.notEqual(contentDigest(key, device("s1")), contentDigest(key, device("s1", "eth6")));
  assert.notEqual(contentDigest(key, device("s1")), contentDigest(digestKey("another key"), device("s1")), "without the key, a digest cannot be recomputed");
});

test("planPublish: unchanged only when the stored bundle is the recorded one with the same digest; one next version above all", () => {
  const record = (version: number, digest: string) => ({ version, digest, at: "" });
  const plan = planPublish(
    [
      { device: "a", digest: "x" }, // never published
      { device: "b", digest: "x", stored: 3, record: record(3, "x") }, // same
      { device: "c", digest: "y", stored: 3, record: record(3, "x") }, // new content
      { device: "d", digest: "x", stored: 7, record: record(3, "x") }, // someone else stored v7 since
    ],
    5,
  );
  assert.deepEqual(plan, [
    { device: "a", action: "new", version: 8 },
    { device: "b", action: "unchanged", version: 3 },
    { device: "c", action: "changed", version: 8 },
    { device: "d", action: "changed", version: 8 },
  ]);
  assert.equal(planPublish([{ device: "a", digest: "x" }], 41)[0].version, 42, "above the fleet's last version");
});

test("durations", () => {
  assert.equal(parseDuration("30d", "x"), 30 * 86_400_000);
  assert.equal(parseDuration("15m", "x"), 900_000);
  assert.throws(() => parseDuration("3 weeks", "bundle_expiry"), /bundle_expiry: "3 weeks" is not a duration; write a whole number and a unit: 90s, 15m, 12h or 30d/);
});

test("rollout policy: the play's serial and max_fail_percentage, overridden by options", () => {
  assert.deepEqual(rolloutPolicy({ serial: [1, "10%"], maxFailPercentage: 20 }, {}), { ...DEFAULT_POLICY, canary: 1, serial: "10%", maxFailPercentage: 20 });
  assert.deepEqual(rolloutPolicy({ serial: 5 }, { canary: "2", growth: "1.5", timeout: "2m" }), { ...DEFAULT_POLICY, canary: 2, serial: 5, growth: 1.5, timeoutMs: 120_000 });
  assert.deepEqual(rolloutPolicy(undefined, { canary: "5%" }).canary, "5%");
  assert.throws(() => rolloutPolicy(undefined, { growth: "fast" }), /--growth must be a number/);
});

test("progress line, summary and show of a rollout", () => {
  const policy = { ...DEFAULT_POLICY, canary: 1, growth: 2, maxFailPercentage: 0 };
  let s = advance(startRollout("r1", 4, ["a", "b", "c", "d"], policy, 0), 0).state;
  assert.equal(progressLine("r1", 4, s, counts(s), 1000), "rollout r1 v4 open: wave 1/3, 0/4 done, 0 failed, 0 reverted, 0 timed out, 1 waiting");
  s = recordResult(s, "a", { outcome: "applied", at: 10 });
  s = advance(s, 10).state;
  assert.equal(progressLine("r1", 4, s, counts(s), 1000), "rollout r1 v4 open: wave 2/3, 1/4 done, 0 failed, 0 reverted, 0 timed out, 1 waiting, ETA 3s");
  s = recordResult(s, "b", { outcome: "reverted", at: 20, detail: "bond0 down" });
  s = advance(s, 20).state;
  assert.equal(s.status, "aborted");
  const summary = renderSummary(s, 2500);
  assert.match(
    summary,
    /^rollout r1 v4 ABORTED after 2\.5s: 4 device\(s\) in 3 wave\(s\), 2 opened\n {2}1 applied, 0 failed, 1 reverted, 0 timed out, 2 untouched\n {2}reason: .*\n {2}b: reverted: bond0 down\n$/,
  );
  const show = renderRollout(s);
  assert.match(show, /canary {2}\s+1 device\(s\) opened 1970-01-01T00:00:00.000Z: 1 applied/);
  assert.match(show, /wave 2 \s+2 device\(s\): 2 not opened/);
});

const msg = (seq: number, subject: string, body: unknown, at = 1000 * seq): Message => ({ seq, subject, data: new TextEncoder().encode(JSON.stringify(body)), time: new Date(at) });

test("fleet status folds the reports: applied version, last seen, drift, last error", () => {
  const rows = fleetStatus(
    ["a", "b", "c", "d", "e"],
    new Map([
      ["a", { version: 3 }],
      ["b", { version: 3, rollout: "r3" }],
      ["c", { version: 3 }],
      ["d", { version: 2 }],
      ["e", { version: 1 }],
    ]),
    [
      msg(1, "reports.a.result", { version: 3, outcome: "applied" }),
      msg(2, "reports.b.result", { version: 2, outcome: "applied" }),
      msg(3, "reports.b.result", { version: 3, outcome: "reverted", detail: "no\nroute" }),
      msg(4, "reports.c.result", { version: 3, outcome: "applied" }),
      msg(5, "reports.c.audit", { version: 3, drift: true }),
      msg(6, "reports.d.refused", { reason: "expired", message: "the bundle (version 2) expired" }),
      msg(7, "reports.a.heartbeat", {}),
      msg(8, "reports.x.result", "not an object"),
      msg(9, "nonsense", {}),
    ],
  );
  const pick = (d: string) => rows.find((r) => r.device === d)!;
  assert.deepEqual(pick("a"), {
    device: "a",
    desired: 3,
    applied: 3,
    lastResult: { version: 3, outcome: "applied", at: new Date(1000).toISOString() },
    lastSeen: new Date(7000).toISOString(),
    drift: "in sync",
  });
  assert.equal(pick("b").drift, "failed");
  assert.equal(pick("b").applied, 2);
  assert.equal(pick("b").lastError, "version 3 reverted: no route");
  assert.equal(pick("c").drift, "drift");
  assert.equal(pick("d").drift, "pending");
  assert.match(pick("d").lastError!, /refused a bundle \(expired\)/);
  assert.equal(pick("e").drift, "never seen");
  const table = renderFleetStatus(rows, 9000);
  assert.match(table, /^b\s+v3 \(r3\)\s+v2\s+6s ago\s+failed\s+version 3 reverted: no route$/m);
  assert.match(table, /^e\s+v1\s+-\s+never\s+never seen$/m);
  assert.match(table, /5 devices: 1 in sync, 1 pending, 1 drift, 1 failed, 1 never seen\n$/);
});

test("the fleet's HTML run is made of the devices' own run reports; the others are named", () => {
  const host = { host: "a", address: "a", status: "changed", rebooted: false, notes: [], tasks: [], durationMs: 5 };
  const rows = fleetStatus(["a", "b"], new Map(), [
    msg(1, "reports.a.result", {
      version: 1,
      outcome: "applied",
      report: { runId: "x", mode: "apply", startedAt: "2026-01-01T00:00:00Z", finishedAt: "2026-01-01T00:00:05Z", hosts: [host] },
    }),
  ]);
  const { run, missing } = fleetRun(rows);
  assert.deepEqual(missing, ["b"]);
  assert.equal(run?.hosts.length, 1);
  assert.equal(run?.hosts[0].host, "a");
  assert.equal(fleetRun(rows.filter((r) => r.device === "b")).run, null);
});
