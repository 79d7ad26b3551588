// The controller's pull-mode command line (provision fleet / publish / rollout / status --fleet),
// run as the real CLI in the controller's namespace against a real 3-node nats-server
// cluster, with simulated devices (test/support/pull-client.ts: real credentials, real
// bundle checks, a chosen outcome instead of the engine).
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { decode, fmtCreds } from "@nats-io/jwt";
import { createUser } from "@nats-io/nkeys";
import { createDeviceKey } from "../../core/pull/bundle.js";
import { parseAuthority } from "../../core/pull/credentials.js";
import { signRequest } from "../../core/pull/enrolment.js";
import { desiredKey, deviceInbox, DESIRED_BUCKET, enrolInbox, REPORTS_STREAM } from "../../core/pull/subjects.js";
import { startNatsCluster, waitFor, type NatsCluster } from "../support/nats-cluster.js";
import { connectRefused, startClient, type PullClient, setupBuckets } from "../support/pull-clients.js";
import { onCleanup, run } from "../support/processes.js";
import { CLI } from "./provision-cli.js";

const SECRET = "wlsecret7";
const dir = mkdtempSync(join(tmpdir(), "fleet-cli-"));
const fleetDir = join(dir, "fleet");
const out = join(dir, "device-files");
const names = ["d6", "d1", "d2", "d3", "d4", "d5"]; // inventory order: d6 (a bad device) is the canary when it is included
let cluster: NatsCluster;
let ctl: PullClient;
const clients = new Map<string, PullClient>();
const t0 = Date.now();
onCleanup(`fleet cli folder ${dir}`, () => rmSync(dir, { recursive: true, force: true }));

const text = (v: string) => Buffer.from(v, "base64").toString("utf8");

async function cli(args: string[], opts: { input?: string } = {}) {
  const r = await run(["ip", "netns", "exec", cluster?.hubNs ?? "", process.execPath, CLI, ...args], {
    cwd: dir,
    env: { ...process.env, PROVISION_FLEET_DIR: fleetDir, PROVISION_AGE_IDENTITY: "" },
    input: opts.input,
  });
  return { ...r, output: r.stdout + r.stderr };
}
const local = async (args: string[], opts: { input?: string } = {}) => {
  const r = await run([process.execPath, CLI, ...args], { cwd: dir, env: { ...process.env, PROVISION_FLEET_DIR: fleetDir }, input: opts.input });
  return { ...r, output: r.stdout + r.stderr };
};

/** The inventory: every device, with the encrypted value used as an interface name (secret whatever it is called). */
function writeInventory(sealed: string): void {
  writeFileSync(
    join(dir, "pis.yaml"),
    [
      "all:",
      "  vars:",
      "    age_identity_file: fleet-age.key",
      `    secret_if: ${sealed.trimEnd()}`,
      "  children:",
      "    pis:",
      "      hosts:",
      ...names.map((n, i) => `        ${n}: { address: 192.0.2.${i + 10} }`),
      "",
    ].join("\n"),
  );
}
const playbook = (interfaces: string[]) => {
  const file = join(dir, "deny.yaml");
  writeFileSync(
    file,
    `- hosts: pis\n  tasks:\n    - name: keep dhcpcd off\n      dhcpcd_deny: { interfaces: [${interfaces.map((i) => JSON.stringify(i)).join(", ")}, "{{ secret_if }}"] }\n`,
  );
  return file;
};

async function desiredVersion(device: string): Promise<number> {
  const entry = await ctl.call("get", { bucket: DESIRED_BUCKET, key: desiredKey(device) });
  return JSON.parse(text(JSON.parse(text(entry.value)).payload)).version;
}
const applied = (device: string, version: number) => clients.get(device)!.events.filter((e) => e.event === "apply" && e.version === version);

