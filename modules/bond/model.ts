// The desired bond, one model for every network stack: its arguments and schema, and the
// kernel's view of a running bond (/proc/net/bonding) that verification and audits read.
import { PATTERNS, mayRunTogether, type ArgProblem, type CommandOutput, type PlayProblem, type PlayTask } from "../../core/module-api.js";
import { RENDERABLE_STACKS } from "../network/stack.js";
import { inSubnet, ipText, prefixOfNetmask, specialUse, subnetOf, subnetRole } from "../network/ipv4.js";
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
  /** Seconds the verification waits for every slave to come up (a Wi-Fi slave: associated and authorized). */
  settle_timeout: number;
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
    mode: {
      oneOf: [
        { type: "string", enum: [...MODES] },
        { type: "integer", minimum: 0, maximum: 6 },
      ],
      default: "active-backup",
    },
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
    // a Wi-Fi slave associates some seconds after its stack starts (NetworkManager: 5-15 s on a busy Pi)
    settle_timeout: { type: "integer", minimum: 1, maximum: 3600, default: 90 },
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

/**
 * The address with its prefix length: a netmask is turned into one, so that every stack
 * renders the same network (without a prefix ifupdown assumes the class's, NetworkManager
 * /24, systemd-networkd /32).
 */
export function withPrefix(a: BondArgs): BondArgs {
  if (a.netmask === undefined) return a;
  const { netmask, ...rest } = a;
  const bits = prefixOfNetmask(netmask);
  if (!a.address || a.address.includes("/") || bits === null) return rest;
  return { ...rest, address: `${a.address}/${bits}` };
}

/** What contradicts itself in a bond's args (checked before any host is contacted); each problem says how to fix it. */
export function argProblems(a: BondArgs): ArgProblem[] {
  const problems: ArgProblem[] = [];
  const add = (path: ArgProblem["path"], message: string) => problems.push({ path, message });
  if (a.name === "lo") add(["name"], `lo is the loopback interface (got "lo"). Name the bond e.g. bond0.`);
  a.slaves.forEach((s, i) => {
    if (s === a.name) add(["slaves", i], `${s} is the bond itself (name: ${a.name}); a bond cannot be its own slave. List its ports (e.g. eth0), or name the bond otherwise.`);
    else if (s === "lo") add(["slaves", i], `lo is the loopback interface; it cannot be a slave. Remove it.`);
  });
  if (a.primary !== undefined && !a.slaves.includes(a.primary))
    add(["primary"], `${a.primary} is not one of the slaves (${a.slaves.join(", ")}). Use one of them, or add it to slaves.`);
  else if (a.primary !== undefined && !MODES_WITH_PRIMARY.includes(modeName(a.mode)))
    add(
      ["primary"],
      `only ${MODES_WITH_PRIMARY.join(", ")} bonds have a primary (mode is ${modeName(a.mode)}): NetworkManager refuses such a profile and ifenslave ignores it. Remove primary, or change mode.`,
    );
  for (const slave of Object.keys(a.slave_options ?? {}))
    if (!a.slaves.includes(slave)) add(["slave_options", slave], `${slave} is not one of the slaves (${a.slaves.join(", ")}). Add it to slaves, or remove its options.`);
  if (a.method === "dhcp") {
    for (const key of ["address", "netmask", "gateway"] as const)
      if (a[key] !== undefined) add([key], `only for method: static (method is dhcp, which takes the ${key} from the DHCP server). Remove it, or set method: static.`);
    return problems;
  }
  return [...problems, ...addressProblemsOf(a)];
}

