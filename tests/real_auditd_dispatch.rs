//! audispd between real auditd and real plugins.
//!
//! * Debian's auditd (3.0.9, run privately by `support::auditd`) starts `audispd` as one of its
//!   plugins, in `format = string` and in `format = binary` (the framing that auditd writes,
//!   padded for 3.0.9 and exact from 4.1.1 with `AUDISP_TEST_AUDITD`, named and auto-detected). audispd feeds an `examples/sink` plugin and a stock-format plugin (`cat`).
//!   Both must receive exactly what auditd dispatched, which is what auditd logged plus the EOE
//!   records it does not log, in order, once; and audispd must stop by itself, having delivered
//!   everything, when auditd stops.
//! * Debian's stock `/sbin/audisp-syslog`, started by audispd and fed a replay of real records,
//!   must log every record to syslog, as it does under auditd.
//! * The systemd layout: auditd starts `audisp-bridge`, which relays into a separately started
//!   audispd's input socket. A record auditd writes alone reaches the `cat` plugin within 50 ms
//!   (readers coalesce records only under load), and every record auditd dispatched reaches
//!   both plugins exactly once, in order.
//!
//! Everything here needs root, the auditd tests also kernel audit (see `RealAuditd::available_when_idle`).
//! Without it the tests print why and return; CI runs them as root, so there they run.

mod support;

use std::collections::HashSet;
use std::fs::{self, File};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Once};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use support::auditd::{
    event_id, is_dispatched_only, record_type, wait_for_bytes, AuditdOptions, Framing, Plugin,
    PluginFormat, RealAuditd, DD_WRITES, RULE_KEY, TEST_AUID,
};
use support::dispatcher::{example, read_sink, Dispatcher};

/// Debian's stock syslog plugin (package audispd-plugins), run by test 2.
const AUDISP_SYSLOG: &str = "/sbin/audisp-syslog";

/// Programs test 2 needs to give audispd a private `/dev/log`.
const UNSHARE: &str = "/usr/bin/unshare";
const MOUNT: &str = "/bin/mount";

/// How long audispd may take to start, and to deliver and exit once auditd is gone.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
const EXIT_TIMEOUT: Duration = Duration::from_secs(120);

/// How audispd reads auditd's stream in one run of test 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stdin {
    /// auditd `format = string`.
    String,
    /// auditd `format = binary`, audispd told the framing this auditd writes
    /// (`binary_framing = "padded"` for Debian's 3.0.9, `"exact"` from 4.1.1).
    BinaryTold,
    /// auditd `format = binary`, audispd works the framing out (`binary_framing = "auto"`).
    BinaryAuto,
}

impl Stdin {
    /// auditd's `format` for audispd's entry.
    fn auditd_format(self) -> PluginFormat {
        match self {
            Stdin::String => PluginFormat::String,
            Stdin::BinaryTold | Stdin::BinaryAuto => PluginFormat::Binary,
        }
    }

    /// `[input.stdin]` of audispd.toml, for an auditd writing binary frames as `framing`.
    fn config(self, framing: Framing) -> &'static str {
        match (self, framing) {
            (Stdin::String, _) => "format = \"string\"",
            (Stdin::BinaryTold, Framing::Padded) => {
                "format = \"binary\"\nbinary_framing = \"padded\""
            }
            (Stdin::BinaryTold, Framing::Exact) => {
                "format = \"binary\"\nbinary_framing = \"exact\""
            }
            (Stdin::BinaryAuto, _) => "format = \"binary\"\nbinary_framing = \"auto\"",
        }
    }
}

/// `text` in single quotes for `/bin/sh` (the test's own paths never contain a quote).
fn sh_quote(text: &str) -> String {
    assert!(!text.contains('\''), "path with a quote: {text}");
    format!("'{text}'")
}

/// Whether `needle` occurs in `haystack`.
fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// A record as text for failure messages.
fn show(record: &[u8]) -> String {
    String::from_utf8_lossy(record).into_owned()
}

/// Asserts `got` equals `want` record for record, naming the first difference.
fn assert_same_records(what: &str, got: &[&[u8]], want: &[&[u8]]) {
    if let Some(i) = got.iter().zip(want).position(|(g, w)| g != w) {
        panic!(
            "{what}: record {i} differs\n got:  {}\n want: {}",
            show(got[i]),
            show(want[i])
        );
    }
    assert_eq!(
        got.len(),
        want.len(),
        "{what}: {} records, expected {}; first extra or missing: {}",
        got.len(),
        want.len(),
        show(if got.len() > want.len() {
            got[want.len()]
        } else {
            want[got.len()]
        })
    );
}

