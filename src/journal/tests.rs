use super::*;
use entry::flags;

fn limits(segment_size: u64, max_size: u64, memory: u64) -> Limits {
    Limits {
        segment_size,
        max_size,
        memory,
    }
}

fn rec(i: u64) -> Vec<u8> {
    format!(
        "type=SYSCALL msg=audit(1700000000.{:03}:{i}): arch=c000003e syscall=59 success=yes",
        i % 1000
    )
    .into_bytes()
}

/// One whole-event entry per text, numbered (event and source) from `first`.
fn entries(texts: &[Vec<u8>], first: u64) -> Vec<NewEntry<'_>> {
    texts
        .iter()
        .zip(first..)
        .map(|(t, i)| NewEntry {
            event: i,
            source_seq: i,
            rtype: 1300,
            source: 1,
            flags: flags::ENDS_EVENT,
            origin: None,
            text: t.into(),
        })
        .collect()
}

fn append_n(j: &Journal, from: u64, n: u64, per_block: u64) {
    let mut i = from;
    while i < from + n {
        let texts: Vec<Vec<u8>> = (i..(i + per_block).min(from + n)).map(rec).collect();
        let a = j.append(&entries(&texts, i)).unwrap();
        assert_eq!(a.seqs.start, i);
        i += texts.len() as u64;
    }
}

fn read_all(r: &mut Reader, max: usize) -> (Vec<(u64, Vec<u8>)>, Vec<ReadOutcome>) {
    let mut got = Vec::new();
    let mut lost = Vec::new();
    loop {
        match r
            .read(max, &mut |e| {
                got.push((e.seq, e.text.to_vec()));
                Step::Next
            })
            .unwrap()
        {
            ReadOutcome::CaughtUp => return (got, lost),
            ReadOutcome::Entries(n) => assert!(n > 0),
            l @ ReadOutcome::Lost { .. } => lost.push(l),
        }
    }
}

fn expect_seqs(got: &[(u64, Vec<u8>)], range: std::ops::Range<u64>) {
    let seqs: Vec<u64> = got.iter().map(|g| g.0).collect();
    assert_eq!(seqs, range.clone().collect::<Vec<_>>());
    for (s, t) in got {
        assert_eq!(t, &rec(*s));
    }
}

#[test]
fn reads_from_memory_and_disk_across_segments() {
    let dir = tempfile::tempdir().unwrap();
    // Tiny memory: most reads must come from disk; small segments: many files.
    let j = Journal::open(dir.path(), limits(4096, 1 << 30, 2048)).unwrap();
    append_n(&j, 1, 500, 7);
    assert!(read_lock(&j.shared.segments).len() > 10);
    for max in [1, 100, 5000, 1 << 20] {
        let mut r = j.reader(1);
        let (got, lost) = read_all(&mut r, max);
        assert!(lost.is_empty());
        expect_seqs(&got, 1..501);
    }
    let mut r = j.reader(250);
    let (got, _) = read_all(&mut r, 300);
    expect_seqs(&got, 250..501);
}

#[test]
fn reopen_continues_numbering_and_keeps_identity() {
    let dir = tempfile::tempdir().unwrap();
    let id = {
        let j = Journal::open(dir.path(), limits(8192, 1 << 30, 1 << 20)).unwrap();
        append_n(&j, 1, 100, 10);
        j.id()
    };
    let j = Journal::open(dir.path(), limits(8192, 1 << 30, 1 << 20)).unwrap();
    assert_eq!(j.id(), id);
    assert_eq!(j.end(), 101);
    append_n(&j, 101, 50, 3);
    let (got, lost) = read_all(&mut j.reader(1), 10_000);
    assert!(lost.is_empty());
    expect_seqs(&got, 1..151);
}

