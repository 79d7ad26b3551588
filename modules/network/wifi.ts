// Wi-Fi settings of an interface, shared by the renderers: the schema, the wpa_supplicant
// configuration (ifupdown, systemd-networkd) and the regulatory domain and radio state.
import { fileChange, type Change, type DirState, type FileState } from "../../core/module-api.js";

export interface WifiSettings {
  ssid: string;
  /** Secret: 8–63 printable characters (a passphrase) or 64 hex digits (a raw key). */
  psk: string;
  /** ISO 3166 country code: the regulatory domain. */
  country?: string;
  key_mgmt: "WPA-PSK" | "SAE";
}

export const wifiSchemaProperties = {
  ssid: { type: "string", pattern: "^[\\x20-\\x7e]{1,32}$" },
  psk: { type: "string", pattern: "^([\\x20-\\x7e]{8,63}|[0-9A-Fa-f]{64})$" },
  country: { type: "string", pattern: "^[A-Z]{2}$" },
  key_mgmt: { type: "string", enum: ["WPA-PSK", "SAE"] },
};

export const isHexKey = (psk: string) => /^[0-9A-Fa-f]{64}$/.test(psk);

const CTRL_INTERFACE = "ctrl_interface=DIR=/run/wpa_supplicant GROUP=netdev";

function networkBlock(w: WifiSettings): string[] {
  const secret = w.key_mgmt === "SAE" ? [`\tsae_password="${w.psk}"`, "\tieee80211w=2"] : [`\tpsk=${isHexKey(w.psk) ? w.psk : `"${w.psk}"`}`];
  return ["network={", `\tssid="${w.ssid}"`, `\tkey_mgmt=${w.key_mgmt}`, ...secret, "}"];
}

/** wpa_supplicant.conf(5) for one network; the file must be 0600 (it holds the PSK). */
export function renderWpaSupplicant(w: WifiSettings, header: string): string {
  return [header, CTRL_INTERFACE, "update_config=0", ...(w.country ? [`country=${w.country}`] : []), "", ...networkBlock(w), ""].join("\n");
}

/** A wpa_supplicant.conf(5) as lines: global settings, comments and `network={…}` blocks (a block's lines with their braces). */
type ConfPart = { kind: "line"; text: string } | { kind: "network"; lines: string[] };

