// provision agent: runs on a Pi as a systemd service. Connects out to the cluster, follows
// its own desired state (core/pull/device.ts: signed, encrypted, versioned bundles), and
// applies each bundle with the same engine and transaction as a push run, through the
// local transport. An armed run is confirmed from outside (a JetStream-acknowledged publish)
// before it is disarmed; without that the host's own revert undoes it. Every version it
// tried is recorded on disk first, so a failed or reverted version is never tried again.
// A run that reboots this machine goes on after the boot: the agent (started again by
// systemd) takes it up from its state and the host's transaction record, verifies,
// confirms and commits it like a push run after its reboot, or rolls it back; a run the
// host reverted by itself meanwhile is reported reverted.
import { parseArgs } from "node:util";
import { readFileSync } from "node:fs";
import { YamlSource } from "../core/config/yaml-source.js";
import { compile } from "../core/config/schema.js";
import { BUILT_IN, Registry } from "../core/config/registry.js";
import { execute, newRunId, type Resume, type RunSettings, type RunView } from "../core/run/run.js";
import { presentRun, type ShownRun } from "../core/report/changes.js";
import { renderChanges, renderSummary, runReport } from "../core/report/output.js";
import { LocalTransport, localTarget } from "../core/transport/local.js";
import { ConfigError, UsageError, messageOf } from "../core/errors.js";
import { connectNats } from "../core/pull/nats.js";
import type { Broker } from "../core/pull/broker.js";
import { openBundle, type OpenedBundle } from "../core/pull/bundle.js";
import { followDesiredState, type Applied, type DeviceEvent } from "../core/pull/device.js";
import { devicePlays } from "../core/pull/device-plays.js";
import { deviceInbox, deviceName, reportSubject } from "../core/pull/subjects.js";
import { DEFAULT_SCHEDULE, startReporting, type AuditResult, type ReportingEvent, type ReportingSchedule } from "../core/pull/audit.js";
import { parseDuration } from "../core/pull/publish.js";
import { builtinModules } from "../modules/index.js";
import { listrView } from "./progress.js";
import { AgentState } from "./agent-state.js";
import { enrolByToken } from "./enrol-token.js";
import { lastTransactionProbe, parseLastTransaction } from "../core/run/transaction.js";

const HELP = `Usage: provision agent [--config FILE]
       provision agent --enrol TOKEN [--wait 1h]

Run the pull agent (normally as the systemd service provision-agent, installed by
provision enrol): connect out to the cluster, apply this device's signed desired state
with the same engine as a push run, confirm it from outside, report the outcome.

--enrol TOKEN: enrol this machine with a one-time token (provision fleet token): make
its own NATS and age keys, ask the fleet, wait (--wait, default 1h) for the controller's
provision fleet accept, then install and start the agent (as provision enrol does over SSH).`;

export const DEFAULT_CONFIG = "/etc/provision/agent.yaml";
export const DEFAULT_STATE_DIR = "/var/lib/provision/agent";

export interface AgentConfig {
  file: string;
  device: string;
  servers: string[];
  credentialsFile: string;
  identityFile: string;
  verifyKeyFile: string;
  stateDir: string;
  /** Plugins (absolute paths or package names) whose modules bundles may use, beside the built-in ones. */
  plugins: string[];
  /** argv before every command the engine runs (tests: enter a test host's namespaces and root). */
  commandPrefix?: string[];
  /** When the agent audits what it applied and when it says it is alive (core/pull/audit.ts). */
  schedule: ReportingSchedule;
}

const configSchema = {
  type: "object",
  additionalProperties: false,
  required: ["device", "servers", "credentials", "identity", "verify_key"],
  properties: {
    device: { type: "string", minLength: 1 },
    servers: { type: "array", minItems: 1, items: { type: "string", minLength: 1 } },
    credentials: { type: "string", pattern: "^/" },
    identity: { type: "string", pattern: "^/" },
    verify_key: { type: "string", pattern: "^/" },
    state_dir: { type: "string", pattern: "^/" },
    plugins: { type: "array", items: { type: "string", minLength: 1 } },
    command_prefix: { type: "array", items: { type: "string", minLength: 1 } },
    audit_interval: { type: "string" },
    audit_splay: { type: "string" },
    heartbeat_interval: { type: "string" },
  },
};

