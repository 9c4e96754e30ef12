//! AVC denials reach setroubleshootd exactly as sedispatch delivers them:
//! a real audispd, a private system-like dbus-daemon with our policy, and a
//! test setroubleshootd that owns its name under its own user and rejects
//! every contract violation (see `examples/test_setroubleshootd.rs`).

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::process::Stdio;
use std::time::Duration;

use support::dbus::{unavailable, Bus, Helper, SETROUBLESHOOT_UID};
use support::dispatcher::{example, sample, sink_plugin, wait_sink, Dispatcher};
use support::{wait_until, NOBODY};

fn avc_samples() -> Vec<u8> {
    std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/avc-samples.log"
    ))
    .expect("tests/data/avc-samples.log")
}

/// An AVC about setroubleshootd itself (the real one exits on these).
const GUARDED: &str = "type=AVC msg=audit(1700000000.100:9001): avc:  denied  { read } for  pid=77 comm=\"setroubleshootd\" name=\"x\" scontext=system_u:system_r:setroubleshootd_t:s0 tcontext=system_u:object_r:etc_t:s0 tclass=file permissive=0
type=SYSCALL msg=audit(1700000000.100:9001): arch=c000003e syscall=257 success=no exit=-13 comm=\"setroubleshootd\" exe=\"/usr/bin/python3\"
";

/// The records the engine can route (`[node=X ]type=…`), grouped into
/// events in input order: (event id, records).
fn events(text: &str) -> Vec<(String, Vec<String>)> {
    let mut order: Vec<String> = Vec::new();
    let mut by_id: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in text.lines() {
        if !(line.starts_with("node=") || line.starts_with("type=")) {
            continue;
        }
        let t = line.find("type=").unwrap();
        let a = line.find("msg=audit(").unwrap();
        let end = line[a..].find("):").unwrap() + a;
        let id = format!("{}{}", &line[..t], &line[a + 10..end]);
        if !by_id.contains_key(&id) {
            order.push(id.clone());
        }
        by_id.entry(id).or_default().push(line.to_string());
    }
    order
        .into_iter()
        .map(|id| {
            let recs = by_id.remove(&id).unwrap();
            (id, recs)
        })
        .collect()
}

fn field<'a>(event: &'a [String], key: &str) -> &'a str {
    let avc = event.iter().find(|l| l.contains("type=AVC msg=")).unwrap();
    avc.split_ascii_whitespace()
        .find_map(|w| w.strip_prefix(key))
        .unwrap_or("")
}

/// What a correct forwarder sends for `text`: one string per AVC event,
/// the event's records each ending in `\n`, identical denials once, none
/// about setroubleshootd_t.
fn expected_calls(text: &str) -> (Vec<String>, usize, usize) {
    let mut seen = BTreeSet::new();
    let (mut dups, mut guarded) = (0, 0);
    let mut calls = Vec::new();
    for (_, recs) in events(text) {
        if !recs.iter().any(|l| l.contains("type=AVC msg=")) {
            continue;
        }
        let ctx = [field(&recs, "scontext="), field(&recs, "tcontext=")];
        if ctx
            .iter()
            .any(|c| c.split(':').nth(2) == Some("setroubleshootd_t"))
        {
            guarded += 1;
            continue;
        }
        let avc = recs.iter().find(|l| l.contains("type=AVC msg=")).unwrap();
        let perms = &avc[avc.find('{').unwrap()..avc.find('}').unwrap()];
        let key = (
            ctx[0].to_string(),
            ctx[1].to_string(),
            field(&recs, "tclass=").to_string(),
            perms.to_string(),
        );
        if !seen.insert(key) {
            dups += 1;
            continue;
        }
        calls.push(recs.iter().map(|r| format!("{r}\n")).collect::<String>());
    }
    (calls, dups, guarded)
}

fn stats(bus: &Bus) -> serde_json::Value {
    let conn = zbus::blocking::connection::Builder::address(bus.address.as_str())
        .unwrap()
        .build()
        .unwrap();
    let reply = conn
        .call_method(
            Some("org.audisp.Dispatcher1"),
            "/org/audisp/Dispatcher1",
            Some("org.audisp.Dispatcher1"),
            "GetStats",
            &(),
        )
        .unwrap();
    let json: String = reply.body().deserialize().unwrap();
    serde_json::from_str(&json).unwrap()
}

