// Runs one play's tasks on one host: gather → plan → (check: stop) → apply with
// backups → verify → roll back every change when anything fails.
import type { Change, FileState, ModuleDefinition, PlanContext, Probe } from "./module-api.js";
import type { Task } from "./playbook.js";
import { Connection, type ConnectionTarget } from "./transport/ssh.js";
import { factsFor, gather, probeKey, type Gathered, type ProbeResult } from "./facts.js";
import { HostError, ModuleBug, UnreachableError, messageOf } from "./errors.js";
import { showChange, type ShownChange } from "./changes.js";
import { script } from "./shell.js";

export interface TaskInstance {
  task: Task;
  module: ModuleDefinition;
  args: unknown;
  mask: (text: string) => string;
  handler: boolean;
}

export interface HostWork {
  name: string;
  target: ConnectionTarget;
  tasks: TaskInstance[];
  handlers: TaskInstance[];
}

export interface RunOptions {
  check: boolean;
  runId: string;
  progress: (message: string) => void;
}

export type TaskStatus = "ok" | "changed" | "failed";
export interface TaskResult {
  name: string;
  module: string;
  handler: boolean;
  status: TaskStatus;
  changes: ShownChange[];
  problems: string[];
  notes: string[];
}
export type HostStatus = "ok" | "changed" | "drift" | "failed" | "rolled_back" | "unreachable";
export interface HostResult {
  host: string;
  address: string;
  status: HostStatus;
  error?: string;
  rebooted: boolean;
  tasks: TaskResult[];
  durationMs: number;
}

interface Planned {
  instance: TaskInstance;
  changes: Change[];
}

export const STATE_DIR = "/var/lib/provision";

/** Plan tasks in order; later tasks see the files earlier tasks will write. */
export function planTasks(
  tasks: TaskInstance[], handlers: TaskInstance[], gathered: Gathered, host: string, notified = new Set<string>(),
): Planned[] {
  const overlay = new Map<string, string | null>();
  const context: PlanContext = { host, hostFacts: gathered.hostFacts, rebootPending: false, rebootReasons: [] };
  const planOne = (instance: TaskInstance): Planned => {
    const probes = instance.module.facts(instance.args);
    const facts = withOverlay(factsFor(probes, gathered.results), overlay);
    let changes: Change[];
    try {
      changes = instance.module.plan(instance.args, facts as never, { ...context, rebootReasons: [...context.rebootReasons] });
    } catch (error) {
      throw new ModuleBug(`module ${instance.module.name} failed to plan task "${instance.task.name}": ${messageOf(error)}`, { cause: error });
    }
    for (const change of changes) {
      checkChange(instance, change);
      if (change.kind === "file") overlay.set(change.path, change.after);
      if (change.kind === "reboot") context.rebootReasons = [];
      else if (change.reboot || change.kind === "pending") context.rebootReasons.push(`${instance.task.name}: ${change.summary}`);
      context.rebootPending = context.rebootReasons.length > 0;
    }
    if (changes.length) instance.task.notify.forEach((h) => notified.add(h));
    return { instance, changes };
  };
  const planned = tasks.map(planOne);
  for (const handler of handlers) if (notified.has(handler.task.name)) planned.push(planOne(handler));
  return planned;
}

function withOverlay(facts: Record<string, ProbeResult>, overlay: Map<string, string | null>): Record<string, ProbeResult> {
  return Object.fromEntries(Object.entries(facts).map(([name, result]) => {
    const file = result as FileState;
    if ("content" in file && overlay.has(file.path)) return [name, { ...file, content: overlay.get(file.path)! }];
    return [name, result];
  }));
}

function checkChange(instance: TaskInstance, change: Change): void {
  const where = `module ${instance.module.name} (task "${instance.task.name}")`;
  if (change.kind === "file" && (!change.path.startsWith("/") || /[\0-\x1f]/.test(change.path)))
    throw new ModuleBug(`${where} planned a write to an invalid path ${JSON.stringify(change.path)}`);
  if (change.kind === "command" && (!Array.isArray(change.argv) || !change.argv.length))
    throw new ModuleBug(`${where} planned a command without argv`);
}

function allProbes(instances: TaskInstance[], pick: (i: TaskInstance) => Record<string, Probe>): Probe[] {
  return instances.flatMap((i) => Object.values(pick(i)));
}

function taskResult(planned: Planned, status: TaskStatus = planned.changes.length ? "changed" : "ok"): TaskResult {
  const { instance } = planned;
  return {
    name: instance.task.name,
    module: instance.module.name,
    handler: instance.handler,
    status,
    changes: planned.changes.map((c) => showChange(c, instance.mask, instance.task.diff)),
    problems: [],
    notes: [],
  };
}

