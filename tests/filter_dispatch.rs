//! `filter = '…'` in plugins.d, through a real audispd fed the real records
//! of `tests/data/sample.log`: whole events kept or withheld for native
//! plugins (records and events mode) and a stock plugin, every expected
//! record exactly once, the rest counted as `filtered` — also across a
//! plugin killed again and again mid-stream.

mod support;

use std::collections::BTreeMap;
use std::io::Write;
use std::process::Stdio;
use std::time::Duration;

use audisp::filter::{Filter, Scratch};
use support::dispatcher::{
    lines, sample, sample_shifted, sink_plugin, texts, wait_sink, Dispatcher, MAIN_NO_STATS,
};
use support::wait_until;

/// Three clauses: SYSCALL records of `openat` calls or of `rm`.
const EXPR: &str = r#"type r= SYSCALL && (syscall i= openat || exe i= "/usr/bin/rm")"#;

/// The audit event a record belongs to: its `msg=audit(…)` stamp.
fn stamp(record: &[u8]) -> &[u8] {
    let start = record
        .windows(10)
        .position(|w| w == b"msg=audit(")
        .expect("every sample record has a stamp");
    let len = record[start..]
        .iter()
        .position(|&b| b == b')')
        .expect("a closed stamp");
    &record[start..start + len]
}

/// What a plugin with `EXPR` and `keep` (or drop) must get of `data`, in
/// any order, and how many records it withholds: events are the records
/// of one stamp; the EOE after a PROCTITLE (which ends a kernel event) is
/// an event of its own that libauparse — and a filtered plugin — never
/// sees.
fn expected(data: &[u8], keep: bool) -> (BTreeMap<Vec<u8>, usize>, usize) {
    expected_of(EXPR, data, keep)
}

/// [`expected`] for another expression.
fn expected_of(expr: &str, data: &[u8], keep: bool) -> (BTreeMap<Vec<u8>, usize>, usize) {
    let filter = Filter::parse(expr).unwrap();
    let mut scratch = Scratch::new();
    let all = lines(data);
    let mut matched: BTreeMap<&[u8], bool> = BTreeMap::new();
    for r in &all {
        let m = filter.matches(r, &mut scratch);
        *matched.entry(stamp(r)).or_default() |= m;
    }
    let mut ended: BTreeMap<&[u8], bool> = BTreeMap::new();
    let mut want = BTreeMap::new();
    let mut withheld = 0;
    for r in &all {
        let s = stamp(r);
        if ended.get(s).copied().unwrap_or(false) && r.starts_with(b"type=EOE ") {
            continue;
        }
        if r.starts_with(b"type=PROCTITLE ") {
            ended.insert(s, true);
        }
        if matched[s] == keep {
            *want.entry(r.to_vec()).or_insert(0) += 1;
        } else {
            withheld += 1;
        }
    }
    (want, withheld)
}

fn count(got: &[&[u8]]) -> BTreeMap<Vec<u8>, usize> {
    let mut m = BTreeMap::new();
    for g in got {
        *m.entry(g.to_vec()).or_insert(0) += 1;
    }
    m
}

/// Compares without printing thousands of records.
fn assert_same(got: &BTreeMap<Vec<u8>, usize>, want: &BTreeMap<Vec<u8>, usize>, what: &str) {
    let missing: Vec<_> = want.keys().filter(|k| !got.contains_key(*k)).collect();
    let extra: Vec<_> = got.keys().filter(|k| !want.contains_key(*k)).collect();
    let twice: Vec<_> = got
        .iter()
        .filter(|(k, n)| want.get(*k) != Some(n))
        .collect();
    assert!(
        missing.is_empty() && extra.is_empty() && twice.is_empty(),
        "{what}: {} missing (first {:?}), {} not wanted (first {:?}), {} with a wrong count",
        missing.len(),
        missing.first().map(|m| String::from_utf8_lossy(m)),
        extra.len(),
        extra.first().map(|m| String::from_utf8_lossy(m)),
        twice.len()
    );
}

fn stock_lines(path: &std::path::Path) -> Vec<Vec<u8>> {
    let data = std::fs::read(path).unwrap_or_default();
    data.split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(<[u8]>::to_vec)
        .collect()
}

