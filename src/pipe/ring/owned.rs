//! The owner's side: a thread that owns a side sends (receives) with plain stores
//! inside a *section* (`busy` = 1), and how a side comes to be owned, shared or
//! revoked (the asymmetric Dekker with `membarrier`, see `docs/PROTOCOLS.md`).

use super::env::{self, AtomicU64, Pool, Raw};
use super::layout::*;
use super::view::{Dir, Pop, Push, Ring, Stuck, Take};
use std::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed, Release, SeqCst};

impl Ring {
    /// Enters an owner's section of the side with words `bias` and `busy`: whether
    /// `me` owns the side (then leave with `busy := 0`, Release).
    #[inline]
    pub(super) fn enter(bias: &AtomicU64, busy: &AtomicU64, me: u64) -> bool {
        if bias.load(Relaxed) != me {
            return false;
        }
        busy.store(1, Relaxed);
        // The asymmetric Dekker pattern: a revoker changes `bias`, then issues a
        // membarrier (a full barrier on every CPU running a registered process,
        // owners all are), then reads `busy`. So either this store is seen by the
        // revoker, or the load below sees its change; the compiler must not swap them.
        env::section_fence();
        if bias.load(Relaxed) == me {
            return true;
        }
        busy.store(0, Release);
        false
    }

    /// A send by `me`, if it owns the send side (else `None`): as [`Ring::try_push`]
    /// without a claim. The owner fills the cells, then moves `tail` past them with
    /// a plain store; no record, no locked instruction.
    #[inline]
    pub(crate) fn push_owned(&self, pool: &Pool, vals: &[Raw], me: u64) -> Option<Push> {
        let h = self.head();
        if !Self::enter(&h.send_bias, &h.send_busy, me) {
            return None;
        }
        let r = self.push_run(pool, vals);
        h.send_busy.store(0, Release);
        if matches!(r, Push::Sent(_)) {
            h.not_empty.notify_waiters();
        }
        Some(r)
    }

    /// The owner's send of one value, all or nothing, with nothing on the way that
    /// a plain single-producer ring would not do: `false` (nothing done) unless `me`
    /// owns the send side, the pipe is open and the limit this handle last saw
    /// leaves room; the general path ([`Ring::push_owned`]) handles every other case.
    #[inline(always)]
    pub(crate) fn push_one_owned(&self, r: Raw, me: u64) -> bool {
        let h = self.head();
        if !Self::enter(&h.send_bias, &h.send_busy, me) {
            return false;
        }
        let t = h.tail.load(Relaxed);
        let ok = !self.is_closed() && t < self.lim.load(Relaxed) + self.cap;
        if ok {
            fail_point!("pipe.send.owned.looked");
            let cell = self.cell(t);
            cell.slot.payload.store(r.payload, Relaxed);
            cell.slot.tag.store(r.tag_word(), Relaxed);
            // Release is enough for the sleeper check below: an owner's process is
            // registered for membarrier, which every sleeper issues (`EventCount`).
            cell.word.store(word(t, FULL), Release);
            fail_point!("pipe.send.owned.filled");
            h.tail.store(t + 1, Release);
        }
        h.send_busy.store(0, Release);
        if ok {
            h.not_empty.notify_waiters();
        }
        ok
    }

    /// The owner's send, inside its section.
    #[inline]
    pub(super) fn push_run(&self, pool: &Pool, vals: &[Raw]) -> Push {
        let h = self.head();
        if self.is_closed() {
            return Push::Closed;
        }
        let want = vals.len().min(MAX_CLAIM).min(self.cap as usize) as u64;
        let t = h.tail.load(Relaxed);
        let (room, by) = self.room(t, want);
        if room == 0 {
            return Push::Full(by);
        }
        let n = want.min(room) as usize;
        fail_point!("pipe.send.owned.looked");
        self.fill(pool, t, &vals[..n]);
        fail_point!("pipe.send.owned.filled");
        // Release: whoever sees the new tail sees the cells (and a revoker that
        // counts filled cells past a dead owner's tail finds the same ones).
        h.tail.store(t + n as u64, Release);
        Push::Sent(n)
    }

