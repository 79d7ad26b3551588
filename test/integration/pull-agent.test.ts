// The pull agent as users run it (`provision agent --config FILE`, a process in its own
// network namespace, joined to a real 3-node nats-server cluster), applying signed bundles
// with the push run's engine and transaction through the local transport into a real
// sshd test host's root and namespaces (nsenter, as test/integration/transport.test.ts).
// The controller side is a broker client process (test/support/pull-client.ts).
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parse, stringify } from "yaml";
import { createFleetSigningKey, sealBundle } from "../../core/pull/bundle.js";
import { createAuthority, issueController } from "../../core/pull/credentials.js";
import { DEVICE_PLAYBOOK_FORMAT } from "../../core/pull/device-plays.js";
import { desiredKey, deviceInbox, DESIRED_BUCKET, REPORTS_STREAM } from "../../core/pull/subjects.js";
import { startNatsCluster, waitFor, type NatsCluster } from "../support/nats-cluster.js";
import { startClient, type PullClient, setupBuckets } from "../support/pull-clients.js";
import { enterHost, startFleet, type TestFleet } from "../support/sshd-hosts.js";
import { uniqueName } from "../support/netns.js";
import { killPid, onCleanup, removeOnCleanup, run, sh } from "../support/processes.js";
import { repoRoot } from "../support/cache.js";

const CLI = join(repoRoot, "dist", "cli", "cli.js");
const PLUGIN = join(repoRoot, "test", "fixtures", "provision-plugin-motd", "index.js");
const PSK = "agent-psk 4b1d9e77c2";
const AGENT_ADDRESS = "10.77.0.50";
/** the sshd fleet's controller namespace on the cluster's bridge too: enrol tells the servers of a revocation */
const CONTROLLER_ADDRESS = "10.77.0.51";
const t0 = Date.now();

const signing = createFleetSigningKey();
const authority = createAuthority("agenttest");
let cluster: NatsCluster;
let fleet: TestFleet;
let ctl: PullClient;
let recipient: string;
let dir: string;
let agentNs: string;
let device: string;
let config: string;
let agent: { child: ChildProcess; output: () => string; stop: () => Promise<void> } | undefined;

const text = (v: string) => Buffer.from(v, "base64").toString("utf8");
const motd = async () => (await fleet.exec(fleet.hosts[0], ["cat", "/etc/motd"])).stdout;

type Task = { name: string; module: string; args: Record<string, unknown> };
/** Publish a bundle as provision publish does: the prepared plays, the PSK among its values (encrypted to the device). */
async function publish(version: number, tasks: Task[], confirmTimeout = 300): Promise<void> {
  const playbook = { format: DEVICE_PLAYBOOK_FORMAT, plays: [{ name: "site", confirm_timeout: confirmTimeout, tasks, handlers: [] }], secrets: [PSK] };
  const bytes = await sealBundle({ device, version, playbook }, { signingKey: signing.privatePem, recipient, secrets: [PSK], expires: new Date(Date.now() + 3_600_000) });
  await ctl.call("put", { bucket: DESIRED_BUCKET, key: desiredKey(device), value: Buffer.from(bytes).toString("base64") });
}

async function reports(kind: string): Promise<Record<string, unknown>[]> {
  const messages = await ctl.call("read", { stream: REPORTS_STREAM, filter: `reports.${device}.${kind}` });
  return messages.map((m: { data: string }) => JSON.parse(text(m.data)));
}

async function result(version: number, ms = 60_000): Promise<Record<string, unknown>> {
  let found: Record<string, unknown> | undefined;
  await waitFor(
    async () => !!(found = (await reports("result")).find((r) => r.version === version)),
    ms,
    `the agent's result for version ${version} (agent output:\n${agent?.output()})`,
  );
  return found!;
}

