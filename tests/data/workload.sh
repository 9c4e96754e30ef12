#!/bin/bash
# The activity capture.sh records: run with login uid 65534 inside an empty scratch directory.
# Usage: workload.sh SCRATCH_DIR ROUNDS PYTHON
# Every round does the same mix (program runs with short and very long argument lists, file
# operations on awkward names, failures, sockets, signals, a crash, user-space messages) and ends
# with a USER record "audisp-capture round=N done", which capture.sh uses to cut sample.log.
set -u
W=$1
ROUNDS=$2
PY=$3
cd "$W" || exit 1
ulimit -c 0

# One 20 KB argument: the kernel splits it across EXECVE records as a1_len=, a1[0]=, a1[1]=, ...
big_arg=$(head -c 20000 /dev/zero | tr '\0' 'a')
# A 9 KB argument with spaces: hex-encoded by the kernel (twice as long), also split.
spaced_arg=$(for i in $(seq 1 1500); do printf 'word%s ' "$i"; done)
# About 3000 arguments: several EXECVE records with argc=3001.
mapfile -t many_args < <(seq 1 3000)

# File names the kernel hex-encodes (space, quote, control or non-ASCII bytes) and ones it does not.
names=(
  "plain.txt"
  "with space.txt"
  "single'quote"
  'double"quote'
  "tab	name"
  "ünïcødé-ファイル"
  $'\xff\xfe-not-utf8'
  $'new\nline'
  'semi;colon&amp'
  'dollar$HOME'
  'back\slash'
  "long-$(head -c 200 /dev/zero | tr '\0' 'x')"
)

# User-space messages of the kinds PAM, sudo, sshd and systemd send, through the real kernel
# interface (the kernel adds pid=, uid=, auid=, ses= and wraps the text in msg='...').
user_messages() {
  "$PY" - "$1" <<'EOF'
import socket, struct, sys
r = sys.argv[1]
msgs = [
    (1100, 'op=PAM:authentication grantors=pam_unix acct="alice" exe="/usr/bin/sudo" hostname=? addr=? terminal=/dev/pts/0 res=success'),
    (1100, 'op=PAM:authentication grantors=? acct="mallory" exe="/usr/sbin/sshd" hostname=198.51.100.7 addr=198.51.100.7 terminal=ssh res=failed'),
    (1101, 'op=PAM:accounting grantors=pam_permit acct="alice" exe="/usr/bin/sudo" hostname=? addr=? terminal=/dev/pts/0 res=success'),
    (1123, 'cwd="/home/alice/my dir" cmd=6C73202D6C61202F726F6F74 exe="/usr/bin/sudo" terminal=pts/0 res=success'),
    (1110, 'op=PAM:setcred grantors=pam_permit acct="root" exe="/usr/bin/sudo" hostname=? addr=? terminal=/dev/pts/0 res=success'),
    (1105, 'op=PAM:session_open grantors=pam_limits,pam_unix acct="root" exe="/usr/bin/sudo" hostname=? addr=? terminal=/dev/pts/0 res=success'),
    (1106, 'op=PAM:session_close grantors=pam_limits,pam_unix acct="root" exe="/usr/bin/sudo" hostname=? addr=? terminal=/dev/pts/0 res=success'),
    (1104, 'op=PAM:setcred grantors=pam_permit acct="root" exe="/usr/bin/sudo" hostname=? addr=? terminal=/dev/pts/0 res=success'),
    (1103, 'op=PAM:setcred grantors=pam_env,pam_unix acct="bob" exe="/usr/sbin/sshd" hostname=2001:db8::5 addr=2001:db8::5 terminal=ssh res=success'),
    (1112, 'op=login id=1001 exe="/usr/sbin/sshd" hostname=2001:db8::5 addr=2001:db8::5 terminal=/dev/pts/1 res=success'),
    (1112, 'op=login acct="mallory" exe="/usr/sbin/sshd" hostname=? addr=198.51.100.7 terminal=sshd res=failed'),
    (1113, 'op=login id=1001 exe="/usr/sbin/sshd" hostname=? addr=? terminal=/dev/pts/1 res=success'),
    (1130, 'unit=cron comm="systemd" exe="/usr/lib/systemd/systemd" hostname=? addr=? terminal=? res=success'),
    (1131, 'unit=user@1000 comm="systemd" exe="/usr/lib/systemd/systemd" hostname=? addr=? terminal=? res=success'),
    (1102, 'op=changing-password id=1002 exe="/usr/bin/passwd" hostname=? addr=? terminal=pts/2 res=success'),
    (1108, 'op=PAM:chauthtok grantors=pam_unix acct="carol" exe="/usr/bin/passwd" hostname=? addr=? terminal=pts/2 res=success'),
    (1109, 'op=PAM:bad_ident grantors=? acct="?" exe="/usr/sbin/sshd" hostname=203.0.113.9 addr=203.0.113.9 terminal=ssh res=failed'),
    (1005, "round " + r + ": free text with 'single' and \"double\" quotes, ünïcødé, tab\tend"),
]
s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 9)
for seq, (kind, text) in enumerate(msgs, 1):
    data = text.encode() + b"\0"
    s.send(struct.pack("=IHHII", 16 + len(data), kind, 5, seq, 0) + data)
    s.recv(8192)
