//! audisp-mail: an audisp plugin that mails the audit events audispd hands
//! it (choose them with `include`/`exclude` in its plugins.d file), over
//! SMTP or through a local sendmail-compatible program. See
//! `docs/audisp-mail.8.md`.
//!
//! * At most one mail per `interval`: the first event is mailed at once,
//!   those that follow within the interval are listed in one digest mail
//!   when it ends (or, with `digest = true`, every event waits for a digest).
//! * A batch is acknowledged to audispd only once its mails are sent and
//!   the events waiting for a digest are on disk ([`pending`]); a mail that
//!   cannot be sent is retried with back-off, or, with `on_failure =
//!   "drop"`, dropped after `attempts` tries and counted.
//! * Subject and body are templates with the event's fields
//!   ([`template`]); the password is read from a private file and never
//!   logged ([`send::Secret`]).

mod pending;
mod send;
mod template;

use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use audisp::config::option_file::{
    self, flag_value, set, text, word, FileFlags, Reader, StartError, Table,
};
use audisp::config::parse_duration;
use audisp::format::JsonWriter;
use audisp::sdk::{Error, Plugin};
use lettre::message::Mailbox;
use lettre::Message;
use pending::{Pending, Store};
use send::{compose, is_loopback, split_server, Route, Secret, Security, Transport};
use template::{EventView, Template};

const USAGE: &str = "usage: audisp-mail [--config FILE | --no-config] [--check-config]
       [--to ADDRESS]... [--from ADDRESS] [--subject TEMPLATE] [--body TEMPLATE]
       [--interval DURATION] [--digest] [--digest-max N]
       [--transport smtp|sendmail] [--sendmail PROGRAM]
       [--server HOST:PORT] [--tls starttls|tls|none] [--ca FILE]
       [--user NAME] [--password-file FILE] [--timeout DURATION]
       [--on-failure retry|drop] [--attempts N] [--retry-max DURATION]
       [--state-dir DIR] [--name NAME] [--listen PLUGIN_SOCKET]
Settings not given as flags come from FILE (default /etc/audisp/audisp-mail.toml,
or $AUDISP_MAIL_CONFIG); `to` and, for SMTP, `server` are required.";

/// The option file read when neither `--config` nor the variable names one.
const DEFAULT_CONFIG: &str = "/etc/audisp/audisp-mail.toml";
/// The variable that names the option file.
const CONFIG_VAR: &str = "AUDISP_MAIL_CONFIG";

const SUBJECT: &str = "[audisp] {type} on {host}";
const BODY: &str = "Audit event {id} on {host} at {time}, {count} records:\n\n{records}\n";
const DIGEST_SUBJECT: &str = "[audisp] {host}: {count} audit events";
const DIGEST_BODY: &str =
    "{count} audit events on {host} from {since} to {until} ({types}):\n\n{events}\n";
const DIGEST_LINE: &str = "{time} {id} {types} auid={auid} exe={exe}";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Via {
    Smtp,
    Sendmail,
}

struct Opts {
    to: Vec<String>,
    from: Option<String>,
    subject: String,
    body: String,
    digest_subject: String,
    digest_body: String,
    digest_line: String,
    interval: Duration,
    digest: bool,
    digest_max: usize,
    via: Via,
    sendmail: PathBuf,
    server: String,
    tls: Security,
    ca: Option<PathBuf>,
    user: Option<String>,
    password_file: Option<PathBuf>,
    timeout: Duration,
    drop: bool,
    attempts: u32,
    retry_max: Duration,
    state_dir: PathBuf,
    name: String,
    listen: Option<PathBuf>,
    check_config: bool,
}

impl Default for Opts {
    fn default() -> Opts {
        Opts {
            to: Vec::new(),
            from: None,
            subject: SUBJECT.into(),
            body: BODY.into(),
            digest_subject: DIGEST_SUBJECT.into(),
            digest_body: DIGEST_BODY.into(),
            digest_line: DIGEST_LINE.into(),
            interval: Duration::from_secs(300),
            digest: false,
            digest_max: 100,
            via: Via::Smtp,
            sendmail: PathBuf::from("/usr/sbin/sendmail"),
            server: String::new(),
            tls: Security::StartTls,
            ca: None,
            user: None,
            password_file: None,
            timeout: Duration::from_secs(30),
            drop: false,
            attempts: 5,
            retry_max: Duration::from_secs(300),
            state_dir: PathBuf::from("/var/lib/audisp-mail"),
            name: "mail".into(),
            listen: None,
            check_config: false,
        }
    }
}

