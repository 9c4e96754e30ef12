//! audisp-remote: the sending end of remote logging, an audisp plugin.
//!
//! Every record the dispatcher hands over is appended to a durable spool
//! (a journal in `--spool-dir`) and made durable (group commit per batch)
//! before the batch is acknowledged to the dispatcher; a separate thread
//! ([`audisp::remote::sender`]) sends the spool to the aggregator — stock
//! auditd (`tcp_listen_port`) or audisp-receive (fast mode) — in order,
//! resuming after any crash of either side. Settings come from
//! `/etc/audisp/audisp-remote.toml` (`--config`), flags override them. See
//! `docs/audisp-remote.8.md`.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc};
use std::time::Duration;

use audisp::config::option_file::{
    self, flag_value, off_if_zero, set, text, FileFlags, Reader, StartError, Table,
};
use audisp::config::{parse_duration, parse_size};
use audisp::journal::entry::flags;
use audisp::journal::{Journal, JournalId, Limits, NewEntry, Origin, ReadOutcome, Step};
use audisp::remote::sender::{Action, Actions, SenderConfig, SenderLoop, SenderState};
use audisp::remote::tls::{self, TlsFiles};
use audisp::sdk::{Command, Plugin};
use signal_hook::consts::SIGUSR2;
use signal_hook::iterator::Signals;

const USAGE: &str = "usage: audisp-remote [--config FILE | --no-config] [--check-config]
       [--server HOST:PORT] [--spool-dir DIR] [--spool-max BYTES]
       [--overflow block|drop-oldest] [--sync durable|none] [--no-fast] [--window BYTES]
       [--heartbeat SECS] [--reply-timeout SECS] [--retry-max SECS]
       [--tls-cert F --tls-key F --tls-ca F [--tls-server-name NAME]]
       [--on-network-failure A] [--on-disk-low A] [--on-disk-full A] [--on-disk-error A]
       [--on-remote-ending A]   (A: ignore, log, reconnect, suspend, dispatcher:NAME)
       [--name NAME] [--listen SOCKET]
Settings not given as flags come from FILE (default /etc/audisp/audisp-remote.toml,
or $AUDISP_REMOTE_CONFIG); the server is required in one or the other.";

/// The option file read when neither `--config` nor the variable names one.
const DEFAULT_CONFIG: &str = "/etc/audisp/audisp-remote.toml";
/// The variable that names the option file (tests, relocated installs).
const CONFIG_VAR: &str = "AUDISP_REMOTE_CONFIG";

struct Opts {
    server: String,
    spool_dir: PathBuf,
    spool_max: u64,
    drop_oldest: bool,
    durable: bool,
    fast: bool,
    window: usize,
    heartbeat: Option<Duration>,
    reply_timeout: Duration,
    retry_max: Duration,
    tls: TlsFiles,
    tls_name: Option<String>,
    actions: Actions,
    name: String,
    listen: Option<PathBuf>,
    /// `--check-config`: stop after reading the settings.
    check_config: bool,
}

impl Default for Opts {
    fn default() -> Opts {
        Opts {
            server: String::new(),
            spool_dir: PathBuf::from("/var/lib/audisp-remote"),
            spool_max: 1 << 30,
            drop_oldest: false,
            durable: true,
            fast: true,
            window: 8 << 20,
            heartbeat: Some(Duration::from_secs(60)),
            reply_timeout: Duration::from_secs(5),
            retry_max: Duration::from_secs(30),
            tls: TlsFiles::default(),
            tls_name: None,
            actions: Actions::default(),
            name: "remote".into(),
            listen: None,
            check_config: false,
        }
    }
}

/// `--overflow` / `overflow`: whether the oldest unsent records are dropped.
const OVERFLOW: &[(&str, bool)] = &[("block", false), ("drop-oldest", true)];
/// `--sync` / `sync`: whether each batch is fsynced.
const SYNC: &[(&str, bool)] = &[("durable", true), ("none", false)];

