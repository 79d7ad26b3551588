// The bond on every stack: the stack fact, one renderer per stack, keyfiles compared by
// meaning, competing profiles taken out of the way, Wi-Fi secrets only in 0600 files.
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import bond from "../../modules/bond/index.js";
import type { BondArgs } from "../../modules/bond/model.js";
import { profileUuid } from "../../modules/bond/networkmanager.js";
import { describeStack, networkStackFact, parseNetworkStack } from "../../modules/network/stack.js";
import { parseKeyfile, renderKeyfile, sameMeaning, withKey } from "../../modules/network/keyfile.js";
import { compile } from "../../core/config/schema.js";
import { masker } from "../../core/config/secrets.js";
import { PlanError, type Change, type FileChange, type PlanContext } from "../../core/module-api.js";

const PSK = "lab-passphrase-123";
const NM_OUTPUT = `service NetworkManager active
service systemd-networkd inactive
service networking inactive
service dhcpcd inactive
installed ifup no
installed NetworkManager yes
installed dhcpcd no
nm-version 1.42.4
nm-device eth0:ethernet:connected
nm-device wlan0:wifi:disconnected
nm-device lo:loopback:connected (externally)
nm-device airlink:ethernet:unmanaged
default-route eth0
ifupdown-config
`;
const NETWORKD_OUTPUT = `service NetworkManager inactive
service systemd-networkd active
service networking inactive
service dhcpcd inactive
installed ifup no
installed NetworkManager no
installed dhcpcd no
networkd-link 1 lo loopback carrier unmanaged
networkd-link 2 eth0 ether routable configured
networkd-link 3 wlan0 wlan off unmanaged
default-route eth0
ifupdown-config
`;
const IFUPDOWN_OUTPUT = `service NetworkManager inactive
service systemd-networkd inactive
service networking active
service dhcpcd inactive
installed ifup yes
installed NetworkManager no
installed dhcpcd yes
default-route eth0
ifupdown-config
source /etc/network/interfaces.d/*
auto lo
iface lo inet loopback
auto eth0
iface eth0 inet static
\taddress 10.77.0.11/24
`;

const stackOf = (output: string) => parseNetworkStack(output);
const context = (output: string, over: Partial<PlanContext> = {}): PlanContext => ({
  host: "pi1",
  hostFacts: { bootId: "b", bootTime: 1, systemd: true, hostname: "pi1" },
  facts: { network_stack: stackOf(output) },
  rebootPending: false,
  rebootReasons: [],
  ...over,
});

function args(over: Record<string, unknown> = {}): BondArgs {
  const a = {
    slaves: ["eth0", "wlan0"],
    primary: "eth0",
    primary_reselect: "always",
    miimon: 100,
    updelay: 200,
    downdelay: 0,
    address: "10.77.0.11/24",
    gateway: "10.77.0.1",
    slave_options: { wlan0: { ssid: "provision-lab", psk: PSK, country: "DE" } },
    ...over,
  };
  assert.ok(compile(bond.schema)(a), "args must validate");
  return a as unknown as BondArgs;
}

/** Facts of a host with nothing of ours yet; `over` replaces single probes. */
function facts(a: BondArgs, over: Record<string, unknown> = {}): never {
  const empty = Object.fromEntries(
    Object.entries(bond.facts(a)).map(([name, p]) => {
      const probe = p as { file?: string; dir?: string };
      return [name, probe.file ? { path: probe.file, content: null } : probe.dir ? { path: probe.dir, entries: null } : { code: 1, stdout: "" }];
    }),
  );
  return { ...empty, "phy:wlan0": { path: "/sys/class/net/wlan0/phy80211/name", content: "phy0\n" }, ...over } as never;
}

const files = (changes: Change[]) => changes.filter((c): c is FileChange => c.kind === "file");
const byPath = (changes: Change[], path: string) => files(changes).find((c) => c.path === path);

