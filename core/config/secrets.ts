// Secrets never reach diffs, logs, reports or error messages. This is the one place
// that knows which values are secret: those a module declares (secrets(args)) and
// those under a key named like one (psk, password, passphrase, secret…).
import { ModuleBug, messageOf } from "../errors.js";
import type { ModuleDefinition } from "../module-api.js";

export const MASK = "********";

// Well-known secret settings, masked even when a module did not declare them: ifupdown's
// wpa-*, wpa_supplicant.conf(5) (psk, the "#psk=" comment wpa_passphrase writes,
// sae_password, password, private_key_passwd, wep_key0..3, pin), hostapd's wpa_passphrase and
// NetworkManager keyfiles (nm-settings-keyfile(5): psk, wep-key0..3, leap-password, and
// 802-1x's password, password-raw, pin, private-key-password and the phase2-/cert variants;
// a WireGuard private-key or preshared-key; every key of [vpn-secrets]).
const SECRET_LINES = /^(\s*#?\s*(?:wpa-psk|wpa-password|psk|password|password-raw|sae_password|private_key_passwd|private_key2_passwd|pin|wep_key[0-3]|wep-key[0-3]|wpa_passphrase|leap-password|(?:phase2-)?(?:private-key|ca-cert|client-cert)-password|private-key|preshared-key|mka-cak)\s*[= ]\s*)(.+)$/gim;
/** Keyfile groups whose every value is secret. */
const SECRET_GROUPS = new Set(["vpn-secrets"]);

/** Every `key=value` of a keyfile group that holds only secrets ([vpn-secrets]) masked. */
function maskSecretGroups(text: string): string {
  let secret = false;
  return text.split("\n").map((line) => {
    const header = /^\s*\[([^\]]*)\]\s*$/.exec(line);
    if (header) secret = SECRET_GROUPS.has(header[1]);
    else if (secret) return line.replace(/^(\s*[^#=][^=]*=\s*).+$/, `$1${MASK}`);
    return line;
  }).join("\n");
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

/** The values a module declares secret in these (valid) args; a module that throws has a bug. */
export function secretsOf(module: ModuleDefinition, args: unknown, task: string): string[] {
  let values: unknown;
  try {
    values = module.secrets?.(args) ?? [];
  } catch (error) {
    throw new ModuleBug(`module "${module.name}" failed to list the secrets of task ${task}: ${messageOf(error)}`, { cause: error });
  }
  if (!Array.isArray(values) || values.some((v) => typeof v !== "string"))
    throw new ModuleBug(`module "${module.name}": secrets() must return a list of strings (task ${task})`);
  return values;
}

/**
 * Paths (under `base`) of the values that must not be shown in an error about `args`, which
 * may be invalid: every value under a secret-named key, and every string the module's
 * secrets() names (asked leniently: invalid args may make it throw).
 */
export function secretPaths(module: ModuleDefinition | undefined, args: unknown): (path: (string | number)[]) => boolean {
  let declared = new Set<string>();
  try {
    const values = module?.secrets?.(args);
    if (Array.isArray(values)) declared = new Set(values.filter((v): v is string => typeof v === "string" && v.length > 0));
  } catch { /* invalid args: secret-named keys still hide their values */ }
  return (path) => {
    if (path.some(isSecretKey)) return true;
    if (!declared.size) return false;
    let value: unknown = args;
    for (const part of path) value = value !== null && typeof value === "object" ? (value as Record<string, unknown>)[part] : undefined;
    return typeof value === "string" ? declared.has(value) : containsAny(value, declared);
  };
}

function containsAny(value: unknown, strings: Set<string>): boolean {
  if (typeof value === "string") return strings.has(value);
  if (value && typeof value === "object") return Object.values(value).some((v) => containsAny(v, strings));
  return false;
}
