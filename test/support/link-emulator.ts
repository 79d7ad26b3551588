// A userspace link emulator for the benchmark: a TCP relay that gives every connection
// between the controller and a test host the round trip, jitter and loss of a real link.
//
// Why userspace: this machine's kernel has no delaying qdisc (no sch_netem, sch_fq, sch_etf,
// only tbf/htb/pfifo/bfifo) and loads no modules, so `tc qdisc … netem` cannot be used.
//
// The model, per TCP connection (one relay process serves every host):
// - setup: the upstream connection to the host is opened 1.5 round trips after the client's
//   connect (SYN, SYN-ACK, then the ACK that carries the client's first bytes), so the host
//   sees the client's first byte and the client the host's first byte (the SSH banner)
//   where they would on a real link; a lost SYN or SYN-ACK adds Linux's initial RTO (1 s);
// - data: every chunk read from one side is written to the other one one-way delay later
//   (half a round trip drawn uniformly from RTT ± jitter, per chunk), never before a chunk
//   read earlier in the same direction (TCP delivers in order: a late chunk holds back the
//   ones behind it, which is also what head-of-line blocking does);
// - loss: each 1448-byte segment of a chunk is lost with the profile's probability; a chunk
//   with a lost segment arrives one retransmission timeout later (Linux's minimum RTO, 200 ms;
//   the retransmission itself takes the same one-way delay) — the bytes are never lost, as
//   TCP would retransmit them.
// Not modelled: bandwidth and TCP's congestion window (a real fresh connection sends ~14 KB per
// round trip at first; here any amount arrives after one delay), reordering below TCP, and
// loss recovery faster than an RTO (fast retransmit, tail loss probes).
//
//   node dist/test/support/link-emulator.js PROFILE LISTEN_HOST:PORT=TARGET_HOST:PORT …
// prints "ready" once every listener is up, and its counters as one JSON line on SIGTERM.
import { createServer, connect, type Server, type Socket } from "node:net";
import { fileURLToPath } from "node:url";

export interface LinkProfile {
  name: string;
  rttMs: number;
  jitterMs: number; // the round trip is drawn uniformly from rttMs ± jitterMs
  loss: number; // probability that one segment is lost
}

/** `lan` is the fleet's bridge as it is (no relay); the others go through the emulator. */
export const LINK_PROFILES: Record<string, LinkProfile> = {
  lan: { name: "lan", rttMs: 0, jitterMs: 0, loss: 0 },
  wifi: { name: "wifi", rttMs: 10, jitterMs: 5, loss: 0.001 },
  lte: { name: "lte", rttMs: 60, jitterMs: 20, loss: 0.01 },
};

export const SEGMENT_BYTES = 1448; // a TCP segment's payload over Ethernet with timestamps
export const RTO_MIN_MS = 200; // Linux's TCP_RTO_MIN
export const SYN_RTO_MS = 1000; // Linux's initial RTO, for a lost SYN or SYN-ACK

export type Random = () => number; // uniform in [0, 1)

/** One way of one round trip: half of RTT ± jitter, never negative. */
export function oneWayMs(p: LinkProfile, random: Random): number {
  return Math.max(0, (p.rttMs + (2 * random() - 1) * p.jitterMs) / 2);
}

/** The extra time a chunk of `bytes` takes when one of its segments is lost (one RTO), else 0. */
export function lossPenaltyMs(p: LinkProfile, bytes: number, random: Random): number {
  const segments = Math.max(1, Math.ceil(bytes / SEGMENT_BYTES));
  for (let i = 0; i < segments; i++) if (random() < p.loss) return RTO_MIN_MS;
  return 0;
}

/** How long after the client's connect the host sees the connection (1.5 round trips, plus an RTO per lost handshake packet). */
export function connectDelayMs(p: LinkProfile, random: Random): number {
  const lost = (random() < p.loss ? 1 : 0) + (random() < p.loss ? 1 : 0);
  return oneWayMs(p, random) + oneWayMs(p, random) + oneWayMs(p, random) + lost * SYN_RTO_MS;
}

/** Release times for one direction of one connection: delayed, and never out of order. */
export class DirectionSchedule {
  private last = 0;
  lost = 0;
  constructor(
    private readonly profile: LinkProfile,
    private readonly random: Random,
  ) {}

  /** When a chunk of `bytes` read at `nowMs` is to be written on the other side. */
  release(nowMs: number, bytes: number): number {
    const penalty = lossPenaltyMs(this.profile, bytes, this.random);
    if (penalty) this.lost++;
    this.last = Math.max(this.last, nowMs + oneWayMs(this.profile, this.random) + penalty);
    return this.last;
  }
}

// --- the relay ------------------------------------------------------------------------------

export interface RelayCounters {
  connections: number;
  chunks: number;
  bytes: number;
  delayedByLoss: number;
  handshakeLosses: number;
}

interface Pending {
  at: number;
  data: Buffer | null; // null: the sender closed its side
}

/** One direction: chunks wait for their release time, then are written in order. */
class Pipe {
  private queue: Pending[] = [];
  private timer: NodeJS.Timeout | undefined;
  ready = false;

  constructor(
    private readonly to: Socket,
    private readonly schedule: DirectionSchedule,
    private readonly counters: RelayCounters,
  ) {}