fn main_config(bus: &Bus) -> String {
    format!(
        "[dbus]\nenabled = true\naddress = \"{}\"\n[dbus.setroubleshoot]\nrate = 1000\n",
        bus.address
    )
}

/// The input: the real AVC samples, a repeat of the first denial (new
/// serial, same contexts, class and permissions), the setroubleshootd_t
/// event, and the real non-AVC sample (693 events).
fn input() -> String {
    let avc = String::from_utf8(avc_samples()).unwrap();
    let repeat: String = avc
        .lines()
        .take(3)
        .map(|l| l.replace(":1128)", ":99128)") + "\n")
        .collect();
    format!(
        "{avc}{repeat}{GUARDED}{}",
        String::from_utf8(sample()).unwrap()
    )
}

#[test]
fn one_correct_call_per_avc_event() {
    if let Some(why) = unavailable() {
        support::skip(&why);
        return;
    }
    let bus = Bus::start();
    let mut srt =
        Helper::spawn(bus.command_as(SETROUBLESHOOT_UID, &example("test_setroubleshootd")));
    srt.wait_line(Duration::from_secs(20), |l| l == "READY");

    let text = input();
    let (expected, dups, guarded) = expected_calls(&text);
    assert_eq!(expected.len(), 13, "13 routable AVC events in the samples");
    assert_eq!((dups, guarded), (1, 1));

    let mut d = Dispatcher::new(&main_config(&bus));
    d.write_plugin("all", &sink_plugin("all", "", ""));
    d.start(Stdio::piped()).unwrap();
    let mut stdin = d.child.as_mut().unwrap().stdin.take().unwrap();
    stdin.write_all(text.as_bytes()).unwrap();
    stdin.flush().unwrap();

    // READY plus one line per call.
    let lines = srt.wait_count(1 + expected.len(), Duration::from_secs(30));
    let n_records = text.lines().count();
    wait_sink(&d.out("all"), n_records, Duration::from_secs(30));
    wait_until(Duration::from_secs(20), "forwarder counters", || {
        let s = &stats(&bus)["setroubleshoot"];
        s["sent"] == expected.len() && s["guarded"] == 1 && s["duplicates"] == 1
    });
    let mut got: Vec<String> = Vec::new();
    for l in &lines[1..] {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        assert_eq!(v["ok"], true, "contract violation: {v}");
        got.push(v["data"].as_str().unwrap().to_string());
    }
    let mut want = expected.clone();
    got.sort();
    want.sort();
    assert_eq!(
        got, want,
        "exactly the AVC events, whole, newline-terminated"
    );
    let s = stats(&bus);
    let f = &s["setroubleshoot"];
    assert_eq!(
        (f["failed"].as_u64(), f["dropped"].as_u64()),
        (Some(0), Some(0))
    );
    assert_eq!(
        srt.out_lines().len(),
        1 + expected.len(),
        "no call for non-AVC events"
    );
    assert!(srt.running(), "the setroubleshootd_t guard kept it alive");
    drop(stdin);
    d.wait(Duration::from_secs(30)).unwrap();
}

#[test]
fn absent_setroubleshootd_is_counted_and_dispatching_goes_on() {
    if let Some(why) = unavailable() {
        support::skip(&why);
        return;
    }
    let bus = Bus::start();
    let text = String::from_utf8(avc_samples()).unwrap();
    let (expected, _, _) = expected_calls(&text);
    let mut d = Dispatcher::new(&main_config(&bus));
    d.write_plugin("all", &sink_plugin("all", "", ""));
    d.start(Stdio::piped()).unwrap();
    let mut stdin = d.child.as_mut().unwrap().stdin.take().unwrap();
    stdin.write_all(text.as_bytes()).unwrap();
    stdin.write_all(&sample()).unwrap();
    stdin.flush().unwrap();
    let n = text.lines().count()
        + sample()
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .count();
    let out = wait_sink(&d.out("all"), n, Duration::from_secs(30));
    assert_eq!(
        out.records.len(),
        n,
        "every record reached the other plugin"
    );
    wait_until(Duration::from_secs(20), "every AVC event counted", || {
        let f = &stats(&bus)["setroubleshoot"];
        f["failed"].as_u64().unwrap() + f["dropped"].as_u64().unwrap() == expected.len() as u64
    });
    let f = &stats(&bus)["setroubleshoot"];
    assert_eq!(f["sent"], 0);
    assert!(f["failed"].as_u64().unwrap() >= 1, "{f}");
    d.wait_log("setroubleshootd is not installed", Duration::from_secs(5));
    assert!(d.running());
    drop(stdin);
    d.wait(Duration::from_secs(30)).unwrap();
}