test("the network stack fact: NetworkManager, systemd-networkd and ifupdown hosts, and who owns each interface", () => {
  const nm = stackOf(NM_OUTPUT);
  assert.equal(nm.stack, "networkmanager");
  assert.equal(nm.nmVersion, "1.42.4");
  assert.deepEqual(nm.owners, { eth0: "networkmanager", wlan0: "networkmanager" }, "unmanaged and external devices are nobody's");
  assert.equal(describeStack(nm), "NetworkManager 1.42.4 (eth0, wlan0)");
  const networkd = stackOf(NETWORKD_OUTPUT);
  assert.equal(networkd.stack, "networkd");
  assert.deepEqual(networkd.owners, { eth0: "networkd" });
  const ifupdown = stackOf(IFUPDOWN_OUTPUT);
  assert.equal(ifupdown.stack, "ifupdown");
  assert.deepEqual(ifupdown.owners, { eth0: "ifupdown" });
  assert.equal(networkStackFact.value(ifupdown), "ifupdown");
  const mixed = stackOf(IFUPDOWN_OUTPUT.replace("service NetworkManager inactive", "service NetworkManager active") + "");
  assert.equal(mixed.stack, "ifupdown", "the stack that runs the default route's interface wins");
  assert.match(describeStack(mixed), /NetworkManager also running/);
});

test("stack.sh runs in a real shell and reports this machine without failing", () => {
  const out = execFileSync("sh", ["-c", (networkStackFact.probe as { command: string[] }).command[2], "stack"], { encoding: "utf8" });
  assert.match(out, /^service NetworkManager \S+$/m);
  assert.match(out, /^installed ifup (yes|no)$/m);
  assert.match(out, /\nifupdown-config\n/);
  assert.ok(STACK_OK.includes(stackOf(out).stack));
});
const STACK_OK = ["ifupdown", "networkmanager", "networkd", "dhcpcd", "none"];

test("NetworkManager: a bond profile and a port profile per slave, 0600, with names NM 1.42 and 1.52 both read", () => {
  const a = args();
  const changes = bond.plan(a, facts(a), context(NM_OUTPUT));
  const dir = "/etc/NetworkManager/system-connections";
  const bondFile = byPath(changes, `${dir}/bond0.nmconnection`)!;
  const eth0 = byPath(changes, `${dir}/bond0-port-eth0.nmconnection`)!;
  const wlan0 = byPath(changes, `${dir}/bond0-port-wlan0.nmconnection`)!;
  for (const f of [bondFile, eth0, wlan0]) {
    assert.equal(f.mode, "0600");
    assert.equal(f.reboot, true);
  }
  const b = parseKeyfile(bondFile.after!);
  assert.deepEqual(
    b.bond,
    { mode: "active-backup", miimon: "100", primary: "eth0", primary_reselect: "always", fail_over_mac: "active", updelay: "200", downdelay: "0" },
    "fail_over_mac active by default with a Wi-Fi slave",
  );
  assert.equal(b.connection["autoconnect-slaves"], "1");
  assert.equal(b.ipv4.address1, "10.77.0.11/24,10.77.0.1");
  assert.equal(bondFile.address, "10.77.0.11", "the controller confirms at the bond's address");
  const port = parseKeyfile(eth0.after!);
  assert.equal(port.connection.master, "bond0");
  assert.equal(port.connection["slave-type"], "bond");
  assert.equal(port.connection.uuid, profileUuid("bond0-port-eth0"));
  const w = parseKeyfile(wlan0.after!);
  assert.equal(w.connection.type, "wifi");
  assert.equal(w.wifi.ssid, "provision-lab");
  assert.deepEqual(w["wifi-security"], { "key-mgmt": "wpa-psk", psk: PSK });
  assert.ok(byPath(changes, "/etc/modprobe.d/provision-wifi-country.conf")?.after?.includes("ieee80211_regdom=DE"));
  assert.ok(!files(changes).some((c) => c.path.startsWith("/etc/network/")), "nothing for ifupdown on a NetworkManager host");
});

