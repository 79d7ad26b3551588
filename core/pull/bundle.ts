// A bundle: one device's desired state, as the broker stores it. The playbook with its
// variables resolved, the device's name, a version that only grows, an expiry, signed
// with the fleet's Ed25519 key; every string that holds a secret (a Wi-Fi PSK) is taken
// out and encrypted with age (X25519) to that device's own key, so neither the broker,
// nor whoever reads its disks, nor another device can read it.
//
//   envelope {"format": "provision-bundle/1", "key": <signer id>, "payload": <base64>, "signature": <base64>}
//   payload  {"device", "version", "rollout"?, "issued", "expires", "playbook", "secrets": <age armor> | null}
//            where the playbook has {"$secret": i} in place of the i-th secret value.
//
// The signature covers "provision-bundle/1\n" + the payload's exact bytes: nothing is
// re-serialised before it is checked, and the key signs nothing else by accident.
import { createHash, createPrivateKey, createPublicKey, generateKeyPairSync, sign, verify, type KeyObject } from "node:crypto";
import { armor, Decrypter, Encrypter, generateX25519Identity, identityToRecipient } from "age-encryption";
import { ConfigError } from "../errors.js";
import { deviceName } from "./subjects.js";

export const BUNDLE_FORMAT = "provision-bundle/1";
const SECRET_MARK = "$secret";

export interface BundleContent {
  device: string;
  /** Grows with every publish to this device; the device refuses one not above what it applied. */
  version: number;
  rollout?: string;
  playbook: unknown;
}

export interface OpenedBundle extends BundleContent {
  issued: Date;
  expires: Date;
  /** The signing key's id (which fleet key signed it). */
  key: string;
}

type Payload = { device: string; version: number; rollout?: string; issued: string; expires: string; playbook: unknown; secrets: string | null };
type Envelope = { format: string; key: string; payload: string; signature: string };

export type RefusalReason = "malformed" | "unsigned" | "unknown-key" | "tampered" | "foreign" | "expired" | "older" | "replayed" | "undecryptable";

/** The device will not apply this bundle; `reason` is for reports, the message for people. Never holds a secret. */
export class BundleRefused extends Error {
  override name = "BundleRefused";
  constructor(
    readonly reason: RefusalReason,
    message: string,
  ) {
    super(message);
  }
}

// --- keys ---------------------------------------------------------------------------------

export interface FleetSigningKey {
  privatePem: string;
  publicPem: string;
}

export function createFleetSigningKey(): FleetSigningKey {
  const { privateKey, publicKey } = generateKeyPairSync("ed25519");
  return {
    privatePem: privateKey.export({ type: "pkcs8", format: "pem" }).toString(),
    publicPem: publicKey.export({ type: "spki", format: "pem" }).toString(),
  };
}

/** A short, stable id of a public key: what a device names when a bundle was signed by another. */
export function keyId(publicKey: KeyObject | string): string {
  const key = typeof publicKey === "string" ? createPublicKey(publicKey) : publicKey;
  return (
    "ed25519:" +
    createHash("sha256")
      .update(key.export({ type: "spki", format: "der" }))
      .digest("base64url")
      .slice(0, 16)
  );
}

export interface DeviceKey {
  identity: string;
  recipient: string;
}

/** A device's age key: the identity stays on the device (0600), the recipient goes to the controller. */
export async function createDeviceKey(): Promise<DeviceKey> {
  const identity = await generateX25519Identity();
  return { identity, recipient: await identityToRecipient(identity) };
}

// --- sealing (controller) -----------------------------------------------------------------

export async function sealBundle(
  content: BundleContent,
  opts: { signingKey: string; recipient: string; secrets: readonly string[]; expires: Date; issued?: Date },
): Promise<Uint8Array> {
  deviceName(content.device);
  if (!Number.isSafeInteger(content.version) || content.version < 1) throw new ConfigError(`bundle version must be a positive integer (got ${content.version}).`);
  const issued = opts.issued ?? new Date();
  if (opts.expires <= issued) throw new ConfigError("a bundle's expiry must be after its issue time.");
  const { playbook, values } = extractSecrets(content.playbook, opts.secrets);
  let secrets: string | null = null;
  if (values.length) {
    const e = new Encrypter();
    e.addRecipient(opts.recipient);
    secrets = armor.encode(await e.encrypt(JSON.stringify(values)));
  }
  const payload: Payload = {
    device: content.device,
    version: content.version,
    ...(content.rollout ? { rollout: content.rollout } : {}),
    issued: issued.toISOString(),
    expires: opts.expires.toISOString(),
    playbook,
    secrets,
  };
  const bytes = Buffer.from(JSON.stringify(payload));
  const privateKey = createPrivateKey(opts.signingKey);
  const envelope: Envelope = {
    format: BUNDLE_FORMAT,
    key: keyId(createPublicKey(privateKey)),
    payload: bytes.toString("base64"),
    signature: sign(null, signedBytes(bytes), privateKey).toString("base64"),
  };
  return Buffer.from(JSON.stringify(envelope));
}

const signedBytes = (payload: Buffer): Buffer => Buffer.concat([Buffer.from(`${BUNDLE_FORMAT}\n`), payload]);

/**
 * The playbook with every string (or number) that contains a secret replaced by
 * {"$secret": i}, and the values taken out, in order. A whole string goes, not just the
 * secret in it: "psk=hunter22" must not leave "psk=" plus a length behind.
 */
