// Fleet rollouts on real sshd hosts: batches with a failure threshold, the retry
// file, bounded concurrency, and the audit's one-connection-per-host cost.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { stringify } from "yaml";
import { startFleet, type TestFleet, type TestHost } from "../support/sshd-hosts.js";
import { removeOnCleanup } from "../support/processes.js";
import { repoRoot } from "../support/cache.js";
import { provision, summary, WIFI_VARS } from "./provision-cli.js";

let fleet: TestFleet;
let dir: string;
const PLUGIN = join(repoRoot, "test/fixtures/provision-plugin-motd");
const cli = (...args: string[]) => provision(fleet.controllerArgv, args);

function inventoryFor(name: string, hosts: TestHost[]): string {
  const file = join(dir, name);
  writeFileSync(
    file,
    stringify({
      all: {
        vars: { identity_file: fleet.identityFile, known_hosts_file: fleet.knownHostsFile, bond_gateway: fleet.bridgeAddress, ...WIFI_VARS },
        children: { pis: { hosts: Object.fromEntries(hosts.map((h) => [h.name, { address: h.address, bond_address: `${h.address}/24` }])) } },
      },
    }),
  );
  return file;
}

before(async () => {
  fleet = await startFleet({ count: 20, prefix: "node" });
  dir = mkdtempSync(join(tmpdir(), "provision-fleet-"));
  removeOnCleanup(dir);
});

after(async () => {
  await fleet?.stop();
});

test("serial [1, 50%, 100%] with max_fail_percentage 20 halts after the failing batch; --limit @retry finishes", async () => {
  const hosts = fleet.hosts.slice(0, 6);
  const inventory = inventoryFor("six.yaml", hosts);
  const failing = hosts[2]; // in the second batch (hosts 2–4)
  for (const h of hosts) if (h !== failing) await fleet.exec(h, ["touch", "/etc/provision-ok"]);
  const pb = join(dir, "rollout.yaml");
  writeFileSync(
    pb,
    `- hosts: pis\n  serial: [1, "50%", "100%"]\n  max_fail_percentage: 20\n  plugins: [${PLUGIN}]\n  tasks:\n    - motd: { message: rolled out, require_file: /etc/provision-ok }\n`,
  );
  const retry = join(dir, "rollout.retry");
  const r = await cli("--inventory", inventory, "--retry-file", retry, pb);
  assert.equal(r.code, 1, r.output);
  assert.match(r.stdout, /BATCH 1\/3: node1\nBATCH|BATCH 1\/3: node1/);
  assert.match(r.stdout, /BATCH 2\/3: node2, node3, node4/);
  assert.doesNotMatch(r.stdout, /BATCH 3\/3/);
  assert.match(r.stdout, /ROLLOUT HALTED in play "pis": 1 of 3 host\(s\) in the batch failed \(33% > max_fail_percentage 20%\)/);
  assert.match(r.stdout, /never touched: node5, node6/);
  assert.match(r.stdout, /failed: node3 \(rolled back\)/);
  const rows = summary(r.stdout);
  assert.deepEqual(Object.fromEntries(Object.entries(rows).map(([k, v]) => [k, v.status])), {
    node1: "changed",
    node2: "changed",
    node3: "rolled back",
    node4: "changed",
    node5: "not run",
    node6: "not run",
  });
  for (const h of hosts.slice(4)) assert.notEqual((await fleet.exec(h, ["cat", "/etc/motd"])).stdout, "rolled out\n", `${h.name} untouched`);
  for (const h of hosts.slice(4)) assert.equal((await fleet.exec(h, ["test", "-e", "/var/lib/provision/last"])).code, 1, `${h.name} never contacted for a write`);
  assert.deepEqual(readFileSync(retry, "utf8").trim().split("\n"), ["node3", "node5", "node6"]);

  await fleet.exec(failing, ["touch", "/etc/provision-ok"]);
  const resumed = await cli("--inventory", inventory, "--limit", `@${retry}`, pb);
  assert.equal(resumed.code, 0, resumed.output);
  assert.deepEqual(Object.keys(summary(resumed.stdout)), ["node3", "node5", "node6"]);
  for (const h of hosts) assert.equal((await fleet.exec(h, ["cat", "/etc/motd"])).stdout, "rolled out\n");
});

test("--forks 2 never has more than 2 hosts in flight (observed on the hosts)", async () => {
  const hosts = fleet.hosts.slice(6, 11);
  const pb = join(dir, "pause.yaml");
  writeFileSync(pb, `- hosts: pis\n  plugins: [${PLUGIN}]\n  tasks:\n    - pause: { seconds: 1 }\n`);
  const r = await cli("--inventory", inventoryFor("five.yaml", hosts), "--forks", "2", pb);
  assert.equal(r.code, 0, r.output);
  const windows: [number, number][] = [];
  for (const h of hosts) {
    const [start, end] = (await fleet.exec(h, ["cat", "/tmp/pause-window"])).stdout.trim().split("\n").map(Number);
    windows.push([start, end]);
  }
  const events = windows
    .flatMap(
      ([s, e]) =>
        [
          [s, 1],
          [e, -1],
        ] as const,
    )
    .sort((a, b) => a[0] - b[0] || a[1] - b[1]);
  let inFlight = 0,
    peak = 0;
  for (const [, delta] of events) peak = Math.max(peak, (inFlight += delta));
  console.log(`--forks 2: peak ${peak} hosts pausing at once over ${hosts.length} hosts`);
  assert.equal(peak, 2, "two at a time, never more (and the bound was used)");
});

