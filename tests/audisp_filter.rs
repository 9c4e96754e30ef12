//! The audisp-filter program with real children: both modes on real
//! records, every event forwarded whole or not at all and every record in
//! exactly one of the two outputs; a Python plugin counting the events it
//! gets from the whole corpus; `--check`; a reload on SIGHUP; a stop on
//! SIGTERM that still delivers the held events; a child that dies; refused
//! rule files and programs.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use audisp::filter::rules::parse_rules;
use audisp::filter::Scratch;
use support::dispatcher::{corpus, lines};
use support::events::events;

const BIN: &str = env!("CARGO_BIN_EXE_audisp-filter");

/// Three rules, ORed: failed opens, anything by login uid 65534 that is
/// not a syscall, and execs of /bin/echo.
const RULES: &str = "# test rules
(type r= SYSCALL && syscall i= openat && success r= no)
\\record_type >= 1100 && \\record_type <= 1199 && auid i= nobody
\\regexp /name=\"\\/bin\\/echo\"/
";

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

fn write_rules(dir: &Path, text: &str) -> PathBuf {
    write_rules_as(dir, "rules.conf", text)
}

fn write_rules_as(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("rules");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    path
}

/// audisp-filter MODE RULES /bin/sh -c 'exec cat > OUT', fed `input`.
fn run_cat(mode: &str, rules: &Path, input: &[u8], out: &Path) -> Output {
    let mut child = Command::new(BIN)
        .args([mode, rules.to_str().expect("utf-8"), "/bin/sh", "-c"])
        .arg(format!("exec /bin/cat > '{}'", out.display()))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("audisp-filter starts");
    let mut stdin = child.stdin.take().expect("stdin");
    let input = input.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let output = child.wait_with_output().expect("audisp-filter runs");
    writer.join().expect("writer").expect("input written");
    output
}

/// The event id (`node msg=audit(…)` stamp) of a record line.
fn event_of(line: &[u8]) -> Vec<u8> {
    let start = line
        .windows(10)
        .position(|w| w == b"msg=audit(")
        .expect("stamp");
    let end = start + line[start..].iter().position(|&b| b == b')').expect(")");
    let node = if line.starts_with(b"node=") {
        line.split(|&b| b == b' ').next().unwrap_or(b"").to_vec()
    } else {
        Vec::new()
    };
    [node, line[start..=end].to_vec()].concat()
}

#[test]
fn both_modes_forward_whole_events_exactly_once() {
    let dir = tempfile::tempdir().expect("tmp");
    let rules = write_rules(dir.path(), RULES);
    let mut input = std::fs::read(data("sample.log")).expect("sample");
    input.extend(std::fs::read(data("avc-samples.log")).expect("avc"));
    let records = lines(&input);
    // What the library says, event by event, as the dispatcher groups them.
    let filter = parse_rules(RULES).expect("rules parse");
    let mut scratch = Scratch::new();
    let mut matching: BTreeSet<Vec<u8>> = BTreeSet::new();
    let mut all: BTreeSet<Vec<u8>> = BTreeSet::new();
    for ev in events(&records) {
        let id = event_of(ev[0]);
        all.insert(id.clone());
        if ev.iter().any(|r| filter.matches(r, &mut scratch)) {
            matching.insert(id);
        }
    }
    assert!(
        matching.len() > 20 && matching.len() * 2 < all.len(),
        "{}",
        matching.len()
    );

    let mut seen: BTreeMap<Vec<u8>, usize> = BTreeMap::new();
    for (mode, keep) in [
        ("keep", true),
        ("blocklist", true),
        ("drop", false),
        ("allowlist", false),
    ] {
        let out = dir.path().join(format!("{mode}.log"));
        let o = run_cat(mode, &rules, &input, &out);
        let log = String::from_utf8_lossy(&o.stderr);
        assert!(o.status.success(), "{mode}: {:?}\n{log}", o.status);
        assert!(log.contains("end of input: 4416 records read"), "{log}");
        let got = std::fs::read(&out).expect("output");
        let got_lines = lines(&got);
        // Events come whole: every record of an event that was forwarded,
        // in input order, and only events of the right kind.
        let mut by_event: BTreeMap<Vec<u8>, Vec<&[u8]>> = BTreeMap::new();
        for l in &got_lines {
            by_event.entry(event_of(l)).or_default().push(l);
        }
        for (id, recs) in &by_event {
            assert_eq!(
                matching.contains(id),
                keep,
                "{mode}: {}",
                String::from_utf8_lossy(id)
            );
            let want: Vec<&[u8]> = records
                .iter()
                .copied()
                .filter(|r| event_of(r) == *id)
                .collect();
            assert_eq!(recs, &want, "{mode}: {}", String::from_utf8_lossy(id));
        }
        let want_events = if keep {
            matching.len()
        } else {
            all.len() - matching.len()
        };
        assert_eq!(by_event.len(), want_events, "{mode}");
        if mode == "keep" || mode == "drop" {
            for l in got_lines {
                *seen.entry(l.to_vec()).or_default() += 1;
            }
        }
    }
    // keep and drop together: every record exactly once.
    let mut want: BTreeMap<Vec<u8>, usize> = BTreeMap::new();
    for r in &records {
        *want.entry(r.to_vec()).or_default() += 1;
    }
    assert_eq!(seen, want);
}

