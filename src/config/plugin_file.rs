//! One plugin file, `plugins.d/NAME.toml`: how to reach the plugin, what it
//! gets, what happens when it falls behind, and which actions it may ask
//! for.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::de::{DeTable, DeValue};

use super::doc::{show, Doc, Section};
use super::files;
use super::units::{self, show_duration, show_size};
use super::{
    Action, Backoff, DeliveryMode, InputSelection, Overflow, Paths, PluginConfig, PluginFormat,
    SystemAction, Transport,
};
use crate::protocol;

/// Keys of a plugin file.
const KEYS: &[&str] = &[
    "active",
    "socket",
    "exec",
    "format",
    "mode",
    "include",
    "exclude",
    "inputs",
    "exclude_inputs",
    "drop_fields",
    "filter",
    "filter_action",
    "queue_size",
    "overflow",
    "spool_max",
    "restart",
    "actions",
];
const RESTART: &[&str] = &["initial", "max"];
const ACTION: &[&str] = &["run", "program", "args"];

/// Default backlog before the overflow policy applies, in records.
const QUEUE_SIZE: u64 = 100_000;
/// Default and smallest spool limit.
const SPOOL_MAX: u64 = 1 << 30;
const MIN_SPOOL: u64 = 1 << 20;

/// A plugin read from its file, with what the loader needs to compare it
/// with the others.
pub(super) struct Parsed {
    /// The plugin's settings.
    pub config: PluginConfig,
    /// Line of the `socket` key, for the duplicate-socket message.
    pub socket_line: Option<usize>,
}

/// Reads a plugin from its parsed file. Returns `None` when anything is
/// wrong (the problems are in `doc`).
pub(super) fn parse(
    doc: &mut Doc,
    table: &DeTable<'_>,
    name: &str,
    paths: &Paths,
) -> Option<Parsed> {
    let top = Section::top(table);
    top.reject_unknown(doc, KEYS);
    let active = top.bool(doc, "active").unwrap_or(true);
    let transport = transport(doc, &top, name, paths);
    let format = top
        .choice(
            doc,
            "format",
            "plugin format",
            &[
                ("native", PluginFormat::Native),
                ("string", PluginFormat::String),
                ("binary", PluginFormat::Binary),
                ("json", PluginFormat::Json),
            ],
        )
        .unwrap_or(PluginFormat::Native);
    let mode = delivery_mode(doc, &top, format);
    let include = types(doc, &top, "include").unwrap_or_default();
    let exclude = types(doc, &top, "exclude").unwrap_or_default();
    for t in exclude.iter().filter(|t| include.contains(t)) {
        let shown = crate::record_types::display(*t);
        top.bad(
            doc,
            "exclude",
            &format!("lists {shown}, which include also lists; a type cannot be both included and excluded"),
        );
    }
    let inputs = inputs(doc, &top);
    let drop_fields = drop_fields(doc, &top);
    let filter = top.filter(doc, "filter", "filter_action");
    let queue_size = top.count(doc, "queue_size").unwrap_or(QUEUE_SIZE);
    if queue_size == 0 {
        top.bad(doc, "queue_size", "must be at least 1 record");
    }
    let overflow = top
        .choice(
            doc,
            "overflow",
            "policy",
            &[
                ("spool", Overflow::Spool),
                ("drop", Overflow::Drop),
                ("suspend", Overflow::Suspend),
            ],
        )
        .unwrap_or(Overflow::Spool);
    let spool_max = top.size(doc, "spool_max").unwrap_or(SPOOL_MAX);
    if spool_max < MIN_SPOOL {
        top.bad(
            doc,
            "spool_max",
            &format!("is too small; use at least \"{}\"", show_size(MIN_SPOOL)),
        );
    }
    let restart = restart(doc, &top);
    let actions = actions(doc, &top, active);
    if active {
        if let Some(Transport::Exec(argv)) = &transport {
            if !argv.is_empty() {
                if let Err(m) = files::check_command(argv, "exec program") {
                    let span = top.get("exec").map(|v| v.span());
                    doc.error(span, m);
                }
            }
        }
    }
    let socket_line = top.get("socket").map(|v| doc.line_of(v.span().start));
    if !doc.is_clean() {
        return None;
    }
    Some(Parsed {
        config: PluginConfig {
            name: name.to_string(),
            file: doc.file.clone(),
            active,
            transport: transport?,
            format,
            mode,
            include,
            exclude,
            inputs,
            drop_fields,
            filter,
            queue_size,
            overflow,
            spool_max,
            restart,
            actions,
        },
        socket_line,
    })
}

