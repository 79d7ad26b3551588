// Acceptance, as a new user would run it: the seed playbooks against real OpenSSH
// hosts (each in its own network namespace and root), apt installing a real .deb.
// Kernel steps (modprobe, reboot) are skipped here with --skip-tags kernel; the
// QEMU lab tier runs them on a real kernel.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { cpSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync, existsSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { stringify } from "yaml";
import { startFleet, type TestFleet, type TestHost } from "../support/sshd-hosts.js";
import { removeOnCleanup, run } from "../support/processes.js";
import { repoRoot } from "../support/cache.js";
import { provision, summary, WIFI_VARS } from "./provision-cli.js";

let fleet: TestFleet;
let dir: string;
let inventory: string;
const WLAN = join(repoRoot, "playbooks/bond-eth0-wlan0.yaml");
const ETH1 = join(repoRoot, "playbooks/bond-eth0-eth1.yaml");

const cli = (...args: string[]) => provision(fleet.controllerArgv, args);
const host = (i: number): TestHost => fleet.hosts[i];
const cat = async (h: TestHost, path: string) => {
  const r = await fleet.exec(h, ["cat", path]);
  return r.code === 0 ? r.stdout : null;
};
const sha = async (h: TestHost, paths: string[]) =>
  (await fleet.exec(h, ["sh", "-c", 'for f; do if [ -e "$f" ]; then sha256sum "$f"; stat -c "%a %U:%G" "$f"; else echo "absent $f"; fi; done', "-", ...paths])).stdout;
const dpkgStatus = async (h: TestHost, pkg: string) => (await fleet.exec(h, ["dpkg-query", "-W", "-f", "${Status}", pkg])).stdout;

function writeInventory(file: string, hosts: TestHost[], extra: Record<string, Record<string, unknown>> = {}, vars: Record<string, unknown> = {}) {
  const entries = Object.fromEntries(hosts.map((h) => [h.name, { address: h.address, bond_address: `${h.address}/24` }]));
  writeFileSync(
    file,
    stringify({
      all: {
        vars: { user: "root", identity_file: fleet.identityFile, known_hosts_file: fleet.knownHostsFile, bond_gateway: fleet.bridgeAddress, ...WIFI_VARS, ...vars },
        children: { pis: { hosts: { ...entries, ...extra } } },
      },
    }),
  );
  return file;
}

before(async () => {
  fleet = await startFleet({ count: 5, prefix: "pi" });
  dir = mkdtempSync(join(tmpdir(), "provision-acceptance-"));
  removeOnCleanup(dir);
  inventory = writeInventory(join(dir, "pis.yaml"), fleet.hosts);
});

after(async () => {
  await fleet?.stop();
});