#[test]
fn keep_and_drop_filters_pass_whole_events_to_native_and_stock_plugins() {
    let data = sample();
    let (keep, kept_out) = expected(&data, true);
    let (pass, dropped_out) = expected(&data, false);
    let kept: usize = keep.values().sum();
    let passed: usize = pass.values().sum();
    assert!(
        kept > 300 && passed > 1000,
        "the sample has both kinds: {kept} kept, {passed} passed"
    );
    // The kept events bring their other records: far more than the
    // matching SYSCALL records alone.
    let syscalls = keep
        .keys()
        .filter(|k| k.starts_with(b"type=SYSCALL "))
        .count();
    assert!(
        keep.keys().any(|k| k.starts_with(b"type=PATH "))
            && keep.keys().any(|k| k.starts_with(b"type=CWD "))
            && keep.keys().any(|k| k.starts_with(b"type=PROCTITLE "))
            && kept > 3 * syscalls,
        "whole events: {kept} records for {syscalls} SYSCALLs"
    );

    let mut d = Dispatcher::new(MAIN_NO_STATS);
    let filter = format!("filter = '{EXPR}'");
    d.write_plugin("keep", &sink_plugin("keep", "", &filter));
    d.write_plugin(
        "drop",
        &sink_plugin(
            "drop",
            "\"--events\"",
            &format!("{filter}\nfilter_action = \"drop\"\nmode = \"events\""),
        ),
    );
    d.write_plugin(
        "stock",
        &format!(
            "exec = [\"/bin/sh\", \"-c\", \"exec /bin/cat > {{dir}}/out/stock\"]\nformat = \"string\"\n{filter}\nfilter_action = \"keep\"\n"
        ),
    );
    // Type lists choose among the records of passing events; drop_fields
    // applies after the filter decided on the whole record.
    d.write_plugin(
        "paths",
        &sink_plugin(
            "paths",
            "",
            &format!("{filter}\ninclude = [\"PATH\"]\ndrop_fields = [\"name\"]"),
        ),
    );
    d.start(Stdio::piped()).unwrap();
    // Kept open until the plugins have everything: its end stops audispd.
    let mut stdin = d.child.as_mut().unwrap().stdin.take().unwrap();
    stdin.write_all(&data).unwrap();

    let out = wait_sink(&d.out("keep"), kept, Duration::from_secs(60));
    assert_same(&count(&texts(&out)), &keep, "native records, keep");
    let out = wait_sink(&d.out("drop"), passed, Duration::from_secs(60));
    assert_same(&count(&texts(&out)), &pass, "native events, drop");
    // Each event whole, in one piece.
    for (_, records) in &out.events {
        let first = stamp(&records[0].1);
        assert!(records.iter().all(|r| stamp(&r.1) == first));
    }
    wait_until(
        Duration::from_secs(60),
        "the stock plugin's records",
        || stock_lines(&d.out("stock")).len() >= kept,
    );
    let got = stock_lines(&d.out("stock"));
    assert_same(
        &count(&got.iter().map(Vec::as_slice).collect::<Vec<_>>()),
        &keep,
        "stock string, keep",
    );
    let mut fields = audisp::format::drop_fields::DropFields::new([&b"name"[..]]);
    let paths: BTreeMap<Vec<u8>, usize> = keep
        .iter()
        .filter(|(k, _)| k.starts_with(b"type=PATH "))
        .map(|(k, n)| (fields.apply(k).into_owned(), *n))
        .collect();
    let n: usize = paths.values().sum();
    let out = wait_sink(&d.out("paths"), n, Duration::from_secs(60));
    assert_same(
        &count(&texts(&out)),
        &paths,
        "native PATH records without name=",
    );

    // Counted: what each plugin would have had and did not get.
    wait_until(Duration::from_secs(30), "the counters", || {
        d.plugin_state("keep").get("filtered") == kept_out as u64
    });
    for (name, n) in [
        ("keep", kept_out),
        ("drop", dropped_out),
        ("stock", kept_out),
    ] {
        let s = d.plugin_state(name);
        assert_eq!(s.get("filtered"), n as u64, "{name}: {s:?}");
        assert_eq!(s.get("dropped"), 0, "{name}: nothing lost");
    }
    let withheld_paths = lines(&data)
        .iter()
        .filter(|r| r.starts_with(b"type=PATH "))
        .count()
        - n;
    assert_eq!(
        d.plugin_state("paths").get("filtered"),
        withheld_paths as u64
    );
    drop(stdin);
    let _ = d.stop();
}

/// Adds up what plugins must get of several parts of a stream.
fn expected_parts(parts: &[(&str, &[u8], bool)]) -> (BTreeMap<Vec<u8>, usize>, usize) {
    let mut want = BTreeMap::new();
    let mut withheld = 0;
    for (expr, data, keep) in parts {
        let (w, n) = expected_of(expr, data, *keep);
        for (k, c) in w {
            *want.entry(k).or_insert(0) += c;
        }
        withheld += n;
    }
    (want, withheld)
}

