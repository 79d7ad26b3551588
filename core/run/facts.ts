// Gathers every probe of every task in one remote command: one round trip per host.
import { randomBytes } from "node:crypto";
import type { HostFacts, Probe, ProbeResult } from "../module-api.js";
import { commandLine, quote } from "../transport/shell.js";
import type { ExecResult, Transport } from "../transport/transport.js";
import type { Step } from "../transport/batch.js";
import { HostError } from "../errors.js";

export type { ProbeResult };

// An audit of a fleet pays every process it makes each host start, so the script forks as
// little as it can: host facts are read with shell builtins, file contents are printed raw
// (framed by the run's random marker, which no content can predict), every file is stat'ed
// by one `stat` at the end, and probes that are sh scripts run in a subshell, not a new sh.

const HOST_FACTS = `read -r boot < /proc/sys/kernel/random/boot_id; read -r name < /proc/sys/kernel/hostname
btime=0; while read -r key value; do if [ "$key" = btime ]; then btime=$value; break; fi; done < /proc/stat
sd=0; [ -d /run/systemd/system ] && sd=1
echo "$boot $btime $sd $name"; unset boot name btime key value sd`;

/** A stable key for a probe, so identical probes from several tasks are read once. */
export function probeKey(probe: Probe): string {
  return JSON.stringify(probe);
}

/** Every marker line but the first follows a newline of its own, so contents stay byte-exact. */
const mark = (tag: string) => `printf '\\n%s\\n' "$_marker ${tag}"`;

