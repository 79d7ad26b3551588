// Pull mode against a real 3-node nats-server cluster with JetStream, each node in its
// own network namespace; devices and the controller are separate client processes
// (test/support/pull-client.ts) using only core/pull. What needs no kernel feature:
// permissions, bundles, rollouts, revocation, a node killed, what is stored.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { readdirSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { createDeviceKey, createFleetSigningKey, sealBundle, type DeviceKey } from "../../core/pull/bundle.js";
import { accountJwt, createAuthority, issueController, issueDevice, issueSystemUser, revoke, type FleetAuthority } from "../../core/pull/credentials.js";
import { deviceInbox, desiredKey, DESIRED_BUCKET, REPORTS_STREAM } from "../../core/pull/subjects.js";
import { startNatsCluster, waitFor, type NatsCluster } from "../support/nats-cluster.js";
import { connectRefused, startClient, type PullClient, setupBuckets } from "../support/pull-clients.js";

const PSK = "Wi-Fi psk 7f3c9e1b2a";
const fleet = createFleetSigningKey();
let authority: FleetAuthority = createAuthority("pulltest");
let cluster: NatsCluster;
let ctl: PullClient;
const t0 = Date.now();

type Device = { name: string; key: DeviceKey; publicKey: string; creds: string; client: PullClient };
const devices = new Map<string, Device>();

const b64 = (v: Uint8Array | string) => Buffer.from(v).toString("base64");
const text = (v: string) => Buffer.from(v, "base64").toString("utf8");
const playbookFor = (device: string, version: number) => ({
  hosts: device,
  tasks: [
    { name: "wifi", wifi: { ssid: "lab", psk: PSK } },
    { name: "marker", copy: { dest: "/etc/provision-version", content: `${version}` } },
  ],
});

async function bundle(device: string, version: number, opts: { rollout?: string; recipient?: string; issued?: Date; expires?: Date } = {}): Promise<string> {
  const d = devices.get(device);
  return b64(
    await sealBundle(
      { device, version, ...(opts.rollout ? { rollout: opts.rollout } : {}), playbook: playbookFor(device, version) },
      {
        signingKey: fleet.privatePem,
        recipient: opts.recipient ?? d!.key.recipient,
        secrets: [PSK],
        expires: opts.expires ?? new Date(Date.now() + 3_600_000),
        ...(opts.issued ? { issued: opts.issued } : {}),
      },
    ),
  );
}

async function addDevice(name: string): Promise<Device> {
  const key = await createDeviceKey();
  const user = await issueDevice(authority, name);
  const client = startClient(cluster.hubNs, name);
  await client.call("connect", { servers: cluster.servers, creds: user.creds, inboxPrefix: deviceInbox(name), name });
  const d = { name, key, publicKey: user.publicKey, creds: user.creds, client };
  devices.set(name, d);
  return d;
}

const follow = (d: Device, outcome = "applied") => d.client.call("follow", { device: d.name, verifyKey: fleet.publicPem, identity: d.key.identity, outcome });
const put = (device: string, value: string) => ctl.call("put", { bucket: DESIRED_BUCKET, key: desiredKey(device), value });

before(async () => {
  cluster = await startNatsCluster({ authority });
  ctl = startClient(cluster.hubNs, "controller");
  await ctl.call("connect", { servers: cluster.servers, creds: (await issueController(authority)).creds, name: "controller" });
  // JetStream needs its meta leader before streams can be made: try until the cluster has one
  await setupBuckets(ctl);
  await Promise.all(["pi1", "pi2", "d1", "d2", "d3", "d4", "d5", "d6"].map(addDevice));
  console.log(`pull cluster: 3 nodes, buckets, 8 devices up in ${Date.now() - t0} ms`);
});

after(async () => {
  await Promise.all([ctl, ...[...devices.values()].map((d) => d.client)].filter(Boolean).map((c) => c.close()));
  cluster?.stop();
  console.log(`pull cluster tests: ${Date.now() - t0} ms in all`);
});

