//! `audispd --check-config` output, case by case.
//!
//! Each directory under `tests/config/` holds an `etc/` tree (audispd.toml,
//! plugins.d/...) and `expected.txt`, the exact check output. The tree is
//! copied to a temporary directory first, so its files belong to the user
//! running the test with mode 0644 whatever git did to them; the temporary
//! path shows as `$TMP` in the output. Every case directory runs (a new one
//! needs no new code). Run with `AUDISP_BLESS=1` to rewrite the expected
//! files after an intended change, then review the diff.
//!
//! Permission cases are built here rather than as fixtures, since git keeps
//! neither owners nor most mode bits. The shipped examples are loaded too,
//! so they cannot rot.

mod support;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use audisp::config::{self, Action, DeliveryMode, MainConfig, Paths, PluginFormat, Transport};

fn source_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Copies `from` into `to`: directories 0755, files 0644.
fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    fs::set_permissions(to, fs::Permissions::from_mode(0o755)).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let dest = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &dest);
        } else {
            fs::copy(entry.path(), &dest).unwrap();
            fs::set_permissions(&dest, fs::Permissions::from_mode(0o644)).unwrap();
        }
    }
}

/// A temporary audisp tree: `etc/` (config), `run/`, `state/`.
struct Tree {
    tmp: tempfile::TempDir,
    paths: Paths,
}

impl Tree {
    fn new() -> Tree {
        let tmp = tempfile::tempdir().unwrap();
        let paths = Paths {
            config_dir: tmp.path().join("etc"),
            runtime_dir: tmp.path().join("run"),
            state_dir: tmp.path().join("state"),
        };
        fs::create_dir_all(paths.plugins_dir()).unwrap();
        Tree { tmp, paths }
    }

    fn from_case(case: &str) -> Tree {
        let t = Tree::new();
        copy_tree(
            &source_dir().join("tests/config").join(case).join("etc"),
            &t.paths.config_dir,
        );
        t
    }

    /// Writes a config file (mode 0644) under the config dir.
    fn write(&self, rel: &str, text: &str) -> PathBuf {
        let p = self.paths.config_dir.join(rel);
        fs::write(&p, text).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
        p
    }

    fn chmod(&self, p: &Path, mode: u32) {
        fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
    }

    /// The check output with the temporary directory shown as `$TMP`.
    fn check(&self) -> (String, bool) {
        let (out, ok) = config::check(&self.paths);
        (out.replace(self.tmp.path().to_str().unwrap(), "$TMP"), ok)
    }
}

/// Checks one case directory: its `etc/` tree must give exactly
/// `expected.txt`, and the verdict must match that file's last line.
fn golden(case: &str) -> Result<(), String> {
    let tree = Tree::from_case(case);
    let (out, ok) = tree.check();
    let expected_file = source_dir()
        .join("tests/config")
        .join(case)
        .join("expected.txt");
    let expected = support::expected_output(&expected_file, out.as_bytes());
    let expected = String::from_utf8(expected).map_err(|e| format!("case {case}: {e}"))?;
    if out != expected {
        return Err(format!(
            "check output of case {case}:\n--- expected\n{expected}--- got\n{out}"
        ));
    }
    let verdict = expected.lines().last().unwrap_or("").starts_with("ok: ");
    if ok != verdict {
        return Err(format!(
            "verdict of case {case}: check said {ok}, expected.txt says {verdict}"
        ));
    }
    Ok(())
}

/// Every directory under `tests/config/` is a case: a new directory runs
/// without new code. All cases run; the failures are listed together.
#[test]
fn every_case_directory_checks_to_its_expected_output() {
    let mut cases: Vec<String> = fs::read_dir(source_dir().join("tests/config"))
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().unwrap().is_dir())
        .map(|e| e.file_name().into_string().unwrap())
        .collect();
    cases.sort();
    // The twelve cases there were when the walk replaced a function per
    // case; fewer means the walk lost some.
    assert!(cases.len() >= 12, "only {} cases: {cases:?}", cases.len());
    let failures: Vec<String> = cases.iter().filter_map(|c| golden(c).err()).collect();
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n\n")
    );
}

