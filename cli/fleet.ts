// The controller's command line of pull mode: provision fleet init|device|revoke|server-config,
// provision publish, provision rollout start|pause|resume|abort|show, provision status --fleet.
import { parseArgs, type ParseArgsConfig } from "node:util";

type ParseArgsOptionsConfig = NonNullable<ParseArgsConfig["options"]>;
import { existsSync, mkdirSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { ConfigError, UsageError, messageOf, quote } from "../core/errors.js";
import { loadInventory, selectHosts } from "../core/config/inventory.js";
import { type Playbook } from "../core/config/playbook.js";
import { openSecrets } from "../core/config/vault.js";
import { type PreparedPlay, type RunSettings } from "../core/run/run.js";
import { loadPlays } from "./load.js";
import { renderHtmlReport } from "../core/report/html-report.js";
import { createDeviceKey, createFleetSigningKey, sealBundle } from "../core/pull/bundle.js";
import { createAuthority, issueController, issueDevice, serverAuthConfig } from "../core/pull/credentials.js";
import { BrokerError, type NatsBroker } from "../core/pull/nats.js";
import { contentDigest, digestKey, parseDuration, planPublish, renderDevicePlaybooks, type PublishedRecord, type RenderedDevice } from "../core/pull/publish.js";
import { counts, DEFAULT_UNREACHABLE_MS, readRollout, requestControl, runRollout, type Command, type Counts, type RolloutPolicy, type RolloutState } from "../core/pull/rollout.js";
import { fleetRun, fleetStatus, renderFleetStatus } from "../core/pull/fleet-status.js";
import { desiredKey, desiredRecordKey, deviceName, DESIRED_BUCKET, FLEET_VERSION_KEY, REPORTS_STREAM, rolloutId } from "../core/pull/subjects.js";
import {
  connectController,
  deviceNotEnrolled,
  ensureFleetStore,
  fleetDirOf,
  FLEET_DIR_ENV,
  listDevices,
  loadAuthority,
  loadFleet,
  readDevice,
  revokeUsers,
  signingKey,
  writeAtomic,
  writeDevice,
  type FleetConfig,
} from "./fleet-config.js";
import { checkOutputFile } from "./cli.js";
import { fleetAccept, fleetToken } from "./enrol-token.js";

export const FLEET_HELP = `Usage: provision fleet init --name NAME --server HOST:PORT [--server …] [--replicas N]
       provision fleet device NAME --out DIR
       provision fleet revoke NAME
       provision fleet token NAME --out DIR [--expires 24h] [--no-code]
       provision fleet accept [NAME...] [--wait DURATION]
       provision fleet server-config --resolver-dir DIR
       provision publish --inventory FILE PLAYBOOK... [--limit PATTERN] [--expires 30d]
       provision rollout start --inventory FILE PLAYBOOK... [--limit PATTERN] [--id ID]
                 [--canary N|N%] [--serial N|N%] [--growth F] [--max-fail-percentage P]
                 [--min-reported N] [--timeout 15m]
       provision rollout pause|resume|abort ID [--reason TEXT]
       provision rollout show ID [--json]
       provision status --fleet [--inventory FILE [--limit PATTERN]] [--json] [--report FILE.html]

Pull mode: devices connect out to a NATS JetStream cluster and fetch their own signed
desired state. Every command takes --fleet-dir DIR (else $${FLEET_DIR_ENV}, else ./fleet):
the folder with fleet.yaml, the NATS authority, the bundle signing key and the devices.

  fleet init     create the fleet folder: NATS operator and accounts, the controller's
                 user, the Ed25519 signing key, fleet.yaml listing the servers
  fleet device   make a device's NATS credentials and age key into DIR (for the device)
                 and register its public keys (what enrolment does)
  fleet revoke   revoke a device's NATS user and push the account to the servers
  fleet token    a one-time enrolment token for a device no controller can reach, and
                 provision's code, into DIR: on the Pi, provision agent --enrol FILE
                 makes its own keys and asks the fleet
  fleet accept   sign what open tokens asked for (the device's JWT), record its public
                 keys and spend the token; --wait: until NAME (or every open token) is in
  fleet server-config  print the auth part of every nats-server's configuration
  publish        render each device's playbook, sign it as a new version (secrets
                 encrypted to the device) and store it now; same content: "unchanged"
  rollout start  the same, but opened to a canary, then waves growing by --growth;
                 aborts by itself past --max-fail-percentage (exit 1)
  status --fleet per device: desired and applied version, last seen, drift, last error

Rollout defaults come from the first play (serial: N or [canary, serial],
max_fail_percentage:), else canary 1, serial = canary, growth 2, max 0 %.`;

const COMMON = { "fleet-dir": { type: "string" }, help: { type: "boolean", short: "h" } } as const;

type Values = Record<string, string | boolean | string[] | undefined> & { help?: boolean };

function parse(argv: string[], options: ParseArgsOptionsConfig): { values: Values; positionals: string[] } {
  try {
    return parseArgs({ args: argv, options: { ...COMMON, ...options }, allowPositionals: true, strict: true }) as { values: Values; positionals: string[] };
  } catch (error) {
    throw new UsageError(`${(error as Error).message}. See provision fleet --help.`);
  }
}

const help = (): number => (console.log(FLEET_HELP), 0);

/**
 * A broker that cannot be reached, times out or refuses is the user's to fix (servers,
 * credentials, the cluster's health): said in one line, not as a stack trace.
 */
function brokerTrouble(error: unknown): never {
  const e = error as Error;
  if (e instanceof BrokerError || /Nats|JetStream|Timeout|Permission|Authorization|Connection|Closed/i.test(`${e?.name} ${e?.constructor?.name}`))
    throw new ConfigError(`provision: the fleet's NATS cluster: ${messageOf(e)}. Check fleet.yaml's servers, that the cluster is up, and the controller's credentials.`);
  throw error;
}

const guarded =
  (command: (argv: string[]) => Promise<number>) =>
  (argv: string[]): Promise<number> =>
    command(argv).catch(brokerTrouble);

// --- fleet ----------------------------------------------------------------------------------

export const fleetCommand = guarded(async (argv: string[]): Promise<number> => {
  const { values, positionals } = parse(argv, {
    name: { type: "string" },
    server: { type: "string", multiple: true },
    replicas: { type: "string" },
    out: { type: "string" },
    "resolver-dir": { type: "string" },
    expires: { type: "string" },
    "no-code": { type: "boolean" },
    wait: { type: "string" },
  });
  if (values.help || !positionals.length) return help();
  const dir = fleetDirOf(values["fleet-dir"] as string | undefined);
  const [sub, name] = positionals;
  switch (sub) {
    case "init":
      return fleetInit(dir, values.name as string | undefined, (values.server as string[] | undefined) ?? [], values.replicas as string | undefined);
    case "device":
      if (!name || !values.out) throw new UsageError("provision fleet device NAME --out DIR: both are needed. See provision fleet --help.");
      return fleetDevice(dir, name, resolve(values.out as string));
    case "revoke":
      if (!name) throw new UsageError("provision fleet revoke NAME: which device? See provision fleet --help.");
      return fleetRevoke(dir, name);
    case "token":
      if (!name || !values.out) throw new UsageError("provision fleet token NAME --out DIR: both are needed. See provision fleet --help.");
      return fleetToken(dir, deviceName(name), resolve(values.out as string), { ttl: values.expires as string | undefined, code: !values["no-code"] });
    case "accept":
      return fleetAccept(dir, positionals.slice(1).map(deviceName), values.wait ? parseDuration(values.wait as string, "--wait") : 0);
    case "server-config":
      if (!values["resolver-dir"]) throw new UsageError("provision fleet server-config --resolver-dir DIR: where each server keeps account JWTs.");
      process.stdout.write(await serverAuthConfig(loadAuthority(dir), values["resolver-dir"] as string));
      return 0;
    default:
      throw new UsageError(`unknown fleet command ${quote(sub)}. See provision fleet --help.`);
  }
});

async function fleetInit(dir: string, name: string | undefined, servers: string[], replicas: string | undefined): Promise<number> {
  if (!name || !servers.length) throw new UsageError("provision fleet init needs --name NAME and at least one --server HOST:PORT.");
  for (const f of ["fleet.yaml", "authority.json", "signing.key"])
    if (existsSync(join(dir, f))) throw new ConfigError(`${join(dir, f)} exists already: this folder holds a fleet. Use another --fleet-dir, or keep this one.`);
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const authority = createAuthority(name);
  const signing = createFleetSigningKey();
  writeAtomic(join(dir, "authority.json"), JSON.stringify(authority, null, 2) + "\n", 0o600);
  writeAtomic(join(dir, "signing.key"), signing.privatePem, 0o600);
  writeAtomic(join(dir, "signing.pub"), signing.publicPem, 0o644);
  writeAtomic(join(dir, "controller.creds"), (await issueController(authority)).creds, 0o600);
  const lines = [`name: ${JSON.stringify(name)}`, "servers:", ...servers.map((s) => `  - ${JSON.stringify(s)}`)];
  if (replicas !== undefined) lines.push(`replicas: ${Number(replicas)}`);
  lines.push(`bundle_expiry: ${JSON.stringify("30d")}`);
  writeAtomic(join(dir, "fleet.yaml"), lines.join("\n") + "\n", 0o644);
  loadFleet(dir); // what was written must load
  console.log(`fleet ${quote(name)} created in ${dir}
  give every nats-server the output of: provision fleet server-config --fleet-dir ${dir} --resolver-dir /var/lib/nats/jwt
  keep authority.json, signing.key and controller.creds secret (mode 0600) and backed up`);
  return 0;
}

async function fleetDevice(dir: string, name: string, out: string): Promise<number> {
  loadFleet(dir);
  if (readDevice(dir, name)) throw new ConfigError(`device ${quote(name)} is registered already (${join(dir, "devices", `${name}.json`)}); revoke it first to issue new keys.`);
  const authority = loadAuthority(dir);
  const key = await createDeviceKey();
  const user = await issueDevice(authority, name);
  mkdirSync(out, { recursive: true, mode: 0o700 });
  writeAtomic(join(out, `${name}.creds`), user.creds, 0o600);
  writeAtomic(join(out, `${name}.age`), key.identity + "\n", 0o600);
  writeDevice(dir, name, { age_recipient: key.recipient, user: user.publicKey });
  console.log(`device ${name}: NATS user ${user.publicKey}, age recipient ${key.recipient}
  for the device (secret, 0600): ${join(out, `${name}.creds`)} and ${join(out, `${name}.age`)}; it trusts ${join(dir, "signing.pub")}`);
  return 0;
}

async function fleetRevoke(dir: string, name: string): Promise<number> {
  const fleet = loadFleet(dir);
  const device = readDevice(dir, name);
  if (!device) throw deviceNotEnrolled(dir, name);
  const servers = await revokeUsers(fleet, [device.user]);
  writeDevice(dir, name, { ...device, revoked: new Date().toISOString() });
  console.log(`device ${name} revoked (NATS user ${device.user}); servers that took the account: ${servers.join(", ")}`);
  return 0;
}

// --- publish and rollout: rendering and sealing ------------------------------------------------

/** Load and prepare exactly as a push run does. */
function preparePlays(inventoryFile: string, files: string[], limit: string | undefined): Promise<{ plays: PreparedPlay[]; playbooks: Playbook[] }> {
  const settings: RunSettings = { check: false, limit, forks: 1, tags: [], skipTags: [], acceptNewHostKeys: false, breakLock: false, renderer: "silent" };
  return loadPlays(inventoryFile, files, settings);
}

const dec = new TextDecoder();
const enc = new TextEncoder();

/** The version (and rollout) of the bundle stored for a device, read without opening it. */
function storedBundle(value: Uint8Array): { version: number; rollout?: string } | null {
  try {
    const payload = JSON.parse(Buffer.from(JSON.parse(dec.decode(value)).payload, "base64").toString("utf8"));
    return Number.isSafeInteger(payload.version) ? { version: payload.version, ...(payload.rollout ? { rollout: payload.rollout } : {}) } : null;
  } catch {
    return null;
  }
}

interface Staged {
  fleet: FleetConfig;
  broker: NatsBroker;
  rendered: Map<string, RenderedDevice>;
  plan: ReturnType<typeof planPublish>;
  seal: (device: string, version: number, rollout?: string) => Promise<Uint8Array>;
  record: (device: string, version: number, rollout?: string) => Promise<void>;
  playbooks: Playbook[];
}

async function stage(values: { inventory?: string; limit?: string; expires?: string; "fleet-dir"?: string }, files: string[]): Promise<Staged> {
  if (!values.inventory) throw new UsageError("--inventory FILE is required. See provision fleet --help.");
  if (!files.length) throw new UsageError("which playbook? Give at least one PLAYBOOK. See provision fleet --help.");
  const dir = fleetDirOf(values["fleet-dir"]);
  const fleet = loadFleet(dir);
  const expiresMs = values.expires ? parseDuration(values.expires, "--expires") : fleet.bundleExpiryMs;
  const { plays, playbooks } = await preparePlays(values.inventory, files, values.limit);
  const rendered = renderDevicePlaybooks(plays);
  if (!rendered.size) throw new ConfigError("no hosts matched: nothing to publish.");
  const devices = new Map(
    [...rendered.keys()].map((d) => [
      d,
      readDevice(dir, d) ??
        (() => {
          throw deviceNotEnrolled(dir, d);
        })(),
    ]),
  );
  const key = signingKey(dir);
  const hmac = digestKey(key);
  const broker = await connectController(fleet);
  try {
    await ensureFleetStore(broker, fleet);
    const current = await Promise.all(
      [...rendered.keys()].map(async (device) => {
        const [stored, record] = await Promise.all([broker.get(DESIRED_BUCKET, desiredKey(device)), broker.get(DESIRED_BUCKET, desiredRecordKey(device))]);
        const digest = contentDigest(hmac, rendered.get(device)!);
        return {
          device,
          digest,
          ...(stored ? { stored: storedBundle(stored.value)?.version ?? 0 } : {}),
          ...(record ? { record: JSON.parse(dec.decode(record.value)) as PublishedRecord } : {}),
        };
      }),
    );
    const digests = new Map(current.map((c) => [c.device, c.digest]));
    const plan = planPublish(current, await reserveVersion(broker, current));
    return {
      fleet,
      broker,
      rendered,
      playbooks,
      plan,
      seal: (device, version, rollout) =>
        sealBundle(
          { device, version, ...(rollout ? { rollout } : {}), playbook: rendered.get(device)!.playbook },
          { signingKey: key, recipient: devices.get(device)!.age_recipient, secrets: rendered.get(device)!.secrets, expires: new Date(Date.now() + expiresMs) },
        ),
      record: async (device, version, rollout) => {
        const record: PublishedRecord = { version, digest: digests.get(device)!, ...(rollout ? { rollout } : {}), at: new Date().toISOString() };
        await broker.put(DESIRED_BUCKET, desiredRecordKey(device), enc.encode(JSON.stringify(record)));
      },
    };
  } catch (error) {
    await broker.close();
    throw error;
  }
}

/**
 * The fleet's last version, moved on by one for this publish (compare-and-swap: two
 * controllers publishing at once get different versions). Returns the value before.
 */
async function reserveVersion(broker: NatsBroker, current: Parameters<typeof planPublish>[0]): Promise<number> {
  for (let attempt = 0; attempt < 10; attempt++) {
    const entry = await broker.get(DESIRED_BUCKET, FLEET_VERSION_KEY);
    const last = entry ? Number(dec.decode(entry.value)) || 0 : 0;
    const next = planPublish(current, last).find((p) => p.action !== "unchanged")?.version;
    if (next === undefined) return last;
    try {
      await broker.put(DESIRED_BUCKET, FLEET_VERSION_KEY, enc.encode(String(next)), { previousRevision: entry?.revision ?? 0 });
      return last;
    } catch {
      /* another controller took it: read again */
    }
  }
  throw new ConfigError("could not reserve a fleet version: another controller keeps publishing at the same time; try again.");
}

const STAGE_OPTIONS = { inventory: { type: "string", short: "i" }, limit: { type: "string", short: "l" }, expires: { type: "string" } } as const;

export const publishCommand = guarded(async (argv: string[]): Promise<number> => {
  const { values, positionals } = parse(argv, STAGE_OPTIONS);
  if (values.help) return help();
  const staged = await stage(values as Record<string, string | undefined>, positionals);
  try {
    const tally = { new: 0, changed: 0, unchanged: 0 };
    for (const p of staged.plan) {
      tally[p.action]++;
      if (p.action === "unchanged") {
        console.log(`${p.device}: v${p.version} unchanged`);
        continue;
      }
      await staged.broker.put(DESIRED_BUCKET, desiredKey(p.device), await staged.seal(p.device, p.version));
      await staged.record(p.device, p.version);
      console.log(`${p.device}: v${p.version} published (${p.action}, ${staged.rendered.get(p.device)!.secrets.length} secret(s) encrypted to the device)`);
    }
    console.log(`${staged.plan.length} device(s): ${tally.new} new, ${tally.changed} changed, ${tally.unchanged} unchanged`);
    return 0;
  } finally {
    await staged.broker.close();
  }
});

// --- rollout --------------------------------------------------------------------------------

const ROLLOUT_OPTIONS = {
  ...STAGE_OPTIONS,
  id: { type: "string" },
  canary: { type: "string" },
  serial: { type: "string" },
  growth: { type: "string" },
  "max-fail-percentage": { type: "string" },
  "min-reported": { type: "string" },
  timeout: { type: "string" },
  "tick-ms": { type: "string" },
  reason: { type: "string" },
  json: { type: "boolean" },
} as const;

const countOrPercent = (v: string | number): number | string => (typeof v === "number" || /%$/.test(v.trim()) ? v : Number(v));

function number(v: string | undefined, what: string): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isFinite(n)) throw new UsageError(`${what} must be a number (got ${quote(v)}).`);
  return n;
}

