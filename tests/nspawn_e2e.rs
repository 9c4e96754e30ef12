//! The whole systemd story on a real, booted systemd: a Debian bookworm
//! root (debootstrap, cached in /var/cache/audisp-test/bookworm-2) booted
//! with `systemd-nspawn`, our units and binaries bound into it, and
//! `audisp-bridge` on the host feeding real audit records into the
//! container's `audisp.socket` through a bind-mounted /run/audisp. Checked:
//!
//! * `audisp.service` and a plugin's service start by socket activation,
//!   and the plugin receives every record;
//! * `journalctl -u audisp` holds the dispatcher's log, natively
//!   (`_TRANSPORT=journal`, `SYSLOG_IDENTIFIER=audispd`);
//! * `systemctl reload audisp` picks up a new plugins.d file;
//! * `kill -STOP` of the dispatcher trips the watchdog and systemd restarts
//!   it; `kill -9` of the plugin and systemd restarts it;
//! * across all of it, each plugin has every record exactly once, in order;
//! * in a second boot, with the .deb of `packaging/build.sh deb` installed
//!   by `apt install` and configured as the README says: `[dbus]` on the
//!   real system bus with the shipped policy (`audispctl status`, also for
//!   a member of the `audisp` group), a plugin's `single-user` action
//!   isolating rescue.target, and the shipped `audisp-logfile` /
//!   `audisp-journal` units socket-activated, each with every record
//!   exactly once, fed by the installed `audisp-bridge`;
//! * in a third, the package's life: what the install sets up (group,
//!   tmpfiles, presets), `systemd-analyze verify` silent on every installed
//!   unit (man pages included), `man` rendering every page, every shipped
//!   example and configuration file passing `--check-config` as installed,
//!   and `apt remove` / `apt purge` leaving nothing running or behind.
//!
//! The container runs without the audit capabilities (so neither its
//! systemd nor its journald touches the host's kernel audit) and on a
//! volatile overlay (the cached tree stays pristine).

mod pkg;
mod support;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use support::dispatcher::{example, lines, read_sink, texts};
use support::wait_until;

const CACHE: &str = "/var/cache/audisp-test";

/// The debootstrap tree, by what it holds (the `-2` one has man-db and
/// zstd, for the package tests).
const TREE: &str = "bookworm-2";

fn skip_reason() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("needs root".into());
    }
    if let Some(why) = support::metrics::missing_parser() {
        return Some(why);
    }
    for tool in [
        "/usr/bin/systemd-nspawn",
        "/usr/sbin/debootstrap",
        "/usr/bin/nsenter",
    ] {
        if !Path::new(tool).exists() {
            return Some(format!(
                "{tool} missing (apt-get install systemd-container debootstrap util-linux)"
            ));
        }
    }
    None
}

/// The mirror apt uses here (debootstrap fetches from it).
fn mirror() -> String {
    std::fs::read_to_string("/etc/apt/sources.list.d/debian.sources")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("URIs:").map(|u| u.trim().to_string()))
        })
        .and_then(|u| u.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "http://deb.debian.org/debian".into())
}

/// The bookworm tree: the cached one, or built now (under a lock, into a
/// temporary directory renamed when complete).
fn bookworm() -> PathBuf {
    let root = Path::new(CACHE).join(TREE);
    if root.join("usr/lib/systemd/systemd").exists() {
        return root;
    }
    std::fs::create_dir_all(CACHE).unwrap();
    let lock = std::fs::File::create(Path::new(CACHE).join(format!("{TREE}.lock"))).unwrap();
    let _guard = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| e)
        .expect("lock the cache");
    if root.join("usr/lib/systemd/systemd").exists() {
        return root;
    }
    let tmp = Path::new(CACHE).join(format!("{TREE}.tmp.{}", std::process::id()));
    let started = Instant::now();
    let out = Command::new("debootstrap")
        .args([
            "--variant=minbase",
            "--include=systemd,systemd-sysv,dbus,procps,ca-certificates,man-db,zstd",
            "bookworm",
        ])
        .arg(&tmp)
        .arg(mirror())
        .output()
        .expect("debootstrap");
    assert!(
        out.status.success(),
        "debootstrap failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout)
    );
    std::fs::write(tmp.join("etc/hostname"), "audisptest\n").unwrap();
    std::fs::rename(&tmp, &root).unwrap();
    eprintln!("built {} in {:?}", root.display(), started.elapsed());
    root
}

/// The booted container.
struct Container {
    nspawn: Option<Child>,
    pid1: i32,
}

impl Container {
    /// Runs a command inside the container.
    fn x(&self, args: &[&str]) -> Output {
        Command::new("nsenter")
            .args(["-t", &self.pid1.to_string(), "-a", "--"])
            .args(args)
            .output()
            .expect("nsenter")
    }

