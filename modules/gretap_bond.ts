// gretap_bond: gretap tunnels, one per underlay link, between a Pi and a fixed gateway.
// The Pi (role bond) enslaves them to an active-backup bond with ARP monitoring; the
// gateway (role bridge) puts its ends in a plain Linux bridge. Rendered as one ifupdown
// stanza in /etc/network/interfaces.d (pre-up `ip link` lines, no ifenslave or
// bridge-utils); takes effect at the next reboot. Lab notes: test/lab/notes-gretap.md.
import { PATTERNS, defineModule, fileChange, PlanError, type PlanContext, type Change, type CommandOutput, type DirState, type FileState, type Probe } from "../core/module-api.js";
import { namesOf, parseInterfaces, sourcedFiles } from "./network/interfaces-file.js";
import { parseBondStatus } from "./bond/model.js";
import { inSubnet, subnetOf } from "./network/ipv4.js";
import { STACK_NAMES, networkStackFact, type NetworkStack } from "./network/stack.js";

const IFNAME = "^[A-Za-z][A-Za-z0-9_-]{0,14}$";
const IPV4 = PATTERNS.ipv4;
const IPV4_CIDR = IPV4.slice(0, -1) + "/(3[0-2]|[12]?\\d)$";
const PATH = PATTERNS.path;
const INTERFACES = "/etc/network/interfaces";

/**
 * gretap overhead: outer IPv4 header 20 + GRE header 4 + the tunnelled Ethernet header 14
 * (the inner FCS is not carried) = 38, so 1462 over a 1500 underlay (the seed's number).
 */
export const GRETAP_OVERHEAD = 20 + 4 + 14;

export interface Tunnel {
  name: string;
  local: string;
  remote: string;
  /** Pin the tunnel's outer packets to this NIC (needed when several tunnels share a remote). */
  dev?: string;
}

export interface GretapBondArgs {
  role: "bond" | "bridge";
  name?: string;
  address: string;
  arp_ip_target?: string;
  tunnels: Tunnel[];
  primary?: string;
  primary_reselect?: "always" | "better" | "failure";
  arp_interval: number;
  arp_missed_max: number;
  arp_validate: "none" | "active" | "backup" | "all" | "filter" | "filter_active" | "filter_backup";
  hub: "bridge" | "bond";
  path?: string;
}

const gretapBondSchema = {
  type: "object",
  additionalProperties: false,
  required: ["address", "tunnels"],
  properties: {
    role: { type: "string", enum: ["bond", "bridge"], default: "bond" },
    name: { type: "string", pattern: IFNAME },
    address: { type: "string", pattern: IPV4_CIDR },
    arp_ip_target: { type: "string", pattern: IPV4 },
    tunnels: {
      type: "array",
      minItems: 2,
      maxItems: 16,
      items: {
        type: "object",
        additionalProperties: false,
        required: ["name", "local", "remote"],
        properties: {
          name: { type: "string", pattern: IFNAME },
          local: { type: "string", pattern: IPV4 },
          remote: { type: "string", pattern: IPV4 },
          dev: { type: "string", pattern: IFNAME },
        },
      },
    },
    primary: { type: "string", pattern: IFNAME },
    primary_reselect: { type: "string", enum: ["always", "better", "failure"] },
    arp_interval: { type: "integer", minimum: 10, maximum: 60000, default: 200 },
    arp_missed_max: { type: "integer", minimum: 1, maximum: 255, default: 3 },
    arp_validate: { type: "string", enum: ["none", "active", "backup", "all", "filter", "filter_active", "filter_backup"], default: "all" },
    hub: { type: "string", enum: ["bridge", "bond"], default: "bridge" },
    path: { type: "string", pattern: PATH },
  },
  if: { properties: { role: { const: "bond" } } },
  then: { required: ["arp_ip_target"] },
};

const deviceName = (a: GretapBondArgs) => a.name ?? (a.role === "bridge" ? "br77" : "bond0");
const configPath = (a: GretapBondArgs) => a.path ?? `/etc/network/interfaces.d/provision-${deviceName(a)}`;
const primaryOf = (a: GretapBondArgs) => a.primary ?? a.tunnels[0].name;
const addressOnly = (cidr: string) => cidr.split("/")[0];

export interface Link {
  ifname: string;
  mtu: number;
  master?: string;
  operstate?: string;
  addresses: string[];
}