/// `mode`, checked against the format: only native plugins choose; a
/// `"json"` plugin always gets whole events, auditd's formats records.
fn delivery_mode(doc: &mut Doc, top: &Section, format: PluginFormat) -> DeliveryMode {
    let mode = top.choice(
        doc,
        "mode",
        "delivery mode",
        &[
            ("records", DeliveryMode::Records),
            ("events", DeliveryMode::Events),
        ],
    );
    match (format, mode) {
        (PluginFormat::Json, Some(DeliveryMode::Records)) => {
            top.bad(
                doc,
                "mode",
                "does not apply to format = \"json\", which writes one whole event per line; remove mode (or set mode = \"events\"), or use format = \"string\" for one record per line",
            );
            DeliveryMode::Events
        }
        (PluginFormat::Json, _) => DeliveryMode::Events,
        (PluginFormat::String | PluginFormat::Binary, Some(DeliveryMode::Events)) => {
            top.bad(
                doc,
                "mode",
                "needs format = \"native\" or \"json\"; plugins in auditd's string and binary formats take records one at a time",
            );
            DeliveryMode::Records
        }
        (_, mode) => mode.unwrap_or(DeliveryMode::Records),
    }
}

/// `socket = "..."` or `exec = [...]`, exactly one of them.
fn transport(doc: &mut Doc, top: &Section, name: &str, paths: &Paths) -> Option<Transport> {
    match (top.get("socket").is_some(), top.get("exec").is_some()) {
        (true, true) => {
            top.bad(
                doc,
                "exec",
                "is set together with socket; a plugin is either reached at a socket (socket = \"...\") or started by audispd (exec = [...]), so remove one of them",
            );
            None
        }
        (false, false) => {
            doc.error(
                None,
                format!(
                    "neither socket nor exec is set; add socket = \"{name}.sock\" if the plugin listens on a socket, usually a socket-activated unit (relative paths are under {}), or exec = [\"/path/to/program\", \"arg\"] if audispd should start it",
                    paths.runtime_dir.join("plugins").display()
                ),
            );
            None
        }
        (true, false) => {
            let s = top.string(doc, "socket")?;
            let path = paths.runtime_dir.join("plugins").join(s);
            match units::check_socket_path(&path) {
                Ok(()) => Some(Transport::Socket(path)),
                Err(m) => {
                    top.bad(doc, "socket", &m);
                    None
                }
            }
        }
        (false, true) => {
            let argv = top.strings(doc, "exec")?;
            let Some(program) = argv.first() else {
                top.bad(
                    doc,
                    "exec",
                    "must name the program to run: exec = [\"/path/to/program\", \"arg\", ...]",
                );
                return None;
            };
            if !Path::new(program).is_absolute() {
                let base = Path::new(program)
                    .file_name()
                    .map_or("program".into(), |n| n.to_string_lossy());
                top.bad(
                    doc,
                    "exec",
                    &format!(
                        "does not start with an absolute path; audispd does not search PATH, so write the program's full path (for example \"/usr/sbin/{base}\")"
                    ),
                );
                return None;
            }
            Some(Transport::Exec(
                argv.into_iter().map(OsString::from).collect(),
            ))
        }
    }
}

/// A list of record types (names or numbers), sorted, without duplicates.
fn types(doc: &mut Doc, top: &Section, key: &str) -> Option<Vec<u32>> {
    let mut v = top.list(doc, key, "record type names or numbers", |v| match v {
        DeValue::String(s) => units::parse_type(s),
        DeValue::Integer(i) => u32::from_str_radix(i.as_str(), i.radix())
            .map_err(|_| format!("{i} is not a record type number")),
        other => Err(format!(
            "{} must be a record type name in quotes or a type number",
            show(other)
        )),
    })?;
    v.sort_unstable();
    v.dedup();
    Some(v)
}

