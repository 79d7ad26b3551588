// The pure parts of a run's host-side safety: when to arm, which locks are stale, the host record.
import { test } from "node:test";
import assert from "node:assert/strict";
import { armingFor } from "../../core/run/engine.js";
import { spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { lastTransactionProbe, parseHostRecord, parseLockRefusal, staleLockReason, LOCK_LEASE_SECONDS } from "../../core/run/transaction.js";
import type { Change } from "../../core/module-api.js";

const file = (extra: Partial<Change> = {}): Change => ({ kind: "file", path: "/etc/x", before: null, after: "x", summary: "x", ...extra }) as Change;

test("a run is armed before its first write when anything takes effect at a reboot or can cut the management path", () => {
  assert.equal(armingFor([{ changes: [file()] }, { changes: [] }]), null, "plain file changes: no arming");
  assert.equal(armingFor([{ changes: [file()] }, { changes: [file({ reboot: true })] }]), "wanted", "a change that takes effect at boot");
  assert.equal(armingFor([{ changes: [file()] }, { changes: [{ kind: "reboot", timeoutSeconds: 600, summary: "reboot" }] }]), "required", "a reboot task");
  assert.equal(armingFor([{ changes: [{ kind: "command", argv: ["x"], summary: "x", disruptive: true }] }]), "required", "a disruptive change");
});

test("a lock is taken over only when its holder is provably gone, never while its run is armed", () => {
  const here = { hostname: "ctl", pidAlive: (pid: number) => pid === 42, leaseSeconds: LOCK_LEASE_SECONDS };
  const lock = (holder: string, age = 10, state = "pending", armed: string | null = null) => ({ holder, ageSeconds: age, holderState: state, armedRun: armed });
  const mine = (pid: number) => `controller=ctl pid=${pid} since=2026-01-01T00:00:00Z run=r1`;
  assert.equal(staleLockReason(lock(mine(42)), here), null, "a live controller on this machine");
  assert.match(staleLockReason(lock(mine(7)), here)!, /controller process 7 on ctl is gone/);
  assert.equal(staleLockReason(lock("controller=other pid=7 since=x run=r1"), here), null, "another machine's pid says nothing");
  assert.match(staleLockReason(lock("controller=other pid=7 since=x run=r1", LOCK_LEASE_SECONDS + 1), here)!, /not renewed for \d+s/);
  assert.match(staleLockReason(lock("controller=other pid=7 since=x run=r1", 5, "reverted"), here)!, /run r1 has ended \(reverted\)/);
  assert.match(staleLockReason(lock(""), here)!, /empty lock/);
  assert.equal(staleLockReason(lock(mine(7), 10, "pending", "r1"), here), null, "armed: the host reverts it and releases the lock");
  assert.deepEqual(parseLockRefusal("controller=a pid=1 since=x run=r\n12\npending\n-\n"), {
    holder: "controller=a pid=1 since=x run=r",
    ageSeconds: 12,
    holderState: "pending",
    armedRun: null,
  });
});

test("the host record: last transaction and lock", () => {
  assert.deepEqual(parseHostRecord("- - -\n"), { last: null, lock: null });
  assert.deepEqual(parseHostRecord("r1 pending r1\nlock controller=a pid=1 since=x run=r1\n"), {
    last: { id: "r1", state: "pending", armed: true },
    lock: "controller=a pid=1 since=x run=r1",
  });
  assert.deepEqual(parseHostRecord("r1 committed -\nlock \n"), { last: { id: "r1", state: "committed", armed: false }, lock: "" });
});

test("the audit's probe reports the lock with shell builtins, even with no transaction recorded", () => {
  const base = mkdtempSync(join(tmpdir(), "record-"));
  const probe = () => {
    const argv = [...lastTransactionProbe.command.slice(0, -1), base];
    return parseHostRecord(spawnSync(argv[0], argv.slice(1), { encoding: "utf8" }).stdout);
  };
  try {
    assert.deepEqual(probe(), { last: null, lock: null });
    writeFileSync(join(base, "lock"), "controller=a pid=1 since=x run=r1\n");
    assert.deepEqual(probe(), { last: null, lock: "controller=a pid=1 since=x run=r1" });
    writeFileSync(join(base, "lock"), "");
    assert.deepEqual(probe(), { last: null, lock: "" }, "an empty lock is still a lock");
  } finally {
    rmSync(base, { recursive: true });
  }
});
