//! A validated view of a broadcast object (`Chan`) and what is done under its lock
//! (`Locked`): send, receive, subscribe, settle after a dead holder, drop dead laggards.

use super::layout::*;
use super::*;
use crate::pipe::Fault;
use crate::shm::layout::{tag, Slot};
use crate::shm::{Raw, ValError};
use crate::Pool;
use shmval_alloc::{LockError, LockState, LOCK_PATIENCE};
use std::ptr::NonNull;
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release, SeqCst};
use std::time::Duration;

/// A validated view of a broadcast object in a mapped pool.
#[derive(Debug)]
pub(super) struct Chan {
    /// Keeps the mapping `head` and `slots` point into alive as long as the view.
    _keep: Pool,
    pub(super) off: u64,
    pub(super) head: NonNull<BcastHead>,
    pub(super) slots: NonNull<Slot>,
    pub(super) cap: u64,
    pub(super) policy: Policy,
}

// SAFETY: the pointers name shared memory made of atomics only, kept mapped by the
// pool handle the `Chan` holds (`_keep`).
unsafe impl Send for Chan {}
// SAFETY: as above: every access is atomic.
unsafe impl Sync for Chan {}

/// Outcome of one locked send attempt.
pub(super) enum Push {
    Sent,
    Full,
    Closed,
}

/// Outcome of one locked receive attempt.
pub(super) enum Pull {
    Got(Raw),
    Lagged(u64),
    Empty,
    Closed,
}

pub(super) fn corrupt(off: u64, what: &str) -> ValError {
    ValError::Corrupt {
        what: format!("broadcast at {off:#x}: {what}"),
    }
}

impl Chan {
    pub(super) fn attach(pool: &Pool, off: u64) -> Result<Chan, ValError> {
        let o = pool.obj(off)?;
        if o.tag != tag::BCAST {
            return Err(corrupt(off, "not a broadcast object"));
        }
        let head = pool.at::<BcastHead>(off)?;
        let m = &head.meta;
        if m.magic.load(Acquire) != MAGIC {
            return Err(corrupt(off, "bad magic"));
        }
        let cap = m.cap.load(Relaxed);
        if cap == 0 || cap > MAX_CAP || object_size(cap) > o.size {
            return Err(corrupt(off, &format!("capacity {cap} vs {} bytes", o.size)));
        }
        if m.subs.load(Relaxed) != MAX_SUBSCRIBERS as u64 {
            return Err(corrupt(off, "subscriber table size"));
        }
        let policy = Policy::decode(m.policy.load(Relaxed), m.drop_after_ns.load(Relaxed))
            .ok_or_else(|| corrupt(off, "unknown policy"))?;
        let slots = pool.at::<Slot>(off + SLOTS_OFF as u64)?;
        Ok(Chan {
            _keep: pool.clone(),
            off,
            head: NonNull::from(head),
            slots: NonNull::from(slots),
            cap,
            policy,
        })
    }

    pub(super) fn format(pool: &Pool, off: u64, cap: u64, policy: Policy) -> Result<(), ValError> {
        let head = pool.at::<BcastHead>(off)?;
        let m = &head.meta;
        let (kind, ns) = policy.encode();
        m.cap.store(cap, Relaxed);
        m.subs.store(MAX_SUBSCRIBERS as u64, Relaxed);
        m.policy.store(kind, Relaxed);
        m.drop_after_ns.store(ns, Relaxed);
        m.created_ns.store(crate::sys::now_unix_ns(), Relaxed);
        m.magic.store(MAGIC, Release);
        Ok(())
    }

    #[inline]
    pub(super) fn head(&self) -> &BcastHead {
        // SAFETY: validated in `attach`; mapped while `_keep`, a field, lives.
        unsafe { self.head.as_ref() }
    }

    #[inline]
    pub(super) fn slot(&self, pos: u64) -> &Slot {
        // SAFETY: `pos % cap < cap`, and `cap` slots were bounds-checked in `attach`.
        unsafe { &*self.slots.as_ptr().add((pos % self.cap) as usize) }
    }

    pub(super) fn off(&self) -> u64 {
        self.off
    }

