// Benchmark: provision --check against ansible-playbook --check, the same audit of the
// same hosts, side by side, for fleets of 10, 50 and 100 real sshd hosts.
//
//   npm run bench                       (bench/run.sh: installs ansible and time if missing, builds)
//   node dist/bench/run.js --sizes 10,50,100 --reps 3 --out bench/results.md
//
// Each size gets a fresh fleet (test/support/sshd-hosts.ts: one OpenSSH server per network
// namespace); both tools run inside the fleet's controller namespace, so all traffic stays
// inside namespaces this script made. Measured per run, under /usr/bin/time:
//   wall s, cpu s (user+sys of the tool and every process it waited for; for Ansible also
//   its ssh ControlPersist masters, which detach: their CPU is read from /proc before they
//   are stopped by PID), peak MB (%M: the largest single process), tree MB (the peak of the
//   summed PSS of the tool's processes, sampled every 250 ms) and machine cpu s (all CPU
//   used on the machine during the run, the hosts' sshd/sh/python included).
// The reported value is the median over --reps runs (the tools alternate who goes first).
import { spawn, spawnSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { cpus, loadavg, tmpdir, totalmem } from "node:os";
import { dirname, join } from "node:path";
import { parseArgs } from "node:util";
import { parse, stringify } from "yaml";
import { startFleet, type TestFleet } from "../test/support/sshd-hosts.js";
import { repoRoot } from "../test/support/cache.js";
import { summary as provisionSummary } from "../test/integration/provision-cli.js";
import { renderInterfaces } from "../modules/bond/ifupdown.js";
import type { BondArgs } from "../modules/bond/model.js";

const CLI = join(repoRoot, "dist", "core", "cli.js");
const AUDIT = join(repoRoot, "bench", "audit.yaml");
const AUDIT_ANSIBLE = join(repoRoot, "bench", "audit-ansible.yaml");
const TICKS = 100; // USER_HZ on Linux

type Tool = "provision" | "ansible" | "provision connect" | "ssh true";
interface Sample {
  tool: Tool;
  wall: number;
  cpu: number;
  peakMb: number;
  treeMb: number;
  machineCpu: number;
  hostsCpu: number;
  code: number;
  verdict: string;
  output: string;
  detached: number;
}

const { values: opts } = parseArgs({
  options: {
    sizes: { type: "string", default: process.env.BENCH_SIZES ?? "10,50,100" },
    reps: { type: "string", default: process.env.BENCH_REPS ?? "3" },
    out: { type: "string", default: join(repoRoot, "bench", "results.md") },
    "cpu-prof": { type: "string" },
    keep: { type: "boolean", default: false },
  },
});
const sizes = opts.sizes!.split(",").map(Number);
const reps = Number(opts.reps);
if (sizes.some((n) => !Number.isInteger(n) || n < 1) || !Number.isInteger(reps) || reps < 1) throw new Error("--sizes N,N,... and --reps N must be positive whole numbers");

// --- measuring --------------------------------------------------------------------------

function procStat(pid: number): { ppid: number; ticks: number } | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return { ppid: Number(f[1]), ticks: Number(f[11]) + Number(f[12]) };
  } catch { return null; }
}

function pids(): number[] {
  return readdirSync("/proc").filter((d) => /^\d+$/.test(d)).map(Number);
}

function cmdline(pid: number): string {
  try { return readFileSync(`/proc/${pid}/cmdline`, "utf8").replace(/\0/g, " "); } catch { return ""; }
}

function pssKb(pid: number): number {
  try { return Number(/^Pss:\s+(\d+)/m.exec(readFileSync(`/proc/${pid}/smaps_rollup`, "utf8"))?.[1] ?? 0); } catch { return 0; }
}

/** Every process below root, plus detached ones whose command line mentions `marker`. */
function processTree(root: number, marker?: string): number[] {
  const all = pids();
  const children = new Map<number, number[]>();
  for (const pid of all) {
    const s = procStat(pid);
    if (s) children.set(s.ppid, [...(children.get(s.ppid) ?? []), pid]);
  }
  const tree: number[] = [];
  const walk = (pid: number) => { tree.push(pid); for (const c of children.get(pid) ?? []) walk(c); };
  walk(root);
  if (marker) for (const pid of all) if (!tree.includes(pid) && cmdline(pid).includes(marker)) tree.push(pid);
  return tree;
}

