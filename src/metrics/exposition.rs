//! The engine's counters (a [`Snapshot`]) and the process's own figures as
//! Prometheus text (format 0.0.4) or OpenMetrics text (1.0.0): one metric
//! family per counter of the state report, with `# HELP` and `# TYPE`,
//! labels for the input, plugin, state and drop reason, label values and
//! help escaped as each format requires.
//!
//! Every family is documented in `docs/audispd.8.md` (METRICS); a test holds
//! the two together ([`family_names`]).

use std::fmt::Write;

use super::process::ProcessStats;
use crate::engine::stats::Snapshot;

/// Which text format to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Prometheus text format 0.0.4 (`text/plain; version=0.0.4`).
    Prometheus,
    /// OpenMetrics 1.0.0 (`application/openmetrics-text; version=1.0.0`).
    OpenMetrics,
}

impl Format {
    /// The `Content-Type` of an answer in this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Prometheus => "text/plain; version=0.0.4; charset=utf-8",
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }

    /// The format a scraper's `Accept` header prefers: OpenMetrics when it
    /// is accepted with at least the weight of plain text, Prometheus text
    /// otherwise (also without the header).
    pub fn negotiate(accept: Option<&str>) -> Format {
        let Some(accept) = accept else {
            return Format::Prometheus;
        };
        let weight = |wanted: &str| -> f32 {
            accept
                .split(',')
                .filter_map(|range| {
                    let mut params = range.split(';').map(str::trim);
                    let media = params.next()?.to_ascii_lowercase();
                    (media == wanted).then(|| {
                        params
                            .find_map(|p| p.strip_prefix("q="))
                            .and_then(|q| q.parse::<f32>().ok())
                            .unwrap_or(1.0)
                    })
                })
                .fold(0.0, f32::max)
        };
        let om = weight("application/openmetrics-text");
        if om > 0.0 && om >= weight("text/plain") {
            Format::OpenMetrics
        } else {
            Format::Prometheus
        }
    }
}

/// What kind of metric a family is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Only goes up (resets when the process restarts); samples end in
    /// `_total`.
    Counter,
    /// Goes up and down.
    Gauge,
    /// Constant 1, the labels carry the information; samples end in `_info`.
    Info,
}

