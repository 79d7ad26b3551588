// provision watch on real sshd hosts: drift shows within a cycle, a host that goes away and
// comes back is told both times, one SSH connection per host all along, the metrics (HTTP
// and textfile) pass Prometheus' own parser (promtool), SIGINT ends it cleanly.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { startFleet, type TestFleet, type TestHost } from "../support/sshd-hosts.js";
import { onCleanup, removeOnCleanup, run } from "../support/processes.js";
import { cacheDir, repoRoot } from "../support/cache.js";
import { CLI } from "./provision-cli.js";

const INTERVAL = 2;
const PORT = 9469;
const PLUGIN = join(repoRoot, "test/fixtures/provision-plugin-motd");
const MESSAGE = "watched by provision";
const PROMTOOL = join(cacheDir(), "tools", "promtool");

let fleet: TestFleet;
let dir: string;
const watchers: Watcher[] = [];

type Line = Record<string, unknown> & { event: string; host?: string; status?: string };

/** The watch, running in the controller namespace: its JSON lines as they come. */
class Watcher {
  readonly lines: Line[] = [];
  private waiters: (() => void)[] = [];
  readonly child: ChildProcess;
  readonly exited: Promise<number | null>;
  stderr = "";

  constructor(args: string[]) {
    // `ip netns exec` execs node: the PID is the watch's own
    this.child = spawn(fleet.controllerArgv(["node", CLI, "watch", ...args])[0], fleet.controllerArgv(["node", CLI, "watch", ...args]).slice(1), {
      cwd: repoRoot,
      stdio: ["ignore", "pipe", "pipe"],
    });
    const unregister = onCleanup("provision watch", () => {
      if (this.child.exitCode === null) this.child.kill("SIGKILL");
    });
    this.exited = new Promise((resolve) =>
      this.child.once("exit", (code) => {
        unregister();
        resolve(code);
      }),
    );
    watchers.push(this);
    this.child.stderr!.on("data", (d) => (this.stderr += d));
    createInterface({ input: this.child.stdout! }).on("line", (text) => {
      this.lines.push(JSON.parse(text) as Line);
      this.waiters.splice(0).forEach((w) => w());
    });
  }

  /** The first line from index `from` on that `match` accepts, waiting up to `ms`. */
  async next(match: (l: Line) => boolean, ms: number, from = 0): Promise<Line & { at: number }> {
    const deadline = Date.now() + ms;
    for (;;) {
      const i = this.lines.findIndex((l, n) => n >= from && match(l));
      if (i >= 0) return { ...this.lines[i], at: i };
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`no such line within ${ms} ms; lines so far:\n${this.lines.map((l) => JSON.stringify(l)).join("\n")}\nstderr: ${this.stderr}`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.waiters.push(() => (clearTimeout(timer), resolve()));
      });
    }
  }
}

const hostLine = (host: TestHost, status: string) => (l: Line) => l.event === "host" && l.host === host.name && l.status === status;

/** Established SSH connections to the host (its own network namespace). */
async function sshConnections(host: TestHost): Promise<number> {
  const r = await run(["ip", "netns", "exec", host.netns, "ss", "-Htn", "state", "established", "( sport = :22 )"]);
  assert.equal(r.code, 0, r.stderr);
  return r.stdout.split("\n").filter((l) => l.trim()).length;
}

/** Connections sshd accepted over the host's life (its log, appended across restarts). */
function accepted(host: TestHost): number {
  return readFileSync(join(fleet.dir, `${host.name}.log`), "utf8")
    .split("\n")
    .filter((l) => l.includes("Accepted publickey")).length;
}

async function scrape(): Promise<string> {
  const r = await run(
    fleet.controllerArgv([
      "python3",
      "-c",
      "import sys, urllib.request; sys.stdout.write(urllib.request.urlopen(sys.argv[1]).read().decode())",
      `http://127.0.0.1:${PORT}/metrics`,
    ]),
  );
  assert.equal(r.code, 0, r.stderr);
  return r.stdout;
}

