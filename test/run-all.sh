#!/usr/bin/env bash
# Every test tier, one node:test run each, with each tier's time at the end:
#   unit (pure logic), integration (real sshd hosts in network namespaces),
#   lab (QEMU guests on Debian's own kernel).
# PROVISION_TEST_TIERS="unit integration" limits the tiers.
set -euo pipefail
cd "$(dirname "$0")/.."
bash test/setup.sh
tiers=${PROVISION_TEST_TIERS:-unit integration lab}
for tier in $tiers; do
  case $tier in unit | integration | lab) ;; *) echo "unknown tier $tier" >&2; exit 64 ;; esac
done
# lint (ESLint, shellcheck) and the format check first, each timed; a finding fails the command
timed() { local start status=0; start=$(date +%s); "$@" || status=$?; echo "$* took $(( $(date +%s) - start ))s"; return $status; }
timed npm run --silent lint
timed npm run --silent format:check
# Lab files spend most of their time waiting (reboots, a host's own revert timer), so two
# run at once (PROVISION_LAB_CONCURRENCY, default 2; 1 runs them one by one, ~15 min longer);
# the lab files whose verdicts are failover timings
# (gretap's ARP monitoring, multiwan's uplink probes) run afterwards on their own: a guest
# starved of CPU by another lab misses its monitor's deadlines. Other tiers: one file at a time.
LAB_ALONE=(gretap multiwan)
run_tier() {
  local tier=$1 together=() alone=() f
  if [ "$tier" != lab ]; then node --test --test-concurrency=1 dist/test/"$tier"/*.test.js; return; fi
  for f in dist/test/lab/*.test.js; do
    if [[ " ${LAB_ALONE[*]} " == *" $(basename "$f" .test.js) "* ]]; then alone+=("$f"); else together+=("$f"); fi
  done
  local status=0
  node --test --test-concurrency="${PROVISION_LAB_CONCURRENCY:-2}" "${together[@]}" || status=$?
  node --test --test-concurrency=1 "${alone[@]}" || status=$?
  return $status
}
# one node:test run per tier, so each tier's time is printed (and a failing tier does not hide the next)
status=0
times=()
total_start=$(date +%s)
for tier in $tiers; do
  start=$(date +%s)
  run_tier "$tier" || status=$?
  times+=("$tier $(( $(date +%s) - start ))s")
done
for t in "${times[@]}"; do echo "test tier $t"; done
echo "test tiers [$tiers] took $(( $(date +%s) - total_start ))s"
leftover=$(ip netns list | grep -E '^(sshf|lab|pv)-' || true)
if [ -n "$leftover" ]; then echo "namespaces left behind: $leftover" >&2; status=1; fi
exit $status
