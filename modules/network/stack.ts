// The network-stack fact: which of ifupdown, NetworkManager, systemd-networkd and dhcpcd
// runs a host, and which one owns each interface. Gathered by stack.sh in the same round
// trip as every other fact; modules render for the stack it names.
import { readShellAsset, type CommandOutput, type HostFact, type ProbeResult } from "../../core/module-api.js";

export const STACKS = ["ifupdown", "networkmanager", "networkd", "dhcpcd", "none"] as const;
export type Stack = (typeof STACKS)[number];
/** The stacks a module can render for (dhcpcd only hands out addresses). */
export const RENDERABLE_STACKS = ["ifupdown", "networkmanager", "networkd"] as const;
export type RenderableStack = (typeof RENDERABLE_STACKS)[number];

export const STACK_NAMES: Record<Stack, string> = {
  ifupdown: "ifupdown",
  networkmanager: "NetworkManager",
  networkd: "systemd-networkd",
  dhcpcd: "dhcpcd",
  none: "no network stack",
};

export interface NetworkStack {
  /** The stack that runs the management path (the default route's interface), else the one that runs at all. */
  stack: Stack;
  nmVersion?: string;
  services: Record<string, string>;
  installed: Record<string, boolean>;
  defaultRoute?: string;
  /** Interface → the stack that manages it (interfaces nobody manages are absent). */
  owners: Record<string, Stack>;
  /** Interfaces with a stanza in the ifupdown configuration. */
  ifupdownInterfaces: string[];
}

const NM_NOT_OWNED = new Set(["unmanaged", "connected (externally)", "unknown"]);
const NETWORKD_NOT_OWNED = new Set(["unmanaged", "linger", "initialized", "pending"]);

export function parseNetworkStack(output: string): NetworkStack {
  const [facts, config = ""] = splitOnce(output, "\nifupdown-config\n");
  const services: Record<string, string> = {};
  const installed: Record<string, boolean> = {};
  const nmDevices: Record<string, string> = {};
  const networkdLinks: Record<string, string> = {};
  let nmVersion: string | undefined;
  let defaultRoute: string | undefined;
  for (const line of facts.split("\n")) {
    const [kind, ...rest] = line.trim().split(/\s+/);
    if (kind === "service") services[rest[0]] = rest[1];
    else if (kind === "installed") installed[rest[0]] = rest[1] === "yes";
    else if (kind === "nm-version" && rest[0]) nmVersion = rest[0];
    else if (kind === "nm-device") {
      const [device, , ...state] = line.slice("nm-device ".length).split(":");
      if (device) nmDevices[device] = state.join(":");
    } else if (kind === "networkd-link" && rest.length >= 5) networkdLinks[rest[1]] = rest[4];
    else if (kind === "default-route") defaultRoute = rest[0];
  }
  const ifupdownInterfaces = installed.ifup ? stanzaInterfaces(config) : [];
  const owners: Record<string, Stack> = {};
  const claim = (name: string, stack: Stack) => {
    if (name !== "lo" && !owners[name]) owners[name] = stack;
  };
  if (services.NetworkManager === "active") for (const [device, state] of Object.entries(nmDevices)) if (!NM_NOT_OWNED.has(state)) claim(device, "networkmanager");
  if (services["systemd-networkd"] === "active") for (const [link, setup] of Object.entries(networkdLinks)) if (!NETWORKD_NOT_OWNED.has(setup)) claim(link, "networkd");
  for (const name of ifupdownInterfaces) claim(name, "ifupdown");
  return { stack: hostStack(services, installed, owners, defaultRoute), nmVersion, services, installed, defaultRoute, owners, ifupdownInterfaces };
}

function hostStack(services: Record<string, string>, installed: Record<string, boolean>, owners: Record<string, Stack>, defaultRoute?: string): Stack {
  if (defaultRoute && owners[defaultRoute]) return owners[defaultRoute];
  if (services.NetworkManager === "active") return "networkmanager";
  if (services["systemd-networkd"] === "active" && Object.values(owners).includes("networkd")) return "networkd";
  if (installed.ifup) return "ifupdown";
  if (services.dhcpcd === "active") return "dhcpcd";
  return "none";
}

/** Interfaces named by iface/auto/allow-* lines of an interfaces(5) file (loopback left out). */
export function stanzaInterfaces(config: string): string[] {
  const names = new Set<string>();
  for (const raw of config.split("\n")) {
    const words = raw.replace(/#.*/, "").trim().split(/\s+/);
    if (words[0] === "iface" && words[1]) names.add(words[1]);
    else if (words[0] === "auto" || words[0]?.startsWith("allow-")) words.slice(1).forEach((w) => names.add(w));
  }
  names.delete("lo");
  return [...names];
}

function splitOnce(text: string, separator: string): [string, string?] {
  const at = text.indexOf(separator);
  return at < 0 ? [text] : [text.slice(0, at), text.slice(at + separator.length)];
}

export function describeStack(s: NetworkStack): string {
  const name = s.stack === "networkmanager" && s.nmVersion ? `NetworkManager ${s.nmVersion}` : STACK_NAMES[s.stack];
  const owned = Object.entries(s.owners).map(([iface, stack]) => (stack === s.stack ? iface : `${iface}: ${STACK_NAMES[stack]}`));
  const others = (["NetworkManager", "systemd-networkd", "dhcpcd"] as const).filter((service) => service !== STACK_NAMES[s.stack] && s.services[service] === "active");
  return [`${name}${owned.length ? ` (${owned.join(", ")})` : ""}`, ...others.map((o) => `${o} also running`)].join("; ");
}

/** The host fact `network_stack`: usable in `when:` and shown per host in plans and reports. */
export const networkStackFact: HostFact<NetworkStack> = {
  name: "network_stack",
  description: "the network stack that runs the host's management path",
  values: [...STACKS],
  probe: { command: ["sh", "-c", readShellAsset(import.meta.url, "stack.sh"), "provision-stack"] },
  parse: (result: ProbeResult) => parseNetworkStack((result as CommandOutput).stdout),
  value: (fact) => fact.stack,
  describe: describeStack,
};

/** The stack a module renders for: its `stack` argument, else the host's fact. */
export function chosenStack(argument: string | undefined, fact: NetworkStack | undefined): Stack {
  if (argument && argument !== "auto") return argument as Stack;
  return fact?.stack ?? "none";
}
