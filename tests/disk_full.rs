//! A full journal disk, and honest loss accounting.
//!
//! audispd's state directory is an 8 MiB tmpfs (`segment_size = "256K"`),
//! one plugin is down (a socket nobody listens on) and holds every segment,
//! one healthy `exec` plugin takes everything, records come on standard
//! input:
//!
//! * once the down plugin comes back and has passed the segments, ingest
//!   resumes by itself and every record is delivered, those that waited in
//!   memory and those that came later;
//! * if it never comes back, records beyond the memory queue are lost, and
//!   so are those still waiting at stop: each is counted and logged (lines
//!   with running totals, the `MESSAGE_ID` of record loss), the last log
//!   line states the totals, and delivered + lost == read;
//! * without a tmpfs: the journal's `max_size` deletes segments a plugin
//!   that never comes back has not read; that is counted and logged for it
//!   when it happens;
//! * a soak of every fault at once (`AUDISP_SOAK_SECS`, 2 minutes by
//!   default): every record read reaches each durable plugin exactly once
//!   or is counted lost with log lines.

mod support;

use std::io::Write;
use std::process::Stdio;
use std::time::Duration;

use audisp::log_ids::RECORD_LOSS;
use support::dispatcher::{
    lines, read_sink, sample_copies, sample_shifted, sink_plugin, state_line, texts, wait_sink,
    Dispatcher,
};
use support::wait_until;

const MAIN: &str = r#"
[journal]
segment_size = "256K"
memory = "1M"
[shutdown]
timeout = "10s"
[stats]
interval = "0"
"#;

/// A socket plugin nobody listens on (until the test does), retried fast.
const DOWN: &str =
    "socket = \"{dir}/run/down.sock\"\n[restart]\ninitial = \"20ms\"\nmax = \"200ms\"\n";

/// audispd on an 8 MiB tmpfs with the down plugin and a healthy sink, its
/// standard input handed back; None (after saying why) where no tmpfs can
/// be mounted.
fn full_disk_setup() -> Option<(Dispatcher, std::process::ChildStdin)> {
    if let Some(why) = support::tmpfs::missing() {
        support::skip(&why);
        return None;
    }
    let mut d = Dispatcher::new(MAIN);
    d.write_plugin("down", DOWN);
    d.write_plugin("healthy", &sink_plugin("healthy", "", ""));
    d.spawn(support::tmpfs::command(&d, "8m"), Stdio::piped())
        .unwrap();
    d.notify
        .wait_for("READY=1", Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("{e}\n{}", d.log_tail(40)));
    let stdin = d.child.as_mut().unwrap().stdin.take().unwrap();
    Some((d, stdin))
}

