//! audisp-logfile: an audisp plugin that writes audit records to local
//! files — auditd's raw text or JSON lines — with size-based rotation, N
//! generations, optional gzip/zstd compression, an fsync policy and a
//! chosen file mode, owner and group. See `docs/audisp-logfile.8.md`.
//!
//! Records are acknowledged to the dispatcher only after they were written
//! (and, with `--fsync batch`, synced), so none is lost when the plugin,
//! the dispatcher or the machine stops. With `--state`, the position kept
//! there agrees with the log ([`position`]), so none is written twice
//! either — also when the log ends within an event of a filtered plugin,
//! which the dispatcher sends again whole: the plugin resumes within it.

mod position;
mod rotate;

use std::path::PathBuf;
use std::process::ExitCode;

use audisp::format::JsonWriter;
use audisp::sdk::Upto;
use audisp::sdk::{Error, PluginOptions};
use position::PositionFile;
use rotate::{Codec, CompressWhen, Fsync, RotatingLog, Settings};

/// What is written for each record or event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    /// auditd's text, one record per line, as received.
    Raw,
    /// One JSON object per event (`audisp::format`).
    Json,
    /// One JSON object per record.
    JsonRecords,
}

struct Options {
    settings: Settings,
    format: Format,
    plugin: PluginOptions,
}

const USAGE: &str = "usage: audisp-logfile --file PATH [--format raw|json|json-records]
  [--max-size SIZE] [--generations N] [--compress none|gzip|zstd]
  [--compress-when stream|rotate] [--level N] [--fsync batch|rotate|never]
  [--file-mode OCTAL] [--owner USER] [--group GROUP] [--state FILE]
  [--listen SOCKET] [--name NAME] [--include T,T] [--exclude T,T]";

fn parse_args() -> Result<Options, String> {
    use lexopt::prelude::*;
    let mut path = None;
    let mut o = Options {
        settings: Settings {
            path: PathBuf::new(),
            max_size: 64 << 20,
            generations: 5,
            codec: Codec::None,
            when: CompressWhen::Stream,
            level: 0,
            fsync: Fsync::Batch,
            mode: 0o600,
            owner: None,
            group: None,
        },
        format: Format::Raw,
        plugin: PluginOptions::new("logfile"),
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
        let value = p
            .value()
            .map_err(err)?
            .into_string()
            .map_err(|v| format!("--{flag}: {v:?} is not UTF-8"))?;
        let Some(value) = o.plugin.take(&flag, value) else {
            continue;
        };
        let bad = |what: &str| format!("--{flag} {value:?}: {what}");
        let s = &mut o.settings;
        match flag.as_str() {
            "file" => path = Some(PathBuf::from(&value)),
            "format" => {
                o.format = match value.as_str() {
                    "raw" => Format::Raw,
                    "json" => Format::Json,
                    "json-records" => Format::JsonRecords,
                    _ => return Err(bad("expected raw, json or json-records")),
                }
            }
            "max-size" => {
                s.max_size = audisp::config::parse_size(&value).map_err(|e| bad(&e))?;
                if s.max_size < 4096 {
                    return Err(bad("must be at least 4K"));
                }
            }
            "generations" => {
                s.generations = value
                    .parse()
                    .ok()
                    .filter(|&n| (1..=1000).contains(&n))
                    .ok_or_else(|| bad("expected a number from 1 to 1000"))?
            }
            "compress" => {
                s.codec = match value.as_str() {
                    "none" => Codec::None,
                    "gzip" => Codec::Gzip,
                    "zstd" => Codec::Zstd,
                    _ => return Err(bad("expected none, gzip or zstd")),
                }
            }
            "compress-when" => {
                s.when = match value.as_str() {
                    "stream" => CompressWhen::Stream,
                    "rotate" => CompressWhen::Rotate,
                    _ => return Err(bad("expected stream or rotate")),
                }
            }
            "level" => {
                s.level = value
                    .parse()
                    .ok()
                    .filter(|n| (0..=19).contains(n))
                    .ok_or_else(|| bad("expected a number from 0 (default) to 19"))?
            }
            "fsync" => {
                s.fsync = match value.as_str() {
                    "batch" => Fsync::Batch,
                    "rotate" => Fsync::Rotate,
                    "never" => Fsync::Never,
                    _ => return Err(bad("expected batch, rotate or never")),
                }
            }
            "file-mode" => {
                s.mode = u32::from_str_radix(&value, 8)
                    .ok()
                    .filter(|m| m & !0o666 == 0)
                    .ok_or_else(|| bad("expected octal permission bits within 0666"))?
            }
            "owner" => s.owner = Some(user(&value).ok_or_else(|| bad("no such user"))?),
            "group" => s.group = Some(group(&value).ok_or_else(|| bad("no such group"))?),
            _ => return Err(format!("unknown option --{flag}\n{USAGE}")),
        }
    }
    o.settings.path = path.ok_or_else(|| format!("--file PATH is required\n{USAGE}"))?;
    Ok(o)
}

