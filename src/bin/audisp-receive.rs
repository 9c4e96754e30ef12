//! audisp-receive: the aggregator end of remote logging.
//!
//! Listens on TCP (sockets from systemd socket activation, or `--listen`),
//! accepts stock audisp-remote clients (managed and ASCII formats) and
//! audisp-remote in fast mode, stores every record durably and once
//! ([`audisp::remote::store`]) before acknowledging it, and from the store
//! writes an auditd-format log ([`audisp::remote::logfile`]) and/or feeds
//! the local audispd as an input. Settings come from
//! `/etc/audisp/audisp-receive.toml` (`--config`), flags override them. See
//! `docs/audisp-receive.8.md`.

use std::ffi::OsString;
use std::net::TcpListener;

use std::os::fd::AsFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use audisp::config::option_file::{
    self, flag_value, off_if_zero, set, text, FileFlags, Reader, StartError, Table,
};
use audisp::config::parse_size;
use audisp::engine::liveness::Liveness;
use audisp::journal::Origin;
use audisp::journal::{Limits, ReadOutcome, Step};
use audisp::remote::logfile::{LogConfig, LogWriter};
use audisp::remote::server::{self, ServerConfig, Shared, Transport, Wrap};
use audisp::remote::store::Store;
use audisp::sdk::InputClient;
use audisp::systemd::notify::Notifier;
use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

const USAGE: &str = "usage: audisp-receive [--config FILE | --no-config] [--check-config]
       [--listen ADDR:PORT]... [--state-dir DIR]
       [--log FILE | --no-log] [--log-max-size BYTES] [--log-keep N]
       [--dispatcher SOCKET] [--input-name NAME] [--max-per-addr N]
       [--max-connections N] [--handshake-timeout SECS] [--idle-timeout SECS]
       [--space-left BYTES]
       [--store-max BYTES] [--tls-cert F --tls-key F --tls-ca F]
Settings not given as flags come from FILE (default /etc/audisp/audisp-receive.toml,
or $AUDISP_RECEIVE_CONFIG).";

/// The option file read when neither `--config` nor the variable names one.
const DEFAULT_CONFIG: &str = "/etc/audisp/audisp-receive.toml";
/// The variable that names the option file (tests, relocated installs).
const CONFIG_VAR: &str = "AUDISP_RECEIVE_CONFIG";

struct Opts {
    listen: Vec<String>,
    state_dir: PathBuf,
    log: Option<PathBuf>,
    log_max: u64,
    log_keep: u32,
    dispatcher: Option<PathBuf>,
    input_name: String,
    server: ServerConfig,
    store_max: u64,
    tls: audisp::remote::tls::TlsFiles,
    /// `--check-config`: stop after reading the settings.
    check_config: bool,
}

impl Default for Opts {
    fn default() -> Opts {
        Opts {
            listen: Vec::new(),
            state_dir: PathBuf::from("/var/lib/audisp-receive"),
            log: Some(PathBuf::from("/var/log/audit/remote.log")),
            log_max: 8 << 20,
            log_keep: 5,
            dispatcher: None,
            input_name: "remote".into(),
            server: ServerConfig {
                max_per_addr: 1,
                max_connections: 128,
                handshake_timeout: Some(Duration::from_secs(10)),
                idle_timeout: Some(Duration::from_secs(300)),
                space_left: 75 << 20,
                dir: PathBuf::new(),
            },
            store_max: 1 << 30,
            tls: Default::default(),
            check_config: false,
        }
    }
}

/// Defaults, then the option file, then the flags.
fn parse() -> Result<Opts, StartError> {
    let (mut o, _) = option_file::settings(
        "audisp-receive",
        CONFIG_VAR,
        DEFAULT_CONFIG,
        std::env::args_os().skip(1).collect(),
        apply_flags,
        apply_file,
    )?;
    o.server.dir = o.state_dir.clone();
    Ok(o)
}