function startAgent() {
  const child = spawn("ip", ["netns", "exec", agentNs, "node", CLI, "agent", "--config", config], { cwd: repoRoot, stdio: ["ignore", "pipe", "pipe"] });
  let output = "";
  child.stdout!.on("data", (d) => (output += d));
  child.stderr!.on("data", (d) => (output += d));
  const unregister = onCleanup("pull agent", () => killPid(child.pid, "SIGKILL"));
  const exited = new Promise((r) => child.on("close", r));
  return {
    child,
    output: () => output,
    stop: async () => {
      killPid(child.pid, "SIGTERM");
      await Promise.race([exited, new Promise((r) => setTimeout(r, 5000))]);
      unregister();
    },
  };
}

const hostCreds = async () => (await fleet.exec(fleet.hosts[0], ["cat", "/etc/provision/agent.creds"])).stdout;

/** provision enrol over SSH, as users run it, with a fleet folder; the test host has no systemd: a systemctl that records what it is asked. */
async function enrolHost(): Promise<{ stdout: string }> {
  const fleetDir = join(dir, "fleet");
  if (!existsSync(fleetDir)) {
    mkdirSync(fleetDir);
    writeFileSync(join(fleetDir, "fleet.yaml"), stringify({ name: "agenttest", servers: cluster.servers }));
    writeFileSync(join(fleetDir, "authority.json"), JSON.stringify(authority), { mode: 0o600 });
    writeFileSync(join(fleetDir, "signing.pub"), signing.publicPem);
    writeFileSync(join(fleetDir, "controller.creds"), (await issueController(authority)).creds, { mode: 0o600 });
  }
  await fleet.exec(
    fleet.hosts[0],
    ["sh", "-c", "cat > /usr/local/bin/systemctl && chmod 755 /usr/local/bin/systemctl"],
    readFileSync(join(repoRoot, "test", "support", "fake-systemctl.sh"), "utf8"),
  );
  const inventory = join(dir, "hosts.yaml");
  fleet.writeInventory(inventory, { groupName: "pis" });
  const t = Date.now();
  const r = await run(fleet.controllerArgv(["node", CLI, "enrol", "--inventory", inventory, "--limit", device, "--fleet-dir", fleetDir]), { cwd: repoRoot });
  console.log(`enrol (with provision's code) over SSH: ${Date.now() - t} ms`);
  assert.equal(r.code, 0, r.stdout + r.stderr);
  const record = JSON.parse(readFileSync(join(fleetDir, "devices", `${device}.json`), "utf8"));
  recipient = record.age_recipient;
  const modes = await fleet.exec(fleet.hosts[0], [
    "stat",
    "-c",
    "%n %a",
    "/etc/provision/agent.creds",
    "/etc/provision/agent.age",
    "/etc/provision/fleet.pub",
    "/etc/systemd/system/provision-agent.service",
  ]);
  assert.equal(modes.stdout, "/etc/provision/agent.creds 600\n/etc/provision/agent.age 600\n/etc/provision/fleet.pub 644\n/etc/systemd/system/provision-agent.service 644\n");
  const calls = await fleet.exec(fleet.hosts[0], ["cat", "/var/log/fake-systemctl"]);
  assert.match(calls.stdout, /^daemon-reload\nenable --now provision-agent.service\n/m);
  assert.equal((await fleet.exec(fleet.hosts[0], ["test", "-f", "/opt/provision/dist/cli/cli.js"])).code, 0, "provision's code installed");
  const seed = (await hostCreds()).split("\n").find((l) => /^SU[A-Z0-9]{50,}$/.test(l));
  const identity = (await fleet.exec(fleet.hosts[0], ["cat", "/etc/provision/agent.age"])).stdout.trim();
  assert.ok(seed && identity.startsWith("AGE-SECRET-KEY-1"), "the device's own NKey seed and age identity are installed");
  for (const secret of [seed, identity]) assert.ok(!(r.stdout + r.stderr).includes(secret), "enrol printed a secret");
  return r;
}