#[test]
fn torn_tail_is_cut_on_recovery() {
    let dir = tempfile::tempdir().unwrap();
    {
        let j = Journal::open(dir.path(), limits(1 << 20, 1 << 30, 1 << 20)).unwrap();
        append_n(&j, 1, 20, 5);
    }
    // Simulate a crash in the middle of writing entry 21.
    let mut torn = Vec::new();
    let t = rec(21);
    entry::encode(
        &mut torn,
        21,
        &NewEntry {
            event: 0,
            source_seq: 0,
            rtype: 1300,
            source: 0,
            flags: 0,
            origin: None,
            text: t.as_slice().into(),
        },
    );
    let seg = dir.path().join("00000000000000000001.journal");
    let before = std::fs::metadata(&seg).unwrap().len();
    let mut f = std::fs::OpenOptions::new().append(true).open(&seg).unwrap();
    std::io::Write::write_all(&mut f, &torn[..torn.len() / 2]).unwrap();
    drop(f);
    let j = Journal::open(dir.path(), limits(1 << 20, 1 << 30, 1 << 20)).unwrap();
    assert_eq!(j.end(), 21);
    assert_eq!(std::fs::metadata(&seg).unwrap().len(), before);
    append_n(&j, 21, 5, 5);
    let (got, lost) = read_all(&mut j.reader(1), 1 << 20);
    assert!(lost.is_empty());
    expect_seqs(&got, 1..26);
}

#[test]
fn a_segment_left_without_its_header_is_removed_on_recovery() {
    let dir = tempfile::tempdir().unwrap();
    let id = {
        let j = Journal::open(dir.path(), limits(1 << 20, 1 << 30, 1 << 20)).unwrap();
        append_n(&j, 1, 20, 5);
        j.id()
    };
    // A crash (or a full disk) right after the next segment was created.
    let stub = dir.path().join("00000000000000000021.journal");
    std::fs::write(&stub, b"AUDISPJ1").unwrap();
    let j = Journal::open(dir.path(), limits(1 << 20, 1 << 30, 1 << 20)).unwrap();
    assert!(!stub.exists());
    assert_eq!((j.id(), j.end()), (id, 21));
    append_n(&j, 21, 5, 5);
    let (got, lost) = read_all(&mut j.reader(1), 1 << 20);
    assert!(lost.is_empty());
    expect_seqs(&got, 1..26);
}

#[test]
fn a_segment_change_leaves_the_new_name_to_the_next_sync() {
    let dir = tempfile::tempdir().unwrap();
    let j = Journal::open(dir.path(), limits(2048, 1 << 30, 1 << 20)).unwrap();
    append_n(&j, 1, 10, 5);
    assert!(!lock(&j.shared.writer).dir_unsynced);
    append_n(&j, 11, 60, 5);
    assert!(read_lock(&j.shared.segments).len() > 1);
    // The appending thread changed segments without syncing anything; the
    // next sync makes the new segments' names durable with their entries.
    assert!(lock(&j.shared.writer).dir_unsynced);
    j.sync_upto(j.end()).unwrap();
    assert!(!lock(&j.shared.writer).dir_unsynced);
    assert!(lock(&j.shared.writer).unsynced.is_empty());
}

#[test]
fn segments_a_crash_left_with_a_zeroed_header_are_removed_on_recovery() {
    let dir = tempfile::tempdir().unwrap();
    let (id, segs) = {
        let j = Journal::open(dir.path(), limits(2048, 1 << 30, 1 << 20)).unwrap();
        append_n(&j, 1, 40, 4);
        j.sync_upto(j.end()).unwrap();
        let synced = j.end();
        // Two segment changes with no sync after them, then a power loss
        // that kept the new files' sizes but not their data: the first of
        // them reads as zeros.
        append_n(&j, synced, 60, 4);
        let segs = read_lock(&j.shared.segments).clone();
        (j.id(), segs)
    };
    let first_unsynced = segs
        .iter()
        .position(|s| s.first_seq > 41)
        .expect("a segment begun after the sync");
    assert!(segs.len() > first_unsynced + 1, "a later segment too");
    let zeroed = &segs[first_unsynced];
    let mut bytes = std::fs::read(&zeroed.path).unwrap();
    bytes.iter_mut().for_each(|b| *b = 0);
    std::fs::write(&zeroed.path, &bytes).unwrap();
    let j = Journal::open(dir.path(), limits(2048, 1 << 30, 1 << 20)).unwrap();
    // That segment and every later one are gone; the journal goes on from
    // the end of the one before, same identity, nothing synced lost.
    assert!(segs[first_unsynced..].iter().all(|s| !s.path.exists()));
    assert_eq!((j.id(), j.end()), (id, zeroed.first_seq));
    let end = j.end();
    append_n(&j, end, 5, 5);
    let (got, lost) = read_all(&mut j.reader(1), 1 << 20);
    assert!(lost.is_empty());
    expect_seqs(&got, 1..end + 5);
}

