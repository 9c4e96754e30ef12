//! The receiver's local log: records in auditd's text format (one line
//! each, as auditd's `audit.log`), with size-based rotation
//! (`audit.log` → `audit.log.1` → …), written from the store so that the log
//! holds every stored record exactly once, in store order — across crashes
//! too.
//!
//! After each fsync of the log, a position file (`log.pos`: next store
//! sequence number and the log's size at that point) is replaced
//! atomically. At start the log is cut back to that size and writing resumes
//! from that sequence number, so a crash between a write and the position
//! update repeats nothing. Rotation saves the position first, then renames,
//! then saves `size 0`; a log found shorter than the saved size was rotated
//! in between and starts empty.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::journal::{ReadOutcome, Step};

use super::store::Store;

/// Records waiting that make the log be written at once.
const LOG_BATCH: u64 = 256;
/// The longest fewer records wait before they are written.
const LOG_DELAY: Duration = Duration::from_millis(50);

/// Where and how to write the log.
#[derive(Debug, Clone)]
pub struct LogConfig {
    /// The log file (`…/audit.log`).
    pub path: PathBuf,
    /// Rotate when the log reaches this size.
    pub max_size: u64,
    /// Rotated logs kept (`path.1` … `path.N`); 0 keeps growing one file.
    pub keep: u32,
    /// Where the position file lives.
    pub state_dir: PathBuf,
}

/// Writes the log from the store.
pub struct LogWriter {
    cfg: LogConfig,
    file: File,
    size: u64,
    next: u64,
}

