//! `audisp-bridge`: the link from auditd to a dispatcher that systemd runs.
//!
//! auditd starts its plugins itself and feeds them on standard input, so a
//! dispatcher started by auditd cannot be a systemd service (no socket
//! activation, no watchdog, no restart policy of its own). The bridge is the
//! small auditd plugin in between: auditd starts it (an
//! `/etc/audit/plugins.d/audisp-bridge.conf`), it reads auditd's stream
//! continuously — every record goes into its own buffer, never waiting for
//! the dispatcher, so auditd is never blocked — and relays the records to
//! `audisp.service`'s input socket as an input plugin. The buffer is an
//! [`audisp::journal::Journal`]: the newest records in memory, all of them
//! on disk (`--state-dir`), kept until the dispatcher acknowledges them, so
//! a dispatcher restart (or the bridge's own) loses nothing and the
//! dispatcher stores each record once (the journal's id is the input's
//! epoch, its sequence numbers the input's record numbers).

mod relay;

use std::os::fd::AsFd;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use audisp::framing::{BinaryFraming, Decoder, InputFormat, Item};
use audisp::journal::{Journal, Limits, NewEntry};
use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

const USAGE: &str = "\
Usage: audisp-bridge [OPTIONS]

Started by auditd as a plugin: reads auditd's records on standard input and
relays them to the audisp dispatcher's input socket, keeping every record
(in memory, then on disk) until the dispatcher has acknowledged it.

Options:
  --socket PATH       the dispatcher's input socket [env AUDISP_INPUT_SOCKET,
                      default /run/audisp/input.sock]
  --state-dir DIR     the buffer of unacknowledged records [env AUDISP_BRIDGE_STATE_DIR,
                      default /var/lib/audisp-bridge]
  --format FORMAT     what auditd writes: string (default) or binary
  --framing F         binary frames: auto (default), padded (auditd <= 4.1.0), exact
  --name NAME         the input's name at the dispatcher (default auditd)
  --max-size MIB      most disk the buffer may use, in MiB (default 1024); beyond
                      it the oldest unsent records are dropped and logged
  --memory MIB        newest part of the buffer also kept in memory (default 8)
  --version           print the version
  -h, --help          print this help

At the end of input (auditd stopping) or on SIGTERM it keeps sending for up
to 5 seconds; whatever is still unacknowledged is sent at the next start.
";

/// How long the bridge goes on sending after its input ended.
const FLUSH_LIMIT: Duration = Duration::from_secs(5);

struct Args {
    socket: PathBuf,
    state_dir: PathBuf,
    format: InputFormat,
    name: String,
    max_size: u64,
    memory: u64,
}

fn parse_args() -> Result<Option<Args>, String> {
    use lexopt::prelude::*;
    let env = |k: &str, d: &str| std::env::var_os(k).map_or_else(|| PathBuf::from(d), Into::into);
    let mut a = Args {
        socket: env("AUDISP_INPUT_SOCKET", "/run/audisp/input.sock"),
        state_dir: env("AUDISP_BRIDGE_STATE_DIR", "/var/lib/audisp-bridge"),
        format: InputFormat::String,
        name: "auditd".into(),
        max_size: 1024 << 20,
        memory: 8 << 20,
    };
    let mut binary = false;
    let mut framing = BinaryFraming::Auto;
    let mut p = lexopt::Parser::from_env();
    let mib = |v: String, what: &str| -> Result<u64, String> {
        match v.parse::<u64>() {
            Ok(n) if n > 0 => Ok(n << 20),
            _ => Err(format!("{what} {v:?}: a whole number of MiB, at least 1")),
        }
    };
    while let Some(arg) = p.next().map_err(|e| e.to_string())? {
        match arg {
            Long("socket") => a.socket = value(&mut p)?.into(),
            Long("state-dir") => a.state_dir = value(&mut p)?.into(),
            Long("name") => a.name = value(&mut p)?,
            Long("format") => {
                binary = match value(&mut p)?.as_str() {
                    "string" => false,
                    "binary" => true,
                    other => return Err(format!("--format {other:?}: string or binary")),
                }
            }
            Long("framing") => {
                framing = match value(&mut p)?.as_str() {
                    "auto" => BinaryFraming::Auto,
                    "padded" => BinaryFraming::Padded,
                    "exact" => BinaryFraming::Exact,
                    other => return Err(format!("--framing {other:?}: auto, padded or exact")),
                }
            }
            Long("max-size") => a.max_size = mib(value(&mut p)?, "--max-size")?,
            Long("memory") => a.memory = mib(value(&mut p)?, "--memory")?,
            Long("version") => {
                println!("audisp-bridge {}", env!("CARGO_PKG_VERSION"));
                return Ok(None);
            }
            Short('h') | Long("help") => {
                print!("{USAGE}");
                return Ok(None);
            }
            _ => return Err(arg.unexpected().to_string()),
        }
    }
    if binary {
        a.format = InputFormat::Binary(framing);
    }
    Ok(Some(a))
}

