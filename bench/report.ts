// Tables, target verdicts and bench/results.md from the samples of every size.
import { cpus, totalmem } from "node:os";
import { spread, showSpread, type Spread } from "./measure.js";
import { describeFailures, type HostFailure, type Kind, type Phase, type Sample, type ToolName } from "./tools.js";
import { AUDIT_TOOLS, APPLY_TOOLS } from "./suites.js";

export interface SizeResult {
  n: number;
  profile: string; // the link profile (bench/links.ts)
  samples: Sample[];
}

export interface Meta {
  started: Date;
  load: string;
  loadEnd: string;
  reps: { tool: number; peer: number };
  versions: { provision: string; node: string; ansible: string; mitogen: string };
  sizes: number[];
  profiles?: string[];
  stopped?: string;
  notes: string[];
}

type Metric = "wall" | "cpu" | "peakMb" | "treeMb" | "hostsCpu" | "ownCores";

/**
 * The wall a run would have taken if every host had its own CPU (the apply "with the hosts'
 * CPU subtracted"): here the hosts share the controller's cores, so their CPU time divided by
 * the cores is taken out of the wall, and the busiest host's own CPU time is put back (on a
 * real fleet each host does its share in parallel, the slowest one last). It assumes the
 * cores were busy for the tool or the hosts all along (true at 50+ hosts here, where the
 * machine is saturated); with idle cores it subtracts too much, which is why the raw wall
 * is reported beside it.
 */
export function ownCoresWall(x: Pick<Sample, "wall" | "hostsCpu" | "hostsCpuMax">, cores = cpus().length): number {
  return Math.max(0, x.wall - x.hostsCpu / cores) + x.hostsCpuMax;
}

const samplesOf = (r: SizeResult, kind: Kind, tool: ToolName, phase: Phase) => r.samples.filter((x) => x.kind === kind && x.tool === tool && x.phase === phase);
const value = (x: Sample, m: Metric) => (m === "ownCores" ? ownCoresWall(x) : x[m]);
const stat = (xs: Sample[], m: Metric): Spread => spread(xs.map((x) => value(x, m)));

/** a/b over runs: median of a over median of b; the range pairs the extremes. */
function ratio(a: Spread, b: Spread): Spread {
  return { median: a.median / b.median, min: a.min / b.max, max: a.max / b.min, n: Math.min(a.n, b.n) };
}

/** Increase per added host between two sizes (ms per host for seconds, or per-host units as given). */
function perAdded(lo: Spread, hi: Spread, dn: number, scale = 1000): Spread {
  return { median: ((hi.median - lo.median) / dn) * scale, min: ((hi.min - lo.max) / dn) * scale, max: ((hi.max - lo.min) / dn) * scale, n: Math.min(lo.n, hi.n) };
}

/** Round trips per host, pooled over every run and host: median and max. */
function roundTrips(xs: Sample[]): { conn: Spread; cmd: Spread } {
  return { conn: spread(xs.flatMap((x) => x.rt.connections)), cmd: spread(xs.flatMap((x) => x.rt.commands)) };
}

function failedHosts(xs: Sample[]): string {
  const failing = xs.filter((x) => x.failures.length);
  if (!failing.length) return "0";
  const first = new Map<string, HostFailure>();
  for (const x of failing) for (const f of x.failures) if (!first.has(f.host)) first.set(f.host, f);
  return `${describeFailures([...first.values()], 2)} in ${failing.length}/${xs.length} runs`.replace(/\|/g, "/");
}

const label = (tool: ToolName, phase: Phase) => (phase === "check" ? tool : `${tool} (${phase === "first" ? "1st" : "2nd"} run)`);

