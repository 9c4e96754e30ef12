//! Runs Debian's real `auditd` (3.0.9) against the kernel, so integration tests and benchmarks can
//! feed audisp genuine records and compare what auditd logged with what its plugins received.
//!
//! [`AUDITD_DIR_VAR`] (`AUDISP_TEST_AUDITD=DIR`) runs the same tests against another build's
//! `auditd` and `auditctl` (both in DIR), e.g. auditd ≥ 4.1.1, which writes exact binary frames
//! where 3.0.9 pads them ([`Framing`], taken from `auditctl -v`). CI leaves it unset.
//!
//! Kernel audit is machine-wide shared state, so this module is deliberately careful:
//!
//! * [`RealAuditd::available`] refuses (with the reason) when the process is not root, auditd or
//!   auditctl is missing, kernel audit cannot be controlled from here, the audit configuration is
//!   locked, or another auditd already owns the kernel's audit connection.
//! * auditd runs with its own config directory (`auditd -n -c DIR`), log file and `plugin_dir` in a
//!   private temporary directory; the system's `/etc/audit` is never read or changed. auditd 3.0.9
//!   still writes `/var/run/auditd.pid` (and `/var/run/auditd.state` on SIGCONT) and removes them
//!   when it exits.
//! * Only processes whose login uid is [`TEST_AUID`] are recorded: every rule must filter on it, and
//!   a `never,user` rule drops user-space messages (e.g. from PAM) sent by anybody else.
//!   [`RealAuditd::workload`] builds commands that run with that login uid.
//! * [`RealAuditd::stop`] (and `Drop`, so a failing test cleans up too) removes exactly the rules
//!   it added, restores `backlog_limit` and `enabled` to the values found at start, stops auditd by
//!   its PID with SIGTERM and checks that `auditctl -s` shows `pid 0` and the original settings.
//!
//! Tests call [`RealAuditd::available_when_idle`] first and, when it fails, hand the reason to
//! `support::skip` and return. CI runs the test suite as root on a kernel with audit enabled and
//! `AUDISP_TEST_REQUIRE_ALL=1`, so there these tests run, and a skip fails.
//!
//! Only one auditd can own kernel audit at a time, so every instance holds [`KernelAuditLock`],
//! an `flock` on [`KERNEL_AUDIT_LOCK`]: tests of one binary, two test binaries and two people's
//! runs on one machine wait for each other instead of seeing each other's auditd and skipping.
//! An auditd the tests did not start (the system's own) still makes `available` refuse.

use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Login uid whose processes the harness records: 65534, `nobody`, which cannot log in, so no
/// session on the machine has it. Unlike an arbitrary unused uid it has a passwd entry on every
/// distribution, so auditd's ENRICHED formatting resolves `AUID="nobody"` from its cache. An auid
/// without a passwd entry (e.g. 64500) misses on every lookup: Debian's auditd 3.0.9 then spends
/// about 62 µs of CPU per record instead of about 19 µs, which would distort throughput figures.
pub const TEST_AUID: u32 = super::NOBODY;

/// `TEST_AUID` as written to `/proc/self/loginuid` (kept as bytes so the child after `fork`
/// does not need to format or allocate anything).
const TEST_AUID_TEXT: &[u8] = b"65534";

/// Bytes the real-auditd tests' `dd` workload copies one at a time: each is one
/// `write(1, …, 1)`, so one SYSCALL event.
pub const DD_WRITES: usize = 10_000;

/// Key put on rules added by [`RealAuditd::record_syscalls`], visible as `key="…"` in SYSCALL records.
pub const RULE_KEY: &str = "audisp-harness";

/// Largest record payload auditd hands to plugins (`MAX_AUDIT_MESSAGE_LENGTH`).
pub const MAX_AUDIT_MESSAGE_LENGTH: usize = 8970;

/// Size of `struct audit_dispatcher_header` in front of every binary plugin frame.
pub const DISPATCHER_HEADER_LEN: usize = 16;

/// How long auditd may take to register with the kernel, exit, or deliver records to a plugin.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(15);
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(15);
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(120);

/// Environment variable naming a directory whose `auditd` and `auditctl` the tests run instead of
/// the system's (`/usr/sbin`, `/sbin`), to check audisp against another auditd version by hand.
pub const AUDITD_DIR_VAR: &str = "AUDISP_TEST_AUDITD";

/// auditd 3.0.9 reads config lines into a 160-byte buffer; longer lines are rejected.
const MAX_CONFIG_LINE: usize = 158;

/// The lock file every user of kernel audit in the tests holds (see [`KernelAuditLock`]); in
/// `/run/lock`, so every test run on the machine sees the same file.
pub const KERNEL_AUDIT_LOCK: &str = "/run/lock/audisp-test-kernel-audit.lock";

/// Exclusive use of kernel audit among test processes: an `flock` on [`KERNEL_AUDIT_LOCK`],
/// held until dropped. Two holders in one process conflict too (each opens the file anew), so
/// it also serialises the tests of one binary.
pub struct KernelAuditLock {
    _file: nix::fcntl::Flock<File>,
}