/// The test setroubleshootd itself refuses what would make the real one
/// misbehave, so the test above can fail.
#[test]
fn the_test_setroubleshootd_rejects_contract_violations() {
    if let Some(why) = unavailable() {
        support::skip(&why);
        return;
    }
    let bus = Bus::start();
    let mut srt =
        Helper::spawn(bus.command_as(SETROUBLESHOOT_UID, &example("test_setroubleshootd")));
    srt.wait_line(Duration::from_secs(20), |l| l == "READY");
    let conn = zbus::blocking::connection::Builder::address(bus.address.as_str())
        .unwrap()
        .build()
        .unwrap();
    let call = |data: &str| {
        conn.call_method(
            Some("org.fedoraproject.Setroubleshootd"),
            "/org/fedoraproject/Setroubleshootd",
            Some("org.fedoraproject.SetroubleshootdIface"),
            "avc",
            &(data,),
        )
        .map(|r| r.body().deserialize::<String>().unwrap())
    };
    let a = "type=AVC msg=audit(1.000:1): avc:  denied  { read } for scontext=a:b:c_t:s0 tcontext=a:b:d_t:s0 tclass=file";
    let s = "type=SYSCALL msg=audit(1.000:1): exe=\"/bin/x\"";
    let other = "type=SYSCALL msg=audit(1.000:2): exe=\"/bin/x\"";
    assert!(call(&format!("{a}\n{s}")).is_err(), "no trailing newline");
    assert!(call(&format!("{a}\n{other}\n")).is_err(), "two events");
    assert!(call(&format!("{a}\n{}", &s[..10])).is_err(), "record split");
    assert!(
        call(&format!("{}\n", &s[10..])).is_err(),
        "rest of a split record"
    );
    assert_eq!(call(&format!("{a}\n{s}\n")).unwrap(), "AVC");
    let lines = srt.wait_count(6, Duration::from_secs(10));
    let oks: Vec<bool> = lines[1..]
        .iter()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["ok"] == true)
        .collect();
    assert_eq!(oks, [false, false, false, false, true]);
    // An unprivileged user may not call avc (setroubleshoot's policy).
    let nobody = std::process::Command::new("setpriv")
        .args([
            &format!("--reuid={NOBODY}"),
            &format!("--regid={NOBODY}"),
            "--clear-groups",
            "dbus-send",
        ])
        .arg(format!("--bus={}", bus.address))
        .args([
            "--print-reply",
            "--dest=org.fedoraproject.Setroubleshootd",
            "/org/fedoraproject/Setroubleshootd",
            "org.fedoraproject.SetroubleshootdIface.avc",
        ])
        .arg(format!("string:{a}\n"))
        .output()
        .unwrap();
    assert!(!nobody.status.success());
    assert!(
        String::from_utf8_lossy(&nobody.stderr).contains("AccessDenied"),
        "{}",
        String::from_utf8_lossy(&nobody.stderr)
    );
}

