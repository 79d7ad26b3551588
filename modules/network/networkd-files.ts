// systemd-networkd's configuration read as networkd reads it (systemd.network(5),
// systemd.netdev(5), src/network/networkd-network.c, src/shared/net-condition.c): unit-file
// syntax, the search path with same-name override and masking, files taken in lexical order
// of their names across all directories, and a link configured by the first .network whose
// [Match] section matches it (Name= globs, `!` negation, Type=, MACAddress=, OriginalName=).

/** The search path, highest priority first: a file hides every same-named one further down. */
export const NETWORKD_DIRS = ["/etc/systemd/network", "/run/systemd/network", "/usr/local/lib/systemd/network", "/usr/lib/systemd/network", "/lib/systemd/network"];

export interface UnitFile {
  /** Full path of the file networkd reads. */
  path: string;
  dir: string;
  name: string;
  text: string;
}

/** Sections in order, each with its assignments in order (a key may repeat). */
export type UnitSections = [string, [string, string][]][];

/** Unit-file syntax: `#`/`;` comments, `[Section]`, `Key=Value` trimmed, a trailing backslash continues the line. */
export function parseUnit(text: string): UnitSections {
  const sections: UnitSections = [];
  let pending = "";
  for (const raw of text.split("\n")) {
    const trimmed = raw.trim();
    if (!pending && (trimmed.startsWith("#") || trimmed.startsWith(";"))) continue;
    const line = pending + trimmed;
    pending = "";
    if (line.endsWith("\\")) {
      pending = `${line.slice(0, -1)} `;
      continue;
    }
    if (!line) continue;
    const header = /^\[(.+)\]$/.exec(line);
    if (header) sections.push([header[1], []]);
    else if (sections.length && line.includes("=")) {
      const eq = line.indexOf("=");
      sections[sections.length - 1][1].push([line.slice(0, eq).trim(), line.slice(eq + 1).trim()]);
    }
  }
  return sections;
}

function assignments(sections: UnitSections, section: string): [string, string][] {
  return sections.filter(([name]) => name === section).flatMap(([, keys]) => keys);
}

/**
 * The files networkd reads, in the order it reads them: per name the one in the directory
 * of highest priority; a name masked by an empty file or a symlink to /dev/null dropped;
 * sorted by name (strcmp), whatever directory each is in.
 */
export function networkdFiles(dirs: { dir: string; entries: Record<string, string> | null }[], maskedPaths: string[], suffix: string): UnitFile[] {
  const seen = new Map<string, UnitFile | null>();
  const masked = new Set(maskedPaths);
  for (const dir of NETWORKD_DIRS) {
    const listing = dirs.find((d) => d.dir === dir)?.entries ?? {};
    const names = new Set([...Object.keys(listing), ...maskedPaths.filter((p) => p.startsWith(`${dir}/`)).map((p) => p.slice(dir.length + 1))]);
    for (const name of names) {
      if (!name.endsWith(suffix) || seen.has(name)) continue;
      const path = `${dir}/${name}`;
      const text = listing[name];
      seen.set(name, masked.has(path) || text === undefined || text.trim() === "" ? null : { path, dir, name, text });
    }
  }
  return [...seen.values()].filter((f): f is UnitFile => f !== null).sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
}

/** A link as [Match] sees it. */
export interface Link {
  name: string;
  /** networkd's link type: ether, wlan, bond… */
  type: string;
  /** Hardware addresses the link has or may take (a bond takes its active slave's). */
  macs: string[];
  /** Its netdev kind (bond), none for a physical device. */
  kind?: string;
}

/** Keys of [Match] that describe the host or the hardware, which a plan cannot evaluate. */
const UNKNOWABLE = new Set([
  "Driver",
  "Path",
  "Property",
  "Host",
  "Virtualization",
  "KernelCommandLine",
  "KernelVersion",
  "Architecture",
  "Firmware",
  "Credential",
  "PermanentMACAddress",
  "WLANInterfaceType",
  "SSID",
  "BSSID",
]);

/**
 * Whether a .network's [Match] picks this link. Name=, OriginalName= (taken to be the same
 * name), Type=, Kind= and MACAddress= are evaluated; a file with no match at all is ignored by
 * networkd (it asks for Name=*). A file that names the link but also tests something only
 * the host knows (Driver=, Path=…) counts as matching: it was written for this link.
 */
export function matchesLink(text: string, link: Link): boolean {
  const match = assignments(parseUnit(text), "Match");
  const lists = new Map<string, string[]>();
  for (const [key, value] of match) {
    if (value === "")
      lists.set(key, []); // an empty assignment resets the list
    else lists.set(key, [...(lists.get(key) ?? []), ...patternsOf(value)]);
  }
  const set = [...lists].filter(([, v]) => v.length);
  if (!set.length) return false;
  let identified = false;
  for (const [key, patterns] of set) {
    if (UNKNOWABLE.has(key)) continue;
    const value =
      key === "Name" || key === "OriginalName" ? [link.name] : key === "Type" ? [link.type] : key === "Kind" ? [link.kind ?? ""] : key === "MACAddress" ? link.macs : null;
    if (value === null) continue;
    const ok = key === "MACAddress" ? patterns.some((p) => link.macs.some((m) => m.toLowerCase() === p.toLowerCase())) : value.some((v) => conditionTest(patterns, v));
    if (!ok) return false;
    if (patterns.some((p) => !p.startsWith("!"))) identified = true;
  }
  return identified || set.every(([key]) => !UNKNOWABLE.has(key));
}

