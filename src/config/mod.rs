//! audispd's configuration: the optional main file `CONFIG_DIR/audispd.toml`
//! and one file per plugin in `CONFIG_DIR/plugins.d/NAME.toml`, so that
//! installing or removing a plugin never edits a shared file (as with
//! xinetd's or auditd's own plugins.d).
//!
//! [`load`] reads and checks everything and returns the resolved settings
//! the engine runs on, plus a [`Diagnostic`] for every problem: each names
//! the file and line, says what is wrong and what is allowed instead. A
//! broken main file stops the daemon (no [`Config`]); a broken plugin file
//! only costs that plugin. [`check`] renders the same findings for
//! `audispd --check-config`.
//!
//! Like auditd, audispd only trusts config files and programs that nobody
//! but root (or the user audispd runs as) could have written.
//!
//! [`option_file`] reads the option files of the suite's other programs
//! (audisp-remote, audisp-receive) by the same rules.

mod doc;
mod files;
mod main_file;
pub mod option_file;
mod plugin_file;
mod to_engine;
mod units;

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::fmt;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The values of plugin keys and of `[journal] sync` are the engine's own
/// vocabulary; the file model uses the engine's types for them.
pub use crate::engine::settings::{
    Action, Backoff, DeliveryMode, Overflow, PluginFormat, SyncPolicy, SystemAction, Transport,
};
use crate::engine::settings::{EventSettings, InputSocketSettings, JournalSettings, StdinSettings};
use files::{Entry, ReadError};
pub use to_engine::section_of;
/// Durations as the config files write them (`"500ms"`, `"30s"`; bare
/// digits are seconds), for programs' own options.
pub use units::parse_duration;
/// Sizes as the config files write them (`"64M"`), for plugins' own options.
pub use units::parse_size;

/// Where audisp keeps its files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paths {
    /// `audispd.toml` and `plugins.d/` (default `/etc/audisp`).
    pub config_dir: PathBuf,
    /// Sockets and the state file (default `/run/audisp`).
    pub runtime_dir: PathBuf,
    /// The journal and plugin cursors (default `/var/lib/audisp`).
    pub state_dir: PathBuf,
}

impl Paths {
    /// Picks each directory from, in order: the command-line flag,
    /// `AUDISP_CONFIG_DIR` / `AUDISP_RUNTIME_DIR` / `AUDISP_STATE_DIR`,
    /// systemd's `CONFIGURATION_DIRECTORY` / `RUNTIME_DIRECTORY` /
    /// `STATE_DIRECTORY` (the first path if it lists several), and the
    /// defaults `/etc/audisp`, `/run/audisp`, `/var/lib/audisp`. Empty
    /// variables count as unset. `env` looks up an environment variable
    /// (`&|k| std::env::var_os(k)` in the daemon).
    pub fn resolve(
        config_dir: Option<PathBuf>,
        runtime_dir: Option<PathBuf>,
        state_dir: Option<PathBuf>,
        env: &dyn Fn(&str) -> Option<OsString>,
    ) -> Paths {
        let pick = |flag: Option<PathBuf>, ours: &str, systemd: &str, default: &str| -> PathBuf {
            if let Some(p) = flag {
                return p;
            }
            if let Some(v) = env(ours).filter(|v| !v.is_empty()) {
                return PathBuf::from(v);
            }
            if let Some(v) = env(systemd) {
                let first = v.as_bytes().split(|&b| b == b':').find(|p| !p.is_empty());
                if let Some(p) = first {
                    return PathBuf::from(std::ffi::OsStr::from_bytes(p));
                }
            }
            PathBuf::from(default)
        };
        Paths {
            config_dir: pick(
                config_dir,
                "AUDISP_CONFIG_DIR",
                "CONFIGURATION_DIRECTORY",
                "/etc/audisp",
            ),
            runtime_dir: pick(
                runtime_dir,
                "AUDISP_RUNTIME_DIR",
                "RUNTIME_DIRECTORY",
                "/run/audisp",
            ),
            state_dir: pick(
                state_dir,
                "AUDISP_STATE_DIR",
                "STATE_DIRECTORY",
                "/var/lib/audisp",
            ),
        }
    }

