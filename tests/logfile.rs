//! audisp-logfile end to end: the real corpus replayed through a real
//! audispd into several audisp-logfile plugins (started by audispd, and one
//! socket-activated by `systemd-socket-activate`), each rotating and
//! compressing differently. Every file is read back with the standard tools
//! (`zcat`, `zstdcat`), oldest generation first: every record comes back,
//! once, in order — counted in equals counted out.

mod support;

use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use audisp::format::JsonWriter;
use audisp::sdk::InputClient;
use support::dispatcher::{corpus, feed, lines, sample, sample_shifted, Dispatcher, MAIN_NO_STATS};
use support::events::events;

const BIN: &str = env!("CARGO_BIN_EXE_audisp-logfile");

/// The files of one log, oldest generation first, live file last.
fn generations(dir: &Path, base: &str) -> Vec<PathBuf> {
    let mut gens: Vec<(u32, PathBuf)> = Vec::new();
    let mut live = None;
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(base) else {
            continue;
        };
        let rest = rest
            .trim_end_matches(".gz")
            .trim_end_matches(".zst")
            .to_string();
        if rest.is_empty() {
            live = Some(p);
        } else if let Some(k) = rest.strip_prefix('.').and_then(|k| k.parse().ok()) {
            gens.push((k, p));
        } else {
            panic!("unexpected file {name}");
        }
    }
    gens.sort_by_key(|g| std::cmp::Reverse(g.0));
    let mut out: Vec<PathBuf> = gens.into_iter().map(|g| g.1).collect();
    out.extend(live);
    out
}