/// Makes this test process the reaper of orphaned descendants, so that audispd (auditd's child)
/// becomes the test's child when auditd exits and its exit status can be collected.
fn become_subreaper() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        nix::sys::prctl::set_child_subreaper(true).expect("PR_SET_CHILD_SUBREAPER");
    });
}

/// The pid of the child of `parent` whose command name is `comm`. (Not matched by executable
/// path: `cargo` may rebuild the binary while the test runs, and `/proc/PID/exe` then ends in
/// " (deleted)".)
fn child_named(parent: u32, comm: &str) -> Option<u32> {
    fs::read_dir("/proc").ok()?.flatten().find_map(|entry| {
        let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
        let stat = fs::read_to_string(entry.path().join("stat")).ok()?;
        // `pid (comm) state ppid …`; comm may hold spaces and parentheses.
        let (name, rest) = stat.split_once(" (")?.1.rsplit_once(')')?;
        let ppid: u32 = rest.split_whitespace().nth(1)?.parse().ok()?;
        (ppid == parent && name == comm).then_some(pid)
    })
}

/// Waits for `pid`, a child of this process (see [`become_subreaper`]), to exit.
fn wait_for_exit(pid: u32, timeout: Duration) -> Result<WaitStatus, String> {
    let mut status = None;
    support::try_wait_until(
        timeout,
        &format!("process {pid} to exit"),
        || match waitpid(Pid::from_raw(pid as i32), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => Ok(false),
            Ok(s) => {
                status = Some(s);
                Ok(true)
            }
            Err(nix::errno::Errno::ECHILD) => Err(format!(
                "process {pid} is not a child of the test: it ended while its parent still ran"
            )),
            Err(e) => Err(format!("waitpid({pid}): {e}")),
        },
    )?;
    status.ok_or_else(|| format!("no status for {pid}"))
}

/// The main configuration both tests give audispd.
fn audispd_toml(stdin: &str) -> String {
    format!(
        "[input.stdin]\n{stdin}\n\
         [journal]\nsegment_size = \"4M\"\nmemory = \"4M\"\n\
         [shutdown]\ntimeout = \"60s\"\n\
         [stats]\ninterval = \"0\"\n"
    )
}

/// The plugins audispd feeds in tests 1 and 3: `examples/sink` (native) and `cat` (stock
/// format), writing `out/sink` and `out/legacy`.
fn write_plugins(d: &Dispatcher) {
    d.write_plugin(
        "sink",
        &format!(
            r#"exec = ["{}", "--out", "{{dir}}/out/sink", "--name", "sink"]"#,
            example("sink").display()
        ),
    );
    d.write_plugin(
        "legacy",
        "exec = [\"/bin/sh\", \"-c\", \"exec cat > {dir}/out/legacy\"]\nformat = \"string\"",
    );
}

/// Records dd's single-byte writes to stdout ([`DD_WRITES`] events) and a user message with
/// quotes, then a sync marker; returns once auditd dispatched the marker and both of audispd's
/// plugins (see [`write_plugins`]) received it. Returns the marker.
fn run_workload(auditd: &mut RealAuditd, d: &Dispatcher) -> String {
    auditd
        .record_syscalls(&["write"], &["-F", "a0=1"])
        .expect("add rule");
    let count = format!("count={DD_WRITES}");
    let status = auditd
        .workload("dd")
        .args([
            "if=/dev/zero",
            "of=/dev/null",
            "bs=1",
            &count,
            "status=none",
        ])
        .status()
        .expect("run dd");
    assert!(status.success(), "dd failed: {status}");
    auditd
        .send_user_message("dispatch test: quotes ' and \" pass through")
        .expect("user message");
    let marker = auditd
        .sync_captures()
        .expect("auditd dispatches the marker");
    // auditd wrote the marker to audispd too; both of audispd's plugins get it while running.
    for out in ["sink", "legacy"] {
        wait_for_bytes(&[&d.out(out)], marker.as_bytes(), Duration::from_secs(120))
            .unwrap_or_else(|e| panic!("{out}: {e}\n{}", d.log_tail(40)));
    }
    marker
}