test("NetworkManager: a second plan over what NM rewrote (1.52 names, other order) changes nothing", () => {
  const a = args();
  const first = bond.plan(a, facts(a), context(NM_OUTPUT));
  const entries = Object.fromEntries(
    files(first)
      .filter((c) => c.path.startsWith("/etc/NetworkManager/"))
      .map((c) => [c.path.split("/").pop()!, c.after!]),
  );
  const rewritten = Object.fromEntries(
    Object.entries(entries).map(([name, text]) => [
      name,
      text
        .replace("master=bond0", "controller=bond0")
        .replace("slave-type=bond", "port-type=bond")
        .replace("autoconnect-slaves=1", "autoconnect-ports=1")
        .replace("[ethernet]", "[ethernet]\n\n[proxy]")
        .replace("autoconnect=true", "autoconnect=yes"),
    ]),
  );
  assert.notDeepEqual(rewritten, entries);
  const running = {
    nmProfiles: { path: "/etc/NetworkManager/system-connections", entries: rewritten },
    regdom: { path: "/etc/modprobe.d/provision-wifi-country.conf", content: byPath(first, "/etc/modprobe.d/provision-wifi-country.conf")!.after },
    bonding: { path: "/proc/net/bonding/bond0", content: HEALTHY },
    address: { code: 0, stdout: '[{"addr_info":[{"local":"10.77.0.11"}]}]' },
  };
  assert.deepEqual(bond.plan(a, facts(a, running), context(NM_OUTPUT)), []);

  const degraded = {
    ...running,
    bonding: {
      path: "/proc/net/bonding/bond0",
      content: HEALTHY.replace(/Slave Interface: eth0[\s\S]*?(?=Slave Interface: wlan0)/, "").replace("Currently Active Slave: eth0", "Currently Active Slave: wlan0"),
    },
  };
  const [drift] = bond.plan(a, facts(a, degraded), context(NM_OUTPUT));
  assert.equal(drift.kind, "pending", "the kernel's view is audited: a bond that lost a slave live is drift");
  assert.match(drift.summary, /slaves are \{wlan0\}, want \{eth0, wlan0\}/);
});

test("NetworkManager: competing profiles are turned off (backed up like any file), never left competing or lost", () => {
  const a = args();
  const preconfigured =
    "[connection]\nid=preconfigured\nuuid=1\ntype=wifi\n[wifi]\nmode=infrastructure\nssid=provision-lab\n[wifi-security]\nkey-mgmt=wpa-psk\npsk=other-secret-1\n[ipv4]\nmethod=auto\n";
  const wired = "[connection]\nid=Wired eth0\ntype=ethernet\ninterface-name=eth0\n\n[ipv4]\nmethod=manual\naddress1=10.77.0.11/24,10.77.0.1\n";
  const unrelated = "[connection]\nid=usb\ntype=ethernet\ninterface-name=usb0\n";
  const changes = bond.plan(
    a,
    facts(a, {
      nmProfiles: {
        path: "/etc/NetworkManager/system-connections",
        entries: { "preconfigured.nmconnection": preconfigured, "eth0.nmconnection": wired, "usb0.nmconnection": unrelated },
      },
    }),
    context(NM_OUTPUT),
  );
  const pre = byPath(changes, "/etc/NetworkManager/system-connections/preconfigured.nmconnection")!;
  assert.equal(parseKeyfile(pre.after!).connection.autoconnect, "false");
  assert.equal(pre.before, preconfigured, "the original is what gets backed up");
  assert.equal(parseKeyfile(byPath(changes, "/etc/NetworkManager/system-connections/eth0.nmconnection")!.after!).connection.autoconnect, "false");
  assert.equal(byPath(changes, "/etc/NetworkManager/system-connections/usb0.nmconnection"), undefined, "a profile for another device is left alone");
  assert.match(masker([])(pre.after!), /psk=\*{8}/, "the PSK of the competing profile is masked in its diff");
});

