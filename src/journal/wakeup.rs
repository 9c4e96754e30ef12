//! How a reader's owner learns that new entries arrived, and how an
//! appender can do the owner's work in its place instead of waking it.
//!
//! A [`Wakeup`] is an eventfd, so a thread that waits in `poll(2)` for its
//! socket can wait for new entries in the same call. The journal only writes
//! to it when the owner said it is about to wait ([`Wakeup::arm`]), so a busy
//! reader costs no system call per append.
//!
//! Waking a thread is dear under load: on the 2-vCPU virtual machines the
//! benchmarks run on, the waker pays 3–4.5 µs and the woken 4–5.5 µs per
//! wake-up (benches/live.sh, "kernel floor"), once per append and plugin.
//! So an owner about to wait may also *lend* the appender its work
//! ([`Wakeup::while_lent`], a [`HandOff`]): an appender of a small batch
//! ([`HANDOFF_BYTES`]) that finds the owner waiting and its work lent takes
//! the wake-up over ([`Deferred`]) and, once it holds no lock of its own,
//! does the work itself ([`Deferred::run`]); it wakes the owner only when
//! the work says so (a plugin whose socket is full, an error). The owner
//! gets its work back when it stops waiting, after any appender is done
//! with it.

use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::{io, mem};

use super::lock;

/// Largest append whose appender does lent work itself. A batch read from a
/// live source after a nap is a few KiB to a few tens of KiB (auditd's socket
/// holds ~50 KB of string records); a bulk read is larger, and there the
/// owners' threads work on other CPUs while the appender reads on.
pub const HANDOFF_BYTES: u64 = 64 << 10;

/// Work an appender can do in a waiting owner's place (see the module docs).
pub trait HandOff: Send {
    /// Does the owner's work for what was appended. Returns true when the
    /// owner may go on waiting (the work re-armed its wake-up and found
    /// nothing left), false when it must be woken to take over.
    fn take_over(&mut self) -> bool;
}

/// Lent work, while it is lent: only ever dereferenced under the slot's lock,
/// and [`Wakeup::while_lent`] takes it back under that lock before the
/// borrow it was made from ends.
struct LentWork(*mut (dyn HandOff + 'static));

// SAFETY: the pointee is `Send` (`HandOff: Send`), and the pointer is only
// used by one thread at a time, under the slot's lock.
unsafe impl Send for LentWork {}

impl std::fmt::Debug for LentWork {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LentWork")
    }
}

/// A wake-up a reader's owner registers to learn that new entries arrived
/// (see the module docs).
#[derive(Debug)]
pub struct Wakeup {
    fd: OwnedFd,
    armed: AtomicBool,
    /// The owner's work while it waits with it lent.
    lent: Mutex<Option<LentWork>>,
}

impl Wakeup {
    /// A wake-up of one's own, not tied to the journal (for control
    /// requests, shutdown, and the like).
    pub fn new() -> io::Result<Self> {
        let fd = nix::sys::eventfd::EventFd::from_value_and_flags(
            0,
            nix::sys::eventfd::EfdFlags::EFD_CLOEXEC | nix::sys::eventfd::EfdFlags::EFD_NONBLOCK,
        )?;
        Ok(Wakeup {
            fd: fd.into(),
            armed: AtomicBool::new(false),
            lent: Mutex::new(None),
        })
    }

    /// The descriptor to poll for readability.
    pub fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        use std::os::fd::AsFd;
        self.fd.as_fd()
    }

    /// Says the owner is about to wait. Check for new entries after arming
    /// and before waiting, or an append in between could be missed.
    pub fn arm(&self) {
        self.armed.store(true, Ordering::SeqCst);
    }

    /// Consumes a pending wake-up after `poll` reported one.
    pub fn clear(&self) {
        let mut buf = [0u8; 8];
        // EAGAIN (nothing pending) is fine: the wake-up was already consumed.
        let _ = nix::unistd::read(&self.fd, &mut buf);
    }

    /// Wakes the owner (also used by others, e.g. to say "reload").
    pub fn wake(&self) {
        // A full counter (EAGAIN) still means "readable": nothing to do.
        let _ = nix::unistd::write(&self.fd, &1u64.to_ne_bytes());
    }

    /// Runs `wait` (the owner's wait, armed) with `work` lent to appenders:
    /// an appender of a small batch may run it instead of waking the owner.
    /// Returns once `wait` returned and no appender runs `work` any more.
    pub fn while_lent<R>(&self, work: &mut (dyn HandOff + '_), wait: impl FnOnce() -> R) -> R {
        /// Takes the work back when the wait ends, also by a panic: once
        /// this holds the lock, no appender runs it, and none will.
        struct Reclaim<'w>(&'w Wakeup);
        impl Drop for Reclaim<'_> {
            fn drop(&mut self) {
                lock(&self.0.lent).take();
            }
        }
        // SAFETY: only the lifetime is erased. The pointer is dereferenced
        // only under `lent`'s lock (`Deferred::run`), and `Reclaim` removes
        // it under that lock before this function returns or unwinds, so
        // never after `work`'s borrow ends; meanwhile the caller cannot
        // touch `work`, which it lent for the whole call.
        let ptr: *mut (dyn HandOff + 'static) =
            unsafe { mem::transmute::<*mut (dyn HandOff + '_), _>(work as *mut _) };
        *lock(&self.lent) = Some(LentWork(ptr));
        let _reclaim = Reclaim(self);
        wait()
    }

    /// Wakes the owner if it is armed (after an append). An owner with its
    /// work lent is not woken but handed to `deferred`, whose appender runs
    /// the work once it holds no lock of its own.
    pub(super) fn wake_if_armed(self: &Arc<Self>, deferred: Option<&mut Deferred>) {
        if !self.armed.swap(false, Ordering::SeqCst) {
            return;
        }
        match deferred {
            Some(d) if self.is_lent() => d.owners.push(self.clone()),
            _ => self.wake(),
        }
    }

    /// Whether the owner waits with its work lent. Never blocks: an
    /// appender may hold locks the work itself takes, so work that another
    /// appender runs right now counts as lent (that appender re-arms it or
    /// wakes the owner; [`Deferred::run`] waits for it outside any lock).
    fn is_lent(&self) -> bool {
        match self.lent.try_lock() {
            Ok(slot) => slot.is_some(),
            Err(std::sync::TryLockError::WouldBlock) => true,
            Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner().is_some(),
        }
    }
}

/// Owners an append took the wake-up of, to work in their place (see the
/// module docs): [`Deferred::run`] does their lent work, and whatever is not
/// run is woken when this is dropped, so no owner is ever left asleep.
#[derive(Debug, Default)]
#[must_use = "owners are woken only when this is run or dropped"]
pub struct Deferred {
    owners: Vec<Arc<Wakeup>>,
}

impl Deferred {
    /// Does the lent work of every owner taken over, or wakes the owner when
    /// its work is no longer lent (it stopped waiting) or asks for it. Call
    /// it holding no lock the work might take.
    pub fn run(mut self) {
        for w in mem::take(&mut self.owners) {
            let slot = lock(&w.lent);
            let waiting = match slot.as_ref() {
                // SAFETY: see `Wakeup::while_lent`: the owner cannot take
                // its work back (nor end the borrow) while we hold the lock.
                Some(work) => unsafe { (*work.0).take_over() },
                None => false,
            };
            drop(slot);
            if !waiting {
                w.wake();
            }
        }
    }
}

impl Drop for Deferred {
    fn drop(&mut self) {
        for w in self.owners.drain(..) {
            w.wake();
        }
    }
}
