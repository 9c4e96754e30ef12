//! Bad input never stops audispd and never costs a good record.
//!
//! * Standard input, string format: empty lines, oversize lines, binary
//!   garbage and a cut-off last line among real records.
//! * Standard input, binary format: garbage between frames and a truncated
//!   final frame.
//! * The input socket: random bytes, a HELLO with a bad magic, oversize
//!   `RECORDS_IN` messages and records, a peer whose uid is not allowed.
//!
//! Each problem is logged once with where it was (stream offset, or who),
//! counted (`malformed=` in the state report), and answered by closing that
//! connection (REJECT where the protocol says: in answer to HELLO); audispd
//! keeps running and every good record reaches the plugin.

mod support;

use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use audisp::protocol::{self, FromDispatcher, Hello};
use audisp::sdk::InputClient;
use nix::sys::socket::{self, MsgFlags};
use support::dispatcher::{
    lines, sample, sink_plugin, texts, wait_sink, Dispatcher, MAIN_SMALL_JOURNAL,
};
use support::wait_until;

/// Deterministic bytes that are neither newlines nor, mostly, text.
fn garbage(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2654435761).max(1);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            match (x >> 24) as u8 {
                b'\n' => 0xff,
                b => b,
            }
        })
        .collect()
}

/// The `input stdin: …` warnings audispd logged, one per problem.
fn malformed_lines(log: &str) -> Vec<&str> {
    let id = format!("message_id=\"{}\"", audisp::log_ids::INPUT_MALFORMED);
    log.lines().filter(|l| l.contains(&id)).collect()
}

#[test]
fn string_stdin_skips_empty_oversize_and_truncated_lines_and_keeps_the_rest() {
    let mut d = Dispatcher::new(MAIN_SMALL_JOURNAL);
    d.write_plugin("sink", &sink_plugin("sink", "", ""));
    d.start(Stdio::piped()).unwrap();
    let data = sample();
    let good = lines(&data);
    let good = &good[..1200];

    // (what goes in, expected problem at this offset, or a delivered line)
    let mut stream = Vec::new();
    let mut expect_delivered: Vec<Vec<u8>> = Vec::new();
    let mut problems: Vec<(String, usize)> = Vec::new();
    for (i, rec) in good.iter().enumerate() {
        match i {
            100 => {
                problems.push(("empty line".into(), stream.len()));
                stream.push(b'\n');
            }
            300 => {
                problems.push(("oversize record".into(), stream.len()));
                stream.extend(std::iter::repeat_n(b'x', 20_000));
                stream.push(b'\n');
            }
            500 => {
                // Garbage that fits a line is delivered as it is, flagged
                // unparsed: audispd cannot know it is not a record.
                let g = garbage(300, 7);
                stream.extend_from_slice(&g);
                stream.push(b'\n');
                expect_delivered.push(g);
            }
            700 => {
                problems.push(("oversize record".into(), stream.len()));
                // One byte over the limit, arriving in pieces.
                stream.extend(std::iter::repeat_n(b'y', 10 * 1024 + 1));
                stream.push(b'\n');
                problems.push(("empty line".into(), stream.len()));
                stream.push(b'\n');
            }
            900 => {
                let g = garbage(9000, 11);
                stream.extend_from_slice(&g);
                stream.push(b'\n');
                expect_delivered.push(g);
            }
            _ => {}
        }
        stream.extend_from_slice(rec);
        stream.push(b'\n');
        expect_delivered.push(rec.to_vec());
    }
    let mut stdin = d.child.as_mut().unwrap().stdin.take().unwrap();
    for chunk in stream.chunks(4093) {
        stdin.write_all(chunk).unwrap();
    }
    let out = wait_sink(
        &d.out("sink"),
        expect_delivered.len(),
        Duration::from_secs(20),
    );
    let want: Vec<&[u8]> = expect_delivered.iter().map(|v| &v[..]).collect();
    assert!(
        texts(&out) == want,
        "the plugin got every good line, in order, and nothing else ({} vs {})",
        out.records.len(),
        want.len()
    );
    let st = d.input_state("stdin");
    assert_eq!(st.get("malformed"), problems.len() as u64, "{st:?}");
    assert_eq!(st.get("unparsed"), 2, "{st:?}");
    assert_eq!(st.get("records"), want.len() as u64, "{st:?}");
    assert!(d.running(), "audispd keeps running");

    // A last line cut off by the end of the stream.
    let tail_at = stream.len();
    stdin.write_all(b"type=SYSCALL msg=audit(17").unwrap();
    drop(stdin);
    problems.push(("truncated record".into(), tail_at));
    let status = d.wait(Duration::from_secs(20)).unwrap();
    assert!(status.success(), "{status}\n{}", d.log_tail(40));

    let log = d.log();
    let logged = malformed_lines(&log);
    assert_eq!(
        logged.len(),
        problems.len(),
        "one log line per problem:\n{}",
        logged.join("\n")
    );
    for (what, at) in &problems {
        let needle = format!("{what} at byte {at}");
        assert_eq!(
            logged.iter().filter(|l| l.contains(&needle)).count(),
            1,
            "{needle:?} logged once:\n{}",
            logged.join("\n")
        );
    }
    assert_eq!(read_count(&d), want.len(), "nothing more arrived");
}

