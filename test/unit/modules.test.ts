import { test } from "node:test";
import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import assert from "node:assert/strict";
import { withDenied } from "../../modules/dhcpcd_deny.js";
import dhcpcdDeny from "../../modules/dhcpcd_deny.js";
import kernelModule, { optionsLine, persistContent, staleParameters, type KernelModuleArgs } from "../../modules/kernel_module.js";
import apt, { installedPackages } from "../../modules/apt/index.js";
import reboot from "../../modules/reboot.js";
import type { PlanContext } from "../../core/module-api.js";

const context = (over: Partial<PlanContext> = {}): PlanContext => ({
  host: "pi",
  hostFacts: { bootId: "x", bootTime: 1000, systemd: true, hostname: "pi" },
  facts: {},
  rebootPending: false,
  rebootReasons: [],
  ...over,
});

test("dhcpcd_deny merges into the existing line without duplicates", () => {
  assert.equal(withDenied("hostname\ndenyinterfaces wlan1 eth0\n", ["eth0", "wlan0", "bond0"]), "hostname\ndenyinterfaces wlan1 eth0 wlan0 bond0\n");
  assert.equal(withDenied("hostname\n", ["eth0"]), "hostname\ndenyinterfaces eth0\n");
  assert.equal(withDenied(null, ["eth0"]), "denyinterfaces eth0\n");
  assert.equal(withDenied("denyinterfaces a\nx\ndenyinterfaces b\n", ["c"]), "denyinterfaces a b c\nx\n", "several lines fold into one");
});

test("dhcpcd_deny is a no-op when one line already covers the interfaces", () => {
  const args = { interfaces: ["eth0", "bond0"], path: "/etc/dhcpcd.conf" };
  assert.deepEqual(dhcpcdDeny.plan(args, { conf: { path: args.path, content: "denyinterfaces wlan1 eth0 bond0\n" } }, context()), []);
  const [change] = dhcpcdDeny.plan(args, { conf: { path: args.path, content: "denyinterfaces eth0\n" } }, context());
  assert.equal(change.kind === "file" && change.after, "denyinterfaces eth0 bond0\n");
});

const bonding: KernelModuleArgs = {
  name: "bonding",
  state: "present",
  persist: true,
  persist_file: "/etc/modules",
  options: { mode: "active-backup", primary: "eth0", miimon: 100 },
};
const file = (path: string, content: string | null, mtime = 500) => ({ path, content, mtime });

test("kernel_module renders options and keeps other lines of /etc/modules", () => {
  assert.equal(optionsLine(bonding), "options bonding mode=active-backup primary=eth0 miimon=100");
  assert.equal(persistContent(bonding, "# comment\ni2c-dev\n"), "# comment\ni2c-dev\nbonding\n");
  assert.equal(persistContent(bonding, "bonding\n"), "bonding\n");
  assert.equal(persistContent({ ...bonding, state: "absent" }, "i2c-dev\nbonding\n"), "i2c-dev\n");
});

test("kernel_module loads a module that is not loaded, options first", () => {
  const changes = kernelModule.plan(
    bonding,
    {
      modules: file("/proc/modules", "virtio_net 1 0 - Live 0x0\n"),
      persisted: file("/etc/modules", null),
      options: file("/etc/modprobe.d/bonding.conf", null),
      parameters: { path: "/sys/module/bonding/parameters", entries: null },
    },
    context(),
  );
  assert.deepEqual(
    changes.map((c) => c.summary),
    ["set bonding options in /etc/modprobe.d/bonding.conf", "load bonding at boot (/etc/modules)", "load bonding (modprobe)"],
  );
  assert.equal(changes[0].reboot, false, "not loaded yet: the options apply at modprobe");
  const load = changes[2] as { undo?: string[]; undoDisruptive?: boolean };
  assert.deepEqual(load.undo, ["modprobe", "-r", "bonding"]);
  assert.equal(load.undoDisruptive, true, "unloading may take down a bond holding the only address: a rollback that reboots skips it");
});

