// Everything a run needs before any host is contacted: secrets opened, the inventory and
// playbooks loaded, plugins registered, every task templated and validated for every host.
// Shared by a run and `provision watch`.
import { loadInventory, type Inventory } from "../core/config/inventory.js";
import { checkModules, loadPlaybook, type Playbook } from "../core/config/playbook.js";
import { BUILT_IN, Registry, playbookDir } from "../core/config/registry.js";
import { openSecrets } from "../core/config/vault.js";
import { prepare, type PreparedPlay, type RunSettings } from "../core/run/run.js";
import { builtinModules } from "../modules/index.js";

function warn(message: string): void {
  console.error(`provision: warning: ${message}`);
}

/** The prepared plays of `playbookFiles` (none: a reachability check) on the inventory's hosts. */
export async function loadPlays(
  inventoryFile: string,
  playbookFiles: string[],
  settings: RunSettings,
): Promise<{ inventory: Inventory; playbooks: Playbook[]; plays: PreparedPlay[] }> {
  // encrypted values are decrypted (in memory) before anything else is loaded: a missing or wrong key stops here
  const opened = await openSecrets(
    inventoryFile,
    playbookFiles.map((file) => ({ file, kind: "a playbook" })),
  );
  opened.warnings.forEach(warn);
  const inventory = loadInventory(inventoryFile, opened.decrypted);
  const registry = new Registry();
  for (const module of builtinModules) registry.register(module, BUILT_IN);
  const playbooks = playbookFiles.map((file) => loadPlaybook(file, opened.decrypted));
  for (const [i, playbook] of playbooks.entries())
    for (const play of playbook.plays) for (const plugin of play.plugins) await registry.loadPlugin(plugin, playbookDir(playbookFiles[i]));
  for (const playbook of playbooks) checkModules(playbook, registry);
  const plays = prepare(inventory, playbooks, registry, settings);
  if (!playbooks.length) plays.push(...prepare(inventory, [pingPlaybook()], registry, settings));
  return { inventory, playbooks, plays };
}

/** No playbook: a play with no tasks still connects and gathers host facts. */
function pingPlaybook() {
  return {
    file: "(reachability check)",
    source: null as never,
    plays: [{ name: "reachability check", hosts: "all", vars: {}, plugins: [], tasks: [], handlers: [], anyErrorsFatal: false, path: [] }],
  };
}