export function loadAgentConfig(file: string): AgentConfig {
  const source = YamlSource.load(file, "an agent configuration");
  const doc = source.toJS();
  const validate = compile(configSchema);
  if (!validate(doc)) throw source.schemaError(validate.errors ?? [], [], "agent configuration");
  const c = doc as Record<string, never>;
  try {
    deviceName(c.device);
  } catch (error) {
    throw new ConfigError(`${source.position(["device"])}: ${messageOf(error)}`);
  }
  const duration = (field: string, fallback: number): number => {
    if (c[field] === undefined) return fallback;
    try {
      return parseDuration(c[field], field);
    } catch (error) {
      throw new ConfigError(`${source.position([field])}: ${messageOf(error)}`);
    }
  };
  const schedule: ReportingSchedule = {
    auditMs: duration("audit_interval", DEFAULT_SCHEDULE.auditMs),
    auditSplayMs: duration("audit_splay", DEFAULT_SCHEDULE.auditSplayMs),
    heartbeatMs: duration("heartbeat_interval", DEFAULT_SCHEDULE.heartbeatMs),
  };
  if (schedule.auditSplayMs >= schedule.auditMs) throw new ConfigError(`${source.position(["audit_splay"])}: audit_splay must be shorter than audit_interval.`);
  return {
    file,
    schedule,
    device: c.device,
    servers: c.servers,
    credentialsFile: c.credentials,
    identityFile: c.identity,
    verifyKeyFile: c.verify_key,
    stateDir: c.state_dir ?? DEFAULT_STATE_DIR,
    plugins: c.plugins ?? [],
    commandPrefix: c.command_prefix,
  };
}

function readSecretFile(what: string, file: string): string {
  try {
    return readFileSync(file, "utf8");
  } catch (error) {
    throw new ConfigError(
      `cannot read the ${what} ${file} (${(error as NodeJS.ErrnoException).code ?? messageOf(error)}). Enrol the device again (provision enrol) or fix the path in the agent configuration.`,
    );
  }
}

const log = (line: string) => process.stdout.write(`${line}\n`);

const SETTINGS: RunSettings = { check: false, breakLock: false, forks: 1, tags: [], skipTags: [], acceptNewHostKeys: false, renderer: "verbose" };

async function agentRegistry(config: AgentConfig): Promise<Registry> {
  const registry = new Registry();
  for (const module of builtinModules) registry.register(module, BUILT_IN);
  for (const plugin of config.plugins) await registry.loadPlugin(plugin, "/");
  return registry;
}

/** What a run's host result means for the fleet. */
export function outcomeOf(run: ShownRun, unconfirmed = false): Applied {
  const host = run.hosts[0];
  if (!host) return { outcome: "applied", detail: "no play of the bundle matches this device" };
  switch (host.status) {
    case "ok":
    case "changed":
      return { outcome: "applied", detail: host.status === "ok" ? "no changes" : undefined };
    case "rolled_back":
      return host.rolledBackBy === "host" || unconfirmed
        ? { outcome: "reverted", detail: host.error }
        : { outcome: "failed", detail: `rolled back: ${host.error ?? "a task failed"}` };
    default:
      return { outcome: "failed", detail: host.error ?? host.status };
  }
}

/** The cluster as the agent reaches it: connected, or still connecting (right after a boot). */
type BrokerSource = Broker | Promise<Broker>;

const CONNECT_WAIT_MS = 10_000;

