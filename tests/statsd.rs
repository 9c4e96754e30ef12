//! audisp-statsd, started by the real audispd, reporting to a UDP listener
//! in the test:
//!
//! * reports go out at the interval also while no record arrives;
//! * after known events, the counters summed over the reports are exactly
//!   what auditd's audisp-statsd would count (events, failed, AVC,
//!   fanotify, logins, anomalies) and audispd's own counters moved by
//!   exactly the records fed, with nothing counted twice in later reports;
//! * with no statsd server listening, the plugin keeps taking every record.

mod support;

use std::collections::BTreeMap;
use std::io::Write;
use std::net::UdpSocket;
use std::os::unix::fs::PermissionsExt;
use std::process::Stdio;
use std::time::{Duration, Instant};

use support::dispatcher::Dispatcher;
use support::wait_until;

const STATSD: &str = env!("CARGO_BIN_EXE_audisp-statsd");

const MAIN: &str = r#"
[journal]
segment_size = "1M"
memory = "1M"
[shutdown]
timeout = "2s"
[stats]
interval = "0"
[events]
timeout = "1s"
"#;

/// Known events: (records, one per line).
const EVENTS: &[&str] = &[
    // A denied open: AVC, SYSCALL success=no, PROCTITLE.
    "type=AVC msg=audit(1700000000.100:101): avc:  denied  { read } for  pid=42 comm=\"cat\" name=\"shadow\" scontext=u:r:t:s0 tcontext=u:r:s:s0 tclass=file permissive=0\n\
     type=SYSCALL msg=audit(1700000000.100:101): arch=c000003e syscall=257 success=no exit=-13 a0=ffffff9c items=0 ppid=1 pid=42 auid=1000 uid=1000 comm=\"cat\" exe=\"/usr/bin/cat\" key=(null)\n\
     type=PROCTITLE msg=audit(1700000000.100:101): proctitle=636174002F6574632F736861646F77",
    "type=USER_LOGIN msg=audit(1700000000.200:102): pid=369 uid=0 auid=65534 ses=54 msg='op=login id=1001 exe=\"/usr/sbin/sshd\" hostname=2001:db8::5 addr=2001:db8::5 terminal=/dev/pts/1 res=success'",
    "type=USER_LOGIN msg=audit(1700000000.300:103): pid=369 uid=0 auid=65534 ses=54 msg='op=login acct=\"mallory\" exe=\"/usr/sbin/sshd\" hostname=? addr=198.51.100.7 terminal=sshd res=failed'",
    "type=USER_LOGIN msg=audit(1700000000.400:104): pid=369 uid=0 auid=65534 ses=54 msg='op=login acct=\"eve\" exe=\"/usr/sbin/sshd\" hostname=? addr=198.51.100.8 terminal=sshd res=failed'\u{1d}UID=\"root\" AUID=\"nobody\"",
    "type=ANOM_ABEND msg=audit(1700000000.500:105): auid=65534 uid=0 gid=0 ses=54 pid=366 comm=\"bash\" exe=\"/usr/bin/bash\" sig=11 res=1",
    "type=FANOTIFY msg=audit(1700000000.600:106): resp=2 fan_type=0 fan_info=0 subj_trust=2 obj_trust=2\n\
     type=SYSCALL msg=audit(1700000000.600:106): arch=c000003e syscall=257 success=yes exit=3 a0=ffffff9c items=1 ppid=1 pid=43 auid=1000 uid=1000 comm=\"cat\" exe=\"/usr/bin/cat\" key=(null)\n\
     type=PROCTITLE msg=audit(1700000000.600:106): proctitle=636174",
    "type=USER_CMD msg=audit(1700000000.700:107): pid=50 uid=1000 auid=1000 ses=3 msg='cwd=\"/\" cmd=6C73 exe=\"/usr/bin/sudo\" terminal=pts/0 res=success'",
];

/// What auditd's audisp-statsd counts for [`EVENTS`].
const EXPECTED: &[(&str, u64)] = &[
    ("t.events.total_count", 7),
    ("t.events.total_failed", 3),
    ("t.events.avc_count", 1),
    ("t.events.fanotify_count", 1),
    ("t.events.logins_success", 1),
    ("t.events.logins_failed", 2),
    ("t.events.anomaly_count", 1),
    ("t.events.response_count", 0),
];

/// Every record of [`EVENTS`], each ending in a newline.
fn records() -> (Vec<u8>, u64) {
    let mut data = Vec::new();
    let mut n = 0;
    for ev in EVENTS {
        for line in ev.lines() {
            data.extend_from_slice(line.trim_start().as_bytes());
            data.push(b'\n');
            n += 1;
        }
    }
    (data, n)
}

/// Every report line received: summed counters and last gauges.
#[derive(Debug, Default)]
struct Received {
    counters: BTreeMap<String, u64>,
    gauges: BTreeMap<String, u64>,
    reports: usize,
}

impl Received {
    /// Takes one datagram apart; every line must be `NAME:VALUE|c` or `|g`.
    fn take(&mut self, datagram: &[u8]) {
        let text = std::str::from_utf8(datagram).unwrap();
        assert!(datagram.len() <= 512, "{} bytes: {text}", datagram.len());
        for line in text.lines() {
            let (name, rest) = line.split_once(':').unwrap_or_else(|| panic!("{line:?}"));
            let (value, kind) = rest.split_once('|').unwrap_or_else(|| panic!("{line:?}"));
            let value: u64 = value.parse().unwrap_or_else(|_| panic!("{line:?}"));
            match kind {
                "c" => *self.counters.entry(name.to_string()).or_default() += value,
                "g" => {
                    self.gauges.insert(name.to_string(), value);
                }
                _ => panic!("{line:?}"),
            }
            if name.ends_with("events.total_count") {
                self.reports += 1;
            }
        }
    }

