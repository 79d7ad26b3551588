// No bad input ends in a stack trace, a hang, a secret echo or a silent literal:
// each class of bad input gets a clear error naming file:line:column and the fix.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { createServer } from "node:net";
import { mkdirSync, readFileSync, existsSync } from "node:fs";
import { join } from "node:path";
import { loadInventory, selectHosts, globToRegExp } from "../../core/config/inventory.js";
import { checkModules, loadPlaybook } from "../../core/config/playbook.js";
import { ConfigError, ModuleBug, quote, shorten } from "../../core/errors.js";
import { prepare } from "../../core/run/run.js";
import { render, UndefinedVariable, UnsupportedTemplate } from "../../core/config/template.js";
import { planTasks } from "../../core/run/engine.js";
import { YamlSource } from "../../core/config/yaml-source.js";
import type { ModuleDefinition } from "../../core/module-api.js";
import { repoRoot } from "../support/cache.js";
import { builtinRegistry, settings, tempWriter } from "./config-support.js";

const { dir, write } = tempWriter("bad-input");
const registry = builtinRegistry;
const CLI = join(repoRoot, "dist/cli/cli.js");

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
    let stdout = "",
      stderr = "";
    child.stdout.on("data", (d) => (stdout += d));
    child.stderr.on("data", (d) => (stderr += d));
    child.on("close", (code) => resolve({ code: code ?? -1, stdout, stderr }));
  });
}

/** A loopback TCP listener that counts connection attempts (a host provision must not contact). */
async function connectionCounter(): Promise<{ port: number; count: () => number; close: () => Promise<void> }> {
  let connections = 0;
  const server = createServer((socket) => {
    connections++;
    socket.destroy();
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as { port: number }).port;
  return { port, count: () => connections, close: () => new Promise((resolve) => server.close(() => resolve())) };
}
const motdLike = (extra: Partial<ModuleDefinition>): ModuleDefinition => ({
  name: "fussy",
  description: "",
  schema: { type: "object", properties: { text: { type: "string" } } },
  facts: () => ({}),
  plan: () => [],
  ...extra,
});

// 1. Output files that cannot be written

test("--report or --retry-file into a missing folder or at a folder: usage error before any host is contacted", async () => {
  const counter = await connectionCounter();
  try {
    const inv = write("canary.yaml", `all:\n  hosts:\n    canary: { address: 127.0.0.1, port: ${counter.port}, connect_timeout: 2 }\n`);
    const pb = write("deny.yaml", "- hosts: all\n  tasks:\n    - dhcpcd_deny: { interfaces: [eth9] }\n");
    mkdirSync(join(dir, "a-folder"), { recursive: true });
    const cases: [string[], RegExp][] = [
      [["--report", join(dir, "missing/r.json")], /--report ".*missing\/r\.json": the folder .*missing does not exist\. Create it first/],
      [["--report", join(dir, "a-folder")], /--report ".*a-folder": is a folder\. Give a file name, e\.g\. .*a-folder\/report\.json/],
      [["--report", join(dir, "missing/r.html")], /the folder .*missing does not exist/],
      [["--retry-file", join(dir, "missing/x.retry")], /--retry-file ".*x\.retry": the folder .*missing does not exist/],
      [["--retry-file", join(dir, "a-folder")], /--retry-file ".*a-folder": is a folder/],
      [["--report", join(dir, "deny.yaml", "r.json")], /deny\.yaml is not a folder/],
    ];
    for (const [extra, message] of cases) {
      const r = await cli(["--inventory", inv, pb, ...extra]);
      assert.equal(r.code, 64, r.stderr);
      assert.match(r.stderr, message);
      assert.doesNotMatch(r.stderr, /\n\s+at |unexpected error/);
      assert.equal(r.stdout, "", "nothing ran");
    }
    assert.equal(counter.count(), 0, "no connection was attempted");
    const existing = write("existing.json", "keep me\n");
    const r = await cli(["--inventory", inv, "--report", existing, "--limit", "nothing-matches", pb]);
    assert.equal(r.code, 1);
    assert.notEqual(readFileSync(existing, "utf8"), "", "the check itself truncates nothing; the run wrote its report");
  } finally {
    await counter.close();
  }
});

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
  configError(
    () => loadInventory(write("alias.yaml", "all:\n  hosts:\n    pi1: *nope\n")),
    /alias\.yaml:3:10: invalid YAML: undefined alias \*nope\. Define the anchor &nope before this use/,
  );
  const levels = ["a: &a [x, x, x, x, x, x, x, x, x, x]"];
  for (let i = 1; i < 8; i++)
    levels.push(
      `l${i}: &${"a".repeat(i + 1)} [${Array(10)
        .fill(`*${"a".repeat(i)}`)
        .join(", ")}]`,
    );
  const started = Date.now();
  configError(
    () => loadPlaybook(write("bomb.yaml", levels.join("\n") + "\n")),
    /bomb\.yaml:\d+:\d+: invalid YAML: aliases expand to more than 1000000 values here \(an alias bomb\?\)/,
  );
  assert.ok(Date.now() - started < 5000, "refused quickly");
  configError(() => loadInventory(write("cycle.yaml", "all: &x\n  children:\n    g: *x\n")), /cycle\.yaml:3:8: invalid YAML: an alias refers to the value that contains it/);
});

