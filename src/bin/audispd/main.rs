//! `audispd`: the audisp dispatcher daemon.
//!
//! This binary is a thin shell around [`audisp::engine::Engine`]: it reads
//! the command line and the configuration, sets up logging and signals, feeds
//! the engine auditd's stream when auditd started it, and turns signals into
//! engine calls (SIGHUP reload, SIGTERM/SIGINT shutdown, SIGUSR1 state file).

use std::collections::BTreeSet;
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

mod demo;
mod listen;

use audisp::config::{self, Paths};
use audisp::dbus::service::Reloaded;
use audisp::engine::{Engine, Sockets};
use audisp::systemd::notify::Notifier;
use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::signal::Signal;
use nix::sys::signalfd::{SfdFlags, SignalFd};

const USAGE: &str = "\
Usage: audispd [OPTIONS]

The audisp dispatcher: reads audit records (from auditd on standard input,
and from input plugins on its input socket) and hands every record to every
plugin configured in CONFIG_DIR/plugins.d.

Options:
  --config-dir DIR    configuration directory   [env AUDISP_CONFIG_DIR, default /etc/audisp]
  --runtime-dir DIR   sockets and state report  [env AUDISP_RUNTIME_DIR, default /run/audisp]
  --state-dir DIR     journal and cursors       [env AUDISP_STATE_DIR, default /var/lib/audisp]
  --check-config      validate every configuration file, print what is wrong, exit 0 if all is well
  --demo              replay a bundled sample of real audit records through the dispatcher
                      to example plugins in a temporary directory (no root, no auditd needed)
  --version           print the version
  -h, --help          print this help

Signals: SIGHUP reloads plugins.d, SIGTERM/SIGINT stop (plugins get
[shutdown] timeout to catch up), SIGUSR1 writes the state report.
";

struct Args {
    config_dir: Option<PathBuf>,
    runtime_dir: Option<PathBuf>,
    state_dir: Option<PathBuf>,
    check: bool,
    demo: bool,
}

fn parse_args() -> Result<Option<Args>, lexopt::Error> {
    use lexopt::prelude::*;
    let mut args = Args {
        config_dir: None,
        runtime_dir: None,
        state_dir: None,
        check: false,
        demo: false,
    };
    let mut p = lexopt::Parser::from_env();
    while let Some(arg) = p.next()? {
        match arg {
            Long("config-dir") => args.config_dir = Some(p.value()?.into()),
            Long("runtime-dir") => args.runtime_dir = Some(p.value()?.into()),
            Long("state-dir") => args.state_dir = Some(p.value()?.into()),
            Long("check-config") => args.check = true,
            Long("demo") => args.demo = true,
            Long("version") => {
                println!("audispd {}", env!("CARGO_PKG_VERSION"));
                return Ok(None);
            }
            Short('h') | Long("help") => {
                print!("{USAGE}");
                return Ok(None);
            }
            _ => return Err(arg.unexpected()),
        }
    }
    Ok(Some(args))
}

/// The signals the daemon takes from its signalfd.
const HANDLED: [Signal; 4] = [
    Signal::SIGHUP,
    Signal::SIGTERM,
    Signal::SIGINT,
    Signal::SIGUSR1,
];

/// Blocks [`HANDLED`] the moment the program is loaded, before the Rust
/// runtime and `main` (a constructor run by the dynamic loader): a reload
/// or state-report request that arrives while audispd starts must wait for
/// it, not kill it. `main` blocks them again to learn of a failure.
extern "C" fn hold_signals_at_load() {
    let _ = audisp::signals::hold(&HANDLED);
}

#[used]
#[link_section = ".init_array"]
static HOLD_SIGNALS_AT_LOAD: extern "C" fn() = hold_signals_at_load;

