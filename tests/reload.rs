//! Reload (SIGHUP) while records keep flowing in from an input plugin.
//!
//! One dispatcher, one input sending the 4380-record sample in acknowledged
//! batches, and plugins that reloads add, remove, change and break:
//!
//! * a new plugins.d file starts its plugin, from the journal's end at the
//!   reload;
//! * a removed file drains its plugin (it gets everything stored before the
//!   reload, nothing lost) and stops it;
//! * a changed file (include list) reconnects its plugin with the new
//!   subscription, no record lost or duplicated across the change;
//! * a broken plugin file (TOML syntax error) leaves its plugin running as
//!   it was and logs `file:line`;
//! * a broken main file refuses the whole reload: audispd keeps running on
//!   the previous configuration (a plugin whose file was removed in the
//!   same reload keeps running too).
//!
//! Every record counted in is counted out to every plugin that should have
//! it.

mod support;

use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use audisp::sdk::InputClient;
use support::dispatcher::{
    lines, read_sink, sample, sink_plugin, texts, wait_sink, Dispatcher, SinkOutput,
    MAIN_SMALL_JOURNAL,
};
use support::wait_until;

/// Records per input batch.
const BATCH: usize = 10;

/// How far the input may go, and how far it got acknowledged.
#[derive(Default)]
struct Progress {
    allowed: usize,
    acked: usize,
    failed: Option<String>,
}

/// An input plugin sending `records` in acknowledged batches, as far as the
/// test allows.
struct Feeder {
    gate: Arc<(Mutex<Progress>, Condvar)>,
    thread: Option<JoinHandle<()>>,
}

impl Feeder {
    fn start(socket: std::path::PathBuf, records: Vec<Vec<u8>>) -> Feeder {
        let gate = Arc::new((Mutex::new(Progress::default()), Condvar::new()));
        let g = gate.clone();
        let thread = std::thread::spawn(move || {
            let fail = |why: String| {
                g.0.lock().unwrap().failed = Some(why);
                g.1.notify_all();
            };
            let (mut client, start) = match InputClient::connect(&socket, "feed", [7; 16]) {
                Ok(c) => c,
                Err(e) => return fail(format!("connect: {e}")),
            };
            if start != 0 {
                return fail(format!("a new input starts after {start}"));
            }
            let mut sent = 0;
            while sent < records.len() {
                let allowed = {
                    let mut p = g.0.lock().unwrap();
                    while p.allowed <= sent {
                        p = g.1.wait(p).unwrap();
                    }
                    p.allowed
                };
                let to = (sent + BATCH).min(allowed).min(records.len());
                let batch = records[sent..to]
                    .iter()
                    .enumerate()
                    .map(|(i, r)| ((sent + i + 1) as u64, 0, &r[..]));
                if let Err(e) = client.send(batch) {
                    return fail(format!("send: {e}"));
                }
                if let Err(e) = client.wait_acked(to as u64, Duration::from_secs(10)) {
                    return fail(format!("ack: {e}"));
                }
                sent = to;
                g.0.lock().unwrap().acked = sent;
                g.1.notify_all();
            }
        });
        Feeder {
            gate,
            thread: Some(thread),
        }
    }

    /// Lets the input send up to record `n`.
    fn allow(&self, n: usize) {
        self.gate.0.lock().unwrap().allowed = n;
        self.gate.1.notify_all();
    }

    /// Records acknowledged so far.
    fn acked(&self) -> usize {
        let p = self.gate.0.lock().unwrap();
        assert!(p.failed.is_none(), "input: {:?}", p.failed);
        p.acked
    }

    /// Waits until `n` records are acknowledged.
    fn wait_acked(&self, n: usize) {
        let (m, cv) = &*self.gate;
        let (p, timeout) = cv
            .wait_timeout_while(m.lock().unwrap(), Duration::from_secs(20), |p| {
                p.acked < n && p.failed.is_none()
            })
            .unwrap();
        assert!(p.failed.is_none(), "input: {:?}", p.failed);
        assert!(
            !timeout.timed_out(),
            "only {} of {n} records acknowledged",
            p.acked
        );
    }

    fn finish(mut self) {
        self.thread.take().unwrap().join().unwrap();
        assert!(self.gate.0.lock().unwrap().failed.is_none());
    }
}

