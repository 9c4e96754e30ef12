//! The loop guard: the engine's last defence against forwarding loops.
//!
//! Routing by origin ([`super::routes`]) keeps a forwarder from sending
//! received records out again unless the admin asks for it. When the admin
//! does (a relay tier) and the relays form a cycle, records would come back
//! forever. Every forwarded record carries its first origin (the journal it
//! was first stored in and its sequence number there; audisp-remote sends
//! it, audisp-receive hands it in with the record), so the ingest stage
//! recognises a record of its own journal coming back: it drops it before it
//! is journaled, counts it per input (`looped`), and warns, at most once per
//! [`super::loss::INTERVAL`], naming the input and the plugins that forward
//! that input's records. Records of other hosts always pass.

use std::sync::Arc;

/// Names the plugins that forward the records of the input called so.
pub type Forwarders = Arc<dyn Fn(&str) -> Vec<String> + Send + Sync>;

/// Logs that `since_last` records of this dispatcher (`total` in all) came
/// back on `input`.
pub fn warn(input: &str, since_last: u64, total: u64, forwarders: &[String]) {
    let plugins = if forwarders.is_empty() {
        "none named in plugins.d".to_string()
    } else {
        forwarders.join(", ")
    };
    tracing::warn!(
        message_id = crate::log_ids::RECORD_LOOP,
        input,
        looped = since_last,
        total,
        "records of this host came back on input '{input}' ({since_last} now, {total} so far): \
         a forwarding loop; they were dropped. Plugins forwarding this input's records: {plugins}"
    );
}
