//! Forwarding SELinux AVC denials to setroubleshootd, as sedispatch does,
//! without ever holding up the dispatcher.
//!
//! The contract (setroubleshoot's own `sedispatch`/`server.py`): a method
//! call on the system bus to `org.fedoraproject.Setroubleshootd`, path
//! `/org/fedoraproject/Setroubleshootd`, interface
//! `org.fedoraproject.SetroubleshootdIface`, member `avc`, one string
//! holding **one whole event** — every record in auditd's string format,
//! joined by `\n` and ending in `\n` (setroubleshootd's reader keeps
//! unterminated text for the next call). Only events with a kernel `AVC`
//! record go; events whose AVC subject or object type is
//! `setroubleshootd_t` are dropped (setroubleshootd exits on those).
//!
//! [`Forwarder::offer`] is called for every event and never blocks: it
//! applies the loop guard, de-duplicates identical denials within a window,
//! rate-limits, and puts the event on a bounded queue. One thread makes the
//! calls, each with a timeout, retries once on `ServiceUnknown`/`NoReply`
//! (setroubleshootd is bus-activated and exits when idle), and backs off
//! when setroubleshootd is not installed. Everything is counted.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use zbus::blocking::Connection;

use super::avc::{Denial, Key};
use crate::config::SetroubleshootConfig;
use crate::engine::stats::{add, get};

/// setroubleshootd's well-known name.
pub const DEST: &str = "org.fedoraproject.Setroubleshootd";
/// setroubleshootd's object path.
pub const PATH: &str = "/org/fedoraproject/Setroubleshootd";
/// setroubleshootd's interface.
pub const IFACE: &str = "org.fedoraproject.SetroubleshootdIface";
/// The domain setroubleshootd runs in: denials involving it are dropped.
pub const OWN_TYPE: &str = "setroubleshootd_t";

/// First pause after finding setroubleshootd absent; doubles up to
/// [`BACKOFF_MAX`].
const BACKOFF_START: Duration = Duration::from_secs(30);
const BACKOFF_MAX: Duration = Duration::from_secs(600);
/// Most distinct denials remembered for de-duplication.
const DEDUP_MAX: usize = 4096;

/// What happened to the events offered.
#[derive(Debug, Default)]
pub struct Counters {
    /// Calls setroubleshootd answered.
    pub sent: AtomicU64,
    /// Calls that failed (after the retry), timed out, or could not be made.
    pub failed: AtomicU64,
    /// Events dropped unsent: queue full, or setroubleshootd absent (back-off).
    pub dropped: AtomicU64,
    /// Events not sent because an identical denial was sent within the window.
    pub duplicates: AtomicU64,
    /// Events over the rate limit.
    pub rate_limited: AtomicU64,
    /// Events dropped by the `setroubleshootd_t` loop guard.
    pub guarded: AtomicU64,
    /// Calls retried after `ServiceUnknown`/`NoReply`.
    pub retries: AtomicU64,
}

/// [`Counters`] at one moment.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct CountersSnapshot {
    /// See [`Counters`].
    pub sent: u64,
    /// See [`Counters`].
    pub failed: u64,
    /// See [`Counters`].
    pub dropped: u64,
    /// See [`Counters`].
    pub duplicates: u64,
    /// See [`Counters`].
    pub rate_limited: u64,
    /// See [`Counters`].
    pub guarded: u64,
    /// See [`Counters`].
    pub retries: u64,
}

impl Counters {
    /// Copies the counters.
    pub fn snapshot(&self) -> CountersSnapshot {
        CountersSnapshot {
            sent: get(&self.sent),
            failed: get(&self.failed),
            dropped: get(&self.dropped),
            duplicates: get(&self.duplicates),
            rate_limited: get(&self.rate_limited),
            guarded: get(&self.guarded),
            retries: get(&self.retries),
        }
    }
}

/// De-duplication and a token bucket.
struct Limiter {
    window: Duration,
    seen: HashMap<Key, Instant>,
    rate: f64,
    tokens: f64,
    last: Instant,
}

impl Limiter {
    fn new(window: Duration, rate: u32, now: Instant) -> Limiter {
        Limiter {
            window,
            seen: HashMap::new(),
            rate: f64::from(rate),
            tokens: f64::from(rate),
            last: now,
        }
    }

    fn duplicate(&mut self, key: &Key, now: Instant) -> bool {
        matches!(self.seen.get(key), Some(t) if now.duration_since(*t) < self.window)
    }

    fn take_token(&mut self, now: Instant) -> bool {
        let elapsed = now.duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.rate);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    fn remember(&mut self, key: Key, now: Instant) {
        if self.seen.len() >= DEDUP_MAX {
            let window = self.window;
            self.seen.retain(|_, t| now.duration_since(*t) < window);
            if self.seen.len() >= DEDUP_MAX {
                self.seen.clear();
            }
        }
        self.seen.insert(key, now);
    }
}

