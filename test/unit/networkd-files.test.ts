// systemd-networkd's files read as networkd reads them: glob matching checked against
// glibc's fnmatch, the search path's same-name override checked against systemd-analyze
// cat-config, lexical order across directories, and the bond's plan on a host where netplan
// or a vendor put files before provision's.
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import bond from "../../modules/bond/index.js";
import type { BondArgs } from "../../modules/bond/model.js";
import { fnmatch, matchesLink, networkdFiles, NETWORKD_DIRS, type Link } from "../../modules/network/networkd-files.js";
import { parseNetworkStack } from "../../modules/network/stack.js";
import { compile } from "../../core/config/schema.js";
import type { Change, FileChange, PlanContext } from "../../core/module-api.js";
import { repoRoot } from "../support/cache.js";

const python = existsSync("/usr/bin/python3") ? "/usr/bin/python3" : "python3";

test("fnmatch: the same answers as glibc's fnmatch(3) (globs, brackets, classes, escapes, a '[' never closed)", () => {
  const patterns = ["en*", "en[", "en[0-9]", "en[!0-9]*", "en[^0-9]*", "e?h0", "*", "eth[[:digit:]]", "wl\\*", "[]x]*", "[!]]*", "eth0", "[a-", "e*[0-3]", "\\", "wlan[0-1", "*0"];
  const names = ["eth0", "en[", "enp1s0", "en0", "ens3", "wl*", "wlx", "]x", "x", "wlan0", "wlan[0-1", "e", "", "-"];
  const pairs = patterns.flatMap((p) => names.map((n) => [p, n]));
  const glibc = JSON.parse(execFileSync(python, [join(repoRoot, "test", "support", "libc-fnmatch.py")], { input: JSON.stringify(pairs), encoding: "utf8" })) as boolean[];
  pairs.forEach(([p, n], i) => assert.equal(fnmatch(p, n), glibc[i], `fnmatch(${JSON.stringify(p)}, ${JSON.stringify(n)})`));
});

const eth0: Link = { name: "eth0", type: "ether", macs: ["52:54:00:12:34:56"] };
const wlan0: Link = { name: "wlan0", type: "wlan", macs: ["02:00:00:00:00:00"] };
const bond0: Link = { name: "bond0", type: "bond", kind: "bond", macs: ["52:54:00:12:34:56"] };

test("[Match] as networkd evaluates it: Name= globs and negation, repeated and reset lists, Type=, MACAddress=, OriginalName=", () => {
  const m = (match: string, link: Link) => matchesLink(`[Match]\n${match}\n\n[Network]\nDHCP=yes\n`, link);
  assert.ok(m("Name=eth0", eth0));
  assert.ok(m("Name=e*", eth0) && !m("Name=e*", wlan0));
  assert.ok(!m("Name=en[", eth0), "a glob like en[ is a literal, and does not crash the plan");
  assert.ok(m("Name=!lo", eth0) && m("Name=!lo", bond0), "only negative patterns: everything else matches");
  assert.ok(!m("Name=!eth0 wlan0", eth0) && !m("Name=!eth0 wlan0", wlan0) && m("Name=!eth0 wlan0", bond0), "! negates the whole assignment");
  assert.ok(!m("Name=e* !eth0", eth0), "a matching negative pattern wins");
  assert.ok(m("Name=wlan0\nName=eth0", eth0), "Name= lines add up");
  assert.ok(!m("Name=eth0\nName=\nName=wlan0", eth0), "an empty Name= resets the list");
  assert.ok(m("Type=ether", eth0) && !m("Type=ether", wlan0) && m("Type=wlan", wlan0) && m("Type=!loopback", bond0));
  assert.ok(
    m("MACAddress=52:54:00:12:34:56", eth0) && m("MACAddress=52:54:00:12:34:56", bond0) && !m("MACAddress=52:54:00:12:34:56", wlan0),
    "the bond takes a slave's MAC: a MAC match meant for eth0 catches bond0 too",
  );
  assert.ok(m("OriginalName=eth*", eth0));
  assert.ok(m("Name=eth0 wlan0\nType=ether", eth0) && !m("Name=eth0 wlan0\nType=ether", wlan0), "every key set must match");
  assert.ok(m("Name=eth0\nDriver=virtio_net", eth0), "a file that names the link counts though it also tests the hardware");
  assert.ok(!m("Driver=virtio_net", eth0), "a file that tests only what the plan cannot know is not counted");
  assert.ok(!matchesLink("[Network]\nDHCP=yes\n", eth0), "no [Match]: networkd ignores the file");
  assert.ok(m("Name=eth0 \\\n wlan0", wlan0), "a continued line");
});

