//! The metrics endpoint, through the real audispd under systemd's own
//! `systemd-socket-activate` passing the socket by name (`metrics`), read
//! by a real parser (prometheus_client's, the Prometheus text and the
//! strict OpenMetrics one):
//!
//! * after known records, every counter the state report has is on the
//!   endpoint with the same value — records per input, per plugin
//!   delivered/acked/queued/spooled/dropped by reason/reconnects, journal
//!   range and bytes — along with the process's own figures; every metric
//!   is documented in docs/audispd.8.md;
//! * slow, garbage and oversized requests, kept coming the whole time, do
//!   not stall a single record, and a scrape meanwhile is still answered;
//! * the socket is found by its name, not its position; a socket of the
//!   wrong kind stops audispd with the reason.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use support::dispatcher::{lines, sample, sink_plugin, state_line, texts, wait_sink, Dispatcher};
use support::metrics::{parse, Parsed};
use support::{try_wait_until, wait_until};

const ACTIVATE: &str = "systemd-socket-activate";

const MAIN: &str = r#"
[journal]
segment_size = "1M"
memory = "1M"
[shutdown]
timeout = "2s"
[stats]
interval = "0"
"#;

/// Why this test cannot run here, if it cannot.
fn missing_tools() -> Option<String> {
    if Command::new(ACTIVATE)
        .arg("--help")
        .stdout(Stdio::null())
        .status()
        .is_err()
    {
        return Some(format!(
            "{ACTIVATE} not installed (apt-get install systemd)"
        ));
    }
    support::metrics::missing_parser()
}

/// A loopback port nothing listens on now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Where the endpoint listens.
#[derive(Clone)]
enum Endpoint {
    Tcp(u16),
    Unix(PathBuf),
}

impl Endpoint {
    fn connect(&self) -> std::io::Result<Box<dyn ReadWrite>> {
        Ok(match self {
            Endpoint::Tcp(port) => Box::new(TcpStream::connect(("127.0.0.1", *port))?),
            Endpoint::Unix(path) => Box::new(UnixStream::connect(path)?),
        })
    }

    /// Sends `request` and reads the whole answer: (status, headers, body).
    fn ask(&self, request: &str) -> (u16, String, String) {
        let mut c = self.connect().expect("connect to the metrics endpoint");
        c.write_all(request.as_bytes()).unwrap();
        let mut answer = String::new();
        c.read_to_string(&mut answer).unwrap();
        let (head, body) = answer
            .split_once("\r\n\r\n")
            .unwrap_or_else(|| panic!("no head in {answer:?}"));
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no status in {head:?}"));
        (status, head.to_string(), body.to_string())
    }

    /// `GET /metrics` accepting `accept`; the body, after checking the
    /// answer is a 200 of `content_type`.
    fn scrape(&self, accept: &str, content_type: &str) -> String {
        let (status, head, body) = self.ask(&format!(
            "GET /metrics HTTP/1.1\r\nHost: localhost\r\nAccept: {accept}\r\nUser-Agent: audisp-test\r\n\r\n"
        ));
        assert_eq!(status, 200, "{head}\n{body}");
        assert!(
            head.contains(&format!("\r\nContent-Type: {content_type}\r\n")),
            "{head}"
        );
        body
    }
}

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

/// Starts audispd under systemd-socket-activate, listening on `listen`
/// (`-l` arguments) with names `names`, standard input a pipe for the test.
fn activated(d: &mut Dispatcher, listen: &[String], names: &str, extra: &[&str]) -> ChildStdin {
    let mut cmd = Command::new(ACTIVATE);
    for l in listen {
        cmd.arg("-l").arg(l);
    }
    cmd.args(extra)
        .arg(format!("--fdname={names}"))
        .arg(format!(
            "--setenv=NOTIFY_SOCKET={}",
            d.notify.path().display()
        ))
        .arg("--setenv=AUDISP_LOG=info")
        .arg(env!("CARGO_BIN_EXE_audispd"))
        .args(d.args());
    d.spawn(cmd, Stdio::piped()).unwrap();
    d.child.as_mut().unwrap().stdin.take().unwrap()
}

/// Clients that misbehave, again and again, until stopped: connections
/// that send half a request and wait, garbage, requests far over the size
/// limit, and a request whose answer is never read.
fn hostile(endpoint: Endpoint, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let mut slow: Vec<Box<dyn ReadWrite>> = Vec::new();
        let mut made = 0u64;
        while !stop.load(Ordering::Relaxed) {
            // Keep 24 half-requests open (the server holds 16 at most).
            slow.retain_mut(|c| c.write_all(b"X").is_ok());
            while slow.len() < 24 {
                let Ok(mut c) = endpoint.connect() else { break };
                let _ = c.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: ");
                slow.push(c);
                made += 1;
            }
            for bad in [
                b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03garbage\r\n\r\n".to_vec(),
                vec![b'A'; 64 << 10],
                b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
            ] {
                if let Ok(mut c) = endpoint.connect() {
                    let _ = c.write_all(&bad);
                    made += 1;
                }
            }
            // Pacing, not synchronisation: a steady stream of bad clients.
            std::thread::sleep(Duration::from_millis(20));
        }
        made
    })
}

