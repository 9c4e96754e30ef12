#!/usr/bin/env bash
# benches/json.sh: JSON output of a 1M-record replay, audisp vs laurel 0.8.2
# (enrichment off), on the same input, side by side in one run, next to the
# physical ceiling (cat) measured in the same run. See benches/README.md.
#
# Usage: benches/json.sh [--records N] [--runs N] [--laurel PATH] [--no-build]
#   --records N   records to replay (default 1000000)
#   --runs N      repetitions of every case (default 3); medians are printed
#   --laurel PATH laurel 0.8.2 binary (default: `laurel` on PATH, else
#                 /tmp/laurel-root/bin/laurel; install it with
#                 `cargo install laurel --version 0.8.2 --root /tmp/laurel-root`,
#                 which needs libclang-dev and libacl1-dev). Without it the
#                 laurel rows are skipped.
#   --no-build    use the binaries already built
#
# Needs: cargo, zstd, python3 (>= 3.8), GNU time (/usr/bin/time). Runs in a
# few minutes.
set -euo pipefail
cd "$(dirname "$0")/.."

build=1
for a in "$@"; do
    case "$a" in
        --no-build) build=0 ;;
        -h|--help) awk 'NR > 1 && !/^#/ { exit } NR > 1' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    esac
done
if [ "$build" = 1 ]; then
    cargo build --release --bins >&2
    cargo bench --bench json_convert --no-run >&2