/// The forwarder: [`Forwarder::offer`] on the event path, one calling
/// thread behind a bounded queue.
pub struct Forwarder {
    queue: SyncSender<String>,
    limiter: Mutex<Limiter>,
    counters: Arc<Counters>,
}

/// Opens a bus connection for the calling thread (lazily, and again after
/// the bus went away).
pub type Connect = Box<dyn Fn() -> zbus::Result<Connection> + Send>;

impl Forwarder {
    /// Starts the calling thread.
    pub fn start(config: &SetroubleshootConfig, connect: Connect) -> std::io::Result<Forwarder> {
        let (tx, rx) = mpsc::sync_channel(config.queue);
        let counters = Arc::new(Counters::default());
        let c = counters.clone();
        std::thread::Builder::new()
            .name("setroubleshoot".into())
            .spawn(move || call_loop(rx, connect, &c))?;
        Ok(Forwarder {
            queue: tx,
            limiter: Mutex::new(Limiter::new(
                config.dedup_window,
                config.rate,
                Instant::now(),
            )),
            counters,
        })
    }

    /// The counters.
    pub fn counters(&self) -> &Arc<Counters> {
        &self.counters
    }

    /// Offers one event (its records' texts, in order) with its AVC
    /// denial. Never blocks.
    pub fn offer<'a>(&self, denial: &Denial, records: impl Iterator<Item = &'a [u8]>) {
        if denial.involves_type(OWN_TYPE) {
            add(&self.counters.guarded, 1);
            tracing::debug!("AVC regarding setroubleshootd itself, not forwarded");
            return;
        }
        let now = Instant::now();
        let key = denial.key();
        {
            let mut l = self.limiter.lock().unwrap_or_else(|p| p.into_inner());
            if l.duplicate(&key, now) {
                add(&self.counters.duplicates, 1);
                return;
            }
            if !l.take_token(now) {
                add(&self.counters.rate_limited, 1);
                return;
            }
            l.remember(key, now);
        }
        match self.queue.try_send(payload(records)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                add(&self.counters.dropped, 1);
            }
        }
    }
}

/// The `avc` argument: every record, each followed by `\n`. D-Bus strings
/// are UTF-8 without NUL; audit text is ASCII in practice, anything else is
/// replaced rather than sent broken.
pub fn payload<'a>(records: impl Iterator<Item = &'a [u8]>) -> String {
    let mut s = String::new();
    for r in records {
        s.push_str(&String::from_utf8_lossy(r).replace('\0', "\u{FFFD}"));
        s.push('\n');
    }
    s
}

/// How a call ended.
#[derive(Debug, PartialEq, Eq)]
enum CallError {
    /// `ServiceUnknown` or `NoReply`: setroubleshootd not (yet) there or it
    /// exited during the call; worth one retry.
    Transient(String),
    /// Anything else (timeout, access denied, bus gone).
    Other(String),
}

fn classify(e: zbus::Error) -> CallError {
    match &e {
        zbus::Error::MethodError(name, msg, _) => {
            let text = format!("{name}: {}", msg.as_deref().unwrap_or(""));
            match name.as_str() {
                "org.freedesktop.DBus.Error.ServiceUnknown"
                | "org.freedesktop.DBus.Error.NoReply"
                | "org.freedesktop.DBus.Error.NameHasNoOwner" => CallError::Transient(text),
                _ => CallError::Other(text),
            }
        }
        zbus::Error::FDO(f) => match **f {
            zbus::fdo::Error::ServiceUnknown(_)
            | zbus::fdo::Error::NoReply(_)
            | zbus::fdo::Error::NameHasNoOwner(_) => CallError::Transient(f.to_string()),
            _ => CallError::Other(f.to_string()),
        },
        _ => CallError::Other(e.to_string()),
    }
}

fn call(conn: &Connection, payload: &str) -> Result<(), CallError> {
    conn.call_method(Some(DEST), PATH, Some(IFACE), "avc", &(payload,))
        .map(|_| ())
        .map_err(classify)
}

/// Whether setroubleshootd is running or can be activated.
fn installed(conn: &Connection) -> bool {
    let Ok(proxy) = zbus::blocking::fdo::DBusProxy::new(conn) else {
        return false;
    };
    let Ok(name) = zbus::names::BusName::try_from(DEST) else {
        return false;
    };
    if proxy.name_has_owner(name).unwrap_or(false) {
        return true;
    }
    proxy
        .list_activatable_names()
        .map(|names| names.iter().any(|n| n.as_str() == DEST))
        .unwrap_or(false)
}