    pub(super) fn lock<'a>(&'a self, pool: &'a Pool) -> Result<Locked<'a>, ValError> {
        self.lock_within(pool, LOCK_PATIENCE)
    }

    /// [`Chan::lock`], waiting for a live holder no longer than `patience` (a timed
    /// call's time left; zero for a `try_` call).
    pub(super) fn lock_within<'a>(
        &'a self,
        pool: &'a Pool,
        patience: Duration,
    ) -> Result<Locked<'a>, ValError> {
        let state = self
            .head()
            .lock
            .lock_within::<crate::LinuxPlatform>(Some(patience))
            .map_err(|e| match e {
                LockError::Timeout => ValError::LockTimeout,
                LockError::Reentrant => ValError::Reentrant,
            })?;
        let g = Locked { ch: self, pool };
        fail_point!("broadcast.locked");
        if state == LockState::Recovered {
            // The last holder died: whatever it left is consistent by construction
            // (see the module doc); releasing what nobody needs any more is all.
            g.settle()?;
        }
        Ok(g)
    }

    pub(super) fn closed(&self) -> bool {
        self.head().meta.closed.load(Acquire) != 0
    }

    /// Values the ring holds (positions `released..tail`): what a dying broadcast
    /// releases and what `check` walks.
    pub(super) fn held(&self, pool: &Pool, f: &mut dyn FnMut(Raw)) -> Result<(), ValError> {
        let h = self.head();
        let (rel, tail) = (h.released.load(Acquire), h.tail.load(Acquire));
        if rel > tail || tail - rel > self.cap {
            return Err(corrupt(self.off(), &format!("released {rel}, tail {tail}")));
        }
        for p in rel..tail {
            f(pool.read(self.slot(p)));
        }
        Ok(())
    }
}

/// The channel's lock, held.
pub(super) struct Locked<'a> {
    pub(super) ch: &'a Chan,
    pub(super) pool: &'a Pool,
}

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        // SAFETY: a `Locked` exists only while this thread holds the lock.
        unsafe { self.ch.head().lock.unlock::<crate::LinuxPlatform>() };
    }
}