function table(results: SizeResult[], kind: Kind, rows: [ToolName, Phase][], ownCores = false): string {
  const header = [
    "N",
    "tool",
    "runs",
    "wall s",
    "cpu s",
    "peak MB",
    "tree MB",
    "hosts cpu s",
    "conn / cmd per host (max)",
    "failed hosts",
    "× faster than ansible linear / mitogen",
    "ms per added host",
    ...(ownCores ? ["wall with own host CPUs s", "× (own host CPUs) linear / mitogen"] : []),
  ];
  const lines: string[][] = [];
  results.forEach((r, i) => {
    for (const [tool, phase] of rows) {
      const xs = samplesOf(r, kind, tool, phase);
      if (!xs.length) continue;
      const wall = stat(xs, "wall");
      const rt = roundTrips(xs);
      const prev = results
        .slice(0, i)
        .reverse()
        .find((p) => samplesOf(p, kind, tool, phase).length);
      const added = prev ? perAdded(stat(samplesOf(prev, kind, tool, phase), "wall"), wall, r.n - prev.n) : null;
      const versus = (m: Metric) =>
        tool === "provision"
          ? (["linear", "mitogen"] as const)
              .map((s) => {
                const peer = samplesOf(r, kind, `ansible ${s}`, phase);
                return peer.length ? `${showSpread(ratio(stat(peer, m), stat(xs, m)), 1)}×` : "–";
              })
              .join(" / ")
          : "";
      lines.push([
        String(r.n),
        label(tool, phase) + (xs.some((x) => x.mitogen === false) ? " ⚠ mitogen not seen" : ""),
        String(xs.length),
        showSpread(wall),
        showSpread(stat(xs, "cpu")),
        showSpread(stat(xs, "peakMb"), 0),
        showSpread(stat(xs, "treeMb"), 0),
        showSpread(stat(xs, "hostsCpu")),
        `${rt.conn.median} / ${rt.cmd.median} (${rt.conn.max} / ${rt.cmd.max})`,
        failedHosts(xs),
        versus("wall"),
        added ? showSpread(added, 1) : "",
        ...(ownCores ? [showSpread(stat(xs, "ownCores")), versus("ownCores")] : []),
      ]);
    }
  });
  return [`| ${header.join(" | ")} |`, `|${header.map((_, i) => (i < 2 ? "---" : "---:")).join("|")}|`, ...lines.map((l) => `| ${l.join(" | ")} |`)].join("\n");
}

const AUDIT_ROWS: [ToolName, Phase][] = AUDIT_TOOLS.map((t) => [t, "check"]);
const APPLY_ROWS: [ToolName, Phase][] = APPLY_TOOLS.flatMap(
  (t) =>
    [
      [t, "first"],
      [t, "second"],
    ] as [ToolName, Phase][],
);

export function auditTable(results: SizeResult[]): string {
  return table(results, "audit", AUDIT_ROWS);
}
export function applyTable(results: SizeResult[]): string {
  return table(results, "apply", APPLY_ROWS, true);
}

// --- targets ---------------------------------------------------------------------------------

const verdict = (median: boolean, worst: boolean) => `${median ? "**met**" : "**not met**"} (at the worst run: ${worst ? "met" : "not met"})`;

/** The size the "at 100 hosts" targets are judged at: 100, else the largest measured. */
function at100(results: SizeResult[]): { r: SizeResult; label: string } | null {
  const r = results.find((x) => x.n === 100) ?? results.at(-1);
  return r ? { r, label: r.n === 100 ? "100 hosts" : `${r.n} hosts (100 not measured)` } : null;
}

function fasterTarget(results: SizeResult[], kind: Kind, phase: Phase, factor: number, what: string, metric: Metric = "wall"): string {
  const at = at100(results);
  if (!at) return `- ${what}: not measured`;
  const p = stat(samplesOf(at.r, kind, "provision", phase), metric);
  const parts = (["linear", "mitogen"] as const).map((s) => {
    const peer = samplesOf(at.r, kind, `ansible ${s}`, phase);
    return { s, x: peer.length ? ratio(stat(peer, metric), p) : null };
  });
  const measured = parts.map(({ s, x }) => `ansible ${s} ${x ? `${showSpread(x, 1)}×` : "not measured"}`).join(", ");
  const ok = parts.every(({ x }) => x && x.median >= factor),
    worst = parts.every(({ x }) => x && x.min >= factor);
  return `- ${what} ≥ ${factor}× faster than both Ansible strategies at ${at.label}: ${measured}: ${verdict(ok, worst)}`;
}

function connectTarget(results: SizeResult[]): string {
  const at = at100(results);
  if (!at) return "- audit within 1.2× of `provision connect`: not measured";
  const all = results.map((r) => ({
    n: r.n,
    x: ratio(stat(samplesOf(r, "audit", "provision", "check"), "wall"), stat(samplesOf(r, "audit", "provision connect", "check"), "wall")),
  }));
  const x = all.find((a) => a.n === at.r.n)!.x;
  return `- audit within 1.2× of \`provision connect\` (wall) at ${at.label}: ${showSpread(x)}× (at every size: ${all.map((a) => `${a.x.median.toFixed(2)}× at ${a.n}`).join(", ")}): ${verdict(x.median <= 1.2, x.max <= 1.2)}`;
}

