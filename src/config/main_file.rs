//! The main config file, `audispd.toml`: inputs, journal, event assembly,
//! statistics and shutdown. Every key is optional; an absent file means all
//! defaults.

use std::collections::BTreeMap;
use std::time::Duration;

use nix::unistd::{Group, User};
use toml::de::{DeTable, DeValue};

use super::doc::{show, Doc, Section};
use super::units::{self, show_size};
use super::{DbusConfig, MainConfig, Paths, SetroubleshootConfig, StatsConfig, SyncPolicy};
use crate::engine::settings::{EventSettings, InputSocketSettings, JournalSettings, StdinSettings};
use crate::framing::{BinaryFraming, InputFormat};
use crate::protocol;

const MIB: u64 = 1 << 20;
/// Smallest journal segment: several of the largest records auditd can
/// send (8970 bytes) must fit.
const MIN_SEGMENT: u64 = 64 << 10;
/// Smallest in-memory tail worth having.
const MIN_MEMORY: u64 = MIB;
/// Most events kept open at once that the setting may ask for.
const MAX_OPEN_LIMIT: u64 = 1_000_000;

/// The sections of the main file and their keys.
const TOP: &[&str] = &["input", "journal", "events", "stats", "shutdown", "dbus"];
const INPUT: &[&str] = &["stdin", "socket"];
/// Keys of `[input.NAME]`, an input's filter (NAME is the input's name,
/// `auditd` for standard input).
const INPUT_FILTER: &[&str] = &["filter", "filter_action"];
const STDIN: &[&str] = &["enabled", "format", "binary_framing"];
const SOCKET: &[&str] = &["enabled", "path", "mode", "allow_users", "allow_groups"];
const JOURNAL: &[&str] = &[
    "dir",
    "max_size",
    "segment_size",
    "memory",
    "sync",
    "sync_interval",
];
const EVENTS: &[&str] = &["timeout", "max_open"];
const STATS: &[&str] = &["interval", "state_file"];
const SHUTDOWN: &[&str] = &["timeout"];
const DBUS: &[&str] = &["enabled", "address", "read_groups", "setroubleshoot"];
const SETROUBLESHOOT: &[&str] = &["enabled", "queue", "timeout", "rate", "dedup_window"];

impl MainConfig {
    /// The settings used for everything `audispd.toml` does not set.
    pub fn defaults(paths: &Paths) -> MainConfig {
        MainConfig {
            stdin: StdinSettings {
                enabled: true,
                format: InputFormat::String,
            },
            input_socket: InputSocketSettings {
                enabled: true,
                path: paths.runtime_dir.join("input.sock"),
                mode: 0o660,
                allow_users: Vec::new(),
                allow_groups: Vec::new(),
            },
            journal: JournalSettings {
                dir: paths.state_dir.join("journal"),
                max_size: 1 << 30,
                segment_size: 64 * MIB,
                memory: 32 * MIB,
                sync: SyncPolicy::Batch,
                sync_interval: Duration::from_secs(1),
            },
            events: EventSettings {
                timeout: Duration::from_secs(2),
                max_open: 4096,
            },
            stats: StatsConfig {
                interval: Some(Duration::from_secs(300)),
                state_file: paths.runtime_dir.join("audispd.state"),
            },
            shutdown_timeout: Duration::from_secs(5),
            input_filters: BTreeMap::new(),
            dbus: DbusConfig {
                enabled: false,
                address: None,
                read_groups: Vec::new(),
                setroubleshoot: SetroubleshootConfig {
                    enabled: true,
                    queue: 256,
                    timeout: Duration::from_secs(30),
                    rate: 10,
                    dedup_window: Duration::from_secs(60),
                },
            },
        }
    }
}

