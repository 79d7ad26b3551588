// Bad input against a real sshd host: refused before the host is contacted (its sshd
// log shows no new connection), and a secret in the bad input is never echoed.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, writeFileSync, existsSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { stringify } from "yaml";
import { startFleet, type TestFleet, type TestHost } from "../support/sshd-hosts.js";
import { removeOnCleanup } from "../support/processes.js";
import { provision } from "./provision-cli.js";

let fleet: TestFleet;
let dir: string;
let host: TestHost;
const cli = (...args: string[]) => provision(fleet.controllerArgv, args);

/** Connections the host's sshd has accepted so far (its VERBOSE log names each). */
const connections = () =>
  readFileSync(join(fleet.dir, `${host.name}.log`), "utf8")
    .split("\n")
    .filter((l) => l.includes("Connection from")).length;

function inventory(name: string, vars: Record<string, unknown>): string {
  const file = join(dir, name);
  writeFileSync(
    file,
    stringify({
      all: {
        vars: { user: "root", identity_file: fleet.identityFile, known_hosts_file: fleet.knownHostsFile, ...vars },
        children: { pis: { hosts: { [host.name]: { address: host.address, bond_address: `${host.address}/24` } } } },
      },
    }),
  );
  return file;
}

before(async () => {
  fleet = await startFleet({ count: 1, prefix: "bad" });
  host = fleet.hosts[0];
  dir = mkdtempSync(join(tmpdir(), "provision-bad-input-"));
  removeOnCleanup(dir);
});

after(async () => {
  await fleet?.stop();
});

test("a too-short or multi-line PSK from the inventory fails the bond task without being echoed, before any connection", async () => {
  const pb = join(dir, "bond-psk.yaml");
  writeFileSync(
    pb,
    '- hosts: pis\n  tasks:\n    - name: Bond with Wi-Fi\n      bond:\n        slaves: [eth0, wlan0]\n        address: "{{ bond_address }}"\n        slave_options:\n          wlan0: { ssid: home, psk: "{{ wifi_psk }}" }\n',
  );
  const before = connections();
  for (const psk of ["Sh0rt!", "first-half-of-psk\nsecond-half-of-psk"]) {
    const r = await cli("--inventory", inventory("psk.yaml", { wifi_psk: psk }), "--report", join(dir, "psk.json"), pb);
    assert.equal(r.code, 1, r.output);
    assert.match(r.stderr, /bond-psk\.yaml:8:37: task "Bond with Wi-Fi" > bond > slave_options\.wlan0\.psk: must match .* \(the value is secret: not shown\)/);
    for (const part of psk.split("\n")) assert.ok(!r.output.includes(part), `the PSK is not in the output:\n${r.output}`);
    assert.doesNotMatch(r.output, /\n\s+at /, "no stack trace");
    assert.ok(!existsSync(join(dir, "psk.json")), "no report: nothing ran");
  }
  assert.equal(connections(), before, "the host was never contacted");
});

test("--report into a missing folder is a usage error before any host is contacted; a good run does connect", async () => {
  const inv = inventory("report.yaml", {});
  const before = connections();
  const r = await cli("--inventory", inv, "--report", join(dir, "no-such-folder", "report.json"));
  assert.equal(r.code, 64, r.output);
  assert.match(r.stderr, /^provision: --report ".*no-such-folder\/report\.json": the folder .*no-such-folder does not exist\. Create it first or choose another path\.$/m);
  assert.doesNotMatch(r.output, /\n\s+at /);
  const atFolder = await cli("--inventory", inv, "--retry-file", dir);
  assert.equal(atFolder.code, 64, atFolder.output);
  assert.match(atFolder.stderr, /--retry-file ".*": is a folder/);
  assert.equal(connections(), before, "no connection was attempted");

  const report = join(dir, "report.json");
  const ok = await cli("--inventory", inv, "--report", report);
  assert.equal(ok.code, 0, ok.output);
  assert.equal(JSON.parse(readFileSync(report, "utf8")).hosts[0].status, "ok");
  assert.ok(connections() > before, "the sshd log counts connections: a good run shows up in it");
});
