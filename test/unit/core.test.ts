import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createHmac, randomBytes } from "node:crypto";
import { quote, commandLine } from "../../core/transport/shell.js";
import { render } from "../../core/config/template.js";
import { gatherScript, parseGatherOutput } from "../../core/run/facts.js";
import { lastTransactionProbe, parseLastTransaction } from "../../core/run/transaction.js";
import { masker } from "../../core/config/secrets.js";
import { showChange, showHost, unifiedDiff } from "../../core/report/changes.js";
import { hostKeyVerifier } from "../../core/transport/known-hosts.js";
import { planTasks, type TaskInstance } from "../../core/run/engine.js";
import { defineModule, type CommandOutput, type DirState, type FileState, type ModuleDefinition, type Probe, type ProbeResult } from "../../core/module-api.js";
import bond from "../../modules/bond/index.js";
import type { BondArgs } from "../../modules/bond/model.js";
import { renderInterfaces } from "../../modules/bond/ifupdown.js";
import { networkStackFact } from "../../modules/network/stack.js";
import reboot from "../../modules/reboot.js";

test("quote survives injection attempts when run by a real shell", () => {
  const dir = mkdtempSync(join(tmpdir(), "quote-"));
  try {
    for (const evil of [`"; touch ${dir}/pwned`, `'; touch ${dir}/pwned; '`, `$(touch ${dir}/pwned)`, "`touch " + dir + "/pwned`", "a\nb", ""]) {
      const r = spawnSync("sh", ["-c", commandLine(["printf", "%s", evil])], { encoding: "utf8" });
      assert.equal(r.stdout, evil);
    }
    assert.equal(spawnSync("test", ["-e", `${dir}/pwned`]).status, 1, "nothing was executed");
    assert.equal(quote("eth0"), "eth0");
  } finally {
    rmSync(dir, { recursive: true });
  }
});

test("templates keep types for whole expressions and fail on undefined variables", () => {
  assert.deepEqual(render({ a: "{{ x }}", b: "ip {{ y.z }}/24" }, { x: [1, 2], y: { z: "10.0.0.1" } }), { a: [1, 2], b: "ip 10.0.0.1/24" });
  assert.throws(
    () => render({ list: ["ok", "{{ missing }}"] }, {}),
    (e: Error & { path?: unknown[] }) => e.message === 'undefined variable "missing"' && JSON.stringify(e.path) === '["list",1]',
  );
});

/** Runs a gather script with every external command it may start wrapped to log its name. */
function runGather(probes: Probe[]): { stdout: string; started: string[] } {
  const shims = mkdtempSync(join(tmpdir(), "gather-shims-"));
  const log = join(shims, "started.log");
  writeFileSync(log, "");
  for (const name of ["cat", "stat", "uname", "sh", "base64", "mktemp", "rm"]) {
    const real = spawnSync("sh", ["-c", `command -v ${name}`], { encoding: "utf8" }).stdout.trim();
    writeFileSync(join(shims, name), `#!/bin/sh\necho ${name} >> ${log}\nexec ${real} "$@"\n`, { mode: 0o755 });
  }
  const marker = `::m-${randomBytes(4).toString("hex")}::`;
  const r = spawnSync("/bin/sh", ["-c", gatherScript(probes, marker)], { encoding: "utf8", env: { PATH: `${shims}:/usr/bin:/bin` } });
  const started = readFileSync(log, "utf8").split("\n").filter(Boolean);
  rmSync(shims, { recursive: true });
  const parsed = parseGatherOutput(probes, r.stdout, marker);
  return { stdout: JSON.stringify(parsed), started };
}

