// Secrets: taint (a value templated from a secret is secret), values encrypted at rest with
// age (decrypted in memory; missing or wrong key → file:line:col and the fix), the warning
// about clear-text secrets, and `provision secret keygen|encrypt|edit` end to end (the
// real CLI, a real editor process, the reference age tool for interoperability).
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { chmodSync, existsSync, mkdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { stringify } from "yaml";
import { loadInventory } from "../../core/config/inventory.js";
import { loadPlaybook } from "../../core/config/playbook.js";
import { ConfigError } from "../../core/errors.js";
import { masker, maskReplaced } from "../../core/config/secrets.js";
import { showChange } from "../../core/report/changes.js";
import { prepare } from "../../core/run/run.js";
import { ageBlock, encryptText, newIdentity, openSecrets, reveal, seal, IDENTITY_ENV } from "../../core/config/vault.js";
import { repoRoot } from "../support/cache.js";
import { encryptInventoryVars } from "../support/age-inventory.js";
import { builtinRegistry, settings, tempWriter } from "./config-support.js";

const { dir, write } = tempWriter("secrets");
const CLI = join(repoRoot, "dist/cli/cli.js");
const PSK = "Sup3r-secret-PSK";
const noEnv = {} as NodeJS.ProcessEnv;

function configError(fn: () => unknown, pattern: RegExp, secrets: string[] = []): string {
  let message = "";
  assert.throws(fn, (e: Error) => {
    assert.ok(e instanceof ConfigError, `expected a ConfigError, got ${e?.name}: ${e?.message}`);
    message = e.message;
    return true;
  });
  assert.match(message, pattern);
  for (const secret of secrets) assert.ok(!message.includes(secret), `the secret ${JSON.stringify(secret)} is in: ${message}`);
  return message;
}

async function rejectsConfig(promise: Promise<unknown>, pattern: RegExp, secrets: string[] = []): Promise<string> {
  let message = "";
  await assert.rejects(promise, (e: Error) => {
    assert.ok(e instanceof ConfigError, `expected a ConfigError, got ${e?.name}: ${e?.message}`);
    message = e.message;
    return true;
  });
  assert.match(message, pattern);
  assert.doesNotMatch(message, /\n\s+at /, "no stack trace");
  for (const secret of secrets) assert.ok(!message.includes(secret), `the secret ${JSON.stringify(secret)} is in: ${message}`);
  return message;
}

/** A key file and its recipient, in `dir`. */
async function keyFile(name: string): Promise<{ path: string; recipient: string; identity: string }> {
  const { text, recipient } = await newIdentity();
  const path = write(name, text);
  chmodSync(path, 0o600);
  return { path, recipient, identity: text.split("\n")[2] };
}

/** `key: !age |` with the block indented under a key at `indent`. */
async function encrypted(plaintext: string, recipient: string, indent: number): Promise<string> {
  return ageBlock(await encryptText(plaintext, [recipient]), indent + 2).trimEnd();
}

// ---- 1. Taint --------------------------------------------------------------------------

const bondWith = (args: string) => `- hosts: all\n  tasks:\n    - name: bond0\n      bond:\n        slaves: [eth0, wlan0]\n${args}`;

test("a value templated from a secret variable is never shown in a schema error", () => {
  const inv = loadInventory(
    write("taint-inv.yaml", `all:\n  vars: { wifi_psk: "${PSK}", wifi: { psk: "${PSK}" }, shown: "not a secret" }\n  hosts:\n    pi1: { address: 10.0.0.1 }\n`),
  );
  const cases: [string, RegExp][] = [
    ['        address: "{{ wifi_psk }}/24"\n', /bond > address: must .*\(the value is secret: not shown\)/],
    ['        address: 10.0.0.2/24\n        slave_options: { wlan0: "{{ wifi_psk }}" }\n', /slave_options\.wlan0: must be an object \(the value is secret: not shown\)/],
    ['        address: "{{ wifi.psk }}"\n', /bond > address: must .*\(the value is secret: not shown\)/],
    ['        address: "x{{ wifi }}"\n', /bond > address: must .*\(the value is secret: not shown\)/],
    ['        address: 10.0.0.2/24\n        primary: "{{ wifi_psk }}"\n', /bond > primary: .*\(the value is secret: not shown\)/],
  ];
  for (const [i, [args, pattern]] of cases.entries())
    configError(() => prepare(inv, [loadPlaybook(write(`taint-${i}.yaml`, bondWith(args)))], builtinRegistry(), settings), pattern, [PSK, PSK.slice(0, 12)]);
  // the same error about a value that is not secret shows it: the tests above can fail
  configError(
    () => prepare(inv, [loadPlaybook(write("taint-shown.yaml", bondWith('        address: "{{ shown }}/24"\n')))], builtinRegistry(), settings),
    /bond > address: must .*\(got "not a secret\/24"\)/,
  );
});

test("a task's mask covers the secret variables it uses and what it renders from them", () => {
  const inv = loadInventory(write("mask-inv.yaml", `all:\n  vars: { wifi_psk: "${PSK}", gw: 10.0.0.1 }\n  hosts:\n    pi1: { address: 10.0.0.1 }\n`));
  const pb = write("mask.yaml", '- hosts: all\n  tasks:\n    - motd: { message: "psk {{ wifi_psk }} via {{ gw }}" }\n    - motd: { message: "{{ gw }}" }\n');
  const r = builtinRegistry();
  r.register({ name: "motd", description: "test", schema: { type: "object", properties: { message: { type: "string" } } }, facts: () => ({}), plan: () => [] }, "plugin");
  const [play] = prepare(inv, [loadPlaybook(pb)], r, settings);
  const [uses, other] = play.hosts[0].tasks;
  // the variable itself, and the whole string rendered from it
  assert.equal(uses.mask(`error: ${PSK} rejected; message was psk ${PSK} via 10.0.0.1`), "error: ******** rejected; message was ********");
  assert.equal(other.mask("10.0.0.1"), "10.0.0.1", "a task that uses no secret masks nothing of its own");
});

test("a diff never shows the secret a change replaces, though the run does not know it (a rotated token)", () => {
  const mask = masker(["new-token-value", "new-whole-line-secret"]);
  const before = "# api\napi_token = old-token-value\nport = 1\nold-whole-line-secret\nname = api\n";
  const after = "# api\napi_token = new-token-value\nport = 2\nnew-whole-line-secret\nname = api\n";
  const shown = showChange({ kind: "file", path: "/etc/api.conf", before, after, summary: "update /etc/api.conf" }, mask, true);
  assert.ok(!shown.diff!.includes("old-token-value") && !shown.diff!.includes("old-whole-line-secret"), shown.diff);
  assert.ok(!shown.diff!.includes("new-token-value"), shown.diff);
  assert.match(shown.diff!, /^-port = 1$/m, "what is not secret still shows as it changed");
  assert.match(shown.diff!, /^\+port = 2$/m);
  // a line that merely looks alike elsewhere is left as it is: only the shape around ******** counts
  assert.equal(maskReplaced("api_token_ttl = 5\nother = x\n", mask(after)), "api_token_ttl = 5\nother = x\n");
});

// ---- 2. Encrypted values -----------------------------------------------------------------

test("encrypted values in the inventory and a playbook are decrypted in memory, and tainted whatever their name", async () => {
  const key = await keyFile("fleet.key");
  mkdirSync(join(dir, "inv"), { recursive: true });
  const inventory = write(
    "inv/enc.yaml",
    `all:\n  vars:\n    age_identity_file: ../fleet.key\n    wifi_psk: ${await encrypted(PSK, key.recipient, 4)}\n    home: ${await encrypted("not-an-address-9", key.recipient, 4)}\n  hosts:\n    pi1: { address: 10.0.0.1 }\n`,
  );
  const playbook = write(
    "enc-pb.yaml",
    `- hosts: all\n  vars:\n    bond_psk: ${await encrypted("play-level-secret", key.recipient, 4)}\n  tasks:\n    - name: bond0\n      bond:\n        slaves: [eth0, wlan0]\n        address: "{{ home }}"\n        slave_options:\n          wlan0: { ssid: home, psk: "{{ wifi_psk }}" }\n`,
  );
  // relative to the inventory, not to where provision runs
  const opened = await openSecrets(inventory, [{ file: playbook, kind: "a playbook" }], noEnv);
  const inv = loadInventory(inventory, opened.decrypted);
  assert.equal(inv.hosts.get("pi1")!.vars.wifi_psk, PSK);
  assert.deepEqual(inv.secrets.sort(), [PSK, "not-an-address-9"].sort());
  const pb = loadPlaybook(playbook, opened.decrypted);
  assert.equal(pb.plays[0].vars.bond_psk, "play-level-secret");
  assert.deepEqual(opened.warnings, [], "no clear-text secret");
  // "home" is not named like a secret, but it was encrypted: an error about it does not show it
  configError(() => prepare(inv, [pb], builtinRegistry(), settings), /bond > address: must .*\(the value is secret: not shown\)/, ["not-an-address-9"]);
  // without the decrypted values, the loaders refuse rather than pass ciphertext on as a value
  configError(() => loadInventory(inventory), /enc\.yaml:4:20: an encrypted value \(!age\), but no age identity was loaded/);
});

test("a missing or wrong key, a damaged value: file:line:col and the fix, before anything else; never the key or the plaintext", async () => {
  const key = await keyFile("right.key");
  const other = await keyFile("other.key");
  const value = await encrypted(PSK, key.recipient, 4);
  const inv = (name: string, identity: string | null, psk = value) =>
    write(name, `all:\n  vars:\n${identity === null ? "" : `    age_identity_file: ${identity}\n`}    wifi_psk: ${psk}\n  hosts:\n    pi1: { address: 10.0.0.1 }\n`);
  const secrets = [PSK, key.identity, other.identity];
  await rejectsConfig(
    openSecrets(inv("no-key.yaml", null), [], noEnv),
    /no-key\.yaml:3:20: an encrypted value \(!age\), but no age identity to decrypt it\. Set age_identity_file: PATH under the inventory's all: vars: \(create one with `provision secret keygen`\), or the environment variable PROVISION_AGE_IDENTITY/,
    secrets,
  );
  await rejectsConfig(
    openSecrets(inv("missing-key.yaml", "nowhere.key"), [], noEnv),
    /missing-key\.yaml:3:24: age_identity_file .*nowhere\.key: cannot read it \(ENOENT\)\. Copy the fleet's key there, fix the path, or set PROVISION_AGE_IDENTITY\./,
    secrets,
  );
  await rejectsConfig(
    openSecrets(inv("wrong-key.yaml", "other.key"), [], noEnv),
    /wrong-key\.yaml:4:20: cannot decrypt: it was encrypted for another key than the one in .*other\.key\. Use the key it was encrypted for/,
    secrets,
  );
  const garbage = write("garbage.key", `# a comment\n${key.identity.slice(0, -3)}\n`);
  await rejectsConfig(openSecrets(inv("garbage-key.yaml", garbage), [], noEnv), /garbage-key\.yaml:3:24: age_identity_file .*garbage\.key: line 2 is not an age identity/, [
    ...secrets,
    key.identity.slice(0, -3),
  ]);
  const damaged = value.replace(/^(\s+)([A-Za-z0-9+/]{10})/m, "$1AAAAAAAAAA");
  await rejectsConfig(
    openSecrets(inv("damaged.yaml", "right.key", damaged), [], noEnv),
    /damaged\.yaml:4:20: (not an age-encrypted value|cannot decrypt: the encrypted value is damaged)/,
    secrets,
  );
  await rejectsConfig(
    openSecrets(inv("not-armor.yaml", "right.key", "!age not-encrypted-at-all"), [], noEnv),
    /not-armor\.yaml:4:20: not an age-encrypted value\. Paste the whole block/,
    secrets,
  );
  configError(
    () => loadInventory(inv("vault.yaml", null, "!vault |\n      $ANSIBLE_VAULT;1.1;AES256\n      6162")),
    /vault\.yaml:3:15: invalid YAML: Ansible Vault values \(!vault\) are not read/,
  );
  configError(() => loadInventory(inv("map.yaml", null, "!age { a: 1 }")), /map\.yaml:3:15: invalid YAML: !age takes the encrypted text, not a mapping or list/);
  // PROVISION_AGE_IDENTITY holds the key itself and overrides the inventory's file
  const viaEnv = await openSecrets(inv("env.yaml", "nowhere.key"), [], { [IDENTITY_ENV]: `# from CI\n${key.identity}\n` });
  assert.equal(loadInventory(inv("env.yaml", "nowhere.key"), viaEnv.decrypted).hosts.get("pi1")!.vars.wifi_psk, PSK);
  await rejectsConfig(
    openSecrets(inv("env-wrong.yaml", null), [], { [IDENTITY_ENV]: "AGE-SECRET-KEY-1NOTAKEY" }),
    /the environment variable PROVISION_AGE_IDENTITY: line 1 is not an age identity/,
    ["AGE-SECRET-KEY-1NOTAKEY"],
  );
});

test("the CLI stops on a wrong key before contacting any host, and warns once per file about clear-text secrets", async () => {
  const key = await keyFile("cli.key");
  const other = await keyFile("cli-other.key");
  // 10.255.255.1: no host is contacted (the error comes before any connection)
  const wrong = write(
    "cli-wrong.yaml",
    `all:\n  vars:\n    age_identity_file: cli-other.key\n    wifi_psk: ${await encrypted(PSK, key.recipient, 4)}\n  hosts:\n    pi1: { address: 127.0.0.1, port: 9 }\n`,
  );
  const r = await runCli(["-i", wrong, "--check"]);
  assert.equal(r.code, 1, r.stderr);
  assert.match(r.stderr, /cli-wrong\.yaml:4:20: cannot decrypt/);
  assert.doesNotMatch(r.stdout + r.stderr, /PLAY|connecting|unreachable/, "no host was contacted");
  const clear = write(
    "cli-clear.yaml",
    `all:\n  vars:\n    wifi_psk: ${PSK}\n    admin_password: hunter2-hunter2\n    psk_template: "{{ wifi_psk }}"\n  hosts:\n    pi1: { address: 127.0.0.1, port: 9, connect_timeout: 1 }\n`,
  );
  const pb = write("cli-clear-pb.yaml", "- hosts: all\n  vars: { db_secret: clear-in-playbook }\n  tasks: []\n");
  const warned = await runCli(["-i", clear, "--check", pb]);
  const warnings = warned.stderr.split("\n").filter((l) => l.includes("warning:"));
  assert.deepEqual(
    warnings.map((w) => w.replace(/^provision: warning: (\S+?):.*/, "$1")),
    ["cli-clear.yaml", "cli-clear-pb.yaml"],
    warned.stderr,
  );
  assert.match(
    warnings[0],
    /cli-clear\.yaml:3:15: "wifi_psk" is a secret in clear text \(and 1 more in this file\)\. Encrypt it: `provision secret edit cli-clear\.yaml` and tag the value !encrypt/,
  );
  assert.match(warnings[1], /cli-clear-pb\.yaml:2:22: "db_secret" is a secret in clear text\./);
  assert.ok(!warned.stderr.includes(PSK) && !warned.stderr.includes("hunter2") && !warned.stderr.includes("clear-in-playbook"));
  void other;
});

test("the shipped example inventory's PSK is a real age file: with another key, the error names its line", async () => {
  const other = await keyFile("example-other.key");
  await rejectsConfig(
    openSecrets(join(repoRoot, "inventories/pis.yaml"), [], { [IDENTITY_ENV]: other.identity }),
    /inventories\/pis\.yaml:22:24: cannot decrypt: it was encrypted for another key than the one in PROVISION_AGE_IDENTITY/,
    [other.identity],
  );
});

test("test support: an inventory written as the lab writes it, its PSK encrypted at rest, reads back the same", async () => {
  const file = write(
    "lab-like.yaml",
    stringify({
      all: {
        vars: { user: "root", wifi_ssid: "provision-lab", wifi_psk: "lab-passphrase-42", wifi_country: "DE" },
        children: { pis: { hosts: { pi1: { address: "10.77.0.11" } } } },
      },
    }),
  );
  await encryptInventoryVars(file, ["wifi_psk"]);
  const text = readFileSync(file, "utf8");
  assert.ok(!text.includes("lab-passphrase-42"));
  assert.match(text, /wifi_psk: !age \|\n {6}-----BEGIN AGE ENCRYPTED FILE-----/);
  const opened = await openSecrets(file, [], noEnv);
  assert.deepEqual(opened.warnings, []);
  assert.equal(loadInventory(file, opened.decrypted).hosts.get("pi1")!.vars.wifi_psk, "lab-passphrase-42");
});

// ---- 3. provision secret -------------------------------------------------------------------

function runCli(args: string[], options: { input?: string; env?: NodeJS.ProcessEnv } = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const env = { ...process.env, ...options.env };
    delete env[IDENTITY_ENV];
    if (options.env?.[IDENTITY_ENV]) env[IDENTITY_ENV] = options.env[IDENTITY_ENV];
    const child = spawn(process.execPath, [CLI, ...args], { cwd: dir, env, stdio: ["pipe", "pipe", "pipe"] });
    let stdout = "",
      stderr = "";
    child.stdout.on("data", (d) => (stdout += d));
    child.stderr.on("data", (d) => (stderr += d));
    child.stdin.end(options.input ?? "");
    child.on("exit", (code) => resolve({ code: code ?? -1, stdout, stderr }));
  });
}

