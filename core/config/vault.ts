// Secrets at rest: values encrypted with age (age-encryption.org) in inventories and
// playbooks, written `wifi_psk: !age |` + the armored file. They are decrypted in memory
// only, before any host is contacted, with the identity (private key) that the
// environment (PROVISION_AGE_IDENTITY) or the inventory (all: vars: age_identity_file)
// names. `provision secret` (cli/secret.ts) encrypts values and edits files with them.
import { readFileSync } from "node:fs";
import { homedir } from "node:os";
import { dirname, isAbsolute, resolve } from "node:path";
import { Decrypter, Encrypter, armor, generateIdentity, identityToRecipient } from "age-encryption";
import { isCollection, isScalar, parseDocument, visit } from "yaml";
import { ConfigError, quote } from "../errors.js";
import { isSecretKey } from "./secrets.js";
import { AGE_TAG, YamlSource, sealedKey, type Decrypted, type Sealed } from "./yaml-source.js";

/** The identity itself (the text of an identity file): overrides the inventory's age_identity_file. */
export const IDENTITY_ENV = "PROVISION_AGE_IDENTITY";
/** Where `provision secret keygen` writes a new identity by default. */
export const DEFAULT_IDENTITY_FILE = "~/.config/provision/age.key";
/** The tag `provision secret edit` shows a decrypted value with; on save it is encrypted again. */
export const ENCRYPT_TAG = "!encrypt";

const FIX_KEY = `Set age_identity_file: PATH under the inventory's all: vars: (create one with \`provision secret keygen\`), or the environment variable ${IDENTITY_ENV} to the key`;

/** Private keys that decrypt, and where they came from (for messages; never the keys). */
export interface Keys {
  identities: string[];
  from: string;
}

/** The age settings an inventory names in all: vars:, with where it names them. */
export interface AgeSettings {
  inventory: string;
  identityFile?: { path: string; at: string };
  recipientsFile?: { path: string; at: string };
}

export function ageSettings(inventory: YamlSource, inventoryFile: string): AgeSettings {
  const vars = (inventory.toJS() as { all?: { vars?: Record<string, unknown> } } | null)?.all?.vars ?? {};
  const setting = (name: string) => {
    const value = vars[name];
    if (value === undefined) return undefined;
    const at = inventory.position(["all", "vars", name]);
    if (typeof value !== "string" || !value.trim())
      throw new ConfigError(`${at}: inventory > all.vars.${name}: must be a file path. Write e.g. ${name}: ${DEFAULT_IDENTITY_FILE}.`);
    return { path: resolvePath(value, dirname(resolve(inventoryFile))), at };
  };
  return { inventory: inventory.file, identityFile: setting("age_identity_file"), recipientsFile: setting("age_recipients_file") };
}

function resolvePath(path: string, baseDir: string): string {
  if (path === "~" || path.startsWith("~/")) return resolve(homedir(), path.slice(2));
  return isAbsolute(path) ? path : resolve(baseDir, path);
}

/** The identities of an identity file's text: lines AGE-SECRET-KEY-1…, comments (#) and blank lines ignored. */
export async function parseIdentities(text: string, where: string): Promise<string[]> {
  const identities: string[] = [];
  for (const [i, raw] of text.split(/\r?\n/).entries()) {
    const line = raw.trim();
    if (!line || line.startsWith("#")) continue;
    // the line is a private key: never quoted, not even when it is malformed
    if (!/^AGE-SECRET-KEY-/.test(line) || !(await isIdentity(line)))
      throw new ConfigError(
        `${where}: line ${i + 1} is not an age identity (a line AGE-SECRET-KEY-1…; plugin and SSH keys are not supported). Use a file made by \`provision secret keygen\` or age-keygen.`,
      );
    identities.push(line);
  }
  if (!identities.length) throw new ConfigError(`${where}: holds no age identity (a line AGE-SECRET-KEY-1…). Use a file made by \`provision secret keygen\` or age-keygen.`);
  return identities;
}

async function isIdentity(line: string): Promise<boolean> {
  try {
    await identityToRecipient(line);
    return true;
  } catch {
    return false;
  }
}

