// The desired bond, one model for every network stack: its arguments and schema, and the
// kernel's view of a running bond (/proc/net/bonding) that verification and audits read.
import { PATTERNS, type CommandOutput } from "../../core/module-api.js";
import { RENDERABLE_STACKS } from "../network/stack.js";
import { wifiSchemaProperties, type WifiSettings } from "../network/wifi.js";

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

/** Per slave: Wi-Fi settings (a slave with an ssid is a Wi-Fi slave), or ifupdown extras. */
export interface SlaveOptions extends Partial<WifiSettings> {
  /** ifupdown only: a wpa_supplicant configuration you manage yourself. */
  wpa_conf?: string;
  wireless_power?: "on" | "off";
}

export interface BondArgs {
  name: string;
  stack: "auto" | (typeof RENDERABLE_STACKS)[number];
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

export const bondSchema = {
  type: "object",
  additionalProperties: false,
  required: ["slaves"],
  properties: {
    name: { type: "string", pattern: IFNAME, default: "bond0" },
    stack: { type: "string", enum: ["auto", ...RENDERABLE_STACKS], default: "auto" },
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
          ...wifiSchemaProperties,
          wpa_conf: { type: "string", pattern: PATH },
          wireless_power: { type: "string", enum: ["on", "off"] },
        },
        dependencies: { ssid: ["psk"], psk: ["ssid"], country: ["ssid"], key_mgmt: ["ssid"] },
      },
    },
    path: { type: "string", pattern: PATH, default: "/etc/network/interfaces" },
    backup_path: { type: "string", pattern: PATH, default: "/etc/network/interfaces.orig" },
  },
  if: { properties: { method: { const: "static" } } },
  then: { required: ["address"] },
};

/** The Wi-Fi slaves: those given an ssid. */
export function wifiSlaves(a: BondArgs): [string, WifiSettings][] {
  return a.slaves.flatMap((s) => {
    const o = a.slave_options?.[s];
    return o?.ssid && o.psk ? [[s, { ssid: o.ssid, psk: o.psk, country: o.country, key_mgmt: o.key_mgmt ?? "WPA-PSK" }] as [string, WifiSettings]] : [];
  });
}

/** The address the bond answers at once it is up (static only). */
export function bondAddress(a: BondArgs): string | undefined {
  return a.method === "static" && a.address ? a.address.split("/")[0] : undefined;
}

/** Bonding options with the defaults the module stands for (miimon 100 unless ARP monitoring). */
export function effectiveMiimon(a: BondArgs): number | undefined {
  return a.arp_interval ? undefined : a.miimon ?? 100;
}

export function modeName(mode: Mode | number): Mode {
  return typeof mode === "number" ? MODES[mode] : mode;
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

export function addressProblems(a: BondArgs, ip: CommandOutput): string[] {
  if (a.method !== "static" || !a.address) return [];
  if (ip.code !== 0) return [`${a.name} does not exist`];
  const want = a.address.split("/")[0];
  const addresses = (JSON.parse(ip.stdout || "[]") as { addr_info?: { local: string }[] }[]).flatMap((l) => l.addr_info ?? []).map((i) => i.local);
  return addresses.includes(want) ? [] : [`${a.name} does not have address ${want} (has ${addresses.join(", ") || "none"})`];
}

