//! `audisp-kernel` against the real kernel, relaying to a real audispd and a
//! sink plugin:
//!
//! * reading the multicast group (with only `CAP_AUDIT_READ`) beside a real
//!   auditd, it delivers for the test's events exactly the records auditd
//!   receives — same serials, same text up to auditd's enrichment, same
//!   order, EOE included;
//! * as the audit daemon (`--daemon`, with only `CAP_AUDIT_CONTROL`) it
//!   delivers a load of getppid events, each event whole, with the kernel's
//!   `lost` counter unchanged, and gives the daemon role back on SIGTERM;
//! * a daemon killed with SIGKILL is replaced by the next one.
//!
//! Kernel audit is machine-wide state: the tests take a lock
//! (`/run/lock/audisp-test-kernel-audit.lock`, across processes, and a mutex
//! within this one), record only processes with the test login uid, remove
//! their rules and check that the kernel's settings are as found. They need
//! root, auditd/auditctl and kernel audit (CI has them); elsewhere they skip.

mod support;

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use support::auditd::{
    auditctl, event_id, record_type, AuditdOptions, KernelAudit, KernelAuditLock, Plugin,
    PluginFormat, RealAuditd, RULE_KEY, TEST_AUID,
};
use support::dispatcher::{read_sink, sink_plugin, Dispatcher, NotifyCapture};

const MAIN: &str = "[input.stdin]\nenabled = false\n[journal]\nsegment_size = \"4M\"\nmemory = \"4M\"\n[stats]\ninterval = \"0\"\n";

/// Key of the rules the daemon-mode tests add.
const KEY: &str = "audisp-kernel-test";

/// Puts the test login uid on a child before it execs (async-signal-safe:
/// one open, one write).
fn set_test_loginuid() -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open("/proc/self/loginuid")?;
    f.write_all(TEST_AUID.to_string().as_bytes())
}

/// `audisp-kernel` with `args`, holding only `capability`, ready.
struct KernelReader {
    child: Option<Child>,
    log: PathBuf,
}

impl KernelReader {
    fn start(d: &Dispatcher, args: &[&str], capability: &str) -> KernelReader {
        let log = d.path().join("kernel.log");
        let notify_path = d.path().join("kernel-notify.sock");
        let _ = std::fs::remove_file(&notify_path);
        let mut notify = NotifyCapture::bind(&notify_path);
        let child = Command::new("/usr/bin/setpriv")
            .arg(format!("--bounding-set=-all,+{capability}"))
            .args(["--inh-caps=-all", "--"])
            .arg(env!("CARGO_BIN_EXE_audisp-kernel"))
            .arg("--socket")
            .arg(d.input_socket())
            .arg("--state-dir")
            .arg(d.path().join("kernel"))
            .args(args)
            .env("NOTIFY_SOCKET", notify.path())
            .env("AUDISP_LOG", "info")
            .stdout(Stdio::null())
            .stderr(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&log)
                    .expect("log"),
            )
            .spawn()
            .expect("start audisp-kernel");
        let r = KernelReader {
            child: Some(child),
            log,
        };
        notify
            .wait_for("READY=1", Duration::from_secs(30))
            .unwrap_or_else(|e| panic!("{e}\n{}", r.log()));
        r
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// SIGTERM; waits for a clean exit with every record delivered.
    fn stop(&mut self) {
        kill(Pid::from_raw(self.pid() as i32), Signal::SIGTERM).expect("SIGTERM");
        let status = self.child.take().expect("running").wait().expect("wait");
        let log = self.log();
        assert!(status.success(), "{status}\n{log}");
        assert!(log.contains("the dispatcher has every record"), "{log}");
    }

    /// SIGKILL: a crash.
    fn crash(&mut self) {
        let mut c = self.child.take().expect("running");
        c.kill().expect("SIGKILL");
        c.wait().expect("wait");
    }
}

impl Drop for KernelReader {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = kill(Pid::from_raw(c.id() as i32), Signal::SIGTERM);
            let _ = c.wait();
        }
    }
}

