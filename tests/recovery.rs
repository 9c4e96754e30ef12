//! Dispatcher crash: `kill -9` of audispd in mid-stream, then a restart.
//!
//! An input plugin sends numbered records in acknowledged batches and, after
//! every reconnect, sends again what it has not seen acknowledged — from a
//! little before WELCOME's start_after on purpose, as an input that lost its
//! last acknowledgements would. A sink plugin (the SDK example, exactly-once
//! from its own output) is fed throughout. After the crash and restart:
//!
//! * nothing the dispatcher acknowledged is forgotten (start_after is at
//!   least the input's last acknowledgement);
//! * the sink ends with every record exactly once, in order;
//! * the records sent again are stored once and counted as duplicates.

mod support;

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use audisp::sdk::InputClient;
use support::dispatcher::{lines, read_sink, sample, sink_plugin, texts, wait_sink, Dispatcher};
use support::wait_until;

const MAIN: &str = r#"
[journal]
segment_size = "256K"
memory = "1M"
[shutdown]
timeout = "10s"
[stats]
interval = "0"
"#;

/// Records per batch.
const BATCH: usize = 20;
/// How far before WELCOME's start_after the input starts again after a
/// reconnect.
const LAG: u64 = 25;

/// What the input saw, for the test's assertions.
#[derive(Debug, Default)]
struct Seen {
    /// Highest record acknowledged so far.
    acked: u64,
    /// Per connection after the first: (its last acknowledgement before,
    /// WELCOME's start_after, where it started sending again).
    reconnects: Vec<(u64, u64, u64)>,
    error: Option<String>,
}

/// Sends `records` numbered from 1 until all are acknowledged, reconnecting
/// (for up to 30s each time) whenever the connection is lost.
fn input(socket: PathBuf, records: Vec<Vec<u8>>, seen: Arc<Mutex<Seen>>) {
    let n = records.len() as u64;
    let mut first = true;
    let give_up = Instant::now() + Duration::from_secs(60);
    'connect: loop {
        if Instant::now() > give_up {
            seen.lock().unwrap().error = Some("gave up".into());
            return;
        }
        let (mut client, start_after) = match InputClient::connect(&socket, "numbered", [5; 16]) {
            Ok(c) => c,
            Err(_) => {
                // audispd is down: poll for it to be back.
                std::thread::sleep(Duration::from_millis(20));
                continue;
            }
        };
        let acked = seen.lock().unwrap().acked;
        let mut next = if first {
            start_after
        } else {
            let from = acked.min(start_after).saturating_sub(LAG);
            seen.lock()
                .unwrap()
                .reconnects
                .push((acked, start_after, from));
            from
        };
        first = false;
        while next < n {
            let to = (next + BATCH as u64).min(n);
            let batch = (next..to).map(|i| (i + 1, 0, &records[i as usize][..]));
            if client.send(batch).is_err() {
                continue 'connect;
            }
            if client.wait_acked(to, Duration::from_secs(10)).is_err() {
                continue 'connect;
            }
            let mut s = seen.lock().unwrap();
            s.acked = s.acked.max(client.acked());
            next = to;
        }
        return;
    }
}

