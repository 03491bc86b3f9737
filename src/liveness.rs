//! Which processes are attached to a pool, and proof that one is dead — across PID
//! namespaces (see `docs/PROTOCOLS.md`, "Process identity and liveness").
//!
//! A process attached to a pool holds one entry of the boot segment's attach table
//! *and* an open-file-description lock (`F_OFD_SETLK`) on the byte
//! `LIVE_LOCK_BASE + entry` of the boot segment's file, through a descriptor it keeps
//! open while attached. The kernel drops that lock only when the last descriptor of
//! the description closes: when the process detaches or dies (or execs: the
//! descriptor is close-on-exec). A lock is kernel state of the file, not of any PID
//! namespace, so a waiter in one container sees the lock of a holder in another, and
//! a SIGSTOPped or traced holder keeps its lock (it is alive). So:
//!
//! * **alive** — some entry names the token and its lock is held by another
//!   description (`F_OFD_GETLK`);
//! * **dead** — every entry naming the token has a free lock and still names it,
//!   with the same epoch (`since_ns`), after the lock was seen free; or no entry names
//!   it (it detached, or died and its entry was reused).
//!
//! Everything in between (an entry changing under the check, a failing `fcntl`) is
//! "alive": a process is never declared dead without proof.
//!
//! Claiming an entry takes its lock first (non-blocking); whoever gets the lock owns
//! the entry, so a dead owner's entry is reused without a race, and an entry is only
//! ever written by its lock holder. Tokens are random (see `platform`), never pids:
//! a pid means nothing outside its namespace.
//!
//! The process keeps a registry of its attachments (pool, boot header, descriptor,
//! entry); [`token_alive`] asks every one (a token found alive in any pool is alive).
//! After `fork` the child shares its parent's descriptions — and locks — so its first
//! [`crate::platform::process_token`] reopens each boot descriptor in place and
//! claims an entry of its own ([`reattach_all`]).

use crate::platform::process_token;
use crate::segment::boot::{BootHeader, LIVE_LOCK_BASE, REPAIR_LOCK};
use crate::sys;
use shmval_alloc::THREAD_MASK;
use std::os::fd::OwnedFd;
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};
use std::sync::atomic::{AtomicBool, Ordering};

/// One attachment of this process: the boot header and descriptor of a pool handle
/// (both owned by the handle, which unregisters before dropping them), and its entry.
struct Attachment {
    pool_id: u64,
    boot: *const BootHeader,
    fd: *const OwnedFd,
    /// (device, inode) of the boot file: handles of one pool share one entry.
    file: (u64, u64),
    entry: Option<usize>,
    /// Not shared with a later handle of this process (see [`attach`]): while its
    /// opener may be recovering the pool alone.
    private: bool,
}

/// This process's attachments, under a spin lock that `fork` takes in its prepare
/// handler (so a child never inherits it held by a thread that does not exist
/// there). Only attach, detach, the liveness checks and the post-fork reattach take
/// it, none on a fast path.
struct Registry {
    busy: AtomicBool,
    list: std::cell::UnsafeCell<Vec<Attachment>>,
}

// SAFETY: `list` is only touched with `busy` held (see `with`); the raw pointers in
// it are valid while registered (the owning handle unregisters before dropping them).
unsafe impl Sync for Registry {}

static REGISTRY: Registry = Registry {
    busy: AtomicBool::new(false),
    list: std::cell::UnsafeCell::new(Vec::new()),
};

impl Registry {
    fn acquire(&self) {
        let backoff = crossbeam_utils::Backoff::new();
        while self
            .busy
            .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            if backoff.is_completed() {
                std::thread::yield_now();
            } else {
                backoff.snooze();
            }
        }
    }

    fn release(&self) {
        self.busy.store(false, Ordering::Release);
    }

    fn with<R>(&self, f: impl FnOnce(&mut Vec<Attachment>) -> R) -> R {
        self.acquire();
        struct Unlock<'a>(&'a Registry);
        impl Drop for Unlock<'_> {
            fn drop(&mut self) {
                self.0.release();
            }
        }
        let _u = Unlock(self);
        // SAFETY: `busy` is held until `_u` drops, so this is the only reference.
        f(unsafe { &mut *self.list.get() })
    }
}