test("NetworkManager on Raspberry Pi OS Trixie: a profile netplan generates under /run has its netplan source moved aside", () => {
  const a = args();
  const generated = "[connection]\nid=netplan-eth0\nuuid=abc\ntype=ethernet\ninterface-name=eth0\n";
  const yaml = "network:\n  version: 2\n  ethernets:\n    eth0:\n      dhcp4: true\n";
  const changes = bond.plan(
    a,
    facts(a, {
      nmRunProfiles: { path: "/run/NetworkManager/system-connections", entries: { "netplan-eth0.nmconnection": generated } },
      netplan: { path: "/etc/netplan", entries: { "50-cloud-init.yaml": yaml, "00-network-manager-all.yaml": "network: {version: 2, renderer: NetworkManager}\n" } },
    }),
    context(NM_OUTPUT),
  );
  assert.equal(byPath(changes, "/etc/netplan/50-cloud-init.yaml")?.after, null, "moved aside");
  assert.equal(byPath(changes, "/etc/netplan/50-cloud-init.yaml.provision-disabled")?.after, yaml, "a copy is kept");
  assert.equal(byPath(changes, "/etc/netplan/00-network-manager-all.yaml"), undefined);
  assert.throws(
    () => bond.plan(a, facts(a, { nmRunProfiles: { path: "/run/NetworkManager/system-connections", entries: { "netplan-eth0.nmconnection": generated } } }), context(NM_OUTPUT)),
    (e: Error) => e instanceof PlanError && /no file in \/etc\/netplan names it/.test(e.message),
  );
  const defaultWired = "[connection]\nid=Wired connection 2\nuuid=x\ntype=ethernet\ninterface-name=eth0\n\n[.nmmeta]\nnm-generated=true\n";
  assert.ok(
    !files(
      bond.plan(
        a,
        facts(a, { nmRunProfiles: { path: "/run/NetworkManager/system-connections", entries: { "Wired connection 2.nmconnection": defaultWired } } }),
        context(NM_OUTPUT),
      ),
    ).some((c) => c.path.startsWith("/run/")),
    "NetworkManager's own default wired profile lasts only until the reboot and is not made again for a device with a profile",
  );
});

test("keyfiles: rendering escapes, reading, setting one key keeps the rest byte for byte", () => {
  const text = renderKeyfile({ connection: { id: "x" }, wifi: { ssid: " lead\\slash" } });
  assert.match(text, /^ssid=\\slead\\\\slash$/m, "GLib's escapes");
  assert.equal(parseKeyfile(text).wifi.ssid, " lead\\slash");
  const original = "# comment\n[connection]\nid=eth0\nautoconnect=true\n\n[ipv4]\nmethod=auto\n";
  assert.equal(withKey(original, "connection", "autoconnect", "false"), original.replace("autoconnect=true", "autoconnect=false"));
  assert.equal(withKey("[connection]\nid=a\n\n[ipv4]\nmethod=auto\n", "connection", "autoconnect", "false"), "[connection]\nid=a\nautoconnect=false\n\n[ipv4]\nmethod=auto\n");
  assert.ok(sameMeaning("[802-3-ethernet]\nmtu=1500\n[connection]\nid=a\n", "[connection]\nid=a\n\n[ethernet]\nmtu=1500\n"));
  assert.ok(!sameMeaning("[connection]\nid=a\nautoconnect=false\n", "[connection]\nid=a\nautoconnect=true\n"));
});

test("systemd-networkd: a .netdev with MIIMonitorSec always set, PrimarySlave on the primary, wpa_supplicant@wlan0 with a 0600 file", () => {
  const a = args();
  const existing = "[Match]\nName=eth0\n\n[Network]\nAddress=10.77.0.11/24\nGateway=10.77.0.1\n";
  const changes = bond.plan(a, facts(a, { networkd: { path: "/etc/systemd/network", entries: { "20-eth0.network": existing } } }), context(NETWORKD_OUTPUT));
  const netdev = byPath(changes, "/etc/systemd/network/10-provision-bond0.netdev")!.after!;
  for (const line of ["Kind=bond", "Mode=active-backup", "MIIMonitorSec=100ms", "PrimaryReselectPolicy=always", "FailOverMACPolicy=active", "UpDelaySec=200ms", "DownDelaySec=0ms"])
    assert.ok(netdev.includes(`${line}\n`), `netdev has ${line}`);
  assert.match(byPath(changes, "/etc/systemd/network/10-provision-bond0@eth0.network")!.after!, /Bond=bond0\nPrimarySlave=true/);
  assert.doesNotMatch(byPath(changes, "/etc/systemd/network/10-provision-bond0@wlan0.network")!.after!, /PrimarySlave/);
  assert.match(byPath(changes, "/etc/systemd/network/10-provision-bond0.network")!.after!, /Address=10.77.0.11\/24\nGateway=10.77.0.1/);
  assert.equal(byPath(changes, "/etc/systemd/network/20-eth0.network")?.after, null, "the competing .network is moved aside");
  assert.equal(byPath(changes, "/etc/systemd/network/20-eth0.network.provision-disabled")?.after, existing);
  const wpa = byPath(changes, "/etc/wpa_supplicant/wpa_supplicant-wlan0.conf")!;
  assert.equal(wpa.mode, "0600");
  assert.match(wpa.after!, /ssid="provision-lab"\n\tkey_mgmt=WPA-PSK\n\tpsk="lab-passphrase-123"/);
  assert.match(wpa.after!, /^country=DE$/m);
  assert.ok(changes.some((c) => c.kind === "command" && c.argv.join(" ") === "systemctl enable wpa_supplicant@wlan0.service"));
  assert.ok(!masker([])(wpa.after!).includes(PSK), "a wpa_supplicant file's secret lines are masked even undeclared");
});

