//! audisp-nats's settings: defaults, then `/etc/audisp/audisp-nats.toml`
//! (`--config`), then the command line, as every program of the suite
//! takes them. One file serves both sides: the connection (servers, stream,
//! `[tls]`, `[auth]`) at the top, `[publish]` and `[consume]` for each
//! side; either subcommand checks the whole file, so `--check-config` of
//! one finds the other's mistakes too.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use audisp::config::option_file::{
    self, flag_value, set, text, FileFlags, Reader, StartError, Table,
};
use audisp::config::{parse_duration, parse_size};
use audisp::remote::sender::Action;

pub const USAGE: &str = "usage: audisp-nats publish|consume|create-stream [options]
  common: [--config FILE | --no-config] [--check-config]
       [--server nats://HOST:PORT]... [--stream NAME] [--retry-max SECS]
       [--tls-ca F [--tls-cert F --tls-key F]]
       [--creds F | --nkey F | --token-file F]
  publish (an audispd plugin): [--subject TEMPLATE] [--format text|json] [--events]
       [--records-per-message N] [--host NAME] [--host-id ID] [--max-pending N] [--ack-timeout SECS]
       [--on-network-failure A] [--on-stream-full A] [--on-refused A]
       (A: ignore, log, reconnect, suspend, dispatcher:NAME)
       [--name NAME] [--listen SOCKET]
  consume (an audispd input): [--durable NAME] [--filter SUBJECT]
       [--socket INPUT_SOCKET] [--input-name NAME] [--state-dir DIR]
       [--batch N] [--ack-wait SECS]
  create-stream: [--subjects SUBJECT] [--replicas N] [--storage file|memory]
       [--duplicate-window SECS] [--max-age SECS] [--max-bytes BYTES]
       [--retention limits|interest|workqueue]
Settings not given as flags come from FILE (default /etc/audisp/audisp-nats.toml,
or $AUDISP_NATS_CONFIG); at least one server is required in one or the other.";

/// The option file read when neither `--config` nor the variable names one.
const DEFAULT_CONFIG: &str = "/etc/audisp/audisp-nats.toml";
/// The variable that names the option file (tests, relocated installs).
const CONFIG_VAR: &str = "AUDISP_NATS_CONFIG";

/// Which side of audisp-nats runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// An output plugin of audispd that publishes into a stream.
    Publish,
    /// A durable pull consumer that feeds audispd's input socket.
    Consume,
    /// Creates (or checks) the stream the other two use.
    CreateStream,
}

impl Mode {
    /// The subcommand as written.
    pub fn parse(word: &str) -> Option<Mode> {
        match word {
            "publish" => Some(Mode::Publish),
            "consume" => Some(Mode::Consume),
            "create-stream" => Some(Mode::CreateStream),
            _ => None,
        }
    }
}

/// Authentication towards the servers; at most one kind.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Auth {
    /// None (or what the URL carries).
    #[default]
    None,
    /// A `.creds` file (user JWT and NKey seed).
    Creds(PathBuf),
    /// A file holding an NKey seed (`SU…`).
    Nkey(PathBuf),
    /// A file holding a token.
    Token(PathBuf),
}

/// TLS files: a CA to trust, and optionally a client certificate and key.
#[derive(Debug, Clone, Default)]
pub struct Tls {
    pub ca: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

/// The connection, shared by both sides.
#[derive(Debug, Clone)]
pub struct Connection {
    pub servers: Vec<String>,
    pub stream: String,
    pub tls: Tls,
    pub auth: Auth,
    /// Largest pause between reconnection attempts.
    pub retry_max: Duration,
}

/// What the payload of a message holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// auditd's text, as audispd delivers it (one line per record).
    Text,
    /// The suite's JSON (as audisp-logfile writes it).
    Json,
}

/// The failure cases of publishing with an action of their own.
#[derive(Debug, Clone)]
pub struct Failure {
    /// No server can be reached (first failure of an outage).
    pub network_failure: Action,
    /// The stream refuses more (a limit reached, no space).
    pub stream_full: Action,
    /// The servers refuse the messages (no stream for the subject, no
    /// JetStream, not permitted).
    pub refused: Action,
}

