// The bond for systemd-networkd: a .netdev and a .network for the bond, a .network per
// slave (PrimarySlave= on the primary), and for a Wi-Fi slave wpa_supplicant@IFACE with
// its configuration (0600; provision owns the bond's network in it, the rest is kept):
// networkd does not authenticate to access points itself.
import { commandChange, fileChange, type Change, type CommandOutput, type DirState, type FileState } from "../../core/module-api.js";
import { NETWORKD_DIRS, matchesLink, netdevName, networkdFiles, type Link, type UnitFile } from "../network/networkd-files.js";
import { templateUnit } from "../network/systemd.js";
import { mergeWpaSupplicant } from "../network/wifi.js";
import { bondAddress, effectiveMiimon, modeName, wifiSlaves, type BondArgs } from "./model.js";
import { moveAside } from "./networkmanager.js";

export const NETWORKD_DIR = "/etc/systemd/network";
const WANTS = "/etc/systemd/system/multi-user.target.wants";
export const wpaSupplicantConf = (slave: string) => `/etc/wpa_supplicant/wpa_supplicant-${slave}.conf`;
/** The slave's wpa_supplicant@ instance, its name escaped as systemd-escape does (wl-0 → wl\x2d0). */
const wpaUnit = (slave: string) => templateUnit("wpa_supplicant@.service", slave);

/** The bond's own files: 10-provision-BOND.netdev/.network, and BOND@SLAVE (no interface name has an "@") per slave. */
const ownName = (a: BondArgs, slave?: string) => `10-provision-${a.name}${slave === undefined ? "" : `@${slave}`}`;
const OWN_HEADER = "# Managed by provision (bond module)";

/** The slave of a .network this module wrote for bond `name`, else null (by the Bond= it names, not by a file-name prefix: bond0 is not bond0-lan). */
function slaveFileOf(name: string, file: string, text: string): string | null {
  if (!file.startsWith("10-provision-") || !file.endsWith(".network")) return null;
  if (/^\s*Bond\s*=\s*(\S+)\s*$/m.exec(text)?.[1] !== name) return null;
  return /^\s*Name\s*=\s*(\S+)\s*$/m.exec(text)?.[1] ?? "";
}

const OTHER_DIRS = NETWORKD_DIRS.filter((d) => d !== NETWORKD_DIR);

export const networkdProbes = (a: BondArgs) => ({
  networkd: { dir: NETWORKD_DIR },
  // where else networkd reads (netplan generates into /run at boot) and which names are masked by a symlink to /dev/null
  ...Object.fromEntries(OTHER_DIRS.map((dir) => [`networkd:${dir}`, { dir }])),
  networkdMasked: { command: ["find", ...NETWORKD_DIRS, "-maxdepth", "1", "-lname", "/dev/null"] },
  ...Object.fromEntries([a.name, ...a.slaves].map((i) => [`mac:${i}`, { file: `/sys/class/net/${i}/address` }])),
  ...Object.fromEntries(
    wifiSlaves(a).flatMap(([slave]) => [
      [`wpaConf:${slave}`, { file: wpaSupplicantConf(slave) }],
      [`wpaUnit:${slave}`, { file: `${WANTS}/${wpaUnit(slave)}` }],
    ]),
  ),
});
type Facts = { networkd: DirState; networkdMasked: CommandOutput } & Record<string, FileState & DirState>;

function unitFile(sections: [string, [string, string | number | undefined][]][]): string {
  return [OWN_HEADER, ...sections.map(([name, keys]) => [`[${name}]`, ...keys.filter(([, v]) => v !== undefined).map(([k, v]) => `${k}=${v}`)].join("\n"))].join("\n\n") + "\n";
}

const ms = (value: number | undefined) => (value === undefined ? undefined : `${value}ms`);

