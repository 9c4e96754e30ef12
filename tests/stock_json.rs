//! `format = "json"` for stock plugins: a Python 3 program started by
//! audispd reads its standard input with the standard library's
//! `json.loads`, one whole event per line, and writes back what it got.
//! Through a real audispd fed the real records of `tests/data`, every event
//! arrives once, in order, with the records audisp-logfile's JSON has for it
//! (a real audisp-logfile runs beside it), through reloads and crashes that
//! restart the program mid-stream; `drop_fields` removes its fields; and a
//! plugin listening on a socket gets the same.

mod support;

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use audisp::format::drop_fields::DropFields;
use audisp::format::JsonWriter;
use support::dispatcher::{lines, sample, sample_copies, Dispatcher, MAIN_NO_STATS};
use support::events::events;

const PYTHON: &str = "/usr/bin/python3";

/// The plugin. `python3 plugin.py OUT_DIR NAME MODE [N | SOCKET]`: appends
/// each event it reads, re-encoded by `json.dumps`, to `OUT_DIR/NAME`, and
/// anything that is not a whole JSON line to `OUT_DIR/NAME.bad`. MODE
/// `buffered` reads standard input as programs usually do; `die-every`
/// reads it a byte at a time (so that nothing read is left unhandled) and
/// kills itself after every N events; `listen` reads the first connection
/// to a stream socket it binds at SOCKET.
const PLUGIN: &str = r#"import json, os, signal, socket, sys

out_dir, name, mode = sys.argv[1], sys.argv[2], sys.argv[3]
out = open(os.path.join(out_dir, name), "a", encoding="utf-8")
bad = open(os.path.join(out_dir, name + ".bad"), "ab")


def lines_buffered():
    yield from sys.stdin.buffer


def lines_listening():
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(sys.argv[4])
    server.listen(1)
    conn, _ = server.accept()
    yield from conn.makefile("rb")


def lines_bytewise():
    line = bytearray()
    while True:
        b = os.read(0, 1)
        if not b:
            if line:
                yield bytes(line)
            return
        line += b
        if b == b"\n":
            yield bytes(line)
            line = bytearray()


seen = 0
lines = {"buffered": lines_buffered, "die-every": lines_bytewise, "listen": lines_listening}
for raw in lines[mode]():
    try:
        if not raw.endswith(b"\n"):
            raise ValueError("no newline")
        event = json.loads(raw)
    except ValueError:
        bad.write(raw + b"\n")
        bad.flush()
        continue
    out.write(json.dumps(event, ensure_ascii=False, separators=(",", ":")) + "\n")
    out.flush()
    seen += 1
    if mode == "die-every" and seen == int(sys.argv[4]):
        os.kill(os.getpid(), signal.SIGKILL)
"#;

/// Skips (returns true) when Python 3 is not installed.
fn no_python() -> bool {
    if Path::new(PYTHON).exists() {
        return false;
    }
    support::skip("python3 is not installed (apt-get install python3)");
    true
}

/// Writes the plugin program into the test directory.
fn install_plugin(d: &Dispatcher) -> PathBuf {
    let path = d.path().join("plugin.py");
    std::fs::write(&path, PLUGIN).unwrap();
    path
}

/// A plugins.d body running the Python plugin as `name` with `args` after
/// its name, and `rest` after the format line.
fn python_plugin(script: &Path, name: &str, args: &[&str], rest: &str) -> String {
    let mut argv = vec![
        PYTHON.to_string(),
        script.display().to_string(),
        "{dir}/out".into(),
        name.into(),
    ];
    argv.extend(args.iter().map(|a| a.to_string()));
    let argv: Vec<String> = argv.iter().map(|a| format!("{a:?}")).collect();
    format!("exec = [{}]\nformat = \"json\"\n{rest}", argv.join(", "))
}

/// What the plugin `name` wrote, one parsed event per line, after checking
/// that it saw nothing but whole JSON lines.
fn got(d: &Dispatcher, name: &str) -> Vec<serde_json::Value> {
    let bad = std::fs::read(d.out(&format!("{name}.bad"))).unwrap_or_default();
    assert!(
        bad.is_empty(),
        "{name} read something that is not a whole JSON line: {}",
        String::from_utf8_lossy(&bad[..bad.len().min(300)])
    );
    let data = std::fs::read(d.out(name)).unwrap_or_default();
    parsed(&data)
}

fn parsed(data: &[u8]) -> Vec<serde_json::Value> {
    lines(data)
        .iter()
        .map(|l| serde_json::from_slice(l).expect("valid JSON"))
        .collect()
}

