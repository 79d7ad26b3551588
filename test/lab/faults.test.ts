// Whoever dies, a run is one transaction on the host: the controller SIGKILLed at precise
// points, the management link cut for 60 s, the power cut (QEMU SIGKILLed, on a disk that
// honours flushes). Each time the host ends fully as before (or armed, then reverting by
// itself), the lock is released, and the next run needs no --break-lock. Every run writes a
// --report: a killed controller writes none (it claims nothing), and the report of every run
// that lived to the end says per change what the host has (issue 20 §4).
//
// Precise points: the test watches the controller's progress and the host's record and
// SIGKILLs the controller by its PID once the change is on the host (no hook in the engine).
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { startLab, type Guest, type Lab } from "./lab.js";
import { fileHashes, labInventory, ourTimers, sleep, timed, TOUCHED, useLab, waitForHostRevert } from "./e2e-support.js";
import { CLI, provision, summary } from "../integration/provision-cli.js";
import { repoRoot } from "../support/cache.js";
import { killPid, onCleanup } from "../support/processes.js";

const WLAN = join(repoRoot, "playbooks/bond-eth0-wlan0.yaml");
const CONFIRM = 50;
let lab: Lab;
let pi: Guest;
let dir: string;
let inventory: string;
/** The same lab with room for a reboot of a guest on a busy machine: the clean run and the link cut are not about the timeout. */
let roomyInventory: string;
let before: string;
const revertTimes: string[] = [];
let reports = 0;

useLab(
  "lab (1 guest, eth0 + real Wi-Fi wlan0, disk honours flushes)",
  () => startLab({ guests: 1, wifi: true, name: "lab-faults", diskCache: "writeback" }),
  async (booted, folder) => {
    lab = booted;
    pi = lab.guests[0];
    dir = folder;
    inventory = labInventory(lab, join(dir, "faults.yaml"), {}, { confirm_timeout: CONFIRM });
    roomyInventory = labInventory(lab, join(dir, "clean.yaml"), {}, { confirm_timeout: 180 });
    before = await fileHashes(pi, TOUCHED);
  },
);

const cli = (...args: string[]) => provision(lab.controllerArgv, args);

/** What the host's record shows once a change is on it: the point where the test kills the controller. */
const RECORDED = {
  "install ifenslave": 'test -e "runs/$(cat last)/undo/0000-safe"',
  "set bonding options": 'grep -q /etc/modprobe.d/ "runs/$(cat last)/manifest"',
  "configure bond0": 'grep -q /etc/network/interfaces "runs/$(cat last)/manifest"',
  "to dhcpcd": 'grep -q /etc/dhcpcd.conf "runs/$(cat last)/manifest"',
} as const;

interface Controller {
  /** Where it writes its JSON report (only if it lives to the end of the run). */
  report: string;
  output(): string;
  exited: Promise<number | null>;
  /** Resolves with the time the output first matches; rejects if the controller ends first. */
  waitFor(pattern: RegExp): Promise<number>;
  kill(): Promise<void>;
}

/** The real CLI on the eth0+wlan0 playbook as users run it: --verbose (a line per event) and --report. */
function startController(inv: string): Controller {
  const report = join(dir, `report-${++reports}.json`);
  const argv = lab.controllerArgv(["node", CLI, "--inventory", inv, "--verbose", "--report", report, WLAN]);
  const child = spawn(argv[0], argv.slice(1), { cwd: repoRoot, stdio: ["ignore", "pipe", "pipe"] });
  const stop = onCleanup("controller", () => killPid(child.pid, "SIGKILL"));
  let out = "";
  const listeners = new Set<() => void>();
  const collect = (d: Buffer) => {
    out += d;
    listeners.forEach((l) => l());
  };
  child.stdout.on("data", collect);
  child.stderr.on("data", collect);
  let ended = false;
  const exited = new Promise<number | null>((resolve) =>
    child.on("close", (code) => {
      ended = true;
      stop();
      listeners.forEach((l) => l());
      resolve(code);
    }),
  );
  return {
    report,
    output: () => out,
    exited,
    waitFor: (pattern) =>
      new Promise((resolve, reject) => {
        const check = () => {
          if (pattern.test(out)) resolve(Date.now());
          else if (ended) reject(new Error(`the controller ended before ${pattern}:\n${out}`));
          else return;
          listeners.delete(check);
        };
        listeners.add(check);
        check();
      }),
    async kill() {
      process.kill(child.pid!, "SIGKILL");
      await exited;
    },
  };
}

