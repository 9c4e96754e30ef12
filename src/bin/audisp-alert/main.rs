//! audisp-alert: an audisp plugin that notifies when an event matches one
//! of the admin's rules.
//!
//! It receives whole events; each rule (`[rule.NAME]` in
//! `/etc/audisp/audisp-alert.toml`) is a filter expression (the syntax of
//! plugins.d `filter`, `docs/filter.md`), a summary template and a rate
//! limit ([`rules`]). An event matches a rule when any of its records
//! does. Each match within the rule's limit becomes:
//!
//! * a journal entry of its own, written by this plugin through journald's
//!   native protocol (`MESSAGE_ID` [`audisp::log_ids::ALERT_MATCH`], the
//!   rule, the event id, the summary and the event's fields; [`event`]);
//! * a `NOTIFY` to audispd over the plugin connection, which audispd
//!   announces as the D-Bus signal `org.audisp.Dispatcher1.Match`.
//!
//! Matches over a rule's limit are counted; the count goes with the rule's
//! next notice, and what is left when the plugin stops goes to the
//! journal. See `docs/audisp-alert.8.md`.

mod event;
mod rules;

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use audisp::config::option_file::{self, flag_value, set, FileFlags, Reader, StartError, Table};
use audisp::filter::{Filter, Scratch};
use audisp::protocol::{self, Notice};
use audisp::sdk::Plugin;
use audisp::systemd::journald::{self, Entry, Journald};
use event::EventFields;
use rules::{RateLimit, Rule, Template, DEFAULT_SUMMARY};

const USAGE: &str = "usage: audisp-alert [--config FILE | --no-config] [--check-config]
       [--name NAME] [--listen SOCKET] [--journal-socket SOCKET] [--max-fields N]
Rules ([rule.NAME] filter = '...') and settings not given as flags come from
FILE (default /etc/audisp/audisp-alert.toml, or $AUDISP_ALERT_CONFIG).";

/// The option file read when neither `--config` nor the variable names one.
const DEFAULT_CONFIG: &str = "/etc/audisp/audisp-alert.toml";
/// The variable that names the option file (tests, relocated installs).
const CONFIG_VAR: &str = "AUDISP_ALERT_CONFIG";
/// The most rules a file may hold.
const MAX_RULES: usize = 256;
/// The most event fields an entry may carry (journald's own limit is
/// about 1000 fields an entry).
const MAX_FIELDS: usize = 512;
/// How long a journal entry waits for a journald that is restarting.
const JOURNAL_PATIENCE: Duration = Duration::from_secs(5);

struct Opts {
    name: String,
    listen: Option<PathBuf>,
    journal_socket: PathBuf,
    max_fields: usize,
    rules: Vec<Rule>,
    /// `--check-config`: stop after reading the settings.
    check_config: bool,
}

impl Default for Opts {
    fn default() -> Opts {
        Opts {
            name: "alert".into(),
            listen: None,
            journal_socket: journald::DEFAULT_SOCKET.into(),
            max_fields: 64,
            rules: Vec::new(),
            check_config: false,
        }
    }
}

/// Defaults, then the option file, then the flags.
fn parse() -> Result<Opts, StartError> {
    let (o, _) = option_file::settings(
        "audisp-alert",
        CONFIG_VAR,
        DEFAULT_CONFIG,
        std::env::args_os().skip(1).collect(),
        apply_flags,
        apply_file,
    )?;
    Ok(o)
}

/// Applies the command line to `o`; returns what it says of the option file.
fn apply_flags(o: &mut Opts, args: Vec<OsString>) -> Result<FileFlags, String> {
    use lexopt::prelude::*;
    let mut file = FileFlags::default();
    let mut p = lexopt::Parser::from_args(args);
    let e = |e: lexopt::Error| e.to_string();
    while let Some(arg) = p.next().map_err(e)? {
        match arg {
            Long("config") => file.config = Some(p.value().map_err(e)?.into()),
            Long("no-config") => file.none = true,
            Long("check-config") => o.check_config = true,
            Long("name") => o.name = flag_value(&mut p, "name", plugin_name)?,
            Long("listen") => o.listen = Some(p.value().map_err(e)?.into()),
            Long("journal-socket") => o.journal_socket = p.value().map_err(e)?.into(),
            Long("max-fields") => o.max_fields = flag_value(&mut p, "max-fields", max_fields)?,
            Long("help") | Short('h') => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            _ => return Err(arg.unexpected().to_string()),
        }
    }
    Ok(file)
}

/// Takes the option file's values into `o`; mistakes are recorded by `r`.
fn apply_file<'s>(r: &mut Reader<'s>, top: &Table<'_, 's>, o: &mut Opts) {
    r.reject_unknown(
        top,
        &["name", "listen", "journal_socket", "max_fields", "rule"],
        |k| (k == "filter").then(|| "write it in a [rule.NAME] section".to_string()),
    );
    set(&mut o.name, r.parsed(top, "name", plugin_name));
    set(&mut o.listen, r.path(top, "listen").map(Some));
    set(&mut o.journal_socket, r.path(top, "journal_socket"));
    let n = r.count::<usize>(top, "max_fields");
    set(
        &mut o.max_fields,
        r.checked(top, "max_fields", n, |&n| at_most_max_fields(n)),
    );
    let Some(rules) = r.table(top, "rule") else {
        return;
    };
    for (i, (name, span, table)) in r.sub_tables(&rules).into_iter().enumerate() {
        if i == MAX_RULES {
            r.problem(
                span.clone(),
                format!("[rule.{name}]: at most {MAX_RULES} rules are allowed"),
            );
        }
        if !protocol::valid_name(name) {
            r.problem(
                span.clone(),
                format!(
                    "[rule.{name}]: {name:?} is not a rule name; use 1 to {} letters, digits, '_', '.' and '-'",
                    protocol::MAX_NAME
                ),
            );
        }
        if !table.has("filter") {
            r.problem(
                span,
                format!("[rule.{name}] has no filter; write an expression such as filter = 'type r= AVC'"),
            );
        }
        if let Some(rule) = read_rule(r, name, &table) {
            o.rules.push(rule);
        }
    }
}

