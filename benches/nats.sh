#!/usr/bin/env bash
# benches/nats.sh: audit records through NATS JetStream, side by side in one
# run on the same replay: audispd -> audisp-nats publish -> JetStream (file
# storage; one server R1, and a three-server loopback cluster R3) ->
# audisp-nats consume -> an aggregating audispd; next to audisp-remote ->
# audisp-receive (plain TCP, fsync before ack); and a fan-in run with 50
# publishing hosts (each an audispd and a publisher) into one R1 stream.
# Prints records/s into the stream (until every sending audispd had every
# record acknowledged by its publisher, i.e. PubAcked, and exited) and end to
# end, CPU microseconds per record of each part, the stream's messages, and
# checks exactly-once: the aggregator must hold every record once.
#
# Usage: benches/nats.sh [--copies N] [--hosts N] [--records-per-message N]
#                        [--no-build] [--keep]
#   --copies N   replay tests/data/corpus.log.zst N times (default 1: ~170k records)
#   --hosts N    publishing hosts of the fan-in run (default 50)
#   --records-per-message N   the publishers' setting (default: theirs, 512)
#   --no-build   use the release binaries already in target/release
#   --keep       keep the temporary directory
#
# Needs nats-server (Debian's package), zstd, python3. Takes a few minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
build=1
for a in "$@"; do
    case "$a" in
        --no-build) build=0 ;;
        -h|--help) awk 'NR > 1 && !/^#/ { exit } NR > 1' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    esac
done
for tool in zstd python3 nats-server; do
    command -v "$tool" >/dev/null || { echo "nats.sh: $tool not found" >&2; exit 2; }
done
if [ "$build" = 1 ]; then
    cargo build --release --bins >&2
