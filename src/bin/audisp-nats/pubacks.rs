//! Publishing a batch and collecting its PubAcks with the core protocol:
//! every message goes out with a reply subject under one inbox this
//! publisher subscribed to (`INBOX.<round>.<index>`), and the PubAcks come
//! back on that one subscription. That is what JetStream's publish is
//! underneath, without a request, a channel and a timer per message: a
//! batch of thousands costs a few microseconds per record and one round
//! trip.

use std::collections::HashSet;
use std::time::Duration;

use async_nats::header::{HeaderMap, NATS_EXPECTED_STREAM, NATS_MESSAGE_ID};
use async_nats::{Client, StatusCode, Subscriber};
use bytes::Bytes;
use futures_util::StreamExt;
use serde::Deserialize;

use crate::message::{ORIGIN_HEADER, SEQS_HEADER};

/// One message ready to go.
pub struct Item {
    pub subject: String,
    /// `Nats-Msg-Id`.
    pub id: String,
    /// `Audisp-Origin` and `Audisp-Seqs`: who numbered the records, and
    /// their numbers.
    pub origin: String,
    pub seqs: String,
    pub payload: Bytes,
}

/// Why messages of a round are not stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failed {
    /// No PubAck within the timeout (or the connection is gone).
    NoAck(String),
    /// No stream answered: none captures the subject, or it has no leader
    /// right now.
    NoResponders,
    /// The stream answered with an error (its description).
    Stream(String),
}

impl std::fmt::Display for Failed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failed::NoAck(why) => write!(f, "no PubAck: {why}"),
            Failed::NoResponders => write!(f, "no stream answered (no responders)"),
            Failed::Stream(d) => write!(f, "the stream refused: {d}"),
        }
    }
}

/// A PubAck (or a JetStream error) as the server writes it.
#[derive(Deserialize)]
struct Reply {
    #[serde(default)]
    duplicate: bool,
    error: Option<ApiError>,
}

#[derive(Deserialize)]
struct ApiError {
    #[serde(default)]
    description: String,
}

/// What a round achieved.
pub struct Round {
    /// Messages the stream had already (resends).
    pub duplicates: usize,
    /// Indexes (into the items) not stored, with the first reason.
    pub left: Vec<usize>,
    pub failure: Option<Failed>,
}

/// The publisher's inbox and what it needs to tell rounds apart.
pub struct Publisher {
    client: Client,
    inbox: String,
    replies: Subscriber,
    stream: String,
    round: u64,
    timeout: Duration,
}

impl Publisher {
    /// Subscribes to a fresh inbox.
    pub async fn new(client: Client, stream: &str, timeout: Duration) -> Result<Publisher, String> {
        let inbox = client.new_inbox();
        let replies = client
            .subscribe(format!("{inbox}.>"))
            .await
            .map_err(|e| format!("cannot subscribe to the PubAck inbox: {e}"))?;
        Ok(Publisher {
            client,
            inbox,
            replies,
            stream: stream.to_string(),
            round: 0,
            timeout,
        })
    }

    /// Publishes `todo` (indexes into `items`) and waits for their PubAcks,
    /// at most `timeout` after the last one went out.
    pub async fn round(&mut self, items: &[Item], todo: &[usize]) -> Round {
        self.round += 1;
        let prefix = format!("{}.{}.", self.inbox, self.round);
        let mut waiting: HashSet<usize> = HashSet::with_capacity(todo.len());
        let mut out = Round {
            duplicates: 0,
            left: Vec::new(),
            failure: None,
        };
        for &i in todo {
            let it = &items[i];
            let mut headers = HeaderMap::new();
            headers.insert(NATS_MESSAGE_ID, it.id.as_str());
            headers.insert(NATS_EXPECTED_STREAM, self.stream.as_str());
            headers.insert(ORIGIN_HEADER, it.origin.as_str());
            headers.insert(SEQS_HEADER, it.seqs.as_str());
            let sent = self
                .client
                .publish_with_reply_and_headers(
                    it.subject.clone(),
                    format!("{prefix}{i}"),
                    headers,
                    it.payload.clone(),
                )
                .await;
            match sent {
                Ok(()) => {
                    waiting.insert(i);
                }
                Err(e) => {
                    out.left.push(i);
                    out.failure
                        .get_or_insert_with(|| Failed::NoAck(e.to_string()));
                }
            }
        }
        let deadline = tokio::time::Instant::now() + self.timeout;
        while !waiting.is_empty() {
            let msg = match tokio::time::timeout_at(deadline, self.replies.next()).await {
                Ok(Some(m)) => m,
                Ok(None) => {
                    out.failure.get_or_insert_with(|| {
                        Failed::NoAck("the inbox subscription ended".into())
                    });
                    break;
                }
                Err(_) => {
                    out.failure.get_or_insert_with(|| {
                        Failed::NoAck(format!("none within {:?}", self.timeout))
                    });
                    break;
                }
            };
            // A late answer to an earlier round is ignored: its message was
            // sent again in this one.
            let Some(i) = msg
                .subject
                .strip_prefix(&prefix)
                .and_then(|k| k.parse::<usize>().ok())
            else {
                continue;
            };
            if !waiting.remove(&i) {
                continue;
            }
            if msg.status == Some(StatusCode::NO_RESPONDERS) {
                out.left.push(i);
                out.failure.get_or_insert(Failed::NoResponders);
                continue;
            }
            match serde_json::from_slice::<Reply>(&msg.payload) {
                Ok(Reply {
                    error: None,
                    duplicate,
                }) => out.duplicates += usize::from(duplicate),
                Ok(Reply { error: Some(e), .. }) => {
                    out.left.push(i);
                    out.failure.get_or_insert(Failed::Stream(e.description));
                }
                Err(e) => {
                    out.left.push(i);
                    out.failure.get_or_insert_with(|| {
                        Failed::Stream(format!("an answer that is not a PubAck: {e}"))
                    });
                }
            }
        }
        out.left.extend(waiting);
        out.left.sort_unstable();
        out
    }
}
