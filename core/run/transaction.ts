// Host-side safety for one run on one host: a lock, a transaction record with
// backups, and a dead-man switch that reverts the host by itself unless the
// controller confirms from outside. Everything here runs as constant scripts with
// values passed as positional parameters.
import { createHash } from "node:crypto";
import { hostname } from "node:os";
import { HostError } from "../errors.js";
import { script } from "../transport/shell.js";
import { runBatch, runSteps, stepFailure, type Step } from "../transport/batch.js";
import type { ExecResult, Transport } from "../transport/transport.js";

export const STATE_DIR = "/var/lib/provision";
export type TransactionState = "pending" | "committed" | "rolled_back" | "reverting" | "reverted";

/**
 * Durable replace: stdin → FILE through a temp file that is fsynced before the rename,
 * and the folder fsynced after it, so a power cut leaves the old or the new file, never
 * a truncated one. Shared by every script that writes provision's own records.
 */
const PUT = `put() {
  cat > "$1.provision-tmp" && sync -- "$1.provision-tmp" && mv -f -- "$1.provision-tmp" "$1" && sync -- "$(dirname -- "$1")"
}`;

/**
 * The bytes a step carries arrive whole or not at all. Its stdin is the sha256 of the
 * content (one line), then the content; `receive FILE SIZE` writes the content to FILE and
 * fails, removing FILE, unless it is exactly SIZE bytes with that sum (the input ends early
 * when the connection is lost or the controller dies mid-send). The sum travels on stdin:
 * in argv every local user could read the hash of a file with a Wi-Fi PSK in it.
 */
const RECEIVE = `receive() {
  IFS= read -r sum || sum=
  cat > "$1" || { rm -f -- "$1"; return 1; }
  got=$(($(wc -c < "$1")))
  if [ "$got" -ne "$2" ]; then
    rm -f -- "$1"; echo "the input ended after $got of $2 bytes (connection lost mid-send?); nothing written" >&2; return 1
  fi
  got=$(sha256sum < "$1")
  if [ "\${got%% *}" != "$sum" ]; then
    rm -f -- "$1"; echo "the input does not match its sha256; nothing written" >&2; return 1
  fi
}`;

/** put, of a received input (see RECEIVE): a short or corrupt input leaves FILE as it was. */
const PUT_RECEIVED = `put_received() {
  receive "$1.provision-tmp" "$2" && sync -- "$1.provision-tmp" && mv -f -- "$1.provision-tmp" "$1" && sync -- "$(dirname -- "$1")"
}`;

/** A step's stdin for RECEIVE: the content's sha256, a newline, the content. */
function received(content: string): { stdin: string; size: string } {
  return { stdin: `${createHash("sha256").update(content).digest("hex")}\n${content}`, size: String(Buffer.byteLength(content)) };
}

/**
 * (Re)start the transient revert timer: $1 seconds from now. Two unit names take turns,
 * so the new timer runs before the old one stops (no moment unarmed) and a name is never
 * reused while systemd still holds the stopped unit.
 */
const RENEW_TIMER = `renew_timer() {
  if systemctl is-active --quiet provision-revert-now.timer; then new=provision-revert-now-b old=provision-revert-now
  else new=provision-revert-now old=provision-revert-now-b; fi
  for try in 1 2 3 4 5 6 7 8 9 10; do
    if systemd-run --quiet --unit="$new" --on-active="$1s" --timer-property=AccuracySec=1s /bin/sh "$base/revert.sh" 2>/dev/null; then
      systemctl stop "$old.timer" >/dev/null 2>&1 || true
      return 0
    fi
    sleep 0.3
  done
  echo "cannot start the revert timer" >&2
  return 1
}`;

/** Both names of the transient revert timer (see RENEW_TIMER). */
const NOW_TIMERS = "provision-revert-now.timer provision-revert-now-b.timer";

/** Restore every file of a transaction from its backups; shared by controller and host. */
const RESTORE_FILES = `restore_files() {
  tab=$(printf '\\t')
  [ -f "$1/manifest" ] || return 0
  while IFS=$tab read -r n state path; do
    if [ "$state" = present ]; then
      cp -a -- "$1/$n" "$path.provision-restore" && sync -- "$path.provision-restore" && mv -f -- "$path.provision-restore" "$path"
    else
      rm -f -- "$path"
    fi
    sync -- "$(dirname -- "$path")"
  done < "$1/manifest"
}`;

