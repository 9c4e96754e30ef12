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

use super::Host;
use crate::engine::events::Event;
use crate::engine::settings::{FilterAction, FilterRule};
use crate::filter::{Filter, Scratch};

/// One connection's filter.
pub(super) struct EventFilter {
    filter: Filter,
    action: FilterAction,
    scratch: Scratch,
    /// Events up to this close sequence number are counted.
    counted_upto: u64,
    /// Records withheld and not yet reported to the host.
    withheld: u64,
}

impl EventFilter {
    /// The filter of `rule`, if the plugin has one.
    pub(super) fn of(rule: Option<&FilterRule>) -> Option<EventFilter> {
        rule.map(|r| EventFilter {
            filter: r.filter.clone(),
            action: r.action,
            scratch: Scratch::new(),
            counted_upto: 0,
            withheld: 0,
        })
    }

    /// Whether `event` goes to the plugin: any of its records matches and
    /// matches are kept, or none does and matches are withheld.
    pub(super) fn passes(&mut self, event: &Event) -> bool {
        let EventFilter {
            filter, scratch, ..
        } = self;
        let matched = event
            .records()
            .any(|(_, text)| filter.matches(text, scratch));
        self.action.passes(matched)
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
