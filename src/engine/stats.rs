//! Counters: what every input and every plugin has done, as the admin (and
//! later the D-Bus interface and `audispctl`) sees it.
//!
//! Counters are atomics updated on the hot paths without locks; a
//! [`Snapshot`] is a consistent-enough copy taken for logging, the state file
//! and the `STATS` protocol message.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

/// Counters of one input (stdin or a connected input plugin).
#[derive(Debug, Default)]
pub struct InputCounters {
    /// Records read from the input: stored in the journal, waiting in
    /// memory for it (`waiting`), or lost (`lost`).
    pub records: AtomicU64,
    /// Bytes of record text accepted.
    pub bytes: AtomicU64,
    /// Frames or lines that were not records and were skipped.
    pub malformed: AtomicU64,
    /// Records delivered although their type, time or serial did not parse.
    pub unparsed: AtomicU64,
    /// Records an input sent again that were already stored.
    pub duplicates: AtomicU64,
    /// Records read from the input that could not be stored and were lost
    /// (only standard input can lose records, and only while the journal
    /// cannot be written).
    pub lost: AtomicU64,
    /// Records read that wait in memory because the journal cannot be
    /// written now.
    pub waiting: AtomicU64,
    /// Records that came back to this dispatcher (their first origin is
    /// its own journal: a forwarding loop), dropped and not stored.
    pub looped: AtomicU64,
    /// Records the input's filter withheld: accepted (acknowledged to an
    /// input plugin) but never journaled. Not part of `records`.
    pub filtered: AtomicU64,
}

/// Counters of one plugin.
#[derive(Debug, Default)]
pub struct PluginCounters {
    /// Records sent to the plugin (resends included).
    pub delivered: AtomicU64,
    /// Records the plugin acknowledged (or consumed, for stock plugins).
    pub acked: AtomicU64,
    /// Records the plugin will never get (overflow policy, suspension, or
    /// the journal's size limit): the sum of `dropped_by`.
    pub dropped: AtomicU64,
    /// `dropped` by [`DropReason`] (indexed by `reason as usize`).
    pub dropped_by: [AtomicU64; DropReason::ALL.len()],
    /// Connections (re)established.
    pub connects: AtomicU64,
    /// Connection attempts that failed, and connections lost.
    pub reconnects: AtomicU64,
    /// Times the dispatcher (re)started the plugin's program.
    pub restarts: AtomicU64,
    /// Commands the plugin sent.
    pub commands: AtomicU64,
    /// Records its filter withheld (the plugin was never meant to get
    /// them; not `dropped`), each counted once however often it is read.
    pub filtered: AtomicU64,
}

/// Why a plugin will never get some records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// `overflow = "drop"`: it was more than `queue_size` records behind.
    Overflow,
    /// `overflow = "spool"`: its backlog outgrew `spool_max`.
    SpoolMax,
    /// Suspended (`audispctl suspend`, `overflow = "suspend"`, an action):
    /// what arrived meanwhile.
    Suspended,
    /// The journal's size limit deleted them before the plugin read them.
    JournalLimit,
    /// A damaged journal segment could not be read.
    Damaged,
}

impl DropReason {
    /// Every reason, in index order.
    pub const ALL: [DropReason; 5] = [
        DropReason::Overflow,
        DropReason::SpoolMax,
        DropReason::Suspended,
        DropReason::JournalLimit,
        DropReason::Damaged,
    ];

    /// The name in the state report, `STATS` and metrics labels.
    pub fn name(self) -> &'static str {
        match self {
            DropReason::Overflow => "overflow",
            DropReason::SpoolMax => "spool_max",
            DropReason::Suspended => "suspended",
            DropReason::JournalLimit => "journal_limit",
            DropReason::Damaged => "damaged",
        }
    }
}

