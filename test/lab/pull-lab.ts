// The pull-mode lab: "Pis" (QEMU guests, Debian's kernel, one flavour each) on a site LAN behind
// a NAT router, their agents (Debian's own nodejs) connected out to a 3-node NATS JetStream
// cluster, and the controller on the cluster's side, where it cannot reach a Pi at all.
//
//   site (the lab's namespace)                                   cluster side (the hub namespace)
//   pi1 eth0 10.77.0.11 ┐                                        ┌─ n1 10.78.0.11 ┐
//       eth1 ───────────┴─ br0 10.77.0.1 [router] wan0 10.78.0.2 ─ br0 10.78.0.1 ─ n2 10.78.0.12 ├ nats-server
//   (apt repo on 10.77.0.1; the Pi's gateway)        masquerade   (controller)   └─ n3 10.78.0.13 ┘
//
// The router masquerades the site's connections (from its pool, 10.77.0.0/25) out of wan0
// and drops every new connection coming in, like an LTE router's carrier-grade NAT: the
// controller, given a route to the site's LAN through the router, still cannot open SSH
// to the Pi. What the Pi needs on site
// (Debian's nodejs, provision enrol) is done from the site's side, like an installer would.
import { existsSync, mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { startLab, type Flavor, type Guest, type Lab } from "./lab.js";
import { GATEWAY } from "./e2e-support.js";
import { stringify } from "yaml";
import { startNatsCluster, type NatsCluster } from "../support/nats-cluster.js";
import { inNamespace } from "../support/netns.js";
import { removeOnCleanup, run, sh } from "../support/processes.js";
import { CLI, provision, type CliResult } from "../integration/provision-cli.js";
import { repoRoot } from "../support/cache.js";
import { loadAuthority } from "../../cli/fleet-config.js";
import type { DeviceStatus } from "../../core/pull/fleet-status.js";

const CLUSTER_SUBNET = "10.78.0";
const ROUTER_WAN = `${CLUSTER_SUBNET}.2`;
const SITE_LAN = "10.77.0.0/24";
/** What the router NATs: its LAN's lower half (a Pi moved above it is on the LAN, but cut off from the cluster). */
export const NAT_POOL = "10.77.0.0/25";

/** The router's rules: masquerade out of wan0, nothing new in (nft, in the lab's namespace). */
const NAT_RULES = `table ip provision_lab_nat {
  chain postrouting {
    type nat hook postrouting priority srcnat; policy accept;
    oifname "wan0" ip saddr ${NAT_POOL} masquerade
  }
  chain forward {
    type filter hook forward priority filter; policy accept;
    iifname "wan0" ct state new drop
  }
}
`;

export interface PullLab {
  lab: Lab;
  cluster: NatsCluster;
  fleetDir: string;
  inventory: string;
  dir: string;
  /** provision on the cluster's side (publish, status --fleet): it reaches the cluster, not the Pi. */
  controller(args: string[]): Promise<CliResult>;
  /** provision on the site's LAN (an installer's laptop): it reaches the Pi over SSH. */
  onSite(args: string[]): Promise<CliResult>;
  /** Files put on a Pi by whoever is on site (an SD card, a technician's laptop): scp from the site's LAN. */
  copyOnSite(pi: Guest, files: string[], destination: string): Promise<void>;
  /** The real OpenSSH client from the controller's side to a Pi, host key verified. */
  sshFromController(pi: Guest, command: string): Promise<{ code: number; stdout: string; stderr: string }>;
  /** `provision status --fleet --json` on the controller's side. */
  status(): Promise<DeviceStatus[]>;
  /** Poll status --fleet until the device has a result for `version`. */
  result(device: string, version: number, ms: number): Promise<DeviceStatus>;
  /** The agent's journal on a Pi (read on site). */
  agentLog(pi: Guest, lines?: number): Promise<string>;
  stop(): Promise<void>;
}

/** `flavors`: one per Pi (default one debian12 Pi). */
export async function startPullLab(opts: { flavors?: Flavor[]; name?: string } = {}): Promise<PullLab> {
  const flavors = opts.flavors ?? ["debian12"];
  if (sh(["sh", "-c", "command -v nft"], { allowFail: true }).code !== 0) throw new Error("nft is not installed (Debian package nftables): run `bash test/setup.sh` as root");
  const dir = mkdtempSync(join(tmpdir(), "provision-pull-lab-"));
  removeOnCleanup(dir);
  const fleetDir = join(dir, "fleet");
  const servers = [11, 12, 13].flatMap((n) => ["--server", `${CLUSTER_SUBNET}.${n}:4222`]);
  const init = await provision((argv) => argv, ["fleet", "init", "--name", "lab", ...servers, "--fleet-dir", fleetDir]);
  if (init.code !== 0) throw new Error(`provision fleet init failed: ${init.output}`);
  const stops: Array<() => void | Promise<void>> = [];
  const stop = async () => {
    while (stops.length) await stops.pop()!();
  };
  try {
    const [cluster, lab] = await Promise.all([
      startNatsCluster({ authority: loadAuthority(fleetDir), subnet: CLUSTER_SUBNET }),
      startLab({ guests: flavors.length, flavor: flavors, secondNic: "eth1", name: opts.name ?? "lab-pull" }),
    ]);
    stops.push(
      () => cluster.stop(),
      () => lab.stop(),
    );
    // the router: the lab's namespace (the Pi's gateway), its WAN on the cluster's bridge
    sh(["ip", "-n", cluster.hubNs, "link", "add", "vsite", "type", "veth", "peer", "name", "wan0", "netns", lab.netns]);
    sh(["ip", "-n", cluster.hubNs, "link", "set", "vsite", "master", "br0", "up"]);
    sh(["ip", "-n", lab.netns, "addr", "add", `${ROUTER_WAN}/24`, "dev", "wan0"]);
    sh(["ip", "-n", lab.netns, "link", "set", "wan0", "up"]);
    sh(["ip", "netns", "exec", lab.netns, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1"]);
    sh(["ip", "netns", "exec", lab.netns, "nft", "-f", "-"], { input: NAT_RULES });
    // the controller even knows the way to the site's LAN: the NAT, not a missing route, keeps it out
    sh(["ip", "-n", cluster.hubNs, "route", "add", SITE_LAN, "via", ROUTER_WAN]);
    const inventory = siteInventory(lab, join(dir, "pis.yaml"));
    const env = { ...process.env, PROVISION_FLEET_DIR: fleetDir };
    const cli = (ns: string) => async (args: string[]) => {
      const r = await run(inNamespace(ns, [process.execPath, CLI, ...args]), { env, cwd: repoRoot });
      return { ...r, output: r.stdout + r.stderr };
    };
    const controller = cli(cluster.hubNs);
    const status = async (): Promise<DeviceStatus[]> => {
      const r = await controller(["status", "--fleet", "--json"]);
      if (!r.stdout.startsWith("[")) throw new Error(`status --fleet: ${r.output}`);
      return JSON.parse(r.stdout);
    };
    const agentLog = async (pi: Guest, lines = 80) => (await pi.ssh(`journalctl -u provision-agent -b -n ${lines} --no-pager -o cat`, { timeoutMs: 30_000 })).stdout;
    const journalOf = async (device: string) => {
      const pi = lab.guests.find((g) => g.name === device);
      return pi ? agentLog(pi).catch(() => "(not readable)") : "(no such guest)";
    };
    return {
      lab,
      cluster,
      fleetDir,
      inventory,
      dir,
      controller,
      onSite: cli(lab.netns),
      async copyOnSite(pi, files, destination) {
        const r = await run(inNamespace(lab.netns, ["scp", ...sshOptions(lab), ...files, `root@${pi.address}:${destination}`]), { timeout: 120_000, killSignal: "SIGKILL" });
        if (r.code !== 0) throw new Error(`scp to ${pi.name} failed: ${r.stderr}`);
      },
      sshFromController: (pi, command) =>
        run(inNamespace(cluster.hubNs, ["ssh", ...sshOptions(lab), "-o", "ConnectTimeout=5", `root@${pi.address}`, command]), { timeout: 30_000, killSignal: "SIGKILL" }),
      status,
      async result(device, version, ms) {
        const deadline = Date.now() + ms;
        for (;;) {
          const row = (await status()).find((r) => r.device === device);
          if (row?.lastResult?.version === version) return row;
          if (Date.now() > deadline)
            throw new Error(
              `no result of ${device} for version ${version} in status --fleet within ${ms / 1000}s (last: ${JSON.stringify(row)})\n--- the agent's journal on ${device} (this boot) ---\n${await journalOf(device)}`,
            );
          await new Promise((r) => setTimeout(r, 5000));
        }
      },
      agentLog,
      stop,
    };
  } catch (error) {
    await stop();
    throw error;
  }
}

/** The real OpenSSH client's options for the lab's guests: its key only, host keys verified, never a prompt. */
const sshOptions = (lab: Lab): string[] => [
  "-F",
  "/dev/null",
  "-i",
  lab.identityFile,
  "-o",
  "IdentitiesOnly=yes",
  "-o",
  `UserKnownHostsFile=${lab.knownHostsFile}`,
  "-o",
  "StrictHostKeyChecking=yes",
  "-o",
  "BatchMode=yes",
];

/** An inventory of the site's Pis with what the eth0+eth1 seed needs (bond_address, bond_gateway); `perHost` overrides. */
export function siteInventory(lab: Lab, file: string, perHost: Record<string, Record<string, unknown>> = {}): string {
  const hosts = Object.fromEntries(lab.guests.map((g) => [g.name, { address: g.address, bond_address: `${g.address}/24`, ...perHost[g.name] }]));
  const vars = { user: "root", identity_file: lab.identityFile, known_hosts_file: lab.knownHostsFile, bond_gateway: GATEWAY };
  writeFileSync(file, stringify({ all: { vars, children: { pis: { hosts } } } }));
  return file;
}

/** A playbook that installs Debian's nodejs (from the lab's apt repository) for the agent. */
export function nodePlaybook(dir: string): string {
  const file = join(dir, "nodejs.yaml");
  if (!existsSync(file)) writeFileSync(file, "- name: Node.js for the pull agent\n  hosts: pis\n  tasks:\n    - name: Debian's own nodejs\n      apt:\n        name: nodejs\n");
  return file;
}
