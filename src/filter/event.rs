//! Whole-event decisions: an event's records are kept or dropped together.
//!
//! A filter expression is evaluated on each record, but it decides for the
//! event (`ausearch-expression(5)`: true for an event if true for any of its
//! records), so that a kept event arrives whole — its `SYSCALL`, `CWD`,
//! `PATH`s and `PROCTITLE` — whichever record matched. [`WholeEvents`] holds
//! the records of each event that has not ended yet, notes whether any of
//! them matched, and when the event ends releases them all, in the order
//! they came, or drops them all, according to the [`Action`].
//!
//! It knows nothing of how events are delimited: the caller says which
//! event each record belongs to and when an event ends, from the
//! dispatcher's grouping ([`crate::engine::events`]) or the journal's event
//! ids and end flags. An event of one record (user-space messages, and
//! every record the grouping cannot place) is decided at once and never
//! held. Events are released in the order they end, which is not always the
//! order their first records came in (events interleave); a consumer that
//! keeps a resume point must not move it past [`WholeEvents::oldest_held`].

use std::collections::BTreeMap;

/// What a filter does with the events its expression matches.
///
/// auditd's `audisp-filter` names these modes the other way round from
/// common use: its `allowlist` *drops* matching events (it allows the
/// rest) and its `blocklist` *keeps only* matching events. Here they are
/// named for what happens to a matching event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Keep the events that match, drop the rest (`audisp-filter blocklist`).
    Keep,
    /// Drop the events that match, keep the rest (`audisp-filter allowlist`).
    Drop,
}

impl Action {
    /// Whether an event passes: it matched and the filter keeps matches, or
    /// it did not and the filter drops them.
    pub fn passes(self, matched: bool) -> bool {
        matched == (self == Action::Keep)
    }

    /// Reads `keep` or `drop`, and audisp-filter's `blocklist` (keep) and
    /// `allowlist` (drop), in any case.
    pub fn from_name(name: &str) -> Option<Action> {
        match name.to_ascii_lowercase().as_str() {
            "keep" | "blocklist" => Some(Action::Keep),
            "drop" | "allowlist" => Some(Action::Drop),
            _ => None,
        }
    }

    /// `keep` or `drop`.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Keep => "keep",
            Action::Drop => "drop",
        }
    }
}

/// Counts of what a [`WholeEvents`] decided.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Events whose records were released.
    pub events_passed: u64,
    /// Events whose records were dropped.
    pub events_dropped: u64,
    /// Records released.
    pub records_passed: u64,
    /// Records dropped.
    pub records_dropped: u64,
}

#[derive(Debug)]
struct Held<T> {
    matched: bool,
    items: Vec<T>,
}

/// Holds the records of open events until their event's fate is known.
#[derive(Debug)]
pub struct WholeEvents<T> {
    action: Action,
    open: BTreeMap<u64, Held<T>>,
    /// Emptied buffers, so that holding an event does not allocate.
    spare: Vec<Vec<T>>,
    held: usize,
    counts: Counts,
}

impl<T> WholeEvents<T> {
    /// Nothing held; matching events are kept or dropped as `action` says.
    pub fn new(action: Action) -> WholeEvents<T> {
        WholeEvents {
            action,
            open: BTreeMap::new(),
            spare: Vec::new(),
            held: 0,
            counts: Counts::default(),
        }
    }

    /// The action.
    pub fn action(&self) -> Action {
        self.action
    }

    /// Takes one record (`item`) of `event`; `matched` is whether the
    /// expression is true for it, `ends` whether it is the event's last. If
    /// the event ends, its records go to `release` (in order) or are
    /// dropped, and the result says which (`Some(true)`: released); `None`
    /// while the event is still open.
    pub fn push(
        &mut self,
        event: u64,
        matched: bool,
        ends: bool,
        item: T,
        release: &mut impl FnMut(T),
    ) -> Option<bool> {
        if !ends {
            let spare = &mut self.spare;
            let held = self.open.entry(event).or_insert_with(|| Held {
                matched: false,
                items: spare.pop().unwrap_or_default(),
            });
            held.matched |= matched;
            held.items.push(item);
            self.held += 1;
            return None;
        }
        match self.open.remove(&event) {
            None => {
                let pass = self.action.passes(matched);
                self.count(pass, 1);
                if pass {
                    release(item);
                }
                Some(pass)
            }
            Some(mut held) => {
                held.matched |= matched;
                held.items.push(item);
                self.held += 1;
                Some(self.finish(held, release))
            }
        }
    }

