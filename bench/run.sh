#!/usr/bin/env bash
# npm run bench: provision against Ansible (strategies linear and mitogen_linear), an audit
# (--check) and an apply (rollout + idempotent repeat), on 10, 50, 100 and 200 sshd hosts.
# Installs what only the benchmark needs (Debian's ansible, ansible-mitogen, GNU time), builds, runs.
# Arguments go to bench/run.ts: --sizes 10,50,100,200 --profiles lan,lte (link profiles: lan, wifi, lte;
# bench/links.ts) --reps 5 --peer-reps 3 --out bench/results.md --no-apply --no-equivalence --cpu-prof DIR --keep.
set -euo pipefail
cd "$(dirname "$0")/.."
bash test/setup.sh ansible ansible-mitogen time >/dev/null
exec node dist/bench/run.js "$@"
