//! Actions a plugin may ask for: a native plugin (written here with the SDK,
//! listening on its socket) sends commands; audispd does exactly what the
//! plugin's plugins.d file configures for each name, and nothing else.
//!
//! * `run = "exec"`: the configured program runs with the configured
//!   arguments, then the plugin's, without audispd's environment, and the
//!   plugin is told Done;
//! * a name the file does not configure is Refused and runs nothing;
//! * `run = "log"` logs the request;
//! * `run = "suspend"` suspends that plugin (and only that one).

mod support;

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::Duration;

use audisp::protocol::CommandStatus;
use audisp::sdk::Plugin;
use support::dispatcher::{lines, sample, sink_plugin, texts, wait_sink, Dispatcher};
use support::wait_until;

const MAIN: &str = r#"
[journal]
segment_size = "1M"
memory = "1M"
[shutdown]
timeout = "20s"
[stats]
interval = "0"
"#;

/// A command's answer as the test sees it.
type Reply = (CommandStatus, String);

/// Runs a native plugin named `actor` listening on `sock`; on its first
/// batch it sends `commands` one after the other and reports the answers.
fn actor(
    sock: PathBuf,
    commands: Vec<(&'static str, Vec<&'static str>)>,
) -> mpsc::Receiver<Vec<Reply>> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut sent = false;
        // The thread outlives the test's interest in it: when audispd goes
        // away the SDK waits for a new connection until the test process
        // ends.
        let _ = Plugin::new("actor").listen(&sock).run(|_batch, ctx| {
            if !sent {
                sent = true;
                let mut replies = Vec::new();
                for (name, args) in &commands {
                    let r = ctx.command(name, args)?;
                    replies.push((r.status, r.message));
                }
                let _ = tx.send(replies);
            }
            Ok(())
        });
    });
    rx
}

/// The shipped action program, copied with mode 0755 (git and umasks do
/// not keep modes reliably, and audispd refuses group-writable programs).
fn action_program(dir: &Path) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/record-argv.sh");
    let dst = dir.join("record-argv");
    std::fs::copy(&src, &dst).unwrap();
    std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(0o755)).unwrap();
    dst
}

fn actor_plugin(program: &Path) -> String {
    format!(
        r#"socket = "{{dir}}/run/actor.sock"
format = "native"

[restart]
initial = "20ms"
max = "200ms"

[actions.block-address]
run = "exec"
program = "{}"
args = ["{{dir}}/out/argv", "--table", "audisp block"]

[actions.note]
run = "log"

[actions.pause]
run = "suspend"
"#,
        program.display()
    )
}

/// Blocks the action program appended to `path`.
fn blocks(path: &Path) -> Vec<Vec<String>> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut out = Vec::new();
    let mut cur = Vec::new();
    for l in text.lines() {
        if l == "end" {
            out.push(std::mem::take(&mut cur));
        } else {
            cur.push(l.to_string());
        }
    }
    out
}

