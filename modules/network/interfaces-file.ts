// ifupdown's configuration as ifupdown reads it (interfaces(5)): stanzas, their option lines,
// the lines that name interfaces (auto, allow-*, no-auto-down, no-scripts) and the lines that
// read other files (source, source-directory). Each block keeps the physical lines it came
// from, so that a module edits only the blocks it owns and every other byte stays as it was.
import { lines } from "../../core/module-api.js";

/** Lines naming interfaces without configuring them. */
const NAMING = /^(auto|allow-[^\s]+|no-auto-down|no-scripts)$/;
/** Keywords that end the stanza before them. */
const STANZA_START = /^(iface|mapping|auto|allow-[^\s]+|no-auto-down|no-scripts|source|source-directory|rename)$/;

export type Block =
  /** iface NAME FAMILY METHOD and its option lines; mapping PATTERN… and its map/script lines. */
  | { kind: "iface" | "mapping"; names: string[]; options: string[][]; lines: string[]; line: number }
  | { kind: "naming"; keyword: string; names: string[]; lines: string[]; line: number }
  | { kind: "source"; keyword: "source" | "source-directory"; pattern: string; lines: string[]; line: number }
  /** Comments, blank lines and anything else: kept as it is. */
  | { kind: "other"; lines: string[]; line: number };

interface Logical {
  text: string;
  lines: string[];
  line: number;
}

/** Physical lines joined where one ends in a backslash (interfaces(5)). */
function logicalLines(text: string): Logical[] {
  const out: Logical[] = [];
  let pending: Logical | null = null;
  lines(text).forEach((raw, i) => {
    const current: Logical = pending ?? { text: "", lines: [], line: i + 1 };
    current.lines.push(raw);
    const continued = raw.endsWith("\\") && !raw.trimStart().startsWith("#");
    current.text += continued ? raw.slice(0, -1) : raw;
    pending = continued ? current : null;
    if (!continued) out.push(current);
  });
  if (pending) out.push(pending);
  return out;
}

const wordsOf = (text: string) => text.trim().split(/\s+/).filter(Boolean);
const isComment = (l: Logical) => l.text.trimStart().startsWith("#");
const isBlank = (l: Logical) => l.text.trim() === "";

export function parseInterfaces(text: string | null): Block[] {
  const blocks: Block[] = [];
  const all = logicalLines(text ?? "");
  let stanza: Extract<Block, { kind: "iface" | "mapping" }> | null = null;
  let held: Logical[] = []; // comments and blanks inside a stanza: its own only if an option follows
  const flushHeld = () => {
    for (const l of held) blocks.push({ kind: "other", lines: l.lines, line: l.line });
    held = [];
  };
  for (const l of all) {
    if (isComment(l) || isBlank(l)) {
      if (stanza) held.push(l);
      else blocks.push({ kind: "other", lines: l.lines, line: l.line });
      continue;
    }
    const words = wordsOf(l.text);
    if (stanza && !STANZA_START.test(words[0])) {
      for (const h of held) stanza.lines.push(...h.lines);
      held = [];
      stanza.options.push(words);
      stanza.lines.push(...l.lines);
      continue;
    }
    flushHeld();
    stanza = null;
    const [keyword, ...rest] = words;
    if (keyword === "iface" || keyword === "mapping") {
      stanza = { kind: keyword, names: keyword === "iface" ? rest.slice(0, 1) : rest, options: [], lines: [...l.lines], line: l.line };
      blocks.push(stanza);
    } else if (NAMING.test(keyword)) blocks.push({ kind: "naming", keyword, names: rest, lines: l.lines, line: l.line });
    else if (keyword === "source" || keyword === "source-directory") blocks.push({ kind: "source", keyword, pattern: rest[0] ?? "", lines: l.lines, line: l.line });
    else blocks.push({ kind: "other", lines: l.lines, line: l.line });
  }
  flushHeld();
  return blocks;
}

/** The text of blocks (each line ends with a newline). */
export function renderBlocks(blocks: Block[]): string {
  const all = blocks.flatMap((b) => b.lines);
  return all.length ? all.join("\n") + "\n" : "";
}

/** A shell glob (as ifupdown's `source` expands it with glob(3)) as a regular expression. */
function globToRegExp(glob: string): RegExp {
  let re = "";
  for (let i = 0; i < glob.length; i++) {
    const c = glob[i];
    if (c === "*") re += "[^/]*";
    else if (c === "?") re += "[^/]";
    else if (c === "[") {
      const end = glob.indexOf("]", i + 2);
      if (end < 0) re += "\\[";
      else {
        const set = glob
          .slice(i + 1, end)
          .replace(/^!/, "^")
          .replace(/\\/g, "\\\\");
        re += `[${set}]`;
        i = end;
      }
    } else re += c.replace(/[.+^${}()|\\\]]/g, "\\$&");
  }
  return new RegExp(`^${re}$`);
}

/** Whether an interface name matches one of a mapping's patterns (globs, as ifupdown matches them). */
export function mappingMatches(patterns: string[], name: string): boolean {
  return patterns.some((p) => globToRegExp(p).test(name));
}

const dirOf = (path: string) => path.slice(0, path.lastIndexOf("/")) || "/";

/** An absolute path: relative ones are read relative to the file that names them. */
export function sourcePattern(block: Extract<Block, { kind: "source" }>, fromFile: string): string {
  return block.pattern.startsWith("/") ? block.pattern : `${dirOf(fromFile)}/${block.pattern}`;
}

/**
 * The files a source line reads, of those in `dir` (a listing), and whether it may read
 * files elsewhere too (then nobody can tell from `dir` alone what it configures).
 * source-directory reads the names run-parts accepts (letters, digits, "_" and "-").
 */
export function sourcedFiles(block: Extract<Block, { kind: "source" }>, fromFile: string, dir: string, entries: string[]): { files: string[]; elsewhere: boolean } {
  const pattern = sourcePattern(block, fromFile).replace(/\/+$/, "");
  if (block.keyword === "source-directory") {
    if (pattern !== dir) return { files: [], elsewhere: true };
    return { files: entries.filter((e) => /^[A-Za-z0-9_-]+$/.test(e)).map((e) => `${dir}/${e}`), elsewhere: false };
  }
  if (dirOf(pattern) !== dir) return { files: [], elsewhere: true };
  const re = globToRegExp(pattern);
  return { files: entries.map((e) => `${dir}/${e}`).filter((f) => re.test(f)), elsewhere: false };
}

/** Interfaces a block names: a stanza's, or those of an auto/allow-* line. */
export function namesOf(block: Block): string[] {
  return block.kind === "iface" || block.kind === "naming" ? block.names : [];
}
