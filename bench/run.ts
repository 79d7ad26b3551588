// Benchmark: provision against Ansible 2.14 (strategies `linear` and mitogen's `mitogen_linear`)
// on fleets of real sshd hosts, for an audit (--check of fresh hosts) and an apply (a rollout
// to fresh hosts, then its idempotent repeat).
//
//   npm run bench                       (bench/run.sh: installs ansible, ansible-mitogen and time if missing, builds)
//   node dist/bench/run.js --sizes 10,50,100,200 --profiles lan,lte --reps 5 --peer-reps 3 --out bench/results.md
//
// Each size is measured over every link profile asked (bench/links.ts: `lan` is the bridge as
// it is; `wifi` and `lte` put the userspace link emulator between every tool and every host).
// Each size gets a fresh fleet (test/support/sshd-hosts.ts: one OpenSSH server per network
// namespace); every tool runs inside the fleet's controller namespace, so all traffic stays
// inside namespaces this script made. What is measured per run: bench/measure.ts; the runs and
// how each host's outcome is judged: bench/tools.ts and bench/suites.ts; the tables and
// targets: bench/report.ts. A tool failing on some hosts is a result (recorded per host);
// only the benchmark's own failures (a fleet that cannot start, a reset that does not
// restore the fresh state) end a size, and the sizes measured so far are still reported.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { spawnSync } from "node:child_process";
import { cpus, loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { startFleet, type TestFleet } from "../test/support/sshd-hosts.js";
import { repoRoot } from "../test/support/cache.js";
import { waitForQuietMachine } from "./measure.js";
import { BenchError, firstLine, freshState, prepareHosts, setup } from "./hosts.js";
import { describeLink, parseProfiles, startLink, type Link } from "./links.js";
import { APPLY_TOUCHED, applyEquivalence, applySize, auditEquivalence, auditSize, type Reps } from "./suites.js";
import { applyTable, auditTable, renderResults, targets, type Meta, type SizeResult } from "./report.js";

const { values: opts } = parseArgs({
  options: {
    sizes: { type: "string", default: process.env.BENCH_SIZES ?? "10,50,100,200" },
    profiles: { type: "string", default: process.env.BENCH_PROFILES ?? "lan,lte" },
    reps: { type: "string", default: process.env.BENCH_REPS ?? "5" },
    "peer-reps": { type: "string", default: process.env.BENCH_PEER_REPS ?? "3" },
    out: { type: "string", default: join(repoRoot, "bench", "results.md") },
    "no-apply": { type: "boolean", default: false },
    "no-equivalence": { type: "boolean", default: false },
    json: { type: "string" },
    render: { type: "string" },
    "cpu-prof": { type: "string" },
    keep: { type: "boolean", default: false },
  },
});

function usage(message: string): never {
  console.error(
    `bench: ${message}\nusage: node dist/bench/run.js [--sizes 10,50,100,200] [--profiles lan,wifi,lte] [--reps 5] [--peer-reps 3] [--out FILE] [--json FILE] [--no-apply] [--no-equivalence] [--cpu-prof DIR] [--keep]\n       node dist/bench/run.js --render FILE.json[,FILE.json…] [--out FILE]   (tables and targets again from --json files, without running)`,
  );
  process.exit(64);
}

const sizes = opts.sizes!.split(",").map(Number);
const reps: Reps = { tool: Number(opts.reps), peer: Number(opts["peer-reps"]), cpuProf: opts["cpu-prof"] };
if (sizes.some((n) => !Number.isInteger(n) || n < 1)) usage("--sizes must be positive whole numbers, comma-separated");
if (![reps.tool, reps.peer].every((r) => Number.isInteger(r) && r >= 1)) usage("--reps and --peer-reps must be positive whole numbers");
let profiles: ReturnType<typeof parseProfiles> = [];
try {
  profiles = parseProfiles(opts.profiles!);
} catch (e) {
  usage(e instanceof Error ? e.message : String(e));
}

const oneLine = (e: unknown) => (e instanceof Error ? firstLine(e.message) : String(e));

function versions(): { node: string; ansible: string; provision: string; mitogen: string } {
  const text = (argv: string[]) => (spawnSync(argv[0], argv.slice(1), { encoding: "utf8" }).stdout ?? "").trim();
  return {
    node: process.version,
    ansible: text(["ansible", "--version"]).split("\n")[0] || "ansible not installed",
    mitogen: text(["dpkg-query", "-W", "-f", "${Version}", "ansible-mitogen"]) || "not installed",
    provision: JSON.parse(readFileSync(join(repoRoot, "package.json"), "utf8")).version,
  };
}

/** One size: a fresh fleet, then per link profile the audit and the apply; infrastructure errors end it with a one-line reason. */
async function benchSize(n: number, first: boolean, notes: string[], results: SizeResult[]): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), `provision-bench-${n}-`));
  let fleet: TestFleet | undefined;
  try {
    try {
      fleet = await startFleet({ count: n, prefix: "pi" });
    } catch (e) {
      throw new BenchError(`the fleet of ${n} hosts could not start: ${oneLine(e)}`);
    }
    await prepareHosts(fleet);
    const fresh = await freshState(fleet, APPLY_TOUCHED);
    // the checks that both tools did the same: once per benchmark, on the first size and link
    const checkSame = first && !opts["no-equivalence"];
    for (const [i, profile] of profiles.entries()) {
      const link: Link = await startLink(fleet, profile, dir);
      const result: SizeResult = { n, profile: profile.name, samples: [] };
      results.push(result);
      try {
        const s = setup(fleet, join(dir, profile.name), link);
        const waited = await waitForQuietMachine();
        notes.push(
          waited === null
            ? `${n} hosts, ${profile.name}: the machine never got quiet (under 10% busy) within 120 s; measured anyway`
            : `${n} hosts, ${profile.name}: waited ${waited.toFixed(0)} s for a quiet machine`,
        );
        console.log(`bench: ${n} hosts over ${describeLink(profile)}`);
        result.samples.push(...(await auditSize(s, reps)));
        if (!opts["no-apply"]) {
          try {
            await applySize(s, fresh, reps, result.samples);
            if (checkSame && i === 0) notes.push(...(await applyEquivalence(s, fresh)).map((x) => `Same apply: ${x}.`));
          } catch (e) {
            if (!(e instanceof BenchError)) throw e;
            notes.push(`${n} hosts, ${profile.name}: the apply benchmark stopped: ${e.message}`);
            console.error(`bench: ${n} hosts, ${profile.name}: the apply benchmark stopped: ${e.message}`);
          }
        }
        if (checkSame && i === 0) notes.push(`Same audit: ${await auditEquivalence(s)}.`);
      } finally {
        const counters = await link.stop();
        if (counters)
          notes.push(
            `${n} hosts, ${profile.name}: the link emulator relayed ${counters.connections} connections, ${counters.chunks} chunks (${(counters.bytes / 2 ** 20).toFixed(1)} MiB); ${counters.delayedByLoss} chunks held back by a modelled segment loss, ${counters.handshakeLosses} handshakes by a lost SYN or SYN-ACK.`,
          );
      }
    }
  } finally {
    await fleet?.stop();
    if (!opts.keep) rmSync(dir, { recursive: true, force: true });
    else console.log(`bench: kept ${dir}`);
  }
}

