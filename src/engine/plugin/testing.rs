//! Fixtures for the deliveries' unit tests: a journal of numbered records,
//! a [`Host`] that keeps what a delivery reports, and socket pairs.

use std::os::fd::OwnedFd;

use nix::sys::socket::{self, AddressFamily, SockFlag, SockType};

use super::Host;
use crate::engine::cursor::Position;
use crate::journal::entry::flags;
use crate::journal::{Journal, Limits, LostReason, NewEntry, Reader};
use crate::protocol::{CommandStatus, Notice};

/// A journal in a temporary directory (kept as long as the first half).
pub(super) fn journal() -> (tempfile::TempDir, Journal) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let limits = Limits {
        segment_size: 1 << 20,
        max_size: 1 << 30,
        memory: 1 << 20,
    };
    let j = Journal::open(dir.path(), limits).expect("journal");
    (dir, j)
}

/// The text of record `i`, padded to at least `len` bytes.
pub(super) fn text(i: u64, len: usize) -> Vec<u8> {
    let mut t = format!("type=SYSCALL msg=audit(1700000000.000:{i}): syscall=59 pad=").into_bytes();
    t.resize(t.len().max(len), b'x');
    t
}

/// Appends `events` events of `per_event` records of about `len` bytes, the
/// last record of each flagged as ending it; returns each event's record
/// sequence numbers.
pub(super) fn append(j: &Journal, events: u64, per_event: u64, len: usize) -> Vec<Vec<u64>> {
    let start = j.end();
    let texts: Vec<Vec<u8>> = (0..events * per_event)
        .map(|k| text(start + k, len))
        .collect();
    let entries: Vec<NewEntry<'_>> = texts
        .iter()
        .enumerate()
        .map(|(k, t)| NewEntry {
            event: start + k as u64 / per_event,
            source_seq: start + k as u64,
            rtype: 1300,
            source: 1,
            flags: if (k as u64 + 1) % per_event == 0 {
                flags::ENDS_EVENT
            } else {
                0
            },
            origin: None,
            text: t.as_slice().into(),
        })
        .collect();
    let seqs = j.append(&entries).expect("append").seqs;
    let all: Vec<u64> = seqs.collect();
    all.chunks(per_event as usize).map(|c| c.to_vec()).collect()
}

/// A stream or seqpacket socket pair: the dispatcher's end (non-blocking)
/// and the plugin's.
pub(super) fn pair(ty: SockType) -> (OwnedFd, OwnedFd) {
    let (ours, theirs) = socket::socketpair(AddressFamily::Unix, ty, None, SockFlag::SOCK_CLOEXEC)
        .expect("socketpair");
    crate::uds::set_nonblocking(&ours).expect("non-blocking");
    crate::uds::set_nonblocking(&theirs).expect("non-blocking");
    (ours, theirs)
}

/// Keeps what a delivery reports, the way the sender would.
pub(super) struct TestHost {
    pub reader: Reader,
    /// Records sent.
    pub delivered: u64,
    /// The cursor, moved as the sender moves it (never backwards).
    pub position: Position,
    /// Records settled.
    pub handled: u64,
    /// Entries reported lost.
    pub lost: Vec<(u64, u64)>,
    /// Commands asked for.
    pub commands: Vec<(String, Vec<String>)>,
    /// Notices received (`NOTIFY`).
    pub notices: Vec<Notice>,
    /// Records the filter withheld, and the last event counted.
    pub filtered: u64,
    pub filtered_upto: u64,
}

impl TestHost {
    /// A host whose cursor is at the end of `j`, reading from there.
    pub fn at_end(j: &Journal) -> TestHost {
        let end = j.end();
        TestHost::at(
            j,
            Position {
                acked: end - 1,
                replay_from: end,
            },
        )
    }

    /// A host whose cursor is `position`, reading from its `replay_from`.
    pub fn at(j: &Journal, position: Position) -> TestHost {
        TestHost {
            reader: j.reader(position.replay_from),
            delivered: 0,
            position,
            handled: 0,
            lost: Vec::new(),
            commands: Vec::new(),
            notices: Vec::new(),
            filtered: 0,
            filtered_upto: 0,
        }
    }
}

impl Host for TestHost {
    fn reader(&mut self) -> &mut Reader {
        &mut self.reader
    }

    fn delivered(&mut self, records: u64) {
        self.delivered += records;
    }

    fn settled(&mut self, position: Position, records: u64) {
        self.position = Position {
            acked: self.position.acked.max(position.acked),
            replay_from: self.position.replay_from.max(position.replay_from),
        };
        self.handled += records;
    }

    fn filtered_upto(&self) -> u64 {
        self.filtered_upto
    }

    fn filtered(&mut self, upto: u64, records: u64) {
        self.filtered_upto = self.filtered_upto.max(upto);
        self.filtered += records;
    }

    fn lost(&mut self, from: u64, to: u64, _reason: &LostReason) {
        self.lost.push((from, to));
    }

    fn stats(&mut self) -> Vec<u8> {
        b"{\"test\":true}".to_vec()
    }

    fn command(&mut self, name: &str, args: &[String]) -> (CommandStatus, String) {
        self.commands.push((name.to_string(), args.to_vec()));
        (CommandStatus::Done, format!("{name} done"))
    }

    fn notify(&mut self, notice: Notice) {
        self.notices.push(notice);
    }
}
