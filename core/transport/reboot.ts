// Reboot a host and wait until it answers with a new boot_id.
import type { Connection } from "./ssh.js";
import { HostError, messageOf } from "../errors.js";
import { script } from "./shell.js";

// everything written reaches the disk before the reboot, whatever the init does
const REBOOT = `sync
if command -v systemd-run >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
  systemd-run --quiet --on-active=1 --timer-property=AccuracySec=100ms /bin/systemctl reboot
else
  (sleep 1; reboot) </dev/null >/dev/null 2>&1 &
fi`;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export class RebootTimeout extends HostError {}

const readBootId = async (c: Connection) => (await c.run("read boot_id", ["cat", "/proc/sys/kernel/random/boot_id"])).trim();

/** Reboot, then reconnect (at `address`, fresh) until a new boot_id answers or `deadline` passes. */
export async function rebootAndWait(c: Connection, opts: { address: string; deadline: number; limit: string; progress: (m: string) => void }): Promise<void> {
  const before = await readBootId(c);
  opts.progress("rebooting");
  await c.run("schedule reboot", script(REBOOT));
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
