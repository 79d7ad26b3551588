// provision agent: runs on a Pi as a systemd service. Connects out to the cluster, follows
// its own desired state (core/pull/device.ts: signed, encrypted, versioned bundles), and
// applies each bundle with the same engine and transaction as a push run, through the
// local transport. An armed run is confirmed from outside (a JetStream-acknowledged publish)
// before it is disarmed; without that the host's own revert undoes it. Every version it
// tried is recorded on disk first, so a failed or reverted version is never tried again.
import { parseArgs } from "node:util";
import { readFileSync } from "node:fs";
import { YamlSource } from "../core/config/yaml-source.js";
import { compile } from "../core/config/schema.js";
import { BUILT_IN, Registry } from "../core/config/registry.js";
import type { ConnectionTarget } from "../core/transport/transport.js";
import { execute, type RunSettings } from "../core/run/run.js";
import { presentRun, type ShownRun } from "../core/report/changes.js";
import { renderChanges, renderSummary, runReport } from "../core/report/output.js";
import { LocalTransport } from "../core/transport/local.js";
import { ConfigError, UsageError, messageOf } from "../core/errors.js";
import { connectNats } from "../core/pull/nats.js";
import type { Broker } from "../core/pull/broker.js";
import type { OpenedBundle } from "../core/pull/bundle.js";
import { followDesiredState, type Applied, type DeviceEvent } from "../core/pull/device.js";
import type { Outcome } from "../core/pull/rollout.js";
import { devicePlays } from "../core/pull/device-plays.js";
import { deviceInbox, deviceName, reportSubject } from "../core/pull/subjects.js";
import { DEFAULT_SCHEDULE, startReporting, type AuditResult, type ReportingEvent, type ReportingSchedule } from "../core/pull/audit.js";
import { parseDuration } from "../core/pull/publish.js";
import { builtinModules } from "../modules/index.js";
import { listrView } from "./progress.js";
import { AgentState, type Tried } from "./agent-state.js";

const HELP = `Usage: provision agent --config FILE

Run the pull agent (normally as the systemd service provision-agent, installed by
provision enrol): connect out to the cluster, apply this device's signed desired state
with the same engine as a push run, confirm it from outside, report the outcome.`;

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

/** This machine, as the engine's target: reached by the local transport. */
const localTarget = (device: string): ConnectionTarget => ({
  name: device,
  address: "localhost",
  port: 22,
  user: "root",
  become: false,
  connectTimeoutSeconds: 10,
  hostKeys: { file: "/dev/null", acceptNew: false },
});

async function agentRegistry(config: AgentConfig): Promise<Registry> {
  const registry = new Registry();
  for (const module of builtinModules) registry.register(module, BUILT_IN);
  for (const plugin of config.plugins) await registry.loadPlugin(plugin, "/");
  return registry;
}

/** What a run's host result means for the fleet. */
export function outcomeOf(run: ShownRun, unconfirmed = false): { outcome: Exclude<Outcome, "timeout">; detail?: string; rebootPending: boolean } {
  const host = run.hosts[0];
  if (!host) return { outcome: "applied", detail: "no play of the bundle matches this device", rebootPending: false };
  const rebootPending = host.notes.some((n) => n.includes("resumes after the boot"));
  switch (host.status) {
    case "ok":
    case "changed":
      return { outcome: "applied", detail: host.status === "ok" ? "no changes" : undefined, rebootPending };
    case "rolled_back":
      return host.rolledBackBy === "host" || unconfirmed
        ? { outcome: "reverted", detail: host.error, rebootPending: false }
        : { outcome: "failed", detail: `rolled back: ${host.error ?? "a task failed"}`, rebootPending: false };
    default:
      return { outcome: "failed", detail: host.error ?? host.status, rebootPending: false };
  }
}