fn read_count(d: &Dispatcher) -> usize {
    support::dispatcher::read_sink(&d.out("sink")).records.len()
}

/// auditd's binary frame: host-endian `{ver, hlen, type, size}` + payload.
fn frame(rec: &[u8]) -> Vec<u8> {
    let name_start = rec.windows(5).position(|w| w == b"type=").unwrap() + 5;
    let name_end = name_start + rec[name_start..].iter().position(|&b| b == b' ').unwrap();
    let rtype = audisp::record_types::number(&rec[name_start..name_end]).unwrap_or(1);
    let mut f = Vec::with_capacity(16 + rec.len());
    for w in [1u32, 16, rtype, rec.len() as u32] {
        f.extend_from_slice(&w.to_ne_bytes());
    }
    f.extend_from_slice(rec);
    f
}

#[test]
fn binary_stdin_resynchronises_after_garbage_and_reports_a_truncated_frame() {
    let mut d = Dispatcher::new(&format!(
        "{MAIN_SMALL_JOURNAL}\n[input.stdin]\nformat = \"binary\"\nbinary_framing = \"exact\"\n"
    ));
    d.write_plugin("sink", &sink_plugin("sink", "", ""));
    d.start(Stdio::piped()).unwrap();
    let data = sample();
    let good = lines(&data);
    let good = &good[..1500];
    let mut stream = Vec::new();
    let mut garbage_at = Vec::new();
    for (i, rec) in good.iter().enumerate() {
        if [200, 650, 1100].contains(&i) {
            garbage_at.push(stream.len());
            stream.extend_from_slice(&garbage(37 + i, i as u32));
        }
        stream.extend_from_slice(&frame(rec));
    }
    let mut stdin = d.child.as_mut().unwrap().stdin.take().unwrap();
    for chunk in stream.chunks(8191) {
        stdin.write_all(chunk).unwrap();
    }
    let out = wait_sink(&d.out("sink"), good.len(), Duration::from_secs(20));
    assert!(
        texts(&out) == good,
        "every frame after the garbage was found, in order"
    );
    let st = d.input_state("stdin");
    assert_eq!(st.get("malformed"), garbage_at.len() as u64, "{st:?}");
    assert_eq!(st.get("records"), good.len() as u64, "{st:?}");
    assert!(d.running(), "audispd keeps running");

    // A final frame whose payload the stream does not finish.
    let tail_at = stream.len();
    let last = frame(good[0]);
    stdin.write_all(&last[..16 + 40]).unwrap();
    drop(stdin);
    let status = d.wait(Duration::from_secs(20)).unwrap();
    assert!(status.success(), "{status}\n{}", d.log_tail(40));
    let log = d.log();
    let logged = malformed_lines(&log);
    for at in &garbage_at {
        let needle = format!("at byte {at}:");
        assert_eq!(
            logged.iter().filter(|l| l.contains(&needle)).count(),
            1,
            "garbage at {at} logged once:\n{}",
            logged.join("\n")
        );
    }
    let needle = format!("truncated record at byte {tail_at}");
    assert!(
        logged.iter().any(|l| l.contains(&needle)),
        "{needle:?} not logged:\n{}",
        logged.join("\n")
    );
    assert_eq!(
        logged.len(),
        garbage_at.len() + 1,
        "one line per problem:\n{}",
        logged.join("\n")
    );
    assert_eq!(
        read_count(&d),
        good.len(),
        "the cut frame was not delivered"
    );
}