test("secret keygen writes a 0600 key and never overwrites one; secret encrypt prints a block the inventory reads", async () => {
  const made = await runCli(["secret", "keygen", "made/fleet.key"]);
  assert.equal(made.code, 0, made.stderr);
  const keyPath = join(dir, "made/fleet.key");
  assert.equal(statSync(keyPath).mode & 0o777, 0o600);
  const recipient = made.stdout.trim();
  assert.match(recipient, /^age1[a-z0-9]{58}$/);
  assert.match(readFileSync(keyPath, "utf8"), new RegExp(`^# created: .*\\n# public key: ${recipient}\\nAGE-SECRET-KEY-1[A-Z0-9]+\\n$`));
  const again = await runCli(["secret", "keygen", "made/fleet.key"]);
  assert.equal(again.code, 64);
  assert.match(again.stderr, /exists: keygen never overwrites a key/);

  const inventory = write("made/inv.yaml", "all:\n  vars:\n    age_identity_file: fleet.key\n    wifi_psk: PLACEHOLDER\n  hosts:\n    pi1: { address: 10.0.0.1 }\n");
  const block = await runCli(["secret", "encrypt", "--inventory", inventory, "--indent", "6"], { input: `${PSK}\n` });
  assert.equal(block.code, 0, block.stderr);
  assert.ok(!block.stdout.includes(PSK) && !block.stderr.includes(PSK));
  assert.match(block.stdout, /^!age \|\n {6}-----BEGIN AGE ENCRYPTED FILE-----\n( {6}[A-Za-z0-9+/=]+\n)+ {6}-----END AGE ENCRYPTED FILE-----\n$/);
  writeFileSync(inventory, readFileSync(inventory, "utf8").replace("PLACEHOLDER", block.stdout.trimEnd()));
  const opened = await openSecrets(inventory, [], noEnv);
  assert.equal(loadInventory(inventory, opened.decrypted).hosts.get("pi1")!.vars.wifi_psk, PSK, "the final newline of standard input is not part of the value");

  const byRecipient = await runCli(["secret", "encrypt", "--recipient", recipient], { input: "x-value" });
  assert.equal(byRecipient.code, 0, byRecipient.stderr);
  const noRecipient = await runCli(["secret", "encrypt"], { input: "x" });
  assert.equal(noRecipient.code, 64);
  assert.match(noRecipient.stderr, /no recipient: give --recipient/);
  const badRecipient = await runCli(["secret", "encrypt", "--recipient", "age1nope"], { input: "x" });
  assert.equal(badRecipient.code, 1);
  assert.match(badRecipient.stderr, /--recipient: "age1nope" is not an age recipient/);
});

