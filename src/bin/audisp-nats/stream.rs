//! `audisp-nats create-stream`: makes the stream with the settings the
//! exactly-once promise rests on — file storage, a duplicate window that
//! covers resends, discarding *new* messages when a limit is reached (so a
//! full stream refuses, and audispd keeps the records, instead of deleting
//! old ones nobody consumed) — or, if it exists, says which of them it
//! lacks. Debian's nats-server comes without the `nats` tool; this is
//! enough to set up the fleet's stream.

use std::time::Duration;

use async_nats::jetstream::stream::{Config, DiscardPolicy, RetentionPolicy, StorageType};
use tokio::sync::mpsc::unbounded_channel;

use crate::connect;
use crate::settings::{Opts, Retention, Storage};

/// The shortest duplicate window that covers a plugin restart and a few
/// reconnection attempts.
const SHORT_WINDOW: Duration = Duration::from_secs(60);

/// What an existing stream's settings weaken, one line each.
fn weaknesses(c: &Config) -> Vec<String> {
    let mut out = Vec::new();
    if c.storage != StorageType::File {
        out.push("memory storage: a server restart loses the stream".to_string());
    }
    if c.duplicate_window < SHORT_WINDOW {
        out.push(format!(
            "duplicate window {:?}: a record sent again after a longer outage is stored twice",
            c.duplicate_window
        ));
    }
    let limited = c.max_bytes > 0 || c.max_messages > 0 || c.max_messages_per_subject > 0;
    if limited && c.discard == DiscardPolicy::Old {
        out.push(
            "discard old: at a limit the oldest messages are deleted, consumed or not (discard new refuses instead, and audispd keeps the records)"
                .to_string(),
        );
    }
    if c.num_replicas < 3 {
        out.push(format!(
            "{} replica(s): a PubAck means stored on {} server(s) only",
            c.num_replicas, c.num_replicas
        ));
    }
    out
}

/// Creates the stream, or reports on the existing one.
pub fn create(o: Opts) -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the NATS client's runtime: {e}"))?;
    rt.block_on(async {
        let (tx, _rx) = unbounded_channel();
        let options = connect::options(&o.connection, "audisp-nats create-stream", false, tx)?;
        let client = connect::connect(&o.connection, options).await?;
        let js = async_nats::jetstream::new(client);
        let name = &o.connection.stream;
        let s = &o.stream;
        let wanted = Config {
            name: name.clone(),
            subjects: vec![s.subjects.clone()],
            storage: match s.storage {
                Storage::File => StorageType::File,
                Storage::Memory => StorageType::Memory,
            },
            num_replicas: s.replicas,
            duplicate_window: s.duplicate_window,
            max_age: s.max_age,
            max_bytes: s
                .max_bytes
                .map_or(-1, |b| i64::try_from(b).unwrap_or(i64::MAX)),
            discard: DiscardPolicy::New,
            retention: match s.retention {
                Retention::Limits => RetentionPolicy::Limits,
                Retention::Interest => RetentionPolicy::Interest,
                Retention::WorkQueue => RetentionPolicy::WorkQueue,
            },
            ..Default::default()
        };
        let config = match js.get_stream(name).await {
            Ok(mut existing) => {
                let info = existing
                    .info()
                    .await
                    .map_err(|e| format!("stream {name:?}: {e}"))?;
                println!("stream {name:?} exists; left as it is");
                info.config.clone()
            }
            Err(_) => {
                let mut made = js
                    .create_stream(wanted)
                    .await
                    .map_err(|e| format!("cannot create stream {name:?}: {e}"))?;
                let info = made
                    .info()
                    .await
                    .map_err(|e| format!("stream {name:?}: {e}"))?;
                println!("stream {name:?} created");
                info.config.clone()
            }
        };
        println!(
            "subjects {:?}, {:?} storage, {} replica(s), duplicate window {:?}, retention {:?}, discard {:?}",
            config.subjects,
            config.storage,
            config.num_replicas,
            config.duplicate_window,
            config.retention,
            config.discard
        );
        for w in weaknesses(&config) {
            println!("note: {w}");
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weak_settings_are_named() {
        let good = Config {
            storage: StorageType::File,
            duplicate_window: Duration::from_secs(120),
            num_replicas: 3,
            max_bytes: 1 << 30,
            discard: DiscardPolicy::New,
            ..Default::default()
        };
        assert!(weaknesses(&good).is_empty(), "{:?}", weaknesses(&good));
        let weak = Config {
            storage: StorageType::Memory,
            duplicate_window: Duration::from_secs(10),
            num_replicas: 1,
            max_bytes: 1 << 30,
            discard: DiscardPolicy::Old,
            ..Default::default()
        };
        assert_eq!(weaknesses(&weak).len(), 4);
    }
}
