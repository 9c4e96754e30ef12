//! audispd under hostile users and unlucky timing (issue 10, items 5, 6, 7
//! and 11), each as the issue describes it:
//!
//! * a program audispd runs as root is checked along its whole path, right
//!   before every start, and executed from the descriptor that was checked:
//!   `nobody` renaming a program over one in a world-writable directory gets
//!   nothing run; an interpreter argument that is a world-writable script is
//!   refused by `--check-config`; an action program is checked again when it
//!   is run;
//! * state files are never written through links, and the state directory
//!   is private;
//! * the input socket refuses peers that are not allowed the moment they
//!   connect, and each user has a budget of its own, so `nobody` cannot lock
//!   root out;
//! * a SIGHUP (or SIGUSR1) sent right after audispd's start never kills it.

mod support;

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use audisp::protocol::CommandStatus;
use audisp::sdk::{Error, InputClient, Plugin};
use nix::sys::signal::Signal;
use support::dispatcher::{sample, Dispatcher, MAIN_NO_STATS};
use support::{wait_until, NOBODY};

/// `nogroup`/`nobody`'s group on every distribution the tests run on.
const NOGROUP: u32 = 65534;

fn chmod(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", p.display()));
}

/// Writes an executable shell script.
fn script(p: &Path, body: &str) {
    std::fs::write(p, format!("#!/bin/sh\n{body}\n")).unwrap();
    chmod(p, 0o755);
}

/// Why a test that acts as `nobody` cannot run here.
fn needs_root() -> Option<String> {
    support::missing_root_or_tools("to act as nobody", &[])
}

/// Runs `f` in a thread whose own credentials are `nobody`'s: the raw
/// system calls change the calling thread only (the C library's wrappers
/// would change every thread of the test process). What it connects or
/// creates carries `nobody`'s credentials.
fn as_nobody<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: plain system calls on this thread's credentials; the
            // thread ends with `f`.
            unsafe {
                assert_eq!(
                    libc::syscall(libc::SYS_setgroups, 0, std::ptr::null::<libc::gid_t>()),
                    0
                );
                assert_eq!(
                    libc::syscall(libc::SYS_setresgid, NOGROUP, NOGROUP, -1i32),
                    0
                );
                assert_eq!(libc::syscall(libc::SYS_setresuid, NOBODY, NOBODY, -1i32), 0);
            }
            f()
        })
        .join()
        .expect("the nobody thread panicked")
    })
}

/// Lets `nobody` reach paths under the test directory (a tempdir is 0700).
fn open_to_nobody(d: &Dispatcher) {
    chmod(d.path(), 0o755);
}

// ---------------------------------------------------------------- item 5

/// The attack: a root-owned plugin program in a directory that
/// became world-writable after audispd loaded its config; `nobody` renames
/// its own program over it; at the next restart of the plugin nothing may
/// run as root.
#[test]
fn a_program_renamed_over_by_nobody_never_runs() {
    if let Some(why) = needs_root() {
        support::skip(&why);
        return;
    }
    let mut d = Dispatcher::new(MAIN_NO_STATS);
    open_to_nobody(&d);
    let bin = d.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    chmod(&bin, 0o755);
    let marker = d.out("marker");
    let prog = bin.join("plugin");
    // A stock plugin that says who it ran as and exits at once, so audispd
    // starts it again and again.
    script(
        &prog,
        &format!("echo \"orig $(/usr/bin/id -u)\" >> {}", marker.display()),
    );
    d.write_plugin(
        "victim",
        &format!(
            "exec = [\"{}\"]\nformat = \"string\"\n[restart]\ninitial = \"50ms\"\nmax = \"100ms\"\n",
            prog.display()
        ),
    );
    d.start(Stdio::piped()).unwrap();
    let read = || std::fs::read_to_string(&marker).unwrap_or_default();
    wait_until(Duration::from_secs(20), "the plugin's first run", || {
        read().contains("orig 0")
    });
    // The admin's mistake, after the load.
    chmod(&bin, 0o777);
    let status = Command::new("/bin/sh")
        .arg("-c")
        .arg(format!(
            "printf '#!/bin/sh\\necho \"evil $(/usr/bin/id -u)\" >> {}\\n' > {b}/.new && chmod 755 {b}/.new && mv -f {b}/.new {b}/plugin",
            marker.display(),
            b = bin.display()
        ))
        .uid(NOBODY)
        .gid(NOGROUP)
        .status()
        .unwrap();
    assert!(status.success(), "nobody could not replace the program");
    let refusal = format!(
        "refusing to start {}: {} lies in directory {}, which is group- and world-writable (mode 0777)",
        prog.display(),
        prog.display(),
        bin.display()
    );
    wait_until(
        Duration::from_secs(20),
        "the restart after the swap",
        || read().contains("evil") || d.log().contains(&refusal),
    );
    assert!(
        !read().contains("evil"),
        "nobody's program ran:\n{}\n--- log\n{}",
        read(),
        d.log_tail(20)
    );
    d.stop().unwrap();
    assert!(!read().contains("evil"));
    // Logged once, not at every retry.
    assert_eq!(d.log().matches(&refusal).count(), 1, "{}", d.log_tail(20));
}

