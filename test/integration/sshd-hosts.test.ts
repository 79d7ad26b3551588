// The lightweight sshd test hosts are real: the real OpenSSH client verifies their host
// keys, apt installs a real package on one of them and not on the others, exec() sees the
// same root as ssh, and stop() leaves no namespace and no process behind.
import { test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { parse } from "yaml";
import { baseRootfs } from "../support/cache.js";
import { isAlive, run, sh } from "../support/processes.js";
import { startFleet, type TestFleet, type TestHost } from "../support/sshd-hosts.js";

function ssh(fleet: TestFleet, host: TestHost, command: string, knownHosts = fleet.knownHostsFile) {
  return run(
    fleet.controllerArgv([
      "ssh",
      "-F",
      "/dev/null",
      "-i",
      fleet.identityFile,
      "-o",
      `UserKnownHostsFile=${knownHosts}`,
      "-o",
      "GlobalKnownHostsFile=/dev/null",
      "-o",
      "StrictHostKeyChecking=yes",
      "-o",
      "BatchMode=yes",
      "-o",
      "ConnectTimeout=10",
      "-p",
      String(host.port),
      `root@${host.address}`,
      command,
    ]),
  );
}

test("sshd fleet: real OpenSSH hosts, isolated roots, real apt, clean stop", { timeout: 300_000 }, async () => {
  const fleet = await startFleet({ count: 3 });
  const [h1, h2, h3] = fleet.hosts;
  const namespaces = [fleet.controllerNs, ...fleet.hosts.map((h) => h.netns)];
  const pids = fleet.hosts.map((h) => h.pid);
  try {
    assert.deepEqual(
      fleet.hosts.map((h) => h.name),
      ["host1", "host2", "host3"],
    );
    assert.deepEqual(
      fleet.hosts.map((h) => h.address),
      ["10.88.0.11", "10.88.0.12", "10.88.0.13"],
    );
    const listed = sh(["ip", "netns", "list"]).stdout;
    for (const ns of namespaces) assert.match(listed, new RegExp(`^${ns}\\b`, "m"));

    // Each host answers with its own name, over a connection whose host key is checked strictly.
    await Promise.all(
      fleet.hosts.map(async (h) => {
        const r = await ssh(fleet, h, "cat /etc/hostname; hostname");
        assert.equal(r.code, 0, `${h.name}: ${r.stderr}`);
        assert.equal(r.stdout, `${h.name}\n${h.name}\n`);
      }),
    );

    // The host keys are per host and really checked: host2's key under host1's address is refused.
    const wrong = join(fleet.dir, "wrong_known_hosts");
    const lines = readFileSync(fleet.knownHostsFile, "utf8").trim().split("\n");
    assert.equal(lines.length, 3);
    assert.notEqual(lines[0].split(" ")[2], lines[1].split(" ")[2]);
    writeFileSync(wrong, lines[1].replace(h2.address, h1.address) + "\n");
    const refused = await ssh(fleet, h1, "true", wrong);
    assert.notEqual(refused.code, 0);
    assert.match(refused.stderr, /REMOTE HOST IDENTIFICATION HAS CHANGED|Host key verification failed/);

    // Nothing listens on the unused address.
    const unreachable = await ssh(fleet, { ...h1, address: fleet.unusedAddress }, "true");
    assert.equal(unreachable.code, 255);

    // The hosts' apt source is the fleet's local repository.
    for (const h of fleet.hosts) {
      const r = await fleet.exec(h, ["cat", "/etc/apt/sources.list"]);
      assert.equal(r.stdout, fleet.aptSourcesLine);
    }

    // Install ifenslave for real, through apt, on host1 only.
    const install = await ssh(fleet, h1, "apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y ifenslave");
    assert.equal(install.code, 0, install.stdout + install.stderr);
    const status = await ssh(fleet, h1, "dpkg-query -W -f='${Status} ${Version}' ifenslave");
    assert.equal(status.code, 0, status.stderr);
    assert.match(status.stdout, /^install ok installed \S+$/);
    for (const other of [h2, h3]) {
      const r = await ssh(fleet, other, "dpkg-query -W -f='${Status}' ifenslave");
      assert.notEqual(r.stdout, "install ok installed", `${other.name} must not see host1's package`);
      const doc = await fleet.exec(other, ["test", "-e", "/usr/share/doc/ifenslave"]);
      assert.notEqual(doc.code, 0);
    }
    assert.equal(existsSync(join(baseRootfs(), "usr/share/doc/ifenslave")), false, "the shared base must stay untouched");

    // exec() runs in the same root as the host's sshd: it sees a file written over ssh, and back.
    const wrote = await ssh(fleet, h3, "echo written-over-ssh > /root/marker && chmod 640 /root/marker");
    assert.equal(wrote.code, 0, wrote.stderr);
    const seen = await fleet.exec(h3, ["sh", "-c", "cat /root/marker; stat -c %a /root/marker; hostname; id -u"]);
    assert.deepEqual({ code: seen.code, stdout: seen.stdout }, { code: 0, stdout: "written-over-ssh\n640\nhost3\n0\n" });
    assert.notEqual((await fleet.exec(h2, ["test", "-e", "/root/marker"])).code, 0);
    const piped = await fleet.exec(h2, ["sh", "-c", "cat > /etc/from-exec"], "via stdin\n");
    assert.equal(piped.code, 0, piped.stderr);
    assert.equal((await ssh(fleet, h2, "cat /etc/from-exec")).stdout, "via stdin\n");
    // exec() joins the host's PID namespace: sshd is PID 1 there.
    const ps = await fleet.exec(h1, ["cat", "/proc/1/comm"]);
    assert.equal(ps.stdout.trim(), "sshd");

    // The inventory names every host with its address and the fleet's credentials.
    const inventoryPath = join(fleet.dir, "inventory.yml");
    fleet.writeInventory(inventoryPath, { extraHosts: { ghost: { address: fleet.unusedAddress, port: 22 } }, vars: { connect_timeout: 5 } });
    const inv = parse(readFileSync(inventoryPath, "utf8"));
    assert.deepEqual(inv.all.vars, { user: "root", identity_file: fleet.identityFile, known_hosts_file: fleet.knownHostsFile, connect_timeout: 5 });
    assert.deepEqual(inv.all.children.pis.hosts, {
      host1: { address: "10.88.0.11", port: 22 },
      host2: { address: "10.88.0.12", port: 22 },
      host3: { address: "10.88.0.13", port: 22 },
      ghost: { address: fleet.unusedAddress, port: 22 },
    });
  } finally {
    await fleet.stop();
  }

  const after = sh(["ip", "netns", "list"]).stdout;
  for (const ns of namespaces) assert.doesNotMatch(after, new RegExp(`^${ns}\\b`, "m"), `${ns} left behind`);
  for (const pid of pids) assert.equal(isAlive(pid), false, `sshd ${pid} still running`);
  assert.equal(existsSync(fleet.dir), false, "fleet dir left behind");
  assert.doesNotMatch(readFileSync("/proc/self/mountinfo", "utf8"), new RegExp(fleet.dir.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")));
});

test("two fleets coexist on the same subnet", { timeout: 120_000 }, async () => {
  const [a, b] = await Promise.all([startFleet({ count: 1 }), startFleet({ count: 1, prefix: "pi" })]);
  try {
    assert.notEqual(a.controllerNs, b.controllerNs);
    assert.equal(a.hosts[0].address, b.hosts[0].address);
    const [ra, rb] = await Promise.all([ssh(a, a.hosts[0], "hostname"), ssh(b, b.hosts[0], "hostname")]);
    assert.equal(ra.stdout, "host1\n", ra.stderr);
    assert.equal(rb.stdout, "pi1\n", rb.stderr);
  } finally {
    await Promise.all([a.stop(), b.stop()]);
  }
});
