// Files provision shares with others: the bond edits only its own stanzas of
// /etc/network/interfaces (every other stanza, source line and comment stays where it was),
// refuses where it cannot tell, and two bonds on one host converge on every stack: a later
// task sees what earlier tasks of the run will write, folder listings too.
import { test } from "node:test";
import assert from "node:assert/strict";
import bond from "../../modules/bond/index.js";
import gretap from "../../modules/gretap_bond.js";
import { optionsContent } from "../../modules/kernel_module.js";
import { editInterfaces, renderBond } from "../../modules/bond/ifupdown.js";
import { parseInterfaces, renderBlocks } from "../../modules/network/interfaces-file.js";
import { networkStackFact } from "../../modules/network/stack.js";
import { compile } from "../../core/config/schema.js";
import { planTasks, type TaskInstance } from "../../core/run/engine.js";
import { probeKey, type Gathered } from "../../core/run/facts.js";
import { HostError } from "../../core/errors.js";
import { PlanError, defineModule, fileChange, type Change, type FileChange, type ModuleDefinition, type Probe } from "../../core/module-api.js";
import type { BondArgs } from "../../modules/bond/model.js";

// What a Raspberry Pi OS Bullseye / Debian interfaces file looks like after a few years.
const PI_FILE = `# This file describes the network interfaces available on your system
# and how to activate them. For more information, see interfaces(5).

source /etc/network/interfaces.d/*

# The loopback network interface
auto lo
iface lo inet loopback

# The primary network interface
auto eth0 eth1
iface eth0 inet static
\taddress 10.77.0.11/24
\tgateway 10.77.0.1

# Sensor LAN (keep: the weather station lives here)
iface eth1 inet static
\taddress 10.9.0.2/24

allow-hotplug wlan0
iface wlan0 inet dhcp
\twpa-conf /etc/wpa_supplicant/wpa_supplicant.conf

# VPN to the office
auto wg0
iface wg0 inet static
\taddress 10.200.0.2/24
\tpre-up ip link add wg0 type wireguard
\tpre-up wg setconf wg0 /etc/wireguard/wg0.conf
`;

const IFUPDOWN = "service networking active\ninstalled ifup yes\ndefault-route eth0\nifupdown-config\nauto eth0\niface eth0 inet static\n";
const NETWORKD =
  "service systemd-networkd active\nservice networking inactive\ninstalled ifup no\nnetworkd-link 2 eth0 ether routable configured\ndefault-route eth0\nifupdown-config\n";
const NM = "service NetworkManager active\ninstalled ifup no\nnm-version 1.42.4\nnm-device eth0:ethernet:connected\ndefault-route eth0\nifupdown-config\n";

function bondArgs(over: Record<string, unknown> = {}): BondArgs {
  const a = {
    slaves: ["eth0", "wlan0"],
    primary: "eth0",
    address: "10.77.0.11/24",
    gateway: "10.77.0.1",
    slave_options: { wlan0: { ssid: "home", psk: "correct horse battery" } },
    ...over,
  };
  assert.ok(compile(bond.schema)(a), "args must validate");
  return a as unknown as BondArgs;
}

test("interfaces(5) reader: blocks keep their bytes; continuation lines, comments inside stanzas, naming lines", () => {
  const text =
    "auto lo eth0\n# a comment\niface eth0 inet static\n  address 1.2.3.4/24 \\\n   # not a comment\n  # inside\n  gateway 1.2.3.1\n\n# after\nmapping eth*\n  script /x\nsource-directory interfaces.d\nno-text";
  const blocks = parseInterfaces(text);
  assert.equal(renderBlocks(blocks), text + "\n", "every byte is kept (a final newline added)");
  assert.deepEqual(
    blocks.map((b) => b.kind),
    ["naming", "other", "iface", "other", "other", "mapping", "source", "other"],
  );
  const eth0 = blocks[2];
  assert.ok(eth0.kind === "iface");
  assert.deepEqual(
    eth0.options.map((o) => o[0]),
    ["address", "gateway"],
    "a comment between options belongs to the stanza; a continued line is one option",
  );
  assert.equal(eth0.lines.length, 5);
});