#[test]
fn retain_from_deletes_only_passed_segments() {
    let dir = tempfile::tempdir().unwrap();
    let j = Journal::open(dir.path(), limits(2048, 1 << 30, 1 << 20)).unwrap();
    append_n(&j, 1, 200, 4);
    let n = read_lock(&j.shared.segments).len();
    j.retain_from(100).unwrap();
    let segs = read_lock(&j.shared.segments).clone();
    assert!(segs.len() < n);
    assert!(segs[0].first_seq <= 100, "segment holding 100 kept");
    assert_eq!(j.start(), segs[0].first_seq);
    let (got, lost) = read_all(&mut j.reader(100), 1 << 20);
    assert!(lost.is_empty());
    expect_seqs(&got, 100..201);
    // A reader left behind the retention point learns exactly what it lost.
    let mut r = j.reader(1);
    let (got, lost) = read_all(&mut r, 1 << 20);
    assert_eq!(
        lost,
        vec![ReadOutcome::Lost {
            from: 1,
            to: j.start(),
            reason: LostReason::Evicted
        }]
    );
    expect_seqs(&got, j.start()..201);
}

/// Paths of this process's open descriptors under `dir`, deleted or not.
fn open_files_under(dir: &std::path::Path) -> Vec<String> {
    let dir = dir.to_string_lossy().into_owned();
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .map(|p| p.to_string_lossy().into_owned())
        .filter(|p| p.starts_with(&dir))
        .collect()
}

#[test]
fn retained_away_segments_unsynced_are_deleted_and_closed() {
    let dir = tempfile::tempdir().unwrap();
    let j = Journal::open(dir.path(), limits(2048, 1 << 30, 1 << 20)).unwrap();
    append_n(&j, 1, 200, 4);
    // Nothing synced yet: every older segment waits in the unsynced list,
    // its descriptor open.
    let n = read_lock(&j.shared.segments).len();
    assert!(n > 3);
    assert_eq!(lock(&j.shared.writer).unsynced.len(), n - 1);
    j.retain_from(150).unwrap();
    let segs = read_lock(&j.shared.segments).clone();
    let files: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".journal"))
        .collect();
    assert_eq!(files.len(), segs.len(), "{files:?}");
    // The deleted segments are closed (their pages freed), the others kept
    // for the next sync.
    let open = open_files_under(dir.path());
    assert!(open.iter().all(|p| !p.ends_with("(deleted)")), "{open:?}");
    assert!(lock(&j.shared.writer)
        .unsynced
        .iter()
        .all(|(first, _)| *first >= segs[0].first_seq));
    j.sync_upto(j.end()).unwrap();
    let (got, lost) = read_all(&mut j.reader(150), 1 << 20);
    assert!(lost.is_empty());
    expect_seqs(&got, 150..201);
}

#[test]
fn size_limit_evicts_oldest_and_reports_it() {
    let dir = tempfile::tempdir().unwrap();
    let j = Journal::open(dir.path(), limits(2048, 8192, 1 << 20)).unwrap();
    let mut evicted = None;
    for i in 1..=300u64 {
        let t = rec(i);
        let a = j
            .append(&[NewEntry {
                event: i,
                source_seq: 0,
                rtype: 1300,
                source: 0,
                flags: 0,
                origin: None,
                text: t.as_slice().into(),
            }])
            .unwrap();
        evicted = a.evicted_before.or(evicted);
    }
    let start = evicted.expect("the limit must have evicted something");
    assert_eq!(j.start(), start);
    assert!(j.disk_bytes() <= 8192 + 2048);
    let (got, lost) = read_all(&mut j.reader(1), 1 << 20);
    assert_eq!(lost.len(), 1);
    expect_seqs(&got, start..301);
}