/// Reads files back with a real tool (`zcat`, `zstdcat` or `cat`; the
/// plain live file of `--compress-when rotate` needs `zcat -f`).
fn read_back(tool: &str, files: &[PathBuf]) -> Vec<u8> {
    let mut argv = tool.split(' ');
    let out = Command::new(argv.next().unwrap())
        .args(argv)
        .args(files)
        .output()
        .expect(tool);
    assert!(
        out.status.success(),
        "{tool} {files:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn plugin(name: &str, args: &[&str], mode: &str) -> String {
    let mut exec = vec![
        BIN.to_string(),
        "--name".into(),
        name.into(),
        "--file".into(),
        format!("{{dir}}/out/{name}/log"),
    ];
    exec.extend(args.iter().map(|s| s.to_string()));
    let exec: Vec<String> = exec.iter().map(|a| format!("{a:?}")).collect();
    format!("exec = [{}]\nmode = \"{mode}\"\n", exec.join(", "))
}

/// A process killed when dropped.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn corpus_survives_rotation_and_compression() {
    let data = corpus();
    let all = lines(&data);
    let mut d = Dispatcher::new(
        r#"
[journal]
segment_size = "4M"
memory = "8M"
[shutdown]
timeout = "300s"
[stats]
interval = "0"
"#,
    );
    for name in [
        "raw-gz",
        "raw-zst-rotate",
        "raw-plain",
        "json-zst",
        "json-sock",
    ] {
        std::fs::create_dir_all(d.out(name)).unwrap();
    }
    d.write_plugin(
        "raw-gz",
        &plugin(
            "raw-gz",
            &[
                "--compress",
                "gzip",
                "--max-size",
                "1M",
                "--generations",
                "1000",
            ],
            "records",
        ),
    );
    d.write_plugin(
        "raw-zst-rotate",
        &plugin(
            "raw-zst-rotate",
            &[
                "--compress",
                "zstd",
                "--compress-when",
                "rotate",
                "--max-size",
                "4M",
                "--generations",
                "1000",
                "--fsync",
                "rotate",
            ],
            "records",
        ),
    );
    d.write_plugin(
        "raw-plain",
        &plugin(
            "raw-plain",
            &[
                "--max-size",
                "4M",
                "--generations",
                "2",
                "--file-mode",
                "0640",
                "--group",
                "4",
                "--fsync",
                "never",
            ],
            "records",
        ),
    );
    d.write_plugin(
        "json-zst",
        &plugin(
            "json-zst",
            &[
                "--format",
                "json",
                "--compress",
                "zstd",
                "--max-size",
                "256K",
                "--generations",
                "1000",
            ],
            "events",
        ),
    );
    // The same plugin socket-activated, as its systemd unit runs it: audispd
    // connects, systemd-socket-activate accepts the first connection by
    // exec'ing the plugin with LISTEN_FDS.
    let sock = d.path().join("run/json-sock.sock");
    let activated = Killed(
        Command::new("systemd-socket-activate")
            .arg("--seqpacket")
            .arg("-l")
            .arg(&sock)
            .args([
                BIN,
                "--name",
                "json-sock",
                "--format",
                "json",
                "--compress",
                "gzip",
                "--compress-when",
                "rotate",
                "--max-size",
                "1M",
                "--generations",
                "1000",
                "--file",
            ])
            .arg(d.out("json-sock").join("log"))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("systemd-socket-activate (package systemd)"),
    );
    support::wait_until(Duration::from_secs(10), "the activation socket", || {
        sock.exists()
    });
    d.write_plugin(
        "json-sock",
        &format!("socket = \"{}\"\nmode = \"events\"\n", sock.display()),
    );

    d.start(Stdio::piped()).unwrap();
    let stdin = d.child.as_mut().unwrap().stdin.take().unwrap();
    feed(stdin, data.clone()).join().unwrap();
    let status = d.wait(Duration::from_secs(600)).unwrap();
    assert!(status.success(), "audispd: {status}\n{}", d.log_tail(60));
    assert!(
        d.log().contains("every plugin had every record"),
        "{}",
        d.log_tail(60)
    );

    // Raw text: exactly the corpus, in order, across generations.
    for (name, tool) in [("raw-gz", "zcat"), ("raw-zst-rotate", "zstdcat")] {
        let files = generations(&d.out(name), "log");
        assert!(files.len() >= 3, "{name}: only {files:?}");
        let back = read_back(tool, &files);
        let got = lines(&back);
        assert_eq!(got.len(), all.len(), "{name}: records in == records out");
        assert!(got == all, "{name}: records differ from the corpus");
    }
    let names: Vec<String> = generations(&d.out("raw-zst-rotate"), "log")
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.last().map(String::as_str), Some("log"), "{names:?}");
    assert!(names[..names.len() - 1].iter().all(|n| n.ends_with(".zst")));

    // Two generations kept: the newest records, whole lines, no gap.
    let files = generations(&d.out("raw-plain"), "log");
    assert_eq!(files.len(), 3, "{files:?}");
    for f in &files[..2] {
        assert!(std::fs::metadata(f).unwrap().len() <= 4 << 20);
    }
    let back = read_back("cat", &files);
    let got = lines(&back);
    assert!(got.len() > 1000 && got.len() < all.len());
    assert!(
        got[..] == all[all.len() - got.len()..],
        "a suffix of the corpus"
    );
    let meta = std::fs::metadata(files.last().unwrap()).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o640);
    assert_eq!(meta.gid(), 4);

    // JSON: one object per event, the same as an in-process conversion,
    // naming the input every event came on (auditd, on standard input).
    let mut w = JsonWriter::new();
    let mut want: Vec<Vec<u8>> = events(&all)
        .iter()
        .map(|ev| {
            let mut out = Vec::new();
            w.write_event_from(ev, Some("auditd"), &mut out);
            out
        })
        .collect();
    want.sort();
    for (name, tool) in [("json-zst", "zstdcat"), ("json-sock", "zcat -f")] {
        let files = generations(&d.out(name), "log");
        assert!(files.len() >= 3, "{name}: only {files:?}");
        let back = read_back(tool, &files);
        let mut got: Vec<Vec<u8>> = lines(&back).iter().map(|l| l.to_vec()).collect();
        for l in &got {
            serde_json::from_slice::<serde_json::Value>(l).expect("valid JSON");
        }
        got.sort();
        assert_eq!(got.len(), want.len(), "{name}: events in == events out");
        assert!(got == want, "{name}: events differ");
    }
    drop(activated);
}

