//! The allocator's [`Platform`] on Linux: thread and process identity, liveness
//! (proven by the kernel's file locks, see `liveness`), shared futexes.

use crate::sys;
use shmval_alloc::{Platform, THREAD_MASK};
use std::cell::Cell;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::Once;
use std::time::Duration;

/// Linux implementation of [`Platform`] used by every pool.
#[derive(Debug, Clone, Copy, Default)]
pub struct LinuxPlatform;

thread_local! {
    /// (fork generation, tid) of the calling thread.
    static TID: Cell<(u32, u32)> = const { Cell::new((u32::MAX, 0)) };
}
/// Incremented in the child after `fork`, which invalidates every cached identity.
static FORK_GEN: AtomicU32 = AtomicU32::new(0);
/// This process's token (random, low `THREAD_BITS` zero); 0 = not drawn yet.
static TOKEN: AtomicU64 = AtomicU64::new(0);
static ATFORK: Once = Once::new();
/// This process's part in the asymmetric barrier: 0 not asked yet, 1 registered for
/// expedited global membarrier, 2 not available.
static MEMBARRIER: AtomicU8 = AtomicU8::new(0);

extern "C" fn after_fork_in_child() {
    crate::liveness::after_fork();
    FORK_GEN.fetch_add(1, Ordering::Relaxed);
    TOKEN.store(0, Ordering::Relaxed);
    DRAWING.store(0, Ordering::Relaxed);
    // A new process (a new mm): register again before publishing lightly.
    MEMBARRIER.store(0, Ordering::Relaxed);
}

/// Makes sure the fork handler is installed (it also guards the pool's slot cache).
pub(crate) fn ensure_fork_handler() {
    install_atfork();
}

fn install_atfork() {
    ATFORK.call_once(|| {
        sys::at_fork(
            crate::liveness::before_fork,
            crate::liveness::after_fork,
            after_fork_in_child,
        );
    });
}

/// The token naming this process (and its incarnation): 42 random bits above the
/// low `THREAD_BITS` (zero), drawn from the kernel on first use and again in a
/// forked child. Not a pid: pids mean nothing outside their PID namespace, and two
/// containers' processes may both be pid 1. Unique with overwhelming probability
/// (two of 120 attached processes collide with a chance of about 2^-30).
#[inline]
pub(crate) fn process_token() -> u64 {
    let t = TOKEN.load(Ordering::Relaxed);
    if t != 0 {
        return t;
    }
    first_process_token()
}

/// 1 while a thread draws the token (the others wait for it); reset in a forked
/// child with the token.
static DRAWING: AtomicU8 = AtomicU8::new(0);

/// Draws this process's token, once: threads that ask at the same time all get the
/// one token the first of them draws (two would give one process two identities,
/// and its allocator slot, named by one, would be judged dead by the attach entry
/// naming the other).
#[cold]
#[inline(never)]
fn first_process_token() -> u64 {
    install_atfork();
    loop {
        let t = TOKEN.load(Ordering::Acquire);
        if t != 0 {
            return t;
        }
        if DRAWING
            .compare_exchange(0, 1, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
        {
            break;
        }
        std::thread::yield_now();
    }
    // Drawn by another thread meanwhile (it let `DRAWING` go after publishing).
    let t = TOKEN.load(Ordering::Acquire);
    if t != 0 {
        DRAWING.store(0, Ordering::Release);
        return t;
    }
    let t = loop {
        let t = sys::random_u64() & !THREAD_MASK;
        if t != 0 {
            break t;
        }
    };
    if fork_generation() > 0 {
        // A forked child: its parent's attachments must become its own, before any
        // thread uses the token.
        crate::liveness::reattach_all(t);
    }
    TOKEN.store(t, Ordering::Release);
    DRAWING.store(0, Ordering::Release);
    t
}

/// The token if this process (incarnation) has drawn one, else 0.
pub(crate) fn current_token() -> u64 {
    TOKEN.load(Ordering::Relaxed)
}

/// The store ordering with which this process publishes a condition a waiter may
/// sleep on (the notifier's side of an eventcount, see `sync::EventCount`).
///
/// `Release` when this process is registered for expedited global membarrier: a
/// waiter's `prepare` then issues the barrier on every CPU running such a process,
/// which orders the publishing store before the notifier's sleeper check for it (the
/// asymmetric Dekker pattern), so the fast side needs no fence. `SeqCst` otherwise
/// (an `xchg`, which drains the store buffer).
#[inline]
pub(crate) fn publish_order() -> Ordering {
    match MEMBARRIER.load(Ordering::Relaxed) {
        1 => Ordering::Release,
        2 => Ordering::SeqCst,
        _ => register_membarrier(),
    }
}

#[cold]
fn register_membarrier() -> Ordering {
    install_atfork();
    let ok = sys::membarrier_register();
    MEMBARRIER.store(if ok { 1 } else { 2 }, Ordering::Relaxed);
    if ok {
        Ordering::Release
    } else {
        Ordering::SeqCst
    }
}

/// Whether this process is registered for expedited global membarrier (registers
/// it on first use): what it takes to own a pipe side (see `pipe::ring`).
#[inline]
pub(crate) fn membarrier_registered() -> bool {
    publish_order() == Ordering::Release
}

/// The calling thread's id (cached; re-read after a fork).
#[inline]
pub(crate) fn thread_id() -> u32 {
    <LinuxPlatform as Platform>::thread_id()
}

/// Reads the calling thread's id into its cache `c` (first use, or after a fork).
#[cold]
#[inline(never)]
fn first_thread_id(c: &Cell<(u32, u32)>, gen: u32) -> u32 {
    install_atfork();
    let tid = sys::gettid();
    c.set((gen, tid));
    tid
}

/// Whether the process named by `token` may still run (see `liveness`).
pub(crate) fn token_alive(token: u64) -> bool {
    crate::liveness::token_alive(token)
}

// SAFETY: tids are unique among the live threads of a process (of its PID namespace,
// which all its threads share) and below PID_MAX_LIMIT = 2^22 = 1 << THREAD_BITS;
// the token is random per process incarnation (redrawn after fork) with its low
// THREAD_BITS zero; liveness is "dead" only on the proof described in `liveness`
// (the entry's file lock, which the kernel drops only when the process is gone).
unsafe impl Platform for LinuxPlatform {
    #[inline]
    fn thread_id() -> u32 {
        let gen = FORK_GEN.load(Ordering::Relaxed);
        TID.with(|c| {
            let (g, tid) = c.get();
            if g == gen {
                return tid;
            }
            first_thread_id(c, gen)
        })
    }

    #[inline]
    fn process_token() -> u64 {
        process_token()
    }

    fn is_alive(token: u64) -> bool {
        token_alive(token)
    }

    fn wait(word: &AtomicU32, expected: u32, timeout: Duration) {
        sys::futex_wait(word, expected, Some(timeout))
    }

    fn wake(word: &AtomicU32, n: u32) {
        sys::futex_wake(word, n)
    }
}

/// How many forks this process is away from the one that cached identities.
pub(crate) fn fork_generation() -> u32 {
    FORK_GEN.load(Ordering::Relaxed)
}
