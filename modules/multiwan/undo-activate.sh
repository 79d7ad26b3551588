# provision multiwan: the rollback of the activation (sh -c SCRIPT provision WAS_ACTIVE
# WAS_ENABLED PRIORITY FIRST_TABLE LAST_TABLE [SYSCTL=VALUE...]). The files are already
# restored when it runs. Stop the agent, clear what this run's configuration set up (the
# restored files may describe another), put the sysctls back, and start the old
# configuration again if there was one.
was_active=$1 was_enabled=$2 priority=$3 first=$4 last=$5
shift 5
# include clear-state.sh
systemctl stop provision-multiwan 2>/dev/null
clear_state "$priority" "$first" "$last"
[ $# -gt 0 ] && sysctl -q -w "$@"
if [ "$was_enabled" != 1 ]; then
  systemctl disable provision-multiwan 2>/dev/null
  rm -f /etc/systemd/system/multi-user.target.wants/provision-multiwan.service
fi
systemctl daemon-reload
systemctl reset-failed provision-multiwan 2>/dev/null
[ "$was_active" = 1 ] && systemctl start provision-multiwan
exit 0