fn main() -> ExitCode {
    // Blocked already (see `hold_signals_at_load`), and before any thread
    // starts. Taken from a signalfd in `run`; the other modes release them.
    let held = match audisp::signals::hold(&HANDLED) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("audispd: {e}");
            return ExitCode::FAILURE;
        }
    };
    let args = match parse_args() {
        Ok(Some(a)) => a,
        Ok(None) => return ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("audispd: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    if args.demo || args.check {
        if let Err(e) = held.clone().release() {
            eprintln!("audispd: {e}");
            return ExitCode::FAILURE;
        }
    }
    let paths = Paths::resolve(args.config_dir, args.runtime_dir, args.state_dir, &|k| {
        std::env::var_os(k)
    });
    if args.demo {
        audisp::systemd::logging::init("audispd", "warn");
        return match demo::run() {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("audispd --demo: {e}");
                ExitCode::FAILURE
            }
        };
    }
    if args.check {
        let (report, ok) = config::check(&paths);
        print!("{report}");
        return if ok {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        };
    }
    audisp::systemd::logging::init("audispd", "info");
    let notifier = std::sync::Arc::new(Notifier::from_env());
    let passed = match audisp::systemd::activation::Passed::from_env() {
        Ok(p) => p,
        Err(e) => {
            tracing::error!("socket activation: {e}");
            return ExitCode::FAILURE;
        }
    };
    match run(paths, &notifier, passed, &held) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// Loads the configuration, logging every diagnostic (`file:line: what is
/// wrong`). Returns the config (None if the main file is broken) and the
/// names of plugins whose files are broken, which keep running as they are.
fn load(paths: &Paths) -> (Option<config::Config>, BTreeSet<String>) {
    let loaded = config::load(paths);
    for d in &loaded.diagnostics {
        tracing::error!(message_id = audisp::log_ids::CONFIG_ERROR, "{d}");
    }
    (loaded.config, loaded.skipped)
}

/// Standard input, if auditd (or a pipe or file) feeds us; not when it is a
/// terminal or /dev/null (as under systemd).
fn stdin_source() -> Option<OwnedFd> {
    use nix::sys::stat::{fstat, SFlag};
    let st = fstat(std::io::stdin().as_fd()).ok()?;
    let kind = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT;
    if kind == SFlag::S_IFCHR {
        return None;
    }
    // A private, close-on-exec copy: plugin programs must never inherit
    // auditd's stream.
    let fd = nix::fcntl::fcntl(std::io::stdin(), nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(3)).ok()?;
    // SAFETY: F_DUPFD_CLOEXEC returned a new descriptor we own.
    Some(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) })
}