/** CPU seconds the test hosts spent so far: each host's sshd is PID 1 of its PID namespace and
 *  reaps every process of the host, so the host's CPU time is what its live processes used
 *  plus what they and sshd collected from reaped children (utime+stime+cutime+cstime). */
function hostsCpu(hostPids: number[]): number {
  if (!hostPids.length) return 0;
  const children = new Map<number, number[]>();
  const times = new Map<number, number>();
  for (const pid of pids()) {
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
      const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      const ppid = Number(f[1]);
      children.set(ppid, [...(children.get(ppid) ?? []), pid]);
      times.set(pid, Number(f[11]) + Number(f[12]) + Number(f[13]) + Number(f[14]));
    } catch { /* gone */ }
  }
  let ticks = 0;
  const walk = (pid: number) => { ticks += times.get(pid) ?? 0; for (const c of children.get(pid) ?? []) walk(c); };
  for (const pid of hostPids) walk(pid);
  return ticks / TICKS;
}

/** CPU seconds the whole machine spent (all states but idle and iowait). */
function machineCpu(): number {
  const f = readFileSync("/proc/stat", "utf8").split("\n")[0].trim().split(/\s+/).slice(1).map(Number);
  const [user, nice, system, , , irq, softirq, steal] = f;
  return (user + nice + system + irq + softirq + steal) / TICKS;
}

/**
 * Wait (up to `limitS`) until the machine is quiet: under 10% of its cores busy for a whole
 * second, so leftovers of whatever ran before (a test run, a lab) do not end up in the timings.
 * Returns the seconds waited, or null if it never got quiet.
 */
async function waitForQuietMachine(limitS = 120): Promise<number | null> {
  const start = Date.now();
  while (Date.now() - start < limitS * 1000) {
    const before = machineCpu();
    await new Promise((r) => setTimeout(r, 1000));
    if ((machineCpu() - before) / cpus().length < 0.1) return (Date.now() - start) / 1000;
  }
  return null;
}

/** Run argv under /usr/bin/time; sample the summed PSS of its process tree. */
async function measure(tool: Tool, argv: string[], env: NodeJS.ProcessEnv, log: string, hostPids: number[], detachedMarker?: string): Promise<Omit<Sample, "verdict">> {
  const timeFile = `${log}.time`;
  const machine0 = machineCpu();
  const hosts0 = hostsCpu(hostPids);
  const child = spawn("/usr/bin/time", ["-f", "%e %U %S %M", "-o", timeFile, ...argv], { env, cwd: dirname(log), stdio: ["ignore", "pipe", "pipe"] });
  let output = "";
  child.stdout!.on("data", (d) => (output += d));
  child.stderr!.on("data", (d) => (output += d));
  let treePeakKb = 0;
  const sample = () => {
    if (!child.pid) return;
    const kb = processTree(child.pid, detachedMarker).filter((p) => p !== child.pid).reduce((sum, p) => sum + pssKb(p), 0);
    treePeakKb = Math.max(treePeakKb, kb);
  };
  const timer = setInterval(sample, 250);
  const code: number = await new Promise((resolve, reject) => {
    child.on("error", reject);
    child.on("close", (c) => resolve(c ?? 1));
  });
  clearInterval(timer);
  writeFileSync(log, output);
  const [wall, user, sys, maxKb] = readFileSync(timeFile, "utf8").trim().split("\n").pop()!.split(" ").map(Number);
  const detached = detachedMarker ? stopDetached(detachedMarker) : { count: 0, cpu: 0 };
  const machine = machineCpu() - machine0;
  const hosts = hostsCpu(hostPids) - hosts0;
  const cpu = user + sys + detached.cpu;
  return { tool, wall, cpu, detached: detached.count, peakMb: maxKb / 1024, treeMb: treePeakKb / 1024, machineCpu: machine, hostsCpu: hosts, code, output };
}

