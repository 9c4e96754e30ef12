//! Logging to a real journald: when `$JOURNAL_STREAM` names audispd's
//! standard error (what systemd sets when a unit's output goes to the
//! journal), audispd logs natively with structured fields — `PLUGIN=` and
//! `MESSAGE_ID=` on the events an admin alerts on — and nothing goes to
//! standard error; `journalctl -u UNIT` finds it by its cgroup.
//!
//! journald runs standalone in private mount and PID namespaces, with the
//! kernel-audit guard of the reference recipe: an `Audit=` drop-in (leave
//! kernel audit alone), the audit capabilities dropped from its bounding
//! set, and a non-initial PID namespace (where the kernel refuses audit
//! control anyway). The journal lives on a tmpfs over `/run`, inside the
//! namespace only.

mod support;

use std::process::{Command, Stdio};
use std::time::Duration;

use nix::sys::signal::Signal;
use support::dispatcher::{state_line, Dispatcher, MAIN_NO_STATS};
use support::wait_until;

/// Starts journald in the namespace, runs audispd in a cgroup named like a
/// unit, then dumps that unit's journal as JSON.
/// Arguments: OUT_DIR UNIT AUDISPD ARGS...
const SCRIPT: &str = r#"
set -u
out=$1; unit=$2; shift 2
mount -t tmpfs -o mode=0755 tmpfs /run || exit 10
mkdir -p /run/systemd/journald.conf.d
printf '[Journal]\nAudit=\nStorage=volatile\nReadKMsg=no\nForwardToSyslog=no\nForwardToWall=no\nForwardToConsole=no\nRateLimitBurst=0\n' \
  > /run/systemd/journald.conf.d/ci.conf
env -u NOTIFY_SOCKET setpriv --bounding-set=-audit_read,-audit_control,-audit_write /lib/systemd/systemd-journald \
  2>"$out/journald.err" &
jpid=$!
i=0
while [ ! -S /run/systemd/journal/socket ] && [ $i -lt 100 ]; do sleep 0.05; i=$((i+1)); done
[ -S /run/systemd/journal/socket ] || { echo "journald did not start" >&2; exit 11; }
cg=/sys/fs/cgroup/unified
[ "$(stat -fc %T /sys/fs/cgroup)" = cgroup2fs ] && cg=/sys/fs/cgroup
mkdir -p "$cg/system.slice/$unit" && echo 0 > "$cg/system.slice/$unit/cgroup.procs" || exit 12
cleanup() {
  echo 0 > "$cg/cgroup.procs"
  rmdir "$cg/system.slice/$unit" 2>/dev/null
}
trap cleanup EXIT
: > "$out/stderr.log"
stream=$(stat -c '%d:%i' "$out/stderr.log")
JOURNAL_STREAM=$stream "$@" 2>>"$out/stderr.log"
rc=$?
echo 0 > "$cg/cgroup.procs"
journalctl --sync 2>/dev/null
journalctl --no-pager -D /run/log/journal -o json -u "$unit" > "$out/journal.json"
kill $jpid; wait $jpid
exit $rc
"#;

