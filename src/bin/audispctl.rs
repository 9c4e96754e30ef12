//! `audispctl`: audispd's control tool, a client of its D-Bus interface
//! `org.audisp.Dispatcher1` (docs/dbus.md, docs/audispctl.1.md): status,
//! reload, suspend/resume a plugin, watch the signals. Tables for people,
//! `--json` for scripts, and a plain sentence (and a distinct exit code)
//! when the bus or the daemon is not there or access is denied.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use audisp::dbus::{IFACE, NAME, PATH};
use zbus::blocking::Connection;

const USAGE: &str = "\
Usage: audispctl [--json] [--address ADDRESS] COMMAND

Talks to audispd over D-Bus (org.audisp.Dispatcher1 on the system bus).

Commands:
  status              the dispatcher, every plugin (state, queue, counters,
                      records/s over the last second) and the setroubleshoot
                      forwarder
  reload              re-read the configuration (as SIGHUP does)
  suspend PLUGIN      stop sending to PLUGIN (its records are dropped)
  resume PLUGIN       send to PLUGIN again, from the newest record on
  watch [--avc] [--count N] [TYPE...]
                      print signals as they come: with --avc the AvcDenial
                      signals, otherwise Event signals for events holding a
                      record of one of the TYPEs (names or numbers; none: all)

Options:
  --json              machine-readable output (one JSON document per line)
  --address ADDRESS   a bus address instead of the system bus
                      (default: $DBUS_SYSTEM_BUS_ADDRESS or the system bus)
  -h, --help          this help
  --version           the version

Exit status: 0 done, 1 the daemon refused (e.g. no such plugin), 2 usage,
3 the bus or audispd is not there, 4 access denied.
";

/// A failure with the exit code it maps to.
struct Fail {
    code: u8,
    message: String,
}

fn fail(code: u8, message: impl Into<String>) -> Fail {
    Fail {
        code,
        message: message.into(),
    }
}

/// Turns a bus error into a sentence a person can act on.
fn explain(e: zbus::Error) -> Fail {
    let (name, detail) = match &e {
        zbus::Error::MethodError(name, msg, _) => {
            (name.to_string(), msg.clone().unwrap_or_default())
        }
        zbus::Error::FDO(f) => {
            let s = f.to_string();
            match s.split_once(": ") {
                Some((n, d)) => (n.to_string(), d.to_string()),
                None => (s, String::new()),
            }
        }
        _ => return fail(3, format!("D-Bus: {e}")),
    };
    match name.as_str() {
        "org.freedesktop.DBus.Error.ServiceUnknown" | "org.freedesktop.DBus.Error.NameHasNoOwner" => fail(
            3,
            format!("audispd is not on the bus ({NAME} has no owner): it is not running (`systemctl enable --now audisp.service` starts it, and at every boot), or [dbus] enabled is not true in audispd.toml"),
        ),
        "org.freedesktop.DBus.Error.AccessDenied" => fail(
            4,
            format!("access denied: {detail}\n(changing state needs root; reading needs root or a group in [dbus] read_groups and in the bus policy)"),
        ),
        _ => fail(1, format!("{}: {detail}", name.rsplit('.').next().unwrap_or(&name))),
    }
}

struct Args {
    json: bool,
    address: Option<String>,
    command: Vec<String>,
}

fn parse_args() -> Result<Option<Args>, lexopt::Error> {
    use lexopt::prelude::*;
    let mut a = Args {
        json: false,
        address: None,
        command: Vec::new(),
    };
    let mut p = lexopt::Parser::from_env();
    while let Some(arg) = p.next()? {
        match arg {
            Long("json") => a.json = true,
            Long("address") => a.address = Some(p.value()?.string()?),
            Short('h') | Long("help") => {
                print!("{USAGE}");
                return Ok(None);
            }
            Long("version") => {
                println!("audispctl {}", env!("CARGO_PKG_VERSION"));
                return Ok(None);
            }
            Long("avc") => a.command.push("--avc".into()),
            Long("count") => {
                a.command.push("--count".into());
                a.command.push(p.value()?.string()?);
            }
            Value(v) => a.command.push(v.string()?),
            _ => return Err(arg.unexpected()),
        }
    }
    Ok(Some(a))
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(Some(a)) => a,
        Ok(None) => return ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("audispctl: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("audispctl: {}", f.message);
            ExitCode::from(f.code)
        }
    }
}