/**
 * Run the transaction's recorded undo commands, newest first: "all", or only the "safe"
 * ones (a reboot into the restored files undoes the disruptive ones, e.g. modprobe -r
 * of a module that holds the only address). Each record is one argv, NUL-separated.
 */
const RUN_UNDOS = `run_undos() {
  [ -d "$1/undo" ] || return 0
  failed=0
  for f in $(ls -r "$1/undo"); do
    case $f in *.provision-tmp) continue ;; *-disruptive) [ "$2" = all ] || continue ;; esac
    xargs -0 -r env -- < "$1/undo/$f" >&2 || { echo "undo $f failed"; failed=1; }
  done
  return $failed
}`;

/** Installed on the host when armed; runs there without any controller. */
const REVERT_PROGRAM = `#!/bin/sh
# provision: restore the armed transaction (files, then the safe undo commands) and
# reboot into the restored files. Runs on this host, from a systemd timer, when no
# controller renewed or confirmed the run in time, or when the controller rolls back.
base=${STATE_DIR}
[ -f "$base/armed" ] || exit 0
id=$(cat "$base/armed")
dir="$base/runs/$id"
${PUT}
${RESTORE_FILES}
${RUN_UNDOS}
# from now on a controller that comes back learns that the host is undoing the run
echo reverting | put "$dir/state"
restore_files "$dir"
run_undos "$dir" safe
echo reverted | put "$dir/state"
date +%s | put "$dir/reverted-at"
rm -f "$base/armed"
grep -q "run=$id\$" "$base/lock" 2>/dev/null && rm -f "$base/lock"
systemctl disable --now provision-revert.timer >/dev/null 2>&1
rm -f /etc/systemd/system/provision-revert.service /etc/systemd/system/provision-revert.timer
systemctl daemon-reload
sync
systemctl reboot
`;

const REVERT_PROGRAM_INPUT = received(REVERT_PROGRAM);

/**
 * Take the lock; or replace it when it is exactly the holder the controller judged
 * stale; or break it. On refusal: exit 3 with the holder, the lock's age in seconds,
 * the state of the holder's run and the armed run, one per line.
 */
const LOCK = `set -e
base=$1 info=$2 how=$3 stale=$4
mkdir -p -m 0700 "$base"
case $how in
  break) rm -f "$base/lock" ;;
  takeover) [ "$(cat "$base/lock" 2>/dev/null)" != "$stale" ] || rm -f "$base/lock" ;;
esac
if ( set -C; printf '%s\\n' "$info" > "$base/lock" ) 2>/dev/null; then sync -- "$base/lock"; exit 0; fi
holder=$(cat "$base/lock" 2>/dev/null || true)
age=$(( $(date +%s) - $(stat -c %Y "$base/lock" 2>/dev/null || date +%s) ))
state=none armed=-
{ read -r state < "$base/runs/\${holder##*run=}/state"; } 2>/dev/null || true
{ read -r armed < "$base/armed"; } 2>/dev/null || true
printf '%s\\n%s\\n%s\\n%s\\n' "$holder" "$age" "$state" "$armed"
exit 3`;

const UNLOCK = `base=$1 info=$2
[ "$(cat "$base/lock" 2>/dev/null)" = "$info" ] && rm -f "$base/lock"
exit 0`;

/**
 * Go on with run $2 after its machine's reboot (the local transport; see Transaction.resume).
 * Prints the run's state; exits RESUME_ENDED when the run is no longer pending, 3 (with the
 * holder) when the lock is not the run's own. Else it renews the lock's lease and prints
 * the holder, the armed run ("-": none), how many undo records and backups the run has
 * (the next numbers) and the paths it backed up, one per line.
 */
const RESUME = `base=$1 id=$2
dir=$base/runs/$id
state=none
read -r state 2>/dev/null < "$dir/state"
echo "$state"
[ "$state" = pending ] || exit 7 # RESUME_ENDED
holder=
read -r holder 2>/dev/null < "$base/lock"
case $holder in *" run=$id") ;; *) echo "$holder"; exit 3 ;; esac
touch -- "$base/lock"
armed=-
read -r armed 2>/dev/null < "$base/armed"
echo "$holder"
echo "$armed"
ls "$dir/undo" 2>/dev/null | grep -c '^[0-9]*-[a-z]*$'
backups=0
[ ! -f "$dir/manifest" ] || backups=$(grep -c . "$dir/manifest")
echo "$backups"
[ ! -f "$dir/manifest" ] || cut -f3 "$dir/manifest"
exit 0`;

