// A seed playbook, unchanged, on one guest of one lab flavour (network stack): the bond
// comes up right after the reboot, a second run and an audit change nothing, a cable pull
// loses at most a few pings, and a bad change is rolled back byte-identical. With the lab
// radio the Wi-Fi slave really associates (WPA2), failover really crosses the air, and the
// PSK is nowhere but in 0600 files on the host. Each flavour's test file picks its scenarios.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { readFileSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { apCounters, consoleFailures, LAB_WIFI, startLab, type Flavor, type Guest, type Lab } from "./lab.js";
import { bondStatus, bondWithSlavesUp, labInventory, ourTimers, sleep, timed, useLab, waitForHostRevert } from "./e2e-support.js";
import { provision, summary } from "../integration/provision-cli.js";
import { repoRoot } from "../support/cache.js";
import { run } from "../support/processes.js";
import { encryptInventoryVars } from "../support/age-inventory.js";
import { netplanInRun, nmcliRoundTrips } from "./stack-readers.js";

export interface SeedScenario {
  flavor: Flavor;
  /** eth0 + a real Wi-Fi wlan0 (the lab radio), or eth0 + eth1. */
  seed: "wlan0" | "eth1";
  /** Lost pings allowed when eth0's cable is pulled (pings every 50 ms). */
  lossBound: number;
  /** Also: the bond degraded live is drift in an audit, and a run repairs it. */
  degradedLive?: boolean;
  /** Also: cut off by its own change, the host reverts by itself. */
  cutOff?: boolean;
  /** Also, at the end: the stack's own readers (stack-readers.ts). */
  readers?: "nmcli round trips" | "netplan in /run";
  /** ifupdown: the interfaces file also has a sensor LAN stanza and comments, and sources a file with a dummy interface; all kept. */
  sharedInterfaces?: boolean;
}

const PLAYBOOKS = { wlan0: "playbooks/bond-eth0-wlan0.yaml", eth1: "playbooks/bond-eth0-eth1.yaml" };
const STACK_LINE: Record<Flavor, RegExp> = {
  debian12: /network_stack: ifupdown/,
  "rpios-bookworm": /network_stack: NetworkManager 1\.42\.\d+/,
  "rpios-trixie": /network_stack: NetworkManager 1\.52\.\d+/,
  networkd: /network_stack: systemd-networkd/,
};

const STACK_SERVICES = ["NetworkManager", "systemd-networkd", "networking"];
const OWN_SERVICE: Record<Flavor, string> = { debian12: "networking", "rpios-bookworm": "NetworkManager", "rpios-trixie": "NetworkManager", networkd: "systemd-networkd" };

/** Every configuration file a run may touch, hashed with mode and owner: equal text = byte-identical. */
const STATE =
  'find /etc/network /etc/NetworkManager/system-connections /etc/systemd/network /etc/netplan /etc/wpa_supplicant /etc/modprobe.d /etc/modules /etc/dhcpcd.conf /var/lib/NetworkManager/NetworkManager.state /etc/systemd/system/multi-user.target.wants -xdev \\( -type f -o -type l \\) 2>/dev/null | sort | while read -r f; do printf \'%s %s \' "$(stat -c \'%a %U:%G\' "$f")" "$f"; if [ -L "$f" ]; then readlink "$f"; else sha256sum < "$f"; fi; done';

