import { test } from "node:test";
import assert from "node:assert/strict";
import { parseBondStatus, bondProblems, type BondArgs } from "../../modules/bond/model.js";
import { renderInterfaces } from "../../modules/bond/ifupdown.js";
import bond from "../../modules/bond/index.js";
import { compile } from "../../core/config/schema.js";
import { parseNetworkStack } from "../../modules/network/stack.js";
import type { PlanContext } from "../../core/module-api.js";

const IFUPDOWN_HOST = parseNetworkStack("service networking active\ninstalled ifup yes\ndefault-route eth0\nifupdown-config\nauto eth0\niface eth0 inet dhcp\n");
export const contextOn = (network = IFUPDOWN_HOST): PlanContext => ({
  host: "pi",
  hostFacts: { bootId: "x", bootTime: 1, systemd: true, hostname: "pi" },
  facts: { network_stack: network },
  rebootPending: false,
  rebootReasons: [],
});

const args = (over: Partial<BondArgs> = {}): BondArgs => {
  const a = {
    name: "bond0",
    stack: "auto",
    mode: "active-backup",
    method: "static",
    path: "/etc/network/interfaces",
    backup_path: "/etc/network/interfaces.orig",
    slaves: ["eth0", "eth1"],
    primary: "eth0",
    primary_reselect: "always",
    fail_over_mac: "active",
    miimon: 100,
    updelay: 200,
    downdelay: 0,
    address: "10.77.0.11/24",
    gateway: "10.77.0.1",
    ...over,
  };
  assert.ok(compile(bond.schema)(a), "args must validate");
  return a as BondArgs;
};

// /proc/net/bonding/bond0 as the seed shows it (healthy, eth0 + wlan0).
const HEALTHY = `Ethernet Channel Bonding Driver: v3.7.1 (April 27, 2011)

Bonding Mode: fault-tolerance (active-backup) (fail_over_mac active)
Primary Slave: eth0 (primary_reselect always)
Currently Active Slave: eth0
MII Status: up
MII Polling Interval (ms): 200
Up Delay (ms): 200
Down Delay (ms): 0

Slave Interface: eth0
MII Status: up
Speed: 100 Mbps
Link Failure Count: 1
Permanent HW addr: 00:11:22:33:44:55

Slave Interface: wlan0
MII Status: up
Link Failure Count: 1
Permanent HW addr: aa:bb:cc:dd:ee:ff
`;

// What the lab observed when the seed's rendering was used as is: one slave, no primary.
const ONE_SLAVE = `Bonding Mode: fault-tolerance (active-backup) (fail_over_mac active)
Primary Slave: None
Currently Active Slave: eth1
MII Status: up

Slave Interface: eth1
MII Status: up
Link Failure Count: 0
`;

test("renders the interfaces file that came up right on Debian 12", () => {
  const text = renderInterfaces(args());
  assert.match(text, /^auto eth0\niface eth0 inet manual\n/m);
  assert.match(text, /^auto eth1\niface eth1 inet manual\n/m);
  assert.doesNotMatch(text, /bond-master/, "slaves carry no bond options");
  const bondStanza = text.slice(text.indexOf("auto bond0"));
  for (const line of [
    "iface bond0 inet static",
    "address 10.77.0.11/24",
    "gateway 10.77.0.1",
    "bond-slaves eth0 eth1",
    "bond-mode active-backup",
    "bond-primary eth0",
    "bond-primary-reselect always",
    "bond-fail-over-mac active",
    "bond-miimon 100",
    "bond-updelay 200",
    "bond-downdelay 0",
  ])
    assert.ok(bondStanza.includes(line), `missing "${line}"`);
});

test("mode numbers render as names; arp monitoring replaces miimon", () => {
  const text = renderInterfaces(args({ mode: 1, miimon: undefined, arp_interval: 200, arp_ip_target: ["10.0.0.1", "10.0.0.2"] }));
  assert.match(text, /bond-mode active-backup/);
  assert.match(text, /bond-arp-interval 200/);
  assert.match(text, /bond-arp-ip-target 10.0.0.1,10.0.0.2/);
  assert.doesNotMatch(text, /bond-miimon/);
});