/// The state report's `key = value` line for `key`.
fn report_value(report: &str, key: &str) -> String {
    report
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key} = ")))
        .unwrap_or_else(|| panic!("no {key} in\n{report}"))
        .to_string()
}

/// Every counter of the state report, compared with its metric; the
/// differences found.
fn differences(report: &str, m: &Parsed, plugins: &[&str]) -> Vec<String> {
    let mut diffs = Vec::new();
    let mut same = |what: &str, metric: f64, report: u64| {
        if metric != report as f64 {
            diffs.push(format!("{what}: metric {metric}, state report {report}"));
        }
    };
    let (start, end) = report_value(report, "journal sequence range")
        .split_once("..")
        .map(|(a, b)| (a.parse::<u64>().unwrap(), b.parse::<u64>().unwrap()))
        .unwrap();
    same("first", m.get("audisp_journal_first_sequence", &[]), start);
    same("next", m.get("audisp_journal_next_sequence", &[]), end);
    same("records", m.get("audisp_journal_records", &[]), end - start);
    let synced = report_value(report, "journal synced up to")
        .parse()
        .unwrap();
    same(
        "synced",
        m.get("audisp_journal_synced_sequence", &[]),
        synced,
    );
    let bytes = report_value(report, "journal bytes on disk")
        .parse()
        .unwrap();
    same("disk bytes", m.get("audisp_journal_disk_bytes", &[]), bytes);
    let open = report_value(report, "events being grouped")
        .parse()
        .unwrap();
    same("open events", m.get("audisp_open_events", &[]), open);
    let input = state_line(report, "input", "stdin").expect("stdin in the report");
    let i = [("input", "stdin")];
    for (metric, key) in [
        ("audisp_input_records_total", "records"),
        ("audisp_input_bytes_total", "bytes"),
        ("audisp_input_malformed_frames_total", "malformed"),
        ("audisp_input_unparsed_records_total", "unparsed"),
        ("audisp_input_duplicate_records_total", "duplicates"),
        ("audisp_input_records_lost_total", "lost"),
        ("audisp_input_records_waiting", "waiting"),
        ("audisp_input_records_looped_total", "looped"),
        ("audisp_input_records_filtered_total", "filtered"),
    ] {
        same(&format!("stdin {key}"), m.get(metric, &i), input.get(key));
    }
    same(
        "stdin connected",
        m.get("audisp_input_connected", &i),
        u64::from(input.state == "connected"),
    );
    for name in plugins {
        let p = state_line(report, "plugin", name).expect("plugin in the report");
        let l = [("plugin", *name)];
        for (metric, key) in [
            ("audisp_plugin_records_queued", "queued"),
            ("audisp_plugin_records_spooled", "spooled"),
            ("audisp_plugin_acked_sequence", "acked_seq"),
            ("audisp_plugin_records_delivered_total", "delivered"),
            ("audisp_plugin_records_acked_total", "acked"),
            ("audisp_plugin_connects_total", "connects"),
            ("audisp_plugin_reconnects_total", "reconnects"),
            ("audisp_plugin_restarts_total", "restarts"),
            ("audisp_plugin_commands_total", "commands"),
            ("audisp_plugin_records_filtered_total", "filtered"),
        ] {
            same(&format!("{name} {key}"), m.get(metric, &l), p.get(key));
        }
        let mut dropped = 0.0;
        for why in [
            "overflow",
            "spool_max",
            "suspended",
            "journal_limit",
            "damaged",
        ] {
            let v = m.get(
                "audisp_plugin_records_dropped_total",
                &[("plugin", name), ("reason", why)],
            );
            dropped += v;
            same(
                &format!("{name} dropped {why}"),
                v,
                p.get(&format!("dropped_{why}")),
            );
        }
        same(&format!("{name} dropped"), dropped, p.get("dropped"));
        for s in ["connected", "connecting", "suspended", "stopped"] {
            same(
                &format!("{name} state {s}"),
                m.get("audisp_plugin_state", &[("plugin", name), ("state", s)]),
                u64::from(p.state == s),
            );
        }
    }
    diffs
}