/// `fork` prepare handler: hold the registry across the fork.
pub(crate) extern "C" fn before_fork() {
    REGISTRY.acquire();
}

/// `fork` parent and child handler: release it again (in the child, the lock and the
/// list are the forking thread's consistent copy).
pub(crate) extern "C" fn after_fork() {
    REGISTRY.release();
}

fn lock_byte(entry: usize) -> u64 {
    LIVE_LOCK_BASE + entry as u64
}

/// Claims a free or dead entry of `boot`'s attach table for `token`, taking its
/// liveness lock and the repair lock (shared) through `fd`. `Ok(None)`: every entry
/// belongs to a live process; `Err(EBUSY)`: a repair has the pool to itself.
pub(crate) fn claim_entry(
    boot: &BootHeader,
    fd: &OwnedFd,
    token: u64,
) -> Result<Option<usize>, nix::errno::Errno> {
    // Never-used entries first (cheap), then any whose lock is free.
    for pass in 0..2 {
        for (i, e) in boot.attached.iter().enumerate() {
            if pass == 0 && e.token.load(Relaxed) != 0 {
                continue;
            }
            if !sys::ofd_try_lock(fd, lock_byte(i))? {
                continue;
            }
            // Attached processes hold the repair lock shared; a repair holds it
            // exclusive and has the pool to itself meanwhile.
            if !sys::ofd_try_lock_shared(fd, REPAIR_LOCK)? {
                sys::ofd_unlock(fd, lock_byte(i));
                return Err(nix::errno::Errno::EBUSY);
            }
            // SYNC POINT: the lock is ours, so whoever held the entry is gone; the
            // epoch changes before the token, so a checker that saw the old token
            // with a free lock sees a change if it looks again.
            if e.token.load(Acquire) != 0 {
                // It died attached (a clean detach clears its token): what it may
                // have left outside its ledger waits for a recovery alone.
                boot.flags
                    .fetch_or(crate::segment::boot::flags::UNCHECKED, Relaxed);
                boot.deaths.fetch_add(1, Relaxed);
            }
            e.since_ns.store(sys::now_unix_ns().max(1), Release);
            e.pid.store(sys::getpid(), Relaxed);
            e.pid_ns.store(sys::pid_namespace() as u32, Relaxed);
            e.token.store(token, Release);
            return Ok(Some(i));
        }
    }
    Ok(None)
}

/// Gives up entry `i` (its token is cleared, then its lock released).
fn release_entry(boot: &BootHeader, fd: &OwnedFd, i: usize) {
    if let Some(e) = boot.attached.get(i) {
        e.token.store(0, Release);
        sys::ofd_unlock(fd, lock_byte(i));
        sys::ofd_unlock(fd, REPAIR_LOCK);
    }
}

/// Whether the process named by `token` (thread bits ignored) is attached to the pool
/// of `boot` and alive, judged through `fd` (a descriptor of its boot segment). The
/// caller's own entries cannot be judged this way (its description's locks are not
/// reported to it): ask [`token_alive`], which knows its own token.
pub(crate) fn alive_in(boot: &BootHeader, fd: &OwnedFd, token: u64) -> bool {
    let want = token & !THREAD_MASK;
    if want == 0 {
        return false;
    }
    for (i, e) in boot.attached.iter().enumerate() {
        let t = e.token.load(Acquire);
        if t & !THREAD_MASK != want {
            continue;
        }
        let since = e.since_ns.load(Acquire);
        match sys::ofd_held(fd, lock_byte(i)) {
            Ok(false) => {}
            // Held, or we cannot tell: alive.
            Ok(true) | Err(_) => return true,
        }
        if e.token.load(Acquire) != t || e.since_ns.load(Acquire) != since {
            return true; // the entry changed under us: no proof either way
        }
        // This entry's process is gone; another entry may still name it (a process
        // attached twice through two handles).
    }
    false
}

/// The state of one attach entry, for `Pool::info` and the operator's tools.
#[derive(Debug, Clone, Copy)]
pub(crate) struct EntryState {
    pub token: u64,
    pub pid: u32,
    pub pid_ns: u32,
    pub alive: bool,
}