/// Plugins whose filters have the same expression share its decisions:
/// two with `EXPR` (one of them reloaded mid-stream to another expression)
/// and one with that other expression, dropping what it matches. Each gets
/// exactly the events its own expression of the moment passes, and counts
/// what it withholds once.
#[test]
fn plugins_sharing_an_expression_each_get_what_their_own_current_filter_passes() {
    const OTHER: &str = r#"\record_type == BPRM_FCAPS || type r= SOCKADDR"#;
    let first = sample_shifted(0);
    let second = sample_shifted(1);
    let mut d = Dispatcher::new(MAIN_NO_STATS);
    let keep = |expr: &str| format!("filter = '{expr}'");
    d.write_plugin("a", &sink_plugin("a", "", &keep(EXPR)));
    d.write_plugin("b", &sink_plugin("b", "", &keep(EXPR)));
    d.write_plugin(
        "c",
        &sink_plugin(
            "c",
            "",
            &format!("filter = '{OTHER}'\nfilter_action = \"drop\""),
        ),
    );
    d.start(Stdio::piped()).unwrap();
    let mut stdin = d.child.as_mut().unwrap().stdin.take().unwrap();
    // Every plugin decided every event of the first part before b changes.
    let check = |d: &Dispatcher, name: &str, parts: &[(&str, &[u8], bool)]| {
        let (want, withheld) = expected_parts(parts);
        let n: usize = want.values().sum();
        let out = wait_sink(&d.out(name), n, Duration::from_secs(60));
        wait_until(Duration::from_secs(30), "the counter", || {
            d.plugin_state(name).get("filtered") >= withheld as u64
        });
        assert_same(&count(&texts(&out)), &want, name);
        let s = d.plugin_state(name);
        assert_eq!(s.get("filtered"), withheld as u64, "{name}: {s:?}");
        assert_eq!(s.get("dropped"), 0, "{name}: nothing lost");
    };
    stdin.write_all(&first).unwrap();
    check(&d, "a", &[(EXPR, &first, true)]);
    check(&d, "b", &[(EXPR, &first, true)]);
    check(&d, "c", &[(OTHER, &first, false)]);

    d.write_plugin("b", &sink_plugin("b", "", &keep(OTHER)));
    d.reload().unwrap();
    stdin.write_all(&second).unwrap();
    check(&d, "a", &[(EXPR, &first, true), (EXPR, &second, true)]);
    check(&d, "b", &[(EXPR, &first, true), (OTHER, &second, true)]);
    check(&d, "c", &[(OTHER, &first, false), (OTHER, &second, false)]);
    drop(stdin);
    let _ = d.stop();
}

/// Kills the program whose pid `examples/sink` wrote to `pid_file`.
fn kill_sink(pid_file: &std::path::Path) -> bool {
    let Some(pid) = std::fs::read_to_string(pid_file)
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok())
    else {
        return false;
    };
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .is_ok()
}

