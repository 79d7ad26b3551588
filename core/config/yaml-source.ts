// YAML documents that remember where every value came from, so that schema and
// template errors can name file:line:column. A value tagged !age is encrypted at rest
// (see vault.ts): it is replaced by its plaintext, in memory only, when loaded.
import { readFileSync } from "node:fs";
import { relative } from "node:path";
import { LineCounter, parseDocument, visit, isAlias, isCollection, isMap, isNode, isScalar, isSeq, Scalar, type Document, type Node, type Pair } from "yaml";
import type { ErrorObject } from "ajv";
import { ConfigError, quote, shorten } from "../errors.js";
import { FORMATS } from "./schema.js";

export type Path = (string | number)[];

/** More values than this reached through aliases is an alias bomb ("billion laughs"), not a playbook. */
export const MAX_ALIAS_EXPANSION = 1_000_000;

/** The tag of a value encrypted at rest: `wifi_psk: !age |` and the armored age file. */
export const AGE_TAG = "!age";

/** An encrypted value not yet decrypted: its armored text and where it is. */
export class Sealed {
  constructor(
    readonly armored: string,
    readonly at: string,
  ) {}
}

/** Plaintexts of encrypted values, by their armored text (see sealedKey). */
export type Decrypted = ReadonlyMap<string, string>;

/** The armored text as a map key: the same ciphertext however it was indented or ended. */
export function sealedKey(armored: string): string {
  return armored
    .split(/\r?\n/)
    .map((l) => l.trim())
    .filter(Boolean)
    .join("\n");
}

export interface LoadOptions {
  /**
   * Plaintexts for the file's !age values; a value without one is an error naming it.
   * Without this option, !age values stay Sealed (only for reading a file before decrypting).
   */
  decrypted?: Decrypted;
}

export class YamlSource {
  /** Each alias's anchored node, as YAML resolves it (the last anchor of that name before it). */
  private readonly targets = new Map<Node, Node>();
  /** Every !age value in document order. */
  readonly sealed: Sealed[] = [];
  /** The plaintexts of the !age values (secret whatever they are called). */
  readonly secrets: string[] = [];

  private constructor(
    readonly file: string,
    readonly doc: Document.Parsed,
    private readonly lines: LineCounter,
  ) {}

  /** `kind` names the file in messages: "a playbook", "an inventory". */
  static load(file: string, kind = "a YAML file", options: LoadOptions = {}): YamlSource {
    let text: string;
    try {
      text = readFileSync(file, "utf8");
    } catch (error) {
      throw new ConfigError(`${file}: cannot read file (${(error as NodeJS.ErrnoException).code ?? error}). Check the path.`);
    }
    return YamlSource.parse(file, text, kind, options);
  }

  static parse(file: string, text: string, kind = "a YAML file", options: LoadOptions = {}): YamlSource {
    const lines = new LineCounter();
    if (text.startsWith("\uFEFF")) text = text.slice(1); // a UTF-8 BOM (Windows editors)
    // uniqueKeys is quadratic in the size of a mapping (100k keys: minutes): check() finds duplicates in linear time.
    // Merge keys (<<: *defaults) are what Ansible users write.
    const doc = parseDocument(text, { lineCounter: lines, prettyErrors: false, uniqueKeys: false, merge: true, customTags: [{ tag: AGE_TAG, resolve: (s: string) => s }] });
    const source = new YamlSource(displayPath(file), doc, lines);
    const [first] = doc.errors;
    if (first) throw new ConfigError(`${source.positionOfOffset(first.pos[0])}: invalid YAML: ${yamlProblem(first.code, first.message, kind)}`);
    const tag = doc.warnings.find((w) => w.code === "TAG_RESOLVE_FAILED");
    if (tag) throw new ConfigError(`${source.positionOfOffset(tag.pos[0])}: invalid YAML: ${unknownTag(text.slice(tag.pos[0], tag.pos[1]))}`);
    try {
      source.check(doc.contents);
    } catch (error) {
      if (error instanceof RangeError) throw new ConfigError(`${source.file}: invalid YAML: nested too deeply. Flatten the structure.`);
      throw error;
    }
    source.unseal(options.decrypted);
    return source;
  }