/** Words of a list value; a leading `!` negates the whole assignment (kept on each word, as networkd stores it). */
function patternsOf(value: string): string[] {
  const invert = value.startsWith("!");
  const words = (invert ? value.slice(1) : value)
    .split(/\s+/)
    .filter(Boolean)
    .map((w) => w.replace(/^"(.*)"$/, "$1"));
  return words.map((w) => (invert ? `!${w}` : w));
}

/** net_condition_test_strv: a negative pattern that matches fails; otherwise a positive one must match, if there is any. */
function conditionTest(patterns: string[], value: string): boolean {
  let matched = false;
  let positive = false;
  for (const p of patterns) {
    const invert = p.startsWith("!");
    if (!invert) positive = true;
    if (fnmatch(invert ? p.slice(1) : p, value)) {
      if (invert) return false;
      matched = true;
    }
  }
  return positive ? matched : true;
}

/**
 * fnmatch(3) without flags: `*`, `?`, bracket expressions (`[a-z]`, `[!x]`, `[^x]`, `[[:digit:]]`),
 * `\` quoting the next character; a `[` without its `]` is an ordinary character (glibc).
 */
export function fnmatch(pattern: string, text: string): boolean {
  const memo = new Map<string, boolean>();
  const at = (p: number, t: number): boolean => {
    const key = `${p},${t}`;
    if (memo.has(key)) return memo.get(key)!;
    let result: boolean;
    if (p === pattern.length) result = t === text.length;
    else {
      const c = pattern[p];
      if (c === "*") result = at(p + 1, t) || (t < text.length && at(p, t + 1));
      else if (t === text.length) result = false;
      else if (c === "?") result = at(p + 1, t + 1);
      else if (c === "[") {
        const bracket = bracketAt(pattern, p);
        result = bracket ? bracket.test(text[t]) && at(bracket.end, t + 1) : text[t] === "[" && at(p + 1, t + 1);
      } else if (c === "\\" && p + 1 < pattern.length) result = text[t] === pattern[p + 1] && at(p + 2, t + 1);
      else result = text[t] === c && at(p + 1, t + 1);
    }
    memo.set(key, result);
    return result;
  };
  return at(0, 0);
}

const CLASSES: Record<string, RegExp> = {
  alpha: /[A-Za-z]/,
  digit: /[0-9]/,
  alnum: /[A-Za-z0-9]/,
  upper: /[A-Z]/,
  lower: /[a-z]/,
  space: /\s/,
  xdigit: /[0-9A-Fa-f]/,
  punct: /[!-/:-@[-`{-~]/,
  print: /[ -~]/,
  graph: /[!-~]/,
  cntrl: /[\x00-\x1f\x7f]/,
  blank: /[ \t]/,
};

/** The bracket expression starting at `start`, or null when it has no closing `]`. */
function bracketAt(pattern: string, start: number): { test(c: string): boolean; end: number } | null {
  let i = start + 1;
  const negate = pattern[i] === "!" || pattern[i] === "^";
  if (negate) i++;
  const tests: ((c: string) => boolean)[] = [];
  let first = true;
  while (i < pattern.length && (pattern[i] !== "]" || first)) {
    first = false;
    const cls = /^\[:([a-z]+):\]/.exec(pattern.slice(i));
    if (cls && CLASSES[cls[1]]) {
      const re = CLASSES[cls[1]];
      tests.push((c) => re.test(c));
      i += cls[0].length;
      continue;
    }
    let lo = pattern[i];
    if (lo === "\\" && i + 1 < pattern.length) lo = pattern[++i];
    if (pattern[i + 1] === "-" && i + 2 < pattern.length && pattern[i + 2] !== "]") {
      let hi = pattern[i + 2];
      let skip = 3;
      if (hi === "\\" && i + 3 < pattern.length) {
        hi = pattern[i + 3];
        skip = 4;
      }
      const [l, h] = [lo, hi];
      tests.push((c) => c >= l && c <= h);
      i += skip;
    } else {
      const single = lo;
      tests.push((c) => c === single);
      i++;
    }
  }
  if (i >= pattern.length) return null;
  return { test: (c) => tests.some((t) => t(c)) !== negate, end: i + 1 };
}

/** The name a .netdev creates ([NetDev] Name=, the last assignment). */
export function netdevName(text: string): string | undefined {
  return assignments(parseUnit(text), "NetDev")
    .filter(([k]) => k === "Name")
    .pop()?.[1];
}

/** The value of the last `key=` in `[section]`. */
export function unitValue(text: string, section: string, key: string): string | undefined {
  return assignments(parseUnit(text), section)
    .filter(([k]) => k === key)
    .pop()?.[1];
}
