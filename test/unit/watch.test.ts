// provision watch's pure parts: what a host's state keeps (bounded, masked), what counts as
// a change, the table, the metrics' names and values, the --metrics address, error classes.
import { test } from "node:test";
import assert from "node:assert/strict";
import type { Change } from "../../core/module-api.js";
import type { HostResult } from "../../core/run/results.js";
import type { Audit } from "../../core/run/watch.js";
import { classify } from "../../core/run/watch.js";
import { MAX_PENDING_KEPT, changed, changeLine, hostState, jsonLine, renderTable } from "../../core/report/watch.js";
import { FleetMetrics } from "../../core/report/metrics.js";
import { listenAddress } from "../../cli/watch.js";
import { LostConnection, UnreachableError, UsageError } from "../../core/errors.js";

const file = (path: string, after: string): Change => ({ kind: "file", path, before: "old secret-psk\n", after, summary: `write ${path} with secret-psk` });

function audit(status: HostResult["status"], changes: Change[] = [], extra: Partial<Audit> = {}): Audit {
  return {
    result: {
      host: "pi1",
      address: "10.0.0.1",
      status,
      rebooted: false,
      notes: [],
      durationMs: 420,
      tasks: [
        {
          name: "t",
          module: "m",
          handler: false,
          status: changes.length ? "changed" : "ok",
          changes: changes.map((change) => ({ change })),
          diff: true,
          problems: [],
          notes: [],
          mask: (t) => t.replaceAll("secret-psk", "********"),
        },
      ],
    },
    errorClass: "none",
    startedAt: Date.UTC(2026, 11, 5, 14, 0, 0),
    ...extra,
  };
}

test("a host's state keeps summaries only, masked and bounded, with the exact count", () => {
  const big = "x".repeat(1_000_000);
  const changes = Array.from({ length: 500 }, (_, i) => file(`/etc/f${i}`, big));
  const state = hostState(audit("drift", changes));
  assert.equal(state.changesPending, 500);
  assert.equal(state.pending.length, MAX_PENDING_KEPT);
  assert.equal(state.pending[0], "~ write /etc/f0 with ********");
  assert.ok(JSON.stringify(state).length < 2000, "no file contents kept");
  assert.doesNotMatch(JSON.stringify(state), /secret-psk/);
});

test("only a different status, error class or pending list is a change", () => {
  const ok = hostState(audit("ok"));
  assert.ok(changed(undefined, ok), "the first audit is told");
  assert.ok(!changed(ok, hostState(audit("ok", [], { startedAt: Date.now() }))), "a later identical audit is not");
  const drift = hostState(audit("drift", [file("/etc/a", "a\n")]));
  assert.ok(changed(ok, drift));
  assert.ok(changed(drift, hostState(audit("drift", [file("/etc/b", "b\n")]))), "other pending changes");
  const lost = hostState({ ...audit("unreachable"), errorClass: "connection_lost" });
  const refused = hostState({ ...audit("unreachable"), errorClass: "refused" });
  assert.equal(lost.up, false);
  assert.ok(changed(lost, refused), "another error class");
});

test("JSON line, plain line and table", () => {
  const before = hostState(audit("ok"));
  const drift = hostState(audit("drift", [file("/etc/a", "a\n")]));
  assert.deepEqual(JSON.parse(jsonLine(drift, before)), {
    time: "2026-12-05T14:00:00.000Z",
    event: "host",
    host: "pi1",
    status: "drift",
    previous: "ok",
    up: true,
    changes_pending: 1,
    pending: ["~ write /etc/a with ********"],
    error_class: "none",
    duration_ms: 420,
  });
  assert.equal(changeLine(drift, before), "14:00:00 pi1: drift: 1 change pending: ~ write /etc/a with ******** (was ok)");
  const other = { ...hostState(audit("ok")), host: "pi2" };
  const table = renderTable([other, drift], 3, drift.auditedAt + 5000, 40, 60).split("\n");
  assert.equal(table[0], "provision watch: 3 host(s), audit every 60s: 1 ok, 1 drift, 0 failed, 0 unreachable, 1 not audited yet");
  assert.match(table[2], /^pi1 +drift +1 +5s ago +0\.42s +~ write \/etc\/a with \*{8}$/, "drift first");
  assert.match(table[3], /^pi2 +ok +0 /);
  const many = Array.from({ length: 30 }, (_, i) => ({ ...other, host: `pi${i}` }));
  const cut = renderTable(many, 30, 0, 10, 60).split("\n");
  assert.equal(cut.length, 8, "fits the terminal");
  assert.equal(cut.at(-1), "… 25 more host(s)");
});

test("metrics: Prometheus names, one error_class series per host, counters end in _total", async () => {
  const metrics = new FleetMetrics();
  metrics.update(hostState(audit("drift", [file("/etc/a", "a\n"), file("/etc/b", "b\n")])));
  metrics.update(hostState({ ...audit("unreachable"), errorClass: "refused" }));
  const text = await metrics.text();
  const line = (re: RegExp) => assert.match(text, re);
  line(/^# TYPE provision_host_up gauge$/m);
  line(/^provision_host_up\{host="pi1"\} 0$/m);
  line(/^provision_host_drift\{host="pi1"\} 0$/m);
  line(/^provision_changes_pending\{host="pi1"\} 0$/m);
  line(/^provision_last_audit_timestamp_seconds\{host="pi1"\} 1796479200$/m);
  line(/^provision_audit_duration_seconds\{host="pi1"\} 0\.42$/m);
  line(/^provision_host_last_error\{host="pi1",error_class="refused"\} 1$/m);
  assert.doesNotMatch(text, /^provision_host_last_error\{[^}]*error_class="none"/m, "the old class's series is gone");
  line(/^# TYPE provision_audits_total counter$/m);
  line(/^provision_audits_total\{host="pi1",status="drift"\} 1$/m);
  line(/^provision_audits_total\{host="pi1",status="unreachable"\} 1$/m);
});

test("--metrics: a port alone listens on loopback; an address must be given to listen wider", () => {
  assert.deepEqual(listenAddress(":9469"), { host: "127.0.0.1", port: 9469 });
  assert.deepEqual(listenAddress("0.0.0.0:9469"), { host: "0.0.0.0", port: 9469 });
  assert.deepEqual(listenAddress("[::1]:9469"), { host: "::1", port: 9469 });
  for (const bad of ["9469", ":99999", "::9469", "host:port"]) assert.throws(() => listenAddress(bad), UsageError, bad);
});

test("error classes from the connection's errors", () => {
  const cause = (props: object) => Object.assign(new Error("x"), props);
  const unreachable = (message: string, c?: object) => new UnreachableError("pi1", message, { cause: c && cause(c) });
  assert.equal(classify(unreachable("unreachable at a:22: connection refused", { code: "ECONNREFUSED" })), "refused");
  assert.equal(classify(unreachable("unreachable: no route", { code: "EHOSTUNREACH" })), "no_route");
  assert.equal(classify(unreachable("auth failed", { level: "client-authentication" })), "auth");
  assert.equal(classify(unreachable("no answer", { message: "Timed out while waiting for handshake" })), "timeout");
  assert.equal(classify(unreachable("the host key of a:22 does not match known_hosts")), "host_key");
  assert.equal(classify(new LostConnection("pi1", "lost connection: gone")), "connection_lost");
  assert.equal(classify(new Error("other")), "audit_failed");
});