test("the batched gather script round-trips files, directories and commands through a real shell, byte for byte", () => {
  const dir = mkdtempSync(join(tmpdir(), "gather-"));
  try {
    writeFileSync(join(dir, "a.conf"), "line one\nünïcode\n");
    writeFileSync(join(dir, "no-newline"), "x");
    writeFileSync(join(dir, "empty"), "");
    writeFileSync(join(dir, "blank lines"), "\n\n");
    mkdirSync(join(dir, "sub"));
    const probes: Probe[] = [
      { file: join(dir, "a.conf") },
      { file: join(dir, "missing") },
      { file: join(dir, "no-newline") },
      { file: join(dir, "empty") },
      { file: join(dir, "blank lines") },
      { dir: dir },
      { dir: join(dir, "nope") },
      { command: ["sh", "-c", "echo out; echo err >&2; exit 3"] },
      { command: ["sh", "-c", 'printf "%s|" "$#" "$@"', "name", "one arg", "it's"] },
      { command: ["sh", "-c", "if then fi"] },
      { command: ["uname", "-s"] },
      { command: ["sh", "-c", "printf 'no newline\n\n\nend'"] },
    ];
    const { stdout, started } = runGather(probes);
    const { hostFacts, results } = JSON.parse(stdout) as ReturnType<typeof parseGatherOutput>;
    const [file, missing, noNewline, empty, blankLines, listing, noDir, command, args, syntaxError, uname, trailing] = results as [
      Required<FileState>,
      FileState,
      FileState,
      FileState,
      FileState,
      DirState,
      DirState,
      CommandOutput,
      CommandOutput,
      CommandOutput,
      CommandOutput,
      CommandOutput,
    ];
    assert.equal(hostFacts.bootId, readFileSync("/proc/sys/kernel/random/boot_id", "utf8").trim());
    assert.equal(hostFacts.hostname, readFileSync("/proc/sys/kernel/hostname", "utf8").trim());
    assert.equal(hostFacts.bootTime, Number(/^btime (\d+)$/m.exec(readFileSync("/proc/stat", "utf8"))![1]));
    assert.equal(hostFacts.systemd, existsSync("/run/systemd/system"));
    assert.equal(file.content, "line one\nünïcode\n");
    assert.match(file.mode, /^0[0-7]{3}$/);
    assert.match(file.owner, /^\S+:\S+$/);
    assert.ok(Math.abs(file.mtime - Date.now() / 1000) < 60);
    assert.equal(missing.content, null);
    assert.equal(noNewline.content, "x");
    assert.equal(empty.content, "");
    assert.equal(blankLines.content, "\n\n");
    assert.equal(blankLines.mode, file.mode);
    assert.deepEqual(listing.entries, { "a.conf": "line one\nünïcode\n", "blank lines": "\n\n", empty: "", "no-newline": "x" });
    assert.equal(noDir.entries, null);
    assert.deepEqual(command, { code: 3, stdout: "out\n" });
    assert.deepEqual(args, { code: 0, stdout: "2|one arg|it's|" }, "a script probe sees only its own arguments");
    assert.equal(syntaxError.code, 2, "a script that does not parse fails alone");
    assert.deepEqual(uname, { code: 0, stdout: "Linux\n" });
    assert.deepEqual(trailing, { code: 0, stdout: "no newline\n\n\nend" });
    // one cat per file read, one stat for all files, scripts in subshells, nothing else
    assert.deepEqual(started.sort(), [...Array(8).fill("cat"), "stat", "uname"]);
  } finally {
    rmSync(dir, { recursive: true });
  }
});

test("secrets are masked in diffs, declared or well-known", () => {
  const mask = masker(["hunter22"]);
  const change = { kind: "file" as const, path: "/etc/x", before: "a\n", after: "a\nkey hunter22\nwpa-psk othersecret\n", summary: "update /etc/x with hunter22" };
  const shown = showChange(change, mask, true);
  assert.ok(!JSON.stringify(shown).includes("hunter22"));
  assert.ok(!JSON.stringify(shown).includes("othersecret"));
  assert.match(shown.diff!, /\+wpa-psk \*{8}/);
  assert.match(showChange(change, mask, false).diff!, /diff hidden/);
});

