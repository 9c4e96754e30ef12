//! Helpers shared by integration tests (`mod support;`).

// Each test binary compiles this module on its own and uses only part of it.
#[allow(dead_code)]
pub mod auditd;
#[allow(dead_code)]
pub mod dbus;
#[allow(dead_code)]
pub mod dispatcher;
#[allow(dead_code)]
pub mod events;
#[allow(dead_code)]
pub mod metrics;
#[allow(dead_code)]
pub mod tmpfs;

use std::time::{Duration, Instant};

/// `nobody`: a uid with a passwd entry on every distribution that no login
/// session has. Tests run clients as it and record its login uid.
#[allow(dead_code)]
pub const NOBODY: u32 = 65534;

/// How often [`try_wait_until`] checks its condition.
const POLL_INTERVAL: Duration = Duration::from_millis(10);

/// Polls `cond` until it returns `Ok(true)`, returns an error, or `limit`
/// passes; for conditions nothing notifies about (a file another process
/// writes, kernel audit status, a process's exit).
#[allow(dead_code)]
pub fn try_wait_until(
    limit: Duration,
    what: &str,
    mut cond: impl FnMut() -> Result<bool, String>,
) -> Result<(), String> {
    let deadline = Instant::now() + limit;
    loop {
        if cond()? {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!("timed out after {limit:?} waiting for {what}"));
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

/// [`try_wait_until`] for a condition that cannot fail; a timeout fails the
/// test.
#[allow(dead_code)]
#[track_caller]
pub fn wait_until(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    if let Err(e) = try_wait_until(limit, what, || Ok(cond())) {
        panic!("{e}");
    }
}

/// A test that cannot run on this machine says why and returns early; under
/// `AUDISP_TEST_REQUIRE_ALL=1` (which `.ci/run` sets) it fails instead, so CI
/// can never go green without running every test.
///
/// Use it as `if let Some(why) = reason { support::skip(&why); return; }`.
#[allow(dead_code)]
pub fn skip(reason: &str) {
    if std::env::var_os("AUDISP_TEST_REQUIRE_ALL").is_some_and(|v| v == "1") {
        panic!("this test would be skipped, which AUDISP_TEST_REQUIRE_ALL=1 forbids: {reason}");
    }
    eprintln!("SKIP: {reason}");
}

/// Why a test that needs root (for `root_for`) and the programs `tools`
/// (absolute paths, each with the Debian package that installs it) cannot
/// run here; `None` when it can.
#[allow(dead_code)]
pub fn missing_root_or_tools(root_for: &str, tools: &[(&str, &str)]) -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some(format!("needs root ({root_for})"));
    }
    tools.iter().find_map(|(tool, package)| {
        (!std::path::Path::new(tool).exists())
            .then(|| format!("{tool} missing (apt-get install {package})"))
    })
}

/// What a test running a private journald needs, with the packages that
/// install it.
#[allow(dead_code)]
pub const JOURNALD_TOOLS: &[(&str, &str)] = &[
    ("/lib/systemd/systemd-journald", "systemd"),
    ("/usr/bin/journalctl", "systemd"),
    ("/usr/bin/unshare", "util-linux"),
];

/// The variable that rewrites golden files: with `AUDISP_BLESS=1`, a test
/// that compares output with an expected file first writes its output
/// there (after a deliberate change; review the diff before committing).
#[allow(dead_code)]
pub const BLESS: &str = "AUDISP_BLESS";

/// The expected output stored at `path`, which `AUDISP_BLESS=1` first
/// replaces with `got`.
#[allow(dead_code)]
pub fn expected_output(path: &std::path::Path, got: &[u8]) -> Vec<u8> {
    if std::env::var_os(BLESS).is_some_and(|v| v == "1") {
        std::fs::write(path, got).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }
    std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e} ({BLESS}=1 writes it)", path.display()))
}

/// A shipped option file with every commented setting (`#key = value` at
/// the start of a line) uncommented, except those whose key is in `keep`,
/// and how many were uncommented.
#[allow(dead_code)]
pub fn uncommented(text: &str, keep: &[&str]) -> (String, usize) {
    let mut out = String::new();
    let mut n = 0;
    for line in text.lines() {
        let setting = line.strip_prefix('#').filter(|l| {
            l.split_once(" = ")
                .is_some_and(|(k, _)| !k.is_empty() && !k.contains(' ') && !keep.contains(&k))
        });
        match setting {
            Some(l) => {
                out.push_str(l);
                n += 1;
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
    (out, n)
}
