//! `org.audisp.Dispatcher1` on `/org/audisp/Dispatcher1`: the engine's
//! operations (statistics, plugin list, reload, suspend/resume) and the
//! signals, as a versioned D-Bus interface. `dbus/org.audisp.Dispatcher1.xml`
//! is its introspection; `docs/dbus.md` documents it.
//!
//! Access: the bus policy (`dbus/org.audisp.Dispatcher1.conf`) lets only
//! root own the name and call what changes state, and lets root and the
//! group `audisp` read. The service checks again itself (defence in depth,
//! and so that `[dbus] read_groups` decides who reads): mutating methods
//! need uid 0, reading methods uid 0 or a member of a configured group.

// The AvcDenial signal carries one argument per field a notifier shows,
// and zbus generates an emitter function with one parameter per argument.
#![allow(clippy::too_many_arguments)]

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use zbus::fdo;
use zbus::message::Header;
use zbus::object_server::SignalEmitter;

use super::setroubleshoot::Counters;
use crate::engine::{Engine, ReloadSummary};
use crate::record_types;

/// Runs a reload the way the embedder does on SIGHUP.
pub type ReloadHook = Arc<dyn Fn() -> Result<Reloaded, String> + Send + Sync>;

/// What a reload did, as the embedder reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reloaded {
    /// The engine's account of it.
    pub summary: ReloadSummary,
    /// Config-file sections (`[journal]`, `[dbus]`) whose changes wait for
    /// a restart: the engine's start-only settings and the embedder's own.
    pub needs_restart: Vec<String>,
}

/// Who asked for which record types (unique bus name → types; empty set
/// means every type).
#[derive(Default)]
pub struct Subscribers {
    by_name: Mutex<HashMap<String, BTreeSet<u32>>>,
}

impl Subscribers {
    /// The subscribers that want an event with these record types.
    pub fn wanting(&self, types: &[u32]) -> Vec<String> {
        let by_name = self.by_name.lock().unwrap_or_else(|p| p.into_inner());
        by_name
            .iter()
            .filter(|(_, want)| want.is_empty() || types.iter().any(|t| want.contains(t)))
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// Whether anyone subscribed.
    pub fn any(&self) -> bool {
        !self
            .by_name
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_empty()
    }

    /// Forgets a connection (it left the bus or unsubscribed).
    pub fn remove(&self, name: &str) -> bool {
        self.by_name
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name)
            .is_some()
    }

    /// Forgets everyone: their unique names died with a lost bus connection.
    pub fn clear(&self) {
        self.by_name
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    fn insert(&self, name: String, types: BTreeSet<u32>) {
        self.by_name
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name, types);
    }
}

/// The object served at [`super::PATH`] (cloned onto every new bus
/// connection).
#[derive(Clone)]
pub struct Api {
    /// The engine.
    pub engine: Arc<Engine>,
    /// Reload as on SIGHUP.
    pub reload: ReloadHook,
    /// The setroubleshoot forwarder's counters, when it runs.
    pub forwarder: Option<Arc<Counters>>,
    /// Event subscribers.
    pub subscribers: Arc<Subscribers>,
    /// Groups whose members may read (root always may).
    pub read_groups: Vec<u32>,
}

enum Need {
    Read,
    Root,
}

fn denied(what: &str) -> fdo::Error {
    fdo::Error::AccessDenied(format!(
        "{what}: not allowed for this user (see [dbus] read_groups in audispd.toml)"
    ))
}

impl Api {
    async fn authorize(
        &self,
        conn: &zbus::Connection,
        hdr: &Header<'_>,
        need: Need,
        what: &str,
    ) -> fdo::Result<String> {
        let sender = hdr
            .sender()
            .ok_or_else(|| fdo::Error::AccessDenied("message without a sender".into()))?
            .to_owned();
        let proxy = fdo::DBusProxy::new(conn).await?;
        let creds = proxy
            .get_connection_credentials(zbus::names::BusName::Unique(sender.clone()))
            .await?;
        let uid = creds.unix_user_id().ok_or_else(|| denied(what))?;
        let ok = uid == 0
            || (matches!(need, Need::Read)
                && creds
                    .unix_group_ids()
                    .is_some_and(|g| g.iter().any(|g| self.read_groups.contains(g))));
        if ok {
            Ok(sender.to_string())
        } else {
            tracing::warn!(uid, method = what, "D-Bus caller refused");
            Err(denied(what))
        }
    }
}

fn plugin_rows(engine: &Engine) -> Vec<(String, String, u64, u64, u64, u64, u64)> {
    engine
        .snapshot()
        .plugins
        .into_iter()
        .map(|p| {
            (
                p.name,
                p.state,
                p.queued,
                p.delivered,
                p.acked,
                p.dropped,
                p.reconnects,
            )
        })
        .collect()
}

/// Parses record type names or numbers (`AVC`, `1400`); `all` or nothing
/// means every type.
fn parse_types(names: &[String]) -> fdo::Result<BTreeSet<u32>> {
    let mut out = BTreeSet::new();
    for n in names {
        if n.eq_ignore_ascii_case("all") {
            return Ok(BTreeSet::new());
        }
        match record_types::parse_admin(n) {
            Some(t) => {
                out.insert(t);
            }
            None => {
                return Err(fdo::Error::InvalidArgs(format!(
                    "{n:?} is not a record type name or number"
                )))
            }
        }
    }
    Ok(out)
}

