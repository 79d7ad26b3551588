// One SSH connection per host, reused for every task (node-ssh over ssh2).
import { readFileSync, existsSync } from "node:fs";
import { homedir } from "node:os";
import { createConnection, type Socket } from "node:net";
import { join } from "node:path";
import { NodeSSH, type Config } from "node-ssh";
import { LostConnection, UnreachableError, messageOf } from "../errors.js";
import { commandLine } from "./shell.js";
import { hostKeyVerifier } from "./known-hosts.js";
import { rebootOver } from "./reboot.js";
import { execResult, readFileOver, lastLine, runChecked, type ConnectionTarget, type ExecResult, type RebootOptions, type Transport } from "./transport.js";

export { lastLine, type ConnectionTarget, type ExecResult };

/**
 * connect_timeout bounds the TCP connect, as OpenSSH's ConnectTimeout does; the SSH
 * handshake after it gets this much longer: a fleet answering at once keeps the hosts'
 * CPUs (or a shared link) busy with key exchanges that are slow, not lost.
 */
const HANDSHAKE_FACTOR = 3;
const HANDSHAKE_MIN_SECONDS = 30;
export const handshakeSeconds = (target: ConnectionTarget): number => Math.max(HANDSHAKE_MIN_SECONDS, HANDSHAKE_FACTOR * target.connectTimeoutSeconds);

export class SshTransport implements Transport {
  private ssh: NodeSSH | null = null;

  /** Where the host was at the start of the run; its host key vouches for any new address. */
  readonly originalAddress: string;

  constructor(public target: ConnectionTarget) {
    this.originalAddress = target.address;
  }

  /** Reach the host at another address from now on (after a change moved it). */
  moveTo(address: string): void {
    this.close();
    this.target = { ...this.target, address };
  }

  async connect(): Promise<void> {
    const { target } = this;
    const verifier = hostKeyVerifier(target.hostKeys, target.address, target.port, this.originalAddress);
    let sock: Socket;
    try {
      sock = await openSocket(target);
    } catch (error) {
      throw new UnreachableError(target.name, `unreachable at ${target.address}:${target.port}: ${describeConnectError(error, target)}`, { cause: error });
    }
    const config: Config = {
      sock,
      host: target.address,
      port: target.port,
      username: target.user,
      readyTimeout: handshakeSeconds(target) * 1000,
      keepaliveInterval: 5000,
      keepaliveCountMax: 3,
      hostVerifier: verifier.verify,
      ...(verifier.serverHostKeyAlgorithms ? { algorithms: { serverHostKey: verifier.serverHostKeyAlgorithms as never } } : {}),
      ...credentials(target),
    };
    const ssh = new NodeSSH();
    try {
      await ssh.connect(config);
    } catch (error) {
      ssh.dispose();
      sock.destroy();
      const reason = verifier.rejection() ?? describeConnectError(error, target);
      throw new UnreachableError(target.name, `unreachable at ${target.address}:${target.port}: ${reason}`, { cause: error });
    }
    ssh.connection?.on("error", () => {}); // a dropped link surfaces as a failed exec
    this.ssh = ssh;
  }

  get connected(): boolean {
    return this.ssh?.isConnected() ?? false;
  }

  close(): void {
    this.ssh?.dispose();
    this.ssh = null;
  }

  /** Run argv (quoted, never pasted) with sudo when `become` is set. */
  async exec(argv: string[], stdin?: string): Promise<ExecResult> {
    if (!this.ssh) throw new LostConnection(this.target.name, "lost connection: not connected");
    const full = this.target.become && this.target.user !== "root" ? ["sudo", "-n", "--", ...argv] : argv;
    try {
      const stdout: Buffer[] = [];
      const stderr: Buffer[] = [];
      const r = await this.ssh.execCommand(commandLine(full), { stdin, noTrim: true, onStdout: (c) => stdout.push(c), onStderr: (c) => stderr.push(c) });
      // a channel closed by a dropped link ends without an exit status
      if (r.code === null && !r.signal && !this.connected) throw new Error("the connection closed");
      return execResult(r.code ?? (r.signal ? 128 : 1), stdout, stderr);
    } catch (error) {
      throw new LostConnection(this.target.name, `lost connection: ${messageOf(error)}`, { cause: error });
    }
  }

  /** exec that throws a HostError naming `what` when the command fails. */
  run(what: string, argv: string[], stdin?: string): Promise<string> {
    return runChecked(this, what, argv, stdin);
  }

  readFile(path: string): Promise<string | null> {
    return readFileOver(this, path);
  }

  /** Reboot, then reconnect (fresh, at the new address) until a new boot_id answers. */
  rebootAndWait(options: RebootOptions): Promise<void> {
    return rebootOver(this, options);
  }
}

/** The SSH transport's old name. */
export const Connection = SshTransport;
export type Connection = SshTransport;

function credentials(target: ConnectionTarget): Partial<Config> {
  if (target.identityFile) {
    try {
      return { privateKey: readFileSync(target.identityFile, "utf8") };
    } catch (error) {
      throw new UnreachableError(target.name, `cannot read identity_file ${target.identityFile}: ${(error as NodeJS.ErrnoException).code}. Check the inventory.`);
    }
  }
  if (process.env.SSH_AUTH_SOCK) return { agent: process.env.SSH_AUTH_SOCK };
  for (const name of ["id_ed25519", "id_ecdsa", "id_rsa"]) {
    const file = join(homedir(), ".ssh", name);
    if (existsSync(file)) return { privateKey: readFileSync(file, "utf8") };
  }
  throw new UnreachableError(target.name, "no identity_file set, no SSH agent and no ~/.ssh/id_* key. Set identity_file in the inventory.");
}

/** The TCP connection, within connect_timeout. */
function openSocket(target: ConnectionTarget): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket = createConnection({ host: target.address, port: target.port });
    const fail = (error: Error) => {
      socket.destroy();
      reject(error);
    };
    socket.setTimeout(target.connectTimeoutSeconds * 1000, () => fail(new ConnectTimeout()));
    socket.once("error", fail);
    socket.once("connect", () => {
      socket.setTimeout(0);
      socket.off("error", fail);
      socket.on("error", () => {}); // from here ssh2 tells its errors (an error before it listens would be thrown)
      resolve(socket);
    });
  });
}

class ConnectTimeout extends Error {
  constructor() {
    super("Timed out while connecting");
  }
}

function describeConnectError(error: unknown, target: ConnectionTarget): string {
  const e = error as NodeJS.ErrnoException & { level?: string };
  if (e.code === "ECONNREFUSED") return "connection refused (is sshd running?)";
  if (e.code === "EHOSTUNREACH" || e.code === "ENETUNREACH") return "no route to host";
  if (error instanceof ConnectTimeout) return `no answer within ${target.connectTimeoutSeconds}s`;
  if (/Timed out/i.test(e.message)) return `connected, but the SSH handshake did not finish within ${handshakeSeconds(target)}s`;
  if (e.level === "client-authentication") return `authentication as ${target.user} failed (check user and identity_file)`;
  return e.message;
}