/** The keys to decrypt with: PROVISION_AGE_IDENTITY if set, else the inventory's age_identity_file, else none. */
export async function loadKeys(settings: AgeSettings, env: NodeJS.ProcessEnv = process.env): Promise<Keys | undefined> {
  if (env[IDENTITY_ENV]?.trim()) return { identities: await parseIdentities(env[IDENTITY_ENV]!, `the environment variable ${IDENTITY_ENV}`), from: IDENTITY_ENV };
  const file = settings.identityFile;
  if (!file) return undefined;
  let text: string;
  try {
    text = readFileSync(file.path, "utf8");
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    const fix = code === "ENOENT" ? `Copy the fleet's key there, fix the path, or set ${IDENTITY_ENV}` : "Check its permissions";
    throw new ConfigError(`${file.at}: age_identity_file ${file.path}: cannot read it (${code ?? error}). ${fix}.`);
  }
  return { identities: await parseIdentities(text, `${file.at}: age_identity_file ${file.path}`), from: file.path };
}

/** The plaintext of one encrypted value; the errors name where it is and the fix, never the key or plaintext. */
export async function decryptSealed(sealed: Sealed, keys: Keys | undefined): Promise<string> {
  if (!keys) throw new ConfigError(`${sealed.at}: an encrypted value (${AGE_TAG}), but no age identity to decrypt it. ${FIX_KEY}.`);
  let file: Uint8Array;
  try {
    file = armor.decode(sealed.armored);
  } catch {
    throw new ConfigError(
      `${sealed.at}: not an age-encrypted value. Paste the whole block \`provision secret encrypt\` printed, from -----BEGIN AGE ENCRYPTED FILE----- to -----END AGE ENCRYPTED FILE-----, as a literal block (${AGE_TAG} |).`,
    );
  }
  const decrypter = new Decrypter();
  keys.identities.forEach((identity) => decrypter.addIdentity(identity));
  try {
    return await decrypter.decrypt(file, "text");
  } catch (error) {
    if (/no identity matched/.test((error as Error).message))
      throw new ConfigError(
        `${sealed.at}: cannot decrypt: it was encrypted for another key than the one in ${keys.from}. Use the key it was encrypted for (age_identity_file or ${IDENTITY_ENV}), or encrypt the value again with \`provision secret encrypt\`.`,
      );
    throw new ConfigError(`${sealed.at}: cannot decrypt: the encrypted value is damaged (${(error as Error).message}). Encrypt the value again with \`provision secret encrypt\`.`);
  }
}

export interface OpenedSecrets {
  decrypted: Decrypted;
  /** "FILE:LINE:COL: a secret in clear text…", one per file that has any. */
  warnings: string[];
}

/**
 * Decrypt every encrypted value of the inventory and the other files (playbooks), before
 * anything else is loaded: pass `decrypted` to loadInventory and loadPlaybook.
 */
export async function openSecrets(inventoryFile: string, files: { file: string; kind: string }[], env: NodeJS.ProcessEnv = process.env): Promise<OpenedSecrets> {
  const inventory = YamlSource.load(inventoryFile, "an inventory");
  const sources = [inventory, ...files.map((f) => YamlSource.load(f.file, f.kind))];
  const warnings = sources.flatMap(clearTextWarning);
  const sealed = sources.flatMap((s) => s.sealed);
  const decrypted = new Map<string, string>();
  if (!sealed.length) return { decrypted, warnings };
  const keys = await loadKeys(ageSettings(inventory, inventoryFile), env);
  for (const value of sealed) {
    const key = sealedKey(value.armored);
    if (!decrypted.has(key)) decrypted.set(key, await decryptSealed(value, keys));
  }
  return { decrypted, warnings };
}

/** Plaintext secrets still work; the first one of a file is named, once per file. */
function clearTextWarning(source: YamlSource): string[] {
  const found = source.clearSecrets(isSecretKey);
  if (!found.length) return [];
  const more = found.length > 1 ? ` (and ${found.length - 1} more in this file)` : "";
  return [
    `${found[0].at}: ${quote(found[0].key)} is a secret in clear text${more}. Encrypt it: \`provision secret edit ${source.file}\` and tag the value ${ENCRYPT_TAG}, or paste what \`provision secret encrypt\` prints.`,
  ];
}

// ---- encrypting ----------------------------------------------------------------------

/** age recipients (age1…) of a recipients file's text: one a line, comments (#) and blank lines ignored. */
export function parseRecipients(text: string, where: string): string[] {
  const recipients = text
    .split(/\r?\n/)
    .map((l) => l.trim())
    .filter((l) => l && !l.startsWith("#"));
  for (const recipient of recipients) checkRecipient(recipient, where);
  if (!recipients.length) throw new ConfigError(`${where}: holds no age recipient (a line age1…). Add the public key of every admin (\`provision secret keygen\` prints it).`);
  return recipients;
}

