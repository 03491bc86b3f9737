//! `Subscriber`: one subscription's receives.

use super::chan::*;
use super::*;
use crate::pipe::wait::Wait;
use crate::pipe::wait::{Deadline, Spin};
use crate::pipe::Fault;
use crate::shm::{ShmVal, ValError};
use std::fmt;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::{Acquire, Relaxed, SeqCst};
use std::time::{Duration, Instant};

/// One subscription: receives every value sent after it was made, in order. Dropping
/// it unsubscribes (and lets go of what only it still needed).
///
/// ```
/// use shmval::{Broadcast, BroadcastRecvError, Policy, Pool, PoolOptions, ShmVal};
/// # let name = format!("doc-subscriber-{}", std::process::id());
/// let pool = Pool::create_with(&name, 4 << 20, &PoolOptions::new().remove_on_drop(true))?;
/// let b = Broadcast::create(&pool, "events", 8, Policy::Block)?;
/// b.send(ShmVal::from(0i64))?; // nobody subscribed: nobody sees it
/// let sub = b.subscribe()?;
/// b.send(ShmVal::from(1i64))?;
/// assert_eq!(sub.try_recv()?.to_string(), "1");
/// assert!(matches!(sub.try_recv(), Err(BroadcastRecvError::Empty)));
/// b.close();
/// assert!(matches!(sub.recv(), Err(BroadcastRecvError::Closed)));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Subscriber {
    pub(super) b: Broadcast,
    pub(super) i: usize,
    pub(super) token: u64,
    pub(super) spin_ns: AtomicU64,
}

impl fmt::Debug for Subscriber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscriber")
            .field("broadcast", &self.b.inner.name)
            .field("entry", &self.i)
            .field("pending", &self.pending())
            .finish()
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        if self.token != crate::platform::process_token() {
            return; // a forked child's copy: the entry is the parent's
        }
        let ch = &self.b.inner.ch;
        if let Ok(g) = ch.lock(self.b.pool()) {
            let _ = g.unsubscribe(self.i, self.token);
        }
    }
}

impl Subscriber {
    /// The broadcast subscribed to.
    pub fn broadcast(&self) -> &Broadcast {
        &self.b
    }

    /// Values sent that this subscriber has not received yet (a snapshot).
    pub fn pending(&self) -> u64 {
        let h = self.b.inner.ch.head();
        let c = h.subs[self.i].cursor.load(Acquire);
        h.tail.load(Acquire).saturating_sub(c)
    }

    /// Sets how long blocking receives spin before sleeping.
    pub fn set_spin(&self, spin: Duration) {
        self.spin_ns.store(crate::pipe::spin_ns(spin), Relaxed);
    }

    /// Receives the next value if there is one now.
    ///
    /// # Errors
    /// [`BroadcastRecvError::Empty`], `Lagged`, `Closed`.
    pub fn try_recv(&self) -> Result<ShmVal, BroadcastRecvError> {
        self.recv_until(Wait::Never)
    }

    /// Receives the next value, waiting at most `timeout`.
    ///
    /// # Errors
    /// [`BroadcastRecvError::Timeout`], `Lagged`, `Closed`.
    pub fn recv_timeout(&self, timeout: Duration) -> Result<ShmVal, BroadcastRecvError> {
        self.recv_until(Wait::For(timeout))
    }

    /// Receives the next value, waiting as long as it takes.
    ///
    /// # Errors
    /// [`BroadcastRecvError::Lagged`], `Closed`.
    pub fn recv(&self) -> Result<ShmVal, BroadcastRecvError> {
        self.recv_until(Wait::Forever)
    }

    /// Whether a locked attempt could find something (read without the lock).
    pub(super) fn maybe_ready(&self) -> bool {
        let h = self.b.inner.ch.head();
        let s = &h.subs[self.i];
        s.missed.load(SeqCst) != 0
            || s.cursor.load(SeqCst) < h.tail.load(SeqCst)
            || self.b.inner.ch.closed()
            || s.token.load(Relaxed) != self.token
    }

    /// One locked attempt, waiting for the lock's holder at most `patience`
    /// (`LockTimeout` then).
    pub(super) fn pull(&self, patience: Duration) -> Result<Pull, BroadcastRecvError> {
        if self.token != crate::platform::process_token() {
            return Err(BroadcastRecvError::Broken(Fault::Unsubscribed));
        }
        let ch = &self.b.inner.ch;
        let g = ch
            .lock_within(self.b.pool(), patience)
            .map_err(|e| BroadcastRecvError::Broken(e.into()))?;
        let out = g
            .pull(self.i, self.token)
            .map_err(BroadcastRecvError::Broken)?;
        Ok(out)
    }

    pub(super) fn recv_until(&self, how: Wait) -> Result<ShmVal, BroadcastRecvError> {
        let pool = self.b.pool();
        let mut deadline: Option<Option<Instant>> = None;
        // As in `Broadcast::send_until`.
        let dl = Deadline::new(how);
        let lock_timeout = |e: &BroadcastRecvError| {
            matches!(
                e,
                BroadcastRecvError::Broken(Fault::Val(ValError::LockTimeout))
            )
        };
        let mut spin = Spin::new(if how.blocks() {
            Duration::from_nanos(self.spin_ns.load(Relaxed))
        } else {
            Duration::ZERO
        });
        loop {
            if self.maybe_ready() {
                let got = match self.pull(dl.lock_patience()) {
                    Err(e) if lock_timeout(&e) && !how.blocks() => {
                        return Err(BroadcastRecvError::Empty)
                    }
                    Err(e) if lock_timeout(&e) && how.timeout().is_some() => {
                        return Err(BroadcastRecvError::Timeout)
                    }
                    r => r?,
                };
                match got {
                    Pull::Got(r) => return Ok(ShmVal::from_ledgered(pool, r)),
                    Pull::Lagged(n) => return Err(BroadcastRecvError::Lagged(n)),
                    Pull::Closed => return Err(BroadcastRecvError::Closed),
                    Pull::Empty => {}
                }
            }
            if !how.blocks() {
                return Err(BroadcastRecvError::Empty);
            }
            let deadline = *deadline.get_or_insert_with(|| dl.at());
            if spin.more(deadline) {
                continue;
            }
            let ec = &self.b.inner.ch.head().not_empty;
            let key = ec.prepare();
            if self.maybe_ready() {
                continue;
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Err(BroadcastRecvError::Timeout);
            }
            // Bounded even without a deadline: a sender killed between publishing
            // and waking leaves nobody to wake this subscriber.
            ec.wait(key, crate::pipe::wait::wake_at(deadline, false));
        }
    }
}
