//! `audisp-kernel`: audit records straight from the kernel, as an input of
//! the audisp dispatcher — beside auditd, or instead of it (containers and
//! minimal hosts where no auditd runs).
//!
//! * By default it reads the kernel's read-only multicast group
//!   (`AUDIT_NLGRP_READLOG`, needs `CAP_AUDIT_READ`): a copy of every record,
//!   whatever daemon is registered. The kernel never waits for multicast
//!   readers: when our socket buffer is full it drops records for us and says
//!   so (`ENOBUFS`), which is counted and logged.
//! * With `--daemon` it registers as the audit daemon itself (`AUDIT_SET`
//!   pid, needs `CAP_AUDIT_CONTROL`) and reads the unicast stream the kernel
//!   keeps for the daemon: there the kernel queues up to `backlog_limit`
//!   records and then makes the processes that log wait, or loses records
//!   and counts them in `lost`. So it never stops reading, polls the
//!   kernel's status every few seconds and logs any growth of `lost` with the
//!   backlog, and gives the role back on stop (`pid 0`, auditing switched
//!   back off if it switched it on). If it crashes instead, the kernel
//!   notices on its next send to the dead socket (or when a new daemon
//!   registers and the kernel tests the old one), clears the daemon pid and
//!   keeps what it could not send for the next daemon, as far as its backlog
//!   allows; a restarted `audisp-kernel` registers again.
//!
//! Each record becomes the line auditd would write for it ([`text`]), EOE
//! records included (auditd dispatches them but never logs them), in the
//! kernel's order; the dispatcher groups them into events as it does for
//! auditd's stream. Records wait in an [`audisp::sdk::Relay`] buffer on disk
//! until the dispatcher acknowledged them — the same buffer as the auditd
//! bridge's, and for the same reason: the kernel's own queue is a few
//! thousand records, so the reader must keep draining it while the
//! dispatcher restarts or is stopped, and records read but not yet stored by
//! the dispatcher should survive a restart of this program too.

mod netlink;
mod text;

use std::os::fd::AsFd;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use audisp::sdk::{flag_value, stop_signals, Relay, RelayOptions};
use audisp::systemd::notify::Notifier;
use netlink::{mask, AuditSocket, Received, Status};
use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout};

/// Help text; the shared options come from [`RelayOptions::help`].
const USAGE: &str = "\
Usage: audisp-kernel [OPTIONS]

Reads audit records from the kernel and relays them to the audisp
dispatcher's input socket as the input named by --name, keeping every record
on disk until the dispatcher has acknowledged it.

Options:
  --daemon            register as the audit daemon (needs CAP_AUDIT_CONTROL;
                      no other audit daemon may run) instead of reading the
                      read-only multicast copy (needs CAP_AUDIT_READ)
  --node NAME         prefix every record with node=NAME, as auditd's
                      name_format does
  --status-interval S with --daemon, seconds between two looks at the
                      kernel's lost and backlog counters (default 5)
{relay}  --version           print the version
  -h, --help          print this help

On SIGTERM it stops reading (with --daemon, it first unregisters), keeps
sending for up to 5 seconds and leaves what is still unacknowledged for its
next start.
";

/// How long the program goes on sending after it stopped reading.
const FLUSH_LIMIT: Duration = Duration::from_secs(5);
/// Receive buffer asked for (the kernel grants at most `net.core.rmem_max`).
const RECEIVE_BUFFER: usize = 32 << 20;
/// Most messages read before the batch is stored.
const BATCH: usize = 2048;
/// Least time between two reports of multicast overflows.
const OVERFLOW_REPORT_EVERY: Duration = Duration::from_secs(10);

struct Args {
    relay: RelayOptions,
    daemon: bool,
    node: Option<String>,
    status_interval: Duration,
}

fn relay_options() -> RelayOptions {
    RelayOptions::new(
        "kernel",
        "AUDISP_KERNEL_STATE_DIR",
        "/var/lib/audisp-kernel",
        1024 << 20,
    )
}

fn usage() -> String {
    USAGE.replace("{relay}", &relay_options().help())
}