fn connect(address: Option<&str>) -> Result<Connection, Fail> {
    let shown = address
        .map(str::to_string)
        .or_else(|| std::env::var("DBUS_SYSTEM_BUS_ADDRESS").ok())
        .unwrap_or_else(|| "unix:path=/run/dbus/system_bus_socket".into());
    audisp::dbus::builder(address)
        .and_then(|b| b.build())
        .map_err(|e| {
            fail(
                3,
                format!("cannot connect to the system bus at {shown}: {e}"),
            )
        })
}

fn call<B, R>(conn: &Connection, method: &str, body: &B) -> Result<R, Fail>
where
    B: serde::Serialize + zbus::zvariant::DynamicType,
    R: for<'d> zbus::zvariant::DynamicDeserialize<'d>,
{
    let reply = conn
        .call_method(Some(NAME), PATH, Some(IFACE), method, body)
        .map_err(explain)?;
    reply
        .body()
        .deserialize()
        .map_err(|e| fail(1, format!("unexpected reply to {method}: {e}")))
}

fn run(args: &Args) -> Result<(), Fail> {
    let cmd: Vec<&str> = args.command.iter().map(String::as_str).collect();
    let Some((&verb, rest)) = cmd.split_first() else {
        return Err(fail(2, format!("no command given\n\n{USAGE}")));
    };
    let conn = connect(args.address.as_deref())?;
    match (verb, rest) {
        ("status", []) => status(&conn, args.json),
        ("reload", []) => {
            let (added, removed, changed, restart): (
                Vec<String>,
                Vec<String>,
                Vec<String>,
                Vec<String>,
            ) = call(&conn, "Reload", &())?;
            if args.json {
                println!(
                    "{}",
                    serde_json::json!({"added": added, "removed": removed, "changed": changed, "needs_restart": restart})
                );
            } else {
                println!("reloaded");
                for (what, list) in [
                    ("added", &added),
                    ("removed", &removed),
                    ("changed", &changed),
                    ("needs restart", &restart),
                ] {
                    if !list.is_empty() {
                        println!("  {what}: {}", list.join(", "));
                    }
                }
            }
            Ok(())
        }
        ("suspend" | "resume", [plugin]) => {
            let (method, done) = if verb == "suspend" {
                ("SuspendPlugin", "suspended")
            } else {
                ("ResumePlugin", "resumed")
            };
            let () = call(&conn, method, &(plugin,))?;
            if args.json {
                println!("{}", serde_json::json!({"plugin": plugin, "state": done}));
            } else {
                println!("{plugin}: {done}");
            }
            Ok(())
        }
        ("watch", rest) => watch(&conn, rest, args.json),
        _ => Err(fail(
            2,
            format!(
                "unknown command or wrong arguments: {}\n\n{USAGE}",
                cmd.join(" ")
            ),
        )),
    }
}

/// How far apart `status` reads the counters to tell the current rates.
const RATE_WINDOW: Duration = Duration::from_secs(1);

/// One `GetStats` document.
fn get_stats(conn: &Connection) -> Result<serde_json::Value, Fail> {
    let text: String = call(conn, "GetStats", &())?;
    serde_json::from_str(&text).map_err(|e| fail(1, format!("GetStats returned bad JSON: {e}")))
}

fn status(conn: &Connection, json: bool) -> Result<(), Fail> {
    if json {
        let text: String = call(conn, "GetStats", &())?;
        println!("{text}");
        return Ok(());
    }
    // The rates are what happens now: the counters' growth over a second,
    // not their totals over the uptime (which hide a stall or a burst).
    let before = get_stats(conn)?;
    let started = Instant::now();
    std::thread::sleep(RATE_WINDOW);
    let after = get_stats(conn)?;
    print!("{}", status_text(&before, &after, started.elapsed()));
    Ok(())
}

