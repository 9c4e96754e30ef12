//! Every unit file in `units/` passes `systemd-analyze verify` without a
//! single line of output (unknown keys and bad values are only warnings
//! there, so any output fails), and every service scores an exposure of at
//! most 2.0 in `systemd-analyze security --offline=true`. Units are checked
//! as a set (a socket needs its service), with `ExecStart=` paths of our own
//! programs pointed at the freshly built binaries, since verify checks that
//! they exist.

mod support;

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
