//! Proves the real-auditd harness (`tests/support/auditd.rs`): Debian's auditd, started privately,
//! hands every record it logs (plus the EOE records it does not log) to string and binary
//! plugins, the kernel loses nothing, and kernel audit is left exactly as found.
//!
//! These tests need root and kernel audit. Without them they print why and return; CI runs them
//! as root, so there they run.

mod support;

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::panic;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use support::auditd::{
    event_id, is_dispatched_only, read_lines, record_type, AuditdOptions, Framing, KernelAudit,
    LogFormat, Plugin, PluginFormat, RealAuditd, DD_WRITES, RULE_KEY, TEST_AUID,
};

/// Numeric record types the tests check binary frame headers against.
const TYPE_NUMBERS: &[(&str, u32)] = &[
    ("USER", 1005),
    ("LOGIN", 1006),
    ("DAEMON_START", 1200),
    ("DAEMON_END", 1201),
    ("SYSCALL", 1300),
    ("CONFIG_CHANGE", 1305),
    ("SOCKADDR", 1306),
    ("EOE", 1320),
    ("PROCTITLE", 1327),
];

fn skip_reason() -> Option<String> {
    RealAuditd::available_when_idle().err()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Position of the record carrying `marker` in `records`.
fn marker_position(records: &[Vec<u8>], marker: &str, what: &str) -> usize {
    records
        .iter()
        .position(|r| contains(r, marker.as_bytes()))
        .unwrap_or_else(|| panic!("sync marker {marker:?} missing from {what}"))
}

/// Asserts the EOE rule of the plugin stream: every event that has a SYSCALL record is followed
/// by exactly one EOE record with its id, after all of its other records, and no other event has
/// one. Returns the number of EOE records.
fn assert_eoe_marks_syscall_events(stream: &[Vec<u8>]) -> usize {
    let mut with_syscall: HashMap<&str, usize> = HashMap::new();
    let mut last_record: HashMap<&str, usize> = HashMap::new();
    let mut eoe_at: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, record) in stream.iter().enumerate() {
        let id = event_id(record).expect("every record has an event id");
        match record_type(record) {
            Some("EOE") => eoe_at.entry(id).or_default().push(i),
            Some("SYSCALL") => {
                with_syscall.insert(id, i);
                last_record.insert(id, i);
            }
            Some(_) => {
                last_record.insert(id, i);
            }
            None => panic!("record without type: {}", String::from_utf8_lossy(record)),
        }
    }
    for (id, positions) in &eoe_at {
        assert_eq!(
            positions.len(),
            1,
            "event {id} has {} EOE records",
            positions.len()
        );
        assert!(
            with_syscall.contains_key(id),
            "EOE for event {id}, which has no SYSCALL record"
        );
        assert!(
            positions[0] > last_record[id],
            "EOE of event {id} arrives before the event's last record"
        );
    }
    // The last events may be cut off by shutdown (auditd drops what is queued); all but those
    // must be complete.
    let last_eoe = eoe_at.values().map(|p| p[0]).max().unwrap_or(0);
    for (id, at) in &with_syscall {
        if *at < last_eoe {
            assert!(
                eoe_at.contains_key(id),
                "event {id} has a SYSCALL record but no EOE"
            );
        }
    }
    eoe_at.len()
}

