//! audispd as a `Type=notify` service with a watchdog, seen through a
//! capture of `$NOTIFY_SOCKET` (with the sender's credentials, as systemd
//! checks them): READY=1 from the daemon's own pid, STATUS= with live
//! figures, WATCHDOG=1 several times per `WATCHDOG_USEC`, RELOADING=1 with
//! MONOTONIC_USEC around a reload then READY=1, STOPPING=1 on SIGTERM; and
//! the pings stop while the dispatcher is wedged — stopped whole
//! (`kill -STOP`), or one of its threads stuck in a write — and come back
//! when it makes progress again.

mod support;

use std::process::Stdio;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use support::dispatcher::{lines, sample, sink_plugin, wait_sink, Dispatcher, Notification};

const MAIN: &str = "[journal]\nsegment_size = \"1M\"\nmemory = \"1M\"\nsync = \"never\"\n[stats]\ninterval = \"0\"\n";

/// Collects every notification for `span`.
fn collect(d: &mut Dispatcher, span: Duration) -> Vec<Notification> {
    let end = Instant::now() + span;
    let mut out = Vec::new();
    loop {
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return out;
        }
        if let Some(n) = d.notify.next(left).unwrap() {
            out.push(n);
        }
    }
}

fn pings(notes: &[Notification]) -> Vec<Instant> {
    notes
        .iter()
        .filter(|n| n.get("WATCHDOG") == Some("1"))
        .map(|n| n.at)
        .collect()
}

fn monotonic_usec() -> u64 {
    audisp::systemd::notify::monotonic_usec()
}

#[test]
fn lifecycle_ready_status_watchdog_reload_stopping() {
    let data = sample();
    let n = lines(&data).len();
    let mut d = Dispatcher::new(MAIN);
    d.write_plugin("sink", &sink_plugin("sink", "", ""));
    let mut cmd = d.command();
    cmd.env("WATCHDOG_USEC", "1000000");
    d.spawn(cmd, Stdio::piped()).unwrap();
    let pid = d.pid() as i32;
    let ready = d
        .notify
        .wait_note("READY=1", Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("{e}\n{}", d.log_tail(30)));
    assert_eq!(ready.pid, Some(pid), "NotifyAccess=main: from the main pid");
    let status = ready
        .get("STATUS")
        .expect("READY=1 carries a STATUS")
        .to_string();
    assert!(status.starts_with("0 records in; sink "), "{status}");

    // Live figures: records in, and the plugin's backlog.
    let mut stdin = d.child.as_mut().unwrap().stdin.take().unwrap();
    std::io::Write::write_all(&mut stdin, &data).unwrap();
    wait_sink(&d.out("sink"), n, Duration::from_secs(30));
    let want = format!("{n} records in; sink connected queued 0");
    let live = d.notify.wait_note(&want, Duration::from_secs(10)).unwrap();
    assert_eq!(live.get("STATUS"), Some(want.as_str()));

    // The watchdog is fed several times per WATCHDOG_USEC, by the daemon.
    let notes = collect(&mut d, Duration::from_millis(2500));
    let p = pings(&notes);
    assert!(p.len() >= 4, "pings in 2.5s with a 1s watchdog: {notes:?}");
    let worst = p.windows(2).map(|w| w[1] - w[0]).max().unwrap();
    assert!(worst <= Duration::from_millis(600), "a gap of {worst:?}");
    assert!(notes.iter().all(|n| n.pid == Some(pid)));

    // Stopped whole: not a single notification; pings resume after SIGCONT.
    d.signal(Signal::SIGSTOP);
    let during = collect(&mut d, Duration::from_millis(2000));
    d.signal(Signal::SIGCONT);
    assert!(
        pings(&during).is_empty(),
        "no WATCHDOG=1 from a stopped process: {during:?}"
    );
    d.notify
        .wait_for("WATCHDOG=1", Duration::from_secs(2))
        .unwrap();

    // Reload: RELOADING=1 with the current CLOCK_MONOTONIC, then READY=1;
    // the new plugins.d file is loaded.
    d.write_plugin("late", &sink_plugin("late", "", ""));
    let before = monotonic_usec();
    d.signal(Signal::SIGHUP);
    let reloading = d
        .notify
        .wait_note("RELOADING=1", Duration::from_secs(10))
        .unwrap();
    let after = monotonic_usec();
    let mono: u64 = reloading
        .get("MONOTONIC_USEC")
        .expect("RELOADING=1 needs MONOTONIC_USEC")
        .parse()
        .unwrap();
    assert!(
        (before..=after).contains(&mono),
        "MONOTONIC_USEC={mono} not within {before}..{after}"
    );
    let ready = d
        .notify
        .wait_note("READY=1", Duration::from_secs(10))
        .unwrap();
    assert!(ready.at >= reloading.at);
    // (What a plugin added by a reload receives is tests/reload.rs's topic.)
    let late = d.plugin_state("late");
    assert!(
        late.state == "connected" || late.state == "connecting",
        "the new plugins.d file was loaded: {late:?}"
    );

    // Stop.
    d.signal(Signal::SIGTERM);
    let stopping = d
        .notify
        .wait_note("STOPPING=1", Duration::from_secs(10))
        .unwrap();
    assert_eq!(stopping.pid, Some(pid));
    drop(stdin);
    assert!(d.wait(Duration::from_secs(30)).unwrap().success());
}

