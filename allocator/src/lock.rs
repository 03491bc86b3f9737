//! A lock that lives in shared memory and survives the death of its holder.
//!
//! `pthread_mutex_t` and `parking_lot` keep waiter state in process-local memory or
//! depend on one libc's layout; this lock is two plain words, so any process that
//! maps the region can take it, and a holder that dies is detected from its process
//! process token instead of hanging everyone else.

use crate::platform::Platform;
use crate::sync::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

/// Bit of [`RobustLock::seq`] set when a thread may be asleep in `Platform::wait`.
const SLEEPER: u32 = 1;
/// How many times to spin (with backoff) before blocking.
const SPIN_ROUNDS: u32 = 6;
/// How long one blocking wait lasts before the holder's liveness is checked again.
/// This bounds how long a dead holder can stall the others.
const DEAD_CHECK_INTERVAL: Duration = Duration::from_millis(10);

/// A robust mutual-exclusion lock in shared memory.
///
/// `owner` is the lock: `0` when free, else the holder's id
/// ([`Platform::holder_id`]: its process token with its thread id in the low bits),
/// taken with one compare-and-swap — so the lock and the record of who holds it are
/// one word, and no holder can die between taking the lock and saying who it is.
/// Holder ids are unique across processes in any PID namespace (the token is, see
/// [`Platform`]), so a thread is never told `Reentrant` about another namespace's
/// thread of the same tid, and a takeover's CAS from the exact dead id can never
/// displace a live holder.
///
/// `seq` is only the futex word sleepers wait on: bit 0 says one may
/// be asleep; an unlock that finds it set clears it by adding one (the word changes,
/// so a sleeper that had not gone to sleep yet does not) and wakes one sleeper. A
/// waiter that wakes checks the holder's liveness ([`Platform::is_alive`], every
/// `DEAD_CHECK_INTERVAL`) and, if it is dead, takes the lock over with a CAS from
/// the exact id it observed; the new holder is told so ([`LockState::Recovered`])
/// and must repair what the lock protects.
#[repr(C)]
#[derive(Debug)]
pub struct RobustLock {
    seq: AtomicU32,
    _pad: u32,
    owner: AtomicU64,
}

#[cfg(not(loom))]
const _: () = assert!(std::mem::size_of::<RobustLock>() == 16);
#[cfg(not(loom))]
const _: () = assert!(std::mem::align_of::<RobustLock>() == 8);
#[cfg(not(loom))]
const _: () = assert!(std::mem::offset_of!(RobustLock, owner) == 8);

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
            seq: AtomicU32::new(0),
            _pad: 0,
            owner: AtomicU64::new(0),
        }
    }

    /// An unlocked lock (loom's atomics are not `const`).
    #[cfg(loom)]
    pub fn new() -> Self {
        RobustLock {
            seq: AtomicU32::new(0),
            _pad: 0,
            owner: AtomicU64::new(0),
        }
    }

    /// Acquires the lock, blocking while another live thread holds it.
    ///
    /// Never waits forever on a dead holder: one that died is detected within about
    /// `DEAD_CHECK_INTERVAL` after a waiter blocks.
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
        let me = P::holder_id();
        if self
            .owner
            .compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
        {
            return Ok(LockState::Clean);
        }
        self.lock_slow::<P>(me, patience)
    }

    /// Tries once to acquire the lock without waiting.
    #[inline]
    pub fn try_lock<P: Platform>(&self) -> Option<LockState> {
        self.owner
            .compare_exchange(0, P::holder_id(), Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
            .then_some(LockState::Clean)
    }

    #[cold]
    fn lock_slow<P: Platform>(
        &self,
        me: u64,
        patience: Option<Duration>,
    ) -> Result<LockState, LockError> {
        #[cfg(not(loom))]
        let deadline = patience.map(|p| std::time::Instant::now() + p);
        #[cfg(loom)]
        let _ = patience;
        let backoff = crossbeam_utils::Backoff::new();
        let mut spins = 0;
        let mut slept = false;
        loop {
            let cur = self.owner.load(Ordering::Relaxed);
            if cur == me {
                return Err(LockError::Reentrant);
            }
            if cur == 0 {
                if self
                    .owner
                    .compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
                {
                    if slept {
                        // Others may still sleep: the unlock that woke us cleared the
                        // bit, so set it again for our own unlock to wake the next.
                        self.seq.fetch_or(SLEEPER, Ordering::Relaxed);
                    }
                    return Ok(LockState::Clean);
                }
                continue;
            }
            if spins <= SPIN_ROUNDS {
                spins += 1;
                backoff.snooze();
                continue;
            }
            // Announce a sleeper, then sleep unless the holder changed meanwhile. The
            // SeqCst pair (our RMW then load, the unlock's store then load) is a
            // Dekker: the unlock sees our bit or we see its release.
            let key = self.seq.fetch_or(SLEEPER, Ordering::SeqCst) | SLEEPER;
            // Sleep until the next liveness check, or the deadline if sooner.
            #[cfg(not(loom))]
            let nap = match deadline {
                Some(d) => {
                    let left = d.saturating_duration_since(std::time::Instant::now());
                    if left.is_zero() {
                        return Err(LockError::Timeout);
                    }
                    left.min(DEAD_CHECK_INTERVAL)
                }
                None => DEAD_CHECK_INTERVAL,
            };
            #[cfg(loom)]
            let nap = DEAD_CHECK_INTERVAL;
            if self.owner.load(Ordering::SeqCst) == cur {
                P::wait(&self.seq, key, nap);
            }
            slept = true;
            if self.owner.load(Ordering::Acquire) == cur && !P::is_alive(cur) {
                // SYNC POINT: take over from the dead holder with a CAS from its exact
                // id, so only one waiter wins and a live new holder (whose id differs:
                // ids are unique and a dead one never returns) is never displaced.
                if self
                    .owner
                    .compare_exchange(cur, me, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
                {
                    self.seq.fetch_or(SLEEPER, Ordering::Relaxed);
                    return Ok(LockState::Recovered);
                }
                continue;
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
        debug_assert_eq!(self.owner.load(Ordering::Relaxed), P::holder_id());
        // SeqCst store, then SeqCst load: the other half of the sleepers' Dekker.
        self.owner.store(0, Ordering::SeqCst);
        if self.seq.load(Ordering::SeqCst) & SLEEPER != 0 {
            self.wake_one::<P>();
        }
    }

    #[cold]
    fn wake_one<P: Platform>(&self) {
        // Clear the bit by adding one (the word changes, so a sleeper about to wait
        // with the old value returns at once), then wake one.
        let mut s = self.seq.load(Ordering::Relaxed);
        while s & SLEEPER != 0 {
            match self.seq.compare_exchange_weak(
                s,
                s.wrapping_add(1),
                Ordering::Release,
                Ordering::Relaxed,
            ) {
                Ok(_) => break,
                Err(now) => s = now,
            }
        }
        P::wake(&self.seq, 1);
    }

    /// Whether some thread holds the lock right now (a snapshot, for diagnostics).
    pub fn is_locked(&self) -> bool {
        self.owner.load(Ordering::Relaxed) != 0
    }

    /// The holder's id (its process token with its thread id in the low
    /// [`THREAD_BITS`](crate::THREAD_BITS)), `0` if unlocked.
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
