//! The option files of audisp-remote and audisp-receive (and, for the
//! shipped examples, audisp-statsd's and audisp-alert's), through the real
//! programs: mistakes are all reported at their lines before anything
//! starts, untrusted files are refused, flags override the file, the shipped
//! examples are good, and a file alone configures a working transfer (every
//! record arriving once) and the failure actions.

mod support;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use audisp::remote::wire::{self, types};
use support::dispatcher::{lines, sample, Dispatcher, NotifyCapture, MAIN_NO_STATS};
use support::wait_until;

const REMOTE: &str = env!("CARGO_BIN_EXE_audisp-remote");
const RECEIVE: &str = env!("CARGO_BIN_EXE_audisp-receive");
const STATSD: &str = env!("CARGO_BIN_EXE_audisp-statsd");
const ALERT: &str = env!("CARGO_BIN_EXE_audisp-alert");

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Writes an option file as an admin would (mode 0644).
fn write_config(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644)).unwrap();
}

/// Runs `program` with `args` to its end (killed after 30 s: these runs
/// must stop by themselves).
fn run(program: &str, args: &[&str], env: &[(&str, &Path)]) -> Output {
    let mut cmd = Command::new(program);
    cmd.args(args)
        .env_remove("AUDISP_REMOTE_CONFIG")
        .env_remove("AUDISP_RECEIVE_CONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{program} {args:?} still running after 30 s");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    child.wait_with_output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Asserts the program refused to start (status 2) and named every
/// `file:line` of `lines`, and no other line of `file`.
fn assert_refused_at(out: &Output, file: &Path, lines: &[usize], max_line: usize) {
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    for l in 1..=max_line {
        let at = format!("{}:{l}: ", file.display());
        assert_eq!(
            err.contains(&at),
            lines.contains(&l),
            "line {l} (want mistakes at {lines:?}):\n{err}"
        );
    }
}

#[test]
fn a_broken_file_is_reported_line_by_line_before_anything_starts() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();

    let file = dir.path().join("remote.toml");
    write_config(
        &file,
        &format!(
            "server = \"collector\"\nspool_max = \"lots\"\nfast = \"yes\"\ncolour = \"blue\"\n\
             spool_dir = \"{d}/spool\"\n[failure]\ndisk_full = \"panic\"\nnetwork_failure = \"log\"\n"
        ),
    );
    let out = run(REMOTE, &["--config", file.to_str().unwrap()], &[]);
    assert_refused_at(&out, &file, &[1, 2, 3, 4, 7], 8);
    let err = text(&out.stderr);
    for want in [
        "server = \"collector\" is not HOST:PORT",
        "spool_max = \"lots\" is not a size",
        "fast = \"yes\" must be true or false",
        "unknown key \"colour\"",
        "disk_full = \"panic\" is not a failure action; use \"ignore\", \"log\"",
    ] {
        assert!(err.contains(want), "{want:?} not in\n{err}");
    }
    assert!(!dir.path().join("spool").exists(), "the spool was created");

    let file = dir.path().join("receive.toml");
    write_config(
        &file,
        &format!(
            "listen = [\"127.0.0.1\"]\nlog_keep = -1\nstate_dir = \"{d}/state\"\n\
             idle_timeout = \"soon\"\n[tls]\ncert = 5\nkey = \"/k\"\n"
        ),
    );
    let out = run(RECEIVE, &[], &[("AUDISP_RECEIVE_CONFIG", &file)]);
    assert_refused_at(&out, &file, &[1, 2, 4, 6], 7);
    let err = text(&out.stderr);
    for want in [
        "listen: \"127.0.0.1\" is not ADDR:PORT",
        "log_keep = -1 must be a whole number, 0 or more",
        "idle_timeout = \"soon\" is not a duration",
        "cert = 5 must be a string in quotes",
    ] {
        assert!(err.contains(want), "{want:?} not in\n{err}");
    }
    assert!(!dir.path().join("state").exists(), "the store was created");
}