/** RESUME's exit status when the run is not pending any more (committed, rolled back, reverted); its state is printed. */
export const RESUME_ENDED = 7;

/** HEARTBEAT's exit status when the host already reverts (or reverted) the run by itself. */
export const REVERTED_EXIT = 9;

/**
 * Every step of an armed run (and its return after a reboot): renew the lock's lease and
 * restart the host's revert timer, so the host reverts confirm_timeout after the
 * controller was last heard.
 * Prints the run's state; exits REVERTED_EXIT, renewing nothing, when the host already
 * reverts (or reverted) the run by itself.
 */
const HEARTBEAT = `base=$1 info=$2 id=$3 timeout=$4
${RENEW_TIMER}
state=$(cat "$base/runs/$id/state" 2>/dev/null || true)
case $state in reverting|reverted) echo "$state"; exit ${REVERTED_EXIT} ;; esac
[ "$(cat "$base/lock" 2>/dev/null)" = "$info" ] && touch -- "$base/lock"
if [ "$timeout" != 0 ] && [ "$(cat "$base/armed" 2>/dev/null)" = "$id" ]; then
  renew_timer "$timeout" || exit 1
  # this boot's run of the boot timer is replaced by the renewed one; it stays enabled for the next boot
  systemctl stop provision-revert.timer >/dev/null 2>&1
fi
echo "$state"`;

const BEGIN = `set -e
${PUT}
base=$1 id=$2 meta=$3
mkdir -p -m 0700 "$base/runs/$id"
printf '%s\\n' "$meta" | put "$base/runs/$id/meta"
echo pending | put "$base/runs/$id/state"
echo "$id" | put "$base/last"`;

/** Idempotent: a path already in the manifest keeps its first backup (a retried step). */
const BACKUP = `set -e
${PUT}
dir=$1 path=$2 n=$3
if [ -f "$dir/manifest" ] && P=$path awk -F '\\t' '$3 == ENVIRON["P"] { found = 1 } END { exit !found }' "$dir/manifest"; then exit 0; fi
if [ -e "$path" ] || [ -L "$path" ]; then cp -a -- "$path" "$dir/$n"; sync -- "$dir/$n"; state=present; else state=absent; fi
{ cat "$dir/manifest" 2>/dev/null || true; printf '%s\\t%s\\t%s\\n' "$n" "$state" "$path"; } | put "$dir/manifest"`;

/** Written (durably) before the command it undoes runs; idempotent for a retried step. */
const RECORD_UNDO = `set -e
${PUT}
dir=$1 name=$2
shift 2
mkdir -p -m 0700 "$dir/undo"
[ -e "$dir/undo/$name" ] || printf '%s\\0' "$@" | put "$dir/undo/$name"`;

const NOTE_REBOOT = `${PUT}
: | put "$1/needs-reboot"`;

/** Restore the files, then the undo commands: "all" or "safe" (see RUN_UNDOS). */
const RESTORE = `${RESTORE_FILES}
${RUN_UNDOS}
restore_files "$1"
run_undos "$1" "$2"`;

/**
 * Atomic and durable write of a received input (see RECEIVE): temp file in the same
 * directory, checked, fsynced, renamed, then the directory fsynced, so a power cut leaves
 * the old or the new file, and a short or corrupt input fails with the file as it was; an
 * existing file keeps its mode and owner.
 */
const WRITE_FILE = `set -e
${RECEIVE}
path=$1 mode=$2 size=$3
dir=$(dirname -- "$path")
mkdir -p -- "$dir"
tmp=$(mktemp -- "$dir/.provision.XXXXXX")
trap 'rm -f -- "$tmp"' EXIT
receive "$tmp" "$size" || exit 1
if [ -e "$path" ]; then
  chown --reference="$path" -- "$tmp"
  chmod --reference="$path" -- "$tmp"
else
  chmod "$mode" -- "$tmp"
fi
sync -- "$tmp"
mv -f -- "$tmp" "$path"
trap - EXIT
sync -- "$dir"`;

const REMOVE = `rm -f -- "$1" && sync -- "$(dirname -- "$1")"`;

/**
 * Every file of arming goes through put, the units are enabled and everything synced
 * before "armed" is written: a power cut leaves the host unarmed with nothing changed
 * yet, or fully armed.
 */
