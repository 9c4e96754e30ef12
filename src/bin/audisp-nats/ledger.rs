//! What `audisp-nats consume` must remember across its own crashes to store
//! every message once: which stream messages audispd already holds.
//!
//! JetStream redelivers a message until it is acknowledged, and may deliver
//! it again even then (an acknowledgement lost with a connection, a server
//! restarted from an older consumer state); it may also deliver messages
//! out of stream order (one held by a crashed process comes back after
//! newer ones). audispd's input drops what it already has by a high-water
//! mark of the input's own numbering, which needs that numbering to be in
//! the order records are fed. So the consumer numbers what it feeds itself
//! (its *epoch* and counter, as any input) and keeps this ledger:
//!
//! * `stored`: the stream sequence numbers audispd acknowledged, as ranges;
//!   a message delivered again with one of them is acknowledged to
//!   JetStream without feeding it;
//! * `origin`: per publisher numbering (`Audisp-Origin`), the journal places
//!   (`Audisp-Seqs`) of the records audispd acknowledged, as ranges: a
//!   publisher that crashed sends its unacknowledged records again, maybe
//!   cut into messages differently (another message, another stream
//!   sequence number), and a record audispd holds is then left out;
//! * `pending`: for each message being fed, its stream sequence number, the
//!   input numbers of its records and their journal places. The ledger is
//!   on stable storage before the records go to audispd, so after a crash
//!   the input's high-water mark (audispd's `WELCOME`) says which of them
//!   audispd has. A message's records may go to audispd in two protocol
//!   messages, so the mark can fall inside one: its leading records are
//!   stored and the rest are not. Their places join `origin`, or, for a
//!   message without places, `partial` keeps how many leading records
//!   audispd holds, so that when JetStream delivers it again only the rest
//!   is fed.
//!
//! Stream ranges at or below the consumer's acknowledgement floor, as
//! JetStream reported it a poll earlier, are forgotten: JetStream no longer
//! delivers those. Of each origin the newest [`ORIGIN_RANGES`] ranges are
//! kept: a publisher sends again only what it had not finished, its newest
//! records.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use crate::message;

/// How many ranges of journal places are kept per origin.
pub const ORIGIN_RANGES: usize = 4096;

/// The journal places of a message's records: their origin and numbers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Places {
    pub origin: String,
    pub seqs: Vec<u64>,
}

/// One message being fed: its stream sequence, its records' input numbers
/// `first..first + count` and, if it says, their journal places.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    pub stream_seq: u64,
    pub first: u64,
    pub count: u64,
    pub places: Option<Places>,
}

/// Sorted, disjoint, inclusive ranges of numbers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Ranges(Vec<(u64, u64)>);

impl Ranges {
    fn contains(&self, n: u64) -> bool {
        let i = self.0.partition_point(|&(_, b)| b < n);
        self.0.get(i).is_some_and(|&(a, _)| a <= n)
    }

    fn insert(&mut self, n: u64) {
        let r = &mut self.0;
        let i = r.partition_point(|&(_, b)| b < n);
        if r.get(i).is_some_and(|&(a, _)| a <= n) {
            return;
        }
        let joins_left = i > 0 && r[i - 1].1 + 1 == n;
        let joins_right = r.get(i).is_some_and(|&(a, _)| a == n + 1);
        match (joins_left, joins_right) {
            (true, true) => {
                r[i - 1].1 = r[i].1;
                r.remove(i);
            }
            (true, false) => r[i - 1].1 = n,
            (false, true) => r[i].0 = n,
            (false, false) => r.insert(i, (n, n)),
        }
    }

    /// Forgets the lowest ranges beyond the newest `keep`.
    fn keep_newest(&mut self, keep: usize) {
        if self.0.len() > keep {
            let drop = self.0.len() - keep;
            self.0.drain(..drop);
        }
    }

    fn write(&self, out: &mut String) {
        for (a, b) in &self.0 {
            out.push_str(&format!(" {a}-{b}"));
        }
    }

