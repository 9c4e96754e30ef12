//! One report in statsd's line protocol (`NAME:VALUE|c` for counters,
//! `NAME:VALUE|g` for gauges), cut into datagrams.
//!
//! Counters are what happened since the last report: the event counts as
//! they are, audispd's own counters (which only grow, from its start) as
//! the difference to the values the last report saw. A counter smaller than
//! before means audispd restarted: what it shows now all happened since.

use std::collections::HashMap;

use serde_json::Value;

use super::tally::EventCounts;

/// Most bytes in one datagram: what auditd's plugin keeps to, small enough
/// for any path MTU.
pub const MAX_DATAGRAM: usize = 512;

/// A metric name part from a name audispd uses (an input or plugin name):
/// anything but letters, digits, `-` and `_` becomes `_`, so that names
/// never add levels or break the line protocol.
pub fn name_part(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Remembers audispd's counters between reports.
#[derive(Debug, Default)]
pub struct Report {
    /// The value each counter had at the last report.
    last: HashMap<String, u64>,
    /// The deepest plugin queue seen since this plugin started.
    max_depth: u64,
}

/// The lines of one report, before cutting.
struct Lines<'p> {
    prefix: &'p str,
    out: Vec<String>,
}

impl Lines<'_> {
    fn gauge(&mut self, name: &str, v: u64) {
        self.out.push(format!("{}{name}:{v}|g", self.prefix));
    }

    fn counter(&mut self, name: &str, v: u64) {
        self.out.push(format!("{}{name}:{v}|c", self.prefix));
    }
}

fn num(v: &Value, key: &str) -> u64 {
    v.get(key).and_then(Value::as_u64).unwrap_or(0)
}

impl Report {
    /// The difference of counter `name` to the last report, remembering
    /// `now`.
    fn delta(&mut self, name: &str, now: u64) -> u64 {
        let before = self.last.insert(name.to_string(), now);
        match before {
            Some(b) if now >= b => now - b,
            _ => now,
        }
    }

    /// Remembers audispd's counters as a starting point, without reporting
    /// them (what they counted before this plugin ran is no rate of today).
    pub fn baseline(&mut self, stats: &Value) {
        let _ = self.lines("", &EventCounts::default(), Some(stats));
    }

    /// The datagrams of a report with the event counts `events` and
    /// audispd's `stats` (its `STATS` answer; None when it could not be
    /// had), metric names starting with `prefix` (empty, or ending in `.`).
    pub fn datagrams(
        &mut self,
        prefix: &str,
        events: &EventCounts,
        stats: Option<&Value>,
    ) -> Vec<Vec<u8>> {
        cut(&self.lines(prefix, events, stats))
    }

    fn lines(&mut self, prefix: &str, events: &EventCounts, stats: Option<&Value>) -> Vec<String> {
        let mut l = Lines {
            prefix,
            out: Vec::new(),
        };
        for (name, v) in events.named() {
            l.counter(name, v);
        }
        let Some(stats) = stats else {
            return l.out;
        };
        let empty = Vec::new();
        let inputs = stats["inputs"].as_array().unwrap_or(&empty);
        let plugins = stats["plugins"].as_array().unwrap_or(&empty);
        let depth = plugins.iter().map(|p| num(p, "queued")).max().unwrap_or(0);
        self.max_depth = self.max_depth.max(depth);
        l.gauge("audispd.plugin_current_depth", depth);
        l.gauge("audispd.plugin_max_depth", self.max_depth);
        let j = &stats["journal"];
        l.gauge(
            "audispd.journal_records",
            num(j, "end").saturating_sub(num(j, "start")),
        );
        l.gauge("audispd.journal_bytes", num(j, "disk_bytes"));
        l.gauge("audispd.open_events", num(j, "open_events"));
        let records_in = inputs.iter().map(|i| num(i, "records")).sum();
        let lost = inputs.iter().map(|i| num(i, "lost")).sum::<u64>()
            + plugins.iter().map(|p| num(p, "dropped")).sum::<u64>();
        let d = self.delta("audispd.records_in", records_in);
        l.counter("audispd.records_in", d);
        let d = self.delta("audispd.records_lost", lost);
        l.counter("audispd.records_lost", d);
        for i in inputs {
            let base = format!(
                "audispd.input.{}",
                name_part(i["name"].as_str().unwrap_or("unnamed"))
            );
            l.gauge(
                &format!("{base}.connected"),
                u64::from(i["connected"].as_bool().unwrap_or(false)),
            );
            for key in [
                "records",
                "bytes",
                "malformed",
                "unparsed",
                "duplicates",
                "lost",
            ] {
                let name = format!("{base}.{key}");
                let d = self.delta(&name, num(i, key));
                l.counter(&name, d);
            }
        }
        for p in plugins {
            let base = format!(
                "audispd.plugin.{}",
                name_part(p["name"].as_str().unwrap_or("unnamed"))
            );
            l.gauge(
                &format!("{base}.connected"),
                u64::from(p["state"].as_str() == Some("connected")),
            );
            l.gauge(&format!("{base}.queued"), num(p, "queued"));
            l.gauge(&format!("{base}.spooled"), num(p, "spooled"));
            for key in [
                "delivered",
                "acked",
                "dropped",
                "connects",
                "reconnects",
                "restarts",
                "commands",
            ] {
                let name = format!("{base}.{key}");
                let d = self.delta(&name, num(p, key));
                l.counter(&name, d);
            }
            if let Some(by) = p["dropped_by_reason"].as_object() {
                for (why, n) in by {
                    let name = format!("{base}.dropped_{}", name_part(why));
                    let d = self.delta(&name, n.as_u64().unwrap_or(0));
                    l.counter(&name, d);
                }
            }
        }
        l.out
    }
}

