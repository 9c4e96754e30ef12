//! A stock plugin (auditd's string format on standard input, started by
//! audispd) through many reloads that restart it mid-stream: it only ever
//! reads whole records, and, since audispd holds its end of the socket pair
//! and counts what it left unread, it gets no record twice and misses none.

mod support;

use std::io::Write;
use std::process::Stdio;
use std::time::Duration;

use support::dispatcher::{lines, sample_copies, Dispatcher};

/// The stock plugin, its arguments changed by `generation` so that each
/// reload restarts it (`$0` of the shell, unused). It reads a byte at a
/// time (the shell's `read`), so that reloads come while it is mid-stream.
fn legacy(generation: usize) -> String {
    let script = r#"while IFS= read -r l; do printf '%s\\n' \"$l\"; done >> {dir}/out/legacy"#;
    format!(
        "exec = [\"/bin/sh\", \"-c\", \"{script}\", \"gen{generation}\"]\nformat = \"string\"\n"
    )
}

#[test]
fn a_stock_plugin_restarted_by_reloads_gets_every_record_once_and_whole() {
    let mut d = Dispatcher::new("[shutdown]\ntimeout = \"10s\"\n[stats]\ninterval = \"0\"\n");
    d.write_plugin("legacy", &legacy(0));
    d.start(Stdio::piped()).unwrap();
    let mut stdin = d.child.as_mut().unwrap().stdin.take().unwrap();
    let data = sample_copies(4);
    let want = lines(&data);
    // Reloads between chunks of the stream, while the plugin still reads
    // the previous ones.
    let chunks: Vec<&[&[u8]]> = want.chunks(want.len().div_ceil(40)).collect();
    for (i, chunk) in chunks.iter().enumerate() {
        for l in chunk.iter() {
            stdin.write_all(l).unwrap();
            stdin.write_all(b"\n").unwrap();
        }
        stdin.flush().unwrap();
        d.write_plugin("legacy", &legacy(i + 1));
        d.reload()
            .unwrap_or_else(|e| panic!("reload {i}: {e}\n{}", d.log_tail(30)));
    }
    drop(stdin);
    let status = d.wait(Duration::from_secs(60)).unwrap();
    assert!(status.success(), "{status}\n{}", d.log_tail(30));
    let restarts = d
        .log()
        .matches("started the program of plugin legacy")
        .count();
    assert!(
        restarts > chunks.len() / 2,
        "{restarts} starts\n{}",
        d.log_tail(30)
    );

    let got = std::fs::read(d.out("legacy")).unwrap();
    let got = lines(&got);
    // Whole records only: every line is one of the records sent.
    let known: std::collections::HashSet<&[u8]> = want.iter().copied().collect();
    let torn: Vec<&[u8]> = got.iter().copied().filter(|l| !known.contains(l)).collect();
    assert!(
        torn.is_empty(),
        "torn or glued records: {:?}",
        &torn[..torn.len().min(3)]
    );
    // Each once, in order.
    assert_eq!(got.len(), want.len(), "records received vs sent");
    assert!(got == want, "every record once, in order");
}
