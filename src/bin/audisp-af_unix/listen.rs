//! The readers' listening sockets: the stream sockets systemd passed
//! (`audisp-af_unix-readers.socket`, which sets their path, mode, owner and
//! group), or one the plugin binds itself with the configured path, mode,
//! owner and group.

use std::os::fd::{BorrowedFd, FromRawFd, OwnedFd};
use std::path::Path;

use audisp::systemd::activation;
use nix::sys::socket::{self, sockopt, SockType};
use nix::unistd::{Gid, Uid};

/// Backlog of a socket the plugin binds: readers connect rarely.
const BACKLOG: i32 = 64;

/// Who owns a socket the plugin binds, and its permission bits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ownership {
    /// Permission bits (`0640`).
    pub mode: u32,
    /// Owner; `None` keeps the plugin's own user.
    pub owner: Option<Uid>,
    /// Group, and whether it was asked for (an explicit group that cannot
    /// be set is an error; the default group only a notice).
    pub group: Option<(Gid, bool)>,
}

/// The listening `AF_UNIX` stream sockets systemd passed to this process,
/// taken without touching `LISTEN_*` (the SDK still looks for its own
/// `SOCK_SEQPACKET` socket there).
pub fn passed() -> Result<Vec<OwnedFd>, String> {
    let var = |k: &str| std::env::var(k).ok();
    let fds = activation::parse(
        std::process::id(),
        var("LISTEN_PID").as_deref(),
        var("LISTEN_FDS").as_deref(),
        var("LISTEN_FDNAMES").as_deref(),
    )?;
    let mut out = Vec::new();
    for (fd, name) in fds {
        // SAFETY: systemd passed the descriptor; it is only inspected here.
        let b = unsafe { BorrowedFd::borrow_raw(fd) };
        let stream_listener = socket::getsockopt(&b, sockopt::SockType) == Ok(SockType::Stream)
            && socket::getsockopt(&b, sockopt::AcceptConn).unwrap_or(false);
        if !stream_listener {
            continue;
        }
        // SAFETY: a listening stream socket systemd passed to this process;
        // the SDK only takes SOCK_SEQPACKET ones, so nothing else owns it.
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        activation::check_listener(&owned, SockType::Stream).map_err(|why| {
            format!("the socket passed as {name:?} (fd {fd}) {why}; readers connect over AF_UNIX")
        })?;
        out.push(owned);
    }
    Ok(out)
}

/// Binds `path` for readers with `own`: created owner-only, then given to
/// its owner and group, then opened up to the mode, so no reader the
/// settings do not allow can ever connect. A socket someone still serves at
/// `path` (auditd's own af_unix plugin, another instance) is left alone.
pub fn bind(path: &Path, own: &Ownership) -> Result<OwnedFd, String> {
    if audisp::uds::connect(path, SockType::Stream).is_ok() {
        return Err(format!(
            "{} is served by another program (auditd's af_unix plugin? set its active = no); not replacing it",
            path.display()
        ));
    }
    let fd =
        audisp::uds::listen(path, SockType::Stream, 0o600, BACKLOG).map_err(|e| e.to_string())?;
    let group = own.group.map(|(g, _)| g);
    if own.owner.is_some() || group.is_some() {
        if let Err(e) = nix::unistd::chown(path, own.owner, group) {
            let explicit = own.owner.is_some() || own.group.is_some_and(|(_, asked)| asked);
            let what = format!(
                "cannot give {} to {}: {e}",
                path.display(),
                describe(own.owner, group)
            );
            if explicit {
                return Err(format!(
                    "{what}; the plugin needs CAP_CHOWN for that, or let audisp-af_unix-readers.socket create the socket (SocketUser=, SocketGroup=)"
                ));
            }
            eprintln!("audisp-af_unix: {what}; the socket stays with the plugin's own group");
        }
    }
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(own.mode))
        .map_err(|e| format!("chmod {:04o} {}: {e}", own.mode, path.display()))?;
    Ok(fd)
}

fn describe(owner: Option<Uid>, group: Option<Gid>) -> String {
    match (owner, group) {
        (Some(u), Some(g)) => format!("uid {u} and gid {g}"),
        (Some(u), None) => format!("uid {u}"),
        (None, Some(g)) => format!("gid {g}"),
        (None, None) => "nobody".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    #[test]
    fn a_bound_socket_has_the_mode_and_a_served_one_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("events");
        let own = Ownership {
            mode: 0o640,
            owner: None,
            group: Some((nix::unistd::getegid(), true)),
        };
        let l = bind(&p, &own).unwrap();
        let m = std::fs::metadata(&p).unwrap();
        assert_eq!(m.permissions().mode() & 0o7777, 0o640);
        assert_eq!(m.gid(), nix::unistd::getegid().as_raw());
        let again = bind(&p, &own).unwrap_err();
        assert!(again.contains("is served by another program"), "{again}");
        drop(l);
        // Nobody listens any more: the stale socket is replaced.
        bind(&p, &own).unwrap();
    }
}
