// The eth0+eth1 seed on a fleet of three real-kernel guests in one run, then the
// never-strand guarantee on ifupdown: cut off by its own change, the host reverts by
// itself. (A controller killed mid-run: faults.test.ts, at three points of a run.)
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { startLab, type Lab } from "./lab.js";
import { bondStatus, fileHashes, labInventory, ourTimers, timed, TOUCHED, useLab } from "./e2e-support.js";
import { provision, summary } from "../integration/provision-cli.js";
import { repoRoot } from "../support/cache.js";

let lab: Lab;
let dir: string;
const ETH1 = join(repoRoot, "playbooks/bond-eth0-eth1.yaml");
const cli = (...args: string[]) => provision(lab.controllerArgv, args);

useLab(
  "lab (3 guests, eth0 + eth1)",
  () => startLab({ guests: 3, secondNic: "eth1", name: "lab-fleet" }),
  (booted, folder) => {
    [lab, dir] = [booted, folder];
  },
);

test("a fleet of 3 guests bonds eth0+eth1 in one run with --forks 3", async () => {
  // Two hosts get the bond; the third is kept for the revert tests below.
  const inventory = labInventory(lab, join(dir, "fleet.yaml"));
  const report = join(dir, "fleet.json");
  const r = await timed("fleet apply (3 guests in parallel)", () => cli("--inventory", inventory, ETH1, "--forks", "3", "--report", report));
  assert.equal(r.code, 0, r.output);
  const rows = summary(r.stdout);
  const json = JSON.parse(readFileSync(report, "utf8"));
  for (const g of lab.guests) {
    assert.equal(rows[g.name].status, "changed", r.stdout);
    const s = (await bondStatus(g))!;
    assert.deepEqual(s.slaves.map((x) => x.name).sort(), ["eth0", "eth1"], g.name);
    assert.equal(s.primary, "eth0");
    assert.equal(s.activeSlave, "eth0");
    assert.equal(json.hosts.find((h: { host: string }) => h.host === g.name).status, "changed");
  }
  assert.equal(json.summary.length, 3);
});

test("cut off by its own change (bond moved to an unreachable address), the host reverts by itself", async () => {
  const g = lab.guests[1];
  const before = await fileHashes(g, TOUCHED);
  const inventory = labInventory(lab, join(dir, "moved.yaml"), { [g.name]: { bond_address: "10.99.0.12/24", bond_gateway: "10.99.0.1", confirm_timeout: 60 } });
  const cutAt = Date.now();
  const r = await timed("cut off → host reverts by itself", () => cli("--inventory", inventory, "--limit", g.name, ETH1));
  assert.equal(r.code, 1, r.output);
  assert.equal(summary(r.stdout)[g.name].status, "rolled back by host", r.stdout);
  assert.match(r.stdout, /rolled back by host/);
  console.log(`cut off → reachable again at ${g.address} after ${((Date.now() - cutAt) / 1000).toFixed(0)} s (confirm_timeout 60 s, includes two reboots)`);
  assert.equal(await fileHashes(g, TOUCHED), before, "files byte-identical to before the run");
  assert.match((await g.ssh("cat /var/lib/provision/runs/*/state")).stdout, /reverted/);
  assert.equal(await ourTimers(g), "", "the revert cleaned up after itself");
  const s = await bondStatus(g);
  assert.equal(s?.activeSlave, "eth0", "back on the bond it had");
});