    /// Runs a command inside; panics with its output unless it succeeds.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.x(args);
        assert!(
            out.status.success(),
            "{args:?}: {}\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A path inside the container, as the host reaches it.
    fn path(&self, inside: &str) -> PathBuf {
        PathBuf::from(format!("/proc/{}/root{inside}", self.pid1))
    }

    /// `systemctl show -p PROP --value UNIT`.
    fn prop(&self, unit: &str, prop: &str) -> String {
        self.ok(&["systemctl", "show", "-p", prop, "--value", unit])
            .trim()
            .to_string()
    }

    fn power_off(&mut self) {
        if let Some(mut c) = self.nspawn.take() {
            let _ = self.x(&["systemctl", "poweroff"]);
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        self.power_off();
    }
}

/// A test unit for the sink plugin `name`, socket-activated, with `extra`
/// sink arguments.
fn sink_units(dir: &Path, name: &str, extra: &str) {
    std::fs::write(
        dir.join(format!("audisp-{name}.socket")),
        format!(
            "[Unit]\nDescription=test plugin {name} socket\n[Socket]\n\
             ListenSequentialPacket=/run/audisp/plugins/{name}.sock\nSocketMode=0600\n\
             FileDescriptorName={name}\n[Install]\nWantedBy=sockets.target\n"
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join(format!("audisp-{name}.service")),
        format!(
            "[Unit]\nDescription=test plugin {name}\nRequires=audisp-{name}.socket\n\
             [Service]\nType=notify\nWatchdogSec=2s\n\
             ExecStart=/usr/local/bin/sink --out /srv/out/{name} --name {name}{extra}\n\
             Restart=on-failure\nRestartSec=200ms\n"
        ),
    )
    .unwrap();
}

/// A bind mount into the container.
struct Bind {
    from: PathBuf,
    to: String,
    writable: bool,
}

/// A read-only bind of `from` at `to`.
fn ro(from: impl Into<PathBuf>, to: impl Into<String>) -> Bind {
    Bind {
        from: from.into(),
        to: to.into(),
        writable: false,
    }
}

/// A writable bind of `from` at `to`.
fn rw(from: impl Into<PathBuf>, to: impl Into<String>) -> Bind {
    Bind {
        from: from.into(),
        to: to.into(),
        writable: true,
    }
}

/// The freshly built dispatcher and its units bound in, with the work
/// directory's configuration, runtime directory, test units and drop-in.
fn dev_binds(work: &Path) -> Vec<Bind> {
    let units = Path::new(env!("CARGO_MANIFEST_DIR")).join("units");
    let mut binds = vec![
        rw(work.join("run-audisp"), "/run/audisp"),
        rw(work.join("etc-audisp"), "/etc/audisp"),
        ro(env!("CARGO_BIN_EXE_audispd"), "/usr/sbin/audispd"),
        ro(
            work.join("audisp.service.d"),
            "/etc/systemd/system/audisp.service.d",
        ),
    ];
    for u in ["audisp.socket", "audisp.service"] {
        binds.push(ro(units.join(u), format!("/etc/systemd/system/{u}")));
    }
    binds.extend(test_binds(work));
    binds
}

/// What every boot has: the sink plugin, the work directory's test units,
/// and /srv/out for the sinks' output.
fn test_binds(work: &Path) -> Vec<Bind> {
    let mut binds = vec![
        rw(work.join("out"), "/srv/out"),
        ro(example("sink"), "/usr/local/bin/sink"),
    ];
    for f in std::fs::read_dir(work.join("units")).unwrap() {
        let p = f.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        binds.push(ro(p, format!("/etc/systemd/system/{name}")));
    }
    binds
}

/// Boots `root` with `binds`; nspawn's output goes to the work directory.
fn boot(root: &Path, work: &Path, binds: &[Bind]) -> Container {
    let mut cmd = Command::new("systemd-nspawn");
    cmd.arg("-D")
        .arg(root)
        .arg(format!("--machine=audisptest{}", std::process::id()))
        .args([
            "--boot",
            "--register=no",
            "--keep-unit",
            "--console=passive",
            "--volatile=overlay",
            "--drop-capability=CAP_AUDIT_CONTROL,CAP_AUDIT_WRITE",
        ]);
    for b in binds {
        cmd.arg(format!(
            "--bind{}={}:{}",
            if b.writable { "" } else { "-ro" },
            b.from.display(),
            b.to
        ));
    }
    let nspawn = cmd
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(work.join("nspawn.log")).unwrap())
        .stderr(std::fs::File::create(work.join("nspawn.err")).unwrap())
        .spawn()
        .expect("systemd-nspawn");
    let mut c = Container {
        pid1: 0,
        nspawn: Some(nspawn),
    };
    let nspawn_pid = c.nspawn.as_ref().unwrap().id().to_string();
    wait_until(Duration::from_secs(30), "the container's systemd", || {
        let out = Command::new("pgrep")
            .args(["-P", &nspawn_pid, "-x", "systemd"])
            .output()
            .unwrap();
        match String::from_utf8_lossy(&out.stdout).trim().parse() {
            Ok(p) => {
                c.pid1 = p;
                true
            }
            Err(_) => false,
        }
    });
    wait_until(Duration::from_secs(60), "the container to boot", || {
        let out = c.x(&["systemctl", "is-system-running"]);
        let s = String::from_utf8_lossy(&out.stdout);
        s.trim() == "running" || s.trim() == "degraded"
    });
    c
}

/// Waits until `file` (a sink's output) has `n` records; returns its texts.
fn sink_texts(file: &Path, n: usize, what: &str, c: &Container) -> Vec<Vec<u8>> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = read_sink(file);
        if out.records.len() >= n {
            return texts(&out).iter().map(|t| t.to_vec()).collect();
        }
        if Instant::now() > deadline {
            let journal = c.x(&["journalctl", "--no-pager", "-n", "80"]);
            panic!(
                "{what}: {} of {n} records\n{}",
                out.records.len(),
                String::from_utf8_lossy(&journal.stdout)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One container at a time: the cached tree backs one running container.
static ONE_CONTAINER: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The work directory's layout, and a 3 s watchdog for audisp.service so
/// the test need not wait 30 s, without core dumps.
fn work_dirs(w: &Path) {
    for d in [
        "run-audisp",
        "etc-audisp/plugins.d",
        "out",
        "units",
        "audisp.service.d",
    ] {
        std::fs::create_dir_all(w.join(d)).unwrap();
    }
    std::fs::write(
        w.join("audisp.service.d/test.conf"),
        "[Service]\nWatchdogSec=3s\nTimeoutAbortSec=5s\nLimitCORE=0\n",
    )
    .unwrap();
}

/// Prepares `w` (config, a socket-activated `sink` plugin, a `late` one
/// for the reload, a 3 s watchdog), boots the container and enables the
/// sockets.
fn prepare(w: &Path) -> Container {
    let root = bookworm();
    work_dirs(w);
    // The dispatcher's own configuration: defaults; one plugin, socket-activated.
    std::fs::write(
        w.join("etc-audisp/plugins.d/sink.toml"),
        "socket = \"/run/audisp/plugins/sink.sock\"\n[restart]\ninitial = \"100ms\"\nmax = \"1s\"\n",
    )
    .unwrap();
    sink_units(&w.join("units"), "sink", "");
    sink_units(&w.join("units"), "late", "");
    let c = boot(&root, w, &dev_binds(w));
    c.ok(&[
        "systemctl",
        "enable",
        "--now",
        "audisp.socket",
        "audisp-sink.socket",
        "audisp-late.socket",
    ]);
    c
}

/// The .deb to install, or None after saying why the test cannot run.
fn installable() -> Option<PathBuf> {
    if let Some(why) = skip_reason() {
        support::skip(&why);
        return None;
    }
    pkg::find(pkg::Kind::Deb)
        .map_err(|why| support::skip(&why))
        .ok()
}

/// Boots the tree with the test binds, `extra` ones and the package, and
/// installs the package (`apt_install`): the container, and apt's output.
fn boot_installed(w: &Path, deb: &Path, extra: Vec<Bind>) -> (Container, String) {
    let root = bookworm();
    let mut binds = test_binds(w);
    binds.push(package_bind(deb));
    binds.extend(extra);
    let c = boot(&root, w, &binds);
    let apt = apt_install(&c, deb);
    (c, apt)
}

/// Writes records, a line each, as auditd writes them to its plugins.
fn write_lines(to: &mut impl Write, records: &[&[u8]]) {
    for r in records {
        to.write_all(r).unwrap();
        to.write_all(b"\n").unwrap();
    }
    to.flush().unwrap();
}

/// The package, read-only in /srv/pkg/.
fn package_bind(deb: &Path) -> Bind {
    let name = deb.file_name().unwrap().to_string_lossy().into_owned();
    ro(deb, format!("/srv/pkg/{name}"))
}

/// Installs the package as the README says, `apt install ./audisp_*.deb`,
/// but without the recommended auditd: it cannot run in a container
/// without the audit capabilities (zstd, the other one, is in the tree).
/// Returns apt's output.
fn apt_install(c: &Container, deb: &Path) -> String {
    let name = deb.file_name().unwrap().to_string_lossy().into_owned();
    c.ok(&[
        "sh",
        "-c",
        &format!(
            "cd /srv/pkg && DEBIAN_FRONTEND=noninteractive \
             apt-get install -y --no-install-recommends ./{name} 2>&1"
        ),
    ])
}

/// Starts the installed `audisp-bridge` inside the container as auditd
/// would: the program its plugins.d file names, with no arguments and an
/// empty environment (but the log level); the test writes its standard
/// input, as auditd does.
fn installed_bridge(c: &Container, w: &Path) -> Child {
    let conf = c.ok(&["cat", "/etc/audit/plugins.d/audisp-bridge.conf"]);
    let path = conf
        .lines()
        .find_map(|l| l.strip_prefix("path = "))
        .expect("path = in audisp-bridge.conf")
        .trim()
        .to_string();
    assert!(conf.lines().any(|l| l == "active = yes"), "{conf}");
    Command::new("nsenter")
        .args(["-t", &c.pid1.to_string(), "-a", "--", "env", "-i"])
        .arg("AUDISP_LOG=info")
        .arg(path)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(w.join("bridge.log")).unwrap())
        .spawn()
        .expect("nsenter audisp-bridge")
}

/// Starts `audisp-bridge` on the host, feeding the container's input
/// socket from its standard input.
fn bridge(w: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_audisp-bridge"))
        .arg("--socket")
        .arg(w.join("run-audisp/input.sock"))
        .arg("--state-dir")
        .arg(w.join("bridge"))
        .env("AUDISP_LOG", "info")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(w.join("bridge.log")).unwrap())
        .spawn()
        .unwrap()
}

#[test]
fn booted_systemd_end_to_end() {
    if let Some(why) = skip_reason() {
        support::skip(&why);
        return;
    }
    let _one = ONE_CONTAINER.lock().unwrap_or_else(|p| p.into_inner());
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let mut c = prepare(w);
    assert_eq!(c.prop("audisp.service", "ActiveState"), "inactive");
    assert_eq!(c.prop("audisp-sink.service", "ActiveState"), "inactive");

    // Real records, fed through the bridge from the host (as auditd would).
    let data = support::dispatcher::sample();
    let all = lines(&data);
    let parts: Vec<&[&[u8]]> = all.chunks(all.len() / 4 + 1).collect();
    assert_eq!(parts.len(), 4);
    let mut bridge = bridge(w);
    let mut feed = bridge.stdin.take().unwrap();
    let mut send = move |part: &[&[u8]]| {
        for l in part {
            feed.write_all(l).unwrap();
            feed.write_all(b"\n").unwrap();
        }
        feed.flush().unwrap();
    };
    let mut fed = 0;

    // 1. Socket activation: the first connection starts audisp.service,
    //    whose connection starts the plugin.
    send(parts[0]);
    fed += parts[0].len();
    let got = sink_texts(&w.join("out/sink"), fed, "sink after activation", &c);
    assert!(got == all[..fed], "every record once, in order");
    assert_eq!(c.prop("audisp.service", "ActiveState"), "active");
    assert_eq!(c.prop("audisp-sink.service", "ActiveState"), "active");
    let triggered = c.prop("audisp-sink.service", "TriggeredBy");
    assert!(triggered.contains("audisp-sink.socket"), "{triggered}");

    // 2. journalctl -u audisp: the dispatcher's log, natively.
    let journal = c.ok(&[
        "journalctl",
        "--no-pager",
        "-u",
        "audisp",
        "-o",
        "json",
        "SYSLOG_IDENTIFIER=audispd",
    ]);
    let started: Vec<serde_json::Value> = journal
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .filter(|e: &serde_json::Value| {
            e["MESSAGE"]
                .as_str()
                .is_some_and(|m| m.contains("audispd started"))
        })
        .collect();
    assert_eq!(started.len(), 1, "{journal}");
    assert_eq!(started[0]["_TRANSPORT"], "journal", "logged natively");
    assert_eq!(started[0]["_SYSTEMD_UNIT"], "audisp.service");

    // 3. systemctl reload picks up a new plugins.d file.
    std::fs::write(
        w.join("etc-audisp/plugins.d/late.toml"),
        "socket = \"/run/audisp/plugins/late.sock\"\n",
    )
    .unwrap();
    c.ok(&["systemctl", "reload", "audisp"]);
    wait_until(Duration::from_secs(20), "the late plugin to start", || {
        c.prop("audisp-late.service", "ActiveState") == "active"
    });
    wait_until(Duration::from_secs(20), "the reload to finish", || {
        c.prop("audisp.service", "ActiveState") == "active"
    });
    let late_from = fed;
    send(parts[1]);
    fed += parts[1].len();
    let got = sink_texts(&w.join("out/sink"), fed, "sink after reload", &c);
    assert!(got == all[..fed]);
    let late = sink_texts(&w.join("out/late"), fed - late_from, "late plugin", &c);
    assert!(
        late == all[late_from..fed],
        "late gets what came after the reload"
    );

    // 4. kill -STOP: the watchdog fires, systemd restarts the dispatcher;
    //    records sent meanwhile wait in the bridge.
    let pid = c.prop("audisp.service", "MainPID");
    c.ok(&["kill", "-STOP", &pid]);
    send(parts[2]);
    fed += parts[2].len();
    wait_until(Duration::from_secs(30), "the watchdog restart", || {
        c.prop("audisp.service", "NRestarts") == "1"
            && c.prop("audisp.service", "ActiveState") == "active"
    });
    assert_ne!(c.prop("audisp.service", "MainPID"), pid);
    let log = c.ok(&["journalctl", "--no-pager", "-u", "audisp", "-o", "cat"]);
    assert!(log.contains("Watchdog timeout"), "{log}");
    let got = sink_texts(&w.join("out/sink"), fed, "sink after the watchdog", &c);
    assert!(
        got == all[..fed],
        "nothing lost or doubled across the restart"
    );

    // 5. kill -9 of the plugin: systemd restarts it, nothing lost.
    let plugin_pid = c.prop("audisp-sink.service", "MainPID");
    c.ok(&["kill", "-9", &plugin_pid]);
    send(parts[3]);
    fed += parts[3].len();
    let got = sink_texts(&w.join("out/sink"), fed, "sink after its kill -9", &c);
    assert!(
        got == all[..fed],
        "nothing lost or doubled across the plugin crash"
    );
    assert_eq!(fed, all.len());
    let late = sink_texts(&w.join("out/late"), fed - late_from, "late plugin", &c);
    assert!(late == all[late_from..]);
    assert!(
        c.prop("audisp-sink.service", "NRestarts")
            .parse::<u32>()
            .unwrap()
            >= 1
    );
    assert_ne!(c.prop("audisp-sink.service", "MainPID"), plugin_pid);

    // The bridge ends with everything acknowledged.
    drop(send);
    let status = bridge.wait().unwrap();
    let blog = std::fs::read_to_string(w.join("bridge.log")).unwrap();
    assert!(
        status.success() && blog.contains("the dispatcher has every record"),
        "{blog}"
    );
    // And exactly once at the end too.
    let out = read_sink(&w.join("out/sink"));
    assert_eq!(out.records.len(), all.len());
    c.power_off();
}

/// The full real path: the host's real auditd (through the harness, which
/// restores kernel audit) starts `audisp-bridge` as its plugin; the bridge
/// feeds the container's socket-activated `audisp.service`, which feeds the
/// socket-activated plugin. The plugin gets exactly what auditd dispatched
/// (compared with auditd's own capture plugin), in order.
#[test]
fn real_auditd_through_the_bridge_into_the_booted_dispatcher() {
    use std::os::unix::fs::PermissionsExt;
    use support::auditd::{AuditdOptions, Plugin, PluginFormat, RealAuditd};
    if let Some(why) = skip_reason() {
        support::skip(&why);
        return;
    }
    if let Err(why) = RealAuditd::available_when_idle() {
        support::skip(&why);
        return;
    }
    let _one = ONE_CONTAINER.lock().unwrap_or_else(|p| p.into_inner());
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let c = prepare(w);
    // auditd runs plugins with an empty environment and at most two
    // arguments: a root-owned wrapper (0750) gives the bridge its paths.
    let wrapper = w.join("bridge-plugin");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nexport AUDISP_LOG=info\nexec '{}' --socket '{}' --state-dir '{}' 2>>'{}'\n",
            env!("CARGO_BIN_EXE_audisp-bridge"),
            w.join("run-audisp/input.sock").display(),
            w.join("bridge").display(),
            w.join("bridge.log").display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o750)).unwrap();
    let mut auditd = RealAuditd::start(AuditdOptions {
        plugins: vec![
            Plugin::executable("bridge", PluginFormat::String, &wrapper, &[]),
            Plugin::capture("capture", PluginFormat::String),
        ],
        ..AuditdOptions::default()
    })
    .expect("start auditd");
    auditd
        .record_syscalls(&["write"], &["-F", "a0=1"])
        .expect("add rule");
    let status = auditd
        .workload("dd")
        .args([
            "if=/dev/zero",
            "of=/dev/null",
            "bs=1",
            "count=2000",
            "status=none",
        ])
        .status()
        .expect("run dd");
    assert!(status.success());
    let marker = auditd
        .sync_captures()
        .expect("auditd dispatches the marker");
    wait_until(Duration::from_secs(60), "the marker at the plugin", || {
        texts(&read_sink(&w.join("out/sink")))
            .iter()
            .any(|t| t.windows(marker.len()).any(|x| x == marker.as_bytes()))
    });
    let report = auditd
        .stop()
        .expect("auditd stops and kernel audit is restored");
    assert_eq!(report.lost_during_run(), 0, "the kernel lost records");
    let captured = auditd.capture_lines("capture").expect("capture");
    let got = sink_texts(&w.join("out/sink"), captured.len(), "sink", &c);
    assert_eq!(got.len(), captured.len(), "no record lost or doubled");
    assert!(got == captured, "exactly what auditd dispatched, in order");
    assert!(
        captured.len() > 2000,
        "the workload was recorded: {}",
        captured.len()
    );
    eprintln!(
        "real auditd -> bridge -> audisp.service -> plugin: {} records",
        captured.len()
    );
    assert_eq!(c.prop("audisp-sink.service", "ActiveState"), "active");
    let blog = std::fs::read_to_string(w.join("bridge.log")).unwrap_or_default();
    assert!(blog.contains("connected to the dispatcher"), "{blog}");
}