/// Reads the main config from a parsed document. Problems are recorded in
/// `doc`; the result is only meaningful if `doc` stays clean.
pub(super) fn parse(doc: &mut Doc, table: &DeTable<'_>, paths: &Paths) -> MainConfig {
    let mut c = MainConfig::defaults(paths);
    let top = Section::top(table);
    top.reject_unknown_with(doc, TOP, |key| {
        let sections: [(&str, &[&str]); 7] = [
            ("input.stdin", STDIN),
            ("input.socket", SOCKET),
            ("journal", JOURNAL),
            ("events", EVENTS),
            ("stats", STATS),
            ("shutdown", SHUTDOWN),
            ("input", INPUT),
        ];
        let home: Vec<String> = sections
            .iter()
            .filter(|(_, keys)| keys.contains(&key))
            .map(|(name, _)| format!("[{name}]"))
            .collect();
        (!home.is_empty()).then(|| format!("it belongs in a section: {}", home.join(" or ")))
    });
    if let Some(input) = top.table(doc, "input") {
        for (name, span, s) in input.sub_tables(doc) {
            match name {
                "stdin" => c.stdin = stdin(doc, &s),
                "socket" => input_socket(doc, &s, paths, &mut c.input_socket),
                _ if !protocol::valid_name(name) => doc.error(
                    Some(span),
                    format!(
                        "[input.{name}]: {name:?} is not an input name; [input.NAME] holds the filter of the input called NAME (\"auditd\" for auditd's records on standard input, else the input's --name), besides [input.stdin] and [input.socket]"
                    ),
                ),
                _ => {
                    s.reject_unknown(doc, INPUT_FILTER);
                    if let Some(rule) = s.filter(doc, "filter", "filter_action") {
                        c.input_filters.insert(name.to_string(), rule);
                    } else if s.get("filter").is_none() && s.get("filter_action").is_none() {
                        doc.error(
                            Some(span),
                            format!("[input.{name}] sets nothing; it takes filter = '…' and filter_action = \"keep\" or \"drop\" (input sections other than [input.stdin] and [input.socket] are filters)"),
                        );
                    }
                }
            }
        }
    }
    if let Some(s) = top.table(doc, "journal") {
        journal(doc, &s, paths, &mut c.journal);
    }
    if let Some(s) = top.table(doc, "events") {
        s.reject_unknown(doc, EVENTS);
        if let Some(t) = positive_duration(doc, &s, "timeout") {
            c.events.timeout = t;
        }
        if let Some(n) = s.count(doc, "max_open") {
            if (1..=MAX_OPEN_LIMIT).contains(&n) {
                c.events.max_open = usize::try_from(n).unwrap_or(usize::MAX);
            } else {
                s.bad(
                    doc,
                    "max_open",
                    &format!("is out of range; use 1 to {MAX_OPEN_LIMIT} open events"),
                );
            }
        }
    }
    if let Some(s) = top.table(doc, "stats") {
        s.reject_unknown(doc, STATS);
        if let Some(t) = s.duration(doc, "interval") {
            if t.is_zero() {
                c.stats.interval = None;
            } else if t < Duration::from_secs(1) {
                s.bad(
                    doc,
                    "interval",
                    "is too short; use at least \"1s\", or \"0\" to turn periodic statistics off",
                );
            } else {
                c.stats.interval = Some(t);
            }
        }
        if let Some(p) = s.string(doc, "state_file") {
            c.stats.state_file = paths.runtime_dir.join(p);
        }
    }
    if let Some(s) = top.table(doc, "shutdown") {
        s.reject_unknown(doc, SHUTDOWN);
        if let Some(t) = s.duration(doc, "timeout") {
            c.shutdown_timeout = t;
        }
    }
    if let Some(s) = top.table(doc, "dbus") {
        dbus(doc, &s, &mut c.dbus);
    }
    c
}