    /// The main config file, `CONFIG_DIR/audispd.toml`.
    pub fn main_file(&self) -> PathBuf {
        self.config_dir.join("audispd.toml")
    }

    /// The plugin directory, `CONFIG_DIR/plugins.d`.
    pub fn plugins_dir(&self) -> PathBuf {
        self.config_dir.join("plugins.d")
    }
}

/// Everything audispd runs on.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Settings from `audispd.toml`.
    pub main: MainConfig,
    /// Every plugin file that loaded, active or not, sorted by name.
    pub plugins: Vec<PluginConfig>,
}

/// The settings of `audispd.toml`.
#[derive(Debug, Clone, PartialEq)]
pub struct MainConfig {
    /// `[input.stdin]` (`enabled`, `format`, `binary_framing`): records
    /// from auditd on standard input.
    pub stdin: StdinSettings,
    /// `[input.socket]` (`enabled`, `path`, `mode`, `allow_users`,
    /// `allow_groups`): the socket input plugins connect to. A relative
    /// `path` is taken from the runtime directory (default
    /// `RUNTIME_DIR/input.sock`).
    pub input_socket: InputSocketSettings,
    /// `[journal]` (`dir`, `max_size`, `segment_size`, `memory`, `sync`,
    /// `sync_interval`): where records wait until every plugin has them. A
    /// relative `dir` is taken from the state directory (default
    /// `STATE_DIR/journal`).
    pub journal: JournalSettings,
    /// `[events]` (`timeout`, `max_open`): grouping records into events.
    pub events: EventSettings,
    /// `[stats]`: periodic statistics and the state report.
    pub stats: StatsConfig,
    /// `[shutdown] timeout`: how long plugins get to catch up on shutdown.
    pub shutdown_timeout: Duration,
    /// `[dbus]`: the system-bus adapter (`audisp::dbus`).
    pub dbus: DbusConfig,
}

/// `[dbus]`: publishing on the system bus. Not part of the engine's
/// settings: the `audispd` binary hands it to `audisp::dbus`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbusConfig {
    /// `enabled` (default false): own `org.audisp.Dispatcher1` and forward
    /// AVC denials to setroubleshootd.
    pub enabled: bool,
    /// `address`: a bus address to use instead of the system bus (tests);
    /// unset means the system bus (which honours `DBUS_SYSTEM_BUS_ADDRESS`).
    pub address: Option<String>,
    /// `read_groups`, resolved to gids: besides root, members of these
    /// groups may read statistics and subscribe to events.
    pub read_groups: Vec<u32>,
    /// `[dbus.setroubleshoot]`.
    pub setroubleshoot: SetroubleshootConfig,
}

/// `[dbus.setroubleshoot]`: forwarding AVC denials to setroubleshootd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetroubleshootConfig {
    /// `enabled` (default true when `[dbus]` is).
    pub enabled: bool,
    /// `queue`: events waiting for a call before new ones are dropped.
    pub queue: usize,
    /// `timeout`: how long one call may take.
    pub timeout: Duration,
    /// `rate`: most calls per second (bursts of up to this many).
    pub rate: u32,
    /// `dedup_window`: identical denials within this time are sent once.
    pub dedup_window: Duration,
}

/// `[stats]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatsConfig {
    /// `interval` between statistics log lines; `None` when set to "0".
    pub interval: Option<Duration>,
    /// `state_file` written on SIGUSR1 (default `RUNTIME_DIR/audispd.state`;
    /// relative paths are taken from the runtime directory).
    pub state_file: PathBuf,
}

/// One `plugins.d/NAME.toml`.
#[derive(Debug, Clone, PartialEq)]
pub struct PluginConfig {
    /// The file name without `.toml`.
    pub name: String,
    /// The file it came from.
    pub file: PathBuf,
    /// `active` (default true); inactive plugins are loaded and checked but
    /// not run.
    pub active: bool,
    /// `socket` (relative paths are under `RUNTIME_DIR/plugins`) or `exec`
    /// (an absolute program path and its arguments); never
    /// [`Transport::Internal`], which no file can name.
    pub transport: Transport,
    /// `format` (default native).
    pub format: PluginFormat,
    /// `mode` (default records).
    pub mode: DeliveryMode,
    /// `include`: record types wanted (empty: all), sorted.
    pub include: Vec<u32>,
    /// `exclude`: record types not wanted, sorted.
    pub exclude: Vec<u32>,
    /// `queue_size`: records of backlog before `overflow` applies.
    pub queue_size: u64,
    /// `overflow`: what happens beyond `queue_size`.
    pub overflow: Overflow,
    /// `spool_max`: most bytes of journal kept for this plugin.
    pub spool_max: u64,
    /// `[restart]`: delays between restarts or reconnects.
    pub restart: Backoff,
    /// `[actions.NAME]`: what the plugin may ask audispd to do.
    pub actions: BTreeMap<String, Action>,
}