test("YAML merge keys (<<: *defaults) work, with positions inside the merged values", () => {
  const inv = loadInventory(
    write(
      "merge.yaml",
      `all:
  hosts:
    pi1: &pi { address: 10.0.0.1, user: pi, become: true }
    pi2:
      <<: *pi
      address: 10.0.0.2
`,
    ),
  );
  assert.deepEqual(inv.hosts.get("pi2")!.vars, { address: "10.0.0.2", user: "pi", become: true });
  const many = Array.from({ length: 150 }, (_, i) => `    h${i}: { <<: *d, address: 10.0.1.${i} }`).join("\n");
  const big = loadInventory(write("merge-many.yaml", `all:\n  vars:\n    x: &d { user: pi }\n  hosts:\n${many}\n`));
  assert.equal(big.hosts.get("h149")!.vars.user, "pi", "more than 100 uses of one anchor are fine");
  configError(
    () => loadInventory(write("merge-bad.yaml", "all:\n  hosts:\n    pi1: &pi { address: 10.0.0.1, become: sometimes }\n    pi2: { <<: *pi, address: 10.0.0.2 }\n")),
    /merge-bad\.yaml:3:43: inventory > all\.hosts\.pi2\.become: must be a boolean \(got "sometimes"\)/,
  );
  const pb = loadPlaybook(
    write("merge-pb.yaml", "- hosts: all\n  vars:\n    common: &c { interfaces: [eth0] }\n  tasks:\n    - dhcpcd_deny: { <<: *c, path: /etc/dhcpcd.conf }\n"),
  );
  assert.deepEqual(pb.plays[0].tasks[0].rawArgs, { interfaces: ["eth0"], path: "/etc/dhcpcd.conf" });
});

test("a UTF-8 BOM at the start of a playbook or inventory is accepted; positions are unchanged", () => {
  const inv = loadInventory(write("bom-inv.yaml", "\uFEFFall:\n  hosts:\n    pi1: { address: 10.0.0.1 }\n"));
  assert.deepEqual([...inv.hosts.keys()], ["pi1"]);
  const pb = loadPlaybook(write("bom-pb.yaml", "\uFEFF- hosts: all\n  tasks:\n    - dhcpcd_deny: { interfaces: [eth0] }\n"));
  assert.equal(pb.plays[0].hosts, "all");
  configError(() => loadInventory(write("bom-top.yaml", "\uFEFFall: 7\n")), /bom-top\.yaml:1:6: inventory > all: must be an object or null \(got 7\)/);
  configError(
    () => loadInventory(write("bom-bad.yaml", "\uFEFFall:\n  hosts:\n    pi1: { port: x }\n")),
    /bom-bad\.yaml:3:18: inventory > all\.hosts\.pi1\.port: must be an integer/,
  );
});