test("eth0+wlan0 playbook: first run changes, second run changes nothing, --check finds no drift", async () => {
  const h = host(0);
  const stockInterfaces = await cat(h, "/etc/network/interfaces");
  const first = await cli("--inventory", inventory, "--limit", h.name, "--skip-tags", "kernel", "--diff", "--report", join(dir, "first.json"), WLAN);
  assert.equal(first.code, 0, first.output);
  assert.equal(summary(first.stdout)[h.name].status, "changed", first.stdout);
  assert.equal(summary(first.stdout)[h.name].changed, 3, first.stdout);
  assert.match(first.stdout, /\+auto bond0/, "--diff shows the new interfaces file");

  assert.equal(await dpkgStatus(h, "ifenslave"), "install ok installed", "apt installed the real .deb");
  const interfaces = (await cat(h, "/etc/network/interfaces"))!;
  assert.match(interfaces, /iface bond0 inet static\n\s+address \S+\/24\n\s+gateway 10\.88\.0\.1\n\s+bond-slaves eth0 wlan0/);
  assert.equal(await cat(h, "/etc/network/interfaces.orig"), stockInterfaces, "the original is saved as interfaces.orig");
  assert.match((await cat(h, "/etc/dhcpcd.conf"))!, /^denyinterfaces eth0 wlan0 bond0$/m);
  assert.match((await fleet.exec(h, ["stat", "-c", "%a %U", "/etc/network/interfaces"])).stdout, /^644 root/);
  assert.match((await fleet.exec(h, ["sh", "-c", "ls /var/lib/provision/runs/*/manifest"])).stdout, /manifest/, "backups were written first");

  const report = JSON.parse(readFileSync(join(dir, "first.json"), "utf8"));
  assert.equal(report.hosts[0].host, h.name);
  assert.equal(report.hosts[0].status, "changed");
  assert.ok(report.hosts[0].tasks.some((t: { changes: { diff?: string }[] }) => t.changes.some((c) => c.diff?.includes("+auto bond0"))));
  assert.ok(
    report.hosts[0].tasks.some((t: { notes: string[] }) => t.notes.some((n) => n.includes("after a reboot"))),
    "unverified until a reboot, and says so",
  );

  // These hosts run on a kernel without bonding: the files are as desired, the kernel's view is not.
  const files = ["/etc/network/interfaces", "/etc/dhcpcd.conf", "/etc/wpa_supplicant/provision-wlan0.conf"];
  const written = await sha(h, files);
  const second = await cli("--inventory", inventory, "--limit", h.name, "--skip-tags", "kernel", WLAN);
  assert.equal(second.code, 0, second.output);
  assert.deepEqual(summary(second.stdout)[h.name], { status: "changed", ok: 2, changed: 1, failed: 0, rolledBack: "no" });
  assert.match(second.stdout, /bond0 does not run as configured \(bond0 does not exist\): reboot to bring it up from its files/);
  assert.equal(await sha(h, files), written, "the second run wrote no file");

  const check = await cli("--inventory", inventory, "--limit", h.name, "--skip-tags", "kernel", "--check", WLAN);
  assert.equal(check.code, 2, "an audit reports what the kernel runs, not only what the files say");
  assert.match(check.stdout, /bond0 does not exist/);
  assert.match(check.stdout, /network_stack: ifupdown/, "the host's network stack is shown");
});

test("a hand edit shows up in --check --diff (exit 2) and --check writes nothing", async () => {
  const h = host(0);
  await fleet.exec(h, ["sh", "-c", "sed -i 's/^denyinterfaces .*/denyinterfaces eth0/' /etc/dhcpcd.conf"]);
  const before = await sha(h, ["/etc/dhcpcd.conf", "/etc/network/interfaces"]);
  const check = await cli("--inventory", inventory, "--limit", h.name, "--skip-tags", "kernel", "--check", "--diff", WLAN);
  assert.equal(check.code, 2, check.output);
  assert.match(check.stdout, /^\s*-denyinterfaces eth0$/m);
  assert.match(check.stdout, /^\s*\+denyinterfaces eth0 wlan0 bond0$/m);
  assert.equal(summary(check.stdout)[h.name].status, "drift");
  assert.equal(await sha(h, ["/etc/dhcpcd.conf", "/etc/network/interfaces"]), before, "check mode changed nothing");
  const fix = await cli("--inventory", inventory, "--limit", h.name, "--skip-tags", "kernel", WLAN);
  assert.equal(fix.code, 0, fix.output);
  assert.match((await cat(h, "/etc/dhcpcd.conf"))!, /^denyinterfaces eth0 wlan0 bond0$/m, "the run repaired the hand edit");
});

test("eth0+eth1 playbook: applies, then is idempotent", async () => {
  const h = host(1);
  const first = await cli("--inventory", inventory, "--limit", h.name, "--skip-tags", "kernel", ETH1);
  assert.equal(first.code, 0, first.output);
  assert.match((await cat(h, "/etc/network/interfaces"))!, /bond-slaves eth0 eth1\n\s+bond-mode active-backup\n\s+bond-primary eth0/);
  assert.match((await cat(h, "/etc/dhcpcd.conf"))!, /^denyinterfaces eth0 eth1 bond0$/m);
  const files = ["/etc/network/interfaces", "/etc/dhcpcd.conf"];
  const written = await sha(h, files);
  const second = await cli("--inventory", inventory, "--limit", h.name, "--skip-tags", "kernel", ETH1);
  assert.equal(await sha(h, files), written, "idempotent: no file is written again");
  assert.deepEqual(summary(second.stdout)[h.name].changed, 1, "only the kernel's view differs (no bonding here)");
});

