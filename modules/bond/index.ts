// bond: one static address over several links. One desired bond, rendered for the stack
// that runs the host (ifupdown, NetworkManager or systemd-networkd), verified from the
// kernel's view (/proc/net/bonding) after it takes effect — and audited from it too.
import { PlanError, defineModule, readShellAsset, type Change, type CommandOutput, type DirState, type FileState, type PlanContext } from "../../core/module-api.js";
import { STACK_NAMES, chosenStack, networkStackFact, type NetworkStack, type Stack } from "../network/stack.js";
import { iwLinkSsid, radioChanges, radioProbes, type RadioFacts } from "../network/wifi.js";
import { addressProblems, argProblems, bondProblems, bondSchema, modeName, parseBondStatus, playProblems, wifiSlaves, withPrefix, type BondArgs } from "./model.js";
import { ifupdownProbes, planIfupdown } from "./ifupdown.js";
import { nmProbes, planNetworkManager } from "./networkmanager.js";
import { networkdProbes, planNetworkd } from "./networkd.js";

const RENDERERS: Partial<Record<Stack, { probes(a: BondArgs): object; plan(a: BondArgs, facts: never): Change[] }>> = {
  ifupdown: { probes: ifupdownProbes, plan: planIfupdown },
  networkmanager: { probes: nmProbes, plan: planNetworkManager },
  networkd: { probes: networkdProbes, plan: planNetworkd },
};

const SETTLE = readShellAsset(import.meta.url, "bond-settle.sh");
const WIFI_LINK = readShellAsset(import.meta.url, "wifi-link.sh");
const ADDRESS = readShellAsset(import.meta.url, "bond-address.sh");
// once the slaves are up, a Wi-Fi slave's WPA handshake has at most this long to complete
const AUTHORIZE_SECONDS = 30;

/** The address with its prefix; defaults that depend on the slaves: a bond with a Wi-Fi slave keeps each slave's own MAC. */
export function withDefaults(args: BondArgs): BondArgs {
  const a = withPrefix(args);
  return wifiSlaves(a).length && !a.fail_over_mac ? { ...a, fail_over_mac: "active" } : a;
}

const stackOf = (context: PlanContext) => context.facts[networkStackFact.name] as NetworkStack | undefined;

type Facts = {
  bonding: FileState;
  address: CommandOutput;
} & RadioFacts &
  Record<string, FileState | DirState | CommandOutput>;

function wirelessOf(a: BondArgs, facts: Facts): string[] {
  return a.slaves.filter((s) => (facts[`phy:${s}`] as FileState | undefined)?.content);
}

/** Refuse what the host or the args cannot give before anything is written. */
function checkPlan(a: BondArgs, stack: Stack, facts: Facts, network: NetworkStack | undefined): void {
  if (!RENDERERS[stack])
    throw new PlanError(
      `this host's network is run by ${STACK_NAMES[stack]}; the bond module renders for ifupdown, NetworkManager and systemd-networkd. Install one of them or set stack: to the one that should own ${a.name}`,
    );
  const wifi = new Set(wifiSlaves(a).map(([s]) => s));
  if (wifi.size && modeName(a.mode) !== "active-backup")
    throw new PlanError(`${[...wifi].join(", ")} is Wi-Fi: a Wi-Fi station can only be a slave of an active-backup bond (it sends with its own MAC), not ${modeName(a.mode)}`);
  const unset = wirelessOf(a, facts).filter((s) => !wifi.has(s) && !(stack === "ifupdown" && a.slave_options?.[s]?.wpa_conf));
  if (unset.length) throw new PlanError(`${unset.join(", ")} is a Wi-Fi interface: give its network in slave_options.${unset[0]} (ssid, psk, country)`);
  const foreign = [a.name, ...a.slaves].filter((i) => network?.owners[i] && network.owners[i] !== stack);
  if (foreign.length)
    throw new PlanError(
      `${foreign.map((i) => `${i} is managed by ${STACK_NAMES[network!.owners[i]]}`).join(", ")}, but the bond is rendered for ${STACK_NAMES[stack]}: release ${foreign.length > 1 ? "them" : "it"} from that stack or set stack:`,
    );
}