/// The publishing side.
#[derive(Debug, Clone)]
pub struct Publish {
    pub subject: String,
    pub format: Format,
    pub events: bool,
    /// Most records one message holds (whole events in events mode).
    pub records_per_message: usize,
    pub host: Option<String>,
    pub host_id: Option<String>,
    pub max_pending: usize,
    pub ack_timeout: Duration,
    pub failure: Failure,
    pub name: String,
    pub listen: Option<PathBuf>,
}

/// The consuming side.
#[derive(Debug, Clone)]
pub struct Consume {
    pub durable: String,
    pub filter: Option<String>,
    pub socket: PathBuf,
    pub input_name: String,
    pub state_dir: PathBuf,
    pub batch: usize,
    pub ack_wait: Duration,
}

/// Storage of a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Storage {
    File,
    Memory,
}

/// Retention of a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retention {
    Limits,
    Interest,
    WorkQueue,
}

/// What `create-stream` creates (flags only: a stream is made once).
#[derive(Debug, Clone)]
pub struct NewStream {
    pub subjects: String,
    pub replicas: usize,
    pub storage: Storage,
    pub duplicate_window: Duration,
    pub max_age: Duration,
    pub max_bytes: Option<u64>,
    pub retention: Retention,
}

/// Every setting.
#[derive(Debug, Clone)]
pub struct Opts {
    pub connection: Connection,
    pub publish: Publish,
    pub consume: Consume,
    pub stream: NewStream,
    /// `--check-config`: stop after reading the settings.
    pub check_config: bool,
}

impl Default for Opts {
    fn default() -> Opts {
        Opts {
            connection: Connection {
                servers: Vec::new(),
                stream: "AUDIT".into(),
                tls: Tls::default(),
                auth: Auth::None,
                retry_max: Duration::from_secs(30),
            },
            publish: Publish {
                subject: "audit.{host}.{type}".into(),
                format: Format::Text,
                events: false,
                records_per_message: 512,
                host: None,
                host_id: None,
                max_pending: 20_000,
                ack_timeout: Duration::from_secs(5),
                failure: Failure {
                    network_failure: Action::Log,
                    stream_full: Action::Log,
                    refused: Action::Log,
                },
                name: "nats".into(),
                listen: None,
            },
            consume: Consume {
                durable: "audisp".into(),
                filter: None,
                socket: PathBuf::from("/run/audisp/input.sock"),
                input_name: "nats".into(),
                state_dir: PathBuf::from("/var/lib/audisp-nats"),
                batch: 2000,
                ack_wait: Duration::from_secs(30),
            },
            stream: NewStream {
                subjects: "audit.>".into(),
                replicas: 1,
                storage: Storage::File,
                duplicate_window: Duration::from_secs(120),
                max_age: Duration::ZERO,
                max_bytes: None,
                retention: Retention::Limits,
            },
            check_config: false,
        }
    }
}

const FORMAT: &[(&str, Format)] = &[("text", Format::Text), ("json", Format::Json)];
const STORAGE: &[(&str, Storage)] = &[("file", Storage::File), ("memory", Storage::Memory)];
const RETENTION: &[(&str, Retention)] = &[
    ("limits", Retention::Limits),
    ("interest", Retention::Interest),
    ("workqueue", Retention::WorkQueue),
];

/// Defaults, then the option file, then the flags of subcommand `mode`.
pub fn parse(mode: Mode, args: Vec<OsString>) -> Result<Opts, StartError> {
    let (o, source) = option_file::settings(
        "audisp-nats",
        CONFIG_VAR,
        DEFAULT_CONFIG,
        args,
        |o: &mut Opts, a| apply_flags(mode, o, a),
        apply_file,
    )?;
    if o.connection.servers.is_empty() {
        return Err(StartError::Usage(match source {
            None => "no server: give --server nats://HOST:PORT (--no-config reads no settings file)"
                .into(),
            Some(src) => format!(
                "no server: set servers = [\"nats://HOST:PORT\"] in {} or give --server nats://HOST:PORT",
                src.path.display()
            ),
        }));
    }
    Ok(o)
}

