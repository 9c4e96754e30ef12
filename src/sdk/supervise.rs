//! A plugin under systemd: `READY=1` once it serves (so a plugin unit can
//! be `Type=notify`), and `WATCHDOG=1` from the plugin's own loop, so a
//! plugin whose handler hangs stops pinging and systemd restarts it
//! (`WatchdogSec=` with `Restart=on-failure`). Nothing is sent when no
//! service manager listens.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::systemd::notify::Notifier;

struct Supervisor {
    notifier: Notifier,
    origin: Instant,
    /// Milliseconds since `origin` of the last ping.
    last_ms: AtomicU64,
}

static SUPERVISOR: OnceLock<Supervisor> = OnceLock::new();

/// Reads `$NOTIFY_SOCKET`/`$WATCHDOG_USEC` (leaving the environment as it
/// is) and says the plugin is ready.
pub(super) fn ready(name: &str) {
    let s = SUPERVISOR.get_or_init(|| Supervisor {
        notifier: Notifier::from_env_unchanged(),
        origin: Instant::now(),
        last_ms: AtomicU64::new(0),
    });
    let _ = s
        .notifier
        .ready(&format!("plugin {name} waiting for the dispatcher"));
}

/// Called on every turn of the plugin's loop (at least every half second
/// while idle): feeds the watchdog four times per interval.
pub(super) fn alive() {
    let Some(s) = SUPERVISOR.get() else {
        return;
    };
    let Some(every) = s.notifier.watchdog() else {
        return;
    };
    let now = s.origin.elapsed().as_millis() as u64;
    let due = (every / 4).max(Duration::from_millis(1)).as_millis() as u64;
    if now.saturating_sub(s.last_ms.load(Ordering::Relaxed)) >= due {
        s.last_ms.store(now, Ordering::Relaxed);
        let _ = s.notifier.watchdog_ping();
    }
}
