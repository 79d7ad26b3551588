// One measured run of one tool on the whole fleet, and what it did to each host: the hosts
// where it did not do what the run expects are failures to record (which host, first line of
// the error), never a reason to stop the benchmark.
import { join } from "node:path";
import { writeFileSync } from "node:fs";
import { stringify } from "yaml";
import { measure, type Measured } from "./measure.js";
import { countsSince, firstLine, sshdCounts, type Setup, type SshdCounts, type Strategy } from "./hosts.js";
import { repoRoot } from "../test/support/cache.js";
import { relayCpu } from "./links.js";
import { summary as provisionSummary } from "../test/integration/provision-cli.js";

const CLI = join(repoRoot, "dist", "cli", "cli.js");

export type Kind = "audit" | "apply";
export type ToolName = "provision" | "provision connect" | "ssh true" | "ansible linear" | "ansible mitogen";
/** audit: a --check of fresh hosts; first/second: the apply and its idempotent repeat; verify: a --check after the other tool's apply */
export type Phase = "check" | "first" | "second" | "verify";

export interface HostFailure {
  host: string;
  error: string;
}

export interface Sample extends Measured {
  kind: Kind;
  tool: ToolName;
  phase: Phase;
  n: number;
  verdict: string;
  failures: HostFailure[];
  rt: SshdCounts;
  mitogen?: boolean; // for "ansible mitogen": mitogen's bootstrap was seen among Ansible's processes
  profile: string; // the link profile (bench/links.ts)
  linkCpu: number; // s, CPU of the link emulator meanwhile (0 on lan)
}

export interface Playbooks {
  provision: string;
  ansible: string;
  skipKernel: boolean;
}

/** What each host must report for a run to count as done on it. */
const EXPECT_PROVISION: Record<Phase, { status: string; says: string }> = {
  check: { status: "drift", says: "drift" },
  first: { status: "changed", says: "changed" },
  second: { status: "ok", says: "nothing to change" },
  verify: { status: "ok", says: "no drift" },
};

type Recap = Record<string, Record<string, number>>;
const EXPECT_ANSIBLE: Record<Phase, { ok: (r: Record<string, number>) => boolean; says: string }> = {
  check: { ok: (r) => r.changed > 0, says: "changed>0" },
  first: { ok: (r) => r.changed > 0, says: "changed>0" },
  second: { ok: (r) => r.changed === 0, says: "changed=0" },
  verify: { ok: (r) => r.changed === 0, says: "changed=0" },
};

/** A run that takes longer than this is stopped and recorded as failed on the hosts it did not finish
 *  (Ansible needs about 1 s per host here; 10 s per host and at least 10 minutes is far beyond any tool's normal). */
const runTimeout = (n: number) => Math.max(600, 10 * n);

/** Run `argv`, count the SSH round trips it cost each host, and label the result. */
async function measured(
  s: Setup,
  kind: Kind,
  tool: ToolName,
  phase: Phase,
  argv: string[],
  log: string,
  env?: NodeJS.ProcessEnv,
  extra: { detachedMarker?: string; watchFor?: string } = {},
) {
  const before = sshdCounts(s.fleet);
  const link0 = relayCpu(s.link.pid);
  const m = await measure(s.fleet.controllerArgv(argv), log, { env, hostPids: s.hostPids, timeoutS: runTimeout(s.n), ...extra });
  return { ...m, kind, tool, phase, n: s.n, rt: countsSince(before, sshdCounts(s.fleet)), profile: s.link.profile.name, linkCpu: relayCpu(s.link.pid) - link0 };
}

function logFile(s: Setup, kind: Kind, tool: ToolName, phase: Phase, rep: number | string): string {
  return join(s.dir, `${kind}-${tool.replace(" ", "-")}-${phase}-${rep}.log`);
}

// --- provision ---------------------------------------------------------------------------------

export async function runProvision(s: Setup, kind: Kind, phase: Phase, pb: Playbooks, rep: number | string, extra: string[] = [], profile?: string): Promise<Sample> {
  const node = profile ? ["node", "--cpu-prof", "--cpu-prof-dir", profile] : ["node"];
  const check = phase === "check" || phase === "verify" ? ["--check"] : [];
  const argv = [...node, CLI, "--inventory", s.provisionInventory, ...check, "--forks", String(s.n), ...(pb.skipKernel ? ["--skip-tags", "kernel"] : []), ...extra, pb.provision];
  const m = await measured(s, kind, "provision", phase, argv, logFile(s, kind, "provision", phase, rep));
  return judgeProvision(s, m, EXPECT_PROVISION[phase], extra.includes("--limit"));
}