/// `exec = ["/bin/sh", "/tmp/ww/script.sh"]`: the script is as good as the
/// program, and `--check-config` refuses it (and the daemon would not run it).
#[test]
fn check_config_refuses_a_script_argument_others_can_change() {
    let d = Dispatcher::new(MAIN_NO_STATS);
    let ww = d.path().join("ww");
    std::fs::create_dir(&ww).unwrap();
    let s = ww.join("script.sh");
    script(&s, "exec /bin/cat > /dev/null");
    d.write_plugin(
        "p",
        &format!(
            "exec = [\"/bin/sh\", \"{}\"]\nformat = \"string\"\n",
            s.display()
        ),
    );
    let check = || {
        let out = d.command().arg("--check-config").output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    chmod(&ww, 0o755);
    let (ok, out) = check();
    assert!(ok, "{out}");

    chmod(&ww, 0o777);
    let (ok, out) = check();
    assert!(!ok, "{out}");
    assert!(
        out.contains(&format!(
            "plugins.d/p.toml:1: exec program /bin/sh: its argument {} lies in directory {}, which is group- and world-writable (mode 0777)",
            s.display(),
            ww.display()
        )),
        "{out}"
    );

    chmod(&ww, 0o755);
    chmod(&s, 0o666);
    let (ok, out) = check();
    assert!(!ok, "{out}");
    assert!(
        out.contains(&format!(
            "plugins.d/p.toml:1: exec program /bin/sh: its argument {} is group- and world-writable (mode 0666)",
            s.display()
        )),
        "{out}"
    );
}

/// An action program is checked again each time a plugin asks for it: a
/// directory opened to everyone after the load makes the action fail, and
/// the program does not run.
#[test]
fn an_action_program_is_checked_again_when_run() {
    let mut d = Dispatcher::new(MAIN_NO_STATS);
    let bin = d.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    chmod(&bin, 0o755);
    let ran = d.out("ran");
    let prog = bin.join("block");
    script(&prog, &format!("echo \"$@\" >> {}", ran.display()));
    let sock = d.path().join("run/actor.sock");
    d.write_plugin(
        "actor",
        &format!(
            "socket = \"{}\"\nformat = \"native\"\n[restart]\ninitial = \"20ms\"\nmax = \"200ms\"\n[actions.block]\nrun = \"exec\"\nprogram = \"{}\"\n",
            sock.display(),
            prog.display()
        ),
    );
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut sent = false;
        let _ = Plugin::new("actor").listen(&sock).run(|_batch, ctx| {
            if !sent {
                sent = true;
                let first = ctx.command("block", &["192.0.2.1"])?;
                let _ = tx.send(first);
            }
            Ok(())
        });
    });
    d.start(Stdio::piped()).unwrap();
    chmod(&bin, 0o777);
    let mut stdin = d.child.as_mut().unwrap().stdin.take().unwrap();
    stdin.write_all(&sample()).unwrap();
    let reply = rx
        .recv_timeout(Duration::from_secs(20))
        .unwrap_or_else(|_| panic!("the actor never got a batch\n{}", d.log_tail(40)));
    assert_eq!(reply.status, CommandStatus::Failed, "{reply:?}");
    assert!(
        reply.message.contains(&format!(
            "{} lies in directory {}, which is group- and world-writable (mode 0777)",
            prog.display(),
            bin.display()
        )),
        "{reply:?}"
    );
    drop(stdin);
    d.wait(Duration::from_secs(30)).unwrap();
    assert!(!ran.exists(), "the action program ran");
}