/** Ansible's ssh ControlPersist masters outlive the run: add their CPU, then stop them (by PID). */
function stopDetached(marker: string): { count: number; cpu: number } {
  const found = pids().filter((p) => p !== process.pid && cmdline(p).includes(marker));
  let ticks = 0;
  for (const pid of found) {
    ticks += procStat(pid)?.ticks ?? 0;
    try { process.kill(pid, "SIGTERM"); } catch { /* gone */ }
  }
  const deadline = Date.now() + 5000;
  while (found.some((p) => existsSync(`/proc/${p}`) && procStat(p) !== null && !isZombie(p)) && Date.now() < deadline) Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 50);
  for (const pid of found) if (existsSync(`/proc/${pid}`) && !isZombie(pid)) try { process.kill(pid, "SIGKILL"); } catch { /* gone */ }
  return { count: found.length, cpu: ticks / TICKS };
}

function isZombie(pid: number): boolean {
  try { const s = readFileSync(`/proc/${pid}/stat`, "utf8"); return s[s.lastIndexOf(")") + 2] === "Z"; } catch { return true; }
}

const median = (xs: number[]) => { const s = [...xs].sort((a, b) => a - b); return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2; };

// --- the two audits -----------------------------------------------------------------------

interface Setup {
  fleet: TestFleet;
  dir: string;
  provisionInventory: string;
  ansibleInventory: string;
  ansibleEnv: NodeJS.ProcessEnv;
  controlDir: string;
}

function bondTaskArgs(): BondArgs {
  const plays = parse(readFileSync(AUDIT, "utf8")) as { tasks: { bond?: Partial<BondArgs> }[] }[];
  const args = plays.flatMap((p) => p.tasks).find((t) => t.bond)!.bond!;
  // The schema's defaults (bond.ts), then Jinja placeholders for the per-host values.
  return { name: "bond0", method: "static", path: "/etc/network/interfaces", backup_path: "/etc/network/interfaces.orig", ...args, address: "{{ bond_address }}", gateway: "{{ bond_gateway }}" } as BondArgs;
}

async function setup(fleet: TestFleet, n: number, dir: string): Promise<Setup> {
  const hosts = fleet.hosts;
  const provisionInventory = join(dir, "inventory.yaml");
  writeFileSync(provisionInventory, stringify({
    all: {
      vars: { user: "root", identity_file: fleet.identityFile, known_hosts_file: fleet.knownHostsFile, bond_gateway: fleet.bridgeAddress },
      children: { pis: { hosts: Object.fromEntries(hosts.map((h) => [h.name, { address: h.address, bond_address: `${h.address}/24` }])) } },
    },
  }));

  const template = join(dir, "interfaces.j2");
  writeFileSync(template, renderInterfaces(bondTaskArgs()));
  const ansibleInventory = join(dir, "ansible-inventory.yaml");
  writeFileSync(ansibleInventory, stringify({
    all: {
      vars: {
        ansible_user: "root",
        ansible_ssh_private_key_file: fleet.identityFile,
        ansible_ssh_common_args: `-o UserKnownHostsFile=${fleet.knownHostsFile} -o GlobalKnownHostsFile=/dev/null -o StrictHostKeyChecking=yes`,
        ansible_python_interpreter: "/usr/bin/python3",
        bond_gateway: fleet.bridgeAddress,
        interfaces_template: template,
      },
      children: { pis: { hosts: Object.fromEntries(hosts.map((h) => [h.name, { ansible_host: h.address, bond_address: `${h.address}/24` }])) } },
    },
  }));
  const controlDir = join(dir, "cp");
  mkdirSync(controlDir);
  const ansibleHome = join(dir, "ansible-home");
  mkdirSync(ansibleHome);
  writeFileSync(join(dir, "ansible.cfg"), [
    "[defaults]", `forks = ${n}`, "retry_files_enabled = False", "host_key_checking = True", "interpreter_python = /usr/bin/python3",
    "deprecation_warnings = False", "", "[ssh_connection]", "pipelining = True", `control_path_dir = ${controlDir}`, "",
  ].join("\n"));
  const ansibleEnv: NodeJS.ProcessEnv = {
    ...process.env, ANSIBLE_CONFIG: join(dir, "ansible.cfg"), ANSIBLE_HOME: ansibleHome, ANSIBLE_LOCAL_TEMP: join(ansibleHome, "tmp"),
    ANSIBLE_PIPELINING: "1", ANSIBLE_NOCOLOR: "1", ANSIBLE_FORCE_COLOR: "0", ANSIBLE_SSH_CONTROL_PATH_DIR: controlDir,
  };

  // Hosts as a real fleet would be: apt knows the package index (Ansible's apt module refuses
  // a package it cannot find in the index; provision only asks dpkg). One host fetches the
  // index from the fleet's local repository; the others get a copy.
  const first = hosts[0];
  const update = await fleet.exec(first, ["sh", "-c", "apt-get update -q >/dev/null && apt-cache gencaches >/dev/null && tar -C /var/lib/apt/lists -c --exclude=lock --exclude=partial . | base64 -w0"]);
  if (update.code !== 0) throw new Error(`apt-get update on ${first.name}: ${update.stderr}`);
  await mapLimit(hosts.slice(1), 8, async (h) => {
    const r = await fleet.exec(h, ["sh", "-c", "base64 -d | tar -C /var/lib/apt/lists -x && apt-cache gencaches >/dev/null"], update.stdout);
    if (r.code !== 0) throw new Error(`apt index on ${h.name}: ${r.stderr}`);
  });
  return { fleet, dir, provisionInventory, ansibleInventory, ansibleEnv, controlDir };
}

