//! audisp-af_unix: an audisp plugin that offers the audit record stream on
//! a local stream socket, in auditd's `string` or `binary` format, to any
//! number of readers (the programs written for auditd's `audisp-af_unix`).
//! See `docs/audisp-af_unix.8.md`.
//!
//! Unlike auditd's, a reader that does not keep up slows nobody down: each
//! reader has a bounded buffer of its own ([`hub`]), the plugin acknowledges
//! every batch to audispd as soon as it is handed to the readers, and a
//! reader whose buffer fills is disconnected or skips records with a gap
//! marker.

mod encode;
mod hub;
mod listen;

use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use audisp::config::option_file::{
    self, flag_value, set, text, word, FileFlags, Reader, StartError, Table,
};
use audisp::config::{parse_duration, parse_size};
use audisp::sdk::{Error, Plugin};
use encode::{Chunk, Format, Framing};
use hub::{Hub, Limits, SlowReader};
use listen::Ownership;
use nix::sys::eventfd::{EfdFlags, EventFd};
use nix::unistd::{Gid, Group, Uid, User};

const USAGE: &str = "usage: audisp-af_unix [--config FILE | --no-config] [--check-config]
       [--socket PATH] [--socket-mode OCTAL] [--socket-owner USER] [--socket-group GROUP]
       [--format string|binary] [--framing exact|padded]
       [--reader-buffer BYTES] [--slow-reader disconnect|skip] [--max-readers N]
       [--drain-timeout DURATION]
       [--name NAME] [--listen PLUGIN_SOCKET]
Settings not given as flags come from FILE (default /etc/audisp/audisp-af_unix.toml,
or $AUDISP_AF_UNIX_CONFIG).";

/// The option file read when neither `--config` nor the variable names one.
const DEFAULT_CONFIG: &str = "/etc/audisp/audisp-af_unix.toml";
/// The variable that names the option file.
const CONFIG_VAR: &str = "AUDISP_AF_UNIX_CONFIG";
/// The group a socket the plugin binds gets when none is configured, if it
/// exists.
const DEFAULT_GROUP: &str = "audisp";
/// Batches the handler may hand the reader thread ahead of it.
const CHUNKS_IN_FLIGHT: usize = 64;

struct Opts {
    socket: PathBuf,
    socket_mode: u32,
    socket_owner: Option<String>,
    socket_group: Option<String>,
    binary: bool,
    framing: Framing,
    reader_buffer: usize,
    slow_reader: SlowReader,
    max_readers: usize,
    drain: Duration,
    name: String,
    listen: Option<PathBuf>,
    check_config: bool,
}

impl Default for Opts {
    fn default() -> Opts {
        Opts {
            socket: PathBuf::from("/run/audisp/audispd_events"),
            socket_mode: 0o640,
            socket_owner: None,
            socket_group: None,
            binary: false,
            framing: Framing::Exact,
            reader_buffer: 4 << 20,
            slow_reader: SlowReader::Disconnect,
            max_readers: 64,
            drain: Duration::from_secs(2),
            name: "af_unix".into(),
            listen: None,
            check_config: false,
        }
    }
}

const FORMAT: &[(&str, bool)] = &[("string", false), ("binary", true)];
const FRAMING: &[(&str, Framing)] = &[("exact", Framing::Exact), ("padded", Framing::Padded)];
const SLOW: &[(&str, SlowReader)] = &[
    ("disconnect", SlowReader::Disconnect),
    ("skip", SlowReader::Skip),
];

/// Permission bits of the readers' socket, in octal.
fn mode(v: &str) -> Result<u32, String> {
    u32::from_str_radix(v, 8)
        .ok()
        .filter(|m| m & !0o666 == 0 && m & 0o600 == 0o600)
        .ok_or_else(|| {
            "is not a socket mode; write octal permission bits within 0666 that include 0600, such as \"0640\" (only root connects: connecting needs write permission) or \"0660\" (the group connects too)".to_string()
        })
}