/** The broker once connected; rejects when it is not within CONNECT_WAIT_MS (a confirmation is tried again). */
async function connected(broker: BrokerSource): Promise<Broker> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`not connected to the cluster within ${CONNECT_WAIT_MS / 1000}s`)), CONNECT_WAIT_MS);
  });
  try {
    return await Promise.race([broker, late]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * The engine's progress display, and the agent's state told when a failed armed run is
 * handed to the host's own revert (which reboots this machine): the reason is reported
 * with the outcome after the boot.
 */
function watchingReverts(view: RunView, reverting: (reason: string) => void): RunView {
  let reason = "the run failed";
  return {
    play: (play, hosts) => view.play(play, hosts),
    batch: (index, count, hosts) => view.batch(index, count, hosts),
    hosts: (hosts, runOne) =>
      view.hosts(hosts, (work, emit) =>
        runOne(work, (event) => {
          if (event.type === "failed") reason = event.mask(event.reason);
          if (event.type === "rolling_back_as_host") reverting(reason);
          emit(event);
        }),
      ),
  };
}

/**
 * Run the bundle's plays with the engine through the local transport (a new run, or one
 * taken up again after this machine's reboot) and record how it ended. null: this machine
 * reboots now and the run goes on after the boot.
 */
async function runBundle(
  bundle: OpenedBundle,
  prepared: ReturnType<typeof devicePlays>,
  config: AgentConfig,
  broker: BrokerSource,
  state: AgentState,
  how: { runId: string } | { resume: Resume },
): Promise<Applied | null> {
  const enc = new TextEncoder();
  // the round trip that proves the cluster is reachable over the network as the change left it
  let unconfirmed = false;
  const confirm = async () => {
    unconfirmed = true;
    await (
      await connected(broker)
    ).publish(reportSubject(config.device, "confirm"), enc.encode(JSON.stringify({ version: bundle.version, at: new Date().toISOString() })), {
      id: `${config.device}-${bundle.version}-confirm`,
    });
    unconfirmed = false;
  };
  const runId = "runId" in how ? how.runId : how.resume.runId;
  const view = watchingReverts(listrView(SETTINGS), (reason) => state.record({ version: bundle.version, phase: "reverting", runId, detail: reason, at: new Date().toISOString() }));
  // recorded before the reboot is even scheduled: the machine may go down any moment after
  const beforeReboot = (resume: Resume) => state.record({ version: bundle.version, phase: "reboot-pending", runId: resume.runId, resume, at: new Date().toISOString() });
  let run: ShownRun;
  try {
    run = presentRun(
      await execute(prepared.plays, SETTINGS, (target) => new LocalTransport(target, config.commandPrefix ? { prefix: config.commandPrefix } : {}), view, {
        confirm,
        beforeReboot,
        ...how,
      }),
    );
  } catch (error) {
    const detail = prepared.mask(`the run stopped: ${messageOf(error)}`);
    state.record({ version: bundle.version, phase: "done", outcome: "failed", runId, at: new Date().toISOString() });
    return { outcome: "failed", detail };
  }
  log(prepared.mask(renderChanges(run, false) + renderSummary(run)));
  if (run.resumes) {
    state.record({ version: bundle.version, phase: "reboot-pending", runId: run.runId, resume: run.resumes, at: new Date().toISOString() });
    log(`version ${bundle.version}: this machine reboots now; run ${run.runId} goes on after the boot`);
    return null;
  }
  const { outcome, detail } = outcomeOf(run, unconfirmed);
  state.record({ version: bundle.version, phase: "done", outcome, runId, at: new Date().toISOString() });
  return { outcome, detail: detail === undefined ? undefined : prepared.mask(detail), report: runReport(run) };
}

/**
 * Apply one opened bundle (`bytes`: as signed, kept for a run that goes on after a
 * reboot); recorded as tried before anything runs. null: this machine reboots now.
 */
export async function applyBundle(bundle: OpenedBundle, bytes: Uint8Array, config: AgentConfig, broker: BrokerSource, state: AgentState): Promise<Applied | null> {
  const runId = newRunId();
  state.saveBundle(bytes);
  state.record({ version: bundle.version, phase: "applying", runId, at: new Date().toISOString() });
  let prepared: ReturnType<typeof devicePlays>;
  try {
    prepared = devicePlays(bundle.playbook, await agentRegistry(config), localTarget(config.device));
  } catch (error) {
    state.record({ version: bundle.version, phase: "done", outcome: "failed", runId, at: new Date().toISOString() });
    return { outcome: "failed", detail: `the bundle cannot be run: ${messageOf(error)}` };
  }
  return runBundle(bundle, prepared, config, broker, state, { runId });
}

/**
 * At start-up: what the agent left unfinished when it stopped. A run that rebooted this
 * machine is taken up again (verified, confirmed from outside, committed; or rolled back;
 * or found reverted by the host); a run the agent was applying or had handed to the host's
 * revert is told as the host's record says it ended. Returns the outcome to report, or
 * null (nothing left, or the host's revert timer has yet to end the run).
 */
export async function finishLeftRun(config: AgentConfig, state: AgentState, broker: BrokerSource): Promise<{ bundle: OpenedBundle; result: Applied } | null> {
  const tried = state.tried;
  if (!tried || tried.phase === "done" || !tried.runId) return null;
  const bytes = state.savedBundle();
  if (!bytes) return null;
  const identity = {
    device: config.device,
    verifyKey: readSecretFile("fleet verify key", config.verifyKeyFile),
    identity: readSecretFile("age identity", config.identityFile).trim(),
  };
  // checked again (it is a file on disk); as of when it was applied, which may be past its expiry now
  const bundle = await openBundle(bytes, { ...identity, now: new Date(tried.at) });
  if (bundle.version !== tried.version) return null;
  const done = (result: Applied) => {
    state.record({ version: tried.version, phase: "done", outcome: result.outcome, runId: tried.runId, at: new Date().toISOString() });
    return { bundle, result };
  };
  if (tried.phase === "reboot-pending" && tried.resume) {
    log(`version ${tried.version}: taking run ${tried.runId} up again after this machine's reboot`);
    const prepared = devicePlays(bundle.playbook, await agentRegistry(config), localTarget(config.device));
    const result = await runBundle(bundle, prepared, config, broker, state, { resume: tried.resume });
    return result && { bundle, result };
  }
  const local = new LocalTransport(localTarget(config.device), config.commandPrefix ? { prefix: config.commandPrefix } : {});
  await local.connect();
  const last = parseLastTransaction((await local.exec(lastTransactionProbe.command)).stdout);
  if (last?.id !== tried.runId) return done({ outcome: "failed", detail: "the agent stopped before the run changed anything" });
  switch (last.state) {
    case "reverting":
    case "reverted":
      return done({ outcome: "reverted", detail: `rolled back by host: ${tried.detail ?? "the run was not confirmed before the agent stopped"}` });
    case "committed":
      return done({ outcome: "applied" });
    case "rolled_back":
      return done({ outcome: "failed", detail: `rolled back: ${tried.detail ?? "the agent stopped during the run"}` });
    default:
      if (last.armed) {
        log(`version ${tried.version}: run ${tried.runId} was left ${last.state} and armed; the host's revert timer ends it`);
        return null;
      }
      return done({ outcome: "failed", detail: `the agent stopped during run ${tried.runId}, which is left ${last.state}: see provision rollback` });
  }
}

/**
 * A check-mode run of the bundle this device applied: what would change now is drift.
 * The fingerprint is each task's status and change summaries (masked), not the run's
 * times or id, so that an unchanged host gives the same fingerprint every time.
 */
export async function auditBundle(bundle: OpenedBundle, config: AgentConfig): Promise<AuditResult> {
  const settings: RunSettings = { ...SETTINGS, check: true, renderer: "silent" };
  const prepared = devicePlays(bundle.playbook, await agentRegistry(config), localTarget(config.device));
  const run = presentRun(
    await execute(prepared.plays, settings, (target) => new LocalTransport(target, config.commandPrefix ? { prefix: config.commandPrefix } : {}), listrView(settings)),
  );
  const tasks = run.hosts.flatMap((h) => h.tasks);
  const changed = tasks.filter((t) => t.changes.length > 0).length;
  const failed = run.hosts.find((h) => h.error)?.error;
  return {
    version: bundle.version,
    drift: changed > 0,
    changed,
    ...(failed ? { error: prepared.mask(failed) } : {}),
    fingerprint: JSON.stringify([bundle.version, failed ?? null, tasks.map((t) => [t.name, t.status, t.changes.map((c) => c.summary)])]),
    report: runReport(run),
  };
}

export async function runAgent(config: AgentConfig, signal?: AbortSignal): Promise<void> {
  const credentials = readSecretFile("credentials file", config.credentialsFile);
  const identity = readSecretFile("age identity", config.identityFile).trim();
  const verifyKey = readSecretFile("fleet verify key", config.verifyKeyFile);
  const state = AgentState.open(config.stateDir);
  log(`provision agent: device ${config.device}, last tried version ${state.tried?.version ?? "none"}; connecting to ${config.servers.join(", ")}`);
  const connecting = connectNats({
    servers: config.servers,
    credentials,
    inboxPrefix: deviceInbox(config.device),
    name: config.device,
    waitForFirstConnect: true,
  });
  // what the agent left unfinished (a run that rebooted this machine) goes on at once, the
  // cluster reached or not: verification needs no network, and the host's revert timer runs
  const left = finishLeftRun(config, state, connecting);
  left.catch(() => {});
  const broker = await connecting;
  broker.onEvent((e) => log(`broker: ${e.type}${e.detail ? ` (${e.detail})` : ""}`));
  log(`connected to ${broker.server() ?? "the cluster"}`);
  // the bundle to audit: the one applied last (a failed or reverted run left the host as
  // that one had it); an applying run and an audit never overlap
  let current: OpenedBundle | undefined;
  let applying: Promise<unknown> = left.catch(() => {});
  const reporting = startReporting(broker, config.device, {
    schedule: config.schedule,
    applied: () => current?.version ?? state.applied,
    audit: async () => {
      await applying;
      return current ? auditBundle(current, config) : null;
    },
    onEvent: (e) => log(describeReportingEvent(e)),
  });
  const follower = await followDesiredState(
    broker,
    { name: config.device, verifyKey, identity },
    {
      appliedVersion: () => state.tried?.version,
      running: () => state.applied,
      resume: () => left,
      apply: (bundle, bytes) => {
        // this machine is about to reboot: the bundle is seen again after the boot, once the run there has ended
        if (state.tried?.phase === "reboot-pending") {
          log(`version ${bundle.version} waits: this machine reboots first (run ${state.tried.runId})`);
          return Promise.resolve(null);
        }
        const run = applyBundle(bundle, bytes, config, broker, state);
        applying = run.catch(() => {});
        return run;
      },
      onCurrent: (bundle, outcome) => {
        if (outcome === "applied" || (outcome === "applied before" && state.tried?.outcome === "applied")) current = bundle;
      },
      onEvent: (e) => log(describeDeviceEvent(e)),
    },
  );
  await new Promise<void>((resolve) => {
    if (signal?.aborted) return resolve();
    signal?.addEventListener("abort", () => resolve(), { once: true });
  });
  await follower.stop();
  await reporting.stop();
  await broker.close();
}

export function describeDeviceEvent(e: DeviceEvent): string {
  switch (e.type) {
    case "refused":
      return `refused a bundle${e.version ? ` (version ${e.version})` : ""}: ${e.reason}: ${e.message}`;
    case "held":
      return `version ${e.version} waits: rollout ${e.rollout} is ${e.status}${e.reason ? ` (${e.reason})` : ""}`;
    case "result":
      return `version ${e.version}: ${e.outcome}${e.detail ? `: ${e.detail}` : ""}`;
    case "report-failed":
      return `could not report: ${e.message}`;
  }
}

export function describeReportingEvent(e: ReportingEvent): string {
  switch (e.type) {
    case "audit":
      return `audit of version ${e.result.version}: ${e.result.error ? `could not run: ${e.result.error}` : e.result.drift ? `drift (${e.result.changed} task(s) would change)` : "in sync"}${e.sent ? " (reported)" : " (unchanged, not reported)"}`;
    case "heartbeat":
      return "heartbeat sent";
    case "report-failed":
      return `could not report: ${e.message}`;
  }
}

export async function agent(argv: string[]): Promise<number> {
  let values;
  try {
    ({ values } = parseArgs({
      args: argv,
      options: { config: { type: "string", short: "c" }, enrol: { type: "string" }, wait: { type: "string" }, help: { type: "boolean", short: "h" } },
      strict: true,
    }));
  } catch (error) {
    throw new UsageError(`${(error as Error).message}. See provision agent --help.`);
  }
  if (values.help) return (void console.log(HELP), 0);
  if (values.enrol) return enrolByToken(values.enrol, parseDuration(values.wait ?? "1h", "--wait"));
  if (values.wait) throw new UsageError("--wait goes with --enrol TOKEN. See provision agent --help.");
  const config = loadAgentConfig(values.config ?? DEFAULT_CONFIG);
  const stop = new AbortController();
  for (const s of ["SIGTERM", "SIGINT"] as const) process.once(s, () => stop.abort());
  await runAgent(config, stop.signal);
  return 0;
}
