// GLib's key-file syntax (GKeyFile, glib/gkeyfile.c), the format under NetworkManager's
// keyfiles: read and written by GLib's rules, so a value means here what it means to the
// daemon. Lines keep their position, so a file can be edited key by key and every other
// byte (comments, order, what NetworkManager added) stays as it was.

export type KeyfileLine =
  { kind: "comment"; text: string } | { kind: "group"; text: string; group: string } | { kind: "entry"; text: string; group: string; key: string; raw: string };

export interface KeyfileDocument {
  lines: KeyfileLine[];
  /** Whether the text ended with a newline (kept when the document is written back). */
  finalNewline: boolean;
}

/** A line GLib refuses: NetworkManager then ignores the whole file. */
export class KeyfileSyntaxError extends Error {
  override name = "KeyfileSyntaxError";
  constructor(
    readonly line: number,
    message: string,
  ) {
    super(`line ${line}: ${message}`);
  }
}

/**
 * The lines of a key file, as g_key_file_load_from_data reads them: leading whitespace is
 * dropped, `#` and blank lines are comments, `[name]` (whitespace after it allowed) opens a
 * group, `key=value` with whitespace around the key and before the value dropped (after the
 * value kept), a trailing CR dropped. Anything else, or a key before the first group, is an error.
 */
export function parseDocument(text: string): KeyfileDocument {
  const finalNewline = text.endsWith("\n");
  const rows = text.split("\n");
  if (finalNewline) rows.pop();
  const lines: KeyfileLine[] = [];
  let group: string | null = null;
  rows.forEach((row, i) => {
    const line = row.endsWith("\r") ? row.slice(0, -1) : row;
    const body = line.replace(/^[ \t]+/, "");
    if (body === "" || body.startsWith("#")) return void lines.push({ kind: "comment", text: row });
    const header = /^\[([^\]]*)\][ \t]*$/.exec(body);
    if (header) {
      if (header[1] === "" || /[[\]\x00-\x1f]/.test(header[1])) throw new KeyfileSyntaxError(i + 1, `invalid group name "${header[1]}"`);
      group = header[1];
      return void lines.push({ kind: "group", text: row, group });
    }
    const eq = body.indexOf("=");
    if (eq <= 0) throw new KeyfileSyntaxError(i + 1, "not a key-value pair, group or comment");
    const key = body.slice(0, eq).replace(/[ \t]+$/, "");
    if (!/^[^[\]]+(\[[^[\]]+\])?$/.test(key)) throw new KeyfileSyntaxError(i + 1, `invalid key name "${key}"`);
    if (group === null) throw new KeyfileSyntaxError(i + 1, "a key before the first group");
    lines.push({ kind: "entry", text: row, group, key, raw: body.slice(eq + 1).replace(/^[ \t\n\v\f\r]+/, "") });
  });
  return { lines, finalNewline };
}

export function writeDocument(doc: KeyfileDocument): string {
  const text = doc.lines.map((l) => l.text).join("\n");
  return doc.lines.length && doc.finalNewline ? `${text}\n` : text;
}

/** group → key → raw (still escaped) value: duplicate groups merge, the last of duplicate keys wins, group order kept. */
export function rawValues(doc: KeyfileDocument): Map<string, Map<string, string>> {
  const groups = new Map<string, Map<string, string>>();
  for (const line of doc.lines) {
    if (line.kind === "group" && !groups.has(line.group)) groups.set(line.group, new Map());
    if (line.kind === "entry") {
      const keys = groups.get(line.group)!;
      keys.delete(line.key); // a repeated key counts where it was last set
      keys.set(line.key, line.raw);
    }
  }
  return groups;
}

/** g_key_file_get_string: \s \n \t \r \\ unescaped; null where GLib refuses the value (any other escape, or one at the end). */
export function unescapeString(raw: string): string | null {
  let out = "";
  for (let i = 0; i < raw.length; i++) {
    if (raw[i] !== "\\") {
      out += raw[i];
      continue;
    }
    const next = raw[++i];
    const plain = ESCAPES[next];
    if (plain === undefined) return null;
    out += plain;
  }
  return out;
}
const ESCAPES: Record<string, string> = { s: " ", n: "\n", t: "\t", r: "\r", "\\": "\\" };

/** g_key_file_get_string_list: items split at each `;` not escaped (`\;`), the last `;` optional; null where GLib refuses it. */
export function unescapeList(raw: string): string[] | null {
  const items: string[] = [];
  let item = "";
  for (let i = 0; i < raw.length; i++) {
    const c = raw[i];
    if (c === ";") {
      items.push(item);
      item = "";
    } else if (c === "\\") {
      const next = raw[++i];
      if (next === ";") item += ";";
      else if (ESCAPES[next] !== undefined) item += ESCAPES[next];
      else return null;
    } else item += c;
  }
  if (item !== "") items.push(item);
  return items;
}

/** g_key_file_set_string: leading blanks, newlines, carriage returns and backslashes escaped; nothing else. */
export function escapeString(value: string, escapeSeparator = false): string {
  let out = "";
  let leading = true;
  for (const c of value) {
    if (c === " " && leading) out += "\\s";
    else if (c === "\t" && leading) out += "\\t";
    else if (c === "\n") out += "\\n";
    else if (c === "\r") out += "\\r";
    else if (c === "\\") out += "\\\\";
    else if (c === ";" && escapeSeparator) out += "\\;";
    else {
      out += c;
      leading = false;
    }
  }
  return out;
}

/** g_key_file_set_string_list: each item escaped (`;` too), each followed by `;`. */
export function escapeList(items: string[]): string {
  return items.map((item) => `${escapeString(item, true)};`).join("");
}

/** g_key_file_get_boolean: true/1 and false/0 (surrounding whitespace allowed), nothing else (null). */
export function parseBoolean(raw: string): boolean | null {
  const v = raw.trim();
  return v === "true" || v === "1" ? true : v === "false" || v === "0" ? false : null;
}

/** An integer as NetworkManager reads one (strtoll with base 0: 0x hex, 0 octal; surrounding whitespace allowed); null if it is none. */
export function parseInteger(raw: string): number | null {
  const v = raw.trim();
  const m = /^([+-]?)(0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)$/.exec(v);
  if (!m) return null;
  const digits = m[2];
  const n = /^0[xX]/.test(digits) ? parseInt(digits.slice(2), 16) : digits.length > 1 && digits.startsWith("0") ? parseInt(digits, 8) : parseInt(digits, 10);
  return m[1] === "-" ? -n : n;
}
