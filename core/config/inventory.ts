// Inventory: hosts, groups (hosts, children, vars) and variable precedence
// all < parent group < group < host, as in Ansible.
import { dirname, isAbsolute, resolve } from "node:path";
import { homedir } from "node:os";
import { readFileSync } from "node:fs";
import { compile, isHostAddress } from "./schema.js";
import { YamlSource, type Decrypted, type Path } from "./yaml-source.js";
import { ConfigError, quote } from "../errors.js";
import type { ConnectionTarget } from "../transport/ssh.js";

export type Vars = Record<string, unknown>;

export interface InventoryHost {
  name: string;
  groups: string[];
  vars: Vars;
}

export interface Inventory {
  file: string;
  hosts: Map<string, InventoryHost>;
  groups: Map<string, string[]>;
  /** Plaintexts of its encrypted values: secret whatever they are called. */
  secrets: string[];
}

const hostVars = {
  type: ["object", "null"],
  properties: {
    address: { type: "string", format: "host-address" },
    port: { type: "integer", minimum: 1, maximum: 65535 },
    user: { type: "string", pattern: "^[a-z_][a-z0-9_.-]*$" },
    identity_file: { type: "string", format: "single-line" },
    known_hosts_file: { type: "string", format: "single-line" },
    become: { type: "boolean" },
    connect_timeout: { type: "integer", minimum: 1 },
    confirm_timeout: { type: "integer", minimum: 0 },
    // read from all: vars: only (see vault.ts)
    age_identity_file: { type: "string", format: "single-line" },
    age_recipients_file: { type: "string", format: "single-line" },
  },
};

const name = { type: "string", format: "inventory-name" };

export const inventorySchema = {
  type: "object",
  propertyNames: name,
  additionalProperties: { $ref: "#/$defs/group" },
  $defs: {
    group: {
      type: ["object", "null"],
      additionalProperties: false,
      properties: {
        hosts: { type: ["object", "null"], propertyNames: name, additionalProperties: hostVars },
        vars: { ...hostVars, type: "object" },
        children: { type: ["object", "null"], propertyNames: name, additionalProperties: { $ref: "#/$defs/group" } },
      },
    },
  },
};

type GroupDoc = { hosts?: Record<string, Vars | null> | null; vars?: Vars; children?: Record<string, GroupDoc | null> | null } | null;

/** `decrypted`: the plaintexts of its encrypted values (openSecrets in vault.ts). */
export function loadInventory(file: string, decrypted: Decrypted = new Map()): Inventory {
  const source = YamlSource.load(file, "an inventory", { decrypted });
  const doc = source.toJS() ?? {};
  const validate = compile(inventorySchema);
  if (!validate(doc)) throw source.schemaError(validate.errors ?? [], [], "inventory");
  return { ...buildInventory(source, doc as Record<string, GroupDoc>, dirname(resolve(file))), secrets: source.secrets };
}

function buildInventory(source: YamlSource, doc: Record<string, GroupDoc>, baseDir: string): Omit<Inventory, "secrets"> {
  const groupVars = new Map<string, { depth: number; vars: Vars }>();
  const members = new Map<string, Set<string>>();
  const ownVars = new Map<string, Vars>();
  const hostGroups = new Map<string, Set<string>>();
  const parents = new Map<string, Set<string>>();

  const visit = (name: string, group: GroupDoc, depth: number, path: Path, parent?: string) => {
    if (parent) (parents.get(name) ?? parents.set(name, new Set()).get(name)!).add(parent);
    const known = groupVars.get(name);
    groupVars.set(name, { depth: Math.max(depth, known?.depth ?? 0), vars: { ...known?.vars, ...group?.vars } });
    if (!members.has(name)) members.set(name, new Set());
    for (const [host, vars] of Object.entries(group?.hosts ?? {})) {
      if (vars?.address === undefined && !ownVars.get(host)?.address && !isHostAddress(host))
        throw new ConfigError(
          `${source.keyPosition([...path, "hosts"], host)}: inventory: host ${quote(host)} has no address and its name is not a host name or IP address. Set address: for it.`,
        );
      members.get(name)!.add(host);
      ownVars.set(host, { ...ownVars.get(host), ...vars });
      (hostGroups.get(host) ?? hostGroups.set(host, new Set()).get(host)!).add(name);
    }
    for (const [child, childGroup] of Object.entries(group?.children ?? {})) {
      if (isAncestor(parents, name, child)) throw new ConfigError(`${source.keyPosition([...path, "children"], child)}: group ${quote(child)} contains itself. Remove the cycle.`);
      visit(child, childGroup, depth + 1, [...path, "children", child], name);
    }
  };
  for (const [name, group] of Object.entries(doc)) visit(name, group, name === "all" ? 0 : 1, [name]);

  for (const name of hostGroups.keys()) if (groupVars.has(name)) throw new ConfigError(`${source.file}: ${quote(name)} is both a host and a group. Rename one of them.`);
  const hosts = new Map<string, InventoryHost>();
  for (const [name, groups] of hostGroups) {
    const all = new Set<string>(["all"]);
    const addWithParents = (g: string) => {
      if (all.has(g) && g !== "all") return;
      all.add(g);
      for (const p of parents.get(g) ?? []) addWithParents(p);
    };
    groups.forEach(addWithParents);
    const ordered = [...all].sort((a, b) => depthOf(groupVars, a) - depthOf(groupVars, b) || a.localeCompare(b));
    const vars = Object.assign({}, ...ordered.map((g) => groupVars.get(g)?.vars ?? {}), ownVars.get(name));
    for (const key of ["identity_file", "known_hosts_file"]) if (typeof vars[key] === "string") vars[key] = resolvePath(vars[key] as string, baseDir);
    hosts.set(name, { name, groups: ordered, vars });
  }
  const groups = new Map<string, string[]>();
  for (const g of groupVars.keys())
    groups.set(
      g,
      [...hosts.values()].filter((h) => h.groups.includes(g)).map((h) => h.name),
    );
  groups.set("all", [...hosts.keys()]);
  return { file: source.file, hosts, groups };
}