fn dbus(doc: &mut Doc, s: &Section, out: &mut DbusConfig) {
    s.reject_unknown(doc, DBUS);
    if let Some(e) = s.bool(doc, "enabled") {
        out.enabled = e;
    }
    if let Some(a) = s.string(doc, "address") {
        if a.contains(':') {
            out.address = Some(a.to_string());
        } else {
            s.bad(
                doc,
                "address",
                "is not a D-Bus address; use one such as \"unix:path=/run/dbus/system_bus_socket\"",
            );
        }
    }
    if let Some(groups) = s.list(doc, "read_groups", "group names or gids", |v| {
        resolve_id(v, IdKind::Group)
    }) {
        out.read_groups = groups;
    }
    let Some(t) = s.table(doc, "setroubleshoot") else {
        return;
    };
    let st = &mut out.setroubleshoot;
    t.reject_unknown(doc, SETROUBLESHOOT);
    if let Some(e) = t.bool(doc, "enabled") {
        st.enabled = e;
    }
    if let Some(n) = t.count(doc, "queue") {
        match usize::try_from(n) {
            Ok(n) if (1..=100_000).contains(&n) => st.queue = n,
            _ => t.bad(doc, "queue", "is out of range; use 1 to 100000 events"),
        }
    }
    if let Some(d) = positive_duration(doc, &t, "timeout") {
        st.timeout = d;
    }
    if let Some(n) = t.count(doc, "rate") {
        match u32::try_from(n) {
            Ok(n) if (1..=10_000).contains(&n) => st.rate = n,
            _ => t.bad(
                doc,
                "rate",
                "is out of range; use 1 to 10000 calls per second",
            ),
        }
    }
    if let Some(d) = t.duration(doc, "dedup_window") {
        st.dedup_window = d;
    }
}

fn stdin(doc: &mut Doc, s: &Section) -> StdinSettings {
    s.reject_unknown(doc, STDIN);
    let enabled = s.bool(doc, "enabled").unwrap_or(true);
    let binary = s
        .choice(
            doc,
            "format",
            "input format",
            &[("string", false), ("binary", true)],
        )
        .unwrap_or(false);
    let framing = s.choice(
        doc,
        "binary_framing",
        "binary framing",
        &[
            ("auto", BinaryFraming::Auto),
            ("padded", BinaryFraming::Padded),
            ("exact", BinaryFraming::Exact),
        ],
    );
    let format = if binary {
        InputFormat::Binary(framing.unwrap_or(BinaryFraming::Auto))
    } else {
        // The default is harmless; anything else would silently do nothing.
        if framing.is_some_and(|f| f != BinaryFraming::Auto) {
            s.bad(
                doc,
                "binary_framing",
                "only applies to format = \"binary\"; remove it or set format = \"binary\"",
            );
        }
        InputFormat::String
    };
    StdinSettings { enabled, format }
}

fn input_socket(doc: &mut Doc, s: &Section, paths: &Paths, out: &mut InputSocketSettings) {
    s.reject_unknown(doc, SOCKET);
    if let Some(e) = s.bool(doc, "enabled") {
        out.enabled = e;
    }
    if let Some(p) = s.string(doc, "path") {
        let path = paths.runtime_dir.join(p);
        match units::check_socket_path(&path) {
            Ok(()) => out.path = path,
            Err(m) => s.bad(doc, "path", &m),
        }
    }
    let mode = s.value(doc, "mode", |v| match v {
        DeValue::String(t) => units::parse_mode(t),
        DeValue::Integer(i) if i.radix() == 8 => u32::from_str_radix(i.as_str(), 8)
            .map_err(|_| "is not a file mode".to_string())
            .and_then(units::check_mode),
        _ => Err(
            "must be an octal string such as \"0660\" (a bare number would be read as decimal)"
                .to_string(),
        ),
    });
    if let Some(m) = mode {
        out.mode = m;
    }
    if let Some(users) = s.list(doc, "allow_users", "user names or uids", |v| {
        resolve_id(v, IdKind::User)
    }) {
        out.allow_users = users;
    }
    if let Some(groups) = s.list(doc, "allow_groups", "group names or gids", |v| {
        resolve_id(v, IdKind::Group)
    }) {
        out.allow_groups = groups;
    }
}

#[derive(Clone, Copy)]
enum IdKind {
    User,
    Group,
}