function roundTripTarget(results: SizeResult[]): string {
  const xs = results.flatMap((r) => samplesOf(r, "apply", "provision", "first"));
  if (!xs.length) return "- ≤ 3 round trips per host (apply): not measured";
  const per = results.map((r) => ({ n: r.n, rt: roundTrips(samplesOf(r, "apply", "provision", "first")) })).filter((p) => p.rt.cmd.n);
  const all = roundTrips(xs);
  const second = roundTrips(results.flatMap((r) => samplesOf(r, "apply", "provision", "second")));
  return `- ≤ 3 SSH round trips per host for an apply whose changes need no reboot (commands, i.e. SSH sessions, per host in provision's first run, from the hosts' sshd logs; on ${all.conn.median} connection(s)): ${per.map((p) => `${p.rt.cmd.median} (max ${p.rt.cmd.max}) at ${p.n}`).join(", ")}; the idempotent second run: ${second.cmd.median} (max ${second.cmd.max}): ${verdict(all.cmd.median <= 3, all.cmd.max <= 3)}`;
}

function perHostTarget(results: SizeResult[]): string[] {
  const out: string[] = [];
  for (const [kind, phase, what] of [
    ["audit", "check", "audit"],
    ["apply", "first", "apply (1st run)"],
  ] as const) {
    const sized = results.filter((r) => samplesOf(r, kind, "provision", phase).length);
    if (sized.length < 2) {
      out.push(`- ≤ 20 ms per added host (${what}): needs two sizes`);
      continue;
    }
    const steps = sized.slice(1).map((r, j) => {
      const lo = samplesOf(sized[j], kind, "provision", phase),
        hi = samplesOf(r, kind, "provision", phase),
        dn = r.n - sized[j].n;
      return {
        span: `${sized[j].n}→${r.n}`,
        wall: perAdded(stat(lo, "wall"), stat(hi, "wall"), dn),
        cpu: perAdded(stat(lo, "cpu"), stat(hi, "cpu"), dn),
        rss: perAdded(stat(lo, "peakMb"), stat(hi, "peakMb"), dn, 1024),
      };
    });
    const first = samplesOf(sized[0], kind, "provision", phase),
      last = samplesOf(sized.at(-1)!, kind, "provision", phase);
    const whole = perAdded(stat(first, "wall"), stat(last, "wall"), sized.at(-1)!.n - sized[0].n);
    out.push(
      `- ≤ 20 ms per added host, ${what} (wall, ms): ${steps.map((s) => `${showSpread(s.wall, 1)} (${s.span})`).join(", ")}${steps.length > 1 ? `, ${showSpread(whole, 1)} over the whole range` : ""}: ${verdict(
        steps.every((s) => s.wall.median <= 20),
        steps.every((s) => s.wall.max <= 20),
      )}; controller CPU per added host (ms): ${steps.map((s) => `${showSpread(s.cpu, 1)} (${s.span})`).join(", ")}; controller RSS per added host (KB): ${steps.map((s) => `${showSpread(s.rss, 0)} (${s.span})`).join(", ")}`,
    );
  }
  return out;
}

function rssTarget(results: SizeResult[]): string {
  const last = results.at(-1);
  if (!last) return "- ≤ 200 MB controller RSS at the largest size: not measured";
  const parts = (
    [
      ["audit", "check"],
      ["apply", "first"],
      ["apply", "second"],
    ] as const
  )
    .map(([k, p]) => ({ k, p, x: stat(samplesOf(last, k, "provision", p), "peakMb") }))
    .filter((a) => a.x.n);
  return `- ≤ 200 MB controller RSS (provision's peak RSS) at the largest size, ${last.n} hosts: ${parts.map((a) => `${a.k}${a.p === "check" ? "" : a.p === "first" ? " 1st run" : " 2nd run"} ${showSpread(a.x, 0)} MB`).join(", ")}: ${verdict(
    parts.every((a) => a.x.median <= 200),
    parts.every((a) => a.x.max <= 200),
  )}`;
}

