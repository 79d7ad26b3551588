// bond: a Linux bond rendered to /etc/network/interfaces (ifupdown + ifenslave),
// verified from /proc/net/bonding after it takes effect.
import { PATTERNS, defineModule, fileChange, type FileState, type CommandOutput } from "../core/module-api.js";

const IFNAME = PATTERNS.ifname;
const IPV4 = PATTERNS.ipv4;
const IPV4_CIDR = IPV4.slice(0, -1) + "(/(3[0-2]|[12]?\\d))?$";
const PATH = PATTERNS.path;

const MODES = ["balance-rr", "active-backup", "balance-xor", "broadcast", "802.3ad", "balance-tlb", "balance-alb"] as const;
export type Mode = (typeof MODES)[number];

/** How /proc/net/bonding names each mode. */
const PROC_MODE_NAMES: Record<string, Mode> = {
  "load balancing (round-robin)": "balance-rr",
  "fault-tolerance (active-backup)": "active-backup",
  "load balancing (xor)": "balance-xor",
  "fault-tolerance (broadcast)": "broadcast",
  "IEEE 802.3ad Dynamic link aggregation": "802.3ad",
  "transmit load balancing": "balance-tlb",
  "adaptive load balancing": "balance-alb",
};
const MODES_WITH_PRIMARY: Mode[] = ["active-backup", "balance-tlb", "balance-alb"];

export interface SlaveOptions {
  wpa_conf?: string;
  wpa_ssid?: string;
  wpa_psk?: string;
  wireless_power?: "on" | "off";
}

export interface BondArgs {
  name: string;
  mode: Mode | number;
  slaves: string[];
  primary?: string;
  primary_reselect?: "always" | "better" | "failure";
  fail_over_mac?: "none" | "active" | "follow";
  miimon?: number;
  arp_interval?: number;
  arp_ip_target?: string[];
  arp_validate?: "none" | "active" | "backup" | "all" | "filter" | "filter_active" | "filter_backup";
  updelay?: number;
  downdelay?: number;
  method: "static" | "dhcp";
  address?: string;
  netmask?: string;
  gateway?: string;
  dns_nameservers?: string[];
  slave_options?: Record<string, SlaveOptions>;
  path: string;
  backup_path: string;
}

const bondSchema = {
  type: "object",
  additionalProperties: false,
  required: ["slaves"],
  properties: {
    name: { type: "string", pattern: IFNAME, default: "bond0" },
    mode: { oneOf: [{ type: "string", enum: [...MODES] }, { type: "integer", minimum: 0, maximum: 6 }], default: "active-backup" },
    slaves: { type: "array", minItems: 1, uniqueItems: true, items: { type: "string", pattern: IFNAME } },
    primary: { type: "string", pattern: IFNAME },
    primary_reselect: { type: "string", enum: ["always", "better", "failure"] },
    fail_over_mac: { type: "string", enum: ["none", "active", "follow"] },
    miimon: { type: "integer", minimum: 0 },
    arp_interval: { type: "integer", minimum: 0 },
    arp_ip_target: { type: "array", minItems: 1, maxItems: 16, items: { type: "string", pattern: IPV4 } },
    arp_validate: { type: "string", enum: ["none", "active", "backup", "all", "filter", "filter_active", "filter_backup"] },
    updelay: { type: "integer", minimum: 0 },
    downdelay: { type: "integer", minimum: 0 },
    method: { type: "string", enum: ["static", "dhcp"], default: "static" },
    address: { type: "string", pattern: IPV4_CIDR },
    netmask: { type: "string", pattern: IPV4 },
    gateway: { type: "string", pattern: IPV4 },
    dns_nameservers: { type: "array", items: { type: "string", pattern: IPV4 } },
    slave_options: {
      type: "object",
      propertyNames: { pattern: IFNAME },
      additionalProperties: {
        type: "object",
        additionalProperties: false,
        properties: {
          wpa_conf: { type: "string", pattern: PATH },
          wpa_ssid: { type: "string", pattern: "^[^\\n\\r]{1,32}$" },
          wpa_psk: { type: "string", pattern: "^[^\\n\\r]{8,64}$" },
          wireless_power: { type: "string", enum: ["on", "off"] },
        },
      },
    },
    path: { type: "string", pattern: PATH, default: "/etc/network/interfaces" },
    backup_path: { type: "string", pattern: PATH, default: "/etc/network/interfaces.orig" },
  },
  if: { properties: { method: { const: "static" } } },
  then: { required: ["address"] },
};