/** A TCP listener inside the controller namespace that counts connection attempts. */
async function connectionCounter(): Promise<{ address: string; port: number; count: () => Promise<number>; close: () => void }> {
  const port = 2200 + Math.floor(Math.random() * 500);
  const log = join(dir, `connections-${port}`);
  const script = `const fs=require("fs");require("net").createServer(s=>{fs.appendFileSync(${JSON.stringify(log)},"c\\n");s.destroy()}).listen(${port},${JSON.stringify(fleet.bridgeAddress)},()=>console.log("ready"))`;
  const { spawn } = await import("node:child_process");
  const child = spawn(fleet.controllerArgv(["node", "-e", script])[0], fleet.controllerArgv(["node", "-e", script]).slice(1), { stdio: ["ignore", "pipe", "inherit"] });
  await new Promise((resolve) => child.stdout!.once("data", resolve));
  return {
    address: fleet.bridgeAddress,
    port,
    count: async () => (existsSync(log) ? readFileSync(log, "utf8").split("\n").filter(Boolean).length : 0),
    close: () => child.kill(),
  };
}

test("a malformed inventory or playbook stops before any SSH connection, naming file:line:col", async () => {
  const counter = await connectionCounter();
  try {
    const target = `    canary: { address: ${counter.address}, port: ${counter.port} }\n`;
    const badYaml = join(dir, "bad-yaml.yaml");
    writeFileSync(badYaml, `all:\n  hosts:\n${target}    pi9: { address: 10.88.0.9\n`);
    const r1 = await cli("--inventory", badYaml, WLAN);
    assert.equal(r1.code, 1, r1.output);
    assert.match(r1.stderr, /bad-yaml\.yaml:\d+:\d+: invalid YAML/);

    const badSchema = join(dir, "bad-schema.yaml");
    writeFileSync(badSchema, `all:\n  hosts:\n${target}    pi9:\n      address: 10.88.0.9\n      become: sometimes\n`);
    const r2 = await cli("--inventory", badSchema, WLAN);
    assert.equal(r2.code, 1, r2.output);
    assert.match(r2.stderr, /bad-schema\.yaml:6:15: inventory > all\.hosts\.pi9\.become: must be a boolean \(got "sometimes"\)/);

    const goodInventory = join(dir, "canary.yaml");
    writeFileSync(
      goodInventory,
      `all:\n  vars: { bond_address: 10.0.0.2/24, bond_gateway: 10.0.0.1, wifi_ssid: home, wifi_psk: home-passphrase, wifi_country: DE }\n  children:\n    pis:\n      hosts:\n${target.replace(/^ {4}/, "        ")}`,
    );
    const badPlaybook = join(dir, "bad-playbook.yaml");
    writeFileSync(badPlaybook, readFileSync(WLAN, "utf8").replace("mode: active-backup\n        slaves", "mode: lacp\n        slaves"));
    const r3 = await cli("--inventory", goodInventory, badPlaybook);
    assert.equal(r3.code, 1, r3.output);
    assert.match(r3.stderr, /bad-playbook\.yaml:\d+:\d+: task "Configure bond0 over eth0 and wlan0" > bond > mode: must be one of .*\(got "lacp"\)/);

    assert.equal(await counter.count(), 0, "no connection was attempted");
  } finally {
    counter.close();
  }
});