test("ifupdown: only the bond's and its slaves' stanzas are replaced; source, other stanzas and comments stay where they were", () => {
  const a = bondArgs();
  const { text, replaced } = editInterfaces(a, PI_FILE);
  assert.deepEqual(replaced.sort(), ["eth0", "wlan0"]);
  for (const kept of [
    "source /etc/network/interfaces.d/*\n",
    "# Sensor LAN (keep: the weather station lives here)\niface eth1 inet static\n\taddress 10.9.0.2/24\n",
    "# VPN to the office\nauto wg0\niface wg0 inet static\n\taddress 10.200.0.2/24\n\tpre-up ip link add wg0 type wireguard\n\tpre-up wg setconf wg0 /etc/wireguard/wg0.conf\n",
    "# The loopback network interface\nauto lo\niface lo inet loopback\n",
    "# This file describes the network interfaces available on your system\n",
  ])
    assert.ok(text.includes(kept), `kept byte for byte: ${kept}`);
  assert.match(text, /^auto eth1$/m, "auto eth0 eth1 loses only eth0");
  assert.doesNotMatch(text, /allow-hotplug wlan0|inet dhcp|wpa_supplicant\.conf|10\.77\.0\.11\/24\n\tgateway/);
  const order = [
    "source ",
    "iface lo",
    "# The primary network interface",
    "# bond0: managed by provision",
    "iface eth0 inet manual",
    "iface bond0 inet static",
    "iface eth1 inet static",
    "iface wg0",
  ];
  const at = order.map((l) => text.indexOf(l));
  assert.deepEqual(
    [...at].sort((x, y) => x - y),
    at,
    `in place, in order:\n${text}`,
  );
  assert.ok(at.every((i) => i >= 0));
});

test("ifupdown: the edit is stable, moves nothing on a second run, and takes over the module's former whole-file rendering", () => {
  const a = bondArgs();
  const inputs = [
    PI_FILE,
    null,
    "auto lo\niface lo inet loopback",
    "iface wlan0 inet dhcp\n\n\n# end\n",
    PI_FILE.replace("allow-hotplug wlan0\n", "") + "\nauto wlan0\niface wlan0 inet dhcp\n",
  ];
  for (const input of inputs) {
    const once = editInterfaces(a, input).text;
    assert.equal(editInterfaces(a, once).text, once, `stable for:\n${input}`);
    assert.deepEqual(editInterfaces(a, once).replaced, [], "nothing of anyone else's replaced the second time");
    assert.equal(once.split(renderBond(a).join("\n")).length, 2, "the bond's block appears once");
  }
  // what this module wrote when it owned the whole file
  const former =
    "# Managed by provision (bond module); the original is in /etc/network/interfaces.orig.\n# Status: cat /proc/net/bonding/bond0\n\nauto lo\niface lo inet loopback\n\nauto eth0\niface eth0 inet manual\n\nauto wlan0\niface wlan0 inet manual\n    wpa-conf /etc/wpa_supplicant/provision-wlan0.conf\n\nauto bond0\niface bond0 inet static\n    address 10.77.0.11/24\n    bond-slaves eth0 wlan0\n";
  const taken = editInterfaces(a, former).text;
  assert.equal(taken, `auto lo\niface lo inet loopback\n\n${renderBond(a).join("\n")}\n`);
  // a slave dropped from the list: its stanza in the bond's block goes too; one configured elsewhere stays
  const wired = { ...a, slaves: ["eth0", "eth2"], slave_options: {} } as BondArgs;
  const moved = editInterfaces(wired, editInterfaces(a, PI_FILE).text).text;
  assert.doesNotMatch(moved, /wlan0/);
  assert.match(moved, /iface eth1 inet static/);
  assert.equal(editInterfaces(wired, moved).text, moved);
});