/** `ip -j addr`: each device with its MTU, master and IPv4 addresses. */
function parseLinks(ip: CommandOutput): Link[] {
  if (ip.code !== 0 || !ip.stdout.trim()) return [];
  const raw = JSON.parse(ip.stdout) as { ifname: string; mtu: number; master?: string; operstate?: string; addr_info?: { family: string; local: string }[] }[];
  return raw.map((l) => ({
    ifname: l.ifname,
    mtu: l.mtu,
    master: l.master,
    operstate: l.operstate,
    addresses: (l.addr_info ?? []).filter((i) => i.family === "inet").map((i) => i.local),
  }));
}

/** The NIC each tunnel runs over (the one that owns `local`, or `dev`), and what is wrong with that. */
function underlays(a: GretapBondArgs, links: Link[]): { nics: Map<string, Link>; problems: string[] } {
  const nics = new Map<string, Link>();
  const problems: string[] = [];
  const owner = (ip: string) => links.find((l) => l.addresses.includes(ip));
  for (const t of a.tunnels) {
    const nic = owner(t.local);
    if (!nic) {
      problems.push(
        `tunnels.${t.name}.local: ${t.local} is not an address of this host (it has ${links.flatMap((l) => l.addresses.map((x) => `${x} on ${l.ifname}`)).join(", ") || "none"}). Use this host's own underlay address; remote is the far end's.`,
      );
      continue;
    }
    if (t.dev && t.dev !== nic.ifname) problems.push(`tunnels.${t.name}: local ${t.local} is on ${nic.ifname}, not on dev ${t.dev}`);
    const theirs = owner(t.remote);
    if (theirs) problems.push(`tunnels.${t.name}.remote: ${t.remote} is an address of this host (on ${theirs.ifname}); remote must be the far end's underlay address`);
    nics.set(t.name, nic);
  }
  return { nics, problems };
}

/** The bond's (bridge's) MTU: the smallest underlay MTU minus the gretap overhead. */
export function tunnelMtu(nics: Iterable<Link>): number {
  return Math.min(...[...nics].map((n) => n.mtu)) - GRETAP_OVERHEAD;
}

/** Problems with the args alone (no host needed). */
function argProblems(a: GretapBondArgs): string[] {
  const problems: string[] = [];
  const names = a.tunnels.map((t) => t.name);
  const dev = deviceName(a);
  if (new Set(names).size !== names.length) problems.push(`tunnels: names must be distinct (got ${names.join(", ")})`);
  if (names.includes(dev)) problems.push(`tunnels: a tunnel cannot be named like the ${a.role} (${dev})`);
  const pairs = a.tunnels.map((t) => `${t.local}>${t.remote}`);
  if (new Set(pairs).size !== pairs.length) problems.push("tunnels: two tunnels have the same local and remote; each tunnel needs its own underlay pair");
  for (const t of a.tunnels) if (t.local === t.remote) problems.push(`tunnels.${t.name}: local and remote are both ${t.local}`);
  if (configPath(a) === INTERFACES) problems.push(`path: must not be ${INTERFACES} itself (the module writes a file that it sources)`);
  if (a.role === "bond") {
    const target = a.arp_ip_target!;
    if (a.arp_validate === "none")
      problems.push(
        "arp_validate: none is what made the seed's bond ping-pong (a backup tunnel counts as up from the far end's stray traffic, both ends can settle on different tunnels and keep crossing). Use all (the default)",
      );
    if (target === addressOnly(a.address)) problems.push(`arp_ip_target: ${target} is the bond's own address; use the far end's address`);
    else if (!inSubnet(subnetOf(a.address), target))
      problems.push(`arp_ip_target: ${target} is outside ${a.address}; ARP probes only reach the far end of the tunnels on the bond's subnet`);
    if (a.primary && !names.includes(a.primary)) problems.push(`primary: ${a.primary} is not one of the tunnels (${names.join(", ")})`);
  } else {
    for (const key of ["arp_ip_target", "primary", "primary_reselect"] as const)
      if (a[key] !== undefined) problems.push(`${key}: only for role bond (the bridge end has no ARP monitor)`);
  }
  return problems;
}

// ---- rendering ----------------------------------------------------------------------------

const dirOf = (path: string) => path.slice(0, path.lastIndexOf("/"));
const baseOf = (path: string) => path.slice(path.lastIndexOf("/") + 1);

/** Does the interfaces file read `path` (source glob or source-directory)? */
export function sourcesPath(interfaces: string | null, path: string): boolean {
  return parseInterfaces(interfaces).some((b) => b.kind === "source" && sourcedFiles(b, INTERFACES, dirOf(path), [baseOf(path)]).files.includes(path));
}

