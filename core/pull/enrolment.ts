// Enrolment by a one-time token, for a Pi that no controller can ever reach over SSH.
//
//   controller  provision fleet token NAME   a token: the fleet's servers and verify key, and
//                                            the credentials of a user named NAME that may
//                                            only publish enrol.NAME and read jwt.NAME,
//                                            expiring (24 h by default)
//   the Pi      provision agent --enrol FILE makes its own NATS user key and age key (the
//                                            seeds never leave it), publishes a request
//                                            signed with that user key, waits for its JWT
//   controller  provision fleet accept       checks each request against its open token,
//                                            signs the device's JWT, stores it as jwt.NAME,
//                                            records the device's public keys, revokes the
//                                            token's user: the token is spent
//
//   token    {"format": "provision-enrol-token/1", "device", "servers", "expires", "credentials", "verify_key"}
//   request  {"format": "provision-enrol-request/1", "payload": <base64>, "signature": <base64>}
//   payload  {"device", "user", "age_recipient", "at"}
// The signature (the device's new NATS user key) covers "provision-enrol-request/1\n" and
// the payload's exact bytes: the request proves that whoever asks holds that key's seed.
import { fromPublic, type KeyPair } from "@nats-io/nkeys";
import { decode } from "@nats-io/jwt";
import { ConfigError, messageOf, quote } from "../errors.js";
import type { Broker, Entry, Message } from "./broker.js";
import { DESIRED_BUCKET, deviceName, enrolDevice, enrolledKey, enrolSubject, ENROL_STREAM, ENROL_SUBJECTS } from "./subjects.js";

export const TOKEN_FORMAT = "provision-enrol-token/1";
export const REQUEST_FORMAT = "provision-enrol-request/1";

export interface EnrolToken {
  device: string;
  servers: string[];
  expires: Date;
  /** The token user's NATS credentials: a secret until the token is spent. */
  credentials: string;
  /** The fleet's bundle verify key (PEM), which the device will trust. */
  verifyKey: string;
}

export interface EnrolRequest {
  device: string;
  /** The NATS user public key the device made for itself. */
  user: string;
  ageRecipient: string;
  /** The device's clock when it asked (only shown: a Pi's clock may be wrong before NTP). */
  at: string;
}

export function tokenText(t: EnrolToken): string {
  const doc = { format: TOKEN_FORMAT, device: t.device, servers: t.servers, expires: t.expires.toISOString(), credentials: t.credentials, verify_key: t.verifyKey };
  return JSON.stringify(doc, null, 2) + "\n";
}

/** A token read back; what is wrong is named with the file, never its secret. */
export function parseToken(text: string, where: string): EnrolToken {
  let raw: Record<string, unknown>;
  try {
    raw = JSON.parse(text);
  } catch {
    throw new ConfigError(`${where}: not an enrolment token (not JSON). Copy the file provision fleet token wrote, unchanged.`);
  }
  if (raw?.format !== TOKEN_FORMAT) throw new ConfigError(`${where}: not an enrolment token (format is not ${TOKEN_FORMAT}). Copy the file provision fleet token wrote.`);
  const bad = (field: string, what: string) => new ConfigError(`${where}: "${field}" ${what}. Make a new token with provision fleet token.`);
  if (typeof raw.device !== "string") throw bad("device", "is missing");
  try {
    deviceName(raw.device);
  } catch (error) {
    throw bad("device", `is not a device name (${messageOf(error)})`);
  }
  if (!Array.isArray(raw.servers) || !raw.servers.length || raw.servers.some((s) => typeof s !== "string")) throw bad("servers", "must list the fleet's servers");
  const expires = new Date(String(raw.expires));
  if (Number.isNaN(expires.getTime())) throw bad("expires", "is not a time");
  if (typeof raw.credentials !== "string" || !raw.credentials.includes("BEGIN NATS USER JWT")) throw bad("credentials", "are not NATS credentials");
  if (typeof raw.verify_key !== "string" || !raw.verify_key.includes("BEGIN PUBLIC KEY")) throw bad("verify_key", "is not a PEM public key");
  return { device: raw.device, servers: raw.servers as string[], expires, credentials: raw.credentials, verifyKey: raw.verify_key };
}

const enc = new TextEncoder();
const dec = new TextDecoder();
const signedBytes = (payload: Uint8Array) => new Uint8Array([...enc.encode(`${REQUEST_FORMAT}\n`), ...payload]);

/** The device's request, signed with the user key it made (`user`: a key pair with its seed). */
export function signRequest(device: string, user: KeyPair, ageRecipient: string, at = new Date()): Uint8Array {
  const payload = enc.encode(JSON.stringify({ device: deviceName(device), user: user.getPublicKey(), age_recipient: ageRecipient, at: at.toISOString() }));
  const envelope = { format: REQUEST_FORMAT, payload: Buffer.from(payload).toString("base64"), signature: Buffer.from(user.sign(signedBytes(payload))).toString("base64") };
  return enc.encode(JSON.stringify(envelope));
}