/// setroubleshootd is bus-activated and exits when idle; a call can meet an
/// instance that exits mid-call (`NoReply`). The forwarder retries once,
/// which activates a new instance, and every event still arrives once.
#[test]
fn retry_after_bus_activation() {
    if let Some(why) = unavailable() {
        support::skip(&why);
        return;
    }
    let calls_path = std::sync::Arc::new(std::sync::Mutex::new(std::path::PathBuf::new()));
    let cp = calls_path.clone();
    let bus = Bus::start_with(move |dir| {
        let services = dir.join("services");
        std::fs::create_dir(&services).unwrap();
        let calls = dir.join("calls.jsonl");
        std::fs::write(&calls, "").unwrap();
        nix::unistd::chown(
            &calls,
            Some(nix::unistd::Uid::from_raw(SETROUBLESHOOT_UID)),
            None,
        )
        .unwrap();
        std::fs::write(
            services.join("org.fedoraproject.Setroubleshootd.service"),
            format!(
                "[D-BUS Service]\nName=org.fedoraproject.Setroubleshootd\nExec=/usr/bin/setpriv --reuid={SETROUBLESHOOT_UID} --regid={SETROUBLESHOOT_UID} --clear-groups {} --out {} --exit-on-first-call\nUser=daemon\n",
                example("test_setroubleshootd").display(),
                calls.display()
            ),
        )
        .unwrap();
        *cp.lock().unwrap() = calls;
        format!("<servicedir>{}</servicedir>", services.display())
    });
    let calls = calls_path.lock().unwrap().clone();
    let text = String::from_utf8(avc_samples()).unwrap();
    let (expected, _, _) = expected_calls(&text);
    let mut d = Dispatcher::new(&main_config(&bus));
    d.start(Stdio::piped()).unwrap();
    let mut stdin = d.child.as_mut().unwrap().stdin.take().unwrap();
    stdin.write_all(text.as_bytes()).unwrap();
    stdin.flush().unwrap();
    wait_until(Duration::from_secs(30), "every AVC event sent", || {
        stats(&bus)["setroubleshoot"]["sent"] == expected.len()
    });
    let f = &stats(&bus)["setroubleshoot"];
    assert_eq!(
        (f["retries"].as_u64(), f["failed"].as_u64()),
        (Some(1), Some(0)),
        "{f}\n{}\n{}\n{}",
        std::fs::read_to_string(&calls).unwrap(),
        d.log_tail(20),
        std::fs::read_to_string(bus.dir.path().join("dbus-daemon.log")).unwrap_or_default()
    );
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&calls)
        .unwrap()
        .lines()
        .filter(|l| *l != "READY")
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        lines[0]["exited"], true,
        "the first instance exited mid-call"
    );
    let mut got: Vec<String> = lines[1..]
        .iter()
        .map(|v| {
            assert_eq!(v["ok"], true, "{v}");
            v["data"].as_str().unwrap().to_string()
        })
        .collect();
    let mut want = expected.clone();
    got.sort();
    want.sort();
    assert_eq!(got, want, "every event once, the retried one included");
    drop(stdin);
    d.wait(Duration::from_secs(30)).unwrap();
}

/// A denial storm is cut down to the configured rate; the rest is counted.
#[test]
fn rate_limit() {
    if let Some(why) = unavailable() {
        support::skip(&why);
        return;
    }
    let bus = Bus::start();
    let mut srt =
        Helper::spawn(bus.command_as(SETROUBLESHOOT_UID, &example("test_setroubleshootd")));
    srt.wait_line(Duration::from_secs(20), |l| l == "READY");
    let text = String::from_utf8(avc_samples()).unwrap();
    let (expected, _, _) = expected_calls(&text);
    let mut d = Dispatcher::new(&main_config(&bus).replace("rate = 1000", "rate = 2"));
    d.start(Stdio::piped()).unwrap();
    let mut stdin = d.child.as_mut().unwrap().stdin.take().unwrap();
    stdin.write_all(text.as_bytes()).unwrap();
    stdin.flush().unwrap();
    wait_until(
        Duration::from_secs(30),
        "every AVC event accounted for",
        || {
            let f = &stats(&bus)["setroubleshoot"];
            f["sent"].as_u64().unwrap() + f["rate_limited"].as_u64().unwrap()
                == expected.len() as u64
        },
    );
    let f = &stats(&bus)["setroubleshoot"];
    let sent = f["sent"].as_u64().unwrap();
    assert!((2..=6).contains(&sent), "a burst of 2 plus 2/s: {f}");
    // Every call the limiter let through arrived, and correctly.
    let lines = srt.wait_count(1 + sent as usize, Duration::from_secs(10));
    for l in &lines[1..] {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        assert_eq!(v["ok"], true, "{v}");
        assert!(expected.contains(&v["data"].as_str().unwrap().to_string()));
    }
    drop(stdin);
    d.wait(Duration::from_secs(30)).unwrap();
}