#[test]
fn a_filtered_plugin_killed_mid_stream_gets_every_kept_record_once() {
    let copies = 4;
    let data: Vec<u8> = (0..copies).flat_map(sample_shifted).collect();
    let (keep, kept_out) = expected(&data, true);
    let kept: usize = keep.values().sum();
    let mut d = Dispatcher::new(MAIN_NO_STATS);
    d.write_plugin(
        "keep",
        &sink_plugin(
            "keep",
            "\"--pid-file\", \"{dir}/out/keep.pid\", \"--delay-ms\", \"2\"",
            &format!("filter = '{EXPR}'\n[restart]\ninitial = \"20ms\"\nmax = \"100ms\""),
        ),
    );
    d.start(Stdio::piped()).unwrap();
    let mut stdin = d.child.as_mut().unwrap().stdin.take().unwrap();
    let pid_file = d.out("keep.pid");
    let mut kills = 0;
    for k in 0..copies {
        // Counted before the copy goes in: counted after, the sink may
        // already have all of it (the test thread descheduled meanwhile)
        // and nothing more would come.
        let have = support::dispatcher::read_sink(&d.out("keep")).records.len();
        stdin.write_all(&sample_shifted(k)).unwrap();
        // Mid-stream: once the sink has some of this copy, kill it.
        if let Err(e) =
            support::try_wait_until(Duration::from_secs(60), "the sink to get further", || {
                Ok(support::dispatcher::read_sink(&d.out("keep")).records.len() > have)
            })
        {
            panic!(
                "copy {k}: {e} than {have} records (it has {}; {kept} wanted in all); audispd's log:\n{}",
                support::dispatcher::read_sink(&d.out("keep")).records.len(),
                d.log_tail(30)
            );
        }
        kills += u32::from(kill_sink(&pid_file));
    }
    assert!(kills >= 2, "the sink was killed mid-stream ({kills})");
    let out = wait_sink(&d.out("keep"), kept, Duration::from_secs(120));
    // Each journal record once: a record delivered again (after a restart)
    // keeps its sequence number; the same text under two numbers would be
    // a record journaled twice.
    let mut by_text: BTreeMap<&[u8], Vec<u64>> = BTreeMap::new();
    for (seq, text) in &out.records {
        by_text.entry(&text[..]).or_default().push(*seq);
    }
    let wrong: Vec<String> = by_text
        .iter()
        .filter(|(t, seqs)| keep.get(**t) != Some(&seqs.len()))
        .map(|(t, seqs)| {
            let (from, to) = (seqs[0].saturating_sub(3), seqs[seqs.len() - 1] + 3);
            format!(
                "delivered at seqs {seqs:?} (want {}): {}\n  sink lines for seqs {from}..={to} in file order: {:?}",
                keep.get(*t).copied().unwrap_or(0),
                String::from_utf8_lossy(t),
                out.records
                    .iter()
                    .map(|r| r.0)
                    .filter(|s| (from..=to).contains(s))
                    .collect::<Vec<_>>()
            )
        })
        .collect();
    assert!(
        wrong.is_empty(),
        "killed and restarted: {} records with a wrong count:\n{}\naudispd's log:\n{}",
        wrong.len(),
        wrong.join("\n"),
        d.log_tail(40)
    );
    assert_same(&count(&texts(&out)), &keep, "killed and restarted");
    wait_until(Duration::from_secs(30), "the counter", || {
        d.plugin_state("keep").get("filtered") == kept_out as u64
    });
    let s = d.plugin_state("keep");
    assert!(s.get("restarts") >= 2, "{s:?}");
    assert_eq!(s.get("dropped"), 0);
    drop(stdin);
    let _ = d.stop();
}

/// A filtered records-mode plugin acknowledges a kept event by the event's
/// id; for an event ended by a close marker (here: the stream's time moved
/// past the event timeout) that id lies past the event's last record. The
/// sink killed after it stored such an event and before its acknowledgement
/// reached audispd resumes after the id it stored with its output, and gets
/// nothing twice (resuming after the last record's sequence number, as it
/// once did, had the event sent again).
#[test]
fn a_filtered_plugin_killed_before_acknowledging_an_event_closed_by_a_marker_gets_it_once() {
    let support::events::MarkerClosed {
        open,
        later,
        closed,
    } = support::events::MARKER_CLOSED;
    let first = format!("{open}{later}");
    let data = format!("{first}{closed}").into_bytes();
    let (keep, _) = expected(&data, true);
    assert_eq!(keep.values().sum::<usize>(), 4, "both SYSCALL events kept");
    let mut d = Dispatcher::new(MAIN_NO_STATS);
    // The sink stores a batch, then waits 2 s before acknowledging it.
    d.write_plugin(
        "keep",
        &sink_plugin(
            "keep",
            "\"--pid-file\", \"{dir}/out/keep.pid\", \"--delay-ms\", \"2000\"",
            &format!("filter = '{EXPR}'\n[restart]\ninitial = \"20ms\"\nmax = \"100ms\""),
        ),
    );
    d.start(Stdio::piped()).unwrap();
    let mut stdin = d.child.as_mut().unwrap().stdin.take().unwrap();
    stdin.write_all(first.as_bytes()).unwrap();
    wait_until(
        Duration::from_secs(30),
        "the sink to store the event",
        || support::dispatcher::read_sink(&d.out("keep")).records.len() == 2,
    );
    assert!(kill_sink(&d.out("keep.pid")), "the sink was killed");
    stdin.write_all(closed.as_bytes()).unwrap();
    let out = wait_sink(&d.out("keep"), 4, Duration::from_secs(60));
    // The restarted sink has the last event; anything sent again came
    // before it.
    assert_eq!(
        out.records
            .iter()
            .map(|r| String::from_utf8_lossy(&r.1).into_owned())
            .collect::<Vec<_>>(),
        data.split(|&b| b == b'\n')
            .filter(|l| l.starts_with(b"type=SYSCALL") || l.starts_with(b"type=P"))
            .map(|l| String::from_utf8_lossy(l).into_owned())
            .collect::<Vec<_>>(),
        "each kept record once, in order"
    );
    // The kill came before the acknowledgement: the second connection
    // delivered from the start of the journal again.
    assert_eq!(
        d.log()
            .matches("delivering from journal position 1 ")
            .count(),
        2,
        "{}",
        d.log_tail(20)
    );
    drop(stdin);
    let _ = d.stop();
}