/// `inputs = [...]`, `exclude_inputs = [...]`: input names (`auditd` for
/// standard input, an input plugin's name otherwise). `None` when neither
/// key is there.
fn inputs(doc: &mut Doc, top: &Section) -> Option<InputSelection> {
    if top.get("inputs").is_none() && top.get("exclude_inputs").is_none() {
        return None;
    }
    let names = |doc: &mut Doc, key: &str| {
        let mut v = top
            .list(doc, key, "input names", |v| match v {
                DeValue::String(s) if protocol::valid_name(s) => Ok(s.to_string()),
                DeValue::String(_) => Err(format!(
                    "{} is not an input name: 1 to {} characters of letters, digits, '_', '-' and '.' (\"auditd\" for auditd's records, else the input's --name, such as \"remote\" for audisp-receive)",
                    show(v),
                    protocol::MAX_NAME
                )),
                other => Err(format!("{} must be an input name in quotes", show(other))),
            })
            .unwrap_or_default();
        v.sort_unstable();
        v.dedup();
        v
    };
    let include = names(doc, "inputs");
    let exclude = names(doc, "exclude_inputs");
    for n in exclude.iter().filter(|n| include.contains(n)) {
        top.bad(
            doc,
            "exclude_inputs",
            &format!("lists \"{n}\", which inputs also lists; an input cannot be both chosen and excluded"),
        );
    }
    Some(InputSelection { include, exclude })
}

/// `drop_fields = [...]`: field names as audit records write them before
/// `=` (`proctitle`, `auid`; upper case for an enriched field only).
fn drop_fields(doc: &mut Doc, top: &Section) -> Vec<String> {
    let mut v = top
        .list(doc, "drop_fields", "field names", |v| match v {
            DeValue::String(s)
                if !s.is_empty()
                    && s.len() <= 64
                    && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') =>
            {
                Ok(s.to_string())
            }
            DeValue::String(_) => Err(format!(
                "{} is not a field name: 1 to 64 letters, digits, '_' or '-', as the record writes it before '=' (such as \"proctitle\")",
                show(v)
            )),
            other => Err(format!("{} must be a field name in quotes", show(other))),
        })
        .unwrap_or_default();
    v.sort_unstable();
    v.dedup();
    v
}

/// `[restart] initial, max`.
fn restart(doc: &mut Doc, top: &Section) -> Backoff {
    let mut b = Backoff {
        initial: Duration::from_millis(100),
        max: Duration::from_secs(30),
    };
    let Some(s) = top.table(doc, "restart") else {
        return b;
    };
    s.reject_unknown(doc, RESTART);
    if let Some(t) = s.duration(doc, "initial") {
        if t.is_zero() {
            s.bad(
                doc,
                "initial",
                &format!("must be more than 0; {}", units::DURATION_HELP),
            );
        } else {
            b.initial = t;
        }
    }
    if let Some(t) = s.duration(doc, "max") {
        b.max = t;
    }
    if b.max < b.initial {
        let key = if s.get("max").is_some() {
            "max"
        } else {
            "initial"
        };
        s.bad(
            doc,
            key,
            &format!(
                "leaves max ({}) below initial ({}); the delay starts at initial and doubles up to max",
                show_duration(b.max),
                show_duration(b.initial)
            ),
        );
    }
    b
}

