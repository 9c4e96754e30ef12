//! Every unit file in `units/` passes `systemd-analyze verify` without a
//! single line of output (unknown keys and bad values are only warnings
//! there, so any output fails), and every service scores an exposure of at
//! most 2.0 in `systemd-analyze security --offline=true`. Units are checked
//! as a set (a socket needs its service), with `ExecStart=` paths of our own
//! programs pointed at the freshly built binaries, since verify checks that
//! they exist.
//!
//! Names that point at units or pages exist: every unit that the README,
//! the docs, the units, the shipped examples and configuration mention (by
//! its full name, or as `systemctl VERB NAME` / `journalctl -u NAME`) is one
//! we ship or one this host's systemd has, and every man page they name
//! (`audispd(8)`, `Documentation=man:...`) has its source in `docs/` (or
//! is a stock page installed here, like audispd-plugins' audisp-remote.conf(5)).

mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Highest exposure a shipped service may have.
const MAX_EXPOSURE: f64 = 2.0;

fn units_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("units")
}

/// Where cargo put our binaries.
fn bin_dir() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_audispd"))
        .parent()
        .expect("binary directory")
        .to_path_buf()
}

fn have_analyze() -> bool {
    let ok = Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_ok();
    if !ok {
        support::skip("systemd-analyze not installed (apt-get install systemd)");
    }
    ok
}

/// Every unit file shipped, sorted.
fn unit_files() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(units_dir())
        .expect("units/")
        .map(|e| e.expect("units/ entry").path())
        .filter(|p| {
            matches!(
                p.extension().and_then(|e| e.to_str()),
                Some("service" | "socket")
            )
        })
        .collect();
    v.sort();
    v
}

/// Copies the units into `dir`, pointing `Exec*=` paths of programs this
/// crate builds at the built binaries.
fn staged(dir: &Path) -> Vec<PathBuf> {
    let bins = bin_dir();
    unit_files()
        .iter()
        .map(|src| {
            let text = std::fs::read_to_string(src).expect("read unit");
            let mut out = String::new();
            for line in text.lines() {
                let rewritten = line.split_once('=').and_then(|(key, value)| {
                    if !key.starts_with("Exec") {
                        return None;
                    }
                    let prog = value.trim_start_matches(['-', '@', ':', '+', '!']);
                    let prog = prog.split_whitespace().next()?;
                    let name = Path::new(prog).file_name()?;
                    let built = bins.join(name);
                    built
                        .exists()
                        .then(|| line.replacen(prog, &built.display().to_string(), 1))
                });
                out.push_str(rewritten.as_deref().unwrap_or(line));
                out.push('\n');
            }
            let dst = dir.join(src.file_name().expect("file name"));
            std::fs::write(&dst, out).expect("stage unit");
            dst
        })
        .collect()
}

#[test]
fn the_dispatcher_units_are_shipped() {
    let names: Vec<String> = unit_files()
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    for want in ["audisp.socket", "audisp.service"] {
        assert!(
            names.iter().any(|n| n == want),
            "units/{want} missing: {names:?}"
        );
    }
    // Every socket unit has its service.
    for n in names.iter().filter(|n| n.ends_with(".socket")) {
        let text = std::fs::read_to_string(units_dir().join(n)).unwrap();
        let service = text
            .lines()
            .find_map(|l| l.strip_prefix("Service="))
            .map(str::to_string)
            .unwrap_or_else(|| n.replace(".socket", ".service"));
        assert!(
            names.contains(&service),
            "{n} starts {service}, which is not shipped"
        );
    }
}

#[test]
fn systemd_analyze_verify_prints_nothing() {
    if !have_analyze() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let units = staged(dir.path());
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .args(&units)
        .output()
        .expect("systemd-analyze verify");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && text.trim().is_empty(),
        "systemd-analyze verify {units:?}: {}\n{text}",
        out.status
    );
}

#[test]
fn every_service_is_hardened() {
    if !have_analyze() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut report = Vec::new();
    for unit in staged(dir.path())
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "service"))
    {
        let out = Command::new("systemd-analyze")
            .args(["security", "--offline=true", "--no-pager"])
            .arg(&unit)
            .output()
            .expect("systemd-analyze security");
        let text = String::from_utf8_lossy(&out.stdout);
        let name = unit.file_name().unwrap().to_string_lossy().into_owned();
        let score: f64 = text
            .lines()
            .find_map(|l| {
                let rest = l.split("Overall exposure level for ").nth(1)?;
                rest.split(": ")
                    .nth(1)?
                    .split_whitespace()
                    .next()?
                    .parse()
                    .ok()
            })
            .unwrap_or_else(|| {
                panic!(
                    "no exposure level for {name}:\n{text}{}",
                    String::from_utf8_lossy(&out.stderr)
                )
            });
        eprintln!("{name}: exposure {score}");
        report.push((name, score, text.into_owned()));
    }
    assert!(!report.is_empty(), "no services in units/");
    for (name, score, text) in &report {
        assert!(
            *score <= MAX_EXPOSURE,
            "{name}: exposure {score} > {MAX_EXPOSURE}\n{text}"
        );
    }
}

