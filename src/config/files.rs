//! The files behind the configuration: which names in plugins.d are plugin
//! files, and whether a config file or a program audispd would run is safe
//! to trust.
//!
//! audispd runs as root and runs the programs its config names, so, like
//! auditd with its own plugins.d, it only trusts files that nobody but root
//! could have written: owned by root (or by the user running audispd, so
//! that an unprivileged test or demo instance works), not writable by group
//! or others, and, for programs, executable by their owner and reached
//! through directories only root can change ([`crate::trust`] has the rule;
//! the engine applies it again before each start).

use std::ffi::OsString;
use std::fs::{File, Metadata};
use std::io::{self, Read};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

use crate::trust::{self, Facts, FileRole};

/// Config files larger than this are refused (a config is a few KiB; this
/// keeps a mistaken path from being read into memory).
const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// Why a config file could not be read.
#[derive(Debug)]
pub(super) enum ReadError {
    /// The file does not exist.
    Missing,
    /// The file exists but cannot be used; the message says why and what
    /// to do.
    Refused(String),
}

/// Opens and reads a config file, refusing anything but a small, UTF-8,
/// regular file that only root (or audispd's own user) can write.
///
/// The checks are made on the opened file, so a file swapped in between
/// check and read is not a concern; the file is opened non-blocking so a
/// FIFO planted in plugins.d cannot hang the loader.
pub(super) fn read_config(path: &Path) -> Result<String, ReadError> {
    read_config_for(path, "audispd")
}

/// [`read_config`] for another program of the suite (audisp-remote, say),
/// which trusts its option file by the same rule; `program` names it in
/// the messages.
pub(super) fn read_config_for(path: &Path, program: &str) -> Result<String, ReadError> {
    let mut file = match File::options()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(ReadError::Missing),
        Err(e) => return Err(ReadError::Refused(format!("cannot open: {e}"))),
    };
    let meta = file
        .metadata()
        .map_err(|e| ReadError::Refused(format!("cannot check the file: {e}")))?;
    if let Some(problem) = trust_problem(path, &meta, FileRole::Config, program) {
        return Err(ReadError::Refused(problem));
    }
    if meta.len() > MAX_CONFIG_BYTES {
        return Err(ReadError::Refused(format!(
            "is {} bytes long; a config file may be at most {MAX_CONFIG_BYTES} bytes",
            meta.len()
        )));
    }
    let mut bytes = Vec::new();
    file.by_ref()
        .take(MAX_CONFIG_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| ReadError::Refused(format!("cannot read: {e}")))?;
    String::from_utf8(bytes).map_err(|e| {
        ReadError::Refused(format!(
            "is not valid UTF-8 (at byte {}); TOML files must be UTF-8 text",
            e.utf8_error().valid_up_to()
        ))
    })
}

/// Checks a command audispd would run (`exec`, an action's `program`
/// with its `args`): the program, its `#!` interpreter if it is a script,
/// every directory leading to them and every argument naming an existing
/// file, by the rule of [`crate::trust`]. `what` names the program in the
/// message ("exec program", "action \"disk-full\" program").
pub(super) fn check_command(argv: &[OsString], what: &str) -> Result<(), String> {
    trust::prepare_exec(argv, "audispd")
        .map(drop)
        .map_err(|m| format!("{what} {m}"))
}

/// Checks the plugins.d directory: if anyone may write to it, anyone may
/// add a plugin that audispd would run as root.
pub(super) fn check_plugin_dir(path: &Path, meta: &Metadata) -> Result<(), String> {
    if meta.mode() & 0o002 != 0 {
        return Err(format!(
            "is world-writable (mode {:04o}), so anyone could add a plugin for audispd to run; no plugins were loaded; fix: chmod 0755 {}",
            meta.mode() & 0o7777,
            path.display()
        ));
    }
    Ok(())
}