/** A request as stored under `subject`, checked: well formed, signed by the key it names, for the device its subject names. */
export function openRequest(data: Uint8Array, subject: string): EnrolRequest {
  const device = enrolDevice(subject);
  if (!device) throw new ConfigError(`${quote(subject)} is not an enrolment subject`);
  let envelope: { format?: unknown; payload?: unknown; signature?: unknown };
  let payload: Record<string, unknown>;
  let payloadBytes: Uint8Array;
  try {
    envelope = JSON.parse(dec.decode(data));
    payloadBytes = new Uint8Array(Buffer.from(String(envelope.payload), "base64"));
    payload = JSON.parse(dec.decode(payloadBytes));
  } catch {
    throw new ConfigError("the request is not JSON");
  }
  if (envelope.format !== REQUEST_FORMAT) throw new ConfigError(`the request's format is not ${REQUEST_FORMAT}`);
  const { user, age_recipient: ageRecipient, at } = payload;
  if (typeof user !== "string" || !/^U[A-Z2-7]{55}$/.test(user)) throw new ConfigError("the request names no NATS user public key");
  if (typeof ageRecipient !== "string" || !ageRecipient.startsWith("age1")) throw new ConfigError("the request names no age recipient");
  if (payload.device !== device) throw new ConfigError(`the request is for ${quote(String(payload.device))} but was sent as ${quote(device)}`);
  let valid = false;
  try {
    valid = fromPublic(user).verify(signedBytes(payloadBytes), new Uint8Array(Buffer.from(String(envelope.signature), "base64")));
  } catch {
    valid = false;
  }
  if (!valid) throw new ConfigError("the request's signature does not match the user key it names");
  return { device, user, ageRecipient, at: String(at) };
}

export type EnrolEvent = { type: "asked"; server?: string } | { type: "waiting"; detail: string };

/**
 * The device's side over the token's connection: publish the request (again until the
 * stream has stored it), then wait for a JWT for `userPublicKey` under jwt.<device>.
 * Resolves with that JWT; rejects when `waitMs` passes first.
 */
export async function awaitEnrolment(
  broker: Broker,
  device: string,
  request: Uint8Array,
  userPublicKey: string,
  waitMs: number,
  onEvent: (e: EnrolEvent) => void,
): Promise<string> {
  const deadline = Date.now() + waitMs;
  for (;;) {
    try {
      await broker.publish(enrolSubject(device), request, { id: `enrol-${userPublicKey}` });
      onEvent({ type: "asked", server: broker.server() });
      break;
    } catch (error) {
      if (Date.now() > deadline) throw new ConfigError(`the enrolment request was not stored by the cluster within ${Math.round(waitMs / 1000)}s: ${messageOf(error)}`);
      onEvent({ type: "waiting", detail: `request not stored yet (${messageOf(error)}); trying again` });
      await new Promise((r) => setTimeout(r, 2_000));
    }
  }
  return new Promise<string>((resolve, reject) => {
    let settled = false;
    let watching: { stop(): Promise<void> } | undefined;
    const finish = (error: Error | null, jwt?: string) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      void watching?.stop();
      if (error) reject(error);
      else resolve(jwt!);
    };
    const timer = setTimeout(
      () =>
        finish(
          new ConfigError(`not accepted within ${Math.round(waitMs / 1000)}s: run provision fleet accept on the controller, then run this again (the same keys are asked again)`),
        ),
      Math.max(0, deadline - Date.now()),
    );
    broker
      .watch(DESIRED_BUCKET, enrolledKey(device), (entry) => {
        const jwt = answerFor(entry, userPublicKey);
        if (jwt) finish(null, jwt);
      })
      .then((w) => (settled ? void w.stop() : (watching = w)), finish);
  });
}

export interface StoredRequest {
  device: string;
  /** When the cluster stored it (the servers' clock, not the device's). */
  stored: Date;
  request?: EnrolRequest;
  /** Why it cannot be accepted, when it cannot be opened. */
  error?: string;
}

/** The latest request of each device, opened (or why not). */
export async function storedRequests(broker: Broker): Promise<StoredRequest[]> {
  const messages: Message[] = await broker.readLatest(ENROL_STREAM, ENROL_SUBJECTS);
  return messages.map((m) => {
    const device = enrolDevice(m.subject) ?? m.subject;
    try {
      return { device, stored: m.time, request: openRequest(m.data, m.subject) };
    } catch (error) {
      return { device, stored: m.time, error: messageOf(error) };
    }
  });
}

/** The user JWT stored under jwt.<device>, when it is one for `userPublicKey` (else null). */
export function answerFor(entry: Entry | null, userPublicKey: string): string | null {
  if (!entry) return null;
  const jwt = dec.decode(entry.value).trim();
  try {
    return decode(jwt).sub === userPublicKey ? jwt : null;
  } catch {
    return null; // not a JWT: the controller writes nothing else here
  }
}

/** The controller's answer: the device's user JWT, readable by the token's user (a JWT without its seed is no secret). */
export async function answerEnrolment(broker: Broker, device: string, jwt: string): Promise<void> {
  await broker.put(DESIRED_BUCKET, enrolledKey(device), enc.encode(jwt));
}