#[test]
fn damaged_segment_is_skipped_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    {
        let j = Journal::open(dir.path(), limits(2048, 1 << 30, 1 << 20)).unwrap();
        append_n(&j, 1, 100, 4);
    }
    let seg = dir.path().join("00000000000000000001.journal");
    let mut bytes = std::fs::read(&seg).unwrap();
    let n = bytes.len();
    bytes[n / 2] ^= 0xff;
    std::fs::write(&seg, &bytes).unwrap();
    let j = Journal::open(dir.path(), limits(2048, 1 << 30, 0)).unwrap();
    let second = read_lock(&j.shared.segments)[1].first_seq;
    let (got, lost) = read_all(&mut j.reader(1), 1 << 20);
    assert_eq!(lost.len(), 1);
    match &lost[0] {
        ReadOutcome::Lost { to, reason, .. } => {
            assert_eq!(*to, second);
            assert!(matches!(reason, LostReason::Damaged(_)));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(got.last().unwrap().0, 100);
    assert!(got.iter().all(|(s, t)| *t == rec(*s)));
}

#[test]
fn armed_wakeups_fire_once() {
    let dir = tempfile::tempdir().unwrap();
    let j = Journal::open(dir.path(), limits(1 << 20, 1 << 30, 1 << 20)).unwrap();
    let w = j.wakeup().unwrap();
    append_n(&j, 1, 1, 1);
    assert!(!readable(&w), "not armed: no wake-up");
    w.arm();
    append_n(&j, 2, 1, 1);
    assert!(readable(&w));
    w.clear();
    append_n(&j, 3, 1, 1);
    assert!(!readable(&w), "disarmed by the first wake-up");
}

fn readable(w: &Wakeup) -> bool {
    let mut fds = [nix::poll::PollFd::new(w.fd(), nix::poll::PollFlags::POLLIN)];
    nix::poll::poll(&mut fds, nix::poll::PollTimeout::ZERO).unwrap() == 1
}

/// Entries `from..from + n` of `len` bytes each, appended in one batch
/// with [`Journal::append_deferring`].
fn append_deferring(j: &Journal, from: u64, n: u64, len: usize) -> Deferred {
    let texts: Vec<Vec<u8>> = (from..from + n)
        .map(|i| vec![b'a' + (i % 26) as u8; len])
        .collect();
    let (a, deferred) = j.append_deferring(&entries(&texts, from)).unwrap();
    assert_eq!(a.seqs, from..from + n);
    deferred
}

/// Work lent by an owner: reads what was appended, as a plugin's sender
/// does, and says whether the owner may go on waiting.
struct Reading<'a> {
    wake: &'a Wakeup,
    reader: Reader,
    got: Vec<u64>,
    /// What `take_over` answers once it has read.
    stay_asleep: bool,
}

impl<'a> Reading<'a> {
    fn new(wake: &'a Wakeup, j: &Journal, stay_asleep: bool) -> Reading<'a> {
        Reading {
            wake,
            reader: j.reader(1),
            got: Vec::new(),
            stay_asleep,
        }
    }
}

/// A new journal and a wake-up registered with it.
fn journal_with_wakeup() -> (tempfile::TempDir, Journal, Arc<Wakeup>) {
    let dir = tempfile::tempdir().unwrap();
    let j = Journal::open(dir.path(), limits(1 << 20, 1 << 30, 8 << 20)).unwrap();
    let w = j.wakeup().unwrap();
    (dir, j, w)
}

impl HandOff for Reading<'_> {
    fn take_over(&mut self) -> bool {
        let got = &mut self.got;
        self.reader
            .read(1 << 20, &mut |e| {
                got.push(e.seq);
                Step::Next
            })
            .unwrap();
        self.wake.arm();
        self.stay_asleep && self.reader.caught_up()
    }
}