impl KernelAuditLock {
    /// Waits until no other test (in this or another process) holds the lock, then takes it.
    pub fn acquire() -> Result<Self, String> {
        use nix::fcntl::{Flock, FlockArg};
        let path = Path::new(KERNEL_AUDIT_LOCK);
        // Open an existing file without O_CREAT: with `fs.protected_regular`, O_CREAT on a
        // file another user made in the sticky /run/lock fails even for root.
        let open = || {
            File::open(path)
                .or_else(|e| match e.kind() {
                    io::ErrorKind::NotFound => OpenOptions::new()
                        .create(true)
                        .truncate(false)
                        .write(true)
                        .open(path),
                    _ => Err(e),
                })
                .map_err(|e| io_error("open", path, e))
        };
        match Flock::lock(open()?, FlockArg::LockExclusiveNonblock) {
            Ok(file) => return Ok(KernelAuditLock { _file: file }),
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => {
                eprintln!("waiting for {KERNEL_AUDIT_LOCK}: another test is using kernel audit")
            }
            Err((_, e)) => return Err(format!("cannot lock {KERNEL_AUDIT_LOCK}: {e}")),
        }
        Flock::lock(open()?, FlockArg::LockExclusive)
            .map(|file| KernelAuditLock { _file: file })
            .map_err(|(_, e)| format!("cannot lock {KERNEL_AUDIT_LOCK}: {e}"))
    }
}

/// Makes every sync marker unique within the process.
static MARKER_COUNTER: AtomicU64 = AtomicU64::new(0);

/// The capture plugin (a shell script copying stdin to a file), installed root-owned and 0750 into
/// the private directory because auditd refuses plugins whose binary is writable by others.
const CAPTURE_PLUGIN_SCRIPT: &str = include_str!("capture-plugin.sh");

/// `log_format` of the private auditd: decides the text of log lines and the dispatcher
/// protocol version plugins receive (ENRICHED: V1 formatted lines with a 0x1D section; RAW: V0
/// kernel payloads).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// auditd's default: raw fields, then 0x1D and interpreted UID/GID/ARCH/SYSCALL/SADDR fields.
    Enriched,
    /// The kernel's text only.
    Raw,
}

impl LogFormat {
    fn config_value(self) -> &'static str {
        match self {
            LogFormat::Enriched => "ENRICHED",
            LogFormat::Raw => "RAW",
        }
    }
}

/// `format` of a plugin: one `\n`-terminated line per record, or binary dispatcher frames.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PluginFormat {
    /// `format = string`.
    String,
    /// `format = binary` (16-byte header plus payload; see [`Framing`]).
    Binary,
}

impl PluginFormat {
    fn config_value(self) -> &'static str {
        match self {
            PluginFormat::String => "string",
            PluginFormat::Binary => "binary",
        }
    }
}

/// What auditd runs for a plugin.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PluginProgram {
    /// The harness's capture plugin: copies the stream into [`RealAuditd::capture_path`].
    Capture,
    /// A program supplied by the test. auditd 3.0.9 requires it to be a root-owned regular file
    /// with at least mode 0750 that nobody else can write, accepts at most two `args` and splits
    /// them on spaces, and execs it with an empty environment.
    Executable {
        /// Absolute path of the program.
        path: PathBuf,
        /// `argv[1..]`, at most two words without spaces.
        args: Vec<String>,
    },
}

/// One `plugins.d/<name>.conf` file of the private auditd.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plugin {
    /// File name stem of the `.conf` file; also names the capture output.
    pub name: String,
    /// Stream format auditd writes to the plugin.
    pub format: PluginFormat,
    /// Program auditd starts.
    pub program: PluginProgram,
}

impl Plugin {
    /// A capture plugin named `name` receiving `format`; read its output after
    /// [`RealAuditd::stop`] with [`RealAuditd::capture_lines`] or [`RealAuditd::capture_frames`].
    pub fn capture(name: &str, format: PluginFormat) -> Self {
        Plugin {
            name: name.to_owned(),
            format,
            program: PluginProgram::Capture,
        }
    }

    /// A plugin running the test's own program (see [`PluginProgram::Executable`]).
    pub fn executable(name: &str, format: PluginFormat, path: &Path, args: &[&str]) -> Self {
        Plugin {
            name: name.to_owned(),
            format,
            program: PluginProgram::Executable {
                path: path.to_owned(),
                args: args.iter().map(|a| (*a).to_owned()).collect(),
            },
        }
    }
}

/// Settings of the private auditd. The defaults suit a high-rate test: the largest dispatcher
/// queue auditd 3.0.9 accepts, no forced flushing of the log, no disk-space action that could
/// suspend logging, no priority boost, and a kernel backlog large enough that producers rarely
/// wait for auditd.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditdOptions {
    /// `log_format`.
    pub log_format: LogFormat,
    /// `q_depth`: records the dispatcher may hold for plugins (1..=99999 in 3.0.9).
    pub q_depth: u32,
    /// Kernel `backlog_limit` to set while auditd runs (restored at stop); `None` leaves it alone.
    pub backlog_limit: Option<u32>,
    /// Plugins auditd starts, in no particular order (auditd uses `readdir` order).
    pub plugins: Vec<Plugin>,
}

impl Default for AuditdOptions {
    fn default() -> Self {
        AuditdOptions {
            log_format: LogFormat::Enriched,
            q_depth: 99_999,
            backlog_limit: Some(8192),
            plugins: Vec::new(),
        }
    }
}

/// The kernel audit state reported by `auditctl -s` and `auditctl -l`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelAudit {
    /// `enabled`: 0 off, 1 on, 2 locked.
    pub enabled: u32,
    /// `failure` mode.
    pub failure: u32,
    /// PID of the registered audit daemon, 0 when none.
    pub pid: u32,
    /// `rate_limit` (records per second, 0 = unlimited).
    pub rate_limit: u32,
    /// `backlog_limit`.
    pub backlog_limit: u32,
    /// Records the kernel lost since boot.
    pub lost: u64,
    /// `loginuid_immutable`: 1 when a set login uid can never change.
    pub loginuid_immutable: u32,
    /// Output of `auditctl -l` (the loaded rules).
    pub rules: String,
}

