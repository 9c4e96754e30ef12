//! Liveness: proof that every thread that moves records is making progress.
//!
//! Each such thread (the stdin reader, the input connections, every plugin
//! sender, the control loop) owns a [`Heartbeat`] and beats it on every turn
//! of its loop; none of them blocks for more than a second at a time when
//! idle. A supervisor (systemd's watchdog, through the systemd adapter) asks
//! [`Liveness::check`] before saying "alive": a thread stuck in a deadlock or
//! a write that never returns stops beating, the check fails, the watchdog
//! stops being fed and systemd restarts the dispatcher.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

#[derive(Debug)]
struct Beat {
    name: String,
    origin: Instant,
    last_ms: AtomicU64,
}

/// A thread's heartbeat. Dropping every clone unregisters it.
#[derive(Debug, Clone)]
pub struct Heartbeat(Arc<Beat>);

impl Heartbeat {
    /// Records progress now.
    pub fn beat(&self) {
        let ms = self.0.origin.elapsed().as_millis() as u64;
        self.0.last_ms.store(ms, Ordering::Relaxed);
    }

    /// Time since the last beat.
    pub fn age(&self) -> Duration {
        let now = self.0.origin.elapsed().as_millis() as u64;
        Duration::from_millis(now.saturating_sub(self.0.last_ms.load(Ordering::Relaxed)))
    }

    /// What the heartbeat belongs to.
    pub fn name(&self) -> &str {
        &self.0.name
    }
}

/// The set of heartbeats to check.
#[derive(Debug)]
pub struct Liveness {
    origin: Instant,
    beats: Mutex<Vec<Weak<Beat>>>,
}

impl Default for Liveness {
    fn default() -> Self {
        Liveness {
            origin: Instant::now(),
            beats: Mutex::new(Vec::new()),
        }
    }
}

impl Liveness {
    /// An empty set.
    pub fn new() -> Liveness {
        Liveness::default()
    }

    /// Registers a new heartbeat, beating as of now.
    pub fn register(&self, name: &str) -> Heartbeat {
        let beat = Arc::new(Beat {
            name: name.to_string(),
            origin: self.origin,
            last_ms: AtomicU64::new(0),
        });
        let hb = Heartbeat(beat);
        hb.beat();
        let mut beats = self.beats.lock().unwrap_or_else(|p| p.into_inner());
        beats.retain(|b| b.strong_count() > 0);
        beats.push(Arc::downgrade(&hb.0));
        hb
    }

    /// Ok if every registered thread beat within `max_age`; otherwise the
    /// names of those that did not, with how long they have been silent.
    pub fn check(&self, max_age: Duration) -> Result<(), Vec<(String, Duration)>> {
        let beats = self.beats.lock().unwrap_or_else(|p| p.into_inner());
        let stale: Vec<(String, Duration)> = beats
            .iter()
            .filter_map(Weak::upgrade)
            .map(Heartbeat)
            .filter(|h| h.age() > max_age)
            .map(|h| (h.name().to_string(), h.age()))
            .collect();
        if stale.is_empty() {
            Ok(())
        } else {
            Err(stale)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn silent_threads_fail_the_check() {
        let l = Liveness::new();
        let a = l.register("a");
        let b = l.register("b");
        assert!(l.check(Duration::from_secs(5)).is_ok());
        std::thread::sleep(Duration::from_millis(30));
        a.beat();
        let stale = l.check(Duration::from_millis(20)).unwrap_err();
        assert_eq!(stale.len(), 1);
        assert_eq!(stale[0].0, "b");
        drop(b);
        assert!(
            l.check(Duration::from_millis(20)).is_ok(),
            "dropped heartbeats are not checked"
        );
    }
}