/** provision with a play without tasks: connect, one gather of the host facts, disconnect. */
export async function runProvisionConnect(s: Setup, rep: number): Promise<Sample> {
  const playbook = join(s.dir, "connect-only.yaml");
  writeFileSync(playbook, stringify([{ name: "connect only", hosts: "pis", tasks: [] }]));
  const argv = ["node", CLI, "--inventory", s.provisionInventory, "--check", "--forks", String(s.n), playbook];
  const m = await measured(s, "audit", "provision connect", "check", argv, logFile(s, "audit", "provision connect", "check", rep));
  return judgeProvision(s, m, { status: "ok", says: "reached" });
}

function judgeProvision(s: Setup, m: Omit<Sample, "verdict" | "failures">, want: { status: string; says: string }, limited = false): Sample {
  const rows = provisionSummary(m.output);
  const hosts = limited ? s.fleet.hosts.filter((h) => rows[h.name]) : s.fleet.hosts;
  const failures = hosts
    .filter((h) => rows[h.name]?.status !== want.status)
    .map((h) => ({
      host: h.name,
      error:
        provisionError(m.output, h.name) ??
        (rows[h.name]
          ? `${rows[h.name].status} (expected ${want.status})`
          : `not in provision's summary (exit ${m.code}): ${firstLine(m.output.split("\n").slice(-5).join("\n"))}`),
    }));
  return { ...m, failures, verdict: `${hosts.length - failures.length}/${hosts.length} hosts ${want.says}, exit ${m.code}` };
}

/** The first error line provision printed for a host ("pi3 (10.88.0.13): failed" then "  error: …" or "    ✖ …"). */
function provisionError(output: string, host: string): string | undefined {
  const lines = output.split("\n");
  const at = lines.findIndex((l) => l.startsWith(`${host} (`));
  if (at < 0) return undefined;
  const end = lines.findIndex((l, i) => i > at && l !== "" && !l.startsWith(" "));
  const block = lines.slice(at + 1, end < 0 ? undefined : end);
  // an error, else the first change it found (for a host that should have had none)
  const line = block.find((l) => /^\s+(error:|✖)/.test(l)) ?? block.find((l) => /failed/.test(l)) ?? block.find((l) => /^ {4}\S/.test(l) && !/^\s+note:/.test(l));
  return line ? `${lines[at].split(": ").pop()}: ${line.trim().replace(/^error:\s*/, "")}` : undefined;
}

// --- Ansible -------------------------------------------------------------------------------------

/** Mitogen starts its remote side with this bootstrap (ssh … python3 -c "import codecs,os,sys;…"). */
const MITOGEN_BOOTSTRAP = "import codecs,os,sys";

export async function runAnsible(s: Setup, strategy: Strategy, kind: Kind, phase: Phase, pb: Playbooks, rep: number | string, extra: string[] = []): Promise<Sample> {
  const tool: ToolName = `ansible ${strategy}`;
  const check = phase === "check" || phase === "verify" ? ["--check"] : [];
  const argv = ["ansible-playbook", "-i", s.ansibleInventory, ...check, "--forks", String(s.n), ...(pb.skipKernel ? ["--skip-tags", "kernel"] : []), ...extra, pb.ansible];
  const m = await measured(s, kind, tool, phase, argv, logFile(s, kind, tool, phase, rep), s.ansibleEnv[strategy], {
    detachedMarker: s.controlDir,
    watchFor: strategy === "mitogen" ? MITOGEN_BOOTSTRAP : undefined,
  });
  const recap = ansibleRecap(m.output);
  const errors = ansibleErrors(m.output);
  const want = EXPECT_ANSIBLE[phase];
  const hosts = extra.includes("--limit") ? s.fleet.hosts.filter((h) => recap[h.name]) : s.fleet.hosts;
  const failures = hosts.flatMap((h) => {
    const r = recap[h.name];
    if (r && !r.failed && !r.unreachable && want.ok(r)) return [];
    const error =
      errors.get(h.name) ??
      (r
        ? `recap ${Object.entries(r)
            .filter(([, v]) => v)
            .map(([k, v]) => `${k}=${v}`)
            .join(" ")} (expected ${want.says})`
        : `not in the recap (exit ${m.code}): ${ansibleFatal(m.output)}`);
    return [{ host: h.name, error }];
  });
  return { ...m, failures, mitogen: strategy === "mitogen" ? m.seen : undefined, verdict: `${hosts.length - failures.length}/${hosts.length} hosts ${want.says}, exit ${m.code}` };
}

