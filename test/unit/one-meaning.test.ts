// One meaning on every stack: an address always carries its prefix (a netmask becomes one),
// so ifupdown, NetworkManager and systemd-networkd render the same network; args that
// contradict themselves, or another host's, are errors at file:line:col before any host.
import { test } from "node:test";
import assert from "node:assert/strict";
import bond from "../../modules/bond/index.js";
import { parseKeyfile } from "../../modules/network/keyfile.js";
import { parseNetworkStack } from "../../modules/network/stack.js";
import { compile } from "../../core/config/schema.js";
import { loadInventory } from "../../core/config/inventory.js";
import { loadPlaybook } from "../../core/config/playbook.js";
import { prepare } from "../../core/run/run.js";
import { ConfigError, ModuleBug } from "../../core/errors.js";
import type { FileChange, PlanContext } from "../../core/module-api.js";
import { builtinRegistry, settings, tempWriter } from "./config-support.js";

const { dir, write } = tempWriter("one-meaning");

const STACKS: Record<string, string> = {
  ifupdown: "service networking active\ninstalled ifup yes\ndefault-route eth0\nifupdown-config\n",
  networkmanager: "service NetworkManager active\ninstalled ifup no\nnm-version 1.42.4\nnm-device eth0:ethernet:connected\ndefault-route eth0\nifupdown-config\n",
  networkd: "service systemd-networkd active\ninstalled ifup no\nnetworkd-link 2 eth0 ether routable configured\ndefault-route eth0\nifupdown-config\n",
};
const context = (stack: string): PlanContext => ({
  host: "pi",
  hostFacts: { bootId: "b", bootTime: 0, systemd: true, hostname: "pi" },
  facts: { network_stack: parseNetworkStack(STACKS[stack]) },
  rebootPending: false,
  rebootReasons: [],
});

function emptyFacts(a: unknown): never {
  return Object.fromEntries(
    Object.entries(bond.facts(a as never)).map(([name, p]) => {
      const probe = p as { file?: string; dir?: string };
      return [name, probe.file ? { path: probe.file, content: null } : probe.dir ? { path: probe.dir, entries: null } : { code: 1, stdout: "" }];
    }),
  ) as never;
}

/** The bond's address and gateway as each stack's files state them. */
function rendered(stack: string, args: Record<string, unknown>): { address?: string; gateway?: string } {
  const a = { slaves: ["eth0", "eth1"], ...args };
  assert.ok(compile(bond.schema)(a));
  assert.deepEqual(bond.check!(a as never), [], "the args are consistent");
  const files = bond.plan(a as never, emptyFacts(a), context(stack)).filter((c): c is FileChange => c.kind === "file");
  const text = (suffix: string) => files.find((f) => f.path.endsWith(suffix))!.after!;
  if (stack === "ifupdown") {
    const stanza = text("/etc/network/interfaces").split("iface bond0 ")[1];
    assert.doesNotMatch(stanza, /netmask/, "one way to say it: the prefix");
    return { address: /^\s+address (\S+)$/m.exec(stanza)?.[1], gateway: /^\s+gateway (\S+)$/m.exec(stanza)?.[1] };
  }
  if (stack === "networkmanager") {
    const [address, gateway] = parseKeyfile(text("/bond0.nmconnection")).ipv4.address1.split(",");
    return { address, gateway };
  }
  const network = text("/10-provision-bond0.network");
  return { address: /^Address=(\S+)$/m.exec(network)?.[1], gateway: /^Gateway=(\S+)$/m.exec(network)?.[1] };
}

test("address with netmask: the same /24 and gateway on ifupdown, NetworkManager and systemd-networkd", () => {
  for (const args of [
    { address: "10.0.5.20", netmask: "255.255.255.0", gateway: "10.0.5.1" },
    { address: "10.0.5.20/24", gateway: "10.0.5.1" },
    { address: "10.0.5.20/24", netmask: "255.255.255.0", gateway: "10.0.5.1" },
  ])
    for (const stack of Object.keys(STACKS)) assert.deepEqual(rendered(stack, args), { address: "10.0.5.20/24", gateway: "10.0.5.1" }, `${stack}: ${JSON.stringify(args)}`);
  assert.deepEqual(rendered("networkd", { address: "192.168.7.9", netmask: "255.255.252.0" }), { address: "192.168.7.9/22", gateway: undefined });
});

