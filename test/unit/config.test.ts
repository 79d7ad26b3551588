import { test } from "node:test";
import assert from "node:assert/strict";
import { join } from "node:path";
import { inventorySchema, loadInventory, selectHosts } from "../../core/config/inventory.js";
import { loadPlaybook, checkModules, playbookSchema, resolveArgs } from "../../core/config/playbook.js";
import { ajv } from "../../core/config/schema.js";
import { ConfigError } from "../../core/errors.js";
import { YamlSource, sealedKey } from "../../core/config/yaml-source.js";
import { prepare } from "../../core/run/run.js";
import { builtinModules } from "../../modules/index.js";
import { repoRoot } from "../support/cache.js";
import { builtinRegistry, settings, tempWriter } from "./config-support.js";

const { dir, write } = tempWriter("config");
const registry = builtinRegistry;

test("variable precedence: all < parent group < group < host", () => {
  const inv = loadInventory(
    write(
      "prec.yaml",
      `all:
  vars: { a: all, b: all, c: all, d: all }
  children:
    site:
      vars: { b: site, c: site, d: site }
      children:
        pis:
          vars: { c: pis, d: pis }
          hosts:
            pi1: { d: host, address: 10.0.0.1 }
            pi2:
`,
    ),
  );
  assert.deepEqual(inv.hosts.get("pi1")!.vars, { a: "all", b: "site", c: "pis", d: "host", address: "10.0.0.1" });
  assert.equal(inv.hosts.get("pi2")!.vars.d, "pis");
  assert.deepEqual(selectHosts(inv, "site"), ["pi1", "pi2"]);
  assert.deepEqual(selectHosts(inv, "all:!pi2"), ["pi1"]);
  assert.deepEqual(selectHosts(inv, "!pi2"), ["pi1"], "an exclusion alone starts from all");
  assert.deepEqual(selectHosts(inv, "pi*:&pis"), ["pi1", "pi2"]);
});

test("malformed inventory YAML names file:line:column", () => {
  const file = write("bad.yaml", "all:\n  hosts:\n    pi1: { address: 10.0.0.1\n");
  assert.throws(() => loadInventory(file), /bad\.yaml:\d+:\d+: invalid YAML/);
});

test("inventory schema errors name file:line:column, what is wrong and the fix", () => {
  const file = write("schema.yaml", "all:\n  hosts:\n    pi1:\n      address: 10.0.0.1\n      port: twenty-two\n  chlidren: {}\n");
  assert.throws(
    () => loadInventory(file),
    (e: Error) => {
      assert.match(e.message, /schema\.yaml:5:13: inventory > all\.hosts\.pi1\.port: must be an integer \(got "twenty-two"\)\. Write an integer\./);
      assert.match(e.message, /schema\.yaml:6:3: inventory > all\.chlidren: unknown key/);
      return true;
    },
  );
});

test("unknown modules get a suggestion and a position", () => {
  const pb = write("typo.yaml", "- hosts: all\n  tasks:\n    - name: x\n      bnod: { slaves: [eth0] }\n");
  assert.throws(() => checkModules(loadPlaybook(pb), registry()), /typo\.yaml:4:7: task "x": unknown module "bnod"\. Did you mean "bond"\?/);
});

test("task arguments are validated per host against the module schema, with positions", () => {
  const inv = write("inv.yaml", "all:\n  hosts:\n    pi1: { bond_mode: lacp }\n");
  const pb = write("pb.yaml", '- hosts: all\n  tasks:\n    - name: bond0\n      bond:\n        slaves: [eth0]\n        mode: "{{ bond_mode }}"\n        address: 10.0.0.2/24\n');
  assert.throws(
    () => prepare(loadInventory(inv), [loadPlaybook(pb)], registry(), settings),
    /pb\.yaml:6:15: task "bond0" > bond > mode: must be one of balance-rr, active-backup, .* \(got "lacp"\)/,
  );
});

test("an undefined variable is an error, not an empty string", () => {
  const inv = write("inv2.yaml", "all:\n  hosts:\n    pi1:\n");
  const pb = write("pb2.yaml", '- hosts: all\n  tasks:\n    - bond:\n        slaves: [eth0]\n        address: "{{ bond_address }}"\n');
  assert.throws(() => prepare(loadInventory(inv), [loadPlaybook(pb)], registry(), settings), /pb2\.yaml:5:18: task "bond" \(host pi1\): undefined variable "bond_address"/);
});