test("an injection attempt in an interface name or address is rejected before any host is touched", async () => {
  const h = host(2);
  const evil = '"; touch /tmp/pwned';
  for (const [key, args] of [
    ["slaves", { slaves: ["eth0", evil], address: "10.0.0.2/24" }],
    ["address", { slaves: ["eth0"], address: evil }],
  ] as const) {
    const pb = join(dir, `inject-${key}.yaml`);
    writeFileSync(pb, stringify([{ hosts: "pis", tasks: [{ bond: args }] }]));
    const r = await cli("--inventory", inventory, "--limit", h.name, pb);
    assert.equal(r.code, 1, r.output);
    assert.match(r.stderr, new RegExp(`inject-${key}\\.yaml:\\d+:\\d+: task "bond" > bond > ${key}`));
  }
  // A value that is allowed through (a file's content) travels as data, never as shell text.
  const pb = join(dir, "inject-motd.yaml");
  writeFileSync(
    pb,
    `- hosts: pis\n  plugins: [${join(repoRoot, "test/fixtures/provision-plugin-motd")}]\n  tasks:\n    - motd:\n        message: "\\"; touch /tmp/pwned; echo '$(touch /tmp/pwned)'"\n`,
  );
  const r = await cli("--inventory", inventory, "--limit", h.name, pb);
  assert.equal(r.code, 0, r.output);
  assert.equal(await cat(h, "/etc/motd"), `"; touch /tmp/pwned; echo '$(touch /tmp/pwned)'\n`);
  assert.equal((await fleet.exec(h, ["test", "-e", "/tmp/pwned"])).code, 1, "nothing was executed");
});

test("one unreachable host is reported; the others complete", async () => {
  const inv = writeInventory(join(dir, "with-dead.yaml"), [host(3)], {
    "dead-pi": { address: fleet.unusedAddress, bond_address: `${fleet.unusedAddress}/24`, connect_timeout: 3 },
  });
  const r = await cli("--inventory", inv, "--skip-tags", "kernel", ETH1);
  assert.equal(r.code, 1, r.output);
  const rows = summary(r.stdout);
  assert.equal(rows["dead-pi"].status, "unreachable");
  assert.equal(rows[host(3).name].status, "changed");
  assert.match(r.stdout, /dead-pi.*unreachable at 10\.88\.0\.\d+:22/);
  assert.match((await cat(host(3), "/etc/network/interfaces"))!, /bond-slaves eth0 eth1/);
});

test("host keys are verified: unknown keys are refused unless accepted, changed keys always", async () => {
  const h = host(2);
  const empty = join(dir, "known_hosts_empty");
  writeFileSync(empty, "");
  const refused = await cli("--inventory", inventory, "--limit", h.name, "--known-hosts", empty);
  assert.equal(refused.code, 1);
  assert.match(refused.stdout, /unknown host key for 10\.88\.0\.\d+/);

  const accepted = await cli("--inventory", inventory, "--limit", h.name, "--known-hosts", empty, "--accept-new-host-keys");
  assert.equal(accepted.code, 0, accepted.output);
  const recorded = readFileSync(empty, "utf8");
  assert.ok(
    readFileSync(fleet.knownHostsFile, "utf8")
      .split("\n")
      .some((l) => l && recorded.includes(l.split(" ")[2])),
    "the real key was recorded",
  );

  const forged = join(dir, "known_hosts_forged");
  const other = readFileSync(fleet.knownHostsFile, "utf8")
    .split("\n")
    .find((l) => l && !l.startsWith(`${h.address} `))!;
  writeFileSync(forged, `${h.address} ${other.split(" ").slice(1).join(" ")}\n`);
  const mismatch = await cli("--inventory", inventory, "--limit", h.name, "--known-hosts", forged, "--accept-new-host-keys");
  assert.equal(mismatch.code, 1);
  assert.match(mismatch.stdout, /HOST KEY MISMATCH/);
});

