// A run: prepare every play for every host (templating and validation, before any
// host is contacted), then execute plays host-concurrently with listr2 progress.
import { randomBytes } from "node:crypto";
import { Listr } from "listr2";
import { connectionTarget, selectHosts, type Inventory, type TargetOptions } from "./inventory.js";
import { resolveArgs, type Playbook, type Task } from "./playbook.js";
import type { Registry } from "./registry.js";
import { runHost, type HostResult, type HostWork, type TaskInstance } from "./engine.js";
import { masker } from "./secrets.js";
import { ConfigError } from "./errors.js";

export interface RunSettings extends TargetOptions {
  check: boolean;
  limit?: string;
  forks: number;
  tags: string[];
  skipTags: string[];
  renderer: "default" | "simple" | "verbose" | "silent";
}

export interface PreparedPlay {
  name: string;
  hosts: HostWork[];
}

export interface RunResult {
  runId: string;
  check: boolean;
  startedAt: string;
  finishedAt: string;
  hosts: HostResult[];
}

function wanted(task: Task, settings: RunSettings): boolean {
  if (task.tags.includes("always")) return true;
  if (settings.tags.length && !task.tags.some((t) => settings.tags.includes(t))) return false;
  return !task.tags.some((t) => settings.skipTags.includes(t));
}

/** Template and validate every task for every host. Throws ConfigError; contacts nothing. */
export function prepare(inventory: Inventory, playbooks: Playbook[], registry: Registry, settings: RunSettings): PreparedPlay[] {
  const limited = settings.limit ? new Set(selectHosts(inventory, settings.limit)) : null;
  if (limited && !limited.size) throw new ConfigError(`--limit ${settings.limit}: matches no host in ${inventory.file}. Check the pattern.`);
  const prepared: PreparedPlay[] = [];
  for (const playbook of playbooks) {
    for (const play of playbook.plays) {
      const names = selectHosts(inventory, play.hosts).filter((h) => !limited || limited.has(h));
      const hosts = names.map((name) => {
        const host = inventory.hosts.get(name)!;
        const vars = { ...host.vars, address: host.vars.address ?? name, ...play.vars, inventory_hostname: name };
        const instance = (task: Task, handler: boolean): TaskInstance => {
          const args = resolveArgs(playbook, task, vars, registry, name);
          const module = registry.get(task.module);
          return { task, module, args, handler, mask: masker(module.secrets?.(args) ?? []) };
        };
        return {
          name,
          target: connectionTarget(host, settings),
          tasks: play.tasks.filter((t) => wanted(t, settings)).map((t) => instance(t, false)),
          handlers: play.handlers.map((t) => instance(t, true)),
        };
      });
      prepared.push({ name: play.name, hosts });
    }
  }
  return prepared;
}

const failedStates = new Set(["failed", "rolled_back", "unreachable"]);

/** Execute the prepared plays; a host that fails in one play is not run in later ones. */
export async function execute(plays: PreparedPlay[], settings: RunSettings): Promise<RunResult> {
  const runId = `${new Date().toISOString().replace(/[-:]/g, "").replace(/\..*/, "")}-${randomBytes(3).toString("hex")}`;
  const startedAt = new Date().toISOString();
  const byHost = new Map<string, HostResult>();
  for (const play of plays) {
    const hosts = play.hosts.filter((h) => !failedStates.has(byHost.get(h.name)?.status ?? ""));
    const listr = new Listr(
      hosts.map((work) => ({
        title: work.name,
        task: async (_: unknown, task: { output: string; title: string }) => {
          const result = await runHost(work, { check: settings.check, runId, progress: (m) => (task.output = m) });
          merge(byHost, result);
          task.title = `${work.name}: ${result.status.replace("_", " ")}${result.error ? ` — ${result.error.replace(`${work.name}: `, "")}` : ""}`;
          if (failedStates.has(result.status)) throw new Error(task.title);
        },
      })),
      {
        concurrent: Math.max(1, settings.forks),
        exitOnError: false,
        renderer: settings.renderer === "simple" ? "simple" : settings.renderer,
        fallbackRenderer: settings.renderer === "verbose" ? "verbose" : "simple",
        rendererOptions: { collapseErrors: false, showErrorMessage: false },
      } as never,
    );
    if (hosts.length) {
      if (settings.renderer !== "silent") process.stdout.write(`PLAY ${play.name} [${hosts.length} host${hosts.length === 1 ? "" : "s"}]\n`);
      await listr.run();
    }
  }
  const order = [...new Set(plays.flatMap((p) => p.hosts.map((h) => h.name)))];
  const hosts = order.map((name) => byHost.get(name)).filter((h): h is HostResult => !!h);
  return { runId, check: settings.check, startedAt, finishedAt: new Date().toISOString(), hosts };
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
