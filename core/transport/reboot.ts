// Reboot a host and wait until it answers with a new boot_id; shared by the transports.
import type { RebootOptions, Transport } from "./transport.js";
import { HostError, messageOf } from "../errors.js";
import { readShellAsset } from "../module-api.js";
import { script } from "./shell.js";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export class RebootTimeout extends HostError {}

/** The script that schedules the reboot (everything written reaches the disk first). */
export const REBOOT_SCRIPT = readShellAsset(import.meta.url, "reboot.sh");

export const readBootId = async (c: Transport) => (await c.run("read boot_id", ["cat", "/proc/sys/kernel/random/boot_id"])).trim();

/** Schedule the reboot (in a second, detached): the command returns before the host goes down. */
export async function scheduleReboot(c: Transport): Promise<void> {
  await c.run("schedule reboot", script(REBOOT_SCRIPT));
}

/** Reboot over a transport that survives it (SSH): reconnect fresh at `address` until a new boot_id answers. */
export async function rebootOver(c: Transport, opts: RebootOptions): Promise<void> {
  const before = await readBootId(c);
  opts.progress("rebooting");
  await scheduleReboot(c);
  c.moveTo(opts.address);
  await sleep(3000);
  let last = "";
  while (Date.now() < opts.deadline) {
    try {
      await c.connect();
      if ((await readBootId(c)) !== before) {
        opts.progress(`back after reboot at ${opts.address} (new boot_id)`);
        return;
      }
      c.close();
    } catch (error) {
      last = messageOf(error);
    }
    await sleep(2000);
  }
  throw new RebootTimeout(c.target.name, `did not come back at ${opts.address} with a new boot_id within ${opts.limit}${last ? ` (last error: ${last})` : ""}`);
}