export function seedOnFlavour(s: SeedScenario): void {
  let lab: Lab;
  let pi: Guest;
  let dir: string;
  let inventory: string;
  const playbook = join(repoRoot, PLAYBOOKS[s.seed]);
  const cli = (...args: string[]) => provision(lab.controllerArgv, args);
  const wifi = s.seed === "wlan0";
  /** debian12's Wi-Fi seed keeps its PSK age-encrypted in the inventory, as README shows users. */
  const encryptedPsk = wifi && s.flavor === "debian12";

  useLab(
    `lab (${s.flavor}, eth0 + ${wifi ? "real Wi-Fi wlan0" : "eth1"})`,
    () => startLab({ guests: 1, flavor: s.flavor, wifi, secondNic: wifi ? undefined : "eth1", name: "lab-seed" }),
    async (booted, folder) => {
      [lab, dir] = [booted, folder];
      pi = lab.guests[0];
      inventory = labInventory(lab, join(dir, "lab.yaml"));
      if (encryptedPsk) await encryptInventoryVars(inventory, ["wifi_psk"]);
    },
  );

  const configState = async () => (await pi.ssh(STATE, { timeoutMs: 60_000 })).stdout;
  // the active profiles as a set: nmcli lists them in activation order, which a reboot may change
  const nmActive = async () => (s.flavor.startsWith("rpios") ? (await pi.ssh("nmcli -t -f NAME,DEVICE connection show --active | sort")).stdout : "");

  test(`${s.flavor}: the guest runs its own stack only, on Debian's kernel, with nothing failed`, async () => {
    const states = (await pi.ssh(`systemctl is-active ${STACK_SERVICES.join(" ")}`)).stdout.trim().split("\n");
    assert.deepEqual(
      Object.fromEntries(STACK_SERVICES.map((name, i) => [name, states[i]])),
      Object.fromEntries(STACK_SERVICES.map((name) => [name, name === OWN_SERVICE[s.flavor] ? "active" : "inactive"])),
    );
    assert.match((await pi.ssh("uname -r")).stdout.trim(), /^6\.1\.0-\d+-amd64$/);
    assert.equal((await pi.ssh("systemctl --failed --no-legend --plain")).stdout.trim(), "", "no failed units");
  });

  test(`${s.flavor}: the unchanged ${s.seed} seed brings the bond up right after the reboot; a second run and an audit change nothing`, async () => {
    const shared = s.sharedInterfaces ? await addSharedConfiguration(pi) : undefined;
    const bootBefore = await pi.bootId();
    const report = join(dir, "apply.json");
    const psEvery = watchControllerArgs(LAB_WIFI.psk);
    const first = await timed(`${s.flavor}: apply the ${s.seed} seed (reboot, verify)`, () => cli("--inventory", inventory, playbook, "--diff", "--report", report));
    const psSeen = psEvery.stop();
    assert.equal(first.code, 0, first.output + (await diagnostics(pi)));
    assert.equal(summary(first.stdout).pi1.status, "changed", first.stdout);
    assert.match(first.stdout, STACK_LINE[s.flavor], "the plan names the host's network stack");
    if (encryptedPsk) {
      assert.ok(!readFileSync(inventory, "utf8").includes(LAB_WIFI.psk), "the inventory holds the PSK encrypted only");
      assert.equal(statSync(`${inventory}.age.key`).mode & 0o777, 0o600, "the age key is 0600");
      assert.doesNotMatch(first.output, /secret in clear text/, "no clear-text warning for an encrypted PSK");
    }
    assert.notEqual(await pi.bootId(), bootBefore, "it rebooted");
    if (s.flavor !== "debian12") {
      assert.match(first.stdout, /task "Install ifenslave \(ifupdown hosts only\)" \[apt\]: skipped/, "no second network manager installed");
      assert.match(first.stdout, /no dhcpcd on this host/);
      assert.equal((await pi.ssh("dpkg-query -W -f='${Status}' ifupdown ifenslave 2>/dev/null | grep -c 'ok installed'")).stdout.trim(), "0");
    }

    const status = (await bondStatus(pi))!;
    assert.ok(status, "bond0 exists");
    assert.equal(status.mode, "active-backup");
    assert.deepEqual(status.slaves.map((x) => x.name).sort(), ["eth0", s.seed]);
    assert.equal(status.primary, "eth0");
    assert.equal(status.activeSlave, "eth0");
    assert.equal(status.miiStatus, "up");
    assert.ok(
      status.slaves.every((x) => x.miiStatus === "up"),
      JSON.stringify(status.slaves),
    );
    assert.match((await pi.ssh("ip -4 -o addr show dev bond0")).stdout, new RegExp(`inet ${pi.address.replace(/\./g, "\\.")}/24`));
    assert.equal(await ourTimers(pi), "", "nothing left armed");
    console.log(
      `${s.flavor}: bond up: ${JSON.stringify({ slaves: status.slaves.map((x) => x.name), primary: status.primary, active: status.activeSlave, failOverMac: status.failOverMac })}`,
    );

    if (wifi) {
      const link = (await pi.ssh("iw dev wlan0 link")).stdout;
      assert.match(link, new RegExp(`SSID: ${LAB_WIFI.ssid}`), "wlan0 is associated (WPA2) to the lab's access point");
      assert.equal(status.failOverMac, "active");
      // the PSK: nowhere in what the controller printed, wrote or ran; on the host only in 0600 files
      assert.ok(!first.output.includes(LAB_WIFI.psk), "not in the run's output");
      assert.ok(!readFileSync(report, "utf8").includes(LAB_WIFI.psk), "not in the report");
      assert.equal(psSeen, 0, "not in any process's arguments on the controller during the run");
      const holders = (
        await pi.ssh(
          ". /etc/provision-lab/wifi.env; grep -rlF -- \"$psk\" /etc /var/lib/provision /var/lib/NetworkManager 2>/dev/null | grep -v '^/etc/provision-lab/' | xargs -r stat -c '%a %U %n'",
        )
      ).stdout
        .trim()
        .split("\n")
        .filter(Boolean);
      assert.ok(holders.length >= 1, "the host holds it somewhere (its stack needs it)");
      for (const h of holders) assert.match(h, /^600 root /, `every file holding the PSK is 0600 root: ${holders.join("; ")}`);
      assert.doesNotMatch((await pi.ssh("cat /etc/network/interfaces 2>/dev/null; true")).stdout, /wpa-psk/);
      console.log(`${s.flavor}: files holding the PSK: ${holders.join(", ")}`);
    }

    const interfacesAfterFirst = shared ? await sharedKept(pi, shared) : undefined;
    if (shared) assert.match(first.stdout, /in \/etc\/network\/interfaces \(replaces the stanzas of eth0\)/, "the plan says what it replaces");

    const bootAfter = await pi.bootId();
    const second = await timed(`${s.flavor}: second run`, () => cli("--inventory", inventory, playbook));
    assert.equal(second.code, 0, second.output);
    assert.equal(summary(second.stdout).pi1.changed, 0, second.stdout);
    if (shared) assert.equal(await sharedKept(pi, shared), interfacesAfterFirst, "the second run leaves the interfaces file as it was");
    assert.equal(await pi.bootId(), bootAfter, "no reboot on the second run");
    const check = await cli("--inventory", inventory, playbook, "--check");
    assert.equal(check.code, 0, check.output);
  });

  test(`${s.flavor}: pulling eth0's cable: ${s.seed} takes over, eth0 comes back as active`, async () => {
    const before = wifi ? await apCounters(pi) : undefined;
    const { lost, count, failoverMs, backMs } = await cablePull(lab, pi, s.seed);
    console.log(
      `${s.flavor}: cable pull: failover to ${s.seed} seen after ${failoverMs} ms, back to eth0 after ${backMs} ms; ${lost} of ${count} pings lost (50 ms apart; bound ${s.lossBound})`,
    );
    assert.ok(failoverMs >= 0, `${s.seed} became the active slave`);
    assert.ok(backMs >= 0, "eth0 is the active slave again");
    assert.ok(lost <= s.lossBound, `lost ${lost} pings, bound ${s.lossBound}`);
    if (before) {
      const after = await apCounters(pi);
      const overAir = after.radio.tx - before.radio.tx;
      console.log(`${s.flavor}: the access point's radio sent ${overAir} and received ${after.radio.rx - before.radio.rx} frames during the cut`);
      assert.ok(overAir >= 40, `the pings crossed the air while eth0 was out (AP radio tx +${overAir})`);
    }
  });

  if (s.degradedLive)
    test(`${s.flavor}: a bond degraded live is drift in an audit (exit 2, named) and a run repairs it`, async () => {
      assert.equal((await pi.ssh("echo -eth0 > /sys/class/net/bond0/bonding/slaves")).code, 0);
      const check = await cli("--inventory", inventory, playbook, "--check");
      assert.equal(check.code, 2, check.output);
      assert.match(check.stdout, new RegExp(`slaves are \\{${s.seed}\\}, want \\{eth0, ${s.seed}\\}`));
      const repair = await timed(`${s.flavor}: repair a degraded bond (reboot, verify)`, () => cli("--inventory", inventory, playbook));
      assert.equal(repair.code, 0, repair.output);
      const status = (await bondStatus(pi))!;
      assert.deepEqual(status.slaves.map((x) => x.name).sort(), ["eth0", s.seed]);
      assert.equal(status.activeSlave, "eth0");
      assert.equal((await cli("--inventory", inventory, playbook, "--check")).code, 0);
    });

  test(`${s.flavor}: a bad change is rolled back: files byte-identical, the same ${s.flavor.startsWith("rpios") ? "NetworkManager profiles active" : "bond running"} as before`, async () => {
    const before = await configState();
    const activeBefore = await nmActive();
    const bondBefore = await bondStatus(pi);
    const bad = join(dir, "bad.yaml");
    const badInventory = wifi ? labInventory(lab, join(dir, "bad-psk.yaml"), {}, { wifi_psk: "not-the-lab-passphrase" }) : inventory;
    // a wrong PSK never authorizes: 30 s of waiting proves it as well as the default 90
    if (wifi) {
      const badPlaybook = readFileSync(playbook, "utf8").replace("        slaves: [eth0, wlan0]\n", "        slaves: [eth0, wlan0]\n        settle_timeout: 30\n");
      assert.match(badPlaybook, /settle_timeout: 30/);
      writeFileSync(bad, badPlaybook);
    } else writeFileSync(bad, readFileSync(playbook, "utf8").replace("slaves: [eth0, eth1]", "slaves: [eth0, eth7]"));
    const r = await timed(`${s.flavor}: bad change (${wifi ? "wrong PSK" : "missing slave"}): apply, reboot, verify fails, restore, reboot`, () =>
      cli("--inventory", badInventory, bad, "--report", join(dir, "bad.json")),
    );
    assert.equal(r.code, 1, r.output);
    assert.equal(summary(r.stdout).pi1.status, "rolled back", r.stdout);
    if (wifi) {
      assert.match(r.stdout, new RegExp(`wlan0 not associated to SSID "${LAB_WIFI.ssid}"`), "verification says so in words");
      assert.ok(!r.output.includes("not-the-lab-passphrase") && !r.output.includes(LAB_WIFI.psk), "no PSK in the output");
    } else assert.match(r.stdout, /slaves are \{eth0\}, want \{eth0, eth7\}/);
    assert.equal(await configState(), before, "every file is byte-identical to before the run");
    assert.equal(await nmActive(), activeBefore, "the same NetworkManager profiles are active");
    const bondAfter = await bondStatus(pi);
    assert.deepEqual(bondAfter?.slaves.map((x) => x.name).sort(), bondBefore?.slaves.map((x) => x.name).sort());
    assert.equal(bondAfter?.activeSlave, "eth0");
    assert.equal(await ourTimers(pi), "", "nothing left armed");
  });

  if (s.cutOff)
    test(`${s.flavor}: cut off by its own change (bond moved to an unreachable address), the host reverts by itself`, async () => {
      const before = await configState();
      const moved = labInventory(lab, join(dir, "moved.yaml"), { pi1: { bond_address: "10.99.0.11/24", bond_gateway: "10.99.0.1", confirm_timeout: 60 } });
      const cutAt = Date.now();
      const r = await timed(`${s.flavor}: cut off → the host reverts by itself`, () => cli("--inventory", moved, playbook));
      assert.equal(r.code, 1, r.output);
      assert.equal(summary(r.stdout).pi1.status, "rolled back by host", r.stdout);
      await waitForHostRevert(pi, 10 * 60_000);
      const revertedAt = Number((await pi.ssh("cat /var/lib/provision/runs/$(cat /var/lib/provision/last)/reverted-at")).stdout.trim()) * 1000;
      console.log(
        `${s.flavor}: cut off → provision's revert timer fired ${((revertedAt - cutAt) / 1000).toFixed(0)} s after the run began; reachable again after ${((Date.now() - cutAt) / 1000).toFixed(0)} s (confirm_timeout 60 s)`,
      );
      assert.equal(await configState(), before, "files byte-identical to before the run");
      assert.equal((await bondStatus(pi))?.activeSlave, "eth0", "back on the bond it had");
      const t = Date.now();
      assert.ok(await bondWithSlavesUp(pi, 180_000), `every slave up again after the host's own boot: ${JSON.stringify(await bondStatus(pi))}`);
      console.log(`${s.flavor}: every slave up ${((Date.now() - t) / 1000).toFixed(0)} s after the host answered`);
    });

  const steps = { pi: () => pi, cli: (...args: string[]) => cli("--inventory", inventory, playbook, ...args), flavor: s.flavor };
  if (s.readers === "nmcli round trips") nmcliRoundTrips(steps);
  if (s.readers === "netplan in /run") netplanInRun(steps);
}

