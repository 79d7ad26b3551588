// The batch of host-side steps through the local transport (sh on this machine, argv
// through child_process): the same guarantees as over SSH.
import { test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { runBatch, runSteps, StepFailed, type Step } from "../../core/transport/batch.js";
import { LocalTransport } from "../../core/transport/local.js";
import { LostConnection } from "../../core/errors.js";

const target = { name: "self", address: "localhost", port: 22, user: "root", become: false, connectTimeoutSeconds: 10, hostKeys: { file: "/dev/null", acceptNew: false } };
const local = async () => {
  const t = new LocalTransport(target, { prefix: [] });
  await t.connect();
  return t;
};
const cat = (what: string, stdin: string): Step => ({ what, argv: ["cat"], stdin });

test("local: each step reads exactly its own stdin bytes and prints its own stdout and stderr", async () => {
  const payloads = ["first\n", "", "no newline at the end", "ünïcödé ✓ and a 'quote' $(not run)\n\n", "x".repeat(100_000)];
  const steps = [...payloads.map((p, i) => cat(`cat ${i}`, p)), { what: "both streams", argv: ["sh", "-c", "echo out; echo err >&2; printf tail"] }];
  const results = await runSteps(await local(), steps);
  payloads.forEach((p, i) => assert.equal(results[i].stdout, p, `step ${i}'s stdout is its stdin, byte for byte`));
  assert.deepEqual(results.at(-1), { code: 0, stdout: "out\ntail", stderr: "err\n" });
});

test("local: the first failing step ends the batch and throws StepFailed naming it; later steps never run", async () => {
  const dir = mkdtempSync(join(tmpdir(), "transport-"));
  try {
    const steps: Step[] = [
      { what: "no stdin", argv: ["sh", "-c", "cat; echo done"] },
      { what: "fails", argv: ["sh", "-c", "echo why >&2; exit 7"] },
      { what: "never runs", argv: ["touch", join(dir, "ran")] },
    ];
    const t = await local();
    const results = await runBatch(t, steps);
    assert.equal(results[0].stdout, "done\n");
    assert.equal(results.length, 2);
    await assert.rejects(runSteps(t, steps), (e: unknown) => e instanceof StepFailed && e.message === "self: fails: exited 7 (why)");
    assert.equal(existsSync(join(dir, "ran")), false);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("local: values are arguments, never shell text; readFile tells a missing file; a closed transport is a lost connection", async () => {
  const hostile = "'; touch /tmp/provision-transport-pwned; echo '$(id)`id`";
  const t = await local();
  const [r] = await runSteps(t, [{ what: "printf", argv: ["printf", "%s", hostile] }]);
  assert.equal(r.stdout, hostile);
  assert.equal(existsSync("/tmp/provision-transport-pwned"), false);
  assert.equal(await t.readFile("/nonexistent/provision"), null);
  assert.match((await t.readFile("/proc/sys/kernel/random/boot_id"))!, /^[0-9a-f-]{36}\n$/);
  t.close();
  await assert.rejects(t.exec(["true"]), LostConnection);
});

test("local: a prefix runs every command through it (how tests enter a host's root)", async () => {
  const t = new LocalTransport(target, { prefix: ["env", "PROVISION_PREFIX_SEEN=yes"] });
  await t.connect();
  assert.equal(await t.run("read env", ["sh", "-c", 'printf %s "$PROVISION_PREFIX_SEEN"']), "yes");
});