/// Unit types a name may end in.
const UNIT_SUFFIXES: &[&str] = &[
    ".service", ".socket", ".target", ".timer", ".path", ".mount", ".slice",
];

/// `systemctl` verbs whose arguments are unit names.
const UNIT_VERBS: &[&str] = &[
    "start",
    "stop",
    "reload",
    "restart",
    "try-restart",
    "reload-or-restart",
    "enable",
    "disable",
    "kill",
    "status",
    "edit",
    "show",
    "cat",
    "is-active",
    "is-enabled",
    "mask",
    "unmask",
    "preset",
];

/// Where a host's systemd keeps unit files.
const SYSTEM_UNIT_DIRS: &[&str] = &[
    "/etc/systemd/system",
    "/run/systemd/system",
    "/usr/lib/systemd/system",
    "/lib/systemd/system",
];

/// Every shipped text that may name a unit or a man page, with its path
/// relative to the source tree: the README, docs, units, examples (plugins
/// and plugins.d), packaging and the D-Bus policy.
fn shipped_texts() -> Vec<(String, String)> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = vec![PathBuf::from("README.md")];
    for dir in [
        "docs",
        "units",
        "plugins.d",
        "examples",
        "packaging",
        "packaging/debian",
        "packaging/rpm",
        "dbus",
    ] {
        for entry in std::fs::read_dir(src.join(dir)).expect(dir) {
            let path = entry.expect("entry").path();
            if path.is_file() {
                files.push(path.strip_prefix(src).expect("in the tree").to_path_buf());
            }
        }
    }
    files.sort();
    files
        .into_iter()
        .map(|rel| {
            let text = std::fs::read_to_string(src.join(&rel)).expect("read shipped text");
            (rel.display().to_string(), text)
        })
        .collect()
}

/// The text without comment markers, so sentences and code spans that go
/// on over several comment lines read as in a document.
fn uncommented(text: &str) -> Vec<String> {
    text.lines()
        .map(|l| {
            let t = l.trim_start();
            let t = ["//!", "///", "//", "#"]
                .iter()
                .find_map(|m| t.strip_prefix(m))
                .unwrap_or(t);
            t.trim().to_string()
        })
        .collect()
}

/// Command lines in a text: the lines of fenced code blocks (without a
/// trailing `# comment`) and every `code span`, joined across line breaks.
fn commands(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut prose = Vec::new();
    let mut fenced = false;
    for line in uncommented(text) {
        if line.starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced {
            out.push(line.split(" #").next().unwrap_or("").to_string());
        } else {
            prose.push(line);
        }
    }
    let joined = prose.join(" ");
    out.extend(joined.split('`').skip(1).step_by(2).map(str::to_string));
    out
}

/// A word as a unit name: trailing punctuation gone, `.service` added when
/// it has no unit suffix (as systemctl does).
fn as_unit(word: &str) -> Option<String> {
    let w = word.trim_end_matches(['.', ',', ';', ':', ')']);
    let plausible = w
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && w.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "@_.-".contains(c));
    if !plausible {
        return None;
    }
    if UNIT_SUFFIXES.iter().any(|s| w.ends_with(s)) {
        Some(w.to_string())
    } else {
        Some(format!("{w}.service"))
    }
}

/// The units a command line names: `systemctl [OPTIONS] VERB UNIT...` and
/// `journalctl ... -u UNIT`.
fn units_in_command(cmd: &str) -> Vec<String> {
    let words: Vec<&str> = cmd.split_whitespace().collect();
    let mut out = Vec::new();
    for (i, w) in words.iter().enumerate() {
        if *w == "systemctl" {
            // Options may come before or after the verb; some take a value.
            let mut rest = words[i + 1..].iter();
            let mut args = Vec::new();
            while let Some(word) = rest.next() {
                if ["-s", "--signal", "-p", "--property", "-t", "--type"].contains(word) {
                    rest.next();
                } else if !word.starts_with('-') {
                    args.push(*word);
                }
            }
            if let Some((verb, names)) = args.split_first() {
                if UNIT_VERBS.contains(verb) {
                    out.extend(names.iter().map_while(|w| as_unit(w)));
                }
            }
        }
        if *w == "journalctl" {
            let mut rest = words[i + 1..].iter();
            while let Some(opt) = rest.next() {
                if *opt == "-u" || *opt == "--unit" {
                    out.extend(rest.next().and_then(|u| as_unit(u)));
                } else if let Some(u) = opt.strip_prefix("--unit=") {
                    out.extend(as_unit(u));
                }
            }
        }
    }
    out
}