// ---------------------------------------------------------------------------
// The input socket

fn connect(path: &Path) -> OwnedFd {
    let fd = socket::socket(
        socket::AddressFamily::Unix,
        socket::SockType::SeqPacket,
        socket::SockFlag::SOCK_CLOEXEC,
        None,
    )
    .unwrap();
    socket::connect(fd.as_raw_fd(), &socket::UnixAddr::new(path).unwrap()).unwrap();
    fd
}

fn send(fd: &OwnedFd, msg: &[u8]) {
    socket::send(fd.as_raw_fd(), msg, MsgFlags::MSG_NOSIGNAL).unwrap();
}

/// Every message the dispatcher sends until it closes the connection.
/// Fails if it is still open after `limit`.
fn until_closed(fd: &OwnedFd, limit: Duration) -> Vec<Vec<u8>> {
    let deadline = Instant::now() + limit;
    let mut got = Vec::new();
    let mut buf = vec![0u8; protocol::MAX_MESSAGE];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "the connection is still open; got {got:?}");
        let mut fds = [nix::poll::PollFd::new(
            fd.as_fd(),
            nix::poll::PollFlags::POLLIN,
        )];
        let _ = nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(100u16));
        match socket::recv(fd.as_raw_fd(), &mut buf, MsgFlags::MSG_DONTWAIT) {
            Ok(0) => return got,
            Ok(n) => got.push(buf[..n].to_vec()),
            Err(nix::errno::Errno::EAGAIN) => {}
            Err(nix::errno::Errno::ECONNRESET) => return got,
            Err(e) => panic!("recv: {e}"),
        }
    }
}

fn is_reject(msg: &[u8]) -> Option<String> {
    match protocol::decode_from_dispatcher(msg) {
        Ok(FromDispatcher::Reject(why)) => Some(why.to_string()),
        _ => None,
    }
}

/// Says HELLO as input `name`; returns the connection after WELCOME.
fn hello(path: &Path, name: &str) -> OwnedFd {
    let fd = connect(path);
    send(&fd, &protocol::encode_hello(&Hello::input(name, [9; 16])));
    let mut buf = vec![0u8; protocol::MAX_MESSAGE];
    let mut fds = [nix::poll::PollFd::new(
        fd.as_fd(),
        nix::poll::PollFlags::POLLIN,
    )];
    nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(5000u16)).unwrap();
    let n = socket::recv(fd.as_raw_fd(), &mut buf, MsgFlags::MSG_DONTWAIT).unwrap();
    assert!(
        matches!(
            protocol::decode_from_dispatcher(&buf[..n]),
            Ok(FromDispatcher::Welcome(_))
        ),
        "expected WELCOME"
    );
    fd
}

/// A `RECORDS_IN` message with `records` numbered from `first`.
fn records_in(first: u64, records: &[&[u8]]) -> Vec<u8> {
    let mut m = vec![protocol::kind::RECORDS_IN];
    m.extend_from_slice(&(records.len() as u16).to_le_bytes());
    for (i, r) in records.iter().enumerate() {
        m.extend_from_slice(&(first + i as u64).to_le_bytes());
        m.extend_from_slice(&0u32.to_le_bytes());
        m.extend_from_slice(&(r.len() as u32).to_le_bytes());
        m.extend_from_slice(r);
    }
    m
}

/// A good input and a sink, with bad clients between the good input's
/// batches.
struct SocketCase {
    d: Dispatcher,
    good: InputClient,
    records: Vec<Vec<u8>>,
    sent: usize,
}

impl SocketCase {
    fn new(extra_main: &str) -> SocketCase {
        let mut d = Dispatcher::new(&format!("{MAIN_SMALL_JOURNAL}\n{extra_main}"));
        d.write_plugin("sink", &sink_plugin("sink", "", ""));
        d.start(Stdio::null()).unwrap();
        let (good, start) = InputClient::connect(&d.input_socket(), "good", [1; 16]).unwrap();
        assert_eq!(start, 0);
        let data = sample();
        let records = lines(&data)[..2000].iter().map(|r| r.to_vec()).collect();
        SocketCase {
            d,
            good,
            records,
            sent: 0,
        }
    }