/** prepare() of a one-host (or two-host) play with these bond args: the ConfigError's message. */
function errorOf(bondYaml: string, hosts = "    pi1: { address: 10.0.0.9 }\n", extraTasks = ""): string {
  const inv = write(`inv-${Math.random()}.yaml`, `all:\n  hosts:\n${hosts}`);
  const pb = write(`pb-${Math.random()}.yaml`, `- hosts: all\n  tasks:\n    - name: Configure bond0\n      bond:\n${bondYaml}${extraTasks}`);
  try {
    prepare(loadInventory(inv), [loadPlaybook(pb)], builtinRegistry(), settings);
  } catch (error) {
    assert.ok(error instanceof ConfigError, `a ConfigError, not ${error}`);
    assert.doesNotMatch(error.message, /\n\s+at /, "no stack trace");
    return error.message.replaceAll(`${dir}/`, "");
  }
  return "";
}

test("cross-field checks before any host is contacted: each at file:line:col, with the fix", () => {
  const base = (over: string) => `        slaves: [eth0, eth1]\n${over}`;
  const cases: [string, RegExp][] = [
    [
      base("        address: 10.0.5.20\n        gateway: 10.0.5.1\n"),
      /:6:18: task "Configure bond0" > bond > address \(host pi1\): 10\.0\.5\.20 has no prefix length, and each network stack assumes another .* Write it with one, e\.g\. 10\.0\.5\.20\/24 \(or give netmask:\)\./,
    ],
    [
      base("        address: 10.0.5.20/24\n        gateway: 10.0.6.1\n"),
      /:7:18: .* > bond > gateway \(host pi1\): 10\.0\.6\.1 is outside the bond's subnet 10\.0\.5\.0\/24 \(from address 10\.0\.5\.20\/24\): no stack reaches it on-link\. Use the router's address on 10\.0\.5\.0\/24, or fix the prefix\./,
    ],
    [
      base("        address: 10.0.5.20\n        netmask: 255.255.255.0\n        gateway: 10.0.6.1\n"),
      /gateway \(host pi1\): 10\.0\.6\.1 is outside the bond's subnet 10\.0\.5\.0\/24 \(from address 10\.0\.5\.20 and netmask 255\.255\.255\.0\)/,
    ],
    [
      base("        address: 10.0.5.20/24\n        gateway: 10.0.5.20\n"),
      /gateway \(host pi1\): 10\.0\.5\.20 is the bond's own address; the gateway is the router's address on 10\.0\.5\.0\/24/,
    ],
    [
      base("        address: 10.0.5.0/24\n"),
      /:6:18: .*address \(host pi1\): 10\.0\.5\.0 is the network address of 10\.0\.5\.0\/24, not a host's address\. Use an address between the two \(e\.g\. 10\.0\.5\.1\/24\), or fix the prefix\./,
    ],
    [base("        address: 10.0.5.255/24\n"), /10\.0\.5\.255 is the broadcast address of 10\.0\.5\.0\/24/],
    [base("        address: 127.0.0.2/8\n"), /127\.0\.0\.2 is a loopback address \(127\.0\.0\.0\/8\), not a host's address/],
    [base("        address: 224.0.0.9/24\n"), /224\.0\.0\.9 is a multicast address/],
    [base("        address: 10.0.5.20/0\n"), /address \(host pi1\): \/0 is every address, not a subnet \(got 10\.0\.5\.20\/0\)\. Give the prefix of the bond's network/],
    [
      base("        address: 10.0.5.20/24\n        gateway: 10.0.5.255\n"),
      /gateway \(host pi1\): 10\.0\.5\.255 is the broadcast address of 10\.0\.5\.0\/24, not a router's address/,
    ],
    [base("        address: 10.0.5.20/24\n        netmask: 255.255.0.0\n"), /netmask \(host pi1\): 255\.255\.0\.0 is \/16, but address says \/24\. Remove netmask/],
    [base("        address: 10.0.5.20\n        netmask: 255.0.255.0\n"), /netmask \(host pi1\): 255\.0\.255\.0 is not a netmask \(its one bits must be contiguous\)/],
    [
      "        name: lo\n        slaves: [eth0]\n        address: 10.0.5.20/24\n",
      /:5:15: .* > bond > name \(host pi1\): lo is the loopback interface \(got "lo"\)\. Name the bond e\.g\. bond0\./,
    ],
    [
      "        name: eth0\n        slaves: [eth0, eth1]\n        address: 10.0.5.20/24\n",
      /:6:18: .* > bond > slaves\[0\] \(host pi1\): eth0 is the bond itself \(name: eth0\); a bond cannot be its own slave/,
    ],
    ["        slaves: [eth0, lo]\n        address: 10.0.5.20/24\n", /slaves\[1\] \(host pi1\): lo is the loopback interface; it cannot be a slave\. Remove it\./],
    [
      base("        primary: eth2\n        address: 10.0.5.20/24\n"),
      /:6:18: .* > bond > primary \(host pi1\): eth2 is not one of the slaves \(eth0, eth1\)\. Use one of them, or add it to slaves\./,
    ],
    [
      base("        mode: balance-rr\n        primary: eth0\n        address: 10.0.5.20/24\n"),
      /primary \(host pi1\): only active-backup, balance-tlb, balance-alb bonds have a primary \(mode is balance-rr\)/,
    ],
    [base("        method: dhcp\n        gateway: 10.0.5.1\n"), /gateway \(host pi1\): only for method: static \(method is dhcp/],
    [base("        address: 10.0.5.20/24\n        slave_options: { wlan1: { wireless_power: off } }\n"), /slave_options\.wlan1 \(host pi1\): wlan1 is not one of the slaves/],
    [
      base("        address: 10.0.5.20/24\n        arp_interval: 100\n        arp_ip_target: [10.0.5.20]\n"),
      /arp_ip_target\[0\] \(host pi1\): 10\.0\.5\.20 is the bond's own address/,
    ],
  ];
  for (const [yaml, message] of cases) assert.match(errorOf(yaml), message, yaml);
  assert.equal(errorOf(base("        address: 10.0.5.20/24\n        gateway: 10.0.5.1\n")), "", "a consistent bond passes");
  assert.equal(errorOf(base("        address: 10.0.5.20/31\n        gateway: 10.0.5.21\n")), "", "a /31 has no network or broadcast address (RFC 3021)");
  assert.equal(errorOf(base("        address: 10.0.5.20/32\n")), "", "a /32 without gateway is a lone address");
  // every problem of a task at once, each on its own line
  assert.equal(errorOf("        name: lo\n        slaves: [eth0]\n        primary: eth1\n        address: 10.0.5.0/24\n").split("\n").length, 3);
});

test("the same bond address on two hosts of a play, and one interface in two bond tasks of a host, are errors before any host", () => {
  const templated = '        slaves: [eth0, eth1]\n        address: "{{ bond_address }}"\n';
  const twoHosts = "    pi1: { address: 10.0.0.9, bond_address: 10.0.5.20/24 }\n    pi2: { address: 10.0.0.10, bond_address: 10.0.5.20/24 }\n";
  assert.match(
    errorOf(templated, twoHosts),
    /:6:18: task "Configure bond0" > bond > address \(host pi2\): 10\.0\.5\.20 is also the address of host pi1: two hosts would answer one address\. Give each its own/,
  );
  assert.equal(errorOf(templated, twoHosts.replace("10.0.5.20/24 }\n    pi2", "10.0.5.21/24 }\n    pi2")), "");
  const second = (slaves: string, when = "") =>
    `    - name: Configure bond1\n${when}      bond:\n        name: bond1\n        slaves: [${slaves}]\n        address: 10.0.6.20/24\n`;
  assert.match(
    errorOf(templated.replace('"{{ bond_address }}"', "10.0.5.20/24"), undefined, second("eth1, eth2")),
    /:10:18: task "Configure bond1" > bond > slaves\[0\] \(host pi1\): eth1 is already a slave of task "Configure bond0" \(bond bond0\) on this host: the two tasks would take it from each other on every run/,
  );
  assert.equal(errorOf(templated.replace('"{{ bond_address }}"', "10.0.5.20/24"), undefined, second("eth2, eth3")), "", "two bonds with their own slaves are fine");
  const onlyOn = (stack: string) => `      when: { network_stack: ${stack} }\n`;
  const exclusive = `- hosts: all\n  tasks:\n    - name: A\n${onlyOn("ifupdown")}      bond: { slaves: [eth0], address: 10.0.5.20/24 }\n    - name: B\n${onlyOn("networkmanager")}      bond: { slaves: [eth0], address: 10.0.5.20/24 }\n`;
  const inv = write("inv-x.yaml", "all:\n  hosts:\n    pi1: { address: 10.0.0.9 }\n");
  assert.doesNotThrow(
    () => prepare(loadInventory(inv), [loadPlaybook(write("exclusive.yaml", exclusive))], builtinRegistry(), settings),
    "tasks that never run together on one host do not clash",
  );
  assert.throws(
    () => prepare(loadInventory(inv), [loadPlaybook(write("both.yaml", exclusive.replace("networkmanager", "ifupdown")))], builtinRegistry(), settings),
    /both\.yaml:8:\d+: task "B" > bond > (name|address) \(host pi1\): /,
  );
});

test("a plugin's check and checkPlay: problems at file:line:col, a throw or a Promise is a bug in that module", () => {
  const inv = loadInventory(write("inv-plugin.yaml", "all:\n  hosts:\n    pi1:\n    pi2:\n"));
  const pb = loadPlaybook(write("plugin.yaml", "- hosts: all\n  tasks:\n    - name: Use it\n      fussy: { text: hi }\n"));
  const fussy = (extra: object) => {
    const r = builtinRegistry();
    r.register(
      { name: "fussy", description: "", schema: { type: "object", properties: { text: { type: "string" } } }, facts: () => ({}), plan: () => [], ...extra } as never,
      'plugin "./fussy.js"',
    );
    return r;
  };
  assert.throws(
    () => prepare(inv, [pb], fussy({ check: () => [{ path: ["text"], message: "too short. Write more." }] }), settings),
    (e: Error) => e instanceof ConfigError && e.message === `${dir}/plugin.yaml:4:22: task "Use it" > fussy > text (host pi1): too short. Write more.`,
  );
  assert.throws(
    () => prepare(inv, [pb], fussy({ checkPlay: (tasks: { host: string }[]) => tasks.map((t, index) => ({ index, path: [], message: `${t.host} clashes` })) }), settings),
    (e: Error) => e instanceof ConfigError && e.message.split("\n").length === 2 && /plugin\.yaml:4:14: task "Use it" > fussy \(host pi2\): pi2 clashes$/.test(e.message),
  );
  assert.throws(
    () =>
      prepare(
        inv,
        [pb],
        fussy({
          check: () => {
            throw new TypeError("x is undefined");
          },
        }),
        settings,
      ),
    (e: Error) => e instanceof ModuleBug && /module "fussy" failed to check task "Use it": x is undefined/.test(e.message),
  );
  assert.throws(
    () =>
      fussy({
        async check() {
          return [];
        },
      }),
    (e: Error) => e instanceof ModuleBug && /check must be synchronous/.test(e.message),
  );
  assert.throws(() => fussy({ checkPlay: "no" }), /checkPlay must be a function/);
});
