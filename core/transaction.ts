// Host-side safety for one run on one host: a lock, a transaction record with
// backups, and a dead-man switch that reverts the host by itself unless the
// controller confirms from outside. Everything here runs as constant scripts with
// values passed as positional parameters.
import { hostname } from "node:os";
import type { Connection } from "./transport/ssh.js";
import { HostError } from "./errors.js";
import { script } from "./shell.js";

export const STATE_DIR = "/var/lib/provision";
export type TransactionState = "pending" | "committed" | "rolled_back" | "reverted";

/** Restore every file of a transaction from its backups; shared by controller and host. */
const RESTORE_FILES = `restore_files() {
  tab=$(printf '\\t')
  [ -f "$1/manifest" ] || return 0
  while IFS=$tab read -r n state path; do
    if [ "$state" = present ]; then
      cp -a -- "$1/$n" "$path.provision-restore" && mv -f -- "$path.provision-restore" "$path"
    else
      rm -f -- "$path"
    fi
  done < "$1/manifest"
}`;

/** Installed on the host when armed; runs there without any controller. */
const REVERT_PROGRAM = `#!/bin/sh
# provision: restore the armed transaction and reboot. Runs on this host, from a
# systemd timer, when no controller confirmed a disruptive change in time.
base=${STATE_DIR}
[ -f "$base/armed" ] || exit 0
id=$(cat "$base/armed")
dir="$base/runs/$id"
${RESTORE_FILES}
restore_files "$dir"
echo reverted > "$dir/state"
date +%s > "$dir/reverted-at"
rm -f "$base/armed"
grep -q "run=$id\$" "$base/lock" 2>/dev/null && rm -f "$base/lock"
systemctl disable --now provision-revert.timer >/dev/null 2>&1
rm -f /etc/systemd/system/provision-revert.service /etc/systemd/system/provision-revert.timer
systemctl daemon-reload
sync
systemctl reboot
`;

const LOCK = `set -e
base=$1 info=$2 force=$3
mkdir -p -m 0700 "$base"
if [ "$force" = 1 ]; then rm -f "$base/lock"; fi
if ( set -C; printf '%s\\n' "$info" > "$base/lock" ) 2>/dev/null; then exit 0; fi
cat "$base/lock"
exit 3`;

const UNLOCK = `base=$1 info=$2
[ "$(cat "$base/lock" 2>/dev/null)" = "$info" ] && rm -f "$base/lock"
exit 0`;

const BEGIN = `set -e
base=$1 id=$2 meta=$3
mkdir -p -m 0700 "$base/runs/$id"
printf '%s\\n' "$meta" > "$base/runs/$id/meta"
echo pending > "$base/runs/$id/state"
echo "$id" > "$base/last"`;

const BACKUP = `set -e
dir=$1 path=$2 n=$3
if [ -e "$path" ] || [ -L "$path" ]; then cp -a -- "$path" "$dir/$n"; state=present; else state=absent; fi
printf '%s\\t%s\\t%s\\n' "$n" "$state" "$path" >> "$dir/manifest"`;

const RESTORE = `set -e
${RESTORE_FILES}
restore_files "$1"`;

const ARM = `set -e
base=$1 id=$2 timeout=$3
if ! command -v systemd-run >/dev/null 2>&1 || [ ! -d /run/systemd/system ]; then
  echo "the host does not run systemd" >&2; exit 3
fi
cat > "$base/revert.sh"
chmod 0700 "$base/revert.sh"
cat > /etc/systemd/system/provision-revert.service <<UNIT
[Unit]
Description=provision: revert an unconfirmed network change
ConditionPathExists=$base/armed
[Service]
Type=oneshot
ExecStart=/bin/sh $base/revert.sh
UNIT
cat > /etc/systemd/system/provision-revert.timer <<UNIT
[Unit]
Description=provision: revert at boot unless the controller confirms
[Timer]
OnBootSec=\${timeout}s
AccuracySec=1s
[Install]
WantedBy=timers.target
UNIT
echo "$id" > "$base/armed"
systemctl daemon-reload
systemctl enable provision-revert.timer >/dev/null 2>&1
systemctl stop provision-revert-now.timer >/dev/null 2>&1 || true
systemd-run --quiet --unit=provision-revert-now --on-active=\${timeout}s --timer-property=AccuracySec=1s /bin/sh "$base/revert.sh"`;

const DISARM = `base=$1 id=$2 state=$3
rm -f "$base/armed"
systemctl stop provision-revert-now.timer provision-revert-now.service >/dev/null 2>&1
systemctl disable --now provision-revert.timer >/dev/null 2>&1
rm -f /etc/systemd/system/provision-revert.service /etc/systemd/system/provision-revert.timer
systemctl daemon-reload >/dev/null 2>&1
[ -z "$state" ] || echo "$state" > "$base/runs/$id/state"
exit 0`;

