//! `org.audisp.Dispatcher1` for real: a private system-like dbus-daemon
//! enforcing our shipped policy, a real audispd, `audispctl` as the client,
//! run as root and as `nobody`; subscribers get their signals; system
//! actions reach a test systemd manager with the right arguments.

mod support;

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use audisp::protocol::CommandStatus;
use audisp::sdk::Plugin;
use support::dbus::{unavailable, Bus, Helper};
use support::dispatcher::{example, sample, sink_plugin, wait_sink, Dispatcher};
use support::NOBODY;

fn audispctl() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_audispctl"))
}

fn ctl(bus: &Bus, uid: u32, args: &[&str]) -> Output {
    let out = bus
        .command_as(uid, &audispctl())
        .args(args)
        .output()
        .unwrap();
    out
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn main_config(bus: &Bus) -> String {
    format!(
        "[dbus]\nenabled = true\naddress = \"{}\"\n[dbus.setroubleshoot]\nenabled = false\n[shutdown]\ntimeout = \"5s\"\n",
        bus.address
    )
}

const AVC: &str = "node=web1 type=AVC msg=audit(1700000001.000:501): avc:  denied  { write } for  pid=4242 comm=\"httpd\" name=\"index.html\" dev=\"dm-0\" ino=12 scontext=system_u:system_r:httpd_t:s0 tcontext=system_u:object_r:user_home_t:s0 tclass=file permissive=0
node=web1 type=SYSCALL msg=audit(1700000001.000:501): arch=c000003e syscall=257 success=no exit=-13 comm=\"httpd\" exe=\"/usr/sbin/httpd\"
";

#[test]
fn policy_audispctl_and_signals() {
    if let Some(why) = unavailable() {
        support::skip(&why);
        return;
    }
    let bus = Bus::start();
    let mut d = Dispatcher::new(&main_config(&bus));
    d.write_plugin("all", &sink_plugin("all", "", ""));
    d.start(Stdio::piped()).unwrap();
    let mut stdin = d.child.as_mut().unwrap().stdin.take().unwrap();

    // The name appears once audispd published it.
    support::wait_until(Duration::from_secs(20), "the D-Bus name", || {
        ctl(&bus, 0, &["status"]).status.success()
    });

    // Root: status as a table and as JSON.
    let o = ctl(&bus, 0, &["status"]);
    let (out, _) = text(&o);
    assert!(out.contains("PLUGIN") && out.contains("QUEUED"), "{out}");
    assert!(out.lines().any(|l| l.starts_with("all ")), "{out}");
    assert!(out.lines().any(|l| l.starts_with("dbus ")), "{out}");
    let o = ctl(&bus, 0, &["--json", "status"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let names: Vec<&str> = v["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["all", "dbus"]);

    // Root: suspend / resume, and a plugin that does not exist.
    let o = ctl(&bus, 0, &["suspend", "all"]);
    assert!(o.status.success(), "{:?}", text(&o));
    assert_eq!(text(&o).0, "all: suspended\n");
    // The sender applies it on its next turn; the state report follows.
    let state = |d: &Dispatcher| d.plugin_state("all").state;
    support::wait_until(Duration::from_secs(10), "plugin all suspended", || {
        state(&d) == "suspended"
    });
    let o = ctl(&bus, 0, &["resume", "all"]);
    assert_eq!(text(&o).0, "all: resumed\n");
    support::wait_until(Duration::from_secs(10), "plugin all resumed", || {
        state(&d) != "suspended"
    });
    let o = ctl(&bus, 0, &["suspend", "nosuch"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o).1.contains("no plugin named \"nosuch\""),
        "{:?}",
        text(&o)
    );

    // Root: reload picks up a new plugin.
    d.write_plugin("second", &sink_plugin("second", "", ""));
    let o = ctl(&bus, 0, &["reload"]);
    assert!(o.status.success(), "{:?}", text(&o));
    assert_eq!(text(&o).0, "reloaded\n  added: second\n");
    // The service manager hears of a reload over D-Bus as of a SIGHUP.
    let note = d
        .notify
        .wait_for("RELOADING=1", Duration::from_secs(10))
        .unwrap();
    assert!(note.contains("MONOTONIC_USEC="), "{note}");
    d.notify
        .wait_for("READY=1", Duration::from_secs(10))
        .unwrap();
    let o = ctl(&bus, 0, &["--json", "status"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["plugins"].as_array().unwrap().len(), 3);

    // nobody: no statistics, no state changes, cannot own the name, may
    // introspect.
    for args in [
        &["status"][..],
        &["reload"],
        &["suspend", "all"],
        &["resume", "all"],
        &["watch", "AVC"],
    ] {
        let o = ctl(&bus, NOBODY, args);
        assert_eq!(o.status.code(), Some(4), "{args:?}: {:?}", text(&o));
        assert!(text(&o).1.contains("access denied"), "{:?}", text(&o));
    }
    assert_ne!(state(&d), "suspended", "nobody's suspend did nothing");
    let own = bus
        .command_as(NOBODY, std::path::Path::new("dbus-send"))
        .args([
            "--system",
            "--print-reply",
            "--dest=org.freedesktop.DBus",
            "/org/freedesktop/DBus",
            "org.freedesktop.DBus.RequestName",
            "string:org.audisp.Dispatcher1",
            "uint32:4",
        ])
        .output()
        .unwrap();
    assert!(!own.status.success());
    assert!(
        text(&own).1.contains("not allowed to own"),
        "{:?}",
        text(&own)
    );
    let intro = bus
        .command_as(NOBODY, std::path::Path::new("dbus-send"))
        .args([
            "--system",
            "--print-reply",
            "--dest=org.audisp.Dispatcher1",
            "/org/audisp/Dispatcher1",
            "org.freedesktop.DBus.Introspectable.Introspect",
        ])
        .output()
        .unwrap();
    assert!(intro.status.success(), "{:?}", text(&intro));
    let live = text(&intro).0;
    check_shipped_introspection(&live);

    // Signals: root subscribes to AVC events and watches AvcDenial; nobody
    // watches AvcDenial too (the bus must not deliver it).
    let mut events = Helper::spawn({
        let mut c = bus.command_as(0, &audispctl());
        c.args(["--json", "watch", "--count", "1", "AVC"]);
        c
    });
    let mut denials = Helper::spawn({
        let mut c = bus.command_as(0, &audispctl());
        c.args(["watch", "--avc", "--count", "1"]);
        c
    });
    let mut snoop = Helper::spawn({
        let mut c = bus.command_as(NOBODY, &audispctl());
        c.args(["watch", "--avc"]);
        c
    });
    for h in [&mut events, &mut denials, &mut snoop] {
        h.wait_line(Duration::from_secs(20), |l| l.contains("watching"));
    }
    // Non-AVC events first (the subscriber must skip them), then the AVC.
    stdin.write_all(&sample()).unwrap();
    stdin.write_all(AVC.as_bytes()).unwrap();
    stdin.flush().unwrap();
    let e = events.wait_count(1, Duration::from_secs(30));
    let v: serde_json::Value = serde_json::from_str(&e[0]).unwrap();
    let records: Vec<String> = v["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap().to_string())
        .collect();
    assert_eq!(records, AVC.lines().collect::<Vec<_>>());
    assert_eq!(v["types"], serde_json::json!([1400, 1300]));
    let a = denials.wait_count(1, Duration::from_secs(30));
    assert_eq!(
        a[0],
        "denied { write } system_u:system_r:httpd_t:s0 -> system_u:object_r:user_home_t:s0 tclass=file comm=httpd exe=/usr/sbin/httpd path=index.html pid=4242 node=web1"
    );
    assert!(events.wait(Duration::from_secs(10)).success());
    assert!(denials.wait(Duration::from_secs(10)).success());
    // dbus-daemon hands a broadcast to every recipient at once; the root
    // watcher has it, so nobody's would have it by now too.
    std::thread::sleep(Duration::from_millis(300));
    assert!(snoop.out_lines().is_empty(), "{:?}", snoop.lines());
    assert!(snoop.running());

    let n = sample()
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .count()
        + 2;
    wait_sink(&d.out("all"), n, Duration::from_secs(30));
    drop(stdin);
    d.wait(Duration::from_secs(30)).unwrap();
}

/// `dbus/org.audisp.Dispatcher1.xml` is the interface audispd serves.
fn check_shipped_introspection(live: &str) {
    let start = live
        .find("<interface name=\"org.audisp.Dispatcher1\">")
        .expect("our interface in the introspection");
    let end = live[start..].find("</interface>").unwrap() + start + "</interface>".len();
    // Compared without comments and indentation.
    let norm = |s: &str| -> Vec<String> {
        let mut t = s.to_string();
        while let Some(a) = t.find("<!--") {
            let b = t[a..].find("-->").map_or(t.len(), |b| a + b + 3);
            t.replace_range(a..b, "");
        }
        t.lines()
            .map(|l| l.trim().to_string())
            .filter(|l| !l.is_empty())
            .collect()
    };
    let shipped = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/dbus/org.audisp.Dispatcher1.xml"
    ))
    .unwrap();
    let s = shipped
        .find("<interface name=\"org.audisp.Dispatcher1\">")
        .unwrap();
    let e = shipped[s..].find("</interface>").unwrap() + s + "</interface>".len();
    assert_eq!(norm(&shipped[s..e]), norm(&live[start..end]));
}

#[test]
fn audispctl_explains_a_missing_bus_or_daemon() {
    if let Some(why) = unavailable() {
        support::skip(&why);
        return;
    }
    let o = Command::new(audispctl())
        .args(["--address", "unix:path=/nonexistent/bus", "status"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(3));
    assert!(
        text(&o)
            .1
            .contains("cannot connect to the system bus at unix:path=/nonexistent/bus"),
        "{:?}",
        text(&o)
    );
    let bus = Bus::start();
    let o = ctl(&bus, 0, &["status"]);
    assert_eq!(o.status.code(), Some(3));
    assert!(
        text(&o).1.contains("audispd is not on the bus"),
        "{:?}",
        text(&o)
    );
}

/// A native plugin that asks for `commands` on its first batch.
fn actor(
    sock: PathBuf,
    commands: Vec<&'static str>,
) -> mpsc::Receiver<Vec<(CommandStatus, String)>> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut sent = false;
        let _ = Plugin::new("actor").listen(&sock).run(|_batch, ctx| {
            if !sent {
                sent = true;
                let mut replies = Vec::new();
                for name in &commands {
                    let r = ctx.command(name, &[])?;
                    replies.push((r.status, r.message));
                }
                let _ = tx.send(replies);
            }
            Ok(())
        });
    });
    rx
}

#[test]
fn system_actions_ask_systemd_over_dbus() {
    if let Some(why) = unavailable() {
        support::skip(&why);
        return;
    }
    let bus = Bus::start();
    let mut systemd = Helper::spawn(bus.command_as(0, &example("test_systemd_manager")));
    systemd.wait_line(Duration::from_secs(20), |l| l == "READY");
    let mut d = Dispatcher::new(&main_config(&bus));
    d.write_plugin(
        "actor",
        r#"socket = "{dir}/run/actor.sock"
[restart]
initial = "20ms"
max = "200ms"
[actions.rescue]
run = "single-user"
[actions.stop]
run = "halt"
[actions.off]
run = "poweroff"
"#,
    );
    let replies = actor(
        d.path().join("run/actor.sock"),
        vec!["rescue", "stop", "off"],
    );
    d.start(Stdio::piped()).unwrap();
    let mut stdin = d.child.as_mut().unwrap().stdin.take().unwrap();
    stdin.write_all(AVC.as_bytes()).unwrap();
    stdin.flush().unwrap();
    let replies = replies
        .recv_timeout(Duration::from_secs(30))
        .unwrap_or_else(|_| panic!("no batch for the actor\n{}", d.log_tail(40)));
    let calls = systemd.wait_count(4, Duration::from_secs(10));
    assert_eq!(
        calls,
        [
            "READY",
            "StartUnit rescue.target isolate",
            "StartUnit halt.target replace-irreversibly",
            "StartUnit poweroff.target replace-irreversibly"
        ]
    );
    for (i, (status, message)) in replies.iter().enumerate() {
        assert_eq!(*status, CommandStatus::Done, "{message}");
        assert!(
            message.contains(&format!("/org/freedesktop/systemd1/job/{}", i + 1)),
            "{message}"
        );
    }
    drop(stdin);
    d.wait(Duration::from_secs(30)).unwrap();
}

/// Readers: a member of a group the bus policy lets through (the shipped
/// `audisp` block, applied here to the group `daemon`, gid 1) reads
/// statistics and gets AvcDenial when `[dbus] read_groups` names the group,
/// still may not change anything, and is refused by audispd itself when
/// `read_groups` does not name it.
#[test]
fn group_readers() {
    if let Some(why) = unavailable() {
        support::skip(&why);
        return;
    }
    const GID: u32 = 1;
    let bus = Bus::start_with(|dir| {
        let shipped = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/dbus/org.audisp.Dispatcher1.conf"
        ))
        .unwrap();
        let readers = dir.join("readers.conf");
        std::fs::write(
            &readers,
            shipped.replace("group=\"audisp\"", "group=\"daemon\""),
        )
        .unwrap();
        format!("<include>{}</include>", readers.display())
    });
    let member = |args: &[&str]| {
        bus.command_as_member(NOBODY, Some(GID), &audispctl())
            .args(args)
            .output()
            .unwrap()
    };
    let mut d = Dispatcher::new(&main_config(&bus).replacen(
        "enabled = true\n",
        "enabled = true\nread_groups = [\"daemon\"]\n",
        1,
    ));
    d.write_plugin("all", &sink_plugin("all", "", ""));
    d.start(Stdio::piped()).unwrap();
    let mut stdin = d.child.as_mut().unwrap().stdin.take().unwrap();
    support::wait_until(Duration::from_secs(20), "the D-Bus name", || {
        ctl(&bus, 0, &["status"]).status.success()
    });
    let o = member(&["status"]);
    assert!(o.status.success(), "{:?}", text(&o));
    assert!(text(&o).0.contains("PLUGIN"));
    let o = member(&["suspend", "all"]);
    assert_eq!(o.status.code(), Some(4), "{:?}", text(&o));
    let mut watch = Helper::spawn({
        let mut c = bus.command_as_member(NOBODY, Some(GID), &audispctl());
        c.args(["watch", "--avc", "--count", "1"]);
        c
    });
    watch.wait_line(Duration::from_secs(20), |l| l.contains("watching"));
    stdin.write_all(AVC.as_bytes()).unwrap();
    stdin.flush().unwrap();
    let got = watch.wait_count(1, Duration::from_secs(30));
    assert!(got[0].starts_with("denied { write }"), "{got:?}");
    drop(stdin);
    d.wait(Duration::from_secs(30)).unwrap();

    // The same member, but audispd's read_groups does not name the group.
    let mut d = Dispatcher::new(&main_config(&bus));
    d.start(Stdio::piped()).unwrap();
    let stdin = d.child.as_mut().unwrap().stdin.take().unwrap();
    support::wait_until(Duration::from_secs(20), "the D-Bus name", || {
        ctl(&bus, 0, &["status"]).status.success()
    });
    let o = member(&["status"]);
    assert_eq!(o.status.code(), Some(4), "{:?}", text(&o));
    assert!(text(&o).1.contains("read_groups"), "{:?}", text(&o));
    drop(stdin);
    d.wait(Duration::from_secs(30)).unwrap();
}