/// Lines joined by newlines into datagrams of at most [`MAX_DATAGRAM`]
/// bytes (a longer line goes alone).
fn cut(lines: &[String]) -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = Vec::new();
    let mut cur: Vec<u8> = Vec::new();
    for line in lines {
        if !cur.is_empty() && cur.len() + 1 + line.len() > MAX_DATAGRAM {
            out.push(std::mem::take(&mut cur));
        }
        if !cur.is_empty() {
            cur.push(b'\n');
        }
        cur.extend_from_slice(line.as_bytes());
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(records: u64, delivered: u64, overflow: u64) -> Value {
        serde_json::json!({
            "uptime_secs": 3,
            "journal": {"id": "x", "start": 1, "end": 1 + records, "synced": 1, "disk_bytes": 4096, "open_events": 2},
            "inputs": [{"name": "stdin", "connected": true, "records": records, "bytes": 10 * records,
                        "malformed": 0, "unparsed": 0, "duplicates": 0, "lost": 1}],
            "plugins": [{"name": "my.plugin", "state": "connected", "queued": records - delivered,
                         "spooled": 0, "acked_seq": delivered, "delivered": delivered, "acked": delivered,
                         "dropped": overflow, "dropped_by_reason": {"overflow": overflow, "damaged": 0},
                         "connects": 1, "reconnects": 0, "restarts": 0, "commands": 0}]
        })
    }

    fn text(d: &[Vec<u8>]) -> Vec<String> {
        d.iter()
            .flat_map(|g| {
                String::from_utf8(g.clone())
                    .unwrap()
                    .lines()
                    .map(str::to_string)
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    #[test]
    fn counters_are_differences_gauges_are_values() {
        let mut r = Report::default();
        r.baseline(&stats(100, 90, 0));
        let events = EventCounts {
            total: 5,
            avc: 2,
            ..EventCounts::default()
        };
        let lines = text(&r.datagrams("host1.", &events, Some(&stats(150, 120, 4))));
        for want in [
            "host1.events.total_count:5|c",
            "host1.events.avc_count:2|c",
            "host1.events.logins_failed:0|c",
            "host1.audispd.records_in:50|c",
            "host1.audispd.records_lost:4|c",
            "host1.audispd.plugin_current_depth:30|g",
            "host1.audispd.plugin_max_depth:30|g",
            "host1.audispd.journal_records:150|g",
            "host1.audispd.input.stdin.records:50|c",
            "host1.audispd.input.stdin.lost:0|c",
            "host1.audispd.input.stdin.connected:1|g",
            "host1.audispd.plugin.my_plugin.delivered:30|c",
            "host1.audispd.plugin.my_plugin.dropped_overflow:4|c",
            "host1.audispd.plugin.my_plugin.queued:30|g",
            "host1.audispd.plugin.my_plugin.connected:1|g",
        ] {
            assert!(lines.iter().any(|l| l == want), "{want} not in {lines:#?}");
        }
        // audispd restarted: its counters start again from 0.
        let lines = text(&r.datagrams("", &EventCounts::default(), Some(&stats(7, 7, 0))));
        assert!(
            lines.iter().any(|l| l == "audispd.records_in:7|c"),
            "{lines:#?}"
        );
        assert!(
            lines.iter().any(|l| l == "audispd.plugin_max_depth:30|g"),
            "{lines:#?}"
        );
        assert!(
            lines
                .iter()
                .any(|l| l == "audispd.plugin_current_depth:0|g"),
            "{lines:#?}"
        );
    }

    #[test]
    fn without_stats_only_events_are_sent_and_datagrams_stay_small() {
        let mut r = Report::default();
        let d = r.datagrams("", &EventCounts::default(), None);
        assert_eq!(text(&d).len(), 8);
        let d = r.datagrams(
            "a.long.prefix.for.many.hosts.",
            &EventCounts::default(),
            Some(&stats(9, 9, 0)),
        );
        assert!(d.len() > 1);
        assert!(d
            .iter()
            .all(|g| g.len() <= MAX_DATAGRAM && !g.ends_with(b"\n")));
    }

    #[test]
    fn names_never_add_levels() {
        assert_eq!(name_part("a.b:c|d@e f"), "a_b_c_d_e_f");
        assert_eq!(name_part("stdin"), "stdin");
    }
}
