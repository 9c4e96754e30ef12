//! audisp-alert through a real audispd fed `tests/data/sample.log`, with a
//! private dbus-daemon running the shipped policy and a datagram socket
//! standing in for journald's native socket:
//!
//! * a subscriber gets exactly one `Match` signal per matching event, with
//!   the rule's name, the event id (`audit(SECS.MSEC:SERIAL)`) and the
//!   summary filled from the event;
//! * each of them is one journal entry with the alert `MESSAGE_ID`, the
//!   rule, the event id and the event's fields;
//! * a rate-limited rule announces at most its limit per window; the count
//!   of the matches it held back goes with its next `Match` and, when the
//!   plugin stops, to the journal, so that every match is accounted for;
//! * a bad rule expression is reported by `--check-config` as
//!   `FILE:LINE:COLUMN`;
//! * with a real systemd-journald (private, `tests/support/journald-ns.sh`,
//!   the test re-running itself inside that namespace), the entries are in
//!   the journal as `journalctl MESSAGE_ID=…` shows them, one per match.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use support::dbus::{unavailable, Bus};
use support::dispatcher::{feed, sample, sample_shifted, Dispatcher};

const ALERT: &str = env!("CARGO_BIN_EXE_audisp-alert");
const MATCH_ID: &str = "70580dcfad5a40a58c6443292dfd42fe";

/// One `Match` signal: rule, event, summary, suppressed.
type Match = (String, String, String, u64);
/// One journal entry: every field's values.
type JournalEntry = BTreeMap<String, Vec<String>>;

/// Writes an option file as an admin would (mode 0644).
fn option_file(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("audisp-alert.toml");
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    path
}

/// Parses one datagram of journald's native protocol.
fn parse_entry(mut d: &[u8]) -> JournalEntry {
    let mut e = JournalEntry::new();
    while !d.is_empty() {
        let nl = d.iter().position(|&b| b == b'\n').expect("field ends");
        let line = &d[..nl];
        let (name, value, rest) = match line.iter().position(|&b| b == b'=') {
            Some(eq) => (&line[..eq], line[eq + 1..].to_vec(), &d[nl + 1..]),
            None => {
                let after = &d[nl + 1..];
                let len = u64::from_le_bytes(after[..8].try_into().unwrap()) as usize;
                let value = after[8..8 + len].to_vec();
                assert_eq!(after[8 + len], b'\n', "binary field ends in a newline");
                (line, value, &after[9 + len..])
            }
        };
        e.entry(String::from_utf8(name.to_vec()).unwrap())
            .or_default()
            .push(String::from_utf8_lossy(&value).into_owned());
        d = rest;
    }
    e
}

/// Every datagram sent to `sock`, parsed, on a channel.
fn journal_listener(sock: UnixDatagram) -> mpsc::Receiver<JournalEntry> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 1 << 20];
        while let Ok(n) = sock.recv(&mut buf) {
            if tx.send(parse_entry(&buf[..n])).is_err() {
                return;
            }
        }
    });
    rx
}

/// Every `Match` signal on the bus at `address`, on a channel; subscribed
/// when this returns.
fn match_listener(address: &str) -> mpsc::Receiver<Match> {
    let conn = zbus::blocking::connection::Builder::address(address)
        .unwrap()
        .build()
        .unwrap();
    let rule = zbus::MatchRule::builder()
        .msg_type(zbus::message::Type::Signal)
        .sender("org.audisp.Dispatcher1")
        .unwrap()
        .interface("org.audisp.Dispatcher1")
        .unwrap()
        .member("Match")
        .unwrap()
        .build();
    let messages = zbus::blocking::MessageIterator::for_match_rule(rule, &conn, Some(4096))
        .expect("match rule");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _conn = conn;
        for m in messages {
            let Ok(m) = m else { return };
            let body: Match = m.body().deserialize().expect("Match arguments");
            if tx.send(body).is_err() {
                return;
            }
        }
    });
    rx
}

/// Receives `n` items from `rx` (60 s at most for all).
fn take<T>(rx: &mpsc::Receiver<T>, n: usize, what: &str) -> Vec<T> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut got = Vec::new();
    while got.len() < n {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(x) => got.push(x),
            Err(_) => panic!("{what}: {} of {n} within 60 s", got.len()),
        }
    }
    got
}

