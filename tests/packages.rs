//! What `packaging/build.sh deb rpm` made, read with the distributions'
//! own tools (`dpkg-deb`, `rpm -qlp`, `lintian`, `readelf`):
//!
//! * every program, unit, man page, example, configuration file, D-Bus
//!   file and the sysusers.d / tmpfiles.d / preset files are where the
//!   issue's layout puts them, derived from the source tree (a new program,
//!   unit or page must show up without editing anything);
//! * the .deb and the .rpm hold the same files, and the same conffiles;
//! * the programs are stripped, each with a `.gnu_debuglink`, and the
//!   `-dbgsym` / `-debuginfo` packages hold their debug info under their
//!   build ids;
//! * the maintainer scripts name every unit (no placeholder left);
//! * lintian finds no error in the .deb.
//!
//! The installed behaviour (apt install, units, man, remove, purge) is
//! checked on a booted systemd in tests/nspawn_e2e.rs.

mod pkg;
mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use pkg::Kind;

fn src() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Runs a tool; its standard output, or a panic with everything it said.
fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The package of `kind`, or None after saying why it cannot be tested.
fn package(kind: Kind) -> Option<PathBuf> {
    match pkg::find(kind) {
        Ok(p) => Some(p),
        Err(why) => {
            support::skip(&why);
            None
        }
    }
}

fn have(tool: &str, package: &str) -> bool {
    let ok = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        support::skip(&format!("{tool} missing (apt-get install {package})"));
    }
    ok
}

/// Regular files of a .deb (paths from /), and its symlinks.
fn deb_files(deb: &Path) -> BTreeSet<String> {
    run(Command::new("dpkg-deb").arg("--contents").arg(deb))
        .lines()
        .filter(|l| l.starts_with('-') || l.starts_with('l'))
        .filter_map(|l| l.split_whitespace().nth(5))
        .map(|p| p.trim_start_matches('.').to_string())
        .collect()
}

/// Files (not directories) of an .rpm.
fn rpm_files(rpm: &Path) -> BTreeSet<String> {
    let listing = run(Command::new("rpm")
        .args(["-qp", "--qf", "[%{FILEMODES:perms} %{FILENAMES}\\n]"])
        .arg(rpm));
    listing
        .lines()
        .map(|line| line.split_once(' ').expect("mode and path"))
        .filter(|(mode, _)| !mode.starts_with('d'))
        .map(|(_, path)| path.to_string())
        .collect()
}

/// Bytes in a file (0 if it cannot be read).
fn file_size(p: &Path) -> u64 {
    std::fs::metadata(p).map_or(0, |m| m.len())
}

/// Names of the files in a source directory.
fn names(dir: &str) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(src().join(dir))
        .unwrap_or_else(|e| panic!("{dir}: {e}"))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// Every path the package must hold, from the source tree and the layout
/// packaging/build.sh documents.
fn expected_files() -> BTreeSet<String> {
    let mut want = BTreeSet::new();
    for page in names("docs") {
        let Some(stem) = page.strip_suffix(".md") else {
            continue;
        };
        match stem.rsplit_once('.') {
            Some((name, section)) if section.len() == 1 => {
                want.insert(format!("/usr/share/man/man{section}/{name}.{section}.gz"));
                match section {
                    "1" => want.insert(format!("/usr/bin/{name}")),
                    "8" => want.insert(format!("/usr/sbin/{name}")),
                    _ => false,
                };
            }
            _ => {
                want.insert(format!("/usr/share/doc/audisp/{page}"));
            }
        }
    }
    want.insert("/usr/share/doc/audisp/README.md".into());
    for unit in names("units") {
        want.insert(format!("/usr/lib/systemd/system/{unit}"));
    }
    for f in [
        "/usr/lib/sysusers.d/audisp.conf",
        "/usr/lib/tmpfiles.d/audisp.conf",
        "/usr/lib/systemd/system-preset/80-audisp.preset",
    ] {
        want.insert(f.into());
    }
    for f in names("dbus") {
        if f.ends_with(".conf") {
            want.insert(format!("/usr/share/dbus-1/system.d/{f}"));
        } else if f.ends_with(".xml") {
            want.insert(format!("/usr/share/dbus-1/interfaces/{f}"));
        }
    }
    for f in names("packaging") {
        if f.ends_with(".toml") {
            want.insert(format!("/etc/audisp/{f}"));
        } else if f.ends_with(".conf") {
            want.insert(format!("/etc/audit/plugins.d/{f}"));
        }
    }
    for f in names("plugins.d") {
        assert!(
            f.ends_with(".example"),
            "plugins.d/{f}: examples end in .example"
        );
        want.insert(format!("/etc/audisp/plugins.d/{f}"));
    }
    want
}

