//! What a dead process leaves in a pipe, moved on by whoever waits behind it:
//! unfilled claimed cells, receive records, its user entry, an owned side.

use super::env::{self, Pool, Raw};
use super::layout::*;
use super::view::{Dir, Ring, Stuck};
use std::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed, Release, SeqCst};

impl Ring {
    /// Moves `tail` past the cells a dead send owner filled without counting them
    /// (a cell filled at position `tail` can be nothing else: everyone else fills
    /// only what they claimed). A compare-and-swap each, so concurrent callers agree.
    pub(super) fn count_filled(&self) {
        let h = self.head();
        loop {
            let t = h.tail.load(Acquire);
            if !filled(self.cell(t).word.load(Acquire), t) {
                return;
            }
            let _ = h.tail.compare_exchange(t, t + 1, AcqRel, Relaxed);
        }
    }

    /// Whether what holds a waiter up belongs to a dead process; if so, moves it on
    /// (see [`Ring::recover_cells`], [`Ring::recover_record`]). Returns whether
    /// anything changed.
    pub(crate) fn unstick(&self, pool: &Pool, s: Stuck) -> bool {
        match s {
            // A cell seen filled is no dead claim: it was read after the counter,
            // and the value may have landed in between (the receiver's next look
            // takes it). Turning it to SKIP would lose that value.
            Stuck::Cell { pos, word } => {
                !filled(word, pos) && self.sender_dead(pos) && self.recover_cells(pos, word)
            }
            Stuck::Record { user, rec } => {
                let u = &self.head().users[usize::from(user) % USERS];
                let t = u.token.load(Acquire);
                u.recv.load(Acquire) == rec
                    && (t == 0 || !env::token_alive(t))
                    && self.recover_record(pool, user, rec)
            }
        }
    }

    /// Whether no live process's send record covers position `pos` (claimed, not
    /// filled: so its claimer is dead). Called after `tail` was seen past `pos`.
    pub(super) fn sender_dead(&self, pos: u64) -> bool {
        !self.head().users.iter().any(|u| {
            if !covers(u.send.load(Acquire), pos) {
                return false;
            }
            let t = u.token.load(Acquire);
            t != 0 && env::token_alive(t)
        })
    }

    /// Makes position `pos` (its cell saying `w`, its claimer found dead) SKIP, and
    /// the positions after it left unfilled by dead claimers too (the rest of a dead
    /// sender's range), so that a range costs one wait, not one per cell. Returns
    /// whether a cell changed.
    pub(super) fn recover_cells(&self, mut pos: u64, mut w: u64) -> bool {
        let h = self.head();
        let mut changed = false;
        for _ in 0..self.cap {
            let ok = self
                .cell(pos)
                .word
                .compare_exchange(w, word(pos, SKIP), SeqCst, Relaxed)
                .is_ok();
            if ok {
                h.not_empty.notify();
            }
            changed |= ok;
            pos += 1;
            w = self.cell(pos).word.load(Acquire);
            if filled(w, pos) || h.tail.load(Acquire) <= pos || !self.sender_dead(pos) {
                break;
            }
        }
        changed
    }

    /// Clears the receive record `r` of the dead user entry `user`. A won record's
    /// values are released: its claimer never handed them on (they were read into
    /// its own hands at most, which died with it). Returns whether this call cleared
    /// the record.
    pub(super) fn recover_record(&self, pool: &Pool, user: u16, r: u64) -> bool {
        let h = self.head();
        let u = &h.users[usize::from(user) % USERS];
        let mut vals = Vec::new();
        let from = unmask(r >> 16, h.head.load(Acquire));
        if r & WON != 0 {
            // It may have died committing the run (its receipt says so): the run is
            // released here, so the receipt goes first.
            let t = u.token.load(Acquire);
            if t != 0 {
                env::drop_receipts(pool, self.head.as_ptr().cast(), t, from);
            }
            // Stable while the record stands (senders stop below it): read first,
            // own them by the CAS, then release (a death in between leaks, never
            // frees twice).
            for (pos, c) in self.run(from).take(count(r)) {
                if c.word.load(Acquire) == word(pos, FULL) {
                    vals.push(pool.read(&c.slot));
                }
            }
        }
        if u.recv.compare_exchange(r, 0, AcqRel, Relaxed).is_err() {
            return false;
        }
        for v in vals {
            pool.release(v);
        }
        h.not_full.notify();
        true
    }

