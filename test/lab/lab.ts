// The real-kernel lab: Debian guests under QEMU (TCG; the host kernel has no bonding),
// each with virtio NICs on one bridge inside a network namespace of the lab's own, like a
// Pi with Ethernet and Wi-Fi on the same LAN. Images come from build-images.sh, one per
// guest flavour (network stack). With `wifi: true` the guest's wlan0 is a real radio
// (mac80211_hwsim) whose access point lives in the same guest, bridged to the lab's bridge.
//
// Nothing leaves the lab's namespace: the taps, the bridge (10.77.0.1/24), the apt
// repository and the controller all live there. Every lab uses the same addresses; labs
// running at once are kept apart by their namespaces.
import { spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { closeSync, copyFileSync, existsSync, mkdirSync, mkdtempSync, openSync, readFileSync, renameSync, statSync, writeFileSync } from "node:fs";
import { createConnection } from "node:net";
import { join } from "node:path";
import { cacheDir, repoRoot } from "../support/cache.js";
import { serveAptRepo } from "../support/apt-repo.js";
import { createBridge, createNamespace, inNamespace, uniqueName } from "../support/netns.js";
import { removeOnCleanup, run, sh, startDaemon } from "../support/processes.js";

export type SshResult = { code: number; stdout: string; stderr: string };

/** The guest's operating system and network stack (see build-images.sh). */
export type Flavor = "debian12" | "rpios-bookworm" | "rpios-trixie" | "networkd";
export const FLAVORS: readonly Flavor[] = ["debian12", "rpios-bookworm", "rpios-trixie", "networkd"];

/** The lab radio's network (hostapd in the guest's netns "air"); rpios-* guests get an Imager-like profile for it. */
/** The lab access point's network, from the file the images carry (0600) as /etc/provision-lab/wifi.env. */
export const LAB_WIFI = readLabWifi();

function readLabWifi(): { ssid: string; psk: string } {
  const text = readFileSync(join(repoRoot, "test", "lab", "guest", "lab-wifi.env"), "utf8");
  const value = (key: string) => new RegExp(`^${key}=(.*)$`, "m").exec(text)![1];
  return { ssid: value("ssid"), psk: value("psk") };
}

export interface SshOptions {
  timeoutMs?: number;
  connectTimeoutS?: number;
  /** connect attempts when SSH could not reach the guest at all (default 3) */
  attempts?: number;
}

export interface Guest {
  name: string;
  address: string;
  flavor: Flavor;
  /** wlan0 is a real radio (mac80211_hwsim), its access point in the guest's netns "air". */
  wifi: boolean;
  /** ["eth0", "wlan0"], ["eth0", "eth1"], ["eth0", "eth1", "eth2"]… */
  nics: string[];
  pid: number;
  qmpSocket: string;
  /** The guest's serial console, logged (read it when a test fails). */
  consoleLog: string;
  /** Wall time from starting QEMU to SSH answering, in ms. */
  bootMs: number;
  /** How this guest first came up: booted from cold, or restored from a snapshot of an identical guest. */
  start: "cold" | "restored";
  /** QMP set_link on that NIC's netdev (or "airlink", the access point's uplink): "pull the cable" (false) / plug it back (true). */
  setLink(nic: string, up: boolean): Promise<void>;
  /** The real OpenSSH client, run inside the lab namespace, host key verified. */
  ssh(command: string, opts?: SshOptions): Promise<SshResult>;
  /** /proc/sys/kernel/random/boot_id, or undefined when SSH does not answer. */
  bootId(): Promise<string | undefined>;
  /** Poll until SSH answers; returns the boot id. */
  waitForSsh(opts?: { timeoutMs?: number; notBootId?: string }): Promise<string>;
  /** Pull the plug: SIGKILL QEMU (what the guest had not flushed to its disk is lost). */
  powerCut(): void;
  /** Start QEMU again on the same disk and wait for SSH; returns the wall time in ms. */
  powerOn(): Promise<number>;
  /** `systemctl reboot`, then wait for SSH with a new boot id; returns the wall time in ms. */
  reboot(opts?: { timeoutMs?: number }): Promise<number>;
}

export interface Lab {
  netns: string;
  guests: Guest[];
  identityFile: string;
  knownHostsFile: string;
  /** The written inventory (YAML). */
  inventoryPath: string;
  /** The lab's temporary folder: consoles, QEMU logs, overlays, keys, inventory. */
  dir: string;
  kernelVersion: string;
  /** argv that runs `argv` inside the lab namespace (the controller must run there). */
  controllerArgv(argv: string[]): string[];
  stop(): Promise<void>;
}

const SUBNET = "10.77.0";
const BRIDGE_ADDRESS = `${SUBNET}.1`;
const BRIDGE_MAC = "52:54:00:77:00:01";
const BOOT_TIMEOUT_MS = 5 * 60_000;
/** OpenSSH's own failures before any command ran (it exits 255 for those, and for a dropped session). */
const NEVER_CONNECTED = /ssh: connect to host|kex_exchange_identification|banner exchange|Connection closed by \S+ port/;
const SNAPSHOT_TAG = "booted";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Build (or find cached) one flavour's lab images; build-images.sh reports its phases on stderr. */
export function buildImages(flavor: Flavor = "debian12"): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn("bash", [join(repoRoot, "test", "lab", "build-images.sh"), flavor], { stdio: ["ignore", "pipe", "inherit"] });
    let out = "";
    child.stdout!.on("data", (d) => (out += d));
    child.on("error", reject);
    child.on("close", (code) => (code === 0 ? resolve(out.trim().split("\n").pop()!) : reject(new Error(`build-images.sh exited ${code}`))));
  });
}