    fn parse<'a>(words: impl Iterator<Item = &'a str>) -> Option<Ranges> {
        let mut r = Vec::new();
        for w in words {
            let (a, b) = w.split_once('-')?;
            r.push((a.parse().ok()?, b.parse().ok()?));
        }
        r.sort_unstable();
        Some(Ranges(r))
    }
}

/// The consumer's memory, and the file that keeps it.
#[derive(Debug)]
pub struct Ledger {
    path: PathBuf,
    /// The input's epoch (its numbering, as audispd knows it).
    pub epoch: [u8; 16],
    /// The stream these sequence numbers belong to (name and creation
    /// time): a stream created anew starts numbering again.
    pub stream: String,
    /// Highest input number handed out.
    pub last_number: u64,
    /// Stream sequence numbers audispd holds.
    stored: Ranges,
    /// Journal places audispd holds, per origin.
    origins: HashMap<String, Ranges>,
    /// Messages being fed, in feeding order.
    pending: Vec<Pending>,
    /// Messages without places of which audispd holds the leading records
    /// only: stream sequence number → how many.
    partial: HashMap<u64, u64>,
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex16(s: &str) -> Option<[u8; 16]> {
    let mut out = [0u8; 16];
    if s.len() != 32 {
        return None;
    }
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

impl Ledger {
    /// Reads the ledger at `path`, or starts one (a new epoch) if there is
    /// none. A ledger that cannot be read is an error: starting afresh
    /// would store again what audispd has.
    pub fn open(path: &Path) -> Result<Ledger, String> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut epoch = [0u8; 16];
                getrandom::fill(&mut epoch).map_err(|e| format!("random epoch: {e}"))?;
                let l = Ledger {
                    path: path.to_path_buf(),
                    epoch,
                    stream: String::new(),
                    last_number: 0,
                    stored: Ranges::default(),
                    origins: HashMap::new(),
                    pending: Vec::new(),
                    partial: HashMap::new(),
                };
                l.save()?;
                if let Some(dir) = path.parent() {
                    File::open(dir)
                        .and_then(|d| d.sync_all())
                        .map_err(|e| format!("{}: {e}", dir.display()))?;
                }
                return Ok(l);
            }
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        Ledger::parse(path, &text)
            .map_err(|line| format!("{}:{line}: not a ledger line; the file is damaged (move it away to start a new input numbering, and expect records audispd already has to be stored again)", path.display()))
    }

    fn parse(path: &Path, text: &str) -> Result<Ledger, usize> {
        let mut l = Ledger {
            path: path.to_path_buf(),
            epoch: [0; 16],
            stream: String::new(),
            last_number: 0,
            stored: Ranges::default(),
            origins: HashMap::new(),
            pending: Vec::new(),
            partial: HashMap::new(),
        };
        let mut have_epoch = false;
        for (i, line) in text.lines().enumerate() {
            let bad = i + 1;
            let mut w = line.split_whitespace();
            match w.next() {
                Some("epoch") => {
                    l.epoch = w.next().and_then(unhex16).ok_or(bad)?;
                    have_epoch = true;
                }
                Some("stream") => l.stream = w.next().unwrap_or("").to_string(),
                Some("last") => l.last_number = w.next().and_then(|s| s.parse().ok()).ok_or(bad)?,
                Some("stored") => l.stored = Ranges::parse(w).ok_or(bad)?,
                Some("origin") => {
                    let key = w.next().ok_or(bad)?.to_string();
                    l.origins.insert(key, Ranges::parse(w).ok_or(bad)?);
                }
                Some("pending") => {
                    let mut n = || w.next().and_then(|s| s.parse::<u64>().ok());
                    let (Some(stream_seq), Some(first), Some(count)) = (n(), n(), n()) else {
                        return Err(bad);
                    };
                    let places = match (w.next(), w.next()) {
                        (None, _) => None,
                        (Some(origin), Some(seqs)) => Some(Places {
                            origin: origin.to_string(),
                            seqs: message::read_seqs(seqs, count as usize).ok_or(bad)?,
                        }),
                        (Some(_), None) => return Err(bad),
                    };
                    l.pending.push(Pending {
                        stream_seq,
                        first,
                        count,
                        places,
                    });
                }
                Some("partial") => {
                    let mut n = || w.next().and_then(|s| s.parse::<u64>().ok());
                    let (Some(stream_seq), Some(held)) = (n(), n()) else {
                        return Err(bad);
                    };
                    l.partial.insert(stream_seq, held);
                }
                None => {}
                Some(_) => return Err(bad),
            }
        }
        if !have_epoch {
            return Err(1);
        }
        Ok(l)
    }

