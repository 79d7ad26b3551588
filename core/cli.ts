#!/usr/bin/env node
// The provision command: parse argv, load and validate everything, run, print, exit.
import { parseArgs } from "node:util";
import { readFileSync } from "node:fs";
import { basename, dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { loadInventory } from "./inventory.js";
import { checkModules, loadPlaybook } from "./playbook.js";
import { BUILT_IN, Registry, playbookDir } from "./registry.js";
import { execute, prepare, type RunSettings } from "./run.js";
import { exitCode, hostsToRetry, renderChanges, renderSummary, writeJsonReport } from "./output.js";
import { writeRetryFile } from "./rollout.js";
import { writeHtmlReport } from "./html-report.js";
import { ConfigError, ModuleBug, UsageError } from "./errors.js";
import { builtinModules } from "../modules/index.js";
import { rollback, status } from "./admin.js";

const HELP = `Usage: provision --inventory FILE [PLAYBOOK...] [options]
       provision status --inventory FILE [--limit PATTERN]
       provision rollback --inventory FILE --limit PATTERN [--break-lock]

Apply playbooks to the hosts of an inventory over SSH. Without a playbook,
connect to every host and report whether it is reachable.
"status" shows each host's last run (pending, committed, rolled back, reverted
by the host), an armed host-side revert and the lock holder; "rollback" restores
the files of the last run from the host's own backups (and reboots if needed).

Options:
  -i, --inventory FILE        inventory YAML (required)
  -C, --check                 audit only: change nothing, exit 2 when something would change
  -D, --diff                  show unified diffs of every file that would change or changed
  -l, --limit PATTERN         only hosts matching PATTERN (groups, names, globs, !x, &x, @retry-file)
  -f, --forks N               hosts in flight at once (default: 50 with --check, 10 otherwise)
  -t, --tags LIST             run only tasks with one of these tags (comma-separated)
      --skip-tags LIST        skip tasks with any of these tags
      --report FILE           write a report of every host, task, change and diff:
                              HTML (hosts × tasks grid) if FILE ends in .html, else JSON
      --known-hosts FILE      known_hosts file (default: inventory's known_hosts_file or ~/.ssh/known_hosts)
      --accept-new-host-keys  trust and record keys of hosts not yet in known_hosts (never changed keys)
      --break-lock            take over a host locked by a controller that died
      --retry-file FILE       list failed and untouched hosts there (a halted rollout always
                              writes one, by default PLAYBOOK.retry here); resume with --limit @FILE
  -v, --verbose               one line per event instead of the live display
  -h, --help                  show this help
  -V, --version               show the version

Exit codes: 0 ok (and no drift with --check), 2 drift found by --check,
1 a host failed, was rolled back or was unreachable, or the input is invalid, 64 usage error.`;

const OPTIONS = {
  inventory: { type: "string", short: "i" },
  check: { type: "boolean", short: "C" },
  diff: { type: "boolean", short: "D" },
  limit: { type: "string", short: "l" },
  forks: { type: "string", short: "f" },
  tags: { type: "string", short: "t" },
  "skip-tags": { type: "string" },
  report: { type: "string" },
  "known-hosts": { type: "string" },
  "accept-new-host-keys": { type: "boolean" },
  "break-lock": { type: "boolean" },
  "retry-file": { type: "string" },
  verbose: { type: "boolean", short: "v" },
  help: { type: "boolean", short: "h" },
  version: { type: "boolean", short: "V" },
} as const;

function version(): string {
  const here = dirname(fileURLToPath(import.meta.url));
  for (const candidate of [join(here, "../package.json"), join(here, "../../package.json")]) {
    try {
      return JSON.parse(readFileSync(candidate, "utf8")).version;
    } catch { /* try the next */ }
  }
  return "unknown";
}

function list(value: string | undefined): string[] {
  return value ? value.split(",").map((s) => s.trim()).filter(Boolean) : [];
}

export async function main(argv: string[]): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({ args: argv, options: OPTIONS, allowPositionals: true, strict: true });
  } catch (error) {
    throw new UsageError(`${(error as Error).message}. See provision --help.`);
  }
  const { values, positionals } = parsed;
  if (values.help) return void console.log(HELP), 0;
  if (values.version) return void console.log(version()), 0;
  if (!values.inventory) throw new UsageError("--inventory FILE is required. See provision --help.");
  const forks = values.forks === undefined ? (values.check ? 50 : 10) : Number(values.forks);
  if (!Number.isInteger(forks) || forks < 1) throw new UsageError(`--forks must be a positive whole number (got ${values.forks}).`);

  const settings: RunSettings = {
    check: values.check ?? false,
    limit: values.limit,
    forks,
    tags: list(values.tags),
    skipTags: list(values["skip-tags"]),
    acceptNewHostKeys: values["accept-new-host-keys"] ?? false,
    breakLock: values["break-lock"] ?? false,
    knownHostsFile: values["known-hosts"],
    renderer: values.verbose ? "verbose" : process.stdout.isTTY ? "default" : "simple",
  };

  const inventory = loadInventory(values.inventory);
  if (positionals[0] === "status") return status(inventory, values.limit, settings);
  if (positionals[0] === "rollback") return rollback(inventory, values.limit, settings);
  const registry = new Registry();
  for (const module of builtinModules) registry.register(module, BUILT_IN);
  const playbooks = positionals.map(loadPlaybook);
  for (const [i, playbook] of playbooks.entries())
    for (const play of playbook.plays) for (const plugin of play.plugins) await registry.loadPlugin(plugin, playbookDir(positionals[i]));
  for (const playbook of playbooks) checkModules(playbook, registry);
  const plays = prepare(inventory, playbooks, registry, settings);
  if (!playbooks.length) plays.push(...prepare(inventory, [pingPlaybook()], registry, settings));

  const run = await execute(plays, settings);
  process.stdout.write(renderChanges(run, values.diff ?? false));
  process.stdout.write(renderSummary(run) + "\n");
  if (values.report) (values.report.toLowerCase().endsWith(".html") ? writeHtmlReport : writeJsonReport)(values.report, run);
  const retry = hostsToRetry(run);
  if (retry.length && positionals.length && (run.halted || values["retry-file"])) {
    const file = values["retry-file"] ?? `${basename(positionals[0]).replace(/\.ya?ml$/, "")}.retry`;
    writeRetryFile(file, retry);
    process.stdout.write(`${retry.length} host(s) to retry, listed in ${file}: rerun with --limit @${file}\n`);
  }
  return exitCode(run);
}

/** No playbook: a play with no tasks still connects and gathers host facts. */
function pingPlaybook() {
  return { file: "(reachability check)", source: null as never, plays: [{ name: "reachability check", hosts: "all", vars: {}, plugins: [], tasks: [], handlers: [], anyErrorsFatal: false, path: [] }] };
}

const isEntry = process.argv[1] && fileURLToPath(import.meta.url) === (await import("node:fs")).realpathSync(process.argv[1]);
if (isEntry) {
  main(process.argv.slice(2)).then(
    (code) => { process.exitCode = code; },
    (error) => {
      if (error instanceof UsageError) { console.error(`provision: ${error.message}`); process.exitCode = 64; return; }
      if (error instanceof ConfigError) { console.error(error.message); process.exitCode = 1; return; }
      if (error instanceof ModuleBug) console.error(`${error.message}\nThis is a bug in the module; please report it.\n${error.stack}`);
      else console.error(`provision: unexpected error: ${error?.stack ?? error}\nPlease report this.`);
      process.exitCode = 1;
    },
  );
}