#[test]
fn a_python_plugin_counts_every_forwarded_event_of_the_corpus() {
    let dir = tempfile::tempdir().expect("tmp");
    let rules = write_rules(dir.path(), RULES);
    let input = corpus();
    let records = lines(&input);
    let filter = parse_rules(RULES).expect("rules parse");
    let mut scratch = Scratch::new();
    let mut want: BTreeMap<Vec<u8>, usize> = BTreeMap::new();
    for ev in events(&records) {
        if !ev.iter().any(|r| filter.matches(r, &mut scratch)) {
            let id = event_of(ev[0]);
            *want.entry(id).or_default() += ev.len();
        }
    }
    // EOE records the kernel sent after their event ended still count.
    let mut eoe_after: BTreeMap<Vec<u8>, usize> = BTreeMap::new();
    for r in &records {
        let id = event_of(r);
        if want.contains_key(&id) {
            *eoe_after.entry(id).or_default() += 1;
        }
    }
    let out = dir.path().join("counts");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/filter/count_events.py");
    let mut child = Command::new(BIN)
        .args(["drop", rules.to_str().expect("utf-8"), "/usr/bin/python3"])
        .arg(&script)
        .arg(&out)
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("audisp-filter starts");
    let mut stdin = child.stdin.take().expect("stdin");
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let o = child.wait_with_output().expect("runs");
    writer.join().expect("writer").expect("written");
    let log = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{:?}\n{log}", o.status);
    let text = std::fs::read_to_string(&out).expect("counts");
    let mut got: BTreeMap<Vec<u8>, usize> = BTreeMap::new();
    let mut total = 0;
    for line in text.lines() {
        let (key, n) = line.rsplit_once(' ').expect("key count");
        let n: usize = n.parse().expect("count");
        if key == "records" {
            total = n;
            continue;
        }
        // "NODE msg=audit(ID)" as count_events.py writes it, without the
        // "node=" and "msg=audit(…)" around it.
        let (node, id) = key.split_once(' ').expect("node id");
        let node = if node.is_empty() {
            String::new()
        } else {
            format!("node={node}")
        };
        let k = format!("{node}msg=audit({id})").into_bytes();
        assert!(got.insert(k, n).is_none(), "an event counted twice");
    }
    assert_eq!(got, eoe_after, "events and their record counts");
    assert_eq!(total, eoe_after.values().sum::<usize>());
    assert!(total > 100_000, "{total}");
}

#[test]
fn check_reports_every_error_with_its_position() {
    let dir = tempfile::tempdir().expect("tmp");
    let bad = write_rules_as(
        dir.path(),
        "bad.conf",
        "type r= SYSCALL\ntype = PATH\n\n(auid >= 1000\n",
    );
    let o = Command::new(BIN)
        .arg("--check")
        .arg(&bad)
        .output()
        .expect("runs");
    assert_eq!(o.status.code(), Some(2));
    let shown = bad.display();
    assert_eq!(
        String::from_utf8_lossy(&o.stderr),
        format!(
            "{shown}:2:6: expected an operator after \"type\" (r= r!= i= i!= == !== < <= > >=), found '='\n\
             {shown}:4:14: expected ')' to close the '(' at column 1, found the end of the expression\n"
        )
    );
    let good = write_rules(dir.path(), RULES);
    let o = Command::new(BIN)
        .arg("--check")
        .arg(&good)
        .output()
        .expect("runs");
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("3 expressions, no errors"), "{out}");
    // Running refuses the bad file too, before starting anything.
    let o = Command::new(BIN)
        .args(["keep", bad.to_str().expect("utf-8"), "/bin/cat"])
        .stdin(Stdio::null())
        .output()
        .expect("runs");
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn untrusted_rules_and_programs_are_refused() {
    let dir = tempfile::tempdir().expect("tmp");
    let rules = write_rules(dir.path(), RULES);
    let refuse = |args: &[&str], why: &str| {
        let o = Command::new(BIN)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("runs");
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(why), "{args:?}: {err}");
    };
    let r = rules.to_str().expect("utf-8");
    refuse(&["keep", r, "cat"], "is not an absolute path");
    refuse(
        &["keep", r, "/nonexistent/plugin"],
        "/nonexistent/plugin: No such file",
    );
    refuse(&["sideways", r, "/bin/cat"], "unknown mode \"sideways\"");
    refuse(&["keep", r], "usage:");
    let script = dir.path().join("plugin.sh");
    std::fs::write(&script, "#!/bin/sh\nexec cat\n").expect("script");
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    refuse(
        &["keep", r, script.to_str().expect("utf-8")],
        "can be written by group or others (mode 0777)",
    );
    std::fs::set_permissions(&rules, std::fs::Permissions::from_mode(0o666)).expect("chmod");
    refuse(
        &["keep", r, "/bin/cat"],
        "can be written by group or others (mode 0666)",
    );
    refuse(&["--check", r], "can be written by group or others");
}