#[test]
fn exec_runs_the_configured_program_unconfigured_is_refused_log_is_logged() {
    let mut d = Dispatcher::new(MAIN);
    let program = action_program(d.path());
    d.write_plugin("actor", &actor_plugin(&program));
    d.write_plugin("witness", &sink_plugin("witness", "", ""));
    let replies = actor(
        d.path().join("run/actor.sock"),
        vec![
            ("unblock-everything", vec!["192.0.2.1"]),
            ("block-address", vec!["192.0.2.1"]),
            ("note", vec!["spool 91% full"]),
        ],
    );
    d.start(Stdio::piped()).unwrap();
    let data = sample();
    let all = lines(&data);
    // Standard input stays open until the end: its end would stop audispd.
    let mut stdin = d.child.as_mut().unwrap().stdin.take().unwrap();
    stdin.write_all(&data).unwrap();

    let replies = replies
        .recv_timeout(Duration::from_secs(20))
        .unwrap_or_else(|_| panic!("the actor never got a batch\n{}", d.log_tail(40)));
    assert_eq!(replies.len(), 3);
    assert_eq!(
        replies[0].0,
        CommandStatus::Refused,
        "an action its file does not configure: {replies:?}"
    );
    assert_eq!(
        replies[1].0,
        CommandStatus::Done,
        "exec action: {replies:?}"
    );
    assert_eq!(replies[2].0, CommandStatus::Done, "log action: {replies:?}");

    // The program ran once, with the configured arguments and then the
    // plugin's, as separate argv entries (the space in "audisp block" did
    // not split), and without audispd's environment.
    let argv = d.out("argv");
    wait_until(Duration::from_secs(10), "the action program to run", || {
        !blocks(&argv).is_empty()
    });
    let ran = blocks(&argv);
    assert_eq!(
        ran,
        vec![vec![
            "argc=3".to_string(),
            "arg=--table".into(),
            "arg=audisp block".into(),
            "arg=192.0.2.1".into(),
            "AUDISP_LOG=unset".into(),
            "NOTIFY_SOCKET=unset".into(),
        ]],
        "exactly one run, of the configured action (the refused one ran nothing)"
    );

    let log = d.log();
    assert!(
        log.contains("unblock-everything") && log.contains("refused"),
        "the refusal is logged\n{}",
        d.log_tail(40)
    );
    assert!(
        log.contains("spool 91% full"),
        "run = \"log\" logs the request with its arguments\n{}",
        d.log_tail(40)
    );

    let actor = d.plugin_state("actor");
    assert_eq!(actor.get("commands"), 3, "{actor:?}");
    assert_eq!(actor.state, "connected", "{actor:?}");

    let witness = wait_sink(&d.out("witness"), all.len(), Duration::from_secs(20));
    assert!(texts(&witness) == all, "the other plugin got every record");
    drop(stdin);
    let status = d.stop().unwrap();
    assert!(status.success(), "{status}\n{}", d.log_tail(40));
    // Nothing ran after the fact either.
    assert_eq!(blocks(&argv).len(), 1);
}

#[test]
fn suspend_action_suspends_only_the_plugin_that_asked() {
    let mut d = Dispatcher::new(MAIN);
    let program = action_program(d.path());
    d.write_plugin("actor", &actor_plugin(&program));
    d.write_plugin("witness", &sink_plugin("witness", "", ""));
    let replies = actor(d.path().join("run/actor.sock"), vec![("pause", vec![])]);
    d.start(Stdio::piped()).unwrap();
    let data = sample();
    let all = lines(&data);
    let cut = data[..data.len() / 2]
        .iter()
        .rposition(|&b| b == b'\n')
        .unwrap()
        + 1;
    let (first, rest) = data.split_at(cut);
    let first_n = lines(first).len();
    let mut stdin = d.child.as_mut().unwrap().stdin.take().unwrap();
    stdin.write_all(first).unwrap();

    let replies = replies
        .recv_timeout(Duration::from_secs(20))
        .unwrap_or_else(|_| panic!("the actor never got a batch\n{}", d.log_tail(40)));
    assert_eq!(replies[0].0, CommandStatus::Done, "{replies:?}");
    wait_until(Duration::from_secs(10), "actor to be suspended", || {
        d.plugin_state("actor").state == "suspended"
    });
    wait_sink(&d.out("witness"), first_n, Duration::from_secs(20));

    // Records keep coming: the witness gets them, the actor stays
    // suspended and its share is counted as dropped. (Standard input stays
    // open: its end would stop audispd.)
    stdin.write_all(rest).unwrap();
    let witness = wait_sink(&d.out("witness"), all.len(), Duration::from_secs(20));
    assert!(texts(&witness) == all, "the other plugin got every record");
    let actor = d.plugin_state("actor");
    assert_eq!(actor.state, "suspended", "{actor:?}");
    assert!(actor.get("dropped") > 0, "{actor:?}");
    assert_eq!(
        actor.get("dropped_suspended"),
        actor.get("dropped"),
        "{actor:?}"
    );
    let witness = d.plugin_state("witness");
    assert_eq!(witness.state, "connected", "{witness:?}");
    assert_eq!(witness.get("dropped"), 0, "{witness:?}");
    assert!(
        d.log().contains("requested action pause: suspending it"),
        "{}",
        d.log_tail(40)
    );
    // A suspended plugin takes nothing, so there is nothing to wait for
    // when stopping: audispd stops at once rather than after its 20s
    // shutdown timeout, and the plugin is not resumed on the way out.
    let asked = std::time::Instant::now();
    d.signal(nix::sys::signal::Signal::SIGTERM);
    let status = d.wait(Duration::from_secs(10)).unwrap_or_else(|e| {
        panic!(
            "SIGTERM with a suspended plugin: {} \"plugin actor resumed\" lines so far; {e}",
            d.log().matches("plugin actor resumed").count()
        )
    });
    let took = asked.elapsed();
    assert!(status.success(), "{status}\n{}", d.log_tail(40));
    let log = d.log();
    let resumed = log.matches("plugin actor resumed").count();
    assert_eq!(
        resumed,
        0,
        "the suspended plugin was 'resumed' {resumed} times while stopping\n{}",
        d.log_tail(10)
    );
    assert!(
        took < Duration::from_secs(5),
        "stopping took {took:?} with only a suspended plugin behind"
    );
    // No exec action was asked for, so nothing ran.
    assert!(!d.out("argv").exists());
    drop(stdin);
}

