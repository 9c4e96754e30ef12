//! Reading audispd's configuration: the main file, then every file in
//! `plugins.d`, each problem recorded as a [`Diagnostic`] and costing no
//! more than it must (a broken main file stops the daemon, a broken plugin
//! file only that plugin).

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::files::{self, Entry, ReadError};
use super::{doc, main_file, plugin_file, units};
use super::{Config, Diagnostic, MainConfig, Paths, PluginConfig, Transport};

/// The result of [`load`].
#[derive(Debug, Clone, PartialEq)]
pub struct Loaded {
    /// The configuration; `None` when the main file is broken, in which
    /// case audispd must not start (or, on reload, keep what it runs).
    pub config: Option<Config>,
    /// Every problem found, main file first, then plugins.d in name order.
    pub diagnostics: Vec<Diagnostic>,
    /// Plugins whose files exist but were skipped because of problems. On a
    /// reload, running plugins of these names should keep running as they
    /// are rather than be stopped.
    pub skipped: BTreeSet<String>,
}

/// Reads and checks `audispd.toml` and every plugin file in `plugins.d`.
pub fn load(paths: &Paths) -> Loaded {
    let mut diagnostics = Vec::new();
    let main = load_main(paths, &mut diagnostics);
    let mut skipped = BTreeSet::new();
    let plugins = load_plugins(paths, main.as_ref(), &mut diagnostics, &mut skipped);
    Loaded {
        config: main.map(|main| Config { main, plugins }),
        diagnostics,
        skipped,
    }
}

/// Reads `audispd.toml`: all defaults when there is none; `None` when it
/// cannot be trusted or read, or has any problem (each reported).
fn load_main(paths: &Paths, diagnostics: &mut Vec<Diagnostic>) -> Option<MainConfig> {
    let file = paths.main_file();
    let text = match files::read_config(&file) {
        Ok(t) => t,
        Err(ReadError::Missing) => return Some(MainConfig::defaults(paths)),
        Err(ReadError::Refused(message)) => {
            diagnostics.push(Diagnostic {
                file,
                line: None,
                column: None,
                message,
            });
            return None;
        }
    };
    let mut doc = doc::Doc::new(&file, &text);
    let main = doc.parse().map(|t| main_file::parse(&mut doc, &t, paths));
    let clean = doc.is_clean();
    diagnostics.extend(doc.finish());
    main.filter(|_| clean)
}

/// Reads every plugin file in `plugins.d`, in name order: lists the
/// directory, points auditd `.conf` files to their TOML form, checks each
/// plugin's name and file, and keeps active socket plugins off each other's
/// sockets and audispd's input socket. Plugins whose files exist but are
/// broken go to `skipped`.
fn load_plugins(
    paths: &Paths,
    main: Option<&MainConfig>,
    diagnostics: &mut Vec<Diagnostic>,
    skipped: &mut BTreeSet<String>,
) -> Vec<PluginConfig> {
    let dir = paths.plugins_dir();
    let names = list_plugin_dir(&dir, diagnostics, skipped);
    let mut plugins: Vec<PluginConfig> = Vec::new();
    // Active socket plugins so far: socket path → plugin name.
    let mut sockets: BTreeMap<PathBuf, String> = BTreeMap::new();
    for name in &names {
        let file = dir.join(name);
        match files::classify(name) {
            Entry::Ignored => {}
            Entry::AuditdConf(stem) => {
                let message = auditd_conf_hint(&file, stem, &names);
                diagnostics.push(Diagnostic {
                    file,
                    line: None,
                    column: None,
                    message,
                });
            }
            Entry::Plugin(stem) => {
                if let Err(message) = units::check_plugin_name(stem) {
                    diagnostics.push(Diagnostic {
                        file,
                        line: None,
                        column: None,
                        message,
                    });
                    continue;
                }
                let Some(parsed) = load_plugin(paths, &file, stem, diagnostics) else {
                    skipped.insert(stem.to_string());
                    continue;
                };
                if let Err(message) = claim_socket(&parsed.config, &mut sockets, main) {
                    diagnostics.push(Diagnostic {
                        file,
                        line: parsed.socket_line,
                        column: None,
                        message,
                    });
                    skipped.insert(stem.to_string());
                    continue;
                }
                plugins.push(parsed.config);
            }
        }
    }
    plugins
}

