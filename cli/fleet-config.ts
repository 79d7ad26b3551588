// The controller's side of a pull-mode fleet, in one folder (--fleet-dir, else
// $PROVISION_FLEET_DIR, else ./fleet):
//
//   fleet.yaml          name, servers, replicas, bundle_expiry       (written by fleet init; edit freely)
//   authority.json      NATS operator/account seeds, revocations      0600 (core/pull/credentials.ts)
//   signing.key         the fleet's Ed25519 bundle signing key        0600
//   signing.pub         its public key: every device trusts it
//   controller.creds    the controller's NATS user                    0600
//   devices/<name>.json {"age_recipient", "user"}: a device's age recipient and NATS user key
//                       (written by `provision fleet device` or by enrolment)
//   tokens/<name>.json  {"user", "issued", "expires", "spent"?}: a one-time enrolment token's
//                       NATS user (written by `provision fleet token`, spent by `fleet accept`)
import { closeSync, existsSync, fsyncSync, mkdirSync, openSync, readdirSync, readFileSync, renameSync, writeSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { ConfigError, quote } from "../core/errors.js";
import { YamlSource } from "../core/config/yaml-source.js";
import { compile } from "../core/config/schema.js";
import { accountJwt, issueSystemUser, parseAuthority, revoke, type FleetAuthority } from "../core/pull/credentials.js";
import { parseDuration } from "../core/pull/publish.js";
import { deviceName, DESIRED_BUCKET, ENROL_STREAM, ENROL_SUBJECTS, REPORTS_STREAM, REPORTS_SUBJECTS, ROLLOUTS_BUCKET } from "../core/pull/subjects.js";
import { connectNats, pushAccountClaims, type NatsBroker } from "../core/pull/nats.js";

export const FLEET_DIR_ENV = "PROVISION_FLEET_DIR";
export const DEFAULT_BUNDLE_EXPIRY = "30d";

export interface FleetConfig {
  dir: string;
  name: string;
  servers: string[];
  replicas: number;
  bundleExpiryMs: number;
}

export interface DeviceRecord {
  age_recipient: string;
  user: string;
  revoked?: string;
}

const fleetSchema = {
  type: "object",
  additionalProperties: false,
  required: ["name", "servers"],
  properties: {
    name: { type: "string", minLength: 1 },
    servers: { type: "array", minItems: 1, items: { type: "string", pattern: "^[^\\s:]+:[0-9]{1,5}$" } },
    replicas: { type: "integer", minimum: 1, maximum: 5 },
    bundle_expiry: { type: "string" },
  },
};

export const fleetDirOf = (option: string | undefined): string => resolve(option ?? process.env[FLEET_DIR_ENV] ?? "fleet");

const fileOf = (dir: string, name: string): string => join(dir, name);

function readOrExplain(dir: string, name: string): string {
  const file = fileOf(dir, name);
  try {
    return readFileSync(file, "utf8");
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === "ENOENT")
      throw new ConfigError(
        `${file}: missing. ${name === "fleet.yaml" ? `${dir} is not a fleet folder: create one with provision fleet init --fleet-dir ${dir} --name NAME --server HOST:4222` : `The fleet folder ${dir} is incomplete; restore ${name} from your backup.`}`,
      );
    throw new ConfigError(`${file}: cannot read it (${code}).`);
  }
}

export function loadFleet(dir: string): FleetConfig {
  readOrExplain(dir, "fleet.yaml");
  const source = YamlSource.load(fileOf(dir, "fleet.yaml"), "a fleet configuration");
  const doc = source.toJS() ?? {};
  const validate = compile(fleetSchema);
  if (!validate(doc)) throw source.schemaError(validate.errors ?? [], [], "fleet configuration");
  const raw = doc as { name: string; servers: string[]; replicas?: number; bundle_expiry?: string };
  let bundleExpiryMs: number;
  try {
    bundleExpiryMs = parseDuration(raw.bundle_expiry ?? DEFAULT_BUNDLE_EXPIRY, "bundle_expiry");
  } catch (error) {
    throw new ConfigError(`${source.position(["bundle_expiry"])}: ${(error as Error).message}`);
  }
  const replicas = raw.replicas ?? Math.min(3, raw.servers.length);
  if (replicas > raw.servers.length)
    throw new ConfigError(
      `${source.position(["replicas"])}: replicas ${replicas} is more than the ${raw.servers.length} server(s) listed; JetStream keeps each copy on another server.`,
    );
  return { dir, name: raw.name, servers: raw.servers, replicas, bundleExpiryMs };
}

export const loadAuthority = (dir: string): FleetAuthority => parseAuthority(readOrExplain(dir, "authority.json"), fileOf(dir, "authority.json"));
export const signingKey = (dir: string): string => readOrExplain(dir, "signing.key");
export const signingPublicKey = (dir: string): string => readOrExplain(dir, "signing.pub");
export const controllerCreds = (dir: string): string => readOrExplain(dir, "controller.creds");

const deviceFile = (dir: string, device: string): string => join(dir, "devices", `${deviceName(device)}.json`);

