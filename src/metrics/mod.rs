//! The metrics adapter: the engine's counters for Prometheus and any
//! OpenMetrics scraper, on a socket the service manager passes
//! (`audisp-metrics.socket`, `FileDescriptorName=metrics`).
//!
//! The engine knows nothing of HTTP. [`start`] serves, on a thread of its
//! own, `GET /metrics` with what [`Engine::snapshot`] returns — the
//! counters of the state report — and the process's own figures
//! ([`process`]), written by [`exposition`]; [`http`] is the small,
//! bounded responder. Nothing here takes a lock the dispatcher's threads
//! wait on for longer than a snapshot takes, and no client can hold the
//! thread: a slow or hostile scraper costs at most a slot among
//! [`http::Limits::max_connections`] for a few seconds.
//!
//! `docs/audispd.8.md` (METRICS) lists every metric.

pub mod exposition;
pub mod http;
pub mod process;

use std::io;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use crate::engine::Engine;
use crate::journal::Wakeup;
use exposition::Format;
use http::{Request, Response};

/// The one path served.
pub const PATH: &str = "/metrics";

/// The running endpoint; dropping it stops the thread.
pub struct Endpoint {
    stop: Arc<Wakeup>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        self.stop.wake();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Serves the metrics of `engine` on `listener` (a listening stream
/// socket: TCP or `AF_UNIX`) until the returned [`Endpoint`] is dropped.
/// `version` goes into `audisp_build_info`.
pub fn start(engine: Arc<Engine>, listener: OwnedFd, version: &str) -> io::Result<Endpoint> {
    let stop = Arc::new(Wakeup::new()?);
    let version = version.to_string();
    let s = stop.clone();
    let thread = std::thread::Builder::new()
        .name("metrics".into())
        .spawn(move || {
            let process_unreadable = AtomicBool::new(false);
            let answer = |req: &Request| respond(&engine, &version, &process_unreadable, req);
            http::serve(&listener, http::Limits::default(), &s, &answer);
        })?;
    Ok(Endpoint {
        stop,
        thread: Some(thread),
    })
}

/// The answer to a checked request.
fn respond(
    engine: &Engine,
    version: &str,
    process_unreadable: &AtomicBool,
    req: &Request,
) -> Response {
    if req.path != PATH {
        return Response::text(404, &format!("not found; the metrics are at {PATH}"));
    }
    let process = match process::read() {
        Ok(p) => Some(p),
        Err(e) => {
            // Said once: a scraper asks every few seconds.
            if !process_unreadable.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    "metrics endpoint: cannot read the process's figures ({e}); serving the others"
                );
            }
            None
        }
    };
    let format = Format::negotiate(req.accept.as_deref());
    Response {
        status: 200,
        content_type: format.content_type().to_string(),
        body: exposition::render(&engine.snapshot(), process.as_ref(), version, format)
            .into_bytes(),
    }
}