const VIA: &[(&str, Via)] = &[("smtp", Via::Smtp), ("sendmail", Via::Sendmail)];
const TLS: &[(&str, Security)] = &[
    ("starttls", Security::StartTls),
    ("tls", Security::Tls),
    ("none", Security::None),
];
const ON_FAILURE: &[(&str, bool)] = &[("retry", false), ("drop", true)];

/// A count from 1 to `max`.
fn count<T: TryFrom<u64>>(v: &str, max: u64) -> Result<T, String> {
    v.parse::<u64>()
        .ok()
        .filter(|n| (1..=max).contains(n))
        .and_then(|n| T::try_from(n).ok())
        .ok_or_else(|| format!("is not a number from 1 to {max}"))
}

/// A template, checked.
fn check_template(v: &str) -> Result<String, String> {
    Template::parse(v).map(|_| v.to_string())
}

/// A mail address, checked.
fn address(v: &str) -> Result<String, String> {
    v.parse::<Mailbox>()
        .map(|_| v.to_string())
        .map_err(|e| format!("is not a mail address ({e})"))
}

/// Applies the command line to `o`; returns what it says of the option file.
fn apply_flags(o: &mut Opts, args: Vec<OsString>) -> Result<FileFlags, String> {
    use lexopt::prelude::*;
    let mut file = FileFlags::default();
    let mut to = Vec::new();
    let mut p = lexopt::Parser::from_args(args);
    let e = |e: lexopt::Error| e.to_string();
    while let Some(arg) = p.next().map_err(e)? {
        match arg {
            Long("config") => file.config = Some(p.value().map_err(e)?.into()),
            Long("no-config") => file.none = true,
            Long("check-config") => o.check_config = true,
            Long("to") => to.push(flag_value(&mut p, "to", address)?),
            Long("from") => o.from = Some(flag_value(&mut p, "from", address)?),
            Long("subject") => o.subject = flag_value(&mut p, "subject", check_template)?,
            Long("body") => o.body = flag_value(&mut p, "body", check_template)?,
            Long("interval") => o.interval = flag_value(&mut p, "interval", parse_duration)?,
            Long("digest") => o.digest = true,
            Long("digest-max") => {
                o.digest_max = flag_value(&mut p, "digest-max", |v| count(v, 100_000))?
            }
            Long("transport") => o.via = flag_value(&mut p, "transport", |v| word(VIA, v))?,
            Long("sendmail") => o.sendmail = p.value().map_err(e)?.into(),
            Long("server") => o.server = flag_value(&mut p, "server", server)?,
            Long("tls") => o.tls = flag_value(&mut p, "tls", |v| word(TLS, v))?,
            Long("ca") => o.ca = Some(p.value().map_err(e)?.into()),
            Long("user") => o.user = Some(flag_value(&mut p, "user", text)?),
            Long("password-file") => o.password_file = Some(p.value().map_err(e)?.into()),
            Long("timeout") => o.timeout = flag_value(&mut p, "timeout", parse_duration)?,
            Long("on-failure") => {
                o.drop = flag_value(&mut p, "on-failure", |v| word(ON_FAILURE, v))?
            }
            Long("attempts") => o.attempts = flag_value(&mut p, "attempts", |v| count(v, 1000))?,
            Long("retry-max") => o.retry_max = flag_value(&mut p, "retry-max", parse_duration)?,
            Long("state-dir") => o.state_dir = p.value().map_err(e)?.into(),
            Long("name") => o.name = flag_value(&mut p, "name", text)?,
            Long("listen") => o.listen = Some(p.value().map_err(e)?.into()),
            Long("help") | Short('h') => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            _ => return Err(arg.unexpected().to_string()),
        }
    }
    if !to.is_empty() {
        o.to = to;
    }
    Ok(file)
}