test("unified diff names the file and shows added and removed lines", () => {
  const d = unifiedDiff("/etc/dhcpcd.conf", "a\nb\n", "a\nc\n");
  assert.match(d, /^--- a\/etc\/dhcpcd.conf/m);
  assert.match(d, /^\+\+\+ b\/etc\/dhcpcd.conf/m);
  assert.match(d, /^-b$/m);
  assert.match(d, /^\+c$/m);
});

test("known_hosts: plain, hashed and [host]:port entries; mismatch and unknown are refused", () => {
  const dir = mkdtempSync(join(tmpdir(), "kh-"));
  try {
    const blob = (type: string, body: string) => {
      const t = Buffer.from(type);
      const len = Buffer.alloc(4);
      len.writeUInt32BE(t.length);
      return Buffer.concat([len, t, Buffer.from(body)]);
    };
    const key = blob("ssh-ed25519", "key-one"),
      other = blob("ssh-ed25519", "key-two");
    const salt = randomBytes(20);
    const hashed = `|1|${salt.toString("base64")}|${createHmac("sha1", salt).update("10.0.0.5").digest("base64")}`;
    const file = join(dir, "known_hosts");
    writeFileSync(file, `10.0.0.4 ssh-ed25519 ${key.toString("base64")}\n${hashed} ssh-ed25519 ${key.toString("base64")}\n[10.0.0.6]:2222 ssh-ed25519 ${key.toString("base64")}\n`);
    assert.equal(hostKeyVerifier({ file, acceptNew: false }, "10.0.0.4", 22).verify(key), true);
    assert.equal(hostKeyVerifier({ file, acceptNew: false }, "10.0.0.5", 22).verify(key), true, "hashed entry");
    assert.equal(hostKeyVerifier({ file, acceptNew: false }, "10.0.0.6", 2222).verify(key), true, "port entry");
    const mismatch = hostKeyVerifier({ file, acceptNew: true }, "10.0.0.4", 22);
    assert.equal(mismatch.verify(other), false, "a changed key is refused even with accept-new");
    assert.match(mismatch.rejection()!, /HOST KEY MISMATCH/);
    const unknown = hostKeyVerifier({ file, acceptNew: false }, "10.0.0.9", 22);
    assert.equal(unknown.verify(key), false);
    assert.match(unknown.rejection()!, /unknown host key.*--accept-new-host-keys/);
    assert.equal(hostKeyVerifier({ file, acceptNew: true }, "10.0.0.9", 22).verify(key), true);
    assert.equal(hostKeyVerifier({ file, acceptNew: false }, "10.0.0.9", 22).verify(key), true, "accepted key was recorded");
  } finally {
    rmSync(dir, { recursive: true });
  }
});

