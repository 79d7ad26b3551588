// No bad input ends in a stack trace, a hang, a secret echo or a silent literal:
// each class of bad input gets a clear error naming file:line:column and the fix.
import { test, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { createServer } from "node:net";
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync, rmSync, existsSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { loadInventory, selectHosts, globToRegExp } from "../../core/inventory.js";
import { checkModules, loadPlaybook } from "../../core/playbook.js";
import { BUILT_IN, Registry } from "../../core/registry.js";
import { ConfigError, ModuleBug, quote, shorten } from "../../core/errors.js";
import { prepare } from "../../core/run.js";
import { render, UndefinedVariable } from "../../core/template.js";
import { planTasks, type TaskInstance } from "../../core/engine.js";
import { YamlSource } from "../../core/yaml-source.js";
import type { ModuleDefinition } from "../../core/module-api.js";
import { builtinModules } from "../../modules/index.js";
import { repoRoot } from "../support/cache.js";

const dir = mkdtempSync(join(tmpdir(), "bad-input-"));
after(() => rmSync(dir, { recursive: true, force: true }));
const write = (name: string, text: string) => {
  const file = join(dir, name);
  writeFileSync(file, text);
  return file;
};
const registry = () => {
  const r = new Registry();
  builtinModules.forEach((m) => r.register(m, BUILT_IN));
  return r;
};
const settings = { check: true, breakLock: false, forks: 5, tags: [], skipTags: [], acceptNewHostKeys: false, renderer: "silent" as const };
const CLI = join(repoRoot, "dist/core/cli.js");

/** A ConfigError (never a TypeError, ReferenceError…) whose message matches, without a stack trace. */
function configError(fn: () => unknown, pattern: RegExp, check?: (message: string) => void) {
  assert.throws(fn, (e: Error) => {
    assert.ok(e instanceof ConfigError, `expected a ConfigError, got ${e?.name}: ${e?.message?.slice(0, 300)}`);
    assert.match(e.message, pattern);
    assert.doesNotMatch(e.message, /\n\s+at /, "no stack trace");
    check?.(e.message);
    return true;
  });
}

/** Runs the real CLI; stdout is a pipe, as in CI (not a terminal). */
function cli(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [CLI, ...args], { cwd: dir, stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "", stderr = "";
    child.stdout.on("data", (d) => (stdout += d));
    child.stderr.on("data", (d) => (stderr += d));
    child.on("close", (code) => resolve({ code: code ?? -1, stdout, stderr }));
  });
}

/** A loopback TCP listener that counts connection attempts (a host provision must not contact). */
async function connectionCounter(): Promise<{ port: number; count: () => number; close: () => Promise<void> }> {
  let connections = 0;
  const server = createServer((socket) => { connections++; socket.destroy(); });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as { port: number }).port;
  return { port, count: () => connections, close: () => new Promise((resolve) => server.close(() => resolve())) };
}

// 2. Host patterns with characters special to a regular expression

test("host patterns: * and ? are globs, every other character is literal", () => {
  const inv = loadInventory(write("glob.yaml", "all:\n  hosts:\n    pi1:\n    pi2:\n    pix.1:\n  children:\n    pis:\n      hosts: { pi1: }\n"));
  for (const pattern of ["pi[", "pi[1]", "pi(", "(pi*", "pi+", "pi{1}", "pi\\", "[", "^pi", "pi$", "pi|x", "pi.*[", "p?[", "/*"])
    assert.deepEqual(selectHosts(inv, pattern), [], pattern);
  assert.deepEqual(selectHosts(inv, "pi?"), ["pi1", "pi2"]);
  assert.deepEqual(selectHosts(inv, "p.1"), [], "a dot is a dot");
  assert.deepEqual(selectHosts(inv, "pix.*"), ["pix.1"]);
  assert.deepEqual(selectHosts(inv, "*.1"), ["pix.1"]);
  assert.deepEqual(selectHosts(inv, "p*s"), ["pi1"], "globs match group names too");
  assert.equal(globToRegExp("a.b(c)+[d]{2}?*").test("a.b(c)+[d]{2}x-anything"), true);
});