/**
 * The controller, SIGKILLed by the test (by its PID) once its progress names `point` and the
 * host's record shows that change: the batching is the one users get, the fault comes from outside.
 */
async function dieAfter(point: keyof typeof RECORDED): Promise<{ output: string; at: number }> {
  await pi.waitForSsh();
  const ctl = startController(inventory);
  const deadline = Date.now() + 300_000;
  let recorded = false;
  let alive = true;
  void ctl.exited.then(() => (alive = false));
  while (!recorded && Date.now() < deadline && alive) {
    if (ctl.output().includes(point)) recorded = (await pi.ssh(`cd /var/lib/provision && ${RECORDED[point]}`)).code === 0;
    if (!recorded) await sleep(100);
  }
  assert.ok(recorded, `the run reached "${point}" and the host recorded it:\n${ctl.output()}`);
  await ctl.kill();
  const output = ctl.output();
  assert.doesNotMatch(output, /HOST\s+STATUS/, `the controller died before its summary:\n${output}`);
  assert.equal(existsSync(ctl.report), false, "a killed controller writes no report: it claims nothing");
  return { output, at: Date.now() };
}

async function hostRecord(): Promise<string> {
  return (
    await pi.ssh(
      'cd /var/lib/provision && ls; for f in armed lock revert.sh runs/$(cat last)/manifest runs/$(cat last)/state; do [ -e $f ] && echo "$f $(wc -c < $f)"; done; ls runs/$(cat last)/undo 2>/dev/null; true',
    )
  ).stdout;
}

async function ifenslaveInstalled(): Promise<boolean> {
  return (await pi.ssh("dpkg-query -W -f='${Status}' ifenslave")).stdout.includes("install ok installed");
}

/** Fully as before the run: files byte-identical, ifenslave gone, nothing armed, no lock. */
async function assertAsBefore(label: string): Promise<void> {
  assert.equal(await fileHashes(pi, TOUCHED), before, `${label}: every file is byte-identical to before`);
  assert.equal(await ifenslaveInstalled(), false, `${label}: ifenslave was removed`);
  assert.equal(await ourTimers(pi), "", `${label}: nothing left armed`);
  assert.equal((await pi.ssh("test -e /var/lib/provision/lock")).code, 1, `${label}: the lock is released`);
}

/** What the guest's journal says about provision's units and the boots: printed after each fault. */
async function journal(label: string): Promise<void> {
  const r = await pi.ssh("journalctl --list-boots --no-pager | tail -4; journalctl -q --no-pager -o short-monotonic -u 'provision-revert*' | tail -12", { timeoutMs: 20_000 });
  console.log(`journal after ${label}:\n${r.stdout}${r.stderr}`);
}

async function revertedAfter(label: string, from: number): Promise<void> {
  await waitForHostRevert(pi, 6 * 60_000);
  await journal(label);
  const s = ((Date.now() - from) / 1000).toFixed(0);
  revertTimes.push(`${label}: host reverted and answering ${s}s after the fault`);
  console.log(`revert: ${label}: ${s}s (confirm_timeout ${CONFIRM}s)`);
  await assertAsBefore(label);
  // what users are told afterwards: the run reverted, nothing armed, no lock
  const status = await cli("status", "--inventory", inventory, "--limit", pi.name);
  assert.equal(status.code, 0, status.output);
  assert.match(status.stdout, new RegExp(`^${pi.name}\\s+\\S+\\s+reverted\\s+no\\s+-$`, "m"), `${label}: provision status tells the truth:\n${status.stdout}`);
}