#[test]
fn string_and_binary_plugins_receive_every_logged_record_plus_eoe() {
    if let Some(why) = skip_reason() {
        support::skip(&why);
        return;
    }
    let mut auditd = RealAuditd::start(AuditdOptions {
        log_format: LogFormat::Enriched,
        plugins: vec![
            Plugin::capture("string", PluginFormat::String),
            Plugin::capture("binary", PluginFormat::Binary),
        ],
        ..AuditdOptions::default()
    })
    .expect("start auditd");
    assert_eq!(
        auditd.framing().expect("framing"),
        Framing::for_version(auditd.version()).expect("version")
    );
    assert!(auditd.pid().is_some());
    assert!(auditd.dir().join("auditd.conf").is_file());
    assert_eq!(auditd.kernel_before().pid, 0);

    // dd opens of= on fd 1 and copies one byte per read/write: exactly DD_WRITES write(1, …) calls.
    auditd
        .record_syscalls(&["write"], &["-F", "a0=1"])
        .expect("add rule");
    let started = Instant::now();
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
        .send_user_message("harness test: quotes ' and \" pass through")
        .expect("user message");
    let marker = auditd.sync_captures().expect("plugins receive the marker");
    let elapsed = started.elapsed();
    let report = auditd.stop().expect("stop restores kernel audit");

    assert!(
        report.auditd_exit.success(),
        "auditd exit: {}",
        report.auditd_exit
    );
    assert_eq!(report.kernel_after.pid, 0);
    assert_eq!(
        report.kernel_after.differences_from(&report.kernel_before),
        Vec::<String>::new()
    );
    assert_eq!(report.lost_during_run(), 0, "the kernel lost records");

    let log = auditd.log_lines().expect("log");
    let string = auditd.capture_lines("string").expect("string capture");
    let frames = auditd.capture_frames("binary").expect("binary capture");

    // Everything auditd logged up to the marker reached the string plugin, in the same order,
    // and the plugin received nothing else except EOE records.
    let logged_up_to_marker = marker_position(&log, &marker, "audit.log") + 1;
    let string_without_eoe: Vec<&Vec<u8>> =
        string.iter().filter(|r| !is_dispatched_only(r)).collect();
    assert!(string_without_eoe.len() >= logged_up_to_marker);
    assert!(string_without_eoe.len() <= log.len());
    for (i, (got, logged)) in string_without_eoe.iter().zip(&log).enumerate() {
        assert_eq!(
            *got,
            logged,
            "record {i} differs:\nplugin: {}\nlog:    {}",
            String::from_utf8_lossy(got),
            String::from_utf8_lossy(logged)
        );
    }
    assert!(
        log.iter().all(|r| !is_dispatched_only(r)),
        "auditd logged an EOE record"
    );

    let writes = log
        .iter()
        .filter(|r| {
            record_type(r) == Some("SYSCALL")
                && contains(r, format!("key=\"{RULE_KEY}\"").as_bytes())
        })
        .filter(|r| contains(r, b" syscall=1 ") || contains(r, b"SYSCALL=write"))
        .count();
    assert_eq!(writes, DD_WRITES, "dd's write events");
    let auid = format!(" auid={TEST_AUID} ");
    assert!(log
        .iter()
        .filter(|r| record_type(r) == Some("SYSCALL") && contains(r, RULE_KEY.as_bytes()))
        .all(|r| contains(r, auid.as_bytes())));
    // ENRICHED: interpreted fields follow a 0x1D separator in both the log and the stream.
    assert!(string
        .iter()
        .filter(|r| record_type(r) == Some("SYSCALL"))
        .all(|r| r.contains(&0x1D)));
    assert!(
        string
            .iter()
            .any(|r| record_type(r) == Some("USER") && contains(r, b"quotes ' and \" pass")),
        "the USER record with quotes reached the plugin verbatim"
    );

    let eoe = assert_eoe_marks_syscall_events(&string);
    assert!(
        eoe >= DD_WRITES,
        "only {eoe} EOE records for {DD_WRITES} syscall events"
    );

    // The binary plugin got the same records: V1 frames whose payload is the string line.
    let framed_up_to_marker = marker_position(&string, &marker, "string capture") + 1;
    assert!(
        frames.len() >= framed_up_to_marker,
        "binary plugin got {} frames",
        frames.len()
    );
    let numbers: HashMap<&str, u32> = TYPE_NUMBERS.iter().copied().collect();
    for (i, (frame, line)) in frames.iter().zip(&string).enumerate() {
        assert_eq!(
            (frame.version, frame.header_len),
            (1, 16),
            "frame {i} header"
        );
        assert_eq!(&frame.payload, line, "frame {i} payload");
        if let Some(number) = record_type(line).and_then(|name| numbers.get(name)) {
            assert_eq!(frame.record_type, *number, "frame {i} type");
        }
    }

    let records = string.len() as f64;
    eprintln!(
        "{} records ({} logged, {eoe} EOE) for {DD_WRITES} events in {elapsed:?}: {:.0} records/s",
        string.len(),
        log.len(),
        records / elapsed.as_secs_f64()
    );
}

