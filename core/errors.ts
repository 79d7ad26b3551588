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
  constructor(
    readonly host: string,
    message: string,
    options?: { cause?: unknown },
  ) {
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

/** The longest a user's value is shown in any message (a 5 MB value must not be echoed). */
export const QUOTE_MAX = 60;

/** `text` cut to `max` characters, ending in "…" when cut. */
export function shorten(text: string, max = QUOTE_MAX): string {
  if (text.length <= max) return text;
  const cut = text.slice(0, max - 1);
  // never end on half a surrogate pair
  return (/[\ud800-\udbff]$/.test(cut) ? cut.slice(0, -1) : cut) + "…";
}

/**
 * A user's value as every message shows it: strings quoted and shortened; mappings and
 * lists by what they are, never whole (a playbook written as a map is not echoed).
 */
export function quote(value: unknown, max = QUOTE_MAX): string {
  if (typeof value === "string") return JSON.stringify(shorten(value, max));
  if (Array.isArray(value)) return `a list of ${value.length} item${value.length === 1 ? "" : "s"}`;
  if (value === null) return "null";
  if (typeof value === "object") {
    const n = Object.keys(value).length;
    return `a mapping of ${n} key${n === 1 ? "" : "s"}`;
  }
  if (typeof value === "function") return "a function";
  return shorten(String(value), max);
}
