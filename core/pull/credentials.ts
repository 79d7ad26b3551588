// The fleet's broker credentials, NATS decentralised auth: an operator signs two
// accounts (the system account and the fleet's); the fleet account lists a *scoped*
// signing key whose template is every device's permissions (subjects.DEVICE_PERMISSIONS,
// with {{name()}} the device's own name). A device's user JWT is signed by that key and
// carries only its name and public key, so the server enforces what it may touch, the
// servers' configuration never names a device (the same at 10 or 100,000), and a device
// is revoked by re-signing the account JWT with its key in `revocations` and pushing it.
//
// The seeds (private keys) live only in the controller's authority file (0600) and, one
// user seed each, on the devices. Signing needs no broker.
import { Algorithms, createAccount, createOperator, decode, encodeAccount, encodeOperator, encodeUser, fmtCreds, type KeyPair } from "@nats-io/jwt";
import { Prefix } from "@nats-io/nkeys";
import { ConfigError, quote } from "../errors.js";
import { deviceName, DEVICE_PERMISSIONS, ENROLMENT_PERMISSIONS } from "./subjects.js";
import { credentialsParts, keyPairFromSeed, newKeyPair } from "./keys.js";

export interface FleetAuthority {
  name: string;
  operatorSeed: string;
  systemAccountSeed: string;
  accountSeed: string;
  /** Signs device users only; the server gives them the device template's permissions whatever they claim. */
  deviceSignerSeed: string;
  /** Signs one-time enrolment token users (subjects.ENROLMENT_PERMISSIONS); added to older fleets when first needed. */
  enrolmentSignerSeed?: string;
  /** Device user public key -> revoked-before time (unix seconds). */
  revocations: Record<string, number>;
}

const DEVICE_ROLE = "device";
const ENROLMENT_ROLE = "enrolment";
const USER_KEY = /^U[A-Z2-7]{55}$/;
const seedOf = (kp: KeyPair): string => new TextDecoder().decode(kp.getSeed());
const keyOf = (seed: string): KeyPair => keyPairFromSeed(seed);
export const publicKeyOf = (seed: string): string => keyOf(seed).getPublicKey();

const UNLIMITED = { subs: -1, data: -1, payload: -1, imports: -1, exports: -1, wildcards: true, conn: -1, leaf: -1 };
const UNLIMITED_JETSTREAM = { disk_storage: -1, mem_storage: -1, streams: -1, consumer: -1 };

export function createAuthority(name: string): FleetAuthority {
  return {
    name,
    operatorSeed: seedOf(createOperator()),
    systemAccountSeed: seedOf(createAccount()),
    accountSeed: seedOf(createAccount()),
    deviceSignerSeed: seedOf(createAccount()),
    enrolmentSignerSeed: seedOf(createAccount()),
    revocations: {},
  };
}

/** The authority with an enrolment signing key (a fleet made before tokens existed has none; its account must then be pushed again). */
export function withEnrolmentSigner(a: FleetAuthority): FleetAuthority {
  return a.enrolmentSignerSeed ? a : { ...a, enrolmentSignerSeed: seedOf(createAccount()) };
}

type Permissions = { pub: { allow: readonly string[] }; sub: { allow: readonly string[] } };
const scopedKey = (seed: string, role: string, p: Permissions) => ({
  kind: "user_scope" as const,
  key: publicKeyOf(seed),
  role,
  template: { pub: { allow: [...p.pub.allow] }, sub: { allow: [...p.sub.allow] } },
});

export function operatorJwt(a: FleetAuthority): Promise<string> {
  return encodeOperator(a.name, keyOf(a.operatorSeed), { system_account: publicKeyOf(a.systemAccountSeed) }, { algorithm: Algorithms.v2 });
}

export function systemAccountJwt(a: FleetAuthority): Promise<string> {
  return encodeAccount("SYS", keyOf(a.systemAccountSeed), { limits: UNLIMITED }, { signer: keyOf(a.operatorSeed) });
}

/** The fleet account: JetStream enabled, the device signing key with its template, the revocations. */
export function accountJwt(a: FleetAuthority): Promise<string> {
  return encodeAccount(
    `${a.name}-fleet`,
    keyOf(a.accountSeed),
    {
      limits: { ...UNLIMITED, ...UNLIMITED_JETSTREAM },
      signing_keys: [
        scopedKey(a.deviceSignerSeed, DEVICE_ROLE, DEVICE_PERMISSIONS),
        ...(a.enrolmentSignerSeed ? [scopedKey(a.enrolmentSignerSeed, ENROLMENT_ROLE, ENROLMENT_PERMISSIONS)] : []),
      ],
      revocations: { ...a.revocations },
    },
    { signer: keyOf(a.operatorSeed) },
  );
}

export interface IssuedUser {
  /** The NATS credentials file (JWT and seed): a secret, for one machine only. */
  creds: string;
  publicKey: string;
  jwt: string;
}

async function issue(name: string, issuerAccount: KeyPair, signer: KeyPair | undefined, scoped: boolean, expiresAt?: Date): Promise<IssuedUser> {
  const user = newKeyPair(Prefix.User);
  const jwt = await encodeUser(
    name,
    user,
    signer ? issuerAccount.getPublicKey() : issuerAccount,
    {},
    {
      ...(signer ? { signer } : {}),
      scopedUser: scoped,
      ...(expiresAt ? { exp: Math.floor(expiresAt.getTime() / 1000) } : {}),
    },
  );
  return { creds: new TextDecoder().decode(fmtCreds(jwt, user)), publicKey: user.getPublicKey(), jwt };
}