test("schema rejects injection attempts in interface names and addresses", () => {
  const validate = compile(bond.schema);
  assert.equal(validate({ slaves: ['eth0"; touch /tmp/pwned'], address: "10.0.0.2/24" }), false);
  assert.equal(validate({ slaves: ["eth0"], address: '10.0.0.2"; touch /tmp/pwned' }), false);
  assert.equal(validate({ slaves: ["eth0"], mode: "lacp", address: "10.0.0.2/24" }), false);
  assert.equal(validate({ slaves: ["eth0"] }), false, "static needs an address");
  assert.equal(validate({ slaves: ["eth0"], method: "dhcp" }), true);
});

test("parses /proc/net/bonding", () => {
  const s = parseBondStatus(HEALTHY);
  assert.equal(s.mode, "active-backup");
  assert.equal(s.failOverMac, "active");
  assert.equal(s.primary, "eth0");
  assert.equal(s.primaryReselect, "always");
  assert.equal(s.activeSlave, "eth0");
  assert.equal(s.miiStatus, "up");
  assert.deepEqual(
    s.slaves.map((x) => [x.name, x.miiStatus, x.linkFailures]),
    [
      ["eth0", "up", 1],
      ["wlan0", "up", 1],
    ],
  );
});

test("a healthy bond has no problems; the one-slave bond the seed produced is caught", () => {
  const a = args({ slaves: ["eth0", "wlan0"] });
  assert.deepEqual(bondProblems(a, parseBondStatus(HEALTHY)), []);
  const problems = bondProblems(args(), parseBondStatus(ONE_SLAVE));
  assert.ok(
    problems.some((p) => p.includes("slaves are {eth1}, want {eth0, eth1}")),
    problems.join("; "),
  );
  assert.ok(
    problems.some((p) => p.includes("primary slave is None")),
    problems.join("; "),
  );
});

test("an active slave other than an up primary is a problem", () => {
  const failedOver = HEALTHY.replace("Currently Active Slave: eth0", "Currently Active Slave: wlan0");
  assert.deepEqual(bondProblems(args({ slaves: ["eth0", "wlan0"] }), parseBondStatus(failedOver)), ["currently active slave is wlan0, want eth0"]);
});

test("plan saves the original once and then writes the bond", () => {
  const a = args();
  const stock = "auto lo\niface lo inet loopback\n";
  const changes = bond.plan(
    a,
    { interfaces: { path: "/etc/network/interfaces", content: stock, mode: "0644" }, original: { path: "/etc/network/interfaces.orig", content: null } } as never,
    contextOn(),
  );
  assert.deepEqual(
    changes.map((c) => c.kind === "file" && [c.path, c.before, c.reboot ?? false]),
    [
      ["/etc/network/interfaces.orig", null, false],
      ["/etc/network/interfaces", stock, true],
    ],
  );
  const again = bond.plan(
    a,
    { interfaces: { path: "/etc/network/interfaces", content: "old", mode: "0644" }, original: { path: "/etc/network/interfaces.orig", content: stock } } as never,
    contextOn(),
  );
  assert.equal(again.length, 1, "an existing .orig is never overwritten");
  const running = {
    bonding: { path: "/proc/net/bonding/bond0", content: HEALTHY.replace(/wlan0/g, "eth1") },
    address: { code: 0, stdout: '[{"addr_info":[{"local":"10.77.0.11"}]}]' },
  };
  assert.deepEqual(
    bond.plan(
      a,
      { interfaces: { path: "/etc/network/interfaces", content: renderInterfaces(a) }, original: { path: "/etc/network/interfaces.orig", content: stock }, ...running } as never,
      contextOn(),
    ),
    [],
  );
});

test("declares a Wi-Fi PSK as a secret", () => {
  const a = args({ slaves: ["eth0", "wlan0"], slave_options: { wlan0: { ssid: "home", psk: "correct horse battery" } } });
  assert.deepEqual(bond.secrets!(a), ["correct horse battery"]);
});
