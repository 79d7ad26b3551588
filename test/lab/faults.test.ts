// Whoever dies, a run is one transaction on the host: the controller SIGKILLed at precise
// points, the management link cut for 60 s, the power cut (QEMU SIGKILLed, on a disk that
// honours flushes). Each time the host ends fully as before (or armed, then reverting by
// itself), the lock is released, and the next run needs no --break-lock; and whatever
// report the controller lived to write says what the host has.
//
// Faults come from outside, into the run users get (no test hook, the same batching): the
// controller runs with --verbose, and a watcher on the guest polls the run's record (the
// manifest of its backups, a file written over its backup) until the batch got to the point;
// then the test SIGKILLs the controller by PID. The batch is one round trip, so the host may
// get a little further before its side of the connection goes: what the tests assert holds
// wherever the batch was cut.
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
/** The same lab with room for a reboot of a guest on a busy machine (and a 60 s link cut): the clean runs are not about the timeout. */
let roomyInventory: string;
let before: string;
const revertTimes: string[] = [];
/** Whether the controller's reports carry each change's outcome (helper engine's work); see assertReportMatchesHost. */
let reportsHaveOutcomes: boolean | undefined;
let reports = 0;

useLab("lab (1 guest, eth0 + real Wi-Fi wlan0, disk honours flushes)", () => startLab({ guests: 1, wifi: true, name: "lab-faults", diskCache: "writeback" }), async (booted, folder) => {
  lab = booted;
  pi = lab.guests[0];
  dir = folder;
  inventory = labInventory(lab, join(dir, "faults.yaml"), {}, { confirm_timeout: CONFIRM });
  roomyInventory = labInventory(lab, join(dir, "clean.yaml"), {}, { confirm_timeout: 180 });
  before = await fileHashes(pi, TOUCHED);
});

const cli = (...args: string[]) => provision(lab.controllerArgv, args);

// ---- the controller, from outside ----------------------------------------------------------

interface Controller {
  pid: number;
  /** Its JSON report (written only if it lives to the end of the run). */
  report: string;
  output(): string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** Resolves with the time the output first matched; rejects when the controller ends first. */
  waitFor(pattern: RegExp): Promise<number>;
  kill(): Promise<void>;
}

/** The real CLI on the eth0+wlan0 playbook, with --verbose (a line per event) and --report. */
function startController(inv: string): Controller {
  const report = join(dir, `report-${++reports}.json`);
  const argv = lab.controllerArgv(["node", CLI, "--inventory", inv, "--verbose", "--report", report, WLAN]);
  const child = spawn(argv[0], argv.slice(1), { cwd: repoRoot, stdio: ["ignore", "pipe", "pipe"] });
  const stop = onCleanup("controller", () => killPid(child.pid, "SIGKILL"));
  let out = "";
  const waiters: Array<() => void> = [];
  const collect = (d: Buffer) => {
    out += d;
    waiters.forEach((w) => w());
  };
  child.stdout!.on("data", collect);
  child.stderr!.on("data", collect);
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.on("close", (code, signal) => {
    stop();
    waiters.forEach((w) => w());
    resolve({ code, signal });
  }));
  let ended = false;
  void exited.then(() => (ended = true));
  return {
    pid: child.pid!,
    report,
    output: () => out,
    exited,
    waitFor: (pattern) => new Promise((resolve, reject) => {
      const check = () => {
        if (pattern.test(out)) resolve(Date.now());
        else if (ended || child.exitCode !== null || child.signalCode !== null) reject(new Error(`the controller ended before ${pattern}:\n${out}`));
      };
      waiters.push(check);
      check();
    }),
    async kill() {
      // `ip netns exec` execs the command: the child is the controller itself
      assert.match(readFileSync(`/proc/${child.pid}/cmdline`, "utf8"), /^node\0/);
      process.kill(child.pid!, "SIGKILL");
      assert.equal((await exited).signal, "SIGKILL");
    },
  };
}

/**
 * Points in the batch, as shell conditions on the guest about the run that holds the lock
 * ($d: its record). A file is written once it differs from its backup (or exists, when
 * it had none).
 */
const AT = {
  /** The first file's backup is on the record: the package install before it finished. */
  packageInstalled: '[ -s "$d/manifest" ]',
  /** /etc/modules and the bonding options are written; /etc/network/interfaces not yet, or only just. */
  betweenTwoFiles: "written /etc/modprobe.d/bonding.conf",
  interfacesWritten: "written /etc/network/interfaces",
};

