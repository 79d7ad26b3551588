#!/bin/sh
# systemctl for sshd test hosts (no systemd in their namespaces): records each call and
# keeps one unit's enabled state in a file, which is all provision enrol asks of it.
echo "$*" >> /var/log/fake-systemctl
case "$1" in
  is-enabled)
    if [ -e /var/lib/fake-systemctl-enabled ]; then echo enabled; else echo disabled; exit 1; fi ;;
  enable) touch /var/lib/fake-systemctl-enabled ;;
  disable) rm -f /var/lib/fake-systemctl-enabled ;;
esac
exit 0