impl PluginCounters {
    /// Counts `n` records the plugin will never get, for `reason`.
    pub fn drop_records(&self, reason: DropReason, n: u64) {
        add(&self.dropped, n);
        add(&self.dropped_by[reason as usize], n);
    }

    /// `dropped_by` by reason name, every reason present.
    pub fn dropped_by_reason(&self) -> BTreeMap<String, u64> {
        DropReason::ALL
            .iter()
            .map(|&r| (r.name().to_string(), get(&self.dropped_by[r as usize])))
            .collect()
    }
}

/// Increments a counter.
pub fn add(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

/// Decrements a counter.
pub fn sub(c: &AtomicU64, n: u64) {
    c.fetch_sub(n, Ordering::Relaxed);
}

/// Reads a counter.
pub fn get(c: &AtomicU64) -> u64 {
    c.load(Ordering::Relaxed)
}

/// An input's counters at one moment.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct InputSnapshot {
    /// Input name (`stdin` or the input plugin's name).
    pub name: String,
    /// Whether the input is connected (stdin: still open).
    pub connected: bool,
    /// See [`InputCounters`].
    pub records: u64,
    /// See [`InputCounters`].
    pub bytes: u64,
    /// See [`InputCounters`].
    pub malformed: u64,
    /// See [`InputCounters`].
    pub unparsed: u64,
    /// See [`InputCounters`].
    pub duplicates: u64,
    /// See [`InputCounters`].
    pub lost: u64,
    /// See [`InputCounters`].
    pub waiting: u64,
    /// See [`InputCounters`].
    pub looped: u64,
    pub filtered: u64,
}

impl InputSnapshot {
    /// Copies the counters.
    pub fn of(name: &str, connected: bool, c: &InputCounters) -> InputSnapshot {
        InputSnapshot {
            name: name.to_string(),
            connected,
            records: get(&c.records),
            bytes: get(&c.bytes),
            malformed: get(&c.malformed),
            unparsed: get(&c.unparsed),
            duplicates: get(&c.duplicates),
            lost: get(&c.lost),
            waiting: get(&c.waiting),
            looped: get(&c.looped),
            filtered: get(&c.filtered),
        }
    }
}

/// A plugin's state and counters at one moment.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct PluginSnapshot {
    /// Plugin name (its plugins.d file name).
    pub name: String,
    /// `connected`, `connecting`, `suspended`, `stopped`.
    pub state: String,
    /// Records from the journal not yet acknowledged by the plugin
    /// (whether or not it subscribed to them).
    pub queued: u64,
    /// Of `queued`, those no longer in memory: read back from the journal
    /// on disk when the plugin gets to them.
    pub spooled: u64,
    /// Highest acknowledged journal sequence number.
    pub acked_seq: u64,
    /// See [`PluginCounters`].
    pub delivered: u64,
    /// See [`PluginCounters`].
    pub acked: u64,
    /// See [`PluginCounters`].
    pub dropped: u64,
    /// `dropped` by reason ([`DropReason::name`]), every reason present.
    pub dropped_by_reason: BTreeMap<String, u64>,
    /// See [`PluginCounters`].
    pub connects: u64,
    /// See [`PluginCounters`].
    pub reconnects: u64,
    /// See [`PluginCounters`].
    pub restarts: u64,
    /// See [`PluginCounters`].
    pub commands: u64,
    /// See [`PluginCounters`].
    pub filtered: u64,
}

/// The journal at one moment.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct JournalSnapshot {
    /// Journal identity.
    pub id: String,
    /// Oldest stored sequence number.
    pub start: u64,
    /// Next sequence number.
    pub end: u64,
    /// Sequence number before which everything is on stable storage.
    pub synced: u64,
    /// Bytes on disk.
    pub disk_bytes: u64,
    /// Events still being grouped.
    pub open_events: u64,
}