test("kernel_module reports 'reboot needed' when the loaded parameters differ", () => {
  const facts = {
    modules: file("/proc/modules", "bonding 200704 0 - Live 0x0\n"),
    persisted: file("/etc/modules", "bonding\n"),
    options: file("/etc/modprobe.d/bonding.conf", `${optionsLine(bonding)}\n`),
    parameters: { path: "/sys/module/bonding/parameters", entries: { miimon: "0\n", mode: "balance-rr 0\n" } },
  };
  const changes = kernelModule.plan(bonding, facts, context());
  assert.equal(changes.length, 1);
  assert.equal(changes[0].kind, "pending");
  assert.match(changes[0].summary, /reboot needed: .*mode=balance-rr 0 \(want active-backup\).*miimon=0 \(want 100\)/);
  const matching = { ...facts, parameters: { path: "", entries: { miimon: "100\n", mode: "active-backup 1\n", primary: "eth0\n" } } };
  assert.deepEqual(kernelModule.plan(bonding, matching, context()), []);
});

test("kernel_module: hidden parameters are judged by the options file's age", () => {
  const conf = (mtime: number) => file("/etc/modprobe.d/bonding.conf", "x", mtime);
  const hidden = { path: "", entries: {} };
  assert.deepEqual(staleParameters(bonding, hidden, conf(999), 1000), [], "written before boot: in effect");
  assert.deepEqual(staleParameters(bonding, hidden, conf(1001), 1000), ["options written after the module was loaded"]);
});

test("apt plans only missing packages, with an undo", () => {
  const installed = installedPackages({ code: 1, stdout: "ifupdown ii \nifenslave un \n" });
  assert.deepEqual([...installed], ["ifupdown"]);
  const [change] = apt.plan({ name: ["ifupdown", "ifenslave"], state: "present", update_cache: false }, { packages: { code: 1, stdout: "ifupdown ii \n" } }, context());
  assert.equal(change.kind, "command");
  assert.equal(change.summary, "install ifenslave");
  assert.deepEqual(change.kind === "command" && change.undo?.slice(-2), ["apt-purge", "ifenslave"]);
  assert.deepEqual(apt.plan({ name: "ifupdown", state: "present", update_cache: false }, { packages: { code: 0, stdout: "ifupdown ii \n" } }, context()), []);
});

test("apt's undo purges only the packages dpkg has installed, fully or partly (a failed install may have installed none)", () => {
  const [change] = apt.plan({ name: ["a", "b", "c", "d", "e"], state: "present", update_cache: false }, { packages: { code: 1, stdout: "" } }, context());
  const undo = change.kind === "command" ? change.undo! : [];
  const script = undo[undo.indexOf("-c") + 1];
  // dpkg as it would answer: a installed, b half-configured, c not installed, d config files only, e unknown
  const bin = mkdtempSync(join(tmpdir(), "apt-purge-"));
  try {
    writeFileSync(join(bin, "dpkg-query"), '#!/bin/sh\nfor p; do :; done\ncase $p in a) printf "ii ";; b) printf "iF ";; c) printf "un ";; d) printf "rc ";; *) exit 1;; esac\n', {
      mode: 0o755,
    });
    writeFileSync(join(bin, "apt-get"), '#!/bin/sh\necho "apt-get $*"\n', { mode: 0o755 });
    const env = { ...process.env, PATH: `${bin}:${process.env.PATH}` };
    assert.equal(execFileSync("sh", ["-c", script, "apt-purge", "a", "b", "c", "d", "e"], { env, encoding: "utf8" }), "apt-get purge -y -q -- a b\n");
    assert.equal(execFileSync("sh", ["-c", script, "apt-purge", "c", "e"], { env, encoding: "utf8" }), "", "nothing installed: nothing purged, and success");
  } finally {
    rmSync(bin, { recursive: true, force: true });
  }
});

test("reboot plans only when needed or always", () => {
  assert.deepEqual(reboot.plan({ when: "needed", timeout: 60 }, {}, context()), []);
  assert.equal(reboot.plan({ when: "needed", timeout: 60 }, {}, context({ rebootPending: true, rebootReasons: ["x"] }))[0].kind, "reboot");
  assert.equal(reboot.plan({ when: "always", timeout: 60 }, {}, context())[0].kind, "reboot");
});
