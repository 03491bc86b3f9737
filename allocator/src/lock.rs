//! A lock that lives in shared memory and survives the death of its holder.
//!
//! `pthread_mutex_t` and `parking_lot` keep waiter state in process-local memory or
//! depend on one libc's layout; this lock is two plain words, so any process that
//! maps the region can take it, and a holder that dies is detected from its process
//! token instead of hanging everyone else.

use crate::platform::Platform;
use crate::sync::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

/// Bit of [`RobustLock::word`] set when a thread may be blocked in `Platform::wait`.
const WAITERS: u32 = 1 << 31;
/// The thread-id part of the lock word.
const TID_MASK: u32 = (1 << 30) - 1;
/// How many times to spin (with backoff) before blocking.
const SPIN_ROUNDS: u32 = 6;
/// How long one blocking wait lasts before the holder's liveness is checked again.
/// This bounds how long a dead holder can stall the others.
const DEAD_CHECK_INTERVAL: Duration = Duration::from_millis(10);

/// A robust mutual-exclusion lock in shared memory.
///
/// `word` states:
///
/// | value                 | meaning                                        |
/// |-----------------------|------------------------------------------------|
/// | `0`                   | unlocked                                       |
/// | `tid`                 | held by thread `tid`, nobody waiting           |
/// | `tid \| WAITERS`      | held by thread `tid`, a waiter may be asleep   |
///
/// `owner` holds the holder's process token, written right after acquiring and
/// cleared right before releasing; `0` while unknown. A waiter that has slept for
/// [`DEAD_CHECK_INTERVAL`] asks [`Platform::is_alive`] about the token and, if the
/// holder is gone, takes the lock over with a CAS from the exact word it observed;
/// the new holder is told so ([`LockState::Recovered`]) and must repair what the
/// lock protects.
#[repr(C)]
#[derive(Debug)]
pub struct RobustLock {
    word: AtomicU32,
    _pad: u32,
    owner: AtomicU64,
}

#[cfg(not(loom))]
const _: () = assert!(std::mem::size_of::<RobustLock>() == 16);
#[cfg(not(loom))]
const _: () = assert!(std::mem::align_of::<RobustLock>() == 8);

/// Why a lock was not acquired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockError {
    /// The patience given ran out while a live-looking holder kept it.
    Timeout,
    /// The calling thread holds it already (the lock is not reentrant): waiting would
    /// only ever time out.
    Reentrant,
}

/// How a lock was acquired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum LockState {
    /// The previous holder released it normally.
    Clean,
    /// The previous holder died while holding it: the protected data may be
    /// half-updated and must be checked or repaired before use.
    Recovered,
}

impl RobustLock {
    /// An unlocked lock (for zero-initialised memory this is the all-zero state).
    #[cfg(not(loom))]
    pub const fn new() -> Self {
        RobustLock {
            word: AtomicU32::new(0),
            _pad: 0,
            owner: AtomicU64::new(0),
        }
    }

    /// An unlocked lock (loom's atomics are not `const`).
    #[cfg(loom)]
    pub fn new() -> Self {
        RobustLock {
            word: AtomicU32::new(0),
            _pad: 0,
            owner: AtomicU64::new(0),
        }
    }

    /// Acquires the lock, blocking while another live thread holds it.
    ///
    /// Never waits forever on a dead holder: one that died is detected within about
    /// [`DEAD_CHECK_INTERVAL`] after a waiter blocks.
    #[inline]
    pub fn lock<P: Platform>(&self) -> LockState {
        match self.lock_within::<P>(None) {
            Ok(s) => s,
            Err(LockError::Timeout) => unreachable!("no patience limit was given"),
            Err(LockError::Reentrant) => panic!("deadlock: this thread already holds the lock"),
        }
    }

    /// Acquires the lock, giving up after `patience` (if given) while a holder that
    /// looks alive keeps it: a process stopped in a debugger, or a lock word that
    /// corruption made name some live process.
    ///
    /// # Errors
    /// [`LockError::Timeout`] when `patience` ran out, [`LockError::Reentrant`] when the
    /// calling thread holds the lock already.
    #[inline]
    pub fn lock_within<P: Platform>(
        &self,
        patience: Option<Duration>,
    ) -> Result<LockState, LockError> {
        match self.try_lock::<P>() {
            Some(state) => Ok(state),
            None => self.lock_slow::<P>(P::thread_id() & TID_MASK, patience),
        }
    }

