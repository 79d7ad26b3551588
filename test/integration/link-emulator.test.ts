// A host behind the benchmark's `lte` link really is one round trip away: `provision connect`
// (a play without tasks: connect, gather, disconnect) to 2 real sshd hosts through the link
// emulator takes at least a few round trips longer than over the bare bridge, and host keys
// are still checked on the relay's addresses.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { stringify } from "yaml";
import { startFleet, type TestFleet } from "../support/sshd-hosts.js";
import { LINK_PROFILES } from "../support/link-emulator.js";
import { startLink, type Link } from "../../bench/links.js";
import { provision, summary } from "./provision-cli.js";

async function connectOnce(fleet: TestFleet, link: Link, dir: string): Promise<number> {
  const inventory = join(dir, `inventory-${link.profile.name}.yaml`);
  writeFileSync(
    inventory,
    stringify({
      all: {
        vars: { user: "root", identity_file: fleet.identityFile, known_hosts_file: link.knownHostsFile },
        children: { pis: { hosts: Object.fromEntries(fleet.hosts.map((h) => [h.name, { address: link.addressOf(h) }])) } },
      },
    }),
  );
  const playbook = join(dir, "connect-only.yaml");
  writeFileSync(playbook, stringify([{ name: "connect only", hosts: "pis", tasks: [] }]));
  const start = process.hrtime.bigint();
  const r = await provision(fleet.controllerArgv, ["--inventory", inventory, "--check", playbook]);
  const ms = Number(process.hrtime.bigint() - start) / 1e6;
  const rows = summary(r.stdout);
  for (const h of fleet.hosts) assert.equal(rows[h.name]?.status, "ok", `${link.profile.name} ${h.name}: ${r.output}`);
  return ms;
}

test("link emulator: provision connect over lte takes round trips longer than over the lan", { timeout: 300_000 }, async () => {
  const fleet = await startFleet({ count: 2, prefix: "pi" });
  const dir = mkdtempSync(join(tmpdir(), "link-emulator-"));
  const lan = await startLink(fleet, LINK_PROFILES.lan, dir);
  const lte = await startLink(fleet, LINK_PROFILES.lte, dir);
  try {
    const lanMs: number[] = [];
    const lteMs: number[] = [];
    for (let i = 0; i < 3; i++) {
      lanMs.push(await connectOnce(fleet, lan, dir));
      lteMs.push(await connectOnce(fleet, lte, dir));
    }
    const minRtt = LINK_PROFILES.lte.rttMs - LINK_PROFILES.lte.jitterMs;
    // TCP's handshake, SSH's banners, key exchange, authentication, the session and its answer:
    // well over 2 round trips, even at the shortest round trip the profile draws; the fastest
    // run of each is compared, as the shared machine's load only ever adds time
    assert.ok(Math.min(...lteMs) >= Math.min(...lanMs) + 2 * minRtt, `lan ${lanMs.map(Math.round).join(", ")} ms; lte ${lteMs.map(Math.round).join(", ")} ms`);
    console.log(`provision connect to 2 hosts: lan ${lanMs.map(Math.round).join(", ")} ms; lte ${lteMs.map(Math.round).join(", ")} ms`);
  } finally {
    const counters = await lte.stop();
    await fleet.stop();
    rmSync(dir, { recursive: true, force: true });
    assert.ok((counters?.connections ?? 0) >= 6, `the relay saw ${counters?.connections} connections`);
  }
});