/// The all-good case resolves to the values its files spell out.
#[test]
fn all_good_values() {
    let tree = Tree::from_case("all_good");
    let loaded = config::load(&tree.paths);
    assert!(loaded.diagnostics.is_empty(), "{:?}", loaded.diagnostics);
    let c = loaded.config.unwrap();
    assert_eq!(c.main.journal.max_size, 2 << 30);
    assert_eq!(
        c.main.input_socket.path,
        tree.paths.runtime_dir.join("input.sock")
    );
    let names: Vec<&str> = c.plugins.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["a", "b", "c", "d"]);
    assert_eq!(
        c.plugins[0].transport,
        Transport::Socket(tree.paths.runtime_dir.join("plugins/a.sock"))
    );
    assert_eq!(c.plugins[0].include, [1112, 1300, 1400, 3000]);
    assert_eq!(
        c.plugins[1].transport,
        Transport::Exec(vec!["/bin/cat".into(), "-u".into()])
    );
    assert_eq!(c.plugins[1].format, PluginFormat::String);
    assert_eq!(c.plugins[2].mode, DeliveryMode::Events);
    assert_eq!(
        c.plugins[2].actions.get("disk-full"),
        Some(&Action::Exec {
            program: "/bin/true".into(),
            args: vec!["--flag".into()]
        })
    );
    assert!(!c.plugins[3].active);
    assert_eq!(c.plugins[0].file, tree.paths.plugins_dir().join("a.toml"));
}

/// No config at all is a valid, empty configuration.
#[test]
fn nothing_configured() {
    let tree = Tree::new();
    fs::remove_dir(tree.paths.plugins_dir()).unwrap();
    assert_eq!(tree.check(), ("ok: 0 plugins\n".to_string(), true));
    let c = config::load(&tree.paths).config.unwrap();
    assert_eq!(c.main, MainConfig::defaults(&tree.paths));
}

#[test]
fn group_writable_plugin_is_skipped() {
    let tree = Tree::new();
    tree.write("plugins.d/good.toml", "socket = \"good.sock\"\n");
    let bad = tree.write("plugins.d/bad.toml", "socket = \"bad.sock\"\n");
    tree.chmod(&bad, 0o664);
    let (out, ok) = tree.check();
    assert!(!ok);
    let mut lines = out.lines();
    let first = lines.next().unwrap();
    assert!(
        first.starts_with("plugins.d/bad.toml: is group-writable (mode 0664); audispd only reads config files owned by root"),
        "{out}"
    );
    assert!(
        first.ends_with("; fix: chmod 0644 $TMP/etc/plugins.d/bad.toml"),
        "{out}"
    );
    assert_eq!(
        lines.next(),
        Some("1 error: audispd would run 1 plugin (good), skipping bad")
    );
    assert_eq!(lines.next(), None);
    let loaded = config::load(&tree.paths);
    assert!(loaded.skipped.contains("bad"));
}

#[test]
fn world_writable_main_file_stops_audispd() {
    let tree = Tree::new();
    let main = tree.write("audispd.toml", "[journal]\nsync = \"never\"\n");
    tree.chmod(&main, 0o646);
    let (out, ok) = tree.check();
    assert!(!ok);
    assert!(
        out.starts_with("audispd.toml: is world-writable (mode 0646)"),
        "{out}"
    );
    assert!(out.ends_with("1 error: audispd would not start\n"), "{out}");
    assert!(config::load(&tree.paths).config.is_none());
}

#[test]
fn world_writable_plugin_dir_loads_no_plugins() {
    let tree = Tree::new();
    tree.write("plugins.d/a.toml", "socket = \"a.sock\"\n");
    tree.write("plugins.d/b.toml", "socket = \"b.sock\"\n");
    tree.chmod(&tree.paths.plugins_dir(), 0o777);
    let (out, ok) = tree.check();
    assert!(!ok);
    assert_eq!(
        out,
        "plugins.d: is world-writable (mode 0777), so anyone could add a plugin for audispd to run; no plugins were loaded; fix: chmod 0755 $TMP/etc/plugins.d\n\
         1 error: audispd would run 0 plugins, skipping a, b\n"
    );
}

#[test]
fn plugin_file_owned_by_someone_else() {
    if !nix::unistd::geteuid().is_root() {
        support::skip("only root can give a file to another user");
        return;
    }
    let tree = Tree::new();
    let p = tree.write("plugins.d/theirs.toml", "socket = \"theirs.sock\"\n");
    nix::unistd::chown(&p, Some(nix::unistd::Uid::from_raw(support::NOBODY)), None).unwrap();
    let (out, ok) = tree.check();
    assert!(!ok);
    let first = out.lines().next().unwrap();
    assert!(
        first.starts_with(&format!(
            "plugins.d/theirs.toml: is owned by uid {}",
            support::NOBODY
        )),
        "{out}"
    );
    assert!(
        first.ends_with("; audispd only reads config files owned by root that group and others cannot write; fix: chown root:root $TMP/etc/plugins.d/theirs.toml"),
        "{out}"
    );
}

