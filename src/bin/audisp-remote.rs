//! audisp-remote: the sending end of remote logging, an audisp plugin.
//!
//! Every record the dispatcher hands over is appended to a durable spool
//! (a journal in `--spool-dir`) and made durable (group commit per batch)
//! before the batch is acknowledged to the dispatcher; a separate thread
//! ([`audisp::remote::sender`]) sends the spool to the aggregator — stock
//! auditd (`tcp_listen_port`) or audisp-receive (fast mode) — in order,
//! resuming after any crash of either side. See `docs/audisp-remote.8.md`.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use audisp::journal::{Journal, Limits, NewEntry, ReadOutcome, Step};
use audisp::remote::sender::{Action, Actions, SenderConfig, SenderLoop, SenderState};
use audisp::remote::tls::{self, TlsFiles};
use audisp::sdk::{Command, Plugin};

const USAGE: &str = "usage: audisp-remote --server HOST:PORT [--spool-dir DIR] [--spool-max BYTES]
       [--overflow block|drop-oldest] [--sync durable|none] [--no-fast] [--window BYTES]
       [--heartbeat SECS] [--reply-timeout SECS] [--retry-max SECS]
       [--tls-cert F --tls-key F --tls-ca F [--tls-server-name NAME]]
       [--on-network-failure A] [--on-disk-low A] [--on-disk-full A] [--on-disk-error A]
       [--on-remote-ending A]   (A: ignore, log, reconnect, suspend, dispatcher:NAME)
       [--name NAME] [--listen SOCKET]";

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
}

fn parse() -> Result<Opts, String> {
    use lexopt::prelude::*;
    let mut o = Opts {
        server: String::new(),
        spool_dir: PathBuf::from("/var/lib/audisp-remote"),
        spool_max: 1 << 30,
        drop_oldest: false,
        durable: true,
        fast: true,
        window: 8 << 20,
        heartbeat: None,
        reply_timeout: Duration::from_secs(5),
        retry_max: Duration::from_secs(30),
        tls: TlsFiles::default(),
        tls_name: None,
        actions: Actions::default(),
        name: "remote".into(),
        listen: None,
    };
    let mut p = lexopt::Parser::from_env();
    let e = |e: lexopt::Error| e.to_string();
    let secs = |v: u64| Duration::from_secs(v);
    while let Some(arg) = p.next().map_err(e)? {
        match arg {
            Long("server") => o.server = p.value().map_err(e)?.string().map_err(e)?,
            Long("spool-dir") => o.spool_dir = p.value().map_err(e)?.into(),
            Long("spool-max") => o.spool_max = p.value().map_err(e)?.parse().map_err(e)?,
            Long("overflow") => {
                o.drop_oldest = match p.value().map_err(e)?.string().map_err(e)?.as_str() {
                    "block" => false,
                    "drop-oldest" => true,
                    v => return Err(format!("--overflow: {v:?} is not block or drop-oldest")),
                }
            }
            Long("sync") => {
                o.durable = match p.value().map_err(e)?.string().map_err(e)?.as_str() {
                    "durable" => true,
                    "none" => false,
                    v => return Err(format!("--sync: {v:?} is not durable or none")),
                }
            }
            Long("no-fast") => o.fast = false,
            Long("window") => o.window = p.value().map_err(e)?.parse().map_err(e)?,
            Long("heartbeat") => {
                let s: u64 = p.value().map_err(e)?.parse().map_err(e)?;
                o.heartbeat = (s > 0).then(|| secs(s));
            }
            Long("reply-timeout") => {
                o.reply_timeout = secs(p.value().map_err(e)?.parse().map_err(e)?)
            }
            Long("retry-max") => o.retry_max = secs(p.value().map_err(e)?.parse().map_err(e)?),
            Long("tls-cert") => o.tls.cert = Some(p.value().map_err(e)?.into()),
            Long("tls-key") => o.tls.key = Some(p.value().map_err(e)?.into()),
            Long("tls-ca") => o.tls.ca = Some(p.value().map_err(e)?.into()),
            Long("tls-server-name") => {
                o.tls_name = Some(p.value().map_err(e)?.string().map_err(e)?)
            }
            Long(
                case @ ("on-network-failure" | "on-disk-low" | "on-disk-full" | "on-disk-error"
                | "on-remote-ending"),
            ) => {
                let case = case.to_string();
                let a = Action::parse(&p.value().map_err(e)?.string().map_err(e)?)
                    .map_err(|m| format!("--{case}: {m}"))?;
                let slot = match case.as_str() {
                    "on-network-failure" => &mut o.actions.network_failure,
                    "on-disk-low" => &mut o.actions.disk_low,
                    "on-disk-full" => &mut o.actions.disk_full,
                    "on-disk-error" => &mut o.actions.disk_error,
                    _ => &mut o.actions.remote_ending,
                };
                *slot = a;
            }
            Long("name") => o.name = p.value().map_err(e)?.string().map_err(e)?,
            Long("listen") => o.listen = Some(p.value().map_err(e)?.into()),
            Long("help") | Short('h') => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            _ => return Err(arg.unexpected().to_string()),
        }
    }
    if o.server.is_empty() {
        return Err("--server HOST:PORT is required".into());
    }
    Ok(o)
}