/// Defaults, then the option file, then the flags.
fn parse() -> Result<Opts, StartError> {
    let (o, source) = option_file::settings(
        "audisp-remote",
        CONFIG_VAR,
        DEFAULT_CONFIG,
        std::env::args_os().skip(1).collect(),
        apply_flags,
        apply_file,
    )?;
    if o.server.is_empty() {
        return Err(StartError::Usage(match source {
            None => {
                "no server: give --server HOST:PORT (--no-config reads no settings file)".into()
            }
            Some(src) => format!(
                "no server: set server = \"HOST:PORT\" in {} or give --server HOST:PORT",
                src.path.display()
            ),
        }));
    }
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
            Long("server") => o.server = flag_value(&mut p, "server", check_server)?,
            Long("spool-dir") => o.spool_dir = p.value().map_err(e)?.into(),
            Long("spool-max") => o.spool_max = flag_value(&mut p, "spool-max", parse_size)?,
            Long("overflow") => {
                o.drop_oldest = flag_value(&mut p, "overflow", |v| word(OVERFLOW, v))?
            }
            Long("sync") => o.durable = flag_value(&mut p, "sync", |v| word(SYNC, v))?,
            Long("no-fast") => o.fast = false,
            Long("window") => o.window = flag_value(&mut p, "window", size)?,
            Long("heartbeat") => o.heartbeat = flag_value(&mut p, "heartbeat", off_if_zero)?,
            Long("reply-timeout") => {
                o.reply_timeout = flag_value(&mut p, "reply-timeout", parse_duration)?
            }
            Long("retry-max") => o.retry_max = flag_value(&mut p, "retry-max", parse_duration)?,
            Long("tls-cert") => o.tls.cert = Some(p.value().map_err(e)?.into()),
            Long("tls-key") => o.tls.key = Some(p.value().map_err(e)?.into()),
            Long("tls-ca") => o.tls.ca = Some(p.value().map_err(e)?.into()),
            Long("tls-server-name") => {
                o.tls_name = Some(flag_value(&mut p, "tls-server-name", text)?)
            }
            Long("on-network-failure") => {
                o.actions.network_failure = flag_value(&mut p, "on-network-failure", action)?
            }
            Long("on-disk-low") => o.actions.disk_low = flag_value(&mut p, "on-disk-low", action)?,
            Long("on-disk-full") => {
                o.actions.disk_full = flag_value(&mut p, "on-disk-full", action)?
            }
            Long("on-disk-error") => {
                o.actions.disk_error = flag_value(&mut p, "on-disk-error", action)?
            }
            Long("on-remote-ending") => {
                o.actions.remote_ending = flag_value(&mut p, "on-remote-ending", action)?
            }
            Long("name") => o.name = flag_value(&mut p, "name", text)?,
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
        &[
            "server",
            "spool_dir",
            "spool_max",
            "overflow",
            "sync",
            "fast",
            "window",
            "heartbeat",
            "reply_timeout",
            "retry_max",
            "name",
            "listen",
            "tls",
            "failure",
        ],
        flag_spelling,
    );
    set(&mut o.server, r.parsed(top, "server", check_server));
    set(&mut o.spool_dir, r.path(top, "spool_dir"));
    set(&mut o.spool_max, r.size(top, "spool_max"));
    set(
        &mut o.drop_oldest,
        r.choice(top, "overflow", "overflow policy", OVERFLOW),
    );
    set(&mut o.durable, r.choice(top, "sync", "sync policy", SYNC));
    set(&mut o.fast, r.bool(top, "fast"));
    set(&mut o.window, r.size(top, "window"));
    if let Some(d) = r.duration(top, "heartbeat") {
        o.heartbeat = (!d.is_zero()).then_some(d);
    }
    set(&mut o.reply_timeout, r.duration(top, "reply_timeout"));
    set(&mut o.retry_max, r.duration(top, "retry_max"));
    set(&mut o.name, r.string(top, "name"));
    set(&mut o.listen, r.path(top, "listen").map(Some));
    if let Some(t) = r.table(top, "tls") {
        r.reject_unknown(&t, &["cert", "key", "ca", "server_name"], |_| None);
        for (key, slot) in [
            ("cert", &mut o.tls.cert),
            ("key", &mut o.tls.key),
            ("ca", &mut o.tls.ca),
        ] {
            if let Some(p) = r.path(&t, key) {
                *slot = Some(p);
            }
        }
        if let Some(n) = r.string(&t, "server_name") {
            o.tls_name = Some(n);
        }
    }
    if let Some(t) = r.table(top, "failure") {
        let a = &mut o.actions;
        let cases = [
            ("network_failure", &mut a.network_failure),
            ("disk_low", &mut a.disk_low),
            ("disk_full", &mut a.disk_full),
            ("disk_error", &mut a.disk_error),
            ("remote_ending", &mut a.remote_ending),
        ];
        let names: Vec<&str> = cases.iter().map(|(k, _)| *k).collect();
        r.reject_unknown(&t, &names, |_| None);
        for (key, slot) in cases {
            set(slot, r.parsed(&t, key, action));
        }
    }
}

