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
# On a fresh machine the lab's four guest images take minutes to build (mostly apt and disk):
# build them beside lint and the unit and integration tiers, one at a time, in the order the lab
# files need them. The lab tier does not wait for the last: a lab file whose image is still being
# built waits on that image's lock (its guests boot beside the builder's apt); a build that
# failed here is tried again there, and its error shown.
image_builder=
if [[ " $tiers " == *" lab "* ]]; then
  (
    build=
    trap '[ -n "$build" ] && kill "$build" 2>/dev/null; exit 143' TERM
    start=$(date +%s)
    for flavour in debian12 rpios-bookworm networkd rpios-trixie; do
      bash test/lab/build-images.sh "$flavour" >/dev/null 2>&1 &
      build=$!
      wait "$build" || echo "lab images: $flavour failed here; the lab tier builds it again" >&2
    done
    echo "lab images (built beside the other tiers) took $(( $(date +%s) - start ))s"
  ) &
  image_builder=$!
  trap '[ -n "$image_builder" ] && kill "$image_builder" 2>/dev/null; true' EXIT
fi
# lint (ESLint, shellcheck) and the format check first, each timed; a finding fails the command
timed() { local start status=0; start=$(date +%s); "$@" || status=$?; echo "$* took $(( $(date +%s) - start ))s"; return $status; }
timed npm run --silent lint
timed npm run --silent format:check
# Lab files spend most of their time waiting (reboots, a host's own revert timer), so two
# run at once (PROVISION_LAB_CONCURRENCY, default 2; 1 runs them one by one, ~15 min longer).
# The lab files whose verdicts are failover timings (gretap's ARP monitoring, multiwan's uplink
# probes) run afterwards, side by side with each other only: a guest starved of CPU by a
# rebooting lab misses its monitor's deadlines; these two leave each other enough.
LAB_TIMING=(gretap multiwan)
run_tier() {
  local tier=$1 together=() timing=() f
  if [ "$tier" = unit ]; then node --test --test-concurrency=1 dist/test/unit/*.test.js; return; fi
  # integration files wait on sshd hosts, servers and timers more than they compute: two at a time
  if [ "$tier" = integration ]; then node --test --test-concurrency="${PROVISION_INTEGRATION_CONCURRENCY:-2}" dist/test/integration/*.test.js; return; fi
  for f in dist/test/lab/*.test.js; do
    if [[ " ${LAB_TIMING[*]} " == *" $(basename "$f" .test.js) "* ]]; then timing+=("$f"); else together+=("$f"); fi
  done
  local status=0
  node --test --test-concurrency="${PROVISION_LAB_CONCURRENCY:-2}" "${together[@]}" || status=$?
  node --test --test-concurrency="${PROVISION_LAB_CONCURRENCY:-2}" "${timing[@]}" || status=$?
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
if [ -n "$image_builder" ]; then wait "$image_builder" || true; image_builder=; fi
for t in "${times[@]}"; do echo "test tier $t"; done
echo "test tiers [$tiers] took $(( $(date +%s) - total_start ))s"
leftover=$(ip netns list | grep -E '^(sshf|lab|pv)-' || true)
if [ -n "$leftover" ]; then echo "namespaces left behind: $leftover" >&2; status=1; fi
exit $status
