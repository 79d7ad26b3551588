// One guest per lab flavour: the flavour's network stack owns eth0 and the others are
// absent; with the lab radio, wlan0 joins the guest's own access point and traffic from the
// controller's namespace reaches it over the (simulated) air.
// One flavour: node --test --test-name-pattern=rpios-bookworm dist/test/lab/flavours.test.js
import assert from "node:assert/strict";
import { after, test } from "node:test";
import { run, sh } from "../support/processes.js";
import { apCounters, buildImages, FLAVORS, LAB_WIFI, qmp, startLab, type Flavor, type Guest, type LabOptions } from "./lab.js";
import { sleep, timed } from "./e2e-support.js";

// an address for wlan0 outside the lab subnet, so only the air path can carry it
const AIR_TEST_LAB_ADDRESS = "10.78.0.1/24";
const AIR_TEST_WLAN0_ADDRESS = "10.78.0.11";

const EXPECTED: Record<Flavor, { active: string; packages: string[]; nmVersion?: RegExp }> = {
  "debian12": { active: "networking", packages: ["ifupdown", "dhcpcd-base"] },
  "rpios-bookworm": { active: "NetworkManager", packages: ["network-manager"], nmVersion: /^1\.42\./ },
  "rpios-trixie": { active: "NetworkManager", packages: ["network-manager"], nmVersion: /^1\.52\./ },
  "networkd": { active: "systemd-networkd", packages: [] },
};
// each flavour's guest also tries one disk cache mode
const DISK_CACHE: Record<Flavor, NonNullable<LabOptions["diskCache"]>> = {
  "debian12": "unsafe", "rpios-bookworm": "writeback", "rpios-trixie": "none", "networkd": "writeback",
};
const STACKS = ["NetworkManager", "systemd-networkd", "networking"];
const STACK_PACKAGES = ["ifupdown", "dhcpcd-base", "network-manager"];

async function must(guest: Guest, command: string): Promise<string> {
  const r = await guest.ssh(command, { timeoutMs: 60_000 });
  assert.equal(r.code, 0, `${guest.name}: \`${command}\` exited ${r.code}\nstdout: ${r.stdout}\nstderr: ${r.stderr}`);
  return r.stdout;
}

const summary: string[] = [];

