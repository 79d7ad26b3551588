// Live progress as text: the lines the CLI shows while a run goes on, made from the
// run's events (core/run/results.ts). Secrets are masked here, where events become text.
import type { HostWork } from "../run/engine.js";
import type { HostEvent, HostResult } from "../run/results.js";
import type { PreparedPlay } from "../run/run.js";

/** One progress line for one event of one host. */
export function describeEvent(event: HostEvent): string {
  switch (event.type) {
    case "connecting":
      return "connecting";
    case "gathering":
      return event.locking ? "locking and gathering facts" : "gathering facts";
    case "lock_taken_over":
      return event.detail;
    case "unarmed_no_systemd":
      return "cannot arm (the host does not run systemd): its changes take effect only at a reboot; going on unarmed";
    case "arming":
      return `arming host-side revert before the first change (${event.timeoutSeconds}s unless renewed and confirmed)`;
    case "change":
      return `${event.task}: ${event.mask(event.change.summary)}`;
    case "connection_lost":
      return `${event.step}: ${event.error}; reconnecting for up to ${event.budgetSeconds}s`;
    case "reconnected":
      return `reconnected after ${event.afterSeconds}s; retrying: ${event.step}`;
    case "transport":
      return event.message;
    case "verifying":
      return "verifying";
    case "failed":
      return `failed: ${event.mask(event.reason)}; rolling back`;
    case "rolling_back_as_host":
      return "rolling back the way the host reverts: files, safe undo commands, a reboot";
    case "awaiting_host_revert":
      return `waiting for the host to revert and answer at ${event.address}`;
  }
}

export function playHeader(play: PreparedPlay, hosts: HostWork[], check: boolean): string {
  const lines = [`PLAY ${play.name} [${hosts.length} host${hosts.length === 1 ? "" : "s"}]${check ? " (check mode: nothing will be changed)" : ""}`];
  if (play.disruptive.length && !check) {
    const timeouts = [...new Set(hosts.map((h) => h.confirmTimeoutSeconds))];
    const guard = timeouts.every((t) => t === 0)
      ? "no host-side revert (confirm_timeout: 0)"
      : `each host reverts by itself unless the controller confirms within ${timeouts.filter((t) => t > 0).join("/")}s`;
    lines.push(`  disruptive: ${play.disruptive.map((n) => `"${n}"`).join(", ")}: can cut the management path; ${guard}`);
  }
  return lines.join("\n") + "\n";
}

export function batchHeader(index: number, count: number, hosts: HostWork[]): string {
  return `BATCH ${index + 1}/${count}: ${hosts.map((h) => h.name).join(", ")}\n`;
}

/** How a host ended, for its progress title: "changed", "failed — why". */
export function hostOutcome(result: HostResult, mask: (text: string) => string): string {
  return `${result.status.replace("_", " ")}${result.error ? ` — ${mask(result.error.replace(`${result.host}: `, ""))}` : ""}`;
}
