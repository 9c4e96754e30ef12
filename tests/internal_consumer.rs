//! An in-process consumer (what the D-Bus adapter is) attached to the
//! engine gets what any plugin gets: its subscription, every record once,
//! and what it had not acknowledged again after its connection ends.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use audisp::config::{Config, MainConfig, Paths};
use audisp::engine::settings::{
    Backoff, DeliveryMode, Overflow, PluginFormat, PluginSettings, Transport,
};
use audisp::engine::{Engine, Sockets};
use audisp::sdk::Plugin;

/// A journal and the last sequence number handled in it.
type ResumePoint = ([u8; 16], u64);

#[test]
fn internal_consumer_gets_its_subscription_once_across_reconnects() {
    let dir = tempfile::tempdir().unwrap();
    let paths = Paths::resolve(
        Some(dir.path().join("etc")),
        Some(dir.path().join("run")),
        Some(dir.path().join("state")),
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
        .attach_internal(
            PluginSettings {
                name: "internal".into(),
                transport: Transport::Internal,
                format: PluginFormat::Native,
                mode: DeliveryMode::Records,
                include: vec![1005],
                exclude: vec![],
                inputs: None,
                drop_fields: vec![],
                filter: None,
                queue_size: 100_000,
                overflow: Overflow::Spool,
                spool_max: 1 << 30,
                restart: Backoff {
                    initial: Duration::from_millis(10),
                    max: Duration::from_millis(100),
                },
                actions: BTreeMap::new(),
            },
            connector,
        )
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
