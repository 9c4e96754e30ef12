//! `audisp-netfilter` against the real kernel: in a network namespace of its
//! own with real nftables rules (`log group N`), packets the test sends are
//! logged, read by `audisp-netfilter` running with no capability but
//! `CAP_NET_ADMIN`, relayed to a real audispd and written by a sink plugin.
//!
//! * ping (IPv4 and IPv6) and TCP connects from known ports give exactly one
//!   record per logged packet, with the right addresses, protocol, ports,
//!   hook, interface, uid/gid and prefix;
//! * a flood of 100,000 packets is delivered or counted as not handed over,
//!   packet for packet; with the reader stopped during a larger flood the
//!   kernel drops, the program counts exactly what it dropped, and its memory
//!   stays bounded.
//!
//! Needs root (network namespaces, nftables), `ip`, `nft` and `ping`; CI
//! installs them (`.ci/run`). Elsewhere the tests skip, saying why.

mod support;

use std::collections::HashSet;
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, UdpSocket};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use support::dispatcher::{read_sink, sink_plugin, Dispatcher, NotifyCapture};
use support::wait_until;

const MAIN: &str = "[input.stdin]\nenabled = false\n[journal]\nsegment_size = \"4M\"\nmemory = \"4M\"\n[stats]\ninterval = \"0\"\n";

/// Why these tests cannot run here, if they cannot.
fn unavailable() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("netfilter tests need root (network namespaces, nftables)".into());
    }
    for (tool, package) in [
        ("/usr/sbin/nft", "nftables"),
        ("/usr/bin/ping", "iputils-ping"),
        ("/usr/bin/setpriv", "util-linux"),
    ] {
        if !Path::new(tool).exists() {
            return Some(format!("{tool} missing (apt-get install {package})"));
        }
    }
    if Command::new("ip").arg("-V").output().is_err() {
        return Some("ip missing (apt-get install iproute2)".into());
    }
    None
}

/// A network namespace of the test's own, with loopback up and `rules`
/// loaded; deleted on drop.
struct Netns {
    name: String,
}

impl Netns {
    fn new(rules: &str) -> Netns {
        static N: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "audisp-nf-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        run(Command::new("ip").args(["netns", "add", &name]));
        let ns = Netns { name };
        run(Command::new("ip").args(["-n", &ns.name, "link", "set", "lo", "up"]));
        let mut nft = ns.exec("nft");
        nft.args(["-f", "-"]).stdin(Stdio::piped());
        let mut child = nft.spawn().expect("nft");
        std::io::Write::write_all(&mut child.stdin.take().expect("stdin"), rules.as_bytes())
            .expect("rules to nft");
        assert!(child.wait().expect("nft").success(), "nft refused {rules}");
        ns
    }

    /// `program` run inside the namespace.
    fn exec(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c
    }

