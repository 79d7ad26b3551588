// An age-encrypted Wi-Fi PSK applied to a real OpenSSH host by the eth0+wlan0 seed
// playbook: decrypted in memory only, on the host only in files of mode 0600, nowhere in
// the output (--diff, --verbose), the JSON or the HTML report; changed with
// `provision secret edit` and applied again; a wrong key stops before any connection.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { chmodSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { startFleet, type TestFleet, type TestHost } from "../support/sshd-hosts.js";
import { removeOnCleanup, run } from "../support/processes.js";
import { repoRoot } from "../support/cache.js";
import { CLI, summary } from "./provision-cli.js";

const WLAN = join(repoRoot, "playbooks/bond-eth0-wlan0.yaml");
const PSK = "encrypted-at-rest-PSK-71";
const NEW_PSK = "rotated-PSK-after-edit-72";

let fleet: TestFleet;
let host: TestHost;
let dir: string;

/** The CLI in the controller's namespace, without any PROVISION_AGE_IDENTITY of ours. */
async function cli(args: string[], options: { input?: string; env?: Record<string, string> } = {}) {
  const env = { ...process.env, ...options.env };
  if (!options.env?.PROVISION_AGE_IDENTITY) delete env.PROVISION_AGE_IDENTITY;
  const r = await run(fleet.controllerArgv(["node", CLI, ...args]), { cwd: dir, env, input: options.input });
  return { ...r, output: r.stdout + r.stderr };
}

/** Files under the host's writable trees that contain `text`, each with its mode and owner. */
async function filesHolding(text: string): Promise<string[]> {
  const found = await fleet.exec(host, ["grep", "-rlsF", "-D", "skip", "-e", text, "/etc", "/var", "/root", "/tmp", "/run", "/home"]);
  const files = found.stdout.split("\n").filter(Boolean);
  if (!files.length) return [];
  return (await fleet.exec(host, ["stat", "-c", "%n %a %U", ...files])).stdout.trim().split("\n");
}

const connections = () =>
  readFileSync(join(fleet.dir, `${host.name}.log`), "utf8")
    .split("\n")
    .filter((l) => l.includes("Connection from")).length;

before(async () => {
  fleet = await startFleet({ count: 1, prefix: "sec" });
  host = fleet.hosts[0];
  dir = mkdtempSync(join(tmpdir(), "provision-secrets-"));
  removeOnCleanup(dir);
});

after(async () => {
  await fleet?.stop();
});

