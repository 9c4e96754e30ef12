//! audisp-journal: an audisp plugin that writes audit records (or whole
//! events) to the systemd journal through journald's native protocol, with
//! structured fields `journalctl` can filter on. See
//! `docs/audisp-journal.8.md`.
//!
//! An entry is acknowledged to the dispatcher only once journald's socket
//! took it; while journald is away (restarting) the plugin waits and
//! retries, and if journald keeps refusing, it stops without acknowledging,
//! so the dispatcher keeps the records.

mod mapping;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use audisp::sdk::{Error, PluginOptions};
use audisp::systemd::journald::{self as native, Entry, Journald, Via};
use mapping::{MapOptions, Mapper};

struct Options {
    socket: PathBuf,
    events: bool,
    map: MapOptions,
    patience: Duration,
    plugin: PluginOptions,
}

const USAGE: &str = "usage: audisp-journal [--events] [--fields fixed|all]
  [--identifier NAME] [--priority TYPE=LEVEL]... [--journal-socket PATH]
  [--patience SECONDS] [--state FILE] [--listen SOCKET] [--name NAME]
  [--include T,T] [--exclude T,T]";

/// A syslog level by number or name.
fn level(text: &str) -> Option<u8> {
    const NAMES: [&str; 8] = [
        "emerg", "alert", "crit", "err", "warning", "notice", "info", "debug",
    ];
    if let Ok(n) = text.parse::<u8>() {
        return (n < 8).then_some(n);
    }
    NAMES.iter().position(|n| *n == text).map(|p| p as u8)
}

fn parse_args() -> Result<Options, String> {
    use lexopt::prelude::*;
    let mut o = Options {
        socket: std::env::var_os("AUDISP_JOURNAL_SOCKET")
            .map_or_else(|| PathBuf::from(native::DEFAULT_SOCKET), PathBuf::from),
        events: false,
        map: MapOptions {
            identifier: "audisp".into(),
            all_fields: false,
            priorities: Vec::new(),
        },
        patience: Duration::from_secs(30),
        plugin: PluginOptions::new("journal"),
    };
    let mut p = lexopt::Parser::from_env();
    let err = |e: lexopt::Error| e.to_string();
    while let Some(arg) = p.next().map_err(err)? {
        let Long(flag) = arg else {
            return Err(format!(
                "unexpected argument {:?}\n{USAGE}",
                arg.unexpected()
            ));
        };
        let flag = flag.to_string();
        if flag == "events" {
            o.events = true;
            continue;
        }
        let value = p
            .value()
            .map_err(err)?
            .into_string()
            .map_err(|v| format!("--{flag}: {v:?} is not UTF-8"))?;
        let Some(value) = o.plugin.take(&flag, value) else {
            continue;
        };
        let bad = |what: &str| format!("--{flag} {value:?}: {what}");
        match flag.as_str() {
            "fields" => {
                o.map.all_fields = match value.as_str() {
                    "fixed" => false,
                    "all" => true,
                    _ => return Err(bad("expected fixed or all")),
                }
            }
            "identifier" => {
                if value.is_empty() || value.contains('\n') {
                    return Err(bad("expected a non-empty name on one line"));
                }
                o.map.identifier = value
            }
            "priority" => {
                let (t, l) = value
                    .split_once('=')
                    .ok_or_else(|| bad("expected TYPE=LEVEL, e.g. AVC=3 or USER_LOGIN=notice"))?;
                let t = audisp::record_types::parse_admin(t)
                    .ok_or_else(|| bad("unknown record type"))?;
                let l = level(l).ok_or_else(|| {
                    bad("the level is 0-7 or emerg, alert, crit, err, warning, notice, info, debug")
                })?;
                o.map.priorities.push((t, l));
            }
            "journal-socket" => o.socket = value.into(),
            "patience" => {
                o.patience =
                    Duration::from_secs(value.parse().map_err(|_| bad("expected whole seconds"))?)
            }
            _ => return Err(format!("unknown option --{flag}\n{USAGE}")),
        }
    }
    Ok(o)
}

fn main() -> ExitCode {
    let o = match parse_args() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("audisp-journal: {e}");
            return ExitCode::from(2);
        }
    };
    match run(o) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("audisp-journal: {e}");
            ExitCode::FAILURE
        }
    }
}

/// What was sent, for the final report.
#[derive(Default)]
struct Counts {
    entries: u64,
    memfd: u64,
}

fn run(o: Options) -> Result<(), String> {
    let journald = Journald::new(&o.socket, o.patience).map_err(|e| format!("socket: {e}"))?;
    let mut mapper = Mapper::new(o.map.clone());
    let mut plugin = o.plugin.plugin();
    if o.events {
        plugin = plugin.events();
    }
    let mut entry = Entry::default();
    let mut counts = Counts::default();
    let socket = o.socket.display().to_string();
    let events = o.events;
    let mut send = |seq: u64,
                    recs: &[(u32, &[u8])],
                    mapper: &mut Mapper,
                    counts: &mut Counts|
     -> Result<(), String> {
        let before = mapper.omitted;
        mapper.build(seq, recs, &mut entry);
        if mapper.omitted > before {
            eprintln!(
                "audisp-journal: entry AUDISP_SEQ={seq}: {} fields left out (journald's field limit or name length); MESSAGE holds the whole record",
                mapper.omitted - before
            );
        }
        match journald.send(&entry) {
            Ok(via) => {
                counts.entries += 1;
                counts.memfd += u64::from(via == Via::Memfd);
                Ok(())
            }
            Err(e) => Err(format!(
                "journald ({socket}) refused entry AUDISP_SEQ={seq} ({} bytes): {e}; it stays with the dispatcher",
                entry.bytes().len()
            )),
        }
    };
    let result = plugin.run(|batch, _ctx| {
        if events {
            let mut recs: Vec<(u32, &[u8])> = Vec::new();
            for ev in batch.events() {
                recs.clear();
                recs.extend(ev.records().map(|r| (r.rtype, r.text)));
                send(ev.id(), &recs, &mut mapper, &mut counts)?;
            }
        } else {
            for r in batch.records() {
                send(r.seq, &[(r.rtype, r.text)], &mut mapper, &mut counts)?;
            }
        }
        Ok(())
    });
    eprintln!(
        "audisp-journal: {} entries sent ({} through a memfd), {} fields left out",
        counts.entries, counts.memfd, mapper.omitted
    );
    match result {
        Ok(()) => Ok(()),
        Err(Error::Rejected(why)) => Err(format!("rejected by the dispatcher: {why}")),
        Err(e) => Err(e.to_string()),
    }
}
