# provision: install the named packages non-interactively, refreshing the package index
# first when apt does not know one of them yet.
set -e
for p in "$@"; do
  if ! apt-cache show -- "$p" >/dev/null 2>&1; then apt-get update -q >&2; break; fi
done
apt-get install -y -q -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold --no-install-recommends -- "$@"