// ---- the report against the host -------------------------------------------------------------

/** A change as the JSON report shows it (core/report/changes.ts: ShownChange); its summary starts with its symbol. */
interface ReportedChange {
  kind: string;
  summary: string;
  path?: string;
  outcome?: string;
}
interface ReportedHost {
  host: string;
  status: string;
  rolledBackBy?: string;
  error?: string;
  tasks: { name: string; changes: ReportedChange[] }[];
}

/** path → "sha256 mode owner" or "absent", from fileHashes. */
function byPath(hashes: string): Map<string, string> {
  const lines = hashes.trim().split("\n");
  const map = new Map<string, string>();
  for (let i = 0; i < lines.length; i++) {
    const absent = /^absent (\S+)$/.exec(lines[i]);
    if (absent) map.set(absent[1], "absent");
    else {
      const [sum, path] = lines[i].split(/\s+/);
      map.set(path, `${sum} ${lines[++i]}`);
    }
  }
  return map;
}

/** The state of the host's last run (pending, committed, rolled_back, reverting, reverted). */
async function lastRunState(): Promise<string> {
  return (await pi.ssh("cat /var/lib/provision/runs/$(cat /var/lib/provision/last)/state")).stdout.trim();
}

/**
 * The run's JSON report tells the host's truth, read right after the controller ended. Each
 * change has an outcome; a run reported changed is committed on the host with every change
 * on it; a run reported rolled back left none on it; otherwise a change reported applied is
 * on the host (unless the host is already reverting the run by itself: then the report
 * claims no more than the host confirmed), and a change on the host is reported applied or
 * unknown, never not applied. A file is on the host when it differs from before the run
 * (writes are atomic: old or new); the install, when ifenslave is installed. Every touched
 * file that differs from before must be a change of the report.
 */
async function assertReportMatchesHost(ctl: Controller, label: string): Promise<ReportedHost> {
  assert.ok(existsSync(ctl.report), `${label}: the controller wrote its report:\n${ctl.output()}`);
  await pi.waitForSsh({ timeoutMs: 300_000 });
  const host = (JSON.parse(readFileSync(ctl.report, "utf8")) as { hosts: ReportedHost[] }).hosts.find((h) => h.host === pi.name);
  assert.ok(host, `${label}: the report has ${pi.name}`);
  const changes = host.tasks.flatMap((t) => t.changes);
  const [now, then, installed, state] = [byPath(await fileHashes(pi, TOUCHED)), byPath(before), await ifenslaveInstalled(), await lastRunState()];
  const onHost = (change: ReportedChange): boolean | undefined => {
    if (change.kind === "file" && change.path && then.has(change.path)) return now.get(change.path) !== then.get(change.path);
    if (change.kind === "command" && /install ifenslave/.test(change.summary)) return installed;
    return undefined; // the reboot, a pending change: nothing on the host to compare
  };
  const shown = (c: ReportedChange) =>
    `"${c.summary}" (${c.outcome ?? "no outcome"}, ${onHost(c) === undefined ? "not comparable" : onHost(c) ? "on the host" : "not on the host"})`;
  console.log(`report: ${label}: ${host.status}${host.rolledBackBy ? ` by ${host.rolledBackBy}` : ""}, host's run ${state}; ${changes.map(shown).join(", ") || "no changes"}`);

  for (const c of changes) assert.match(c.outcome ?? "", /^(applied|not_applied|unknown)$/, `${label}: every change has an outcome: ${shown(c)}`);
  const compared = changes.filter((c) => onHost(c) !== undefined);
  if (host.status === "changed") {
    assert.equal(state, "committed", `${label}: reported changed, so committed on the host`);
    for (const c of changes) assert.equal(c.outcome, "applied", `${label}: a committed run applied ${shown(c)}`);
    for (const c of compared) assert.equal(onHost(c), true, `${label}: reported changed, yet ${shown(c)}`);
  } else if (host.status === "rolled_back") {
    assert.match(state, /^(rolled_back|reverted)$/, `${label}: reported rolled back, so undone on the host`);
    for (const c of compared) assert.equal(onHost(c), false, `${label}: reported rolled back, yet ${shown(c)}`);
  } else {
    const hostUndoing = /^(reverting|reverted|rolled_back)$/.test(state);
    for (const c of compared) {
      if (c.outcome === "applied" && !hostUndoing) assert.equal(onHost(c), true, `${label}: reported applied, so on the host: ${shown(c)}`);
      if (onHost(c)) assert.notEqual(c.outcome, "not_applied", `${label}: on the host, so applied or unknown: ${shown(c)}`);
    }
    if (installed)
      assert.ok(
        compared.some((c) => c.kind === "command" && c.outcome !== "not_applied"),
        `${label}: ifenslave is installed, so its install is reported`,
      );
  }
  for (const [path, hash] of now) {
    if (hash === then.get(path)) continue;
    const reported = changes.find((c) => c.path === path);
    assert.ok(
      reported && reported.outcome !== "not_applied",
      `${label}: ${path} differs on the host, so the report has it applied or unknown: ${reported ? shown(reported) : "not reported"}`,
    );
  }
  return host;
}

