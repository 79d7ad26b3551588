// NetworkManager keyfiles (nm-settings-keyfile(5)) read back as NetworkManager reads them,
// like netplan's parse-nm.c: GLib's syntax (gkeyfile.ts), then NetworkManager's own rules —
// group and key aliases, each property's type (a boolean only where the property is one,
// strings exact), the value a property has when its key is absent, keys that carry no
// setting (timestamp). Two profiles are the same when NetworkManager would load the same
// settings from them; an edit changes only the keys whose meaning differs, in place.
import {
  KeyfileSyntaxError,
  escapeList,
  escapeString,
  parseBoolean,
  parseDocument,
  parseInteger,
  rawValues,
  unescapeList,
  unescapeString,
  writeDocument,
  type KeyfileDocument,
  type KeyfileLine,
} from "./gkeyfile.js";

/** What provision renders: group → key → value (a list for list properties), before escaping. */
export type Keyfile = Record<string, Record<string, string | string[]>>;

/** Group aliases NetworkManager reads as the same setting. */
const GROUP_ALIASES: Record<string, string> = {
  "802-3-ethernet": "ethernet",
  "802-11-wireless": "wifi",
  "802-11-wireless-security": "wifi-security",
};
/** [connection] names since 1.46 and the deprecated ones (what 1.42 reads and writes). */
const KEY_ALIASES: Record<string, string> = {
  controller: "master",
  "port-type": "slave-type",
  "autoconnect-ports": "autoconnect-slaves",
};

type Kind = "string" | "boolean" | "integer" | "list" | "ssid" | "mac" | "ignored";
interface Property {
  kind: Kind;
  absent?: unknown;
  names?: string[];
}

const bool = (absent: boolean): Property => ({ kind: "boolean", absent });
const int = (absent: number): Property => ({ kind: "integer", absent });
const str = (absent = ""): Property => ({ kind: "string", absent });
const list: Property = { kind: "list", absent: [] };
/** An enum NetworkManager writes as a number or as its name. */
const named = (absent: number, names: string[]): Property => ({ kind: "integer", absent, names });

const IP_COMMON: Record<string, Property> = {
  method: str("auto"),
  dns: list,
  "dns-search": list,
  "dns-options": list,
  "dns-priority": int(0),
  "ignore-auto-dns": bool(false),
  "ignore-auto-routes": bool(false),
  "never-default": bool(false),
  "may-fail": bool(true),
  "route-metric": int(-1),
  "route-table": int(0),
  "dhcp-send-hostname": bool(true),
  "dhcp-hostname": str(),
  "dhcp-timeout": int(0),
  "required-timeout": int(-1),
  "dhcp-iaid": str(),
  "dhcp-hostname-flags": int(0),
  "auto-route-ext-gw": int(-1),
  "replace-local-rule": int(-1),
  "dhcp-dscp": str(),
  gateway: str(),
};

/**
 * The properties whose type or default the comparison needs (any other key is compared as
 * the exact string GLib reads). Defaults as libnm (1.42, 1.52) has them: the writer leaves
 * a property at its default out, so a key missing and a key at its default mean the same.
 */