/// Test 1: auditd → audispd (as auditd's plugin) → sink and `cat`.
fn auditd_runs_audispd(stdin: Stdin) {
    if let Err(why) = RealAuditd::available_when_idle() {
        support::skip(&why);
        return;
    }
    become_subreaper();
    let audispd = Path::new(env!("CARGO_BIN_EXE_audispd"));
    let framing = Framing::of_tested_auditd().expect("auditd's framing");
    let mut d = Dispatcher::new(&audispd_toml(stdin.config(framing)));
    write_plugins(&d);
    // auditd 3.0.9 passes at most two arguments and an empty environment, so a root-owned
    // wrapper (mode 0750, as auditd requires) supplies audispd's directories, the notification
    // socket for readiness, and a log file for its stderr (auditd's is /dev/null). It execs
    // audispd, so auditd runs and signals audispd itself, exactly as with `path = audispd`.
    let dir = d.path().display().to_string();
    let wrapper = d.path().join("audispd-plugin");
    fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nexport NOTIFY_SOCKET={notify}\nexport AUDISP_LOG=info\n\
             exec {audispd} --config-dir {etc} --runtime-dir {run} --state-dir {state} \
             2>>{log}\n",
            notify = sh_quote(&d.notify.path().display().to_string()),
            audispd = sh_quote(&audispd.display().to_string()),
            etc = sh_quote(&format!("{dir}/etc")),
            run = sh_quote(&format!("{dir}/run")),
            state = sh_quote(&format!("{dir}/state")),
            log = sh_quote(&format!("{dir}/audispd.log")),
        ),
    )
    .expect("write wrapper");
    fs::set_permissions(&wrapper, fs::Permissions::from_mode(0o750)).expect("chmod wrapper");

    let mut auditd = RealAuditd::start(AuditdOptions {
        plugins: vec![
            Plugin::executable("audispd", stdin.auditd_format(), &wrapper, &[]),
            // What auditd dispatched, for comparison.
            Plugin::capture("capture", PluginFormat::String),
        ],
        ..AuditdOptions::default()
    })
    .expect("start auditd");
    let started = Instant::now();
    d.notify
        .wait_for("READY=1", READY_TIMEOUT)
        .unwrap_or_else(|e| panic!("audispd under auditd: {e}\n{}", d.log_tail(40)));
    let auditd_pid = auditd.pid().expect("auditd runs");
    let audispd_pid = child_named(auditd_pid, "audispd")
        .unwrap_or_else(|| panic!("no audispd child of auditd {auditd_pid}"));

    let workload = Instant::now();
    let marker = run_workload(&mut auditd, &d);
    let delivered = workload.elapsed();

    let stopping = Instant::now();
    let report = auditd.stop().expect("stop restores kernel audit");
    let exit = wait_for_exit(audispd_pid, EXIT_TIMEOUT)
        .unwrap_or_else(|e| panic!("audispd after auditd stopped: {e}\n{}", d.log_tail(40)));
    let stopped = stopping.elapsed();
    let total = started.elapsed();
    let audispd_log = d.log();
    assert_eq!(
        exit,
        WaitStatus::Exited(Pid::from_raw(audispd_pid as i32), 0),
        "audispd exit\n{}",
        d.log_tail(40)
    );
    assert!(
        audispd_log.contains("every plugin had every record"),
        "audispd stopped with plugins behind:\n{}",
        d.log_tail(40)
    );
    assert!(
        report.auditd_exit.success(),
        "auditd exit: {}",
        report.auditd_exit
    );
    assert_eq!(
        report.kernel_after.differences_from(&report.kernel_before),
        Vec::<String>::new()
    );
    assert_eq!(report.kernel_after.pid, 0);
    assert_eq!(report.lost_during_run(), 0, "the kernel lost records");
    if stdin == Stdin::BinaryAuto {
        assert!(
            audispd_log.contains(&format!("detected {framing:?} framing")),
            "auto framing did not settle on {framing:?}:\n{}",
            d.log_tail(40)
        );
    }

    let got = assert_every_record_once(&auditd, &d, &marker);

    let stopped_by = if audispd_log.contains("auditd closed our input") {
        "end of input"
    } else {
        "a signal"
    };
    eprintln!(
        "{stdin:?}: audispd stopped on {stopped_by}; {got}; workload to delivery {delivered:?}, \
         auditd stop to audispd exit {stopped:?}, audispd start to exit {total:?}"
    );
}

