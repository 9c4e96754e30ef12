#!/usr/bin/env bash
# benches/dispatch.sh: replays real audit records into audispd and prints
# records/s, CPU seconds and peak RSS next to plain byte-moving baselines
# measured in the same run. See benches/README.md for what each row means.
#
# Usage: benches/dispatch.sh [--runs N] [--records N] [--no-build] [--keep]
#                            [--filter EXPR [--filter-action keep|drop]]
#   --runs N       repetitions of every case (default 3); medians are printed
#   --records N    records to replay (default 1000000)
#   --filter EXPR  add a case: the same 4 plugins, each with filter = 'EXPR'
#                  (whole events; --filter-action, default keep)
#   --no-build     use the release binaries already in target/release
#                  (or in $AUDISP_BENCH_BIN: audispd and examples/null of another build)
#   --keep         keep the temporary directory (records, configs, logs)
#
# Needs: cargo, zstd, python3 (>= 3.8), coreutils. Runs in a few minutes.
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
        echo "dispatch.sh: $tool not found (apt-get install $tool)" >&2
        exit 2
    }
done
if [ "$build" = 1 ]; then
    cargo build --release --bins --examples >&2
fi
umask 022
exec python3 - "$@" <<'PY'
"""The benchmark driver (embedded so that the benchmark is one file and one
command). Every case is run --runs times, interleaved, and summarised as
median [min-max]."""

import datetime
import os
import re
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.getcwd()
BIN = os.environ.get("AUDISP_BENCH_BIN") or os.path.join(ROOT, "target/release")
AUDISPD = os.path.join(BIN, "audispd")
NULL = os.path.join(BIN, "examples/null")
CORPUS = os.path.join(ROOT, "tests/data/corpus.log.zst")
PLUGINS = 4


def die(msg):
    print(f"dispatch.sh: {msg}", file=sys.stderr)
    sys.exit(1)


def parse_args(argv):
    opts = {"runs": 3, "records": 1_000_000, "keep": False, "filter": None,
            "filter_action": "keep"}
    it = iter(argv)
    for a in it:
        if a in ("--filter", "--filter-action"):
            v = next(it, None)
            if v is None or (a == "--filter-action" and v not in ("keep", "drop")):
                die(f"{a} needs a value (an expression; keep or drop)")
            if a == "--filter" and "'" in v:
                die("--filter: write the expression without single quotes")
            opts[a[2:].replace("-", "_")] = v
        elif a in ("--runs", "--records"):
            v = next(it, None)
            if v is None or not v.isdigit() or int(v) < 1:
                die(f"{a} needs a positive integer")
            opts[a[2:]] = int(v)
        elif a == "--keep":
            opts["keep"] = True
        elif a == "--no-build":
            pass
        else:
            die(f"unknown argument {a} (see benches/dispatch.sh --help)")
    return opts


# ---------------------------------------------------------------- records

STAMP = re.compile(rb"msg=audit\((\d+)\.(\d+):(\d+)\)")


def corpus_lines():
    """The corpus, decompressed on the fly, one record (bytes) at a time."""
    z = subprocess.Popen(["zstd", "-dc", "--long=27", CORPUS], stdout=subprocess.PIPE)
    finished = False
    try:
        for line in z.stdout:
            line = line.rstrip(b"\n")
            if line:
                yield line
        finished = True
    finally:
        if not finished:
            z.kill()
        z.stdout.close()
        status = z.wait()
    if status != 0:
        die(f"zstd -dc {CORPUS} failed (status {status})")