before(async () => {
  [cluster, fleet] = await Promise.all([startNatsCluster({ authority }), startFleet({ count: 1, prefix: "pa" })]);
  device = fleet.hosts[0].name;
  ctl = startClient(cluster.hubNs, "controller");
  await ctl.call("connect", { servers: cluster.servers, creds: (await issueController(authority)).creds, name: "controller" });
  await setupBuckets(ctl);
  // the agent's own namespace, on the cluster's bridge: its link can be cut without touching anything else
  agentNs = uniqueName("pagent");
  sh(["ip", "netns", "add", agentNs]);
  onCleanup(`netns ${agentNs}`, () => sh(["ip", "netns", "delete", agentNs], { allowFail: true }));
  sh(["ip", "-n", cluster.hubNs, "link", "add", "vagent", "type", "veth", "peer", "name", "eth0", "netns", agentNs]);
  sh(["ip", "-n", cluster.hubNs, "link", "set", "vagent", "master", "br0", "up"]);
  sh(["ip", "-n", agentNs, "-batch", "-"], { input: `link set lo up\naddr add ${AGENT_ADDRESS}/24 dev eth0\nlink set eth0 up\n` });
  sh(["ip", "-n", cluster.hubNs, "link", "add", "vctl", "type", "veth", "peer", "name", "nats0", "netns", fleet.controllerNs]);
  sh(["ip", "-n", cluster.hubNs, "link", "set", "vctl", "master", "br0", "up"]);
  sh(["ip", "-n", fleet.controllerNs, "-batch", "-"], { input: `addr add ${CONTROLLER_ADDRESS}/24 dev nats0\nlink set nats0 up\n` });

  dir = mkdtempSync(join(tmpdir(), "provision-agent-"));
  removeOnCleanup(dir);
  await enrolHost();
  // the agent runs here (the test host has no node), with the files enrolment installed in the host's root
  const root = `/proc/${fleet.hosts[0].pid}/root`;
  const installed = parse((await fleet.exec(fleet.hosts[0], ["cat", "/etc/provision/agent.yaml"])).stdout);
  config = join(dir, "agent.yaml");
  writeFileSync(
    config,
    stringify({
      ...installed,
      credentials: root + installed.credentials,
      identity: root + installed.identity,
      verify_key: root + installed.verify_key,
      state_dir: join(dir, "state"),
      plugins: [PLUGIN],
      command_prefix: enterHost(fleet.hosts[0].pid),
      // short, so that a test sees several audits and heartbeats (the defaults: 5m ± 1m, 10m)
      audit_interval: "2s",
      audit_splay: "1s",
      heartbeat_interval: "5s",
    }),
  );
  agent = startAgent();
  console.log(`pull agent: cluster, test host and agent up in ${Date.now() - t0} ms`);
});

after(async () => {
  await agent?.stop();
  await ctl?.close();
  cluster?.stop();
  await fleet?.stop();
  console.log(`pull agent tests: ${Date.now() - t0} ms in all`);
});

test("the agent applies a bundle with the engine through the local transport, confirms it from outside and reports it; the same again changes nothing", async () => {
  let t = Date.now();
  await publish(1, [{ name: "message", module: "motd", args: { message: "hello from version 1" } }]);
  const first = await result(1);
  console.log(`publish to applied and reported: ${Date.now() - t} ms`);
  assert.equal(first.outcome, "applied", JSON.stringify(first));
  // the result carries the run's --report JSON: the host, its task and the change it made
  const report = first.report as { mode: string; hosts: { host: string; status: string; tasks: { name: string; changes: { path?: string }[] }[] }[] };
  assert.equal(report.mode, "apply");
  assert.deepEqual(
    report.hosts.map((h) => [h.host, h.status, h.tasks.map((t) => [t.name, t.changes.map((c) => c.path)])]),
    [[device, "changed", [["message", ["/etc/motd"]]]]],
    "the result's report names the host, its task and the file it changed",
  );
  assert.equal(await motd(), "hello from version 1\n", "the file is on the test host, not on this machine");
  assert.ok(
    (await reports("confirm")).some((c) => c.version === 1),
    "confirmed by an acknowledged publish",
  );
  const state = join(dir, "state", "state.json");
  const recorded = JSON.parse(readFileSync(state, "utf8"));
  assert.deepEqual([recorded.tried.version, recorded.tried.phase, recorded.tried.outcome, recorded.applied], [1, "done", "applied", 1]);
  assert.match(recorded.tried.runId, /^\d{8}T\d{6}-[0-9a-f]{6}$/, "the run's id: its transaction on the host");
  assert.equal(statSync(state).mode & 0o777, 0o600);
  // the host's own transaction record: committed, as after a push run
  const last = (await fleet.exec(fleet.hosts[0], ["sh", "-c", 'cat "/var/lib/provision/runs/$(cat /var/lib/provision/last)/state"'])).stdout.trim();
  assert.equal(last, "committed");

  t = Date.now();
  await publish(2, [{ name: "message", module: "motd", args: { message: "hello from version 1" } }]);
  const second = await result(2);
  console.log(`identical publish to reported: ${Date.now() - t} ms`);
  assert.deepEqual([second.outcome, second.detail], ["applied", "no changes"]);
  assert.equal(await motd(), "hello from version 1\n");
});