async function runProvision(s: Setup, n: number, log: string, extra: string[] = [], profile?: string): Promise<Sample> {
  const node = profile ? ["node", "--cpu-prof", "--cpu-prof-dir", profile] : ["node"];
  const argv = s.fleet.controllerArgv([...node, CLI, "--inventory", s.provisionInventory, "--check", "--forks", String(n), "--skip-tags", "kernel", ...extra, AUDIT]);
  const m = await measure("provision", argv, process.env, log, hostPids(s));
  const rows = provisionSummary(m.output);
  const drift = Object.values(rows).filter((r) => r.status === "drift").length;
  return { ...m, verdict: `exit ${m.code}, ${drift}/${n} hosts drift` };
}

/** provision with a play without tasks: connect, one gather of the host facts, disconnect. */
async function runProvisionConnect(s: Setup, n: number, log: string): Promise<Sample> {
  const playbook = join(s.dir, "connect-only.yaml");
  writeFileSync(playbook, stringify([{ name: "connect only", hosts: "pis", tasks: [] }]));
  const argv = s.fleet.controllerArgv(["node", CLI, "--inventory", s.provisionInventory, "--check", "--forks", String(n), playbook]);
  const m = await measure("provision connect", argv, process.env, log, hostPids(s));
  const ok = Object.values(provisionSummary(m.output)).filter((r) => r.status === "ok").length;
  return { ...m, verdict: `${ok}/${n} hosts reached, exit ${m.code}` };
}

function ansibleRecap(output: string): Record<string, Record<string, number>> {
  const recap: Record<string, Record<string, number>> = {};
  const at = output.lastIndexOf("PLAY RECAP");
  for (const line of output.slice(at).split("\n").slice(1)) {
    const m = /^(\S+)\s+:\s+(.*)$/.exec(line.trim());
    if (m) recap[m[1]] = Object.fromEntries([...m[2].matchAll(/(\w+)=(\d+)/g)].map((x) => [x[1], Number(x[2])]));
  }
  return recap;
}

async function runAnsible(s: Setup, n: number, log: string, extra: string[] = []): Promise<Sample> {
  const argv = s.fleet.controllerArgv(["ansible-playbook", "-i", s.ansibleInventory, "--check", "--forks", String(n), "--skip-tags", "kernel", ...extra, AUDIT_ANSIBLE]);
  const m = await measure("ansible", argv, s.ansibleEnv, log, hostPids(s), s.controlDir);
  const recap = ansibleRecap(m.output);
  const changed = Object.values(recap).filter((r) => r.changed > 0 && !r.failed && !r.unreachable).length;
  return { ...m, verdict: `exit ${m.code}, ${changed}/${n} hosts changed>0` };
}

