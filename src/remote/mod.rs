//! Remote logging: sending records to an aggregator and receiving them there.
//!
//! * [`wire`]: auditd's managed protocol (what stock audisp-remote and
//!   auditd's `tcp_listen_port` speak) and audisp's fast-mode extension.
//! * [`store`]: the receiver's durable store and duplicate suppression.
//! * [`logfile`]: the receiver's auditd-format log with rotation, written
//!   exactly once from the store.
//! * [`server`]: the receiver's connections, and [`slots`]: which of them
//!   may hold one of its limited places.
//! * [`tls`]: TLS 1.3 with mutual certificate authentication.
//! * [`sender`], [`link`]: audisp-remote's spool-to-aggregator loop and its
//!   non-blocking connection.

pub mod link;
pub mod logfile;
pub mod sender;
pub mod server;
pub mod slots;
pub mod store;
pub mod tls;
pub mod wire;
