// What `provision watch` costs the controller, measured on real sshd hosts: its resident
// memory with 1 host and with N (the difference per host), its CPU per audited host, and
// the time one audit cycle of the fleet takes against a one-shot `provision --check` of it.
// Everything is read from the watch's own metrics endpoint (process_*, provision_*).
//   node dist/bench/watch.js [--sizes 1,50] [--interval 10] [--cycles 3] [--splay 0]
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { stringify } from "yaml";
import { startFleet, type TestFleet } from "../test/support/sshd-hosts.js";
import { run } from "../test/support/processes.js";
import { AUDIT } from "./hosts.js";
import { CLI } from "../test/integration/provision-cli.js";

const PORT = 9469;
const MAX_HOSTS = 50; // the machine is shared

const { values } = parseArgs({
  options: {
    sizes: { type: "string", default: "1,50" },
    interval: { type: "string", default: "10" },
    cycles: { type: "string", default: "3" },
    splay: { type: "string", default: "0" },
  },
});
const sizes = values.sizes.split(",").map(Number);
const interval = Number(values.interval);
const cycles = Number(values.cycles);
if (sizes.some((n) => !(n >= 1 && n <= MAX_HOSTS))) throw new Error(`--sizes: 1..${MAX_HOSTS} hosts each`);

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function scrape(fleet: TestFleet): Promise<string> {
  const r = await run(
    fleet.controllerArgv([
      "python3",
      "-c",
      "import sys, urllib.request; sys.stdout.write(urllib.request.urlopen(sys.argv[1]).read().decode())",
      `http://127.0.0.1:${PORT}/metrics`,
    ]),
  );
  if (r.code !== 0) throw new Error(`scrape: ${r.stderr}`);
  return r.stdout;
}

function values_(text: string, name: string): number[] {
  return text
    .split("\n")
    .filter((l) => l.startsWith(`${name}{`) || l.startsWith(`${name} `))
    .map((l) => Number(l.slice(l.lastIndexOf(" ") + 1)));
}
const sum = (xs: number[]) => xs.reduce((a, b) => a + b, 0);

interface Measured {
  hosts: number;
  rssMiB: number;
  heapMiB: number;
  cpuMsPerAudit: number;
  cycleSeconds: number;
  checkSeconds: number;
}

async function measure(n: number): Promise<Measured> {
  const fleet = await startFleet({ count: n, prefix: "m" });
  const dir = mkdtempSync(join(tmpdir(), "watch-bench-"));
  try {
    const inventory = join(dir, "inventory.yaml");
    writeFileSync(
      inventory,
      stringify({
        all: {
          vars: { user: "root", identity_file: fleet.identityFile, known_hosts_file: fleet.knownHostsFile, bond_gateway: fleet.bridgeAddress },
          children: { pis: { hosts: Object.fromEntries(fleet.hosts.map((h) => [h.name, { address: h.address, bond_address: `${h.address}/24` }])) } },
        },
      }),
    );
    const common = ["--inventory", inventory, AUDIT, "--skip-tags", "kernel"];
    const t0 = Date.now();
    const check = await run(fleet.controllerArgv(["node", CLI, ...common, "--check"]));
    const checkSeconds = (Date.now() - t0) / 1000;
    if (![0, 2].includes(check.code)) throw new Error(`provision --check exited ${check.code}: ${check.stderr}`);

    const argv = fleet.controllerArgv(["node", CLI, "watch", ...common, "--interval", String(interval), "--splay", values.splay, "--json", "--metrics", `:${PORT}`]);
    const watch = spawn(argv[0], argv.slice(1), { stdio: ["ignore", "ignore", "inherit"] });
    try {
      // warm up: every host audited, then a cycle more
      for (let text = ""; sum(values_(text, "provision_audits_total")) < n; text = await scrape(fleet).catch(() => "")) await sleep(500);
      await sleep(interval * 1000);
      const before = await scrape(fleet);
      await sleep(cycles * interval * 1000);
      const after = await scrape(fleet);
      const audits = sum(values_(after, "provision_audits_total")) - sum(values_(before, "provision_audits_total"));
      const cpu = values_(after, "process_cpu_seconds_total")[0] - values_(before, "process_cpu_seconds_total")[0];
      // the last cycle: from its first audit's start to its last audit's end
      const starts = values_(after, "provision_last_audit_timestamp_seconds");
      const ends = starts.map((s, i) => s + values_(after, "provision_audit_duration_seconds")[i]);
      return {
        hosts: n,
        rssMiB: values_(after, "process_resident_memory_bytes")[0] / 2 ** 20,
        heapMiB: values_(after, "nodejs_heap_used_bytes")[0] / 2 ** 20,
        cpuMsPerAudit: (cpu * 1000) / audits,
        cycleSeconds: Math.max(...ends) - Math.min(...starts),
        checkSeconds,
      };
    } finally {
      watch.kill("SIGINT");
      await new Promise((r) => watch.once("exit", r));
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
    await fleet.stop();
  }
}

const results: Measured[] = [];
for (const n of sizes) results.push(await measure(n));
console.log("| hosts | controller RSS | V8 heap used | CPU per audited host | one audit cycle (watch) | provision --check (connects) |");
console.log("|---:|---:|---:|---:|---:|---:|");
for (const r of results)
  console.log(
    `| ${r.hosts} | ${r.rssMiB.toFixed(1)} MiB | ${r.heapMiB.toFixed(1)} MiB | ${r.cpuMsPerAudit.toFixed(1)} ms | ${r.cycleSeconds.toFixed(2)} s | ${r.checkSeconds.toFixed(2)} s |`,
  );
if (results.length > 1) {
  const [a, b] = [results[0], results.at(-1)!];
  console.log(
    `\nper added host: ${(((b.rssMiB - a.rssMiB) * 1024) / (b.hosts - a.hosts)).toFixed(0)} KiB resident, ${(((b.heapMiB - a.heapMiB) * 1024) / (b.hosts - a.hosts)).toFixed(0)} KiB heap`,
  );
}
