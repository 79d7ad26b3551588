// The two benchmarks on one fleet: the audit (--check of fresh hosts) and the apply (a rollout
// to fresh hosts, then its idempotent repeat), plus the checks that both tools did the same.
import { mkdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { AUDIT, BenchError, resetHosts, type FreshState, type Setup, type Touched } from "./hosts.js";
import { describeFailures, runAnsible, runProvision, runProvisionConnect, runSshTrue, type Playbooks, type Sample, type ToolName } from "./tools.js";
import { repoRoot } from "../test/support/cache.js";

export const AUDIT_PLAYBOOKS: Playbooks = { provision: AUDIT, ansible: join(repoRoot, "bench", "audit-ansible.yaml"), skipKernel: true };
export const APPLY_PLAYBOOKS: Playbooks = { provision: join(repoRoot, "bench", "apply.yaml"), ansible: join(repoRoot, "bench", "apply-ansible.yaml"), skipKernel: false };
/** Everything bench/apply.yaml (and its Ansible twin) may change on a host; a reset puts it back. */
export const APPLY_TOUCHED: Touched = { files: ["/etc/dhcpcd.conf"], packages: ["ifenslave"], dirs: ["/var/lib/provision"] };

export const AUDIT_TOOLS: ToolName[] = ["provision", "ansible linear", "ansible mitogen", "provision connect", "ssh true"];
export const APPLY_TOOLS: ToolName[] = ["provision", "ansible linear", "ansible mitogen"];

export interface Reps {
  tool: number;
  peer: number;
  cpuProf?: string;
}

const isPeer = (t: ToolName) => t.startsWith("ansible");
const repsOf = (t: ToolName, r: Reps) => (isPeer(t) ? r.peer : r.tool);

/** The tools of run `rep`, rotated so that each goes first in turn; peers stop after their own count of runs. */
function order(tools: ToolName[], rep: number, r: Reps): ToolName[] {
  return tools.map((_, i) => tools[(i + rep) % tools.length]).filter((t) => rep < repsOf(t, r));
}

export function logSample(x: Sample, rep: number): void {
  const other = Math.max(0, x.machineCpu - x.cpu - x.hostsCpu);
  const rt = `${median(x.rt.connections)} conn + ${median(x.rt.commands)} cmd per host (max ${Math.max(0, ...x.rt.commands)} cmd)`;
  console.log(
    `  ${x.kind} N=${x.n} run ${rep + 1} ${`${x.tool}${x.phase === "check" ? "" : ` ${x.phase}`}`.padEnd(22)} wall ${x.wall.toFixed(2)} s  cpu ${x.cpu.toFixed(2)} s  peak ${x.peakMb.toFixed(0)} MB  tree ${x.treeMb.toFixed(0)} MB  hosts cpu ${x.hostsCpu.toFixed(2)} s  other cpu ${other.toFixed(2)} s  ${rt}  (${x.verdict}${x.detached ? `; ${x.detached} ssh masters stopped` : ""}${x.mitogen === false ? "; MITOGEN NOT SEEN" : ""})`,
  );
  if (x.failures.length) console.log(`${x.tool === "provision" ? "  !!! PROVISION FAILED: " : "      "}${describeFailures(x.failures)}`);
}

export async function auditSize(s: Setup, r: Reps): Promise<Sample[]> {
  const all: Sample[] = [];
  for (let rep = 0; rep < Math.max(r.tool, r.peer); rep++) {
    for (const tool of order(AUDIT_TOOLS, rep, r)) {
      const profile = r.cpuProf && tool === "provision" && rep === 0 ? join(r.cpuProf, `provision-${s.n}`) : undefined;
      if (profile) mkdirSync(profile, { recursive: true });
      const x =
        tool === "provision"
          ? await runProvision(s, "audit", "check", AUDIT_PLAYBOOKS, rep, [], profile)
          : tool === "ansible linear"
            ? await runAnsible(s, "linear", "audit", "check", AUDIT_PLAYBOOKS, rep)
            : tool === "ansible mitogen"
              ? await runAnsible(s, "mitogen", "audit", "check", AUDIT_PLAYBOOKS, rep)
              : tool === "provision connect"
                ? await runProvisionConnect(s, rep)
                : await runSshTrue(s, rep);
      logSample(x, rep);
      all.push(x);
    }
  }
  return all;
}

function applyRun(s: Setup, tool: ToolName, phase: "first" | "second", rep: number | string): Promise<Sample> {
  return tool === "provision"
    ? runProvision(s, "apply", phase, APPLY_PLAYBOOKS, rep)
    : runAnsible(s, tool === "ansible mitogen" ? "mitogen" : "linear", "apply", phase, APPLY_PLAYBOOKS, rep);
}

/** Each tool's rollout to fresh hosts (reset before every first run), then its repeat; samples
 *  go into `all` as they come, so a reset that fails half-way keeps those already measured. */
export async function applySize(s: Setup, fresh: FreshState, r: Reps, all: Sample[]): Promise<void> {
  for (let rep = 0; rep < Math.max(r.tool, r.peer); rep++) {
    for (const tool of order(APPLY_TOOLS, rep, r)) {
      await resetHosts(s.fleet, APPLY_TOUCHED, fresh);
      for (const phase of ["first", "second"] as const) {
        const x = await applyRun(s, tool, phase, rep);
        logSample(x, rep);
        all.push(x);
      }
    }
  }
}

/** After one tool's apply, the other's --check must find nothing to do, on every host. */
export async function applyEquivalence(s: Setup, fresh: FreshState): Promise<string[]> {
  const notes: string[] = [];
  const pairs = [
    ["provision", "ansible linear"],
    ["ansible linear", "provision"],
  ] as const;
  for (const [applier, checker] of pairs) {
    await resetHosts(s.fleet, APPLY_TOUCHED, fresh);
    const applied = await applyRun(s, applier, "first", "eq");
    if (applied.failures.length) {
      notes.push(`${applier}'s apply failed on ${describeFailures(applied.failures)}: no equivalence check after it`);
      continue;
    }
    const check =
      checker === "provision" ? await runProvision(s, "apply", "verify", APPLY_PLAYBOOKS, "eq") : await runAnsible(s, "linear", "apply", "verify", APPLY_PLAYBOOKS, "eq");
    notes.push(
      `after ${applier}'s apply to all ${s.n} hosts, ${checker} --check found ${check.failures.length ? `something to change: ${describeFailures(check.failures)}` : `nothing to change on any host (${check.verdict})`}`,
    );
  }
  await resetHosts(s.fleet, APPLY_TOUCHED, fresh);
  return notes;
}

/**
 * After provision applied the audit to one host, neither tool may find a file or package to
 * change there. provision's audit also reads the kernel: these hosts share one without
 * bonding, so bond0 never runs here and provision says so (a pending reboot, never a file).
 */
export async function auditEquivalence(s: Setup): Promise<string> {
  const h = s.fleet.hosts[0];
  const limit = ["--limit", h.name];
  const apply = await runProvision(s, "audit", "first", AUDIT_PLAYBOOKS, "eq", limit);
  if (apply.failures.length || apply.code !== 0) throw new BenchError(`audit equivalence: provision's apply of the audit on ${h.name} exited ${apply.code}`);
  const report = join(s.dir, "eq-report.json");
  const p = await runProvision(s, "audit", "verify", AUDIT_PLAYBOOKS, "eq", [...limit, "--report", report]);
  const a = await runAnsible(s, "linear", "audit", "verify", AUDIT_PLAYBOOKS, "eq", limit);
  const changes = (JSON.parse(readFileSync(report, "utf8")) as ProvisionReport).hosts.flatMap((x) => x.tasks.flatMap((t) => t.changes));
  const beyondTheKernel = changes.filter((c) => !(c.kind === "pending" && /bond0 does not run as configured/.test(c.summary)));
  const aOk = a.code === 0 && !a.failures.length;
  return !beyondTheKernel.length && aOk
    ? `after provision applied the audit playbook to ${h.name}, provision --check found no file or package to change (${changes.length ? `exit ${p.code}: the one change left is the live bond — "${changes[0].summary.replace(/^\S+ /, "")}" — as these hosts share a kernel without bonding` : "exit 0"}) and ansible-playbook --check reported changed=0 there`
    : `NOT EQUIVALENT: after provision applied the audit playbook to ${h.name}, provision --check found ${beyondTheKernel.map((c) => c.summary).join("; ") || "nothing"} and ansible-playbook --check: ${a.verdict}${a.failures.length ? ` (${describeFailures(a.failures)})` : ""}`;
}

interface ProvisionReport {
  hosts: { tasks: { changes: { kind: string; summary: string }[] }[] }[];
}

export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return !s.length ? 0 : s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
}

export { BenchError };