/// The distinct event ids (`audit(…)`) of the records of type `rtype` in
/// `data`, in order.
fn event_ids(data: &[u8], rtype: &str) -> Vec<String> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for line in String::from_utf8_lossy(data).lines() {
        if !line.split(' ').any(|w| w == format!("type={rtype}")) {
            continue;
        }
        let start = line.find("msg=audit(").unwrap() + 4;
        let end = start + line[start..].find(')').unwrap() + 1;
        let id = line[start..end].to_string();
        if seen.insert(id.clone()) {
            out.push(id);
        }
    }
    out
}

#[test]
fn matches_reach_a_subscriber_and_the_journal_once_each_within_limits() {
    if let Some(why) = unavailable() {
        support::skip(&why);
        return;
    }
    let bus = Bus::start();
    let mut d = Dispatcher::new(&format!(
        "[dbus]\nenabled = true\naddress = \"{}\"\n[dbus.setroubleshoot]\nenabled = false\n[shutdown]\ntimeout = \"10s\"\n[events]\ntimeout = \"1s\"\n",
        bus.address
    ));
    let journal_path = d.path().join("journal.sock");
    let journal = journal_listener(UnixDatagram::bind(&journal_path).unwrap());
    let config = option_file(
        d.path(),
        "[rule.config-change]\n\
         filter = 'type r= CONFIG_CHANGE'\n\
         summary = \"{op} by auid {auid} ({AUID}), key {key}: {types}\"\n\
         limit = 1000\n\
         [rule.exec]\n\
         filter = 'type r= EXECVE'\n\
         limit = 3\n\
         per = \"3s\"\n",
    );
    d.write_plugin(
        "alert",
        &format!(
            "exec = [\"{ALERT}\", \"--config\", \"{}\", \"--journal-socket\", \"{}\"]\nmode = \"events\"\n",
            config.display(),
            journal_path.display()
        ),
    );
    d.start(Stdio::piped()).unwrap();
    let matches = match_listener(&bus.address);
    let mut stdin = d.child.as_mut().unwrap().stdin.take().unwrap();

    // Phase 1: the sample. Every CONFIG_CHANGE event gives one Match; the
    // EXECVE events give at most 3 per 3 s window.
    let data = sample();
    let config_ids = event_ids(&data, "CONFIG_CHANGE");
    let exec_ids = event_ids(&data, "EXECVE");
    assert_eq!(config_ids.len(), 10);
    assert!(exec_ids.len() > 100, "{}", exec_ids.len());
    stdin.write_all(&data).unwrap();
    stdin.flush().unwrap();
    let mut got = take(
        &matches,
        config_ids.len() + 3,
        "Match signals of the sample",
    );
    // The sample's events take far less than the 3 s window to go through:
    // no more EXECVE matches are announced.
    assert!(
        matches.recv_timeout(Duration::from_secs(1)).is_err(),
        "only 3 exec matches per window"
    );
    let config: Vec<&Match> = got.iter().filter(|m| m.0 == "config-change").collect();
    let config_events: Vec<&str> = config.iter().map(|m| m.1.as_str()).collect();
    assert_eq!(config_events, config_ids, "one Match per event, in order");
    assert!(config.iter().all(|m| m.3 == 0));
    // The summary is filled from the event: the first CONFIG_CHANGE is
    // `op=set … auid=4294967295 … AUID="unset"`, with a SYSCALL and a
    // PROCTITLE record.
    assert_eq!(
        config[0].2, "set by auid 4294967295 (unset), key ?: CONFIG_CHANGE SYSCALL PROCTITLE",
        "{config:?}"
    );
    let exec: Vec<&Match> = got.iter().filter(|m| m.0 == "exec").collect();
    assert_eq!(exec.len(), 3, "{got:?}");
    assert!(exec.iter().all(|m| m.3 == 0 && exec_ids.contains(&m.1)));

    // Each Match is one journal entry with the alert MESSAGE_ID, the rule,
    // the event id and the event's fields.
    let entries = take(&journal, got.len(), "journal entries of the sample");
    for (m, e) in got.iter().zip(&entries) {
        assert_eq!(e["MESSAGE_ID"], [MATCH_ID]);
        assert_eq!(e["SYSLOG_IDENTIFIER"], ["audisp-alert"]);
        assert_eq!(e["AUDISP_RULE"], std::slice::from_ref(&m.0));
        assert_eq!(e["AUDISP_EVENT"], std::slice::from_ref(&m.1));
        assert_eq!(e["AUDISP_SUMMARY"], std::slice::from_ref(&m.2));
        assert_eq!(e["AUDISP_SUPPRESSED"], [m.3.to_string()]);
        let id = m.1.trim_start_matches("audit(").trim_end_matches(')');
        assert_eq!(e["AUDIT_ID"], [id.to_string()]);
        let fields = e.keys().filter(|k| k.starts_with("AUDIT_FIELD_")).count();
        assert!(fields > 0 && fields <= 64, "{e:?}");
    }
    let first = entries
        .iter()
        .find(|e| e["AUDISP_EVENT"] == [config_ids[0].clone()])
        .unwrap();
    assert_eq!(first["AUDIT_FIELD_OP"], ["set"]);
    assert_eq!(first["AUDIT_FIELD_AUDIT_BACKLOG_LIMIT"], ["8192"]);
    assert_eq!(first["AUDIT_ENRICHED_AUID"][0], "unset");
    assert_eq!(
        first["AUDIT_TYPE_NAME"],
        ["CONFIG_CHANGE", "SYSCALL", "PROCTITLE"]
    );

    // Phase 2, once the window is over: the sample again (time stamps
    // moved). The first exec Match carries the count held back so far.
    std::thread::sleep(Duration::from_millis(3100));
    stdin.write_all(&sample_shifted(1)).unwrap();
    stdin.flush().unwrap();
    let more = take(&matches, config_ids.len() + 3, "Match signals of phase 2");
    let exec2: Vec<&Match> = more.iter().filter(|m| m.0 == "exec").collect();
    assert_eq!(exec2.len(), 3, "{more:?}");
    assert_eq!(exec2[0].3, (exec_ids.len() - 3) as u64, "{exec2:?}");
    got.extend(more);
    take(&journal, config_ids.len() + 3, "journal entries of phase 2");

    // The end: what is still held back goes to the journal, and every
    // exec match is accounted for exactly once.
    drop(stdin);
    assert!(d.wait(Duration::from_secs(60)).unwrap().success());
    let end = take(&journal, 1, "the suppressed count at the end");
    assert_eq!(end[0]["MESSAGE_ID"], [MATCH_ID]);
    assert_eq!(end[0]["AUDISP_RULE"], ["exec"]);
    assert!(!end[0].contains_key("AUDISP_EVENT"));
    let held: u64 = end[0]["AUDISP_SUPPRESSED"][0].parse().unwrap();
    let announced: u64 = got.iter().filter(|m| m.0 == "exec").map(|m| 1 + m.3).sum();
    assert_eq!(announced + held, 2 * exec_ids.len() as u64);
    assert!(journal.recv_timeout(Duration::from_millis(500)).is_err());
}

