// provision secret keygen|encrypt|edit: age keys and encrypted values (core/config/vault.ts).
import { parseArgs } from "node:util";
import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { closeSync, existsSync, fchmodSync, fsyncSync, mkdirSync, mkdtempSync, openSync, readFileSync, renameSync, rmSync, statSync, writeFileSync, writeSync } from "node:fs";
import { homedir, tmpdir } from "node:os";
import { basename, dirname, join, resolve } from "node:path";
import { ConfigError, UsageError, quote } from "../core/errors.js";
import { YamlSource } from "../core/config/yaml-source.js";
import {
  DEFAULT_IDENTITY_FILE,
  ENCRYPT_TAG,
  IDENTITY_ENV,
  ageBlock,
  ageSettings,
  checkRecipient,
  encryptText,
  loadKeys,
  newIdentity,
  readRecipientsFile,
  recipientsOfKeys,
  reveal,
  seal,
  type AgeSettings,
  type Keys,
} from "../core/config/vault.js";

export const SECRET_HELP = `Usage: provision secret keygen [FILE]
       provision secret encrypt [--inventory FILE | --recipient AGE1… | --recipients-file FILE] [--indent N]
       provision secret edit FILE [--inventory FILE] [--recipient AGE1… | --recipients-file FILE] [--reencrypt]

Values in inventories and playbooks can be encrypted with age (wifi_psk: !age |).
They are decrypted in memory only, with the key in ${IDENTITY_ENV} or else the file the
inventory names (all: vars: age_identity_file: PATH, relative to the inventory).

  keygen    write a new key to FILE (default ${DEFAULT_IDENTITY_FILE}, mode 0600) and print
            its public key (the recipient)
  encrypt   read a value (typed twice without echo, or from standard input) and print it
            encrypted, ready to paste as a YAML value (block lines indented by --indent, 2)
  edit      open FILE in $VISUAL/$EDITOR with its encrypted values decrypted and tagged
            ${ENCRYPT_TAG} (tag a clear value ${ENCRYPT_TAG} to encrypt it); on save, every
            ${ENCRYPT_TAG} value is encrypted (unchanged ones keep their ciphertext, all are
            encrypted anew with --reencrypt) and FILE replaced atomically. The decrypted copy
            lives in a private temporary folder (0700, file 0600) removed afterwards.

Recipients (who can decrypt): --recipient (repeatable) or --recipients-file, else the
inventory's all: vars: age_recipients_file, else the public key of the inventory's key.
The inventory is --inventory, else for edit FILE itself when it names age settings.`;

const OPTIONS = {
  inventory: { type: "string", short: "i" },
  recipient: { type: "string", short: "r", multiple: true },
  "recipients-file": { type: "string", short: "R" },
  indent: { type: "string" },
  reencrypt: { type: "boolean" },
  help: { type: "boolean", short: "h" },
} as const;

export async function secret(argv: string[]): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({ args: argv, options: OPTIONS, allowPositionals: true, strict: true });
  } catch (error) {
    throw new UsageError(`${(error as Error).message}. See provision secret --help.`);
  }
  const {
    values,
    positionals: [command, ...files],
  } = parsed;
  if (values.help || !command) return (void console.log(SECRET_HELP), values.help ? 0 : 64);
  const allowed: Record<string, { files: [number, number]; options: string[] }> = {
    keygen: { files: [0, 1], options: [] },
    encrypt: { files: [0, 0], options: ["inventory", "recipient", "recipients-file", "indent"] },
    edit: { files: [1, 1], options: ["inventory", "recipient", "recipients-file", "reencrypt"] },
  };
  const rule = allowed[command];
  if (!rule) throw new UsageError(`unknown command "secret ${command}": use keygen, encrypt or edit. See provision secret --help.`);
  if (files.length < rule.files[0] || files.length > rule.files[1])
    throw new UsageError(`provision secret ${command} takes ${rule.files[1] ? (rule.files[0] ? "one FILE" : "at most one FILE") : "no FILE"}. See provision secret --help.`);
  const wrong = Object.keys(values).find((k) => !rule.options.includes(k));
  if (wrong) throw new UsageError(`provision secret ${command} has no --${wrong}. See provision secret --help.`);
  if (command === "keygen") return keygen(files[0] ?? DEFAULT_IDENTITY_FILE);
  if (command === "encrypt") return encrypt(values);
  return edit(files[0], values);
}

type Values = { inventory?: string; recipient?: string[]; "recipients-file"?: string; indent?: string; reencrypt?: boolean };

