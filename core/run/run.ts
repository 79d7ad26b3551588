// A run: prepare every play for every host (templating and validation, before any
// host is contacted), then execute plays host-concurrently with listr2 progress.
import { randomBytes } from "node:crypto";
import { Listr } from "listr2";
import { connectionTarget, selectHosts, type Inventory, type TargetOptions } from "../config/inventory.js";
import { resolveTask, type Play, type Playbook, type Task } from "../config/playbook.js";
import type { Registry } from "../config/registry.js";
import { runHost, type HostResult, type HostWork, type TaskInstance } from "./engine.js";
import { masker, secretsOf } from "../config/secrets.js";
import { quote } from "../errors.js";
import { batches, haltReason } from "./rollout.js";

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
    const decrypted = new Set([...inventory.secrets ?? [], ...playbook.source?.secrets ?? []]);
    for (const play of playbook.plays) {
      const names = selectHosts(inventory, play.hosts).filter((h) => !limited || limited.has(h));
      const hosts = names.map((name) => {
        const host = inventory.hosts.get(name)!;
        const vars = { ...host.vars, address: host.vars.address ?? name, ...play.vars, inventory_hostname: name };
        const instance = (task: Task, handler: boolean): TaskInstance => {
          const { args, secrets } = resolveTask(playbook, task, vars, registry, name, decrypted);
          const module = registry.get(task.module);
          const conditions = Object.entries(task.when).map(([fact, values]) => ({ fact: hostFacts.get(fact)!, values }));
          return { task, module, args, handler, conditions, mask: masker([...secretsOf(module, args, quote(task.name)), ...secrets]) };
        };
        return {
          name,
          target: connectionTarget(host, settings),
          confirmTimeoutSeconds: (host.vars.confirm_timeout as number | undefined) ?? play.confirmTimeout ?? DEFAULT_CONFIRM_TIMEOUT,
          tasks: play.tasks.filter((t) => wanted(t, settings)).map((t) => instance(t, false)),
          handlers: play.handlers.map((t) => instance(t, true)),
        };
      });
      if (play.serial !== undefined) batches(names, play.serial, `${playbook.source.position([...play.path, "serial"])}: play "${play.name}"`);
      const disruptive = play.tasks.filter((t) => wanted(t, settings) && registry.get(t.module).disruptive).map((t) => t.name);
      prepared.push({ name: play.name, pattern: play.hosts, hosts, disruptive, serial: play.serial, maxFailPercentage: play.maxFailPercentage, anyErrorsFatal: play.anyErrorsFatal });
    }
  }
  return prepared;
}

/**
 * Warnings about patterns that matched no host ("no hosts matched …"), as Ansible's "provided
 * hosts list is empty". A play that matches none is skipped; when no play has a host the run
 * does nothing, and the CLI exits 1 (README: exit codes).
 */
export function unmatchedHosts(inventory: Inventory, plays: PreparedPlay[], limit?: string): string[] {
  if (!inventory.hosts.size) return [`no hosts matched: the inventory ${inventory.file} has no hosts. Add hosts under a group's hosts:.`];
  if (limit && !selectHosts(inventory, limit).length) return [`no hosts matched --limit ${quote(limit)} in ${inventory.file}. Check the pattern.`];
  return plays.filter((p) => !p.hosts.length).map((p) =>
    `no hosts matched ${quote(p.pattern ?? "all")}${limit ? ` within --limit ${quote(limit)}` : ""}: play ${quote(p.name)} is skipped. Check its hosts: line.`);
}

const failedStates = new Set(["failed", "rolled_back", "unreachable"]);

/** Execute the prepared plays; a host that fails in one play is not run in later ones. */
export async function execute(plays: PreparedPlay[], settings: RunSettings): Promise<RunResult> {
  const runId = `${new Date().toISOString().replace(/[-:]/g, "").replace(/\..*/, "")}-${randomBytes(3).toString("hex")}`;
  const startedAt = new Date().toISOString();
  const byHost = new Map<string, HostResult>();
  let halted: RunResult["halted"];
  for (const play of plays) {
    const hosts = play.hosts.filter((h) => !failedStates.has(byHost.get(h.name)?.status ?? ""));
    if (!hosts.length) continue;
    if (settings.renderer !== "silent") process.stdout.write(playHeader(play, hosts, settings.check));
    const groups = batches(hosts, play.serial, `play "${play.name}"`);
    for (const [index, batch] of groups.entries()) {
      if (groups.length > 1 && settings.renderer !== "silent") process.stdout.write(`BATCH ${index + 1}/${groups.length}: ${batch.map((h) => h.name).join(", ")}\n`);
      await runBatch(batch, settings, runId, byHost);
      const failed = batch.filter((h) => failedStates.has(byHost.get(h.name)!.status)).length;
      const reason = haltReason(failed, batch.length, play);
      if (reason) {
        halted = { play: play.name, reason, untouched: groups.slice(index + 1).flat().map((h) => h.name) };
        break;
      }
    }
    if (halted) break;
  }
  const order = [...new Set(plays.flatMap((p) => p.hosts.map((h) => h.name)))];
  const address = new Map(plays.flatMap((p) => p.hosts.map((h) => [h.name, h.target.address] as const)));
  const notRun = (name: string): HostResult => ({ host: name, address: address.get(name)!, status: "not_run", rebooted: false, tasks: [], notes: [], durationMs: 0 });
  const hosts = order.map((name) => byHost.get(name) ?? (halted ? notRun(name) : undefined)).filter((h): h is HostResult => !!h);
  return { runId, check: settings.check, startedAt, finishedAt: new Date().toISOString(), hosts, halted };
}