const hostPids = (s: Setup) => s.fleet.hosts.map((h) => h.pid);

// The floor for any tool that uses SSH: OpenSSH's client connects to every host at once
// (host key checked, no connection sharing) and runs `true`.
const SSH_TRUE = `key=$1 known=$2; shift 2; pids=""
for h in "$@"; do
  ssh -F /dev/null -i "$key" -o UserKnownHostsFile="$known" -o GlobalKnownHostsFile=/dev/null -o StrictHostKeyChecking=yes \
    -o BatchMode=yes -o ControlMaster=no -o ConnectTimeout=30 "root@$h" true & pids="$pids $!"
done
ok=0; for p in $pids; do wait "$p" && ok=$((ok + 1)); done
echo "ssh true: $ok ok"`;

async function runSshTrue(s: Setup, n: number, log: string): Promise<Sample> {
  const argv = s.fleet.controllerArgv(["sh", "-c", SSH_TRUE, "ssh-true", s.fleet.identityFile, s.fleet.knownHostsFile, ...s.fleet.hosts.map((h) => h.address)]);
  const m = await measure("ssh true", argv, process.env, log, hostPids(s));
  return { ...m, verdict: `${/ssh true: (\d+) ok/.exec(m.output)?.[1] ?? 0}/${n} hosts ok` };
}

function assertSane(sample: Sample, n: number): void {
  const ok = sample.tool === "provision"
    ? sample.code === 2 && sample.verdict.includes(`${n}/${n} hosts drift`)
    : sample.tool === "ansible" ? sample.code === 0 && sample.verdict.includes(`${n}/${n} hosts changed>0`)
    : sample.tool === "provision connect" ? sample.code === 0 && sample.verdict.startsWith(`${n}/${n}`)
    : sample.verdict.startsWith(`${n}/${n}`);
  if (!ok) throw new Error(`${sample.tool} with ${n} hosts did not audit every host: ${sample.verdict}`);
}

/** After provision applied the audit to one host, neither tool may find anything to change there. */
async function equivalence(s: Setup): Promise<string> {
  const h = s.fleet.hosts[0];
  const apply = await measure("provision", s.fleet.controllerArgv(["node", CLI, "--inventory", s.provisionInventory, "--limit", h.name, "--skip-tags", "kernel", AUDIT]), process.env, join(s.dir, "apply.log"), []);
  if (apply.code !== 0) throw new Error(`equivalence: provision apply on ${h.name} exited ${apply.code}:\n${apply.output}`);
  const p = await runProvision(s, 1, join(s.dir, "eq-provision.log"), ["--limit", h.name]);
  const a = await runAnsible(s, 1, join(s.dir, "eq-ansible.log"), ["--limit", h.name]);
  const recap = ansibleRecap(a.output)[h.name];
  if (p.code !== 0 || a.code !== 0 || !recap || recap.changed !== 0)
    throw new Error(`equivalence: after provision applied the audit to ${h.name}, provision --check exited ${p.code}, ansible recap ${JSON.stringify(recap)}:\n${a.output}`);
  return `after provision applied the playbook to ${h.name}, provision --check found no drift (exit 0) and ansible-playbook --check reported ok=${recap.ok} changed=0 there`;
}

// --- main ---------------------------------------------------------------------------------

async function mapLimit<T, R>(items: T[], limit: number, fn: (item: T) => Promise<R>): Promise<R[]> {
  const out: R[] = new Array(items.length);
  let next = 0;
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, async () => { while (next < items.length) { const i = next++; out[i] = await fn(items[i]); } }));
  return out;
}

function versions(): { node: string; ansible: string; provision: string } {
  const ansible = spawnText(["ansible", "--version"]).split("\n")[0];
  const provision = JSON.parse(readFileSync(join(repoRoot, "package.json"), "utf8")).version;
  return { node: process.version, ansible, provision };
}

