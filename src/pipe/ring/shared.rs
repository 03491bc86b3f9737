//! The shared side: claims of position ranges by compare-and-swap, with records,
//! under each process's turn; and the senders' limit (the oldest receive record).

use super::env::{self, AtomicU64, Pool, Raw};
use super::layout::*;
use super::view::{Pop, Push, Ring, Stuck, Take};
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release, SeqCst};

impl Ring {
    /// One attempt to put the values of `vals` (not empty) at the tail, as many as
    /// there is room for. On `Sent(n)` the cells own the first `n` references.
    /// The caller holds its process's send turn (see the module comment).
    #[inline]
    pub(crate) fn try_push(&self, pool: &Pool, vals: &[Raw], me: u16) -> Push {
        let h = self.head();
        if self.is_closed() {
            return Push::Closed;
        }
        fail_point!("pipe.send.shared.looked");
        let rec = &self.user(me).send;
        let want = vals.len().min(MAX_CLAIM).min(self.cap as usize) as u64;
        loop {
            let t = h.tail.load(Acquire);
            let (room, by) = self.room(t, want);
            if room == 0 {
                if h.tail.load(Acquire) != t {
                    continue; // another sender moved on: look again
                }
                return Push::Full(by);
            }
            let n = want.min(room) as usize;
            if !Self::claim(&h.tail, rec, t, n) {
                continue;
            }
            fail_point!("pipe.send.shared.claimed");
            env::sc_order();
            if h.meta.closed.load(SeqCst) != OPEN {
                // Closed since the look above: the claimed cells are given up
                // (SKIP), the values stay the caller's (see `finish_close`).
                for (pos, cell) in self.run(t).take(n) {
                    cell.word.store(word(pos, SKIP), Release);
                }
                rec.store(0, Release);
                h.not_empty.notify_waiters();
                return Push::Closed;
            }
            self.fill(pool, t, &vals[..n]);
            rec.store(0, Release);
            h.not_empty.notify_waiters();
            return Push::Sent(n);
        }
    }

    /// Room for sending at position `t`: from the cached limit if it leaves room for
    /// `want`, else from the limit now (cached for next time), with the receive
    /// record that set it. `t >= lim`: a limit is at most a head seen, and tail never
    /// falls behind it.
    #[inline]
    pub(super) fn room(&self, t: u64, want: u64) -> (u64, Option<Stuck>) {
        let room = (self.lim.load(Relaxed) + self.cap).saturating_sub(t);
        if room >= want {
            return (room, None);
        }
        let (lim, by) = self.limit();
        if lim > self.lim.load(Relaxed) {
            self.lim.store(lim, Relaxed);
        }
        ((lim + self.cap).saturating_sub(t), by)
    }

    /// The senders' limit now: `head`, or the start of the oldest receive record
    /// below it, with that record (the receiver senders wait for).
    pub(super) fn limit(&self) -> (u64, Option<Stuck>) {
        let h = self.head();
        // Head first: a record of every claim below it is then seen (written before
        // the claimer's CAS), or its clearing (after the claimer's last read).
        let hd = h.head.load(Acquire);
        let used = (h.meta.users_used.load(Acquire) as usize).min(USERS);
        let mut lim = (hd, None);
        for (i, u) in h.users[..used].iter().enumerate() {
            let r = u.recv.load(Acquire);
            if count(r) != 0 {
                let from = unmask(r >> 16, hd);
                if from < lim.0 {
                    lim = (
                        from,
                        Some(Stuck::Record {
                            user: i as u16,
                            rec: r,
                        }),
                    );
                }
            }
        }
        lim
    }

    /// One attempt to take up to `max` (≥ 1) values at the head, handing each to
    /// `out` in order. `look`: on an empty pipe, also tell whether the next cell is
    /// claimed by a sender that has not filled it (reads the senders' counter).
    /// The caller holds its process's receive turn.
    #[inline]
    pub(crate) fn try_pop(
        &self,
        pool: &Pool,
        max: usize,
        me: u16,
        look: bool,
        out: &mut impl Take,
    ) -> Pop {
        let h = self.head();
        let rec = &self.user(me).recv;
        let want = max.clamp(1, MAX_CLAIM).min(self.cap as usize);
        loop {
            let hd = h.head.load(Acquire);
            let n = self
                .run(hd)
                .take(want)
                .take_while(|&(pos, c)| filled(c.word.load(Acquire), pos))
                .count();
            if n == 0 {
                let w = self.cell(hd).word.load(Acquire);
                if h.head.load(Acquire) != hd || filled(w, hd) {
                    continue; // raced with another receiver, or a value just came
                }
                return self.empty(hd, look);
            }
            if !Self::claim(&h.head, rec, hd, n) {
                continue;
            }
            // Won: a recoverer may release the run if this process dies now.
            rec.store(record(hd, n) | WON, Relaxed);
            fail_point!("pipe.recv.shared.claimed");
            let mut got = 0;
            for (pos, cell) in self.run(hd).take(n) {
                // Filled as seen before the claim (Acquire); nobody writes it until
                // the record is cleared.
                if cell.word.load(Relaxed) == word(pos, FULL) {
                    out.put(pool.read(&cell.slot));
                    got += 1;
                }
            }
            if got > 0 {
                out.intend(hd, Some(me));
            }
            fail_point!("pipe.recv.shared.intended");
            // The cells are free for the senders' next lap.
            rec.store(0, Release);
            fail_point!("pipe.recv.shared.cleared");
            if got > 0 {
                out.taken();
            }
            h.not_full.notify_waiters();
            if got > 0 {
                return Pop::Got(got);
            }
        }
    }

    /// Claims positions `from .. from + n` by moving `counter` past them, the range
    /// written into the claimer's record `rec` first (Release on the counter:
    /// whoever sees it past `from` sees the record); a lost CAS clears the record.
    #[inline]
    pub(super) fn claim(counter: &AtomicU64, rec: &AtomicU64, from: u64, n: usize) -> bool {
        // Release: whoever reads this record also sees the clearing of the last one
        // (and what came before it).
        rec.store(record(from, n), Release);
        // A claimer killed here leaves a record of a claim it never made.
        fail_point!("pipe.claim.recorded");
        // SeqCst: a sender's look at `closed` after its claim must not be ordered
        // before it (see `finish_close`).
        let won = counter
            .compare_exchange(from, from + n as u64, SeqCst, Relaxed)
            .is_ok();
        if !won {
            rec.store(0, Release);
        }
        won
    }

    /// Waits (a spin on the counters, not on the cell the receivers are taking,
    /// which would slow them down) until there is room for more than a few values
    /// (half the ring, at most [`ROOM_SLACK`]), so that a full pipe drains in runs
    /// rather than value by value — for as long as `more` (the caller's spin budget)
    /// says. A small ring waits for half of it to be free: for a ring of 32 or fewer
    /// the old threshold (32 free) could never be met and every blocked send spun
    /// its full count, ~500 µs.
    pub(crate) fn wait_for_room(&self, mut more: impl FnMut() -> bool) {
        let h = self.head();
        let room = self.cap - ROOM_SLACK.min(self.cap / 2);
        for _ in 0..ROOM_SPINS {
            let (t, hd) = (h.tail.load(Relaxed), h.head.load(Relaxed));
            if t.saturating_sub(hd) < room || self.is_closed() || !more() {
                return;
            }
        }
    }
}