test("a device reads only its own desired state and publishes only its own reports", async () => {
  await put("pi1", await bundle("pi1", 1));
  await put("pi2", await bundle("pi2", 1));
  const pi1 = devices.get("pi1")!.client;
  const own = await pi1.call("get", { bucket: DESIRED_BUCKET, key: desiredKey("pi1") });
  assert.equal(JSON.parse(text(own.value)).format, "provision-bundle/1");
  await assert.rejects(
    pi1.call("get", { bucket: DESIRED_BUCKET, key: desiredKey("pi2") }),
    /Permissions Violation for Publish to "\$JS\.API\.DIRECT\.GET\.KV_desired\.\$KV\.desired\.dev\.pi2"/,
  );

  const ack = await pi1.call("publish", { subject: "reports.pi1.heartbeat", data: b64("{}") });
  assert.equal(ack.stream, REPORTS_STREAM);
  await assert.rejects(pi1.call("publish", { subject: "reports.pi2.result", data: b64('{"version":1,"outcome":"applied"}') }), /Permissions Violation/);
  // nor through the JetStream API: reading B's key by message get, a consumer on B's key, writing its own desired state
  for (const subject of [
    "$JS.API.STREAM.MSG.GET.KV_desired",
    "$JS.API.CONSUMER.CREATE.KV_desired.x.$KV.desired.dev.pi2",
    "$JS.API.CONSUMER.CREATE.KV_desired",
    "$KV.desired.dev.pi1",
    "$JS.API.DIRECT.GET.KV_rollouts.$KV.rollouts.plan.r1",
    "$JS.API.STREAM.INFO.KV_desired",
  ])
    await assert.rejects(pi1.call("publish", { subject, data: b64("{}") }), /Permissions Violation/, subject);
  // a watch of B's key is refused by the server (no entry ever arrives)
  await pi1.call("watch", { bucket: DESIRED_BUCKET, key: desiredKey("pi2") }).catch(() => {});
  await pi1.waitEvent((e) => e.event === "broker" && /Permissions Violation for Subscription to "\$KV\.desired\.dev\.pi2"/.test(e.detail), 5000, "a refused subscription");
  assert.ok(!pi1.events.some((e) => e.event === "entry" && e.key === desiredKey("pi2") && e.value));
});

test("a device applies its bundle with the secret decrypted, and refuses tampered, foreign, older, unsigned and expired ones", async () => {
  const pi1 = devices.get("pi1")!;
  await follow(pi1);
  const first = await pi1.client.waitEvent((e) => e.event === "apply" && e.version === 1, 5000, "version 1 applied");
  assert.deepEqual(first.playbook, playbookFor("pi1", 1), "the PSK came back from its encryption");
  await put("pi1", await bundle("pi1", 2));
  await pi1.client.waitEvent((e) => e.event === "apply" && e.version === 2, 5000, "version 2 applied");

  const refused = async (value: string, reason: string) => {
    const before = pi1.client.events.length;
    await put("pi1", value);
    const e = await pi1.client.waitEvent(
      (e) => e.event === "device" && e.type === "refused" && e.reason === reason && pi1.client.events.indexOf(e) >= before,
      5000,
      `a ${reason} refusal`,
    );
    assert.ok(!String(e.message).includes(PSK));
  };
  const good = JSON.parse(text(await bundle("pi1", 3)));
  const payload = JSON.parse(text(good.payload));
  await refused(b64(JSON.stringify({ ...good, payload: b64(JSON.stringify({ ...payload, version: 99 })) })), "tampered");
  await refused(await bundle("pi2", 3), "foreign");
  await refused(await bundle("pi1", 1), "older");
  await refused(b64(JSON.stringify({ ...good, signature: "" })), "unsigned");
  await refused(await bundle("pi1", 3, { issued: new Date(Date.now() - 7_200_000), expires: new Date(Date.now() - 3_600_000) }), "expired");
  await refused(
    b64(
      await sealBundle(
        { device: "pi1", version: 3, playbook: {} },
        { signingKey: createFleetSigningKey().privatePem, recipient: pi1.key.recipient, secrets: [], expires: new Date(Date.now() + 60_000) },
      ),
    ),
    "unknown-key",
  );
  // the same version again (a replay, or a reconnect) is not applied twice
  await put("pi1", await bundle("pi1", 2));
  await new Promise((r) => setTimeout(r, 300));
  assert.equal(pi1.client.events.filter((e) => e.event === "apply" && e.version === 2).length, 1);

  const reports = await ctl.call("read", { stream: REPORTS_STREAM, filter: "reports.pi1.*" });
  const kinds = reports.map((m: any) => `${m.subject} ${JSON.parse(text(m.data)).reason ?? JSON.parse(text(m.data)).outcome ?? ""}`);
  for (const r of [
    "reports.pi1.result applied",
    "reports.pi1.refused tampered",
    "reports.pi1.refused foreign",
    "reports.pi1.refused older",
    "reports.pi1.refused unsigned",
    "reports.pi1.refused expired",
  ])
    assert.ok(kinds.includes(r), `${r} in ${kinds.join(", ")}`);
});

