//! One program per state (issue 10): a second audisp-bridge on the same
//! state directory started while the first ran. Every program that owns a
//! state directory or state file locks it: a second one started on the
//! same state refuses at once, naming the first one's pid, and once the
//! first is gone — kill -9 included — the next start gets the lock.

mod support;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::dispatcher::{Dispatcher, MAIN_NO_STATS};
use support::wait_until;

/// A program killed (-9) when dropped.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `cmd` (standard input a pipe kept open, for the programs that
/// read it) and waits until the lock file `lock` holds its pid.
fn hold(mut cmd: Command, lock: &Path) -> Running {
    let child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the program");
    let pid = child.id().to_string();
    let running = Running(child);
    wait_until(Duration::from_secs(20), "the lock taken", || {
        std::fs::read_to_string(lock).is_ok_and(|t| t.trim() == pid)
    });
    running
}

/// Checks that the program `make` builds, on the state `guarded` locked
/// through `lock`, runs only once at a time.
fn one_at_a_time(make: &dyn Fn() -> Command, guarded: &Path, lock: &Path) {
    let first = hold(make(), lock);
    let mut second = make()
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the program again");
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(st) = second.try_wait().unwrap() {
            break st;
        }
        if Instant::now() > deadline {
            let _ = second.kill();
            let _ = second.wait();
            panic!("a second program on {} did not refuse", guarded.display());
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    second
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(!status.success(), "{status}: {err}");
    let want = format!("{} is in use by pid {}", guarded.display(), first.0.id());
    assert!(err.contains(&want), "want {want:?} in:\n{err}");
    // kill -9 of the holder frees the state for the next start.
    drop(first);
    drop(hold(make(), lock));
}

fn dir_lock(dir: &Path) -> PathBuf {
    dir.join("lock")
}

fn file_lock(file: &Path) -> PathBuf {
    PathBuf::from(format!("{}.lock", file.display()))
}

#[test]
fn audispd_runs_once_per_state_directory() {
    let d = Dispatcher::new(MAIN_NO_STATS);
    let state = d.path().join("state");
    one_at_a_time(&|| d.command(), &state, &dir_lock(&state));
}

#[test]
fn audisp_bridge_runs_once_per_buffer() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("buffer");
    let make = || {
        let mut c = Command::new(env!("CARGO_BIN_EXE_audisp-bridge"));
        c.arg("--socket")
            .arg(tmp.path().join("input.sock"))
            .arg("--state-dir")
            .arg(&state);
        c
    };
    one_at_a_time(&make, &state, &dir_lock(&state));
}

#[test]
fn audisp_remote_runs_once_per_spool() {
    let tmp = tempfile::tempdir().unwrap();
    let spool = tmp.path().join("spool");
    let make = || {
        let mut c = Command::new(env!("CARGO_BIN_EXE_audisp-remote"));
        c.args(["--no-config", "--server", "127.0.0.1:9", "--spool-dir"])
            .arg(&spool)
            .arg("--listen")
            .arg(tmp.path().join("remote.sock"));
        c
    };
    one_at_a_time(&make, &spool, &dir_lock(&spool));
}

#[test]
fn audisp_receive_runs_once_per_store() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("store");
    let make = || {
        let mut c = Command::new(env!("CARGO_BIN_EXE_audisp-receive"));
        c.args(["--no-config", "--no-log", "--listen", "127.0.0.1:0"])
            .arg("--state-dir")
            .arg(&state);
        c
    };
    one_at_a_time(&make, &state, &dir_lock(&state));
}

#[test]
fn audisp_logfile_runs_once_per_position_file() {
    let tmp = tempfile::tempdir().unwrap();
    let position = tmp.path().join("position");
    let make = || {
        let mut c = Command::new(env!("CARGO_BIN_EXE_audisp-logfile"));
        c.arg("--file")
            .arg(tmp.path().join("log"))
            .arg("--state")
            .arg(&position)
            .arg("--listen")
            .arg(tmp.path().join("logfile.sock"));
        c
    };
    one_at_a_time(&make, &position, &file_lock(&position));
}

/// The SDK's checkpoint file (`--state` of SDK plugins such as
/// audisp-journal) is locked the same way.
#[test]
fn an_sdk_plugin_runs_once_per_checkpoint_file() {
    let tmp = tempfile::tempdir().unwrap();
    let checkpoint = tmp.path().join("checkpoint");
    let make = || {
        let mut c = Command::new(env!("CARGO_BIN_EXE_audisp-journal"));
        c.arg("--journal-socket")
            .arg(tmp.path().join("journal.sock"))
            .arg("--state")
            .arg(&checkpoint)
            .arg("--listen")
            .arg(tmp.path().join("plugin.sock"));
        c
    };
    one_at_a_time(&make, &checkpoint, &file_lock(&checkpoint));
}
