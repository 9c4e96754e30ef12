//! Grouping records into events.
//!
//! The kernel writes one audit event as several records sharing a timestamp
//! and serial (`SYSCALL`, `CWD`, `PATH`…, `PROCTITLE`, `EOE`), possibly
//! interleaved with other events' records. Plugins such as setroubleshootd's
//! publisher or a JSON writer need whole events.
//!
//! Grouping happens in two halves so that it can be replayed exactly:
//!
//! * the [`Grouper`] runs once, when records enter the journal. It decides
//!   which event each record belongs to and when each event ends, and those
//!   decisions are written into the journal with the records (an event id per
//!   record, an "ends event" flag, and close markers for events that end by
//!   timeout, by the open-event limit or at shutdown);
//! * an [`Assembler`] per events-mode plugin follows the journal and collects
//!   records until the journal says their event ended. It decides nothing, so
//!   reading the same journal range again (after a plugin or dispatcher
//!   restart) yields the same events with the same ids.
//!
//! The rules are libauparse's: an event is keyed by node, timestamp and
//! serial; EOE and PROCTITLE end kernel events; user-space, daemon and anomaly
//! records are events of one record (see [`record_types::ends_event`]); an
//! event still open once the stream's time is `timeout` past its timestamp,
//! or that has seen no record for `timeout` of wall-clock time, ends then.
//! An EOE that arrives after its event already ended at PROCTITLE (the normal
//! kernel case) forms an event of its own that assemblers drop, as
//! libauparse does.

use std::collections::VecDeque;
use std::hash::{Hash, Hasher};

use rustc_hash::{FxHashMap as HashMap, FxHasher};
use std::time::{Duration, Instant};

use crate::journal::entry::{flags, Origin};
use crate::journal::EntryRef;
use crate::record::RecordInfo;
use crate::record_types;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Key {
    node: u64,
    sec: u64,
    msec: u32,
    serial: u64,
}

#[derive(Debug, Clone, Copy)]
struct Open {
    event: u64,
    sec: u64,
    last_seen: Instant,
}

/// How the grouper placed one record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placement {
    /// Event id of the record.
    pub event: u64,
    /// Whether the record ends its event.
    pub ends: bool,
    /// Whether the record starts its event (its first record).
    pub starts: bool,
}

/// Decides event membership and event ends as records enter the journal.
#[derive(Debug)]
pub struct Grouper {
    timeout: Duration,
    max_open: usize,
    open: HashMap<Key, Open>,
    /// Open events in the order they started (entries whose event has
    /// already ended are skipped lazily).
    order: VecDeque<(Key, u64)>,
    /// Newest record time seen per node, the "stream time".
    stream_time: HashMap<u64, u64>,
    next_event: u64,
}

/// The grouper's state as a checkpoint stores it.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct GrouperState {
    /// Next event id to hand out.
    pub next_event: u64,
    /// Open events: `[node hash, sec, msec, serial, event id]`.
    pub open: Vec<[u64; 5]>,
}

impl Grouper {
    /// A grouper closing events after `timeout` and keeping at most
    /// `max_open` events open.
    pub fn new(timeout: Duration, max_open: usize) -> Grouper {
        Grouper {
            timeout,
            max_open: max_open.max(1),
            open: HashMap::default(),
            order: VecDeque::new(),
            stream_time: HashMap::default(),
            next_event: 1,
        }
    }

    /// Rebuilds a grouper from a checkpoint. Restored events count as seen
    /// `now`, so they get a full timeout to be completed.
    pub fn restore(
        timeout: Duration,
        max_open: usize,
        state: &GrouperState,
        now: Instant,
    ) -> Grouper {
        let mut g = Grouper::new(timeout, max_open);
        g.next_event = state.next_event.max(1);
        for &[node, sec, msec, serial, event] in &state.open {
            let key = Key {
                node,
                sec,
                msec: msec as u32,
                serial,
            };
            g.open.insert(
                key,
                Open {
                    event,
                    sec,
                    last_seen: now,
                },
            );
            g.order.push_back((key, event));
        }
        g
    }