#[zbus::interface(name = "org.audisp.Dispatcher1")]
impl Api {
    /// Everything the engine counts, plus the setroubleshoot forwarder's
    /// counters, as one JSON document (for scripts and `audispctl --json`).
    async fn get_stats(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &zbus::Connection,
    ) -> fdo::Result<String> {
        self.authorize(conn, &hdr, Need::Read, "GetStats").await?;
        let mut v = serde_json::to_value(self.engine.snapshot())
            .map_err(|e| fdo::Error::Failed(e.to_string()))?;
        if let (Some(c), Some(obj)) = (&self.forwarder, v.as_object_mut()) {
            obj.insert(
                "setroubleshoot".into(),
                serde_json::to_value(c.snapshot()).unwrap_or_default(),
            );
        }
        Ok(v.to_string())
    }

    /// Every running plugin: name, state, queued, delivered, acked,
    /// dropped, reconnects.
    async fn list_plugins(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &zbus::Connection,
    ) -> fdo::Result<Vec<(String, String, u64, u64, u64, u64, u64)>> {
        self.authorize(conn, &hdr, Need::Read, "ListPlugins")
            .await?;
        Ok(plugin_rows(&self.engine))
    }

    /// Re-reads the configuration as SIGHUP does; returns the plugins
    /// added, removed and changed, and the settings that need a restart.
    async fn reload(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &zbus::Connection,
    ) -> fdo::Result<(Vec<String>, Vec<String>, Vec<String>, Vec<String>)> {
        self.authorize(conn, &hdr, Need::Root, "Reload").await?;
        let r = (self.reload)().map_err(fdo::Error::Failed)?;
        let s = r.summary;
        Ok((s.added, s.removed, s.changed, r.needs_restart))
    }

    /// Suspends a plugin: it gets nothing, and its records are dropped,
    /// until resumed.
    async fn suspend_plugin(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &zbus::Connection,
        name: String,
    ) -> fdo::Result<()> {
        self.authorize(conn, &hdr, Need::Root, "SuspendPlugin")
            .await?;
        self.engine
            .suspend(&name)
            .map_err(fdo::Error::InvalidArgs)?;
        tracing::info!(plugin = %name, "plugin suspended over D-Bus");
        Ok(())
    }

    /// Resumes a suspended plugin (from the newest record on).
    async fn resume_plugin(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &zbus::Connection,
        name: String,
    ) -> fdo::Result<()> {
        self.authorize(conn, &hdr, Need::Root, "ResumePlugin")
            .await?;
        self.engine.resume(&name).map_err(fdo::Error::InvalidArgs)?;
        tracing::info!(plugin = %name, "plugin resumed over D-Bus");
        Ok(())
    }

    /// Asks for `Event` signals (sent to the caller only) for events
    /// holding a record of one of these types (names or numbers; empty or
    /// `all`: every event). Calling again replaces the list.
    async fn subscribe(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &zbus::Connection,
        types: Vec<String>,
    ) -> fdo::Result<()> {
        let who = self.authorize(conn, &hdr, Need::Read, "Subscribe").await?;
        let types = parse_types(&types)?;
        self.subscribers.insert(who, types);
        Ok(())
    }

    /// Stops the caller's `Event` signals (leaving the bus does too).
    async fn unsubscribe(&self, #[zbus(header)] hdr: Header<'_>) -> fdo::Result<()> {
        if let Some(s) = hdr.sender() {
            self.subscribers.remove(s.as_str());
        }
        Ok(())
    }

    /// The daemon's version.
    #[zbus(property)]
    fn version(&self) -> String {
        env!("CARGO_PKG_VERSION").to_string()
    }

    /// A kernel AVC decision (every event holding an `AVC` record):
    /// result (`denied`/`granted`), scontext, tcontext, tclass,
    /// permissions, comm, exe, path, pid, node, and the whole event's text.
    #[zbus(signal)]
    pub async fn avc_denial(
        emitter: &SignalEmitter<'_>,
        result: &str,
        scontext: &str,
        tcontext: &str,
        tclass: &str,
        perms: &[String],
        comm: &str,
        exe: &str,
        path: &str,
        pid: u32,
        node: &str,
        event: &str,
    ) -> zbus::Result<()>;

    /// One event for a subscriber: its id (journal sequence number), its
    /// record types, and its records in auditd's string format.
    #[zbus(signal)]
    pub async fn event(
        emitter: &SignalEmitter<'_>,
        id: u64,
        types: &[u32],
        records: &[String],
    ) -> zbus::Result<()>;

    /// An event matched a rule of a notifying plugin (`audisp-alert`): the
    /// rule's name, the event as auditd prints it
    /// (`audit(SECS.MSEC:SERIAL)`), a summary, and how many matches of the
    /// rule were left unannounced (rate limits) since its last `Match`.
    #[zbus(signal, name = "Match")]
    pub async fn rule_match(
        emitter: &SignalEmitter<'_>,
        rule: &str,
        event: &str,
        summary: &str,
        suppressed: u64,
    ) -> zbus::Result<()>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_lists() {
        assert_eq!(
            parse_types(&["AVC".into(), "1300".into()]).unwrap(),
            BTreeSet::from([1300, 1400])
        );
        assert!(parse_types(&["all".into()]).unwrap().is_empty());
        assert!(parse_types(&["NOPE".into()]).is_err());
    }

    #[test]
    fn subscribers_by_type() {
        let s = Subscribers::default();
        s.insert(":1.1".into(), BTreeSet::from([1400]));
        s.insert(":1.2".into(), BTreeSet::new());
        let mut w = s.wanting(&[1300, 1400]);
        w.sort();
        assert_eq!(w, [":1.1", ":1.2"]);
        assert_eq!(s.wanting(&[1300]), [":1.2"]);
        assert!(s.remove(":1.2"));
        assert!(s.wanting(&[1300]).is_empty());
    }
}
