//! `audisp-bridge`, the auditd plugin that relays into the dispatcher's
//! input socket: fed on standard input as auditd feeds it, it keeps
//! draining while the dispatcher is killed (`kill -9`) mid-stream and
//! restarted — its writer never blocks — buffers what the dispatcher has not
//! acknowledged, resends after reconnecting, and the plugin behind the
//! dispatcher gets every record exactly once, in order. With a stream socket
//! on standard input (as auditd gives it) the bridge hands the socket to the
//! dispatcher (unless `--no-hand-over`), takes it back when the dispatcher
//! is killed or stopped (`SIGSTOP`: auditd's writes never wait for it), and
//! every record still arrives exactly once.

mod support;

use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use support::dispatcher::{corpus, lines, read_sink, sink_plugin, texts, wait_sink, Dispatcher};
use support::wait_until;

/// A running bridge, killed on drop if the test failed.
struct Bridge(Option<Child>);

impl Drop for Bridge {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn start_bridge(d: &Dispatcher) -> Bridge {
    start_bridge_with(d, Stdio::piped(), &[])
}

fn start_bridge_with(d: &Dispatcher, stdin: Stdio, extra: &[&str]) -> Bridge {
    start_bridge_logging(d, stdin, extra, "info")
}

/// A bridge logging at `level` (`AUDISP_LOG`) to `bridge.log`.
fn start_bridge_logging(d: &Dispatcher, stdin: Stdio, extra: &[&str], level: &str) -> Bridge {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(d.path().join("bridge.log"))
        .unwrap();
    Bridge(Some(
        Command::new(env!("CARGO_BIN_EXE_audisp-bridge"))
            .arg("--socket")
            .arg(d.input_socket())
            .arg("--state-dir")
            .arg(d.path().join("bridge"))
            .arg("--max-size")
            .arg("64")
            .args(extra)
            .env("AUDISP_LOG", level)
            .stdin(stdin)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start audisp-bridge"),
    ))
}

fn bridge_log(d: &Dispatcher) -> String {
    std::fs::read_to_string(d.path().join("bridge.log")).unwrap_or_default()
}

const MAIN: &str = "[input.stdin]\nenabled = false\n[journal]\nsegment_size = \"4M\"\nmemory = \"4M\"\n[stats]\ninterval = \"0\"\n";

#[test]
fn dispatcher_killed_and_restarted_mid_stream_every_record_once() {
    let data = corpus();
    let all = lines(&data);
    let half = data.len() / 2;
    let cut = data[..half]
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |i| i + 1);
    let first_half = lines(&data[..cut]).len();
    let mut d = Dispatcher::new(MAIN);
    d.write_plugin("sink", &sink_plugin("sink", "", ""));
    d.start(Stdio::null()).unwrap();
    let mut bridge = start_bridge(&d);
    let mut stdin = bridge.0.as_mut().unwrap().stdin.take().unwrap();