    /// The state a checkpoint stores.
    pub fn state(&self) -> GrouperState {
        GrouperState {
            next_event: self.next_event,
            open: self
                .order
                .iter()
                .filter(|(k, e)| self.open.get(k).is_some_and(|o| o.event == *e))
                .map(|(k, e)| [k.node, k.sec, u64::from(k.msec), k.serial, *e])
                .collect(),
        }
    }

    /// Keeps event ids unique after recovery found ids up to `seen` in the
    /// journal beyond the checkpoint.
    pub fn observe_event_id(&mut self, seen: u64) {
        self.next_event = self.next_event.max(seen + 1);
    }

    /// Re-applies a decision read back from the journal (recovery after a
    /// crash, replaying entries written after the last checkpoint).
    pub fn replay(&mut self, e: &EntryRef<'_>, info: Option<&RecordInfo<'_>>, now: Instant) {
        self.observe_event_id(e.event);
        if e.flags & flags::CLOSE_MARKER != 0 {
            self.open.retain(|_, o| o.event != e.event);
            return;
        }
        let Some(info) = info else { return };
        let key = key_of(info);
        if e.flags & flags::ENDS_EVENT != 0 {
            self.open.remove(&key);
        } else if let std::collections::hash_map::Entry::Vacant(v) = self.open.entry(key) {
            v.insert(Open {
                event: e.event,
                sec: info.time.sec,
                last_seen: now,
            });
            self.order.push_back((key, e.event));
        }
    }

    fn new_event(&mut self) -> u64 {
        let e = self.next_event;
        self.next_event += 1;
        e
    }

    /// Places a record. `closes` receives events that end before it (their
    /// close markers must be written before the record).
    pub fn place(
        &mut self,
        info: Option<&RecordInfo<'_>>,
        now: Instant,
        closes: &mut Vec<u64>,
    ) -> Placement {
        let Some(info) = info else {
            return Placement {
                event: self.new_event(),
                ends: true,
                starts: true,
            };
        };
        let key = key_of(info);
        let stream = self.stream_time.entry(key.node).or_insert(0);
        if info.time.sec > *stream {
            *stream = info.time.sec;
            self.expire_stream_time(key.node, closes);
        }
        let ends = record_types::ends_event(info.rtype);
        if let Some(open) = self.open.get_mut(&key) {
            open.last_seen = now;
            let event = open.event;
            if ends {
                self.open.remove(&key);
            }
            return Placement {
                event,
                ends,
                starts: false,
            };
        }
        let event = self.new_event();
        if !ends {
            while self.open.len() >= self.max_open {
                if !self.close_oldest(closes) {
                    break;
                }
            }
            self.open.insert(
                key,
                Open {
                    event,
                    sec: info.time.sec,
                    last_seen: now,
                },
            );
            self.order.push_back((key, event));
        }
        Placement {
            event,
            ends,
            starts: true,
        }
    }

    fn is_current(&self, key: &Key, event: u64) -> bool {
        self.open.get(key).is_some_and(|o| o.event == event)
    }

    fn close_oldest(&mut self, closes: &mut Vec<u64>) -> bool {
        while let Some((key, event)) = self.order.pop_front() {
            if self.is_current(&key, event) {
                self.open.remove(&key);
                closes.push(event);
                return true;
            }
        }
        false
    }

