//! The systemd edge: what audisp's programs need from the service manager
//! and the journal, kept out of the engine.
//!
//! * [`activation`]: sockets systemd passed (`LISTEN_FDS`, by name).
//! * [`notify`]: `READY=1`, `STATUS=`, `RELOADING=1`, watchdog pings.
//! * [`journald`]: entries of our own sent to journald natively
//!   (plugins that journal what they see).
//! * [`logging`]: the log goes to journald natively when systemd connected
//!   standard error to the journal, to standard error otherwise.
//!
//! The `MESSAGE_ID` catalog ([`crate::log_ids`]) is not here: the engine
//! names the events it logs with those ids, and the engine imports nothing
//! from this folder.

pub mod activation;
pub mod journald;
#[cfg(feature = "dispatcher")]
pub mod logging;
pub mod notify;
