#!/bin/sh
# reboot for sshd test hosts: records that it was asked and does nothing else. A test host
# is a namespace of this machine: nothing a test runs there may ever reboot the machine.
echo "reboot $*" >> /var/log/fake-reboot
exit 0
