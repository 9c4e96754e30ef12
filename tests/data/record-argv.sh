#!/bin/sh
# An action program for tests/actions.rs: appends how audispd ran it (its
# arguments, one per line, and whether it saw audispd's environment) to the
# file named by its first argument, as one block ending in "end".
out="$1"
shift
{
    echo "argc=$#"
    for a in "$@"; do
        printf 'arg=%s\n' "$a"
    done
    echo "AUDISP_LOG=${AUDISP_LOG-unset}"
    echo "NOTIFY_SOCKET=${NOTIFY_SOCKET-unset}"
    echo "end"
} >>"$out"
