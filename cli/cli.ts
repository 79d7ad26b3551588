#!/usr/bin/env node
// The provision command: parse argv, load and validate everything, run, print, exit.
import { parseArgs } from "node:util";
import { readFileSync } from "node:fs";
import { basename, dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { loadInventory } from "../core/config/inventory.js";
import { execute, unmatchedHosts, type RunSettings } from "../core/run/run.js";
import { exitCode, hostsToRetry, renderChanges, renderSummary, writeJsonReport } from "../core/report/output.js";
import { writeRetryFile } from "../core/run/rollout.js";
import { writeHtmlReport } from "../core/report/html-report.js";
import { presentRun } from "../core/report/changes.js";
import { listrView } from "./progress.js";
import { ConfigError, ModuleBug, UsageError, quote } from "../core/errors.js";
import { rollback, status } from "../core/run/admin.js";
import { SshTransport } from "../core/transport/ssh.js";
import type { TransportFactory } from "../core/transport/transport.js";
import { openSecrets } from "../core/config/vault.js";
import { secret } from "./secret.js";
import { loadPlays } from "./load.js";
import { checkOutputFile } from "./output-file.js";
import { watchCommand } from "./watch.js";
import { agent } from "./agent.js";
import { enrol } from "./enrol.js";
import { fleetCommand, fleetStatusCommand, publishCommand, rolloutCommand } from "./fleet.js";
import { webcrypto } from "node:crypto";

// Debian 12's nodejs (18, what a Pi's agent runs on) has no global WebCrypto (Node 19 made it
// global), and age-encryption makes keys with it: a Pi enrolling by token makes its own age key.
if (!globalThis.crypto) Object.defineProperty(globalThis, "crypto", { value: webcrypto, configurable: true });

const HELP = `Usage: provision --inventory FILE [PLAYBOOK...] [options]
       provision status --inventory FILE [--limit PATTERN]
       provision rollback --inventory FILE --limit PATTERN [--break-lock]
       provision watch --inventory FILE [PLAYBOOK...] [--interval 60] [--json] [--metrics :9469]
       provision secret keygen|encrypt|edit ...   (see provision secret --help)
       provision enrol --inventory FILE --limit PATTERN   (pull mode: install the agent)
       provision agent [--config /etc/provision/agent.yaml]   (pull mode, on the Pi)
       provision fleet|publish|rollout|status --fleet ...   pull mode (see provision fleet --help)

Apply playbooks to the hosts of an inventory over SSH. Without a playbook,
connect to every host and report whether it is reachable.
"status" shows each host's last run (pending, committed, rolled back, reverted
by the host), an armed host-side revert and the lock holder; "rollback" restores
the files of the last run from the host's own backups (and reboots if needed);
"watch" audits continuously and reports changes and metrics (provision watch --help);
"secret" makes age keys and encrypted values (wifi_psk: !age |) for inventories
and playbooks.

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
1 a host failed, was rolled back or was unreachable, the input is invalid, or no host
matched (nothing was done), 64 usage error.`;

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
    } catch {
      /* try the next */
    }
  }
  return "unknown";
}

/** Writes after the run: a failure is reported (and fails the run), never a stack trace. */
function writeOutput(what: string, file: string, write: () => void): boolean {
  try {
    write();
    return true;
  } catch (error) {
    console.error(`provision: cannot write the ${what} to ${quote(file, 200)} (${(error as NodeJS.ErrnoException).code ?? (error as Error).message}).`);
    return false;
  }
}

function warn(message: string): void {
  console.error(`provision: warning: ${message}`);
}

function list(value: string | undefined): string[] {
  return value
    ? value
        .split(",")
        .map((s) => s.trim())
        .filter(Boolean)
    : [];
}

/** How the command line reaches a host: over SSH. */
export const sshTransport: TransportFactory = (target) => new SshTransport(target);

/** `transport`: how hosts are reached (SSH; tests wrap it to inject faults from outside the engine). */
export { checkOutputFile };

