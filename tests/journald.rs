//! audisp-journal against a real systemd-journald: real records replayed
//! through a real audispd into two audisp-journal plugins (one entry per
//! record with every field; one entry per event), then read back with
//! `journalctl --directory … -o json`. Every record comes back once, with
//! its fields: hex-encoded values decoded, a 20 KB argument the kernel split
//! over several `EXECVE` records rejoined, and an event larger than a
//! datagram passed through the memfd path, whole.
//!
//! journald runs privately (`tests/support/journald-ns.sh`, inside
//! `unshare --mount --pid`), never touching kernel audit; the test re-runs
//! itself inside that namespace.

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use audisp::format::fields::decode_hex;
use serde_json::Value;
use support::dispatcher::{feed, lines, sample, Dispatcher};
use support::events::events;

const INSIDE: &str = "AUDISP_TEST_IN_JOURNALD_NS";
const JOURNAL_DIR: &str = "/run/log/journal";

#[test]
fn journald_gets_every_record_with_its_fields() {
    if std::env::var_os(INSIDE).is_some() {
        inside_namespace();
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
            "journald_gets_every_record_with_its_fields",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(INSIDE, "1")
        .status()
        .expect("unshare");
    assert!(status.success(), "the test inside the namespace failed");
}

/// A synthetic but kernel-shaped event: `execve` of one 150 KB argument
/// (split in 7500-digit pieces, as the kernel does), so its entry is larger
/// than a datagram may be.
fn huge_event() -> (Vec<u8>, Vec<u8>) {
    let id = "1795429999.001:999001";
    let arg: Vec<u8> = (0..150_000u32)
        .map(|i| b"abcdefghij"[(i % 10) as usize])
        .collect();
    let hex: String = arg.iter().map(|b| format!("{b:02X}")).collect();
    let mut text = format!(
        "type=SYSCALL msg=audit({id}): arch=c000003e syscall=59 success=yes exit=0 items=1 comm=\"echo\" exe=\"/bin/echo\" key=\"exec\"\n\
         type=EXECVE msg=audit({id}): argc=2 a0=\"/bin/echo\" a1_len={}",
        hex.len()
    );
    for (i, piece) in hex.as_bytes().chunks(7500).enumerate() {
        if i > 0 {
            text.push_str(&format!("\ntype=EXECVE msg=audit({id}): "));
        }
        text.push_str(&format!(" a1[{i}]={}", std::str::from_utf8(piece).unwrap()));
    }
    text.push_str(&format!(
        "\ntype=PROCTITLE msg=audit({id}): proctitle=2F62696E2F6563686F\ntype=EOE msg=audit({id}):\n"
    ));
    (text.into_bytes(), arg)
}

/// Reads back every entry of one identifier.
fn journal(identifier: &str) -> Vec<BTreeMap<String, Value>> {
    let out = Command::new("journalctl")
        .args([
            "--directory",
            JOURNAL_DIR,
            "--no-pager",
            "--all",
            "-o",
            "json",
        ])
        .arg(format!("SYSLOG_IDENTIFIER={identifier}"))
        .output()
        .expect("journalctl");
    assert!(
        out.status.success(),
        "journalctl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    lines(&out.stdout)
        .iter()
        .map(|l| serde_json::from_slice(l).expect("journalctl JSON"))
        .collect()
}

/// A field's values as bytes (journalctl writes a string, an array of
/// bytes for binary data, or an array of those for repeated fields).
fn values(e: &BTreeMap<String, Value>, name: &str) -> Vec<Vec<u8>> {
    fn one(v: &Value) -> Vec<u8> {
        match v {
            Value::String(s) => s.as_bytes().to_vec(),
            Value::Array(a) => a.iter().map(|b| b.as_u64().unwrap() as u8).collect(),
            other => panic!("unexpected {other}"),
        }
    }
    match e.get(name) {
        None => Vec::new(),
        Some(Value::Array(a)) if a.first().is_some_and(|x| !x.is_number()) => {
            a.iter().map(one).collect()
        }
        Some(v) => vec![one(v)],
    }
}

fn value(e: &BTreeMap<String, Value>, name: &str) -> Vec<u8> {
    let v = values(e, name);
    assert_eq!(v.len(), 1, "{name}: {v:?}");
    v.into_iter().next().unwrap()
}

fn message_of(record: &[u8]) -> Vec<u8> {
    record
        .iter()
        .map(|&b| if b == 0x1d { b' ' } else { b })
        .collect()
}

fn inside_namespace() {
    assert!(
        Path::new("/run/systemd/journal/socket").exists(),
        "journald's socket (run through tests/support/journald-ns.sh)"
    );
    let mut data = sample();
    let (huge, huge_arg) = huge_event();
    data.extend_from_slice(&huge);
    let all = lines(&data);
    let bin = env!("CARGO_BIN_EXE_audisp-journal");
    let mut d = Dispatcher::new(
        r#"
[shutdown]
timeout = "120s"
[stats]
interval = "0"
"#,
    );
    d.write_plugin(
        "jrecords",
        &format!(
            r#"exec = ["{bin}", "--name", "jrecords", "--identifier", "audisp-records", "--fields", "all", "--journal-socket", "/run/systemd/journal/socket", "--priority", "USER=notice"]"#
        ),
    );
    d.write_plugin(
        "jevents",
        &format!(
            r#"exec = ["{bin}", "--name", "jevents", "--identifier", "audisp-events", "--events", "--fields", "all"]
mode = "events""#
        ),
    );
    d.start(Stdio::piped()).unwrap();
    let stdin = d.child.as_mut().unwrap().stdin.take().unwrap();
    feed(stdin, data.clone()).join().unwrap();
    let status = d.wait(Duration::from_secs(300)).unwrap();
    assert!(status.success(), "audispd: {status}\n{}", d.log_tail(60));
    let log = d.log();
    assert!(
        log.contains("every plugin had every record"),
        "{}",
        d.log_tail(60)
    );
    // Everything journald received is in the journal once it synced.
    let sync = Command::new("journalctl").arg("--sync").status().unwrap();
    assert!(sync.success(), "journalctl --sync");

    // Records mode: one entry per record, in order, with its fields.
    let entries = journal("audisp-records");
    assert_eq!(entries.len(), all.len(), "records in == entries out");
    let mut hex_checked = 0;
    let mut seqs = Vec::new();
    for (e, rec) in entries.iter().zip(&all) {
        assert_eq!(value(e, "MESSAGE"), message_of(rec));
        seqs.push(String::from_utf8(value(e, "AUDISP_SEQ")).unwrap());
        let info = audisp::record::parse(rec).expect("a real record");
        assert_eq!(
            value(e, "AUDIT_TYPE_NAME"),
            audisp::record_types::display(info.rtype).as_bytes()
        );
        let prio = match info.rtype {
            1005 => b"5",
            1400 | 1107 | 1700..=1799 | 2100..=2299 => b"4",
            _ => b"6",
        };
        assert_eq!(
            value(e, "PRIORITY"),
            prio,
            "{}",
            String::from_utf8_lossy(rec)
        );
        assert_eq!(
            value(e, "AUDIT_ID"),
            format!("{}.{:03}:{}", info.time.sec, info.time.msec, info.serial).as_bytes()
        );
        // Hex-encoded names, paths and command lines come back decoded.
        if matches!(info.rtype, 1302 | 1307 | 1327) {
            let raw = audisp::record::split_enrichment(rec).0;
            for tok in raw.split(|&b| b == b' ') {
                for key in [&b"name="[..], b"cwd=", b"proctitle="] {
                    let Some(v) = tok.strip_prefix(key) else {
                        continue;
                    };
                    if v.starts_with(b"\"") || v == b"(null)" {
                        continue;
                    }
                    let mut want = Vec::new();
                    decode_hex(v, &mut want);
                    let field = format!(
                        "AUDIT_FIELD_{}",
                        std::str::from_utf8(&key[..key.len() - 1])
                            .unwrap()
                            .to_uppercase()
                    );
                    assert_eq!(value(e, &field), want, "{}", String::from_utf8_lossy(rec));
                    hex_checked += 1;
                }
            }
        }
    }
    assert!(hex_checked > 100, "only {hex_checked} hex values seen");
    let mut sorted = seqs.clone();
    sorted.dedup();
    assert_eq!(sorted.len(), seqs.len(), "no entry twice");

    // Events mode: one entry per event; the 20 KB argument split over
    // several records is whole; the oversized event came through a memfd.
    let entries = journal("audisp-events");
    let evs = events(&all);
    assert_eq!(entries.len(), evs.len(), "events in == entries out");
    let mut found_20k = 0;
    for (e, ev) in entries.iter().zip(&evs) {
        let want: Vec<u8> = ev
            .iter()
            .map(|r| message_of(r))
            .collect::<Vec<_>>()
            .join(&b'\n');
        assert_eq!(value(e, "MESSAGE"), want);
        // journald keeps each distinct FIELD=value once per entry.
        let mut types: Vec<Vec<u8>> = ev
            .iter()
            .map(|r| {
                let t = audisp::record::parse(r).unwrap().rtype;
                audisp::record_types::display(t).as_bytes().to_vec()
            })
            .collect();
        types.sort();
        types.dedup();
        let mut got = values(e, "AUDIT_TYPE_NAME");
        got.sort();
        assert_eq!(got, types);
        let a2 = values(e, "AUDIT_EXECVE_A2");
        if a2.first().is_some_and(|a| a.len() == 20_000) {
            assert!(a2[0].iter().all(|&b| b == b'a'));
            assert_eq!(value(e, "AUDIT_EXECVE_A1"), b"first");
            found_20k += 1;
        }
    }
    assert!(
        found_20k >= 1,
        "the 20 KB EXECVE event: {:?}",
        entries
            .iter()
            .find(|e| value(e, "AUDIT_ID") == b"1795422202.282:400038")
            .map(|e| e.keys().cloned().collect::<Vec<_>>())
    );
    let last = entries
        .iter()
        .find(|e| value(e, "AUDIT_ID") == b"1795429999.001:999001")
        .expect("the oversized event");
    assert_eq!(value(last, "AUDIT_EXECVE_A1"), huge_arg);
    assert_eq!(values(last, "AUDIT_KEY"), vec![b"exec".to_vec()]);
    assert!(
        log.contains("(1 through a memfd)"),
        "the plugin's report\n{}",
        d.log_tail(20)
    );
}

/// While nothing listens on the journal socket (journald stopped or
/// restarting) the plugin reports the refused entry and acknowledges
/// nothing; once a receiver is there, every record arrives exactly once, in
/// order. The receiver is a minimal stand-in reading the native protocol
/// (datagrams of `NAME=value` lines), so this runs without root.
#[test]
fn nothing_is_lost_while_journald_is_away() {
    use std::os::unix::net::UnixDatagram;
    let data = sample();
    let recs: Vec<Vec<u8>> = lines(&data).iter().take(300).map(|l| l.to_vec()).collect();
    let mut input = recs.join(&b'\n');
    input.push(b'\n');
    let bin = env!("CARGO_BIN_EXE_audisp-journal");
    let mut d = Dispatcher::new(
        r#"
[shutdown]
timeout = "60s"
[stats]
interval = "0"
"#,
    );
    let sock = d.path().join("journal.sock");
    d.write_plugin(
        "j",
        &format!(
            r#"exec = ["{bin}", "--name", "j", "--journal-socket", "{}", "--patience", "1"]
[restart]
initial = "50ms"
max = "200ms"
"#,
            sock.display()
        ),
    );
    d.start(Stdio::piped()).unwrap();
    // Standard input stays open: audispd runs on (and restarts the
    // plugin) until it closes.
    let mut stdin = d.child.as_mut().unwrap().stdin.take().unwrap();
    std::io::Write::write_all(&mut stdin, &input).unwrap();
    d.wait_log("refused entry AUDISP_SEQ=", Duration::from_secs(30));

    let server = UnixDatagram::bind(&sock).unwrap();
    server
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut got = Vec::new();
    let mut buf = vec![0u8; 1 << 20];
    while got.len() < recs.len() {
        let n = server.recv(&mut buf).unwrap_or_else(|e| {
            panic!(
                "no entry within 30 s ({e}), {} so far\n{}",
                got.len(),
                d.log_tail(40)
            )
        });
        let entry = &buf[..n];
        let msg = entry
            .split(|&b| b == b'\n')
            .find_map(|l| l.strip_prefix(b"MESSAGE="))
            .expect("MESSAGE");
        got.push(msg.to_vec());
    }
    drop(stdin);
    let status = d.wait(Duration::from_secs(60)).unwrap();
    assert!(status.success(), "{}", d.log_tail(40));
    assert!(d.log().contains("every plugin had every record"));
    let want: Vec<Vec<u8>> = recs.iter().map(|r| message_of(r)).collect();
    assert_eq!(got.len(), want.len(), "records in == entries out");
    assert!(got == want, "every record once, in order");
    // Nothing more arrives (no duplicate after the restart).
    server.set_nonblocking(true).unwrap();
    assert!(server.recv(&mut buf).is_err());
}