// ---- QMP -----------------------------------------------------------------------------------

/** One QMP command over the unix socket: greeting, qmp_capabilities, command; one JSON per line. */
export function qmp(socket: string, execute: string, args?: Record<string, unknown>, timeoutMs = 10_000): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const conn = createConnection(socket);
    let buffer = "";
    let stage: "greeting" | "capabilities" | "command" = "greeting";
    const timer = setTimeout(() => finish(new Error(`QMP ${execute} on ${socket}: timed out`)), timeoutMs);
    const finish = (error: Error | null, value?: unknown) => {
      clearTimeout(timer);
      conn.destroy();
      error ? reject(error) : resolve(value);
    };
    const send = (message: object) => conn.write(JSON.stringify(message) + "\n");
    conn.on("error", (e) => finish(e));
    conn.on("data", (data) => {
      buffer += data;
      let nl: number;
      while ((nl = buffer.indexOf("\n")) >= 0) {
        const line = buffer.slice(0, nl).trim();
        buffer = buffer.slice(nl + 1);
        if (!line) continue;
        const message = JSON.parse(line) as { QMP?: unknown; return?: unknown; error?: { class: string; desc: string }; event?: string };
        if (message.event) continue;
        if (message.error) return finish(new Error(`QMP ${stage === "command" ? execute : "qmp_capabilities"}: ${message.error.class}: ${message.error.desc}`));
        if (stage === "greeting" && message.QMP) {
          stage = "capabilities";
          send({ execute: "qmp_capabilities" });
        } else if (stage === "capabilities" && "return" in message) {
          stage = "command";
          send(args ? { execute, arguments: args } : { execute });
        } else if (stage === "command" && "return" in message) return finish(null, message.return);
      }
    });
  });
}

// ---- the lab -----------------------------------------------------------------------------------

/** A NIC per guest on a bridge of its own in the lab namespace (an uplink, an underlay…). */
export interface LabLink {
  /** Bridge name in the lab namespace (no address: attach routers or servers to it yourself). */
  bridge: string;
  /** Static address of guest `index` (1-based) on this NIC, e.g. (i) => `10.10.1.${i}/24`. */
  address?: (index: number) => string;
}

