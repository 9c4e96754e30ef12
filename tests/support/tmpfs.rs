//! audispd with its state directory on a small tmpfs, to fill its disk: the
//! tmpfs is mounted in a mount namespace of audispd's own, so it goes away
//! with the process whatever becomes of the test, and nobody else sees it.

use std::process::Command;

use super::dispatcher::Dispatcher;

/// Why audispd cannot be run on a tmpfs here (None when it can).
pub fn missing() -> Option<String> {
    super::missing_root_or_tools(
        "mounting a tmpfs in a mount namespace of its own",
        &[("/usr/bin/unshare", "util-linux"), ("/bin/mount", "mount")],
    )
}

/// The command that starts audispd on `d` (as [`Dispatcher::command`]) with
/// its state directory on a tmpfs of `size` (`"8m"`).
pub fn command(d: &Dispatcher, size: &str) -> Command {
    let mut c = Command::new("/usr/bin/unshare");
    c.args(["--mount", "--propagation", "private", "--", "/bin/sh", "-c"])
        .arg(r#"mount -t tmpfs -o "size=$1,mode=0700" audisp-test "$2" && shift 2 && exec "$@""#)
        .args(["sh", size])
        .arg(d.path().join("state"))
        .arg(env!("CARGO_BIN_EXE_audispd"))
        .args(d.args())
        .env("NOTIFY_SOCKET", d.notify.path())
        .env("AUDISP_LOG", "info");
    c
}
