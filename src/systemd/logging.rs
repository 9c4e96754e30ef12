//! Where the log of audisp's daemons goes: to journald, natively, when
//! systemd connected our standard error to the journal (`$JOURNAL_STREAM` names that very
//! stream), so every event keeps its structured fields (`PLUGIN=`,
//! `MESSAGE_ID=`, `INPUT=`…) for `journalctl -u audisp PLUGIN=remote` or
//! `journalctl MESSAGE_ID=…`; as text on standard error otherwise (a
//! terminal, a file, auditd's plugin stderr).

use std::io::IsTerminal;
use std::os::fd::AsFd;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

/// Whether `$JOURNAL_STREAM` (`DEVICE:INODE`) is our standard error, i.e.
/// systemd connected it to the journal (systemd.exec(5)).
fn stderr_is_journal(journal_stream: Option<&str>) -> bool {
    let Some((dev, ino)) = journal_stream.and_then(|v| v.split_once(':')) else {
        return false;
    };
    let (Ok(dev), Ok(ino)) = (dev.parse::<u64>(), ino.parse::<u64>()) else {
        return false;
    };
    nix::sys::stat::fstat(std::io::stderr().as_fd())
        .is_ok_and(|st| st.st_dev == dev && st.st_ino == ino)
}

/// Installs the global subscriber for the program `identifier` (journald's
/// `SYSLOG_IDENTIFIER`); `default` is the filter unless `$AUDISP_LOG` gives
/// one.
pub fn init(identifier: &str, default: &str) {
    let filter = EnvFilter::try_from_env("AUDISP_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    let journal = std::env::var("JOURNAL_STREAM").ok();
    let mut fallback = None;
    if stderr_is_journal(journal.as_deref()) {
        match tracing_journald::layer() {
            Ok(layer) => {
                let layer = layer
                    .with_syslog_identifier(identifier.into())
                    .with_field_prefix(None);
                tracing_subscriber::registry()
                    .with(filter)
                    .with(layer)
                    .init();
                return;
            }
            Err(e) => fallback = Some(e),
        }
    }
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .init();
    if let Some(e) = fallback {
        tracing::warn!("cannot log to journald ({e}); logging to standard error");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journal_stream_must_name_our_stderr() {
        assert!(!stderr_is_journal(None));
        assert!(!stderr_is_journal(Some("garbage")));
        assert!(!stderr_is_journal(Some("1:x")));
        let st = nix::sys::stat::fstat(std::io::stderr().as_fd()).unwrap();
        let ours = format!("{}:{}", st.st_dev, st.st_ino);
        assert!(stderr_is_journal(Some(&ours)));
        let other = format!("{}:{}", st.st_dev, st.st_ino + 1);
        assert!(!stderr_is_journal(Some(&other)));
    }
}
