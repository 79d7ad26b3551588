// `provision watch`: the continuous audit's command line: arguments, the live table (or
// plain lines, or JSON lines), the metrics endpoint and textfile, SIGINT.
import { createServer, type Server } from "node:http";
import { closeSync, fsyncSync, openSync, renameSync, rmSync, writeSync } from "node:fs";
import { parseArgs } from "node:util";
import { Registry } from "prom-client";
import { unmatchedHosts, type RunSettings } from "../core/run/run.js";
import { watch, type Audit } from "../core/run/watch.js";
import { changeLine, changed, hostState, jsonLine, renderTable, type HostState } from "../core/report/watch.js";
import { FleetMetrics, processRegistry } from "../core/report/metrics.js";
import { UsageError, quote } from "../core/errors.js";
import type { TransportFactory } from "../core/transport/transport.js";
import { loadPlays } from "./load.js";
import { checkOutputFile } from "./output-file.js";

export const WATCH_HELP = `Usage: provision watch --inventory FILE [PLAYBOOK...] [options]

Audit the hosts continuously: the audit of --check (nothing is changed), every
--interval seconds, over one SSH connection per host kept open between audits (a
lost host is tried again with back-off: 1 s, doubling, up to the interval). Only
changes are reported: a live table on a terminal, else one line per change, or
JSON lines with --json. Without a playbook, only reachability is watched.
Ctrl-C (SIGINT) or SIGTERM stops it: connections closed, a last line, exit 0.

Options:
  -i, --inventory FILE      inventory YAML (required)
      --interval SECONDS    time between two audits of a host (default 60)
      --splay SECONDS       shift each host's audits by a random offset below this,
                            to spread the load (default 0: all at once, --forks at a time)
  -f, --forks N             audits in flight at once (default 50)
  -l, --limit PATTERN       only hosts matching PATTERN
  -t, --tags LIST           audit only tasks with one of these tags
      --skip-tags LIST      skip tasks with any of these tags
      --json                one JSON object per line: a start line, one per change, a last line
      --metrics [ADDR]:PORT serve Prometheus metrics at http://ADDR:PORT/metrics
                            (ADDR defaults to 127.0.0.1; 0.0.0.0 or [::] for every address)
      --metrics-file FILE   write the metrics to FILE (atomically, after audits) for
                            node_exporter's textfile collector (name it *.prom)
      --known-hosts FILE    known_hosts file (default: inventory's known_hosts_file or ~/.ssh/known_hosts)
      --accept-new-host-keys  trust and record keys of hosts not yet in known_hosts
  -h, --help                show this help`;

const OPTIONS = {
  inventory: { type: "string", short: "i" },
  interval: { type: "string" },
  splay: { type: "string" },
  forks: { type: "string", short: "f" },
  limit: { type: "string", short: "l" },
  tags: { type: "string", short: "t" },
  "skip-tags": { type: "string" },
  json: { type: "boolean" },
  metrics: { type: "string" },
  "metrics-file": { type: "string" },
  "known-hosts": { type: "string" },
  "accept-new-host-keys": { type: "boolean" },
  help: { type: "boolean", short: "h" },
} as const;

/** The textfile is rewritten at most this often (and once more at the end). */
const FILE_EVERY_MS = 1000;

function seconds(option: string, value: string | undefined, fallback: number, min: number): number {
  if (value === undefined) return fallback;
  const n = Number(value);
  if (!Number.isFinite(n) || n < min) throw new UsageError(`--${option} must be a number of seconds, at least ${min} (got ${quote(value)}).`);
  return n;
}

function list(value: string | undefined): string[] {
  return (value ?? "")
    .split(",")
    .map((s) => s.trim())
    .filter(Boolean);
}

/** "--metrics :9469", "0.0.0.0:9469", "[::1]:9469": where to listen (loopback unless told). */
export function listenAddress(value: string): { host: string; port: number } {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:[\]]*)):(\d{1,5})$/.exec(value);
  const port = Number(m?.[3]);
  if (!m || port > 65535) throw new UsageError(`--metrics must be [ADDRESS]:PORT, e.g. :9469 (loopback) or 0.0.0.0:9469 (got ${quote(value)}).`);
  return { host: m[1] ?? (m[2] || "127.0.0.1"), port };
}