const ARM = `set -e
${PUT}
${RECEIVE}
${PUT_RECEIVED}
${RENEW_TIMER}
base=$1 id=$2 timeout=$3 size=$4
if ! command -v systemd-run >/dev/null 2>&1 || [ ! -d /run/systemd/system ]; then
  echo "the host does not run systemd" >&2; exit 4 # ARM_NO_SYSTEMD
fi
armed=$(cat "$base/armed" 2>/dev/null || true)
if [ -n "$armed" ] && [ "$armed" != "$id" ]; then
  echo "run $armed is still armed to revert on this host; wait for it or run provision rollback" >&2; exit 3
fi
put_received "$base/revert.sh" "$size" || exit 1
chmod 0700 "$base/revert.sh"
put /etc/systemd/system/provision-revert.service <<UNIT
[Unit]
Description=provision: revert an unconfirmed network change
ConditionPathExists=$base/armed
[Service]
Type=oneshot
ExecStart=/bin/sh $base/revert.sh
UNIT
put /etc/systemd/system/provision-revert.timer <<UNIT
[Unit]
Description=provision: revert at boot unless the controller confirms
[Timer]
OnBootSec=\${timeout}s
AccuracySec=1s
[Install]
WantedBy=timers.target
UNIT
systemctl daemon-reload
systemctl enable provision-revert.timer >/dev/null 2>&1
sync
echo "$id" | put "$base/armed"
renew_timer "$timeout"`;

/** The controller's rollback of an armed run is the host's own revert, started now. */
const REVERT_NOW = `base=$1
systemctl stop ${NOW_TIMERS} >/dev/null 2>&1
systemd-run --quiet --unit=provision-revert-rollback --on-active=1 --timer-property=AccuracySec=100ms /bin/sh "$base/revert.sh"`;

const DISARM = `${PUT}
base=$1 id=$2 state=$3
[ -z "$state" ] || echo "$state" | put "$base/runs/$id/state"
rm -f "$base/armed"
systemctl stop ${NOW_TIMERS} >/dev/null 2>&1
systemctl disable --now provision-revert.timer >/dev/null 2>&1
rm -f /etc/systemd/system/provision-revert.service /etc/systemd/system/provision-revert.timer
systemctl daemon-reload >/dev/null 2>&1
sync
exit 0`;

/** The host reverted the run and has booted since (its revert ends in a reboot). */
const REVERTED_AND_BOOTED = `d=$1/runs/$2
read -r state < "$d/state" && read -r at < "$d/reverted-at" || exit 1
booted=$(sed -n 's/^btime //p' /proc/stat)
[ "$state" = reverted ] && [ "$booted" -gt "$at" ]`;

// builtins only: it runs in every audit of every host
const LAST = `base=$1
id=- state=- armed=-
if read -r id 2>/dev/null < "$base/last"; then
  state=unknown
  read -r state 2>/dev/null < "$base/runs/$id/state"
  read -r armed 2>/dev/null < "$base/armed"
fi
printf '%s %s %s\\n' "$id" "$state" "$armed"
if [ -e "$base/lock" ]; then lock=; read -r lock 2>/dev/null < "$base/lock"; printf 'lock %s\\n' "$lock"; fi`;

export interface LastTransaction {
  id: string;
  state: TransactionState | "unknown";
  armed: boolean;
}
/** The host's record as one probe reads it: its last transaction and who holds its lock. */
export interface HostRecord {
  last: LastTransaction | null;
  lock: string | null;
}

/** The command probe that reports the host's last transaction and lock (see parseHostRecord). */
export const lastTransactionProbe = { command: script(LAST, STATE_DIR) };

export function parseHostRecord(stdout: string): HostRecord {
  const [first = "", ...rest] = stdout.split("\n");
  const [id, state, armed] = first.trim().split(" ");
  const lockLine = rest.find((l) => l.startsWith("lock"));
  return {
    last: id && id !== "-" ? { id, state: state as LastTransaction["state"], armed: armed !== undefined && armed !== "-" } : null,
    lock: lockLine === undefined ? null : lockLine.slice(5).trim(),
  };
}

export function parseLastTransaction(stdout: string): LastTransaction | null {
  return parseHostRecord(stdout).last;
}

/** A lock holder that has not renewed its lock for this long is gone (it renews at every step). */
export const LOCK_LEASE_SECONDS = 600;