async function promtoolCheck(text: string, what: string): Promise<void> {
  const r = await run([PROMTOOL, "check", "metrics"], { input: text });
  assert.equal(r.code, 0, `promtool check metrics on the ${what}:\n${r.stdout}${r.stderr}\n--- the text ---\n${text}`);
}

/** A sample's value: `name{labels…}` where every given label matches. */
function sample(text: string, name: string, labels: Record<string, string>): number | undefined {
  for (const line of text.split("\n")) {
    const m = /^([a-z_]+)\{([^}]*)\} (\S+)$/.exec(line);
    if (!m || m[1] !== name) continue;
    const have = Object.fromEntries([...m[2].matchAll(/(\w+)="([^"]*)"/g)].map((x) => [x[1], x[2]]));
    if (Object.entries(labels).every(([k, v]) => have[k] === v)) return Number(m[3]);
  }
  return undefined;
}

before(async () => {
  assert.ok(existsSync(PROMTOOL), `${PROMTOOL} is missing: run bash test/setup.sh (it extracts promtool from Debian's prometheus package)`);
  fleet = await startFleet({ count: 3, prefix: "w" });
  dir = mkdtempSync(join(tmpdir(), "provision-watch-"));
  removeOnCleanup(dir);
  for (const h of fleet.hosts) await fleet.exec(h, ["sh", "-c", 'printf "%s\\n" "$1" > /etc/motd', "sh", MESSAGE]);
});

after(async () => {
  for (const w of watchers) if (w.child.exitCode === null && w.child.signalCode === null) w.child.kill("SIGKILL");
  await Promise.all(watchers.map((w) => w.exited));
  await fleet?.stop();
});