fi
CONVERT=$(cargo bench --bench json_convert --no-run --message-format=json 2>/dev/null |
    python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "json_convert" and m.get("executable"):
        print(m["executable"])')
export CONVERT
umask 022
exec python3 - "$@" <<'PY'
"""The driver: builds the input, runs every case --runs times (interleaved)
and prints median [min-max] of records/s, CPU seconds and peak RSS."""

import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.getcwd()
AUDISPD = os.path.join(ROOT, "target/release/audispd")
LOGFILE = os.path.join(ROOT, "target/release/audisp-logfile")
CONVERT = os.environ["CONVERT"]
CORPUS = os.path.join(ROOT, "tests/data/corpus.log.zst")
STAMP = re.compile(rb"msg=audit\((\d+)\.(\d+):(\d+)\)")


def die(msg):
    print(f"json.sh: {msg}", file=sys.stderr)
    sys.exit(1)


def parse_args(argv):
    o = {"records": 1_000_000, "runs": 3, "laurel": None}
    it = iter(argv)
    for a in it:
        if a in ("--records", "--runs"):
            v = next(it, "")
            if not v.isdigit() or int(v) < 1:
                die(f"{a} needs a positive integer")
            o[a[2:]] = int(v)
        elif a == "--laurel":
            o["laurel"] = next(it, None) or die("--laurel needs a path")
        elif a != "--no-build":
            die(f"unknown argument {a}")
    if o["laurel"] is None:
        o["laurel"] = shutil.which("laurel") or "/tmp/laurel-root/bin/laurel"
    if not os.access(o["laurel"], os.X_OK):
        print(f"json.sh: no laurel at {o['laurel']}: laurel rows skipped", file=sys.stderr)
        o["laurel"] = None
    return o


def corpus():
    out = subprocess.run(["zstd", "-dc", "--long=27", CORPUS], stdout=subprocess.PIPE, check=True)
    return [l for l in out.stdout.split(b"\n") if l]


def write_repeated(path, lines, n):
    """n records: `lines` repeated; copy k > 0 moved k * (span + 1) seconds
    later and k * (max serial + 1) serials up, so every event id is unique
    (laurel rejects repeated ids) and increasing."""
    stamps = [STAMP.search(l) for l in lines]
    secs = [int(m.group(1)) for m in stamps if m]
    serials = [int(m.group(3)) for m in stamps if m]
    sec_step = max(secs) - min(secs) + 1
    serial_step = max(serials) + 1
    written, copy = 0, 0
    with open(path, "wb") as f:
        while written < n:
            for line, m in zip(lines, stamps):
                if written >= n:
                    break
                if m and copy:
                    line = b"%smsg=audit(%d.%s:%d)%s" % (
                        line[: m.start()], int(m.group(1)) + copy * sec_step, m.group(2),
                        int(m.group(3)) + copy * serial_step, line[m.end():])
                f.write(line + b"\n")
                written += 1
            copy += 1
    return written


def long_arg_events(lines):
    """The records of every event that has an argument split with aN_len=."""
    ids = {STAMP.search(l).group(0) for l in lines if b"_len=" in l and STAMP.search(l)}
    return [l for l in lines if (m := STAMP.search(l)) and m.group(0) in ids]


def run(cmd, stdin=None, stdout=subprocess.DEVNULL, env=None):
    """Runs cmd under GNU time (a small process, so the peak RSS is the
    command's own, not inherited from this driver); returns (wall s, CPU s
    of it and its children, peak RSS MiB, its standard output if piped:
    small outputs only)."""
    fd, report = tempfile.mkstemp()
    os.close(fd)
    t0 = time.monotonic()
    p = subprocess.Popen(["/usr/bin/time", "-o", report, "-f", "%U %S %M"] + cmd,
                         stdin=stdin, stdout=stdout, stderr=subprocess.PIPE, env=env)
    out = p.stdout.read().decode(errors="replace") if stdout == subprocess.PIPE else ""
    err = p.stderr.read().decode(errors="replace")
    status = p.wait()
    wall = time.monotonic() - t0
    if status != 0:
        die(f"{cmd!r} failed: {err[-2000:]}")
    with open(report) as f:
        user, sys_, rss_kib = f.read().split()[-3:]
    os.unlink(report)
    return wall, float(user) + float(sys_), int(rss_kib) / 1024, out


def count_lines(path):
    n = 0
    with open(path, "rb") as f:
        for _ in f:
            n += 1
    return n


def laurel_config(d):
    os.makedirs(d, exist_ok=True)
    cfg = os.path.join(d, "config.toml")
    with open(cfg, "w") as f:
        f.write(f"""directory = "{d}"
statusreport-period = 0
[auditlog]
file = "audit.log"
size = 100000000000
generations = 1
[transform]
execve-argv = [ "array" ]
[translate]
universal = false
user-db = false
drop-raw = false
[enrich]
pid = false
spawned-by = false
execve-env = []
container = false
container_info = false
systemd = false
script = false
user-groups = false
""")
    return cfg


def case_laurel(laurel, path, tmp):
    d = tempfile.mkdtemp(dir=tmp, prefix="laurel.")
    cfg = laurel_config(d)
    with open(path, "rb") as f:
        wall, cpu, rss, _ = run([laurel, "--config", cfg], stdin=f)
    events = count_lines(os.path.join(d, "audit.log"))
    shutil.rmtree(d)
    return wall, cpu, rss, events


def case_audisp_pipeline(path, tmp):
    """The real thing: audispd reads the file on stdin and feeds
    audisp-logfile (events mode, JSON, one file, fsync never)."""
    d = tempfile.mkdtemp(dir=tmp, prefix="audisp.")
    for sub in ("etc/plugins.d", "run", "state", "out"):
        os.makedirs(os.path.join(d, sub))
    with open(os.path.join(d, "etc/audispd.toml"), "w") as f:
        f.write('[shutdown]\ntimeout = "600s"\n[stats]\ninterval = "0"\n')
    out = os.path.join(d, "out/audit.json")
    with open(os.path.join(d, "etc/plugins.d/json.toml"), "w") as f:
        f.write(f'exec = ["{LOGFILE}", "--format", "json", "--file", "{out}", '
                f'"--max-size", "1T", "--fsync", "never"]\nmode = "events"\n')
    env = dict(os.environ, AUDISP_LOG="warn")
    with open(path, "rb") as f:
        wall, cpu, rss, _ = run([AUDISPD, "--config-dir", f"{d}/etc", "--runtime-dir", f"{d}/run",
                                 "--state-dir", f"{d}/state"], stdin=f, env=env)
    events = count_lines(out)
    shutil.rmtree(d)
    return wall, cpu, rss, events


def case_convert(path, tmp):
    """Conversion alone (json_convert bench): grouping done beforehand,
    only JsonWriter timed; also reports per-event latencies. Its peak RSS
    includes the whole input, which the bench holds in memory."""
    out = os.path.join(tmp, "convert.json")
    _, _, rss, report = run([CONVERT, path, out], stdout=subprocess.PIPE)
    # The conversion's own time, as the bench measured it (not reading the
    # file, grouping, or the per-event cost pass after it).
    m = re.search(r"in ([0-9.]+) s wall, ([0-9.]+) s CPU", report)
    wall, cpu = float(m.group(1)), float(m.group(2))
    events = count_lines(out)
    os.unlink(out)
    return wall, cpu, rss, events, report


def case_cat(path):
    wall, cpu, rss, _ = run(["sh", "-c", 'cat "$1" | cat > /dev/null', "sh", path])
    return wall, cpu, rss, 0


def med(xs):
    return statistics.median(xs), min(xs), max(xs)


def main():
    o = parse_args(sys.argv[1:])
    tmp = tempfile.mkdtemp(prefix="audisp-json-bench.")
    try:
        lines = corpus()
        path = os.path.join(tmp, "records.log")
        n = write_repeated(path, lines, o["records"])
        size = os.path.getsize(path)
        longs = long_arg_events(lines)
        long_path = os.path.join(tmp, "long.log")
        long_copies = 20
        long_n = write_repeated(long_path, longs, len(longs) * long_copies)
        long_events = len({STAMP.search(l).group(0) for l in longs}) * long_copies
        with open(path, "rb") as f:
            while f.read(1 << 24):
                pass
        print(f"input: {n} records, {size / 1e6:.0f} MB (the real corpus, {len(lines)} records, repeated "
              f"with ids moved); long-argument subset: {long_events} events, {long_n} records")
        cases = [("ceiling: cat | cat", lambda: case_cat(path)),
                 ("audisp JsonWriter alone (json_convert)", lambda: case_convert(path, tmp)[:4]),
                 ("audisp: audispd -> audisp-logfile --format json", lambda: case_audisp_pipeline(path, tmp))]
        if o["laurel"]:
            cases.append(("laurel 0.8.2, enrichment off", lambda: case_laurel(o["laurel"], path, tmp)))
        results = {name: [] for name, _ in cases}
        for _ in range(o["runs"]):
            for name, fn in cases:
                results[name].append(fn())
        print(f"\n{'case':50} {'records/s':>22} {'CPU s':>16} {'peak RSS MiB':>14} {'events out':>11}")
        rates = {}
        for name, rs in results.items():
            r = med([n / x[0] for x in rs])
            c = med([x[1] for x in rs])
            m = med([x[2] for x in rs])
            rates[name] = r[0]
            print(f"{name:50} {r[0]:>10,.0f} [{r[1]:,.0f}-{r[2]:,.0f}] {c[0]:>6.2f} [{c[1]:.2f}-{c[2]:.2f}] "
                  f"{m[0]:>8.1f} {rs[0][3]:>11}")
        if o["laurel"]:
            lr = rates["laurel 0.8.2, enrichment off"]
            for name in ("audisp JsonWriter alone (json_convert)", "audisp: audispd -> audisp-logfile --format json"):
                print(f"{name}: {rates[name] / lr:.1f}x laurel's records/s")
        print("\nper-event conversion time, whole input (json_convert):")
        print(case_convert(path, tmp)[4].rstrip())
        print(f"\nlong-argument events only ({long_events} events):")
        print(case_convert(long_path, tmp)[4].rstrip())
        if o["laurel"]:
            w, c, _, ev = case_laurel(o["laurel"], long_path, tmp)
            print(f"laurel: {ev} events in {w:.3f} s wall, {c:.3f} s CPU: "
                  f"{1000 * w / max(ev, 1):.2f} ms per event on average")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


main()
PY
