//! Overflow policies: what happens to a plugin that falls behind, and that
//! nothing happens to the others.
//!
//! * `overflow = "drop"`: a connected plugin that never acknowledges loses
//!   its oldest records (counted as dropped), stays connected, and the other
//!   plugins get everything;
//! * `overflow = "suspend"`: such a plugin is suspended, the others get
//!   everything;
//! * `overflow = "spool"` (the default): a plugin that is down during the
//!   whole 170k-record corpus costs disk, not memory (audispd's peak RSS
//!   stays far below the corpus size), the state report shows the backlog,
//!   and once the plugin comes up it gets every record.

mod support;

use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use audisp::protocol::{self, FromDispatcher, Hello};
use nix::sys::socket;
use support::dispatcher::{
    corpus, example, lines, read_sink, sample, sink_plugin, texts, wait_sink, Dispatcher,
};
use support::wait_until;

const MAIN: &str = r#"
[journal]
segment_size = "1M"
memory = "1M"
[shutdown]
timeout = "2s"
[stats]
interval = "0"
"#;

/// A native plugin that listens on `path`, says HELLO, reads WELCOME and
/// then never reads or acknowledges anything. The connection is handed
/// back (kept open by the test).
fn stuck_plugin(path: PathBuf) -> std::sync::mpsc::Receiver<OwnedFd> {
    let listener = socket::socket(
        socket::AddressFamily::Unix,
        socket::SockType::SeqPacket,
        socket::SockFlag::SOCK_CLOEXEC,
        None,
    )
    .unwrap();
    socket::bind(listener.as_raw_fd(), &socket::UnixAddr::new(&path).unwrap()).unwrap();
    socket::listen(&listener, socket::Backlog::new(4).unwrap()).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let fd = socket::accept(listener.as_raw_fd()).unwrap();
        // SAFETY: accept returned a new descriptor we own.
        let conn: OwnedFd = unsafe { std::os::fd::FromRawFd::from_raw_fd(fd) };
        socket::send(
            conn.as_raw_fd(),
            &protocol::encode_hello(&Hello::output("stuck")),
            socket::MsgFlags::empty(),
        )
        .unwrap();
        let mut buf = vec![0u8; protocol::MAX_MESSAGE];
        let n = socket::recv(conn.as_raw_fd(), &mut buf, socket::MsgFlags::empty()).unwrap();
        assert!(matches!(
            protocol::decode_from_dispatcher(&buf[..n]),
            Ok(FromDispatcher::Welcome(_))
        ));
        let _ = tx.send(conn);
    });
    rx
}

fn stuck_config(policy: &str) -> String {
    format!(
        "socket = \"{{dir}}/run/stuck.sock\"\noverflow = \"{policy}\"\nqueue_size = 100\n[restart]\ninitial = \"20ms\"\nmax = \"100ms\"\n"
    )
}

/// Starts audispd with a stuck plugin (`policy`) and a fast sink, feeds the
/// sample on standard input (kept open) and waits until the sink has it all.
fn stuck_run(policy: &str) -> (Dispatcher, OwnedFd, std::process::ChildStdin) {
    let mut d = Dispatcher::new(MAIN);
    d.write_plugin("stuck", &stuck_config(policy));
    d.write_plugin("fast", &sink_plugin("fast", "", ""));
    let conn = stuck_plugin(d.path().join("run/stuck.sock"));
    d.start(Stdio::piped()).unwrap();
    let conn = conn
        .recv_timeout(Duration::from_secs(10))
        .expect("audispd connected to the stuck plugin");
    let data = sample();
    let all = lines(&data);
    let mut stdin = d.child.as_mut().unwrap().stdin.take().unwrap();
    stdin.write_all(&data).unwrap();
    let fast = wait_sink(&d.out("fast"), all.len(), Duration::from_secs(20));
    assert!(texts(&fast) == all, "the fast plugin got every record");
    (d, conn, stdin)
}

#[test]
fn drop_skips_the_oldest_records_of_a_stuck_plugin_only() {
    let (mut d, _conn, stdin) = stuck_run("drop");
    let total = lines(&sample()).len() as u64;
    // The policy is applied as the backlog grows; once every record is in,
    // the stuck plugin ends up at most queue_size behind.
    wait_until(
        Duration::from_secs(10),
        "stuck to drop all but queue_size records",
        || {
            let s = d.plugin_state("stuck");
            s.get("dropped") > 0 && s.get("queued") <= 100
        },
    );
    let stuck = d.plugin_state("stuck");
    assert_eq!(stuck.state, "connected", "{stuck:?}");
    assert!(
        stuck.get("dropped") >= total - 100 - stuck.get("delivered"),
        "{stuck:?}"
    );
    assert_eq!(stuck.get("acked"), 0, "{stuck:?}");
    assert_eq!(
        stuck.get("dropped_overflow"),
        stuck.get("dropped"),
        "every drop counted under its reason: {stuck:?}"
    );
    let fast = d.plugin_state("fast");
    assert_eq!(fast.get("dropped"), 0, "{fast:?}");
    assert_eq!(fast.get("queued"), 0, "{fast:?}");
    assert!(
        d.log()
            .contains("plugin stuck overflowed: its queue_size was exceeded"),
        "{}",
        d.log_tail(30)
    );
    drop(stdin);
    let status = d.wait(Duration::from_secs(20)).unwrap();
    assert!(status.success(), "{status}\n{}", d.log_tail(30));
    assert_eq!(
        read_sink(&d.out("fast")).records.len() as u64,
        total,
        "nothing twice"
    );
}