/// The text `journalctl -o json` gives for a field: a string, or an array
/// of bytes when the value is not UTF-8.
fn journal_bytes(v: &serde_json::Value) -> Vec<u8> {
    match v {
        serde_json::Value::String(s) => s.as_bytes().to_vec(),
        serde_json::Value::Array(a) => a
            .iter()
            .map(|b| b.as_u64().and_then(|b| u8::try_from(b).ok()).unwrap())
            .collect(),
        other => panic!("unexpected journal field {other}"),
    }
}

/// The JSON lines audisp-logfile wrote under `dir` (its live zstd file,
/// read with `zstdcat`); None while a frame is half-written.
fn logfile_lines(dir: &Path) -> Option<Vec<Vec<u8>>> {
    let out = Command::new("zstdcat")
        .arg("-q")
        .arg(dir.join("audit.json.zst"))
        .output()
        .expect("zstdcat");
    out.status
        .success()
        .then(|| lines(&out.stdout).iter().map(|l| l.to_vec()).collect())
}

/// The record that makes the `actor` plugin ask for its `rescue` action.
const RESCUE_MARKER: &[u8] = b"type=USER msg=audit(1700000000.000:990001): pid=1 uid=0 \
auid=4294967295 ses=4294967295 msg='op=audisp-test-rescue res=success'";