/// Resolves a user or group given by name or number to its numeric id.
fn resolve_id(v: &DeValue<'_>, kind: IdKind) -> Result<u32, String> {
    let (what, id) = match kind {
        IdKind::User => ("user", "uid"),
        IdKind::Group => ("group", "gid"),
    };
    let name = match v {
        DeValue::Integer(i) => {
            return u32::from_str_radix(i.as_str(), i.radix())
                .map_err(|_| format!("{i} is not a valid {id}"));
        }
        DeValue::String(s) => s.as_ref(),
        other => {
            return Err(format!(
                "{} must be a {what} name in quotes or a numeric {id}",
                show(other)
            ))
        }
    };
    if !name.is_empty() && name.bytes().all(|b| b.is_ascii_digit()) {
        return name
            .parse()
            .map_err(|_| format!("{name:?} is not a valid {id}"));
    }
    let found = match kind {
        IdKind::User => User::from_name(name).map(|u| u.map(|u| u.uid.as_raw())),
        IdKind::Group => Group::from_name(name).map(|g| g.map(|g| g.gid.as_raw())),
    };
    match found {
        Ok(Some(n)) => Ok(n),
        Ok(None) => Err(format!("there is no {what} named {name:?} on this system; use an existing {what} name or a numeric {id}")),
        Err(e) => Err(format!("cannot look up {what} {name:?}: {e}")),
    }
}

fn journal(doc: &mut Doc, s: &Section, paths: &Paths, out: &mut JournalSettings) {
    s.reject_unknown(doc, JOURNAL);
    if let Some(p) = s.string(doc, "dir") {
        out.dir = paths.state_dir.join(p);
    }
    if let Some(n) = s.size(doc, "max_size") {
        out.max_size = n;
    }
    if let Some(n) = s.size(doc, "segment_size") {
        if n < MIN_SEGMENT {
            s.bad(
                doc,
                "segment_size",
                &format!("is too small; use at least \"{}\"", show_size(MIN_SEGMENT)),
            );
        } else {
            out.segment_size = n;
        }
    }
    if let Some(n) = s.size(doc, "memory") {
        if n < MIN_MEMORY {
            s.bad(
                doc,
                "memory",
                &format!("is too small; use at least \"{}\"", show_size(MIN_MEMORY)),
            );
        } else {
            out.memory = n;
        }
    }
    if out.segment_size > out.max_size {
        let key = if s.get("segment_size").is_some() {
            "segment_size"
        } else {
            "max_size"
        };
        s.bad(
            doc,
            key,
            &format!(
                "leaves segment_size ({}) larger than max_size ({}); the journal must be able to hold at least one segment",
                show_size(out.segment_size),
                show_size(out.max_size)
            ),
        );
    }
    if out.memory > out.max_size {
        let key = if s.get("memory").is_some() {
            "memory"
        } else {
            "max_size"
        };
        s.bad(
            doc,
            key,
            &format!(
                "leaves memory ({}) larger than max_size ({}); the in-memory tail cannot hold more than the journal",
                show_size(out.memory),
                show_size(out.max_size)
            ),
        );
    }
    if let Some(p) = s.choice(
        doc,
        "sync",
        "sync policy",
        &[
            ("batch", SyncPolicy::Batch),
            ("interval", SyncPolicy::Interval),
            ("never", SyncPolicy::Never),
        ],
    ) {
        out.sync = p;
    }
    if let Some(t) = positive_duration(doc, s, "sync_interval") {
        out.sync_interval = t;
    }
}