// 3. YAML: aliases, merge keys, BOM, large mappings, large values

test("an undefined alias and an alias bomb are errors at file:line:col, not stack traces", () => {
  configError(() => loadInventory(write("alias.yaml", "all:\n  hosts:\n    pi1: *nope\n")), /alias\.yaml:3:10: invalid YAML: undefined alias \*nope\. Define the anchor &nope before this use/);
  const levels = ["a: &a [x, x, x, x, x, x, x, x, x, x]"];
  for (let i = 1; i < 8; i++) levels.push(`l${i}: &${"a".repeat(i + 1)} [${Array(10).fill(`*${"a".repeat(i)}`).join(", ")}]`);
  const started = Date.now();
  configError(() => loadPlaybook(write("bomb.yaml", levels.join("\n") + "\n")), /bomb\.yaml:\d+:\d+: invalid YAML: aliases expand to more than 1000000 values here \(an alias bomb\?\)/);
  assert.ok(Date.now() - started < 5000, "refused quickly");
  configError(() => loadInventory(write("cycle.yaml", "all: &x\n  children:\n    g: *x\n")), /cycle\.yaml:3:8: invalid YAML: an alias refers to the value that contains it/);
});

test("YAML merge keys (<<: *defaults) work, with positions inside the merged values", () => {
  const inv = loadInventory(write("merge.yaml", `all:
  hosts:
    pi1: &pi { address: 10.0.0.1, user: pi, become: true }
    pi2:
      <<: *pi
      address: 10.0.0.2
`));
  assert.deepEqual(inv.hosts.get("pi2")!.vars, { address: "10.0.0.2", user: "pi", become: true });
  const many = Array.from({ length: 150 }, (_, i) => `    h${i}: { <<: *d, address: 10.0.1.${i} }`).join("\n");
  const big = loadInventory(write("merge-many.yaml", `all:\n  vars:\n    x: &d { user: pi }\n  hosts:\n${many}\n`));
  assert.equal(big.hosts.get("h149")!.vars.user, "pi", "more than 100 uses of one anchor are fine");
  configError(() => loadInventory(write("merge-bad.yaml", "all:\n  hosts:\n    pi1: &pi { address: 10.0.0.1, become: sometimes }\n    pi2: { <<: *pi, address: 10.0.0.2 }\n")),
    /merge-bad\.yaml:3:43: inventory > all\.hosts\.pi2\.become: must be a boolean \(got "sometimes"\)/);
  const pb = loadPlaybook(write("merge-pb.yaml", "- hosts: all\n  vars:\n    common: &c { interfaces: [eth0] }\n  tasks:\n    - dhcpcd_deny: { <<: *c, path: /etc/dhcpcd.conf }\n"));
  assert.deepEqual(pb.plays[0].tasks[0].rawArgs, { interfaces: ["eth0"], path: "/etc/dhcpcd.conf" });
});

test("a UTF-8 BOM at the start of a playbook or inventory is accepted; positions are unchanged", () => {
  const inv = loadInventory(write("bom-inv.yaml", "\uFEFFall:\n  hosts:\n    pi1: { address: 10.0.0.1 }\n"));
  assert.deepEqual([...inv.hosts.keys()], ["pi1"]);
  const pb = loadPlaybook(write("bom-pb.yaml", "\uFEFF- hosts: all\n  tasks:\n    - dhcpcd_deny: { interfaces: [eth0] }\n"));
  assert.equal(pb.plays[0].hosts, "all");
  configError(() => loadInventory(write("bom-top.yaml", "\uFEFFall: 7\n")), /bom-top\.yaml:1:6: inventory > all: must be an object or null \(got 7\)/);
  configError(() => loadInventory(write("bom-bad.yaml", "\uFEFFall:\n  hosts:\n    pi1: { port: x }\n")), /bom-bad\.yaml:3:18: inventory > all\.hosts\.pi1\.port: must be an integer/);
});

