// apt: Debian packages present or absent, installed non-interactively with apt-get.
import { defineModule, commandChange, readShellAsset, type Change, type CommandOutput } from "../../core/module-api.js";

export interface AptArgs {
  name: string | string[];
  state: "present" | "absent";
  update_cache: boolean;
}

const names = (a: AptArgs) => [a.name].flat();
const APT_ENV = ["env", "DEBIAN_FRONTEND=noninteractive", "NEEDRESTART_MODE=a"];

const INSTALL = readShellAsset(import.meta.url, "install.sh");
const PURGE = readShellAsset(import.meta.url, "purge.sh");

/** Installed packages from `dpkg-query -W -f '${Package} ${db:Status-Abbrev}\n'`. */
export function installedPackages(output: CommandOutput): Set<string> {
  const installed = new Set<string>();
  for (const line of output.stdout.split("\n")) {
    const [pkg, status] = line.trim().split(/\s+/);
    if (pkg && status?.startsWith("ii")) installed.add(pkg.split(":")[0]);
  }
  return installed;
}

const query = (a: AptArgs) => ({ command: ["dpkg-query", "-W", "-f", "${Package} ${db:Status-Abbrev}\n", "--", ...names(a)] });

export default defineModule({
  name: "apt",
  description: "Ensure Debian packages are installed (refreshing the index when a package is unknown) or removed",
  schema: {
    type: "object",
    additionalProperties: false,
    required: ["name"],
    properties: {
      name: {
        oneOf: [
          { type: "string", pattern: "^[a-z0-9][a-z0-9+.-]+$" },
          { type: "array", minItems: 1, items: { type: "string", pattern: "^[a-z0-9][a-z0-9+.-]+$" } },
        ],
      },
      state: { type: "string", enum: ["present", "absent"], default: "present" },
      update_cache: { type: "boolean", default: false },
    },
  },
  facts: (a: AptArgs) => ({ packages: query(a) }),
  plan(a: AptArgs, facts: { packages: CommandOutput }): Change[] {
    const installed = installedPackages(facts.packages);
    const changes: Change[] = [];
    if (a.update_cache) changes.push(commandChange("refresh the package index", [...APT_ENV, "apt-get", "update", "-q"]));
    if (a.state === "present") {
      const missing = names(a).filter((p) => !installed.has(p));
      if (missing.length)
        changes.push(
          commandChange(`install ${missing.join(", ")}`, [...APT_ENV, "sh", "-c", INSTALL, "apt-install", ...missing], [...APT_ENV, "sh", "-c", PURGE, "apt-purge", ...missing]),
        );
    } else {
      const present = names(a).filter((p) => installed.has(p));
      if (present.length)
        changes.push(
          commandChange(
            `remove ${present.join(", ")}`,
            [...APT_ENV, "apt-get", "remove", "-y", "-q", "--", ...present],
            [...APT_ENV, "sh", "-c", INSTALL, "apt-install", ...present],
          ),
        );
    }
    return a.update_cache && changes.length === 1 ? [] : changes;
  },
  verify: {
    probes: (a: AptArgs) => ({ packages: query(a) }),
    check(a: AptArgs, facts: { packages: CommandOutput }) {
      const installed = installedPackages(facts.packages);
      return names(a)
        .filter((p) => installed.has(p) !== (a.state === "present"))
        .map((p) => `${p} is ${a.state === "present" ? "not installed" : "still installed"}`);
    },
  },
});