#[test]
fn unsafe_programs_are_refused() {
    let tree = Tree::new();
    let prog = tree.tmp.path().join("prog");
    fs::write(&prog, "#!/bin/sh\nexit 0\n").unwrap();
    tree.chmod(&prog, 0o775);
    let not_exec = tree.tmp.path().join("not-exec");
    fs::write(&not_exec, "#!/bin/sh\nexit 0\n").unwrap();
    tree.chmod(&not_exec, 0o644);
    tree.write(
        "plugins.d/p.toml",
        &format!(
            "exec = [\"{}\"]\n[actions.x]\nrun = \"exec\"\nprogram = \"{}\"\n",
            prog.display(),
            not_exec.display()
        ),
    );
    let (out, ok) = tree.check();
    assert!(!ok);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert!(
        lines[0].starts_with(
            "plugins.d/p.toml:1: exec program $TMP/prog is group-writable (mode 0775)"
        ),
        "{out}"
    );
    assert!(lines[0].ends_with("fix: chmod 0755 $TMP/prog"), "{out}");
    assert!(
        lines[1].starts_with("plugins.d/p.toml:4: action \"x\" program $TMP/not-exec is not executable by its owner (mode 0644)"),
        "{out}"
    );
    assert_eq!(
        lines[2],
        "2 errors: audispd would run 0 plugins, skipping p"
    );

    tree.chmod(&prog, 0o755);
    tree.chmod(&not_exec, 0o700);
    assert_eq!(tree.check(), ("ok: 1 plugin (p)\n".to_string(), true));
}

#[test]
fn symlinks_are_followed() {
    let tree = Tree::new();
    let real = tree.tmp.path().join("real.toml");
    fs::write(&real, "socket = \"linked.sock\"\n").unwrap();
    tree.chmod(&real, 0o644);
    std::os::unix::fs::symlink(&real, tree.paths.plugins_dir().join("linked.toml")).unwrap();
    std::os::unix::fs::symlink(
        tree.tmp.path().join("gone.toml"),
        tree.paths.plugins_dir().join("dangling.toml"),
    )
    .unwrap();
    let (out, ok) = tree.check();
    assert!(!ok);
    assert_eq!(
        out,
        "plugins.d/dangling.toml: cannot be read: it does not exist (a symbolic link to a missing file?)\n\
         1 error: audispd would run 1 plugin (linked), skipping dangling\n"
    );
    // The target's permissions count, not the link's.
    tree.chmod(&real, 0o666);
    let (out, _) = tree.check();
    assert!(
        out.contains("plugins.d/linked.toml: is group- and world-writable (mode 0666)"),
        "{out}"
    );
}

