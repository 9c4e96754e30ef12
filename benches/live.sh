#!/usr/bin/env bash
# benches/live.sh: a real auditd feeding audisp, layout by layout, in one run:
# records/s, CPU µs per record of every process, auditd's rate against a
# `cat`-like plugin alone, and latency to the plugin from the audited system
# call and from auditd's write of the record (a shim preloaded into auditd
# stamps its writes), and the kernel's floor under the stdin and hand-over
# rows (FLOOR_C). See benches/README.md for what each column means.
#
# Usage: benches/live.sh [--runs N] [--events N] [--bin DIR]... [--auditd DIR] [--no-build] [--keep]
#   --runs N     repetitions of every row, interleaved (default 1)
#   --events N   system calls in the full-rate phase (default 100000; ~3 records each)
#   --bin DIR    directory holding audispd and audisp-bridge; give it twice to
#                compare two builds row by row (default target/release)
#   --auditd DIR directory holding the auditd and auditctl to run (default: Debian's, from
#                PATH or /usr/sbin); binary rows follow its framing (padded up to 4.1.0,
#                exact from 4.1.1, by `auditctl -v`)
#   --no-build   do not run cargo build
#   --layouts L  comma-separated rows: cat,cat-binary,stdin,bridge,bridge-interval,
#                bridge-handover,binary (default all but bridge-interval and
#                bridge-handover; the cat row is always run; bridge-handover is
#                skipped for a --bin whose bridge has no --hand-over)
#   --perf DIR   record `perf record -g` of bridge and audispd (of the plugin in the cat
#                rows) in the full-rate phase into DIR
#   --perf-stat DIR  `perf stat --per-thread` of the same processes in the full-rate phase:
#                CPU, context switches, page faults and system calls by kind, into DIR
#   --keep       keep the temporary directory (configs, logs, and every latency sample
#                of the plugin: report.samples, "receipt-ns latency-ns" per SYSCALL record)
#
# Needs root, auditd/auditctl (3.x or 4.x), cc, python3; takes /tmp/audisp-kernel-audit.lock
# and the tests' kernel audit lock for the whole run. Stops only the auditd it started.
set -euo pipefail
cd "$(dirname "$0")/.."

build=1
for a in "$@"; do
    case "$a" in
        --no-build) build=0 ;;
        -h|--help) awk 'NR > 1 && !/^#/ { exit } NR > 1' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    esac
done
for tool in python3 cc; do
    command -v "$tool" >/dev/null || { echo "live.sh: $tool not found" >&2; exit 2; }
done
if [ "$build" = 1 ]; then
    cargo build --release --bin audispd --bin audisp-bridge >&2
fi
umask 022
exec python3 - "$@" <<'PY'
"""The driver: one private auditd per row, a getppid spinner as the load, a
small C plugin (tsplug) as the stock plugin at the end of every chain."""

import fcntl
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.getcwd()
AUID = "65534"
RULE_KEY = "audisp-live"
# Rows: auditd → plugin; → audispd (stdin) → plugin; → bridge → audispd → plugin
# (sync = "batch", the default, and "interval"; and the bridge handing auditd's
# socket to audispd); binary input to audispd.
# cat and cat-binary are the ceilings (auditd to tsplug alone, string and binary
# format), run once per repetition whatever --bin says.
LAYOUTS = ["cat", "cat-binary", "stdin", "bridge", "bridge-interval", "bridge-handover", "binary"]
CEILINGS = {"cat": "cat only", "cat-binary": "cat binary"}
# auditd <= 4.1.0 pads every binary frame to its header and 8,970 bytes;
# 4.1.1 and later write the header and `size` bytes (audisp/audispd.c,
# write_to_plugin: iov_len MAX_AUDIT_MESSAGE_LENGTH became e->hdr.size in
# commit acae9be5). tsplug takes 0 for exact frames.
PADDED_FRAME = 16 + 8970
# The auditd and auditctl run (--auditd DIR; default the system's), and the
# framing of that auditd's binary frames ("padded" or "exact").
AUDITD = {"auditd": None, "auditctl": None, "version": None, "framing": None}
# What --perf-stat counts, per thread.
PERF_STAT_EVENTS = ",".join(["task-clock", "context-switches", "page-faults"] + [
    f"syscalls:sys_enter_{c}" for c in ("read", "recvfrom", "recvmsg", "write", "pwrite64",
                                        "sendto", "sendmsg", "clock_nanosleep", "poll", "ppoll",
                                        "futex", "ioctl")])
# Records of one getppid() call: SYSCALL, PROCTITLE, EOE; and of the
# spinner setting its login uid, once per phase: LOGIN, SYSCALL, PROCTITLE, EOE.
RECORDS_PER_CALL = 3
LOGIN_RECORDS = 4
LOCKS = ["/tmp/audisp-kernel-audit.lock", "/run/lock/audisp-test-kernel-audit.lock"]

# The load: getppid() with a0 = CLOCK_MONOTONIC ns of the call (the kernel
# records the argument registers of any system call), paced to RATE calls/s
# (0: as fast as it can), then one call with a0 = 1 that ends the phase.
SPIN_C = r"""
#define _GNU_SOURCE
#include <stdlib.h>
#include <time.h>
#include <unistd.h>
#include <sys/syscall.h>
static unsigned long long now_ns(void) {
    struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t);
    return (unsigned long long)t.tv_sec * 1000000000ULL + (unsigned long long)t.tv_nsec;
}
int main(int argc, char **argv) {
    if (argc != 3) return 2;
    long n = atol(argv[1]); double rate = atof(argv[2]);
    unsigned long long start = now_ns();
    for (long i = 0; i < n; i++) {
        if (rate > 0) {
            unsigned long long due = start + (unsigned long long)((double)i * 1e9 / rate);
            if (now_ns() < due) {
                struct timespec ts = { (time_t)(due / 1000000000ULL), (long)(due % 1000000000ULL) };
                clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL);
            }
        }
        syscall(SYS_getppid, now_ns());
    }
    syscall(SYS_getppid, 1ULL);
    return 0;
}
"""