export interface LabOptions {
  guests: number;
  /** A second NIC on the lab's main bridge (like a Pi's Wi-Fi on the same LAN), or none. */
  secondNic?: "wlan0" | "eth1";
  /** More NICs (named eth1, eth2… after eth0 and any second NIC), each on its own bridge. */
  links?: LabLink[];
  /** Prefix of the namespace and temp folder names (default "plab"). */
  name?: string;
  /** Extra words for the guests' kernel command line (debugging). */
  kernelArgs?: string[];
  /** The guests' OS and network stack (default "debian12": ifupdown): one for all, or one per guest. */
  flavor?: Flavor | readonly Flavor[];
  /** wlan0 is a real radio with an access point (LAB_WIFI) in the guest; secondNic must not be "wlan0". */
  wifi?: boolean;
  /**
   * QEMU's disk cache mode. "unsafe" (default, fastest) discards the guest's flushes, so a
   * power cut (powerCut) may lose flushed data; "writeback" or "none" honour them, for power-cut tests.
   */
  diskCache?: "unsafe" | "writeback" | "none";
  /**
   * Restore each guest from a snapshot of an identical guest just booted (same flavour, NICs,
   * addresses, kernel command line), taken the first time one booted on this machine and kept
   * in the lab cache (default: true; PROVISION_LAB_SNAPSHOTS=0 boots from cold).
   */
  snapshots?: boolean;
}

/** The access point's packet counters: its radio (wlan1) and its link to the lab bridge (airlink). */
export type ApCounters = Record<"radio" | "airlink", { rx: number; tx: number }>;

export async function apCounters(guest: Guest): Promise<ApCounters> {
  if (!guest.wifi) throw new Error(`${guest.name} has no lab radio (start the lab with wifi: true)`);
  const r = await guest.ssh("ip -n air -s -j link show", { timeoutMs: 20_000 });
  if (r.code !== 0) throw new Error(`${guest.name}: reading the access point's counters failed: ${r.stderr}`);
  const links = JSON.parse(r.stdout) as Array<{ ifname: string; stats64: { rx: { packets: number }; tx: { packets: number } } }>;
  const of = (ifname: string) => {
    const link = links.find((l) => l.ifname === ifname);
    if (!link) throw new Error(`${guest.name}: no ${ifname} in netns air`);
    return { rx: link.stats64.rx.packets, tx: link.stats64.tx.packets };
  };
  return { radio: of("wlan1"), airlink: of("airlink") };
}

