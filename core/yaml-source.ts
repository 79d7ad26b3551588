// YAML documents that remember where every value came from, so that schema and
// template errors can name file:line:column.
import { readFileSync } from "node:fs";
import { relative } from "node:path";
import { LineCounter, parseDocument, isNode, type Document } from "yaml";
import type { ErrorObject } from "ajv";
import { ConfigError } from "./errors.js";

export type Path = (string | number)[];

export class YamlSource {
  private constructor(readonly file: string, readonly doc: Document.Parsed, private readonly lines: LineCounter) {}

  static load(file: string): YamlSource {
    let text: string;
    try {
      text = readFileSync(file, "utf8");
    } catch (error) {
      throw new ConfigError(`${file}: cannot read file (${(error as NodeJS.ErrnoException).code ?? error}). Check the path.`);
    }
    return YamlSource.parse(file, text);
  }

  static parse(file: string, text: string): YamlSource {
    const lines = new LineCounter();
    const doc = parseDocument(text, { lineCounter: lines, prettyErrors: false, uniqueKeys: true });
    const source = new YamlSource(displayPath(file), doc, lines);
    const [first] = doc.errors;
    if (first) {
      const at = source.positionOfOffset(first.pos[0]);
      throw new ConfigError(`${at}: invalid YAML: ${first.message.split("\n")[0]}. Fix the syntax at this position.`);
    }
    return source;
  }

  toJS(): unknown {
    return this.doc.toJS();
  }

  positionOfOffset(offset: number): string {
    const { line, col } = this.lines.linePos(offset);
    return `${this.file}:${line}:${col}`;
  }

  /** file:line:col of the deepest node that exists along `path`. */
  position(path: Path): string {
    for (let depth = path.length; depth >= 0; depth--) {
      const node = depth === 0 ? this.doc.contents : this.doc.getIn(path.slice(0, depth), true);
      if (isNode(node) && node.range) return this.positionOfOffset(node.range[0]);
    }
    return `${this.file}:1:1`;
  }

  /** file:line:col of a map key (better than the value for "unknown key" errors). */
  keyPosition(path: Path, key: string): string {
    const parent = path.length ? this.doc.getIn(path, true) : this.doc.contents;
    const items = (parent as { items?: { key: unknown }[] } | null)?.items ?? [];
    for (const pair of items) {
      const k = pair.key as { value?: unknown; range?: [number, number, number] };
      if (isNode(k) && k.value === key && k.range) return this.positionOfOffset(k.range[0]);
    }
    return this.position(path);
  }

  /** Turn ajv errors into one ConfigError naming file:line:col, what is wrong and the fix. */
  schemaError(errors: ErrorObject[], base: Path, what: string): ConfigError {
    const lines = pickErrors(errors).map((e) => {
      const path = [...base, ...pointerToPath(e.instancePath)];
      const key = e.keyword === "additionalProperties" ? String(e.params.additionalProperty) : undefined;
      const at = key ? this.keyPosition(path, key) : this.position(path);
      return `${at}: ${what}${describePath(path.slice(base.length), key)}: ${explain(e)}`;
    });
    return new ConfigError(lines.join("\n"));
  }
}

function pointerToPath(pointer: string): Path {
  if (!pointer) return [];
  return pointer.slice(1).split("/").map((p) => {
    const key = p.replace(/~1/g, "/").replace(/~0/g, "~");
    return /^\d+$/.test(key) ? Number(key) : key;
  });
}

function displayPath(file: string): string {
  const rel = relative(process.cwd(), file);
  return rel && !rel.startsWith("..") ? rel : file;
}

function describePath(path: Path, key?: string): string {
  const parts = [...path, ...(key ? [key] : [])];
  if (!parts.length) return "";
  return " > " + parts.map((p) => (typeof p === "number" ? `[${p}]` : p)).join(".").replace(/\.\[/g, "[");
}

/** ajv reports every branch of a oneOf/anyOf; keep the most specific errors. */
function pickErrors(errors: ErrorObject[]): ErrorObject[] {
  const specific = errors.filter((e) => !["anyOf", "oneOf", "if"].includes(e.keyword));
  // Of a oneOf's branches, a "wrong type" error is noise where another error fits the value's type.
  const chosen = (specific.length ? specific : errors).filter((e) =>
    e.keyword !== "type" || !specific.some((o) => o !== e && o.keyword !== "type" && o.instancePath === e.instancePath));
  const seen = new Set<string>();
  return chosen.filter((e) => {
    const id = `${e.instancePath}|${e.keyword}|${JSON.stringify(e.params)}`;
    if (seen.has(id)) return false;
    seen.add(id);
    return true;
  }).slice(0, 5);
}

function explain(e: ErrorObject): string {
  const got = (v: unknown) => ` (got ${JSON.stringify(v)})`;
  switch (e.keyword) {
    case "enum":
      return `must be one of ${(e.params.allowedValues as unknown[]).join(", ")}${got(e.data)}. Use one of those values.`;
    case "additionalProperties":
      return `unknown key. Remove it or check its spelling.`;
    case "required":
      return `missing required key "${e.params.missingProperty}". Add it.`;
    case "type":
      return `must be ${e.params.type}${got(e.data)}. Write a ${e.params.type}.`;
    case "pattern":
      return `must match ${e.params.pattern}${got(e.data)}. Use only the allowed characters.`;
    case "format":
      return `must be a valid ${e.params.format}${got(e.data)}.`;
    default:
      return `${e.message ?? "is invalid"}${e.data !== undefined && typeof e.data !== "object" ? got(e.data) : ""}.`;
  }
}