/// One metric family: its name without the `_total`/`_info` suffix, help,
/// kind, and samples (labels, value).
struct Family {
    name: &'static str,
    help: &'static str,
    kind: Kind,
    samples: Vec<(Vec<(&'static str, String)>, Value)>,
}

/// A sample's value.
#[derive(Debug, Clone, Copy)]
enum Value {
    Int(u64),
    Float(f64),
}

impl Family {
    fn new(name: &'static str, kind: Kind, help: &'static str) -> Family {
        Family {
            name,
            help,
            kind,
            samples: Vec::new(),
        }
    }

    fn one(mut self, v: Value) -> Family {
        self.samples.push((Vec::new(), v));
        self
    }

    fn add(&mut self, labels: Vec<(&'static str, String)>, v: u64) {
        self.samples.push((labels, Value::Int(v)));
    }
}

/// The metric families of a snapshot, in output order.
fn families(snap: &Snapshot, process: Option<&ProcessStats>, version: &str) -> Vec<Family> {
    use Kind::{Counter, Gauge, Info};
    let j = &snap.journal;
    let mut out = vec![
        {
            let mut f = Family::new("audisp_build", Info, "The audispd version.");
            f.add(vec![("version", version.to_string())], 1);
            f
        },
        {
            let mut f = Family::new(
                "audisp_journal",
                Info,
                "The journal's identity (it changes when the journal is created anew).",
            );
            f.add(vec![("journal_id", j.id.clone())], 1);
            f
        },
        Family::new(
            "audisp_journal_first_sequence",
            Gauge,
            "Sequence number of the oldest record in the journal.",
        )
        .one(Value::Int(j.start)),
        Family::new(
            "audisp_journal_next_sequence",
            Gauge,
            "Sequence number the next record will get.",
        )
        .one(Value::Int(j.end)),
        Family::new(
            "audisp_journal_synced_sequence",
            Gauge,
            "Every record before this sequence number is on stable storage.",
        )
        .one(Value::Int(j.synced)),
        Family::new(
            "audisp_journal_records",
            Gauge,
            "Records held in the journal.",
        )
        .one(Value::Int(j.end.saturating_sub(j.start))),
        Family::new(
            "audisp_journal_disk_bytes",
            Gauge,
            "Bytes of journal segments on disk.",
        )
        .one(Value::Int(j.disk_bytes)),
        Family::new(
            "audisp_open_events",
            Gauge,
            "Events whose records are still being grouped.",
        )
        .one(Value::Int(j.open_events)),
    ];

    let mut connected = Family::new(
        "audisp_input_connected",
        Gauge,
        "1 while the input is connected (standard input: open), else 0.",
    );
    let mut records = Family::new(
        "audisp_input_records",
        Counter,
        "Records accepted from the input into the journal.",
    );
    let mut bytes = Family::new(
        "audisp_input_bytes",
        Counter,
        "Bytes of record text accepted from the input.",
    );
    let mut malformed = Family::new(
        "audisp_input_malformed_frames",
        Counter,
        "Frames or lines from the input that were not records and were skipped.",
    );
    let mut unparsed = Family::new(
        "audisp_input_unparsed_records",
        Counter,
        "Records stored although their type, time or serial did not parse.",
    );
    let mut duplicates = Family::new(
        "audisp_input_duplicate_records",
        Counter,
        "Records the input sent again that were already stored (not stored twice).",
    );
    let mut lost = Family::new(
        "audisp_input_records_lost",
        Counter,
        "Records read from the input that could not be stored (the journal could not be written).",
    );
    let mut waiting = Family::new(
        "audisp_input_records_waiting",
        Gauge,
        "Records read from the input that wait in memory for the journal to be writable.",
    );
    let mut looped = Family::new(
        "audisp_input_records_looped",
        Counter,
        "Records of this host that came back on the input (a forwarding loop), dropped.",
    );
    let mut input_filtered = Family::new(
        "audisp_input_records_filtered",
        Counter,
        "Records the input's filter withheld before the journal (accepted, not stored).",
    );
    for i in &snap.inputs {
        let l = || vec![("input", i.name.clone())];
        looped.add(l(), i.looped);
        input_filtered.add(l(), i.filtered);
        connected.add(l(), u64::from(i.connected));
        records.add(l(), i.records);
        bytes.add(l(), i.bytes);
        malformed.add(l(), i.malformed);
        unparsed.add(l(), i.unparsed);
        duplicates.add(l(), i.duplicates);
        lost.add(l(), i.lost);
        waiting.add(l(), i.waiting);
    }
    out.extend([
        connected,
        records,
        bytes,
        malformed,
        unparsed,
        duplicates,
        lost,
        waiting,
        looped,
        input_filtered,
    ]);

    let mut state = Family::new(
        "audisp_plugin_state",
        Gauge,
        "1 for the plugin's current state (connected, connecting, suspended, stopped), 0 for the others.",
    );
    let mut queued = Family::new(
        "audisp_plugin_records_queued",
        Gauge,
        "Journal records the plugin has not acknowledged yet.",
    );
    let mut spooled = Family::new(
        "audisp_plugin_records_spooled",
        Gauge,
        "Of the queued records, those no longer in memory (read back from disk).",
    );
    let mut acked_seq = Family::new(
        "audisp_plugin_acked_sequence",
        Gauge,
        "Highest journal sequence number the plugin acknowledged.",
    );
    let mut delivered = Family::new(
        "audisp_plugin_records_delivered",
        Counter,
        "Records sent to the plugin, resends included.",
    );
    let mut acked = Family::new(
        "audisp_plugin_records_acked",
        Counter,
        "Records the plugin acknowledged (stock plugins: consumed).",
    );
    let mut dropped = Family::new(
        "audisp_plugin_records_dropped",
        Counter,
        "Records the plugin will never get, by reason (overflow, spool_max, suspended, journal_limit, damaged).",
    );
    let mut connects = Family::new(
        "audisp_plugin_connects",
        Counter,
        "Connections to the plugin established.",
    );
    let mut reconnects = Family::new(
        "audisp_plugin_reconnects",
        Counter,
        "Connection attempts that failed and connections lost.",
    );
    let mut restarts = Family::new(
        "audisp_plugin_restarts",
        Counter,
        "Times audispd (re)started the plugin's program.",
    );
    let mut commands = Family::new(
        "audisp_plugin_commands",
        Counter,
        "Commands (action requests) the plugin sent.",
    );
    let mut filtered = Family::new(
        "audisp_plugin_records_filtered",
        Counter,
        "Records the plugin's filter withheld (not meant for it; not dropped).",
    );
    for p in &snap.plugins {
        let l = || vec![("plugin", p.name.clone())];
        filtered.add(l(), p.filtered);
        for s in ["connected", "connecting", "suspended", "stopped"] {
            state.add(
                vec![("plugin", p.name.clone()), ("state", s.to_string())],
                u64::from(p.state == s),
            );
        }
        queued.add(l(), p.queued);
        spooled.add(l(), p.spooled);
        acked_seq.add(l(), p.acked_seq);
        delivered.add(l(), p.delivered);
        acked.add(l(), p.acked);
        for (why, n) in &p.dropped_by_reason {
            dropped.add(
                vec![("plugin", p.name.clone()), ("reason", why.clone())],
                *n,
            );
        }
        connects.add(l(), p.connects);
        reconnects.add(l(), p.reconnects);
        restarts.add(l(), p.restarts);
        commands.add(l(), p.commands);
    }
    out.extend([
        state, queued, spooled, acked_seq, delivered, acked, dropped, filtered, connects,
        reconnects, restarts, commands,
    ]);

    if let Some(p) = process {
        out.extend([
            Family::new(
                "process_cpu_seconds",
                Counter,
                "User and system CPU time spent by audispd, in seconds.",
            )
            .one(Value::Float(p.cpu_seconds)),
            Family::new(
                "process_resident_memory_bytes",
                Gauge,
                "Resident memory of audispd, in bytes.",
            )
            .one(Value::Int(p.resident_bytes)),
            Family::new(
                "process_virtual_memory_bytes",
                Gauge,
                "Virtual memory of audispd, in bytes.",
            )
            .one(Value::Int(p.virtual_bytes)),
            Family::new(
                "process_open_fds",
                Gauge,
                "File descriptors audispd has open.",
            )
            .one(Value::Int(p.open_fds)),
            Family::new(
                "process_max_fds",
                Gauge,
                "Most file descriptors audispd may open.",
            )
            .one(Value::Int(p.max_fds)),
            Family::new(
                "process_start_time_seconds",
                Gauge,
                "Start time of audispd since the Unix epoch, in seconds.",
            )
            .one(Value::Float(p.start_time_seconds)),
        ]);
    }
    out
}

/// The names of every family the exposition may hold, as written in the
/// `# TYPE` lines of Prometheus text (for the documentation check).
pub fn family_names(snap: &Snapshot, process: Option<&ProcessStats>) -> Vec<String> {
    families(snap, process, "")
        .iter()
        .map(sample_name)
        .collect()
}

/// The name samples of `f` carry, and which its `# TYPE` line names in
/// Prometheus text.
fn sample_name(f: &Family) -> String {
    match f.kind {
        Kind::Counter => format!("{}_total", f.name),
        Kind::Info => format!("{}_info", f.name),
        Kind::Gauge => f.name.to_string(),
    }
}

/// `text` escaped as a label value (both formats), or as help text
/// (OpenMetrics also escapes `"` there; Prometheus text does not).
fn escape(text: &str, quote: bool) -> String {
    let mut s = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '\n' => s.push_str("\\n"),
            '"' if quote => s.push_str("\\\""),
            c => s.push(c),
        }
    }
    s
}

/// The whole exposition of `snap` (and `process`, if read) in `format`.
pub fn render(
    snap: &Snapshot,
    process: Option<&ProcessStats>,
    version: &str,
    format: Format,
) -> String {
    let mut s = String::new();
    for f in families(snap, process, version) {
        let sample = sample_name(&f);
        let (meta, kind) = match (format, f.kind) {
            (Format::Prometheus, Kind::Counter) => (sample.as_str(), "counter"),
            (Format::Prometheus, _) => (sample.as_str(), "gauge"),
            (Format::OpenMetrics, Kind::Counter) => (f.name, "counter"),
            (Format::OpenMetrics, Kind::Info) => (f.name, "info"),
            (Format::OpenMetrics, Kind::Gauge) => (f.name, "gauge"),
        };
        let help = escape(f.help, format == Format::OpenMetrics);
        let _ = writeln!(s, "# HELP {meta} {help}");
        let _ = writeln!(s, "# TYPE {meta} {kind}");
        for (labels, value) in &f.samples {
            s.push_str(&sample);
            if !labels.is_empty() {
                s.push('{');
                for (i, (k, v)) in labels.iter().enumerate() {
                    if i > 0 {
                        s.push(',');
                    }
                    let _ = write!(s, "{k}=\"{}\"", escape(v, true));
                }
                s.push('}');
            }
            let _ = match value {
                Value::Int(n) => writeln!(s, " {n}"),
                Value::Float(x) => writeln!(s, " {x}"),
            };
        }
    }
    if format == Format::OpenMetrics {
        s.push_str("# EOF\n");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::stats::{InputSnapshot, JournalSnapshot, PluginSnapshot};

    fn snapshot() -> Snapshot {
        Snapshot {
            uptime_secs: 5,
            journal: JournalSnapshot {
                id: "0123456789abcdef0123456789abcdef".into(),
                start: 3,
                end: 10,
                synced: 9,
                disk_bytes: 4096,
                open_events: 1,
            },
            inputs: vec![InputSnapshot {
                name: "stdin".into(),
                connected: true,
                records: 7,
                bytes: 700,
                malformed: 1,
                unparsed: 0,
                duplicates: 2,
                lost: 0,
                waiting: 0,
                looped: 0,
                filtered: 3,
            }],
            plugins: vec![PluginSnapshot {
                name: "we\"ird\\name\n".into(),
                state: "suspended".into(),
                queued: 4,
                spooled: 1,
                acked_seq: 5,
                delivered: 6,
                acked: 5,
                dropped: 3,
                dropped_by_reason: [("overflow".to_string(), 3), ("damaged".to_string(), 0)]
                    .into_iter()
                    .collect(),
                connects: 1,
                reconnects: 2,
                restarts: 0,
                commands: 0,
                filtered: 8,
            }],
        }
    }

    #[test]
    fn prometheus_text_has_help_type_and_escaped_labels() {
        let p = ProcessStats {
            cpu_seconds: 1.5,
            resident_bytes: 1 << 20,
            virtual_bytes: 1 << 30,
            open_fds: 9,
            max_fds: 1024,
            start_time_seconds: 1_700_000_000.25,
        };
        let t = render(&snapshot(), Some(&p), "0.1.0", Format::Prometheus);
        for line in [
            "# HELP audisp_build_info The audispd version.",
            "# TYPE audisp_build_info gauge",
            "audisp_build_info{version=\"0.1.0\"} 1",
            "audisp_journal_records 7",
            "# TYPE audisp_input_records_total counter",
            "audisp_input_records_total{input=\"stdin\"} 7",
            "audisp_input_connected{input=\"stdin\"} 1",
            "audisp_plugin_state{plugin=\"we\\\"ird\\\\name\\n\",state=\"suspended\"} 1",
            "audisp_plugin_state{plugin=\"we\\\"ird\\\\name\\n\",state=\"connected\"} 0",
            "audisp_plugin_records_dropped_total{plugin=\"we\\\"ird\\\\name\\n\",reason=\"overflow\"} 3",
            "audisp_plugin_records_filtered_total{plugin=\"we\\\"ird\\\\name\\n\"} 8",
            "audisp_input_records_filtered_total{input=\"stdin\"} 3",
            "# TYPE process_cpu_seconds_total counter",
            "process_cpu_seconds_total 1.5",
            "process_start_time_seconds 1700000000.25",
        ] {
            assert!(t.lines().any(|l| l == line), "{line:?} missing in\n{t}");
        }
        assert!(!t.contains("# EOF"));
    }

    #[test]
    fn openmetrics_names_families_without_suffixes_and_ends_with_eof() {
        let t = render(&snapshot(), None, "0.1.0", Format::OpenMetrics);
        for line in [
            "# TYPE audisp_build info",
            "audisp_build_info{version=\"0.1.0\"} 1",
            "# TYPE audisp_input_records counter",
            "# HELP audisp_input_records Records accepted from the input into the journal.",
            "audisp_input_records_total{input=\"stdin\"} 7",
        ] {
            assert!(t.lines().any(|l| l == line), "{line:?} missing in\n{t}");
        }
        assert!(t.ends_with("\n# EOF\n"), "{t}");
        assert!(!t.contains("process_"), "no process figures were given");
    }

    #[test]
    fn help_escaping_differs_by_format() {
        assert_eq!(escape("a\\b\n\"c\"", true), "a\\\\b\\n\\\"c\\\"");
        assert_eq!(escape("a\\b\n\"c\"", false), "a\\\\b\\n\"c\"");
    }

    #[test]
    fn the_scrapers_preference_decides_the_format() {
        let prometheus = "application/openmetrics-text;version=1.0.0;q=0.5,application/openmetrics-text;version=0.0.1;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2";
        assert_eq!(Format::negotiate(Some(prometheus)), Format::OpenMetrics);
        assert_eq!(Format::negotiate(None), Format::Prometheus);
        assert_eq!(Format::negotiate(Some("*/*")), Format::Prometheus);
        assert_eq!(
            Format::negotiate(Some("text/plain;q=0.9, application/openmetrics-text;q=0.1")),
            Format::Prometheus
        );
        assert_eq!(
            Format::negotiate(Some("application/openmetrics-text;q=0")),
            Format::Prometheus
        );
    }
}