function parseWpaConf(text: string): ConfPart[] {
  const parts: ConfPart[] = [];
  let block: string[] | null = null;
  for (const line of text.replace(/\n$/, "").split("\n")) {
    if (block) {
      block.push(line);
      if (line.trim() === "}") (parts.push({ kind: "network", lines: block }), (block = null));
    } else if (/^\s*network\s*=\s*\{\s*$/.test(line)) block = [line];
    else parts.push({ kind: "line", text: line });
  }
  if (block) parts.push({ kind: "network", lines: block }); // unterminated: kept as it was
  return parts;
}

/** The SSID a network block names, as wpa_supplicant reads it: "quoted" text or hex digits. */
function blockSsid(lines: string[]): string | undefined {
  const value = lines.map((l) => /^\s*ssid\s*=\s*(.*?)\s*$/.exec(l)?.[1]).find((v) => v !== undefined);
  if (value === undefined) return undefined;
  if (value.startsWith('"')) return value.slice(1, value.lastIndexOf('"'));
  return /^([0-9a-fA-F]{2})+$/.test(value) ? Buffer.from(value, "hex").toString("latin1") : undefined;
}

/**
 * A wpa_supplicant.conf that others may share (networkd's wpa_supplicant-IFACE.conf): the
 * network block for this SSID is provision's, in place (other blocks for the same SSID
 * would compete with it, so they go), and so is `country=` when one is given; every other
 * global setting, comment and network is kept where it was. No file yet: a file of our own.
 */
export function mergeWpaSupplicant(existing: string | null, w: WifiSettings, header: string): string {
  if (existing === null) return renderWpaSupplicant(w, header);
  const isSetting = (name: string) => (line: string) => new RegExp(`^\\s*${name}\\s*=`).test(line);
  const out: string[] = [];
  let country = false;
  let network = false;
  for (const part of parseWpaConf(existing)) {
    if (part.kind === "network") {
      if (blockSsid(part.lines) !== w.ssid) out.push(...part.lines);
      else if (!network) (out.push(...networkBlock(w)), (network = true));
    } else if (!w.country || !isSetting("country")(part.text)) out.push(part.text);
    else if (!country) (out.push(`country=${w.country}`), (country = true));
  }
  const firstNetwork = out.findIndex((l) => /^\s*network\s*=\s*\{/.test(l));
  const missing = [...(out.some(isSetting("ctrl_interface")) ? [] : [CTRL_INTERFACE]), ...(w.country && !country ? [`country=${w.country}`] : [])];
  out.splice(firstNetwork < 0 ? out.length : firstNetwork, 0, ...missing);
  if (!network) out.push(...(out.length && out[out.length - 1] !== "" ? [""] : []), ...networkBlock(w));
  return out.join("\n") + "\n";
}

export const REGDOM_CONF = "/etc/modprobe.d/provision-wifi-country.conf";
export const NM_STATE = "/var/lib/NetworkManager/NetworkManager.state";
export const RFKILL_STATE_DIR = "/var/lib/systemd/rfkill";

export const radioProbes = {
  regdom: { file: REGDOM_CONF },
  nmState: { file: NM_STATE },
  rfkill: { dir: RFKILL_STATE_DIR },
};
export type RadioFacts = { regdom: FileState; nmState: FileState; rfkill: DirState };

/**
 * The country as the kernel's regulatory domain from boot on, and the radio switched on
 * the way the host keeps it: NetworkManager's WirelessEnabled (Raspberry Pi OS images
 * without a country keep it false) and systemd-rfkill's saved soft-block.
 */
export function radioChanges(country: string | undefined, facts: RadioFacts): Change[] {
  const changes: Change[] = [];
  if (country)
    changes.push(
      ...fileChange(facts.regdom, `# Managed by provision: the Wi-Fi regulatory domain\noptions cfg80211 ieee80211_regdom=${country}\n`, {
        summary: `set the Wi-Fi country to ${country} (${REGDOM_CONF})`,
        mode: "0644",
        reboot: true,
      }),
    );
  const nm = facts.nmState.content;
  if (nm !== null && /^\s*WirelessEnabled\s*=\s*false\s*$/m.test(nm))
    changes.push(
      ...fileChange(facts.nmState, nm.replace(/^(\s*WirelessEnabled\s*=\s*)false(\s*)$/m, "$1true$2"), {
        summary: "switch the Wi-Fi radio on in NetworkManager (WirelessEnabled=true)",
        reboot: true,
      }),
    );
  for (const [name, state] of Object.entries(facts.rfkill.entries ?? {}))
    if (name.endsWith(":wlan") && state.trim() === "1")
      changes.push(
        ...fileChange({ path: `${RFKILL_STATE_DIR}/${name}`, content: state }, "0\n", {
          summary: `unblock the Wi-Fi radio at boot (${RFKILL_STATE_DIR}/${name})`,
          reboot: true,
        }),
      );
  return changes;
}

/**
 * The SSID in `iw dev IFACE link` output, unescaped: iw (util.c print_ssid_escaped) prints a
 * backslash, a leading or trailing space and any byte that is not printable as `\xhh`.
 */
export function iwLinkSsid(output: string): string | undefined {
  const escaped = /^\s*SSID: (.*)$/m.exec(output)?.[1];
  return escaped === undefined ? undefined : unescapeIw(escaped);
}

export function unescapeIw(escaped: string): string {
  const bytes: number[] = [];
  for (let i = 0; i < escaped.length; i++) {
    const hex = /^\\x([0-9a-fA-F]{2})/.exec(escaped.slice(i, i + 4));
    if (hex) {
      bytes.push(parseInt(hex[1], 16));
      i += 3;
    } else bytes.push(...Buffer.from(escaped[i], "utf8"));
  }
  return Buffer.from(bytes).toString("utf8");
}