/** The play's words (serial, max_fail_percentage), overridden by the options. */
export function rolloutPolicy(
  play: { serial?: number | string | (number | string)[]; maxFailPercentage?: number } | undefined,
  o: Record<string, string | undefined>,
): RolloutPolicy {
  const serial = play?.serial;
  const fromPlay = Array.isArray(serial) ? { canary: serial[0], serial: serial[1] } : serial !== undefined ? { serial } : {};
  const canary = o.canary !== undefined ? countOrPercent(o.canary) : (fromPlay.canary ?? 1);
  const serialSize = o.serial !== undefined ? countOrPercent(o.serial) : fromPlay.serial;
  return {
    canary: countOrPercent(canary),
    ...(serialSize !== undefined ? { serial: countOrPercent(serialSize) } : {}),
    growth: number(o.growth, "--growth") ?? 2,
    maxFailPercentage: number(o["max-fail-percentage"], "--max-fail-percentage") ?? play?.maxFailPercentage ?? 0,
    minReported: number(o["min-reported"], "--min-reported") ?? 1,
    timeoutMs: o.timeout ? parseDuration(o.timeout, "--timeout") : 15 * 60_000,
  };
}

export const rolloutCommand = guarded(async (argv: string[]): Promise<number> => {
  const { values, positionals } = parse(argv, ROLLOUT_OPTIONS);
  const [sub, ...rest] = positionals;
  if (values.help || !sub) return help();
  if (sub === "start") return rolloutStart(values as Record<string, never>, rest);
  if (!["pause", "resume", "abort", "show"].includes(sub)) throw new UsageError(`unknown rollout command ${quote(sub)}: start, pause, resume, abort or show.`);
  if (rest.length !== 1) throw new UsageError(`provision rollout ${sub} ID: name one rollout.`);
  const id = rolloutId(rest[0]);
  const fleet = loadFleet(fleetDirOf(values["fleet-dir"] as string | undefined));
  const broker = await connectController(fleet);
  try {
    const state = await readRollout(broker, id);
    if (!state) throw new ConfigError(`rollout ${quote(id)} is not known to the fleet's broker.`);
    if (sub === "show") {
      process.stdout.write(values.json ? JSON.stringify(state, null, 2) + "\n" : renderRollout(state));
      return state.status === "aborted" ? 1 : 0;
    }
    if (state.status === "done" || state.status === "aborted") throw new ConfigError(`rollout ${id} is ${state.status} already; nothing to ${sub}.`);
    await requestControl(broker, id, sub as Command, values.reason as string | undefined);
    console.log(`rollout ${id}: ${sub} asked (it is ${state.status}; the controller running it acts on its next tick)`);
    return 0;
  } finally {
    await broker.close();
  }
});

