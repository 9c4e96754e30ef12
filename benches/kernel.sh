#!/usr/bin/env bash
# benches/kernel.sh: records/s from the kernel to a plugin through
# audisp-kernel and audispd, against auditd -> audispd and a minimal
# multicast reader on the same load, in one run; and netfilter packet logs
# end to end through audisp-netfilter (packets/s, CPU per packet) against
# the sender's own rate. See benches/README.md.
#
# Usage: sudo benches/kernel.sh [--events N] [--packets N] [--no-build]
#   --events N    getppid events of the audit load (default 100000; 3 records each)
#   --packets N   UDP packets of the netfilter flood (default 200000)
#   --no-build    use the release binaries already in target/release
#   --netfilter-only  only the packet-log part (no kernel audit, no lock needed)
#
# Needs root, kernel audit with no audit daemon registered, auditd/auditctl,
# nft, ip, python3. Changes kernel audit (a rule on the test login uid,
# backlog_limit, enabled) and puts it back; run it under
# `flock /tmp/audisp-kernel-audit.lock`.
set -euo pipefail
cd "$(dirname "$0")/.."

build=1
for a in "$@"; do
    case "$a" in
        --no-build) build=0 ;;
        -h|--help) awk 'NR > 1 && !/^#/ { exit } NR > 1' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    esac
done
[ "$(id -u)" = 0 ] || { echo "kernel.sh: needs root" >&2; exit 2; }
for tool in python3 auditctl auditd nft ip; do
    command -v "$tool" >/dev/null || { echo "kernel.sh: $tool not found" >&2; exit 2; }
done
if [ "$build" = 1 ]; then
    cargo build --release --bins --examples >&2
fi
exec python3 - "$@" <<'PY'
"""The benchmark driver. Every case runs once per invocation; compare the
rows of one run, never across runs (the machines are shared)."""

import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.getcwd()
REL = os.path.join(ROOT, "target/release")
AUDISPD = os.path.join(REL, "audispd")
KERNEL = os.path.join(REL, "audisp-kernel")
NETFILTER = os.path.join(REL, "audisp-netfilter")
SINK = os.path.join(REL, "examples/sink")
AUID = 65534
KEY = "audisp-bench"


def die(msg):
    print(f"kernel.sh: {msg}", file=sys.stderr)
    sys.exit(1)


def opts(argv):
    o = {"events": 100_000, "packets": 200_000, "audit": True}
    it = iter(argv)
    for a in it:
        if a in ("--events", "--packets"):
            v = next(it, "")
            if not v.isdigit() or int(v) < 1:
                die(f"{a} needs a positive integer")
            o[a[2:]] = int(v)
        elif a == "--netfilter-only":
            o["audit"] = False
        elif a != "--no-build":
            die(f"unknown argument {a}")
    return o


def sh(*cmd, check=True):
    return subprocess.run(cmd, check=check, capture_output=True, text=True).stdout


def status():
    out = {}
    for line in sh("auditctl", "-s").splitlines():
        w = line.split()
        if len(w) >= 2 and w[1].isdigit():
            out[w[0]] = int(w[1])
    return out


