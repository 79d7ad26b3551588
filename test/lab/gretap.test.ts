// The gretap-bond seed on a real kernel: two guests joined by two underlay links, pi1 the
// Pi (bond over gt1/gt2, primary gt1), pi2 the hub (bridge). A continuous ping across the
// bond while gt1's underlay is cut: failover with bounded loss, no ping-pong for 60 s,
// failback when the link returns; stalls of the hub (what set off the seed's ping-pong)
// settle at once. Then a second run changes nothing and a bad change rolls back exactly.
import { test } from "node:test";
import assert from "node:assert/strict";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { stringify } from "yaml";
import { startLab, qmp, type Lab, type Guest } from "./lab.js";
import { bondStatus, fileHashes, ourTimers, sleep, timed, useLab } from "./e2e-support.js";
import { provision, summary } from "../integration/provision-cli.js";
import { repoRoot } from "../support/cache.js";

let lab: Lab;
let pi: Guest;
let hub: Guest;
let dir: string;
let inventory: string;
const PLAYBOOK = join(repoRoot, "playbooks/gretap-bond.yaml");
const PI_FILE = "/etc/network/interfaces.d/provision-bond0";
const HUB_FILE = "/etc/network/interfaces.d/provision-br77";
const HUB_ADDRESS = "192.168.77.2";
const cli = (...args: string[]) => provision(lab.controllerArgv, args);

/** The hub pins each tunnel to its underlay NIC (`dev`); the Pi lets the kernel route it. */
const tunnels = (me: number, peer: number, pinned = false) => [
  { name: "gt1", local: `10.10.1.${me}`, remote: `10.10.1.${peer}`, ...(pinned ? { dev: "eth1" } : {}) },
  { name: "gt2", local: `10.10.2.${me}`, remote: `10.10.2.${peer}`, ...(pinned ? { dev: "eth2" } : {}) },
];

function writeInventory(file: string, piVars: Record<string, unknown> = {}): string {
  writeFileSync(
    file,
    stringify({
      all: {
        vars: { user: "root", identity_file: lab.identityFile, known_hosts_file: lab.knownHostsFile },
        children: {
          hubs: { hosts: { pi2: { address: hub.address, gretap_address: `${HUB_ADDRESS}/24`, gretap_tunnels: tunnels(2, 1, true) } } },
          pis: { hosts: { pi1: { address: pi.address, gretap_address: "192.168.77.1/24", gretap_peer: HUB_ADDRESS, gretap_tunnels: tunnels(1, 2), ...piVars } } },
        },
      },
    }),
  );
  return file;
}

useLab(
  "lab (2 guests, eth1 on ula, eth2 on ulb)",
  () =>
    startLab({
      guests: 2,
      name: "lab-gre",
      links: [
        { bridge: "ula", address: (i) => `10.10.1.${i}/24` },
        { bridge: "ulb", address: (i) => `10.10.2.${i}/24` },
      ],
    }),
  (booted, folder) => {
    [lab, dir] = [booted, folder];
    [pi, hub] = lab.guests;
    inventory = writeInventory(join(dir, "lab.yaml"));
  },
);

/** Run a shell script in the guest in the background (own session), output to log; its PID. */
async function background(g: Guest, script: string, log: string): Promise<number> {
  const file = `${log}.sh`;
  const r = await g.ssh(`echo ${Buffer.from(script).toString("base64")} | base64 -d > ${file} && { setsid sh ${file} < /dev/null > ${log} 2>&1 & echo $!; }`);
  assert.equal(r.code, 0, r.stderr);
  return Number(r.stdout.trim());
}
const MONITOR = "while :; do echo $(date +%s.%N) $(cat /sys/class/net/bond0/bonding/active_slave); sleep 0.2; done";
const guestClock = async (g: Guest) => Number((await g.ssh("date +%s.%N")).stdout.trim());

async function waitForActive(g: Guest, slave: string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if ((await bondStatus(g))?.activeSlave === slave) return;
    if (Date.now() > deadline) throw new Error(`${g.name}: active slave did not become ${slave} within ${timeoutMs / 1000}s: ${JSON.stringify(await bondStatus(g))}`);
    await sleep(300);
  }
}