fn user(name: &str) -> Option<nix::unistd::Uid> {
    if let Ok(n) = name.parse() {
        return Some(nix::unistd::Uid::from_raw(n));
    }
    nix::unistd::User::from_name(name).ok()?.map(|u| u.uid)
}

fn group(name: &str) -> Option<nix::unistd::Gid> {
    if let Ok(n) = name.parse() {
        return Some(nix::unistd::Gid::from_raw(n));
    }
    nix::unistd::Group::from_name(name).ok()?.map(|g| g.gid)
}

fn main() -> ExitCode {
    let o = match parse_args() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("audisp-logfile: {e}");
            return ExitCode::from(2);
        }
    };
    match run(o) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("audisp-logfile: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(mut o: Options) -> Result<(), String> {
    let path = o.settings.path.display().to_string();
    // The position is kept here, with the log, not by the SDK.
    let (positions, at) = match o.plugin.state.take() {
        Some(state) => {
            let (file, at) = PositionFile::open(&state, o.settings.fsync == Fsync::Batch)?;
            (Some(file), at)
        }
        None => (None, None),
    };
    let mut log =
        RotatingLog::open(o.settings, positions, at).map_err(|e| format!("{path}: {e}"))?;
    let mut plugin = o.plugin.plugin();
    // The position stored with each line: the ack id of the last record
    // that completes one (a filtered plugin's records are acknowledged by
    // their event's id, `Record::ack`), not the record's own seq; and of an
    // event not completed yet, its ack id and the last record's seq.
    let mut upto = at.map(|a| a.upto).unwrap_or_default();
    if let Some(at) = at {
        plugin = plugin.resume_after(at.journal, at.upto.done);
        if let Some((ack, seq)) = at.upto.partial {
            plugin = plugin.resume_within(ack, seq);
        }
    }
    if o.format == Format::Json {
        plugin = plugin.events();
    }
    if o.format != Format::Raw {
        // JSON names the input each record arrived on.
        plugin = plugin.origin();
    }
    let mut json = JsonWriter::new();
    let mut line = Vec::with_capacity(64 * 1024);
    let format = o.format;
    let result = plugin.run(|batch, ctx| {
        if log.set_journal(ctx.journal_id()) {
            // Another journal (a new dispatcher state): its ack ids start
            // again, and nothing of it is written yet.
            upto = Upto::default();
        }
        match format {
            Format::Raw => {
                for r in batch.records() {
                    line.clear();
                    line.extend_from_slice(r.text);
                    line.push(b'\n');
                    upto = upto.after(&r);
                    log.write_unit(&line, upto)?;
                }
            }
            Format::JsonRecords => {
                for r in batch.records() {
                    line.clear();
                    json.write_record_from(r.text, r.origin, &mut line);
                    line.push(b'\n');
                    upto = upto.after(&r);
                    log.write_unit(&line, upto)?;
                }
            }
            Format::Json => {
                let mut recs: Vec<&[u8]> = Vec::new();
                for ev in batch.events() {
                    recs.clear();
                    recs.extend(ev.records().map(|r| r.text));
                    let origin = ev.records().next().and_then(|r| r.origin);
                    line.clear();
                    json.write_event_from(&recs, origin, &mut line);
                    line.push(b'\n');
                    log.write_unit(
                        &line,
                        Upto {
                            done: ev.id(),
                            partial: None,
                        },
                    )?;
                }
            }
        }
        // Written (and synced, per policy) before the batch is acknowledged.
        log.commit().map_err(|e| format!("{path}: {e}"))?;
        Ok(())
    });
    match result {
        Ok(()) => Ok(()),
        Err(Error::Rejected(why)) => Err(format!("rejected by the dispatcher: {why}")),
        Err(e) => Err(e.to_string()),
    }
}
