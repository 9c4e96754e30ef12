//! Telling the service manager what the daemon is doing (`sd_notify`).
//!
//! systemd (with `Type=notify`) learns through `$NOTIFY_SOCKET` that the
//! dispatcher is ready, reloading or stopping, reads a one-line status, and
//! is fed the watchdog. Tests bind their own datagram socket and point
//! `NOTIFY_SOCKET` at it, which makes `READY=1` the readiness signal they
//! wait for. Without `NOTIFY_SOCKET` every call does nothing.
//!
//! The protocol is one datagram of `KEY=VALUE` lines to a unix socket (a
//! path, or an abstract name written with a leading `@`).
//!
//! A manager that stops reading must not wedge the daemon: a datagram
//! socket's queue is short (`net.unix.max_dgram_qlen`, 10 by default), and
//! a blocking send to a full queue would stop the dispatcher's main loop.
//! So sends never block: a state change (`READY=1`, `RELOADING=1`,
//! `STOPPING=1`) or a watchdog ping waits up to [`PATIENCE`] for room, and
//! a mere `STATUS=` update is dropped when there is none — the next one
//! replaces it a second later.
//!
//! Not the `sd-notify` crate: its sends block without bound, and it cannot
//! reach an abstract `@name` socket.

use std::io;
use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

/// How long a state change or watchdog ping waits for room in a full
/// notification queue before it is given up with an error.
pub const PATIENCE: Duration = Duration::from_secs(2);

/// A connection to the service manager's notification socket.
#[derive(Debug)]
pub struct Notifier {
    socket: Option<(UnixDatagram, std::os::unix::net::SocketAddr)>,
    watchdog: Option<Duration>,
}

impl Notifier {
    /// Reads `NOTIFY_SOCKET`, `WATCHDOG_USEC` and `WATCHDOG_PID` from the
    /// environment and removes them, so that programs the daemon starts do
    /// not talk to the service manager in its name.
    pub fn from_env() -> Notifier {
        let n = Notifier::from_env_unchanged();
        // SAFETY: called once at start-up, before any thread is spawned.
        unsafe {
            std::env::remove_var("NOTIFY_SOCKET");
            std::env::remove_var("WATCHDOG_USEC");
            std::env::remove_var("WATCHDOG_PID");
        }
        n
    }

    /// Reads the same variables without changing the environment: for
    /// library code (the plugin SDK) that may run after the program started
    /// threads, when removing variables is not safe.
    pub fn from_env_unchanged() -> Notifier {
        let path = std::env::var_os("NOTIFY_SOCKET");
        let watchdog_usec = std::env::var("WATCHDOG_USEC")
            .ok()
            .and_then(|v| v.parse::<u64>().ok());
        let watchdog_pid = std::env::var("WATCHDOG_PID")
            .ok()
            .and_then(|v| v.parse::<u32>().ok());
        let watchdog = match watchdog_usec {
            Some(us) if us > 0 && watchdog_pid.is_none_or(|p| p == std::process::id()) => {
                Some(Duration::from_micros(us))
            }
            _ => None,
        };
        let socket = path.and_then(|p| {
            use std::os::linux::net::SocketAddrExt;
            let bytes = std::os::unix::ffi::OsStrExt::as_bytes(p.as_os_str()).to_vec();
            let addr = match bytes.strip_prefix(b"@") {
                Some(name) => std::os::unix::net::SocketAddr::from_abstract_name(name).ok()?,
                None => {
                    std::os::unix::net::SocketAddr::from_pathname(std::path::Path::new(&p)).ok()?
                }
            };
            let sock = UnixDatagram::unbound().ok()?;
            sock.set_nonblocking(true).ok()?;
            Some((sock, addr))
        });
        Notifier { socket, watchdog }
    }

    /// A notifier that says nothing (for embedding without a manager).
    pub fn none() -> Notifier {
        Notifier {
            socket: None,
            watchdog: None,
        }
    }

