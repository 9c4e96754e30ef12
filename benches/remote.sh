#!/usr/bin/env bash
# benches/remote.sh: remote logging throughput on loopback, side by side in
# one run: Debian's audisp-remote -> Debian's auditd listener, and
# audisp-remote -> audisp-receive (plain TCP and TLS, acks after fsync),
# next to the physical ceilings: the same bytes over a plain loopback TCP
# socket, and the same bytes made durable three times (ours keeps three
# durable copies: spool, store, log). Prints records/s, CPU microseconds per record on each side and
# peak RSS.
#
# Usage: benches/remote.sh [--copies N] [--no-build] [--keep]
#   --copies N   replay tests/data/corpus.log.zst N times (default 2: ~340k records)
#   --no-build   use the release binaries already in target/release
#   --keep       keep the temporary directory
#
# Needs root (auditd, mount namespace), auditd + audispd-plugins, zstd,
# openssl, python3. Takes about a minute.
set -euo pipefail
cd "$(dirname "$0")/.."
build=1
for a in "$@"; do
    case "$a" in
        --no-build) build=0 ;;
        -h|--help) awk 'NR > 1 && !/^#/ { exit } NR > 1' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    esac
done
for tool in zstd python3 openssl; do
    command -v "$tool" >/dev/null || { echo "remote.sh: $tool not found" >&2; exit 2; }
done
[ -x /sbin/auditd ] && [ -x /sbin/audisp-remote ] || { echo "remote.sh: needs auditd and audispd-plugins" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "remote.sh: needs root" >&2; exit 2; }
if [ "$build" = 1 ]; then
    cargo build --release --bins >&2
fi
umask 022
exec python3 - "$@" <<'PY'
"""The driver: builds the replay, runs each case once, prints a table."""

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter

ROOT = os.getcwd()
REL = os.path.join(ROOT, "target/release")
TICK = os.sysconf("SC_CLK_TCK")


def opts(argv):
    o = {"copies": 2, "keep": False}
    it = iter(argv)
    for a in it:
        if a == "--copies":
            o["copies"] = int(next(it))
        elif a == "--keep":
            o["keep"] = True
        elif a == "--no-build":
            pass
        else:
            sys.exit(f"remote.sh: unknown argument {a}")
    return o


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def cpu(pid):
    """CPU seconds (user+system) of a running process."""
    with open(f"/proc/{pid}/stat") as f:
        parts = f.read().rsplit(")", 1)[1].split()
    return (int(parts[11]) + int(parts[12])) / TICK


def hwm(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


def wait_port(port, limit=20):
    end = time.time() + limit
    while time.time() < end:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"nothing listening on {port}")