impl KernelAudit {
    /// Reads the current state with `auditctl -s` and `auditctl -l`.
    pub fn read() -> Result<Self, String> {
        let status = auditctl(&["-s"])?;
        let field = |name: &str| -> Result<u64, String> {
            status
                .lines()
                .find_map(|line| {
                    let mut words = line.split_whitespace();
                    (words.next() == Some(name)).then(|| words.next()).flatten()
                })
                .ok_or_else(|| format!("`auditctl -s` printed no `{name}` line:\n{status}"))?
                .parse::<u64>()
                .map_err(|e| format!("`auditctl -s` printed a bad `{name}` value ({e}):\n{status}"))
        };
        let small = |name: &str| -> Result<u32, String> {
            u32::try_from(field(name)?).map_err(|e| format!("`auditctl -s` {name}: {e}"))
        };
        Ok(KernelAudit {
            enabled: small("enabled")?,
            failure: small("failure")?,
            pid: small("pid")?,
            rate_limit: small("rate_limit")?,
            backlog_limit: small("backlog_limit")?,
            lost: field("lost")?,
            loginuid_immutable: small("loginuid_immutable")?,
            rules: auditctl(&["-l"])?,
        })
    }

    /// Describes every setting (all but the `lost` counter) in which `self` differs from `before`.
    pub fn differences_from(&self, before: &KernelAudit) -> Vec<String> {
        let mut out = Vec::new();
        let pairs = [
            ("enabled", before.enabled, self.enabled),
            ("failure", before.failure, self.failure),
            ("pid", before.pid, self.pid),
            ("rate_limit", before.rate_limit, self.rate_limit),
            ("backlog_limit", before.backlog_limit, self.backlog_limit),
        ];
        for (name, was, now) in pairs {
            if was != now {
                out.push(format!("{name} is {now}, was {was}"));
            }
        }
        if before.rules != self.rules {
            out.push(format!(
                "audit rules are\n{}\nbut were\n{}",
                self.rules, before.rules
            ));
        }
        out
    }
}

/// What [`RealAuditd::stop`] observed.
#[derive(Debug)]
pub struct StopReport {
    /// Kernel state before the harness touched anything.
    pub kernel_before: KernelAudit,
    /// Kernel state after auditd exited and settings were restored.
    pub kernel_after: KernelAudit,
    /// auditd's exit status.
    pub auditd_exit: ExitStatus,
}

impl StopReport {
    /// Records the kernel reported lost while the harness ran (`lost` after minus before).
    pub fn lost_during_run(&self) -> u64 {
        self.kernel_after
            .lost
            .saturating_sub(self.kernel_before.lost)
    }
}

/// How binary plugin frames are laid out on the stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// auditd ≤ 4.1.0 (Debian's 3.0.9): always 16 + 8970 bytes; bytes after `size` are stale heap.
    Padded,
    /// auditd ≥ 4.1.1: 16 + `size` bytes.
    Exact,
}

impl Framing {
    /// The framing auditd `version` (e.g. "3.0.9") writes.
    pub fn for_version(version: &str) -> Result<Self, String> {
        let numbers: Vec<u32> = version
            .split('.')
            .map(|part| part.parse::<u32>())
            .collect::<Result<_, _>>()
            .map_err(|e| format!("cannot read auditd version {version:?}: {e}"))?;
        let key = (
            numbers.first().copied().unwrap_or(0),
            numbers.get(1).copied().unwrap_or(0),
            numbers.get(2).copied().unwrap_or(0),
        );
        Ok(if key <= (4, 1, 0) {
            Framing::Padded
        } else {
            Framing::Exact
        })
    }

    /// The framing of the auditd the tests run (the system's, or [`AUDITD_DIR_VAR`]'s), known
    /// before it starts, for configuring a binary reader in front of it.
    pub fn of_tested_auditd() -> Result<Self, String> {
        Self::for_version(&auditd_version()?)
    }
}

/// One binary dispatcher frame, with only the meaningful `size` bytes of payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// `hdr.ver`: 0 = raw kernel payload, 1 = formatted line.
    pub version: u32,
    /// `hdr.hlen` (16).
    pub header_len: u32,
    /// `hdr.type`: numeric record type.
    pub record_type: u32,
    /// The first `hdr.size` payload bytes.
    pub payload: Vec<u8>,
}

/// A private auditd registered with the kernel, plus the rules and settings it added.
pub struct RealAuditd {
    /// Owns the private directory; taken (and kept on disk) when a test fails.
    tempdir: Option<tempfile::TempDir>,
    root: PathBuf,
    child: Option<Child>,
    kernel_before: KernelAudit,
    version: String,
    plugins: Vec<Plugin>,
    /// Rules added, as the `auditctl` arguments that added them (`-a …`).
    rules: Vec<Vec<String>>,
    backlog_changed: bool,
    keep_dir: bool,
    _lock: KernelAuditLock,
}

