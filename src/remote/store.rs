//! The receiver's durable store: every record received, once, in the order
//! stored, in a [`Journal`], with what duplicate suppression needs to survive
//! restarts.
//!
//! Senders are known by a small index kept in the entry's `source` field:
//!
//! * **fast-mode senders** (audisp-remote) by the 16-byte identity of their
//!   spool; each record carries the sender's spool sequence number (entry
//!   `source_seq`). A record at or below the highest number stored for that
//!   sender is a resend and is acknowledged without being stored again.
//! * **stock senders** (auditd's audisp-remote) by their IP address. A stock
//!   client resends the record it is waiting an ACK for — after a lost or
//!   late ACK, on the same or a new connection, and (`mode = forward`) after
//!   its own restart — and never sends the next record before that one is
//!   acknowledged. So a resend is always a record whose text equals the last
//!   record stored from that address; that text is kept and compared. (Each
//!   record's text carries its event's time stamp and serial number, so two
//!   genuinely different consecutive records are never equal.) Several
//!   clients behind one address (NAT) defeat this; the per-address limit
//!   defaults to one connection for that reason.
//!
//! Anyone can claim a fast-mode identity, so with TLS an identity is bound
//! to the client certificate that first used it, and a hello presenting
//! another certificate is refused ([`Store::fast_sender`]): otherwise a
//! client could raise another sender's "highest held" number and have its
//! later records acknowledged and dropped.
//!
//! The sender table is appended to `senders` (fsynced before anything from
//! a new sender is acknowledged), one line per sender — `IDX fast HEX
//! [CERT]` or `IDX peer ADDR` — plus `IDX bind CERT` lines binding an
//! earlier fast sender (first seen without TLS) to a certificate, or an
//! administrator moving it to a new one; the last binding of an index
//! counts. The per-sender positions are rebuilt at
//! start from a snapshot (`senders.state`, rewritten before old journal
//! segments are deleted) and the journal entries still held.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufRead, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use crate::hex;
use crate::journal::{Journal, JournalId, Limits, NewEntry, Origin, ReadOutcome, Step};
use crate::statefile;

/// Who sent a record.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SenderKey {
    /// An audisp-remote spool.
    Fast([u8; 16]),
    /// A stock client, by address.
    Peer(IpAddr),
}

impl SenderKey {
    fn to_line(&self, idx: u16, cert: Option<&str>) -> String {
        match (self, cert) {
            (SenderKey::Fast(id), Some(c)) => format!("{idx} fast {} {c}\n", JournalId(*id)),
            (SenderKey::Fast(id), None) => format!("{idx} fast {}\n", JournalId(*id)),
            (SenderKey::Peer(ip), _) => format!("{idx} peer {ip}\n"),
        }
    }
}

/// One line of the sender table.
enum TableLine {
    /// A new sender, with the certificate it is bound to.
    New(u16, SenderKey, Option<String>),
    /// An earlier sender bound to a certificate.
    Bind(u16, String),
}

impl TableLine {
    fn parse(line: &str) -> Option<TableLine> {
        let mut it = line.split_ascii_whitespace();
        let idx = it.next()?.parse().ok()?;
        let parsed = match (it.next()?, it.next()?) {
            ("fast", h) => TableLine::New(
                idx,
                SenderKey::Fast(h.parse::<JournalId>().ok()?.0),
                it.next().map(str::to_string),
            ),
            ("peer", ip) => TableLine::New(idx, SenderKey::Peer(ip.parse().ok()?), None),
            ("bind", cert) => TableLine::Bind(idx, cert.to_string()),
            _ => return None,
        };
        it.next().is_none().then_some(parsed)
    }
}

/// Whether a fast-mode hello may go on under the identity it claims.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FastClaim {
    /// Yes: the sender's index (registered and bound durably if new).
    Granted(u16),
    /// No: the identity is bound to another client certificate.
    Foreign {
        /// The sender's index (for the administrator's `bind` line).
        idx: u16,
        /// The certificate the identity belongs to.
        bound: String,
    },
}

/// What is known of one sender.
#[derive(Debug, Default, Clone)]
struct SenderState {
    /// Highest sequence number stored (fast senders).
    last_seq: u64,
    /// Text of the last record stored (stock senders).
    last_text: Vec<u8>,
    /// The client certificate a fast sender's identity is bound to.
    cert: Option<String>,
}

struct Senders {
    index: HashMap<SenderKey, u16>,
    state: Vec<SenderState>,
    file: File,
}