#[test]
fn untrusted_or_missing_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("remote.toml");
    write_config(&file, "server = \"127.0.0.1:60\"\n");
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o664)).unwrap();
    for out in [
        run(
            REMOTE,
            &["--check-config"],
            &[("AUDISP_REMOTE_CONFIG", &file)],
        ),
        run(
            RECEIVE,
            &["--check-config", "--config", file.to_str().unwrap()],
            &[],
        ),
    ] {
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(err.contains("is group-writable (mode 0664)"), "{err}");
        assert!(
            err.contains(&format!("fix: chmod 0644 {}", file.display())),
            "{err}"
        );
    }
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let ok = run(
        REMOTE,
        &["--check-config"],
        &[("AUDISP_REMOTE_CONFIG", &file)],
    );
    assert!(ok.status.success(), "{}", text(&ok.stderr));

    let missing = dir.path().join("missing.toml");
    let out = run(
        REMOTE,
        &["--check-config"],
        &[("AUDISP_REMOTE_CONFIG", &missing)],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains(
            "does not exist; create it or correct the path given with $AUDISP_REMOTE_CONFIG"
        ),
        "{}",
        text(&out.stderr)
    );
}

/// `--no-config` reads no file at all (what tests and one-off runs want on
/// a host that has one), and cannot be combined with `--config`.
#[test]
fn no_config_reads_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("broken.toml");
    write_config(&broken, "no_such_key = 1\n");
    let out = run(
        RECEIVE,
        &["--check-config", "--no-config", "--listen", "127.0.0.1:0"],
        &[("AUDISP_RECEIVE_CONFIG", &broken)],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = run(
        REMOTE,
        &["--check-config", "--no-config"],
        &[("AUDISP_REMOTE_CONFIG", &broken)],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("no server: give --server HOST:PORT"),
        "{}",
        text(&out.stderr)
    );
    let both = ["--check-config", "--no-config", "--config", "/etc/x.toml"];
    for program in [REMOTE, RECEIVE] {
        let out = run(program, &both, &[]);
        assert_eq!(out.status.code(), Some(2));
        assert!(text(&out.stderr).contains("exclude each other"));
    }
}

/// The keys a program's `--help` flags correspond to (`--tls-cert` is
/// `cert` in `[tls]`, `--on-disk-full` is `disk_full` in `[failure]`).
fn keys_of_flags(program: &str) -> Vec<String> {
    let help = text(&run(program, &["--help"], &[]).stdout);
    let mut keys: Vec<String> = help
        .split("--")
        .skip(1)
        .map(|s| {
            s.split(|c: char| !(c.is_ascii_lowercase() || c == '-'))
                .next()
                .unwrap_or("")
        })
        .filter(|f| !matches!(*f, "config" | "no-config" | "check-config"))
        .map(|f| {
            let f = f.strip_prefix("tls-").unwrap_or(f);
            let f = f.strip_prefix("on-").unwrap_or(f);
            let f = f.strip_prefix("no-").unwrap_or(f);
            f.replace('-', "_")
        })
        .collect();
    keys.sort();
    keys.dedup();
    keys
}

/// The shipped examples are good as shipped and with every setting
/// uncommented, and show a key for every flag.
#[test]
fn shipped_examples_check_cleanly_and_cover_every_flag() {
    let dir = tempfile::tempdir().unwrap();
    for (program, name, flags) in [
        (REMOTE, "audisp-remote.toml", 15),
        (RECEIVE, "audisp-receive.toml", 15),
        (STATSD, "audisp-statsd.toml", 6),
        (ALERT, "audisp-alert.toml", 4),
    ] {
        let shipped = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("packaging")
                .join(name),
        )
        .unwrap();
        let mut uncommented = String::new();
        let mut settings = Vec::new();
        for line in shipped.lines() {
            let setting = line
                .strip_prefix('#')
                .unwrap_or(line)
                .split_once(" = ")
                .map(|(k, _)| k)
                .filter(|k| {
                    !k.is_empty() && k.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
                });
            if let Some(k) = setting {
                settings.push(k.to_string());
            }
            uncommented.push_str(if setting.is_some() {
                line.trim_start_matches('#')
            } else {
                line
            });
            uncommented.push('\n');
        }
        let keys = keys_of_flags(program);
        assert!(keys.len() >= flags, "flags of {program} --help: {keys:?}");
        for key in keys {
            assert!(
                settings.contains(&key),
                "{name} does not show {key}: {settings:?}"
            );
        }
        for (variant, body) in [("shipped", &shipped), ("uncommented", &uncommented)] {
            let file = dir.path().join(format!("{variant}-{name}"));
            write_config(&file, body);
            let out = run(
                program,
                &["--check-config", "--config", file.to_str().unwrap()],
                &[],
            );
            assert!(
                out.status.success() && out.stderr.is_empty(),
                "{variant} {name}: {}\n{}",
                out.status,
                text(&out.stderr)
            );
            assert!(text(&out.stdout).contains("configuration ok"));
        }
    }
}