/// A sink listening where the down plugin's socket is.
fn bring_up(d: &Dispatcher) -> Reap {
    Reap(
        std::process::Command::new(support::dispatcher::example("sink"))
            .arg("--out")
            .arg(d.out("down"))
            .arg("--name")
            .arg("down")
            .arg("--listen")
            .arg(d.path().join("run/down.sock"))
            .stdin(Stdio::null())
            .spawn()
            .unwrap(),
    )
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
fn a_full_journal_disk_recovers_once_the_plugins_pass_its_segments() {
    let Some((mut d, mut stdin)) = full_disk_setup() else {
        return;
    };
    // 20 copies of the sample: 22 MB, far more than the disk holds, less
    // than the memory queue; then 5 more.
    let first = sample_copies(20);
    let second: Vec<u8> = (20..25).flat_map(sample_shifted).collect();
    let data = [&first[..], &second[..]].concat();
    let (want_first, want_all) = (lines(&first), lines(&data));
    stdin.write_all(&first).unwrap();
    d.wait_log("cannot write the journal", Duration::from_secs(60));
    wait_until(Duration::from_secs(60), "stdin to be read", || {
        d.input_state("stdin").get("records") == want_first.len() as u64
    });

    // The plugin that held every segment comes back: it gets what is on
    // disk, the segments it passes are deleted, what waited in memory is
    // stored, and so on until nothing waits.
    let _up = bring_up(&d);
    for name in ["down", "healthy"] {
        let out = wait_sink(&d.out(name), want_first.len(), Duration::from_secs(60));
        assert!(
            texts(&out) == want_first,
            "{name} got every record once, in order ({} records)",
            out.records.len()
        );
    }
    let stdin_line = d.input_state("stdin");
    assert_eq!(stdin_line.get("waiting"), 0, "{stdin_line:?}");
    assert_eq!(stdin_line.get("lost"), 0, "{stdin_line:?}");
    assert!(
        d.log()
            .contains("journal writable again; records kept in memory were stored"),
        "{}",
        d.log_tail(40)
    );

    // And later records go straight through.
    stdin.write_all(&second).unwrap();
    for name in ["down", "healthy"] {
        let out = wait_sink(&d.out(name), want_all.len(), Duration::from_secs(60));
        assert!(texts(&out) == want_all, "{name} got the later records too");
    }
    drop(stdin);
    let status = d.wait(Duration::from_secs(60)).unwrap();
    assert!(status.success(), "{status}\n{}", d.log_tail(40));
    let stopped = last_line(&d.log(), "stopped;");
    assert!(
        stopped.contains(&format!("{} records read, none lost", want_all.len())),
        "{stopped}"
    );
}

/// The last line of `log` containing `needle`.
fn last_line(log: &str, needle: &str) -> String {
    log.lines()
        .rev()
        .find(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("no {needle:?} in the log:\n{log}"))
        .to_string()
}

/// Every loss line of standard input in `log`, checked: the MESSAGE_ID,
/// what was lost since the previous line and the running total, which ends
/// at `lost`.
fn loss_lines(log: &str, lost: u64) -> Vec<&str> {
    let losses: Vec<&str> = log.lines().filter(|l| l.contains("records LOST")).collect();
    let mut sum = 0;
    for l in &losses {
        assert!(l.contains(RECORD_LOSS), "{l}");
        assert!(l.contains("input stdin"), "{l}");
        sum += field(l, "lost");
        assert_eq!(field(l, "total"), sum, "running total: {l}");
    }
    assert_eq!(sum, lost, "{losses:#?}");
    losses
}

/// A `key=N` field of a log line.
fn field(line: &str, key: &str) -> u64 {
    let at = line
        .find(&format!(" {key}="))
        .unwrap_or_else(|| panic!("no {key}= in {line}"));
    line[at + key.len() + 2..]
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{key}= is not a number in {line}"))
}

#[test]
fn records_lost_to_a_full_disk_are_counted_and_logged_to_the_last() {
    let Some((mut d, mut stdin)) = full_disk_setup() else {
        return;
    };
    // 80 MB: the disk (8 MiB), then the memory queue (64 MiB), then loss.
    let data = sample_copies(72);
    let fed = lines(&data).len() as u64;
    stdin.write_all(&data).unwrap();
    wait_until(Duration::from_secs(120), "stdin to be read", || {
        d.input_state("stdin").get("records") == fed
    });
    wait_until(Duration::from_secs(60), "healthy to catch up", || {
        d.plugin_state("healthy").get("queued") == 0
    });
    // At any moment: every record read is stored, waiting or lost.
    let report = d.state();
    let input = state_line(&report, "input", "stdin").unwrap();
    let stored = read_sink(&d.out("healthy")).records.len() as u64;
    assert!(
        input.get("lost") > 0 && input.get("waiting") > 0,
        "{report}"
    );
    assert_eq!(
        stored + input.get("waiting") + input.get("lost"),
        fed,
        "{report}"
    );

    drop(stdin);
    let status = d.wait(Duration::from_secs(60)).unwrap();
    assert!(status.success(), "{status}\n{}", d.log_tail(40));
    let log = d.log();
    let delivered = read_sink(&d.out("healthy")).records.len() as u64;
    assert_eq!(delivered, stored, "nothing more was stored at stop");

    // The last line: the totals, true.
    let stopped = last_line(&log, "stopped;");
    let lost = fed - delivered;
    assert!(
        stopped.contains(&format!(
            "{fed} records read, {delivered} stored, {lost} LOST"
        )),
        "delivered {delivered} + lost {lost} == read {fed}: {stopped}"
    );
    assert!(stopped.contains(RECORD_LOSS), "{stopped}");

    let losses = loss_lines(&log, lost);
    assert!(losses.len() >= 2, "{losses:#?}");
    assert!(
        losses
            .last()
            .unwrap()
            .contains("still waiting in memory for the journal at stop"),
        "{losses:#?}"
    );
}

#[test]
fn max_size_eviction_is_counted_when_it_happens_for_a_plugin_that_never_returns() {
    let mut d = Dispatcher::new(
        r#"
[journal]
segment_size = "64K"
max_size = "1M"
memory = "1M"
[shutdown]
timeout = "2s"
[stats]
interval = "0"
"#,
    );
    d.write_plugin("down", DOWN);
    d.write_plugin("healthy", &sink_plugin("healthy", "", ""));
    d.start(Stdio::piped()).unwrap();
    let mut stdin = d.child.as_mut().unwrap().stdin.take().unwrap();
    let data = sample_copies(2);
    let all = lines(&data);
    // In steps the healthy plugin keeps up with, so that only the down one
    // is ever more than max_size behind.
    for (i, step) in all.chunks(200).enumerate() {
        for l in step {
            stdin.write_all(l).unwrap();
            stdin.write_all(b"\n").unwrap();
        }
        wait_sink(
            &d.out("healthy"),
            (i * 200 + step.len()).min(all.len()),
            Duration::from_secs(30),
        );
    }
    let out = read_sink(&d.out("healthy"));
    assert!(texts(&out) == all);
    // Without the plugin ever connecting, its loss shows: every journal
    // entry before the journal's start is dropped, the rest queued.
    let journal = |report: &str| -> (u64, u64) {
        let range = report
            .lines()
            .find_map(|l| l.strip_prefix("journal sequence range = "))
            .unwrap();
        let (start, end) = range.split_once("..").unwrap();
        (start.parse().unwrap(), end.parse().unwrap())
    };
    let mut report = String::new();
    wait_until(
        Duration::from_secs(10),
        "the eviction to be counted",
        || {
            report = d.state();
            let dropped = state_line(&report, "plugin", "down")
                .unwrap()
                .get("dropped");
            dropped > 0 && dropped == journal(&report).0 - 1
        },
    );
    let (start, end) = journal(&report);
    let down = state_line(&report, "plugin", "down").unwrap();
    assert_eq!(down.state, "connecting", "{report}");
    assert_eq!(down.get("queued"), end - start, "{report}");
    let healthy = state_line(&report, "plugin", "healthy").unwrap();
    assert_eq!(healthy.get("dropped"), 0, "{report}");
    // Logged at once, the rest within the rate limit, to the last.
    let total = format!("dropped={}", start - 1);
    d.wait_log(&total, Duration::from_secs(15));
    let line = last_line(&d.log(), &total);
    assert!(line.contains(RECORD_LOSS), "{line}");
    assert!(line.contains("plugin down:"), "{line}");
    assert!(line.contains("max_size"), "{line}");
    drop(stdin);
    let status = d.wait(Duration::from_secs(30)).unwrap();
    assert!(status.success(), "{status}\n{}", d.log_tail(30));
}

/// How long the soak runs: `AUDISP_SOAK_SECS`, 120 by default (CI).
fn soak_time() -> Duration {
    let secs = std::env::var("AUDISP_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(120);
    Duration::from_secs(secs)
}

/// Connects to the input socket and sends bytes that are no handshake;
/// returns whether it could connect.
fn send_garbage(path: &std::path::Path, salt: u64) -> bool {
    use nix::sys::socket::{connect, send, socket, AddressFamily, MsgFlags, SockFlag, SockType};
    use std::os::fd::AsRawFd;
    let Ok(fd) = socket(
        AddressFamily::Unix,
        SockType::SeqPacket,
        SockFlag::SOCK_CLOEXEC,
        None,
    ) else {
        return false;
    };
    let Ok(addr) = nix::sys::socket::UnixAddr::new(path) else {
        return false;
    };
    if connect(fd.as_raw_fd(), &addr).is_err() {
        return false;
    }
    let mut x = salt
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let junk: Vec<u8> = (0..64 + salt % 512)
        .map(|_| {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
            (x >> 56) as u8
        })
        .collect();
    let _ = send(fd.as_raw_fd(), &junk, MsgFlags::MSG_DONTWAIT);
    true
}

/// Kills the program whose pid `examples/sink` wrote to `pid_file`.
fn kill_sink(pid_file: &std::path::Path) -> bool {
    let Some(pid) = std::fs::read_to_string(pid_file)
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok())
    else {
        return false;
    };
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .is_ok()
}

/// Every fault at once, for `AUDISP_SOAK_SECS` (2 minutes by default): a
/// full disk (a plugin down for the first half holds every segment), the
/// durable plugin killed every few seconds, a reload every second (a stock
/// plugin added and removed), garbage on the input socket, records on
/// standard input all along. In the end every record read reached each
/// durable plugin exactly once, in order, or was counted lost with log lines
/// that add up to the count.
#[test]
fn soak_full_disk_killed_plugin_reloads_and_garbage() {
    if let Some(why) = support::tmpfs::missing() {
        support::skip(&why);
        return;
    }
    let soak = soak_time();
    let mut d = Dispatcher::new(MAIN);
    d.write_plugin("down", DOWN);
    let pid_file = d.out("durable.pid");
    d.write_plugin(
        "durable",
        &sink_plugin(
            "durable",
            "\"--pid-file\", \"{dir}/out/durable.pid\"",
            "[restart]\ninitial = \"20ms\"\nmax = \"200ms\"",
        ),
    );
    d.spawn(support::tmpfs::command(&d, "4m"), Stdio::piped())
        .unwrap();
    d.notify
        .wait_for("READY=1", Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("{e}\n{}", d.log_tail(40)));
    let mut stdin = d.child.as_mut().unwrap().stdin.take().unwrap();

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let garbage = {
        let (stop, path) = (stop.clone(), d.input_socket());
        std::thread::spawn(move || {
            let mut sent = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                sent += u64::from(send_garbage(&path, sent));
                std::thread::sleep(Duration::from_millis(50));
            }
            sent
        })
    };

    let start = std::time::Instant::now();
    let mut copies = 0;
    let mut ticks = 0;
    let mut reloads = 0;
    let mut kills = 0;
    let mut up = None;
    while start.elapsed() < soak {
        // Copies of the sample (1.1 MB, 4380 records each): two a second
        // while the disk is full, enough to overflow the memory queue
        // (64 MiB) within a minute, then one a second.
        for _ in 0..if up.is_none() { 2 } else { 1 } {
            stdin.write_all(&sample_shifted(copies)).unwrap();
            copies += 1;
        }
        ticks += 1;
        if up.is_none() && start.elapsed() >= soak / 2 {
            up = Some(bring_up(&d));
        }
        if ticks % 3 == 0 {
            kills += u32::from(kill_sink(&pid_file));
        }
        if ticks % 2 == 0 {
            d.write_plugin(
                "churn",
                "exec = [\"/bin/sh\", \"-c\", \"exec cat > /dev/null\"]\nformat = \"string\"\n",
            );
        } else if ticks > 1 {
            d.remove_plugin("churn");
        }
        d.reload()
            .unwrap_or_else(|e| panic!("reload: {e}\n{}", d.log_tail(40)));
        reloads += 1;
        let next = start + Duration::from_secs(ticks);
        std::thread::sleep(next.saturating_duration_since(std::time::Instant::now()));
    }
    if up.is_none() {
        up = Some(bring_up(&d));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let garbage_sent = garbage.join().unwrap();

    let sent = sample_copies(copies);
    let fed = lines(&sent);
    wait_until(Duration::from_secs(120), "stdin to be read", || {
        d.input_state("stdin").get("records") == fed.len() as u64
    });
    wait_until(Duration::from_secs(120), "every plugin to catch up", || {
        let r = d.state();
        let input = state_line(&r, "input", "stdin").unwrap();
        input.get("waiting") == 0
            && ["durable", "down"]
                .iter()
                .all(|p| state_line(&r, "plugin", p).unwrap().get("queued") == 0)
    });
    let lost = d.input_state("stdin").get("lost");
    drop(stdin);
    let status = d.wait(Duration::from_secs(60)).unwrap();
    assert!(status.success(), "{status}\n{}", d.log_tail(40));
    drop(up);

    // Each durable plugin: records read, in order, once; with those lost,
    // every record read.
    let index: std::collections::HashMap<&[u8], usize> =
        fed.iter().enumerate().map(|(i, l)| (*l, i)).collect();
    for name in ["durable", "down"] {
        let out = read_sink(&d.out(name));
        let got = texts(&out);
        let mut last = None;
        for t in &got {
            let i = *index
                .get(t)
                .unwrap_or_else(|| panic!("{name} got a record never sent: {t:?}"));
            assert!(last < Some(i), "{name}: record {i} after {last:?}");
            last = Some(i);
        }
        assert_eq!(
            got.len() as u64 + lost,
            fed.len() as u64,
            "{name}: delivered + lost == read"
        );
    }
    let log = d.log();
    loss_lines(&log, lost);
    let stopped = last_line(&log, "stopped;");
    let totals = if lost == 0 {
        format!("{} records read, none lost", fed.len())
    } else {
        format!(
            "{} records read, {} stored, {lost} LOST",
            fed.len(),
            fed.len() as u64 - lost
        )
    };
    assert!(stopped.contains(&totals), "{totals}: {stopped}");
    assert!(
        log.contains("cannot write the journal"),
        "the disk was full"
    );
    eprintln!(
        "soak {soak:?}: {} records, {lost} lost, {reloads} reloads, {kills} kills, {garbage_sent} garbage connections",
        fed.len()
    );
    assert!(kills > 0 && garbage_sent > 0 && reloads > 0);
}