    /// Writes `vals` into the cells of positions `t ..` and marks them FULL.
    #[inline]
    pub(super) fn fill(&self, pool: &Pool, t: u64, vals: &[Raw]) {
        let order = env::publish_order();
        for ((pos, cell), &r) in self.run(t).zip(vals) {
            pool.write(&cell.slot, r);
            // Ordered before the sleeper check of `notify_waiters`.
            cell.word.store(word(pos, FULL), order);
        }
    }

    /// A receive by `me`, if it owns the receive side (else `None`): as
    /// [`Ring::try_pop`] without a claim or a record. The owner reads the filled
    /// cells, then moves `head` past them (Release: after its reads).
    #[inline]
    pub(crate) fn pop_owned(
        &self,
        pool: &Pool,
        max: usize,
        me: u64,
        look: bool,
        out: &mut impl Take,
    ) -> Option<Pop> {
        let h = self.head();
        if !Self::enter(&h.recv_bias, &h.recv_busy, me) {
            return None;
        }
        let want = max.clamp(1, MAX_CLAIM).min(self.cap as usize);
        let mut moved = false;
        let r = loop {
            let hd = h.head.load(Relaxed);
            // One pass: read each FULL cell, step over SKIP ones, stop at the first
            // that is not filled.
            let (mut n, mut got) = (0, 0);
            for (pos, cell) in self.run(hd).take(want) {
                let w = cell.word.load(Acquire);
                if w == word(pos, FULL) {
                    out.put(pool.read(&cell.slot));
                    got += 1;
                } else if w != word(pos, SKIP) {
                    break;
                }
                n += 1;
            }
            if n == 0 {
                break self.empty(hd, look);
            }
            fail_point!("pipe.recv.owned.read");
            if got > 0 {
                out.intend(hd, None);
            }
            fail_point!("pipe.recv.owned.intended");
            h.head.store(hd + n, Release);
            fail_point!("pipe.recv.owned.moved");
            if got > 0 {
                out.taken();
            }
            moved = true;
            if got > 0 {
                break Pop::Got(got);
            }
        };
        h.recv_busy.store(0, Release);
        if moved {
            h.not_full.notify_waiters();
        }
        Some(r)
    }

    /// The owner's receive of one value (as [`Ring::push_one_owned`]): `None`
    /// (nothing done) unless `me` owns the receive side and the cell at `head` holds
    /// a value; [`Ring::pop_owned`] handles every other case. `taken` gets the value
    /// once it is the receiver's, before any sender is woken.
    /// With `rounds` > 0 it looks at the cell again after a pause up to `rounds`
    /// more times while it is not filled, inside one owner's section (a revoker
    /// waits those few microseconds out): between looks nothing but the cell's word
    /// is read, so a hand-off is seen as soon as the line arrives.
    #[inline(always)]
    pub(crate) fn pop_one_owned(
        &self,
        me: u64,
        rounds: u32,
        taken: impl FnOnce(Raw),
    ) -> Option<Raw> {
        let h = self.head();
        if !Self::enter(&h.recv_bias, &h.recv_busy, me) {
            return None;
        }
        let hd = h.head.load(Relaxed);
        let cell = self.cell(hd);
        let full = word(hd, FULL);
        let mut left = rounds;
        while cell.word.load(Acquire) != full && left > 0 {
            std::hint::spin_loop();
            left -= 1;
        }
        // An `if`, not `bool::then` with a closure: the closure (calling `taken`)
        // stopped being inlined, 20 instructions a value on this fast path.
        let got = if cell.word.load(Acquire) == full {
            let r = Raw::from_words(cell.slot.tag.load(Relaxed), cell.slot.payload.load(Relaxed));
            fail_point!("pipe.recv.owned.read");
            // Release: after the reads (a sender may refill the cell once it sees this).
            h.head.store(hd + 1, Release);
            taken(r); // the receiver's now (see `Take::taken`)
            Some(r)
        } else {
            None
        };
        h.recv_busy.store(0, Release);
        if got.is_some() {
            h.not_full.notify_waiters();
        }
        got
    }

