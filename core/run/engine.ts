// Runs one play's tasks on one host: gather → plan → (check: stop) → apply with
// backups → verify → roll back every change when anything fails.
import { PlanError, type Change, type CommandOutput, type DirState, type FileState, type HostFact, type ModuleDefinition, type PlanContext, type Probe } from "../module-api.js";
import type { Task } from "../config/playbook.js";
import { RebootPending, type ConnectionTarget, type ExecResult, type Transport, type TransportFactory } from "../transport/transport.js";
import { factsFor, gather, gatherStep, probeKey, type Gathered, type ProbeResult } from "./facts.js";
import { BatchCut, runSteps, StepFailed, type Step } from "../transport/batch.js";
import { batchOutcomes, NOT_APPLIED_EARLIER_FAILED, settleTask, unansweredOutcomes, type Span } from "./outcomes.js";
import { HostError, LostConnection, ModuleBug, UnreachableError, messageOf } from "../errors.js";
import type { HostEvent, HostResult, HostStatus, Mask, Outcome, ResumePoint, TaskResult, TaskStatus } from "./results.js";
import { RebootTimeout } from "../transport/reboot.js";
import { ARM_NO_SYSTEMD, Transaction, lastTransactionProbe, parseHostRecord, type Arming } from "./transaction.js";

export interface TaskInstance {
  task: Task;
  module: ModuleDefinition;
  args: unknown;
  mask: Mask;
  /** The secret values in args (what `mask` hides): a pull bundle encrypts them to the device. */
  secrets?: string[];
  handler: boolean;
  /** The task's when: — it runs only where every named host fact has one of the values. */
  conditions: { fact: HostFact; values: string[] }[];
}

export interface HostWork {
  name: string;
  target: ConnectionTarget;
  /** Seconds the host waits for the controller's confirmation before reverting; 0 disables. */
  confirmTimeoutSeconds: number;
  tasks: TaskInstance[];
  handlers: TaskInstance[];
}

export interface RunOptions {
  check: boolean;
  runId: string;
  breakLock: boolean;
  /** Live progress, as data (the CLI renders it). */
  emit: (event: HostEvent) => void;
  /** How to reach a host (SSH from a controller, local on the host itself). */
  transport: TransportFactory;
  /**
   * A pull agent's confirmation from outside (a round trip through its broker) after verify,
   * before the run is committed (an armed one disarmed); a run not confirmed is undone.
   * Push runs confirm by their fresh connection instead.
   */
  confirm?: () => Promise<void>;
  /**
   * Go on with run `runId` after it rebooted this machine (local transport; HostResult.resumes):
   * its lock and transaction are taken up again, the tasks up to the reboot count as applied,
   * the rest are planned and applied, then everything is verified, confirmed and committed
   * (or rolled back) as after a push run's reboot.
   */
  resume?: ResumePoint;
  /**
   * Told, before a reboot task reboots, where the run would go on after the boot (a pull
   * agent records it durably: with the local transport the reboot is its own machine's).
   */
  beforeReboot?: (point: ResumePoint) => void;
}

export type { HostEvent, HostResult, HostStatus, TaskResult, TaskStatus };

interface Planned {
  instance: TaskInstance;
  changes: Change[];
  notes: string[];
  /** Why the task does not run on this host (its when: did not match). */
  skipped?: string;
  /** It changed the host before this machine's reboot, in the run taken up after it. */
  changedBeforeReboot?: boolean;
}

/** Every host fact the tasks' modules or when: conditions use, once each. */
function hostFactsOf(instances: TaskInstance[]): HostFact[] {
  const all = instances.flatMap((i) => [...(i.module.hostFacts ?? []), ...i.conditions.map((c) => c.fact)]);
  return [...new Map(all.map((f) => [f.name, f])).values()];
}

function parseHostFacts(facts: HostFact[], gathered: Gathered): Record<string, unknown> {
  return Object.fromEntries(facts.map((f) => [f.name, f.parse(gathered.results.get(probeKey(f.probe))!)]));
}

/** The task's when: against the host's facts: null when it runs, else why not. */
function unmetCondition(instance: TaskInstance, facts: Record<string, unknown>): string | null {
  for (const { fact, values } of instance.conditions) {
    const value = fact.value(facts[fact.name]);
    if (!values.includes(value)) return `skipped: ${fact.name} is ${value} (when: ${values.join(" or ")})`;
  }
  return null;
}

