// How the engine reaches a host: everything a run does on a host goes through a Transport.
// Two implementations: SSH (ssh.ts, a Pi reached from a controller) and local (local.ts,
// this machine, e.g. a Pi applying its own playbook). The engine never knows which.
import type { HostKeyPolicy } from "./known-hosts.js";
import { HostError } from "../errors.js";

/** Where a host is and how to reach it (a local transport uses name, address and user only). */
export interface ConnectionTarget {
  name: string;
  address: string;
  port: number;
  user: string;
  identityFile?: string;
  become: boolean;
  connectTimeoutSeconds: number;
  hostKeys: HostKeyPolicy;
}

export interface ExecResult {
  code: number;
  stdout: string;
  stderr: string;
}

export interface RebootOptions {
  /** Where the host answers after the reboot. */
  address: string;
  /** Give up (RebootTimeout) after this time (ms since the epoch). */
  deadline: number;
  /** How the deadline is said in the error, e.g. "600s". */
  limit: string;
  progress: (message: string) => void;
}

export interface Transport {
  /** Where and as whom: target.name names the host in every error. */
  readonly target: ConnectionTarget;
  /** Where the host was at the start of the run; its identity vouches for any new address. */
  readonly originalAddress: string;
  readonly connected: boolean;
  /** Open a new session (a fresh connection: nothing of an old one is reused). */
  connect(): Promise<void>;
  close(): void;
  /** Reach the host at another address from now on (after a change moved it). */
  moveTo(address: string): void;
  /** Run argv (never shell text) as root; stdin is handed over whole. A lost host throws LostConnection. */
  exec(argv: string[], stdin?: string): Promise<ExecResult>;
  /** exec that throws a HostError naming `what` when the command fails. */
  run(what: string, argv: string[], stdin?: string): Promise<string>;
  /** A file's content, null when it does not exist. */
  readFile(path: string): Promise<string | null>;
  /**
   * Reboot the host and come back to it with a new boot id (SSH); a local transport
   * reboots its own machine and throws RebootPending (the run resumes after the boot).
   */
  rebootAndWait(options: RebootOptions): Promise<void>;
}

/**
 * The machine the run is on reboots now (local transport): the run ends here, its lock and
 * its transaction record kept, and resumes after the boot from that record.
 */
export class RebootPending extends HostError {}

/** A command's result, its output decoded once at the end (a UTF-8 character may straddle two chunks). */
export function execResult(code: number, stdout: Buffer[], stderr: Buffer[]): ExecResult {
  return { code, stdout: Buffer.concat(stdout).toString("utf8"), stderr: Buffer.concat(stderr).toString("utf8") };
}

/** Transport.run for every transport: exec, and a HostError naming `what` when the command fails. */
export async function runChecked(t: Pick<Transport, "target" | "exec">, what: string, argv: string[], stdin?: string): Promise<string> {
  const r = await t.exec(argv, stdin);
  if (r.code !== 0) throw new HostError(t.target.name, `${what}: exited ${r.code}${r.stderr.trim() ? ` (${lastLine(r.stderr)})` : ""}`);
  return r.stdout;
}

/** For Transport.readFile: `cat`, null when the file does not exist. */
export async function readFileOver(c: { exec(argv: string[]): Promise<ExecResult> }, path: string): Promise<string | null> {
  const r = await c.exec(["sh", "-c", 'if [ -e "$1" ]; then exec cat -- "$1"; else exit 3; fi', "provision", path]);
  if (r.code === 3) return null;
  if (r.code !== 0) throw new Error(`cannot read ${path}: ${r.stderr.trim()}`);
  return r.stdout;
}

/** The last line of a command's stderr, for an error message. */
export function lastLine(text: string): string {
  return text.trim().split("\n").pop()!.slice(0, 300);
}

/** How the run layer gets a transport for a host: the CLI (or a pull agent) chooses. */
export type TransportFactory = (target: ConnectionTarget) => Transport;
