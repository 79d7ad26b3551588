// The bond for ifupdown (+ ifenslave): its stanzas in /etc/network/interfaces, and for a Wi-Fi
// slave a wpa_supplicant configuration of its own (0600) that the interfaces file only names.
// The interfaces file is shared: only the stanzas of the bond and its slaves are replaced;
// every other stanza, source line and comment stays where it was.
import { PlanError, fileChange, type Change, type DirState, type FileState } from "../../core/module-api.js";
import { renderWpaSupplicant } from "../network/wifi.js";
import { namesOf, parseInterfaces, renderBlocks, mappingMatches, sourcedFiles, type Block } from "../network/interfaces-file.js";
import { bondAddress, effectiveMiimon, modeName, wifiSlaves, type BondArgs } from "./model.js";

export const wpaConfPath = (slave: string) => `/etc/wpa_supplicant/provision-${slave}.conf`;
/** The folder Debian's interfaces file sources (`source /etc/network/interfaces.d/*`). */
export const sourcedDir = (a: BondArgs) => `${a.path.slice(0, a.path.lastIndexOf("/"))}/interfaces.d`;

export const ifupdownProbes = (a: BondArgs) => ({
  interfaces: { file: a.path },
  interfacesDir: { dir: sourcedDir(a) },
  original: { file: a.backup_path },
  ...Object.fromEntries(wifiSlaves(a).map(([slave]) => [`wpa:${slave}`, { file: wpaConfPath(slave) }])),
});
type Facts = { interfaces: FileState; interfacesDir?: DirState; original: FileState } & Record<string, FileState | DirState | undefined>;

const LOOPBACK = "auto lo\niface lo inet loopback\n";

function stanza(header: string[], options: [string, string | number | undefined][]): string[] {
  return [...header, ...options.filter(([, v]) => v !== undefined && v !== "").map(([k, v]) => `    ${k} ${v}`)];
}

/** The first line of the bond's block: it marks the block as provision's. */
const marker = (a: BondArgs) => `# ${a.name}: managed by provision (bond module). Status: cat /proc/net/bonding/${a.name}`;
/** The header this module wrote when it owned the whole file (before it kept other stanzas). */
const formerHeader = (a: BondArgs, line: string) =>
  /^# Managed by provision \(bond module\); the original is in \S+\.$/.test(line) || line === `# Status: cat /proc/net/bonding/${a.name}`;

/**
 * The bond's block: slaves as plain "inet manual" stanzas, the bond listing its slaves — the
 * rendering that comes up right with ifenslave 2.13 on Debian 12 (measured in the lab). The
 * seed's variant (bond-master on slaves, "bond-slaves none") enslaved only one.
 */
export function renderBond(a: BondArgs): string[] {
  const wifi = new Map(wifiSlaves(a));
  const slaveStanzas = a.slaves.map((s) => {
    const o = a.slave_options?.[s] ?? {};
    return stanza(
      [`auto ${s}`, `iface ${s} inet manual`],
      [
        ["wireless-power", o.wireless_power],
        ["wpa-conf", wifi.has(s) ? wpaConfPath(s) : o.wpa_conf],
      ],
    );
  });
  const bond = stanza(
    [`auto ${a.name}`, `iface ${a.name} inet ${a.method}`],
    [
      ["address", a.method === "static" ? a.address : undefined],
      ["gateway", a.method === "static" ? a.gateway : undefined],
      ["dns-nameservers", a.dns_nameservers?.join(" ")],
      ["bond-slaves", a.slaves.join(" ")],
      ["bond-mode", modeName(a.mode)],
      ["bond-primary", a.primary],
      ["bond-primary-reselect", a.primary_reselect],
      ["bond-fail-over-mac", a.fail_over_mac],
      ["bond-miimon", effectiveMiimon(a)],
      ["bond-arp-interval", a.arp_interval],
      ["bond-arp-ip-target", a.arp_ip_target?.join(",")],
      ["bond-arp-validate", a.arp_validate],
      ["bond-updelay", a.updelay],
      ["bond-downdelay", a.downdelay],
    ],
  );
  return [marker(a), ...[...slaveStanzas, bond].flatMap((s, i) => (i ? ["", ...s] : s))];
}

/** Options by which another stanza takes an interface as its own port, slave or lower device. */
const TAKES = new Set(["bond-slaves", "slaves", "bridge-ports", "bridge_ports", "vlan-raw-device", "vlan_raw_device"]);

