//! Reading the journal from a position: from the in-memory ring when the
//! position is recent, from the segment files when it is not.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use super::entry::{self, DecodeError, EntryRef};
use super::segment::{self, SegmentInfo};
use super::Journal;

/// What a [`Reader::read`] callback did with the entry it was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Took it; go on.
    Next,
    /// Took it; stop after it.
    Stop,
    /// Did not take it; stop, and give it again next time.
    StopBefore,
}

/// What one [`Reader::read`] call did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadOutcome {
    /// This many entries were taken by the callback.
    Entries(usize),
    /// Nothing to read: the reader is at the end of the journal.
    CaughtUp,
    /// Entries `[from, to)` cannot be read any more; the reader moved on to
    /// `to`. The caller reports this as record loss.
    Lost {
        /// First entry lost.
        from: u64,
        /// Where reading continues.
        to: u64,
        /// Why they are gone.
        reason: LostReason,
    },
}

/// Why entries could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LostReason {
    /// The journal's size limit deleted them before this reader got to them.
    Evicted,
    /// A segment file is damaged (what was found is described).
    Damaged(String),
}

struct DiskCursor {
    segment: SegmentInfo,
    file: File,
    /// File offset of the entry `next`.
    offset: u64,
    /// Sequence number of the entry at `offset`.
    next: u64,
}

/// A position in the journal and the means to read on from it. Each plugin
/// sender owns one.
pub struct Reader {
    journal: Journal,
    next: u64,
    disk: Option<DiskCursor>,
    buf: Vec<u8>,
}

const DISK_CHUNK: usize = 64 << 10;

impl Reader {
    pub(super) fn new(journal: Journal, next: u64) -> Reader {
        Reader {
            journal,
            next,
            disk: None,
            buf: Vec::new(),
        }
    }

    /// Sequence number of the next entry this reader will return.
    pub fn next_seq(&self) -> u64 {
        self.next
    }

    /// Moves to `next`.
    pub fn seek(&mut self, next: u64) {
        if self.next != next {
            self.next = next;
            self.disk = None;
        }
    }

    /// Whether this reader is at the end of the journal.
    pub fn caught_up(&self) -> bool {
        self.next >= self.journal.end()
    }

    /// Passes entries from the current position to `f`, about `max_bytes`
    /// of them, and moves past those it takes.
    pub fn read(
        &mut self,
        max_bytes: usize,
        f: &mut dyn FnMut(EntryRef<'_>) -> Step,
    ) -> io::Result<ReadOutcome> {
        let end = self.journal.end();
        if self.next >= end {
            return Ok(ReadOutcome::CaughtUp);
        }
        let start = self.journal.start();
        if self.next < start {
            return Ok(self.lose(start, LostReason::Evicted));
        }
        if self.journal.ring_start().is_some_and(|rs| self.next >= rs) {
            let blocks = self.journal.ring_blocks(self.next, max_bytes);
            if !blocks.is_empty() {
                self.disk = None;
                let mut n = 0;
                let mut bytes = 0;
                'blocks: for b in &blocks {
                    while self.next < b.end_seq() {
                        let e = b.entry(self.next);
                        bytes += e.stored_len();
                        let step = f(e);
                        if step == Step::StopBefore {
                            break 'blocks;
                        }
                        self.next += 1;
                        n += 1;
                        if step == Step::Stop || bytes >= max_bytes {
                            break 'blocks;
                        }
                    }
                }
                return Ok(ReadOutcome::Entries(n));
            }
        }
        self.read_disk(max_bytes, f)
    }

    fn lose(&mut self, to: u64, reason: LostReason) -> ReadOutcome {
        let from = self.next;
        self.next = to;
        self.disk = None;
        ReadOutcome::Lost { from, to, reason }
    }

    fn open_disk(&mut self) -> io::Result<Option<ReadOutcome>> {
        let Some(seg) = self.journal.segment_for(self.next) else {
            let start = self.journal.start();
            return Ok(Some(self.lose(start, LostReason::Evicted)));
        };
        let file = match segment::open_read(&seg.path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                // Deleted by the size limit between the lookup and the open.
                let start = self.journal.start().max(self.next + 1);
                return Ok(Some(self.lose(start, LostReason::Evicted)));
            }
            Err(e) => return Err(super::with_path(e, &seg.path)),
        };
        self.disk = Some(DiskCursor {
            next: seg.first_seq,
            offset: segment::HEADER_LEN as u64,
            segment: seg,
            file,
        });
        Ok(None)
    }

    fn read_disk(
        &mut self,
        max_bytes: usize,
        f: &mut dyn FnMut(EntryRef<'_>) -> Step,
    ) -> io::Result<ReadOutcome> {
        loop {
            if self.disk.as_ref().is_none_or(|d| d.next > self.next) {
                if let Some(outcome) = self.open_disk()? {
                    return Ok(outcome);
                }
            }
            let Some(disk) = self.disk.as_mut() else {
                continue;
            };
            let want = DISK_CHUNK.max(max_bytes + entry::MAX_ENTRY_LEN);
            self.buf.resize(want, 0);
            let got = read_at_most(&disk.file, &mut self.buf, disk.offset)
                .map_err(|e| super::with_path(e, &disk.segment.path))?;
            let data = &self.buf[..got];
            let mut pos = 0;
            let mut n = 0;
            let mut bytes = 0;
            let mut damaged = None;
            let mut stop = false;
            while pos < data.len() && bytes < max_bytes && !stop {
                match entry::decode(&data[pos..]) {
                    Ok((e, len)) => {
                        if e.seq != disk.next {
                            damaged = Some(format!(
                                "{}: entry {} where {} was expected",
                                disk.segment.path.display(),
                                e.seq,
                                disk.next
                            ));
                            break;
                        }
                        if e.seq >= self.next {
                            bytes += len;
                            match f(e) {
                                Step::StopBefore => {
                                    stop = true;
                                    break;
                                }
                                Step::Stop => stop = true,
                                Step::Next => {}
                            }
                            self.next += 1;
                            n += 1;
                        }
                        pos += len;
                        disk.next += 1;
                    }
                    Err(DecodeError::Incomplete) => break,
                    Err(err) => {
                        damaged = Some(format!(
                            "{}: {err:?} at offset {}",
                            disk.segment.path.display(),
                            disk.offset + pos as u64
                        ));
                        break;
                    }
                }
            }
            disk.offset += pos as u64;
            if n > 0 || stop {
                return Ok(ReadOutcome::Entries(n));
            }
            if pos > 0 {
                // Only skipped entries before our position: keep going.
                continue;
            }
            // Nothing decodable at our position. Everything before the
            // in-memory ring was written whole before it was published, so
            // this is either the clean end of an older segment or damage.
            let seg_first = disk.segment.first_seq;
            let seg_path = disk.segment.path.clone();
            let next_segment = self.journal.next_segment(seg_first);
            let resume = next_segment
                .as_ref()
                .map_or_else(|| self.journal.end(), |s| s.first_seq);
            if damaged.is_none() && got == 0 && next_segment.is_some() && self.next >= resume {
                self.disk = None;
                continue;
            }
            let why = damaged.unwrap_or_else(|| {
                format!("{}: ends before entry {}", seg_path.display(), self.next)
            });
            return Ok(self.lose(resume.max(self.next + 1), LostReason::Damaged(why)));
        }
    }
}

fn read_at_most(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match file.read_at(&mut buf[got..], offset + got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}