/** A device's own user: its name is the {{name()}} of the permissions template, so it must be one subject token. */
export async function issueDevice(a: FleetAuthority, name: string, opts: { expiresAt?: Date } = {}): Promise<IssuedUser> {
  return issue(deviceName(name), keyOf(a.accountSeed), keyOf(a.deviceSignerSeed), true, opts.expiresAt);
}

/**
 * A device's user JWT for a public key the device made itself (enrolment by token): the
 * seed never leaves the device, which writes its credentials file from this and its seed.
 */
export function deviceJwtFor(a: FleetAuthority, name: string, userPublicKey: string): Promise<string> {
  if (!USER_KEY.test(userPublicKey)) throw new ConfigError(`${quote(userPublicKey)} is not a NATS user public key (U… , 56 characters).`);
  return encodeUser(deviceName(name), userPublicKey, keyOf(a.accountSeed).getPublicKey(), {}, { signer: keyOf(a.deviceSignerSeed), scopedUser: true });
}

/** A one-time enrolment token's user: named as the device, scoped to enrolment, expiring. */
export async function issueEnrolmentUser(a: FleetAuthority, name: string, expiresAt: Date): Promise<IssuedUser> {
  if (!a.enrolmentSignerSeed) throw new ConfigError("the fleet's authority has no enrolment signing key (withEnrolmentSigner adds it).");
  return issue(deviceName(name), keyOf(a.accountSeed), keyOf(a.enrolmentSignerSeed), true, expiresAt);
}

/** The controller's user: everything in the fleet account (set-up, publish, rollouts, reading reports). */
export function issueController(a: FleetAuthority, name = "controller"): Promise<IssuedUser> {
  return issue(name, keyOf(a.accountSeed), undefined, false);
}

/** A system account user, to push account claims (revocations) to the servers. */
export function issueSystemUser(a: FleetAuthority, name = "claims"): Promise<IssuedUser> {
  return issue(name, keyOf(a.systemAccountSeed), undefined, false);
}

/**
 * The authority with `userPublicKey` revoked: the server refuses every JWT of that key
 * issued at or before `at` (now), and drops its connections once the account JWT that
 * says so is pushed (nats.pushAccountClaims).
 */
export function revoke(a: FleetAuthority, userPublicKey: string, at = new Date()): FleetAuthority {
  if (!USER_KEY.test(userPublicKey)) throw new ConfigError(`${quote(userPublicKey)} is not a NATS user public key (U… , 56 characters).`);
  return { ...a, revocations: { ...a.revocations, [userPublicKey]: Math.floor(at.getTime() / 1000) } };
}

/** The authority without revocations for these users: only for users whose JWTs have expired (the servers refuse those anyway). */
export function forgetRevocations(a: FleetAuthority, userPublicKeys: string[]): FleetAuthority {
  const revocations = { ...a.revocations };
  for (const key of userPublicKeys) delete revocations[key];
  return { ...a, revocations };
}

/** The public key and name inside a credentials file (to revoke it, or to show who it is). */
export function userOf(creds: string): { publicKey: string; name: string } {
  const { jwt } = credentialsParts(creds);
  if (!jwt) throw new ConfigError("not a NATS credentials file: no user JWT in it");
  const claims = decode(jwt);
  return { publicKey: claims.sub, name: claims.name };
}

/**
 * The part of every server's configuration that concerns auth: the operator, the system
 * account, and a full resolver (its own copy of account JWTs in `resolverDir`, shared
 * across the cluster, updated by pushes) preloaded with both accounts. It names no device.
 */
export async function serverAuthConfig(a: FleetAuthority, resolverDir: string): Promise<string> {
  return [
    `operator: ${await operatorJwt(a)}`,
    `system_account: ${publicKeyOf(a.systemAccountSeed)}`,
    `resolver {`,
    `  type: full`,
    `  dir: ${JSON.stringify(resolverDir)}`,
    `  allow_delete: false`,
    `  interval: "2m"`,
    `}`,
    `resolver_preload {`,
    `  ${publicKeyOf(a.accountSeed)}: ${await accountJwt(a)}`,
    `  ${publicKeyOf(a.systemAccountSeed)}: ${await systemAccountJwt(a)}`,
    `}`,
    "",
  ].join("\n");
}

const SEED = /^S[OA][A-Z2-7]{56}$/;

/** An authority read back from its JSON file; what is missing or malformed is named. */
export function parseAuthority(text: string, where: string): FleetAuthority {
  let raw: Record<string, unknown>;
  try {
    raw = JSON.parse(text);
  } catch (error) {
    throw new ConfigError(`${where}: not JSON (${(error as Error).message}); it is written by provision, restore it from its backup.`);
  }
  for (const k of ["operatorSeed", "systemAccountSeed", "accountSeed", "deviceSignerSeed"] as const)
    if (typeof raw[k] !== "string" || !SEED.test(raw[k] as string)) throw new ConfigError(`${where}: "${k}" is missing or not an NKey seed.`);
  if (raw.enrolmentSignerSeed !== undefined && (typeof raw.enrolmentSignerSeed !== "string" || !SEED.test(raw.enrolmentSignerSeed)))
    throw new ConfigError(`${where}: "enrolmentSignerSeed" is not an NKey seed.`);
  if (typeof raw.name !== "string" || !raw.name) throw new ConfigError(`${where}: "name" is missing.`);
  const revocations = raw.revocations ?? {};
  if (typeof revocations !== "object" || Object.values(revocations as object).some((v) => typeof v !== "number"))
    throw new ConfigError(`${where}: "revocations" must map user public keys to unix times.`);
  return raw as unknown as FleetAuthority;
}
