//! Where each plugin has got to in the journal, kept on disk so that a
//! restarted dispatcher resumes every plugin exactly where it stopped.
//!
//! A cursor file holds one line, `<journal id> <acked> <replay_from>`, padded
//! to a fixed size and rewritten in place with a single `pwrite`, so an update
//! costs one system call and a crash leaves either the old or the new value
//! (the page cache survives a process crash; `sync` makes it survive power
//! loss too). The directory is private and a cursor file is never opened
//! through a link ([`crate::statefile`]).

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::journal::JournalId;

const SIZE: usize = 96;

/// A plugin's position: everything up to `acked` was handled; reading must
/// restart at `replay_from` (earlier than `acked + 1` in events mode, where
/// events still being assembled began before `acked`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    /// Highest id the plugin acknowledged (or skipped records up to).
    pub acked: u64,
    /// Where reading restarts.
    pub replay_from: u64,
}

/// A plugin's cursor file.
#[derive(Debug)]
pub struct CursorFile {
    file: File,
    path: PathBuf,
    journal: JournalId,
}

impl CursorFile {
    /// Opens (creating if needed) the cursor of plugin `name` in `dir`, and
    /// returns the stored position if it belongs to `journal`.
    pub fn open(
        dir: &Path,
        name: &str,
        journal: JournalId,
    ) -> io::Result<(CursorFile, Option<Position>)> {
        crate::statefile::private_subdir(dir)?;
        let path = dir.join(format!("{name}.cursor"));
        let file = crate::statefile::open(
            crate::statefile::options()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false),
            &path,
        )?;
        let mut buf = [0u8; SIZE];
        let n = file.read_at(&mut buf, 0)?;
        let stored = parse(&buf[..n], journal);
        Ok((
            CursorFile {
                file,
                path,
                journal,
            },
            stored,
        ))
    }

    /// Stores a new position.
    pub fn store(&self, p: Position) -> io::Result<()> {
        let mut line = format!("{} {} {}\n", self.journal, p.acked, p.replay_from).into_bytes();
        line.resize(SIZE, b' ');
        self.file.write_all_at(&line, 0)
    }

    /// Makes the stored position durable.
    pub fn sync(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    /// Deletes the cursor (the plugin was removed from the configuration).
    pub fn remove(self) -> io::Result<()> {
        std::fs::remove_file(&self.path).map_err(|e| crate::journal::with_path(e, &self.path))
    }
}

fn parse(buf: &[u8], journal: JournalId) -> Option<Position> {
    let text = std::str::from_utf8(buf).ok()?;
    let mut it = text.split_whitespace();
    let id = it.next()?;
    if id != journal.to_string() {
        return None;
    }
    let acked = it.next()?.parse().ok()?;
    let replay_from = it.next()?.parse().ok()?;
    Some(Position { acked, replay_from })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stores_and_reloads_for_the_same_journal_only() {
        let dir = tempfile::tempdir().unwrap();
        let j = JournalId([1; 16]);
        let (c, p) = CursorFile::open(dir.path(), "p", j).unwrap();
        assert_eq!(p, None);
        c.store(Position {
            acked: 1234567,
            replay_from: 1234500,
        })
        .unwrap();
        c.store(Position {
            acked: 12,
            replay_from: 13,
        })
        .unwrap();
        drop(c);
        let (_, p) = CursorFile::open(dir.path(), "p", j).unwrap();
        assert_eq!(
            p,
            Some(Position {
                acked: 12,
                replay_from: 13
            })
        );
        let (_, other) = CursorFile::open(dir.path(), "p", JournalId([2; 16])).unwrap();
        assert_eq!(other, None, "a position in another journal means nothing");
    }
}
