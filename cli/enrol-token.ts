// Enrolment by one-time token (core/pull/enrolment.ts), for a Pi that no controller can
// reach over SSH:
//   provision fleet token NAME --out DIR    (controller) the token and provision's code, for the Pi's SD card
//   provision agent --enrol FILE            (the Pi) its own keys, the request, its JWT, then the
//                                           pull_agent module through the local transport
//   provision fleet accept [NAME…] [--wait] (controller) sign what open tokens asked for
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { Prefix } from "@nats-io/nkeys";
import { fmtCreds } from "@nats-io/jwt";
import { ConfigError, messageOf } from "../core/errors.js";
import { BUILT_IN, Registry } from "../core/config/registry.js";
import { presentRun } from "../core/report/changes.js";
import { exitCode, renderChanges, renderSummary } from "../core/report/output.js";
import { execute, type RunSettings } from "../core/run/run.js";
import { LocalTransport, localTarget } from "../core/transport/local.js";
import { createDeviceKey } from "../core/pull/bundle.js";
import { deviceJwtFor, forgetRevocations, issueEnrolmentUser, revoke, withEnrolmentSigner } from "../core/pull/credentials.js";
import { answerEnrolment, answerFor, awaitEnrolment, parseToken, signRequest, storedRequests, tokenText, type StoredRequest } from "../core/pull/enrolment.js";
import { keyPairFromSeed, newKeyPair } from "../core/pull/keys.js";
import { connectNats, type NatsBroker } from "../core/pull/nats.js";
import { parseDuration } from "../core/pull/publish.js";
import { DESIRED_BUCKET, enrolInbox, enrolledKey } from "../core/pull/subjects.js";
import { builtinModules } from "../modules/index.js";
import { CODE_DIR } from "../modules/pull_agent/index.js";
import { agentInstallPlay, codeArchive } from "./enrol.js";
import {
  connectController,
  ensureFleetStore,
  loadAuthority,
  loadFleet,
  readDevice,
  readToken,
  signingPublicKey,
  updateAuthority,
  writeAtomic,
  writeDevice,
  writeToken,
  type TokenRecord,
} from "./fleet-config.js";
import { listrView } from "./progress.js";

export const DEFAULT_TOKEN_TTL = "24h";
const log = (line: string) => process.stdout.write(`${line}\n`);
const dec = new TextDecoder();

// --- the controller: a token ---------------------------------------------------------------

export async function fleetToken(dir: string, device: string, out: string, opts: { ttl?: string; code: boolean }): Promise<number> {
  const fleet = loadFleet(dir);
  const expires = new Date(Date.now() + parseDuration(opts.ttl ?? DEFAULT_TOKEN_TTL, "--expires"));
  if (!loadAuthority(dir).enrolmentSignerSeed) {
    const servers = await updateAuthority(fleet, withEnrolmentSigner);
    log(`the fleet's account now allows enrolment tokens; servers that took it: ${servers.join(", ")}`);
  }
  const broker = await connectController(fleet);
  try {
    await ensureFleetStore(broker, fleet);
  } finally {
    await broker.close();
  }
  const previous = readToken(dir, device);
  const user = await issueEnrolmentUser(loadAuthority(dir), device, expires);
  mkdirSync(out, { recursive: true, mode: 0o700 });
  const file = join(out, `${device}.token`);
  writeAtomic(file, tokenText({ device, servers: fleet.servers, expires, credentials: user.creds, verifyKey: signingPublicKey(dir) }), 0o600);
  const earlier = previous ? [...(previous.earlier ?? []), { user: previous.user, expires: previous.expires }] : [];
  writeToken(dir, device, { user: user.publicKey, issued: new Date().toISOString(), expires: expires.toISOString(), ...(earlier.length ? { earlier } : {}) });
  // one open token per device: the one made before is of no use to anyone but a thief (and the
  // revocations of tokens past their expiry are dropped in the same push)
  if (previous && !previous.spent && new Date(previous.expires) > new Date())
    await updateAuthority(fleet, (a) => forgetRevocations(revoke(a, previous.user), expiredTokenUsers(dir)));
  const lines = [`token for ${device} (one use, until ${expires.toISOString()}): ${file} (secret, 0600)`];
  if (opts.code) {
    const code = codeArchive();
    writeAtomic(join(out, "provision-code.tar.gz"), Buffer.from(code.base64, "base64"), 0o644);
    lines.push(`provision's code: ${join(out, "provision-code.tar.gz")} (sha256 ${code.sha256})`);
  }
  lines.push(
    `on the Pi (Debian's nodejs installed), as root:`,
    `  mkdir -p ${CODE_DIR} && tar -xzf provision-code.tar.gz -C ${CODE_DIR}`,
    `  node ${CODE_DIR}/dist/cli/cli.js agent --enrol ${device}.token`,
    `then here: provision fleet accept ${device} --wait 1h`,
  );
  lines.forEach((l) => log(l));
  return 0;
}