/// A thread stuck in a write stops the pings while the rest of the daemon
/// runs on: an input that floods audispd with records and never reads its
/// acknowledgements (one per round of queued messages) leaves the
/// connection's thread waiting for room to send an ack (up to 10 s, then
/// the connection is dropped). Meanwhile the control loop still sends
/// STATUS=, but no WATCHDOG=1; afterwards the pings come back.
#[test]
fn a_write_stuck_in_one_thread_stops_the_pings_until_it_ends() {
    let data = sample();
    let records: Vec<Vec<u8>> = lines(&data).iter().map(|r| r.to_vec()).collect();
    let mut d = Dispatcher::new(MAIN);
    let mut cmd = d.command();
    cmd.env("WATCHDOG_USEC", "1000000");
    d.spawn(cmd, Stdio::null()).unwrap();
    d.notify
        .wait_for("READY=1", Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("{e}\n{}", d.log_tail(30)));
    d.notify
        .wait_for("WATCHDOG=1", Duration::from_secs(2))
        .unwrap();

    let socket = d.input_socket();
    let flood = std::thread::spawn(move || {
        let (mut c, _) =
            audisp::sdk::InputClient::connect(&socket, "flood", *b"flood-never-acks").unwrap();
        // One record per message, never reading the acks: audispd acks
        // each round of messages it finds queued once, so the acks pile up
        // in our receive queue until its send waits. Send until audispd
        // drops the connection.
        for (i, r) in records.iter().cycle().enumerate() {
            if c.send([(i as u64 + 1, 0, &r[..])]).is_err() {
                return;
            }
        }
    });
    d.wait_log("not feeding the watchdog", Duration::from_secs(15));
    let stuck_at = Instant::now();
    // Whatever was sent before the stall is already queued: skip it.
    while d.notify.next(Duration::ZERO).unwrap().is_some() {}
    let during = collect(&mut d, Duration::from_millis(2500));
    assert!(
        pings(&during).is_empty(),
        "no WATCHDOG=1 while a write is stuck: {during:?}"
    );
    assert!(
        during.iter().any(|n| n.get("STATUS").is_some()),
        "the control loop itself still runs: {during:?}"
    );
    assert!(
        d.log().contains("input flood"),
        "the stuck thread is named\n{}",
        d.log_tail(20)
    );
    // The stuck send gives up after 10 s and drops that connection; the
    // daemon is healthy again.
    d.notify
        .wait_for("WATCHDOG=1", Duration::from_secs(15))
        .unwrap_or_else(|e| panic!("{e}\n{}", d.log_tail(20)));
    assert!(stuck_at.elapsed() >= Duration::from_millis(2500));
    d.wait_log("the peer is not reading", Duration::ZERO);
    d.wait_log("makes progress again", Duration::from_secs(5));
    assert_eq!(
        d.log().matches("not feeding the watchdog").count(),
        1,
        "one error per stall\n{}",
        d.log_tail(20)
    );
    flood.join().unwrap();
    assert!(d.stop().unwrap().success());
}