// ---------------------------------------------------------------- item 6

/// A cursor file that is a link to another file: audispd refuses to start
/// rather than overwrite that file, and says which link to remove.
#[test]
fn a_cursor_link_is_refused_not_followed() {
    let mut d = Dispatcher::new(MAIN_NO_STATS);
    let victim = d.path().join("victim");
    std::fs::write(&victim, "precious\n").unwrap();
    let cursors = d.path().join("state/cursors");
    std::fs::create_dir_all(&cursors).unwrap();
    let link = cursors.join("p.cursor");
    std::os::unix::fs::symlink(&victim, &link).unwrap();
    d.write_plugin("p", "exec = [\"/bin/cat\"]\nformat = \"string\"\n");
    d.spawn(d.command(), Stdio::null()).unwrap();
    let status = d.wait(Duration::from_secs(30)).unwrap();
    assert!(!status.success(), "{}", d.log_tail(20));
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");
    assert!(
        d.log().contains(&format!(
            "{} is a symbolic link; state files are never written through links",
            link.display()
        )),
        "{}",
        d.log_tail(20)
    );
}

/// Files replaced whole (the ingest checkpoint, the state report) are
/// written to a temporary name first: a link left there is removed, never
/// written through. The state directory is made private.
#[test]
fn replaced_state_files_never_write_through_links() {
    let mut d = Dispatcher::new(MAIN_NO_STATS);
    let state = d.path().join("state");
    chmod(&state, 0o755);
    let victims: Vec<PathBuf> = ["checkpoint-victim", "report-victim"]
        .iter()
        .map(|n| d.path().join(n))
        .collect();
    for v in &victims {
        std::fs::write(v, "precious\n").unwrap();
    }
    std::os::unix::fs::symlink(&victims[0], state.join("ingest.tmp")).unwrap();
    std::os::unix::fs::symlink(&victims[1], d.path().join("run/audispd.tmp")).unwrap();
    d.write_plugin("p", "exec = [\"/bin/cat\"]\nformat = \"string\"\n");
    d.start(Stdio::piped()).unwrap();
    let mut stdin = d.child.as_mut().unwrap().stdin.take().unwrap();
    stdin.write_all(&sample()).unwrap();
    let report = d.state();
    assert!(report.contains("plugin p = "), "{report}");
    drop(stdin);
    let status = d.wait(Duration::from_secs(30)).unwrap();
    assert!(status.success(), "{}", d.log_tail(20));
    for v in &victims {
        assert_eq!(
            std::fs::read_to_string(v).unwrap(),
            "precious\n",
            "{}",
            v.display()
        );
    }
    assert!(std::fs::symlink_metadata(state.join("ingest.json"))
        .unwrap()
        .is_file());
    let mode = std::fs::metadata(&state).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o700, "state directory mode {mode:04o}");
}

/// A state directory that belongs to someone else is refused, not taken
/// over.
#[test]
fn someone_elses_state_directory_is_refused() {
    if let Some(why) = needs_root() {
        support::skip(&why);
        return;
    }
    let mut d = Dispatcher::new(MAIN_NO_STATS);
    let state = d.path().join("state");
    std::os::unix::fs::chown(&state, Some(NOBODY), Some(NOGROUP)).unwrap();
    d.spawn(d.command(), Stdio::null()).unwrap();
    let status = d.wait(Duration::from_secs(30)).unwrap();
    assert!(!status.success());
    assert!(
        d.log().contains(&format!(
            "{} belongs to uid {NOBODY}, not to uid 0 which runs this program",
            state.display()
        )),
        "{}",
        d.log_tail(20)
    );
}

// ---------------------------------------------------------------- item 7

/// Connects to the input socket without ever saying HELLO.
fn silent_connection(path: &Path) -> Option<std::os::fd::OwnedFd> {
    audisp::uds::connect(path, nix::sys::socket::SockType::SeqPacket).ok()
}