/// audispd killed (`kill -9`) while a filtered plugin is behind, then
/// started again on the same journal: the plugin ends with every record of
/// the kept events exactly once.
#[test]
fn a_filtered_plugin_gets_every_kept_record_once_across_an_audispd_crash() {
    let data = sample();
    let all: Vec<Vec<u8>> = lines(&data).iter().map(|r| r.to_vec()).collect();
    let (keep, _) = expected(&data, true);
    let kept: usize = keep.values().sum();
    // Cut between two events, so that the expectation (by stamp) holds.
    let half = (all.len() / 2..all.len())
        .find(|&i| stamp(&all[i]) != stamp(&all[i - 1]))
        .unwrap();
    let mut d = Dispatcher::new(&format!("{MAIN_NO_STATS}[shutdown]\ntimeout = \"100ms\"\n"));
    d.write_plugin(
        "keep",
        &sink_plugin(
            "keep",
            "\"--delay-ms\", \"20\"",
            &format!("filter = '{EXPR}'"),
        ),
    );
    d.start(Stdio::null()).unwrap();
    let send = |d: &Dispatcher, from: usize, to: usize| {
        let (mut client, start) =
            audisp::sdk::InputClient::connect(&d.input_socket(), "feeder", [9; 16]).unwrap();
        assert_eq!(start, from as u64, "the journal kept what it acknowledged");
        client
            .send(
                all[from..to]
                    .iter()
                    .enumerate()
                    .map(|(i, r)| ((from + i + 1) as u64, 0, &r[..])),
            )
            .unwrap();
        client
            .wait_acked(to as u64, Duration::from_secs(30))
            .unwrap();
    };
    send(&d, 0, half);
    // The sink has some of the first half, not all of it.
    wait_until(Duration::from_secs(30), "the sink to start", || {
        !support::dispatcher::read_sink(&d.out("keep"))
            .records
            .is_empty()
    });
    d.crash();
    let before = support::dispatcher::read_sink(&d.out("keep")).records.len();
    d.start(Stdio::null()).unwrap();
    send(&d, half, all.len());
    let out = wait_sink(&d.out("keep"), kept, Duration::from_secs(120));
    assert!(
        before < kept,
        "the crash came mid-stream ({before} of {kept})"
    );
    assert_same(&count(&texts(&out)), &keep, "across a crash");
    let _ = d.stop();
}

/// Events larger than a protocol message (128 KiB) go to a filtered
/// records-mode plugin in several messages sharing the event's ack id
/// (`0x0020`, more follow): the plugin gets every record of them once —
/// none skipped as already acknowledged, none twice.
#[test]
fn a_filtered_records_plugin_gets_events_larger_than_a_message_whole() {
    let mut data = Vec::new();
    let mut want = BTreeMap::new();
    for e in 0..3u32 {
        let stamp = format!("msg=audit(1700000100.{:03}:{}):", e, 900 + e);
        let mut event = vec![format!(
            "type=SYSCALL {stamp} arch=c000003e syscall=257 success=yes exit=3 items=60 comm=\"big\" exe=\"/usr/bin/big\""
        )];
        for i in 0..60 {
            event.push(format!(
                "type=PATH {stamp} item={i} name=\"{}\" inode={i} nametype=NORMAL",
                "x".repeat(4000)
            ));
        }
        event.push(format!("type=PROCTITLE {stamp} proctitle=626967"));
        for r in event {
            *want.entry(r.clone().into_bytes()).or_insert(0) += 1;
            data.extend_from_slice(r.as_bytes());
            data.push(b'\n');
        }
    }
    let n: usize = want.values().sum();
    assert!(data.len() / 3 > 128 * 1024, "each event spans messages");
    let mut d = Dispatcher::new(MAIN_NO_STATS);
    d.write_plugin("big", &sink_plugin("big", "", "filter = 'type r= SYSCALL'"));
    d.start(Stdio::piped()).unwrap();
    let mut stdin = d.child.as_mut().unwrap().stdin.take().unwrap();
    stdin.write_all(&data).unwrap();
    let out = wait_sink(&d.out("big"), n, Duration::from_secs(60));
    assert_same(&count(&texts(&out)), &want, "events larger than a message");
    assert_eq!(d.plugin_state("big").get("dropped"), 0);
    drop(stdin);
    let _ = d.stop();
}
