// What a bundle's playbook carries: one device's desired state, ready for the same engine as
// a push run. The controller (provision publish) makes it from the inventory and the
// playbooks; the agent turns it back into an inventory of one host and playbooks, and runs
// them through core/run with the local transport.
//
//   {"format": "provision-desired/1", "host": NAME, "groups": [...], "vars": {...},
//    "playbooks": [{"file": "site.yaml", "plays": [<the playbook's plays as parsed>]}],
//    "secrets": [<plaintexts that must be masked>]}
//
// `vars` are the host's inventory variables, resolved (groups merged, !age values
// decrypted); `secrets` lists the plaintexts the inventory and playbooks held encrypted.
// sealBundle takes every string holding one of them out and encrypts it to the device's
// key (so `secrets` itself, and vars such as wifi_psk, travel encrypted).
import { ConfigError } from "../errors.js";

export const DESIRED_FORMAT = "provision-desired/1";

export interface DesiredState {
  format: typeof DESIRED_FORMAT;
  host: string;
  groups: string[];
  vars: Record<string, unknown>;
  playbooks: { file: string; plays: unknown[] }[];
  secrets: string[];
}

export function desiredState(host: { name: string; groups: string[]; vars: Record<string, unknown> }, playbooks: DesiredState["playbooks"], secrets: string[]): DesiredState {
  return { format: DESIRED_FORMAT, host: host.name, groups: host.groups, vars: host.vars, playbooks, secrets };
}

/** The bundle's playbook as desired state; a wrong shape is a ConfigError naming what is missing. */
export function readDesiredState(doc: unknown, device: string): DesiredState {
  const d = doc as Partial<DesiredState> | null;
  if (!d || typeof d !== "object" || d.format !== DESIRED_FORMAT)
    throw new ConfigError(
      `the bundle's playbook is not provision desired state (format ${JSON.stringify(d?.format ?? null)}, expected "${DESIRED_FORMAT}"). Publish it with this version of provision.`,
    );
  if (d.host !== device) throw new ConfigError(`the bundle's desired state is for host ${JSON.stringify(d.host)}, not for ${JSON.stringify(device)}.`);
  if (!Array.isArray(d.groups) || !d.vars || typeof d.vars !== "object" || !Array.isArray(d.playbooks) || !Array.isArray(d.secrets))
    throw new ConfigError("the bundle's desired state lacks groups, vars, playbooks or secrets.");
  for (const p of d.playbooks)
    if (!p || typeof p.file !== "string" || !Array.isArray(p.plays)) throw new ConfigError("each playbook of the bundle's desired state needs a file name and its plays.");
  return d as DesiredState;
}