async function rolloutStart(values: Record<string, string | undefined>, files: string[]): Promise<number> {
  const staged = await stage(values, files);
  try {
    const policy = rolloutPolicy(staged.playbooks[0]?.plays[0], values);
    const changed = staged.plan.filter((p) => p.action !== "unchanged");
    for (const p of staged.plan.filter((p) => p.action === "unchanged")) console.log(`${p.device}: v${p.version} unchanged (not in the rollout)`);
    if (!changed.length) {
      console.log("nothing to roll out: every device has this content already");
      return 0;
    }
    const version = changed[0].version;
    const id = rolloutId(values.id ?? `v${version}`);
    const started = Date.now();
    const view = progressView(id, version, started);
    const state = await runRollout({
      broker: staged.broker,
      id,
      version,
      devices: changed.map((p) => p.device),
      policy,
      tickMs: number(values["tick-ms"], "--tick-ms") ?? 200,
      bundle: async (device) => {
        const sealed = await staged.seal(device, version, id);
        await staged.record(device, version, id);
        return sealed;
      },
      onProgress: view.update,
      onUnreachable: (detail) =>
        view.note(
          `the cluster does not answer (${detail}): the rollout waits; no wave opens and no wave's time runs until it is back (up to ${DEFAULT_UNREACHABLE_MS / 60_000} min)`,
        ),
      onReachable: (awayMs) => view.note(`the cluster answers again after ${Math.round(awayMs / 1000)} s: the rollout goes on`),
    });
    view.end();
    process.stdout.write(renderSummary(state, Date.now() - started));
    return state.status === "aborted" ? 1 : 0;
  } finally {
    await staged.broker.close();
  }
}