/// An SMTP server as `HOST:PORT`.
fn server(v: &str) -> Result<String, String> {
    split_server(v)
        .map(|_| v.to_string())
        .map_err(|_| "is not HOST:PORT; write it such as \"mail.example.org:587\"".to_string())
}

/// Takes the option file's values into `o`; mistakes are recorded by `r`.
fn apply_file<'s>(r: &mut Reader<'s>, top: &Table<'_, 's>, o: &mut Opts) {
    r.reject_unknown(
        top,
        &[
            "to",
            "from",
            "subject",
            "body",
            "interval",
            "digest",
            "digest_subject",
            "digest_body",
            "digest_line",
            "digest_max",
            "transport",
            "sendmail",
            "on_failure",
            "attempts",
            "retry_max",
            "state_dir",
            "name",
            "listen",
            "smtp",
        ],
        |k| {
            let k = k.replace('-', "_");
            ["server", "tls", "ca", "user", "password_file", "timeout", "password"]
                .contains(&k.as_str())
                .then(|| {
                    if k == "password" {
                        "write the password in a file of its own, readable by root only, and name it with password_file in [smtp]".to_string()
                    } else {
                        format!("write {k} in an [smtp] section")
                    }
                })
        },
    );
    set(&mut o.to, r.list(top, "to", address));
    set(&mut o.from, r.parsed(top, "from", address).map(Some));
    for (key, slot) in [
        ("subject", &mut o.subject),
        ("body", &mut o.body),
        ("digest_subject", &mut o.digest_subject),
        ("digest_body", &mut o.digest_body),
        ("digest_line", &mut o.digest_line),
    ] {
        set(slot, r.parsed(top, key, check_template));
    }
    set(&mut o.interval, r.duration(top, "interval"));
    set(&mut o.digest, r.bool(top, "digest"));
    set(&mut o.digest_max, r.count(top, "digest_max"));
    set(&mut o.via, r.choice(top, "transport", "transport", VIA));
    set(&mut o.sendmail, r.path(top, "sendmail"));
    set(
        &mut o.drop,
        r.choice(top, "on_failure", "failure policy", ON_FAILURE),
    );
    set(&mut o.attempts, r.count(top, "attempts"));
    set(&mut o.retry_max, r.duration(top, "retry_max"));
    set(&mut o.state_dir, r.path(top, "state_dir"));
    set(&mut o.name, r.string(top, "name"));
    set(&mut o.listen, r.path(top, "listen").map(Some));
    if let Some(t) = r.table(top, "smtp") {
        r.reject_unknown(
            &t,
            &["server", "tls", "ca", "user", "password_file", "timeout"],
            |k| {
                (k == "password").then(|| {
                    "write the password in a file of its own, readable by root only, and name it with password_file".to_string()
                })
            },
        );
        set(&mut o.server, r.parsed(&t, "server", server));
        set(&mut o.tls, r.choice(&t, "tls", "TLS mode", TLS));
        set(&mut o.ca, r.path(&t, "ca").map(Some));
        set(&mut o.user, r.string(&t, "user").map(Some));
        set(&mut o.password_file, r.path(&t, "password_file").map(Some));
        set(&mut o.timeout, r.duration(&t, "timeout"));
    }
}

/// What the checked settings come to.
struct Setup {
    route: Route,
    from: Mailbox,
    to: Vec<Mailbox>,
    subject: Template,
    body: Template,
    digest_subject: Template,
    digest_body: Template,
    digest_line: Template,
    host: String,
}