/// What [`assert_every_record_once`] counted.
struct Delivered {
    records: usize,
    logged: usize,
    eoe: usize,
    not_dispatched: usize,
}

impl std::fmt::Display for Delivered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} records ({} logged, {} EOE, {} logged but not dispatched by auditd) for \
             {DD_WRITES} events",
            self.records, self.logged, self.eoe, self.not_dispatched
        )
    }
}

/// After auditd stopped: what auditd dispatched (its capture plugin) is what it logged plus
/// EOE records, and both of audispd's plugins (see [`write_plugins`]) got exactly that stream,
/// every record once, in order, including the dd workload's events and the user message.
fn assert_every_record_once(auditd: &RealAuditd, d: &Dispatcher, marker: &str) -> Delivered {
    let log = auditd.log_lines().expect("audit.log");
    let dispatched = auditd.capture_lines("capture").expect("capture");
    let sink_out = read_sink(&d.out("sink"));
    let legacy = support::auditd::read_lines(&d.out("legacy")).expect("legacy output");
    let log: Vec<&[u8]> = log.iter().map(Vec::as_slice).collect();
    let dispatched: Vec<&[u8]> = dispatched.iter().map(Vec::as_slice).collect();
    let sink: Vec<&[u8]> = sink_out.records.iter().map(|r| r.1.as_slice()).collect();
    let legacy: Vec<&[u8]> = legacy.iter().map(Vec::as_slice).collect();

    // What auditd dispatched is what it logged plus EOE records, in the same order. auditd may
    // drop what is still queued when it exits (the reference: DAEMON_END is best-effort), so the
    // dispatched stream may stop short of the log's end, but never before the marker.
    let dispatched_logged: Vec<&[u8]> = dispatched
        .iter()
        .copied()
        .filter(|r| !is_dispatched_only(r))
        .collect();
    let marker_at = log
        .iter()
        .position(|r| contains(r, marker.as_bytes()))
        .expect("marker in audit.log");
    assert!(dispatched_logged.len() > marker_at);
    assert_same_records(
        "auditd's dispatched records vs audit.log",
        &dispatched_logged,
        &log[..dispatched_logged.len().min(log.len())],
    );
    // auditd's own records frame the log: DAEMON_START (dispatched: plugins start first) and
    // DAEMON_END, the last record, which auditd dispatches on a best-effort basis.
    assert_eq!(record_type(log[0]), Some("DAEMON_START"));
    assert_eq!(record_type(dispatched[0]), Some("DAEMON_START"));
    assert_eq!(log.last().and_then(|r| record_type(r)), Some("DAEMON_END"));
    let unique: HashSet<&[u8]> = log.iter().copied().collect();
    assert_eq!(unique.len(), log.len(), "audit.log repeats a record");

    // audispd handed both plugins exactly that stream: every record, in order, once.
    assert_same_records("sink vs auditd's dispatched stream", &sink, &dispatched);
    assert_same_records(
        "stock-format plugin vs auditd's dispatched stream",
        &legacy,
        &dispatched,
    );
    assert!(
        sink_out.records.windows(2).all(|w| w[0].0 < w[1].0),
        "sink sequence numbers increase"
    );
    for (i, (got, want)) in sink.iter().zip(&dispatched).enumerate() {
        assert_eq!(event_id(got), event_id(want), "record {i}: serial");
    }

    let writes = sink
        .iter()
        .filter(|r| record_type(r) == Some("SYSCALL"))
        .filter(|r| contains(r, format!("key=\"{RULE_KEY}\"").as_bytes()))
        .filter(|r| contains(r, format!(" auid={TEST_AUID} ").as_bytes()))
        .filter(|r| contains(r, b" syscall=1 "))
        .count();
    assert_eq!(writes, DD_WRITES, "dd's write events reached the sink");
    let eoe = sink.iter().filter(|r| is_dispatched_only(r)).count();
    assert!(
        eoe >= DD_WRITES,
        "only {eoe} EOE records for {DD_WRITES} events"
    );
    assert!(sink
        .iter()
        .any(|r| record_type(r) == Some("USER") && contains(r, b"quotes ' and \" pass")));
    assert!(
        sink.iter()
            .filter(|r| record_type(r) == Some("SYSCALL"))
            .all(|r| r.contains(&0x1D)),
        "ENRICHED records keep their 0x1D section"
    );

    Delivered {
        records: sink.len(),
        logged: log.len(),
        eoe,
        not_dispatched: log.len() - dispatched_logged.len(),
    }
}