/// Why `meta` (of `path`) cannot be trusted by `program`, with the fix, or
/// `None`.
fn trust_problem(path: &Path, meta: &Metadata, role: FileRole, program: &str) -> Option<String> {
    trust::file_problem(path, Facts::from_metadata(meta), role, program)
}

/// What a name found in plugins.d is.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Entry<'a> {
    /// A plugin file; the plugin's name is the file name without `.toml`.
    Plugin(&'a str),
    /// A stock auditd plugin file (`.conf`), which audisp does not read.
    AuditdConf(&'a str),
    /// Something to pass over silently: hidden files, editor backups,
    /// package manager leftovers, shipped examples, anything else.
    Ignored,
}

/// Classifies a file name found in plugins.d. Only `*.toml` names are
/// plugin files, which passes over editor backups (`x.toml~`, `x.toml.swp`),
/// package manager leftovers (`x.toml.dpkg-old`, `.dpkg-new`, `.dpkg-dist`,
/// `.rpmnew`, `.rpmsave`) and shipped examples (`x.toml.example`); hidden
/// names (editor swap files such as `.x.toml.swp`) are passed over too.
pub(super) fn classify(name: &str) -> Entry<'_> {
    if name.starts_with('.') {
        return Entry::Ignored;
    }
    if let Some(stem) = name.strip_suffix(".toml") {
        return Entry::Plugin(stem);
    }
    if let Some(stem) = name.strip_suffix(".conf") {
        return Entry::AuditdConf(stem);
    }
    Entry::Ignored
}