// What a Pi's interfaces file has besides the management interface: a sensor LAN stanza
// (allow-hotplug: boot does not wait for eth9, which the guest does not have) with its
// comment, and a sourced file with a dummy interface that comes up at boot.
const SENSOR_STANZA = "\n# Sensor LAN (the weather station): not the bond's, kept\nallow-hotplug eth9\niface eth9 inet static\n\taddress 10.9.0.2/24\n";
const SENSOR_SOURCED =
  "# A dummy interface from a file the interfaces file sources\nauto dummy9\niface dummy9 inet static\n\taddress 10.9.9.1/24\n\tpre-up ip link add dummy9 type dummy\n\tpost-down ip link del dummy9\n";
const SOURCED_PATH = "/etc/network/interfaces.d/sensor";

/** Adds the sensor stanza and the sourced file; returns the interfaces file as it then is. */
async function addSharedConfiguration(pi: Guest): Promise<string> {
  const b64 = (text: string) => Buffer.from(text).toString("base64");
  const r = await pi.ssh(
    `echo ${b64(SENSOR_STANZA)} | base64 -d >> /etc/network/interfaces && mkdir -p /etc/network/interfaces.d && echo ${b64(SENSOR_SOURCED)} | base64 -d > ${SOURCED_PATH}`,
  );
  assert.equal(r.code, 0, r.stderr);
  const before = (await pi.ssh("cat /etc/network/interfaces")).stdout;
  assert.match(before, /^source \/etc\/network\/interfaces\.d\/\*$/m, "the guest's file sources interfaces.d as Debian's does");
  return before;
}