/// Flags that belong to one subcommand only.
fn owner(flag: &str) -> Option<Mode> {
    const PUBLISH: &[&str] = &[
        "subject",
        "format",
        "events",
        "host",
        "host-id",
        "max-pending",
        "ack-timeout",
        "on-network-failure",
        "on-stream-full",
        "on-refused",
        "name",
        "listen",
    ];
    const CONSUME: &[&str] = &[
        "durable",
        "filter",
        "socket",
        "input-name",
        "state-dir",
        "batch",
        "ack-wait",
    ];
    const CREATE: &[&str] = &[
        "subjects",
        "replicas",
        "storage",
        "duplicate-window",
        "max-age",
        "max-bytes",
        "retention",
    ];
    if PUBLISH.contains(&flag) {
        Some(Mode::Publish)
    } else if CONSUME.contains(&flag) {
        Some(Mode::Consume)
    } else if CREATE.contains(&flag) {
        Some(Mode::CreateStream)
    } else {
        None
    }
}

/// Applies the command line to `o`; returns what it says of the option file.
fn apply_flags(mode: Mode, o: &mut Opts, args: Vec<OsString>) -> Result<FileFlags, String> {
    use lexopt::prelude::*;
    let mut file = FileFlags::default();
    let mut servers = Vec::new();
    let mut p = lexopt::Parser::from_args(args);
    let e = |e: lexopt::Error| e.to_string();
    while let Some(arg) = p.next().map_err(e)? {
        if let Long(flag) = arg {
            if let Some(m) = owner(flag).filter(|m| *m != mode) {
                let which = match m {
                    Mode::Publish => "publish",
                    Mode::Consume => "consume",
                    Mode::CreateStream => "create-stream",
                };
                return Err(format!("--{flag} is an option of `audisp-nats {which}`"));
            }
        }
        let c = &mut o.connection;
        let (pb, cs, st) = (&mut o.publish, &mut o.consume, &mut o.stream);
        match arg {
            Long("config") => file.config = Some(p.value().map_err(e)?.into()),
            Long("no-config") => file.none = true,
            Long("check-config") => o.check_config = true,
            Long("server") => servers.push(flag_value(&mut p, "server", check_server)?),
            Long("stream") => c.stream = flag_value(&mut p, "stream", check_name)?,
            Long("retry-max") => c.retry_max = flag_value(&mut p, "retry-max", parse_duration)?,
            Long("tls-ca") => c.tls.ca = Some(p.value().map_err(e)?.into()),
            Long("tls-cert") => c.tls.cert = Some(p.value().map_err(e)?.into()),
            Long("tls-key") => c.tls.key = Some(p.value().map_err(e)?.into()),
            Long("creds") => c.auth = Auth::Creds(p.value().map_err(e)?.into()),
            Long("nkey") => c.auth = Auth::Nkey(p.value().map_err(e)?.into()),
            Long("token-file") => c.auth = Auth::Token(p.value().map_err(e)?.into()),
            Long("subject") => pb.subject = flag_value(&mut p, "subject", check_template)?,
            Long("format") => pb.format = flag_value(&mut p, "format", |v| word(FORMAT, v))?,
            Long("events") => pb.events = true,
            Long("records-per-message") => {
                pb.records_per_message =
                    flag_value(&mut p, "records-per-message", records_per_message)?
            }
            Long("host") => pb.host = Some(flag_value(&mut p, "host", text)?),
            Long("host-id") => pb.host_id = Some(flag_value(&mut p, "host-id", text)?),
            Long("max-pending") => pb.max_pending = flag_value(&mut p, "max-pending", pending)?,
            Long("ack-timeout") => {
                pb.ack_timeout = flag_value(&mut p, "ack-timeout", parse_duration)?
            }
            Long("on-network-failure") => {
                pb.failure.network_failure = flag_value(&mut p, "on-network-failure", action)?
            }
            Long("on-stream-full") => {
                pb.failure.stream_full = flag_value(&mut p, "on-stream-full", action)?
            }
            Long("on-refused") => pb.failure.refused = flag_value(&mut p, "on-refused", action)?,
            Long("name") => pb.name = flag_value(&mut p, "name", text)?,
            Long("listen") => pb.listen = Some(p.value().map_err(e)?.into()),
            Long("durable") => cs.durable = flag_value(&mut p, "durable", check_name)?,
            Long("filter") => cs.filter = Some(flag_value(&mut p, "filter", check_subject)?),
            Long("socket") => cs.socket = p.value().map_err(e)?.into(),
            Long("input-name") => cs.input_name = flag_value(&mut p, "input-name", text)?,
            Long("state-dir") => cs.state_dir = p.value().map_err(e)?.into(),
            Long("batch") => cs.batch = flag_value(&mut p, "batch", positive)?,
            Long("ack-wait") => cs.ack_wait = flag_value(&mut p, "ack-wait", parse_duration)?,
            Long("subjects") => st.subjects = flag_value(&mut p, "subjects", check_subject)?,
            Long("replicas") => st.replicas = flag_value(&mut p, "replicas", replicas)?,
            Long("storage") => st.storage = flag_value(&mut p, "storage", |v| word(STORAGE, v))?,
            Long("duplicate-window") => {
                st.duplicate_window = flag_value(&mut p, "duplicate-window", parse_duration)?
            }
            Long("max-age") => st.max_age = flag_value(&mut p, "max-age", parse_duration)?,
            Long("max-bytes") => st.max_bytes = Some(flag_value(&mut p, "max-bytes", parse_size)?),
            Long("retention") => {
                st.retention = flag_value(&mut p, "retention", |v| word(RETENTION, v))?
            }
            Long("help") | Short('h') => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            _ => return Err(arg.unexpected().to_string()),
        }
    }
    if !servers.is_empty() {
        o.connection.servers = servers;
    }
    Ok(file)
}

