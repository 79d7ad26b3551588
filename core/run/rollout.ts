// Rollout policy: batches (serial), failure thresholds, retry files.
import { writeFileSync } from "node:fs";
import { ConfigError, quote } from "../errors.js";

export type Serial = number | string | (number | string)[] | undefined;

function batchSize(spec: number | string, total: number, where: string): number {
  if (typeof spec === "number") {
    if (spec < 1) throw new ConfigError(`${where}: serial sizes must be at least 1 (got ${spec}).`);
    return spec;
  }
  const m = /^(\d+(?:\.\d+)?)%$/.exec(spec.trim());
  if (!m) throw new ConfigError(`${where}: serial must be a number, a percentage like "25%", or a list of them (got ${quote(spec)}).`);
  return Math.max(1, Math.ceil((Number(m[1]) / 100) * total));
}

/** Split hosts into batches as Ansible's serial does; the last size repeats for the rest. */
export function batches<T>(hosts: T[], serial: Serial, where = "serial"): T[][] {
  if (serial === undefined || !hosts.length) return hosts.length ? [hosts] : [];
  const specs = Array.isArray(serial) ? serial : [serial];
  if (!specs.length) return [hosts];
  const result: T[][] = [];
  let i = 0,
    s = 0;
  while (i < hosts.length) {
    const size = batchSize(specs[Math.min(s++, specs.length - 1)], hosts.length, where);
    result.push(hosts.slice(i, i + size));
    i += size;
  }
  return result;
}

/** Why the rollout must stop after this batch, or null to go on. */
export function haltReason(failed: number, batch: number, policy: { maxFailPercentage?: number; anyErrorsFatal: boolean }): string | null {
  if (!failed) return null;
  if (policy.anyErrorsFatal) return `${failed} host(s) failed and any_errors_fatal is set`;
  if (policy.maxFailPercentage !== undefined) {
    const pct = (failed / batch) * 100;
    if (pct > policy.maxFailPercentage) return `${failed} of ${batch} host(s) in the batch failed (${pct.toFixed(0)}% > max_fail_percentage ${policy.maxFailPercentage}%)`;
  }
  return null;
}

/** One host name per line, for --limit @FILE. */
export function writeRetryFile(file: string, hosts: string[]): void {
  writeFileSync(file, hosts.join("\n") + "\n");
}
