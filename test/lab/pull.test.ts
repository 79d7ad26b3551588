// Pull mode on a real kernel (see pull-lab.ts): two Pis behind a NAT router that no controller
// can reach, a debian12 one (ifupdown) enrolled with a one-time token (it makes its own keys
// and asks the fleet; the controller accepts) and an rpios-bookworm one (NetworkManager)
// enrolled over SSH by provision enrol from the site's LAN, run their agents on Debian's own
// nodejs; the controller publishes the unchanged eth0+eth1 seed to the cluster and each Pi
// bonds by itself with its own stack, through its own reboot (the agent takes the run up
// again after the boot, verifies, confirms from outside through the NAT and commits).
// Publishing the same again changes nothing. A change that cuts pi1 off from the cluster is
// reverted by the host itself, and the agent reports it once it is back; pi2 is untouched.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { nodePlaybook, siteInventory, startPullLab, type PullLab } from "./pull-lab.js";
import { bondStatus, ourTimers, timed } from "./e2e-support.js";
import { repoRoot } from "../support/cache.js";
import type { Guest } from "./lab.js";

const SEED = join(repoRoot, "playbooks", "bond-eth0-eth1.yaml");
let pl: PullLab;
let pi: Guest;
let nm: Guest;
const t0 = Date.now();

before(async () => {
  pl = await timed("boot the pull lab (debian12 and rpios-bookworm guests, 3-node cluster, NAT router)", () => startPullLab({ flavors: ["debian12", "rpios-bookworm"] }));
  [pi, nm] = pl.lab.guests;
  for (const g of pl.lab.guests) console.log(`${g.name} (${g.flavor}) answers on site after ${(g.bootMs / 1000).toFixed(0)} s (${g.start})`);
});

after(async () => {
  await pl?.stop();
  console.log(`pull lab: ${((Date.now() - t0) / 1000).toFixed(0)} s in all`);
});

const run = (stdout: string) => `\n${stdout}`;

