//! An in-process consumer (what the D-Bus adapter is) attached to the
//! engine gets what any plugin gets: its subscription, every record once,
//! and what it had not acknowledged again after its connection ends.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use audisp::config::{Config, MainConfig, Paths};
use audisp::engine::settings::{
    Backoff, DeliveryMode, FilterAction, FilterRule, Overflow, PluginFormat, PluginSettings,
    Transport,
};
use audisp::engine::{Engine, Sockets};
use audisp::sdk::Plugin;

/// A journal and the last sequence number handled in it.
type ResumePoint = ([u8; 16], u64);

/// An engine fed on a pipe (returned), its state under `dir`.
fn start_engine(dir: &std::path::Path) -> (Arc<Engine>, std::os::fd::OwnedFd) {
    let paths = Paths::resolve(
        Some(dir.join("etc")),
        Some(dir.join("run")),
        Some(dir.join("state")),
        &|_| None,
    );
    let mut main = MainConfig::defaults(&paths);
    main.input_socket.enabled = false;
    let (reader, writer) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
    std::fs::create_dir_all(&paths.state_dir).unwrap();
    let engine = Engine::start(
        Config {
            main,
            plugins: Vec::new(),
        }
        .engine_settings(),
        &paths.state_dir,
        Sockets {
            stdin: Some(reader),
            input_listener: None,
        },
        "test",
    )
    .unwrap();
    (engine, writer)
}

/// The in-process consumer "internal", records mode.
fn internal_settings(include: Vec<u32>, filter: Option<FilterRule>) -> PluginSettings {
    PluginSettings {
        name: "internal".into(),
        transport: Transport::Internal,
        format: PluginFormat::Native,
        mode: DeliveryMode::Records,
        include,
        exclude: vec![],
        inputs: None,
        drop_fields: vec![],
        filter,
        queue_size: 100_000,
        overflow: Overflow::Spool,
        spool_max: 1 << 30,
        restart: Backoff {
            initial: Duration::from_millis(10),
            max: Duration::from_millis(100),
        },
        actions: BTreeMap::new(),
    }
}