/**
 * Every line of the file before the run but the management interface's stanza (the bond's
 * slave now) is still there, in the same order; the sourced file is unchanged and its dummy
 * interface came up at boot (the source line still works). Returns the file.
 */
async function sharedKept(pi: Guest, before: string): Promise<string> {
  const after = (await pi.ssh("cat /etc/network/interfaces")).stdout;
  const lines = before.split("\n");
  const start = lines.indexOf("auto eth0");
  const end = lines.findIndex((l, i) => i > start && l.trim() === "");
  const notTheBonds = lines.filter((_, i) => i < start || i >= end).filter((l) => l.trim() !== "");
  const afterLines = after.split("\n");
  let at = 0;
  for (const line of notTheBonds) {
    const found = afterLines.indexOf(line, at);
    assert.ok(found >= 0, `kept in place: ${JSON.stringify(line)}\n--- before\n${before}--- after\n${after}`);
    at = found + 1;
  }
  assert.doesNotMatch(after, /^iface eth0 inet static$/m, "eth0's own stanza was replaced");
  assert.equal((await pi.ssh(`cat ${SOURCED_PATH}`)).stdout, SENSOR_SOURCED, "the sourced file is untouched");
  assert.match((await pi.ssh("ip -4 -o addr show dev dummy9")).stdout, /inet 10\.9\.9\.1\/24/, "the sourced stanza came up at boot");
  return after;
}

