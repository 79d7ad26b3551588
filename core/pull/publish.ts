// What `provision publish` and `provision rollout start` put into a bundle: per device,
// the plays exactly as a push run prepared them for that host (core/run/run.ts prepare:
// variables resolved, templates rendered, arguments validated), as data an agent hands
// back to the engine; and whether that content differs from what the device has.
//
//   {"format": "provision-device-playbook/1",
//    "plays": [{"name", "confirm_timeout", "tasks": [{"name", "module", "args", "when"?, "notify"?, "tags"?, "diff"?}], "handlers": […]}]}
//
// "Unchanged" cannot be read off the stored bundle (its secrets are encrypted anew every
// time), so the controller keeps, beside it, a keyed digest of the clear content: an
// HMAC whose key is derived from the fleet's signing key, so that the digest of a
// low-entropy secret cannot be tested against guesses by whoever reads the broker.
import { createHash, createHmac } from "node:crypto";
import type { PreparedPlay } from "../run/run.js";
import type { TaskInstance } from "../run/engine.js";
import { ConfigError, quote } from "../errors.js";
import { deviceName } from "./subjects.js";

export const DEVICE_PLAYBOOK_FORMAT = "provision-device-playbook/1";

export interface DeviceTask {
  name: string;
  module: string;
  args: unknown;
  when?: Record<string, string[]>;
  notify?: string[];
  tags?: string[];
  diff?: false;
}

export interface DevicePlay {
  name: string;
  confirm_timeout: number;
  tasks: DeviceTask[];
  handlers: DeviceTask[];
}

export interface DevicePlaybook {
  format: typeof DEVICE_PLAYBOOK_FORMAT;
  plays: DevicePlay[];
}

export interface RenderedDevice {
  playbook: DevicePlaybook;
  /** The secret values in it (encrypted to the device in its bundle). */
  secrets: string[];
}

function task(i: TaskInstance): DeviceTask {
  const t = i.task;
  return {
    name: t.name,
    module: t.module,
    args: i.args,
    ...(Object.keys(t.when).length ? { when: t.when } : {}),
    ...(t.notify.length ? { notify: t.notify } : {}),
    ...(t.tags.length ? { tags: t.tags } : {}),
    ...(t.diff ? {} : { diff: false as const }),
  };
}

/** Each device's playbook, in the order of the plays; a device in no play is absent. */
export function renderDevicePlaybooks(plays: PreparedPlay[]): Map<string, RenderedDevice> {
  const out = new Map<string, RenderedDevice>();
  for (const play of plays)
    for (const host of play.hosts) {
      deviceName(host.name);
      const device = out.get(host.name) ?? out.set(host.name, { playbook: { format: DEVICE_PLAYBOOK_FORMAT, plays: [] }, secrets: [] }).get(host.name)!;
      device.playbook.plays.push({ name: play.name, confirm_timeout: host.confirmTimeoutSeconds, tasks: host.tasks.map(task), handlers: host.handlers.map(task) });
      for (const i of [...host.tasks, ...host.handlers]) for (const s of i.secrets ?? []) if (s && !device.secrets.includes(s)) device.secrets.push(s);
    }
  return out;
}

/** The key of content digests, derived from the fleet's signing key (PEM). */
export const digestKey = (signingKeyPem: string): Buffer => createHash("sha256").update("provision publish digest\n").update(signingKeyPem).digest();

/** A keyed digest of a device's clear content: equal exactly when the playbook and its secrets are. */
export function contentDigest(key: Buffer, device: RenderedDevice): string {
  return createHmac("sha256", key).update(JSON.stringify(device.playbook)).update("\0").update(JSON.stringify(device.secrets)).digest("base64url");
}

/** What the controller keeps beside a device's bundle (KV desired/sum.<device>). */
export interface PublishedRecord {
  version: number;
  digest: string;
  rollout?: string;
  at: string;
}

export type PublishAction = "new" | "changed" | "unchanged";

export interface DevicePlan {
  device: string;
  action: PublishAction;
  /** The version it gets (the one it has when unchanged). */
  version: number;
}

/**
 * What to publish: a device whose stored bundle is the recorded one and whose content
 * digest is the same is unchanged; every other gets the next fleet version: above
 * `fleetVersion` (the last one handed out) and above any version the device has seen,
 * so one version names one publish across the fleet and only grows on every device.
 */
export function planPublish(devices: { device: string; digest: string; stored?: number; record?: PublishedRecord }[], fleetVersion = 0): DevicePlan[] {
  const highest = (d: (typeof devices)[number]) => Math.max(d.stored ?? 0, d.record?.version ?? 0);
  const unchanged = (d: (typeof devices)[number]) => d.record !== undefined && d.stored === d.record.version && d.record.digest === d.digest;
  const next = 1 + Math.max(fleetVersion, ...devices.map(highest));
  return devices.map((d) =>
    unchanged(d)
      ? { device: d.device, action: "unchanged", version: d.record!.version }
      : { device: d.device, action: d.stored === undefined && !d.record ? "new" : "changed", version: next },
  );
}

/** "30d", "12h", "90m" → ms: how long a bundle stays valid. */
export function parseDuration(text: string, what: string): number {
  const m = /^(\d+)\s*(s|m|h|d)$/.exec(text.trim());
  if (!m || Number(m[1]) < 1) throw new ConfigError(`${what}: ${quote(text)} is not a duration; write a whole number and a unit: 90s, 15m, 12h or 30d.`);
  return Number(m[1]) * { s: 1_000, m: 60_000, h: 3_600_000, d: 86_400_000 }[m[2] as "s" | "m" | "h" | "d"];
}