    fn expire_stream_time(&mut self, node: u64, closes: &mut Vec<u64>) {
        let now = self.stream_time.get(&node).copied().unwrap_or(0);
        let timeout = self.timeout.as_secs().max(1);
        // Events start roughly in time order, so the oldest are at the front;
        // stop at the first one of this node that is still young.
        let mut i = 0;
        while i < self.order.len() {
            let (key, event) = self.order[i];
            if !self.is_current(&key, event) {
                if i == 0 {
                    self.order.pop_front();
                    continue;
                }
                i += 1;
                continue;
            }
            if key.node != node {
                i += 1;
                continue;
            }
            let open = self.open[&key];
            if open.sec + timeout > now {
                break;
            }
            self.open.remove(&key);
            closes.push(event);
            if i == 0 {
                self.order.pop_front();
            } else {
                i += 1;
            }
        }
    }

    /// Ends events that have seen no record for the timeout.
    pub fn expire_idle(&mut self, now: Instant, closes: &mut Vec<u64>) {
        let timeout = self.timeout;
        let mut expired: Vec<(Key, u64)> = self
            .open
            .iter()
            .filter(|(_, o)| now.duration_since(o.last_seen) >= timeout)
            .map(|(k, o)| (*k, o.event))
            .collect();
        expired.sort_by_key(|&(_, e)| e);
        for (key, event) in expired {
            self.open.remove(&key);
            closes.push(event);
        }
        self.order
            .retain(|(k, e)| self.open.get(k).is_some_and(|o| o.event == *e));
    }

    /// Ends every open event (shutdown).
    pub fn close_all(&mut self, closes: &mut Vec<u64>) {
        let mut all: Vec<u64> = self.open.values().map(|o| o.event).collect();
        all.sort_unstable();
        closes.extend(all);
        self.open.clear();
        self.order.clear();
    }

    /// Number of open events.
    pub fn open_events(&self) -> usize {
        self.open.len()
    }
}

fn key_of(info: &RecordInfo<'_>) -> Key {
    let node = match info.node {
        None => 0,
        Some(n) => {
            let mut h = FxHasher::default();
            n.hash(&mut h);
            h.finish() | 1
        }
    };
    Key {
        node,
        sec: info.time.sec,
        msec: info.time.msec,
        serial: info.serial,
    }
}

/// One record of an assembled event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventRecord {
    /// Journal sequence number.
    pub seq: u64,
    /// Record type.
    pub rtype: u32,
    /// Entry flags.
    pub flags: u16,
    /// The input it arrived on (its journal entry's `source`).
    pub source: u16,
    /// Where it was first journaled, if in another journal.
    pub origin: Option<Origin>,
    start: u32,
    len: u32,
}

/// A whole event, ready to deliver.
#[derive(Debug, Default)]
pub struct Event {
    /// Sequence number of the journal entry that ended the event: the id a
    /// plugin acknowledges.
    pub close_seq: u64,
    /// The assembler saw the event's first record (journal flag
    /// `STARTS_EVENT`), so it holds every record of the event; an event
    /// whose reading began in its middle does not.
    pub whole: bool,
    records: Vec<EventRecord>,
    text: Vec<u8>,
}

impl Event {
    /// The event's records, in journal order.
    pub fn records(&self) -> impl Iterator<Item = (EventRecord, &[u8])> + '_ {
        self.records
            .iter()
            .map(|r| (*r, &self.text[r.start as usize..(r.start + r.len) as usize]))
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether the event has no records.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    fn push(&mut self, e: &EntryRef<'_>) {
        self.records.push(EventRecord {
            seq: e.seq,
            rtype: e.rtype,
            flags: e.flags,
            source: e.source,
            origin: e.origin,
            start: self.text.len() as u32,
            len: e.text.len() as u32,
        });
        self.text.extend_from_slice(e.text);
    }

    /// Record `i` (in journal order) and its text.
    pub fn record(&self, i: usize) -> Option<(EventRecord, &[u8])> {
        let r = *self.records.get(i)?;
        Some((r, &self.text[r.start as usize..(r.start + r.len) as usize]))
    }

    /// Keeps only the records `keep` accepts.
    pub fn retain(&mut self, mut keep: impl FnMut(&EventRecord) -> bool) {
        self.records.retain(|r| keep(r));
    }
}