#[test]
fn internal_consumer_gets_its_subscription_once_across_reconnects() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, writer) = start_engine(dir.path());

    // The consumer records what it handled and, as a real one does, where it
    // is (journal and last sequence number), so that a new connection
    // resumes after it: delivery is at-least-once per connection, and the
    // resume point makes it exactly once for the consumer. Its first
    // connection fails its third batch (so that batch must come again),
    // later ones succeed.
    let got: Arc<Mutex<Vec<u64>>> = Arc::default();
    let resume: Arc<Mutex<Option<ResumePoint>>> = Arc::default();
    let connections = Arc::new(Mutex::new(0u32));
    let (g, r, c) = (got.clone(), resume.clone(), connections.clone());
    let connector: audisp::engine::plugin::Connector = Arc::new(move |fd| {
        let (g, r, c) = (g.clone(), r.clone(), c.clone());
        std::thread::spawn(move || {
            let n = {
                let mut c = c.lock().unwrap();
                *c += 1;
                *c
            };
            let mut batches = 0;
            let mut plugin = Plugin::new("internal");
            if let Some((journal, seq)) = *r.lock().unwrap() {
                plugin = plugin.resume_after(journal, seq);
            }
            let _ = plugin.run_on(fd, |batch, ctx| {
                batches += 1;
                if n == 1 && batches == 3 {
                    return Err("fail once".into());
                }
                let mut g = g.lock().unwrap();
                g.extend(batch.records().map(|r| r.seq));
                if let Some(&last) = g.last() {
                    *r.lock().unwrap() = Some((ctx.journal_id(), last));
                }
                Ok(())
            });
        });
    });
    engine
        .attach_internal(internal_settings(vec![1005], None), connector)
        .unwrap();

    let mut w = std::fs::File::from(writer);
    let n = 3000u64;
    for i in 1..=n {
        // Every other record is a USER record (1005), the subscribed type.
        let t = if i % 2 == 0 { "USER" } else { "LOGIN" };
        writeln!(
            w,
            "type={t} msg=audit(1700000000.{:03}:{i}): n={i}",
            i % 1000
        )
        .unwrap();
        if i % 500 == 0 {
            w.flush().unwrap();
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    drop(w);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !(engine.stdin_closed() && got.lock().unwrap().len() as u64 >= n / 2) {
        engine.tick();
        assert!(
            Instant::now() < deadline,
            "got {} of {}",
            got.lock().unwrap().len(),
            n / 2
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(engine.shutdown().is_empty());
    let got = got.lock().unwrap().clone();
    assert_eq!(got.len() as u64, n / 2, "every USER record, once");
    assert!(
        got.windows(2).all(|w| w[0] < w[1]),
        "in order, no duplicates"
    );
    assert!(
        *connections.lock().unwrap() >= 2,
        "the failed batch came again on a new connection"
    );
}

/// A filtered records-mode consumer that stopped within an event (its last
/// stored record did not complete the event's ack id) resumes after the
/// ack id before and within that one (`resume_within`): the event comes
/// again whole, and of it only the records it lacks are handed over.
#[test]
fn a_consumer_resuming_within_an_event_gets_only_the_rest_of_it() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, writer) = start_engine(dir.path());
    // (journal, ack id, seq of the last record held) once the first
    // connection saw the first event; the texts handed over after that.
    type Within = ([u8; 16], u64, u64);
    let within: Arc<Mutex<Option<Within>>> = Arc::default();
    let got: Arc<Mutex<Vec<String>>> = Arc::default();
    let (w, g) = (within.clone(), got.clone());
    let connector: audisp::engine::plugin::Connector = Arc::new(move |fd| {
        let (w, g) = (w.clone(), g.clone());
        std::thread::spawn(move || {
            let mut plugin = Plugin::new("internal");
            let resume = *w.lock().unwrap();
            if let Some((journal, ack, seq)) = resume {
                plugin = plugin
                    .resume_after(journal, ack - 1)
                    .resume_within(ack, seq);
            }
            let _ = plugin.run_on(fd, |batch, ctx| {
                if resume.is_none() {
                    // Holds the first event's first two records, then
                    // fails before acknowledging anything.
                    let first: Vec<_> = batch.records().take(2).collect();
                    assert_eq!(first[0].ack, first[1].ack, "one event");
                    *w.lock().unwrap() = Some((ctx.journal_id(), first[1].ack, first[1].seq));
                    return Err("stopped within the event".into());
                }
                g.lock()
                    .unwrap()
                    .extend(batch.records().map(|r| r.text_lossy().into_owned()));
                Ok(())
            });
        });
    });
    let keep = FilterRule::parse("type r= SYSCALL", FilterAction::Keep).unwrap();
    engine
        .attach_internal(internal_settings(vec![], Some(keep)), connector)
        .unwrap();
    let records = [
        "type=SYSCALL msg=audit(1700000000.000:100): arch=c000003e syscall=257 success=yes exit=3 items=2 comm=\"rm\" exe=\"/usr/bin/rm\"",
        "type=PATH msg=audit(1700000000.000:100): item=0 name=\"/etc\" nametype=PARENT",
        "type=PATH msg=audit(1700000000.000:100): item=1 name=\"/etc/hosts\" nametype=NORMAL",
        "type=PROCTITLE msg=audit(1700000000.000:100): proctitle=726D",
        "type=SYSCALL msg=audit(1700000001.000:101): arch=c000003e syscall=257 success=yes exit=3 items=0 comm=\"rm\" exe=\"/usr/bin/rm\"",
        "type=PROCTITLE msg=audit(1700000001.000:101): proctitle=726D",
    ];
    let mut w = std::fs::File::from(writer);
    for r in records {
        writeln!(w, "{r}").unwrap();
    }
    drop(w);
    let want: Vec<String> = records[2..].iter().map(|r| r.to_string()).collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    while got.lock().unwrap().len() < want.len() {
        engine.tick();
        assert!(Instant::now() < deadline, "got {:?}", got.lock().unwrap());
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(engine.shutdown().is_empty());
    assert_eq!(
        *got.lock().unwrap(),
        want,
        "the rest of the event, then the next"
    );
}
