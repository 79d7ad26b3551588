// Pull mode's names on the broker: which bucket, key and subject carries what, and what
// a device may touch. The server enforces the device's part (credentials.ts turns
// DEVICE_PERMISSIONS into a scoped signing key's template), so these names are security.
//
//   KV bucket "desired"   key dev.<device>      the device's signed bundle      controller writes, device reads its own
//                         key sum.<device>      version + keyed digest of it     controller only (publish: "unchanged")
//                         key fleet.version     the last version handed out      controller only
//   KV bucket "rollouts"  key state.<rollout>   open | paused | aborted | done   controller writes, devices read
//                         key plan.<rollout>    the controller's record (head)   controller only
//                         key plan.<rollout>.c<n> its devices and results, 2,000 each  controller only
//                         key control.<rollout> pause / resume / abort asked     controller only
//                         key jwt.<device>      its user JWT, once enrolled by token  controller writes, the token's user reads
//   stream "REPORTS"      reports.<device>.<kind>  what a device reports        device publishes its own only
//   stream "ENROL"        enrol.<device>        a token's enrolment request   the token's user publishes its own only
import { ConfigError, quote } from "../errors.js";

export const DESIRED_BUCKET = "desired";
export const ROLLOUTS_BUCKET = "rollouts";
export const REPORTS_STREAM = "REPORTS";
export const REPORTS_SUBJECTS = "reports.*.*";
export const ENROL_STREAM = "ENROL";
export const ENROL_SUBJECTS = "enrol.*";

/** A NATS subject token that can also be a KV key part: no dots, spaces or wildcards. */
const DEVICE_NAME = /^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$/;

/** The device's name as it appears in its keys, subjects and user JWT; refused when it is not one token. */
export function deviceName(name: string): string {
  if (!DEVICE_NAME.test(name))
    throw new ConfigError(
      `device name ${quote(name)} cannot be used in pull mode: it becomes a NATS subject token, so it must be ` +
        `1-64 letters, digits, "-" or "_" starting with a letter or digit (no dots). Rename the host in the inventory.`,
    );
  return name;
}

export const rolloutId = (id: string): string => {
  if (!DEVICE_NAME.test(id)) throw new ConfigError(`rollout id ${quote(id)}: use 1-64 letters, digits, "-" or "_".`);
  return id;
};

export const desiredKey = (device: string): string => `dev.${deviceName(device)}`;
export const FLEET_VERSION_KEY = "fleet.version";
export const desiredRecordKey = (device: string): string => `sum.${deviceName(device)}`;
export const rolloutStateKey = (id: string): string => `state.${rolloutId(id)}`;
export const rolloutPlanKey = (id: string): string => `plan.${rolloutId(id)}`;
export const rolloutControlKey = (id: string): string => `control.${rolloutId(id)}`;

export const enrolSubject = (device: string): string => `enrol.${deviceName(device)}`;
export const enrolledKey = (device: string): string => `jwt.${deviceName(device)}`;
/** The device an enrolment request subject names (the server lets only that token's user publish it). */
export const enrolDevice = (subject: string): string | null => {
  const parts = subject.split(".");
  return parts.length === 2 && parts[0] === "enrol" && DEVICE_NAME.test(parts[1]) ? parts[1] : null;
};

export type ReportKind = "result" | "heartbeat" | "refused" | "audit" | "confirm";
export const reportSubject = (device: string, kind: ReportKind): string => `reports.${deviceName(device)}.${kind}`;

/** The device a report subject was published by: the server only lets a device publish under its own name. */
export function reportDevice(subject: string): string | null {
  const parts = subject.split(".");
  return parts.length === 3 && parts[0] === "reports" && DEVICE_NAME.test(parts[1]) ? parts[1] : null;
}

/** Replies to a device's requests (KV gets, publish acks) arrive under its own inbox only. */
export const deviceInbox = (device: string): string => `_INBOX_dev.${deviceName(device)}`;
/** The same for an enrolment token's user, before the device has credentials of its own. */
export const enrolInbox = (device: string): string => `_INBOX_enrol.${deviceName(device)}`;

/**
 * What every device may do, with `{{name()}}` standing for its own name (the name in its
 * user JWT). The server fills it in when the device connects; nothing else is allowed.
 * JetStream API subjects, exactly those a device needs:
 *   - a KV get of its own key: a direct get with the key's subject in the request subject
 *     ($JS.API.DIRECT.GET.<stream>.<subject>), which is why the buckets allow direct gets;
 *     the older $JS.API.STREAM.MSG.GET carries the key in the body and could read any key;
 *   - a KV "watch" of its own key without a consumer: a core subscription on the key's
 *     subject ($KV.desired.dev.<name>) says "changed", then a direct get reads it (10,000
 *     watchers would otherwise be 10,000 ephemeral consumers on the cluster's meta layer);
 *   - a publish acknowledged by the REPORTS stream: a plain publish with a reply inbox.
 */
export const DEVICE_PERMISSIONS = {
  pub: {
    allow: [
      `$JS.API.DIRECT.GET.KV_${DESIRED_BUCKET}.$KV.${DESIRED_BUCKET}.dev.{{name()}}`,
      `$JS.API.DIRECT.GET.KV_${ROLLOUTS_BUCKET}.$KV.${ROLLOUTS_BUCKET}.state.*`,
      "reports.{{name()}}.*",
    ],
  },
  sub: {
    allow: ["_INBOX_dev.{{name()}}.>", `$KV.${DESIRED_BUCKET}.dev.{{name()}}`, `$KV.${ROLLOUTS_BUCKET}.state.*`],
  },
} as const;

/**
 * What a one-time enrolment token's user may do (its name is the device's): publish its
 * enrolment request (acknowledged by the ENROL stream) and read the user JWT the
 * controller answers with. Nothing of the fleet's desired state, rollouts or reports.
 */
export const ENROLMENT_PERMISSIONS = {
  pub: {
    allow: ["enrol.{{name()}}", `$JS.API.DIRECT.GET.KV_${DESIRED_BUCKET}.$KV.${DESIRED_BUCKET}.jwt.{{name()}}`],
  },
  sub: {
    allow: ["_INBOX_enrol.{{name()}}.>", `$KV.${DESIRED_BUCKET}.jwt.{{name()}}`],
  },
} as const;