fn parse_args() -> Result<Option<Args>, String> {
    use lexopt::prelude::*;
    let mut a = Args {
        relay: relay_options(),
        daemon: false,
        node: None,
        status_interval: Duration::from_secs(5),
    };
    let mut p = lexopt::Parser::from_env();
    while let Some(arg) = p.next().map_err(|e| e.to_string())? {
        match arg {
            Long(flag) if RelayOptions::FLAGS.contains(&flag) => {
                let flag = flag.to_owned();
                a.relay.take(&flag, &mut p)?;
            }
            Long("daemon") => a.daemon = true,
            Long("node") => {
                let node = flag_value(&mut p)?;
                if node.is_empty() || node.bytes().any(|b| b <= b' ' || b == 0x7f) {
                    return Err(format!("--node {node:?}: a name without spaces"));
                }
                a.node = Some(node);
            }
            Long("status-interval") => {
                let v = flag_value(&mut p)?;
                a.status_interval = match v.parse::<u64>() {
                    Ok(n) if (1..=3600).contains(&n) => Duration::from_secs(n),
                    _ => return Err(format!("--status-interval {v:?}: 1 to 3600 seconds")),
                }
            }
            Long("version") => {
                println!("audisp-kernel {}", env!("CARGO_PKG_VERSION"));
                return Ok(None);
            }
            Short('h') | Long("help") => {
                print!("{}", usage());
                return Ok(None);
            }
            _ => return Err(arg.unexpected().to_string()),
        }
    }
    Ok(Some(a))
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(Some(a)) => a,
        Ok(None) => return ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("audisp-kernel: {e}\n\n{}", usage());
            return ExitCode::from(2);
        }
    };
    audisp::systemd::logging::init("audisp-kernel", "info");
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// Records read and not yet stored, and what reading cost.
struct Reader {
    node: Option<String>,
    batch: Vec<(u32, Vec<u8>)>,
    records: u64,
    overflows: u64,
    overflows_reported: u64,
    last_overflow_report: Option<Instant>,
}

impl Reader {
    /// Keeps a kernel message if it is a record.
    fn take(&mut self, rtype: u16, payload: &[u8]) {
        if text::is_record(rtype) {
            let mut line = Vec::with_capacity(payload.len() + 32);
            text::format(&mut line, self.node.as_deref(), rtype, payload);
            self.batch.push((u32::from(rtype), line));
            self.records += 1;
        }
    }

    /// Reads what the socket holds (at most a batch) into the buffer;
    /// returns whether more may be waiting.
    fn drain(&mut self, sock: &AuditSocket, buf: &mut [u8], relay: &Relay) -> Result<bool, String> {
        let mut more = false;
        for _ in 0..BATCH {
            match sock.recv(buf)? {
                Received::Message(rtype, payload) => {
                    self.take(rtype, payload);
                    more = true;
                }
                Received::Empty => {
                    more = false;
                    break;
                }
                Received::Overflow => {
                    self.overflows += 1;
                    self.report_overflows(false);
                }
            }
        }
        relay.store(&mut self.batch);
        Ok(more)
    }

    /// Logs multicast overflows, at most every [`OVERFLOW_REPORT_EVERY`]
    /// (or now, at the end).
    fn report_overflows(&mut self, last: bool) {
        let new = self.overflows - self.overflows_reported;
        if new == 0
            || (!last
                && self
                    .last_overflow_report
                    .is_some_and(|t| t.elapsed() < OVERFLOW_REPORT_EVERY))
        {
            return;
        }
        tracing::error!(
            message_id = audisp::log_ids::RECORD_LOSS,
            "the kernel dropped records for us {new} more times ({} in all): our socket \
             buffer was full. The multicast copy is best effort; read with --daemon, or \
             raise net.core.rmem_max, to lose nothing",
            self.overflows
        );
        self.overflows_reported = self.overflows;
        self.last_overflow_report = Some(Instant::now());
    }
}

/// The daemon role: the control socket and the counters at registration.
struct Daemon {
    control: AuditSocket,
    /// `enabled` as found; restored on stop if we changed it.
    enabled_before: u32,
    lost_at_start: u32,
    last: Status,
    last_poll: Instant,
    interval: Duration,
}