#[test]
fn bad_options_are_refused_precisely() {
    for (args, needle) in [
        (
            &["--file", "/tmp/x", "--compress", "lz4"][..],
            "--compress \"lz4\"",
        ),
        (&["--file", "/tmp/x", "--max-size", "12Q"], "--max-size"),
        (&["--file", "/tmp/x", "--generations", "0"], "--generations"),
        (&["--file", "/tmp/x", "--file-mode", "4755"], "--file-mode"),
        (&["--format", "json"], "--file PATH is required"),
    ] {
        let out = Command::new(BIN).args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{args:?}: {err}");
    }
}

/// A plugin `name` of `d` reached on a socket, retried within 100 ms when
/// it is not there, with `extra` lines in its file; returns its output
/// directory (created) and its socket's path.
fn socket_plugin(d: &Dispatcher, name: &str, extra: &str) -> (PathBuf, PathBuf) {
    let out = d.out(name);
    std::fs::create_dir_all(&out).unwrap();
    let sock = d.path().join(format!("run/{name}.sock"));
    d.write_plugin(
        name,
        &format!(
            "socket = \"{}\"\n{extra}[restart]\ninitial = \"20ms\"\nmax = \"100ms\"\n",
            sock.display()
        ),
    );
    (out, sock)
}

/// audisp-logfile listening on `sock` (`--fsync batch`), logging to
/// `out/log` with its position in `out/position` and its standard error
/// appended to `out/stderr`, with `args` besides.
fn logfile_on(sock: &Path, out: &Path, args: &[&str]) -> Command {
    let err = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(out.join("stderr"))
        .unwrap();
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .args(["--fsync", "batch", "--listen"])
        .arg(sock)
        .arg("--state")
        .arg(out.join("position"))
        .arg("--file")
        .arg(out.join("log"))
        .stdout(Stdio::null())
        .stderr(err);
    cmd
}