test("a bundle whose verification fails is rolled back, reported failed, and not tried again after a restart", async () => {
  await publish(3, [{ name: "message", module: "motd", args: { message: "hello from version 3", require_file: "/nonexistent/health" } }]);
  const third = await result(3);
  assert.equal(third.outcome, "failed");
  assert.match(String(third.detail), /rolled back: .*\/nonexistent\/health does not exist/);
  assert.equal(await motd(), "hello from version 1\n", "the file as before the run");

  await agent!.stop();
  agent = startAgent();
  await waitFor(() => /connected to/.test(agent!.output()), 30_000, "the restarted agent to connect");
  await new Promise((r) => setTimeout(r, 3000));
  assert.equal((await reports("result")).filter((r) => r.version === 3).length, 1, "version 3 was not applied again");
  assert.doesNotMatch(agent!.output(), /hello from version 3|set the message of the day/);
  assert.equal(await motd(), "hello from version 1\n");
});

test("cut off from the cluster after applying: not confirmed, so the run is undone; reported reverted once the cluster is back", async () => {
  const log = () => agent!.output();
  await publish(
    4,
    [
      { name: "hold", module: "pause", args: { seconds: 3 } },
      { name: "message", module: "motd", args: { message: "hello from version 4" } },
    ],
    6,
  );
  // the pause task notes its start in the host's /tmp/pause-window: the batch is running
  await waitFor(async () => (await fleet.exec(fleet.hosts[0], ["test", "-s", "/tmp/pause-window"])).code === 0, 30_000, `the agent to start version 4:\n${log()}`);
  sh(["ip", "-n", agentNs, "link", "set", "eth0", "down"]);
  try {
    await waitFor(async () => (await motd()) === "hello from version 4\n", 15_000, "version 4 on the host");
    await waitFor(async () => (await motd()) === "hello from version 1\n", 30_000, "the unconfirmed run undone");
  } finally {
    sh(["ip", "-n", agentNs, "link", "set", "eth0", "up"]);
  }
  const fourth = await result(4, 60_000);
  assert.equal(fourth.outcome, "reverted", JSON.stringify(fourth));
  assert.match(String(fourth.detail), /not confirmed from outside/);
});

test("the PSK is in no stored message in clear, nor in the agent's output", async () => {
  const stored = [
    ...(await ctl.call("read", { stream: REPORTS_STREAM, filter: "reports.>" })),
    ...(await ctl.call("read", { stream: `KV_${DESIRED_BUCKET}`, filter: `$KV.${DESIRED_BUCKET}.>` })),
  ];
  assert.ok(stored.length >= 8, `read the streams (${stored.length} messages)`);
  for (const m of stored) {
    const raw = text(m.data);
    assert.ok(!raw.includes(PSK), `${m.subject} holds the PSK`);
    if (m.subject.startsWith("$KV.")) assert.ok(!Buffer.from(JSON.parse(raw).payload, "base64").toString("utf8").includes(PSK), `${m.subject}'s payload holds the PSK`);
  }
  assert.ok(!agent!.output().includes(PSK));
});