impl Daemon {
    /// Registers the record socket as the audit daemon's and switches
    /// auditing on if it was off. Records that arrive meanwhile go to
    /// `reader`.
    fn register(
        records: &mut AuditSocket,
        reader: &mut Reader,
        interval: Duration,
    ) -> Result<Daemon, String> {
        let mut control = AuditSocket::unicast()?;
        let before = control.status().map_err(|e| {
            format!("cannot read the kernel's audit status: {e} (--daemon needs CAP_AUDIT_CONTROL)")
        })?;
        if before.enabled == 2 {
            return Err("kernel audit is locked (enabled 2): no daemon can register".into());
        }
        let me = std::process::id();
        records
            .set_status(
                &Status {
                    mask: mask::PID,
                    pid: me,
                    ..Status::default()
                },
                &mut |t, p| reader.take(t, p),
            )
            .map_err(|e| match before.pid {
                0 => format!("cannot register as the audit daemon: {e}"),
                pid => format!(
                    "cannot register as the audit daemon: {e}; pid {pid} ({}) is registered, \
                     stop it first",
                    comm(pid)
                ),
            })?;
        let mut d = Daemon {
            control,
            enabled_before: before.enabled,
            lost_at_start: before.lost,
            last: before,
            last_poll: Instant::now(),
            interval,
        };
        if before.enabled == 0 {
            d.set_enabled(1)?;
        }
        Ok(d)
    }

    fn set_enabled(&mut self, enabled: u32) -> Result<(), String> {
        self.control
            .set_status(
                &Status {
                    mask: mask::ENABLED,
                    enabled,
                    ..Status::default()
                },
                &mut |_, _| {},
            )
            .map_err(|e| format!("cannot set kernel audit enabled={enabled}: {e}"))
    }

    /// Reads the kernel's counters when it is time; logs lost records.
    fn poll(&mut self, force: bool) -> Result<(), String> {
        if !force && self.last_poll.elapsed() < self.interval {
            return Ok(());
        }
        self.last_poll = Instant::now();
        let now = self.control.status()?;
        if now.lost != self.last.lost {
            tracing::error!(
                message_id = audisp::log_ids::RECORD_LOSS,
                "the kernel lost {} records (lost counter {} -> {}; backlog {} of \
                 backlog_limit {}, rate_limit {}): raise backlog_limit (auditctl -b)",
                now.lost.wrapping_sub(self.last.lost),
                self.last.lost,
                now.lost,
                now.backlog,
                now.backlog_limit,
                now.rate_limit
            );
        }
        if now.pid != std::process::id() {
            return Err(format!(
                "we are no longer the registered audit daemon (the kernel names pid {})",
                now.pid
            ));
        }
        self.last = now;
        Ok(())
    }

    /// The next moment [`Daemon::poll`] wants to run.
    fn due(&self) -> Instant {
        self.last_poll + self.interval
    }

    /// Gives the daemon role back and puts `enabled` back as found; the
    /// records still queued for us go to `reader`.
    fn unregister(
        mut self,
        records: &mut AuditSocket,
        reader: &mut Reader,
        buf: &mut [u8],
        relay: &Relay,
    ) -> Result<(), String> {
        let result = records.set_status(
            &Status {
                mask: mask::PID,
                pid: 0,
                ..Status::default()
            },
            &mut |t, p| reader.take(t, p),
        );
        while reader.drain(records, buf, relay)? {}
        result.map_err(|e| format!("cannot unregister as the audit daemon: {e}"))?;
        if self.enabled_before == 0 {
            self.set_enabled(0)?;
        }
        let end = self.control.status()?;
        let lost = end.lost.wrapping_sub(self.lost_at_start);
        if lost == 0 {
            tracing::info!(
                "unregistered as the audit daemon; the kernel lost no record meanwhile \
                 (lost counter {})",
                end.lost
            );
        } else {
            tracing::error!(
                message_id = audisp::log_ids::RECORD_LOSS,
                "unregistered as the audit daemon; the kernel lost {lost} records meanwhile \
                 (lost counter {} -> {})",
                self.lost_at_start,
                end.lost
            );
        }
        Ok(())
    }
}