/** What the host says about a lock it refused to give. */
export interface LockRefusal {
  holder: string;
  ageSeconds: number;
  holderState: string;
  armedRun: string | null;
}

export function parseLockRefusal(stdout: string): LockRefusal {
  const [holder = "", age = "0", state = "none", armed = "-"] = stdout.split("\n");
  return { holder: holder.trim(), ageSeconds: Number(age) || 0, holderState: state.trim(), armedRun: armed.trim() === "-" ? null : armed.trim() };
}

const field = (holder: string, key: string) => new RegExp(`(?:^| )${key}=(\\S+)`).exec(holder)?.[1];

/**
 * Why a lock's holder is provably gone (null: it may be alive). Never while the holder's
 * run is armed: that host reverts by itself and then releases the lock.
 */
export function staleLockReason(r: LockRefusal, here: { hostname: string; pidAlive: (pid: number) => boolean; leaseSeconds: number }): string | null {
  const run = field(r.holder, "run");
  if (run && r.armedRun === run) return null;
  if (r.holder === "") return "an empty lock (a power cut while it was written)";
  if (["committed", "rolled_back", "reverted"].includes(r.holderState)) return `its run ${run} has ended (${r.holderState})`;
  const controller = field(r.holder, "controller");
  const pid = Number(field(r.holder, "pid"));
  if (controller === here.hostname && pid > 0 && !here.pidAlive(pid)) return `its controller process ${pid} on ${controller} is gone`;
  if (r.ageSeconds > here.leaseSeconds) return `it was not renewed for ${r.ageSeconds}s (lease ${here.leaseSeconds}s)`;
  return null;
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === "EPERM";
  }
}

/** The run's changes need arming before its first write: "required" (a reboot or disruptive change), "wanted" (changes that take effect at boot). */
export type Arming = "required" | "wanted" | null;

export class Transaction {
  private backedUp = new Set<string>();
  /** Number of the next backup (a run resumed after a reboot goes on from its record's). */
  private backups = 0;
  private undos = 0;
  private started = false;
  armed = false;
  private rebootNoted = false;
  /** The lock was given back (with the run's last record, in one round trip). */
  unlocked = false;
  private lockInfo: string;
  /** Set when this run took over a stale lock: what it took over and why. */
  tookOver?: string;

  constructor(
    private readonly connection: Transport,
    readonly id: string,
  ) {
    this.lockInfo = `controller=${hostname()} pid=${process.pid} since=${new Date().toISOString()} run=${id}`;
  }

  get dir(): string {
    return `${STATE_DIR}/runs/${this.id}`;
  }

  /** Every path the run backs up (or is about to, in the batch being sent). */
  get paths(): string[] {
    return [...this.backedUp];
  }

  private get host(): string {
    return this.connection.target.name;
  }

  /**
   * One run per host at a time; a second controller fails fast naming the holder. A lock
   * whose holder is provably gone (see staleLockReason) is taken over and reported.
   * `andThen` runs in the same round trip once the lock is held (the gather); their results are returned.
   */
  async lock(breakLock: boolean, andThen: Step[] = []): Promise<ExecResult[]> {
    const take = (how: string, stale = "") => runBatch(this.connection, [{ what: "take the lock", argv: script(LOCK, STATE_DIR, this.lockInfo, how, stale) }, ...andThen]);
    let results = await take(breakLock ? "break" : "take");
    if (results[0].code === 3) {
      const refusal = parseLockRefusal(results[0].stdout);
      const reason = staleLockReason(refusal, { hostname: hostname(), pidAlive, leaseSeconds: LOCK_LEASE_SECONDS });
      if (reason === null) {
        const armed =
          refusal.armedRun && refusal.holder.endsWith(`run=${refusal.armedRun}`)
            ? `; its run is armed: the host reverts it by itself unless that controller confirms, and then releases the lock`
            : "";
        throw new HostError(this.host, `locked by another run (${refusal.holder})${armed}. Wait for it to finish; if that controller is dead, rerun with --break-lock`);
      }
      results = await take("takeover", refusal.holder);
      if (results[0].code === 0) this.tookOver = `took over a stale lock of ${refusal.holder || "(empty)"}: ${reason}`;
    }
    const [r, ...rest] = results;
    if (r.code === 3)
      throw new HostError(this.host, `locked by another run (${parseLockRefusal(r.stdout).holder}). Wait for it to finish; if that controller is dead, rerun with --break-lock`);
    if (r.code !== 0) throw new HostError(this.host, `cannot take the lock in ${STATE_DIR}: ${r.stderr.trim()}`);
    if (rest.length < andThen.length) throw stepFailure(this.host, andThen[rest.length - 1], rest.at(-1)!);
    return rest;
  }

