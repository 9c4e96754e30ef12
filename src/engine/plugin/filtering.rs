//! A plugin's filter expression (`filter = '…'`, [`crate::filter`]) applied
//! to whole events, for every kind of delivery.
//!
//! The decision is per event, as in `ausearch-expression(5)` and auditd's
//! `audisp-filter`: an event matches if any of its records does, and then
//! all of its records go to the plugin (`keep`) or none do (`drop`). The
//! expression sees the records of the plugin's inputs, all types, as they
//! are in the journal (before `drop_fields`); the plugin's type lists then
//! choose which records of a passing event it gets.
//!
//! Deliveries collect events with the journal's [`Assembler`] (also in
//! records mode, when a filter is set), so that nothing is decided before
//! the journal says the event ended (its last record, or a close marker
//! written at the event timeout, the open-event limit or a clean stop) and
//! the cursor never moves past a record whose event is undecided: reading
//! resumes at [`Assembler::replay_point`], and events that ended at or
//! before the cursor's `acked` are not sent again. Replaying the same
//! journal range gives the same events, so after a reconnect or a restart
//! the same events pass.
//!
//! A withheld event's records are counted as `filtered` once, whatever the
//! reconnects: the sender remembers the last event counted
//! ([`Host::filtered_upto`]) and events decided again after a resend are not
//! counted again.
//!
//! Plugins whose filters have the same expression share their decisions
//! ([`Decisions`]): the first sender to decide an event writes which of
//! its inputs' records matched into a table of the expression, keyed by the
//! event's close sequence number, and the others read it instead of
//! evaluating the expression again. What is shared is whether the
//! expression matched, not what a plugin does with it (`filter_action`,
//! its inputs and types stay its own), and only a decision made on a whole
//! event ([`Event::whole`]) is written: a sender that began reading in the
//! middle of an event (a new plugin, a switch to filtering, records lost)
//! decides that event on what it has, as before, and tells nobody. A
//! reloaded plugin whose expression changed gets the table of its new
//! expression.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use super::Host;
use crate::engine::events::{Event, EventRecord};
use crate::engine::settings::{FilterAction, FilterRule};
use crate::filter::{Filter, Scratch};
use crate::journal::entry::flags;

/// Decisions of every filter expression in use, one table per expression
/// (by its text), shared by the senders of the plugins that use it. Tables
/// live as long as a connection uses them.
#[derive(Default)]
pub struct Decisions {
    tables: Mutex<HashMap<String, Weak<DecisionTable>>>,
}

impl Decisions {
    /// The table of `expression`, made when no connection holds it.
    fn table(&self, expression: &str) -> Arc<DecisionTable> {
        let mut tables = super::lock(&self.tables);
        tables.retain(|_, t| t.strong_count() > 0);
        if let Some(t) = tables.get(expression).and_then(Weak::upgrade) {
            return t;
        }
        let t = Arc::new(DecisionTable::new());
        tables.insert(expression.to_string(), Arc::downgrade(&t));
        t
    }
}

/// Slots of a [`DecisionTable`]: senders further apart than this many
/// events decide for themselves (256 KiB per expression).
const TABLE_SLOTS: usize = 1 << 15;
/// Inputs whose records a decision tells apart (an event with a record of a
/// higher input index is decided by each sender alone).
const SHARED_INPUTS: u16 = 8;
/// Close sequence numbers from here on are not shared (they no longer fit
/// beside the masks in one word).
const SHARED_SEQ_LIMIT: u64 = 1 << 48;

/// One expression's recent decisions: per slot, in one word written and
/// read atomically (no lock on the delivery path), the event's close
/// sequence number, the inputs whose records were evaluated and those of
/// them with a matching record: `close_seq << 16 | evaluated << 8 |
/// matched`. A slot holds the latest event written to it; a reader checks
/// the sequence number.
struct DecisionTable {
    slots: Box<[AtomicU64]>,
}