export function checkRecipient(recipient: string, where: string): void {
  try {
    new Encrypter().addRecipient(recipient);
  } catch {
    throw new ConfigError(`${where}: ${quote(recipient)} is not an age recipient (a public key age1…). Use the public key that \`provision secret keygen\` or age-keygen printed.`);
  }
}

export function readRecipientsFile(path: string, at?: string): string[] {
  const where = at ? `${at}: age_recipients_file ${path}` : path;
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (error) {
    throw new ConfigError(`${where}: cannot read it (${(error as NodeJS.ErrnoException).code ?? error}). Check the path.`);
  }
  return parseRecipients(text, where);
}

/** The recipients of the keys themselves: whoever can decrypt can encrypt for themselves. */
export async function recipientsOfKeys(keys: Keys): Promise<string[]> {
  return Promise.all(keys.identities.map((identity) => identityToRecipient(identity)));
}

/** The armored age file of `plaintext` for these recipients ("-----BEGIN AGE ENCRYPTED FILE-----\n…\n"). */
export async function encryptText(plaintext: string, recipients: string[]): Promise<string> {
  const encrypter = new Encrypter();
  recipients.forEach((r) => encrypter.addRecipient(r));
  return armor.encode(await encrypter.encrypt(plaintext));
}

/** A value ready for YAML: `!age |` and the armored lines indented by `indent` spaces. */
export function ageBlock(armored: string, indent: number): string {
  const pad = " ".repeat(indent);
  return `${AGE_TAG} |\n${sealedKey(armored)
    .split("\n")
    .map((l) => pad + l)
    .join("\n")}\n`;
}

/** A new identity file's text (as age-keygen writes it) and its recipient. */
export async function newIdentity(): Promise<{ text: string; recipient: string }> {
  const identity = await generateIdentity();
  const recipient = await identityToRecipient(identity);
  return { text: `# created: ${new Date().toISOString().replace(/\.\d+Z$/, "Z")}\n# public key: ${recipient}\n${identity}\n`, recipient };
}

// ---- editing -------------------------------------------------------------------------

interface Span {
  tagStart: number;
  tagEnd: number;
  valueStart: number;
  valueEnd: number;
  value: string;
  at: string;
  flow: boolean;
  lineIndent: number;
}

/** Every value tagged `tag` in `text`, with the text spans of its tag and value. */
function taggedSpans(text: string, file: string, tag: string): Span[] {
  const lines = { starts: [0] as number[] };
  for (let i = text.indexOf("\n"); i !== -1; i = text.indexOf("\n", i + 1)) lines.starts.push(i + 1);
  const lineOf = (offset: number) => {
    let line = 0;
    while (line + 1 < lines.starts.length && lines.starts[line + 1] <= offset) line++;
    return line;
  };
  const position = (offset: number) => `${file}:${lineOf(offset) + 1}:${offset - lines.starts[lineOf(offset)] + 1}`;
  const doc = parseDocument(text, { prettyErrors: false, uniqueKeys: false, merge: true, customTags: [AGE_TAG, ENCRYPT_TAG].map((t) => ({ tag: t, resolve: (s: string) => s })) });
  const [error] = doc.errors;
  if (error) throw new ConfigError(`${position(error.pos[0])}: invalid YAML: ${error.message.split("\n")[0]}. Fix the syntax at this position.`);
  const spans: Span[] = [];
  visit(doc, {
    Node(key, node, path) {
      if (node.tag !== tag || !node.range) return;
      const at = position(node.range[0]);
      if (!isScalar(node) || typeof node.value !== "string")
        throw new ConfigError(`${at}: ${tag} takes a text value, not ${isCollection(node) ? "a mapping or list" : "this value"}. Tag each secret value on its own.`);
      if (key === "key") throw new ConfigError(`${at}: ${tag} on a key: tag the value instead.`);
      const tagStart = text.lastIndexOf(tag, node.range[0]);
      const lineStart = text.lastIndexOf("\n", tagStart) + 1;
      // the indentation of the innermost block collection on the tag's line ("  - psk: " → 4)
      const lineIndent = /^[ ]*(?:-[ ]+)*/.exec(text.slice(lineStart, tagStart))![0].length;
      spans.push({
        tagStart,
        tagEnd: tagStart + tag.length,
        valueStart: node.range[0],
        valueEnd: node.range[1],
        value: node.value,
        at,
        flow: path.some((p) => isCollection(p) && p.flow),
        lineIndent,
      });
    },
  });
  return spans;
}