# The plugin: reads string records, or auditd's binary frames when given
# their size (padded; 0: exact frames, header and `size` bytes; large reads
# either way), stamps every SYSCALL record
# whose a0 is a spinner time with now - a0, and at the EOE after the phase's
# end marker appends "records seconds p50 p99 max pid" (µs) to argv[1].
TSPLUG_C = r"""
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
static unsigned long long now_ns(void) {
    struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t);
    return (unsigned long long)t.tv_sec * 1000000000ULL + (unsigned long long)t.tv_nsec;
}
static int cmp(const void *a, const void *b) {
    unsigned long long x = *(const unsigned long long *)a, y = *(const unsigned long long *)b;
    return x < y ? -1 : x > y;
}
static unsigned long long *lat, *at; static size_t nlat, caplat;
static unsigned long long records, first, last; static int ended;
/* kind: 1 a SYSCALL record, 2 an EOE record, 0 any other. */
static void record(const char *s, size_t len, int kind, const char *out) {
    unsigned long long t = now_ns();
    if (records == 0) first = t;
    last = t; records++;
    if (kind == 1) {
        const char *a = memmem(s, len, " a0=", 4);
        if (!a) return;
        unsigned long long v = strtoull(a + 4, NULL, 16);
        if (v == 1) { ended = 1; return; }
        if (v > t || t - v > 60000000000ULL) return;
        if (nlat == caplat) {
            caplat = caplat ? caplat * 2 : 65536;
            lat = realloc(lat, caplat * sizeof *lat); at = realloc(at, caplat * sizeof *at);
            if (!lat || !at) exit(1);
        }
        at[nlat] = t; lat[nlat++] = t - v;
    } else if (ended && kind == 2) {
        /* --keep: every sample (receipt time, latency; ns), and the clocks */
        char path[4096]; snprintf(path, sizeof path, "%s.samples", out);
        FILE *s = access(path, W_OK) == 0 ? fopen(path, "a") : NULL;
        if (s) {
            struct timespec rt; clock_gettime(CLOCK_REALTIME, &rt);
            fprintf(s, "# phase mono %llu realtime %lld.%09ld\n", now_ns(), (long long)rt.tv_sec, rt.tv_nsec);
            for (size_t i = 0; i < nlat; i++) fprintf(s, "%llu %llu\n", at[i], lat[i]);
            fclose(s);
        }
        qsort(lat, nlat, sizeof *lat, cmp);
        FILE *f = fopen(out, "a"); if (!f) exit(1);
        double secs = (double)(last - first) / 1e9;
        if (nlat == 0) fprintf(f, "%llu %.6f 0 0 0 %d\n", records, secs, getpid());
        else fprintf(f, "%llu %.6f %.1f %.1f %.1f %d\n", records, secs,
                     lat[nlat / 2] / 1e3, lat[(nlat * 99) / 100] / 1e3, lat[nlat - 1] / 1e3, getpid());
        fclose(f);
        records = 0; nlat = 0; ended = 0;
    }
}
static void line(const char *s, size_t len, const char *out) {
    int kind = len > 13 && memcmp(s, "type=SYSCALL ", 13) == 0 ? 1
             : len >= 8 && memcmp(s, "type=EOE", 8) == 0 ? 2 : 0;
    record(s, len, kind, out);
}
int main(int argc, char **argv) {
    if (argc != 2 && argc != 3) return 2;
    /* argv[2]: auditd's binary format, frames of that many bytes (padded),
       or 0: exact frames of 16 + size bytes */
    int binary = argc == 3;
    size_t frame = binary ? (size_t)atol(argv[2]) : 0;
    static char buf[1 << 20]; size_t have = 0;
    for (;;) {
        ssize_t n = read(0, buf + have, sizeof buf - have);
        if (n <= 0) return 0;
        have += (size_t)n;
        char *p = buf, *end = buf + have, *nl;
        if (binary) {
            /* header: version, header length, type, payload length (u32 each) */
            unsigned int h[4];
            while ((size_t)(end - p) >= sizeof h) {
                memcpy(h, p, sizeof h);
                size_t whole = frame ? frame : (size_t)h[1] + h[3];
                if ((size_t)(end - p) < whole) break;
                size_t len = h[3] < whole - h[1] ? h[3] : whole - h[1];
                record(p + h[1], len, h[2] == 1300 ? 1 : h[2] == 1320 ? 2 : 0, argv[1]);
                p += whole;
            }
        } else {
            while ((nl = memchr(p, '\n', (size_t)(end - p)))) { line(p, (size_t)(nl - p), argv[1]); p = nl + 1; }
        }
        have = (size_t)(end - p); memmove(buf, p, have);
    }
}
"""