    /// Runs `f` on a thread that entered the namespace (only that thread).
    fn within<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let path = PathBuf::from("/run/netns").join(&self.name);
        std::thread::scope(|s| {
            s.spawn(|| {
                let ns = std::fs::File::open(&path).expect("namespace file");
                // SAFETY: setns on a file descriptor we own; it changes only
                // this thread's network namespace.
                let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
                assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
                f()
            })
            .join()
            .expect("thread in the namespace")
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

fn run(c: &mut Command) {
    let out = c.output().expect("run");
    assert!(
        out.status.success(),
        "{c:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `audisp-netfilter` in `ns` with only `CAP_NET_ADMIN`, ready.
struct Reader {
    child: Option<Child>,
    log: PathBuf,
}

impl Reader {
    fn start(ns: &Netns, d: &Dispatcher, groups: &[&str]) -> Reader {
        let log = d.path().join("netfilter.log");
        let mut notify = NotifyCapture::bind(&d.path().join("netfilter-notify.sock"));
        let mut c = ns.exec("/usr/bin/setpriv");
        c.args([
            "--bounding-set=-all,+net_admin",
            "--inh-caps=-all",
            "--",
            env!("CARGO_BIN_EXE_audisp-netfilter"),
            "--socket",
        ])
        .arg(d.input_socket())
        .arg("--state-dir")
        .arg(d.path().join("netfilter"));
        for g in groups {
            c.args(["--group", g]);
        }
        let child = c
            .env("NOTIFY_SOCKET", notify.path())
            .env("AUDISP_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log"))
            .spawn()
            .expect("start audisp-netfilter");
        let r = Reader {
            child: Some(child),
            log,
        };
        notify
            .wait_for("READY=1", Duration::from_secs(30))
            .unwrap_or_else(|e| panic!("{e}\n{}", r.log()));
        r
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn pid(&self) -> Pid {
        Pid::from_raw(self.child.as_ref().expect("running").id() as i32)
    }

    /// Peak resident memory, KiB.
    fn peak_rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .expect("VmHWM")
    }

    /// SIGTERM; waits for a clean exit; returns (packets logged, packets
    /// the kernel did not hand over) from the final report.
    fn stop(&mut self) -> (u64, u64) {
        kill(self.pid(), Signal::SIGTERM).expect("SIGTERM");
        let status = self.child.take().expect("running").wait().expect("wait");
        let log = self.log();
        assert!(status.success(), "{status}\n{log}");
        assert!(log.contains("the dispatcher has every record"), "{log}");
        let line = log
            .lines()
            .find(|l| l.contains("stopped: "))
            .unwrap_or_else(|| panic!("no final report\n{log}"));
        let numbers: Vec<u64> = line
            .split("stopped: ")
            .nth(1)
            .unwrap()
            .split_whitespace()
            .filter_map(|w| w.trim_end_matches(',').parse().ok())
            .collect();
        (numbers[0], numbers[1])
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn field<'a>(record: &'a str, name: &str) -> Option<&'a str> {
    record
        .split(' ')
        .find_map(|w| w.strip_prefix(name)?.strip_prefix('='))
}

/// Connects to 127.0.0.1:`port` from 127.0.0.1:`from`.
fn connect_from(from: u16, port: u16) {
    use nix::sys::socket::{
        bind, connect, setsockopt, socket, sockopt, AddressFamily, SockFlag, SockType, SockaddrIn,
    };
    let fd = socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .expect("socket");
    setsockopt(&fd, sockopt::ReuseAddr, &true).expect("SO_REUSEADDR");
    bind(
        fd.as_raw_fd(),
        &SockaddrIn::from(SocketAddrV4::new(Ipv4Addr::LOCALHOST, from)),
    )
    .expect("bind source port");
    connect(
        fd.as_raw_fd(),
        &SockaddrIn::from(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port)),
    )
    .expect("connect");
}

const PING_RULES: &str = r#"
table inet audisp_test {
  chain out {
    type filter hook output priority 0;
    icmp type echo-request log group 7 prefix "ping"
    icmpv6 type echo-request log group 7 prefix "ping6"
    tcp dport 5555 tcp flags & (syn | ack) == syn log group 7 prefix "tcp syn"
  }
}
"#;

#[test]
fn ping_and_tcp_connects_give_one_record_per_logged_packet() {
    if let Some(why) = unavailable() {
        support::skip(&why);
        return;
    }
    let ns = Netns::new(PING_RULES);
    let mut d = Dispatcher::new(MAIN);
    d.write_plugin("sink", &sink_plugin("sink", "", ""));
    d.start(Stdio::null()).unwrap();
    let mut reader = Reader::start(&ns, &d, &["7"]);

    for (flag, to) in [("-4", "127.0.0.1"), ("-6", "::1")] {
        let out = ns
            .exec("ping")
            .args([flag, "-c", "3", "-i", "0.2", "-W", "1", to])
            .output()
            .expect("ping");
        assert!(out.status.success(), "ping {to}: {out:?}");
    }
    ns.within(|| {
        let listener = TcpListener::bind("127.0.0.1:5555").expect("listen");
        for from in [40001, 40002] {
            connect_from(from, 5555);
            listener.accept().expect("accept");
        }
    });
    wait_until(Duration::from_secs(30), "8 records at the sink", || {
        read_sink(&d.out("sink")).records.len() >= 8
    });
    let (logged, missed) = reader.stop();
    assert_eq!((logged, missed), (8, 0), "{}", reader.log());
    let out = read_sink(&d.out("sink"));
    let records: Vec<String> = out
        .records
        .iter()
        .map(|r| String::from_utf8(r.1.clone()).unwrap())
        .collect();
    assert_eq!(
        records.len(),
        8,
        "one record per logged packet: {records:#?}"
    );
    for r in &records {
        assert!(r.starts_with("type=NETFILTER_PKT msg=audit("), "{r}");
        assert_eq!(field(r, "mark"), Some("0x0"), "{r}");
        assert_eq!(field(r, "hook"), Some("3"), "the output hook: {r}");
        assert_eq!(field(r, "oif"), Some("\"lo\""), "{r}");
        assert_eq!(field(r, "iif"), None, "{r}");
        assert_eq!(
            (field(r, "uid"), field(r, "gid")),
            (Some("0"), Some("0")),
            "{r}"
        );
        assert_eq!(field(r, "group"), Some("7"), "{r}");
        assert!(audisp::record::parse(r.as_bytes()).is_some_and(|i| i.rtype == 1324));
    }
    let pings: Vec<&String> = records
        .iter()
        .filter(|r| field(r, "prefix") == Some("\"ping\""))
        .collect();
    assert_eq!(pings.len(), 3);
    for r in pings {
        assert_eq!(
            (
                field(r, "saddr"),
                field(r, "daddr"),
                field(r, "proto"),
                field(r, "sport")
            ),
            (Some("127.0.0.1"), Some("127.0.0.1"), Some("1"), None),
            "{r}"
        );
    }
    let pings6: Vec<&String> = records
        .iter()
        .filter(|r| field(r, "prefix") == Some("\"ping6\""))
        .collect();
    assert_eq!(pings6.len(), 3);
    for r in pings6 {
        assert_eq!(
            (field(r, "saddr"), field(r, "daddr"), field(r, "proto")),
            (Some("::1"), Some("::1"), Some("58")),
            "{r}"
        );
    }
    // "tcp syn" has a space: hex, as the kernel writes untrusted strings.
    let syns: Vec<(Option<&str>, Option<&str>)> = records
        .iter()
        .filter(|r| field(r, "prefix") == Some("7463702073796E"))
        .map(|r| {
            assert_eq!(
                (field(r, "saddr"), field(r, "daddr"), field(r, "proto")),
                (Some("127.0.0.1"), Some("127.0.0.1"), Some("6")),
                "{r}"
            );
            (field(r, "sport"), field(r, "dport"))
        })
        .collect();
    assert_eq!(
        syns,
        vec![(Some("40001"), Some("5555")), (Some("40002"), Some("5555"))]
    );
    let serials: HashSet<u64> = records
        .iter()
        .map(|r| audisp::record::parse(r.as_bytes()).unwrap().serial)
        .collect();
    assert_eq!(serials.len(), 8, "every record has its own serial");
    assert!(d.stop().unwrap().success());
}

const FLOOD_RULES: &str = r#"
table inet audisp_test {
  chain out {
    type filter hook output priority 0;
    udp dport 9999 log group 8 prefix "flood"
    udp dport 9998 log group 8 prefix "end"
  }
}
"#;

/// Sends `n` UDP datagrams of 512 bytes (so the kernel copies its whole
/// copy range of each) to port 9999.
fn flood(ns: &Netns, n: usize) {
    ns.within(|| {
        let s = UdpSocket::bind("127.0.0.1:0").expect("udp socket");
        let mut datagram = [0u8; 512];
        for i in 0..n {
            datagram[..4].copy_from_slice(&(i as u32).to_be_bytes());
            s.send_to(&datagram, "127.0.0.1:9999").expect("send");
        }
    });
}

fn is_end(record: &[u8]) -> bool {
    record.ends_with(b"prefix=\"end\" group=8")
}

/// Sends datagrams to port 9998 until the sink has an "end" record (if the
/// reader's buffer is still full, the kernel drops them too); each end
/// record also reveals the gaps before it. Returns how many were sent.
fn send_end_until_seen(ns: &Netns, d: &Dispatcher) -> u64 {
    let s = ns.within(|| UdpSocket::bind("127.0.0.1:0").expect("udp socket"));
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let mut sent = 0;
    loop {
        s.send_to(b"end", "127.0.0.1:9998").expect("send");
        sent += 1;
        let wait_until = std::time::Instant::now() + Duration::from_millis(500);
        while std::time::Instant::now() < wait_until {
            if read_sink(&d.out("sink"))
                .records
                .iter()
                .any(|r| is_end(&r.1))
            {
                return sent;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no end record at the sink"
        );
    }
}

/// Checks that every packet sent (`n` flood packets, `ends` end packets)
/// was delivered once or counted; returns (flood packets delivered, packets
/// not handed over).
fn settle(d: &Dispatcher, reader: &mut Reader, n: usize, ends: u64) -> (u64, u64) {
    let (logged, missed) = reader.stop();
    let out = read_sink(&d.out("sink"));
    let flood = out
        .records
        .iter()
        .filter(|r| r.1.ends_with(b"prefix=\"flood\" group=8"))
        .count() as u64;
    let end = out.records.iter().filter(|r| is_end(&r.1)).count() as u64;
    assert_eq!(
        out.records.len() as u64,
        flood + end,
        "only flood and end records"
    );
    assert_eq!(
        logged,
        out.records.len() as u64,
        "every record read reached the sink"
    );
    let serials: HashSet<u64> = out
        .records
        .iter()
        .map(|r| audisp::record::parse(&r.1).expect("parses").serial)
        .collect();
    assert_eq!(serials.len(), out.records.len(), "no record twice");
    assert_eq!(
        flood + end + missed,
        n as u64 + ends,
        "each of {n} + {ends} packets delivered or counted\n{}",
        reader.log()
    );
    (flood, missed)
}

#[test]
fn a_flood_of_100k_packets_is_delivered_or_counted() {
    if let Some(why) = unavailable() {
        support::skip(&why);
        return;
    }
    let ns = Netns::new(FLOOD_RULES);
    let mut d = Dispatcher::new(MAIN);
    d.write_plugin("sink", &sink_plugin("sink", "", ""));
    d.start(Stdio::null()).unwrap();
    let mut reader = Reader::start(&ns, &d, &["8"]);
    flood(&ns, 100_000);
    let ends = send_end_until_seen(&ns, &d);
    let (delivered, missed) = settle(&d, &mut reader, 100_000, ends);
    eprintln!("100k flood: {delivered} delivered, {missed} counted as not handed over");
    assert!(d.stop().unwrap().success());
}

#[test]
fn a_stopped_reader_loses_packets_in_the_kernel_counts_them_and_stays_small() {
    if let Some(why) = unavailable() {
        support::skip(&why);
        return;
    }
    const N: usize = 400_000;
    let ns = Netns::new(FLOOD_RULES);
    let mut d = Dispatcher::new(MAIN);
    d.write_plugin("sink", &sink_plugin("sink", "", ""));
    d.start(Stdio::null()).unwrap();
    let mut reader = Reader::start(&ns, &d, &["8"]);
    // The reader does not read: its socket buffer fills and the kernel
    // drops whole batches, which only the sequence numbers reveal.
    kill(reader.pid(), Signal::SIGSTOP).expect("SIGSTOP");
    flood(&ns, N);
    kill(reader.pid(), Signal::SIGCONT).expect("SIGCONT");
    let ends = send_end_until_seen(&ns, &d);
    let peak = reader.peak_rss_kib();
    let (delivered, missed) = settle(&d, &mut reader, N, ends);
    eprintln!("{N} packets to a stopped reader: {delivered} delivered, {missed} counted, peak RSS {peak} KiB");
    assert!(missed > 0, "a socket buffer cannot hold {N} packets");
    assert!(
        reader.log().contains("could not hand over"),
        "the loss is logged\n{}",
        reader.log()
    );
    assert!(peak < 128 << 10, "peak RSS {peak} KiB");
    assert!(d.stop().unwrap().success());
}
