// Whoever dies, a run is one transaction on the host: the controller SIGKILLed at precise
// points, the management link cut for 60 s, the power cut (QEMU SIGKILLed, on a disk that
// honours flushes). Each time the host ends fully as before (or armed, then reverting by
// itself), the lock is released, and the next run needs no --break-lock.
//
// Precise points: the test watches the controller's progress and the host's record and
// SIGKILLs the controller by its PID once the change is on the host (no hook in the engine).
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
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
let inventory: string;
/** The same lab with room for a reboot of a guest on a busy machine: the clean run is not about the timeout. */
let roomyInventory: string;
let before: string;
const revertTimes: string[] = [];

useLab(
  "lab (1 guest, eth0 + real Wi-Fi wlan0, disk honours flushes)",
  () => startLab({ guests: 1, wifi: true, name: "lab-faults", diskCache: "writeback" }),
  async (booted, dir) => {
    lab = booted;
    pi = lab.guests[0];
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

/**
 * The controller, SIGKILLed by the test (by its PID) once its progress names `point` and the
 * host's record shows that change: the batching is the one users get, the fault comes from outside.
 */
async function dieAfter(point: keyof typeof RECORDED): Promise<{ output: string; at: number }> {
  await pi.waitForSsh();
  const argv = lab.controllerArgv(["node", CLI, "--inventory", inventory, "--verbose", WLAN]);
  const child = spawn(argv[0], argv.slice(1), { cwd: repoRoot, stdio: ["ignore", "pipe", "pipe"] });
  const stop = onCleanup("controller to kill", () => killPid(child.pid, "SIGKILL"));
  let output = "";
  child.stdout!.on("data", (d) => (output += d));
  child.stderr!.on("data", (d) => (output += d));
  const exited = new Promise<void>((resolve) => child.on("close", () => resolve()));
  const deadline = Date.now() + 300_000;
  let recorded = false;
  while (!recorded && Date.now() < deadline && child.exitCode === null) {
    if (output.includes(point)) recorded = (await pi.ssh(`cd /var/lib/provision && ${RECORDED[point]}`)).code === 0;
    if (!recorded) await sleep(100);
  }
  assert.ok(recorded, `the run reached "${point}" and the host recorded it:\n${output}`);
  process.kill(child.pid!, "SIGKILL");
  await exited;
  stop();
  assert.doesNotMatch(output, /HOST\s+STATUS/, `the controller died before its summary:\n${output}`);
  return { output, at: Date.now() };
}

async function hostRecord(): Promise<string> {
  return (
    await pi.ssh(
      'cd /var/lib/provision && ls; for f in armed lock revert.sh runs/$(cat last)/manifest runs/$(cat last)/state; do [ -e $f ] && echo "$f $(wc -c < $f)"; done; ls runs/$(cat last)/undo 2>/dev/null; true',
    )
  ).stdout;
}

/** Fully as before the run: files byte-identical, ifenslave gone, nothing armed, no lock. */
async function assertAsBefore(label: string): Promise<void> {
  assert.equal(await fileHashes(pi, TOUCHED), before, `${label}: every file is byte-identical to before`);
  const pkg = await pi.ssh("dpkg-query -W -f='${Status}' ifenslave");
  assert.ok(!pkg.stdout.includes("install ok installed"), `${label}: ifenslave was removed (${pkg.stdout})`);
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

test("the management link cut for 60 s mid-apply: the run finishes or rolls back completely", async () => {
  await pi.waitForSsh();
  const argv = lab.controllerArgv(["node", CLI, "--inventory", inventory, "--verbose", WLAN]);
  const child = spawn(argv[0], argv.slice(1), { cwd: repoRoot, stdio: ["ignore", "pipe", "pipe"] });
  let out = "";
  child.stderr.on("data", (d) => (out += d));
  const code = new Promise<number>((r) => child.on("close", (c) => r(c ?? 1)));
  const cutAt = await new Promise<number>((resolve, reject) => {
    child.stdout.on("data", (d) => {
      out += d;
      if (/load bonding at boot/.test(out)) resolve(Date.now());
    });
    child.on("close", () => reject(new Error(`the run ended before the cut:\n${out}`)));
  });
  await timed("link cut: both NICs down for 60 s", async () => {
    await pi.setLink("eth0", false);
    await pi.setLink("airlink", false); // the access point's uplink: the Wi-Fi path is cut too
    await sleep(60_000);
    await pi.setLink("eth0", true);
    await pi.setLink("airlink", true);
  });
  const exit = await timed("link cut: the run ends", () => code);
  const row = summary(out).pi1;
  console.log(`link cut: controller exited ${exit} (${row?.status}) ${((Date.now() - cutAt) / 1000).toFixed(0)}s after the cut; ${/error: .*/.exec(out)?.[0] ?? "no error"}`);
  assert.ok(row, out);
  assert.doesNotMatch(out, /rollback failed/);
  if (row.status === "changed") {
    assert.equal(exit, 0, out);
    const back = await timed("link cut: provision rollback of the finished run", () => cli("rollback", "--inventory", inventory, "--limit", "pi1"));
    assert.equal(back.code, 0, back.output);
  } else {
    assert.match(row.status, /^rolled back/, out);
    revertTimes.push(`link cut 60 s: ${row.status}, controller done ${((Date.now() - cutAt) / 1000).toFixed(0)}s after the cut`);
  }
  await assertAsBefore("link cut");
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

test("after every fault, the next run needs no --break-lock and finishes cleanly", async () => {
  await pi.waitForSsh();
  const r = await timed("clean run after the faults", () => cli("--inventory", roomyInventory, WLAN));
  assert.equal(r.code, 0, r.output);
  assert.equal(summary(r.stdout).pi1.status, "changed", r.stdout);
  assert.equal(await ourTimers(pi), "");
  console.log(`faults: ${revertTimes.join("; ")}`);
});