function modeName(mode: Mode | number): Mode {
  return typeof mode === "number" ? MODES[mode] : mode;
}

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
  const mode = modeName(a.mode);
  const miimon = a.arp_interval ? undefined : a.miimon ?? 100;
  const slaveStanzas = a.slaves.map((s) => {
    const o = a.slave_options?.[s] ?? {};
    return stanza([`auto ${s}`, `iface ${s} inet manual`], [
      ["wireless-power", o.wireless_power],
      ["wpa-conf", o.wpa_conf],
      ["wpa-ssid", o.wpa_ssid],
      ["wpa-psk", o.wpa_psk],
    ]);
  });
  const bond = stanza([`auto ${a.name}`, `iface ${a.name} inet ${a.method}`], [
    ["address", a.method === "static" ? a.address : undefined],
    ["netmask", a.method === "static" ? a.netmask : undefined],
    ["gateway", a.method === "static" ? a.gateway : undefined],
    ["dns-nameservers", a.dns_nameservers?.join(" ")],
    ["bond-slaves", a.slaves.join(" ")],
    ["bond-mode", mode],
    ["bond-primary", a.primary],
    ["bond-primary-reselect", a.primary_reselect],
    ["bond-fail-over-mac", a.fail_over_mac],
    ["bond-miimon", miimon],
    ["bond-arp-interval", a.arp_interval],
    ["bond-arp-ip-target", a.arp_ip_target?.join(",")],
    ["bond-arp-validate", a.arp_validate],
    ["bond-updelay", a.updelay],
    ["bond-downdelay", a.downdelay],
  ]);
  const head = `# Managed by provision (bond module); the original is in ${a.backup_path}.\n# Status: cat /proc/net/bonding/${a.name}\n\nauto lo\niface lo inet loopback\n`;
  return [head, ...slaveStanzas, bond].join("\n");
}

export interface BondStatus {
  mode: Mode | null;
  failOverMac?: string;
  primary: string | null;
  primaryReselect?: string;
  activeSlave: string | null;
  miiStatus: string | null;
  slaves: { name: string; miiStatus: string; linkFailures: number }[];
}

/** Parse /proc/net/bonding/BOND. */
export function parseBondStatus(text: string): BondStatus {
  const status: BondStatus = { mode: null, primary: null, activeSlave: null, miiStatus: null, slaves: [] };
  let slave: BondStatus["slaves"][number] | null = null;
  for (const raw of text.split("\n")) {
    const m = /^([^:]+):\s*(.*)$/.exec(raw.trim());
    if (!m) continue;
    const [, key, value] = m;
    if (key === "Bonding Mode") {
      const known = Object.keys(PROC_MODE_NAMES).find((n) => value.startsWith(n));
      status.mode = known ? PROC_MODE_NAMES[known] : null;
      status.failOverMac = /\(fail_over_mac (\w+)\)/.exec(value)?.[1];
    } else if (key === "Primary Slave") {
      status.primary = value.startsWith("None") ? null : value.split(" ")[0];
      status.primaryReselect = /\(primary_reselect (\w+)\)/.exec(value)?.[1];
    } else if (key === "Currently Active Slave") status.activeSlave = value === "None" ? null : value;
    else if (key === "Slave Interface") {
      slave = { name: value, miiStatus: "unknown", linkFailures: 0 };
      status.slaves.push(slave);
    } else if (key === "MII Status") {
      if (slave) slave.miiStatus = value;
      else status.miiStatus = value;
    } else if (key === "Link Failure Count" && slave) slave.linkFailures = Number(value);
  }
  return status;
}

