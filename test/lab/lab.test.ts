// Verifies the real-kernel lab itself, and that the bond rendering from the lab notes
// comes up right on Debian 12 (ifupdown + ifenslave) after a reboot and fails over when
// the "Ethernet cable" is pulled through QMP.
import assert from "node:assert/strict";
import { test } from "node:test";
import { run, sh } from "../support/processes.js";
import { startLab, type Guest, type Lab } from "./lab.js";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function must(guest: Guest, command: string, timeoutMs?: number): Promise<string> {
  const r = await guest.ssh(command, { timeoutMs });
  assert.equal(r.code, 0, `${guest.name}: \`${command}\` exited ${r.code}\nstdout: ${r.stdout}\nstderr: ${r.stderr}`);
  return r.stdout;
}

type BondState = { slaves: string[]; primary?: string; active?: string; mii: Record<string, string>; text: string };

function parseBond(text: string): BondState {
  const slaves: string[] = [];
  const mii: Record<string, string> = {};
  let current = "bond";
  for (const line of text.split("\n")) {
    const [key, ...rest] = line.split(":");
    const value = rest.join(":").trim();
    if (key === "Slave Interface") { current = value; slaves.push(value); }
    else if (key === "MII Status") mii[current] = value;
  }
  return {
    slaves, mii, text,
    primary: /^Primary Slave: (\S+)/m.exec(text)?.[1],
    active: /^Currently Active Slave: (\S+)/m.exec(text)?.[1],
  };
}

async function bondState(guest: Guest): Promise<BondState | undefined> {
  const r = await guest.ssh("cat /proc/net/bonding/bond0", { timeoutMs: 15_000 });
  return r.code === 0 ? parseBond(r.stdout) : undefined;
}

/** Poll until `ok(state)`; returns the state and the time it took. */
async function waitForBond(guest: Guest, ok: (s: BondState) => boolean, timeoutMs: number): Promise<{ state: BondState; ms: number }> {
  const t = Date.now();
  let last: BondState | undefined;
  while (Date.now() - t < timeoutMs) {
    last = (await bondState(guest)) ?? last;
    if (last && ok(last)) return { state: last, ms: Date.now() - t };
    await sleep(200);
  }
  assert.fail(`${guest.name}: bond0 did not reach the expected state within ${timeoutMs / 1000}s; last seen:\n${last?.text ?? "(no /proc/net/bonding/bond0)"}`);
}

/** The rendering from the lab notes that does come up right, for eth0 + wlan0. */
function interfaces(address: string): string {
  return `# interfaces(5) file used by ifup(8) and ifdown(8)
source /etc/network/interfaces.d/*

auto lo
iface lo inet loopback

auto eth0
iface eth0 inet manual

auto wlan0
iface wlan0 inet manual

auto bond0
iface bond0 inet static
    address ${address}/24
    gateway 10.77.0.1
    bond-slaves eth0 wlan0
    bond-primary eth0
    bond-mode active-backup
    bond-miimon 100
    bond-fail-over-mac active
    bond-primary-reselect always
    bond-updelay 200
    bond-downdelay 0
`;
}

function ourNamespaces(): string[] {
  return sh(["ip", "netns", "list"]).stdout.split("\n").map((l) => l.split(" ")[0]).filter(Boolean);
}

