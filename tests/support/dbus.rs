//! A private, system-like `dbus-daemon` for tests: the distribution's own
//! `/usr/share/dbus-1/system.conf` (so the default deny rules are those of
//! a real system bus) with its socket moved into a temp directory, the
//! fork/user/servicehelper lines removed, and `<include>` of our shipped
//! policy `dbus/org.audisp.Dispatcher1.conf` plus `tests/dbus/*.conf` in
//! place of `system.d` (an `<include>` makes a broken policy file stop the
//! bus from starting, so starting it checks the file). Also runs helper
//! programs (test doubles, clients) as other users and collects what they
//! print.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The uid (and gid) the test setroubleshootd runs as: `daemon`, which
/// tests/dbus/test-peers.conf lets own setroubleshootd's name.
pub const SETROUBLESHOOT_UID: u32 = 1;

/// Why these tests cannot run here, if they cannot (they need root to run
/// clients as other users, and dbus-daemon).
pub fn unavailable() -> Option<String> {
    if !nix::unistd::Uid::effective().is_root() {
        return Some("needs root (runs bus clients as other users)".into());
    }
    for tool in ["dbus-daemon", "setpriv"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .stdout(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !found {
            return Some(format!(
                "{tool} is not installed (apt-get install dbus-daemon util-linux)"
            ));
        }
    }
    if !Path::new("/usr/share/dbus-1/system.conf").exists() {
        return Some(
            "/usr/share/dbus-1/system.conf missing (apt-get install dbus-system-bus-common)".into(),
        );
    }
    None
}

/// Starts dbus-daemon on `conf_path` and waits until it listens.
fn spawn_daemon(conf_path: &Path, socket: &Path, dir: &Path) -> Child {
    let mut child = Command::new("dbus-daemon")
        .arg(format!("--config-file={}", conf_path.display()))
        // What services it activates find it by.
        .env(
            "DBUS_SYSTEM_BUS_ADDRESS",
            format!("unix:path={}", socket.display()),
        )
        .args(["--nofork", "--print-address=1"])
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(dir.join("dbus-daemon.log")).expect("bus log"))
        .spawn()
        .expect("start dbus-daemon");
    let mut first = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut first)
        .expect("bus address");
    assert!(
        first.starts_with("unix:"),
        "dbus-daemon did not start (policy file broken?): {first:?}"
    );
    child
}

/// A running private bus.
pub struct Bus {
    pub dir: tempfile::TempDir,
    child: Child,
    /// `unix:path=…`, for `DBUS_SYSTEM_BUS_ADDRESS`.
    pub address: String,
}

impl Bus {
    /// Starts the bus and waits until it listens.
    pub fn start() -> Bus {
        Bus::start_with(|_| String::new())
    }

    /// Like [`Bus::start`], with the text `extra(dir)` returns added to the
    /// bus configuration (such as a `<servicedir>` for bus activation; it
    /// may write files into `dir`, the bus's directory).
    pub fn start_with(extra: impl FnOnce(&Path) -> String) -> Bus {
        let dir = tempfile::tempdir().expect("tempdir");
        // Other users (nobody, the setroubleshootd user) must reach the socket.
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .expect("chmod");
        let socket = dir.path().join("system_bus_socket");
        let more = extra(dir.path());
        let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut includes = format!(
            "<include>{}</include>",
            repo.join("dbus/org.audisp.Dispatcher1.conf").display()
        );
        let mut peers: Vec<PathBuf> = std::fs::read_dir(repo.join("tests/dbus"))
            .expect("tests/dbus")
            .map(|e| e.expect("entry").path())
            .filter(|p| p.extension().is_some_and(|e| e == "conf"))
            .collect();
        peers.sort();
        for p in peers {
            includes.push_str(&format!("<include>{}</include>", p.display()));
        }
        includes.push_str(&more);
        let base = std::fs::read_to_string("/usr/share/dbus-1/system.conf").expect("system.conf");
        let mut conf = String::new();
        for line in base.lines() {
            let t = line.trim();
            let drop = t == "<user>messagebus</user>"
                || t == "<fork/>"
                || t == "<syslog/>"
                || t.starts_with("<pidfile>")
                || t.starts_with("<servicehelper>")
                || t == "<standard_system_servicedirs/>"
                || t.contains("/etc/dbus-1/system")
                || t.starts_with("<includedir>");
            if drop {
                continue;
            }
            if t.starts_with("<listen>") {
                conf.push_str(&format!(
                    "<listen>unix:path={}</listen>\n",
                    socket.display()
                ));
                continue;
            }
            if t == "</busconfig>" {
                conf.push_str(&includes);
                conf.push('\n');
            }
            conf.push_str(line);
            conf.push('\n');
        }
        let conf_path = dir.path().join("system-like.conf");
        std::fs::write(&conf_path, conf).expect("write bus config");
        let child = spawn_daemon(&conf_path, &socket, dir.path());
        Bus {
            dir,
            child,
            address: format!("unix:path={}", socket.display()),
        }
    }

