//! `audisp-netfilter`: packets logged by nftables or iptables
//! (`log group N …`, `-j NFLOG --nflog-group N`), as audit records on the
//! audisp dispatcher's input — for the plugins that analyse a host's audit
//! trail to see its firewall's view too.
//!
//! It binds the log groups given with `--group` in its network namespace
//! ([`nflog`]), turns each logged packet into a `NETFILTER_PKT` record
//! ([`record`]) stamped with the kernel's time stamp of the packet (or the
//! time it was read, for packets the kernel did not stamp, as on the output
//! hooks) and a serial of its own that grows with every packet, so records
//! sort in the order they were logged, and relays them through an
//! [`audisp::sdk::Relay`] buffer.
//!
//! Bounded under a flood (a port scan): the kernel batches and copies only
//! the headers; when it cannot hand packets over it drops them and the
//! per-group sequence numbers tell how many, which is logged (`RECORD_LOSS`)
//! and reported at the end; the buffer has a size limit beyond which the
//! oldest records are dropped and logged. Unlike audit records, packet logs
//! are lossy at the source already, and they come at the rate of whatever
//! the network sends; so the buffer lives in memory (`/run/audisp-netfilter`,
//! a tmpfs, 64 MiB by default): it rides out a restart of the dispatcher and
//! of this program, and a flood never turns into disk writes.

mod nflog;
mod record;

use std::collections::HashMap;
use std::os::fd::AsFd;
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use audisp::sdk::{flag_value, stop_signals, Relay, RelayOptions};
use audisp::systemd::notify::Notifier;
use nflog::{NflogSocket, Received, Setup};
use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout};

/// Help text; the shared options come from [`RelayOptions::help`].
const USAGE: &str = "\
Usage: audisp-netfilter --group N [--group M ...] [OPTIONS]

Reads the packets nftables or iptables log to netfilter log groups (nft
`log group N`, iptables `-j NFLOG --nflog-group N`) and relays each as a
NETFILTER_PKT audit record to the audisp dispatcher's input socket.
Needs CAP_NET_ADMIN; groups are per network namespace.

Options:
  --group N           a log group to read (0-65535); repeat for more
  --node NAME         prefix every record with node=NAME
  --copy-range BYTES  bytes of each packet the kernel copies (default 256)
  --queue-threshold N packets the kernel batches per message (default 64)
{relay}  --version           print the version
  -h, --help          print this help

On SIGTERM it stops reading, keeps sending for up to 5 seconds and logs how
many packets were logged and how many the kernel could not hand over.
";

/// How long the program goes on sending after it stopped reading.
const FLUSH_LIMIT: Duration = Duration::from_secs(5);
/// Least time between two reports of lost packets.
const LOSS_REPORT_EVERY: Duration = Duration::from_secs(10);
/// Most datagrams (batches of packets) read before the records are stored.
const DATAGRAMS_PER_STORE: usize = 64;
/// How long an interface name is trusted before it is looked up again.
const NAME_TTL: Duration = Duration::from_secs(10);

struct Args {
    relay: RelayOptions,
    groups: Vec<u16>,
    node: Option<String>,
    setup: Setup,
}

fn relay_options() -> RelayOptions {
    RelayOptions::new(
        "netfilter",
        "AUDISP_NETFILTER_STATE_DIR",
        "/run/audisp-netfilter",
        64 << 20,
    )
}

fn usage() -> String {
    USAGE.replace("{relay}", &relay_options().help())
}

fn parse_args() -> Result<Option<Args>, String> {
    use lexopt::prelude::*;
    let mut a = Args {
        relay: relay_options(),
        groups: Vec::new(),
        node: None,
        setup: Setup {
            copy_range: 256,
            queue_threshold: 64,
        },
    };
    let number = |v: String, what: &str, range: std::ops::RangeInclusive<u32>| {
        v.parse::<u32>()
            .ok()
            .filter(|n| range.contains(n))
            .ok_or_else(|| {
                format!(
                    "{what} {v:?}: a number from {} to {}",
                    range.start(),
                    range.end()
                )
            })
    };
    let mut p = lexopt::Parser::from_env();
    while let Some(arg) = p.next().map_err(|e| e.to_string())? {
        match arg {
            Long(flag) if RelayOptions::FLAGS.contains(&flag) => {
                let flag = flag.to_owned();
                a.relay.take(&flag, &mut p)?;
            }
            Long("group") => {
                let g = number(flag_value(&mut p)?, "--group", 0..=65535)? as u16;
                if !a.groups.contains(&g) {
                    a.groups.push(g);
                }
            }
            Long("node") => {
                let node = flag_value(&mut p)?;
                if node.is_empty() || node.bytes().any(|b| b <= b' ' || b == 0x7f) {
                    return Err(format!("--node {node:?}: a name without spaces"));
                }
                a.node = Some(node);
            }
            Long("copy-range") => {
                a.setup.copy_range = number(flag_value(&mut p)?, "--copy-range", 64..=65535)?
            }
            Long("queue-threshold") => {
                a.setup.queue_threshold =
                    number(flag_value(&mut p)?, "--queue-threshold", 1..=1024)?
            }
            Long("version") => {
                println!("audisp-netfilter {}", env!("CARGO_PKG_VERSION"));
                return Ok(None);
            }
            Short('h') | Long("help") => {
                print!("{}", usage());
                return Ok(None);
            }
            _ => return Err(arg.unexpected().to_string()),
        }
    }
    if a.groups.is_empty() {
        return Err("--group N is required (the log group your rules log to)".into());
    }
    Ok(Some(a))
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(Some(a)) => a,
        Ok(None) => return ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("audisp-netfilter: {e}\n\n{}", usage());
            return ExitCode::from(2);
        }
    };
    audisp::systemd::logging::init("audisp-netfilter", "info");
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// Interface names by index, looked up with `if_indextoname` and kept for
/// [`NAME_TTL`] (an index can be reused for another interface).
#[derive(Default)]
struct InterfaceNames(HashMap<u32, (Option<Vec<u8>>, Instant)>);