/// Rewrites the programs an example names (which need not be installed
/// here) to `/bin/true`, keeping everything else.
fn with_real_programs(text: &str) -> String {
    let mut out = String::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("exec = [\"") {
            let after = rest.find('"').map_or("", |i| &rest[i + 1..]);
            out.push_str(&format!("exec = [\"/bin/true\"{after}"));
        } else if line.starts_with("program = ") {
            out.push_str("program = \"/bin/true\"");
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    out
}

fn install_examples(tree: &Tree) -> Vec<String> {
    let mut names = Vec::new();
    for entry in fs::read_dir(source_dir().join("plugins.d")).unwrap() {
        let path = entry.unwrap().path();
        let file = path.file_name().unwrap().to_str().unwrap();
        let Some(name) = file.strip_suffix(".toml.example") else {
            continue;
        };
        let text = fs::read_to_string(&path).unwrap();
        tree.write(
            &format!("plugins.d/{name}.toml"),
            &with_real_programs(&text),
        );
        names.push(name.to_string());
    }
    names.sort();
    names
}

#[test]
fn shipped_examples_load_cleanly() {
    let tree = Tree::new();
    tree.write(
        "audispd.toml",
        &fs::read_to_string(source_dir().join("packaging/audispd.toml")).unwrap(),
    );
    let names = install_examples(&tree);
    assert!(names.len() >= 4, "{names:?}");
    let (out, ok) = tree.check();
    assert_eq!(
        out,
        format!("ok: {} plugins ({})\n", names.len(), names.join(", "))
    );
    assert!(ok);

    let c = config::load(&tree.paths).config.unwrap();
    let get = |n: &str| c.plugins.iter().find(|p| p.name == n).unwrap();
    assert!(matches!(get("login-watch").transport, Transport::Socket(_)));
    assert!(!get("login-watch").include.is_empty());
    assert_eq!(get("avc-alert").mode, DeliveryMode::Events);
    assert!(get("avc-alert").include.contains(&1400));
    assert_eq!(get("syslog").format, PluginFormat::String);
    assert_eq!(
        get("syslog").transport,
        Transport::Exec(vec!["/bin/true".into(), "LOG_INFO".into()])
    );
    assert!(matches!(
        get("remote").actions.get("disk-full"),
        Some(Action::Exec { .. })
    ));
}

/// The stock syslog example really names audisp-syslog with LOG_INFO (the
/// rewrite above only replaces the path).
#[test]
fn syslog_example_runs_audisp_syslog() {
    let text = fs::read_to_string(source_dir().join("plugins.d/syslog.toml.example")).unwrap();
    assert!(text
        .lines()
        .any(|l| l == "exec = [\"/sbin/audisp-syslog\", \"LOG_INFO\"]"));
    assert!(text.lines().any(|l| l == "format = \"string\""));
}

/// The commented filter of the syslog example checks cleanly once
/// uncommented, and means what its comment says.
#[test]
fn syslog_example_filter_checks_uncommented() {
    let text = fs::read_to_string(source_dir().join("plugins.d/syslog.toml.example")).unwrap();
    let mut uncommented = 0;
    let text: String = text
        .lines()
        .map(|l| match l.strip_prefix("#filter") {
            Some(rest) => {
                uncommented += 1;
                format!("filter{rest}\n")
            }
            None => format!("{l}\n"),
        })
        .collect();
    assert_eq!(uncommented, 2, "#filter and #filter_action");
    let tree = Tree::new();
    tree.write("plugins.d/syslog.toml", &with_real_programs(&text));
    let (out, ok) = tree.check();
    assert_eq!(out, "ok: 1 plugin (syslog)\n");
    assert!(ok);
    let c = config::load(&tree.paths).config.unwrap();
    let rule = c.plugins[0].filter.clone().expect("a filter");
    assert_eq!(rule.action, audisp::config::FilterAction::Keep);
    let mut scratch = audisp::filter::Scratch::new();
    let failed = b"type=USER_AUTH msg=audit(1.000:1): pid=1 uid=0 auid=0 ses=1 msg='op=PAM:authentication acct=\"a\" exe=\"/usr/bin/su\" res=failed'";
    let fine = b"type=USER_AUTH msg=audit(1.000:2): pid=1 uid=0 auid=0 ses=1 msg='op=PAM:authentication acct=\"a\" exe=\"/usr/bin/su\" res=success'";
    assert!(rule.filter.matches(failed, &mut scratch));
    assert!(!rule.filter.matches(fine, &mut scratch));
}

/// Uncommenting every `#key = value` line of the shipped main config gives
/// exactly the defaults: the comments tell the truth.
#[test]
fn shipped_main_config_shows_the_defaults() {
    let tree = Tree::new();
    let shipped = fs::read_to_string(source_dir().join("packaging/audispd.toml")).unwrap();
    let mut uncommented = String::new();
    let mut keys = 0;
    for line in shipped.lines() {
        let is_setting = line
            .strip_prefix('#')
            .and_then(|l| l.split_once(" = "))
            .is_some_and(|(k, _)| {
                !k.is_empty() && k.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
            });
        if is_setting {
            uncommented.push_str(&line[1..]);
            keys += 1;
        } else {
            uncommented.push_str(line);
        }
        uncommented.push('\n');
    }
    assert!(keys >= 19, "only {keys} settings found");
    tree.write("audispd.toml", &uncommented);
    let paths = Paths {
        runtime_dir: "/run/audisp".into(),
        state_dir: "/var/lib/audisp".into(),
        ..tree.paths.clone()
    };
    let loaded = config::load(&paths);
    assert!(loaded.diagnostics.is_empty(), "{:?}", loaded.diagnostics);
    assert_eq!(loaded.config.unwrap().main, MainConfig::defaults(&paths));
}