async function keygen(file: string): Promise<number> {
  const path = file === "~" || file.startsWith("~/") ? join(homedir(), file.slice(2)) : resolve(file);
  if (existsSync(path)) throw new UsageError(`${path} exists: keygen never overwrites a key (values encrypted for it could not be read any more). Give another FILE.`);
  const { text, recipient } = await newIdentity();
  mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
  writeDurably(path, text, 0o600);
  console.error(`provision: wrote a new age key to ${path} (mode 0600). Keep a copy somewhere safe: without it, values encrypted for it are lost.`);
  console.error(`Name it in the inventory (all: vars: age_identity_file: ${file}) and give this public key to whoever encrypts for the fleet:`);
  console.log(recipient);
  return 0;
}

async function encrypt(values: Values): Promise<number> {
  const indent = values.indent === undefined ? 2 : Number(values.indent);
  if (!Number.isInteger(indent) || indent < 1 || indent > 40) throw new UsageError(`--indent must be a whole number from 1 to 40 (got ${quote(values.indent)}).`);
  const recipients = await recipientsFor(values, values.inventory ? settingsOf(values.inventory) : undefined);
  const plaintext = await readValue();
  process.stdout.write(ageBlock(await encryptText(plaintext, recipients), indent));
  if (process.stderr.isTTY)
    console.error(
      `Paste it as the value (e.g. wifi_psk: ${ageBlock("…", indent).trimEnd().split("\n")[0]}) with its lines indented deeper than the key; \`provision secret edit\` does that for you.`,
    );
  return 0;
}

async function edit(file: string, values: Values): Promise<number> {
  let text: string;
  let mode: number;
  try {
    text = readFileSync(file, "utf8");
    mode = statSync(file).mode & 0o777;
  } catch (error) {
    throw new ConfigError(`${file}: cannot read file (${(error as NodeJS.ErrnoException).code ?? error}). Check the path.`);
  }
  const settings = settingsOf(values.inventory ?? file, !values.inventory);
  const keys = await loadKeys(settings);
  const revealed = await reveal(text, file, keys);
  const recipients = await recipientsFor(values, settings, keys);
  const originals = values.reencrypt ? new Map<string, string>() : revealed.originals;
  let edited = revealed.text;
  let sealed: string | undefined;
  while (sealed === undefined) {
    const next = await inEditor(file, edited);
    if (next === null) {
      console.error(`provision: the editor failed: ${file} is left as it was.`);
      return 1;
    }
    edited = next;
    if (edited === revealed.text && !values.reencrypt) {
      console.error(`provision: no changes: ${file} is left as it was.`);
      return 0;
    }
    try {
      sealed = await seal(edited, file, recipients, originals);
    } catch (error) {
      // a mistake in the edited text: edit it again rather than lose the changes
      if (!(error instanceof ConfigError) || !process.stdin.isTTY) throw error;
      console.error(error.message);
      if (!(await confirm("Edit again? (no: abandon the changes) [Y/n] "))) {
        console.error(`provision: changes abandoned: ${file} is left as it was.`);
        return 1;
      }
    }
  }
  writeDurably(resolve(file), sealed, mode);
  console.error(`provision: ${file}: saved with every ${ENCRYPT_TAG} value encrypted for ${recipients.length} recipient${recipients.length === 1 ? "" : "s"}.`);
  return 0;
}

/**
 * The inventory's age settings. For edit without --inventory, FILE itself when it is an
 * inventory that names them (a playbook has none: then only PROVISION_AGE_IDENTITY).
 */
function settingsOf(file: string, lenient = false): AgeSettings {
  try {
    return ageSettings(YamlSource.load(file, "an inventory"), file);
  } catch (error) {
    if (lenient) return { inventory: file };
    throw error;
  }
}

async function recipientsFor(values: Values, settings: AgeSettings | undefined, keys?: Keys): Promise<string[]> {
  if (values.recipient?.length || values["recipients-file"]) {
    const given = values.recipient ?? [];
    given.forEach((r) => checkRecipient(r, "--recipient"));
    return [...given, ...(values["recipients-file"] ? readRecipientsFile(values["recipients-file"]) : [])];
  }
  if (settings?.recipientsFile) return readRecipientsFile(settings.recipientsFile.path, settings.recipientsFile.at);
  const own = keys ?? (settings ? await loadKeys(settings) : undefined);
  if (own) return recipientsOfKeys(own);
  throw new UsageError(
    `no recipient: give --recipient AGE1…, --recipients-file FILE, or --inventory FILE whose all: vars: names age_recipients_file or age_identity_file (or set ${IDENTITY_ENV}).`,
  );
}

