import { mkdirSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { sh } from "./processes.js";

/** The repository root, whether running from source or from dist/. */
export const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), fileURLToPath(import.meta.url).includes("/dist/") ? "../../.." : "../..");

/** Built images are cached here (git-ignored; CI points it at a machine-wide folder). */
export function cacheDir(): string {
  const dir = process.env.PROVISION_LAB_CACHE ?? join(repoRoot, ".cache", "lab");
  mkdirSync(dir, { recursive: true });
  return dir;
}

/** The shared Debian 12 root file system (built once by test/lab/build-rootfs.sh). */
export function baseRootfs(): string {
  return sh(["bash", join(repoRoot, "test", "lab", "build-rootfs.sh")]).stdout.trim();
}
