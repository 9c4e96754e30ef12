//! Starting and stopping the programs the dispatcher runs itself: plugins
//! configured with `exec` (stock auditd plugins, or native ones on hosts
//! without systemd) and the programs of `exec` actions.
//!
//! Plugins are started exactly as auditd starts them: one end of an `AF_UNIX`
//! socket pair on standard input, the configured arguments and an empty
//! environment, every signal disposition reset to its default and the signal
//! mask cleared (a dispatcher started by auditd inherits every signal
//! ignored, and a plugin must not).
//!
//! What runs as root is checked right before each start, not only when the
//! configuration was read: the program (and a script's interpreter), every
//! directory leading to it and every argument naming an existing file, by the
//! rule of [`crate::trust`]. The file that passed is then executed through
//! its open descriptor (`execveat` with `AT_EMPTY_PATH`), so a program
//! renamed over between check and start is never run.

use std::collections::BTreeMap;
use std::ffi::{CString, OsString};
use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use nix::sys::signal::{self, SigSet, SigmaskHow, Signal};
use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};

/// A running child with a pidfd that becomes readable when it exits.
#[derive(Debug)]
pub struct Running {
    child: Child,
    pidfd: OwnedFd,
    /// A plugin's end of its standard-input socket, held by the dispatcher
    /// too (see [`Running::take_stdin`]).
    stdin: Option<OwnedFd>,
}

impl Running {
    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The plugin's end of its standard-input socket, which the dispatcher
    /// holds too: what the plugin has not read stays there, countable, even
    /// after it exits. Dropping it leaves the socket to the plugin alone.
    pub fn take_stdin(&mut self) -> Option<OwnedFd> {
        self.stdin.take()
    }

    /// The descriptor to poll: readable once the child has exited.
    pub fn pidfd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.pidfd.as_fd()
    }

    /// Reaps the child if it has exited.
    pub fn try_wait(&mut self) -> io::Result<Option<std::process::ExitStatus>> {
        self.child.try_wait()
    }

    /// Stops the child: waits `grace` for it to exit by itself (its input
    /// was closed before this is called), then SIGTERM, then SIGKILL.
    pub fn stop(self, grace: Duration) -> io::Result<std::process::ExitStatus> {
        self.stop_with(grace, &mut || {})
    }

    /// [`Running::stop`], calling `tick` at least twice a second while it
    /// waits (a sender beats its heartbeat there).
    pub fn stop_with(
        mut self,
        grace: Duration,
        tick: &mut dyn FnMut(),
    ) -> io::Result<std::process::ExitStatus> {
        if let Some(s) = wait_for(&mut self, grace, tick)? {
            return Ok(s);
        }
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = signal::kill(pid, Signal::SIGTERM);
        if let Some(s) = wait_for(&mut self, grace, tick)? {
            return Ok(s);
        }
        self.child.kill()?;
        self.child.wait()
    }
}

fn wait_for(
    r: &mut Running,
    limit: Duration,
    tick: &mut dyn FnMut(),
) -> io::Result<Option<std::process::ExitStatus>> {
    let deadline = Instant::now() + limit;
    loop {
        tick();
        if let Some(s) = r.child.try_wait()? {
            return Ok(Some(s));
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(None);
        }
        let mut fds = [nix::poll::PollFd::new(
            r.pidfd.as_fd(),
            nix::poll::PollFlags::POLLIN,
        )];
        let ms = left.min(Duration::from_millis(500)).as_millis() as i32;
        match nix::poll::poll(
            &mut fds,
            nix::poll::PollTimeout::try_from(ms).unwrap_or(nix::poll::PollTimeout::MAX),
        ) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
}

/// What kind of socket a plugin gets on its standard input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StdinSocket {
    /// `SOCK_STREAM`, as auditd gives its plugins.
    Stream,
    /// `SOCK_SEQPACKET`, for plugins speaking the native protocol.
    Seqpacket,
}

/// Starts `argv` with a socket pair on standard input and returns the child
/// and the dispatcher's end of the pair. Standard output and error are the
/// dispatcher's own (under systemd: its journal; under auditd: /dev/null).
pub fn spawn_plugin(argv: &[OsString], kind: StdinSocket) -> io::Result<(Running, OwnedFd)> {
    let mut cmd = checked_command(argv)?;
    let ty = match kind {
        StdinSocket::Stream => SockType::Stream,
        StdinSocket::Seqpacket => SockType::SeqPacket,
    };
    let (ours, theirs) = socketpair(AddressFamily::Unix, ty, None, SockFlag::SOCK_CLOEXEC)?;
    let held = theirs.try_clone()?;
    cmd.stdin(Stdio::from(theirs));
    let mut running = start(cmd, argv)?;
    running.stdin = Some(held);
    Ok((running, ours))
}