/** provision status --fleet as users run it, on the cluster's bridge. */
async function fleetStatus(): Promise<{ code: number; stdout: string; rows: { device: string; applied?: number; drift: string; lastSeen?: string }[] }> {
  const argv = ["ip", "netns", "exec", cluster.hubNs, process.execPath, CLI, "status", "--fleet", "--json", "--fleet-dir", join(dir, "fleet")];
  const r = await run(argv, { cwd: repoRoot });
  assert.ok(r.stdout.startsWith("["), r.stdout + r.stderr);
  return { code: r.code, stdout: r.stdout, rows: JSON.parse(r.stdout) };
}

test("periodic audits report only a changed result; heartbeats say the device is alive; a drifted device shows drift in status --fleet", async () => {
  await publish(5, [{ name: "message", module: "motd", args: { message: "hello from version 5" } }]);
  assert.equal((await result(5)).outcome, "applied");
  // the first audit after the apply is a change (nothing was reported for version 5): sent, in sync
  let audits: Record<string, unknown>[] = [];
  await waitFor(async () => (audits = (await reports("audit")).filter((a) => a.version === 5)).length > 0, 20_000, `an audit of version 5:\n${agent!.output()}`);
  assert.deepEqual([audits[0].drift, audits[0].changed, audits[0].applied], [false, 0, 5]);
  const auditReport = audits[0].report as { mode: string; hosts: { host: string }[] };
  assert.deepEqual([auditReport.mode, auditReport.hosts[0].host], ["check", device], "the check run's --report JSON");
  // more audits run (every 2 s ± 1 s), all unchanged: none is sent
  const ran = () => (agent!.output().match(/audit of version 5: in sync/g) ?? []).length;
  const before = ran();
  await waitFor(async () => ran() >= before + 3, 20_000, `three more audits:\n${agent!.output()}`);
  assert.equal((await reports("audit")).filter((a) => a.version === 5).length, 1, "an unchanged audit sends no report");
  const beats = (await reports("heartbeat")).filter((h) => h.applied === 5);
  assert.ok(beats.length >= 1, "a heartbeat (every 5 s without another report)");
  let status = await fleetStatus();
  assert.deepEqual(
    status.rows.map((r) => [r.device, r.applied, r.drift]),
    [[device, 5, "in sync"]],
    status.stdout,
  );

  // someone edits the file on the host: the next audit finds drift, reports it, status --fleet shows it
  const t = Date.now();
  await fleet.exec(fleet.hosts[0], ["sh", "-c", "echo edited by hand > /etc/motd"]);
  await waitFor(async () => (status = await fleetStatus()).rows[0]?.drift === "drift", 20_000, `drift in status --fleet:\n${agent!.output()}`);
  console.log(`drift on the host to "drift" in status --fleet: ${Date.now() - t} ms`);
  assert.equal(status.code, 1, "drift: exit 1");
  const drifted = (await reports("audit")).filter((a) => a.version === 5 && a.drift === true);
  assert.equal(drifted.length, 1, "reported once");
  assert.equal(drifted[0].changed, 1);
  assert.equal(await motd(), "edited by hand\n", "an audit changes nothing");
  const table = await run(["ip", "netns", "exec", cluster.hubNs, process.execPath, CLI, "status", "--fleet", "--fleet-dir", join(dir, "fleet")], { cwd: repoRoot });
  assert.match(table.stdout, new RegExp(`^${device}\\s+v5\\s+v5\\s+\\d+s ago\\s+drift`, "m"), table.stdout);
});

/**
 * The test host stands in for a Pi whose playbook reboots it: its `reboot` only records that
 * it was asked (test/support/fake-reboot.sh, first on the host's PATH), and the host has no
 * systemd (reboot.sh then calls `reboot`): nothing can reach this machine's systemd. Its
 * "boot" is the agent started again, as systemd does after a real one (test/lab/pull.test.ts).
 */
