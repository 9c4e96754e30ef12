//! Segment files: the journal on disk, one file per run of sequence numbers.
//!
//! A segment is named after the first sequence number it holds
//! (`00000000000000000001.journal`), starts with a 32-byte header and then
//! holds whole entries back to back:
//!
//! ```text
//! offset size field
//!      0    8 magic  "AUDISPJ1"
//!      8   16 journal id
//!     24    8 first seq (u64 LE)
//! ```
//!
//! Only the newest segment is ever written; recovery checks it entry by entry
//! and cuts off a torn tail, so that after a crash appending simply goes on.
//! A new segment is created without waiting for the disk; it becomes
//! durable, header and name, with the journal's next sync, and recovery
//! removes the segments a crash left without their header (never synced).
//! Segments are never opened through a link ([`crate::statefile`]).

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use super::entry::{self, DecodeError};
use super::{with_path, JournalId};
use crate::statefile;

/// Size of the segment header.
pub(super) const HEADER_LEN: usize = 32;
const MAGIC: &[u8; 8] = b"AUDISPJ1";
const SUFFIX: &str = ".journal";

/// What the journal knows of one segment.
#[derive(Debug, Clone)]
pub(super) struct SegmentInfo {
    pub first_seq: u64,
    pub bytes: u64,
    pub path: PathBuf,
}

/// What recovery found in an existing journal directory.
pub(super) struct Found {
    pub id: JournalId,
    pub segments: Vec<SegmentInfo>,
    pub last_path: PathBuf,
    pub last_size: u64,
    pub next_seq: u64,
}

fn name(first_seq: u64) -> String {
    format!("{first_seq:020}{SUFFIX}")
}

fn header(id: JournalId, first_seq: u64) -> [u8; HEADER_LEN] {
    let mut h = [0; HEADER_LEN];
    h[..8].copy_from_slice(MAGIC);
    h[8..24].copy_from_slice(&id.0);
    h[24..].copy_from_slice(&first_seq.to_le_bytes());
    h
}

/// Deletes every segment file in `dir` (nothing else).
pub(super) fn remove_all(dir: &Path) -> io::Result<()> {
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        if e.file_name().to_str().is_some_and(|n| n.ends_with(SUFFIX)) {
            std::fs::remove_file(e.path())?;
        }
    }
    Ok(())
}

/// Creates the segment that starts at `first_seq`, its header written but
/// nothing synced: the appending thread changes segments without waiting
/// for the disk. The header and the new name become durable with the
/// journal's next sync (the file's data and then [`sync_dir`]); a crash
/// before it can leave the segment missing, cut short or with a zeroed
/// header, and recovery removes such a segment (it held nothing synced).
/// A segment that cannot be completed (a full disk) is removed again, so
/// that the next attempt can create it.
pub(super) fn create(dir: &Path, id: JournalId, first_seq: u64) -> io::Result<(SegmentInfo, File)> {
    use std::io::Write;
    let path = dir.join(name(first_seq));
    let mut file = statefile::open(statefile::options().append(true).create_new(true), &path)?;
    if let Err(e) = file.write_all(&header(id, first_seq)) {
        let _ = std::fs::remove_file(&path);
        return Err(with_path(e, &path));
    }
    Ok((
        SegmentInfo {
            first_seq,
            bytes: HEADER_LEN as u64,
            path,
        },
        file,
    ))
}

/// Creates a new journal's first segment and makes it durable at once,
/// header and name: the journal's identity is on disk before anything is
/// appended.
pub(super) fn create_synced(
    dir: &Path,
    id: JournalId,
    first_seq: u64,
) -> io::Result<(SegmentInfo, File)> {
    let (info, file) = create(dir, id, first_seq)?;
    if let Err(e) = file.sync_all() {
        let _ = std::fs::remove_file(&info.path);
        return Err(with_path(e, &info.path));
    }
    sync_dir(dir)?;
    Ok((info, file))
}

/// Makes the names of the segments created in `dir` durable.
pub(super) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| with_path(e, dir))
}

/// Opens an existing segment for appending.
pub(super) fn open_append(path: &Path) -> io::Result<File> {
    statefile::open(statefile::options().append(true), path)
}

/// Opens a segment for reading.
pub(super) fn open_read(path: &Path) -> io::Result<File> {
    statefile::options().read(true).open(path)
}

/// Deletes a segment nobody needs any more.
pub(super) fn remove(info: &SegmentInfo) -> io::Result<()> {
    match std::fs::remove_file(&info.path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(with_path(e, &info.path)),
        _ => Ok(()),
    }
}

/// Whether the segment at `path` lacks its header: shorter than one, or
/// all zeros (its size became durable, its data did not).
fn header_missing(path: &Path) -> io::Result<bool> {
    let mut f = open_read(path).map_err(|e| with_path(e, path))?;
    let mut h = [0; HEADER_LEN];
    let mut got = 0;
    while got < HEADER_LEN {
        match f.read(&mut h[got..]) {
            Ok(0) => return Ok(true),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(with_path(e, path)),
        }
    }
    Ok(h.iter().all(|&b| b == 0))
}

