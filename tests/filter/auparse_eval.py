#!/usr/bin/env python3
"""Evaluates filter expressions with the real libauparse (through ctypes, so
only libauparse0 is needed, no Python bindings): for every record of
RECORDS_FILE, one line of one character per expression of EXPRS_FILE —
1 (true for that record alone), 0 (false) or E (auparse refused the
expression). Used by tests/filter_auparse.rs.

Usage: auparse_eval.py EXPRS_FILE RECORDS_FILE
"""

import ctypes
import ctypes.util
import sys

AUSOURCE_BUFFER = 3
AUSEARCH_RULE_CLEAR = 0
AUSEARCH_STOP_RECORD = 1

lib = ctypes.CDLL(ctypes.util.find_library("auparse") or "libauparse.so.0")
lib.auparse_init.restype = ctypes.c_void_p
lib.auparse_init.argtypes = [ctypes.c_int, ctypes.c_void_p]
lib.ausearch_add_expression.argtypes = [
    ctypes.c_void_p, ctypes.c_char_p, ctypes.POINTER(ctypes.c_char_p), ctypes.c_int]
lib.ausearch_set_stop.argtypes = [ctypes.c_void_p, ctypes.c_int]
lib.ausearch_next_event.argtypes = [ctypes.c_void_p]
lib.auparse_reset.argtypes = [ctypes.c_void_p]
lib.ausearch_clear.argtypes = [ctypes.c_void_p]
lib.auparse_destroy.argtypes = [ctypes.c_void_p]


def main():
    exprs = [l.rstrip("\n") for l in open(sys.argv[1], encoding="utf-8")
             if l.strip() and not l.lstrip().startswith("#")]
    records = [r for r in open(sys.argv[2], "rb").read().split(b"\n") if r]
    out = sys.stdout
    for record in records:
        buf = ctypes.create_string_buffer(record + b"\n")
        au = lib.auparse_init(AUSOURCE_BUFFER, buf)
        if not au:
            sys.exit("auparse_init failed")
        line = []
        for e in exprs:
            lib.ausearch_clear(au)
            err = ctypes.c_char_p()
            if lib.ausearch_add_expression(au, e.encode(), ctypes.byref(err), AUSEARCH_RULE_CLEAR):
                line.append("E")
                continue
            lib.ausearch_set_stop(au, AUSEARCH_STOP_RECORD)
            lib.auparse_reset(au)
            rc = lib.ausearch_next_event(au)
            if rc < 0:
                sys.exit(f"ausearch_next_event failed on {record[:80]!r}")
            line.append("1" if rc > 0 else "0")
        lib.auparse_destroy(au)
        out.write("".join(line) + "\n")


main()
