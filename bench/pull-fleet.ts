// npm run bench:pull -- --devices N: pull mode at fleet scale against a real 3-node
// nats-server cluster (test/support/nats-cluster.ts: each node in its own network
// namespace). Not a test: it measures and writes bench/pull-results.json (+ .md).
//
//   main        starts the cluster, the agent processes (before the buckets exist: a device
//               may start before its controller), one controller process per scenario,
//               collects the figures, and stops everything it started by PID.
//   agents      N simulated Pis in a few processes, several per connection: the real device
//               logic (core/pull/device.ts: watch, bundle checks, rollout check, acknowledged
//               reports; core/pull/audit.ts: audits with splay, differential, heartbeats)
//               with a fake "apply" that answers at once (failing for an injected share).
//   controller  one scenario in its own process, so that its CPU and RSS are its own:
//               publish  every device gets a new version at once; time until all applied
//               clean    a rollout (canary 1 %, waves growing ×2), no failures
//               abort    a rollout where a share of the devices fail: time from the report
//                        that crossed max_fail_percentage to the abort
//               steady   no change for a while: the messages/s of audits and heartbeats
//
// Simulated devices sharing a connection use one user for all of them (a real device's
// user may touch only its own subjects, tested in test/integration/pull-cluster.test.ts);
// with --per-connection 1 each one has its own device credentials. Bundles carry no
// secrets (one age identity serves all), so sealing costs signing only.
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { cpus, loadavg, tmpdir, totalmem } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { createDeviceKey, createFleetSigningKey, sealBundle } from "../core/pull/bundle.js";
import { createAuthority, issueController, issueDevice } from "../core/pull/credentials.js";
import { connectNats, type NatsBroker } from "../core/pull/nats.js";
import { followDesiredState } from "../core/pull/device.js";
import { startReporting, type ReportingSchedule } from "../core/pull/audit.js";
import { abortReason, runRollout, type Counts, type RolloutPolicy, type RolloutState } from "../core/pull/rollout.js";
import { desiredKey, deviceInbox, DESIRED_BUCKET, reportDevice, REPORTS_STREAM, REPORTS_SUBJECTS, ROLLOUTS_BUCKET } from "../core/pull/subjects.js";
import { startNatsCluster, waitFor, type NatsCluster } from "../test/support/nats-cluster.js";
import { killPid, onCleanup } from "../test/support/processes.js";
import { repoRoot } from "../test/support/cache.js";

const SELF = fileURLToPath(import.meta.url);
const dec = new TextDecoder();
const line = (o: unknown) => process.stdout.write(JSON.stringify(o) + "\n");
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const deviceNames = (n: number) => Array.from({ length: n }, (_, i) => `d${String(i).padStart(5, "0")}`);

/** What main hands to the other roles (a JSON file in the work folder). */
interface Work {
  servers: string[];
  controllerCreds: string;
  verifyKey: string;
  signingKey: string;
  identity: string;
  recipient: string;
  devices: number;
  perConnection: number;
  /** Devices whose index is a multiple of failEvery fail version failVersion. */
  failVersion: number;
  failEvery: number;
  schedule: ReportingSchedule;
  monitors: string[];
  steadyWindowS: number;
  /** K = 1: each device's own credentials. */
  deviceCreds?: Record<string, string>;
}

// --- agents -----------------------------------------------------------------------------------