test("a mapping of 100k keys loads in linear time; a duplicate key among them is named at file:line:col", () => {
  const keys = Array.from({ length: 100_000 }, (_, i) => `    k${i}: ${i}\n`).join("");
  let started = Date.now();
  const inv = loadInventory(write("big.yaml", `all:\n  vars:\n${keys}  hosts:\n    pi1:\n`));
  const took = Date.now() - started;
  assert.equal(inv.hosts.get("pi1")!.vars.k99999, 99999);
  assert.ok(took < 20_000, `took ${took} ms (the library's uniqueKeys check took ~162 s)`);
  started = Date.now();
  configError(
    () => loadInventory(write("big-dup.yaml", `all:\n  vars:\n${keys}    k5: again\n`)),
    /big-dup\.yaml:100003:5: invalid YAML: duplicate key "k5" \(first at line 8, column 5\)\. Remove one of them\./,
  );
  configError(() => YamlSource.parse("dup.yaml", 'a: 1\nb: 2\n"a": 3\n'), /dup\.yaml:3:1: invalid YAML: duplicate key "a" \(first at line 1, column 1\)/);
  YamlSource.parse("ok.yaml", "a: 1\n'1': x\nb: { a: 2 }\nc: [ { a: 3 }, { a: 4 } ]\n"); // same key in different maps is fine
});

test("a 5 MB value is never echoed whole in an error", () => {
  const huge = "x".repeat(5_000_000);
  for (const [file, text] of [
    ["huge-inv.yaml", `all:\n  hosts:\n    pi1: { port: "${huge}" }\n`],
    ["huge-key.yaml", `all:\n  ? ${huge}\n  : 1\n`],
  ] as const)
    configError(
      () => loadInventory(write(file, text)),
      /x…/,
      (m) => assert.ok(m.length < 600, `message of ${m.length} characters`),
    );
  const pb = write("huge-pb.yaml", `- hosts: all\n  tasks:\n    - name: "${huge}"\n      ? ${huge}\n      : {}\n`);
  configError(
    () => checkModules(loadPlaybook(pb), registry()),
    /unknown module "x+…"/,
    (m) => assert.ok(m.length < 1000, `message of ${m.length} characters`),
  );
  const tpl = write("huge-tpl.yaml", `- hosts: all\n  tasks:\n    - dhcpcd_deny: { interfaces: ["{{ ${huge} }}"] }\n`);
  configError(
    () => prepare(loadInventory(write("one.yaml", "all:\n  hosts:\n    pi1:\n")), [loadPlaybook(tpl)], registry(), settings),
    /undefined variable "x+…"/,
    (m) => assert.ok(m.length < 600),
  );
  assert.equal(shorten("abcdef", 4), "abc…");
  assert.equal(quote("a".repeat(100)), JSON.stringify("a".repeat(59) + "…"));
  assert.equal(quote({ a: 1, b: 2 }), "a mapping of 2 keys");
  assert.equal(quote([1]), "a list of 1 item");
});

// 4. Plugins that break the module contract