function addressProblemsOf(a: BondArgs): ArgProblem[] {
  if (!a.address) return [];
  const problems: ArgProblem[] = [];
  const add = (path: ArgProblem["path"], message: string) => problems.push({ path, message });
  const [ip, prefix] = a.address.split("/");
  const maskBits = a.netmask === undefined ? undefined : prefixOfNetmask(a.netmask);
  if (maskBits === null) add(["netmask"], `${a.netmask} is not a netmask (its one bits must be contiguous). Write e.g. 255.255.255.0, or the prefix in address (${ip}/24).`);
  else if (maskBits !== undefined && prefix !== undefined && Number(prefix) !== maskBits)
    add(["netmask"], `${a.netmask} is /${maskBits}, but address says /${prefix}. Remove netmask (the prefix in address is enough).`);
  if (prefix === undefined && a.netmask === undefined) {
    add(
      ["address"],
      `${ip} has no prefix length, and each network stack assumes another (ifupdown the address class's, NetworkManager /24, systemd-networkd /32: no route to the gateway). Write it with one, e.g. ${ip}/24 (or give netmask:).`,
    );
    return problems;
  }
  if (maskBits === null) return problems;
  const subnet = subnetOf(prefix === undefined ? `${ip}/${maskBits}` : a.address);
  const cidr = `${ipText(subnet.network)}/${subnet.bits}`;
  if (subnet.bits === 0) add(["address"], `/0 is every address, not a subnet (got ${a.address}). Give the prefix of the bond's network, e.g. ${ip}/24.`);
  const special = specialUse(ip);
  const role = subnet.bits ? subnetRole(subnet, ip) : null;
  if (special) add(["address"], `${ip} is ${special}, not a host's address. Use the Pi's address on its network.`);
  else if (role) add(["address"], `${ip} is ${role}, not a host's address. Use an address between the two (e.g. ${ipText(subnet.network + 1)}/${subnet.bits}), or fix the prefix.`);
  if (a.gateway !== undefined && subnet.bits) {
    const g = a.gateway;
    if (g === ip) add(["gateway"], `${g} is the bond's own address; the gateway is the router's address on ${cidr}. Use the router's address.`);
    else if (specialUse(g)) add(["gateway"], `${g} is ${specialUse(g)}, not a router's address. Use the router's address on ${cidr}.`);
    else if (!inSubnet(subnet, g))
      add(
        ["gateway"],
        `${g} is outside the bond's subnet ${cidr} (from address ${a.address}${a.netmask ? ` and netmask ${a.netmask}` : ""}): no stack reaches it on-link. Use the router's address on ${cidr}, or fix the prefix.`,
      );
    else if (subnetRole(subnet, g)) add(["gateway"], `${g} is ${subnetRole(subnet, g)}, not a router's address. Use the router's address on ${cidr}.`);
  }
  a.arp_ip_target?.forEach((t, i) => {
    if (t === ip) add(["arp_ip_target", i], `${t} is the bond's own address; ARP monitoring must ask another host (e.g. the gateway). Use another address.`);
  });
  return problems;
}

/**
 * Across the bond tasks of a play on all its hosts: one address on two hosts, and on one
 * host two tasks that claim one interface (as bond or slave) — they would take it from each
 * other on every run. Tasks whose when: never hold together are not compared on one host.
 */
export function playProblems(tasks: PlayTask<BondArgs>[]): PlayProblem[] {
  const problems: PlayProblem[] = [];
  const byAddress = new Map<string, number>();
  tasks.forEach((t, index) => {
    const a = withPrefix(t.args);
    const ip = bondAddress(a);
    const first = ip === undefined ? undefined : byAddress.get(ip);
    if (ip !== undefined && first === undefined) byAddress.set(ip, index);
    else if (first !== undefined && clashes(tasks[first], t)) {
      const other = tasks[first];
      const whose = other.host === t.host ? `task "${other.task}" on this host` : `host ${other.host}${other.task === t.task ? "" : ` (task "${other.task}")`}`;
      problems.push({
        index,
        path: ["address"],
        message: `${ip} is also the address of ${whose}: two hosts would answer one address. Give each its own (e.g. its own bond_address in the inventory).`,
      });
    }
    for (const earlier of tasks.slice(0, index)) {
      if (earlier.host !== t.host || !mayRunTogether(earlier.when, t.when)) continue;
      const theirs = new Set([earlier.args.name, ...earlier.args.slaves]);
      const claims: [ArgProblem["path"], string][] = [[["name"], a.name], ...a.slaves.map((s, i): [ArgProblem["path"], string] => [["slaves", i], s])];
      const clash = claims.find(([, n]) => theirs.has(n));
      if (!clash) continue;
      const [path, n] = clash;
      const role = n === earlier.args.name ? "the bond" : "a slave";
      problems.push({
        index,
        path,
        message: `${n} is already ${role} of task "${earlier.task}" (bond ${earlier.args.name}) on this host: the two tasks would take it from each other on every run. Configure each interface in one task.`,
      });
    }
  });
  return problems;
}

/** One address in two tasks is a clash unless both are on one host and never run together. */
function clashes(a: PlayTask, b: PlayTask): boolean {
  return a.host !== b.host || mayRunTogether(a.when, b.when);
}

/** The address the bond answers at once it is up (static only). */
export function bondAddress(a: BondArgs): string | undefined {
  return a.method === "static" && a.address ? a.address.split("/")[0] : undefined;
}

/** Bonding options with the defaults the module stands for (miimon 100 unless ARP monitoring). */
export function effectiveMiimon(a: BondArgs): number | undefined {
  return a.arp_interval ? undefined : (a.miimon ?? 100);
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
    if (mode === "active-backup" && primaryUp && status.activeSlave !== a.primary) problems.push(`currently active slave is ${status.activeSlave ?? "None"}, want ${a.primary}`);
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