/// A counter of a `GetStats` document (0 when absent).
fn count(v: &serde_json::Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

/// Records accepted from every input.
fn records_in(stats: &serde_json::Value) -> u64 {
    stats["inputs"]
        .as_array()
        .map(|a| a.iter().map(|i| count(&i["records"])).sum())
        .unwrap_or(0)
}

/// The `status` table from two `GetStats` documents read `window` apart:
/// totals from the second, rates from the difference. A plugin missing
/// from the first reading, or counters that went back (audispd restarted
/// in between), have no rate (`-`).
fn status_text(before: &serde_json::Value, after: &serde_json::Value, window: Duration) -> String {
    use std::fmt::Write;
    let secs = window.as_secs_f64().max(f64::EPSILON);
    let rate = |old: Option<u64>, new: u64| match old {
        Some(old) if old <= new => format!("{:.1}", (new - old) as f64 / secs),
        _ => "-".to_string(),
    };
    let restarted = count(&after["uptime_secs"]) < count(&before["uptime_secs"]);
    let mut out = String::new();
    let total = records_in(after);
    let _ = writeln!(
        out,
        "audispd up {}s, {total} records in ({}/s now), journal {}..{}, {} bytes on disk",
        count(&after["uptime_secs"]),
        rate((!restarted).then(|| records_in(before)), total),
        count(&after["journal"]["start"]),
        count(&after["journal"]["end"]),
        count(&after["journal"]["disk_bytes"])
    );
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "{:<20} {:<11} {:>8} {:>10} {:>10} {:>8} {:>9}",
        "PLUGIN", "STATE", "QUEUED", "DELIVERED", "ACKED", "DROPPED", "ACKED/s"
    );
    let earlier = |name: &str| -> Option<u64> {
        before["plugins"]
            .as_array()?
            .iter()
            .find(|p| p["name"].as_str() == Some(name))
            .map(|p| count(&p["acked"]))
    };
    for p in after["plugins"].as_array().into_iter().flatten() {
        let name = p["name"].as_str().unwrap_or("?");
        let _ = writeln!(
            out,
            "{:<20} {:<11} {:>8} {:>10} {:>10} {:>8} {:>9}",
            name,
            p["state"].as_str().unwrap_or("?"),
            count(&p["queued"]),
            count(&p["delivered"]),
            count(&p["acked"]),
            count(&p["dropped"]),
            rate(earlier(name).filter(|_| !restarted), count(&p["acked"]))
        );
    }
    if let Some(s) = after.get("setroubleshoot") {
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "setroubleshoot: sent {} failed {} dropped {} duplicates {} rate-limited {} guarded {} retries {}",
            count(&s["sent"]),
            count(&s["failed"]),
            count(&s["dropped"]),
            count(&s["duplicates"]),
            count(&s["rate_limited"]),
            count(&s["guarded"]),
            count(&s["retries"])
        );
    }
    out
}

/// A record as `watch` prints it: auditd's 0x1D separator before the
/// ENRICHED fields becomes a space (as audisp-journal writes it), so a
/// terminal shows no control character. `--json` keeps the record exact.
fn printable(record: &str) -> String {
    record.replace('\x1d', " ")
}