const PROPERTIES: Record<string, Record<string, Property>> = {
  connection: {
    timestamp: { kind: "ignored" }, // when it was last active: state, not configuration
    autoconnect: bool(true),
    "autoconnect-priority": int(0),
    "autoconnect-retries": int(-1),
    "autoconnect-slaves": int(-1),
    "read-only": bool(false),
    "multi-connect": int(0),
    "auth-retries": int(-1),
    "wait-device-timeout": int(-1),
    "wait-activation-delay": int(-1),
    mdns: int(-1),
    llmnr: int(-1),
    "dns-over-tls": int(-1),
    lldp: int(-1),
    metered: int(0),
    "mptcp-flags": int(0),
    "gateway-ping-timeout": int(0),
    permissions: list,
    secondaries: list,
    zone: str(),
    "stable-id": str(),
    "mud-url": str(),
    "down-on-poweroff": int(-1),
  },
  ipv4: { ...IP_COMMON, "link-local": int(0), "dhcp-client-id": str(), "dhcp-fqdn": str(), "dad-timeout": int(-1), "dhcp-vendor-class-identifier": str() },
  ipv6: {
    ...IP_COMMON,
    "ip6-privacy": int(-1),
    "ra-timeout": int(0),
    mtu: int(0),
    token: str(),
    "dhcp-duid": str(),
    // a keyfile without addr-gen-mode is read as eui64 (the default of profiles made before 1.40)
    "addr-gen-mode": named(0, ["eui64", "stable-privacy", "default-or-eui64", "default"]),
  },
  ethernet: {
    mtu: int(0),
    "auto-negotiate": bool(false),
    speed: int(0),
    duplex: str(),
    "wake-on-lan": int(1),
    "wake-on-lan-password": str(),
    "mac-address": { kind: "mac", absent: "" },
    "cloned-mac-address": { kind: "mac", absent: "" },
    "mac-address-blacklist": list,
    "accept-all-mac-addresses": int(-1),
    port: str(),
    "generate-mac-address-mask": str(),
    "s390-nettype": str(),
    "s390-subchannels": list,
  },
  wifi: {
    ssid: { kind: "ssid", absent: "" },
    mode: str("infrastructure"),
    hidden: bool(false),
    powersave: int(0),
    mtu: int(0),
    band: str(),
    channel: int(0),
    "wake-on-wlan": int(1),
    "ap-isolation": int(-1),
    "mac-address": { kind: "mac", absent: "" },
    "cloned-mac-address": { kind: "mac", absent: "" },
    "mac-address-blacklist": list,
    "seen-bssids": { kind: "ignored" },
    bssid: { kind: "mac", absent: "" },
    "mac-address-randomization": int(0),
    "generate-mac-address-mask": str(),
  },
  "wifi-security": {
    psk: str(),
    "psk-flags": int(0),
    pmf: int(0),
    fils: int(0),
    "wps-method": int(0),
    proto: list,
    pairwise: list,
    group: list,
    "auth-alg": str(),
    "wep-key-flags": int(0),
    "wep-tx-keyidx": int(0),
    "leap-password-flags": int(0),
    "leap-username": str(),
  },
  proxy: { method: int(0), "browser-only": bool(false), "pac-url": str(), "pac-script": str() },
  bond: {}, // options: see BOND_OPTIONS
};

/** NetworkManager's bond options with their defaults (nm-setting-bond.c); enums by name or number. */
const BOND_OPTIONS: Record<string, Property> = {
  mode: named(0, ["balance-rr", "active-backup", "balance-xor", "broadcast", "802.3ad", "balance-tlb", "balance-alb"]),
  miimon: int(100),
  updelay: int(0),
  downdelay: int(0),
  arp_interval: int(0),
  arp_ip_target: str(),
  primary: str(),
  arp_validate: named(0, ["none", "active", "backup", "all", "filter", "filter_active", "filter_backup"]),
  primary_reselect: named(0, ["always", "better", "failure"]),
  fail_over_mac: named(0, ["none", "active", "follow"]),
  use_carrier: int(1),
  num_grat_arp: int(1),
  num_unsol_na: int(1),
  resend_igmp: int(1),
  all_slaves_active: int(0),
  min_links: int(0),
  packets_per_slave: int(1),
  tlb_dynamic_lb: int(1),
  lp_interval: int(1),
  peer_notif_delay: int(0),
  xmit_hash_policy: str("layer2"),
  lacp_rate: named(0, ["slow", "fast"]),
  ad_select: named(0, ["stable", "bandwidth", "count"]),
  arp_all_targets: named(0, ["any", "all"]),
};

const canonicalGroup = (group: string) => GROUP_ALIASES[group] ?? group;
const canonicalKey = (group: string, key: string) => (group === "connection" ? (KEY_ALIASES[key] ?? key) : key);

function propertyOf(group: string, key: string): Property | undefined {
  if (group === "bond") return BOND_OPTIONS[key];
  return PROPERTIES[group]?.[key];
}

/** One setting as NetworkManager holds it, and the raw keys it was read from. */
interface Meaning {
  value: string;
  keys: string[];
}
/** group → meaning key → what it means. Keys at their default, ignored keys and empty groups are left out. */
export type KeyfileMeaning = Map<string, Map<string, Meaning>>;

/** The value of one key as NetworkManager reads it (JSON, so lists and numbers compare exactly); undefined when NM would not set it. */
function decode(group: string, key: string, raw: string): string | undefined {
  const property = propertyOf(group, key);
  const value = decodeAs(property, raw);
  if (value === undefined || property?.kind === "ignored") return undefined;
  // a value NetworkManager refuses leaves the property at its default, as if the key were absent
  return JSON.stringify(value);
}

