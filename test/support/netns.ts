// Network namespaces for test hosts: every test's traffic stays inside these.
import { randomBytes } from "node:crypto";
import { onCleanup, sh } from "./processes.js";

export type Namespace = { name: string; remove: () => void };

export function uniqueName(prefix: string): string {
  return `${prefix}-${randomBytes(3).toString("hex")}`;
}

/** Create a netns with loopback up; removed at cleanup. */
export function createNamespace(name: string): Namespace {
  sh(["ip", "netns", "add", name]);
  const remove = onCleanup(`netns ${name}`, () => sh(["ip", "netns", "delete", name], { allowFail: true }));
  sh(["ip", "-n", name, "link", "set", "lo", "up"]);
  return { name, remove };
}

/** A bridge with an address inside `ns`; the controller and the repo server live on it. */
export function createBridge(ns: string, bridge: string, cidr?: string): void {
  sh(["ip", "-n", ns, "link", "add", bridge, "type", "bridge"]);
  if (cidr) sh(["ip", "-n", ns, "addr", "add", cidr, "dev", bridge]);
  sh(["ip", "-n", ns, "link", "set", bridge, "up"]);
}

/** argv that runs `argv` inside `ns`. */
export function inNamespace(ns: string, argv: string[]): string[] {
  return ["ip", "netns", "exec", ns, ...argv];
}