test("a rollout: canary then waves to done; a reverted canary aborts it with the other devices untouched; pause and resume", async () => {
  for (const name of ["d1", "d2", "d3", "d4", "d5"]) await follow(devices.get(name)!);
  await follow(devices.get("d6")!, "reverted");
  const policy = { canary: 1, growth: 2, maxFailPercentage: 10, minReported: 1, timeoutMs: 10_000 };
  const fleet5 = ["d1", "d2", "d3", "d4", "d5"];
  const bundles = async (names: string[], version: number, rollout: string) =>
    Object.fromEntries(await Promise.all(names.map(async (n) => [n, await bundle(n, version, { rollout })])));

  const t = Date.now();
  const done = await ctl.call("rollout", { id: "r1", version: 1, devices: fleet5, policy, bundles: await bundles(fleet5, 1, "r1") });
  assert.equal(done.status, "done", done.reason);
  assert.deepEqual(
    done.waves.map((w: string[]) => w.length),
    [1, 1, 2, 1],
  );
  assert.deepEqual(
    Object.values(done.results).map((r: any) => r.outcome),
    ["applied", "applied", "applied", "applied", "applied"],
  );
  console.log(`rollout of 5 devices in 4 waves: ${Date.now() - t} ms`);

  const bad = ["d6", ...fleet5];
  const aborted = await ctl.call("rollout", { id: "r2", version: 2, devices: bad, policy, bundles: await bundles(bad, 2, "r2") });
  assert.equal(aborted.status, "aborted");
  assert.match(aborted.reason, /1 of 1 devices .* 1 reverted/);
  assert.equal(aborted.openedAt.length, 1, "only the canary's wave opened");
  for (const name of fleet5) {
    const entry = await ctl.call("get", { bucket: DESIRED_BUCKET, key: desiredKey(name) });
    assert.equal(JSON.parse(text(JSON.parse(text(entry.value)).payload)).version, 1, `${name} still has version 1`);
    assert.ok(!devices.get(name)!.client.events.some((e) => e.event === "apply" && e.version === 2));
  }
  assert.deepEqual(await devices.get("pi2")!.client.call("rolloutOpen", { id: "r2" }), { open: false, status: "aborted", reason: aborted.reason });

  // a device that was offline and finds a bundle of the aborted rollout holds it
  const pi2 = devices.get("pi2")!;
  await put("pi2", await bundle("pi2", 2, { rollout: "r2" }));
  await follow(pi2);
  const held = await pi2.client.waitEvent((e) => e.event === "device" && e.type === "held", 5000, "the bundle held");
  assert.equal(held.status, "aborted");
  assert.ok(!pi2.client.events.some((e) => e.event === "apply" && e.version === 2));

  // pause after the canary: no wave opens until resume
  const running = ctl.call("rollout", { id: "r3", version: 3, devices: fleet5, policy, bundles: await bundles(fleet5, 3, "r3") });
  await ctl.waitEvent((e) => e.event === "progress" && e.waves === 1, 5000, "the canary wave");
  await ctl.call("control", { id: "r3", command: "pause", reason: "looking at the canary" });
  await ctl.waitEvent((e) => e.event === "progress" && e.status === "paused", 5000, "paused");
  await new Promise((r) => setTimeout(r, 700));
  const whilePaused = ctl.events.filter((e) => e.event === "progress" && e.status === "paused");
  assert.ok(
    whilePaused.every((e) => e.waves <= 1),
    "no wave opened while paused",
  );
  await ctl.call("control", { id: "r3", command: "resume" });
  const resumed = await running;
  assert.equal(resumed.status, "done");
  assert.equal(Object.keys(resumed.results).length, 5);
});