/** Refuse what would leave ifupdown reading two configurations for one of the bond's interfaces. */
function checkShared(a: BondArgs, blocks: Block[], file: string, ownedHere: boolean, sourcedBy?: string): void {
  const owned = new Set([a.name, ...a.slaves]);
  for (const b of blocks) {
    const at = `${file}:${b.line}`;
    if (b.kind === "mapping") {
      const mapped = [...owned].filter((n) => mappingMatches(b.names, n));
      if (mapped.length)
        throw new PlanError(
          `${at}: a mapping stanza (mapping ${b.names.join(" ")}) maps ${mapped.join(", ")}: provision cannot tell which stanza ifupdown will use. Remove ${mapped.join(", ")} from the mapping (or ${mapped.length > 1 ? "them" : "it"} from the bond), then run again`,
        );
    }
    if (!ownedHere) {
      const named = namesOf(b).filter((n) => owned.has(n));
      if (named.length)
        throw new PlanError(
          `${at}: ${named.join(", ")} ${named.length > 1 ? "are" : "is"} configured here too (${sourcedBy ? `sourced by ${sourcedBy}` : "a file ifupdown reads"}): ifupdown would read both. Remove ${named.join(", ")} from ${file} (provision writes ${named.length > 1 ? "their" : "its"} stanza in ${a.path}), then run again`,
        );
    }
    if (b.kind !== "iface" || owned.has(b.names[0])) continue;
    for (const [key, ...values] of b.options) {
      const taken = TAKES.has(key) ? values.filter((v) => a.slaves.includes(v)) : [];
      if (taken.length)
        throw new PlanError(
          `${at}: ${b.names[0]}'s stanza also takes ${taken.join(", ")} (${key}): two owners for one interface. Remove ${taken.join(", ")} from ${b.names[0]} or from the bond, then run again`,
        );
      if ((key === "bond-master" || key === "bond_master") && values[0] === a.name)
        throw new PlanError(
          `${at}: ${b.names[0]} names ${a.name} as its bond-master but is not one of its slaves (${a.slaves.join(", ")}). Add it to slaves or remove its bond-master line, then run again`,
        );
    }
  }
}

/** The files sourced from `blocks` (in the folder provision reads), checked like the main file, recursively. */
function checkSourced(a: BondArgs, blocks: Block[], file: string, dir: string, entries: Record<string, string>, seen: Set<string>): void {
  for (const b of blocks) {
    if (b.kind !== "source") continue;
    const { files, elsewhere } = sourcedFiles(b, file, dir, Object.keys(entries));
    if (elsewhere)
      throw new PlanError(
        `${file}:${b.line}: "${b.keyword} ${b.pattern}" reads files outside ${dir}, which provision does not read: it cannot tell whether they configure ${[a.name, ...a.slaves].join(", ")}. Move them into ${dir}, then run again`,
      );
    for (const sourced of files) {
      if (seen.has(sourced)) continue;
      seen.add(sourced);
      const inner = parseInterfaces(entries[sourced.slice(dir.length + 1)]);
      checkShared(a, inner, sourced, false, file);
      checkSourced(a, inner, sourced, dir, entries, seen);
    }
  }
}

const isBlank = (b: Block) => b.kind === "other" && b.lines.every((l) => l.trim() === "");

/** A slave stanza as this module renders it (so one left in its block is a former slave's). */
const SLAVE_OPTIONS = new Set(["wireless-power", "wpa-conf"]);
const looksLikeSlave = (b: Block) => b.kind === "iface" && / inet manual\s*$/.test(b.lines[0]) && b.options.every(([k]) => SLAVE_OPTIONS.has(k));

/**
 * The interfaces the bond's stanzas are removed for: its own and its slaves', and slaves it
 * no longer has whose stanzas are still in its block (from its marker to its own stanza).
 */
function ownedNames(a: BondArgs, blocks: Block[]): { owned: Set<string>; ownBlock: Set<Block> } {
  const owned = new Set([a.name, ...a.slaves]);
  const ownBlock = new Set<Block>();
  const start = blocks.findIndex((b) => b.kind === "other" && b.lines[0] === marker(a));
  const end = blocks.findIndex((b, i) => i > start && b.kind === "iface" && b.names[0] === a.name);
  if (start >= 0 && end > start) {
    for (const b of blocks.slice(start, end + 1)) {
      ownBlock.add(b);
      if (b.kind === "iface" && looksLikeSlave(b)) owned.add(b.names[0]);
    }
  }
  return { owned, ownBlock };
}

