//! Runs the real `audispd` binary for integration tests: a private config,
//! runtime and state directory, readiness from `sd_notify` (`READY=1`) rather
//! than sleeps, and helpers to read what the example plugins wrote.

use std::io::{Read, Write};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// The smallest audispd.toml for a test: defaults, without the periodic
/// stats line in the log.
pub const MAIN_NO_STATS: &str = "[stats]\ninterval = \"0\"\n";

/// audispd.toml with a small journal (1M segments and memory) and a 10 s
/// shutdown limit, for tests that start and stop audispd many times.
pub const MAIN_SMALL_JOURNAL: &str = r#"
[journal]
segment_size = "1M"
memory = "1M"
[shutdown]
timeout = "10s"
[stats]
interval = "0"
"#;

/// Path of an example binary (`examples/NAME.rs`), built by `cargo test`.
pub fn example(name: &str) -> PathBuf {
    let mut p = std::env::current_exe().expect("test executable path");
    p.pop();
    if p.ends_with("deps") {
        p.pop();
    }
    let bin = p.join("examples").join(name);
    assert!(
        bin.exists(),
        "{} not built (cargo test builds examples)",
        bin.display()
    );
    bin
}

/// The real record corpus (170k records), decompressed.
pub fn corpus() -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/corpus.log.zst");
    let out = Command::new("zstd")
        .args(["-dc", "--long=27"])
        .arg(&path)
        .output()
        .expect("zstd (apt-get install zstd) decompresses the corpus");
    assert!(
        out.status.success(),
        "zstd -dc {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// The corpus split into record lines.
pub fn lines(data: &[u8]) -> Vec<&[u8]> {
    data.split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .collect()
}

/// One notification: who sent it (from SCM_CREDENTIALS), when it arrived,
/// and its `KEY=VALUE` lines.
#[derive(Debug, Clone)]
pub struct Notification {
    pub pid: Option<i32>,
    pub at: Instant,
    pub text: String,
}

impl Notification {
    /// The value of `KEY=` in this message, if present.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.text
            .lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
    }
}

/// A datagram socket standing in for systemd's notification socket. Like
/// systemd, it learns each sender's pid from SO_PASSCRED credentials.
pub struct NotifyCapture {
    sock: UnixDatagram,
    path: PathBuf,
    seen: Vec<String>,
    log: Vec<Notification>,
}

impl NotifyCapture {
    /// Binds the capture socket at `path`.
    pub fn bind(path: &Path) -> NotifyCapture {
        let sock = UnixDatagram::bind(path).expect("bind notify socket");
        nix::sys::socket::setsockopt(&sock, nix::sys::socket::sockopt::PassCred, &true)
            .expect("SO_PASSCRED");
        NotifyCapture {
            sock,
            path: path.to_path_buf(),
            seen: Vec::new(),
            log: Vec::new(),
        }
    }

    /// Where `NOTIFY_SOCKET` must point.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Receives one message, waiting at most `limit`.
    pub fn next(&mut self, limit: Duration) -> Result<Option<Notification>, String> {
        use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
        use std::os::fd::AsRawFd;
        let ready = nix::poll::poll(
            &mut [nix::poll::PollFd::new(
                std::os::fd::AsFd::as_fd(&self.sock),
                nix::poll::PollFlags::POLLIN,
            )],
            nix::poll::PollTimeout::try_from(limit).unwrap_or(nix::poll::PollTimeout::MAX),
        );
        match ready {
            Ok(0) | Err(nix::errno::Errno::EINTR) => return Ok(None),
            Ok(_) => {}
            Err(e) => return Err(e.to_string()),
        }
        let mut buf = [0u8; 4096];
        let mut iov = [std::io::IoSliceMut::new(&mut buf)];
        let mut cmsg = nix::cmsg_space!(nix::sys::socket::UnixCredentials, [std::os::fd::RawFd; 4]);
        let msg = recvmsg::<()>(
            self.sock.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg),
            MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_CMSG_CLOEXEC,
        )
        .map_err(|e| e.to_string())?;
        let mut pid = None;
        for c in msg.cmsgs().map_err(|e| e.to_string())? {
            match c {
                ControlMessageOwned::ScmCredentials(cred) => pid = Some(cred.pid()),
                // Close passed descriptors (systemd-notify's BARRIER=1 waits
                // for that).
                ControlMessageOwned::ScmRights(fds) => {
                    for fd in fds {
                        let _ = nix::unistd::close(fd);
                    }
                }
                _ => {}
            }
        }
        let n = msg.bytes;
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        let note = Notification {
            pid,
            at: Instant::now(),
            text: text.clone(),
        };
        self.seen.push(text);
        self.log.push(note.clone());
        Ok(Some(note))
    }

    /// Waits for a message containing `needle`; returns it.
    pub fn wait_for(&mut self, needle: &str, limit: Duration) -> Result<String, String> {
        self.wait_note(needle, limit).map(|n| n.text)
    }

    /// Waits for a message containing `needle`; returns it with its sender.
    pub fn wait_note(&mut self, needle: &str, limit: Duration) -> Result<Notification, String> {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(format!(
                    "no notification with {needle:?} within {limit:?}; saw {:?}",
                    self.seen
                ));
            }
            if let Some(n) = self.next(left)? {
                if n.text.contains(needle) {
                    return Ok(n);
                }
            }
        }
    }

    /// Every message received so far.
    pub fn seen(&self) -> &[String] {
        &self.seen
    }

    /// Every message received so far, with senders and arrival times.
    pub fn log(&self) -> &[Notification] {
        &self.log
    }
}