export async function main(argv: string[], transport: TransportFactory = sshTransport): Promise<number> {
  if (argv[0] === "secret") return secret(argv.slice(1));
  if (argv[0] === "watch") return watchCommand(argv.slice(1), transport);
  if (argv[0] === "agent") return agent(argv.slice(1));
  if (argv[0] === "enrol") return enrol(argv.slice(1));
  if (argv[0] === "fleet") return fleetCommand(argv.slice(1));
  if (argv[0] === "publish") return publishCommand(argv.slice(1));
  if (argv[0] === "rollout") return rolloutCommand(argv.slice(1));
  if (argv[0] === "status" && argv.includes("--fleet")) return fleetStatusCommand(argv);
  let parsed;
  try {
    parsed = parseArgs({ args: argv, options: OPTIONS, allowPositionals: true, strict: true });
  } catch (error) {
    throw new UsageError(`${(error as Error).message}. See provision --help.`);
  }
  const { values, positionals } = parsed;
  if (values.help) return (void console.log(HELP), 0);
  if (values.version) return (void console.log(version()), 0);
  if (!values.inventory) throw new UsageError("--inventory FILE is required. See provision --help.");
  const command = positionals[0] === "status" || positionals[0] === "rollback" ? positionals[0] : undefined;
  if (command && positionals.length > 1) throw new UsageError(`provision ${command} takes no playbook (got ${quote(positionals[1])}). See provision --help.`);
  if (command === "rollback" && !values.limit)
    throw new UsageError("rollback needs --limit HOST (or a pattern): it undoes the last run on exactly those hosts. See provision --help.");
  const forks = values.forks === undefined ? (values.check ? 50 : 10) : Number(values.forks);
  if (!Number.isInteger(forks) || forks < 1) throw new UsageError(`--forks must be a positive whole number (got ${quote(values.forks)}).`);
  // output files are checked before anything is loaded, let alone a host contacted
  if (values.report !== undefined) checkOutputFile("--report", values.report);
  if (values["retry-file"] !== undefined) checkOutputFile("--retry-file", values["retry-file"]);

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

  if (command) {
    // encrypted values are decrypted (in memory) before anything else is loaded: a missing or wrong key stops here
    const opened = await openSecrets(values.inventory, []);
    opened.warnings.forEach(warn);
    const inventory = loadInventory(values.inventory, opened.decrypted);
    return command === "status" ? status(inventory, values.limit, { ...settings, transport }) : rollback(inventory, values.limit, { ...settings, transport });
  }
  const { inventory, plays } = await loadPlays(values.inventory, positionals, settings);

  const unmatched = unmatchedHosts(inventory, plays, settings.limit);
  unmatched.forEach(warn);
  const nothingToDo = plays.every((p) => !p.hosts.length);

  const run = presentRun(await execute(plays, settings, transport, listrView(settings)));
  if (!nothingToDo) {
    process.stdout.write(renderChanges(run, values.diff ?? false));
    process.stdout.write(renderSummary(run) + "\n");
  }
  let written = true;
  const report = values.report;
  if (report) written &&= writeOutput("report", report, () => (report.toLowerCase().endsWith(".html") ? writeHtmlReport : writeJsonReport)(report, run));
  const retry = hostsToRetry(run);
  if (retry.length && positionals.length && (run.halted || values["retry-file"])) {
    const file = values["retry-file"] ?? `${basename(positionals[0]).replace(/\.ya?ml$/, "")}.retry`;
    if (writeOutput("retry file", file, () => writeRetryFile(file, retry)))
      process.stdout.write(`${retry.length} host(s) to retry, listed in ${file}: rerun with --limit @${file}\n`);
    else written = false;
  }
  if (nothingToDo) {
    console.error("provision: no hosts matched: nothing was done.");
    return 1;
  }
  return written ? exitCode(run) : 1;
}

const isEntry = process.argv[1] && fileURLToPath(import.meta.url) === (await import("node:fs")).realpathSync(process.argv[1]);
if (isEntry) {
  main(process.argv.slice(2)).then(
    (code) => {
      process.exitCode = code;
    },
    (error) => {
      if (error instanceof UsageError) {
        console.error(`provision: ${error.message}`);
        process.exitCode = 64;
        return;
      }
      if (error instanceof ConfigError) {
        console.error(error.message);
        process.exitCode = 1;
        return;
      }
      // a bug in a module shows where in the module it happened (its own stack), nothing of ours
      if (error instanceof ModuleBug)
        console.error(
          `provision: ${error.message}\nThis is a bug in the module; please report it to its author.${error.cause instanceof Error && error.cause.stack ? `\n${error.cause.stack}` : ""}`,
        );
      else console.error(`provision: unexpected error: ${error?.stack ?? error}\nPlease report this.`);
      process.exitCode = 1;
    },
  );
}
