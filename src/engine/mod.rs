//! The dispatcher engine: inputs → journal → one sender per plugin.
//!
//! The engine knows nothing of config files, systemd, D-Bus or journald.
//! Whoever embeds it (the `audispd` binary, tests, the demo) starts it with
//! its own [`Settings`] (see [`settings`]) and the sockets it should use,
//! calls [`Engine::tick`] a few times a second, and drives it through its
//! methods: [`Engine::reload`], [`Engine::suspend`]/[`Engine::resume`],
//! [`Engine::snapshot`], [`Engine::liveness`], [`Engine::shutdown`].
//! Adapters (sd_notify, the D-Bus interface, the metrics endpoint) are thin
//! layers over those methods.

pub mod actions;
pub mod child;
pub mod cursor;
pub mod events;
pub mod ingest;
pub mod inputs;
pub mod liveness;
pub mod loop_guard;
pub mod loss;
pub mod notices;
pub mod plugin;
pub mod routes;
pub mod settings;
pub mod stats;
pub mod stream;
pub mod subscription;

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::io;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::journal::{Journal, Limits, Wakeup};
use actions::Actions;
use ingest::Ingest;
use inputs::{AckSync, InputContext, PeerPolicy};
use liveness::Liveness;
use plugin::{SenderHandle, Services, Stop};
use settings::{CoreSettings, PluginSettings, Settings, StartOnly, SyncPolicy, Transport};
use stats::{JournalSnapshot, Snapshot};

/// What the engine is started with besides its settings.
#[derive(Debug, Default)]
pub struct Sockets {
    /// auditd's stream (standard input when auditd started us), or None.
    pub stdin: Option<OwnedFd>,
    /// An already listening input socket (from systemd); None to bind the
    /// configured path.
    pub input_listener: Option<OwnedFd>,
}

/// A plugin's sender and its thread.
struct RunningPlugin {
    plugin: Arc<SenderHandle>,
    thread: JoinHandle<()>,
}

struct Stopping {
    plugin: Arc<SenderHandle>,
    thread: JoinHandle<()>,
    /// Remove its cursor once stopped (removed from the configuration).
    forget: bool,
}

/// What a reload changed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReloadSummary {
    /// Plugins started.
    pub added: Vec<String>,
    /// Plugins draining and stopping.
    pub removed: Vec<String>,
    /// Plugins reconnecting with a new configuration.
    pub changed: Vec<String>,
    /// Settings that changed but only take effect after a restart (the
    /// engine runs on with their old values).
    pub needs_restart: Vec<StartOnly>,
}