def cpu_s(pid):
    """utime + stime of pid, seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def load(n, marker):
    """n getppid calls as the test login uid, then a USER marker."""
    pid = os.fork()
    if pid == 0:
        with open("/proc/self/loginuid", "w") as f:
            f.write(str(AUID))
        for _ in range(n):
            os.getppid()
        os.execvp("auditctl", ["auditctl", "-m", marker])
    _, st = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(st) != 0:
        die("the load failed")


class Dispatcher:
    """A private audispd with a sink plugin; records counted at the sink."""

    def __init__(self, tmp, name):
        self.dir = os.path.join(tmp, name)
        for d in ("etc/plugins.d", "run", "state", "out"):
            os.makedirs(os.path.join(self.dir, d))
        with open(os.path.join(self.dir, "etc/audispd.toml"), "w") as f:
            f.write('[input.stdin]\nenabled = false\n[stats]\ninterval = "0"\n')
        with open(os.path.join(self.dir, "etc/plugins.d/sink.toml"), "w") as f:
            f.write(f'exec = ["{SINK}", "--out", "{self.dir}/out/sink", "--name", "sink"]\n')
        self.sink = os.path.join(self.dir, "out/sink")
        self.socket = os.path.join(self.dir, "run/input.sock")

    def args(self):
        return [AUDISPD, "--config-dir", f"{self.dir}/etc", "--runtime-dir",
                f"{self.dir}/run", "--state-dir", f"{self.dir}/state"]

    def start(self):
        self.p = subprocess.Popen(self.args(), stderr=open(f"{self.dir}/audispd.log", "w"))
        wait_for(lambda: os.path.exists(self.socket), "the input socket")

    def wait_marker(self, marker, limit=600):
        """Waits until the sink wrote the marker; returns the time then and
        the number of sink lines."""
        m = marker.encode()
        seen = 0
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            try:
                with open(self.sink, "rb") as f:
                    f.seek(max(0, seen - len(m)))
                    chunk = f.read()
                    if m in chunk:
                        t = time.monotonic()
                        with open(self.sink, "rb") as g:
                            return t, sum(1 for l in g if not l.startswith((b"JOURNAL\t", b"ACK\t")))
                    seen = max(0, seen - len(m)) + len(chunk)
            except FileNotFoundError:
                pass
            time.sleep(0.005)
        die(f"{marker} never reached the sink ({self.dir})")

    def stop(self):
        self.p.send_signal(signal.SIGTERM)
        self.p.wait(60)


def wait_for(cond, what, limit=30):
    deadline = time.monotonic() + limit
    while not cond():
        if time.monotonic() > deadline:
            die(f"timed out waiting for {what}")
        time.sleep(0.01)


def row(name, records, secs, cpu=None):
    rate = records / secs if secs > 0 else 0
    extra = ""
    if cpu:
        extra = "  " + ", ".join(f"{k} {v / records * 1e6:.2f} us/record" for k, v in cpu.items())
    print(f"{name:<44} {records:>8} records {secs:7.2f} s {rate:>10,.0f} /s{extra}")


def ceiling(n):
    """A minimal multicast reader (Python) counting records until the marker."""
    s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 9)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 << 20)
    s.bind((0, 1))
    marker = f"bench-ceiling-{time.time_ns()}".encode()
    count = [0, None]

    def read():
        while True:
            try:
                d = s.recv(65536)
            except OSError:
                continue
            count[0] += 1
            if marker in d:
                count[1] = time.monotonic()
                return

    t = threading.Thread(target=read, daemon=True)
    t.start()
    t0 = time.monotonic()
    load(n, marker.decode())
    t.join(600)
    if count[1] is None:
        die("the ceiling reader never saw its marker")
    s.close()
    return count[0], count[1] - t0


def kernel_case(tmp, n):
    d = Dispatcher(tmp, "kernel")
    d.start()
    k = subprocess.Popen([KERNEL, "--daemon", "--socket", d.socket, "--state-dir",
                          f"{d.dir}/kernel"], stderr=open(f"{d.dir}/kernel.log", "w"))
    wait_for(lambda: status().get("pid") == k.pid, "audisp-kernel to register")
    before = {"audisp-kernel": cpu_s(k.pid), "audispd": cpu_s(d.p.pid)}
    marker = f"bench-kernel-{time.time_ns()}"
    t0 = time.monotonic()
    load(n, marker)
    t, lines = d.wait_marker(marker)
    cpu = {"audisp-kernel": cpu_s(k.pid) - before["audisp-kernel"],
           "audispd": cpu_s(d.p.pid) - before["audispd"]}
    k.send_signal(signal.SIGTERM)
    k.wait(60)
    d.stop()
    return lines, t - t0, cpu


def auditd_case(tmp, n):
    d = Dispatcher(tmp, "auditd")
    adir = os.path.join(tmp, "a")
    os.makedirs(f"{adir}/plugins.d")
    wrapper = f"{adir}/audispd-plugin"
    with open(wrapper, "w") as f:
        f.write("#!/bin/sh\nexec " + " ".join(f"'{a}'" for a in d.args())
                + f" 2>>'{d.dir}/audispd.log'\n")
    os.chmod(wrapper, 0o750)
    with open(f"{adir}/plugins.d/audispd.conf", "w") as f:
        f.write(f"active = yes\ndirection = out\npath = {wrapper}\ntype = always\nformat = string\n")
    with open(f"{d.dir}/etc/audispd.toml", "w") as f:
        f.write('[input.stdin]\nformat = "string"\n[stats]\ninterval = "0"\n')
    with open(f"{adir}/auditd.conf", "w") as f:
        f.write(f"local_events = yes\nwrite_logs = yes\nlog_file = {adir}/audit.log\n"
                "log_format = ENRICHED\nflush = NONE\nfreq = 0\nmax_log_file = 0\n"
                "max_log_file_action = IGNORE\nspace_left = 2\nspace_left_action = IGNORE\n"
                "admin_space_left = 1\nadmin_space_left_action = IGNORE\n"
                "disk_full_action = IGNORE\ndisk_error_action = SYSLOG\npriority_boost = 0\n"
                "q_depth = 99999\noverflow_action = SYSLOG\nmax_restarts = 10\n"
                f"plugin_dir = {adir}/plugins.d\nname_format = NONE\n")
    os.chmod(f"{adir}/auditd.conf", 0o640)
    a = subprocess.Popen(["auditd", "-n", "-c", adir], stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    wait_for(lambda: status().get("pid") == a.pid, "auditd to register")
    wait_for(lambda: os.path.exists(d.sink), "audispd's sink", 60)
    marker = f"bench-auditd-{time.time_ns()}"
    t0 = time.monotonic()
    c0 = cpu_s(a.pid)
    load(n, marker)
    t, lines = d.wait_marker(marker)
    cpu = {"auditd": cpu_s(a.pid) - c0}
    a.send_signal(signal.SIGTERM)
    a.wait(60)
    return lines, t - t0, cpu


NS = f"audisp-bench-{os.getpid()}"
SENDER = r"""
import socket, sys, time
n = int(sys.argv[1]); port = int(sys.argv[2])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
b = bytes(64)
t0 = time.monotonic()
for _ in range(n):
    s.sendto(b, ("127.0.0.1", port))
