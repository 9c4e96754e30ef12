//! audisp-filter: auditd 4.x's `audisp-filter` for any dispatcher — a stock
//! plugin that filters whole audit events with `ausearch-expression(5)`
//! rules and pipes the events that pass to another plugin it runs as its
//! child. See `docs/audisp-filter.8.md`.
//!
//! `audisp-filter MODE CONFIG PROGRAM [ARGS…]` reads auditd's string format
//! on standard input; `audisp-filter --check CONFIG` checks a rule file.

mod child;
mod pipeline;

use std::ffi::OsString;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::AsFd;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{ExitCode, ExitStatus};
use std::time::{Duration, Instant};

use audisp::filter::rules::parse_rules;
use audisp::filter::{Action, Filter};
use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, Signal};
use nix::unistd::{geteuid, Pid};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};

use child::{Child, Gone};
use pipeline::Pipeline;

const USAGE: &str = "usage: audisp-filter MODE CONFIG PROGRAM [ARGS...]
       audisp-filter --check CONFIG
MODE: keep (or blocklist): forward only the events that match CONFIG's rules;
      drop (or allowlist): forward every event except those that match.";

/// Exit status for a bad command line, rule file or program.
const EXIT_CONFIG: u8 = 2;
/// The largest rule file read.
const MAX_CONFIG_BYTES: u64 = 1 << 20;
/// Stop reading auditd while this much output waits for the child.
const HIGH_WATER: usize = 4 << 20;
/// How often open events are checked for their timeout.
const TICK: Duration = Duration::from_millis(500);

fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    let first = args.first().and_then(|a| a.to_str());
    match (first, args.len()) {
        (Some("--check"), 2) => return check(Path::new(&args[1])),
        (Some("-h" | "--help"), 1) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        _ if args.len() >= 3 => {}
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(EXIT_CONFIG);
        }
    }
    let Some(action) = args[0].to_str().and_then(Action::from_name) else {
        eprintln!(
            "audisp-filter: unknown mode {:?}: expected keep, drop, blocklist (= keep) or allowlist (= drop)\n{USAGE}",
            args[0]
        );
        return ExitCode::from(EXIT_CONFIG);
    };
    let config = PathBuf::from(&args[1]);
    let filter = match load(&config) {
        Ok(f) => f,
        Err(problems) => {
            for p in problems {
                eprintln!("audisp-filter: {p}");
            }
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    if let Err(why) = check_program(Path::new(&args[2])) {
        eprintln!("audisp-filter: {why}");
        return ExitCode::from(EXIT_CONFIG);
    }
    match run(action, &config, filter, &args[2..]) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("audisp-filter: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `--check CONFIG`: every problem as `CONFIG:LINE:COLUMN: …`, exit 2 if any.
fn check(config: &Path) -> ExitCode {
    match load(config) {
        Ok(f) => {
            println!(
                "{}: {} expression{}, no errors",
                config.display(),
                f.rules(),
                if f.rules() == 1 { "" } else { "s" }
            );
            println!("{f}");
            ExitCode::SUCCESS
        }
        Err(problems) => {
            for p in problems {
                eprintln!("{p}");
            }
            ExitCode::from(EXIT_CONFIG)
        }
    }
}

/// Reads and parses a rule file; problems come as `FILE[:LINE:COLUMN]: …`.
fn load(path: &Path) -> Result<Filter, Vec<String>> {
    let shown = path.display();
    let text = read_trusted(path).map_err(|why| vec![format!("{shown}: {why}")])?;
    parse_rules(&text).map_err(|errors| errors.iter().map(|e| format!("{shown}:{e}")).collect())
}

/// The owner rule shared by the rule file and the program.
fn owner_problem(uid: u32) -> Option<String> {
    let euid = geteuid().as_raw();
    (uid != 0 && uid != euid).then(|| {
        format!("is owned by uid {uid}; it must be owned by root (or by uid {euid}, which runs audisp-filter)")
    })
}

/// The rule file's text, if it is a regular file that only its owner (root
/// or whoever runs us) can change.
fn read_trusted(path: &Path) -> Result<String, String> {
    let mut file = File::open(path).map_err(|e| format!("cannot open: {e}"))?;
    let meta = file.metadata().map_err(|e| format!("cannot check: {e}"))?;
    if !meta.is_file() {
        return Err("is not a regular file".into());
    }
    if let Some(p) = owner_problem(meta.uid()) {
        return Err(p);
    }
    if meta.mode() & 0o022 != 0 {
        return Err(format!(
            "can be written by group or others (mode {:04o}); fix: chmod go-w {}",
            meta.mode() & 0o7777,
            path.display()
        ));
    }
    if meta.len() > MAX_CONFIG_BYTES {
        return Err(format!("is larger than {MAX_CONFIG_BYTES} bytes"));
    }
    let mut text = String::new();
    file.read_to_string(&mut text)
        .map_err(|e| format!("cannot read as UTF-8 text: {e}"))?;
    Ok(text)
}

/// PROGRAM must be an absolute path to an executable regular file that only
/// its owner (root or whoever runs us) can change: it runs with our rights.
fn check_program(path: &Path) -> Result<(), String> {
    let shown = path.display();
    if !path.is_absolute() {
        return Err(format!("PROGRAM {shown} is not an absolute path"));
    }
    let meta = std::fs::metadata(path).map_err(|e| format!("PROGRAM {shown}: {e}"))?;
    let mode = meta.permissions().mode();
    if !meta.is_file() || mode & 0o111 == 0 {
        return Err(format!("PROGRAM {shown} is not an executable file"));
    }
    if let Some(p) = owner_problem(meta.uid()) {
        return Err(format!("PROGRAM {shown} {p}"));
    }
    if mode & 0o022 != 0 {
        return Err(format!(
            "PROGRAM {shown} can be written by group or others (mode {:04o})",
            mode & 0o7777
        ));
    }
    Ok(())
}

/// A signal, as a readable byte on a socket.
fn signal_pipe(signals: &[i32]) -> io::Result<UnixStream> {
    let (read, write) = UnixStream::pair()?;
    read.set_nonblocking(true)?;
    write.set_nonblocking(true)?;
    for &s in signals {
        signal_hook::low_level::pipe::register(s, write.try_clone()?)?;
    }
    Ok(read)
}

/// Whether a signal pipe was written to (and empties it).
fn took_signal(pipe: &mut UnixStream) -> bool {
    let mut buf = [0u8; 64];
    let mut any = false;
    while let Ok(n) = pipe.read(&mut buf) {
        if n == 0 {
            break;
        }
        any = true;
    }
    any
}

fn describe(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("exited with status {c}"),
        (None, Some(s)) => format!(
            "was killed by signal {}",
            Signal::try_from(s).map_or_else(|_| s.to_string(), |s| s.as_str().to_string())
        ),
        _ => format!("ended ({status})"),
    }
}

/// Why the main loop ended.
enum End {
    /// Standard input ended.
    Input,
    /// SIGTERM or SIGINT.
    Signal,
    /// The child exited or stopped reading.
    Child,
}

fn run(action: Action, config: &Path, filter: Filter, argv: &[OsString]) -> io::Result<ExitCode> {
    let mut hup = signal_pipe(&[SIGHUP])?;
    let mut term = signal_pipe(&[SIGTERM, SIGINT])?;
    let program = argv[0].to_string_lossy().into_owned();
    if filter.rules() == 0 {
        eprintln!(
            "audisp-filter: {} has no expressions: no event matches, so {}",
            config.display(),
            match action {
                Action::Keep => "nothing is forwarded",
                Action::Drop => "every event is forwarded",
            }
        );
    }
    let mut child = Child::start(argv)?;
    eprintln!(
        "audisp-filter: started {program} (pid {}); {} events matching {} ({} expression{})",
        child.pid(),
        action.as_str(),
        config.display(),
        filter.rules(),
        if filter.rules() == 1 { "" } else { "s" }
    );
    let mut pipeline = Pipeline::new(filter, action);
    let stdin = io::stdin();
    let mut buf = vec![0u8; 64 * 1024];
    let mut last_tick = Instant::now();
    let end = loop {
        let want_input = pipeline.output().len() < HIGH_WATER;
        let want_output = !pipeline.output().is_empty();
        let input_fd = child.input_fd();
        let mut fds = vec![
            PollFd::new(hup.as_fd(), PollFlags::POLLIN),
            PollFd::new(term.as_fd(), PollFlags::POLLIN),
            PollFd::new(child.exit_fd(), PollFlags::POLLIN),
        ];
        if want_input {
            fds.push(PollFd::new(stdin.as_fd(), PollFlags::POLLIN));
        }
        if let (true, Some(fd)) = (want_output, input_fd) {
            fds.push(PollFd::new(fd, PollFlags::POLLOUT));
        }
        let wait = PollTimeout::try_from(TICK.as_millis() as i32).unwrap_or(PollTimeout::MAX);
        match nix::poll::poll(&mut fds, wait) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
        let ready = |i: usize| {
            fds.get(i)
                .and_then(PollFd::revents)
                .is_some_and(|r| !r.is_empty())
        };
        let (hup_ready, term_ready, exited) = (ready(0), ready(1), ready(2));
        let input_ready = want_input && ready(3);
        drop(fds);
        if term_ready && took_signal(&mut term) {
            break End::Signal;
        }
        if hup_ready && took_signal(&mut hup) {
            reload(config, &mut pipeline);
            let _ = kill(Pid::from_raw(child.pid() as i32), Signal::SIGHUP);
        }
        if exited {
            break End::Child;
        }
        let now = Instant::now();
        if input_ready {
            match nix::unistd::read(stdin.as_fd(), &mut buf) {
                Ok(0) => break End::Input,
                Ok(n) => pipeline.feed(&buf[..n], now),
                Err(Errno::EINTR | Errno::EAGAIN) => {}
                Err(e) => {
                    let e = io::Error::from(e);
                    return Err(io::Error::new(
                        e.kind(),
                        format!("reading standard input: {e}"),
                    ));
                }
            }
        }
        if now.duration_since(last_tick) >= TICK {
            pipeline.idle(now);
            last_tick = now;
        }
        match child.write_some(pipeline.output()) {
            Ok(()) => {}
            Err(Gone::Closed) => break End::Child,
            Err(Gone::Failed(e)) => {
                eprintln!("audisp-filter: writing to {program}: {e}");
                break End::Child;
            }
        }
    };
    if matches!(end, End::Signal) {
        drain_input(&mut pipeline, &mut buf)?;
    }
    finish(end, pipeline, child, &program)
}

/// Takes what auditd had already written when the stop signal came (at
/// most [`HIGH_WATER`] bytes), so that it is not lost.
fn drain_input(pipeline: &mut Pipeline, buf: &mut [u8]) -> io::Result<()> {
    let stdin = io::stdin();
    let mut taken = 0;
    while taken < HIGH_WATER {
        let mut fds = [PollFd::new(stdin.as_fd(), PollFlags::POLLIN)];
        match nix::poll::poll(&mut fds, PollTimeout::ZERO) {
            Ok(0) => return Ok(()),
            Ok(_) => {}
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
        match nix::unistd::read(stdin.as_fd(), buf) {
            Ok(0) => return Ok(()),
            Ok(n) => {
                pipeline.feed(&buf[..n], Instant::now());
                taken += n;
            }
            Err(Errno::EINTR | Errno::EAGAIN) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

fn reload(config: &Path, pipeline: &mut Pipeline) {
    match load(config) {
        Ok(f) => {
            eprintln!(
                "audisp-filter: SIGHUP: reloaded {} ({} expression{})",
                config.display(),
                f.rules(),
                if f.rules() == 1 { "" } else { "s" }
            );
            pipeline.set_filter(f);
        }
        Err(problems) => {
            for p in problems {
                eprintln!("audisp-filter: {p}");
            }
            eprintln!("audisp-filter: SIGHUP: the rules were not reloaded; the previous ones stay");
        }
    }
}

/// Hands over what is left, stops the child and reports.
fn finish(
    end: End,
    mut pipeline: Pipeline,
    mut child: Child,
    program: &str,
) -> io::Result<ExitCode> {
    let now = Instant::now();
    let code = match end {
        End::Child => {
            let held = pipeline.held() + pipeline.output().iter().filter(|&&b| b == b'\n').count();
            let how = match child.exited() {
                Some(s) => describe(s),
                None => "stopped reading its input".to_string(),
            };
            eprintln!(
                "audisp-filter: {program} {how}; exiting (records not yet delivered to it: {held}; the dispatcher restarts audisp-filter and {program} with it)"
            );
            pipeline.output().clear();
            child.finish(pipeline.output())?;
            ExitCode::FAILURE
        }
        End::Input | End::Signal => {
            pipeline.finish(now);
            let why = if matches!(end, End::Input) {
                "end of input"
            } else {
                "stop signal"
            };
            let (status, undelivered) = child.finish(pipeline.output())?;
            if undelivered > 0 {
                eprintln!(
                    "audisp-filter: {program} stopped reading; {undelivered} records were not delivered"
                );
            }
            let (records_in, records_out, malformed, counts) = pipeline.stats();
            eprintln!(
                "audisp-filter: {why}: {records_in} records read ({malformed} lines skipped), {} forwarded; {} events passed, {} dropped; {program} {}",
                records_out - undelivered as u64,
                counts.events_passed,
                counts.events_dropped,
                describe(status)
            );
            if status.success() && undelivered == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
    };
    Ok(code)
}
