// A run: prepare every play for every host (templating and validation, before any
// host is contacted), then execute plays host-concurrently; what happens is told as data
// to a RunView (the CLI renders it).
import { randomBytes } from "node:crypto";
import { connectionTarget, selectHosts, type Inventory, type TargetOptions } from "../config/inventory.js";
import { checkArgs, checkPlayTasks, resolveTask, type Play, type Playbook, type Task } from "../config/playbook.js";
import type { Registry } from "../config/registry.js";
import { runHost, type HostWork, type RunOptions, type TaskInstance } from "./engine.js";
import type { HostEvent, HostResult, ResumePoint } from "./results.js";
import { masker, secretsOf } from "../config/secrets.js";
import { quote } from "../errors.js";
import { batches, haltReason } from "./rollout.js";
import type { TransportFactory } from "../transport/transport.js";

const DEFAULT_CONFIRM_TIMEOUT = 300;

export interface RunSettings extends TargetOptions {
  check: boolean;
  breakLock: boolean;
  limit?: string;
  forks: number;
  tags: string[];
  skipTags: string[];
  renderer: "default" | "simple" | "verbose" | "silent";
}

export interface PreparedPlay {
  name: string;
  /** The play's host pattern (its hosts: line). */
  pattern?: string;
  hosts: HostWork[];
  /** Tasks that can cut the management path, told to the user before applying. */
  disruptive: string[];
  serial?: Play["serial"];
  maxFailPercentage?: number;
  anyErrorsFatal: boolean;
}

export interface RunResult {
  runId: string;
  check: boolean;
  startedAt: string;
  finishedAt: string;
  hosts: HostResult[];
  /** Set when a failure threshold stopped the rollout. */
  halted?: { play: string; reason: string; untouched: string[] };
  /** The local transport's machine reboots now: where the run goes on after the boot (see Resume). */
  resumes?: Resume;
}

/** A run that rebooted its own machine (a pull agent's), to be taken up again after the boot. */
export interface Resume extends ResumePoint {
  runId: string;
  /** Index of the play that rebooted. */
  play: number;
}

/** A new run's id: its start time and a random part. */
export function newRunId(): string {
  return `${new Date().toISOString().replace(/[-:]/g, "").replace(/\..*/, "")}-${randomBytes(3).toString("hex")}`;
}

function wanted(task: Task, settings: RunSettings): boolean {
  if (task.tags.includes("always")) return true;
  if (settings.tags.length && !task.tags.some((t) => settings.tags.includes(t))) return false;
  return !task.tags.some((t) => settings.skipTags.includes(t));
}

/** Template and validate every task for every host. Throws ConfigError; contacts nothing. */
export function prepare(inventory: Inventory, playbooks: Playbook[], registry: Registry, settings: RunSettings): PreparedPlay[] {
  const limited = settings.limit ? new Set(selectHosts(inventory, settings.limit)) : null;
  const hostFacts = registry.hostFacts();
  const prepared: PreparedPlay[] = [];
  for (const playbook of playbooks) {
    // plaintexts of values encrypted at rest: secret whatever they are called
    const decrypted = new Set([...(inventory.secrets ?? []), ...(playbook.source?.secrets ?? [])]);
    for (const play of playbook.plays) {
      const names = selectHosts(inventory, play.hosts).filter((h) => !limited || limited.has(h));
      const hosts = names.map((name) => {
        const host = inventory.hosts.get(name)!;
        const vars = { ...host.vars, address: host.vars.address ?? name, ...play.vars, inventory_hostname: name };
        const instance = (task: Task, handler: boolean): TaskInstance => {
          const { args, secrets } = resolveTask(playbook, task, vars, registry, name, decrypted);
          const module = registry.get(task.module);
          const conditions = Object.entries(task.when).map(([fact, values]) => ({ fact: hostFacts.get(fact)!, values }));
          const secretValues = [...secretsOf(module, args, quote(task.name)), ...secrets];
          const mask = masker(secretValues);
          checkArgs(playbook, task, module, args, name, mask);
          return { task, module, args, handler, conditions, mask, secrets: secretValues };
        };
        return {
          name,
          target: connectionTarget(host, settings),
          confirmTimeoutSeconds: (host.vars.confirm_timeout as number | undefined) ?? play.confirmTimeout ?? DEFAULT_CONFIRM_TIMEOUT,
          tasks: play.tasks.filter((t) => wanted(t, settings)).map((t) => instance(t, false)),
          handlers: play.handlers.map((t) => instance(t, true)),
        };
      });
      checkAcrossHosts(playbook, hosts);
      if (play.serial !== undefined) batches(names, play.serial, `${playbook.source.position([...play.path, "serial"])}: play "${play.name}"`);
      const disruptive = play.tasks.filter((t) => wanted(t, settings) && registry.get(t.module).disruptive).map((t) => t.name);
      prepared.push({
        name: play.name,
        pattern: play.hosts,
        hosts,
        disruptive,
        serial: play.serial,
        maxFailPercentage: play.maxFailPercentage,
        anyErrorsFatal: play.anyErrorsFatal,
      });
    }
  }
  return prepared;
}

/** Each module's checks across its tasks in the play, on all of the play's hosts. */
function checkAcrossHosts(playbook: Playbook, hosts: HostWork[]): void {
  const byModule = new Map<TaskInstance["module"], Parameters<typeof checkPlayTasks>[2]>();
  for (const host of hosts)
    for (const i of host.tasks)
      if (i.module.checkPlay)
        byModule.set(i.module, [...(byModule.get(i.module) ?? []), { host: host.name, task: i.task.name, args: i.args, when: i.task.when, source: i.task, mask: i.mask }]);
  for (const [module, tasks] of byModule) checkPlayTasks(playbook, module, tasks);
}

