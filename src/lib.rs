//! audisp: a systemd-native audit event dispatcher.
//!
//! auditd hands every audit record to its plugins on a pipe, through one
//! shared queue with blocking writes: one slow or dead plugin stalls them all
//! and auditd then drops records. audisp takes that stream (or records from
//! input plugins) and fans it out to plugins that are separate programs —
//! typically separate, socket-activated systemd units — so that no plugin can
//! slow down, block or crash auditd or another plugin, and no record is lost
//! on the way.
//!
//! # Design
//!
//! ```text
//!  auditd ──stdin──┐                       ┌── sender ──▶ plugin (native protocol, SEQPACKET)
//!                  ├─▶ ingest ─▶ journal ──┼── sender ──▶ plugin (auditd string/binary on a stream)
//!  input plugins ──┘   (dedup,   (disk +   └── sender ──▶ …
//!  (input socket)       events)   memory)      one per plugin, each a cursor into the journal
//! ```
//!
//! * **Inputs** ([`engine::inputs`]): auditd's stream on standard input, cut
//!   into records by [`framing`] (string or binary, padded or exact frames),
//!   and input plugins on a `SOCK_SEQPACKET` socket speaking [`protocol`].
//!   Only as much is parsed as routing needs ([`record`]: type, time, serial,
//!   node).
//! * **Ingest** ([`engine::ingest`]): drops what an input resends, places
//!   each record in an event ([`engine::events`]) and appends it to the journal.
//! * **The [`journal`]**: every record, once, in order, with a sequence
//!   number that never changes. Its newest part is also in memory. It is
//!   the queue of every plugin at once: a plugin is just a cursor into it, so
//!   a slow or absent plugin costs disk, never memory, and resumes exactly
//!   where it was after any restart — its own or the dispatcher's.
//! * **Senders** ([`engine::plugin`]): one thread per plugin, non-blocking
//!   I/O only, batching when there is a backlog, resending whatever was not
//!   acknowledged, applying the plugin's overflow policy and subscription
//!   ([`engine::subscription`]), running the actions a plugin may ask for
//!   ([`engine::actions`]). A stock plugin's sender that waits for records
//!   lends its next round to the input thread that appends them
//!   ([`journal::HandOff`]): under load, waking a thread per round costs
//!   more than the round itself.
//! * **The engine** ([`engine`]) ties these together and is driven by its
//!   embedder: the `audispd` binary adds configuration ([`config`], turned
//!   into the engine's own [`engine::settings`]), signals, logging, the
//!   service manager ([`systemd::notify`]), the D-Bus interface ([`dbus`])
//!   and the metrics endpoint ([`metrics`]); it knows nothing of config
//!   files, systemd, D-Bus, HTTP or journald itself.
//! * **Plugins** are written with the [`sdk`] in a few lines, or in any
//!   language against `docs/protocol.md`; stock auditd plugins work
//!   unmodified.
//!
//! # Delivery guarantees
//!
//! A record an input handed over is in the journal before the input is told
//! so (on stable storage, with the default `sync = "batch"`). A plugin gets
//! every record it subscribed to, in journal order, and is sent again
//! whatever it had not acknowledged when its connection ends. Sequence numbers
//! let a plugin drop what it already has, so code written with the SDK sees
//! each record exactly once. Records are lost only by an explicit policy
//! (`overflow = "drop"`/`"suspend"`, a size limit) and then counted and
//! logged with a `MESSAGE_ID` ([`log_ids`]).
//!
//! # Features
//!
//! The core — [`protocol`], [`record`], [`record_types`], [`framing`],
//! [`uds`], [`trust`], [`statefile`], [`statelock`], [`signals`],
//! [`log_ids`], [`hex`], [`journal_id`], [`systemd::activation`] and
//! [`systemd::notify`] — needs only `libc`, `nix` and `memchr` and is
//! always built. The rest is
//! behind features, all on by default (the programs need them all):
//!
//! | feature | adds | pulls in |
//! |---|---|---|
//! | `sdk` | [`sdk`] | serde_json, signal-hook |
//! | `format` | [`format`](mod@format) (records as JSON) | serde_json |
//! | `config` | [`config`] | toml, lexopt |
//! | `filter` | [`filter`] (filter expressions); `format` | regex |
//! | `dispatcher` | [`engine`], [`journal`], [`systemd::logging`]; `config`, `format`, `filter` | crc32c, getrandom, rustc-hash, serde, tracing, tracing-subscriber, tracing-journald |
//! | `dbus` | [`dbus`]; `dispatcher`, `sdk` | zbus |
//! | `remote` | [`remote`]; `dispatcher`, `sdk` | rustls, ring, thiserror |
//! | `logfile` | audisp-logfile's gzip/zstd; `sdk`, `format`, `config` | flate2, zstd |
//! | `af_unix` | the audisp-af_unix program; `sdk`, `config` | — |
//! | `mail` | the audisp-mail program; `sdk`, `format`, `config` | lettre (rustls) |
//! | `metrics` | [`metrics`] (Prometheus/OpenMetrics endpoint); `dispatcher` | — |
//!
//! A plugin needs only the SDK:
//! `audisp = { version = "…", default-features = false, features = ["sdk"] }`
//! (with `"format"` for JSON).

#[cfg(feature = "config")]
pub mod config;
#[cfg(feature = "dbus")]
pub mod dbus;
#[cfg(feature = "dispatcher")]
pub mod engine;
#[cfg(feature = "filter")]
pub mod filter;
#[cfg(feature = "format")]
pub mod format;
pub mod framing;
pub mod hex;
#[cfg(feature = "dispatcher")]
pub mod journal;
pub mod journal_id;
pub mod log_ids;
#[cfg(feature = "metrics")]
pub mod metrics;
pub mod protocol;
pub mod record;
pub mod record_types;
#[cfg(feature = "remote")]
pub mod remote;
#[cfg(feature = "sdk")]
pub mod sdk;
pub mod signals;
pub mod statefile;
pub mod statelock;
pub mod systemd;
pub mod trust;
pub mod uds;