/** The CLI on a real terminal (util-linux script's pseudo-terminal): answers each prompt once it is shown. */
function onTerminal(args: string[], answers: string[]): Promise<string> {
  return new Promise((resolve) => {
    const command = [process.execPath, CLI, ...args].map((a) => `'${a}'`).join(" ");
    const child = spawn("script", ["-qec", command, "/dev/null"], { cwd: dir, stdio: ["pipe", "pipe", "pipe"] });
    let output = "";
    let prompts = 0;
    child.stdout.on("data", (d) => {
      output += d;
      const shown = (output.match(/\(not shown\): |Again: /g) ?? []).length;
      for (; prompts < shown; prompts++) child.stdin.write(`${answers[prompts]}\r`);
    });
    child.on("exit", () => resolve(output));
  });
}

test("secret encrypt on a terminal: the value is typed twice and never echoed; two different values are refused", async () => {
  const key = await keyFile("tty.key");
  const typed = await onTerminal(["secret", "encrypt", "--recipient", key.recipient, "--indent", "4"], [PSK, PSK]);
  assert.match(typed, /Value to encrypt \(not shown\): \r?\nAgain: \r?\n!age \|/);
  assert.ok(!typed.includes(PSK), `the terminal never shows it:\n${typed}`);
  const block = typed
    .slice(typed.indexOf("!age |"))
    .split(/\r?\n/)
    .filter((l) => /^(!age \|| {4}\S)/.test(l))
    .join("\n");
  const inventory = write("tty.yaml", `all:\n  vars:\n    age_identity_file: tty.key\n  hosts:\n    pi1:\n      wifi_psk: ${block.replace(/\n/g, "\n    ")}\n`);
  assert.equal(loadInventory(inventory, (await openSecrets(inventory, [], noEnv)).decrypted).hosts.get("pi1")!.vars.wifi_psk, PSK);
  const differ = await onTerminal(["secret", "encrypt", "--recipient", key.recipient], ["first-value", "second-value"]);
  assert.match(differ, /the two values differ: nothing was encrypted/);
  assert.ok(!differ.includes("first-value") && !differ.includes("-----BEGIN"), differ);
});