    /// Takes a user entry for the process `token`: a free one, else one of a dead
    /// process (its receive record recovered first; its unfinished send claims are
    /// then covered by no live record and are recovered by whoever waits behind
    /// them).
    pub(crate) fn register(&self, pool: &Pool, token: u64) -> Option<u16> {
        let h = self.head();
        let take = |i: usize, u: &User| {
            if u.token.load(Acquire) != 0
                || u.token.compare_exchange(0, token, AcqRel, Relaxed).is_err()
            {
                return None;
            }
            // The entry is ours: clear what a previous owner left.
            u.send.store(0, Release);
            u.recv.store(0, Release);
            h.meta.users_used.fetch_max(i as u64 + 1, AcqRel);
            Some(i as u16)
        };
        if let Some(i) = h.users.iter().enumerate().find_map(|(i, u)| take(i, u)) {
            return Some(i);
        }
        for (i, u) in h.users.iter().enumerate() {
            let t = u.token.load(Acquire);
            if t != 0 && t != token && !env::token_alive(t) {
                let r = u.recv.load(Acquire);
                if r != 0 {
                    self.recover_record(pool, i as u16, r);
                }
                // A side it owned is revoked while its token still says who it was
                // (a revoker judges the owner by its entry).
                for d in [Dir::Send, Dir::Recv] {
                    let b = self.side(d).1.load(Acquire);
                    if b & 2 != 0 && owner_user(b) == i {
                        let _ = self
                            .side(d)
                            .1
                            .compare_exchange(b, b | REVOKING, AcqRel, Relaxed);
                        // The owner is dead: one look completes it.
                        if self.revoke(d, b | REVOKING, None) != Ok(true) {
                            return None; // entry left to a revoker that can
                        }
                    }
                }
                // Free it, then take it like any free entry.
                let _ = u.token.compare_exchange(t, 0, AcqRel, Relaxed);
            }
        }
        h.users.iter().enumerate().find_map(|(i, u)| take(i, u))
    }

    /// Gives a user entry back (no claims of it are outstanding, no section of it
    /// is open): a side one of its threads owns is freed first.
    pub(crate) fn unregister(&self, i: u16, token: u64) {
        for d in [Dir::Send, Dir::Recv] {
            let bias = self.side(d).1;
            let b = bias.load(Acquire);
            if b & 3 == OWNED && owner_user(b) == usize::from(i) {
                let _ = bias.compare_exchange(b, FREE, AcqRel, Relaxed);
            }
        }
        if let Some(u) = self.head().users.get(usize::from(i)) {
            let _ = u.token.compare_exchange(token, 0, AcqRel, Relaxed);
        }
    }

    /// Values the pipe holds: those sent and not claimed, and those of won receive
    /// records (a dead receiver's run, released by its recoverer). What a dying pipe
    /// releases and what `check` walks.
    pub(crate) fn held(&self, pool: &Pool, f: &mut dyn FnMut(Raw)) {
        let h = self.head();
        let hd = h.head.load(Acquire);
        for (_, cell) in self.run(0).take(self.cap as usize) {
            let w = cell.word.load(Acquire);
            if phase(w) == FULL && unmask(w >> 16, hd).wrapping_sub(hd) < self.cap {
                f(pool.read(&cell.slot));
            }
        }
        for u in &h.users {
            let r = u.recv.load(Acquire);
            if r & WON != 0 && count(r) != 0 {
                for (pos, c) in self.run(unmask(r >> 16, hd)).take(count(r)) {
                    if c.word.load(Acquire) == word(pos, FULL) {
                        f(pool.read(&c.slot));
                    }
                }
            }
        }
    }
}