#[test]
fn auditd_runs_audispd_with_string_input() {
    auditd_runs_audispd(Stdin::String);
}

#[test]
fn auditd_runs_audispd_with_binary_input_told_its_framing() {
    auditd_runs_audispd(Stdin::BinaryTold);
}

#[test]
fn auditd_runs_audispd_with_binary_input_auto_framing() {
    auditd_runs_audispd(Stdin::BinaryAuto);
}

/// How soon a record auditd writes alone must reach a plugin behind the bridge and audispd:
/// readers coalesce records only while they come quickly, so a lone record is not held back.
const LONE_RECORD_LIMIT: Duration = Duration::from_millis(50);

/// Waits (polling every millisecond) until `path` holds `needle`; returns when it saw it.
fn arrival(path: &Path, needle: &[u8], limit: Duration) -> Instant {
    let deadline = Instant::now() + limit;
    loop {
        let data = fs::read(path).unwrap_or_default();
        if contains(&data, needle) {
            return Instant::now();
        }
        assert!(
            Instant::now() < deadline,
            "{} never arrived in {}",
            show(needle),
            path.display()
        );
        thread::sleep(Duration::from_millis(1));
    }
}

/// Test 3, the systemd layout: auditd → `audisp-bridge --no-hand-over` (auditd's plugin,
/// relaying) → a separately started audispd's input socket → sink and `cat`. Lone records arrive within
/// [`LONE_RECORD_LIMIT`]; then every record auditd dispatched reaches both plugins exactly once,
/// in order, and the bridge, stopping with auditd, leaves nothing unacknowledged.
#[test]
fn auditd_runs_the_bridge_into_audispd() {
    bridge_layout(false);
}

/// Test 3 as shipped (hand-over is the default): the bridge hands auditd's socket to audispd, which reads it
/// itself; the same lone-record limit and every record exactly once, and at auditd's stop the
/// socket comes back to the bridge, which leaves nothing unacknowledged.
#[test]
fn auditd_runs_the_bridge_handing_over_its_socket_to_audispd() {
    bridge_layout(true);
}

fn bridge_layout(hand_over: bool) {
    if let Err(why) = RealAuditd::available_when_idle() {
        support::skip(&why);
        return;
    }
    become_subreaper();
    let mut d = Dispatcher::new(&audispd_toml("enabled = false"));
    write_plugins(&d);
    d.start(Stdio::null()).expect("start audispd");
    // auditd runs the bridge with an empty environment and at most two arguments: a root-owned
    // wrapper (0750) supplies its options and a log file, and execs it.
    let dir = d.path().display().to_string();
    let wrapper = d.path().join("bridge-plugin");
    fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nexport AUDISP_LOG=info\nexec {bridge} --socket {socket} \
             --state-dir {state}{hand_over} 2>>{log}\n",
            bridge = sh_quote(env!("CARGO_BIN_EXE_audisp-bridge")),
            hand_over = if hand_over { "" } else { " --no-hand-over" },
            socket = sh_quote(&d.input_socket().display().to_string()),
            state = sh_quote(&format!("{dir}/bridge")),
            log = sh_quote(&format!("{dir}/bridge.log")),
        ),
    )
    .expect("write wrapper");
    fs::set_permissions(&wrapper, fs::Permissions::from_mode(0o750)).expect("chmod wrapper");
    let bridge_log = || fs::read_to_string(d.path().join("bridge.log")).unwrap_or_default();

    let mut auditd = RealAuditd::start(AuditdOptions {
        plugins: vec![
            Plugin::executable("bridge", PluginFormat::String, &wrapper, &[]),
            Plugin::capture("capture", PluginFormat::String),
        ],
        ..AuditdOptions::default()
    })
    .expect("start auditd");
    support::wait_until(READY_TIMEOUT, "the bridge to connect", || {
        bridge_log().contains("connected to the dispatcher")
    });
    let auditd_pid = auditd.pid().expect("auditd runs");
    let bridge_pid = child_named(auditd_pid, "audisp-bridge")
        .unwrap_or_else(|| panic!("no audisp-bridge child of auditd {auditd_pid}"));
    if hand_over {
        support::wait_until(READY_TIMEOUT, "the bridge to hand over its socket", || {
            bridge_log().contains("handed the stream over to the dispatcher")
        });
    }

    // One record at a time, each alone on the path.
    let mut slowest = Duration::ZERO;
    for i in 0..3 {
        let text = format!("audisp lone record {i}");
        auditd.send_user_message(&text).expect("user message");
        let sent = Instant::now();
        let took = arrival(&d.out("legacy"), text.as_bytes(), READY_TIMEOUT) - sent;
        slowest = slowest.max(took);
    }
    assert!(
        slowest <= LONE_RECORD_LIMIT,
        "a lone record took {slowest:?} from auditd to the plugin (limit {LONE_RECORD_LIMIT:?})"
    );

    let marker = run_workload(&mut auditd, &d);
    let report = auditd.stop().expect("stop restores kernel audit");
    assert!(
        report.auditd_exit.success(),
        "auditd exit: {}",
        report.auditd_exit
    );
    assert_eq!(report.lost_during_run(), 0, "the kernel lost records");
    let exit = wait_for_exit(bridge_pid, EXIT_TIMEOUT)
        .unwrap_or_else(|e| panic!("the bridge after auditd stopped: {e}\n{}", bridge_log()));
    assert_eq!(
        exit,
        WaitStatus::Exited(Pid::from_raw(bridge_pid as i32), 0),
        "bridge exit\n{}",
        bridge_log()
    );
    assert!(
        bridge_log().contains("the dispatcher has every record"),
        "the bridge stopped with records unacknowledged:\n{}",
        bridge_log()
    );
    let status = d.stop().expect("stop audispd");
    assert!(
        status.success(),
        "audispd exit {status}\n{}",
        d.log_tail(40)
    );
    assert_eq!(
        d.log().contains("handed over its stream"),
        hand_over,
        "{}",
        d.log_tail(40)
    );
    let got = assert_every_record_once(&auditd, &d, &marker);
    eprintln!("bridge (hand-over {hand_over}): {got}; slowest lone record {slowest:?}");
}