export function renderNetdev(a: BondArgs): string {
  return unitFile([
    [
      "NetDev",
      [
        ["Name", a.name],
        ["Kind", "bond"],
      ],
    ],
    [
      "Bond",
      [
        ["Mode", modeName(a.mode)],
        ["MIIMonitorSec", ms(effectiveMiimon(a) ?? 0)],
        ["PrimaryReselectPolicy", a.primary_reselect],
        ["FailOverMACPolicy", a.fail_over_mac],
        ["UpDelaySec", ms(a.updelay)],
        ["DownDelaySec", ms(a.downdelay)],
        ["ARPIntervalSec", ms(a.arp_interval)],
        ["ARPIPTargets", a.arp_ip_target?.join(" ")],
        ["ARPValidate", a.arp_validate],
      ],
    ],
  ]);
}

export function renderBondNetwork(a: BondArgs): string {
  const network: [string, string | undefined][] =
    a.method === "dhcp" ? [["DHCP", "ipv4"]] : [["Address", a.address], ["Gateway", a.gateway], ...(a.dns_nameservers ?? []).map((d): [string, string] => ["DNS", d])];
  return unitFile([
    ["Match", [["Name", a.name]]],
    ["Network", [...network, ["LinkLocalAddressing", "no"]]],
  ]);
}

export function renderSlaveNetwork(a: BondArgs, slave: string): string {
  return unitFile([
    ["Match", [["Name", slave]]],
    [
      "Network",
      [
        ["Bond", a.name],
        ["PrimarySlave", slave === a.primary ? "true" : undefined],
      ],
    ],
  ]);
}

/** The links our files configure, as [Match] sees them (the bond may take any slave's MAC). */
function ourLinks(a: BondArgs, facts: Facts): Link[] {
  const mac = (i: string) => facts[`mac:${i}`]?.content?.trim();
  const slaveMacs = a.slaves.map(mac).filter((m): m is string => !!m);
  const wireless = new Set([...wifiSlaves(a).map(([s]) => s), ...a.slaves.filter((s) => facts[`phy:${s}`]?.content)]);
  return [
    { name: a.name, type: "bond", kind: "bond", macs: [...new Set([mac(a.name), ...slaveMacs].filter((m): m is string => !!m))] },
    ...a.slaves.map((s) => ({ name: s, type: wireless.has(s) ? "wlan" : "ether", macs: [mac(s)].filter((m): m is string => !!m) })),
  ];
}

/** Every .network and .netdev networkd would read, in its order. */
function readNetworkd(facts: Facts): { networks: UnitFile[]; netdevs: UnitFile[] } {
  const dirs = [{ dir: NETWORKD_DIR, entries: facts.networkd.entries }, ...OTHER_DIRS.map((dir) => ({ dir, entries: facts[`networkd:${dir}`]?.entries ?? null }))];
  const masked = (facts.networkdMasked?.stdout ?? "").split("\n").filter(Boolean);
  return { networks: networkdFiles(dirs, masked, ".network"), netdevs: networkdFiles(dirs, masked, ".netdev") };
}

/**
 * Files of others that would configure one of our links or create our bond. In /etc they
 * are moved aside (a copy kept). Elsewhere (netplan's in /run, a vendor's in /usr/lib)
 * only one that networkd reads before ours wins; it is masked by an empty file of the same
 * name in /etc (networkd skips an empty file), which a rollback removes again.
 */
