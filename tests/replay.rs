//! The core promise, end to end: ≥ 100k real records replayed through
//! audispd reach every plugin that subscribed to them, in order, once —
//! whether the plugin is fast, slow, killed and restarted mid-stream, a
//! stock plugin reading auditd's string format on stdin, a subscriber to a
//! subset of types, or a consumer of whole events.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Stdio;
use std::time::Duration;

use support::dispatcher::{corpus, example, feed, lines, read_sink, Dispatcher};
use support::wait_until;

fn rtype(line: &[u8]) -> &[u8] {
    let s = line.strip_prefix(b"node=").map_or(line, |rest| {
        let sp = rest.iter().position(|&b| b == b' ').unwrap();
        &rest[sp + 1..]
    });
    let s = s.strip_prefix(b"type=").expect("type=");
    &s[..s.iter().position(|&b| b == b' ').unwrap()]
}

fn audit_id(line: &[u8]) -> &[u8] {
    let start = line.windows(10).position(|w| w == b"msg=audit(").unwrap() + 10;
    let end = start + line[start..].iter().position(|&b| b == b')').unwrap();
    &line[start..end]
}

#[test]
fn every_plugin_gets_every_record_it_subscribed_to_once_in_order() {
    let data = corpus();
    let all = lines(&data);
    assert!(all.len() >= 100_000, "corpus has {} records", all.len());
    let sink = example("sink");
    let sink = sink.display();
    let mut d = Dispatcher::new(
        r#"
[journal]
segment_size = "4M"
memory = "4M"
[shutdown]
timeout = "300s"
[stats]
interval = "0"
"#,
    );
    d.write_plugin(
        "fast",
        &format!(r#"exec = ["{sink}", "--out", "{{dir}}/out/fast", "--name", "fast"]"#),
    );
    d.write_plugin(
        "slow",
        &format!(
            r#"exec = ["{sink}", "--out", "{{dir}}/out/slow", "--name", "slow", "--delay-ms", "5"]"#
        ),
    );
    d.write_plugin(
        "crashy",
        &format!(
            r#"exec = ["{sink}", "--out", "{{dir}}/out/crashy", "--name", "crashy", "--pid-file", "{{dir}}/out/crashy.pid", "--delay-ms", "1"]
[restart]
initial = "50ms"
max = "1s"
"#
        ),
    );
    d.write_plugin(
        "legacy",
        r#"exec = ["/bin/sh", "-c", "exec cat > {dir}/out/legacy"]
format = "string""#,
    );
    d.write_plugin(
        "subset",
        &format!(
            r#"exec = ["{sink}", "--out", "{{dir}}/out/subset", "--name", "subset"]
include = ["SYSCALL", "EXECVE", "USER"]"#
        ),
    );
    d.write_plugin(
        "events",
        &format!(
            r#"exec = ["{sink}", "--out", "{{dir}}/out/events", "--name", "events", "--events"]"#
        ),
    );
    d.start(Stdio::piped()).unwrap();
    let stdin = d.child.as_mut().unwrap().stdin.take().unwrap();
    let feeder = feed(stdin, data.clone());

    // Kill the crashy plugin once it is well into the stream.
    let crashy_out = d.out("crashy");
    wait_until(
        Duration::from_secs(60),
        "crashy to receive 30k records",
        || std::fs::metadata(&crashy_out).map(|m| m.len()).unwrap_or(0) > 30_000 * 200,
    );
    let pid: i32 = std::fs::read_to_string(d.out("crashy.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    // It is restarted by audispd (a new pid) and carries on.
    wait_until(Duration::from_secs(30), "crashy to be restarted", || {
        std::fs::read_to_string(d.out("crashy.pid"))
            .ok()
            .and_then(|p| p.trim().parse::<i32>().ok())
            .is_some_and(|p| p != pid)
    });

    feeder.join().unwrap();
    let status = d.wait(Duration::from_secs(300)).unwrap();
    let log = d.log();
    assert!(
        status.success(),
        "audispd failed: {status}\n{}",
        d.log_tail(60)
    );
    assert!(
        log.contains("every plugin had every record"),
        "{}",
        d.log_tail(60)
    );

    let expect: Vec<&[u8]> = all.clone();
    for name in ["fast", "slow", "crashy"] {
        let out = read_sink(&d.out(name));
        let got: Vec<&[u8]> = out.records.iter().map(|r| &r.1[..]).collect();
        assert_eq!(got.len(), expect.len(), "{name}: record count");
        assert!(got == expect, "{name}: records differ from the corpus");
        assert!(
            out.records.windows(2).all(|w| w[0].0 < w[1].0),
            "{name}: sequence numbers increase"
        );
    }
    let legacy = std::fs::read(d.out("legacy")).unwrap();
    assert!(
        lines(&legacy) == expect,
        "legacy: stdin plugin got exactly the corpus"
    );

    let subset = read_sink(&d.out("subset"));
    let want: Vec<&[u8]> = expect
        .iter()
        .copied()
        .filter(|l| matches!(rtype(l), b"SYSCALL" | b"EXECVE" | b"USER"))
        .collect();
    let got: Vec<&[u8]> = subset.records.iter().map(|r| &r.1[..]).collect();
    assert!(!want.is_empty());
    assert!(
        got == want,
        "subset: {} records, expected {}",
        got.len(),
        want.len()
    );

    // Events: each delivered event is one audit id; every record except the
    // trailing EOEs is delivered exactly once; no audit id is split.
    let events = read_sink(&d.out("events"));
    let mut seen = BTreeSet::new();
    let mut owner: BTreeMap<Vec<u8>, usize> = BTreeMap::new();
    for (i, (_, recs)) in events.events.iter().enumerate() {
        let id = audit_id(&recs[0].1).to_vec();
        for (seq, r) in recs {
            assert_eq!(audit_id(r), &id[..], "event {i} mixes audit ids");
            assert!(seen.insert(*seq), "record {seq} delivered twice");
        }
        if let Some(prev) = owner.insert(id.clone(), i) {
            panic!(
                "audit id {} split over events {prev} and {i}",
                String::from_utf8_lossy(&id)
            );
        }
    }
    let delivered: usize = events.events.iter().map(|e| e.1.len()).sum();
    let non_eoe = expect.iter().filter(|l| rtype(l) != b"EOE").count();
    assert!(
        delivered >= non_eoe && delivered <= expect.len(),
        "events delivered {delivered} records"
    );
    let delivered_non_eoe: usize = events
        .events
        .iter()
        .flat_map(|e| e.1.iter())
        .filter(|r| rtype(&r.1) != b"EOE")
        .count();
    assert_eq!(
        delivered_non_eoe, non_eoe,
        "every record but trailing EOEs, once"
    );
}
