//! What the engine runs on: its inputs, journal, event assembly, state
//! report and shutdown ([`CoreSettings`]), and one [`PluginSettings`] per
//! plugin it delivers to.
//!
//! These are the engine's own types. Where the values come from (audispd's
//! config files, a test, an embedding program) is the embedder's business:
//! `audisp::config` converts its file model into these at the edge, and
//! settings that only adapters read (D-Bus, the statistics log interval,
//! whether a plugin file is active) never reach the engine.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

pub use crate::filter::Action as FilterAction;
use crate::filter::{Filter, ParseError};
use crate::framing::InputFormat;

/// Everything the engine is started or reloaded with.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// The engine's own settings.
    pub core: CoreSettings,
    /// The plugins to deliver to; every one of them runs.
    pub plugins: Vec<PluginSettings>,
}

/// The engine's own settings, apart from its plugins.
#[derive(Debug, Clone, PartialEq)]
pub struct CoreSettings {
    /// Reading auditd's stream.
    pub stdin: StdinSettings,
    /// The socket input plugins connect to.
    pub input_socket: InputSocketSettings,
    /// Where records wait until every plugin has them.
    pub journal: JournalSettings,
    /// Grouping records into events.
    pub events: EventSettings,
    /// The state report.
    pub stats: StatsSettings,
    /// How long plugins get to catch up on shutdown (and removed plugins to
    /// drain on a reload).
    pub shutdown_timeout: Duration,
    /// Filters of inputs, by input name (`auditd`: standard input): records
    /// they withhold are never journaled.
    pub input_filters: BTreeMap<String, FilterRule>,
}

impl CoreSettings {
    /// The parts read only at start that differ in `new`.
    pub fn start_only_changes(&self, new: &CoreSettings) -> Vec<StartOnly> {
        let mut v = Vec::new();
        if self.journal != new.journal {
            v.push(StartOnly::Journal);
        }
        if self.stdin != new.stdin {
            v.push(StartOnly::Stdin);
        }
        if self.input_socket != new.input_socket {
            v.push(StartOnly::InputSocket);
        }
        if self.events != new.events {
            v.push(StartOnly::Events);
        }
        v
    }
}

/// A part of [`CoreSettings`] read only at start: a reload that changes it
/// keeps the old value, and reports it (`ReloadSummary::needs_restart`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum StartOnly {
    /// [`CoreSettings::stdin`].
    Stdin,
    /// [`CoreSettings::input_socket`].
    InputSocket,
    /// [`CoreSettings::journal`].
    Journal,
    /// [`CoreSettings::events`].
    Events,
}

/// Reading auditd's stream, which the embedder hands over as
/// `Sockets::stdin`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StdinSettings {
    /// Whether the stream is read; when false a stream handed over is
    /// closed unread.
    pub enabled: bool,
    /// How records are framed on it.
    pub format: InputFormat,
}

/// The socket input plugins connect to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputSocketSettings {
    /// Whether to bind `path` when the embedder hands over no listening
    /// socket.
    pub enabled: bool,
    /// Where to bind it.
    pub path: PathBuf,
    /// The socket file's permission bits.
    pub mode: u32,
    /// Uids allowed to connect besides root.
    pub allow_users: Vec<u32>,
    /// Gids whose members may connect.
    pub allow_groups: Vec<u32>,
}

/// The journal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalSettings {
    /// Its directory.
    pub dir: PathBuf,
    /// Bytes on disk before the oldest segments go, read or not.
    pub max_size: u64,
    /// Bytes per segment file.
    pub segment_size: u64,
    /// Bytes of the newest records also kept in memory.
    pub memory: u64,
    /// When writes reach the disk.
    pub sync: SyncPolicy,
    /// How often the journal is flushed (`Batch` and `Interval`).
    pub sync_interval: Duration,
}

/// When journal writes reach the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncPolicy {
    /// Before input is acknowledged.
    Batch,
    /// Every `sync_interval`.
    Interval,
    /// Left to the kernel.
    Never,
}

/// Grouping records into events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventSettings {
    /// An event without its end record is closed after this long.
    pub timeout: Duration,
    /// Most events assembled at once.
    pub max_open: usize,
}

/// The state report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatsSettings {
    /// Where `Engine::write_state_file` writes it.
    pub state_file: PathBuf,
}