print(time.monotonic() - t0)
"""


def netfilter_case(tmp, n):
    sh("ip", "netns", "add", NS)
    try:
        sh("ip", "-n", NS, "link", "set", "lo", "up")
        rules = ("table inet b {\n chain out {\n  type filter hook output priority 0;\n"
                 "  udp dport 9999 log group 9 prefix \"flood\"\n"
                 "  udp dport 9998 log group 9 prefix \"end\"\n }\n}\n")
        subprocess.run(["ip", "netns", "exec", NS, "nft", "-f", "-"], input=rules,
                       text=True, check=True)
        # The sender alone, to a port no rule logs: the ceiling.
        ceiling_s = float(sh("ip", "netns", "exec", NS, "python3", "-c", SENDER, str(n), "9997"))
        d = Dispatcher(tmp, "netfilter")
        d.start()
        nf = subprocess.Popen(["ip", "netns", "exec", NS, NETFILTER, "--group", "9", "--socket",
                               d.socket, "--state-dir", f"{d.dir}/nf"],
                              stderr=open(f"{d.dir}/netfilter.log", "w"))
        wait_for(lambda: "reading netfilter log groups" in open(f"{d.dir}/netfilter.log").read(),
                 "audisp-netfilter")
        c0 = cpu_s(nf.pid)
        t0 = time.monotonic()
        sh("ip", "netns", "exec", NS, "python3", "-c", SENDER, str(n), "9999")
        marker = 'prefix="end"'
        while True:
            sh("ip", "netns", "exec", NS, "python3", "-c", SENDER, "1", "9998")
            try:
                t, lines = d.wait_marker(marker, limit=2)
                break
            except SystemExit:
                if time.monotonic() - t0 > 600:
                    raise
        cpu = cpu_s(nf.pid) - c0
        nf.send_signal(signal.SIGTERM)
        nf.wait(60)
        log = open(f"{d.dir}/netfilter.log").read()
        stopped = [l for l in log.splitlines() if "stopped:" in l][-1]
        d.stop()
        return n / ceiling_s, lines, t - t0, cpu, stopped.split("stopped: ", 1)[1]
    finally:
        sh("ip", "netns", "del", NS, check=False)


def audit_cases(o, tmp):
    st = status()
    if st.get("pid"):
        die(f"an audit daemon (pid {st['pid']}) is registered; stop it first")
    if st.get("enabled") == 2:
        die("kernel audit is locked")
    rule = ["-a", "always,exit", "-F", "arch=b64", "-S", "getppid", "-F", f"auid={AUID}", "-k", KEY]
    never = ["-a", "never,user", "-F", f"auid!={AUID}"]
    try:
        sh("auditctl", "-b", "8192")
        sh("auditctl", "-e", "1")
        sh("auditctl", *never)
        sh("auditctl", *rule)
        n = o["events"]
        print(f"audit load: {n} getppid events (SYSCALL, PROCTITLE, EOE), backlog_limit 8192")
        recs, secs = ceiling(n)
        row("kernel -> minimal multicast reader (Python)", recs, secs)
        lines, secs, cpu = kernel_case(tmp, n)
        row("kernel -> audisp-kernel --daemon -> sink", lines, secs, cpu)
        lines, secs, cpu = auditd_case(tmp, n)
        row("kernel -> auditd -> audispd -> sink", lines, secs, cpu)
        print(f"lost counter: {st.get('lost')} -> {status().get('lost')}")
    finally:
        sh("auditctl", "-d", *rule[1:], check=False)
        sh("auditctl", "-d", *never[1:], check=False)
        sh("auditctl", "-b", str(st["backlog_limit"]), check=False)
        sh("auditctl", "-e", str(st["enabled"]), check=False)


def run_cases(o, tmp):
    if o["audit"]:
        audit_cases(o, tmp)
    p = o["packets"]
    sender, lines, secs, cpu, report = netfilter_case(tmp, p)
    print(f"netfilter flood: {p} UDP packets; the sender alone: {sender:,.0f} packets/s")
    row("packets -> audisp-netfilter -> sink", lines, secs, {"audisp-netfilter": cpu})
    print(f"audisp-netfilter: {report}")


def main():
    o = opts(sys.argv[1:])
    tmp = tempfile.mkdtemp(prefix="audisp-kbench.")
    try:
        run_cases(o, tmp)
    except BaseException:
        print(f"kernel.sh: failed; kept {tmp}", file=sys.stderr)
        raise
    shutil.rmtree(tmp)


main()
PY