#[test]
fn an_appender_does_lent_work_in_the_waiting_owners_place() {
    let (_dir, j, w) = journal_with_wakeup();
    let mut work = Reading::new(&w, &j, true);
    w.arm();
    w.while_lent(&mut work, || {
        append_deferring(&j, 1, 3, 100).run();
        assert!(!readable(&w), "the appender did the work: no wake-up");
        append_deferring(&j, 4, 2, 100).run();
        assert!(!readable(&w), "the work re-armed itself and was done again");
    });
    assert_eq!(work.got, vec![1, 2, 3, 4, 5]);

    // A batch above HANDOFF_BYTES wakes the owner, whose work stays undone.
    w.arm();
    w.while_lent(&mut work, || {
        let big = (HANDOFF_BYTES / 1000) + 1;
        let deferred = append_deferring(&j, 6, big, 1000);
        assert!(readable(&w), "a large batch wakes the owner at once");
        deferred.run();
    });
    assert_eq!(work.got.len(), 5);
    w.clear();
    assert_eq!(work.reader.next_seq(), 6);
}

#[test]
fn an_owner_is_woken_when_its_work_asks_or_is_not_run() {
    let (_dir, j, w) = journal_with_wakeup();
    let mut work = Reading::new(&w, &j, false);
    w.arm();
    w.while_lent(&mut work, || {
        append_deferring(&j, 1, 2, 100).run();
        assert!(readable(&w), "the work asked for its owner");
    });
    assert_eq!(work.got, vec![1, 2]);
    w.clear();

    // Deferred but never run (dropped): the owner is woken all the same.
    work.stay_asleep = true;
    w.arm();
    w.while_lent(&mut work, || {
        drop(append_deferring(&j, 3, 1, 100));
        assert!(readable(&w));
    });
    assert_eq!(work.got, vec![1, 2], "dropped, not run");
    w.clear();

    // Run after the owner took its work back: it is woken, nothing is run.
    w.arm();
    let deferred = w.while_lent(&mut work, || append_deferring(&j, 4, 1, 100));
    deferred.run();
    assert!(readable(&w));
    assert_eq!(work.got, vec![1, 2]);
    w.clear();

    // Plain appends never take a wake-up over.
    w.arm();
    w.while_lent(&mut work, || {
        append_n(&j, 5, 1, 1);
        assert!(readable(&w));
    });
    assert_eq!(work.got, vec![1, 2]);
}

#[test]
fn lent_work_is_taken_back_only_once_an_appender_is_done_with_it() {
    use std::sync::atomic::AtomicBool;
    use std::sync::Barrier;
    /// Work that holds the appender until told to finish.
    struct Slow<'a> {
        started: &'a Barrier,
        finish: &'a Barrier,
        done: &'a AtomicBool,
    }
    impl HandOff for Slow<'_> {
        fn take_over(&mut self) -> bool {
            self.started.wait();
            self.finish.wait();
            self.done.store(true, Ordering::SeqCst);
            true
        }
    }
    let (_dir, j, w) = journal_with_wakeup();
    let (started, finish, done) = (Barrier::new(2), Barrier::new(2), AtomicBool::new(false));
    let mut work = Slow {
        started: &started,
        finish: &finish,
        done: &done,
    };
    w.arm();
    std::thread::scope(|s| {
        w.while_lent(&mut work, || {
            let deferred = append_deferring(&j, 1, 1, 100);
            s.spawn(move || deferred.run());
            started.wait();
            // The appender runs the work now: the owner's wait ends, and
            // taking the work back must wait for the appender.
            s.spawn(|| finish.wait());
        });
        assert!(
            done.load(Ordering::SeqCst),
            "taken back before the appender was done"
        );
    });
}

#[test]
fn sync_is_shared() {
    let dir = tempfile::tempdir().unwrap();
    let j = Journal::open(dir.path(), limits(1 << 20, 1 << 30, 1 << 20)).unwrap();
    append_n(&j, 1, 10, 10);
    assert!(j.synced() < 11);
    j.sync_upto(11).unwrap();
    assert!(j.synced() >= 11);
}

