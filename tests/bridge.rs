//! `audisp-bridge`, the auditd plugin that relays into the dispatcher's
//! input socket: fed on standard input as auditd feeds it, it keeps
//! draining while the dispatcher is killed (`kill -9`) mid-stream and
//! restarted — its writer never blocks — buffers what the dispatcher has not
//! acknowledged, resends after reconnecting, and the plugin behind the
//! dispatcher gets every record exactly once, in order.

mod support;

use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use support::dispatcher::{corpus, lines, read_sink, sink_plugin, texts, wait_sink, Dispatcher};
use support::wait_until;

/// A running bridge, killed on drop if the test failed.
struct Bridge(Option<Child>);

impl Drop for Bridge {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn start_bridge(d: &Dispatcher) -> Bridge {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(d.path().join("bridge.log"))
        .unwrap();
    Bridge(Some(
        Command::new(env!("CARGO_BIN_EXE_audisp-bridge"))
            .arg("--socket")
            .arg(d.input_socket())
            .arg("--state-dir")
            .arg(d.path().join("bridge"))
            .arg("--max-size")
            .arg("64")
            .env("AUDISP_LOG", "info")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start audisp-bridge"),
    ))
}

fn bridge_log(d: &Dispatcher) -> String {
    std::fs::read_to_string(d.path().join("bridge.log")).unwrap_or_default()
}

const MAIN: &str = "[input.stdin]\nenabled = false\n[journal]\nsegment_size = \"4M\"\nmemory = \"4M\"\n[stats]\ninterval = \"0\"\n";

#[test]
fn dispatcher_killed_and_restarted_mid_stream_every_record_once() {
    let data = corpus();
    let all = lines(&data);
    let half = data.len() / 2;
    let cut = data[..half]
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |i| i + 1);
    let first_half = lines(&data[..cut]).len();
    let mut d = Dispatcher::new(MAIN);
    d.write_plugin("sink", &sink_plugin("sink", "", ""));
    d.start(Stdio::null()).unwrap();
    let mut bridge = start_bridge(&d);
    let mut stdin = bridge.0.as_mut().unwrap().stdin.take().unwrap();

    stdin.write_all(&data[..cut]).unwrap();
    // Mid-stream: part of the first half has reached the plugin.
    wait_sink(&d.out("sink"), first_half / 3, Duration::from_secs(60));
    d.crash();
    // With the dispatcher down the bridge still drains its input: this
    // write of megabytes (far beyond a pipe's 64 KiB) returns.
    stdin.write_all(&data[cut..]).unwrap();
    stdin.flush().unwrap();
    wait_until(Duration::from_secs(30), "the bridge to notice", || {
        bridge_log(&d).contains("dispatcher unavailable")
    });
    d.start(Stdio::null()).unwrap();
    drop(stdin);
    let status = {
        let child = bridge.0.as_mut().unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the bridge did not finish\n{}",
                bridge_log(&d)
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    bridge.0 = None;
    assert!(status.success(), "{status}\n{}", bridge_log(&d));
    assert!(
        bridge_log(&d).contains("the dispatcher has every record"),
        "{}",
        bridge_log(&d)
    );
    wait_sink(&d.out("sink"), all.len(), Duration::from_secs(60));
    let out = read_sink(&d.out("sink"));
    assert_eq!(out.records.len(), all.len(), "no record lost or doubled");
    assert!(texts(&out) == all, "every record once, in auditd's order");
    assert!(d.stop().unwrap().success());
}

#[test]
fn a_killed_bridge_resends_its_buffer_after_restart() {
    let data = corpus();
    let all = lines(&data);
    let mut d = Dispatcher::new(MAIN);
    d.write_plugin("sink", &sink_plugin("sink", "", ""));
    // The dispatcher is down: everything stays in the bridge's buffer.
    let mut bridge = start_bridge(&d);
    let mut stdin = bridge.0.as_mut().unwrap().stdin.take().unwrap();
    stdin.write_all(&data).unwrap();
    drop(stdin);
    // Killed once it has read everything, before it could send anything:
    // the buffer is on disk.
    wait_until(
        Duration::from_secs(30),
        "the bridge to read its input",
        || bridge_log(&d).contains("standard input closed"),
    );
    assert!(bridge_log(&d).contains("dispatcher unavailable"));
    let mut child = bridge.0.take().unwrap();
    child.kill().unwrap();
    child.wait().unwrap();

    d.start(Stdio::null()).unwrap();
    let mut bridge = start_bridge(&d);
    drop(bridge.0.as_mut().unwrap().stdin.take());
    let status = bridge.0.take().unwrap().wait().unwrap();
    assert!(status.success(), "{status}\n{}", bridge_log(&d));
    let out = wait_sink(&d.out("sink"), all.len(), Duration::from_secs(60));
    assert_eq!(out.records.len(), all.len());
    assert!(texts(&out) == all, "every record once, in order");
    assert!(d.stop().unwrap().success());
}

#[test]
fn a_stopped_dispatcher_does_not_hold_the_bridge_and_nothing_is_lost() {
    let data = corpus();
    let all = lines(&data);
    let mut d = Dispatcher::new(MAIN);
    d.write_plugin("sink", &sink_plugin("sink", "", ""));
    d.start(Stdio::null()).unwrap();
    let mut bridge = start_bridge(&d);
    wait_until(Duration::from_secs(30), "the bridge to connect", || {
        bridge_log(&d).contains("connected to the dispatcher")
    });
    // A dispatcher that accepts nothing: the bridge's sends block.
    d.signal(nix::sys::signal::Signal::SIGSTOP);
    let mut stdin = bridge.0.as_mut().unwrap().stdin.take().unwrap();
    stdin.write_all(&data).unwrap();
    drop(stdin);
    let started = std::time::Instant::now();
    let status = bridge.0.take().unwrap().wait().unwrap();
    assert!(status.success(), "{status}\n{}", bridge_log(&d));
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "the bridge exits although the dispatcher is stopped"
    );
    let log = bridge_log(&d);
    assert!(log.contains("stay in"), "unsent records are kept: {log}");
    d.signal(nix::sys::signal::Signal::SIGCONT);
    // The next bridge sends what is left; the dispatcher drops what it
    // already had.
    let mut again = start_bridge(&d);
    drop(again.0.as_mut().unwrap().stdin.take());
    let status = again.0.take().unwrap().wait().unwrap();
    assert!(status.success(), "{status}\n{}", bridge_log(&d));
    let out = wait_sink(&d.out("sink"), all.len(), Duration::from_secs(60));
    assert_eq!(out.records.len(), all.len(), "no record lost or doubled");
    assert!(texts(&out) == all);
    assert!(d.stop().unwrap().success());
}