/// One problem found in the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// The file the problem is in.
    pub file: PathBuf,
    /// The line, when the problem is at one.
    pub line: Option<usize>,
    /// What is wrong and what to do about it.
    pub message: String,
}

impl Diagnostic {
    /// `FILE:LINE: message` with FILE shown relative to `base` when it is
    /// inside it (as `audispd --check-config` shows it).
    pub fn display_relative(&self, base: &Path) -> String {
        let file = self.file.strip_prefix(base).unwrap_or(&self.file);
        match self.line {
            Some(l) => format!("{}:{l}: {}", file.display(), self.message),
            None => format!("{}: {}", file.display(), self.message),
        }
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(l) => write!(f, "{}:{l}: {}", self.file.display(), self.message),
            None => write!(f, "{}: {}", self.file.display(), self.message),
        }
    }
}

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

/// Renders a load the way `audispd --check-config` prints it: every
/// diagnostic as `path:line: message` (paths relative to the config
/// directory), then a summary line. Returns the text (ending in a newline)
/// and whether the configuration is free of problems.
pub fn report(paths: &Paths, loaded: &Loaded) -> (String, bool) {
    let mut out = String::new();
    for d in &loaded.diagnostics {
        out.push_str(&d.display_relative(&paths.config_dir));
        out.push('\n');
    }
    let errors = loaded.diagnostics.len();
    let ok = errors == 0;
    let summary = match &loaded.config {
        None => format!("{}: audispd would not start", count(errors, "error")),
        Some(c) => {
            let running: Vec<&str> = c
                .plugins
                .iter()
                .filter(|p| p.active)
                .map(|p| p.name.as_str())
                .collect();
            let inactive: Vec<&str> = c
                .plugins
                .iter()
                .filter(|p| !p.active)
                .map(|p| p.name.as_str())
                .collect();
            let mut s = if ok {
                format!("ok: {}", named("plugin", &running))
            } else {
                format!(
                    "{}: audispd would run {}",
                    count(errors, "error"),
                    named("plugin", &running)
                )
            };
            if !inactive.is_empty() {
                s.push_str(&format!(
                    ", {} inactive ({})",
                    inactive.len(),
                    inactive.join(", ")
                ));
            }
            if !loaded.skipped.is_empty() {
                let names: Vec<&str> = loaded.skipped.iter().map(String::as_str).collect();
                s.push_str(&format!(", skipping {}", names.join(", ")));
            }
            s
        }
    };
    out.push_str(&summary);
    out.push('\n');
    (out, ok)
}

/// [`load`] then [`report`]: the whole of `audispd --check-config`.
pub fn check(paths: &Paths) -> (String, bool) {
    report(paths, &load(paths))
}

