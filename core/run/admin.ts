// `provision status` and `provision rollback`: look at and undo transactions by hand.
import { selectHosts, connectionTarget, type Inventory, type TargetOptions } from "../config/inventory.js";
import type { Transport, TransportFactory } from "../transport/transport.js";
import { lastTransactionProbe, lockHolder, parseLastTransaction, restoreLast, Transaction } from "./transaction.js";
import { ConfigError, UsageError, messageOf, quote } from "../errors.js";

/** Where the hosts are, and how to reach them. */
export interface AdminOptions extends TargetOptions {
  transport: TransportFactory;
}

interface HostLine {
  host: string;
  cells: string[];
  failed: boolean;
}

async function eachHost(inventory: Inventory, limit: string | undefined, options: AdminOptions, act: (c: Transport) => Promise<string[]>): Promise<HostLine[]> {
  const names = limit ? selectHosts(inventory, limit) : [...inventory.hosts.keys()];
  if (!names.length)
    throw new ConfigError(
      limit ? `no hosts matched --limit ${quote(limit)} in ${inventory.file}. Check the pattern.` : `no hosts matched: the inventory ${inventory.file} has no hosts.`,
    );
  return Promise.all(
    names.map(async (name) => {
      const connection = options.transport(connectionTarget(inventory.hosts.get(name)!, options));
      try {
        await connection.connect();
        return { host: name, cells: await act(connection), failed: false };
      } catch (error) {
        return { host: name, cells: [`error: ${messageOf(error).replace(`${name}: `, "")}`], failed: true };
      } finally {
        connection.close();
      }
    }),
  );
}

function table(header: string[], lines: HostLine[]): string {
  const rows = [header, ...lines.map((l) => [l.host, ...l.cells])];
  const widths = header.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? "").length)));
  return rows.map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]))).join("  ")).join("\n") + "\n";
}

/** Each host's last transaction, whether a revert is armed, and who holds its lock. */
export async function status(inventory: Inventory, limit: string | undefined, options: AdminOptions): Promise<number> {
  const lines = await eachHost(inventory, limit, options, async (c) => {
    const last = parseLastTransaction((await c.exec(lastTransactionProbe.command)).stdout);
    const lock = await lockHolder(c);
    return [last?.id ?? "-", last?.state ?? "-", last?.armed ? "ARMED" : "no", lock ?? "-"];
  });
  process.stdout.write(table(["HOST", "LAST RUN", "STATE", "REVERT ARMED", "LOCK"], lines));
  return lines.some((l) => l.failed) ? 1 : 0;
}

/** Restore the last transaction of the chosen hosts from their on-host backups. */
export async function rollback(inventory: Inventory, limit: string | undefined, options: AdminOptions & { breakLock: boolean }): Promise<number> {
  if (!limit) throw new UsageError("provision rollback needs --limit HOST (or a pattern): it undoes the last run on exactly those hosts.");
  const lines = await eachHost(inventory, limit, options, async (c) => {
    const last = parseLastTransaction((await c.exec(lastTransactionProbe.command)).stdout);
    if (!last) return ["nothing to roll back (no transaction recorded)"];
    const lock = new Transaction(c, `rollback-${last.id}`);
    await lock.lock(options.breakLock);
    try {
      const needsReboot = await restoreLast(c, last);
      if (needsReboot) await c.rebootAndWait({ address: c.target.address, deadline: Date.now() + 600_000, limit: "600s", progress: () => {} });
      return [`restored run ${last.id} (was ${last.state})${needsReboot ? "; rebooted" : ""}${lock.tookOver ? `; ${lock.tookOver}` : ""}`];
    } finally {
      await lock.unlock().catch(() => {});
    }
  });
  process.stdout.write(table(["HOST", "RESULT"], lines));
  return lines.some((l) => l.failed) ? 1 : 0;
}
