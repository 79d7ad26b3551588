// Multi-WAN on a real kernel: a Pi guest routes a LAN namespace through two uplink
// routers to a test server (see wan-lab.ts). Weighted split of new connections, a
// long connection that keeps its uplink, a dead uplink withdrawn by the health agent
// and put back, drift seen in check mode, rollback to the live state before the run,
// and the same live state after a reboot.
import { test, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { closeSync, openSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { stringify } from "yaml";
import { startWanLab, SERVER, UPLINKS, type WanLab } from "./wan-lab.js";
import { fileHashes, ourTimers, sleep, timed, useLab } from "./e2e-support.js";
import { provision, summary } from "../integration/provision-cli.js";
import { run, sh, startDaemon, onCleanup, killPid } from "../support/processes.js";
import { repoRoot } from "../support/cache.js";
import type { Guest } from "./lab.js";

const PLAYBOOK = join(repoRoot, "playbooks/multiwan.yaml");
const PROBE = join(repoRoot, "dist/test/lab/wan-probe.js");
const PORT = "7000";
const LAB_TEST_TIMEOUT_MS = 5 * 60_000;
const FILES = [
  "/usr/local/sbin/provision-multiwan",
  "/etc/provision/multiwan.conf",
  "/etc/provision/multiwan.nft",
  "/etc/sysctl.d/90-provision-multiwan.conf",
  "/etc/systemd/system/provision-multiwan.service",
];
/** Everything the module touches on the running host, as text without handles or counters. */
const LIVE =
  "ip -4 rule; ip -4 route show table all; nft list ruleset; sysctl net.ipv4.ip_forward net.ipv4.fib_multipath_hash_policy net.ipv4.conf.all.rp_filter; systemctl is-active provision-multiwan; systemctl is-enabled provision-multiwan; true";

let lab: WanLab;
let pi: Guest;
let dir: string;
let inventory: string;
let serverLog: string;
let stopServer = () => {};
const cli = (...args: string[]) => provision(lab.controllerArgv, args);

function writeInventory(file: string, gateways: string[]): string {
  const pi1 = {
    address: lab.guests[0].address,
    uplink1_interface: UPLINKS[0].interface,
    uplink1_gateway: gateways[0],
    uplink2_interface: UPLINKS[1].interface,
    uplink2_gateway: gateways[1],
    check_target: SERVER,
  };
  writeFileSync(
    file,
    stringify({
      all: { vars: { user: "root", identity_file: lab.identityFile, known_hosts_file: lab.knownHostsFile }, children: { routers: { hosts: { pi1 } } } },
    }),
  );
  return file;
}

const live = async () => (await pi.ssh(LIVE)).stdout;
const health = async () => (await pi.ssh("cat /run/provision-multiwan/status")).stdout;
/** Poll the agent's status until UPLINK is STATE; ms since `since`. */
async function untilHealth(uplink: string, state: "up" | "down", since: number, timeoutMs = 20_000): Promise<number> {
  while (Date.now() - since < timeoutMs) {
    if (new RegExp(`^${uplink} ${state} `, "m").test(await health())) return Date.now() - since;
    await sleep(200);
  }
  throw new Error(`the agent did not mark ${uplink} ${state} within ${timeoutMs / 1000} s`);
}
const uplinkOf = (address: string | null) => UPLINKS.findIndex((u) => u.pi === address);

/** The LAN client's view: which uplink (by its masqueraded address) each new connection used. */
async function split(count: number): Promise<Record<string, number>> {
  const r = await run(lab.lanArgv(["node", PROBE, "split", SERVER, PORT, String(count)]));
  assert.equal(r.code, 0, r.stderr);
  const tally = JSON.parse(r.stdout) as Record<string, number>;
  if (tally.failed) await diagnose(`${tally.failed} of ${count} connections failed`);
  return tally;
}

/** When traffic fails: the Pi's routing state and the test server's log, for the test output. */
async function diagnose(why: string): Promise<void> {
  const state = await pi.ssh(
    "cat /run/provision-multiwan/status; ip -4 rule; ip -4 route show table all | grep -v 'table local'; nft list ruleset; sysctl net.ipv4.ip_forward; journalctl -u provision-multiwan -n 20 --no-pager",
  );
  console.log(`diagnosis (${why}):\n${state.stdout}${state.stderr}\nserver log:\n${readFileSync(serverLog, "utf8")}`);
}

/** One long-lived connection; resolves its uplink once it answers, and its verdict at the end. */
function longConnection(seconds: number): { first: Promise<string>; result: Promise<{ addresses: string[]; sent: number; answers: number; error: string | null }> } {
  const argv = lab.lanArgv(["node", PROBE, "long", SERVER, PORT, String(seconds)]);
  const child = spawn(argv[0], argv.slice(1), { stdio: ["ignore", "pipe", "inherit"] });
  const forget = onCleanup("long connection", () => killPid(child.pid));
  let out = "";
  let gotFirst: (a: string) => void;
  const first = new Promise<string>((r) => (gotFirst = r));
  // no answer at all must fail the test, not hang it
  setTimeout(() => gotFirst("no answer within 15 s"), 15_000).unref();
  child.stdout.on("data", (d) => {
    out += d;
    const m = /\{"first":"([^"]+)"\}/.exec(out);
    if (m) gotFirst(m[1]);
  });
  const result = new Promise<{ addresses: string[]; sent: number; answers: number; error: string | null }>((resolve) =>
    child.on("close", () => {
      forget();
      resolve(JSON.parse(out.trim().split("\n").pop()!));
    }),
  );
  return { first, result };
}

useLab("WAN lab (pi1 with two uplinks, 2 routers, server, LAN client)", startWanLab, async (booted, folder) => {
  [lab, dir] = [booted, folder];
  pi = lab.guests[0];
  inventory = writeInventory(
    join(dir, "wan.yaml"),
    UPLINKS.map((u) => u.router),
  );
  serverLog = join(dir, "server.log");
  const logFd = openSync(serverLog, "w");
  const server = startDaemon("wan-probe server", lab.serverArgv(["node", PROBE, "server", PORT]), { stdio: ["ignore", logFd, logFd] });
  closeSync(logFd);
  stopServer = server.stop;
  await sleep(1000);
});

after(() => stopServer()); // a live child would keep this test file from ever exiting

test("multiwan applies, a second run changes nothing, --check exits 0; rules, tables, marks and agent are live", { timeout: LAB_TEST_TIMEOUT_MS }, async () => {
  const first = await timed("apply multiwan", () => cli("--inventory", inventory, PLAYBOOK, "--report", join(dir, "apply.json")));
  assert.equal(first.code, 0, first.output);
  assert.equal(summary(first.stdout).pi1.status, "changed", first.stdout);
  const rules = (await pi.ssh("ip -4 rule")).stdout;
  assert.match(rules, /30000:\s+from all lookup main suppress_prefixlength 0/);
  assert.match(rules, /30010:\s+from all fwmark 0x10000\/0xff0000 lookup 201/);
  assert.match(rules, /30011:\s+from all fwmark 0x20000\/0xff0000 lookup 202/);
  assert.match(rules, /30090:\s+from all lookup 200/);
  const balanced = (await pi.ssh("ip -4 route show table 200")).stdout;
  assert.match(balanced, /nexthop via 10\.201\.0\.1 dev eth1 weight 9/);
  assert.match(balanced, /nexthop via 10\.202\.0\.1 dev eth2 weight 10/);
  assert.match((await pi.ssh("nft list table inet provision_multiwan")).stdout, /masquerade/);
  assert.match(await health(), /^isp1 up .*\nisp2 up /);
  assert.equal(await ourTimers(pi), "", "confirmed: nothing left armed");

  const second = await timed("second run", () => cli("--inventory", inventory, PLAYBOOK));
  assert.equal(second.code, 0, second.output);
  assert.equal(summary(second.stdout).pi1.changed, 0, second.stdout);
  const check = await cli("--inventory", inventory, PLAYBOOK, "--check");
  assert.equal(check.code, 0, check.output);
});

test("weights 9:10 split new connections; a long connection keeps its uplink while the other one dies and recovers", { timeout: LAB_TEST_TIMEOUT_MS }, async () => {
  const long = longConnection(40);
  const carrying = uplinkOf(await long.first);
  assert.ok(carrying >= 0, "the long connection answered through an uplink");
  const other = 1 - carrying;

  const tally = await timed("400 new connections from the LAN", () => split(400));
  const counts = UPLINKS.map((u) => tally[u.pi] ?? 0);
  const share = counts[0] / (counts[0] + counts[1]);
  console.log(`split: isp1 ${counts[0]}, isp2 ${counts[1]}, failed ${tally.failed ?? 0} (isp1 share ${share.toFixed(3)}, weights want ${(9 / 19).toFixed(3)})`);
  assert.equal(tally.failed ?? 0, 0, "every connection was answered");
  // 400 draws at p = 9/19: one standard deviation is 0.025; allow four
  assert.ok(Math.abs(share - 9 / 19) < 0.1, `isp1 share ${share} is not near 9/19`);

  // cut the other uplink beyond its router: its NIC keeps carrier, only the health checks can tell
  const watchArgv = lab.lanArgv(["node", PROBE, "watch", SERVER, PORT, "26"]);
  const watch = run(watchArgv);
  await sleep(2000);
  const cut = Date.now();
  lab.setUplinkOutside(other, false);
  const detectedMs = await untilHealth(UPLINKS[other].name, "down", cut);
  await sleep(detectedMs + 4000 - (Date.now() - cut)); // 4 s on the surviving uplink alone
  const restored = Date.now();
  lab.setUplinkOutside(other, true);
  const recoveredMs = await untilHealth(UPLINKS[other].name, "up", restored);

  const samples = (await watch).stdout
    .trim()
    .split("\n")
    .map((l) => JSON.parse(l) as { t: number; address: string | null });
  const duringCut = samples.filter((s) => s.t > cut && s.t < restored);
  const lastBad = Math.max(0, ...duringCut.filter((s) => s.address !== UPLINKS[carrying].pi).map((s) => s.t - cut));
  const settled = duringCut.filter((s) => s.t - cut > lastBad);
  const afterRecovery = samples.filter((s) => s.t > restored + recoveredMs + 1000);
  console.log(
    `uplink ${UPLINKS[other].name} cut beyond its router: agent marked it down after ${detectedMs} ms; new LAN connections all on ${UPLINKS[carrying].name} from ${lastBad} ms after the cut (${settled.length} in a row until the restore); marked up ${recoveredMs} ms after the restore; ${afterRecovery.filter((s) => uplinkOf(s.address) === other).length} of ${afterRecovery.length} connections used it again after that`,
  );
  assert.ok(lastBad < detectedMs + 2000, `connections still failed or used the dead uplink ${lastBad} ms after the cut (detected at ${detectedMs} ms)`);
  assert.ok(settled.length >= 10, "new connections kept working on the surviving uplink");
  assert.ok(
    afterRecovery.some((s) => uplinkOf(s.address) === other),
    "new connections use the recovered uplink again",
  );

  const verdict = await long.result;
  console.log(
    `long connection on ${UPLINKS[carrying].name}: ${verdict.answers}/${verdict.sent} lines answered, seen from ${verdict.addresses.join(", ")}, error: ${verdict.error ?? "none"}`,
  );
  assert.deepEqual(verdict.addresses, [UPLINKS[carrying].pi], "the long connection stayed on its uplink for its whole life");
  assert.equal(verdict.error, null);
  assert.equal(verdict.answers, verdict.sent, "every line sent on the long connection was answered");
});

test("check mode reads the live state: a stopped agent is drift, and a run repairs it", { timeout: LAB_TEST_TIMEOUT_MS }, async () => {
  await pi.ssh("systemctl stop provision-multiwan");
  const check = await cli("--inventory", inventory, PLAYBOOK, "--check");
  assert.equal(check.code, 2, check.output);
  assert.match(check.stdout, /the live state drifted: provision-multiwan\.service is inactive/);
  assert.match(check.stdout, /ip rule missing: 30010: fwmark 0x10000\/0xff0000 lookup 201/);
  assert.match(check.stdout, /nftables table inet provision_multiwan is missing/);
  const repair = await cli("--inventory", inventory, PLAYBOOK);
  assert.equal(repair.code, 0, repair.output);
  assert.equal(summary(repair.stdout).pi1.changed, 1, repair.stdout);
  const again = await cli("--inventory", inventory, PLAYBOOK, "--check");
  assert.equal(again.code, 0, again.output);
});

test("a failed verification rolls back: files byte-identical, live routing state as before", { timeout: LAB_TEST_TIMEOUT_MS }, async () => {
  const filesBefore = await fileHashes(pi, FILES);
  const liveBefore = await live();
  const bad = writeInventory(join(dir, "bad.yaml"), [UPLINKS[0].router, "10.202.0.99"]);
  const r = await timed("bad gateway: apply, verify fails, roll back", () => cli("--inventory", bad, PLAYBOOK));
  assert.equal(r.code, 1, r.output);
  assert.equal(summary(r.stdout).pi1.status, "rolled back", r.stdout);
  assert.match(r.stdout, /uplink isp2 \(eth2\) is down: no answer from 198\.51\.100\.10 through it/);
  assert.equal(await fileHashes(pi, FILES), filesBefore, "every file is byte-identical to before the run");
  await sleep(2000); // the old configuration's agent has started; give it one round of checks
  assert.equal(await live(), liveBefore, "rules, routes, nftables, sysctls and the service are as before");
  assert.equal(await ourTimers(pi), "", "nothing left armed");
});

test(
  "an uplink dead while the run applies: with check.required_up 1 the run goes on and says so, an audit says so too, and the uplink joins once it answers",
  { timeout: LAB_TEST_TIMEOUT_MS },
  async () => {
    const tolerant = join(dir, "required-up.yaml");
    const text = readFileSync(PLAYBOOK, "utf8");
    assert.ok(text.includes("          fail_after: 3\n") && text.includes("weight: 10"));
    writeFileSync(tolerant, text.replace("          fail_after: 3\n", "          fail_after: 3\n          required_up: 1\n").replace("weight: 10", "weight: 5"));
    lab.setUplinkOutside(1, false);
    try {
      const r = await timed("apply (weights 9:5) with isp2 dead beyond its router", () => cli("--inventory", inventory, tolerant));
      assert.equal(r.code, 0, r.output);
      assert.equal(summary(r.stdout).pi1.status, "changed", r.stdout);
      assert.match(r.stdout, /note: uplink isp2 \(eth2\) is down: no answer from 198\.51\.100\.10 through it; it carries nothing until it answers \(1 of 2 uplinks required\)/);
      const tally = await split(40);
      assert.equal(tally[UPLINKS[0].pi], 40, `every new connection leaves through isp1: ${JSON.stringify(tally)}`);
      const audit = await cli("--inventory", inventory, tolerant, "--check");
      assert.equal(audit.code, 0, `running as configured is no drift: ${audit.output}`);
      assert.match(
        audit.stdout,
        /note: uplink isp2 \(eth2\) is down: no answer from 198\.51\.100\.10 through it \(the health agent's last verdict\)/,
        "the audit still says isp2 is dead",
      );
    } finally {
      lab.setUplinkOutside(1, true);
    }
    const back = await untilHealth("isp2", "up", Date.now());
    console.log(`isp2 answered again: the agent marked it up after ${back} ms`);
    const tally = await split(100);
    assert.ok((tally[UPLINKS[1].pi] ?? 0) >= 15 && !tally.failed, `new connections use isp2 again (9:5): ${JSON.stringify(tally)}`);
    const restored = await timed("back to the playbook's 9:10", () => cli("--inventory", inventory, PLAYBOOK));
    assert.equal(restored.code, 0, restored.output);
  },
);

test("after a reboot the host comes up with the same live state", { timeout: LAB_TEST_TIMEOUT_MS }, async () => {
  const liveBefore = await live();
  const ms = await timed("reboot", () => pi.reboot());
  let liveAfter = "";
  for (let i = 0; i < 30 && liveAfter !== liveBefore; i++) {
    liveAfter = await live();
    if (liveAfter !== liveBefore) await sleep(1000);
  }
  console.log(`reboot took ${ms} ms`);
  assert.equal(liveAfter, liveBefore);
  const check = await cli("--inventory", inventory, PLAYBOOK, "--check");
  assert.equal(check.code, 0, check.output);
});

test("an uplink without a configured gateway follows its interface's default route: a new gateway needs no re-run", { timeout: LAB_TEST_TIMEOUT_MS }, async () => {
  // like DHCP (or PPP, where the agent routes "dev ppp0"): the gateway is whatever the link says now
  const learned = join(dir, "learned.yaml");
  writeFileSync(learned, readFileSync(PLAYBOOK, "utf8").replace('            gateway: "{{ uplink2_gateway }}"\n', ""));
  await pi.ssh("ip route add default via 10.202.0.1 dev eth2 metric 500");
  const r = await timed("apply with isp2's gateway learned", () => cli("--inventory", inventory, learned));
  assert.equal(r.code, 0, r.output);
  assert.match(await health(), /^isp2 up \d+ \d+ via 10\.202\.0\.1 dev eth2$/m);

  sh(lab.routerArgv(1, ["ip", "addr", "add", "10.202.0.254/24", "dev", "lan"]));
  const changed = Date.now();
  await pi.ssh("ip route replace default via 10.202.0.254 dev eth2 metric 500");
  let followedMs = -1;
  while (Date.now() - changed < 15_000) {
    const [own, balanced] = (await pi.ssh("ip -4 route show table 202; echo '|'; ip -4 route show table 200")).stdout.split("|");
    if (/via 10\.202\.0\.254 dev eth2/.test(own) && /nexthop via 10\.202\.0\.254 dev eth2 weight 10/.test(balanced)) {
      followedMs = Date.now() - changed;
      break;
    }
    await sleep(200);
  }
  console.log(`isp2's gateway changed to 10.202.0.254: the agent's routes followed in ${followedMs} ms`);
  assert.ok(followedMs >= 0, "table 202 and the multipath route use the new gateway");
  assert.match(await health(), /^isp2 up \d+ \d+ via 10\.202\.0\.254 dev eth2$/m);
  const tally = await split(40);
  assert.ok((tally[UPLINKS[1].pi] ?? 0) > 0 && !tally.failed, `connections use isp2 through its new gateway: ${JSON.stringify(tally)}`);
  const check = await cli("--inventory", inventory, learned, "--check");
  assert.equal(check.code, 0, check.output);
});

test("iptables where that is what the host has: same marks and failover, and switching back leaves none of it", { timeout: LAB_TEST_TIMEOUT_MS }, async () => {
  const withIptables = join(dir, "iptables.yaml");
  writeFileSync(
    withIptables,
    readFileSync(PLAYBOOK, "utf8").replace("name: nftables", "name: iptables").replace("      multiwan:\n", "      multiwan:\n        firewall: iptables\n"),
  );
  const r = await timed("switch to iptables (apt install iptables, restart the agent)", () => cli("--inventory", inventory, withIptables));
  assert.equal(r.code, 0, r.output);
  const saved = (await pi.ssh("iptables-save")).stdout;
  console.log(
    `iptables-save on the host:\n${saved
      .split("\n")
      .filter((l) => /PROVISION_MW|^\*|^COMMIT/.test(l))
      .join("\n")}`,
  );
  assert.match(saved, /-A PREROUTING -m comment --comment provision-multiwan -j PROVISION_MW_PRE/);
  assert.match(saved, /-A PROVISION_MW_POST -o eth1 -m connmark --mark 0x0\/0xff0000 -m comment --comment "isp1: mark new connections" -j CONNMARK --set-xmark 0x10000\/0xff0000/);
  assert.doesNotMatch((await pi.ssh("nft list tables")).stdout, /provision_multiwan/, "the nftables table is gone");

  const long = longConnection(16);
  const carrying = uplinkOf(await long.first);
  assert.ok(carrying >= 0);
  const tally = await split(100);
  assert.ok(!tally.failed && UPLINKS.every((u) => (tally[u.pi] ?? 0) > 20), `both uplinks carry new connections: ${JSON.stringify(tally)}`);
  lab.setUplinkOutside(1 - carrying, false);
  await untilHealth(UPLINKS[1 - carrying].name, "down", Date.now());
  lab.setUplinkOutside(1 - carrying, true);
  const verdict = await long.result;
  assert.deepEqual(verdict.addresses, [UPLINKS[carrying].pi], "the connection kept its uplink (CONNMARK)");
  assert.equal(verdict.error, null);
  assert.equal(verdict.answers, verdict.sent);
  const check = await cli("--inventory", inventory, withIptables, "--check");
  assert.equal(check.code, 0, check.output);

  const back = await timed("switch back to nftables", () => cli("--inventory", inventory, PLAYBOOK));
  assert.equal(back.code, 0, back.output);
  assert.doesNotMatch((await pi.ssh("iptables-save")).stdout, /PROVISION_MW|provision-multiwan/, "no iptables rule or chain of ours is left");
  assert.match((await pi.ssh("nft list tables")).stdout, /inet provision_multiwan/);
});