    /// Ends `event` (it ended without a last record of its own: a timeout,
    /// the open-event limit, shutdown) and says whether its records were
    /// released; `None` for an event that holds nothing.
    pub fn close(&mut self, event: u64, release: &mut impl FnMut(T)) -> Option<bool> {
        let held = self.open.remove(&event)?;
        Some(self.finish(held, release))
    }

    /// Ends every held event, oldest (lowest id) first.
    pub fn close_all(&mut self, release: &mut impl FnMut(T)) {
        while let Some((_, held)) = self.open.pop_first() {
            self.finish(held, release);
        }
    }

    fn finish(&mut self, mut held: Held<T>, release: &mut impl FnMut(T)) -> bool {
        let n = held.items.len();
        self.held -= n;
        let pass = self.action.passes(held.matched);
        self.count(pass, n as u64);
        if pass {
            for item in held.items.drain(..) {
                release(item);
            }
        } else {
            held.items.clear();
        }
        self.spare.push(held.items);
        pass
    }

    fn count(&mut self, pass: bool, records: u64) {
        let c = &mut self.counts;
        if pass {
            c.events_passed += 1;
            c.records_passed += records;
        } else {
            c.events_dropped += 1;
            c.records_dropped += records;
        }
    }

    /// Records held, waiting for their event to end.
    pub fn held(&self) -> usize {
        self.held
    }

    /// Events held.
    pub fn held_events(&self) -> usize {
        self.open.len()
    }

    /// The first record of the oldest held event (the lowest event id):
    /// nothing at or after it has been released on its behalf.
    pub fn oldest_held(&self) -> Option<&T> {
        self.open.values().next().and_then(|h| h.items.first())
    }

    /// What has been decided so far.
    pub fn counts(&self) -> Counts {
        self.counts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(action: Action, steps: &[(u64, bool, bool, u32)]) -> (Vec<u32>, WholeEvents<u32>) {
        let mut w = WholeEvents::new(action);
        let mut out = Vec::new();
        for &(event, matched, ends, item) in steps {
            let decided = w.push(event, matched, ends, item, &mut |i| out.push(i));
            assert_eq!(decided.is_some(), ends);
        }
        (out, w)
    }

    #[test]
    fn any_matching_record_decides_for_the_event() {
        // Event 1: records 10, 11, 12 (11 matches); event 2 interleaved,
        // none matching; event 3 a single matching record.
        let steps = [
            (1, false, false, 10),
            (2, false, false, 20),
            (1, true, false, 11),
            (3, true, true, 30),
            (2, false, true, 21),
            (1, false, true, 12),
        ];
        let (out, w) = run(Action::Keep, &steps);
        assert_eq!(out, [30, 10, 11, 12]);
        assert_eq!(
            w.counts(),
            Counts {
                events_passed: 2,
                events_dropped: 1,
                records_passed: 4,
                records_dropped: 2
            }
        );
        let (out, _) = run(Action::Drop, &steps);
        assert_eq!(out, [20, 21]);
    }

    #[test]
    fn close_and_close_all() {
        let (mut out, mut w) = run(
            Action::Drop,
            &[
                (5, false, false, 50),
                (4, false, false, 40),
                (6, true, false, 60),
            ],
        );
        assert!(out.is_empty());
        assert_eq!((w.held(), w.held_events()), (3, 3));
        assert_eq!(w.oldest_held(), Some(&40));
        assert_eq!(w.close(5, &mut |i| out.push(i)), Some(true));
        assert_eq!(w.close(99, &mut |i| out.push(i)), None);
        assert_eq!(out, [50]);
        w.close_all(&mut |i| out.push(i));
        assert_eq!(out, [50, 40]);
        assert_eq!((w.held(), w.held_events(), w.oldest_held()), (0, 0, None));
        assert_eq!(w.counts().records_dropped, 1);
    }

    #[test]
    fn action_names() {
        assert_eq!(Action::from_name("AllowList"), Some(Action::Drop));
        assert_eq!(Action::from_name("blocklist"), Some(Action::Keep));
        assert_eq!(Action::from_name("keep"), Some(Action::Keep));
        assert_eq!(Action::from_name("drop"), Some(Action::Drop));
        assert_eq!(Action::from_name("deny"), None);
        assert!(Action::Keep.passes(true) && !Action::Keep.passes(false));
        assert!(!Action::Drop.passes(true) && Action::Drop.passes(false));
    }
}
