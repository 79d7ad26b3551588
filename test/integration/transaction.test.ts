// A run's host-side record on real sshd hosts: the undo of a command is on the host before
// the command runs, a controller that died leaves a lock that the next one takes over
// (reported), and --check / status say when a host is locked or a run was left pending.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { hostname, tmpdir } from "node:os";
import { join } from "node:path";
import { stringify } from "yaml";
import { startFleet, type TestFleet, type TestHost } from "../support/sshd-hosts.js";
import { killPid, onCleanup, removeOnCleanup, run } from "../support/processes.js";
import { repoRoot } from "../support/cache.js";
import { CLI, provision, summary, WIFI_VARS } from "./provision-cli.js";

let fleet: TestFleet;
let dir: string;
let inventory: string;
const WLAN = join(repoRoot, "playbooks/bond-eth0-wlan0.yaml");
const LOST_ANSWER_CLI = join(repoRoot, "dist", "test", "support", "lost-answer-cli.js");
const cli = (...args: string[]) => provision(fleet.controllerArgv, args);
const host = (i: number): TestHost => fleet.hosts[i];
const sh = (h: TestHost, script: string) => fleet.exec(h, ["sh", "-c", script]);
const delay = (ms: number) => new Promise((r) => setTimeout(r, ms));
const dpkgStatus = async (h: TestHost) => (await fleet.exec(h, ["dpkg-query", "-W", "-f", "${Status}", "ifenslave"])).stdout;

before(async () => {
  fleet = await startFleet({ count: 2, prefix: "tx" });
  dir = mkdtempSync(join(tmpdir(), "provision-transaction-"));
  removeOnCleanup(dir);
  inventory = join(dir, "hosts.yaml");
  writeFileSync(
    inventory,
    stringify({
      all: {
        vars: { user: "root", identity_file: fleet.identityFile, known_hosts_file: fleet.knownHostsFile, bond_gateway: fleet.bridgeAddress, ...WIFI_VARS },
        children: { pis: { hosts: Object.fromEntries(fleet.hosts.map((h) => [h.name, { address: h.address, bond_address: `${h.address}/24` }])) } },
      },
    }),
  );
});

after(async () => {
  await fleet?.stop();
});

/**
 * Start the CLI, and SIGKILL it (by PID) from outside once its batch is on the host: the
 * progress line of the install is out and the host has recorded the install's undo. Where
 * exactly the batch got by then (the install running, done, or the files after it) is up to
 * the timing; what follows must hold for every point.
 */
async function killMidBatch(h: TestHost, args: string[]): Promise<{ stdout: string; signal: NodeJS.Signals | null }> {
  const argv = fleet.controllerArgv(["node", CLI, ...args]);
  const child = spawn(argv[0], argv.slice(1), { cwd: repoRoot, stdio: ["ignore", "pipe", "pipe"] });
  const stop = onCleanup("killed controller", () => killPid(child.pid, "SIGKILL"));
  let stdout = "";
  child.stdout!.on("data", (d) => (stdout += d));
  child.stderr!.resume();
  const exited = new Promise<NodeJS.Signals | null>((resolve) => child.on("close", (_code, signal) => resolve(signal)));
  const deadline = Date.now() + 120_000;
  let recorded = false;
  while (!recorded && Date.now() < deadline && child.exitCode === null) {
    if (/install ifenslave/.test(stdout)) recorded = (await sh(h, "ls /var/lib/provision/runs/*/undo/0000-safe")).code === 0;
    if (!recorded) await delay(50);
  }
  assert.ok(recorded, `the run never got to the install (exit ${child.exitCode}):\n${stdout}`);
  // `ip netns exec` execs the command: the child is the controller itself
  assert.match(readFileSync(`/proc/${child.pid}/cmdline`, "utf8"), /^node\0/);
  process.kill(child.pid!, "SIGKILL");
  const signal = await exited;
  stop();
  return { stdout, signal };
}

/** The host's batch may still be running after its controller died: wait until apt and dpkg are done. */
async function waitForPackageTools(h: TestHost): Promise<void> {
  for (const end = Date.now() + 120_000; Date.now() < end; await delay(200)) {
    const busy = await sh(h, "for p in /proc/[0-9]*/comm; do cat \"$p\" 2>/dev/null; done | grep -Eqx 'apt-get|dpkg|apt|http'");
    if (busy.code !== 0) return;
  }
  assert.fail("apt-get or dpkg still running on the host 120 s after the controller died");
}

