// A local apt repository holding real .debs (ifenslave), served over HTTP inside a
// test namespace, so the apt module installs packages the real way.
import { existsSync, mkdirSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { cacheDir } from "./cache.js";
import { sh, startDaemon } from "./processes.js";
import { inNamespace } from "./netns.js";

/**
 * Debian 12's own nodejs (18.x) and what it needs beyond the guests' base root, for the pull
 * agent (test/lab/pull.test.ts). Taken from bookworm by name: this machine may have another
 * repository's nodejs as its candidate.
 */
export const NODE_PACKAGES = [
  "nodejs",
  "libnode108",
  "libuv1",
  "libc-ares2",
  "libicu72",
  "libbrotli1",
  "libnghttp2-14",
  "node-acorn",
  "node-xtend",
  "node-cjs-module-lexer",
  "node-undici",
  "node-busboy",
].map((p) => `${p}/bookworm`);

export const REPO_PACKAGES = ["ifenslave", "iptables", "libip6tc2", "libnetfilter-conntrack3", "libnfnetlink0", ...NODE_PACKAGES];

/** Download the packages once (cached) and index them; returns the repo folder. */
export function buildAptRepo(): string {
  const dir = join(cacheDir(), "apt-repo");
  mkdirSync(dir, { recursive: true });
  const have = readdirSync(dir).filter((f) => f.endsWith(".deb"));
  const missing = REPO_PACKAGES.filter((p) => !have.some((f) => f.startsWith(`${p.split("/")[0]}_`)));
  if (missing.length) {
    const r = sh(["sh", "-c", 'cd "$1" && shift && apt-get download "$@"', "sh", dir, ...missing], { allowFail: true });
    if (r.code !== 0) {
      sh(["apt-get", "update"]);
      sh(["sh", "-c", 'cd "$1" && shift && apt-get download "$@"', "sh", dir, ...missing]);
    }
  }
  if (!existsSync(join(dir, "Packages.gz")) || missing.length) sh(["sh", "-c", 'cd "$1" && dpkg-scanpackages -m . /dev/null > Packages && gzip -kf Packages', "sh", dir]);
  return dir;
}

/** Serve the repo at http://ADDRESS:PORT/ inside namespace `ns`; killed at cleanup. */
export function serveAptRepo(ns: string, address: string, port = 8080): { url: string; sourcesLine: string; stop: () => void } {
  const dir = buildAptRepo();
  const server = startDaemon(`apt repo ${ns}`, inNamespace(ns, ["python3", "-m", "http.server", String(port), "--bind", address, "--directory", dir]));
  const url = `http://${address}:${port}`;
  return { url, sourcesLine: `deb [trusted=yes] ${url} ./\n`, stop: server.stop };
}
