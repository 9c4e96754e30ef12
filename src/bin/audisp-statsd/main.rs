//! audisp-statsd: an audisp plugin that sends audit metrics to a statsd
//! server over UDP at an interval — what auditd's own `audisp-statsd`
//! reports, for those who run that stack, and audispd's counters besides.
//!
//! It receives whole events and counts them by kind ([`tally`]); every
//! `--interval` it asks audispd for its counters (the SDK's `STATS`
//! request) and sends one report ([`report`]). Settings come from
//! `/etc/audisp/audisp-statsd.toml` (`--config`), flags override them. See
//! `docs/audisp-statsd.8.md`.

mod report;
mod tally;

use std::ffi::OsString;
use std::net::{SocketAddr, ToSocketAddrs, UdpSocket};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use audisp::config::option_file::{self, flag_value, set, FileFlags, Reader, StartError, Table};
use audisp::config::parse_duration;
use audisp::sdk::Plugin;
use report::Report;
use tally::EventCounts;

const USAGE: &str = "usage: audisp-statsd [--config FILE | --no-config] [--check-config]
       [--address HOST] [--port PORT] [--interval DURATION] [--prefix PREFIX]
       [--name NAME] [--listen SOCKET]
Settings not given as flags come from FILE (default /etc/audisp/audisp-statsd.toml,
or $AUDISP_STATSD_CONFIG).";

/// The option file read when neither `--config` nor the variable names one.
const DEFAULT_CONFIG: &str = "/etc/audisp/audisp-statsd.toml";
/// The variable that names the option file (tests, relocated installs).
const CONFIG_VAR: &str = "AUDISP_STATSD_CONFIG";
/// The shortest interval accepted.
const MIN_INTERVAL: Duration = Duration::from_secs(1);

struct Opts {
    address: String,
    port: u16,
    interval: Duration,
    /// Empty, or ending in `.`.
    prefix: String,
    name: String,
    listen: Option<PathBuf>,
    /// `--check-config`: stop after reading the settings.
    check_config: bool,
}

impl Default for Opts {
    fn default() -> Opts {
        Opts {
            // Not "localhost": it may resolve to ::1 first, where a statsd
            // listening on IPv4 only would never see a report.
            address: "127.0.0.1".into(),
            port: 8125,
            interval: Duration::from_secs(15),
            prefix: String::new(),
            name: "statsd".into(),
            listen: None,
            check_config: false,
        }
    }
}

/// Defaults, then the option file, then the flags.
fn parse() -> Result<Opts, StartError> {
    let (o, _) = option_file::settings(
        "audisp-statsd",
        CONFIG_VAR,
        DEFAULT_CONFIG,
        std::env::args_os().skip(1).collect(),
        apply_flags,
        apply_file,
    )?;
    Ok(o)
}

/// Applies the command line to `o`; returns what it says of the option file.
fn apply_flags(o: &mut Opts, args: Vec<OsString>) -> Result<FileFlags, String> {
    use lexopt::prelude::*;
    let mut file = FileFlags::default();
    let mut p = lexopt::Parser::from_args(args);
    let e = |e: lexopt::Error| e.to_string();
    while let Some(arg) = p.next().map_err(e)? {
        match arg {
            Long("config") => file.config = Some(p.value().map_err(e)?.into()),
            Long("no-config") => file.none = true,
            Long("check-config") => o.check_config = true,
            Long("address") => o.address = flag_value(&mut p, "address", address)?,
            Long("port") => o.port = flag_value(&mut p, "port", port)?,
            Long("interval") => o.interval = flag_value(&mut p, "interval", interval)?,
            Long("prefix") => o.prefix = flag_value(&mut p, "prefix", prefix)?,
            Long("name") => o.name = flag_value(&mut p, "name", option_file::text)?,
            Long("listen") => o.listen = Some(p.value().map_err(e)?.into()),
            Long("help") | Short('h') => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            _ => return Err(arg.unexpected().to_string()),
        }
    }
    Ok(file)
}

/// Takes the option file's values into `o`; mistakes are recorded by `r`.
fn apply_file<'s>(r: &mut Reader<'s>, top: &Table<'_, 's>, o: &mut Opts) {
    r.reject_unknown(
        top,
        &["address", "port", "interval", "prefix", "name", "listen"],
        |_| None,
    );
    set(&mut o.address, r.parsed(top, "address", address));
    let n = r.count::<u16>(top, "port");
    set(&mut o.port, r.checked(top, "port", n, |&p| port_number(p)));
    let d = r.duration(top, "interval");
    set(
        &mut o.interval,
        r.checked(top, "interval", d, |&d| long_enough(d)),
    );
    set(&mut o.prefix, r.parsed(top, "prefix", prefix));
    set(&mut o.name, r.string(top, "name"));
    set(&mut o.listen, r.path(top, "listen").map(Some));
}

/// The statsd server's name or address (no port: that is `port`).
fn address(v: &str) -> Result<String, String> {
    let host = v.trim_matches(|c| c == '[' || c == ']');
    if host.is_empty() || host.contains(char::is_whitespace) || host.parse::<SocketAddr>().is_ok() {
        return Err(
            "is not a host name or address; write it such as \"127.0.0.1\", \"statsd.example\" or \"::1\" (the port goes in port)"
                .into(),
        );
    }
    Ok(host.to_string())
}

