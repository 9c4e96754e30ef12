//! audisp-af_unix end to end: real records through a real audispd into the
//! plugin, read by real readers on its socket.
//!
//! * A reader written in a few lines of Python gets exactly auditd's string
//!   stream (`tests/data/sample.log`, as auditd 3.0.9 wrote it), byte for
//!   byte, and the plugin logs who it is (SO_PEERCRED).
//! * A reader that never reads delays neither another reader nor a second
//!   plugin: it is disconnected, everyone else gets every record.
//! * With `--slow-reader skip` such a reader misses records instead, and the
//!   gap markers it gets account for every one of them.
//! * 100 readers connecting and disconnecting while records flow only ever
//!   get whole records, and a steady reader still gets all of them.
//! * Binary output is byte for byte what a real auditd wrote to a binary
//!   plugin, in both framings (needs root and kernel audit).

mod support;

use std::collections::HashSet;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use support::auditd::{AuditdOptions, Framing, LogFormat, Plugin, PluginFormat, RealAuditd};
use support::dispatcher::{
    feed, lines, read_sink, sample, sample_copies, sink_plugin, texts, Dispatcher, MAIN_NO_STATS,
};

const BIN: &str = env!("CARGO_BIN_EXE_audisp-af_unix");

/// Debian's Python (not a developer's pyenv): what CI installs.
const PYTHON: &str = "/usr/bin/python3";

/// A reader as a user would write one: connect, copy everything to a file
/// until the plugin closes the socket.
const PY_READER: &str = "import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect(sys.argv[1])
with open(sys.argv[2], 'wb') as f:
    while True:
        b = s.recv(65536)
        if not b:
            break
        f.write(b)
";

fn have_python() -> bool {
    if Path::new(PYTHON).exists() {
        return true;
    }
    support::skip("/usr/bin/python3 missing (apt-get install python3)");
    false
}

/// A plugins.d body running audisp-af_unix on `socket` with `args`.
fn af_unix_plugin(name: &str, socket: &Path, args: &[&str]) -> String {
    let mut exec = vec![
        BIN.to_string(),
        "--no-config".into(),
        "--name".into(),
        name.into(),
        "--socket".into(),
        socket.display().to_string(),
    ];
    exec.extend(args.iter().map(|s| s.to_string()));
    let exec: Vec<String> = exec.iter().map(|a| format!("{a:?}")).collect();
    format!("exec = [{}]\n", exec.join(", "))
}

/// The Python reader, copying `socket` into `out`.
struct PyReader(Child);

impl PyReader {
    fn start(socket: &Path, out: &Path) -> PyReader {
        PyReader(
            Command::new(PYTHON)
                .args(["-c", PY_READER])
                .arg(socket)
                .arg(out)
                .spawn()
                .expect("python3"),
        )
    }

    fn pid(&self) -> u32 {
        self.0.id()
    }

    /// Waits for it to have read to the end.
    fn finish(mut self) {
        let status = self.0.wait().expect("reader");
        assert!(status.success(), "reader: {status}");
    }
}