test("one cluster node killed: clients reconnect to another and go on", async () => {
  const d1 = devices.get("d1")!;
  const server = await d1.client.call("server");
  const node = cluster.nodes.find((n) => server.startsWith(n.address))!;
  const before = d1.client.events.length;
  const killedAt = Date.now();
  cluster.kill(node);
  await d1.client.waitEvent((e) => e.event === "broker" && e.type === "reconnected" && d1.client.events.indexOf(e) > before, 15_000, "a reconnect");
  assert.notEqual(await d1.client.call("server"), server);
  // the R3 stream and buckets keep working on two nodes (a new leader may take a moment)
  await waitFor(
    () =>
      d1.client.call("publish", { subject: "reports.d1.heartbeat", data: b64("{}") }).then(
        () => true,
        () => false,
      ),
    15_000,
    "an acknowledged publish",
  );
  await waitFor(
    async () => {
      try {
        await put("d1", await bundle("d1", 4));
        return true;
      } catch {
        return false;
      }
    },
    15_000,
    "the controller's put",
  );
  await d1.client.waitEvent((e) => e.event === "apply" && e.version === 4, 15_000, "version 4 applied after the node died");
  // and a rollout runs to its end on the two nodes left
  const names = ["d1", "d3", "d4"];
  const bundles = Object.fromEntries(await Promise.all(names.map(async (n) => [n, await bundle(n, 5, { rollout: "r4" })])));
  const state = await ctl.call("rollout", {
    id: "r4",
    version: 5,
    devices: names,
    policy: { canary: 1, growth: 2, maxFailPercentage: 0, minReported: 1, timeoutMs: 10_000 },
    bundles,
  });
  assert.equal(state.status, "done", state.reason);
  const retries = ctl.events.filter((e) => e.event === "broker" && /attempt/.test(e.detail ?? "")).length;
  console.log(
    `node ${node.name} killed: d1 reconnected, applied a new bundle, and a 3-device rollout finished ${Date.now() - killedAt} ms later (${retries} consumer set-up retries)`,
  );
});

test("revoking one device disconnects it and keeps it out; the others go on", async () => {
  const d2 = devices.get("d2")!;
  authority = revoke(authority, d2.publicKey);
  const sys = startClient(cluster.hubNs, "sys");
  try {
    const live = cluster.nodes.filter((n) => n.pid).map((n) => `${n.address}:4222`);
    const servers = await sys.call("pushClaims", { servers: live, creds: (await issueSystemUser(authority)).creds, jwt: await accountJwt(authority) });
    assert.equal(servers.length, live.length, `every live server took the claims: ${servers}`);
  } finally {
    await sys.close();
  }
  await d2.client.waitEvent((e) => e.event === "broker" && /Revoked/i.test(e.detail ?? ""), 10_000, "the revocation");
  const refused = await connectRefused(cluster.hubNs, "d2-again", { servers: cluster.servers, creds: d2.creds, inboxPrefix: deviceInbox("d2"), name: "d2" });
  assert.match(refused, /Authorization Violation|cannot connect/);
  await waitFor(
    () =>
      devices
        .get("d3")!
        .client.call("publish", { subject: "reports.d3.heartbeat", data: b64("{}") })
        .then(
          () => true,
          () => false,
        ),
    10_000,
    "d3 still publishing",
  );
});