/// `[dbus] enabled` with no bus at the address: audispd logs why and runs
/// on, every record reaches the plugins, and a system action fails with the
/// reason (nothing is carried out behind the admin's back).
#[test]
fn without_a_bus_audispd_runs_on() {
    let mut d = Dispatcher::new(
        "[dbus]\nenabled = true\naddress = \"unix:path={dir}/run/no-bus.sock\"\n[shutdown]\ntimeout = \"5s\"\n",
    );
    d.write_plugin("all", &sink_plugin("all", "", ""));
    d.write_plugin(
        "actor",
        "socket = \"{dir}/run/actor.sock\"\n[actions.rescue]\nrun = \"single-user\"\n",
    );
    let replies = actor(d.path().join("run/actor.sock"), vec!["rescue"]);
    d.start(Stdio::piped()).unwrap();
    assert!(
        d.log().contains("running on without it"),
        "{}",
        d.log_tail(20)
    );
    let data = sample();
    let mut stdin = d.child.as_mut().unwrap().stdin.take().unwrap();
    stdin.write_all(&data).unwrap();
    drop(stdin);
    let replies = replies
        .recv_timeout(Duration::from_secs(30))
        .unwrap_or_else(|_| panic!("no batch for the actor\n{}", d.log_tail(40)));
    assert_eq!(replies.len(), 1);
    assert_eq!(replies[0].0, CommandStatus::Failed, "{}", replies[0].1);
    assert!(
        replies[0].1.contains("cannot connect to the system bus"),
        "{}",
        replies[0].1
    );
    let status = d.wait(Duration::from_secs(30)).unwrap();
    assert!(status.success(), "{status}\n{}", d.log_tail(40));
    let all = support::dispatcher::lines(&data);
    let out = support::dispatcher::read_sink(&d.out("all"));
    assert!(
        support::dispatcher::texts(&out) == all,
        "every record once, in order"
    );
}

