//! audisp-logfile's position file (`--state FILE`): how far the log got —
//! the dispatcher's journal and the last record or event written — and which
//! file the log then ended in and at what size.
//!
//! The SDK's own checkpoint is written after the handler returned, so a
//! kill between the log's write and that update repeated a whole batch on
//! restart. Here the position names the bytes it covers instead: it is
//! recorded after each commit (and around each rotation), and at start
//! whatever the live file holds past the recorded size is cut off — it was
//! written but never acknowledged, so the dispatcher sends it again and it
//! is written once ([`super::rotate::RotatingLog::open`]). With `--fsync
//! batch` the position is synced with the data, so a power failure cannot
//! leave it behind data already acknowledged.
//!
//! A filtered plugin's records are acknowledged by their event's id, and an
//! event may end in a later batch than it began (an event larger than one
//! message, `ACK_FOLLOWS`) or be cut by a rotation: the log then holds the
//! start of an event it has not completed. Its ack id and last seq are kept
//! too ([`Upto::partial`]), and the plugin resumes within that event
//! (`Plugin::resume_within`): after a crash there, the dispatcher sends the
//! event again whole and only the records the log lacks are written.
//!
//! The file holds one line, `JOURNAL SEQ INODE SIZE`, followed by `ACK
//! SEQ` when the log ends within an event, rewritten in place at a fixed
//! length. A line without them (an earlier version's) resumes after `SEQ`,
//! as that version did. A line of the SDK's checkpoint format (`JOURNAL
//! SEQ`, from an earlier version still) is taken as a position without a
//! file: nothing is cut at that start. The file is locked
//! ([`audisp::statelock`]) for as long as the program runs.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use audisp::journal_id::JournalId;
use audisp::sdk::Upto;
use audisp::statefile;
use audisp::statelock::StateLock;

/// Length every position line is padded to, so a shorter one overwrites a
/// longer one whole (the longest line, six numbers at their largest, is
/// 159 bytes; an earlier version padded to 128).
const LINE: usize = 192;

/// How far the log got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    /// The dispatcher journal the ack ids belong to.
    pub journal: [u8; 16],
    /// The records written.
    pub upto: Upto,
    /// The file the log ended in then, and its size (as stored).
    pub file: Option<FileEnd>,
}

/// Where the log ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileEnd {
    /// Inode number of the file (the live file, or the generation it was
    /// renamed to).
    pub inode: u64,
    /// Its size in bytes.
    pub size: u64,
}

/// The position file, open and locked.
pub struct PositionFile {
    file: File,
    path: PathBuf,
    sync: bool,
    _lock: StateLock,
}

impl PositionFile {
    /// Locks and opens (or creates) the position file; returns it with the
    /// position it holds, if any. `sync`: fsync every update.
    pub fn open(path: &Path, sync: bool) -> Result<(PositionFile, Option<Position>), String> {
        let lock = StateLock::file(path)?;
        let file = statefile::open(
            statefile::options()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false),
            path,
        )
        .map_err(|e| e.to_string())?;
        let mut buf = [0u8; LINE];
        let n = file
            .read_at(&mut buf, 0)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        let pos = parse(&buf[..n]);
        Ok((
            PositionFile {
                file,
                path: path.to_path_buf(),
                sync,
                _lock: lock,
            },
            pos,
        ))
    }

    /// Records `pos`.
    pub fn save(&self, pos: &Position) -> io::Result<()> {
        let mut line = format!("{} {}", JournalId(pos.journal), pos.upto.done);
        // A partial event is stored only after a file end (the SDK's
        // format has neither; the log always names its file).
        if let Some(f) = pos.file {
            line += &format!(" {} {}", f.inode, f.size);
            if let Some((ack, seq)) = pos.upto.partial {
                line += &format!(" {ack} {seq}");
            }
        }
        line.push('\n');
        let mut line = line.into_bytes();
        line.resize(LINE, b' ');
        self.file
            .write_all_at(&line, 0)
            .and_then(|_| {
                if self.sync {
                    self.file.sync_data()
                } else {
                    Ok(())
                }
            })
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", self.path.display())))
    }
}

/// Reads a position line; None if there is none (a new file) or it is not
/// one.
fn parse(bytes: &[u8]) -> Option<Position> {
    let text = std::str::from_utf8(bytes).ok()?;
    let mut it = text.split_ascii_whitespace();
    let journal = it.next()?.parse::<JournalId>().ok()?.0;
    let done = it.next()?.parse().ok()?;
    let file = match (it.next(), it.next()) {
        (Some(i), Some(s)) => Some(FileEnd {
            inode: i.parse().ok()?,
            size: s.parse().ok()?,
        }),
        _ => None,
    };
    let partial = match (it.next(), it.next()) {
        (Some(a), Some(s)) => Some((a.parse().ok()?, s.parse().ok()?)),
        _ => None,
    };
    Some(Position {
        journal,
        upto: Upto { done, partial },
        file,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_round_trip_and_older_formats_read_without_what_they_lack() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pos");
        let (f, none) = PositionFile::open(&path, true).unwrap();
        assert_eq!(none, None);
        let long = Position {
            journal: [7; 16],
            upto: Upto {
                done: u64::MAX,
                partial: Some((u64::MAX, u64::MAX)),
            },
            file: Some(FileEnd {
                inode: u64::MAX,
                size: u64::MAX,
            }),
        };
        f.save(&long).unwrap();
        drop(f);
        let (f, read) = PositionFile::open(&path, false).unwrap();
        assert_eq!(read, Some(long), "the longest line fits");
        let short = Position {
            journal: [7; 16],
            upto: Upto {
                done: 3,
                partial: None,
            },
            file: Some(FileEnd { inode: 9, size: 0 }),
        };
        f.save(&short).unwrap();
        drop(f);
        assert_eq!(PositionFile::open(&path, false).unwrap().1, Some(short));
        // An earlier version's line (padded to 128 bytes): no partial event.
        let mut old = format!("{} 42 9 100\n", JournalId([1; 16])).into_bytes();
        old.resize(128, b' ');
        std::fs::write(&path, old).unwrap();
        let (held, at) = PositionFile::open(&path, false).unwrap();
        let done_42 = Upto {
            done: 42,
            partial: None,
        };
        assert_eq!(
            at,
            Some(Position {
                journal: [1; 16],
                upto: done_42,
                file: Some(FileEnd {
                    inode: 9,
                    size: 100
                })
            })
        );
        drop(held);
        std::fs::write(&path, format!("{} 42\n", JournalId([1; 16]))).unwrap();
        let (_f, sdk) = PositionFile::open(&path, false).unwrap();
        assert_eq!(
            sdk,
            Some(Position {
                journal: [1; 16],
                upto: done_42,
                file: None
            })
        );
        // Locked while open.
        assert!(PositionFile::open(&path, false).is_err());
    }
}