/// The TOML equivalent of a stock auditd plugins.d `.conf` file, as a
/// one-line hint: `exec = ["/sbin/audisp-syslog", "LOG_INFO"], format =
/// "string"`. Reads auditd's `key = value ...` lines loosely; only `path`,
/// `args`, `format` and `active` matter.
pub(super) fn translate_auditd_conf(text: &str) -> String {
    let mut path = None;
    let mut args: Vec<&str> = Vec::new();
    let mut binary = false;
    let mut active = true;
    for line in text.lines() {
        let mut words = line.split(' ').filter(|w| !w.is_empty());
        let (Some(key), Some("=")) = (words.next(), words.next()) else {
            continue;
        };
        let values: Vec<&str> = words.collect();
        match key.to_ascii_lowercase().as_str() {
            "path" => path = values.first().copied(),
            "args" => args = values,
            "format" => {
                binary = values
                    .first()
                    .is_some_and(|v| v.eq_ignore_ascii_case("binary"))
            }
            "active" => active = !values.first().is_some_and(|v| v.eq_ignore_ascii_case("no")),
            _ => {}
        }
    }
    let program = match path {
        // auditd ≥ 4 runs the separate af_unix plugin in place of the old built-in.
        Some(p) if p.starts_with("builtin_") => "/sbin/audisp-af_unix",
        Some(p) => p,
        None => "/path/to/plugin",
    };
    let argv: Vec<String> = std::iter::once(program)
        .chain(args)
        .map(|a| format!("{a:?}"))
        .collect();
    let mut hint = format!(
        "exec = [{}], format = \"{}\"",
        argv.join(", "),
        if binary { "binary" } else { "string" }
    );
    if !active {
        hint.push_str(", active = false");
    }
    hint
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn plugin_dir_names() {
        assert_eq!(classify("remote.toml"), Entry::Plugin("remote"));
        assert_eq!(classify("a.b.toml"), Entry::Plugin("a.b"));
        assert_eq!(classify("syslog.conf"), Entry::AuditdConf("syslog"));
        for ignored in [
            ".remote.toml",
            ".remote.toml.swp",
            "remote.toml~",
            "remote.toml.swp",
            "remote.toml.dpkg-old",
            "remote.toml.dpkg-new",
            "remote.toml.dpkg-dist",
            "remote.toml.rpmnew",
            "remote.toml.rpmsave",
            "remote.toml.example",
            "README",
            "remote.TOML",
        ] {
            assert_eq!(classify(ignored), Entry::Ignored, "{ignored}");
        }
    }

    #[test]
    fn auditd_conf_translation() {
        let syslog = "# This file controls the configuration of the syslog plugin.\n\
                      active = no\ndirection = out\npath = /sbin/audisp-syslog\ntype = always\nargs = LOG_INFO\nformat = string\n";
        assert_eq!(
            translate_auditd_conf(syslog),
            "exec = [\"/sbin/audisp-syslog\", \"LOG_INFO\"], format = \"string\", active = false"
        );
        let af_unix = "active = yes\npath = builtin_af_unix\ntype = builtin\nargs = 0640 /var/run/audispd_events\nformat = binary\n";
        assert_eq!(
            translate_auditd_conf(af_unix),
            "exec = [\"/sbin/audisp-af_unix\", \"0640\", \"/var/run/audispd_events\"], format = \"binary\""
        );
        assert_eq!(
            translate_auditd_conf(""),
            "exec = [\"/path/to/plugin\"], format = \"string\""
        );
    }

    #[test]
    fn config_files_must_be_private_regular_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.toml");
        std::fs::write(&p, "x = 1\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(read_config(&p).unwrap(), "x = 1\n");

        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o664)).unwrap();
        let Err(ReadError::Refused(m)) = read_config(&p) else {
            panic!()
        };
        assert!(
            m.starts_with(
                "is group-writable (mode 0664); audispd only reads config files owned by root"
            ),
            "{m}"
        );
        assert!(
            m.ends_with(&format!("; fix: chmod 0644 {}", p.display())),
            "{m}"
        );

        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o666)).unwrap();
        let Err(ReadError::Refused(m)) = read_config(&p) else {
            panic!()
        };
        assert!(
            m.starts_with("is group- and world-writable (mode 0666)"),
            "{m}"
        );

        assert!(matches!(
            read_config(&dir.path().join("missing.toml")),
            Err(ReadError::Missing)
        ));
        let Err(ReadError::Refused(m)) = read_config(dir.path()) else {
            panic!()
        };
        assert!(m.starts_with("is a directory, not a regular file"), "{m}");

        let fifo = dir.path().join("fifo.toml");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
        let Err(ReadError::Refused(m)) = read_config(&fifo) else {
            panic!()
        };
        assert!(m.starts_with("is a FIFO, not a regular file"), "{m}");

        let bad = dir.path().join("bad.toml");
        std::fs::write(&bad, b"x = \"\xff\"\n").unwrap();
        std::fs::set_permissions(&bad, std::fs::Permissions::from_mode(0o644)).unwrap();
        let Err(ReadError::Refused(m)) = read_config(&bad) else {
            panic!()
        };
        assert!(m.starts_with("is not valid UTF-8 (at byte 5)"), "{m}");
    }

    #[test]
    fn programs_must_be_private_and_executable() {
        let check_program = |p: &Path, what: &str| check_command(&[p.into()], what);
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("prog");
        std::fs::write(&p, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(check_program(&p, "exec program"), Ok(()));

        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        let m = check_program(&p, "exec program").unwrap_err();
        assert!(
            m.contains("is not executable by its owner (mode 0644)"),
            "{m}"
        );
        assert!(
            m.ends_with(&format!("fix: chmod 0755 {}", p.display())),
            "{m}"
        );

        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o775)).unwrap();
        let m = check_program(&p, "exec program").unwrap_err();
        assert!(m.contains("is group-writable (mode 0775)"), "{m}");

        let m = check_program(&dir.path().join("nope"), "exec program").unwrap_err();
        assert!(
            m.ends_with("/nope does not exist; install it or correct the path"),
            "{m}"
        );
        let m = check_program(dir.path(), "exec program").unwrap_err();
        assert!(m.contains("is a directory, not a regular file"), "{m}");
    }
}
