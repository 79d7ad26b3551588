// Extra steps of the seed flows (seed-on-flavour.ts) for the readers of each stack's own
// files: a profile touched with nmcli without changing its meaning audits clean and is left
// alone, a real nmcli change is drift with a one-line diff that a run repairs (NetworkManager);
// a netplan-style file that networkd reads before provision's is taken out of the way (networkd).
import { test } from "node:test";
import assert from "node:assert/strict";
import { consoleFailures, type Guest } from "./lab.js";
import { bondStatus, timed } from "./e2e-support.js";
import { summary, type CliResult } from "../integration/provision-cli.js";

export interface SeedSteps {
  pi(): Guest;
  /** The CLI with the seed's inventory and playbook, plus these arguments. */
  cli(...args: string[]): Promise<CliResult>;
  flavor: string;
}

const NM_DIR = "/etc/NetworkManager/system-connections";
const PROFILES = `${NM_DIR}/bond0.nmconnection ${NM_DIR}/bond0-port-eth0.nmconnection`;

/** Lines a unified diff in the CLI's output adds or removes (not its ---/+++ headers). */
function diffLines(stdout: string): string[] {
  return stdout
    .split("\n")
    .map((l) => l.trim())
    .filter((l) => /^[-+](?![-+]{2} )/.test(l) && !/^[-+]{3}\s/.test(l));
}

export function nmcliRoundTrips(s: SeedSteps): void {
  test(`${s.flavor}: profiles touched with nmcli without changing what they mean (DNS added and removed, autoconnect-priority set and reset) audit clean: no rewrite, no reboot`, async () => {
    const pi = s.pi();
    const before = (await pi.ssh(`cat ${PROFILES}`)).stdout;
    const touched = await pi.ssh(
      [
        "nmcli connection modify bond0 ipv4.dns 9.9.9.9",
        "nmcli connection modify bond0 -ipv4.dns 9.9.9.9",
        "nmcli connection modify bond0-port-eth0 connection.autoconnect-priority 5",
        "nmcli connection modify bond0-port-eth0 connection.autoconnect-priority 0",
      ].join(" && "),
    );
    assert.equal(touched.code, 0, touched.stderr);
    const rewritten = (await pi.ssh(`cat ${PROFILES}; sha256sum ${NM_DIR}/*`)).stdout;
    assert.notEqual(rewritten.split(`${NM_DIR}/`)[0], before, "NetworkManager rewrote the profiles its own way (timestamp, [proxy], key order)");
    console.log(`${s.flavor}: bond0.nmconnection as NetworkManager rewrote it:\n${rewritten.split("[bond]")[0]}`);

    const check = await s.cli("--check", "--diff");
    assert.equal(check.code, 0, check.output);
    const bootId = await pi.bootId();
    const run = await s.cli();
    assert.equal(run.code, 0, run.output);
    assert.equal(summary(run.stdout).pi1.changed, 0, run.stdout);
    assert.equal(await pi.bootId(), bootId, "no reboot");
    assert.equal((await pi.ssh(`cat ${PROFILES}; sha256sum ${NM_DIR}/*`)).stdout, rewritten, "no profile rewritten");
  });

  test(`${s.flavor}: a real nmcli change is drift whose diff is the one line that differs, and a run repairs it`, async () => {
    const pi = s.pi();
    assert.equal((await pi.ssh("nmcli connection modify bond0 ipv4.dns 9.9.9.9")).code, 0);
    const check = await s.cli("--check", "--diff");
    assert.equal(check.code, 2, check.output);
    assert.deepEqual(diffLines(check.stdout), ["-dns=9.9.9.9;"], check.stdout);
    const repair = await timed(`${s.flavor}: repair the nmcli change (reboot, verify)`, () => s.cli());
    assert.equal(repair.code, 0, repair.output + consoleFailures(pi));
    assert.doesNotMatch((await pi.ssh(`cat ${NM_DIR}/bond0.nmconnection`)).stdout, /^dns=/m);
    assert.equal((await bondStatus(pi))?.activeSlave, "eth0");
    const after = await s.cli("--check");
    assert.equal(after.code, 0, after.output);
  });
}

/** Like netplan's systemd generator: at every boot (and daemon-reload) a .network for eth1 in /run that sorts before provision's. */
const GENERATOR = "/etc/systemd/system-generators/lab-netplan";
const GENERATED = "/run/systemd/network/10-netplan-eth1.network";
const GENERATOR_SCRIPT = `#!/bin/sh
mkdir -p /run/systemd/network
printf '[Match]\\nName=eth1\\n\\n[Network]\\nDHCP=ipv4\\nLinkLocalAddressing=ipv6\\n' > ${GENERATED}
`;

export function netplanInRun(s: SeedSteps): void {
  test(`${s.flavor}: a netplan-style .network generated into /run/systemd/network, read before provision's, is masked by a run and eth1 stays in the bond`, async () => {
    const pi = s.pi();
    const script = GENERATOR_SCRIPT.replace(/'/g, "'\\''");
    const written = await pi.ssh(
      `mkdir -p /etc/systemd/system-generators && printf '%s' '${script}' > ${GENERATOR} && chmod 755 ${GENERATOR} && systemctl daemon-reload && cat ${GENERATED}`,
      { timeoutMs: 60_000 },
    );
    assert.equal(written.code, 0, written.stderr);
    assert.match(written.stdout, /Name=eth1/);

    const check = await s.cli("--check", "--diff");
    assert.equal(check.code, 2, check.output);
    assert.match(check.stdout, /mask \/run\/systemd\/network\/10-netplan-eth1\.network with an empty \/etc\/systemd\/network\/10-netplan-eth1\.network/);
    const run = await timed(`${s.flavor}: mask netplan's file (reboot, verify)`, () => s.cli());
    assert.equal(run.code, 0, run.output);
    assert.match((await pi.ssh(`cat ${GENERATED}`)).stdout, /Name=eth1/, "regenerated at boot");
    const networkFile = (await pi.ssh("networkctl status eth1 --no-pager | sed -n 's/^ *Network File: //p'")).stdout.trim();
    assert.equal(networkFile, "/etc/systemd/network/10-provision-bond0@eth1.network", "networkd configures eth1 from provision's file");
    const status = await bondStatus(pi);
    assert.deepEqual(status?.slaves.map((x) => x.name).sort(), ["eth0", "eth1"]);
    const again = await s.cli("--check");
    assert.equal(again.code, 0, again.output);
  });
}
