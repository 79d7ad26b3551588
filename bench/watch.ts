// What `provision watch` costs the controller, measured on real sshd hosts: its resident
// memory with 1 host and with N (the difference per host), its CPU per audited host, and
// the time one audit cycle of the fleet takes against `provision connect` (a handshake and
// one gather per host: the floor of any audit that connects) and a one-shot `--check`, per
// link profile (bench/links.ts). The watch's own figures are read from its metrics endpoint.
//   node dist/bench/watch.js [--sizes 1,200] [--profiles lan,lte] [--interval 60] [--cycles 3] [--splay 0] [--watch-forks 50]
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { stringify } from "yaml";
import { startFleet, type TestFleet } from "../test/support/sshd-hosts.js";
import { run } from "../test/support/processes.js";
import { AUDIT } from "./hosts.js";
import { describeLink, parseProfiles, startLink, type Link } from "./links.js";
import { CLI } from "../test/integration/provision-cli.js";

const PORT = 9469;
const MAX_HOSTS = 250; // the machine is shared

const { values } = parseArgs({
  options: {
    sizes: { type: "string", default: "1,200" },
    profiles: { type: "string", default: "lan,lte" },
    interval: { type: "string", default: "60" },
    cycles: { type: "string", default: "3" },
    // the watch's own default; the one-shot runs get forks = N
    "watch-forks": { type: "string", default: "50" },
    splay: { type: "string", default: "0" },
  },
});
const sizes = values.sizes.split(",").map(Number);
const interval = Number(values.interval);
const cycles = Number(values.cycles);
const profiles = parseProfiles(values.profiles);
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
  profile: string;
  connectSeconds: number;
  rssMiB: number;
  heapMiB: number;
  cpuMsPerAudit: number;
  cycleSeconds: number;
  checkSeconds: number;
}

async function measure(fleet: TestFleet, link: Link, dir: string): Promise<Measured> {
  const n = fleet.hosts.length;
  const inventory = join(dir, `inventory.${link.profile.name}.yaml`);
  writeFileSync(
    inventory,
    stringify({
      all: {
        vars: { user: "root", identity_file: fleet.identityFile, known_hosts_file: link.knownHostsFile, bond_gateway: fleet.bridgeAddress },
        children: { pis: { hosts: Object.fromEntries(fleet.hosts.map((h) => [h.name, { address: link.addressOf(h), bond_address: `${h.address}/24` }])) } },
      },
    }),
  );
  const connectOnly = join(dir, "connect-only.yaml");
  writeFileSync(connectOnly, stringify([{ name: "connect only", hosts: "pis", tasks: [] }]));
  const timedRun = async (what: string, args: string[], ok: number[]): Promise<number> => {
    const t0 = Date.now();
    const r = await run(fleet.controllerArgv(["node", CLI, "--inventory", inventory, "--forks", String(n), ...args]));
    if (!ok.includes(r.code)) throw new Error(`${what} exited ${r.code}: ${r.stderr}`);
    return (Date.now() - t0) / 1000;
  };
  const common = [AUDIT, "--skip-tags", "kernel"];
  const connectSeconds = await timedRun("provision connect", [connectOnly, "--check"], [0]);
  const checkSeconds = await timedRun("provision --check", [...common, "--check"], [0, 2]);

  const argv = fleet.controllerArgv([
    "node",
    CLI,
    "watch",
    "--inventory",
    inventory,
    "--forks",
    String(n),
    ...common,
    "--interval",
    String(interval),
    "--splay",
    values.splay,
    "--json",
    "--metrics",
    `:${PORT}`,
  ]);
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
      profile: link.profile.name,
      rssMiB: values_(after, "process_resident_memory_bytes")[0] / 2 ** 20,
      heapMiB: values_(after, "nodejs_heap_used_bytes")[0] / 2 ** 20,
      cpuMsPerAudit: (cpu * 1000) / audits,
      cycleSeconds: Math.max(...ends) - Math.min(...starts),
      connectSeconds,
      checkSeconds,
    };
  } finally {
    watch.kill("SIGINT");
    await new Promise((r) => watch.once("exit", r));
  }
}

async function measureSize(n: number): Promise<Measured[]> {
  const fleet = await startFleet({ count: n, prefix: "m" });
  const dir = mkdtempSync(join(tmpdir(), "watch-bench-"));
  const measured: Measured[] = [];
  try {
    for (const profile of profiles) {
      const link = await startLink(fleet, profile, dir);
      try {
        console.error(`watch bench: ${n} host(s) over ${describeLink(profile)}`);
        measured.push(await measure(fleet, link, dir));
      } finally {
        await link.stop();
      }
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
    await fleet.stop();
  }
  return measured;
}

const results: Measured[] = [];
for (const n of sizes) results.push(...(await measureSize(n)));
console.log("| link | hosts | controller RSS | V8 heap used | CPU per audited host | one audit cycle (watch) | `provision connect` | cycle ÷ connect | provision --check |");
console.log("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
for (const r of results)
  console.log(
    `| ${r.profile} | ${r.hosts} | ${r.rssMiB.toFixed(1)} MiB | ${r.heapMiB.toFixed(1)} MiB | ${r.cpuMsPerAudit.toFixed(1)} ms | ${r.cycleSeconds.toFixed(2)} s | ${r.connectSeconds.toFixed(2)} s | ${(r.cycleSeconds / r.connectSeconds).toFixed(2)}× | ${r.checkSeconds.toFixed(2)} s |`,
  );
for (const p of profiles) {
  const of = results.filter((r) => r.profile === p.name);
  if (of.length < 2) continue;
  const [a, b] = [of[0], of.at(-1)!];
  console.log(
    `\n${p.name}, per added host: ${(((b.rssMiB - a.rssMiB) * 1024) / (b.hosts - a.hosts)).toFixed(0)} KiB resident, ${(((b.heapMiB - a.heapMiB) * 1024) / (b.hosts - a.hosts)).toFixed(0)} KiB heap`,
  );
}