export async function watchCommand(argv: string[], transport: TransportFactory): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({ args: argv, options: OPTIONS, allowPositionals: true, strict: true });
  } catch (error) {
    throw new UsageError(`${(error as Error).message}. See provision watch --help.`);
  }
  const { values, positionals } = parsed;
  if (values.help) return (void console.log(WATCH_HELP), 0);
  if (!values.inventory) throw new UsageError("--inventory FILE is required. See provision watch --help.");
  const intervalSeconds = seconds("interval", values.interval, 60, 1);
  const splaySeconds = seconds("splay", values.splay, 0, 0);
  const forks = values.forks === undefined ? 50 : Number(values.forks);
  if (!Number.isInteger(forks) || forks < 1) throw new UsageError(`--forks must be a positive whole number (got ${quote(values.forks)}).`);
  const listen = values.metrics === undefined ? undefined : listenAddress(values.metrics);
  const metricsFile = values["metrics-file"];
  if (metricsFile !== undefined) checkOutputFile("--metrics-file", metricsFile);

  const settings: RunSettings = {
    check: true,
    limit: values.limit,
    forks,
    tags: list(values.tags),
    skipTags: list(values["skip-tags"]),
    acceptNewHostKeys: values["accept-new-host-keys"] ?? false,
    breakLock: false,
    knownHostsFile: values["known-hosts"],
    renderer: "silent",
  };
  const { inventory, plays } = await loadPlays(values.inventory, positionals, settings);
  unmatchedHosts(inventory, plays, settings.limit).forEach((w) => console.error(`provision: warning: ${w}`));
  const total = new Set(plays.flatMap((p) => p.hosts.map((h) => h.name))).size;
  if (!total) {
    console.error("provision: no hosts matched: nothing to watch.");
    return 1;
  }

  const metrics = new FleetMetrics();
  const server = listen ? await serveMetrics(listen, Registry.merge([metrics.registry, processRegistry()])) : undefined;
  const fileWriter = metricsFile ? throttledWriter(metricsFile, () => metrics.text()) : undefined;
  const out = output(values.json ?? false, total, intervalSeconds);
  const where = server ? metricsUrl(server) : undefined;
  out.start({ hosts: total, interval_s: intervalSeconds, splay_s: splaySeconds, ...(where ? { metrics: where } : {}), ...(metricsFile ? { metrics_file: metricsFile } : {}) });

  const states = new Map<string, HostState>();
  let audits = 0;
  const audited = (audit: Audit) => {
    audits++;
    const state = hostState(audit);
    const before = states.get(state.host);
    states.set(state.host, state);
    metrics.update(state);
    fileWriter?.schedule();
    out.audited(state, before, changed(before, state), states);
  };

  const stop = new AbortController();
  const onSignal = () => stop.abort();
  process.once("SIGINT", onSignal);
  process.once("SIGTERM", onSignal);
  const started = Date.now();
  try {
    await watch(plays, { ...settings, intervalSeconds, splaySeconds }, transport, audited, stop.signal);
  } finally {
    process.off("SIGINT", onSignal);
    process.off("SIGTERM", onSignal);
    await new Promise<void>((resolve) => (server ? server.close(() => resolve()) : resolve()));
    server?.closeAllConnections();
    await fileWriter?.flush();
  }
  out.stop({ hosts: total, audits, seconds: Math.round((Date.now() - started) / 1000), states: [...states.values()] });
  return 0;
}

interface Output {
  start(info: Record<string, unknown>): void;
  audited(state: HostState, before: HostState | undefined, changed: boolean, states: Map<string, HostState>): void;
  stop(info: { hosts: number; audits: number; seconds: number; states: HostState[] }): void;
}

