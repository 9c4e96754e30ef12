//! audisp-receive's connection slots: which connections may hold one of
//! the `max_connections`, so that silent or hostile connections cannot lock
//! senders out (500 idle TCP connections once did, for as long as they were
//! held).
//!
//! A connection is *pending* from its accept until it shows it is a sender:
//! its TLS handshake done and its first message handled (a stock record or
//! heartbeat, or a fast-mode hello granted). From then on it is a *stock* or
//! a *fast* sender, and a *known* one if the store knew it before this
//! connection: its spool identity (under TLS, bound to the certificate it
//! presents) or, for a stock sender, its address. An address is known once
//! a known sender spoke from it: the stock senders' addresses in the store,
//! and those kept in `STATE/known-addresses` (appended to as they become
//! known).
//!
//! The rules:
//!
//! * A pending connection that has not shown itself a sender within the
//!   handshake timeout is closed.
//! * Per address: at most `max_per_addr` pending connections, and at most
//!   `max_per_addr` stock senders (their duplicate suppression is keyed by
//!   address). Fast senders are told apart by their spool identity, which
//!   only one live connection may use, and are not limited per address:
//!   whoever holds the address's pending room, a known sender behind it
//!   gets in.
//! * In all: at most `max_connections`, of which connections from unknown
//!   addresses (pending, or senders the store did not know) may hold all but
//!   a reserve of a quarter: room kept for known senders, which a flood from
//!   other addresses cannot take.
//! * A new connection that a limit would refuse takes instead the slot of
//!   the oldest pending connection that has had at least [`GRACE`] to show
//!   itself (of the same address for the per-address limit; for a newcomer
//!   from an unknown address, one from an unknown address): that one is
//!   closed. A connection younger than [`GRACE`] is never pushed out, so a
//!   sender has that long for its handshake and first message however fast
//!   a flood comes, while silent connections hold nothing for longer than a
//!   sender needs to arrive and speak.

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::net::{IpAddr, Shutdown, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// How long a pending connection is safe from being pushed out by a newer
/// one: time enough for a TLS handshake and a first message on any link a
/// sender uses.
pub const GRACE: Duration = Duration::from_secs(1);

/// The most addresses remembered as known (an attacker minting identities
/// over plain TCP cannot grow the list without bound).
const MAX_KNOWN: usize = 4096;

/// The limits that shape the slots.
#[derive(Debug, Clone, Copy)]
pub struct SlotLimits {
    /// Connections in all.
    pub max_connections: usize,
    /// Pending connections, and stock senders, per address.
    pub max_per_addr: usize,
    /// How long a connection may take to show it is a sender (None: no
    /// limit).
    pub handshake_timeout: Option<Duration>,
}

impl SlotLimits {
    /// Slots kept for known senders: a quarter (none below four slots).
    pub fn reserve(&self) -> usize {
        self.max_connections / 4
    }
}

/// What a connection showed itself to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sender {
    /// A stock-protocol sender (managed or ASCII).
    Stock {
        /// The store knew its address.
        known: bool,
    },
    /// A fast-mode sender.
    Fast {
        /// The store knew its spool identity.
        known: bool,
    },
}

/// Why the slots closed a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    /// Its slot went to a newer connection.
    PushedOut,
    /// It did not show itself a sender within the handshake timeout.
    HandshakeTimeout,
}

const NOT_CUT: u8 = 0;
const PUSHED_OUT: u8 = 1;
const TIMED_OUT: u8 = 2;

/// A connection's slot, held by the thread serving it.
#[derive(Debug)]
pub struct Slot {
    id: u64,
    cut: Arc<AtomicU8>,
}