#[test]
fn a_bad_rule_is_reported_at_its_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let config = option_file(
        dir.path(),
        "[rule.ok]\nfilter = 'type r= AVC'\n\n[rule.broken]\nfilter = 'type r= AVC && (auid >= 1000'\nlimit = 0\n",
    );
    let out = Command::new(ALERT)
        .args(["--check-config", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    let file = config.display().to_string();
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(
        lines,
        [
            format!("audisp-alert: {file}:5:39: filter: expected ')' to close the '(' at column 16, found the end of the expression"),
            format!("audisp-alert: {file}:6: limit = 0 must be at least 1"),
            "audisp-alert: not started: correct the option file".to_string(),
        ],
        "{err}"
    );
}

const INSIDE: &str = "AUDISP_TEST_IN_JOURNALD_NS";

#[test]
fn entries_reach_a_real_journald() {
    if std::env::var_os(INSIDE).is_some() {
        journald_inside_namespace();
        return;
    }
    if let Some(why) = support::missing_root_or_tools(
        "unshare --mount --pid, a private systemd-journald",
        support::JOURNALD_TOOLS,
    ) {
        support::skip(&why);
        return;
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/journald-ns.sh");
    let status = Command::new("unshare")
        .args([
            "--mount",
            "--pid",
            "--fork",
            "--mount-proc",
            "--propagation",
            "private",
            "sh",
        ])
        .arg(&script)
        .arg(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "entries_reach_a_real_journald",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(INSIDE, "1")
        .status()
        .expect("unshare");
    assert!(status.success(), "the test inside the namespace failed");
}

/// Inside the namespace: the AVC samples through audispd into
/// audisp-alert (no bus: the notices go nowhere), then the journal read
/// back.
fn journald_inside_namespace() {
    assert!(
        Path::new("/run/systemd/journal/socket").exists(),
        "journald's socket (run through tests/support/journald-ns.sh)"
    );
    let data =
        std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/avc-samples.log"))
            .unwrap();
    // Each AVC event's id and node; the one written with `host=` instead
    // of `node=` has a header audisp cannot read, so `type r= AVC` does not
    // match it.
    let mut nodes = BTreeMap::new();
    for line in String::from_utf8_lossy(&data).lines() {
        let Some((head, _)) = line.split_once("type=AVC msg=audit(") else {
            continue;
        };
        if head.starts_with("host=") {
            continue;
        }
        let id = &line[line.find("msg=audit(").unwrap() + 4..];
        let id = id[..=id.find(')').unwrap()].to_string();
        let node = head.strip_prefix("node=").map(|n| n.trim().to_string());
        nodes.insert(id, node);
    }
    assert!(nodes.len() > 5, "{nodes:?}");
    let mut d = Dispatcher::new("[shutdown]\ntimeout = \"30s\"\n[events]\ntimeout = \"1s\"\n");
    let config = option_file(
        d.path(),
        "[rule.avc]\nfilter = 'type r= AVC'\nsummary = \"{seresult} {seperms} for {comm}\"\nlimit = 1000\n",
    );
    // As installed: journald's default socket.
    d.write_plugin(
        "alert",
        &format!(
            "exec = [\"{ALERT}\", \"--config\", \"{}\"]\nmode = \"events\"\n",
            config.display()
        ),
    );
    d.start(Stdio::piped()).unwrap();
    let stdin = d.child.as_mut().unwrap().stdin.take().unwrap();
    feed(stdin, data).join().unwrap();
    let status = d.wait(Duration::from_secs(120)).unwrap();
    assert!(status.success(), "audispd: {status}\n{}", d.log_tail(40));
    assert!(Command::new("journalctl")
        .arg("--sync")
        .status()
        .unwrap()
        .success());
    let out = Command::new("journalctl")
        .args([
            "--directory",
            "/run/log/journal",
            "--no-pager",
            "--all",
            "-o",
            "json",
        ])
        .arg(format!("MESSAGE_ID={MATCH_ID}"))
        .output()
        .expect("journalctl");
    assert!(out.status.success());
    let entries: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("journalctl JSON"))
        .collect();
    // One entry per AVC event (in the order the events ended).
    let mut events: Vec<&str> = entries
        .iter()
        .map(|e| e["AUDISP_EVENT"].as_str().unwrap())
        .collect();
    events.sort();
    assert_eq!(events, nodes.keys().map(String::as_str).collect::<Vec<_>>());
    for e in &entries {
        assert_eq!(e["AUDISP_RULE"], "avc");
        assert_eq!(e["SYSLOG_IDENTIFIER"], "audisp-alert");
        assert_eq!(e["PRIORITY"], "4");
        let node = &nodes[e["AUDISP_EVENT"].as_str().unwrap()];
        assert_eq!(e["AUDIT_NODE"].as_str(), node.as_deref(), "{e}");
        assert!(
            e["AUDISP_SUMMARY"].as_str().unwrap().starts_with("denied "),
            "{e}"
        );
        assert!(!e["AUDIT_FIELD_TCLASS"].is_null(), "{e}");
    }
}