#[derive(Debug)]
struct Building {
    first_seq: u64,
    event: Event,
}

/// Follows the journal for one plugin and yields whole events as the journal
/// says they end.
#[derive(Debug, Default)]
pub struct Assembler {
    building: HashMap<u64, Building>,
    /// (first seq, event id) of building events in the order they started.
    starts: VecDeque<(u64, u64)>,
    /// Emptied events handed back ([`Assembler::recycle`]), so that
    /// assembling does not allocate for every event.
    spare: Vec<Event>,
}

/// Most emptied events an assembler keeps for reuse.
const SPARE_EVENTS: usize = 64;

impl Assembler {
    /// An assembler with no event in progress.
    pub fn new() -> Assembler {
        Assembler::default()
    }

    /// Takes the next journal entry; returns the event it completes, if any.
    /// Events made only of EOE records (the EOE after PROCTITLE) complete
    /// silently: their close sequence number is returned with no records.
    pub fn push(&mut self, e: &EntryRef<'_>) -> Option<Event> {
        if e.flags & flags::CLOSE_MARKER != 0 {
            let b = self.building.remove(&e.event)?;
            let mut ev = b.event;
            ev.close_seq = e.seq;
            return Some(finish(ev));
        }
        let spare = &mut self.spare;
        let b = self.building.entry(e.event).or_insert_with(|| {
            self.starts.push_back((e.seq, e.event));
            let mut event: Event = spare.pop().unwrap_or_default();
            event.whole = e.flags & flags::STARTS_EVENT != 0;
            Building {
                first_seq: e.seq,
                event,
            }
        });
        b.event.push(e);
        if e.flags & flags::ENDS_EVENT != 0 {
            let b = self.building.remove(&e.event)?;
            let mut ev = b.event;
            ev.close_seq = e.seq;
            return Some(finish(ev));
        }
        None
    }

    /// Where reading must restart to rebuild the events still in progress
    /// when the reader is at `next`.
    pub fn replay_point(&mut self, next: u64) -> u64 {
        while let Some(&(first, event)) = self.starts.front() {
            if self
                .building
                .get(&event)
                .is_some_and(|b| b.first_seq == first)
            {
                return first;
            }
            self.starts.pop_front();
        }
        next
    }

    /// Takes back an event it yielded, once its records are no longer
    /// needed, to hold a later event's records without allocating.
    pub fn recycle(&mut self, mut event: Event) {
        if self.spare.len() < SPARE_EVENTS {
            event.records.clear();
            event.text.clear();
            event.close_seq = 0;
            event.whole = false;
            self.spare.push(event);
        }
    }

    /// Number of events in progress.
    pub fn building(&self) -> usize {
        self.building.len()
    }
}