    /// Whether a service manager listens.
    pub fn enabled(&self) -> bool {
        self.socket.is_some()
    }

    /// The watchdog interval the manager expects pings within, if any.
    pub fn watchdog(&self) -> Option<Duration> {
        self.watchdog
    }

    /// Sends raw `KEY=VALUE` lines, waiting up to [`PATIENCE`] for room.
    pub fn send(&self, state: &str) -> io::Result<()> {
        self.send_within(state, PATIENCE)
    }

    fn send_within(&self, state: &str, patience: Duration) -> io::Result<()> {
        let Some((sock, addr)) = &self.socket else {
            return Ok(());
        };
        let deadline = Instant::now() + patience;
        loop {
            match sock.send_to_addr(state.as_bytes(), addr) {
                Ok(_) => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// `READY=1` with a status line.
    pub fn ready(&self, status: &str) -> io::Result<()> {
        self.send(&format!("READY=1\nSTATUS={}", one_line(status)))
    }

    /// `RELOADING=1` with the monotonic time systemd requires with it.
    pub fn reloading(&self) -> io::Result<()> {
        self.send(&format!(
            "RELOADING=1\nMONOTONIC_USEC={}\nSTATUS=reloading",
            monotonic_usec()
        ))
    }

    /// `STOPPING=1`.
    pub fn stopping(&self) -> io::Result<()> {
        self.send("STOPPING=1\nSTATUS=stopping: plugins are catching up")
    }

    /// A status line; dropped (an error) when the manager's queue is full.
    pub fn status(&self, status: &str) -> io::Result<()> {
        self.send_within(&format!("STATUS={}", one_line(status)), Duration::ZERO)
    }

    /// `WATCHDOG=1`.
    pub fn watchdog_ping(&self) -> io::Result<()> {
        self.send("WATCHDOG=1")
    }
}

fn one_line(s: &str) -> String {
    s.replace('\n', " ")
}

/// CLOCK_MONOTONIC in microseconds, as `MONOTONIC_USEC` wants it.
pub fn monotonic_usec() -> u64 {
    let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .unwrap_or(nix::sys::time::TimeSpec::new(0, 0));
    t.tv_sec() as u64 * 1_000_000 + t.tv_nsec() as u64 / 1_000
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A notifier talking to a socket nobody reads.
    fn unread() -> (tempfile::TempDir, UnixDatagram, Notifier) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("notify");
        let capture = UnixDatagram::bind(&path).expect("bind");
        let sock = UnixDatagram::unbound().expect("socket");
        sock.set_nonblocking(true).expect("nonblocking");
        let addr = std::os::unix::net::SocketAddr::from_pathname(&path).expect("addr");
        let n = Notifier {
            socket: Some((sock, addr)),
            watchdog: None,
        };
        (dir, capture, n)
    }

    #[test]
    fn a_manager_that_stops_reading_never_wedges_the_caller() {
        let (_dir, capture, n) = unread();
        let t0 = Instant::now();
        let sent = (0..200)
            .filter(|i| n.status(&format!("{i}")).is_ok())
            .count();
        assert!(
            sent > 0 && sent < 200,
            "{sent} of 200 status updates queued"
        );
        assert!(t0.elapsed() < Duration::from_secs(1), "{:?}", t0.elapsed());
        // A state change waits for room, then gives up with an error.
        let t0 = Instant::now();
        assert!(n.ready("ready").is_err());
        assert!(t0.elapsed() >= PATIENCE, "{:?}", t0.elapsed());
        // Once the manager reads again, it gets through.
        capture.set_nonblocking(true).expect("nonblocking");
        let mut buf = [0u8; 256];
        while capture.recv(&mut buf).is_ok() {}
        n.ready("ready").expect("READY=1 once there is room");
        let len = capture.recv(&mut buf).expect("READY=1 arrives");
        assert!(buf[..len].starts_with(b"READY=1\n"));
    }
}