fn run(
    paths: Paths,
    notifier: &std::sync::Arc<Notifier>,
    mut passed: audisp::systemd::activation::Passed,
    signals: &audisp::signals::Held,
) -> Result<(), String> {
    let (config, _) = load(&paths);
    let Some(config) = config else {
        return Err(format!(
            "not starting: {}/audispd.toml is broken (see above; `audispd --check-config` lists every problem)",
            paths.config_dir.display()
        ));
    };
    // Signals are taken synchronously from a signalfd; `main` blocked them
    // first thing, so every thread has them blocked (threads inherit the
    // mask; plugin programs get theirs reset).
    let sfd = SignalFd::with_flags(
        signals.set(),
        SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK,
    )
    .map_err(|e| format!("signalfd: {e}"))?;
    std::fs::create_dir_all(&paths.runtime_dir)
        .map_err(|e| format!("{}: {e}", paths.runtime_dir.display()))?;
    // Journal, cursors and checkpoint: private to audispd (0700), and one
    // audispd per state directory, until this returns.
    let _state_lock = audisp::statelock::StateLock::dir(&paths.state_dir)?;
    let stats_interval = config.main.stats.interval;
    let listeners = listen::passed_sockets(&mut passed)?;
    let sockets = Sockets {
        // The engine reads it only when [input.stdin] is enabled.
        stdin: stdin_source(),
        input_listener: listeners.input,
    };
    let server = format!("audispd {}", env!("CARGO_PKG_VERSION"));
    // Read here, once: a reload that changes it asks for a restart.
    let dbus_config = std::sync::Arc::new(config.main.dbus.clone());
    let engine = Engine::start(config.engine_settings(), &paths.state_dir, sockets, &server)
        .map_err(|e| format!("cannot start: {e}"))?;
    // The D-Bus adapter ([dbus] in audispd.toml); without a bus we run on.
    let _dbus = dbus_config.enabled.then(|| {
        let (e, p, n, d) = (
            engine.clone(),
            paths.clone(),
            notifier.clone(),
            dbus_config.clone(),
        );
        let reload_hook = std::sync::Arc::new(move || reload(&e, &p, &n, &d));
        audisp::dbus::start(engine.clone(), &dbus_config, reload_hook)
            .map_err(|e| tracing::error!("D-Bus: {e}; running on without it"))
    });
    // The metrics endpoint, when systemd passed its socket; without it we
    // run on.
    let _metrics = listeners.metrics.and_then(|fd| {
        audisp::metrics::start(engine.clone(), fd, env!("CARGO_PKG_VERSION"))
            .inspect(|_| tracing::info!("metrics endpoint socket passed by the service manager"))
            .map_err(|e| tracing::error!("metrics endpoint: {e}; running on without it"))
            .ok()
    });
    tracing::info!(
        plugins = ?engine.plugin_names(),
        journal = %engine.journal().id(),
        "audispd started; journal positions {}..{}",
        engine.journal().start(),
        engine.journal().end()
    );
    let _ = notifier.ready(&status_line(&engine));
    let mut last_stats = Instant::now();
    let mut last_status = Instant::now();
    let mut last_ping = Instant::now();
    let watchdog = notifier.watchdog();
    let mut stuck_reported = false;
    if let Some(w) = watchdog {
        tracing::info!("watchdog enabled: {w:?}");
    }
    loop {
        let mut fds = [
            PollFd::new(sfd.as_fd(), PollFlags::POLLIN),
            PollFd::new(engine.events_fd(), PollFlags::POLLIN),
        ];
        let _ = nix::poll::poll(&mut fds, PollTimeout::from(250u16));
        engine.tick();
        if notifier.enabled() && last_status.elapsed() >= std::time::Duration::from_secs(1) {
            last_status = Instant::now();
            let _ = notifier.status(&status_line(&engine));
        }
        if let Some(w) = watchdog {
            if last_ping.elapsed() >= w / 4 {
                // Feed the watchdog only while every thread that moves
                // records is making progress.
                match engine.liveness((w / 2).max(std::time::Duration::from_millis(1500))) {
                    Ok(()) => {
                        last_ping = Instant::now();
                        let _ = notifier.watchdog_ping();
                        if std::mem::take(&mut stuck_reported) {
                            tracing::info!(
                                "every thread makes progress again; feeding the watchdog"
                            );
                        }
                    }
                    // Said once per stall, not at every check.
                    Err(stuck) if !stuck_reported => {
                        stuck_reported = true;
                        tracing::error!("not feeding the watchdog: no progress in {stuck:?}")
                    }
                    Err(_) => {}
                }
            }
        }
        if engine.stdin_closed() {
            engine.clear_events();
            tracing::info!("auditd closed our input; shutting down");
            break;
        }
        if let Some(every) = stats_interval {
            if last_stats.elapsed() >= every {
                last_stats = Instant::now();
                log_stats(&engine);
            }
        }
        let mut stop = false;
        while let Ok(Some(sig)) = sfd.read_signal() {
            match Signal::try_from(sig.ssi_signo as i32) {
                Ok(Signal::SIGHUP) => {
                    let _ = reload(&engine, &paths, notifier, &dbus_config);
                }
                Ok(Signal::SIGUSR1) => match engine.write_state_file() {
                    Ok(p) => tracing::info!("state report written to {}", p.display()),
                    Err(e) => tracing::error!("cannot write the state report: {e}"),
                },
                Ok(Signal::SIGTERM) | Ok(Signal::SIGINT) => stop = true,
                _ => {}
            }
        }
        if stop {
            tracing::info!("stopping");
            break;
        }
    }
    let _ = notifier.stopping();
    let behind = engine.shutdown();
    let snap = engine.snapshot();
    let (read, lost) = (snap.records_in(), snap.records_lost());
    let plugins = if behind.is_empty() {
        "every plugin had every record stored".to_string()
    } else {
        format!("plugins {behind:?} had not caught up: their records wait in the journal for the next start")
    };
    if lost > 0 {
        tracing::warn!(
            message_id = audisp::log_ids::RECORD_LOSS,
            read,
            lost,
            "stopped; {plugins}; {read} records read, {} stored, {lost} LOST (see the earlier lines about them)",
            read - lost
        );
    } else if behind.is_empty() {
        tracing::info!(
            read,
            lost,
            "stopped; {plugins}; {read} records read, none lost"
        );
    } else {
        tracing::warn!(
            read,
            lost,
            "stopped; {plugins}; {read} records read, none lost"
        );
    }
    Ok(())
}