test("ifupdown: refuses where it cannot tell who configures an interface, naming file:line and the fix", () => {
  const a = bondArgs();
  const dir = (entries: Record<string, string>) => ({ path: "/etc/network/interfaces.d", entries });
  const cases: [string, ReturnType<typeof dir> | undefined, RegExp][] = [
    [
      "auto lo\nmapping eth*\n  script /usr/local/bin/pick\n",
      undefined,
      /^\/etc\/network\/interfaces:2: a mapping stanza \(mapping eth\*\) maps eth0: provision cannot tell which stanza ifupdown will use\. Remove eth0 from the mapping/,
    ],
    [
      "source /etc/network/interfaces.d/*\n",
      dir({ uplink: "allow-hotplug wlan0\niface wlan0 inet dhcp\n" }),
      /^\/etc\/network\/interfaces\.d\/uplink:1: wlan0 is configured here too \(sourced by \/etc\/network\/interfaces\): ifupdown would read both\. Remove wlan0 from \/etc\/network\/interfaces\.d\/uplink/,
    ],
    ["source-directory /etc/network/interfaces.d\n", dir({ eth0: "iface eth0 inet dhcp\n" }), /interfaces\.d\/eth0:1: eth0 is configured here too/],
    [
      "source interfaces.d/*.cfg\n",
      dir({ "a.cfg": "source /etc/other/*\n" }),
      /^\/etc\/network\/interfaces\.d\/a\.cfg:1: "source \/etc\/other\/\*" reads files outside \/etc\/network\/interfaces\.d, which provision does not read: it cannot tell whether they configure bond0, eth0, wlan0\. Move them into/,
    ],
    ["source /srv/net/*\n", undefined, /interfaces:1: "source \/srv\/net\/\*" reads files outside/],
    ["auto br0\niface br0 inet dhcp\n  bridge_ports eth0 eth3\n", undefined, /interfaces:2: br0's stanza also takes eth0 \(bridge_ports\): two owners for one interface/],
    [
      "iface eth5 inet manual\n  bond-master bond0\n",
      undefined,
      /interfaces:1: eth5 names bond0 as its bond-master but is not one of its slaves \(eth0, wlan0\)\. Add it to slaves or remove its bond-master line/,
    ],
  ];
  for (const [file, sourced, message] of cases)
    assert.throws(
      () => editInterfaces(a, file, sourced),
      (e: Error) => e instanceof PlanError && message.test(e.message),
      `${file} → ${message}`,
    );
  // what is not the bond's in a sourced file is fine, and so is a source line that matches nothing of it
  assert.doesNotThrow(() => editInterfaces(a, "source /etc/network/interfaces.d/*\n", dir({ sensor: "auto dummy9\niface dummy9 inet manual\n" })).text.length);
  assert.throws(
    () => editInterfaces(a, "source /etc/network/interfaces.d/*\n", dir({ "x.bak": "iface eth0 inet dhcp\n" })),
    /x\.bak:1: eth0 is configured here too/,
    "source with * reads every file",
  );
  assert.doesNotThrow(
    () => editInterfaces(a, "source-directory /etc/network/interfaces.d\n", dir({ "x.bak": "iface eth0 inet dhcp\n" })),
    "source-directory skips names run-parts skips",
  );
});

test("ifupdown: the plan says what it replaces; a second plan over the result changes nothing", () => {
  const a = bondArgs({ slave_options: {}, slaves: ["eth0", "eth1"] });
  const facts = (content: string | null) =>
    ({
      interfaces: { path: "/etc/network/interfaces", content, mode: "0644" },
      interfacesDir: { path: "/etc/network/interfaces.d", entries: {} },
      original: { path: "/etc/network/interfaces.orig", content: content === PI_FILE ? null : PI_FILE },
      bonding: { path: "/proc/net/bonding/bond0", content: healthy("bond0", ["eth0", "eth1"], "eth0") },
      address: { code: 0, stdout: '[{"addr_info":[{"local":"10.77.0.11"}]}]' },
    }) as never;
  const changes = bond.plan(withSchemaDefaults(a), facts(PI_FILE), contextOf(IFUPDOWN));
  const write = changes.find((c): c is FileChange => c.kind === "file" && c.path === "/etc/network/interfaces")!;
  assert.equal(write.summary, "configure bond0 (active-backup: eth0 + eth1) in /etc/network/interfaces (replaces the stanzas of eth0, eth1)");
  assert.deepEqual(bond.plan(withSchemaDefaults(a), facts(write.after), contextOf(IFUPDOWN)), []);
});

// ---- a host of files: plan, apply the changes, gather again ------------------------------

/** A host made of files (and folders that exist), probed the way the gather reads a real one. */
class FakeHost {
  files = new Map<string, string>();
  constructor(
    private stack: string,
    private dirs: string[],
    private addresses: Record<string, string> = {},
  ) {}

  gather(instances: TaskInstance[]): Gathered {
    const probes: Probe[] = [networkStackFact.probe, ...instances.flatMap((i) => Object.values(i.module.facts(i.args)) as Probe[])];
    return { hostFacts: { bootId: "b", bootTime: 0, systemd: true, hostname: "pi" }, results: new Map(probes.map((p) => [probeKey(p), this.read(p)])) };
  }

  private read(p: Probe) {
    if ("file" in p) return { path: p.file, content: this.files.get(p.file) ?? null, mode: "0644" };
    if ("dir" in p) {
      const entries = [...this.files].filter(([f]) => f.slice(0, f.lastIndexOf("/")) === p.dir).map(([f, c]) => [f.slice(p.dir.length + 1), c]);
      return { path: p.dir, entries: entries.length || this.dirs.includes(p.dir) ? Object.fromEntries(entries) : null };
    }
    if (probeKey(p) === probeKey(networkStackFact.probe)) return { code: 0, stdout: this.stack };
    if (p.command[3] === "bond-address") return { code: 0, stdout: JSON.stringify([{ addr_info: [{ local: this.addresses[p.command[4]] }] }]) };
    return { code: 1, stdout: "" };
  }

  /** Apply the planned file changes; then the kernel runs each bond as configured (as after the reboot). */
  apply(planned: { changes: Change[] }[], bonds: BondArgs[]): number {
    const changes = planned.flatMap((p) => p.changes);
    for (const c of changes) if (c.kind === "file") c.after === null ? this.files.delete(c.path) : this.files.set(c.path, c.after);
    for (const b of bonds) {
      this.files.set(`/proc/net/bonding/${b.name}`, healthy(b.name, b.slaves, b.primary));
      this.addresses[b.name] = b.address!.split("/")[0];
    }
    return changes.length;
  }
}

function healthy(name: string, slaves: string[], primary?: string): string {
  return (
    [
      `Bonding Mode: fault-tolerance (active-backup)`,
      `Primary Slave: ${primary ?? "None"}`,
      `Currently Active Slave: ${primary ?? slaves[0]}`,
      "MII Status: up",
      "",
      ...slaves.flatMap((s) => [`Slave Interface: ${s}`, "MII Status: up", "Link Failure Count: 0", ""]),
    ].join("\n") + `\n# ${name}\n`
  );
}

function withSchemaDefaults<T>(args: T, module: ModuleDefinition = bond): T {
  const copy = structuredClone(args);
  assert.ok(compile(module.schema)(copy), "args must validate");
  return copy;
}

const contextOf = (stack: string) => ({
  host: "pi",
  hostFacts: { bootId: "b", bootTime: 0, systemd: true, hostname: "pi" },
  facts: { network_stack: networkStackFact.parse({ code: 0, stdout: stack }) },
  rebootPending: false,
  rebootReasons: [],
});

const instance = (module: ModuleDefinition, args: unknown, name: string): TaskInstance => ({
  task: { name, module: module.name, rawArgs: args, tags: [], notify: [], diff: true, when: {}, path: [] },
  module,
  args: withSchemaDefaults(args, module),
  handler: false,
  conditions: [],
  mask: (s) => s,
});

const TWO_BONDS = [
  { name: "bond0", slaves: ["eth0", "eth1"], primary: "eth0", address: "10.77.0.11/24", gateway: "10.77.0.1" },
  { name: "bond0-lan", slaves: ["eth2", "lan"], primary: "eth2", address: "10.9.0.2/24" },
];

for (const [stack, output, dirs] of [
  ["ifupdown", IFUPDOWN, ["/etc/network/interfaces.d"]],
  ["systemd-networkd", NETWORKD, ["/etc/systemd/network"]],
  ["NetworkManager", NM, ["/etc/NetworkManager/system-connections"]],
] as const) {
  test(`${stack}: two bonds on one host (bond0 and bond0-lan, a slave named lan) converge: planned twice, the second plan is empty`, () => {
    const host = new FakeHost(output, [...dirs]);
    if (stack === "ifupdown")
      host.files.set(
        "/etc/network/interfaces",
        PI_FILE.replace(/allow-hotplug wlan0\n[\s\S]*?\n\n/, "")
          .replace("auto eth0 eth1", "auto eth0")
          .replace(/# Sensor LAN[\s\S]*?\n\n/, ""),
      );
    const tasks = TWO_BONDS.map((b, i) => instance(bond, b, `bond ${i}`));
    const first = planTasks(tasks, [], host.gather(tasks), "pi");
    assert.ok(
      first.every((p) => p.changes.length > 0),
      "each bond writes its own files",
    );
    host.apply(
      first,
      tasks.map((t) => t.args as BondArgs),
    );
    const second = planTasks(tasks, [], host.gather(tasks), "pi");
    assert.deepEqual(
      second.map((p) => p.changes.map((c) => c.summary)),
      [[], []],
      `converged:\n${[...host.files.keys()].join("\n")}`,
    );
    // each bond keeps its files: nothing of one is the other's
    const paths = first.map((p) => new Set(p.changes.filter((c): c is FileChange => c.kind === "file").map((c) => c.path)));
    if (stack !== "ifupdown") assert.ok(![...paths[0]].some((p) => paths[1].has(p)), "no file written by both");
    if (stack === "ifupdown") {
      const text = host.files.get("/etc/network/interfaces")!;
      assert.match(text, /iface bond0 inet static[\s\S]*iface bond0-lan inet static/);
      assert.match(text, /source \/etc\/network\/interfaces\.d\/\*/);
      assert.match(text, /iface wg0 inet static/);
    }
  });
}

test("systemd-networkd: names match exactly: bond0's run leaves bond0-lan's files alone; former slave files (any naming) of bond0 go", () => {
  const host = new FakeHost(NETWORKD, ["/etc/systemd/network"]);
  const lan = instance(bond, TWO_BONDS[1], "lan");
  host.apply(planTasks([lan], [], host.gather([lan]), "pi"), [lan.args as BondArgs]);
  const theirs = [...host.files.keys()].filter((f) => f.startsWith("/etc/systemd/network/"));
  assert.ok(theirs.includes("/etc/systemd/network/10-provision-bond0-lan.network") && theirs.includes("/etc/systemd/network/10-provision-bond0-lan@lan.network"), theirs.join(" "));
  // what an earlier version wrote for bond0's former slave wlan0 (prefix naming)
  host.files.set("/etc/systemd/network/10-provision-bond0-wlan0.network", "# Managed by provision (bond module)\n\n[Match]\nName=wlan0\n\n[Network]\nBond=bond0\n");
  const b0 = instance(bond, TWO_BONDS[0], "b0");
  const [planned] = planTasks([b0], [], host.gather([b0]), "pi");
  const removed = planned.changes.filter((c): c is FileChange => c.kind === "file" && c.after === null).map((c) => c.path);
  assert.deepEqual(removed, ["/etc/systemd/network/10-provision-bond0-wlan0.network"]);
  assert.ok(!planned.changes.some((c) => c.kind === "file" && theirs.includes(c.path)), "nothing of bond0-lan's is touched");
});

test("NetworkManager: a former port goes only when it is this bond's: a profile named alike that is another bond's port stays", () => {
  const dir = "/etc/NetworkManager/system-connections";
  const host = new FakeHost(NM, [dir]);
  const port = (controller: string, ifname: string) => `[connection]\nid=bond0-port-${ifname}\ntype=ethernet\ninterface-name=${ifname}\nmaster=${controller}\nslave-type=bond\n`;
  host.files.set(`${dir}/bond0-port-eth7.nmconnection`, port("bond0", "eth7")); // ours, from when eth7 was a slave
  host.files.set(`${dir}/bond0-port-usb0.nmconnection`, port("bond9", "usb0")); // someone else's bond, named alike
  const b0 = instance(bond, TWO_BONDS[0], "b0");
  const [planned] = planTasks([b0], [], host.gather([b0]), "pi");
  const removed = planned.changes.filter((c): c is FileChange => c.kind === "file" && c.after === null).map((c) => c.path);
  assert.deepEqual(removed, [`${dir}/bond0-port-eth7.nmconnection`]);
});

test("a later task sees a folder as earlier tasks leave it: files created are listed, files removed are not", () => {
  const seen: Record<string, string>[] = [];
  const writer = defineModule({
    name: "writer",
    description: "",
    schema: { type: "object" },
    facts: () => ({ a: { file: "/etc/x.d/a" }, b: { file: "/etc/x.d/b" } }),
    plan: (_: unknown, f: any) => [...fileChange(f.a, "new\n"), ...fileChange(f.b, null)],
  });
  const lister = defineModule({
    name: "lister",
    description: "",
    schema: { type: "object" },
    facts: () => ({ d: { dir: "/etc/x.d" }, other: { dir: "/etc/y.d" } }),
    plan: (_: unknown, f: any) => (seen.push(f.d.entries, f.other.entries), []),
  });
  const host = new FakeHost("", ["/etc/y.d"]);
  host.files.set("/etc/x.d/b", "old\n");
  host.files.set("/etc/x.d/c", "kept\n");
  const tasks = [instance(writer, {}, "w"), instance(lister, {}, "l")];
  planTasks(tasks, [], host.gather(tasks), "pi");
  assert.deepEqual(seen, [{ a: "new\n", c: "kept\n" }, {}]);
  const [alone] = [instance(lister, {}, "l")];
  seen.length = 0;
  planTasks([alone], [], new FakeHost("", []).gather([alone]), "pi");
  assert.deepEqual(seen, [null, null], "a missing folder stays missing");
});

test("gretap_bond and bond on one ifupdown host: each keeps the other's configuration, in either order", () => {
  const tunnels = {
    role: "bond",
    name: "gt0",
    address: "10.99.0.2/24",
    arp_ip_target: "10.99.0.1",
    tunnels: [
      { name: "gre1", local: "10.77.0.11", remote: "10.77.0.1" },
      { name: "gre2", local: "10.78.0.11", remote: "10.78.0.1" },
    ],
  };
  const ip = JSON.stringify([
    { ifname: "eth0", mtu: 1500, addr_info: [{ family: "inet", local: "10.77.0.11" }] },
    { ifname: "eth1", mtu: 1500, addr_info: [{ family: "inet", local: "10.78.0.11" }] },
  ]);
  for (const order of [
    ["bond", "gretap"],
    ["gretap", "bond"],
  ]) {
    const host = new FakeHost(IFUPDOWN, ["/etc/network/interfaces.d"]);
    host.files.set("/etc/network/interfaces", PI_FILE);
    const gather = host.gather.bind(host);
    host.gather = (instances) => {
      const g = gather(instances);
      g.results.set(probeKey({ command: ["ip", "-j", "addr"] }), { code: 0, stdout: ip });
      return g;
    };
    const tasks = order.map((m) =>
      m === "bond"
        ? instance(bond, bondArgs({ slaves: ["eth2", "eth3"], slave_options: {}, primary: "eth2", address: "10.5.0.2/24", gateway: undefined }), "bond")
        : instance(gretap, tunnels, "gretap"),
    );
    const planned = planTasks(tasks, [], host.gather(tasks), "pi");
    const files = new Map(
      planned
        .flatMap((p) => p.changes)
        .filter((c): c is FileChange => c.kind === "file")
        .map((c) => [c.path, c.after]),
    );
    assert.match(files.get("/etc/network/interfaces")!, /^source \/etc\/network\/interfaces\.d\/\*$/m, `${order}: the source line gretap_bond relies on stays`);
    assert.ok(files.get("/etc/network/interfaces.d/provision-gt0"));
  }
  // a gretap device named like a stanza the interfaces file already has: refused
  const host = new FakeHost(IFUPDOWN, ["/etc/network/interfaces.d"]);
  host.files.set("/etc/network/interfaces", PI_FILE);
  const clash = instance(gretap, { ...tunnels, name: "wg0" }, "gretap");
  const g = host.gather([clash]);
  g.results.set(probeKey({ command: ["ip", "-j", "addr"] }), { code: 0, stdout: ip });
  assert.throws(
    () => planTasks([clash], [], g, "pi"),
    (e: Error) => e instanceof HostError && /\/etc\/network\/interfaces:\d+: wg0 is configured here too/.test(e.message),
  );
});

test("kernel_module: /etc/modprobe.d/NAME.conf keeps the lines of others; other options lines lose only the parameters ours sets", () => {
  const a = { name: "bonding", state: "present", persist: true, options: { mode: "active-backup", miimon: 100 } } as const;
  const theirs = "# local tweaks\nalias bond0 bonding\noptions bonding max_bonds=0\nsoftdep bonding pre: tls\noptions bonding miimon=50\n";
  assert.equal(
    optionsContent(a, theirs),
    "# local tweaks\nalias bond0 bonding\noptions bonding mode=active-backup miimon=100\noptions bonding max_bonds=0\nsoftdep bonding pre: tls\n",
  );
  assert.equal(optionsContent(a, "blacklist pcspkr\n"), "blacklist pcspkr\noptions bonding mode=active-backup miimon=100\n");
  assert.equal(optionsContent(a, null), "options bonding mode=active-backup miimon=100\n");
  assert.equal(optionsContent(a, optionsContent(a, theirs)), optionsContent(a, theirs), "stable");
  assert.equal(
    optionsContent(a, "options bonding_extra x=1\n"),
    "options bonding_extra x=1\noptions bonding mode=active-backup miimon=100\n",
    "another module's options are not ours",
  );
});