async function agents(work: Work, from: number, to: number): Promise<void> {
  const names = deviceNames(work.devices).slice(from, to);
  const brokers: NatsBroker[] = [];
  const stats = { applied: 0, failed: 0, audits: 0, auditsSent: 0, heartbeats: 0, reportFailures: 0, connections: 0 };
  const groups: string[][] = [];
  for (let i = 0; i < names.length; i += work.perConnection) groups.push(names.slice(i, i + work.perConnection));
  const start = async (group: string[]): Promise<void> => {
    const own = work.perConnection === 1 ? work.deviceCreds?.[group[0]] : undefined;
    const broker = await connectNats({
      servers: work.servers,
      credentials: own ?? work.controllerCreds,
      ...(own ? { inboxPrefix: deviceInbox(group[0]) } : {}),
      name: `sim-${group[0]}`,
      timeoutMs: 5_000, // the agent's own
      waitForFirstConnect: true,
    });
    brokers.push(broker);
    stats.connections++;
    // all at once: a device's first read waits for the bucket (made after the agents start)
    const follow = async (name: string): Promise<void> => {
      const index = Number(name.slice(1));
      let applied: number | undefined;
      await followDesiredState(
        broker,
        { name, verifyKey: work.verifyKey, identity: work.identity },
        {
          appliedVersion: () => applied,
          recheckMs: 2_000,
          apply: async (bundle) => {
            applied = bundle.version;
            if (bundle.version === work.failVersion && index % work.failEvery === 0) {
              stats.failed++;
              return { outcome: "failed", detail: "injected failure" };
            }
            stats.applied++;
            return { outcome: "applied" };
          },
          onEvent: (e) => {
            if (e.type === "report-failed") stats.reportFailures++;
          },
        },
      );
      startReporting(broker, name, {
        schedule: work.schedule,
        applied: () => applied,
        audit: async () => (applied === undefined ? null : { version: applied, drift: false, changed: 0, fingerprint: `v${applied}` }),
        onEvent: (e) => {
          if (e.type === "audit") {
            stats.audits++;
            if (e.sent) stats.auditsSent++;
          } else if (e.type === "heartbeat") stats.heartbeats++;
          else stats.reportFailures++;
        },
      });
    };
    await Promise.all(group.map(follow));
  };
  // 100 connections at a time (per process): each waits for its first read, which fails until the bucket exists
  for (let i = 0; i < groups.length; i += 100) await Promise.all(groups.slice(i, i + 100).map(start));
  line({ event: "ready", agents: names.length, connections: brokers.length });
  createInterface({ input: process.stdin }).on("line", (l) => {
    if (l === "stats") line({ event: "stats", ...stats, rssMb: Math.round(process.memoryUsage().rss / 1e6) });
  });
  await new Promise((r) => process.once("SIGTERM", r));
  process.exit(0);
}

// --- controller -------------------------------------------------------------------------------

/** /varz of every node: messages in, summed (clients and routes). */
async function clusterMessages(monitors: string[]): Promise<number | null> {
  try {
    const all = await Promise.all(monitors.map(async (m) => ((await (await fetch(`http://${m}/varz`)).json()) as { in_msgs: number }).in_msgs));
    return all.reduce((a, b) => a + b, 0);
  } catch {
    return null;
  }
}

async function reportsSeq(broker: NatsBroker): Promise<number> {
  const { jetstreamManager } = await import("@nats-io/jetstream");
  const jsm = await jetstreamManager(broker.nc, { timeout: 15_000, checkAPI: false });
  return (await jsm.streams.info(REPORTS_STREAM)).state.last_seq;
}