/// The names in the plugin directory `dir`, sorted; none when it is absent
/// (no plugins), unreadable, not a directory or not trusted (each reported;
/// when untrusted, every plugin file in it goes to `skipped`). Names that
/// are not UTF-8 are left out, and reported when they end in `.toml`.
fn list_plugin_dir(
    dir: &Path,
    diagnostics: &mut Vec<Diagnostic>,
    skipped: &mut BTreeSet<String>,
) -> Vec<String> {
    let problem = |message: String| Diagnostic {
        file: dir.to_path_buf(),
        line: None,
        column: None,
        message,
    };
    let meta = match std::fs::metadata(dir) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Vec::new(),
        Err(e) => {
            diagnostics.push(problem(format!("cannot read the plugin directory: {e}")));
            return Vec::new();
        }
    };
    if !meta.is_dir() {
        diagnostics.push(problem(
            "is not a directory; plugins.d must be a directory of NAME.toml files".to_string(),
        ));
        return Vec::new();
    }
    let mut names = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .filter_map(|e| e.ok())
            .map(|e| e.file_name())
            .collect::<Vec<OsString>>(),
        Err(e) => {
            diagnostics.push(problem(format!("cannot read the plugin directory: {e}")));
            return Vec::new();
        }
    };
    names.sort();
    let names = utf8_names(dir, names, diagnostics);
    if let Err(m) = files::check_plugin_dir(dir, &meta) {
        diagnostics.push(problem(m));
        for name in &names {
            if let Entry::Plugin(stem) = files::classify(name) {
                skipped.insert(stem.to_string());
            }
        }
        return Vec::new();
    }
    names
}

/// The names of `dir` that are UTF-8; a `.toml` file whose name is not is
/// reported (plugin names are ASCII), other files are not audispd's
/// business.
fn utf8_names(dir: &Path, names: Vec<OsString>, diagnostics: &mut Vec<Diagnostic>) -> Vec<String> {
    names
        .into_iter()
        .filter_map(|n| match n.into_string() {
            Ok(s) => Some(s),
            Err(raw) => {
                if raw.as_bytes().ends_with(b".toml") {
                    diagnostics.push(Diagnostic {
                        file: dir.join(&raw),
                        line: None,
                        column: None,
                        message: "file name is not valid UTF-8; plugin names use letters, digits, '_', '.' and '-'".to_string(),
                    });
                }
                None
            }
        })
        .collect()
}

/// What to say about `file`, auditd's `STEM.conf` in `plugins.d`: audisp
/// ignores it; remove it if `STEM.toml` exists among `names`, otherwise
/// write `STEM.toml`, with the settings translated from it where possible.
fn auditd_conf_hint(file: &Path, stem: &str, names: &[String]) -> String {
    let toml_name = format!("{stem}.toml");
    if names.contains(&toml_name) {
        format!(
            "audisp reads plugin files in TOML, not auditd's .conf format, so this file is ignored (plugins.d/{toml_name} is used instead); remove it"
        )
    } else {
        let hint = match files::read_config(file) {
            Ok(text) => files::translate_auditd_conf(&text),
            Err(_) => files::translate_auditd_conf(""),
        };
        format!(
            "audisp reads plugin files in TOML, not auditd's .conf format, so this file is ignored; to run this plugin under audisp, write plugins.d/{toml_name} with {hint}"
        )
    }
}

/// Gives an active socket plugin `p` its socket in `sockets` (socket path →
/// plugin name), or says why not: another plugin has it, or it is
/// audispd's own input socket. Inactive and exec plugins need none.
fn claim_socket(
    p: &PluginConfig,
    sockets: &mut BTreeMap<PathBuf, String>,
    main: Option<&MainConfig>,
) -> Result<(), String> {
    let (true, Transport::Socket(path)) = (p.active, &p.transport) else {
        return Ok(());
    };
    if let Some(other) = sockets.get(path) {
        return Err(format!(
            "socket {} is already used by plugin {other} (plugins.d/{other}.toml); every plugin needs its own socket",
            path.display()
        ));
    }
    if main.is_some_and(|m| m.input_socket.enabled && m.input_socket.path == *path) {
        return Err(format!(
            "socket {} is audispd's own input socket ([input.socket] path); give the plugin its own socket",
            path.display()
        ));
    }
    sockets.insert(path.clone(), p.name.clone());
    Ok(())
}

/// Reads one plugin file; its problems go to `diagnostics`.
fn load_plugin(
    paths: &Paths,
    file: &Path,
    name: &str,
    diagnostics: &mut Vec<Diagnostic>,
) -> Option<plugin_file::Parsed> {
    let text = match files::read_config(file) {
        Ok(t) => t,
        Err(e) => {
            let message = match e {
                ReadError::Missing => {
                    "cannot be read: it does not exist (a symbolic link to a missing file?)"
                        .to_string()
                }
                ReadError::Refused(m) => m,
            };
            diagnostics.push(Diagnostic {
                file: file.to_path_buf(),
                line: None,
                column: None,
                message,
            });
            return None;
        }
    };
    let mut doc = doc::Doc::new(file, &text);
    let parsed = doc
        .parse()
        .and_then(|t| plugin_file::parse(&mut doc, &t, name, paths));
    diagnostics.extend(doc.finish());
    parsed
}
