# provision: wait up to $2 seconds until bond $1 has every slave named after it (that
# exists) with its MII status up (a Wi-Fi slave is up once associated), then print
# /proc/net/bonding/$1.
bond=$1 timeout=$2
shift 2
file=/proc/net/bonding/$bond
slave_up() {
  awk -v s="$1" '$0 == "Slave Interface: " s { found = 1; next } found && /^MII Status:/ { print $3; exit }' "$file" | grep -qx up
}
# a slave that is no interface at all will not come up: waiting for it would only delay the verdict
all_up() {
  [ -r "$file" ] || return 1
  for slave in "$@"; do [ ! -e "/sys/class/net/$slave" ] || slave_up "$slave" || return 1; done
}
tries=$((timeout * 2))
while [ "$tries" -gt 0 ] && ! all_up "$@"; do
  sleep 0.5
  tries=$((tries - 1))
done
cat "$file"