#[test]
fn suspend_suspends_a_stuck_plugin_only() {
    let (mut d, _conn, stdin) = stuck_run("suspend");
    wait_until(Duration::from_secs(10), "stuck to be suspended", || {
        d.plugin_state("stuck").state == "suspended"
    });
    let fast = d.plugin_state("fast");
    assert_eq!(fast.state, "connected", "{fast:?}");
    assert_eq!(fast.get("dropped"), 0, "{fast:?}");
    assert_eq!(fast.get("queued"), 0, "{fast:?}");
    assert!(
        d.log().contains("suspending it (overflow = suspend)"),
        "{}",
        d.log_tail(30)
    );
    // Nothing to wait for at shutdown: a suspended plugin takes nothing.
    drop(stdin);
    let status = d.wait(Duration::from_secs(10)).unwrap();
    assert!(status.success(), "{status}\n{}", d.log_tail(30));
    assert_eq!(
        read_sink(&d.out("fast")).records.len(),
        lines(&sample()).len(),
        "nothing twice"
    );
}

/// Peak resident memory of a process (VmHWM), in bytes.
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmHWM in /proc/PID/status");
    kb * 1024
}

fn sink_listening(sock: &Path, out: &Path) -> std::process::Child {
    std::process::Command::new(example("sink"))
        .arg("--out")
        .arg(out)
        .arg("--name")
        .arg("later")
        .arg("--listen")
        .arg(sock)
        .stdin(Stdio::null())
        .spawn()
        .unwrap()
}

/// Kills a child on drop (a test that fails must not leave it behind).
struct Reap(std::process::Child);

impl Drop for Reap {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn spool_keeps_a_down_plugins_backlog_on_disk_and_delivers_it_later() {
    // Peak RSS far below the corpus (44 MB): the backlog is not in memory.
    const RSS_LIMIT: u64 = 32 << 20;
    let data = corpus();
    let all = lines(&data);
    let mut d = Dispatcher::new(
        r#"
[journal]
segment_size = "4M"
memory = "4M"
[shutdown]
timeout = "30s"
[stats]
interval = "0"
"#,
    );
    d.write_plugin(
        "later",
        "socket = \"{dir}/run/later.sock\"\n[restart]\ninitial = \"20ms\"\nmax = \"100ms\"\n",
    );
    d.start(Stdio::piped()).unwrap();
    let pid = d.pid();
    let mut stdin = d.child.as_mut().unwrap().stdin.take().unwrap();
    let started = Instant::now();
    stdin.write_all(&data).unwrap();
    wait_until(Duration::from_secs(60), "the corpus to be stored", || {
        d.input_state("stdin").get("records") == all.len() as u64
    });
    eprintln!("corpus stored in {:?}", started.elapsed());
    let later = d.plugin_state("later");
    assert_eq!(later.state, "connecting", "{later:?}");
    // Journal entries, which include a few event-close markers besides the
    // records.
    let queued = later.get("queued");
    assert!(
        queued >= all.len() as u64 && queued <= all.len() as u64 + all.len() as u64 / 100,
        "the whole corpus is queued: {later:?}"
    );
    assert!(
        later.get("spooled") > all.len() as u64 / 2,
        "most of the backlog is only on disk: {later:?}"
    );
    assert_eq!(later.get("dropped"), 0, "{later:?}");
    let rss = peak_rss(pid);
    eprintln!("audispd peak RSS {} KiB", rss >> 10);
    assert!(
        rss < RSS_LIMIT,
        "audispd's peak RSS {} KiB with a {}-byte backlog; limit {} KiB",
        rss >> 10,
        data.len(),
        RSS_LIMIT >> 10
    );

    let sink = Reap(sink_listening(
        &d.path().join("run/later.sock"),
        &d.out("later"),
    ));
    let out = wait_sink(&d.out("later"), all.len(), Duration::from_secs(120));
    assert!(
        texts(&out) == all,
        "the plugin got the whole corpus, in order, once ({} records)",
        out.records.len()
    );
    let later = d.plugin_state("later");
    assert_eq!(later.get("queued"), 0, "{later:?}");
    let rss = peak_rss(pid);
    assert!(
        rss < RSS_LIMIT,
        "peak RSS {} KiB after replaying the backlog",
        rss >> 10
    );
    drop(stdin);
    let status = d.wait(Duration::from_secs(30)).unwrap();
    assert!(status.success(), "{status}\n{}", d.log_tail(30));
    assert!(
        d.log().contains("every plugin had every record"),
        "{}",
        d.log_tail(30)
    );
    drop(sink);
}