/** `ping -D` replies as [guest time, seq]. */
function replies(log: string): { t: number; seq: number }[] {
  return [...log.matchAll(/^\[(\d+\.\d+)\] .*icmp_seq=(\d+)/gm)].map((m) => ({ t: Number(m[1]), seq: Number(m[2]) }));
}
/** Samples "time slave" from the in-guest monitor, as [time, slave]. */
function samples(log: string): { t: number; slave: string }[] {
  return log
    .trim()
    .split("\n")
    .map((l) => l.split(" "))
    .filter((p) => p.length >= 1 && p[0])
    .map(([t, slave]) => ({ t: Number(t), slave: slave ?? "" }));
}
/** Replies missing between guest times from and to (seq gaps), and the longest silence. */
function lossBetween(r: { t: number; seq: number }[], from: number, to: number): { lost: number; gapS: number } {
  const inside = r.filter((x) => x.t >= from && x.t <= to);
  let lost = 0,
    gapS = 0;
  for (let i = 1; i < inside.length; i++) {
    lost += inside[i].seq - inside[i - 1].seq - 1;
    gapS = Math.max(gapS, inside[i].t - inside[i - 1].t);
  }
  return { lost, gapS };
}

test("apply: the hub bridges the tunnels, the Pi bonds them, both verified after reboot; a second run and --check change nothing", async () => {
  const boots = [await pi.bootId(), await hub.bootId()];
  const first = await timed("apply gretap-bond playbook (hub, then Pi: write, reboot, verify)", () =>
    cli("--inventory", inventory, PLAYBOOK, "--diff", "--report", join(dir, "apply.json")),
  );
  assert.equal(first.code, 0, first.output);
  const rows = summary(first.stdout);
  assert.equal(rows.pi1.status, "changed", first.stdout);
  assert.equal(rows.pi2.status, "changed", first.stdout);
  assert.notEqual(await pi.bootId(), boots[0], "the Pi rebooted");
  assert.notEqual(await hub.bootId(), boots[1], "the hub rebooted");

  const s = (await bondStatus(pi))!;
  assert.equal(s.mode, "active-backup");
  assert.deepEqual(
    s.slaves.map((x) => x.name),
    ["gt1", "gt2"],
  );
  assert.equal(s.activeSlave, "gt1");
  assert.ok(
    s.slaves.every((x) => x.miiStatus === "up"),
    `both tunnels tested through the hub's bridge: ${JSON.stringify(s.slaves)}`,
  );
  assert.equal((await pi.ssh("cat /sys/class/net/bond0/mtu /sys/class/net/bond0/bonding/arp_validate")).stdout, "1462\nall 3\n");
  assert.equal((await hub.ssh("ls /sys/class/net/br77/brif; cat /sys/class/net/br77/mtu")).stdout, "gt1\ngt2\n1462\n");
  const hubTunnels = (await hub.ssh("ip -d link show gt1; ip -d link show gt2")).stdout;
  assert.match(hubTunnels, /gretap remote 10\.10\.1\.1 local 10\.10\.1\.2 dev eth1 /, "the hub's tunnels are pinned to their NICs");
  assert.match(hubTunnels, /gretap remote 10\.10\.2\.1 local 10\.10\.2\.2 dev eth2 /);
  assert.doesNotMatch((await pi.ssh("ip -d link show gt1")).stdout, / dev eth\d /, "the Pi's are not");
  assert.match((await pi.ssh(`ping -c 2 -s 1434 -M do ${HUB_ADDRESS}`)).stdout, /2 received/, "a full 1462-byte packet crosses without fragmentation");
  assert.equal(await ourTimers(pi), "", "confirmed: nothing left armed");

  const second = await timed("second run", () => cli("--inventory", inventory, PLAYBOOK));
  assert.equal(second.code, 0, second.output);
  assert.equal(summary(second.stdout).pi1.changed, 0, second.stdout);
  assert.equal(summary(second.stdout).pi2.changed, 0, second.stdout);
  const check = await cli("--inventory", inventory, PLAYBOOK, "--check");
  assert.equal(check.code, 0, check.output);
});