/// The running dispatcher.
pub struct Engine {
    core: Mutex<CoreSettings>,
    cursor_dir: PathBuf,
    journal: Journal,
    ingest: Arc<Ingest>,
    services: Services,
    plugins: Mutex<BTreeMap<String, RunningPlugin>>,
    stopping: Mutex<Vec<Stopping>>,
    actions: Arc<Actions>,
    liveness: Arc<Liveness>,
    inputs_stopping: Arc<AtomicBool>,
    input_wake: Arc<Wakeup>,
    input_threads: Mutex<Vec<JoinHandle<()>>>,
    stdin_closed: Arc<AtomicBool>,
    events: Arc<Wakeup>,
    started: Instant,
    last_sync: Mutex<Instant>,
    control: liveness::Heartbeat,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The journal's durability policy as the input side sees it.
fn ack_sync(core: &CoreSettings) -> AckSync {
    match core.journal.sync {
        SyncPolicy::Batch => AckSync::Sync,
        SyncPolicy::Interval | SyncPolicy::Never => AckSync::Written,
    }
}

impl Engine {
    /// Opens the journal in `state_dir`, recovers, starts the inputs and one
    /// sender per plugin.
    pub fn start(
        settings: Settings,
        state_dir: &std::path::Path,
        sockets: Sockets,
        server: &str,
    ) -> io::Result<Arc<Engine>> {
        let core = settings.core;
        let journal = Journal::open(
            &core.journal.dir,
            Limits {
                segment_size: core.journal.segment_size,
                max_size: core.journal.max_size,
                memory: core.journal.memory,
            },
        )?;
        let ingest = Arc::new(Ingest::open(
            journal.clone(),
            state_dir,
            core.events.timeout,
            core.events.max_open,
            64 << 20,
        )?);
        ingest.set_filters(&core.input_filters);
        let liveness = Arc::new(Liveness::new());
        let actions = Arc::new(Actions::new());
        let input_wake = Arc::new(Wakeup::new()?);
        let events = Arc::new(Wakeup::new()?);
        let engine = Arc::new_cyclic(|weak: &std::sync::Weak<Engine>| {
            let w = weak.clone();
            let snapshot: Arc<dyn Fn() -> Snapshot + Send + Sync> =
                Arc::new(move || match w.upgrade() {
                    Some(e) => e.snapshot(),
                    None => Snapshot {
                        uptime_secs: 0,
                        journal: JournalSnapshot {
                            id: String::new(),
                            start: 0,
                            end: 0,
                            synced: 0,
                            disk_bytes: 0,
                            open_events: 0,
                        },
                        inputs: Vec::new(),
                        plugins: Vec::new(),
                    },
                });
            Engine {
                cursor_dir: state_dir.join("cursors"),
                services: Services {
                    journal: journal.clone(),
                    actions: actions.clone(),
                    snapshot,
                    server: server.to_string(),
                    inputs: {
                        let ingest = ingest.clone();
                        Arc::new(move |s| ingest.input_origin(s))
                    },
                    internal: Arc::default(),
                    notices: Arc::default(),
                    decisions: Arc::default(),
                },
                journal: journal.clone(),
                ingest: ingest.clone(),
                plugins: Mutex::new(BTreeMap::new()),
                stopping: Mutex::new(Vec::new()),
                actions: actions.clone(),
                control: liveness.register("control loop"),
                liveness: liveness.clone(),
                inputs_stopping: Arc::new(AtomicBool::new(false)),
                input_wake: input_wake.clone(),
                input_threads: Mutex::new(Vec::new()),
                stdin_closed: Arc::new(AtomicBool::new(false)),
                events: events.clone(),
                started: Instant::now(),
                last_sync: Mutex::new(Instant::now()),
                core: Mutex::new(core.clone()),
            }
        });
        let weak = Arc::downgrade(&engine);
        ingest.set_forwarders(Arc::new(move |input| {
            weak.upgrade()
                .map_or_else(Vec::new, |e| e.forwarders_of(input))
        }));
        for p in settings.plugins {
            engine.start_plugin(p)?;
        }
        engine.start_inputs(&core, sockets)?;
        Ok(engine)
    }

    /// The plugins whose plugins.d file chose inputs that let `input`'s
    /// records through: the admin's explicit relays, for the loop guard's
    /// warning.
    fn forwarders_of(&self, input: &str) -> Vec<String> {
        lock(&self.plugins)
            .values()
            .filter(|p| {
                p.plugin
                    .config()
                    .inputs
                    .as_ref()
                    .is_some_and(|sel| routes::chosen(sel, input))
            })
            .map(|p| p.plugin.name().to_string())
            .collect()
    }

    fn start_plugin(&self, settings: PluginSettings) -> io::Result<()> {
        let name = settings.name.clone();
        let hb = self.liveness.register(&format!("plugin {name}"));
        let (plugin, thread) =
            plugin::start(settings, self.services.clone(), &self.cursor_dir, hb)?;
        lock(&self.plugins).insert(name, RunningPlugin { plugin, thread });
        Ok(())
    }

    fn input_context(&self, core: &CoreSettings) -> InputContext {
        InputContext {
            ingest: self.ingest.clone(),
            liveness: self.liveness.clone(),
            stopping: self.inputs_stopping.clone(),
            stop_wake: self.input_wake.clone(),
            ack_sync: ack_sync(core),
            server: self.services.server.clone(),
        }
    }

    fn start_inputs(&self, core: &CoreSettings, sockets: Sockets) -> io::Result<()> {
        let ctx = self.input_context(core);
        let mut threads = lock(&self.input_threads);
        // A stream that is not to be read is closed here, unread.
        if let Some(fd) = sockets.stdin.filter(|_| core.stdin.enabled) {
            let format = core.stdin.format;
            let closed = self.stdin_closed.clone();
            let events = self.events.clone();
            let c = ctx.clone();
            threads.push(
                std::thread::Builder::new()
                    .name("input-stdin".into())
                    .spawn(move || {
                        let eof = || {
                            closed.store(true, Ordering::SeqCst);
                            events.wake();
                        };
                        if let Err(e) = inputs::read_stdin(c, fd, format, eof) {
                            tracing::error!("standard input reader failed: {e}");
                        }
                    })?,
            );
        }
        let listener = match sockets.input_listener {
            Some(fd) => Some(fd),
            None if core.input_socket.enabled => Some(inputs::bind_input_socket(
                &core.input_socket.path,
                core.input_socket.mode,
            )?),
            None => None,
        };
        if let Some(fd) = listener {
            let policy = PeerPolicy {
                uids: core.input_socket.allow_users.clone(),
                gids: core.input_socket.allow_groups.clone(),
            };
            threads.push(
                std::thread::Builder::new()
                    .name("input-socket".into())
                    .spawn(move || inputs::serve_inputs(ctx, fd, policy))?,
            );
        }
        Ok(())
    }

