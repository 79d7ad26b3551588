#!/usr/bin/env bash
# npm run bench: provision --check vs ansible-playbook --check on 10, 50 and 100 sshd hosts.
# Installs what only the benchmark needs (Debian's ansible, GNU time), builds, runs.
# Arguments go to bench/run.ts (--sizes 10,50,100 --reps 3 --out bench/results.md --cpu-prof --keep).
set -euo pipefail
cd "$(dirname "$0")/.."
bash test/setup.sh >/dev/null
missing=()
for p in ansible time; do
  dpkg-query -W -f '${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  [ "$(id -u)" = 0 ] || { echo "bench: need root to install: ${missing[*]}" >&2; exit 1; }
  echo "bench: installing ${missing[*]}"
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
exec node dist/bench/run.js "$@"
