#!/bin/bash
# Regenerates tests/data/sample.log and tests/data/corpus.log.zst from Debian's real auditd, and
# the statistics section of tests/data/README.md.
#
# Usage (as root, on a machine where no other audit daemon runs):  tests/data/capture.sh [ROUNDS]
#
# It runs auditd privately (auditd -n -c DIR: own auditd.conf, log file and plugins.d, nothing in
# /etc/audit is read or changed), with tests/support/capture-plugin.sh as a format=string plugin,
# and rules that record only processes with login uid 65534, the workload in workload.sh.
# Kernel audit is shared state: on exit (also on error or Ctrl-C) the script removes exactly the
# rules it added, restores backlog_limit and the enabled flag it found, stops its auditd by PID and
# checks that `auditctl -s` shows pid 0 again. Needs: auditd, auditctl, zstd, python3, setpriv.
set -euo pipefail
# The C locale: programs in the workload then do not probe locale files (noise in the capture).
export LC_ALL=C

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
ROUNDS=${1:-40}
AUID=65534

die() { echo "capture.sh: $*" >&2; exit 1; }
status_field() { auditctl -s | awk -v k="$1" '$1 == k { print $2 }'; }

[ "$(id -u)" = 0 ] || die "run as root (auditd and audit rules need it)"
for tool in auditd auditctl zstd python3 setpriv; do
  command -v "$tool" >/dev/null || die "$tool is missing (apt-get install -y --no-install-recommends auditd zstd python3 util-linux)"
done
PY=$(python3 -c 'import sys; print(sys.executable)')
auditctl -s >/dev/null 2>&1 || die "kernel audit cannot be controlled here (needs CONFIG_AUDIT and the initial namespaces)"
[ "$(status_field enabled)" != 2 ] || die "kernel audit is locked (enabled 2)"
[ "$(status_field pid)" = 0 ] || die "another audit daemon (pid $(status_field pid)) owns kernel audit"

ORIG_ENABLED=$(status_field enabled)
ORIG_BACKLOG=$(status_field backlog_limit)
ORIG_RULES=$(auditctl -l)
LOST_BEFORE=$(status_field lost)

WORK=$(mktemp -d /tmp/audisp-capture.XXXXXX)
W=$WORK/w
mkdir "$W"
RULES=()
AUDITD_PID=