#[test]
fn raw_format_reaches_a_test_supplied_plugin_program() {
    if let Some(why) = skip_reason() {
        support::skip(&why);
        return;
    }
    // A plugin program supplied by the test itself: auditd wants it root-owned, 0750 at least,
    // and not writable by others.
    let own = tempfile::Builder::new()
        .prefix("audisp-plugin.")
        .tempdir()
        .expect("tempdir");
    let program = own.path().join("copy-stdin");
    fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/capture-plugin.sh"),
        &program,
    )
    .expect("copy plugin");
    fs::set_permissions(&program, fs::Permissions::from_mode(0o750)).expect("chmod");
    let out = own.path().join("raw-string.out");
    let out_arg = out.display().to_string();

    let mut auditd = RealAuditd::start(AuditdOptions {
        log_format: LogFormat::Raw,
        backlog_limit: None,
        plugins: vec![
            Plugin::executable("own", PluginFormat::String, &program, &[&out_arg]),
            Plugin::capture("binary", PluginFormat::Binary),
        ],
        ..AuditdOptions::default()
    })
    .expect("start auditd");
    let auid = format!("auid={TEST_AUID}");
    auditd
        .add_rule(&[
            "-a",
            "always,exit",
            "-F",
            "arch=b64",
            "-S",
            "write",
            "-F",
            "a0=1",
            "-F",
            &auid,
            "-k",
            RULE_KEY,
        ])
        .expect("add rule");
    let refusal = RealAuditd::available().expect_err("a second auditd must be refused");
    assert!(refusal.contains("owns kernel audit"), "{refusal}");
    assert!(
        auditd
            .add_rule(&["-a", "always,exit", "-F", "arch=b64", "-S", "write"])
            .is_err(),
        "a rule that would record other processes must be refused"
    );
    let status = auditd
        .workload("dd")
        .args([
            "if=/dev/zero",
            "of=/dev/null",
            "bs=1",
            "count=1000",
            "status=none",
        ])
        .status()
        .expect("run dd");
    assert!(status.success());
    let marker = auditd.sync_captures().expect("sync");
    let own_done = out.clone();
    support::try_wait_until(
        Duration::from_secs(60),
        "the test's plugin to receive the marker",
        || {
            let part = format!("{}.part", own_done.display());
            Ok(fs::read(&part)
                .or_else(|_| fs::read(&own_done))
                .map(|b| contains(&b, marker.as_bytes()))
                .unwrap_or(false))
        },
    )
    .expect("own plugin receives the marker");
    let report = auditd.stop().expect("stop");
    assert_eq!(report.lost_during_run(), 0);
    assert_eq!(
        report.kernel_after.differences_from(&report.kernel_before),
        Vec::<String>::new()
    );
    support::try_wait_until(
        Duration::from_secs(15),
        "the test's plugin to finish",
        || Ok(out.exists()),
    )
    .expect("own plugin exits");

    let log = auditd.log_lines().expect("log");
    let string = read_lines(&out).expect("own capture");
    let frames = auditd.capture_frames("binary").expect("binary capture");
    assert!(
        log.iter().all(|r| !r.contains(&0x1D)),
        "RAW log has no enrichment"
    );

    // V0 string records are "type=NAME msg=" + the kernel's text; the log trims one trailing
    // space the kernel may leave, so compare without trailing spaces.
    let trim = |r: &[u8]| -> Vec<u8> { r.strip_suffix(b" ").unwrap_or(r).to_vec() };
    let up_to_marker = marker_position(&log, &marker, "audit.log") + 1;
    let string_without_eoe: Vec<Vec<u8>> = string
        .iter()
        .filter(|r| !is_dispatched_only(r))
        .map(|r| trim(r))
        .collect();
    assert!(string_without_eoe.len() >= up_to_marker);
    for (i, (got, logged)) in string_without_eoe.iter().zip(&log).enumerate() {
        assert_eq!(got, &trim(logged), "record {i}");
    }
    assert!(assert_eoe_marks_syscall_events(&string) >= 1000);

    // Binary V0 frames carry the raw kernel payload: "audit(…): fields", no "type=" prefix.
    assert!(frames.len() > marker_position(&string, &marker, "own capture"));
    let numbers: HashMap<&str, u32> = TYPE_NUMBERS.iter().copied().collect();
    for (i, (frame, line)) in frames.iter().zip(&string).enumerate() {
        let name = record_type(line).expect("type");
        assert_eq!(frame.version, 0, "frame {i} must be protocol V0");
        assert_eq!(
            format!("type={name} msg=")
                .into_bytes()
                .into_iter()
                .chain(frame.payload.iter().copied())
                .collect::<Vec<u8>>(),
            *line,
            "frame {i}"
        );
        if let Some(number) = numbers.get(name) {
            assert_eq!(frame.record_type, *number, "frame {i} type");
        }
    }
}