impl DecisionTable {
    fn new() -> DecisionTable {
        DecisionTable {
            slots: (0..TABLE_SLOTS).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    fn slot(&self, close_seq: u64) -> &AtomicU64 {
        &self.slots[close_seq as usize % TABLE_SLOTS]
    }

    /// Of inputs `sources`, those with a matching record in the event that
    /// ended at `close_seq`, if that event is decided for all of them.
    fn get(&self, close_seq: u64, sources: u8) -> Option<u8> {
        let v = self.slot(close_seq).load(Ordering::Relaxed);
        let evaluated = (v >> 8) as u8;
        (v >> 16 == close_seq && sources & !evaluated == 0).then_some(v as u8 & sources)
    }

    fn put(&self, close_seq: u64, evaluated: u8, matched: u8) {
        let v = close_seq << 16 | u64::from(evaluated) << 8 | u64::from(matched);
        self.slot(close_seq).store(v, Ordering::Relaxed);
    }
}

/// One connection's filter.
pub(super) struct EventFilter {
    filter: Filter,
    action: FilterAction,
    scratch: Scratch,
    /// Decisions shared with the other plugins of the same expression.
    shared: Arc<DecisionTable>,
    /// Events up to this close sequence number are counted.
    counted_upto: u64,
    /// Records withheld and not yet reported to the host.
    withheld: u64,
}

impl EventFilter {
    /// The filter of `rule`, if the plugin has one, sharing its decisions
    /// through `decisions`.
    pub(super) fn of(rule: Option<&FilterRule>, decisions: &Decisions) -> Option<EventFilter> {
        rule.map(|r| EventFilter {
            filter: r.filter.clone(),
            action: r.action,
            scratch: Scratch::new(),
            shared: decisions.table(&r.source),
            counted_upto: 0,
            withheld: 0,
        })
    }

    /// Whether `event` goes to the plugin: any of its records matches and
    /// matches are kept, or none does and matches are withheld.
    pub(super) fn passes(&mut self, event: &Event) -> bool {
        let EventFilter {
            filter,
            scratch,
            shared,
            ..
        } = self;
        let close_seq = event.close_seq;
        // The inputs of the event's records, if decisions about them can
        // be shared.
        let sources = event.records().try_fold(0u8, |m, (r, _)| {
            (r.source < SHARED_INPUTS).then_some(m | 1 << r.source)
        });
        let sources = sources.filter(|_| close_seq < SHARED_SEQ_LIMIT);
        if let Some(s) = sources {
            if let Some(matched) = shared.get(close_seq, s) {
                return self.action.passes(matched != 0);
            }
        }
        let Some(s) = sources else {
            let matched = event
                .records()
                .any(|(r, text)| filter.matches_typed(text, header_type(&r), scratch));
            return self.action.passes(matched);
        };
        // Which inputs have a matching record: one match per input is
        // enough.
        let mut matched = 0u8;
        for (r, text) in event.records() {
            let bit = 1 << r.source;
            if matched & bit == 0 && filter.matches_typed(text, header_type(&r), scratch) {
                matched |= bit;
                if matched == s {
                    break;
                }
            }
        }
        if event.whole {
            shared.put(close_seq, s, matched);
        }
        self.action.passes(matched != 0)
    }

    /// `records` records of the event that ended at `close_seq` are
    /// withheld: counted unless that event was counted before.
    pub(super) fn withhold(&mut self, close_seq: u64, records: usize) {
        if close_seq > self.counted_upto {
            self.counted_upto = close_seq;
            self.withheld += records as u64;
        }
    }

    /// Before reading on: learns what the sender has counted already.
    pub(super) fn begin(&mut self, host: &mut dyn Host) {
        self.counted_upto = self.counted_upto.max(host.filtered_upto());
    }

    /// After reading: hands the count of withheld records to the sender.
    pub(super) fn report(&mut self, host: &mut dyn Host) {
        if self.withheld > 0 || self.counted_upto > host.filtered_upto() {
            host.filtered(self.counted_upto, std::mem::take(&mut self.withheld));
        }
    }
}

/// The record's type as its header says, if its header was read when it
/// was journaled.
fn header_type(r: &EventRecord) -> Option<u32> {
    (r.flags & flags::UNPARSED == 0).then_some(r.rtype)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::events::Assembler;
    use crate::journal::EntryRef;
    use crate::record_types::SYSCALL;

    const SYSCALL_TEXT: &[u8] = b"type=SYSCALL msg=audit(1.000:7): syscall=87 success=no";
    const PATH_TEXT: &[u8] = b"type=PATH msg=audit(1.000:7): item=0 name=\"/tmp/x\"";
    const PATH: u32 = 1302;

    fn filter(expr: &str, decisions: &Decisions) -> EventFilter {
        let rule = FilterRule::parse(expr, FilterAction::Keep).unwrap();
        EventFilter::of(Some(&rule), decisions).unwrap()
    }

    /// The event of `records` (type, text, input), journaled from seq
    /// `close_seq - len + 1` to `close_seq`; `from_start`: the reader saw
    /// its first record (else it began reading in its middle).
    fn event(close_seq: u64, records: &[(u32, &'static [u8], u16)], from_start: bool) -> Event {
        let mut a = Assembler::new();
        let first = close_seq + 1 - records.len() as u64;
        let mut done = None;
        for (i, &(rtype, text, source)) in records.iter().enumerate() {
            let mut fl = 0;
            if i == 0 && from_start {
                fl |= flags::STARTS_EVENT;
            }
            if i + 1 == records.len() {
                fl |= flags::ENDS_EVENT;
            }
            done = a.push(&EntryRef {
                seq: first + i as u64,
                event: 1,
                source_seq: 0,
                rtype,
                source,
                flags: fl,
                origin: None,
                text,
            });
        }
        done.expect("the last record ends the event")
    }

    #[test]
    fn a_decision_on_a_whole_event_is_shared_and_one_on_a_part_is_not() {
        let decisions = Decisions::default();
        let expr = "type r= SYSCALL";
        let whole = |seq| {
            event(
                seq,
                &[(SYSCALL, SYSCALL_TEXT, 0), (PATH, PATH_TEXT, 0)],
                true,
            )
        };
        // A sender that began reading after the SYSCALL record.
        let part = |seq| event(seq, &[(PATH, PATH_TEXT, 0)], false);
        // Senders of plugins with the same expression (a table lives as
        // long as one of them does).
        let [mut a, mut b, mut c, mut d] = [(); 4].map(|_| filter(expr, &decisions));

        // The part is decided on what it holds and tells nobody.
        assert!(!a.passes(&part(10)));
        assert!(b.passes(&whole(10)));
        // The whole event's decision is shared: a sender holding only a
        // part of it takes it.
        assert!(c.passes(&part(10)));
        // The same with a drop filter: what is shared is the match.
        let rule = FilterRule::parse(expr, FilterAction::Drop).unwrap();
        let mut dropping = EventFilter::of(Some(&rule), &decisions).unwrap();
        assert!(!dropping.passes(&part(10)));
        // Another expression (even one meaning the same) has its own table.
        assert!(!filter("type r= SYSCALL ", &decisions).passes(&part(10)));
        // Another event is not taken for this one.
        assert!(!c.passes(&part(11)));
        // A slot reused by a later event no longer answers for this one.
        assert!(d.passes(&whole(10 + TABLE_SLOTS as u64)));
        assert!(!c.passes(&part(10)));
        // Once no connection uses the expression, its table goes.
        drop((a, b, c, d, dropping));
        assert!(!filter(expr, &decisions).passes(&part(10 + TABLE_SLOTS as u64)));
    }

    #[test]
    fn a_shared_decision_answers_only_for_the_inputs_it_evaluated() {
        let decisions = Decisions::default();
        let expr = "type r= SYSCALL";
        // The SYSCALL record came from input 0, the PATH record from input 1.
        let from = |inputs: &[u16]| {
            let mut e = event(
                20,
                &[(SYSCALL, SYSCALL_TEXT, 0), (PATH, PATH_TEXT, 1)],
                true,
            );
            e.retain(|r| inputs.contains(&r.source));
            e
        };
        // A part of the event holding only a PATH record of input `source`.
        let part = |source| event(20, &[(PATH, PATH_TEXT, source)], false);
        let [mut a, mut b, mut c] = [(); 3].map(|_| filter(expr, &decisions));
        // Decided for input 1 alone (no match there): that says nothing of
        // input 0.
        assert!(!a.passes(&from(&[1])));
        assert!(!b.passes(&part(0)));
        // A plugin of both inputs decides, and shares its decision for
        // both: input 0 has the match, input 1 none.
        assert!(c.passes(&from(&[0, 1])));
        assert!(a.passes(&part(0)));
        assert!(!b.passes(&part(1)));
    }
}
