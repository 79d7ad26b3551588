#!/usr/bin/env bash
# npm run bench: provision --check vs ansible-playbook --check on 10, 50 and 100 sshd hosts.
# Installs what only the benchmark needs (Debian's ansible, GNU time), builds, runs.
# Arguments go to bench/run.ts (--sizes 10,50,100 --reps 3 --out bench/results.md --cpu-prof --keep).
set -euo pipefail
cd "$(dirname "$0")/.."
bash test/setup.sh ansible ansible-mitogen time >/dev/null
exec node dist/bench/run.js "$@"