export function ansibleRecap(output: string): Recap {
  const recap: Recap = {};
  const at = output.lastIndexOf("PLAY RECAP");
  if (at < 0) return recap;
  for (const line of output.slice(at).split("\n").slice(1)) {
    const m = /^(\S+)\s+:\s+(.*)$/.exec(line.trim());
    if (m) recap[m[1]] = Object.fromEntries([...m[2].matchAll(/(\w+)=(\d+)/g)].map((x) => [x[1], Number(x[2])]));
  }
  return recap;
}

/** The first error of each host: "fatal: [pi3]: UNREACHABLE! => {…"msg": "…"}" (first line of msg). */
export function ansibleErrors(output: string): Map<string, string> {
  const errors = new Map<string, string>();
  for (const m of output.matchAll(/^fatal: \[([^\]]+)\]: (\w+)! => (.*)$/gm)) {
    if (errors.has(m[1])) continue;
    let msg = m[3];
    try {
      const r = JSON.parse(m[3]) as { msg?: string; stderr?: string; module_stderr?: string };
      msg = r.msg ?? r.stderr ?? r.module_stderr ?? m[3];
    } catch {
      /* not JSON: keep the text */
    }
    errors.set(m[1], `${m[2]}: ${gist(String(msg))}`.slice(0, 300));
  }
  return errors;
}

/** The first line of a message; with the next one when it only announces it ("…; last 100 lines received:"). */
function gist(msg: string): string {
  const lines = msg
    .split("\n")
    .map((l) => l.trim())
    .filter(Boolean);
  return lines[0]?.endsWith(":") && lines[1] ? `${lines[0]} ${lines[1]}` : (lines[0] ?? "");
}

/** Why Ansible stopped when there is no recap at all (e.g. "ERROR! …" or a traceback's last line). */
function ansibleFatal(output: string): string {
  const lines = output
    .split("\n")
    .map((l) => l.trim())
    .filter(Boolean);
  return (lines.find((l) => l.startsWith("ERROR!")) ?? lines.at(-1) ?? "no output").slice(0, 300);
}

// --- the floor: OpenSSH's client, every host at once -------------------------------------------

// Connects to every host at once (host key checked, no connection sharing) and runs `true`;
// prints one "failed HOST: first stderr line" per host that did not make it.
const SSH_TRUE = `key=$1 known=$2 tmp=$3; shift 3; pids=""
for h in "$@"; do
  ( ssh -F /dev/null -i "$key" -o UserKnownHostsFile="$known" -o GlobalKnownHostsFile=/dev/null -o StrictHostKeyChecking=yes \\
      -o BatchMode=yes -o ControlMaster=no -o ConnectTimeout=30 "root@$h" true 2>"$tmp/$h.err" \\
    || { echo "failed $h: $(grep -v '^Warning' "$tmp/$h.err" | head -n 1)"; exit 1; } ) & pids="$pids $!"
done
ok=0; for p in $pids; do wait "$p" && ok=$((ok + 1)); done
echo "ssh true: $ok ok"`;

export async function runSshTrue(s: Setup, rep: number): Promise<Sample> {
  const tmp = join(s.dir, "ssh-true");
  const argv = ["sh", "-c", `mkdir -p "$3" && ${SSH_TRUE}`, "ssh-true", s.fleet.identityFile, s.link.knownHostsFile, tmp, ...s.fleet.hosts.map((h) => s.link.addressOf(h))];
  const m = await measured(s, "audit", "ssh true", "check", argv, logFile(s, "audit", "ssh true", "check", rep));
  const byAddress = new Map(s.fleet.hosts.map((h) => [s.link.addressOf(h), h.name]));
  const failures = [...m.output.matchAll(/^failed (\S+): (.*)$/gm)].map((x) => ({ host: byAddress.get(x[1]) ?? x[1], error: x[2] || "ssh failed" }));
  return { ...m, failures, verdict: `${/ssh true: (\d+) ok/.exec(m.output)?.[1] ?? 0}/${s.n} hosts ok` };
}

/** One line about a sample's failed hosts, for the log and the tables. */
export function describeFailures(f: HostFailure[], max = 3): string {
  if (!f.length) return "";
  const byError = new Map<string, string[]>();
  for (const x of f) byError.set(x.error, [...(byError.get(x.error) ?? []), x.host]);
  const parts = [...byError]
    .slice(0, max)
    .map(([error, hosts]) => `${hosts.length > 4 ? `${hosts.slice(0, 4).join(", ")} and ${hosts.length - 4} more` : hosts.join(", ")}: ${error}`);
  return `${f.length} failed (${parts.join("; ")}${byError.size > max ? `; ${byError.size - max} other errors` : ""})`;
}
