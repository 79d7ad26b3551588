// `provision watch`'s fleet metrics in Prometheus' text format (prom-client): one series
// per host and metric, set from each audit's HostState. The registry holds provision's
// metrics only (a node_exporter textfile must not repeat node_exporter's process_*);
// the HTTP endpoint adds the controller's own process metrics (processRegistry).
import { Counter, Gauge, Registry } from "prom-client";
import type { HostState } from "./watch.js";
import type { ErrorClass } from "../run/watch.js";

export class FleetMetrics {
  readonly registry = new Registry();
  private readonly lastClass = new Map<string, ErrorClass>();
  private readonly up = this.gauge("provision_host_up", "1 when the host answered its last audit over SSH, else 0.");
  private readonly drift = this.gauge("provision_host_drift", "1 when the host's last audit found changes to make (what --check calls drift), else 0.");
  private readonly pending = this.gauge("provision_changes_pending", "Changes the last audit of the host would make.");
  private readonly auditedAt = this.gauge("provision_last_audit_timestamp_seconds", "When the host's last audit started (Unix time).");
  private readonly duration = this.gauge("provision_audit_duration_seconds", "How long the host's last audit took, connecting included when it had to.");
  private readonly lastError = new Gauge({
    name: "provision_host_last_error",
    help: 'Always 1, labelled with the class of the host\'s last audit error: error_class="none" when it ended ok or in drift.',
    labelNames: ["host", "error_class"] as const,
    registers: [this.registry],
  });
  private readonly audits = new Counter({
    name: "provision_audits_total",
    help: "Audits done per host, by what they found (ok, drift, failed, unreachable).",
    labelNames: ["host", "status"] as const,
    registers: [this.registry],
  });

  private gauge(name: string, help: string): Gauge<"host"> {
    return new Gauge({ name, help, labelNames: ["host"] as const, registers: [this.registry] });
  }

  /** The series of a host as its latest audit left them. */
  update(state: HostState): void {
    const host = { host: state.host };
    this.up.set(host, state.up ? 1 : 0);
    this.drift.set(host, state.status === "drift" ? 1 : 0);
    this.pending.set(host, state.changesPending);
    this.auditedAt.set(host, state.auditedAt / 1000);
    this.duration.set(host, state.durationMs / 1000);
    const before = this.lastClass.get(state.host);
    if (before !== undefined && before !== state.errorClass) this.lastError.remove({ host: state.host, error_class: before });
    this.lastClass.set(state.host, state.errorClass);
    this.lastError.set({ host: state.host, error_class: state.errorClass }, 1);
    this.audits.inc({ host: state.host, status: state.status });
  }

  text(): Promise<string> {
    return this.registry.metrics();
  }
}

/**
 * The controller's own memory and CPU (Prometheus' process_* names), for the HTTP endpoint.
 * Not prom-client's default set: some of its gauges end in _total, which promtool rejects.
 */
export function processRegistry(): Registry {
  const registry = new Registry();
  new Gauge({
    name: "process_resident_memory_bytes",
    help: "Resident memory size in bytes.",
    registers: [registry],
    collect() {
      this.set(process.memoryUsage.rss());
    },
  });
  new Gauge({
    name: "nodejs_heap_used_bytes",
    help: "V8 heap in use, in bytes.",
    registers: [registry],
    collect() {
      this.set(process.memoryUsage().heapUsed);
    },
  });
  let counted = 0;
  new Counter({
    name: "process_cpu_seconds_total",
    help: "Total user and system CPU time spent in seconds.",
    registers: [registry],
    collect() {
      const { user, system } = process.cpuUsage();
      const now = (user + system) / 1e6;
      this.inc(now - counted);
      counted = now;
    },
  });
  new Gauge({ name: "process_start_time_seconds", help: "Start time of the process since the Unix epoch in seconds.", registers: [registry] }).set(
    Math.round(Date.now() / 1000 - process.uptime()),
  );
  return registry;
}