impl RealAuditd {
    /// `Ok` when a real auditd can be run here; otherwise the reason, for the test to print
    /// before skipping. CI runs as root, so there these tests run rather than skip.
    pub fn available() -> Result<(), String> {
        let euid = effective_uid()?;
        if euid != 0 {
            return Err(format!(
                "real-auditd tests need root (effective uid is {euid}); run them as root, as CI does"
            ));
        }
        sbin("auditd")?;
        sbin("auditctl")?;
        let kernel = KernelAudit::read().map_err(|e| {
            format!(
                "kernel audit cannot be controlled from here ({e}); it needs CONFIG_AUDIT, \
                 CAP_AUDIT_CONTROL and the initial user and PID namespaces"
            )
        })?;
        if kernel.enabled == 2 {
            return Err(
                "kernel audit configuration is locked (`auditctl -s` shows enabled 2); rules \
                 cannot be added or removed until reboot"
                    .to_owned(),
            );
        }
        if kernel.pid != 0 {
            let comm = fs::read_to_string(format!("/proc/{}/comm", kernel.pid))
                .map(|c| c.trim().to_owned())
                .unwrap_or_else(|_| "unknown process".to_owned());
            return Err(format!(
                "another audit daemon ({comm}, pid {}) owns kernel audit; stop it before running \
                 real-auditd tests",
                kernel.pid
            ));
        }
        let own_loginuid = fs::read_to_string("/proc/self/loginuid").map_err(|e| {
            format!("cannot read /proc/self/loginuid ({e}); kernel audit lacks loginuid support")
        })?;
        let own_loginuid = own_loginuid.trim();
        if kernel.loginuid_immutable != 0 && own_loginuid != "4294967295" {
            return Err(format!(
                "login uids are immutable (loginuid_immutable 1) and this process already has \
                 login uid {own_loginuid}, so workloads cannot run as login uid {TEST_AUID}"
            ));
        }
        Ok(())
    }

    /// [`RealAuditd::available`], checked once no other test (of this binary or another
    /// process) holds [`KernelAuditLock`]. Checked while another test's auditd runs,
    /// `available` would report that auditd as a foreign one ("another audit daemon … owns
    /// kernel audit") and the test would skip. Call this instead of `available` before
    /// [`RealAuditd::start`] (not while holding an instance: that would wait for ever).
    pub fn available_when_idle() -> Result<(), String> {
        if effective_uid()? != 0 {
            // The reason to skip, without waiting for a lock.
            return Self::available();
        }
        let _lock = KernelAuditLock::acquire()?;
        Self::available()
    }

    /// Starts a private auditd with `options`, waits until it is registered with the kernel,
    /// sets `backlog_limit` and adds the rule dropping user-space messages of other login uids.
    pub fn start(options: AuditdOptions) -> Result<Self, String> {
        let lock = KernelAuditLock::acquire()?;
        Self::available()?;
        let kernel_before = KernelAudit::read()?;
        let version = auditd_version()?;
        let tempdir = tempfile::Builder::new()
            .prefix("audisp-auditd.")
            .tempdir()
            .map_err(|e| format!("cannot create a private directory for auditd: {e}"))?;
        let root = tempdir.path().to_owned();
        let mut auditd = RealAuditd {
            tempdir: Some(tempdir),
            root,
            child: None,
            kernel_before,
            version,
            plugins: options.plugins.clone(),
            rules: Vec::new(),
            backlog_changed: false,
            keep_dir: false,
            _lock: lock,
        };
        if let Err(e) = auditd.write_config(&options).and_then(|()| auditd.launch()) {
            auditd.keep_dir = true;
            // auditd may have enabled audit before failing to register.
            let problems = auditd.restore_kernel();
            return Err(if problems.is_empty() {
                e
            } else {
                format!("{e}; while restoring kernel audit: {}", problems.join("; "))
            });
        }
        if let Some(limit) = options.backlog_limit {
            if limit != auditd.kernel_before.backlog_limit {
                auditd.backlog_changed = true;
                auditctl(&["-b", &limit.to_string()])?;
            }
        }
        let never_others = format!("auid!={TEST_AUID}");
        auditd.add_rule(&["-a", "never,user", "-F", &never_others])?;
        Ok(auditd)
    }

