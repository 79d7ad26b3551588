// The broker as pull mode sees it: a replicated key-value store for desired state, and
// acknowledged streams for reports. nats.ts implements it on NATS JetStream; nothing
// else in provision knows the NATS client.

/** The broker could not do what was asked (connect, read, a server refused): told without a stack trace. */
export class BrokerError extends Error {
  override name = "BrokerError";
}

export interface BrokerOptions {
  /** Several servers of one cluster ("10.0.0.1:4222"); any of them will do, tried in random order. */
  servers: string[];
  /** A NATS credentials file's text (user JWT + NKey seed). */
  credentials: string;
  /** Prefix of this client's reply subjects; a device must use its own (subjects.deviceInbox). */
  inboxPrefix?: string;
  /** Shown in the servers' connection lists. */
  name?: string;
  /** Back-off between reconnect attempts: base and cap in ms (see backoffDelay). */
  backoff?: Backoff;
  /** Per request (get, put, publish) in ms. */
  timeoutMs?: number;
}

export type Backoff = { baseMs: number; capMs: number };
export const DEFAULT_BACKOFF: Backoff = { baseMs: 250, capMs: 30_000 };

export interface Entry {
  key: string;
  value: Uint8Array;
  /** The store's sequence for this value: grows with every write to the bucket. */
  revision: number;
}

export interface Acked {
  stream: string;
  seq: number;
  duplicate: boolean;
}

export interface Message {
  subject: string;
  data: Uint8Array;
  seq: number;
  time: Date;
}

export interface Stoppable {
  stop(): Promise<void>;
}

export type BrokerEvent = { type: "disconnected" | "reconnecting" | "reconnected" | "error" | "closed"; detail?: string };

export interface Broker {
  /** The latest value of `key`, or null when there is none (or it was deleted). */
  get(bucket: string, key: string): Promise<Entry | null>;
  /** Store a value; with `previousRevision`, only if the key is still at that revision (0: absent). */
  put(bucket: string, key: string, value: Uint8Array, opts?: { previousRevision?: number }): Promise<number>;
  delete(bucket: string, key: string): Promise<void>;
  /**
   * Call `onEntry` with the key's current value now, after every change, and after every
   * reconnect (a change made while disconnected is not lost). Values arrive in revision
   * order; an unchanged revision is not repeated.
   */
  watch(bucket: string, key: string, onEntry: (entry: Entry | null) => void): Promise<Stoppable>;
  /** Publish to a stream; resolves once the stream has stored it (replicated), rejects otherwise. */
  publish(subject: string, data: Uint8Array, opts?: { id?: string }): Promise<Acked>;
  /** Every message of `stream` matching `filter` from now on (or from `fromSeq`), in order, across reconnects. */
  consume(stream: string, filter: string, onMessage: (m: Message) => void | Promise<void>, opts?: { fromSeq?: number }): Promise<Stoppable>;
  /** Each message of `stream` stored for `subject` (for audits and tests: what is kept). */
  read(stream: string, filter: string): Promise<Message[]>;
  /** The last message stored for each subject matching `filter` (each device's latest report of each kind). */
  readLatest(stream: string, filter: string): Promise<Message[]>;
  /** Connection state changes, for logs and progress displays. */
  onEvent(listener: (event: BrokerEvent) => void): void;
  /**
   * Whether `error` (from this broker) means the cluster could not be reached or could not
   * store anything yet (no server, no leader, no answer in time), rather than a refusal.
   * A write that failed that way may be tried again; one without an answer may have been stored.
   */
  unavailable(error: unknown): boolean;
  /** Which server this client is connected to now ("host:port"), if any. */
  server(): string | undefined;
  close(): Promise<void>;
}

/** What the controller sets up once per fleet: buckets and streams, replicated. */
export interface BrokerAdmin {
  ensureBucket(name: string, opts: { replicas: number; history: number }): Promise<void>;
  ensureStream(name: string, subjects: string[], opts: { replicas: number; maxAgeMs?: number; maxMsgsPerSubject?: number }): Promise<void>;
}

/**
 * The wait before reconnect attempt `attempt` (0-based): exponential up to the cap, half
 * of it random ("equal jitter"), so that 10,000 devices losing the same server neither
 * come back in step nor retry at once.
 */
export function backoffDelay(attempt: number, backoff: Backoff = DEFAULT_BACKOFF, random: () => number = Math.random): number {
  const ceiling = Math.min(backoff.capMs, backoff.baseMs * 2 ** Math.min(attempt, 30));
  return Math.round(ceiling / 2 + (ceiling / 2) * random());
}
