// Secrets never reach diffs, logs, reports or error messages. This is the one place
// that knows which values are secret: those a module declares (secrets(args)), those
// under a key named like one (psk, password, passphrase, secret…), every value that was
// encrypted at rest (!age), and everything templated from any of these.
import { ModuleBug, messageOf } from "../errors.js";
import type { ModuleDefinition } from "../module-api.js";
import type { Taint } from "./template.js";

export const MASK = "********";

// Well-known secret settings, masked even when a module did not declare them: ifupdown's
// wpa-*, wpa_supplicant.conf(5) (psk, the "#psk=" comment wpa_passphrase writes,
// sae_password, password, private_key_passwd, wep_key0..3, pin), hostapd's wpa_passphrase and
// NetworkManager keyfiles (nm-settings-keyfile(5): psk, wep-key0..3, leap-password, and
// 802-1x's password, password-raw, pin, private-key-password and the phase2-/cert variants;
// a WireGuard private-key or preshared-key; every key of [vpn-secrets]).
const SECRET_LINES =
  /^(\s*#?\s*(?:wpa-psk|wpa-password|psk|password|password-raw|sae_password|private_key_passwd|private_key2_passwd|pin|wep_key[0-3]|wep-key[0-3]|wpa_passphrase|leap-password|(?:phase2-)?(?:private-key|ca-cert|client-cert)-password|private-key|preshared-key|mka-cak)\s*[= ]\s*)(.+)$/gim;
/** Keyfile groups whose every value is secret. */
const SECRET_GROUPS = new Set(["vpn-secrets"]);

/** Every `key=value` of a keyfile group that holds only secrets ([vpn-secrets]) masked. */
function maskSecretGroups(text: string): string {
  let secret = false;
  return text
    .split("\n")
    .map((line) => {
      const header = /^\s*\[([^\]]*)\]\s*$/.exec(line);
      if (header) secret = SECRET_GROUPS.has(header[1]);
      else if (secret) return line.replace(/^(\s*[^#=][^=]*=\s*).+$/, `$1${MASK}`);
      return line;
    })
    .join("\n");
}

/** A key whose value is secret whatever module it belongs to (bond's wpa_psk, any psk, password…). */
const SECRET_KEY = /psk|passw(?:or)?d|passphrase|secret|token|credential|private[_-]?key|^pass$/i;

export function isSecretKey(key: string | number): boolean {
  return typeof key === "string" && SECRET_KEY.test(key);
}

export function masker(secrets: string[]): (text: string) => string {
  const values = secrets.filter((s) => s.length >= 1).sort((a, b) => b.length - a.length);
  return (text: string) => {
    let out = text;
    for (const value of values) out = out.split(value).join(MASK);
    return maskSecretGroups(out.replace(SECRET_LINES, (_, key: string) => `${key}${MASK}`));
  };
}

/**
 * The secret a file change replaces is secret too, though this run does not know it (a
 * rotated token): a line of `before` shaped like a masked line of `after` (the same text
 * around each ********) is shown as that masked line; a line that is all secret, at the
 * same line number.
 */
export function maskReplaced(before: string, maskedAfter: string): string {
  const after = maskedAfter.split("\n");
  const allSecret = (line: string | undefined) => line !== undefined && line.includes(MASK) && !line.split(MASK).join("").trim();
  const shapes = [...new Set(after.filter((l) => l.includes(MASK) && !allSecret(l)))].map((line) => ({
    line,
    shape: new RegExp(
      `^${line
        .split(MASK)
        .map((part) => part.replace(/[\\^$.*+?()[\]{}|/]/g, "\\$&"))
        .join(".+")}$`,
      "s",
    ),
  }));
  return before
    .split("\n")
    .map((line, i) => {
      if (line.includes(MASK)) return line;
      if (allSecret(after[i])) return after[i];
      return shapes.find((s) => s.shape.test(line))?.line ?? line;
    })
    .join("\n");
}

/** The values a module declares secret in these (valid) args; a module that throws has a bug. */
export function secretsOf(module: ModuleDefinition, args: unknown, task: string): string[] {
  let values: unknown;
  try {
    values = module.secrets?.(args) ?? [];
  } catch (error) {
    throw new ModuleBug(`module "${module.name}" failed to list the secrets of task ${task}: ${messageOf(error)}`, { cause: error });
  }
  if (!Array.isArray(values) || values.some((v) => typeof v !== "string")) throw new ModuleBug(`module "${module.name}": secrets() must return a list of strings (task ${task})`);
  return values;
}

/**
 * The secret strings in a variable's value: all of it when its name is secret (`named`),
 * else what lies under secret-named keys and every value that was decrypted (`known`).
 * Numbers count (a PSK written 12345678 is a YAML number); booleans do not.
 */
export function secretStrings(value: unknown, named: boolean, known: ReadonlySet<string>): string[] {
  if (typeof value === "string") return value && (named || known.has(value)) ? [value] : [];
  if (typeof value === "number" || typeof value === "bigint") return named ? [String(value)] : [];
  if (value && typeof value === "object") return Object.entries(value).flatMap(([k, v]) => secretStrings(v, named || isSecretKey(k), known));
  return [];
}

/** A variable reference `a.b.c` names a secret when any part of it is secret-named (wifi.psk). */
function namesSecret(name: string): boolean {
  return name.split(".").some(isSecretKey);
}

/**
 * Taint for one task on one host: a variable is secret when its name is, or its value holds
 * a secret (secretStrings); what it holds is collected in `values` for masking.
 */
export function variableTaint(known: ReadonlySet<string>): Taint & { values: Set<string> } {
  const values = new Set<string>();
  return {
    paths: [],
    values,
    isSecret(name, value) {
      const found = secretStrings(value, namesSecret(name), known);
      found.forEach((s) => values.add(s));
      return found.length > 0 || namesSecret(name);
    },
  };
}

/**
 * The shortest secret masked in output: a "secret" shorter than this is a setting (secret_mode:
 * off), and masking it would garble everything about the host. Errors still hide it (secretPaths).
 */
export const SHORTEST_MASKED = 4;

/** The strings in `args` at (or under) the tainted paths: what the task renders from secrets. */
export function taintedStrings(args: unknown, paths: (string | number)[][]): string[] {
  return paths.flatMap((path) => secretStrings(valueAt(args, path), true, new Set()));
}

/**
 * Paths (under `base`) of the values that must not be shown in an error about `args`, which
 * may be invalid: every value under a secret-named key, every string the module's secrets()
 * names (asked leniently: invalid args may make it throw), every value templated from a
 * secret variable (`taint`) and every value that contains a secret string.
 */
export function secretPaths(
  module: ModuleDefinition | undefined,
  args: unknown,
  taint?: { paths: (string | number)[][]; values: Iterable<string> },
): (path: (string | number)[]) => boolean {
  let declared: string[] = [];
  try {
    const values = module?.secrets?.(args);
    if (Array.isArray(values)) declared = values.filter((v): v is string => typeof v === "string" && v.length > 0);
  } catch {
    /* invalid args: secret-named keys still hide their values */
  }
  const secrets = [...declared, ...(taint ? [...taint.values, ...taintedStrings(args, taint.paths)] : [])].filter((s) => s.length > 0);
  return (path) => {
    if (path.some(isSecretKey)) return true;
    if (taint?.paths.some((t) => t.every((part, i) => path[i] === part))) return true;
    return secrets.length > 0 && containsAny(valueAt(args, path), secrets);
  };
}

function valueAt(root: unknown, path: (string | number)[]): unknown {
  let value = root;
  for (const part of path) value = value !== null && typeof value === "object" ? (value as Record<string, unknown>)[part] : undefined;
  return value;
}

/** A string holds a secret when a secret is any part of it ("{{ psk }}/24"), numbers as written. */
function containsAny(value: unknown, secrets: string[]): boolean {
  if (typeof value === "string" || typeof value === "number") return secrets.some((s) => String(value).includes(s));
  if (value && typeof value === "object") return Object.values(value).some((v) => containsAny(v, secrets));
  return false;
}
