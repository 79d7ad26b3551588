# provision: the bond's IPv4 addresses as `ip -j -4 addr` shows them; prints nothing (and
# starts no process) when the bond does not exist, as on every host an audit finds fresh.
# $1: the bond's name.
[ -d "/sys/class/net/$1" ] || exit 1
exec ip -j -4 addr show dev "$1"