test("a plugin exporting something that is not a module object is refused, saying what it exports", async () => {
  const r = registry();
  const cases: [unknown, RegExp][] = [
    [42, /exports a number 42, not a provision module\. A plugin exports \(default\) a module object, a list of them, or \{ modules: \[\.\.\.\] \}/],
    ["motd", /exports a string "motd", not a provision module/],
    [null, /exports null, not a provision module/],
    [undefined, /exports nothing, not a provision module/],
    [true, /exports a boolean true/],
    [() => ({}), /exports a function, not a provision module/],
    [[], /exports an empty list of modules/],
    [[{ name: "ok_one", description: "", schema: {}, facts: () => ({}), plan: () => [] }, 7], /item \[1\] of its export is a number 7, not a module object/],
    [[null], /item \[0\] of its export is null/],
    [[["nested"]], /item \[0\] of its export is a list of 1 item/],
    [{ modules: "x" }, /exports "modules" that is a string "x", not a list of modules/],
    [{ name: "Bad Name" }, /"name" must be snake_case \(got "Bad Name"\)/],
    [{ name: "nosecret", description: "", schema: {}, facts: () => ({}), plan: () => [], secrets: "psk" }, /secrets must be a function/],
  ];
  for (const [exported, message] of cases)
    assert.throws(
      () => r.registerExport(exported, 'plugin "./p.js"'),
      (e: Error) => e instanceof ConfigError && message.test(e.message) && e.message.startsWith('plugin "./p.js"'),
      String(exported),
    );
  for (const [name, source, message] of [
    ["null.mjs", "export default null;\n", /plugin ".*null\.mjs": exports null/],
    ["number.mjs", "export default 42;\n", /exports a number 42/],
    ["cjs.cjs", "module.exports = 'motd';\n", /exports a string "motd"/],
    ["named.mjs", "export const modules = [{ name: 'named_one', description: '', schema: {}, facts: () => ({}), plan: () => [] }];\n", null],
  ] as const) {
    const file = write(name, source);
    if (message)
      await assert.rejects(
        () => r.loadPlugin(`./${name}`, dir),
        (e: Error) => e instanceof ConfigError && message.test(e.message),
      );
    else await r.loadPlugin(file, dir);
  }
  assert.ok(r.has("named_one"), "a module without a default export may export { modules }");
});

test("a module whose secrets() throws, or whose plan is not synchronous, is reported as a bug in that module", () => {
  const inv = loadInventory(write("inv-one.yaml", "all:\n  hosts:\n    pi1:\n"));
  const pb = write("fussy.yaml", "- hosts: all\n  tasks:\n    - name: Use it\n      fussy: { text: hi }\n");
  const r = registry();
  r.register(
    motdLike({
      secrets: () => {
        throw new TypeError("cannot read properties of undefined (reading 'psk')");
      },
    }),
    'plugin "./fussy.js"',
  );
  assert.throws(
    () => prepare(inv, [loadPlaybook(pb)], r, settings),
    (e: Error) => e instanceof ModuleBug && /module "fussy" failed to list the secrets of task "Use it": cannot read properties/.test(e.message),
  );

  assert.throws(
    () =>
      registry().register(
        motdLike({
          async plan() {
            return [];
          },
        } as never),
        'plugin "./fussy.js"',
      ),
    (e: Error) => e instanceof ModuleBug && /module "fussy" \(plugin "\.\/fussy\.js"\): plan must be synchronous, but it is an async function/.test(e.message),
  );

  const r2 = registry();
  r2.register(motdLike({ plan: (() => Promise.reject(new Error("late"))) as never }), 'plugin "./fussy.js"');
  const [play] = prepare(inv, [loadPlaybook(pb)], r2, settings);
  const work = play.hosts[0];
  assert.throws(
    () => planTasks(work.tasks, work.handlers, { hostFacts: { bootId: "b", bootTime: 0, systemd: true, hostname: "h" }, results: new Map() }, "pi1"),
    (e: Error) => e instanceof ModuleBug && /module "fussy".*plan must be synchronous, but it returned a Promise/.test(e.message),
  );

  class ClassModule {
    name = "classy";
    description = "";
    schema = {};
    facts() {
      return {};
    }
    plan() {
      return this.helper();
    }
    helper() {
      return [];
    }
  }
  const r3 = registry();
  r3.register(new ClassModule() as never, "plugin");
  assert.deepEqual(r3.get("classy").plan({}, {} as never, {} as never), [], "a class-based module keeps its methods and this");
});