test("cutting gt1's underlay: failover to gt2 with bounded loss, stable for 60 s, failback to gt1 when it returns", async () => {
  const pingPid = await background(pi, `exec ping -D -n -i 0.1 -W 1 ${HUB_ADDRESS}`, "/root/gretap-ping.log");
  const monitorPid = await background(pi, MONITOR, "/root/gretap-active.log");
  try {
    await sleep(3000);
    const cutAt = await guestClock(pi);
    await pi.setLink("eth1", false);
    await timed("failover to gt2", () => waitForActive(pi, "gt2", 30_000));
    await timed("60 s with eth1 cut (stability)", () => sleep(62_000));
    const restoreAt = await guestClock(pi);
    await pi.setLink("eth1", true);
    await timed("failback to gt1", () => waitForActive(pi, "gt1", 30_000));
    await sleep(10_000);
    const endAt = await guestClock(pi);

    await pi.ssh(`kill ${pingPid} ${monitorPid}`);
    const r = replies((await pi.ssh("cat /root/gretap-ping.log")).stdout);
    const m = samples((await pi.ssh("cat /root/gretap-active.log")).stdout);
    const firstGt2 = m.find((x) => x.t > cutAt && x.slave === "gt2")!;
    const cutWindow = m.filter((x) => x.t >= firstGt2.t && x.t < restoreAt);
    const firstBack = m.find((x) => x.t > restoreAt && x.slave === "gt1")!;
    const after = m.filter((x) => x.t >= firstBack.t);
    const cut = lossBetween(r, cutAt - 1, firstGt2.t + 5);
    const steady = lossBetween(r, firstGt2.t + 5, restoreAt);
    const back = lossBetween(r, restoreAt - 1, endAt);
    const changes = (xs: { slave: string }[]) => xs.filter((x, i) => i > 0 && x.slave !== xs[i - 1].slave).length;
    const result = {
      failoverDetectedS: +(firstGt2.t - cutAt).toFixed(2),
      failoverLostPings: cut.lost,
      failoverOutageS: +cut.gapS.toFixed(2),
      stableOnGt2S: +((cutWindow.at(-1)?.t ?? 0) - firstGt2.t).toFixed(1),
      samplesOnGt2: cutWindow.length,
      activeChangesWhileCut: changes(cutWindow),
      lostWhileCut: steady.lost,
      failbackS: +(firstBack.t - restoreAt).toFixed(2),
      failbackLostPings: back.lost,
      activeChangesAfterFailback: changes(after),
      pingsSent: r.at(-1)!.seq,
      pingsReceived: r.length,
    };
    console.log(`gretap failover (ping every 0.1 s from pi1 to ${HUB_ADDRESS} across bond0): ${JSON.stringify(result)}`);
    assert.ok(cutWindow.length >= 60, `sampled at least every second on gt2 (got ${cutWindow.length} samples)`);
    assert.ok(result.stableOnGt2S >= 59, `stayed on gt2 for ${result.stableOnGt2S} s`);
    assert.ok(
      cutWindow.every((x) => x.slave === "gt2"),
      "no ping-pong: gt2 stays active while gt1's underlay is cut",
    );
    assert.ok(cut.lost <= 20, `failover lost ${cut.lost} pings (bound: 20 at 0.1 s = 2 s)`);
    assert.equal(steady.lost, 0, "no loss once failed over");
    assert.ok(result.failbackS <= 15, `failback to the primary within 15 s (took ${result.failbackS} s)`);
    assert.ok(
      after.every((x) => x.slave === "gt1"),
      "stays on gt1 after failback",
    );
    assert.ok(back.lost <= 10, `failback lost ${back.lost} pings`);
  } finally {
    await pi.ssh(`kill ${pingPid} ${monitorPid} 2>/dev/null; true`);
    await pi.setLink("eth1", true);
  }
});

