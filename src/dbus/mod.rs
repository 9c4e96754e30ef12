//! The system-bus adapter: a thin, versioned D-Bus layer over the engine.
//!
//! The engine knows nothing of D-Bus. [`start`] puts together, around a
//! running [`Engine`]:
//!
//! * an in-process consumer ([`Engine::attach_internal`], plugin name
//!   [`CONSUMER`]) that gets every whole event over the acknowledged
//!   protocol, so nothing here can block the dispatcher;
//! * [`setroubleshoot`]: AVC denials to setroubleshootd, exactly as
//!   sedispatch sends them;
//! * [`service`]: `org.audisp.Dispatcher1` — statistics, plugins, reload,
//!   suspend/resume, and the `AvcDenial`, `Event` and `Match` signals
//!   (`Match`: plugins' notices, [`crate::engine::notices`], queued to a
//!   thread of their own);
//! * [`systemd`]: the system actions (`single-user`, `halt`, `poweroff`)
//!   as calls to systemd's manager.
//!
//! A bus that is absent at start or lost later is reconnected to in the
//! background (a keeper thread); the consumer signals through whichever
//! connection is current.
//!
//! `docs/dbus.md` documents the interface and the access policy.

pub mod avc;
pub mod service;
pub mod setroubleshoot;
pub mod systemd;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use zbus::blocking::Connection;
use zbus::object_server::SignalEmitter;

use crate::config::DbusConfig;
use crate::engine::settings::{
    Backoff, DeliveryMode, Overflow, PluginFormat, PluginSettings, Transport,
};
use crate::engine::Engine;
use crate::record_types;
use crate::sdk::Plugin;
use service::{Api, ReloadHook, Subscribers};
use setroubleshoot::Forwarder;

/// Our well-known name on the system bus.
pub const NAME: &str = "org.audisp.Dispatcher1";
/// Our object path.
pub const PATH: &str = "/org/audisp/Dispatcher1";
/// Our interface (the `1` is its version: incompatible changes get a new
/// interface name, served beside the old one).
pub const IFACE: &str = "org.audisp.Dispatcher1";
/// The name of the in-process consumer in plugin lists and cursors.
pub const CONSUMER: &str = "dbus";

/// A bus connection builder for `address`, or for the system bus (which
/// honours `DBUS_SYSTEM_BUS_ADDRESS`).
pub fn builder(
    address: Option<&str>,
) -> zbus::Result<zbus::blocking::connection::Builder<'static>> {
    match address {
        Some(a) => zbus::blocking::connection::Builder::address(a),
        None => zbus::blocking::connection::Builder::system(),
    }
}

/// What [`start`] set up; dropping it leaves the bus.
pub struct Bus {
    stop: Arc<AtomicBool>,
}