async function controller(work: Work, scenario: string, version: number): Promise<void> {
  const names = deviceNames(work.devices);
  let peakRss = 0;
  const sampler = setInterval(() => (peakRss = Math.max(peakRss, process.memoryUsage().rss)), 100);
  const cpu0 = process.cpuUsage();
  const broker = await connectNats({ servers: work.servers, credentials: work.controllerCreds, name: `bench-${scenario}`, timeoutMs: 15_000 });
  const msgs0 = await clusterMessages(work.monitors);
  const seq0 = await reportsSeq(broker);
  const t0 = Date.now();
  const figures: Record<string, unknown> = { scenario, devices: work.devices, version };

  // every result of this version, with the time the cluster stored it
  const results: { device: string; outcome: string; time: number }[] = [];
  const seen = new Set<string>();
  const consumer = await broker.consume(REPORTS_STREAM, "reports.*.result", (m) => {
    const device = reportDevice(m.subject);
    const r = JSON.parse(dec.decode(m.data)) as { version: number; outcome: string };
    if (!device || r.version !== version || seen.has(device)) return;
    seen.add(device);
    results.push({ device, outcome: r.outcome, time: m.time.getTime() });
  });

  const seal = async (rollout?: string): Promise<Map<string, Uint8Array>> => {
    const t = Date.now();
    const expires = new Date(Date.now() + 86_400_000);
    const bundles = new Map<string, Uint8Array>();
    for (const device of names)
      bundles.set(
        device,
        await sealBundle(
          {
            device,
            version,
            ...(rollout ? { rollout } : {}),
            playbook: { plays: [{ name: "bench", tasks: [{ name: "marker", module: "copy", args: { dest: "/etc/v", content: `${version}` } }] }] },
          },
          { signingKey: work.signingKey, recipient: work.recipient, secrets: [], expires },
        ),
      );
    figures.sealMs = Date.now() - t;
    return bundles;
  };

  if (scenario === "publish") {
    const bundles = await seal();
    const t = Date.now();
    for (let i = 0; i < names.length; i += 64) await Promise.all(names.slice(i, i + 64).map((d) => broker.put(DESIRED_BUCKET, desiredKey(d), bundles.get(d)!)));
    figures.putAllMs = Date.now() - t;
    await waitFor(() => results.length >= names.length, 300_000, `all ${names.length} devices to report version ${version}`).catch((e) => (figures.error = String(e)));
    figures.reported = results.length;
    figures.publishToAllAppliedMs = results.length ? Math.max(...results.map((r) => r.time)) - t : null;
  } else if (scenario === "clean" || scenario === "abort") {
    const bundles = await seal(scenario);
    const policy: RolloutPolicy = { canary: "1%", growth: 2, maxFailPercentage: 5, minReported: Math.min(20, names.length), timeoutMs: 120_000 };
    const t = Date.now();
    let last: Counts | undefined;
    const state: RolloutState = await runRollout({
      broker,
      id: scenario,
      version,
      devices: names,
      policy,
      bundle: (d) => bundles.get(d)!,
      tickMs: 200,
      onProgress: (_, c) => (last = c),
    });
    figures.policy = policy;
    figures.status = state.status;
    figures.reason = state.reason;
    figures.waves = state.waves.map((w) => w.length);
    figures.wavesOpened = state.openedAt.length;
    figures.counts = last;
    figures.rolloutMs = state.updated - t;
    if (state.status === "done") {
      const lastOpen = state.openedAt[state.openedAt.length - 1];
      figures.lastWaveSize = state.waves[state.waves.length - 1].length;
      figures.lastWaveOpenToDoneMs = state.updated - lastOpen;
      figures.afterCanaryMs = state.updated - state.openedAt[1 < state.openedAt.length ? 1 : 0];
    } else {
      // the first result after which the share of bad ones exceeded the threshold (as the controller counts)
      const sorted = [...results].sort((a, b) => a.time - b.time);
      const c = { total: 0, opened: 0, waiting: 0, reported: 0, applied: 0, failed: 0, reverted: 0, timeout: 0, bad: 0 } as Counts;
      let crossing: number | undefined;
      for (const r of sorted) {
        c.reported++;
        if (r.outcome === "applied") c.applied++;
        else {
          c.failed++;
          c.bad++;
        }
        if (abortReason(c, policy)) {
          crossing = r.time;
          break;
        }
      }
      figures.crossingToAbortMs = crossing === undefined ? null : state.updated - crossing;
      figures.untouched = names.length - state.waves.slice(0, state.openedAt.length).flat().length;
    }
  } else if (scenario === "steady") {
    const warmupMs = 30_000;
    const windowMs = work.steadyWindowS * 1000;
    await sleep(warmupMs);
    const s1 = await reportsSeq(broker);
    const m1 = await clusterMessages(work.monitors);
    const t1 = Date.now();
    await sleep(windowMs);
    const s2 = await reportsSeq(broker);
    const m2 = await clusterMessages(work.monitors);
    const secs = (Date.now() - t1) / 1000;
    figures.windowS = Math.round(secs);
    figures.reportsPerS = +((s2 - s1) / secs).toFixed(2);
    figures.clusterInMsgsPerS = m1 === null || m2 === null ? null : +((m2 - m1) / secs).toFixed(1);
    // what status --fleet reads: each device's latest report of each kind
    const t = Date.now();
    const latest = await broker.readLatest(REPORTS_STREAM, "reports.>");
    figures.statusReadLatest = { messages: latest.length, ms: Date.now() - t };
  }
  await consumer.stop();
  const elapsed = (Date.now() - t0) / 1000;
  const cpu = process.cpuUsage(cpu0);
  figures.elapsedS = +elapsed.toFixed(1);
  figures.controllerCpuS = +((cpu.user + cpu.system) / 1e6).toFixed(2);
  figures.controllerPeakRssMb = Math.round(Math.max(peakRss, process.memoryUsage().rss) / 1e6);
  figures.controllerMaxRssMb = Math.round(process.resourceUsage().maxRSS / 1e3);
  if (scenario !== "steady") {
    const seq1 = await reportsSeq(broker);
    const msgs1 = await clusterMessages(work.monitors);
    figures.reportsStoredPerS = +((seq1 - seq0) / elapsed).toFixed(1);
    figures.clusterInMsgsPerS = msgs0 === null || msgs1 === null ? null : +((msgs1 - msgs0) / elapsed).toFixed(1);
  }
  clearInterval(sampler);
  await broker.close();
  line({ event: "figures", ...figures });
}