/** JSON lines (--json), the live table (a terminal) or one plain line per change. */
function output(json: boolean, total: number, intervalSeconds: number): Output {
  const lastLine = (i: { hosts: number; audits: number; seconds: number }) =>
    `provision watch: stopped after ${i.seconds}s and ${i.audits} audit(s) of ${i.hosts} host(s); every connection closed.\n`;
  if (json)
    return {
      start: (info) => process.stdout.write(JSON.stringify({ time: new Date().toISOString(), event: "watching", ...info }) + "\n"),
      audited: (state, before, changed) => changed && process.stdout.write(jsonLine(state, before) + "\n"),
      stop: ({ states, ...i }) =>
        process.stdout.write(JSON.stringify({ time: new Date().toISOString(), event: "stopped", ...i, ...countStates(states), connections_closed: true }) + "\n"),
    };
  if (!process.stdout.isTTY)
    return {
      start: (info) => process.stdout.write(`provision watch: ${total} host(s), audit every ${intervalSeconds}s${info.metrics ? `, metrics at ${String(info.metrics)}` : ""}\n`),
      audited: (state, before, changed) => changed && process.stdout.write(changeLine(state, before) + "\n"),
      stop: (i) => process.stdout.write(lastLine(i)),
    };
  let drawn = 0;
  let latest = new Map<string, HostState>();
  const draw = () => {
    // a line wider than the terminal would wrap and throw off the redraw's line count
    const width = process.stdout.columns || 80;
    const table = renderTable([...latest.values()], total, Date.now(), process.stdout.rows || 24, intervalSeconds)
      .split("\n")
      .map((line) => (line.length > width ? `${line.slice(0, width - 1)}…` : line))
      .join("\n");
    process.stdout.write(`${drawn ? `\x1b[${drawn}F\x1b[J` : ""}${table}\n`);
    drawn = table.split("\n").length;
  };
  const ticker = setInterval(draw, 1000).unref();
  return {
    start: () => draw(),
    audited: (_state, _before, changed, states) => {
      latest = states;
      if (changed) draw();
    },
    stop: (i) => {
      clearInterval(ticker);
      draw();
      process.stdout.write(lastLine(i));
    },
  };
}

function countStates(states: HostState[]): Record<string, number> {
  const counts = { ok: 0, drift: 0, failed: 0, unreachable: 0 };
  for (const s of states) counts[s.status]++;
  return counts;
}

function serveMetrics(listen: { host: string; port: number }, registry: Registry): Promise<Server> {
  const server = createServer((request, response) => {
    if (request.method !== "GET" || (request.url ?? "").split("?")[0] !== "/metrics") {
      response.writeHead(404, { "content-type": "text/plain" }).end("provision watch serves /metrics only\n");
      return;
    }
    registry.metrics().then(
      (text) => response.writeHead(200, { "content-type": registry.contentType }).end(text),
      (error: Error) => response.writeHead(500, { "content-type": "text/plain" }).end(`${error.message}\n`),
    );
  });
  return new Promise((resolve, reject) => {
    server.once("error", (error: NodeJS.ErrnoException) =>
      reject(new UsageError(`--metrics ${listen.host}:${listen.port}: cannot listen there (${error.code ?? error.message}). Choose another address or port.`)),
    );
    server.listen(listen.port, listen.host, () => resolve(server));
  });
}

function metricsUrl(server: Server): string {
  const a = server.address();
  if (!a || typeof a === "string") return String(a);
  return `http://${a.family === "IPv6" ? `[${a.address}]` : a.address}:${a.port}/metrics`;
}

/** The textfile: written whole to a temporary file, synced, renamed over FILE (never half a file). */
function throttledWriter(file: string, text: () => Promise<string>) {
  let timer: NodeJS.Timeout | undefined;
  let writing: Promise<void> = Promise.resolve();
  const write = () => {
    timer = undefined;
    writing = writing
      .then(async () => writeAtomically(file, await text()))
      .catch((error: NodeJS.ErrnoException) => {
        console.error(`provision: cannot write the metrics to ${quote(file, 200)} (${error.code ?? error.message}).`);
      });
  };
  return {
    schedule: () => void (timer ??= setTimeout(write, FILE_EVERY_MS)),
    flush: async () => {
      if (timer) clearTimeout(timer);
      write();
      await writing;
    },
  };
}

export function writeAtomically(file: string, content: string): void {
  const temp = `${file}.tmp-${process.pid}`;
  try {
    const fd = openSync(temp, "w", 0o644);
    try {
      writeSync(fd, content);
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(temp, file);
  } catch (error) {
    rmSync(temp, { force: true });
    throw error;
  }
}