/// Reads audisp-filter's log lines as they come.
fn log_lines(child: &mut Child) -> mpsc::Receiver<String> {
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// The next log line (a failure after 30 s without one).
fn rx_line(rx: &mpsc::Receiver<String>) -> String {
    rx.recv_timeout(Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("no log line: {e}"))
}

fn wait_for_line(rx: &mpsc::Receiver<String>, what: &str) -> String {
    loop {
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(l) if l.contains(what) => return l,
            Ok(_) => {}
            Err(e) => panic!("no log line with {what:?}: {e}"),
        }
    }
}

/// Waits for `child` to exit; fails (after killing it) if that takes a
/// minute: audisp-filter must never hang.
fn wait_exit(mut child: Child) -> ExitStatus {
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait());
    });
    match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(status) => status.expect("wait"),
        Err(_) => {
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
            panic!("audisp-filter did not exit within 60 s");
        }
    }
}

const USER_A: &str =
    "type=USER msg=audit(1700000000.001:1): pid=1 uid=0 auid=1000 ses=1 msg='op=a res=success'\n";
const USER_B: &str =
    "type=USER msg=audit(1700000000.002:2): pid=1 uid=0 auid=1000 ses=1 msg='op=b res=success'\n";
const SYSCALL_HELD: &str = "type=SYSCALL msg=audit(1700000000.003:3): arch=c000003e syscall=2 success=yes exit=3 auid=1000 uid=0 comm=\"x\" exe=\"/x\" key=(null)\n";

#[test]
fn sighup_reloads_the_rules_and_sigterm_still_delivers_held_events() {
    let dir = tempfile::tempdir().expect("tmp");
    let rules = write_rules(dir.path(), "op r= a\n");
    let out = dir.path().join("out.log");
    // SIGHUP is passed on to the child (so that it reloads too): this one
    // ignores it, as a plugin that cannot reload should.
    let mut child = Command::new(BIN)
        .args(["keep", rules.to_str().expect("utf-8"), "/bin/sh", "-c"])
        .arg(format!(
            "trap '' HUP; echo 'child: HUP ignored' >&2; exec /bin/cat > '{}'",
            out.display()
        ))
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starts");
    let log = log_lines(&mut child);
    // A SIGHUP before the trap is set would kill the child (and so
    // audisp-filter): wait for the child's word that it is set, which may
    // come before or after audisp-filter's own line.
    let mut want = vec!["started /bin/sh", "child: HUP ignored"];
    while !want.is_empty() {
        let line = rx_line(&log);
        want.retain(|w| !line.contains(w));
    }
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(USER_A.as_bytes()).expect("write");
    stdin.write_all(USER_B.as_bytes()).expect("write");
    stdin.flush().expect("flush");
    // A bad file is not taken: the old rules stay.
    std::fs::write(&rules, "op = b\n").expect("rules");
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).expect("hup");
    wait_for_line(&log, "rules.conf:1:4: expected an operator");
    wait_for_line(&log, "the rules were not reloaded");
    std::fs::write(&rules, "op r= b || syscall r= 2\n").expect("rules");
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).expect("hup");
    wait_for_line(&log, "SIGHUP: reloaded");
    stdin.write_all(USER_A.as_bytes()).expect("write");
    stdin.write_all(USER_B.as_bytes()).expect("write");
    // An event still open (no PROCTITLE or EOE yet) when SIGTERM comes.
    stdin.write_all(SYSCALL_HELD.as_bytes()).expect("write");
    stdin.flush().expect("flush");
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("term");
    let end = wait_for_line(&log, "stop signal");
    assert!(end.contains("/bin/sh exited with status 0"), "{end}");
    let status = wait_exit(child);
    assert!(status.success(), "{status:?}");
    let got = std::fs::read_to_string(&out).expect("out");
    // Before the reload: op=a; after it: op=b and the held syscall event.
    assert_eq!(got, format!("{USER_A}{USER_B}{SYSCALL_HELD}"), "{end}");
    drop(stdin);
}

#[test]
fn a_child_that_dies_ends_audisp_filter_with_a_clear_message() {
    let dir = tempfile::tempdir().expect("tmp");
    let rules = write_rules(dir.path(), RULES);
    let mut child = Command::new(BIN)
        .args([
            "drop",
            rules.to_str().expect("utf-8"),
            "/bin/sh",
            "-c",
            "exit 3",
        ])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starts");
    let log = log_lines(&mut child);
    // The input stays open: audisp-filter must notice the death by itself.
    let stdin = child.stdin.take().expect("stdin");
    let line = wait_for_line(&log, "exited with status 3");
    assert!(
        line.contains("/bin/sh exited with status 3; exiting"),
        "{line}"
    );
    let status = wait_exit(child);
    assert_eq!(status.code(), Some(1));
    drop(stdin);
}