/// Applies the command line to `o` (`--listen` flags replace the file's
/// list); returns what it says of the option file.
fn apply_flags(o: &mut Opts, args: Vec<OsString>) -> Result<FileFlags, String> {
    use lexopt::prelude::*;
    let mut file = FileFlags::default();
    let mut listen = Vec::new();
    let mut p = lexopt::Parser::from_args(args);
    let e = |e: lexopt::Error| e.to_string();
    while let Some(arg) = p.next().map_err(e)? {
        match arg {
            Long("config") => file.config = Some(p.value().map_err(e)?.into()),
            Long("no-config") => file.none = true,
            Long("check-config") => o.check_config = true,
            Long("listen") => listen.push(flag_value(&mut p, "listen", check_addr)?),
            Long("state-dir") => o.state_dir = p.value().map_err(e)?.into(),
            Long("log") => o.log = Some(p.value().map_err(e)?.into()),
            Long("no-log") => o.log = None,
            Long("log-max-size") => o.log_max = flag_value(&mut p, "log-max-size", parse_size)?,
            Long("log-keep") => o.log_keep = flag_value(&mut p, "log-keep", number)?,
            Long("dispatcher") => o.dispatcher = Some(p.value().map_err(e)?.into()),
            Long("input-name") => o.input_name = flag_value(&mut p, "input-name", text)?,
            Long("max-per-addr") => {
                o.server.max_per_addr = flag_value(&mut p, "max-per-addr", number)?
            }
            Long("max-connections") => {
                o.server.max_connections = flag_value(&mut p, "max-connections", number)?
            }
            Long("handshake-timeout") => {
                o.server.handshake_timeout = flag_value(&mut p, "handshake-timeout", off_if_zero)?
            }
            Long("idle-timeout") => {
                o.server.idle_timeout = flag_value(&mut p, "idle-timeout", off_if_zero)?
            }
            Long("space-left") => {
                o.server.space_left = flag_value(&mut p, "space-left", parse_size)?
            }
            Long("store-max") => o.store_max = flag_value(&mut p, "store-max", parse_size)?,
            Long("tls-cert") => o.tls.cert = Some(p.value().map_err(e)?.into()),
            Long("tls-key") => o.tls.key = Some(p.value().map_err(e)?.into()),
            Long("tls-ca") => o.tls.ca = Some(p.value().map_err(e)?.into()),
            Long("help") | Short('h') => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            _ => return Err(arg.unexpected().to_string()),
        }
    }
    if !listen.is_empty() {
        o.listen = listen;
    }
    Ok(file)
}

/// Takes the option file's values into `o`; mistakes are recorded by `r`.
fn apply_file<'s>(r: &mut Reader<'s>, top: &Table<'_, 's>, o: &mut Opts) {
    r.reject_unknown(
        top,
        &[
            "listen",
            "state_dir",
            "log",
            "log_max_size",
            "log_keep",
            "dispatcher",
            "input_name",
            "max_per_addr",
            "max_connections",
            "handshake_timeout",
            "idle_timeout",
            "space_left",
            "store_max",
            "tls",
        ],
        flag_spelling,
    );
    set(&mut o.listen, r.list(top, "listen", check_addr));
    set(&mut o.state_dir, r.path(top, "state_dir"));
    set(&mut o.log, r.path_or_off(top, "log"));
    set(&mut o.log_max, r.size(top, "log_max_size"));
    set(&mut o.log_keep, r.count(top, "log_keep"));
    set(&mut o.dispatcher, r.path_or_off(top, "dispatcher"));
    set(&mut o.input_name, r.string(top, "input_name"));
    set(&mut o.server.max_per_addr, r.count(top, "max_per_addr"));
    set(
        &mut o.server.max_connections,
        r.count(top, "max_connections"),
    );
    if let Some(d) = r.duration(top, "handshake_timeout") {
        o.server.handshake_timeout = (!d.is_zero()).then_some(d);
    }
    if let Some(d) = r.duration(top, "idle_timeout") {
        o.server.idle_timeout = (!d.is_zero()).then_some(d);
    }
    set(&mut o.server.space_left, r.size(top, "space_left"));
    set(&mut o.store_max, r.size(top, "store_max"));
    if let Some(t) = r.table(top, "tls") {
        r.reject_unknown(&t, &["cert", "key", "ca"], |_| None);
        for (key, slot) in [
            ("cert", &mut o.tls.cert),
            ("key", &mut o.tls.key),
            ("ca", &mut o.tls.ca),
        ] {
            if let Some(p) = r.path(&t, key) {
                *slot = Some(p);
            }
        }
    }
}

/// Where a flag's name written as a top-level key belongs instead.
fn flag_spelling(key: &str) -> Option<String> {
    let k = key.replace('-', "_");
    if let Some(rest) = k.strip_prefix("tls_") {
        return Some(format!("write {rest} in a [tls] section"));
    }
    (k == "no_log").then(|| "write log = false".to_string())
}

/// An address to listen on, checked to be ADDR:PORT.
fn check_addr(v: &str) -> Result<String, String> {
    let ok = v.rsplit_once(':').is_some_and(|(host, port)| {
        !host.trim_matches(|c| c == '[' || c == ']').is_empty() && port.parse::<u16>().is_ok()
    });
    if ok {
        Ok(v.to_string())
    } else {
        Err("is not ADDR:PORT; write it such as \"0.0.0.0:60\" or \"[::]:60\"".into())
    }
}

