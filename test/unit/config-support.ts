// What the configuration tests share: files written into a temporary folder (removed at
// exit), a registry of the built-in modules, and check-mode run settings.
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { BUILT_IN, Registry } from "../../core/config/registry.js";
import { builtinModules } from "../../modules/index.js";

/** write(name, text) → the path of a new file in a temporary folder of its own. */
export function tempWriter(prefix: string): { dir: string; write: (name: string, text: string) => string } {
  const dir = mkdtempSync(join(tmpdir(), `${prefix}-`));
  process.on("exit", () => rmSync(dir, { recursive: true, force: true }));
  return {
    dir,
    write: (name, text) => {
      const file = join(dir, name);
      writeFileSync(file, text);
      return file;
    },
  };
}

export function builtinRegistry(): Registry {
  const r = new Registry();
  builtinModules.forEach((m) => r.register(m, BUILT_IN));
  return r;
}

export const settings = { check: true, breakLock: false, forks: 5, tags: [], skipTags: [], acceptNewHostKeys: false, renderer: "silent" as const };
