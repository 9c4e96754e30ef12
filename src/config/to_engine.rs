//! The file model handed to the engine: what the engine runs on is taken
//! from the loaded files, and what only audispd's adapters read (`[dbus]`,
//! `[stats] interval`) or only the loader needs (a plugin's file, inactive
//! plugins) stays behind.
//!
//! The conversions take every field of the file model by name, so a key
//! added to a file cannot be forgotten here: it must be mapped or left
//! behind on purpose.

use super::{Config, MainConfig, PluginConfig, StatsConfig};
use crate::engine::settings::{CoreSettings, PluginSettings, Settings, StartOnly, StatsSettings};

impl Config {
    /// What the engine runs on: the main file's settings and those of every
    /// active plugin.
    pub fn engine_settings(&self) -> Settings {
        Settings {
            core: self.main.core_settings(),
            plugins: self
                .plugins
                .iter()
                .filter(|p| p.active)
                .map(PluginConfig::engine_settings)
                .collect(),
        }
    }
}

impl MainConfig {
    /// The engine's own settings from `audispd.toml`.
    pub fn core_settings(&self) -> CoreSettings {
        let MainConfig {
            stdin,
            input_socket,
            journal,
            events,
            stats:
                StatsConfig {
                    // Logged by the audispd binary, not the engine.
                    interval: _,
                    state_file,
                },
            shutdown_timeout,
            input_filters,
            // Read by the audispd binary's D-Bus adapter.
            dbus: _,
        } = self;
        CoreSettings {
            stdin: *stdin,
            input_socket: input_socket.clone(),
            journal: journal.clone(),
            events: events.clone(),
            stats: StatsSettings {
                state_file: state_file.clone(),
            },
            shutdown_timeout: *shutdown_timeout,
            input_filters: input_filters.clone(),
        }
    }
}

impl PluginConfig {
    /// The engine's settings for this plugin (whether it is active is the
    /// caller's choice: the engine runs every plugin it is given).
    pub fn engine_settings(&self) -> PluginSettings {
        let PluginConfig {
            name,
            file: _,
            active: _,
            transport,
            format,
            mode,
            include,
            exclude,
            inputs,
            drop_fields,
            filter,
            queue_size,
            overflow,
            spool_max,
            restart,
            actions,
        } = self;
        PluginSettings {
            name: name.clone(),
            transport: transport.clone(),
            format: *format,
            mode: *mode,
            include: include.clone(),
            exclude: exclude.clone(),
            inputs: inputs.clone(),
            drop_fields: drop_fields.clone(),
            filter: filter.clone(),
            queue_size: *queue_size,
            overflow: *overflow,
            spool_max: *spool_max,
            restart: *restart,
            actions: actions.clone(),
        }
    }
}