test("the shipped inventory and playbooks are valid", () => {
  // its PSK is encrypted for an example key nobody has (secrets.test.ts checks it is a real age file): a stand-in plaintext
  const file = join(repoRoot, "inventories/pis.yaml");
  const inv = loadInventory(file, new Map(YamlSource.load(file).sealed.map((s) => [sealedKey(s.armored), "example-passphrase"])));
  for (const name of ["bond-eth0-wlan0.yaml", "bond-eth0-eth1.yaml"]) {
    const pb = loadPlaybook(join(repoRoot, "playbooks", name));
    checkModules(pb, registry());
    const plays = prepare(inv, [pb], registry(), settings);
    assert.deepEqual(
      plays[0].hosts.map((h) => h.name),
      ["kitchen-pi", "garage-pi"],
    );
    assert.equal(plays[0].hosts[0].target.user, "pi");
    assert.equal(plays[0].hosts[0].target.become, true);
    assert.equal((plays[0].hosts[0].tasks[2].args as { address: string }).address, "192.168.1.20/24");
    assert.equal(resolveArgs !== undefined, true);
  }
});

test("plugins load from a path through the same registry", async () => {
  const r = registry();
  await r.loadPlugin("./test/fixtures/provision-plugin-motd", repoRoot);
  assert.ok(r.has("motd"));
  await assert.rejects(() => r.loadPlugin("./test/fixtures/provision-plugin-motd", repoRoot), /already provided/);
  await assert.rejects(() => r.loadPlugin("provision-plugin-does-not-exist", dir), /cannot find it.*npm install/);
});

test("every built-in schema is valid JSON Schema (the run itself checks only plugins' schemas)", () => {
  for (const m of builtinModules) assert.ok(ajv.validateSchema(m.schema), `module ${m.name}: ${ajv.errorsText(ajv.errors)}`);
  for (const [name, schema] of Object.entries({ inventorySchema, playbookSchema })) assert.ok(ajv.validateSchema(schema), `${name}: ${ajv.errorsText(ajv.errors)}`);
  assert.equal(ajv.validateSchema({ type: "integerish" }), false);
});

test("a plugin with a broken schema is refused before any host is contacted, naming the module", () => {
  const r = registry();
  r.register({ name: "broken", description: "x", schema: { type: "object", properties: { n: { type: "integerish" } } }, facts: () => ({}), plan: () => [] }, "plugin");
  const book = loadPlaybook(write("broken.yaml", "- hosts: all\n  tasks:\n    - name: Use it\n      broken: { n: 1 }\n"));
  assert.throws(
    () => checkModules(book, r),
    (e: Error) => e instanceof ConfigError && /module "broken" has an invalid schema/.test(e.message),
  );
  checkModules(loadPlaybook(write("fine.yaml", "- hosts: all\n  tasks:\n    - name: Ping\n      reboot: {}\n")), r); // unused, it costs nothing
});

test("when: names a host fact and values it can take, checked with file:line:col before any host", () => {
  const good = write("when-good.yaml", "- hosts: all\n  tasks:\n    - name: ifenslave\n      when: { network_stack: [ifupdown, networkd] }\n      apt: { name: ifenslave }\n");
  const playbook = loadPlaybook(good);
  checkModules(playbook, registry());
  assert.deepEqual(playbook.plays[0].tasks[0].when, { network_stack: ["ifupdown", "networkd"] });
  assert.equal(playbook.plays[0].tasks[0].module, "apt", "when is a keyword, not a second module");

  const unknownFact = write("when-fact.yaml", "- hosts: all\n  tasks:\n    - name: x\n      when: { network: ifupdown }\n      apt: { name: ifenslave }\n");
  assert.throws(
    () => checkModules(loadPlaybook(unknownFact), registry()),
    (e: Error) => e instanceof ConfigError && e.message.startsWith(`${unknownFact}:4:15: task "x": when: names unknown host fact "network". Known host facts: network_stack.`),
  );
  const badValue = write("when-value.yaml", "- hosts: all\n  tasks:\n    - name: x\n      when:\n        network_stack: [ifupdown, nm]\n      apt: { name: ifenslave }\n");
  assert.throws(
    () => checkModules(loadPlaybook(badValue), registry()),
    (e: Error) =>
      e instanceof ConfigError &&
      e.message.startsWith(`${badValue}:5:35: task "x": when: network_stack is never "nm". Use one of: ifupdown, networkmanager, networkd, dhcpcd, none.`),
  );
  const notAMap = write("when-string.yaml", "- hosts: all\n  tasks:\n    - name: x\n      when: \"network_stack == 'ifupdown'\"\n      apt: { name: ifenslave }\n");
  assert.throws(
    () => loadPlaybook(notAMap),
    (e: Error) => e instanceof ConfigError && e.message.includes(`${notAMap}:4:13`),
    "no string evaluation",
  );
});
