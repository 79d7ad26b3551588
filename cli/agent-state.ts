// The agent's memory on the device: the last bundle version it tried and how far it got,
// in one small JSON file written atomically (temp file, fsync, rename, fsync of the
// folder) with mode 0600 under /var/lib/provision/agent. Written before a bundle is
// applied, so a version that failed, was reverted or crashed the agent is never retried.
// "reboot-pending" (with the engine's run id) marks a run that rebooted this machine: where
// resuming it after the boot will start once the engine can (see README "Reboots").
import { closeSync, fchmodSync, fsyncSync, mkdirSync, openSync, readFileSync, renameSync, writeSync } from "node:fs";
import { join } from "node:path";
import { ConfigError, messageOf } from "../core/errors.js";
import type { Outcome } from "../core/pull/rollout.js";

export interface Tried {
  version: number;
  /** applying: the run started (and the agent stopped before it ended, if still so at start-up). */
  phase: "applying" | "reboot-pending" | "done";
  outcome?: Outcome;
  /** The engine's run id, for a run that resumes after a reboot. */
  runId?: string;
  at: string;
}

export class AgentState {
  private constructor(
    readonly file: string,
    public tried: Tried | undefined,
  ) {}

  static open(dir: string): AgentState {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    const file = join(dir, "state.json");
    let text: string;
    try {
      text = readFileSync(file, "utf8");
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === "ENOENT") return new AgentState(file, undefined);
      throw new ConfigError(`cannot read the agent's state ${file} (${(error as NodeJS.ErrnoException).code ?? messageOf(error)}).`);
    }
    let tried: Tried;
    try {
      tried = JSON.parse(text).tried;
    } catch {
      throw new ConfigError(
        `the agent's state ${file} is not JSON. It is written atomically, so something else changed it: remove it (the agent then applies the current desired state) or restore it.`,
      );
    }
    if (tried !== undefined && (!Number.isSafeInteger(tried?.version) || typeof tried.phase !== "string"))
      throw new ConfigError(`the agent's state ${file} has no valid "tried" entry (version and phase). Remove the file or restore it.`);
    return new AgentState(file, tried);
  }

  /** Replace the record durably: the old one or the new one survives a power cut, never a torn file. */
  record(tried: Tried): void {
    const temp = `${this.file}.tmp`;
    const fd = openSync(temp, "w", 0o600);
    try {
      fchmodSync(fd, 0o600);
      writeSync(fd, JSON.stringify({ tried }) + "\n");
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(temp, this.file);
    const dir = openSync(join(this.file, ".."), "r");
    try {
      fsyncSync(dir);
    } finally {
      closeSync(dir);
    }
    this.tried = tried;
  }
}
