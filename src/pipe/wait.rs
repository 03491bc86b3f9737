//! How pipe calls wait: the spin phase and what it learns ([`Adapt`], [`Spin`],
//! [`WaitLog`]), the deadline of a call and how long it may wait for another
//! process ([`Deadline`]), when a sleeper wakes ([`wake_at`]), and the process-local
//! turn the threads of one process take to claim ([`Turn`]).

use super::DEFAULT_SPIN;

/// How often a waiter blocked behind a claimed cell checks whether its claimer died.
pub(super) const STUCK_CHECK: Duration = Duration::from_millis(5);
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A process-local turn: the threads of one process share its user entry and its
/// records, so they claim one at a time. The word holds the holder's process token:
/// a turn copied into a forked child while a parent's thread held it is taken over.
pub(super) struct Turn(pub(super) AtomicU64);

impl Turn {
    #[inline]
    pub(super) fn take(&self, token: u64) -> TurnGuard<'_> {
        loop {
            match self
                .0
                .compare_exchange(0, token, Ordering::Acquire, Ordering::Relaxed)
            {
                Ok(_) => return TurnGuard(&self.0),
                Err(t) if t != token => {
                    // Held in the parent when this process was forked.
                    if self
                        .0
                        .compare_exchange(t, token, Ordering::Acquire, Ordering::Relaxed)
                        .is_ok()
                    {
                        return TurnGuard(&self.0);
                    }
                }
                // Another thread of this process claims: it never waits while
                // holding the turn.
                Err(_) => std::thread::yield_now(),
            }
        }
    }
}

pub(super) struct TurnGuard<'a>(&'a AtomicU64);

impl Drop for TurnGuard<'_> {
    #[inline]
    fn drop(&mut self) {
        self.0.store(0, Ordering::Release);
    }
}

/// Shortest spin an adaptive side keeps (so that it notices when hand-offs become
/// fast again), unless the budget itself is shorter.
pub(super) const MIN_ADAPT_SPIN_NS: u64 = 100;

/// Adaptive spinning, per handle and side: a blocked call spins at most this long
/// before it sleeps. A wait that ended while spinning doubles it (up to the budget,
/// [`Pipe::set_spin`]); one that had to sleep halves it (down to
/// [`MIN_ADAPT_SPIN_NS`]). A sender held up by a slow consumer (or a receiver by a
/// slow producer) thus stops burning the budget on every value — one sleep and one
/// wake-up each — while a fast stream keeps spinning.
pub(super) struct Adapt(AtomicU64);

impl Adapt {
    pub(super) fn new() -> Adapt {
        Adapt(AtomicU64::new(u64::MAX))
    }

    fn limit(&self, budget: u64) -> Duration {
        Duration::from_nanos(self.0.load(Ordering::Relaxed).min(budget))
    }

    fn spun_ok(&self) {
        let a = self.0.load(Ordering::Relaxed);
        self.0.store(
            a.saturating_mul(2).max(MIN_ADAPT_SPIN_NS),
            Ordering::Relaxed,
        );
    }

    fn slept(&self) {
        let a = self
            .0
            .load(Ordering::Relaxed)
            .min(DEFAULT_SPIN.as_nanos() as u64 * 64);
        self.0
            .store((a / 2).max(MIN_ADAPT_SPIN_NS), Ordering::Relaxed);
    }

    /// Spinning competed with another process for the core: down to the floor.
    fn contended(&self) {
        self.0.store(MIN_ADAPT_SPIN_NS, Ordering::Relaxed);
    }
}

/// What one call's wait taught its side's [`Adapt`], recorded when the call ends.
pub(super) struct WaitLog<'a> {
    adapt: &'a Adapt,
    /// The call's spin (at most what `adapt` allows now).
    pub(super) spin: Spin,
    waited: bool,
    slept: bool,
}