# Removes exactly the rules added, restores backlog_limit and enabled, stops auditd by PID and
# checks kernel audit is as found. Idempotent; returns non-zero if anything was left changed.
restore_kernel() {
  local ok=0 i
  for ((i = ${#RULES[@]} - 1; i >= 0; i--)); do
    # shellcheck disable=SC2086  # rules are stored as space-separated words without spaces inside
    auditctl -d ${RULES[i]#-a } >/dev/null || ok=1
  done
  RULES=()
  [ "$(status_field backlog_limit)" = "$ORIG_BACKLOG" ] || auditctl -b "$ORIG_BACKLOG" >/dev/null || ok=1
  # Restored while auditd still runs, so the resulting CONFIG_CHANGE record goes to it.
  [ "$(status_field enabled)" = "$ORIG_ENABLED" ] || auditctl -e "$ORIG_ENABLED" >/dev/null || ok=1
  if [ -n "$AUDITD_PID" ]; then
    kill -TERM "$AUDITD_PID" || ok=1
    wait "$AUDITD_PID" || true
    AUDITD_PID=
  fi
  if [ "$(status_field pid)" != 0 ] || [ "$(status_field enabled)" != "$ORIG_ENABLED" ] ||
     [ "$(status_field backlog_limit)" != "$ORIG_BACKLOG" ] || [ "$(auditctl -l)" != "$ORIG_RULES" ]; then
    echo "capture.sh: kernel audit NOT restored:" >&2
    auditctl -s >&2
    auditctl -l >&2
    ok=1
  fi
  return "$ok"
}

on_exit() {
  local rc=$?
  set +e
  restore_kernel || rc=1
  if [ "$rc" = 0 ]; then rm -rf "$WORK"; else echo "capture.sh: kept $WORK for inspection" >&2; fi
  exit "$rc"
}
trap on_exit EXIT

add_rule() {
  auditctl "$@" >/dev/null
  RULES+=("$*")
}

# Private auditd configuration: ENRICHED log, large dispatcher queue, nothing that suspends.
mkdir -m 0750 "$WORK/plugins.d"
install -m 0750 "$REPO/tests/support/capture-plugin.sh" "$WORK/capture-plugin.sh"
cat >"$WORK/auditd.conf" <<EOF
local_events = yes
write_logs = yes
log_file = $WORK/audit.log
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
plugin_dir = $WORK/plugins.d
end_of_event_timeout = 2
EOF
cat >"$WORK/plugins.d/capture.conf" <<EOF
active = yes
direction = out
path = $WORK/capture-plugin.sh
type = always
args = $WORK/stream.log
format = string
EOF
chmod 0640 "$WORK/auditd.conf" "$WORK/plugins.d/capture.conf"

auditd -n -c "$WORK" </dev/null >/dev/null 2>&1 &
AUDITD_PID=$!
for _ in $(seq 1 3000); do
  [ "$(status_field pid)" = "$AUDITD_PID" ] && break
  kill -0 "$AUDITD_PID" 2>/dev/null || { AUDITD_PID=; die "auditd exited during start-up (see syslog)"; }
  sleep 0.005
done
[ "$(status_field pid)" = "$AUDITD_PID" ] || die "auditd did not register with the kernel"
auditctl -b 8192 >/dev/null

A="-F auid=$AUID"
add_rule -a never,user -F auid!=$AUID
add_rule -a always,exit -F arch=b64 -S execve,execveat $A -k exec
add_rule -a always,exit -F arch=b64 -S open,openat,openat2,creat,truncate,ftruncate -F dir=$W $A -k files
add_rule -a always,exit -F arch=b64 -S open,openat,openat2 -F success=0 $A -k open-failed
add_rule -a always,exit -F arch=b64 -S rename,renameat,renameat2,unlink,unlinkat,link,linkat,symlink,symlinkat,mkdir,mkdirat,rmdir $A -k names
add_rule -a always,exit -F arch=b64 -S chmod,fchmod,fchmodat,chown,fchown,fchownat,lchown $A -k perm
add_rule -a always,exit -F arch=b64 -S connect,bind $A -k net
add_rule -a always,exit -F arch=b64 -S kill,tkill,tgkill $A -k signal
add_rule -a always,exit -F arch=b64 -S setresuid,setresgid,setgroups $A -k ids

echo "capture.sh: auditd $(auditctl -v | awk '{print $NF}') pid $AUDITD_PID, $ROUNDS rounds in $W"
START=$(date +%s.%N)
bash -c 'echo '"$AUID"' > /proc/self/loginuid && exec bash "$@"' capture "$HERE/workload.sh" "$W" "$ROUNDS" "$PY"
# Sync: once auditd's last record reaches the plugin, everything logged before it has too.
MARKER="audisp-capture end $(date +%s%N)"
bash -c 'echo '"$AUID"' > /proc/self/loginuid && exec auditctl -m "$1"' capture "$MARKER"
for _ in $(seq 1 24000); do
  grep -qF "$MARKER" "$WORK/stream.log.part" 2>/dev/null && break
  sleep 0.005
done
grep -qF "$MARKER" "$WORK/stream.log.part" || die "the capture plugin never received the end marker"
END=$(date +%s.%N)
LOST_AFTER=$(status_field lost)

restore_kernel || die "kernel audit could not be restored"
for _ in $(seq 1 2000); do
  [ -f "$WORK/stream.log" ] && break
  sleep 0.005
done
[ -f "$WORK/stream.log" ] || die "the capture plugin did not finish"

python3 - "$WORK/stream.log" "$WORK/audit.log" "$MARKER" "$HERE" "$START" "$END" "$LOST_BEFORE" "$LOST_AFTER" "$ROUNDS" \
  "$(auditctl -v | awk '{print $NF}')" "$(uname -r)" <<'PYEOF'
import collections, re, sys
stream_path, log_path, marker, here, start, end, lost_before, lost_after, rounds, version, kernel = sys.argv[1:]
stream = open(stream_path, "rb").read().split(b"\n")
assert stream[-1] == b"", "stream does not end with a newline"
stream = stream[:-1]
log = open(log_path, "rb").read().split(b"\n")[:-1]

def rtype(r):
    return re.search(rb"type=(\S+) ", r).group(1).decode()
def eid(r):
    return re.search(rb"msg=audit\(([^)]*)\)", r).group(1).decode()

# Every record auditd logged up to the end marker reached the plugin, in order; the plugin got
# nothing else but EOE records.
end_at = next(i for i, r in enumerate(log) if marker.encode() in r)
no_eoe = [r for r in stream if rtype(r) != "EOE"]
assert no_eoe == log[:len(no_eoe)], "plugin stream differs from audit.log"
assert len(no_eoe) > end_at, "plugin stream ends before the end marker"
assert int(lost_after) == int(lost_before), f"kernel lost records: {lost_before} -> {lost_after}"

# Anything from another login uid than the workload's (65534) or our own unset-auid auditctl/auditd?
foreign = [r for r in stream if not rtype(r).startswith("DAEMON_") and (m := re.search(rb" auid=(\d+)", r)) and m.group(1) not in (b"65534", b"4294967295")]
assert not foreign, f"{len(foreign)} records of other login uids, e.g. {foreign[0][:200]!r}"

cut = next(i for i, r in enumerate(stream) if b"audisp-capture round=1 done" in r) + 1
sample = stream[:cut]
open(f"{here}/sample.log", "wb").write(b"".join(r + b"\n" for r in sample))
open(f"{here}/corpus.log", "wb").write(b"".join(r + b"\n" for r in stream))

def table(records):
    by_type = collections.Counter(rtype(r) for r in records)
    events = collections.defaultdict(set)
    for r in records:
        events[rtype(r)].add(eid(r))
    lines = ["| type | records | events |", "| --- | ---: | ---: |"]
    for t, n in sorted(by_type.items(), key=lambda kv: (-kv[1], kv[0])):
        lines.append(f"| {t} | {n} | {len(events[t])} |")
    total_events = len({eid(r) for r in records})
    lines.append(f"| **total** | **{len(records)}** | **{total_events}** |")
    return "\n".join(lines), total_events

def longest(records):
    return max(len(r) for r in records)

secs = float(end) - float(start)
sample_table, _ = table(sample)
corpus_table, corpus_events = table(stream)
enriched = sum(1 for r in stream if b"\x1d" in r)
split_exec = sum(1 for r in stream if re.search(rb" a\d+\[\d+\]=", r))
stats = f"""Generated by `capture.sh {rounds}` with auditd {version} on Linux {kernel}:
the workload and capture took {secs:.1f} s; auditd delivered {len(stream)} records
({corpus_events} events) to the plugin, {len(stream) / secs:.0f} records/s and
{corpus_events / secs:.0f} events/s on average (the workload, not auditd, sets the pace);
the kernel lost {int(lost_after) - int(lost_before)} records. {enriched} records carry an ENRICHED 0x1D
section, {split_exec} EXECVE records hold pieces of split arguments (`aN[i]=`), and the longest record
is {longest(stream)} bytes.

`sample.log` ({len(sample)} records, round 1 of {rounds}, longest {longest(sample)} bytes):

{sample_table}

`corpus.log.zst` ({len(stream)} records, all rounds):

{corpus_table}
"""
readme = open(f"{here}/README.md", encoding="utf-8").read()
begin, finish = "<!-- stats:begin -->\n", "<!-- stats:end -->"
a, b = readme.index(begin) + len(begin), readme.index(finish)
open(f"{here}/README.md", "w", encoding="utf-8").write(readme[:a] + stats + readme[b:])
print(stats)
PYEOF
zstd -q -f -19 --long=27 --rm "$HERE/corpus.log" -o "$HERE/corpus.log.zst"
ls -l "$HERE/sample.log" "$HERE/corpus.log.zst"