/// Takes the option file's values into `o`; mistakes are recorded by `r`.
fn apply_file<'s>(r: &mut Reader<'s>, top: &Table<'_, 's>, o: &mut Opts) {
    r.reject_unknown(
        top,
        &[
            "servers",
            "stream",
            "retry_max",
            "tls",
            "auth",
            "publish",
            "consume",
        ],
        flag_spelling,
    );
    let c = &mut o.connection;
    set(&mut c.servers, r.list(top, "servers", check_server));
    set(&mut c.stream, r.parsed(top, "stream", check_name));
    set(&mut c.retry_max, r.duration(top, "retry_max"));
    if let Some(t) = r.table(top, "tls") {
        r.reject_unknown(&t, &["ca", "cert", "key"], |_| None);
        set(&mut c.tls.ca, r.path(&t, "ca").map(Some));
        set(&mut c.tls.cert, r.path(&t, "cert").map(Some));
        set(&mut c.tls.key, r.path(&t, "key").map(Some));
    }
    if let Some(t) = r.table(top, "auth") {
        r.reject_unknown(&t, &["creds", "nkey", "token_file"], |_| None);
        if let Some(p) = r.path(&t, "creds") {
            c.auth = Auth::Creds(p);
        }
        if let Some(p) = r.path(&t, "nkey") {
            c.auth = Auth::Nkey(p);
        }
        if let Some(p) = r.path(&t, "token_file") {
            c.auth = Auth::Token(p);
        }
    }
    if let Some(t) = r.table(top, "publish") {
        let pb = &mut o.publish;
        r.reject_unknown(
            &t,
            &[
                "subject",
                "format",
                "events",
                "records_per_message",
                "host",
                "host_id",
                "max_pending",
                "ack_timeout",
                "name",
                "listen",
                "failure",
            ],
            |_| None,
        );
        set(&mut pb.subject, r.parsed(&t, "subject", check_template));
        set(&mut pb.format, r.choice(&t, "format", "format", FORMAT));
        set(&mut pb.events, r.bool(&t, "events"));
        if let Some(n) = r.count::<usize>(&t, "records_per_message") {
            pb.records_per_message = n.clamp(1, MAX_RECORDS_PER_MESSAGE);
        }
        set(&mut pb.host, r.string(&t, "host").map(Some));
        set(&mut pb.host_id, r.string(&t, "host_id").map(Some));
        if let Some(n) = r.count::<usize>(&t, "max_pending") {
            pb.max_pending = n.clamp(1, MAX_PENDING);
        }
        set(&mut pb.ack_timeout, r.duration(&t, "ack_timeout"));
        set(&mut pb.name, r.string(&t, "name"));
        set(&mut pb.listen, r.path(&t, "listen").map(Some));
        if let Some(f) = r.table(&t, "failure") {
            let a = &mut pb.failure;
            let cases = [
                ("network_failure", &mut a.network_failure),
                ("stream_full", &mut a.stream_full),
                ("refused", &mut a.refused),
            ];
            let names: Vec<&str> = cases.iter().map(|(k, _)| *k).collect();
            r.reject_unknown(&f, &names, |_| None);
            for (key, slot) in cases {
                set(slot, r.parsed(&f, key, action));
            }
        }
    }
    if let Some(t) = r.table(top, "consume") {
        let cs = &mut o.consume;
        r.reject_unknown(
            &t,
            &[
                "durable",
                "filter",
                "socket",
                "input_name",
                "state_dir",
                "batch",
                "ack_wait",
            ],
            |_| None,
        );
        set(&mut cs.durable, r.parsed(&t, "durable", check_name));
        set(
            &mut cs.filter,
            r.parsed(&t, "filter", check_subject).map(Some),
        );
        set(&mut cs.socket, r.path(&t, "socket"));
        set(&mut cs.input_name, r.string(&t, "input_name"));
        set(&mut cs.state_dir, r.path(&t, "state_dir"));
        if let Some(n) = r.count::<usize>(&t, "batch") {
            cs.batch = n.max(1);
        }
        set(&mut cs.ack_wait, r.duration(&t, "ack_wait"));
    }
}