test(
  "the reference age tool decrypts what provision encrypts, and provision what age encrypts",
  { skip: spawnSync("age", ["--version"]).status !== 0 && "the age package is not installed" },
  async () => {
    const key = await keyFile("interop.key");
    const block = await runCli(["secret", "encrypt", "--recipient", key.recipient], { input: PSK });
    const armored = block.stdout
      .split("\n")
      .slice(1)
      .map((l) => l.trim())
      .join("\n");
    const decrypted = spawnSync("age", ["--decrypt", "--identity", key.path], { input: armored, encoding: "utf8" });
    assert.equal(decrypted.status, 0, decrypted.stderr);
    assert.equal(decrypted.stdout, PSK);
    const fromAge = spawnSync("age", ["--encrypt", "--armor", "--recipient", key.recipient], { input: "from-the-age-tool", encoding: "utf8" });
    assert.equal(fromAge.status, 0, fromAge.stderr);
    const inventory = write(
      "interop.yaml",
      `all:\n  vars:\n    age_identity_file: interop.key\n    token: !age |\n${fromAge.stdout
        .trimEnd()
        .split("\n")
        .map((l) => `      ${l}`)
        .join("\n")}\n  hosts:\n    pi1: { address: 10.0.0.1 }\n`,
    );
    const opened = await openSecrets(inventory, [], noEnv);
    assert.equal(loadInventory(inventory, opened.decrypted).hosts.get("pi1")!.vars.token, "from-the-age-tool");
    // an identity file made by age-keygen is read as it is
    assert.equal(spawnSync("age-keygen", ["-o", join(dir, "age-keygen.key")]).status, 0);
    const recipient = spawnSync("age-keygen", ["-y", join(dir, "age-keygen.key")], { encoding: "utf8" }).stdout.trim();
    const withAgeKey = write(
      "interop2.yaml",
      `all:\n  vars:\n    age_identity_file: age-keygen.key\n    token: ${await encrypted("for-age-keygen", recipient, 4)}\n  hosts:\n    pi1:\n`,
    );
    assert.equal(loadInventory(withAgeKey, (await openSecrets(withAgeKey, [], noEnv)).decrypted).hosts.get("pi1")!.vars.token, "for-age-keygen");
  },
);