/** After a run that ended: the host back as before the faults (a committed run rolled back, an armed one reverting by itself), asserted. */
async function backToBefore(label: string, state: string): Promise<void> {
  if (state === "committed") {
    const back = await timed(`${label}: provision rollback of the finished run`, () => cli("rollback", "--inventory", roomyInventory, "--limit", pi.name));
    assert.equal(back.code, 0, back.output);
  } else if (state === "pending" || state === "reverting") {
    await timed(`${label}: wait for the host's revert`, () => waitForHostRevert(pi, 6 * 60_000));
  }
  await pi.ssh("systemctl is-system-running --wait", { timeoutMs: 180_000 });
  await assertAsBefore(label);
}

for (const [label, point] of [
  ["controller killed after the package install", "install ifenslave"],
  ["controller killed between two files", "set bonding options"],
  ["controller killed after /etc/network/interfaces", "configure bond0"],
] as const) {
  test(`${label}: the host reverts every file and the package by itself, and releases the lock`, async () => {
    const { at, output } = await timed(`${label}: run until killed`, () => dieAfter(point));
    assert.match(output, /arming host-side revert before the first change/);
    const record = await hostRecord();
    assert.match(record, /^armed \d+$/m, `armed when the controller died:\n${record}`);
    assert.match(record, /0000-safe/, `the package install is on the host's record:\n${record}`);
    await timed(`${label}: wait for the host's revert`, () => revertedAfter(label, at));
  });
}

test("the management link cut for 60 s mid-apply, then a blip after the reboot: the controller rides out both and the run ends committed, as its report says", async () => {
  const label = "link cut, then a blip after the reboot";
  await pi.waitForSsh();
  // room for the reboot and the blip: what is tested is the reconnecting, not the timeout
  const ctl = startController(roomyInventory);
  const cutAt = await ctl.waitFor(/load bonding at boot/);
  const bothLinks = async (up: boolean) => {
    await pi.setLink("eth0", up);
    await pi.setLink("airlink", up); // the access point's uplink: the Wi-Fi path is cut too
  };
  await timed("link cut: both NICs down for 60 s", async () => {
    await bothLinks(false);
    await sleep(60_000);
    await bothLinks(true);
  });
  // the confirm step after the reboot: a blip long enough for the controller's SSH keepalive (3 × 5 s) to drop the connection
  const rebooted = await ctl.waitFor(/back after reboot at/).then(
    () => true,
    () => false, // the run ended before a reboot
  );
  if (rebooted)
    await timed(`${label}: both NICs down for 20 s right after the reboot`, async () => {
      await sleep(2000);
      await bothLinks(false);
      await sleep(20_000);
      await bothLinks(true);
    });
  const exit = await timed("link cut: the run ends", () => ctl.exited);
  const out = ctl.output();
  const row = summary(out).pi1;
  console.log(
    `${label}: controller exited ${exit} (${row?.status}) ${((Date.now() - cutAt) / 1000).toFixed(0)}s after the cut; blip after a reboot: ${rebooted ? "yes" : "no (the run ended before)"}; ${/error: .*/.exec(out)?.[0] ?? "no error"}`,
  );
  console.log(
    `${label}: the controller's account:\n${out
      .split("\n")
      .filter((l) => /reconnect|lost|reboot|verifying|rolling back|failed/.test(l))
      .join("\n")}`,
  );
  assert.ok(row, out);
  assert.doesNotMatch(out, /rollback failed|up to 0s|within 0s/);
  const host = await assertReportMatchesHost(ctl, label);
  // the controller reconnects through both: a good run is committed, not rolled back
  assert.equal(host.status, "changed", `${label}: the cut and the blip are ridden out, the run committed:\n${out}`);
  assert.equal(exit, 0, out);
  assert.equal(await ourTimers(pi), "", "committed: nothing left armed");
  revertTimes.push(`link cut 60 s + blip: ${row.status}, controller done ${((Date.now() - cutAt) / 1000).toFixed(0)}s after the cut`);
  await backToBefore(label, await lastRunState());
});