/// A whole number that fits `N`.
fn number<N: std::str::FromStr>(v: &str) -> Result<N, String> {
    v.parse()
        .map_err(|_| "is not a whole number in range".to_string())
}

fn main() {
    audisp::systemd::logging::init("audisp-receive", "info");
    let opts = option_file::settings_to_run("audisp-receive", USAGE, parse(), |o| o.check_config);
    if let Err(e) = run(opts) {
        tracing::error!("{e}");
        std::process::exit(1);
    }
}

fn run(opts: Opts) -> Result<(), String> {
    // Signals are waited for by the main thread only.
    let mut sigs = SigSet::empty();
    sigs.add(Signal::SIGTERM);
    sigs.add(Signal::SIGINT);
    sigs.thread_block()
        .map_err(|e| format!("cannot block signals: {e}"))?;
    // One receiver per store, until this returns.
    let _state_lock = audisp::statelock::StateLock::dir(&opts.state_dir)?;

    // Before any thread starts (the variables are removed).
    let mut listeners: Vec<TcpListener> = audisp::systemd::activation::Passed::from_env()?
        .take_tcp_listeners()?
        .into_iter()
        .map(TcpListener::from)
        .collect();
    for a in &opts.listen {
        listeners.push(TcpListener::bind(a).map_err(|e| format!("cannot listen on {a}: {e}"))?);
    }
    if listeners.is_empty() {
        return Err(
            "nothing to listen on: give --listen ADDR:PORT or start from audisp-receive.socket"
                .into(),
        );
    }
    let wrap: Arc<Wrap> =
        match audisp::remote::tls::server_wrap(&opts.tls, opts.server.handshake_timeout)? {
            Some(w) => w,
            None => Arc::new(|s| Ok(Box::new(s) as Box<dyn Transport>)),
        };
    let store = Arc::new(
        Store::open(
            &opts.state_dir,
            Limits {
                segment_size: 64 << 20,
                max_size: opts.store_max,
                memory: 32 << 20,
            },
        )
        .map_err(|e| format!("cannot open the store in {}: {e}", opts.state_dir.display()))?,
    );
    let shared = Arc::new(Shared::new(store.clone(), opts.server.clone()));

    // Consumers of the store; the store keeps what the slowest still needs.
    let log_pos = Arc::new(AtomicU64::new(u64::MAX));
    let feed_pos = Arc::new(AtomicU64::new(u64::MAX));
    let mut workers = Vec::new();
    if let Some(path) = &opts.log {
        let mut w = LogWriter::open(LogConfig {
            path: path.clone(),
            max_size: opts.log_max,
            keep: opts.log_keep,
            state_dir: opts.state_dir.clone(),
        })
        .map_err(|e| format!("cannot open the log: {e}"))?;
        log_pos.store(w.next(), Ordering::Release);
        let (shared, pos) = (shared.clone(), log_pos.clone());
        workers.push(std::thread::spawn(move || {
            w.run(
                &shared.store,
                &|| shared.stop.load(Ordering::Acquire),
                &|n| pos.store(n, Ordering::Release),
            )
        }));
    }
    if let Some(sock) = opts.dispatcher.clone() {
        feed_pos.store(1, Ordering::Release);
        let (shared, pos, name) = (shared.clone(), feed_pos.clone(), opts.input_name.clone());
        workers.push(std::thread::spawn(move || {
            feed(&shared, &sock, &name, &pos)
        }));
    }
    {
        let (shared, a, b) = (shared.clone(), log_pos.clone(), feed_pos.clone());
        std::thread::spawn(move || loop {
            std::thread::sleep(Duration::from_secs(5));
            let upto = a.load(Ordering::Acquire).min(b.load(Ordering::Acquire));
            if upto != u64::MAX {
                if let Err(e) = shared.store.retain_from(upto) {
                    tracing::warn!("cannot trim the store: {e}");
                }
            }
        });
    }

    let liveness = Liveness::new();
    let srv = {
        let shared = shared.clone();
        let beat = liveness.register("accept loop");
        std::thread::spawn(move || server::serve(listeners, shared, wrap, beat))
    };
    let notify = Notifier::from_env();
    let _ = notify.ready("receiving");
    tracing::info!("audisp-receive ready (store {})", opts.state_dir.display());

    let sig = wait_for_signal(&sigs, &notify, &liveness)?;
    tracing::info!("{sig:?}: shutting down, telling clients ENDING");
    let _ = notify.stopping();
    shared.stop.store(true, Ordering::Release);
    match srv.join() {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::error!("server: {e}"),
        Err(_) => tracing::error!("server thread panicked"),
    }
    for w in workers {
        let _ = w.join();
    }
    let c = &shared.counters;
    tracing::info!(
        "stopped: {} records stored, {} duplicates suppressed, {} connections refused or cut",
        c.stored.load(Ordering::Relaxed),
        c.duplicates.load(Ordering::Relaxed),
        c.refused.load(Ordering::Relaxed)
    );
    Ok(())
}