test("secret edit: decrypted into a private 0600 file for $EDITOR, re-encrypted on save, written atomically, the copy removed", async () => {
  const key = await keyFile("edit.key");
  const file = write(
    "edit.yaml",
    [
      "# the fleet",
      "all:",
      "  hosts:",
      "    pi1: { address: 10.0.0.1 }   # the kitchen",
      "  vars:",
      "    age_identity_file: edit.key",
      `    wifi_psk: ${await encrypted("old-psk-value", key.recipient, 4)}`,
      `    keep: ${(await encrypted("unchanged-secret", key.recipient, 4)).replace("|", "|   # stays as it is")}`,
      "",
    ].join("\n"),
  );
  chmodSync(file, 0o640);
  const before = readFileSync(file, "utf8");
  const keepBlock = /keep: (!age \|[^\n]*\n(?: {6}.*\n)+)/.exec(before)![1];
  const seen = join(dir, "editor-saw.txt");
  const editor = write(
    "editor.sh",
    `#!/bin/sh
set -e
{ stat -c '%a' "$1"; stat -c '%a' "$(dirname "$1")"; echo "$1"; cat "$1"; } > '${seen}'
sed -i 's/"old-psk-value"/"new-psk-value"/; s/address: 10.0.0.1 }/address: 10.0.0.1, api_token: !encrypt "flow-secret" }/' "$1"
printf '    listed:\\n      - !encrypt 12345678   # a number, kept as text\\n      - plain\\n' >> "$1"
`,
  );
  chmodSync(editor, 0o755);
  const r = await runCli(["secret", "edit", "edit.yaml"], { env: { EDITOR: editor, VISUAL: "" } });
  assert.equal(r.code, 0, r.stderr);
  const [fileMode, folderMode, tempPath, ...shown] = readFileSync(seen, "utf8").split("\n");
  assert.equal(fileMode, "600");
  assert.equal(folderMode, "700");
  assert.ok(!existsSync(tempPath) && !existsSync(join(tempPath, "..")), "the decrypted copy and its folder are gone");
  assert.match(shown.join("\n"), /wifi_psk: !encrypt "old-psk-value"\n    keep: !encrypt "unchanged-secret"   # stays as it is\n/);
  const after = readFileSync(file, "utf8");
  assert.equal(statSync(file).mode & 0o777, 0o640, "the file keeps its mode");
  for (const clear of ["old-psk-value", "new-psk-value", "flow-secret", "12345678", "unchanged-secret"])
    assert.ok(!after.includes(clear), `${clear} is not in the file:\n${after}`);
  assert.ok(after.includes(`keep: ${keepBlock}`), "an unchanged value keeps its ciphertext (no churn in version control)");
  assert.match(after, /^# the fleet\nall:\n/, "comments and everything else are kept");
  assert.match(after, /pi1: \{ address: 10\.0\.0\.1, api_token: !age "-----BEGIN AGE ENCRYPTED FILE-----\\n.*\\n-----END AGE ENCRYPTED FILE-----\\n" \}   # the kitchen\n/);
  assert.match(after, /listed:\n {6}- !age \| {3}# a number, kept as text\n {10}-----BEGIN AGE/);
  const opened = await openSecrets(file, [], noEnv);
  const vars = loadInventory(file, opened.decrypted).hosts.get("pi1")!.vars;
  assert.deepEqual([vars.wifi_psk, vars.keep, vars.api_token, vars.listed], ["new-psk-value", "unchanged-secret", "flow-secret", ["12345678", "plain"]]);
  assert.deepEqual(readdirNoTemp(), [], "no temporary file left beside it");

  // nothing changed: the file is left as it was; --reencrypt: every value gets a new ciphertext, same plaintexts
  const unchanged = readFileSync(file, "utf8");
  assert.equal((await runCli(["secret", "edit", "edit.yaml"], { env: { EDITOR: "true" } })).code, 0);
  assert.equal(readFileSync(file, "utf8"), unchanged);
  assert.equal((await runCli(["secret", "edit", "--reencrypt", "edit.yaml"], { env: { EDITOR: "true" } })).code, 0);
  assert.ok(!readFileSync(file, "utf8").includes(keepBlock));
  const reopened = loadInventory(file, (await openSecrets(file, [], noEnv)).decrypted).hosts.get("pi1")!.vars;
  assert.deepEqual([reopened.wifi_psk, reopened.keep, reopened.api_token], ["new-psk-value", "unchanged-secret", "flow-secret"]);

  // the editor fails: nothing written; a wrong key: an error before the editor opens
  assert.equal((await runCli(["secret", "edit", "edit.yaml"], { env: { EDITOR: "false" } })).code, 1);
  const other = await keyFile("edit-other.key");
  const wrong = await runCli(["secret", "edit", "edit.yaml"], { env: { EDITOR: `sh -c 'echo opened > ${join(dir, "opened")}'`, [IDENTITY_ENV]: other.identity } });
  assert.equal(wrong.code, 1);
  assert.match(wrong.stderr, /edit\.yaml:4:47: cannot decrypt/);
  assert.ok(!existsSync(join(dir, "opened")));
});

function readdirNoTemp(): string[] {
  return spawnSync("ls", ["-a", dir], { encoding: "utf8" })
    .stdout.split("\n")
    .filter((f) => f.includes(".provision-"));
}

test("reveal and seal: block values in lists and nested maps get a valid indentation; invalid edits are refused with file:line:col", async () => {
  const key = await keyFile("seal.key");
  const keys = { identities: [key.identity], from: "seal.key" };
  const text = "a:\n  - psk: !encrypt one-value\n    other: 1\n  - !encrypt two-value\nb: { c: [!encrypt three] }\nd:\n  !encrypt four\n";
  const sealed = await seal(text, "x.yaml", [key.recipient], new Map());
  const back = await reveal(sealed, "x.yaml", keys);
  assert.equal(back.text, 'a:\n  - psk: !encrypt "one-value"\n    other: 1\n  - !encrypt "two-value"\nb: { c: [!encrypt "three"] }\nd:\n  !encrypt "four"\n');
  await assert.rejects(seal("a: !encrypt { b: 1 }\n", "y.yaml", [key.recipient], new Map()), /y\.yaml:1:13: !encrypt takes a text value, not a mapping or list/);
  await assert.rejects(seal("a: [unclosed\n", "z.yaml", [key.recipient], new Map()), /z\.yaml:\d+:\d+: invalid YAML/);
});
