// multiwan's arguments and schema, the names it owns on a host (files, service, nftables
// table, iptables chains) and how it numbers its marks, routing tables and ip rules.
import { PATTERNS } from "../../core/module-api.js";

const IFNAME = PATTERNS.ifname;
const IPV4 = PATTERNS.ipv4;

export interface Uplink {
  name: string;
  interface: string;
  /** Without it: "dev IF" on a point-to-point link (PPP), else the gateway of IF's default route in main (DHCP). */
  gateway?: string;
  weight: number;
  masquerade: boolean;
  /** Addresses pinged through this uplink (default: the play-wide check targets). */
  check_targets?: string[];
}

export interface MultiwanArgs {
  uplinks: Uplink[];
  check: { targets: string[]; interval: number; timeout: number; fail_after: number; recover_after: number; wait: number; required_up?: number };
  priority_base: number;
  table_base: number;
  /** nftables (preferred), or iptables where that is what the host has. */
  firewall: "nftables" | "iptables";
}

export const PATHS = {
  agent: "/usr/local/sbin/provision-multiwan",
  config: "/etc/provision/multiwan.conf",
  nftRuleset: "/etc/provision/multiwan.nft",
  iptablesRuleset: "/etc/provision/multiwan.iptables",
  sysctl: "/etc/sysctl.d/90-provision-multiwan.conf",
  unit: "/etc/systemd/system/provision-multiwan.service",
  status: "/run/provision-multiwan/status",
};
// The agent (agent.sh, clear-state.sh) spells these names out too: a unit test holds them equal.
export const SERVICE = "provision-multiwan";
export const NFT_TABLE = "provision_multiwan";
/** iptables: a chain of our own per hook, entered by one jump rule tagged with this comment. */
export const IPT_TAG = "provision-multiwan";
export const IPT_CHAINS: Record<string, { table: string; parent: string; chain: string }> = {
  prerouting: { table: "mangle", parent: "PREROUTING", chain: "PROVISION_MW_PRE" },
  output: { table: "mangle", parent: "OUTPUT", chain: "PROVISION_MW_OUT" },
  postrouting: { table: "mangle", parent: "POSTROUTING", chain: "PROVISION_MW_POST" },
  nat: { table: "nat", parent: "POSTROUTING", chain: "PROVISION_MW_NAT" },
};
export const rulesetPath = (a: MultiwanArgs) => (a.firewall === "iptables" ? PATHS.iptablesRuleset : PATHS.nftRuleset);
/** Connection marks live in these bits; everything else in a mark is left alone. */
export const MARK_MASK = 0xff0000;
export const SYSCTLS: Record<string, string> = {
  "net.ipv4.ip_forward": "1",
  // hash on ports too, so many connections to one server still spread over the uplinks
  "net.ipv4.fib_multipath_hash_policy": "1",
  // loose: a reply may arrive on an uplink other than the one the main table would pick
  "net.ipv4.conf.all.rp_filter": "2",
};

export const hex = (n: number) => `0x${n.toString(16)}`;
export const markOf = (index: number) => (index + 1) << 16;
export const tableOf = (a: MultiwanArgs, index: number) => a.table_base + 1 + index;
export const rulePriorityOf = (a: MultiwanArgs, index: number) => a.priority_base + 10 + index;
export const balancedPriority = (a: MultiwanArgs) => a.priority_base + 90;
export const targetsOf = (a: MultiwanArgs, u: Uplink) => u.check_targets ?? a.check.targets;

export const multiwanSchema = {
  type: "object",
  additionalProperties: false,
  required: ["uplinks"],
  properties: {
    uplinks: {
      type: "array",
      minItems: 2,
      maxItems: 8,
      items: {
        type: "object",
        additionalProperties: false,
        required: ["name", "interface"],
        properties: {
          name: { type: "string", pattern: "^[a-z][a-z0-9]{0,11}$" },
          interface: { type: "string", pattern: IFNAME },
          gateway: { type: "string", pattern: IPV4 },
          weight: { type: "integer", minimum: 1, maximum: 256, default: 1 },
          masquerade: { type: "boolean", default: true },
          check_targets: { type: "array", minItems: 1, maxItems: 4, items: { type: "string", pattern: IPV4 } },
        },
      },
    },
    check: {
      type: "object",
      additionalProperties: false,
      default: {},
      properties: {
        targets: { type: "array", minItems: 1, maxItems: 4, items: { type: "string", pattern: IPV4 }, default: [] },
        interval: { type: "number", minimum: 0.2, maximum: 60, default: 1 },
        timeout: { type: "number", minimum: 0.2, maximum: 10, default: 1 },
        fail_after: { type: "integer", minimum: 1, maximum: 100, default: 3 },
        recover_after: { type: "integer", minimum: 1, maximum: 100, default: 3 },
        /** How long verification waits for the agent's first verdict on every uplink. */
        wait: { type: "integer", minimum: 1, maximum: 600, default: 30 },
        /** How many uplinks must answer for the run to pass (default: all); the others are reported. */
        required_up: { type: "integer", minimum: 1, maximum: 8 },
      },
    },
    priority_base: { type: "integer", minimum: 1, maximum: 32600, default: 30000 },
    table_base: { type: "integer", minimum: 1, maximum: 250, default: 200 },
    firewall: { type: "string", enum: ["nftables", "iptables"], default: "nftables" },
  },
};