// --- the controller: accepting what tokens asked for -----------------------------------------

type Verdict = { device: string; accepted: boolean; message: string };

async function judge(dir: string, broker: NatsBroker, stored: StoredRequest, spentUsers: string[]): Promise<Verdict | null> {
  const { device } = stored;
  const token = readToken(dir, device);
  if (!token) return null; // not ours to answer: no token was made here for that name
  if (stored.error) return { device, accepted: false, message: `refused: ${stored.error}` };
  const request = stored.request!;
  const enrolled = readDevice(dir, device);
  if (token.spent) {
    if (enrolled?.user !== request.user) return { device, accepted: false, message: "refused: its token was spent already (make a new one with provision fleet token)" };
    // enrolled with this very key; answered again in case its answer was lost
    const answered = await broker.get(DESIRED_BUCKET, enrolledKey(device));
    if (!answerFor(answered, request.user)) await answerEnrolment(broker, device, await deviceJwtFor(loadAuthority(dir), device, request.user));
    return { device, accepted: true, message: "enrolled already" };
  }
  if (stored.stored > new Date(token.expires))
    return { device, accepted: false, message: `refused: asked at ${stored.stored.toISOString()}, after its token expired (${token.expires})` };
  if (stored.stored < new Date(token.issued)) return null; // asked with an older token, which was replaced
  await answerEnrolment(broker, device, await deviceJwtFor(loadAuthority(dir), device, request.user));
  writeDevice(dir, device, { age_recipient: request.ageRecipient, user: request.user });
  writeToken(dir, device, { ...token, spent: new Date().toISOString() });
  spentUsers.push(token.user);
  if (enrolled && !enrolled.revoked && enrolled.user !== request.user) spentUsers.push(enrolled.user);
  return { device, accepted: true, message: `enrolled (NATS user ${request.user}, age recipient ${request.ageRecipient})` };
}

/** Accept what open tokens asked for; with `waitMs`, until each of `names` (or every open token) is enrolled. */
export async function fleetAccept(dir: string, names: string[], waitMs: number): Promise<number> {
  const fleet = loadFleet(dir);
  const deadline = Date.now() + waitMs;
  const broker = await connectController(fleet);
  const done = new Map<string, Verdict>();
  try {
    await ensureFleetStore(broker, fleet);
    for (;;) {
      const spent: string[] = [];
      for (const stored of await storedRequests(broker)) {
        if ((names.length && !names.includes(stored.device)) || done.get(stored.device)?.accepted) continue;
        const verdict = await judge(dir, broker, stored, spent);
        if (!verdict || done.get(verdict.device)?.message === verdict.message) continue;
        done.set(verdict.device, verdict);
        log(`${verdict.device}: ${verdict.message}`);
      }
      // the token's user is spent: revoked at once (the device's own user is what it uses now); the
      // revocations of tokens past their expiry are dropped then, so the account does not grow with the fleet
      if (spent.length) {
        const expired = expiredTokenUsers(dir);
        const servers = await updateAuthority(fleet, (a) =>
          forgetRevocations(
            spent.reduce((b, user) => revoke(b, user), a),
            expired,
          ),
        );
        log(`revoked ${spent.length} spent token or replaced device user(s); servers that took the account: ${servers.join(", ")}`);
      }
      const waiting = (names.length ? names : openTokens(dir)).filter((n) => !done.get(n)?.accepted);
      if (!waiting.length || Date.now() >= deadline) {
        for (const n of waiting) log(`${n}: ${done.get(n)?.message ?? "no request yet"}`);
        return waiting.length && names.length ? 1 : 0;
      }
      await new Promise((r) => setTimeout(r, 2_000));
    }
  } finally {
    await broker.close();
  }
}

function tokenRecords(dir: string): [string, TokenRecord][] {
  const folder = join(dir, "tokens");
  if (!existsSync(folder)) return [];
  return readdirSync(folder)
    .filter((f) => f.endsWith(".json"))
    .map((f) => f.slice(0, -5))
    .map((n) => [n, readToken(dir, n)!]);
}