# A shim preloaded into auditd (LD_PRELOAD): stamps the moment auditd hands
# each SYSCALL record of the spinner to its plugin, so that latency can be
# told from auditd's write to the plugin's read (the issue's measure), apart
# from auditd's own queueing. For every write()/writev() of a SYSCALL record
# with an " a0=" it keeps (a0, CLOCK_MONOTONIC ns just before the write: a
# write that waits for room in a full socket counts as latency of the
# plugin chain) and appends them, as pairs of host-endian u64, to
# $WSTAMP_OUT at the phase's end marker (a0 = 1, before writing it) and
# when its buffer is full. String records (one write each) and binary
# frames written with writev (header, payload) are recognised. It removes
# LD_PRELOAD and WSTAMP_OUT from the environment at load, so that the
# plugins auditd starts do not inherit it.
WSTAMP_C = r"""
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/syscall.h>
#include <sys/uio.h>
static char *out;
static unsigned long long buf[2 * 8192]; static size_t nbuf;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
__attribute__((constructor)) static void init(void) {
    const char *o = getenv("WSTAMP_OUT");
    if (o) out = strdup(o);
    unsetenv("LD_PRELOAD"); unsetenv("WSTAMP_OUT");
}
static void flush(void) {
    if (!out || nbuf == 0) return;
    int fd = (int)syscall(SYS_openat, AT_FDCWD, out, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
    if (fd >= 0) { syscall(SYS_write, fd, buf, nbuf * sizeof *buf); syscall(SYS_close, fd); }
    nbuf = 0;
}
/* A SYSCALL record's text (len bytes at s): stamp it. */
static void stamp(const char *s, size_t len) {
    const char *a = memmem(s, len, " a0=", 4);
    if (!a) return;
    unsigned long long v = strtoull(a + 4, NULL, 16);
    struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t);
    unsigned long long now = (unsigned long long)t.tv_sec * 1000000000ULL + (unsigned long long)t.tv_nsec;
    pthread_mutex_lock(&mu);
    if (v == 1) flush();
    else {
        buf[nbuf++] = v; buf[nbuf++] = now;
        if (nbuf == sizeof buf / sizeof *buf) flush();
    }
    pthread_mutex_unlock(&mu);
}
ssize_t write(int fd, const void *b, size_t n) {
    if (out && n > 13 && memcmp(b, "type=SYSCALL ", 13) == 0) stamp(b, n);
    return syscall(SYS_write, fd, b, n);
}
ssize_t writev(int fd, const struct iovec *iov, int cnt) {
    unsigned int h[4];
    if (out && cnt >= 2 && iov[0].iov_len == sizeof h) {
        memcpy(h, iov[0].iov_base, sizeof h);
        if (h[2] == 1300) stamp(iov[1].iov_base, h[3] < iov[1].iov_len ? h[3] : iov[1].iov_len);
    }
    return syscall(SYS_writev, fd, iov, cnt);
}
"""

# The kernel's floor under the live path on this machine, measured in the
# same run: what a 1 ms timed nap costs a thread in CPU (arming the timer and
# the switches around it), what waking a thread asleep in poll() costs the
# waker and the woken, and per record of RECORD_BYTES written one write()
# each (as auditd writes, RECORDS_PER_MS a millisecond so the socket never
# fills), what taking it out of a unix stream socket in 1 ms rounds costs:
# peeked, then removed (hand-over: audispd peeks, the bridge removes), or
# read (stdin). Prints "key value" pairs, µs of thread CPU.
FLOOR_C = r"""
#define _GNU_SOURCE
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
static double cpu_us(void) {
    struct timespec t; clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return t.tv_sec * 1e6 + t.tv_nsec / 1e3;
}
static void nap_1ms(void) {
    struct timespec ts = { 0, 1000000 }; clock_nanosleep(CLOCK_MONOTONIC, 0, &ts, NULL);
}
static int efd; static volatile int woken, stopping; static double woken_cpu;
static void *sleeper(void *arg) {
    (void)arg; double t0 = cpu_us();
    for (;;) {
        struct pollfd p = { efd, POLLIN, 0 }; uint64_t v;
        if (poll(&p, 1, -1) < 0 || read(efd, &v, 8) != 8) continue;
        if (stopping) break;
        woken++;
    }
    woken_cpu = cpu_us() - t0;
    return NULL;
}
static void stream(long n, int size, int per_ms, int peek, double *peek_us, double *take_us) {
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv)) { perror("socketpair"); exit(1); }
    pid_t pid = fork();
    if (pid < 0) { perror("fork"); exit(1); }
    if (pid == 0) {
        close(sv[1]);
        char *rec = malloc(size); memset(rec, 'a', size - 1); rec[size - 1] = '\n';
        struct timespec due; clock_gettime(CLOCK_MONOTONIC, &due);
        for (long i = 0; i < n; i++) {
            if (write(sv[0], rec, size) != size) _exit(1);
            if (i % per_ms == per_ms - 1) {
                due.tv_nsec += 1000000;
                if (due.tv_nsec >= 1000000000) { due.tv_sec++; due.tv_nsec -= 1000000000; }
                clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &due, NULL);
            }
        }
        _exit(0);
    }
    close(sv[0]);
    int zero = 0;
    if (peek && setsockopt(sv[1], SOL_SOCKET, SO_PEEK_OFF, &zero, sizeof zero)) { perror("SO_PEEK_OFF"); exit(1); }
    static char buf[1 << 20];
    long total = n * size, got = 0; double tp = 0, tt = 0;
    while (got < total) {
        nap_1ms();
        double t = cpu_us();
        ssize_t k = recv(sv[1], buf, sizeof buf, MSG_DONTWAIT | (peek ? MSG_PEEK : 0));
        double u = cpu_us();
        if (k <= 0) continue;
        if (peek) {
            tp += u - t;
            for (ssize_t r = 0; r < k;) {
                ssize_t m = recv(sv[1], buf, k - r, 0);
                if (m <= 0) { perror("recv"); exit(1); }
                r += m;
            }
            tt += cpu_us() - u;
        } else {
            tt += u - t;
        }
        got += k;
    }
    int st; waitpid(pid, &st, 0); close(sv[1]);
    if (!WIFEXITED(st) || WEXITSTATUS(st)) { fprintf(stderr, "writer failed\n"); exit(1); }
    *peek_us = tp / n; *take_us = tt / n;
}
int main(int argc, char **argv) {
    if (argc != 4) return 2;
    long n = atol(argv[1]); int size = atoi(argv[2]), per_ms = atoi(argv[3]);
    const int rounds = 1000;
    double t0 = cpu_us();
    for (int i = 0; i < rounds; i++) nap_1ms();
    double nap = (cpu_us() - t0) / rounds;
    efd = eventfd(0, EFD_CLOEXEC);
    pthread_t th;
    if (efd < 0 || pthread_create(&th, NULL, sleeper, NULL)) { perror("eventfd thread"); return 1; }
    double waker = 0; uint64_t one = 1;
    for (int i = 0; i < rounds; i++) {
        nap_1ms();
        double t = cpu_us();
        if (write(efd, &one, 8) != 8) return 1;
        waker += cpu_us() - t;
    }
    nap_1ms();
    stopping = 1;
    if (write(efd, &one, 8) != 8) return 1;
    pthread_join(th, NULL);
    double peek, remove, unused, rd;
    stream(n, size, per_ms, 1, &peek, &remove);
    stream(n, size, per_ms, 0, &unused, &rd);
    printf("nap %.3f waker %.3f woken %.3f peek %.3f remove %.3f read %.3f\n",
           nap, waker / rounds, woken_cpu / (woken ? woken : 1), peek, remove, rd);
    return 0;
}
"""
# Record size and pace of FLOOR_C's stream: about the mean of the load's
# records (SYSCALL, PROCTITLE, EOE), at about auditd's full rate here.
RECORD_BYTES = 160
RECORDS_PER_MS = 70

