// Start pull-client.ts processes inside a namespace and call them (see that file).
import { spawn } from "node:child_process";
import { dirname, join } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { killPid, onCleanup } from "./processes.js";
import { waitFor } from "./nats-cluster.js";

const CLIENT = join(dirname(fileURLToPath(import.meta.url)), "pull-client.js");

export type ClientEvent = { event: string; [k: string]: any };

export interface PullClient {
  name: string;
  pid: number;
  call<T = any>(op: string, args?: Record<string, unknown>): Promise<T>;
  events: ClientEvent[];
  /** Resolves with the first event (already received or still to come) that matches. */
  waitEvent(match: (e: ClientEvent) => boolean, ms?: number, what?: string): Promise<ClientEvent>;
  stderr(): string;
  close(): Promise<void>;
}

export function startClient(netns: string, name: string): PullClient {
  const child = spawn("ip", ["netns", "exec", netns, process.execPath, CLIENT], { stdio: ["pipe", "pipe", "pipe"] });
  const unregister = onCleanup(`pull client ${name}`, () => killPid(child.pid));
  const pending = new Map<number, { resolve: (v: any) => void; reject: (e: Error) => void }>();
  const events: ClientEvent[] = [];
  const waiters: { match: (e: ClientEvent) => boolean; resolve: (e: ClientEvent) => void }[] = [];
  let stderr = "";
  let next = 1;
  child.stderr!.on("data", (d) => (stderr += d));
  createInterface({ input: child.stdout! }).on("line", (line) => {
    let msg: any;
    try {
      msg = JSON.parse(line);
    } catch {
      stderr += `(stdout) ${line}\n`;
      return;
    }
    if (msg.event) {
      events.push(msg);
      for (const w of waiters.filter((w) => w.match(msg))) {
        waiters.splice(waiters.indexOf(w), 1);
        w.resolve(msg);
      }
      return;
    }
    const p = pending.get(msg.id);
    pending.delete(msg.id);
    if (msg.ok) p?.resolve(msg.result);
    else p?.reject(new Error(`${name}: ${msg.error}${msg.stack ? `\n${msg.stack}` : ""}`));
  });
  child.on("exit", (code) => {
    for (const p of pending.values()) p.reject(new Error(`${name}: client exited (${code}): ${stderr.trim().slice(-2000)}`));
    pending.clear();
  });
  child.stdin!.on("error", () => {});
  return {
    name,
    pid: child.pid!,
    events,
    call(op, args = {}) {
      const id = next++;
      return new Promise((resolve, reject) => {
        pending.set(id, { resolve, reject });
        child.stdin!.write(JSON.stringify({ id, op, args }) + "\n");
      });
    },
    waitEvent(match, ms = 10_000, what = "an event") {
      const seen = events.find(match);
      if (seen) return Promise.resolve(seen);
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`${name}: no ${what} within ${ms} ms; events: ${JSON.stringify(events.slice(-10))}`)), ms);
        waiters.push({
          match,
          resolve: (e) => {
            clearTimeout(timer);
            resolve(e);
          },
        });
      });
    },
    stderr: () => stderr,
    async close() {
      if (child.exitCode === null) {
        await Promise.race([this.call("close").catch(() => {}), new Promise((r) => setTimeout(r, 2000))]);
      }
      unregister();
    },
  };
}

/** Makes the fleet's buckets and streams (replicated 3 times) once JetStream has its meta leader: tried until the cluster has one. */
export async function setupBuckets(ctl: PullClient): Promise<void> {
  await waitFor(
    () =>
      ctl.call("setup", { replicas: 3 }).then(
        () => true,
        () => false,
      ),
    30_000,
    "JetStream to accept R3 buckets and streams",
  );
}

/** Connect a new client with these credentials and expect the servers to refuse it; resolves with their reason. */
export async function connectRefused(netns: string, name: string, connect: { servers: string[]; creds: string; inboxPrefix: string; name: string }): Promise<string> {
  const client = startClient(netns, name);
  try {
    return await client.call("connect", connect).then(
      () => Promise.reject(new Error(`${name}: the servers took credentials they should refuse`)),
      (error: Error) => error.message,
    );
  } finally {
    await client.close();
  }
}
