// `npm run demo [-- --flavor NAME]`: boot a real-kernel "Pi" in the lab whose wlan0 is a real
// radio (mac80211_hwsim, WPA2 access point in the guest), bond eth0+wlan0 with the unchanged
// seed playbook (showing the diffs), then show the host's stack, the bond and the Wi-Fi link.
//   --flavor debian12|rpios-bookworm|rpios-trixie|networkd   the guest's OS and network stack (default debian12)
//   --pull   pull mode instead: the Pi behind a NAT router, its agent connected out to a 3-node
//            NATS cluster; enrolled on site, it bonds eth0+eth1 by itself when the seed is published
//            (debian12 or rpios-bookworm: the flavours with Debian 12's nodejs)
import { join } from "node:path";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { spawn } from "node:child_process";
import { parseArgs } from "node:util";
import { FLAVORS, startLab, type Flavor } from "./lab.js";
import { labInventory } from "./e2e-support.js";
import { nodePlaybook, startPullLab } from "./pull-lab.js";
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

function options(): { flavor: Flavor; pull: boolean } {
  const { values } = parseArgs({ options: { flavor: { type: "string", default: "debian12" }, pull: { type: "boolean", default: false } } });
  const flavor = values.flavor as Flavor;
  if (!FLAVORS.includes(flavor)) {
    console.error(`npm run demo -- --flavor NAME: NAME is one of ${FLAVORS.join(", ")} (got "${values.flavor}")`);
    process.exit(64);
  }
  if (values.pull && flavor !== "debian12" && flavor !== "rpios-bookworm") {
    console.error(`npm run demo -- --pull: the flavour must be debian12 or rpios-bookworm (Debian 12's nodejs), not ${flavor}`);
    process.exit(64);
  }
  return { flavor, pull: values.pull ?? false };
}

/** Print a command's output as it ran, under its command line. */
function shown(command: string, r: { code: number; stdout: string; stderr: string }): number {
  console.log(`$ ${command}\n${r.stdout}${r.stderr}`.trimEnd());
  return r.code;
}

async function pullDemo(flavor: Flavor): Promise<number> {
  step(`Booting a ${flavor} Pi (QEMU, Debian's kernel) on a site LAN behind a NAT router, and a 3-node NATS JetStream cluster on the other side`);
  const pl = await startPullLab({ flavors: [flavor], name: "demo-pull" });
  try {
    const pi = pl.lab.guests[0];
    const seed = join(repoRoot, "playbooks/bond-eth0-eth1.yaml");
    console.log(`${pi.name} answers on site at ${pi.address} after ${(pi.bootMs / 1000).toFixed(0)} s; the cluster: ${pl.cluster.servers.join(", ")}`);

    step("From the controller's side the Pi cannot be reached: SSH times out at the NAT");
    const ssh = await pl.sshFromController(pi, "true");
    console.log(`$ ssh root@${pi.address} true   (exit ${ssh.code})\n${ssh.stderr.trim()}`);

    step("On site: Debian's nodejs (apt, the lab's repository), then provision enrol (its own credentials, provision's code, the agent's unit)");
    const node = await pl.onSite(["--inventory", pl.inventory, nodePlaybook(pl.dir)]);
    console.log(node.stdout.trim().split("\n").slice(-3).join("\n"));
    console.log(`node on ${pi.name}: ${(await pi.ssh("node --version")).stdout.trim()}`);
    if (shown(`provision enrol --inventory pis.yaml --limit ${pi.name}`, await pl.onSite(["enrol", "--inventory", pl.inventory, "--limit", pi.name])) !== 0) return 1;

    step("On the controller's side: provision publish of the unchanged seed playbooks/bond-eth0-eth1.yaml");
    const t = Date.now();
    if (shown("provision publish --inventory pis.yaml playbooks/bond-eth0-eth1.yaml", await pl.controller(["publish", "--inventory", pl.inventory, seed])) !== 0) return 1;
    console.log("\nThe Pi applies it by itself: apt, bond, dhcpcd, its own reboot; after the boot the agent verifies, confirms through the NAT and commits…");
    const row = await pl.result(pi.name, 1, 15 * 60_000);
    console.log(`… reported ${row.lastResult?.outcome} after ${((Date.now() - t) / 1000).toFixed(0)} s`);

    step(`On ${pi.name} (read on site): /proc/net/bonding/bond0, the addresses, the agent's journal since the boot`);
    console.log((await pi.ssh("cat /proc/net/bonding/bond0; echo; ip -br addr show")).stdout);
    console.log((await pl.agentLog(pi, 40)).trimEnd());

    step("provision status --fleet (the controller's side)");
    const status = await pl.controller(["status", "--fleet"]);
    shown("provision status --fleet", status);

    step("Publishing the same again: nothing to change");
    shown("provision publish --inventory pis.yaml playbooks/bond-eth0-eth1.yaml", await pl.controller(["publish", "--inventory", pl.inventory, seed]));
    return row.lastResult?.outcome === "applied" ? status.code : 1;
  } finally {
    step("Tearing the lab down");
    await pl.stop();
  }
}

async function main(): Promise<number> {
  const { flavor, pull } = options();
  if (pull) return pullDemo(flavor);
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
