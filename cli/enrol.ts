// provision enrol: a push run over SSH (the same engine) that makes hosts pull-mode
// devices: per host a new age key and NATS user (its own credentials), then the
// pull_agent module installs the agent's configuration, those credentials (0600), the
// fleet's verify key, provision's code and the systemd unit, and enables it. The device's
// public half (age recipient, NATS user key) is recorded in the fleet folder's
// devices/<name>.json once its host is enrolled, for provision publish.
//
// The fleet folder (--fleet-dir, else $PROVISION_FLEET_DIR, else ./fleet) is the one
// `provision fleet init` writes: fleet.yaml (servers), authority.json, signing.pub.
import { parseArgs } from "node:util";
import { spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, readFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { connectionTarget, loadInventory, selectHosts } from "../core/config/inventory.js";
import { BUILT_IN, Registry } from "../core/config/registry.js";
import { openSecrets } from "../core/config/vault.js";
import { ConfigError, UsageError, quote } from "../core/errors.js";
import { presentRun } from "../core/report/changes.js";
import { exitCode, renderChanges, renderSummary } from "../core/report/output.js";
import { execute, type PreparedPlay, type RunSettings } from "../core/run/run.js";
import { createDeviceKey } from "../core/pull/bundle.js";
import { issueDevice } from "../core/pull/credentials.js";
import { fleetDirOf, loadAuthority, loadFleet, readDevice, revokeUsers, signingPublicKey, writeDevice } from "./fleet-config.js";
import { DEVICE_PLAYBOOK_FORMAT, devicePlays } from "../core/pull/device-plays.js";
import { deviceName } from "../core/pull/subjects.js";
import { SshTransport } from "../core/transport/ssh.js";
import type { ConnectionTarget } from "../core/transport/transport.js";
import { builtinModules } from "../modules/index.js";
import { listrView } from "./progress.js";

const HELP = `Usage: provision enrol --inventory FILE --limit PATTERN [--fleet-dir DIR] [--no-code] [options]

Make the hosts pull-mode devices, over SSH while they are reachable: each gets its own
NATS credentials and age key, the agent's configuration, the fleet's verify key,
provision's code (in /opt/provision, run by Debian's nodejs) and the systemd unit
provision-agent, enabled and started. Enrolling a host again gives it new keys.

Options:
  -i, --inventory FILE        inventory YAML (required)
  -l, --limit PATTERN         the hosts to enrol (required)
      --fleet-dir DIR         the fleet folder (default: $PROVISION_FLEET_DIR, else ./fleet)
      --no-code               do not copy provision's code (it is installed otherwise)
      --known-hosts FILE      known_hosts file
      --accept-new-host-keys  trust and record keys of hosts not yet in known_hosts
  -v, --verbose               one line per event
  -h, --help                  show this help`;

const OPTIONS = {
  inventory: { type: "string", short: "i" },
  limit: { type: "string", short: "l" },
  "fleet-dir": { type: "string" },
  "no-code": { type: "boolean" },
  "known-hosts": { type: "string" },
  "accept-new-host-keys": { type: "boolean" },
  verbose: { type: "boolean", short: "v" },
  help: { type: "boolean", short: "h" },
} as const;

/** The packages provision needs at run time: its dependencies, and theirs, as installed. */
function runtimePackages(root: string): string[] {
  const found = new Set<string>();
  const visit = (pkgDir: string) => {
    const pkg = JSON.parse(readFileSync(join(pkgDir, "package.json"), "utf8")) as { dependencies?: Record<string, string>; optionalDependencies?: Record<string, string> };
    for (const name of Object.keys({ ...pkg.dependencies, ...pkg.optionalDependencies })) {
      // nested first (npm's layout when versions differ), then hoisted
      const candidates = [join(pkgDir, "node_modules", name), join(root, "node_modules", name)];
      const dir = candidates.find((c) => existsSync(join(c, "package.json")));
      if (!dir || found.has(dir)) continue;
      found.add(dir);
      visit(dir);
    }
  };
  visit(root);
  return [...found].map((d) => d.slice(root.length + 1));
}

/** provision's built code and its run-time packages as a .tar.gz (the same bytes for the same files). */
export function codeArchive(): { base64: string; sha256: string } {
  const root = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
  const parts = ["package.json", "dist/cli", "dist/core", "dist/modules", ...runtimePackages(root)];
  const tar = spawnSync(
    "tar",
    ["-cz", "--sort=name", "--owner=0", "--group=0", "--numeric-owner", "--mtime=2020-01-01", "--exclude=*.map", "--exclude=*.d.ts", "-f", "-", "-C", root, ...parts],
    { maxBuffer: 512 * 1024 * 1024, env: { ...process.env, GZIP: "-n" } },
  );
  if (tar.status !== 0) throw new ConfigError(`cannot pack provision's code from ${root}: ${tar.stderr.toString().trim()}. Build it (npm run build) or use --no-code.`);
  return { base64: tar.stdout.toString("base64"), sha256: createHash("sha256").update(tar.stdout).digest("hex") };
}

export const ENROL_PLAY = "enrol pull agents";

/** The play that installs the pull agent (the pull_agent module's arguments) on one host, over whichever transport runs it. */
export function agentInstallPlay(registry: Registry, args: Record<string, unknown>, target: ConnectionTarget): ReturnType<typeof devicePlays> {
  const doc = {
    format: DEVICE_PLAYBOOK_FORMAT,
    plays: [{ name: ENROL_PLAY, confirm_timeout: 300, tasks: [{ name: "pull agent", module: "pull_agent", args, diff: false }], handlers: [] }],
  };
  return devicePlays(doc, registry, target);
}

export async function enrol(argv: string[]): Promise<number> {
  let values;
  try {
    ({ values } = parseArgs({ args: argv, options: OPTIONS, strict: true }));
  } catch (error) {
    throw new UsageError(`${(error as Error).message}. See provision enrol --help.`);
  }
  if (values.help) return (void console.log(HELP), 0);
  if (!values.inventory) throw new UsageError("--inventory FILE is required. See provision enrol --help.");
  if (!values.limit) throw new UsageError("--limit PATTERN is required: enrol names the hosts it gives credentials to. See provision enrol --help.");
  const fleet = loadFleet(fleetDirOf(values["fleet-dir"]));
  const authority = loadAuthority(fleet.dir);
  const verifyKey = signingPublicKey(fleet.dir);

  const opened = await openSecrets(values.inventory, []);
  const inventory = loadInventory(values.inventory, opened.decrypted);
  const names = selectHosts(inventory, values.limit);
  if (!names.length) throw new ConfigError(`no hosts matched --limit ${quote(values.limit)} in ${inventory.file}. Check the pattern.`);
  names.forEach(deviceName);
  const settings: RunSettings = {
    check: false,
    breakLock: false,
    forks: 10,
    tags: [],
    skipTags: [],
    limit: values.limit,
    acceptNewHostKeys: values["accept-new-host-keys"] ?? false,
    knownHostsFile: values["known-hosts"],
    renderer: values.verbose ? "verbose" : process.stdout.isTTY ? "default" : "simple",
  };
  const registry = new Registry();
  for (const module of builtinModules) registry.register(module, BUILT_IN);
  const code = values["no-code"] ? undefined : codeArchive();

  const issued = new Map<string, { age_recipient: string; user: string }>();
  const play: PreparedPlay = { name: ENROL_PLAY, hosts: [], disruptive: [], anyErrorsFatal: false };
  let mask = (text: string) => text;
  for (const name of names) {
    const key = await createDeviceKey();
    const user = await issueDevice(authority, name);
    issued.set(name, { age_recipient: key.recipient, user: user.publicKey });
    const args = {
      device: name,
      servers: fleet.servers,
      credentials: user.creds,
      identity: key.identity,
      verify_key: verifyKey,
      ...(code ? { code_archive: code.base64, code_sha256: code.sha256 } : {}),
    };
    const prepared = agentInstallPlay(registry, args, connectionTarget(inventory.hosts.get(name)!, settings));
    const previous = mask;
    mask = (text) => prepared.mask(previous(text));
    play.hosts.push(...prepared.plays[0].hosts);
  }

  const run = presentRun(await execute([play], settings, (target) => new SshTransport(target), listrView(settings)));
  process.stdout.write(mask(renderChanges(run, false)));
  process.stdout.write(mask(renderSummary(run)) + "\n");
  const replaced: string[] = [];
  for (const host of run.hosts)
    if (host.status === "changed" || host.status === "ok") {
      const previous = readDevice(fleet.dir, host.host);
      if (previous && !previous.revoked && previous.user !== issued.get(host.host)!.user) replaced.push(previous.user);
      writeDevice(fleet.dir, host.host, issued.get(host.host)!);
      process.stdout.write(`${host.host}: enrolled; its public keys are in ${join(fleet.dir, "devices", `${host.host}.json`)}\n`);
    }
  // a device enrolled again runs with its new credentials: its old ones are of no use to anyone but a thief
  if (replaced.length) {
    const servers = await revokeUsers(fleet, replaced);
    process.stdout.write(`revoked the previous NATS user of ${replaced.length} re-enrolled device(s); servers that took the account: ${servers.join(", ")}\n`);
  }
  return exitCode(run);
}