/// A plugin written with the SDK, socket-activated with a watchdog: it
/// says READY=1 once it serves and pings from its own loop — and stops
/// pinging while its handler hangs (here: a 2.5 s handler against a 1 s
/// watchdog), which is what makes systemd restart a hung plugin.
#[test]
fn an_sdk_plugin_feeds_the_watchdog_only_while_its_loop_turns() {
    if std::process::Command::new("systemd-socket-activate")
        .arg("--help")
        .output()
        .is_err()
    {
        support::skip("systemd-socket-activate not installed (apt-get install systemd)");
        return;
    }
    let data = sample();
    let mut d = Dispatcher::new(MAIN);
    let mut plugin_notify =
        support::dispatcher::NotifyCapture::bind(&d.path().join("plugin-notify.sock"));
    let sock = d.path().join("slow.sock");
    let plugin = Reap(
        std::process::Command::new("systemd-socket-activate")
            .arg("--seqpacket")
            .arg("-l")
            .arg(&sock)
            .arg("--fdname=slow")
            .arg(format!(
                "--setenv=NOTIFY_SOCKET={}",
                plugin_notify.path().display()
            ))
            .arg("--setenv=WATCHDOG_USEC=1000000")
            .arg(support::dispatcher::example("sink"))
            .args(["--out"])
            .arg(d.out("slow"))
            .args(["--name", "slow", "--delay-ms", "2500"])
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    support::wait_until(Duration::from_secs(10), "the plugin socket", || {
        sock.exists()
    });
    d.write_plugin("slow", &format!("socket = \"{}\"\n", sock.display()));
    d.start(Stdio::piped()).unwrap();
    let ready = plugin_notify
        .wait_note("READY=1", Duration::from_secs(10))
        .unwrap();
    assert_eq!(
        ready.pid,
        Some(plugin.0.id() as i32),
        "from the plugin itself"
    );
    let mut idle = Vec::new();
    let until = Instant::now() + Duration::from_millis(1500);
    while let Some(n) = plugin_notify
        .next(until.saturating_duration_since(Instant::now()))
        .unwrap()
    {
        idle.push(n);
    }
    assert!(pings(&idle).len() >= 2, "an idle plugin pings: {idle:?}");

    // One batch: the handler takes 2.5 s.
    let mut stdin = d.child.as_mut().unwrap().stdin.take().unwrap();
    std::io::Write::write_all(&mut stdin, lines(&data)[0]).unwrap();
    std::io::Write::write_all(&mut stdin, b"\n").unwrap();
    wait_sink(&d.out("slow"), 1, Duration::from_secs(10));
    // The handler now sleeps; what is queued was sent before it started.
    while plugin_notify.next(Duration::ZERO).unwrap().is_some() {}
    let hung_at = Instant::now();
    let mut busy = Vec::new();
    let until = hung_at + Duration::from_millis(4000);
    while let Some(n) = plugin_notify
        .next(until.saturating_duration_since(Instant::now()))
        .unwrap()
    {
        busy.push(n);
    }
    let p = pings(&busy);
    let first = *p
        .first()
        .unwrap_or_else(|| panic!("pings resume after the batch: {busy:?}"));
    assert!(
        first - hung_at >= Duration::from_millis(2000),
        "no ping while the handler hangs (first after {:?}): {busy:?}",
        first - hung_at
    );
    drop(stdin);
    assert!(d.stop().unwrap().success());
}

/// Kills a child on drop (a failing test must not leave it behind).
struct Reap(std::process::Child);

impl Drop for Reap {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
