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
//! The file holds one line, `JOURNAL SEQ INODE SIZE`, rewritten in place at
//! a fixed length. A line of the SDK's checkpoint format (`JOURNAL SEQ`,
//! from an earlier version) is taken as a position without a file: nothing
//! is cut at that start. The file is locked ([`audisp::statelock`]) for as
//! long as the program runs.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use audisp::journal_id::JournalId;
use audisp::statefile;
use audisp::statelock::StateLock;

/// Length every position line is padded to, so a shorter one overwrites a
/// longer one whole.
const LINE: usize = 128;

/// How far the log got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    /// The dispatcher journal the sequence number belongs to.
    pub journal: [u8; 16],
    /// The last record (or event) written.
    pub seq: u64,
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
        let mut line = match pos.file {
            Some(f) => format!(
                "{} {} {} {}\n",
                JournalId(pos.journal),
                pos.seq,
                f.inode,
                f.size
            ),
            None => format!("{} {}\n", JournalId(pos.journal), pos.seq),
        }
        .into_bytes();
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
    let seq = it.next()?.parse().ok()?;
    let file = match (it.next(), it.next()) {
        (Some(i), Some(s)) => Some(FileEnd {
            inode: i.parse().ok()?,
            size: s.parse().ok()?,
        }),
        _ => None,
    };
    Some(Position { journal, seq, file })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_round_trip_and_the_sdk_format_reads_without_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pos");
        let (f, none) = PositionFile::open(&path, true).unwrap();
        assert_eq!(none, None);
        let long = Position {
            journal: [7; 16],
            seq: u64::MAX,
            file: Some(FileEnd {
                inode: u64::MAX,
                size: u64::MAX,
            }),
        };
        f.save(&long).unwrap();
        let short = Position {
            journal: [7; 16],
            seq: 3,
            file: Some(FileEnd { inode: 9, size: 0 }),
        };
        f.save(&short).unwrap();
        drop(f);
        assert_eq!(PositionFile::open(&path, false).unwrap().1, Some(short));
        std::fs::write(&path, format!("{} 42\n", JournalId([1; 16]))).unwrap();
        let (_f, old) = PositionFile::open(&path, false).unwrap();
        assert_eq!(
            old,
            Some(Position {
                journal: [1; 16],
                seq: 42,
                file: None
            })
        );
        // Locked while open.
        assert!(PositionFile::open(&path, false).is_err());
    }
}