export function targets(results: SizeResult[]): string[] {
  return [
    fasterTarget(results, "audit", "check", 20, "audit"),
    connectTarget(results),
    fasterTarget(results, "apply", "first", 10, "apply (1st run, the rollout)"),
    fasterTarget(results, "apply", "first", 10, "apply (1st run) with the hosts' CPU subtracted (wall with own host CPUs)", "ownCores"),
    roundTripTarget(results),
    ...perHostTarget(results),
    rssTarget(results),
  ];
}

// --- results.md ------------------------------------------------------------------------------

function whereTheTimeGoes(results: SizeResult[]): string[] {
  const L = results.at(-1),
    F = results[0];
  if (!L) return [];
  const med = (r: SizeResult, k: Kind, t: ToolName, p: Phase, m: Metric) => stat(samplesOf(r, k, t, p), m).median;
  const ms = (x: number) => `${(x * 1000).toFixed(0)} ms`;
  const out = [
    `- Audit at ${L.n} hosts: provision used ${med(L, "audit", "provision", "check", "cpu").toFixed(2)} s of controller CPU (${ms(med(F, "audit", "provision", "check", "cpu"))} already at ${F.n} hosts: Node start-up and loading); the hosts used ${ms(med(L, "audit", "provision", "check", "hostsCpu") / L.n)} of CPU each, ${ms(med(L, "audit", "provision connect", "check", "hostsCpu") / L.n)} of it just to accept the connection and run one command (\`provision connect\`: sshd's handshake, session and shell).`,
    `- provision connect takes ${((med(L, "audit", "provision connect", "check", "wall") / med(L, "audit", "provision", "check", "wall")) * 100).toFixed(0)}% of the audit's wall time at ${L.n} hosts: opening the SSH connections, mostly the hosts' side, dominates; the audit itself (probes, planning, output) is the rest.`,
  ];
  for (const s of ["linear", "mitogen"] as const) {
    const t: ToolName = `ansible ${s}`;
    if (samplesOf(L, "audit", t, "check").length)
      out.push(
        `- Audit, Ansible ${s}: ${ms(med(L, "audit", t, "check", "cpu") / L.n)} of controller CPU and ${ms(med(L, "audit", t, "check", "hostsCpu") / L.n)} of host CPU per host (provision: ${ms(med(L, "audit", "provision", "check", "cpu") / L.n)} and ${ms(med(L, "audit", "provision", "check", "hostsCpu") / L.n)}).`,
      );
  }
  const applyTools = APPLY_TOOLS.filter((t) => samplesOf(L, "apply", t, "first").length);
  if (applyTools.length)
    out.push(
      `- Apply at ${L.n} hosts (1st run), per host: ${applyTools.map((t) => `${t} ${ms(med(L, "apply", t, "first", "cpu") / L.n)} controller CPU, ${ms(med(L, "apply", t, "first", "hostsCpu") / L.n)} host CPU, ${roundTrips(samplesOf(L, "apply", t, "first")).cmd.median} commands`).join("; ")}. The hosts' part includes installing ifenslave (dpkg), the same work for every tool: here the hosts share the ${cpus().length} cores, so provision's hosts CPU over the cores, ${(med(L, "apply", "provision", "first", "hostsCpu") / cpus().length).toFixed(1)} s of its ${med(L, "apply", "provision", "first", "wall").toFixed(1)} s, is a floor no tool gets under on this machine (the apply ratio is bounded by it; on a real fleet each host pays its own).`,
    );
  out.push(
    `- Here all hosts share the controller's ${cpus().length} cores, so the hosts' CPU shows up in the wall time; on a real fleet each Pi spends its own, and the controller's part per added host is the CPU figure in the targets.`,
  );
  return out;
}

function everyRun(results: SizeResult[]): string[] {
  return results.flatMap((r) =>
    (["audit", "apply"] as const)
      .map((k) => {
        const xs = r.samples.filter((x) => x.kind === k && x.phase !== "verify");
        return xs.length
          ? `- ${k} N=${r.n} ${r.profile}: ${xs.map((x) => `${label(x.tool, x.phase)} ${x.wall.toFixed(2)} s${x.failures.length ? ` [${x.failures.length} failed]` : ""}`).join(", ")}`
          : "";
      })
      .filter(Boolean),
  );
}