AUDITD_CONF = """local_events = yes
write_logs = yes
log_file = {root}/audit.log
log_group = 0
log_format = ENRICHED
flush = NONE
freq = 0
num_logs = 0
name_format = NONE
max_log_file = 0
max_log_file_action = IGNORE
space_left = 2
space_left_action = IGNORE
admin_space_left = 1
admin_space_left_action = IGNORE
disk_full_action = IGNORE
disk_error_action = SYSLOG
priority_boost = 0
use_libwrap = no
distribute_network = no
q_depth = 99999
overflow_action = SYSLOG
max_restarts = 10
plugin_dir = {root}/plugins.d
end_of_event_timeout = 2
"""


def die(msg):
    print(f"live.sh: {msg}", file=sys.stderr)
    sys.exit(1)


def parse_args(argv):
    opts = {"runs": 1, "events": 100_000, "bins": [], "keep": False, "perf": None, "perf_stat": None,
            "auditd": None,
            "layouts": ["cat", "cat-binary", "stdin", "bridge", "binary"]}
    it = iter(argv)
    for a in it:
        if a in ("--runs", "--events"):
            v = next(it, None)
            if v is None or not v.isdigit() or int(v) < 1:
                die(f"{a} needs a positive integer")
            opts[a[2:]] = int(v)
        elif a == "--bin":
            v = next(it, None)
            if v is None or not os.path.isfile(os.path.join(v, "audispd")):
                die(f"--bin {v}: no audispd there")
            opts["bins"].append(os.path.abspath(v))
        elif a == "--auditd":
            v = next(it, None)
            if v is None or not all(os.access(os.path.join(v, t), os.X_OK) for t in ("auditd", "auditctl")):
                die(f"--auditd {v}: needs a directory holding auditd and auditctl")
            opts["auditd"] = os.path.abspath(v)
        elif a == "--keep":
            opts["keep"] = True
        elif a in ("--perf", "--perf-stat"):
            key = a[2:].replace("-", "_")
            opts[key] = os.path.abspath(next(it, "") or die(f"{a} needs a directory"))
            os.makedirs(opts[key], exist_ok=True)
        elif a == "--layouts":
            opts["layouts"] = (next(it, "") or die("--layouts needs a list")).split(",")
            if not set(opts["layouts"]) <= set(LAYOUTS):
                die(f"--layouts {opts['layouts']}: {', '.join(LAYOUTS)}")
        elif a == "--no-build":
            pass
        else:
            die(f"unknown argument {a} (see benches/live.sh --help)")
    if not opts["bins"]:
        opts["bins"] = [os.path.join(ROOT, "target/release")]
    return opts