test("the PSK is in no stored message in clear: not in the streams and buckets, not on the servers' disks", async () => {
  const stored = [
    ...(await ctl.call("read", { stream: "KV_desired", filter: "$KV.desired.>" })),
    ...(await ctl.call("read", { stream: "KV_rollouts", filter: "$KV.rollouts.>" })),
    ...(await ctl.call("read", { stream: REPORTS_STREAM, filter: "reports.>" })),
  ];
  assert.ok(stored.length > 20, `read ${stored.length} messages`);
  let payloads = 0;
  for (const m of stored) {
    const body = text(m.data);
    assert.ok(!body.includes(PSK), `${m.subject} #${m.seq} holds the PSK`);
    try {
      const inner = text(JSON.parse(body).payload ?? "");
      if (inner) payloads++;
      assert.ok(!inner.includes(PSK), `${m.subject} #${m.seq}'s signed payload holds the PSK`);
    } catch {
      /* not a bundle */
    }
  }
  assert.ok(payloads > 10, "bundles were looked into");
  // the files JetStream keeps, on every node: neither the PSK nor any base64 rendering of it
  // (wherever the PSK sat, one of its suffixes started on a 3-byte boundary of the base64 input)
  const needles = [PSK, ...[0, 1, 2].map((shift) => b64(PSK.slice(shift)).slice(0, -4))].map((s) => Buffer.from(s));
  let files = 0;
  const scan = (dir: string): void => {
    for (const f of readdirSync(dir)) {
      const p = join(dir, f);
      if (statSync(p).isDirectory()) {
        scan(p);
        continue;
      }
      files++;
      const data = readFileSync(p);
      for (const needle of needles) assert.equal(data.indexOf(needle), -1, `${p} holds the PSK`);
    }
  };
  for (const node of cluster.nodes) scan(join(node.dir, "js"));
  assert.ok(files > 10, `scanned ${files} files`);
});

test("the whole cluster away for a minute mid-rollout: the rollout waits, nothing is half-applied or applied twice, and it goes on to done", async () => {
  for (const node of cluster.nodes) if (node.pid === undefined) await cluster.start(node); // the node killed above
  const names = ["s1", "s2", "s3", "s4"];
  for (const name of names) {
    const d = await addDevice(name);
    await d.client.call("follow", { device: name, verifyKey: fleet.publicPem, identity: d.key.identity, applyMs: 2000 });
  }
  const bundles = Object.fromEntries(await Promise.all(names.map(async (n) => [n, await bundle(n, 7, { rollout: "r-away" })])));
  // a wave's time does not run while the cluster is away: 45 s is less than the outage
  const policy = { canary: 1, growth: 2, maxFailPercentage: 0, minReported: 1, timeoutMs: 45_000 };
  const running = ctl.call("rollout", { id: "r-away", version: 7, devices: names, policy, bundles });
  running.catch(() => {}); // awaited below; a failure shows there
  const s1 = devices.get("s1")!;
  await s1.client.waitEvent((e) => e.event === "apply" && e.version === 7, 15_000, "the canary applying");
  const killedAt = Date.now();
  for (const node of cluster.nodes) cluster.kill(node); // s1 is in the middle of its run
  await ctl.waitEvent((e) => e.event === "unreachable" && e.id === "r-away", 30_000, "the controller noticing the outage");
  await s1.client.waitEvent((e) => e.event === "device" && e.type === "report-failed", 30_000, "s1's result not stored while the cluster is away");
  await new Promise((r) => setTimeout(r, killedAt + 60_000 - Date.now()));
  const restartedAt = Date.now();
  await Promise.all(cluster.nodes.map((n) => cluster.start(n)));

  const state = await running;
  const back = ctl.events.find((e) => e.event === "reachable" && e.id === "r-away");
  assert.equal(state.status, "done", state.reason);
  assert.deepEqual(
    state.waves.map((w: string[]) => w.length),
    [1, 1, 2],
  );
  assert.deepEqual(
    names.map((n) => state.results[n]?.outcome),
    ["applied", "applied", "applied", "applied"],
    "no device timed out for the time the cluster was away",
  );
  assert.ok(back && back.awayMs >= 55_000, `the controller waited through the outage (${back?.awayMs} ms)`);
  assert.ok(state.openedAt[1] > restartedAt, "the next wave opened once the cluster was back");
  for (const name of names) {
    const d = devices.get(name)!;
    assert.equal(d.client.events.filter((e) => e.event === "apply" && e.version === 7).length, 1, `${name} applied version 7 once`);
    const results = await ctl.call("read", { stream: REPORTS_STREAM, filter: `reports.${name}.result` });
    assert.equal(results.length, 1, `${name}'s result is stored once`);
  }
  console.log(`whole cluster away ${Math.round((back?.awayMs ?? 0) / 1000)} s: rollout of 4 done ${Date.now() - killedAt} ms after the kill`);
});