/// Starts an action program with its arguments, an empty environment and
/// standard input from /dev/null.
pub fn spawn_action(program: &std::path::Path, args: &[String]) -> io::Result<Running> {
    let argv: Vec<OsString> = std::iter::once(program.as_os_str().to_owned())
        .chain(args.iter().map(OsString::from))
        .collect();
    let mut cmd = checked_command(&argv)?;
    cmd.stdin(Stdio::null());
    start(cmd, &argv)
}

fn start(mut cmd: Command, argv: &[OsString]) -> io::Result<Running> {
    let child = cmd.spawn().map_err(|e| {
        let program = argv
            .first()
            .map(|p| p.to_string_lossy())
            .unwrap_or_default();
        io::Error::new(e.kind(), format!("cannot start {program}: {e}"))
    })?;
    let pidfd = pidfd_open(child.id())?;
    Ok(Running {
        child,
        pidfd,
        stdin: None,
    })
}

/// A command that, once spawned, resets signals and executes the file
/// [`crate::trust::prepare_exec`] checked and opened for `argv` — or fails
/// to spawn with the reason it may not run.
fn checked_command(argv: &[OsString]) -> io::Result<Command> {
    let Some(program) = argv.first() else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "empty exec line",
        ));
    };
    let plan = match crate::trust::prepare_exec(argv, "the dispatcher") {
        Ok(plan) => {
            lock_refused().remove(program);
            plan
        }
        Err(why) => {
            let mut refused = lock_refused();
            if refused.get(program) != Some(&why) {
                tracing::error!("refusing to start {}: {why}", program.to_string_lossy());
                refused.insert(program.clone(), why.clone());
            }
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!("refusing to start: {why}"),
            ));
        }
    };
    let mut cmd = Command::new(program);
    cmd.env_clear();
    reset_signals_on_exec(&mut cmd);
    let file = plan.file;
    let args = CArgs::new(plan.argv);
    // SAFETY: between fork and exec the closure only makes the execveat
    // system call, on arrays built before the fork.
    unsafe {
        cmd.pre_exec(move || {
            let envp: [*const libc::c_char; 1] = [std::ptr::null()];
            libc::syscall(
                libc::SYS_execveat,
                file.as_raw_fd(),
                c"".as_ptr(),
                args.as_ptr(),
                envp.as_ptr(),
                libc::AT_EMPTY_PATH,
            );
            // Only reached if the kernel refused; spawn reports it.
            Err(io::Error::last_os_error())
        });
    }
    Ok(cmd)
}

/// Programs refused, with the reason last logged: a refusal is logged once
/// (an error, whatever the caller does with it) until its reason changes or
/// the program starts, not at every retry.
static REFUSED: Mutex<BTreeMap<OsString, String>> = Mutex::new(BTreeMap::new());

fn lock_refused() -> std::sync::MutexGuard<'static, BTreeMap<OsString, String>> {
    REFUSED.lock().unwrap_or_else(|p| p.into_inner())
}

/// An argument vector as `execveat` takes it, built before `fork` (nothing
/// may allocate between fork and exec in a threaded program).
struct CArgs {
    _strings: Vec<CString>,
    /// Pointers into `_strings`, then a null.
    ptrs: Vec<*const libc::c_char>,
}

impl CArgs {
    fn new(strings: Vec<CString>) -> CArgs {
        let ptrs = strings
            .iter()
            .map(|s| s.as_ptr())
            .chain(std::iter::once(std::ptr::null()))
            .collect();
        CArgs {
            _strings: strings,
            ptrs,
        }
    }

    /// The null-terminated array of pointers `execveat` takes.
    fn as_ptr(&self) -> *const *const libc::c_char {
        self.ptrs.as_ptr()
    }
}

// SAFETY: the pointers point into the strings the struct owns, which are
// never changed or moved (a CString's buffer is on the heap).
unsafe impl Send for CArgs {}
// SAFETY: as above; the arrays are only read.
unsafe impl Sync for CArgs {}

fn reset_signals_on_exec(cmd: &mut Command) {
    // SAFETY: the closure only calls async-signal-safe functions
    // (sigaction, sigprocmask, close_range, fcntl) between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            // Every signal up to SIGRTMAX, real-time ones included (auditd
            // ignores them all); the C library refuses the few it reserves
            // for itself, and SIGKILL/SIGSTOP cannot be changed.
            let mut dfl: libc::sigaction = std::mem::zeroed();
            dfl.sa_sigaction = libc::SIG_DFL;
            for sig in 1..=libc::SIGRTMAX() {
                let _ = libc::sigaction(sig, &dfl, std::ptr::null_mut());
            }
            signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None)?;
            // Only standard input, output and error cross into the program,
            // even if some descriptor was opened without close-on-exec.
            // Marked close-on-exec rather than closed: the program's own
            // descriptor must stay open until execveat, and so must the
            // pipe on which a failed exec is reported.
            let r = libc::syscall(
                libc::SYS_close_range,
                3u32,
                u32::MAX,
                libc::CLOSE_RANGE_CLOEXEC,
            );
            if r < 0 {
                // Kernels before 5.11: one descriptor at a time.
                let mut lim: libc::rlimit = std::mem::zeroed();
                let top = if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
                    lim.rlim_cur.min(1 << 20) as i32
                } else {
                    1024
                };
                for fd in 3..top {
                    let flags = libc::fcntl(fd, libc::F_GETFD);
                    if flags >= 0 && flags & libc::FD_CLOEXEC == 0 {
                        libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC);
                    }
                }
            }
            Ok(())
        });
    }
}