/** One line per change (a live line on a terminal): waves, done/failed/reverted/waiting, ETA. */
function progressView(id: string, version: number, started: number) {
  const tty = process.stdout.isTTY;
  let last = "";
  return {
    update(state: RolloutState, c: Counts) {
      const line = progressLine(id, version, state, c, Date.now() - started);
      const key = line.replace(/ETA.*$/, "");
      if (key === last) return;
      last = key;
      process.stdout.write(tty ? `\r\x1b[K${line}` : `${line}\n`);
    },
    /** A line of its own between progress lines. */
    note(text: string) {
      process.stdout.write(tty ? `\r\x1b[K${text}\n` : `${text}\n`);
      last = "";
    },
    end() {
      if (tty) process.stdout.write("\n");
    },
  };
}

export function progressLine(id: string, version: number, state: RolloutState, c: Counts, elapsedMs: number): string {
  const eta = c.reported && c.reported < c.total ? `, ETA ${Math.ceil(((elapsedMs / c.reported) * (c.total - c.reported)) / 1000)}s` : "";
  return (
    `rollout ${id} v${version} ${state.status}: wave ${state.openedAt.length}/${state.waves.length}, ` +
    `${c.applied}/${c.total} done, ${c.failed} failed, ${c.reverted} reverted, ${c.timeout} timed out, ${c.waiting} waiting${eta}`
  );
}