function competitors(a: BondArgs, facts: Facts, own: Map<string, string>, former: Set<string>): Change[] {
  const { networks, netdevs } = readNetworkd(facts);
  const ownFor = (link: string) => `${ownName(a, link === a.name ? undefined : link)}.network`;
  const found = new Map<string, { file: UnitFile; why: string }>();
  for (const link of ourLinks(a, facts))
    for (const file of networks) {
      if (own.has(file.name) || former.has(file.name) || !matchesLink(file.text, link)) continue;
      if (file.dir !== NETWORKD_DIR && file.name >= ownFor(link.name)) continue; // read after ours: it never applies to this link
      const earlier = found.get(file.path);
      found.set(file.path, { file, why: earlier ? `${earlier.why}/${link.name}` : `it matches ${link.name}` });
    }
  const ownNetdev = `${ownName(a)}.netdev`;
  for (const file of netdevs)
    if (file.name !== ownNetdev && netdevName(file.text) === a.name && (file.dir === NETWORKD_DIR || file.name < ownNetdev))
      found.set(file.path, { file, why: `it also creates ${a.name}` });
  return [...found.values()].flatMap(({ file, why }) => {
    if (file.dir === NETWORKD_DIR) return moveAside(file.path, file.text, why);
    const mask = `${NETWORKD_DIR}/${file.name}`;
    return fileChange({ path: mask, content: null }, "", {
      summary: `mask ${file.path} with an empty ${mask} (${why}, and networkd reads it before provision's ${file.name.endsWith(".netdev") ? ownNetdev : "files"}${file.name.includes("netplan") ? "; netplan generates it at every boot" : ""})`,
      mode: "0644",
      reboot: true,
    });
  });
}

/** Slave .network files an earlier run wrote for this bond (by the Bond= they name) that are not among ours now. */
function formerSlaveFiles(a: BondArgs, existing: Record<string, string>, own: Map<string, string>): Set<string> {
  return new Set(Object.keys(existing).filter((name) => !own.has(name) && slaveFileOf(a.name, name, existing[name]) !== null));
}

export function planNetworkd(a: BondArgs, facts: Facts): Change[] {
  const existing = facts.networkd.entries ?? {};
  const own = new Map<string, string>([
    [`${ownName(a)}.netdev`, renderNetdev(a)],
    [`${ownName(a)}.network`, renderBondNetwork(a)],
    ...a.slaves.map((s): [string, string] => [`${ownName(a, s)}.network`, renderSlaveNetwork(a, s)]),
  ]);
  // a slave's .network of an earlier run that is no longer one of these goes (backed up like any file)
  const former = formerSlaveFiles(a, existing, own);
  const aside = competitors(a, facts, own, former);
  const files = [...own].flatMap(([name, content]) => {
    const isBond = name === `${ownName(a)}.network`;
    const [change] = fileChange({ path: `${NETWORKD_DIR}/${name}`, content: existing[name] ?? null }, content, {
      summary: `${existing[name] === undefined ? "create" : "update"} ${NETWORKD_DIR}/${name}`,
      mode: "0644",
      reboot: true,
    });
    return change ? [{ ...change, address: isBond ? bondAddress(a) : undefined }] : [];
  });
  const wifi = wifiSlaves(a).flatMap(([slave, w]) => [
    ...fileChange(facts[`wpaConf:${slave}`], mergeWpaSupplicant(facts[`wpaConf:${slave}`].content, w, `# Managed by provision (bond module): Wi-Fi of ${slave} in ${a.name}`), {
      summary: `write ${slave}'s Wi-Fi network ${JSON.stringify(w.ssid)} to ${wpaSupplicantConf(slave)} (0600; its other networks and settings kept)`,
      mode: "0600",
      reboot: true,
    }),
    ...(facts[`wpaUnit:${slave}`].content === null
      ? [commandChange(`enable ${wpaUnit(slave)}`, ["systemctl", "enable", wpaUnit(slave)], ["systemctl", "disable", wpaUnit(slave)], true)]
      : []),
  ]);
  const removed = [...former].flatMap((name) => {
    const slave = slaveFileOf(a.name, name, existing[name])!;
    const why = a.slaves.includes(slave) ? `${slave}'s is now ${ownName(a, slave)}.network` : `${slave} is no longer a slave of ${a.name}`;
    return fileChange({ path: `${NETWORKD_DIR}/${name}`, content: existing[name] }, null, { summary: `remove ${NETWORKD_DIR}/${name} (${why})`, reboot: true });
  });
  return [...aside, ...removed, ...wifi, ...files];
}