#[test]
fn kill_9_mid_stream_loses_nothing_and_duplicates_nothing() {
    let data = sample();
    let all = lines(&data);
    let n = all.len();
    let mut d = Dispatcher::new(MAIN);
    d.write_plugin("sink", &sink_plugin("sink", "\"--delay-ms\", \"2\"", ""));
    d.write_plugin("events", &sink_plugin("events", "\"--events\"", ""));
    d.start(Stdio::null()).unwrap();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let feeder = {
        let socket = d.input_socket();
        let records = all.iter().map(|r| r.to_vec()).collect();
        let seen = seen.clone();
        std::thread::spawn(move || input(socket, records, seen))
    };

    // Crash in mid-stream: the input is sending, the sink has part of it.
    wait_until(
        Duration::from_secs(20),
        "the sink to get 1000 records",
        || read_sink(&d.out("sink")).records.len() >= 1000,
    );
    let acked_at_crash = seen.lock().unwrap().acked;
    assert!(
        (acked_at_crash as usize) < n,
        "the input was done before the crash"
    );
    d.crash();
    d.start(Stdio::null()).unwrap();

    feeder.join().unwrap();
    let seen = Arc::try_unwrap(seen).unwrap().into_inner().unwrap();
    assert!(seen.error.is_none(), "{seen:?}");
    assert_eq!(seen.acked, n as u64, "{seen:?}");
    assert_eq!(
        seen.reconnects.len(),
        1,
        "one reconnect, after the crash: {seen:?}"
    );
    let (acked_before, start_after, resent_from) = seen.reconnects[0];
    assert!(
        start_after >= acked_before,
        "audispd forgot records it had acknowledged: {seen:?}"
    );
    assert!(
        resent_from < start_after,
        "the input resent records audispd had: {seen:?}"
    );

    let out = wait_sink(&d.out("sink"), n, Duration::from_secs(30));
    assert!(
        out.records.windows(2).all(|w| w[0].0 < w[1].0),
        "sequence numbers increase: nothing twice, nothing out of order"
    );
    assert!(
        texts(&out) == all,
        "every record exactly once, in order ({} records for {n})",
        out.records.len()
    );
    let input = d.input_state("numbered");
    assert_eq!(
        input.get("duplicates"),
        start_after - resent_from,
        "the records sent again were counted as duplicates: {input:?}"
    );
    assert_eq!(
        input.get("records"),
        n as u64 - start_after,
        "and stored once: {input:?}"
    );
    let sink = d.plugin_state("sink");
    assert_eq!(sink.get("queued"), 0, "{sink:?}");
    assert_eq!(sink.get("dropped"), 0, "{sink:?}");

    let status = d.stop().unwrap();
    assert!(status.success(), "{status}\n{}", d.log_tail(30));
    assert_eq!(
        read_sink(&d.out("sink")).records.len(),
        n,
        "nothing more after stopping"
    );
    // Stopping ended the last open event and delivered it.
    check_events(&d, &all);
}

fn rtype(line: &[u8]) -> &[u8] {
    let s = &line[line.windows(5).position(|w| w == b"type=").unwrap() + 5..];
    &s[..s.iter().position(|&b| b == b' ').unwrap()]
}

fn audit_id(line: &[u8]) -> &[u8] {
    let start = line.windows(10).position(|w| w == b"msg=audit(").unwrap() + 10;
    let end = start + line[start..].iter().position(|&b| b == b')').unwrap();
    &line[start..end]
}

/// The events sink across the crash: every record but trailing EOEs once,
/// each event one audit id, no audit id split over two events.
fn check_events(d: &Dispatcher, all: &[&[u8]]) {
    let non_eoe = all.iter().filter(|l| rtype(l) != b"EOE").count();
    let out = read_sink(&d.out("events"));
    let mut seqs = std::collections::BTreeSet::new();
    let mut owner = std::collections::BTreeMap::new();
    for (i, (_, recs)) in out.events.iter().enumerate() {
        let id = audit_id(&recs[0].1).to_vec();
        for (seq, r) in recs {
            assert_eq!(audit_id(r), &id[..], "event {i} mixes audit ids");
            assert!(seqs.insert(*seq), "record {seq} delivered twice");
        }
        if let Some(prev) = owner.insert(id.clone(), i) {
            panic!(
                "audit id {} split over events {prev} and {i}",
                String::from_utf8_lossy(&id)
            );
        }
    }
    let delivered_non_eoe = out
        .events
        .iter()
        .flat_map(|e| e.1.iter())
        .filter(|r| rtype(&r.1) != b"EOE")
        .count();
    assert_eq!(delivered_non_eoe, non_eoe, "every record but EOEs, once");
}