/// Whether the dispatcher closed `fd` (or answered it, which it only does
/// with a REJECT before closing) within `limit`.
fn closed_within(fd: &std::os::fd::OwnedFd, limit: Duration) -> bool {
    let ev = audisp::uds::wait(
        fd,
        nix::poll::PollFlags::POLLIN | nix::poll::PollFlags::POLLHUP,
        limit,
    )
    .unwrap_or(nix::poll::PollFlags::POLLHUP);
    !ev.is_empty()
}

/// Root's input gets in and its records are acknowledged.
fn root_delivers(sock: &Path, name: &str) {
    let (mut client, have) = InputClient::connect(sock, name, [7; 16])
        .unwrap_or_else(|e| panic!("root's input could not connect: {e}"));
    let text = b"type=USER_START msg=audit(1700000000.001:42): pid=1 uid=0 msg='x'".as_slice();
    client.send([(have + 1, 0, text)]).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while client.acked() < have + 1 {
        assert!(
            Instant::now() < deadline,
            "root's record was not acknowledged"
        );
        client.wait_ack(Duration::from_secs(1)).unwrap();
    }
}

/// The case: a world-connectable socket (`mode = "0666"`) and
/// `nobody`, who is not allowed, opening 100 connections that never say
/// HELLO. Each is refused at once; root's input gets in meanwhile.
#[test]
fn a_user_not_allowed_is_refused_at_once_and_holds_no_slot() {
    if let Some(why) = needs_root() {
        support::skip(&why);
        return;
    }
    let mut d = Dispatcher::new(&format!("{MAIN_NO_STATS}[input.socket]\nmode = \"0666\"\n"));
    open_to_nobody(&d);
    d.start(Stdio::piped()).unwrap();
    let sock = d.input_socket();
    let held: Vec<_> = as_nobody(|| (0..100).filter_map(|_| silent_connection(&sock)).collect());
    assert_eq!(held.len(), 100, "nobody could not even connect");
    root_delivers(&sock, "bridge");
    let still_open = held
        .iter()
        .filter(|fd| !closed_within(fd, Duration::from_secs(2)))
        .count();
    assert_eq!(still_open, 0, "connections of a user not allowed were kept");
    d.wait_log("is not allowed", Duration::from_secs(5));
    drop(held);
    d.stop().unwrap();
}

/// An allowed user holds at most its own budget: `nobody`, allowed, opens
/// 20 inputs that say HELLO and then stay idle (as a quiet input may); 16
/// are served, the rest refused, and root's input still gets in. A
/// connection that never says HELLO is closed after a few seconds.
#[test]
fn each_user_has_its_own_connection_budget() {
    if let Some(why) = needs_root() {
        support::skip(&why);
        return;
    }
    let mut d = Dispatcher::new(&format!(
        "{MAIN_NO_STATS}[input.socket]\nmode = \"0666\"\nallow_users = [\"nobody\"]\n"
    ));
    open_to_nobody(&d);
    d.start(Stdio::piped()).unwrap();
    let sock = d.input_socket();
    let results: Vec<Result<(InputClient, u64), Error>> = as_nobody(|| {
        (0..20)
            .map(|i| InputClient::connect(&sock, &format!("idle-{i}"), [i as u8 + 1; 16]))
            .collect()
    });
    let served = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(served, audisp::engine::inputs::CONNECTIONS_PER_USER);
    for r in &results {
        if let Err(e) = r {
            assert!(
                matches!(e, Error::Rejected(why) if why.contains("already holds 16 connections")),
                "{e}"
            );
        }
    }
    d.wait_log("already holds 16 connections", Duration::from_secs(5));
    root_delivers(&sock, "bridge");
    // Root's own silent connection: closed once HELLO is overdue.
    let silent = silent_connection(&sock).expect("connect");
    let start = Instant::now();
    assert!(closed_within(&silent, Duration::from_secs(8)));
    assert!(
        start.elapsed() >= Duration::from_secs(4),
        "closed too early"
    );
    d.wait_log("sent no HELLO within 5s", Duration::from_secs(5));
    drop(results);
    d.stop().unwrap();
}

// ---------------------------------------------------------------- item 11

/// What `/proc/PID/status` says on `key` (`SigBlk`, `Threads`…).
fn proc_status(pid: i32, key: &str) -> String {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .unwrap_or_else(|| panic!("no {key} in /proc/{pid}/status"))
        .trim()
        .to_string()
}