// 5. Templates

test("templates look up own variables only: constructor, toString, __proto__ are undefined variables", () => {
  for (const name of ["constructor", "toString", "__proto__", "hasOwnProperty", "valueOf", "a.constructor", "list.length.x"])
    assert.throws(
      () => render(`{{ ${name} }}`, { a: { b: 1 }, list: [1] }, ["x"]),
      (e: Error) => e instanceof UndefinedVariable && e.message === `undefined variable "${name}"`,
      name,
    );
  assert.equal(render("{{ a.b }}", { a: { b: 1 } }), 1);
  assert.equal(render("x {{ a.b }} }} y", { a: { b: 1 } }), "x 1 }} y", "a lone }} is text");
  assert.equal(render("{{ list.0 }}", { list: ["eth0"] }), "eth0");
});

test("unsupported template syntax is an error naming file:line:col, never left as literal text", () => {
  const inv = loadInventory(write("tpl-inv.yaml", "all:\n  hosts:\n    pi1: { x: eth0, a: 1, b: 2 }\n"));
  const cases: [string, RegExp][] = [
    ["{{ x | trim }}", /"\{\{ x \| trim \}\}" \(filters are not supported\)/],
    ["{{ a-b }}", /"\{\{ a-b \}\}" \(expressions are not supported\)/],
    ["{{ }}", /"\{\{ \}\}" \(an empty expression\)/],
    ["eth{{ x", /"\{\{ x" \(a "\{\{" without its "\}\}"\)/],
    ["{{ x }", /"\{\{ x \}" \(a "\{\{" without its "\}\}"\)/],
    ["{{ {{ x }} }}", /"\{\{ \{\{ x \}\}"/],
    ["{{ lookup('env', 'HOME') }}", /calls are not supported/],
    ["{{ 'eth0' }}", /literals are not supported/],
    ["{{ x['y'] }}", /"\{\{ x\['y'\] \}\}"/],
    ["{% if x %}eth0{% endif %}", /"\{% if x %\}" \(statements and comments are not supported\)/],
    ["eth0{# note #}", /statements and comments are not supported/],
  ];
  for (const [value, message] of cases) {
    const pb = write("tpl.yaml", `- hosts: all\n  tasks:\n    - name: deny\n      dhcpcd_deny:\n        interfaces:\n          - ${JSON.stringify(value)}\n`);
    assert.throws(
      () => checkModules(loadPlaybook(pb), registry()),
      (e: Error) => {
        assert.ok(e instanceof ConfigError, e.message);
        assert.match(e.message, /tpl\.yaml:6:13: task "deny": unsupported template syntax /);
        assert.match(e.message, message);
        assert.match(e.message, /only \{\{ name \}\} and \{\{ a\.b \}\} are supported/);
        return true;
      },
      value,
    );
    assert.throws(() => render(value, { x: "eth0", a: 1, b: 2 }), UnsupportedTemplate, "render refuses it too");
  }
  const key = write(
    "tpl-key.yaml",
    '- hosts: all\n  tasks:\n    - name: bond\n      bond:\n        slaves: [eth0]\n        address: 10.0.0.2/24\n        slave_options:\n          "{{ x }}": { wpa_ssid: home }\n',
  );
  configError(
    () => checkModules(loadPlaybook(key), registry()),
    /tpl-key\.yaml:8:11: task "bond": unsupported template syntax "\{\{ x \}\}" \(templates in keys are not supported\)/,
  );
  const empty = loadInventory(write("none.yaml", "pis:\n  hosts:\n"));
  const unused = write("tpl-unused.yaml", '- hosts: nowhere\n  tasks:\n    - dhcpcd_deny: { interfaces: ["{{ x | lower }}"] }\n');
  configError(
    () => checkModules(loadPlaybook(unused), registry()),
    /tpl-unused\.yaml:3:35: task "dhcpcd_deny": unsupported template syntax/,
    () => assert.ok(empty),
  );
  prepare(inv, [loadPlaybook(write("tpl-ok.yaml", '- hosts: all\n  tasks:\n    - dhcpcd_deny: { interfaces: ["{{ x }}"] }\n'))], registry(), settings);
});