/// A private audispd.
pub struct Dispatcher {
    pub dir: tempfile::TempDir,
    pub child: Option<Child>,
    pub notify: NotifyCapture,
    stderr_path: PathBuf,
}

impl Dispatcher {
    /// Prepares directories and a main config (`main` is the body of
    /// audispd.toml; paths in it may use `{dir}` for the test directory).
    pub fn new(main: &str) -> Dispatcher {
        let dir = tempfile::tempdir().expect("tempdir");
        for d in ["etc/plugins.d", "run", "state", "out"] {
            std::fs::create_dir_all(dir.path().join(d)).expect("mkdir");
        }
        let notify = NotifyCapture::bind(&dir.path().join("notify.sock"));
        let stderr_path = dir.path().join("audispd.log");
        let d = Dispatcher {
            dir,
            child: None,
            notify,
            stderr_path,
        };
        d.write_main(main);
        d
    }

    /// The test directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// A file under `out/`, where plugins write.
    pub fn out(&self, name: &str) -> PathBuf {
        self.path().join("out").join(name)
    }

    fn expand(&self, text: &str) -> String {
        text.replace("{dir}", &self.path().display().to_string())
    }

    /// Writes audispd.toml.
    pub fn write_main(&self, main: &str) {
        std::fs::write(self.path().join("etc/audispd.toml"), self.expand(main))
            .expect("write main config");
    }

    /// Writes plugins.d/NAME.toml.
    pub fn write_plugin(&self, name: &str, body: &str) {
        std::fs::write(
            self.path().join(format!("etc/plugins.d/{name}.toml")),
            self.expand(body),
        )
        .expect("write plugin");
    }

    /// Removes plugins.d/NAME.toml.
    pub fn remove_plugin(&self, name: &str) {
        std::fs::remove_file(self.path().join(format!("etc/plugins.d/{name}.toml")))
            .expect("remove plugin");
    }

    /// audispd's arguments for this directory.
    pub fn args(&self) -> Vec<std::ffi::OsString> {
        let mut v = Vec::new();
        for (flag, sub) in [
            ("--config-dir", "etc"),
            ("--runtime-dir", "run"),
            ("--state-dir", "state"),
        ] {
            v.push(flag.into());
            v.push(self.path().join(sub).into_os_string());
        }
        v
    }

    /// The command that starts audispd on this directory.
    pub fn command(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_audispd"));
        c.args(self.args())
            .env("NOTIFY_SOCKET", self.notify.path())
            .env("AUDISP_LOG", "info");
        c
    }