  /**
   * Take this run up again after its machine rebooted (local transport): the lock is the
   * run's own (taken before the reboot by the agent process that ran it), so it is adopted,
   * not taken; the backups and undo records go on from the host's record; the host is
   * armed as it was. `andThen` (the gather) runs in the same round trip once that holds.
   * Returns the run's state and the results of `andThen`; a run that is not pending any
   * more (committed, rolled back, reverted by the host) returns its state and nothing else.
   */
  async resume(andThen: Step[] = []): Promise<{ state: TransactionState | "none"; results: ExecResult[] }> {
    const [r, ...rest] = await runBatch(this.connection, [{ what: "take the run up again", argv: script(RESUME, STATE_DIR, this.id) }, ...andThen]);
    const [state, holder, armed, undos, backups, ...paths] = r.stdout.split("\n");
    if (r.code === RESUME_ENDED) return { state: state.trim() as TransactionState, results: [] };
    if (r.code === 3) throw new HostError(this.host, `cannot take run ${this.id} up again: the lock is held by ${holder || "(an empty lock)"}, not by the run`);
    if (r.code !== 0) throw new HostError(this.host, `cannot take run ${this.id} up again: ${r.stderr.trim() || `exit ${r.code}`}`);
    if (rest.length < andThen.length) throw stepFailure(this.host, andThen[rest.length - 1], rest.at(-1)!);
    this.lockInfo = holder;
    this.started = true;
    this.armed = armed.trim() === this.id;
    this.undos = Number(undos) || 0;
    this.backups = Number(backups) || 0;
    for (const path of paths) if (path) this.backedUp.add(path);
    return { state: "pending", results: rest };
  }

  unlockStep(): Step {
    return { what: "give back the lock", argv: script(UNLOCK, STATE_DIR, this.lockInfo), done: () => (this.unlocked = true) };
  }

  async unlock(): Promise<void> {
    if (this.connection.connected && !this.unlocked) await runSteps(this.connection, [this.unlockStep()]);
  }

  /**
   * Renew the lock's lease (and the armed revert timer). Fails with the host's
   * REVERTED_EXIT when the host already reverts the run by itself.
   */
  heartbeatStep(confirmTimeoutSeconds: number, armed = this.armed): Step {
    const timeout = armed ? String(confirmTimeoutSeconds) : "0";
    return { what: "renew the lock and the revert timer", argv: script(HEARTBEAT, STATE_DIR, this.lockInfo, this.id, timeout) };
  }

  /** The step arms the host (see armSteps). */
  static arms(step: Step): boolean {
    return step.argv[2] === ARM;
  }

  /** The failed step is a heartbeat that found the host reverting (or having reverted) the run by itself. */
  static showsRevert(step: Step, r: ExecResult): boolean {
    return step.argv[2] === HEARTBEAT && r.code === REVERTED_EXIT;
  }

  /** Record the transaction on the host (durably) before its first write. */
  private beginSteps(): Step[] {
    if (this.started) return [];
    this.started = true;
    const meta = `${this.lockInfo} user=${this.connection.target.user}`;
    return [{ what: "record the transaction", argv: script(BEGIN, STATE_DIR, this.id, meta) }];
  }

  /** No write without a backup first: copy (mode, owner kept) + manifest line, both synced. */
  private backupSteps(path: string): Step[] {
    if (this.backedUp.has(path)) return [];
    const n = String(this.backups++);
    this.backedUp.add(path);
    return [...this.beginSteps(), { what: `back up ${path}`, argv: script(BACKUP, this.dir, path, n) }];
  }

  /**
   * Back up, then write (atomic and durable: temp file in the same directory, its size and
   * sha256 checked, fsynced, renamed, the directory fsynced; an existing file keeps its
   * mode and owner) or remove.
   * `reboot`: the change takes effect at boot, so undoing it by hand needs a reboot too.
   */
  writeSteps(path: string, content: string | null, opts: { mode?: string; reboot?: boolean } = {}): Step[] {
    const steps = this.backupSteps(path);
    if (opts.reboot && !this.rebootNoted) {
      this.rebootNoted = true;
      steps.push({ what: "note reboot", argv: script(NOTE_REBOOT, this.dir) });
    }
    if (content === null) steps.push({ what: `remove ${path}`, argv: script(REMOVE, path) });
    else {
      const { stdin, size } = received(content);
      steps.push({ what: `write ${path}`, argv: script(WRITE_FILE, path, opts.mode ?? "0644", size), stdin });
    }
    return steps;
  }

