# provision: undo an install: purge those of the named packages that dpkg has (fully or
# partly) installed. An install that failed may have installed none of them, and apt-get
# refuses a package it cannot find, so the others are left out rather than failing the undo.
n=$#
for p in "$@"; do
  # shellcheck disable=SC2016 # ${db:Status-Abbrev} is dpkg-query's field, not the shell's
  status=$(dpkg-query -W -f '${db:Status-Abbrev}' -- "$p" 2>/dev/null) || continue
  case $status in ?n* | ?c*) ;; *) set -- "$@" "$p" ;; esac
done
shift "$n"
[ "$#" -eq 0 ] || exec apt-get purge -y -q -- "$@"