def find_auditd(directory):
    """Fills AUDITD: the auditd and auditctl of directory (None: the system's),
    auditctl's version and the binary framing that version writes."""
    for tool in ("auditd", "auditctl"):
        path = (os.path.join(directory, tool) if directory
                else shutil.which(tool, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin"))
        if not path:
            die(f"{tool} not found (apt-get install auditd, or --auditd DIR)")
        AUDITD[tool] = path
    version = run(AUDITD["auditctl"], "-v").split()[-1]
    try:
        key = tuple(int(x) for x in (version.split(".") + ["0", "0"])[:3])
    except ValueError:
        die(f"cannot read auditctl's version {version!r}")
    AUDITD["version"] = version
    AUDITD["framing"] = "padded" if key <= (4, 1, 0) else "exact"


def run(*cmd):
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout


def kernel_status():
    out = {}
    for line in run(AUDITD["auditctl"], "-s").splitlines():
        w = line.split()
        if len(w) >= 2 and w[1].isdigit():
            out[w[0]] = int(w[1])
    return out


def cpu_ns(pid):
    """On-CPU time of pid: (every live thread's, from schedstat, ns; the whole
    process's, threads that ended included, from /proc/PID/stat clock ticks,
    in ns). A thread that ends during a phase (a handed-over stream's reader
    when its input takes the stream back) takes its schedstat with it."""
    total = 0
    ticks = 0
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        ticks = int(fields[11]) + int(fields[12])
    except (FileNotFoundError, ProcessLookupError):
        pass
    return total, ticks * 1_000_000_000 // os.sysconf("SC_CLK_TCK")


def children(pid):
    out = []
    for e in os.listdir("/proc"):
        if not e.isdigit():
            continue
        try:
            with open(f"/proc/{e}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        name = stat[stat.index("(") + 1: stat.rindex(")")]
        if int(stat[stat.rindex(")") + 2:].split()[1]) == pid:
            out.append((int(e), name))
    return out


def wait_for(what, cond, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(0.005)
    die(f"timed out waiting for {what}")


def write_exec(path, text):
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, 0o750)


class Row:
    """One layout with one set of binaries: auditd and whatever it runs."""

    def __init__(self, tmp, name, layout, bindir, keep=False):
        self.name, self.layout, self.bindir = name, layout, bindir
        self.root = tempfile.mkdtemp(prefix=f"{layout}.", dir=tmp)
        self.report = os.path.join(self.root, "report")
        # auditd's write of every SYSCALL record (WSTAMP_C).
        self.stamps = os.path.join(self.root, "wstamp")
        if keep:
            self.take_samples()
        self.audispd = None
        self.auditd = None

    def take_samples(self):
        """tsplug writes every latency sample next to its report from the
        next phase on (with --keep from the first: the file is kept)."""
        if not os.path.exists(f"{self.report}.samples"):
            open(f"{self.report}.samples", "w").close()
            os.chmod(f"{self.report}.samples", 0o666)

    def start(self, tools):
        r = self.root
        os.makedirs(f"{r}/plugins.d", mode=0o750)
        with open(f"{r}/auditd.conf", "w") as f:
            f.write(AUDITD_CONF.format(root=r))
        os.chmod(f"{r}/auditd.conf", 0o640)
        fmt = "binary" if self.layout in ("binary", "cat-binary") else "string"
        if self.layout == "cat":
            path, args = tools["tsplug"], self.report
        elif self.layout == "cat-binary":
            frame = PADDED_FRAME if AUDITD["framing"] == "padded" else 0
            path, args = tools["tsplug"], f"{self.report} {frame}"
        else:
            for sub in ("etc/plugins.d", "run", "state"):
                os.makedirs(f"{r}/{sub}")
            binary = f'format = "binary"\nbinary_framing = "{AUDITD["framing"]}"'
            stdin = {"stdin": 'format = "string"', "binary": binary,
                     "bridge": "enabled = false", "bridge-interval": "enabled = false",
                     "bridge-handover": "enabled = false"}[self.layout]
            sync = "interval" if self.layout == "bridge-interval" else "batch"
            with open(f"{r}/etc/audispd.toml", "w") as f:
                f.write(f"[input.stdin]\n{stdin}\n[journal]\nsync = \"{sync}\"\n"
                        f"[stats]\ninterval = \"0\"\n")
            with open(f"{r}/etc/plugins.d/ts.toml", "w") as f:
                f.write(f'exec = ["{tools["tsplug"]}", "{self.report}"]\nformat = "string"\n')
            audispd = (f"{self.bindir}/audispd --config-dir {r}/etc --runtime-dir {r}/run "
                       f"--state-dir {r}/state")
            if self.layout.startswith("bridge"):
                self.audispd = subprocess.Popen(audispd.split(), stdin=subprocess.DEVNULL,
                                                stderr=open(f"{r}/audispd.log", "w"))
                wait_for("audispd's input socket", lambda: os.path.exists(f"{r}/run/input.sock"))
                cmd = (f"{self.bindir}/audisp-bridge --socket {r}/run/input.sock "
                       f"--state-dir {r}/bridge")
                if self.layout == "bridge-handover":
                    cmd += " --hand-over"
                elif "--no-hand-over" in subprocess.run(
                        [f"{self.bindir}/audisp-bridge", "--help"], capture_output=True,
                        text=True).stdout:
                    # Hand-over is the default of newer bridges: the relay row relays.
                    cmd += " --no-hand-over"
                log = "bridge.log"
            else:
                cmd, log = audispd, "audispd.log"
            path, args = f"{r}/wrapper", ""
            write_exec(path, f"#!/bin/sh\nexec {cmd} 2>>{r}/{log}\n")
        conf = f"active = yes\ndirection = out\npath = {path}\ntype = always\nformat = {fmt}\n"
        if args:
            conf += f"args = {args}\n"
        with open(f"{r}/plugins.d/p.conf", "w") as f:
            f.write(conf)
        os.chmod(f"{r}/plugins.d/p.conf", 0o640)
        env = dict(os.environ, LD_PRELOAD=tools["wstamp"], WSTAMP_OUT=self.stamps)
        self.auditd = subprocess.Popen([AUDITD["auditd"], "-n", "-c", r], stdin=subprocess.DEVNULL,
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        wait_for("auditd to register", lambda: kernel_status().get("pid") == self.auditd.pid)

    def pids(self):
        """Name → pid of auditd, bridge, audispd and the plugin."""
        out = {"auditd": self.auditd.pid}
        top = [self.auditd.pid] + ([self.audispd.pid] if self.audispd else [])
        todo = list(top)
        while todo:
            for pid, name in children(todo.pop()):
                key = {"audisp-bridge": "bridge", "audispd": "audispd", "tsplug": "plugin"}.get(name)
                if key:
                    out[key] = pid
                    todo.append(pid)
        if self.audispd:
            out["audispd"] = self.audispd.pid
        return out

    def stop(self):
        if self.auditd and self.auditd.poll() is None:
            self.auditd.send_signal(signal.SIGTERM)
            self.auditd.wait(timeout=60)
        wait_for("kernel audit to be released", lambda: kernel_status().get("pid") == 0)
        if self.audispd:
            time.sleep(0.5)
            self.audispd.send_signal(signal.SIGTERM)
            self.audispd.wait(timeout=60)


def phase(row, tools, events, rate, perf=None):
    """Runs the spinner; returns the plugin's report and CPU ns per process.
    perf: (kind, DIR), kind "record" or "stat", to profile the full-rate phase."""
    pids = row.pids()
    recorder = None
    if perf:
        kind, out_dir = perf
        # The cat rows have only the plugin: its profile is the ceiling's.
        kinds = ("plugin",) if row.layout in CEILINGS else ("bridge", "audispd")
        watched = ",".join(str(p) for k, p in pids.items() if k in kinds)
        out = os.path.join(out_dir, row.name.replace(" ", "-"))
        if kind == "record":
            cmd = ["perf", "record", "-g", "-q", "-o", f"{out}.data", "-p", watched]
        else:
            cmd = ["perf", "stat", "--per-thread", "--append", "-e", PERF_STAT_EVENTS, "-o", f"{out}.txt",
                   "-p", watched]
        recorder = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.5)
    before = {k: cpu_ns(p) for k, p in pids.items()}
    n_before = len(open(row.report).read().splitlines()) if os.path.exists(row.report) else 0
    sizes = [os.path.getsize(f) if os.path.exists(f) else 0
             for f in (f"{row.report}.samples", row.stamps)]

    def loginuid():
        with open("/proc/self/loginuid", "w") as f:
            f.write(AUID)

    started = time.monotonic()
    subprocess.run([tools["spin"], str(events), str(rate)], check=True, preexec_fn=loginuid)

    def report():
        if not os.path.exists(row.report):
            return None
        lines = open(row.report).read().splitlines()
        return lines[n_before] if len(lines) > n_before else None

    line = wait_for(f"{row.name}: the plugin's report", report, timeout=300)
    wall = time.monotonic() - started
    if recorder:
        recorder.send_signal(signal.SIGINT)
        recorder.wait()
    after = {k: cpu_ns(p) for k, p in pids.items()}
    recs, secs, p50, p99, mx, _ = line.split()
    written = from_write(row, sizes)
    # The larger of the two: schedstat is exact but loses threads that
    # ended; clock ticks keep them, at 10 ms resolution.
    cpu = {k: max(after[k][0] - before[k][0], after[k][1] - before[k][1]) for k in pids}
    return {"records": int(recs), "secs": wall, "p50": float(p50), "p99": float(p99),
            "max": float(mx), "written": written, "cpu": cpu, "want": LOGIN_RECORDS + RECORDS_PER_CALL * (events + 1),
            "queue": auditd_queue(row.auditd.pid)}


def from_write(row, sizes):
    """Latency from auditd's write of each SYSCALL record (WSTAMP_C) to the
    plugin's read of it (tsplug's samples) in the phase just ended: p50,
    p99 and max µs, or None without samples (the full-rate phase, unless
    --keep) or without stamps (an auditd whose writes the shim does not
    see)."""
    samples_path = f"{row.report}.samples"
    if not os.path.exists(samples_path) or not os.path.exists(row.stamps):
        return None
    with open(row.stamps, "rb") as f:
        f.seek(sizes[1])
        raw = f.read()
    words = memoryview(raw)[:len(raw) // 16 * 16].cast("Q")
    wrote = {words[i]: words[i + 1] for i in range(0, len(words), 2)}
    lat = []
    with open(samples_path) as f:
        f.seek(sizes[0])
        for ln in f:
            if ln.startswith("#"):
                continue
            at, since_call = map(int, ln.split())
            w = wrote.get(at - since_call)
            if w is not None and w <= at:
                lat.append(at - w)
    if not lat:
        return None
    lat.sort()
    return {"p50": lat[len(lat) // 2] / 1e3, "p99": lat[len(lat) * 99 // 100] / 1e3,
            "max": lat[-1] / 1e3, "n": len(lat)}


# Where auditd writes its state report on SIGCONT: /var/run up to 3.x,
# AUDIT_RUN_DIR (/var/run/audit or /run/audit) from 4.0.
STATE_FILES = ("/var/run/auditd.state", "/var/run/audit/auditd.state", "/run/audit/auditd.state")


def auditd_queue(pid):
    """auditd's own plugin queue, from its state report (SIGCONT): the most it
    held and whether it overflowed (then auditd dropped records before any
    plugin saw them: overflow_action = SYSLOG). A row that comes up short with
    "overflowed yes" lost them in auditd, behind a plugin that fell behind by
    q_depth records; with "no", after auditd. The flag stays set for the
    rest of that auditd's life."""
    for f in STATE_FILES:
        if os.path.exists(f):
            os.unlink(f)
    os.kill(pid, signal.SIGCONT)
    found = wait_for("auditd's state report", lambda: next((f for f in STATE_FILES if os.path.exists(f)
                                                            and os.path.getsize(f) > 0), None), timeout=10)
    state = {}
    for _ in range(50):
        text = open(found).read()
        state = dict(line.split(" = ", 1) for line in text.splitlines() if " = " in line)
        if "plugin queue overflow detected" in state:
            break
        time.sleep(0.02)  # the report is written line by line: read again until whole
    return (f"auditd's plugin queue: most held {state.get('max plugin queue depth used', '?')} of "
            f"{state.get('plugin queue size', '?')}, overflowed {state.get('plugin queue overflow detected', '?')}")


def main():
    opts = parse_args(sys.argv[1:])
    if os.geteuid() != 0:
        die("needs root (it runs auditd)")
    find_auditd(opts["auditd"])
    locks = []
    for path in LOCKS:
        f = open(path, "a")
        fcntl.flock(f, fcntl.LOCK_EX)
        locks.append(f)
    st = kernel_status()
    if st.get("pid"):
        die(f"another audit daemon (pid {st['pid']}) owns kernel audit")
    if st.get("enabled") == 2:
        die("kernel audit is locked")
    tmp = tempfile.mkdtemp(prefix="audisp-live.")
    os.chmod(tmp, 0o700)
    tools = {}
    for name, src in (("spin", SPIN_C), ("tsplug", TSPLUG_C), ("wstamp", WSTAMP_C),
                      ("floor", FLOOR_C)):
        c = os.path.join(tmp, f"{name}.c")
        open(c, "w").write(src)
        tools[name] = os.path.join(tmp, name)
        if name == "wstamp":
            tools[name] += ".so"
            run("cc", "-O2", "-shared", "-fPIC", "-o", tools[name], c)
        else:
            run("cc", "-O2", "-pthread", "-o", tools[name], c)
        os.chmod(tools[name], 0o750)
    rules = [["-a", "never,user", "-F", f"auid!={AUID}"],
             ["-a", "always,exit", "-F", "arch=b64", "-S", "getppid", "-F", f"auid={AUID}",
              "-k", RULE_KEY]]
    added = []
    rows_spec = [(name, layout, None) for layout, name in CEILINGS.items()
                 if layout == "cat" or layout in opts["layouts"]]
    for b in opts["bins"]:
        tag = os.path.basename(b.rstrip("/")) if len(opts["bins"]) > 1 else ""
        for layout in LAYOUTS[2:]:
            if layout == "bridge-handover" and "--hand-over" not in subprocess.run(
                    [f"{b}/audisp-bridge", "--help"], capture_output=True, text=True).stdout:
                continue
            if layout in opts["layouts"]:
                rows_spec.append((f"{layout} {tag}".strip(), layout, b))
    results = {name: [] for name, _, _ in rows_spec}
    floors = []
    miscounts = []
    print(f"auditd {AUDITD['version']} ({AUDITD['auditd']}), {AUDITD['framing']} binary frames", flush=True)
    print(f"load before: {os.getloadavg()}", flush=True)
    try:
        run(AUDITD["auditctl"], "-b", "8192")
        for r in rules:
            run(AUDITD["auditctl"], *r)
            added.append(r)
        for i in range(opts["runs"]):
            floors.append(measure_floor(tools))
            for name, layout, b in rows_spec:
                row = Row(tmp, name, layout, b, opts["keep"])
                try:
                    row.start(tools)
                    phase(row, tools, 2000, 0)  # warm-up (auditd's own records too: not counted)
                    perf = (("record", opts["perf"]) if opts["perf"]
                            else ("stat", opts["perf_stat"]) if opts["perf_stat"] else None)
                    full = phase(row, tools, opts["events"], 0, perf)
                    row.take_samples()
                    r50 = phase(row, tools, 34000, 50000 / 3)
                    r1 = phase(row, tools, 1000, 1000 / 3)
                finally:
                    row.stop()
                results[name].append((full, r50, r1))
                for label, p in (("full rate", full), ("50k/s", r50), ("1k/s", r1)):
                    if p["records"] != p["want"]:
                        miscounts.append(f"run {i + 1} {name} {label}: {p['records']} records, "
                                         f"want {p['want']} ({p['queue']})")
                w50 = (f"; p99 from auditd's write @50k/s {r50['written']['p99'] / 1e3:.2f} ms"
                       if r50["written"] else "")
                print(f"run {i + 1} {name}: {full['records'] / full['secs']:.0f} rec/s{w50}; after the"
                      f" row, {r1['queue']}{take_backs(row)}", flush=True)
    finally:
        for r in reversed(added):
            subprocess.run([AUDITD["auditctl"], "-d"] + r[1:], capture_output=True)
        run(AUDITD["auditctl"], "-b", str(st["backlog_limit"]))
        run(AUDITD["auditctl"], "-e", str(st["enabled"]))
        lost = kernel_status().get("lost", 0) - st.get("lost", 0)
        if not opts["keep"]:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print(f"kept {tmp}")
    print(f"load after: {os.getloadavg()}; kernel lost {lost} records")
    phases = 3 * sum(len(v) for v in results.values())
    print(f"records: {phases - len(miscounts)} of {phases} phases delivered exactly what the "
          "spinner caused" + "".join(f"\n  {m}" for m in miscounts))
    print_table(rows_spec, results)
    print_floor(rows_spec, results, floors)


def measure_floor(tools):
    """One run of FLOOR_C: {what: µs of CPU}."""
    out = subprocess.run([tools["floor"], str(RECORDS_PER_MS * 1000), str(RECORD_BYTES),
                          str(RECORDS_PER_MS)], check=True, capture_output=True, text=True).stdout
    words = out.split()
    return {k: float(v) for k, v in zip(words[::2], words[1::2])}


# What a 1 ms round of each layout pays besides the reader's own timed nap:
# wake-ups audisp pays as the waker, wake-ups of audisp's threads it pays as
# the woken, and how it takes auditd's records out of the socket. Since
# 369879a the input thread writes to a waiting stock plugin itself (waking
# the plugin, whose own share is the plugin's); the hand-over's reader also
# wakes the bridge's relay with its acknowledgement.
FLOOR_LAYOUTS = {
    "stdin": (1, 0, ("read",), "read + (nap + waking the plugin) / records per round"),
    "bridge-handover": (2, 1, ("peek", "remove"),
                        "peek + remove + (nap + waking the plugin and the bridge's relay,"
                        " the relay's share included) / records per round"),
}


def print_floor(rows_spec, results, floors):
    """The kernel's floor under the stdin and hand-over rows (FLOOR_C's
    figures, medians of the runs): the least CPU a record can cost those
    layouts at the row's full rate in 1 ms rounds, before any parsing,
    journaling, encoding or writing to the plugin."""
    f = {k: med([x[k] for x in floors]) for k in floors[0]}
    print(f"kernel floor, this machine (median of {len(floors)}): a 1 ms timed nap {f['nap']:.1f} µs"
          f" of CPU; waking a thread asleep in poll() {f['waker']:.1f} µs (waker) +"
          f" {f['woken']:.1f} µs (woken); per record of {RECORD_BYTES} bytes written one write()"
          f" each: read {f['read']:.2f} µs, peek {f['peek']:.2f} + remove {f['remove']:.2f} µs")
    for name, layout, _ in rows_spec:
        if layout not in FLOOR_LAYOUTS:
            continue
        wakers, woken, takes, how = FLOOR_LAYOUTS[layout]
        per_round = full_rate(results, name) / 1000
        round_us = f["nap"] + wakers * f["waker"] + woken * f["woken"]
        least = sum(f[t] for t in takes) + round_us / per_round
        print(f"  {name:<22} at least {least:.2f} µs/record ({per_round:.0f} records per round: {how})")


def take_backs(row):
    """How often the bridge took auditd's stream back from a stalled
    dispatcher in this row (hand-over rows): every hand-over after the first
    followed one. Counted from the bridge's log, whose take-back warnings
    are rate-limited and so undercount."""
    if row.layout != "bridge-handover":
        return ""
    try:
        log = open(os.path.join(row.root, "bridge.log")).read()
    except OSError:
        return ""
    return f"; take-backs {max(log.count('handed the stream over to the dispatcher') - 1, 0)}"


def med(xs):
    return statistics.median(xs) if xs else float("nan")


def full_rate(results, name):
    """A row's records/s in its full-rate phase, median of the runs."""
    return med([f["records"] / f["secs"] for f, _, _ in results[name]])


def print_table(rows_spec, results):
    procs = ["auditd", "bridge", "audispd", "plugin"]

    def cpu(name, p):
        vals = [f["cpu"][p] / 1e3 / f["records"] for f, _, _ in results[name] if p in f["cpu"]]
        return med(vals) if vals else None

    head = (f"{'layout':<22}{'rec/s':>9}{'% cat':>7}" + "".join(f"{p + ' µs':>12}" for p in procs)
            + f"{'audisp µs':>11}{'over cat µs':>13}"
            + "  p50/p99/max ms @50k/s    p50/p99/max ms @1k/s"
            + "    from auditd's write: @50k/s  @1k/s")
    print(head)
    for name, layout, _ in rows_spec:
        # The ceiling: the cat row reading the same format as this row's auditd writes.
        binary = layout in ("binary", "cat-binary") and "cat binary" in results
        ceiling = "cat binary" if binary else "cat only"
        rs = results[name]
        cells = [f"{c:12.2f}" if c is not None else f"{'-':>12}"
                 for c in (cpu(name, p) for p in procs)]
        audisp = [c for c in (cpu(name, p) for p in ("bridge", "audispd")) if c is not None]
        lat = ""
        for k in (1, 2):
            lat += "  " + "/".join(f"{med([r[k][q] for r in rs]) / 1e3:.2f}" for q in ("p50", "p99", "max")).ljust(24)
        for k in (1, 2):
            w = [r[k]["written"] for r in rs if r[k]["written"]]
            cell = "/".join(f"{med([x[q] for x in w]) / 1e3:.2f}" for q in ("p50", "p99", "max")) if w else "-"
            lat += "  " + cell.ljust(24)
        aud = f"{sum(audisp):11.2f}" if audisp else f"{'-':>11}"
        over = f"{sum(audisp) - cpu(ceiling, 'plugin'):13.2f}" if audisp else f"{'-':>13}"
        rate = full_rate(results, name)
        print(f"{name:<22}{rate:9.0f}{100 * rate / full_rate(results, ceiling):6.0f}%" + "".join(cells)
              + aud + over + lat)
    print("% cat and over cat µs (audisp µs less the cat row's plugin µs) are against the cat row"
          " of the same input format (binary rows: cat binary, when run)")
    print("latency: from the audited system call (auditd's own queueing included), and from"
          " auditd's write of the record to the plugin's read (what the plugin chain adds)")

main()
PY