    /// Attaches a consumer that lives in the embedding process (the D-Bus
    /// adapter, for instance) as a plugin named `settings.name`: it gets
    /// everything a plugin gets — its subscription, acknowledged delivery,
    /// resend after a reconnect, a cursor kept across restarts — through one
    /// end of a `SOCK_SEQPACKET` socket pair that `connector` is handed for
    /// each connection (serve it with `sdk::Plugin::run_on`). Its transport
    /// must be [`Transport::Internal`]; reloads leave it alone.
    pub fn attach_internal(
        &self,
        settings: PluginSettings,
        connector: plugin::Connector,
    ) -> io::Result<()> {
        if settings.transport != Transport::Internal {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "an in-process consumer needs transport Internal",
            ));
        }
        if lock(&self.plugins).contains_key(&settings.name) {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("a plugin named {} is already running", settings.name),
            ));
        }
        lock(&self.services.internal).insert(settings.name.clone(), connector);
        self.start_plugin(settings)
    }

    /// Installs the embedder's handler for system actions
    /// (`run = "single-user"`, `"halt"`, `"poweroff"`); see [`actions`].
    pub fn set_system_hook(&self, hook: actions::SystemHook) {
        self.actions.set_system_hook(hook);
    }

    /// Installs the embedder's announcer of plugins' notices (`NOTIFY`);
    /// see [`notices`].
    pub fn set_notice_hook(&self, hook: notices::NoticeHook) {
        self.services.notices.set_hook(hook);
    }

    /// The journal.
    pub fn journal(&self) -> &Journal {
        &self.journal
    }

    /// Readable when something the embedder should react to happened (so
    /// far: standard input closed).
    pub fn events_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.events.fd()
    }

    /// Clears [`Engine::events_fd`].
    pub fn clear_events(&self) {
        self.events.clear();
    }

    /// Whether auditd closed standard input (the dispatcher should then shut
    /// down, as every auditd plugin does).
    pub fn stdin_closed(&self) -> bool {
        self.stdin_closed.load(Ordering::SeqCst)
    }

    /// Periodic work; call a few times a second. Ends idle events, writes
    /// the ingest checkpoint, syncs the journal (`sync = "interval"`),
    /// deletes journal segments every plugin has passed, reaps stopped
    /// plugins and finished action programs.
    pub fn tick(&self) {
        self.control.beat();
        let now = Instant::now();
        if let Err(e) = self.ingest.tick(now) {
            tracing::error!(
                message_id = crate::log_ids::JOURNAL_ERROR,
                "ingest checkpoint failed: {e}"
            );
        }
        // Segments every plugin has passed go before the sync, so they are
        // never written back.
        self.collect_garbage();
        let journal = lock(&self.core).journal.clone();
        let sync_due = match journal.sync {
            SyncPolicy::Never => false,
            SyncPolicy::Interval | SyncPolicy::Batch => {
                lock(&self.last_sync).elapsed() >= journal.sync_interval
            }
        };
        if sync_due {
            *lock(&self.last_sync) = now;
            if let Err(e) = self.journal.sync_upto(self.journal.end()) {
                tracing::error!(
                    message_id = crate::log_ids::JOURNAL_ERROR,
                    "journal sync failed: {e}"
                );
            }
        }
        self.reap_stopped();
        self.actions.reap();
    }

    fn collect_garbage(&self) {
        self.collect_garbage_keeping(&[]);
    }

    /// Deletes journal segments no plugin needs: neither the running ones,
    /// nor those stopping, nor `also` (plugins the caller holds).
    fn collect_garbage_keeping(&self, also: &[&SenderHandle]) {
        let mut floor = self.ingest.retention_floor();
        for r in lock(&self.plugins).values() {
            floor = floor.min(r.plugin.position().replay_from);
        }
        for s in lock(&self.stopping).iter() {
            floor = floor.min(s.plugin.position().replay_from);
        }
        for p in also {
            floor = floor.min(p.position().replay_from);
        }
        if let Err(e) = self.journal.retain_from(floor) {
            tracing::error!(
                message_id = crate::log_ids::JOURNAL_ERROR,
                "cannot delete old journal segments: {e}"
            );
        }
    }

    fn reap_stopped(&self) {
        let mut stopping = lock(&self.stopping);
        let (done, left): (Vec<Stopping>, Vec<Stopping>) =
            stopping.drain(..).partition(|s| s.thread.is_finished());
        *stopping = left;
        drop(stopping);
        for s in done {
            let _ = s.thread.join();
            if s.forget {
                let path = self.cursor_dir.join(format!("{}.cursor", s.plugin.name()));
                match std::fs::remove_file(&path) {
                    Ok(()) => tracing::info!(
                        plugin = s.plugin.name(),
                        "plugin {} removed",
                        s.plugin.name()
                    ),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => tracing::warn!(
                        plugin = s.plugin.name(),
                        "cannot remove the cursor of plugin {}, {}: {e}",
                        s.plugin.name(),
                        path.display()
                    ),
                }
            }
        }
    }

    /// Every thread's liveness (see [`liveness`]).
    pub fn liveness(&self, max_age: Duration) -> Result<(), Vec<(String, Duration)>> {
        self.liveness.check(max_age)
    }

    /// Counters of everything, now.
    pub fn snapshot(&self) -> Snapshot {
        let plugins = lock(&self.plugins)
            .values()
            .map(|r| r.plugin.snapshot(&self.journal))
            .collect();
        Snapshot {
            uptime_secs: self.started.elapsed().as_secs(),
            journal: JournalSnapshot {
                id: self.journal.id().to_string(),
                start: self.journal.start(),
                end: self.journal.end(),
                synced: self.journal.synced(),
                disk_bytes: self.journal.disk_bytes(),
                open_events: self.ingest.open_events() as u64,
            },
            inputs: self.ingest.snapshot(),
            plugins,
        }
    }

    /// Writes the state report to the state file.
    pub fn write_state_file(&self) -> io::Result<PathBuf> {
        let path = lock(&self.core).stats.state_file.clone();
        crate::statefile::write_atomically(&path, self.snapshot().render_state().as_bytes())?;
        Ok(path)
    }

    /// Names of the running plugins.
    pub fn plugin_names(&self) -> Vec<String> {
        lock(&self.plugins).keys().cloned().collect()
    }

    /// Suspends a plugin: it gets nothing, and its records are dropped,
    /// until resumed.
    pub fn suspend(&self, name: &str) -> Result<(), String> {
        self.with_plugin(name, |p| p.set_suspended(true))
    }

    /// Resumes a suspended plugin (from the newest record on).
    pub fn resume(&self, name: &str) -> Result<(), String> {
        self.with_plugin(name, |p| p.set_suspended(false))
    }

    fn with_plugin(&self, name: &str, f: impl FnOnce(&SenderHandle)) -> Result<(), String> {
        match lock(&self.plugins).get(name) {
            Some(r) => {
                f(&r.plugin);
                Ok(())
            }
            None => Err(format!("no plugin named {name:?} is running")),
        }
    }

    /// Applies new settings: new plugins start, plugins no longer listed
    /// drain and stop, changed ones reconnect with their new settings
    /// (resending what they had not acknowledged). Plugins in `keep` (whose
    /// settings could not be read) keep running as they are.
    pub fn reload(&self, settings: Settings, keep: &BTreeSet<String>) -> ReloadSummary {
        let mut summary = ReloadSummary::default();
        {
            let mut core = lock(&self.core);
            summary.needs_restart = core.start_only_changes(&settings.core);
            let mut applied = settings.core;
            // What cannot change live stays as it is.
            applied.journal = core.journal.clone();
            applied.stdin = core.stdin;
            applied.input_socket = core.input_socket.clone();
            applied.events = core.events.clone();
            self.ingest.set_filters(&applied.input_filters);
            *core = applied;
        }
        let wanted: BTreeMap<String, PluginSettings> = settings
            .plugins
            .into_iter()
            .map(|p| (p.name.clone(), p))
            .collect();
        let deadline = Instant::now() + lock(&self.core).shutdown_timeout;
        let mut plugins = lock(&self.plugins);
        let current: Vec<String> = plugins.keys().cloned().collect();
        let mut reconfigured = Vec::new();
        let internal: Vec<String> = lock(&self.services.internal).keys().cloned().collect();
        for name in current {
            if keep.contains(&name) || internal.contains(&name) {
                continue;
            }
            match wanted.get(&name) {
                None => {
                    if let Some(r) = plugins.remove(&name) {
                        r.plugin.stop(Stop::Drain {
                            until: self.journal.end(),
                            deadline,
                        });
                        lock(&self.stopping).push(Stopping {
                            plugin: r.plugin,
                            thread: r.thread,
                            forget: true,
                        });
                        summary.removed.push(name);
                    }
                }
                Some(cfg) => {
                    if let Some(r) = plugins.get(&name) {
                        if r.plugin.config() != *cfg {
                            r.plugin.reconfigure(cfg.clone());
                            reconfigured.push(r.plugin.clone());
                            summary.changed.push(name);
                        }
                    }
                }
            }
        }
        let new: Vec<PluginSettings> = wanted
            .into_values()
            .filter(|p| !plugins.contains_key(&p.name))
            .collect();
        drop(plugins);
        // A changed plugin gets its new configuration from here on, not at
        // some later point after the reload reported itself done.
        for plugin in reconfigured {
            if !plugin.wait_reconfigured(deadline) {
                tracing::warn!(
                    plugin = plugin.name(),
                    "the sender of plugin {} did not take its new configuration in time; it applies it when it next runs",
                    plugin.name()
                );
            }
        }
        for p in new {
            // A plugin removed a moment ago may still be draining.
            self.reap_stopped();
            let name = p.name.clone();
            match self.start_plugin(p) {
                Ok(()) => summary.added.push(name),
                Err(e) => tracing::error!(plugin = %name, "cannot start plugin {name}: {e}"),
            }
        }
        summary
    }

    /// Stops: inputs first, then every plugin gets until `shutdown_timeout`
    /// to take what it has not acknowledged; what is left stays in the
    /// journal for next time. Records still waiting in memory for the
    /// journal are stored if it takes them now, and counted lost if not
    /// (see [`Ingest::finish`]; [`Engine::snapshot`] has the totals).
    /// Returns the plugins that did not catch up.
    pub fn shutdown(&self) -> Vec<String> {
        self.inputs_stopping.store(true, Ordering::SeqCst);
        self.input_wake.wake();
        for t in lock(&self.input_threads).drain(..) {
            let _ = t.join();
        }
        self.ingest.close_all_events();
        let timeout = lock(&self.core).shutdown_timeout;
        let until = self.journal.end();
        let deadline = Instant::now() + timeout;
        let plugins: Vec<(String, RunningPlugin)> = std::mem::take(&mut *lock(&self.plugins))
            .into_iter()
            .collect();
        for (_, r) in &plugins {
            r.plugin.stop(Stop::Drain { until, deadline });
        }
        let mut behind = Vec::new();
        let mut stopped = Vec::new();
        for (name, r) in plugins {
            let _ = r.thread.join();
            if r.plugin.position().acked + 1 < until && !r.plugin.is_suspended() {
                behind.push(name);
            }
            stopped.push(r.plugin);
        }
        for s in lock(&self.stopping).drain(..) {
            s.plugin.stop(Stop::Now);
            let _ = s.thread.join();
        }
        // Room the plugins made is room for records still waiting in memory.
        let held: Vec<&SenderHandle> = stopped.iter().map(|p| &**p).collect();
        self.collect_garbage_keeping(&held);
        if let Err(e) = self.ingest.finish() {
            tracing::error!("final ingest checkpoint failed: {e}");
        }
        self.collect_garbage_keeping(&held);
        let sync = lock(&self.core).journal.sync;
        if sync == SyncPolicy::Never {
            // Left to the kernel, as configured.
        } else if let Err(e) = self.journal.sync_upto(self.journal.end()) {
            tracing::error!(
                message_id = crate::log_ids::JOURNAL_ERROR,
                "final journal sync failed: {e}"
            );
        }
        self.actions.finish(Duration::from_secs(1));
        behind
    }
}