    stdin.write_all(&data[..cut]).unwrap();
    // Mid-stream: part of the first half has reached the plugin.
    wait_sink(&d.out("sink"), first_half / 3, Duration::from_secs(60));
    d.crash();
    // With the dispatcher down the bridge still drains its input: this
    // write of megabytes (far beyond a pipe's 64 KiB) returns.
    stdin.write_all(&data[cut..]).unwrap();
    stdin.flush().unwrap();
    wait_until(Duration::from_secs(30), "the bridge to notice", || {
        bridge_log(&d).contains("dispatcher unavailable")
    });
    d.start(Stdio::null()).unwrap();
    drop(stdin);
    let status = {
        let child = bridge.0.as_mut().unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the bridge did not finish\n{}",
                bridge_log(&d)
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    bridge.0 = None;
    assert!(status.success(), "{status}\n{}", bridge_log(&d));
    assert!(
        bridge_log(&d).contains("the dispatcher has every record"),
        "{}",
        bridge_log(&d)
    );
    wait_sink(&d.out("sink"), all.len(), Duration::from_secs(60));
    let out = read_sink(&d.out("sink"));
    assert_eq!(out.records.len(), all.len(), "no record lost or doubled");
    assert!(texts(&out) == all, "every record once, in auditd's order");
    assert!(d.stop().unwrap().success());
}

#[test]
fn a_killed_bridge_resends_its_buffer_after_restart() {
    let data = corpus();
    let all = lines(&data);
    let mut d = Dispatcher::new(MAIN);
    d.write_plugin("sink", &sink_plugin("sink", "", ""));
    // The dispatcher is down: everything stays in the bridge's buffer.
    let mut bridge = start_bridge(&d);
    let mut stdin = bridge.0.as_mut().unwrap().stdin.take().unwrap();
    stdin.write_all(&data).unwrap();
    drop(stdin);
    // Killed once it has read everything, before it could send anything:
    // the buffer is on disk.
    wait_until(
        Duration::from_secs(30),
        "the bridge to read its input",
        || bridge_log(&d).contains("standard input closed"),
    );
    assert!(bridge_log(&d).contains("dispatcher unavailable"));
    let mut child = bridge.0.take().unwrap();
    child.kill().unwrap();
    child.wait().unwrap();

    d.start(Stdio::null()).unwrap();
    let mut bridge = start_bridge(&d);
    drop(bridge.0.as_mut().unwrap().stdin.take());
    let status = bridge.0.take().unwrap().wait().unwrap();
    assert!(status.success(), "{status}\n{}", bridge_log(&d));
    let out = wait_sink(&d.out("sink"), all.len(), Duration::from_secs(60));
    assert_eq!(out.records.len(), all.len());
    assert!(texts(&out) == all, "every record once, in order");
    assert!(d.stop().unwrap().success());
}

#[test]
fn a_stopped_dispatcher_does_not_hold_the_bridge_and_nothing_is_lost() {
    let data = corpus();
    let all = lines(&data);
    let mut d = Dispatcher::new(MAIN);
    d.write_plugin("sink", &sink_plugin("sink", "", ""));
    d.start(Stdio::null()).unwrap();
    let mut bridge = start_bridge(&d);
    wait_until(Duration::from_secs(30), "the bridge to connect", || {
        bridge_log(&d).contains("connected to the dispatcher")
    });
    // A dispatcher that accepts nothing: the bridge's sends block.
    d.signal(nix::sys::signal::Signal::SIGSTOP);
    let mut stdin = bridge.0.as_mut().unwrap().stdin.take().unwrap();
    stdin.write_all(&data).unwrap();
    drop(stdin);
    let started = std::time::Instant::now();
    let status = bridge.0.take().unwrap().wait().unwrap();
    assert!(status.success(), "{status}\n{}", bridge_log(&d));
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "the bridge exits although the dispatcher is stopped"
    );
    let log = bridge_log(&d);
    assert!(log.contains("stay in"), "unsent records are kept: {log}");
    d.signal(nix::sys::signal::Signal::SIGCONT);
    // The next bridge sends what is left; the dispatcher drops what it
    // already had.
    let mut again = start_bridge(&d);
    drop(again.0.as_mut().unwrap().stdin.take());
    let status = again.0.take().unwrap().wait().unwrap();
    assert!(status.success(), "{status}\n{}", bridge_log(&d));
    let out = wait_sink(&d.out("sink"), all.len(), Duration::from_secs(60));
    assert_eq!(out.records.len(), all.len(), "no record lost or doubled");
    assert!(texts(&out) == all);
    assert!(d.stop().unwrap().success());
}

/// A socket pair like auditd's plugin channel: our end, and the bridge's
/// standard input.
fn plugin_channel() -> (std::os::unix::net::UnixStream, Stdio) {
    let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
    (ours, Stdio::from(std::os::fd::OwnedFd::from(theirs)))
}

