// Shared pieces of the lab's end-to-end tests: inventories for lab guests, the
// bond's live state, file hashes, phase timing.
import { before, after } from "node:test";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { stringify } from "yaml";
import { LAB_WIFI, type Guest, type Lab } from "./lab.js";
import { removeOnCleanup } from "../support/processes.js";
import { parseBondStatus, type BondStatus } from "../../modules/bond/model.js";

export const GATEWAY = "10.77.0.1";

/** An inventory for the lab's guests with the bond variables the seed playbooks need. */
export function labInventory(lab: Lab, file: string, perHost: Record<string, Record<string, unknown>> = {}, vars: Record<string, unknown> = {}): string {
  const hosts = Object.fromEntries(lab.guests.map((g) => [g.name, { address: g.address, bond_address: `${g.address}/24`, ...perHost[g.name] }]));
  writeFileSync(
    file,
    stringify({
      all: {
        vars: {
          user: "root",
          identity_file: lab.identityFile,
          known_hosts_file: lab.knownHostsFile,
          bond_gateway: GATEWAY,
          wifi_ssid: LAB_WIFI.ssid,
          wifi_psk: LAB_WIFI.psk,
          wifi_country: "DE",
          ...vars,
        },
        children: { pis: { hosts } },
      },
    }),
  );
  return file;
}

export async function bondStatus(guest: Guest): Promise<BondStatus | null> {
  const r = await guest.ssh("cat /proc/net/bonding/bond0", { timeoutMs: 20_000 });
  return r.code === 0 ? parseBondStatus(r.stdout) : null;
}

/** Content hash, mode and owner of each path (or "absent"): "byte-identical" means equal strings. */
/**
 * The bond with every slave's MII up, polled: after a boot the host came back to by itself,
 * nothing of provision waits for a Wi-Fi slave to associate. Null when not within `timeoutMs`.
 */
export async function bondWithSlavesUp(guest: Guest, timeoutMs: number): Promise<BondStatus | null> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const status = await bondStatus(guest);
    if (status && status.slaves.length && status.slaves.every((s) => s.miiStatus === "up")) return status;
    if (Date.now() > deadline) return null;
    await sleep(2000);
  }
}

export async function fileHashes(guest: Guest, paths: string[]): Promise<string> {
  const r = await guest.ssh(`for f in ${paths.join(" ")}; do if [ -e "$f" ]; then sha256sum "$f"; stat -c "%a %U:%G" "$f"; else echo "absent $f"; fi; done`);
  if (r.code !== 0) throw new Error(`hashing files failed: ${r.stderr}`);
  return r.stdout;
}

export const TOUCHED = [
  "/etc/network/interfaces",
  "/etc/network/interfaces.orig",
  "/etc/modules",
  "/etc/modprobe.d/bonding.conf",
  "/etc/dhcpcd.conf",
  "/etc/wpa_supplicant/provision-wlan0.conf",
  "/etc/modprobe.d/provision-wifi-country.conf",
];

/**
 * A lab for one test file: booted (timed) before its tests, with a temporary folder that
 * is removed at cleanup, and stopped after them. `ready` gets both once the lab is up.
 */
export function useLab<L extends Lab>(label: string, start: () => Promise<L>, ready: (lab: L, dir: string) => void | Promise<void>): void {
  let lab: L | undefined;
  before(async () => {
    lab = await timed(`boot ${label}`, start);
    const dir = mkdtempSync(join(tmpdir(), `${lab.netns.replace(/-[0-9a-f]+$/, "")}-`));
    removeOnCleanup(dir);
    await ready(lab, dir);
  });
  after(async () => {
    await lab?.stop();
  });
}

export async function timed<T>(label: string, fn: () => Promise<T>): Promise<T> {
  const t = Date.now();
  try {
    return await fn();
  } finally {
    console.log(`phase: ${label} took ${((Date.now() - t) / 1000).toFixed(1)}s`);
  }
}

export async function ourTimers(guest: Guest): Promise<string> {
  const r = await guest.ssh(
    "systemctl list-units --all --no-legend 'provision-revert*'; ls /etc/systemd/system | grep provision-revert; ls /var/lib/provision/armed 2>/dev/null; true",
  );
  return r.stdout.trim();
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export function playbookPath(name: string): string {
  return join(process.cwd(), "playbooks", name);
}

/** Wait until the host's own revert has run and the host has booted again since. */
export async function waitForHostRevert(guest: Guest, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  const probe = "d=/var/lib/provision/runs/$(cat /var/lib/provision/last); echo $(cat $d/state) $(cat $d/reverted-at 2>/dev/null || echo 0) $(sed -n 's/^btime //p' /proc/stat)";
  while (Date.now() < deadline) {
    const [state, revertedAt, bootedAt] = (await guest.ssh(probe, { timeoutMs: 15_000 })).stdout.trim().split(" ");
    if (state === "reverted" && Number(bootedAt) > Number(revertedAt)) {
      // let the boot finish before the caller inspects the host
      await guest.ssh("systemctl is-system-running --wait", { timeoutMs: 180_000 });
      return;
    }
    await sleep(3000);
  }
  throw new Error(`${guest.name} did not revert and boot again within ${timeoutMs / 1000}s`);
}
