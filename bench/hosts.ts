// The benchmark's view of a fleet: inventories and Ansible settings for it, the hosts'
// SSH round trips (from their sshd logs), and the fresh state the apply benchmark resets to.
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { spawnSync } from "node:child_process";
import { parse, stringify } from "yaml";
import type { TestFleet, TestHost } from "../test/support/sshd-hosts.js";
import { repoRoot } from "../test/support/cache.js";
import { renderInterfaces } from "../modules/bond/ifupdown.js";
import type { BondArgs } from "../modules/bond/model.js";
import type { Link } from "./links.js";

export const AUDIT = join(repoRoot, "bench", "audit.yaml");

/** An error of the benchmark itself (not of a measured tool): ends the size, reported in one line. */
export class BenchError extends Error {}

export type Strategy = "linear" | "mitogen";

export interface Setup {
  fleet: TestFleet;
  n: number;
  dir: string;
  provisionInventory: string;
  ansibleInventory: string;
  ansibleEnv: Record<Strategy, NodeJS.ProcessEnv>;
  controlDir: string;
  hostPids: number[];
  link: Link;
}

function bondTaskArgs(): BondArgs {
  const plays = parse(readFileSync(AUDIT, "utf8")) as { tasks: { bond?: Partial<BondArgs> }[] }[];
  const args = plays.flatMap((p) => p.tasks).find((t) => t.bond)!.bond!;
  // The schema's defaults (bond.ts), then Jinja placeholders for the per-host values.
  return {
    name: "bond0",
    method: "static",
    path: "/etc/network/interfaces",
    backup_path: "/etc/network/interfaces.orig",
    ...args,
    address: "{{ bond_address }}",
    gateway: "{{ bond_gateway }}",
  } as BondArgs;
}

/** Where Debian's ansible-mitogen keeps its strategy plugins (it also links them into Ansible's own folder); asked of
 *  Debian's Python, the one ansible-playbook runs on (another python3 may come first in PATH). */
export function mitogenStrategyDir(): string {
  const r = spawnSync("/usr/bin/python3", ["-c", "import ansible_mitogen, os; print(os.path.dirname(ansible_mitogen.__file__))"], { encoding: "utf8" });
  if (r.status !== 0) throw new BenchError("ansible-mitogen is not installed (bench/run.sh installs it: bash test/setup.sh ansible ansible-mitogen time)");
  return join(r.stdout.trim(), "plugins", "strategy");
}

/** Inventories and Ansible's settings for the fleet behind `link`, in `dir`. */
export function setup(fleet: TestFleet, dir: string, link: Link): Setup {
  const hosts = fleet.hosts;
  const n = hosts.length;
  mkdirSync(dir, { recursive: true });
  const provisionInventory = join(dir, "inventory.yaml");
  writeFileSync(
    provisionInventory,
    stringify({
      all: {
        vars: { user: "root", identity_file: fleet.identityFile, known_hosts_file: link.knownHostsFile, bond_gateway: fleet.bridgeAddress },
        children: { pis: { hosts: Object.fromEntries(hosts.map((h) => [h.name, { address: link.addressOf(h), bond_address: `${h.address}/24` }])) } },
      },
    }),
  );

  const template = join(dir, "interfaces.j2");
  writeFileSync(template, renderInterfaces(bondTaskArgs()));
  const ansibleInventory = join(dir, "ansible-inventory.yaml");
  writeFileSync(
    ansibleInventory,
    stringify({
      all: {
        vars: {
          ansible_user: "root",
          ansible_ssh_private_key_file: fleet.identityFile,
          ansible_ssh_common_args: `-o UserKnownHostsFile=${link.knownHostsFile} -o GlobalKnownHostsFile=/dev/null -o StrictHostKeyChecking=yes`,
          ansible_python_interpreter: "/usr/bin/python3",
          bond_gateway: fleet.bridgeAddress,
          interfaces_template: template,
        },
        children: { pis: { hosts: Object.fromEntries(hosts.map((h) => [h.name, { ansible_host: link.addressOf(h), bond_address: `${h.address}/24` }])) } },
      },
    }),
  );
  const controlDir = join(dir, "cp");
  mkdirSync(controlDir);
  const ansibleHome = join(dir, "ansible-home");
  mkdirSync(ansibleHome);
  writeFileSync(
    join(dir, "ansible.cfg"),
    [
      "[defaults]",
      `forks = ${n}`,
      "retry_files_enabled = False",
      "host_key_checking = True",
      "interpreter_python = /usr/bin/python3",
      "deprecation_warnings = False",
      "",
      "[ssh_connection]",
      "pipelining = True",
      `control_path_dir = ${controlDir}`,
      "",
    ].join("\n"),
  );
  const common: NodeJS.ProcessEnv = {
    ...process.env,
    ANSIBLE_CONFIG: join(dir, "ansible.cfg"),
    ANSIBLE_HOME: ansibleHome,
    ANSIBLE_LOCAL_TEMP: join(ansibleHome, "tmp"),
    ANSIBLE_PIPELINING: "1",
    ANSIBLE_NOCOLOR: "1",
    ANSIBLE_FORCE_COLOR: "0",
    ANSIBLE_SSH_CONTROL_PATH_DIR: controlDir,
  };
  const ansibleEnv: Record<Strategy, NodeJS.ProcessEnv> = {
    linear: { ...common, ANSIBLE_STRATEGY: "linear" },
    mitogen: { ...common, ANSIBLE_STRATEGY: "mitogen_linear", ANSIBLE_STRATEGY_PLUGINS: mitogenStrategyDir() },
  };
  return { fleet, n, dir, provisionInventory, ansibleInventory, ansibleEnv, controlDir, hostPids: hosts.map((h) => h.pid), link };
}

