// The bond for NetworkManager: keyfiles in /etc/NetworkManager/system-connections (root,
// 0600), one bond profile and one port profile per slave, written with the property names
// both NM 1.42 (Bookworm) and 1.52 (Trixie) read. Profiles that would fight for a slave are
// taken out of the way: autoconnect off in /etc, their netplan source moved aside for /run.
import { createHash } from "node:crypto";
import { PlanError, fileChange, type Change, type DirState, type FileState } from "../../core/module-api.js";
import { readProfile, reconcileKeyfile, withKey, type Keyfile } from "../network/keyfile.js";
import { bondAddress, effectiveMiimon, modeName, wifiSlaves, type BondArgs } from "./model.js";

export const NM_DIR = "/etc/NetworkManager/system-connections";
export const NM_RUN_DIR = "/run/NetworkManager/system-connections";
export const NETPLAN_DIR = "/etc/netplan";

export const nmProbes = () => ({
  nmProfiles: { dir: NM_DIR },
  nmRunProfiles: { dir: NM_RUN_DIR },
  netplan: { dir: NETPLAN_DIR },
});
type Facts = { nmProfiles: DirState; nmRunProfiles: DirState; netplan: DirState };

const profileFile = (id: string) => `${id}.nmconnection`;
const portId = (a: BondArgs, slave: string) => `${a.name}-port-${slave}`;