before(async () => {
  const init = await local(["fleet", "init", "--name", "clitest", "--server", "10.77.0.11:4222", "--server", "10.77.0.12:4222", "--server", "10.77.0.13:4222"]);
  assert.equal(init.code, 0, init.output);
  cluster = await startNatsCluster({ authority: parseAuthority(readFileSync(join(fleetDir, "authority.json"), "utf8"), "authority.json") });
  ctl = startClient(cluster.hubNs, "reader");
  await ctl.call("connect", { servers: cluster.servers, creds: readFileSync(join(fleetDir, "controller.creds"), "utf8"), name: "reader" });
  // the buckets exist before the devices watch their keys, as once a fleet is running (a device that
  // starts watching a bucket not made yet may see its first bundle only at its next periodic read);
  // JetStream needs its meta leader first. publish then finds them and changes nothing.
  await setupBuckets(ctl);
  const keygen = await local(["secret", "keygen", "fleet-age.key"]);
  assert.equal(keygen.code, 0, keygen.output);
  const sealed = await local(["secret", "encrypt", "--recipient", keygen.stdout.trim(), "--indent", "6"], { input: SECRET });
  assert.equal(sealed.code, 0, sealed.output);
  writeInventory(sealed.stdout);
  mkdirSync(out);
  const verifyKey = readFileSync(join(fleetDir, "signing.pub"), "utf8");
  for (const name of names) {
    const made = await local(["fleet", "device", name, "--out", out]);
    assert.equal(made.code, 0, made.output);
    const client = startClient(cluster.hubNs, name);
    await client.call("connect", { servers: cluster.servers, creds: readFileSync(join(out, `${name}.creds`), "utf8"), inboxPrefix: deviceInbox(name), name });
    await client.call("follow", {
      device: name,
      verifyKey,
      identity: readFileSync(join(out, `${name}.age`), "utf8").trim(),
      outcome: name === "d6" ? "reverted" : "applied",
      ...(name === "d1" ? { applyMs: 8000 } : {}),
    });
    clients.set(name, client);
  }
  console.log(`fleet cli: fleet, cluster and ${names.length} devices up in ${Date.now() - t0} ms`);
});

after(async () => {
  await Promise.all([ctl, ...clients.values()].filter(Boolean).map((c) => c.close()));
  cluster?.stop();
  console.log(`fleet cli tests: ${Date.now() - t0} ms in all`);
});

test("a fleet.yaml mistake is named by file, line and column", async () => {
  const bad = join(dir, "bad-fleet");
  mkdirSync(bad);
  writeFileSync(join(bad, "fleet.yaml"), 'name: x\nservers:\n  - "10.0.0.1"\nbundle_expiry: 3 weeks\n');
  const r = await local(["status", "--fleet", "--fleet-dir", bad]);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /fleet\.yaml:3:\d+/, r.output);
  assert.doesNotMatch(r.stderr, /at .*\.js:\d+/, "no stack trace");
  const missing = await local(["publish", "--fleet-dir", join(dir, "nowhere"), "--inventory", "pis.yaml", "x.yaml"]);
  assert.equal(missing.code, 1);
  assert.match(missing.stderr, /fleet\.yaml: missing\. .* provision fleet init/, missing.output);
});