impl Drop for PyReader {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts audispd and waits until the plugin serves `n` af_unix sockets.
fn start(d: &mut Dispatcher, n: usize) {
    d.start(Stdio::piped()).unwrap();
    support::wait_until(Duration::from_secs(30), "the readers' sockets", || {
        d.log()
            .matches("audisp-af_unix: serving readers on")
            .count()
            >= n
    });
}

/// Waits until the plugin has accepted `n` readers in all (its log says
/// "reader N connected: pid …"; a departure reads "disconnected").
fn wait_readers(d: &Dispatcher, n: usize) {
    support::wait_until(Duration::from_secs(30), "readers to be accepted", || {
        d.log().matches(" connected: ").count() >= n
    });
}

/// Feeds `data` as audispd's standard input, closes it and waits for
/// audispd to have handed every record to every plugin and exited.
fn run_to_end(d: &mut Dispatcher, data: Vec<u8>) {
    let stdin = d.child.as_mut().unwrap().stdin.take().unwrap();
    feed(stdin, data).join().unwrap();
    let status = d.wait(Duration::from_secs(600)).unwrap();
    assert!(status.success(), "audispd: {status}\n{}", d.log_tail(60));
    assert!(
        d.log().contains("every plugin had every record"),
        "{}",
        d.log_tail(60)
    );
}

#[test]
fn a_python_reader_gets_auditds_string_stream_byte_for_byte() {
    if !have_python() {
        return;
    }
    let mut d = Dispatcher::new(MAIN_NO_STATS);
    let socket = d.path().join("run/audispd_events");
    d.write_plugin("af_unix", &af_unix_plugin("af_unix", &socket, &[]));
    start(&mut d, 1);
    let out = d.out("reader");
    let reader = PyReader::start(&socket, &out);
    wait_readers(&d, 1);
    let pid = reader.pid();
    run_to_end(&mut d, sample());
    reader.finish();
    let got = std::fs::read(&out).unwrap();
    let want = sample();
    assert_eq!(lines(&got).len(), lines(&want).len(), "records in == out");
    assert!(got == want, "the reader's stream differs from sample.log");
    let log = d.log();
    assert!(
        log.contains(&format!("reader 1 connected: pid {pid} uid 0 gid 0")),
        "{log}"
    );
    // The plugin's own socket goes with it.
    assert!(!socket.exists());
}

/// A reader in a thread of the test: copies the socket into memory until
/// the plugin closes it, counting the bytes as they come.
struct Collector {
    progress: Arc<AtomicUsize>,
    thread: std::thread::JoinHandle<Vec<u8>>,
}

impl Collector {
    fn start(socket: &Path) -> Collector {
        let mut s = UnixStream::connect(socket).unwrap();
        let progress = Arc::new(AtomicUsize::new(0));
        let p = progress.clone();
        let thread = std::thread::spawn(move || {
            let mut got = Vec::new();
            let mut buf = vec![0u8; 1 << 16];
            loop {
                match s.read(&mut buf) {
                    Ok(0) => return got,
                    Ok(n) => {
                        got.extend_from_slice(&buf[..n]);
                        p.store(got.len(), Ordering::Release);
                    }
                    Err(e) => panic!("reader: {e}"),
                }
            }
        });
        Collector { progress, thread }
    }