/**
 * Where ifupdown would read another configuration of the device or a tunnel: a stanza or an
 * auto line in the interfaces file or in another file it sources from the same folder.
 */
function configuredElsewhere(a: GretapBondArgs, interfaces: string | null, dir: DirState | undefined): string | null {
  const names = new Set([deviceName(a), ...a.tunnels.map((t) => t.name)]);
  const path = configPath(a);
  const entries = dir?.entries ?? {};
  const blocks = parseInterfaces(interfaces);
  const files: [string, string | null][] = [
    [INTERFACES, interfaces],
    ...blocks.flatMap((b) =>
      b.kind === "source"
        ? sourcedFiles(b, INTERFACES, dirOf(path), Object.keys(entries))
            .files.filter((f) => f !== path)
            .map((f): [string, string] => [f, entries[baseOf(f)]])
        : [],
    ),
  ];
  for (const [file, text] of files)
    for (const b of parseInterfaces(text)) {
      const named = namesOf(b).filter((n) => names.has(n));
      if (named.length)
        return `${file}:${b.line}: ${named.join(", ")} is configured here too, besides ${path}: ifupdown would read both. Give the ${a.role === "bond" ? "bond or tunnel" : "bridge or tunnel"} another name, or remove ${named.join(", ")} from ${file}`;
    }
  return null;
}

/** The ifupdown stanza: tunnels, then the bond (or bridge) with its options, slaves, MTU. */
export function renderConfig(a: GretapBondArgs, mtu: number): string {
  const dev = deviceName(a);
  const tunnelLines = a.tunnels.map((t) => `ip link add ${t.name} type gretap local ${t.local} remote ${t.remote}${t.dev ? ` dev ${t.dev}` : ""}`);
  const enslave = a.tunnels.map((t) => `ip link set ${t.name} master ${dev}`);
  let pre: string[];
  let head: string[];
  if (a.role === "bond") {
    const options = [
      "mode active-backup",
      `arp_interval ${a.arp_interval}`,
      `arp_missed_max ${a.arp_missed_max}`,
      `arp_ip_target ${a.arp_ip_target}`,
      `arp_validate ${a.arp_validate}`,
    ];
    pre = [
      ...tunnelLines,
      // loading bonding from /etc/modules creates an empty bond0: use it if it is there
      `ip link show ${dev} >/dev/null 2>&1 || ip link add ${dev} type bond`,
      `ip link set ${dev} type bond ${options.join(" ")}`,
      ...enslave,
      `ip link set ${dev} type bond primary ${primaryOf(a)}${a.primary_reselect ? ` primary_reselect ${a.primary_reselect}` : ""}`,
      // after enslaving: enslaving sets every slave to the bond's MTU (1500 by default)
      `ip link set ${dev} mtu ${mtu}`,
    ];
    head = [
      `# gretap tunnels ${a.tunnels.map((t) => t.name).join(", ")} in an active-backup bond, ARP-monitored toward ${a.arp_ip_target}`,
      `# (arp_validate ${a.arp_validate}: see test/lab/notes-gretap.md). Status: cat /proc/net/bonding/${dev}`,
    ];
  } else {
    pre = [
      ...tunnelLines,
      `ip link add ${dev} type bridge stp_state 0 forward_delay 0`,
      ...enslave,
      `ip link set ${dev} mtu ${mtu}`,
      // a bridge does not bring its ports up (a bond does)
      ...a.tunnels.map((t) => `ip link set ${t.name} up`),
    ];
    head = [
      `# gretap tunnels ${a.tunnels.map((t) => t.name).join(", ")} in bridge ${dev} (the hub end of the Pis' active-backup bonds:`,
      `# a probe sent on one tunnel comes back on the others, so the Pi sees its backups up). Ports: ls /sys/class/net/${dev}/brif`,
    ];
  }
  const post = [`ip link del ${dev}`, ...a.tunnels.map((t) => `ip link del ${t.name}`)];
  return [
    `# Managed by provision (gretap_bond module, role ${a.role}); takes effect at boot.`,
    ...head,
    "",
    `auto ${dev}`,
    `iface ${dev} inet static`,
    `    address ${a.address}`,
    ...pre.map((l) => `    pre-up ${l}`),
    ...post.map((l) => `    post-down ${l}`),
    "",
  ].join("\n");
}

// ---- verification -------------------------------------------------------------------------

