// NetworkManager keyfiles (nm-settings-keyfile(5)): render, read and compare by meaning.
// NetworkManager may rewrite a keyfile (other group aliases, the new controller/port
// names since 1.46, key order), so two keyfiles are the same when they mean the same.

export type Keyfile = Record<string, Record<string, string>>;

/** Group aliases NetworkManager reads as the same setting. */
const GROUP_ALIASES: Record<string, string> = {
  "802-3-ethernet": "ethernet",
  "802-11-wireless": "wifi",
  "802-11-wireless-security": "wifi-security",
};
/** Deprecated [connection] names (what NM 1.42 writes) and their successors (1.46+). */
const KEY_ALIASES: Record<string, string> = {
  controller: "master",
  "port-type": "slave-type",
  "autoconnect-ports": "autoconnect-slaves",
};
const BOOLEANS: Record<string, string> = { yes: "true", no: "false", "1": "true", "0": "false" };
/** Keys whose values are enums, not booleans, though they may read 1 or 0. */
const NOT_BOOLEAN = new Set(["autoconnect-slaves", "autoconnect-priority", "autoconnect-retries"]);

export function renderKeyfile(file: Keyfile): string {
  const groups = Object.entries(file).map(([group, keys]) =>
    [`[${group}]`, ...Object.entries(keys).map(([k, v]) => `${k}=${escapeValue(v)}`)].join("\n"));
  return groups.join("\n\n") + "\n";
}

/** GKeyFile escapes: a backslash, and leading whitespace, which would otherwise be dropped. */
function escapeValue(value: string): string {
  return value.replace(/\\/g, "\\\\").replace(/^ /, "\\s").replace(/\n/g, "\\n").replace(/\t/g, "\\t");
}

export function parseKeyfile(text: string): Keyfile {
  const file: Keyfile = {};
  let group: Record<string, string> | null = null;
  for (const raw of text.split("\n")) {
    const line = raw.trim();
    if (!line || line.startsWith("#") || line.startsWith(";")) continue;
    const header = /^\[(.+)\]$/.exec(line);
    if (header) {
      group = file[header[1]] ??= {};
      continue;
    }
    const eq = line.indexOf("=");
    if (group && eq > 0) group[line.slice(0, eq).trim()] = line.slice(eq + 1).trim();
  }
  return file;
}

/** A keyfile reduced to what it means: canonical group and key names, no empty groups. */
export function keyfileMeaning(file: Keyfile): Keyfile {
  const meaning: Keyfile = {};
  for (const [group, keys] of Object.entries(file)) {
    const name = GROUP_ALIASES[group] ?? group;
    for (const [key, value] of Object.entries(keys)) {
      const canonical = name === "connection" ? KEY_ALIASES[key] ?? key : key;
      const normal = NOT_BOOLEAN.has(canonical) ? value : BOOLEANS[value.toLowerCase()] ?? value;
      (meaning[name] ??= {})[canonical] = normal;
    }
  }
  return meaning;
}

export function sameMeaning(a: string | null, b: string | null): boolean {
  if (a === null || b === null) return a === b;
  return canonicalText(keyfileMeaning(parseKeyfile(a))) === canonicalText(keyfileMeaning(parseKeyfile(b)));
}

function canonicalText(file: Keyfile): string {
  const sorted = Object.keys(file).sort().map((g) => [g, Object.entries(file[g]).sort(([a], [b]) => a.localeCompare(b))]);
  return JSON.stringify(sorted);
}

/** The text with `key=value` set in `[group]` (added to the group, or the group added); the rest kept byte for byte. */
export function withKey(text: string, group: string, key: string, value: string): string {
  const lines = text.split("\n");
  const groupNames = new Set([group, ...Object.entries(GROUP_ALIASES).filter(([, v]) => v === group).map(([k]) => k)]);
  let inGroup = false;
  let groupEnd = -1;
  for (let i = 0; i < lines.length; i++) {
    const header = /^\s*\[(.+)\]\s*$/.exec(lines[i]);
    if (header) {
      inGroup = groupNames.has(header[1]);
      if (inGroup) groupEnd = i;
      continue;
    }
    if (!inGroup) continue;
    if (new RegExp(`^\\s*${key}\\s*=`).test(lines[i])) {
      lines[i] = `${key}=${value}`;
      return lines.join("\n");
    }
    if (lines[i].trim()) groupEnd = i;
  }
  if (groupEnd < 0) return `${text.replace(/\n*$/, "\n")}\n[${group}]\n${key}=${value}\n`;
  lines.splice(groupEnd + 1, 0, `${key}=${value}`);
  return lines.join("\n");
}
