// One error class per layer; only the CLI prints them.

/** Bad inventory, playbook or arguments: the user must fix a file. */
export class ConfigError extends Error {
  override name = "ConfigError";
}

/** Wrong command-line usage (exit 64). */
export class UsageError extends Error {
  override name = "UsageError";
}

/** Something failed on one host; other hosts go on. */
export class HostError extends Error {
  override name = "HostError";
  constructor(readonly host: string, message: string, options?: { cause?: unknown }) {
    super(`${host}: ${message}`, options);
  }
}

/** A host could not be reached or authenticated. */
export class UnreachableError extends HostError {
  override name = "UnreachableError";
}

/** The SSH connection dropped (or was never there) while a command ran: the step may be retried on a new one. */
export class LostConnection extends HostError {
  override name = "LostConnection";
}

/** A module broke its contract (plan threw, bad change): a bug to report. */
export class ModuleBug extends Error {
  override name = "ModuleBug";
}

export function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