    /// Writes the ledger to stable storage (a new file renamed over the old).
    pub fn save(&self) -> Result<(), String> {
        let mut text = format!(
            "epoch {}\nstream {}\nlast {}\nstored",
            hex(&self.epoch),
            self.stream,
            self.last_number
        );
        self.stored.write(&mut text);
        text.push('\n');
        for (key, r) in &self.origins {
            text.push_str("origin ");
            text.push_str(key);
            r.write(&mut text);
            text.push('\n');
        }
        for p in &self.pending {
            text.push_str(&format!("pending {} {} {}", p.stream_seq, p.first, p.count));
            if let Some(pl) = &p.places {
                text.push_str(&format!(" {} {}", pl.origin, message::write_seqs(&pl.seqs)));
            }
            text.push('\n');
        }
        for (seq, held) in &self.partial {
            text.push_str(&format!("partial {seq} {held}\n"));
        }
        audisp::statefile::write_atomically(&self.path, text.as_bytes()).map_err(|e| e.to_string())
    }

    /// A stream created anew (another name or creation time): its sequence
    /// numbers mean nothing that was stored before (journal places still
    /// do).
    pub fn bind_stream(&mut self, stream: &str) -> bool {
        if self.stream == stream {
            return false;
        }
        let was = std::mem::replace(&mut self.stream, stream.to_string());
        self.stored = Ranges::default();
        self.pending.clear();
        self.partial.clear();
        !was.is_empty()
    }

    /// Whether audispd holds stream message `seq`.
    pub fn is_stored(&self, seq: u64) -> bool {
        self.stored.contains(seq)
    }

    /// For each of `seqs`, whether audispd holds that record of `origin`.
    pub fn has_records(&self, origin: &str, seqs: &[u64]) -> Vec<bool> {
        match self.origins.get(origin) {
            Some(r) => seqs.iter().map(|&s| r.contains(s)).collect(),
            None => vec![false; seqs.len()],
        }
    }

    /// Numbers a message of `count` records (at journal places `places`, if
    /// it says) for feeding and records it as pending; returns its first
    /// input number.
    pub fn number(&mut self, stream_seq: u64, count: u64, places: Option<Places>) -> u64 {
        let first = self.last_number + 1;
        self.last_number += count;
        self.pending.push(Pending {
            stream_seq,
            first,
            count,
            places,
        });
        first
    }

    /// audispd holds every input number up to `upto`: pending messages
    /// wholly at or below it become stored; returns their stream sequence
    /// numbers.
    pub fn stored_upto(&mut self, upto: u64) -> Vec<u64> {
        let mut done = Vec::new();
        let mut keep = Vec::new();
        for p in std::mem::take(&mut self.pending) {
            if p.first + p.count - 1 <= upto {
                done.push(p);
            } else {
                keep.push(p);
            }
        }
        self.pending = keep;
        for p in &done {
            self.stored.insert(p.stream_seq);
            self.partial.remove(&p.stream_seq);
            if let Some(pl) = &p.places {
                self.hold_places(&pl.origin, &pl.seqs);
            }
        }
        done.into_iter().map(|p| p.stream_seq).collect()
    }

    /// audispd holds the records at `seqs` of `origin`.
    fn hold_places(&mut self, origin: &str, seqs: &[u64]) {
        let r = self.origins.entry(origin.to_string()).or_default();
        for &s in seqs {
            r.insert(s);
        }
        r.keep_newest(ORIGIN_RANGES);
    }

