// The multi-WAN lab: one Pi guest routing a LAN through two uplink routers to a test
// server, all inside namespaces of the lab's own.
//
//   LAN client (ns, 10.77.0.100) ─ br0 ─ eth0 [pi1] eth1 ─ wan1 ─ router r1 (10.201.0.1 | 198.51.100.1) ─┐
//   controller (lab ns, 10.77.0.1) ┘            eth2 ─ wan2 ─ router r2 (10.202.0.1 | 198.51.100.2) ─ inet ─ server 198.51.100.10
//
// The routers are plain namespaces on this machine's kernel (forwarding, no NAT); the Pi
// masquerades out of each uplink, so the server sees which uplink a connection used.
import { startLab, type Lab } from "./lab.js";
import { createNamespace, inNamespace, uniqueName } from "../support/netns.js";
import { sh } from "../support/processes.js";

export const SERVER = "198.51.100.10";
export const LAN_CLIENT = "10.77.0.100";
export const UPLINKS = [
  { name: "isp1", interface: "eth1", pi: "10.201.0.2", router: "10.201.0.1", outside: "198.51.100.1" },
  { name: "isp2", interface: "eth2", pi: "10.202.0.2", router: "10.202.0.1", outside: "198.51.100.2" },
] as const;

export interface WanLab extends Lab {
  /** argv run inside the LAN client's namespace. */
  lanArgv(argv: string[]): string[];
  /** argv run inside the server's namespace. */
  serverArgv(argv: string[]): string[];
  /** Cut (or restore) router `index`'s outside link: the Pi's NIC keeps its carrier. */
  setUplinkOutside(index: number, up: boolean): void;
  /** argv run inside router `index`'s namespace. */
  routerArgv(index: number, argv: string[]): string[];
}

/** veth pair: `inner` in `ns` with `cidr`, its peer attached to `bridge` in the lab namespace. */
function plug(lab: Lab, ns: string, inner: string, cidr: string, bridge: string, peer: string): void {
  sh(["ip", "-n", lab.netns, "link", "add", peer, "type", "veth", "peer", "name", inner, "netns", ns]);
  sh(["ip", "-n", lab.netns, "link", "set", peer, "master", bridge, "up"]);
  sh(["ip", "-n", ns, "addr", "add", cidr, "dev", inner]);
  sh(["ip", "-n", ns, "link", "set", inner, "up"]);
}

export async function startWanLab(): Promise<WanLab> {
  const lab = await startLab({
    guests: 1,
    name: "lab-wan",
    links: UPLINKS.map((u, k) => ({ bridge: `wan${k + 1}`, address: () => `${u.pi}/24` })),
  });
  const extra: Array<() => void> = [];
  try {
    sh(["ip", "-n", lab.netns, "link", "add", "inet", "type", "bridge"]);
    sh(["ip", "-n", lab.netns, "link", "set", "inet", "up"]);
    const routers = UPLINKS.map((u, k) => {
      const ns = createNamespace(uniqueName(`lab-r${k + 1}`));
      extra.push(ns.remove);
      plug(lab, ns.name, "lan", `${u.router}/24`, `wan${k + 1}`, `r${k + 1}lan`);
      plug(lab, ns.name, "out", `${u.outside}/24`, "inet", `r${k + 1}out`);
      sh(["ip", "netns", "exec", ns.name, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1"]);
      return ns.name;
    });
    const server = createNamespace(uniqueName("lab-srv"));
    extra.push(server.remove);
    plug(lab, server.name, "eth0", `${SERVER}/24`, "inet", "srv");
    UPLINKS.forEach((u) => sh(["ip", "-n", server.name, "route", "add", `${u.pi.replace(/\.\d+$/, ".0")}/24`, "via", u.outside]));
    const lan = createNamespace(uniqueName("lab-lan"));
    extra.push(lan.remove);
    plug(lab, lan.name, "eth0", `${LAN_CLIENT}/24`, "br0", "lan");
    sh(["ip", "-n", lan.name, "route", "add", "default", "via", lab.guests[0].address]);

    const stop = lab.stop;
    return {
      ...lab,
      lanArgv: (argv) => inNamespace(lan.name, argv),
      serverArgv: (argv) => inNamespace(server.name, argv),
      routerArgv: (index, argv) => inNamespace(routers[index], argv),
      setUplinkOutside: (index, up) => sh(["ip", "-n", routers[index], "link", "set", "out", up ? "up" : "down"]),
      async stop() {
        while (extra.length) extra.pop()!();
        await stop();
      },
    };
  } catch (error) {
    while (extra.length) extra.pop()!();
    await lab.stop();
    throw error;
  }
}
