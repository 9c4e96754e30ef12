//! From auditd's byte stream to the bytes the child gets: records cut by
//! the string-format decoder, grouped into events by the dispatcher's own
//! grouping rules, each record tested against the filter, and the records
//! of every event that passes appended to the output, one line each, in the
//! order their events end.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use audisp::engine::events::Grouper;
use audisp::filter::{Action, Counts, Filter, Scratch, WholeEvents};
use audisp::framing::{Decoder, InputFormat, Item};
use audisp::record::{self, RecordInfo};
use audisp::record_types;

/// How long an event may stay open without its last record (libauparse's
/// default end-of-event timeout, which audisp-filter inherits).
pub const EVENT_TIMEOUT: Duration = Duration::from_secs(2);
/// The most events held open at once (audispd's default).
pub const MAX_OPEN_EVENTS: usize = 4096;
/// How many ended events are remembered for a late EOE.
const REMEMBERED: usize = 64;

/// The decoder and everything after it.
pub struct Pipeline {
    decoder: Decoder,
    events: Events,
}

/// Identifies an event across its records: node, time and serial.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct EventKey {
    node: u64,
    sec: u64,
    msec: u32,
    serial: u64,
}

impl EventKey {
    fn of(info: &RecordInfo<'_>) -> EventKey {
        // FNV-1a: the node name only needs telling apart here.
        let node = info.node.map_or(0, |n| {
            n.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
                (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
            })
        });
        EventKey {
            node,
            sec: info.time.sec,
            msec: info.time.msec,
            serial: info.serial,
        }
    }
}

/// Records in, decisions out.
struct Events {
    grouper: Grouper,
    filter: Filter,
    scratch: Scratch,
    gate: WholeEvents<Vec<u8>>,
    /// Emptied record buffers, reused.
    pool: Vec<Vec<u8>>,
    /// Recently ended events and whether they passed, for the EOE the
    /// kernel sends after an event's PROCTITLE already ended it.
    ended: VecDeque<(EventKey, u64, bool)>,
    closes: Vec<u64>,
    out: Vec<u8>,
    records_in: u64,
    records_out: u64,
    malformed: u64,
}

impl Pipeline {
    /// A pipeline applying `filter` with `action`.
    pub fn new(filter: Filter, action: Action) -> Pipeline {
        Pipeline {
            decoder: Decoder::new(InputFormat::String),
            events: Events {
                grouper: Grouper::new(EVENT_TIMEOUT, MAX_OPEN_EVENTS),
                filter,
                scratch: Scratch::new(),
                gate: WholeEvents::new(action),
                pool: Vec::new(),
                ended: VecDeque::with_capacity(REMEMBERED),
                closes: Vec::new(),
                out: Vec::new(),
                records_in: 0,
                records_out: 0,
                malformed: 0,
            },
        }
    }

    /// Takes the next bytes of auditd's stream.
    pub fn feed(&mut self, chunk: &[u8], now: Instant) {
        let events = &mut self.events;
        self.decoder.feed(chunk, &mut |item| events.item(item, now));
    }

    /// Ends events that have waited too long for their last record.
    pub fn idle(&mut self, now: Instant) {
        let e = &mut self.events;
        e.closes.clear();
        e.grouper.expire_idle(now, &mut e.closes);
        e.close_pending();
    }

    /// The end of the input: decides every event still open.
    pub fn finish(&mut self, now: Instant) {
        let events = &mut self.events;
        self.decoder.finish(&mut |item| events.item(item, now));
        let e = &mut self.events;
        e.closes.clear();
        e.grouper.close_all(&mut e.closes);
        e.close_pending();
        let Events {
            gate,
            pool,
            out,
            records_out,
            ..
        } = e;
        gate.close_all(&mut |item| emit(out, pool, records_out, item));
    }

    /// Applies `filter` from the next record on (events already open keep
    /// what their earlier records decided).
    pub fn set_filter(&mut self, filter: Filter) {
        self.events.filter = filter;
    }

    /// Bytes waiting for the child.
    pub fn output(&mut self) -> &mut Vec<u8> {
        &mut self.events.out
    }

    /// Records read, records forwarded, lines that were not records, and the
    /// per-event decisions.
    pub fn stats(&self) -> (u64, u64, u64, Counts) {
        let e = &self.events;
        (e.records_in, e.records_out, e.malformed, e.gate.counts())
    }

    /// Records held in open events.
    pub fn held(&self) -> usize {
        self.events.gate.held()
    }
}

/// Appends one record line to the output and recycles its buffer.
fn emit(out: &mut Vec<u8>, pool: &mut Vec<Vec<u8>>, records_out: &mut u64, mut item: Vec<u8>) {
    out.extend_from_slice(&item);
    out.push(b'\n');
    *records_out += 1;
    item.clear();
    pool.push(item);
}