/** A stable UUID per profile id, so a second run renders the same bytes. */
export function profileUuid(id: string): string {
  const h = createHash("sha256").update(`provision:${id}`).digest("hex");
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-4${h.slice(13, 16)}-${((parseInt(h[16], 16) & 3) | 8).toString(16)}${h.slice(17, 20)}-${h.slice(20, 32)}`;
}

function defined(keys: Record<string, string | string[] | number | undefined>): Record<string, string | string[]> {
  return Object.fromEntries(
    Object.entries(keys)
      .filter(([, v]) => v !== undefined)
      .map(([k, v]) => [k, Array.isArray(v) ? v : String(v)]),
  );
}

export function bondProfile(a: BondArgs): Keyfile {
  const ipv4 =
    a.method === "dhcp"
      ? { method: "auto" }
      : defined({
          method: "manual",
          address1: a.gateway ? `${a.address},${a.gateway}` : a.address,
          dns: a.dns_nameservers?.length ? a.dns_nameservers : undefined,
        });
  return {
    connection: { id: a.name, uuid: profileUuid(a.name), type: "bond", "interface-name": a.name, autoconnect: "true", "autoconnect-slaves": "1" },
    bond: defined({
      mode: modeName(a.mode),
      miimon: effectiveMiimon(a),
      primary: a.primary,
      primary_reselect: a.primary_reselect,
      fail_over_mac: a.fail_over_mac,
      updelay: a.updelay,
      downdelay: a.downdelay,
      arp_interval: a.arp_interval,
      arp_ip_target: a.arp_ip_target?.join(","),
      arp_validate: a.arp_validate,
    }),
    ipv4,
    ipv6: { method: "disabled" },
  };
}

export function portProfile(a: BondArgs, slave: string): Keyfile {
  const id = portId(a, slave);
  const wifi = new Map(wifiSlaves(a)).get(slave);
  const connection = {
    id,
    uuid: profileUuid(id),
    type: wifi ? "wifi" : "ethernet",
    "interface-name": slave,
    master: a.name,
    "slave-type": "bond",
    autoconnect: "true",
  };
  if (!wifi) return { connection, ethernet: {} };
  const power = a.slave_options?.[slave]?.wireless_power;
  return {
    connection,
    wifi: defined({ mode: "infrastructure", ssid: wifi.ssid, powersave: power === undefined ? undefined : power === "off" ? 2 : 3 }),
    "wifi-security": wifi.key_mgmt === "SAE" ? { "key-mgmt": "sae", psk: wifi.psk, pmf: "3" } : { "key-mgmt": "wpa-psk", psk: wifi.psk },
  };
}

type Profile = NonNullable<ReturnType<typeof readProfile>>;

/** A profile competes for one of our interfaces when NetworkManager could bring it up there. */
function competes(profile: Profile, a: BondArgs): boolean {
  if (isPortOf(profile, a)) return false;
  const ifname = profile.get("connection", "interface-name") as string | undefined;
  if (ifname) return ifname === a.name || a.slaves.includes(ifname);
  const wifiSlave = wifiSlaves(a).length > 0;
  const type = profile.get("connection", "type");
  return ((type === "wifi" || type === "802-11-wireless") && wifiSlave) || ((type === "ethernet" || type === "802-3-ethernet") && a.slaves.length > wifiSlaves(a).length);
}

const isPortOf = (profile: Profile | null, a: BondArgs) => {
  const controller = profile?.get("connection", "master");
  return controller === a.name || controller === profileUuid(a.name);
};

const autoconnects = (profile: Profile) => profile.get("connection", "autoconnect") === true;

function ownFiles(a: BondArgs): Set<string> {
  return new Set([profileFile(a.name), ...a.slaves.map((s) => profileFile(portId(a, s)))]);
}

export function planNetworkManager(a: BondArgs, facts: Facts): Change[] {
  const existing = facts.nmProfiles.entries ?? {};
  const own = ownFiles(a);
  const writes: Change[] = [];
  const write = (id: string, profile: Keyfile, summary: string, address?: string) => {
    const name = profileFile(id);
    const current = existing[name] ?? null;
    const desired = reconcileKeyfile(current, profile);
    if (desired === current) return;
    const [change] = fileChange({ path: `${NM_DIR}/${name}`, content: current }, desired, { summary, mode: "0600", reboot: true });
    writes.push({ ...change, address });
  };
  for (const slave of a.slaves) write(portId(a, slave), portProfile(a, slave), `make ${slave} a port of ${a.name} (NetworkManager profile ${portId(a, slave)})`);
  write(a.name, bondProfile(a), `configure ${a.name} (${modeName(a.mode)}: ${a.slaves.join(" + ")}) as a NetworkManager profile`, bondAddress(a));
  return [...competingInEtc(a, existing, own), ...competingInRun(a, facts), ...formerPorts(a, existing, own), ...writes];
}

/** Port profiles of an earlier run for slaves no longer listed: named as ours, and ports of this very bond (not of one whose name starts alike). */
function formerPorts(a: BondArgs, existing: Record<string, string>, own: Set<string>): Change[] {
  return Object.entries(existing)
    .filter(([name, text]) => name.startsWith(`${a.name}-port-`) && name.endsWith(".nmconnection") && !own.has(name) && isPortOf(readProfile(text), a))
    .flatMap(([name, text]) =>
      fileChange({ path: `${NM_DIR}/${name}`, content: text }, null, {
        summary: `remove the NetworkManager profile ${name.slice(0, -".nmconnection".length)} (no longer a port of ${a.name})`,
        reboot: true,
      }),
    );
}

function competingInEtc(a: BondArgs, existing: Record<string, string>, own: Set<string>): Change[] {
  return Object.entries(existing).flatMap(([name, text]) => {
    if (own.has(name) || !name.endsWith(".nmconnection")) return [];
    const profile = readProfile(text);
    if (!profile || !competes(profile, a) || !autoconnects(profile)) return [];
    const id = profile.get("connection", "id") ?? name;
    return fileChange({ path: `${NM_DIR}/${name}`, content: text }, withKey(text, "connection", "autoconnect", "false"), {
      summary: `stop profile "${id}" from taking ${profile.get("connection", "interface-name") ?? `a ${profile.get("connection", "type")} device`} (autoconnect=false)`,
      reboot: true,
    });
  });
}

/**
 * Profiles under /run last until the reboot that brings the bond up. Only those made again
 * at every boot compete: netplan's (Raspberry Pi OS Trixie), whose source is moved aside
 * with a copy kept beside it. NetworkManager's own default wired profiles ("Wired
 * connection 2", nm-generated) are not made for a device that has a profile of its own.
 */
function competingInRun(a: BondArgs, facts: Facts): Change[] {
  const sources = facts.netplan.entries ?? {};
  const reasons = new Map<string, string>();
  for (const [name, text] of Object.entries(facts.nmRunProfiles.entries ?? {})) {
    const profile = readProfile(text);
    if (!profile || !name.startsWith("netplan-") || !name.endsWith(".nmconnection") || !competes(profile, a) || !autoconnects(profile)) continue;
    const uuid = (profile.get("connection", "uuid") as string | undefined) ?? "";
    const ifname = (profile.get("connection", "interface-name") as string | undefined) ?? "";
    const from = Object.keys(sources).filter(
      (file) =>
        file.endsWith(".yaml") &&
        ((uuid && file.includes(uuid)) || (ifname && new RegExp(`(^|[^A-Za-z0-9_.-])${ifname.replace(/\./g, "\\.")}([^A-Za-z0-9_.-]|$)`, "m").test(sources[file]))),
    );
    if (!from.length)
      throw new PlanError(
        `netplan's NetworkManager profile ${NM_RUN_DIR}/${name} competes for ${ifname || "a slave"}, and no file in ${NETPLAN_DIR} names it. Remove its netplan source, then run again`,
      );
    for (const file of from) reasons.set(file, `its profile ${profile.get("connection", "id") ?? name} competes for ${ifname || "a slave"}`);
  }
  return [...reasons].flatMap(([file, why]) => moveAside(`${NETPLAN_DIR}/${file}`, sources[file], why));
}

/** Move a file out of its reader's way: a copy under a name nothing reads, then the original removed. */
export function moveAside(path: string, content: string, why: string): Change[] {
  const aside: FileState = { path: `${path}.provision-disabled`, content: null };
  return [
    ...fileChange(aside, content, { summary: `keep a copy of ${path} as ${aside.path}`, mode: "0600" }),
    ...fileChange({ path, content }, null, { summary: `move ${path} aside (${why})`, reboot: true }),
  ];
}
