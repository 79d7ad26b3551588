// `npm run demo [-- --flavor NAME] [--wifi]`: boot a real-kernel "Pi" in the lab, bond
// eth0+wlan0 with provision (showing the diffs), then show the bond from the guest.
//   --flavor debian12|rpios-bookworm|rpios-trixie|networkd   the guest's OS and network stack (default debian12)
//   --wifi   wlan0 is a real radio (mac80211_hwsim) with the lab's access point, not a virtio NIC
import { join } from "node:path";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { spawn } from "node:child_process";
import { parseArgs } from "node:util";
import { FLAVORS, LAB_WIFI, startLab, type Flavor } from "./lab.js";
import { labInventory } from "./e2e-support.js";
import { CLI } from "../integration/provision-cli.js";
import { repoRoot } from "../support/cache.js";
import { removeOnCleanup } from "../support/processes.js";

function step(title: string): void {
  console.log(`\n\x1b[1m== ${title}\x1b[0m`);
}

function provision(inLab: (argv: string[]) => string[], args: string[]): Promise<number> {
  const full = inLab(["node", CLI, ...args]);
  return new Promise((resolve) => {
    const child = spawn(full[0], full.slice(1), { stdio: "inherit", cwd: repoRoot });
    child.on("close", (code) => resolve(code ?? 1));
  });
}

function options(): { flavor: Flavor; wifi: boolean } {
  const { values } = parseArgs({ options: { flavor: { type: "string", default: "debian12" }, wifi: { type: "boolean", default: false } } });
  const flavor = values.flavor as Flavor;
  if (!FLAVORS.includes(flavor)) throw new Error(`--flavor must be one of ${FLAVORS.join(", ")}, not ${values.flavor}`);
  return { flavor, wifi: values.wifi ?? false };
}

async function main(): Promise<number> {
  const { flavor, wifi } = options();
  step(`Booting the lab: a ${flavor} guest on Debian's own kernel (QEMU, TCG) with eth0 and ${wifi ? "a real radio as wlan0" : "wlan0"}`);
  const lab = await startLab({ guests: 1, flavor, ...(wifi ? { wifi: true } : { secondNic: "wlan0" }), name: "demo" });
  try {
    const pi = lab.guests[0];
    console.log(`${pi.name} answers at ${pi.address} after ${(pi.bootMs / 1000).toFixed(0)} s; kernel ${lab.kernelVersion}`);
    const dir = mkdtempSync(join(tmpdir(), "provision-demo-"));
    removeOnCleanup(dir);
    // with the radio, the lab's Wi-Fi credentials are there for a playbook that joins wlan0 to it
    const inventory = labInventory(lab, join(dir, "lab.yaml"), {}, wifi ? { wifi_ssid: LAB_WIFI.ssid, wifi_psk: LAB_WIFI.psk } : {});
    const playbook = join(repoRoot, "playbooks/bond-eth0-wlan0.yaml");

    step(`provision --inventory ${inventory} playbooks/bond-eth0-wlan0.yaml --diff`);
    const code = await provision(lab.controllerArgv, ["--inventory", inventory, playbook, "--diff"]);

    step(`cat /proc/net/bonding/bond0 on ${pi.name}`);
    console.log((await pi.ssh("cat /proc/net/bonding/bond0; echo; ip -br addr show")).stdout);

    step("Second run: nothing to change");
    const again = await provision(lab.controllerArgv, ["--inventory", inventory, playbook]);
    return code || again;
  } finally {
    step("Tearing the lab down");
    await lab.stop();
  }
}

main().then((code) => process.exit(code), (error) => {
  console.error(error);
  process.exit(1);
});
