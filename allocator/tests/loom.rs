//! Exhaustive model checking (loom) of the two concurrent protocols:
//! the depot's claimed batch transfer and the robust lock.
//!
//! Run with `RUSTFLAGS="--cfg loom" cargo test -p shmval-alloc --test loom --release`
//! (`.ci/run` does).
#![cfg(loom)]

use loom::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use loom::sync::Arc;
use loom::thread;
use shmval_alloc::loom_support::{put, settle, take};
use shmval_alloc::{LockState, Platform, RobustLock, THREAD_BITS};
use std::time::Duration;

/// The batch heads found anywhere, sorted.
fn heads(depot: &[AtomicU64], lists: &[AtomicU64]) -> Vec<u64> {
    let mut seen: Vec<u64> = depot
        .iter()
        .chain(lists.iter())
        .map(|w| w.load(Ordering::Relaxed) & 0xFFFF_FFFF)
        .filter(|&h| h != 0)
        .collect();
    seen.sort();
    seen
}

/// Two slots move batches through a two-entry depot at once: every batch ends in
/// exactly one place, none duplicated or lost.
#[test]
fn depot_transfers_conserve_batches() {
    loom::model(|| {
        let depot: Arc<Vec<AtomicU64>> =
            Arc::new(vec![AtomicU64::new((1 << 32) | 10), AtomicU64::new(0)]);
        let lists: Arc<Vec<AtomicU64>> =
            Arc::new(vec![AtomicU64::new((1 << 32) | 20), AtomicU64::new(0)]);
        let t = {
            let (d, l) = (depot.clone(), lists.clone());
            // Slot 0 publishes its list, then takes whatever is there.
            thread::spawn(move || {
                put(&d, &l[0], 0);
                if l[0].load(Ordering::Relaxed) >> 32 == 0 {
                    take(&d, &l[0], 0);
                }
            })
        };
        // Slot 1 takes a batch.
        take(&depot, &lists[1], 1);
        t.join().unwrap();
        let seen = heads(&depot, &lists);
        assert_eq!(seen, vec![10, 20]);
    });
}

/// A slot dies right after claiming (the thread stops); the reclaimer settles the
/// claim while another slot works on the depot: the batch is not lost.
#[test]
fn settle_after_death_conserves_batches() {
    loom::model(|| {
        let claimed = (1u64 << 56) | (1 << 32) | 10; // claimed by slot 0, not yet taken
        let depot: Arc<Vec<AtomicU64>> = Arc::new(vec![
            AtomicU64::new(claimed),
            AtomicU64::new((1 << 32) | 30),
        ]);
        let lists: Arc<Vec<AtomicU64>> = Arc::new(vec![AtomicU64::new(0), AtomicU64::new(0)]);
        let t = {
            let (d, l) = (depot.clone(), lists.clone());
            thread::spawn(move || {
                take(&d, &l[1], 1);
            })
        };
        settle(&depot, &lists[0], 0);
        t.join().unwrap();
        let seen = heads(&depot, &lists);
        assert_eq!(seen, vec![10, 30]);
        assert!(depot.iter().all(|e| e.load(Ordering::Relaxed) >> 56 == 0));
    });
}

loom::lazy_static! {
    static ref DEAD: AtomicBool = AtomicBool::new(false);
}
loom::thread_local! {
    static TID: std::cell::Cell<u32> = std::cell::Cell::new(0);
    /// The "process" of a thread, when it differs from its tid (0: same as the tid).
    static PROC: std::cell::Cell<u64> = std::cell::Cell::new(0);
}

/// Threads model processes: thread `t` has token `t << THREAD_BITS`; the process of
/// thread 1 "dies" when DEAD is set.
struct LoomPlatform;
// SAFETY: ids are assigned per loom thread and unique; only token 1 is ever
// declared dead, after its thread stopped touching the lock.
unsafe impl Platform for LoomPlatform {
    fn thread_id() -> u32 {
        TID.with(|t| t.get())
    }
    fn process_token() -> u64 {
        match PROC.with(|p| p.get()) {
            0 => u64::from(Self::thread_id()) << THREAD_BITS,
            p => p << THREAD_BITS,
        }
    }
    fn is_alive(token: u64) -> bool {
        !(token >> THREAD_BITS == 1 && DEAD.load(Ordering::Acquire))
    }
    fn wait(_word: &AtomicU32, _expected: u32, _timeout: Duration) {
        thread::yield_now();
    }
    fn wake(_word: &AtomicU32, _n: u32) {}
}

/// Two threads (`ids`: each one's thread id and process, 0 for "its own") increment
/// a plain counter under the lock, each told it took the lock cleanly.
fn two_increment(ids: [(u32, u64); 2]) {
    loom::model(move || {
        let lock = Arc::new(RobustLock::new());
        let counter = Arc::new(loom::cell::UnsafeCell::new(0u32));
        let hs: Vec<_> = ids
            .into_iter()
            .map(|(tid, process)| {
                let (lock, counter) = (lock.clone(), counter.clone());
                thread::spawn(move || {
                    TID.with(|t| t.set(tid));
                    PROC.with(|p| p.set(process));
                    assert_eq!(lock.lock_within::<LoomPlatform>(None), Ok(LockState::Clean));
                    // SAFETY: the lock is held.
                    counter.with_mut(|c| unsafe { *c += 1 });
                    // SAFETY: held by this thread.
                    unsafe { lock.unlock::<LoomPlatform>() };
                })
            })
            .collect();
        for h in hs {
            h.join().unwrap();
        }
        // SAFETY: all threads joined.
        assert_eq!(counter.with(|c| unsafe { *c }), 2);
    });
}

/// Mutual exclusion: two threads increment a plain counter under the lock.
#[test]
fn lock_excludes() {
    two_increment([(2, 0), (3, 0)]);
}

/// A holder dies with the lock held: the waiter takes it over and is told so.
#[test]
fn dead_holder_is_recovered() {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(3);
    builder.check(|| {
        DEAD.store(false, Ordering::Relaxed);
        let lock = Arc::new(RobustLock::new());
        let l2 = lock.clone();
        let holder = thread::spawn(move || {
            TID.with(|t| t.set(1));
            let _ = l2.lock::<LoomPlatform>();
            DEAD.store(true, Ordering::Release); // "killed" while holding it
        });
        TID.with(|t| t.set(2));
        holder.join().unwrap();
        assert_eq!(lock.lock::<LoomPlatform>(), LockState::Recovered);
        // SAFETY: held by this thread.
        unsafe { lock.unlock::<LoomPlatform>() };
        assert_eq!(lock.lock::<LoomPlatform>(), LockState::Clean);
    });
}

/// Two threads with the same thread id in two processes (two PID namespaces, where
/// both may be tid 1): they exclude each other and neither is told `Reentrant`.
#[test]
fn same_tid_in_two_processes_excludes() {
    two_increment([(1, 2), (1, 3)]);
}