fn finish(mut ev: Event) -> Event {
    if ev.records.iter().all(|r| r.rtype == record_types::EOE) {
        ev.records.clear();
        ev.text.clear();
    }
    ev
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::AuditTime;

    fn info(rtype: u32, serial: u64, sec: u64) -> RecordInfo<'static> {
        RecordInfo {
            node: None,
            rtype,
            time: AuditTime { sec, msec: 5 },
            serial,
        }
    }

    /// Runs records through a grouper and an assembler the way the engine
    /// does (markers written before the record that triggered them) and
    /// returns the delivered events as lists of (serial, type).
    fn run(records: &[(u32, u64, u64)], g: &mut Grouper) -> (Vec<Vec<(u64, u32)>>, Vec<u64>) {
        let now = Instant::now();
        let mut entries: Vec<(u64, u32, u16, u64)> = Vec::new(); // event, type, flags, serial
        for &(t, serial, sec) in records {
            let mut closes = Vec::new();
            let i = info(t, serial, sec);
            let p = g.place(Some(&i), now, &mut closes);
            for c in closes {
                entries.push((c, 0, flags::CLOSE_MARKER, 0));
            }
            entries.push((
                p.event,
                t,
                if p.ends { flags::ENDS_EVENT } else { 0 },
                serial,
            ));
        }
        let mut closes = Vec::new();
        g.close_all(&mut closes);
        for c in closes {
            entries.push((c, 0, flags::CLOSE_MARKER, 0));
        }
        let mut a = Assembler::new();
        let mut out = Vec::new();
        let mut close_seqs = Vec::new();
        let texts: Vec<String> = entries.iter().map(|e| format!("serial={}", e.3)).collect();
        for (i, &(event, rtype, fl, _)) in entries.iter().enumerate() {
            let e = EntryRef {
                seq: i as u64 + 1,
                event,
                source_seq: 0,
                rtype,
                source: 0,
                flags: fl,
                origin: None,
                text: texts[i].as_bytes(),
            };
            if let Some(ev) = a.push(&e) {
                close_seqs.push(ev.close_seq);
                if !ev.is_empty() {
                    out.push(
                        ev.records()
                            .map(|(r, t)| {
                                let s: u64 = std::str::from_utf8(t).unwrap()[7..].parse().unwrap();
                                (s, r.rtype)
                            })
                            .collect(),
                    );
                }
            }
        }
        assert_eq!(a.building(), 0);
        (out, close_seqs)
    }

    #[test]
    fn kernel_events_end_at_proctitle_and_lone_eoe_is_dropped() {
        let mut g = Grouper::new(Duration::from_secs(2), 100);
        let (events, closes) = run(
            &[
                (1300, 1, 10),
                (1307, 1, 10),
                (1302, 1, 10),
                (1327, 1, 10),
                (1320, 1, 10),
                (1112, 2, 10),
            ],
            &mut g,
        );
        assert_eq!(
            events,
            vec![
                vec![(1, 1300), (1, 1307), (1, 1302), (1, 1327)],
                vec![(2, 1112)]
            ]
        );
        assert!(
            closes.windows(2).all(|w| w[0] < w[1]),
            "ack ids increase: {closes:?}"
        );
    }

    #[test]
    fn the_first_record_of_each_event_is_placed_as_its_start() {
        let mut g = Grouper::new(Duration::from_secs(2), 100);
        let now = Instant::now();
        let mut closes = Vec::new();
        let starts: Vec<(u64, bool, bool)> = [
            (1300, 1),
            (1302, 1),
            (1300, 2),
            (1327, 1),
            (1320, 1),
            (1112, 3),
            (1327, 2),
        ]
        .iter()
        .map(|&(t, serial)| {
            let p = g.place(Some(&info(t, serial, 10)), now, &mut closes);
            (p.event, p.starts, p.ends)
        })
        .collect();
        assert_eq!(
            starts,
            [
                (1, true, false),
                (1, false, false),
                (2, true, false),
                (1, false, true),
                // The EOE after PROCTITLE: an event of its own.
                (3, true, true),
                (4, true, true),
                (2, false, true),
            ]
        );
        let unparsed = g.place(None, now, &mut closes);
        assert!(unparsed.starts && unparsed.ends);
    }

    #[test]
    fn a_recycled_event_holds_only_the_next_events_records() {
        let entry = |seq: u64, event: u64, fl: u16, text: &'static [u8]| EntryRef {
            seq,
            event,
            source_seq: 0,
            rtype: 1300,
            source: 0,
            flags: fl,
            origin: None,
            text,
        };
        let mut a = Assembler::new();
        assert!(a.push(&entry(1, 1, 0, b"one")).is_none());
        let first = a.push(&entry(2, 1, flags::ENDS_EVENT, b"two")).unwrap();
        assert_eq!(first.len(), 2);
        a.recycle(first);
        assert!(a.push(&entry(3, 2, 0, b"three")).is_none());
        let second = a.push(&entry(4, 2, flags::CLOSE_MARKER, b"")).unwrap();
        assert_eq!(second.close_seq, 4);
        let got: Vec<(u64, &[u8])> = second.records().map(|(r, t)| (r.seq, t)).collect();
        assert_eq!(got, [(3, &b"three"[..])]);
        assert_eq!(second.record(0).map(|(r, _)| r.seq), Some(3));
        assert!(second.record(1).is_none());
    }

    #[test]
    fn interleaved_events_are_separated() {
        let mut g = Grouper::new(Duration::from_secs(2), 100);
        let (events, _) = run(
            &[
                (1300, 1, 10),
                (1300, 2, 10),
                (1302, 1, 10),
                (1302, 2, 10),
                (1320, 2, 10),
                (1320, 1, 10),
            ],
            &mut g,
        );
        assert_eq!(
            events,
            vec![
                vec![(2, 1300), (2, 1302), (2, 1320)],
                vec![(1, 1300), (1, 1302), (1, 1320)]
            ]
        );
    }

    #[test]
    fn stream_time_closes_events_without_an_end() {
        let mut g = Grouper::new(Duration::from_secs(2), 100);
        // Serial 1 never gets EOE; a record 2 seconds later ends it first.
        let (events, _) = run(
            &[(1300, 1, 10), (1400, 1, 10), (1300, 2, 12), (1320, 2, 12)],
            &mut g,
        );
        assert_eq!(
            events,
            vec![vec![(1, 1300), (1, 1400)], vec![(2, 1300), (2, 1320)]]
        );
    }

    #[test]
    fn open_event_limit_closes_oldest() {
        let mut g = Grouper::new(Duration::from_secs(60), 2);
        let (events, _) = run(
            &[(1300, 1, 10), (1300, 2, 10), (1300, 3, 10), (1320, 3, 10)],
            &mut g,
        );
        assert_eq!(events[0], vec![(1, 1300)]);
        assert_eq!(events.len(), 3);
    }

    #[test]
    fn idle_timeout_and_checkpoint_round_trip() {
        let mut g = Grouper::new(Duration::from_millis(100), 10);
        let t0 = Instant::now();
        let mut closes = Vec::new();
        let a = g.place(Some(&info(1300, 1, 10)), t0, &mut closes);
        let b = g.place(
            Some(&info(1300, 2, 10)),
            t0 + Duration::from_millis(80),
            &mut closes,
        );
        assert!(closes.is_empty());
        let state = g.state();
        assert_eq!(state.open.len(), 2);
        g.expire_idle(t0 + Duration::from_millis(150), &mut closes);
        assert_eq!(closes, vec![a.event]);
        let mut r = Grouper::restore(Duration::from_millis(100), 10, &state, t0);
        let c = r.place(Some(&info(1302, 2, 10)), t0, &mut closes);
        assert_eq!(
            c.event, b.event,
            "restored events keep collecting their records"
        );
        let d = r.place(Some(&info(1300, 9, 10)), t0, &mut closes);
        assert!(d.event > b.event, "ids stay unique after restore");
    }

    #[test]
    fn replay_point_is_oldest_event_in_progress() {
        let mut a = Assembler::new();
        let mk = |seq, event, fl| EntryRef {
            seq,
            event,
            source_seq: 0,
            rtype: 1300,
            source: 0,
            flags: fl,
            origin: None,
            text: b"x",
        };
        assert!(a.push(&mk(1, 1, 0)).is_none());
        assert!(a.push(&mk(2, 2, 0)).is_none());
        assert_eq!(a.replay_point(3), 1);
        assert_eq!(a.push(&mk(3, 1, flags::ENDS_EVENT)).unwrap().close_seq, 3);
        assert_eq!(a.replay_point(4), 2);
        assert_eq!(a.push(&mk(4, 2, flags::CLOSE_MARKER)).unwrap().len(), 1);
        assert_eq!(a.replay_point(5), 5);
    }
}