fi
umask 022
exec python3 - "$@" <<'PY'
"""The driver: builds the replay, runs each case once, prints a table."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

ROOT = os.getcwd()
REL = os.path.join(ROOT, "target/release")


def opts(argv):
    o = {"copies": 1, "hosts": 50, "keep": False, "rpm": []}
    it = iter(argv)
    for a in it:
        if a == "--copies":
            o["copies"] = int(next(it))
        elif a == "--hosts":
            o["hosts"] = int(next(it))
        elif a == "--records-per-message":
            o["rpm"] = ["--records-per-message", next(it)]
        elif a == "--keep":
            o["keep"] = True
        elif a == "--no-build":
            pass
        else:
            sys.exit(f"nats.sh: unknown argument {a}")
    return o


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def cpu(pid):
    """CPU seconds of a running process (0 once it is gone): the larger of
    /proc/PID/stat (clock ticks, which round a small publisher's share of the
    fan-in away, but count threads that ended) and the run time of its live
    threads in nanoseconds (schedstat)."""
    total = 0
    try:
        with open(f"/proc/{pid}/stat") as f:
            parts = f.read().rsplit(")", 1)[1].split()
        ticks = (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return 0.0
    for t in tasks:
        try:
            with open(f"/proc/{pid}/task/{t}/schedstat") as f:
                total += int(f.read().split()[0])
        except OSError:
            pass  # a thread that just ended
    return max(ticks, total / 1e9)


def stop(p):
    """CPU seconds of child `p` so far, then SIGTERM and reap it (its own
    shutdown is not per-record work)."""
    used = cpu(p.pid)
    p.send_signal(signal.SIGTERM)
    p.wait()
    return used


def wait_for(what, cond, limit=600):
    end = time.time() + limit
    while not cond():
        if time.time() > end:
            sys.exit(f"nats.sh: no {what} within {limit} s")
        time.sleep(0.01)


class Server:
    """One nats-server with file storage (a cluster member with `cluster`)."""

    def __init__(self, tmp, name, cluster=""):
        self.dir = os.path.join(tmp, name)
        os.makedirs(os.path.join(self.dir, "store"))
        self.port, self.http = free_port(), free_port()
        conf = os.path.join(self.dir, "nats.conf")
        with open(conf, "w") as f:
            f.write(f"server_name: {name}\nlisten: 127.0.0.1:{self.port}\nhttp: 127.0.0.1:{self.http}\n"
                    f"jetstream {{ store_dir: \"{self.dir}/store\" }}\nmax_payload: 1MB\n{cluster}\n")
        self.p = subprocess.Popen(["nats-server", "-c", conf], stdout=subprocess.DEVNULL,
                                  stderr=open(os.path.join(self.dir, "log"), "w"))

    def get(self, path):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.http}{path}", timeout=5) as r:
                return r.status, r.read()
        except Exception:
            return None, b""

    def healthy(self, path):
        wait_for("healthy nats-server", lambda: self.get(path)[0] == 200, 60)

    def messages(self):
        status, body = self.get("/jsz?accounts=true&streams=true")
        if status != 200:
            return 0
        v = json.loads(body)
        n = 0
        for a in v.get("account_details") or []:
            for s in a.get("stream_detail") or []:
                if s.get("name") == "AUDIT":
                    n = max(n, s["state"]["messages"])
        return n

    def url(self):
        return f"nats://127.0.0.1:{self.port}"

    def stop(self):
        self.p.send_signal(signal.SIGTERM)
        self.p.wait()


def create_stream(servers, replicas):
    args = [f"{REL}/audisp-nats", "create-stream", "--no-config", "--replicas", str(replicas)]
    for s in servers:
        args += ["--server", s]
    end = time.time() + 60
    while subprocess.run(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode != 0:
        if time.time() > end:
            sys.exit("nats.sh: cannot create the stream")
        time.sleep(0.2)


class Dispatcher:
    """An audispd in its own directory; `plugins` maps name -> plugins.d body."""

    def __init__(self, d, plugins, stdin):
        self.d = d
        for sub in ("etc/plugins.d", "run", "state"):
            os.makedirs(os.path.join(d, sub), exist_ok=True)
        with open(os.path.join(d, "etc/audispd.toml"), "w") as f:
            f.write('[stats]\ninterval = "0"\n[shutdown]\ntimeout = "600s"\n')
        for name, body in plugins.items():
            with open(os.path.join(d, f"etc/plugins.d/{name}.toml"), "w") as f:
                f.write(body)
        self.p = subprocess.Popen([f"{REL}/audispd", "--config-dir", f"{d}/etc", "--runtime-dir", f"{d}/run",
                                   "--state-dir", f"{d}/state"],
                                  stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                                  stderr=open(os.path.join(d, "audispd.log"), "w"))

    def input_records(self, name):
        """Records input `name` stored, and duplicates it dropped, from the
        state report (SIGUSR1)."""
        path = os.path.join(self.d, "run/audispd.state")
        try:
            before = os.stat(path).st_mtime_ns
        except OSError:
            before = None
        self.p.send_signal(signal.SIGUSR1)
        end = time.time() + 5
        while time.time() < end:
            try:
                if os.stat(path).st_mtime_ns != before:
                    break
            except OSError:
                pass
            time.sleep(0.01)
        try:
            with open(path) as f:
                for line in f:
                    if line.startswith(f"input {name} = "):
                        fields = dict(w.split("=", 1) for w in line.split()[4:] if "=" in w)
                        return int(fields.get("records", 0)), int(fields.get("duplicates", 0))
        except OSError:
            pass
        return 0, 0


def sending_host(d, servers, rpm):
    """An audispd with a publisher (started first, on its socket)."""
    os.makedirs(os.path.join(d, "run"), exist_ok=True)
    sock = os.path.join(d, "run/nats.sock")
    args = [f"{REL}/audisp-nats", "publish", "--no-config", "--listen", sock, "--host-id", d] + rpm
    for s in servers:
        args += ["--server", s]
    pub = subprocess.Popen(args, stderr=open(os.path.join(d, "publish.log"), "w"))
    wait_for("publisher socket", lambda: os.path.exists(sock), 30)
    disp = Dispatcher(d, {"nats": f'socket = "{sock}"\nformat = "native"\n'}, True)
    return disp, pub


def jetstream(tmp, name, data, n, servers, probe, procs, rpm):
    """audispd -> publish -> JetStream -> consume -> audispd."""
    d = os.path.join(tmp, name)
    agg = Dispatcher(os.path.join(d, "agg"), {}, False)
    wait_for("aggregator input socket", lambda: os.path.exists(f"{d}/agg/run/input.sock"), 30)
    cons = subprocess.Popen([f"{REL}/audisp-nats", "consume", "--no-config", "--socket", f"{d}/agg/run/input.sock",
                             "--state-dir", f"{d}/agg/consume"] + sum((["--server", s] for s in servers), []),
                            stderr=open(os.path.join(d, "consume.log"), "w"))
    disp, pub = sending_host(os.path.join(d, "send"), servers, rpm)
    s0 = sum(cpu(p.pid) for p in procs)
    t0 = time.time()
    feeder = threading.Thread(target=lambda: (disp.p.stdin.write(data), disp.p.stdin.close()))
    feeder.start()
    disp_cpu = 0.0
    # audispd exits at the end of its input once its plugin acknowledged
    # every record: the publisher had every PubAck.
    while disp.p.poll() is None:
        disp_cpu = cpu(disp.p.pid) or disp_cpu
        if time.time() - t0 > 600:
            sys.exit(f"{name}: not every record PubAcked after 600 s ({probe.messages()} messages in the stream)")
        time.sleep(0.01)
    t_in = time.time() - t0
    stored = 0
    while stored < n:
        stored, dups = agg.input_records("nats")
        if time.time() - t0 > 600:
            sys.exit(f"{name}: only {stored} of {n} records at the aggregator after 600 s")
        time.sleep(0.05)
    t_out = time.time() - t0
    res = {"case": name, "records": n, "in_secs": t_in, "out_secs": t_out,
           "disp_cpu": disp_cpu, "srv_cpu": sum(cpu(p.pid) for p in procs) - s0,
           "in_stream": probe.messages(), "at_agg": stored}
    feeder.join()
    disp.p.wait()
    res["pub_cpu"] = stop(pub)
    res["cons_cpu"] = stop(cons)
    # Anything stored twice would show now.
    res["at_agg"] = agg.input_records("nats")[0]
    agg.p.send_signal(signal.SIGTERM)
    agg.p.wait()
    return res


def fan_in(tmp, data, hosts, server, rpm):
    """`hosts` sending hosts, each with its share of the replay, into one stream."""
    d = os.path.join(tmp, "fanin")
    lines = data.split(b"\n")[:-1]
    per = (len(lines) + hosts - 1) // hosts
    chunks = [b"".join(l + b"\n" for l in lines[i * per:(i + 1) * per]) for i in range(hosts)]
    chunks = [c for c in chunks if c]
    n = len(lines)
    agg = Dispatcher(os.path.join(d, "agg"), {}, False)
    wait_for("aggregator input socket", lambda: os.path.exists(f"{d}/agg/run/input.sock"), 30)
    cons = subprocess.Popen([f"{REL}/audisp-nats", "consume", "--no-config", "--socket", f"{d}/agg/run/input.sock",
                             "--state-dir", f"{d}/agg/consume", "--server", server.url()],
                            stderr=open(os.path.join(d, "consume.log"), "w"))
    senders = [sending_host(os.path.join(d, f"host{i}"), [server.url()], rpm) for i in range(len(chunks))]
    s0 = cpu(server.p.pid)
    t0 = time.time()
    feeders = [threading.Thread(target=lambda s=s, c=c: (s[0].p.stdin.write(c), s[0].p.stdin.close()))
               for s, c in zip(senders, chunks)]
    for f in feeders:
        f.start()
    while any(s[0].p.poll() is None for s in senders):
        if time.time() - t0 > 600:
            sys.exit(f"fan-in: not every record PubAcked after 600 s ({server.messages()} messages in the stream)")
        time.sleep(0.01)
    t_in = time.time() - t0
    stored = 0
    while stored < n:
        stored, dups = agg.input_records("nats")
        if time.time() - t0 > 600:
            sys.exit(f"fan-in: only {stored} of {n} records at the aggregator after 600 s")
        time.sleep(0.05)
    t_out = time.time() - t0
    res = {"case": f"fan-in: {len(chunks)} hosts -> R1 -> consume", "records": n, "in_secs": t_in,
           "out_secs": t_out, "srv_cpu": cpu(server.p.pid) - s0,
           "in_stream": server.messages(), "at_agg": stored}
    for f in feeders:
        f.join()
    res["pub_cpu"] = 0.0
    for disp, pub in senders:
        disp.p.wait()
        res["pub_cpu"] += stop(pub)
    res["cons_cpu"] = stop(cons)
    res["at_agg"] = agg.input_records("nats")[0]
    agg.p.send_signal(signal.SIGTERM)
    agg.p.wait()
    return res


def remote(tmp, data, n):
    """audispd -> audisp-remote (fast mode) -> audisp-receive -> aggregator audispd."""
    d = os.path.join(tmp, "remote")
    os.makedirs(os.path.join(d, "recv"))
    agg = Dispatcher(os.path.join(d, "agg"), {}, False)
    wait_for("aggregator input socket", lambda: os.path.exists(f"{d}/agg/run/input.sock"), 30)
    port = free_port()
    err = open(os.path.join(d, "logs"), "w")
    recv = subprocess.Popen([f"{REL}/audisp-receive", "--no-config", "--listen", f"127.0.0.1:{port}",
                             "--state-dir", f"{d}/recv/state", "--no-log", "--dispatcher",
                             f"{d}/agg/run/input.sock", "--input-name", "nats"], stderr=err)
    wait_for("receiver port", lambda: socket.socket().connect_ex(("127.0.0.1", port)) == 0, 30)
    os.makedirs(os.path.join(d, "send/run"))
    sock = os.path.join(d, "send/run/remote.sock")
    send = subprocess.Popen([f"{REL}/audisp-remote", "--no-config", "--server", f"127.0.0.1:{port}",
                             "--spool-dir", f"{d}/spool", "--listen", sock], stderr=err)
    wait_for("sender socket", lambda: os.path.exists(sock), 30)
    disp = Dispatcher(os.path.join(d, "send"), {"remote": f'socket = "{sock}"\nformat = "native"\n'}, True)
    t0 = time.time()
    feeder = threading.Thread(target=lambda: (disp.p.stdin.write(data), disp.p.stdin.close()))
    feeder.start()
    stored = 0
    while stored < n:
        stored, dups = agg.input_records("nats")
        if time.time() - t0 > 600:
            sys.exit(f"remote: only {stored} of {n} records at the aggregator after 600 s")
        time.sleep(0.05)
    t_out = time.time() - t0
    res = {"case": "audisp-remote -> audisp-receive (plain, fsync)", "records": n, "out_secs": t_out,
           "pub_cpu": cpu(send.pid), "cons_cpu": cpu(recv.pid), "at_agg": stored}
    feeder.join()
    disp.p.wait()
    for p in (send, recv, agg.p):
        p.send_signal(signal.SIGTERM)
        p.wait()
    return res


def main():
    o = opts(sys.argv[1:])
    one = subprocess.run(["zstd", "-dc", os.path.join(ROOT, "tests/data/corpus.log.zst")],
                         check=True, capture_output=True).stdout
    parts = [one]
    for k in range(1, o["copies"]):
        parts.append(one.replace(b"msg=audit(", b"msg=audit(%d" % k))
    data = b"".join(parts)
    n = data.count(b"\n")
    tmp = tempfile.mkdtemp(prefix="nats-bench-")
    print(f"nats.sh: {n} records ({len(data) / 1e6:.1f} MB), {os.cpu_count()} CPUs, "
          f"nats-server {subprocess.run(['nats-server', '--version'], capture_output=True, text=True).stdout.strip()}, "
          f"{time.strftime('%Y-%m-%d %H:%M:%S')}")
    rows = [remote(tmp, data, n)]
    s1 = Server(tmp, "r1")
    s1.healthy("/healthz?js-enabled-only=true")
    create_stream([s1.url()], 1)
    r1 = jetstream(tmp, "JetStream R1, file storage", data, n, [s1.url()], s1, [s1.p], o["rpm"])
    rows.append(r1)
    s1.stop()
    routes = [free_port() for _ in range(3)]
    route_list = ", ".join(f"nats-route://127.0.0.1:{p}" for p in routes)
    nodes = [Server(tmp, f"c{i}", f"cluster {{ name: bench\n listen: 127.0.0.1:{routes[i]}\n routes: [{route_list}] }}")
             for i in range(3)]
    for s in nodes:
        s.healthy("/healthz")
    create_stream([s.url() for s in nodes], 3)
    rows.append(jetstream(tmp, "JetStream R3 (3 servers), file storage", data, n, [s.url() for s in nodes], nodes[0],
                          [s.p for s in nodes], o["rpm"]))
    for s in nodes:
        s.stop()
    fan = Server(tmp, "fan")
    fan.healthy("/healthz?js-enabled-only=true")
    create_stream([fan.url()], 1)
    rows.append(fan_in(tmp, data, o["hosts"], fan, o["rpm"]))
    fan.stop()
    print()
    print(f"{'case':46} {'records':>8} {'messages':>8} {'into stream/s':>13} {'end to end/s':>12} {'pub us/rec':>10} {'cons us/rec':>11} {'srv us/rec':>10} {'once':>5}")
    for r in rows:
        into = f"{r['records'] / r['in_secs']:.0f}" if "in_secs" in r else "-"
        out = r["records"] / r["out_secs"]
        once = r["at_agg"] == n
        srv = f"{r['srv_cpu'] / r['records'] * 1e6:.2f}" if "srv_cpu" in r else "-"
        print(f"{r['case']:46} {r['records']:>8} {r.get('in_stream', '-'):>8} {into:>13} {out:>12.0f} "
              f"{r['pub_cpu'] / r['records'] * 1e6:>10.2f} "
              f"{r['cons_cpu'] / r['records'] * 1e6:>11.2f} {srv:>10} {'yes' if once else 'NO':>5}")
        if not once:
            print(f"  WARNING: {r['case']}: aggregator {r['at_agg']} of {n}")
    for r in rows:
        if "disp_cpu" in r and r["disp_cpu"]:
            print(f"  ({r['case']}: the sending host's audispd used {r['disp_cpu'] / r['records'] * 1e6:.2f} us/record)")
    print("  (pub: audisp-nats publish, or audisp-remote; cons: audisp-nats consume, or audisp-receive;"
          " srv: nats-server, all cluster members together; fan-in pub is all publishers together)")
    if o["keep"]:
        print(f"kept {tmp}")
    else:
        shutil.rmtree(tmp)


main()
PY