test("the search path: a name in /etc hides the same name in /run and /usr/lib; an empty file or a /dev/null link masks it (as systemd-analyze cat-config says)", (t) => {
  const root = mkdtempSync(join(tmpdir(), "networkd-root-"));
  try {
    const files: [string, string][] = [
      ["/etc/systemd/network/10-a.network", "[Match]\nName=etc\n"],
      ["/run/systemd/network/10-a.network", "[Match]\nName=run\n"],
      ["/run/systemd/network/10-b.network", "[Match]\nName=run\n"],
      ["/usr/lib/systemd/network/10-b.network", "[Match]\nName=usr\n"],
      ["/usr/lib/systemd/network/20-c.network", "[Match]\nName=usr\n"],
      ["/etc/systemd/network/30-d.network", ""],
      ["/usr/lib/systemd/network/30-d.network", "[Match]\nName=usr\n"],
      ["/usr/local/lib/systemd/network/40-e.network", "[Match]\nName=local\n"],
      ["/usr/lib/systemd/network/40-e.network", "[Match]\nName=usr\n"],
      ["/usr/lib/systemd/network/50-f.network", "[Match]\nName=usr\n"],
    ];
    for (const dir of NETWORKD_DIRS.filter((d) => !d.startsWith("/lib"))) mkdirSync(join(root, dir), { recursive: true });
    for (const [path, text] of files) writeFileSync(join(root, path), text);
    symlinkSync("/dev/null", join(root, "/etc/systemd/network/50-f.network"));
    const dirs = NETWORKD_DIRS.map((dir) => ({
      dir,
      entries: Object.fromEntries(files.filter(([p]) => p.startsWith(`${dir}/`)).map(([p, text]) => [p.slice(dir.length + 1), text])),
    }));
    const read = networkdFiles(dirs, ["/etc/systemd/network/50-f.network"], ".network");
    assert.deepEqual(
      read.map((f) => f.path),
      ["/etc/systemd/network/10-a.network", "/run/systemd/network/10-b.network", "/usr/lib/systemd/network/20-c.network", "/usr/local/lib/systemd/network/40-e.network"],
    );
    if (!existsSync("/usr/bin/systemd-analyze")) return t.skip("no systemd-analyze here to compare with");
    for (const name of ["10-a", "10-b", "20-c", "30-d", "40-e", "50-f"]) {
      const out = execFileSync("systemd-analyze", ["cat-config", `--root=${root}`, `systemd/network/${name}.network`], { encoding: "utf8" });
      const winner = /^# (\S+)$/m.exec(out)![1].slice(root.length);
      const body = out.split("\n").slice(1).join("\n").trim();
      const mine = read.find((f) => f.name === `${name}.network`);
      if (body === "") assert.equal(mine, undefined, `${name} is masked by ${winner}`);
      else assert.equal(mine?.path, winner, `${name}: systemd reads ${winner}`);
    }
  } finally {
    rmSync(root, { recursive: true });
  }
});

// ---- the bond's plan on a systemd-networkd host ----------------------------------------------

const NETWORKD_OUTPUT = `service NetworkManager inactive
service systemd-networkd active
service networking inactive
service dhcpcd inactive
installed ifup no
installed NetworkManager no
installed dhcpcd no
networkd-link 2 eth0 ether routable configured
networkd-link 3 eth1 ether routable configured
default-route eth0
ifupdown-config
`;
const context: PlanContext = {
  host: "pi1",
  hostFacts: { bootId: "b", bootTime: 1, systemd: true, hostname: "pi1" },
  facts: { network_stack: parseNetworkStack(NETWORKD_OUTPUT) },
  rebootPending: false,
  rebootReasons: [],
};

function args(over: Record<string, unknown> = {}): BondArgs {
  const a = { stack: "networkd", slaves: ["eth0", "eth1"], primary: "eth0", address: "10.77.0.11/24", gateway: "10.77.0.1", ...over };
  assert.ok(compile(bond.schema)(a));
  return a as unknown as BondArgs;
}

function plan(a: BondArgs, dirs: Record<string, Record<string, string>>, over: Record<string, unknown> = {}): FileChange[] {
  const facts = Object.fromEntries(
    Object.entries(bond.facts(a)).map(([name, p]) => {
      const probe = p as { file?: string; dir?: string };
      if (probe.dir) return [name, { path: probe.dir, entries: dirs[probe.dir] ?? null }];
      if (probe.file) return [name, { path: probe.file, content: probe.file.endsWith("/address") ? `52:54:00:00:00:0${a.slaves.indexOf(probe.file.split("/")[4]) + 1}\n` : null }];
      return [name, { code: 0, stdout: "" }];
    }),
  );
  return (bond.plan(a, { ...facts, ...over } as never, context) as Change[]).filter((c): c is FileChange => c.kind === "file");
}

const NETPLAN_ETH0 = "[Match]\nName=eth0\n\n[Network]\nDHCP=ipv4\nLinkLocalAddressing=ipv6\n";

