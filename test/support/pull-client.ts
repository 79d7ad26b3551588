// A broker client as its own process (a device or the controller), run inside a test's
// network namespace and driven over stdin/stdout, one JSON object per line:
//   in:  {"id": 1, "op": "get", "args": {...}}
//   out: {"id": 1, "ok": true, "result": ...} | {"id": 1, "ok": false, "error": "..."}
//        {"event": "...", ...} (broker events, watched entries, device events, rollout progress)
// Values travel as base64. It uses only core/pull, as the agent will.
import { createInterface } from "node:readline";
import type { Broker, Stoppable } from "../../core/pull/broker.js";
import { followDesiredState } from "../../core/pull/device.js";
import { keyPairFromSeed } from "../../core/pull/keys.js";
import { connectNats, pushAccountClaims, type NatsBroker } from "../../core/pull/nats.js";
import { readRollout, requestControl, rolloutOpen, runRollout, type Command, type RolloutPolicy } from "../../core/pull/rollout.js";
import { awaitEnrolment, signRequest } from "../../core/pull/enrolment.js";
import { DESIRED_BUCKET, REPORTS_STREAM, REPORTS_SUBJECTS, ROLLOUTS_BUCKET } from "../../core/pull/subjects.js";

type Args = Record<string, any>;
let broker: NatsBroker | undefined;
const stoppables: Stoppable[] = [];
const b64 = (v: Uint8Array) => Buffer.from(v).toString("base64");
const bytes = (s: string) => new Uint8Array(Buffer.from(s, "base64"));
const send = (o: unknown) => process.stdout.write(JSON.stringify(o) + "\n");
const need = (): Broker & NatsBroker => {
  if (!broker) throw new Error("not connected");
  return broker;
};

const ops: Record<string, (a: Args) => Promise<unknown>> = {
  async connect(a) {
    broker = await connectNats({
      servers: a.servers,
      credentials: a.creds,
      inboxPrefix: a.inboxPrefix,
      name: a.name,
      timeoutMs: a.timeoutMs,
      backoff: { baseMs: 100, capMs: 1000 },
    });
    broker.onEvent((e) => send({ event: "broker", ...e }));
    return broker.server();
  },
  async setup(a) {
    const b = need();
    await b.ensureBucket(DESIRED_BUCKET, { replicas: a.replicas, history: 5 });
    await b.ensureBucket(ROLLOUTS_BUCKET, { replicas: a.replicas, history: 5 });
    await b.ensureStream(REPORTS_STREAM, [REPORTS_SUBJECTS], { replicas: a.replicas, maxMsgsPerSubject: 100 });
    return null;
  },
  async get(a) {
    const e = await need().get(a.bucket, a.key);
    return e && { value: b64(e.value), revision: e.revision };
  },
  async put(a) {
    return need().put(a.bucket, a.key, bytes(a.value));
  },
  async watch(a) {
    stoppables.push(await need().watch(a.bucket, a.key, (e) => send({ event: "entry", key: a.key, value: e && b64(e.value), revision: e?.revision ?? 0 })));
    return null;
  },
  async publish(a) {
    return need().publish(a.subject, bytes(a.data), a.msgId ? { id: a.msgId } : {});
  },
  async read(a) {
    return (await need().read(a.stream, a.filter)).map((m) => ({ subject: m.subject, data: b64(m.data), seq: m.seq }));
  },
  async server() {
    return need().server() ?? null;
  },
  /** A simulated agent: follows its key, opens bundles for real, "applies" with a chosen outcome. */
  async follow(a) {
    let applied: number | undefined = a.appliedVersion;
    stoppables.push(
      await followDesiredState(
        need(),
        { name: a.device, verifyKey: a.verifyKey, identity: a.identity },
        {
          appliedVersion: () => applied,
          recheckMs: a.recheckMs ?? 300,
          apply: async (bundle) => {
            send({ event: "apply", version: bundle.version, playbook: bundle.playbook });
            if (a.applyMs) await new Promise((r) => setTimeout(r, a.applyMs));
            applied = bundle.version;
            return { outcome: a.outcome ?? "applied", ...(a.outcome && a.outcome !== "applied" ? { detail: `simulated ${a.outcome}` } : {}) };
          },
          onEvent: (e) => send({ event: "device", ...e }),
        },
      ),
    );
    return null;
  },
  async rollout(a) {
    const state = await runRollout({
      broker: need(),
      id: a.id,
      version: a.version,
      devices: a.devices,
      policy: a.policy as RolloutPolicy,
      tickMs: a.tickMs ?? 50,
      bundle: (d) => bytes(a.bundles[d]),
      onProgress: (s, c) => send({ event: "progress", id: a.id, at: Date.now(), status: s.status, waves: s.openedAt.length, ...c }),
      onUnreachable: (detail) => send({ event: "unreachable", id: a.id, at: Date.now(), detail }),
      onReachable: (awayMs) => send({ event: "reachable", id: a.id, at: Date.now(), awayMs }),
      ...(a.unreachableMs ? { unreachableMs: a.unreachableMs } : {}),
    });
    return state;
  },
  async control(a) {
    await requestControl(need(), a.id, a.command as Command, a.reason);
    return null;
  },
  async rolloutOpen(a) {
    return rolloutOpen(need(), a.id);
  },
  async readRollout(a) {
    return readRollout(need(), a.id);
  },
  /** A device enrolling with a token (connected with the token's credentials): its request, then its JWT. */
  async enrolAsk(a) {
    const user = keyPairFromSeed(a.seed);
    return awaitEnrolment(need(), a.device, signRequest(a.device, user, a.recipient), user.getPublicKey(), a.waitMs ?? 30_000, (e) => send({ event: "enrol", ...e }));
  },
  async pushClaims(a) {
    return pushAccountClaims({ servers: a.servers, credentials: a.creds, timeoutMs: 3000 }, a.jwt, a.waitMs ?? 500);
  },
  async close() {
    for (const s of stoppables.splice(0)) await s.stop().catch(() => {});
    await broker?.close();
    setImmediate(() => process.exit(0));
    return null;
  },
};

const lines = createInterface({ input: process.stdin });
lines.on("line", (line) => {
  const { id, op, args } = JSON.parse(line) as { id: number; op: string; args: Args };
  const fn = ops[op];
  (fn ? fn(args ?? {}) : Promise.reject(new Error(`unknown op ${op}`))).then(
    (result) => send({ id, ok: true, result: result ?? null }),
    (error) => send({ id, ok: false, error: error instanceof Error ? error.message : String(error), ...(process.env.PULL_CLIENT_STACKS ? { stack: error?.stack } : {}) }),
  );
});
lines.on("close", () => process.exit(0));