/** Hosts as a real fleet would be: apt knows the package index (Ansible's apt module refuses
    a package it cannot find in the index; provision only asks dpkg). One host fetches the
 *  index from the fleet's local repository; the others get a copy. */
export async function prepareHosts(fleet: TestFleet): Promise<void> {
  const hosts = fleet.hosts;
  const first = hosts[0];
  const update = await fleet.exec(first, [
    "sh",
    "-c",
    "apt-get update -q >/dev/null && apt-cache gencaches >/dev/null && tar -C /var/lib/apt/lists -c --exclude=lock --exclude=partial . | base64 -w0",
  ]);
  if (update.code !== 0) throw new BenchError(`apt-get update on ${first.name}: ${firstLine(update.stderr)}`);
  await mapLimit(hosts.slice(1), 8, async (h) => {
    const r = await fleet.exec(h, ["sh", "-c", "base64 -d | tar -C /var/lib/apt/lists -x && apt-cache gencaches >/dev/null"], update.stdout);
    if (r.code !== 0) throw new BenchError(`apt index on ${h.name}: ${firstLine(r.stderr)}`);
  });
}

// --- SSH round trips, from each host's sshd log (LogLevel VERBOSE) --------------------------

export interface SshdCounts {
  connections: number[];
  commands: number[];
}

/** Connections ("Accepted publickey") and commands ("Starting session: command") each host's sshd logged so far. */
export function sshdCounts(fleet: TestFleet): SshdCounts {
  const counts: SshdCounts = { connections: [], commands: [] };
  for (const h of fleet.hosts) {
    let log = "";
    try {
      log = readFileSync(join(fleet.dir, `${h.name}.log`), "utf8");
    } catch {
      /* not yet */
    }
    counts.connections.push(count(log, "Accepted publickey"));
    counts.commands.push(count(log, "Starting session: command"));
  }
  return counts;
}

export function countsSince(before: SshdCounts, after: SshdCounts): SshdCounts {
  return {
    connections: after.connections.map((x, i) => x - before.connections[i]),
    commands: after.commands.map((x, i) => x - before.commands[i]),
  };
}

function count(text: string, needle: string): number {
  let n = 0;
  for (let at = text.indexOf(needle); at >= 0; at = text.indexOf(needle, at + needle.length)) n++;
  return n;
}

// --- the fresh state, for the apply benchmark ----------------------------------------------

/** What an apply may change on a host and a reset must put back. */
export interface Touched {
  files: string[];
  packages: string[];
  dirs: string[];
}