/** Everything one run did to one host, so that it can be undone. */
class HostRun {
  readonly connection: Connection;
  private backedUp = new Set<string>();
  private undo: Change[] = [];
  rebootCount = 0;

  constructor(readonly work: HostWork, readonly options: RunOptions) {
    this.connection = new Connection(work.target);
  }

  get runDir(): string {
    return `${STATE_DIR}/runs/${this.options.runId}`;
  }

  async perform(change: Change): Promise<void> {
    const c = this.connection;
    switch (change.kind) {
      case "file":
        await this.backup(change.path);
        if (change.after === null) await c.run(`remove ${change.path}`, ["rm", "-f", "--", change.path]);
        else await c.writeFile(change.path, change.after, change.mode);
        return;
      case "command":
        this.undo.push(change);
        await c.run(change.summary, change.argv);
        return;
      case "pending":
        return;
      case "reboot":
        await this.reboot(change.timeoutSeconds);
        return;
    }
  }

  /** No write without a backup first: a copy (mode, owner kept) and a manifest line on the host. */
  private async backup(path: string): Promise<void> {
    if (this.backedUp.has(path)) return;
    await this.connection.run(`back up ${path}`, script(BACKUP, this.runDir, path, String(this.backedUp.size)));
    this.backedUp.add(path);
  }

  async reboot(timeoutSeconds: number): Promise<void> {
    const c = this.connection;
    const before = (await c.run("read boot_id", ["cat", "/proc/sys/kernel/random/boot_id"])).trim();
    this.options.progress("rebooting");
    await c.run("schedule reboot", script(REBOOT));
    c.close();
    const deadline = Date.now() + timeoutSeconds * 1000;
    await sleep(3000);
    let last = "";
    while (Date.now() < deadline) {
      try {
        await c.connect();
        const now = (await c.run("read boot_id", ["cat", "/proc/sys/kernel/random/boot_id"])).trim();
        if (now !== before) {
          this.rebootCount++;
          this.options.progress("back after reboot (new boot_id)");
          return;
        }
        c.close();
      } catch (error) {
        last = messageOf(error);
      }
      await sleep(2000);
    }
    throw new HostError(this.work.name, `did not come back with a new boot_id within ${timeoutSeconds}s${last ? ` (last error: ${last})` : ""}`);
  }

  /** Restore every file from its backup, undo commands, reboot if a reboot made changes live. */
  async rollback(): Promise<string[]> {
    const problems: string[] = [];
    if (!this.connection.connected) await this.connection.connect();
    if (this.backedUp.size) await this.connection.run("restore backups", script(RESTORE, this.runDir));
    for (const change of this.undo.reverse()) {
      if (change.kind !== "command" || !change.undo) continue;
      const r = await this.connection.exec(change.undo);
      if (r.code !== 0) problems.push(`undo "${change.summary}" exited ${r.code}`);
    }
    if (this.rebootCount > 0) await this.reboot(600);
    return problems;
  }

  get changedPaths(): string[] {
    return [...this.backedUp];
  }
}

const BACKUP = `set -e
dir=$1 path=$2 n=$3
mkdir -p -m 0700 -- "$dir"
if [ -e "$path" ] || [ -L "$path" ]; then cp -a -- "$path" "$dir/$n"; state=present; else state=absent; fi
printf '%s\\t%s\\t%s\\n' "$n" "$state" "$path" >> "$dir/manifest"`;

const RESTORE = `set -e
dir=$1
[ -f "$dir/manifest" ] || exit 0
tab=$(printf '\\t')
while IFS=$tab read -r n state path; do
  if [ "$state" = present ]; then
    cp -a -- "$dir/$n" "$path.provision-restore"
    mv -f -- "$path.provision-restore" "$path"
  else
    rm -f -- "$path"
  fi
done < "$dir/manifest"
echo reverted > "$dir/state"`;