/// Why test 2 cannot run here, if it cannot.
fn syslog_test_unavailable() -> Option<String> {
    let euid = nix::unistd::geteuid();
    if !euid.is_root() {
        return Some(format!(
            "the audisp-syslog test needs root for a private mount namespace (effective uid is \
             {euid}); run it as root, as CI does"
        ));
    }
    for (program, package) in [
        (AUDISP_SYSLOG, "audispd-plugins"),
        (UNSHARE, "util-linux"),
        (MOUNT, "mount"),
    ] {
        if !Path::new(program).is_file() {
            return Some(format!(
                "{program} is missing; install it with `apt-get install -y \
                 --no-install-recommends {package}`"
            ));
        }
    }
    None
}

/// Runs in a private mount namespace (`unshare --mount`) before audispd: gives the namespace
/// a `/dev` of its own (a tmpfs holding links to every entry of the real `/dev`, reached
/// through a bind mount under the test's directory) plus `/dev/log`, a link to the test's
/// datagram socket. The real `/dev` is never written to; everything vanishes with the
/// namespace. `$1` is the test directory, `$2` the socket, the rest audispd's command line.
const PRIVATE_DEV_LOG: &str = r#"set -eu
dir=$1 sock=$2
shift 2
mkdir "$dir/host-dev"
mount --rbind /dev "$dir/host-dev"
mount -t tmpfs -o mode=0755 audisp-test-dev /dev
for entry in "$dir"/host-dev/*; do ln -s "$entry" "/dev/${entry##*/}"; done
ln -s "$sock" /dev/log
exec "$@"
"#;

/// Receives syslog datagrams on `sock` until `done` is set and nothing more is queued.
fn collect_datagrams(
    sock: UnixDatagram,
    done: Arc<AtomicBool>,
) -> thread::JoinHandle<Vec<Vec<u8>>> {
    thread::spawn(move || {
        let mut got = Vec::new();
        let mut buf = vec![0u8; 1 << 16];
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .expect("read timeout");
        loop {
            // Read `done` first: once it is set every message has been sent, so an empty queue
            // after that means the end.
            let finished = done.load(Ordering::Acquire);
            match sock.recv(&mut buf) {
                Ok(n) => got.push(buf[..n].to_vec()),
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        || e.kind() == std::io::ErrorKind::TimedOut =>
                {
                    if finished {
                        return got;
                    }
                }
                Err(e) => panic!("syslog socket: {e}"),
            }
        }
    })
}

