//! A plugin that writes every record it receives to a file, exactly once
//! even across its own crashes: each line is `SEQ<TAB>RECORD`, each batch
//! is followed by a line `ACK<TAB>ID` (the ack id of its last record that
//! completes one), and at start the plugin cuts what follows the last such
//! line and tells the dispatcher to resume after it (the pattern a durable
//! plugin should follow: keep the position with the output). The position
//! is the ack id, not the last record's `SEQ`: a filtered plugin's records
//! are acknowledged by their event's id, which may lie past the event's
//! last record (an event ended by a close marker), and an event may go on
//! in the next batch. The test suite and the benchmark use it.
//!
//! Usage: sink --out FILE [--events] [--include T,T] [--exclude T,T]
//!             [--delay-ms N] [--listen SOCKET] [--name NAME] [--pid-file F]
//!             [--command ACTION --command-on TEXT]
//! In events mode each event is written as its records followed by a line
//! `EVENT<TAB>ID`. With `--command`, once a batch holding a record that
//! contains TEXT is written, the sink asks the dispatcher for ACTION (its
//! plugins.d `[actions.ACTION]`) and prints the answer to standard error.

use std::fs::OpenOptions;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::time::Duration;

use audisp::sdk::{Error, Plugin};

struct Opts {
    out: PathBuf,
    events: bool,
    include: Vec<String>,
    exclude: Vec<String>,
    delay: Duration,
    listen: Option<PathBuf>,
    name: String,
    pid_file: Option<PathBuf>,
    command: Option<String>,
    command_on: Option<String>,
}

fn opts() -> Result<Opts, String> {
    let mut o = Opts {
        out: PathBuf::new(),
        events: false,
        include: Vec::new(),
        exclude: Vec::new(),
        delay: Duration::ZERO,
        listen: None,
        name: "sink".into(),
        pid_file: None,
        command: None,
        command_on: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || args.next().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--out" => o.out = val()?.into(),
            "--events" => o.events = true,
            "--include" => o.include = val()?.split(',').map(str::to_string).collect(),
            "--exclude" => o.exclude = val()?.split(',').map(str::to_string).collect(),
            "--delay-ms" => {
                o.delay =
                    Duration::from_millis(val()?.parse().map_err(|e| format!("--delay-ms: {e}"))?)
            }
            "--listen" => o.listen = Some(val()?.into()),
            "--name" => o.name = val()?,
            "--pid-file" => o.pid_file = Some(val()?.into()),
            "--command" => o.command = Some(val()?),
            "--command-on" => o.command_on = Some(val()?),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if o.out.as_os_str().is_empty() {
        return Err("--out FILE is required".into());
    }
    if o.command.is_some() != o.command_on.is_some() {
        return Err("--command and --command-on go together".into());
    }
    Ok(o)
}

/// Cuts what a crash left half-written (records after the last `ACK` line,
/// or in events mode after the last `EVENT` line) and returns the journal
/// id and the last id handled, from the file itself.
fn recover(file: &mut std::fs::File, events: bool) -> std::io::Result<Option<([u8; 16], u64)>> {
    let mut text = Vec::new();
    file.seek(SeekFrom::Start(0))?;
    file.read_to_end(&mut text)?;
    let mut journal = None;
    let mut last = None;
    let mut keep = 0;
    let mut pos = 0;
    while let Some(nl) = text[pos..].iter().position(|&b| b == b'\n') {
        let line = &text[pos..pos + nl];
        pos += nl + 1;
        if let Some(hex) = line.strip_prefix(b"JOURNAL\t") {
            journal = unhex(hex);
            keep = pos;
        } else if let Some(id) = line.strip_prefix(if events { &b"EVENT\t"[..] } else { b"ACK\t" })
        {
            last = std::str::from_utf8(id).ok().and_then(|s| s.parse().ok());
            keep = pos;
        }
    }
    file.set_len(keep as u64)?;
    Ok(journal.zip(last))
}

fn unhex(s: &[u8]) -> Option<[u8; 16]> {
    let s = std::str::from_utf8(s).ok()?;
    let mut out = [0; 16];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let o = opts().map_err(|e| format!("sink: {e}"))?;
    if let Some(p) = &o.pid_file {
        std::fs::write(p, std::process::id().to_string())?;
    }
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&o.out)?;
    let resume = recover(&mut file, o.events)?;
    file.seek(SeekFrom::End(0))?;
    let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
    let mut plugin = Plugin::new(&o.name);
    if o.events {
        plugin = plugin.events();
    }
    let inc: Vec<&str> = o.include.iter().map(String::as_str).collect();
    let exc: Vec<&str> = o.exclude.iter().map(String::as_str).collect();
    plugin = plugin.include(&inc).exclude(&exc);
    if let Some((j, seq)) = resume {
        plugin = plugin.resume_after(j, seq);
    }
    if let Some(l) = &o.listen {
        plugin = plugin.listen(l);
    }
    let mut journal_written = resume.map(|r| r.0);
    let events = o.events;
    let trigger = o.command.as_deref().zip(o.command_on.as_deref());
    let result = plugin.run(|batch, ctx| {
        if journal_written != Some(ctx.journal_id()) {
            let hex: String = ctx
                .journal_id()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            writeln!(out, "JOURNAL\t{hex}")?;
            journal_written = Some(ctx.journal_id());
        }
        if events {
            for ev in batch.events() {
                for r in ev.records() {
                    out.write_all(format!("{}\t", r.seq).as_bytes())?;
                    out.write_all(r.text)?;
                    out.write_all(b"\n")?;
                }
                writeln!(out, "EVENT\t{}", ev.id())?;
            }
        } else {
            // The position goes after the last record that completes its
            // ack id; records of an event that goes on in the next batch
            // come after it (cut and sent again whole after a crash).
            let records: Vec<_> = batch.records().collect();
            let done = records.iter().rposition(|r| r.completes_ack());
            for (i, r) in records.iter().enumerate() {
                out.write_all(format!("{}\t", r.seq).as_bytes())?;
                out.write_all(r.text)?;
                out.write_all(b"\n")?;
                if Some(i) == done {
                    writeln!(out, "ACK\t{}", r.ack)?;
                }
            }
        }
        // The output (and with it the position) must be written before the
        // batch is acknowledged.
        out.flush()?;
        if !o.delay.is_zero() {
            std::thread::sleep(o.delay);
        }
        if let Some((action, text)) = trigger {
            let hit = batch
                .records()
                .any(|r| r.text.windows(text.len()).any(|w| w == text.as_bytes()));
            if hit {
                let reply = ctx.command(action, &[])?;
                eprintln!(
                    "sink {}: command {action}: {:?}: {}",
                    o.name, reply.status, reply.message
                );
            }
        }
        Ok(())
    });
    match result {
        Ok(()) => Ok(()),
        Err(Error::Rejected(why)) => Err(format!("sink: rejected: {why}").into()),
        Err(e) => Err(e.into()),
    }
}
