// The bond for ifupdown (+ ifenslave): /etc/network/interfaces, and for a Wi-Fi slave a
// wpa_supplicant configuration of its own (0600) that the interfaces file only names.
import { fileChange, type Change, type FileState } from "../../core/module-api.js";
import { renderWpaSupplicant } from "../network/wifi.js";
import { bondAddress, effectiveMiimon, modeName, wifiSlaves, type BondArgs } from "./model.js";

export const wpaConfPath = (slave: string) => `/etc/wpa_supplicant/provision-${slave}.conf`;

export const ifupdownProbes = (a: BondArgs) => ({
  interfaces: { file: a.path },
  original: { file: a.backup_path },
  ...Object.fromEntries(wifiSlaves(a).map(([slave]) => [`wpa:${slave}`, { file: wpaConfPath(slave) }])),
});
type Facts = { interfaces: FileState; original: FileState } & Record<string, FileState>;

function stanza(header: string[], options: [string, string | number | undefined][]): string {
  const body = options.filter(([, v]) => v !== undefined && v !== "").map(([k, v]) => `    ${k} ${v}`);
  return [...header, ...body].join("\n") + "\n";
}

/**
 * The rendering that comes up right with ifenslave 2.13 on Debian 12 (measured in
 * the lab): slaves are plain "inet manual" stanzas, and the bond lists its slaves.
 * The seed's variant (bond-master on slaves, "bond-slaves none") enslaved only one.
 */
export function renderInterfaces(a: BondArgs): string {
  const wifi = new Map(wifiSlaves(a));
  const slaveStanzas = a.slaves.map((s) => {
    const o = a.slave_options?.[s] ?? {};
    return stanza([`auto ${s}`, `iface ${s} inet manual`], [
      ["wireless-power", o.wireless_power],
      ["wpa-conf", wifi.has(s) ? wpaConfPath(s) : o.wpa_conf],
    ]);
  });
  const bond = stanza([`auto ${a.name}`, `iface ${a.name} inet ${a.method}`], [
    ["address", a.method === "static" ? a.address : undefined],
    ["netmask", a.method === "static" ? a.netmask : undefined],
    ["gateway", a.method === "static" ? a.gateway : undefined],
    ["dns-nameservers", a.dns_nameservers?.join(" ")],
    ["bond-slaves", a.slaves.join(" ")],
    ["bond-mode", modeName(a.mode)],
    ["bond-primary", a.primary],
    ["bond-primary-reselect", a.primary_reselect],
    ["bond-fail-over-mac", a.fail_over_mac],
    ["bond-miimon", effectiveMiimon(a)],
    ["bond-arp-interval", a.arp_interval],
    ["bond-arp-ip-target", a.arp_ip_target?.join(",")],
    ["bond-arp-validate", a.arp_validate],
    ["bond-updelay", a.updelay],
    ["bond-downdelay", a.downdelay],
  ]);
  const head = `# Managed by provision (bond module); the original is in ${a.backup_path}.\n# Status: cat /proc/net/bonding/${a.name}\n\nauto lo\niface lo inet loopback\n`;
  return [head, ...slaveStanzas, bond].join("\n");
}

export function planIfupdown(a: BondArgs, facts: Facts): Change[] {
  const wpa = wifiSlaves(a).flatMap(([slave, w]) =>
    fileChange(facts[`wpa:${slave}`], renderWpaSupplicant(w, `# Managed by provision (bond module): Wi-Fi of ${slave} in ${a.name}`), {
      summary: `write ${slave}'s Wi-Fi settings to ${wpaConfPath(slave)} (0600)`, mode: "0600", reboot: true,
    }));
  const desired = renderInterfaces(a);
  if (facts.interfaces.content === desired) return wpa;
  const keepOriginal = facts.original.content === null && facts.interfaces.content !== null
    ? fileChange(facts.original, facts.interfaces.content, { summary: `save the original as ${a.backup_path}`, mode: facts.interfaces.mode })
    : [];
  const [write] = fileChange(facts.interfaces, desired, { reboot: true, summary: `configure ${a.name} (${modeName(a.mode)}: ${a.slaves.join(" + ")}) in ${a.path}`, mode: "0644" });
  return [...wpa, ...keepOriginal, { ...write, address: bondAddress(a) }];
}