/// The command name of process `pid`, for messages.
fn comm(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|c| c.trim().to_string())
        .unwrap_or_else(|_| "no longer running".into())
}

fn run(args: Args) -> Result<(), String> {
    let sfd = stop_signals()?;
    let relay = args.relay.start(FLUSH_LIMIT)?;
    let mut reader = Reader {
        node: args.node,
        batch: Vec::new(),
        records: 0,
        overflows: 0,
        overflows_reported: 0,
        last_overflow_report: None,
    };
    let mut buf = vec![0u8; 64 << 10];
    let (mut sock, mut daemon) = if args.daemon {
        let mut sock = AuditSocket::unicast()?;
        let granted = sock.set_receive_buffer(RECEIVE_BUFFER);
        let d = Daemon::register(&mut sock, &mut reader, args.status_interval)?;
        tracing::info!(
            "registered as the audit daemon (pid {}); kernel backlog_limit {}, rate_limit {}, \
             lost so far {}; receive buffer {granted} bytes",
            std::process::id(),
            d.last.backlog_limit,
            d.last.rate_limit,
            d.last.lost
        );
        (sock, Some(d))
    } else {
        let sock = AuditSocket::multicast()?;
        let granted = sock.set_receive_buffer(RECEIVE_BUFFER);
        tracing::info!("reading the kernel's audit multicast copy; receive buffer {granted} bytes");
        (sock, None)
    };
    relay.store(&mut reader.batch);
    let notifier = Notifier::from_env();
    let _ = notifier.ready(if daemon.is_some() {
        "registered as the audit daemon"
    } else {
        "reading the audit multicast group"
    });
    let result = read_loop(
        &sock,
        &sfd,
        &mut reader,
        &mut daemon,
        &mut buf,
        &relay,
        &notifier,
    );
    let _ = notifier.stopping();
    let stopped = match daemon {
        Some(d) => d.unregister(&mut sock, &mut reader, &mut buf, &relay),
        None => Ok(()),
    };
    relay.store(&mut reader.batch);
    reader.report_overflows(true);
    tracing::info!(
        "read {} records from the kernel; {} overflows",
        reader.records,
        reader.overflows
    );
    let left = relay.finish();
    result.and(stopped).and(left.map(|_| ()))
}

/// Reads until a stop signal (or an error).
fn read_loop(
    sock: &AuditSocket,
    sfd: &nix::sys::signalfd::SignalFd,
    reader: &mut Reader,
    daemon: &mut Option<Daemon>,
    buf: &mut [u8],
    relay: &Relay,
    notifier: &Notifier,
) -> Result<(), String> {
    loop {
        if let Some(d) = daemon.as_mut() {
            let before = d.last_poll;
            d.poll(false)?;
            if d.last_poll != before {
                let _ = notifier.status(&format!(
                    "{} records read; kernel backlog {} of {}, lost {}; {} not yet acknowledged",
                    reader.records,
                    d.last.backlog,
                    d.last.backlog_limit,
                    d.last.lost,
                    relay.unacknowledged()
                ));
            }
        }
        let wait = match daemon {
            Some(d) => d.due().saturating_duration_since(Instant::now()),
            None => Duration::from_secs(1),
        };
        let mut fds = [
            PollFd::new(sock.fd(), PollFlags::POLLIN),
            PollFd::new(sfd.as_fd(), PollFlags::POLLIN),
        ];
        match nix::poll::poll(
            &mut fds,
            PollTimeout::try_from(wait).unwrap_or(PollTimeout::MAX),
        ) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => return Err(format!("poll: {e}")),
        }
        if fds[1].revents().is_some_and(|r| !r.is_empty()) {
            while let Ok(Some(_)) = sfd.read_signal() {}
            tracing::info!("asked to stop");
            return Ok(());
        }
        if fds[0].revents().is_some_and(|r| !r.is_empty()) {
            // One batch per turn: in a long burst the counters and signals
            // are still looked at (the next poll returns at once).
            reader.drain(sock, buf, relay)?;
        }
    }
}