/// The bus is absent when audispd starts, appears later, then restarts
/// (`systemctl restart dbus`): each time audispd publishes its name again,
/// and signals go through the new connection. One log line per outage and
/// one when back.
#[test]
fn audispd_reconnects_to_a_bus_that_comes_and_goes() {
    if let Some(why) = unavailable() {
        support::skip(&why);
        return;
    }
    let mut bus = Bus::start();
    bus.stop();
    let mut d = Dispatcher::new(&main_config(&bus));
    d.write_plugin("all", &sink_plugin("all", "", ""));
    d.start(Stdio::piped()).unwrap();
    let mut stdin = d.child.as_mut().unwrap().stdin.take().unwrap();
    assert!(
        d.log().contains("running on without it"),
        "{}",
        d.log_tail(20)
    );
    assert!(!ctl(&bus, 0, &["status"]).status.success());

    // The bus appears: audispd publishes within its back-off.
    bus.restart();
    support::wait_until(Duration::from_secs(30), "the D-Bus name", || {
        ctl(&bus, 0, &["status"]).status.success()
    });

    // The bus restarts: audispd notices, and publishes on the new one.
    bus.restart();
    support::wait_until(Duration::from_secs(30), "the D-Bus name again", || {
        ctl(&bus, 0, &["status"]).status.success()
    });
    let o = ctl(&bus, 0, &["status"]);
    assert!(
        text(&o).0.lines().any(|l| l.starts_with("all ")),
        "{:?}",
        text(&o)
    );

    // Signals go through the new connection.
    let mut events = Helper::spawn({
        let mut c = bus.command_as(0, &audispctl());
        c.args(["--json", "watch", "--count", "1", "AVC"]);
        c
    });
    let mut denials = Helper::spawn({
        let mut c = bus.command_as(0, &audispctl());
        c.args(["watch", "--avc", "--count", "1"]);
        c
    });
    for h in [&mut events, &mut denials] {
        h.wait_line(Duration::from_secs(20), |l| l.contains("watching"));
    }
    stdin.write_all(AVC.as_bytes()).unwrap();
    stdin.flush().unwrap();
    let e = events.wait_count(1, Duration::from_secs(30));
    let v: serde_json::Value = serde_json::from_str(&e[0]).unwrap();
    assert_eq!(v["types"], serde_json::json!([1400, 1300]));
    let a = denials.wait_count(1, Duration::from_secs(30));
    assert!(a[0].starts_with("denied { write }"), "{a:?}");
    assert!(events.wait(Duration::from_secs(10)).success());
    assert!(denials.wait(Duration::from_secs(10)).success());
    wait_sink(&d.out("all"), 2, Duration::from_secs(30));
    drop(stdin);
    let status = d.wait(Duration::from_secs(30)).unwrap();
    assert!(status.success(), "{status}\n{}", d.log_tail(40));

    let log = d.log();
    let count = |s: &str| log.lines().filter(|l| l.contains(s)).count();
    assert_eq!(count("running on without it, retrying"), 1, "{log}");
    assert_eq!(count("lost the bus connection"), 1, "{log}");
    assert_eq!(count("back on the bus"), 2, "{log}");
}