export async function startLab(opts: LabOptions): Promise<Lab> {
  if (opts.guests < 1 || opts.guests > 200) throw new Error(`startLab: guests must be 1..200, not ${opts.guests}`);
  const flavors = Array.from({ length: opts.guests }, (_, i) => (typeof opts.flavor === "string" ? opts.flavor : (opts.flavor?.[i] ?? "debian12")));
  if (Array.isArray(opts.flavor) && opts.flavor.length !== opts.guests) throw new Error(`startLab: one flavor per guest (${opts.guests}), not ${opts.flavor.length}`);
  for (const flavor of flavors) if (!FLAVORS.includes(flavor)) throw new Error(`startLab: flavor must be one of ${FLAVORS.join(", ")}, not ${flavor}`);
  const wifi = opts.wifi ?? false;
  if (wifi && opts.secondNic === "wlan0") throw new Error(`startLab: with wifi: true wlan0 is the radio; secondNic cannot be "wlan0" too`);
  const diskCache = opts.diskCache ?? "unsafe";
  const snapshots = (opts.snapshots ?? true) && process.env.PROVISION_LAB_SNAPSHOTS !== "0";
  const imagesOf = new Map<Flavor, string>();
  for (const flavor of new Set(flavors)) imagesOf.set(flavor, await buildImages(flavor));
  // every flavour boots the same kernel and shares the lab's SSH keys
  const firstImages = imagesOf.get(flavors[0])!;
  const kernelVersion = readFileSync(join(firstImages, "kernel-version"), "utf8").trim();
  // the uncompressed kernel boots through PVH, skipping seconds of xz decompression under TCG
  const kernelOf = (images: string) => (existsSync(join(images, "vmlinux")) ? join(images, "vmlinux") : join(images, "vmlinuz"));

  const stops: Array<() => void> = []; // run in reverse order by stop()
  const dir = mkdtempSync(`/tmp/${opts.name ?? "plab"}-`);
  stops.push(removeOnCleanup(dir));
  let stopped = false;
  const stop = async () => {
    if (stopped) return;
    stopped = true;
    while (stops.length) {
      const fn = stops.pop()!;
      try {
        fn();
      } catch (error) {
        console.error("lab stop:", error);
      }
    }
  };

  try {
    const identityFile = join(dir, "id_ed25519");
    copyFileSync(join(firstImages, "id_ed25519"), identityFile);
    sh(["chmod", "600", identityFile]);
    const knownHostsFile = join(dir, "known_hosts");
    const hostKey = readFileSync(join(firstImages, "host_key.pub"), "utf8").trim().split(/\s+/).slice(0, 2).join(" ");

    const ns = createNamespace(uniqueName(opts.name ?? "plab"));
    stops.push(ns.remove);
    createBridge(ns.name, "br0", `${BRIDGE_ADDRESS}/24`);
    // a restored guest still has the bridge in its neighbour table: give it the same MAC every time
    sh(["ip", "-n", ns.name, "link", "set", "br0", "address", BRIDGE_MAC]);
    for (const link of opts.links ?? []) createBridge(ns.name, link.bridge);

    const repo = serveAptRepo(ns.name, BRIDGE_ADDRESS);
    stops.push(repo.stop);

    const sshBase = [
      "ssh",
      "-F",
      "/dev/null",
      "-i",
      identityFile,
      "-o",
      "IdentitiesOnly=yes",
      "-o",
      `UserKnownHostsFile=${knownHostsFile}`,
      "-o",
      "GlobalKnownHostsFile=/dev/null",
      "-o",
      "StrictHostKeyChecking=yes",
      "-o",
      "BatchMode=yes",
      "-o",
      "ServerAliveInterval=5",
      "-o",
      "ServerAliveCountMax=3",
      "-o",
      "LogLevel=ERROR",
    ];

    const guests: Guest[] = [];
    const knownHosts: string[] = [];
    const started: Array<{ guest: Guest; startedAt: number; qemuLog: string; snapshot?: string }> = [];
    for (let i = 1; i <= opts.guests; i++) {
      const name = `pi${i}`;
      const address = `${SUBNET}.${10 + i}`;
      const flavor = flavors[i - 1];
      const images = imagesOf.get(flavor)!;
      const links = opts.links ?? [];
      const firstLinkNic = opts.secondNic === "eth1" ? 2 : 1;
      const linkNics = links.map((_, k) => `eth${firstLinkNic + k}`);
      const nics = ["eth0", ...(opts.secondNic ? [opts.secondNic] : []), ...linkNics];
      const bridges = [...nics.slice(0, nics.length - links.length).map(() => "br0"), ...links.map((l) => l.bridge)];
      const hex = (10 + i).toString(16).padStart(2, "0");
      // the udev rule in the image names a NIC with a 52:54:00:77:* MAC wlan0
      const macs = nics.map((nic, n) => (nic === "wlan0" ? `52:54:00:77:00:${hex}` : `52:54:00:12:${n.toString(16).padStart(2, "0")}:${hex}`));
      const netdevs = nics.map((_, n) => `n${n}`);
      const taps = nics.map((_, n) => `t${i}n${n}`);
      // the lab radio's access point reaches the lab bridge through one more NIC, last so the
      // guest's own NICs keep their kernel names; the udev rule in the image names it airlink
      if (wifi) {
        netdevs.push("nair");
        taps.push(`t${i}air`);
        macs.push(`52:54:00:a1:00:${hex}`);
        bridges.push("br0");
      }
      taps.forEach((tap, n) => {
        sh(["ip", "-n", ns.name, "tuntap", "add", "dev", tap, "mode", "tap"]);
        sh(["ip", "-n", ns.name, "link", "set", tap, "master", bridges[n]]);
        sh(["ip", "-n", ns.name, "link", "set", tap, "up"]);
      });
      const linkAddresses = links.flatMap((l, k) => (l.address ? [`${linkNics[k]}=${l.address(i)}`] : []));
      const overlay = join(dir, `${name}.qcow2`);
      const qmpSocket = join(dir, `${name}.qmp`);
      const consoleLog = join(dir, `${name}-console.log`);
      const qemuLog = join(dir, `${name}-qemu.log`);
      const append = [
        "console=ttyS0",
        "net.ifnames=0",
        "quiet",
        `provision.addr=${address}/24`,
        `provision.gw=${BRIDGE_ADDRESS}`,
        `provision.hostname=${name}`,
        ...(linkAddresses.length ? [`provision.net=${linkAddresses.join(",")}`] : []),
        ...(wifi ? ["provision.air=1"] : []),
        // derived, not random: a guest restored from a snapshot keeps the one it booted with
        `systemd.machine_id=${createHash("sha256").update(`${images} ${name}`).digest("hex").slice(0, 32)}`,
        ...(opts.kernelArgs ?? []),
      ].join(" ");
      const argv = [
        "qemu-system-x86_64",
        "-accel",
        "tcg",
        "-m",
        "512",
        "-smp",
        "1",
        "-nographic",
        "-serial",
        `file:${consoleLog}`,
        "-monitor",
        "none",
        "-kernel",
        kernelOf(images),
        "-initrd",
        join(images, "initrd.gz"),
        "-append",
        append,
        "-drive",
        `file=${overlay},if=virtio,format=qcow2,cache=${diskCache}`,
        ...taps.flatMap((_, n) => [
          "-netdev",
          `tap,id=${netdevs[n]},ifname=${taps[n]},script=no,downscript=no`,
          "-device",
          `virtio-net-pci,netdev=${netdevs[n]},romfile=,mac=${macs[n]}`,
        ]),
        "-qmp",
        `unix:${qmpSocket},server,nowait`,
      ];
      // a snapshot fits a guest whose QEMU command line is the same apart from the lab's folder
      // and the disk's cache mode (not part of the saved state)
      // (and the very disk it was taken on: an image rebuilt in place gets new snapshots)
      const snapshot = snapshots
        ? snapshotPath([...argv.map((a) => a.replaceAll(dir, "LAB").replace(/,cache=\w+$/, "")), String(statSync(join(images, "rootfs.img")).mtimeMs)])
        : undefined;
      const restoring = snapshot !== undefined && existsSync(snapshot);
      if (restoring) sh(["cp", "--sparse=always", snapshot, overlay]);
      else sh(["qemu-img", "create", "-q", "-f", "qcow2", "-b", join(images, "rootfs.img"), "-F", "raw", overlay]);
      let qemu: ReturnType<typeof startDaemon>;
      let exitInfo: string | undefined;
      // also how a guest is powered on again after a power cut: same overlay, same console
      const launch = (restore = false): number => {
        const logFd = openSync(qemuLog, "a");
        const started = startDaemon(`qemu ${name}`, inNamespace(ns.name, restore ? [...argv, "-loadvm", SNAPSHOT_TAG] : argv), { stdio: ["ignore", logFd, logFd] });
        closeSync(logFd);
        stops.push(started.stop);
        qemu = started;
        exitInfo = undefined;
        started.on("exit", (code, signal) => {
          if (qemu === started) exitInfo = `QEMU exited (${signal ?? code})`;
        });
        if (!started.pid) throw new Error(`could not start QEMU for ${name}`);
        return started.pid;
      };
      launch(restoring);
      const sshOnce = (command: string, o: SshOptions): Promise<SshResult> =>
        // a guest just booted under TCG on a busy machine can take seconds to accept: 15 s, not 5, before "failed"
        run(inNamespace(ns.name, [...sshBase, "-o", `ConnectTimeout=${o.connectTimeoutS ?? 15}`, `root@${address}`, command]), {
          timeout: o.timeoutMs ?? 120_000,
          killSignal: "SIGKILL",
        });
      // A check that never reached the guest says nothing about the guest: connect again (only when
      // the command cannot have started, so a reboot is never sent twice).
      const ssh = async (command: string, o: SshOptions = {}): Promise<SshResult> => {
        for (let attempt = 1; ; attempt++) {
          const r = await sshOnce(command, o);
          if (r.code !== 255 || !NEVER_CONNECTED.test(r.stderr) || attempt >= (o.attempts ?? 3)) return r;
          await sleep(2000);
        }
      };
      // polled while a guest boots: a short connect timeout, so a SYN lost before the guest's
      // network is up costs 2 s, not 5
      const bootId = async () => {
        const r = await ssh("cat /proc/sys/kernel/random/boot_id", { timeoutMs: 15_000, connectTimeoutS: 2, attempts: 1 });
        return r.code === 0 ? r.stdout.trim() : undefined;
      };
      const waitForSsh = async (o: { timeoutMs?: number; notBootId?: string } = {}) => {
        const deadline = Date.now() + (o.timeoutMs ?? BOOT_TIMEOUT_MS);
        for (;;) {
          if (exitInfo) throw new Error(`${name}: ${exitInfo}; console: ${tail(consoleLog)}`);
          const id = await bootId();
          if (id && id !== o.notBootId) return id;
          if (Date.now() > deadline)
            throw new Error(
              `${name}: SSH did not answer${o.notBootId ? " with a new boot id" : ""} within ${(o.timeoutMs ?? BOOT_TIMEOUT_MS) / 1000}s; console: ${tail(consoleLog)}`,
            );
          await sleep(500);
        }
      };
      const guest: Guest = {
        name,
        address,
        flavor,
        wifi,
        nics,
        pid: qemu!.pid!,
        qmpSocket,
        consoleLog,
        bootMs: 0,
        start: restoring ? "restored" : "cold",
        ssh,
        bootId,
        waitForSsh,
        powerCut() {
          process.kill(qemu.pid!, "SIGKILL");
          qemu.stop(); // reaps nothing more: drops the cleanup entry of the dead QEMU
        },
        async powerOn() {
          const t = Date.now();
          guest.pid = launch();
          await waitForSsh();
          return Date.now() - t;
        },
        async setLink(nic, up) {
          const n = wifi && nic === "airlink" ? netdevs.indexOf("nair") : nics.indexOf(nic);
          if (n < 0) throw new Error(`${name} has no NIC ${nic} (it has ${nics.join(", ")}${wifi ? " and airlink" : ""})`);
          await qmp(qmpSocket, "set_link", { name: netdevs[n], up });
        },
        async reboot(o = {}) {
          const before = await bootId();
          if (!before) throw new Error(`${name}: SSH does not answer, cannot reboot`);
          const t = Date.now();
          await ssh("systemctl reboot", { timeoutMs: 30_000 }); // the connection may drop: ignore the result
          await waitForSsh({ timeoutMs: o.timeoutMs ?? BOOT_TIMEOUT_MS, notBootId: before });
          return Date.now() - t;
        },
      };
      guests.push(guest);
      knownHosts.push(`${address} ${hostKey}`);
      started.push({ guest, startedAt: Date.now(), qemuLog, snapshot: restoring ? undefined : snapshot });
    }
    writeFileSync(knownHostsFile, knownHosts.join("\n") + "\n");

    const inventoryPath = join(dir, "inventory.yml");
    writeFileSync(
      inventoryPath,
      [
        "all:",
        `  vars: { user: root, identity_file: ${identityFile}, known_hosts_file: ${knownHostsFile} }`,
        "  children:",
        "    pis:",
        "      hosts:",
        ...guests.map((g) => `        ${g.name}: { address: ${g.address}, port: 22 }`),
        "",
      ].join("\n"),
    );

    // guests boot in parallel; wait for SSH on each
    await Promise.all(
      started.map(async (s) => {
        try {
          await s.guest.waitForSsh();
        } catch (error) {
          const qemuLog = existsSync(s.qemuLog) ? readFileSync(s.qemuLog, "utf8").trim() : "";
          throw new Error(`${(error as Error).message}${qemuLog ? `\nQEMU: ${qemuLog}` : ""}`);
        }
        s.guest.bootMs = Date.now() - s.startedAt;
        if (s.guest.start === "restored") await setClock(s.guest);
        else if (s.snapshot) await saveSnapshot(s.guest, s.snapshot, join(dir, `${s.guest.name}.qcow2`));
      }),
    );

    return {
      netns: ns.name,
      guests,
      identityFile,
      knownHostsFile,
      inventoryPath,
      dir,
      kernelVersion,
      controllerArgv: (argv) => inNamespace(ns.name, argv),
      stop,
    };
  } catch (error) {
    await stop();
    throw error;
  }
}