/// `1 error`, `2 errors`.
fn count(n: usize, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

/// `2 plugins (a, b)`, `0 plugins`.
fn named(what: &str, names: &[&str]) -> String {
    if names.is_empty() {
        count(0, what)
    } else {
        format!("{} ({})", count(names.len(), what), names.join(", "))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of(vars: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<OsString> {
        move |k| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| OsString::from(v))
        }
    }

    #[test]
    fn paths_default() {
        let p = Paths::resolve(None, None, None, &env_of(&[]));
        assert_eq!(p.config_dir, PathBuf::from("/etc/audisp"));
        assert_eq!(p.runtime_dir, PathBuf::from("/run/audisp"));
        assert_eq!(p.state_dir, PathBuf::from("/var/lib/audisp"));
        assert_eq!(p.main_file(), PathBuf::from("/etc/audisp/audispd.toml"));
        assert_eq!(p.plugins_dir(), PathBuf::from("/etc/audisp/plugins.d"));
    }

    #[test]
    fn paths_precedence() {
        let env = env_of(&[
            ("AUDISP_CONFIG_DIR", "/a/config"),
            ("CONFIGURATION_DIRECTORY", "/sd/config"),
            ("RUNTIME_DIRECTORY", "/sd/run1:/sd/run2"),
            ("AUDISP_STATE_DIR", ""),
            ("STATE_DIRECTORY", ":/sd/state"),
        ]);
        let p = Paths::resolve(None, None, None, &env);
        assert_eq!(
            p.config_dir,
            PathBuf::from("/a/config"),
            "ours beats systemd's"
        );
        assert_eq!(
            p.runtime_dir,
            PathBuf::from("/sd/run1"),
            "systemd's first path"
        );
        assert_eq!(
            p.state_dir,
            PathBuf::from("/sd/state"),
            "empty counts as unset"
        );
        let p = Paths::resolve(
            Some("/f/c".into()),
            Some("/f/r".into()),
            Some("/f/s".into()),
            &env,
        );
        assert_eq!(
            p,
            Paths {
                config_dir: "/f/c".into(),
                runtime_dir: "/f/r".into(),
                state_dir: "/f/s".into()
            },
            "flags beat everything"
        );
    }

    #[test]
    fn diagnostics_display() {
        let d = Diagnostic {
            file: "/etc/audisp/plugins.d/a.toml".into(),
            line: Some(4),
            message: "bad".into(),
        };
        assert_eq!(d.to_string(), "/etc/audisp/plugins.d/a.toml:4: bad");
        assert_eq!(
            d.display_relative(Path::new("/etc/audisp")),
            "plugins.d/a.toml:4: bad"
        );
        let d = Diagnostic { line: None, ..d };
        assert_eq!(d.to_string(), "/etc/audisp/plugins.d/a.toml: bad");
        assert_eq!(
            d.display_relative(Path::new("/elsewhere")),
            "/etc/audisp/plugins.d/a.toml: bad"
        );
    }

    #[test]
    fn summaries() {
        let paths = Paths::resolve(
            Some("/c".into()),
            Some("/r".into()),
            Some("/s".into()),
            &env_of(&[]),
        );
        let plugin = |name: &str, active: bool| PluginConfig {
            name: name.into(),
            file: format!("/c/plugins.d/{name}.toml").into(),
            active,
            transport: Transport::Socket(format!("/r/plugins/{name}").into()),
            format: PluginFormat::Native,
            mode: DeliveryMode::Records,
            include: vec![],
            exclude: vec![],
            queue_size: 1,
            overflow: Overflow::Spool,
            spool_max: 1 << 30,
            restart: Backoff {
                initial: Duration::from_secs(1),
                max: Duration::from_secs(1),
            },
            actions: BTreeMap::new(),
        };
        let mut loaded = Loaded {
            config: Some(Config {
                main: MainConfig::defaults(&paths),
                plugins: vec![plugin("a", true), plugin("b", false), plugin("c", true)],
            }),
            diagnostics: vec![],
            skipped: BTreeSet::new(),
        };
        assert_eq!(
            report(&paths, &loaded),
            ("ok: 2 plugins (a, c), 1 inactive (b)\n".to_string(), true)
        );
        loaded.diagnostics.push(Diagnostic {
            file: "/c/plugins.d/d.toml".into(),
            line: Some(2),
            message: "bad".into(),
        });
        loaded.skipped.insert("d".into());
        assert_eq!(
            report(&paths, &loaded),
            (
                "plugins.d/d.toml:2: bad\n1 error: audispd would run 2 plugins (a, c), 1 inactive (b), skipping d\n".to_string(),
                false
            )
        );
        loaded.config = None;
        loaded.diagnostics.push(loaded.diagnostics[0].clone());
        assert_eq!(
            report(&paths, &loaded).0.lines().last(),
            Some("2 errors: audispd would not start")
        );
        let empty = Loaded {
            config: Some(Config {
                main: MainConfig::defaults(&paths),
                plugins: vec![],
            }),
            diagnostics: vec![],
            skipped: BTreeSet::new(),
        };
        assert_eq!(report(&paths, &empty).0, "ok: 0 plugins\n");
    }
}
