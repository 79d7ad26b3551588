// The link between the controller and the hosts, per profile: `lan` is the fleet's bridge as
// it is; any other profile puts test/support/link-emulator.ts between every tool and every
// host (one relay process in the controller's namespace, listening on 127.77.0.<host's last
// octet>:22 for each host), so every tool reaches the hosts through the same emulated link.
import { spawn, type ChildProcess } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { TestFleet, TestHost } from "../test/support/sshd-hosts.js";
import { LINK_PROFILES, type LinkProfile, type RelayCounters } from "../test/support/link-emulator.js";
import { repoRoot } from "../test/support/cache.js";
import { onCleanup } from "../test/support/processes.js";
import { BenchError } from "./hosts.js";

const EMULATOR = join(repoRoot, "dist", "test", "support", "link-emulator.js");

export interface Link {
  profile: LinkProfile;
  /** the address every tool uses for the host (the relay's, or the host's own on `lan`) */
  addressOf(h: TestHost): string;
  /** known_hosts for those addresses: the hosts' real keys, so host keys are still checked */
  knownHostsFile: string;
  /** the relay's PID (none on `lan`): its CPU is the emulated network's */
  pid?: number;
  /** stop the relay; its counters (none on `lan`) */
  stop(): Promise<RelayCounters | undefined>;
}

export function parseProfiles(text: string): LinkProfile[] {
  return text.split(",").map((name) => {
    const p = LINK_PROFILES[name.trim()];
    if (!p) throw new BenchError(`--profiles: unknown link profile ${JSON.stringify(name)} (one of ${Object.keys(LINK_PROFILES).join(", ")})`);
    return p;
  });
}

const relayAddress = (h: TestHost) => `127.77.0.${h.address.split(".")[3]}`;

export async function startLink(fleet: TestFleet, profile: LinkProfile, dir: string): Promise<Link> {
  if (profile.rttMs === 0) return { profile, addressOf: (h) => h.address, knownHostsFile: fleet.knownHostsFile, stop: () => Promise.resolve(undefined) };
  const knownHostsFile = join(dir, `known_hosts.${profile.name}`);
  const byAddress = new Map(fleet.hosts.map((h) => [h.address, relayAddress(h)]));
  writeFileSync(
    knownHostsFile,
    readFileSync(fleet.knownHostsFile, "utf8")
      .split("\n")
      .filter(Boolean)
      .map((line) => {
        const [address, ...key] = line.split(" ");
        return `${byAddress.get(address) ?? address} ${key.join(" ")}\n`;
      })
      .join(""),
  );
  const routes = fleet.hosts.map((h) => `${relayAddress(h)}:22=${h.address}:${h.port}`);
  const [cmd, ...args] = fleet.controllerArgv(["node", EMULATOR, profile.name, ...routes]);
  const child = spawn(cmd, args, { stdio: ["ignore", "pipe", "inherit"] });
  // `ip netns exec` execs node, so the child's PID is the relay's own
  const unregister = onCleanup(`link emulator ${profile.name}`, () => {
    if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
  });
  let out = "";
  child.stdout!.on("data", (d) => (out += d));
  const ready = new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new BenchError(`the ${profile.name} link emulator did not start within 30 s`)), 30_000);
    child.stdout!.on("data", () => {
      if (out.includes("ready\n")) {
        clearTimeout(timer);
        resolve();
      }
    });
    child.once("exit", (code) => {
      clearTimeout(timer);
      reject(new BenchError(`the ${profile.name} link emulator exited (${code}) before it was ready`));
    });
  });
  await ready.catch((e: unknown) => {
    unregister();
    throw e;
  });
  const pid = relayPid(child);
  return {
    profile,
    addressOf: relayAddress,
    knownHostsFile,
    pid,
    stop: async () => {
      if (child.exitCode === null && child.signalCode === null) {
        const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
        child.kill("SIGTERM");
        await exited;
      }
      unregister();
      const last = out.trim().split("\n").pop() ?? "";
      try {
        return JSON.parse(last) as RelayCounters;
      } catch {
        return undefined;
      }
    },
  };
}

function relayPid(child: ChildProcess): number {
  if (!child.pid) throw new BenchError("the link emulator has no PID");
  return child.pid;
}

/** The relay's CPU seconds so far (user + sys), to report the emulated network's own cost. */
export function relayCpu(pid: number | undefined): number {
  if (!pid) return 0;
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return (Number(f[11]) + Number(f[12])) / 100;
  } catch {
    return 0;
  }
}

export function describeLink(p: LinkProfile): string {
  return p.rttMs === 0
    ? "lan (the bridge as it is: round trip ~0.1 ms, no loss)"
    : `${p.name} (round trip ${p.rttMs} ± ${p.jitterMs} ms, ${(p.loss * 100).toFixed(1)} % segment loss, emulated)`;
}
