import { test } from "node:test";
import assert from "node:assert/strict";
import gretap, { renderConfig, tunnelMtu, sourcesPath, verifyProblems, parseArpMonitor, GRETAP_OVERHEAD, type GretapBondArgs } from "../../modules/gretap_bond.js";
import { compile } from "../../core/config/schema.js";
import { PlanError, type FileState } from "../../core/module-api.js";

const validate = compile(gretap.schema);
const withDefaults = (raw: Record<string, unknown>): GretapBondArgs => {
  const a = structuredClone(raw);
  assert.ok(validate(a), `args must validate: ${JSON.stringify(validate.errors)}`);
  return a as unknown as GretapBondArgs;
};
const piArgs = (over: Record<string, unknown> = {}) =>
  withDefaults({
    address: "192.168.77.1/24",
    arp_ip_target: "192.168.77.2",
    tunnels: [
      { name: "gt1", local: "10.10.1.1", remote: "10.10.1.2" },
      { name: "gt2", local: "10.10.2.1", remote: "10.10.2.2" },
    ],
    ...over,
  });
const hubArgs = (over: Record<string, unknown> = {}) =>
  withDefaults({
    role: "bridge",
    address: "192.168.77.2/24",
    tunnels: [
      { name: "gt1", local: "10.10.1.2", remote: "10.10.1.1" },
      { name: "gt2", local: "10.10.2.2", remote: "10.10.2.1" },
    ],
    ...over,
  });

// `ip -j addr` on the lab's pi1 after boot (IPv4 only, trimmed to the fields the module reads).
const PI_IP = [
  { ifname: "lo", mtu: 65536, operstate: "UNKNOWN", addr_info: [{ family: "inet", local: "127.0.0.1", prefixlen: 8 }] },
  { ifname: "eth0", mtu: 1500, operstate: "UP", addr_info: [{ family: "inet", local: "10.77.0.11", prefixlen: 24 }] },
  { ifname: "eth1", mtu: 1500, operstate: "UP", addr_info: [{ family: "inet", local: "10.10.1.1", prefixlen: 24 }] },
  { ifname: "eth2", mtu: 1500, operstate: "UP", addr_info: [{ family: "inet", local: "10.10.2.1", prefixlen: 24 }] },
  { ifname: "gre0", mtu: 1476, operstate: "DOWN", addr_info: [] },
  { ifname: "gretap0", mtu: 1462, operstate: "DOWN", addr_info: [] },
  { ifname: "erspan0", mtu: 1450, operstate: "DOWN", addr_info: [] },
  { ifname: "gt1", mtu: 1462, master: "bond0", operstate: "UNKNOWN", addr_info: [] },
  { ifname: "gt2", mtu: 1462, master: "bond0", operstate: "UNKNOWN", addr_info: [] },
  { ifname: "bond0", mtu: 1462, operstate: "UP", addr_info: [{ family: "inet", local: "192.168.77.1", prefixlen: 24 }] },
];
const BEFORE_IP = PI_IP.slice(0, 4);
const HUB_IP = [
  { ifname: "eth0", mtu: 1500, operstate: "UP", addr_info: [{ family: "inet", local: "10.77.0.12", prefixlen: 24 }] },
  { ifname: "eth1", mtu: 1500, operstate: "UP", addr_info: [{ family: "inet", local: "10.10.1.2", prefixlen: 24 }] },
  { ifname: "eth2", mtu: 1500, operstate: "UP", addr_info: [{ family: "inet", local: "10.10.2.2", prefixlen: 24 }] },
  { ifname: "gt1", mtu: 1462, master: "br77", operstate: "UNKNOWN", addr_info: [] },
  { ifname: "gt2", mtu: 1462, master: "br77", operstate: "UNKNOWN", addr_info: [] },
  { ifname: "br77", mtu: 1462, operstate: "UP", addr_info: [{ family: "inet", local: "192.168.77.2", prefixlen: 24 }] },
];
const ip = (links: unknown[]) => ({ code: 0, stdout: JSON.stringify(links) });