const FINGERPRINT = `files=$1 packages=$2 dirs=$3
for f in $files; do if [ -e "$f" ]; then sha256sum "$f"; else echo "absent $f"; fi; done
for p in $packages; do echo "$p: $(dpkg-query -W -f '\${db:Status-Abbrev}' "$p" 2>/dev/null || echo unknown)"; done
for d in $dirs; do if [ -e "$d" ]; then echo "$d: $(find "$d" | sort | sha256sum)"; else echo "absent $d"; fi; done
echo "dpkg status: $(sha256sum < /var/lib/dpkg/status)"
echo "apt archives: $(find /var/cache/apt/archives -maxdepth 1 -name '*.deb' | sort | tr '\\n' ' ')"`;

// Puts each file back from stdin ("path base64" lines, "-" for a file that did not exist),
// purges the packages, removes the dirs (provision's state, Ansible's temp files).
const RESET = `set -e
packages=$1 dirs=$2
while read -r path content; do
  if [ "$content" = "-" ]; then rm -f "$path"; else printf '%s' "$content" | base64 -d > "$path"; fi
done
for p in $packages; do
  if dpkg-query -W -f '\${db:Status-Abbrev}' "$p" 2>/dev/null | grep -q '^[ircuhHfWt]'; then dpkg --purge "$p" >/dev/null; fi
done
rm -rf $dirs /var/cache/apt/archives/*.deb /root/.ansible`;

export interface FreshState {
  fingerprint: string[];
  files: Record<string, string | null>[];
}

export function fingerprint(fleet: TestFleet, h: TestHost, t: Touched): Promise<string> {
  return fleet.exec(h, ["sh", "-c", FINGERPRINT, "fingerprint", t.files.join(" "), t.packages.join(" "), t.dirs.join(" ")]).then((r) => r.stdout);
}

/** Record every host's fresh state: the touched files' content and a fingerprint. */
export async function freshState(fleet: TestFleet, t: Touched): Promise<FreshState> {
  const fingerprints = await mapLimit(fleet.hosts, 8, (h) => fingerprint(fleet, h, t));
  const files = await mapLimit(fleet.hosts, 8, async (h) => {
    const out: Record<string, string | null> = {};
    for (const f of t.files) {
      const r = await fleet.exec(h, ["sh", "-c", 'if [ -e "$1" ]; then base64 -w0 "$1"; else echo -; fi', "read", f]);
      out[f] = r.stdout.trim() === "-" ? null : r.stdout.trim();
    }
    return out;
  });
  return { fingerprint: fingerprints, files };
}

/** Undo whatever an apply did on every host, then check each host is as fresh as it was. */
export async function resetHosts(fleet: TestFleet, t: Touched, fresh: FreshState): Promise<void> {
  await mapLimit(fleet.hosts, 8, async (h, i) => {
    const input = t.files.map((f) => `${f} ${fresh.files[i][f] ?? "-"}\n`).join("");
    const r = await fleet.exec(h, ["sh", "-c", RESET, "reset", t.packages.join(" "), t.dirs.join(" ")], input);
    if (r.code !== 0) throw new BenchError(`reset of ${h.name} failed: ${firstLine(r.stderr)}`);
    const now = await fingerprint(fleet, h, t);
    if (now !== fresh.fingerprint[i]) {
      const differs = now.split("\n").filter((l) => !fresh.fingerprint[i].split("\n").includes(l));
      throw new BenchError(`reset of ${h.name} did not restore the fresh state: ${differs.join("; ")}`);
    }
  });
}

// --- small helpers ---------------------------------------------------------------------------

export function firstLine(text: string): string {
  return (
    text
      .split("\n")
      .map((l) => l.trim())
      .find(Boolean) ?? ""
  );
}

export async function mapLimit<T, R>(items: T[], limit: number, fn: (item: T, index: number) => Promise<R>): Promise<R[]> {
  const out: R[] = new Array(items.length);
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(limit, items.length) }, async () => {
      while (next < items.length) {
        const i = next++;
        out[i] = await fn(items[i], i);
      }
    }),
  );
  return out;
}
