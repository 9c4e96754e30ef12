#!/bin/sh
# Runs a command next to a private, real systemd-journald. Use inside a new
# mount and PID namespace:
#   unshare --mount --pid --fork --mount-proc --propagation private \
#       sh tests/support/journald-ns.sh COMMAND...
# Nothing leaks to the host: /run (and /var/log/journal, if present) are
# tmpfs mounts private to the namespace. Kernel audit is never touched
# (systemd-testing.md's guard): journald's Audit= is set to "leave the
# kernel unchanged", it runs without the audit capabilities, and it is not
# in the initial PID namespace (the kernel refuses AUDIT_SET from others).
# The journal is volatile, in /run/log/journal; read it with
# `journalctl --directory /run/log/journal`.
set -eu
mount -t tmpfs -o mode=0755 tmpfs /run
if [ -d /var/log/journal ]; then mount -t tmpfs tmpfs /var/log/journal; fi
mkdir -p /run/systemd/journald.conf.d
printf '[Journal]\nAudit=\nStorage=volatile\nReadKMsg=no\nForwardToSyslog=no\nForwardToWall=no\nForwardToConsole=no\nForwardToKMsg=no\nRateLimitBurst=0\nRuntimeMaxUse=512M\n' \
    > /run/systemd/journald.conf.d/ci.conf
setpriv --bounding-set=-audit_read,-audit_control,-audit_write /lib/systemd/systemd-journald &
JPID=$!
i=0
while [ ! -S /run/systemd/journal/socket ]; do
    i=$((i + 1))
    if [ "$i" -gt 200 ]; then
        echo "journald-ns.sh: systemd-journald did not create its socket" >&2
        kill "$JPID"
        exit 1
    fi
    sleep 0.05
done
set +e
"$@"
rc=$?
kill "$JPID"
wait "$JPID"
exit "$rc"
