//! audispd's configuration: the optional main file `CONFIG_DIR/audispd.toml`
//! and one file per plugin in `CONFIG_DIR/plugins.d/NAME.toml`, so that
//! installing or removing a plugin never edits a shared file (as with
//! xinetd's or auditd's own plugins.d).
//!
//! [`load`] reads and checks everything and returns the resolved
//! configuration ([`Config`]; [`Config::engine_settings`] is what the engine
//! runs on), plus a [`Diagnostic`] for every problem: each names
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
//!
//! The files of this folder: `paths` ([`Paths`]: where everything is),
//! `model` (the loaded configuration: [`Config`]), `main_file` and
//! `plugin_file` (a reader for each kind of file, built on `doc`, `units`
//! and `files`: TOML documents, values, file and program checks), `load`
//! ([`load`]), `report` ([`check`]), `diagnostic` ([`Diagnostic`]),
//! `string_span` (positions inside a TOML string, for filter expressions),
//! `to_engine` (the engine's settings from a [`Config`]) and
//! [`option_file`].

mod diagnostic;
mod doc;
mod files;
mod load;
mod main_file;
mod model;
pub mod option_file;
mod paths;
mod plugin_file;
mod report;
mod string_span;
mod to_engine;
mod units;

pub use diagnostic::Diagnostic;
pub use load::{load, Loaded};
pub use model::{Config, DbusConfig, MainConfig, PluginConfig, SetroubleshootConfig, StatsConfig};
pub use paths::Paths;
pub use report::{check, report};
pub use to_engine::section_of;
/// Durations as the config files write them (`"500ms"`, `"30s"`; bare
/// digits are seconds), for programs' own options.
pub use units::parse_duration;
/// Sizes as the config files write them (`"64M"`), for plugins' own options.
pub use units::parse_size;

/// The values of plugin keys and of `[journal] sync` are the engine's own
/// vocabulary; the file model uses the engine's types for them.
pub use crate::engine::settings::{
    Action, Backoff, DeliveryMode, FilterAction, FilterRule, InputSelection, Overflow,
    PluginFormat, SyncPolicy, SystemAction, Transport,
};