/// Reloads plugins.d (SIGHUP, or `Reload` on D-Bus), telling the service
/// manager with `RELOADING=1` … `READY=1` whichever asked. `dbus` is the
/// `[dbus]` audispd started with.
fn reload(
    engine: &Engine,
    paths: &Paths,
    notifier: &Notifier,
    dbus: &config::DbusConfig,
) -> Result<Reloaded, String> {
    let _ = notifier.reloading();
    let result = reload_config(engine, paths, dbus);
    let _ = notifier.ready(&status_line(engine));
    result
}

fn reload_config(
    engine: &Engine,
    paths: &Paths,
    dbus: &config::DbusConfig,
) -> Result<Reloaded, String> {
    tracing::info!("reloading the configuration");
    let (config, broken) = load(paths);
    let Some(config) = config else {
        let msg = format!(
            "reload refused: {}/audispd.toml is broken; running on with the previous configuration",
            paths.config_dir.display()
        );
        tracing::error!(message_id = audisp::log_ids::CONFIG_ERROR, "{msg}");
        return Err(msg);
    };
    let s = engine.reload(config.engine_settings(), &broken);
    tracing::info!(
        added = ?s.added,
        removed = ?s.removed,
        changed = ?s.changed,
        kept_broken = ?broken,
        "reloaded"
    );
    let mut needs_restart: Vec<String> = s
        .needs_restart
        .iter()
        .map(|&part| config::section_of(part).to_string())
        .collect();
    if config.main.dbus != *dbus {
        needs_restart.push("[dbus]".to_string());
    }
    if !needs_restart.is_empty() {
        tracing::warn!(
            "changes to {:?} take effect at the next restart",
            needs_restart
        );
    }
    Ok(Reloaded {
        summary: s,
        needs_restart,
    })
}

/// One line for `systemctl status`: records in, and each plugin's backlog.
fn status_line(engine: &Engine) -> String {
    let snap = engine.snapshot();
    let mut s = format!("{} records in", snap.records_in());
    for p in &snap.plugins {
        s.push_str(&format!("; {} {} queued {}", p.name, p.state, p.queued));
    }
    s
}

fn log_stats(engine: &Engine) {
    let snap = engine.snapshot();
    for i in &snap.inputs {
        tracing::info!(
            input = %i.name,
            records = i.records,
            malformed = i.malformed,
            unparsed = i.unparsed,
            duplicates = i.duplicates,
            lost = i.lost,
            "input stats"
        );
    }
    for p in &snap.plugins {
        tracing::info!(
            plugin = %p.name,
            state = %p.state,
            queued = p.queued,
            spooled = p.spooled,
            delivered = p.delivered,
            acked = p.acked,
            dropped = p.dropped,
            reconnects = p.reconnects,
            restarts = p.restarts,
            "plugin stats"
        );
    }
}
