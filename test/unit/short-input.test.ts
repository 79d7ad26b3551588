// A write step whose input ends early (the connection lost or the controller killed
// mid-send) or arrives changed writes nothing: the project's own batch script with the
// transaction's write steps, run by a real local sh, fed half an interfaces file, a
// corrupted one and the whole one. The transaction's record (/var/lib/provision) goes to
// a temporary folder mounted over /var/lib in a mount namespace of the test's own.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { chmodSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { batchScript, parseBatchOutput, type Step } from "../../core/transport/batch.js";
import { Transaction } from "../../core/run/transaction.js";

const MARKER = "::provision-batch-test::";
const BEFORE = "auto lo\niface lo inet loopback\n\nauto eth0\niface eth0 inet dhcp\n";
const AFTER = `${BEFORE}\n# provision: bond0 over eth0 and wlan0\nauto bond0\niface bond0 inet static\n    address 10.77.0.11/24\n    gateway 10.77.0.1\n    bond-slaves eth0 wlan0\n    bond-mode active-backup\n    bond-primary eth0\n`;

/** A host's /etc/network and /var/lib, in a temporary folder. */
function host() {
  const root = mkdtempSync(join(tmpdir(), "short-input-"));
  const etc = join(root, "etc", "network");
  mkdirSync(etc, { recursive: true });
  mkdirSync(join(root, "var-lib"));
  const path = join(etc, "interfaces");
  writeFileSync(path, BEFORE);
  chmodSync(path, 0o640);
  return { root, etc, path, record: join(root, "var-lib", "provision", "runs", "r1"), remove: () => rmSync(root, { recursive: true, force: true }) };
}

/** The batch, run by sh as on a host (its own /var/lib), its stdin replaced by `input` when given. */
function runBatch(varLib: string, steps: Step[], input?: Buffer) {
  const stdin = input ?? Buffer.from(steps.map((s) => s.stdin ?? "").join(""));
  const argv = [
    "unshare",
    "--user",
    "--map-root-user",
    "--mount",
    "--propagation",
    "private",
    "sh",
    "-c",
    'mount --bind "$0" /var/lib && exec sh -c "$1"',
    varLib,
    batchScript(steps, MARKER),
  ];
  const r = spawnSync(argv[0], argv.slice(1), { input: stdin, encoding: "utf8" });
  assert.equal(r.status, 0, `the batch ran: ${r.stderr}`);
  return parseBatchOutput(steps, { code: r.status ?? 1, stdout: r.stdout, stderr: r.stderr }, MARKER);
}

function writeSteps(path: string): Step[] {
  const tx = new Transaction({ target: { name: "pi1", user: "root" } } as never, "r1");
  return [...tx.writeSteps(path, AFTER, { reboot: true }), ...tx.writeSteps(`${path}.d-marker`, "the next file\n")];
}

/** The batch's stdin cut `keep` bytes into the interfaces file's own bytes (after its sha256 line). */
function cutInput(steps: Step[], keep: number): Buffer {
  const write = steps.findIndex((s) => s.what.startsWith("write "));
  const before = Buffer.from(
    steps
      .slice(0, write)
      .map((s) => s.stdin ?? "")
      .join(""),
  );
  const own = Buffer.from(steps[write].stdin!);
  const sumLine = own.indexOf("\n") + 1;
  return Buffer.concat([before, own.subarray(0, sumLine + keep)]);
}

function leftovers(dir: string): string[] {
  return readdirSync(dir).filter((f) => f.includes("provision"));
}

test("half an interfaces file: the write fails, the file stays as it was, no temp file is left, the batch stops", () => {
  const h = host();
  try {
    const steps = writeSteps(h.path);
    const half = Math.floor(Buffer.byteLength(AFTER) / 2);
    const results = runBatch(join(h.root, "var-lib"), steps, cutInput(steps, half));
    const write = steps.findIndex((s) => s.what === `write ${h.path}`);
    assert.ok(write > 0 && steps.slice(0, write).some((s) => s.what === `back up ${h.path}`), "the backup comes before the write");
    assert.equal(results.length, write + 1, "the batch stopped at the write");
    results.slice(0, write).forEach((r, i) => assert.equal(r.code, 0, `${steps[i].what}: ${r.stderr}`));
    assert.notEqual(results[write].code, 0, "a short input fails the step");
    assert.match(results[write].stderr, new RegExp(`the input ended after ${half} of ${Buffer.byteLength(AFTER)} bytes`));
    assert.equal(readFileSync(h.path, "utf8"), BEFORE, "the file is as it was");
    assert.equal(statSync(h.path).mode & 0o777, 0o640);
    assert.deepEqual(leftovers(h.etc), [], "no temp file left beside it");
    assert.equal(readFileSync(join(h.record, "0"), "utf8"), BEFORE, "the backup was taken first");
  } finally {
    h.remove();
  }
});

test("an input of the right size that is not what was sent: the write fails on its sha256", () => {
  const h = host();
  try {
    const steps = writeSteps(h.path);
    const input = Buffer.from(steps.map((s) => s.stdin ?? "").join(""));
    const at = input.indexOf("bond-primary eth0");
    input[at + "bond-primary eth".length] = "1".charCodeAt(0);
    const results = runBatch(join(h.root, "var-lib"), steps, input);
    const write = steps.findIndex((s) => s.what === `write ${h.path}`);
    assert.equal(results.length, write + 1, "the batch stopped at the write");
    assert.notEqual(results[write].code, 0);
    assert.match(results[write].stderr, /does not match its sha256/);
    assert.equal(readFileSync(h.path, "utf8"), BEFORE);
    assert.deepEqual(leftovers(h.etc), []);
  } finally {
    h.remove();
  }
});

test("the whole interfaces file: written, mode kept, backed up first, and the next step gets its own bytes", () => {
  const h = host();
  try {
    const steps = writeSteps(h.path);
    const results = runBatch(join(h.root, "var-lib"), steps);
    assert.equal(results.length, steps.length);
    results.forEach((r, i) => assert.equal(r.code, 0, `${steps[i].what}: ${r.stderr}`));
    assert.equal(readFileSync(h.path, "utf8"), AFTER);
    assert.equal(statSync(h.path).mode & 0o777, 0o640, "an existing file keeps its mode");
    assert.equal(readFileSync(`${h.path}.d-marker`, "utf8"), "the next file\n");
    assert.equal(readFileSync(join(h.record, "0"), "utf8"), BEFORE);
    assert.match(readFileSync(join(h.record, "manifest"), "utf8"), new RegExp(`^0\tpresent\t${h.path}\n1\tabsent\t${h.path}.d-marker\n$`));
    assert.deepEqual(leftovers(h.etc), []);
  } finally {
    h.remove();
  }
});
