//! The SDK and a program's own signal handlers: `Plugin::run` stops cleanly
//! on SIGTERM and SIGINT (it returns `Ok`, the process is not killed), and a
//! SIGTERM handler the program installed before `run` still runs.
//!
//! The plugin program is this test binary, started again with
//! [`PLUGIN_LISTEN`] set: the test then runs [`plugin`] instead.

mod support;

use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
use nix::unistd::Pid;
use support::dispatcher::NotifyCapture;

/// Set in the restarted test binary: the socket path its plugin listens on.
const PLUGIN_LISTEN: &str = "AUDISP_TEST_SDK_SIGNALS_LISTEN";

/// This test's name, to restart the binary running it alone.
const TEST: &str = "sigterm_and_sigint_stop_the_plugin_and_keep_the_programs_handler";

/// Set by the program's own SIGTERM handler.
static OWN_HANDLER_RAN: AtomicBool = AtomicBool::new(false);

extern "C" fn own_handler(_: libc::c_int) {
    OWN_HANDLER_RAN.store(true, Ordering::SeqCst);
}

/// The plugin program: its own SIGTERM handler first, then a plugin
/// listening on `path`. Exits 0 when `run` returned `Ok` and the handler
/// ran, 1 when `Ok` without it, 2 when `run` failed.
fn plugin(path: &Path) -> ! {
    let act = SigAction::new(
        SigHandler::Handler(own_handler),
        SaFlags::empty(),
        SigSet::empty(),
    );
    // SAFETY: the handler only stores to an atomic.
    unsafe { sigaction(Signal::SIGTERM, &act) }.expect("sigaction");
    let result = audisp::sdk::Plugin::new("signals")
        .listen(path)
        .run(|_, _| Ok(()));
    std::process::exit(match result {
        Ok(()) if OWN_HANDLER_RAN.load(Ordering::SeqCst) => 0,
        Ok(()) => 1,
        Err(e) => {
            eprintln!("plugin: {e}");
            2
        }
    })
}

/// Starts the plugin program, waits until it serves (`READY=1`, sent once
/// its signal actions are in place), sends `sig` and returns how it ended.
fn stopped_by(sig: Signal) -> ExitStatus {
    let dir = tempfile::tempdir().unwrap();
    let notify_path = dir.path().join("notify");
    let mut notify = NotifyCapture::bind(&notify_path);
    let err = dir.path().join("plugin.err");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", TEST, "--nocapture", "--test-threads=1"])
        .env(PLUGIN_LISTEN, dir.path().join("plugin.sock"))
        .env("NOTIFY_SOCKET", &notify_path)
        .env_remove("WATCHDOG_USEC")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&err).unwrap())
        .spawn()
        .unwrap();
    let stderr = || std::fs::read_to_string(&err).unwrap_or_default();
    if let Err(e) = notify.wait_for("READY=1", Duration::from_secs(20)) {
        let _ = child.kill();
        panic!("{e}\n{}", stderr());
    }
    kill(Pid::from_raw(child.id() as i32), sig).unwrap();
    // The plugin looks at its stop flag at least every half second.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{sig} did not stop the plugin within 10 s\n{}", stderr());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn sigterm_and_sigint_stop_the_plugin_and_keep_the_programs_handler() {
    if let Some(path) = std::env::var_os(PLUGIN_LISTEN) {
        plugin(Path::new(&path));
    }
    // SIGTERM: the plugin stops cleanly, and the handler the program
    // installed before `run` ran too.
    let st = stopped_by(Signal::SIGTERM);
    assert_eq!(st.code(), Some(0), "after SIGTERM: {st}");
    // SIGINT, for which the program has no handler: the plugin stops
    // cleanly instead of being killed, and the SIGTERM handler stays idle.
    let st = stopped_by(Signal::SIGINT);
    assert_eq!(st.code(), Some(1), "after SIGINT: {st}");
}
