//! When to log record loss, and what each line says.
//!
//! Loss can come in a flood (a full disk loses every record read), so it
//! cannot be logged record by record; but an administrator reading the log
//! must find every lost record accounted for. A [`LossLog`] (one per input,
//! one per plugin) therefore says at once that loss started, then at most
//! one line per [`INTERVAL`] with what was lost since the previous line and
//! the running total, and a last line for whatever was still owed once the
//! loss stops ([`LossLog::flush`], which the owner calls periodically and at
//! the end). The totals in the log always reach the counters.

use std::time::{Duration, Instant};

/// Shortest time between two loss lines of one input or plugin.
pub const INTERVAL: Duration = Duration::from_secs(5);

/// What one loss line reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Loss {
    /// Records lost since the previous line.
    pub since_last: u64,
    /// Records lost in all (the counter when the line is due).
    pub total: u64,
    /// Why they were lost.
    pub why: &'static str,
}

/// The loss lines of one input or plugin.
#[derive(Debug, Default)]
pub struct LossLog {
    last_line: Option<Instant>,
    unreported: u64,
    why: &'static str,
}

impl LossLog {
    /// Counts `n` more records lost for `why`; `total` is the loss counter
    /// once they are counted. Returns the line to log now, if one is due: a
    /// first loss at once, later ones once per [`INTERVAL`]. When the reason
    /// changes, what was owed for the old one is reported at once.
    pub fn lost(&mut self, n: u64, why: &'static str, total: u64, now: Instant) -> Option<Loss> {
        if n == 0 {
            return None;
        }
        let owed = (self.unreported > 0 && self.why != why).then(|| self.take(total - n, now));
        self.unreported += n;
        self.why = why;
        owed.or_else(|| self.flush(total, now, false))
    }

    /// The line still owed, if any, once [`INTERVAL`] has passed since the
    /// last one (at once with `now_anyway`); `total` is the loss counter.
    pub fn flush(&mut self, total: u64, now: Instant, now_anyway: bool) -> Option<Loss> {
        let due = self
            .last_line
            .is_none_or(|t| now.saturating_duration_since(t) >= INTERVAL);
        (self.unreported > 0 && (due || now_anyway)).then(|| self.take(total, now))
    }

    fn take(&mut self, total: u64, now: Instant) -> Loss {
        self.last_line = Some(now);
        Loss {
            since_last: std::mem::take(&mut self.unreported),
            total,
            why: self.why,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_rate_limited_and_add_up_to_the_total() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut log = LossLog::default();
        let mut total = 0;
        let mut lines = Vec::new();
        for (i, n) in [15u64, 100, 1000, 7].into_iter().enumerate() {
            total += n;
            lines.extend(log.lost(n, "full", total, ms(i as u64 * 1000)));
        }
        // The first loss at once, the rest owed until the interval passed.
        assert_eq!(
            lines,
            [Loss {
                since_last: 15,
                total: 15,
                why: "full"
            }]
        );
        assert_eq!(log.flush(total, ms(4000), false), None, "too early");
        let later = log.flush(total, ms(5000), false).expect("owed");
        assert_eq!((later.since_last, later.total), (1107, 1122));
        assert_eq!(log.flush(total, ms(20_000), true), None, "nothing owed");

        total += 3;
        assert_eq!(log.lost(3, "full", total, ms(6000)), None);
        let last = log.flush(total, ms(6001), true).expect("at the end");
        assert_eq!((last.since_last, last.total), (3, 1125));
    }

    #[test]
    fn a_new_reason_reports_what_the_old_one_owed() {
        let t0 = Instant::now();
        let mut log = LossLog::default();
        assert!(log.lost(1, "a", 1, t0).is_some());
        assert_eq!(log.lost(4, "a", 5, t0), None);
        let owed = log.lost(2, "b", 7, t0).expect("a's loss, reported");
        assert_eq!((owed.since_last, owed.total, owed.why), (4, 5, "a"));
        let b = log.flush(7, t0, true).expect("b's");
        assert_eq!((b.since_last, b.total, b.why), (2, 7, "b"));
    }
}
