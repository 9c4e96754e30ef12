//! Remote logging end to end, with real parts: Debian's audisp-remote and
//! auditd listener, audispd, audisp-remote and audisp-receive as processes.
//! Every test counts records in and out: the aggregator's log must hold
//! each record exactly once, in order.

mod support;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use audisp::remote::wire::{self, types};
use support::dispatcher::{
    lines, sample, sample_copies, sample_shifted, Dispatcher, NotifyCapture, MAIN_NO_STATS,
};
use support::wait_until;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// An audisp-receive process in `dir`.
struct Receiver {
    program: PathBuf,
    listen: String,
    dir: PathBuf,
    extra: Vec<String>,
    child: Option<Child>,
    starts: u32,
}

impl Receiver {
    fn start(dir: &Path, port: u16, extra: &[&str]) -> Receiver {
        Receiver::start_with(
            Path::new(env!("CARGO_BIN_EXE_audisp-receive")),
            dir,
            &format!("127.0.0.1:{port}"),
            extra,
        )
    }

    fn start_with(program: &Path, dir: &Path, listen: &str, extra: &[&str]) -> Receiver {
        let mut r = Receiver {
            program: program.to_path_buf(),
            listen: listen.to_string(),
            dir: dir.to_path_buf(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            child: None,
            starts: 0,
        };
        r.spawn();
        r
    }

    fn log(&self) -> PathBuf {
        self.dir.join("audit.log")
    }

    fn spawn(&mut self) {
        self.starts += 1;
        let notify_path = self.dir.join(format!("notify{}.sock", self.starts));
        let mut notify = NotifyCapture::bind(&notify_path);
        let err = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("receive.err"))
            .unwrap();
        let mut cmd = Command::new(&self.program);
        if !self.extra.iter().any(|a| a == "--config") {
            cmd.arg("--no-config");
        }
        let child = cmd
            .arg("--listen")
            .arg(&self.listen)
            .arg("--state-dir")
            .arg(self.dir.join("state"))
            .arg("--log")
            .arg(self.log())
            .args(&self.extra)
            .env("NOTIFY_SOCKET", &notify_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .expect("start audisp-receive");
        self.child = Some(child);
        notify
            .wait_for("READY=1", Duration::from_secs(20))
            .unwrap_or_else(|e| panic!("{e}\n{}", self.stderr()));
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.join("receive.err")).unwrap_or_default()
    }

    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(c.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            )
            .unwrap();
            let st = c.wait().unwrap();
            assert!(st.success(), "audisp-receive exit: {st}\n{}", self.stderr());
        }
    }

    /// Every line of the log, rotated parts first; read again when the
    /// receiver rotated the log meanwhile (a file gone, or the files not
    /// the same after reading as before).
    fn lines(&self) -> Vec<Vec<u8>> {
        use std::os::unix::fs::MetadataExt;
        let parts = || -> Vec<(PathBuf, u64)> {
            (1..=100)
                .rev()
                .map(|k| PathBuf::from(format!("{}.{k}", self.log().display())))
                .chain([self.log()])
                .filter_map(|p| std::fs::metadata(&p).ok().map(|m| (p, m.ino())))
                .collect()
        };
        loop {
            let before = parts();
            let mut out = Vec::new();
            let read = before.iter().try_for_each(|(p, _)| {
                audisp::remote::logfile::read_lines(p).map(|l| out.extend(l))
            });
            match read {
                Ok(()) if parts() == before => return out,
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => panic!("{}: {e}", self.log().display()),
            }
        }
    }

    fn wait_lines(&self, n: usize, limit: Duration) -> Vec<Vec<u8>> {
        self.wait_lines_or(n, limit, &String::new)
    }

    /// As `wait_lines`, with more context (`more`) in the failure message.
    fn wait_lines_or(&self, n: usize, limit: Duration, more: &dyn Fn() -> String) -> Vec<Vec<u8>> {
        let deadline = Instant::now() + limit;
        loop {
            let l = self.lines();
            if l.len() >= n {
                return l;
            }
            assert!(
                Instant::now() < deadline,
                "receiver log has {} of {n} records\n{}\n{}",
                l.len(),
                self.stderr(),
                more()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.kill9();
    }
}

fn is_eoe(l: &[u8]) -> bool {
    l.windows(9).any(|w| w == b"type=EOE ")
}

/// Asserts `got` is exactly `want`, reporting the first difference.
fn assert_same(got: &[Vec<u8>], want: &[&[u8]], what: &str) {
    let first = got
        .iter()
        .zip(want.iter())
        .position(|(a, b)| a.as_slice() != *b);
    assert!(
        got.len() == want.len() && first.is_none(),
        "{what}: got {} records, want {}; first difference at {:?}: got {:?}",
        got.len(),
        want.len(),
        first,
        first.map(|i| String::from_utf8_lossy(&got[i]).into_owned())
    );
}

/// Runs Debian's audisp-remote on `input` towards 127.0.0.1:`port`, in a
/// private mount namespace with a test config over its fixed path.
fn stock_audisp_remote(dir: &Path, port: u16, input: &[u8], format: &str) -> Result<(), String> {
    if !is_root() || !Path::new("/sbin/audisp-remote").exists() {
        return Err("needs root and Debian's audisp-remote (audispd-plugins)".into());
    }
    let conf = dir.join("audisp-remote.conf");
    std::fs::write(
        &conf,
        format!(
            "remote_server = 127.0.0.1\nport = {port}\ntransport = tcp\nmode = immediate\n\
             queue_depth = 20000\nformat = {format}\nnetwork_retry_time = 1\n\
             max_tries_per_record = 3\nmax_time_per_record = 5\nheartbeat_timeout = 0\n\
             network_failure_action = stop\n"
        ),
    )
    .unwrap();
    std::fs::set_permissions(&conf, std::fs::Permissions::from_mode(0o640)).unwrap();
    let mut child = Command::new("unshare")
        .arg("-m")
        .arg("sh")
        .arg("-c")
        .arg(format!(
            "mount --bind {} /etc/audit/audisp-remote.conf && exec /sbin/audisp-remote",
            conf.display()
        ))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("unshare: {e}"))?;
    // A pipe on stdin: audisp-remote flushes its queue at end of input.
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input).unwrap();
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    if !out.status.success() {
        return Err(format!(
            "audisp-remote failed: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(())
}

#[test]
fn stock_audisp_remote_managed_and_ascii_to_receive_every_record_once() {
    if !is_root() {
        support::skip("needs root (mount namespace for audisp-remote's fixed config path)");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut r = Receiver::start(tmp.path(), port, &[]);
    let data = sample();
    let all = lines(&data);
    let half = all.len() / 2;
    let first: Vec<u8> = all[..half]
        .iter()
        .flat_map(|l| [*l, b"\n"].concat())
        .collect();
    let second: Vec<u8> = all[half..]
        .iter()
        .flat_map(|l| [*l, b"\n"].concat())
        .collect();
    stock_audisp_remote(tmp.path(), port, &first, "managed").unwrap();
    stock_audisp_remote(tmp.path(), port, &second, "ascii").unwrap();
    // audisp-remote drops EOE records itself.
    let want: Vec<&[u8]> = all.iter().copied().filter(|l| !is_eoe(l)).collect();
    let got = r.wait_lines(want.len(), Duration::from_secs(60));
    r.stop();
    assert_same(&got, &want, "stock audisp-remote → audisp-receive");
}

/// audispd fed `data` on stdin, with the native plugin socket `remote.sock`
/// that a standalone audisp-remote serves.
fn sender_dispatcher() -> Dispatcher {
    let mut d = Dispatcher::new(MAIN_NO_STATS);
    d.write_plugin(
        "remote",
        "socket = \"{dir}/run/remote.sock\"\nformat = \"native\"\n[restart]\ninitial = \"20ms\"\nmax = \"200ms\"\n",
    );
    d.start(Stdio::piped()).unwrap();
    d
}

fn start_sender(d: &Dispatcher, port: u16, extra: &[&str]) -> Child {
    start_sender_env(d, port, extra, &[])
}

/// [`start_sender`] with environment variables added.
fn start_sender_env(
    d: &Dispatcher,
    port: u16,
    extra: &[&str],
    env: &[(&str, &std::ffi::OsStr)],
) -> Child {
    let err = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(d.path().join("remote.err"))
        .unwrap();
    Command::new(env!("CARGO_BIN_EXE_audisp-remote"))
        .arg("--no-config")
        .arg("--server")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--spool-dir")
        .arg(d.path().join("spool"))
        .arg("--listen")
        .arg(d.path().join("run/remote.sock"))
        .arg("--retry-max")
        .arg("1")
        .args(extra)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(err)
        .spawn()
        .expect("start audisp-remote")
}

/// Writes `data` to audispd's standard input and returns the pipe, to be
/// kept open until the test has checked the receiver: its end would stop
/// audispd, possibly before the plugin connected.
fn keep_feeding(d: &mut Dispatcher, data: &[u8]) -> std::process::ChildStdin {
    let mut stdin = d.child.as_mut().unwrap().stdin.take().unwrap();
    stdin.write_all(data).unwrap();
    stdin
}

fn sender_log(d: &Dispatcher) -> String {
    std::fs::read_to_string(d.path().join("remote.err")).unwrap_or_default()
}

fn stop_child(mut c: Child) {
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(c.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let _ = c.wait();
}

#[test]
fn ours_to_ours_with_kill9_of_both_ends_and_injection_into_a_dispatcher() {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    // The aggregator's own dispatcher, with a sink, fed by audisp-receive.
    let mut agg = Dispatcher::new(MAIN_NO_STATS);
    agg.write_plugin("sink", &support::dispatcher::sink_plugin("sink", "", ""));
    agg.start(Stdio::null()).unwrap();
    let input = agg.input_socket();
    let mut r = Receiver::start(
        tmp.path(),
        port,
        &[
            "--dispatcher",
            input.to_str().unwrap(),
            "--log-max-size",
            "200000",
            "--log-keep",
            "100",
        ],
    );
    let mut d = sender_dispatcher();
    let mut s = start_sender(&d, port, &[]);
    let data: Vec<u8> = sample_copies(2);
    let all = lines(&data);
    let _stdin = keep_feeding(&mut d, &data);
    // Mid-stream: kill -9 the aggregator, restart it; kill -9 the sender,
    // restart it.
    wait_until(
        Duration::from_secs(60),
        "first records at the aggregator",
        || r.lines().len() > 500,
    );
    r.kill9();
    std::thread::sleep(Duration::from_millis(300));
    r.spawn();
    wait_until(Duration::from_secs(60), "more records", || {
        r.lines().len() > 3000
    });
    s.kill().unwrap();
    s.wait().unwrap();
    s = start_sender(&d, port, &[]);
    let got = r.wait_lines_or(all.len(), Duration::from_secs(120), &|| {
        format!(
            "--- sender ---\n{}\n--- audispd ---\n{}",
            sender_log(&d),
            d.log_tail(30)
        )
    });
    assert_same(&got, &all, "audisp-remote → audisp-receive log");
    // The aggregator's dispatcher got every record too, once.
    let out = support::dispatcher::wait_sink(&agg.out("sink"), all.len(), Duration::from_secs(60));
    let texts = support::dispatcher::texts(&out);
    assert_eq!(
        texts.len(),
        all.len(),
        "records at the aggregator's dispatcher"
    );
    assert!(texts.iter().zip(all.iter()).all(|(a, b)| a == b));
    assert!(r.lines().len() == all.len());
    stop_child(s);
    r.stop();
    let _ = d.stop();
    let _ = agg.stop();
    let log = r.stderr();
    assert!(log.contains("fast mode, resuming after"), "{log}");
}

/// audisp-remote with a plugins.d filter gets an event's records
/// acknowledged by the event's id, which lies past its last record when a
/// close marker ended it. Killed (`kill -9`) after spooling such an event
/// and before audispd took its acknowledgement (here: audispd killed too,
/// its cursor as before the event), and started again, it resumes after
/// that id and sends nothing twice: the aggregator (which drops a resend
/// only by the spool's own sequence numbers) holds each record once.
#[test]
fn a_filtered_sender_killed_before_acknowledging_an_event_closed_by_a_marker_sends_it_once() {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut r = Receiver::start(tmp.path(), port, &[]);
    let support::events::MarkerClosed {
        open,
        later,
        closed,
    } = support::events::MARKER_CLOSED;
    let mut d = Dispatcher::new(MAIN_NO_STATS);
    d.write_plugin(
        "remote",
        "socket = \"{dir}/run/remote.sock\"\nformat = \"native\"\nfilter = 'type r= SYSCALL && exe i= \"/usr/bin/rm\"'\n[restart]\ninitial = \"20ms\"\nmax = \"200ms\"\n",
    );
    d.start(Stdio::piped()).unwrap();
    let mut s = start_sender(&d, port, &[]);
    d.wait_log("plugin remote connected", Duration::from_secs(30));
    let cursor = d.path().join("state/cursors/remote.cursor");
    let before = std::fs::read(&cursor).unwrap();
    let stdin = keep_feeding(&mut d, format!("{open}{later}").as_bytes());
    r.wait_lines_or(2, Duration::from_secs(60), &|| sender_log(&d));
    wait_until(Duration::from_secs(30), "audispd to store the ack", || {
        std::fs::read(&cursor).unwrap() != before
    });
    // Both killed; audispd's cursor as it was before the acknowledgement.
    s.kill().unwrap();
    s.wait().unwrap();
    drop(stdin);
    d.crash();
    std::fs::write(&cursor, &before).unwrap();
    d.start(Stdio::piped()).unwrap();
    let s = start_sender(&d, port, &[]);
    let _stdin = keep_feeding(&mut d, closed.as_bytes());
    let sent = format!("{open}{closed}");
    let want: Vec<&[u8]> = sent.lines().map(|l| l.as_bytes()).collect();
    // The last record arrives last: anything sent twice came before it.
    wait_until(
        Duration::from_secs(60),
        "the last event at the aggregator",
        || r.lines().last().map(|l| &l[..]) == want.last().copied(),
    );
    assert_same(&r.lines(), &want, "each record once, across the kill");
    stop_child(s);
    r.stop();
    let _ = d.stop();
}

/// Found by attack (issue 10): lines on audispd's input that are not
/// records (audispd delivers them, flagged unparsed) went through fast mode
/// into the aggregator's log, terminal escapes included. audisp-receive
/// refuses a batch holding one, so audisp-remote never sends them: every
/// record arrives once, nothing else does, and the stream does not stall.
#[test]
fn fast_mode_carries_records_and_nothing_else() {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut r = Receiver::start(tmp.path(), port, &[]);
    let mut d = sender_dispatcher();
    let s = start_sender(&d, port, &[]);
    let records = sample();
    let all = lines(&records);
    let mut data = Vec::new();
    for (i, l) in all.iter().enumerate() {
        data.extend_from_slice(l);
        data.push(b'\n');
        if i % 1000 == 10 {
            data.extend_from_slice(b"\x1b[2J\x1b[Hgotcha\n\x00\x00binary\n");
        }
    }
    let _stdin = keep_feeding(&mut d, &data);
    let got = r.wait_lines_or(all.len(), Duration::from_secs(60), &|| sender_log(&d));
    assert_same(&got, &all, "records only, each once");
    stop_child(s);
    r.stop();
    let _ = d.stop();
    let log = sender_log(&d);
    assert!(log.matches("is not an audit record").count() >= 10, "{log}");
}

/// A shipped file of the source tree (`packaging/…`, `plugins.d/…`).
fn shipped(path: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(path)).unwrap()
}

/// One host that both sends and receives, installed from the shipped files
/// as an admin would (only the paths moved into the test directory):
/// audispd with plugins.d/remote.toml.example as remote.toml, audisp-remote
/// sending to audisp-receive on loopback, and audisp-receive with
/// packaging/audisp-receive.toml feeding what it receives back into the
/// same audispd. Each record reaches the receiver's log once, audispd
/// journals it twice (from auditd, then from audisp-receive) and never
/// more: received records are not sent out again.
#[test]
fn sending_and_receiving_on_one_host_with_the_shipped_files_does_not_loop() {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut d = Dispatcher::new(MAIN_NO_STATS);
    let example = shipped("plugins.d/remote.toml.example");
    let installed = example.replace(
        "socket = \"/run/audisp/plugins/remote.sock\"",
        "socket = \"{dir}/run/remote.sock\"",
    );
    assert_ne!(installed, example, "the example's socket line moved");
    d.write_plugin("remote", &installed);
    d.write_plugin("sink", &support::dispatcher::sink_plugin("sink", "", ""));
    d.start(Stdio::piped()).unwrap();
    let receive_toml = tmp.path().join("audisp-receive.toml");
    let conf = shipped("packaging/audisp-receive.toml");
    let input = d.input_socket();
    let moved = conf.replace(
        "dispatcher = \"/run/audisp/input.sock\"",
        &format!("dispatcher = \"{}\"", input.display()),
    );
    assert_ne!(moved, conf, "the shipped file feeds audispd");
    std::fs::write(&receive_toml, moved).unwrap();
    std::fs::set_permissions(&receive_toml, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut r = Receiver::start(
        tmp.path(),
        port,
        &["--config", receive_toml.to_str().unwrap()],
    );
    let s = start_sender(&d, port, &[]);
    let data = sample_copies(2);
    let all = lines(&data);
    let n = all.len();
    let _stdin = keep_feeding(&mut d, &data);
    let context = || {
        format!(
            "--- sender ---\n{}\n--- audispd ---\n{}\n--- state ---\n{}",
            sender_log(&d),
            d.log_tail(30),
            d.state()
        )
    };
    let got = r.wait_lines_or(n, Duration::from_secs(120), &context);
    assert_same(&got, &all, "audisp-remote → audisp-receive log");
    // audisp-receive fed every record into audispd (input "remote"), and
    // audisp-remote has looked at every journal entry since: had it sent
    // any received record again, the receiver would hold it by now.
    let line = |report: &str, kind: &str, name: &str| {
        support::dispatcher::state_line(report, kind, name)
            .unwrap_or_else(|| panic!("no {kind} {name} in\n{report}"))
    };
    wait_until(
        Duration::from_secs(60),
        "audispd journaled the received records and audisp-remote caught up",
        || {
            let report = d.state();
            let end: u64 = report
                .lines()
                .find_map(|l| l.strip_prefix("journal sequence range = "))
                .and_then(|r| r.split_once(".."))
                .and_then(|(_, e)| e.parse().ok())
                .unwrap_or(0);
            line(&report, "input", "remote").get("looped") == n as u64
                && line(&report, "plugin", "remote").get("acked_seq") + 1 >= end
                && line(&report, "plugin", "sink").get("acked_seq") + 1 >= end
        },
    );
    let report = d.state();
    assert_eq!(
        line(&report, "input", "stdin").get("records"),
        n as u64,
        "{report}"
    );
    // audisp-receive handed every record back with its first origin, this
    // audispd's journal: the loop guard dropped them as this host's own.
    assert_eq!(
        line(&report, "input", "remote").get("records"),
        0,
        "{report}"
    );
    assert_eq!(
        line(&report, "input", "remote").get("looped"),
        n as u64,
        "{report}"
    );
    assert_eq!(
        line(&report, "plugin", "remote").get("delivered"),
        n as u64,
        "only this host's records go out\n{report}"
    );
    assert_eq!(r.lines().len(), n, "each record reached the receiver once");
    // The sink (no inputs chosen, no default of its own) got each once.
    let out = support::dispatcher::wait_sink(&d.out("sink"), n, Duration::from_secs(60));
    let texts = support::dispatcher::texts(&out);
    assert_eq!(texts.len(), n, "records journaled once, from auditd");
    stop_child(s);
    r.stop();
    let _ = d.stop();
}

/// The admin makes audisp-remote relay everything (`inputs = ["auditd",
/// "remote"]`) while audisp-receive feeds the same audispd: a loop. The
/// loop guard drops every record that comes back (its first origin is this
/// audispd's journal), counts it and says so; the receiver logs each record
/// once and the journal stops growing when the stream ends.
#[test]
fn a_forced_relay_loop_on_one_host_is_cut_by_the_loop_guard() {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut d = Dispatcher::new(MAIN_NO_STATS);
    let example = shipped("plugins.d/remote.toml.example");
    let installed = example.replace(
        "socket = \"/run/audisp/plugins/remote.sock\"",
        "socket = \"{dir}/run/remote.sock\"",
    );
    assert_ne!(installed, example, "the example's socket line moved");
    // Top-level keys go before the file's first table.
    let relaying = installed.replace(
        "socket = \"{dir}/run/remote.sock\"",
        "socket = \"{dir}/run/remote.sock\"\ninputs = [\"auditd\", \"remote\"]",
    );
    d.write_plugin("remote", &relaying);
    d.start(Stdio::piped()).unwrap();
    let receive_toml = tmp.path().join("audisp-receive.toml");
    let conf = shipped("packaging/audisp-receive.toml");
    let moved = conf.replace(
        "dispatcher = \"/run/audisp/input.sock\"",
        &format!("dispatcher = \"{}\"", d.input_socket().display()),
    );
    std::fs::write(&receive_toml, moved).unwrap();
    std::fs::set_permissions(&receive_toml, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut r = Receiver::start(
        tmp.path(),
        port,
        &["--config", receive_toml.to_str().unwrap()],
    );
    let s = start_sender(&d, port, &[]);
    let data = sample_copies(1);
    let all = lines(&data);
    let n = all.len();
    let _stdin = keep_feeding(&mut d, &data);
    let context = || {
        format!(
            "--- sender ---\n{}\n--- audispd ---\n{}\n--- state ---\n{}",
            sender_log(&d),
            d.log_tail(30),
            d.state()
        )
    };
    let got = r.wait_lines_or(n, Duration::from_secs(120), &context);
    assert_same(&got, &all, "audisp-remote → audisp-receive log");
    let line = |report: &str, kind: &str, name: &str| {
        support::dispatcher::state_line(report, kind, name)
            .unwrap_or_else(|| panic!("no {kind} {name} in\n{report}"))
    };
    // Every record came back once on input "remote" and was dropped there:
    // the received copies are all looped, none is journaled.
    wait_until(
        Duration::from_secs(60),
        "every record came back and was dropped",
        || line(&d.state(), "input", "remote").get("looped") == n as u64,
    );
    let journal_end = |report: &str| -> u64 {
        report
            .lines()
            .find_map(|l| l.strip_prefix("journal sequence range = "))
            .and_then(|r| r.split_once(".."))
            .and_then(|(_, e)| e.parse().ok())
            .unwrap_or(0)
    };
    wait_until(
        Duration::from_secs(60),
        "audisp-remote caught up with the journal",
        || {
            let report = d.state();
            // Open events end by timeout with a marker entry: wait for them.
            report.contains("events being grouped = 0\n")
                && line(&report, "plugin", "remote").get("acked_seq") + 1 >= journal_end(&report)
        },
    );
    let report = d.state();
    assert_eq!(
        line(&report, "input", "remote").get("records"),
        0,
        "{report}"
    );
    assert_eq!(line(&report, "input", "stdin").get("records"), n as u64);
    let end = journal_end(&report);
    assert_eq!(r.lines().len(), n, "each record reached the receiver once");
    // Bounded: nothing more is journaled or sent once the stream ended.
    let before = line(&report, "plugin", "remote").get("delivered");
    std::thread::sleep(Duration::from_secs(2));
    let after = d.state();
    assert_eq!(
        journal_end(&after),
        end,
        "the journal stopped growing\n{after}"
    );
    assert_eq!(line(&after, "plugin", "remote").get("delivered"), before);
    assert_eq!(line(&after, "input", "remote").get("looped"), n as u64);
    let log = d.log_tail(200);
    assert!(
        log.contains("records of this host came back on input 'remote'")
            && log.contains("Plugins forwarding this input's records: remote"),
        "the loop guard's warning names the input and the relaying plugin:\n{log}"
    );
    assert_eq!(r.lines().len(), n, "nothing reached the receiver twice");
    stop_child(s);
    r.stop();
    let _ = d.stop();
}

/// A receiver of an older version (it never sends `FAST_ORIGINS`) gets
/// only plain `FAST_BATCH` messages from audisp-remote, every record once.
#[test]
fn a_receiver_that_does_not_take_origins_gets_plain_batches() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut d = sender_dispatcher();
    let s = start_sender(&d, port, &[]);
    let data = sample();
    let n = lines(&data).len();
    let _stdin = keep_feeding(&mut d, &data);
    let (mut c, _) = listener.accept().unwrap();
    c.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    // The hello line, then the opening heartbeat: FAST_OK, nothing more.
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while byte[0] != b'\n' {
        c.read_exact(&mut byte).unwrap();
        line.push(byte[0]);
    }
    assert!(
        wire::parse_hello(&line[..line.len() - 1]).is_some(),
        "{line:?}"
    );
    let read_msg = |c: &mut TcpStream| -> (wire::Header, Vec<u8>) {
        let mut h = [0u8; wire::HEADER_LEN];
        c.read_exact(&mut h).unwrap();
        let h = wire::Header::parse(&h).unwrap();
        let mut p = vec![0u8; h.len as usize];
        c.read_exact(&mut p).unwrap();
        (h, p)
    };
    let (h, _) = read_msg(&mut c);
    assert_eq!(h.mtype, types::HEARTBEAT);
    let mut out = Vec::new();
    wire::encode(&mut out, types::FAST_OK, h.seq, &0u64.to_le_bytes()).unwrap();
    c.write_all(&out).unwrap();
    let mut got = 0;
    while got < n {
        let (h, p) = read_msg(&mut c);
        if h.mtype == types::HEARTBEAT {
            out.clear();
            wire::encode(&mut out, types::ACK, h.seq, b"").unwrap();
            c.write_all(&out).unwrap();
            continue;
        }
        assert_eq!(
            h.mtype,
            types::FAST_BATCH,
            "only batches an old receiver knows"
        );
        let (first, recs) = wire::parse_batch(&p).unwrap();
        assert_eq!(first, got as u64 + 1, "in order, nothing twice");
        got += recs.len();
        out.clear();
        wire::encode(&mut out, types::FAST_ACK, 0, &(got as u64).to_le_bytes()).unwrap();
        c.write_all(&out).unwrap();
    }
    assert_eq!(got, n);
    stop_child(s);
    let _ = d.stop();
}

/// Writes a key file with root-only mode.
fn write_key(path: &Path, pem: &str) {
    std::fs::write(path, pem).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

struct Pki {
    ca: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
    rogue_cert: PathBuf,
    rogue_key: PathBuf,
    /// A second client, trusted as the first.
    other_cert: PathBuf,
    other_key: PathBuf,
}

impl Pki {
    /// audisp-receive's TLS flags, with room for four clients from one
    /// address.
    fn receiver_args(&self) -> Vec<String> {
        let mut a = tls_args(&self.server_cert, &self.server_key, &self.ca);
        a.extend(["--max-per-addr".into(), "4".into()]);
        a
    }

    /// A TLS client of the receiver, presenting `cert` and `key`.
    fn client(&self, cert: &Path, key: &Path) -> audisp::remote::tls::Client {
        let files = audisp::remote::tls::TlsFiles {
            cert: Some(cert.to_path_buf()),
            key: Some(key.to_path_buf()),
            ca: Some(self.ca.clone()),
        };
        audisp::remote::tls::Client::new(&files, "aggregator.test")
            .unwrap()
            .unwrap()
    }

    /// audisp-remote's TLS flags, presenting `cert` and `key`.
    fn sender_args(&self, cert: &Path, key: &Path) -> Vec<String> {
        let mut a = tls_args(cert, key, &self.ca);
        a.extend(["--tls-server-name".into(), "aggregator.test".into()]);
        a
    }
}

fn tls_args(cert: &Path, key: &Path, ca: &Path) -> Vec<String> {
    let s = |p: &Path| p.to_str().unwrap().to_string();
    [
        "--tls-cert".into(),
        s(cert),
        "--tls-key".into(),
        s(key),
        "--tls-ca".into(),
        s(ca),
    ]
    .into()
}

/// Borrows owned arguments for the spawning helpers.
fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

fn make_pki(dir: &Path) -> Pki {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let leaf = |name: &str| {
        let k = KeyPair::generate().unwrap();
        let c = CertificateParams::new(vec![name.to_string()])
            .unwrap()
            .signed_by(&k, &issuer)
            .unwrap();
        (c.pem(), k.serialize_pem())
    };
    let (sc, sk) = leaf("aggregator.test");
    let (cc, ck) = leaf("sender.test");
    let (oc, ok) = leaf("other-sender.test");
    // A client with a certificate from another CA.
    let rogue_ca_key = KeyPair::generate().unwrap();
    let mut rp = CertificateParams::new(Vec::<String>::new()).unwrap();
    rp.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let rogue_issuer = Issuer::new(rp, rogue_ca_key);
    let rk = KeyPair::generate().unwrap();
    let rc = CertificateParams::new(vec!["rogue.test".to_string()])
        .unwrap()
        .signed_by(&rk, &rogue_issuer)
        .unwrap();
    let p = |n: &str| dir.join(n);
    std::fs::write(p("ca.pem"), ca_cert.pem()).unwrap();
    std::fs::write(p("server.pem"), sc).unwrap();
    write_key(&p("server.key"), &sk);
    std::fs::write(p("client.pem"), cc).unwrap();
    write_key(&p("client.key"), &ck);
    std::fs::write(p("rogue.pem"), rc.pem()).unwrap();
    write_key(&p("rogue.key"), &rk.serialize_pem());
    std::fs::write(p("other.pem"), oc).unwrap();
    write_key(&p("other.key"), &ok);
    Pki {
        ca: p("ca.pem"),
        server_cert: p("server.pem"),
        server_key: p("server.key"),
        client_cert: p("client.pem"),
        client_key: p("client.key"),
        rogue_cert: p("rogue.pem"),
        rogue_key: p("rogue.key"),
        other_cert: p("other.pem"),
        other_key: p("other.key"),
    }
}

#[test]
fn tls_mutual_auth_delivers_everything_and_refuses_an_untrusted_client() {
    if !is_root() {
        support::skip("TLS key files must be owned by root");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let pki = make_pki(tmp.path());
    let port = free_port();
    let mut r = Receiver::start(tmp.path(), port, &strs(&pki.receiver_args()));
    // The untrusted client first: refused, with a clear line.
    let mut d0 = sender_dispatcher();
    let rogue = start_sender(
        &d0,
        port,
        &strs(&pki.sender_args(&pki.rogue_cert, &pki.rogue_key)),
    );
    let _stdin0 = keep_feeding(&mut d0, b"type=USER msg=audit(1.000:1): rogue\n");
    wait_until(Duration::from_secs(30), "refusal logged", || {
        r.stderr().contains("TLS handshake failed")
    });
    stop_child(rogue);
    let _ = d0.stop();

    let mut d = sender_dispatcher();
    let sender = start_sender(
        &d,
        port,
        &strs(&pki.sender_args(&pki.client_cert, &pki.client_key)),
    );
    let data = sample();
    let all = lines(&data);
    let _stdin = keep_feeding(&mut d, &data);
    let got = r.wait_lines(all.len(), Duration::from_secs(60));
    assert_same(&got, &all, "TLS audisp-remote → audisp-receive");
    let log = r.stderr();
    assert!(
        log.contains("cert sha256:"),
        "client identity not recorded:\n{log}"
    );
    assert!(!got.iter().any(|l| l.ends_with(b"rogue")));
    stop_child(sender);
    r.stop();
    let _ = d.stop();

    // A key file readable by others is refused at start, saying why.
    std::fs::set_permissions(&pki.client_key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_audisp-remote"))
        .args(["--no-config", "--server", "127.0.0.1:1", "--spool-dir"])
        .arg(tmp.path().join("spool2"))
        .args(tls_args(&pki.client_cert, &pki.client_key, &pki.ca))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("owned by root with no access for group or others"),
        "{err}"
    );
}

/// A fast-mode hello, its heartbeat and, if `recs` is not empty, one batch
/// of `recs` numbered from `first`.
fn fast_opening(id: [u8; 16], first: u64, recs: &[&[u8]]) -> Vec<u8> {
    let mut m = wire::hello_line(id);
    wire::encode(&mut m, types::HEARTBEAT, 1, b"").unwrap();
    if !recs.is_empty() {
        m.extend(fast_batch(first, recs));
    }
    m
}

fn fast_batch(first: u64, recs: &[&[u8]]) -> Vec<u8> {
    let mut b = wire::BatchBuilder::default();
    b.start(first);
    for r in recs {
        assert!(b.push(r, None));
    }
    let mut m = Vec::new();
    wire::encode(&mut m, types::FAST_BATCH, 0, b.payload()).unwrap();
    m
}

/// The next reply (type, u64 payload), or None when the receiver closed
/// the connection.
fn fast_reply(s: &mut impl Read) -> Option<(u32, u64)> {
    loop {
        let mut h = [0u8; 16];
        s.read_exact(&mut h).ok()?;
        let hdr = wire::Header::parse(&h).unwrap();
        let mut p = vec![0u8; hdr.len as usize];
        s.read_exact(&mut p).unwrap();
        // Offered after FAST_OK; these clients send plain batches.
        if hdr.mtype != types::FAST_ORIGINS {
            return Some((hdr.mtype, wire::parse_u64(&p).unwrap_or(0)));
        }
    }
}

/// Found by review: a client claiming another sender's spool identity
/// (here a trusted client with another certificate, as a cloned host with
/// a copied spool would) could raise its "highest held" number and have
/// the real sender's later records acknowledged and dropped.
#[test]
fn tls_spool_identity_of_another_certificate_is_refused_and_its_owner_loses_nothing() {
    if !is_root() {
        support::skip("TLS key files must be owned by root");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let pki = make_pki(tmp.path());
    let port = free_port();
    let mut r = Receiver::start(tmp.path(), port, &strs(&pki.receiver_args()));
    let sender_args = pki.sender_args(&pki.client_cert, &pki.client_key);
    let sender_args = strs(&sender_args);
    let mut d = sender_dispatcher();
    let a = start_sender(&d, port, &sender_args);
    let first = sample();
    let mut all = lines(&first);
    let mut stdin = keep_feeding(&mut d, &first);
    r.wait_lines(all.len(), Duration::from_secs(60));
    stop_child(a);
    // A's spool identity and certificate, as the receiver bound them.
    let table = std::fs::read_to_string(tmp.path().join("state/senders")).unwrap();
    let line: Vec<&str> = table
        .lines()
        .find(|l| l.contains(" fast "))
        .unwrap()
        .split(' ')
        .collect();
    assert_eq!(line.len(), 4, "no certificate bound: {table}");
    let (a_id, a_cert) = (line[2], line[3]);
    let id: [u8; 16] = (0..16)
        .map(|i| u8::from_str_radix(&a_id[2 * i..2 * i + 2], 16).unwrap())
        .collect::<Vec<u8>>()
        .try_into()
        .unwrap();
    // B, trusted but with another certificate, claims A's identity far
    // ahead: refused, nothing answered or stored.
    let b = pki.client(&pki.other_cert, &pki.other_key);
    let tls = |b: &audisp::remote::tls::Client| {
        let sock = TcpStream::connect(format!("127.0.0.1:{port}")).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        b.connect(sock).unwrap()
    };
    let mut c = tls(&b);
    c.write_all(&fast_opening(
        id,
        1_000_000,
        &[b"type=USER msg=audit(9.000:9): forged"],
    ))
    .unwrap();
    c.flush().unwrap();
    assert_eq!(fast_reply(&mut c), None, "a foreign claim was answered");
    let log = r.stderr();
    assert!(
        log.contains(&format!(
            "spool identity belongs to the client certificate {a_cert}"
        )),
        "{log}"
    );
    assert!(log.contains("this client presents sha256:"), "{log}");
    // B under its own identity is served.
    let mut c = tls(&b);
    c.write_all(&fast_opening([0x42; 16], 0, &[])).unwrap();
    c.flush().unwrap();
    assert_eq!(fast_reply(&mut c), Some((types::FAST_OK, 0)));
    drop(c);
    // A's certificate resumes A's identity where it was; while that
    // connection is live, the real A is refused and says where to look.
    let a_client = audisp::remote::tls::Client::new(
        &audisp::remote::tls::TlsFiles {
            cert: Some(pki.client_cert.clone()),
            key: Some(pki.client_key.clone()),
            ca: Some(pki.ca.clone()),
        },
        "aggregator.test",
    )
    .unwrap()
    .unwrap();
    let mut holder = tls(&a_client);
    holder.write_all(&fast_opening(id, 0, &[])).unwrap();
    holder.flush().unwrap();
    assert_eq!(
        fast_reply(&mut holder),
        Some((types::FAST_OK, all.len() as u64))
    );
    let a = start_sender(&d, port, &sender_args);
    let more = sample_shifted(1);
    stdin.write_all(&more).unwrap();
    all.extend(lines(&more));
    wait_until(Duration::from_secs(30), "A refused and saying so", || {
        sender_log(&d).contains("without answering the opening heartbeat")
    });
    assert!(r
        .stderr()
        .contains("that spool identity is in use by the live connection"));
    drop(holder);
    // Once that connection is gone, A goes on: every record once, nothing
    // of B's.
    let got = r.wait_lines_or(all.len(), Duration::from_secs(60), &|| sender_log(&d));
    assert_same(&got, &all, "A's records after B's claim");
    stop_child(a);
    r.stop();
    let _ = d.stop();
}

/// Sends one managed MESSAGE and returns the reply header.
fn managed_exchange(s: &mut TcpStream, seq: u32, text: &[u8]) -> wire::Header {
    let mut m = Vec::new();
    wire::encode(&mut m, types::MESSAGE, seq, text).unwrap();
    s.write_all(&m).unwrap();
    let mut h = [0u8; 16];
    s.read_exact(&mut h).unwrap();
    let hdr = wire::Header::parse(&h).unwrap();
    let mut p = vec![0u8; hdr.len as usize];
    s.read_exact(&mut p).unwrap();
    hdr
}

#[test]
fn malformed_input_closes_only_that_connection_and_resends_are_stored_once() {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut r = Receiver::start(tmp.path(), port, &["--max-per-addr", "16"]);
    let addr = format!("127.0.0.1:{port}");
    let mut good = TcpStream::connect(&addr).unwrap();
    good.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut sent = Vec::new();
    let mut seq = 1u32;
    let mut send_good = |good: &mut TcpStream, sent: &mut Vec<Vec<u8>>| {
        seq += 1;
        let text = format!("type=USER msg=audit(1700000000.{seq:03}:{seq}): good {seq}");
        let h = managed_exchange(good, seq, format!("{text}\n").as_bytes());
        assert_eq!((h.mtype, h.seq), (types::ACK, seq));
        sent.push(text.into_bytes());
    };
    send_good(&mut good, &mut sent);
    let mut bad_magic = Vec::new();
    wire::encode(&mut bad_magic, types::MESSAGE, 2, b"type=USER x").unwrap();
    bad_magic[3] = 0xfe;
    let mut oversize = Vec::new();
    wire::encode(&mut oversize, types::MESSAGE, 2, b"").unwrap();
    oversize[10..12].copy_from_slice(&60000u16.to_le_bytes());
    oversize.extend(vec![b'a'; 1000]);
    let mut random = vec![0u8; 4096];
    getrandom::fill(&mut random).unwrap();
    random[0] = 0x01;
    let garbage: Vec<Vec<u8>> = vec![
        bad_magic,
        oversize,
        vec![0xfe, 0x00, 0x00, 0xff, 0x00, 0x00],
        random,
        vec![b'x'; 20000],
        b"GET / HTTP/1.0\r\n\r\n".to_vec(),
    ];
    for (i, g) in garbage.iter().enumerate() {
        let mut b = TcpStream::connect(&addr).unwrap();
        b.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let _ = b.write_all(g);
        if i == 2 {
            // Truncated header, then the client goes away.
            drop(b);
        } else {
            // The receiver closes the connection.
            let mut rest = Vec::new();
            let n = b.read_to_end(&mut rest);
            assert!(matches!(n, Ok(0)) || n.is_err(), "garbage {i} got a reply");
        }
        send_good(&mut good, &mut sent);
    }
    // A resend of the last record (lost ACK), on a new connection after the
    // old one broke: acknowledged, stored once.
    drop(good);
    let mut again = TcpStream::connect(&addr).unwrap();
    again
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let last = sent.last().unwrap().clone();
    let h = managed_exchange(&mut again, seq, &[&last[..], b"\n"].concat());
    assert_eq!(h.mtype, types::ACK);
    // A heartbeat is acknowledged with its sequence number.
    let mut hb = Vec::new();
    wire::encode(&mut hb, types::HEARTBEAT, 77, b"").unwrap();
    again.write_all(&hb).unwrap();
    let mut hdr = [0u8; 16];
    again.read_exact(&mut hdr).unwrap();
    assert_eq!(wire::Header::parse(&hdr).unwrap().seq, 77);
    let want: Vec<&[u8]> = sent.iter().map(|v| &v[..]).collect();
    let got = r.wait_lines(want.len(), Duration::from_secs(20));
    // Shutdown: the connected client is told ENDING (seq 0).
    let pid = r.child.as_ref().unwrap().id();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    again.read_exact(&mut hdr).unwrap();
    let end = wire::Header::parse(&hdr).unwrap();
    assert_eq!((end.mtype, end.seq), (types::ENDING, 0));
    r.stop();
    assert_same(&got, &want, "good client's records");
    assert!(r.stderr().contains("protocol error"));
}

/// Two live connections under one spool identity (a cloned sender) would
/// interleave two streams of sequence numbers: the second is refused, the
/// first goes on, and once it is gone the identity is free again.
#[test]
fn plain_second_live_connection_with_the_same_spool_identity_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut r = Receiver::start(tmp.path(), port, &["--max-per-addr", "4"]);
    let addr = format!("127.0.0.1:{port}");
    let conn = || {
        let c = TcpStream::connect(&addr).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        c
    };
    let id = [0x5a; 16];
    let recs: Vec<String> = (1..=9)
        .map(|i| format!("type=USER msg=audit(1700000000.{i:03}:{i}): rec {i}"))
        .collect();
    let rec = |i: usize| recs[i - 1].as_bytes();
    let mut first = conn();
    first
        .write_all(&fast_opening(id, 1, &[rec(1), rec(2), rec(3)]))
        .unwrap();
    assert_eq!(fast_reply(&mut first), Some((types::FAST_OK, 0)));
    assert_eq!(fast_reply(&mut first), Some((types::FAST_ACK, 3)));
    // The clone, ahead: refused without a reply.
    let mut clone = conn();
    clone
        .write_all(&fast_opening(
            id,
            100,
            &[b"type=USER msg=audit(9.000:9): clone"],
        ))
        .unwrap();
    assert_eq!(fast_reply(&mut clone), None, "the clone was answered");
    // The first connection keeps delivering.
    first
        .write_all(&fast_batch(4, &[rec(4), rec(5), rec(6)]))
        .unwrap();
    assert_eq!(fast_reply(&mut first), Some((types::FAST_ACK, 6)));
    drop(first);
    // Its successor gets in once the receiver saw it go (until then it is
    // refused, and retries as audisp-remote does).
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut next = loop {
        let mut c = conn();
        c.write_all(&fast_opening(id, 0, &[])).unwrap();
        match fast_reply(&mut c) {
            Some(reply) => {
                assert_eq!(reply, (types::FAST_OK, 6));
                break c;
            }
            None => assert!(Instant::now() < deadline, "{}", r.stderr()),
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    next.write_all(&fast_batch(5, &[rec(5), rec(6), rec(7), rec(8), rec(9)]))
        .unwrap();
    assert_eq!(fast_reply(&mut next), Some((types::FAST_ACK, 9)));
    let want: Vec<&[u8]> = recs.iter().map(|r| r.as_bytes()).collect();
    let got = r.wait_lines(want.len(), Duration::from_secs(20));
    drop(next);
    r.stop();
    assert_same(&got, &want, "records under one identity");
    assert!(
        r.stderr()
            .contains("that spool identity is in use by the live connection"),
        "{}",
        r.stderr()
    );
}

#[test]
fn ours_to_stock_auditd_listener_every_record_arrives() {
    if !is_root() || !Path::new("/sbin/auditd").exists() {
        support::skip("needs root and Debian's auditd");
        return;
    }
    // No other test's auditd may come or go while kernel audit's pid is compared.
    let _kernel_audit = support::auditd::KernelAuditLock::acquire().unwrap();
    let before = Command::new("auditctl").arg("-s").output().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let dir = tmp.path().join("auditd");
    std::fs::create_dir_all(dir.join("plugins.d")).unwrap();
    let log = dir.join("audit.log");
    // local_events = no: auditd is only a network receiver and never opens
    // the kernel's audit connection (auditctl -s pid is checked below).
    let conf = format!(
        "local_events = no\nwrite_logs = yes\nlog_file = {}\nlog_format = RAW\nflush = none\nfreq = 0\n\
         max_log_file = 0\nmax_log_file_action = ignore\nspace_left = 2\nspace_left_action = ignore\n\
         admin_space_left = 1\nadmin_space_left_action = ignore\ndisk_full_action = ignore\n\
         disk_error_action = ignore\ntcp_listen_port = {port}\ntcp_max_per_addr = 1\nuse_libwrap = no\n\
         tcp_client_max_idle = 0\ndistribute_network = no\nplugin_dir = {}\n",
        log.display(),
        dir.join("plugins.d").display()
    );
    std::fs::write(dir.join("auditd.conf"), conf).unwrap();
    std::fs::set_permissions(
        dir.join("auditd.conf"),
        std::fs::Permissions::from_mode(0o640),
    )
    .unwrap();
    let mut auditd = Command::new("/sbin/auditd")
        .arg("-n")
        .arg("-c")
        .arg(&dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_until(Duration::from_secs(20), "auditd listening", || {
        TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    let mut d = sender_dispatcher();
    let s = start_sender(&d, port, &["--heartbeat", "1"]);
    let data = sample();
    let all = lines(&data);
    // auditd's listener logs its own DAEMON_* records: leave those out on
    // both sides.
    let want: Vec<&[u8]> = all
        .iter()
        .copied()
        .filter(|l| !is_eoe(l) && !l.starts_with(b"type=DAEMON_"))
        .collect();
    let _stdin = keep_feeding(&mut d, &data);
    let records = || -> Vec<Vec<u8>> {
        audisp::remote::logfile::read_lines(&log)
            .unwrap_or_default()
            .into_iter()
            .filter(|l| !l.starts_with(b"type=DAEMON_"))
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    while records().len() < want.len() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    // Idle: heartbeats keep the connection and are acknowledged.
    std::thread::sleep(Duration::from_millis(2500));
    stop_child(s);
    let _ = d.stop();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(auditd.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    auditd.wait().unwrap();
    let got = records();
    assert_same(&got, &want, "audisp-remote → stock auditd listener");
    let slog = sender_log(&d);
    assert!(slog.contains("speaks the stock protocol"), "{slog}");
    assert!(!slog.contains("network failure"), "{slog}");
    let after = Command::new("auditctl").arg("-s").output().unwrap();
    let pid_line = |o: &std::process::Output| {
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .find(|l| l.starts_with("pid "))
            .map(str::to_string)
    };
    assert_eq!(
        pid_line(&before),
        pid_line(&after),
        "kernel audit pid changed"
    );
}

#[test]
fn aggregator_disk_full_then_freed_loses_and_duplicates_nothing() {
    if !is_root() {
        support::skip("needs root to mount a small tmpfs");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let mnt = tmp.path().join("small");
    std::fs::create_dir_all(&mnt).unwrap();
    let st = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=8m", "tmpfs"])
        .arg(&mnt)
        .status()
        .unwrap();
    assert!(st.success(), "mount tmpfs");
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
    let _guard = Unmount(mnt.clone());
    // Fill most of it.
    let filler = mnt.join("filler");
    std::fs::write(&filler, vec![0u8; 7_000_000]).unwrap();
    let port = free_port();
    let mut r = Receiver::start(
        &mnt,
        port,
        &["--log-max-size", "0", "--space-left", "2000000"],
    );
    let mut d = sender_dispatcher();
    let s = start_sender(&d, port, &[]);
    let data = sample_copies(2);
    let all = lines(&data);
    let _stdin = keep_feeding(&mut d, &data);
    wait_until(
        Duration::from_secs(60),
        "the aggregator reports a full disk",
        || r.stderr().contains("No space left"),
    );
    assert!(r.lines().len() < all.len());
    std::fs::remove_file(&filler).unwrap();
    let got = r.wait_lines(all.len(), Duration::from_secs(120));
    assert_same(&got, &all, "after the disk was freed");
    stop_child(s);
    r.stop();
    let _ = d.stop();
    // Which write hit the full disk first (the store, answered with
    // DISKFULL, or the log, retried) depends on timing; either way nothing
    // was lost or stored twice (checked above).
}

/// Two network namespaces joined by a veth pair; removed on drop.
struct NetPair {
    sender_ns: String,
    receiver_ns: String,
}

impl NetPair {
    const SENDER_IP: &'static str = "10.214.0.1";
    const RECEIVER_IP: &'static str = "10.214.0.2";

    fn new() -> Result<NetPair, String> {
        let tag = std::process::id();
        let p = NetPair {
            sender_ns: format!("a4s{tag}"),
            receiver_ns: format!("a4r{tag}"),
        };
        let (s, r) = (&p.sender_ns, &p.receiver_ns);
        let (vs, vr) = (format!("a4s{tag}v"), format!("a4r{tag}v"));
        let steps: Vec<Vec<String>> = vec![
            vec!["netns".into(), "add".into(), s.clone()],
            vec!["netns".into(), "add".into(), r.clone()],
            vec![
                "link".into(),
                "add".into(),
                vs.clone(),
                "netns".into(),
                s.clone(),
                "type".into(),
                "veth".into(),
                "peer".into(),
                "name".into(),
                vr.clone(),
                "netns".into(),
                r.clone(),
            ],
            vec![
                "-n".into(),
                s.clone(),
                "addr".into(),
                "add".into(),
                format!("{}/24", Self::SENDER_IP),
                "dev".into(),
                vs.clone(),
            ],
            vec![
                "-n".into(),
                r.clone(),
                "addr".into(),
                "add".into(),
                format!("{}/24", Self::RECEIVER_IP),
                "dev".into(),
                vr.clone(),
            ],
            vec![
                "-n".into(),
                s.clone(),
                "link".into(),
                "set".into(),
                vs,
                "up".into(),
            ],
            vec![
                "-n".into(),
                r.clone(),
                "link".into(),
                "set".into(),
                vr,
                "up".into(),
            ],
            vec![
                "-n".into(),
                s.clone(),
                "link".into(),
                "set".into(),
                "lo".into(),
                "up".into(),
            ],
            vec![
                "-n".into(),
                r.clone(),
                "link".into(),
                "set".into(),
                "lo".into(),
                "up".into(),
            ],
        ];
        for st in steps {
            let out = Command::new("ip")
                .args(&st)
                .output()
                .map_err(|e| format!("ip: {e}"))?;
            if !out.status.success() {
                return Err(format!(
                    "ip {}: {}",
                    st.join(" "),
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
        }
        Ok(p)
    }

    /// Takes the receiver's end of the link down or up.
    fn link(&self, up: bool) {
        let dev = format!("{}v", self.receiver_ns);
        let st = Command::new("ip")
            .args([
                "-n",
                &self.receiver_ns,
                "link",
                "set",
                &dev,
                if up { "up" } else { "down" },
            ])
            .status()
            .unwrap();
        assert!(st.success());
    }
}

impl Drop for NetPair {
    fn drop(&mut self) {
        for ns in [&self.sender_ns, &self.receiver_ns] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

#[test]
fn separate_network_namespaces_link_down_and_kill9_of_both_ends_lose_and_duplicate_nothing() {
    if !is_root() || Command::new("ip").arg("-V").output().is_err() {
        support::skip("needs root and iproute2 (ip netns)");
        return;
    }
    let net = NetPair::new().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    // The receiver runs in its namespace, listening on its veth address.
    let wrapper = tmp.path().join("in-receiver-ns");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nexec ip netns exec {} {} \"$@\"\n",
            net.receiver_ns,
            env!("CARGO_BIN_EXE_audisp-receive")
        ),
    )
    .unwrap();
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut r = Receiver::start_with(
        &wrapper,
        tmp.path(),
        &format!("{}:{port}", NetPair::RECEIVER_IP),
        &["--log-keep", "100"],
    );
    let mut d = sender_dispatcher();
    let dpath = d.path().to_path_buf();
    let spawn_sender = || {
        let err = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dpath.join("remote.err"))
            .unwrap();
        Command::new("ip")
            .args([
                "netns",
                "exec",
                &net.sender_ns,
                env!("CARGO_BIN_EXE_audisp-remote"),
            ])
            .arg("--no-config")
            .arg("--server")
            .arg(format!("{}:{port}", NetPair::RECEIVER_IP))
            .arg("--spool-dir")
            .arg(dpath.join("spool"))
            .arg("--listen")
            .arg(dpath.join("run/remote.sock"))
            .args(["--retry-max", "1", "--reply-timeout", "2"])
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .unwrap()
    };
    let mut s = spawn_sender();
    let data = sample_copies(3);
    let all = lines(&data);
    let third = all.len() / 3;
    let cut = |k: usize| -> Vec<u8> {
        all[k * third..if k == 2 { all.len() } else { (k + 1) * third }]
            .iter()
            .flat_map(|l| [*l, b"\n"].concat())
            .collect()
    };
    let mut stdin = d.child.as_mut().unwrap().stdin.take().unwrap();
    stdin.write_all(&cut(0)).unwrap();
    r.wait_lines(third, Duration::from_secs(60));
    // Link down for a while: records pile up in the sender's spool.
    net.link(false);
    stdin.write_all(&cut(1)).unwrap();
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        r.lines().len() <= third + 1,
        "records crossed a link that was down"
    );
    net.link(true);
    r.wait_lines(2 * third, Duration::from_secs(90));
    // Aggregator kill -9 mid-stream, restart.
    stdin.write_all(&cut(2)).unwrap();
    r.kill9();
    r.spawn();
    // Sender kill -9 mid-stream, restart (in its namespace).
    s.kill().unwrap();
    s.wait().unwrap();
    s = spawn_sender();
    let got = r.wait_lines_or(all.len(), Duration::from_secs(90), &|| sender_log(&d));
    assert_same(
        &got,
        &all,
        "across namespaces with link down, aggregator and sender kill -9",
    );
    stop_child(s);
    r.stop();
    let _ = d.stop();
}

#[test]
fn socket_activated_receiver_serves_the_passed_listener() {
    if Command::new("systemd-socket-activate")
        .arg("--help")
        .output()
        .is_err()
    {
        support::skip("systemd-socket-activate not installed");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut child = Command::new("systemd-socket-activate")
        .arg("-l")
        .arg(format!("127.0.0.1:{port}"))
        .arg(env!("CARGO_BIN_EXE_audisp-receive"))
        .arg("--no-config")
        .arg("--state-dir")
        .arg(tmp.path().join("state"))
        .arg("--log")
        .arg(tmp.path().join("audit.log"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The socket exists before the program runs (as with a .socket unit);
    // the connection waits in its backlog until the receiver accepts.
    let mut c = None;
    wait_until(Duration::from_secs(20), "the activation socket", || {
        c = TcpStream::connect(("127.0.0.1", port)).ok();
        c.is_some()
    });
    let mut c = c.unwrap();
    c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let text = b"type=USER msg=audit(1700000000.001:1): activated";
    let h = managed_exchange(&mut c, 2, &[&text[..], b"\n"].concat());
    assert_eq!((h.mtype, h.seq), (types::ACK, 2));
    wait_until(Duration::from_secs(20), "the record in the log", || {
        audisp::remote::logfile::read_lines(&tmp.path().join("audit.log"))
            .is_ok_and(|l| l == vec![text.to_vec()])
    });
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let mut hdr = [0u8; 16];
    c.read_exact(&mut hdr).unwrap();
    assert_eq!(wire::Header::parse(&hdr).unwrap().mtype, types::ENDING);
    assert!(child.wait().unwrap().success());
}

#[test]
fn per_address_limit_handshake_and_idle_timeouts_close_connections() {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut r = Receiver::start(
        tmp.path(),
        port,
        &[
            "--max-per-addr",
            "1",
            "--handshake-timeout",
            "1",
            "--idle-timeout",
            "2",
        ],
    );
    let mut a = TcpStream::connect(("127.0.0.1", port)).unwrap();
    a.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let h = managed_exchange(&mut a, 2, b"type=USER msg=audit(1700000000.001:1): one\n");
    assert_eq!(h.mtype, types::ACK);
    // A second stock sender from the same address is closed at its first
    // record, unanswered (stock duplicate suppression is per address).
    let mut b = TcpStream::connect(("127.0.0.1", port)).unwrap();
    b.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut m = Vec::new();
    wire::encode(
        &mut m,
        types::MESSAGE,
        2,
        b"type=USER msg=audit(1.000:2): two\n",
    )
    .unwrap();
    b.write_all(&m).unwrap();
    let mut rest = Vec::new();
    assert!(matches!(b.read_to_end(&mut rest), Ok(0) | Err(_)));
    assert!(rest.is_empty());
    // A connection that says nothing is closed after the handshake timeout.
    let t0 = Instant::now();
    let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    assert!(matches!(c.read_to_end(&mut rest), Ok(0)));
    let silent = t0.elapsed();
    // The first one, silent, is told ENDING and closed after the idle
    // timeout.
    let mut hdr = [0u8; 16];
    a.read_exact(&mut hdr).unwrap();
    let end = wire::Header::parse(&hdr).unwrap();
    assert_eq!((end.mtype, end.seq), (types::ENDING, 0));
    assert!(matches!(a.read_to_end(&mut rest), Ok(0) | Err(_)));
    r.stop();
    assert_same(
        &r.lines(),
        &[b"type=USER msg=audit(1700000000.001:1): one"],
        "the first sender's record only",
    );
    let log = r.stderr();
    assert!(
        log.contains("stock-protocol sender connection(s) from this address"),
        "{log}"
    );
    assert!(
        log.contains("no handshake and first message within 1s"),
        "{log}"
    );
    assert!(log.contains("closing: idle (sent ENDING)"), "{log}");
    assert!(silent < Duration::from_secs(8), "{silent:?}");
}

/// A TCP connection to 127.0.0.1:`port` from the loopback address `src`.
fn connect_from(src: std::net::Ipv4Addr, port: u16) -> std::io::Result<TcpStream> {
    use nix::sys::socket::{bind, connect, socket, AddressFamily, SockFlag, SockType, SockaddrIn};
    use std::net::{Ipv4Addr, SocketAddrV4};
    use std::os::fd::AsRawFd;
    let fd = socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    bind(fd.as_raw_fd(), &SockaddrIn::from(SocketAddrV4::new(src, 0)))?;
    let to = SocketAddrV4::new(Ipv4Addr::LOCALHOST, port);
    connect(fd.as_raw_fd(), &SockaddrIn::from(to))?;
    Ok(TcpStream::from(fd))
}

/// Where a flood of `n` connections comes from: half from 127.0.0.1 (the
/// address of a sender, as a hostile local user or a NAT would share it),
/// half from as many other loopback addresses.
fn flood_sources(n: usize) -> Vec<std::net::Ipv4Addr> {
    (0..n)
        .map(|i| {
            if i % 2 == 0 {
                std::net::Ipv4Addr::LOCALHOST
            } else {
                std::net::Ipv4Addr::new(127, 1, (i / 250) as u8, (i % 250) as u8 + 1)
            }
        })
        .collect()
}

/// Retries `attempt` every 50 ms until it succeeds; it must within 2 s.
fn gets_in_within_2s(what: &str, r: &Receiver, mut attempt: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !attempt() {
        assert!(
            t0.elapsed() < Duration::from_secs(2),
            "{what} not in after {:?}\n{}",
            t0.elapsed(),
            r.stderr()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        t0.elapsed() < Duration::from_secs(2),
        "{what}: {:?}",
        t0.elapsed()
    );
}

/// One fast-mode exchange on `c`: hello, heartbeat and a batch of `recs`
/// from `first`; whether all of it was acknowledged.
fn fast_exchange(c: &mut (impl Read + Write), id: [u8; 16], first: u64, recs: &[&[u8]]) -> bool {
    if c.write_all(&fast_opening(id, first, recs))
        .and_then(|_| c.flush())
        .is_err()
    {
        return false;
    }
    matches!(fast_reply(c), Some((types::FAST_OK, _)))
        && fast_reply(c) == Some((types::FAST_ACK, first + recs.len() as u64 - 1))
}

/// A fast-mode sender's session over plain TCP from `src`.
fn plain_session(src: std::net::Ipv4Addr, port: u16, id: [u8; 16], first: u64, rec: &str) -> bool {
    let Ok(mut c) = connect_from(src, port) else {
        return false;
    };
    c.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    fast_exchange(&mut c, id, first, &[rec.as_bytes()])
}

fn flood_record(i: u64) -> String {
    format!("type=USER msg=audit(1700000000.{i:03}:{i}): sent during the flood {i}")
}

/// Stops `r` once its log holds the three records sent during a flood,
/// and checks it holds nothing else.
fn stop_with_the_flood_records(r: &mut Receiver) {
    let want: Vec<String> = (1..=3).map(flood_record).collect();
    let want: Vec<&[u8]> = want.iter().map(|s| s.as_bytes()).collect();
    let got = r.wait_lines(3, Duration::from_secs(20));
    r.stop();
    assert_same(&got, &want, "the senders' records");
}

/// Found by attack (issue 10): 500 idle TCP connections locked a real
/// sender out of audisp-receive for as long as they were held (no
/// handshake timeout, and the per-address limit taken by whoever came
/// first). With the defaults, a sender the store knows — from the very
/// address half the flood comes from — and a sender never seen before both
/// get in within 2 s while the flood is held.
#[test]
fn senders_get_in_within_2s_during_a_flood_of_idle_connections() {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut r = Receiver::start(tmp.path(), port, &[]);
    let (known, new) = ([0x11; 16], [0x22; 16]);
    let local = std::net::Ipv4Addr::LOCALHOST;
    assert!(plain_session(local, port, known, 1, &flood_record(1)));
    let flood: Vec<TcpStream> = flood_sources(500)
        .into_iter()
        .filter_map(|src| connect_from(src, port).ok())
        .collect();
    assert!(flood.len() >= 400, "only {} connections made", flood.len());
    gets_in_within_2s("the known sender", &r, || {
        plain_session(local, port, known, 2, &flood_record(2))
    });
    let elsewhere = std::net::Ipv4Addr::new(127, 2, 0, 1);
    gets_in_within_2s("a new sender", &r, || {
        plain_session(elsewhere, port, new, 1, &flood_record(3))
    });
    drop(flood);
    stop_with_the_flood_records(&mut r);
    assert!(
        r.stderr().contains("its place went to a newer connection"),
        "{}",
        r.stderr()
    );
}

/// As above with TLS, the flood being 500 connections that send a TLS
/// ClientHello without a client certificate and then stall mid-handshake.
#[test]
fn senders_get_in_within_2s_during_a_flood_of_stalled_tls_handshakes() {
    if !is_root() {
        support::skip("TLS key files must be owned by root");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let pki = make_pki(tmp.path());
    let port = free_port();
    let mut r = Receiver::start(
        tmp.path(),
        port,
        &strs(&tls_args(&pki.server_cert, &pki.server_key, &pki.ca)),
    );
    let client = pki.client(&pki.client_cert, &pki.client_key);
    let session = |src: std::net::Ipv4Addr, id: [u8; 16], first: u64, rec: &str| {
        let Ok(sock) = connect_from(src, port) else {
            return false;
        };
        sock.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
        match client.connect(sock) {
            Ok(mut c) => fast_exchange(&mut c, id, first, &[rec.as_bytes()]),
            Err(_) => false,
        }
    };
    let (known, new) = ([0x33; 16], [0x44; 16]);
    let local = std::net::Ipv4Addr::LOCALHOST;
    assert!(session(local, known, 1, &flood_record(1)));
    // The flood: a ClientHello, as a client without a certificate sends
    // it, and then silence.
    let mut roots = rustls::RootCertStore::empty();
    let ca = std::fs::read(&pki.ca).unwrap();
    for c in rustls::pki_types::CertificateDer::pem_slice_iter(&ca) {
        roots.add(c.unwrap()).unwrap();
    }
    use rustls::pki_types::pem::PemObject;
    let no_cert = std::sync::Arc::new(
        rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth(),
    );
    let flood: Vec<TcpStream> = flood_sources(500)
        .into_iter()
        .filter_map(|src| {
            let mut sock = connect_from(src, port).ok()?;
            let name = "aggregator.test".try_into().unwrap();
            let mut conn = rustls::ClientConnection::new(no_cert.clone(), name).unwrap();
            conn.write_tls(&mut sock).ok()?;
            Some(sock)
        })
        .collect();
    assert!(flood.len() >= 400, "only {} connections made", flood.len());
    gets_in_within_2s("the known sender", &r, || {
        session(local, known, 2, &flood_record(2))
    });
    gets_in_within_2s("a new sender", &r, || {
        session(
            std::net::Ipv4Addr::new(127, 2, 0, 1),
            new,
            1,
            &flood_record(3),
        )
    });
    drop(flood);
    stop_with_the_flood_records(&mut r);
}

#[test]
fn failure_actions_are_asked_of_the_dispatcher() {
    let mut d = Dispatcher::new(MAIN_NO_STATS);
    d.write_plugin(
        "remote",
        "socket = \"{dir}/run/remote.sock\"\nformat = \"native\"\n[restart]\ninitial = \"20ms\"\nmax = \"200ms\"\n[actions.network-down]\nrun = \"log\"\n",
    );
    d.start(Stdio::piped()).unwrap();
    // Nothing listens on this port: the first attempt fails.
    let port = free_port();
    let s = start_sender(
        &d,
        port,
        &["--on-network-failure", "dispatcher:network-down"],
    );
    let mut stdin = d.child.as_mut().unwrap().stdin.take().unwrap();
    stdin
        .write_all(b"type=USER msg=audit(1700000000.001:1): first\n")
        .unwrap();
    wait_until(Duration::from_secs(20), "the network failure", || {
        sender_log(&d).contains("network failure")
    });
    // The request goes out as the failure happens, not with a next batch:
    // nothing more is written.
    wait_until(Duration::from_secs(20), "the action's answer", || {
        sender_log(&d).contains("action \"network-down\": Done")
    });
    d.wait_log("network-down", Duration::from_secs(10));
    drop(stdin);
    stop_child(s);
    let _ = d.stop();
    // Unconfigured names are refused by the dispatcher, not run.
    assert!(audisp::remote::sender::Action::parse("dispatcher:Bad Name").is_err());
}

/// With overflow = block and the aggregator away, a full spool makes the
/// plugin wait — yet it keeps feeding the watchdog (systemd must not kill
/// a plugin for waiting on purpose) and its failure actions still reach
/// audispd; once the aggregator is back, every record arrives once.
#[test]
fn a_full_spool_waits_for_the_aggregator_feeding_the_watchdog() {
    let tmp = tempfile::tempdir().unwrap();
    let mut d = Dispatcher::new(MAIN_NO_STATS);
    d.write_plugin(
        "remote",
        "socket = \"{dir}/run/remote.sock\"\nformat = \"native\"\n[restart]\ninitial = \"20ms\"\nmax = \"200ms\"\n[actions.network-down]\nrun = \"log\"\n",
    );
    d.start(Stdio::piped()).unwrap();
    let port = free_port();
    let notify_path = d.path().join("remote-notify.sock");
    // Read like systemd reads: all the time (an unread queue would block
    // the plugin's pings after ten of them).
    let notify = NotifyCapture::bind(&notify_path);
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (seen, done) = (seen.clone(), done.clone());
        let mut notify = notify;
        std::thread::spawn(move || {
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                if let Ok(Some(m)) = notify.next(Duration::from_millis(100)) {
                    seen.lock().unwrap().push(m);
                }
            }
        })
    };
    let pings_since = |t: Instant| {
        seen.lock()
            .unwrap()
            .iter()
            .filter(|m| m.at >= t && m.text.contains("WATCHDOG=1"))
            .count()
    };
    let mut s = start_sender_env(
        &d,
        port,
        &[
            "--spool-max",
            "65536",
            "--on-network-failure",
            "dispatcher:network-down",
        ],
        &[
            ("NOTIFY_SOCKET", notify_path.as_os_str()),
            ("WATCHDOG_USEC", "1000000".as_ref()),
        ],
    );
    wait_until(Duration::from_secs(20), "READY=1", || {
        seen.lock()
            .unwrap()
            .iter()
            .any(|m| m.text.contains("READY=1"))
    });
    // 3.4 MB, more than the 2.2 MB one batch can hold at most (the limit
    // is checked before a batch goes in): some batch finds the spool full.
    let data = sample_copies(3);
    let all = lines(&data);
    let _stdin = keep_feeding(&mut d, &data);
    let t0 = Instant::now();
    while !sender_log(&d).contains("spool full") {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "the spool never filled\n{}\n--- audispd ---\n{}",
            sender_log(&d),
            d.log_tail(20)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    wait_until(Duration::from_secs(20), "the action's answer", || {
        sender_log(&d).contains("action \"network-down\": Done")
    });
    // Waiting on purpose is not hanging: over two seconds of a full
    // spool, the 1 s watchdog is fed about eight times.
    let t = Instant::now();
    std::thread::sleep(Duration::from_secs(2));
    let pings = pings_since(t);
    assert!(pings >= 4, "{pings} watchdog pings in 2 s while waiting");
    assert!(
        sender_log(&d).contains("spool full"),
        "still waiting: {}",
        sender_log(&d)
    );
    let r = Receiver::start(tmp.path(), port, &[]);
    let got = r.wait_lines_or(all.len(), Duration::from_secs(60), &|| {
        format!("{}\n--- audispd ---\n{}", sender_log(&d), d.log_tail(20))
    });
    assert_same(&got, &all, "after the spool was full");
    // Never restarted meanwhile.
    assert!(s.try_wait().unwrap().is_none(), "audisp-remote still runs");
    stop_child(s);
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    reader.join().unwrap();
    let _ = d.stop();
}

/// Under `WatchdogSec=`, audisp-receive pings the watchdog periodically
/// while its accept loop runs, and not while it is frozen.
#[test]
fn receiver_feeds_the_watchdog_only_while_it_runs() {
    let dir = tempfile::tempdir().unwrap();
    let notify_path = dir.path().join("notify.sock");
    let mut notify = NotifyCapture::bind(&notify_path);
    let mut child = Command::new(env!("CARGO_BIN_EXE_audisp-receive"))
        .arg("--no-config")
        .arg("--listen")
        .arg("127.0.0.1:0")
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .arg("--log")
        .arg(dir.path().join("audit.log"))
        .env("NOTIFY_SOCKET", &notify_path)
        .env("WATCHDOG_USEC", "1000000")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    notify.wait_for("READY=1", Duration::from_secs(20)).unwrap();
    let count_pings = |notify: &mut NotifyCapture, over: Duration| {
        let until = Instant::now() + over;
        let mut n = 0;
        while let Some(left) = until.checked_duration_since(Instant::now()) {
            match notify.next(left).unwrap() {
                Some(m) if m.text.contains("WATCHDOG=1") => n += 1,
                _ => {}
            }
        }
        n
    };
    // A quarter of the interval apart: about 8 in 2 s.
    let running = count_pings(&mut notify, Duration::from_secs(2));
    assert!(running >= 4, "{running} pings in 2 s while running");
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).unwrap();
    // What was sent before the stop may still be queued.
    let _ = count_pings(&mut notify, Duration::from_millis(100));
    let frozen = count_pings(&mut notify, Duration::from_millis(1500));
    assert_eq!(frozen, 0, "no pings while frozen");
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT).unwrap();
    let resumed = count_pings(&mut notify, Duration::from_secs(2));
    assert!(resumed >= 4, "{resumed} pings in 2 s after SIGCONT");
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    assert!(child.wait().unwrap().success());
}

/// `--on-network-failure suspend`: sending stops until SIGUSR2, even once
/// the aggregator is back; after SIGUSR2 every record arrives, once.
#[test]
fn suspended_sending_resumes_on_sigusr2_and_loses_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let mut d = sender_dispatcher();
    // Nothing listens on this port yet: the first attempt fails.
    let port = free_port();
    let s = start_sender(&d, port, &["--on-network-failure", "suspend"]);
    let data = sample();
    let all = lines(&data);
    let _stdin = keep_feeding(&mut d, &data);
    wait_until(Duration::from_secs(20), "the suspension", || {
        sender_log(&d).contains("suspending sending until SIGUSR2")
    });
    let r = Receiver::start(tmp.path(), port, &[]);
    // Unsuspended, the sender would have connected within milliseconds.
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        r.lines().is_empty(),
        "sent while suspended\n{}",
        sender_log(&d)
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(s.id() as i32),
        nix::sys::signal::Signal::SIGUSR2,
    )
    .unwrap();
    let got = r.wait_lines_or(all.len(), Duration::from_secs(60), &|| {
        format!("{}\n--- audispd ---\n{}", sender_log(&d), d.log_tail(20))
    });
    assert_same(&got, &all, "after SIGUSR2");
    assert!(
        sender_log(&d).contains("SIGUSR2: sending again"),
        "{}",
        sender_log(&d)
    );
    stop_child(s);
    let _ = d.stop();
}
