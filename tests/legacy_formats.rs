//! Stock auditd plugins get auditd's own formats: the string format on a
//! stream socket a socket-activated unit listens on (`StandardInput=socket`),
//! and the binary format (16-byte host-endian header, protocol version 1,
//! exact frames, as auditd ≥ 4.1.1 writes it) on standard input.

mod support;

use std::io::Read;
use std::os::unix::net::UnixListener;
use std::process::Stdio;
use std::time::Duration;

use support::dispatcher::{feed, lines, sample, Dispatcher};

#[test]
fn string_format_on_a_stream_socket() {
    let mut d = Dispatcher::new("[shutdown]\ntimeout = \"30s\"\n[input.socket]\nenabled = false\n");
    let path = d.path().join("run/legacy.sock");
    let listener = UnixListener::bind(&path).unwrap();
    d.write_plugin(
        "legacy",
        &format!("socket = \"{}\"\nformat = \"string\"\n", path.display()),
    );
    d.start(Stdio::piped()).unwrap();
    let stdin = d.child.as_mut().unwrap().stdin.take().unwrap();
    let data = sample();
    let feeder = feed(stdin, data.clone());
    let (mut conn, _) = listener.accept().unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let reader = std::thread::spawn(move || {
        let mut got = Vec::new();
        conn.read_to_end(&mut got).unwrap();
        got
    });
    feeder.join().unwrap();
    let status = d.wait(Duration::from_secs(60)).unwrap();
    assert!(status.success(), "{}", d.log_tail(30));
    let got = reader.join().unwrap();
    assert!(got.ends_with(b"\n"), "every record ends with a newline");
    assert!(
        lines(&got) == lines(&data),
        "the socket got exactly the sample, one record per line"
    );
}

#[test]
fn binary_format_on_standard_input() {
    let mut d = Dispatcher::new("[shutdown]\ntimeout = \"30s\"\n[input.socket]\nenabled = false\n");
    d.write_plugin(
        "binary",
        r#"exec = ["/bin/sh", "-c", "exec cat > {dir}/out/binary"]
format = "binary""#,
    );
    d.start(Stdio::piped()).unwrap();
    let stdin = d.child.as_mut().unwrap().stdin.take().unwrap();
    let data = sample();
    feed(stdin, data.clone()).join().unwrap();
    let status = d.wait(Duration::from_secs(60)).unwrap();
    assert!(status.success(), "{}", d.log_tail(30));
    let got = std::fs::read(d.out("binary")).unwrap();
    let want = lines(&data);
    let mut pos = 0;
    let mut n = 0;
    while pos < got.len() {
        let word =
            |i: usize| u32::from_ne_bytes(got[pos + 4 * i..pos + 4 * i + 4].try_into().unwrap());
        let (ver, hlen, rtype, size) = (word(0), word(1), word(2), word(3) as usize);
        assert_eq!((ver, hlen), (1, 16), "frame {n}: header");
        let payload = &got[pos + 16..pos + 16 + size];
        assert_eq!(
            payload, want[n],
            "frame {n}: payload is the record, no newline"
        );
        let name =
            std::str::from_utf8(&payload[5..payload.iter().position(|&b| b == b' ').unwrap()])
                .unwrap();
        assert_eq!(
            audisp::record_types::display(rtype),
            name,
            "frame {n}: the header's type is the record's"
        );
        pos += 16 + size;
        n += 1;
    }
    assert_eq!(n, want.len(), "one exact frame per record");
}

/// A stock plugin that keeps up is written to by the thread that journals
/// the records (its sender lends it its work, `journal::HandOff`); one that
/// stops reading fills its socket, and its sender takes over again and
/// waits to write the rest. Both get every record once, in order, with
/// standard input fed in small writes (small appends, the ones that are
/// handed over).
#[test]
fn stock_plugins_fast_and_stalled_get_every_record_once() {
    use std::io::Write;
    let mut d = Dispatcher::new("[shutdown]\ntimeout = \"60s\"\n[input.socket]\nenabled = false\n");
    let mut listeners = Vec::new();
    for name in ["fast", "stalled"] {
        let path = d.path().join(format!("run/{name}.sock"));
        listeners.push(UnixListener::bind(&path).unwrap());
        d.write_plugin(
            name,
            &format!("socket = \"{}\"\nformat = \"string\"\n", path.display()),
        );
    }
    d.start(Stdio::piped()).unwrap();
    let mut stdin = d.child.as_mut().unwrap().stdin.take().unwrap();
    let data = support::dispatcher::sample_copies(5);
    let feeder = {
        let data = data.clone();
        std::thread::spawn(move || {
            for chunk in data.chunks(4096) {
                stdin.write_all(chunk).unwrap();
            }
        })
    };
    let mut conns = listeners.iter().map(|l| l.accept().unwrap().0);
    let (mut fast, mut stalled) = (conns.next().unwrap(), conns.next().unwrap());
    let reader = std::thread::spawn(move || {
        let mut got = Vec::new();
        fast.set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        fast.read_to_end(&mut got).unwrap();
        got
    });
    // The stalled plugin reads nothing until all 5 MB are written to
    // audispd: its socket holds a few hundred KB.
    feeder.join().unwrap();
    stalled
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut late = Vec::new();
    stalled.read_to_end(&mut late).unwrap();
    let status = d.wait(Duration::from_secs(60)).unwrap();
    assert!(status.success(), "{}", d.log_tail(30));
    let got = reader.join().unwrap();
    let want = lines(&data);
    assert_eq!(want.len(), 5 * 4380);
    assert!(
        lines(&got) == want,
        "the fast plugin got every record once, in order"
    );
    assert!(
        lines(&late) == want,
        "the stalled plugin got every record once, in order"
    );
}