export function renderSummary(state: RolloutState, elapsedMs: number): string {
  const c = counts(state);
  const head = `rollout ${state.id} v${state.version} ${state.status === "aborted" ? "ABORTED" : state.status} after ${(elapsedMs / 1000).toFixed(1)}s: ${c.total} device(s) in ${state.waves.length} wave(s), ${state.openedAt.length} opened`;
  const lines = [head, `  ${c.applied} applied, ${c.failed} failed, ${c.reverted} reverted, ${c.timeout} timed out, ${c.total - c.opened} untouched`];
  if (state.reason) lines.push(`  reason: ${state.reason}`);
  for (const [device, r] of Object.entries(state.results)) if (r.outcome !== "applied") lines.push(`  ${device}: ${r.outcome}${r.detail ? `: ${r.detail}` : ""}`);
  return lines.join("\n") + "\n";
}

export function renderRollout(state: RolloutState): string {
  const lines = [`rollout ${state.id} v${state.version}: ${state.status}${state.reason ? ` (${state.reason})` : ""}`];
  const p = state.policy;
  lines.push(
    `  canary ${p.canary}, serial ${p.serial ?? p.canary}, growth ${p.growth}, max_fail_percentage ${p.maxFailPercentage}, min reported ${p.minReported}, timeout ${p.timeoutMs / 1000}s`,
  );
  state.waves.forEach((wave, i) => {
    const opened = i < state.openedAt.length;
    const tally = new Map<string, number>();
    for (const d of wave) {
      const o = state.results[d]?.outcome ?? (opened ? "waiting" : "not opened");
      tally.set(o, (tally.get(o) ?? 0) + 1);
    }
    const label = i === 0 ? "canary" : `wave ${i}`;
    lines.push(
      `  ${label.padEnd(7)} ${String(wave.length).padStart(5)} device(s)${opened ? ` opened ${new Date(state.openedAt[i]).toISOString()}` : ""}: ${[...tally].map(([o, n]) => `${n} ${o}`).join(", ")}`,
    );
  });
  for (const [device, r] of Object.entries(state.results)) if (r.outcome !== "applied") lines.push(`  ${device}: ${r.outcome}${r.detail ? `: ${r.detail}` : ""}`);
  return lines.join("\n") + "\n";
}