test("planning threads file contents and reboot needs from task to task", () => {
  const bondArgs = {
    name: "bond0",
    stack: "auto",
    mode: "active-backup",
    slaves: ["eth0", "eth1"],
    method: "static",
    address: "10.0.0.2/24",
    path: "/etc/network/interfaces",
    backup_path: "/etc/network/interfaces.orig",
    settle_timeout: 90,
  } satisfies BondArgs;
  const instance = (module: ModuleDefinition, args: unknown, name: string): TaskInstance => ({
    task: { name, module: module.name, rawArgs: args, tags: [], notify: [], diff: true, when: {}, path: [] },
    module,
    args,
    handler: false,
    conditions: [],
    mask: (s) => s,
  });
  const results = new Map<string, ProbeResult>([
    [JSON.stringify({ file: "/etc/network/interfaces" }), { path: "/etc/network/interfaces", content: "stock\n" }],
    [JSON.stringify({ file: "/etc/network/interfaces.orig" }), { path: "/etc/network/interfaces.orig", content: null }],
    [
      JSON.stringify(networkStackFact.probe),
      { code: 0, stdout: "service networking active\ninstalled ifup yes\ndefault-route eth0\nifupdown-config\nauto eth0\niface eth0 inet dhcp\n" },
    ],
    [JSON.stringify({ file: "/proc/net/bonding/bond0" }), { path: "/proc/net/bonding/bond0", content: null }],
  ]);
  for (const probe of Object.values(bond.facts(bondArgs)) as Probe[])
    if (!results.has(JSON.stringify(probe)))
      results.set(JSON.stringify(probe), "file" in probe ? { path: probe.file, content: null } : "dir" in probe ? { path: probe.dir, entries: null } : { code: 1, stdout: "" });
  const gathered = { hostFacts: { bootId: "b", bootTime: 0, systemd: true, hostname: "h" }, results };
  const planned = planTasks(
    [instance(bond, bondArgs, "bond"), instance(bond, bondArgs, "bond again"), instance(reboot, { when: "needed", timeout: 60 }, "reboot")],
    [],
    gathered,
    "h",
  );
  assert.equal(planned[0].changes.length, 2);
  assert.deepEqual(planned[1].changes, [], "the second task sees the file the first will write");
  assert.equal(planned[2].changes[0]?.kind, "reboot", "the bond change needs a reboot");
  assert.equal(renderInterfaces(bondArgs).includes("bond-slaves eth0 eth1"), true);
  assert.deepEqual(
    planned.map((p) => p.notes),
    [[], [], []],
  );

  const noting = defineModule({
    name: "noting",
    description: "notes",
    schema: {},
    facts: () => ({ f: { file: "/etc/network/interfaces" } }),
    plan: () => [],
    notes: (_, f) => [`saw ${f.f.content?.trim()} with secret s3cret`],
  });
  const mask = (s: string) => s.replaceAll("s3cret", "********");
  const [withNote] = planTasks([{ ...instance(noting, {}, "look"), mask }], [], gathered, "h");
  assert.deepEqual(withNote.notes, ["saw stock with secret s3cret"], "a module's notes are kept beside its changes, as data");
  const change = { kind: "file" as const, path: "/etc/x", before: null, after: "psk=s3cret\n", summary: "write s3cret" };
  const shown = showHost({
    host: "h",
    address: "h",
    status: "failed",
    error: "h: failed near s3cret",
    rebooted: false,
    notes: [],
    durationMs: 0,
    tasks: [
      {
        name: "look",
        module: "noting",
        handler: false,
        status: "failed",
        changes: [{ change, outcome: "unknown" }],
        diff: true,
        problems: ["saw s3cret"],
        notes: withNote.notes,
        mask,
      },
    ],
  });
  const text = JSON.stringify(shown);
  assert.equal(text.includes("s3cret"), false, "masked once, where the data becomes text: summary, diff, problems, notes, the host's error");
  assert.deepEqual(shown.tasks[0].notes, ["saw stock with secret ********"]);
  assert.equal(shown.tasks[0].changes[0].outcome, "unknown");
  assert.match(shown.tasks[0].changes[0].diff!, /\+psk=\*{8}/);
});

test("the last-transaction probe reads the host's record with shell builtins: none, committed, armed", () => {
  const base = mkdtempSync(join(tmpdir(), "last-"));
  const probe = (dir: string) => {
    const argv = [...lastTransactionProbe.command.slice(0, -1), dir];
    return parseLastTransaction(spawnSync(argv[0], argv.slice(1), { encoding: "utf8" }).stdout);
  };
  try {
    assert.equal(probe(base), null, "never provisioned");
    writeFileSync(join(base, "last"), "run-1\n");
    assert.deepEqual(probe(base), { id: "run-1", state: "unknown", armed: false }, "a record without its state");
    mkdirSync(join(base, "runs", "run-1"), { recursive: true });
    writeFileSync(join(base, "runs", "run-1", "state"), "committed\n");
    assert.deepEqual(probe(base), { id: "run-1", state: "committed", armed: false });
    writeFileSync(join(base, "armed"), "run-1\n");
    assert.deepEqual(probe(base), { id: "run-1", state: "committed", armed: true });
  } finally {
    rmSync(base, { recursive: true });
  }
});
