// The batch of host-side steps, run by a real local sh: each step gets exactly its own
// stdin bytes, its own stdout/stderr and exit status, and the first failure ends the batch.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { batchScript, parseBatchOutput, type Step } from "../../core/transport/batch.js";

const MARKER = "::provision-batch-test::";

function runLocally(steps: Step[]) {
  const r = spawnSync("sh", ["-c", batchScript(steps, MARKER)], { input: steps.map((s) => s.stdin ?? "").join(""), encoding: "utf8" });
  return { exit: r.status, results: parseBatchOutput(steps, { code: r.status ?? 1, stdout: r.stdout, stderr: r.stderr }, MARKER) };
}

const cat = (what: string, stdin: string): Step => ({ what, argv: ["cat"], stdin });

test("each step reads exactly its own stdin bytes, and prints its own stdout and stderr", () => {
  const payloads = ["first\n", "", "no newline at the end", "ünïcödé ✓ and a 'quote' $(not run)\n\n", "x".repeat(100_000)];
  const steps = [...payloads.map((p, i) => cat(`cat ${i}`, p)), { what: "both streams", argv: ["sh", "-c", "echo out; echo err >&2; printf tail"] }];
  const { exit, results } = runLocally(steps);
  assert.equal(exit, 0);
  assert.equal(results.length, steps.length);
  payloads.forEach((p, i) => assert.equal(results[i].stdout, p, `step ${i}'s stdout is its stdin, byte for byte`));
  assert.deepEqual(results.at(-1), { code: 0, stdout: "out\ntail", stderr: "err\n" });
});

test("a step without stdin reads nothing of the batch's stdin; the first failing step ends the batch", () => {
  const dir = mkdtempSync(join(tmpdir(), "batch-"));
  try {
    const steps: Step[] = [
      { what: "no stdin", argv: ["sh", "-c", "cat; echo done"] },
      cat("payload", "for the second step"),
      { what: "fails", argv: ["sh", "-c", "echo why >&2; exit 7"] },
      { what: "never runs", argv: ["touch", join(dir, "ran")] },
    ];
    const { results } = runLocally(steps);
    assert.equal(results[0].stdout, "done\n", "its stdin was /dev/null, not the next step's payload");
    assert.equal(results[1].stdout, "for the second step");
    assert.equal(results.length, 3, "the batch stopped at the failed step");
    assert.deepEqual({ code: results[2].code, stderr: results[2].stderr }, { code: 7, stderr: "why\n" });
    assert.equal(existsSync(join(dir, "ran")), false, "no step after the failure ran");
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("values reach a step as arguments, never as shell text", () => {
  const hostile = "'; touch /tmp/provision-batch-pwned; echo '$(id)`id`";
  const { results } = runLocally([{ what: "printf", argv: ["printf", "%s", hostile] }]);
  assert.equal(results[0].stdout, hostile);
  assert.equal(existsSync("/tmp/provision-batch-pwned"), false);
});