function decodeAs(property: Property | undefined, raw: string): unknown {
  switch (property?.kind ?? "string") {
    case "boolean":
      return parseBoolean(raw) ?? undefined;
    case "integer": {
      const n = parseInteger(raw);
      if (n !== null) return n;
      const index = property!.names?.indexOf(raw.trim()) ?? -1;
      return index >= 0 ? index : undefined;
    }
    case "list":
      return unescapeList(raw) ?? undefined;
    case "ssid":
      return decodeSsid(raw);
    case "mac":
      return unescapeString(raw)?.trim().toUpperCase() ?? undefined;
    case "ignored":
      return undefined;
    default:
      return unescapeString(raw) ?? undefined;
  }
}

/** An SSID as nm-keyfile's reader takes it: a list of byte values (`104;111;109;101;`) or a string with `\;` for `;`. */
function decodeSsid(raw: string): string | undefined {
  const text = unescapeString(raw);
  if (text === null) return undefined;
  if (/^\s*\d{1,3}\s*;(\s*\d{1,3}\s*;)*\s*$/.test(text)) {
    const bytes = text
      .split(";")
      .filter((b) => b.trim() !== "")
      .map(Number);
    if (bytes.every((b) => b <= 255)) return Buffer.from(bytes).toString("latin1");
  }
  return text.replace(/\\;/g, ";");
}

const defaultOf = (group: string, key: string) => {
  const property = propertyOf(group, key);
  return property && property.kind !== "ignored" ? JSON.stringify(property.absent) : undefined;
};

/** The address keys of [ipv4]/[ipv6] (address1, addresses2, address…) and gateway: read together, as NM does. */
const ADDRESS_KEY = /^(address|addresses)\d*$/;

/** A keyfile reduced to what NetworkManager loads from it. Throws KeyfileSyntaxError where GLib refuses the file. */
export function keyfileMeaning(doc: KeyfileDocument | string): KeyfileMeaning {
  const raw = rawValues(typeof doc === "string" ? parseDocument(doc) : doc);
  const meaning: KeyfileMeaning = new Map();
  for (const [rawGroup, keys] of raw) {
    const group = canonicalGroup(rawGroup);
    const settings = meaning.get(group) ?? new Map<string, Meaning>();
    meaning.set(group, settings);
    if (group === "ipv4" || group === "ipv6") readAddresses(group, keys, settings);
    for (const [rawKey, value] of keys) {
      if ((group === "ipv4" || group === "ipv6") && (ADDRESS_KEY.test(rawKey) || rawKey === "gateway")) continue;
      const key = canonicalKey(group, rawKey);
      const decoded = decode(group, key, value);
      const earlier = settings.get(key);
      if (decoded === undefined) {
        if (!earlier)
          settings.set(key, { value: "", keys: [rawKey] }); // kept for editing, dropped below
        else earlier.keys.push(rawKey);
        continue;
      }
      settings.set(key, { value: decoded, keys: [...(earlier?.keys ?? []), rawKey] });
    }
  }
  for (const [group, settings] of meaning) {
    for (const [key, m] of settings) if (m.value === "" || m.value === defaultOf(group, key)) settings.delete(key);
    if (!settings.size) meaning.delete(group);
  }
  return meaning;
}

/**
 * Addresses as nm-keyfile reads them: address1..N and addresses1..N (also unnumbered),
 * each `ip[/prefix][,gateway]` (no prefix: /24 for IPv4, /64 for IPv6, with a warning);
 * the gateway from `gateway=` or else the first address that names one.
 */
function readAddresses(group: "ipv4" | "ipv6", keys: Map<string, string>, settings: Map<string, Meaning>): void {
  const entries = [...keys]
    .filter(([k]) => ADDRESS_KEY.test(k))
    .map(([k, v]) => ({ key: k, n: Number(/\d+$/.exec(k)?.[0] ?? 0), text: unescapeString(v) ?? "" }))
    .sort((a, b) => a.n - b.n || a.key.localeCompare(b.key));
  const addresses: string[] = [];
  let gateway: string | undefined;
  for (const e of entries)
    for (const item of e.text
      .split(";")
      .map((s) => s.trim())
      .filter(Boolean)) {
      const [address, gw] = item.split(",").map((s) => s.trim());
      const [ip, prefix] = address.split("/");
      addresses.push(`${ip.toLowerCase()}/${prefix ?? (group === "ipv4" ? "24" : "64")}`);
      if (gw && gateway === undefined) gateway = gw.toLowerCase();
    }
  const explicit = keys.get("gateway");
  if (explicit !== undefined) gateway = unescapeString(explicit)?.trim().toLowerCase() ?? gateway;
  const addressKeys = entries.map((e) => e.key);
  if (addresses.length) settings.set("addresses", { value: JSON.stringify(addresses), keys: addressKeys });
  const gatewayKeys = [...addressKeys, ...(explicit !== undefined ? ["gateway"] : [])];
  if (gateway) settings.set("gateway", { value: JSON.stringify(gateway), keys: gatewayKeys });
  else if (gatewayKeys.length && !addresses.length) settings.set("addresses", { value: "", keys: gatewayKeys });
}

