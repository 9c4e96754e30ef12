//! Socket activation, with systemd's own `systemd-socket-activate` and with
//! a test wrapper: audispd takes its input socket from `LISTEN_FDS` by name
//! (`input`) instead of binding its configured path; a socket of the wrong
//! kind is refused with a precise error; plugins behind activated sockets
//! (a native plugin on `SOCK_SEQPACKET`, a stock-format one on a stream
//! socket with `Accept=yes`) get every record once.

mod support;

use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use audisp::sdk::InputClient;
use support::dispatcher::{example, lines, sample, sink_plugin, texts, wait_sink, Dispatcher};
use support::wait_until;

const ACTIVATE: &str = "systemd-socket-activate";

/// Whether systemd-socket-activate is installed (CI installs systemd).
fn have_activate() -> bool {
    let found = Command::new(ACTIVATE)
        .arg("--help")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if !found {
        support::skip(&format!(
            "{ACTIVATE} not installed (apt-get install systemd)"
        ));
    }
    found
}

/// Main configuration whose own input socket path is `own` (which must stay
/// unbound when a socket is passed).
fn main_config(own: &Path) -> String {
    format!(
        "[input.socket]\npath = \"{}\"\n[journal]\nsegment_size = \"1M\"\nmemory = \"1M\"\n[stats]\ninterval = \"0\"\n",
        own.display()
    )
}

/// Sends every record of `records` through the input socket at `path`,
/// numbered from 1, and waits until all are acknowledged.
fn send_all(path: &Path, records: &[&[u8]]) {
    let epoch = *b"socket-activ-tst";
    let (mut c, after) = InputClient::connect(path, "activated", epoch).expect("connect");
    assert_eq!(after, 0, "a fresh dispatcher has nothing from this input");
    for (chunk_no, chunk) in records.chunks(500).enumerate() {
        let first = (chunk_no * 500) as u64 + 1;
        c.send(
            chunk
                .iter()
                .enumerate()
                .map(|(i, r)| (first + i as u64, 0, *r)),
        )
        .expect("send");
    }
    c.wait_acked(records.len() as u64, Duration::from_secs(30))
        .expect("every record acknowledged");
}

/// The sink plugin's output must be exactly `expected`, in order, once.
fn assert_exactly(out: &Path, expected: &[&[u8]]) {
    let got = wait_sink(out, expected.len(), Duration::from_secs(30));
    assert_eq!(got.records.len(), expected.len(), "no record twice");
    assert!(texts(&got) == expected, "every record, in order");
}