test("a controller killed mid-batch, after the install's undo is on the host: the record stays consistent, --check and status report the lock and the pending run, rollback takes the stale lock over and removes the package", async () => {
  const h = host(0);
  const killed = await killMidBatch(h, ["--inventory", inventory, "--limit", h.name, "--skip-tags", "kernel", "--verbose", WLAN]);
  assert.equal(killed.signal, "SIGKILL");
  assert.match(killed.stdout, /install ifenslave/);
  await waitForPackageTools(h);

  const last = (await fleet.exec(h, ["cat", "/var/lib/provision/last"])).stdout.trim();
  assert.equal((await fleet.exec(h, ["cat", `/var/lib/provision/runs/${last}/state`])).stdout, "pending\n", "the run is left pending, whatever step it was in");
  const undo = await fleet.exec(h, ["cat", `/var/lib/provision/runs/${last}/undo/0000-safe`]);
  assert.equal(undo.code, 0, "the undo is recorded as the run's first undo, safe to run before a reboot");
  const argv = undo.stdout.split("\0").filter(Boolean);
  assert.match(argv[5] ?? "", /apt-get purge -y -q -- "\$@"/, "the purge script");
  assert.deepEqual(
    [...argv.slice(0, 5), ...argv.slice(6)],
    ["env", "DEBIAN_FRONTEND=noninteractive", "NEEDRESTART_MODE=a", "sh", "-c", "apt-purge", "ifenslave"],
    "one argv, NUL-separated",
  );
  const lock = (await fleet.exec(h, ["cat", "/var/lib/provision/lock"])).stdout.trim();
  assert.match(lock, new RegExp(`^controller=${hostname()} pid=\\d+ since=\\S+ run=${last}$`), "the dead controller's lock is left");

  const check = await cli("--inventory", inventory, "--limit", h.name, "--skip-tags", "kernel", "--check", WLAN);
  assert.equal(check.code, 2, check.output);
  assert.match(check.stdout, new RegExp(`note: ${h.name}: locked by controller=\\S+ pid=\\d+`), "--check notes the lock in the summary");
  assert.match(check.stdout, new RegExp(`note: ${h.name}: last transaction ${last}: left pending`), "--check reports the run left pending");

  const status = await cli("status", "--inventory", inventory, "--limit", h.name);
  assert.match(status.stdout, new RegExp(`^${h.name}\\s+${last}\\s+pending\\s+no\\s+controller=`, "m"), status.stdout);

  const undone = await cli("rollback", "--inventory", inventory, "--limit", h.name);
  assert.equal(undone.code, 0, undone.output);
  assert.match(undone.stdout, /restored run \S+ \(was pending\); took over a stale lock of controller=\S+ pid=(\d+) .*: its controller process \1 on \S+ is gone/);
  assert.notEqual(await dpkgStatus(h), "install ok installed", "the host's record undid the install (or it never finished)");
  assert.equal((await fleet.exec(h, ["test", "-e", "/var/lib/provision/lock"])).code, 1, "and the lock is released");
  const after = await cli("status", "--inventory", inventory, "--limit", h.name);
  assert.match(after.stdout, new RegExp(`^${h.name}\\s+${last}\\s+rolled_back\\s+no\\s+-$`, "m"), after.stdout);
});

test("a lock not renewed within its lease, or of an ended run, is taken over and reported; a live holder is not", async () => {
  const h = host(1);
  const pb = join(dir, "deny.yaml");
  writeFileSync(pb, "- hosts: pis\n  tasks:\n    - dhcpcd_deny: { interfaces: [eth5] }\n");
  await sh(
    h,
    "mkdir -p /var/lib/provision && echo 'controller=elsewhere pid=123 since=2026-01-01T00:00:00Z run=old' > /var/lib/provision/lock && touch -d '1 hour ago' /var/lib/provision/lock",
  );
  const leased = await cli("--inventory", inventory, "--limit", h.name, pb);
  assert.equal(leased.code, 0, leased.output);
  assert.match(leased.stdout, /took over a stale lock of controller=elsewhere pid=123 .*: it was not renewed for \d+s \(lease 600s\)/);

  await sh(
    h,
    "mkdir -p /var/lib/provision/runs/done && echo committed > /var/lib/provision/runs/done/state && echo 'controller=elsewhere pid=5 since=x run=done' > /var/lib/provision/lock",
  );
  const ended = await cli("--inventory", inventory, "--limit", h.name, pb);
  assert.equal(ended.code, 0, ended.output);
  assert.match(ended.stdout, /took over a stale lock of controller=elsewhere pid=5 since=x run=done: its run done has ended \(committed\)/);

  await sh(h, `echo 'controller=${hostname()} pid=${process.pid} since=x run=live' > /var/lib/provision/lock`);
  const refused = await cli("--inventory", inventory, "--limit", h.name, pb);
  assert.equal(refused.code, 1, refused.output);
  assert.match(refused.stdout, /locked by another run \(controller=\S+ pid=\d+ since=x run=live\).*--break-lock/);
  const status = await cli("status", "--inventory", inventory, "--limit", h.name);
  assert.match(status.stdout, /run=live/, "status names the holder");
  const broken = await cli("--inventory", inventory, "--limit", h.name, "--break-lock", pb);
  assert.equal(broken.code, 0, broken.output);
  assert.equal(summary(broken.stdout)[h.name].status, "ok");
});