/// Writes `data` one record per write, as auditd does, until done or the
/// bridge's end is gone; returns how many records were written.
fn feed_records(
    mut ours: std::os::unix::net::UnixStream,
    data: Vec<u8>,
) -> std::thread::JoinHandle<usize> {
    std::thread::spawn(move || {
        let mut n = 0;
        for line in data.split_inclusive(|&b| b == b'\n') {
            if ours.write_all(line).is_err() {
                break;
            }
            n += 1;
        }
        n
    })
}

fn wait_exit(bridge: &mut Bridge, d: &Dispatcher) -> std::process::ExitStatus {
    let child = bridge.0.as_mut().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the bridge did not finish\n{}",
            bridge_log(d)
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    bridge.0 = None;
    status
}

/// Records as auditd writes them, each with its newline.
fn joined(records: &[&[u8]]) -> Vec<u8> {
    records.iter().flat_map(|l| [*l, b"\n"].concat()).collect()
}

/// Bytes the process wrote with write(2) and the like (its buffer; sends on
/// sockets are not counted).
fn written(pid: u32) -> u64 {
    let io = std::fs::read_to_string(format!("/proc/{pid}/io")).unwrap_or_default();
    io.lines()
        .find_map(|l| l.strip_prefix("wchar: "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(u64::MAX)
}

#[test]
fn the_stream_is_handed_over_and_the_bridge_buffers_nothing() {
    let data = corpus();
    let all = lines(&data);
    let mut d = Dispatcher::new(MAIN);
    d.write_plugin("sink", &sink_plugin("sink", "", ""));
    d.start(Stdio::null()).unwrap();
    let (ours, stdin) = plugin_channel();
    // Hand-over is the default. The stall limit is long: on a busy test
    // machine a dispatcher's disk can stall beyond the default 20 ms (a
    // journal segment's fsync), and the bridge would rightly take the stream
    // back and buffer; this test measures the hand-over itself.
    let mut bridge = start_bridge_with(&d, stdin, &["--stall-limit", "5000"]);
    let pid = bridge.0.as_ref().unwrap().id();
    let writer = feed_records(ours, data.clone());
    wait_sink(&d.out("sink"), all.len(), Duration::from_secs(120));
    // Every record reached the plugin; the bridge never wrote them into
    // its buffer (megabytes of records, a few bytes of marks).
    let wrote = written(pid);
    assert_eq!(writer.join().unwrap(), all.len());
    let status = wait_exit(&mut bridge, &d);
    assert!(status.success(), "{status}\n{}", bridge_log(&d));
    let log = bridge_log(&d);
    assert!(
        log.contains("handed the stream over to the dispatcher"),
        "{log}"
    );
    assert!(
        d.log().contains("handed over its stream"),
        "{}",
        d.log_tail(30)
    );
    assert!(
        wrote < data.len() as u64 / 10,
        "the bridge wrote {wrote} bytes for {} bytes of records\n{log}",
        data.len()
    );
    let out = read_sink(&d.out("sink"));
    assert_eq!(out.records.len(), all.len(), "no record lost or doubled");
    assert!(texts(&out) == all, "every record once, in auditd's order");
    assert!(d.stop().unwrap().success());
}

#[test]
fn handed_over_dispatcher_killed_three_times_every_record_once() {
    let data = corpus();
    let all = lines(&data);
    // Four parts; the dispatcher is killed in the middle of each of the
    // first three while the stream is handed over.
    let quarter = all.len() / 4;
    let parts: Vec<Vec<u8>> = (0..4)
        .map(|k| {
            let end = if k == 3 { all.len() } else { (k + 1) * quarter };
            joined(&all[k * quarter..end])
        })
        .collect();
    let mut d = Dispatcher::new(MAIN);
    d.write_plugin("sink", &sink_plugin("sink", "", ""));
    d.start(Stdio::null()).unwrap();
    let (ours, stdin) = plugin_channel();
    let mut bridge = start_bridge_with(&d, stdin, &["--hand-over"]);
    for (k, part) in parts.iter().enumerate().take(3) {
        wait_until(
            Duration::from_secs(60),
            "the stream to be handed over",
            || {
                bridge_log(&d)
                    .matches("handed the stream over to the dispatcher")
                    .count()
                    > k
            },
        );
        let writer = feed_records(ours.try_clone().unwrap(), part.clone());
        // Mid-stream: the plugin has part of this part, more is coming.
        wait_sink(
            &d.out("sink"),
            k * quarter + quarter / 3,
            Duration::from_secs(60),
        );
        d.crash();
        // The bridge takes the stream back and reads the rest itself.
        assert_eq!(
            writer.join().unwrap(),
            part.split(|&b| b == b'\n').count() - 1
        );
        wait_until(Duration::from_secs(30), "the bridge to notice", || {
            bridge_log(&d).matches("dispatcher unavailable").count() > k
        });
        d.start(Stdio::null()).unwrap();
    }
    let writer = feed_records(ours, parts[3].clone());
    assert_eq!(writer.join().unwrap(), all.len() - 3 * quarter);
    let status = wait_exit(&mut bridge, &d);
    assert!(status.success(), "{status}\n{}", bridge_log(&d));
    let out = wait_sink(&d.out("sink"), all.len(), Duration::from_secs(60));
    assert_eq!(
        out.records.len(),
        all.len(),
        "no record lost or doubled\n{}",
        bridge_log(&d)
    );
    assert!(texts(&out) == all, "every record once, in auditd's order");
    assert!(d.stop().unwrap().success());
}

#[test]
fn handed_over_bridge_killed_nothing_doubled_and_the_next_one_goes_on() {
    let data = corpus();
    let all = lines(&data);
    let half = all.len() / 2;
    let (first, second) = (joined(&all[..half]), joined(&all[half..]));
    let mut d = Dispatcher::new(MAIN);
    d.write_plugin("sink", &sink_plugin("sink", "", ""));
    d.start(Stdio::null()).unwrap();
    let (ours, stdin) = plugin_channel();
    let mut bridge = start_bridge_with(&d, stdin, &["--hand-over"]);
    let writer = feed_records(ours, first);
    wait_until(
        Duration::from_secs(60),
        "the stream to be handed over",
        || bridge_log(&d).contains("handed the stream over to the dispatcher"),
    );
    // Killed mid-stream: what auditd had written and nobody journaled is
    // lost with the socket (as it is without the hand-over); what the
    // dispatcher journaled it has once.
    wait_sink(&d.out("sink"), half / 3, Duration::from_secs(60));
    let mut child = bridge.0.take().unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    writer.join().unwrap();
    // auditd starts the plugin again on a new channel.
    let (ours, stdin) = plugin_channel();
    let mut bridge = start_bridge_with(&d, stdin, &["--hand-over"]);
    let writer = feed_records(ours, second);
    assert_eq!(writer.join().unwrap(), all.len() - half);
    let status = wait_exit(&mut bridge, &d);
    assert!(status.success(), "{status}\n{}", bridge_log(&d));
    assert!(bridge_log(&d).contains("a new epoch"), "{}", bridge_log(&d));
    let got = read_sink(&d.out("sink"));
    let got = texts(&got);
    let tail = all.len() - half;
    assert!(got.len() >= tail, "{} records", got.len());
    let (before, after) = got.split_at(got.len() - tail);
    assert!(
        after == &all[half..],
        "every record of the new channel once, in order"
    );
    assert!(
        before == &all[..before.len()],
        "of the killed bridge's records, none doubled or out of order ({} of {half} kept)",
        before.len()
    );
    assert!(before.len() >= half / 3);
    assert!(d.stop().unwrap().success());
}

/// The bridge exits well at the end of its input, the plugin has `all`,
/// each once and in auditd's order, and the dispatcher stops well.
fn bridge_ends_and_the_sink_has_all(bridge: &mut Bridge, d: &mut Dispatcher, all: &[&[u8]]) {
    let status = wait_exit(bridge, d);
    let log = bridge_log(d);
    assert!(status.success(), "{status}\n{log}");
    let out = wait_sink(&d.out("sink"), all.len(), Duration::from_secs(60));
    assert_eq!(
        out.records.len(),
        all.len(),
        "no record lost or doubled\n{log}"
    );
    assert!(texts(&out) == all, "every record once, in auditd's order");
    assert!(d.stop().unwrap().success());
}

#[test]
fn a_stopped_dispatcher_holding_the_stream_does_not_hold_auditd_and_gets_it_again() {
    use nix::sys::signal::Signal;
    let data = corpus();
    let all = lines(&data);
    // Handed over, then the dispatcher stops while tens of megabytes come
    // (a socket holds ~200 KB), then it goes on.
    let (a, b) = (10_000, all.len() - 10_000);
    let parts = [joined(&all[..a]), joined(&all[a..b]), joined(&all[b..])];
    assert!(parts[1].len() > 50 * 212_992);
    let mut d = Dispatcher::new(MAIN);
    d.write_plugin("sink", &sink_plugin("sink", "", ""));
    d.start(Stdio::null()).unwrap();
    let (ours, stdin) = plugin_channel();
    // Hand-over is the default.
    let mut bridge = start_bridge_with(&d, stdin, &[]);
    let handed_over = |d: &Dispatcher| {
        bridge_log(d)
            .matches("handed the stream over to the dispatcher")
            .count()
    };
    wait_until(
        Duration::from_secs(60),
        "the stream to be handed over",
        || handed_over(&d) == 1,
    );
    let writer = feed_records(ours.try_clone().unwrap(), parts[0].clone());
    assert_eq!(writer.join().unwrap(), a);
    wait_sink(&d.out("sink"), a, Duration::from_secs(60));
    d.signal(Signal::SIGSTOP);
    let writer = feed_records(ours.try_clone().unwrap(), parts[1].clone());
    // auditd's writes do not wait for the stopped dispatcher: the bridge
    // takes its socket back and buffers.
    let finished = {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while !writer.is_finished() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        writer.is_finished()
    };
    let log = bridge_log(&d);
    d.signal(Signal::SIGCONT);
    assert!(
        finished,
        "the writer is blocked by the stopped dispatcher\n{log}"
    );
    assert_eq!(writer.join().unwrap(), b - a);
    assert!(
        log.contains("unacknowledged for") && log.contains("--stall-limit 20 ms"),
        "{log}"
    );
    // Going on, the dispatcher gets the stream again.
    wait_until(
        Duration::from_secs(60),
        "the stream to be handed over again",
        || handed_over(&d) >= 2,
    );
    let writer = feed_records(ours, parts[2].clone());
    assert_eq!(writer.join().unwrap(), all.len() - b);
    bridge_ends_and_the_sink_has_all(&mut bridge, &mut d, &all);
}

/// Seconds since midnight of a log line's timestamp
/// (`2026-12-07T12:30:48.542704Z ...`).
fn log_time(line: &str) -> f64 {
    let t = line
        .split_once('T')
        .and_then(|(_, rest)| rest.split_once('Z'))
        .map(|(t, _)| t)
        .unwrap_or_else(|| panic!("no timestamp in {line:?}"));
    let parts: Vec<f64> = t.split(':').map(|p| p.parse().unwrap()).collect();
    parts[0] * 3600.0 + parts[1] * 60.0 + parts[2]
}

#[test]
fn a_stream_taken_back_from_a_stalled_dispatcher_is_offered_again_soon() {
    use nix::sys::signal::Signal;
    let data = corpus();
    let all = lines(&data);
    let (a, b) = (5_000, 6_000);
    let mut d = Dispatcher::new(MAIN);
    d.write_plugin("sink", &sink_plugin("sink", "", ""));
    d.start(Stdio::null()).unwrap();
    let (ours, stdin) = plugin_channel();
    let mut bridge = start_bridge_with(&d, stdin, &[]);
    let lines_with = |d: &Dispatcher, what: &str| -> Vec<String> {
        bridge_log(d)
            .lines()
            .filter(|l| l.contains(what))
            .map(str::to_owned)
            .collect()
    };
    const HANDED: &str = "handed the stream over to the dispatcher";
    const TAKEN: &str = "unacknowledged for";
    wait_until(
        Duration::from_secs(60),
        "the stream to be handed over",
        || lines_with(&d, HANDED).len() == 1,
    );
    let writer = feed_records(ours.try_clone().unwrap(), joined(&all[..a]));
    assert_eq!(writer.join().unwrap(), a);
    wait_sink(&d.out("sink"), a, Duration::from_secs(60));
    // A stall: records wait unacknowledged while the dispatcher is stopped,
    // and the bridge takes the stream back.
    d.signal(Signal::SIGSTOP);
    let writer = feed_records(ours.try_clone().unwrap(), joined(&all[a..b]));
    assert_eq!(writer.join().unwrap(), b - a);
    wait_until(
        Duration::from_secs(60),
        "the bridge to take the stream back",
        || !lines_with(&d, TAKEN).is_empty(),
    );
    // While the dispatcher cannot take the stream (stopped, behind), the
    // bridge waits with the input (1 s polls), not in short polls for an
    // offer that cannot be made (1 ms each: ~1,000 wake-ups a second). The
    // half second is a measuring window, not a wait for something.
    let pid = bridge.0.as_ref().unwrap().id();
    let before = voluntary_switches(pid);
    std::thread::sleep(Duration::from_millis(500));
    let woke = voluntary_switches(pid) - before;
    assert!(
        woke < 100,
        "the bridge woke {woke} times in 0.5 s while the dispatcher was stopped\n{}",
        bridge_log(&d)
    );
    d.signal(Signal::SIGCONT);
    wait_until(
        Duration::from_secs(60),
        "the stream to be handed over again",
        || lines_with(&d, HANDED).len() >= 2,
    );
    // Offered again well before the second the bridge waits after the
    // dispatcher hands the stream back at its end.
    let taken = log_time(&lines_with(&d, TAKEN)[0]);
    let again = log_time(&lines_with(&d, HANDED)[1]);
    let gap = (again - taken).rem_euclid(86_400.0);
    assert!(
        gap < 1.0,
        "handed over again {gap:.3} s after the take-back\n{}",
        bridge_log(&d)
    );
    let writer = feed_records(ours, joined(&all[b..]));
    assert_eq!(writer.join().unwrap(), all.len() - b);
    bridge_ends_and_the_sink_has_all(&mut bridge, &mut d, &all);
}

/// A dispatcher that stalls again and again does not flood the log: the
/// first take-back is logged at once, and the next within a minute only
/// counted (each once logged a warning and a "dispatcher unavailable"
/// line); every record still arrives once, in order.
#[test]
fn take_backs_in_a_row_are_logged_at_most_once_a_minute() {
    use nix::sys::signal::Signal;
    let data = corpus();
    let all = lines(&data);
    let cuts = [0, 2_000, 14_000, 16_000, 28_000, 30_000];
    let parts: Vec<Vec<u8>> = cuts.windows(2).map(|w| joined(&all[w[0]..w[1]])).collect();
    // Each stall's records are far more than auditd's socket holds: their
    // writer finishing says the bridge took the stream back.
    assert!(parts[1].len() > 10 * 212_992 && parts[3].len() > 10 * 212_992);
    let all = &all[..cuts[5]];
    let mut d = Dispatcher::new(MAIN);
    d.write_plugin("sink", &sink_plugin("sink", "", ""));
    d.start(Stdio::null()).unwrap();
    let (ours, stdin) = plugin_channel();
    // Take-backs not logged as warnings are logged at debug level.
    let mut bridge = start_bridge_logging(&d, stdin, &[], "debug");
    let count = |d: &Dispatcher, what: &str| bridge_log(d).matches(what).count();
    const HANDED: &str = "handed the stream over to the dispatcher";
    const TAKEN: &str = "unacknowledged for";
    let writer = feed_records(ours.try_clone().unwrap(), parts[0].clone());
    assert_eq!(writer.join().unwrap(), cuts[1]);
    for stall in [1, 3] {
        // Handed over now (a busy machine may have made the dispatcher
        // stall already), then stopped: a take-back.
        wait_until(
            Duration::from_secs(60),
            "the stream to be handed over",
            || count(&d, HANDED) == count(&d, TAKEN) + 1,
        );
        let taken = count(&d, TAKEN);
        d.signal(Signal::SIGSTOP);
        let writer = feed_records(ours.try_clone().unwrap(), parts[stall].clone());
        wait_until(
            Duration::from_secs(60),
            "the bridge to take the stream back (the writer to finish)",
            || writer.is_finished(),
        );
        d.signal(Signal::SIGCONT);
        assert_eq!(writer.join().unwrap(), cuts[stall + 1] - cuts[stall]);
        assert!(count(&d, TAKEN) > taken, "{}", bridge_log(&d));
        let writer = feed_records(ours.try_clone().unwrap(), parts[stall + 1].clone());
        assert_eq!(writer.join().unwrap(), cuts[stall + 2] - cuts[stall + 1]);
    }
    drop(ours);
    bridge_ends_and_the_sink_has_all(&mut bridge, &mut d, all);
    let log = bridge_log(&d);
    let warned = log
        .lines()
        .filter(|l| l.contains(" WARN ") && l.contains(TAKEN))
        .count();
    assert_eq!(warned, 1, "one take-back warning\n{log}");
    assert_eq!(count(&d, "dispatcher unavailable"), 0, "{log}");
}

/// Voluntary context switches of every thread of process `pid` so far.
fn voluntary_switches(pid: u32) -> u64 {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.unwrap().path().join("status")).ok())
        .filter_map(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
                .and_then(|n| n.trim().parse::<u64>().ok())
        })
        .sum()
}