const openTokens = (dir: string): string[] => tokenRecords(dir).flatMap(([n, t]) => (!t.spent && new Date(t.expires) > new Date() ? [n] : []));

/** The users of tokens past their expiry, earlier tokens of a device included: the servers refuse their JWTs whatever the revocations say. */
const expiredTokenUsers = (dir: string): string[] =>
  tokenRecords(dir)
    .flatMap(([, t]) => [t, ...(t.earlier ?? [])])
    .flatMap((t) => (new Date(t.expires) < new Date() ? [t.user] : []));

// --- the Pi ---------------------------------------------------------------------------------

const PENDING = "/var/lib/provision/enrol-pending.json";

/** The keys this device asked with: made once and kept (0600) until enrolled, so that asking again asks for the same keys. */
async function pendingKeys(device: string): Promise<{ seed: string; identity: string; recipient: string }> {
  if (existsSync(PENDING)) {
    const kept = JSON.parse(readFileSync(PENDING, "utf8")) as { device: string; seed: string; identity: string; recipient: string };
    if (kept.device === device) return kept;
  }
  const user = newKeyPair(Prefix.User);
  const key = await createDeviceKey();
  const kept = { device, seed: dec.decode(user.getSeed()), identity: key.identity, recipient: key.recipient };
  mkdirSync(dirname(PENDING), { recursive: true, mode: 0o700 });
  writeAtomic(PENDING, JSON.stringify(kept) + "\n", 0o600);
  return kept;
}

export async function enrolByToken(tokenFile: string, waitMs: number): Promise<number> {
  let text: string;
  try {
    text = readFileSync(tokenFile, "utf8");
  } catch (error) {
    throw new ConfigError(`cannot read the enrolment token ${tokenFile} (${(error as NodeJS.ErrnoException).code ?? messageOf(error)}).`);
  }
  const token = parseToken(text, tokenFile);
  if (token.expires < new Date()) log(`note: the token says it expired at ${token.expires.toISOString()} (this machine's clock may be wrong; the servers decide)`);
  const keys = await pendingKeys(token.device);
  const user = keyPairFromSeed(keys.seed);
  log(`${token.device}: asking the fleet (${token.servers.join(", ")}) to enrol NATS user ${user.getPublicKey()}`);
  const broker = await connectNats({
    servers: token.servers,
    credentials: token.credentials,
    inboxPrefix: enrolInbox(token.device),
    name: `${token.device}-enrol`,
    waitForFirstConnect: true,
  });
  let jwt: string;
  try {
    jwt = await awaitEnrolment(broker, token.device, signRequest(token.device, user, keys.recipient), user.getPublicKey(), waitMs, (e) =>
      log(e.type === "asked" ? `request stored by the cluster (${e.server ?? "?"}); waiting for provision fleet accept` : e.detail),
    );
  } finally {
    await broker.close();
  }
  log(`${token.device}: accepted; installing the agent`);
  const registry = new Registry();
  for (const module of builtinModules) registry.register(module, BUILT_IN);
  // the unit runs provision from CODE_DIR: this code is copied there unless it runs from there already
  const code = resolve(dirname(fileURLToPath(import.meta.url)), "../..") === CODE_DIR ? undefined : codeArchive();
  const args = {
    device: token.device,
    servers: token.servers,
    credentials: dec.decode(fmtCreds(jwt, user)),
    identity: keys.identity,
    verify_key: token.verifyKey,
    ...(code ? { code_archive: code.base64, code_sha256: code.sha256 } : {}),
  };
  const settings: RunSettings = { check: false, breakLock: false, forks: 1, tags: [], skipTags: [], acceptNewHostKeys: false, renderer: "verbose" };
  const prepared = agentInstallPlay(registry, args, localTarget(token.device));
  const run = presentRun(await execute(prepared.plays, settings, (target) => new LocalTransport(target), listrView(settings)));
  log(prepared.mask(renderChanges(run, false) + renderSummary(run)));
  const status = exitCode(run);
  if (status === 0) {
    rmSync(PENDING, { force: true });
    try {
      rmSync(tokenFile);
      log(`the token is spent; ${tokenFile} removed`);
    } catch (error) {
      log(`the token is spent; remove ${tokenFile} (${messageOf(error)})`);
    }
  }
  return status;
}
