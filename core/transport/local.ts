// The local transport: the same steps, run by `sh` on this machine as root (argv through
// child_process, never shell text). A pull agent applies a Pi's playbook with it on the Pi.
//
// Reboot: a local run cannot wait for its own machine to come back. rebootAndWait records
// nothing new (the transaction's record on this host already says what was applied and
// whether a revert is armed), schedules the reboot and throws RebootPending; the engine
// then ends the run as changed, keeping its lock and record (nothing is rolled back).
// Resume point: the host's last transaction (/var/lib/provision/last, its state
// "pending", "armed" set). The pull agent's run after the boot reads it with the gather
// (lastTransactionProbe), takes over its own lock (its pid is gone), verifies the playbook
// and confirms by disarming (Transaction.disarmStep("committed")) — or the armed revert
// timer undoes the run if the agent never gets there.
import { spawn } from "node:child_process";
import { HostError, LostConnection } from "../errors.js";
import { scheduleReboot } from "./reboot.js";
import { execResult, readFileOver, RebootPending, runChecked, type ConnectionTarget, type ExecResult, type RebootOptions, type Transport } from "./transport.js";

/** This machine, as the engine's target under `name`: reached by the local transport (the SSH fields are unused). */
export const localTarget = (name: string): ConnectionTarget => ({
  name,
  address: "localhost",
  port: 22,
  user: "root",
  become: false,
  connectTimeoutSeconds: 10,
  hostKeys: { file: "/dev/null", acceptNew: false },
});

export interface LocalOptions {
  /**
   * argv put before every command, e.g. to enter a test host's namespaces and root
   * (`nsenter --target PID --mount --net … --root --`). Empty: this machine itself.
   */
  prefix?: string[];
}

export class LocalTransport implements Transport {
  private open = false;
  readonly originalAddress: string;
  private readonly prefix: string[];

  constructor(
    public target: ConnectionTarget,
    options: LocalOptions = {},
  ) {
    this.originalAddress = target.address;
    this.prefix = options.prefix ?? (process.getuid?.() === 0 ? [] : ["sudo", "-n", "--"]);
  }

  get connected(): boolean {
    return this.open;
  }

  async connect(): Promise<void> {
    this.open = true;
  }

  close(): void {
    this.open = false;
  }

  /** This machine has one address for the run: a new one changes nothing about reaching it. */
  moveTo(address: string): void {
    this.target = { ...this.target, address };
  }

  exec(argv: string[], stdin?: string): Promise<ExecResult> {
    if (!this.open) return Promise.reject(new LostConnection(this.target.name, "lost connection: not connected"));
    if (!argv.length) return Promise.reject(new Error("empty command"));
    const [command, ...args] = [...this.prefix, ...argv];
    return new Promise((resolve, reject) => {
      const child = spawn(command, args, { stdio: ["pipe", "pipe", "pipe"] });
      const stdout: Buffer[] = [];
      const stderr: Buffer[] = [];
      child.stdout.on("data", (c: Buffer) => stdout.push(c));
      child.stderr.on("data", (c: Buffer) => stderr.push(c));
      child.stdin.on("error", () => {}); // a command that reads less than it is given
      child.on("error", (error) => reject(new HostError(this.target.name, `cannot run ${command}: ${error.message}`, { cause: error })));
      child.on("close", (code, signal) => resolve(execResult(code ?? (signal ? 128 : 1), stdout, stderr)));
      child.stdin.end(stdin ?? "");
    });
  }

  run(what: string, argv: string[], stdin?: string): Promise<string> {
    return runChecked(this, what, argv, stdin);
  }

  readFile(path: string): Promise<string | null> {
    return readFileOver(this, path);
  }

  async rebootAndWait(options: RebootOptions): Promise<void> {
    options.progress("rebooting this machine; the run resumes after the boot from its transaction record");
    await scheduleReboot(this);
    this.open = false;
    throw new RebootPending(this.target.name, "this machine reboots now; the run resumes after the boot from its transaction record");
  }
}