    /// Tries once to acquire the lock without waiting.
    #[inline]
    pub fn try_lock<P: Platform>(&self) -> Option<LockState> {
        let me = P::thread_id() & TID_MASK;
        debug_assert!(me != 0, "Platform::thread_id must be non-zero");
        if self
            .word
            .compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
        {
            self.owner.store(P::process_token(), Ordering::Relaxed);
            return Some(LockState::Clean);
        }
        None
    }

    #[cold]
    fn lock_slow<P: Platform>(
        &self,
        me: u32,
        patience: Option<Duration>,
    ) -> Result<LockState, LockError> {
        #[cfg(not(loom))]
        let deadline = patience.map(|p| std::time::Instant::now() + p);
        #[cfg(loom)]
        let _ = patience;
        let backoff = crossbeam_utils::Backoff::new();
        let mut spins = 0;
        // The word seen with no token at the previous liveness check, if any.
        let mut tokenless: Option<u32> = None;
        loop {
            let cur = self.word.load(Ordering::Relaxed);
            if cur != 0 && cur & TID_MASK == me {
                return Err(LockError::Reentrant);
            }
            if cur == 0 {
                // Coming from the slow path, keep WAITERS set: others may still sleep.
                let new = if spins > SPIN_ROUNDS {
                    me | WAITERS
                } else {
                    me
                };
                if self
                    .word
                    .compare_exchange(0, new, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
                {
                    self.owner.store(P::process_token(), Ordering::Relaxed);
                    return Ok(LockState::Clean);
                }
                continue;
            }
            if spins <= SPIN_ROUNDS {
                spins += 1;
                backoff.snooze();
                continue;
            }
            // Announce a sleeper, then sleep while the word is unchanged.
            let with_waiters = cur | WAITERS;
            if cur & WAITERS == 0
                && self
                    .word
                    .compare_exchange(cur, with_waiters, Ordering::Relaxed, Ordering::Relaxed)
                    .is_err()
            {
                continue;
            }
            P::wait(&self.word, with_waiters, DEAD_CHECK_INTERVAL);
            if self.word.load(Ordering::Relaxed) != with_waiters {
                continue;
            }
            let token = self.owner.load(Ordering::Acquire);
            // `token == 0` means the holder is between its CAS and its token store, or
            // releasing, or died right there. Seen twice in a row for the same word,
            // ask about the thread itself.
            let dead = if token != 0 {
                tokenless = None;
                !P::is_alive(token)
            } else if tokenless == Some(with_waiters) {
                !P::thread_alive(with_waiters & TID_MASK)
            } else {
                tokenless = Some(with_waiters);
                false
            };
            if dead {
                // SYNC POINT: take over from the dead holder with a CAS from the exact
                // word observed, so only one waiter wins and a live new holder (whose
                // word differs) is never displaced.
                if self
                    .word
                    .compare_exchange(
                        with_waiters,
                        me | WAITERS,
                        Ordering::Acquire,
                        Ordering::Relaxed,
                    )
                    .is_ok()
                {
                    self.owner.store(P::process_token(), Ordering::Relaxed);
                    return Ok(LockState::Recovered);
                }
            }
            #[cfg(not(loom))]
            if deadline.is_some_and(|d| std::time::Instant::now() >= d) {
                return Err(LockError::Timeout);
            }
        }
    }

    /// Releases the lock.
    ///
    /// # Safety
    /// The calling thread must hold the lock (acquired by [`lock`](Self::lock) or
    /// [`try_lock`](Self::try_lock) and not released since).
    #[inline]
    pub unsafe fn unlock<P: Platform>(&self) {
        debug_assert_eq!(
            self.word.load(Ordering::Relaxed) & TID_MASK,
            P::thread_id() & TID_MASK
        );
        self.owner.store(0, Ordering::Relaxed);
        let prev = self.word.swap(0, Ordering::Release);
        if prev & WAITERS != 0 {
            P::wake(&self.word, 1);
        }
    }

    /// Whether some thread holds the lock right now (a snapshot, for diagnostics).
    pub fn is_locked(&self) -> bool {
        self.word.load(Ordering::Relaxed) != 0
    }

    /// The process token of the current holder, `0` if unlocked or not yet known.
    pub fn owner_token(&self) -> u64 {
        self.owner.load(Ordering::Relaxed)
    }
}

#[cfg(not(loom))]
impl Default for RobustLock {
    fn default() -> Self {
        Self::new()
    }
}
