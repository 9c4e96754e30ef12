//! The configuration as loaded: what `audispd.toml` and each
//! `plugins.d/NAME.toml` say, checked and resolved (relative paths made
//! absolute, names turned into ids). Values the engine acts on use the
//! engine's own types (`engine::settings`); `to_engine` hands them over.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use crate::engine::settings::{
    Action, Backoff, DeliveryMode, EventSettings, FilterRule, InputSelection, InputSocketSettings,
    JournalSettings, Overflow, PluginFormat, StdinSettings, Transport,
};

/// audispd's configuration: the main file and every plugin file.
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
    /// `[input.NAME] filter, filter_action`: records of input NAME
    /// (`auditd`: standard input) kept or withheld one by one before they
    /// are journaled.
    pub input_filters: BTreeMap<String, FilterRule>,
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
    /// `inputs`, `exclude_inputs`: the inputs whose records it gets; `None`
    /// when neither key is there (the plugin's own default).
    pub inputs: Option<InputSelection>,
    /// `drop_fields`: fields removed from every record it gets, sorted.
    pub drop_fields: Vec<String>,
    /// `filter`, `filter_action`: which whole events it gets.
    pub filter: Option<FilterRule>,
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