/// The outcome of storing records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stored {
    /// Journal position to make durable before acknowledging (`sync_upto`).
    pub sync_to: u64,
    /// Records stored.
    pub new: usize,
    /// Records recognised as resends and not stored again.
    pub duplicates: usize,
    /// For fast senders: the highest sequence number now held.
    pub last_seq: u64,
}

/// The receiver's store.
pub struct Store {
    journal: Journal,
    senders: Mutex<Senders>,
    dir: PathBuf,
}

/// The index a stock sender's records are stored under is offset so that
/// index 0 ("no source") is never used.
const FIRST_INDEX: u16 = 1;

impl Store {
    /// Opens (or creates) the store in `dir` and rebuilds the senders'
    /// positions.
    pub fn open(dir: &Path, limits: Limits) -> io::Result<Store> {
        statefile::private_dir(dir)?;
        let journal = Journal::open(&dir.join("journal"), limits)?;
        let table = dir.join("senders");
        let mut index = HashMap::new();
        let mut state = vec![SenderState::default(); FIRST_INDEX as usize];
        let bytes = match std::fs::read(&table) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(with_path(e, &table)),
        };
        let mut good = 0;
        for (n, raw) in bytes.split_inclusive(|&b| b == b'\n').enumerate() {
            // Only a whole line counts: a line cut short by a crash while
            // it was appended may still parse (a shortened certificate).
            let line = raw
                .strip_suffix(b"\n")
                .and_then(|l| std::str::from_utf8(l).ok())
                .and_then(TableLine::parse);
            match line {
                Some(TableLine::New(idx, key, cert)) if idx as usize == state.len() => {
                    index.insert(key, idx);
                    state.push(SenderState {
                        cert,
                        ..SenderState::default()
                    });
                }
                Some(TableLine::Bind(idx, cert))
                    if (FIRST_INDEX..state.len() as u16).contains(&idx) =>
                {
                    state[idx as usize].cert = Some(cert);
                }
                // A line torn by a crash while it was appended: its sender
                // (or binding) was never acknowledged, so it can go — and
                // must, or the next line appended would be glued to it.
                _ => {
                    tracing::warn!(
                        "{}:{}: dropping damaged sender line and what follows",
                        table.display(),
                        n + 1
                    );
                    let f = statefile::open(statefile::options().write(true), &table)?;
                    f.set_len(good as u64)?;
                    f.sync_all()?;
                    break;
                }
            }
            good += raw.len();
        }
        load_snapshot(&dir.join("senders.state"), &mut state)?;
        let mut reader = journal.reader(journal.start().max(1));
        loop {
            let got = reader.read(1 << 20, &mut |e| {
                if let Some(s) = state.get_mut(e.source as usize) {
                    s.last_seq = s.last_seq.max(e.source_seq);
                    s.last_text.clear();
                    s.last_text.extend_from_slice(e.text);
                }
                Step::Next
            })?;
            match got {
                ReadOutcome::Entries(_) => {}
                ReadOutcome::CaughtUp => break,
                ReadOutcome::Lost { from, to, reason } => {
                    tracing::warn!("store entries {from}..{to} unreadable: {reason:?}");
                }
            }
        }
        // What was recovered is on disk: make it count as durable so the
        // log writer and the dispatcher feed go on with it.
        journal.sync_upto(journal.end())?;
        let file = statefile::open(statefile::options().create(true).append(true), &table)?;
        Ok(Store {
            journal,
            senders: Mutex::new(Senders { index, state, file }),
            dir: dir.to_path_buf(),
        })
    }

    /// The journal holding the records (readers: log writer, dispatcher feed).
    pub fn journal(&self) -> &Journal {
        &self.journal
    }

    fn lock(&self) -> MutexGuard<'_, Senders> {
        self.senders.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether `key` is a sender the store already knows (registered by an
    /// earlier connection, in this run or before).
    pub fn knows(&self, key: &SenderKey) -> bool {
        self.lock().index.contains_key(key)
    }

    /// The addresses of every stock sender the store knows.
    pub fn peer_addresses(&self) -> Vec<IpAddr> {
        self.lock()
            .index
            .keys()
            .filter_map(|k| match k {
                SenderKey::Peer(ip) => Some(*ip),
                SenderKey::Fast(_) => None,
            })
            .collect()
    }

    /// The index of `key`, registered durably if new.
    pub fn sender(&self, key: &SenderKey) -> io::Result<u16> {
        let mut s = self.lock();
        match s.index.get(key) {
            Some(&i) => Ok(i),
            None => register(&mut s, key, None),
        }
    }

    /// Decides a fast-mode hello claiming spool identity `id`, made over a
    /// connection whose client certificate is `cert` (None: plain TCP, which
    /// proves nothing and so neither binds nor is checked). An identity is
    /// bound, durably before this returns, to the first certificate that
    /// claims it; another certificate is refused.
    pub fn fast_sender(&self, id: [u8; 16], cert: Option<&str>) -> io::Result<FastClaim> {
        let key = SenderKey::Fast(id);
        let mut s = self.lock();
        let Some(&idx) = s.index.get(&key) else {
            return register(&mut s, &key, cert).map(FastClaim::Granted);
        };
        let (Some(cert), st) = (cert, &s.state[idx as usize]) else {
            return Ok(FastClaim::Granted(idx));
        };
        match &st.cert {
            Some(bound) if bound == cert => Ok(FastClaim::Granted(idx)),
            Some(bound) => Ok(FastClaim::Foreign {
                idx,
                bound: bound.clone(),
            }),
            None => {
                // Known from plain-TCP days: the first certificate to use
                // it takes it.
                check_cert(cert)?;
                s.file
                    .write_all(format!("{idx} bind {cert}\n").as_bytes())?;
                s.file.sync_data()?;
                s.state[idx as usize].cert = Some(cert.to_string());
                Ok(FastClaim::Granted(idx))
            }
        }
    }

    /// The sender table, for messages telling the administrator how to
    /// move an identity to another certificate.
    pub fn table_path(&self) -> PathBuf {
        self.dir.join("senders")
    }

    /// Highest sequence number stored from fast sender `idx`.
    pub fn last_seq(&self, idx: u16) -> u64 {
        self.lock()
            .state
            .get(idx as usize)
            .map_or(0, |s| s.last_seq)
    }

    /// Stores a fast sender's records numbered from `first_seq`, skipping
    /// those already held.
    pub fn store_fast(&self, idx: u16, first_seq: u64, records: &[&[u8]]) -> io::Result<Stored> {
        let recs: Vec<(Option<Origin>, &[u8])> = records.iter().map(|r| (None, *r)).collect();
        self.store_fast_origin(idx, first_seq, &recs)
    }

    /// [`Store::store_fast`] for records each with its first origin if the
    /// sender sent it.
    pub fn store_fast_origin(
        &self,
        idx: u16,
        first_seq: u64,
        records: &[(Option<Origin>, &[u8])],
    ) -> io::Result<Stored> {
        let mut s = self.lock();
        let last = s.state[idx as usize].last_seq;
        let skip = (last.saturating_sub(first_seq.saturating_sub(1)) as usize).min(records.len());
        let fresh = &records[skip..];
        if !fresh.is_empty() && first_seq + skip as u64 > last + 1 {
            tracing::warn!(
                "sender {idx}: records {}..{} never arrived (the sender's spool dropped them)",
                last + 1,
                first_seq + skip as u64
            );
        }
        let entries: Vec<NewEntry<'_>> = fresh
            .iter()
            .enumerate()
            .map(|(i, (origin, text))| NewEntry {
                origin: *origin,
                ..entry(idx, first_seq + (skip + i) as u64, text)
            })
            .collect();
        let appended = self.journal.append(&entries)?;
        if let Some(lost) = appended.evicted_before {
            tracing::error!("store size limit: entries before {lost} deleted unread");
        }
        let now = if fresh.is_empty() {
            last
        } else {
            first_seq + records.len() as u64 - 1
        };
        s.state[idx as usize].last_seq = now;
        Ok(Stored {
            sync_to: appended.seqs.end,
            new: fresh.len(),
            duplicates: skip,
            last_seq: now,
        })
    }

    /// Stores one record of stock sender `idx` unless it repeats the last
    /// one stored from it.
    pub fn store_stock(&self, idx: u16, seq: u32, text: &[u8]) -> io::Result<Stored> {
        let mut s = self.lock();
        let st = &mut s.state[idx as usize];
        if st.last_text == text {
            return Ok(Stored {
                sync_to: self.journal.end(),
                new: 0,
                duplicates: 1,
                last_seq: st.last_seq,
            });
        }
        let appended = self.journal.append(&[entry(idx, u64::from(seq), text)])?;
        st.last_text.clear();
        st.last_text.extend_from_slice(text);
        st.last_seq = u64::from(seq);
        Ok(Stored {
            sync_to: appended.seqs.end,
            new: 1,
            duplicates: 0,
            last_seq: u64::from(seq),
        })
    }

    /// Deletes journal segments before `seq` (every consumer is past them),
    /// after saving the senders' positions they held.
    pub fn retain_from(&self, seq: u64) -> io::Result<()> {
        if seq <= self.journal.start() {
            return Ok(());
        }
        {
            let s = self.lock();
            let path = self.dir.join("senders.state");
            let mut out = String::new();
            for (i, st) in s.state.iter().enumerate().skip(FIRST_INDEX as usize) {
                out.push_str(&format!(
                    "{i} {} {}\n",
                    st.last_seq,
                    hex::encode(&st.last_text)
                ));
            }
            statefile::write_atomically(&path, out.as_bytes())?;
        }
        self.journal.retain_from(seq)
    }
}

