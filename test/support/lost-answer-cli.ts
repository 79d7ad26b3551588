// The provision CLI with a fault injected from outside the engine: its SSH transport runs
// the first batch that installs a package for real, then acts as if the answer was lost
// (LostConnection), and every later command is lost too. Usage: node lost-answer-cli.js ARGS…
import { main, sshTransport } from "../../cli/cli.js";
import { LostConnection } from "../../core/errors.js";
import type { ConnectionTarget, ExecResult, RebootOptions, Transport } from "../../core/transport/transport.js";

class LostAnswer implements Transport {
  private lost = false;

  constructor(private readonly inner: Transport) {}

  get target(): ConnectionTarget {
    return this.inner.target;
  }
  get originalAddress(): string {
    return this.inner.originalAddress;
  }
  get connected(): boolean {
    return this.inner.connected;
  }
  connect(): Promise<void> {
    return this.inner.connect();
  }
  close(): void {
    this.inner.close();
  }
  moveTo(address: string): void {
    this.inner.moveTo(address);
  }
  readFile(path: string): Promise<string | null> {
    return this.inner.readFile(path);
  }
  rebootAndWait(options: RebootOptions): Promise<void> {
    return this.inner.rebootAndWait(options);
  }

  async exec(argv: string[], stdin?: string): Promise<ExecResult> {
    if (this.lost) throw new LostConnection(this.target.name, "lost connection: injected by the test");
    const result = await this.inner.exec(argv, stdin);
    if (argv.some((a) => a.includes("apt-get") && a.includes("install"))) {
      this.lost = true;
      throw new LostConnection(this.target.name, "lost connection: the answer was dropped by the test");
    }
    return result;
  }

  async run(what: string, argv: string[], stdin?: string): Promise<string> {
    const r = await this.exec(argv, stdin);
    if (r.code !== 0) throw new Error(`${what}: exited ${r.code}`);
    return r.stdout;
  }
}

main(process.argv.slice(2), (target) => new LostAnswer(sshTransport(target))).then(
  (code) => (process.exitCode = code),
  (error: unknown) => {
    console.error(error);
    process.exitCode = 1;
  },
);