function probeScript(probe: Probe, i: number): string {
  if ("file" in probe) {
    const p = quote(probe.file);
    return `if [ -e ${p} ]; then set -- "$@" ${p}; ${mark(`${i} file`)}; cat -- ${p} 2>/dev/null; else ${mark(`${i} missing`)}; fi`;
  }
  if ("dir" in probe) {
    // an entry's name goes on its marker line: names with a newline in them are left out
    const p = quote(probe.dir);
    return `if [ -d ${p} ]; then ${mark(`${i} dir`)}; for f in ${p}/*; do [ -f "$f" ] || continue; case \${f##*/} in *"$_nl"*) continue;; esac; ${mark(`${i} entry \${f##*/}`)}; cat -- "$f" 2>/dev/null; done; else ${mark(`${i} missing`)}; fi`;
  }
  return `${mark(`${i} out`)}; ${runInPlace(probe.command)} < /dev/null 2>/dev/null; ${mark(`${i} rc $?`)}`;
}

/**
 * `sh -c SCRIPT NAME ARGS…` runs in a subshell (a fork, no new sh) through eval, so a
 * syntax error in it fails that probe only; any other command runs as is.
 */
function runInPlace(argv: string[]): string {
  if (argv[0] !== "sh" || argv[1] !== "-c" || argv.length < 3) return commandLine(argv);
  const args = argv.slice(4).map(quote).join(" ");
  return `( set -- ${args}; eval ${quote(argv[2])} )`;
}

/** The batched shell script: one section per probe, framed by a random marker. */
export function gatherScript(probes: Probe[], marker: string): string {
  return [
    `_marker='${marker}' _nl='\n'`,
    `set --`,
    `echo "$_marker host"`,
    HOST_FACTS,
    ...probes.map(probeScript),
    `${mark("stat")}; [ $# -eq 0 ] || stat -L -c '%a %U:%G %Y %n' -- "$@" 2>/dev/null`,
    mark("end"),
    "",
  ].join("\n");
}

interface Section {
  tag: string;
  content: string;
}

function sections(stdout: string, marker: string): Section[] {
  return `\n${stdout}`
    .split(`\n${marker} `)
    .slice(1)
    .map((part) => {
      const eol = part.indexOf("\n");
      return eol < 0 ? { tag: part, content: "" } : { tag: part.slice(0, eol), content: part.slice(eol + 1) };
    });
}

function fileMetadata(statOutput: string): Map<string, { mode: string; owner: string; mtime: number }> {
  const meta = new Map<string, { mode: string; owner: string; mtime: number }>();
  for (const line of statOutput.split("\n")) {
    const [mode, owner, mtime, ...name] = line.split(" ");
    if (name.length) meta.set(name.join(" "), { mode: mode.padStart(4, "0"), owner, mtime: Number(mtime) });
  }
  return meta;
}

export function parseGatherOutput(probes: Probe[], stdout: string, marker: string): { hostFacts: HostFacts; results: ProbeResult[] } {
  const all = sections(stdout, marker);
  if (all[0]?.tag !== "host" || all.at(-1)?.tag !== "end") throw new Error("the gather script did not run to its end");
  const [bootId = "", bootTime = "0", systemd = "0", hostname = ""] = all[0].content.trim().split(" ");
  const meta = fileMetadata(all.at(-2)!.content);
  const byProbe = new Map<number, Section[]>();
  for (const { tag, content } of all.slice(1, -2)) {
    const space = tag.indexOf(" ");
    const i = Number(tag.slice(0, space));
    byProbe.set(i, [...(byProbe.get(i) ?? []), { tag: tag.slice(space + 1), content }]);
  }
  const results = probes.map((probe, i) => {
    const own = byProbe.get(i);
    if (!own?.length) throw new Error(`no result for probe ${i + 1} of ${probes.length}`);
    return parseSections(probe, own, meta);
  });
  return { hostFacts: { bootId, bootTime: Number(bootTime), systemd: systemd === "1", hostname }, results };
}

function parseSections(probe: Probe, own: Section[], meta: ReturnType<typeof fileMetadata>): ProbeResult {
  if ("file" in probe) {
    const m = meta.get(probe.file);
    // a file that vanished between being read and stat'ed counts as missing
    if (own[0].tag === "missing" || !m) return { path: probe.file, content: null };
    return { path: probe.file, content: own[0].content, ...m };
  }
  if ("dir" in probe) {
    if (own[0].tag === "missing") return { path: probe.dir, entries: null };
    return { path: probe.dir, entries: Object.fromEntries(own.slice(1).map((s) => [s.tag.slice("entry ".length), s.content])) };
  }
  const rc = own.find((s) => s.tag.startsWith("rc "));
  return { code: Number(rc?.tag.slice(3) ?? NaN), stdout: own[0].content };
}

export interface Gathered {
  hostFacts: HostFacts;
  results: Map<string, ProbeResult>;
}

/** The gather as a batch step (see core/batch.ts), and how to read its result. */
export function gatherStep(probes: Probe[]): { step: Step; read(host: string, r: ExecResult): Gathered } {
  const unique = [...new Map(probes.map((p) => [probeKey(p), p])).values()];
  const marker = `::provision-${randomBytes(6).toString("hex")}::`;
  const read = (host: string, r: ExecResult): Gathered => {
    let parsed: { hostFacts: HostFacts; results: ProbeResult[] };
    try {
      parsed = parseGatherOutput(unique, r.stdout, marker);
    } catch (error) {
      throw new HostError(host, `gathering facts failed: ${(error as Error).message}${r.stderr ? ` (${r.stderr.trim().slice(0, 200)})` : ""}`);
    }
    return { results: new Map(unique.map((p, i) => [probeKey(p), parsed.results[i]])), hostFacts: parsed.hostFacts };
  };
  return { step: { what: "gather facts", argv: ["sh", "-c", gatherScript(unique, marker)] }, read };
}

/** Run all probes (deduplicated) plus the host facts in one remote command. */
export async function gather(connection: Transport, probes: Probe[]): Promise<Gathered> {
  const { step, read } = gatherStep(probes);
  return read(connection.target.name, await connection.exec(step.argv));
}

/** The facts object a module's plan receives: its probe names → results. */
export function factsFor(probes: Record<string, Probe>, gathered: Map<string, ProbeResult>): Record<string, ProbeResult> {
  return Object.fromEntries(Object.entries(probes).map(([name, p]) => [name, gathered.get(probeKey(p))!]));
}