def build_records(path, n):
    """Writes n records: the real corpus repeated. Copy k > 0 gets its
    timestamps moved k * (span + 1) seconds later and its serials moved
    k * (max serial + 1) up, so that every (time, serial) event key stays
    unique and increasing as in a real stream; nothing else is changed.
    Streams, so that this process stays small: its peak RSS is inherited
    by every child it forks (see run_audispd)."""
    secs, serials, corpus_n = [], [], 0
    for line in corpus_lines():
        corpus_n += 1
        m = STAMP.search(line)
        if m:
            secs.append(int(m.group(1)))
            serials.append(int(m.group(3)))
    sec_step = max(secs) - min(secs) + 1
    serial_step = max(serials) + 1
    del secs, serials
    written = 0
    copy = 0
    with open(path, "wb") as f:
        while written < n:
            for line in corpus_lines():
                if written >= n:
                    break
                m = STAMP.search(line) if copy else None
                if m:
                    line = b"%smsg=audit(%d.%s:%d)%s" % (
                        line[: m.start()],
                        int(m.group(1)) + copy * sec_step,
                        m.group(2),
                        int(m.group(3)) + copy * serial_step,
                        line[m.end():],
                    )
                f.write(line + b"\n")
                written += 1
            copy += 1
    return corpus_n, copy


# ---------------------------------------------------------- measurements


def run_timed(cmd, **kw):
    """Runs cmd; returns (wall seconds, CPU seconds of it and its children)."""
    t0 = time.monotonic()
    p = subprocess.Popen(cmd, **kw)
    _, status, ru = os.wait4(p.pid, 0)
    wall = time.monotonic() - t0
    p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode != 0:
        die(f"{cmd!r} failed with status {p.returncode}")
    return wall, ru.ru_utime + ru.ru_stime


def cat_cat(path):
    return run_timed(["sh", "-c", 'cat "$1" | cat > /dev/null', "sh", path])


def tee4(path, tmp):
    script = """
set -e
d=$(mktemp -d "$2/tee.XXXXXX")
mkfifo "$d/1" "$d/2" "$d/3"
cat "$d/1" > /dev/null & p1=$!
cat "$d/2" > /dev/null & p2=$!
cat "$d/3" > /dev/null & p3=$!
cat "$1" | tee "$d/1" "$d/2" "$d/3" | cat > /dev/null
wait $p1 $p2 $p3
rm -r "$d"
"""
    return run_timed(["sh", "-c", script, "sh", path, tmp])


def chunks(path, size):
    """The file's bytes, read `size` at a time into one buffer (each chunk is
    a view of it, valid until the next)."""
    buf = bytearray(size)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        while True:
            n = f.readinto(buf)
            if not n:
                return
            yield view[:n]


def socket_copy(path):
    """The file through a unix stream socket, 64 KiB reads and writes, in a
    second process; returns (wall, CPU of both processes)."""
    t0 = time.monotonic()
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    pid = os.fork()
    if pid == 0:
        a.close()
        buf = bytearray(65536)
        while b.recv_into(buf):
            pass
        os._exit(0)
    b.close()
    before = os.times()
    for chunk in chunks(path, 65536):
        a.sendall(chunk)
    a.close()
    _, _, ru = os.wait4(pid, 0)
    wall = time.monotonic() - t0
    after = os.times()
    own = (after.user - before.user) + (after.system - before.system)
    return wall, own + ru.ru_utime + ru.ru_stime


def file_writes(path, tmp):
    """The file written into a new file beside the journals (256 KiB writes,
    as the journal's appends go into pages the page cache must first take),
    then written again over that file (pages already cached); returns
    ((wall, CPU) new, (wall, CPU) overwrite). The file is removed after."""
    out = os.path.join(tmp, "file-write.baseline")
    figures = []
    try:
        for flags in (os.O_CREAT | os.O_EXCL, 0):
            fd = os.open(out, os.O_WRONLY | flags, 0o600)
            before = resource.getrusage(resource.RUSAGE_SELF)
            t0 = time.monotonic()
            try:
                for chunk in chunks(path, 256 << 10):
                    os.write(fd, chunk)
            finally:
                os.close(fd)
            wall = time.monotonic() - t0
            after = resource.getrusage(resource.RUSAGE_SELF)
            figures.append((wall, (after.ru_utime - before.ru_utime)
                            + (after.ru_stime - before.ru_stime)))
    finally:
        os.unlink(out)
    return figures[0], figures[1]