#[test]
fn with_no_hand_over_the_bridge_relays_a_stream_socket() {
    let data = corpus();
    let all = lines(&data);
    let part = joined(&all[..20_000]);
    let mut d = Dispatcher::new(MAIN);
    d.write_plugin("sink", &sink_plugin("sink", "", ""));
    d.start(Stdio::null()).unwrap();
    let (ours, stdin) = plugin_channel();
    let mut bridge = start_bridge_with(&d, stdin, &["--no-hand-over"]);
    let pid = bridge.0.as_ref().unwrap().id();
    let writer = feed_records(ours, part.clone());
    wait_sink(&d.out("sink"), 20_000, Duration::from_secs(120));
    // Every record went through the bridge's buffer.
    let wrote = written(pid);
    assert_eq!(writer.join().unwrap(), 20_000);
    let status = wait_exit(&mut bridge, &d);
    let log = bridge_log(&d);
    assert!(status.success(), "{status}\n{log}");
    assert!(!log.contains("handed the stream over"), "{log}");
    assert!(!d.log().contains("handed over its stream"));
    assert!(wrote >= part.len() as u64, "{wrote} bytes\n{log}");
    let out = read_sink(&d.out("sink"));
    assert!(texts(&out) == all[..20_000], "every record once, in order");
    assert!(d.stop().unwrap().success());
}

#[test]
fn a_bad_stall_limit_is_refused_with_its_range() {
    for bad in ["0", "60001", "2ms"] {
        let out = Command::new(env!("CARGO_BIN_EXE_audisp-bridge"))
            .args(["--stall-limit", bad])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{bad}: {err}");
        assert!(err.contains("from 1 to 60000"), "{bad}: {err}");
    }
}