impl<'a> WaitLog<'a> {
    /// The wait of a call on a side whose spin adapts in `adapt`, within `budget`
    /// (zero: a call that does not block).
    pub(super) fn new(adapt: &'a Adapt, budget: u64) -> WaitLog<'a> {
        WaitLog {
            adapt,
            spin: Spin::new(adapt.limit(budget)),
            waited: false,
            slept: false,
        }
    }
    /// An attempt failed: the call waits.
    pub(super) fn waited(&mut self) {
        self.waited = true;
    }
    /// The call goes to sleep (its spin did not see the condition).
    pub(super) fn slept(&mut self) {
        if !self.slept {
            self.slept = true;
            self.adapt.slept();
        }
    }
}

impl Drop for WaitLog<'_> {
    fn drop(&mut self) {
        if self.spin.contended {
            self.adapt.contended();
        } else if self.waited && !self.slept {
            self.adapt.spun_ok();
        }
    }
}

/// How long a call may wait: the `try_`, `_timeout` and plain forms of every send
/// and receive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wait {
    /// One look (`try_`).
    Never,
    /// Up to this long.
    For(Duration),
    /// As long as it takes.
    Forever,
}

impl Wait {
    /// Whether the call waits at all.
    #[inline]
    pub(crate) fn blocks(self) -> bool {
        self != Wait::Never
    }

    /// The call's timeout (`None`: none).
    #[inline]
    pub(crate) fn timeout(self) -> Option<Duration> {
        match self {
            Wait::Never => Some(Duration::ZERO),
            Wait::For(d) => Some(d),
            Wait::Forever => None,
        }
    }
}

/// The deadline of one blocking (or not) call, fixed at its first failed attempt
/// (no clock read on the fast path), and how long the call may wait for *another
/// process* — an owner inside its section, a close to finish: not at all for a
/// `try_` call, until the deadline for a timed one, [`shmval_alloc::LOCK_PATIENCE`]
/// (then [`Fault::OwnerStuck`](super::Fault::OwnerStuck)) for one without a
/// timeout.
pub(super) struct Deadline {
    timeout: Option<Duration>,
    block: bool,
    at: std::cell::Cell<Option<Option<Instant>>>,
}

impl Deadline {
    pub(super) fn new(wait: Wait) -> Deadline {
        Deadline {
            timeout: wait.timeout(),
            block: wait.blocks(),
            at: std::cell::Cell::new(None),
        }
    }

    /// The deadline (`None`: none), fixed on first use.
    pub(super) fn at(&self) -> Option<Instant> {
        if let Some(at) = self.at.get() {
            return at;
        }
        let at = self.timeout.and_then(|t| Instant::now().checked_add(t));
        self.at.set(Some(at));
        at
    }

    /// Until when the call may wait for another process (`None`: not at all).
    pub(super) fn other_process_limit(&self) -> Option<Instant> {
        if !self.block {
            return None;
        }
        Some(
            self.at()
                .unwrap_or_else(|| Instant::now() + shmval_alloc::LOCK_PATIENCE),
        )
    }

    /// How long an attempt may wait for a lock's holder (another process): not at
    /// all for a `try_` call, the time left for a timed one (its whole timeout while
    /// the deadline is not fixed yet: no clock read on the fast path),
    /// [`shmval_alloc::LOCK_PATIENCE`] without a timeout.
    pub(super) fn lock_patience(&self) -> Duration {
        match (self.block, self.timeout, self.at.get()) {
            (false, _, _) => Duration::ZERO,
            (true, None, _) => shmval_alloc::LOCK_PATIENCE,
            (true, Some(t), None) => t,
            (true, Some(_), Some(at)) => at.map_or(Duration::ZERO, |d| {
                d.saturating_duration_since(Instant::now())
            }),
        }
    }

    /// A blocking call without a timeout.
    pub(super) fn unlimited(&self) -> bool {
        self.block && self.timeout.is_none()
    }
}