function spawnText(argv: string[]): string {
  return (spawnSync(argv[0], argv.slice(1), { encoding: "utf8" }).stdout ?? "").trim();
}

async function main(): Promise<void> {
  const results: Result[] = [];
  const notes: string[] = [];
  const quietNotes: string[] = [];
  const load = loadavg().map((l) => l.toFixed(2)).join(" ");
  const started = new Date();
  console.log(`bench: sizes ${sizes.join(", ")}, ${reps} run(s) each, ${cpus().length} cores, load ${load}`);
  let equivalenceNote = "";
  for (const n of sizes) {
    const dir = mkdtempSync(join(tmpdir(), `provision-bench-${n}-`));
    let fleet: TestFleet | undefined;
    let s: Setup | undefined;
    try {
      fleet = await startFleet({ count: n, prefix: "pi" });
      s = await setup(fleet, n, dir);
      const waited = await waitForQuietMachine();
      quietNotes.push(waited === null ? `${n} hosts: the machine never got quiet (under 10% busy) within 120 s; measured anyway` : `${n} hosts: ${waited.toFixed(0)} s`);
      const all: Sample[] = [];
      for (let rep = 0; rep < reps; rep++) {
        const tools: Tool[] = ["provision", "ansible", "provision connect", "ssh true"];
        const order = tools.map((_, i) => tools[(i + rep) % tools.length]);
        for (const tool of order) {
          const log = join(s.dir, `${tool.replace(" ", "-")}-${rep}.log`);
          const profile = opts["cpu-prof"] && tool === "provision" && rep === 0 ? join(opts["cpu-prof"], `provision-${n}`) : undefined;
          if (profile) mkdirSync(profile, { recursive: true });
          const sample = tool === "provision" ? await runProvision(s, n, log, [], profile)
            : tool === "ansible" ? await runAnsible(s, n, log)
            : tool === "provision connect" ? await runProvisionConnect(s, n, log)
            : await runSshTrue(s, n, log);
          assertSane(sample, n);
          all.push(sample);
          console.log(`  N=${n} run ${rep + 1} ${tool.padEnd(9)} wall ${sample.wall.toFixed(2)} s  cpu ${sample.cpu.toFixed(2)} s  peak ${sample.peakMb.toFixed(0)} MB  tree ${sample.treeMb.toFixed(0)} MB  hosts cpu ${sample.hostsCpu.toFixed(2)} s  other cpu ${Math.max(0, sample.machineCpu - sample.cpu - sample.hostsCpu).toFixed(2)} s  (${sample.verdict}${sample.detached ? `; ${sample.detached} ssh masters stopped` : ""})`);
        }
      }
      const pick = (tool: Tool): Sample => {
        const xs = all.filter((x) => x.tool === tool);
        return { tool, wall: median(xs.map((x) => x.wall)), cpu: median(xs.map((x) => x.cpu)), peakMb: median(xs.map((x) => x.peakMb)), treeMb: median(xs.map((x) => x.treeMb)), machineCpu: median(xs.map((x) => x.machineCpu)), hostsCpu: median(xs.map((x) => x.hostsCpu)), code: xs[0].code, verdict: xs[0].verdict, output: "", detached: xs[0].detached };
      };
      results.push({ n, provision: pick("provision"), ansible: pick("ansible"), connect: pick("provision connect"), ssh: pick("ssh true"), all });
      if (!equivalenceNote) equivalenceNote = await equivalence(s);
    } finally {
      await fleet?.stop();
      if (!opts.keep) rmSync(dir, { recursive: true, force: true });
      else console.log(`bench: kept ${dir}`);
    }
  }
  if (equivalenceNote) notes.push(`Same checks: ${equivalenceNote}.`);
  notes.push(`Before each size the benchmark waited for the machine to be quiet (under 10% of the cores busy for a second): ${quietNotes.join(", ")}.`);
  const samples = results.flatMap((r) => r.all);
  const other = samples.reduce((sum, x) => sum + Math.max(0, x.machineCpu - x.cpu - x.hostsCpu), 0);
  const capacity = samples.reduce((sum, x) => sum + x.wall * cpus().length, 0);
  notes.push(`Other activity on the machine (CPU used by neither the tool nor the hosts, e.g. the kernel's network path and anything else running): ${((other / capacity) * 100).toFixed(0)}% of the ${cpus().length} cores on average during the runs; load average ${load} at the start, ${loadavg().map((l) => l.toFixed(2)).join(" ")} at the end.`);
  const report = renderResults(results, { started, load, notes });
  console.log(`\n${report}`);
  writeFileSync(opts.out!, report);
  console.log(`bench: wrote ${opts.out}`);
}