test("real-kernel lab: Debian guest, bonding, apt from the lab repo, reboot and QMP failover", { timeout: 20 * 60_000 }, async (t) => {
  const timings: Record<string, string> = {};
  const started = Date.now();
  let lab: Lab | undefined;
  try {
    lab = await startLab({ guests: 1, secondNic: "wlan0", name: "labtest" });
    const guest = lab.guests[0];
    timings["startLab (images + boot to SSH)"] = `${((Date.now() - started) / 1000).toFixed(1)}s`;
    timings["boot to SSH"] = `${(guest.bootMs / 1000).toFixed(1)}s`;
    assert.ok(ourNamespaces().includes(lab.netns));

    await t.test("guest runs Debian's 6.1 kernel with eth0 + wlan0", async () => {
      const kernel = (await must(guest, "uname -r")).trim();
      assert.match(kernel, /^6\.1\.0-\d+-amd64$/);
      assert.equal(kernel, lab!.kernelVersion);
      const links = await must(guest, "ls /sys/class/net");
      assert.deepEqual(links.split(/\s+/).filter(Boolean).sort(), ["eth0", "lo", "wlan0"]);
      assert.match(await must(guest, "ip -4 -o addr show dev eth0"), /inet 10\.77\.0\.11\/24 /);
      assert.equal((await must(guest, "hostname")).trim(), "pi1");
    });

    await t.test("bonding works in the guest kernel", async () => {
      await must(guest, "modprobe bonding && ip link add bondtest type bond && ip link del bondtest");
    });

    await t.test("ifenslave is not installed, and installs from the lab repository", async () => {
      const before = await guest.ssh("dpkg-query -W -f='${Status}' ifenslave");
      assert.ok(before.code !== 0 || !before.stdout.includes("install ok installed"), `ifenslave already installed: ${before.stdout}`);
      const t0 = Date.now();
      await must(guest, "apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y ifenslave", 300_000);
      timings["apt-get update + install ifenslave"] = `${((Date.now() - t0) / 1000).toFixed(1)}s`;
      assert.match(await must(guest, "dpkg-query -W -f='${Status}' ifenslave"), /install ok installed/);
    });

    await t.test("the notes' rendering comes up right after a reboot", async () => {
      await must(guest, `cat > /etc/network/interfaces <<'EOF'\n${interfaces(guest.address)}EOF\n` +
        `printf 'bonding\\n' >> /etc/modules\n` +
        `echo 'options bonding mode=active-backup primary=eth0 primary_reselect=always fail_over_mac=active' > /etc/modprobe.d/bonding.conf\n` +
        "sync");
      const rebootMs = await guest.reboot();
      timings["reboot to SSH (new boot_id)"] = `${(rebootMs / 1000).toFixed(1)}s`;
      const { state } = await waitForBond(guest, (s) => s.slaves.length === 2 && s.mii.eth0 === "up" && s.mii.wlan0 === "up", 30_000);
      assert.deepEqual([...state.slaves].sort(), ["eth0", "wlan0"], state.text);
      assert.equal(state.primary, "eth0", state.text);
      assert.equal(state.active, "eth0", state.text);
      assert.match(state.text, /active-backup/);
      assert.match(state.text, /fail_over_mac active/);
      assert.match(await must(guest, "ip -4 -o addr show dev bond0"), /inet 10\.77\.0\.11\/24 /);
      // the template oneshot left provision's file alone
      assert.match(await must(guest, "cat /etc/network/interfaces"), /bond-slaves eth0 wlan0/);
    });

    await t.test("pulling eth0 through QMP fails over to wlan0, and back", async () => {
      // ping the bond address from the controller's side while the cable is pulled
      const ping = lab!.controllerArgv(["ping", "-n", "-q", "-i", "0.1", "-w", "12", guest.address]);
      const pinging = run(ping);
      await sleep(1000);
      const t0 = Date.now();
      await guest.setLink("eth0", false);
      const down = await waitForBond(guest, (s) => s.active === "wlan0" && s.mii.eth0 === "down", 20_000);
      timings["failover eth0 -> wlan0 (seen over SSH)"] = `${((Date.now() - t0) / 1000).toFixed(1)}s`;
      assert.equal(down.state.slaves.length, 2);
      const pingResult = await pinging;
      const counts = /(\d+) packets transmitted, (\d+) received/.exec(pingResult.stdout);
      assert.ok(counts, `ping: ${pingResult.stdout} ${pingResult.stderr}`);
      timings["pings every 100 ms across the failover"] = `${counts[1]} sent, ${counts[2]} received`;
      assert.ok(Number(counts[2]) > Number(counts[1]) / 2, `the bond address mostly unreachable during failover: ${pingResult.stdout}`);
      const t1 = Date.now();
      await guest.setLink("eth0", true);
      await waitForBond(guest, (s) => s.active === "eth0" && s.mii.eth0 === "up", 20_000);
      timings["failback wlan0 -> eth0 (seen over SSH)"] = `${((Date.now() - t1) / 1000).toFixed(1)}s`;
    });
  } finally {
    const netns = lab?.netns;
    await lab?.stop();
    console.log("lab timings:", timings);
    if (netns) assert.ok(!ourNamespaces().includes(netns), `namespace ${netns} is left behind`);
  }
});
