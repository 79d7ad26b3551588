// The broker on NATS JetStream: the only file that imports the NATS client.
// KV buckets hold desired state (replicated, direct gets allowed so that any replica
// answers and a device's read can be limited to its own key); streams hold reports.
import { connect, type NatsConnection, type Status } from "@nats-io/transport-node";
import { DeliverPolicy, jetstream, jetstreamManager, type JetStreamClient, type JetStreamManager } from "@nats-io/jetstream";
import { Kvm, type KV } from "@nats-io/kv";
import { messageOf } from "../errors.js";
import { credentialsAuthenticator } from "./keys.js";
import {
  backoffDelay,
  BrokerError,
  DEFAULT_BACKOFF,
  type Acked,
  type Broker,
  type BrokerAdmin,
  type BrokerEvent,
  type BrokerOptions,
  type Entry,
  type Message,
  type Stoppable,
} from "./broker.js";

const DEFAULT_TIMEOUT_MS = 5_000;
/** A watch also reads its key this often (with jitter), in case a change notice was lost. */
const WATCH_POLL_MS = 300_000;
/**
 * Reads after a change notice until the change shows: 25 ms doubling (about 3 s in all),
 * then with back-off for up to NOTICE_PATIENCE_MS (a replica catching up after the whole
 * cluster restarted may lag by more than seconds).
 */
const NOTICE_RETRIES = 7;
const NOTICE_PATIENCE_MS = 120_000;
const CONSUMER_SETUP_MS = 60_000;
/** How long a write waits for a bucket to have a leader again, and the answers that say nothing was written. */
const LEADERLESS_MS = 15_000;
const NOT_WRITTEN = /jetstream is not enabled|no responders|jetstream not available|503/i;
/** What the client says when no server answered at all (a write may have been stored). */
const UNANSWERED = /^(TimeoutError|NoResponders|RequestError|ClosedConnectionError|ConnectionError)$/;
const READ_RETRY_BACKOFF = { baseMs: 500, capMs: 30_000 };

export { BrokerError };

/**
 * Connect to any server of the cluster. The first connection fails after `timeoutMs`
 * unless `waitForFirstConnect` (an agent waits for ever); after that the client
 * reconnects by itself with back-off and jitter, to whichever server answers.
 */
export async function connectNats(opts: BrokerOptions & { waitForFirstConnect?: boolean }): Promise<NatsBroker> {
  const backoff = opts.backoff ?? DEFAULT_BACKOFF;
  let attempt = 0;
  try {
    const nc = await connect({
      servers: opts.servers,
      name: opts.name,
      inboxPrefix: opts.inboxPrefix,
      authenticator: credentialsAuthenticator(opts.credentials),
      maxReconnectAttempts: -1,
      waitOnFirstConnect: opts.waitForFirstConnect ?? false,
      reconnectDelayHandler: () => backoffDelay(attempt++, backoff),
      timeout: opts.timeoutMs ?? DEFAULT_TIMEOUT_MS,
      pingInterval: 20_000,
      maxPingOut: 3,
    });
    const broker = new NatsBroker(nc, opts.timeoutMs ?? DEFAULT_TIMEOUT_MS);
    broker.onEvent((e) => {
      if (e.type === "reconnected") attempt = 0;
    });
    return broker;
  } catch (error) {
    throw new BrokerError(`cannot connect to any of ${opts.servers.join(", ")}: ${messageOf(error)}`, { cause: error });
  }
}

export class NatsBroker implements Broker, BrokerAdmin {
  private readonly js: JetStreamClient;
  private readonly kvs = new Map<string, Promise<KV>>();
  private readonly listeners: ((e: BrokerEvent) => void)[] = [];
  /** Between a lost connection and the next one, getServer() still names the lost server. */
  private connected = true;

  constructor(
    readonly nc: NatsConnection,
    private readonly timeoutMs: number,
  ) {
    this.js = jetstream(nc, { timeout: timeoutMs });
    void this.followStatus();
  }

  private async followStatus(): Promise<void> {
    for await (const s of this.nc.status()) {
      const event = toEvent(s);
      if (event?.type === "disconnected" || event?.type === "reconnecting") this.connected = false;
      if (event?.type === "reconnected") this.connected = true;
      if (event) for (const l of this.listeners) l(event);
    }
    for (const l of this.listeners) l({ type: "closed" });
  }

