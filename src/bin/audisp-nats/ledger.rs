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
//! * `pending`: for each message being fed, its stream sequence number and
//!   the input numbers of its records. The ledger is on stable storage
//!   before the records go to audispd, so after a crash the input's
//!   high-water mark (audispd's `WELCOME`) says which of them audispd has.
//!
//! Ranges at or below the consumer's acknowledgement floor, as JetStream
//! reported it a poll earlier, are forgotten: JetStream no longer delivers
//! those.

use std::fs::File;
use std::path::{Path, PathBuf};

/// One message being fed: its stream sequence and its records' input
/// numbers `first..first + count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pending {
    pub stream_seq: u64,
    pub first: u64,
    pub count: u64,
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
    /// Stream sequence ranges audispd holds, sorted, disjoint, inclusive.
    stored: Vec<(u64, u64)>,
    /// Messages being fed, in feeding order.
    pending: Vec<Pending>,
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
                    stored: Vec::new(),
                    pending: Vec::new(),
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
            stored: Vec::new(),
            pending: Vec::new(),
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
                Some("stored") => {
                    for r in w {
                        let (a, b) = r.split_once('-').ok_or(bad)?;
                        let a: u64 = a.parse().map_err(|_| bad)?;
                        let b: u64 = b.parse().map_err(|_| bad)?;
                        l.stored.push((a, b));
                    }
                }
                Some("pending") => {
                    let n: Vec<u64> = w
                        .map(|s| s.parse().map_err(|_| bad))
                        .collect::<Result<_, _>>()?;
                    let [stream_seq, first, count] = n[..] else {
                        return Err(bad);
                    };
                    l.pending.push(Pending {
                        stream_seq,
                        first,
                        count,
                    });
                }
                None => {}
                Some(_) => return Err(bad),
            }
        }
        if !have_epoch {
            return Err(1);
        }
        l.stored.sort_unstable();
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
        for (a, b) in &self.stored {
            text.push_str(&format!(" {a}-{b}"));
        }
        text.push('\n');
        for p in &self.pending {
            text.push_str(&format!(
                "pending {} {} {}\n",
                p.stream_seq, p.first, p.count
            ));
        }
        audisp::statefile::write_atomically(&self.path, text.as_bytes()).map_err(|e| e.to_string())
    }

    /// A stream created anew (another name or creation time): its sequence
    /// numbers mean nothing that was stored before.
    pub fn bind_stream(&mut self, stream: &str) -> bool {
        if self.stream == stream {
            return false;
        }
        let was = std::mem::replace(&mut self.stream, stream.to_string());
        self.stored.clear();
        self.pending.clear();
        !was.is_empty()
    }

    /// Whether audispd holds stream message `seq`.
    pub fn is_stored(&self, seq: u64) -> bool {
        let i = self.stored.partition_point(|&(_, b)| b < seq);
        self.stored.get(i).is_some_and(|&(a, _)| a <= seq)
    }

    /// Adds `seq` to the stored ranges.
    fn insert(&mut self, seq: u64) {
        let i = self.stored.partition_point(|&(_, b)| b < seq);
        if self.stored.get(i).is_some_and(|&(a, _)| a <= seq) {
            return;
        }
        let joins_left = i > 0 && self.stored[i - 1].1 + 1 == seq;
        let joins_right = self.stored.get(i).is_some_and(|&(a, _)| a == seq + 1);
        match (joins_left, joins_right) {
            (true, true) => {
                self.stored[i - 1].1 = self.stored[i].1;
                self.stored.remove(i);
            }
            (true, false) => self.stored[i - 1].1 = seq,
            (false, true) => self.stored[i].0 = seq,
            (false, false) => self.stored.insert(i, (seq, seq)),
        }
    }

    /// Numbers a message of `count` records for feeding and records it as
    /// pending; returns its first input number.
    pub fn number(&mut self, stream_seq: u64, count: u64) -> u64 {
        let first = self.last_number + 1;
        self.last_number += count;
        self.pending.push(Pending {
            stream_seq,
            first,
            count,
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
                done.push(p.stream_seq);
            } else {
                keep.push(p);
            }
        }
        self.pending = keep;
        for &s in &done {
            self.insert(s);
        }
        done
    }

    /// After (re)connecting to audispd, whose input high-water mark is
    /// `have`: what it holds is stored, the rest of the pending messages
    /// must be fed again (returned), and numbering goes on after `have`.
    /// Returns (messages now known stored, messages to feed again).
    pub fn reconcile(&mut self, have: u64) -> (Vec<u64>, Vec<u64>) {
        let stored = self.stored_upto(have);
        let again = self.pending.drain(..).map(|p| p.stream_seq).collect();
        self.last_number = have.max(self.last_number);
        (stored, again)
    }

    /// Forgets stored ranges at or below `floor` (JetStream's
    /// acknowledgement floor as of an earlier poll).
    pub fn forget_upto(&mut self, floor: u64) {
        self.stored.retain(|&(_, b)| b > floor);
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
            l.insert(s);
        }
        assert_eq!(l.stored, [(1, 1), (3, 5), (8, 10)]);
        l.insert(2);
        l.insert(7);
        l.insert(6);
        assert_eq!(l.stored, [(1, 10)]);
        assert!(l.is_stored(1) && l.is_stored(10) && !l.is_stored(11) && !l.is_stored(0));
        l.insert(20);
        l.forget_upto(10);
        assert_eq!(l.stored, [(20, 20)]);
    }

    #[test]
    fn a_crash_between_feeding_and_acknowledging_is_resolved_by_audispds_mark() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("l");
        let mut l = Ledger::open(&path).unwrap();
        l.bind_stream("AUDIT@1");
        // Messages 7 (2 records) and 9 (1 record) fed as inputs 1-2 and 3.
        assert_eq!(l.number(7, 2), 1);
        assert_eq!(l.number(9, 1), 3);
        l.save().unwrap();
        let epoch = l.epoch;
        drop(l);
        // audispd had stored up to input 2 when the consumer died.
        let mut l = Ledger::open(&path).unwrap();
        assert_eq!(l.epoch, epoch);
        assert_eq!(l.stream, "AUDIT@1");
        assert_eq!(l.reconcile(2), (vec![7], vec![9]));
        assert!(l.is_stored(7) && !l.is_stored(9));
        assert_eq!(l.number(9, 1), 4);
        assert_eq!(l.stored_upto(4), [9]);
        assert!(l.is_stored(9));
        // A new stream: nothing is known stored.
        assert!(l.bind_stream("AUDIT@2"));
        assert!(!l.is_stored(7));
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
    }
}