impl Locked<'_> {
    /// Checks `released <= tail <= released + cap`, brings every cursor into
    /// `released..=tail` (a cursor outside is corrupt: counted as missed), and
    /// releases the positions every subscriber has passed.
    pub(super) fn settle(&self) -> Result<(), ValError> {
        let (ch, h) = (self.ch, self.ch.head());
        let (rel, tail) = (h.released.load(Relaxed), h.tail.load(Relaxed));
        if rel > tail || tail - rel > ch.cap {
            return Err(corrupt(ch.off(), &format!("released {rel}, tail {tail}")));
        }
        let (mut min, mut live) = (tail, 0);
        for s in &h.subs {
            if s.token.load(Relaxed) == 0 {
                continue;
            }
            live += 1;
            let c = s.cursor.load(Relaxed);
            let c = if c < rel {
                s.missed.fetch_add(rel - c, Relaxed);
                s.cursor.store(rel, Relaxed);
                rel
            } else if c > tail {
                s.cursor.store(tail, Relaxed);
                tail
            } else {
                c
            };
            min = min.min(c);
        }
        h.subscribed.store(live, Relaxed);
        for p in rel..min {
            // Count it released (the commit: the slot is no longer held, and is
            // never read again before a sender refills it), then drop the
            // reference: a death in between leaks the one value, never frees it
            // twice. The slot is not cleared: its two stores could be torn by a
            // death, and a torn slot below `released` would be read again.
            let r = self.pool.read(ch.slot(p));
            h.released.store(p + 1, SeqCst); // before `notify_waiters` below
            self.pool.release(r);
        }
        if min > rel {
            h.not_full.notify_waiters();
        }
        Ok(())
    }

    /// Frees the entries of dead subscribers that hold the oldest value back.
    pub(super) fn drop_dead_laggards(&self) {
        let h = self.ch.head();
        let rel = h.released.load(Relaxed);
        for s in &h.subs {
            let t = s.token.load(Relaxed);
            if t != 0 && s.cursor.load(Relaxed) <= rel && !crate::platform::token_alive(t) {
                s.token.store(0, Release);
            }
        }
    }

    /// One send attempt: `force` drops the oldest value for the slowest subscribers
    /// when the ring is full; `reap` first checks whether those are alive.
    pub(super) fn push(&self, r: Raw, force: bool, reap: bool) -> Result<Push, ValError> {
        let (ch, h) = (self.ch, self.ch.head());
        if ch.closed() {
            return Ok(Push::Closed);
        }
        let tail = h.tail.load(Relaxed);
        if tail - h.released.load(Relaxed).min(tail) >= ch.cap {
            if reap {
                self.drop_dead_laggards();
            }
            self.settle()?;
            let rel = h.released.load(Relaxed);
            if tail - rel >= ch.cap {
                if !force {
                    return Ok(Push::Full);
                }
                for s in &h.subs {
                    if s.token.load(Relaxed) != 0 && s.cursor.load(Relaxed) == rel {
                        s.missed.fetch_add(1, Relaxed);
                        s.cursor.store(rel + 1, Relaxed);
                    }
                }
                self.settle()?;
            }
        }
        self.pool.write(ch.slot(tail), r);
        // SeqCst: ordered before the sleeper check of `notify_waiters`.
        h.tail.store(tail + 1, SeqCst);
        if h.subscribed.load(Relaxed) == 0 {
            self.settle()?; // nobody will read it
        }
        Ok(Push::Sent)
    }

    /// One receive attempt by subscriber `i` of process `token`.
    pub(super) fn pull(&self, i: usize, token: u64) -> Result<Pull, Fault> {
        let h = self.ch.head();
        let s = &h.subs[i];
        if s.token.load(Relaxed) != token {
            return Err(Fault::Unsubscribed);
        }
        let missed = s.missed.load(Relaxed);
        if missed != 0 {
            s.missed.store(0, Relaxed);
            return Ok(Pull::Lagged(missed));
        }
        let (c, tail, rel) = (
            s.cursor.load(Relaxed),
            h.tail.load(Relaxed),
            h.released.load(Relaxed),
        );
        if c < rel || c > tail {
            self.settle()?;
            return self.pull(i, token);
        }
        if c == tail {
            return Ok(if self.ch.closed() {
                Pull::Closed
            } else {
                Pull::Empty
            });
        }
        let r = self.pool.read(self.ch.slot(c));
        self.pool.retain(r)?; // ours before the cursor moves past it
                              // Counted at once (a new reference, no hand-over): the settling below may
                              // wake senders, a system call a death must not fall into uncounted.
        self.pool.ledger_add_raw(r);
        s.cursor.store(c + 1, Relaxed);
        if c == rel {
            self.settle()?; // we may have been the slowest
        }
        Ok(Pull::Got(r))
    }

    /// Takes a free subscriber entry (or a dead process's) for `token`, reading from
    /// the current tail on.
    pub(super) fn subscribe(&self, token: u64) -> Option<usize> {
        let h = self.ch.head();
        let tail = h.tail.load(Relaxed);
        let free = |s: &Sub| s.token.load(Relaxed) == 0;
        let i = h.subs.iter().position(free).or_else(|| {
            self.drop_dead_laggards_all();
            h.subs.iter().position(free)
        })?;
        let s = &h.subs[i];
        s.cursor.store(tail, Relaxed);
        s.missed.store(0, Relaxed);
        s.token.store(token, Release); // last: a death before leaves the entry free
        h.subscribed.fetch_add(1, Relaxed);
        Some(i)
    }

    pub(super) fn drop_dead_laggards_all(&self) {
        for s in &self.ch.head().subs {
            let t = s.token.load(Relaxed);
            if t != 0 && !crate::platform::token_alive(t) {
                s.token.store(0, Release);
            }
        }
    }

    pub(super) fn unsubscribe(&self, i: usize, token: u64) -> Result<(), ValError> {
        let s = &self.ch.head().subs[i];
        if s.token.load(Relaxed) == token {
            s.token.store(0, Release);
            self.settle()?;
        }
        Ok(())
    }
}
