//! A stand-in for setroubleshootd on a private bus, for tests: it owns
//! `org.fedoraproject.Setroubleshootd` (run it under its own user, as the
//! real one runs as `setroubleshoot`) and serves `avc(s) -> s` as
//! setroubleshoot's `server.py` does, but checks every call against the
//! contract and reports on standard output, one JSON line per call:
//! `{"ok":true,"data":"…"}` or `{"ok":false,"why":"…","data":"…"}`.
//!
//! What it rejects is what makes the real one misbehave: text without a
//! trailing newline (its reader keeps it for the next call), a record cut
//! in two, lines that are not records, more than one event in a call. An
//! AVC involving `setroubleshootd_t` makes it exit, as the real one does.
//!
//! Usage: `test_setroubleshootd [--out FILE] [--exit-on-first-call]` (bus
//! from `DBUS_SYSTEM_BUS_ADDRESS`); prints `READY` once it owns the name.
//! `--out` appends the report lines to FILE instead (for a bus-activated
//! instance). `--exit-on-first-call` exits in the middle of the very first
//! call any instance writing to FILE gets, without replying — the race of
//! setroubleshootd's idle exit — and reports `{"exited":true,…}`.

use std::io::Write;
use std::path::PathBuf;
use std::sync::OnceLock;

use zbus::fdo;

/// `--out FILE`, if given.
static OUT: OnceLock<Option<PathBuf>> = OnceLock::new();

/// Checks one `avc` argument; returns why it breaks the contract.
fn check(data: &str) -> Result<(), String> {
    if data.is_empty() {
        return Err("empty".into());
    }
    if !data.ends_with('\n') {
        return Err("no trailing newline: the last record would wait for the next call".into());
    }
    let mut event: Option<String> = None;
    for line in data[..data.len() - 1].split('\n') {
        // setroubleshoot's reader: [node=X ]type=T msg=audit(S.M:N): …
        let Some(t) = line.find("type=") else {
            return Err(format!("not a record (split across calls?): {line:?}"));
        };
        let rest = &line[t..];
        let Some(a) = rest.find(" msg=audit(") else {
            return Err(format!("no msg=audit(…): {line:?}"));
        };
        let stamp = &rest[a + 11..];
        let Some(end) = stamp.find("):") else {
            return Err(format!("record cut short: {line:?}"));
        };
        let id = format!("{}|{}", &line[..t], &stamp[..end]);
        let ok = stamp[..end]
            .split(['.', ':'])
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
        if !ok {
            return Err(format!("bad event id: {line:?}"));
        }
        match &event {
            None => event = Some(id),
            Some(e) if *e == id => {}
            Some(e) => return Err(format!("two events in one call: {e} and {id}")),
        }
    }
    Ok(())
}

fn emit(line: &str) {
    match OUT.get().and_then(|o| o.as_ref()) {
        Some(path) => {
            let f = std::fs::OpenOptions::new()
                .append(true)
                .create(true)
                .open(path);
            if let Ok(mut f) = f {
                let _ = writeln!(f, "{line}");
            }
        }
        None => {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{line}");
            let _ = out.flush();
        }
    }
}

fn report(ok: bool, why: &str, data: &str) {
    emit(&serde_json::json!({"ok": ok, "why": why, "data": data}).to_string());
}

/// Whether an instance writing to `--out` already exited mid-call.
fn exited_before() -> bool {
    OUT.get()
        .and_then(|o| o.as_ref())
        .and_then(|p| std::fs::read_to_string(p).ok())
        .is_some_and(|t| t.contains("\"exited\":true"))
}

struct Setroubleshootd {
    exit_on_first_call: bool,
}

#[zbus::interface(name = "org.fedoraproject.SetroubleshootdIface")]
impl Setroubleshootd {
    #[zbus(name = "avc")]
    fn avc(&self, data: String) -> fdo::Result<String> {
        if self.exit_on_first_call && !exited_before() {
            emit(&serde_json::json!({"exited": true, "data": data}).to_string());
            std::process::exit(0);
        }
        if let Err(why) = check(&data) {
            report(false, &why, &data);
            return Err(fdo::Error::InvalidArgs(why));
        }
        let own = data
            .split_ascii_whitespace()
            .filter_map(|w| w.strip_prefix("scontext=").or(w.strip_prefix("tcontext=")))
            .any(|c| c.split(':').nth(2) == Some("setroubleshootd_t"));
        if own {
            report(
                false,
                "AVC involving setroubleshootd_t: exiting, as setroubleshootd does",
                &data,
            );
            std::process::exit(0);
        }
        report(true, "", &data);
        Ok("AVC".into())
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut out = None;
    let mut exit_on_first_call = false;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--out" => out = args.next().map(PathBuf::from),
            "--exit-on-first-call" => exit_on_first_call = true,
            other => return Err(format!("unknown argument {other:?}").into()),
        }
    }
    let _ = OUT.set(out);
    let conn = zbus::blocking::connection::Builder::system()?
        .serve_at(
            "/org/fedoraproject/Setroubleshootd",
            Setroubleshootd { exit_on_first_call },
        )?
        .name("org.fedoraproject.Setroubleshootd")?
        .build()?;
    emit("READY");
    // Like the real service, it goes when its bus goes: an instance the bus
    // started (D-Bus activation) is no child of the test, which cannot stop
    // it, and would outlive the test's private bus otherwise.
    let bus = zbus::blocking::fdo::DBusProxy::new(&conn)?;
    while bus.get_id().is_ok() {
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    Ok(())
}