    fn counter(&self, name: &str) -> u64 {
        self.counters.get(name).copied().unwrap_or(0)
    }

    /// Receives datagrams until `done` says so (60 s at most).
    fn until(&mut self, udp: &UdpSocket, what: &str, done: impl Fn(&Received) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut buf = [0u8; 2048];
        while !done(self) {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}: {self:#?}"
            );
            if let Ok(n) = udp.recv(&mut buf) {
                self.take(&buf[..n]);
            }
        }
    }
}

/// Writes an option file as an admin would (mode 0644).
fn option_file(d: &Dispatcher, text: &str) -> std::path::PathBuf {
    let path = d.path().join("audisp-statsd.toml");
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    path
}

#[test]
fn reports_count_known_events_exactly_once() {
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let port = udp.local_addr().unwrap().port();
    let mut d = Dispatcher::new(MAIN);
    // Settings from a file alone, as installed.
    let config = option_file(
        &d,
        &format!("address = \"127.0.0.1\"\nport = {port}\ninterval = \"1s\"\nprefix = \"t\"\n"),
    );
    d.write_plugin(
        "statsd",
        &format!(
            "exec = [\"{STATSD}\", \"--config\", \"{}\"]\n",
            config.display()
        ),
    );
    d.start(Stdio::piped()).unwrap();
    let mut stdin = d.child.as_mut().unwrap().stdin.take().unwrap();

    // Reports come while nothing happens (and audispd's counters are the
    // plugin's starting point from then on).
    // (A report is whole once the next one starts.)
    let mut got = Received::default();
    got.until(&udp, "a first whole report", |r| r.reports >= 2);
    assert_eq!(got.counter("t.events.total_count"), 0, "{got:#?}");
    assert_eq!(
        got.gauges.get("t.audispd.plugin.statsd.connected"),
        Some(&1)
    );

    let (data, n) = records();
    stdin.write_all(&data).unwrap();
    got.until(&udp, "every event counted", |r| {
        r.counter("t.events.total_count") >= 7 && r.counter("t.audispd.plugin.statsd.acked") >= n
    });
    // Two more reports: nothing is counted again.
    let seen = got.reports;
    got.until(&udp, "two more reports", |r| r.reports >= seen + 2);
    for (name, want) in EXPECTED {
        assert_eq!(got.counter(name), *want, "{name}: {got:#?}");
    }
    assert_eq!(got.counter("t.audispd.records_in"), n, "{got:#?}");
    assert_eq!(got.counter("t.audispd.input.stdin.records"), n, "{got:#?}");
    assert_eq!(got.counter("t.audispd.plugin.statsd.acked"), n, "{got:#?}");
    assert_eq!(got.counter("t.audispd.records_lost"), 0, "{got:#?}");
    assert_eq!(got.counter("t.audispd.plugin.statsd.dropped_overflow"), 0);
    assert_eq!(got.gauges.get("t.audispd.plugin.statsd.queued"), Some(&0));
    assert_eq!(got.gauges.get("t.audispd.plugin_current_depth"), Some(&0));
    // (The journal also holds where events end.)
    assert!(got.gauges.get("t.audispd.journal_records") >= Some(&n));
    assert_eq!(d.plugin_state("statsd").get("acked"), n);
    drop(stdin);
    assert!(
        d.wait(Duration::from_secs(30)).unwrap().success(),
        "{}",
        d.log_tail(20)
    );
}

#[test]
fn without_a_statsd_server_every_record_is_still_taken() {
    // A port nobody listens on (closed again at once): each report gets
    // an ICMP refusal.
    let port = UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut d = Dispatcher::new(MAIN);
    d.write_plugin(
        "statsd",
        &format!(
            "exec = [\"{STATSD}\", \"--no-config\", \"--address\", \"127.0.0.1\", \"--port\", \"{port}\", \"--interval\", \"1s\"]\n"
        ),
    );
    d.start(Stdio::piped()).unwrap();
    let mut stdin = d.child.as_mut().unwrap().stdin.take().unwrap();
    let data = support::dispatcher::sample();
    let total = support::dispatcher::lines(&data).len() as u64;
    stdin.write_all(&data).unwrap();
    wait_until(
        Duration::from_secs(60),
        "the plugin to take every record",
        // (In events mode a lone EOE is not delivered: what counts is
        // that nothing waits for the plugin.)
        || {
            d.input_state("stdin").get("records") == total
                && d.plugin_state("statsd").get("queued") == 0
        },
    );
    // Reports went on failing for a while; the plugin said so once and
    // stayed up.
    d.wait_log(
        "audisp-statsd: sending: Connection refused",
        Duration::from_secs(10),
    );
    let s = d.plugin_state("statsd");
    assert_eq!(
        (s.state.as_str(), s.get("restarts"), s.get("dropped")),
        ("connected", 0, 0),
        "{s:?}"
    );
    assert_eq!(
        d.log().matches("audisp-statsd: sending:").count(),
        1,
        "{}",
        d.log_tail(20)
    );
    drop(stdin);
    assert!(d.wait(Duration::from_secs(30)).unwrap().success());
}