// 6. Inventory names and addresses

test("inventory host names and addresses have a schema: errors at file:line:col", () => {
  const cases: [string, RegExp][] = [
    [
      '    pi1: { address: "10.0.0.1\\nProxyCommand evil" }\n',
      /:3:21: inventory > all\.hosts\.pi1\.address: must be a host name, an IPv4 or an IPv6 address \(got "10\.0\.0\.1\\nProxyCommand evil"\)\. Write e\.g\./,
    ],
    ['    pi1: { address: "" }\n', /:3:21: inventory > all\.hosts\.pi1\.address: must be a host name, an IPv4 or an IPv6 address \(got ""\)/],
    ['    pi1: { address: "pi 1.local" }\n', /address: must be a host name/],
    ["    pi1: { address: 10.0.0.256 }\n", /address: must be a host name/],
    ['    pi1: { address: "-oProxyCommand=x" }\n', /address: must be a host name/],
    ['    pi1: { address: "\\u0007pi" }\n', /address: must be a host name/],
    ['    "pi 1": { address: 10.0.0.1 }\n', /:3:5: inventory > all\.hosts: name "pi 1": must be a name of letters, digits, '_', '-' and '\.'\. Rename it/],
    ['    "pi:1": { address: 10.0.0.1 }\n', /:3:5: inventory > all\.hosts: name "pi:1": must be a name/],
    ['    "pi*": { address: 10.0.0.1 }\n', /name "pi\*": must be a name/],
    ['    "": { address: 10.0.0.1 }\n', /name "": must be a name/],
    ['    "pi\\n1": { address: 10.0.0.1 }\n', /name "pi\\n1": must be a name/],
    ["    999.1.1.1:\n", /:3:5: inventory: host "999\.1\.1\.1" has no address and its name is not a host name or IP address\. Set address: for it\./],
    ['    pi1: { identity_file: "key\\nx" }\n', /identity_file: must be one line of text without control characters/],
  ];
  for (const [i, [host, message]] of cases.entries()) configError(() => loadInventory(write(`names-${i}.yaml`, `all:\n  hosts:\n${host}`)), message);
  configError(
    () => loadInventory(write("group-name.yaml", 'all:\n  children:\n    "my group":\n      hosts: { pi1: }\n')),
    /group-name\.yaml:3:5: inventory > all\.children: name "my group": must be a name/,
  );
  const ok = loadInventory(
    write(
      "names-ok.yaml",
      'all:\n  hosts:\n    pi1: { address: 10.0.0.1 }\n    pi-2.local:\n    pi3: { address: "fd00::3" }\n    pi4: { address: "fe80::4%eth0" }\n    10.0.0.5:\n    pi_6: { address: pi6.example.com. }\n',
    ),
  );
  assert.deepEqual([...ok.hosts.keys()], ["pi1", "pi-2.local", "pi3", "pi4", "10.0.0.5", "pi_6"]);
});

// 7. Secrets in errors