  /** Before a command runs, its undo is on the host's record, for the host's own revert too. */
  undoSteps(undo: string[], disruptive: boolean): Step[] {
    const name = `${String(this.undos++).padStart(4, "0")}-${disruptive ? "disruptive" : "safe"}`;
    return [...this.beginSteps(), { what: "record the undo command", argv: script(RECORD_UNDO, this.dir, name, ...undo) }];
  }

  /** Restore the files and run the undo commands ("safe": only those that cannot cut the management path). */
  async restore(undos: "all" | "safe"): Promise<string[]> {
    if (!this.started) return [];
    const r = await this.connection.exec(script(RESTORE, this.dir, undos));
    if (r.code === 0) return [];
    const failures = r.stdout.trim().split("\n").filter(Boolean);
    return failures.length ? failures : [`restore exited ${r.code}: ${r.stderr.trim()}`];
  }

  /**
   * Arm the host to revert by itself after `timeoutSeconds`, now and after any reboot.
   * A host that cannot be armed (no systemd) fails the step with ARM_NO_SYSTEMD.
   */
  armSteps(timeoutSeconds: number): Step[] {
    return [
      ...this.beginSteps(),
      {
        what: "arm the host-side revert",
        argv: script(ARM, STATE_DIR, this.id, String(timeoutSeconds), REVERT_PROGRAM_INPUT.size),
        stdin: REVERT_PROGRAM_INPUT.stdin,
        done: () => (this.armed = true),
      },
    ];
  }

  /** Why arming failed, for the run's error (exit ARM_NO_SYSTEMD: the host does not run systemd). */
  armFailure(r: ExecResult): HostError {
    return new HostError(
      this.host,
      `cannot arm the host-side revert (${r.stderr.trim() || `exit ${r.code}`}); refusing a disruptive change. Set confirm_timeout: 0 to run it unguarded`,
    );
  }

  /** Roll back an armed run the way the host would: restore, safe undos, reboot (started detached). */
  async revertNow(): Promise<void> {
    await this.connection.run("start the host's revert", script(REVERT_NOW, STATE_DIR));
  }

  /** The host has reverted this run and booted since. */
  async revertedAndBooted(): Promise<boolean> {
    return (await this.connection.exec(script(REVERTED_AND_BOOTED, STATE_DIR, this.id))).code === 0;
  }

  disarmStep(state?: TransactionState): Step {
    return { what: "disarm the host-side revert", argv: script(DISARM, STATE_DIR, this.id, state ?? ""), done: () => (this.armed = false) };
  }

  markSteps(state: TransactionState): Step[] {
    return this.started ? [{ what: `mark the transaction ${state}`, argv: script(DISARM_STATE, this.dir, state) }] : [];
  }

  async mark(state: TransactionState): Promise<void> {
    await runSteps(this.connection, this.markSteps(state));
  }

  async state(): Promise<LastTransaction | null> {
    const r = await this.connection.exec(lastTransactionProbe.command);
    return parseLastTransaction(r.stdout);
  }
}

/** ARM's exit status on a host without systemd. */
export const ARM_NO_SYSTEMD = 4;

const DISARM_STATE = `${PUT}
echo "$2" | put "$1/state"`;

/** For `provision rollback`: restore the host's last transaction by hand; true when it needs a reboot. */
export async function restoreLast(connection: Transport, last: LastTransaction): Promise<boolean> {
  const dir = `${STATE_DIR}/runs/${last.id}`;
  const needsReboot = (await connection.exec(["test", "-e", `${dir}/needs-reboot`])).code === 0;
  await connection.run("restore the last transaction", script(RESTORE, dir, needsReboot ? "safe" : "all"));
  await connection.run("disarm", script(DISARM, STATE_DIR, last.id, "rolled_back"));
  return needsReboot;
}

/** For `provision status`: the holder of the host's lock, if any. */
export async function lockHolder(connection: Transport): Promise<string | null> {
  const r = await connection.exec(["cat", `${STATE_DIR}/lock`]);
  return r.code === 0 ? r.stdout.trim() : null;
}