test("a mapping of 100k keys loads in linear time; a duplicate key among them is named at file:line:col", () => {
  const keys = Array.from({ length: 100_000 }, (_, i) => `    k${i}: ${i}\n`).join("");
  let started = Date.now();
  const inv = loadInventory(write("big.yaml", `all:\n  vars:\n${keys}  hosts:\n    pi1:\n`));
  const took = Date.now() - started;
  assert.equal(inv.hosts.get("pi1")!.vars.k99999, 99999);
  assert.ok(took < 20_000, `took ${took} ms (the library's uniqueKeys check took ~162 s)`);
  started = Date.now();
  configError(() => loadInventory(write("big-dup.yaml", `all:\n  vars:\n${keys}    k5: again\n`)),
    /big-dup\.yaml:100003:5: invalid YAML: duplicate key "k5" \(first at line 8, column 5\)\. Remove one of them\./);
  configError(() => YamlSource.parse("dup.yaml", "a: 1\nb: 2\n\"a\": 3\n"), /dup\.yaml:3:1: invalid YAML: duplicate key "a" \(first at line 1, column 1\)/);
  YamlSource.parse("ok.yaml", "a: 1\n'1': x\nb: { a: 2 }\nc: [ { a: 3 }, { a: 4 } ]\n"); // same key in different maps is fine
});

// 6. Inventory names and addresses

test("inventory host names and addresses have a schema: errors at file:line:col", () => {
  const cases: [string, RegExp][] = [
    ["    pi1: { address: \"10.0.0.1\\nProxyCommand evil\" }\n", /:3:21: inventory > all\.hosts\.pi1\.address: must be a host name, an IPv4 or an IPv6 address \(got "10\.0\.0\.1\\nProxyCommand evil"\)\. Write e\.g\./],
    ["    pi1: { address: \"\" }\n", /:3:21: inventory > all\.hosts\.pi1\.address: must be a host name, an IPv4 or an IPv6 address \(got ""\)/],
    ["    pi1: { address: \"pi 1.local\" }\n", /address: must be a host name/],
    ["    pi1: { address: 10.0.0.256 }\n", /address: must be a host name/],
    ["    pi1: { address: \"-oProxyCommand=x\" }\n", /address: must be a host name/],
    ["    pi1: { address: \"\\u0007pi\" }\n", /address: must be a host name/],
    ["    \"pi 1\": { address: 10.0.0.1 }\n", /:3:5: inventory > all\.hosts: name "pi 1": must be a name of letters, digits, '_', '-' and '\.'\. Rename it/],
    ["    \"pi:1\": { address: 10.0.0.1 }\n", /:3:5: inventory > all\.hosts: name "pi:1": must be a name/],
    ["    \"pi*\": { address: 10.0.0.1 }\n", /name "pi\*": must be a name/],
    ["    \"\": { address: 10.0.0.1 }\n", /name "": must be a name/],
    ["    \"pi\\n1\": { address: 10.0.0.1 }\n", /name "pi\\n1": must be a name/],
    ["    999.1.1.1:\n", /:3:5: inventory: host "999\.1\.1\.1" has no address and its name is not a host name or IP address\. Set address: for it\./],
    ["    pi1: { identity_file: \"key\\nx\" }\n", /identity_file: must be one line of text without control characters/],
  ];
  for (const [i, [host, message]] of cases.entries()) configError(() => loadInventory(write(`names-${i}.yaml`, `all:\n  hosts:\n${host}`)), message);
  configError(() => loadInventory(write("group-name.yaml", "all:\n  children:\n    \"my group\":\n      hosts: { pi1: }\n")), /group-name\.yaml:3:5: inventory > all\.children: name "my group": must be a name/);
  const ok = loadInventory(write("names-ok.yaml", "all:\n  hosts:\n    pi1: { address: 10.0.0.1 }\n    pi-2.local:\n    pi3: { address: \"fd00::3\" }\n    pi4: { address: \"fe80::4%eth0\" }\n    10.0.0.5:\n    pi_6: { address: pi6.example.com. }\n"));
  assert.deepEqual([...ok.hosts.keys()], ["pi1", "pi-2.local", "pi3", "pi4", "10.0.0.5", "pi_6"]);
});