/// Checks the settings as a whole and reads what they name (the password
/// file, the sendmail program); every message says what to change.
fn setup(o: &Opts) -> Result<Setup, String> {
    let host = hostname();
    if o.to.is_empty() {
        return Err("nobody to mail: set to = [\"ADDRESS\", …] or give --to ADDRESS".into());
    }
    let mailbox = |v: &str| {
        v.parse::<Mailbox>()
            .map_err(|e| format!("{v:?} is not a mail address ({e})"))
    };
    let to = o.to.iter().map(|t| mailbox(t)).collect::<Result<_, _>>()?;
    let from = mailbox(&o.from.clone().unwrap_or_else(|| format!("audisp@{host}")))?;
    let tpl = |t: &str| Template::parse(t).map_err(|e| format!("template {t:?} {e}"));
    if o.digest && o.interval.is_zero() {
        return Err("digest = true needs an interval (how often a digest goes out)".into());
    }
    if o.attempts == 0 {
        return Err("attempts must be at least 1".into());
    }
    let route = match o.via {
        Via::Sendmail => {
            check_program(&o.sendmail)?;
            Route::Sendmail(o.sendmail.clone())
        }
        Via::Smtp => {
            if o.server.is_empty() {
                return Err("no SMTP server: set server = \"HOST:PORT\" in [smtp], give --server HOST:PORT, or use transport = \"sendmail\"".into());
            }
            let (h, _) = split_server(&o.server)?;
            let login = match (&o.user, &o.password_file) {
                (Some(u), Some(p)) => Some((u.clone(), Secret::read(p)?)),
                (None, None) => None,
                _ => return Err("a login needs both user and password_file".into()),
            };
            if login.is_some() && o.tls == Security::None && !is_loopback(h) {
                return Err(format!(
                    "refusing to send a password to {h} without TLS: set tls = \"starttls\" or \"tls\""
                ));
            }
            Route::Smtp {
                server: o.server.clone(),
                security: o.tls,
                ca: o.ca.clone(),
                login,
                timeout: o.timeout,
            }
        }
    };
    // Reads the CA file now, so that a bad one stops the start.
    Transport::new(&route)?;
    Ok(Setup {
        route,
        from,
        to,
        subject: tpl(&o.subject)?,
        body: tpl(&o.body)?,
        digest_subject: tpl(&o.digest_subject)?,
        digest_body: tpl(&o.digest_body)?,
        digest_line: tpl(&o.digest_line)?,
        host,
    })
}

/// This machine's name (`localhost` if it has none).
fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most `buf.len()` bytes into `buf`.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    match std::str::from_utf8(&buf[..end]) {
        Ok(h) if rc == 0 && !h.is_empty() => h.to_string(),
        _ => "localhost".into(),
    }
}

/// The sendmail program must be one only root could have put there: it
/// runs with the plugin's privileges.
fn check_program(p: &std::path::Path) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    if !p.is_absolute() {
        return Err(format!(
            "sendmail {:?} is not an absolute path",
            p.display()
        ));
    }
    let m = std::fs::metadata(p).map_err(|e| format!("sendmail {}: {e}", p.display()))?;
    let euid = nix::unistd::geteuid().as_raw();
    if !m.is_file() || m.mode() & 0o111 == 0 {
        return Err(format!(
            "sendmail {} is not an executable file",
            p.display()
        ));
    }
    if (m.uid() != 0 && m.uid() != euid) || m.mode() & 0o022 != 0 {
        return Err(format!(
            "sendmail {} must be owned by root and writable by nobody else (mode {:04o}, uid {})",
            p.display(),
            m.mode() & 0o7777,
            m.uid()
        ));
    }
    Ok(())
}

/// Seconds since the epoch.
fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

/// How a delivery ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Sent,
    Dropped,
    Stopped,
}

/// Sends mails, retrying as configured.
struct Sender {
    transport: Transport,
    retry_max: Duration,
    /// Attempts before a mail is dropped; `None`: retried until sent.
    give_up: Option<u32>,
    /// Mails dropped so far.
    dropped: Mutex<u64>,
}

impl Sender {
    /// Sends `mail` (`what` names it in messages); between attempts calls
    /// `pause`, which says false when the plugin must stop.
    fn deliver(
        &self,
        what: &str,
        mail: &Message,
        pause: &mut dyn FnMut(Duration) -> bool,
    ) -> Outcome {
        let mut wait = Duration::from_secs(1).min(self.retry_max);
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            match self.transport.send(mail) {
                Ok(()) => {
                    if attempt > 1 {
                        eprintln!("audisp-mail: {what} sent (attempt {attempt})");
                    }
                    return Outcome::Sent;
                }
                Err(e) if self.give_up.is_some_and(|n| attempt >= n) => {
                    let mut d = self.dropped.lock().unwrap_or_else(|p| p.into_inner());
                    *d += 1;
                    eprintln!(
                        "audisp-mail: {what} dropped after {attempt} attempts ({e}); {} mails dropped so far",
                        *d
                    );
                    return Outcome::Dropped;
                }
                Err(e) => {
                    eprintln!(
                        "audisp-mail: cannot send {what} (attempt {attempt}): {e}; retrying in {}s",
                        wait.as_secs_f32()
                    );
                    if !pause(wait) {
                        return Outcome::Stopped;
                    }
                    wait = (wait * 2).min(self.retry_max);
                }
            }
        }
    }
}