    /// After (re)connecting to audispd, whose input high-water mark is
    /// `have`: what it holds is stored, the rest of the pending messages
    /// must be fed again, and numbering goes on after `have`. Returns the
    /// messages now known stored, and the messages to feed again with how
    /// many of their leading records (as fed) audispd holds already: the
    /// mark can fall inside a message. Those records are remembered (by
    /// place, or for a message without places in `partial`), so a message
    /// JetStream delivers again is fed without them ([`Ledger::held_part`]).
    pub fn reconcile(&mut self, have: u64) -> (Vec<u64>, Vec<(u64, u64)>) {
        let stored = self.stored_upto(have);
        let mut again = Vec::new();
        for p in std::mem::take(&mut self.pending) {
            let held = have.saturating_add(1).saturating_sub(p.first).min(p.count);
            if held > 0 {
                match &p.places {
                    Some(pl) => {
                        let n = (held as usize).min(pl.seqs.len());
                        self.hold_places(&pl.origin, &pl.seqs[..n]);
                    }
                    None => {
                        let was = self.partial.entry(p.stream_seq).or_insert(0);
                        *was += held;
                    }
                }
            }
            again.push((p.stream_seq, held));
        }
        self.last_number = have.max(self.last_number);
        (stored, again)
    }

    /// How many leading records of message `seq` (one without places, as
    /// JetStream delivers it) audispd holds already.
    pub fn held_part(&self, seq: u64) -> u64 {
        self.partial.get(&seq).copied().unwrap_or(0)
    }

    /// Forgets stored ranges at or below `floor` (JetStream's
    /// acknowledgement floor as of an earlier poll).
    pub fn forget_upto(&mut self, floor: u64) {
        self.stored.0.retain(|&(_, b)| b > floor);
        self.partial.retain(|&seq, _| seq > floor);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_merge_and_answer() {
        let dir = tempfile::tempdir().unwrap();
        let mut l = Ledger::open(&dir.path().join("l")).unwrap();
        for s in [5, 3, 4, 10, 8, 9, 1] {
            l.stored.insert(s);
        }
        assert_eq!(l.stored.0, [(1, 1), (3, 5), (8, 10)]);
        l.stored.insert(2);
        l.stored.insert(7);
        l.stored.insert(6);
        assert_eq!(l.stored.0, [(1, 10)]);
        assert!(l.is_stored(1) && l.is_stored(10) && !l.is_stored(11) && !l.is_stored(0));
        l.stored.insert(20);
        l.forget_upto(10);
        assert_eq!(l.stored.0, [(20, 20)]);
        l.stored.insert(30);
        l.stored.keep_newest(1);
        assert_eq!(l.stored.0, [(30, 30)]);
    }

    #[test]
    fn a_crash_between_feeding_and_acknowledging_is_resolved_by_audispds_mark() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("l");
        let mut l = Ledger::open(&path).unwrap();
        l.bind_stream("AUDIT@1");
        // Messages 7 (2 records) and 9 (1 record) fed as inputs 1-2 and 3.
        assert_eq!(l.number(7, 2, None), 1);
        assert_eq!(l.number(9, 1, None), 3);
        l.save().unwrap();
        let epoch = l.epoch;
        drop(l);
        // audispd had stored up to input 2 when the consumer died.
        let mut l = Ledger::open(&path).unwrap();
        assert_eq!(l.epoch, epoch);
        assert_eq!(l.stream, "AUDIT@1");
        assert_eq!(l.reconcile(2), (vec![7], vec![(9, 0)]));
        assert!(l.is_stored(7) && !l.is_stored(9));
        assert_eq!(l.number(9, 1, None), 4);
        assert_eq!(l.stored_upto(4), [9]);
        assert!(l.is_stored(9));
        // A new stream: nothing is known stored.
        assert!(l.bind_stream("AUDIT@2"));
        assert!(!l.is_stored(7));
    }