/** Plan tasks in order; later tasks see the files earlier tasks will write. */
export function planTasks(tasks: TaskInstance[], handlers: TaskInstance[], gathered: Gathered, host: string, notified = new Set<string>()): Planned[] {
  const overlay = new Map<string, string | null>();
  const facts = parseHostFacts(hostFactsOf([...tasks, ...handlers]), gathered);
  const context: PlanContext = { host, hostFacts: gathered.hostFacts, facts, rebootPending: false, rebootReasons: [] };
  const planOne = (instance: TaskInstance): Planned => {
    const skipped = unmetCondition(instance, facts);
    if (skipped) return { instance, changes: [], notes: [], skipped };
    const probes = instance.module.facts(instance.args);
    const taskFacts = withOverlay(factsFor(probes, gathered.results), overlay);
    let changes: Change[];
    let notes: string[];
    try {
      changes = instance.module.plan(instance.args, taskFacts as never, { ...context, rebootReasons: [...context.rebootReasons] });
      // a task with changes gets its say from verify after the apply
      notes = changes.length ? [] : (instance.module.notes?.(instance.args, taskFacts as never, context) ?? []);
    } catch (error) {
      if (error instanceof PlanError) throw new HostError(host, `task "${instance.task.name}": ${error.message}`);
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
    return { instance, changes, notes };
  };
  const planned = tasks.map(planOne);
  for (const handler of handlers) if (notified.has(handler.task.name)) planned.push(planOne(handler));
  return planned;
}

/** Probe results as earlier tasks will leave them: a file's content, a folder's listing (files created or removed in it). */
function withOverlay(facts: Record<string, ProbeResult>, overlay: Map<string, string | null>): Record<string, ProbeResult> {
  return Object.fromEntries(
    Object.entries(facts).map(([name, result]) => {
      const file = result as FileState;
      if ("content" in file && overlay.has(file.path)) return [name, { ...file, content: overlay.get(file.path)! }];
      if ("entries" in result) return [name, dirWithOverlay(result, overlay)];
      return [name, result];
    }),
  );
}

function dirWithOverlay(dir: DirState, overlay: Map<string, string | null>): DirState {
  let entries = dir.entries;
  for (const [path, content] of overlay) {
    if (path.slice(0, path.lastIndexOf("/")) !== dir.path.replace(/\/+$/, "")) continue;
    const name = path.slice(path.lastIndexOf("/") + 1);
    if (content === null && !(entries && name in entries)) continue;
    entries = { ...entries };
    if (content === null) delete entries[name];
    else entries[name] = content;
  }
  return entries === dir.entries ? dir : { ...dir, entries };
}

function checkChange(instance: TaskInstance, change: Change): void {
  const where = `module ${instance.module.name} (task "${instance.task.name}")`;
  if (change.kind === "file" && (!change.path.startsWith("/") || /[\0-\x1f]/.test(change.path)))
    throw new ModuleBug(`${where} planned a write to an invalid path ${JSON.stringify(change.path)}`);
  if (change.kind === "command" && (!Array.isArray(change.argv) || !change.argv.length)) throw new ModuleBug(`${where} planned a command without argv`);
}

function allProbes(instances: TaskInstance[], pick: (i: TaskInstance) => Record<string, Probe>): Probe[] {
  return instances.flatMap((i) => Object.values(pick(i)));
}

function taskResult(planned: Planned, status: TaskStatus = planned.skipped ? "skipped" : planned.changes.length || planned.changedBeforeReboot ? "changed" : "ok"): TaskResult {
  const { instance } = planned;
  return {
    name: instance.task.name,
    module: instance.module.name,
    handler: instance.handler,
    status,
    changes: planned.changes.map((change) => ({ change })),
    diff: instance.task.diff,
    mask: instance.mask,
    problems: [],
    notes: planned.skipped ? [planned.skipped] : planned.changedBeforeReboot ? ["changed before the reboot", ...planned.notes] : [...planned.notes],
  };
}

/** What planning `instances` reads: their probes and host facts. */
function gatherProbesOf(instances: TaskInstance[]): Probe[] {
  return [...hostFactsOf(instances).map((f) => f.probe), ...allProbes(instances, (i) => i.module.facts(i.args))];
}

/** Gather what planning `instances` needs in one round trip. */
function gatherFor(connection: Transport, instances: TaskInstance[]): Promise<Gathered> {
  return gather(connection, gatherProbesOf(instances));
}

function describeFacts(instances: TaskInstance[], gathered: Gathered): Record<string, string> | undefined {
  const facts = hostFactsOf(instances);
  if (!facts.length) return undefined;
  const parsed = parseHostFacts(facts, gathered);
  return Object.fromEntries(facts.map((f) => [f.name, f.describe(parsed[f.name])]));
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * How long the controller keeps trying to reach a host it lost during a run (new
 * connection, back-off 1 s doubling to 10 s) before it declares the host failed; never
 * past the confirm deadline of an armed run (the host reverts then by itself). Each lost
 * connection gets this budget afresh.
 */
export const RECONNECT_SECONDS = 90;

/** A step that loses its connection this often, each time right after reconnecting, gives up. */
const MAX_INCIDENTS = 10;

/** Arm before the first write when anything of the run takes effect at a reboot or can cut the management path. */
export function armingFor(planned: { changes: Change[] }[]): Arming {
  const changes = planned.flatMap((p) => p.changes);
  if (changes.some((c) => c.kind === "reboot" || c.disruptive)) return "required";
  return changes.some((c) => c.reboot) ? "wanted" : null;
}

/** Everything one run does to one host, so that it can be confirmed or undone. */
class HostRun {
  readonly connection: Transport;
  readonly tx: Transaction;
  arming: Arming = null;
  private armingDone = false;
  rebootCount = 0;
  /** When the host's revert timer was last (re)started. */
  armedAt = 0;
  rolledBackByHost = false;
  /** The host runs systemd (from the gather), so it can be armed. */
  systemd = true;
  /** Where the host should answer once the applied changes take effect. */
  expectedAddress: string;
  /** What became of each change sent (a change not in here was never sent: not applied). */
  readonly outcomes = new Map<Change, Outcome>();
  /** Set when this machine reboots now (local transport): where the run goes on after the boot. */
  resumesAt?: ResumePoint;

  constructor(
    readonly work: HostWork,
    readonly options: RunOptions,
  ) {
    this.connection = options.transport(work.target);
    this.tx = new Transaction(this.connection, options.runId);
    this.expectedAddress = work.target.address;
  }

  /**
   * Apply changes (none of them a reboot) in one round trip: arming (the run's first
   * batch) or renewing the lease and timer, then per change its backup, write, undo record
   * or command, in order; `then` (the verdict's gather) runs after them in the same round
   * trip. Returns the results of `then`. A failed step throws ChangeFailed naming its change.
   */
  async applyBatch(changes: Change[], then: Step[] = []): Promise<ExecResult[]> {
    const changeOf = new Map<Step, Change>();
    const spans: Span[] = [];
    const steps = this.armOrRenewSteps();
    const armStep = steps.find(Transaction.arms);
    const guarded = this.tx.armed || !!armStep;
    for (const change of changes) {
      if (change.address && change.kind !== "pending") this.expectedAddress = change.address;
      // a long batch keeps the timer running from its latest step, not from its start
      const own = [...(guarded && change.kind === "command" && steps.length ? [this.tx.heartbeatStep(this.work.confirmTimeoutSeconds, true)] : []), ...this.stepsOf(change)];
      own.forEach((s) => changeOf.set(s, change));
      // a change without steps of its own (pending) goes with the step before it
      spans.push(own.length ? { change, first: own[0], last: own.at(-1) } : { change, first: steps.at(-1), last: steps.at(-1) });
      steps.push(...own);
    }
    steps.push(...then);
    let todo = steps;
    const settle = (finished: number, stopped: Outcome) => batchOutcomes(spans, todo, finished, stopped).forEach((o, c) => this.outcomes.set(c, o));
    for (;;) {
      const sentAt = Date.now();
      try {
        const results = await this.step(`apply ${changes.length} change(s)`, () => runSteps(this.connection, todo));
        if (this.tx.armed) this.armedAt = sentAt; // the host renewed no earlier than this
        settle(todo.length, "applied");
        return results.slice(todo.length - then.length);
      } catch (error) {
        if (error instanceof StepFailed) settle(todo.indexOf(error.step), "not_applied");
        else if (error instanceof BatchCut) settle(error.results.length, "unknown");
        else unansweredOutcomes(spans).forEach((o, c) => this.outcomes.set(c, o));
        if (!(error instanceof StepFailed)) throw error;
        if (error.step === armStep && error.result.code === ARM_NO_SYSTEMD && this.arming !== "required") {
          this.options.emit({ type: "unarmed_no_systemd" });
          todo = todo.filter((s) => s !== armStep);
          continue;
        }
        if (error.step === armStep) throw new ChangeFailed(changes[0], this.tx.armFailure(error.result));
        if (Transaction.showsRevert(error.step, error.result)) throw new HostRevertedError(this.work.name, "the host reverted the run by itself");
        throw new ChangeFailed(changeOf.get(error.step) ?? changes[0], error);
      }
    }
  }

  private stepsOf(change: Change): Step[] {
    switch (change.kind) {
      case "file":
        return this.tx.writeSteps(change.path, change.after, { mode: change.mode, reboot: change.reboot });
      case "command":
        // modules' commands are idempotent (apt-get install, modprobe): a retried batch runs them again
        return [...(change.undo ? this.tx.undoSteps(change.undo, !!change.undoDisruptive) : []), { what: change.summary, argv: change.argv }];
      default:
        return [];
    }
  }

  /** The first batch arms the host (when the run needs it); every later one renews the lease and the timer. */
  private armOrRenewSteps(): Step[] {
    const timeout = this.work.confirmTimeoutSeconds;
    if (this.armingDone) return [this.tx.heartbeatStep(timeout)];
    this.armingDone = true;
    if (!this.arming || timeout <= 0) return [];
    if (this.arming === "wanted" && !this.systemd) {
      this.options.emit({ type: "unarmed_no_systemd" });
      return [];
    }
    this.options.emit({ type: "arming", timeoutSeconds: timeout });
    return this.tx.armSteps(timeout);
  }

  /**
   * Renew the lock's lease and, when armed, restart the host's revert timer from now;
   * `then` (the verdict's gather) runs in the same round trip, its results returned.
   */
  async renew(then: Step[] = []): Promise<ExecResult[]> {
    const sentAt = Date.now();
    let results: ExecResult[];
    try {
      // a heartbeat and reads: sent again after a blip like any idempotent step
      results = await this.step("confirm", () => runSteps(this.connection, [this.tx.heartbeatStep(this.work.confirmTimeoutSeconds), ...then]));
    } catch (error) {
      if (error instanceof StepFailed && Transaction.showsRevert(error.step, error.result)) throw new HostRevertedError(this.work.name, "the host reverted the run by itself");
      throw error;
    }
    if (this.tx.armed) this.armedAt = sentAt;
    return results.slice(1);
  }

  /**
   * The run's own reboot lies behind it (it was taken up again after this machine's boot):
   * armed or not as the host's record says, never armed again, everything verified.
   */
  afterBoot(): void {
    this.armingDone = true;
    this.rebootCount = 1;
    // the boot timer counts from the boot, before this: the renewal before verify restarts it
    this.armedAt = Date.now();
  }

  /** Until when the controller may still confirm (the host reverts after that). */
  get confirmDeadline(): number {
    return this.tx.armed ? this.armedAt + this.work.confirmTimeoutSeconds * 1000 : Infinity;
  }

  /**
   * One idempotent host-side step: when the connection drops, reconnect and run it again,
   * each lost connection with a budget of its own (see reconnectBudget); a host that
   * reverted meanwhile ends the run.
   */
  async step<T>(what: string, fn: () => Promise<T>): Promise<T> {
    for (let incidents = 1; ; incidents++) {
      try {
        return await fn();
      } catch (error) {
        if (!(error instanceof LostConnection)) throw error;
        if (incidents > MAX_INCIDENTS) throw new StrandedError(this.work.name, `${this.reason(error)}; lost the connection ${incidents} times in a row`);
        await this.reconnect(what, error);
      }
    }
  }

  /** Until when the controller tries to reach the host after losing it now: RECONNECT_SECONDS, never past the confirm deadline. */
  private reconnectBudget(): number {
    return Math.min(Date.now() + RECONNECT_SECONDS * 1000, this.confirmDeadline - 5000);
  }

  private reason(error: Error): string {
    return messageOf(error).replace(`${this.work.name}: `, "");
  }

  private async reconnect(what: string, cause: LostConnection): Promise<void> {
    const started = Date.now();
    const giveUp = this.reconnectBudget();
    const budgetSeconds = Math.floor((giveUp - started) / 1000);
    if (budgetSeconds < 1)
      throw new StrandedError(this.work.name, `${this.reason(cause)}; no time left to reconnect before the confirm deadline: the host reverts the run by itself`);
    this.options.emit({ type: "connection_lost", step: what, error: this.reason(cause), budgetSeconds });
    for (let delay = 1000; ; delay = Math.min(delay * 2, 10_000)) {
      if (Date.now() + delay > giveUp) {
        const tried = Math.max(1, Math.round((Date.now() - started) / 1000));
        throw new StrandedError(this.work.name, `${this.reason(cause)}; no answer again within ${tried}s`);
      }
      await sleep(delay);
      try {
        this.connection.close();
        await this.connection.connect();
      } catch {
        continue;
      }
      const last = await this.tx.state().catch(() => null);
      if (last?.id === this.tx.id && isReverting(last.state)) throw new HostRevertedError(this.work.name, "the host reverted the run by itself while the controller was cut off");
      this.options.emit({ type: "reconnected", step: what, afterSeconds: Math.round((Date.now() - started) / 1000) });
      return;
    }
  }

  async reboot(timeoutSeconds: number, address: string): Promise<void> {
    // the boot timer counts confirm_timeout from the boot, which comes after this
    if (this.tx.armed) this.armedAt = Date.now();
    const deadline = Math.min(Date.now() + timeoutSeconds * 1000, this.confirmDeadline);
    const limit = deadline === this.confirmDeadline ? `the confirm timeout (${this.work.confirmTimeoutSeconds}s)` : `${timeoutSeconds}s`;
    try {
      await this.connection.rebootAndWait({ address, deadline, limit, progress: (message) => this.options.emit({ type: "transport", message }) });
    } catch (error) {
      if (error instanceof RebootTimeout || error instanceof LostConnection) throw new StrandedError(this.work.name, messageOf(error).replace(`${this.work.name}: `, ""));
      throw error;
    }
    this.rebootCount++;
  }

  /**
   * The pull agent's confirmation from outside, tried until shortly before an armed host's
   * revert would run (an unarmed run: for confirm_timeout). Returns why it was not
   * confirmed, or null; a run not confirmed is undone like any failed run.
   */
  async confirmFromOutside(confirm: () => Promise<void>): Promise<string | null> {
    const giveUp = this.tx.armed ? this.confirmDeadline - 5000 : Date.now() + this.work.confirmTimeoutSeconds * 1000;
    for (;;) {
      try {
        await confirm();
        return null;
      } catch (error) {
        if (Date.now() + 2000 > giveUp) return `not confirmed from outside within the confirm timeout (${messageOf(error)})`;
        await sleep(2000);
      }
    }
  }

  /** Confirm only from outside: a fresh connection to the expected address, then disarm. */
  async reconnectFresh(): Promise<void> {
    this.connection.moveTo(this.expectedAddress);
    const deadline = Math.min(Date.now() + 120_000, this.confirmDeadline);
    for (;;) {
      try {
        return await this.connection.connect();
      } catch (error) {
        if (Date.now() > deadline) throw new StrandedError(this.work.name, `cannot reach it at ${this.expectedAddress} to confirm: ${messageOf(error)}`);
        await sleep(2000);
      }
    }
  }

  /**
   * Undo the run. An armed run is undone the way the host would undo it by itself
   * (files, safe undo commands, a reboot into the restored files): nothing that could
   * cut the management path runs while the controller depends on it.
   */
  async rollback(): Promise<string[]> {
    await this.ensureConnected();
    if (this.tx.armed) {
      await this.step("start the host's revert", () => this.tx.revertNow());
      this.options.emit({ type: "rolling_back_as_host" });
      const back = await this.awaitHostRevert();
      this.tx.armed = false; // waited for it already: not again as a host revert
      if (!back) throw new StrandedError(this.work.name, `it did not come back at ${this.connection.originalAddress} after reverting`);
      await this.tx.mark("rolled_back");
      return [];
    }
    const problems = await this.step("restore backups and undo commands", () => this.tx.restore(this.arming ? "safe" : "all"));
    if (this.rebootCount > 0)
      try {
        await this.reboot(600, this.connection.originalAddress);
      } catch (error) {
        // this machine itself (local transport): it boots into the restored files in a moment
        if (!(error instanceof RebootPending)) throw error;
        await this.connection.connect();
      }
    await this.tx.mark("rolled_back");
    return problems;
  }

  private async ensureConnected(): Promise<void> {
    if (this.connection.connected) return;
    this.connection.moveTo(this.expectedAddress);
    await this.step("reconnect", async () => {
      if (!this.connection.connected) throw new LostConnection(this.work.name, "lost connection: not connected");
    });
  }

  /** The armed host reverts by itself (or was told to): wait for it at its old address, booted after the revert. */
  async awaitHostRevert(): Promise<boolean> {
    const c = this.connection;
    c.moveTo(c.originalAddress);
    this.options.emit({ type: "awaiting_host_revert", address: c.originalAddress });
    const deadline = Math.max(this.confirmDeadline, Date.now()) + 600_000;
    while (Date.now() < deadline) {
      try {
        await c.connect();
        if (await this.tx.revertedAndBooted()) return true;
        c.close();
      } catch {
        /* not back yet */
      }
      await sleep(3000);
    }
    return false;
  }
}

/** Every task's mask in one, for host-level text (an error may quote any task). */
function maskAll(instances: TaskInstance[]): Mask {
  return (text) => instances.reduce((t, i) => i.mask(t), text);
}

const isReverting = (state: string) => state === "reverting" || state === "reverted";

/** The controller lost the host after a disruptive change. */
class StrandedError extends HostError {}
/** The host undid the run by itself (its revert timer ran) while the controller was away. */
class HostRevertedError extends StrandedError {}

export async function runHost(work: HostWork, options: RunOptions): Promise<HostResult> {
  const started = Date.now();
  const run = new HostRun(work, options);
  const result: HostResult = { host: work.name, address: work.target.address, status: "ok", rebooted: false, tasks: [], notes: [], durationMs: 0 };
  let resumes = false;
  const finish = async (status: HostStatus, error?: string) => {
    if (!options.check) {
      // a run that resumes after its machine's reboot keeps its lock and its record
      if (!resumes) await run.tx.unlock().catch(() => {});
      result.tasks.forEach((task) => settleTask(task, run.outcomes));
    }
    run.connection.close();
    Object.assign(result, { status, error, rebooted: run.rebootCount > 0, durationMs: Date.now() - started });
    if (run.rolledBackByHost) result.rolledBackBy = "host";
    return result;
  };

  options.emit({ type: "connecting" });
  try {
    await run.connection.connect();
  } catch (error) {
    return finish("unreachable", messageOf(error));
  }

  const all = [...work.tasks, ...work.handlers];
  let planned: Planned[];
  try {
    // one round trip: the lock (a run) and everything planning needs
    const { step, read } = gatherStep([lastTransactionProbe, ...gatherProbesOf(all)]);
    let gatheredOutput: ExecResult;
    if (options.check) {
      options.emit({ type: "gathering", locking: false });
      gatheredOutput = await run.connection.exec(step.argv);
    } else if (options.resume) {
      options.emit({ type: "gathering", locking: true });
      const taken = await run.tx.resume([step]);
      if (taken.state !== "pending") return finish(...endedBeforeResume(run, taken.state));
      [gatheredOutput] = taken.results;
      run.afterBoot();
      result.notes.push(`run ${run.tx.id} taken up again after this machine's reboot`);
    } else {
      options.emit({ type: "gathering", locking: true });
      [gatheredOutput] = await run.tx.lock(options.breakLock, [step]);
      if (run.tx.tookOver) {
        result.notes.push(run.tx.tookOver);
        options.emit({ type: "lock_taken_over", detail: run.tx.tookOver });
      }
    }
    const gathered = read(work.name, gatheredOutput);
    run.systemd = gathered.hostFacts.systemd;
    const record = parseHostRecord((gathered.results.get(probeKey(lastTransactionProbe)) as CommandOutput).stdout);
    // taken up after its reboot, the host's last transaction is this very run
    if (!options.resume) result.lastTransaction = record.last ?? undefined;
    result.facts = describeFacts(all, gathered);
    if (options.check && record.lock !== null) result.notes.push(`locked by ${record.lock || "(an empty lock)"}`);
    planned = options.resume ? planAfterBoot(work, gathered, options.resume) : planTasks(work.tasks, work.handlers, gathered, work.name);
  } catch (error) {
    return finish(error instanceof UnreachableError ? "unreachable" : "failed", messageOf(error));
  }

  result.tasks = planned.map((p) => taskResult(p));
  const changed = planned.some((p) => p.changes.length);
  if (options.check) return finish(changed ? "drift" : "ok");
  // a run taken up after its reboot still has its verification, confirmation and commit ahead
  if (!changed && !options.resume) return finish("ok");
  run.arming = run.tx.armed ? "required" : armingFor(planned);

  let failure: string | null;
  try {
    failure = await applyAndVerify(run, planned, result, options);
    if (!failure && options.confirm) failure = await run.confirmFromOutside(options.confirm);
    if (!failure) {
      const commit = run.tx.armed ? [run.tx.disarmStep("committed")] : run.tx.markSteps("committed");
      await run.step("commit", () => runSteps(run.connection, [...commit, run.tx.unlockStep()]));
      return finish("changed");
    }
  } catch (error) {
    if (error instanceof RebootPending) {
      resumes = true;
      result.resumes = run.resumesAt;
      result.notes.push(`${messageOf(error).replace(`${work.name}: `, "")} (run ${run.tx.id})`);
      return finish("changed");
    }
    if (!(error instanceof StrandedError)) failure = messageOf(error);
    else if (!run.tx.armed) return finish("unreachable", messageOf(error));
    else return finish(...(await hostReverted(run, error)));
  }

  options.emit({ type: "failed", reason: failure!, mask: maskAll(all) });
  try {
    const problems = await run.rollback();
    const mismatched = await compareRestored(run, planned);
    if (problems.length || mismatched.length)
      return finish("failed", `${failure}; rollback incomplete: ${[...problems, ...mismatched.map((p) => `${p} differs from before the run`)].join("; ")}`);
    result.rolledBackBy = "controller";
    return finish("rolled_back", failure);
  } catch (error) {
    // cut off during the rollback of an armed run: the host finishes it by itself
    if (run.tx.armed) return finish(...(await hostReverted(run, error as Error)));
    return finish("failed", `${failure}; rollback failed: ${messageOf(error)}`);
  }
}

/**
 * After this machine's reboot: the tasks up to the one that rebooted were applied before it
 * (only their when: is read again, for what verify covers); the rest are planned afresh,
 * with the handlers the earlier tasks notified.
 */
function planAfterBoot(work: HostWork, gathered: Gathered, resume: ResumePoint): Planned[] {
  const done = work.tasks.slice(0, resume.task + 1);
  const facts = parseHostFacts(hostFactsOf(done), gathered);
  const changed = new Set(resume.changed ?? []);
  const before = done.map((instance, i): Planned =>
    changed.has(i) ? { instance, changes: [], notes: [], changedBeforeReboot: true } : { instance, changes: [], notes: [], skipped: unmetCondition(instance, facts) ?? undefined },
  );
  // a handler rebooted: nothing of the play is left to apply
  if (resume.task >= work.tasks.length) return before;
  return [...before, ...planTasks(work.tasks.slice(resume.task + 1), work.handlers, gathered, work.name, new Set(resume.notified))];
}

/** A run to take up again after the boot that is over already: what became of it. */
function endedBeforeResume(run: HostRun, state: string): [HostStatus, string?] {
  switch (state) {
    case "committed":
      return ["changed"];
    case "reverting":
    case "reverted":
      run.rolledBackByHost = true;
      return ["rolled_back", `rolled back by host: run ${run.tx.id} was not confirmed within confirm_timeout after the reboot; the host restored its files`];
    case "rolled_back":
      return ["rolled_back", `run ${run.tx.id} was rolled back before this machine's reboot`];
    default:
      return ["failed", `run ${run.tx.id} cannot be taken up again after the reboot: the host's record of it says ${state}`];
  }
}

/** The controller was cut off from an armed host: wait for the host's own revert. */
async function hostReverted(run: HostRun, error: Error): Promise<[HostStatus, string]> {
  const home = run.connection.originalAddress;
  if (await run.awaitHostRevert()) {
    run.rolledBackByHost = true;
    run.tx.armed = false;
    return ["rolled_back", `rolled back by host: ${messageOf(error)}; the host restored its files and came back at ${home}`];
  }
  return ["unreachable", `${messageOf(error)}; and it did not come back at ${home} either`];
}

/**
 * Apply the plan in as few round trips as the guarantees allow: the changes up to the next
 * reboot go as one batch; a run that is not armed gets its verdict's probes in its last batch.
 */
async function applyAndVerify(run: HostRun, initial: Planned[], result: HostResult, options: RunOptions): Promise<string | null> {
  const { work } = run;
  let planned = initial;
  const liveAt = new Map<TaskInstance, number>();
  let pending: { task: number; change: Change }[] = [];
  const apply = async (then: Step[] = []): Promise<ExecResult[]> => {
    const batch = pending;
    pending = [];
    if (!batch.length && !then.length) return [];
    for (const { task, change } of batch) options.emit({ type: "change", task: planned[task].instance.task.name, change, mask: planned[task].instance.mask });
    try {
      return await run.applyBatch(
        batch.map((b) => b.change),
        then,
      );
    } catch (error) {
      // a step's failure is its change's task's; arming, renewal or the connection the batch's first task's
      const change = error instanceof ChangeFailed ? error.change : batch[0]?.change;
      const task = batch.find((b) => b.change === change)?.task;
      if (task === undefined) throw error instanceof ChangeFailed ? error.cause : error;
      throw new TaskFailed(task, error instanceof ChangeFailed ? error.cause : error);
    }
  };
  try {
    for (let i = 0; i < planned.length; i++) {
      const { instance, changes } = planned[i];
      const rebootsBefore = run.rebootCount;
      for (const change of changes) {
        if (change.kind !== "reboot") {
          pending.push({ task: i, change });
          continue;
        }
        await apply();
        options.emit({ type: "change", task: instance.task.name, change, mask: instance.mask });
        run.outcomes.set(change, "unknown");
        const notifiedSoFar = planned.slice(0, i + 1).flatMap((p) => (p.changes.length ? p.instance.task.notify : []));
        const changedSoFar = planned.flatMap((p, index) => (index <= i && (p.changes.length || p.changedBeforeReboot) ? [index] : []));
        const point = { task: i, notified: [...new Set([...(options.resume?.notified ?? []), ...notifiedSoFar])], changed: changedSoFar };
        options.beforeReboot?.(point);
        try {
          await run.reboot(change.timeoutSeconds, run.expectedAddress);
          run.outcomes.set(change, "applied");
        } catch (error) {
          // the local transport's own machine reboots now: the host confirmed it, the run resumes after the boot
          if (!(error instanceof RebootPending)) throw new TaskFailed(i, error);
          run.outcomes.set(change, "applied");
          run.resumesAt = point;
          throw error;
        }
      }
      liveAt.set(instance, rebootsBefore);
      if (run.rebootCount > rebootsBefore && i + 1 < planned.length) {
        // After a reboot the host is new: read it again before planning what is left.
        await apply();
        const rest = planned.slice(i + 1).map((p) => p.instance);
        const notified = new Set(planned.slice(0, i + 1).flatMap((p) => (p.changes.length ? p.instance.task.notify : [])));
        const gathered = await run.step("gather facts after the reboot", () => gatherFor(run.connection, [...rest, ...work.handlers]));
        const replanned = planTasks(
          rest.filter((t) => !t.handler),
          work.handlers,
          gathered,
          work.name,
          notified,
        );
        planned = [...planned.slice(0, i + 1), ...replanned];
        result.tasks = [...result.tasks.slice(0, i + 1), ...replanned.map((p) => taskResult(p))];
      }
    }
    const checks = verification(run, planned, liveAt);
    const verdict = gatherStep(checks.probes);
    const probes = checks.verify.length ? [verdict.step] : [];
    let output: ExecResult[];
    if (run.arming === "required") {
      await apply();
      // Confirm only from outside: the verdict comes over a new connection to where the host should be now.
      if (run.tx.armed) await run.reconnectFresh();
      output = run.tx.armed ? await run.renew(probes) : await runSteps(run.connection, probes);
    } else output = await apply(probes);
    return judge(planned, result, checks, () => verdict.read(work.name, output[0]), options);
  } catch (error) {
    if (!(error instanceof TaskFailed)) throw error;
    const i = error.task;
    result.tasks[i].status = "failed";
    result.tasks[i].problems.push(messageOf(error.cause));
    if (error.cause instanceof StrandedError) throw error.cause;
    for (const later of result.tasks.slice(i + 1))
      if (later.changes.length) {
        later.status = "skipped";
        later.notes.push(NOT_APPLIED_EARLIER_FAILED);
      }
    return `task "${planned[i].instance.task.name}": ${messageOf(error.cause)}`;
  }
}

/** A change of the batch failed (the cause says how). */
class ChangeFailed extends Error {
  constructor(
    readonly change: Change,
    override readonly cause: unknown,
  ) {
    super(messageOf(cause));
  }
}

/** Applying task `task` failed. */
class TaskFailed extends Error {
  constructor(
    readonly task: number,
    override readonly cause: unknown,
  ) {
    super(messageOf(cause));
  }
}

interface Verification {
  /** Indexes of the tasks whose verify runs. */
  verify: number[];
  /** Indexes of the tasks whose changes wait for a reboot that this run did not do. */
  waiting: number[];
  probes: Probe[];
}

function verification(run: HostRun, planned: Planned[], liveAt: Map<TaskInstance, number>): Verification {
  const verify: number[] = [];
  const waiting: number[] = [];
  planned.forEach((p, i) => {
    if (!p.instance.module.verify || p.skipped) return;
    const waitsForReboot = p.changes.some((c) => c.reboot) && run.rebootCount <= (liveAt.get(p.instance) ?? 0);
    if (waitsForReboot) waiting.push(i);
    else if (p.changes.length || run.rebootCount > 0) verify.push(i);
  });
  return {
    verify,
    waiting,
    probes: allProbes(
      verify.map((i) => planned[i].instance),
      (t) => t.module.verify!.probes(t.args),
    ),
  };
}

function judge(planned: Planned[], result: HostResult, checks: Verification, gathered: () => Gathered, options: RunOptions): string | null {
  for (const i of checks.waiting) result.tasks[i].notes.push("takes effect after a reboot: not verified in this run");
  if (!checks.verify.length) return null;
  options.emit({ type: "verifying" });
  const { results } = gathered();
  const failures: string[] = [];
  for (const i of checks.verify) {
    const { instance } = planned[i];
    const facts = factsFor(instance.module.verify!.probes(instance.args), results);
    const verdict = instance.module.verify!.check(instance.args, facts as never);
    const { problems: found, notes = [] } = Array.isArray(verdict) ? { problems: verdict } : verdict;
    const problems = found;
    result.tasks[i].notes.push(...notes);
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
  const paths = run.tx.paths.filter((p) => before.has(p));
  if (!paths.length) return [];
  const probes = paths.map((file) => ({ file }));
  const gathered = await gather(run.connection, probes);
  return paths.filter((path) => (gathered.results.get(probeKey({ file: path })) as FileState).content !== before.get(path));
}