test("stalls of the hub (what set off the seed's ping-pong) settle at once: back on gt1, no ping-pong", async () => {
  const monitorPid = await background(pi, MONITOR, "/root/gretap-stall.log");
  try {
    await timed("3 × 1 s pauses of the hub, 5 s apart", async () => {
      for (let i = 0; i < 3; i++) {
        await qmp(hub.qmpSocket, "stop");
        await sleep(1000);
        await qmp(hub.qmpSocket, "cont");
        await sleep(5000);
      }
    });
    const settledAt = await guestClock(pi);
    await waitForActive(pi, "gt1", 20_000);
    await sleep(20_000);
    await pi.ssh(`kill ${monitorPid}`);
    const m = samples((await pi.ssh("cat /root/gretap-stall.log")).stdout);
    const quiet = m.filter((x) => x.t > settledAt + 5);
    console.log(
      `hub stalls: ${m.filter((x, i) => i > 0 && x.slave !== m[i - 1].slave).length} active-slave changes during/after 3 pauses; ${quiet.length} samples after the last, all ${[...new Set(quiet.map((x) => x.slave))].join("/")}`,
    );
    assert.ok(quiet.length > 50 && quiet.every((x) => x.slave === "gt1"), "stable on gt1 after the last pause (no ping-pong)");
    assert.match((await pi.ssh(`ping -c 3 -i 0.2 -W 2 ${HUB_ADDRESS}`)).stdout, /3 received/);
  } finally {
    await qmp(hub.qmpSocket, "cont").catch(() => {});
    await pi.ssh(`kill ${monitorPid} 2>/dev/null; true`);
  }
});

/** Everything the kernel routes by, minus counters and the gretaps' random permanent MACs. */
async function liveState(g: Guest): Promise<string> {
  const json = async (cmd: string) =>
    JSON.parse((await g.ssh(cmd)).stdout)
      .map((o: unknown) => JSON.stringify(o))
      .sort()
      .join("\n");
  const bonding = (await g.ssh("cat /proc/net/bonding/bond0")).stdout
    .split("\n")
    .filter((l) => !/^(Link Failure Count|Permanent HW addr):/.test(l))
    .join("\n");
  return [await json("ip -j link"), await json("ip -j addr"), await json("ip -j route show table all"), bonding].join("\n----\n");
}

test("a bad change (arp_ip_target nobody answers) is rolled back: files byte-identical, live state as before", async () => {
  await waitForActive(pi, "gt1", 30_000);
  await sleep(3000); // the backup's MII status follows a few ARP intervals later
  const paths = [PI_FILE, HUB_FILE, "/etc/network/interfaces"];
  const filesBefore = await fileHashes(pi, paths);
  const liveBefore = await liveState(pi);
  const bad = writeInventory(join(dir, "bad.yaml"), { gretap_peer: "192.168.77.9" });
  const r = await timed("bad change: write, reboot, verify fails, restore, reboot", () => cli("--inventory", bad, PLAYBOOK, "--report", join(dir, "bad.json")));
  assert.equal(r.code, 1, r.output);
  assert.equal(summary(r.stdout).pi1.status, "rolled back", r.stdout);
  assert.equal(summary(r.stdout).pi2.status, "ok", r.stdout);
  assert.match(r.stdout, /no active slave: 192\.168\.77\.9 does not answer ARP/, "the probe saw why");
  assert.equal(await fileHashes(pi, paths), filesBefore, "files byte-identical to before the run");
  await waitForActive(pi, "gt1", 30_000);
  await sleep(3000);
  const liveAfter = await liveState(pi);
  if (liveAfter !== liveBefore) {
    const a = liveBefore.split("\n"),
      b = liveAfter.split("\n");
    console.log(`live state differs:\n- ${a.filter((l) => !b.includes(l)).join("\n- ")}\n+ ${b.filter((l) => !a.includes(l)).join("\n+ ")}`);
  }
  assert.equal(liveAfter, liveBefore, "links, addresses, routes (all tables) and the bond as before the run");
  assert.equal(await ourTimers(pi), "", "nothing left armed");
  const check = await cli("--inventory", inventory, PLAYBOOK, "--check");
  assert.equal(check.code, 0, check.output);
});
