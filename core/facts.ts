// Gathers every probe of every task in one remote command: one round trip per host.
import { randomBytes } from "node:crypto";
import type { CommandOutput, DirState, FileState, HostFacts, Probe } from "./module-api.js";
import { commandLine, quote } from "./shell.js";
import type { Connection } from "./transport/ssh.js";
import { HostError } from "./errors.js";

export type ProbeResult = FileState | DirState | CommandOutput;

/**
 * Boot id, boot time and hostname, read with shell builtins only: the host forks nothing
 * for them (an audit of a fleet pays every process it makes each host start).
 */
const HOST_FACTS = `read -r boot < /proc/sys/kernel/random/boot_id; read -r name < /proc/sys/kernel/hostname
btime=0; while read -r key value; do if [ "$key" = btime ]; then btime=$value; break; fi; done < /proc/stat
echo "$boot $btime $name"`;

/** A stable key for a probe, so identical probes from several tasks are read once. */
export function probeKey(probe: Probe): string {
  return JSON.stringify(probe);
}

function probeScript(probe: Probe): string {
  if ("file" in probe) {
    const p = quote(probe.file);
    return `if [ -e ${p} ]; then stat -L -c '%a %U:%G %Y' -- ${p}; base64 -w0 < ${p}; echo; else echo MISSING; fi`;
  }
  if ("dir" in probe) {
    const p = quote(probe.dir);
    return `if [ -d ${p} ]; then echo DIR; for f in ${p}/*; do [ -f "$f" ] || continue; printf '%s ' "$(printf %s "\${f##*/}" | base64 -w0)"; base64 -w0 < "$f" 2>/dev/null; echo; done; else echo MISSING; fi`;
  }
  return `${commandLine(probe.command)} > "$out" 2>/dev/null < /dev/null; echo "rc $?"; base64 -w0 < "$out"; echo`;
}

/** The batched shell script: one section per probe, framed by a random marker. */
export function gatherScript(probes: Probe[], marker: string): string {
  const body = probes.map((p, i) => `echo '${marker} ${i}'\n${probeScript(p)}`).join("\n");
  return `out=$(mktemp); trap 'rm -f "$out"' EXIT\necho '${marker} host'\n${HOST_FACTS}\n${body}\necho '${marker} end'\n`;
}

const decode = (b64: string) => Buffer.from(b64.trim(), "base64").toString("utf8");

function parseSection(probe: Probe, lines: string[]): ProbeResult {
  if ("file" in probe) {
    if (lines[0] === "MISSING") return { path: probe.file, content: null };
    const [mode, owner, mtime] = lines[0].split(" ");
    return { path: probe.file, content: decode(lines[1] ?? ""), mode: mode.padStart(4, "0"), owner, mtime: Number(mtime) };
  }
  if ("dir" in probe) {
    if (lines[0] === "MISSING") return { path: probe.dir, entries: null };
    const entries: Record<string, string> = {};
    for (const line of lines.slice(1).filter(Boolean)) {
      const [name, content = ""] = line.split(" ");
      entries[decode(name)] = decode(content);
    }
    return { path: probe.dir, entries };
  }
  return { code: Number(lines[0].slice(3)), stdout: decode(lines[1] ?? "") };
}

export function parseGatherOutput(probes: Probe[], stdout: string, marker: string): { hostFacts: HostFacts; results: ProbeResult[] } {
  const sections: string[][] = [];
  let current: string[] | null = null;
  for (const line of stdout.split("\n")) {
    if (line.startsWith(`${marker} `)) {
      current = [];
      sections.push(current);
    } else current?.push(line);
  }
  if (sections.length !== probes.length + 2) throw new Error(`expected ${probes.length} probe results, got ${sections.length - 2}`);
  const [bootId = "", bootTime = "0", hostname = ""] = (sections[0][0] ?? "").split(" ");
  return { hostFacts: { bootId, bootTime: Number(bootTime), hostname }, results: probes.map((p, i) => parseSection(p, sections[i + 1])) };
}

export interface Gathered {
  hostFacts: HostFacts;
  results: Map<string, ProbeResult>;
}

/** Run all probes (deduplicated) plus the host facts in one remote command. */
export async function gather(connection: Connection, probes: Probe[]): Promise<Gathered> {
  const unique = [...new Map(probes.map((p) => [probeKey(p), p])).values()];
  const marker = `::provision-${randomBytes(6).toString("hex")}::`;
  const r = await connection.exec(["sh", "-c", gatherScript(unique, marker)]);
  let parsed: { hostFacts: HostFacts; results: ProbeResult[] };
  try {
    parsed = parseGatherOutput(unique, r.stdout, marker);
  } catch (error) {
    throw new HostError(connection.target.name, `gathering facts failed: ${(error as Error).message}${r.stderr ? ` (${r.stderr.trim().slice(0, 200)})` : ""}`);
  }
  return { results: new Map(unique.map((p, i) => [probeKey(p), parsed.results[i]])), hostFacts: parsed.hostFacts };
}

/** The facts object a module's plan receives: its probe names → results. */
export function factsFor(probes: Record<string, Probe>, gathered: Map<string, ProbeResult>): Record<string, ProbeResult> {
  return Object.fromEntries(Object.entries(probes).map(([name, p]) => [name, gathered.get(probeKey(p))!]));
}