fn read_header(path: &Path) -> io::Result<(JournalId, u64)> {
    let mut h = [0; HEADER_LEN];
    let mut f = open_read(path).map_err(|e| with_path(e, path))?;
    f.read_exact(&mut h).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: segment header unreadable: {e}", path.display()),
        )
    })?;
    if &h[..8] != MAGIC {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "{}: not an audisp journal segment (bad magic)",
                path.display()
            ),
        ));
    }
    let mut id = [0; 16];
    id.copy_from_slice(&h[8..24]);
    let mut seq = [0; 8];
    seq.copy_from_slice(&h[24..]);
    Ok((JournalId(id), u64::from_le_bytes(seq)))
}

/// Lists the segments of `dir`, checks that they belong to one journal and
/// follow each other, and recovers the newest one. None for an empty
/// directory.
pub(super) fn scan_dir(dir: &Path) -> io::Result<Option<Found>> {
    let mut firsts = Vec::new();
    for ent in std::fs::read_dir(dir).map_err(|e| with_path(e, dir))? {
        let ent = ent.map_err(|e| with_path(e, dir))?;
        let file_name = ent.file_name();
        let Some(stem) = file_name.to_str().and_then(|n| n.strip_suffix(SUFFIX)) else {
            continue;
        };
        if let Ok(first) = stem.parse::<u64>() {
            firsts.push(first);
        }
    }
    firsts.sort_unstable();
    // A crash before the journal's next sync can leave the segments created
    // since the last one without a whole header (their names durable, their
    // data not, or their creation cut short by a full disk). A sync makes
    // every segment created before it durable, header and name, so the
    // first such segment and every later one were never synced: they hold
    // nothing synced and are removed.
    let mut unsynced = firsts.len();
    for (i, &first) in firsts.iter().enumerate() {
        if header_missing(&dir.join(name(first)))? {
            unsynced = i;
            break;
        }
    }
    for &first in &firsts[unsynced..] {
        let path = dir.join(name(first));
        tracing::warn!(
            segment = %path.display(),
            "journal: removing a segment a crash left without its header (never synced; it holds nothing synced)"
        );
        std::fs::remove_file(&path).map_err(|e| with_path(e, &path))?;
    }
    firsts.truncate(unsynced);
    let Some(&last_first) = firsts.last() else {
        return Ok(None);
    };
    let mut segments = Vec::with_capacity(firsts.len());
    let mut id = None;
    for &first in &firsts {
        let path = dir.join(name(first));
        let (seg_id, seg_first) = read_header(&path)?;
        if seg_first != first {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{}: header says it starts at {seg_first}, its name says {first}",
                    path.display()
                ),
            ));
        }
        match id {
            None => id = Some(seg_id),
            Some(id) if id != seg_id => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "{}: belongs to journal {seg_id}, not {id}; move stray segments out of {}",
                        path.display(),
                        dir.display()
                    ),
                ))
            }
            Some(_) => {}
        }
        let bytes = std::fs::metadata(&path)
            .map_err(|e| with_path(e, &path))?
            .len();
        segments.push(SegmentInfo {
            first_seq: first,
            bytes,
            path,
        });
    }
    let last_path = dir.join(name(last_first));
    let (valid_len, next_seq) = recover_tail(&last_path, last_first)?;
    if let Some(last) = segments.last_mut() {
        last.bytes = valid_len;
    }
    Ok(Some(Found {
        id: id.unwrap_or(JournalId([0; 16])),
        segments,
        last_path,
        last_size: valid_len,
        next_seq,
    }))
}

/// Walks the newest segment, cuts it after its last whole, valid entry and
/// returns its valid length and the next sequence number.
fn recover_tail(path: &Path, first_seq: u64) -> io::Result<(u64, u64)> {
    let mut file = statefile::open(statefile::options().read(true).write(true), path)?;
    file.seek(SeekFrom::Start(HEADER_LEN as u64))
        .map_err(|e| with_path(e, path))?;
    let mut data = Vec::new();
    file.read_to_end(&mut data)
        .map_err(|e| with_path(e, path))?;
    let mut pos = 0;
    let mut next = first_seq;
    let stop = loop {
        match entry::decode(&data[pos..]) {
            Ok((e, n)) if e.seq == next => {
                pos += n;
                next += 1;
            }
            Ok((e, _)) => break Some(format!("entry {} where {next} was expected", e.seq)),
            Err(DecodeError::Incomplete) if pos == data.len() => break None,
            Err(err) => break Some(format!("{err:?}")),
        }
    };
    let valid = (HEADER_LEN + pos) as u64;
    if let Some(why) = stop {
        tracing::warn!(
            segment = %path.display(),
            offset = valid,
            cut = data.len() - pos,
            "journal: cutting off a damaged or torn tail ({why}); entries before it are intact"
        );
        file.set_len(valid).map_err(|e| with_path(e, path))?;
        file.sync_all().map_err(|e| with_path(e, path))?;
    }
    Ok((valid, next))
}