impl Events {
    fn item(&mut self, item: Item<'_>, now: Instant) {
        match item {
            Item::Record { text, .. } => self.record(text, now),
            Item::Malformed(m) => {
                self.malformed += 1;
                eprintln!("audisp-filter: input skipped: {m}");
            }
        }
    }

    fn close_pending(&mut self) {
        let Events {
            gate,
            pool,
            out,
            records_out,
            closes,
            ..
        } = self;
        for &c in closes.iter() {
            gate.close(c, &mut |item| emit(out, pool, records_out, item));
        }
    }

    fn record(&mut self, text: &[u8], now: Instant) {
        self.records_in += 1;
        let info = record::parse(text);
        self.closes.clear();
        let place = self.grouper.place(info.as_ref(), now, &mut self.closes);
        self.close_pending();
        let key = info.as_ref().map(EventKey::of);
        let eoe = info.as_ref().is_some_and(|i| i.rtype == record_types::EOE);
        if eoe && place.ends {
            // An EOE after its event ended (at PROCTITLE) goes where the
            // event went.
            let earlier = self
                .ended
                .iter()
                .find(|(k, e, _)| Some(*k) == key && *e != place.event);
            if let Some(&(_, _, passed)) = earlier {
                if passed {
                    self.out.extend_from_slice(text);
                    self.out.push(b'\n');
                    self.records_out += 1;
                }
                return;
            }
        }
        let matched = self.filter.matches(text, &mut self.scratch);
        let mut item = self.pool.pop().unwrap_or_default();
        item.extend_from_slice(text);
        let Events {
            gate,
            pool,
            out,
            records_out,
            ..
        } = self;
        let decided = gate.push(place.event, matched, place.ends, item, &mut |item| {
            emit(out, pool, records_out, item)
        });
        if let (Some(passed), Some(key)) = (decided, key) {
            if !eoe {
                if self.ended.len() == REMEMBERED {
                    self.ended.pop_front();
                }
                self.ended.push_back((key, place.event, passed));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(rules: &str, action: Action, input: &str) -> String {
        let filter = audisp::filter::rules::parse_rules(rules).expect("rules");
        let mut p = Pipeline::new(filter, action);
        let now = Instant::now();
        // Split anywhere: the output does not depend on it.
        for piece in input.as_bytes().chunks(7) {
            p.feed(piece, now);
        }
        p.finish(now);
        String::from_utf8(p.output().clone()).expect("text")
    }

    const INPUT: &str = "\
type=SYSCALL msg=audit(1.000:1): syscall=257 success=no
type=USER msg=audit(1.001:2): pid=1 msg='op=x res=success'
type=CWD msg=audit(1.000:1): cwd=\"/\"
type=PROCTITLE msg=audit(1.000:1): proctitle=6C73
type=EOE msg=audit(1.000:1): 
type=SYSCALL msg=audit(1.002:3): syscall=0 success=yes
type=PROCTITLE msg=audit(1.002:3): proctitle=6C73
type=EOE msg=audit(1.002:3): 
";

    #[test]
    fn whole_events_in_the_order_they_end() {
        let keep = run("success r= no", Action::Keep, INPUT);
        assert_eq!(
            keep,
            "type=SYSCALL msg=audit(1.000:1): syscall=257 success=no\n\
type=CWD msg=audit(1.000:1): cwd=\"/\"\n\
type=PROCTITLE msg=audit(1.000:1): proctitle=6C73\n\
type=EOE msg=audit(1.000:1): \n"
        );
        let drop = run("success r= no", Action::Drop, INPUT);
        assert_eq!(
            drop,
            "type=USER msg=audit(1.001:2): pid=1 msg='op=x res=success'\n\
type=SYSCALL msg=audit(1.002:3): syscall=0 success=yes\n\
type=PROCTITLE msg=audit(1.002:3): proctitle=6C73\n\
type=EOE msg=audit(1.002:3): \n"
        );
        // Every record is in exactly one of the two.
        assert_eq!(
            keep.lines().count() + drop.lines().count(),
            INPUT.lines().count()
        );
    }

    #[test]
    fn no_rules_match_nothing() {
        assert_eq!(run("# none\n", Action::Keep, INPUT), "");
        // Everything, with the USER event (which ends at once) before the
        // event it came in the middle of.
        let all = run("# none\n", Action::Drop, INPUT);
        let mut lines: Vec<&str> = INPUT.lines().collect();
        lines.swap(0, 1);
        assert_eq!(all.lines().collect::<Vec<_>>(), lines);
    }
}