test("an encrypted PSK reaches the host only in 0600 files and nowhere in output or reports; edited, it is applied again", async (t) => {
  const keygen = await cli(["secret", "keygen", "keys/fleet.key"]);
  assert.equal(keygen.code, 0, keygen.output);
  const recipient = keygen.stdout.trim();
  const block = await cli(["secret", "encrypt", "--recipient", recipient, "--indent", "10"], { input: PSK });
  assert.equal(block.code, 0, block.output);
  assert.ok(!block.output.includes(PSK));
  const inventory = join(dir, "pis.yaml");
  writeFileSync(
    inventory,
    [
      "all:",
      "  vars:",
      "    user: root",
      `    identity_file: ${fleet.identityFile}`,
      `    known_hosts_file: ${fleet.knownHostsFile}`,
      "    age_identity_file: keys/fleet.key",
      `    bond_gateway: ${fleet.bridgeAddress}`,
      "  children:",
      "    pis:",
      "      vars:",
      "        wifi_ssid: home-network",
      `        wifi_psk: ${block.stdout.trimEnd()}`,
      "        wifi_country: DE",
      "      hosts:",
      `        ${host.name}: { address: ${host.address}, bond_address: ${host.address}/24 }`,
      "",
    ].join("\n"),
  );

  const report = join(dir, "first.json");
  const first = await cli(["--inventory", inventory, "--skip-tags", "kernel", "--diff", "--verbose", "--report", report, WLAN]);
  assert.equal(first.code, 0, first.output);
  assert.equal(summary(first.stdout)[host.name].status, "changed", first.stdout);
  assert.match(first.stdout, /psk="?\*{8}/, "the diff shows the PSK's line, masked");
  assert.doesNotMatch(first.stderr, /clear text/, "no warning: the PSK is encrypted");
  assert.ok(!first.output.includes(PSK), "not in the output (--diff, --verbose)");
  assert.ok(!readFileSync(report, "utf8").includes(PSK), "not in the JSON report");
  assert.deepEqual(await filesHolding(PSK), ["/etc/wpa_supplicant/provision-wlan0.conf 600 root"], "on the host only in the 0600 wpa_supplicant file");

  // rotate the PSK with secret edit (the editor is a script), then apply: the HTML report, the output and the backups keep it hidden
  const editor = join(dir, "editor.sh");
  writeFileSync(editor, `#!/bin/sh\nsed -i 's/"${PSK}"/"${NEW_PSK}"/' "$1"\n`);
  chmodSync(editor, 0o755);
  const edit = await cli(["secret", "edit", "pis.yaml"], { env: { EDITOR: editor, VISUAL: "" } });
  assert.equal(edit.code, 0, edit.output);
  const stored = readFileSync(inventory, "utf8");
  assert.ok(!stored.includes(PSK) && !stored.includes(NEW_PSK), "the inventory holds neither PSK in clear");
  const html = join(dir, "second.html");
  const second = await cli(["--inventory", inventory, "--skip-tags", "kernel", "--diff", "--verbose", "--report", html, WLAN]);
  assert.equal(second.code, 0, second.output);
  assert.equal(summary(second.stdout)[host.name].changed, 1, second.stdout);
  for (const secret of [PSK, NEW_PSK]) {
    assert.ok(!second.output.includes(secret), "not in the output");
    assert.ok(!readFileSync(html, "utf8").includes(secret), "not in the HTML report");
  }
  assert.deepEqual(await filesHolding(NEW_PSK), ["/etc/wpa_supplicant/provision-wlan0.conf 600 root"]);
  const old = await filesHolding(PSK);
  t.diagnostic(`the old PSK is kept in: ${old.join(", ") || "no file"}`);
  assert.ok(
    old.every((line) => / 600 root$/.test(line)),
    `the old PSK, if kept (the run's backup), only in 0600 files: ${old.join(", ")}`,
  );
  // the same encrypted PSK decrypts to the same file: a run writes nothing (sshd hosts have no bonding
  // kernel, so the bond itself stays pending: see acceptance.test.ts)
  const sha = async () => (await fleet.exec(host, ["sha256sum", "/etc/wpa_supplicant/provision-wlan0.conf"])).stdout;
  const written = await sha();
  const third = await cli(["--inventory", inventory, "--skip-tags", "kernel", WLAN]);
  assert.equal(third.code, 0, third.output);
  assert.doesNotMatch(third.stdout, /provision-wlan0\.conf/, "the PSK's file is not rewritten");
  assert.equal(await sha(), written);
});

test("a wrong key: an error at the encrypted value's file:line:col, and the host is never contacted", async () => {
  const inventory = join(dir, "pis.yaml");
  const other = await cli(["secret", "keygen", "keys/other.key"]);
  assert.equal(other.code, 0, other.output);
  const before = connections();
  const r = await cli(["--inventory", inventory, "--skip-tags", "kernel", WLAN], { env: { PROVISION_AGE_IDENTITY: readFileSync(join(dir, "keys/other.key"), "utf8") } });
  assert.equal(r.code, 1, r.output);
  assert.match(r.stderr, /pis\.yaml:12:24: cannot decrypt: it was encrypted for another key than the one in PROVISION_AGE_IDENTITY/);
  assert.ok(!r.output.includes("AGE-SECRET-KEY") && !r.output.includes(NEW_PSK), r.output);
  assert.equal(connections(), before, "no connection reached the host's sshd");
});