  onEvent(listener: (event: BrokerEvent) => void): void {
    this.listeners.push(listener);
  }

  server(): string | undefined {
    return this.connected && !this.nc.isClosed() ? this.nc.getServer() : undefined;
  }

  /** Bind without asking the server about the bucket: a device may read only its own key. */
  private kv(bucket: string): Promise<KV> {
    let kv = this.kvs.get(bucket);
    if (!kv) {
      kv = new Kvm(this.js).open(bucket, { bindOnly: true, allow_direct: true, timeout: this.timeoutMs });
      this.kvs.set(bucket, kv);
    }
    return kv;
  }

  async get(bucket: string, key: string): Promise<Entry | null> {
    return (await this.latest(bucket, key)).entry;
  }

  /** The key's value (null when deleted or absent) and its revision (a delete has one too; absent: 0). */
  private async latest(bucket: string, key: string): Promise<{ entry: Entry | null; revision: number }> {
    const e = await (await this.kv(bucket)).get(key);
    if (!e) return { entry: null, revision: 0 };
    return { entry: e.operation === "PUT" ? { key: e.key, value: e.value, revision: e.revision } : null, revision: e.revision };
  }

  async put(bucket: string, key: string, value: Uint8Array, opts: { previousRevision?: number } = {}): Promise<number> {
    const kv = await this.kv(bucket);
    const write = () => {
      if (opts.previousRevision === 0) return kv.create(key, value);
      if (opts.previousRevision !== undefined) return kv.update(key, value, opts.previousRevision);
      return kv.put(key, value);
    };
    // a bucket whose leader was on a node that just died answers "not available" until a new
    // leader is elected: nothing was written, so the same write is sent again (a timeout is not retried: it may have been)
    return this.retrying(`writing ${bucket}/${key}`, { forMs: LEADERLESS_MS, capMs: 2000, when: (error) => NOT_WRITTEN.test(messageOf(error)) }, write);
  }

  /** `attempt` again with back-off while `when` says the failure changed nothing, for up to `forMs`; each retry is an error event. */
  private async retrying<T>(what: string, o: { forMs: number; capMs: number; when?: (error: unknown) => boolean }, attempt: () => Promise<T>): Promise<T> {
    const deadline = Date.now() + o.forMs;
    for (let n = 0; ; n++) {
      try {
        return await attempt();
      } catch (error) {
        if ((o.when && !o.when(error)) || Date.now() > deadline) throw error;
        this.emit({ type: "error", detail: `${what} (attempt ${n + 1}): ${messageOf(error)}` });
        await new Promise((r) => setTimeout(r, backoffDelay(n, { baseMs: 200, capMs: o.capMs })));
      }
    }
  }

  unavailable(error: unknown): boolean {
    for (let e = error; e instanceof Error; e = e.cause) {
      if (e instanceof BrokerError) return false; // told already what went wrong
      if (UNANSWERED.test(e.name) || NOT_WRITTEN.test(e.message) || (e as { status?: number }).status === 503) return true;
    }
    return false;
  }

  async delete(bucket: string, key: string): Promise<void> {
    await (await this.kv(bucket)).delete(key);
  }