impl Drop for Bus {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The emitter of the current bus connection, `None` while there is none;
/// the keeper swaps it on every (re)connection.
type Emitter = Arc<RwLock<Option<SignalEmitter<'static>>>>;

/// First wait before reconnecting to a lost or absent bus.
const RETRY_FIRST: Duration = Duration::from_secs(1);
/// Longest wait between reconnection attempts.
const RETRY_MAX: Duration = Duration::from_secs(30);
/// How often a live connection is checked (`GetId` to the bus driver).
const CHECK_EVERY: Duration = Duration::from_secs(1);

/// Notices waiting for the announcer thread; more are dropped (counted in
/// the log): a bus that does not keep up must not hold up a plugin's sender.
const NOTICE_QUEUE: usize = 256;

/// The engine's notice hook: queues each plugin notice for a thread that
/// emits it as the `Match` signal through the current connection (none
/// while the bus is away: the notice is then dropped).
fn announcer(emitter: Emitter) -> Result<crate::engine::notices::NoticeHook, String> {
    let (tx, rx) = std::sync::mpsc::sync_channel::<crate::protocol::Notice>(NOTICE_QUEUE);
    std::thread::Builder::new()
        .name("dbus-notices".into())
        .spawn(move || {
            for n in rx {
                let current = emitter.read().unwrap_or_else(|p| p.into_inner()).clone();
                let Some(e) = current else {
                    tracing::debug!(rule = %n.rule, "Match signal not sent: no bus");
                    continue;
                };
                let sent = zbus::block_on(Api::rule_match(
                    &e,
                    &n.rule,
                    &n.event,
                    &n.summary,
                    n.suppressed,
                ));
                if let Err(err) = sent {
                    tracing::debug!("Match signal not sent: {err}");
                }
            }
        })
        .map_err(|e| format!("cannot start the D-Bus notice announcer: {e}"))?;
    let full = Arc::new(std::sync::atomic::AtomicU64::new(0));
    Ok(Arc::new(move |plugin: &str, n| {
        if tx.try_send(n).is_err() && full.fetch_add(1, Ordering::Relaxed) % 1000 == 0 {
            tracing::warn!(
                plugin,
                "D-Bus Match signals are not keeping up; {} notices dropped so far",
                full.load(Ordering::Relaxed)
            );
        }
    }))
}

/// Attaches the event consumer, starts the setroubleshoot forwarder (if
/// configured), installs the system-action hook, then connects to the bus,
/// owns [`NAME`] and serves the interface. A bus that is absent at start or
/// lost later (`dbus.service` restarted) is retried in the background with
/// back-off ([`RETRY_FIRST`] doubling to [`RETRY_MAX`]); the dispatcher
/// never waits for it. Errors that no retry can cure are returned.
pub fn start(engine: Arc<Engine>, config: &DbusConfig, reload: ReloadHook) -> Result<Bus, String> {
    let address = config.address.clone();
    let forwarder = if config.setroubleshoot.enabled {
        let a = address.clone();
        let timeout = config.setroubleshoot.timeout;
        let connect: setroubleshoot::Connect =
            Box::new(move || builder(a.as_deref())?.method_timeout(timeout).build());
        Some(Arc::new(
            Forwarder::start(&config.setroubleshoot, connect)
                .map_err(|e| format!("cannot start the setroubleshoot forwarder: {e}"))?,
        ))
    } else {
        None
    };
    let subscribers = Arc::new(Subscribers::default());
    let api = Api {
        engine: engine.clone(),
        reload,
        forwarder: forwarder.as_ref().map(|f| f.counters().clone()),
        subscribers: subscribers.clone(),
        read_groups: config.read_groups.clone(),
    };
    let emitter: Emitter = Arc::new(RwLock::new(None));
    engine.set_system_hook(systemd::hook(address.clone()));
    engine.set_notice_hook(announcer(emitter.clone())?);
    let consumer = Arc::new(Consumer {
        emitter: emitter.clone(),
        subscribers: subscribers.clone(),
        forwarder,
        handled: std::sync::Mutex::new(None),
    });
    let connector: crate::engine::plugin::Connector = Arc::new(move |fd| {
        let c = consumer.clone();
        let spawned = std::thread::Builder::new()
            .name("dbus-events".into())
            .spawn(move || {
                // A new connection (after the old one ended) may bring again
                // what this process already handled but the engine had not
                // seen acknowledged: resume after it, so that no event is
                // signalled or sent to setroubleshootd twice.
                let mut plugin = Plugin::new(CONSUMER).events();
                if let Some((journal, seq)) = *c.handled.lock().unwrap_or_else(|p| p.into_inner()) {
                    plugin = plugin.resume_after(journal, seq);
                }
                let r = plugin.run_on(fd, |batch, ctx| {
                    for event in batch.events() {
                        c.handle(&event);
                    }
                    // The event's id (its ack id), which may lie past its
                    // last record.
                    if let Some(last) = batch.records().last() {
                        *c.handled.lock().unwrap_or_else(|p| p.into_inner()) =
                            Some((ctx.journal_id(), last.ack));
                    }
                    Ok(())
                });
                if let Err(e) = r {
                    tracing::debug!("D-Bus event consumer connection ended: {e}");
                }
            });
        if let Err(e) = spawned {
            tracing::error!("cannot start the D-Bus event consumer: {e}");
        }
    });
    engine
        .attach_internal(consumer_settings(), connector)
        .map_err(|e| format!("cannot attach the D-Bus event consumer: {e}"))?;
    let keeper = Keeper {
        address,
        api,
        emitter,
        subscribers,
        stop: Arc::new(AtomicBool::new(false)),
    };
    let stop = keeper.stop.clone();
    // The first attempt is made here, so that a bus that is up when
    // audispd starts is served before audispd reports ready.
    let first = keeper.connect();
    match &first {
        Ok(_) => tracing::info!("published {NAME} on the bus"),
        Err(e) => tracing::error!("D-Bus: {e}; running on without it, retrying in the background"),
    }
    std::thread::Builder::new()
        .name("dbus-keeper".into())
        .spawn(move || keeper.run(first.ok()))
        .map_err(|e| format!("cannot start the D-Bus connection keeper: {e}"))?;
    Ok(Bus { stop })
}

/// Keeps a bus connection serving [`NAME`]: checks it, and reconnects when
/// it is lost.
struct Keeper {
    address: Option<String>,
    api: Api,
    emitter: Emitter,
    subscribers: Arc<Subscribers>,
    stop: Arc<AtomicBool>,
}

impl Keeper {
    /// One connection: serve the object, own the name, install the emitter.
    fn connect(&self) -> Result<Connection, String> {
        let conn = builder(self.address.as_deref())
            .and_then(|b| {
                b.method_timeout(Duration::from_secs(10))
                    .serve_at(PATH, self.api.clone())
            })
            .and_then(|b| b.name(NAME))
            .and_then(|b| b.build())
            .map_err(|e| format!("cannot publish {NAME} on the bus: {e}"))?;
        let emitter = SignalEmitter::new(conn.inner(), PATH)
            .map_err(|e| format!("signal emitter: {e}"))?
            .into_owned();
        watch_departures(&conn, self.subscribers.clone());
        *self.emitter.write().unwrap_or_else(|p| p.into_inner()) = Some(emitter);
        Ok(conn)
    }