/// Files of the deb that only a Debian package has.
fn debian_only(path: &str) -> bool {
    [
        "/usr/share/doc/audisp/copyright",
        "/usr/share/doc/audisp/changelog",
    ]
    .iter()
    .any(|p| path.starts_with(p))
}

#[test]
fn deb_and_rpm_hold_every_file_where_it_belongs() {
    if !have("rpm", "rpm") {
        return;
    }
    let (Some(deb), Some(rpm)) = (package(Kind::Deb), package(Kind::Rpm)) else {
        return;
    };
    let want = expected_files();
    let in_deb = deb_files(&deb);
    let in_rpm = rpm_files(&rpm);
    let missing: Vec<_> = want.difference(&in_deb).collect();
    assert!(
        missing.is_empty(),
        "missing from {}: {missing:?}",
        deb.display()
    );
    let extra: Vec<_> = in_deb
        .difference(&want)
        .filter(|p| !debian_only(p))
        .collect();
    assert!(
        extra.is_empty(),
        "unexpected in {}: {extra:?}",
        deb.display()
    );
    let deb_common: BTreeSet<String> = in_deb.iter().filter(|p| !debian_only(p)).cloned().collect();
    assert_eq!(in_rpm, deb_common, "the rpm holds what the deb holds");

    // Configuration: every file under /etc, and only those, is a conffile.
    let etc: BTreeSet<String> = want
        .iter()
        .filter(|p| p.starts_with("/etc/"))
        .cloned()
        .collect();
    let deb_conf: BTreeSet<String> = run(Command::new("dpkg-deb")
        .arg("--info")
        .arg(&deb)
        .arg("conffiles"))
    .lines()
    .map(|l| l.trim().to_string())
    .collect();
    assert_eq!(deb_conf, etc, "deb conffiles");
    let rpm_conf: BTreeSet<String> = run(Command::new("rpm").arg("-qcp").arg(&rpm))
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(rpm_conf, etc, "rpm config files");

    // Dependencies: the shared libraries', systemd (sysusers, tmpfiles), and
    // zstd recommended for reading the log files.
    let control = run(Command::new("dpkg-deb").arg("--field").arg(&deb));
    let field = |name: &str| {
        control
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: ")))
            .unwrap_or("")
            .to_string()
    };
    assert!(field("Depends").contains("libc6"), "{control}");
    assert!(field("Depends").contains("systemd"), "{control}");
    assert!(field("Recommends").contains("zstd"), "{control}");
    let requires = run(Command::new("rpm").args(["-qp", "--requires"]).arg(&rpm));
    assert!(
        requires.lines().any(|l| l.starts_with("systemd")),
        "{requires}"
    );
    let recommends = run(Command::new("rpm").args(["-qp", "--recommends"]).arg(&rpm));
    assert!(
        recommends.lines().any(|l| l.starts_with("zstd")),
        "{recommends}"
    );

    eprintln!(
        "{}: {} bytes, {} files; {}: {} bytes",
        deb.display(),
        file_size(&deb),
        in_deb.len(),
        rpm.display(),
        file_size(&rpm)
    );
}

#[test]
fn maintainer_scripts_name_every_unit() {
    if !have("rpm", "rpm") {
        return;
    }
    let (Some(deb), Some(rpm)) = (package(Kind::Deb), package(Kind::Rpm)) else {
        return;
    };
    let units = names("units");
    let script = |name: &str| run(Command::new("dpkg-deb").arg("--info").arg(&deb).arg(name));
    let postinst = script("postinst");
    let prerm = script("prerm");
    let postrm = script("postrm");
    let rpm_scripts = run(Command::new("rpm").args(["-qp", "--scripts"]).arg(&rpm));
    for (what, text) in [
        ("postinst", &postinst),
        ("prerm", &prerm),
        ("postrm", &postrm),
        ("rpm scriptlets", &rpm_scripts),
    ] {
        assert!(
            !text.contains('@'),
            "{what} has a placeholder left:\n{text}"
        );
        for unit in &units {
            assert!(
                text.contains(unit.as_str()),
                "{what} does not name {unit}:\n{text}"
            );
        }
    }
    for step in [
        "systemd-sysusers audisp.conf",
        "systemd-tmpfiles --create audisp.conf",
        "systemctl daemon-reload",
        "preset",
    ] {
        assert!(
            postinst.contains(step),
            "postinst lacks {step}:\n{postinst}"
        );
        assert!(
            rpm_scripts.contains(step),
            "rpm %post lacks {step}:\n{rpm_scripts}"
        );
    }
    // The group exists before the D-Bus policy naming it is unpacked.
    let preinst = script("preinst");
    for text in [&preinst, &rpm_scripts] {
        assert!(
            text.contains("systemd-sysusers --replace=/usr/lib/sysusers.d/audisp.conf -")
                && text.contains("\ng audisp -\n"),
            "{text}"
        );
    }
    assert!(prerm.contains("systemctl stop"), "{prerm}");
    assert!(
        postrm.contains("purge") && postrm.contains("/var/lib/audisp"),
        "{postrm}"
    );
    assert!(rpm_scripts.contains("reload dbus.service"), "{rpm_scripts}");
}