/// Found by attack (issue 10): with `--state`, 4 of 38 random kill -9s of
/// audisp-logfile repeated a whole batch in the log (the position was
/// updated after the write). Here audisp-logfile, serving audispd on a
/// socket, is killed 40 times at random moments while records stream in,
/// rotating every 256 KiB: the log holds every record exactly once, in
/// order.
#[test]
fn random_kill9_with_state_writes_every_record_exactly_once() {
    let data = support::dispatcher::sample_copies(6);
    let fed = data.clone();
    let all = lines(&fed);
    let mut d = Dispatcher::new("[shutdown]\ntimeout = \"300s\"\n[stats]\ninterval = \"0\"\n");
    let (out, sock) = socket_plugin(&d, "killed", "");
    let spawn = || {
        let child = logfile_on(
            &sock,
            &out,
            &[
                "--name",
                "killed",
                "--max-size",
                "256K",
                "--generations",
                "1000",
            ],
        )
        .spawn()
        .expect("audisp-logfile");
        Killed(child)
    };
    let live_size = || std::fs::metadata(out.join("log")).map_or(0, |m| m.len());
    let mut plugin = spawn();
    d.start(Stdio::piped()).unwrap();
    // Records arrive over about eight seconds.
    let mut stdin = d.child.as_mut().unwrap().stdin.take().unwrap();
    let feeder = std::thread::spawn(move || {
        for chunk in data.chunks(16 << 10) {
            if std::io::Write::write_all(&mut stdin, chunk).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    });
    // Each kill comes after a random pause, at the first change of the live
    // file's size seen after it (polled every millisecond, for at most half
    // a second): right after a write, where a kill lands between the data
    // and its position far more often than at a random moment.
    for _ in 0..40 {
        let mut r = [0u8; 2];
        getrandom::fill(&mut r).unwrap();
        std::thread::sleep(Duration::from_millis(
            20 + u64::from(u16::from_le_bytes(r)) % 130,
        ));
        let before = live_size();
        for _ in 0..500 {
            if live_size() != before {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        drop(plugin);
        plugin = spawn();
    }
    feeder.join().unwrap();
    let status = d.wait(Duration::from_secs(300)).unwrap();
    assert!(status.success(), "audispd: {status}\n{}", d.log_tail(40));
    drop(plugin);
    let files = generations(&out, "log");
    assert!(files.len() > 10, "{files:?}");
    let back = read_back("cat", &files);
    let got = lines(&back);
    let stderr = std::fs::read_to_string(out.join("stderr")).unwrap_or_default();
    let first = got.iter().zip(all.iter()).position(|(a, b)| a != b);
    assert!(
        got.len() == all.len() && first.is_none(),
        "{} records in the log, {} fed; first difference at {first:?}\n{stderr}",
        got.len(),
        all.len()
    );
}

/// Records from auditd (standard input) and from an input plugin reach a
/// native plugin with the name of the input each arrived on: audisp-logfile's
/// JSON says it (`ORIGIN`), for every record exactly once.
#[test]
fn json_names_the_input_each_record_arrived_on() {
    let mut d = Dispatcher::new(MAIN_NO_STATS);
    std::fs::create_dir_all(d.out("json")).unwrap();
    d.write_plugin(
        "json",
        &plugin("json", &["--format", "json-records"], "records"),
    );
    d.start(Stdio::piped()).unwrap();
    let from_auditd = sample();
    let from_input = sample_shifted(7);
    let (a, b) = (lines(&from_auditd), lines(&from_input));
    // Standard input stays open (audispd stops at its end) until the end.
    let mut stdin = d.child.as_mut().unwrap().stdin.take().unwrap();
    stdin.write_all(&from_auditd).unwrap();
    let (mut client, start) = InputClient::connect(&d.input_socket(), "kernel", [5; 16]).unwrap();
    assert_eq!(start, 0);
    client
        .send(b.iter().enumerate().map(|(i, r)| (i as u64 + 1, 0, *r)))
        .unwrap();
    client
        .wait_acked(b.len() as u64, Duration::from_secs(60))
        .unwrap();
    let log = d.out("json").join("log");
    let total = a.len() + b.len();
    support::wait_until(Duration::from_secs(60), "every record logged", || {
        std::fs::read(&log).map_or(0, |t| lines(&t).len()) >= total
    });
    let mut w = JsonWriter::new();
    let mut want: Vec<Vec<u8>> = Vec::new();
    for (origin, recs) in [("auditd", &a), ("kernel", &b)] {
        for r in recs.iter() {
            let mut out = Vec::new();
            w.write_record_from(r, Some(origin), &mut out);
            want.push(out);
        }
    }
    want.sort();
    let text = std::fs::read(&log).unwrap();
    let mut got: Vec<Vec<u8>> = lines(&text).iter().map(|l| l.to_vec()).collect();
    got.sort();
    assert_eq!(got.len(), total, "every record once");
    assert!(got == want, "each record with the name of its input");
    let origins: Vec<String> = got
        .iter()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_slice(l).expect("valid JSON");
            v["ORIGIN"].as_str().expect("an ORIGIN key").to_string()
        })
        .collect();
    assert_eq!(origins.iter().filter(|o| *o == "auditd").count(), a.len());
    assert_eq!(origins.iter().filter(|o| *o == "kernel").count(), b.len());
    drop(stdin);
    let _ = d.stop();
}

/// With a filter, a kept event larger than one protocol message (128 KiB)
/// reaches audisp-logfile in several messages sharing the event's ack id,
/// and a batch can end within it. audisp-logfile crashing after such a
/// batch was stored, the dispatcher sends the event again whole: the log
/// once held its first part twice (its position named only the ack id
/// before the event). The crash is deterministic: the plugin runs with a
/// file size limit (`RLIMIT_FSIZE`) inside the event, past the largest
/// first batch (17 messages, `sdk`'s coalescing), so the write that reaches
/// it kills the plugin (`SIGXFSZ`, no handler runs: as abrupt as `kill
/// -9`) after at least one batch within the event was committed. Restarted
/// without the limit, the log holds every record exactly once, in order.
/// The event spans more messages than the dispatcher's window.
#[test]
fn a_filtered_log_crashed_within_an_event_larger_than_a_message_writes_each_record_once() {
    const LIMIT: u64 = 3 << 20;
    let mut event = Vec::new();
    let stamp = "msg=audit(1700000100.000:900):";
    event.extend_from_slice(
        format!("type=SYSCALL {stamp} arch=c000003e syscall=257 success=yes exit=3 items=1200 comm=\"big\" exe=\"/usr/bin/big\"\n").as_bytes(),
    );
    for i in 0..1200 {
        event.extend_from_slice(
            format!(
                "type=PATH {stamp} item={i} name=\"{}\" inode={i} nametype=NORMAL\n",
                "x".repeat(4000)
            )
            .as_bytes(),
        );
    }
    event.extend_from_slice(format!("type=PROCTITLE {stamp} proctitle=626967\n").as_bytes());
    // Past the limit, and more messages than the dispatcher's window of 32
    // (an ack id's messages all wait for its acknowledgement, which comes
    // only once the plugin has the last: before the window counted them as
    // one, delivery stopped there for good).
    assert!(event.len() as u64 > LIMIT + (128 << 10) && event.len() > 34 * (128 << 10));
    let mut data = event.clone();
    data.extend_from_slice(
        b"type=SYSCALL msg=audit(1700000101.000:901): arch=c000003e syscall=257 success=yes exit=3 items=0 comm=\"small\" exe=\"/usr/bin/small\"\n\
          type=PROCTITLE msg=audit(1700000101.000:901): proctitle=736d616c6c\n",
    );
    let mut d = Dispatcher::new("[shutdown]\ntimeout = \"300s\"\n[stats]\ninterval = \"0\"\n");
    let (out, sock) = socket_plugin(&d, "big", "filter = 'type r= SYSCALL'\n");
    let spawn = |limit: Option<u64>| {
        let mut cmd = logfile_on(&sock, &out, &["--name", "big"]);
        if let Some(limit) = limit {
            use std::os::unix::process::CommandExt;
            // SAFETY: only setrlimit, async-signal-safe, between fork and
            // exec.
            unsafe {
                cmd.pre_exec(move || {
                    let fsize = libc::rlimit {
                        rlim_cur: limit,
                        rlim_max: limit,
                    };
                    let core = libc::rlimit {
                        rlim_cur: 0,
                        rlim_max: 0,
                    };
                    if libc::setrlimit(libc::RLIMIT_FSIZE, &fsize) < 0
                        || libc::setrlimit(libc::RLIMIT_CORE, &core) < 0
                    {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        cmd.spawn().expect("audisp-logfile")
    };
    let mut limited = spawn(Some(LIMIT));
    d.start(Stdio::piped()).unwrap();
    let mut stdin = d.child.as_mut().unwrap().stdin.take().unwrap();
    stdin.write_all(&data).unwrap();
    let status = limited.wait().unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        status.signal(),
        Some(libc::SIGXFSZ),
        "{status}: {}",
        std::fs::read_to_string(out.join("stderr")).unwrap_or_default()
    );
    // The crash came after a batch within the event was committed: the
    // position names a size inside it.
    let position = std::fs::read_to_string(out.join("position")).unwrap();
    let size: u64 = position
        .split_whitespace()
        .nth(3)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("a position with a size: {position:?}"));
    assert!(
        size > 0 && size < event.len() as u64,
        "committed within the event: {position:?}"
    );
    let plugin = Killed(spawn(None));
    let want = lines(&data);
    let log = out.join("log");
    support::wait_until(Duration::from_secs(60), "every record logged", || {
        std::fs::read(&log).map_or(0, |t| lines(&t).len()) >= want.len()
    });
    // audispd stops once the plugin acknowledged everything.
    drop(stdin);
    let status = d.wait(Duration::from_secs(300)).unwrap();
    assert!(status.success(), "audispd: {status}\n{}", d.log_tail(40));
    drop(plugin);
    let got = std::fs::read(&log).unwrap();
    let got = lines(&got);
    let first = got.iter().zip(want.iter()).position(|(a, b)| a != b);
    assert!(
        got.len() == want.len() && first.is_none(),
        "{} records in the log, {} fed; first difference at {first:?}",
        got.len(),
        want.len()
    );
}