  push(data: Buffer | null): void {
    const bytes = data?.length ?? 0;
    if (data) {
      this.counters.chunks++;
      this.counters.bytes += bytes;
    }
    const lostBefore = this.schedule.lost;
    this.queue.push({ at: this.schedule.release(Date.now(), bytes), data });
    this.counters.delayedByLoss += this.schedule.lost - lostBefore;
    this.pump();
  }

  pump(): void {
    if (!this.ready || this.timer) return;
    while (this.queue.length && this.queue[0].at <= Date.now()) {
      const { data } = this.queue.shift()!;
      if (data) this.to.write(data);
      else this.to.end();
    }
    if (this.queue.length) {
      this.timer = setTimeout(
        () => {
          this.timer = undefined;
          this.pump();
        },
        Math.max(0, this.queue[0].at - Date.now()),
      );
    }
  }

  stop(): void {
    clearTimeout(this.timer);
    this.queue = [];
  }
}

/** How long a closed side waits before it tears down the other: long enough for what is still in flight. */
const lingerMs = (p: LinkProfile) => 10 * (p.rttMs + p.jitterMs) + RTO_MIN_MS;

function relayConnection(client: Socket, target: { host: string; port: number }, p: LinkProfile, random: Random, counters: RelayCounters): void {
  counters.connections++;
  client.setNoDelay(true);
  let host: Socket | undefined;
  let up: Pipe | undefined;
  let down: Pipe | undefined;
  let closed = false;
  const early: (Buffer | null)[] = []; // what the client sent before the host connection exists
  const close = () => {
    if (closed) return;
    closed = true;
    up?.stop();
    down?.stop();
    client.destroy();
    host?.destroy();
  };
  const closeSoon = () => setTimeout(close, lingerMs(p)).unref();
  client.on("data", (d) => (up ? up.push(d) : early.push(d)));
  client.on("end", () => (up ? up.push(null) : early.push(null)));
  client.on("error", close);
  client.on("close", closeSoon);
  const delay = connectDelayMs(p, random);
  if (delay >= SYN_RTO_MS) counters.handshakeLosses++;
  setTimeout(() => {
    if (closed) return;
    const s = connect({ port: target.port, host: target.host, allowHalfOpen: true });
    host = s;
    s.setNoDelay(true);
    up = new Pipe(s, new DirectionSchedule(p, random), counters);
    down = new Pipe(client, new DirectionSchedule(p, random), counters);
    s.on("connect", () => {
      // what the client sent during the handshake arrives with the handshake's last packet
      for (const d of early.splice(0)) {
        if (d) s.write(d);
        else s.end();
      }
      up!.ready = down!.ready = true;
      up!.pump();
      down!.pump();
    });
    s.on("data", (d) => down!.push(d));
    s.on("end", () => down!.push(null));
    s.on("error", close);
    s.on("close", closeSoon);
  }, delay);
}

export interface Route {
  listen: { host: string; port: number };
  target: { host: string; port: number };
}

export interface Relay {
  counters: RelayCounters;
  /** the port each route listens on (as asked, or the one the system chose for port 0) */
  ports: number[];
  close(): Promise<void>;
}

export async function startRelay(p: LinkProfile, routes: Route[], random: Random = Math.random): Promise<Relay> {
  const counters: RelayCounters = { connections: 0, chunks: 0, bytes: 0, delayedByLoss: 0, handshakeLosses: 0 };
  const servers: Server[] = [];
  for (const r of routes) {
    const server = createServer({ noDelay: true, allowHalfOpen: true }, (c) => relayConnection(c, r.target, p, random, counters));
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen({ host: r.listen.host, port: r.listen.port, backlog: 1024 }, resolve);
    });
    servers.push(server);
  }
  const ports = servers.map((server) => {
    const a = server.address();
    return typeof a === "object" && a ? a.port : 0;
  });
  return { counters, ports, close: () => Promise.all(servers.map((s) => new Promise<void>((resolve) => s.close(() => resolve())))).then(() => undefined) };
}

export function parseRoute(text: string): Route {
  const m = /^([\d.]+):(\d+)=([\d.]+):(\d+)$/.exec(text);
  if (!m) throw new Error(`link-emulator: a route looks like LISTEN_IP:PORT=TARGET_IP:PORT, got ${JSON.stringify(text)}`);
  return { listen: { host: m[1], port: Number(m[2]) }, target: { host: m[3], port: Number(m[4]) } };
}

async function main(argv: string[]): Promise<void> {
  const [name, ...routeArgs] = argv;
  const profile = LINK_PROFILES[name];
  if (!profile || profile.rttMs === 0)
    throw new Error(
      `link-emulator: unknown profile ${JSON.stringify(name)} (one of ${Object.keys(LINK_PROFILES)
        .filter((k) => k !== "lan")
        .join(", ")})`,
    );
  const relay = await startRelay(profile, routeArgs.map(parseRoute));
  process.on("SIGTERM", () => {
    process.stdout.write(`${JSON.stringify(relay.counters)}\n`, () => process.exit(0));
  });
  console.log("ready");
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  main(process.argv.slice(2)).catch((e: unknown) => {
    console.error(e instanceof Error ? e.message : String(e));
    process.exit(1);
  });
}