/// The section names and their flags of an ELF file.
fn sections(file: &Path) -> String {
    run(Command::new("readelf").args(["-S", "-W"]).arg(file))
}

fn build_id(file: &Path) -> String {
    run(Command::new("readelf").arg("-n").arg(file))
        .lines()
        .find_map(|l| l.trim().strip_prefix("Build ID: "))
        .unwrap_or_else(|| panic!("{} has no build id", file.display()))
        .to_string()
}

#[test]
fn programs_are_stripped_and_their_debug_info_is_packaged() {
    if !have("rpm", "rpm") || !have("readelf", "binutils") {
        return;
    }
    let (Some(deb), Some(dbgsym), Some(debuginfo)) = (
        package(Kind::Deb),
        package(Kind::DebDebug),
        package(Kind::RpmDebug),
    ) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("deb");
    let dbg = tmp.path().join("dbgsym");
    run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root));
    run(Command::new("dpkg-deb").arg("-x").arg(&dbgsym).arg(&dbg));
    let debug_only = |files: BTreeSet<String>| -> BTreeSet<String> {
        files
            .into_iter()
            .filter(|f| f.starts_with("/usr/lib/debug/"))
            .collect()
    };
    let dbgsym_files = debug_only(deb_files(&dbgsym));
    let debuginfo_files = debug_only(rpm_files(&debuginfo));
    assert_eq!(
        dbgsym_files, debuginfo_files,
        "both debug packages hold the same files"
    );
    let built = Path::new(env!("CARGO_BIN_EXE_audispd"))
        .parent()
        .unwrap()
        .to_path_buf();
    let mut programs = 0;
    let mut total = (0, 0);
    for dir in ["usr/sbin", "usr/bin"] {
        for entry in std::fs::read_dir(root.join(dir)).unwrap() {
            let program = entry.unwrap().path();
            let name = program.file_name().unwrap().to_string_lossy().into_owned();
            let s = sections(&program);
            assert!(!s.contains(".debug_info"), "{name} is not stripped:\n{s}");
            assert!(
                s.contains(".gnu_debuglink"),
                "{name} has no debug link:\n{s}"
            );
            let id = build_id(&program);
            let debug = format!("/usr/lib/debug/.build-id/{}/{}.debug", &id[..2], &id[2..]);
            assert!(
                dbgsym_files.contains(&debug),
                "{name}: no {debug} in {}",
                dbgsym.display()
            );
            let d = sections(&dbg.join(debug.trim_start_matches('/')));
            assert!(
                d.contains(".debug_info"),
                "{debug} holds no debug info:\n{d}"
            );
            let stripped = std::fs::metadata(&program).unwrap().len();
            let unstripped = file_size(&built.join(&name));
            eprintln!("{name}: {stripped} bytes stripped ({unstripped} bytes as built)");
            total.0 += stripped;
            total.1 += unstripped;
            programs += 1;
        }
    }
    assert!(programs >= 7, "{programs} programs");
    eprintln!(
        "{programs} programs: {} bytes stripped, {} bytes as built; {}: {} bytes, {}: {} bytes",
        total.0,
        total.1,
        dbgsym.display(),
        file_size(&dbgsym),
        debuginfo.display(),
        file_size(&debuginfo)
    );
}

#[test]
fn lintian_finds_no_error_in_the_deb() {
    if !have("lintian", "lintian") {
        return;
    }
    let Some(deb) = package(Kind::Deb) else {
        return;
    };
    let out = Command::new("lintian")
        .args(["--fail-on", "error", "--tag-display-limit", "0"])
        .arg(&deb)
        .output()
        .expect("lintian");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("lintian {}:\n{text}", deb.display());
    assert!(out.status.success(), "lintian: {}\n{text}", out.status);
    assert!(!text.lines().any(|l| l.starts_with("E: ")), "{text}");
}