test("a slave taken out of the list loses the profile or .network an earlier run wrote for it", () => {
  const a = args({ slaves: ["eth0", "eth1"], slave_options: {} });
  const nm = bond.plan(
    a,
    facts(a, {
      "phy:wlan0": { path: "", content: null },
      nmProfiles: {
        path: "/etc/NetworkManager/system-connections",
        entries: { "bond0-port-wlan0.nmconnection": "[connection]\nid=bond0-port-wlan0\ntype=wifi\ninterface-name=wlan0\nmaster=bond0\nslave-type=bond\n" },
      },
    }),
    context(NM_OUTPUT),
  );
  assert.equal(byPath(nm, "/etc/NetworkManager/system-connections/bond0-port-wlan0.nmconnection")?.after, null);
  const nd = bond.plan(
    a,
    facts(a, {
      "phy:wlan0": { path: "", content: null },
      networkd: { path: "/etc/systemd/network", entries: { "10-provision-bond0-wlan0.network": "[Match]\nName=wlan0\n\n[Network]\nBond=bond0\n" } },
    }),
    context(NETWORKD_OUTPUT),
  );
  assert.equal(byPath(nd, "/etc/systemd/network/10-provision-bond0-wlan0.network")?.after, null);
  assert.equal(byPath(nd, "/etc/systemd/network/10-provision-bond0-wlan0.network.provision-disabled"), undefined, "our own file is removed, not moved aside");
});

test("ifupdown: the PSK goes to a 0600 wpa_supplicant file the interfaces file only names", () => {
  const a = args();
  const changes = bond.plan(a, facts(a, { interfaces: { path: "/etc/network/interfaces", content: "auto lo\n", mode: "0644" } }), context(IFUPDOWN_OUTPUT));
  const interfaces = byPath(changes, "/etc/network/interfaces")!.after!;
  assert.match(interfaces, /iface wlan0 inet manual\n    wpa-conf \/etc\/wpa_supplicant\/provision-wlan0.conf\n/);
  assert.ok(!interfaces.includes(PSK), "never wpa-psk in the world-readable interfaces file");
  assert.equal(byPath(changes, "/etc/wpa_supplicant/provision-wlan0.conf")!.mode, "0600");
});

test("plan errors name the stack or the slave before anything is written", () => {
  const a = args();
  const dhcpcdOnly = NM_OUTPUT.replace("service NetworkManager active", "service NetworkManager inactive").replace("service dhcpcd inactive", "service dhcpcd active");
  assert.throws(() => bond.plan(a, facts(a), context(dhcpcdOnly)), /run by dhcpcd; the bond module renders for ifupdown, NetworkManager and systemd-networkd/);
  assert.throws(() => bond.plan(args({ mode: "balance-rr" }), facts(a), context(NM_OUTPUT)), /wlan0 is Wi-Fi: a Wi-Fi station can only be a slave of an active-backup bond/);
  const noWifi = args({ slave_options: {} });
  assert.throws(() => bond.plan(noWifi, facts(noWifi), context(NM_OUTPUT)), /wlan0 is a Wi-Fi interface: give its network in slave_options.wlan0 \(ssid, psk, country\)/);
  const foreign = IFUPDOWN_OUTPUT.replace("service NetworkManager inactive", "service NetworkManager active") + "";
  const onIfupdown = args({ stack: "networkmanager" });
  assert.throws(() => bond.plan(onIfupdown, facts(onIfupdown), context(foreign)), /eth0 is managed by ifupdown, but the bond is rendered for NetworkManager/);
});