/// The value of the option just read, as UTF-8.
fn value(p: &mut lexopt::Parser) -> Result<String, String> {
    p.value()
        .map_err(|e| e.to_string())?
        .into_string()
        .map_err(|v| format!("{v:?} is not UTF-8"))
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(Some(a)) => a,
        Ok(None) => return ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("audisp-bridge: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    audisp::systemd::logging::init("audisp-bridge", "info");
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> Result<(), String> {
    // SIGTERM/SIGINT from a signalfd, polled with standard input; blocked in
    // every thread.
    let mut mask = SigSet::empty();
    mask.add(Signal::SIGTERM);
    mask.add(Signal::SIGINT);
    mask.thread_block()
        .map_err(|e| format!("cannot block signals: {e}"))?;
    let sfd = SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
        .map_err(|e| format!("signalfd: {e}"))?;
    // One bridge per buffer, until this returns.
    let _state_lock = audisp::statelock::StateLock::dir(&args.state_dir)?;
    let journal = Journal::open(
        &args.state_dir,
        Limits {
            segment_size: (args.max_size / 16).clamp(64 << 10, 64 << 20),
            max_size: args.max_size,
            memory: args.memory,
        },
    )
    .map_err(|e| {
        format!(
            "cannot open the buffer in {}: {e}",
            args.state_dir.display()
        )
    })?;
    tracing::info!(
        "audisp-bridge started: relaying to {} as input {:?}; {} records wait in the buffer",
        args.socket.display(),
        args.name,
        journal.end() - journal.start()
    );
    let input_done = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicU64::new(journal.start().saturating_sub(1)));
    let sender = {
        let cfg = relay::Config {
            socket: args.socket.clone(),
            name: args.name.clone(),
            acked: acked.clone(),
        };
        let journal = journal.clone();
        let done = input_done.clone();
        std::thread::Builder::new()
            .name("relay".into())
            .spawn(move || relay::run(cfg, journal, done))
            .map_err(|e| format!("cannot start the relay thread: {e}"))?
    };
    read_input(&journal, args.format, &sfd);
    input_done.store(true, Ordering::SeqCst);
    // The relay stops by itself within FLUSH_LIMIT, unless it is stuck in a
    // send to a dispatcher that does not read (stopped): then leave it.
    let deadline = Instant::now() + FLUSH_LIMIT + Duration::from_secs(2);
    while !sender.is_finished() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    if sender.is_finished() {
        if sender.join().is_err() {
            return Err("the relay thread failed".into());
        }
    } else {
        tracing::warn!("the dispatcher takes no records (stopped?); giving up sending");
    }
    let left = journal
        .end()
        .saturating_sub(acked.load(Ordering::SeqCst) + 1);
    if let Err(e) = journal.sync_upto(journal.end()) {
        tracing::error!(
            message_id = audisp::log_ids::JOURNAL_ERROR,
            "cannot sync the buffer: {e}"
        );
    }
    if left == 0 {
        tracing::info!("input ended; the dispatcher has every record");
    } else {
        tracing::warn!(
            "input ended; {left} records not yet acknowledged stay in {} for the next start",
            args.state_dir.display()
        );
    }
    Ok(())
}

/// Reads auditd's stream into the journal until it ends or a stop signal
/// comes (then what auditd already wrote is still read, for a moment).
fn read_input(journal: &Journal, format: InputFormat, sfd: &SignalFd) {
    let stdin = std::io::stdin();
    let fd = stdin.as_fd();
    let mut decoder = Decoder::new(format);
    let mut buf = vec![0u8; 256 << 10];
    let mut batch: Vec<(Option<u32>, Vec<u8>)> = Vec::new();
    let mut malformed = 0u64;
    let mut stop_at: Option<Instant> = None;
    let mut on_item = |item: Item<'_>, batch: &mut Vec<(Option<u32>, Vec<u8>)>| match item {
        Item::Record { text, type_hint } => batch.push((type_hint, text.to_vec())),
        Item::Malformed(m) => {
            malformed += 1;
            tracing::warn!(
                message_id = audisp::log_ids::INPUT_MALFORMED,
                "standard input: {m}; skipped ({malformed} so far)"
            );
        }
    };
    loop {
        if stop_at.is_some_and(|t| Instant::now() >= t) {
            tracing::warn!(
                "stopping with standard input still open; unread records stay with auditd"
            );
            break;
        }
        let mut fds = [
            PollFd::new(fd, PollFlags::POLLIN),
            PollFd::new(sfd.as_fd(), PollFlags::POLLIN),
        ];
        // After a stop request only a quiet input ends the wait early.
        let wait = if stop_at.is_some() { 100u16 } else { 1000u16 };
        match nix::poll::poll(&mut fds, PollTimeout::from(wait)) {
            Ok(0) if stop_at.is_some() => break,
            Ok(0) => {
                decoder.input_idle(&mut |i| on_item(i, &mut batch));
                store(journal, &mut batch);
                continue;
            }
            Err(Errno::EINTR) => continue,
            Ok(_) => {}
            Err(e) => {
                tracing::error!("poll: {e}");
                break;
            }
        }
        if fds[1].revents().is_some_and(|r| !r.is_empty()) {
            while let Ok(Some(_)) = sfd.read_signal() {}
            if stop_at.is_none() {
                tracing::info!("asked to stop; reading what auditd already wrote");
                stop_at = Some(Instant::now() + Duration::from_secs(2));
            }
        }
        if fds[0].revents().is_none_or(|r| r.is_empty()) {
            continue;
        }
        let n = match nix::unistd::read(fd, &mut buf) {
            Ok(n) => n,
            Err(Errno::EINTR) | Err(Errno::EAGAIN) => continue,
            Err(e) => {
                tracing::error!("reading standard input: {e}; treating it as closed");
                0
            }
        };
        if n == 0 {
            decoder.finish(&mut |i| on_item(i, &mut batch));
            store(journal, &mut batch);
            tracing::info!("standard input closed");
            return;
        }
        decoder.feed(&buf[..n], &mut |i| on_item(i, &mut batch));
        store(journal, &mut batch);
    }
    decoder.input_idle(&mut |i| on_item(i, &mut batch));
    store(journal, &mut batch);
}

/// Appends the decoded records to the journal. A record the journal cannot
/// take (disk error) is kept in `batch` and retried with the next ones.
fn store(journal: &Journal, batch: &mut Vec<(Option<u32>, Vec<u8>)>) {
    if batch.is_empty() {
        return;
    }
    let entries: Vec<NewEntry<'_>> = batch
        .iter()
        .map(|(rtype, text)| NewEntry {
            event: 0,
            source_seq: 0,
            rtype: rtype.unwrap_or(0),
            source: 0,
            flags: 0,
            text: text.into(),
        })
        .collect();
    match journal.append(&entries) {
        Ok(a) => {
            if let Some(before) = a.evicted_before {
                tracing::error!(
                    message_id = audisp::log_ids::RECORD_LOSS,
                    "the buffer is full (--max-size): records before {before} were dropped unsent"
                );
            }
            batch.clear();
        }
        Err(e) => tracing::error!(
            message_id = audisp::log_ids::JOURNAL_ERROR,
            "cannot write the buffer: {e}; keeping {} records in memory",
            batch.len()
        ),
    }
}