#[test]
fn logs_go_to_journald_with_plugin_and_message_id_fields() {
    if let Some(why) =
        support::missing_root_or_tools("namespaces, journald, cgroups", support::JOURNALD_TOOLS)
    {
        support::skip(&why);
        return;
    }
    let mut d = Dispatcher::new(MAIN_NO_STATS);
    // A plugin whose socket nobody listens on: "plugin lost", PLUGIN=gone.
    d.write_plugin(
        "gone",
        "socket = \"{dir}/run/gone.sock\"\n[restart]\ninitial = \"50ms\"\n",
    );
    // A broken file: "config error" (file:line in the message).
    d.write_plugin("broken", "socket = [\n");
    let unit = format!(
        "audisp-test-{}.service",
        d.path()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .replace('.', "")
    );
    let mut cmd = Command::new("unshare");
    cmd.args([
        "--mount",
        "--pid",
        "--fork",
        "--mount-proc",
        "--kill-child",
        "--propagation",
        "private",
        "sh",
        "-c",
        SCRIPT,
        "journald-ns",
    ])
    .arg(d.path())
    .arg(&unit)
    .arg(env!("CARGO_BIN_EXE_audispd"))
    .args(d.args())
    .env("NOTIFY_SOCKET", d.notify.path())
    .env("AUDISP_LOG", "info");
    d.spawn(cmd, Stdio::null()).unwrap();
    let ready = d
        .notify
        .wait_note("READY=1", Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("{e}\n{}", d.log_tail(30)));
    let pid = ready.pid.expect("credentials");
    assert!(
        ready.text.contains("records in"),
        "READY=1 from audispd (journald must not talk to our NOTIFY_SOCKET): {ready:?}"
    );
    // The lost plugin is reported at its first failed connection: wait for
    // the second (state report: reconnects=2), by then it is logged.
    let state = d.path().join("run/audispd.state");
    wait_until(Duration::from_secs(20), "two failed connections", || {
        let _ = std::fs::remove_file(&state);
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGUSR1).unwrap();
        wait_until(Duration::from_secs(10), "the state report", || {
            state.exists()
        });
        let report = std::fs::read_to_string(&state).unwrap_or_default();
        state_line(&report, "plugin", "gone").is_some_and(|l| l.get("reconnects") >= 2)
    });
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGTERM).unwrap();
    d.notify
        .wait_for("STOPPING=1", Duration::from_secs(10))
        .unwrap();
    let status = d.wait(Duration::from_secs(30)).unwrap();
    assert!(status.success(), "{status}\n{}", d.log_tail(30));

    let stderr = std::fs::read_to_string(d.path().join("stderr.log")).unwrap();
    assert!(
        stderr.is_empty(),
        "with the journal, nothing goes to stderr:\n{stderr}"
    );
    let json = std::fs::read_to_string(d.path().join("journal.json")).unwrap();
    let entries: Vec<serde_json::Value> = json
        .lines()
        .map(|l| serde_json::from_str(l).expect("journalctl -o json line"))
        .collect();
    let field =
        |e: &serde_json::Value, k: &str| e.get(k).and_then(|v| v.as_str()).map(str::to_string);
    assert!(
        entries.iter().all(
            |e| field(e, "SYSLOG_IDENTIFIER").as_deref() == Some("audispd")
                && field(e, "_SYSTEMD_UNIT").as_deref() == Some(unit.as_str())
        ),
        "every entry from audispd in {unit}: {json}"
    );
    let lost = entries
        .iter()
        .find(|e| field(e, "MESSAGE_ID").as_deref() == Some(audisp::log_ids::PLUGIN_LOST))
        .unwrap_or_else(|| panic!("no plugin-lost entry in\n{json}"));
    assert_eq!(field(lost, "PLUGIN").as_deref(), Some("gone"), "{lost}");
    // The name is in the text too (journalctl's default output shows only
    // MESSAGE): every entry about a plugin or an input names it.
    for key in ["PLUGIN", "INPUT"] {
        for e in entries.iter().filter(|e| field(e, key).is_some()) {
            let name = field(e, key).unwrap_or_default();
            let message = field(e, "MESSAGE").unwrap_or_default();
            assert!(message.contains(&name), "{key}={name} not in {message:?}");
        }
    }
    assert_eq!(
        field(lost, "PRIORITY").as_deref(),
        Some("4"),
        "a warning: {lost}"
    );
    let config = entries
        .iter()
        .find(|e| field(e, "MESSAGE_ID").as_deref() == Some(audisp::log_ids::CONFIG_ERROR))
        .unwrap_or_else(|| panic!("no config-error entry in\n{json}"));
    let message = field(config, "MESSAGE").unwrap_or_default();
    assert!(message.contains("broken.toml:1"), "file:line in {config}");
    assert_eq!(
        field(config, "PRIORITY").as_deref(),
        Some("3"),
        "an error: {config}"
    );
    assert!(
        entries
            .iter()
            .any(|e| field(e, "MESSAGE").is_some_and(|m| m.contains("audispd started"))),
        "{json}"
    );
}

/// Hides the host's journald (if any) from audispd: run in a private mount
/// namespace with an empty tmpfs over `/run/systemd/journal`, then exec
/// audispd (same pid, so its notifications and signals work as usual).
const WITHOUT_JOURNALD: &str = r#"
set -u
if [ -d /run/systemd/journal ]; then
  mount -t tmpfs -o mode=0755 tmpfs /run/systemd/journal || exit 10
fi
exec "$@"
"#;

#[test]
fn without_a_journald_it_falls_back_to_stderr() {
    let mut d = Dispatcher::new(MAIN_NO_STATS);
    let log = std::fs::File::create(d.path().join("stderr.log")).unwrap();
    let st = nix::sys::stat::fstat(&log).unwrap();
    let audispd = d.command();
    // The host may run a journald: hide it (that needs root); without one
    // audispd runs as it is.
    let mut cmd = if std::path::Path::new("/run/systemd/journal").exists() {
        if let Some(why) = support::missing_root_or_tools(
            "a mount namespace hiding this machine's journald",
            &[("/usr/bin/unshare", "util-linux")],
        ) {
            support::skip(&why);
            return;
        }
        let mut c = Command::new("/usr/bin/unshare");
        c.args(["--mount", "--propagation", "private", "sh", "-c"])
            .arg(WITHOUT_JOURNALD)
            .arg("sh")
            .arg(audispd.get_program())
            .args(audispd.get_args());
        for (key, value) in audispd.get_envs() {
            match value {
                Some(v) => c.env(key, v),
                None => c.env_remove(key),
            };
        }
        c
    } else {
        audispd
    };
    cmd.env("JOURNAL_STREAM", format!("{}:{}", st.st_dev, st.st_ino))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log);
    let child = cmd.spawn().unwrap();
    d.child = Some(child);
    d.notify
        .wait_for("READY=1", Duration::from_secs(30))
        .unwrap();
    assert!(d.stop().unwrap().success());
    let text = std::fs::read_to_string(d.path().join("stderr.log")).unwrap();
    assert!(
        text.contains("cannot log to journald") && text.contains("logging to standard error"),
        "{text}"
    );
    assert!(text.contains("audispd started"), "{text}");
}