const watcher = (condition: string) => `written() {
  n=$(awk -F '\\t' -v p="$1" '$3 == p { print $1 }' "$d/manifest" 2>/dev/null)
  [ -n "$n" ] || return 1
  if [ -e "$d/$n" ]; then ! cmp -s "$d/$n" "$1"; else [ -e "$1" ]; fi
}
end=$(( $(date +%s) + 480 )) seen=
while [ "$(date +%s)" -lt "$end" ]; do
  id=$(sed -n 's/.* run=//p' /var/lib/provision/lock 2>/dev/null)
  if [ -n "$id" ]; then
    seen=$id d=/var/lib/provision/runs/$id
    if ${condition}; then echo "run $id"; exit 0; fi
  elif [ -n "$seen" ]; then
    echo "run $seen ended first"; exit 2
  fi
  sleep 0.05
done
exit 1`;

/** Start the run; SIGKILL the controller once the host's batch got to `condition` (see AT). */
async function killAt(ctl: Controller, condition: string): Promise<{ output: string; at: number }> {
  const watched = await pi.ssh(watcher(condition), { timeoutMs: 600_000 });
  assert.equal(watched.code, 0, `the host's batch got to [${condition}]: ${watched.stdout}${watched.stderr}\n${ctl.output()}`);
  await ctl.kill();
  return { output: ctl.output(), at: Date.now() };
}

/** The controller started and killed at a point of the host's batch. */
async function dieAt(condition: string): Promise<{ output: string; at: number }> {
  await pi.waitForSsh();
  const ctl = startController(inventory);
  const killed = await killAt(ctl, condition);
  assertKilledMidBatch(ctl, killed.output);
  return killed;
}

function assertKilledMidBatch(ctl: Controller, output: string): void {
  assert.match(output, /install ifenslave/, `the run sent its batch:\n${output}`);
  assert.doesNotMatch(output, /HOST\s+STATUS/, `the controller died before its summary:\n${output}`);
  assert.equal(existsSync(ctl.report), false, "a killed controller writes no report: it claims nothing");
}

// ---- the host -------------------------------------------------------------------------------

async function hostRecord(): Promise<string> {
  return (await pi.ssh("cd /var/lib/provision && ls; for f in armed lock revert.sh runs/$(cat last)/manifest runs/$(cat last)/state; do [ -e $f ] && echo \"$f $(wc -c < $f)\"; done; ls runs/$(cat last)/undo 2>/dev/null; true")).stdout;
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
}

// ---- the report against the host -------------------------------------------------------------

interface ReportedChange { kind: string; summary: string; path?: string; outcome?: "applied" | "not_applied" | "unknown" }
interface ReportedHost { host: string; status: string; rolledBackBy?: string; tasks: { name: string; changes: ReportedChange[] }[] }

/** path → "sha256 mode owner" (or "absent"), from fileHashes. */
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

/**
 * The controller's JSON report tells the host's truth, read right after the controller
 * ended: a run reported rolled back left every change off the host; a run reported changed
 * has every change on it; and per change (issue 20 §4), a change reported applied is on the
 * host, and a change on the host is reported applied or unknown, never not applied. A
 * change is on the host when its file differs from before the run (writes are atomic: old
 * or new) or, for the install, when ifenslave is installed; other changes the host cannot
 * show afterwards (the reboot) are not compared.
 *
 * GUARD, until helper engine's outcomes are merged: the per-change comparison runs only when
 * the report's changes carry "outcome" (reportsHaveOutcomes); remove the guard then, so
 * that a report without outcomes fails.
 */