const REBOOT = `if command -v systemd-run >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
  systemd-run --quiet --on-active=1 --timer-property=AccuracySec=100ms /bin/systemctl reboot
else
  (sleep 1; reboot) </dev/null >/dev/null 2>&1 &
fi`;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export async function runHost(work: HostWork, options: RunOptions): Promise<HostResult> {
  const started = Date.now();
  const run = new HostRun(work, options);
  const result: HostResult = { host: work.name, address: work.target.address, status: "ok", rebooted: false, tasks: [], durationMs: 0 };
  const finish = (status: HostStatus, error?: string) => {
    run.connection.close();
    Object.assign(result, { status, error, rebooted: run.rebootCount > 0, durationMs: Date.now() - started });
    return result;
  };

  options.progress("connecting");
  try {
    await run.connection.connect();
  } catch (error) {
    return finish("unreachable", messageOf(error));
  }

  const all = [...work.tasks, ...work.handlers];
  let planned: Planned[];
  try {
    options.progress("gathering facts");
    const gathered = await gather(run.connection, allProbes(all, (i) => i.module.facts(i.args)));
    planned = planTasks(work.tasks, work.handlers, gathered, work.name);
  } catch (error) {
    return finish(error instanceof UnreachableError ? "unreachable" : "failed", messageOf(error));
  }

  result.tasks = planned.map((p) => taskResult(p));
  const changed = planned.some((p) => p.changes.length);
  if (options.check) return finish(changed ? "drift" : "ok");
  if (!changed) return finish("ok");

  const failure = await applyAndVerify(run, planned, result, options);
  if (!failure) return finish("changed");

  options.progress(`failed: ${failure}; rolling back`);
  try {
    const problems = await run.rollback();
    const mismatched = await compareRestored(run, planned);
    if (problems.length || mismatched.length)
      return finish("failed", `${failure}; rollback incomplete: ${[...problems, ...mismatched.map((p) => `${p} differs from before the run`)].join("; ")}`);
    return finish("rolled_back", failure);
  } catch (error) {
    return finish("failed", `${failure}; rollback failed: ${messageOf(error)}`);
  }
}

async function applyAndVerify(run: HostRun, initial: Planned[], result: HostResult, options: RunOptions): Promise<string | null> {
  const { work } = run;
  let planned = initial;
  const liveAt = new Map<TaskInstance, number>();
  for (let i = 0; i < planned.length; i++) {
    const { instance, changes } = planned[i];
    const rebootsBefore = run.rebootCount;
    for (const change of changes) {
      options.progress(`${instance.task.name}: ${instance.mask(change.summary)}`);
      try {
        await run.perform(change);
      } catch (error) {
        result.tasks[i].status = "failed";
        result.tasks[i].problems.push(messageOf(error));
        return `task "${instance.task.name}": ${messageOf(error)}`;
      }
    }
    liveAt.set(instance, rebootsBefore);
    if (run.rebootCount > rebootsBefore && i + 1 < planned.length) {
      // After a reboot the host is new: read it again before planning what is left.
      const rest = planned.slice(i + 1).map((p) => p.instance);
      const notified = new Set(planned.slice(0, i + 1).flatMap((p) => (p.changes.length ? p.instance.task.notify : [])));
      const gathered = await gather(run.connection, allProbes(rest, (t) => t.module.facts(t.args)));
      const replanned = planTasks(rest.filter((t) => !t.handler), work.handlers, gathered, work.name, notified);
      planned = [...planned.slice(0, i + 1), ...replanned];
      result.tasks = [...result.tasks.slice(0, i + 1), ...replanned.map((p) => taskResult(p))];
    }
  }
  return verify(run, planned, result, liveAt, options);
}

async function verify(run: HostRun, planned: Planned[], result: HostResult, liveAt: Map<TaskInstance, number>, options: RunOptions): Promise<string | null> {
  const toVerify: number[] = [];
  planned.forEach((p, i) => {
    if (!p.instance.module.verify) return;
    const waitsForReboot = p.changes.some((c) => c.reboot) && run.rebootCount <= (liveAt.get(p.instance) ?? 0);
    if (waitsForReboot) result.tasks[i].notes.push("takes effect after a reboot: not verified in this run");
    else if (p.changes.length || run.rebootCount > 0) toVerify.push(i);
  });
  if (!toVerify.length) return null;
  options.progress("verifying");
  const instances = toVerify.map((i) => planned[i].instance);
  const gathered = await gather(run.connection, allProbes(instances, (t) => t.module.verify!.probes(t.args)));
  const failures: string[] = [];
  for (const i of toVerify) {
    const { instance } = planned[i];
    const facts = factsFor(instance.module.verify!.probes(instance.args), gathered.results);
    const problems = instance.module.verify!.check(instance.args, facts as never).map(instance.mask);
    result.tasks[i].problems.push(...problems);
    if (problems.length) {
      result.tasks[i].status = "failed";
      failures.push(`task "${instance.task.name}": ${problems.join("; ")}`);
    }
  }
  return failures.length ? `verification failed: ${failures.join("; ")}` : null;
}

/** After a rollback every file the run touched must be byte-identical to before. */
async function compareRestored(run: HostRun, planned: Planned[]): Promise<string[]> {
  const before = new Map<string, string | null>();
  for (const p of planned) for (const c of p.changes) if (c.kind === "file" && !before.has(c.path)) before.set(c.path, c.before);
  const paths = run.changedPaths.filter((p) => before.has(p));
  if (!paths.length) return [];
  const probes = paths.map((file) => ({ file }));
  const gathered = await gather(run.connection, probes);
  return paths.filter((path) => (gathered.results.get(probeKey({ file: path })) as FileState).content !== before.get(path));
}
