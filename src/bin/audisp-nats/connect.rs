//! The connection to the NATS servers, as both sides make it: every server
//! given (and the cluster members they announce), TLS with rustls,
//! credentials, NKey or token read from root-only files, and reconnection
//! with exponential back-off for as long as the program runs. Connection
//! events are logged and handed to the caller, which turns an outage into
//! its failure action.

use std::path::Path;
use std::time::Duration;

use async_nats::{Client, ConnectOptions, Event};
use audisp::remote::tls::check_key_file;
use tokio::sync::mpsc::UnboundedSender;

use crate::settings::{Auth, Connection};

/// What the caller hears of the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Link {
    /// Connected (again).
    Up,
    /// Lost or refused; the client keeps trying.
    Down(String),
}

/// The first pause between attempts; it doubles up to `retry_max`.
const FIRST_RETRY: Duration = Duration::from_millis(250);

/// Back-off before reconnection attempt `attempt` (1, 2, …).
pub fn backoff(attempt: usize, max: Duration) -> Duration {
    let shift = attempt.saturating_sub(1).min(16) as u32;
    FIRST_RETRY.saturating_mul(1 << shift).min(max)
}

/// A secret read from a file that only root may read (as TLS keys are).
fn secret(path: &Path) -> Result<String, String> {
    check_key_file(path)?;
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// Connection options from the settings; `name` is shown by the server
/// (`connz`), `events` hears of outages. A `persistent` client (the
/// services) keeps trying from the start; another fails at once when no
/// server takes it.
pub fn options(
    c: &Connection,
    name: &str,
    persistent: bool,
    events: UnboundedSender<Link>,
) -> Result<ConnectOptions, String> {
    let mut o = match &c.auth {
        Auth::None => ConnectOptions::new(),
        Auth::Token(p) => ConnectOptions::with_token(secret(p)?),
        Auth::Nkey(p) => ConnectOptions::with_nkey(secret(p)?),
        Auth::Creds(p) => {
            let text = secret(p)?;
            ConnectOptions::with_credentials(&text)
                .map_err(|e| format!("{}: not a credentials file: {e}", p.display()))?
        }
    };
    match (&c.tls.ca, &c.tls.cert, &c.tls.key) {
        (None, None, None) => {}
        (Some(ca), cert, key) => {
            o = o.require_tls(true).add_root_certificates(ca.clone());
            match (cert, key) {
                (None, None) => {}
                (Some(cert), Some(key)) => {
                    check_key_file(key)?;
                    o = o.add_client_certificate(cert.clone(), key.clone());
                }
                _ => {
                    return Err(
                        "TLS: a client certificate needs its key, and a key its certificate".into(),
                    )
                }
            }
        }
        (None, _, _) => {
            return Err(
                "TLS: give the CA that signed the servers' certificates (--tls-ca, [tls] ca)"
                    .into(),
            )
        }
    }
    let max = c.retry_max;
    let servers = c.servers.join(", ");
    if persistent {
        o = o.retry_on_initial_connect();
    }
    Ok(o.name(name)
        .max_reconnects(None)
        .connection_timeout(Duration::from_secs(5))
        // A batch's publishes queue for the connection at once.
        .client_capacity(1 << 16)
        .reconnect_delay_callback(move |attempt| backoff(attempt, max))
        .event_callback(move |e| {
            let events = events.clone();
            let servers = servers.clone();
            async move {
                match e {
                    Event::Connected => {
                        let _ = events.send(Link::Up);
                    }
                    Event::Disconnected => {
                        let _ = events.send(Link::Down(format!(
                            "lost the connection to the NATS servers ({servers})"
                        )));
                    }
                    Event::ClientError(err) => {
                        let _ = events.send(Link::Down(format!(
                            "cannot connect to the NATS servers ({servers}): {err}"
                        )));
                    }
                    Event::ServerError(err) => tracing::warn!("NATS server: {err}"),
                    Event::LameDuckMode => {
                        tracing::info!("a NATS server is shutting down (lame duck mode)")
                    }
                    Event::SlowConsumer(_) | Event::Draining | Event::Closed => {
                        tracing::debug!("NATS: {e}")
                    }
                }
            }
        }))
}

/// Connects (the client keeps reconnecting in the background).
pub async fn connect(c: &Connection, o: ConnectOptions) -> Result<Client, String> {
    o.connect(c.servers.clone())
        .await
        .map_err(|e| format!("cannot connect to {}: {e}", c.servers.join(", ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_limit() {
        let max = Duration::from_secs(30);
        assert_eq!(backoff(1, max), Duration::from_millis(250));
        assert_eq!(backoff(2, max), Duration::from_millis(500));
        assert_eq!(backoff(4, max), Duration::from_secs(2));
        assert_eq!(backoff(9, max), max);
        assert_eq!(backoff(usize::MAX, max), max);
    }
}