/// The rate limit, the digest in waiting and its file.
struct Limiter {
    pending: Pending,
    store: Option<Store>,
    interval: Duration,
    digest: bool,
    digest_max: usize,
}

impl Limiter {
    /// Whether an event taken at `at` may be mailed at once.
    fn may_send_now(&self, at: u64) -> bool {
        !self.digest
            && self.pending.count() == 0
            && self
                .pending
                .last_mail
                .is_none_or(|t| at >= t + self.interval.as_secs())
    }

    /// When the waiting digest is due, if one waits.
    fn digest_due(&self) -> Option<u64> {
        if self.pending.count() == 0 {
            return None;
        }
        let i = self.interval.as_secs();
        let after_last = self.pending.last_mail.map_or(0, |t| t + i);
        let after_first = if self.digest {
            self.pending.first.map_or(0, |t| t + i)
        } else {
            0
        };
        Some(after_last.max(after_first))
    }

    fn save(&self) -> Result<(), String> {
        match &self.store {
            Some(s) => s.save(&self.pending),
            None => Ok(()),
        }
    }
}

fn main() {
    let parsed = option_file::settings(
        "audisp-mail",
        CONFIG_VAR,
        DEFAULT_CONFIG,
        std::env::args_os().skip(1).collect(),
        apply_flags,
        apply_file,
    )
    .and_then(|(o, _)| {
        let s = setup(&o).map_err(StartError::Usage)?;
        Ok((o, s))
    });
    let (o, s) =
        option_file::settings_to_run("audisp-mail", USAGE, parsed, |(o, _)| o.check_config);
    if let Err(e) = run(o, s) {
        eprintln!("audisp-mail: {e}");
        std::process::exit(1);
    }
}

fn run(o: Opts, s: Setup) -> Result<(), String> {
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(sig, stop.clone()).map_err(|e| format!("signals: {e}"))?;
    }
    let limited = !o.interval.is_zero() || o.digest;
    let store = if limited {
        Some(Store::open(&o.state_dir)?)
    } else {
        None
    };
    let pending = match &store {
        Some(st) => st.load()?,
        None => Pending::default(),
    };
    if pending.count() > 0 {
        eprintln!(
            "audisp-mail: {} events wait for a digest from before the restart",
            pending.count()
        );
    }
    let limiter = Arc::new(Mutex::new(Limiter {
        pending,
        store,
        interval: o.interval,
        digest: o.digest,
        digest_max: o.digest_max,
    }));
    let sender = Arc::new(Sender {
        transport: Transport::new(&s.route)?,
        retry_max: o.retry_max,
        give_up: o.drop.then_some(o.attempts),
        dropped: Mutex::new(0),
    });
    let s = Arc::new(s);
    let digests = {
        let (limiter, sender, s, stop) = (limiter.clone(), sender.clone(), s.clone(), stop.clone());
        std::thread::Builder::new()
            .name("digest".into())
            .spawn(move || digest_loop(&limiter, &sender, &s, &stop))
            .map_err(|e| format!("cannot start the digest thread: {e}"))?
    };

    let mut plugin = Plugin::new(&o.name).events();
    if let Some(l) = &o.listen {
        plugin = plugin.listen(l);
    }
    let mut json = JsonWriter::new();
    let mut sent = 0u64;
    let result = plugin.run(|batch, ctx| {
        // The digest thread may hold the limiter while it writes its file.
        let mut lim = loop {
            if let Ok(l) = limiter.try_lock() {
                break l;
            }
            ctx.idle(Duration::from_millis(50))?;
        };
        let mut changed = false;
        for ev in batch.events() {
            let texts: Vec<&[u8]> = ev.records().map(|r| r.text).collect();
            let mut out = Vec::new();
            json.write_event(&texts, &mut out);
            let view = EventView {
                host: s.host.clone(),
                records: texts
                    .iter()
                    .map(|t| String::from_utf8_lossy(t).into_owned())
                    .collect(),
                json: serde_json::from_slice(&out).unwrap_or_default(),
            };
            let at = now();
            if lim.may_send_now(at) {
                let value = |n: &str| view.value(n);
                let mail = compose(
                    &s.from,
                    &s.to,
                    &s.subject.render(&value),
                    s.body.render(&value),
                )?;
                let what = format!("the mail for event {}", view.id());
                let mut pause = |d: Duration| ctx.idle(d).is_ok() && !stop.load(Ordering::SeqCst);
                match sender.deliver(&what, &mail, &mut pause) {
                    Outcome::Sent => sent += 1,
                    Outcome::Dropped => {}
                    Outcome::Stopped => {
                        return Err(format!(
                            "stopping before {what} was sent; audispd keeps the event"
                        )
                        .into())
                    }
                }
                if limited {
                    lim.pending.last_mail = Some(at);
                    changed = true;
                }
            } else {
                let line = s.digest_line.render(&|n: &str| view.value(n));
                let max = lim.digest_max;
                lim.pending
                    .add(line, &view.value("type"), view.time(), at, max);
                changed = true;
            }
        }
        if changed {
            // On disk before audispd is told the batch is done.
            lim.save()?;
        }
        Ok(())
    });
    stop.store(true, Ordering::SeqCst);
    let _ = digests.join();
    let dropped = *sender.dropped.lock().unwrap_or_else(|p| p.into_inner());
    eprintln!("audisp-mail: {sent} event mails sent, {dropped} mails dropped");
    match result {
        Ok(()) => Ok(()),
        Err(Error::Rejected(why)) => Err(format!("rejected by the dispatcher: {why}")),
        Err(Error::Handler(e)) if stop.load(Ordering::SeqCst) => {
            eprintln!("audisp-mail: {e}");
            Ok(())
        }
        Err(e) => Err(e.to_string()),
    }
}