test("a plugin from a path and from an npm package uses the same API; a failed probe rolls everything back", async () => {
  const h = host(4);
  const pkgDir = join(dir, "site");
  mkdirSync(join(pkgDir, "node_modules"), { recursive: true });
  cpSync(join(repoRoot, "test/fixtures/provision-plugin-motd"), join(pkgDir, "node_modules/provision-plugin-motd"), { recursive: true });
  const pb = join(pkgDir, "motd.yaml");
  writeFileSync(pb, "- hosts: pis\n  plugins: [provision-plugin-motd]\n  tasks:\n    - motd: { message: hello from an npm plugin }\n");
  const applied = await cli("--inventory", inventory, "--limit", h.name, pb);
  assert.equal(applied.code, 0, applied.output);
  assert.equal(await cat(h, "/etc/motd"), "hello from an npm plugin\n");
  assert.equal(summary((await cli("--inventory", inventory, "--limit", h.name, pb)).stdout)[h.name].changed, 0);

  const touched = ["/etc/motd", "/etc/dhcpcd.conf", "/etc/network/interfaces", "/etc/network/interfaces.orig"];
  const before = await sha(h, touched);
  const failing = join(pkgDir, "failing.yaml");
  writeFileSync(
    failing,
    `- hosts: pis\n  plugins: [../site/node_modules/provision-plugin-motd]\n  tasks:\n${readFileSync(ETH1, "utf8").split("  tasks:\n")[1]}    - motd: { message: changed, require_file: /etc/provision-health-ok }\n`,
  );
  const r = await cli("--inventory", inventory, "--limit", h.name, "--skip-tags", "kernel", failing);
  assert.equal(r.code, 1, r.output);
  assert.equal(summary(r.stdout)[h.name].status, "rolled back", r.stdout);
  assert.equal(summary(r.stdout)[h.name].rolledBack, "yes");
  assert.match(r.stdout, /\/etc\/provision-health-ok does not exist/);
  assert.equal(await sha(h, touched), before, "every file is byte-identical to before the run (content, mode, owner)");
  assert.notEqual(await dpkgStatus(h, "ifenslave"), "install ok installed", "the package it installed was removed again");
});

test("secrets never reach diffs, logs or reports", async () => {
  const h = host(3);
  const pb = join(dir, "psk.yaml");
  writeFileSync(
    pb,
    `- hosts: pis\n  vars: { psk: "Sup3r-secret-PSK" }\n  tasks:\n    - bond:\n        slaves: [eth0, wlan0]\n        address: "{{ bond_address }}"\n        slave_options:\n          wlan0: { ssid: home, psk: "{{ psk }}" }\n`,
  );
  const report = join(dir, "psk.json");
  const r = await cli("--inventory", inventory, "--limit", h.name, "--diff", "--verbose", "--report", report, pb);
  assert.equal(r.code, 0, r.output);
  assert.match(r.stdout, /psk=\*{8}/, "the diff shows the line, masked");
  assert.ok(!r.output.includes("Sup3r-secret-PSK"), "not in the output");
  assert.ok(!readFileSync(report, "utf8").includes("Sup3r-secret-PSK"), "not in the report");
  assert.match((await cat(h, "/etc/wpa_supplicant/provision-wlan0.conf"))!, /psk="Sup3r-secret-PSK"/, "but the host got it");
  assert.doesNotMatch((await cat(h, "/etc/network/interfaces"))!, /Sup3r-secret-PSK/, "not in the world-readable interfaces file");
});

test("--help, --version and usage errors", async () => {
  const help = await run(["node", join(repoRoot, "dist/cli/cli.js"), "--help"]);
  assert.equal(help.code, 0);
  assert.match(help.stdout, /--inventory FILE/);
  const version = await run(["node", join(repoRoot, "dist/cli/cli.js"), "--version"]);
  assert.equal(version.stdout.trim(), JSON.parse(readFileSync(join(repoRoot, "package.json"), "utf8")).version);
  const usage = await run(["node", join(repoRoot, "dist/cli/cli.js"), "--frobnicate"]);
  assert.equal(usage.code, 64);
  assert.match(usage.stderr, /Unknown option '--frobnicate'/);
  const missing = await run(["node", join(repoRoot, "dist/cli/cli.js"), WLAN]);
  assert.equal(missing.code, 64);
});