// ---- snapshots -----------------------------------------------------------------------------

/** Where the snapshot of a guest started with this QEMU command line is kept (it may not exist yet). */
function snapshotPath(argv: string[]): string {
  const key = createHash("sha256")
    .update(JSON.stringify([qemuVersion(), ...argv]))
    .digest("hex")
    .slice(0, 16);
  const dir = join(cacheDir(), "snapshots");
  mkdirSync(dir, { recursive: true });
  return join(dir, `${key}.qcow2`);
}

let qemuVersionText: string | undefined;
function qemuVersion(): string {
  return (qemuVersionText ??= sh(["qemu-system-x86_64", "--version"]).stdout.split("\n")[0]);
}

/**
 * Keep a just-booted guest's memory and disk (an internal snapshot in a copy of its overlay):
 * paused while it is saved and copied, so the copy is the state the snapshot describes.
 */
async function saveSnapshot(guest: Guest, snapshot: string, overlay: string): Promise<void> {
  const t = Date.now();
  await qmp(guest.qmpSocket, "stop");
  try {
    const out = await qmp(guest.qmpSocket, "human-monitor-command", { "command-line": `savevm ${SNAPSHOT_TAG}` }, 300_000);
    if (typeof out === "string" && out.trim()) throw new Error(`${guest.name}: savevm: ${out.trim()}`);
    const partial = `${snapshot}.${process.pid}.partial`;
    sh(["cp", "--sparse=always", overlay, partial]);
    renameSync(partial, snapshot);
  } finally {
    await qmp(guest.qmpSocket, "cont");
  }
  console.log(`lab: ${guest.name} snapshotted in ${((Date.now() - t) / 1000).toFixed(1)}s for later labs (${snapshot})`);
}