// /proc/net/bonding/bond0 on the lab's pi1 (Debian 12, 6.1.0-56), hub = bridge: both tunnels tested.
const HEALTHY = `Ethernet Channel Bonding Driver: v6.1.0-56-amd64

Bonding Mode: fault-tolerance (active-backup)
Primary Slave: gt1 (primary_reselect always)
Currently Active Slave: gt1
MII Status: up
MII Polling Interval (ms): 0
Up Delay (ms): 0
Down Delay (ms): 0
Peer Notification Delay (ms): 0
ARP Polling Interval (ms): 200
ARP Missed Max: 3
ARP IP target/s (n.n.n.n form): 192.168.77.2
NS IPv6 target/s (xx::xx form):

Slave Interface: gt1
MII Status: up
Speed: Unknown
Duplex: Unknown
Link Failure Count: 1
Permanent HW addr: 3a:f4:a0:e4:44:b1
Slave queue ID: 0

Slave Interface: gt2
MII Status: up
Speed: Unknown
Duplex: Unknown
Link Failure Count: 1
Permanent HW addr: b2:4c:e3:8d:bf:5b
Slave queue ID: 0
`;
// The same bond 3 s after QMP set_link off on pi1's eth1 (gt1's underlay).
const GT1_CUT = HEALTHY.replace("Currently Active Slave: gt1", "Currently Active Slave: gt2").replace(
  "Slave Interface: gt1\nMII Status: up\nSpeed: Unknown\nDuplex: Unknown\nLink Failure Count: 1",
  "Slave Interface: gt1\nMII Status: down\nSpeed: Unknown\nDuplex: Unknown\nLink Failure Count: 2",
);
const NO_PEER = HEALTHY.replace("Currently Active Slave: gt1", "Currently Active Slave: None").replaceAll("MII Status: up", "MII Status: down");

const file = (path: string, content: string | null): FileState => ({ path, content });
const DEBIAN_INTERFACES = "source /etc/network/interfaces.d/*\n\nauto lo\niface lo inet loopback\n";
const facts = (
  a: GretapBondArgs,
  links: unknown[] = BEFORE_IP,
  config: string | null = null,
  interfaces = DEBIAN_INTERFACES,
  bonding: string | null = config === null ? null : HEALTHY,
) => ({
  ip: ip(links),
  interfaces: file("/etc/network/interfaces", interfaces),
  interfacesDir: { path: "/etc/network/interfaces.d", entries: {} },
  config: file(`/etc/network/interfaces.d/provision-${a.role === "bridge" ? "br77" : "bond0"}`, config),
  bonding: file("/proc/net/bonding/bond0", bonding),
  arpValidate: file("/sys/class/net/bond0/bonding/arp_validate", bonding === null ? null : "all 3\n"),
  stp: file("/sys/class/net/br77/bridge/stp_state", null),
});
const context = { host: "pi1", hostFacts: { bootId: "x", bootTime: 1, systemd: true, hostname: "pi1" }, facts: {}, rebootPending: false, rebootReasons: [] };
const plan = (a: GretapBondArgs, f = facts(a)) => gretap.plan(a, f, context);
const planError = (a: GretapBondArgs, f: ReturnType<typeof facts>, re: RegExp) =>
  assert.throws(
    () => plan(a, f),
    (e: unknown) => e instanceof PlanError && re.test(e.message),
  );

test("MTU: the smallest underlay minus 38 (20 IPv4 + 4 GRE + 14 inner Ethernet): 1462 over 1500", () => {
  assert.equal(GRETAP_OVERHEAD, 38);
  const nic = (mtu: number) => ({ ifname: "x", mtu, addresses: [] });
  assert.equal(tunnelMtu([nic(1500), nic(1500)]), 1462);
  assert.equal(tunnelMtu([nic(1500), nic(1492)]), 1454, "a PPPoE underlay lowers it for the whole bond");
  const [change] = plan(piArgs(), facts(piArgs(), [BEFORE_IP[0], BEFORE_IP[1], { ...BEFORE_IP[2], mtu: 1400 }, BEFORE_IP[3]]));
  assert.match(change.kind === "file" ? change.after! : "", /ip link set bond0 mtu 1362$/m);
});