  /**
   * No JetStream consumer per watcher: a core subscription on the key's subject says the
   * key changed, a direct get reads it; on every reconnect (and now and then) it is read
   * again. Reads are chained so that values are delivered in revision order. A direct get
   * may be answered by a replica that has not stored the change yet, so after a notice
   * the key is read again (with back-off) until a newer revision shows; the notice's own
   * content is never used: it is sent even when the stream then refuses the write.
   */
  async watch(bucket: string, key: string, onEntry: (entry: Entry | null) => void): Promise<Stoppable> {
    let last: number | undefined;
    let stopped = false;
    let chain = Promise.resolve();
    // A read that failed (the bucket not made yet, JetStream without a leader) is tried
    // again with back-off until one succeeds: a device started before the controller made
    // the bucket would otherwise wait for the next poll (minutes) for its first bundle.
    let failures = 0;
    let retry: NodeJS.Timeout | undefined;
    /** Delivers the key's value when its revision is newer than the last one delivered. */
    const readNewer = async (): Promise<boolean> => {
      const { entry, revision } = await this.latest(bucket, key);
      failures = 0;
      if (stopped || (last !== undefined && revision <= last)) return false;
      last = revision;
      onEntry(entry);
      return true;
    };
    const failed = (error: unknown): void => {
      this.emit({ type: "error", detail: `reading ${bucket}/${key}: ${messageOf(error)}` });
      if (stopped) return;
      clearTimeout(retry);
      retry = setTimeout(() => read(false), backoffDelay(failures++, READ_RETRY_BACKOFF));
    };
    /** A notice's search for the change it announced; a newer notice starts its quick reads again. */
    let search: { attempt: number; since: number; wake: () => void } | undefined;
    const searchChange = async (): Promise<void> => {
      const s = (search = { attempt: 0, since: Date.now(), wake: () => {} });
      try {
        for (; !stopped && Date.now() - s.since <= NOTICE_PATIENCE_MS; s.attempt++) {
          try {
            if (await readNewer()) return;
          } catch (error) {
            if (s.attempt >= NOTICE_RETRIES) return failed(error);
            this.emit({ type: "error", detail: `reading ${bucket}/${key}: ${messageOf(error)}` });
          }
          const ms = s.attempt < NOTICE_RETRIES ? 25 * 2 ** s.attempt : backoffDelay(s.attempt - NOTICE_RETRIES, READ_RETRY_BACKOFF);
          await new Promise<void>((r) => {
            const timer = setTimeout(r, ms);
            s.wake = () => (clearTimeout(timer), r());
          });
        }
      } finally {
        search = undefined;
      }
    };
    const read = (notified: boolean): void => {
      if (notified && search) {
        Object.assign(search, { attempt: 0, since: Date.now() }).wake();
        return;
      }
      chain = chain.then(() => (notified ? searchChange() : readNewer().then(() => undefined, failed)));
    };
    const sub = this.nc.subscribe(`$KV.${bucket}.${key}`, { callback: () => read(true) });
    this.onEvent((e) => {
      if (e.type === "reconnected") read(false);
    });
    const poll = setInterval(() => read(false), WATCH_POLL_MS * (0.75 + Math.random() / 2));
    poll.unref();
    await this.nc.flush();
    read(false);
    await chain;
    return {
      stop: async () => {
        stopped = true;
        clearInterval(poll);
        clearTimeout(retry);
        sub.unsubscribe();
        search?.wake();
        await chain;
      },
    };
  }

  async publish(subject: string, data: Uint8Array, opts: { id?: string } = {}): Promise<Acked> {
    const ack = await this.js.publish(subject, data, { msgID: opts.id, timeout: this.timeoutMs });
    return { stream: ack.stream, seq: ack.seq, duplicate: ack.duplicate };
  }

  /**
   * An ordered consumer (the client re-creates it after a gap or a lost server). Making
   * it can time out while the cluster notices a dead node (its reply comes from the node
   * the consumer is placed on): it is tried again with back-off for up to CONSUMER_SETUP_MS.
   */
  async consume(stream: string, filter: string, onMessage: (m: Message) => void | Promise<void>, opts: { fromSeq?: number } = {}): Promise<Stoppable> {
    const open = async () => {
      const consumer = await this.js.consumers.get(stream, {
        filter_subjects: filter,
        ...(opts.fromSeq ? { deliver_policy: DeliverPolicy.StartSequence, opt_start_seq: opts.fromSeq } : { deliver_policy: DeliverPolicy.New }),
      });
      return consumer.consume();
    };
    const messages = await this.retrying(`reading stream ${stream}`, { forMs: CONSUMER_SETUP_MS, capMs: 3000 }, open).catch((error: unknown) => {
      throw new BrokerError(`cannot read stream ${stream}: ${messageOf(error)}`, { cause: error });
    });
    const done = (async () => {
      for await (const m of messages) await onMessage({ subject: m.subject, data: m.data, seq: m.seq, time: m.time });
    })();
    return {
      stop: async () => {
        await messages.close();
        await done;
      },
    };
  }

  /** Message by message with direct gets (no consumer: any replica answers; for audits and tests, not for bulk). */
  async read(stream: string, filter: string): Promise<Message[]> {
    const jsm = await this.manager();
    const out: Message[] = [];
    for (let seq = 1; ;) {
      const m = await jsm.direct.getMessage(stream, { seq, next_by_subj: filter });
      if (!m) return out;
      out.push({ subject: m.subject, data: m.data, seq: m.seq, time: m.time });
      seq = m.seq + 1;
    }
  }