// --- status --fleet ---------------------------------------------------------------------------

export const fleetStatusCommand = guarded(async (argv: string[]): Promise<number> => {
  const { values, positionals } = parse(argv, {
    fleet: { type: "boolean" },
    inventory: { type: "string", short: "i" },
    limit: { type: "string", short: "l" },
    json: { type: "boolean" },
    report: { type: "string" },
  });
  if (values.help) return help();
  if (positionals.length !== 1 || positionals[0] !== "status") throw new UsageError("provision status --fleet takes no playbook. See provision fleet --help.");
  const report = values.report as string | undefined;
  if (report !== undefined) {
    checkOutputFile("--report", report);
    if (!report.toLowerCase().endsWith(".html")) throw new UsageError(`--report ${quote(report)}: the fleet report is HTML; name the file ….html (use --json for data).`);
  }
  const dir = fleetDirOf(values["fleet-dir"] as string | undefined);
  const fleet = loadFleet(dir);
  let devices = listDevices(dir);
  if (values.inventory) {
    const inventory = loadInventory(values.inventory as string, (await openSecrets(values.inventory as string, [])).decrypted);
    devices = selectHosts(inventory, (values.limit as string | undefined) ?? "all");
  }
  const broker = await connectController(fleet);
  let rows;
  try {
    const desired = new Map<string, { version: number; rollout?: string }>();
    for (let i = 0; i < devices.length; i += 64)
      await Promise.all(
        devices.slice(i, i + 64).map(async (d) => {
          const entry = await broker.get(DESIRED_BUCKET, desiredKey(d));
          const stored = entry && storedBundle(entry.value);
          if (stored) desired.set(d, stored);
        }),
      );
    // each device's latest report of each kind, not the whole stream (100 a subject are kept)
    rows = fleetStatus(devices, desired, await broker.readLatest(REPORTS_STREAM, "reports.>"));
    if (values.inventory) rows = rows.filter((r) => devices.includes(r.device));
  } finally {
    await broker.close();
  }
  process.stdout.write(values.json ? JSON.stringify(rows, null, 2) + "\n" : renderFleetStatus(rows));
  if (report) {
    const { run, missing } = fleetRun(rows);
    if (!run) {
      console.error(
        `provision: no fleet report written: no device sent its run report. The HTML grid needs each agent's --report JSON under "report" in its reports.<device>.result or .audit message; ${missing.length} device(s) sent only version/outcome/detail: ${missing.slice(0, 10).join(", ")}${missing.length > 10 ? ", …" : ""}.`,
      );
      return 1;
    }
    writeFileSync(report, renderHtmlReport(run));
    console.log(`fleet report of ${run.hosts.length} device(s) written to ${report}${missing.length ? `; no run report from ${missing.join(", ")}` : ""}`);
  }
  return rows.some((r) => r.drift === "failed" || r.drift === "drift") ? 1 : 0;
});