# A unix socket connect (SOCKADDR saddr_fam=local) that fails, and an abstract one.
for path in ("/tmp/no such socket", "\0audisp-abstract"):
    c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        c.connect(path)
    except OSError:
        pass
    c.close()
EOF
}

for r in $(seq 1 "$ROUNDS"); do
  # Program runs with short argument lists.
  for i in $(seq 1 30); do
    /bin/true
    /bin/echo "round $r step $i" >/dev/null
    env -i /usr/bin/printf '%s\n' "it's \"quoted\"" 'ünï' >/dev/null
  done
  # Very long argument lists.
  /bin/true "${many_args[@]}"
  /bin/true first "$big_arg" last
  /bin/echo "$spaced_arg" >/dev/null

  # File creation, rename, links, permission and owner changes, truncation, removal.
  for n in "${names[@]}"; do
    echo data >"$n"
    cat "$n" >/dev/null
    mv "$n" "$n.renamed"
    ln "$n.renamed" "$n.hard"
    ln -s "$n.renamed" "$n.sym"
    chmod 600 "$n.renamed"
    chown 65534:65534 "$n.renamed"
    truncate -s 0 "$n.renamed"
    rm -f "$n.renamed" "$n.hard" "$n.sym"
  done
  mkdir -p "dir with space/ünï/deeper"
  rm -r "dir with space"
  # A long path (about 3 KB) and a long hex-encoded path (about 2 KB of UTF-8, 4 KB hex).
  long_dir=$(printf "$(head -c 200 /dev/zero | tr '\0' 'p')/%.0s" $(seq 1 15))
  mkdir -p "$long_dir" && touch "$long_dir/file" && rm -r "${long_dir%%/*}"
  wide_dir=$(printf "$(printf 'ü%.0s' $(seq 1 100))/%.0s" $(seq 1 10))
  mkdir -p "$wide_dir" && touch "$wide_dir/file" && rm -r "${wide_dir%%/*}"

  # Failures: missing files, existing directories, permission denied for an unprivileged user.
  cat does-not-exist 2>/dev/null
  mkdir . 2>/dev/null
  rmdir / 2>/dev/null
  touch secret && chmod 600 secret
  setpriv --reuid=65534 --regid=65534 --clear-groups cat secret 2>/dev/null
  setpriv --reuid=65534 --regid=65534 --clear-groups touch /root/not-allowed 2>/dev/null
  rm -f secret

  # Sockets: refused TCP over IPv4 and IPv6, connected UDP, unix sockets (in the messages helper).
  (exec 3<>/dev/tcp/127.0.0.1/9) 2>/dev/null
  (exec 3<>/dev/tcp/::1/9) 2>/dev/null
  (exec 3<>/dev/udp/127.0.0.1/53) 2>/dev/null

  # Signals, and a crash (ANOM_ABEND; core dumps are disabled).
  sleep 10 &
  kill -TERM $! && wait $! 2>/dev/null
  { bash -c 'kill -SEGV $$'; } 2>/dev/null

  # User-space messages, including nested quotes inside msg='...' (auditctl -m accepts printable
  # ASCII only; the helper above sends the non-ASCII text).
  auditctl -m "round $r: it's a \"quoted\" message with 'nested' quotes"
  auditctl -m "msg='inner' and \"double\" quotes, ending in a lone quote'"
  user_messages "$r"
  auditctl -m "audisp-capture round=$r done"
done