    fn finish(self) -> Vec<u8> {
        self.thread.join().unwrap()
    }
}

/// Feeds `data` to audispd in whole lines, about 64 KiB at a time, each
/// piece once `reader` has received everything before it, so that reader
/// never falls behind by more than a piece however the machine schedules
/// it; then closes standard input and waits for audispd to finish.
fn paced_run(d: &mut Dispatcher, data: &[u8], reader: &Collector) {
    let mut stdin = d.child.as_mut().unwrap().stdin.take().unwrap();
    let mut sent = 0;
    while sent < data.len() {
        let end = (sent + (64 << 10)).min(data.len());
        let end = data[end - 1..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(data.len(), |i| end + i);
        stdin.write_all(&data[sent..end]).unwrap();
        sent = end;
        if let Err(e) = support::try_wait_until(Duration::from_secs(60), "the reader", || {
            Ok(reader.progress.load(Ordering::Acquire) >= sent)
        }) {
            let log = d.log();
            let about: Vec<&str> = log
                .lines()
                .filter(|l| !l.starts_with("audisp-af_unix: reader ") || l.contains("reader 1 "))
                .collect();
            panic!(
                "{e} to catch up: it has {} of {sent} bytes\n{}",
                reader.progress.load(Ordering::Acquire),
                about.join("\n")
            );
        }
    }
    drop(stdin);
    let status = d.wait(Duration::from_secs(600)).unwrap();
    assert!(status.success(), "audispd: {status}\n{}", d.log_tail(60));
    assert!(d.log().contains("every plugin had every record"));
}

#[test]
fn a_reader_that_never_reads_delays_no_other_reader_or_plugin() {
    let data = sample_copies(8);
    let mut d = Dispatcher::new(MAIN_NO_STATS);
    let socket = d.path().join("run/audispd_events");
    d.write_plugin(
        "af_unix",
        &af_unix_plugin("af_unix", &socket, &["--reader-buffer", "1M"]),
    );
    d.write_plugin("sink", &sink_plugin("sink", "", ""));
    start(&mut d, 1);
    let mut stuck = UnixStream::connect(&socket).unwrap();
    wait_readers(&d, 1);
    let reader = Collector::start(&socket);
    wait_readers(&d, 2);
    paced_run(&mut d, &data, &reader);
    let got = reader.finish();
    assert!(got == data, "the reading reader missed records");
    let sink = read_sink(&d.out("sink"));
    assert_eq!(
        texts(&sink),
        lines(&data),
        "the second plugin missed records"
    );
    let log = d.log();
    assert!(
        log.contains("audisp-af_unix: reader 1 (") && log.contains("disconnected: fell behind"),
        "the stuck reader was not dropped:\n{log}"
    );
    // What the stuck reader did get is the start of the stream.
    let mut stuck_got = Vec::new();
    stuck.read_to_end(&mut stuck_got).unwrap();
    assert!(stuck_got.len() < data.len());
    assert!(data.starts_with(&stuck_got));
}

#[test]
fn a_skipping_reader_is_told_of_every_record_it_missed() {
    let data = sample_copies(8);
    let want = lines(&data);
    let mut d = Dispatcher::new(MAIN_NO_STATS);
    let socket = d.path().join("run/audispd_events");
    d.write_plugin(
        "af_unix",
        &af_unix_plugin(
            "af_unix",
            &socket,
            &["--reader-buffer", "256K", "--slow-reader", "skip"],
        ),
    );
    start(&mut d, 1);
    let mut slow = UnixStream::connect(&socket).unwrap();
    wait_readers(&d, 1);
    let mut stdin = d.child.as_mut().unwrap().stdin.take().unwrap();
    stdin.write_all(&data).unwrap();
    support::wait_until(
        Duration::from_secs(120),
        "the plugin to have every record",
        || d.plugin_state("af_unix").get("acked") >= want.len() as u64,
    );
    // Only now does it read: what it holds was queued while it did not, and
    // the marker for the last records it missed comes once records pause.
    slow.set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut got = Vec::new();
    let mut records: Vec<Vec<u8>> = Vec::new();
    let mut skipped = 0u64;
    let mut gaps = 0;
    let mut buf = vec![0u8; 1 << 16];
    while records.len() as u64 + skipped < want.len() as u64 {
        let n = slow
            .read(&mut buf)
            .expect("records or a gap marker within 60s");
        assert!(n > 0, "the plugin hung up");
        got.extend_from_slice(&buf[..n]);
        let Some(end) = got.iter().rposition(|&b| b == b'\n') else {
            continue;
        };
        let complete: Vec<u8> = got.drain(..=end).collect();
        for l in lines(&complete) {
            let text = String::from_utf8_lossy(l);
            if let Some(rest) = text.strip_prefix("type=DAEMON_ERR msg=audit(") {
                assert!(rest.contains(":0): op=reader-gap skipped="), "{text}");
                let n = rest
                    .split(" skipped=")
                    .nth(1)
                    .and_then(|r| r.split(' ').next())
                    .and_then(|n| n.parse::<u64>().ok())
                    .unwrap_or_else(|| panic!("bad gap marker {text}"));
                skipped += n;
                gaps += 1;
            } else {
                records.push(l.to_vec());
            }
        }
    }
    drop(stdin);
    assert!(d.wait(Duration::from_secs(120)).unwrap().success());
    assert!(gaps >= 1 && skipped > 0, "nothing was skipped");
    assert_eq!(
        records.len() as u64 + skipped,
        want.len() as u64,
        "records received + records reported skipped == records sent"
    );
    // In order, each one of the stream.
    let mut at = 0;
    for r in &records {
        at += want[at..]
            .iter()
            .position(|w| *w == &r[..])
            .unwrap_or_else(|| panic!("record out of order or unknown"))
            + 1;
    }
}

#[test]
fn a_hundred_readers_come_and_go_while_records_flow() {
    let data = sample_copies(8);
    let known: HashSet<Vec<u8>> = lines(&data).iter().map(|l| l.to_vec()).collect();
    let mut d = Dispatcher::new(MAIN_NO_STATS);
    let socket = d.path().join("run/audispd_events");
    d.write_plugin(
        "af_unix",
        &af_unix_plugin("af_unix", &socket, &["--max-readers", "128"]),
    );
    start(&mut d, 1);
    let steady = Collector::start(&socket);
    wait_readers(&d, 1);

    let stop = Arc::new(AtomicBool::new(false));
    let connections = Arc::new(AtomicUsize::new(0));
    let mut threads = Vec::new();
    for t in 0..100usize {
        let (socket, stop, connections) = (socket.clone(), stop.clone(), connections.clone());
        threads.push(std::thread::spawn(move || {
            let mut whole = Vec::new();
            let mut k = 0usize;
            while !stop.load(Ordering::Relaxed) || k == 0 {
                k += 1;
                let Ok(mut s) = UnixStream::connect(&socket) else {
                    continue;
                };
                connections.fetch_add(1, Ordering::Relaxed);
                s.set_read_timeout(Some(Duration::from_millis(200)))
                    .unwrap();
                // Read a different amount each time, then hang up.
                let want = 1 + (t * 7919 + k * 104_729) % 300_000;
                let mut got = Vec::new();
                let mut buf = vec![0u8; 16384];
                while got.len() < want {
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                // Complete lines only: the last may have been cut by us.
                if let Some(end) = got.iter().rposition(|&b| b == b'\n') {
                    whole.push(got[..=end].to_vec());
                }
            }
            whole
        }));
    }
    paced_run(&mut d, &data, &steady);
    stop.store(true, Ordering::Relaxed);
    assert!(steady.finish() == data, "the steady reader missed records");

    let mut pieces = 0;
    for t in threads {
        for piece in t.join().unwrap() {
            pieces += 1;
            for l in lines(&piece) {
                assert!(
                    known.contains(l),
                    "a reader got a partial or foreign record"
                );
            }
        }
    }
    let n = connections.load(Ordering::Relaxed);
    assert!(n >= 100, "{n} connections");
    let log = d.log();
    assert_eq!(
        log.matches("started the program of plugin").count(),
        1,
        "the plugin restarted:\n{}",
        d.log_tail(40)
    );
    assert!(pieces > 0, "no transient reader got a whole record");
}

/// Frames of a binary plugin stream: the first `16 + size` bytes of each.
fn frames(raw: &[u8], framing: Framing) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut at = 0;
    while at + 16 <= raw.len() {
        let size = u32::from_ne_bytes(raw[at + 12..at + 16].try_into().unwrap()) as usize;
        out.push(&raw[at..at + 16 + size]);
        at += match framing {
            Framing::Padded => 16 + 8970,
            Framing::Exact => 16 + size,
        };
    }
    out
}

#[test]
fn binary_output_is_what_auditd_writes_to_a_binary_plugin() {
    if let Err(why) = RealAuditd::available_when_idle() {
        support::skip(&why);
        return;
    }
    if !have_python() {
        return;
    }
    // A real auditd writes the same records to a string and a binary plugin.
    let mut auditd = RealAuditd::start(AuditdOptions {
        log_format: LogFormat::Enriched,
        plugins: vec![
            Plugin::capture("string", PluginFormat::String),
            Plugin::capture("binary", PluginFormat::Binary),
        ],
        ..AuditdOptions::default()
    })
    .expect("start auditd");
    let framing = auditd.framing().expect("framing");
    auditd
        .record_syscalls(&["write"], &["-F", "a0=1"])
        .expect("rule");
    let status = auditd
        .workload("dd")
        .args([
            "if=/dev/zero",
            "of=/dev/null",
            "bs=1",
            "count=300",
            "status=none",
        ])
        .status()
        .expect("dd");
    assert!(status.success());
    let marker = auditd.sync_captures().expect("marker");
    let report = auditd.stop().expect("stop");
    assert_eq!(report.lost_during_run(), 0);
    let string = auditd.capture_lines("string").expect("string capture");
    let raw = std::fs::read(auditd.capture_path("binary")).expect("binary capture");
    let auditd_frames = frames(&raw, framing);
    let upto = string
        .iter()
        .position(|l| l.windows(marker.len()).any(|w| w == marker.as_bytes()))
        .expect("marker in the string capture")
        + 1;
    assert!(auditd_frames.len() >= upto, "binary capture is short");
    let auditd_frames = &auditd_frames[..upto];
    for (f, l) in auditd_frames.iter().zip(&string) {
        assert_eq!(&f[16..], &l[..], "the two captures hold the same records");
    }
    let mut input = Vec::new();
    for l in &string[..upto] {
        input.extend_from_slice(l);
        input.push(b'\n');
    }

    // The string capture replayed through audispd to audisp-af_unix.
    let mut d = Dispatcher::new(MAIN_NO_STATS);
    let mut readers = Vec::new();
    let mut outs: Vec<(Framing, PathBuf)> = Vec::new();
    for (name, f) in [("exact", Framing::Exact), ("padded", Framing::Padded)] {
        let socket = d.path().join(format!("run/{name}.sock"));
        d.write_plugin(
            name,
            &af_unix_plugin(
                name,
                &socket,
                &[
                    "--format",
                    "binary",
                    "--framing",
                    name,
                    "--reader-buffer",
                    "64M",
                ],
            ),
        );
        outs.push((f, d.out(name)));
    }
    start(&mut d, 2);
    for (i, (_, out)) in outs.iter().enumerate() {
        let name = ["exact", "padded"][i];
        readers.push(PyReader::start(
            &d.path().join(format!("run/{name}.sock")),
            out,
        ));
    }
    wait_readers(&d, 2);
    run_to_end(&mut d, input);
    for r in readers {
        r.finish();
    }
    let exact = std::fs::read(&outs[0].1).unwrap();
    let want: Vec<u8> = auditd_frames.concat();
    assert_eq!(exact.len(), want.len());
    assert!(exact == want, "exact frames differ from auditd's");
    let padded = std::fs::read(&outs[1].1).unwrap();
    assert_eq!(padded.len(), upto * 8986);
    for (i, f) in auditd_frames.iter().enumerate() {
        let ours = &padded[i * 8986..(i + 1) * 8986];
        assert_eq!(
            &ours[..f.len()],
            *f,
            "padded frame {i} differs from auditd's"
        );
        assert!(
            ours[f.len()..].iter().all(|&b| b == 0),
            "padding of frame {i}"
        );
    }
}

/// A listening socket the test creates at `path`, standing in for one of
/// systemd's.
fn listener(path: &Path, ty: nix::sys::socket::SockType) -> std::os::fd::OwnedFd {
    use nix::sys::socket::{bind, listen, socket, AddressFamily, Backlog, SockFlag, UnixAddr};
    let fd = socket(AddressFamily::Unix, ty, SockFlag::empty(), None).unwrap();
    bind(
        std::os::fd::AsRawFd::as_raw_fd(&fd),
        &UnixAddr::new(path).unwrap(),
    )
    .unwrap();
    listen(&fd, Backlog::new(16).unwrap()).unwrap();
    fd
}

/// As its unit runs it: systemd passes the plugin socket and the readers'
/// socket (`Sockets=` of both socket units); the plugin serves readers on
/// the one passed, whose path and mode systemd owns, and leaves it in place.
#[test]
fn socket_activated_with_the_readers_socket_from_systemd() {
    use nix::sys::socket::SockType;
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    let mut d = Dispatcher::new(MAIN_NO_STATS);
    let plugin_sock = d.path().join("run/af_unix.sock");
    let events = d.path().join("run/events");
    let seq = listener(&plugin_sock, SockType::SeqPacket);
    let stream = listener(&events, SockType::Stream);
    let (a, b) = (stream.as_raw_fd(), seq.as_raw_fd());
    let mut cmd = Command::new("/bin/sh");
    cmd.args([
        "-c",
        "LISTEN_PID=$$ LISTEN_FDS=2 LISTEN_FDNAMES=readers:af_unix exec \"$0\" --no-config",
        BIN,
    ]);
    // SAFETY: only fcntl and dup2, which are async-signal-safe, between
    // fork and exec. Both are first copied above 4, so that neither can be
    // overwritten by the other's dup2.
    unsafe {
        cmd.pre_exec(move || {
            let (a, b) = (
                libc::fcntl(a, libc::F_DUPFD, 10),
                libc::fcntl(b, libc::F_DUPFD, 10),
            );
            if a < 0 || b < 0 || libc::dup2(a, 3) < 0 || libc::dup2(b, 4) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let log = std::fs::File::create(d.path().join("plugin.log")).unwrap();
    let mut plugin = cmd.stderr(log).spawn().unwrap();
    drop((seq, stream));
    d.write_plugin(
        "af_unix",
        &format!("socket = \"{}\"\n", plugin_sock.display()),
    );
    let log_path = d.path().join("plugin.log");
    let plugin_log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    support::wait_until(Duration::from_secs(30), "the plugin to start", || {
        plugin_log().contains("serving readers on 1 socket(s) passed by systemd")
    });
    let reader = Collector::start(&events);
    support::wait_until(Duration::from_secs(30), "the reader", || {
        plugin_log().contains("reader 1 connected: ")
    });
    d.start(Stdio::piped()).unwrap();
    let data = sample();
    paced_run(&mut d, &data, &reader);
    // audispd is gone; the plugin waits for it to come back, readers stay.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(plugin.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert!(plugin.wait().unwrap().success(), "{}", plugin_log());
    assert!(reader.finish() == data, "the reader missed records");
    assert!(events.exists(), "the socket systemd owns was removed");
}

/// The shipped option file passes `--check-config` as installed, and with
/// every commented setting uncommented (the defaults it shows are valid);
/// `socket_group = "audisp"` is left out, since that group need not exist
/// on a test machine (the plugin falls back when it does not).
#[test]
fn the_shipped_option_file_checks_clean() {
    let shipped = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/audisp-af_unix.toml"),
    )
    .unwrap();
    let (uncommented, n) = support::uncommented(&shipped, &["socket_group"]);
    assert!(n >= 10, "only {n} settings");
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in [("shipped", &shipped), ("uncommented", &uncommented)] {
        let p = dir.path().join(format!("{name}.toml"));
        std::fs::write(&p, text).unwrap();
        let out = Command::new(BIN)
            .args(["--config", p.to_str().unwrap(), "--check-config"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "audisp-af_unix: configuration ok\n"
        );
    }
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "format = \"binary\"\nframing = \"loose\"\nsocket_mode = \"0755\"\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["--config", bad.to_str().unwrap(), "--check-config"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.toml:2: framing = \"loose\""), "{err}");
    assert!(
        err.contains("bad.toml:3: socket_mode = \"0755\" is not a socket mode"),
        "{err}"
    );
}
