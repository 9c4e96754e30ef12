#!/usr/bin/env python3
"""A stock plugin for tests/audisp_filter.rs: reads auditd's string format on
standard input until it ends and writes to OUT_FILE one line per distinct
event (node and msg=audit(...) id) with its record count, in the order the
events first appear, then a last line `records N`.

Usage: count_events.py OUT_FILE
"""

import re
import sys

STAMP = re.compile(rb"^(?:node=(\S+) )?type=\S+ msg=audit\(([0-9.:]+)\):")


def main():
    counts = {}
    records = 0
    for line in sys.stdin.buffer:
        records += 1
        m = STAMP.match(line)
        key = (m.group(1) or b"") + b" " + m.group(2) if m else b"?"
        counts[key] = counts.get(key, 0) + 1
    with open(sys.argv[1], "wb") as out:
        for key, n in counts.items():
            out.write(b"%s %d\n" % (key, n))
        out.write(b"records %d\n" % records)


main()