/// The text of a sink's records.
fn sink_texts(d: &Dispatcher) -> Vec<Vec<u8>> {
    read_sink(&d.out("sink"))
        .records
        .into_iter()
        .map(|r| r.1)
        .collect()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Waits until a sink record contains `needle`.
fn wait_sink_for(d: &Dispatcher, reader: &KernelReader, needle: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while !sink_texts(d).iter().any(|r| contains(r, needle.as_bytes())) {
        assert!(
            std::time::Instant::now() < deadline,
            "{needle} did not reach the sink ({} records there)\n{}\n{}",
            sink_texts(d).len(),
            reader.log(),
            d.log_tail(20)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Sends a USER record with `text` as the test login uid.
fn user_message(text: &str) {
    let mut c = Command::new("/usr/sbin/auditctl");
    c.args(["-m", text]);
    // SAFETY: the hook only opens and writes /proc/self/loginuid.
    unsafe {
        c.pre_exec(set_test_loginuid);
    }
    let out = c.output().expect("auditctl -m");
    assert!(out.status.success(), "auditctl -m: {out:?}");
}

const EVENTS: usize = 2000;

#[test]
fn multicast_records_match_what_auditd_receives() {
    if let Err(why) = RealAuditd::available() {
        support::skip(&why);
        return;
    }
    let mut d = Dispatcher::new(MAIN);
    d.write_plugin("sink", &sink_plugin("sink", "", ""));
    d.start(Stdio::null()).unwrap();
    let mut auditd = RealAuditd::start(AuditdOptions {
        plugins: vec![Plugin::capture("capture", PluginFormat::String)],
        ..AuditdOptions::default()
    })
    .expect("start auditd");
    let mut reader = KernelReader::start(&d, &[], "audit_read");
    auditd
        .record_syscalls(&["write"], &["-F", "a0=1"])
        .expect("rule");
    let count = format!("count={EVENTS}");
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
        .expect("dd");
    assert!(status.success());
    let marker = auditd
        .sync_captures()
        .expect("marker reaches auditd's plugin");
    wait_sink_for(&d, &reader, &marker);
    reader.stop();
    let report = auditd.stop().expect("auditd stops, kernel audit restored");
    assert_eq!(report.lost_during_run(), 0);

    // auditd's records up to its enrichment (ENRICHED: raw text, 0x1D, …).
    let dispatched: Vec<Vec<u8>> = auditd
        .capture_lines("capture")
        .expect("capture")
        .into_iter()
        .map(|r| match r.iter().position(|&b| b == 0x1D) {
            Some(i) => r[..i].to_vec(),
            None => r,
        })
        .collect();
    // The test's events: dd's writes and the marker.
    let ours: std::collections::HashSet<String> = dispatched
        .iter()
        .filter(|r| {
            (record_type(r) == Some("SYSCALL")
                && contains(r, format!("key=\"{RULE_KEY}\"").as_bytes()))
                || contains(r, marker.as_bytes())
        })
        .filter_map(|r| event_id(r).map(str::to_owned))
        .collect();
    assert_eq!(ours.len(), EVENTS + 1, "auditd saw every event");
    let pick = |records: &[Vec<u8>]| -> Vec<Vec<u8>> {
        records
            .iter()
            .filter(|r| event_id(r).is_some_and(|id| ours.contains(id)))
            .cloned()
            .collect()
    };
    let want = pick(&dispatched);
    let got = pick(&sink_texts(&d));
    let eoe = want
        .iter()
        .filter(|r| record_type(r) == Some("EOE"))
        .count();
    assert_eq!(eoe, EVENTS, "auditd dispatches each event's EOE");
    if let Some(i) = got.iter().zip(&want).position(|(g, w)| g != w) {
        panic!(
            "record {i} differs\n got:  {}\n want: {}",
            String::from_utf8_lossy(&got[i]),
            String::from_utf8_lossy(&want[i])
        );
    }
    assert_eq!(got.len(), want.len(), "as many records as auditd received");
    assert!(d.stop().unwrap().success());
}

/// Rules and settings the daemon-mode tests change, put back on drop.
struct KernelState {
    before: KernelAudit,
    rules: Vec<Vec<String>>,
}

impl KernelState {
    fn save() -> KernelState {
        KernelState {
            before: KernelAudit::read().expect("auditctl -s"),
            rules: Vec::new(),
        }
    }

    fn add_rule(&mut self, rule: &[&str]) {
        auditctl(rule).expect("add rule");
        self.rules
            .push(rule.iter().map(|w| (*w).to_owned()).collect());
    }

    /// Removes the rules and restores backlog_limit and enabled; returns the
    /// kernel's state then.
    fn restore(&mut self) -> KernelAudit {
        while let Some(mut rule) = self.rules.pop() {
            rule[0] = "-d".into();
            let _ = auditctl(&rule);
        }
        let now = KernelAudit::read().expect("auditctl -s");
        if now.backlog_limit != self.before.backlog_limit {
            let _ = auditctl(&["-b", &self.before.backlog_limit.to_string()]);
        }
        if now.enabled != self.before.enabled {
            let _ = auditctl(&["-e", &self.before.enabled.to_string()]);
        }
        KernelAudit::read().expect("auditctl -s")
    }
}

impl Drop for KernelState {
    fn drop(&mut self) {
        self.restore();
    }
}

#[test]
fn as_the_daemon_a_getppid_load_arrives_whole_with_lost_unchanged() {
    const LOAD: usize = 20_000;
    let _lock = KernelAuditLock::acquire().expect("lock kernel audit");
    if let Err(why) = RealAuditd::available() {
        support::skip(&why);
        return;
    }
    let mut state = KernelState::save();
    let mut d = Dispatcher::new(MAIN);
    d.write_plugin("sink", &sink_plugin("sink", "", ""));
    d.start(Stdio::null()).unwrap();
    let mut reader = KernelReader::start(&d, &["--daemon"], "audit_control");
    let registered = KernelAudit::read().unwrap();
    assert_eq!(
        registered.pid,
        reader.pid(),
        "registered as the audit daemon"
    );
    assert_eq!(registered.enabled, 1, "auditing switched on");
    auditctl(&["-b", "8192"]).expect("backlog_limit");
    let never_others = format!("auid!={TEST_AUID}");
    state.add_rule(&["-a", "never,user", "-F", &never_others]);
    let auid = format!("auid={TEST_AUID}");
    state.add_rule(&[
        "-a",
        "always,exit",
        "-F",
        "arch=b64",
        "-S",
        "getppid",
        "-F",
        &auid,
        "-k",
        KEY,
    ]);
    let lost_before = KernelAudit::read().unwrap().lost;

    let mut load = Command::new("/bin/true");
    // SAFETY: in the forked child before exec: an open and a write, then
    // getppid, which is async-signal-safe.
    unsafe {
        load.pre_exec(|| {
            set_test_loginuid()?;
            for _ in 0..LOAD {
                libc::getppid();
            }
            Ok(())
        });
    }
    assert!(load.status().expect("getppid load").success());
    user_message("audisp-kernel-test end of load");
    wait_sink_for(&d, &reader, "audisp-kernel-test end of load");
    let lost_after = KernelAudit::read().unwrap().lost;
    reader.stop();
    let after = state.restore();
    assert_eq!(lost_after, lost_before, "the kernel lost records");
    assert_eq!(after.pid, 0, "the daemon role was given back");
    assert_eq!(
        after.differences_from(&state.before),
        Vec::<String>::new(),
        "kernel audit as found"
    );
    let log = reader.log();
    assert!(log.contains("the kernel lost no record meanwhile"), "{log}");

    let records = sink_texts(&d);
    let syscalls: std::collections::HashSet<&str> = records
        .iter()
        .filter(|r| {
            record_type(r) == Some("SYSCALL") && contains(r, format!("key=\"{KEY}\"").as_bytes())
        })
        .map(|r| {
            assert!(
                contains(r, b" syscall=110 "),
                "{}",
                String::from_utf8_lossy(r)
            );
            event_id(r).expect("event id")
        })
        .collect();
    assert_eq!(syscalls.len(), LOAD, "one event per getppid call");
    let mut per_event: std::collections::HashMap<&str, Vec<&str>> = Default::default();
    for r in &records {
        if let Some(id) = event_id(r).filter(|id| syscalls.contains(id)) {
            per_event
                .entry(id)
                .or_default()
                .push(record_type(r).unwrap());
        }
    }
    for (id, types) in &per_event {
        assert_eq!(types, &["SYSCALL", "PROCTITLE", "EOE"], "event {id}");
    }
    assert!(d.stop().unwrap().success());
}

#[test]
fn a_killed_daemon_is_replaced_by_the_next_one() {
    let _lock = KernelAuditLock::acquire().expect("lock kernel audit");
    if let Err(why) = RealAuditd::available() {
        support::skip(&why);
        return;
    }
    let mut state = KernelState::save();
    let mut d = Dispatcher::new(MAIN);
    d.write_plugin("sink", &sink_plugin("sink", "", ""));
    d.start(Stdio::null()).unwrap();
    let mut first = KernelReader::start(&d, &["--daemon"], "audit_control");
    let never_others = format!("auid!={TEST_AUID}");
    state.add_rule(&["-a", "never,user", "-F", &never_others]);
    user_message("audisp-kernel-test before the crash");
    wait_sink_for(&d, &first, "audisp-kernel-test before the crash");
    first.crash();
    // The kernel still names the dead daemon until it tries to send to it;
    // registering tests the old connection and takes over.
    let mut second = KernelReader::start(&d, &["--daemon"], "audit_control");
    assert_eq!(KernelAudit::read().unwrap().pid, second.pid());
    user_message("audisp-kernel-test after the crash");
    wait_sink_for(&d, &second, "audisp-kernel-test after the crash");
    second.stop();
    let after = state.restore();
    assert_eq!(after.pid, 0, "the daemon role was given back");
    assert_eq!(after.differences_from(&state.before), Vec::<String>::new());
    let both = sink_texts(&d)
        .iter()
        .filter(|r| contains(r, b"audisp-kernel-test "))
        .count();
    assert_eq!(both, 2, "each marker once");
    assert!(d.stop().unwrap().success());
}