#[test]
fn every_state_report_counter_is_scraped_while_hostile_clients_stall_nothing() {
    if let Some(why) = missing_tools() {
        support::skip(&why);
        return;
    }
    let started = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let data = sample();
    let all = lines(&data);
    let mut d = Dispatcher::new(MAIN);
    d.write_plugin("sink", &sink_plugin("sink", "", ""));
    // A stock-format plugin that never reads: its pipe fills, and beyond
    // queue_size its oldest records are dropped (reason "overflow").
    d.write_plugin(
        "stuck",
        "exec = [\"/bin/sleep\", \"1000\"]\nformat = \"string\"\noverflow = \"drop\"\nqueue_size = 100\n",
    );
    let port = free_port();
    let endpoint = Endpoint::Tcp(port);
    let mut stdin = activated(&mut d, &[format!("127.0.0.1:{port}")], "metrics", &[]);

    // Bad clients first: one of them fires the activation, and they keep
    // coming while every record goes through.
    let stop = Arc::new(AtomicBool::new(false));
    let bad = hostile(endpoint.clone(), stop.clone());
    d.notify
        .wait_for("READY=1", Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("{e}\n{}", d.log_tail(30)));
    stdin.write_all(&data).unwrap();
    let sink = wait_sink(&d.out("sink"), all.len(), Duration::from_secs(60));
    assert!(texts(&sink) == all, "every record, in order, once");
    wait_until(Duration::from_secs(20), "the stuck plugin to drop", || {
        let s = d.plugin_state("stuck");
        s.get("dropped") > 0 && s.get("queued") <= 100
    });
    // Scraped while the bad clients are still at it.
    let text = endpoint.scrape(
        "text/plain;version=0.0.4",
        "text/plain; version=0.0.4; charset=utf-8",
    );
    let m = parse(&text, "text");
    stop.store(true, Ordering::Relaxed);
    let made = bad.join().unwrap();
    assert!(made > 50, "only {made} bad clients");

    // Known counts.
    let total = all.len() as f64;
    assert_eq!(
        m.get("audisp_input_records_total", &[("input", "stdin")]),
        total
    );
    assert_eq!(
        m.get("audisp_input_records_lost_total", &[("input", "stdin")]),
        0.0
    );
    assert_eq!(
        m.get("audisp_plugin_records_acked_total", &[("plugin", "sink")]),
        total
    );
    assert_eq!(
        m.get("audisp_plugin_records_queued", &[("plugin", "sink")]),
        0.0
    );
    for why in [
        "overflow",
        "spool_max",
        "suspended",
        "journal_limit",
        "damaged",
    ] {
        let l = [("plugin", "sink"), ("reason", why)];
        assert_eq!(
            m.get("audisp_plugin_records_dropped_total", &l),
            0.0,
            "{why}"
        );
    }
    assert!(
        m.get(
            "audisp_plugin_records_dropped_total",
            &[("plugin", "stuck"), ("reason", "overflow")]
        ) > 0.0
    );
    assert_eq!(
        m.get(
            "audisp_plugin_state",
            &[("plugin", "sink"), ("state", "connected")]
        ),
        1.0
    );
    assert_eq!(
        m.get(
            "audisp_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        1.0
    );
    // The process's own figures.
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let start = m.get("process_start_time_seconds", &[]);
    assert!(
        start >= started.as_secs_f64() - 1.0 && start <= now.as_secs_f64(),
        "started {start}, test ran {started:?}..{now:?}"
    );
    assert!(m.get("process_resident_memory_bytes", &[]) > 1e6);
    assert!(m.get("process_open_fds", &[]) >= 5.0);
    assert!(m.get("process_max_fds", &[]) >= m.get("process_open_fds", &[]));
    assert!(m.get("process_cpu_seconds_total", &[]) > 0.0);

    // Every counter of the state report, with the same value (once
    // nothing moves any more).
    let plugins = ["sink", "stuck"];
    try_wait_until(
        Duration::from_secs(20),
        "metrics to agree with the state report",
        || {
            let report = d.state();
            let m = parse(
                &endpoint.scrape("*/*", "text/plain; version=0.0.4; charset=utf-8"),
                "text",
            );
            Ok(differences(&report, &m, &plugins).is_empty())
        },
    )
    .unwrap_or_else(|e| {
        let report = d.state();
        let m = parse(
            &endpoint.scrape("*/*", "text/plain; version=0.0.4; charset=utf-8"),
            "text",
        );
        panic!("{e}: {:#?}", differences(&report, &m, &plugins))
    });

    // OpenMetrics, as Prometheus asks for it, through the strict parser.
    let om = endpoint.scrape(
        "application/openmetrics-text;version=1.0.0;q=0.5,application/openmetrics-text;version=0.0.1;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2",
        "application/openmetrics-text; version=1.0.0; charset=utf-8",
    );
    let o = parse(&om, "openmetrics");
    assert_eq!(
        o.get("audisp_input_records_total", &[("input", "stdin")]),
        total
    );
    assert_eq!(
        o.get(
            "audisp_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        1.0
    );
    assert!(o
        .families
        .iter()
        .any(|(n, t, _)| n == "audisp_plugin_records_delivered" && t == "counter"));
    assert!(o
        .families
        .iter()
        .any(|(n, t, _)| n == "audisp_journal" && t == "info"));
    assert_eq!(
        o.samples.keys().collect::<Vec<_>>(),
        m.samples.keys().collect::<Vec<_>>(),
        "both formats hold the same samples"
    );

    // Every metric has help and is documented.
    let doc =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/audispd.8.md"))
            .unwrap();
    for (name, _, help) in &m.families {
        assert!(!help.is_empty(), "{name} has no help");
    }
    let mut names: Vec<&str> = m.samples.keys().map(|(n, _)| n.as_str()).collect();
    names.dedup();
    for name in names {
        assert!(
            doc.contains(&format!("`{name}`")),
            "docs/audispd.8.md does not document {name}"
        );
    }

    // Anything but GET/HEAD /metrics.
    let (status, _, body) = endpoint.ask("GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(status, 404, "{body}");
    let (status, head, body) = endpoint.ask("HEAD /metrics HTTP/1.0\r\n\r\n");
    assert_eq!(status, 200);
    assert!(
        body.is_empty() && head.contains("Content-Length: "),
        "{head}"
    );
    let (status, _, _) = endpoint.ask("POST /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(status, 405);
    assert_eq!(
        d.input_state("stdin").get("records"),
        all.len() as u64,
        "nothing twice"
    );
    assert!(
        d.log()
            .contains("metrics endpoint socket passed by the service manager"),
        "{}",
        d.log_tail(20)
    );
    drop(stdin);
    let status = d.wait(Duration::from_secs(30)).unwrap();
    assert!(status.success(), "{status}\n{}", d.log_tail(30));
}

#[test]
fn the_metrics_socket_is_found_by_its_name() {
    if let Some(why) = missing_tools() {
        support::skip(&why);
        return;
    }
    let mut d = Dispatcher::new(MAIN);
    let decoy = d.path().join("decoy.sock");
    let path = d.path().join("metrics.sock");
    // The metrics socket second, after one with a name audispd does not
    // take: position means nothing, the name everything.
    let stdin = activated(
        &mut d,
        &[decoy.display().to_string(), path.display().to_string()],
        "decoy:metrics",
        &[],
    );
    let endpoint = Endpoint::Unix(path.clone());
    // The path appears at bind(), before listen(): wait until it answers.
    wait_until(Duration::from_secs(10), "the activation socket", || {
        endpoint.connect().is_ok()
    });
    // systemd-socket-activate listens before audispd runs: the first answer
    // can come before audispd has registered its standard input.
    let stdin_key = (
        "audisp_input_connected".to_string(),
        [("input".to_string(), "stdin".to_string())].into(),
    );
    let mut m = None;
    wait_until(
        Duration::from_secs(10),
        "audispd's stdin input scraped",
        || {
            let text = endpoint.scrape("*/*", "text/plain; version=0.0.4; charset=utf-8");
            let parsed = parse(&text, "text");
            let found = parsed.samples.contains_key(&stdin_key);
            m = Some(parsed);
            found
        },
    );
    let m = m.expect("scraped");
    assert_eq!(m.get("audisp_input_connected", &[("input", "stdin")]), 1.0);
    d.wait_log(
        "ignoring and closing passed sockets named [\"decoy\"]",
        Duration::from_secs(10),
    );
    let refused = UnixStream::connect(&decoy).unwrap_err();
    assert_eq!(
        refused.kind(),
        std::io::ErrorKind::ConnectionRefused,
        "{refused}"
    );
    drop(stdin);
    assert!(d.wait(Duration::from_secs(30)).unwrap().success());
}

#[test]
fn a_metrics_socket_of_the_wrong_kind_stops_audispd_with_the_reason() {
    if let Some(why) = missing_tools() {
        support::skip(&why);
        return;
    }
    let mut d = Dispatcher::new(MAIN);
    let path = d.path().join("metrics.sock");
    // A datagram socket where a stream one belongs (ListenDatagram= by
    // mistake in a drop-in).
    let _stdin = activated(
        &mut d,
        &[path.display().to_string()],
        "metrics",
        &["--datagram"],
    );
    wait_until(Duration::from_secs(10), "the activation socket", || {
        path.exists()
    });
    let client = std::os::unix::net::UnixDatagram::unbound().unwrap();
    client.send_to(b"x", &path).unwrap();
    let status = d.wait(Duration::from_secs(30)).unwrap();
    assert!(!status.success());
    d.wait_log(
        "the socket passed as \"metrics\" (fd 3) is a Datagram socket, not Stream",
        Duration::ZERO,
    );
}