static RESUME: AtomicBool = AtomicBool::new(false);

extern "C" fn on_usr2(_: libc::c_int) {
    RESUME.store(true, Ordering::SeqCst);
}

fn main() {
    audisp::logging::init("audisp-remote", "info");
    let opts = match parse() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("audisp-remote: {e}\n{USAGE}");
            std::process::exit(2);
        }
    };
    if let Err(e) = run(opts) {
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

/// The dispatcher journal and position the spool has reached.
fn spooled_upto(spool: &Journal, meta: &std::path::Path) -> Option<([u8; 16], u64)> {
    let hex = std::fs::read_to_string(meta).ok()?;
    let hex = hex.trim();
    let mut id = [0u8; 16];
    if hex.len() != 32 {
        return None;
    }
    for (i, b) in id.iter_mut().enumerate() {
        *b = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    if spool.end() <= 1 {
        return None;
    }
    let mut last = None;
    let mut r = spool.reader(spool.end() - 1);
    match r.read(1 << 16, &mut |e| {
        last = Some(e.source_seq);
        Step::Stop
    }) {
        Ok(ReadOutcome::Entries(_)) => last.map(|s| (id, s)),
        _ => None,
    }
}

fn run(o: Opts) -> Result<(), String> {
    let server_host = o
        .server
        .rsplit_once(':')
        .map(|(h, _)| h.trim_matches(|c| c == '[' || c == ']').to_string())
        .ok_or_else(|| format!("--server {:?}: expected HOST:PORT", o.server))?;
    let tls = tls::Client::new(&o.tls, o.tls_name.as_deref().unwrap_or(&server_host))?;
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
        // SIGUSR2 resumes after `suspend`, as with audisp-remote.
        use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
        let act = SigAction::new(
            SigHandler::Handler(on_usr2),
            SaFlags::SA_RESTART,
            SigSet::empty(),
        );
        // SAFETY: the handler only stores to an atomic.
        unsafe { sigaction(Signal::SIGUSR2, &act) }.map_err(|e| format!("sigaction: {e}"))?;
        let state = state.clone();
        std::thread::spawn(move || loop {
            if RESUME.swap(false, Ordering::SeqCst) && state.suspended.swap(false, Ordering::SeqCst)
            {
                tracing::info!("SIGUSR2: sending again");
            }
            std::thread::sleep(Duration::from_millis(100));
        });
    }

    // The sender thread's failure actions go to audispd as they happen,
    // between batches or while idle.
    let mut plugin = Plugin::new(&o.name).commands(rx);
    if let Some((id, seq)) = resume {
        tracing::info!("spool holds dispatcher records up to {seq}");
        plugin = plugin.resume_after(id, seq);
    }
    if let Some(l) = &o.listen {
        plugin = plugin.listen(l);
    }
    let mut known_journal = resume.map(|(id, _)| id);
    let mut blocked = false;
    let mut backlog = Backlog::new(&spool, state.acked.load(Ordering::Acquire));
    let result = plugin.run(|batch, ctx| {
        let jid = ctx.journal_id();
        if known_journal != Some(jid) {
            let hex: String = jid.iter().map(|b| format!("{b:02x}")).collect();
            let tmp = meta.with_extension("tmp");
            std::fs::write(&tmp, format!("{hex}\n"))?;
            std::fs::File::open(&tmp)?.sync_all()?;
            std::fs::rename(&tmp, &meta)?;
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
                event: 0,
                source_seq: r.seq,
                rtype: r.rtype,
                source: 0,
                flags: 0,
                text: r.text,
            })
            .collect();
        let appended = spool.append(&entries)?;
        tracing::trace!("spooled {:?}", appended.seqs);
        backlog.added(
            appended.seqs.end,
            entries.iter().map(|e| e.text.len() as u64 + 32).sum(),
        );
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
