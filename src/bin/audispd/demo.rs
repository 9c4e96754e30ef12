//! `audispd --demo`: the dispatcher's main job on any machine, as any user.
//!
//! An embedded default configuration is written to a fresh temporary
//! directory; the bundled sample of real audit records (captured from
//! Debian's auditd 3.0.9, `tests/data/sample.log`) is fed to the engine as
//! auditd would feed it on standard input; three example plugins written
//! with the SDK listen on their own sockets, as socket-activated plugin units
//! do, and a stock auditd-style plugin (`wc -l`, reading the string format on
//! its standard input) is started by the dispatcher. When the input ends,
//! the dispatcher flushes every plugin and the demo prints what each got.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use audisp::config::{self, Paths};
use audisp::engine::{Engine, Sockets};
use audisp::sdk::Plugin;

const SAMPLE: &[u8] = include_bytes!("../../../tests/data/sample.log");

#[derive(Default)]
struct Seen {
    records: u64,
    events: u64,
    by_type: BTreeMap<String, u64>,
    examples: Vec<String>,
}

fn write(path: &Path, text: &str) -> Result<(), String> {
    std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))
}

/// Starts an SDK plugin on a thread, listening on `socket`.
fn spawn_plugin(plugin: Plugin, seen: Arc<Mutex<Seen>>, events: bool) {
    std::thread::spawn(move || {
        let result = plugin.run(|batch, _ctx| {
            let mut s = seen.lock().unwrap_or_else(|p| p.into_inner());
            for r in batch.records() {
                s.records += 1;
                *s.by_type.entry(r.type_name().into_owned()).or_default() += 1;
            }
            if events {
                for ev in batch.events() {
                    s.events += 1;
                    if s.examples.len() < 3 {
                        if let Some(exe) = ev.records().find_map(|r| field(r.text, b"exe=")) {
                            s.examples.push(exe);
                        }
                    }
                }
            } else if s.examples.len() < 3 {
                for r in batch.records() {
                    if s.examples.len() < 3 {
                        s.examples.push(short(&r.text_lossy(), 110));
                    }
                }
            }
            Ok(())
        });
        if let Err(e) = result {
            eprintln!("demo plugin: {e}");
        }
    });
}

fn field(text: &[u8], key: &[u8]) -> Option<String> {
    let at = text.windows(key.len()).position(|w| w == key)? + key.len();
    let rest = &text[at..];
    let end = rest
        .iter()
        .position(|&b| b == b' ' || b == 0x1d)
        .unwrap_or(rest.len());
    Some(String::from_utf8_lossy(&rest[..end]).into_owned())
}

fn short(s: &str, n: usize) -> String {
    let s: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if s.chars().count() <= n {
        s
    } else {
        format!("{}…", s.chars().take(n).collect::<String>())
    }
}

