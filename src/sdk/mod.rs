//! The plugin SDK: write an audisp plugin in a few lines.
//!
//! An output plugin is a closure that receives batches of records (or of
//! whole events); the SDK does the rest:
//!
//! * finds its connection to the dispatcher, however the plugin was started:
//!   by `audispd` itself (a `SOCK_SEQPACKET` socket on standard input), by
//!   systemd socket activation (`LISTEN_FDS`), or standalone on a socket path
//!   it binds ([`Plugin::listen`]);
//! * says hello with the plugin's name, subscription and resume point;
//! * calls the closure once per batch, and acknowledges the batch only when
//!   the closure returned `Ok`: a plugin that crashes mid-batch gets the
//!   batch again;
//! * drops records it has already handled, so the closure sees every record
//!   exactly once: within one process always, and across restarts when the
//!   plugin tells the SDK where it got to ([`Plugin::resume_after`], from the
//!   plugin's own storage) or lets the SDK remember it
//!   ([`Plugin::checkpoint_file`]);
//! * lets the closure ask the dispatcher for an admin-configured action
//!   ([`Context::command`]) or for its counters ([`Context::stats`]), and
//!   other threads of the plugin queue such actions ([`Plugin::commands`])
//!   that go out between batches or within half a second when idle;
//! * calls the closure at intervals with an empty batch if asked to
//!   ([`Plugin::tick`]), for plugins that report periodically;
//! * lets a closure that must wait on purpose (for room in its own storage)
//!   do so with [`Context::idle`], which keeps the watchdog fed and queued
//!   commands flowing;
//! * under systemd, sends `READY=1` once it serves and feeds the watchdog
//!   from its own loop, so a plugin unit can be `Type=notify` with
//!   `WatchdogSec=`, and a handler that hangs gets the plugin restarted;
//! * stops cleanly on SIGTERM or SIGINT, keeping any handler the program
//!   installed for them ([`Plugin::run`] says how).
//!
//! ```no_run
//! use audisp::sdk::Plugin;
//!
//! fn main() -> Result<(), audisp::sdk::Error> {
//!     let mut seen = 0u64;
//!     Plugin::new("counter").events().run(|batch, _ctx| {
//!         for event in batch.events() {
//!             seen += 1;
//!             println!("event {seen}: {} records", event.records().len());
//!         }
//!         Ok(())
//!     })
//! }
//! ```
//!
//! Input plugins use [`InputClient`] to feed records into the dispatcher.

mod batch;
mod input;
mod options;
mod plugin;
#[cfg(feature = "dispatcher")]
mod relay;
mod supervise;

pub use batch::{Batch, Event, Record, Upto};
pub use input::InputClient;
pub use options::PluginOptions;
pub use plugin::{Command, Context, Plugin};
#[cfg(feature = "dispatcher")]
pub use relay::{
    flag_value, stop_signals, Offer, Relay, RelayConfig, RelayOptions, Returned,
    DEFAULT_STALL_LIMIT,
};

use std::fmt;

/// What can go wrong in a plugin's life.
#[derive(Debug)]
pub enum Error {
    /// The plugin was set up wrongly (unknown type name, no connection).
    Setup(String),
    /// The connection failed or the dispatcher broke the protocol.
    Connection(String),
    /// The dispatcher refused the plugin (the reason is its own).
    Rejected(String),
    /// The plugin's handler failed; its batch was not acknowledged.
    Handler(Box<dyn std::error::Error + Send + Sync>),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Setup(s) => write!(f, "plugin setup: {s}"),
            Error::Connection(s) => write!(f, "connection to the dispatcher: {s}"),
            Error::Rejected(s) => write!(f, "the dispatcher refused this plugin: {s}"),
            Error::Handler(e) => write!(f, "plugin handler failed: {e}"),
        }
    }
}

impl std::error::Error for Error {}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::Connection(e.to_string())
    }
}
