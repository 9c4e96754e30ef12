#!/usr/bin/env bash
# benches/stock_json.sh: events/s that audispd delivers to one stock plugin
# in format = "json" (`cat > /dev/null`, started by audispd), next to the
# same records in format = "string" and to `cat | cat` of the input, all
# measured in the same run. See benches/README.md.
#
# Usage: benches/stock_json.sh [--runs N] [--copies N] [--input FILE] [--no-build]
#   --runs N      repetitions of every case (default 3); medians are printed
#   --copies N    replay N copies (1-9, default 6: 1,022,112 records) of the
#                 corpus tests/data/corpus.log.zst (170,352 records); copy
#                 k > 0 has `msg=audit(` written `msg=audit(k`, so that its
#                 event keys are new and later than the copy before
#   --input FILE  replay these records (one per line) instead
#   --no-build    use the release binary already in target/release
#
# Needs: cargo, zstd, python3 (>= 3.8), coreutils. Runs in about a minute.
set -euo pipefail
cd "$(dirname "$0")/.."

build=1
for a in "$@"; do
    case "$a" in
        --no-build) build=0 ;;
        -h|--help) awk 'NR > 1 && !/^#/ { exit } NR > 1' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    esac
done
for tool in zstd python3; do
    command -v "$tool" >/dev/null || {
        echo "stock_json.sh: $tool not found (apt-get install $tool)" >&2
        exit 2
    }
done
if [ "$build" = 1 ]; then
    cargo build --release --bin audispd >&2
fi
umask 022
exec python3 - "$@" <<'PY'
"""The driver: every case --runs times, interleaved; medians [min-max]."""

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.getcwd()
AUDISPD = os.path.join(ROOT, "target/release/audispd")
CORPUS = os.path.join(ROOT, "tests/data/corpus.log.zst")


def die(msg):
    print(f"stock_json.sh: {msg}", file=sys.stderr)
    sys.exit(1)


def parse_args(argv):
    opts = {"runs": 3, "copies": 6, "input": None}
    it = iter(argv)
    for a in it:
        if a in ("--runs", "--copies"):
            v = next(it, "")
            if not v.isdigit() or int(v) < 1 or (a == "--copies" and int(v) > 9):
                die(f"{a} needs a positive integer (at most 9 copies)")
            opts[a[2:]] = int(v)
        elif a == "--input":
            opts["input"] = next(it, None) or die("--input needs a file")
        elif a != "--no-build":
            die(f"unknown argument {a} (see benches/stock_json.sh --help)")
    return opts


def run_timed(cmd, stdin=None):
    """Runs cmd; returns (wall seconds, CPU seconds of it and its children)."""
    t0 = time.monotonic()
    p = subprocess.Popen(cmd, stdin=stdin, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE)
    _, status, ru = os.wait4(p.pid, 0)
    wall = time.monotonic() - t0
    err = p.stderr.read().decode(errors="replace")
    if os.waitstatus_to_exitcode(status) != 0:
        die(f"{cmd!r} failed with status {status}\n{err[-3000:]}")
    return wall, ru.ru_utime + ru.ru_stime, err


def audispd(tmp, records, fmt, plugin_cmd):
    """One replay into audispd with one stock exec plugin; returns (wall,
    CPU of audispd and the plugin, audispd's log)."""
    d = tempfile.mkdtemp(prefix=f"{fmt}.", dir=tmp)
    for sub in ("etc/plugins.d", "run", "state"):
        os.makedirs(os.path.join(d, sub))
    with open(os.path.join(d, "etc/audispd.toml"), "w") as f:
        f.write('[shutdown]\ntimeout = "300s"\n[stats]\ninterval = "0"\n')
    with open(os.path.join(d, "etc/plugins.d/stock.toml"), "w") as f:
        f.write(f'exec = ["/bin/sh", "-c", "{plugin_cmd}"]\nformat = "{fmt}"\n')
    args = [AUDISPD]
    for flag, sub in (("--config-dir", "etc"), ("--runtime-dir", "run"),
                      ("--state-dir", "state")):
        args += [flag, os.path.join(d, sub)]
    with open(records, "rb") as f:
        wall, cpu, log = run_timed(args, stdin=f)
    shutil.rmtree(d)
    return wall, cpu, log


def summary(values, fmt):
    values = sorted(values)
    return f"{fmt(statistics.median(values))} [{fmt(values[0])}-{fmt(values[-1])}]"


def main():
    opts = parse_args(sys.argv[1:])
    tmp = tempfile.mkdtemp(prefix="stock_json.")
    try:
        records = opts["input"]
        if records is None:
            records = os.path.join(tmp, "records.log")
            corpus = subprocess.run(["zstd", "-dc", "--long=27", CORPUS],
                                    stdout=subprocess.PIPE, check=True).stdout
            with open(records, "wb") as f:
                for k in range(opts["copies"]):
                    f.write(corpus.replace(b"msg=audit(", b"msg=audit(%d" % k)
                            if k else corpus)
        with open(records, "rb") as f:
            n_records = sum(1 for _ in f)
        # The events audispd makes of them, counted by the plugin itself.
        count = os.path.join(tmp, "events")
        audispd(tmp, records, "json", f"exec /usr/bin/wc -l > {count}")
        with open(count) as f:
            n_events = int(f.read().split()[0])
        if n_events <= 0:
            die("the JSON plugin got no event")
        cases = [
            ("cat | cat > /dev/null (ceiling)", None),
            ('format = "string", cat > /dev/null', "string"),
            ('format = "json", cat > /dev/null', "json"),
        ]
        results = {name: [] for name, _ in cases}
        for _ in range(opts["runs"]):
            for name, fmt in cases:
                if fmt is None:
                    wall, cpu, _ = run_timed(
                        ["sh", "-c", 'cat "$1" | cat > /dev/null', "sh", records])
                else:
                    wall, cpu, _ = audispd(tmp, records, fmt,
                                           "exec /bin/cat > /dev/null")
                results[name].append((wall, cpu))
        print(f"{n_records} records, {n_events} events "
              f"({os.path.getsize(records) / 1e6:.0f} MB), "
              f"{opts['runs']} runs, median [min-max]")
        print(f"{'case':40} {'wall s':>22} {'records/s':>26} {'events/s':>26} {'CPU s':>22}")
        for name, _ in cases:
            walls = [w for w, _ in results[name]]
            cpus = [c for _, c in results[name]]
            print(f"{name:40} {summary(walls, lambda x: f'{x:.2f}'):>22} "
                  f"{summary([n_records / w for w in walls], lambda x: f'{x:,.0f}'):>26} "
                  f"{summary([n_events / w for w in walls], lambda x: f'{x:,.0f}'):>26} "
                  f"{summary(cpus, lambda x: f'{x:.2f}'):>22}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


main()
PY