    fn write_config(&self, options: &AuditdOptions) -> Result<(), String> {
        let plugin_dir = self.root.join("plugins.d");
        fs::create_dir(&plugin_dir).map_err(|e| io_error("create", &plugin_dir, e))?;
        set_mode(&plugin_dir, 0o750)?;
        let log_file = self.log_path();
        let config = format!(
            "local_events = yes\n\
             write_logs = yes\n\
             log_file = {log}\n\
             log_group = 0\n\
             log_format = {format}\n\
             flush = NONE\n\
             freq = 0\n\
             num_logs = 0\n\
             name_format = NONE\n\
             max_log_file = 0\n\
             max_log_file_action = IGNORE\n\
             space_left = 2\n\
             space_left_action = IGNORE\n\
             admin_space_left = 1\n\
             admin_space_left_action = IGNORE\n\
             disk_full_action = IGNORE\n\
             disk_error_action = SYSLOG\n\
             priority_boost = 0\n\
             use_libwrap = no\n\
             distribute_network = no\n\
             q_depth = {q_depth}\n\
             overflow_action = SYSLOG\n\
             max_restarts = 10\n\
             plugin_dir = {plugins}\n\
             end_of_event_timeout = 2\n",
            log = log_file.display(),
            format = options.log_format.config_value(),
            q_depth = options.q_depth,
            plugins = plugin_dir.display(),
        );
        write_config_file(&self.root.join("auditd.conf"), &config)?;
        let capture_script = self.root.join("capture-plugin.sh");
        if options
            .plugins
            .iter()
            .any(|p| p.program == PluginProgram::Capture)
        {
            fs::write(&capture_script, CAPTURE_PLUGIN_SCRIPT)
                .map_err(|e| io_error("write", &capture_script, e))?;
            set_mode(&capture_script, 0o750)?;
        }
        for plugin in &options.plugins {
            if plugin.name.is_empty()
                || !plugin
                    .name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                return Err(format!(
                    "plugin name {:?} must be non-empty ASCII letters, digits, '-' or '_' \
                     (auditd skips names with extra dots)",
                    plugin.name
                ));
            }
            let (path, args) = match &plugin.program {
                PluginProgram::Capture => (
                    capture_script.clone(),
                    vec![self.capture_path(&plugin.name).display().to_string()],
                ),
                PluginProgram::Executable { path, args } => (path.clone(), args.clone()),
            };
            if args.len() > 2 || args.iter().any(|a| a.is_empty() || a.contains(' ')) {
                return Err(format!(
                    "plugin {}: auditd 3.0.9 accepts at most two args without spaces, got {args:?}",
                    plugin.name
                ));
            }
            let mut conf = format!(
                "active = yes\ndirection = out\npath = {}\ntype = always\nformat = {}\n",
                path.display(),
                plugin.format.config_value()
            );
            if !args.is_empty() {
                conf.push_str(&format!("args = {}\n", args.join(" ")));
            }
            write_config_file(&plugin_dir.join(format!("{}.conf", plugin.name)), &conf)?;
        }
        Ok(())
    }

    fn launch(&mut self) -> Result<(), String> {
        let auditd = sbin("auditd")?;
        let child = Command::new(&auditd)
            .arg("-n")
            .arg("-c")
            .arg(&self.root)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", auditd.display()))?;
        let pid = child.id();
        self.child = Some(child);
        let root = self.root.display().to_string();
        super::try_wait_until(
            STARTUP_TIMEOUT,
            "auditd to register with the kernel",
            || {
                if let Some(child) = self.child.as_mut() {
                    if let Some(status) = child
                        .try_wait()
                        .map_err(|e| format!("cannot check auditd: {e}"))?
                    {
                        self.child = None;
                        return Err(explain_early_exit(status, &root));
                    }
                }
                Ok(KernelAudit::read()?.pid == pid)
            },
        )
    }

    /// auditd's version as reported by `auditctl -v` (e.g. "3.0.9").
    pub fn version(&self) -> &str {
        &self.version
    }

    /// Binary framing this auditd writes (padded for 3.0.9).
    pub fn framing(&self) -> Result<Framing, String> {
        Framing::for_version(&self.version)
    }

    /// PID of the private auditd, or `None` after stop.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The private directory (0700, root) holding config, log and capture outputs; tests may put
    /// their own files here.
    pub fn dir(&self) -> &Path {
        &self.root
    }

    /// auditd's log file. Complete only after [`RealAuditd::stop`] (`flush = NONE` leaves recent
    /// lines in auditd's stdio buffer until it exits).
    pub fn log_path(&self) -> PathBuf {
        self.root.join("audit.log")
    }

    /// Where the capture plugin `name` leaves its complete copy of the stream (it writes
    /// `<path>.part` while running and renames it at end of input).
    pub fn capture_path(&self, name: &str) -> PathBuf {
        self.root.join(format!("{name}.out"))
    }

    /// Kernel state found before the harness changed anything.
    pub fn kernel_before(&self) -> &KernelAudit {
        &self.kernel_before
    }

    /// Adds an audit rule given as `auditctl` arguments starting with `-a`; it is removed again at
    /// stop. The rule must filter on the test login uid (`auid=65534` or `auid!=65534`), so that
    /// nothing but the test workload is recorded.
    pub fn add_rule(&mut self, rule: &[&str]) -> Result<(), String> {
        if rule.first() != Some(&"-a") {
            return Err(format!(
                "rule {rule:?} must start with -a (only list rules can be removed exactly)"
            ));
        }
        let own = [format!("auid={TEST_AUID}"), format!("auid!={TEST_AUID}")];
        if !rule.iter().any(|word| own.iter().any(|o| o == word)) {
            return Err(format!(
                "rule {rule:?} must filter on the test login uid (`-F auid={TEST_AUID}`), or it \
                 would record other processes on the machine"
            ));
        }
        auditctl(rule)?;
        self.rules
            .push(rule.iter().map(|w| (*w).to_owned()).collect());
        Ok(())
    }

    /// Records `syscalls` (64-bit ABI) made by processes running as the test login uid, keyed
    /// [`RULE_KEY`]; extra `filters` (e.g. `["-F", "a0=0"]`) narrow the rule further.
    pub fn record_syscalls(&mut self, syscalls: &[&str], filters: &[&str]) -> Result<(), String> {
        let list = syscalls.join(",");
        let auid = format!("auid={TEST_AUID}");
        let mut rule = vec![
            "-a",
            "always,exit",
            "-F",
            "arch=b64",
            "-S",
            &list,
            "-F",
            &auid,
        ];
        rule.extend_from_slice(filters);
        rule.extend_from_slice(&["-k", RULE_KEY]);
        self.add_rule(&rule)
    }

    /// A command that runs `program` with login uid [`TEST_AUID`] (the child writes it to
    /// `/proc/self/loginuid` before exec), so the harness's rules record it and its children.
    pub fn workload(&self, program: impl AsRef<OsStr>) -> Command {
        let mut command = Command::new(program);
        // SAFETY: the hook runs in the forked child before exec. It only opens a fixed short path
        // (std converts paths shorter than 384 bytes on the stack) and writes a constant, so it
        // neither allocates nor takes locks another thread of the parent could have held.
        unsafe {
            command.pre_exec(set_test_loginuid);
        }
        command
    }

    /// Sends a USER record with `text` as the test login uid (`auditctl -m`).
    pub fn send_user_message(&self, text: &str) -> Result<(), String> {
        let auditctl_path = sbin("auditctl")?;
        let out = self
            .workload(&auditctl_path)
            .arg("-m")
            .arg(text)
            .output()
            .map_err(|e| format!("cannot run auditctl -m: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "`auditctl -m {text:?}` failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(())
    }

    /// Sends a unique USER record and waits until every capture plugin has received it. auditd
    /// logs and dispatches records in one order through one queue, so afterwards each capture
    /// holds every record auditd logged before the marker. Returns the marker text.
    pub fn sync_captures(&self) -> Result<String, String> {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let marker = format!(
            "audisp-harness-sync pid={} n={} t={nanos}",
            std::process::id(),
            MARKER_COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        self.send_user_message(&marker)?;
        for plugin in &self.plugins {
            if plugin.program == PluginProgram::Capture {
                let done = self.capture_path(&plugin.name);
                let part = PathBuf::from(format!("{}.part", done.display()));
                let paths: [&Path; 2] = [&done, &part];
                match plugin.format {
                    PluginFormat::String => {
                        wait_for_bytes(&paths, marker.as_bytes(), DELIVERY_TIMEOUT)?
                    }
                    PluginFormat::Binary => wait_for_user_frame(
                        &paths,
                        self.framing()?,
                        marker.as_bytes(),
                        DELIVERY_TIMEOUT,
                    )?,
                }
            }
        }
        Ok(marker)
    }

    /// Removes the harness's rules, restores `backlog_limit` and `enabled`, stops auditd by PID
    /// (SIGTERM, then wait), waits for capture plugins to finish their copies, and checks that the
    /// kernel is back to the state found at start (`pid 0`, same settings and rules).
    pub fn stop(&mut self) -> Result<StopReport, String> {
        let mut child = self
            .child
            .take()
            .ok_or_else(|| "auditd is not running (already stopped)".to_owned())?;
        let mut problems = self.restore_kernel();
        let auditd_exit = match terminate(&mut child) {
            Ok(status) => status,
            Err(e) => {
                self.keep_dir = true;
                return Err(format!("{e}; {}", problems.join("; ")));
            }
        };
        let kernel_after = KernelAudit::read()?;
        let diffs = kernel_after.differences_from(&self.kernel_before);
        if !diffs.is_empty() {
            problems.push(format!(
                "kernel audit was not restored: {}",
                diffs.join("; ")
            ));
        }
        for plugin in &self.plugins {
            if plugin.program == PluginProgram::Capture {
                let done = self.capture_path(&plugin.name);
                if let Err(e) = super::try_wait_until(
                    SHUTDOWN_TIMEOUT,
                    "the capture plugin to finish its copy",
                    || Ok(done.exists()),
                ) {
                    problems.push(format!("{e} ({})", done.display()));
                }
            }
        }
        if !problems.is_empty() {
            self.keep_dir = true;
            return Err(problems.join("; "));
        }
        Ok(StopReport {
            kernel_before: self.kernel_before.clone(),
            kernel_after,
            auditd_exit,
        })
    }

    /// Removes the harness's rules and restores `backlog_limit` and `enabled`; returns what failed.
    fn restore_kernel(&mut self) -> Vec<String> {
        let mut problems = Vec::new();
        while let Some(rule) = self.rules.pop() {
            let mut delete = rule.clone();
            delete[0] = "-d".to_owned();
            let words: Vec<&str> = delete.iter().map(String::as_str).collect();
            if let Err(e) = auditctl(&words) {
                problems.push(e);
            }
        }
        if self.backlog_changed {
            match auditctl(&["-b", &self.kernel_before.backlog_limit.to_string()]) {
                Ok(_) => self.backlog_changed = false,
                Err(e) => problems.push(e),
            }
        }
        // auditd enables audit at start; restore the flag while auditd still receives the
        // resulting CONFIG_CHANGE record, so nothing goes to the kernel log.
        match KernelAudit::read() {
            Ok(now) if now.enabled != self.kernel_before.enabled => {
                if let Err(e) = auditctl(&["-e", &self.kernel_before.enabled.to_string()]) {
                    problems.push(e);
                }
            }
            Ok(_) => {}
            Err(e) => problems.push(e),
        }
        problems
    }

    /// The records auditd wrote to its log, one per line without the `\n`. Call after stop.
    pub fn log_lines(&self) -> Result<Vec<Vec<u8>>, String> {
        if self.child.is_some() {
            return Err("auditd's log is complete only after stop()".to_owned());
        }
        read_lines(&self.log_path())
    }

    /// The string stream capture plugin `name` received, one record per line without the `\n`.
    /// Call after stop.
    pub fn capture_lines(&self, name: &str) -> Result<Vec<Vec<u8>>, String> {
        read_lines(&self.capture_path(name))
    }

    /// The binary frames capture plugin `name` received, split with this auditd's framing.
    /// Call after stop.
    pub fn capture_frames(&self, name: &str) -> Result<Vec<Frame>, String> {
        read_frames(&self.capture_path(name), self.framing()?)
    }
}

impl Drop for RealAuditd {
    fn drop(&mut self) {
        if self.child.is_some() {
            if let Err(e) = self.stop() {
                eprintln!("real auditd harness: cleanup problem: {e}");
            }
        }
        if self.keep_dir || thread::panicking() {
            if let Some(dir) = self.tempdir.take() {
                eprintln!(
                    "real auditd harness: kept {} (config, audit.log, captures) for inspection",
                    dir.keep().display()
                );
            }
        }
    }
}

/// Waits until `needle` appears in whichever of `paths` exists (a file another process is
/// appending to, possibly renamed from one name to the next), reading only new bytes each time.
pub fn wait_for_bytes(paths: &[&Path], needle: &[u8], timeout: Duration) -> Result<(), String> {
    let needle_text = String::from_utf8_lossy(needle).into_owned();
    let mut offset = 0u64;
    let mut buf = Vec::new();
    super::try_wait_until(
        timeout,
        &format!("{needle_text:?} in {}", paths[0].display()),
        || {
            let Some(mut file) = paths.iter().find_map(|p| File::open(p).ok()) else {
                return Ok(false);
            };
            let start = offset.saturating_sub(needle.len() as u64);
            file.seek(SeekFrom::Start(start))
                .map_err(|e| format!("cannot seek in capture: {e}"))?;
            buf.clear();
            file.read_to_end(&mut buf)
                .map_err(|e| format!("cannot read capture: {e}"))?;
            offset = start + buf.len() as u64;
            // Lossy conversion keeps ASCII intact; std's substring search is optimised even in
            // debug builds of the tests.
            Ok(String::from_utf8_lossy(&buf).contains(needle_text.as_str()))
        },
    )
}

/// Waits until a binary plugin stream stored in whichever of `paths` exists holds a USER (1005)
/// frame whose payload contains `needle`. Walks the frames by their headers and reads only USER
/// payloads, so waiting costs little even when the padded stream grows by hundreds of megabytes.
pub fn wait_for_user_frame(
    paths: &[&Path],
    framing: Framing,
    needle: &[u8],
    timeout: Duration,
) -> Result<(), String> {
    const AUDIT_USER: u32 = 1005;
    let needle_text = String::from_utf8_lossy(needle).into_owned();
    let mut offset = 0u64;
    let mut header = [0u8; DISPATCHER_HEADER_LEN];
    let mut payload = vec![0u8; MAX_AUDIT_MESSAGE_LENGTH];
    let what = format!(
        "a USER frame with {needle_text:?} in {}",
        paths[0].display()
    );
    super::try_wait_until(timeout, &what, || {
        let Some(file) = paths.iter().find_map(|p| File::open(p).ok()) else {
            return Ok(false);
        };
        let len = file
            .metadata()
            .map_err(|e| format!("cannot stat capture: {e}"))?
            .len();
        while offset + DISPATCHER_HEADER_LEN as u64 <= len {
            file.read_exact_at(&mut header, offset)
                .map_err(|e| format!("cannot read capture: {e}"))?;
            let word = |i: usize| {
                u32::from_ne_bytes([header[i], header[i + 1], header[i + 2], header[i + 3]])
            };
            let (record_type, size) = (word(8), word(12) as usize);
            if size > MAX_AUDIT_MESSAGE_LENGTH {
                return Err(format!(
                    "{what}: frame at byte {offset} claims {size} bytes"
                ));
            }
            let body = match framing {
                Framing::Padded => MAX_AUDIT_MESSAGE_LENGTH,
                Framing::Exact => size,
            } as u64;
            if offset + DISPATCHER_HEADER_LEN as u64 + body > len {
                break;
            }
            if record_type == AUDIT_USER {
                file.read_exact_at(&mut payload[..size], offset + DISPATCHER_HEADER_LEN as u64)
                    .map_err(|e| format!("cannot read capture: {e}"))?;
                if String::from_utf8_lossy(&payload[..size]).contains(needle_text.as_str()) {
                    return Ok(true);
                }
            }
            offset += DISPATCHER_HEADER_LEN as u64 + body;
        }
        Ok(false)
    })
}

/// Reads `path` as `\n`-separated records, each without its `\n`.
pub fn read_lines(path: &Path) -> Result<Vec<Vec<u8>>, String> {
    let file = File::open(path).map_err(|e| io_error("open", path, e))?;
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let mut lines = Vec::new();
    loop {
        let mut line = Vec::new();
        let n = reader
            .read_until(b'\n', &mut line)
            .map_err(|e| io_error("read", path, e))?;
        if n == 0 {
            return Ok(lines);
        }
        if line.last() == Some(&b'\n') {
            line.pop();
        }
        lines.push(line);
    }
}

/// Splits a binary plugin stream stored in `path` into frames laid out as `framing` says.
pub fn read_frames(path: &Path, framing: Framing) -> Result<Vec<Frame>, String> {
    let file = File::open(path).map_err(|e| io_error("open", path, e))?;
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let mut frames = Vec::new();
    let mut header = [0u8; DISPATCHER_HEADER_LEN];
    let mut body = vec![0u8; MAX_AUDIT_MESSAGE_LENGTH];
    loop {
        match read_full(&mut reader, &mut header) {
            Ok(0) => return Ok(frames),
            Ok(n) if n == header.len() => {}
            Ok(n) => {
                return Err(format!(
                    "{}: stream ends inside a frame header ({n} of 16 bytes) after {} frames",
                    path.display(),
                    frames.len()
                ))
            }
            Err(e) => return Err(io_error("read", path, e)),
        }
        let word =
            |i: usize| u32::from_ne_bytes([header[i], header[i + 1], header[i + 2], header[i + 3]]);
        let (version, header_len, record_type, size) = (word(0), word(4), word(8), word(12));
        let size = size as usize;
        if size > MAX_AUDIT_MESSAGE_LENGTH || header_len as usize != DISPATCHER_HEADER_LEN {
            return Err(format!(
                "{}: frame {} has a bad header (hlen {header_len}, size {size})",
                path.display(),
                frames.len()
            ));
        }
        let body_len = match framing {
            Framing::Padded => MAX_AUDIT_MESSAGE_LENGTH,
            Framing::Exact => size,
        };
        let got =
            read_full(&mut reader, &mut body[..body_len]).map_err(|e| io_error("read", path, e))?;
        if got != body_len {
            return Err(format!(
                "{}: stream ends inside frame {} ({got} of {body_len} payload bytes)",
                path.display(),
                frames.len()
            ));
        }
        frames.push(Frame {
            version,
            header_len,
            record_type,
            payload: body[..size].to_vec(),
        });
    }
}

/// The record type name of a formatted record (`[node=… ]type=NAME msg=…`), e.g. "SYSCALL".
pub fn record_type(record: &[u8]) -> Option<&str> {
    let start = find(record, b"type=")? + 5;
    let len = record[start..].iter().position(|&b| b == b' ')?;
    std::str::from_utf8(&record[start..start + len]).ok()
}

/// The event id of a record, the text inside `msg=audit(…)`, e.g. "1795421420.802:3".
pub fn event_id(record: &[u8]) -> Option<&str> {
    let start = find(record, b"audit(")? + 6;
    let len = record[start..].iter().position(|&b| b == b')')?;
    std::str::from_utf8(&record[start..start + len]).ok()
}

/// True for records auditd sends to plugins but never writes to its log: the kernel's EOE
/// (end of event) records.
pub fn is_dispatched_only(record: &[u8]) -> bool {
    record_type(record) == Some("EOE")
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn read_full(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

fn set_test_loginuid() -> io::Result<()> {
    let mut file = OpenOptions::new().write(true).open("/proc/self/loginuid")?;
    file.write_all(TEST_AUID_TEXT)
}

/// Sends SIGTERM to `child` and waits for it; SIGKILL if it does not exit in time.
fn terminate(child: &mut Child) -> Result<ExitStatus, String> {
    let pid = child.id().to_string();
    // std has no way to send SIGTERM; the shell's built-in kill needs no extra package.
    let status = Command::new("/bin/sh")
        .args(["-c", "kill -TERM \"$1\"", "sh", &pid])
        .status()
        .map_err(|e| format!("cannot run /bin/sh to signal auditd: {e}"))?;
    if !status.success() {
        return Err(format!(
            "sending SIGTERM to auditd (pid {pid}) failed: {status}"
        ));
    }
    let mut exit = None;
    let waited = super::try_wait_until(SHUTDOWN_TIMEOUT, "auditd to exit after SIGTERM", || {
        exit = child
            .try_wait()
            .map_err(|e| format!("cannot wait for auditd: {e}"))?;
        Ok(exit.is_some())
    });
    match (waited, exit) {
        (Ok(()), Some(status)) => Ok(status),
        (result, _) => {
            let _ = child.kill();
            let _ = child.wait();
            Err(format!(
                "auditd (pid {pid}) did not exit on SIGTERM and was killed ({result:?})"
            ))
        }
    }
}

fn explain_early_exit(status: ExitStatus, dir: &str) -> String {
    let why = match status.code() {
        Some(6) => "it rejected its configuration",
        Some(4) => "it lacks the capability to control audit",
        Some(1) => "it could not initialise (netlink, log file, plugins, or setting the audit pid)",
        Some(2) => "it was given bad options",
        _ => "unknown reason",
    };
    format!(
        "auditd exited during start-up ({status}): {why}. auditd reports details only to syslog; \
         the generated configuration is kept in {dir}"
    )
}

/// Runs `auditctl` with `args`; its standard output, or why it failed.
pub fn auditctl<S: AsRef<OsStr>>(args: &[S]) -> Result<String, String> {
    let path = sbin("auditctl")?;
    let out = Command::new(&path)
        .args(args)
        .output()
        .map_err(|e| format!("cannot run {}: {e}", path.display()))?;
    let shown: Vec<String> = args
        .iter()
        .map(|a| a.as_ref().to_string_lossy().into_owned())
        .collect();
    if !out.status.success() {
        return Err(format!(
            "`auditctl {}` failed ({}): {}",
            shown.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn auditd_version() -> Result<String, String> {
    let out = auditctl(&["-v"])?;
    out.split_whitespace()
        .last()
        .map(str::to_owned)
        .ok_or_else(|| format!("`auditctl -v` printed no version: {out:?}"))
}

/// `name` (auditd or auditctl) from [`AUDITD_DIR_VAR`]'s directory when it is set, else from
/// `/usr/sbin` or `/sbin`.
fn sbin(name: &str) -> Result<PathBuf, String> {
    if let Some(dir) = std::env::var_os(AUDITD_DIR_VAR) {
        let path = Path::new(&dir).join(name);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(format!(
                "{AUDITD_DIR_VAR}={}: no {name} there",
                Path::new(&dir).display()
            ))
        };
    }
    ["/usr/sbin", "/sbin"]
        .iter()
        .map(|dir| Path::new(dir).join(name))
        .find(|path| path.is_file())
        .ok_or_else(|| {
            format!(
                "{name} not found in /usr/sbin or /sbin; install it with \
                 `apt-get install -y --no-install-recommends auditd`"
            )
        })
}

fn effective_uid() -> Result<u32, String> {
    let status = fs::read_to_string("/proc/self/status")
        .map_err(|e| format!("cannot read /proc/self/status: {e}"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        .and_then(|euid| euid.parse().ok())
        .ok_or_else(|| "no effective uid in /proc/self/status".to_owned())
}

fn write_config_file(path: &Path, text: &str) -> Result<(), String> {
    if let Some(line) = text.lines().find(|l| l.len() > MAX_CONFIG_LINE) {
        return Err(format!(
            "config line too long for auditd 3.0.9 ({} > {MAX_CONFIG_LINE} bytes): {line}; \
             use shorter paths (TMPDIR)",
            line.len()
        ));
    }
    fs::write(path, text).map_err(|e| io_error("write", path, e))?;
    set_mode(path, 0o640)
}

fn set_mode(path: &Path, mode: u32) -> Result<(), String> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .map_err(|e| io_error("chmod", path, e))
}

fn io_error(action: &str, path: &Path, e: io::Error) -> String {
    format!("cannot {action} {}: {e}", path.display())
}