test("a schema error never prints a secret: bond's wpa_psk, any psk/password key, what secrets() declares", () => {
  const inv = loadInventory(write("psk-inv.yaml", 'all:\n  hosts:\n    pi1: { short_psk: "abc12", multi_psk: "line-one-secret\\nline-two-secret" }\n'));
  for (const psk of ["short_psk", "multi_psk"]) {
    const pb = write(
      "psk.yaml",
      `- hosts: all\n  tasks:\n    - bond:\n        slaves: [eth0, wlan0]\n        address: 10.0.0.2/24\n        slave_options:\n          wlan0: { ssid: home, psk: "{{ ${psk} }}" }\n`,
    );
    configError(
      () => prepare(inv, [loadPlaybook(pb)], registry(), settings),
      /psk\.yaml:7:37: task "bond" > bond > slave_options\.wlan0\.psk: must match .* \(the value is secret: not shown\)/,
      (m) => {
        for (const secret of ["abc12", "line-one-secret", "line-two-secret"]) assert.ok(!m.includes(secret), m);
      },
    );
  }
  const r = registry();
  r.register(
    motdLike({
      name: "wifi",
      schema: {
        type: "object",
        properties: { psk: { type: "string", minLength: 8 }, network: { type: "object", properties: { password: { type: "integer" }, code: { type: "string", enum: ["x"] } } } },
      },
      secrets: (a: { network?: { code?: string } }) => [a.network!.code!],
    }),
    "plugin",
  );
  const pb = write("wifi.yaml", "- hosts: all\n  tasks:\n    - wifi: { psk: tiny, network: { password: hunter2, code: s3cr3t-code } }\n");
  configError(
    () => prepare(inv, [loadPlaybook(pb)], r, settings),
    /wifi > psk: must NOT have fewer than 8 characters \(the value is secret: not shown\)/,
    (m) => {
      assert.match(m, /network\.password: must be an integer \(the value is secret: not shown\)/);
      assert.match(m, /network\.code: must be one of x \(the value is secret: not shown\)/, "declared by secrets()");
      for (const secret of ["tiny", "hunter2", "s3cr3t-code"]) assert.ok(!m.includes(secret), m);
    },
  );
  const asMap = write("as-map.yaml", "site:\n  hosts: all\n  vars: { wifi_password: hunter2-in-a-map }\n  tasks: []\n");
  configError(
    () => loadPlaybook(asMap),
    /as-map\.yaml:1:1: playbook: must be a list of plays \(got a mapping of 1 key\)\. Start each play with "- hosts: PATTERN"\./,
    (m) => assert.ok(!m.includes("hunter2"), m),
  );
  configError(() => loadPlaybook(write("empty.yaml", "# nothing\n")), /empty\.yaml:1:1: playbook: the file is empty/);
});

// 8. Wording

test("error wording: an integer, an object or null, names no module, when is not a module, one document", () => {
  configError(() => loadInventory(write("w-int.yaml", "all:\n  hosts:\n    pi1: { connect_timeout: soon }\n")), /must be an integer \(got "soon"\)\. Write an integer\./);
  configError(() => loadInventory(write("w-obj.yaml", "all:\n  hosts:\n    pi1: 7\n")), /all\.hosts\.pi1: must be an object or null \(got 7\)\. Write an object or null\./);
  for (const [i, task] of ["- name: x\n      : {}\n", "- name: x\n      tags: [a]\n", '- { name: x, "": {} }\n'].entries())
    configError(
      () => checkModules(loadPlaybook(write(`w-nomod-${i}.yaml`, `- hosts: all\n  tasks:\n    ${task}`)), registry()),
      /:3:7: task "x" names no module\. Add one/,
      (m) => assert.doesNotMatch(m, /unknown module ""/),
    );
  configError(
    () => checkModules(loadPlaybook(write("w-two.yaml", "- hosts: all\n  tasks:\n    - { apt: {}, reboot: {} }\n")), registry()),
    /task "#1" names several modules \("apt", "reboot"\)/,
  );
  const when = loadPlaybook(write("w-when.yaml", "- hosts: all\n  tasks:\n    - name: x\n      when: { network_stack: ifupdown }\n      dhcpcd_deny: { interfaces: [eth0] }\n"));
  checkModules(when, registry());
  assert.equal(when.plays[0].tasks[0].module, "dhcpcd_deny", "when: is a task keyword, not a second module");
  configError(
    () => loadPlaybook(write("w-docs.yaml", "- hosts: all\n---\n- hosts: pis\n")),
    /w-docs\.yaml:2:1: invalid YAML: a playbook is one YAML document; remove the extra '---'\./,
    (m) => assert.doesNotMatch(m, /parseAllDocuments/),
  );
  configError(() => loadInventory(write("w-docs-inv.yaml", "all: {}\n---\npis: {}\n")), /an inventory is one YAML document; remove the extra '---'/);
  configError(() => loadInventory(write("w-deep.yaml", "all: " + "[".repeat(5000) + "]".repeat(5000) + "\n")), /w-deep\.yaml:\d+:\d+: invalid YAML: nested too deeply/);
});

