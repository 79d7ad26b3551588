// `provision watch`: a continuous audit. Every audit is the check run of --check (execute
// in check mode, nothing of its own), over one connection per host that stays open between
// audits; a lost host is tried again with back-off, one connection attempt at a time.
// What an audit found is told as data (Audit); core/report/watch.ts keeps and shows it.
import { setMaxListeners } from "node:events";
import { execute, type PreparedPlay, type RunSettings, type RunView } from "./run.js";
import type { HostWork } from "./engine.js";
import type { HostResult } from "./results.js";
import { LostConnection, UnreachableError, messageOf } from "../errors.js";
import type { ConnectionTarget, ExecResult, RebootOptions, Transport, TransportFactory } from "../transport/transport.js";

/** Why the last audit of a host did not end ok or drift ("none": it did). */
export type ErrorClass = "none" | "refused" | "timeout" | "no_route" | "auth" | "host_key" | "unreachable" | "connection_lost" | "audit_failed";

/** One audit of one host. */
export interface Audit {
  /** The check run's result (status "unreachable" when no connection could be made). */
  result: HostResult;
  errorClass: ErrorClass;
  /** When the audit started (ms since the epoch). */
  startedAt: number;
}

export interface WatchSettings extends RunSettings {
  intervalSeconds: number;
  /** Each host's audits are shifted by a random, fixed offset in [0, splay). */
  splaySeconds: number;
}

/** The first retry of a lost host comes after this; each failed one doubles it, up to the interval. */
export const FIRST_RETRY_MS = 1000;

/**
 * Audit every host of `plays` every interval until `stop` is aborted; each audit is told to
 * `audited`. At most `forks` audits run at once. Resolves once every connection is closed.
 */
export async function watch(plays: PreparedPlay[], settings: WatchSettings, transport: TransportFactory, audited: (audit: Audit) => void, stop: AbortSignal): Promise<void> {
  const names = [...new Set(plays.flatMap((p) => p.hosts.map((h) => h.name)))];
  const slots = new Slots(settings.forks);
  const hosts = names.map((name) => new WatchedHost(name, onlyHost(plays, name), transport));
  const closeAll = () => hosts.forEach((h) => h.connection?.close());
  setMaxListeners(hosts.length + 10, stop); // each host's wait listens for the stop
  stop.addEventListener("abort", closeAll, { once: true });
  try {
    await Promise.all(hosts.map((host) => watchHost(host, settings, slots, audited, stop)));
  } finally {
    closeAll();
  }
}

/** The plays as they concern one host (a host is in one or more plays). */
function onlyHost(plays: PreparedPlay[], name: string): PreparedPlay[] {
  return plays.map((p) => ({ ...p, hosts: p.hosts.filter((h) => h.name === name) })).filter((p) => p.hosts.length);
}

class WatchedHost {
  /** The one connection to the host, made by the first audit and kept. */
  connection?: Transport;
  /** Failed connection attempts in a row (back-off). */
  failures = 0;
  readonly kept: KeptConnection;

  constructor(
    readonly name: string,
    readonly plays: PreparedPlay[],
    readonly transport: TransportFactory,
  ) {
    this.kept = new KeptConnection(this);
  }

  get target(): ConnectionTarget {
    return this.plays[0].hosts[0].target;
  }
}

async function watchHost(host: WatchedHost, settings: WatchSettings, slots: Slots, audited: (audit: Audit) => void, stop: AbortSignal): Promise<void> {
  const interval = settings.intervalSeconds * 1000;
  const offset = Math.random() * settings.splaySeconds * 1000;
  const start = Date.now() + offset;
  let next = start;
  while (!stop.aborted) {
    await sleepUntil(next, stop);
    if (stop.aborted) return;
    const audit = await slots.run(() => auditHost(host, settings));
    if (stop.aborted) return; // an audit cut short by the stop is no finding
    audited(audit);
    const now = Date.now();
    // a lost host is tried again sooner (back-off), a reachable one at its next slot
    const slot = start + Math.ceil((now - start + 1) / interval) * interval;
    next = host.failures ? Math.min(now + Math.min(FIRST_RETRY_MS * 2 ** (host.failures - 1), interval), slot) : slot;
  }
}