/**
 * Replace spans from the end backwards, so that earlier offsets stay valid. A comment on
 * the value's line stays on it: after a one-line value, or after a block's header ("| # …").
 */
function splice(text: string, spans: Span[], replace: (span: Span) => { tag: string; value: string; block: boolean }): string {
  let out = text;
  for (const span of [...spans].sort((a, b) => b.tagStart - a.tagStart)) {
    const { tag, value, block } = replace(span);
    const original = out.slice(span.valueStart, span.valueEnd);
    // a block scalar's range ends after its line break(s): keep them
    const trailing = /\s*$/.exec(original)![0];
    let rest = out.slice(span.valueEnd);
    let comment = /^[|>][^\n#]*?([ \t]+#[^\n]*)?\n/.exec(original)?.[1] ?? "";
    if (block && !comment) {
      comment = /^[ \t]+#[^\n]*/.exec(rest)?.[0] ?? "";
      rest = rest.slice(comment.length);
    }
    const shown = block ? value.replace("\n", `${comment}\n`) : value + comment;
    out = out.slice(0, span.tagStart) + tag + out.slice(span.tagEnd, span.valueStart) + shown + trailing + rest;
  }
  return out;
}

export interface Revealed {
  /** The file's text with every `!age` value shown as `!encrypt "plaintext"`. */
  text: string;
  /** plaintext → its armored text as it was: an unchanged value keeps its ciphertext. */
  originals: Map<string, string>;
}

/** For `provision secret edit`: the file's text with its encrypted values decrypted. */
export async function reveal(text: string, file: string, keys: Keys | undefined): Promise<Revealed> {
  const spans = taggedSpans(text, file, AGE_TAG);
  const originals = new Map<string, string>();
  const plaintexts = new Map<Span, string>();
  for (const span of spans) {
    const plaintext = await decryptSealed({ armored: span.value, at: span.at }, keys);
    plaintexts.set(span, plaintext);
    originals.set(plaintext, span.value);
  }
  return { text: splice(text, spans, (s) => ({ tag: ENCRYPT_TAG, value: JSON.stringify(plaintexts.get(s)!), block: false })), originals };
}

/**
 * For `provision secret edit`: every `!encrypt` value of the edited text encrypted for
 * `recipients` (an unchanged one keeps its ciphertext from `originals`), the rest kept as
 * written. The result is checked to read back as the edited text means.
 */
export async function seal(text: string, file: string, recipients: string[], originals: Map<string, string>): Promise<string> {
  const spans = taggedSpans(text, file, ENCRYPT_TAG);
  const armored = new Map<Span, string>();
  for (const span of spans) armored.set(span, originals.get(span.value) ?? (await encryptText(span.value, recipients)));
  const sealed = splice(text, spans, (s) =>
    s.flow
      ? { tag: AGE_TAG, value: JSON.stringify(sealedKey(armored.get(s)!) + "\n"), block: false }
      : { tag: AGE_TAG, value: ageBlock(armored.get(s)!, s.lineIndent + 2).slice(AGE_TAG.length + 1, -1), block: true },
  );
  // what the files mean, encrypted values as their plaintexts (an !age value pasted in the editor as itself)
  const plaintextOf = new Map([...armored].map(([span, a]) => [sealedKey(a), span.value]));
  const meaning = (t: string, resolveAge: (armored: string) => string, resolveEncrypt: (s: string) => string) =>
    JSON.stringify(
      parseDocument(t, {
        merge: true,
        uniqueKeys: false,
        customTags: [
          { tag: AGE_TAG, resolve: resolveAge },
          { tag: ENCRYPT_TAG, resolve: resolveEncrypt },
        ],
      }).toJS({ maxAliasCount: -1 }),
    );
  const asItself = (a: string) => `\0${sealedKey(a)}`;
  if (meaning(sealed, (a) => plaintextOf.get(sealedKey(a)) ?? asItself(a), asItself) !== meaning(text, asItself, (p) => p))
    throw new Error(`${file}: the encrypted text does not read back as the edited one (a bug: nothing was written)`);
  return sealed;
}