function failureLog(results: SizeResult[]): string[] {
  return results.flatMap((r) =>
    r.samples
      .filter((x) => x.failures.length)
      .map((x) => `- ${x.kind} N=${r.n} ${r.profile} ${label(x.tool, x.phase)}: ${x.failures.map((f) => `${f.host}: ${f.error}`).join("; ")}`.replace(/\s+/g, " ")),
  );
}

/** Did mitogen really run (its bootstrap among Ansible's processes; one SSH session per host)? */
function mitogenCheck(results: SizeResult[]): string {
  const xs = results.flatMap((r) => r.samples.filter((x) => x.tool === "ansible mitogen"));
  if (!xs.length) return "mitogen: no run.";
  const seen = xs.filter((x) => x.mitogen).length;
  const rt = roundTrips(xs);
  return `mitogen really ran: its bootstrap (\`python3 -c "import codecs,os,sys;…"\` over ssh) was seen among Ansible's processes in ${seen}/${xs.length} mitogen runs${seen < xs.length ? " (⚠ NOT in every run: those may have fallen back)" : ""}; its hosts logged ${rt.conn.median} connection(s) and ${rt.cmd.median} command(s) per run (max ${rt.cmd.max}), where the linear strategy runs one command per task and host.`;
}

function perProfile(results: SizeResult[], render: (of: SizeResult[], profile: string) => string[]): string[] {
  return [...new Set(results.map((r) => r.profile))].flatMap((p) =>
    render(
      results.filter((r) => r.profile === p),
      p,
    ),
  );
}