impl LogWriter {
    /// Opens the log and recovers its position.
    pub fn open(cfg: LogConfig) -> io::Result<LogWriter> {
        let pos_path = cfg.state_dir.join("log.pos");
        let (next, saved) = match std::fs::read_to_string(&pos_path) {
            Ok(s) => {
                let mut it = s.split_ascii_whitespace();
                match (
                    it.next().and_then(|v| v.parse().ok()),
                    it.next().and_then(|v| v.parse().ok()),
                ) {
                    (Some(n), Some(sz)) => (n, sz),
                    _ => {
                        return Err(io::Error::other(format!(
                            "{}: damaged position file",
                            pos_path.display()
                        )))
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => (1, 0),
            Err(e) => return Err(e),
        };
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&cfg.path)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", cfg.path.display())))?;
        let len = file.metadata()?.len();
        let size = if len < saved { 0 } else { saved };
        file.set_len(size)?;
        Ok(LogWriter {
            cfg,
            file,
            size,
            next,
        })
    }

    /// Store sequence number of the next record to write: everything before
    /// it is in the log.
    pub fn next(&self) -> u64 {
        self.next
    }

    fn save_position(&self) -> io::Result<()> {
        let path = self.cfg.state_dir.join("log.pos");
        let tmp = self.cfg.state_dir.join("log.pos.tmp");
        let mut f = crate::statefile::open(
            crate::statefile::options()
                .write(true)
                .create(true)
                .truncate(true),
            &tmp,
        )?;
        f.write_all(format!("{} {}\n", self.next, self.size).as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)
    }

    fn rotate(&mut self) -> io::Result<()> {
        self.save_position()?;
        if self.cfg.keep > 0 {
            let name = |i: u32| PathBuf::from(format!("{}.{i}", self.cfg.path.display()));
            for i in (1..self.cfg.keep).rev() {
                let from = name(i);
                if from.exists() {
                    std::fs::rename(&from, name(i + 1))?;
                }
            }
            std::fs::rename(&self.cfg.path, name(1))?;
            self.file = OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o600)
                .open(&self.cfg.path)?;
        } else {
            return Ok(());
        }
        self.size = 0;
        self.save_position()?;
        if let Some(dir) = self.cfg.path.parent() {
            File::open(dir)?.sync_all()?;
        }
        Ok(())
    }

    /// Writes whatever the store has durably beyond the log, up to about
    /// `max_bytes`; returns records written. On a write error the log is cut
    /// back to its last good size and the error returned (retry later).
    pub fn step(&mut self, store: &Store, max_bytes: usize) -> io::Result<usize> {
        let journal = store.journal();
        let synced = journal.synced();
        if self.next >= synced {
            return Ok(0);
        }
        let mut out = Vec::with_capacity(max_bytes.min(4 << 20));
        let mut n = 0usize;
        let mut reader = journal.reader(self.next);
        let limit = self.cfg.max_size;
        let size = self.size;
        let outcome = reader.read(max_bytes, &mut |e| {
            if e.seq >= synced {
                return Step::StopBefore;
            }
            if limit > 0 && size + out.len() as u64 >= limit && !out.is_empty() {
                return Step::StopBefore;
            }
            out.extend_from_slice(e.text);
            out.push(b'\n');
            n += 1;
            Step::Next
        })?;
        if let ReadOutcome::Lost { from, to, reason } = outcome {
            tracing::error!("store entries {from}..{to} lost before reaching the log: {reason:?}");
            self.next = to;
            return Ok(0);
        }
        if n == 0 {
            return Ok(0);
        }
        if let Err(e) = self
            .file
            .write_all(&out)
            .and_then(|_| self.file.sync_data())
        {
            // Keep the log exactly as it was: cut off a partial write.
            let _ = self.file.set_len(self.size);
            return Err(e);
        }
        self.size += out.len() as u64;
        self.next = reader.next_seq();
        if limit > 0 && self.size >= limit {
            self.rotate()?;
        } else {
            self.save_position()?;
        }
        Ok(n)
    }

    /// Writes as records become durable. Once `stop()` says so, it goes on
    /// only while it makes progress: it returns when the log has caught up
    /// with the store or at the first write error (the store keeps the
    /// records; the log catches up at the next start).
    pub fn run(&mut self, store: &Store, stop: &dyn Fn() -> bool, on_progress: &dyn Fn(u64)) {
        let mut failing_since: Option<Instant> = None;
        let mut last_write = Instant::now();
        loop {
            let stopping = stop();
            // A trickle of records (a stock client sends one per round
            // trip) is written at most every LOG_DELAY: each write costs
            // three syncs (log, position file, directory) that would
            // otherwise compete with the store's fsync before every ack.
            let pending = store.journal().synced().saturating_sub(self.next);
            if !stopping && pending > 0 && pending < LOG_BATCH && last_write.elapsed() < LOG_DELAY {
                std::thread::sleep(Duration::from_millis(5));
                continue;
            }
            match self.step(store, 4 << 20) {
                Ok(0) => {
                    if stopping {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
                Ok(_) => {
                    last_write = Instant::now();
                    if failing_since.take().is_some() {
                        tracing::info!("{}: writing again", self.cfg.path.display());
                    }
                    on_progress(self.next);
                }
                Err(e) => {
                    if failing_since.is_none() {
                        tracing::error!("{}: {e}; retrying", self.cfg.path.display());
                        failing_since = Some(Instant::now());
                    }
                    if stopping {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
        }
    }
}

/// Reads a log file's lines (tests and tools).
pub fn read_lines(path: &Path) -> io::Result<Vec<Vec<u8>>> {
    let data = std::fs::read(path)?;
    Ok(data
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(<[u8]>::to_vec)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::Limits;
    use crate::remote::store::SenderKey;

    #[test]
    fn writes_once_rotates_and_recovers() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(
            dir.path(),
            Limits {
                segment_size: 1 << 20,
                max_size: 1 << 30,
                memory: 1 << 20,
            },
        )
        .unwrap();
        let i = store.sender(&SenderKey::Fast([1; 16])).unwrap();
        let recs: Vec<Vec<u8>> = (1..=100)
            .map(|n| format!("type=USER msg=audit(1.000:{n}): x").into_bytes())
            .collect();
        let refs: Vec<&[u8]> = recs.iter().map(|r| &r[..]).collect();
        let r = store.store_fast(i, 1, &refs).unwrap();
        store.journal().sync_upto(r.sync_to).unwrap();
        let cfg = LogConfig {
            path: dir.path().join("audit.log"),
            max_size: 1000,
            keep: 50,
            state_dir: dir.path().to_path_buf(),
        };
        let mut w = LogWriter::open(cfg.clone()).unwrap();
        while w.step(&store, 300).unwrap() > 0 {}
        // A crash after writing but before saving the position: garbage at
        // the end of the log is cut off on open.
        OpenOptions::new()
            .append(true)
            .open(&cfg.path)
            .unwrap()
            .write_all(b"type=PARTIAL")
            .unwrap();
        let mut w = LogWriter::open(cfg.clone()).unwrap();
        assert_eq!(w.step(&store, 1 << 20).unwrap(), 0);
        let mut all = Vec::new();
        for k in (1..=50).rev() {
            let p = PathBuf::from(format!("{}.{k}", cfg.path.display()));
            if p.exists() {
                all.extend(read_lines(&p).unwrap());
            }
        }
        all.extend(read_lines(&cfg.path).unwrap());
        assert_eq!(all, recs);
    }
}