    /// Kills the bus, as stopping `dbus.service` does (its socket goes).
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(self.dir.path().join("system_bus_socket"));
    }

    /// Kills the bus (if running) and starts a new one at the same address
    /// with the same configuration, as a `dbus.service` restart does;
    /// returns once it listens.
    pub fn restart(&mut self) {
        self.stop();
        let socket = self.dir.path().join("system_bus_socket");
        let conf_path = self.dir.path().join("system-like.conf");
        self.child = spawn_daemon(&conf_path, &socket, self.dir.path());
    }

    /// A command running `program` as `uid` (gid the same, no extra
    /// groups), or as root for uid 0, with the bus as its system bus.
    pub fn command_as(&self, uid: u32, program: &Path) -> Command {
        self.command_as_member(uid, None, program)
    }

    /// Like [`Bus::command_as`], with `group` as the only supplementary
    /// group.
    pub fn command_as_member(&self, uid: u32, group: Option<u32>, program: &Path) -> Command {
        let mut c = if uid == 0 {
            Command::new(program)
        } else {
            let mut c = Command::new("setpriv");
            c.arg(format!("--reuid={uid}"))
                .arg(format!("--regid={uid}"));
            match group {
                Some(g) => c.arg(format!("--groups={g}")),
                None => c.arg("--clear-groups"),
            };
            c.arg(program);
            c
        };
        c.env("DBUS_SYSTEM_BUS_ADDRESS", &self.address);
        c
    }
}

impl Drop for Bus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A program whose standard output is collected line by line (standard
/// error too, each line prefixed with `E: `).
pub struct Helper {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Helper {
    /// Spawns `cmd` collecting its stdout.
    pub fn spawn(mut cmd: Command) -> Helper {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn helper");
        let lines: Arc<Mutex<Vec<String>>> = Arc::default();
        let out = child.stdout.take().expect("stdout");
        let l = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                match line {
                    Ok(line) => l.lock().unwrap().push(line),
                    Err(_) => break,
                }
            }
        });
        let err = child.stderr.take().expect("stderr");
        let l = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines() {
                match line {
                    Ok(line) => l.lock().unwrap().push(format!("E: {line}")),
                    Err(_) => break,
                }
            }
        });
        Helper { child, lines }
    }

    /// Waits until a line satisfies `f`; returns it.
    pub fn wait_line(&mut self, limit: Duration, f: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(l) = self.lines.lock().unwrap().iter().find(|l| f(l)) {
                return l.clone();
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                // Let the reader catch the last lines.
                std::thread::sleep(Duration::from_millis(50));
                if let Some(l) = self.lines.lock().unwrap().iter().find(|l| f(l)) {
                    return l.clone();
                }
                panic!("helper exited ({status}) first; output: {:?}", self.lines());
            }
            assert!(
                Instant::now() < deadline,
                "no such line within {limit:?}; output: {:?}",
                self.lines()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits until at least `n` lines were printed on standard output.
    pub fn wait_count(&mut self, n: usize, limit: Duration) -> Vec<String> {
        let deadline = Instant::now() + limit;
        loop {
            let lines = self.out_lines();
            if lines.len() >= n {
                return lines;
            }
            assert!(
                Instant::now() < deadline,
                "{} of {n} lines within {limit:?}: {lines:?}",
                lines.len()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Every line so far.
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// Standard output's lines so far.
    pub fn out_lines(&self) -> Vec<String> {
        self.lines()
            .into_iter()
            .filter(|l| !l.starts_with("E: "))
            .collect()
    }

    /// Whether it still runs.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits for it to exit; returns its status.
    pub fn wait(&mut self, limit: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(Some(s)) = self.child.try_wait() {
                std::thread::sleep(Duration::from_millis(50));
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "helper still running after {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