test("behind the NAT: the controller cannot open SSH to a Pi; enrolled with a one-time token pi1 makes its own keys, the controller accepts, the agent runs; pi2 is enrolled over SSH on site", async () => {
  for (const g of [pi, nm]) {
    const ssh = await timed(`SSH to ${g.name} from the controller's side`, () => pl.sshFromController(g, "true"));
    assert.equal(ssh.code, 255, `SSH from the controller's side must fail: ${ssh.stdout}${ssh.stderr}`);
    assert.match(ssh.stderr, /timed out/, "the router drops the connection (no route would say so at once)");
  }

  const node = await timed("install Debian's nodejs on both Pis (apt, from the lab's repository)", () => pl.onSite(["--inventory", pl.inventory, nodePlaybook(pl.dir)]));
  assert.equal(node.code, 0, node.output);
  for (const g of [pi, nm]) assert.match((await g.ssh("node --version")).stdout, /^v18\./, "Debian 12's nodejs");
  const onSite = pl.onSite(["enrol", "--inventory", pl.inventory, "--limit", nm.name]);

  // the controller makes the token; whoever is on site puts it and provision's code on the Pi
  const card = join(pl.dir, "sd-card");
  const token = await pl.controller(["fleet", "token", pi.name, "--out", card, "--expires", "2h"]);
  assert.equal(token.code, 0, token.output);
  await timed("the token and provision's code onto the Pi", async () => {
    await pl.copyOnSite(pi, [join(card, "pi1.token"), join(card, "provision-code.tar.gz")], "/root/");
    const unpacked = await pi.ssh("mkdir -p /opt/provision && tar -xzf /root/provision-code.tar.gz -C /opt/provision && test -f /opt/provision/dist/cli/cli.js", {
      timeoutMs: 120_000,
    });
    assert.equal(unpacked.code, 0, unpacked.stderr);
  });
  const [asked, accepted] = await timed("the Pi asks with its own keys; the controller accepts; the Pi installs its agent", async () => {
    const asking = pi.ssh("node /opt/provision/dist/cli/cli.js agent --enrol /root/pi1.token --wait 10m", { timeoutMs: 15 * 60_000 });
    const accepting = pl.controller(["fleet", "accept", pi.name, "--wait", "10m"]);
    // a Pi that cannot ask fails the test now, not when the controller's wait runs out
    const failed = await Promise.race([asking.then((r) => (r.code === 0 ? null : r)), accepting.then(() => null)]);
    if (failed) assert.fail(`the Pi's agent --enrol failed (${failed.code}):\n${failed.stdout}${failed.stderr}`);
    return Promise.all([asking, accepting]);
  });
  assert.equal(accepted.code, 0, accepted.output);
  assert.match(accepted.stdout, /pi1: enrolled \(NATS user U/);
  assert.equal(asked.code, 0, asked.stdout + asked.stderr);
  assert.match(asked.stdout, /pi1: accepted; installing the agent/);
  assert.match(asked.stdout, /the token is spent; \/root\/pi1.token removed/);
  const files = (
    await pi.ssh(
      "stat -c '%n %a' /etc/provision/agent.creds /etc/provision/agent.age; test -e /root/pi1.token || echo token-gone; test -e /var/lib/provision/enrol-pending.json || echo pending-gone",
    )
  ).stdout;
  assert.equal(files, "/etc/provision/agent.creds 600\n/etc/provision/agent.age 600\ntoken-gone\npending-gone\n");
  const seed = (await pi.ssh("grep -E '^SU[A-Z2-7]{56}$' /etc/provision/agent.creds")).stdout.trim();
  assert.ok(seed, "the device's own NKey seed is in its credentials");
  assert.ok(!(asked.stdout + asked.stderr + accepted.output).includes(seed), "the device's seed was printed");
  assert.ok(!readFileSync(join(pl.fleetDir, "devices", "pi1.json"), "utf8").includes("SU"), "only public keys in the fleet folder");
  const active = (await pi.ssh("systemctl is-active provision-agent")).stdout.trim();
  if (active !== "active") assert.fail(`provision-agent is ${active}:\n${await pl.agentLog(pi)}`);

  const enrolled = await timed("pi2 enrolled over SSH from the site's LAN", () => onSite);
  assert.equal(enrolled.code, 0, enrolled.output);
  assert.equal((await nm.ssh("stat -c '%a' /etc/provision/agent.creds /etc/provision/agent.age; systemctl is-active provision-agent")).stdout, "600\n600\nactive\n");
});

/** The seed's bond, running and committed on `g`: both slaves, eth0 active, its address, nothing armed, the lock given back. */
async function assertBondedAndCommitted(g: Guest, log: string): Promise<void> {
  const status = await bondStatus(g);
  assert.ok(status, `${g.name}: bond0 exists`);
  assert.deepEqual(status.slaves.map((s) => s.name).sort(), ["eth0", "eth1"]);
  assert.equal(status.activeSlave, "eth0");
  assert.equal(status.miiStatus, "up");
  assert.match((await g.ssh("ip -4 -o addr show dev bond0")).stdout, new RegExp(`inet ${g.address.replaceAll(".", "\\.")}/24`));
  assert.equal(await ourTimers(g), "", `${g.name}: disarmed, nothing left to revert`);
  const record = (
    await g.ssh('id=$(cat /var/lib/provision/last); echo "$(cat /var/lib/provision/runs/$id/state) $(test -e /var/lib/provision/lock && echo locked)"')
  ).stdout.trim();
  assert.equal(record, "committed", `${g.name}: the host's transaction committed, its lock given back`);
  assert.match(log, /taking run \S+ up again after this machine's reboot/, log);
  assert.match(log, /version 1: applied/, log);
}

test("the unchanged seed, published: each Pi bonds by itself with its own stack through its own reboot; the agents report applied, status --fleet says in sync", async () => {
  const bootsBefore = await Promise.all([pi.bootId(), nm.bootId()]);
  const t = Date.now();
  const published = await timed("publish the eth0+eth1 seed", () => pl.controller(["publish", "--inventory", pl.inventory, SEED]));
  assert.equal(published.code, 0, published.output);
  assert.match(published.stdout, /pi1: v1 published \(new/);
  assert.match(published.stdout, /pi2: v1 published \(new/);
  const rows = await timed("the Pis apply it: apt, bond, reboot; after the boot each agent verifies, confirms, commits", () =>
    Promise.all([pi, nm].map((g) => pl.result(g.name, 1, 15 * 60_000))),
  );
  console.log(`publish → both bonded, rebooted, confirmed and reported applied: ${((Date.now() - t) / 1000).toFixed(0)} s`);
  for (const [i, g] of [pi, nm].entries()) {
    const log = await pl.agentLog(g, 200);
    assert.deepEqual([rows[i].lastResult?.outcome, rows[i].applied, rows[i].drift], ["applied", 1, "in sync"], JSON.stringify(rows[i]) + run(log));
    assert.notEqual(await g.bootId(), bootsBefore[i], `${g.name} rebooted`);
    await assertBondedAndCommitted(g, log);
  }
  assert.match((await pi.ssh("grep -c bond0 /etc/network/interfaces")).stdout, /^[1-9]/, "pi1: ifupdown's file");
  assert.match((await nm.ssh("nmcli -t -f NAME,DEVICE connection show --active")).stdout, /:bond0$/m, "pi2: NetworkManager runs the bond");

  const table = await pl.controller(["status", "--fleet"]);
  console.log(table.stdout);
  assert.match(table.stdout, /^pi1\s+v1\s+v1\s+\d+s ago\s+in sync/m, table.output);
  assert.match(table.stdout, /^pi2\s+v1\s+v1\s+\d+s ago\s+in sync/m, table.output);
  assert.equal(table.code, 0, table.output);
});

test("publishing the same again changes nothing: no new version, no run, no reboot", async () => {
  const boots = await Promise.all([pi.bootId(), nm.bootId()]);
  const again = await pl.controller(["publish", "--inventory", pl.inventory, SEED]);
  assert.equal(again.code, 0, again.output);
  assert.match(again.stdout, /pi1: v1 unchanged/);
  assert.match(again.stdout, /0 new, 0 changed, 2 unchanged/);
  await new Promise((r) => setTimeout(r, 5000));
  const rows = await pl.status();
  for (const [i, g] of [pi, nm].entries()) {
    const row = rows.find((r) => r.device === g.name)!;
    assert.deepEqual([row.desired, row.applied, row.drift], [1, 1, "in sync"], g.name);
    assert.equal(await g.bootId(), boots[i]);
    assert.doesNotMatch(await pl.agentLog(g), /version 2/);
  }
});

test("a change that cuts pi1 off from the cluster: not confirmed, the host reverts by itself; the agent reports reverted once it is back; pi2 is untouched", async () => {
  const nmBoot = await nm.bootId();
  const before = (await pi.ssh("sha256sum /etc/network/interfaces")).stdout;
  // the bond moved above the router's NAT pool (pull-lab.ts NAT_POOL): on the LAN (its gateway answers, so it verifies), cut off from the cluster
  const moved = siteInventory(pl.lab, join(pl.dir, "moved.yaml"), { pi1: { bond_address: "10.77.0.200/24", confirm_timeout: 60 } });
  const t = Date.now();
  const published = await pl.controller(["publish", "--inventory", moved, SEED]);
  assert.equal(published.code, 0, published.output);
  assert.match(published.stdout, /pi1: v2 published/);
  assert.match(published.stdout, /pi2: v1 unchanged/);
  const row = await timed("cut off: applied, rebooted, not confirmed within 60 s, reverted by the host, reported", () => pl.result(pi.name, 2, 12 * 60_000));
  console.log(`publish → reverted by the host and reported: ${((Date.now() - t) / 1000).toFixed(0)} s (confirm_timeout 60 s)`);
  assert.equal(row.lastResult?.outcome, "reverted", JSON.stringify(row));
  // who got there first: the agent, giving up 5 s before the deadline, starts the host's revert; or,
  // when the agent came up late after the boot (a loaded machine), the host's boot timer ran it
  const how =
    /version 2 reverted: rolled back by host: (not confirmed from outside within the confirm timeout|run \S+ was not confirmed within confirm_timeout after the reboot)/.exec(
      String(row.lastError),
    );
  assert.ok(how, JSON.stringify(row));
  console.log(
    `cut off: ${how[1].startsWith("not confirmed") ? "the agent gave up confirming and started the host's revert" : "the host's boot timer reverted before the agent took the run up"}`,
  );
  assert.deepEqual([row.applied, row.drift], [1, "failed"]);
  assert.equal((await pi.ssh("sha256sum /etc/network/interfaces")).stdout, before, "the interfaces file as before");
  assert.equal((await bondStatus(pi))?.activeSlave, "eth0", "back on the bond it had");
  assert.equal(await ourTimers(pi), "");
  // not retried: the agent, back on the cluster, leaves version 2 alone
  await new Promise((r) => setTimeout(r, 5000));
  const reverted = (await pi.ssh("cat /var/lib/provision/agent/state.json")).stdout;
  assert.match(reverted, /"version":2,"phase":"done","outcome":"reverted"/);
  assert.equal(await nm.bootId(), nmBoot, "pi2 did not reboot");
  const untouched = (await pl.status()).find((r) => r.device === nm.name);
  assert.deepEqual([untouched?.desired, untouched?.applied, untouched?.drift], [1, 1, "in sync"], "pi2 untouched");
});