/// D-Bus and the shipped plugin units on the booted systemd, all as an
/// admin installs them: the .deb installed with `apt install`, `[dbus]
/// enabled` in its audispd.toml, `audisp-logfile` and `audisp-journal`
/// turned on as the README says (plugins.d example copied, socket
/// enabled), the installed `audisp-bridge` started as auditd would start
/// it, and a sink plugin (`actor`) whose `[actions.rescue]` says
/// `run = "single-user"`. Checked:
///
/// * audispd, inside the hardened audisp.service, owns its name on the
///   container's real system bus, and `audispctl status` works there, for
///   root and for a member of the `audisp` group (the package's sysusers.d
///   group, in the bus policy dbus read at install);
/// * both plugins were socket-activated; the log file holds every event
///   exactly once (as the in-process JSON conversion writes it) and the
///   journal every record exactly once, in order, with `AUDIT_` fields;
/// * the shipped `audisp-metrics.socket` reaches audispd inside its
///   sandbox: a scrape from the host has every record counted, read by
///   prometheus_client's parser; the shipped `audisp-statsd` units, with
///   the shipped option file (and a 1 s interval), report every event
///   exactly once to a UDP listener on the host;
/// * last, the actor asks for `rescue`: audispd has the real systemd
///   isolate rescue.target, and the multi-user services stop, audispd
///   before the bus (audisp.service is ordered after it).
#[test]
fn dbus_system_action_and_shipped_plugins_on_booted_systemd() {
    let Some(deb) = installable() else {
        return;
    };
    let _one = ONE_CONTAINER.lock().unwrap_or_else(|p| p.into_inner());
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    work_dirs(w);
    // Where the shipped statsd settings send (the container shares the
    // host's network).
    let statsd = std::net::UdpSocket::bind("127.0.0.1:8125").expect("UDP port 8125 for statsd");
    statsd
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    sink_units(
        &w.join("units"),
        "actor",
        " --command rescue --command-on op=audisp-test-rescue",
    );
    let (c, _) = boot_installed(w, &deb, Vec::new());

    // As an admin configures it: [dbus] on, readable by the audisp group
    // (setroubleshootd is not here), the shipped plugins turned on as the
    // README says, and the actor.
    c.ok(&[
        "sed",
        "-i",
        "-e",
        "/^\\[dbus\\]$/,/^\\[/ s/^#enabled = false$/enabled = true/",
        "-e",
        "s/^#read_groups = \\[\\]$/read_groups = [\"audisp\"]/",
        "-e",
        "/^\\[dbus.setroubleshoot\\]$/,/^\\[/ s/^#enabled = true$/enabled = false/",
        "/etc/audisp/audispd.toml",
    ]);
    for p in ["logfile", "journal", "statsd"] {
        c.ok(&[
            "cp",
            &format!("/etc/audisp/plugins.d/{p}.toml.example"),
            &format!("/etc/audisp/plugins.d/{p}.toml"),
        ]);
    }
    // The installed statsd option file as an admin sets it: a shorter interval.
    let statsd_conf = c.path("/etc/audisp/audisp-statsd.toml");
    let mut shipped = std::fs::read_to_string(&statsd_conf).unwrap();
    shipped.push_str("interval = \"1s\"\n");
    std::fs::write(&statsd_conf, shipped).unwrap();
    std::fs::write(
        c.path("/etc/audisp/plugins.d/actor.toml"),
        "socket = \"/run/audisp/plugins/actor.sock\"\n[actions.rescue]\nrun = \"single-user\"\n",
    )
    .unwrap();
    let check = c.ok(&["audispd", "--check-config"]);
    assert_eq!(check, "ok: 4 plugins (actor, journal, logfile, statsd)\n");
    c.ok(&[
        "systemctl",
        "enable",
        "--now",
        "audisp-logfile.socket",
        "audisp-journal.socket",
        "audisp-statsd.socket",
        "audisp-metrics.socket",
        "audisp-actor.socket",
        "audisp.socket",
        "audisp.service",
    ]);
    assert_eq!(c.prop("dbus.socket", "ActiveState"), "active");

    // Every sample record, through the installed bridge.
    let data = support::dispatcher::sample();
    let all = lines(&data);
    let mut bridge = installed_bridge(&c, w);
    let mut feed = bridge.stdin.take().unwrap();
    write_lines(&mut feed, &all);

    // audispd on the real system bus, from inside its sandbox.
    wait_until(Duration::from_secs(30), "audispd on the system bus", || {
        c.x(&["audispctl", "status"]).status.success()
    });
    let owner = c.ok(&["busctl", "status", "org.audisp.Dispatcher1"]);
    let main_pid = c.prop("audisp.service", "MainPID");
    assert!(
        owner.lines().any(|l| l == format!("PID={main_pid}")),
        "{owner}"
    );
    assert!(owner.lines().any(|l| l == "Unit=audisp.service"), "{owner}");
    let table = c.ok(&["audispctl", "status"]);
    for p in ["logfile", "journal", "actor", "dbus"] {
        assert!(
            table
                .lines()
                .any(|l| l.split_whitespace().next() == Some(p)),
            "{table}"
        );
    }
    // A member of the audisp group may read too: the group exists and the
    // bus read the policy that names it when the package was installed.
    c.ok(&["useradd", "--system", "--groups", "audisp", "reader"]);
    let as_reader = c.ok(&[
        "setpriv",
        "--reuid=reader",
        "--regid=reader",
        "--init-groups",
        "audispctl",
        "status",
    ]);
    assert!(as_reader.contains("PLUGIN"), "{as_reader}");
    let bus_log = c.ok(&["journalctl", "--no-pager", "-u", "dbus", "-o", "cat"]);
    assert!(!bus_log.contains("Unknown group"), "{bus_log}");

    // audisp-logfile: every event once, as JSON, from the bridge's input
    // ("auditd").
    let logdir = PathBuf::from(format!("/proc/{}/root/var/log/audisp", c.pid1));
    let mut jw = audisp::format::JsonWriter::new();
    let mut want: Vec<Vec<u8>> = support::events::events(&all)
        .iter()
        .map(|ev| {
            let mut out = Vec::new();
            jw.write_event_from(ev, Some("auditd"), &mut out);
            out
        })
        .collect();
    want.sort();
    wait_until(
        Duration::from_secs(60),
        "every event in the log file",
        || logfile_lines(&logdir).is_some_and(|l| l.len() >= want.len()),
    );
    let files: Vec<String> = std::fs::read_dir(&logdir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(files, ["audit.json.zst"]);
    assert_eq!(c.prop("audisp-logfile.service", "ActiveState"), "active");
    let triggered = c.prop("audisp-logfile.service", "TriggeredBy");
    assert!(triggered.contains("audisp-logfile.socket"), "{triggered}");

    // audisp-journal: every record once, in order, with its fields.
    let journal = || -> Vec<serde_json::Value> {
        c.ok(&[
            "journalctl",
            "--no-pager",
            "--all",
            "-o",
            "json",
            "SYSLOG_IDENTIFIER=audisp",
        ])
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
    };
    wait_until(
        Duration::from_secs(60),
        "every record in the journal",
        || journal().len() >= all.len(),
    );
    let entries = journal();
    let messages: Vec<Vec<u8>> = entries
        .iter()
        .map(|e| journal_bytes(&e["MESSAGE"]))
        .collect();
    let expected: Vec<Vec<u8>> = all
        .iter()
        .map(|l| {
            l.iter()
                .map(|&b| if b == 0x1d { b' ' } else { b })
                .collect()
        })
        .collect();
    assert_eq!(messages.len(), expected.len(), "records in == entries out");
    assert!(
        messages == expected,
        "the journal holds the records in order"
    );
    for e in &entries {
        assert_eq!(e["_SYSTEMD_UNIT"], "audisp-journal.service", "{e}");
        assert!(e["AUDIT_TYPE_NAME"].is_string(), "{e}");
        assert!(e["AUDIT_ID"].is_string(), "{e}");
    }
    let triggered = c.prop("audisp-journal.service", "TriggeredBy");
    assert!(triggered.contains("audisp-journal.socket"), "{triggered}");

    // Still exactly once after both settled.
    let mut got = logfile_lines(&logdir).expect("the log file reads back");
    got.sort();
    assert_eq!(got.len(), want.len(), "events in == events out");
    assert!(got == want, "the log file holds what the conversion writes");
    let stats: serde_json::Value =
        serde_json::from_str(&c.ok(&["audispctl", "--json", "status"])).unwrap();
    let records_in: u64 = stats["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["records"].as_u64().unwrap())
        .sum();
    assert_eq!(records_in, all.len() as u64, "{stats}");

    eprintln!(
        "booted systemd: {} records -> {} journal entries, {} JSON events in the log file",
        all.len(),
        entries.len(),
        got.len()
    );

    // The metrics endpoint, scraped from the host.
    let scrape = || {
        let mut c = std::net::TcpStream::connect("127.0.0.1:9469").expect("audisp-metrics.socket");
        c.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .unwrap();
        let mut answer = String::new();
        std::io::Read::read_to_string(&mut c, &mut answer).unwrap();
        answer
    };
    let answer = scrape();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    let m = support::metrics::parse(body, "text");
    let records_in: f64 = m
        .samples
        .iter()
        .filter(|((name, _), _)| name == "audisp_input_records_total")
        .map(|(_, v)| v)
        .sum();
    assert_eq!(records_in, all.len() as f64, "{body}");
    for p in ["logfile", "journal", "statsd", "actor", "dbus"] {
        let state = [("plugin", p), ("state", "connected")];
        assert_eq!(m.get("audisp_plugin_state", &state), 1.0, "{body}");
    }
    let triggered = c.prop("audisp.service", "TriggeredBy");
    assert!(triggered.contains("audisp-metrics.socket"), "{triggered}");

    // statsd: every event counted once, in reports at the interval.
    let events = want.len() as u64;
    let mut counted = 0u64;
    let mut buf = [0u8; 2048];
    let deadline = Instant::now() + Duration::from_secs(60);
    while counted < events {
        assert!(
            Instant::now() < deadline,
            "statsd: {counted} of {events} events reported"
        );
        if let Ok(n) = statsd.recv(&mut buf) {
            for line in std::str::from_utf8(&buf[..n]).unwrap().lines() {
                if let Some(v) = line.strip_prefix("events.total_count:") {
                    counted += v.trim_end_matches("|c").parse::<u64>().unwrap();
                }
            }
        }
    }
    assert_eq!(counted, events, "no event reported twice");
    let triggered = c.prop("audisp-statsd.service", "TriggeredBy");
    assert!(triggered.contains("audisp-statsd.socket"), "{triggered}");
    assert_eq!(c.prop("audisp-statsd.service", "ActiveState"), "active");

    // Last: the actor asks for rescue; systemd isolates rescue.target.
    let asked = Instant::now();
    feed.write_all(RESCUE_MARKER).unwrap();
    feed.write_all(b"\n").unwrap();
    feed.flush().unwrap();
    let actor = sink_texts(&w.join("out/actor"), all.len() + 1, "actor", &c);
    assert!(actor[..all.len()] == all[..] && actor[all.len()] == RESCUE_MARKER);
    wait_until(Duration::from_secs(30), "rescue.target", || {
        c.prop("rescue.target", "ActiveState") == "active"
    });
    eprintln!(
        "rescue.target active {:?} after the request",
        asked.elapsed()
    );
    let log = c.ok(&[
        "journalctl",
        "--no-pager",
        "-o",
        "cat",
        "SYSLOG_IDENTIFIER=audispd",
    ]);
    assert!(
        log.contains(
            "plugin actor requested action rescue: single-user \
             (systemd queued job /org/freedesktop/systemd1/job/"
        ),
        "{log}"
    );
    wait_until(Duration::from_secs(30), "multi-user to stop", || {
        c.prop("multi-user.target", "ActiveState") == "inactive"
    });
    for unit in ["audisp.service", "audisp-logfile.service", "dbus.service"] {
        wait_until(Duration::from_secs(30), unit, || {
            c.prop(unit, "ActiveState") == "inactive"
        });
    }
    // audisp.service is ordered after the bus: it was fully stopped before
    // dbus.service began to stop.
    let mono = |unit: &str, prop: &str| -> u64 { c.prop(unit, prop).parse().unwrap() };
    let audisp_down = mono("audisp.service", "InactiveEnterTimestampMonotonic");
    let dbus_stopping = mono("dbus.service", "ActiveExitTimestampMonotonic");
    assert!(
        audisp_down > 0 && audisp_down <= dbus_stopping,
        "audisp stopped at {audisp_down}, dbus began stopping at {dbus_stopping}"
    );
    drop(feed);
    let _ = bridge.kill();
    let _ = bridge.wait();
    let mut c = c;
    c.power_off();
}

/// The package's life on a booted systemd: `apt install ./audisp_*.deb`,
/// then, as installed and with nothing copied by hand:
///
/// * the `audisp` group (sysusers.d), the bridge's state directory
///   (tmpfiles.d) and the presets: `audisp.socket` and `audisp.service`
///   enabled, every other unit disabled;
/// * `systemd-analyze verify` prints nothing for any installed unit, with
///   its man page check (`Documentation=man:...`) on;
/// * `man` renders every installed page without a warning;
/// * every shipped plugins.d example copied as is, and every installed
///   configuration file, passes its program's `--check-config`;
/// * `systemctl enable --now audisp.socket`, and the installed bridge's
///   records reach the socket-activated dispatcher, all acknowledged;
/// * `apt remove` stops every unit and leaves no audisp process; `apt
///   purge` removes the configuration, the state, the runtime directory and
///   the units' enablement.
#[test]
fn package_installs_verifies_and_purges_on_booted_systemd() {
    let Some(deb) = installable() else {
        return;
    };
    let stock_syslog = Path::new("/sbin/audisp-syslog");
    if !stock_syslog.exists() {
        support::skip(
            "/sbin/audisp-syslog missing (apt-get install auditd), for the syslog example",
        );
        return;
    }
    let _one = ONE_CONTAINER.lock().unwrap_or_else(|p| p.into_inner());
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    work_dirs(w);
    // The stock plugin the syslog example names, from auditd (which the
    // package recommends and apt_install leaves out), as on a real host.
    let (c, apt) = boot_installed(w, &deb, vec![ro(stock_syslog, "/usr/sbin/audisp-syslog")]);
    assert!(apt.contains("Setting up audisp "), "{apt}");

    // What the maintainer scripts set up.
    c.ok(&["getent", "group", "audisp"]);
    assert_eq!(
        c.ok(&["stat", "-c", "%a %U", "/var/lib/audisp-bridge"]),
        "700 root\n"
    );
    let units: Vec<String> = c
        .ok(&["dpkg", "-L", "audisp"])
        .lines()
        .filter(|l| l.starts_with("/usr/lib/systemd/system/"))
        .filter(|l| l.ends_with(".service") || l.ends_with(".socket"))
        .map(str::to_string)
        .collect();
    let shipped = std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("units"))
        .unwrap()
        .count();
    assert_eq!(units.len(), shipped, "{units:?}");
    for unit in &units {
        let name = Path::new(unit).file_name().unwrap().to_string_lossy();
        let state = c.x(&["systemctl", "is-enabled", &name]);
        let state = String::from_utf8_lossy(&state.stdout).trim().to_string();
        // A disabled service whose [Install] only has Also= is "indirect".
        let enabled = name == "audisp.socket" || name == "audisp.service";
        assert!(
            (state == "enabled") == enabled
                && ["enabled", "disabled", "indirect"].contains(&state.as_str()),
            "{name} after the preset: {state}"
        );
    }

    // systemd-analyze verify, man page check included: not a word.
    let mut verify = vec!["systemd-analyze", "verify"];
    verify.extend(units.iter().map(String::as_str));
    let out = c.x(&verify);
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.is_empty(),
        "{verify:?}: {}\n{said}",
        out.status
    );

    // man renders every installed page, by name, without a warning.
    let pages: Vec<String> = c
        .ok(&["dpkg", "-L", "audisp"])
        .lines()
        .filter(|l| l.starts_with("/usr/share/man/man") && l.ends_with(".gz"))
        .map(str::to_string)
        .collect();
    assert!(pages.len() >= 9, "{pages:?}");
    for page in &pages {
        let file = Path::new(page).file_name().unwrap().to_string_lossy();
        let (name, section) = file
            .trim_end_matches(".gz")
            .rsplit_once('.')
            .map(|(n, s)| (n.to_string(), s.to_string()))
            .unwrap();
        let out = c.x(&[
            "env",
            "MANWIDTH=80",
            "man",
            "--warnings",
            "-P",
            "cat",
            &section,
            &name,
        ]);
        let text = String::from_utf8_lossy(&out.stdout);
        let warnings = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "man {section} {name}: {}\n{warnings}",
            out.status
        );
        assert!(
            warnings.trim().is_empty(),
            "man {section} {name}:\n{warnings}"
        );
        assert!(
            text.contains("NAME") && text.contains(&name),
            "man {section} {name}:\n{text}"
        );
    }
    let audispd = c.ok(&["env", "MANWIDTH=80", "man", "-P", "cat", "audispd"]);
    assert!(
        audispd.contains("SYNOPSIS") && audispd.contains("--check-config"),
        "{audispd}"
    );

    // Every shipped example copied as is, with the installed audispd.toml.
    let examples: Vec<String> = c
        .ok(&["sh", "-c", "ls /etc/audisp/plugins.d/*.example"])
        .lines()
        .map(str::to_string)
        .collect();
    assert!(examples.len() >= 6, "{examples:?}");
    c.ok(&[
        "sh",
        "-c",
        "mkdir -p /root/check/plugins.d && cp /etc/audisp/audispd.toml /root/check/ && \
         for f in /etc/audisp/plugins.d/*.example; do \
           cp \"$f\" /root/check/plugins.d/\"$(basename \"$f\" .example)\"; done",
    ]);
    let check = c.ok(&["audispd", "--check-config", "--config-dir", "/root/check"]);
    let mut names: Vec<String> = examples
        .iter()
        .map(|e| {
            Path::new(e)
                .file_name()
                .unwrap()
                .to_string_lossy()
                .trim_end_matches(".toml.example")
                .to_string()
        })
        .collect();
    names.sort();
    assert_eq!(
        check,
        format!("ok: {} plugins ({})\n", names.len(), names.join(", "))
    );
    c.ok(&["audispd", "--check-config"]);
    c.ok(&["audisp-remote", "--check-config"]);
    c.ok(&["audisp-receive", "--check-config"]);

    // The README's first step, then records through the installed bridge.
    c.ok(&["systemctl", "enable", "--now", "audisp.socket"]);
    let data = support::dispatcher::sample();
    let all = lines(&data);
    let mut bridge = installed_bridge(&c, w);
    let mut feed = bridge.stdin.take().unwrap();
    write_lines(&mut feed, &all);
    drop(feed);
    let status = bridge.wait().unwrap();
    let blog = std::fs::read_to_string(w.join("bridge.log")).unwrap();
    assert!(
        status.success() && blog.contains("the dispatcher has every record"),
        "{blog}"
    );
    assert_eq!(c.prop("audisp.service", "ActiveState"), "active");
    let triggered = c.prop("audisp.service", "TriggeredBy");
    assert!(triggered.contains("audisp.socket"), "{triggered}");

    // apt remove: every unit stopped, no audisp program left running.
    c.ok(&[
        "env",
        "DEBIAN_FRONTEND=noninteractive",
        "apt-get",
        "remove",
        "-y",
        "audisp",
    ]);
    for unit in &units {
        let name = Path::new(unit).file_name().unwrap().to_string_lossy();
        let state = c.x(&["systemctl", "is-active", &name]);
        assert_ne!(
            String::from_utf8_lossy(&state.stdout).trim(),
            "active",
            "{name} after apt remove"
        );
    }
    let ps = c.ok(&["ps", "-eo", "comm="]);
    assert!(!ps.lines().any(|p| p.starts_with("audisp")), "{ps}");
    assert!(c.path("/var/lib/audisp").exists(), "remove keeps the state");
    assert!(
        c.path("/etc/audisp/audispd.toml").exists(),
        "remove keeps the configuration"
    );

    // apt purge: configuration, state, runtime directory and enablement gone.
    c.ok(&[
        "env",
        "DEBIAN_FRONTEND=noninteractive",
        "apt-get",
        "purge",
        "-y",
        "audisp",
    ]);
    for gone in [
        "/etc/audisp/audispd.toml",
        "/etc/audisp/plugins.d/logfile.toml.example",
        "/etc/audit/plugins.d/audisp-bridge.conf",
        "/var/lib/audisp",
        "/var/lib/audisp-bridge",
        "/run/audisp",
        "/usr/sbin/audispd",
    ] {
        assert!(!c.path(gone).exists(), "{gone} after apt purge");
    }
    let links = c.ok(&["find", "/etc/systemd/system", "-name", "audisp*"]);
    assert!(links.trim().is_empty(), "{links}");
    let dpkg = c.x(&["dpkg-query", "-W", "-f", "${db:Status-Status}", "audisp"]);
    let left = String::from_utf8_lossy(&dpkg.stdout);
    assert!(left.is_empty() || left == "not-installed", "dpkg: {left}");
    let ps = c.ok(&["ps", "-eo", "comm="]);
    assert!(!ps.lines().any(|p| p.starts_with("audisp")), "{ps}");
    let mut c = c;
    c.power_off();
}
