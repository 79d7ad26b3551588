#!/usr/bin/env bash
# Runs shellcheck over every shell script the project ships: each .sh file (core, modules,
# test/lab and its guest scripts, bench, test) and .ci/run. A .sh file without a #! line is
# a script provision runs with `sh -c` (readShellAsset), so it is checked as POSIX sh.
# Settings (following `# shellcheck source=` files): .shellcheckrc.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v shellcheck >/dev/null || { echo "shellcheck is not installed (bash test/setup.sh installs it)" >&2; exit 1; }
with_shebang=(.ci/run) without=()
while IFS= read -r -d '' f; do
  if [ "$(head -c 2 "$f")" = "#!" ]; then with_shebang+=("$f"); else without+=("$f"); fi
done < <(find . \( -path ./node_modules -o -path ./dist -o -path ./.git -o -path ./.cache \) -prune -o -name '*.sh' -type f -print0 | sort -z)
status=0
shellcheck "${with_shebang[@]}" || status=1
[ ${#without[@]} -eq 0 ] || shellcheck --shell=sh "${without[@]}" || status=1
echo "shellcheck: $(( ${#with_shebang[@]} + ${#without[@]} )) files, $([ $status = 0 ] && echo clean || echo 'findings above')"
exit $status
