// A fleet of N lightweight test hosts, each a real OpenSSH server in its own network,
// mount, PID and UTS namespace, its root an overlay over the shared Debian 12 root file
// system (see /work/shared/lab-notes.md, "Lightweight sshd hosts").
//
//   controller netns (controllerNs)            host netns (one per host)
//   ┌──────────────────────────────┐          ┌────────────────────────────────────────┐
//   │ br0 10.88.0.1/24             │  veth    │ eth0 10.88.0.11/24, default via .1     │
//   │   ├── vh1 ───────────────────┼──────────┼─ unshare -m -p -u: overlay root,       │
//   │   ├── vh2 …                  │          │   /proc /sys /dev /run, chroot sshd -D │
//   │ apt repo http://10.88.0.1:8080          └────────────────────────────────────────┘
//   └──────────────────────────────┘
//
// sshd is PID 1 of its PID namespace, so killing it takes every process of that host with
// it (sessions, anything `exec` started), and the mounts live only in its private mount
// namespace, so they vanish with it. Everything is registered with onCleanup.
import { spawn, type ChildProcess } from "node:child_process";
import { chmodSync, closeSync, existsSync, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { stringify } from "yaml";
import { serveAptRepo } from "./apt-repo.js";
import { baseRootfs } from "./cache.js";
import { inNamespace, uniqueName } from "./netns.js";
import { isAlive, onCleanup, run, sh } from "./processes.js";

export interface TestHost {
  name: string; // "host1".."hostN" (or `${prefix}${i}`)
  address: string; // e.g. 10.88.0.11 (inside the fleet's bridge subnet)
  port: number; // 22
  netns: string; // the host's own network namespace
  pid: number; // sshd's PID (as seen from here; PID 1 inside the host)
}

export type ExecResult = { code: number; stdout: string; stderr: string };

export interface TestFleet {
  hosts: TestHost[];
  /** namespace where the controller (provision) must run: it holds the bridge and the apt repo server */
  controllerNs: string;
  /** the bridge's address in controllerNs, the hosts' default gateway, e.g. 10.88.0.1 */
  bridgeAddress: string;
  /** http://<bridgeAddress>:8080 — the local apt repository (holds ifenslave) */
  aptRepoUrl: string;
  /** private key (ed25519, no passphrase) authorised for root on every host */
  identityFile: string;
  /** OpenSSH known_hosts with every host's real host key, "ADDRESS ssh-ed25519 AAAA…" */
  knownHostsFile: string;
  /** the exact content of every host's /etc/apt/sources.list (one line, newline-terminated) */
  aptSourcesLine: string;
  /** an address inside the bridge subnet where nothing listens */
  unusedAddress: string;
  /** temp dir of the fleet (keys, overlays, sshd logs as <name>.log) */
  dir: string;
  /** Run argv as root inside the host (its root, mount/PID/UTS/net namespaces — the same as its sshd). */
  exec(host: TestHost, argv: string[], input?: string): Promise<ExecResult>;
  /** argv prefix that runs a command inside the controller namespace */
  controllerArgv(argv: string[]): string[];
  /** Write an Ansible-like inventory YAML for the hosts into `path`. */
  writeInventory(path: string, opts?: { extraHosts?: Record<string, Record<string, unknown>>; groupName?: string; vars?: Record<string, unknown> }): void;
  /** Take one host away: its sshd (PID 1 of the host) is stopped by PID, every session with it; its files stay. */
  stopHost(host: TestHost): Promise<void>;
  /** Bring a stopped host back (same files, keys and address); resolves once it answers SSH. */
  startHost(host: TestHost): Promise<void>;
  /** Kill every process it started (by PID), delete its namespaces, remove its temp files. */
  stop(): Promise<void>;
}

const HOST_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/** argv that runs a command in a test host as its sshd does: its mount, UTS, net and PID namespaces, chrooted to its root, with root's clean environment. */
export function enterHost(pid: number): string[] {
  return [
    "nsenter",
    "--target",
    String(pid),
    "--mount",
    "--uts",
    "--net",
    "--pid",
    "--root",
    "--wd",
    "--",
    "/usr/bin/env",
    "-i",
    `PATH=${HOST_PATH}`,
    "HOME=/root",
    "USER=root",
    "LOGNAME=root",
    "LANG=C.UTF-8",
  ];
}
const FIRST_HOST_OCTET = 11;
const UNUSED_OCTET = 254;
const APT_PORT = 8080;

// Runs as PID 1 of the host's new PID namespace, in its netns and in a private mount
// namespace: mount the root, the API file systems, then become sshd.
const START_SCRIPT = `set -e
M=$1 LOWER=$2 UPPER=$3 WORK=$4 NAME=$5 UTMP_GID=$6
mount -t overlay overlay -o "lowerdir=$LOWER,upperdir=$UPPER,workdir=$WORK" "$M"
mount -t proc -o nosuid,nodev,noexec proc "$M/proc"
mount -t sysfs -o nosuid,nodev,noexec sysfs "$M/sys"
mount --bind /dev "$M/dev"
mount -t devpts -o newinstance,ptmxmode=0666,mode=0620,gid=5 devpts "$M/dev/pts"
mount --bind "$M/dev/pts/ptmx" "$M/dev/ptmx"
mount -t tmpfs -o nosuid,nodev,mode=1777 tmpfs "$M/dev/shm"
mount -t tmpfs -o nosuid,nodev,mode=0755,size=64m tmpfs "$M/run"
mkdir -m 0755 "$M/run/sshd"
mkdir -m 1777 "$M/run/lock"
: > "$M/run/utmp" && chown 0:"$UTMP_GID" "$M/run/utmp" && chmod 0664 "$M/run/utmp"
echo "$NAME" > /proc/sys/kernel/hostname
exec chroot "$M" /usr/sbin/sshd -D -e -o PidFile=none -o MaxStartups=200
`;

// Connects to every ADDR:PORT from inside the controller namespace until each accepts
// (and, for port 22, sends an SSH banner). Prints the ones still pending on timeout.
const PROBE_SCRIPT = `
import socket, sys, threading, time
deadline = time.time() + float(sys.argv[1])
pending = set(sys.argv[2:])
lock = threading.Lock()
def probe(target):
    host, port = target.rsplit(":", 1)
    while time.time() < deadline:
        try:
            with socket.create_connection((host, int(port)), timeout=2) as s:
                if port == "22":
                    s.settimeout(5)
                    if not s.recv(64).startswith(b"SSH-"):
                        raise OSError("no banner")
                    s.sendall(b"SSH-2.0-fleet-probe\\r\\n")
            with lock:
                pending.discard(target)
            return
        except OSError:
            time.sleep(0.05)
threads = [threading.Thread(target=probe, args=(t,)) for t in sorted(pending)]
for t in threads: t.start()
for t in threads: t.join()
if pending:
    print(" ".join(sorted(pending)))
    sys.exit(1)
`;

type HostState = {
  host: TestHost;
  upper: string;
  work: string;
  merged: string;
  log: string;
  child?: ChildProcess; // `unshare` (ip netns exec execs it): sshd's parent
  exited?: Promise<void>;
  /** stopHost took it down: its exit is no failure. */
  stoppedOnPurpose?: boolean;
};

export async function startFleet(opts: { count: number; prefix?: string; subnet?: string }): Promise<TestFleet> {
  const count = opts.count;
  const prefix = opts.prefix ?? "host";
  // "10.88.0"; "10.88.0.0" and "10.88.0.0/24" are accepted too. Always a /24.
  let subnet = (opts.subnet ?? "10.88.0").replace(/\/24$/, "");
  if (/^\d+\.\d+\.\d+\.0$/.test(subnet)) subnet = subnet.slice(0, -2);
  if (!/^\d+\.\d+\.\d+$/.test(subnet)) throw new Error(`startFleet: subnet must look like "10.88.0", got ${opts.subnet}`);
  if (!Number.isInteger(count) || count < 1 || FIRST_HOST_OCTET + count - 1 >= UNUSED_OCTET)
    throw new Error(`startFleet: count must be 1..${UNUSED_OCTET - FIRST_HOST_OCTET}, got ${count}`);

  const t0 = Date.now();
  const base = baseRootfs();
  // Never adopt (and later delete) a namespace that someone else made under the same name.
  let id = uniqueName("sshf");
  while (existsSync(`/run/netns/${id}-ctl`) || Array.from({ length: count }, (_, i) => `/run/netns/${id}-h${i + 1}`).some(existsSync)) id = uniqueName("sshf");
  const controllerNs = `${id}-ctl`;
  const bridgeAddress = `${subnet}.1`;
  const dir = mkdtempSync(join(tmpdir(), `${id}-`));
  const namespaces: string[] = [];
  const states: HostState[] = [];
  let apt: { url: string; sourcesLine: string; stop: () => void } | undefined;

  // --- teardown (synchronous, so it also runs from the exit hook) -------------------------
  const teardown = (): void => {
    const pids = states
      .flatMap((s) => (s.child && s.child.exitCode === null && s.child.signalCode === null ? [s] : []))
      .flatMap((s) => [sshdPidIfChild(s), s.child!.pid!].filter((p): p is number => !!p));
    killAll(pids);
    apt?.stop();
    if (namespaces.length) sh(["ip", "-force", "-batch", "-"], { input: namespaces.map((n) => `netns delete ${n}\n`).join(""), allowFail: true });
    rmSync(dir, { recursive: true, force: true });
  };
  const unregister = onCleanup(`sshd fleet ${id}`, teardown);

  let stopping: Promise<void> | undefined;
  const stop = (): Promise<void> =>
    (stopping ??= (async () => {
      const t = Date.now();
      const live = states.filter((s) => s.child && s.child.exitCode === null && s.child.signalCode === null);
      for (const s of live) {
        const pid = sshdPidIfChild(s);
        if (pid)
          try {
            process.kill(pid, "SIGTERM");
          } catch {
            /* already gone */
          }
      }
      await Promise.race([Promise.all(live.map((s) => s.exited)), delay(5000)]);
      unregister(); // kills stragglers by PID, stops the repo server, deletes the namespaces, removes dir
      console.log(`sshd fleet ${id}: ${count} hosts stopped in ${Date.now() - t} ms`);
    })());

  try {
    // --- namespaces, bridge, veths --------------------------------------------------------
    for (let i = 1; i <= count; i++) {
      const address = `${subnet}.${FIRST_HOST_OCTET + i - 1}`;
      const host: TestHost = { name: `${prefix}${i}`, address, port: 22, netns: `${id}-h${i}`, pid: 0 };
      const hostDir = join(dir, host.name);
      states.push({ host, upper: join(hostDir, "upper"), work: join(hostDir, "work"), merged: join(hostDir, "merged"), log: join(dir, `${host.name}.log`) });
    }
    const allNs = [controllerNs, ...states.map((s) => s.host.netns)];
    namespaces.push(...allNs); // before creating, so a half-done batch is still cleaned up
    sh(["ip", "-batch", "-"], { input: allNs.map((n) => `netns add ${n}\n`).join("") });
    sh(["ip", "-n", controllerNs, "-batch", "-"], {
      input:
        [
          "link set lo up",
          "link add br0 type bridge",
          `addr add ${bridgeAddress}/24 dev br0`,
          "link set br0 up",
          ...states.flatMap((s, i) => [`link add vh${i + 1} type veth peer name eth0 netns ${s.host.netns}`, `link set vh${i + 1} master br0 up`]),
        ].join("\n") + "\n",
    });
    await mapLimit(states, 8, (s) =>
      run(["ip", "-n", s.host.netns, "-batch", "-"], {
        input: ["link set lo up", `addr add ${s.host.address}/24 dev eth0`, "link set eth0 up", `route add default via ${bridgeAddress}`].join("\n") + "\n",
      }).then((r) => {
        if (r.code !== 0) throw new Error(`network of ${s.host.name}: ${r.stderr.trim()}`);
      }),
    );
    const tNet = Date.now();

    // --- apt repository on the bridge -----------------------------------------------------
    apt = serveAptRepo(controllerNs, bridgeAddress, APT_PORT);

    // --- keys and per-host upper layers -----------------------------------------------------
    const identityFile = join(dir, "id_ed25519");
    sh(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", `provision-test@${id}`, "-f", identityFile]);
    const authorizedKey = readFileSync(`${identityFile}.pub`, "utf8");
    const hostKeys = await mapLimit(states, 8, async (s) => {
      prepareUpper(base, s, { authorizedKey, aptSourcesLine: apt!.sourcesLine, bridgeAddress });
      const key = join(s.upper, "etc/ssh/ssh_host_ed25519_key");
      const r = await run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", `root@${s.host.name}`, "-f", key]);
      if (r.code !== 0) throw new Error(`ssh-keygen for ${s.host.name}: ${r.stderr.trim()}`);
      const [type, blob] = readFileSync(`${key}.pub`, "utf8").trim().split(/\s+/);
      return `${s.host.address} ${type} ${blob}\n`;
    });
    const knownHostsFile = join(dir, "known_hosts");
    writeFileSync(knownHostsFile, hostKeys.join(""), { mode: 0o644 });
    const tKeys = Date.now();

    // --- sshd per host ---------------------------------------------------------------------
    let failed: ((e: Error) => void) | undefined;
    const earlyExit = new Promise<never>((_, reject) => (failed = reject));
    earlyExit.catch(() => {});
    const utmpGid = /^utmp:[^:]*:(\d+):/m.exec(readFileSync(join(base, "etc/group"), "utf8"))?.[1] ?? "0";
    for (const s of states)
      spawnHost(
        s,
        utmpGid,
        base,
        () => !!stopping,
        (e) => failed?.(e),
      );
    await Promise.all(
      states.map(async (s) => {
        s.host.pid = await childPid(s.child!);
      }),
    );
    const tSpawn = Date.now();

    const targets = [...states.map((s) => `${s.host.address}:22`), `${bridgeAddress}:${APT_PORT}`];
    const probe = run(inNamespace(controllerNs, ["python3", "-c", PROBE_SCRIPT, String(30 + count), ...targets]));
    const r = await Promise.race([probe, earlyExit]);
    if (r.code !== 0) throw new Error(`sshd fleet ${id}: not answering after ${30 + count} s: ${r.stdout.trim()} ${r.stderr.trim()}`);
    for (const s of states) {
      const comm = readFileSync(`/proc/${s.host.pid}/comm`, "utf8").trim();
      if (comm !== "sshd") throw new Error(`${s.host.name}: PID ${s.host.pid} is ${comm}, not sshd`);
    }
    failed = undefined;
    const tReady = Date.now();
    console.log(
      `sshd fleet ${id}: ${count} hosts ready in ${tReady - t0} ms ` +
        `(network ${tNet - t0}, files+keys ${tKeys - tNet}, spawn ${tSpawn - tKeys}, until all answer ${tReady - tSpawn})`,
    );

    const hosts = states.map((s) => s.host);
    const fleet: TestFleet = {
      hosts,
      controllerNs,
      bridgeAddress,
      aptRepoUrl: apt.url,
      identityFile,
      knownHostsFile,
      aptSourcesLine: apt.sourcesLine,
      unusedAddress: `${subnet}.${UNUSED_OCTET}`,
      dir,
      exec(host, argv, input) {
        if (!hosts.includes(host)) throw new Error(`exec: ${host.name} is not in fleet ${id}`);
        return run([...enterHost(host.pid), ...argv], { input });
      },
      controllerArgv: (argv) => inNamespace(controllerNs, argv),
      async stopHost(host) {
        const s = states.find((x) => x.host === host);
        if (!s) throw new Error(`stopHost: ${host.name} is not in fleet ${id}`);
        const pid = sshdPidIfChild(s);
        if (!pid) throw new Error(`stopHost: ${host.name} is not running`);
        s.stoppedOnPurpose = true;
        process.kill(pid, "SIGTERM");
        await Promise.race([s.exited, delay(5000)]);
        if (s.child!.exitCode === null && s.child!.signalCode === null) throw new Error(`stopHost: ${host.name} (sshd ${pid}) did not stop within 5 s`);
      },
      async startHost(host) {
        const s = states.find((x) => x.host === host);
        if (!s) throw new Error(`startHost: ${host.name} is not in fleet ${id}`);
        if (s.child && s.child.exitCode === null && s.child.signalCode === null) throw new Error(`startHost: ${host.name} is running`);
        s.stoppedOnPurpose = false;
        spawnHost(
          s,
          utmpGid,
          base,
          () => true,
          () => {},
        );
        host.pid = await childPid(s.child!);
        const r = await run(inNamespace(controllerNs, ["python3", "-c", PROBE_SCRIPT, "30", `${host.address}:22`]));
        if (r.code !== 0) throw new Error(`startHost: ${host.name} not answering after 30 s:\n${tail(s.log)}`);
      },
      writeInventory(path, o = {}) {
        const group: Record<string, Record<string, unknown>> = {};
        for (const h of hosts) group[h.name] = { address: h.address, port: h.port };
        Object.assign(group, o.extraHosts ?? {});
        const doc = {
          all: {
            vars: { user: "root", identity_file: identityFile, known_hosts_file: knownHostsFile, ...(o.vars ?? {}) },
            children: { [o.groupName ?? "pis"]: { hosts: group } },
          },
        };
        writeFileSync(path, stringify(doc));
      },
      stop,
    };
    return fleet;
  } catch (error) {
    await stop().catch(() => {});
    throw error;
  }
}

/** Start the host's sshd (PID 1 of a new PID namespace) in its netns, over its overlay. */
function spawnHost(s: HostState, utmpGid: string, base: string, stopping: () => boolean, failed: (e: Error) => void): void {
  const fd = openSync(s.log, "a");
  const child = spawn(
    "ip",
    [
      "netns",
      "exec",
      s.host.netns,
      "unshare",
      "--mount",
      "--pid",
      "--uts",
      "--fork",
      "--kill-child",
      "--propagation",
      "private",
      "sh",
      "-c",
      START_SCRIPT,
      "sshd-host",
      s.merged,
      base,
      s.upper,
      s.work,
      s.host.name,
      utmpGid,
    ],
    { stdio: ["ignore", fd, fd] },
  );
  closeSync(fd);
  s.child = child;
  s.exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  child.once("exit", (code, signal) => {
    if (!stopping() && !s.stoppedOnPurpose) failed(new Error(`sshd of ${s.host.name} exited early (${signal ?? code}):\n${tail(s.log)}`));
  });
  child.once("error", (e) => failed(e));
}

/** The per-host upper layer: what makes this host itself on top of the shared base. */
function prepareUpper(base: string, s: HostState, o: { authorizedKey: string; aptSourcesLine: string; bridgeAddress: string }): void {
  const { upper } = s;
  mkdirSync(s.work, { recursive: true });
  mkdirSync(s.merged, { recursive: true });
  mkdirSync(upper, { recursive: true });
  // An upper directory's owner and mode win over the base's: copy them (root-owned, as we are root).
  const dir = (rel: string, fallback: number) => {
    const parts = rel.split("/");
    for (let i = 1; i <= parts.length; i++) {
      const sub = parts.slice(0, i).join("/");
      const p = join(upper, sub);
      if (existsSync(p)) continue;
      mkdirSync(p);
      const b = join(base, sub);
      chmodSync(p, existsSync(b) ? statSync(b).mode & 0o7777 : fallback);
    }
  };
  const file = (rel: string, content: string, mode = 0o644) => {
    writeFileSync(join(upper, rel), content, { mode });
    chmodSync(join(upper, rel), mode);
  };
  dir("tmp", 0o1777);
  chmodSync(join(upper, "tmp"), 0o1777);
  dir("root/.ssh", 0o700);
  chmodSync(join(upper, "root/.ssh"), 0o700);
  file("root/.ssh/authorized_keys", o.authorizedKey, 0o600);
  dir("etc/ssh/sshd_config.d", 0o755);
  file(
    "etc/ssh/sshd_config.d/10-test-host.conf",
    "# lightweight test host (test/support/sshd-hosts.ts)\nPermitRootLogin prohibit-password\nHostKey /etc/ssh/ssh_host_ed25519_key\n" +
      '# logs every session it starts ("Starting session: command …"): tests count them\nLogLevel VERBOSE\n',
  );
  dir("etc/apt", 0o755);
  file("etc/apt/sources.list", o.aptSourcesLine);
  file("etc/hostname", `${s.host.name}\n`);
  file("etc/hosts", `127.0.0.1\tlocalhost\n127.0.1.1\t${s.host.name}\n\n::1\t\tlocalhost ip6-localhost ip6-loopback\nff02::1\t\tip6-allnodes\nff02::2\t\tip6-allrouters\n`);
  dir("etc/network", 0o755);
  file(
    "etc/network/interfaces",
    `# interfaces(5) file used by ifup(8) and ifdown(8)\n# Include files from /etc/network/interfaces.d:\nsource /etc/network/interfaces.d/*\n\n` +
      `auto lo\niface lo inet loopback\n\nauto eth0\niface eth0 inet static\n    address ${s.host.address}/24\n    gateway ${o.bridgeAddress}\n`,
  );
  // The base holds the build machine's resolver, unreachable from the lab: no DNS here.
  file("etc/resolv.conf", "# test lab: no DNS\n");
  file("etc/dhcpcd.conf", "# dhcpcd.conf\nhostname\nclientid\npersistent\noption rapid_commit\nslaac private\n");
}

/** sshd's PID, only while it is still the child of our `unshare` (never signal a reused PID). */
function sshdPidIfChild(s: HostState): number | undefined {
  const pid = s.host.pid;
  if (!pid || !s.child?.pid) return undefined;
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
    return ppid === s.child.pid ? pid : undefined;
  } catch {
    return undefined;
  }
}

/** SIGTERM all, wait up to 3 s, SIGKILL the rest, wait again. Synchronous (exit hook). */
function killAll(pids: number[]): void {
  const signal = (sig: NodeJS.Signals) => {
    for (const p of pids)
      try {
        process.kill(p, sig);
      } catch {
        /* gone */
      }
  };
  const waitGone = (ms: number) => {
    const end = Date.now() + ms;
    while (pids.some(isAlive) && Date.now() < end) sh(["sleep", "0.05"]);
  };
  if (!pids.length) return;
  signal("SIGTERM");
  waitGone(3000);
  pids = pids.filter(isAlive);
  if (!pids.length) return;
  signal("SIGKILL");
  waitGone(3000);
}

/** The single child of `unshare --fork` (PID 1 of the host's PID namespace). */
async function childPid(child: ChildProcess): Promise<number> {
  const pid = child.pid;
  if (!pid) throw new Error("sshd launcher did not start");
  for (let i = 0; i < 400; i++) {
    try {
      const kids = readFileSync(`/proc/${pid}/task/${pid}/children`, "utf8").trim();
      if (kids) return Number(kids.split(/\s+/)[0]);
    } catch {
      /* not there yet, or gone */
    }
    if (child.exitCode !== null || child.signalCode !== null) throw new Error(`sshd launcher ${pid} exited`);
    await delay(10);
  }
  throw new Error(`sshd launcher ${pid} has no child after 4 s`);
}

async function mapLimit<T, R>(items: T[], limit: number, fn: (item: T, index: number) => Promise<R>): Promise<R[]> {
  const out: R[] = new Array(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next++;
      out[i] = await fn(items[i], i);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return out;
}

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms).unref());
}

function tail(path: string, lines = 20): string {
  try {
    return readFileSync(path, "utf8").split("\n").slice(-lines).join("\n");
  } catch {
    return "(no log)";
  }
}