    /// Sleeps `d` in short steps; false when asked to stop.
    fn pause(&self, d: Duration) -> bool {
        let until = Instant::now() + d;
        while Instant::now() < until {
            if self.stop.load(Ordering::Relaxed) {
                return false;
            }
            std::thread::sleep(Duration::from_millis(100).min(until - Instant::now()));
        }
        !self.stop.load(Ordering::Relaxed)
    }

    fn run(self, mut conn: Option<Connection>) {
        let mut delay = RETRY_FIRST;
        loop {
            if let Some(c) = conn.take() {
                loop {
                    if !self.pause(CHECK_EVERY) {
                        return;
                    }
                    if let Err(e) = ping(&c) {
                        tracing::error!(
                            "D-Bus: lost the bus connection ({e}); {NAME} is unpublished, running on without it and reconnecting in the background"
                        );
                        break;
                    }
                }
                *self.emitter.write().unwrap_or_else(|p| p.into_inner()) = None;
                self.subscribers.clear();
                delay = RETRY_FIRST;
            }
            if !self.pause(delay) {
                return;
            }
            match self.connect() {
                Ok(c) => {
                    tracing::info!("D-Bus: back on the bus; published {NAME} again");
                    conn = Some(c);
                }
                Err(e) => {
                    tracing::debug!("D-Bus: still no bus: {e}");
                    delay = (delay * 2).min(RETRY_MAX);
                }
            }
        }
    }
}

/// Whether the bus still answers on `conn`.
fn ping(conn: &Connection) -> zbus::Result<()> {
    conn.call_method(
        Some("org.freedesktop.DBus"),
        "/org/freedesktop/DBus",
        Some("org.freedesktop.DBus"),
        "GetId",
        &(),
    )
    .map(|_| ())
}

fn consumer_settings() -> PluginSettings {
    PluginSettings {
        name: CONSUMER.into(),
        transport: Transport::Internal,
        format: PluginFormat::Native,
        mode: DeliveryMode::Events,
        include: Vec::new(),
        exclude: Vec::new(),
        inputs: None,
        drop_fields: vec![],
        filter: None,
        queue_size: 100_000,
        overflow: Overflow::Spool,
        spool_max: 64 << 20,
        restart: Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(5),
        },
        actions: BTreeMap::new(),
    }
}