interface Result { n: number; provision: Sample; ansible: Sample; connect: Sample; ssh: Sample; all: Sample[] }

function renderResults(results: Result[], meta: { started: Date; load: string; notes: string[] }): string {
  const v = versions();
  const tools = ["provision", "ansible", "connect", "ssh"] as const;
  const perAdded = (i: number, tool: (typeof tools)[number]) =>
    i === 0 ? null : ((results[i][tool].wall - results[i - 1][tool].wall) / (results[i].n - results[i - 1].n)) * 1000;
  const rows: string[][] = [];
  results.forEach((r, i) => {
    for (const tool of tools) {
      const s = r[tool];
      const added = perAdded(i, tool);
      rows.push([String(r.n), s.tool, s.wall.toFixed(2), s.cpu.toFixed(2), s.peakMb.toFixed(0), s.treeMb.toFixed(0), s.hostsCpu.toFixed(2),
        tool === "provision" ? `${(r.ansible.wall / r.provision.wall).toFixed(1)}×` : "", added === null ? "" : added.toFixed(tool === "ansible" ? 0 : 1)]);
    }
  });
  const header = ["N", "tool", "wall s", "cpu s", "peak MB", "tree MB", "hosts cpu s", "ansible/provision wall", "ms per added host"];
  const table = [`| ${header.join(" | ")} |`, `|${header.map((_, i) => (i < 2 ? "---" : "---:")).join("|")}|`, ...rows.map((r) => `| ${r.join(" | ")} |`)].join("\n");

  const met = (ok: boolean) => (ok ? "**met**" : "**not met**");
  const ratios = results.map((r) => r.ansible.wall / r.provision.wall);
  const added = results.slice(1).map((_, j) => perAdded(j + 1, "provision")!);
  const addedCpu = results.slice(1).map((r, j) => ((r.provision.cpu - results[j].provision.cpu) / (r.n - results[j].n)) * 1000);
  const at100 = results.find((r) => r.n === 100);
  const largest = results.at(-1)!;
  const overall = ((largest.provision.wall - results[0].provision.wall) / (largest.n - results[0].n)) * 1000;
  const targets = [
    `- provision ≥ 10× faster than Ansible (wall): ${ratios.map((x, i) => `${x.toFixed(1)}× at ${results[i].n} hosts`).join(", ")}: ${met(ratios.every((x) => x >= 10))}`,
    at100 ? `- 100 hosts in ≤ 3 s wall: ${at100.provision.wall.toFixed(2)} s: ${met(at100.provision.wall <= 3)}` : "- 100 hosts in ≤ 3 s wall: not measured in this run",
    added.length ? `- ≤ 20 ms per added host (wall): ${added.map((x, j) => `${x.toFixed(1)} ms (${results[j].n}→${results[j + 1].n})`).join(", ")}${added.length > 1 ? `, ${overall.toFixed(1)} ms over the whole range (${results[0].n}→${largest.n})` : ""}: ${met(added.every((x) => x <= 20))}; controller CPU per added host: ${addedCpu.map((x) => `${x.toFixed(1)} ms`).join(", ")}` : "- ≤ 20 ms per added host: needs two sizes",
    at100 ? `- provision peak RSS < 200 MB at 100 hosts: ${at100.provision.peakMb.toFixed(0)} MB: ${met(at100.provision.peakMb < 200)}` : `- provision peak RSS at ${largest.n} hosts: ${largest.provision.peakMb.toFixed(0)} MB`,
  ];
  const runs = results.map((r) => `- N=${r.n}: ${r.all.map((s) => `${s.tool} ${s.wall.toFixed(2)} s`).join(", ")}`);
  const L = largest;
  const ms = (x: number) => `${(x * 1000).toFixed(0)} ms`;
  const where = [
    `- At ${L.n} hosts provision used ${L.provision.cpu.toFixed(2)} s of controller CPU (${ms(results[0].provision.cpu)} already at ${results[0].n} hosts: Node start-up and loading), ${added.length ? `${addedCpu.at(-1)!.toFixed(1)} ms more per added host` : ""}; the hosts used ${ms(L.provision.hostsCpu / L.n)} of CPU each, ${ms(L.connect.hostsCpu / L.n)} of it just to accept the connection and run one command (\`provision connect\`: sshd's handshake, session and shell).`,
    `- provision connect takes ${((L.connect.wall / L.provision.wall) * 100).toFixed(0)}% of provision's wall time at ${L.n} hosts: opening the SSH connections, mostly the hosts' side, dominates; the audit itself (probes, planning, output) is the rest.`,
    `- Ansible used ${ms(L.ansible.cpu / L.n)} of controller CPU and ${ms(L.ansible.hostsCpu / L.n)} of host CPU per host (a Python module run per task per host), provision ${ms(L.provision.cpu / L.n)} and ${ms(L.provision.hostsCpu / L.n)}.`,
    `- Here all hosts share the controller's ${cpus().length} cores, so the hosts' CPU shows up in the wall time; on a real fleet each Pi spends its own, and the controller's part per added host is the CPU figure above.`,
  ];
  return [
    "# Benchmark: provision --check vs ansible-playbook --check",
    "",
    `Date: ${meta.started.toISOString()}. Machine: ${cpus().length} cores (${cpus()[0]?.model ?? "?"}), ${(totalmem() / 2 ** 30).toFixed(0)} GiB; load average at start ${meta.load}.`,
    `provision ${v.provision} on Node ${v.node}; ${v.ansible} (Debian's ansible package). Median of ${reps} run(s) per tool and size; the tools take turns going first.`,
    "Produced by `npm run bench` (bench/run.ts); the playbooks are bench/audit.yaml and bench/audit-ansible.yaml.",
    "",
    "Both tools audit the same fresh lightweight sshd hosts (test/support/sshd-hosts.ts: real OpenSSH, one network namespace and overlay root each, all on this same machine) with the same checks: ifenslave installed, bond0 in /etc/network/interfaces (and the original kept as interfaces.orig), the denyinterfaces line in /etc/dhcpcd.conf. The kernel-module check is skipped on both sides (`--skip-tags kernel`): this machine's kernel has no loadable modules (no /proc/modules), where Ansible's modprobe module fails. Both run inside the fleet's controller namespace with forks = N; Ansible with pipelining, its default ControlPersist, `gather_facts: false` (its fastest setting for this audit) and host keys checked against the fleet's known_hosts. Two reference rows: `provision connect` is provision with a play without tasks (connect, one gather of the host facts, disconnect: its cost before any check); `ssh true` is OpenSSH's client connecting to every host at once (no connection sharing) and running `true`.",
    "",
    table,
    "",
    "Columns: wall s = elapsed; cpu s = user+sys of the tool and all its processes (Ansible: including its ssh ControlPersist masters); peak MB = RSS of the largest single process (/usr/bin/time %M); tree MB = peak of the summed PSS of all the tool's processes (sampled every 250 ms); hosts cpu s = CPU the test hosts spent meanwhile (sshd, sh, python, dpkg — on a real fleet each host pays its own; here they share the controller's 2 cores); ansible/provision wall = how many times faster provision is; ms per added host = wall increase from the previous size divided by the hosts added.",
    "",
    "Targets:",
    ...targets,
    "",
    "Where the time goes:",
    ...where,
    "",
    "Every run (wall):",
    ...runs,
    "",
    ...meta.notes,
    "",
  ].join("\n");
}

main().catch((error) => {
  console.error(`bench: ${error?.stack ?? error}`);
  process.exitCode = 1;
});