    #[test]
    fn records_stored_are_known_by_origin_and_place_across_a_crash() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("l");
        let mut l = Ledger::open(&path).unwrap();
        l.bind_stream("AUDIT@1");
        let places = |seqs: &[u64]| {
            Some(Places {
                origin: "abc".into(),
                seqs: seqs.to_vec(),
            })
        };
        // Message 3 holds places 10-12, message 4 places 13 and 15.
        assert_eq!(l.number(3, 3, places(&[10, 11, 12])), 1);
        assert_eq!(l.number(4, 2, places(&[13, 15])), 4);
        l.save().unwrap();
        drop(l);
        // audispd had the first message when the consumer died.
        let mut l = Ledger::open(&path).unwrap();
        assert_eq!(l.reconcile(3), (vec![3], vec![(4, 0)]));
        let held = l.has_records("abc", &[9, 10, 12, 13]);
        assert_eq!(held, [false, true, true, false]);
        assert_eq!(l.has_records("xyz", &[10]), [false]);
        let first = l.number(4, 2, places(&[13, 15]));
        assert_eq!(l.stored_upto(first + 1), [4]);
        l.save().unwrap();
        // Known after a restart, and after the stream was made anew.
        let mut l = Ledger::open(&path).unwrap();
        assert!(l.bind_stream("AUDIT@2"));
        assert!(!l.is_stored(3));
        let held = l.has_records("abc", &[10, 11, 12, 13, 14, 15]);
        assert_eq!(held, [true, true, true, true, false, true]);
    }

    #[test]
    fn a_mark_inside_a_message_keeps_its_leading_records_known_across_a_crash() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("l");
        let mut l = Ledger::open(&path).unwrap();
        l.bind_stream("AUDIT@1");
        let places = Some(Places {
            origin: "abc".into(),
            seqs: vec![20, 21, 22],
        });
        // Message 5 (places 20-22) fed as inputs 1-3, message 6 (no
        // places) as 4-7; audispd took inputs 1-2 and 4-5 of them.
        assert_eq!(l.number(5, 3, places), 1);
        assert_eq!(l.number(6, 4, None), 4);
        l.save().unwrap();
        let mut l = Ledger::open(&path).unwrap();
        assert_eq!(l.reconcile(2), (vec![], vec![(5, 2), (6, 0)]));
        assert_eq!(l.has_records("abc", &[20, 21, 22]), [true, true, false]);
        assert_eq!(l.held_part(6), 0);
        // Message 6 alone fed again (inputs 8-11), cut after two records.
        assert_eq!(l.number(6, 4, None), 8);
        l.save().unwrap();
        let mut l = Ledger::open(&path).unwrap();
        assert_eq!(l.reconcile(9), (vec![], vec![(6, 2)]));
        assert_eq!(l.held_part(6), 2);
        l.save().unwrap();
        // Known after a restart, forgotten once stored or below the floor.
        let mut l = Ledger::open(&path).unwrap();
        assert_eq!(l.held_part(6), 2);
        let first = l.number(6, 2, None);
        assert_eq!(l.stored_upto(first + 1), [6]);
        assert_eq!(l.held_part(6), 0);
        l.partial.insert(9, 1);
        l.forget_upto(9);
        assert_eq!(l.held_part(9), 0);
    }

    #[test]
    fn a_damaged_ledger_is_refused_with_its_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("l");
        std::fs::write(&path, "epoch 00\n").unwrap();
        assert!(Ledger::open(&path)
            .unwrap_err()
            .contains(":1: not a ledger line"));
        std::fs::write(&path, format!("epoch {}\npending 1 2\n", "ab".repeat(16))).unwrap();
        assert!(Ledger::open(&path).unwrap_err().contains(":2: "));
        let bad_places = format!("epoch {}\n\npending 1 2 1 abc 5-9\n", "ab".repeat(16));
        std::fs::write(&path, bad_places).unwrap();
        assert!(Ledger::open(&path).unwrap_err().contains(":3: "));
    }
}