    /// The good input sends its next `n` records and sees them acknowledged.
    fn send_good(&mut self, n: usize) {
        let from = self.sent;
        let to = (from + n).min(self.records.len());
        self.good
            .send(
                self.records[from..to]
                    .iter()
                    .enumerate()
                    .map(|(i, r)| ((from + i + 1) as u64, 0, &r[..])),
            )
            .unwrap();
        self.good
            .wait_acked(to as u64, Duration::from_secs(10))
            .unwrap();
        self.sent = to;
    }

    /// Sends the rest; the sink must have every record, in order, once.
    fn finish(mut self) -> Dispatcher {
        self.send_good(self.records.len());
        let out = wait_sink(
            &self.d.out("sink"),
            self.records.len(),
            Duration::from_secs(20),
        );
        let want: Vec<&[u8]> = self.records.iter().map(|r| &r[..]).collect();
        assert!(texts(&out) == want, "the good input's records all arrived");
        let st = self.d.input_state("good");
        assert_eq!(st.get("records"), want.len() as u64, "{st:?}");
        assert_eq!(st.get("malformed"), 0, "{st:?}");
        assert!(self.d.running());
        self.d
    }
}

#[test]
fn socket_random_bytes_and_bad_magic_are_rejected_and_closed() {
    let mut c = SocketCase::new("");
    c.send_good(300);

    let fd = connect(&c.d.input_socket());
    send(&fd, &garbage(500, 3));
    let got = until_closed(&fd, Duration::from_secs(10));
    assert_eq!(got.len(), 1, "one REJECT, then closed: {got:?}");
    let why = is_reject(&got[0]).expect("REJECT");
    assert!(!why.is_empty());
    c.send_good(300);

    let mut bad = protocol::encode_hello(&Hello::input("magic", [2; 16]));
    bad[1..5].copy_from_slice(b"ADSQ");
    let fd = connect(&c.d.input_socket());
    send(&fd, &bad);
    let got = until_closed(&fd, Duration::from_secs(10));
    assert_eq!(got.len(), 1, "one REJECT, then closed: {got:?}");
    let why = is_reject(&got[0]).expect("REJECT");
    assert!(
        why.contains("magic") || why.contains("ADSP"),
        "the REJECT says what was wrong: {why}"
    );
    c.send_good(300);

    // Output plugins do not connect to the input socket.
    let fd = connect(&c.d.input_socket());
    send(&fd, &protocol::encode_hello(&Hello::output("confused")));
    let got = until_closed(&fd, Duration::from_secs(10));
    assert!(
        got.len() == 1 && is_reject(&got[0]).is_some(),
        "REJECT: {got:?}"
    );

    let d = c.finish();
    let log = d.log();
    assert_eq!(
        log.matches("bad HELLO").count(),
        2,
        "each bad HELLO logged once\n{}",
        d.log_tail(30)
    );
}

#[test]
fn socket_oversize_records_in_closes_that_connection_only() {
    let mut c = SocketCase::new("");
    c.send_good(200);
    let rec = c.records[0].clone();

    // Far over the message limit: the dispatcher cannot even read it whole.
    let fd = hello(&c.d.input_socket(), "huge");
    socket::setsockopt(&fd, socket::sockopt::SndBuf, &(1 << 20)).unwrap();
    let many: Vec<&[u8]> = std::iter::repeat_n(&rec[..], 200_000 / rec.len()).collect();
    let msg = records_in(1, &many);
    assert!(msg.len() > 150_000);
    send(&fd, &msg);
    let got = until_closed(&fd, Duration::from_secs(10));
    assert!(
        got.iter().all(|m| is_reject(m).is_some()),
        "nothing but a REJECT before closing (no INPUT_ACK): {got:?}"
    );
    c.send_good(200);

    // A record longer than a record may be (10 KiB), in a message that fits.
    let fd = hello(&c.d.input_socket(), "long");
    let long = vec![b'z'; 10 * 1024 + 1];
    send(&fd, &records_in(1, &[&long]));
    let got = until_closed(&fd, Duration::from_secs(10));
    assert!(
        got.iter().all(|m| is_reject(m).is_some()),
        "no INPUT_ACK for an oversize record: {got:?}"
    );
    c.send_good(200);

    let d = c.finish();
    let report = d.state();
    for name in ["huge", "long"] {
        let st = support::dispatcher::state_line(&report, "input", name)
            .unwrap_or_else(|| panic!("input {name} in\n{report}"));
        assert_eq!(st.get("malformed"), 1, "{name}: {st:?}");
        assert_eq!(st.get("records"), 0, "{name}: {st:?}");
    }
    assert!(
        d.log().matches("protocol error").count() >= 2,
        "{}",
        d.log_tail(30)
    );
}