#[test]
fn a_panicking_test_still_restores_kernel_audit_and_keeps_its_files() {
    if let Some(why) = skip_reason() {
        support::skip(&why);
        return;
    }
    let before = KernelAudit::read().expect("kernel state");
    let dir = Mutex::new(None);
    let outcome = panic::catch_unwind(|| {
        let mut auditd = RealAuditd::start(AuditdOptions {
            plugins: vec![Plugin::capture("string", PluginFormat::String)],
            ..AuditdOptions::default()
        })
        .expect("start auditd");
        auditd
            .record_syscalls(&["write"], &["-F", "a0=1"])
            .expect("add rule");
        *dir.lock().expect("lock") = Some(auditd.dir().to_owned());
        assert_ne!(
            KernelAudit::read().expect("kernel state").rules,
            before.rules
        );
        panic!("simulated test failure while auditd runs");
    });
    assert!(outcome.is_err());
    let after = KernelAudit::read().expect("kernel state");
    assert_eq!(after.differences_from(&before), Vec::<String>::new());
    assert_eq!(after.pid, 0);
    let dir = dir.into_inner().expect("lock").expect("auditd started");
    assert!(
        dir.join("audit.log").is_file(),
        "a failing test keeps auditd's files"
    );
    fs::remove_dir_all(&dir).expect("remove kept directory");
}

#[test]
fn record_helpers_and_framing_rules() {
    let line = b"node=h1 type=SYSCALL msg=audit(1700000000.123:42): arch=c000003e syscall=1\x1dARCH=x86_64";
    assert_eq!(record_type(line), Some("SYSCALL"));
    assert_eq!(event_id(line), Some("1700000000.123:42"));
    assert!(!is_dispatched_only(line));
    assert!(is_dispatched_only(
        b"type=EOE msg=audit(1700000000.123:42): "
    ));
    assert_eq!(Framing::for_version("3.0.9"), Ok(Framing::Padded));
    assert_eq!(Framing::for_version("4.1.0"), Ok(Framing::Padded));
    assert_eq!(Framing::for_version("4.1.1"), Ok(Framing::Exact));
    assert_eq!(Framing::for_version("4.2"), Ok(Framing::Exact));
    assert!(Framing::for_version("x.y").is_err());
}