fn call_loop(rx: Receiver<String>, connect: Connect, counters: &Counters) {
    let mut conn: Option<Connection> = None;
    let mut backoff = BACKOFF_START;
    let mut paused_until: Option<Instant> = None;
    while let Ok(payload) = rx.recv() {
        if paused_until.is_some_and(|t| Instant::now() < t) {
            add(&counters.dropped, 1);
            continue;
        }
        let c = match &conn {
            Some(c) => c,
            None => match connect() {
                Ok(c) => conn.insert(c),
                Err(e) => {
                    add(&counters.failed, 1);
                    tracing::warn!(
                        "setroubleshoot: cannot connect to the bus: {e}; pausing {backoff:?}"
                    );
                    paused_until = Some(Instant::now() + backoff);
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                    continue;
                }
            },
        };
        let mut result = call(c, &payload);
        if let Err(CallError::Transient(e)) = &result {
            tracing::debug!("setroubleshoot: {e}; retrying once");
            add(&counters.retries, 1);
            result = call(c, &payload);
        }
        match result {
            Ok(()) => {
                add(&counters.sent, 1);
                backoff = BACKOFF_START;
                paused_until = None;
            }
            Err(CallError::Transient(e)) if !installed(c) => {
                add(&counters.failed, 1);
                tracing::info!(
                    "setroubleshootd is not installed ({e}); AVC denials are not forwarded for {backoff:?}"
                );
                paused_until = Some(Instant::now() + backoff);
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
            Err(CallError::Transient(e)) | Err(CallError::Other(e)) => {
                add(&counters.failed, 1);
                tracing::warn!("setroubleshoot: avc call failed: {e}");
                if c.inner().is_closed() {
                    conn = None;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_ends_every_record_with_a_newline() {
        let p = payload(
            [
                &b"type=AVC msg=audit(1.000:1): a"[..],
                b"type=SYSCALL msg=audit(1.000:1): b",
            ]
            .into_iter(),
        );
        assert_eq!(
            p,
            "type=AVC msg=audit(1.000:1): a\ntype=SYSCALL msg=audit(1.000:1): b\n"
        );
    }

    #[test]
    fn limiter_dedups_within_the_window_and_limits_the_rate() {
        let t0 = Instant::now();
        let mut l = Limiter::new(Duration::from_secs(60), 2, t0);
        let k = |s: &str| {
            (
                s.to_string(),
                "t".to_string(),
                "file".to_string(),
                vec!["read".to_string()],
            )
        };
        assert!(!l.duplicate(&k("a"), t0));
        assert!(l.take_token(t0));
        l.remember(k("a"), t0);
        assert!(l.duplicate(&k("a"), t0 + Duration::from_secs(59)));
        assert!(!l.duplicate(&k("a"), t0 + Duration::from_secs(61)));
        assert!(l.take_token(t0));
        assert!(!l.take_token(t0), "burst of 2");
        assert!(l.take_token(t0 + Duration::from_millis(600)), "refilled");
    }

    #[test]
    fn a_full_queue_drops_and_counts_instead_of_blocking() {
        // The calling thread takes the first event and then hangs in
        // `connect` (a bus that does not answer) until the test ends.
        let (entered_tx, entered_rx) = mpsc::channel::<()>();
        let (_release_tx, release_rx) = mpsc::channel::<()>();
        let entered = Mutex::new(entered_tx);
        let release = Mutex::new(release_rx);
        let connect: Connect = Box::new(move || {
            let _ = entered.lock().unwrap().send(());
            let _ = release.lock().unwrap().recv();
            Err(zbus::Error::Failure("test bus".into()))
        });
        let config = SetroubleshootConfig {
            enabled: true,
            queue: 2,
            timeout: Duration::from_secs(1),
            rate: 1000,
            dedup_window: Duration::from_secs(60),
        };
        let f = Forwarder::start(&config, connect).unwrap();
        let denial = |i: usize| Denial {
            scontext: format!("u:r:d{i}_t:s0"),
            tcontext: "u:object_r:f_t:s0".into(),
            tclass: "file".into(),
            perms: vec!["read".into()],
            ..Denial::default()
        };
        let rec: &[u8] = b"type=AVC msg=audit(1.000:1): avc: denied";
        f.offer(&denial(0), [rec].into_iter());
        entered_rx.recv_timeout(Duration::from_secs(10)).unwrap();
        let start = Instant::now();
        for i in 1..=10 {
            f.offer(&denial(i), [rec].into_iter());
        }
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "offer never blocks"
        );
        let c = f.counters().snapshot();
        assert_eq!(
            c.dropped, 8,
            "2 queued behind the stuck call, 8 dropped: {c:?}"
        );
        assert_eq!(c.sent + c.failed, 0);
    }

    #[test]
    fn service_unknown_and_no_reply_are_worth_a_retry() {
        let e = zbus::Error::FDO(Box::new(zbus::fdo::Error::ServiceUnknown("x".into())));
        assert!(matches!(classify(e), CallError::Transient(_)));
        let e = zbus::Error::FDO(Box::new(zbus::fdo::Error::AccessDenied("x".into())));
        assert!(matches!(classify(e), CallError::Other(_)));
    }
}
