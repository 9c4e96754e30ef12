//! SIGTERM: audispd exits 0 after giving its plugins what they had not
//! acknowledged, within `[shutdown] timeout`; a plugin that is down (or does
//! not catch up in time) is named in the log and gets its records from the
//! journal at the next start.

mod support;

use std::io::Write;
use std::process::Stdio;
use std::time::{Duration, Instant};

use support::dispatcher::{
    example, lines, read_sink, sample, sink_plugin, texts, wait_sink, Dispatcher,
};
use support::wait_until;

fn main_config(timeout: &str) -> String {
    format!(
        r#"
[journal]
segment_size = "1M"
memory = "1M"
[shutdown]
timeout = "{timeout}"
[stats]
interval = "0"
"#
    )
}

/// Kills a child on drop (a failing test must not leave it behind).
struct Reap(std::process::Child);

impl Drop for Reap {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Feeds the sample on standard input (left open: its end would stop
/// audispd by itself) and waits until every record is stored.
fn feed_sample(d: &mut Dispatcher) -> std::process::ChildStdin {
    let data = sample();
    let n = lines(&data).len() as u64;
    let mut stdin = d.child.as_mut().unwrap().stdin.take().unwrap();
    stdin.write_all(&data).unwrap();
    wait_until(Duration::from_secs(20), "the sample to be stored", || {
        d.input_state("stdin").get("records") == n
    });
    stdin
}

#[test]
fn sigterm_drains_plugins_and_keeps_a_down_plugins_records_for_the_next_start() {
    let data = sample();
    let all = lines(&data);
    let mut d = Dispatcher::new(&main_config("6s"));
    d.write_plugin("slow", &sink_plugin("slow", "\"--delay-ms\", \"100\"", ""));
    d.write_plugin(
        "down",
        "socket = \"{dir}/run/down.sock\"\n[restart]\ninitial = \"20ms\"\nmax = \"100ms\"\n",
    );
    d.start(Stdio::piped()).unwrap();
    let stdin = feed_sample(&mut d);
    let slow = d.plugin_state("slow");
    assert!(
        slow.get("queued") > 0,
        "slow must still be behind when SIGTERM comes: {slow:?}"
    );

    let status = d.stop().unwrap();
    drop(stdin);
    assert!(status.success(), "{status}\n{}", d.log_tail(30));
    let out = read_sink(&d.out("slow"));
    assert!(
        texts(&out) == all,
        "slow got everything before audispd exited ({} of {})",
        out.records.len(),
        all.len()
    );
    let log = d.log();
    let stopped = log
        .lines()
        .find(|l| l.contains("stopped; plugins"))
        .unwrap_or_else(|| panic!("no 'stopped; plugins …' line\n{}", d.log_tail(30)));
    assert!(
        stopped.contains("\"down\"") && !stopped.contains("\"slow\""),
        "{stopped}"
    );

    // Next start: the plugin is up now and gets every record from the
    // journal; slow gets nothing twice.
    let _plugin = Reap(
        std::process::Command::new(example("sink"))
            .arg("--out")
            .arg(d.out("down"))
            .arg("--name")
            .arg("down")
            .arg("--listen")
            .arg(d.path().join("run/down.sock"))
            .stdin(Stdio::null())
            .spawn()
            .unwrap(),
    );
    d.start(Stdio::null()).unwrap();
    let down = wait_sink(&d.out("down"), all.len(), Duration::from_secs(20));
    assert!(
        texts(&down) == all,
        "down got the whole backlog, once, in order"
    );
    wait_until(Duration::from_secs(10), "slow to settle", || {
        d.plugin_state("slow").state == "connected"
    });
    let status = d.stop().unwrap();
    assert!(status.success(), "{status}\n{}", d.log_tail(30));
    assert!(
        d.log()
            .lines()
            .last()
            .is_some_and(|l| l.contains("every plugin had every record")),
        "{}",
        d.log_tail(10)
    );
    assert!(
        texts(&read_sink(&d.out("slow"))) == all,
        "slow: nothing twice after the restart"
    );
    assert_eq!(read_sink(&d.out("down")).records.len(), all.len());
}

#[test]
fn sigterm_gives_up_on_a_stuck_plugin_after_the_timeout_and_it_catches_up_later() {
    let data = sample();
    let all = lines(&data);
    let mut d = Dispatcher::new(&main_config("1s"));
    // Handles one batch (written to its file), then hangs before
    // acknowledging it.
    d.write_plugin(
        "hung",
        &sink_plugin("hung", "\"--delay-ms\", \"600000\"", ""),
    );
    d.write_plugin("fast", &sink_plugin("fast", "", ""));
    d.start(Stdio::piped()).unwrap();
    let stdin = feed_sample(&mut d);
    wait_sink(&d.out("fast"), all.len(), Duration::from_secs(20));
    wait_until(
        Duration::from_secs(10),
        "hung to get its first batch",
        || !read_sink(&d.out("hung")).records.is_empty(),
    );

    let asked = Instant::now();
    d.signal(nix::sys::signal::Signal::SIGTERM);
    let status = d.wait(Duration::from_secs(20)).unwrap();
    let took = asked.elapsed();
    drop(stdin);
    assert!(status.success(), "{status}\n{}", d.log_tail(30));
    // 1s of shutdown timeout, then the plugin program gets 2s to exit and
    // 2s after SIGTERM before SIGKILL.
    assert!(
        took < Duration::from_secs(8),
        "stopping took {took:?} with a 1s shutdown timeout"
    );
    let log = d.log();
    assert!(
        log.lines().any(|l| l.contains("stopped; plugins")
            && l.contains("\"hung\"")
            && !l.contains("\"fast\"")),
        "{}",
        d.log_tail(30)
    );

    // Next start, with the plugin fixed: it gets the rest, nothing twice.
    d.write_plugin("hung", &sink_plugin("hung", "", ""));
    d.start(Stdio::null()).unwrap();
    let hung = wait_sink(&d.out("hung"), all.len(), Duration::from_secs(20));
    assert!(texts(&hung) == all, "hung: every record once, in order");
    let status = d.stop().unwrap();
    assert!(status.success(), "{status}\n{}", d.log_tail(30));
    assert!(
        texts(&read_sink(&d.out("fast"))) == all,
        "fast: nothing twice"
    );
}

/// CPU time (user + system) a process has used, from /proc/PID/stat.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the parenthesised command name; utime and stime are the
    // 14th and 15th fields of the line.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<u64> = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .map(|v| v.parse().unwrap())
        .collect();
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .unwrap()
        .unwrap() as u64;
    Duration::from_millis((f[0] + f[1]) * 1000 / hz)
}

#[test]
fn waiting_at_shutdown_for_a_down_plugin_does_not_spin() {
    let mut d = Dispatcher::new(&main_config("4s"));
    d.write_plugin(
        "down",
        "socket = \"{dir}/run/down.sock\"\n[restart]\ninitial = \"100ms\"\nmax = \"1s\"\n",
    );
    d.start(Stdio::piped()).unwrap();
    let stdin = feed_sample(&mut d);
    let pid = d.pid();
    d.signal(nix::sys::signal::Signal::SIGTERM);
    // While audispd waits for the plugin that cannot connect, it retries
    // with its back-off rather than in a busy loop.
    wait_until(Duration::from_secs(5), "audispd to start stopping", || {
        d.log().contains("stopping")
    });
    let cpu0 = cpu_time(pid);
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs(2));
    let used = cpu_time(pid).saturating_sub(cpu0);
    let wall = t0.elapsed();
    let status = d.wait(Duration::from_secs(20)).unwrap();
    drop(stdin);
    assert!(status.success(), "{status}\n{}", d.log_tail(30));
    assert!(
        used < wall / 4,
        "audispd used {used:?} of CPU in {wall:?} while waiting for a down plugin at shutdown"
    );
    assert!(
        d.log()
            .lines()
            .any(|l| l.contains("stopped; plugins") && l.contains("\"down\"")),
        "{}",
        d.log_tail(10)
    );
}