for (const flavor of FLAVORS) {
  test(`lab flavour ${flavor}: its own stack on eth0, and a real radio`, { timeout: 15 * 60_000 }, async (t) => {
    const buildStart = Date.now();
    await timed(`images ${flavor} (build or cache)`, () => buildImages(flavor));
    const buildS = ((Date.now() - buildStart) / 1000).toFixed(1);
    const lab = await timed(`boot ${flavor}`, () => startLab({ guests: 1, flavor, wifi: true, diskCache: DISK_CACHE[flavor], name: "lab-flav" }));
    const guest = lab.guests[0];
    summary.push(`${flavor}: images ${buildS}s, boot to SSH ${(guest.bootMs / 1000).toFixed(1)}s`);
    try {
      await t.test("the flavour's stack is active, the others are absent", async () => {
        const expected = EXPECTED[flavor];
        const states = (await guest.ssh(`systemctl is-active ${STACKS.join(" ")}`)).stdout.trim().split("\n");
        assert.deepEqual(Object.fromEntries(STACKS.map((s, i) => [s, states[i]])),
          Object.fromEntries(STACKS.map((s) => [s, s === expected.active ? "active" : "inactive"])));
        const dpkg = await guest.ssh(`dpkg-query -W -f='\${Package} \${Status}\\n' ${STACK_PACKAGES.join(" ")}`);
        const installed = STACK_PACKAGES.filter((p) => new RegExp(`^${p} install ok installed$`, "m").test(dpkg.stdout));
        assert.deepEqual(installed.sort(), [...expected.packages].sort(), dpkg.stdout + dpkg.stderr);
        if (expected.nmVersion) assert.match((await must(guest, "NetworkManager --version")).trim(), expected.nmVersion);
        assert.equal((await guest.ssh("systemctl --failed --no-legend --plain")).stdout.trim(), "", "failed units");
      });

      await t.test(`the disk's cache mode is ${DISK_CACHE[flavor]}`, async () => {
        const blocks = await qmp(guest.qmpSocket, "query-block") as Array<{ inserted?: { cache: { writeback: boolean; direct: boolean; "no-flush": boolean } } }>;
        const cache = blocks.find((b) => b.inserted)!.inserted!.cache;
        const expected = { unsafe: { writeback: true, direct: false, "no-flush": true },
          writeback: { writeback: true, direct: false, "no-flush": false },
          none: { writeback: true, direct: true, "no-flush": false } }[DISK_CACHE[flavor]];
        assert.deepEqual(cache, expected);
      });

      await t.test("eth0 has the guest's address and the lab's gateway", async () => {
        assert.match(await must(guest, "ip -4 -o addr show dev eth0"), new RegExp(`inet ${guest.address.replace(/\./g, "\\.")}/24 `));
        assert.match(await must(guest, "ip route show default"), /^default via 10\.77\.0\.1 dev eth0/m);
        assert.equal((await must(guest, "hostname")).trim(), guest.name);
      });

      if (flavor.startsWith("rpios-")) {
        await t.test("NetworkManager profiles: eth0 and an Imager-like preconfigured Wi-Fi, root-only", async () => {
          const files = await must(guest, "cd /etc/NetworkManager/system-connections && stat -c '%a %U %n' *");
          assert.match(files, /^600 root Wired connection 1\.nmconnection$/m);
          assert.match(files, /^600 root preconfigured\.nmconnection$/m);
          const profile = await must(guest, "cat /etc/NetworkManager/system-connections/preconfigured.nmconnection");
          for (const line of ["id=preconfigured", "type=wifi", `ssid=${LAB_WIFI.ssid}`, "key-mgmt=wpa-psk", `psk=${LAB_WIFI.psk}`])
            assert.ok(profile.split("\n").includes(line), `${line} not in\n${profile}`);
          assert.match(await must(guest, "nmcli -t -f NAME,DEVICE connection show --active"), /^Wired connection 1:eth0$/m);
        });
      }
      if (flavor === "networkd") {
        await t.test("networkd: only eth0 is configured", async () => {
          assert.equal((await must(guest, "ls /etc/systemd/network")).trim(), "20-eth0.network");
          assert.match(await must(guest, "networkctl list --no-legend"), /eth0\s+ether\s+routable\s+configured/);
        });
      }

      await t.test("the radio: wlan0 joins the lab access point and the controller reaches it over the air", async () => {
        const ap = await must(guest, "ip netns exec air hostapd_cli -p /run/provision-lab-air/ctrl status");
        assert.match(ap, /^state=ENABLED$/m);
        assert.match(ap, new RegExp(`^ssid\\[0\\]=${LAB_WIFI.ssid}$`, "m"));
        if (flavor.startsWith("rpios-")) await must(guest, "nmcli device set wlan0 managed no");
        await timed(`${flavor}: wlan0 associated`, async () => {
          await must(guest, "provision-lab-station up");
          const deadline = Date.now() + 30_000;
          let link = "";
          while (Date.now() < deadline) {
            link = (await guest.ssh("iw dev wlan0 link")).stdout;
            if (/Connected to/.test(link)) break;
            await sleep(500);
          }
          assert.match(link, /Connected to/);
          assert.match(link, new RegExp(`SSID: ${LAB_WIFI.ssid}`));
        });
        const before = await apCounters(guest);
        // the guest answers ARP only on the NIC that holds the address, or eth0 would answer for wlan0's
        sh(["ip", "-n", lab.netns, "addr", "add", AIR_TEST_LAB_ADDRESS, "dev", "br0"]);
        await must(guest, `sysctl -q -w net.ipv4.conf.all.arp_ignore=1 && ip addr add ${AIR_TEST_WLAN0_ADDRESS}/24 dev wlan0`);
        const ping = await timed(`${flavor}: 10 pings over the air`, () =>
          run(lab.controllerArgv(["ping", "-n", "-c", "10", "-i", "0.2", "-W", "3", AIR_TEST_WLAN0_ADDRESS])));
        assert.match(ping.stdout, / 10 received/, ping.stdout + ping.stderr);
        const after = await apCounters(guest);
        for (const side of ["radio", "airlink"] as const)
          for (const dir of ["rx", "tx"] as const)
            assert.ok(after[side][dir] - before[side][dir] >= 10, `AP ${side} ${dir}: ${before[side][dir]} -> ${after[side][dir]}`);
        const wlan0Mac = (await must(guest, "cat /sys/class/net/wlan0/address")).trim();
        assert.match(sh(["ip", "-n", lab.netns, "neigh", "show", AIR_TEST_WLAN0_ADDRESS]).stdout, new RegExp(`lladdr ${wlan0Mac} `));
        console.log(`${flavor}: AP counters ${JSON.stringify(before)} -> ${JSON.stringify(after)}`);
      });
    } finally {
      await lab.stop();
    }
  });
}

after(() => console.log(`lab flavours:\n  ${summary.join("\n  ")}`));
