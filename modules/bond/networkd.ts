// The bond for systemd-networkd: a .netdev and a .network for the bond, a .network per
// slave (PrimarySlave= on the primary), and for a Wi-Fi slave wpa_supplicant@IFACE with
// its own configuration (0600): networkd does not authenticate to access points itself.
import { commandChange, fileChange, type Change, type DirState, type FileState } from "../../core/module-api.js";
import { renderWpaSupplicant } from "../network/wifi.js";
import { bondAddress, effectiveMiimon, modeName, wifiSlaves, type BondArgs } from "./model.js";
import { moveAside } from "./networkmanager.js";

export const NETWORKD_DIR = "/etc/systemd/network";
const WANTS = "/etc/systemd/system/multi-user.target.wants";
export const wpaSupplicantConf = (slave: string) => `/etc/wpa_supplicant/wpa_supplicant-${slave}.conf`;
const wpaUnit = (slave: string) => `wpa_supplicant@${slave}.service`;

/** The bond's own files: 10-provision-BOND.netdev/.network, and BOND@SLAVE (no interface name has an "@") per slave. */
const ownName = (a: BondArgs, slave?: string) => `10-provision-${a.name}${slave === undefined ? "" : `@${slave}`}`;
const OWN_HEADER = "# Managed by provision (bond module)";

/** The slave of a .network this module wrote for bond `name`, else null (by the Bond= it names, not by a file-name prefix: bond0 is not bond0-lan). */
function slaveFileOf(name: string, file: string, text: string): string | null {
  if (!file.startsWith("10-provision-") || !file.endsWith(".network")) return null;
  if (/^\s*Bond\s*=\s*(\S+)\s*$/m.exec(text)?.[1] !== name) return null;
  return /^\s*Name\s*=\s*(\S+)\s*$/m.exec(text)?.[1] ?? "";
}

export const networkdProbes = (a: BondArgs) => ({
  networkd: { dir: NETWORKD_DIR },
  ...Object.fromEntries(wifiSlaves(a).flatMap(([slave]) => [
    [`wpaConf:${slave}`, { file: wpaSupplicantConf(slave) }],
    [`wpaUnit:${slave}`, { file: `${WANTS}/${wpaUnit(slave)}` }],
  ])),
});
type Facts = { networkd: DirState } & Record<string, FileState>;

function unitFile(sections: [string, [string, string | number | undefined][]][]): string {
  return [OWN_HEADER, ...sections.map(([name, keys]) =>
    [`[${name}]`, ...keys.filter(([, v]) => v !== undefined).map(([k, v]) => `${k}=${v}`)].join("\n"))].join("\n\n") + "\n";
}

const ms = (value: number | undefined) => (value === undefined ? undefined : `${value}ms`);

export function renderNetdev(a: BondArgs): string {
  return unitFile([
    ["NetDev", [["Name", a.name], ["Kind", "bond"]]],
    ["Bond", [
      ["Mode", modeName(a.mode)],
      ["MIIMonitorSec", ms(effectiveMiimon(a) ?? 0)],
      ["PrimaryReselectPolicy", a.primary_reselect],
      ["FailOverMACPolicy", a.fail_over_mac],
      ["UpDelaySec", ms(a.updelay)],
      ["DownDelaySec", ms(a.downdelay)],
      ["ARPIntervalSec", ms(a.arp_interval)],
      ["ARPIPTargets", a.arp_ip_target?.join(" ")],
      ["ARPValidate", a.arp_validate],
    ]],
  ]);
}

export function renderBondNetwork(a: BondArgs): string {
  const network: [string, string | undefined][] = a.method === "dhcp"
    ? [["DHCP", "ipv4"]]
    : [["Address", a.address], ["Gateway", a.gateway], ...(a.dns_nameservers ?? []).map((d): [string, string] => ["DNS", d])];
  return unitFile([["Match", [["Name", a.name]]], ["Network", [...network, ["LinkLocalAddressing", "no"]]]]);
}

export function renderSlaveNetwork(a: BondArgs, slave: string): string {
  return unitFile([["Match", [["Name", slave]]], ["Network", [["Bond", a.name], ["PrimarySlave", slave === a.primary ? "true" : undefined]]]]);
}

/** Names a [Match] Name= line matches (globs as networkd reads them). */
function matchesAny(text: string, names: string[]): boolean {
  const patterns = [...text.matchAll(/^\s*Name\s*=\s*(.+)$/gm)].flatMap((m) => m[1].trim().split(/\s+/));
  return patterns.some((p) => names.some((n) => new RegExp(`^${p.replace(/[.+^${}()|\\]/g, "\\$&").replace(/\*/g, ".*").replace(/\?/g, ".")}$`).test(n)));
}

export function planNetworkd(a: BondArgs, facts: Facts): Change[] {
  const existing = facts.networkd.entries ?? {};
  const own = new Map<string, string>([
    [`${ownName(a)}.netdev`, renderNetdev(a)],
    [`${ownName(a)}.network`, renderBondNetwork(a)],
    ...a.slaves.map((s): [string, string] => [`${ownName(a, s)}.network`, renderSlaveNetwork(a, s)]),
  ]);
  // a slave's .network of an earlier run that is no longer one of these goes (backed up like any file)
  const former = Object.entries(existing).filter(([name, text]) => !own.has(name) && slaveFileOf(a.name, name, text) !== null);
  const competing = Object.entries(existing).filter(([name, text]) =>
    name.endsWith(".network") && !own.has(name) && !former.some(([f]) => f === name) && matchesAny(text, [a.name, ...a.slaves]));
  const aside = competing.flatMap(([name, text]) => moveAside(`${NETWORKD_DIR}/${name}`, text, `it matches ${[a.name, ...a.slaves].join("/")}`));
  const files = [...own].flatMap(([name, content]) => {
    const isBond = name === `${ownName(a)}.network`;
    const [change] = fileChange({ path: `${NETWORKD_DIR}/${name}`, content: existing[name] ?? null }, content, {
      summary: `${existing[name] === undefined ? "create" : "update"} ${NETWORKD_DIR}/${name}`, mode: "0644", reboot: true,
    });
    return change ? [{ ...change, address: isBond ? bondAddress(a) : undefined }] : [];
  });
  const wifi = wifiSlaves(a).flatMap(([slave, w]) => [
    ...fileChange(facts[`wpaConf:${slave}`], renderWpaSupplicant(w, `# Managed by provision (bond module): Wi-Fi of ${slave} in ${a.name}`), {
      summary: `write ${slave}'s Wi-Fi settings to ${wpaSupplicantConf(slave)} (0600)`, mode: "0600", reboot: true,
    }),
    ...(facts[`wpaUnit:${slave}`].content === null
      ? [commandChange(`enable ${wpaUnit(slave)}`, ["systemctl", "enable", wpaUnit(slave)], ["systemctl", "disable", wpaUnit(slave)], true)]
      : []),
  ]);
  const removed = former.flatMap(([name, text]) => {
    const slave = slaveFileOf(a.name, name, text)!;
    const why = a.slaves.includes(slave) ? `${slave}'s is now ${ownName(a, slave)}.network` : `${slave} is no longer a slave of ${a.name}`;
    return fileChange({ path: `${NETWORKD_DIR}/${name}`, content: text }, null, { summary: `remove ${NETWORKD_DIR}/${name} (${why})`, reboot: true });
  });
  return [...aside, ...removed, ...wifi, ...files];
}