/// The text without TOML table names (`[input.socket]` is no unit).
fn without_tables(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(open) = rest.find('[') {
        out.push_str(&rest[..open]);
        let after = &rest[open..];
        match after.find(']') {
            Some(close) if !after[..close].contains(char::is_whitespace) => {
                rest = &after[close + 1..];
            }
            _ => {
                out.push('[');
                rest = &after[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// Words of a text that are unit names by their suffix.
fn units_by_suffix(text: &str) -> Vec<String> {
    without_tables(&uncommented(text).join(" "))
        .split(|c: char| !(c.is_ascii_alphanumeric() || "@_.-".contains(c)))
        .map(|w| w.trim_end_matches('.'))
        .filter(|w| {
            UNIT_SUFFIXES
                .iter()
                .any(|s| w.ends_with(s) && w.len() > s.len())
        })
        .filter_map(as_unit)
        .collect()
}

/// Whether a unit exists: shipped in `units/`, or known to this host's
/// systemd (a template instance counts as its template).
fn unit_exists(unit: &str, shipped: &[String]) -> bool {
    let template = match unit.split_once('@') {
        Some((prefix, rest)) => {
            let suffix = &rest[rest.rfind('.').unwrap_or(rest.len())..];
            format!("{prefix}@{suffix}")
        }
        None => unit.to_string(),
    };
    shipped.iter().any(|s| *s == unit || *s == template)
        || SYSTEM_UNIT_DIRS
            .iter()
            .any(|d| Path::new(d).join(unit).exists() || Path::new(d).join(&template).exists())
}

#[test]
fn every_unit_named_in_shipped_text_exists() {
    let shipped: Vec<String> = unit_files()
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    let host_has_systemd = Path::new("/usr/lib/systemd/system").is_dir();
    let mut seen = BTreeSet::new();
    let mut missing = Vec::new();
    for (file, text) in shipped_texts() {
        let named = units_by_suffix(&text).into_iter().chain(
            commands(&text)
                .into_iter()
                .flat_map(|c| units_in_command(&c)),
        );
        for unit in named {
            seen.insert(unit.clone());
            let ours = unit.starts_with("audisp");
            if (ours || host_has_systemd) && !unit_exists(&unit, &shipped) {
                missing.push(format!("{file}: {unit}"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "units named but not shipped here or on this host:\n{}",
        missing.join("\n")
    );
    // The scan sees the names the README's own instructions use.
    for unit in ["audisp.service", "audisp.socket", "audisp-remote.socket"] {
        assert!(seen.contains(unit), "{unit} not found among {seen:?}");
    }
}

#[test]
fn unit_names_are_read_from_commands_and_text() {
    assert_eq!(
        units_in_command("systemctl kill -s USR1 audispd"),
        ["audispd.service"]
    );
    assert_eq!(
        units_in_command("sudo systemctl enable --now audisp.socket audisp-logfile.socket"),
        ["audisp.socket", "audisp-logfile.socket"]
    );
    assert_eq!(
        units_in_command("journalctl -u audisp -o json"),
        ["audisp.service"]
    );
    assert_eq!(
        units_in_command("journalctl --unit=audisp-journal"),
        ["audisp-journal.service"]
    );
    assert!(units_in_command("systemctl daemon-reload").is_empty());
    assert_eq!(
        commands("# run `systemctl reload\n# audispd` to apply\n"),
        ["systemctl reload audispd"]
    );
    assert_eq!(
        units_by_suffix(
            "After=audisp-receive.socket audispd.service\n# see NAME.socket, [input.socket] and units/x.socket."
        ),
        ["audisp-receive.socket", "audispd.service", "x.socket"]
    );
}

#[test]
fn every_man_page_named_has_a_source() {
    let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs");
    let mut missing = Vec::new();
    for (file, text) in shipped_texts() {
        let mut rest = text.as_str();
        while let Some(open) = rest.find('(') {
            let name: String = rest[..open]
                .chars()
                .rev()
                .take_while(|c| c.is_ascii_alphanumeric() || "._-".contains(*c))
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            let after = &rest[open + 1..];
            let section = after
                .get(..2)
                .and_then(|s| s.strip_suffix(')'))
                .filter(|s| matches!(s.as_bytes(), [b'1'..=b'8']));
            if let Some(section) = section {
                let ours = docs.join(format!("{name}.{section}.md")).exists();
                // A stock page (audisp-remote.conf(5) of audispd-plugins).
                let here =
                    Path::new(&format!("/usr/share/man/man{section}/{name}.{section}.gz")).exists();
                if name.starts_with("audisp") && !ours && !here {
                    missing.push(format!("{file}: {name}({section})"));
                }
            }
            rest = after;
        }
    }
    assert!(
        missing.is_empty(),
        "man pages named but without docs/NAME.N.md:\n{}",
        missing.join("\n")
    );
}