/** Apply one opened bundle; recorded as tried before anything runs. */
export async function applyBundle(bundle: OpenedBundle, config: AgentConfig, broker: Broker, state: AgentState): Promise<Applied> {
  state.record({ version: bundle.version, phase: "applying", at: new Date().toISOString() });
  let mask = (text: string) => text;
  const settle = (tried: Omit<Tried, "version" | "at">, detail?: string) => {
    state.record({ version: bundle.version, at: new Date().toISOString(), ...tried });
    return detail === undefined ? undefined : mask(detail);
  };
  let prepared: ReturnType<typeof devicePlays>;
  try {
    prepared = devicePlays(bundle.playbook, await agentRegistry(config), localTarget(config.device));
    mask = prepared.mask;
  } catch (error) {
    const detail = settle({ phase: "done", outcome: "failed" }, `the bundle cannot be run: ${messageOf(error)}`);
    return { outcome: "failed", detail };
  }
  const enc = new TextEncoder();
  // the round trip that proves the cluster is reachable over the network as the change left it
  let unconfirmed = false;
  const confirm = async () => {
    unconfirmed = true;
    await broker.publish(reportSubject(config.device, "confirm"), enc.encode(JSON.stringify({ version: bundle.version, at: new Date().toISOString() })), {
      id: `${config.device}-${bundle.version}-confirm`,
    });
    unconfirmed = false;
  };
  let run: ShownRun;
  try {
    run = presentRun(
      await execute(prepared.plays, SETTINGS, (target) => new LocalTransport(target, config.commandPrefix ? { prefix: config.commandPrefix } : {}), listrView(SETTINGS), {
        confirm,
      }),
    );
  } catch (error) {
    const detail = settle({ phase: "done", outcome: "failed" }, `the run stopped: ${messageOf(error)}`);
    return { outcome: "failed", detail };
  }
  log(mask(renderChanges(run, false) + renderSummary(run)));
  const { outcome, detail, rebootPending } = outcomeOf(run, unconfirmed);
  if (rebootPending) {
    // Resuming a pull run after this machine's reboot (verify, confirm, disarm) is not built
    // yet: the host's revert timer will undo the run. Said as it is; the version counts as
    // tried, so the agent does not run it again after the boot (it would reboot in a loop).
    const why = "the playbook rebooted this machine; resuming a pull run after a reboot is not built yet, so the host's revert timer undoes the run";
    return { outcome: "failed", detail: settle({ phase: "reboot-pending", runId: run.runId, outcome: "failed" }, why), report: runReport(run) };
  }
  return { outcome, detail: settle({ phase: "done", outcome }, detail), report: runReport(run) };
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
  const broker = await connectNats({
    servers: config.servers,
    credentials,
    inboxPrefix: deviceInbox(config.device),
    name: config.device,
    waitForFirstConnect: true,
  });
  broker.onEvent((e) => log(`broker: ${e.type}${e.detail ? ` (${e.detail})` : ""}`));
  log(`connected to ${broker.server() ?? "the cluster"}`);
  // the bundle to audit: the one applied last (a failed or reverted run left the host as
  // that one had it); an applying run and an audit never overlap
  let current: OpenedBundle | undefined;
  let applying: Promise<unknown> = Promise.resolve();
  const reporting = startReporting(broker, config.device, {
    schedule: config.schedule,
    applied: () => current?.version ?? (state.tried?.outcome === "applied" ? state.tried.version : undefined),
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
      apply: (bundle) => {
        const run = applyBundle(bundle, config, broker, state);
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
    ({ values } = parseArgs({ args: argv, options: { config: { type: "string", short: "c" }, help: { type: "boolean", short: "h" } }, strict: true }));
  } catch (error) {
    throw new UsageError(`${(error as Error).message}. See provision agent --help.`);
  }
  if (values.help) return (void console.log(HELP), 0);
  const config = loadAgentConfig(values.config ?? DEFAULT_CONFIG);
  const stop = new AbortController();
  for (const s of ["SIGTERM", "SIGINT"] as const) process.once(s, () => stop.abort());
  await runAgent(config, stop.signal);
  return 0;
}
