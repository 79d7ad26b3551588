// Measuring one run of a tool: wall, CPU (its own, its detached helpers', the hosts' and the
// whole machine's), peak RSS and the peak summed PSS of its process tree. Shared by the
// audit and the apply benchmarks.
import { spawn } from "node:child_process";
import { existsSync, readFileSync, readdirSync, writeFileSync } from "node:fs";
import { cpus } from "node:os";
import { dirname } from "node:path";

const TICKS = 100; // USER_HZ on Linux

export interface Measured {
  wall: number; // s
  cpu: number; // s, user+sys of the tool, its children and detached helpers
  peakMb: number; // RSS of the largest single process (/usr/bin/time %M)
  treeMb: number; // peak of the summed PSS of the tool's processes
  machineCpu: number; // s, all CPU the machine spent meanwhile
  hostsCpu: number; // s, CPU the test hosts spent meanwhile
  hostsCpuMax: number; // s, CPU the busiest host spent meanwhile
  code: number;
  output: string;
  detached: number; // detached helpers stopped after the run (Ansible's ssh masters)
  seen: boolean; // a process whose command line holds `watchFor` was seen during the run
}

export interface MeasureOptions {
  env?: NodeJS.ProcessEnv;
  hostPids?: number[];
  /** detached processes (whose command line holds this) belong to the run: their CPU is added, then they are stopped */
  detachedMarker?: string;
  /** a command line fragment to look for among the tool's processes while it runs */
  watchFor?: string;
  /** stop the tool (its processes, by PID) after this many seconds: the run is then recorded with code 124 */
  timeoutS?: number;
}

function procStat(pid: number): { ppid: number; ticks: number } | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return { ppid: Number(f[1]), ticks: Number(f[11]) + Number(f[12]) };
  } catch {
    return null;
  }
}

function pids(): number[] {
  return readdirSync("/proc")
    .filter((d) => /^\d+$/.test(d))
    .map(Number);
}

function cmdline(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, "utf8").replace(/\0/g, " ");
  } catch {
    return "";
  }
}

function pssKb(pid: number): number {
  try {
    return Number(/^Pss:\s+(\d+)/m.exec(readFileSync(`/proc/${pid}/smaps_rollup`, "utf8"))?.[1] ?? 0);
  } catch {
    return 0;
  }
}

function isZombie(pid: number): boolean {
  try {
    const s = readFileSync(`/proc/${pid}/stat`, "utf8");
    return s[s.lastIndexOf(")") + 2] === "Z";
  } catch {
    return true;
  }
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
  const walk = (pid: number) => {
    tree.push(pid);
    for (const c of children.get(pid) ?? []) walk(c);
  };
  walk(root);
  if (marker) for (const pid of all) if (!tree.includes(pid) && cmdline(pid).includes(marker)) tree.push(pid);
  return tree;
}

/** CPU seconds the test hosts spent so far: each host's sshd is PID 1 of its PID namespace and
 *  reaps every process of the host, so the host's CPU time is what its live processes used
 *  plus what they and sshd collected from reaped children (utime+stime+cutime+cstime). */
export function hostsCpu(hostPids: number[]): number {
  return hostCpus(hostPids).reduce((a, b) => a + b, 0);
}

/** CPU seconds each test host spent so far (see hostsCpu). */
export function hostCpus(hostPids: number[]): number[] {
  if (!hostPids.length) return [];
  const children = new Map<number, number[]>();
  const times = new Map<number, number>();
  for (const pid of pids()) {
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
      const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      const ppid = Number(f[1]);
      children.set(ppid, [...(children.get(ppid) ?? []), pid]);
      times.set(pid, Number(f[11]) + Number(f[12]) + Number(f[13]) + Number(f[14]));
    } catch {
      /* gone */
    }
  }
  return hostPids.map((host) => {
    let ticks = 0;
    const walk = (pid: number) => {
      ticks += times.get(pid) ?? 0;
      for (const c of children.get(pid) ?? []) walk(c);
    };
    walk(host);
    return ticks / TICKS;
  });
}

/** CPU seconds the whole machine spent (all states but idle and iowait). */
export function machineCpu(): number {
  const f = readFileSync("/proc/stat", "utf8").split("\n")[0].trim().split(/\s+/).slice(1).map(Number);
  const [user, nice, system, , , irq, softirq, steal] = f;
  return (user + nice + system + irq + softirq + steal) / TICKS;
}

/**
 * Wait (up to `limitS`) until the machine is quiet: under 10% of its cores busy for a whole
 * second, so leftovers of whatever ran before (a test run, a lab) do not end up in the timings.
 * Returns the seconds waited, or null if it never got quiet.
 */
export async function waitForQuietMachine(limitS = 120): Promise<number | null> {
  const start = Date.now();
  while (Date.now() - start < limitS * 1000) {
    const before = machineCpu();
    await new Promise((r) => setTimeout(r, 1000));
    if ((machineCpu() - before) / cpus().length < 0.1) return (Date.now() - start) / 1000;
  }
  return null;
}

