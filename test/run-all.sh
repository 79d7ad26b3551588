#!/usr/bin/env bash
# Every test tier in one node:test run, so there is one summary at the end:
#   unit (pure logic), integration (real sshd hosts in network namespaces),
#   lab (QEMU guests on Debian's own kernel).
# PROVISION_TEST_TIERS="unit integration" limits the tiers.
set -euo pipefail
cd "$(dirname "$0")/.."
bash test/setup.sh
tiers=${PROVISION_TEST_TIERS:-unit integration lab}
files=()
for tier in $tiers; do
  case $tier in
    unit) files+=(dist/test/unit/*.test.js) ;;
    integration) files+=(dist/test/integration/*.test.js) ;;
    lab) files+=(dist/test/lab/*.test.js) ;;
    *) echo "unknown tier $tier" >&2; exit 64 ;;
  esac
done
start=$(date +%s)
status=0
node --test --test-concurrency=1 "${files[@]}" || status=$?
echo "test tiers [$tiers] took $(( $(date +%s) - start ))s"
leftover=$(ip netns list | grep -E '^(sshf|lab|pv)-' || true)
if [ -n "$leftover" ]; then echo "namespaces left behind: $leftover" >&2; status=1; fi
exit $status