export function extractSecrets(doc: unknown, secrets: readonly string[]): { playbook: unknown; values: unknown[] } {
  const wanted = secrets.filter((s) => s.length > 0);
  const values: unknown[] = [];
  const walk = (v: unknown): unknown => {
    if ((typeof v === "string" || typeof v === "number") && wanted.some((s) => String(v).includes(s))) {
      values.push(v);
      return { [SECRET_MARK]: values.length - 1 };
    }
    if (Array.isArray(v)) return v.map(walk);
    if (v && typeof v === "object") {
      if (SECRET_MARK in v) throw new ConfigError(`the playbook has a mapping with the key "${SECRET_MARK}", which bundles reserve for encrypted values; rename it.`);
      return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, walk(x)]));
    }
    return v;
  };
  return { playbook: walk(doc), values };
}

function restoreSecrets(doc: unknown, values: unknown[]): unknown {
  if (Array.isArray(doc)) return doc.map((x) => restoreSecrets(x, values));
  if (doc && typeof doc === "object") {
    const index = (doc as Record<string, unknown>)[SECRET_MARK];
    if (Object.keys(doc).length === 1 && typeof index === "number") {
      if (!(index in values)) throw new BundleRefused("malformed", `the bundle refers to secret #${index}, which its encrypted part does not hold`);
      return values[index];
    }
    return Object.fromEntries(Object.entries(doc).map(([k, x]) => [k, restoreSecrets(x, values)]));
  }
  return doc;
}

// --- opening (device) ---------------------------------------------------------------------

export interface OpenOptions {
  /** This device's name: a bundle for another one is refused. */
  device: string;
  /** The fleet's public key (PEM) that the device trusts. */
  verifyKey: string;
  /** The device's age identity (AGE-SECRET-KEY-1…). */
  identity: string;
  /** The version it applied last; a bundle must be above it. */
  appliedVersion?: number;
  now?: Date;
}

/** Check everything before anything is used; throws BundleRefused naming the first problem. */
export async function openBundle(bytes: Uint8Array, opts: OpenOptions): Promise<OpenedBundle> {
  const envelope = parseEnvelope(bytes);
  const trusted = createPublicKey(opts.verifyKey);
  if (envelope.key !== keyId(trusted)) throw new BundleRefused("unknown-key", `the bundle is signed by key ${envelope.key}, not by this fleet's key ${keyId(trusted)}`);
  const payloadBytes = Buffer.from(envelope.payload, "base64");
  const signature = Buffer.from(envelope.signature, "base64");
  if (!verify(null, signedBytes(payloadBytes), trusted, signature))
    throw new BundleRefused("tampered", "the bundle's signature does not match its content: it was changed after it was signed");
  const payload = parsePayload(payloadBytes);
  if (payload.device !== opts.device) throw new BundleRefused("foreign", `the bundle is for device "${payload.device}", not for this device ("${opts.device}")`);
  const now = opts.now ?? new Date();
  const expires = new Date(payload.expires);
  if (!(expires > now)) throw new BundleRefused("expired", `the bundle (version ${payload.version}) expired at ${payload.expires}`);
  if (opts.appliedVersion !== undefined && payload.version <= opts.appliedVersion)
    throw payload.version === opts.appliedVersion
      ? new BundleRefused("replayed", `version ${payload.version} was applied already`)
      : new BundleRefused("older", `version ${payload.version} is older than version ${opts.appliedVersion}, applied already`);
  let values: unknown[] = [];
  if (payload.secrets !== null) {
    try {
      const d = new Decrypter();
      d.addIdentity(opts.identity);
      values = JSON.parse(await d.decrypt(armor.decode(payload.secrets), "text"));
    } catch {
      throw new BundleRefused("undecryptable", "the bundle's secrets are not encrypted to this device's key");
    }
    if (!Array.isArray(values)) throw new BundleRefused("malformed", "the bundle's encrypted part is not a list of values");
  }
  return {
    device: payload.device,
    version: payload.version,
    ...(payload.rollout ? { rollout: payload.rollout } : {}),
    issued: new Date(payload.issued),
    expires,
    key: envelope.key,
    playbook: restoreSecrets(payload.playbook, values),
  };
}

function parseEnvelope(bytes: Uint8Array): Envelope {
  let raw: unknown;
  try {
    raw = JSON.parse(Buffer.from(bytes).toString("utf8"));
  } catch {
    throw new BundleRefused("malformed", "the bundle is not JSON");
  }
  if (!raw || typeof raw !== "object") throw new BundleRefused("malformed", "the bundle is not a JSON object");
  const e = raw as Partial<Envelope>;
  if (e.format !== BUNDLE_FORMAT) throw new BundleRefused("malformed", `the bundle's format is ${JSON.stringify(e.format ?? null)}, not "${BUNDLE_FORMAT}"`);
  if (typeof e.payload !== "string") throw new BundleRefused("malformed", "the bundle has no payload");
  if (typeof e.signature !== "string" || !e.signature || typeof e.key !== "string") throw new BundleRefused("unsigned", "the bundle carries no signature");
  return e as Envelope;
}

function parsePayload(bytes: Buffer): Payload {
  let p: Partial<Payload>;
  try {
    p = JSON.parse(bytes.toString("utf8"));
  } catch {
    throw new BundleRefused("malformed", "the signed payload is not JSON");
  }
  if (
    typeof p.device !== "string" ||
    !Number.isSafeInteger(p.version) ||
    typeof p.expires !== "string" ||
    typeof p.issued !== "string" ||
    !(p.secrets === null || typeof p.secrets === "string") ||
    Number.isNaN(Date.parse(p.expires))
  )
    throw new BundleRefused("malformed", "the signed payload lacks device, version, issue or expiry time, or secrets");
  return p as Payload;
}
