//! The downstream program: started as auditd starts a plugin (a stream
//! socket on its standard input, an empty environment, default signal
//! handling), fed without ever blocking, and stopped when the input ends.

use std::ffi::OsString;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use audisp::engine::child::{spawn_plugin, Running, StdinSocket};
use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::poll::{PollFd, PollFlags, PollTimeout};

/// How long the child may take to read what is left, or to exit once its
/// input is closed, before it is stopped (SIGTERM, then SIGKILL as long
/// again later).
pub const GRACE: Duration = Duration::from_secs(5);

/// The running program and our end of its standard input.
pub struct Child {
    running: Running,
    input: Option<OwnedFd>,
}

/// Why the child cannot take more.
#[derive(Debug)]
pub enum Gone {
    /// It closed its input or exited.
    Closed,
    /// Writing failed otherwise.
    Failed(io::Error),
}

impl Child {
    /// Starts `argv` (program first).
    pub fn start(argv: &[OsString]) -> io::Result<Child> {
        let (running, input) = spawn_plugin(argv, StdinSocket::Stream)?;
        let flags = OFlag::from_bits_truncate(fcntl(&input, FcntlArg::F_GETFL)?);
        fcntl(&input, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
        Ok(Child {
            running,
            input: Some(input),
        })
    }

    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.running.pid()
    }

    /// Readable once the child has exited.
    pub fn exit_fd(&self) -> BorrowedFd<'_> {
        self.running.pidfd()
    }

    /// Writable when the child can take more.
    pub fn input_fd(&self) -> Option<BorrowedFd<'_>> {
        self.input.as_ref().map(|f| f.as_fd())
    }

    /// The exit status, if the child has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.running.try_wait().ok().flatten()
    }

    /// Writes as much of `out` as the child takes now, without blocking,
    /// and removes it from `out`.
    pub fn write_some(&mut self, out: &mut Vec<u8>) -> Result<(), Gone> {
        let Some(fd) = &self.input else {
            return Err(Gone::Closed);
        };
        let mut done = 0;
        while done < out.len() {
            match nix::unistd::write(fd, &out[done..]) {
                Ok(n) => done += n,
                Err(Errno::EAGAIN) => break,
                Err(Errno::EINTR) => {}
                Err(Errno::EPIPE | Errno::ECONNRESET) => {
                    out.drain(..done);
                    return Err(Gone::Closed);
                }
                Err(e) => {
                    out.drain(..done);
                    return Err(Gone::Failed(e.into()));
                }
            }
        }
        out.drain(..done);
        Ok(())
    }

    /// Hands the child everything in `out`, waiting as long as it keeps
    /// reading (giving up after [`GRACE`] without progress), then closes its
    /// input and waits for it to exit ([`Running::stop`]: [`GRACE`], then
    /// SIGTERM, then SIGKILL). Returns the exit status and how many records
    /// (lines) it did not take whole.
    pub fn finish(mut self, out: &mut Vec<u8>) -> io::Result<(ExitStatus, usize)> {
        let mut last_progress = Instant::now();
        while !out.is_empty() {
            let before = out.len();
            if self.write_some(out).is_err() {
                break;
            }
            if out.len() < before {
                last_progress = Instant::now();
                continue;
            }
            let left = GRACE.saturating_sub(last_progress.elapsed());
            if left.is_zero() {
                break;
            }
            let Some(input) = self.input_fd() else { break };
            let mut fds = [
                PollFd::new(input, PollFlags::POLLOUT),
                PollFd::new(self.exit_fd(), PollFlags::POLLIN),
            ];
            let ms = PollTimeout::try_from(left.as_millis().min(1000) as i32)
                .unwrap_or(PollTimeout::MAX);
            match nix::poll::poll(&mut fds, ms) {
                Ok(_) | Err(Errno::EINTR) => {}
                Err(e) => return Err(e.into()),
            }
            let exited = fds[1].revents().is_some_and(|r| !r.is_empty());
            if exited {
                break;
            }
        }
        let undelivered = out.iter().filter(|&&b| b == b'\n').count();
        out.clear();
        self.input = None;
        let status = self.running.stop(GRACE)?;
        Ok((status, undelivered))
    }
}