async function assertReportMatchesHost(ctl: Controller, label: string): Promise<ReportedHost> {
  assert.ok(existsSync(ctl.report), `${label}: the controller wrote its report:\n${ctl.output()}`);
  const host = (JSON.parse(readFileSync(ctl.report, "utf8")) as { hosts: ReportedHost[] }).hosts.find((h) => h.host === pi.name);
  assert.ok(host, `${label}: the report has ${pi.name}`);
  const changes = host.tasks.flatMap((t) => t.changes);
  assert.ok(changes.length > 0, `${label}: the report lists the run's changes`);
  const now = byPath(await fileHashes(pi, TOUCHED));
  const then = byPath(before);
  const installed = await ifenslaveInstalled();
  const onHost = (c: ReportedChange): boolean | undefined => {
    if (c.kind === "file" && c.path && then.has(c.path)) return now.get(c.path) !== then.get(c.path);
    if (c.kind === "command" && /install ifenslave/.test(c.summary)) return installed;
    return undefined;
  };
  const compared = changes.filter((c) => onHost(c) !== undefined);
  assert.ok(compared.some((c) => c.kind === "file") && compared.some((c) => c.kind === "command"), `${label}: the test can tell where the run's files and its install are: ${JSON.stringify(changes)}`);
  const shown = (c: ReportedChange) => `"${c.summary}" (${c.outcome ?? "no outcome"}, ${onHost(c) ? "on the host" : "not on the host"})`;
  console.log(`report: ${label}: ${host.status}${host.rolledBackBy ? ` by ${host.rolledBackBy}` : ""}; ${compared.map(shown).join(", ")}`);

  if (host.status === "rolled_back") for (const c of compared) assert.equal(onHost(c), false, `${label}: reported rolled back, yet ${shown(c)}`);
  if (host.status === "changed") for (const c of compared) assert.equal(onHost(c), true, `${label}: reported changed, yet ${shown(c)}`);
  reportsHaveOutcomes ??= changes.every((c) => c.outcome !== undefined);
  if (!reportsHaveOutcomes) {
    console.log(`report: ${label}: its changes carry no outcome (helper engine's work not merged): per-change comparison skipped`);
    return host;
  }
  for (const c of changes) assert.match(c.outcome ?? "", /^(applied|not_applied|unknown)$/, `${label}: every change has an outcome: ${JSON.stringify(c)}`);
  if (host.status === "changed") for (const c of changes) assert.equal(c.outcome, "applied", `${label}: a committed run applied ${shown(c)}`);
  if (host.status !== "rolled_back") {
    for (const c of compared) {
      if (c.outcome === "applied") assert.equal(onHost(c), true, `${label}: reported applied, so on the host: ${shown(c)}`);
      if (onHost(c)) assert.notEqual(c.outcome, "not_applied", `${label}: on the host, so applied or unknown: ${shown(c)}`);
    }
  }
  return host;
}

/** After a run that ended (changed, rolled back, or cut off): the host back as before the faults, asserted on the way. */
async function backToBefore(host: ReportedHost, label: string, exit: number | null): Promise<void> {
  if (host.status === "changed") {
    assert.equal(exit, 0);
    const back = await timed(`${label}: provision rollback of the finished run`, () => cli("rollback", "--inventory", inventory, "--limit", pi.name));
    assert.equal(back.code, 0, back.output);
  } else if (host.status === "rolled_back") {
    await pi.ssh("systemctl is-system-running --wait", { timeoutMs: 180_000 });
  } else {
    // the controller gave up: an armed host reverts by itself
    await waitForHostRevert(pi, 6 * 60_000);
  }
  await assertAsBefore(label);
}

// ---- the faults ---------------------------------------------------------------------------------

for (const [label, condition] of [
  ["controller killed after the package install", AT.packageInstalled],
  ["controller killed between two files", AT.betweenTwoFiles],
  ["controller killed after /etc/network/interfaces", AT.interfacesWritten],
] as const) {
  test(`${label}: the host reverts every file and the package by itself, and releases the lock`, async () => {
    const { at, output } = await timed(`${label}: run until killed`, () => dieAt(condition));
    assert.match(output, /arming host-side revert before the first change/);
    const record = await hostRecord();
    console.log(`${label}: record when the controller died:\n${record}`);
    assert.match(record, /^armed \d+$/m, `armed when the controller died:\n${record}`);
    assert.match(record, /0000-safe/, `the package install is on the host's record:\n${record}`);
    await timed(`${label}: wait for the host's revert`, () => revertedAfter(label, at));
  });
}

test("the management link cut for 60 s mid-apply: the run finishes or rolls back completely, and its report says which", async () => {
  await pi.waitForSsh();
  const ctl = startController(inventory);
  const cutAt = await ctl.waitFor(/load bonding at boot/);
  await timed("link cut: both NICs down for 60 s", async () => {
    await pi.setLink("eth0", false);
    await pi.setLink("airlink", false); // the access point's uplink: the Wi-Fi path is cut too
    await sleep(60_000);
    await pi.setLink("eth0", true);
    await pi.setLink("airlink", true);
  });
  const { code: exit } = await timed("link cut: the run ends", () => ctl.exited);
  const out = ctl.output();
  const row = summary(out).pi1;
  console.log(`link cut: controller exited ${exit} (${row?.status}) ${((Date.now() - cutAt) / 1000).toFixed(0)}s after the cut; ${/error: .*/.exec(out)?.[0] ?? "no error"}`);
  assert.ok(row, out);
  assert.doesNotMatch(out, /rollback failed/);
  await pi.waitForSsh();
  const host = await assertReportMatchesHost(ctl, "link cut");
  if (row.status === "changed") assert.equal(exit, 0, out);
  else {
    assert.match(row.status, /^rolled back/, out);
    revertTimes.push(`link cut 60 s: ${row.status}, controller done ${((Date.now() - cutAt) / 1000).toFixed(0)}s after the cut`);
  }
  await backToBefore(host, "link cut", exit);
});