test("a non-root user with become: true works through sudo; without it the host fails cleanly", async () => {
  const h = host(2);
  const setup = await fleet.exec(h, [
    "sh",
    "-c",
    'useradd -m -s /bin/sh pi && mkdir -p /home/pi/.ssh && cp /root/.ssh/authorized_keys /home/pi/.ssh/ && chown -R pi:pi /home/pi/.ssh && echo "pi ALL=(ALL) NOPASSWD:ALL" > /etc/sudoers.d/pi && chmod 440 /etc/sudoers.d/pi',
  ]);
  assert.equal(setup.code, 0, setup.stderr);
  const pb = join(dir, "deny.yaml");
  writeFileSync(pb, "- hosts: pis\n  tasks:\n    - dhcpcd_deny: { interfaces: [eth9] }\n");
  const asPi = (become: boolean) => writeInventory(join(dir, `pi-user-${become}.yaml`), [h], {}, { user: "pi", become });
  const before = await sha(h, ["/etc/dhcpcd.conf"]);
  const denied = await cli("--inventory", asPi(false), pb);
  assert.equal(denied.code, 1, denied.output);
  assert.equal(summary(denied.stdout)[h.name].status, "failed", "failed before changing anything");
  assert.match(denied.stdout, /Permission denied/);
  assert.equal(await sha(h, ["/etc/dhcpcd.conf"]), before);
  const ok = await cli("--inventory", asPi(true), pb);
  assert.equal(ok.code, 0, ok.output);
  assert.match((await cat(h, "/etc/dhcpcd.conf"))!, /^denyinterfaces .*eth9/m);
  assert.match((await fleet.exec(h, ["stat", "-c", "%U:%G %a", "/etc/dhcpcd.conf"])).stdout, /^root:root 644/, "owner and mode kept");
});

test("one run per host at a time; status shows the last run; rollback undoes it by hand", async () => {
  const h = host(1);
  const plugin = join(repoRoot, "test/fixtures/provision-plugin-motd");
  const slow = join(dir, "slow.yaml");
  writeFileSync(slow, `- hosts: pis\n  plugins: [${plugin}]\n  tasks:\n    - motd: { message: written by the slow run }\n    - pause: { seconds: 6 }\n`);
  const motdBefore = await cat(h, "/etc/motd");
  const first = cli("--inventory", inventory, "--limit", h.name, slow);
  let holder = "";
  for (let i = 0; i < 100 && !holder; i++) {
    holder = (await cat(h, "/var/lib/provision/lock")) ?? "";
    if (!holder) await new Promise((r) => setTimeout(r, 100));
  }
  assert.match(holder, /controller=\S+ pid=\d+ since=\S+ run=\S+/);

  const dhcpcdBefore = await sha(h, ["/etc/dhcpcd.conf"]);
  const other = join(dir, "other.yaml");
  writeFileSync(other, "- hosts: pis\n  tasks:\n    - dhcpcd_deny: { interfaces: [eth7] }\n");
  const started = Date.now();
  const second = await cli("--inventory", inventory, "--limit", h.name, other);
  assert.equal(second.code, 1, second.output);
  assert.ok(Date.now() - started < 5000, "fails fast");
  assert.match(second.stdout, /locked by another run \(controller=\S+ pid=\d+ since=\S+ run=\S+\).*--break-lock/);
  assert.equal(await sha(h, ["/etc/dhcpcd.conf"]), dhcpcdBefore, "the second controller changed nothing");

  const done = await first;
  assert.equal(done.code, 0, done.output);
  assert.equal(await cat(h, "/var/lib/provision/lock"), null, "the lock is released");

  const status = await cli("status", "--inventory", inventory, "--limit", h.name);
  assert.equal(status.code, 0, status.output);
  assert.match(status.stdout, new RegExp(`^${h.name}\\s+\\S+\\s+committed\\s+no\\s+-$`, "m"));

  const undo = await cli("rollback", "--inventory", inventory, "--limit", h.name);
  assert.equal(undo.code, 0, undo.output);
  assert.match(undo.stdout, /restored run \S+ \(was committed\)/);
  assert.equal(await cat(h, "/etc/motd"), motdBefore, "the run's files are back as they were");
  assert.match((await cli("status", "--inventory", inventory, "--limit", h.name)).stdout, /rolled_back/);

  await fleet.exec(h, ["sh", "-c", "echo 'controller=gone pid=1 since=2020-01-01T00:00:00Z run=dead' > /var/lib/provision/lock"]);
  const stale = await cli("--inventory", inventory, "--limit", h.name, other);
  assert.equal(stale.code, 1);
  assert.match(stale.stdout, /controller=gone pid=1/);
  const broken = await cli("--inventory", inventory, "--limit", h.name, "--break-lock", other);
  assert.equal(broken.code, 0, broken.output);
});