  /**
   * The last message of each subject matching `filter`: an ordered consumer delivering the
   * last per subject, read until nothing is pending. What status --fleet needs (each
   * device's latest report of each kind) without reading the whole stream.
   */
  async readLatest(stream: string, filter: string): Promise<Message[]> {
    const jsm = await this.manager();
    if ((await jsm.streams.info(stream)).state.messages === 0) return [];
    const consumer = await this.js.consumers.get(stream, { filter_subjects: filter, deliver_policy: DeliverPolicy.LastPerSubject });
    const messages = await consumer.consume();
    const out: Message[] = [];
    // no subject matches the filter: nothing is delivered at all; the idle timer ends the read
    let idle = setTimeout(() => void messages.close(), this.timeoutMs);
    for await (const m of messages) {
      out.push({ subject: m.subject, data: m.data, seq: m.seq, time: m.time });
      if (m.info.pending === 0) break;
      clearTimeout(idle);
      idle = setTimeout(() => void messages.close(), this.timeoutMs);
    }
    clearTimeout(idle);
    await messages.close();
    return out;
  }

  private manager(): Promise<JetStreamManager> {
    return jetstreamManager(this.nc, { timeout: this.timeoutMs, checkAPI: false });
  }

  async ensureBucket(name: string, opts: { replicas: number; history: number }): Promise<void> {
    const kv = new Kvm(this.js).create(name, { replicas: opts.replicas, history: opts.history, allow_direct: true, timeout: this.timeoutMs });
    this.kvs.set(name, kv);
    await kv;
  }

  async ensureStream(name: string, subjects: string[], opts: { replicas: number; maxAgeMs?: number; maxMsgsPerSubject?: number }): Promise<void> {
    const jsm = await this.manager();
    try {
      await jsm.streams.info(name);
    } catch (error) {
      if (!/stream not found/i.test(messageOf(error))) throw error;
      await jsm.streams.add({
        name,
        subjects,
        num_replicas: opts.replicas,
        allow_direct: true,
        max_age: opts.maxAgeMs ? opts.maxAgeMs * 1_000_000 : 0,
        max_msgs_per_subject: opts.maxMsgsPerSubject ?? -1,
      });
    }
  }

  private emit(event: BrokerEvent): void {
    for (const l of this.listeners) l(event);
  }

  async close(): Promise<void> {
    if (!this.nc.isClosed()) await this.nc.close();
  }
}

function toEvent(s: Status): BrokerEvent | null {
  switch (s.type) {
    case "disconnect":
      return { type: "disconnected", detail: s.server };
    case "reconnecting":
      return { type: "reconnecting" };
    case "reconnect":
      return { type: "reconnected", detail: s.server };
    case "error":
      return { type: "error", detail: messageOf(s.error) };
    default:
      return null;
  }
}

/**
 * Hand new account claims (a re-signed account JWT: revocations, permissions) to the
 * cluster's account resolvers, as the system account's user, and return the servers that
 * took them. Every server with the account answers (the full resolver also shares the JWT
 * with servers that join later); devices revoked in the claims are disconnected.
 */
export async function pushAccountClaims(opts: BrokerOptions, accountJwt: string, waitMs = 1_000): Promise<string[]> {
  const broker = await connectNats(opts);
  try {
    const replies = await broker.nc.requestMany("$SYS.REQ.CLAIMS.UPDATE", new TextEncoder().encode(accountJwt), { strategy: "timer", maxWait: waitMs });
    const servers: string[] = [];
    for await (const reply of replies) {
      const answer = reply.json<{ data?: { code?: number }; error?: { description?: string }; server?: { name?: string } }>();
      if (answer.error) throw new BrokerError(`server ${answer.server?.name ?? "?"} refused the account claims: ${answer.error.description ?? JSON.stringify(answer.error)}`);
      servers.push(answer.server?.name ?? "?");
    }
    if (!servers.length) throw new BrokerError("no server answered the account claims update (is the system account user right?)");
    return servers.sort();
  } finally {
    await broker.close();
  }
}