#[test]
fn skip_to_numbers_on_from_there_also_after_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let j = Journal::open(dir.path(), limits(1 << 20, 8 << 20, 1 << 20)).unwrap();
    append_n(&j, 1, 10, 4);
    j.skip_to(5).unwrap();
    assert_eq!(j.end(), 11, "never backwards");
    j.skip_to(100).unwrap();
    assert_eq!((j.start(), j.end()), (100, 100));
    let id = j.id();
    drop(j);
    let j = Journal::open(dir.path(), limits(1 << 20, 8 << 20, 1 << 20)).unwrap();
    assert_eq!((j.id(), j.start(), j.end()), (id, 100, 100));
    append_n(&j, 100, 3, 3);
    let mut seqs = Vec::new();
    j.reader(100)
        .read(1 << 20, &mut |e| {
            seqs.push(e.seq);
            Step::Next
        })
        .unwrap();
    assert_eq!(seqs, vec![100, 101, 102]);
    drop(j);
    Journal::remove_all(dir.path()).unwrap();
    let j = Journal::open(dir.path(), limits(1 << 20, 8 << 20, 1 << 20)).unwrap();
    assert_ne!(j.id(), id, "a new journal");
    assert_eq!(j.end(), 1);
}

/// A block's buffer: its address and capacity.
fn buffer(b: &Block) -> (usize, usize) {
    (b.bytes.as_ptr() as usize, b.bytes.capacity())
}

/// The buffer of each block kept for refilling.
fn spare_blocks(j: &Journal) -> Vec<(usize, usize)> {
    lock(&j.shared.writer)
        .pool
        .spare
        .iter()
        .map(buffer)
        .collect()
}

/// The buffer of each block in the ring, oldest first.
fn ring_blocks_of(j: &Journal) -> Vec<(usize, usize)> {
    read_lock(&j.shared.ring)
        .blocks
        .iter()
        .map(|b| buffer(b))
        .collect()
}

/// Appends blocks of 20 records from `next` until the ring no longer holds
/// the block `first`; returns the next sequence number.
fn append_until_dropped(j: &Journal, mut next: u64, first: (usize, usize)) -> u64 {
    while ring_blocks_of(j).contains(&first) {
        append_n(j, next, 20, 20);
        next += 20;
    }
    next
}

#[test]
fn a_block_the_ring_drops_is_refilled_by_a_later_append() {
    let dir = tempfile::tempdir().unwrap();
    // Room for about ten blocks of 20 records.
    let j = Journal::open(dir.path(), limits(1 << 20, 1 << 30, 30_000)).unwrap();
    append_n(&j, 1, 20, 20);
    let first = ring_blocks_of(&j)[0];
    let next = append_until_dropped(&j, 21, first);
    let spare = spare_blocks(&j);
    assert!(!spare.is_empty(), "a dropped block nobody holds is kept");
    append_n(&j, next, 20, 20);
    let newest = *ring_blocks_of(&j).last().unwrap();
    assert!(
        spare.contains(&newest),
        "{newest:?} is not one of {spare:?}"
    );
    let (got, lost) = read_all(&mut j.reader(1), 1 << 20);
    assert!(lost.is_empty());
    expect_seqs(&got, 1..next + 20);
}

#[test]
fn a_block_a_reader_holds_is_never_refilled() {
    let dir = tempfile::tempdir().unwrap();
    let j = Journal::open(dir.path(), limits(1 << 20, 1 << 30, 30_000)).unwrap();
    append_n(&j, 1, 20, 20);
    let held = j.ring_blocks(1, 1 << 20);
    assert_eq!(held.len(), 1);
    let first = ring_blocks_of(&j)[0];
    let next = append_until_dropped(&j, 21, first);
    assert!(!spare_blocks(&j).contains(&first));
    append_n(&j, next, 100, 20);
    assert!(!ring_blocks_of(&j).contains(&first));
    let entries: Vec<(u64, Vec<u8>)> = (1..21)
        .map(|s| (s, held[0].entry(s).text.to_vec()))
        .collect();
    expect_seqs(&entries, 1..21);
}