/// A duration that must not be zero.
fn positive_duration(doc: &mut Doc, s: &Section, key: &str) -> Option<Duration> {
    let t = s.duration(doc, key)?;
    if t.is_zero() {
        s.bad(
            doc,
            key,
            &format!("must be more than 0; {}", units::DURATION_HELP),
        );
        return None;
    }
    Some(t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::{Path, PathBuf};

    fn paths() -> Paths {
        Paths {
            config_dir: "/etc/audisp".into(),
            runtime_dir: "/run/audisp".into(),
            state_dir: "/var/lib/audisp".into(),
        }
    }

    fn parse_str(src: &str) -> (MainConfig, Vec<String>) {
        let mut doc = Doc::new(Path::new("audispd.toml"), src);
        let t = doc.parse().expect("valid TOML");
        let c = parse(&mut doc, &t, &paths());
        (c, doc.finish().iter().map(|d| d.to_string()).collect())
    }

    #[test]
    fn empty_file_is_all_defaults() {
        let (c, e) = parse_str("");
        assert!(e.is_empty());
        assert_eq!(c, MainConfig::defaults(&paths()));
        assert_eq!(c.input_socket.path, PathBuf::from("/run/audisp/input.sock"));
        assert_eq!(c.journal.dir, PathBuf::from("/var/lib/audisp/journal"));
        assert_eq!(
            c.stats.state_file,
            PathBuf::from("/run/audisp/audispd.state")
        );
    }

    #[test]
    fn every_key() {
        let (c, e) = parse_str(
            r#"
[input.stdin]
enabled = false
format = "binary"
binary_framing = "exact"
[input.socket]
enabled = false
path = "in.sock"
mode = "0600"
allow_users = ["root", 1000, "2000"]
allow_groups = ["root", 10]
[journal]
dir = "/srv/journal"
max_size = "2G"
segment_size = "128M"
memory = "16M"
sync = "interval"
sync_interval = "500ms"
[events]
timeout = 3
max_open = 100
[stats]
interval = "0"
state_file = "/tmp/x.state"
[shutdown]
timeout = "1m"
"#,
        );
        assert!(e.is_empty(), "{e:?}");
        assert_eq!(
            c.stdin,
            StdinSettings {
                enabled: false,
                format: InputFormat::Binary(BinaryFraming::Exact)
            }
        );
        assert!(!c.input_socket.enabled);
        assert_eq!(c.input_socket.path, PathBuf::from("/run/audisp/in.sock"));
        assert_eq!(c.input_socket.mode, 0o600);
        assert_eq!(c.input_socket.allow_users, [0, 1000, 2000]);
        assert_eq!(c.input_socket.allow_groups, [0, 10]);
        assert_eq!(c.journal.dir, PathBuf::from("/srv/journal"));
        assert_eq!(
            (c.journal.max_size, c.journal.segment_size, c.journal.memory),
            (2 << 30, 128 << 20, 16 << 20)
        );
        assert_eq!(c.journal.sync, SyncPolicy::Interval);
        assert_eq!(c.journal.sync_interval, Duration::from_millis(500));
        assert_eq!(c.events.timeout, Duration::from_secs(3));
        assert_eq!(c.events.max_open, 100);
        assert_eq!(c.stats.interval, None);
        assert_eq!(c.stats.state_file, PathBuf::from("/tmp/x.state"));
        assert_eq!(c.shutdown_timeout, Duration::from_secs(60));
    }

    #[test]
    fn dbus_section() {
        let (c, e) = parse_str(
            r#"
[dbus]
enabled = true
address = "unix:path=/tmp/bus"
read_groups = ["root", 10]
[dbus.setroubleshoot]
enabled = false
queue = 8
timeout = "2s"
rate = 3
dedup_window = "10s"
"#,
        );
        assert!(e.is_empty(), "{e:?}");
        assert!(c.dbus.enabled);
        assert_eq!(c.dbus.address.as_deref(), Some("unix:path=/tmp/bus"));
        assert_eq!(c.dbus.read_groups, [0, 10]);
        let s = &c.dbus.setroubleshoot;
        assert!(!s.enabled);
        assert_eq!((s.queue, s.rate), (8, 3));
        assert_eq!(s.timeout, Duration::from_secs(2));
        assert_eq!(s.dedup_window, Duration::from_secs(10));
        let (_, e) =
            parse_str("[dbus]\naddress = \"nowhere\"\n[dbus.setroubleshoot]\nrate = 0\nqueu = 1\n");
        assert_eq!(
            e,
            [
                "audispd.toml:2: address = \"nowhere\" is not a D-Bus address; use one such as \"unix:path=/run/dbus/system_bus_socket\"",
                "audispd.toml:4: rate = 0 is out of range; use 1 to 10000 calls per second",
                "audispd.toml:5: unknown key \"queu\" in [dbus.setroubleshoot] (did you mean \"queue\"?); allowed keys are enabled, queue, timeout, rate, dedup_window",
            ]
        );
    }

    #[test]
    fn nonsense_is_rejected() {
        let (_, e) = parse_str(
            r#"max_size = "1G"
[input.stdin]
binary_framing = "padded"
[input.socket]
mode = 660
allow_users = ["no-such-user-here"]
[journal]
segment_size = "2G"
memory = "512K"
sync = "always"
sync_interval = 0
[events]
timeout = "0s"
max_open = 0
[stats]
interval = "500ms"
"#,
        );
        assert_eq!(
            e,
            [
                "audispd.toml:1: unknown key \"max_size\" (it belongs in a section: [journal]); allowed keys are input, journal, events, stats, shutdown, dbus",
                "audispd.toml:3: binary_framing = \"padded\" only applies to format = \"binary\"; remove it or set format = \"binary\"",
                "audispd.toml:5: mode = 660 must be an octal string such as \"0660\" (a bare number would be read as decimal)",
                "audispd.toml:6: allow_users: there is no user named \"no-such-user-here\" on this system; use an existing user name or a numeric uid",
                "audispd.toml:8: segment_size = \"2G\" leaves segment_size (2G) larger than max_size (1G); the journal must be able to hold at least one segment",
                "audispd.toml:9: memory = \"512K\" is too small; use at least \"1M\"",
                "audispd.toml:10: sync = \"always\" is not a known sync policy; use \"batch\", \"interval\" or \"never\"",
                "audispd.toml:11: sync_interval = 0 must be more than 0; write whole seconds as an integer or a string such as \"500ms\", \"2s\", \"5m\" or \"1h\"",
                "audispd.toml:13: timeout = \"0s\" must be more than 0; write whole seconds as an integer or a string such as \"500ms\", \"2s\", \"5m\" or \"1h\"",
                "audispd.toml:14: max_open = 0 is out of range; use 1 to 1000000 open events",
                "audispd.toml:16: interval = \"500ms\" is too short; use at least \"1s\", or \"0\" to turn periodic statistics off",
            ]
        );
    }

    #[test]
    fn octal_integer_modes_and_long_socket_paths() {
        let (c, e) = parse_str("[input.socket]\nmode = 0o640\n");
        assert!(e.is_empty(), "{e:?}");
        assert_eq!(c.input_socket.mode, 0o640);
        let long = "x".repeat(120);
        let (_, e) = parse_str(&format!("[input.socket]\npath = \"{long}\"\n"));
        assert_eq!(e.len(), 1);
        assert!(
            e[0].contains("socket paths may be at most 107 bytes"),
            "{e:?}"
        );
    }

    #[test]
    fn shipped_config_shows_every_key_in_its_section() {
        let shipped = include_str!("../../packaging/audispd.toml");
        let sections: [(&str, &[&str]); 6] = [
            ("input.stdin", STDIN),
            ("input.socket", SOCKET),
            ("journal", JOURNAL),
            ("events", EVENTS),
            ("stats", STATS),
            ("shutdown", SHUTDOWN),
        ];
        for (section, keys) in sections {
            let header = format!("[{section}]\n");
            let start = shipped
                .find(&header)
                .unwrap_or_else(|| panic!("no [{section}]"))
                + header.len();
            let body = shipped[start..].split("\n[").next().unwrap_or("");
            for key in keys {
                assert!(
                    body.lines().any(|l| l.starts_with(&format!("#{key} = "))),
                    "[{section}] {key} is not shown"
                );
            }
        }
    }
}