test("the PSK schema: 8-63 characters or 64 hex digits", () => {
  const validate = compile(bond.schema);
  const withPsk = (psk: string) => validate({ slaves: ["eth0", "wlan0"], address: "10.0.0.2/24", slave_options: { wlan0: { ssid: "x", psk } } });
  assert.equal(withPsk("short"), false);
  assert.equal(withPsk("a".repeat(64)), true, "64 hex digits");
  assert.equal(withPsk("z".repeat(64)), false);
  assert.equal(withPsk("line\nbreak-and-more"), false);
  assert.equal(validate({ slaves: ["eth0", "wlan0"], address: "10.0.0.2/24", slave_options: { wlan0: { ssid: "x" } } }), false, "an ssid needs a psk");
});

test("settle_timeout bounds the verification's wait for the slaves and for Wi-Fi authorization (default 90 s)", () => {
  const probes = (over: Record<string, unknown>) => bond.verify!.probes(args(over)) as Record<string, { command: string[] }>;
  assert.equal(compile(bond.schema)({ slaves: ["eth0"], address: "10.0.0.2/24", settle_timeout: 0 }), false, "at least 1 s");
  assert.deepEqual(probes({}).bonding.command.slice(4, 6), ["bond0", "90"]);
  const short = probes({ settle_timeout: 20 });
  assert.deepEqual(short.bonding.command.slice(4, 6), ["bond0", "20"]);
  assert.deepEqual(short["link:wlan0"].command.slice(4, 6), ["wlan0", "20"], "the Wi-Fi link waits no longer than the settle timeout");
});