function sameMeanings(a: KeyfileMeaning, b: KeyfileMeaning): boolean {
  return differingKeys(a, b).length === 0;
}

/** [group, meaning key] pairs whose meaning differs between a and b. */
function differingKeys(a: KeyfileMeaning, b: KeyfileMeaning): [string, string][] {
  const out: [string, string][] = [];
  for (const group of new Set([...a.keys(), ...b.keys()])) {
    const ka = a.get(group) ?? new Map(),
      kb = b.get(group) ?? new Map();
    for (const key of new Set([...ka.keys(), ...kb.keys()])) if (ka.get(key)?.value !== kb.get(key)?.value) out.push([group, key]);
  }
  return out;
}

/** Whether NetworkManager would load the same settings from both (a file GLib refuses means nothing: never the same). */
export function sameMeaning(a: string | null, b: string | null): boolean {
  if (a === null || b === null) return a === b;
  try {
    return sameMeanings(keyfileMeaning(a), keyfileMeaning(b));
  } catch (error) {
    if (error instanceof KeyfileSyntaxError) return false;
    throw error;
  }
}

/** A profile's settings by the names NetworkManager reads (for deciding, e.g. which device a profile is for). */
export function readProfile(text: string): { get(group: string, key: string): unknown } | null {
  let meaning: KeyfileMeaning;
  try {
    meaning = keyfileMeaning(text);
  } catch (error) {
    if (error instanceof KeyfileSyntaxError) return null; // NetworkManager does not load it
    throw error;
  }
  return {
    get(group, key) {
      const m = meaning.get(canonicalGroup(group))?.get(canonicalKey(group, key));
      if (m) return JSON.parse(m.value);
      const absent = propertyOf(canonicalGroup(group), canonicalKey(group, key))?.absent;
      return absent === "" ? undefined : absent;
    },
  };
}

// ---- writing -------------------------------------------------------------------------------

/** One value as NetworkManager's writer puts it: GLib escaping; an SSID with `;` escaped so it is not read as bytes. */
function encode(group: string, key: string, value: string | string[]): string {
  if (Array.isArray(value)) return escapeList(value);
  if (propertyOf(canonicalGroup(group), key)?.kind === "ssid") return escapeString(value.replace(/;/g, "\\;"));
  return escapeString(value);
}

export function renderKeyfile(file: Keyfile): string {
  return (
    Object.entries(file)
      .map(([group, keys]) => [`[${group}]`, ...Object.entries(keys).map(([k, v]) => `${k}=${encode(group, k, v)}`)].join("\n"))
      .join("\n\n") + "\n"
  );
}

/**
 * The existing file changed only where its meaning differs from `desired`: a differing key
 * is rewritten where it stands (under the name the file uses), a missing one added at the
 * end of its group (the group added at the end), an extra one removed; comments, order,
 * timestamp and everything else NetworkManager wrote stay. So the diff shows what differs.
 * A file GLib refuses, or one this cannot edit to the same meaning, is replaced whole.
 */
export function reconcileKeyfile(existing: string | null, desired: Keyfile): string {
  const rendered = renderKeyfile(desired);
  if (existing === null) return rendered;
  let doc: KeyfileDocument;
  try {
    doc = parseDocument(existing);
  } catch (error) {
    if (error instanceof KeyfileSyntaxError) return rendered;
    throw error;
  }
  const want = keyfileMeaning(rendered);
  const have = keyfileMeaning(doc);
  const differing = differingKeys(have, want);
  if (!differing.length) return existing;
  const wantedLines = desiredLines(desired);
  for (const [group, key] of differing) {
    const old = have.get(group)?.get(key)?.keys ?? rawKeysOf(doc, group, key);
    const replacement = wantedLines.filter((l) => l.group === group && l.meaningKey === key);
    replaceKeys(doc, group, old, replacement);
  }
  const edited = writeDocument(doc);
  return sameMeaning(edited, rendered) ? edited : rendered;
}

/** Raw keys of a meaning key that are present but mean nothing (refused values, defaults). */
function rawKeysOf(doc: KeyfileDocument, group: string, key: string): string[] {
  return doc.lines
    .filter((l): l is Extract<KeyfileLine, { kind: "entry" }> => l.kind === "entry" && canonicalGroup(l.group) === group && meaningKeyOf(group, l.key) === key)
    .map((l) => l.key);
}