/** Run argv under /usr/bin/time (output goes to `log`); sample the summed PSS of its process tree. */
export async function measure(argv: string[], log: string, o: MeasureOptions = {}): Promise<Measured> {
  const timeFile = `${log}.time`;
  const hostPids = o.hostPids ?? [];
  const machine0 = machineCpu();
  const hosts0 = hostCpus(hostPids);
  const child = spawn("/usr/bin/time", ["-f", "%e %U %S %M", "-o", timeFile, ...argv], { env: o.env ?? process.env, cwd: dirname(log), stdio: ["ignore", "pipe", "pipe"] });
  let output = "";
  child.stdout!.on("data", (d) => (output += d));
  child.stderr!.on("data", (d) => (output += d));
  let treePeakKb = 0;
  let seen = false;
  const sample = () => {
    if (!child.pid) return;
    const tree = processTree(child.pid, o.detachedMarker).filter((p) => p !== child.pid);
    treePeakKb = Math.max(
      treePeakKb,
      tree.reduce((sum, p) => sum + pssKb(p), 0),
    );
    if (o.watchFor && !seen) seen = tree.some((p) => cmdline(p).includes(o.watchFor!));
  };
  const timer = setInterval(sample, 250);
  let timedOut = false;
  const deadline = o.timeoutS
    ? setTimeout(() => {
        timedOut = true;
        // the tool and everything below it, never /usr/bin/time itself (it still has to report)
        for (const pid of processTree(child.pid!, o.detachedMarker).filter((p) => p !== child.pid))
          try {
            process.kill(pid, "SIGKILL");
          } catch {
            /* gone */
          }
      }, o.timeoutS * 1000)
    : undefined;
  const exit: number = await new Promise((resolve, reject) => {
    child.on("error", reject);
    child.on("close", (c) => resolve(c ?? 1));
  });
  clearInterval(timer);
  clearTimeout(deadline);
  const code = timedOut ? 124 : exit;
  if (timedOut) output += `\nbench: stopped after ${o.timeoutS} s (timeout)\n`;
  writeFileSync(log, output);
  const [wall, user, sys, maxKb] = readFileSync(timeFile, "utf8").trim().split("\n").pop()!.split(" ").map(Number);
  const detached = o.detachedMarker ? stopDetached(o.detachedMarker) : { count: 0, cpu: 0 };
  return {
    wall,
    cpu: user + sys + detached.cpu,
    detached: detached.count,
    peakMb: maxKb / 1024,
    treeMb: treePeakKb / 1024,
    machineCpu: machineCpu() - machine0,
    ...hostsSince(hosts0, hostCpus(hostPids)),
    code,
    output,
    seen,
  };
}

function hostsSince(before: number[], after: number[]): { hostsCpu: number; hostsCpuMax: number } {
  const each = after.map((x, i) => x - (before[i] ?? 0));
  return { hostsCpu: each.reduce((a, b) => a + b, 0), hostsCpuMax: Math.max(0, ...each) };
}

/** Ansible's ssh ControlPersist masters outlive the run: add their CPU, then stop them (by PID). */
function stopDetached(marker: string): { count: number; cpu: number } {
  const found = pids().filter((p) => p !== process.pid && cmdline(p).includes(marker));
  let ticks = 0;
  for (const pid of found) {
    ticks += procStat(pid)?.ticks ?? 0;
    try {
      process.kill(pid, "SIGTERM");
    } catch {
      /* gone */
    }
  }
  const deadline = Date.now() + 5000;
  while (found.some((p) => existsSync(`/proc/${p}`) && procStat(p) !== null && !isZombie(p)) && Date.now() < deadline)
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 50);
  for (const pid of found)
    if (existsSync(`/proc/${pid}`) && !isZombie(pid))
      try {
        process.kill(pid, "SIGKILL");
      } catch {
        /* gone */
      }
  return { count: found.length, cpu: ticks / TICKS };
}

// --- statistics ---------------------------------------------------------------------------

/** A figure over several runs: the median and the range. */
export interface Spread {
  median: number;
  min: number;
  max: number;
  n: number;
}

export function spread(xs: number[]): Spread {
  const s = [...xs].sort((a, b) => a - b);
  if (!s.length) return { median: NaN, min: NaN, max: NaN, n: 0 };
  const median = s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
  return { median, min: s[0], max: s[s.length - 1], n: s.length };
}

/** "1.93 (1.90–2.01)"; just the value when there was one run or no spread. */
export function showSpread(x: Spread, digits = 2): string {
  if (!x.n) return "–";
  const f = (v: number) => v.toFixed(digits);
  return x.n === 1 || f(x.min) === f(x.max) ? f(x.median) : `${f(x.median)} (${f(x.min)}–${f(x.max)})`;
}