/// Sends each digest when it is due, until told to stop. The limiter is
/// held only to read and settle the digest, never while sending, so
/// batches keep being taken (and wait for the next digest) meanwhile.
fn digest_loop(limiter: &Mutex<Limiter>, sender: &Sender, s: &Setup, stop: &AtomicBool) {
    let tick = Duration::from_millis(250);
    while !stop.load(Ordering::SeqCst) {
        std::thread::sleep(tick);
        let at = now();
        let (mail, covered, count) = {
            let lim = limiter.lock().unwrap_or_else(|p| p.into_inner());
            match lim.digest_due() {
                Some(due) if at >= due => {}
                _ => continue,
            }
            let p = &lim.pending;
            let mut events = p.lines.join("\n");
            if p.more > 0 {
                events.push_str(&format!("\n… and {} more events, not listed", p.more));
            }
            let (since, until) = p.span.clone().unwrap_or_default();
            let value = |n: &str| match n {
                "host" => s.host.clone(),
                "count" => p.count().to_string(),
                "listed" => p.lines.len().to_string(),
                "more" => p.more.to_string(),
                "since" => since.clone(),
                "until" => until.clone(),
                "types" => p.types(),
                "events" => events.clone(),
                _ => "-".into(),
            };
            let mail = compose(
                &s.from,
                &s.to,
                &s.digest_subject.render(&value),
                s.digest_body.render(&value),
            );
            (mail, p.covered(), p.count())
        };
        let outcome = match mail {
            Ok(m) => {
                let mut pause = |d: Duration| {
                    let end = std::time::Instant::now() + d;
                    while std::time::Instant::now() < end {
                        if stop.load(Ordering::SeqCst) {
                            return false;
                        }
                        std::thread::sleep(tick);
                    }
                    true
                };
                sender.deliver(&format!("the digest of {count} events"), &m, &mut pause)
            }
            Err(e) => {
                eprintln!("audisp-mail: {e}; the digest is dropped");
                Outcome::Dropped
            }
        };
        if outcome == Outcome::Stopped {
            return;
        }
        let mut lim = limiter.lock().unwrap_or_else(|p| p.into_inner());
        lim.pending.settle(&covered, now());
        if let Err(e) = lim.save() {
            eprintln!("audisp-mail: {e}");
        }
    }
}