/// Everything at one moment.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Snapshot {
    /// Seconds since the dispatcher started.
    pub uptime_secs: u64,
    /// The journal.
    pub journal: JournalSnapshot,
    /// Every input seen since start.
    pub inputs: Vec<InputSnapshot>,
    /// Every configured plugin.
    pub plugins: Vec<PluginSnapshot>,
}

impl Snapshot {
    /// Records accepted from every input.
    pub fn records_in(&self) -> u64 {
        self.inputs.iter().map(|i| i.records).sum()
    }

    /// Records lost by every input.
    pub fn records_lost(&self) -> u64 {
        self.inputs.iter().map(|i| i.lost).sum()
    }

    /// The state file written on SIGUSR1, one `key = value` per line like
    /// auditd's, so that admins can read it and scripts can grep it.
    pub fn render_state(&self) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        let j = &self.journal;
        let _ = writeln!(s, "audispd state report");
        let _ = writeln!(s, "uptime = {}s", self.uptime_secs);
        let _ = writeln!(s, "journal id = {}", j.id);
        let _ = writeln!(s, "journal sequence range = {}..{}", j.start, j.end);
        let _ = writeln!(s, "journal synced up to = {}", j.synced);
        let _ = writeln!(s, "journal bytes on disk = {}", j.disk_bytes);
        let _ = writeln!(s, "events being grouped = {}", j.open_events);
        for i in &self.inputs {
            let _ = writeln!(
                s,
                "input {} = {} records={} bytes={} malformed={} unparsed={} duplicates={} lost={} waiting={} looped={} filtered={}",
                i.name,
                if i.connected { "connected" } else { "closed" },
                i.records,
                i.bytes,
                i.malformed,
                i.unparsed,
                i.duplicates,
                i.lost,
                i.waiting,
                i.looped,
                i.filtered
            );
        }
        for p in &self.plugins {
            let _ = writeln!(
                s,
                "plugin {} = {} queued={} spooled={} acked_seq={} delivered={} acked={} dropped={}{} filtered={} connects={} reconnects={} restarts={} commands={}",
                p.name,
                p.state,
                p.queued,
                p.spooled,
                p.acked_seq,
                p.delivered,
                p.acked,
                p.dropped,
                p.dropped_by_reason
                    .iter()
                    .map(|(why, n)| format!(" dropped_{why}={n}"))
                    .collect::<String>(),
                p.filtered,
                p.connects,
                p.reconnects,
                p.restarts,
                p.commands
            );
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_are_counted_in_total_and_by_reason_and_reported() {
        let c = PluginCounters::default();
        c.drop_records(DropReason::Overflow, 3);
        c.drop_records(DropReason::JournalLimit, 2);
        c.drop_records(DropReason::Overflow, 1);
        assert_eq!(get(&c.dropped), 6);
        let by = c.dropped_by_reason();
        let want: BTreeMap<String, u64> = [
            ("damaged", 0),
            ("journal_limit", 2),
            ("overflow", 4),
            ("spool_max", 0),
            ("suspended", 0),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        assert_eq!(by, want);
        let snap = Snapshot {
            uptime_secs: 1,
            journal: JournalSnapshot {
                id: "j".into(),
                start: 1,
                end: 7,
                synced: 7,
                disk_bytes: 10,
                open_events: 0,
            },
            inputs: Vec::new(),
            plugins: vec![PluginSnapshot {
                name: "p".into(),
                state: "connected".into(),
                queued: 0,
                spooled: 0,
                acked_seq: 0,
                delivered: 0,
                acked: 0,
                dropped: 6,
                dropped_by_reason: by,
                connects: 1,
                reconnects: 0,
                restarts: 0,
                commands: 0,
                filtered: 9,
            }],
        };
        let report = snap.render_state();
        assert!(
            report.contains(" dropped=6 dropped_damaged=0 dropped_journal_limit=2 dropped_overflow=4 dropped_spool_max=0 dropped_suspended=0 filtered=9 connects=1 "),
            "{report}"
        );
    }
}