test("publish: each device gets its own signed bundle with the secret encrypted to it; the same again is unchanged", async () => {
  const pb = playbook(["eth5"]);
  let r = await cli(["publish", "--inventory", "pis.yaml", "--limit", "pis,!d6", pb]);
  // JetStream needs its meta leader before the buckets can be made: the first publish may have to wait
  await waitFor(
    async () => {
      if (r.code !== 0) r = await cli(["publish", "--inventory", "pis.yaml", "--limit", "pis,!d6", pb]);
      return r.code === 0;
    },
    30_000,
    `the first publish to succeed (${r.output})`,
  );
  for (const n of ["d1", "d2", "d3", "d4", "d5"]) assert.match(r.stdout, new RegExp(`^${n}: v1 published \\(new, 1 secret\\(s\\) encrypted`, "m"), r.output);
  assert.match(r.stdout, /5 device\(s\): 5 new, 0 changed, 0 unchanged/);
  assert.ok(!r.output.includes(SECRET), "the secret is not printed");
  for (const n of ["d1", "d2", "d3", "d4", "d5"]) {
    const e = await clients.get(n)!.waitEvent((e) => e.event === "apply" && e.version === 1, 10_000, `${n} applying v1`);
    const task = e.playbook.plays[0].tasks[0];
    assert.equal(task.module, "dhcpcd_deny");
    assert.deepEqual(task.args.interfaces, ["eth5", SECRET], "the device decrypted its secret");
  }
  assert.equal(applied("d6", 1).length, 0, "d6 is outside --limit");

  const again = await cli(["publish", "--inventory", "pis.yaml", "--limit", "pis,!d6", pb]);
  assert.equal(again.code, 0, again.output);
  assert.match(again.stdout, /5 device\(s\): 0 new, 0 changed, 5 unchanged/, again.output);
  assert.match(again.stdout, /^d3: v1 unchanged$/m);
  await new Promise((r) => setTimeout(r, 300));
  assert.equal(await desiredVersion("d3"), 1);
  // nothing stored holds the secret in clear
  for (const m of [...(await ctl.call("read", { stream: "KV_desired", filter: "$KV.desired.>" })), ...(await ctl.call("read", { stream: REPORTS_STREAM, filter: "reports.>" }))])
    assert.ok(!text(m.data).includes(SECRET) && !text(JSON.parse(text(m.data)).payload ?? "").includes(SECRET), `${m.subject} holds the secret`);
});

test("rollout start: canary then growing waves to done, with a progress display and a summary; show", async () => {
  const r = await cli([
    "rollout",
    "start",
    "--inventory",
    "pis.yaml",
    "--limit",
    "pis,!d6",
    "--id",
    "r1",
    "--canary",
    "1",
    "--growth",
    "2",
    "--tick-ms",
    "50",
    playbook(["eth5", "eth6"]),
  ]);
  assert.equal(r.code, 0, r.output);
  assert.match(r.stdout, /^rollout r1 v2 open: wave 1\/4, 0\/5 done, 0 failed, 0 reverted, 0 timed out, 1 waiting/m, r.stdout);
  assert.match(r.stdout, /rollout r1 v2 open: wave 4\/4/);
  assert.match(r.stdout, /^rollout r1 v2 done after [\d.]+s: 5 device\(s\) in 4 wave\(s\), 4 opened\n {2}5 applied, 0 failed, 0 reverted, 0 timed out, 0 untouched/m);
  for (const n of ["d1", "d2", "d3", "d4", "d5"]) assert.equal(applied(n, 2).length, 1, `${n} applied v2 once`);
  const show = await cli(["rollout", "show", "r1"]);
  assert.equal(show.code, 0, show.output);
  assert.match(show.stdout, /^rollout r1 v2: done/);
  assert.match(show.stdout, /canary {2}\s+1 device\(s\) opened .*: 1 applied/);
  assert.match(show.stdout, /wave 2 \s+2 device\(s\) opened .*: 2 applied/);
});

test("a failing canary aborts the rollout (exit 1) with the other devices untouched", async () => {
  const r = await cli(["rollout", "start", "--inventory", "pis.yaml", "--id", "r2", "--canary", "1", "--max-fail-percentage", "10", "--tick-ms", "50", playbook(["eth7"])]);
  assert.equal(r.code, 1, r.output);
  assert.match(r.stdout, /rollout r2 v3 ABORTED after [\d.]+s: 6 device\(s\) in \d+ wave\(s\), 1 opened\n {2}0 applied, 0 failed, 1 reverted, 0 timed out, 5 untouched/, r.stdout);
  assert.match(r.stdout, /reason: 1 of 1 devices that reported failed, reverted or timed out/);
  assert.match(r.stdout, /d6: reverted: simulated reverted/);
  for (const n of ["d1", "d2", "d3", "d4", "d5"]) {
    assert.equal(await desiredVersion(n), 2, `${n} still has v2`);
    assert.equal(applied(n, 3).length, 0);
  }
  const show = await cli(["rollout", "show", "r2"]);
  assert.equal(show.code, 1);
  assert.match(show.stdout, /^rollout r2 v3: aborted/);
});