for (const [label, point] of [
  ["power cut right after /etc/network/interfaces is written", AT.interfacesWritten],
  ["power cut at the reboot task (every file written)", null],
] as const) {
  test(`${label}: after power-on the host is old, or armed and reverts by itself; never a mix`, async () => {
    await timed(`${label}: run until the point`, async () => {
      await pi.waitForSsh();
      const ctl = startController(inventory);
      // every file is written once the controller announces the reboot task (it does after its batch returned)
      if (point === null) {
        await ctl.waitFor(/Reboot into the bond and verify it: reboot/);
        await ctl.kill();
      } else await killAt(ctl, point);
      assertKilledMidBatch(ctl, ctl.output());
    });
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
  const { code: exit } = await timed(`${label}: the run ends`, () => ctl.exited);
  const out = ctl.output();
  console.log(`${label}: controller exited ${exit} ${((Date.now() - cutAt) / 1000).toFixed(0)}s after the cut; ${/error: .*/.exec(out)?.[0] ?? "no error"}`);
  assert.ok(summary(out).pi1, out);
  assert.doesNotMatch(out, /rollback failed|up to 0s|within 0s/, out);
  await pi.waitForSsh();
  const host = await assertReportMatchesHost(ctl, label);
  await backToBefore(host, label, exit);
});

test("a link cut mid-batch, then a blip after the reboot: the run ends committed", async (t) => {
  // needs helper engine's reconnect budget per lost connection (issue 20 §4), which comes with the reports' outcomes
  if (!reportsHaveOutcomes) return t.skip("needs the controller's reconnect budget per incident (helper engine's work): the reports carry no outcomes yet");
  const label = "link cut, then a blip after the reboot";
  await pi.waitForSsh();
  const ctl = startController(roomyInventory);
  const cutAt = await ctl.waitFor(/load bonding at boot/);
  const bothLinks = async (up: boolean) => {
    await pi.setLink("eth0", up);
    await pi.setLink("airlink", up);
  };
  await timed(`${label}: both NICs down for 60 s mid-batch`, async () => {
    await bothLinks(false);
    await sleep(60_000);
    await bothLinks(true);
  });
  await ctl.waitFor(/back after reboot at/);
  // long enough for the controller's SSH keepalive (3 × 5 s) to give the connection up
  await timed(`${label}: both NICs down for 20 s after the reboot`, async () => {
    await sleep(2000);
    await bothLinks(false);
    await sleep(20_000);
    await bothLinks(true);
  });
  const { code: exit } = await timed(`${label}: the run ends`, () => ctl.exited);
  const out = ctl.output();
  console.log(`${label}: controller exited ${exit} ${((Date.now() - cutAt) / 1000).toFixed(0)}s after the first cut; ${/error: .*/.exec(out)?.[0] ?? "no error"}`);
  assert.equal(summary(out).pi1?.status, "changed", out);
  assert.equal(exit, 0, out);
  assert.doesNotMatch(out, /up to 0s|within 0s/, out);
  const host = await assertReportMatchesHost(ctl, label);
  assert.equal((await pi.ssh("cat /var/lib/provision/runs/$(cat /var/lib/provision/last)/state")).stdout.trim(), "committed");
  assert.equal(await ourTimers(pi), "", "committed: nothing left armed");
  await backToBefore(host, label, exit);
});

test("after every fault, the next run needs no --break-lock and finishes cleanly, as its report says", async () => {
  await pi.waitForSsh();
  const ctl = startController(roomyInventory);
  const { code } = await timed("clean run after the faults", () => ctl.exited);
  assert.equal(code, 0, ctl.output());
  assert.equal(summary(ctl.output()).pi1.status, "changed", ctl.output());
  assert.equal(await ourTimers(pi), "");
  await assertReportMatchesHost(ctl, "clean run");
  console.log(`faults: ${revertTimes.join("; ")}`);
});