/// Where a flag's name written as a top-level key belongs instead.
fn flag_spelling(key: &str) -> Option<String> {
    let k = key.replace('-', "_");
    if let Some(rest) = k.strip_prefix("tls_") {
        return Some(format!("write {rest} in a [tls] section"));
    }
    if let Some(rest) = k.strip_prefix("on_") {
        return Some(format!("write {rest} in a [failure] section"));
    }
    (k == "no_fast").then(|| "write fast = false".to_string())
}

/// A failure action, as `--on-*` and `[failure]` write it.
fn action(v: &str) -> Result<Action, String> {
    Action::parse(v).map_err(|_| {
        "is not a failure action; use \"ignore\", \"log\", \"reconnect\", \"suspend\" or \"dispatcher:NAME\" (NAME: an [actions.NAME] of this plugin's plugins.d file; lower-case letters, digits, '-', '_')".to_string()
    })
}

/// The aggregator's address, checked to be HOST:PORT.
fn check_server(v: &str) -> Result<String, String> {
    let ok = v.rsplit_once(':').is_some_and(|(host, port)| {
        !host.trim_matches(|c| c == '[' || c == ']').is_empty()
            && port.parse::<u16>().is_ok_and(|p| p > 0)
    });
    if ok {
        Ok(v.to_string())
    } else {
        Err(
            "is not HOST:PORT; write it such as \"collector.example:60\" or \"[2001:db8::1]:60\""
                .into(),
        )
    }
}

/// One of `choices`, by name.
fn word<T: Copy>(choices: &[(&str, T)], v: &str) -> Result<T, String> {
    match choices.iter().find(|(n, _)| *n == v) {
        Some((_, t)) => Ok(*t),
        None => {
            let names: Vec<&str> = choices.iter().map(|(n, _)| *n).collect();
            Err(format!("is not one of {}", names.join(", ")))
        }
    }
}

/// A size in bytes (`"64M"`) that fits in memory.
fn size(v: &str) -> Result<usize, String> {
    usize::try_from(parse_size(v)?).map_err(|_| "is too large".to_string())
}

fn main() {
    // SIGUSR2 (resume) must not kill a sender that is still starting; its
    // handler takes it once installed.
    let usr2 = match audisp::signals::hold(&[nix::sys::signal::Signal::SIGUSR2]) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("audisp-remote: {e}");
            std::process::exit(1);
        }
    };
    audisp::systemd::logging::init("audisp-remote", "info");
    let opts = option_file::settings_to_run("audisp-remote", USAGE, parse(), |o| o.check_config);
    if let Err(e) = run(opts, usr2) {
        tracing::error!("{e}");
        std::process::exit(1);
    }
}

/// How many bytes of the spool the aggregator has not acknowledged, to
/// the batch: what `--overflow block` holds against `--spool-max`. (The
/// journal's own measure counts whole 64 MiB segments, too coarse for a
/// limit that may be smaller.)
struct Backlog {
    /// (sequence number after a batch, bytes spooled up to its end).
    marks: VecDeque<(u64, u64)>,
    /// Bytes spooled in all.
    total: u64,
    /// Bytes spooled up to the last batch wholly acknowledged.
    acked: u64,
}

impl Backlog {
    /// Starts from what an earlier run left unsent (counted coarsely, once).
    fn new(spool: &Journal, acked: u64) -> Backlog {
        let left = if spool.end() > acked {
            spool.bytes_behind(acked)
        } else {
            0
        };
        Backlog {
            marks: VecDeque::from([(spool.end(), left)]),
            total: left,
            acked: 0,
        }
    }

    /// A batch of `bytes` went in, ending before sequence number `end`.
    fn added(&mut self, end: u64, bytes: u64) {
        self.total += bytes;
        self.marks.push_back((end, self.total));
    }

    /// Bytes not yet acknowledged when everything before `acked` is.
    fn unsent(&mut self, acked: u64) -> u64 {
        while let Some(&(end, upto)) = self.marks.front() {
            if end > acked {
                break;
            }
            self.acked = upto;
            self.marks.pop_front();
        }
        self.total - self.acked
    }
}

/// Where the spool stands in the dispatcher's journal, from its last entry
/// (appended with its batch, so it survives whatever crash the records do).
struct Spooled {
    journal: [u8; 16],
    /// The last ack id all of whose records are spooled.
    done: u64,
    /// An ack id past `done` whose records are spooled up to this seq (an
    /// event that goes on in the next message).
    partial: Option<(u64, u64)>,
}