/// One plugin the engine delivers to.
#[derive(Debug, Clone, PartialEq)]
pub struct PluginSettings {
    /// Its name (in logs, statistics and its cursor file).
    pub name: String,
    /// How to reach it.
    pub transport: Transport,
    /// What it speaks.
    pub format: PluginFormat,
    /// What a native plugin receives (a `Json` plugin always gets events).
    pub mode: DeliveryMode,
    /// Record types wanted (empty: all), sorted.
    pub include: Vec<u32>,
    /// Record types not wanted, sorted.
    pub exclude: Vec<u32>,
    /// The inputs whose records it gets, when the admin chose them; `None`:
    /// the plugin's own default (all, or only this host's records for a
    /// plugin that asks for that, such as a forwarder).
    pub inputs: Option<InputSelection>,
    /// Fields removed from every record it gets (see
    /// [`crate::format::drop_fields`]).
    pub drop_fields: Vec<String>,
    /// The filter expression that decides which whole events it gets
    /// (`None`: every event).
    pub filter: Option<FilterRule>,
    /// Records of backlog before `overflow` applies.
    pub queue_size: u64,
    /// What happens beyond `queue_size`.
    pub overflow: Overflow,
    /// Most bytes of journal kept for it.
    pub spool_max: u64,
    /// Delays between restarts or reconnects.
    pub restart: Backoff,
    /// What it may ask the engine to do, by action name.
    pub actions: BTreeMap<String, Action>,
}

/// A filter expression (`ausearch-expression(5)`, see [`crate::filter`])
/// and what happens to what it matches: for a plugin, whole events; for
/// an input, single records before they are journaled.
#[derive(Debug, Clone)]
pub struct FilterRule {
    /// The expression as the admin wrote it (what reloads compare).
    pub source: String,
    /// The parsed expression.
    pub filter: Filter,
    /// Whether matches are kept (and the rest withheld) or withheld.
    pub action: FilterAction,
}

impl PartialEq for FilterRule {
    fn eq(&self, other: &FilterRule) -> bool {
        self.source == other.source && self.action == other.action
    }
}

impl FilterRule {
    /// Parses `source`; the error says where it is wrong within `source`.
    pub fn parse(source: &str, action: FilterAction) -> Result<FilterRule, ParseError> {
        Ok(FilterRule {
            source: source.to_string(),
            filter: Filter::parse(source)?,
            action,
        })
    }
}

/// The inputs whose records a plugin gets, by input name (`auditd` names
/// standard input).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InputSelection {
    /// Inputs wanted (empty: all).
    pub include: Vec<String>,
    /// Inputs not wanted.
    pub exclude: Vec<String>,
}

/// How the engine reaches a plugin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transport {
    /// Connect to a plugin listening on this socket (typically a
    /// socket-activated unit).
    Socket(PathBuf),
    /// Start the program (absolute path) with these arguments, its standard
    /// input connected to the engine.
    Exec(Vec<OsString>),
    /// A consumer inside the embedding process (such as the D-Bus adapter),
    /// handed one end of a socket pair per connection by the connector it
    /// registered (`Engine::attach_internal`).
    Internal,
}

/// What a plugin speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PluginFormat {
    /// audisp's acknowledged protocol.
    Native,
    /// auditd's string plugin format: one text record per line.
    String,
    /// auditd's binary plugin format.
    Binary,
    /// One JSON object per whole event and line, as audisp-logfile writes
    /// it ([`crate::format::json`]), for plugins that read standard input.
    Json,
}

/// What a native plugin receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryMode {
    /// Records one by one.
    Records,
    /// Whole events (native plugins; `Json` plugins always get events).
    Events,
}

/// What happens when a plugin is `queue_size` records behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overflow {
    /// Keep its records in the journal on disk, up to `spool_max`.
    Spool,
    /// Drop what it cannot take.
    Drop,
    /// Stop sending to it until it is resumed.
    Suspend,
}

/// The delay before restarting or reconnecting starts at `initial` and
/// doubles up to `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The first delay.
    pub initial: Duration,
    /// The longest delay.
    pub max: Duration,
}

/// What the engine does when a plugin asks for an action by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Acknowledge and do nothing.
    Ignore,
    /// Log the request.
    Log,
    /// Run `program` with `args`, then the plugin's arguments, never
    /// through a shell.
    Exec {
        /// Absolute path of the program.
        program: PathBuf,
        /// Arguments before the plugin's.
        args: Vec<String>,
    },
    /// Suspend the plugin.
    Suspend,
    /// A system state change, carried out by the embedder's hook (the
    /// `audispd` binary asks systemd over D-Bus).
    System(SystemAction),
}

/// A system state change the service manager is asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SystemAction {
    /// Isolate `rescue.target` (what `systemctl rescue` does).
    SingleUser,
    /// Start `halt.target`, replacing every queued job.
    Halt,
    /// Start `poweroff.target`, replacing every queued job.
    Poweroff,
}

impl SystemAction {
    /// The action's name in logs and replies (`single-user`, `halt`,
    /// `poweroff`).
    pub fn name(self) -> &'static str {
        match self {
            SystemAction::SingleUser => "single-user",
            SystemAction::Halt => "halt",
            SystemAction::Poweroff => "poweroff",
        }
    }
}