/// An audisp-receive started with `args` (and `env`), up once READY=1.
fn start_receiver(dir: &Path, args: &[&str], env: &[(&str, &Path)]) -> Child {
    let notify_path = dir.join("notify.sock");
    let _ = std::fs::remove_file(&notify_path);
    let mut notify = NotifyCapture::bind(&notify_path);
    let err = std::fs::File::create(dir.join("receive.err")).unwrap();
    let mut cmd = Command::new(RECEIVE);
    cmd.args(args)
        .env_remove("AUDISP_RECEIVE_CONFIG")
        .env("NOTIFY_SOCKET", &notify_path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(err);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let child = cmd.spawn().unwrap();
    notify
        .wait_for("READY=1", Duration::from_secs(20))
        .unwrap_or_else(|e| {
            panic!(
                "{e}\n{}",
                std::fs::read_to_string(dir.join("receive.err")).unwrap_or_default()
            )
        });
    child
}

/// SIGTERM and wait; the program must exit cleanly.
fn stop(mut c: Child, what: &str) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(c.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let st = c.wait().unwrap();
    assert!(st.success(), "{what} exit: {st}");
}

fn log_lines(path: &Path) -> Vec<Vec<u8>> {
    if path.exists() {
        audisp::remote::logfile::read_lines(path).unwrap()
    } else {
        Vec::new()
    }
}

/// One managed-protocol record on `s`; the reply's type.
fn send_record(s: &mut TcpStream, seq: u32, text: &[u8]) -> u32 {
    let mut m = Vec::new();
    wire::encode(&mut m, types::MESSAGE, seq, text).unwrap();
    s.write_all(&m).unwrap();
    let mut h = [0u8; 16];
    s.read_exact(&mut h).unwrap();
    let hdr = wire::Header::parse(&h).unwrap();
    let mut p = vec![0u8; hdr.len as usize];
    s.read_exact(&mut p).unwrap();
    hdr.mtype
}

#[test]
fn flags_override_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let (file_port, flag_port) = (free_port(), free_port());
    let file = dir.path().join("receive.toml");
    let log = dir.path().join("file.log");
    write_config(
        &file,
        &format!(
            "listen = [\"127.0.0.1:{file_port}\"]\nstate_dir = \"{}\"\nlog = \"{}\"\nmax_per_addr = 1\n",
            dir.path().join("state").display(),
            log.display()
        ),
    );
    let flag_addr = format!("127.0.0.1:{flag_port}");
    let r = start_receiver(
        dir.path(),
        &[
            "--config",
            file.to_str().unwrap(),
            "--listen",
            &flag_addr,
            "--max-per-addr",
            "2",
        ],
        &[],
    );
    // --listen replaced the file's list.
    assert!(TcpStream::connect(("127.0.0.1", file_port)).is_err());
    // --max-per-addr 2 beat the file's 1: two connections from one address.
    let mut a = TcpStream::connect(&flag_addr).unwrap();
    let mut b = TcpStream::connect(&flag_addr).unwrap();
    for s in [&a, &b] {
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    }
    let one = b"type=USER msg=audit(1700000000.001:1): one";
    let two = b"type=USER msg=audit(1700000000.002:2): two";
    assert_eq!(send_record(&mut a, 2, one), types::ACK);
    assert_eq!(send_record(&mut b, 2, two), types::ACK);
    // The file's log path, which no flag overrode, holds both, once.
    wait_until(Duration::from_secs(20), "both records in the log", || {
        log_lines(&log).len() >= 2
    });
    stop(r, "audisp-receive");
    assert_eq!(log_lines(&log), [one.to_vec(), two.to_vec()]);
}