fn pidfd_open(pid: u32) -> io::Result<OwnedFd> {
    // SAFETY: plain system call with integer arguments; the result is a new
    // descriptor we own, or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this descriptor to us.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    set_cloexec(&fd)?;
    Ok(fd)
}

fn set_cloexec(fd: &OwnedFd) -> io::Result<()> {
    nix::fcntl::fcntl(
        fd,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn plugin_gets_socket_on_stdin_and_empty_environment() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let script = format!(
            "IFS= read -r line; echo \"$line|$(env | grep -v '^PWD=\\|^SHLVL=\\|^_=' | wc -l)|$(grep SigBlk /proc/self/status | tr -d '\\t ')|$(grep SigIgn /proc/self/status | tr -d '\\t ')\" > {}",
            out.display()
        );
        let argv: Vec<std::ffi::OsString> = vec!["/bin/sh".into(), "-c".into(), script.into()];
        // Start the plugin the way auditd leaves a dispatcher: SIGUSR2
        // ignored and SIGUSR1 blocked in the spawning thread.
        let ign = signal::SigAction::new(
            signal::SigHandler::SigIgn,
            signal::SaFlags::empty(),
            SigSet::empty(),
        );
        // SAFETY: nothing in this test process handles SIGUSR2.
        unsafe { signal::sigaction(Signal::SIGUSR2, &ign) }.unwrap();
        let mut usr1 = SigSet::empty();
        usr1.add(Signal::SIGUSR1);
        signal::pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&usr1), None).unwrap();
        let (child, ours) = spawn_plugin(&argv, StdinSocket::Stream).unwrap();
        signal::pthread_sigmask(SigmaskHow::SIG_UNBLOCK, Some(&usr1), None).unwrap();
        let mut s = std::os::unix::net::UnixStream::from(ours);
        s.write_all(b"type=EOE msg=audit(1.2:3): \n").unwrap();
        drop(s);
        let status = child.stop(Duration::from_secs(5)).unwrap();
        assert!(status.success());
        let mut got = String::new();
        std::fs::File::open(&out)
            .unwrap()
            .read_to_string(&mut got)
            .unwrap();
        let (line, ignored) = got.trim_end().rsplit_once("|SigIgn:").unwrap();
        assert_eq!(
            line,
            "type=EOE msg=audit(1.2:3): |0|SigBlk:0000000000000000"
        );
        // Signals 32 and 33 belong to the C library's threading and cannot
        // be reset (nor set by auditd); every other one must be default.
        let mask = u64::from_str_radix(ignored, 16).unwrap() & !(0b11 << 31);
        assert_eq!(mask, 0, "ignored signals left: {ignored}");
    }

    #[test]
    fn the_checked_file_runs_even_if_renamed_over_before_the_start() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let write = |name: &str, word: &str| {
            let p = dir.path().join(name);
            std::fs::write(&p, format!("#!/bin/sh\necho {word} > {}\n", out.display())).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
            p
        };
        let prog = write("prog", "checked");
        // A copy of /bin/sh stands in for the program, so that the file
        // executed is the descriptor's and not the script's interpreter.
        let sh = dir.path().join("sh");
        std::fs::copy("/bin/sh", &sh).unwrap();
        std::fs::set_permissions(&sh, std::fs::Permissions::from_mode(0o755)).unwrap();
        let argv: Vec<OsString> = vec![sh.clone().into(), prog.clone().into()];
        let mut cmd = checked_command(&argv).unwrap();
        // Swapped after the check: the new file must not run.
        let evil = dir.path().join("evil");
        std::fs::write(
            &evil,
            format!("#!/bin/sh\necho swapped > {}\n", out.display()),
        )
        .unwrap();
        std::fs::set_permissions(&evil, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::rename(&evil, &sh).unwrap();
        let status = cmd.spawn().unwrap().wait().unwrap();
        assert!(status.success());
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "checked\n");
        // The next start checks and opens anew, and runs what is there now.
        let status = checked_command(&argv)
            .unwrap()
            .spawn()
            .unwrap()
            .wait()
            .unwrap();
        assert!(status.success());
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "swapped\n");
    }

    #[test]
    fn stop_escalates_for_a_child_that_ignores_eof() {
        let argv: Vec<std::ffi::OsString> = vec!["/bin/sleep".into(), "60".into()];
        let (child, ours) = spawn_plugin(&argv, StdinSocket::Seqpacket).unwrap();
        drop(ours);
        let start = Instant::now();
        let status = child.stop(Duration::from_millis(200)).unwrap();
        assert!(!status.success());
        assert!(start.elapsed() < Duration::from_secs(5));
    }
}