function meaningKeyOf(group: string, rawKey: string): string {
  if ((group === "ipv4" || group === "ipv6") && ADDRESS_KEY.test(rawKey)) return "addresses";
  return canonicalKey(group, rawKey);
}

interface WantedLine {
  group: string;
  meaningKey: string;
  key: string;
  text: string;
}

function desiredLines(desired: Keyfile): WantedLine[] {
  return Object.entries(desired).flatMap(([rawGroup, keys]) =>
    Object.entries(keys).flatMap(([key, value]) => {
      const group = canonicalGroup(rawGroup);
      const text = `${key}=${encode(rawGroup, key, value)}`;
      const meaningKey = meaningKeyOf(group, key);
      // an address line carries the gateway too
      if (meaningKey === "addresses")
        return [
          { group, meaningKey, key, text },
          { group, meaningKey: "gateway", key, text },
        ];
      return [{ group, meaningKey, key, text }];
    }),
  );
}

/** Remove the lines of `oldKeys` in `group` and put `lines` where the first of them stood (else at the end of the group). */
function replaceKeys(doc: KeyfileDocument, group: string, oldKeys: string[], lines: WantedLine[]): void {
  const inGroup = (l: KeyfileLine) => l.kind !== "comment" && canonicalGroup(l.group) === group;
  const existingTexts = new Set(doc.lines.filter((l) => l.kind === "entry" && inGroup(l)).map((l) => l.text));
  const fresh = lines.filter((l) => !existingTexts.has(l.text)); // the address line may already have been written for the gateway
  const dropped = (l: KeyfileLine) => l.kind === "entry" && inGroup(l) && oldKeys.includes(l.key);
  let at = doc.lines.findIndex(dropped);
  doc.lines = doc.lines.filter((l) => !dropped(l));
  const entries: KeyfileLine[] = fresh.map((l) => ({ kind: "entry", text: l.text, group, key: l.key, raw: l.text.slice(l.key.length + 1) }));
  if (!entries.length) return;
  if (at < 0) at = endOfGroup(doc, group);
  if (at < 0) {
    // no such group yet: add it at the end, after a blank line
    const tail: KeyfileLine[] = [{ kind: "comment", text: "" }, { kind: "group", text: `[${group}]`, group }, ...entries];
    if (!doc.lines.length) tail.shift();
    doc.lines.push(...tail);
    doc.finalNewline = true;
    return;
  }
  doc.lines.splice(at, 0, ...entries);
}

/** Index just after the last entry (or header) of the last block of `group`, or -1. */
function endOfGroup(doc: KeyfileDocument, group: string): number {
  let end = -1;
  let inside = false;
  doc.lines.forEach((l, i) => {
    if (l.kind === "group") inside = canonicalGroup(l.group) === group;
    if (inside && l.kind !== "comment") end = i + 1;
  });
  return end;
}

/** The text with `key=value` set in `[group]` (the last occurrence edited, or added to the group, or the group added); the rest kept byte for byte. */
export function withKey(text: string, group: string, key: string, value: string): string {
  let doc: KeyfileDocument;
  try {
    doc = parseDocument(text);
  } catch (error) {
    if (error instanceof KeyfileSyntaxError) return text;
    throw error;
  }
  const wanted = canonicalKey(canonicalGroup(group), key);
  const matches = doc.lines
    .map((l, i) => [l, i] as const)
    .filter(([l]) => l.kind === "entry" && canonicalGroup(l.group) === canonicalGroup(group) && canonicalKey(canonicalGroup(group), l.key) === wanted);
  const line = `${key}=${encode(group, key, value)}`;
  if (matches.length) {
    const [last, index] = matches[matches.length - 1];
    doc.lines[index] = { ...(last as Extract<KeyfileLine, { kind: "entry" }>), text: line, raw: line.slice(key.length + 1) };
    return writeDocument(doc);
  }
  replaceKeys(doc, canonicalGroup(group), [], [{ group: canonicalGroup(group), meaningKey: wanted, key, text: line }]);
  return writeDocument(doc);
}

/** group → key → value as g_key_file_get_string reads it (the raw text where GLib refuses it); duplicates merged as GLib does. */
export function parseKeyfile(text: string): Record<string, Record<string, string>> {
  const out: Record<string, Record<string, string>> = {};
  for (const [group, keys] of rawValues(parseDocument(text))) out[group] = Object.fromEntries([...keys].map(([k, v]) => [k, unescapeString(v) ?? v]));
  return out;
}