fn rtype(line: &[u8]) -> &[u8] {
    let s = &line[line.windows(5).position(|w| w == b"type=").unwrap() + 5..];
    &s[..s.iter().position(|&b| b == b' ').unwrap()]
}

fn strictly_increasing(name: &str, out: &SinkOutput) {
    assert!(
        out.records.windows(2).all(|w| w[0].0 < w[1].0),
        "{name}: a record was delivered twice or out of order"
    );
}

/// The pid a sink wrote at start (waiting for it to have written it).
fn pid_of(d: &Dispatcher, name: &str) -> i32 {
    let path = d.out(&format!("{name}.pid"));
    let read = || {
        std::fs::read_to_string(&path)
            .ok()
            .and_then(|s| s.trim().parse().ok())
    };
    wait_until(Duration::from_secs(10), "the sink's pid file", || {
        read().is_some()
    });
    read().unwrap()
}

fn with_pid(name: &str, rest: &str) -> String {
    sink_plugin(
        name,
        &format!("\"--pid-file\", \"{{dir}}/out/{name}.pid\""),
        rest,
    )
}

#[test]
fn reload_adds_removes_changes_and_survives_broken_files_without_losing_a_record() {
    let data = sample();
    let all = lines(&data);
    let n = all.len();
    let mut d = Dispatcher::new(MAIN_SMALL_JOURNAL);
    for name in ["keep", "changed", "stable"] {
        d.write_plugin(name, &with_pid(name, ""));
    }
    // Slow, so that it is behind when its file is removed and the drain
    // has work to do.
    d.write_plugin(
        "gone",
        &sink_plugin(
            "gone",
            "\"--pid-file\", \"{dir}/out/gone.pid\", \"--delay-ms\", \"50\"",
            "",
        ),
    );
    d.start(std::process::Stdio::null()).unwrap();
    let feeder = Feeder::start(d.input_socket(), all.iter().map(|r| r.to_vec()).collect());
    feeder.allow(800);
    feeder.wait_acked(800);
    let gone_pid = pid_of(&d, "gone");
    let stable_pid = pid_of(&d, "stable");

    // Reload 1, with records flowing: add, remove, change, break.
    d.write_plugin("added", &with_pid("added", ""));
    d.remove_plugin("gone");
    d.write_plugin("changed", &with_pid("changed", "include = [\"SYSCALL\"]"));
    d.write_plugin(
        "stable",
        "# broken on line 3\nformat = \"native\"\nexec = [\"/bin/true\",\n",
    );
    feeder.allow(2400);
    // Records are flowing when the reload starts.
    feeder.wait_acked(800 + 5 * BATCH);
    let before1 = feeder.acked();
    let gone_before = read_sink(&d.out("gone")).records.len();
    d.reload().unwrap();
    let after1 = feeder.acked();
    eprintln!(
        "reload 1 between {before1} and {after1} acknowledged records; gone had {gone_before}"
    );
    feeder.wait_acked(2400);

    let log = d.log();
    assert!(
        log.lines()
            .any(|l| l.contains("plugins.d/stable.toml:3:") && l.contains("ERROR")),
        "the broken file is logged as file:line\n{}",
        d.log_tail(30)
    );
    wait_until(
        Duration::from_secs(10),
        "the removed plugin to stop",
        || !std::path::Path::new(&format!("/proc/{gone_pid}")).exists(),
    );

    // Reload 2: a broken main file refuses everything, including the
    // removal of keep's file.
    d.write_main("[journal\nsegment_size = \"1M\"\n");
    d.remove_plugin("keep");
    feeder.allow(3400);
    feeder.wait_acked(2400 + 5 * BATCH);
    d.reload().unwrap();
    feeder.wait_acked(3400);
    assert!(d.log().contains("reload refused"), "{}", d.log_tail(30));
    assert!(d.running(), "audispd runs on");

    feeder.allow(n);
    feeder.wait_acked(n);
    feeder.finish();

    // keep and stable: everything, once, in order, on their first
    // connection (neither was touched by a reload).
    for name in ["keep", "stable"] {
        let out = wait_sink(&d.out(name), n, Duration::from_secs(20));
        strictly_increasing(name, &out);
        assert!(texts(&out) == all, "{name}: every record once, in order");
    }
    assert_eq!(pid_of(&d, "stable"), stable_pid, "stable was not restarted");

    // added: a contiguous tail of the stream, from the reload on.
    let added = wait_sink(&d.out("added"), n - after1 - BATCH, Duration::from_secs(20));
    wait_until(Duration::from_secs(10), "added to catch up", || {
        d.plugin_state("added").get("queued") == 0
    });
    let added = {
        let _ = added;
        read_sink(&d.out("added"))
    };
    strictly_increasing("added", &added);
    let from = n - added.records.len();
    assert!(
        texts(&added) == all[from..],
        "added: a contiguous tail of the stream"
    );
    assert!(
        from >= before1 && from <= after1 + BATCH,
        "added starts at the reload: record {from}, reload between {before1} and {after1}"
    );

    // gone: a prefix of the stream holding everything stored before the
    // reload.
    let gone = read_sink(&d.out("gone"));
    strictly_increasing("gone", &gone);
    assert!(
        texts(&gone) == all[..gone.records.len()],
        "gone: a prefix of the stream"
    );
    assert!(
        gone.records.len() >= before1,
        "gone got {} records; {before1} were stored before the reload",
        gone.records.len()
    );

    // changed: every record up to some point k, then only SYSCALL records,
    // with k no later than the reload.
    wait_until(Duration::from_secs(10), "changed to catch up", || {
        d.plugin_state("changed").get("queued") == 0
    });
    let changed = read_sink(&d.out("changed"));
    strictly_increasing("changed", &changed);
    let got = texts(&changed);
    // The switch point k: the longest common prefix may run past it when
    // the records right after the switch happen to be SYSCALL records, so
    // take the earliest point from which the rest is exactly the filtered
    // stream.
    let common = got.iter().zip(&all).take_while(|(a, b)| a == b).count();
    let syscalls_from = |from: usize| -> Vec<&[u8]> {
        all[from..]
            .iter()
            .copied()
            .filter(|r| rtype(r) == b"SYSCALL")
            .collect()
    };
    let k = (0..=common)
        .find(|&k| got[k..] == syscalls_from(k)[..])
        .unwrap_or_else(|| {
            panic!(
                "changed: no point up to {common} after which it got exactly the SYSCALL \
                 records ({} records in all)",
                got.len()
            )
        });
    assert!(
        k <= after1 + BATCH,
        "the new include list took effect at the reload (k = {k}, reload at {after1})"
    );
    assert!(
        got.len() < n,
        "changed: the include list filtered something"
    );

    // Counted in, counted out.
    let report = d.state();
    let input = support::dispatcher::state_line(&report, "input", "feed").unwrap();
    assert_eq!(input.get("records"), n as u64, "{input:?}");
    assert_eq!(input.get("duplicates"), 0, "{input:?}");
    assert_eq!(input.get("malformed"), 0, "{input:?}");
    assert!(
        support::dispatcher::state_line(&report, "plugin", "gone").is_none(),
        "gone is no longer reported\n{report}"
    );
    for (name, connects) in [("keep", 1), ("stable", 1), ("added", 1), ("changed", 2)] {
        let p = support::dispatcher::state_line(&report, "plugin", name)
            .unwrap_or_else(|| panic!("{name} in\n{report}"));
        assert_eq!(p.state, "connected", "{name}: {p:?}");
        assert_eq!(p.get("queued"), 0, "{name}: {p:?}");
        assert_eq!(p.get("dropped"), 0, "{name}: {p:?}");
        assert_eq!(p.get("connects"), connects, "{name}: {p:?}");
    }
    for name in ["keep", "stable"] {
        let p = support::dispatcher::state_line(&report, "plugin", name).unwrap();
        assert_eq!(p.get("delivered"), n as u64, "{name}: {p:?}");
    }

    let status = d.stop().unwrap();
    assert!(status.success(), "{status}\n{}", d.log_tail(30));
}

/// A reload that changes a setting read only at start (here `[dbus]`,
/// turned on) says so in the log, naming it, and keeps running.
#[test]
fn reload_names_settings_that_need_a_restart() {
    let mut d = Dispatcher::new("");
    d.start(std::process::Stdio::piped()).unwrap();
    d.write_main("[dbus]\nenabled = true\n");
    d.reload().unwrap();
    wait_until(Duration::from_secs(10), "the restart warning", || {
        d.log()
            .contains("changes to [\"[dbus]\"] take effect at the next restart")
    });
}
