//! Signals a program handles must never kill it — not even in the instant
//! between `exec` and the moment its handler is in place.
//!
//! A signal's default action for SIGHUP, SIGUSR1 and SIGUSR2 is to terminate
//! the process: `systemctl reload` (SIGHUP) sent to audispd a millisecond
//! after it started used to kill it. So every long-running program of the
//! suite calls [`hold`] first thing in `main`, before any thread starts
//! (threads inherit the mask), for the signals it will handle. A program
//! that takes them from a `signalfd` or `sigwait` keeps them blocked; one
//! that installs handlers releases them ([`Held::release`]) once the
//! handlers are in place, and a signal that arrived meanwhile is delivered
//! then. Signals a program does not handle keep their default action.

use nix::sys::signal::{SigSet, SigmaskHow, Signal};

/// Signals blocked by [`hold`] in the calling thread (and every thread it
/// starts from then on).
#[derive(Debug, Clone)]
pub struct Held {
    set: SigSet,
}

/// Blocks `signals` in the calling thread; call it before anything else in
/// `main`. Errors only if the kernel refuses `sigprocmask`.
pub fn hold(signals: &[Signal]) -> Result<Held, String> {
    let mut set = SigSet::empty();
    for &s in signals {
        set.add(s);
    }
    set.thread_block()
        .map_err(|e| format!("cannot block signals {signals:?}: {e}"))?;
    Ok(Held { set })
}

impl Held {
    /// The held signals, for a `signalfd` or `sigwait`.
    pub fn set(&self) -> &SigSet {
        &self.set
    }

    /// Unblocks the held signals in the calling thread (its handlers are
    /// installed, or it turned out not to need them); one that arrived
    /// meanwhile is delivered now.
    pub fn release(self) -> Result<(), String> {
        nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_UNBLOCK, Some(&self.set), None)
            .map_err(|e| format!("cannot unblock signals: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_signal_waits_and_is_delivered_on_release() {
        use std::sync::atomic::{AtomicBool, Ordering};
        static GOT: AtomicBool = AtomicBool::new(false);
        extern "C" fn on_signal(_: libc::c_int) {
            GOT.store(true, Ordering::SeqCst);
        }
        // SIGWINCH: harmless (ignored by default) and used by no other
        // test. In a thread of its own: the mask is per thread.
        std::thread::spawn(|| {
            let held = hold(&[Signal::SIGWINCH]).unwrap();
            let act = nix::sys::signal::SigAction::new(
                nix::sys::signal::SigHandler::Handler(on_signal),
                nix::sys::signal::SaFlags::empty(),
                SigSet::empty(),
            );
            // SAFETY: the handler only stores to an atomic.
            unsafe { nix::sys::signal::sigaction(Signal::SIGWINCH, &act) }.unwrap();
            // SAFETY: raise sends the signal to this thread only.
            unsafe { libc::raise(libc::SIGWINCH) };
            assert!(!GOT.load(Ordering::SeqCst), "delivered while held");
            held.release().unwrap();
            assert!(GOT.load(Ordering::SeqCst), "not delivered on release");
        })
        .join()
        .unwrap();
    }
}