/// audisp-receive and audisp-remote configured by their files alone (only
/// the file's path given) move the record sample from one audispd to the
/// aggregator's log, every record once and in order.
#[test]
fn files_alone_configure_a_transfer_that_delivers_every_record_once() {
    let port = free_port();
    let agg = tempfile::tempdir().unwrap();
    let log = agg.path().join("remote.log");
    let receive_conf = agg.path().join("receive.toml");
    write_config(
        &receive_conf,
        &format!(
            "listen = [\"127.0.0.1:{port}\"]\nstate_dir = \"{}\"\nlog = \"{}\"\nlog_max_size = 0\nidle_timeout = \"1m\"\n",
            agg.path().join("state").display(),
            log.display()
        ),
    );
    let r = start_receiver(
        agg.path(),
        &["--config", receive_conf.to_str().unwrap()],
        &[],
    );

    let mut d = Dispatcher::new(MAIN_NO_STATS);
    d.write_plugin(
        "remote",
        "socket = \"{dir}/run/remote.sock\"\nformat = \"native\"\n[restart]\ninitial = \"20ms\"\nmax = \"200ms\"\n",
    );
    d.start(Stdio::piped()).unwrap();
    let remote_conf = d.path().join("remote.toml");
    write_config(
        &remote_conf,
        &format!(
            "server = \"127.0.0.1:{port}\"\nspool_dir = \"{dir}/spool\"\nlisten = \"{dir}/run/remote.sock\"\n\
             spool_max = \"64M\"\nwindow = \"1M\"\nretry_max = \"1s\"\nheartbeat = \"20s\"\n",
            dir = d.path().display()
        ),
    );
    let sender_err = std::fs::File::create(d.path().join("remote.err")).unwrap();
    let s = Command::new(REMOTE)
        .env("AUDISP_REMOTE_CONFIG", &remote_conf)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(sender_err)
        .spawn()
        .unwrap();

    let data = sample();
    let all = lines(&data);
    // Kept open until the end: its end would stop audispd.
    let mut stdin = d.child.as_mut().unwrap().stdin.take().unwrap();
    stdin.write_all(&data).unwrap();
    let context = || {
        format!(
            "--- sender ---\n{}\n--- receiver ---\n{}\n--- audispd ---\n{}",
            std::fs::read_to_string(d.path().join("remote.err")).unwrap_or_default(),
            std::fs::read_to_string(agg.path().join("receive.err")).unwrap_or_default(),
            d.log_tail(30)
        )
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    while log_lines(&log).len() < all.len() {
        assert!(
            Instant::now() < deadline,
            "{} of {} records at the aggregator\n{}",
            log_lines(&log).len(),
            all.len(),
            context()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    stop(s, "audisp-remote");
    stop(r, "audisp-receive");
    drop(stdin);
    let _ = d.stop();
    let got = log_lines(&log);
    let first_difference = got.iter().zip(&all).position(|(a, b)| a != b);
    assert!(
        got.len() == all.len() && first_difference.is_none(),
        "got {} records, sent {}; first difference at {first_difference:?}",
        got.len(),
        all.len()
    );
}

/// `[failure] network_failure = "dispatcher:NAME"` in the file makes an
/// unreachable aggregator ask audispd for the plugin's action NAME.
#[test]
fn the_files_failure_action_is_asked_of_the_dispatcher() {
    let mut d = Dispatcher::new(MAIN_NO_STATS);
    d.write_plugin(
        "remote",
        "socket = \"{dir}/run/remote.sock\"\nformat = \"native\"\n[restart]\ninitial = \"20ms\"\nmax = \"200ms\"\n[actions.net-down]\nrun = \"log\"\n",
    );
    d.start(Stdio::piped()).unwrap();
    // Nothing listens on this port: the first attempt fails.
    let port = free_port();
    let conf = d.path().join("remote.toml");
    write_config(
        &conf,
        &format!(
            "server = \"127.0.0.1:{port}\"\nspool_dir = \"{dir}/spool\"\nlisten = \"{dir}/run/remote.sock\"\n\
             retry_max = \"1s\"\n\n[failure]\nnetwork_failure = \"dispatcher:net-down\"\n",
            dir = d.path().display()
        ),
    );
    let err = std::fs::File::create(d.path().join("remote.err")).unwrap();
    let s = Command::new(REMOTE)
        .arg("--config")
        .arg(&conf)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(err)
        .spawn()
        .unwrap();
    let mut stdin = d.child.as_mut().unwrap().stdin.take().unwrap();
    let err_path = d.path().join("remote.err");
    let sender_log = || std::fs::read_to_string(&err_path).unwrap_or_default();
    stdin
        .write_all(b"type=USER msg=audit(1700000000.001:1): first\n")
        .unwrap();
    wait_until(Duration::from_secs(20), "the network failure", || {
        sender_log().contains("network failure")
    });
    // The request may travel with the next batch.
    stdin
        .write_all(b"type=USER msg=audit(1700000000.002:2): second\n")
        .unwrap();
    d.wait_log(
        "plugin remote requests action net-down",
        Duration::from_secs(20),
    );
    drop(stdin);
    stop(s, "audisp-remote");
    let _ = d.stop();
}