def proc_sample(pid):
    """(CPU seconds of all threads, VmHWM KiB) of a live process."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        with open(f"/proc/{pid}/status") as f:
            hwm = next(
                (int(l.split()[1]) for l in f if l.startswith("VmHWM:")), 0
            )
        return cpu, hwm
    except (OSError, IndexError, ValueError, StopIteration):
        return None


NULL_LINE = re.compile(
    r"null (\S+): records=(\d+) batches=(\d+) user_s=([\d.]+) sys_s=([\d.]+) "
    r"maxrss_kib=(\d+) last_batch_unix=([\d.]+)"
)
LOG_TIME = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+)Z")


def log_time(log, needle):
    """Unix time of the first log line containing needle."""
    for line in log.splitlines():
        if needle in line:
            m = LOG_TIME.match(line)
            if m:
                t = datetime.datetime.fromisoformat(m.group(1))
                return t.replace(tzinfo=datetime.timezone.utc).timestamp()
    return None


def write_config(d, sync, shutdown, down, filt=None):
    for sub in ("etc/plugins.d", "run", "state"):
        os.makedirs(os.path.join(d, sub), exist_ok=True)
    with open(os.path.join(d, "etc/audispd.toml"), "w") as f:
        f.write(
            f"""# Written by benches/dispatch.sh.