impl InterfaceNames {
    fn get(&mut self, index: u32) -> Option<Vec<u8>> {
        if let Some((name, at)) = self.0.get(&index) {
            if at.elapsed() < NAME_TTL {
                return name.clone();
            }
        }
        let mut buf = [0u8; libc::IF_NAMESIZE];
        // SAFETY: `buf` has the IF_NAMESIZE bytes if_indextoname may write.
        let p = unsafe { libc::if_indextoname(index, buf.as_mut_ptr().cast()) };
        let name = (!p.is_null()).then(|| {
            let len = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
            buf[..len].to_vec()
        });
        self.0.insert(index, (name.clone(), Instant::now()));
        name
    }
}

/// Packets read, records made, and losses seen.
struct Counts {
    packets: u64,
    overflows: u64,
    reported_missed: u64,
    reported_overflows: u64,
    last_report: Option<Instant>,
}

impl Counts {
    /// Logs new losses, at most every [`LOSS_REPORT_EVERY`] (or now, at the
    /// end).
    fn report(&mut self, missed: u64, last: bool) {
        let (new_missed, new_overflows) = (
            missed - self.reported_missed,
            self.overflows - self.reported_overflows,
        );
        if (new_missed == 0 && new_overflows == 0)
            || (!last
                && self
                    .last_report
                    .is_some_and(|t| t.elapsed() < LOSS_REPORT_EVERY))
        {
            return;
        }
        tracing::error!(
            message_id = audisp::log_ids::RECORD_LOSS,
            "the kernel could not hand over {new_missed} logged packets ({missed} in all; our \
             socket buffer overflowed {} times): packets are logged faster than they are read",
            self.overflows
        );
        self.reported_missed = missed;
        self.reported_overflows = self.overflows;
        self.last_report = Some(Instant::now());
    }
}

fn run(args: Args) -> Result<(), String> {
    let sfd = stop_signals()?;
    let (mut sock, granted) = NflogSocket::bind(&args.groups, args.setup)?;
    let relay = args.relay.start(FLUSH_LIMIT)?;
    tracing::info!(
        "reading netfilter log groups {:?}; copy range {} bytes, queue threshold {}, receive \
         buffer {granted} bytes",
        args.groups,
        args.setup.copy_range,
        args.setup.queue_threshold
    );
    let notifier = Notifier::from_env();
    let _ = notifier.ready(&format!("reading netfilter log groups {:?}", args.groups));
    let mut counts = Counts {
        packets: 0,
        overflows: 0,
        reported_missed: 0,
        reported_overflows: 0,
        last_report: None,
    };
    let result = read_loop(&mut sock, &sfd, args.node.as_deref(), &relay, &mut counts);
    let _ = notifier.stopping();
    counts.report(sock.missed, true);
    tracing::info!(
        "stopped: {} packets logged, {} not handed over by the kernel, {} overflows",
        counts.packets,
        sock.missed,
        counts.overflows
    );
    let left = relay.finish();
    result.and(left.map(|_| ()))
}

/// Reads until a stop signal (or an error).
fn read_loop(
    sock: &mut NflogSocket,
    sfd: &nix::sys::signalfd::SignalFd,
    node: Option<&str>,
    relay: &Relay,
    counts: &mut Counts,
) -> Result<(), String> {
    let mut names = InterfaceNames::default();
    let mut batch: Vec<(u32, Vec<u8>)> = Vec::new();
    let mut serial = 0u64;
    loop {
        let mut fds = [
            PollFd::new(sock.fd(), PollFlags::POLLIN),
            PollFd::new(sfd.as_fd(), PollFlags::POLLIN),
        ];
        match nix::poll::poll(&mut fds, PollTimeout::from(1000u16)) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => return Err(format!("poll: {e}")),
        }
        if fds[1].revents().is_some_and(|r| !r.is_empty()) {
            while let Ok(Some(_)) = sfd.read_signal() {}
            tracing::info!("asked to stop");
            return Ok(());
        }
        for _ in 0..DATAGRAMS_PER_STORE {
            let got = sock.recv(&mut |i| names.get(i), &mut |packet| {
                serial += 1;
                let (sec, msec) = match packet.timestamp {
                    Some((sec, usec)) => (sec, (usec / 1000).min(999) as u32),
                    None => {
                        let now = SystemTime::now()
                            .duration_since(UNIX_EPOCH)
                            .unwrap_or_default();
                        (now.as_secs(), now.subsec_millis())
                    }
                };
                let mut line = Vec::with_capacity(256);
                record::format(&mut line, node, (sec, msec, serial), &packet);
                batch.push((1324, line));
            })?;
            match got {
                Received::Read => {}
                Received::Empty => break,
                Received::Overflow => counts.overflows += 1,
            }
        }
        counts.packets += batch.len() as u64;
        relay.store(&mut batch);
        counts.report(sock.missed, false);
    }
}
