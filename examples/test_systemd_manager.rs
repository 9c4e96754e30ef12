//! A stand-in for systemd's manager on a private bus, for tests of the
//! system actions: owns `org.freedesktop.systemd1`, answers
//! `org.freedesktop.systemd1.Manager.StartUnit(ss) -> o` with a job path
//! and prints `StartUnit UNIT MODE` on standard output for each call.
//! Prints `READY` once it owns the name (bus from
//! `DBUS_SYSTEM_BUS_ADDRESS`).

use std::io::Write;
use std::sync::atomic::{AtomicU32, Ordering};

use zbus::zvariant::OwnedObjectPath;

struct Manager {
    jobs: AtomicU32,
}

#[zbus::interface(name = "org.freedesktop.systemd1.Manager")]
impl Manager {
    fn start_unit(&self, name: String, mode: String) -> zbus::fdo::Result<OwnedObjectPath> {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "StartUnit {name} {mode}");
        let _ = out.flush();
        let n = self.jobs.fetch_add(1, Ordering::SeqCst) + 1;
        OwnedObjectPath::try_from(format!("/org/freedesktop/systemd1/job/{n}"))
            .map_err(|e| zbus::fdo::Error::Failed(e.to_string()))
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let _conn = zbus::blocking::connection::Builder::system()?
        .serve_at(
            "/org/freedesktop/systemd1",
            Manager {
                jobs: AtomicU32::new(0),
            },
        )?
        .name("org.freedesktop.systemd1")?
        .build()?;
    println!("READY");
    std::io::stdout().flush()?;
    loop {
        std::thread::park();
    }
}