test("the settle script waits for every slave to be up, then prints the bond", () => {
  const dir = mkdtempSync(join(tmpdir(), "settle-"));
  try {
    const verifyProbe = (bond.verify!.probes(args()) as Record<string, { command: string[] }>).bonding.command;
    const script = verifyProbe[2].replace(/\/proc\/net\/bonding\//g, `${dir}/`).replace(/\/sys\/class\/net\//g, `${dir}/net/`);
    for (const nic of ["eth0", "wlan0"]) mkdirSync(join(dir, "net", nic), { recursive: true });
    writeFileSync(join(dir, "bond0"), HEALTHY);
    const started = Date.now();
    assert.equal(execFileSync("sh", ["-c", script, "settle", "bond0", "3", "eth0", "wlan0"], { encoding: "utf8" }), HEALTHY);
    assert.ok(Date.now() - started < 1500, "no wait when all slaves are up");
    writeFileSync(join(dir, "bond0"), HEALTHY.replace(/(Slave Interface: wlan0\nMII Status: )up/, "$1down"));
    const t = Date.now();
    execFileSync("sh", ["-c", script, "settle", "bond0", "1", "eth0", "wlan0"], { encoding: "utf8" });
    assert.ok(Date.now() - t >= 900, "waits up to its timeout for a slave that is down");
    const u = Date.now();
    execFileSync("sh", ["-c", script, "settle", "bond0", "3", "eth0", "eth7"], { encoding: "utf8" });
    assert.ok(Date.now() - u < 1500, "no wait for a slave that is no interface at all");
  } finally {
    rmSync(dir, { recursive: true });
  }
});

test("verify: a Wi-Fi slave must be associated to its SSID, said in words", () => {
  const a = args();
  const ok = { code: 0, stdout: "" };
  const verdict = bond.verify!.check(a, {
    bonding: { code: 0, stdout: HEALTHY },
    ip: { code: 0, stdout: '[{"addr_info":[{"local":"10.77.0.11"}]}]' },
    gateway: ok,
    "link:wlan0": { code: 1, stdout: "Not connected.\n" },
  } as never);
  assert.ok(!Array.isArray(verdict) && verdict.problems.includes('wlan0 not associated to SSID "provision-lab" (Not connected.)'), JSON.stringify(verdict));
  const fine = bond.verify!.check(a, {
    bonding: { code: 0, stdout: HEALTHY },
    ip: { code: 0, stdout: '[{"addr_info":[{"local":"10.77.0.11"}]}]' },
    gateway: ok,
    "link:wlan0": { code: 0, stdout: `Connected to 02:00:00:00:01:00 (on wlan0)\n\tSSID: provision-lab\n--- station dump\n${AUTHORIZED}` },
  } as never);
  assert.deepEqual(!Array.isArray(fine) && fine.problems, []);
  const handshakeFailed = bond.verify!.check(a, {
    bonding: { code: 0, stdout: HEALTHY },
    ip: { code: 0, stdout: '[{"addr_info":[{"local":"10.77.0.11"}]}]' },
    gateway: ok,
    "link:wlan0": {
      code: 0,
      stdout: `Connected to 02:00:00:00:01:00 (on wlan0)\n\tSSID: provision-lab\n--- station dump\n${AUTHORIZED.replace("authorized:\tyes", "authorized:\tno")}`,
    },
  } as never);
  assert.match(
    !Array.isArray(handshakeFailed) ? handshakeFailed.problems.join() : "",
    /wlan0 not associated to SSID "provision-lab": the access point never authorized it/,
    "association without the 4-way handshake is not a link",
  );
});

// `iw dev wlan0 station dump` on a lab guest whose handshake completed
const AUTHORIZED = "Station 02:00:00:00:01:00 (on wlan0)\n\tinactive time:\t40 ms\n\tauthorized:\tyes\n\tauthenticated:\tyes\n\tassociated:\tyes\n";

const HEALTHY = `Ethernet Channel Bonding Driver: v5.10

Bonding Mode: fault-tolerance (active-backup) (fail_over_mac active)
Primary Slave: eth0 (primary_reselect always)
Currently Active Slave: eth0
MII Status: up
MII Polling Interval (ms): 100

Slave Interface: eth0
MII Status: up
Link Failure Count: 0

Slave Interface: wlan0
MII Status: up
Link Failure Count: 0
`;

test("dhcpcd_deny is a visible no-op on a host without dhcpcd", async () => {
  const { default: dhcpcdDeny } = await import("../../modules/dhcpcd_deny.js");
  const a = { interfaces: ["eth0", "wlan0", "bond0"], path: "/etc/dhcpcd.conf" };
  const none = { conf: { path: "/etc/dhcpcd.conf", content: null } };
  assert.deepEqual(dhcpcdDeny.plan(a, none, context(NM_OUTPUT)), []);
  assert.deepEqual(dhcpcdDeny.notes!(a, none, context(NM_OUTPUT)), ["no dhcpcd on this host (NetworkManager runs its network): nothing to deny"]);
  assert.equal(dhcpcdDeny.plan(a, none, context(IFUPDOWN_OUTPUT)).length, 1, "where dhcpcd is installed it is kept off the bond");
});

test("systemd-networkd: a Wi-Fi slave named wl-0 runs wpa_supplicant@wl\\x2d0.service (systemd-escape), not the instance for wl/0", () => {
  const a = args({ slaves: ["eth0", "wl-0"], slave_options: { "wl-0": { ssid: "provision-lab", psk: PSK, country: "DE" } } });
  const changes = bond.plan(
    a,
    facts(a, { "phy:wlan0": { path: "", content: null }, "phy:wl-0": { path: "/sys/class/net/wl-0/phy80211/name", content: "phy0\n" } }),
    context(NETWORKD_OUTPUT),
  );
  const enable = changes.find((c) => c.kind === "command" && c.argv[1] === "enable");
  assert.deepEqual(enable && enable.kind === "command" && enable.argv, ["systemctl", "enable", "wpa_supplicant@wl\\x2d0.service"]);
  assert.ok(byPath(changes, "/etc/wpa_supplicant/wpa_supplicant-wl-0.conf"), "the unit's %I (unescaped) names the configuration file");
  assert.ok(
    Object.values(bond.facts(a) as Record<string, { file?: string }>).some((p) => p.file === "/etc/systemd/system/multi-user.target.wants/wpa_supplicant@wl\\x2d0.service"),
  );
});
