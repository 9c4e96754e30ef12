//! The command line as an admin meets it: `--check-config` on a good and a
//! broken configuration directory (exit status, `path:line:` diagnostics, no
//! daemon started), `--help`, `--version`, and usage errors (exit 2 with the
//! usage text).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

fn audispd() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_audispd"));
    // Nothing from the caller's environment may change what is checked.
    c.env_remove("AUDISP_CONFIG_DIR")
        .env_remove("AUDISP_RUNTIME_DIR")
        .env_remove("AUDISP_STATE_DIR")
        .env_remove("NOTIFY_SOCKET");
    c
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Writes `rel` under `dir` with mode 0644 (what audispd accepts).
fn put(dir: &Path, rel: &str, body: &str) {
    let p = dir.join(rel);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(&p, body).unwrap();
    fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
}

/// Runs `audispd --check-config` on `dir/etc` with private runtime and state
/// directories.
fn check(dir: &Path) -> Output {
    audispd()
        .arg("--check-config")
        .arg("--config-dir")
        .arg(dir.join("etc"))
        .arg("--runtime-dir")
        .arg(dir.join("run"))
        .arg("--state-dir")
        .arg(dir.join("state"))
        .output()
        .unwrap()
}

fn good_tree(dir: &Path) {
    put(
        dir,
        "etc/audispd.toml",
        "[journal]\nsegment_size = \"1M\"\n\n[shutdown]\ntimeout = \"2s\"\n",
    );
    put(
        dir,
        "etc/plugins.d/legacy.toml",
        "exec = [\"/bin/cat\"]\nformat = \"string\"\ninclude = [\"USER_LOGIN\"]\n",
    );
    put(
        dir,
        "etc/plugins.d/remote.toml",
        "socket = \"/run/audisp/plugins/remote.sock\"\noverflow = \"drop\"\nqueue_size = 500\n",
    );
}

#[test]
fn check_config_on_a_good_directory_exits_0_and_names_the_plugins() {
    let tmp = tempfile::tempdir().unwrap();
    good_tree(tmp.path());
    let out = check(tmp.path());
    let stdout = text(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout:\n{stdout}\nstderr:\n{}",
        text(&out.stderr)
    );
    assert!(stdout.starts_with("ok: 2 plugins"), "{stdout}");
    assert!(
        stdout.contains("legacy") && stdout.contains("remote"),
        "{stdout}"
    );
    // A check never starts the daemon: no input socket, no journal.
    assert!(!tmp.path().join("run/input.sock").exists());
    assert!(!tmp.path().join("state/journal").exists());
}

#[test]
fn check_config_on_a_broken_plugin_file_exits_nonzero_with_path_and_line() {
    let tmp = tempfile::tempdir().unwrap();
    good_tree(tmp.path());
    // Line 3 is a TOML syntax error; line 2 of the other file a bad value.
    put(
        tmp.path(),
        "etc/plugins.d/broken.toml",
        "exec = [\"/bin/cat\"]\nformat = \"string\"\ninclude = [USER_LOGIN\n",
    );
    put(
        tmp.path(),
        "etc/plugins.d/wrong.toml",
        "socket = \"/run/audisp/plugins/w.sock\"\nqueue_size = \"lots\"\n",
    );
    let out = check(tmp.path());
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("plugins.d/broken.toml:3: ")),
        "no plugins.d/broken.toml:3: line in\n{stdout}"
    );
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("plugins.d/wrong.toml:2: ") && l.contains("queue_size")),
        "no plugins.d/wrong.toml:2: line in\n{stdout}"
    );
    // The good plugins are still named as the ones that would run.
    assert!(
        stdout.contains("legacy") && stdout.contains("remote"),
        "{stdout}"
    );
}

#[test]
fn check_config_on_a_broken_main_file_exits_nonzero_with_path_and_line() {
    let tmp = tempfile::tempdir().unwrap();
    good_tree(tmp.path());
    put(
        tmp.path(),
        "etc/audispd.toml",
        "[journal]\nsegment_size = \"1M\"\nsync = \"sometimes\"\n",
    );
    let out = check(tmp.path());
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("audispd.toml:3: ") && l.contains("sync")),
        "no audispd.toml:3: line in\n{stdout}"
    );
    assert!(stdout.contains("would not start"), "{stdout}");
}

#[test]
fn a_broken_main_file_stops_the_daemon_from_starting() {
    let tmp = tempfile::tempdir().unwrap();
    good_tree(tmp.path());
    put(tmp.path(), "etc/audispd.toml", "[journal\n");
    let out = audispd()
        .arg("--config-dir")
        .arg(tmp.path().join("etc"))
        .arg("--runtime-dir")
        .arg(tmp.path().join("run"))
        .arg("--state-dir")
        .arg(tmp.path().join("state"))
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("audispd.toml:1:"), "{stderr}");
    assert!(stderr.contains("not starting"), "{stderr}");
    assert!(!tmp.path().join("run/input.sock").exists());
}

#[test]
fn help_prints_usage_and_exits_0() {
    for flag in ["--help", "-h"] {
        let out = audispd().arg(flag).output().unwrap();
        let stdout = text(&out.stdout);
        assert_eq!(out.status.code(), Some(0), "{flag}");
        assert!(stdout.starts_with("Usage: audispd"), "{flag}: {stdout}");
        for opt in [
            "--config-dir",
            "--runtime-dir",
            "--state-dir",
            "--check-config",
            "--version",
        ] {
            assert!(stdout.contains(opt), "{flag}: usage lacks {opt}");
        }
        assert!(out.stderr.is_empty(), "{flag}: {}", text(&out.stderr));
    }
}

#[test]
fn version_prints_the_package_version_and_exits_0() {
    let out = audispd().arg("--version").output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        text(&out.stdout),
        format!("audispd {}\n", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn an_unknown_flag_exits_2_with_usage() {
    let out = audispd().arg("--frobnicate").output().unwrap();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--frobnicate"), "{stderr}");
    assert!(stderr.contains("Usage: audispd"), "{stderr}");
    assert!(out.stdout.is_empty());
}

#[test]
fn a_flag_missing_its_value_exits_2_with_usage() {
    let out = audispd().arg("--config-dir").output().unwrap();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--config-dir"), "{stderr}");
    assert!(stderr.contains("Usage: audispd"), "{stderr}");
}

#[test]
fn a_stray_argument_exits_2_with_usage() {
    let out = audispd().arg("extra").output().unwrap();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("Usage: audispd"), "{stderr}");
}