test("a failed step: the JSON report says which changes the host confirmed, which it never got, and the text counts them", async () => {
  const h = host(1);
  const pb = join(dir, "outcomes.yaml");
  writeFileSync(
    pb,
    "- hosts: pis\n  tasks:\n    - name: deny eth8\n      dhcpcd_deny: { interfaces: [eth8] }\n    - name: no such package\n      apt: { name: provision-no-such-package }\n    - name: deny eth9\n      dhcpcd_deny: { interfaces: [eth9] }\n",
  );
  const report = join(dir, "outcomes.json");
  const r = await cli("--inventory", inventory, "--limit", h.name, "--report", report, pb);
  assert.equal(r.code, 1, r.output);
  // the rollback restores the file; the install's undo purges only what dpkg installed: here nothing
  assert.equal(summary(r.stdout)[h.name].status, "rolled back", r.stdout);
  assert.equal(await fleet.exec(h, ["grep", "-q", "eth8", "/etc/dhcpcd.conf"]).then((x) => x.code), 1, "the applied change was rolled back");
  const tasks = JSON.parse(readFileSync(report, "utf8")).hosts[0].tasks as { name: string; status: string; changes: { outcome: string }[] }[];
  const outcomes = Object.fromEntries(tasks.map((t) => [t.name, [t.status, ...t.changes.map((c) => c.outcome)]]));
  assert.deepEqual(
    outcomes,
    {
      "deny eth8": ["changed", "applied"],
      "no such package": ["failed", "not_applied"],
      "deny eth9": ["skipped", "not_applied"],
    },
    r.stdout,
  );
  assert.match(r.stdout, /task "no such package" \[apt\]: failed \(1 not applied\)/);
  assert.match(r.stdout, /^changes: 1 applied, 2 not applied\.$/m);
  const status = await cli("status", "--inventory", inventory, "--limit", h.name);
  assert.match(status.stdout, new RegExp(`^${h.name}\\s+\\S+\\s+rolled_back\\s+no\\s+-$`, "m"), "status tells the same: the run was rolled back");
});

test("a batch sent and never answered: every change of it is reported unknown, not made; status tells the host's truth", async () => {
  const h = host(0);
  const report = join(dir, "lost.json");
  const r = await run(fleet.controllerArgv(["node", LOST_ANSWER_CLI, "--inventory", inventory, "--limit", h.name, "--skip-tags", "kernel", "--report", report, WLAN]), {
    cwd: repoRoot,
  });
  assert.equal(r.code, 1, r.stdout + r.stderr);
  const tasks = JSON.parse(readFileSync(report, "utf8")).hosts[0].tasks as { status: string; changes: { outcome: string }[] }[];
  const sent = tasks.filter((t) => t.changes.length);
  assert.ok(sent.length >= 2, r.stdout);
  assert.deepEqual([...new Set(sent.flatMap((t) => t.changes.map((c) => c.outcome)))], ["unknown"], "the controller never heard back: it claims nothing");
  assert.deepEqual([...new Set(sent.map((t) => t.status))], ["failed"]);
  assert.doesNotMatch(r.stdout, /changes? made/);
  assert.match(r.stdout, /^changes: \d+ unknown\.$/m);
  assert.match(r.stdout, /\[unknown: sent, no answer from the host\]/);
  assert.doesNotMatch(r.stdout, /up to 0s|within 0s/);

  assert.equal(await dpkgStatus(h), "install ok installed", "the host did run the batch");
  const status = await cli("status", "--inventory", inventory, "--limit", h.name);
  assert.match(status.stdout, new RegExp(`^${h.name}\\s+\\S+\\s+pending\\s+no\\s+controller=`, "m"), "status: the run is pending and still locked");
  // (its rollback needs a reboot, which these test hosts cannot do: the faults lab proves it)
});
