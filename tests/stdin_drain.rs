//! auditd 3.0.9 signals its plugins (SIGTERM) just before it closes their
//! input. Records it already wrote must still reach the plugins: audispd
//! keeps reading standard input after a stop request until the input ends.

mod support;

use std::io::Write;
use std::process::Stdio;
use std::time::Duration;

use support::dispatcher::{example, read_sink, Dispatcher};

#[test]
fn records_written_before_sigterm_are_delivered() {
    let sink = example("sink");
    let mut d = Dispatcher::new("[shutdown]\ntimeout = \"60s\"\n[input.socket]\nenabled = false\n");
    d.write_plugin(
        "sink",
        &format!(
            r#"exec = ["{}", "--out", "{{dir}}/out/sink"]"#,
            sink.display()
        ),
    );
    d.start(Stdio::piped()).unwrap();
    let mut stdin = d.child.as_mut().unwrap().stdin.take().unwrap();
    let n = 20_000u64;
    let mut data = Vec::new();
    for i in 1..=n {
        writeln!(
            data,
            "type=USER msg=audit(1700000000.{:03}:{i}): pid=1 uid=0 auid=0 ses=1 msg='op=test n={i} res=success'",
            i % 1000
        )
        .unwrap();
    }
    // Like auditd: the stop signal first, then the rest of the stream, then
    // end of input.
    let (head, tail) = data.split_at(data.len() / 2);
    stdin.write_all(head).unwrap();
    d.signal(nix::sys::signal::Signal::SIGTERM);
    stdin.write_all(tail).unwrap();
    drop(stdin);
    let status = d.wait(Duration::from_secs(60)).unwrap();
    assert!(status.success(), "{}", d.log_tail(40));
    let got = read_sink(&d.out("sink"));
    assert_eq!(got.records.len() as u64, n, "{}", d.log_tail(40));
    for (i, (_, text)) in got.records.iter().enumerate() {
        let want = format!(" n={} ", i + 1);
        assert!(
            String::from_utf8_lossy(text).contains(&want),
            "record {i} out of order"
        );
    }
}