#[test]
fn socket_records_in_just_over_the_message_limit_is_refused() {
    let mut c = SocketCase::new("");
    c.send_good(200);
    let rec = c.records[0].clone();
    // MAX_MESSAGE + a few bytes: small enough to be read whole, too large
    // for the protocol (docs/protocol.md: at most 131072 bytes).
    let mut many: Vec<Vec<u8>> = Vec::new();
    let mut size = 3;
    while size + 16 + rec.len() <= protocol::MAX_MESSAGE {
        many.push(rec.clone());
        size += 16 + rec.len();
    }
    let fill = protocol::MAX_MESSAGE - size + 16;
    many.push(vec![b'w'; fill.min(10 * 1024)]);
    let refs: Vec<&[u8]> = many.iter().map(|r| &r[..]).collect();
    let msg = records_in(1, &refs);
    assert!(
        msg.len() > protocol::MAX_MESSAGE && msg.len() <= protocol::MAX_MESSAGE + 64,
        "{}",
        msg.len()
    );
    let fd = hello(&c.d.input_socket(), "over");
    send(&fd, &msg);
    let got = until_closed(&fd, Duration::from_secs(10));
    assert!(
        got.iter().all(|m| is_reject(m).is_some()),
        "a {}-byte message (limit {}) was acknowledged: {got:?}",
        msg.len(),
        protocol::MAX_MESSAGE
    );
    let d = c.finish();
    let st = d.input_state("over");
    assert_eq!(st.get("records"), 0, "{st:?}");
    assert_eq!(st.get("malformed"), 1, "{st:?}");
}

/// Resumes a stopped process when dropped (also when a test fails).
struct Cont(nix::unistd::Pid);

impl Drop for Cont {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(self.0, nix::sys::signal::Signal::SIGCONT);
    }
}