    /// What an empty pipe at position `hd` says: closed (when no sender claimed
    /// `hd` before the close: it still fills it), or empty, with the claimed cell
    /// if asked to `look`.
    #[inline]
    pub(super) fn empty(&self, hd: u64, look: bool) -> Pop {
        let h = self.head();
        let closed = h.meta.closed.load(SeqCst);
        if closed == CLOSING {
            return Pop::Closing;
        }
        let closed = closed != OPEN;
        // SeqCst: ordered after the load that saw CLOSED (see `finish_close`).
        env::sc_order();
        let claimed = (look || closed) && h.tail.load(SeqCst) > hd;
        if closed && !claimed {
            Pop::Closed
        } else {
            let w = self.cell(hd).word.load(Acquire);
            Pop::Empty(claimed.then_some(Stuck::Cell { pos: hd, word: w }))
        }
    }

    /// Settles how the caller, owner word `me`, uses side `d`: returns whether `me`
    /// owns it now (else the side is shared, for good). A free side is taken when
    /// `can_own` (this process is registered for membarrier), else made shared;
    /// another thread's ownership is revoked (see [`Ring::revoke`]), waiting for
    /// the owner to leave its section until `until` at most (`None`: not at all);
    /// `Ok(None)`: the owner was still inside then (stopped, traced, or a corrupt
    /// word naming a live process). `Err(())`: the kernel refused the membarrier a
    /// revocation needs.
    #[cold]
    pub(crate) fn settle(
        &self,
        d: Dir,
        me: u64,
        can_own: bool,
        until: Option<std::time::Instant>,
    ) -> Result<Option<bool>, ()> {
        let (_, bias, busy) = self.side(d);
        loop {
            let b = bias.load(Acquire);
            if b == me {
                return Ok(Some(true));
            }
            if b == SHARED {
                return Ok(Some(false));
            }
            if b == FREE {
                let new = if can_own { me } else { SHARED };
                if bias.compare_exchange(FREE, new, AcqRel, Relaxed).is_ok() {
                    if new == me {
                        // Only owners write it; a dead one may have left it set.
                        busy.store(0, Release);
                    }
                    return Ok(Some(new == me));
                }
            } else if b & 3 == OWNED {
                let _ = bias.compare_exchange(b, b | REVOKING, AcqRel, Relaxed);
            } else if !self.revoke(d, b, until)? {
                return Ok(None);
            }
        }
    }

    /// Completes the revocation of side `d`'s owner (bias word `b`, REVOKING; any
    /// number of threads may do this at once). After a membarrier every section the
    /// owner enters sees `b`; the section it may be in is waited out (`busy` goes
    /// to 0) unless the owner is dead. A dead sender's cells filled past `tail` are
    /// counted in; a dead receiver needs nothing (it moves `head` after its reads:
    /// what it read and did not count is read again). The side becomes free if the
    /// owner is gone, else shared. The wait for a live owner lasts until `until` at
    /// most (`None`: one look); `Ok(false)` then: the side stays being revoked, and
    /// the next caller (anyone) goes on with it.
    #[cold]
    pub(super) fn revoke(
        &self,
        d: Dir,
        b: u64,
        until: Option<std::time::Instant>,
    ) -> Result<bool, ()> {
        let (_, bias, busy) = self.side(d);
        if !env::membarrier_global() {
            return Err(());
        }
        let u = &self.head().users[owner_user(b)];
        let gone = || {
            let t = u.token.load(Acquire);
            t == 0 || !env::token_alive(t)
        };
        let mut dead = false;
        let out = env::wait_until(until, || {
            if busy.load(Acquire) == 0 {
                dead = gone();
                return true;
            }
            dead = gone();
            dead
        });
        if !out {
            return Ok(false);
        }
        if dead && d == Dir::Send {
            self.count_filled();
        }
        if dead && d == Dir::Recv {
            // It may have died committing a run at `head` (its receipt says so):
            // the run is read again by the next owner, so the receipt goes first.
            let t = u.token.load(Acquire);
            if t != 0 {
                env::drop_receipts(
                    &self._keep,
                    self.head.as_ptr().cast(),
                    t,
                    self.head().head.load(Acquire),
                );
            }
        }
        let _ = bias.compare_exchange(b, if dead { FREE } else { SHARED }, AcqRel, Relaxed);
        Ok(true)
    }
}