/// How far the spool has reached. Each spooled record keeps its ack id in
/// the entry's `event` field (otherwise unused in the spool), and
/// [`flags::ENDS_EVENT`] on the record that completes it: a filtered
/// plugin's records are acknowledged by their event's id, which lies past
/// the event's last record when a close marker ended it, so resuming after
/// the last record's own seq had that event sent again. A spool written
/// before (`event` 0) resumes after the last record's seq, as it did: its
/// last event may be spooled and sent twice, nothing is lost.
fn spooled_upto(spool: &Journal, meta: &std::path::Path) -> Option<Spooled> {
    let id = std::fs::read_to_string(meta).ok()?;
    let JournalId(journal) = id.trim().parse().ok()?;
    if spool.end() <= 1 {
        return None;
    }
    let mut last = None;
    let mut r = spool.reader(spool.end() - 1);
    match r.read(1 << 16, &mut |e| {
        last = Some(match (e.event, e.flags & flags::ENDS_EVENT != 0) {
            (0, _) => (e.source_seq, None),
            (ack, true) => (ack, None),
            // Records are delivered in the order of their ack ids: every id
            // below the partial one is spooled whole.
            (ack, false) => (ack - 1, Some((ack, e.source_seq))),
        });
        Step::Stop
    }) {
        Ok(ReadOutcome::Entries(_)) => last.map(|(done, partial)| Spooled {
            journal,
            done,
            partial,
        }),
        _ => None,
    }
}