/// audisp-logfile's JSON of the events audispd makes of `records`, each
/// record passed through `drop` first, parsed, in a stable order.
fn want(records: &[&[u8]], mut drop: Option<DropFields>) -> Vec<serde_json::Value> {
    let mut w = JsonWriter::new();
    let mut out = Vec::new();
    for ev in events(records) {
        let texts: Vec<Vec<u8>> = ev
            .iter()
            .map(|r| match &mut drop {
                Some(d) => d.apply(r).into_owned(),
                None => r.to_vec(),
            })
            .collect();
        let recs: Vec<&[u8]> = texts.iter().map(Vec::as_slice).collect();
        // Every record comes from standard input: the `auditd` input.
        w.write_event_from(&recs, Some("auditd"), &mut out);
        out.push(b'\n');
    }
    sorted(parsed(&out))
}

/// Events in a stable order: the one the tail of a stream closes in at
/// shutdown is not fixed (see `support::events`).
fn sorted(mut v: Vec<serde_json::Value>) -> Vec<serde_json::Value> {
    v.sort_by_cached_key(|e| e.to_string());
    v
}

/// Where the stream can be cut between events: no event has records on
/// both sides. Cutting only there, no event waits for its next record
/// across a reload (whose length would then decide where it ends).
fn clean_cuts(records: &[&[u8]]) -> Vec<usize> {
    type Key = (Option<Vec<u8>>, u64, u32, u64);
    let keys: Vec<Option<Key>> = records
        .iter()
        .map(|r| {
            audisp::record::parse(r).map(|i| {
                (
                    i.node.map(<[u8]>::to_vec),
                    i.time.sec,
                    i.time.msec,
                    i.serial,
                )
            })
        })
        .collect();
    let mut last: HashMap<&Key, usize> = HashMap::new();
    for (i, k) in keys.iter().enumerate() {
        if let Some(k) = k {
            last.insert(k, i);
        }
    }
    let mut open_until = 0;
    let mut cuts = Vec::new();
    for (i, k) in keys.iter().enumerate() {
        if i > 0 && open_until < i {
            cuts.push(i);
        }
        if let Some(k) = k {
            open_until = open_until.max(last[k]);
        }
    }
    cuts
}

/// Feeds the sample to a started audispd, waits for plugin `name` to have
/// written as many events as there are, and stops audispd; returns the
/// events expected (see [`want`]).
fn replay_sample(d: &mut Dispatcher, name: &str) -> Vec<serde_json::Value> {
    let data = sample();
    let expected = want(&lines(&data), None);
    let mut stdin = d.child.as_mut().unwrap().stdin.take().unwrap();
    stdin.write_all(&data).unwrap();
    support::wait_until(Duration::from_secs(120), "every event", || {
        let out = std::fs::read(d.out(name)).unwrap_or_default();
        out.iter().filter(|&&b| b == b'\n').count() >= expected.len()
    });
    drop(stdin);
    let status = d.wait(Duration::from_secs(60)).unwrap();
    assert!(status.success(), "{status}\n{}", d.log_tail(30));
    expected
}

/// Every expected event once, whole (in any order: see [`sorted`]).
fn assert_every_event(got: &[serde_json::Value], expected: &[serde_json::Value]) {
    assert_eq!(got.len(), expected.len(), "events in vs out");
    assert!(sorted(got.to_vec()) == expected, "every event once, whole");
}