export function renderResults(results: SizeResult[], meta: Meta): string {
  const v = meta.versions;
  const failures = failureLog(results);
  return [
    "# Benchmark: provision vs Ansible (linear and mitogen), audit and apply",
    "",
    `Date: ${meta.started.toISOString()}. Machine: ${cpus().length} cores (${cpus()[0]?.model ?? "?"}), ${(totalmem() / 2 ** 30).toFixed(0)} GiB; load average ${meta.load} at the start, ${meta.loadEnd} at the end.`,
    `provision ${v.provision} on Node ${v.node}; ${v.ansible} (Debian's ansible package); mitogen ${v.mitogen} (Debian's ansible-mitogen, strategy \`mitogen_linear\`).`,
    `Every figure is the median over the runs with the range (min–max) in brackets: ${meta.reps.tool} run(s) of provision, \`provision connect\` and \`ssh true\`, ${meta.reps.peer} of each Ansible row (\`--reps\`, \`--peer-reps\`); the tools take turns going first.`,
    `Sizes asked: ${meta.sizes.join(", ")} on ${(meta.profiles ?? ["lan"]).join(", ")}; measured: ${results.map((r) => `${r.n} on ${r.profile}`).join(", ") || "none"}.${meta.stopped ? ` Stopped: ${meta.stopped}.` : ""}`,
    "Produced by `npm run bench` (bench/run.ts); the playbooks are bench/audit.yaml, bench/audit-ansible.yaml, bench/apply.yaml and bench/apply-ansible.yaml.",
    "",
    "All tools work on the same fresh lightweight sshd hosts (test/support/sshd-hosts.ts: real OpenSSH, one network namespace and overlay root each, all on this same machine), inside the fleet's controller namespace, with forks = N. Ansible runs with pipelining, its default ControlPersist, `gather_facts: false` and host keys checked against the fleet's known_hosts, once with the default `linear` strategy and once with mitogen's `mitogen_linear` (one Python interpreter per host over one SSH connection; the bench checks mitogen's bootstrap among Ansible's processes, ⚠ marks a run where it was not seen). Both strategies keep Ansible's default connection timeout (10 s); mitogen counts its whole bootstrap against it (ssh, then starting Python on the host and loading mitogen's first stage: mitogen/parent.py's connect deadline), so when many hosts start at once on these shared cores some hosts fail with mitogen's \"UNREACHABLE: Connection timed out.\" — recorded as failed hosts, as the issue asks, not retried with a longer timeout.",
    "",
    "Link profiles (bench/links.ts, test/support/link-emulator.ts): `lan` is the fleet's bridge as it is; `wifi` (round trip 10 ± 5 ms, 0.1 % segment loss) and `lte` (60 ± 20 ms, 1 %) put a userspace relay between every tool and every host — this kernel has no netem (nor any other delaying qdisc). The relay delays each chunk by half a round trip drawn from the profile's range, keeps each direction of a connection in order, opens the host connection 1.5 round trips after the client's connect (the TCP handshake), and turns a lost segment into a retransmission timeout (200 ms; 1 s for a lost SYN); not modelled: bandwidth and the congestion window (a real fresh connection sends ~14 KB per round trip at first — this favours the tool that sends more, i.e. Ansible's modules), faster loss recovery. The hosts fetch ifenslave from the controller's apt repository directly, not through the relay (on a real fleet that is a mirror, not the controller).",
    "",
    "The seed's audit checks: ifenslave installed, bond0 in /etc/network/interfaces (and the original kept as interfaces.orig), the denyinterfaces line in /etc/dhcpcd.conf. The kernel-module check is skipped on both sides (`--skip-tags kernel`): this machine's kernel has no loadable modules (no /proc/modules), where Ansible's modprobe module fails. Two reference rows: `provision connect` is provision with a play without tasks (connect, one gather of the host facts, disconnect); `ssh true` is OpenSSH's client connecting to every host at once (no connection sharing) and running `true`.",
    "",
    ...perProfile(results, (of, p) => [`### Audit on \`${p}\``, "", auditTable(of), ""]),
    "## Apply (the rollout, then its idempotent repeat)",
    "",
    "bench/apply.yaml: the denyinterfaces line in /etc/dhcpcd.conf and ifenslave installed from the fleet's local apt repository; non-disruptive, no reboot, real files and a real package on every host. Before every 1st run the hosts are reset to their fresh state (the file restored, ifenslave purged, /var/lib/provision and apt's downloaded .debs removed) and checked against a fingerprint of that state (checksums of the touched files and of dpkg's status). The modprobe.d options file and the /etc/modules line are not in it: provision writes them only through `kernel_module`, which also runs modprobe and verifies /proc/modules, which these hosts' kernel lacks; provision has no generic file module.",
    "",
    ...perProfile(results, (of, p) => [`### Apply on \`${p}\``, "", applyTable(of), ""]),
    "Host CPU: the hosts share the controller's cores, so an apply's wall holds their CPU (dpkg installing ifenslave, the same for every tool). The bench reports the apply also *with the hosts' CPU subtracted* (wall with own host CPUs = wall − hosts' CPU ÷ cores + the busiest host's CPU), rather than giving each host a cgroup CPU quota: a quota can only cap a host, it cannot give it a core of its own, so on 2 shared cores the hosts' work would still queue behind each other (and behind the tool); the subtraction estimates the wall of a fleet where every host has its own CPU. Both figures and both ratios are in the table.",
    "",
    "Columns: wall s = elapsed; cpu s = user+sys of the tool and all its processes (Ansible: including its ssh ControlPersist masters); peak MB = RSS of the largest single process (/usr/bin/time %M); tree MB = peak of the summed PSS of all the tool's processes (sampled every 250 ms); hosts cpu s = CPU the test hosts spent meanwhile (sshd, sh, python, dpkg); conn / cmd per host = SSH connections (\"Accepted publickey\") and commands (\"Starting session: command\", one per SSH round trip) each host's sshd logged during the run, median over hosts and runs (max in brackets); failed hosts = hosts where the run did not do what it should (audit: find drift; 1st run: change; 2nd run: change nothing), with the first line of the error; × faster = Ansible's wall over provision's (the range pairs the extremes); ms per added host = wall increase from the previous size divided by the hosts added.",
    "",
    "## Targets",
    "",
    ...perProfile(results, (of, p) => [`### On \`${p}\``, "", ...targets(of), ""]),
    "## Where the time goes",
    "",
    ...perProfile(results, (of, p) => [`### On \`${p}\``, "", ...whereTheTimeGoes(of), ""]),
    "## Failures",
    "",
    ...(failures.length ? failures : ["None: every tool did what it should on every host in every run."]),
    "",
    "## Every run (wall)",
    "",
    ...everyRun(results),
    "",
    "## Notes",
    "",
    `- ${mitogenCheck(results)}`,
    ...meta.notes.map((n) => `- ${n}`),
    "",
  ].join("\n");
}