/** A restored guest's clock stands where the snapshot stopped it: set it to now. */
async function setClock(guest: Guest): Promise<void> {
  const r = await guest.ssh(`date -u -s @${Math.round(Date.now() / 1000)} >/dev/null`, { timeoutMs: 30_000 });
  if (r.code !== 0) throw new Error(`${guest.name}: setting the clock after restoring failed: ${r.stderr}`);
}

/** What the guest's console said about units that failed, over all its boots (systemd shows those even with `quiet`). */
export function consoleFailures(guest: Guest): string {
  if (!existsSync(guest.consoleLog)) return "";
  const failed = readFileSync(guest.consoleLog, "utf8")
    .split("\n")
    .filter((l) => /FAILED|Failed to start|provision-lab-air:/.test(l));
  return failed.length ? `\n--- ${guest.name}'s console on failed units ---\n${failed.join("\n")}` : `\n(${guest.name}'s console names no failed unit)`;
}

function tail(path: string, lines = 25): string {
  if (!existsSync(path)) return "(no console log)";
  // the console carries terminal escapes from SeaBIOS; keep it readable
  const text = readFileSync(path, "utf8").replace(/\x1b\[[0-9;?]*[a-zA-Z]|\x1bc/g, "");
  return "\n" + text.trimEnd().split("\n").slice(-lines).join("\n");
}