/** What is wrong with a running bond compared with the args ([] = healthy). */
export function bondProblems(a: BondArgs, status: BondStatus): string[] {
  const problems: string[] = [];
  const mode = modeName(a.mode);
  if (status.mode !== mode) problems.push(`mode is ${status.mode ?? "unknown"}, want ${mode}`);
  const have = status.slaves.map((s) => s.name).sort();
  const want = [...a.slaves].sort();
  if (have.join(",") !== want.join(",")) problems.push(`slaves are {${have.join(", ")}}, want {${want.join(", ")}}`);
  if (status.miiStatus !== "up") problems.push(`bond MII status is ${status.miiStatus ?? "unknown"}`);
  for (const s of status.slaves) if (s.miiStatus !== "up") problems.push(`slave ${s.name} MII status is ${s.miiStatus}`);
  if (a.primary && MODES_WITH_PRIMARY.includes(mode)) {
    if (status.primary !== a.primary) problems.push(`primary slave is ${status.primary ?? "None"}, want ${a.primary}`);
    const primaryUp = status.slaves.some((s) => s.name === a.primary && s.miiStatus === "up");
    if (mode === "active-backup" && primaryUp && status.activeSlave !== a.primary)
      problems.push(`currently active slave is ${status.activeSlave ?? "None"}, want ${a.primary}`);
  }
  if (a.fail_over_mac && mode === "active-backup" && (status.failOverMac ?? "none") !== a.fail_over_mac)
    problems.push(`fail_over_mac is ${status.failOverMac ?? "none"}, want ${a.fail_over_mac}`);
  return problems;
}

function addressProblems(a: BondArgs, ip: CommandOutput): string[] {
  if (a.method !== "static" || !a.address) return [];
  if (ip.code !== 0) return [`${a.name} does not exist`];
  const want = a.address.split("/")[0];
  const addresses = (JSON.parse(ip.stdout || "[]") as { addr_info?: { local: string }[] }[]).flatMap((l) => l.addr_info ?? []).map((i) => i.local);
  return addresses.includes(want) ? [] : [`${a.name} does not have address ${want} (has ${addresses.join(", ") || "none"})`];
}

export default defineModule({
  name: "bond",
  description: "Configure a Linux bond in /etc/network/interfaces (ifupdown + ifenslave); the original file is kept as interfaces.orig",
  schema: bondSchema,
  secrets: (a: BondArgs) => Object.values(a.slave_options ?? {}).flatMap((o) => (o.wpa_psk ? [o.wpa_psk] : [])),
  facts: (a: BondArgs) => ({ interfaces: { file: a.path }, original: { file: a.backup_path } }),
  plan(a: BondArgs, facts: { interfaces: FileState; original: FileState }) {
    const desired = renderInterfaces(a);
    if (facts.interfaces.content === desired) return [];
    const keepOriginal = facts.original.content === null && facts.interfaces.content !== null
      ? fileChange(facts.original, facts.interfaces.content, { summary: `save the original as ${a.backup_path}`, mode: facts.interfaces.mode })
      : [];
    const slaves = a.slaves.join(" + ");
    const [write] = fileChange(facts.interfaces, desired, { reboot: true, summary: `configure ${a.name} (${modeName(a.mode)}: ${slaves}) in ${a.path}`, mode: "0644" });
    const address = a.method === "static" && a.address ? a.address.split("/")[0] : undefined;
    return [...keepOriginal, { ...write, address }];
  },
  verify: {
    probes: (a: BondArgs) => ({
      bonding: { file: `/proc/net/bonding/${a.name}` },
      ip: { command: ["ip", "-j", "-4", "addr", "show", "dev", a.name] },
      ...(a.gateway && a.method === "static" ? { gateway: { command: ["ping", "-c", "3", "-i", "0.3", "-W", "2", a.gateway] } } : {}),
    }),
    check(a: BondArgs, facts: { bonding: FileState; ip: CommandOutput; gateway?: CommandOutput }) {
      if (facts.bonding.content === null) return [`${a.name} is not a bond (no /proc/net/bonding/${a.name})`];
      return [
        ...bondProblems(a, parseBondStatus(facts.bonding.content)),
        ...addressProblems(a, facts.ip),
        ...(facts.gateway && facts.gateway.code !== 0 ? [`gateway ${a.gateway} does not answer ping through ${a.name}`] : []),
      ];
    },
  },
});
