// Output files (--report, --retry-file, --metrics-file) are checked before any host is contacted.
import { accessSync, closeSync, constants, openSync, statSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { UsageError, quote } from "../core/errors.js";

/**
 * An output file must be writable before any host is contacted: an existing file opens for
 * appending (nothing is written), a new one needs an existing, writable folder.
 */
export function checkOutputFile(option: string, file: string): void {
  const fail = (problem: string) => new UsageError(`${option} ${quote(file, 200)}: ${problem}`);
  const path = resolve(file);
  let stats;
  try {
    stats = statSync(path);
  } catch (error) {
    if (!["ENOENT", "ENOTDIR"].includes((error as NodeJS.ErrnoException).code ?? "")) throw fail(`cannot use it (${(error as NodeJS.ErrnoException).code}). Choose another file.`);
  }
  if (stats?.isDirectory())
    throw fail(`is a folder. Give a file name, e.g. ${join(file, { "--report": "report.json", "--metrics-file": "provision.prom" }[option] ?? "hosts.retry")}.`);
  if (stats) {
    try {
      closeSync(openSync(path, "a"));
    } catch (error) {
      throw fail(`cannot write to it (${(error as NodeJS.ErrnoException).code}). Check its permissions or choose another file.`);
    }
    return;
  }
  const folder = dirname(path);
  let folderStats;
  try {
    folderStats = statSync(folder);
  } catch {
    throw fail(`the folder ${folder} does not exist. Create it first or choose another path.`);
  }
  if (!folderStats.isDirectory()) throw fail(`${folder} is not a folder. Choose another path.`);
  try {
    accessSync(folder, constants.W_OK | constants.X_OK);
  } catch (error) {
    throw fail(`cannot create files in ${folder} (${(error as NodeJS.ErrnoException).code}). Choose another folder.`);
  }
}
