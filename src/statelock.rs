//! One program per state: an exclusive `flock` that every program owning a
//! state directory (or state file) takes before it touches it, so a second
//! copy started by mistake — by hand next to the service, or by two units
//! naming one directory — is refused at start with the holder's pid instead
//! of interleaving its writes with the first one's.
//!
//! The lock is a file next to what it guards (`DIR/lock` for a directory,
//! `FILE.lock` for a single state file) holding the pid of the process that
//! has it. The kernel releases a `flock` when its holder exits, however it
//! exits (kill -9 included), so a stale file never blocks a restart; the pid
//! in it is only read to name the holder in the refusal.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

/// The name of the lock file inside a locked directory.
pub const DIR_LOCK_NAME: &str = "lock";

/// An exclusive lock on a program's state, held until dropped (or the
/// process ends).
#[derive(Debug)]
pub struct StateLock {
    _file: Flock<File>,
    path: PathBuf,
}

impl StateLock {
    /// Locks the state directory `dir` through `DIR/lock`, creating the
    /// directory (mode 0700) if it is missing.
    pub fn dir(dir: &Path) -> Result<StateLock, String> {
        crate::statefile::private_dir(dir)
            .map_err(|e| format!("cannot make the state directory {}: {e}", dir.display()))?;
        StateLock::take(&dir.join(DIR_LOCK_NAME), dir)
    }

    /// Locks the single state file `path` through `PATH.lock` (the state file
    /// itself may be replaced by renaming, which a lock on it would not
    /// survive).
    pub fn file(path: &Path) -> Result<StateLock, String> {
        let mut lock = path.as_os_str().to_owned();
        lock.push(".lock");
        StateLock::take(Path::new(&lock), path)
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn take(lock: &Path, guarded: &Path) -> Result<StateLock, String> {
        let file = crate::statefile::open(
            crate::statefile::options()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false),
            lock,
        )
        .map_err(|e| format!("cannot open the lock file: {e}"))?;
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(mut file) => {
                write_pid(&mut file)
                    .map_err(|e| format!("cannot write the lock file {}: {e}", lock.display()))?;
                Ok(StateLock {
                    _file: file,
                    path: lock.to_path_buf(),
                })
            }
            Err((file, Errno::EWOULDBLOCK)) => {
                let holder = match holder_pid(file) {
                    Some(pid) => format!("pid {pid}"),
                    None => "a process whose pid it has not written yet".to_string(),
                };
                Err(format!(
                    "{} is in use by {holder} (it holds {}): only one program may use it at a \
                     time; stop that one first",
                    guarded.display(),
                    lock.display()
                ))
            }
            Err((_, e)) => Err(format!("cannot lock {}: {e}", lock.display())),
        }
    }
}

/// Replaces the lock file's content with this process's pid.
fn write_pid(file: &mut File) -> io::Result<()> {
    file.set_len(0)?;
    file.seek(SeekFrom::Start(0))?;
    file.write_all(format!("{}\n", std::process::id()).as_bytes())
}

/// The pid the holder wrote; it writes it right after taking the lock, so
/// an empty file is read again for a moment.
fn holder_pid(mut file: File) -> Option<u32> {
    let deadline = Instant::now() + Duration::from_millis(200);
    loop {
        let mut text = String::new();
        let read = file
            .seek(SeekFrom::Start(0))
            .and_then(|_| file.read_to_string(&mut text));
        if let Ok(pid) = text.trim().parse() {
            return Some(pid);
        }
        if read.is_err() || Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_is_refused_with_the_holders_pid_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let first = StateLock::dir(dir.path()).unwrap();
        assert_eq!(first.path(), dir.path().join("lock"));
        let err = StateLock::dir(dir.path()).unwrap_err();
        assert!(
            err.contains(&format!("is in use by pid {}", std::process::id())),
            "{err}"
        );
        drop(first);
        let again = StateLock::dir(dir.path()).unwrap();
        let text = std::fs::read_to_string(again.path()).unwrap();
        assert_eq!(text, format!("{}\n", std::process::id()));
    }

    #[test]
    fn a_missing_state_directory_is_made_for_root_alone() {
        let top = tempfile::tempdir().unwrap();
        let dir = top.path().join("a/state");
        let _held = StateLock::dir(&dir).unwrap();
        let mode = std::fs::metadata(&dir).unwrap().permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o700
        );
    }

    #[test]
    fn a_state_file_is_locked_beside_it() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("pos");
        let _held = StateLock::file(&state).unwrap();
        assert!(dir.path().join("pos.lock").exists());
        let err = StateLock::file(&state).unwrap_err();
        assert!(err.starts_with(&format!("{} is in use by pid", state.display())));
    }

    #[test]
    fn a_symlinked_lock_file_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("elsewhere");
        std::fs::write(&target, "keep").unwrap();
        std::os::unix::fs::symlink(&target, dir.path().join("lock")).unwrap();
        assert!(StateLock::dir(dir.path()).is_err());
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep");
    }
}