/** What `iw dev link` and `iw dev station dump` (wifi-link.sh) say is wrong with a station's link to `ssid`. */
export function wifiProblems(slave: string, ssid: string, output: string): string[] {
  const [link, dump = ""] = output.split("--- station dump");
  const associated = iwLinkSsid(link);
  if (associated !== ssid) return [`${slave} not associated to SSID "${ssid}" (${associated ? `associated to "${associated}"` : link.trim().split("\n")[0] || "no link"})`];
  if (!/authorized:\s*yes/.test(dump)) return [`${slave} not associated to SSID "${ssid}": the access point never authorized it (the WPA handshake did not complete: wrong PSK?)`];
  return [];
}

/** The kernel's view: what a running bond lacks, when its files are already as desired. */
function liveProblems(a: BondArgs, facts: Facts): string[] {
  if (facts.bonding.content === null) return [`${a.name} does not exist`];
  return [...bondProblems(a, parseBondStatus(facts.bonding.content)), ...addressProblems(a, facts.address)];
}

export default defineModule({
  name: "bond",
  description:
    "A Linux bond (active-backup over Ethernet and Wi-Fi, …) with one static address, rendered for ifupdown, NetworkManager or systemd-networkd as the host runs; audited and verified from /proc/net/bonding",
  schema: bondSchema,
  hostFacts: [networkStackFact],
  check: argProblems,
  checkPlay: playProblems,
  secrets: (a: BondArgs) => Object.values(a.slave_options ?? {}).flatMap((o) => (o.psk ? [o.psk] : [])),
  facts: (a: BondArgs) => {
    const stacks = a.stack === "auto" ? Object.values(RENDERERS) : [RENDERERS[a.stack]!];
    return {
      ...Object.assign({}, ...stacks.map((r) => r!.probes(a))),
      ...(wifiSlaves(a).length ? radioProbes : {}),
      ...Object.fromEntries(a.slaves.map((s) => [`phy:${s}`, { file: `/sys/class/net/${s}/phy80211/name` }])),
      bonding: { file: `/proc/net/bonding/${a.name}` },
      address: { command: ["sh", "-c", ADDRESS, "bond-address", a.name] },
    };
  },
  plan(args: BondArgs, facts: Facts, context: PlanContext): Change[] {
    const a = withDefaults(args);
    const network = stackOf(context);
    const stack = chosenStack(a.stack, network);
    checkPlan(a, stack, facts, network);
    const country = wifiSlaves(a)
      .map(([, w]) => w.country)
      .find(Boolean);
    const changes = [...(wifiSlaves(a).length ? radioChanges(country, facts) : []), ...RENDERERS[stack]!.plan(a, facts as never)];
    // with a reboot already pending (an earlier task wrote what the bond runs from), the kernel's view is not due yet
    if (changes.length || context.rebootPending) return changes;
    const live = liveProblems(a, facts);
    return live.length ? [{ kind: "pending", reboot: true, summary: `${a.name} does not run as configured (${live.join("; ")}): reboot to bring it up from its files` }] : [];
  },
  verify: {
    probes: (a: BondArgs) => ({
      bonding: { command: ["sh", "-c", SETTLE, "bond-settle", a.name, String(a.settle_timeout), ...a.slaves] },
      ip: { command: ["ip", "-j", "-4", "addr", "show", "dev", a.name] },
      ...Object.fromEntries(wifiSlaves(a).map(([s]) => [`link:${s}`, { command: ["sh", "-c", WIFI_LINK, "wifi-link", s, String(Math.min(AUTHORIZE_SECONDS, a.settle_timeout))] }])),
      ...(a.gateway && a.method === "static" ? { gateway: { command: ["ping", "-c", "3", "-i", "0.3", "-W", "2", a.gateway] } } : {}),
    }),
    check(args: BondArgs, facts: Record<string, CommandOutput>) {
      const a = withDefaults(args);
      if (facts.bonding.code !== 0) return [`${a.name} is not a bond (no /proc/net/bonding/${a.name})`];
      const notes: string[] = [];
      const wifi = wifiSlaves(a).flatMap(([slave, w]) => {
        const link = facts[`link:${slave}`];
        if (link.code === 127) return (notes.push(`iw is not installed: ${slave}'s association to "${w.ssid}" was judged by its MII status only`), []);
        return wifiProblems(slave, w.ssid, link.stdout);
      });
      const problems = [
        ...bondProblems(a, parseBondStatus(facts.bonding.stdout)),
        ...addressProblems(a, facts.ip),
        ...wifi,
        ...(facts.gateway && facts.gateway.code !== 0 ? [`gateway ${a.gateway} does not answer ping through ${a.name}`] : []),
      ];
      return { problems, notes };
    },
  },
});
