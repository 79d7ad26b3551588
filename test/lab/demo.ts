// `npm run demo [-- --flavor NAME]`: boot a real-kernel "Pi" in the lab whose wlan0 is a real
// radio (mac80211_hwsim, WPA2 access point in the guest), bond eth0+wlan0 with the unchanged
// seed playbook (showing the diffs), then show the host's stack, the bond and the Wi-Fi link.
//   --flavor debian12|rpios-bookworm|rpios-trixie|networkd   the guest's OS and network stack (default debian12)
import { join } from "node:path";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { spawn } from "node:child_process";
import { parseArgs } from "node:util";
import { FLAVORS, startLab, type Flavor } from "./lab.js";
import { labInventory } from "./e2e-support.js";
import { encryptInventoryVars } from "../support/age-inventory.js";
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

function options(): { flavor: Flavor } {
  const { values } = parseArgs({ options: { flavor: { type: "string", default: "debian12" } } });
  const flavor = values.flavor as Flavor;
  if (!FLAVORS.includes(flavor)) {
    console.error(`npm run demo -- --flavor NAME: NAME is one of ${FLAVORS.join(", ")} (got "${values.flavor}")`);
    process.exit(64);
  }
  return { flavor };
}

async function main(): Promise<number> {
  const { flavor } = options();
  step(`Booting the lab: a ${flavor} guest on Debian's own kernel (QEMU, TCG) with eth0 and a real radio as wlan0`);
  const lab = await startLab({ guests: 1, flavor, wifi: true, name: "demo" });
  try {
    const pi = lab.guests[0];
    console.log(`${pi.name} answers at ${pi.address} after ${(pi.bootMs / 1000).toFixed(0)} s; kernel ${lab.kernelVersion}`);
    const dir = mkdtempSync(join(tmpdir(), "provision-demo-"));
    removeOnCleanup(dir);
    // the inventory carries the lab access point's network (wifi_ssid, wifi_psk, wifi_country), its PSK age-encrypted as README shows
    const inventory = labInventory(lab, join(dir, "lab.yaml"));
    await encryptInventoryVars(inventory, ["wifi_psk"]);
    const playbook = join(repoRoot, "playbooks/bond-eth0-wlan0.yaml");

    step(`provision --inventory ${inventory} playbooks/bond-eth0-wlan0.yaml --diff`);
    const code = await provision(lab.controllerArgv, ["--inventory", inventory, playbook, "--diff"]);

    step(`On ${pi.name}: its network stack, /proc/net/bonding/bond0, the addresses${flavor.startsWith("rpios") ? ", nmcli device" : ""} and the Wi-Fi link`);
    const show = [
      "systemctl is-active NetworkManager systemd-networkd networking | paste -sd' ' | sed 's/^/NetworkManager, systemd-networkd, networking: /'",
      "echo; cat /proc/net/bonding/bond0",
      "echo; ip -br addr show",
      ...(flavor.startsWith("rpios") ? ["echo; nmcli device"] : []),
      "echo; echo '$ iw dev wlan0 link'; iw dev wlan0 link",
    ];
    console.log((await pi.ssh(show.join("; "))).stdout);

    step("Second run: nothing to change");
    const again = await provision(lab.controllerArgv, ["--inventory", inventory, playbook]);
    return code || again;
  } finally {
    step("Tearing the lab down");
    await lab.stop();
  }
}

main().then(
  (code) => process.exit(code),
  (error) => {
    console.error(error);
    process.exit(1);
  },
);
