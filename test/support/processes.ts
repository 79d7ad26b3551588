// Every process, namespace and temporary path a test starts is registered here and
// torn down by PID / name on stop, on normal exit and on SIGINT/SIGTERM.
import { spawn, spawnSync, type SpawnOptions, type ChildProcess } from "node:child_process";
import { readFileSync, rmSync } from "node:fs";

type Cleanup = { label: string; run: () => void };
const cleanups: Cleanup[] = [];
let hooked = false;

export function onCleanup(label: string, run: () => void): () => void {
  hookExit();
  const entry = { label, run };
  cleanups.push(entry);
  return () => {
    const i = cleanups.indexOf(entry);
    if (i >= 0) cleanups.splice(i, 1);
    run();
  };
}

export function cleanupAll(): void {
  while (cleanups.length) {
    const entry = cleanups.pop()!;
    try {
      entry.run();
    } catch (error) {
      console.error(`cleanup ${entry.label}:`, error);
    }
  }
}

function hookExit(): void {
  if (hooked) return;
  hooked = true;
  process.on("exit", cleanupAll);
  for (const signal of ["SIGINT", "SIGTERM"] as const)
    process.on(signal, () => {
      cleanupAll();
      process.exit(130);
    });
}

/** Kill one process we started, by its PID only, and wait until it is gone. */
export function killPid(pid: number | undefined, signal: NodeJS.Signals = "SIGTERM"): void {
  if (!pid) return;
  try {
    process.kill(pid, signal);
  } catch {
    return;
  }
  for (let i = 0; i < 100; i++) {
    if (!isAlive(pid)) return;
    spawnSync("sleep", ["0.05"]);
    if (i === 60)
      try {
        process.kill(pid, "SIGKILL");
      } catch {
        return;
      }
  }
}

/** True while `pid` runs. A zombie counts as gone: our own children stay zombies while a
 *  synchronous wait blocks the event loop that would reap them (kill(pid, 0) still succeeds). */
export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return stat[stat.lastIndexOf(")") + 2] !== "Z";
  } catch {
    return false;
  }
}

/** Run a command to completion; throw with its stderr when it fails. */
export function sh(argv: string[], opts: { input?: string; allowFail?: boolean } = {}): { code: number; stdout: string; stderr: string } {
  const r = spawnSync(argv[0], argv.slice(1), { input: opts.input, encoding: "utf8", maxBuffer: 64 << 20 });
  const result = { code: r.status ?? 1, stdout: r.stdout ?? "", stderr: r.stderr ?? String(r.error ?? "") };
  if (result.code !== 0 && !opts.allowFail) throw new Error(`${argv.join(" ")} exited ${result.code}: ${result.stderr.trim()}`);
  return result;
}

/** Start a long-running process that is killed (by PID) at cleanup. */
export function startDaemon(label: string, argv: string[], opts: SpawnOptions = {}): ChildProcess & { stop: () => void } {
  const child = spawn(argv[0], argv.slice(1), { stdio: "ignore", ...opts });
  const stop = onCleanup(label, () => killPid(child.pid));
  return Object.assign(child, { stop });
}

export function removeOnCleanup(path: string): () => void {
  return onCleanup(`rm ${path}`, () => rmSync(path, { recursive: true, force: true }));
}

/** Run argv and collect its output asynchronously. */
export function run(argv: string[], opts: SpawnOptions & { input?: string } = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(argv[0], argv.slice(1), { ...opts, stdio: ["pipe", "pipe", "pipe"] });
    let stdout = "",
      stderr = "";
    child.stdout!.on("data", (d) => (stdout += d));
    child.stderr!.on("data", (d) => (stderr += d));
    child.on("error", reject);
    child.on("close", (code) => resolve({ code: code ?? 1, stdout, stderr }));
    // A child that exits without reading its input must not crash us with EPIPE: its exit code tells.
    child.stdin!.on("error", () => {});
    child.stdin!.end(opts.input ?? "");
  });
}
