//! Opening the files and directories a program keeps its state in (journal
//! segments, cursors, checkpoints, spools, positions) so that nobody else
//! can redirect the writes.
//!
//! The programs run as root: a state file that is a symbolic link planted
//! by someone else would have root overwrite whatever it points to. So:
//!
//! * a state directory is private: created mode 0700; an existing one owned
//!   by the running user is tightened to 0700 (through its descriptor, never
//!   by name); one owned by anyone else is refused. The configured directory
//!   may be reached through links (the admin chose the path); a directory a
//!   program makes inside it for itself ([`private_subdir`]) may not be one;
//! * a state file is opened with `O_NOFOLLOW` (a link in its place is
//!   refused, not followed) and created mode 0600;
//! * a file replaced whole ([`write_atomically`]) is written to a temporary
//!   name opened the same way (a link left there is removed, never
//!   followed), synced and renamed over the old one.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::Path;

/// Mode of a state directory.
const DIR_MODE: u32 = 0o700;
/// Mode of a new state file.
const FILE_MODE: u32 = 0o600;

/// Options for a state file: set `read`/`write`/`append`/`create`… as
/// usual, then [`open`] it. New files get mode 0600; a symbolic link is
/// refused.
pub fn options() -> OpenOptions {
    let mut o = OpenOptions::new();
    o.mode(FILE_MODE)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC);
    o
}

/// Opens `path` with `opts` (from [`options`]); the error names the path
/// and says plainly when a link was refused.
pub fn open(opts: &OpenOptions, path: &Path) -> io::Result<File> {
    opts.open(path).map_err(|e| explain(e, path))
}

/// The error with its path, and for a refused link, why.
fn explain(e: io::Error, path: &Path) -> io::Error {
    if e.raw_os_error() == Some(libc::ELOOP) {
        return io::Error::new(
            e.kind(),
            format!(
                "{} is a symbolic link; state files are never written through links (someone may be trying to make this program overwrite another file); remove it",
                path.display()
            ),
        );
    }
    io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

/// Replaces `path` with `data` so that a crash leaves the old or the new
/// file, never a mix: written to `path.tmp` (mode 0600, never through a
/// link), synced, renamed over `path`, and the directory synced.
pub fn write_atomically(path: &Path, data: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut opts = options();
    opts.write(true).create(true).truncate(true);
    let mut f = match opts.open(&tmp) {
        // A link left at the temporary name: remove the link itself.
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            std::fs::remove_file(&tmp).map_err(|e| explain(e, &tmp))?;
            open(&opts, &tmp)?
        }
        r => r.map_err(|e| explain(e, &tmp))?,
    };
    if let Err(e) = f.write_all(data).and_then(|_| f.sync_data()) {
        // What was written of it must not hold on to the space (a full
        // disk is the usual reason to be here).
        drop(f);
        let _ = std::fs::remove_file(&tmp);
        return Err(explain(e, &tmp));
    }
    std::fs::rename(&tmp, path).map_err(|e| explain(e, path))?;
    if let Some(dir) = path.parent() {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| explain(e, dir))?;
    }
    Ok(())
}

/// Makes `dir` a private state directory: creates it (and missing parents)
/// mode 0700, or checks that an existing one belongs to the running user
/// and tightens it to 0700. Links on the way are followed.
pub fn private_dir(dir: &Path) -> io::Result<()> {
    make(dir, true)
}

/// [`private_dir`] for a directory a program keeps inside its state
/// directory (`cursors/`): the last component must not be a link.
pub fn private_subdir(dir: &Path) -> io::Result<()> {
    make(dir, false)
}

fn make(dir: &Path, follow: bool) -> io::Result<()> {
    match std::fs::DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)
    {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(explain(e, dir)),
    }
    let mut flags = libc::O_DIRECTORY | libc::O_CLOEXEC;
    if !follow {
        flags |= libc::O_NOFOLLOW;
    }
    let d = OpenOptions::new()
        .read(true)
        .custom_flags(flags)
        .open(dir)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) | Some(libc::ENOTDIR) if !follow => io::Error::new(
                e.kind(),
                format!(
                    "{} is not a directory but a link or a file; state directories are never reached through links; remove it",
                    dir.display()
                ),
            ),
            _ => explain(e, dir),
        })?;
    let meta = d.metadata().map_err(|e| explain(e, dir))?;
    let me = nix::unistd::geteuid().as_raw();
    if meta.uid() != me {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "{} belongs to uid {}, not to uid {me} which runs this program; a state directory must be private to its program; fix: chown {me} {} && chmod 0700 {}",
                dir.display(),
                meta.uid(),
                dir.display(),
                dir.display()
            ),
        ));
    }
    if meta.mode() & 0o7777 != DIR_MODE {
        nix::sys::stat::fchmod(
            d.as_fd(),
            nix::sys::stat::Mode::from_bits_truncate(DIR_MODE as libc::mode_t),
        )
        .map_err(|e| explain(e.into(), dir))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn links_are_refused_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "precious\n").unwrap();
        let state = dir.path().join("state.pos");
        std::os::unix::fs::symlink(&victim, &state).unwrap();
        let mut o = options();
        o.write(true).create(true);
        let e = open(&o, &state).unwrap_err();
        assert!(e.to_string().contains("is a symbolic link"), "{e}");
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");
        // Replaced whole: the link at the final name is replaced, a link
        // at the temporary name removed; the victim is untouched.
        std::os::unix::fs::symlink(&victim, state.with_extension("tmp")).unwrap();
        write_atomically(&state, b"new\n").unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");
        assert_eq!(std::fs::read_to_string(&state).unwrap(), "new\n");
        let meta = std::fs::symlink_metadata(&state).unwrap();
        assert!(meta.is_file());
        assert_eq!(meta.mode() & 0o777, 0o600);
    }

    #[test]
    fn state_directories_are_made_private() {
        let dir = tempfile::tempdir().unwrap();
        let s = dir.path().join("a/b");
        private_dir(&s).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().mode() & 0o7777;
        assert_eq!(mode(&s), 0o700);
        std::fs::set_permissions(&s, std::fs::Permissions::from_mode(0o755)).unwrap();
        private_dir(&s).unwrap();
        assert_eq!(mode(&s), 0o700);
        // A link in place of a subdirectory is refused, and its target is
        // left alone.
        let elsewhere = dir.path().join("elsewhere");
        std::fs::create_dir(&elsewhere).unwrap();
        std::fs::set_permissions(&elsewhere, std::fs::Permissions::from_mode(0o755)).unwrap();
        let sub = s.join("cursors");
        std::os::unix::fs::symlink(&elsewhere, &sub).unwrap();
        let e = private_subdir(&sub).unwrap_err();
        assert!(e.to_string().contains("never reached through links"), "{e}");
        assert_eq!(mode(&elsewhere), 0o755);
        // Someone else's directory is refused, not taken over.
        if nix::unistd::geteuid().is_root() {
            std::os::unix::fs::chown(&elsewhere, Some(65534), None).unwrap();
            let e = private_dir(&elsewhere).unwrap_err();
            assert!(e.to_string().contains("belongs to uid 65534"), "{e}");
            assert_eq!(mode(&elsewhere), 0o755);
        }
    }
}