test("netplan's file in /run/systemd/network, read before provision's, is masked by an empty file in /etc (a rollback removes it)", () => {
  const a = args();
  const changes = plan(a, { "/run/systemd/network": { "10-netplan-eth0.network": NETPLAN_ETH0, "10-netplan-eth0.link": "[Match]\nMACAddress=52:54:00:00:00:01\n" } });
  const mask = changes.find((c) => c.path === "/etc/systemd/network/10-netplan-eth0.network")!;
  assert.equal(mask.before, null);
  assert.equal(mask.after, "", "an empty file: networkd skips it");
  assert.match(mask.summary, /mask \/run\/systemd\/network\/10-netplan-eth0.network .*it matches eth0.*netplan generates it at every boot/);
  assert.ok(!changes.some((c) => c.path.startsWith("/run/")), "nothing is written under /run");

  const again = plan(a, { "/etc/systemd/network": { "10-netplan-eth0.network": "" }, "/run/systemd/network": { "10-netplan-eth0.network": NETPLAN_ETH0 } });
  assert.ok(!again.some((c) => c.path.includes("netplan")), "once masked, it is left alone");
  const maskedByLink = plan(
    a,
    { "/run/systemd/network": { "10-netplan-eth0.network": NETPLAN_ETH0 } },
    { networkdMasked: { code: 0, stdout: "/etc/systemd/network/10-netplan-eth0.network\n" } },
  );
  assert.ok(!maskedByLink.some((c) => c.path.includes("netplan")), "a symlink to /dev/null masks it too");
});

test("networkd competitors: matched by glob, MAC, type and negation; only those read before provision's outside /etc; a .netdev that also makes the bond", () => {
  const a = args();
  const run = {
    "05-all-ether.network": "[Match]\nType=ether\n\n[Network]\nDHCP=yes\n", // before ours, every Ethernet link
    "05-by-mac.network": "[Match]\nMACAddress=52:54:00:00:00:02\n\n[Network]\nDHCP=yes\n", // eth1 by its MAC
    "05-not-eth.network": "[Match]\nName=!eth* bond*\n", // everything but ours
    "05-glob.network": "[Match]\nName=en[\n", // a literal name, no crash
    "99-late.network": "[Match]\nName=eth0\n", // after ours: never applies
    "10-netplan-bond0.netdev": "[NetDev]\nName=bond0\nKind=bond\n",
  };
  const changes = plan(a, { "/run/systemd/network": run });
  const masked = changes
    .filter((c) => c.after === "")
    .map((c) => c.path.split("/").pop())
    .sort();
  assert.deepEqual(masked, ["05-all-ether.network", "05-by-mac.network", "10-netplan-bond0.netdev"]);
  const etc = plan(a, { "/etc/systemd/network": { "99-late.network": "[Match]\nName=eth*\n" } });
  assert.equal(etc.find((c) => c.path === "/etc/systemd/network/99-late.network")?.after, null, "in /etc it is moved aside whatever its order");
  assert.equal(etc.find((c) => c.path === "/etc/systemd/network/99-late.network.provision-disabled")?.after, "[Match]\nName=eth*\n");
  const vendor = plan(a, {
    "/usr/lib/systemd/network": { "80-container-host0.network": "[Match]\nVirtualization=container\nName=host0\n", "05-vendor.network": "[Match]\nName=eth*\n" },
  });
  assert.deepEqual(
    vendor.filter((c) => c.after === "").map((c) => c.path),
    ["/etc/systemd/network/05-vendor.network"],
  );
});

test("two bonds on one host: bond0's plan leaves bond0-lan's files alone (names match exactly)", () => {
  const lan = args({ name: "bond0-lan", slaves: ["eth2", "eth3"], primary: "eth2", address: "10.78.0.11/24", gateway: undefined });
  const lanFiles = Object.fromEntries(
    plan(lan, {})
      .filter((c) => c.path.startsWith("/etc/systemd/network/"))
      .map((c) => [c.path.split("/").pop()!, c.after!]),
  );
  assert.ok(Object.keys(lanFiles).includes("10-provision-bond0-lan@eth2.network"));
  const changes = plan(args(), { "/etc/systemd/network": lanFiles });
  assert.ok(!changes.some((c) => Object.keys(lanFiles).some((n) => c.path.startsWith(`/etc/systemd/network/${n}`))), changes.map((c) => c.summary).join("\n"));
  const former = plan(args({ slaves: ["eth0"] }), { "/etc/systemd/network": { "10-provision-bond0-eth1.network": "[Match]\nName=eth1\n\n[Network]\nBond=bond0\n" } });
  assert.equal(former.find((c) => c.path === "/etc/systemd/network/10-provision-bond0-eth1.network")?.after, null, "a former slave's file is still removed");
});