fn watch(conn: &Connection, rest: &[&str], json: bool) -> Result<(), Fail> {
    let mut avc = false;
    let mut count: Option<u64> = None;
    let mut types: Vec<String> = Vec::new();
    let mut it = rest.iter();
    while let Some(&a) = it.next() {
        match a {
            "--avc" => avc = true,
            "--count" => {
                let v = it.next().ok_or_else(|| fail(2, "--count needs a number"))?;
                count = Some(
                    v.parse()
                        .map_err(|_| fail(2, format!("--count {v:?} is not a number")))?,
                );
            }
            t => types.push(t.to_string()),
        }
    }
    let member = if avc { "AvcDenial" } else { "Event" };
    let rule = zbus::MatchRule::builder()
        .msg_type(zbus::message::Type::Signal)
        .sender(NAME)
        .and_then(|b| b.path(PATH))
        .and_then(|b| b.interface(IFACE))
        .and_then(|b| b.member(member))
        .map_err(|e| fail(1, format!("match rule: {e}")))?
        .build();
    let messages =
        zbus::blocking::MessageIterator::for_match_rule(rule, conn, Some(64)).map_err(explain)?;
    if !avc {
        let () = call(conn, "Subscribe", &(types.clone(),))?;
    }
    eprintln!("audispctl: watching {member} signals");
    for (i, m) in messages.enumerate() {
        let m = m.map_err(explain)?;
        let body = m.body();
        if avc {
            type Avc = (
                String,
                String,
                String,
                String,
                Vec<String>,
                String,
                String,
                String,
                u32,
                String,
                String,
            );
            let (result, scontext, tcontext, tclass, perms, comm, exe, path, pid, node, event): Avc =
                body.deserialize().map_err(|e| fail(1, format!("bad AvcDenial signal: {e}")))?;
            if json {
                println!(
                    "{}",
                    serde_json::json!({"result": result, "scontext": scontext, "tcontext": tcontext, "tclass": tclass,
                        "perms": perms, "comm": comm, "exe": exe, "path": path, "pid": pid, "node": node, "event": event})
                );
            } else {
                println!(
                    "{result} {{ {} }} {scontext} -> {tcontext} tclass={tclass} comm={comm} exe={exe} path={path} pid={pid}{}",
                    perms.join(" "),
                    if node.is_empty() { String::new() } else { format!(" node={node}") }
                );
            }
        } else {
            let (id, rtypes, records): (u64, Vec<u32>, Vec<String>) = body
                .deserialize()
                .map_err(|e| fail(1, format!("bad Event signal: {e}")))?;
            if json {
                println!(
                    "{}",
                    serde_json::json!({"id": id, "types": rtypes, "records": records})
                );
            } else {
                println!("event {id}:");
                for r in &records {
                    println!("  {}", printable(r));
                }
            }
        }
        if count.is_some_and(|c| i as u64 + 1 >= c) {
            break;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn stats(uptime: u64, records: u64, plugins: &[(&str, u64)]) -> serde_json::Value {
        json!({
            "uptime_secs": uptime,
            "journal": {"start": 1, "end": records + 1, "disk_bytes": 4096},
            "inputs": [{"name": "auditd", "records": records}],
            "plugins": plugins.iter().map(|(name, acked)| json!({
                "name": name, "state": "connected", "queued": 0,
                "delivered": acked, "acked": acked, "dropped": 0,
            })).collect::<Vec<_>>(),
        })
    }

    #[test]
    fn status_shows_the_rate_of_the_last_window_not_the_average() {
        // 10000 records in an hour, then 50 in the last two seconds.
        let before = stats(3600, 10_000, &[("logfile", 9_990), ("journal", 10_000)]);
        let after = stats(
            3602,
            10_050,
            &[("logfile", 9_990), ("journal", 10_050), ("new", 7)],
        );
        let text = status_text(&before, &after, Duration::from_secs(2));
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "audispd up 3602s, 10050 records in (25.0/s now), journal 1..10051, 4096 bytes on disk"
        );
        assert!(lines[2].ends_with("ACKED/s"), "{text}");
        let rate_of = |plugin: &str| {
            let line = lines
                .iter()
                .find(|l| l.split_whitespace().next() == Some(plugin))
                .unwrap();
            line.split_whitespace().last().unwrap().to_string()
        };
        assert_eq!(rate_of("logfile"), "0.0", "a stalled plugin shows 0");
        assert_eq!(rate_of("journal"), "25.0");
        assert_eq!(rate_of("new"), "-", "no earlier reading");
    }

    #[test]
    fn a_restart_between_the_readings_shows_no_rate() {
        let before = stats(3600, 10_000, &[("logfile", 10_000)]);
        let after = stats(0, 3, &[("logfile", 3)]);
        let text = status_text(&before, &after, Duration::from_secs(1));
        assert!(text.contains("3 records in (-/s now)"), "{text}");
        let logfile = text.lines().find(|l| l.starts_with("logfile")).unwrap();
        assert!(logfile.ends_with(" -"), "{text}");
    }

    #[test]
    fn watch_shows_the_enrichment_separator_as_a_space() {
        let record = "type=USER_LOGIN msg=audit(1.0:2): res=success'\x1dUID=\"root\" AUID=\"root\"";
        assert_eq!(
            printable(record),
            "type=USER_LOGIN msg=audit(1.0:2): res=success' UID=\"root\" AUID=\"root\""
        );
    }
}