/** What --json saves: every sample (without the tools' output) and the report's metadata. */
interface Saved {
  results: SizeResult[];
  meta: Omit<Meta, "started"> & { started: string };
}

/** Several --json files as one report (e.g. one invocation per link profile): results side by side, the metadata of each kept. */
function merge(saved: Saved[]): { results: SizeResult[]; meta: Meta } {
  const results = saved.flatMap((x) => x.results.map((r) => ({ ...r, profile: r.profile ?? "lan" })));
  const metas = saved.map((x) => x.meta);
  const joined = (f: (m: Saved["meta"]) => string) => [...new Set(metas.map(f))].join("; then ");
  const first = metas[0];
  return {
    results,
    meta: {
      ...first,
      started: new Date(first.started),
      load: joined((m) => m.load),
      loadEnd: joined((m) => m.loadEnd),
      sizes: [...new Set(metas.flatMap((m) => m.sizes))],
      profiles: [...new Set(metas.flatMap((m) => m.profiles ?? ["lan"]))],
      stopped:
        metas
          .map((m) => m.stopped)
          .filter(Boolean)
          .join("; ") || undefined,
      notes: metas.flatMap((m, i) =>
        metas.length > 1
          ? [
              `Run ${i + 1} of ${metas.length} (started ${m.started}, sizes ${m.sizes.join(", ")} on ${(m.profiles ?? ["lan"]).join(", ")}, ${m.reps.tool} run(s) of provision, ${m.reps.peer} of each Ansible strategy, load ${m.load} at the start):`,
              ...m.notes.map((n) => `  ${n}`),
            ]
          : m.notes,
      ),
    },
  };
}