/// A reader buffer size: at least one padded frame.
fn buffer(v: &str) -> Result<usize, String> {
    let n = usize::try_from(parse_size(v)?).map_err(|_| "is too large".to_string())?;
    if n < audisp::framing::PADDED_FRAME_LEN {
        return Err("is smaller than one record; use at least \"16K\"".into());
    }
    Ok(n)
}

/// A number of readers, 1 or more.
fn readers(v: &str) -> Result<usize, String> {
    v.parse()
        .ok()
        .filter(|&n| (1..=4096).contains(&n))
        .ok_or_else(|| "is not a number from 1 to 4096".to_string())
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
            Long("socket") => o.socket = p.value().map_err(e)?.into(),
            Long("socket-mode") => o.socket_mode = flag_value(&mut p, "socket-mode", mode)?,
            Long("socket-owner") => {
                o.socket_owner = Some(flag_value(&mut p, "socket-owner", text)?)
            }
            Long("socket-group") => {
                o.socket_group = Some(flag_value(&mut p, "socket-group", text)?)
            }
            Long("format") => o.binary = flag_value(&mut p, "format", |v| word(FORMAT, v))?,
            Long("framing") => o.framing = flag_value(&mut p, "framing", |v| word(FRAMING, v))?,
            Long("reader-buffer") => o.reader_buffer = flag_value(&mut p, "reader-buffer", buffer)?,
            Long("slow-reader") => {
                o.slow_reader = flag_value(&mut p, "slow-reader", |v| word(SLOW, v))?
            }
            Long("max-readers") => o.max_readers = flag_value(&mut p, "max-readers", readers)?,
            Long("drain-timeout") => o.drain = flag_value(&mut p, "drain-timeout", parse_duration)?,
            Long("name") => o.name = flag_value(&mut p, "name", text)?,
            Long("listen") => o.listen = Some(p.value().map_err(e)?.into()),
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
        &[
            "socket",
            "socket_mode",
            "socket_owner",
            "socket_group",
            "format",
            "framing",
            "reader_buffer",
            "slow_reader",
            "max_readers",
            "drain_timeout",
            "name",
            "listen",
        ],
        |k| {
            k.contains('-')
                .then(|| format!("write {}", k.replace('-', "_")))
        },
    );
    set(&mut o.socket, r.path(top, "socket"));
    set(&mut o.socket_mode, r.parsed(top, "socket_mode", mode));
    set(&mut o.socket_owner, r.string(top, "socket_owner").map(Some));
    set(&mut o.socket_group, r.string(top, "socket_group").map(Some));
    set(&mut o.binary, r.choice(top, "format", "format", FORMAT));
    set(&mut o.framing, r.choice(top, "framing", "framing", FRAMING));
    set(&mut o.reader_buffer, r.parsed(top, "reader_buffer", buffer));
    set(
        &mut o.slow_reader,
        r.choice(top, "slow_reader", "slow-reader policy", SLOW),
    );
    set(&mut o.max_readers, r.count(top, "max_readers"));
    set(&mut o.drain, r.duration(top, "drain_timeout"));
    set(&mut o.name, r.string(top, "name"));
    set(&mut o.listen, r.path(top, "listen").map(Some));
}

fn user(name: &str) -> Result<Uid, String> {
    if let Ok(n) = name.parse() {
        return Ok(Uid::from_raw(n));
    }
    match User::from_name(name) {
        Ok(Some(u)) => Ok(u.uid),
        _ => Err(format!("socket owner {name:?}: no such user")),
    }
}

fn group(name: &str) -> Result<Option<Gid>, String> {
    if let Ok(n) = name.parse() {
        return Ok(Some(Gid::from_raw(n)));
    }
    match Group::from_name(name) {
        Ok(g) => Ok(g.map(|g| g.gid)),
        Err(e) => Err(format!("socket group {name:?}: {e}")),
    }
}

