#!/bin/sh
# auditd plugin used by tests: copies everything auditd writes to its stdin into "$1.part" and,
# at end of input (auditd exited or closed the socket), renames it to "$1" so a reader knows the
# copy is complete. auditd starts plugins with an empty environment, hence the absolute paths.
/bin/cat > "$1.part" && exec /bin/mv "$1.part" "$1"