#[test]
fn a_python_plugin_gets_every_event_once_as_logfile_writes_it_through_reloads() {
    if no_python() {
        return;
    }
    let mut d = Dispatcher::new("[shutdown]\ntimeout = \"20s\"\n[stats]\ninterval = \"0\"\n");
    let script = install_plugin(&d);
    let json = |generation: usize| {
        python_plugin(
            &script,
            "json",
            &["buffered", &format!("gen{generation}")],
            "",
        )
    };
    let names = ["proctitle", "auid", "exe"];
    d.write_plugin("json", &json(0));
    d.write_plugin(
        "dropped",
        &python_plugin(
            &script,
            "dropped",
            &["buffered"],
            "drop_fields = [\"proctitle\", \"auid\", \"exe\"]\n",
        ),
    );
    let logfile = env!("CARGO_BIN_EXE_audisp-logfile");
    d.write_plugin(
        "logfile",
        &format!("exec = [{logfile:?}, \"--file\", \"{{dir}}/out/logfile.json\", \"--format\", \"json\", \"--fsync\", \"never\"]\nmode = \"events\"\n"),
    );
    d.start(Stdio::piped()).unwrap();
    let mut stdin = d.child.as_mut().unwrap().stdin.take().unwrap();
    let data = sample_copies(4);
    let all = lines(&data);
    // Reloads between chunks of the stream restart the plugin while it
    // still reads the previous ones.
    let cuts = clean_cuts(&all);
    let step = cuts.len().div_ceil(30);
    let mut from = 0;
    let mut reloads = 0;
    for &to in cuts.iter().step_by(step).skip(1).chain([&all.len()]) {
        for l in &all[from..to] {
            stdin.write_all(l).unwrap();
            stdin.write_all(b"\n").unwrap();
        }
        stdin.flush().unwrap();
        from = to;
        reloads += 1;
        d.write_plugin("json", &json(reloads));
        d.reload()
            .unwrap_or_else(|e| panic!("reload {reloads}: {e}\n{}", d.log_tail(30)));
    }
    drop(stdin);
    let status = d.wait(Duration::from_secs(120)).unwrap();
    assert!(status.success(), "{status}\n{}", d.log_tail(30));
    let starts = d
        .log()
        .matches("started the program of plugin json")
        .count();
    assert!(
        starts > reloads / 2,
        "{starts} starts for {reloads} reloads\n{}",
        d.log_tail(30)
    );

    let logfile = parsed(&std::fs::read(d.out("logfile.json")).unwrap());
    let json = got(&d, "json");
    assert_eq!(
        json.len(),
        logfile.len(),
        "events: json plugin vs audisp-logfile"
    );
    assert!(
        json == logfile,
        "the same events, in the same order, as audisp-logfile wrote them"
    );
    assert_every_event(&json, &want(&all, None));

    // drop_fields: the same events without the fields.
    let dropped = got(&d, "dropped");
    let expected = want(
        &all,
        Some(DropFields::new(names.iter().map(|n| n.as_bytes()))),
    );
    assert_eq!(
        dropped.len(),
        expected.len(),
        "events in vs out (drop_fields)"
    );
    assert!(sorted(dropped.clone()) == expected, "drop_fields applied");
    let text = serde_json::to_string(&dropped).unwrap();
    for key in [
        "\"exe\":",
        "\"auid\":",
        "\"AUID\":",
        "\"PROCTITLE\":{\"ARGV\"",
    ] {
        assert!(!text.contains(key), "{key} left");
    }
    assert!(text.contains("\"PROCTITLE\":{}"), "the record stays, empty");
}

#[test]
fn a_python_plugin_that_keeps_dying_gets_exactly_what_it_left_unread() {
    if no_python() {
        return;
    }
    let mut d = Dispatcher::new("[shutdown]\ntimeout = \"20s\"\n[stats]\ninterval = \"0\"\n");
    let script = install_plugin(&d);
    d.write_plugin(
        "json",
        &python_plugin(
            &script,
            "json",
            &["die-every", "80"],
            "[restart]\ninitial = \"100ms\"\nmax = \"100ms\"\n",
        ),
    );
    d.start(Stdio::piped()).unwrap();
    let expected = replay_sample(&mut d, "json");
    let deaths = d
        .log()
        .matches("started the program of plugin json")
        .count()
        - 1;
    assert!(
        deaths >= expected.len() / 80,
        "{deaths} restarts\n{}",
        d.log_tail(30)
    );
    assert_every_event(&got(&d, "json"), &expected);
}

/// A process killed when dropped (a test that fails leaves none behind).
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_python_plugin_on_a_socket_gets_every_event_once() {
    if no_python() {
        return;
    }
    let mut d = Dispatcher::new(MAIN_NO_STATS);
    let script = install_plugin(&d);
    let sock = d.path().join("json.sock");
    let mut plugin = Killed(
        Command::new(PYTHON)
            .arg(&script)
            .arg(d.path().join("out"))
            .args(["json", "listen"])
            .arg(&sock)
            .spawn()
            .expect("python3"),
    );
    d.write_plugin(
        "json",
        &format!(
            "socket = {:?}\nformat = \"json\"\n",
            sock.display().to_string()
        ),
    );
    d.start(Stdio::piped()).unwrap();
    let expected = replay_sample(&mut d, "json");
    // audispd's end closed: the plugin read to the end and exited.
    let exit = plugin.0.wait().unwrap();
    assert!(exit.success(), "{exit}");
    assert_every_event(&got(&d, "json"), &expected);
}