/// The owner, group and mode a socket the plugin binds gets (checked
/// even when systemd passes the socket, so `--check-config` finds a group
/// that does not exist).
fn ownership(o: &Opts) -> Result<Ownership, String> {
    if o.max_readers == 0 {
        return Err("max_readers must be at least 1".into());
    }
    let owner = o.socket_owner.as_deref().map(user).transpose()?;
    let group = match o.socket_group.as_deref() {
        Some(name) => Some((
            group(name)?.ok_or_else(|| format!("socket group {name:?}: no such group"))?,
            true,
        )),
        None => group(DEFAULT_GROUP)?.map(|g| (g, false)),
    };
    Ok(Ownership {
        mode: o.socket_mode,
        owner,
        group,
    })
}

fn main() {
    let parsed = option_file::settings(
        "audisp-af_unix",
        CONFIG_VAR,
        DEFAULT_CONFIG,
        std::env::args_os().skip(1).collect(),
        apply_flags,
        apply_file,
    )
    .and_then(|(o, _)| {
        let own = ownership(&o).map_err(StartError::Usage)?;
        Ok((o, own))
    });
    let (o, own) =
        option_file::settings_to_run("audisp-af_unix", USAGE, parsed, |(o, _)| o.check_config);
    if let Err(e) = run(o, own) {
        eprintln!("audisp-af_unix: {e}");
        std::process::exit(1);
    }
}

fn run(o: Opts, own: Ownership) -> Result<(), String> {
    let format = if o.binary {
        Format::Binary(o.framing)
    } else {
        Format::String
    };
    let mut listeners = listen::passed()?;
    let bound = listeners.is_empty();
    if bound {
        listeners.push(listen::bind(&o.socket, &own)?);
        eprintln!(
            "audisp-af_unix: serving readers on {} (mode {:04o})",
            o.socket.display(),
            o.socket_mode
        );
    } else {
        eprintln!(
            "audisp-af_unix: serving readers on {} socket(s) passed by systemd",
            listeners.len()
        );
    }
    let wake = Arc::new(
        EventFd::from_value_and_flags(0, EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)
            .map_err(|e| format!("eventfd: {e}"))?,
    );
    let connected = Arc::new(AtomicUsize::new(0));
    let (tx, rx) = mpsc::sync_channel::<Arc<Chunk>>(CHUNKS_IN_FLIGHT);
    let hub = Hub::new(
        listeners,
        Limits {
            buffer: o.reader_buffer,
            max_readers: o.max_readers,
            slow: o.slow_reader,
            format,
            drain: o.drain,
        },
        rx,
        wake.clone(),
        connected.clone(),
    );
    let thread = std::thread::Builder::new()
        .name("readers".into())
        .spawn(move || hub.run())
        .map_err(|e| format!("cannot start the reader thread: {e}"))?;

    let mut plugin = Plugin::new(&o.name);
    if let Some(l) = &o.listen {
        plugin = plugin.listen(l);
    }
    let result = plugin.run(|batch, _ctx| {
        // Nobody to give them to: acknowledged as auditd's plugin drops
        // records while no reader is connected.
        if connected.load(Ordering::Relaxed) == 0 {
            return Ok(());
        }
        let mut chunk = Chunk::default();
        for r in batch.records() {
            chunk.push(format, r.rtype, r.text);
        }
        tx.send(Arc::new(chunk))
            .map_err(|_| "the reader thread stopped")?;
        let _ = wake.write(1);
        Ok(())
    });
    drop(tx);
    let _ = wake.write(1);
    let served = thread
        .join()
        .map_err(|_| "the reader thread panicked".to_string())?;
    if bound {
        let _ = std::fs::remove_file(&o.socket);
    }
    served.map_err(|e| format!("serving readers: {e}"))?;
    match result {
        Ok(()) => Ok(()),
        Err(Error::Rejected(why)) => Err(format!("rejected by the dispatcher: {why}")),
        Err(e) => Err(e.to_string()),
    }
}