/// When a sleeper must wake: its deadline, or sooner when it waits behind a claimed
/// cell (to check whether the claimer died: nobody else would wake it), and in any
/// case within [`LOST_WAKE_CHECK`]: a process killed between making room or putting a
/// value in (a store in the pipe) and waking the sleepers (its notify) leaves them
/// with nobody to wake them, so they look again on their own.
pub(super) fn wake_at(deadline: Option<Instant>, behind_claim: bool) -> Option<Instant> {
    let period = if behind_claim {
        STUCK_CHECK
    } else {
        LOST_WAKE_CHECK
    };
    let check = Instant::now() + period;
    Some(deadline.map_or(check, |d| d.min(check)))
}

/// The longest a sleeper on a pipe sleeps without looking again (see [`wake_at`]):
/// what a wake-up lost to a death costs, and a blocked process's ten wake-ups a
/// second.
pub(super) const LOST_WAKE_CHECK: Duration = Duration::from_millis(100);

/// The spin phase of a blocking call: busy-wait with a growing pause, yielding the
/// CPU now and then, until `limit` has passed (or the deadline).
pub(super) struct Spin {
    limit: Duration,
    start: Option<Instant>,
    pub(super) round: u32,
    /// Rounds between clock reads (a power of two): 32 for a long spin, every round
    /// for a short one (an adaptive spin of a few hundred ns must not run 32 pauses,
    /// ~2 µs here).
    every: u32,
    /// A `yield` gave the core away for a while: another process was runnable on
    /// it — maybe the very one this spin waits for. The spin ends, and its side
    /// stops spinning until a wait succeeds by spinning again (see [`Adapt`]).
    contended: bool,
}

/// A `yield` that takes longer than this ran another process: the core is wanted.
pub(super) const CONTENDED_YIELD: Duration = Duration::from_micros(20);

impl Spin {
    pub(super) fn new(limit: Duration) -> Spin {
        let every = ((limit.as_nanos() / 1000).clamp(1, 32) as u32).next_power_of_two();
        Spin {
            limit,
            start: None,
            round: 0,
            every,
            contended: false,
        }
    }

    /// Pauses a little and returns whether to try again (false: go to sleep). Once
    /// it said false it always does (the clock is read only every few rounds, and a
    /// caller asking from two loops must not find a round that skips the check).
    #[inline]
    pub(super) fn more(&mut self, deadline: Option<Instant>) -> bool {
        if self.limit.is_zero() {
            return false;
        }
        self.round += 1;
        if self.round == 1 || self.round % self.every == 0 {
            let now = Instant::now();
            let start = *self.start.get_or_insert(now);
            if now.duration_since(start) >= self.limit || deadline.is_some_and(|d| now >= d) {
                self.limit = Duration::ZERO;
                return false;
            }
            // A yield every 1024 rounds (~40 µs here): a waiter that calls this in
            // an inner loop (the wait for room) must not turn into a yield loop.
            if self.round % 1024 == 0 {
                std::thread::yield_now();
                if now.elapsed() > CONTENDED_YIELD {
                    self.contended = true;
                    self.limit = Duration::ZERO;
                    return false;
                }
                return true;
            }
        }
        // One pause per round: a longer backoff delays noticing the hand-off (on
        // this AMD machine a PAUSE is ~65 cycles), and waiting is the only work here.
        std::hint::spin_loop();
        true
    }
}

/// Polls `done` until it says so or `until` passes (`None`: one look): spinning a
/// little, then napping 50 µs between looks (an owner's section is a few hundred
/// instructions: it is out at once unless preempted or stopped inside). Whether
/// `done` said so.
pub(crate) fn wait_until(
    until: Option<std::time::Instant>,
    mut done: impl FnMut() -> bool,
) -> bool {
    let mut rounds = 0u32;
    loop {
        if done() {
            return true;
        }
        let Some(until) = until else { return false };
        rounds += 1;
        if rounds < 64 {
            std::hint::spin_loop();
            continue;
        }
        let now = std::time::Instant::now();
        if now >= until {
            return false;
        }
        std::thread::sleep((until - now).min(std::time::Duration::from_micros(50)));
    }
}