/// `[actions.NAME]` tables. Programs are only checked for active plugins.
fn actions(doc: &mut Doc, top: &Section, active: bool) -> BTreeMap<String, Action> {
    let mut out = BTreeMap::new();
    let Some(table) = top.table(doc, "actions") else {
        return out;
    };
    for (name, span, s) in table.sub_tables(doc) {
        if let Err(m) = units::check_action_name(name) {
            doc.error(Some(span.clone()), m);
            continue;
        }
        s.reject_unknown(doc, ACTION);
        let run = s.choice(
            doc,
            "run",
            "action",
            &[
                ("ignore", "ignore"),
                ("log", "log"),
                ("exec", "exec"),
                ("suspend", "suspend"),
                ("single-user", "single-user"),
                ("halt", "halt"),
                ("poweroff", "poweroff"),
            ],
        );
        if s.get("run").is_none() {
            doc.error(
                Some(span.clone()),
                format!("[actions.{name}] has no run key; set run = \"ignore\", \"log\", \"exec\", \"suspend\", \"single-user\", \"halt\" or \"poweroff\""),
            );
        }
        if run != Some("exec") && run.is_some() {
            for key in ["program", "args"] {
                s.bad(
                    doc,
                    key,
                    "is only used with run = \"exec\"; remove it or set run = \"exec\"",
                );
            }
        }
        let action = match run {
            None => continue,
            Some("ignore") => Action::Ignore,
            Some("log") => Action::Log,
            Some("suspend") => Action::Suspend,
            Some("single-user") => Action::System(SystemAction::SingleUser),
            Some("halt") => Action::System(SystemAction::Halt),
            Some("poweroff") => Action::System(SystemAction::Poweroff),
            Some(_) => {
                let args = s.strings(doc, "args").unwrap_or_default();
                let Some(program) = s.string(doc, "program") else {
                    if s.get("program").is_none() {
                        doc.error(
                            Some(span),
                            format!("[actions.{name}] has run = \"exec\" but no program; add program = \"/path/to/program\""),
                        );
                    }
                    continue;
                };
                let program = PathBuf::from(program);
                if !program.is_absolute() {
                    s.bad(doc, "program", "is not an absolute path; audispd does not search PATH, so write the program's full path");
                    continue;
                }
                if active {
                    let argv: Vec<std::ffi::OsString> = std::iter::once(program.clone().into())
                        .chain(args.iter().map(Into::into))
                        .collect();
                    if let Err(m) = files::check_command(&argv, &format!("action {name:?} program"))
                    {
                        let span = s.get("program").map(|v| v.span());
                        doc.error(span, m);
                    }
                }
                Action::Exec { program, args }
            }
        };
        out.insert(name.to_string(), action);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths() -> Paths {
        Paths {
            config_dir: "/etc/audisp".into(),
            runtime_dir: "/run/audisp".into(),
            state_dir: "/var/lib/audisp".into(),
        }
    }

    fn parse_str(src: &str) -> Result<PluginConfig, Vec<String>> {
        let mut doc = Doc::new(Path::new("p.toml"), src);
        let t = doc.parse().expect("valid TOML");
        match parse(&mut doc, &t, "p", &paths()) {
            Some(p) => Ok(p.config),
            None => Err(doc.finish().iter().map(|d| d.to_string()).collect()),
        }
    }

    #[test]
    fn minimal_socket_plugin_gets_defaults() {
        let c = parse_str("socket = \"p.sock\"\n").unwrap();
        assert_eq!(
            c,
            PluginConfig {
                name: "p".into(),
                file: "p.toml".into(),
                active: true,
                transport: Transport::Socket("/run/audisp/plugins/p.sock".into()),
                format: PluginFormat::Native,
                mode: DeliveryMode::Records,
                include: vec![],
                exclude: vec![],
                inputs: None,
                drop_fields: vec![],
                filter: None,
                queue_size: 100_000,
                overflow: Overflow::Spool,
                spool_max: 1 << 30,
                restart: Backoff {
                    initial: Duration::from_millis(100),
                    max: Duration::from_secs(30)
                },
                actions: BTreeMap::new(),
            }
        );
        let c = parse_str("socket = \"/run/x/p.sock\"\n").unwrap();
        assert_eq!(c.transport, Transport::Socket("/run/x/p.sock".into()));
    }

    #[test]
    fn every_key() {
        let c = parse_str(
            r#"active = false
exec = ["/bin/true", "a b", "--x"]
format = "native"
mode = "events"
include = ["avc", "USER_AVC", 1400, "UNKNOWN[3000]"]
exclude = ["PROCTITLE"]
queue_size = 10
overflow = "suspend"
spool_max = "2M"
[restart]
initial = "1s"
max = "1m"
[actions.disk-full]
run = "exec"
program = "/bin/true"
args = ["--now"]
[actions.quiet]
run = "ignore"
[actions.note]
run = "log"
[actions.pause]
run = "suspend"
"#,
        )
        .unwrap();
        assert!(!c.active);
        assert_eq!(
            c.transport,
            Transport::Exec(vec!["/bin/true".into(), "a b".into(), "--x".into()])
        );
        assert_eq!(c.mode, DeliveryMode::Events);
        assert_eq!(c.include, [1107, 1400, 3000]);
        assert_eq!(c.exclude, [1327]);
        assert_eq!(
            (c.queue_size, c.overflow, c.spool_max),
            (10, Overflow::Suspend, 2 << 20)
        );
        assert_eq!(
            c.restart,
            Backoff {
                initial: Duration::from_secs(1),
                max: Duration::from_secs(60)
            }
        );
        assert_eq!(
            c.actions.get("disk-full"),
            Some(&Action::Exec {
                program: "/bin/true".into(),
                args: vec!["--now".into()]
            })
        );
        assert_eq!(c.actions.get("quiet"), Some(&Action::Ignore));
        assert_eq!(c.actions.get("note"), Some(&Action::Log));
        assert_eq!(c.actions.get("pause"), Some(&Action::Suspend));
    }

    #[test]
    fn transport_mistakes() {
        assert_eq!(
            parse_str("socket = \"a.sock\"\nexec = [\"/bin/true\"]\n").unwrap_err(),
            ["p.toml:2: exec = [\"/bin/true\"] is set together with socket; a plugin is either reached at a socket (socket = \"...\") or started by audispd (exec = [...]), so remove one of them"]
        );
        let e = parse_str("format = \"string\"\n").unwrap_err();
        assert_eq!(e.len(), 1);
        assert!(
            e[0].starts_with("p.toml: neither socket nor exec is set; add socket = \"p.sock\" if the plugin listens on a socket, usually a socket-activated unit (relative paths are under /run/audisp/plugins)"),
            "{e:?}"
        );
        assert_eq!(
            parse_str("exec = []\n").unwrap_err(),
            ["p.toml:1: exec = [] must name the program to run: exec = [\"/path/to/program\", \"arg\", ...]"]
        );
        assert_eq!(
            parse_str("exec = [\"audisp-syslog\", \"LOG_INFO\"]\n").unwrap_err(),
            ["p.toml:1: exec = [\"audisp-syslog\", \"LOG_INFO\"] does not start with an absolute path; audispd does not search PATH, so write the program's full path (for example \"/usr/sbin/audisp-syslog\")"]
        );
        assert_eq!(
            parse_str("exec = [\"/no/such/program\"]\n").unwrap_err(),
            ["p.toml:1: exec program /no/such/program does not exist; install it or correct the path"]
        );
        // An inactive plugin may name a program that is not installed.
        assert!(parse_str("active = false\nexec = [\"/no/such/program\"]\n").is_ok());
    }

    #[test]
    fn value_mistakes() {
        let e = parse_str(
            r#"socket = "s"
format = "xml"
mode = "events"
overflow = "spill"
include = ["AVCC", 1.5]
exclude = ["AVC"]
queue_size = 0
spool_max = "10K"
colour = "blue"
[restart]
initial = "1s"
max = "500ms"
"#,
        )
        .unwrap_err();
        assert_eq!(
            e,
            [
                "p.toml:2: format = \"xml\" is not a known plugin format; use \"native\", \"string\", \"binary\" or \"json\"",
                "p.toml:4: overflow = \"spill\" is not a known policy; use \"spool\", \"drop\" or \"suspend\"",
                "p.toml:5: include: \"AVCC\" is not a known record type; did you mean \"AVC\"?",
                "p.toml:5: include: 1.5 must be a record type name in quotes or a type number",
                "p.toml:7: queue_size = 0 must be at least 1 record",
                "p.toml:8: spool_max = \"10K\" is too small; use at least \"1M\"",
                "p.toml:9: unknown key \"colour\"; allowed keys are active, socket, exec, format, mode, include, exclude, inputs, exclude_inputs, drop_fields, filter, filter_action, queue_size, overflow, spool_max, restart, actions",
                "p.toml:12: max = \"500ms\" leaves max (500ms) below initial (1s); the delay starts at initial and doubles up to max",
            ]
        );
        assert_eq!(
            parse_str("exec = [\"/bin/true\"]\nformat = \"string\"\nmode = \"events\"\n").unwrap_err(),
            ["p.toml:3: mode = \"events\" needs format = \"native\" or \"json\"; plugins in auditd's string and binary formats take records one at a time"]
        );
        assert_eq!(
            parse_str("socket = \"s\"\ninclude = [\"AVC\", \"USER_AVC\"]\nexclude = [\"avc\"]\n").unwrap_err(),
            ["p.toml:3: exclude = [\"avc\"] lists AVC, which include also lists; a type cannot be both included and excluded"]
        );
    }

    #[test]
    fn json_is_a_stock_format_of_whole_events() {
        for transport in ["exec = [\"/bin/true\"]", "socket = \"s\""] {
            for mode in ["", "mode = \"events\"\n"] {
                let c = parse_str(&format!("{transport}\nformat = \"json\"\n{mode}")).unwrap();
                assert_eq!(
                    (c.format, c.mode),
                    (PluginFormat::Json, DeliveryMode::Events)
                );
            }
        }
        assert_eq!(
            parse_str("exec = [\"/bin/true\"]\nformat = \"json\"\nmode = \"records\"\n").unwrap_err(),
            ["p.toml:3: mode = \"records\" does not apply to format = \"json\", which writes one whole event per line; remove mode (or set mode = \"events\"), or use format = \"string\" for one record per line"]
        );
    }

    #[test]
    fn drop_fields_names_fields() {
        let c =
            parse_str("socket = \"s\"\ndrop_fields = [\"proctitle\", \"auid\", \"proctitle\"]\n")
                .unwrap();
        assert_eq!(c.drop_fields, ["auid", "proctitle"]);
        assert_eq!(
            parse_str("socket = \"s\"\ndrop_fields = [\"a=b\", 1]\n").unwrap_err(),
            [
                "p.toml:2: drop_fields: \"a=b\" is not a field name: 1 to 64 letters, digits, '_' or '-', as the record writes it before '=' (such as \"proctitle\")",
                "p.toml:2: drop_fields: 1 must be a field name in quotes",
            ]
        );
    }

    #[test]
    fn inputs_are_chosen_by_name_or_left_to_the_plugin() {
        assert_eq!(parse_str("socket = \"s\"\n").unwrap().inputs, None);
        let c =
            parse_str("socket = \"s\"\ninputs = [\"remote\", \"auditd\", \"remote\"]\n").unwrap();
        assert_eq!(
            c.inputs,
            Some(InputSelection {
                include: vec!["auditd".into(), "remote".into()],
                exclude: vec![],
            })
        );
        // An empty list is a choice too: every input, relayed ones included.
        let c = parse_str("socket = \"s\"\nexclude_inputs = []\n").unwrap();
        assert_eq!(c.inputs, Some(InputSelection::default()));
        assert_eq!(
            parse_str("socket = \"s\"\ninputs = [\"auditd\",\n  \"my input\", 3]\nexclude_inputs = \"remote\"\n").unwrap_err(),
            [
                "p.toml:3: inputs: \"my input\" is not an input name: 1 to 64 characters of letters, digits, '_', '-' and '.' (\"auditd\" for auditd's records, else the input's --name, such as \"remote\" for audisp-receive)",
                "p.toml:3: inputs: 3 must be an input name in quotes",
                "p.toml:4: exclude_inputs = \"remote\" must be a list in square brackets of input names",
            ]
        );
        assert_eq!(
            parse_str("socket = \"s\"\ninputs = [\"remote\"]\nexclude_inputs = [\"remote\"]\n").unwrap_err(),
            ["p.toml:3: exclude_inputs = [\"remote\"] lists \"remote\", which inputs also lists; an input cannot be both chosen and excluded"]
        );
    }

    #[test]
    fn action_mistakes() {
        let e = parse_str(
            r#"socket = "s"
[actions.Disk-Full]
run = "exec"
[actions.a]
run = "shell"
[actions.b]
program = "/bin/true"
[actions.c]
run = "exec"
[actions.d]
run = "exec"
program = "rm"
[actions.e]
run = "log"
args = ["x"]
[actions.f]
run = "exec"
program = "/no/such/program"
"#,
        )
        .unwrap_err();
        assert_eq!(
            e,
            [
                "p.toml:2: action name \"Disk-Full\" is not allowed; use 1 to 64 lower-case letters, digits, '_' or '-', starting with a letter or digit",
                "p.toml:5: run = \"shell\" is not a known action; use \"ignore\", \"log\", \"exec\", \"suspend\", \"single-user\", \"halt\" or \"poweroff\"",
                "p.toml:6: [actions.b] has no run key; set run = \"ignore\", \"log\", \"exec\", \"suspend\", \"single-user\", \"halt\" or \"poweroff\"",
                "p.toml:8: [actions.c] has run = \"exec\" but no program; add program = \"/path/to/program\"",
                "p.toml:12: program = \"rm\" is not an absolute path; audispd does not search PATH, so write the program's full path",
                "p.toml:15: args = [\"x\"] is only used with run = \"exec\"; remove it or set run = \"exec\"",
                "p.toml:18: action \"f\" program /no/such/program does not exist; install it or correct the path",
            ]
        );
    }

    #[test]
    fn shipped_examples_explain_every_key() {
        let examples = [
            include_str!("../../plugins.d/login-watch.toml.example"),
            include_str!("../../plugins.d/avc-alert.toml.example"),
            include_str!("../../plugins.d/syslog.toml.example"),
            include_str!("../../plugins.d/remote.toml.example"),
        ]
        .concat();
        for key in KEYS.iter().chain(RESTART).chain(ACTION) {
            let shown = examples.lines().any(|l| {
                let l = l.trim_start_matches('#');
                l.starts_with(&format!("{key} = "))
                    || l.starts_with(&format!("[{key}"))
                    || l.starts_with(&format!("{key} = ["))
            });
            assert!(shown, "no example shows {key}");
        }
    }
}