  /** Each !age value becomes its plaintext (or stays Sealed when there is nothing to decrypt with). */
  private unseal(decrypted: Decrypted | undefined): void {
    visit(this.doc, {
      Node: (_, node) => {
        if (node.tag !== AGE_TAG) return;
        const at = this.positionOfOffset(node.range?.[0] ?? 0);
        if (!isScalar(node) || typeof node.value !== "string")
          throw new ConfigError(
            `${at}: ${AGE_TAG} takes the encrypted text, not ${isCollection(node) ? "a mapping or list" : "this value"}. Write the block that \`provision secret encrypt\` prints.`,
          );
        const sealed = new Sealed(node.value, at);
        this.sealed.push(sealed);
        if (!decrypted) return void (node.value = sealed);
        const plaintext = decrypted.get(sealedKey(node.value));
        if (plaintext === undefined)
          throw new ConfigError(
            `${at}: an encrypted value (${AGE_TAG}), but no age identity was loaded to decrypt it. Set age_identity_file under the inventory's all: vars:, or the environment variable PROVISION_AGE_IDENTITY.`,
          );
        node.value = plaintext;
        this.secrets.push(plaintext);
      },
    });
  }

  /**
   * Secrets written in clear text: values (strings, numbers) under a secret-named key that
   * are neither encrypted nor a template ("{{ wifi_psk }}" names a variable), with where each is.
   */
  clearSecrets(isSecretKey: (key: string) => boolean): { key: string; at: string }[] {
    const found: { key: string; at: string }[] = [];
    visit(this.doc, {
      Pair: (_, pair) => {
        const name = keyName(pair.key);
        const value = pair.value;
        if (name === undefined || !isSecretKey(name) || !isScalar(value) || value.tag === AGE_TAG) return;
        if ((typeof value.value === "string" && value.value !== "" && !value.value.includes("{{")) || typeof value.value === "number")
          found.push({ key: name, at: this.positionOfOffset(value.range?.[0] ?? 0) });
      },
    });
    return found;
  }

  toJS(): unknown {
    try {
      // check() has bounded what aliases expand to; the library's own limit (100 uses of an anchor) would refuse honest merge keys.
      return this.doc.toJS({ maxAliasCount: -1 });
    } catch (error) {
      throw new ConfigError(`${this.file}: invalid YAML: ${shorten((error as Error).message, 200)}.`);
    }
  }

  positionOfOffset(offset: number): string {
    const { line, col } = this.lines.linePos(offset);
    return `${this.file}:${line}:${col}`;
  }

  /** file:line:col of the deepest node that exists along `path` (through aliases and merge keys). */
  position(path: Path): string {
    let node: Node | null | undefined = this.doc.contents;
    let at = isNode(node) && node.range ? node.range[0] : 0;
    for (const step of path) {
      node = this.child(node, step)?.value as Node | null | undefined;
      if (!isNode(node)) break;
      if (node.range) at = node.range[0];
    }
    return this.positionOfOffset(at);
  }

  /** file:line:col of a map key (better than the value for "unknown key" errors). */
  keyPosition(path: Path, key: string): string {
    let node: Node | null | undefined = this.doc.contents;
    for (const step of path) {
      node = this.child(node, step)?.value as Node | null | undefined;
      if (!isNode(node)) return this.position(path);
    }
    const pair = this.child(node, key);
    return isNode(pair?.key) && pair.key.range ? this.positionOfOffset(pair.key.range[0]) : this.position(path);
  }

  /** The pair under `step` of a map (or merged into it), or a sequence item wrapped as one. */
  private child(node: Node | null | undefined, step: string | number): { key?: unknown; value: unknown } | undefined {
    const target = this.resolve(node);
    if (isSeq(target)) return typeof step === "number" ? { value: target.items[step] } : undefined;
    if (!isMap(target)) return undefined;
    let found: Pair | undefined;
    for (const pair of target.items) if (!isMergeKey(pair.key) && keyId(pair.key) === String(step)) found = pair;
    if (found) return found;
    for (const pair of target.items) {
      if (!isMergeKey(pair.key)) continue;
      const from = this.resolve(pair.value as Node);
      for (const source of isSeq(from) ? from.items : [from]) {
        const merged = this.child(source as Node, step);
        if (merged) return merged;
      }
    }
    return undefined;
  }

  private resolve(node: unknown): Node | undefined {
    return isAlias(node) ? this.targets.get(node) : isNode(node) ? node : undefined;
  }