/// Every used entry of `boot` with whether its process lives (`mine`: the entry
/// this handle holds, alive by definition).
pub(crate) fn entries(boot: &BootHeader, fd: &OwnedFd, mine: Option<usize>) -> Vec<EntryState> {
    boot.attached
        .iter()
        .enumerate()
        .filter_map(|(i, e)| {
            let token = e.token.load(Acquire);
            if token == 0 {
                return None;
            }
            let alive = mine == Some(i) || !matches!(sys::ofd_held(fd, lock_byte(i)), Ok(false));
            Some(EntryState {
                token,
                pid: e.pid.load(Relaxed),
                pid_ns: e.pid_ns.load(Relaxed),
                alive,
            })
        })
        .collect()
}

/// Whether the process holding entry `i` lives (`mine`: the entry this process
/// holds, alive by definition; a failing check counts as alive).
pub(crate) fn entry_alive(fd: &OwnedFd, i: usize, mine: Option<usize>) -> bool {
    mine == Some(i) || !matches!(sys::ofd_held(fd, lock_byte(i)), Ok(false))
}

/// Runs `f` holding the lock of entry `i` — so its process is gone, and nobody
/// claims the entry meanwhile — if the lock is free; returns whether it ran. Never
/// for an entry this process holds (its own description's lock would be taken and
/// then given up): the caller skips entries naming its token.
pub(crate) fn with_entry_lock(fd: &OwnedFd, i: usize, f: impl FnOnce()) -> bool {
    if !matches!(sys::ofd_try_lock(fd, lock_byte(i)), Ok(true)) {
        return false;
    }
    f();
    sys::ofd_unlock(fd, lock_byte(i));
    true
}

/// Attaches a new pool handle of this process and registers it. Handles of one pool
/// (one boot file) in one process share one entry: a later handle's descriptor is
/// made to refer to the first one's open file description (`dup3`), which holds the
/// entry's lock until the last of them closes. Otherwise the handle claims an entry
/// (`claimed`: the one its creator took already). `Ok(None)`: the table is full.
/// The attachment is private until [`share`] is called for `pool_id`: a handle of
/// the same pool opened meanwhile (another thread) claims an entry of its own, so
/// that a pool found needing recovery can be recovered by its opener alone.
///
/// # Safety
/// `boot` and `fd` stay valid until [`unregister`] is called with `pool_id`.
pub(crate) unsafe fn attach(
    pool_id: u64,
    boot: &BootHeader,
    fd: &OwnedFd,
    file: (u64, u64),
    token: u64,
    claimed: Option<usize>,
) -> Result<Option<(usize, bool)>, nix::errno::Errno> {
    REGISTRY.with(|l| {
        let (entry, shared) = match claimed {
            Some(e) => (e, false),
            None => match share_entry(l, fd, file, token) {
                Some(e) => (e, true),
                None => match claim_entry(boot, fd, token)? {
                    Some(e) => (e, false),
                    None => return Ok(None),
                },
            },
        };
        l.push(Attachment {
            pool_id,
            boot,
            fd,
            file,
            entry: Some(entry),
            private: true,
        });
        Ok(Some((entry, shared)))
    })
}

/// Clears the token of every entry but `mine` whose process died attached, its
/// ledger already retired (the caller has the pool to itself: the repair lock
/// exclusive). Returns how many.
pub(crate) fn forget_dead(boot: &BootHeader, fd: &OwnedFd, mine: Option<usize>) -> usize {
    let mut n = 0;
    for (i, e) in boot.attached.iter().enumerate() {
        if Some(i) == mine || e.token.load(Acquire) == 0 || e.ledger.load(Acquire) != 0 {
            continue;
        }
        with_entry_lock(fd, i, || {
            e.token.store(0, Release);
            n += 1;
        });
    }
    n
}

/// Whether an entry but `mine` names a process (live, or dead without its entry
/// reused yet).
pub(crate) fn others_named(boot: &BootHeader, mine: Option<usize>) -> bool {
    boot.attached
        .iter()
        .enumerate()
        .any(|(i, e)| Some(i) != mine && e.token.load(Acquire) != 0)
}

/// Lets later handles of this process share `pool_id`'s attachment (see [`attach`]).
pub(crate) fn share(pool_id: u64) {
    REGISTRY.with(|l| {
        for a in l.iter_mut().filter(|a| a.pool_id == pool_id) {
            a.private = false;
        }
    });
}