    /// Spawns `cmd` (audispd, or a launcher that ends up exec'ing it) with
    /// `stdin`, its stderr going to the log, without waiting for READY=1.
    pub fn spawn(&mut self, mut cmd: Command, stdin: Stdio) -> Result<(), String> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.stderr_path)
            .map_err(|e| e.to_string())?;
        let child = cmd
            .stdin(stdin)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot start audispd: {e}"))?;
        self.child = Some(child);
        Ok(())
    }

    /// Starts audispd with `stdin` and waits for READY=1.
    pub fn start(&mut self, stdin: Stdio) -> Result<(), String> {
        self.spawn(self.command(), stdin)?;
        self.notify
            .wait_for("READY=1", Duration::from_secs(30))
            .map_err(|e| format!("{e}\n--- audispd log ---\n{}", self.log_tail(60)))?;
        Ok(())
    }

    /// audispd's stderr so far.
    pub fn log(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.stderr_path) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    /// The last `n` lines of audispd's stderr, for failure messages.
    pub fn log_tail(&self, n: usize) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// The daemon's pid.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).expect("running")
    }

    /// Sends a signal.
    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid() as i32), sig).expect("kill");
    }

    /// SIGHUP, and waits for the reload to finish (RELOADING=1 then READY=1).
    pub fn reload(&mut self) -> Result<(), String> {
        self.signal(nix::sys::signal::Signal::SIGHUP);
        self.notify
            .wait_for("RELOADING=1", Duration::from_secs(10))?;
        self.notify.wait_for("READY=1", Duration::from_secs(10))?;
        Ok(())
    }

    /// Waits for the daemon to exit by itself.
    pub fn wait(&mut self, limit: Duration) -> Result<ExitStatus, String> {
        let deadline = Instant::now() + limit;
        let child = self.child.as_mut().ok_or("not running")?;
        loop {
            if let Some(s) = child.try_wait().map_err(|e| e.to_string())? {
                self.child = None;
                return Ok(s);
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "audispd still running after {limit:?}\n{}",
                    self.log_tail(60)
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM and wait.
    pub fn stop(&mut self) -> Result<ExitStatus, String> {
        self.signal(nix::sys::signal::Signal::SIGTERM);
        self.wait(Duration::from_secs(60))
    }

    /// Asks for the state report (SIGUSR1) and returns it.
    pub fn state(&self) -> String {
        use std::os::unix::fs::MetadataExt;
        let path = self.path().join("run/audispd.state");
        // The report replaces the file (a new inode each time): compare the
        // inode too, since two reports can share a coarse mtime.
        let stamp = |p: &Path| {
            std::fs::metadata(p)
                .ok()
                .map(|m| (m.ino(), m.mtime(), m.mtime_nsec()))
        };
        let before = stamp(&path);
        self.signal(nix::sys::signal::Signal::SIGUSR1);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let now = stamp(&path);
            if now.is_some() && now != before {
                return std::fs::read_to_string(&path).unwrap_or_default();
            }
            assert!(
                Instant::now() < deadline,
                "no state report\n{}",
                self.log_tail(60)
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Dispatcher {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// One record a sink wrote: its sequence number and text.
pub type SinkRecord = (u64, Vec<u8>);

/// A sink's output: every record, and (in events mode) every event's id
/// with its records.
#[derive(Debug, Default)]
pub struct SinkOutput {
    pub records: Vec<SinkRecord>,
    pub events: Vec<(u64, Vec<SinkRecord>)>,
}

/// Reads what `examples/sink` wrote.
pub fn read_sink(path: &Path) -> SinkOutput {
    let mut data = std::fs::read(path).unwrap_or_default();
    // The sink may be mid-write while we poll: only complete lines count.
    let complete = data.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    data.truncate(complete);
    let mut out = SinkOutput::default();
    let mut current = Vec::new();
    for line in data.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        if line.starts_with(b"JOURNAL\t") || line.starts_with(b"ACK\t") {
            continue;
        }
        if let Some(id) = line.strip_prefix(b"EVENT\t") {
            let id: u64 = std::str::from_utf8(id).unwrap().parse().unwrap();
            out.events.push((id, std::mem::take(&mut current)));
            continue;
        }
        let tab = line
            .iter()
            .position(|&b| b == b'\t')
            .expect("SEQ<TAB>RECORD");
        let seq: u64 = std::str::from_utf8(&line[..tab]).unwrap().parse().unwrap();
        let rec = (seq, line[tab + 1..].to_vec());
        current.push(rec.clone());
        out.records.push(rec);
    }
    out
}

/// Feeds `data` to a child's stdin from a thread.
pub fn feed(mut stdin: impl Write + Send + 'static, data: Vec<u8>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        for chunk in data.chunks(64 * 1024) {
            if stdin.write_all(chunk).is_err() {
                return;
            }
        }
    })
}

/// Where the small real record sample is.
pub fn sample_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/sample.log")
}

/// The small real record sample (4380 records, every line distinct).
pub fn sample() -> Vec<u8> {
    std::fs::read(sample_path()).expect("tests/data/sample.log")
}

/// The sample with every time stamp moved (`msg=audit(` → `msg=audit(K`),
/// so that copy `k` holds records distinct from every other copy; copy 0 is
/// the sample itself.
pub fn sample_shifted(k: usize) -> Vec<u8> {
    if k == 0 {
        return sample();
    }
    String::from_utf8(sample())
        .expect("the sample is UTF-8")
        .replace("msg=audit(", &format!("msg=audit({k}"))
        .into_bytes()
}

/// `n` distinct copies of the sample, one after the other.
pub fn sample_copies(n: usize) -> Vec<u8> {
    (0..n).flat_map(sample_shifted).collect()
}

/// A plugins.d body that runs `examples/sink` writing to `out/NAME`, with
/// `extra` sink arguments (already quoted TOML strings, comma-separated) and
/// `rest` appended after the `exec` line.
pub fn sink_plugin(name: &str, extra: &str, rest: &str) -> String {
    let sink = example("sink");
    let extra = if extra.is_empty() {
        String::new()
    } else {
        format!(", {extra}")
    };
    format!(
        "exec = [\"{}\", \"--out\", \"{{dir}}/out/{name}\", \"--name\", \"{name}\"{extra}]\n{rest}\n",
        sink.display()
    )
}

/// One line of the state report: `input NAME = STATE k=v…` or
/// `plugin NAME = STATE k=v…`.
#[derive(Debug, Clone, Default)]
pub struct StateLine {
    /// `connected`, `closed`, `suspended`, `connecting`…
    pub state: String,
    /// Every `key=number` field.
    pub fields: std::collections::BTreeMap<String, u64>,
}

impl StateLine {
    /// A counter; panics (failing the test) if the report lacks it.
    pub fn get(&self, key: &str) -> u64 {
        *self
            .fields
            .get(key)
            .unwrap_or_else(|| panic!("no {key}= in state line {self:?}"))
    }
}

/// Finds `KIND NAME = …` (kind `input` or `plugin`) in a state report.
pub fn state_line(report: &str, kind: &str, name: &str) -> Option<StateLine> {
    let prefix = format!("{kind} {name} = ");
    let line = report.lines().find(|l| l.starts_with(&prefix))?;
    let mut words = line[prefix.len()..].split_whitespace();
    let state = words.next().unwrap_or_default().to_string();
    let fields = words
        .filter_map(|w| {
            let (k, v) = w.split_once('=')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect();
    Some(StateLine { state, fields })
}

impl Dispatcher {
    /// The state report's line for plugin `name`; panics if absent.
    pub fn plugin_state(&self, name: &str) -> StateLine {
        let report = self.state();
        state_line(&report, "plugin", name)
            .unwrap_or_else(|| panic!("plugin {name} not in the state report:\n{report}"))
    }

    /// The state report's line for input `name`; panics if absent.
    pub fn input_state(&self, name: &str) -> StateLine {
        let report = self.state();
        state_line(&report, "input", name)
            .unwrap_or_else(|| panic!("input {name} not in the state report:\n{report}"))
    }

    /// `kill -9` and reap: a crash, nothing flushed or said goodbye.
    pub fn crash(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().expect("SIGKILL audispd");
            c.wait().expect("reap audispd");
        }
    }

    /// Whether the daemon is still running.
    pub fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Polls audispd's log until it contains `needle`.
    pub fn wait_log(&self, needle: &str, limit: Duration) {
        let deadline = Instant::now() + limit;
        while !self.log().contains(needle) {
            assert!(
                Instant::now() < deadline,
                "no {needle:?} in audispd's log within {limit:?}\n{}",
                self.log_tail(60)
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The input socket's path (the default, under the runtime directory).
    pub fn input_socket(&self) -> PathBuf {
        self.path().join("run/input.sock")
    }
}

/// Polls a sink's output until it holds at least `n` records; returns it.
pub fn wait_sink(path: &Path, n: usize, limit: Duration) -> SinkOutput {
    let deadline = Instant::now() + limit;
    loop {
        let out = read_sink(path);
        if out.records.len() >= n {
            return out;
        }
        assert!(
            Instant::now() < deadline,
            "{}: {} records within {limit:?}, expected {n}",
            path.display(),
            out.records.len()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The texts of a sink's records.
pub fn texts(out: &SinkOutput) -> Vec<&[u8]> {
    out.records.iter().map(|r| &r.1[..]).collect()
}