#[test]
fn wrapper_passes_a_named_seqpacket_input_socket() {
    let data = sample();
    let records = lines(&data);
    let mut d = Dispatcher::new("");
    let own = d.path().join("run/own-input.sock");
    d.write_main(&main_config(&own));
    d.write_plugin("sink", &sink_plugin("sink", "", ""));
    // The socket systemd would have made: bound by the test, passed as fd 3
    // with the name "input", LISTEN_PID set by the shell to the pid that
    // execs audispd.
    let passed = d.path().join("passed.sock");
    let listener =
        audisp::uds::listen(&passed, nix::sys::socket::SockType::SeqPacket, 0o600, 16).unwrap();
    let raw = listener.as_raw_fd();
    let mut cmd = Command::new("sh");
    cmd.args(["-c", "LISTEN_PID=$$ exec \"$0\" \"$@\""])
        .arg(env!("CARGO_BIN_EXE_audispd"))
        .args(d.args())
        .env("LISTEN_FDS", "1")
        .env("LISTEN_FDNAMES", "input")
        .env("NOTIFY_SOCKET", d.notify.path())
        .env("AUDISP_LOG", "info");
    // SAFETY: dup2 is async-signal-safe.
    unsafe {
        cmd.pre_exec(move || {
            if libc::dup2(raw, 3) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    d.spawn(cmd, Stdio::null()).unwrap();
    drop(listener);
    d.notify
        .wait_for("READY=1", Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("{e}\n{}", d.log_tail(30)));
    send_all(&passed, &records);
    assert_exactly(&d.out("sink"), &records);
    assert!(
        !own.exists(),
        "audispd bound its configured socket although one was passed"
    );
    d.wait_log("input socket passed by the service manager", Duration::ZERO);
    assert!(d.stop().unwrap().success());
}

/// A record source that connects (and so fires the activation) and then
/// sends every record.
fn send_all_when_activated(path: PathBuf, records: Vec<Vec<u8>>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let refs: Vec<&[u8]> = records.iter().map(|r| &r[..]).collect();
        send_all(&path, &refs);
    })
}

#[test]
fn systemd_socket_activate_starts_audispd_on_the_first_input_connection() {
    if !have_activate() {
        return;
    }
    let data = sample();
    let records = lines(&data);
    let mut d = Dispatcher::new("");
    let own = d.path().join("run/own-input.sock");
    d.write_main(&main_config(&own));
    d.write_plugin("sink", &sink_plugin("sink", "", ""));
    let sock = d.path().join("audisp-input.sock");
    let mut cmd = Command::new(ACTIVATE);
    cmd.arg("--seqpacket")
        .arg("-l")
        .arg(&sock)
        .arg("--fdname=input")
        .arg(format!(
            "--setenv=NOTIFY_SOCKET={}",
            d.notify.path().display()
        ))
        .arg("--setenv=AUDISP_LOG=info")
        .arg(env!("CARGO_BIN_EXE_audispd"))
        .args(d.args());
    d.spawn(cmd, Stdio::null()).unwrap();
    wait_until(Duration::from_secs(10), "the activation socket", || {
        sock.exists()
    });
    assert!(
        d.notify.next(Duration::from_millis(300)).unwrap().is_none(),
        "audispd must not run before the first connection"
    );
    let feeder =
        send_all_when_activated(sock.clone(), records.iter().map(|r| r.to_vec()).collect());
    let ready = d
        .notify
        .wait_note("READY=1", Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("{e}\n{}", d.log_tail(30)));
    assert_eq!(
        ready.pid,
        Some(d.pid() as i32),
        "audispd replaced the activator in place, as under systemd"
    );
    feeder.join().expect("the input delivered every record");
    assert_exactly(&d.out("sink"), &records);
    assert!(
        !own.exists(),
        "the passed socket was used, not the configured path"
    );
    let log = d.log();
    assert!(
        log.contains("input socket passed by the service manager"),
        "{log}"
    );
    assert!(d.stop().unwrap().success());
}

#[test]
fn a_passed_socket_of_the_wrong_kind_is_refused_with_its_name() {
    if !have_activate() {
        return;
    }
    let mut d = Dispatcher::new(&main_config(Path::new("own.sock")));
    let sock = d.path().join("stream.sock");
    let mut cmd = Command::new(ACTIVATE);
    // A stream socket where audispd needs a seqpacket one (a wrong
    // ListenStream= in the socket unit), plus one with a name nobody takes.
    cmd.arg("-l")
        .arg(&sock)
        .arg("--fdname=input")
        .arg("--setenv=AUDISP_LOG=info")
        .arg(env!("CARGO_BIN_EXE_audispd"))
        .args(d.args());
    d.spawn(cmd, Stdio::null()).unwrap();
    wait_until(Duration::from_secs(10), "the activation socket", || {
        sock.exists()
    });
    let _trigger = std::os::unix::net::UnixStream::connect(&sock).unwrap();
    let status = d.wait(Duration::from_secs(30)).unwrap();
    assert!(
        !status.success(),
        "audispd must refuse a stream input socket"
    );
    let log = d.log();
    assert!(
        log.contains("the socket passed as \"input\" (fd 3) is a Stream socket, not SeqPacket"),
        "{log}"
    );
}

/// Kills a launcher (and what it runs) on drop.
struct Reap(Child);

impl Drop for Reap {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn plugins_behind_activated_sockets_get_every_record_once() {
    if !have_activate() {
        return;
    }
    let data = sample();
    let records = lines(&data);
    let mut d = Dispatcher::new("[journal]\nsegment_size = \"1M\"\nmemory = \"1M\"\n");
    // A native plugin (the SDK finds the passed SOCK_SEQPACKET listener),
    // as `native.socket` with FileDescriptorName=native would start it.
    let native_sock = d.path().join("native.sock");
    let native = Reap(
        Command::new(ACTIVATE)
            .arg("--seqpacket")
            .arg("-l")
            .arg(&native_sock)
            .arg("--fdname=native")
            .arg(example("sink"))
            .arg("--out")
            .arg(d.out("native"))
            .arg("--name")
            .arg("native")
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    // A stock auditd-format plugin reading its standard input, behind a
    // stream socket with Accept=yes and StandardInput=socket (--inetd).
    let stock_sock = d.path().join("stock.sock");
    let stock_out = d.out("stock");
    let stock = Reap(
        Command::new(ACTIVATE)
            .arg("-l")
            .arg(&stock_sock)
            .arg("--accept")
            .arg("--inetd")
            .arg("--fdname=stock")
            .args(["/bin/sh", "-c", "exec cat >> \"$0\""])
            .arg(&stock_out)
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_until(Duration::from_secs(10), "the plugin sockets", || {
        native_sock.exists() && stock_sock.exists()
    });
    d.write_plugin(
        "native",
        &format!("socket = \"{}\"\n", native_sock.display()),
    );
    d.write_plugin(
        "stock",
        &format!(
            "socket = \"{}\"\nformat = \"string\"\n",
            stock_sock.display()
        ),
    );
    let mut child_stdin = {
        d.start(Stdio::piped()).unwrap();
        d.child.as_mut().unwrap().stdin.take().unwrap()
    };
    std::io::Write::write_all(&mut child_stdin, &data).unwrap();
    drop(child_stdin);
    assert_exactly(&d.out("native"), &records);
    wait_until(
        Duration::from_secs(30),
        "the stock plugin's records",
        || std::fs::read(&stock_out).map_or(0, |v| lines(&v).len()) >= records.len(),
    );
    let stock_data = std::fs::read(&stock_out).unwrap();
    assert!(
        lines(&stock_data) == records,
        "the stream plugin got every record once, in order"
    );
    // auditd closed the stream: audispd drains its plugins and stops.
    assert!(d.wait(Duration::from_secs(30)).unwrap().success());
    drop((native, stock));
}