/** The value: typed twice without echo on a terminal, else all of standard input (one final newline dropped). */
async function readValue(): Promise<string> {
  if (!process.stdin.isTTY) {
    const chunks: Buffer[] = [];
    for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
    const value = Buffer.concat(chunks)
      .toString("utf8")
      .replace(/\r?\n$/, "");
    if (!value) throw new UsageError("standard input is empty: give the value to encrypt there (e.g. from a password manager).");
    return value;
  }
  // raw mode before the first prompt and until after the second: typed-ahead text is never echoed
  process.stdin.setRawMode(true);
  const terminal = hiddenLines();
  try {
    const first = await terminal.read("Value to encrypt (not shown): ");
    if (!first) throw new UsageError("the value is empty: nothing to encrypt.");
    if ((await terminal.read("Again: ")) !== first) throw new UsageError("the two values differ: nothing was encrypted. Try again.");
    return first;
  } finally {
    terminal.close();
    process.stdin.setRawMode(false);
  }
}

/** Lines typed on a terminal in raw mode (no echo): Enter ends one, Backspace deletes, Ctrl-C or Ctrl-D aborts. */
function hiddenLines(): { read(prompt: string): Promise<string>; close(): void } {
  const stdin = process.stdin;
  const lines: string[] = [];
  let current = "";
  let aborted = false;
  let waiting: ((line: string | null) => void) | undefined;
  const deliver = () => {
    if (waiting && (aborted || lines.length)) waiting(aborted ? null : lines.shift()!);
  };
  const onData = (data: Buffer) => {
    for (const char of data.toString("utf8")) {
      if (char === "\r" || char === "\n") (lines.push(current), (current = ""));
      else if (char === "\u0003" || char === "\u0004") aborted = true;
      else if (char === "\u007f" || char === "\b") current = [...current].slice(0, -1).join("");
      else if (char >= " ") current += char;
    }
    deliver();
  };
  stdin.on("data", onData).resume();
  return {
    read(prompt) {
      process.stderr.write(prompt);
      return new Promise((resolveLine, reject) => {
        waiting = (line) => {
          waiting = undefined;
          process.stderr.write("\n");
          if (line === null) reject(new UsageError("cancelled: nothing was encrypted."));
          else resolveLine(line);
        };
        deliver();
      });
    },
    close() {
      stdin.off("data", onData).pause();
    },
  };
}

/**
 * Let the user edit `text` in $VISUAL/$EDITOR (vi): written to a 0600 file in a private
 * folder (on /dev/shm when there is one: never on disk), read back, the folder removed in any
 * case. null when the editor fails.
 */
async function inEditor(file: string, text: string): Promise<string | null> {
  const base = existsSync("/dev/shm") && statSync("/dev/shm").isDirectory() ? "/dev/shm" : tmpdir();
  const folder = mkdtempSync(join(base, "provision-secret-"));
  const cleanup = () => rmSync(folder, { recursive: true, force: true });
  const onSignal = (signal: NodeJS.Signals) => {
    cleanup();
    process.exit(128 + (signal === "SIGHUP" ? 1 : 15));
  };
  // Ctrl-C belongs to the editor; a hang-up or kill still removes the decrypted copy
  const ignore = () => {};
  process.on("SIGINT", ignore).on("SIGTERM", onSignal).on("SIGHUP", onSignal);
  try {
    const path = join(folder, basename(file));
    writeFileSync(path, text, { mode: 0o600, flag: "wx" });
    const editor = process.env.VISUAL || process.env.EDITOR || "vi";
    // as git does: the editor setting is a shell command (it may have options), the file its argument
    const code = await new Promise<number | null>((done) => {
      spawn("sh", ["-c", `${editor} "$@"`, editor, path], { stdio: "inherit" })
        .on("exit", done)
        .on("error", () => done(null));
    });
    return code === 0 ? readFileSync(path, "utf8") : null;
  } finally {
    cleanup();
    process.off("SIGINT", ignore).off("SIGTERM", onSignal).off("SIGHUP", onSignal);
  }
}

/** Write `path` atomically and durably: a temporary file beside it (mode `mode`), fsync, rename, fsync of the folder. */
function writeDurably(path: string, text: string, mode: number): void {
  const temporary = join(dirname(path), `.${basename(path)}.provision-${randomBytes(4).toString("hex")}`);
  const fd = openSync(temporary, "wx", 0o600);
  try {
    fchmodSync(fd, mode);
    writeSync(fd, text);
    fsyncSync(fd);
  } catch (error) {
    closeSync(fd);
    rmSync(temporary, { force: true });
    throw error;
  }
  closeSync(fd);
  renameSync(temporary, path);
  const folder = openSync(dirname(path), "r");
  try {
    fsyncSync(folder);
  } finally {
    closeSync(folder);
  }
}
