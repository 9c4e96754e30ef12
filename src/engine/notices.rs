//! Notices plugins send (`NOTIFY`: an event matched one of their rules),
//! handed to whoever announces them.
//!
//! The engine announces nothing itself: the embedder installs a hook
//! ([`Notices::set_hook`]; `audispd` emits the D-Bus `Match` signal). A
//! notice runs the hook on the plugin's sender thread, so the hook must not
//! block (the D-Bus adapter queues). Each plugin may announce at most
//! [`PER_SECOND`] notices a second; the rest are dropped here and counted,
//! and their number is added to the `suppressed` count of that plugin's
//! next notice that goes through, so a subscriber still learns how many
//! matches it did not hear of.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::protocol::Notice;

/// Most notices one plugin announces per second.
pub const PER_SECOND: u32 = 50;

/// Announces a plugin's notice: the plugin's name and the notice.
pub type NoticeHook = Arc<dyn Fn(&str, Notice) + Send + Sync>;

/// One plugin's rate window.
#[derive(Debug)]
struct Window {
    start: Instant,
    sent: u32,
    /// Dropped since the last notice that went through.
    dropped: u64,
}

/// Takes notices from every plugin and passes them to the hook, within the
/// rate limit.
#[derive(Default)]
pub struct Notices {
    hook: Mutex<Option<NoticeHook>>,
    windows: Mutex<HashMap<String, Window>>,
}

impl Notices {
    /// No hook yet: notices are dropped (and logged at debug level).
    pub fn new() -> Notices {
        Notices::default()
    }

    /// Installs the embedder's announcer.
    pub fn set_hook(&self, hook: NoticeHook) {
        *self.hook.lock().unwrap_or_else(|p| p.into_inner()) = Some(hook);
    }

    /// Takes `notice` from `plugin` at `now`: announces it (with the count
    /// of this plugin's notices dropped before it added to `suppressed`),
    /// or drops it when the plugin is over its rate. Returns whether it
    /// went to the hook.
    pub fn offer(&self, plugin: &str, mut notice: Notice, now: Instant) -> bool {
        {
            let mut windows = self.windows.lock().unwrap_or_else(|p| p.into_inner());
            let w = windows.entry(plugin.to_string()).or_insert(Window {
                start: now,
                sent: 0,
                dropped: 0,
            });
            if now.duration_since(w.start) >= Duration::from_secs(1) {
                w.start = now;
                w.sent = 0;
            }
            if w.sent >= PER_SECOND {
                w.dropped += 1;
                if w.dropped == 1 {
                    tracing::warn!(
                        plugin,
                        "plugin {plugin} sends more than {PER_SECOND} notices a second; the rest are counted in the next one's suppressed count"
                    );
                }
                return false;
            }
            w.sent += 1;
            notice.suppressed = notice.suppressed.saturating_add(w.dropped);
            w.dropped = 0;
        }
        let hook = self.hook.lock().unwrap_or_else(|p| p.into_inner()).clone();
        match hook {
            Some(h) => {
                h(plugin, notice);
                true
            }
            None => {
                tracing::debug!(plugin, rule = %notice.rule, "notice not announced: no announcer");
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notice(rule: &str) -> Notice {
        Notice {
            rule: rule.into(),
            event: "audit(1.000:1)".into(),
            summary: "s".into(),
            suppressed: 0,
        }
    }

    #[test]
    fn over_the_rate_notices_are_counted_into_the_next() {
        let n = Notices::new();
        let got = Arc::new(Mutex::new(Vec::new()));
        let g = got.clone();
        n.set_hook(Arc::new(move |p, x| {
            g.lock().unwrap().push((p.to_string(), x))
        }));
        let t0 = Instant::now();
        for _ in 0..PER_SECOND + 3 {
            n.offer("alert", notice("r"), t0);
        }
        // Another plugin has its own window.
        assert!(n.offer("other", notice("q"), t0));
        assert_eq!(got.lock().unwrap().len(), PER_SECOND as usize + 1);
        assert!(got.lock().unwrap().iter().all(|(_, x)| x.suppressed == 0));
        // A second later: the next one carries the three dropped.
        let mut x = notice("r");
        x.suppressed = 2;
        assert!(n.offer("alert", x, t0 + Duration::from_secs(1)));
        let last = got.lock().unwrap().last().cloned().unwrap();
        assert_eq!((last.0.as_str(), last.1.suppressed), ("alert", 5));
        assert!(n.offer("alert", notice("r"), t0 + Duration::from_secs(1)));
        assert_eq!(got.lock().unwrap().last().unwrap().1.suppressed, 0);
    }

    #[test]
    fn without_a_hook_nothing_is_announced() {
        assert!(!Notices::new().offer("alert", notice("r"), Instant::now()));
    }
}