impl Slot {
    /// Whether (and why) the slots closed this connection.
    pub fn cut(&self) -> Option<Cut> {
        match self.cut.load(Ordering::Acquire) {
            PUSHED_OUT => Some(Cut::PushedOut),
            TIMED_OUT => Some(Cut::HandshakeTimeout),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Pending,
    Stock,
    Fast,
}

struct Entry {
    ip: IpAddr,
    since: Instant,
    state: State,
    /// Counted in the known senders' part (a pending connection from a
    /// known address, or a known sender).
    known: bool,
    /// A handle on the socket, to close it when pushed out.
    sock: TcpStream,
    cut: Arc<AtomicU8>,
}

impl Entry {
    /// Closes the connection (its thread sees the end of its stream).
    fn close(&self, why: u8) {
        self.cut.store(why, Ordering::Release);
        let _ = self.sock.shutdown(Shutdown::Both);
    }
}

#[derive(Default)]
struct Inner {
    next: u64,
    conns: HashMap<u64, Entry>,
    known: HashSet<IpAddr>,
}

impl Inner {
    /// The oldest pending connection past its grace that `fits`.
    fn oldest_pending(&self, now: Instant, fits: impl Fn(&Entry) -> bool) -> Option<u64> {
        self.conns
            .iter()
            .filter(|(_, e)| e.state == State::Pending && now.duration_since(e.since) >= GRACE)
            .filter(|(_, e)| fits(e))
            .min_by_key(|(_, e)| e.since)
            .map(|(id, _)| *id)
    }

    fn push_out(&mut self, id: u64) {
        if let Some(e) = self.conns.remove(&id) {
            e.close(PUSHED_OUT);
        }
    }
}

/// The slot table.
pub struct Slots {
    limits: SlotLimits,
    inner: Mutex<Inner>,
    /// Where known addresses are kept across restarts (None: not kept).
    known_file: Option<PathBuf>,
}

impl Slots {
    /// Slots under `limits`; `known` are addresses already known (the
    /// store's stock senders), `known_file` where known addresses are kept
    /// (read now, appended to later).
    pub fn new(limits: SlotLimits, known: Vec<IpAddr>, known_file: Option<PathBuf>) -> Slots {
        let mut set: HashSet<IpAddr> = known.into_iter().collect();
        if let Some(path) = &known_file {
            match std::fs::read_to_string(path) {
                Ok(text) => {
                    set.extend(text.lines().filter_map(|l| l.trim().parse::<IpAddr>().ok()))
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => tracing::warn!("{}: {e}; known addresses start empty", path.display()),
            }
        }
        Slots {
            limits,
            inner: Mutex::new(Inner {
                known: set,
                ..Inner::default()
            }),
            known_file,
        }
    }

    /// The limits.
    pub fn limits(&self) -> &SlotLimits {
        &self.limits
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Admits a connection from `ip` (`sock`: a handle on its socket, to
    /// close it if it is pushed out later), pushing out an older pending one
    /// if a limit requires it; or says why not.
    pub fn admit(&self, ip: IpAddr, sock: TcpStream) -> Result<Slot, String> {
        let l = &self.limits;
        let mut g = self.lock();
        let now = Instant::now();
        let known = g.known.contains(&ip);
        let here = g
            .conns
            .values()
            .filter(|e| e.ip == ip && e.state == State::Pending)
            .count();
        if here >= l.max_per_addr {
            match g.oldest_pending(now, |e| e.ip == ip) {
                Some(id) => g.push_out(id),
                None => {
                    return Err(format!(
                        "{here} connection(s) from this address are still in their handshake \
                         (per address {})",
                        l.max_per_addr
                    ))
                }
            }
        }
        let total = g.conns.len();
        let unknown = g.conns.values().filter(|e| !e.known).count();
        let open = l.max_connections.saturating_sub(l.reserve());
        let over_unknown = !known && unknown >= open;
        if total >= l.max_connections || over_unknown {
            let pick = g.oldest_pending(now, |e| !e.known).or_else(|| {
                (!over_unknown)
                    .then(|| g.oldest_pending(now, |_| true))
                    .flatten()
            });
            match pick {
                Some(id) => g.push_out(id),
                None if over_unknown => {
                    return Err(format!(
                        "connection limit reached for addresses without a known sender ({open} \
                         of {} in use; the rest is kept for known senders)",
                        l.max_connections
                    ))
                }
                None => {
                    return Err(format!(
                        "connection limit reached ({} in use)",
                        l.max_connections
                    ))
                }
            }
        }
        g.next += 1;
        let id = g.next;
        let cut = Arc::new(AtomicU8::new(NOT_CUT));
        g.conns.insert(
            id,
            Entry {
                ip,
                since: now,
                state: State::Pending,
                known,
                sock,
                cut: cut.clone(),
            },
        );
        Ok(Slot { id, cut })
    }

    /// The connection holding `slot` showed itself to be `sender`; a stock
    /// sender beyond the per-address limit is refused (why, for the log).
    pub fn prove(&self, slot: &Slot, sender: Sender) -> Result<(), String> {
        let max = self.limits.max_per_addr;
        let mut g = self.lock();
        let Some(ip) = g.conns.get(&slot.id).map(|e| e.ip) else {
            return Err("its slot was taken meanwhile".into());
        };
        let (state, known) = match sender {
            Sender::Stock { known } => {
                let stock = g
                    .conns
                    .values()
                    .filter(|e| e.ip == ip && e.state == State::Stock)
                    .count();
                if stock >= max {
                    return Err(format!(
                        "{stock} stock-protocol sender connection(s) from this address already \
                         (per address {max}: their duplicate suppression is keyed by address)"
                    ));
                }
                (State::Stock, known)
            }
            Sender::Fast { known } => (State::Fast, known),
        };
        if let Some(e) = g.conns.get_mut(&slot.id) {
            e.state = state;
            e.known = known;
        }
        if known && g.known.len() < MAX_KNOWN && g.known.insert(ip) {
            drop(g);
            self.keep_known(ip);
        }
        Ok(())
    }

    /// Appends a newly known address to the known-address file.
    fn keep_known(&self, ip: IpAddr) {
        let Some(path) = &self.known_file else {
            return;
        };
        let written = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .and_then(|mut f| writeln!(f, "{ip}"));
        if let Err(e) = written {
            tracing::warn!("{}: {e}", path.display());
        }
    }

    /// Closes every pending connection older than the handshake timeout.
    pub fn expire(&self) {
        let Some(timeout) = self.limits.handshake_timeout else {
            return;
        };
        let mut g = self.lock();
        let now = Instant::now();
        g.conns.retain(|_, e| {
            let late = e.state == State::Pending && now.duration_since(e.since) >= timeout;
            if late {
                e.close(TIMED_OUT);
            }
            !late
        });
    }

    /// Gives `slot` back (its connection ended).
    pub fn leave(&self, slot: &Slot) {
        self.lock().conns.remove(&slot.id);
    }
}

/// Lets a line through at most once a second, counting the ones held back:
/// a flood of refused connections must not flood the log too.
#[derive(Debug)]
pub struct LogLimit {
    state: Mutex<(Option<Instant>, u64)>,
}

impl Default for LogLimit {
    fn default() -> Self {
        LogLimit {
            state: Mutex::new((None, 0)),
        }
    }
}

impl LogLimit {
    /// `Some(held back since the last line)` if a line may go out now.
    pub fn allow(&self) -> Option<u64> {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if s.0
            .is_some_and(|t| now.duration_since(t) < Duration::from_secs(1))
        {
            s.1 += 1;
            return None;
        }
        let held = s.1;
        *s = (Some(now), 0);
        Some(held)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    /// Connected sockets to hand to the table (it only ever shuts them
    /// down), and the listener's ends, to see them closed.
    struct Net {
        listener: TcpListener,
        keep: Vec<TcpStream>,
    }

    impl Net {
        fn new() -> Net {
            Net {
                listener: TcpListener::bind("127.0.0.1:0").unwrap(),
                keep: Vec::new(),
            }
        }

        fn sock(&mut self) -> TcpStream {
            let c = TcpStream::connect(self.listener.local_addr().unwrap()).unwrap();
            self.keep.push(self.listener.accept().unwrap().0);
            c
        }

        /// Whether each connection made so far was closed at the other end.
        fn closed(&mut self) -> Vec<bool> {
            let mut buf = [0u8; 1];
            self.keep
                .iter_mut()
                .map(|k| {
                    k.set_nonblocking(true).unwrap();
                    matches!(std::io::Read::read(k, &mut buf), Ok(0))
                })
                .collect()
        }
    }

    fn limits(max_connections: usize, max_per_addr: usize) -> SlotLimits {
        SlotLimits {
            max_connections,
            max_per_addr,
            handshake_timeout: Some(Duration::from_secs(10)),
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// Makes every pending connection older than the grace.
    fn age(slots: &Slots) {
        for e in slots.lock().conns.values_mut() {
            e.since -= GRACE;
        }
    }

    #[test]
    fn a_newcomer_pushes_out_the_oldest_silent_connection_of_its_address_after_the_grace() {
        let mut net = Net::new();
        let slots = Slots::new(limits(8, 1), vec![], None);
        let first = slots.admit(ip("192.0.2.1"), net.sock()).unwrap();
        // Within the grace the address's room is taken.
        let why = slots.admit(ip("192.0.2.1"), net.sock()).unwrap_err();
        assert!(why.contains("still in their handshake"), "{why}");
        // Another address is not affected.
        let other = slots.admit(ip("192.0.2.2"), net.sock()).unwrap();
        age(&slots);
        let second = slots.admit(ip("192.0.2.1"), net.sock()).unwrap();
        assert_eq!(first.cut(), Some(Cut::PushedOut));
        assert_eq!((second.cut(), other.cut()), (None, None));
        // Senders are never pushed out; a stock sender holds the address's
        // stock room, a fast one does not.
        slots
            .prove(&second, Sender::Stock { known: false })
            .unwrap();
        let third = slots.admit(ip("192.0.2.1"), net.sock()).unwrap();
        let why = slots
            .prove(&third, Sender::Stock { known: false })
            .unwrap_err();
        assert!(why.contains("stock-protocol sender"), "{why}");
        slots.prove(&third, Sender::Fast { known: false }).unwrap();
        age(&slots);
        let _fourth = slots.admit(ip("192.0.2.1"), net.sock()).unwrap();
        assert_eq!((second.cut(), third.cut()), (None, None));
    }

    #[test]
    fn known_addresses_keep_a_reserve_that_a_flood_from_elsewhere_cannot_take() {
        let mut net = Net::new();
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("known-addresses");
        std::fs::write(&file, "198.51.100.7\n").unwrap();
        let slots = Slots::new(limits(8, 1), vec![ip("203.0.113.9")], Some(file.clone()));
        // A flood of senders from unknown addresses takes the open part
        // (6 of 8) and no more, pushing nothing out: none is pending.
        let mut flood = Vec::new();
        for i in 0..6 {
            let s = slots
                .admit(ip(&format!("192.0.2.{i}")), net.sock())
                .unwrap();
            slots.prove(&s, Sender::Fast { known: false }).unwrap();
            flood.push(s);
        }
        let why = slots.admit(ip("192.0.2.99"), net.sock()).unwrap_err();
        assert!(why.contains("kept for known senders"), "{why}");
        // Known addresses (from the store, from the file) get in.
        let a = slots.admit(ip("203.0.113.9"), net.sock()).unwrap();
        let b = slots.admit(ip("198.51.100.7"), net.sock()).unwrap();
        assert!(slots.admit(ip("198.51.100.8"), net.sock()).is_err());
        assert!(flood.iter().all(|s| s.cut().is_none()));
        // A fast sender proving known from a new address makes it known,
        // for this run and the next.
        slots.leave(&a);
        let c = slots.admit(ip("192.0.2.50"), net.sock());
        assert!(c.is_err(), "unknown addresses still over their part");
        slots.leave(&b);
        drop(slots);
        let slots = Slots::new(limits(8, 1), vec![], Some(file.clone()));
        let d = slots.admit(ip("192.0.2.60"), net.sock()).unwrap();
        slots.prove(&d, Sender::Fast { known: true }).unwrap();
        let text = std::fs::read_to_string(&file).unwrap();
        assert_eq!(text, "198.51.100.7\n192.0.2.60\n");
    }

    #[test]
    fn silent_connections_are_cut_at_the_handshake_timeout_and_the_oldest_goes_first() {
        let mut net = Net::new();
        let mut l = limits(3, 4);
        l.handshake_timeout = Some(Duration::ZERO);
        let slots = Slots::new(l, vec![], None);
        let silent = slots.admit(ip("192.0.2.1"), net.sock()).unwrap();
        let sender = slots.admit(ip("192.0.2.1"), net.sock()).unwrap();
        slots
            .prove(&sender, Sender::Stock { known: false })
            .unwrap();
        slots.expire();
        assert_eq!(silent.cut(), Some(Cut::HandshakeTimeout));
        assert_eq!(sender.cut(), None);
        assert_eq!(net.closed(), vec![true, false]);
        // Full (3 of 3; a reserve of 0): the oldest pending one goes.
        let mut net = Net::new();
        let slots = Slots::new(limits(3, 4), vec![], None);
        let s: Vec<Slot> = (0..3)
            .map(|_| slots.admit(ip("192.0.2.1"), net.sock()).unwrap())
            .collect();
        assert!(slots.admit(ip("192.0.2.2"), net.sock()).is_err());
        for e in slots.lock().conns.values_mut() {
            e.since -= GRACE * 2;
        }
        slots.lock().conns.get_mut(&s[0].id).unwrap().since += GRACE;
        let _new = slots.admit(ip("192.0.2.2"), net.sock()).unwrap();
        let cut: Vec<Option<Cut>> = s.iter().map(Slot::cut).collect();
        assert_eq!(cut, vec![None, Some(Cut::PushedOut), None]);
        // Pushed out means closed (as is the refused one, never admitted).
        assert_eq!(net.closed(), vec![false, true, false, true, false]);
    }

    #[test]
    fn the_log_limit_lets_one_line_a_second_through_and_counts_the_rest() {
        let l = LogLimit::default();
        assert_eq!(l.allow(), Some(0));
        assert_eq!(l.allow(), None);
        assert_eq!(l.allow(), None);
        l.state.lock().unwrap().0 = Some(Instant::now() - Duration::from_secs(2));
        assert_eq!(l.allow(), Some(2));
    }
}