export function readDevice(dir: string, device: string): DeviceRecord | null {
  const file = deviceFile(dir, device);
  if (!existsSync(file)) return null;
  let raw: Partial<DeviceRecord>;
  try {
    raw = JSON.parse(readFileSync(file, "utf8"));
  } catch (error) {
    throw new ConfigError(`${file}: not JSON (${(error as Error).message}); write it again with provision fleet device ${device}.`);
  }
  if (typeof raw.age_recipient !== "string" || !raw.age_recipient.startsWith("age1"))
    throw new ConfigError(`${file}: "age_recipient" is missing or not an age public key (age1…).`);
  if (typeof raw.user !== "string") throw new ConfigError(`${file}: "user" (the device's NATS user public key) is missing.`);
  return raw as DeviceRecord;
}

/** Every device the fleet folder knows, by name. */
export function listDevices(dir: string): string[] {
  const folder = join(dir, "devices");
  if (!existsSync(folder)) return [];
  return readdirSync(folder)
    .filter((f) => f.endsWith(".json"))
    .map((f) => f.slice(0, -5))
    .sort();
}

export function writeDevice(dir: string, device: string, record: DeviceRecord): void {
  mkdirSync(join(dir, "devices"), { recursive: true, mode: 0o700 });
  writeAtomic(deviceFile(dir, device), JSON.stringify(record, null, 2) + "\n", 0o644);
}

/** Write a file whole or not at all: a temporary file beside it, synced, then renamed over it. */
export function writeAtomic(file: string, text: string | Uint8Array, mode: number): void {
  const temporary = join(dirname(file), `.${Date.now()}-${process.pid}.tmp`);
  const fd = openSync(temporary, "wx", mode);
  try {
    writeSync(fd, typeof text === "string" ? Buffer.from(text) : text);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  renameSync(temporary, file);
  const dirFd = openSync(dirname(file), "r");
  try {
    fsyncSync(dirFd);
  } finally {
    closeSync(dirFd);
  }
}

/** The controller's connection: any server of the fleet, the controller's user. */
export async function connectController(fleet: FleetConfig): Promise<NatsBroker> {
  return connectNats({ servers: fleet.servers, credentials: controllerCreds(fleet.dir), name: "provision-controller", timeoutMs: 5_000 });
}

/** Buckets and the reports stream, replicated; making them again changes nothing. */
export async function ensureFleetStore(broker: NatsBroker, fleet: FleetConfig): Promise<void> {
  await broker.ensureBucket(DESIRED_BUCKET, { replicas: fleet.replicas, history: 5 });
  await broker.ensureBucket(ROLLOUTS_BUCKET, { replicas: fleet.replicas, history: 5 });
  await broker.ensureStream(REPORTS_STREAM, [REPORTS_SUBJECTS], { replicas: fleet.replicas, maxMsgsPerSubject: 100 });
  await broker.ensureStream(ENROL_STREAM, [ENROL_SUBJECTS], { replicas: fleet.replicas, maxMsgsPerSubject: 1 });
}

export const deviceNotEnrolled = (dir: string, device: string): ConfigError =>
  new ConfigError(
    `device ${quote(device)} is not enrolled in the fleet: ${deviceFile(dir, device)} is missing (it holds the device's age key, to encrypt its secrets). Enrol it (provision enrol) or register it with provision fleet device ${device}.`,
  );

/**
 * Revoke NATS users (a device's old or stolen credentials) and push the account to the
 * servers; returns the servers that took it. The authority before is kept beside the new
 * one until the servers have taken the new account.
 */
export function revokeUsers(fleet: FleetConfig, users: string[]): Promise<string[]> {
  return updateAuthority(fleet, (before) => users.reduce((a, user) => revoke(a, user), before));
}

/** Change the authority and push its account to the servers; the authority before is kept beside it. Returns the servers that took it. */
export async function updateAuthority(fleet: FleetConfig, change: (a: FleetAuthority) => FleetAuthority): Promise<string[]> {
  const before = loadAuthority(fleet.dir);
  const authority = change(before);
  writeAtomic(join(fleet.dir, "authority.json.bak"), JSON.stringify(before, null, 2) + "\n", 0o600);
  writeAtomic(join(fleet.dir, "authority.json"), JSON.stringify(authority, null, 2) + "\n", 0o600);
  return pushAccountClaims({ servers: fleet.servers, credentials: (await issueSystemUser(authority)).creds, timeoutMs: 5_000 }, await accountJwt(authority));
}

export interface TokenRecord {
  /** The token's NATS user public key (revoked once spent). */
  user: string;
  issued: string;
  expires: string;
  /** When `provision fleet accept` enrolled the device with it. */
  spent?: string;
  /** The device's tokens before this one (revoked when spent or replaced): kept so that their revocations are dropped once they expire. */
  earlier?: { user: string; expires: string }[];
}

const tokenFile = (dir: string, device: string): string => join(dir, "tokens", `${deviceName(device)}.json`);

export function readToken(dir: string, device: string): TokenRecord | null {
  const file = tokenFile(dir, device);
  if (!existsSync(file)) return null;
  try {
    return JSON.parse(readFileSync(file, "utf8")) as TokenRecord;
  } catch (error) {
    throw new ConfigError(`${file}: not JSON (${(error as Error).message}); make a new token with provision fleet token ${device}.`);
  }
}

export function writeToken(dir: string, device: string, record: TokenRecord): void {
  mkdirSync(join(dir, "tokens"), { recursive: true, mode: 0o700 });
  writeAtomic(tokenFile(dir, device), JSON.stringify(record, null, 2) + "\n", 0o644);
}