/** The ARP-monitor lines of /proc/net/bonding/BOND that parseBondStatus does not read. */
export function parseArpMonitor(text: string): { interval: number | null; missedMax: number | null; targets: string[] } {
  const value = (key: string) => new RegExp(`^${key}:[ \\t]*(.*)$`, "m").exec(text)?.[1].trim();
  const num = (v: string | undefined) => (v === undefined ? null : Number(v));
  return {
    interval: num(value("ARP Polling Interval \\(ms\\)")),
    missedMax: num(value("ARP Missed Max")),
    targets: (value("ARP IP target/s \\(n\\.n\\.n\\.n form\\)") ?? "")
      .split(",")
      .map((s) => s.trim())
      .filter(Boolean),
  };
}

type Facts = { ip: CommandOutput; interfaces: FileState; interfacesDir?: DirState; config: FileState; bonding: FileState; arpValidate: FileState; stp: FileState };
type VerifyFacts = {
  ping?: CommandOutput;
  ip: CommandOutput;
  bonding?: FileState;
  arpValidate?: FileState;
  stp?: FileState;
};

export function verifyProblems(a: GretapBondArgs, f: VerifyFacts): string[] {
  const dev = deviceName(a);
  const links = parseLinks(f.ip);
  const link = links.find((l) => l.ifname === dev);
  if (!link) return [`${dev} does not exist`];
  const problems: string[] = [];
  const { nics, problems: underlayProblems } = underlays(a, links);
  if (underlayProblems.length) problems.push(...underlayProblems);
  else if (link.mtu !== tunnelMtu(nics.values())) problems.push(`${dev} MTU is ${link.mtu}, want ${tunnelMtu(nics.values())} (underlay MTU − ${GRETAP_OVERHEAD})`);
  if (!link.addresses.includes(addressOnly(a.address))) problems.push(`${dev} does not have address ${addressOnly(a.address)} (has ${link.addresses.join(", ") || "none"})`);
  const want = a.tunnels.map((t) => t.name).sort();

  if (a.role === "bridge") {
    if (f.stp?.content == null) return [...problems, `${dev} is not a bridge`];
    if (f.stp.content.trim() !== "0") problems.push(`${dev} runs STP (stp_state ${f.stp.content.trim()}); the tunnels would be blocked while it converges`);
    const ports = links
      .filter((l) => l.master === dev)
      .map((l) => l.ifname)
      .sort();
    if (ports.join(",") !== want.join(",")) problems.push(`${dev} ports are {${ports.join(", ")}}, want {${want.join(", ")}}`);
    for (const t of a.tunnels) {
      const port = links.find((l) => l.ifname === t.name);
      if (port && port.operstate === "DOWN") problems.push(`tunnel ${t.name} is down`);
    }
    return problems;
  }

  if (!f.bonding?.content) return [...problems, `${dev} is not a bond (no /proc/net/bonding/${dev})`];
  const status = parseBondStatus(f.bonding.content);
  const arp = parseArpMonitor(f.bonding.content);
  if (status.mode !== "active-backup") problems.push(`mode is ${status.mode ?? "unknown"}, want active-backup`);
  const slaves = status.slaves.map((s) => s.name).sort();
  if (slaves.join(",") !== want.join(",")) problems.push(`slaves are {${slaves.join(", ")}}, want {${want.join(", ")}}`);
  if (arp.interval !== a.arp_interval) problems.push(`ARP polling interval is ${arp.interval ?? "unset"} ms, want ${a.arp_interval}`);
  if (arp.missedMax !== null && arp.missedMax !== a.arp_missed_max) problems.push(`ARP missed max is ${arp.missedMax}, want ${a.arp_missed_max}`);
  if (arp.targets.join(",") !== a.arp_ip_target) problems.push(`ARP targets are {${arp.targets.join(", ")}}, want {${a.arp_ip_target}}`);
  const validate = f.arpValidate?.content?.trim().split(/\s+/)[0];
  if (validate !== a.arp_validate) problems.push(`arp_validate is ${validate ?? "unreadable"}, want ${a.arp_validate}`);
  if (!status.activeSlave) problems.push(`no active slave: ${a.arp_ip_target} does not answer ARP over any tunnel`);
  if (a.hub === "bridge") {
    // Through the hub's bridge every tunnel carries the Pi's own probes back, so each slave is
    // tested; with a bond at the far end backups always read down (notes-gretap.md, "Limits").
    for (const s of status.slaves) if (s.miiStatus !== "up") problems.push(`tunnel ${s.name} MII status is ${s.miiStatus} (no redundancy)`);
    if (status.activeSlave && status.activeSlave !== primaryOf(a)) problems.push(`currently active slave is ${status.activeSlave}, want the primary ${primaryOf(a)}`);
  }
  if (f.ping && f.ping.code !== 0) problems.push(`${a.arp_ip_target} does not answer ping through ${dev}`);
  return problems;
}