/// The `audispd.toml` section that sets a start-only engine setting, as a
/// reload names it (`[journal]`).
pub fn section_of(part: StartOnly) -> &'static str {
    match part {
        StartOnly::Stdin => "[input.stdin]",
        StartOnly::InputSocket => "[input.socket]",
        StartOnly::Journal => "[journal]",
        StartOnly::Events => "[events]",
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::{Path, PathBuf};
    use std::time::Duration;

    use super::super::doc::Doc;
    use super::super::{main_file, plugin_file, Paths};
    use super::*;
    use crate::engine::settings::{
        Action, Backoff, DeliveryMode, EventSettings, InputSocketSettings, JournalSettings,
        Overflow, PluginFormat, StdinSettings, SyncPolicy, SystemAction, Transport,
    };
    use crate::framing::{BinaryFraming, InputFormat};

    fn paths() -> Paths {
        Paths {
            config_dir: "/c".into(),
            runtime_dir: "/r".into(),
            state_dir: "/s".into(),
        }
    }

    /// `audispd.toml` with `text`, which must be free of problems.
    fn main_file(text: &str) -> MainConfig {
        let mut doc = Doc::new(Path::new("audispd.toml"), text);
        let table = doc.parse().expect("valid TOML");
        let main = main_file::parse(&mut doc, &table, &paths());
        let problems = doc.finish();
        assert!(problems.is_empty(), "{problems:?}");
        main
    }

    /// `plugins.d/NAME.toml` with `text`, which must be free of problems.
    fn plugin_file(name: &str, text: &str) -> PluginConfig {
        let file = PathBuf::from(format!("/c/plugins.d/{name}.toml"));
        let mut doc = Doc::new(&file, text);
        let table = doc.parse().expect("valid TOML");
        let parsed = plugin_file::parse(&mut doc, &table, name, &paths());
        let problems = doc.finish();
        assert!(problems.is_empty(), "{problems:?}");
        parsed.expect("a plugin").config
    }

    #[test]
    fn defaults() {
        let core = main_file("").core_settings();
        assert_eq!(
            core,
            CoreSettings {
                stdin: StdinSettings {
                    enabled: true,
                    format: InputFormat::String,
                },
                input_socket: InputSocketSettings {
                    enabled: true,
                    path: "/r/input.sock".into(),
                    mode: 0o660,
                    allow_users: vec![],
                    allow_groups: vec![],
                },
                journal: JournalSettings {
                    dir: "/s/journal".into(),
                    max_size: 1 << 30,
                    segment_size: 64 << 20,
                    memory: 32 << 20,
                    sync: SyncPolicy::Batch,
                    sync_interval: Duration::from_secs(1),
                },
                events: EventSettings {
                    timeout: Duration::from_secs(2),
                    max_open: 4096,
                },
                stats: StatsSettings {
                    state_file: "/r/audispd.state".into(),
                },
                shutdown_timeout: Duration::from_secs(5),
                input_filters: BTreeMap::new(),
            }
        );
        let plugin = plugin_file("p", "socket = \"p.sock\"\n").engine_settings();
        assert_eq!(
            plugin,
            PluginSettings {
                name: "p".into(),
                transport: Transport::Socket("/r/plugins/p.sock".into()),
                format: PluginFormat::Native,
                mode: DeliveryMode::Records,
                include: vec![],
                exclude: vec![],
                inputs: None,
                drop_fields: vec![],
                filter: None,
                queue_size: 100_000,
                overflow: Overflow::Spool,
                spool_max: 1 << 30,
                restart: Backoff {
                    initial: Duration::from_millis(100),
                    max: Duration::from_secs(30),
                },
                actions: BTreeMap::new(),
            }
        );
    }

    #[test]
    fn every_main_key_is_mapped() {
        let main = main_file(
            r#"
[input.stdin]
enabled = false
format = "binary"
binary_framing = "padded"
[input.socket]
enabled = false
path = "/x/in.sock"
mode = "0600"
allow_users = [1000]
allow_groups = [10]
[journal]
dir = "/x/journal"
max_size = "2G"
segment_size = "128M"
memory = "16M"
sync = "never"
sync_interval = "3s"
[events]
timeout = "7s"
max_open = 9
[stats]
interval = "0"
state_file = "/x/state"
[shutdown]
timeout = "11s"
[dbus]
enabled = true
"#,
        );
        assert_eq!(
            main.core_settings(),
            CoreSettings {
                stdin: StdinSettings {
                    enabled: false,
                    format: InputFormat::Binary(BinaryFraming::Padded),
                },
                input_socket: InputSocketSettings {
                    enabled: false,
                    path: "/x/in.sock".into(),
                    mode: 0o600,
                    allow_users: vec![1000],
                    allow_groups: vec![10],
                },
                journal: JournalSettings {
                    dir: "/x/journal".into(),
                    max_size: 2 << 30,
                    segment_size: 128 << 20,
                    memory: 16 << 20,
                    sync: SyncPolicy::Never,
                    sync_interval: Duration::from_secs(3),
                },
                events: EventSettings {
                    timeout: Duration::from_secs(7),
                    max_open: 9,
                },
                stats: StatsSettings {
                    state_file: "/x/state".into(),
                },
                shutdown_timeout: Duration::from_secs(11),
                input_filters: BTreeMap::new(),
            }
        );
    }

    #[test]
    fn adapter_settings_stay_behind() {
        let plain = main_file("");
        let adapters = main_file(
            "[stats]\ninterval = \"10s\"\n[dbus]\nenabled = true\naddress = \"unix:path=/x\"\n",
        );
        assert_ne!(plain, adapters);
        assert_eq!(plain.core_settings(), adapters.core_settings());
    }

    #[test]
    fn every_plugin_key_is_mapped() {
        let plugin = plugin_file(
            "q",
            r#"exec = ["/bin/true", "-x"]
format = "native"
mode = "events"
include = ["USER", 1100]
exclude = ["LOGIN"]
queue_size = 5
overflow = "suspend"
spool_max = "2M"
[restart]
initial = "1s"
max = "4s"
[actions.stop]
run = "halt"
[actions.note]
run = "exec"
program = "/bin/true"
args = ["a"]
"#,
        );
        assert_eq!(
            plugin.engine_settings(),
            PluginSettings {
                name: "q".into(),
                transport: Transport::Exec(vec!["/bin/true".into(), "-x".into()]),
                format: PluginFormat::Native,
                mode: DeliveryMode::Events,
                include: vec![1005, 1100],
                exclude: vec![1006],
                inputs: None,
                drop_fields: vec![],
                filter: None,
                queue_size: 5,
                overflow: Overflow::Suspend,
                spool_max: 2 << 20,
                restart: Backoff {
                    initial: Duration::from_secs(1),
                    max: Duration::from_secs(4),
                },
                actions: BTreeMap::from([
                    ("stop".to_string(), Action::System(SystemAction::Halt)),
                    (
                        "note".to_string(),
                        Action::Exec {
                            program: "/bin/true".into(),
                            args: vec!["a".into()],
                        },
                    ),
                ]),
            }
        );
        let string = plugin_file("s", "socket = \"s.sock\"\nformat = \"string\"\n");
        assert_eq!(string.engine_settings().format, PluginFormat::String);
    }

    #[test]
    fn only_active_plugins_run() {
        let config = Config {
            main: main_file(""),
            plugins: vec![
                plugin_file("a", "socket = \"a.sock\"\n"),
                plugin_file("b", "socket = \"b.sock\"\nactive = false\n"),
                plugin_file("c", "socket = \"c.sock\"\n"),
            ],
        };
        let settings = config.engine_settings();
        assert_eq!(settings.core, config.main.core_settings());
        let names: Vec<&str> = settings.plugins.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["a", "c"]);
        assert_eq!(settings.plugins[1], config.plugins[2].engine_settings());
    }

    #[test]
    fn start_only_changes_by_section() {
        let old = main_file("").core_settings();
        let live = main_file("[stats]\nstate_file = \"/x\"\n[shutdown]\ntimeout = \"9s\"\n");
        assert_eq!(old.start_only_changes(&live.core_settings()), []);
        let new = main_file(
            "[input.stdin]\nenabled = false\n[input.socket]\nmode = \"0600\"\n[journal]\nsync = \"never\"\n[events]\nmax_open = 1\n",
        );
        let named: Vec<&str> = old
            .start_only_changes(&new.core_settings())
            .into_iter()
            .map(section_of)
            .collect();
        assert_eq!(
            named,
            ["[journal]", "[input.stdin]", "[input.socket]", "[events]"]
        );
    }
}