// --- main -------------------------------------------------------------------------------------

interface Child {
  child: ChildProcess;
  lines: Record<string, unknown>[];
  waitLine(match: (l: Record<string, unknown>) => boolean, ms: number, what: string): Promise<Record<string, unknown>>;
  stop(): void;
}

function startRole(netns: string, args: string[], label: string): Child {
  const child = spawn("ip", ["netns", "exec", netns, process.execPath, "--max-old-space-size=2048", SELF, ...args], { stdio: ["pipe", "pipe", "pipe"] });
  const unregister = onCleanup(label, () => killPid(child.pid, "SIGKILL"));
  const lines: Record<string, unknown>[] = [];
  let stderr = "";
  child.stderr!.on("data", (d) => (stderr = (stderr + d).slice(-4000)));
  createInterface({ input: child.stdout! }).on("line", (l) => {
    try {
      lines.push(JSON.parse(l));
    } catch {
      stderr += `${l}\n`;
    }
  });
  child.stdin!.on("error", () => {});
  return {
    child,
    lines,
    async waitLine(match, ms, what) {
      const deadline = Date.now() + ms;
      for (;;) {
        const found = lines.find(match);
        if (found) return found;
        if (child.exitCode !== null || Date.now() > deadline) throw new Error(`${label}: no ${what} (exit ${child.exitCode}): ${stderr.slice(-2000)}`);
        await sleep(100);
      }
    },
    stop() {
      unregister();
    },
  };
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      devices: { type: "string", default: "300" },
      "per-connection": { type: "string", default: "10" },
      processes: { type: "string", default: "2" },
      "fail-percent": { type: "string", default: "10" },
      scenarios: { type: "string", default: "publish,clean,abort,steady" },
      "audit-interval": { type: "string", default: "20" },
      // shorter than the agent's default (600 s) so that the window sees every device beat;
      // the load at 600 s is this one × interval / 600
      "heartbeat-interval": { type: "string", default: "60" },
      "steady-window": { type: "string", default: "120" },
      out: { type: "string", default: join(repoRoot, "bench", "pull-results.json") },
    },
  });
  const devices = Number(values.devices);
  const perConnection = Number(values["per-connection"]);
  const processes = Math.max(1, Math.min(Number(values.processes), devices));
  const scenarios = values.scenarios!.split(",");
  const t0 = Date.now();
  const authority = createAuthority("bench");
  const signing = createFleetSigningKey();
  const key = await createDeviceKey();
  const cluster: NatsCluster = await startNatsCluster({ authority, monitor: true, maxFileStore: "2GB" });
  const dir = mkdtempSync(join(tmpdir(), "pull-bench-"));
  onCleanup(`bench folder ${dir}`, () => rmSync(dir, { recursive: true, force: true }));
  const work: Work = {
    servers: cluster.servers,
    controllerCreds: (await issueController(authority)).creds,
    verifyKey: signing.publicPem,
    signingKey: signing.privatePem,
    identity: key.identity,
    recipient: key.recipient,
    devices,
    perConnection,
    failVersion: 3,
    failEvery: Math.max(1, Math.round(100 / Number(values["fail-percent"]))),
    schedule: { auditMs: Number(values["audit-interval"]) * 1000, auditSplayMs: Number(values["audit-interval"]) * 250, heartbeatMs: Number(values["heartbeat-interval"]) * 1000 },
    monitors: cluster.nodes.map((n) => `${n.address}:8222`),
    steadyWindowS: Number(values["steady-window"]),
  };
  let usersIssuedMs: number | undefined;
  if (perConnection === 1) {
    work.deviceCreds = {};
    const tUsers = Date.now();
    for (const d of deviceNames(devices)) work.deviceCreds[d] = (await issueDevice(authority, d)).creds;
    usersIssuedMs = Date.now() - tUsers;
    console.error(`${devices} device users issued in ${usersIssuedMs} ms`);
  }
  const workFile = join(dir, "work.json");
  writeFileSync(workFile, JSON.stringify(work), { mode: 0o600 });

  // the agents start before the buckets exist
  const tAgents = Date.now();
  const per = Math.ceil(devices / processes);
  const agentProcs = Array.from({ length: processes }, (_, i) =>
    startRole(cluster.hubNs, ["--role", "agents", "--work", workFile, "--from", String(i * per), "--to", String(Math.min(devices, (i + 1) * per))], `agents ${i}`),
  );
  const ready = await Promise.all(agentProcs.map((p) => p.waitLine((l) => l.event === "ready", 900_000, "ready line")));
  const agentsUpMs = Date.now() - tAgents;
  const connections = ready.reduce((a, r) => a + Number(r.connections), 0);
  console.error(`${devices} simulated agents on ${connections} connections in ${processes} processes, up in ${agentsUpMs} ms`);

  // buckets and stream, made from the hub namespace by a controller process (the scenario "setup")
  const setupProc = startRole(cluster.hubNs, ["--role", "setup", "--work", workFile], "setup");
  await setupProc.waitLine((l) => l.event === "setup", 60_000, "setup");
  setupProc.stop();
  await sleep(10_000); // the devices' first reads of the new bucket (they retry with back-off)

  const results: Record<string, unknown>[] = [];
  const versions: Record<string, number> = { publish: 1, clean: 2, abort: 3, steady: 0 };
  const agentStats = async () => {
    const before = agentProcs.map((p) => p.lines.length);
    for (const p of agentProcs) p.child.stdin!.write("stats\n");
    const all = await Promise.all(agentProcs.map((p, i) => p.waitLine((l) => l.event === "stats" && p.lines.indexOf(l) >= before[i], 30_000, "stats")));
    const sum: Record<string, number> = {};
    for (const s of all) for (const [k, v] of Object.entries(s)) if (typeof v === "number") sum[k] = (sum[k] ?? 0) + v;
    return sum;
  };
  for (const scenario of scenarios) {
    const proc = startRole(cluster.hubNs, ["--role", "controller", "--work", workFile, "--scenario", scenario, "--version", String(versions[scenario] ?? 9)], scenario);
    const figures = await proc.waitLine((l) => l.event === "figures", 420_000, `figures of ${scenario}`).catch((e) => ({ scenario, error: String(e) }));
    proc.stop();
    const stats = await agentStats();
    results.push({ ...figures, agents: stats });
    console.error(JSON.stringify({ ...figures, agents: stats }));
  }
  for (const p of agentProcs) p.stop();
  const report = {
    date: new Date().toISOString(),
    machine: { cpus: cpus().length, model: cpus()[0]?.model, memGb: +(totalmem() / 1e9).toFixed(1), loadavg: loadavg() },
    nats: "nats-server 3-node cluster, JetStream R3, each node in its own network namespace",
    devices,
    perConnection,
    processes,
    connections,
    agentsUpMs,
    usersIssuedMs,
    schedule: work.schedule,
    totalS: Math.round((Date.now() - t0) / 1000),
    results,
  };
  writeFileSync(values.out!, JSON.stringify(report, null, 2) + "\n");
  console.error(`written to ${values.out}`);
  cluster.stop();
}