test("an audit of 20 hosts opens exactly one SSH connection per host and runs one command on it", async () => {
  const logged = (text: string) =>
    Promise.all(
      fleet.hosts.map(
        (h) =>
          readFileSync(join(fleet.dir, `${h.name}.log`), "utf8")
            .split("\n")
            .filter((l) => l.includes(text)).length,
      ),
    );
  const [connectionsBefore, commandsBefore] = [await logged("Accepted publickey"), await logged("Starting session: command")];
  const started = Date.now();
  const r = await cli("--inventory", inventoryFor("twenty.yaml", fleet.hosts), "--check", "--skip-tags", "kernel", join(repoRoot, "playbooks/bond-eth0-wlan0.yaml"));
  const wall = Date.now() - started;
  assert.equal(r.code, 2, r.output);
  assert.equal(Object.keys(summary(r.stdout)).length, 20);
  const [connections, commands] = [await logged("Accepted publickey"), await logged("Starting session: command")];
  assert.deepEqual(
    connections.map((n, i) => n - connectionsBefore[i]),
    fleet.hosts.map(() => 1),
  );
  // and one batched command: the audit's only round trip once the connection is up
  assert.deepEqual(
    commands.map((n, i) => n - commandsBefore[i]),
    fleet.hosts.map(() => 1),
  );
  console.log(`audit of 20 hosts: ${wall} ms wall, 1 connection and 1 command per host`);
});

test("an apply without reboot costs each host one connection and 3 commands (lock and gather, the changes with their verdict, commit and unlock); a second run 2", async () => {
  const logged = (text: string) =>
    Promise.all(
      fleet.hosts.map(
        (h) =>
          readFileSync(join(fleet.dir, `${h.name}.log`), "utf8")
            .split("\n")
            .filter((l) => l.includes(text)).length,
      ),
    );
  const pb = join(dir, "apply.yaml");
  writeFileSync(pb, `- hosts: pis\n  plugins: [${PLUGIN}]\n  tasks:\n    - apt: { name: ifenslave }\n    - motd: { message: batched apply }\n`);
  const inventory = inventoryFor("twenty-apply.yaml", fleet.hosts);
  const perHost = async (run: () => Promise<void>) => {
    const [connections, commands] = [await logged("Accepted publickey"), await logged("Starting session: command")];
    await run();
    const [c2, k2] = [await logged("Accepted publickey"), await logged("Starting session: command")];
    return { connections: c2.map((n, i) => n - connections[i]), commands: k2.map((n, i) => n - commands[i]) };
  };
  const first = await perHost(async () => {
    const r = await cli("--inventory", inventory, pb);
    assert.equal(r.code, 0, r.output);
    assert.deepEqual(new Set(Object.values(summary(r.stdout)).map((row) => row.status)), new Set(["changed"]));
  });
  assert.deepEqual(
    first.connections,
    fleet.hosts.map(() => 1),
  );
  assert.deepEqual(
    first.commands,
    fleet.hosts.map(() => 3),
  );
  for (const h of fleet.hosts) {
    assert.equal((await fleet.exec(h, ["cat", "/etc/motd"])).stdout, "batched apply\n");
    assert.equal((await fleet.exec(h, ["dpkg-query", "-W", "-f", "${Status}", "ifenslave"])).stdout, "install ok installed");
    const last = await fleet.exec(h, [
      "sh",
      "-c",
      'id=$(cat /var/lib/provision/last); cat "/var/lib/provision/runs/$id/state" /var/lib/provision/runs/$id/manifest; test ! -e /var/lib/provision/lock',
    ]);
    assert.equal(last.code, 0, `${h.name}: the lock is given back`);
    assert.match(last.stdout, /^committed\n0\tpresent\t\/etc\/motd\n$/, `${h.name}: committed, with the backup of /etc/motd in its manifest`);
  }
  const second = await perHost(async () => {
    const r = await cli("--inventory", inventory, pb);
    assert.equal(r.code, 0, r.output);
    assert.deepEqual(new Set(Object.values(summary(r.stdout)).map((row) => row.status)), new Set(["ok"]));
  });
  assert.deepEqual(
    second.commands,
    fleet.hosts.map(() => 2),
  );
  console.log(`apply of 20 hosts: ${first.commands[0]} commands per host; second run ${second.commands[0]}`);
});
