// The eth0+wlan0 seed on a real kernel: the bond comes up right after a reboot,
// a second run changes nothing, the cable can be pulled, and a bad change rolls back.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { spawn } from "node:child_process";
import { startLab, type Lab, type Guest } from "./lab.js";
import { bondStatus, fileHashes, labInventory, ourTimers, sleep, timed, TOUCHED, useLab } from "./e2e-support.js";
import { provision, summary } from "../integration/provision-cli.js";
import { repoRoot } from "../support/cache.js";

let lab: Lab;
let pi: Guest;
let dir: string;
let inventory: string;
const WLAN = join(repoRoot, "playbooks/bond-eth0-wlan0.yaml");
const cli = (...args: string[]) => provision(lab.controllerArgv, args);

useLab("lab (1 guest, eth0 + wlan0)", () => startLab({ guests: 1, secondNic: "wlan0", name: "lab-wlan" }), (booted, folder) => {
  [lab, dir] = [booted, folder];
  pi = lab.guests[0];
  inventory = labInventory(lab, join(dir, "lab.yaml"));
});

test("the eth0+wlan0 playbook brings the bond up right after a reboot; a second run changes nothing", async () => {
  const bootBefore = await pi.bootId();
  const report = join(dir, "apply.json");
  const first = await timed("apply eth0+wlan0 playbook (apt, modules, interfaces, reboot, verify)", () =>
    cli("--inventory", inventory, WLAN, "--diff", "--report", report));
  assert.equal(first.code, 0, first.output);
  assert.equal(summary(first.stdout).pi1.status, "changed", first.stdout);
  assert.match(first.stdout, /disruptive: "Reboot into the bond and verify it"/, "the plan names the disruptive task and the timeout");
  assert.notEqual(await pi.bootId(), bootBefore, "it rebooted (new boot_id)");

  const status = (await bondStatus(pi))!;
  assert.ok(status, "bond0 exists");
  assert.equal(status.mode, "active-backup");
  assert.deepEqual(status.slaves.map((s) => s.name).sort(), ["eth0", "wlan0"]);
  assert.equal(status.primary, "eth0");
  assert.equal(status.activeSlave, "eth0");
  assert.equal(status.miiStatus, "up");
  assert.ok(status.slaves.every((s) => s.miiStatus === "up"));
  assert.match((await pi.ssh("ip -4 -o addr show dev bond0")).stdout, /inet 10\.77\.0\.11\/24/);
  const json = JSON.parse(readFileSync(report, "utf8"));
  assert.equal(json.hosts[0].rebooted, true);
  assert.ok(json.hosts[0].tasks.find((t: { module: string }) => t.module === "bond").problems.length === 0);
  assert.equal(await ourTimers(pi), "", "happy path: no revert timer, unit or arming left");
  assert.match((await pi.ssh("cat /var/lib/provision/runs/*/state")).stdout, /committed/);
  console.log(`bond up: ${JSON.stringify({ slaves: status.slaves.map((s) => s.name), primary: status.primary, active: status.activeSlave })}`);

  const bootAfter = await pi.bootId();
  const second = await timed("second run", () => cli("--inventory", inventory, WLAN));
  assert.equal(second.code, 0, second.output);
  assert.equal(summary(second.stdout).pi1.changed, 0, second.stdout);
  assert.equal(await pi.bootId(), bootAfter, "no reboot on the second run");
  const check = await cli("--inventory", inventory, WLAN, "--check");
  assert.equal(check.code, 0, check.output);
});

test("pulling eth0's cable: wlan0 takes over without interrupting pings, eth0 comes back as active", async () => {
  const interval = 0.05, count = 240; // 12 s of pings
  const ping = spawn(lab.controllerArgv(["ping", "-n", "-i", String(interval), "-c", String(count), "-W", "1", pi.address])[0],
    lab.controllerArgv(["ping", "-n", "-i", String(interval), "-c", String(count), "-W", "1", pi.address]).slice(1), { stdio: ["ignore", "pipe", "pipe"] });
  let out = "";
  ping.stdout.on("data", (d) => (out += d));
  const done = new Promise((r) => ping.on("close", r));
  await sleep(2000);

  const cut = Date.now();
  await pi.setLink("eth0", false);
  let failoverMs = -1;
  for (let i = 0; i < 100; i++) {
    const s = await bondStatus(pi);
    if (s?.activeSlave === "wlan0") { failoverMs = Date.now() - cut; break; }
    await sleep(100);
  }
  assert.ok(failoverMs >= 0, "wlan0 became the active slave");
  const down = (await bondStatus(pi))!;
  assert.equal(down.slaves.find((s) => s.name === "eth0")?.miiStatus, "down");
  await sleep(3000);
  await pi.setLink("eth0", true);
  let backMs = -1;
  const plugged = Date.now();
  for (let i = 0; i < 100; i++) {
    const s = await bondStatus(pi);
    if (s?.activeSlave === "eth0") { backMs = Date.now() - plugged; break; }
    await sleep(100);
  }
  await done;
  const received = [...out.matchAll(/icmp_seq=(\d+)/g)].length;
  const lost = count - received;
  console.log(`cable pull: failover to wlan0 seen after ${failoverMs} ms (poll includes ssh round trips), back to eth0 after ${backMs} ms; ${lost} of ${count} pings lost (${interval * 1000} ms apart)`);
  assert.ok(backMs >= 0, "eth0 is the active slave again (primary_reselect always)");
  // "Uninterrupted": at most 1 s of missing replies over the cut and the return (20 pings at 50 ms).
  assert.ok(lost <= 20, `lost ${lost} pings, bound 20`);
});

test("a bond that cannot come up right is rolled back: files byte-identical, host reachable at its address", async () => {
  const before = await fileHashes(pi, TOUCHED);
  const bondBefore = await bondStatus(pi);
  const bad = join(dir, "bad.yaml");
  writeFileSync(bad, readFileSync(WLAN, "utf8").replace("slaves: [eth0, wlan0]", "slaves: [eth0, eth7]").replace("interfaces: [eth0, wlan0, bond0]", "interfaces: [eth0, eth7, bond0]"));
  const r = await timed("bad change: apply, reboot, verify fails, restore, reboot", () => cli("--inventory", inventory, bad, "--report", join(dir, "bad.json")));
  assert.equal(r.code, 1, r.output);
  assert.equal(summary(r.stdout).pi1.status, "rolled back", r.stdout);
  assert.match(r.stdout, /slaves are \{eth0\}, want \{eth0, eth7\}/, "the probe saw the missing slave");
  assert.equal(await fileHashes(pi, TOUCHED), before, "every file is byte-identical to before the run");
  const bondAfter = await bondStatus(pi);
  assert.deepEqual(bondAfter?.slaves.map((s) => s.name).sort(), bondBefore?.slaves.map((s) => s.name).sort(), "the bond is back as it was");
  assert.equal(bondAfter?.activeSlave, "eth0");
  assert.equal(await ourTimers(pi), "", "nothing left armed");
});