  /**
   * One pass in document order: every alias names an anchor set before it, aliases do not
   * expand into more than MAX_ALIAS_EXPANSION values, and no mapping repeats a key.
   */
  private check(root: unknown): void {
    const anchors = new Map<string, Node>();
    const sizes = new Map<Node, number>();
    let expanded = 0;
    const at = (node: Node) => this.positionOfOffset(node.range?.[0] ?? 0);
    const size = (node: unknown, busy: Set<Node>): number => {
      if (!isNode(node)) return 0;
      const known = sizes.get(node);
      if (known !== undefined) return known;
      if (busy.has(node)) throw new ConfigError(`${at(node)}: invalid YAML: an alias refers to the value that contains it. Remove the alias.`);
      busy.add(node);
      let n = 1;
      if (isAlias(node)) n = size(this.targets.get(node), busy);
      else if (isMap(node)) for (const pair of node.items) n += size(pair.key, busy) + size(pair.value, busy);
      else if (isSeq(node)) for (const item of node.items) n += size(item, busy);
      busy.delete(node);
      sizes.set(node, Math.min(n, Number.MAX_SAFE_INTEGER));
      return n;
    };
    const walk = (node: unknown): void => {
      if (!isNode(node)) return;
      if (node.anchor) anchors.set(node.anchor, node);
      if (isAlias(node)) {
        const target = anchors.get(node.source);
        if (!target)
          throw new ConfigError(
            `${at(node)}: invalid YAML: undefined alias *${shorten(node.source)}. Define the anchor &${shorten(node.source)} before this use, or fix the name.`,
          );
        this.targets.set(node, target);
        expanded += size(node, new Set());
        if (expanded > MAX_ALIAS_EXPANSION)
          throw new ConfigError(`${at(node)}: invalid YAML: aliases expand to more than ${MAX_ALIAS_EXPANSION} values here (an alias bomb?). Use fewer nested aliases.`);
      } else if (isMap(node)) {
        const seen = new Map<string, Node>();
        for (const pair of node.items) {
          walk(pair.key);
          walk(pair.value);
          const id = isMergeKey(pair.key) ? undefined : keyId(pair.key);
          if (id === undefined) continue;
          const first = seen.get(id);
          if (first) {
            const { line, col } = this.lines.linePos(first.range?.[0] ?? 0);
            throw new ConfigError(`${at(pair.key as Node)}: invalid YAML: duplicate key ${quote(id)} (first at line ${line}, column ${col}). Remove one of them.`);
          }
          seen.set(id, pair.key as Node);
        }
      } else if (isSeq(node)) for (const item of node.items) walk(item);
    };
    walk(root);
  }

  /** A value that is or contains a plaintext of this file's encrypted values. */
  private holdsSecret(value: unknown): boolean {
    if (!this.secrets.length) return false;
    if (typeof value === "string" || typeof value === "number") return this.secrets.some((s) => s && String(value).includes(s));
    return !!value && typeof value === "object" && Object.values(value).some((v) => this.holdsSecret(v));
  }

  /** Turn ajv errors into one ConfigError naming file:line:col, what is wrong and the fix; secret values are never shown. */
  schemaError(errors: ErrorObject[], base: Path, what: string, options: { hidden?: (path: Path) => boolean } = {}): ConfigError {
    const lines = pickErrors(errors).map((e) => {
      const path = [...base, ...pointerToPath(e.instancePath)];
      const relative = path.slice(base.length);
      // an error about a map key's own name (propertyNames)
      const name = (e as { propertyName?: string }).propertyName;
      const key = e.keyword === "additionalProperties" ? String(e.params.additionalProperty) : name;
      const at = key !== undefined ? this.keyPosition(path, key) : this.position(path);
      const hidden = (options.hidden?.(key !== undefined ? [...relative, key] : relative) ?? false) || this.holdsSecret(e.data);
      if (name !== undefined) return `${at}: ${what}${describePath(relative)}: name ${quote(name)}: ${explain(e, true, name, "")}`;
      return `${at}: ${what}${describePath(relative, key)}: ${explain(e, hidden)}`;
    });
    return new ConfigError(lines.join("\n"));
  }
}

/** The yaml library's message, in our words where its own would mislead. */
function yamlProblem(code: string, message: string, kind: string): string {
  if (code === "MULTIPLE_DOCS") return `${kind} is one YAML document; remove the extra '---'.`;
  if (/call stack/i.test(message)) return "nested too deeply. Flatten the structure.";
  return `${shorten(message.split("\n")[0], 200)}. Fix the syntax at this position.`;
}

function unknownTag(tag: string): string {
  if (tag === AGE_TAG) return `${AGE_TAG} takes the encrypted text, not a mapping or list. Write the block that \`provision secret encrypt\` prints.`;
  if (tag === "!encrypt") return `!encrypt marks a value for \`provision secret edit\` to encrypt: open this file with it and save.`;
  if (tag === "!vault") return `Ansible Vault values (!vault) are not read. Decrypt it with ansible-vault and encrypt it with \`provision secret encrypt\` (${AGE_TAG}).`;
  return `unknown tag ${quote(tag)}. Remove it (${AGE_TAG} is the one tag provision adds, for encrypted values).`;
}