async function installFakeReboot(): Promise<void> {
  await fleet.exec(
    fleet.hosts[0],
    ["sh", "-c", "cat > /usr/local/sbin/reboot && chmod 755 /usr/local/sbin/reboot"],
    readFileSync(join(repoRoot, "test", "support", "fake-reboot.sh"), "utf8"),
  );
  const where = await fleet.exec(fleet.hosts[0], ["sh", "-c", "command -v reboot; test ! -e /run/systemd/system && echo no-systemd"]);
  assert.equal(where.stdout, "/usr/local/sbin/reboot\nno-systemd\n", "the host's reboot is the fake one, and it has no systemd");
}

const rebootsAsked = async () => (await fleet.exec(fleet.hosts[0], ["sh", "-c", "cat /var/log/fake-reboot 2>/dev/null | wc -l"])).stdout.trim();
const hostRun = async () =>
  (
    await fleet.exec(fleet.hosts[0], [
      "sh",
      "-c",
      'id=$(cat /var/lib/provision/last); echo "$id $(cat /var/lib/provision/runs/$id/state) $(cat /var/lib/provision/lock 2>/dev/null)"',
    ])
  ).stdout.trim();
const pauses = async () => (await fleet.exec(fleet.hosts[0], ["sh", "-c", "cat /tmp/pause-window 2>/dev/null | wc -l"])).stdout.trim();

/** Publish a bundle that reboots, wait until the agent has asked for the reboot; nothing is reported yet. */
async function publishRebooting(version: number, tasks: Task[], after: Task[] = []): Promise<{ runId: string }> {
  const asked = Number(await rebootsAsked());
  // the test host has no systemd to arm: unguarded (the armed case runs in test/lab/pull.test.ts)
  await publish(version, [...tasks, { name: "reboot", module: "reboot", args: { when: "always", timeout: 60 } }, ...after], 0);
  const state = join(dir, "state", "state.json");
  await waitFor(
    () => existsSync(state) && JSON.parse(readFileSync(state, "utf8")).tried?.phase === "reboot-pending",
    60_000,
    `the agent to reboot for version ${version}:\n${agent!.output()}`,
  );
  await waitFor(async () => Number(await rebootsAsked()) === asked + 1, 10_000, "the reboot to be asked for");
  const tried = JSON.parse(readFileSync(state, "utf8")).tried;
  assert.equal(tried.version, version);
  assert.equal(tried.resume.task, tasks.length, "it goes on after the reboot task");
  assert.equal(statSync(join(dir, "state", "bundle")).mode & 0o777, 0o600, "the bundle kept for after the boot");
  assert.ok(!readFileSync(join(dir, "state", "bundle"), "utf8").includes(PSK), "kept as signed: the PSK encrypted");
  const [id, runState, ...lock] = (await hostRun()).split(" ");
  assert.deepEqual([id, runState], [tried.runId, "pending"], "the host's record: the run pending");
  assert.match(lock.join(" "), new RegExp(`run=${tried.runId}$`), "its lock kept over the reboot");
  await new Promise((r) => setTimeout(r, 1500));
  assert.equal((await reports("result")).filter((r) => r.version === version).length, 0, "no result before the boot");
  return { runId: tried.runId };
}

/** "The boot": the agent stopped (as the reboot stops it) and started again, as systemd does. */
async function boot(): Promise<void> {
  await agent!.stop();
  agent = startAgent();
}