/// Appends `key` (bound to `cert`) to the sender table, fsynced.
fn register(s: &mut Senders, key: &SenderKey, cert: Option<&str>) -> io::Result<u16> {
    let idx =
        u16::try_from(s.state.len()).map_err(|_| io::Error::other("more than 65535 senders"))?;
    if let Some(c) = cert {
        check_cert(c)?;
    }
    s.file.write_all(key.to_line(idx, cert).as_bytes())?;
    s.file.sync_data()?;
    s.index.insert(key.clone(), idx);
    s.state.push(SenderState {
        cert: cert.map(str::to_string),
        ..SenderState::default()
    });
    Ok(idx)
}

/// A certificate identity must be one word to fit in a table line.
fn check_cert(c: &str) -> io::Result<()> {
    if c.is_empty() || c.contains(char::is_whitespace) {
        return Err(io::Error::other(format!(
            "certificate identity {c:?} is not one word"
        )));
    }
    Ok(())
}

fn entry<'a>(idx: u16, seq: u64, text: &'a [u8]) -> NewEntry<'a> {
    NewEntry {
        event: 0,
        source_seq: seq,
        // Left for the dispatcher to parse: the log does not need it.
        rtype: 0,
        source: idx,
        flags: 0,
        origin: None,
        text: text.into(),
    }
}