/// Forgets subscribers that leave the bus.
fn watch_departures(conn: &Connection, subscribers: Arc<Subscribers>) {
    let Ok(proxy) = zbus::blocking::fdo::DBusProxy::new(conn) else {
        return;
    };
    let Ok(changes) = proxy.receive_name_owner_changed() else {
        return;
    };
    let spawned = std::thread::Builder::new()
        .name("dbus-names".into())
        .spawn(move || {
            for change in changes {
                if let Ok(args) = change.args() {
                    if args.new_owner().is_none() && subscribers.remove(args.name().as_str()) {
                        tracing::debug!(name = %args.name(), "event subscriber left the bus");
                    }
                }
            }
        });
    if let Err(e) = spawned {
        tracing::warn!("cannot watch for departing subscribers: {e}");
    }
}

/// Turns events into signals and setroubleshoot calls.
struct Consumer {
    emitter: Emitter,
    subscribers: Arc<Subscribers>,
    forwarder: Option<Arc<Forwarder>>,
    /// Journal id and ack id (the event's id) of the last event handled.
    handled: std::sync::Mutex<Option<([u8; 16], u64)>>,
}

impl Consumer {
    fn handle(&self, event: &crate::sdk::Event<'_>) {
        let types: Vec<u32> = event.records().map(|r| r.rtype).collect();
        let emitter = self
            .emitter
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if let Some(emitter) = &emitter {
            self.signal(emitter, event, &types);
        }
        if let Some(f) = &self.forwarder {
            if types.contains(&record_types::AVC) {
                if let Some(denial) = avc::parse(event.records().map(|r| (r.rtype, r.text))) {
                    f.offer(&denial, event.records().map(|r| r.text));
                }
            }
        }
    }

    /// Sends the `Event` and `AvcDenial` signals through `emitter`.
    fn signal(
        &self,
        emitter: &SignalEmitter<'static>,
        event: &crate::sdk::Event<'_>,
        types: &[u32],
    ) {
        if self.subscribers.any() {
            let wanting = self.subscribers.wanting(types);
            if !wanting.is_empty() {
                let texts: Vec<String> = event
                    .records()
                    .map(|r| r.text_lossy().into_owned())
                    .collect();
                for name in wanting {
                    let Ok(dest) = zbus::names::BusName::try_from(name) else {
                        continue;
                    };
                    let e = emitter.clone().set_destination(dest);
                    if let Err(err) = zbus::block_on(Api::event(&e, event.id(), types, &texts)) {
                        tracing::debug!("Event signal not sent: {err}");
                    }
                }
            }
        }
        if !types.contains(&record_types::AVC) {
            return;
        }
        let Some(denial) = avc::parse(event.records().map(|r| (r.rtype, r.text))) else {
            return;
        };
        let text = setroubleshoot::payload(event.records().map(|r| r.text));
        if let Err(e) = zbus::block_on(Api::avc_denial(
            emitter,
            &denial.result,
            &denial.scontext,
            &denial.tcontext,
            &denial.tclass,
            &denial.perms,
            &denial.comm,
            &denial.exe,
            &denial.path,
            denial.pid,
            &denial.node,
            &text,
        )) {
            tracing::debug!("AvcDenial signal not sent: {e}");
        }
    }
}