async function runBatch(hosts: HostWork[], settings: RunSettings, runId: string, byHost: Map<string, HostResult>): Promise<void> {
  const listr = new Listr(
    hosts.map((work) => ({
      title: work.name,
      task: async (_: unknown, task: { output: string; title: string }) => {
        const mask = hostMask(work);
        const result = maskResult(await runHost(work, { check: settings.check, runId, breakLock: settings.breakLock, progress: (m) => (task.output = mask(m)) }), mask);
        merge(byHost, result);
        const outcome = `${result.status.replace("_", " ")}${result.error ? ` — ${result.error.replace(`${work.name}: `, "")}` : ""}`;
        const failed = failedStates.has(result.status);
        // The simple renderer (not a terminal) prints a failure as "✖ TITLE [FAILED: MESSAGE]":
        // the outcome goes in one of them, not both.
        if (!failed || settings.renderer !== "simple") task.title = `${work.name}: ${outcome}`;
        if (failed) throw new Error(settings.renderer === "simple" ? outcome : task.title);
      },
    })),
    {
      concurrent: Math.max(1, settings.forks),
      exitOnError: false,
      renderer: settings.renderer,
      fallbackRenderer: settings.renderer === "verbose" ? "verbose" : "simple",
      rendererOptions: { collapseErrors: false, showErrorMessage: false },
    } as never,
  );
  await listr.run();
}

/**
 * Every task's secrets, masked in everything about the host: one task's text can carry
 * another's secret (a reboot's reasons, an error that quotes a step, a failed command's output).
 */
function hostMask(work: HostWork): (text: string) => string {
  const masks = [...work.tasks, ...work.handlers].map((t) => t.mask);
  return (text) => masks.reduce((out, mask) => mask(out), text);
}

function maskResult(result: HostResult, mask: (text: string) => string): HostResult {
  return {
    ...result,
    ...(result.error === undefined ? {} : { error: mask(result.error) }),
    ...(result.facts === undefined ? {} : { facts: Object.fromEntries(Object.entries(result.facts).map(([k, v]) => [k, mask(v)])) }),
    notes: result.notes.map(mask),
    tasks: result.tasks.map((t) => ({
      ...t,
      problems: t.problems.map(mask),
      notes: t.notes.map(mask),
      changes: t.changes.map((c) => ({
        ...c,
        summary: mask(c.summary),
        ...(c.diff === undefined ? {} : { diff: mask(c.diff) }),
        ...(c.command === undefined ? {} : { command: mask(c.command) }),
      })),
    })),
  };
}

function playHeader(play: PreparedPlay, hosts: HostWork[], check: boolean): string {
  const lines = [`PLAY ${play.name} [${hosts.length} host${hosts.length === 1 ? "" : "s"}]${check ? " (check mode: nothing will be changed)" : ""}`];
  if (play.disruptive.length && !check) {
    const timeouts = [...new Set(hosts.map((h) => h.confirmTimeoutSeconds))];
    const guard = timeouts.every((t) => t === 0)
      ? "no host-side revert (confirm_timeout: 0)"
      : `each host reverts by itself unless the controller confirms within ${timeouts.filter((t) => t > 0).join("/")}s`;
    lines.push(`  disruptive: ${play.disruptive.map((n) => `"${n}"`).join(", ")}: can cut the management path; ${guard}`);
  }
  return lines.join("\n") + "\n";
}

function merge(byHost: Map<string, HostResult>, result: HostResult): void {
  const previous = byHost.get(result.host);
  if (!previous) return void byHost.set(result.host, result);
  const rank = ["ok", "drift", "changed", "rolled_back", "failed", "unreachable"];
  previous.tasks.push(...result.tasks);
  previous.rebooted ||= result.rebooted;
  previous.durationMs += result.durationMs;
  previous.error = result.error ?? previous.error;
  if (rank.indexOf(result.status) > rank.indexOf(previous.status)) previous.status = result.status;
}