fn load_snapshot(path: &Path, state: &mut [SenderState]) -> io::Result<()> {
    let f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(with_path(e, path)),
    };
    for line in io::BufReader::new(f).lines() {
        let line = line?;
        let mut it = line.split_ascii_whitespace();
        let parsed = (|| {
            let i: usize = it.next()?.parse().ok()?;
            let seq: u64 = it.next()?.parse().ok()?;
            let text = hex::decode(it.next().unwrap_or("")).ok()?;
            Some((i, seq, text))
        })();
        match parsed {
            Some((i, seq, text)) if i < state.len() => {
                state[i].last_seq = seq;
                state[i].last_text = text;
            }
            _ => {
                return Err(io::Error::other(format!(
                    "{}: damaged line {line:?}",
                    path.display()
                )))
            }
        }
    }
    Ok(())
}

fn with_path(e: io::Error, p: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", p.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            segment_size: 4096,
            max_size: 1 << 30,
            memory: 1 << 20,
        }
    }

    #[test]
    fn fast_resends_are_stored_once_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let id = SenderKey::Fast([7; 16]);
        {
            let s = Store::open(dir.path(), limits()).unwrap();
            let i = s.sender(&id).unwrap();
            let r = s.store_fast(i, 1, &[b"type=A a", b"type=A b"]).unwrap();
            assert_eq!((r.new, r.duplicates, r.last_seq), (2, 0, 2));
            s.journal().sync_upto(r.sync_to).unwrap();
        }
        let s = Store::open(dir.path(), limits()).unwrap();
        let i = s.sender(&id).unwrap();
        assert_eq!(s.last_seq(i), 2);
        let r = s.store_fast(i, 2, &[b"type=A b", b"type=A c"]).unwrap();
        assert_eq!((r.new, r.duplicates, r.last_seq), (1, 1, 3));
        assert_eq!(s.journal().end(), 4);
    }

    #[test]
    fn fast_identity_stays_bound_to_its_first_certificate_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = ("sha256:aa", "sha256:bb");
        // A sender table written before bindings existed still loads.
        std::fs::write(
            dir.path().join("senders"),
            format!("1 fast {}\n2 peer 10.0.0.1\n", JournalId([1; 16])),
        )
        .unwrap();
        {
            let s = Store::open(dir.path(), limits()).unwrap();
            assert_eq!(
                s.fast_sender([2; 16], Some(a)).unwrap(),
                FastClaim::Granted(3)
            );
            assert_eq!(
                s.fast_sender([2; 16], Some(b)).unwrap(),
                FastClaim::Foreign {
                    idx: 3,
                    bound: a.into()
                }
            );
            // Plain TCP proves nothing: neither checked nor bound.
            assert_eq!(s.fast_sender([2; 16], None).unwrap(), FastClaim::Granted(3));
            assert_eq!(s.fast_sender([1; 16], None).unwrap(), FastClaim::Granted(1));
            // The old unbound sender is taken by the first certificate.
            assert_eq!(
                s.fast_sender([1; 16], Some(b)).unwrap(),
                FastClaim::Granted(1)
            );
            let r = s.store_fast(3, 1, &[b"type=A a"]).unwrap();
            s.journal().sync_upto(r.sync_to).unwrap();
        }
        let s = Store::open(dir.path(), limits()).unwrap();
        assert_eq!(
            s.fast_sender([2; 16], Some(a)).unwrap(),
            FastClaim::Granted(3)
        );
        assert_eq!(s.last_seq(3), 1);
        assert_eq!(
            s.fast_sender([2; 16], Some(b)).unwrap(),
            FastClaim::Foreign {
                idx: 3,
                bound: a.into()
            }
        );
        assert_eq!(
            s.fast_sender([1; 16], Some(a)).unwrap(),
            FastClaim::Foreign {
                idx: 1,
                bound: b.into()
            }
        );
        assert_eq!(
            s.sender(&SenderKey::Peer("10.0.0.1".parse().unwrap()))
                .unwrap(),
            2
        );
        drop(s);
        // The administrator moves identity 3 to certificate b.
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(dir.path().join("senders"))
            .unwrap();
        f.write_all(format!("3 bind {b}\n").as_bytes()).unwrap();
        drop(f);
        let s = Store::open(dir.path(), limits()).unwrap();
        assert_eq!(
            s.fast_sender([2; 16], Some(b)).unwrap(),
            FastClaim::Granted(3)
        );
        assert!(matches!(
            s.fast_sender([2; 16], Some(a)).unwrap(),
            FastClaim::Foreign { .. }
        ));
    }

    #[test]
    fn a_torn_last_sender_line_is_cut_off_before_the_next_is_appended() {
        let dir = tempfile::tempdir().unwrap();
        let whole = format!("1 fast {} sha256:aa\n", JournalId([1; 16]));
        let torn = format!("2 fast {} sha256:b", JournalId([2; 16]));
        std::fs::write(dir.path().join("senders"), format!("{whole}{torn}")).unwrap();
        {
            let s = Store::open(dir.path(), limits()).unwrap();
            // The torn sender was never acknowledged: it registers afresh.
            assert_eq!(
                s.fast_sender([2; 16], Some("sha256:bb")).unwrap(),
                FastClaim::Granted(2)
            );
        }
        let s = Store::open(dir.path(), limits()).unwrap();
        assert_eq!(
            s.fast_sender([2; 16], Some("sha256:bb")).unwrap(),
            FastClaim::Granted(2)
        );
        assert_eq!(
            s.fast_sender([1; 16], Some("sha256:aa")).unwrap(),
            FastClaim::Granted(1)
        );
    }

    #[test]
    fn stock_resend_of_the_last_record_is_dropped_even_after_retain() {
        let dir = tempfile::tempdir().unwrap();
        let peer = SenderKey::Peer("10.0.0.1".parse().unwrap());
        let other = SenderKey::Peer("10.0.0.2".parse().unwrap());
        let big = vec![b'x'; 3000];
        {
            let s = Store::open(dir.path(), limits()).unwrap();
            let i = s.sender(&peer).unwrap();
            let j = s.sender(&other).unwrap();
            assert_eq!(s.store_stock(i, 2, b"type=A r1").unwrap().new, 1);
            assert_eq!(s.store_stock(j, 2, b"type=A r1").unwrap().new, 1);
            for _ in 0..4 {
                s.store_stock(j, 3, &big).unwrap();
                s.store_stock(j, 3, b"type=A r2").unwrap();
            }
            let end = s.journal().end();
            s.journal().sync_upto(end).unwrap();
            s.retain_from(end).unwrap();
            assert!(s.journal().start() > 1);
        }
        let s = Store::open(dir.path(), limits()).unwrap();
        let i = s.sender(&peer).unwrap();
        assert_eq!(s.store_stock(i, 2, b"type=A r1").unwrap().duplicates, 1);
        assert_eq!(s.store_stock(i, 3, b"type=A r2").unwrap().new, 1);
    }
}