#[test]
fn stock_audisp_syslog_run_by_audispd_logs_every_record() {
    if let Some(why) = syslog_test_unavailable() {
        support::skip(&why);
        return;
    }
    let sample = support::dispatcher::sample_path();
    let data = support::dispatcher::sample();
    let records: Vec<&[u8]> = support::dispatcher::lines(&data);
    assert!(records.len() > 4000, "sample has {} records", records.len());
    let host_dev_log = fs::symlink_metadata("/dev/log").ok().map(|m| m.file_type());

    let mut d = Dispatcher::new(&audispd_toml("format = \"string\""));
    d.write_plugin(
        "syslog",
        &format!("exec = [\"{AUDISP_SYSLOG}\", \"LOG_INFO\"]\nformat = \"string\""),
    );
    let sock_path = d.path().join("dev-log.sock");
    let sock = UnixDatagram::bind(&sock_path).expect("bind syslog socket");
    let done = Arc::new(AtomicBool::new(false));
    let collector = collect_datagrams(sock, done.clone());

    let started = Instant::now();
    let audispd = d.command().get_program().to_owned();
    let args: Vec<_> = d.command().get_args().map(ToOwned::to_owned).collect();
    let child = Command::new(UNSHARE)
        .args([
            "--mount",
            "--propagation",
            "private",
            "/bin/sh",
            "-c",
            PRIVATE_DEV_LOG,
            "sh",
        ])
        .arg(d.path())
        .arg(&sock_path)
        .arg(audispd)
        .args(args)
        .env("NOTIFY_SOCKET", d.notify.path())
        .env("AUDISP_LOG", "info")
        .stdin(File::open(&sample).expect("open sample"))
        .stdout(Stdio::null())
        .stderr(
            fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(d.path().join("audispd.log"))
                .expect("audispd log"),
        )
        .spawn()
        .expect("start unshare");
    d.child = Some(child);
    d.notify
        .wait_for("READY=1", READY_TIMEOUT)
        .unwrap_or_else(|e| panic!("audispd in its namespace: {e}\n{}", d.log_tail(40)));
    let status = d.wait(EXIT_TIMEOUT).expect("audispd exits at end of input");
    done.store(true, Ordering::Release);
    let messages = collector.join().expect("collector");
    let elapsed = started.elapsed();
    assert!(status.success(), "audispd: {status}\n{}", d.log_tail(40));
    assert!(
        d.log().contains("every plugin had every record"),
        "{}",
        d.log_tail(40)
    );
    assert_eq!(
        fs::symlink_metadata("/dev/log").ok().map(|m| m.file_type()),
        host_dev_log,
        "the host's /dev/log changed"
    );
    assert!(
        !fs::read_to_string("/proc/self/mountinfo")
            .expect("mountinfo")
            .contains("audisp-test-dev"),
        "the private /dev leaked into the test's mount namespace"
    );

    // glibc's syslog(3) sends `<PRI>Mmm dd hh:mm:ss TAG: TEXT`; LOG_INFO with the default
    // facility LOG_USER is priority 14, the tag is the program name. audisp-syslog first logs
    // that it started, then each line it read (with its newline), the first 0x1D replaced by a
    // space.
    let bodies: Vec<&[u8]> = messages
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let header_ok = m.len() > 20
                && m.starts_with(b"<14>")
                && m[4..19]
                    .iter()
                    .all(|&b| b.is_ascii_alphanumeric() || b == b' ' || b == b':')
                && m[19] == b' ';
            assert!(header_ok, "message {i} has no syslog header: {}", show(m));
            m[20..]
                .strip_prefix(b"audisp-syslog: ")
                .unwrap_or_else(|| panic!("message {i} not from audisp-syslog: {}", show(m)))
        })
        .collect();
    let mut expected: Vec<Vec<u8>> =
        vec![b"syslog plugin initialized with facility 8 and priority 6".to_vec()];
    expected.extend(records.iter().map(|r| {
        let mut text = r.to_vec();
        if let Some(sep) = text.iter().position(|&b| b == 0x1D) {
            text[sep] = b' ';
        }
        text.push(b'\n');
        text
    }));
    let expected: Vec<&[u8]> = expected.iter().map(Vec::as_slice).collect();
    assert!(
        records.iter().filter(|r| r.contains(&0x1D)).count() > 1000,
        "the sample exercises the 0x1D rule"
    );
    assert_same_records("audisp-syslog's messages", &bodies, &expected);
    eprintln!(
        "audisp-syslog logged {} records (+ its start message) in {elapsed:?}",
        records.len()
    );
}
