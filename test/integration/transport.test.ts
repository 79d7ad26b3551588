// The same transaction scripts through both transports against a real test host: over SSH
// (from the controller namespace, host keys verified) and locally (sh run as root in the
// host's own root and namespaces, entered with nsenter: what a Pi running its own playbook does).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { createServer, type AddressInfo } from "node:net";
import { join } from "node:path";
import { SshTransport } from "../../core/transport/ssh.js";
import { UnreachableError } from "../../core/errors.js";
import { enterHost, startFleet, type TestFleet } from "../support/sshd-hosts.js";
import { run } from "../support/processes.js";
import { repoRoot } from "../support/cache.js";

const DRIVER = join(repoRoot, "dist", "test", "support", "transport-scenario.js");
let fleet: TestFleet;

before(async () => {
  fleet = await startFleet({ count: 1, prefix: "tp" });
});

after(async () => {
  await fleet?.stop();
});

function target() {
  const h = fleet.hosts[0];
  return {
    name: h.name,
    address: h.address,
    port: h.port,
    user: "root",
    identityFile: fleet.identityFile,
    become: false,
    connectTimeoutSeconds: 10,
    hostKeys: { file: fleet.knownHostsFile, acceptNew: false },
  };
}

async function scenario(transport: "ssh" | "local", runId: string) {
  const options = { transport, target: target(), prefix: enterHost(fleet.hosts[0].pid), runId };
  const argv = ["node", DRIVER, JSON.stringify(options)];
  const r = await run(transport === "ssh" ? fleet.controllerArgv(argv) : argv, { cwd: repoRoot });
  assert.equal(r.code, 0, `${transport}: ${r.stderr}`);
  return JSON.parse(r.stdout.trim().split("\n").pop()!);
}

for (const transport of ["ssh", "local"] as const) {
  test(`${transport} transport: lock and gather, back up and write, record an undo and run its command, restore, mark, unlock`, async () => {
    const runId = `transport-${transport}`;
    const seen = await scenario(transport, runId);
    assert.equal(seen.hostname, fleet.hosts[0].name, "the gather ran on the test host, not on this machine");
    assert.equal(seen.fileBefore, null);
    assert.equal(seen.written, "written through a transport\n");
    assert.equal(seen.marker, "", "the command ran after its undo was recorded");
    assert.deepEqual(seen.problems, []);
    assert.deepEqual(seen.after, { file: null, marker: null }, "the restore removed the new file and ran the undo");
    assert.deepEqual(seen.state, { id: runId, state: "rolled_back", armed: false });
    assert.equal(seen.unlocked, true);
    const host = await fleet.exec(fleet.hosts[0], [
      "sh",
      "-c",
      "cat /var/lib/provision/last; test -e /var/lib/provision/lock && echo locked; test -e /etc/provision-transport-test.conf && echo file; true",
    ]);
    assert.equal(host.stdout, `${runId}\n`, "the host's own record says so (and nothing is left locked or written)");
  });
}

test("ssh transport: a host that accepts the TCP connection but never speaks SSH is unreachable after the handshake bound, said as such", async () => {
  const silent = createServer(() => {}); // accepts, says nothing
  await new Promise<void>((resolve) => silent.listen(0, "127.0.0.1", resolve));
  const t0 = Date.now();
  try {
    const port = (silent.address() as AddressInfo).port;
    const ssh = new SshTransport({ ...target(), address: "127.0.0.1", port, connectTimeoutSeconds: 1 });
    await assert.rejects(ssh.connect(), (error: Error) => {
      assert.ok(error instanceof UnreachableError, String(error));
      assert.match(error.message, /unreachable at 127\.0\.0\.1:\d+: connected, but the SSH handshake did not finish within 30s/);
      return true;
    });
    // connect_timeout (1 s) bounds the TCP connect only: the handshake had its own 30 s
    assert.ok(Date.now() - t0 >= 29_000, `gave up after ${Date.now() - t0} ms`);
  } finally {
    silent.close();
  }
});