/// One `[rule.NAME]`: `filter` (required), `summary`, `limit`, `per`.
fn read_rule<'s>(r: &mut Reader<'s>, name: &str, t: &Table<'_, 's>) -> Option<Rule> {
    r.reject_unknown(t, &["filter", "summary", "limit", "per"], |_| None);
    let filter = r.expression(t, "filter", |s| {
        Filter::parse(s).map_err(|e| (e.offset, e.message))
    });
    let summary = r
        .parsed(t, "summary", Template::parse)
        .or_else(|| Template::parse(DEFAULT_SUMMARY).ok())?;
    let limit = r.count::<u32>(t, "limit");
    let limit = r.checked(t, "limit", limit, |&n| {
        if n == 0 {
            Err("must be at least 1".into())
        } else {
            Ok(())
        }
    });
    let per = r.duration(t, "per");
    let per = r.checked(t, "per", per, |d| {
        if d.is_zero() {
            Err("must be longer than 0".into())
        } else {
            Ok(())
        }
    });
    Some(Rule {
        name: name.to_string(),
        filter: filter?,
        summary,
        limit: RateLimit::new(limit.unwrap_or(10), per.unwrap_or(Duration::from_secs(60))),
    })
}

/// `--name`: the plugin's name, as audispd knows it.
fn plugin_name(v: &str) -> Result<String, String> {
    if protocol::valid_name(v) {
        Ok(v.to_string())
    } else {
        Err("is not a plugin name: use letters, digits, '_', '.' and '-'".into())
    }
}

/// Why `n` is too many fields for an entry, if it is.
fn at_most_max_fields(n: usize) -> Result<(), String> {
    if n > MAX_FIELDS {
        Err(format!("is more than {MAX_FIELDS}"))
    } else {
        Ok(())
    }
}

/// `--max-fields`: event fields per journal entry.
fn max_fields(v: &str) -> Result<usize, String> {
    let n = v
        .parse::<usize>()
        .map_err(|_| format!("is not a number from 0 to {MAX_FIELDS}"))?;
    at_most_max_fields(n).map(|()| n)
}

fn main() {
    let o = option_file::settings_to_run("audisp-alert", USAGE, parse(), |o| o.check_config);
    if let Err(e) = run(o) {
        eprintln!("audisp-alert: {e}");
        std::process::exit(1);
    }
}

fn run(mut o: Opts) -> Result<(), String> {
    if o.rules.is_empty() {
        eprintln!("audisp-alert: no rules ([rule.NAME] in the option file); no event will match");
    }
    let journal = Journald::new(&o.journal_socket, JOURNAL_PATIENCE)
        .map_err(|e| format!("journal socket: {e}"))?;
    let mut plugin = Plugin::new(&o.name).events();
    if let Some(l) = &o.listen {
        plugin = plugin.listen(l);
    }
    let mut scratch = Scratch::new();
    let mut fields = EventFields::default();
    let mut entry = Entry::default();
    let mut records: Vec<(u32, Vec<u8>)> = Vec::new();
    let rules = &mut o.rules;
    let max_fields = o.max_fields;
    let result = plugin.run(|batch, ctx| {
        for ev in batch.events() {
            records.clear();
            records.extend(ev.records().map(|r| (r.rtype, r.text.to_vec())));
            let mut taken_apart = false;
            for rule in rules.iter_mut() {
                if !records
                    .iter()
                    .any(|(_, text)| rule.filter.matches(text, &mut scratch))
                {
                    continue;
                }
                let Some(suppressed) = rule.limit.admit(Instant::now()) else {
                    continue;
                };
                if !taken_apart {
                    let view: Vec<(u32, &[u8])> =
                        records.iter().map(|(t, x)| (*t, x.as_slice())).collect();
                    fields.collect(&view);
                    taken_apart = true;
                }
                let mut notice = Notice {
                    rule: rule.name.clone(),
                    event: fields.id.clone(),
                    summary: rule.summary.render(&rule.name, &fields),
                    suppressed,
                };
                notice.fit();
                fields.entry(&notice, max_fields, &mut entry);
                if let Err(e) = journal.send(&entry) {
                    eprintln!(
                        "audisp-alert: rule {}: journal entry for {} not written: {e}",
                        rule.name, notice.event
                    );
                }
                ctx.notify(&notice)?;
            }
        }
        Ok(())
    });
    for rule in rules.iter().filter(|r| r.limit.pending() > 0) {
        event::suppressed_entry(&rule.name, rule.limit.pending(), &mut entry);
        if let Err(e) = journal.send(&entry) {
            eprintln!(
                "audisp-alert: rule {}: {} suppressed matches not journaled: {e}",
                rule.name,
                rule.limit.pending()
            );
        }
    }
    result.map_err(|e| e.to_string())
}
