// Runs the real provision CLI (dist/cli/cli.js) inside a test namespace.
import { join } from "node:path";
import { repoRoot } from "../support/cache.js";
import { run } from "../support/processes.js";

export const CLI = join(repoRoot, "dist", "cli", "cli.js");

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
  output: string;
}

export async function provision(inNamespace: (argv: string[]) => string[], args: string[]): Promise<CliResult> {
  const r = await run(inNamespace(["node", CLI, ...args]), { cwd: repoRoot });
  return { ...r, output: r.stdout + r.stderr };
}

/** "host  changed  3  2  0  no" rows of the summary table, by host. */
export function summary(stdout: string): Record<string, { status: string; ok: number; changed: number; failed: number; rolledBack: string }> {
  const rows: Record<string, { status: string; ok: number; changed: number; failed: number; rolledBack: string }> = {};
  const table = stdout.slice(stdout.lastIndexOf("HOST  "));
  for (const line of table.split("\n").slice(1)) {
    const m = /^(\S+)\s+(ok|changed|drift|failed|rolled back by host|rolled back|unreachable|not run)\s+(\d+)\s+(\d+)\s+(\d+)\s+(yes|no|by host)$/.exec(line.trim());
    if (m) rows[m[1]] = { status: m[2], ok: Number(m[3]), changed: Number(m[4]), failed: Number(m[5]), rolledBack: m[6] };
  }
  return rows;
}

/** The Wi-Fi variables the eth0+wlan0 seed playbook needs (sshd hosts have no radio: only files are written). */
export const WIFI_VARS = { wifi_ssid: "home-network", wifi_psk: "home-passphrase-42", wifi_country: "DE" };