// builtins only: it runs in every audit of every host
const LAST = `base=$1
read -r id 2>/dev/null < "$base/last" || exit 0
state=unknown armed=-
read -r state 2>/dev/null < "$base/runs/$id/state"
read -r armed 2>/dev/null < "$base/armed"
printf '%s %s %s\\n' "$id" "$state" "$armed"`;

export interface LastTransaction { id: string; state: TransactionState | "unknown"; armed: boolean }

/** The command probe that reports the host's last transaction (see parseLastTransaction). */
export const lastTransactionProbe = { command: script(LAST, STATE_DIR) };

export function parseLastTransaction(stdout: string): LastTransaction | null {
  const [id, state, armed] = stdout.trim().split(" ");
  return id ? { id, state: state as LastTransaction["state"], armed: armed !== undefined && armed !== "-" } : null;
}

export class Transaction {
  private backedUp = new Set<string>();
  private started = false;
  armed = false;
  private rebootNoted = false;
  private readonly lockInfo: string;

  constructor(private readonly connection: Connection, readonly id: string) {
    this.lockInfo = `controller=${hostname()} pid=${process.pid} since=${new Date().toISOString()} run=${id}`;
  }

  get dir(): string {
    return `${STATE_DIR}/runs/${this.id}`;
  }

  get paths(): string[] {
    return [...this.backedUp];
  }

  /** One run per host at a time; a second controller fails fast naming the holder. */
  async lock(breakLock: boolean): Promise<void> {
    const r = await this.connection.exec(script(LOCK, STATE_DIR, this.lockInfo, breakLock ? "1" : "0"));
    if (r.code === 3)
      throw new HostError(this.connection.target.name, `locked by another run (${r.stdout.trim()}). Wait for it to finish; if that controller is dead, rerun with --break-lock`);
    if (r.code !== 0) throw new HostError(this.connection.target.name, `cannot take the lock in ${STATE_DIR}: ${r.stderr.trim()}`);
  }

  async unlock(): Promise<void> {
    if (this.connection.connected) await this.connection.exec(script(UNLOCK, STATE_DIR, this.lockInfo));
  }

  /** No write without a backup first: copy (mode, owner kept) + manifest line. */
  /** Record the transaction on the host before its first write. */
  private async begin(): Promise<void> {
    if (this.started) return;
    const meta = `${this.lockInfo} user=${this.connection.target.user}`;
    await this.connection.run("record the transaction", script(BEGIN, STATE_DIR, this.id, meta));
    this.started = true;
  }

  async backup(path: string): Promise<void> {
    if (this.backedUp.has(path)) return;
    await this.begin();
    await this.connection.run(`back up ${path}`, script(BACKUP, this.dir, path, String(this.backedUp.size)));
    this.backedUp.add(path);
  }

  /** The transaction holds changes that take effect at boot: undoing it by hand needs a reboot too. */
  async noteReboot(): Promise<void> {
    if (this.rebootNoted) return;
    await this.connection.run("note reboot", ["touch", `${this.dir}/needs-reboot`]);
    this.rebootNoted = true;
  }

  async restore(): Promise<void> {
    if (this.backedUp.size) await this.connection.run("restore backups", script(RESTORE, this.dir));
  }

  /** Arm the host to revert by itself after `timeoutSeconds`, now and after any reboot. */
  async arm(timeoutSeconds: number): Promise<void> {
    await this.begin();
    const r = await this.connection.exec(script(ARM, STATE_DIR, this.id, String(timeoutSeconds)), REVERT_PROGRAM);
    if (r.code !== 0)
      throw new HostError(this.connection.target.name, `cannot arm the host-side revert (${r.stderr.trim() || `exit ${r.code}`}); refusing a disruptive change. Set confirm_timeout: 0 to run it unguarded`);
    this.armed = true;
  }

  async disarm(state?: TransactionState): Promise<void> {
    await this.connection.run("disarm the host-side revert", script(DISARM, STATE_DIR, this.id, state ?? ""));
    this.armed = false;
  }

  async mark(state: TransactionState): Promise<void> {
    if (this.started) await this.connection.run(`mark the transaction ${state}`, ["sh", "-c", 'echo "$2" > "$1/state"', "provision", this.dir, state]);
  }

  async state(): Promise<LastTransaction | null> {
    const r = await this.connection.exec(lastTransactionProbe.command);
    return parseLastTransaction(r.stdout);
  }
}

/** For `provision rollback`: restore the host's last transaction by hand; true when it needs a reboot. */
export async function restoreLast(connection: Connection, last: LastTransaction): Promise<boolean> {
  const dir = `${STATE_DIR}/runs/${last.id}`;
  await connection.run("restore the last transaction", script(RESTORE, dir));
  await connection.run("disarm", script(DISARM, STATE_DIR, last.id, "rolled_back"));
  return (await connection.exec(["test", "-e", `${dir}/needs-reboot`])).code === 0;
}

/** For `provision status`: the holder of the host's lock, if any. */
export async function lockHolder(connection: Connection): Promise<string | null> {
  const r = await connection.exec(["cat", `${STATE_DIR}/lock`]);
  return r.code === 0 ? r.stdout.trim() : null;
}