test("renders the Pi's bond: tunnels, options, then slaves, primary and MTU after enslaving", () => {
  const text = renderConfig(piArgs(), 1462);
  const body = text
    .slice(text.indexOf("auto bond0"))
    .split("\n")
    .map((l) => l.trim());
  assert.deepEqual(body, [
    "auto bond0",
    "iface bond0 inet static",
    "address 192.168.77.1/24",
    "pre-up ip link add gt1 type gretap local 10.10.1.1 remote 10.10.1.2",
    "pre-up ip link add gt2 type gretap local 10.10.2.1 remote 10.10.2.2",
    "pre-up ip link show bond0 >/dev/null 2>&1 || ip link add bond0 type bond",
    "pre-up ip link set bond0 type bond mode active-backup arp_interval 200 arp_missed_max 3 arp_ip_target 192.168.77.2 arp_validate all",
    "pre-up ip link set gt1 master bond0",
    "pre-up ip link set gt2 master bond0",
    "pre-up ip link set bond0 type bond primary gt1",
    "pre-up ip link set bond0 mtu 1462",
    "post-down ip link del bond0",
    "post-down ip link del gt1",
    "post-down ip link del gt2",
    "",
  ]);
  assert.doesNotMatch(text, /miimon/, "MII monitoring cannot see a tunnel's far end");
  const custom = renderConfig(
    piArgs({
      name: "gtb",
      primary: "gt2",
      primary_reselect: "failure",
      arp_interval: 100,
      arp_missed_max: 5,
      tunnels: [
        { name: "gt1", local: "10.10.1.1", remote: "10.10.1.2", dev: "eth1" },
        { name: "gt2", local: "10.10.2.1", remote: "10.10.2.2" },
      ],
    }),
    1462,
  );
  assert.match(custom, /pre-up ip link add gt1 type gretap local 10\.10\.1\.1 remote 10\.10\.1\.2 dev eth1$/m);
  assert.match(custom, /arp_interval 100 arp_missed_max 5 /);
  assert.match(custom, /primary gt2 primary_reselect failure$/m);
});

test("renders the hub's bridge: no STP, ports brought up, MTU set", () => {
  const text = renderConfig(hubArgs(), 1462);
  const body = text
    .slice(text.indexOf("auto br77"))
    .split("\n")
    .map((l) => l.trim());
  assert.deepEqual(body, [
    "auto br77",
    "iface br77 inet static",
    "address 192.168.77.2/24",
    "pre-up ip link add gt1 type gretap local 10.10.1.2 remote 10.10.1.1",
    "pre-up ip link add gt2 type gretap local 10.10.2.2 remote 10.10.2.1",
    "pre-up ip link add br77 type bridge stp_state 0 forward_delay 0",
    "pre-up ip link set gt1 master br77",
    "pre-up ip link set gt2 master br77",
    "pre-up ip link set br77 mtu 1462",
    "pre-up ip link set gt1 up",
    "pre-up ip link set gt2 up",
    "post-down ip link del br77",
    "post-down ip link del gt1",
    "post-down ip link del gt2",
    "",
  ]);
});

test("plan: one file change (reboot, 0644) in interfaces.d; none when it is already there", () => {
  const a = piArgs();
  const [change, ...rest] = plan(a);
  assert.equal(rest.length, 0);
  assert.ok(change.kind === "file");
  assert.equal(change.path, "/etc/network/interfaces.d/provision-bond0");
  assert.equal(change.reboot, true);
  assert.equal(change.mode, "0644");
  assert.equal(change.address, undefined, "management does not move onto the tunnels");
  assert.match(change.summary, /MTU 1462/);
  assert.deepEqual(plan(a, facts(a, PI_IP, change.after)), [], "second run: no changes");
  const [drift] = plan(a, facts(a, PI_IP, change.after, DEBIAN_INTERFACES, HEALTHY.replace(/\nSlave Interface: gt2[\s\S]*$/, "\n")));
  assert.equal(drift?.kind, "pending", "an audit reads the kernel: a tunnel missing from the running bond is drift");
  assert.match(drift.summary, /slaves are \{gt1\}, want \{gt1, gt2\}/);
  const h = hubArgs();
  const [hub] = plan(h, facts(h, HUB_IP.slice(0, 3)));
  assert.ok(hub.kind === "file" && hub.path === "/etc/network/interfaces.d/provision-br77");
});