/** Whether a block goes: a stanza of an owned interface, the marker, the header of the module's former whole-file rendering. */
function removed(a: BondArgs, b: Block, owned: Set<string>): boolean {
  if (b.kind === "iface") return owned.has(b.names[0]);
  return b.kind === "other" && b.lines.length === 1 && (b.lines[0] === marker(a) || formerHeader(a, b.lines[0]));
}

/**
 * The interfaces file with the bond's block in place of the stanzas of the bond and its
 * slaves (at the first of them, else at the end); `auto`/`allow-*` lines lose only the
 * bond's names. Returns the new text and the interfaces whose stanzas (not written by this
 * module) it replaces.
 */
export function editInterfaces(a: BondArgs, current: string | null, sourced?: DirState): { text: string; replaced: string[] } {
  const blocks = parseInterfaces(current ?? LOOPBACK);
  checkShared(a, blocks, a.path, true);
  checkSourced(a, blocks, a.path, sourcedDir(a), sourced?.entries ?? {}, new Set());
  const { owned, ownBlock } = ownedNames(a, blocks);
  const kept: Block[] = [];
  const replaced = new Set<string>();
  let at = -1;
  let afterRemoved = false;
  for (const b of blocks) {
    if (afterRemoved && isBlank(b)) continue;
    afterRemoved = false;
    if (b.kind === "naming" && b.names.some((n) => owned.has(n))) {
      const rest = b.names.filter((n) => !owned.has(n));
      if (rest.length) {
        kept.push({ ...b, names: rest, lines: [`${b.keyword} ${rest.join(" ")}`] });
        continue;
      }
    } else if (!removed(a, b, owned)) {
      kept.push(b);
      continue;
    }
    if (b.kind === "iface" && !ownBlock.has(b)) replaced.add(b.names[0]);
    // the bond's block goes where its first stanza (or its marker) was, not where a former header was
    if (at < 0 && !(b.kind === "other" && formerHeader(a, b.lines[0]))) at = kept.length;
    afterRemoved = true;
  }
  if (at < 0) at = kept.length;
  const before = at > 0 && !isBlank(kept[at - 1]) ? [""] : [];
  const after = at < kept.length && !isBlank(kept[at]) ? [""] : [];
  const block: Block = { kind: "other", lines: [...before, ...renderBond(a), ...after], line: 0 };
  return { text: renderBlocks([...kept.slice(0, at), block, ...kept.slice(at)]), replaced: [...replaced] };
}

/** The whole interfaces file as this bond would leave `current` (a missing file: loopback and the bond). */
export function renderInterfaces(a: BondArgs, current: string | null = null): string {
  return editInterfaces(a, current).text;
}

export function planIfupdown(a: BondArgs, facts: Facts): Change[] {
  const wpa = wifiSlaves(a).flatMap(([slave, w]) =>
    fileChange(facts[`wpa:${slave}`] as FileState, renderWpaSupplicant(w, `# Managed by provision (bond module): Wi-Fi of ${slave} in ${a.name}`), {
      summary: `write ${slave}'s Wi-Fi settings to ${wpaConfPath(slave)} (0600)`,
      mode: "0600",
      reboot: true,
    }),
  );
  const { text: desired, replaced } = editInterfaces(a, facts.interfaces.content, facts.interfacesDir);
  if (facts.interfaces.content === desired) return wpa;
  const keepOriginal =
    facts.original.content === null && facts.interfaces.content !== null
      ? fileChange(facts.original, facts.interfaces.content, { summary: `save the original as ${a.backup_path}`, mode: facts.interfaces.mode })
      : [];
  const replaces = replaced.length ? ` (replaces the stanzas of ${replaced.join(", ")})` : "";
  const [write] = fileChange(facts.interfaces, desired, {
    reboot: true,
    summary: `configure ${a.name} (${modeName(a.mode)}: ${a.slaves.join(" + ")}) in ${a.path}${replaces}`,
    mode: "0644",
  });
  return [...wpa, ...keepOriginal, { ...write, address: bondAddress(a) }];
}