export default defineModule({
  name: "gretap_bond",
  description:
    "gretap tunnels (one per underlay link) to a fixed gateway: an active-backup bond with ARP monitoring on the Pi, a bridge on the gateway; rendered to /etc/network/interfaces.d, live after a reboot",
  schema: gretapBondSchema,
  hostFacts: [networkStackFact],
  facts: (a: GretapBondArgs) => ({
    ip: { command: ["ip", "-j", "addr"] },
    interfaces: { file: INTERFACES },
    interfacesDir: { dir: dirOf(configPath(a)) },
    config: { file: configPath(a) },
    // the kernel's view, so that an audit sees a tunnel bond that runs other than configured
    bonding: { file: `/proc/net/bonding/${deviceName(a)}` },
    arpValidate: { file: `/sys/class/net/${deviceName(a)}/bonding/arp_validate` },
    stp: { file: `/sys/class/net/${deviceName(a)}/bridge/stp_state` },
  }),
  plan(a: GretapBondArgs, facts: Facts, context: PlanContext): Change[] {
    const stack = (context.facts[networkStackFact.name] as NetworkStack | undefined)?.stack;
    if (stack && stack !== "ifupdown")
      throw new PlanError(`gretap_bond renders for ifupdown only (an interfaces.d stanza), and this host's network is run by ${STACK_NAMES[stack]}: nothing there would read it`);
    const problems = argProblems(a);
    if (problems.length) throw new PlanError(problems.join("; "));
    const path = configPath(a);
    if (!sourcesPath(facts.interfaces.content, path))
      throw new PlanError(`${INTERFACES} does not read ${path}. Add the line "source ${path.slice(0, path.lastIndexOf("/"))}/*" to it (Debian's default has it).`);
    const elsewhere = configuredElsewhere(a, facts.interfaces.content, facts.interfacesDir);
    if (elsewhere) throw new PlanError(elsewhere);
    const links = parseLinks(facts.ip);
    const { nics, problems: hostProblems } = underlays(a, links);
    if (hostProblems.length) throw new PlanError(hostProblems.join("; "));
    const dev = deviceName(a);
    if (facts.config.content === null) {
      const taken = [dev, ...a.tunnels.map((t) => t.name)].map((n) => links.find((l) => l.ifname === n)).find((l) => l && l.addresses.length);
      if (taken) throw new PlanError(`${taken.ifname} already exists with address ${taken.addresses.join(", ")}, configured outside ${path}. Choose another name.`);
    }
    const mtu = tunnelMtu(nics.values());
    const what =
      a.role === "bond"
        ? `bond ${dev} (active-backup, ARP ${a.arp_ip_target}) over ${a.tunnels.map((t) => t.name).join(" + ")}`
        : `bridge ${dev} of ${a.tunnels.map((t) => t.name).join(" + ")}`;
    const write = fileChange(facts.config, renderConfig(a, mtu), { reboot: true, mode: "0644", summary: `configure ${what}, MTU ${mtu}, in ${path}` });
    if (write.length || context.rebootPending) return write;
    const live = verifyProblems(a, facts);
    return live.length ? [{ kind: "pending", reboot: true, summary: `${dev} does not run as configured (${live.join("; ")}): reboot to bring it up from ${path}` }] : [];
  },
  verify: {
    probes: (a: GretapBondArgs): Record<string, Probe> => {
      const dev = deviceName(a);
      return a.role === "bond"
        ? {
            // first: the bond may need a few seconds after boot to find the far end
            ping: { command: ["ping", "-n", "-c", "3", "-i", "0.5", "-w", "40", "-I", dev, a.arp_ip_target!] },
            ip: { command: ["ip", "-j", "addr"] },
            bonding: { file: `/proc/net/bonding/${dev}` },
            arpValidate: { file: `/sys/class/net/${dev}/bonding/arp_validate` },
          }
        : {
            ip: { command: ["ip", "-j", "addr"] },
            stp: { file: `/sys/class/net/${dev}/bridge/stp_state` },
          };
    },
    check: (a: GretapBondArgs, facts: VerifyFacts) => verifyProblems(a, facts),
  },
});