for (const [label, point] of [
  ["power cut right after /etc/network/interfaces is written", "configure bond0"],
  ["power cut at the reboot task (every file written)", "to dhcpcd"],
] as const) {
  test(`${label}: after power-on the host is old, or armed and reverts by itself; never a mix`, async () => {
    await timed(`${label}: run until the point`, () => dieAfter(point));
    pi.powerCut();
    const cutAt = Date.now();
    await sleep(1000);
    const bootMs = await timed(`${label}: power on`, () => pi.powerOn());
    const record = await hostRecord();
    const hashes = await fileHashes(pi, TOUCHED);
    console.log(`${label}: booted in ${(bootMs / 1000).toFixed(0)}s; record:\n${record}`);
    if (hashes !== before) {
      assert.match(record, /^armed [1-9]\d*$/m, `files changed, so the host must be armed:\n${record}`);
      for (const f of ["revert.sh", "manifest", "state"]) assert.match(record, new RegExp(`${f} [1-9]\\d*$`, "m"), `${f} survived the power cut:\n${record}`);
      assert.doesNotMatch(hashes, /e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855/, "no file is empty (sha256 of nothing)");
    }
    await timed(`${label}: wait for the host's revert`, () => revertedAfter(label, cutAt));
  });
}

test("power cut 1.2 s into the batch while the controller runs on: its report matches the host", async () => {
  const label = "power cut under a live controller";
  await pi.waitForSsh();
  const ctl = startController(inventory);
  await ctl.waitFor(/arming host-side revert before the first change/);
  await sleep(1200);
  pi.powerCut();
  const cutAt = Date.now();
  await sleep(1000);
  await timed(`${label}: power on`, () => pi.powerOn());
  const exit = await timed(`${label}: the run ends`, () => ctl.exited);
  const out = ctl.output();
  console.log(`${label}: controller exited ${exit} ${((Date.now() - cutAt) / 1000).toFixed(0)}s after the cut; ${/error: .*/.exec(out)?.[0] ?? "no error"}`);
  assert.ok(summary(out).pi1, out);
  assert.doesNotMatch(out, /rollback failed|up to 0s|within 0s/);
  await assertReportMatchesHost(ctl, label);
  await backToBefore(label, await lastRunState());
});

test("after every fault, the next run needs no --break-lock and finishes cleanly, as its report says", async () => {
  await pi.waitForSsh();
  const ctl = startController(roomyInventory);
  const code = await timed("clean run after the faults", () => ctl.exited);
  assert.equal(code, 0, ctl.output());
  assert.equal(summary(ctl.output()).pi1.status, "changed", ctl.output());
  assert.equal(await ourTimers(pi), "");
  await assertReportMatchesHost(ctl, "clean run");
  console.log(`faults: ${revertTimes.join("; ")}`);
});