/**
 * Warnings about patterns that matched no host ("no hosts matched …"), as Ansible's "provided
 * hosts list is empty". A play that matches none is skipped; when no play has a host the run
 * does nothing, and the CLI exits 1 (README: exit codes).
 */
export function unmatchedHosts(inventory: Inventory, plays: PreparedPlay[], limit?: string): string[] {
  if (!inventory.hosts.size) return [`no hosts matched: the inventory ${inventory.file} has no hosts. Add hosts under a group's hosts:.`];
  if (limit && !selectHosts(inventory, limit).length) return [`no hosts matched --limit ${quote(limit)} in ${inventory.file}. Check the pattern.`];
  return plays
    .filter((p) => !p.hosts.length)
    .map((p) => `no hosts matched ${quote(p.pattern ?? "all")}${limit ? ` within --limit ${quote(limit)}` : ""}: play ${quote(p.name)} is skipped. Check its hosts: line.`);
}

export const failedStates = new Set(["failed", "rolled_back", "unreachable"]);

/** Runs one host, telling its progress to `emit`. */
export type RunOne = (work: HostWork, emit: (event: HostEvent) => void) => Promise<HostResult>;

/** Where a run tells what it does, as it does it (the CLI's progress display). */
export interface RunView {
  /** A play starts on these hosts. */
  play(play: PreparedPlay, hosts: HostWork[]): void;
  /** A rollout batch (serial:) starts: number `index` (from 0) of `count`. */
  batch(index: number, count: number, hosts: HostWork[]): void;
  /** Run every host of a batch through runOne, at most `forks` at once, and wait for all. */
  hosts(hosts: HostWork[], runOne: RunOne): Promise<void>;
}

/**
 * Execute the prepared plays; a host that fails in one play is not run in later ones, nor
 * one whose machine reboots (local transport). `transport` reaches a host: chosen by the
 * CLI (SSH) or a pull agent (local), which may give the run's id and take up a run again
 * after its machine's reboot (`resume`: the plays before it were done before the boot).
 */
export async function execute(
  plays: PreparedPlay[],
  settings: RunSettings,
  transport: TransportFactory,
  view: RunView,
  extra: Pick<RunOptions, "confirm"> & { runId?: string; resume?: Resume; beforeReboot?: (resume: Resume) => void } = {},
): Promise<RunResult> {
  const { resume, confirm } = extra;
  const runId = resume?.runId ?? extra.runId ?? newRunId();
  const startedAt = new Date().toISOString();
  const byHost = new Map<string, HostResult>();
  let halted: RunResult["halted"];
  let resumes: Resume | undefined;
  for (const [playIndex, play] of plays.entries()) {
    if (resume && playIndex < resume.play) continue;
    const hosts = play.hosts.filter((h) => !failedStates.has(byHost.get(h.name)?.status ?? "") && !byHost.get(h.name)?.resumes);
    if (!hosts.length) continue;
    view.play(play, hosts);
    const groups = batches(hosts, play.serial, `play "${play.name}"`);
    for (const [index, batch] of groups.entries()) {
      if (groups.length > 1) view.batch(index, groups.length, batch);
      await view.hosts(batch, async (work, emit) => {
        const resumeHere = resume && playIndex === resume.play ? { resume: { task: resume.task, notified: resume.notified, changed: resume.changed } } : {};
        const beforeReboot = (point: ResumePoint) => extra.beforeReboot?.({ runId, play: playIndex, ...point });
        const result = await runHost(work, { check: settings.check, runId, breakLock: settings.breakLock, transport, emit, confirm, beforeReboot, ...resumeHere });
        if (result.resumes) resumes = { runId, play: playIndex, ...result.resumes };
        merge(byHost, result);
        return result;
      });
      const failed = batch.filter((h) => failedStates.has(byHost.get(h.name)!.status)).length;
      const reason = haltReason(failed, batch.length, play);
      if (reason) {
        halted = {
          play: play.name,
          reason,
          untouched: groups
            .slice(index + 1)
            .flat()
            .map((h) => h.name),
        };
        break;
      }
    }
    if (halted) break;
  }
  const order = [...new Set(plays.flatMap((p) => p.hosts.map((h) => h.name)))];
  const address = new Map(plays.flatMap((p) => p.hosts.map((h) => [h.name, h.target.address] as const)));
  const notRun = (name: string): HostResult => ({ host: name, address: address.get(name)!, status: "not_run", rebooted: false, tasks: [], notes: [], durationMs: 0 });
  const hosts = order.map((name) => byHost.get(name) ?? (halted ? notRun(name) : undefined)).filter((h): h is HostResult => !!h);
  return { runId, check: settings.check, startedAt, finishedAt: new Date().toISOString(), hosts, halted, ...(resumes ? { resumes } : {}) };
}

function merge(byHost: Map<string, HostResult>, result: HostResult): void {
  const previous = byHost.get(result.host);
  if (!previous) return void byHost.set(result.host, result);
  const rank = ["ok", "drift", "changed", "rolled_back", "failed", "unreachable"];
  previous.tasks.push(...result.tasks);
  previous.rebooted ||= result.rebooted;
  previous.durationMs += result.durationMs;
  previous.error = result.error ?? previous.error;
  if (result.resumes) previous.resumes = result.resumes;
  if (rank.indexOf(result.status) > rank.indexOf(previous.status)) previous.status = result.status;
}
