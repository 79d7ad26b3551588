// The pull agent's pure parts: its state file, its configuration, reading a bundle's
// plays, what a run's result is reported as, and the pull_agent module's plan.
import { after, test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { AgentState } from "../../cli/agent-state.js";
import { loadAgentConfig, outcomeOf } from "../../cli/agent.js";
import { BUILT_IN, Registry } from "../../core/config/registry.js";
import { DEVICE_PLAYBOOK_FORMAT, devicePlays } from "../../core/pull/device-plays.js";
import { builtinModules } from "../../modules/index.js";
import pullAgent from "../../modules/pull_agent/index.js";
import type { ShownRun } from "../../core/report/changes.js";

const made: string[] = [];
const tmp = () => {
  made.push(mkdtempSync(join(tmpdir(), "provision-agent-unit-")));
  return made.at(-1)!;
};
after(() => {
  for (const dir of made) rmSync(dir, { recursive: true, force: true });
});
const target = { name: "pi1", address: "localhost", port: 22, user: "root", become: false, connectTimeoutSeconds: 10, hostKeys: { file: "/dev/null", acceptNew: false } };
const registry = () => {
  const r = new Registry();
  for (const m of builtinModules) r.register(m, BUILT_IN);
  return r;
};

test("the agent's state: written atomically with mode 0600, read back after a restart; a corrupt file is a clear error", () => {
  const dir = join(tmp(), "agent");
  const state = AgentState.open(dir);
  assert.equal(state.tried, undefined);
  state.record({ version: 7, phase: "applying", at: "2026-12-05T14:00:00Z" });
  state.record({ version: 7, phase: "done", outcome: "reverted", at: "2026-12-05T14:01:00Z" });
  const file = join(dir, "state.json");
  assert.equal(statSync(file).mode & 0o777, 0o600);
  assert.deepEqual(AgentState.open(dir).tried, { version: 7, phase: "done", outcome: "reverted", at: "2026-12-05T14:01:00Z" });
  writeFileSync(file, '{"tried": {');
  assert.throws(() => AgentState.open(dir), /state\.json is not JSON.*remove it/);
});

test("the agent's state keeps the bundle being applied, as signed, 0600, for a run that goes on after a reboot", () => {
  const dir = join(tmp(), "agent");
  const state = AgentState.open(dir);
  assert.equal(state.savedBundle(), null);
  state.saveBundle(new TextEncoder().encode('{"format":"provision-bundle/1"}'));
  const resume = { runId: "20261205T220000-abcdef", play: 0, task: 4, notified: [] };
  state.record({ version: 8, phase: "reboot-pending", runId: resume.runId, resume, at: "2026-12-05T22:00:00Z" });
  const again = AgentState.open(dir);
  assert.deepEqual(again.tried, { version: 8, phase: "reboot-pending", runId: resume.runId, resume, at: "2026-12-05T22:00:00Z" });
  assert.equal(Buffer.from(again.savedBundle()!).toString(), '{"format":"provision-bundle/1"}');
  assert.equal(statSync(join(dir, "bundle")).mode & 0o777, 0o600);
});

test("the agent's state keeps the version the device runs: a failed or reverted one after it leaves it", () => {
  const dir = join(tmp(), "agent");
  const state = AgentState.open(dir);
  state.record({ version: 3, phase: "done", outcome: "applied", at: "2026-12-05T22:00:00Z" });
  state.record({ version: 4, phase: "applying", at: "2026-12-05T22:01:00Z" });
  state.record({ version: 4, phase: "done", outcome: "reverted", at: "2026-12-05T22:02:00Z" });
  assert.equal(AgentState.open(dir).applied, 3);
  // a state file written before `applied` was kept
  writeFileSync(join(dir, "state.json"), JSON.stringify({ tried: { version: 5, phase: "done", outcome: "applied", at: "x" } }));
  assert.equal(AgentState.open(dir).applied, 5);
});

test("the agent's configuration: required keys, absolute paths, and a device name that is one subject token, with file:line:column", () => {
  const dir = tmp();
  const file = join(dir, "agent.yaml");
  const good = "device: pi1\nservers: [10.0.0.1:4222]\ncredentials: /etc/provision/agent.creds\nidentity: /etc/provision/agent.age\nverify_key: /etc/provision/fleet.pub\n";
  writeFileSync(file, good);
  const c = loadAgentConfig(file);
  assert.deepEqual([c.device, c.servers, c.stateDir, c.plugins], ["pi1", ["10.0.0.1:4222"], "/var/lib/provision/agent", []]);
  writeFileSync(file, good.replace("device: pi1", "device: pi.1"));
  assert.throws(() => loadAgentConfig(file), /agent\.yaml:1:\d+: device name "pi\.1" cannot be used/);
  writeFileSync(file, good.replace("/etc/provision/agent.age", "agent.age"));
  assert.throws(() => loadAgentConfig(file), /agent\.yaml:4:\d+/);
});

test("a bundle's plays become the engine's prepared plays; wrong format, unknown modules and invalid arguments are refused", () => {
  const play = (tasks: unknown[]) => ({ format: DEVICE_PLAYBOOK_FORMAT, plays: [{ name: "site", confirm_timeout: 120, tasks, handlers: [] }] });
  const { plays } = devicePlays(play([{ name: "bonding", module: "kernel_module", args: { name: "bonding" } }]), registry(), target);
  assert.equal(plays.length, 1);
  assert.equal(plays[0].hosts[0].confirmTimeoutSeconds, 120);
  assert.deepEqual(plays[0].hosts[0].tasks[0].args, { name: "bonding", state: "present", persist: true }, "the agent's schema defaults applied");
  assert.throws(() => devicePlays({ format: "other", plays: [] }, registry(), target), /not in the format "provision-device-playbook\/1"/);
  assert.throws(() => devicePlays(play([{ name: "x", module: "nope", args: {} }]), registry(), target), /module "nope" \(task "x"\), which this agent does not have/);
  assert.throws(() => devicePlays(play([{ name: "x", module: "kernel_module", args: { nom: 1 } }]), registry(), target), /invalid arguments for module kernel_module/);
});

test("what a run is reported as: applied, failed (rolled back by the agent), reverted (by the host, or not confirmed)", () => {
  const run = (status: string, extra: Record<string, unknown> = {}) => ({ hosts: [{ host: "pi1", status, notes: [], ...extra }] }) as unknown as ShownRun;
  assert.deepEqual(outcomeOf(run("changed")), { outcome: "applied", detail: undefined });
  assert.deepEqual(outcomeOf(run("ok")).detail, "no changes");
  assert.equal(outcomeOf(run("rolled_back", { error: "verification failed" })).outcome, "failed");
  assert.equal(outcomeOf(run("rolled_back", { rolledBackBy: "host" })).outcome, "reverted");
  assert.equal(outcomeOf(run("rolled_back"), true).outcome, "reverted");
  assert.equal(outcomeOf(run("unreachable", { error: "x" })).outcome, "failed");
});

test("pull_agent: a new host gets its secrets 0600, the unit, and the agent enabled; an enrolled one nothing; a changed configuration restarts it", () => {
  const args = {
    device: "pi1",
    servers: ["10.0.0.1:4222"],
    credentials: "-----BEGIN NATS USER JWT-----\nx\n",
    identity: "AGE-SECRET-KEY-1ABC",
    verify_key: "-----BEGIN PUBLIC KEY-----\nk\n",
    plugins: [],
  };
  const file = (path: string, content: string | null) => ({ path, content });
  const fresh = {
    config: file("/etc/provision/agent.yaml", null),
    credentials: file("/etc/provision/agent.creds", null),
    identity: file("/etc/provision/agent.age", null),
    verifyKey: file("/etc/provision/fleet.pub", null),
    unit: file("/etc/systemd/system/provision-agent.service", null),
    enabled: { code: 1, stdout: "disabled\n" },
  };
  const context = { host: "pi1", hostFacts: { bootId: "b", bootTime: 0, systemd: true, hostname: "pi1" }, facts: {}, rebootPending: false, rebootReasons: [] };
  const changes = pullAgent.plan(args, fresh as never, context);
  const files = changes.filter((c) => c.kind === "file");
  assert.deepEqual(
    files.map((c) => [c.path, c.mode]),
    [
      ["/etc/provision/agent.creds", "0600"],
      ["/etc/provision/agent.age", "0600"],
      ["/etc/provision/fleet.pub", "0644"],
      ["/etc/provision/agent.yaml", "0644"],
      ["/etc/systemd/system/provision-agent.service", "0644"],
    ],
  );
  assert.equal(files.at(-1)!.after, readFileSync(new URL("../../modules/pull_agent/provision-agent.service", import.meta.url), "utf8"));
  assert.deepEqual(
    changes.filter((c) => c.kind === "command").map((c) => c.argv),
    [
      ["systemctl", "daemon-reload"],
      ["systemctl", "enable", "--now", "provision-agent.service"],
    ],
  );
  assert.deepEqual(pullAgent.secrets!(args), [args.credentials, args.identity]);
  const enrolled = Object.fromEntries(
    Object.entries(fresh).map(([k, v]) => [k, "path" in v ? { ...v, content: files.find((c) => c.path === v.path)!.after } : { code: 0, stdout: "enabled\n" }]),
  );
  assert.deepEqual(pullAgent.plan(args, enrolled as never, context), []);
  const moved = pullAgent.plan({ ...args, servers: ["10.0.0.2:4222"] }, enrolled as never, context);
  assert.deepEqual(
    moved.map((c) => c.summary),
    ["configure the pull agent", "restart provision-agent.service"],
  );
});