/// Feeds the store into audispd's input socket, numbering records by their
/// store position (the dispatcher drops what it already has).
fn feed(shared: &Shared, sock: &std::path::Path, name: &str, pos: &AtomicU64) {
    let store = &shared.store;
    let epoch = store.journal().id().0;
    let mut warned = false;
    loop {
        let stopping = shared.stop.load(Ordering::Acquire);
        let (mut client, have) = match InputClient::connect_relayed(sock, name, epoch) {
            Ok(x) => {
                tracing::info!("feeding audispd at {} as input {name:?}", sock.display());
                warned = false;
                x
            }
            Err(e) => {
                if !warned {
                    tracing::warn!("cannot reach audispd at {}: {e}; retrying", sock.display());
                    warned = true;
                }
                if stopping {
                    return;
                }
                std::thread::sleep(Duration::from_secs(1));
                continue;
            }
        };
        pos.store(have + 1, Ordering::Release);
        let mut reader = store.journal().reader(have + 1);
        let result: Result<(), String> = (|| loop {
            let synced = store.journal().synced();
            let mut batch: Vec<(u64, u32, Vec<u8>, Option<Origin>)> = Vec::new();
            let got = reader
                .read(1 << 20, &mut |e| {
                    if e.seq >= synced {
                        return Step::StopBefore;
                    }
                    batch.push((e.seq, e.rtype, e.text.to_vec(), e.origin));
                    Step::Next
                })
                .map_err(|e| e.to_string())?;
            if let ReadOutcome::Lost { from, to, .. } = got {
                tracing::error!("store entries {from}..{to} lost before reaching audispd");
            }
            if let Some(&(last, ..)) = batch.last() {
                // Each record's first origin goes with it: audispd's loop
                // guard drops its own records coming back.
                client
                    .send_with_origin(batch.iter().map(|(s, t, b, o)| (*s, *t, &b[..], *o)))
                    .map_err(|e| e.to_string())?;
                client
                    .wait_acked(last, Duration::from_secs(60))
                    .map_err(|e| e.to_string())?;
                pos.store(last + 1, Ordering::Release);
            } else {
                if shared.stop.load(Ordering::Acquire) {
                    return Ok(());
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        })();
        match result {
            Ok(()) => return,
            Err(e) => {
                tracing::warn!("audispd input connection lost: {e}; reconnecting");
                std::thread::sleep(Duration::from_millis(500));
            }
        }
    }
}

/// Waits for SIGTERM/SIGINT (blocked in `sigs`). Under a service manager
/// with `WatchdogSec=`, meanwhile feeds the watchdog four times per interval,
/// but only while the accept loop shows progress: a wedged receiver stops
/// pinging and systemd restarts it.
fn wait_for_signal(
    sigs: &SigSet,
    notify: &Notifier,
    liveness: &Liveness,
) -> Result<Signal, String> {
    let Some(interval) = notify.watchdog() else {
        return sigs.wait().map_err(|e| format!("sigwait: {e}"));
    };
    let sfd = SignalFd::with_flags(sigs, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
        .map_err(|e| format!("signalfd: {e}"))?;
    let tick = (interval / 4).max(Duration::from_millis(50));
    let mut stalled = false;
    loop {
        let mut fds = [PollFd::new(sfd.as_fd(), PollFlags::POLLIN)];
        let ms = u16::try_from(tick.as_millis()).unwrap_or(u16::MAX);
        match nix::poll::poll(&mut fds, PollTimeout::from(ms)) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(format!("poll: {e}")),
        }
        if let Ok(Some(info)) = sfd.read_signal() {
            if let Ok(sig) = Signal::try_from(info.ssi_signo as i32) {
                return Ok(sig);
            }
        }
        // A thread that beats every 250 ms is late after half the interval,
        // but never after less than 1.5 s (scheduling on a loaded host).
        match liveness.check((interval / 2).max(Duration::from_millis(1500))) {
            Ok(()) => {
                if stalled {
                    tracing::info!("progress again: feeding the watchdog");
                    stalled = false;
                }
                let _ = notify.watchdog_ping();
            }
            Err(stuck) if !stalled => {
                tracing::error!("not feeding the watchdog: no progress in {stuck:?}");
                stalled = true;
            }
            Err(_) => {}
        }
    }
}