/// Connects as `uid`/`gid` from a forked child and says HELLO; returns the
/// kind of the first answer and 1 if the connection was closed after it, or
/// 0 and the errno of the failed read (0: closed without an answer).
///
/// The dispatcher (`server`) is stopped (SIGSTOP) until the HELLO is sent,
/// so that it is in the connection before the dispatcher looks at it, as
/// when a client is quicker than the dispatcher's accept; the child reads
/// the answer a moment after the dispatcher resumed. Only async-signal-safe
/// calls after fork.
fn hello_as(uid: u32, gid: u32, path: &Path, server: u32) -> (u8, u8) {
    let server = nix::unistd::Pid::from_raw(server as i32);
    nix::sys::signal::kill(server, nix::sys::signal::Signal::SIGSTOP).unwrap();
    let cont = Cont(server);
    wait_until(Duration::from_secs(5), "audispd to be stopped", || {
        std::fs::read_to_string(format!("/proc/{server}/stat"))
            .ok()
            .and_then(|s| s.rsplit(") ").next().map(|r| r.starts_with('T')))
            .unwrap_or(false)
    });
    let (sent_rd, sent_wr) = nix::unistd::pipe().unwrap();
    let hello = protocol::encode_hello(&Hello::input("stranger", [3; 16]));
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let p = path.as_os_str().as_encoded_bytes();
    assert!(p.len() < addr.sun_path.len());
    for (d, s) in addr.sun_path.iter_mut().zip(p) {
        *d = *s as libc::c_char;
    }
    let (rd, wr) = nix::unistd::pipe().unwrap();
    // SAFETY: the child only makes system calls on memory prepared above,
    // then _exits.
    match unsafe { nix::unistd::fork() }.unwrap() {
        nix::unistd::ForkResult::Child => unsafe {
            let mut result = [0u8; 2];
            let said = [1u8];
            if libc::setgroups(0, std::ptr::null()) != 0
                || libc::setgid(gid) != 0
                || libc::setuid(uid) != 0
            {
                result = [0xfe, 0];
            } else {
                let fd = libc::socket(libc::AF_UNIX, libc::SOCK_SEQPACKET, 0);
                let tv = libc::timeval {
                    tv_sec: 10,
                    tv_usec: 0,
                };
                libc::setsockopt(
                    fd,
                    libc::SOL_SOCKET,
                    libc::SO_RCVTIMEO,
                    (&tv as *const libc::timeval).cast(),
                    std::mem::size_of::<libc::timeval>() as libc::socklen_t,
                );
                if libc::connect(
                    fd,
                    (&addr as *const libc::sockaddr_un).cast(),
                    std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t,
                ) != 0
                {
                    result = [0xfd, 0];
                } else {
                    libc::send(fd, hello.as_ptr().cast(), hello.len(), libc::MSG_NOSIGNAL);
                    libc::write(sent_wr.as_raw_fd(), said.as_ptr().cast(), 1);
                    // Read the answer a moment later, as a busy client
                    // would: the REJECT must still be there to read.
                    libc::usleep(300_000);
                    let mut buf = [0u8; 4096];
                    let n = libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0);
                    if n > 0 {
                        result[0] = buf[0];
                        // Closed: end of stream, or a reset because the
                        // dispatcher closed with our HELLO unread.
                        let m = libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0);
                        let reset = m < 0 && *libc::__errno_location() == libc::ECONNRESET;
                        result[1] = u8::from(m == 0 || reset);
                    } else if n == 0 {
                        result = [0, 0];
                    } else {
                        result = [0, *libc::__errno_location() as u8];
                    }
                }
            }
            libc::write(sent_wr.as_raw_fd(), said.as_ptr().cast(), 1);
            libc::write(wr.as_raw_fd(), result.as_ptr().cast(), 2);
            libc::_exit(0);
        },
        nix::unistd::ForkResult::Parent { child } => {
            drop(wr);
            drop(sent_wr);
            let mut said = [0u8; 1];
            std::io::Read::read_exact(&mut std::fs::File::from(sent_rd), &mut said).unwrap();
            drop(cont);
            let mut result = [0u8; 2];
            let mut f = std::fs::File::from(rd);
            std::io::Read::read_exact(&mut f, &mut result).unwrap();
            nix::sys::wait::waitpid(child, None).unwrap();
            assert_ne!(result[0], 0xfe, "could not become uid {uid}");
            assert_ne!(result[0], 0xfd, "uid {uid} could not connect");
            (result[0], result[1])
        }
    }
}

#[test]
fn socket_peer_with_a_uid_not_allowed_is_rejected() {
    if !nix::unistd::geteuid().is_root() {
        support::skip("needs root to connect as another uid");
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    // The socket is open to everyone at the file level so that the
    // credentials check is what refuses.
    let mut c = SocketCase::new("[input.socket]\nmode = \"0666\"\n");
    for dir in [c.d.path().to_path_buf(), c.d.path().join("run")] {
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    c.send_good(500);
    let (kind, detail) = hello_as(
        support::NOBODY,
        support::NOBODY,
        &c.d.input_socket(),
        c.d.pid(),
    );
    assert_eq!(
        kind,
        protocol::kind::REJECT,
        "uid {} got no REJECT: {}",
        support::NOBODY,
        match (kind, detail) {
            (0, 0) => "the connection was closed without one".to_string(),
            (0, errno) => format!(
                "reading the answer failed: {}",
                std::io::Error::from_raw_os_error(errno.into())
            ),
            _ => format!("message kind {kind:#x}"),
        }
    );
    assert_eq!(detail, 1, "the connection was closed after the REJECT");
    c.send_good(500);
    let d = c.finish();
    let log = d.log();
    assert!(
        log.contains(&format!("uid {}", support::NOBODY)) && log.contains("is not allowed"),
        "{}",
        d.log_tail(30)
    );
    assert!(
        !d.state().contains("input stranger"),
        "a refused peer never became an input"
    );
}