test("pause holds the next wave until resume; the rollout then ends done", async () => {
  const pb = playbook(["eth8"]);
  const running = cli(["rollout", "start", "--inventory", "pis.yaml", "--limit", "pis,!d6", "--id", "r3", "--canary", "1", "--tick-ms", "50", pb]);
  // d1 (the canary) takes 8 s to apply: pause while it does (a loaded machine starts the pause command slowly)
  await clients.get("d1")!.waitEvent((e) => e.event === "apply" && e.playbook.plays[0].tasks[0].args.interfaces[0] === "eth8", 15_000, "the canary applying");
  const pause = await cli(["rollout", "pause", "r3", "--reason", "looking at the canary"]);
  assert.equal(pause.code, 0, pause.output);
  let shown = "";
  for (const deadline = Date.now() + 20_000; !/^rollout r3 v4: paused \(looking at the canary\)/.test(shown);) {
    assert.ok(Date.now() < deadline, `r3 not paused within 20 s: ${shown}`);
    shown = (await cli(["rollout", "show", "r3"])).output;
  }
  await clients.get("d1")!.waitEvent((e) => e.event === "device" && e.type === "result" && e.version === 4, 10_000, "the canary's result");
  await new Promise((r) => setTimeout(r, 1000));
  const show = await cli(["rollout", "show", "r3"]);
  assert.match(show.stdout, /wave 1 \s+1 device\(s\): 1 not opened/, show.stdout);
  for (const n of ["d2", "d3", "d4", "d5"]) assert.equal(applied(n, 4).length, 0, `${n} waits while paused`);
  const resume = await cli(["rollout", "resume", "r3"]);
  assert.equal(resume.code, 0, resume.output);
  const done = await running;
  assert.equal(done.code, 0, done.output);
  assert.match(done.stdout, /rollout r3 v4 paused: wave 1\//);
  assert.match(done.stdout, /rollout r3 v4 done after/);
  const late = await cli(["rollout", "abort", "r3"]);
  assert.equal(late.code, 1);
  assert.match(late.stderr, /rollout r3 is done already/);
});

test("status --fleet: desired and applied versions, last seen, drift, last error; --json; --report says what the reports lack", async () => {
  const r = await cli(["status", "--fleet"]);
  assert.equal(r.code, 1, "a device failed: exit 1");
  assert.match(r.stdout, /^DEVICE\s+DESIRED\s+APPLIED\s+LAST SEEN\s+DRIFT\s+LAST ERROR$/m, r.stdout);
  assert.match(r.stdout, /^d3\s+v4 \(r3\)\s+v4\s+\d+s ago\s+in sync$/m, r.stdout);
  assert.match(r.stdout, /^d6\s+v3 \(r2\)\s+-\s+\d+s ago\s+failed\s+version 3 reverted: simulated reverted$/m, r.stdout);
  assert.match(r.stdout, /6 devices: 5 in sync, 0 pending, 0 drift, 1 failed, 0 never seen/);
  const json = await cli(["status", "--fleet", "--json"]);
  const rows = JSON.parse(json.stdout);
  assert.deepEqual(
    rows.map((x: { device: string; desired: number; applied?: number; drift: string }) => [x.device, x.desired, x.applied ?? null, x.drift]),
    [
      ["d1", 4, 4, "in sync"],
      ["d2", 4, 4, "in sync"],
      ["d3", 4, 4, "in sync"],
      ["d4", 4, 4, "in sync"],
      ["d5", 4, 4, "in sync"],
      ["d6", 3, null, "failed"],
    ],
  );
  const html = await cli(["status", "--fleet", "--report", "fleet.html"]);
  assert.equal(html.code, 1);
  assert.match(html.stderr, /no fleet report written: no device sent its run report.*"report"/, html.output);
});

test("fleet revoke: the device is disconnected and cannot come back; the others go on", async () => {
  const r = await cli(["fleet", "revoke", "d2"]);
  assert.equal(r.code, 0, r.output);
  assert.match(r.stdout, /device d2 revoked .*servers that took the account: n1, n2, n3/);
  await clients.get("d2")!.waitEvent((e) => e.event === "broker" && /Revoked/i.test(e.detail ?? ""), 10_000, "the revocation");
  const refused = await connectRefused(cluster.hubNs, "d2-again", {
    servers: cluster.servers,
    creds: readFileSync(join(out, "d2.creds"), "utf8"),
    inboxPrefix: deviceInbox("d2"),
    name: "d2",
  });
  assert.match(refused, /Authorization Violation|cannot connect/);
  const pub = await cli(["publish", "--inventory", "pis.yaml", "--limit", "d3", playbook(["eth9"])]);
  assert.equal(pub.code, 0, pub.output);
  await clients.get("d3")!.waitEvent((e) => e.event === "apply" && e.version === 5, 10_000, "d3 applying v5 after d2's revocation");
});

test("enrolment by one-time token: the device makes its own keys, the controller accepts, the token is spent; spent, forged and expired tokens get nothing", async () => {
  const tokens = join(dir, "tokens-out");
  const made = await cli(["fleet", "token", "pi7", "--out", tokens, "--expires", "10m", "--no-code"]);
  assert.equal(made.code, 0, made.output);
  const tokenFile = join(tokens, "pi7.token");
  assert.equal(statSync(tokenFile).mode & 0o777, 0o600);
  const token = JSON.parse(readFileSync(tokenFile, "utf8"));
  const tokenSeed = /SU[A-Z2-7]{56}/.exec(token.credentials)![0];
  assert.ok(!made.output.includes(tokenSeed), "fleet token printed the token's seed");
  assert.match(made.stdout, /agent --enrol pi7.token/);

  // what the token's user may not do: read desired state, report, ask for another device
  const pi7 = startClient(cluster.hubNs, "pi7-token");
  clients.set("pi7-token", pi7); // closed with the others
  await pi7.call("connect", { servers: token.servers, creds: token.credentials, inboxPrefix: enrolInbox("pi7"), name: "pi7-enrol" });
  await assert.rejects(pi7.call("get", { bucket: DESIRED_BUCKET, key: desiredKey("d1") }), /permission|timeout/i);
  await assert.rejects(pi7.call("publish", { subject: "reports.pi7.result", data: "e30=" }), /permission|timeout|no responders/i);
  await assert.rejects(pi7.call("publish", { subject: "enrol.d1", data: "e30=" }), /permission|timeout|no responders/i);

  // the device: its own NATS key and age key, a signed request, then waiting for its JWT
  const user = createUser();
  const seed = new TextDecoder().decode(user.getSeed());
  const recipient = (await createDeviceKey()).recipient;
  const asking = pi7.call<string>("enrolAsk", { device: "pi7", seed, recipient, waitMs: 60_000 });
  await pi7.waitEvent((e) => e.event === "enrol" && e.type === "asked", 20_000, "the request stored");
  const accept = await cli(["fleet", "accept", "pi7", "--wait", "30s"]);
  assert.equal(accept.code, 0, accept.output);
  assert.match(accept.stdout, /pi7: enrolled \(NATS user U/);
  assert.match(accept.stdout, /revoked 1 spent token/);
  const jwt = await asking;
  assert.equal(decode(jwt).sub, user.getPublicKey(), "the JWT is for the key the device made");
  assert.deepEqual(JSON.parse(readFileSync(join(fleetDir, "devices", "pi7.json"), "utf8")), { age_recipient: recipient, user: user.getPublicKey() });
  const tokenUser = JSON.parse(readFileSync(join(fleetDir, "tokens", "pi7.json"), "utf8"));
  assert.ok(tokenUser.spent, "the token is recorded spent");
  assert.ok(JSON.parse(readFileSync(join(fleetDir, "authority.json"), "utf8")).revocations[tokenUser.user], "the token's user is revoked");

  // its own credentials work as a device's: it reads its own key (none yet), not another's
  const device = startClient(cluster.hubNs, "pi7");
  clients.set("pi7", device);
  await device.call("connect", { servers: cluster.servers, creds: new TextDecoder().decode(fmtCreds(jwt, user)), inboxPrefix: deviceInbox("pi7"), name: "pi7" });
  assert.equal(await device.call("get", { bucket: DESIRED_BUCKET, key: desiredKey("pi7") }), null);
  await assert.rejects(device.call("get", { bucket: DESIRED_BUCKET, key: desiredKey("d1") }), /permission|timeout/i);

  // the token is spent: its user cannot connect again, and a new request under its name is refused
  await pi7.waitEvent((e) => e.event === "broker" && /Revoked/i.test(e.detail ?? ""), 10_000, "the token user's revocation");
  const spent = await connectRefused(cluster.hubNs, "pi7-token-again", { servers: token.servers, creds: token.credentials, inboxPrefix: enrolInbox("pi7"), name: "pi7" });
  assert.match(spent, /Authorization Violation|cannot connect/);
  const thief = createUser();
  await ctl.call("publish", { subject: "enrol.pi7", data: Buffer.from(signRequest("pi7", thief, recipient)).toString("base64") });
  const replay = await cli(["fleet", "accept", "pi7"]);
  assert.equal(replay.code, 1, replay.output);
  assert.match(replay.stdout, /pi7: refused: its token was spent already/);
  assert.equal(JSON.parse(readFileSync(join(fleetDir, "devices", "pi7.json"), "utf8")).user, user.getPublicKey(), "the device's record is unchanged");

  // a forged request (a key swapped under another's signature) for an open token is refused
  assert.equal((await cli(["fleet", "token", "pi8", "--out", tokens, "--no-code"])).code, 0);
  const signed = JSON.parse(new TextDecoder().decode(signRequest("pi8", createUser(), recipient)));
  const payload = JSON.parse(Buffer.from(signed.payload, "base64").toString());
  const forged = { ...signed, payload: Buffer.from(JSON.stringify({ ...payload, user: thief.getPublicKey() })).toString("base64") };
  await ctl.call("publish", { subject: "enrol.pi8", data: Buffer.from(JSON.stringify(forged)).toString("base64") });
  const refused = await cli(["fleet", "accept", "pi8"]);
  assert.equal(refused.code, 1, refused.output);
  assert.match(refused.stdout, /pi8: refused: the request's signature does not match/);
  assert.ok(!existsSync(join(fleetDir, "devices", "pi8.json")), "nothing recorded for a forged request");

  // an expired token: the servers refuse its user
  assert.equal((await cli(["fleet", "token", "pi9", "--out", tokens, "--expires", "1s", "--no-code"])).code, 0);
  await new Promise((r) => setTimeout(r, 2_500));
  const pi9 = JSON.parse(readFileSync(join(tokens, "pi9.token"), "utf8"));
  const expired = await connectRefused(cluster.hubNs, "pi9-token", { servers: pi9.servers, creds: pi9.credentials, inboxPrefix: enrolInbox("pi9"), name: "pi9" });
  assert.match(expired, /expired|Authorization Violation|cannot connect/i);

  // a token replaced while open is revoked; its revocation is dropped once it has expired
  const revocations = () => JSON.parse(readFileSync(join(fleetDir, "authority.json"), "utf8")).revocations as Record<string, number>;
  const tokenRecord = () => JSON.parse(readFileSync(join(fleetDir, "tokens", "pi10.json"), "utf8"));
  assert.equal((await cli(["fleet", "token", "pi10", "--out", tokens, "--expires", "15s", "--no-code"])).code, 0);
  const { user: first, expires: firstExpires } = tokenRecord();
  assert.equal((await cli(["fleet", "token", "pi10", "--out", tokens, "--expires", "10m", "--no-code"])).code, 0);
  const second = tokenRecord();
  assert.ok(revocations()[first], "the replaced open token's user is revoked");
  assert.deepEqual(
    second.earlier.map((e: { user: string }) => e.user),
    [first],
    "the record keeps the replaced token",
  );
  await new Promise((r) => setTimeout(r, Math.max(0, new Date(firstExpires).getTime() + 1_000 - Date.now())));
  assert.equal((await cli(["fleet", "token", "pi10", "--out", tokens, "--no-code"])).code, 0);
  assert.ok(revocations()[second.user], "the second token, replaced while open, is revoked");
  assert.equal(revocations()[first], undefined, "the first token's revocation is dropped: it has expired");
});