test("the CLI: a failure is printed once on stderr when not on a terminal; rollback without --limit is a usage error", async () => {
  const counter = await connectionCounter();
  try {
    const inv = write("cli-inv.yaml", `all:\n  hosts:\n    pi1: { address: 127.0.0.1, port: ${counter.port}, connect_timeout: 2, identity_file: ./no-such-key }\n`);
    const r = await cli(["--inventory", inv]);
    assert.equal(r.code, 1);
    const lines = r.stderr.split("\n").filter(Boolean);
    assert.equal(lines.length, 1, r.stderr);
    assert.match(lines[0], /^✖ pi1 \[FAILED: unreachable — /);
    assert.equal(r.stderr.split("unreachable").length - 1, 1, "the outcome once");

    const rollback = await cli(["rollback", "--inventory", inv]);
    assert.equal(rollback.code, 64);
    assert.equal(rollback.stderr, "provision: rollback needs --limit HOST (or a pattern): it undoes the last run on exactly those hosts. See provision --help.\n");
    assert.equal((await cli(["status", "--inventory", inv, "extra.yaml"])).code, 64);
  } finally {
    await counter.close();
  }
});

test("no hosts matched: a warning for each play skipped; exit 1 when nothing at all was done", async () => {
  const empty = write("empty-inv.yaml", "");
  const pb = write("nm.yaml", "- hosts: pis\n  tasks:\n    - dhcpcd_deny: { interfaces: [eth0] }\n");
  let r = await cli(["--inventory", empty, pb]);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /^provision: warning: no hosts matched: the inventory .*empty-inv\.yaml has no hosts\./m);
  assert.match(r.stderr, /^provision: no hosts matched: nothing was done\.$/m);
  assert.doesNotMatch(r.stderr, /\n\s+at /);

  const inv = write("nm-inv.yaml", "all:\n  children:\n    pis:\n      hosts: { pi1: { address: 127.0.0.1 } }\n");
  r = await cli(["--inventory", inv, "--limit", "pi[9]", pb]);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /warning: no hosts matched --limit "pi\[9\]" in .*nm-inv\.yaml\. Check the pattern\./);

  const typo = write("nm-typo.yaml", "- name: Bond\n  hosts: piss\n  tasks: []\n");
  r = await cli(["--inventory", inv, typo]);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /warning: no hosts matched "piss": play "Bond" is skipped\. Check its hosts: line\./);
  assert.ok(!existsSync(join(dir, "nm-typo.retry")));

  const regexPlays = write("nm-regex.yaml", '- hosts: "pi[*"\n  tasks: []\n- hosts: "(pi+)?"\n  tasks: []\n');
  const plays = prepare(loadInventory(inv), [loadPlaybook(regexPlays)], registry(), { ...settings, limit: "pi(1|2)*" });
  assert.deepEqual(
    plays.map((p) => p.hosts.length),
    [0, 0],
    "patterns with regex characters match nothing, and do not crash",
  );
  r = await cli(["--inventory", inv, "--limit", "pi(1|2)*", regexPlays]);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /warning: no hosts matched --limit "pi\(1\|2\)\*"/);
  assert.doesNotMatch(r.stderr, /SyntaxError|\n\s+at /);
});