test("PlanErrors: local not on the host, remote on the host, no source line, taken names", () => {
  const a = piArgs();
  planError(
    piArgs({
      tunnels: [
        { name: "gt1", local: "10.10.9.1", remote: "10.10.1.2" },
        { name: "gt2", local: "10.10.2.1", remote: "10.10.2.2" },
      ],
    }),
    facts(a),
    /tunnels\.gt1\.local: 10\.10\.9\.1 is not an address of this host \(it has .*10\.10\.1\.1 on eth1/,
  );
  // the seed's typo on fo-exit: local and remote both the gateway's own address
  planError(
    piArgs({
      tunnels: [
        { name: "gt1", local: "10.10.1.1", remote: "10.10.1.2" },
        { name: "gt2", local: "10.10.2.1", remote: "10.10.1.1" },
      ],
    }),
    facts(a),
    /tunnels\.gt2\.remote: 10\.10\.1\.1 is an address of this host \(on eth1\)/,
  );
  planError(
    a,
    facts(a, BEFORE_IP, null, "auto lo\niface lo inet loopback\n"),
    /does not read \/etc\/network\/interfaces\.d\/provision-bond0\. Add the line "source \/etc\/network\/interfaces\.d\/\*"/,
  );
  planError(
    piArgs({
      tunnels: [
        { name: "gt1", local: "10.10.1.1", remote: "10.10.1.2", dev: "eth2" },
        { name: "gt2", local: "10.10.2.1", remote: "10.10.2.2" },
      ],
    }),
    facts(a),
    /local 10\.10\.1\.1 is on eth1, not on dev eth2/,
  );
  const withBond = [...BEFORE_IP, { ifname: "bond0", mtu: 1500, operstate: "UP", addr_info: [{ family: "inet", local: "10.77.0.11", prefixlen: 24 }] }];
  planError(a, facts(a, withBond), /bond0 already exists with address 10\.77\.0\.11, configured outside/);
});

test("PlanErrors from the args: arp_validate none (the seed's ping-pong), bad target, duplicates", () => {
  const f = facts(piArgs());
  planError(piArgs({ arp_validate: "none" }), f, /arp_validate: none is what made the seed's bond ping-pong.*Use all/);
  planError(piArgs({ arp_ip_target: "192.168.77.1" }), f, /arp_ip_target: 192\.168\.77\.1 is the bond's own address/);
  planError(piArgs({ arp_ip_target: "10.10.1.2" }), f, /arp_ip_target: 10\.10\.1\.2 is outside 192\.168\.77\.1\/24/);
  planError(piArgs({ primary: "gt9" }), f, /primary: gt9 is not one of the tunnels/);
  planError(
    piArgs({
      tunnels: [
        { name: "gt1", local: "10.10.1.1", remote: "10.10.1.2" },
        { name: "gt1", local: "10.10.2.1", remote: "10.10.2.2" },
      ],
    }),
    f,
    /names must be distinct/,
  );
  planError(
    piArgs({
      tunnels: [
        { name: "gt1", local: "10.10.1.1", remote: "10.10.1.2" },
        { name: "gt2", local: "10.10.1.1", remote: "10.10.1.2" },
      ],
    }),
    f,
    /same local and remote/,
  );
  planError(hubArgs({ primary: "gt1" }), facts(hubArgs(), HUB_IP.slice(0, 3)), /primary: only for role bond/);
  assert.equal(validate({ address: "192.168.77.1/24", tunnels: piArgs().tunnels }), false, "role bond needs arp_ip_target");
  assert.equal(validate({ ...piArgs(), tunnels: [piArgs().tunnels[0]] }), false, "one tunnel is not redundancy");
});

test("sourcesPath: Debian's glob, source-directory, and files that do not read interfaces.d", () => {
  const p = "/etc/network/interfaces.d/provision-bond0";
  assert.ok(sourcesPath("source /etc/network/interfaces.d/*\n", p));
  assert.ok(sourcesPath("  source-directory /etc/network/interfaces.d\n", p));
  assert.ok(sourcesPath("source /etc/network/interfaces.d/provision-bond0\n", p));
  assert.ok(!sourcesPath("# source /etc/network/interfaces.d/*\n", p));
  assert.ok(!sourcesPath("source /etc/network/other.d/*\n", p));
  assert.ok(!sourcesPath(null, p));
});

test("parseArpMonitor reads what parseBondStatus does not", () => {
  assert.deepEqual(parseArpMonitor(HEALTHY), { interval: 200, missedMax: 3, targets: ["192.168.77.2"] });
});

const verifyPi = (a: GretapBondArgs, bonding: string | null, over: Record<string, unknown> = {}) =>
  verifyProblems(a, {
    ping: { code: 0, stdout: "" },
    ip: ip(PI_IP),
    bonding: file("/proc/net/bonding/bond0", bonding),
    arpValidate: file("/sys/class/net/bond0/bonding/arp_validate", "all 3\n"),
    ...over,
  });

test("verify (Pi, hub = bridge): healthy lab text passes; a cut tunnel, no peer, a wrong target fail", () => {
  const a = piArgs();
  assert.deepEqual(verifyPi(a, HEALTHY), []);
  assert.deepEqual(verifyPi(a, GT1_CUT), ["tunnel gt1 MII status is down (no redundancy)", "currently active slave is gt2, want the primary gt1"]);
  const bad = piArgs({ arp_ip_target: "192.168.77.9" });
  const noPeer = verifyPi(bad, NO_PEER.replace("192.168.77.2", "192.168.77.9"), { ping: { code: 1, stdout: "" } });
  assert.ok(noPeer.includes("no active slave: 192.168.77.9 does not answer ARP over any tunnel"), noPeer.join("\n"));
  assert.ok(noPeer.includes("192.168.77.9 does not answer ping through bond0"));
  assert.deepEqual(verifyPi(a, HEALTHY, { arpValidate: file("x", "none 0\n") }), ["arp_validate is none, want all"]);
  assert.deepEqual(verifyPi(piArgs({ arp_interval: 100 }), HEALTHY), ["ARP polling interval is 200 ms, want 100"]);
  assert.deepEqual(verifyPi(a, HEALTHY.replace("ARP IP target/s (n.n.n.n form): 192.168.77.2", "ARP IP target/s (n.n.n.n form):")), ["ARP targets are {}, want {192.168.77.2}"]);
  assert.deepEqual(verifyPi(a, null), ["bond0 is not a bond (no /proc/net/bonding/bond0)"]);
  const mtu1500 = PI_IP.map((l) => (l.ifname === "bond0" ? { ...l, mtu: 1500 } : l));
  assert.deepEqual(verifyPi(a, HEALTHY, { ip: ip(mtu1500) }), ["bond0 MTU is 1500, want 1462 (underlay MTU − 38)"]);
});

test("verify (hub = bond): backups read down by design, so only the active slave counts", () => {
  const a = piArgs({ hub: "bond" });
  assert.deepEqual(verifyPi(a, GT1_CUT), []);
  assert.deepEqual(verifyPi(a, NO_PEER, { ping: { code: 1, stdout: "" } }).length, 2);
});

test("verify (hub): bridge with both tunnels as ports, MTU, address, no STP", () => {
  const h = hubArgs();
  const stp = (c: string | null) => file("/sys/class/net/br77/bridge/stp_state", c);
  assert.deepEqual(verifyProblems(h, { ip: ip(HUB_IP), stp: stp("0\n") }), []);
  assert.deepEqual(verifyProblems(h, { ip: ip(HUB_IP.filter((l) => l.ifname !== "gt2")), stp: stp("0\n") }), ["br77 ports are {gt1}, want {gt1, gt2}"]);
  assert.deepEqual(verifyProblems(h, { ip: ip(HUB_IP), stp: stp(null) }), ["br77 is not a bridge"]);
  assert.deepEqual(verifyProblems(h, { ip: ip(HUB_IP.slice(0, 3)), stp: stp(null) }), ["br77 does not exist"]);
});