/** A scalar key's text ("wifi_psk"), undefined for other keys. */
function keyName(key: unknown): string | undefined {
  return isScalar(key) && (typeof key.value === "string" || typeof key.value === "number") ? String(key.value) : undefined;
}

/** A plain "<<" key (with merge: true the library gives it a symbol as value). */
function isMergeKey(key: unknown): boolean {
  if (!isScalar(key) || (key.type && key.type !== Scalar.PLAIN)) return false;
  return key.value === "<<" || (typeof key.value === "symbol" && key.value.description === "<<");
}

/** A key as the JavaScript object will have it (two keys with one id are duplicates). */
function keyId(key: unknown): string | undefined {
  if (!isScalar(key)) return key === null || key === undefined ? "" : undefined;
  const v = key.value;
  return v === null || v === undefined ? "" : typeof v === "object" || typeof v === "symbol" ? undefined : String(v);
}

function pointerToPath(pointer: string): Path {
  if (!pointer) return [];
  return pointer
    .slice(1)
    .split("/")
    .map((p) => {
      const key = p.replace(/~1/g, "/").replace(/~0/g, "~");
      return /^\d+$/.test(key) ? Number(key) : key;
    });
}

function displayPath(file: string): string {
  const rel = relative(process.cwd(), file);
  return rel && !rel.startsWith("..") ? rel : file;
}

function describePath(path: Path, key?: string): string {
  const parts = [...path, ...(key !== undefined ? [key] : [])];
  if (!parts.length) return "";
  return (
    " > " +
    parts
      .map((p) => (typeof p === "number" ? `[${p}]` : shorten(p)))
      .join(".")
      .replace(/\.\[/g, "[")
  );
}

/** ajv reports every branch of a oneOf/anyOf; keep the most specific errors. */
function pickErrors(errors: ErrorObject[]): ErrorObject[] {
  const specific = errors.filter((e) => !["anyOf", "oneOf", "if", "propertyNames"].includes(e.keyword));
  // Of a oneOf's branches, a "wrong type" error is noise where another error fits the value's type.
  const chosen = (specific.length ? specific : errors).filter(
    (e) => e.keyword !== "type" || !specific.some((o) => o !== e && o.keyword !== "type" && o.instancePath === e.instancePath),
  );
  const seen = new Set<string>();
  return chosen
    .filter((e) => {
      const id = `${e.instancePath}|${e.keyword}|${JSON.stringify(e.params)}|${(e as { propertyName?: string }).propertyName}`;
      if (seen.has(id)) return false;
      seen.add(id);
      return true;
    })
    .slice(0, 5);
}

const TYPE_NAMES: Record<string, string> = {
  object: "an object",
  array: "a list",
  string: "a string",
  integer: "an integer",
  number: "a number",
  boolean: "a boolean",
  null: "null",
};

/** "object,null" → "an object or null". */
function typeNames(type: unknown): string {
  const names = (Array.isArray(type) ? type : String(type).split(",")).map((t) => TYPE_NAMES[t] ?? String(t));
  return names.length > 1 ? `${names.slice(0, -1).join(", ")} or ${names[names.length - 1]}` : names[0];
}

/** What is wrong and the fix; the value itself is shown shortened, and never when it is secret. */
function explain(e: ErrorObject, hidden: boolean, data: unknown = e.data, whenHidden = " (the value is secret: not shown)"): string {
  const got = (v: unknown) => (hidden ? whenHidden : ` (got ${quote(v)})`);
  switch (e.keyword) {
    case "enum":
      return `must be one of ${(e.params.allowedValues as unknown[]).join(", ")}${got(data)}. Use one of those values.`;
    case "additionalProperties":
      return `unknown key. Remove it or check its spelling.`;
    case "required":
      return `missing required key ${quote(e.params.missingProperty)}. Add it.`;
    case "type":
      return `must be ${typeNames(e.params.type)}${got(data)}. Write ${typeNames(e.params.type)}.`;
    case "pattern":
      return `must match ${e.params.pattern}${got(data)}. Use only the allowed characters.`;
    case "format": {
      const format = FORMATS[e.params.format as string];
      return format ? `must be ${format.is}${got(data)}. ${format.fix}` : `must be a valid ${e.params.format}${got(data)}.`;
    }
    default:
      return `${e.message ?? "is invalid"}${data !== undefined && (typeof data !== "object" || data === null) ? got(data) : ""}.`;
  }
}
