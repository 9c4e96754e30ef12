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

fn load_main(paths: &Paths, diagnostics: &mut Vec<Diagnostic>) -> Option<MainConfig> {
    let file = paths.main_file();
    let text = match files::read_config(&file) {
        Ok(t) => t,
        Err(ReadError::Missing) => return Some(MainConfig::defaults(paths)),
        Err(ReadError::Refused(message)) => {
            diagnostics.push(Diagnostic {
                file,
                line: None,
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

fn load_plugins(
    paths: &Paths,
    main: Option<&MainConfig>,
    diagnostics: &mut Vec<Diagnostic>,
    skipped: &mut BTreeSet<String>,
) -> Vec<PluginConfig> {
    let dir = paths.plugins_dir();
    let problem = |message: String| Diagnostic {
        file: dir.clone(),
        line: None,
        message,
    };
    let meta = match std::fs::metadata(&dir) {
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
    let mut names = match std::fs::read_dir(&dir) {
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
    let names: Vec<String> = names
        .into_iter()
        .filter_map(|n| match n.into_string() {
            Ok(s) => Some(s),
            Err(raw) => {
                if raw.as_bytes().ends_with(b".toml") {
                    diagnostics.push(Diagnostic {
                        file: dir.join(&raw),
                        line: None,
                        message: "file name is not valid UTF-8; plugin names use letters, digits, '_', '.' and '-'".to_string(),
                    });
                }
                None
            }
        })
        .collect();
    if let Err(m) = files::check_plugin_dir(&dir, &meta) {
        diagnostics.push(problem(m));
        for name in &names {
            if let Entry::Plugin(stem) = files::classify(name) {
                skipped.insert(stem.to_string());
            }
        }
        return Vec::new();
    }

    let mut plugins: Vec<PluginConfig> = Vec::new();
    // Active socket plugins so far: socket path → plugin name.
    let mut sockets: BTreeMap<PathBuf, String> = BTreeMap::new();
    for name in &names {
        let file = dir.join(name);
        match files::classify(name) {
            Entry::Ignored => {}
            Entry::AuditdConf(stem) => {
                let toml_name = format!("{stem}.toml");
                let message = if names.contains(&toml_name) {
                    format!(
                        "audisp reads plugin files in TOML, not auditd's .conf format, so this file is ignored (plugins.d/{toml_name} is used instead); remove it"
                    )
                } else {
                    let hint = match files::read_config(&file) {
                        Ok(text) => files::translate_auditd_conf(&text),
                        Err(_) => files::translate_auditd_conf(""),
                    };
                    format!(
                        "audisp reads plugin files in TOML, not auditd's .conf format, so this file is ignored; to run this plugin under audisp, write plugins.d/{toml_name} with {hint}"
                    )
                };
                diagnostics.push(Diagnostic {
                    file,
                    line: None,
                    message,
                });
            }
            Entry::Plugin(stem) => {
                if let Err(message) = units::check_plugin_name(stem) {
                    diagnostics.push(Diagnostic {
                        file,
                        line: None,
                        message,
                    });
                    continue;
                }
                let Some(parsed) = load_plugin(paths, &file, stem, diagnostics) else {
                    skipped.insert(stem.to_string());
                    continue;
                };
                let p = parsed.config;
                if let (true, Transport::Socket(path)) = (p.active, &p.transport) {
                    let clash = if let Some(other) = sockets.get(path) {
                        Some(format!(
                            "socket {} is already used by plugin {other} (plugins.d/{other}.toml); every plugin needs its own socket",
                            path.display()
                        ))
                    } else if main
                        .is_some_and(|m| m.input_socket.enabled && m.input_socket.path == *path)
                    {
                        Some(format!(
                            "socket {} is audispd's own input socket ([input.socket] path); give the plugin its own socket",
                            path.display()
                        ))
                    } else {
                        None
                    };
                    if let Some(message) = clash {
                        diagnostics.push(Diagnostic {
                            file,
                            line: parsed.socket_line,
                            message,
                        });
                        skipped.insert(stem.to_string());
                        continue;
                    }
                    sockets.insert(path.clone(), p.name.clone());
                }
                plugins.push(p);
            }
        }
    }
    plugins
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