function depthOf(groups: Map<string, { depth: number }>, name: string): number {
  return name === "all" ? -1 : (groups.get(name)?.depth ?? 0);
}

function isAncestor(parents: Map<string, Set<string>>, group: string, candidate: string): boolean {
  if (group === candidate) return true;
  return [...(parents.get(group) ?? [])].some((p) => isAncestor(parents, p, candidate));
}

function resolvePath(path: string, baseDir: string): string {
  if (path.startsWith("~/")) return resolve(homedir(), path.slice(2));
  return isAbsolute(path) ? path : resolve(baseDir, path);
}

/**
 * Host patterns as in Ansible: "all", group or host names, globs ("pi*"),
 * joined by ":" or ","; "!x" excludes, "&x" intersects; "@file" reads names from a file.
 */
export function selectHosts(inventory: Inventory, pattern: string): string[] {
  const order = [...inventory.hosts.keys()];
  const terms = expandFiles(pattern)
    .split(/[:,]/)
    .map((t) => t.trim())
    .filter(Boolean);
  // "!x" alone means every host but x, as in Ansible.
  let selected = new Set<string>(terms[0]?.startsWith("!") ? order : []);
  for (const term of terms) {
    const op = term[0] === "!" || term[0] === "&" ? term[0] : "";
    const names = matchTerm(inventory, op ? term.slice(1) : term);
    if (op === "!") names.forEach((n) => selected.delete(n));
    else if (op === "&") selected = new Set([...selected].filter((n) => names.includes(n)));
    else names.forEach((n) => selected.add(n));
  }
  return order.filter((n) => selected.has(n));
}

function expandFiles(pattern: string): string {
  return pattern
    .split(/[:,]/)
    .map((term) => {
      if (!term.startsWith("@")) return term;
      try {
        return readFileSync(term.slice(1), "utf8").split(/\s+/).filter(Boolean).join(",");
      } catch {
        throw new ConfigError(`--limit ${quote(term)}: cannot read ${quote(term.slice(1))}. Give an existing retry file.`);
      }
    })
    .join(",");
}

function matchTerm(inventory: Inventory, term: string): string[] {
  if (term === "all" || term === "*") return [...inventory.hosts.keys()];
  if (inventory.groups.has(term)) return inventory.groups.get(term)!;
  if (inventory.hosts.has(term)) return [term];
  if (/[*?]/.test(term)) {
    const regex = globToRegExp(term);
    const groups = [...inventory.groups.keys()].filter((g) => regex.test(g)).flatMap((g) => inventory.groups.get(g)!);
    return [...new Set([...[...inventory.hosts.keys()].filter((h) => regex.test(h)), ...groups])];
  }
  return [];
}

/** A glob: "*" any run of characters, "?" one character, everything else literal (".", "[", "(", "+"…). */
export function globToRegExp(glob: string): RegExp {
  const source = [...glob].map((c) => (c === "*" ? ".*" : c === "?" ? "." : c.replace(/[\\^$.|+()[\]{}\/]/g, "\\$&"))).join("");
  return new RegExp(`^${source}$`, "su");
}

export interface TargetOptions {
  acceptNewHostKeys: boolean;
  knownHostsFile?: string;
}

export function connectionTarget(host: InventoryHost, options: TargetOptions): ConnectionTarget {
  const v = host.vars;
  return {
    name: host.name,
    address: (v.address as string | undefined) ?? host.name,
    port: (v.port as number | undefined) ?? 22,
    user: (v.user as string | undefined) ?? "root",
    identityFile: v.identity_file as string | undefined,
    become: (v.become as boolean | undefined) ?? false,
    connectTimeoutSeconds: (v.connect_timeout as number | undefined) ?? 10,
    hostKeys: {
      file: options.knownHostsFile ?? (v.known_hosts_file as string | undefined) ?? resolve(homedir(), ".ssh/known_hosts"),
      acceptNew: options.acceptNewHostKeys,
    },
  };
}
