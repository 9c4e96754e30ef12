//! A plugin that acknowledges every batch without doing anything with it:
//! the cheapest possible consumer, so that a benchmark measures the
//! dispatcher's fan-out rather than a plugin's own work
//! (`benches/dispatch.sh` runs four of them).
//!
//! Usage: null [--name NAME] [--events]
//!
//! When the dispatcher lets it go, it prints one line to standard output
//! (under audispd, that is audispd's own standard output):
//!
//! ```text
//! null NAME: records=N batches=B user_s=U sys_s=S maxrss_kib=K last_batch_unix=T
//! ```
//!
//! with its own CPU time and peak resident set size (`getrusage`), so that a
//! benchmark can tell the plugins' cost from the dispatcher's, and when it
//! handled its last batch (Unix time, seconds), so that it can tell when
//! delivery ended from when the dispatcher exited.

use std::time::SystemTime;

use audisp::sdk::{Error, Plugin};

struct Opts {
    name: String,
    events: bool,
}

fn opts() -> Result<Opts, String> {
    let mut o = Opts {
        name: "null".into(),
        events: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--name" => o.name = args.next().ok_or("--name needs a value")?,
            "--events" => o.events = true,
            other => {
                return Err(format!(
                    "unknown argument {other} (usage: null [--name NAME] [--events])"
                ))
            }
        }
    }
    Ok(o)
}

/// This process's CPU seconds (user, system) and peak RSS in KiB.
fn usage() -> (f64, f64, i64) {
    // SAFETY: getrusage fills the struct we pass; all-zero is a valid value
    // for it.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: RUSAGE_SELF with a valid pointer.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) } != 0 {
        return (0.0, 0.0, 0);
    }
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    (secs(ru.ru_utime), secs(ru.ru_stime), ru.ru_maxrss)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let o = opts().map_err(|e| format!("null: {e}"))?;
    let mut plugin = Plugin::new(&o.name);
    if o.events {
        plugin = plugin.events();
    }
    let mut records = 0u64;
    let mut batches = 0u64;
    let mut last_batch = SystemTime::UNIX_EPOCH;
    let result = plugin.run(|batch, _ctx| {
        records += batch.len() as u64;
        batches += 1;
        last_batch = SystemTime::now();
        Ok(())
    });
    let last = last_batch
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64();
    let (user, sys, maxrss) = usage();
    println!(
        "null {}: records={records} batches={batches} user_s={user:.3} sys_s={sys:.3} maxrss_kib={maxrss} last_batch_unix={last:.6}",
        o.name
    );
    match result {
        Ok(()) => Ok(()),
        Err(Error::Rejected(why)) => Err(format!("null {}: rejected: {why}", o.name).into()),
        Err(e) => Err(format!("null {}: {e}", o.name).into()),
    }
}