/// Where a flag's name written as a top-level key belongs instead.
fn flag_spelling(key: &str) -> Option<String> {
    let k = key.replace('-', "_");
    if let Some(rest) = k.strip_prefix("tls_") {
        return Some(format!("write {rest} in a [tls] section"));
    }
    if matches!(k.as_str(), "creds" | "nkey" | "token_file") {
        return Some(format!("write {k} in an [auth] section"));
    }
    if k == "server" {
        return Some("write servers = [\"nats://HOST:PORT\"]".into());
    }
    if let Some(rest) = k.strip_prefix("on_") {
        return Some(format!("write {rest} in a [publish.failure] section"));
    }
    match owner(&key.replace('_', "-")) {
        Some(Mode::Publish) => Some(format!("write {k} in a [publish] section")),
        Some(Mode::Consume) => Some(format!("write {k} in a [consume] section")),
        Some(Mode::CreateStream) => {
            Some(format!("{k} is a flag of `audisp-nats create-stream` only"))
        }
        None => None,
    }
}

/// A failure action, as `--on-*` and `[publish.failure]` write it.
fn action(v: &str) -> Result<Action, String> {
    Action::parse(v).map_err(|_| {
        "is not a failure action; use \"ignore\", \"log\", \"reconnect\", \"suspend\" or \"dispatcher:NAME\" (NAME: an [actions.NAME] of this plugin's plugins.d file; lower-case letters, digits, '-', '_')".to_string()
    })
}

/// A server URL: `nats://HOST:PORT`, `tls://HOST:PORT` or `HOST:PORT`.
fn check_server(v: &str) -> Result<String, String> {
    let rest = v
        .strip_prefix("nats://")
        .or_else(|| v.strip_prefix("tls://"))
        .unwrap_or(v);
    let hostport = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
    let ok = !v.contains("://") || v.starts_with("nats://") || v.starts_with("tls://");
    let ok = ok
        && hostport.rsplit_once(':').is_some_and(|(host, port)| {
            !host.trim_matches(|c| c == '[' || c == ']').is_empty()
                && port.parse::<u16>().is_ok_and(|p| p > 0)
        });
    if ok && !v.contains('@') {
        Ok(v.to_string())
    } else if v.contains('@') {
        Err("carries credentials in the URL, where every process listing shows them; use [auth] (--creds, --nkey, --token-file)".into())
    } else {
        Err("is not a NATS server URL; write it such as \"nats://nats1.example:4222\" or \"tls://[2001:db8::1]:4222\"".into())
    }
}

/// A stream or consumer name: letters, digits, `-` and `_`.
fn check_name(v: &str) -> Result<String, String> {
    if !v.is_empty()
        && v.len() <= 64
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        Ok(v.to_string())
    } else {
        Err("is not a name; use 1-64 letters, digits, '-' or '_'".into())
    }
}

/// A subject (wildcards allowed): dot-separated tokens without spaces.
fn check_subject(v: &str) -> Result<String, String> {
    let ok = !v.is_empty()
        && v.split('.')
            .all(|t| !t.is_empty() && !t.bytes().any(|b| b.is_ascii_whitespace()));
    if ok {
        Ok(v.to_string())
    } else {
        Err("is not a subject; write dot-separated tokens such as \"audit.>\"".into())
    }
}