/// The entry of another attachment of the same file whose lock this process holds
/// (its entry still names `token`), with `fd` now referring to that attachment's
/// open file description.
fn share_entry(l: &[Attachment], fd: &OwnedFd, file: (u64, u64), token: u64) -> Option<usize> {
    l.iter().find_map(|a| {
        let e = a.entry?;
        // SAFETY: registered pointers are valid while registered.
        let (boot, afd) = unsafe { (&*a.boot, &*a.fd) };
        (!a.private && a.file == file && boot.attached[e].token.load(Acquire) == token)
            .then_some(())
            .and_then(|()| sys::share_description(afd, fd).ok())
            .map(|()| e)
    })
}

/// Removes a pool handle's attachment and gives its entry up if no other handle of
/// this process shares it (called by the handle before it drops its boot mapping
/// and descriptor).
pub(crate) fn unregister(pool_id: u64) {
    REGISTRY.with(|l| {
        if let Some(k) = l.iter().position(|a| a.pool_id == pool_id) {
            let a = l.swap_remove(k);
            let Some(i) = a.entry else { return };
            if l.iter().any(|b| b.file == a.file && b.entry == Some(i)) {
                return; // another handle shares the entry and its description
            }
            // SAFETY: registered pointers are valid until this call returns.
            let (boot, fd) = unsafe { (&*a.boot, &*a.fd) };
            if boot.attached[i].token.load(Relaxed) == process_token_if_known() {
                release_entry(boot, fd, i);
            }
        }
    });
}

/// Runs `f` with `pool_id`'s entry under the registry's lock if no other handle of
/// this process shares that entry (a handle that would share it later registers
/// only after `f` returns); `None` if one does, or the handle has no entry. `f` must
/// be short and must not use the registry.
pub(crate) fn with_entry_unshared<R>(pool_id: u64, f: impl FnOnce(usize) -> R) -> Option<R> {
    let _ = process_token(); // a forked child reattaches first
    REGISTRY.with(|l| {
        let a = l.iter().find(|a| a.pool_id == pool_id)?;
        let e = a.entry?;
        let shared = l
            .iter()
            .any(|b| b.pool_id != pool_id && b.file == a.file && b.entry == Some(e));
        (!shared).then(|| f(e))
    })
}

/// The entry a pool handle holds, if any.
pub(crate) fn entry_of(pool_id: u64) -> Option<usize> {
    let _ = process_token(); // a forked child reattaches first
    REGISTRY.with(|l| {
        l.iter()
            .find(|a| a.pool_id == pool_id)
            .and_then(|a| a.entry)
    })
}

/// The token this process uses now, without computing one (0 in a forked child
/// that has not used a pool yet: its parent's entries are not its own).
fn process_token_if_known() -> u64 {
    crate::platform::current_token()
}

/// Whether the process named by `token` may still run, as far as the pools this
/// process is attached to can tell (see the module's documentation).
pub(crate) fn token_alive(token: u64) -> bool {
    let me = process_token();
    let want = token & !THREAD_MASK;
    if want == me {
        return true;
    }
    if want == 0 {
        return false;
    }
    REGISTRY.with(|l| {
        l.iter().any(|a| {
            // SAFETY: registered pointers are valid while registered.
            let (boot, fd) = unsafe { (&*a.boot, &*a.fd) };
            alive_in(boot, fd, want)
        })
    })
}

/// In a forked child, on its first use of a pool: give every inherited attachment a
/// description of its own and an entry for the child's `token`. An attachment that
/// cannot be renewed (the table is full) is left without an entry; the child's
/// operations on that pool are then not protected by liveness (documented limit).
pub(crate) fn reattach_all(token: u64) {
    REGISTRY.with(|l| {
        for k in 0..l.len() {
            let (done, rest) = l.split_at_mut(k);
            let a = &mut rest[0];
            // SAFETY: registered pointers are valid while registered.
            let (boot, fd) = unsafe { (&*a.boot, &*a.fd) };
            a.entry = None;
            // A handle of a pool renewed already shares its entry; else a new
            // description and an entry of its own.
            if let Some(e) = share_entry(done, fd, a.file, token) {
                a.entry = Some(e);
            } else if sys::reopen_in_place(fd).is_ok() {
                a.entry = claim_entry(boot, fd, token).ok().flatten();
            }
        }
    });
}