/** What the guest's stack said this boot, for a failed run's message. */
async function diagnostics(pi: Guest): Promise<string> {
  const r = await pi.ssh(
    "journalctl -b --no-pager -u NetworkManager -u systemd-networkd -u networking -u 'wpa_supplicant*' | tail -40; cat /proc/net/bonding/bond0; iw dev wlan0 link",
    { timeoutMs: 30_000 },
  );
  return `\n--- guest after the run ---\n${r.stdout}${r.stderr}${consoleFailures(pi)}`;
}

/** Pings every 50 ms while eth0's cable is pulled and plugged back; bond status polled over SSH. */
async function cablePull(lab: Lab, pi: Guest, backup: string) {
  const interval = 0.05,
    count = 240;
  const argv = lab.controllerArgv(["ping", "-n", "-i", String(interval), "-c", String(count), "-W", "1", pi.address]);
  const ping = spawn(argv[0], argv.slice(1), { stdio: ["ignore", "pipe", "pipe"] });
  let out = "";
  ping.stdout.on("data", (d) => (out += d));
  const done = new Promise((r) => ping.on("close", r));
  await sleep(2000);
  const until = async (active: string) => {
    const t = Date.now();
    for (let i = 0; i < 60; i++) {
      if ((await bondStatus(pi))?.activeSlave === active) return Date.now() - t;
      await sleep(100);
    }
    return -1;
  };
  await pi.setLink("eth0", false);
  const failoverMs = await until(backup);
  await sleep(4000);
  await pi.setLink("eth0", true);
  const backMs = await until("eth0");
  await done;
  const lost = count - [...out.matchAll(/icmp_seq=(\d+)/g)].length;
  return { lost, count, failoverMs, backMs };
}

/** Samples every process's arguments on the controller while a run goes on; counts sightings of `secret`. */
function watchControllerArgs(secret: string): { stop(): number } {
  let seen = 0;
  let running = true;
  const loop = (async () => {
    while (running) {
      const r = await run(["ps", "-eo", "args"], { timeout: 10_000 });
      if (r.stdout.includes(secret)) seen++;
      await sleep(200);
    }
  })();
  return {
    stop: () => {
      running = false;
      void loop;
      return seen;
    },
  };
}