test("a bundle that reboots this machine: no result before the boot; after it the agent takes the run up again, applies the rest, verifies, confirms and commits it", async () => {
  await installFakeReboot();
  const pausesBefore = await pauses();
  const { runId } = await publishRebooting(
    6,
    [{ name: "message", module: "motd", args: { message: "hello from version 6" } }],
    [{ name: "after the boot", module: "pause", args: { seconds: 1 } }],
  );
  assert.equal(await motd(), "hello from version 6\n", "applied before the reboot");
  assert.equal(await pauses(), pausesBefore, "not yet the task after the reboot");
  // a newer version meanwhile waits for the boot and the end of the run
  await publish(7, [{ name: "message", module: "motd", args: { message: "hello from version 7" } }]);
  await waitFor(() => agent!.output().includes("version 7 waits"), 20_000, `version 7 held:\n${agent!.output()}`);
  assert.equal(await motd(), "hello from version 6\n");
  const t = Date.now();
  await boot();
  const sixth = await result(6);
  console.log(`after the "boot": run taken up again, verified, confirmed and reported in ${Date.now() - t} ms`);
  assert.deepEqual([sixth.outcome, sixth.detail], ["applied", undefined], JSON.stringify(sixth));
  // the report of the run after the boot says what the tasks before it did: changed, not "ok"
  const report = sixth.report as { hosts: { status: string; tasks: { name: string; status: string; notes: string[] }[] }[] };
  assert.deepEqual(
    report.hosts[0].tasks.map((t) => [t.name, t.status, t.notes.includes("changed before the reboot")]),
    [
      ["message", "changed", true],
      ["reboot", "changed", true],
      ["after the boot", "changed", false],
    ],
    JSON.stringify(report.hosts[0].tasks),
  );
  assert.equal(report.hosts[0].status, "changed");
  assert.match(agent!.output(), new RegExp(`taking run ${runId} up again after this machine's reboot`));
  assert.ok(
    (await reports("confirm")).some((c) => c.version === 6),
    "confirmed from outside after the boot",
  );
  assert.equal(await pauses(), String(Number(pausesBefore) + 2), "the task after the reboot ran once");
  assert.equal(await rebootsAsked(), "1", "one reboot, not a loop");
  // version 7 (published while the run waited for its boot) comes after it
  assert.equal((await result(7)).outcome, "applied");
  assert.equal(await motd(), "hello from version 7\n");
  assert.match(await hostRun(), / committed$/, "committed, the lock given back");
  const six = (await fleet.exec(fleet.hosts[0], ["cat", `/var/lib/provision/runs/${runId}/state`])).stdout.trim();
  assert.equal(six, "committed", "version 6's run committed");
});

test("a run taken up again after its reboot whose verification fails is rolled back (the machine boots into the restored files) and reported failed", async () => {
  const before = await motd();
  await publishRebooting(8, [{ name: "message", module: "motd", args: { message: "hello from version 8", require_file: "/nonexistent/after-boot" } }]);
  assert.equal(await motd(), "hello from version 8\n");
  await boot();
  const eighth = await result(8);
  assert.equal(eighth.outcome, "failed", JSON.stringify(eighth));
  assert.match(String(eighth.detail), /rolled back: verification failed: .*\/nonexistent\/after-boot does not exist/);
  assert.equal(await motd(), before, "restored");
  assert.match(await hostRun(), / rolled_back$/, "rolled back, the lock given back");
  await waitFor(async () => (await rebootsAsked()) === "3", 10_000, "a second reboot, into the restored files");
  // after that boot: nothing left to do, version 8 not tried again
  await boot();
  await waitFor(() => /connected to/.test(agent!.output()), 30_000, "the agent to connect");
  await new Promise((r) => setTimeout(r, 2000));
  assert.equal((await reports("result")).filter((r) => r.version === 8).length, 1, "reported once");
  assert.equal(await rebootsAsked(), "3");
});

// last: re-enrolment revokes the credentials the running agent uses
test("enrolled again: the host gets new credentials, and the cluster refuses the old ones", async () => {
  const old = await hostCreds();
  const r = await enrolHost();
  assert.match(r.stdout, /revoked the previous NATS user of 1 re-enrolled device\(s\); servers that took the account: n1, n2, n3/);
  const renewed = await hostCreds();
  assert.notEqual(renewed, old, "new credentials on the host");
  const connects = async (creds: string) => {
    const client = startClient(cluster.hubNs, `${device}-creds`);
    try {
      await client.call("connect", { servers: cluster.servers, creds, inboxPrefix: deviceInbox(device), name: device });
      return true;
    } catch (error) {
      assert.match(String(error), /Authorization Violation|cannot connect/);
      return false;
    } finally {
      await client.close();
    }
  };
  assert.equal(await connects(old), false, "the old credentials are refused");
  assert.equal(await connects(renewed), true, "the new ones connect");
});
