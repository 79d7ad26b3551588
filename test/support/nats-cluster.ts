// A real nats-server cluster with JetStream for pull-mode tests: each node in its own
// network namespace, joined by a bridge in a "hub" namespace where the clients run.
//
//   hub netns: br0 10.77.0.1/24 (or another subnet) ── veth ── node netns n1: 10.77.0.11 (client :4222, cluster :6222)
//                                 ├─ veth ── n2: 10.77.0.12
//                                 └─ veth ── n3: 10.77.0.13
//
// Auth is the fleet's decentralised auth (credentials.serverAuthConfig): every node gets
// the same configuration apart from its name and address. Nodes are started and killed
// by PID; everything is registered with onCleanup.
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { serverAuthConfig, type FleetAuthority } from "../../core/pull/credentials.js";
import { uniqueName } from "./netns.js";
import { killPid, onCleanup, sh } from "./processes.js";

export interface NatsNode {
  name: string;
  address: string;
  netns: string;
  dir: string;
  log: string;
  pid?: number;
}

export interface NatsCluster {
  nodes: NatsNode[];
  /** "10.77.0.11:4222", … : what clients are given. */
  servers: string[];
  /** The namespace where clients must run (it holds the bridge). */
  hubNs: string;
  dir: string;
  /** Kill one node (SIGKILL: as if it crashed). */
  kill(node: NatsNode): void;
  start(node: NatsNode): Promise<void>;
  stop(): void;
}

/**
 * `monitor`: each node also serves its monitoring endpoints (/varz, /jsz) on port 8222 (benchmarks).
 * `subnet`: the bridge's /24 (default 10.77.0; the lab's guests use that one, so a cluster joined to a lab needs another).
 */
export async function startNatsCluster(opts: { authority: FleetAuthority; size?: number; monitor?: boolean; maxFileStore?: string; subnet?: string }): Promise<NatsCluster> {
  const size = opts.size ?? 3;
  const subnet = opts.subnet ?? "10.77.0";
  if (sh(["sh", "-c", "command -v nats-server"], { allowFail: true }).code !== 0)
    throw new Error("nats-server is not installed (Debian package nats-server): run `bash test/setup.sh` as root");
  let id = uniqueName("natsc");
  while (existsSync(`/run/netns/${id}-hub`)) id = uniqueName("natsc");
  const hubNs = `${id}-hub`;
  const dir = mkdtempSync(join(tmpdir(), `${id}-`));
  const nodes: NatsNode[] = Array.from({ length: size }, (_, i) => ({
    name: `n${i + 1}`,
    address: `${subnet}.${11 + i}`,
    netns: `${id}-n${i + 1}`,
    dir: join(dir, `n${i + 1}`),
    log: join(dir, `n${i + 1}.log`),
  }));
  const namespaces = [hubNs, ...nodes.map((n) => n.netns)];
  const children = new Map<NatsNode, ChildProcess>();

  const stop = (): void => {
    for (const n of nodes) killPid(n.pid, "SIGKILL");
    sh(["ip", "-force", "-batch", "-"], { input: namespaces.map((n) => `netns delete ${n}\n`).join(""), allowFail: true });
    rmSync(dir, { recursive: true, force: true });
  };
  const unregister = onCleanup(`nats cluster ${id}`, stop);

  try {
    sh(["ip", "-batch", "-"], { input: namespaces.map((n) => `netns add ${n}\n`).join("") });
    sh(["ip", "-n", hubNs, "-batch", "-"], {
      input:
        [
          "link set lo up",
          "link add br0 type bridge",
          `addr add ${subnet}.1/24 dev br0`,
          "link set br0 up",
          ...nodes.flatMap((n, i) => [`link add vn${i + 1} type veth peer name eth0 netns ${n.netns}`, `link set vn${i + 1} master br0 up`]),
        ].join("\n") + "\n",
    });
    for (const n of nodes) sh(["ip", "-n", n.netns, "-batch", "-"], { input: ["link set lo up", `addr add ${n.address}/24 dev eth0`, "link set eth0 up"].join("\n") + "\n" });

    for (const n of nodes) {
      mkdirSync(join(n.dir, "jwt"), { recursive: true });
      writeFileSync(
        join(n.dir, "nats.conf"),
        [
          `server_name: ${n.name}`,
          `listen: ${n.address}:4222`,
          `jetstream { store_dir: ${JSON.stringify(join(n.dir, "js"))}, max_memory_store: 64MB, max_file_store: ${opts.maxFileStore ?? "256MB"} }`,
          ...(opts.monitor ? [`http: ${n.address}:8222`] : []),
          `cluster {`,
          `  name: pull-test`,
          `  listen: ${n.address}:6222`,
          `  routes: [${nodes
            .filter((o) => o !== n)
            .map((o) => `nats-route://${o.address}:6222`)
            .join(", ")}]`,
          `}`,
          await serverAuthConfig(opts.authority, join(n.dir, "jwt")),
        ].join("\n"),
      );
    }
    const start = async (n: NatsNode): Promise<void> => {
      writeFileSync(n.log, "");
      const child = spawn("ip", ["netns", "exec", n.netns, "nats-server", "-c", join(n.dir, "nats.conf"), "-l", n.log], { stdio: "ignore" });
      children.set(n, child);
      n.pid = child.pid; // ip netns exec execs nats-server: same PID
      await waitFor(() => readFileSync(n.log, "utf8").includes("Server is ready"), 10_000, `nats-server ${n.name} to be ready (log ${n.log})`);
    };
    await Promise.all(nodes.map(start));
    return {
      nodes,
      servers: nodes.map((n) => `${n.address}:4222`),
      hubNs,
      dir,
      kill: (n) => {
        killPid(n.pid, "SIGKILL");
        n.pid = undefined;
      },
      start,
      stop: unregister,
    };
  } catch (error) {
    unregister();
    throw error;
  }
}

export async function waitFor(check: () => boolean | Promise<boolean>, ms: number, what: string): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