async function setupRole(work: Work): Promise<void> {
  const broker = await connectNats({ servers: work.servers, credentials: work.controllerCreds, name: "bench-setup", timeoutMs: 15_000 });
  await waitFor(
    async () => {
      try {
        await broker.ensureBucket(DESIRED_BUCKET, { replicas: 3, history: 5 });
        await broker.ensureBucket(ROLLOUTS_BUCKET, { replicas: 3, history: 5 });
        await broker.ensureStream(REPORTS_STREAM, [REPORTS_SUBJECTS], { replicas: 3, maxMsgsPerSubject: 100 });
        return true;
      } catch {
        return false;
      }
    },
    60_000,
    "JetStream to accept R3 buckets and streams",
  );
  await broker.close();
  line({ event: "setup" });
}

const { values: role } = parseArgs({
  options: { role: { type: "string" }, work: { type: "string" }, from: { type: "string" }, to: { type: "string" }, scenario: { type: "string" }, version: { type: "string" } },
  strict: false,
});
const work = role.work ? (JSON.parse(readFileSync(String(role.work), "utf8")) as Work) : undefined;
const entry =
  role.role === "agents"
    ? agents(work!, Number(role.from), Number(role.to))
    : role.role === "controller"
      ? controller(work!, String(role.scenario), Number(role.version))
      : role.role === "setup"
        ? setupRole(work!)
        : main();
entry.then(
  () => process.exit(0),
  (error) => {
    console.error(error instanceof Error ? error.stack : error);
    process.exit(1);
  },
);