/// Why `p` is no UDP port to send to, if it is not.
fn port_number(p: u16) -> Result<(), String> {
    if p == 0 {
        Err("is not a port; write 1 to 65535".into())
    } else {
        Ok(())
    }
}

/// `--port`: a UDP port, 1 to 65535.
fn port(v: &str) -> Result<u16, String> {
    let p = v
        .parse::<u16>()
        .map_err(|_| "is not a port; write 1 to 65535".to_string())?;
    port_number(p).map(|()| p)
}

/// Why `d` is too short an interval, if it is.
fn long_enough(d: Duration) -> Result<(), String> {
    if d < MIN_INTERVAL {
        Err("is shorter than the shortest interval, 1s".into())
    } else {
        Ok(())
    }
}

/// `--interval`: how often a report goes out.
fn interval(v: &str) -> Result<Duration, String> {
    let d = parse_duration(v)?;
    long_enough(d).map(|()| d)
}

/// A prefix for every metric name: dot-separated parts of letters, digits,
/// `-` and `_`; stored with its final `.`.
fn prefix(v: &str) -> Result<String, String> {
    let v = v.strip_suffix('.').unwrap_or(v);
    if v.is_empty() {
        return Ok(String::new());
    }
    let ok = v.split('.').all(|part| {
        !part.is_empty()
            && part
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    });
    if ok {
        Ok(format!("{v}."))
    } else {
        Err("is not a metric prefix; write dot-separated words of letters, digits, '-' and '_', such as \"audit.host1\"".into())
    }
}

/// Where reports go: the server's address once it resolves, and a socket
/// of its family.
struct Destination {
    host: String,
    port: u16,
    socket: Option<UdpSocket>,
    /// When a failure was last logged.
    complained: Option<Instant>,
}

/// How often a failure that goes on is logged again.
const COMPLAIN_EVERY: Duration = Duration::from_secs(600);

impl Destination {
    fn connect(&mut self) -> Result<&UdpSocket, String> {
        if self.socket.is_none() {
            let addr = (self.host.as_str(), self.port)
                .to_socket_addrs()
                .map_err(|e| format!("cannot resolve {}: {e}", self.host))?
                .next()
                .ok_or_else(|| format!("{} has no address", self.host))?;
            let local: SocketAddr = if addr.is_ipv4() {
                (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
            } else {
                (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
            };
            let s = UdpSocket::bind(local).map_err(|e| format!("UDP socket: {e}"))?;
            s.connect(addr)
                .map_err(|e| format!("UDP socket to {addr}: {e}"))?;
            eprintln!("audisp-statsd: reporting to {addr}");
            self.socket = Some(s);
        }
        self.socket.as_ref().ok_or_else(|| "no socket".to_string())
    }

    /// Sends every datagram. A failure is logged at most every
    /// [`COMPLAIN_EVERY`]: a statsd server that is down must not flood the
    /// log (and with UDP, sends that succeed in between prove nothing: a
    /// refusal only shows on the send after).
    fn send(&mut self, datagrams: &[Vec<u8>]) {
        let result = self.connect().and_then(|s| {
            for d in datagrams {
                s.send(d).map_err(|e| format!("sending: {e}"))?;
            }
            Ok(())
        });
        if let Err(e) = result {
            if self
                .complained
                .is_none_or(|t| t.elapsed() >= COMPLAIN_EVERY)
            {
                self.complained = Some(Instant::now());
                eprintln!(
                    "audisp-statsd: {e}; reports are lost until the server takes them (said again in {} minutes if it goes on)",
                    COMPLAIN_EVERY.as_secs() / 60
                );
            }
        }
    }
}

fn main() {
    let o = option_file::settings_to_run("audisp-statsd", USAGE, parse(), |o| o.check_config);
    if let Err(e) = run(o) {
        eprintln!("audisp-statsd: {e}");
        std::process::exit(1);
    }
}

fn run(o: Opts) -> Result<(), String> {
    let mut dest = Destination {
        host: o.address.clone(),
        port: o.port,
        socket: None,
        complained: None,
    };
    let mut plugin = Plugin::new(&o.name)
        .events()
        .tick((o.interval / 10).clamp(Duration::from_millis(100), Duration::from_secs(1)));
    if let Some(l) = &o.listen {
        plugin = plugin.listen(l);
    }
    let mut events = EventCounts::default();
    let mut report = Report::default();
    let mut started = false;
    let mut last = Instant::now();
    let result = plugin.run(|batch, ctx| {
        if !started {
            // audispd's counters as they are now: the first report sends
            // what happened after this.
            match ctx.stats() {
                Ok(s) => report.baseline(&s),
                Err(e) => eprintln!("audisp-statsd: audispd's counters: {e}"),
            }
            started = true;
            last = Instant::now();
        }
        for ev in batch.events() {
            events.count(ev.records().map(|r| (r.rtype, r.text)));
        }
        if last.elapsed() >= o.interval {
            last = Instant::now();
            let stats = match ctx.stats() {
                Ok(s) => Some(s),
                Err(e) => {
                    eprintln!(
                        "audisp-statsd: audispd's counters: {e}; sending the event counts alone"
                    );
                    None
                }
            };
            dest.send(&report.datagrams(&o.prefix, &events, stats.as_ref()));
            events = EventCounts::default();
        }
        Ok(())
    });
    result.map_err(|e| e.to_string())
}