/// Runs the plugin. `usr2_held`: SIGUSR2, blocked since `main` began,
/// released once its handler is in place.
fn run(o: Opts, usr2_held: audisp::signals::Held) -> Result<(), String> {
    let server_host = o
        .server
        .rsplit_once(':')
        .map(|(h, _)| h.trim_matches(|c| c == '[' || c == ']').to_string())
        .ok_or_else(|| format!("--server {:?}: expected HOST:PORT", o.server))?;
    let tls = tls::Client::new(&o.tls, o.tls_name.as_deref().unwrap_or(&server_host))?;
    // One sender per spool, until this returns.
    let _state_lock = audisp::statelock::StateLock::dir(&o.spool_dir)?;
    let spool = Journal::open(
        &o.spool_dir.join("spool"),
        Limits {
            segment_size: 64 << 20,
            max_size: if o.drop_oldest {
                o.spool_max
            } else {
                o.spool_max.saturating_mul(2)
            },
            memory: 16 << 20,
        },
    )
    .map_err(|e| format!("cannot open the spool in {}: {e}", o.spool_dir.display()))?;
    let meta = o.spool_dir.join("dispatcher");
    let resume = spooled_upto(&spool, &meta);

    let state = Arc::new(SenderState::default());
    let (tx, rx) = mpsc::channel::<Command>();
    let sender = SenderLoop::new(
        SenderConfig {
            server: o.server.clone(),
            fast: o.fast,
            window: o.window,
            heartbeat: o.heartbeat,
            reply_timeout: o.reply_timeout,
            backoff: (Duration::from_millis(250), o.retry_max),
            actions: o.actions.clone(),
            tls,
            state_dir: o.spool_dir.clone(),
        },
        spool.clone(),
        state.clone(),
        tx,
    );
    let sender = std::thread::spawn(move || sender.run());
    {
        // SIGUSR2 resumes after `suspend`, as with audisp-remote. signal-hook
        // wakes this thread through its pipe; a SIGUSR2 handler installed
        // before is kept.
        let mut usr2 = Signals::new([SIGUSR2]).map_err(|e| format!("SIGUSR2: {e}"))?;
        let state = state.clone();
        std::thread::spawn(move || {
            for _ in usr2.forever() {
                if state.suspended.swap(false, Ordering::SeqCst) {
                    tracing::info!("SIGUSR2: sending again");
                }
            }
        });
        usr2_held.release()?;
    }

    // The sender thread's failure actions go to audispd as they happen,
    // between batches or while idle. Only this host's records go out unless
    // the admin chose inputs in plugins.d: records audisp-receive fed in
    // from other hosts (or from this one) are not sent again, so a host
    // that both sends and receives cannot loop.
    // Each record's first origin is spooled and sent with it, so that a
    // dispatcher its records come back to (a relay loop the admin built)
    // recognises and drops them.
    let mut plugin = Plugin::new(&o.name).commands(rx).local_only().origin();
    if let Some(at) = &resume {
        tracing::info!("spool holds dispatcher records up to ack id {}", at.done);
        plugin = plugin.resume_after(at.journal, at.done);
        if let Some((ack, seq)) = at.partial {
            tracing::info!("spool holds records of ack id {ack} up to {seq}");
            plugin = plugin.resume_within(ack, seq);
        }
    }
    if let Some(l) = &o.listen {
        plugin = plugin.listen(l);
    }
    let mut known_journal = resume.map(|at| at.journal);
    let mut blocked = false;
    let mut backlog = Backlog::new(&spool, state.acked.load(Ordering::Acquire));
    let result = plugin.run(|batch, ctx| {
        let jid = ctx.journal_id();
        if known_journal != Some(jid) {
            audisp::statefile::write_atomically(&meta, format!("{}\n", JournalId(jid)).as_bytes())?;
            known_journal = Some(jid);
        }
        if !o.drop_oldest {
            // Overflow = block: the dispatcher keeps the records meanwhile.
            while backlog.unsent(state.acked.load(Ordering::Acquire)) > o.spool_max {
                if !blocked {
                    tracing::warn!(
                        "spool full ({} bytes unsent): waiting for the aggregator",
                        o.spool_max
                    );
                    blocked = true;
                }
                ctx.idle(Duration::from_millis(100))?;
            }
            blocked = false;
        }
        let entries: Vec<NewEntry<'_>> = batch
            .records()
            .map(|r| NewEntry {
                // Where to resume after a crash (`spooled_upto`): the ack
                // id, complete with the last of its records here unless
                // its event goes on in the next message (a crash may keep
                // only the start of a batch).
                event: r.ack,
                source_seq: r.seq,
                rtype: r.rtype,
                source: 0,
                flags: if r.completes_ack() {
                    flags::ENDS_EVENT
                } else {
                    0
                },
                // Forwarded records keep the origin they came with; this
                // dispatcher's own are its journal's and sequence number's.
                origin: Some(r.first_origin.unwrap_or(Origin {
                    journal: jid,
                    seq: r.seq,
                })),
                text: r.text.into(),
            })
            .collect();
        let appended = spool.append(&entries)?;
        tracing::trace!("spooled {:?}", appended.seqs);
        backlog.added(appended.seqs.end, appended.bytes);
        if let Some(lost) = appended.evicted_before {
            tracing::error!(
                "spool over {} bytes: unsent records before {lost} dropped",
                o.spool_max
            );
        }
        if o.durable {
            spool.sync_upto(appended.seqs.end)?;
        }
        Ok(())
    });
    state.stop.store(true, Ordering::Release);
    let _ = sender.join();
    result.map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(event: u64, seq: u64, flags: u16) -> NewEntry<'static> {
        NewEntry {
            event,
            source_seq: seq,
            rtype: 1300,
            source: 0,
            flags,
            origin: None,
            text: b"type=SYSCALL msg=audit(1.000:1): x".as_slice().into(),
        }
    }

    /// The resume point is the last completed ack id; a partly spooled
    /// event resumes within it; an old spool's (no ack ids) the last seq.
    #[test]
    fn the_spool_resumes_after_its_last_completed_ack_id() {
        let dir = tempfile::tempdir().unwrap();
        let meta = dir.path().join("dispatcher");
        std::fs::write(&meta, format!("{}\n", JournalId([7; 16]))).unwrap();
        let spool = Journal::open(
            &dir.path().join("spool"),
            Limits {
                segment_size: 1 << 20,
                max_size: 4 << 20,
                memory: 1 << 20,
            },
        )
        .unwrap();
        assert!(spooled_upto(&spool, &meta).is_none(), "empty");
        let at = |spool: &Journal| {
            let s = spooled_upto(spool, &meta).unwrap();
            assert_eq!(s.journal, [7; 16]);
            (s.done, s.partial)
        };
        spool.append(&[entry(0, 5, 0)]).unwrap();
        assert_eq!(at(&spool), (5, None), "an old spool");
        spool
            .append(&[entry(9, 6, 0), entry(9, 7, flags::ENDS_EVENT)])
            .unwrap();
        assert_eq!(at(&spool), (9, None), "an event closed by a marker");
        spool.append(&[entry(11, 10, 0)]).unwrap();
        assert_eq!(at(&spool), (10, Some((11, 10))), "a batch cut by a crash");
        spool.append(&[entry(20, 12, 0), entry(20, 13, 0)]).unwrap();
        assert_eq!(at(&spool), (19, Some((20, 13))), "an event partly spooled");
    }
}
