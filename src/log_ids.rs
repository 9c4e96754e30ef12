//! `MESSAGE_ID`s of the log events an administrator alerts on.
//!
//! journald indexes the `MESSAGE_ID` field, so `journalctl MESSAGE_ID=<id>`
//! lists every occurrence of one kind of event whatever its wording, and
//! alerting rules can match on it. The ids are fixed forever; the catalog in
//! `docs/audispd.8.md` explains each one.

/// A plugin's connection or process was lost.
pub const PLUGIN_LOST: &str = "d3455b88a0e046d3a323715aeb1e82f0";
/// A plugin fell further behind than its queue allows; its overflow policy applied.
pub const PLUGIN_OVERFLOW: &str = "bd28520ed5154739b9f2c3a79bf055a5";
/// Records were lost (dropped by policy, evicted from the journal, or unstorable).
pub const RECORD_LOSS: &str = "7ccf227beea847a59269004afb90e0ce";
/// A configuration file is broken (file:line in the message).
pub const CONFIG_ERROR: &str = "93fc59d4b3df4b1dac73c350fde56750";
/// The journal cannot be written.
pub const JOURNAL_ERROR: &str = "6bcc67e9e4ed475fb33040d9a0135217";
/// An input sent bytes that are not records; they were skipped.
pub const INPUT_MALFORMED: &str = "016fc034d1c64d568947670505b2b1bf";
/// A plugin was suspended (overflow policy or action) or resumed.
pub const PLUGIN_SUSPENDED: &str = "e1d09b9ba6e64746bf1798e4ac4077d4";
/// Records of this dispatcher came back on an input (a forwarding loop);
/// they were dropped.
pub const RECORD_LOOP: &str = "5b0c9a3e7d2f4c61a8e4f0b2c9d71e36";
/// A plugin asked for an action and what the dispatcher did.
pub const ACTION: &str = "d8a4b74a629c413eb0e8892f17da8298";
/// An event matched a rule of audisp-alert (its own journal entry, with the
/// rule, the event id and the event's fields).
pub const ALERT_MATCH: &str = "70580dcfad5a40a58c6443292dfd42fe";
