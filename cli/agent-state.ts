// The agent's memory on the device: the last bundle version it tried and how far it got,
// in one small JSON file written atomically (temp file, fsync, rename, fsync of the
// folder) with mode 0600 under /var/lib/provision/agent, and that bundle as it was signed
// (its secrets still encrypted to the device). Written before a bundle is applied, so a
// version that failed, was reverted or crashed the agent is never retried; what the agent
// left unfinished (a run that rebooted this machine, a revert under way) is taken up again
// at its next start (cli/agent.ts finishLeftRun).
import { closeSync, fchmodSync, fsyncSync, mkdirSync, openSync, readFileSync, renameSync, writeSync } from "node:fs";
import { join } from "node:path";
import { ConfigError, messageOf } from "../core/errors.js";
import type { Outcome } from "../core/pull/rollout.js";
import type { Resume } from "../core/run/run.js";

export interface Tried {
  version: number;
  /**
   * applying: the run started (and the agent stopped before it ended, if still so at start-up);
   * reboot-pending: the run rebooted this machine and goes on after the boot (`resume`);
   * reverting: the run failed and the host's own revert (which reboots) was started;
   * done: `outcome` was reached.
   */
  phase: "applying" | "reboot-pending" | "reverting" | "done";
  outcome?: Outcome;
  /** The engine's run id (its transaction on this host, /var/lib/provision/runs/ID). */
  runId?: string;
  /** Where a run that rebooted this machine goes on after the boot. */
  resume?: Resume;
  /** Why the run is being reverted (reverting), told with its outcome after the boot; masked. */
  detail?: string;
  at: string;
}

export class AgentState {
  private constructor(
    readonly file: string,
    public tried: Tried | undefined,
    /** The version this device runs: the last one applied (a failed or reverted one leaves it as it was). */
    public applied: number | undefined,
  ) {}

  static open(dir: string): AgentState {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    const file = join(dir, "state.json");
    let text: string;
    try {
      text = readFileSync(file, "utf8");
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === "ENOENT") return new AgentState(file, undefined, undefined);
      throw new ConfigError(`cannot read the agent's state ${file} (${(error as NodeJS.ErrnoException).code ?? messageOf(error)}).`);
    }
    let tried: Tried;
    let applied: unknown;
    try {
      ({ tried, applied } = JSON.parse(text));
    } catch {
      throw new ConfigError(
        `the agent's state ${file} is not JSON. It is written atomically, so something else changed it: remove it (the agent then applies the current desired state) or restore it.`,
      );
    }
    if (tried !== undefined && (!Number.isSafeInteger(tried?.version) || typeof tried.phase !== "string"))
      throw new ConfigError(`the agent's state ${file} has no valid "tried" entry (version and phase). Remove the file or restore it.`);
    // a file from before `applied` was kept: the version tried, if it was applied
    const running = Number.isSafeInteger(applied) ? (applied as number) : tried?.outcome === "applied" ? tried.version : undefined;
    return new AgentState(file, tried, running);
  }

  /** Replace the record durably: the old one or the new one survives a power cut, never a torn file. */
  record(tried: Tried): void {
    const applied = tried.phase === "done" && tried.outcome === "applied" ? tried.version : this.applied;
    writeDurably(this.file, JSON.stringify({ tried, ...(applied !== undefined ? { applied } : {}) }) + "\n");
    this.tried = tried;
    this.applied = applied;
  }

  private get bundleFile(): string {
    return join(this.file, "..", "bundle");
  }

  /** Keep the bundle being applied, as signed, for a run that goes on after a reboot. */
  saveBundle(bytes: Uint8Array): void {
    writeDurably(this.bundleFile, bytes);
  }

  /** The bundle saved last, or null. */
  savedBundle(): Uint8Array | null {
    try {
      return readFileSync(this.bundleFile);
    } catch {
      return null;
    }
  }
}

/** Temp file (0600), fsync, rename, fsync of the folder. */
function writeDurably(file: string, content: string | Uint8Array): void {
  const temp = `${file}.tmp`;
  const fd = openSync(temp, "w", 0o600);
  try {
    fchmodSync(fd, 0o600);
    writeSync(fd, typeof content === "string" ? Buffer.from(content) : content);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  renameSync(temp, file);
  const dir = openSync(join(file, ".."), "r");
  try {
    fsyncSync(dir);
  } finally {
    closeSync(dir);
  }
}