test("watch: drift within a cycle, a host lost and back, one connection per host, metrics pass promtool, SIGINT ends it cleanly", async () => {
  const inventory = join(dir, "hosts.yaml");
  fleet.writeInventory(inventory);
  const playbook = join(dir, "motd.yaml");
  writeFileSync(playbook, `- hosts: pis\n  plugins: [${PLUGIN}]\n  tasks:\n    - motd: { message: ${MESSAGE} }\n`);
  const metricsFile = join(dir, "provision.prom");
  const watcher = new Watcher(["--inventory", inventory, playbook, "--interval", String(INTERVAL), "--json", "--metrics", `:${PORT}`, "--metrics-file", metricsFile]);
  const [h1, h2, h3] = fleet.hosts;

  const start = await watcher.next((l) => l.event === "watching", 20_000);
  assert.equal(start.hosts, 3);
  assert.equal(start.metrics, `http://127.0.0.1:${PORT}/metrics`);
  for (const h of fleet.hosts) await watcher.next(hostLine(h, "ok"), 20_000);

  // drift: a file changed on a host shows within one cycle (plus the audit's own time)
  await fleet.exec(h1, ["sh", "-c", "echo changed by hand > /etc/motd"]);
  const changedAt = Date.now();
  const drift = await watcher.next(hostLine(h1, "drift"), (2 * INTERVAL + 3) * 1000);
  const seenAfter = Date.now() - changedAt;
  const foundBy = Date.parse(drift.time as string) - changedAt; // when the audit that found it started
  console.log(`drift on ${h1.name} found by the audit that started ${foundBy} ms after the change, reported after ${seenAfter} ms (interval ${INTERVAL} s)`);
  assert.ok(foundBy <= INTERVAL * 1000 + 100, `the first audit of the next cycle finds it (started ${foundBy} ms after the change)`);
  assert.ok(seenAfter <= INTERVAL * 1000 + 5000, `and reports it then (after ${seenAfter} ms)`);
  assert.equal(drift.previous, "ok");
  assert.equal(drift.changes_pending, 1);
  assert.deepEqual(drift.pending, ["~ set the message of the day"]);

  // metrics over HTTP, parsed by Prometheus' own parser
  const scraped = await scrape();
  await promtoolCheck(scraped, "HTTP scrape");
  assert.equal(sample(scraped, "provision_host_drift", { host: h1.name }), 1);
  assert.equal(sample(scraped, "provision_host_drift", { host: h3.name }), 0);
  assert.equal(sample(scraped, "provision_changes_pending", { host: h1.name }), 1);
  assert.equal(sample(scraped, "provision_host_up", { host: h2.name }), 1);
  assert.equal(sample(scraped, "provision_host_last_error", { host: h2.name, error_class: "none" }), 1);
  const auditedAt = sample(scraped, "provision_last_audit_timestamp_seconds", { host: h3.name })!;
  assert.ok(Math.abs(auditedAt - Date.now() / 1000) < 3 * INTERVAL, `last audit ${auditedAt} is recent`);
  assert.ok(sample(scraped, "provision_audit_duration_seconds", { host: h3.name })! > 0);
  assert.match(scraped, /^process_resident_memory_bytes \d+/m, "the controller's own process metrics");

  // a host that goes away is told, and again when it comes back
  const mark = watcher.lines.length;
  await fleet.stopHost(h2);
  const lost = await watcher.next(hostLine(h2, "unreachable"), (2 * INTERVAL + 3) * 1000, mark);
  assert.equal(lost.up, false);
  assert.ok(["connection_lost", "refused"].includes(lost.error_class as string), `error class ${String(lost.error_class)}`);
  await new Promise((r) => setTimeout(r, 1500)); // the textfile lags by up to a second
  const file = readFileSync(metricsFile, "utf8");
  await promtoolCheck(file, "textfile");
  assert.equal(sample(file, "provision_host_up", { host: h2.name }), 0);
  assert.equal(sample(file, "provision_host_last_error", { host: h2.name, error_class: lost.error_class as string }), 1);
  assert.doesNotMatch(file, /^process_/m, "the textfile holds provision's metrics only (node_exporter has its own process_*)");

  await fleet.startHost(h2);
  const back = await watcher.next(hostLine(h2, "ok"), 20_000, lost.at + 1);
  assert.equal(back.previous, "unreachable");
  assert.equal(sample(await scrape(), "provision_host_up", { host: h2.name }), 1);

  // a few more cycles: still one connection per host, none made again
  await new Promise((r) => setTimeout(r, 2 * INTERVAL * 1000 + 500));
  for (const h of fleet.hosts) assert.equal(await sshConnections(h), 1, `${h.name}: one established SSH connection`);
  assert.deepEqual(
    fleet.hosts.map((h) => [h.name, accepted(h)]),
    [
      [h1.name, 1],
      [h2.name, 2], // one before it went away, one after it came back
      [h3.name, 1],
    ],
  );
  const audits = sample(await scrape(), "provision_audits_total", { host: h3.name, status: "ok" })!;
  assert.ok(audits >= 4, `${h3.name} audited again and again over one connection (${audits} audits)`);
  assert.equal(watcher.lines.filter((l) => l.host === h3.name).length, 1, "only changes are reported: h3 never changed");

  // SIGINT: a last line, exit 0, every connection closed
  process.kill(watcher.child.pid!, "SIGINT");
  assert.equal(await watcher.exited, 0, watcher.stderr);
  const last = watcher.lines.at(-1)!;
  assert.equal(last.event, "stopped");
  assert.equal(last.connections_closed, true);
  assert.equal(watcher.stderr, "");
  for (let i = 0; i < 20 && (await Promise.all(fleet.hosts.map(sshConnections))).some((n) => n > 0); i++) await new Promise((r) => setTimeout(r, 100));
  assert.deepEqual(await Promise.all(fleet.hosts.map(sshConnections)), [0, 0, 0]);
  assert.ok(!existsSync(`${metricsFile}.tmp-${watcher.child.pid}`), "no temporary textfile left");
});