/// Commands interleaved with a stream of records — asked from the handler
/// on every batch, and queued by another thread of the plugin
/// ([`Plugin::commands`]) — cost no record and repeat none: the records
/// that arrive while the plugin waits for an answer are set aside and
/// handled in their order.
#[test]
fn commands_amid_a_stream_lose_and_repeat_no_record() {
    let mut d = Dispatcher::new(MAIN);
    let program = action_program(d.path());
    d.write_plugin("actor", &actor_plugin(&program));
    let sock = d.path().join("run/actor.sock");
    let (got_tx, got_rx) = mpsc::channel::<Vec<u8>>();
    let (cmd_tx, cmd_rx) = mpsc::channel();
    let (answered_tx, answered_rx) = mpsc::channel::<()>();
    std::thread::spawn(move || {
        let _ = Plugin::new("actor")
            .listen(&sock)
            .commands(cmd_rx)
            .run(|batch, ctx| {
                for r in batch.records() {
                    let _ = got_tx.send(r.text.to_vec());
                }
                let r = ctx.command("note", &["batch"])?;
                if r.status == CommandStatus::Done {
                    let _ = answered_tx.send(());
                }
                Ok(())
            });
    });
    // Another thread of the plugin queues commands all along.
    let queued = std::thread::spawn(move || {
        for i in 0..200 {
            if cmd_tx
                .send(audisp::sdk::Command {
                    name: "note".into(),
                    args: vec![format!("queued {i}")],
                })
                .is_err()
            {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    });
    d.start(Stdio::piped()).unwrap();
    // Four distinct copies of the sample, written in pieces so that
    // records keep arriving while commands are answered.
    let data = support::dispatcher::sample_copies(4);
    let all = lines(&data);
    let mut stdin = d.child.as_mut().unwrap().stdin.take().unwrap();
    for piece in data.chunks(64 << 10) {
        stdin.write_all(piece).unwrap();
    }
    let mut got = Vec::new();
    while got.len() < all.len() {
        match got_rx.recv_timeout(Duration::from_secs(30)) {
            Ok(r) => got.push(r),
            Err(_) => panic!(
                "{} of {} records reached the plugin\n{}",
                got.len(),
                all.len(),
                d.log_tail(20)
            ),
        }
    }
    queued.join().unwrap();
    d.wait_log("queued 199", Duration::from_secs(20));
    // Nothing more comes: no record was repeated.
    assert!(got_rx.recv_timeout(Duration::from_millis(300)).is_err());
    let first = got.iter().zip(all.iter()).position(|(a, b)| a != b);
    assert_eq!(first, None, "records out of order or lost");
    assert_eq!(got.len(), all.len());
    assert!(answered_rx.try_iter().count() > 1, "commands were answered");
    drop(stdin);
    let _ = d.stop();
}