def ceiling(data, n):
    """The same bytes through one loopback TCP connection, 64 KiB writes."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    got = [0]

    def sink():
        c, _ = srv.accept()
        while True:
            b = c.recv(1 << 20)
            if not b:
                break
            got[0] += len(b)

    t = threading.Thread(target=sink)
    t.start()
    c = socket.create_connection(srv.getsockname())
    t0 = time.time()
    mv = memoryview(data)
    for i in range(0, len(data), 65536):
        c.sendall(mv[i:i + 65536])
    c.close()
    t.join()
    dt = time.time() - t0
    assert got[0] == len(data)
    return {"case": "ceiling: same bytes, loopback TCP", "records": n, "secs": dt}


def durable_ceiling(tmp, data, n):
    """What the disk allows ours at most: the replay's bytes made durable
    three times, as ours does (the sender's spool, the receiver's store, the
    receiver's log), 2 MiB per fdatasync, one copy after the other."""
    t0 = time.time()
    for name in ("spool", "store", "log"):
        path = os.path.join(tmp, f"ceiling.{name}")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        mv = memoryview(data)
        for i in range(0, len(data), 2 << 20):
            os.write(fd, mv[i:i + (2 << 20)])
            os.fdatasync(fd)
        os.close(fd)
        os.unlink(path)
    dt = time.time() - t0
    return {"case": "ceiling: 3 durable copies, fdatasync per 2 MiB", "records": n, "secs": dt}


def stock(tmp, data, n_sent):
    """Debian audisp-remote (managed) -> Debian auditd listener."""
    d = os.path.join(tmp, "auditd")
    os.makedirs(os.path.join(d, "plugins.d"))
    port = free_port()
    log = os.path.join(d, "audit.log")
    conf = f"""local_events = no
write_logs = yes
log_file = {log}
log_format = RAW
flush = incremental_async
freq = 50
max_log_file = 0
max_log_file_action = ignore
space_left = 2
space_left_action = ignore
admin_space_left = 1
admin_space_left_action = ignore
disk_full_action = ignore
disk_error_action = ignore
tcp_listen_port = {port}
tcp_max_per_addr = 1
use_libwrap = no
distribute_network = no
plugin_dir = {d}/plugins.d
"""
    with open(os.path.join(d, "auditd.conf"), "w") as f:
        f.write(conf)
    os.chmod(os.path.join(d, "auditd.conf"), 0o640)
    auditd = subprocess.Popen(["/sbin/auditd", "-n", "-c", d], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(port)
    rc = os.path.join(tmp, "audisp-remote.conf")
    with open(rc, "w") as f:
        f.write(f"remote_server = 127.0.0.1\nport = {port}\ntransport = tcp\nmode = immediate\n"
                "queue_depth = 400000\nformat = managed\nnetwork_retry_time = 1\n"
                "max_tries_per_record = 3\nmax_time_per_record = 5\nheartbeat_timeout = 0\n"
                "network_failure_action = stop\n")
    os.chmod(rc, 0o640)
    a0 = cpu(auditd.pid)
    t0 = time.time()
    p = subprocess.Popen(["unshare", "-m", "sh", "-c",
                          f"mount --bind {rc} /etc/audit/audisp-remote.conf && exec /sbin/audisp-remote"],
                         stdin=subprocess.PIPE, stderr=subprocess.DEVNULL)
    p.stdin.write(data)
    p.stdin.close()
    _, status, ru = os.wait4(p.pid, 0)
    p.returncode = status
    dt = time.time() - t0
    a1 = cpu(auditd.pid)
    rss_r = hwm(auditd.pid)
    auditd.send_signal(signal.SIGTERM)
    auditd.wait()
    with open(log, "rb") as f:
        got = f.read().split(b"\n")[:-1]
    # The log holds the replayed records (audisp-remote strips EOE) between
    # the listener's own DAEMON_START/ACCEPT/CLOSE/END records. The replay
    # has DAEMON_ records of its own, so tell them apart by content.
    sent = [l for l in data.split(b"\n") if l and not l.startswith(b"type=EOE ")]
    known = set(sent)
    replayed = [l for l in got if l in known]
    logged = sum((Counter(sent) & Counter(replayed)).values())
    odd = []
    if len(replayed) > logged:
        odd.append(f"{len(replayed) - logged} duplicate(s)")
    elif logged == len(sent) and replayed != sent:
        odd.append("records out of order")
    stray = sum(1 for l in got if l not in known and not l.startswith(b"type=DAEMON_"))
    if stray:
        odd.append(f"{stray} line(s) that are neither replayed nor the listener's own")
    res = {"case": "stock audisp-remote -> stock auditd", "records": logged, "secs": dt,
           "send_cpu": ru.ru_utime + ru.ru_stime, "send_rss": ru.ru_maxrss / 1024,
           "recv_cpu": a1 - a0, "recv_rss": rss_r, "expected": n_sent}
    if odd:
        res["odd"] = ", ".join(odd) + f" in {log}"
    return res


def certs(tmp):
    d = os.path.join(tmp, "pki")
    os.makedirs(d)
    def run(*a):
        subprocess.run(a, check=True, cwd=d, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    run("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=bench-ca")
    for name in ("server", "client"):
        run("openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}.test")
        with open(os.path.join(d, f"{name}.ext"), "w") as f:
            f.write(f"subjectAltName=DNS:{name}.test\n")
        run("openssl", "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext")
        os.chmod(os.path.join(d, f"{name}.key"), 0o600)
    return d


def ours(tmp, data, n, tls):
    """audispd (stdin) -> audisp-remote (fast mode) -> audisp-receive."""
    name = "tls" if tls else "plain"
    d = os.path.join(tmp, name)
    for sub in ("etc/plugins.d", "run", "state", "recv"):
        os.makedirs(os.path.join(d, sub))
    port = free_port()
    recv_args, send_args = [], []
    if tls:
        k = certs(d)
        recv_args = ["--tls-cert", f"{k}/server.pem", "--tls-key", f"{k}/server.key", "--tls-ca", f"{k}/ca.pem"]
        send_args = ["--tls-cert", f"{k}/client.pem", "--tls-key", f"{k}/client.key", "--tls-ca", f"{k}/ca.pem",
                     "--tls-server-name", "server.test"]
    err = open(os.path.join(d, "logs"), "w")
    recv = subprocess.Popen([f"{REL}/audisp-receive", "--no-config", "--listen", f"127.0.0.1:{port}",
                             "--state-dir", f"{d}/recv/state", "--log", f"{d}/recv/audit.log",
                             "--log-max-size", "0"] + recv_args, stderr=err)
    wait_port(port)
    with open(os.path.join(d, "etc/audispd.toml"), "w") as f:
        f.write('[stats]\ninterval = "0"\n[shutdown]\ntimeout = "300s"\n')
    with open(os.path.join(d, "etc/plugins.d/remote.toml"), "w") as f:
        f.write(f'socket = "{d}/run/remote.sock"\nformat = "native"\n')
    send = subprocess.Popen([f"{REL}/audisp-remote", "--no-config", "--server", f"127.0.0.1:{port}",
                             "--spool-dir", f"{d}/spool", "--listen", f"{d}/run/remote.sock"] + send_args,
                            stderr=err)
    t0 = time.time()
    disp = subprocess.Popen([f"{REL}/audispd", "--config-dir", f"{d}/etc", "--runtime-dir", f"{d}/run",
                             "--state-dir", f"{d}/state"], stdin=subprocess.PIPE, stderr=err)
    disp_pid = disp.pid
    feeder = threading.Thread(target=lambda: (disp.stdin.write(data), disp.stdin.close()))
    feeder.start()
    pos = os.path.join(d, "recv/state/log.pos")
    disp_cpu = 0.0
    while True:
        try:
            disp_cpu = cpu(disp_pid)
        except OSError:
            pass
        try:
            with open(pos) as f:
                done = int(f.read().split()[0]) - 1
        except (OSError, ValueError, IndexError):
            done = 0
        if done >= n:
            break
        if time.time() - t0 > 600:
            sys.exit(f"{name}: only {done} of {n} records after 600 s")
        time.sleep(0.01)
    dt = time.time() - t0
    res = {"case": f"audisp-remote -> audisp-receive ({name}, fsync before ack)", "records": done, "secs": dt,
           "send_cpu": cpu(send.pid), "send_rss": hwm(send.pid),
           "recv_cpu": cpu(recv.pid), "recv_rss": hwm(recv.pid), "disp_cpu": disp_cpu}
    feeder.join()
    disp.wait()
    for p in (send, recv):
        p.send_signal(signal.SIGTERM)
        p.wait()
    return res


def main():
    o = opts(sys.argv[1:])
    one = subprocess.run(["zstd", "-dc", os.path.join(ROOT, "tests/data/corpus.log.zst")],
                         check=True, capture_output=True).stdout
    parts = [one]
    for k in range(1, o["copies"]):
        # Later copies get other time stamps, so every record is distinct.
        parts.append(one.replace(b"msg=audit(", b"msg=audit(%d" % k))
    data = b"".join(parts)
    n = data.count(b"\n")
    n_no_eoe = n - data.count(b"type=EOE ")
    tmp = tempfile.mkdtemp(prefix="remote-bench-")
    print(f"remote.sh: {n} records ({len(data) / 1e6:.1f} MB), {os.cpu_count()} CPUs, {time.strftime('%Y-%m-%d %H:%M:%S')}")
    rows = [ceiling(data, n), durable_ceiling(tmp, data, n), stock(tmp, data, n_no_eoe),
            ours(tmp, data, n, False), ours(tmp, data, n, True)]
    print()
    print(f"{'case':58} {'records':>8} {'rec/s':>10} {'x stock':>8} {'send us/rec':>11} {'recv us/rec':>11} {'send RSS':>9} {'recv RSS':>9}")
    base = rows[2]["records"] / rows[2]["secs"]
    for r in rows:
        rate = r["records"] / r["secs"]
        su = f"{r['send_cpu'] / r['records'] * 1e6:.2f}" if "send_cpu" in r else "-"
        ru = f"{r['recv_cpu'] / r['records'] * 1e6:.2f}" if "recv_cpu" in r else "-"
        sr = f"{r['send_rss']:.1f}M" if "send_rss" in r else "-"
        rr = f"{r['recv_rss']:.1f}M" if "recv_rss" in r else "-"
        print(f"{r['case']:58} {r['records']:>8} {rate:>10.0f} {rate / base:>8.1f} {su:>11} {ru:>11} {sr:>9} {rr:>9}")
    for r in rows:
        if "disp_cpu" in r:
            print(f"  ({r['case']}: the sending host's audispd used {r['disp_cpu'] / r['records'] * 1e6:.2f} us/record more)")
        if "expected" in r and r["records"] != r["expected"]:
            print(f"  WARNING: {r['case']} logged {r['records']} of {r['expected']} records")
        if "odd" in r:
            print(f"  WARNING: {r['case']}: {r['odd']}")
    if o["keep"]:
        print(f"kept {tmp}")
    else:
        shutil.rmtree(tmp)


main()
PY