/// A subject template: a subject whose tokens may be `{host}`, `{node}`
/// or `{type}`.
fn check_template(v: &str) -> Result<String, String> {
    check_subject(v)?;
    for t in v.split('.') {
        if t == "*" || t == ">" {
            return Err("holds a wildcard; a message is published on one subject".into());
        }
        let mut rest = t;
        while let Some(i) = rest.find('{') {
            let after = &rest[i + 1..];
            let Some(end) = after.find('}') else {
                return Err("has a '{' without '}'".into());
            };
            let name = &after[..end];
            if !matches!(name, "host" | "node" | "type") {
                return Err(format!(
                    "names {{{name}}}; the placeholders are {{host}}, {{node}} and {{type}}"
                ));
            }
            rest = &after[end + 1..];
        }
    }
    Ok(v.to_string())
}

/// One of `choices`, by name.
fn word<T: Copy>(choices: &[(&str, T)], v: &str) -> Result<T, String> {
    match choices.iter().find(|(n, _)| *n == v) {
        Some((_, t)) => Ok(*t),
        None => {
            let names: Vec<&str> = choices.iter().map(|(n, _)| *n).collect();
            Err(format!("is not one of {}", names.join(", ")))
        }
    }
}

/// A whole number of at least 1.
fn positive(v: &str) -> Result<usize, String> {
    match v.parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err("is not a whole number of at least 1".into()),
    }
}

/// The most messages in flight: PubAcks beyond what the client's inbox
/// subscription buffers (64 Ki) would be dropped by the client.
pub const MAX_PENDING: usize = 60_000;

/// Most records in one message: enough to make a message's cost per record
/// small, few enough that a message stays far below NATS's payload limit.
pub const MAX_RECORDS_PER_MESSAGE: usize = 10_000;

/// Records per message, 1 to [`MAX_RECORDS_PER_MESSAGE`].
fn records_per_message(v: &str) -> Result<usize, String> {
    match v.parse::<usize>() {
        Ok(n) if (1..=MAX_RECORDS_PER_MESSAGE).contains(&n) => Ok(n),
        _ => Err(format!(
            "is not a whole number from 1 to {MAX_RECORDS_PER_MESSAGE}"
        )),
    }
}

/// A count of messages in flight, 1 to [`MAX_PENDING`].
fn pending(v: &str) -> Result<usize, String> {
    match v.parse::<usize>() {
        Ok(n) if (1..=MAX_PENDING).contains(&n) => Ok(n),
        _ => Err(format!("is not a whole number from 1 to {MAX_PENDING}")),
    }
}

/// A replica count JetStream accepts (1 to 5).
fn replicas(v: &str) -> Result<usize, String> {
    match v.parse::<usize>() {
        Ok(n) if (1..=5).contains(&n) => Ok(n),
        _ => Err("is not a replica count from 1 to 5".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn servers_names_and_templates_are_checked() {
        assert!(check_server("nats://a.example:4222").is_ok());
        assert!(check_server("tls://[::1]:4222").is_ok());
        assert!(check_server("a:4222").is_ok());
        assert!(check_server("http://a:4222").is_err());
        assert!(check_server("nats://a").is_err());
        assert!(check_server("nats://u:p@a:4222")
            .unwrap_err()
            .contains("credentials"));
        assert!(check_name("AUDIT-1_x").is_ok());
        assert!(check_name("a.b").is_err());
        assert!(check_template("audit.{host}.{type}").is_ok());
        assert!(check_template("audit.x{node}y").is_ok());
        assert!(check_template("audit.*").is_err());
        assert!(check_template("audit.{user}")
            .unwrap_err()
            .contains("{user}"));
        assert!(check_template("audit.{host").is_err());
        assert!(check_template("audit..x").is_err());
    }

    #[test]
    fn a_flag_of_the_other_side_is_refused() {
        let args = |v: &[&str]| v.iter().map(OsString::from).collect();
        let mut o = Opts::default();
        let err = apply_flags(Mode::Consume, &mut o, args(&["--subject", "a.b"])).unwrap_err();
        assert_eq!(err, "--subject is an option of `audisp-nats publish`");
        apply_flags(
            Mode::Publish,
            &mut o,
            args(&["--server", "nats://h:1", "--server", "h:2", "--events"]),
        )
        .unwrap();
        assert_eq!(o.connection.servers, ["nats://h:1", "h:2"]);
        assert!(o.publish.events);
    }
}
