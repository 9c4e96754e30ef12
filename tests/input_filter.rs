//! `[input.NAME] filter` in audispd.toml: records an input's filter
//! withholds are never journaled — read back from the journal itself —
//! while the rest reach the plugins; standard input (`auditd`) and an
//! input-socket client alike, the client's records all acknowledged.

mod support;

use std::io::Write;
use std::process::Stdio;
use std::time::Duration;

use audisp::journal::{Journal, Limits, ReadOutcome, Step};
use audisp::sdk::InputClient;
use support::dispatcher::{
    lines, sample, sink_plugin, texts, wait_sink, Dispatcher, MAIN_NO_STATS,
};

/// Every record text in the journal under `state/journal`, read directly
/// once audispd has stopped.
fn journaled(d: &Dispatcher) -> Vec<Vec<u8>> {
    let j = Journal::open(
        &d.path().join("state/journal"),
        Limits {
            segment_size: 64 << 20,
            max_size: 1 << 30,
            memory: 1 << 20,
        },
    )
    .expect("the journal opens");
    let mut reader = j.reader(j.start());
    let mut out = Vec::new();
    loop {
        let outcome = reader
            .read(1 << 20, &mut |e| {
                if !e.is_control() {
                    out.push(e.text.to_vec());
                }
                Step::Next
            })
            .expect("the journal reads");
        match outcome {
            ReadOutcome::CaughtUp => return out,
            ReadOutcome::Lost { .. } => panic!("journal entries lost"),
            _ => {}
        }
    }
}

const MAIN: &str = r#"
[input.auditd]
filter = 'type r= CWD || type r= PROCTITLE'
filter_action = "drop"

[input.remote]
filter = 'type r= SYSCALL || type r= PATH'
"#;

#[test]
fn records_an_input_filter_withholds_are_never_journaled() {
    let data = sample();
    let all = lines(&data);
    let is = |r: &[u8], t: &str| r.starts_with(format!("type={t} ").as_bytes());
    let from_stdin: Vec<&[u8]> = all
        .iter()
        .copied()
        .filter(|r| !is(r, "CWD") && !is(r, "PROCTITLE"))
        .collect();
    // The remote input's records: the sample with other stamps, of which
    // it keeps SYSCALL and PATH records only.
    let remote_data = support::dispatcher::sample_shifted(1);
    let remote_all: Vec<Vec<u8>> = lines(&remote_data).iter().map(|r| r.to_vec()).collect();
    let from_remote: Vec<&[u8]> = remote_all
        .iter()
        .map(Vec::as_slice)
        .filter(|r| is(r, "SYSCALL") || is(r, "PATH"))
        .collect();
    assert!(from_stdin.len() > 2000 && from_stdin.len() + 1000 < all.len());
    assert!(from_remote.len() > 1000 && from_remote.len() + 1000 < remote_all.len());

    let mut d = Dispatcher::new(&format!("{MAIN_NO_STATS}{MAIN}"));
    d.write_plugin("sink", &sink_plugin("sink", "", ""));
    d.start(Stdio::piped()).unwrap();
    let mut stdin = d.child.as_mut().unwrap().stdin.take().unwrap();
    stdin.write_all(&data).unwrap();
    let out = wait_sink(&d.out("sink"), from_stdin.len(), Duration::from_secs(60));
    assert!(
        texts(&out) == from_stdin,
        "standard input's kept records, in order, once"
    );

    let (mut client, start) = InputClient::connect(&d.input_socket(), "remote", [3; 16]).unwrap();
    assert_eq!(start, 0);
    client
        .send(
            remote_all
                .iter()
                .enumerate()
                .map(|(i, r)| ((i + 1) as u64, 0, &r[..])),
        )
        .unwrap();
    // Withheld records are accepted like the rest: everything acknowledged.
    client
        .wait_acked(remote_all.len() as u64, Duration::from_secs(30))
        .unwrap();
    let want = from_stdin.len() + from_remote.len();
    let out = wait_sink(&d.out("sink"), want, Duration::from_secs(60));
    assert!(
        texts(&out)[from_stdin.len()..] == from_remote[..],
        "the remote input's kept records, in order, once"
    );

    let s = d.input_state("stdin");
    assert_eq!(s.get("filtered"), (all.len() - from_stdin.len()) as u64);
    assert_eq!(s.get("records"), from_stdin.len() as u64);
    let r = d.input_state("remote");
    assert_eq!(
        r.get("filtered"),
        (remote_all.len() - from_remote.len()) as u64
    );
    assert_eq!(r.get("records"), from_remote.len() as u64);
    assert_eq!(r.get("lost"), 0);
    drop(client);
    drop(stdin);
    d.wait(Duration::from_secs(30))
        .expect("audispd stops at the end of its input");

    let stored = journaled(&d);
    let mut want: Vec<&[u8]> = from_stdin.clone();
    want.extend_from_slice(&from_remote);
    assert_eq!(
        stored.len(),
        want.len(),
        "the journal holds the kept records only"
    );
    assert!(stored.iter().map(Vec::as_slice).eq(want.iter().copied()));
}
