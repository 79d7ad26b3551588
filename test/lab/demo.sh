#!/usr/bin/env bash
# The embedded demo: set up (apt packages, npm ci, build, lab images), then boot the
# lab and bond eth0+wlan0 on a real kernel with provision --diff (--pull: pull mode, a Pi
# behind NAT that bonds by itself when the seed is published to a NATS cluster).
# Options (npm run demo -- --flavor rpios-bookworm --wifi): see demo.ts.
set -euo pipefail
cd "$(dirname "$0")/../.."
bash test/setup.sh
exec node dist/test/lab/demo.js "$@"