function report(results: SizeResult[], meta: Meta, stopped?: string): void {
  for (const p of [...new Set(results.map((r) => r.profile))]) {
    const of = results.filter((r) => r.profile === p);
    console.log(["", `Audit on ${p}:`, auditTable(of), "", `Apply on ${p}:`, applyTable(of), "", `Targets on ${p}:`, ...targets(of), ""].join("\n"));
  }
  if (stopped) console.log(`Stopped ${stopped}; reported: ${results.map((r) => `${r.n} on ${r.profile}`).join(", ") || "no size"}.`);
  writeFileSync(opts.out!, renderResults(results, meta));
  console.log(`bench: wrote ${opts.out}`);
}

async function main(): Promise<void> {
  if (opts.render) {
    const { results, meta } = merge(opts.render.split(",").map((f) => JSON.parse(readFileSync(f, "utf8")) as Saved));
    return report(results, meta, meta.stopped);
  }
  const results: SizeResult[] = [];
  const notes: string[] = [];
  const load = loadavg()
    .map((l) => l.toFixed(2))
    .join(" ");
  const started = new Date();
  let stopped: string | undefined;
  console.log(
    `bench: sizes ${sizes.join(", ")}; links ${profiles.map((p) => p.name).join(", ")}; ${reps.tool} run(s) of provision, ${reps.peer} of each Ansible strategy; ${cpus().length} cores, load ${load}`,
  );
  for (const [i, n] of sizes.entries()) {
    try {
      await benchSize(n, i === 0, notes, results);
    } catch (e) {
      stopped = `at ${n} hosts: ${oneLine(e)}`;
      console.error(`bench: stopped ${stopped}`);
      if (!(e instanceof BenchError) && e instanceof Error) console.error(e.stack);
      break;
    }
  }
  const samples = results.flatMap((r) => r.samples);
  const other = samples.reduce((sum, x) => sum + Math.max(0, x.machineCpu - x.cpu - x.hostsCpu), 0);
  const capacity = samples.reduce((sum, x) => sum + x.wall * cpus().length, 0);
  if (capacity)
    notes.push(
      `Other activity on the machine (CPU used by neither the tool nor the hosts, e.g. the kernel's network path and anything else running): ${((other / capacity) * 100).toFixed(0)}% of the ${cpus().length} cores on average during the runs.`,
    );
  for (const p of profiles.filter((x) => x.rttMs > 0)) {
    const of = samples.filter((x) => x.profile === p.name);
    const cpu = of.reduce((sum, x) => sum + x.linkCpu, 0);
    const wall = of.reduce((sum, x) => sum + x.wall, 0);
    if (wall)
      notes.push(
        `The ${p.name} link emulator itself used ${cpu.toFixed(1)} s of CPU during ${wall.toFixed(0)} s of measured runs (${((cpu / wall) * 100).toFixed(0)}% of one core on average): the emulated network's cost on these shared cores, in every tool's wall alike.`,
      );
  }
  const meta: Meta = {
    started,
    load,
    loadEnd: loadavg()
      .map((l) => l.toFixed(2))
      .join(" "),
    reps,
    versions: versions(),
    sizes,
    profiles: profiles.map((p) => p.name),
    stopped,
    notes,
  };
  if (opts.json) {
    const saved: Saved = {
      results: results.map((r) => ({ n: r.n, profile: r.profile, samples: r.samples.map((x) => ({ ...x, output: "" })) })),
      meta: { ...meta, started: started.toISOString() },
    };
    writeFileSync(opts.json, JSON.stringify(saved));
    console.log(`bench: wrote ${opts.json}`);
  }
  report(results, meta, stopped);
  if (!results.length) process.exitCode = 1;
}

main().catch((error) => {
  console.error(`bench: ${oneLine(error)}`);
  process.exitCode = 1;
});