[journal]
sync = "{sync}"
[shutdown]
timeout = "{shutdown}"
[stats]
interval = "0"
"""
        )
    for i in range(1, PLUGINS + 1):
        with open(os.path.join(d, f"etc/plugins.d/p{i}.toml"), "w") as f:
            f.write(f'exec = ["{NULL}", "--name", "p{i}"]\n')
            if filt:
                f.write(f"filter = '{filt[0]}'\nfilter_action = \"{filt[1]}\"\n")
    if down:
        # A native plugin on a socket nobody listens on: down for the whole
        # replay, so every record waits for it in the journal.
        with open(os.path.join(d, "etc/plugins.d/down.toml"), "w") as f:
            f.write(f'socket = "{d}/run/nobody.sock"\nformat = "native"\n')


def dir_bytes(d):
    total = 0
    for root, _, files in os.walk(d):
        for name in files:
            try:
                total += os.stat(os.path.join(root, name)).st_blocks * 512
            except OSError:
                pass
    return total


def run_audispd(case, records_path, n, tmp, state_parent):
    """One audispd replay; returns a dict of figures."""
    d = tempfile.mkdtemp(prefix=f"{case['key']}.", dir=tmp)
    write_config(d, case["sync"], case["shutdown"], case["down"], case.get("filter"))
    state = os.path.join(state_parent or d, f"state.{os.path.basename(d)}")
    os.makedirs(state)
    env = {k: v for k, v in os.environ.items() if k != "NOTIFY_SOCKET"}
    env["AUDISP_LOG"] = "info"
    out_path, log_path = os.path.join(d, "plugins.out"), os.path.join(d, "audispd.log")
    cmd = [
        AUDISPD,
        "--config-dir", os.path.join(d, "etc"),
        "--runtime-dir", os.path.join(d, "run"),
        "--state-dir", state,
    ]
    os.sync()
    done = {}
    with open(records_path, "rb") as stdin, open(out_path, "wb") as out, open(
        log_path, "wb"
    ) as log:
        t0 = time.time()
        p = subprocess.Popen(cmd, stdin=stdin, stdout=out, stderr=log, env=env)

        def reap():
            _, status, ru = os.wait4(p.pid, 0)
            done["t"] = time.time()
            done["status"] = os.waitstatus_to_exitcode(status)
            done["ru"] = ru

        waiter = threading.Thread(target=reap)
        waiter.start()
        samples = []
        while waiter.is_alive():
            s = proc_sample(p.pid)
            if s:
                samples.append((time.time(),) + s)
            waiter.join(0.02)
    p.returncode = done["status"]
    wall = done["t"] - t0
    log = open(log_path, errors="replace").read()
    if done["status"] != 0:
        die(f"{case['name']}: audispd exited with {done['status']}\n{log[-3000:]}")
    plugins = [m.groups() for m in map(NULL_LINE.match, open(out_path)) if m]
    if len(plugins) != PLUGINS:
        die(f"{case['name']}: {len(plugins)} of {PLUGINS} plugins reported\n{log[-3000:]}")
    if case.get("filter"):
        # Each gets what the filter passes: the same for all, not all.
        short = [p for p in plugins if int(p[1]) != int(plugins[0][1]) or int(p[1]) > n]
    else:
        short = [p for p in plugins if int(p[1]) != n]
    if short:
        die(f"{case['name']}: plugins got the wrong number of records: {short}")
    plugin_cpu = sum(float(p[3]) + float(p[4]) for p in plugins)
    plugin_rss = max(int(p[5]) for p in plugins)
    ru = done["ru"]
    # wait4 reports audispd plus the plugin programs it reaped.
    total_cpu = ru.ru_utime + ru.ru_stime
    delivered = max(float(p[6]) for p in plugins)
    hwm = max((s[2] for s in samples), default=0)
    # ru_maxrss is the maximum of audispd's peak, its plugins' peaks and
    # this driver's RSS when it forked (Linux keeps the pre-exec peak). When
    # it exceeds the plugins' and the driver's own peak it is audispd's,
    # exactly; otherwise take the last VmHWM sample (VmHWM only grows).
    driver = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    rss_kib = ru.ru_maxrss if ru.ru_maxrss > max(plugin_rss, driver) else hwm
    cpu_at_delivery = max((s[1] for s in samples if s[0] <= delivered), default=0.0)
    eof = log_time(log, "standard input closed")
    caught_up = "every plugin had every record" in log
    journal = dir_bytes(os.path.join(state, "journal"))
    down_behind = None
    if case["down"]:
        with open(os.path.join(state, "cursors/down.cursor")) as f:
            acked = int(f.read().split()[1])
        down_behind = n - acked
        if caught_up or down_behind <= 0:
            die(f"{case['name']}: the down plugin did not stay behind")
    elif not caught_up:
        die(f"{case['name']}: audispd did not report that every plugin had every record\n{log[-3000:]}")
    return {
        "wall": wall,
        "rate": n / wall,
        "eof": (eof - t0) if eof else float("nan"),
        "delivered": delivered - t0,
        "cpu": total_cpu - plugin_cpu,
        "cpu_at_delivery": cpu_at_delivery,
        "plugin_cpu": plugin_cpu,
        "rss_mib": rss_kib / 1024,
        "journal_mib": journal / 2**20,
        "down_behind": down_behind,
        "plugins": plugins,
        "dir": d,
        "state": state,
    }


# ----------------------------------------------------------------- report


def load():
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def fmt_rate(r):
    return f"{r / 1e6:.2f}M" if r >= 1e6 else f"{r / 1e3:.0f}k"


def summary(values, fmt):
    values = [v for v in values if v == v]
    if not values:
        return "n/a"
    med = statistics.median(values)
    if len(values) == 1:
        return fmt(med)
    return f"{fmt(med)} [{fmt(min(values))}-{fmt(max(values))}]"


def main():
    opts = parse_args(sys.argv[1:])
    for path in (AUDISPD, NULL):
        if not os.access(path, os.X_OK):
            die(f"{path} not built (run without --no-build)")
    n, runs = opts["records"], opts["runs"]
    ncpu = os.cpu_count() or 1

    def per_record(x):
        return (x["cpu_at_delivery"] + x["plugin_cpu"]) / n

    tmp = tempfile.mkdtemp(prefix="audisp-bench.")
    shm = None
    if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK):
        shm = tempfile.mkdtemp(prefix="audisp-bench.", dir="/dev/shm")
    try:
        records = os.path.join(tmp, "records.log")
        corpus_n, copies = build_records(records, n)
        size = os.path.getsize(records)
        with open(records, "rb") as f:  # into the page cache
            while f.read(1 << 20):
                pass
        print(f"load average before: {load()}", flush=True)
        print(
            f"{n} records ({size / 1e6:.0f} MB, {size / n:.0f} B/record): the "
            f"{corpus_n}-record corpus repeated {copies}x, timestamps and "
            f"serials of each repeat shifted; files in {tmp}",
            flush=True,
        )
        cases = [
            dict(key="batch", name=f"audispd, {PLUGINS} null plugins, sync=batch",
                 sync="batch", shutdown="300s", down=False, shm=False),
            dict(key="down", name="  + 5th plugin down (exit waits 3 s)",
                 sync="batch", shutdown="3s", down=True, shm=False),
            dict(key="interval", name=f"audispd, {PLUGINS} null plugins, sync=interval",
                 sync="interval", shutdown="300s", down=False, shm=False),
            dict(key="never", name=f"audispd, {PLUGINS} null plugins, sync=never",
                 sync="never", shutdown="300s", down=False, shm=False),
        ]
        if opts["filter"]:
            cases.insert(1, dict(key="filtered",
                                 name=f"  same, each plugin filtered ({opts['filter_action']})",
                                 sync="batch", shutdown="300s", down=False, shm=False,
                                 filter=(opts["filter"], opts["filter_action"])))
        if shm:
            cases.append(dict(key="tmpfs", name="  same, journal on tmpfs (no disk)",
                              sync="batch", shutdown="300s", down=False, shm=True))
        base = {"cat": [], "tee": [], "sock": [], "fresh": [], "over": []}
        res = {c["key"]: [] for c in cases}
        for r in range(runs):
            base["cat"].append(cat_cat(records))
            base["tee"].append(tee4(records, tmp))
            base["sock"].append(socket_copy(records))
            fresh, over = file_writes(records, tmp)
            base["fresh"].append(fresh)
            base["over"].append(over)
            for c in cases:
                fig = run_audispd(c, records, n, tmp, shm if c["shm"] else None)
                res[c["key"]].append(fig)
                if not opts["keep"]:
                    shutil.rmtree(fig["dir"], ignore_errors=True)
                    shutil.rmtree(fig["state"], ignore_errors=True)
            print(f"run {r + 1}/{runs} done", flush=True)

        f2 = lambda v: f"{v:.2f}"
        f1 = lambda v: f"{v:.1f}"
        f0 = lambda v: f"{v:.0f}"
        print(f"load average after: {load()} (other work on the machine skews "
              f"every figure; compare rows of one run)")
        print()
        print(f"Medians of {runs} runs [min-max]; {ncpu} CPUs; "
              f"{n} records, {size / 1e6:.0f} MB.")
        print()
        print("Baselines (same file, same run):")
        hdr = (f"  {'path':<40} {'wall s':<22} {'records/s':<24} {'GB/s':<20} "
               f"{'CPU s':<20} {'CPU-bound ceiling':<18}")
        print(hdr)
        for key, name in (("cat", "cat f | cat > /dev/null"),
                          ("tee", "cat f | tee to 4 readers"),
                          ("sock", "unix stream socket copy, 64 KiB"),
                          ("fresh", "file write, new file (fresh pages)"),
                          ("over", "file write, over the same file")):
            walls = [w for w, _ in base[key]]
            cpus = [c for _, c in base[key]]
            print(f"  {name:<40} {summary(walls, f2):<22} "
                  f"{summary([n / w for w in walls], fmt_rate):<24} "
                  f"{summary([size / w / 1e9 for w in walls], f2):<20} "
                  f"{summary(cpus, f2):<20} "
                  f"{summary([ncpu * n / c for c in cpus], fmt_rate):<18}")
        print()
        print(f"audispd reading the file on stdin, {PLUGINS} acking native plugins "
              f"(examples/null), records/s = records / wall time from start to exit:")
        print(f"  {'case':<42} {'wall s':<20} {'records/s':<22} {'audispd CPU s':<20} "
              f"{'plugins CPU s':<20} {'peak RSS MiB':<20} {'journal MiB':<14}")
        for c in cases:
            rs = res[c["key"]]
            print(f"  {c['name']:<42} {summary([x['wall'] for x in rs], f2):<20} "
                  f"{summary([x['rate'] for x in rs], fmt_rate):<22} "
                  f"{summary([x['cpu'] for x in rs], f2):<20} "
                  f"{summary([x['plugin_cpu'] for x in rs], f2):<20} "
                  f"{summary([x['rss_mib'] for x in rs], f1):<20} "
                  f"{summary([x['journal_mib'] for x in rs], f0):<14}")
        print()
        print("Where the wall time goes (seconds after start):")
        print(f"  {'case':<42} {'stdin EOF':<20} {'all delivered':<20} {'exit':<20} "
              f"{'records/s to delivery':<24} {'CPU us/record':<20} {'CPU-bound ceiling':<18}")
        for c in cases:
            rs = res[c["key"]]
            print(f"  {c['name']:<42} {summary([x['eof'] for x in rs], f2):<20} "
                  f"{summary([x['delivered'] for x in rs], f2):<20} "
                  f"{summary([x['wall'] for x in rs], f2):<20} "
                  f"{summary([n / x['delivered'] for x in rs], fmt_rate):<24} "
                  f"{summary([per_record(x) * 1e6 for x in rs], f2):<20} "
                  f"{summary([ncpu / per_record(x) for x in rs], fmt_rate):<18}")
        print("  (CPU us/record: audispd and the 4 plugins together, until delivery; "
              "ceiling: what that CPU cost allows on this many CPUs)")
        d = res["down"]
        print()
        print("Plugin down for the whole replay:")
        print(f"  records waiting for it in the journal: {summary([x['down_behind'] for x in d], f0)}; "
              f"journal on disk: {summary([x['journal_mib'] for x in d], f0)} MiB; "
              f"audispd peak RSS {summary([x['rss_mib'] for x in d], f1)} MiB")
        print(f"  audispd CPU until the live plugins had everything: "
              f"{summary([x['cpu_at_delivery'] for x in d], f2)} s; "
              f"in all, including the 3 s shutdown wait for the down plugin: "
              f"{summary([x['cpu'] for x in d], f2)} s")
        target = res["batch"]
        rate = statistics.median(x["rate"] for x in target)
        rss = max(x["rss_mib"] for x in target + d)
        print()
        print(f"Target >= 2M records/s fanned out to 4 plugins: "
              f"{'met' if rate >= 2e6 else 'MISSED'} ({fmt_rate(rate)}/s median, sync=batch)")
        if opts["filter"]:
            fr = statistics.median(x["rate"] for x in res["filtered"])
            fc = statistics.median(x["cpu"] for x in res["filtered"]) / n * 1e6
            bc = statistics.median(x["cpu"] for x in target) / n * 1e6
            got = [int(p[1]) for p in res["filtered"][0]["plugins"]]
            print(f"Filtered plugins (filter = '{opts['filter']}', {opts['filter_action']}): "
                  f"each got {got[0]} of {n} records; {fmt_rate(fr)}/s vs {fmt_rate(rate)}/s "
                  f"unfiltered ({(fr / rate - 1) * 100:+.1f} %); audispd CPU "
                  f"{fc:.2f} vs {bc:.2f} us/record; target within 10 %: "
                  f"{'met' if fr >= 0.9 * rate else 'MISSED'}")
        print(f"Target peak RSS <= 64 MiB: {'met' if rss <= 64 else 'MISSED'} "
              f"(highest {rss:.1f} MiB, including the down-plugin case)")
    finally:
        if opts["keep"]:
            print(f"kept {tmp}" + (f" and {shm}" if shm else ""))
        else:
            shutil.rmtree(tmp, ignore_errors=True)
            if shm:
                shutil.rmtree(shm, ignore_errors=True)


main()
PY