/** One audit: (re)connect if needed, then the check run over the kept connection. */
async function auditHost(host: WatchedHost, settings: WatchSettings): Promise<Audit> {
  const startedAt = Date.now();
  if (!host.connection?.connected) {
    host.connection?.close(); // never two connections to one host
    host.connection = host.transport(host.target);
    try {
      await host.connection.connect();
    } catch (error) {
      host.connection.close();
      host.failures++;
      return { result: unreachable(host, messageOf(error), startedAt), errorClass: classify(error), startedAt };
    }
  }
  const run = await execute(host.plays, { ...settings, check: true }, () => host.kept, silent);
  const result = run.hosts[0];
  if (!host.connection.connected) {
    // lost during the audit: what it found is not the host's state
    host.failures++;
    return { result: unreachable(host, result.error ?? "lost connection", startedAt), errorClass: "connection_lost", startedAt };
  }
  host.failures = 0;
  return { result, errorClass: result.status === "failed" ? "audit_failed" : "none", startedAt };
}

function unreachable(host: WatchedHost, error: string, startedAt: number): HostResult {
  return { host: host.name, address: host.target.address, status: "unreachable", error, rebooted: false, tasks: [], notes: [], durationMs: Date.now() - startedAt };
}

/** The class of a connection error, for metrics and alerts (the message says the details). */
export function classify(error: unknown): ErrorClass {
  if (error instanceof LostConnection) return "connection_lost";
  if (!(error instanceof UnreachableError)) return "audit_failed";
  const cause = error.cause as (NodeJS.ErrnoException & { level?: string }) | undefined;
  if (/host key/i.test(error.message)) return "host_key";
  if (cause?.code === "ECONNREFUSED") return "refused";
  if (cause?.code === "EHOSTUNREACH" || cause?.code === "ENETUNREACH") return "no_route";
  if (cause?.level === "client-authentication") return "auth";
  if (/timed out/i.test(cause?.message ?? "")) return "timeout";
  return "unreachable";
}

/** The check run's view: nothing shown while it runs (the watch reports what it found). */
const silent: RunView = {
  play: () => {},
  batch: () => {},
  hosts: async (hosts: HostWork[], runOne) => {
    for (const work of hosts) await runOne(work, () => {});
  },
};

/**
 * The host's kept connection as the check run sees it: connecting finds it open, closing
 * leaves it open for the next audit. A check run never moves or reboots a host.
 */
class KeptConnection implements Transport {
  constructor(private readonly host: WatchedHost) {}

  private get inner(): Transport {
    if (!this.host.connection) throw new LostConnection(this.host.name, "lost connection: not connected");
    return this.host.connection;
  }
  get target(): ConnectionTarget {
    return this.host.target;
  }
  get originalAddress(): string {
    return this.host.target.address;
  }
  get connected(): boolean {
    return this.host.connection?.connected ?? false;
  }
  connect(): Promise<void> {
    return this.connected ? Promise.resolve() : Promise.reject(new LostConnection(this.host.name, "lost connection: not connected"));
  }
  close(): void {}
  moveTo(): void {
    throw new Error("a watch audit never moves a host");
  }
  exec(argv: string[], stdin?: string): Promise<ExecResult> {
    return this.inner.exec(argv, stdin);
  }
  run(what: string, argv: string[], stdin?: string): Promise<string> {
    return this.inner.run(what, argv, stdin);
  }
  readFile(path: string): Promise<string | null> {
    return this.inner.readFile(path);
  }
  rebootAndWait(_options: RebootOptions): Promise<void> {
    return Promise.reject(new Error("a watch audit never reboots a host"));
  }
}

/** At most `limit` audits at once. */
class Slots {
  private free: number;
  private readonly waiting: (() => void)[] = [];
  constructor(limit: number) {
    this.free = limit;
  }
  async run<T>(fn: () => Promise<T>): Promise<T> {
    if (this.free > 0) this.free--;
    else await new Promise<void>((resolve) => this.waiting.push(resolve));
    try {
      return await fn();
    } finally {
      const next = this.waiting.shift();
      if (next) next();
      else this.free++;
    }
  }
}

function sleepUntil(when: number, stop: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(done, Math.max(0, when - Date.now()));
    function done() {
      clearTimeout(timer);
      stop.removeEventListener("abort", done);
      resolve();
    }
    stop.addEventListener("abort", done, { once: true });
  });
}