/// Whether the signal mask `hex` (from `/proc/PID/status`) holds `sig`.
fn mask_has(hex: &str, sig: Signal) -> bool {
    u64::from_str_radix(hex, 16).unwrap() & (1u64 << (sig as u64 - 1)) != 0
}

/// The descriptors open in `pid`.
fn open_fds(pid: i32) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// Lets the stopped tracee `pid` run to its next system-call stop.
fn next_syscall_stop(pid: i32) {
    // SAFETY: plain ptrace and waitpid calls on our own stopped tracee.
    unsafe {
        assert_eq!(libc::ptrace(libc::PTRACE_SYSCALL, pid, 0, 0), 0);
        let mut status = 0;
        assert_eq!(libc::waitpid(pid, &mut status, libc::__WALL), pid);
        assert!(
            libc::WIFSTOPPED(status),
            "audispd ended before it blocked its signals: status {status:#x}"
        );
    }
}

/// The earliest moment a signal can be survived: audispd is traced from
/// its `exec` on, system call by system call, until the kernel shows
/// SIGHUP, SIGTERM, SIGINT and SIGUSR1 blocked. At that moment it must not
/// have done anything of its own yet (no descriptor beyond those `exec`
/// gave it, one thread: before, it read its config and opened its
/// notification socket first). SIGHUP and SIGUSR1 are sent right there;
/// released, audispd starts, reloads, writes its state report and stops
/// cleanly.
#[test]
fn a_signal_right_after_the_start_never_kills_audispd() {
    let mut d = Dispatcher::new(MAIN_NO_STATS);
    d.write_plugin("p", "exec = [\"/bin/cat\"]\nformat = \"string\"\n");
    let mut cmd = d.command();
    // SAFETY: ptrace(PTRACE_TRACEME) is a plain system call.
    unsafe {
        cmd.pre_exec(|| {
            if libc::ptrace(libc::PTRACE_TRACEME, 0, 0, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    d.spawn(cmd, Stdio::piped()).unwrap();
    let pid = d.pid() as i32;
    // SAFETY: waitpid and ptrace on our own traced child, stopped by the
    // SIGTRAP of its exec.
    unsafe {
        let mut status = 0;
        assert_eq!(libc::waitpid(pid, &mut status, libc::__WALL), pid);
        assert!(libc::WIFSTOPPED(status), "status {status:#x}");
        let opts = libc::PTRACE_O_TRACESYSGOOD | libc::PTRACE_O_EXITKILL;
        assert_eq!(libc::ptrace(libc::PTRACE_SETOPTIONS, pid, 0, opts), 0);
    }
    let at_exec = open_fds(pid);
    let mut stops = 0;
    let handled = [
        Signal::SIGHUP,
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGUSR1,
    ];
    while !handled
        .iter()
        .all(|&s| mask_has(&proc_status(pid, "SigBlk"), s))
    {
        stops += 1;
        assert!(stops < 100_000, "audispd never blocked its signals");
        next_syscall_stop(pid);
    }
    assert_eq!(
        open_fds(pid),
        at_exec,
        "audispd opened descriptors before it blocked its signals"
    );
    assert_eq!(proc_status(pid, "Threads"), "1");
    d.signal(Signal::SIGHUP);
    d.signal(Signal::SIGUSR1);
    let pending = proc_status(pid, "ShdPnd");
    assert!(mask_has(&pending, Signal::SIGHUP) && mask_has(&pending, Signal::SIGUSR1));
    // SAFETY: detaching our stopped tracee; it runs on untraced.
    assert_eq!(unsafe { libc::ptrace(libc::PTRACE_DETACH, pid, 0, 0) }, 0);
    d.notify
        .wait_for("RELOADING=1", Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("{e}\n{}", d.log_tail(10)));
    d.notify
        .wait_for("READY=1", Duration::from_secs(10))
        .unwrap();
    let report = d.path().join("run/audispd.state");
    wait_until(Duration::from_secs(10), "the state report", || {
        report.exists()
    });
    assert!(d.running());
    let status = d.stop().unwrap();
    assert!(status.success(), "{status}\n{}", d.log_tail(10));
}
