//! An eventcount in shared memory: "sleep until something changes", on a shared
//! futex, with deadlines and no lost wake-ups.
//!
//! The word counts events in its upper 31 bits; bit 0 says a waiter may be asleep.
//!
//! ```text
//! waiter:   key = prepare()              // sets bit 0, returns the word
//!           if condition holds: done     // re-check after preparing
//!           wait(key, deadline)          // sleeps only while the word == key
//! notifier: make the condition true, then notify(): add 2 (Release); if bit 0 was set,
//!           clear it and FUTEX_WAKE everyone
//! ```
//! A notify between `prepare` and `wait` changes the word, so the futex wait returns
//! at once: no wake-up is lost. A waiter killed while asleep leaves at most bit 0 set,
//! which costs the next notifier one wake syscall and is then cleared: nothing stays
//! behind. A deadline is absolute (CLOCK_MONOTONIC): spurious or unrelated wake-ups
//! never restart the timeout.

use crate::sys;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Instant;

const SLEEPER: u32 = 1;

/// An eventcount word; place it in shared memory (all-zero is a valid initial state).
#[repr(C)]
#[derive(Debug, Default)]
pub struct EventCount {
    word: AtomicU32,
}

const _: () = assert!(std::mem::size_of::<EventCount>() == 4);

/// How a wait ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitResult {
    /// The word changed (an event happened, or a wake-up came): re-check the condition.
    Changed,
    /// The deadline passed with no change.
    TimedOut,
}

impl EventCount {
    /// A fresh eventcount.
    // Used by the cross-process tests (`test_support`).
    #[cfg_attr(not(feature = "failpoints"), allow(dead_code))]
    pub const fn new() -> Self {
        EventCount {
            word: AtomicU32::new(0),
        }
    }

    /// Announces a waiter and returns the key to wait on. Re-check the condition
    /// after this and before [`wait`](Self::wait).
    #[inline]
    pub fn prepare(&self) -> u32 {
        let key = self.word.fetch_or(SLEEPER, Ordering::SeqCst) | SLEEPER;
        // The condition re-check that follows must not be ordered before the
        // announcement: pairs with a notifier's SeqCst store + load, and — through a
        // full barrier on every CPU running a registered process — with the plain
        // Release store + load of notifiers that publish lightly
        // (`platform::publish_order`).
        std::sync::atomic::fence(Ordering::SeqCst);
        sys::membarrier_global();
        key
    }

    /// Sleeps while the word still equals `key`, until `deadline` (`None`: no limit).
    pub fn wait(&self, key: u32, deadline: Option<Instant>) -> WaitResult {
        loop {
            if self.word.load(Ordering::SeqCst) != key {
                return WaitResult::Changed;
            }
            let timeout = match deadline {
                Some(d) => match d.checked_duration_since(Instant::now()) {
                    Some(t) if !t.is_zero() => Some(t),
                    _ => return WaitResult::TimedOut,
                },
                // No deadline: no timer either (arming and cancelling one costs a
                // few µs of CPU a sleep on a VM, as much as the sleep itself). A
                // notify always changes the word, so no wake-up can be lost.
                None => None,
            };
            sys::futex_wait(&self.word, key, timeout);
        }
    }

    /// Signals an event: every waiter returns from [`wait`](Self::wait).
    #[inline]
    pub fn notify(&self) {
        let prev = self.word.fetch_add(2, Ordering::SeqCst);
        if prev & SLEEPER != 0 {
            self.notify_slow();
        }
    }

    /// Signals an event only if a waiter may be asleep: one load when nobody waits
    /// (the fast path of a pipe). The caller must have made its condition true just
    /// before with a `SeqCst` store (or fence), or — in a process registered for
    /// expedited global membarrier — any Release store, so that a waiter re-checking
    /// after [`prepare`](Self::prepare) either sees the condition or is seen here.
    #[inline]
    pub fn notify_waiters(&self) {
        if self.word.load(Ordering::SeqCst) & SLEEPER != 0 {
            self.notify();
        }
    }

    #[cold]
    fn notify_slow(&self) {
        self.word.fetch_and(!SLEEPER, Ordering::SeqCst);
        sys::futex_wake(&self.word, u32::MAX >> 1);
    }

    /// Whether a waiter may be asleep on it now (for diagnostics: `shmval pipes`).
    pub fn may_have_sleepers(&self) -> bool {
        self.word.load(Ordering::Relaxed) & SLEEPER != 0
    }

    /// Events so far (wrapping), for diagnostics.
    // Used by the cross-process tests (`test_support`).
    #[cfg_attr(not(feature = "failpoints"), allow(dead_code))]
    pub fn events(&self) -> u32 {
        self.word.load(Ordering::Relaxed) >> 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;
    use std::time::Duration;

    #[test]
    fn a_notify_wakes_a_sleeper_and_none_is_lost() {
        for _ in 0..200 {
            let ec = Arc::new(EventCount::new());
            let flag = Arc::new(AtomicBool::new(false));
            let (e2, f2) = (ec.clone(), flag.clone());
            let t = std::thread::spawn(move || loop {
                if f2.load(Ordering::SeqCst) {
                    return;
                }
                let key = e2.prepare();
                if f2.load(Ordering::SeqCst) {
                    return;
                }
                e2.wait(key, Some(Instant::now() + Duration::from_secs(10)));
            });
            flag.store(true, Ordering::SeqCst);
            ec.notify();
            let start = Instant::now();
            t.join().unwrap();
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "the sleeper was woken, not timed out"
            );
        }
    }

    #[test]
    fn a_timeout_is_honoured_and_not_restarted() {
        let ec = EventCount::new();
        let key = ec.prepare();
        let start = Instant::now();
        assert_eq!(
            ec.wait(key, Some(start + Duration::from_millis(10))),
            WaitResult::TimedOut
        );
        let took = start.elapsed();
        assert!(
            took >= Duration::from_millis(10),
            "returned early: {took:?}"
        );
        assert!(took < Duration::from_secs(2), "took {took:?}");
    }

    #[test]
    fn an_event_before_the_wait_returns_at_once() {
        let ec = EventCount::new();
        let key = ec.prepare();
        ec.notify();
        let start = Instant::now();
        assert_eq!(ec.wait(key, None), WaitResult::Changed);
        assert!(start.elapsed() < Duration::from_millis(500));
        assert_eq!(ec.events(), 1);
    }
}