/// Runs the demo; returns the directory it used.
pub fn run() -> Result<(), String> {
    let dir: PathBuf = std::env::temp_dir().join(format!("audisp-demo-{}", std::process::id()));
    let result = run_in(&dir);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn run_in(dir: &Path) -> Result<(), String> {
    let etc = dir.join("etc");
    let run = dir.join("run");
    let plugins = run.join("plugins");
    for d in [etc.join("plugins.d"), plugins.clone(), dir.join("state")] {
        std::fs::create_dir_all(&d).map_err(|e| format!("{}: {e}", d.display()))?;
    }
    write(
        &etc.join("audispd.toml"),
        "[input.socket]\nenabled = false\n[stats]\ninterval = \"0\"\n[shutdown]\ntimeout = \"30s\"\n",
    )?;
    let sock = |name: &str| plugins.join(format!("{name}.sock"));
    write(
        &etc.join("plugins.d/records.toml"),
        &format!(
            "# every record, one at a time\nsocket = \"{}\"\n",
            sock("records").display()
        ),
    )?;
    write(
        &etc.join("plugins.d/commands.toml"),
        &format!(
            "# whole events that ran a program (the plugin asks for events)\nsocket = \"{}\"\ninclude = [\"EXECVE\"]\n",
            sock("commands").display()
        ),
    )?;
    write(
        &etc.join("plugins.d/logins.toml"),
        &format!(
            "# only user-space authentication records\nsocket = \"{}\"\ninclude = [\"USER\", \"USER_AUTH\", \"USER_ACCT\", \"USER_LOGIN\", \"USER_START\", \"USER_END\", \"CRED_ACQ\", \"CRED_DISP\", \"USER_MGMT\"]\n",
            sock("logins").display()
        ),
    )?;
    let count_file = dir.join("stock.count");
    write(
        &etc.join("plugins.d/stock.toml"),
        &format!(
            "# a stock auditd plugin: string format on its standard input\nexec = [\"/bin/sh\", \"-c\", \"exec wc -l > {}\"]\nformat = \"string\"\n",
            count_file.display()
        ),
    )?;

    let seen: Vec<(&str, &str, Arc<Mutex<Seen>>)> = vec![
        ("records", "native, every record", Arc::default()),
        (
            "commands",
            "native, whole events with EXECVE",
            Arc::default(),
        ),
        (
            "logins",
            "native, USER_* and CRED_* records",
            Arc::default(),
        ),
    ];
    for (name, _, s) in &seen {
        let mut p = Plugin::new(name).listen(sock(name));
        if *name == "commands" {
            p = p.events();
        }
        spawn_plugin(p, s.clone(), *name == "commands");
    }

    let paths = Paths::resolve(Some(etc), Some(run), Some(dir.join("state")), &|_| None);
    let loaded = config::load(&paths);
    if let Some(d) = loaded.diagnostics.first() {
        return Err(format!("demo configuration: {d}"));
    }
    let config = loaded.config.ok_or("demo configuration did not load")?;
    let (reader, writer) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| e.to_string())?;
    let records_in = SAMPLE.iter().filter(|&&b| b == b'\n').count();
    println!(
        "audisp demo: {records_in} real audit records (Debian auditd 3.0.9, ENRICHED) through audispd to 4 plugins\n"
    );
    let started = Instant::now();
    let engine = Engine::start(
        config.engine_settings(),
        &paths.state_dir,
        Sockets {
            stdin: Some(reader),
            input_listener: None,
        },
        "audispd demo",
    )
    .map_err(|e| format!("cannot start the dispatcher: {e}"))?;
    let feeder = std::thread::spawn(move || {
        let mut w = std::fs::File::from(writer);
        let _ = w.write_all(SAMPLE);
    });
    while !engine.stdin_closed() {
        engine.tick();
        std::thread::sleep(Duration::from_millis(20));
        if started.elapsed() > Duration::from_secs(60) {
            return Err("the demo did not finish within a minute".into());
        }
    }
    let _ = feeder.join();
    let behind = engine.shutdown();
    let elapsed = started.elapsed();
    let snapshot = engine.snapshot();

    for (name, what, s) in &seen {
        let s = s.lock().unwrap_or_else(|p| p.into_inner());
        let mut top: Vec<(&String, &u64)> = s.by_type.iter().collect();
        top.sort_by(|a, b| b.1.cmp(a.1));
        let top: Vec<String> = top
            .iter()
            .take(5)
            .map(|(t, n)| format!("{t} {n}"))
            .collect();
        println!("{name:<9} ({what})");
        if s.events > 0 {
            println!("          {} events, {} records", s.events, s.records);
        } else {
            println!("          {} records: {}", s.records, top.join(", "));
        }
        for e in &s.examples {
            println!("          e.g. {e}");
        }
    }
    let count = std::fs::read_to_string(&count_file).unwrap_or_default();
    println!(
        "stock     (auditd's string format on stdin, `wc -l`)\n          {} lines",
        count.trim()
    );
    println!(
        "\n{} records in, journal {}..{}, {:.0} ms; {}",
        snapshot.records_in(),
        snapshot.journal.start,
        snapshot.journal.end,
        elapsed.as_secs_f64() * 1000.0,
        if behind.is_empty() {
            "every plugin got every record it subscribed to"
        } else {
            "some plugins had not caught up"
        }
    );
    Ok(())
}
