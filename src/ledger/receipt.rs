//! Receipts: the runs of values a process receives (`recv_many`), noted as they are
//! read and marked, naming the run, just before the receive commits (see
//! `docs/PROTOCOLS.md`, "Received"), so that a death anywhere gives the run back
//! once — by the pipe or by the replay, never both.

use super::{LedgerHead, Replayed, View};
use crate::shm::mem::Raw;
use crate::Pool;
use shmval_alloc::Offset;
use std::alloc::Layout;
use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed, Release};

/// Receipts of runs being received, one per receiving thread at a time.
pub(crate) const BATCH_SLOTS: usize = 8;
/// Values a receipt holds: a run received with one is at most this long.
pub(crate) const BATCH_KEYS: usize = 64;

/// A receipt: the objects of a run being received, noted as each value is read
/// (before the receive commits: they are still the pipe's), marked — naming the run
/// — just before the receive commits ([`Receipt::intend`]), then folded into the
/// tables key by key (each key cleared before it is counted). A replay ignores an
/// unmarked receipt and asks the pipe about a marked one (`receipt_taken`).
#[repr(C)]
pub(crate) struct BatchSlot {
    /// The receiving thread (0: free).
    owner: AtomicU64,
    /// 1 from just before the receive commits (when `pipe` names the run: see
    /// [`Receipt::intend`]) or once it has (`pipe` 0), until the fold is done.
    committed: AtomicU64,
    /// The pipe object the run is received from (0: not said), its creation time
    /// (an object freed and made again elsewhere is not taken for it), the run's
    /// first position, and `1 +` the receiver's user entry for a shared-side
    /// receive (0: the owner's receive).
    pipe: AtomicU64,
    born: AtomicU64,
    from: AtomicU64,
    user: AtomicU64,
    keys: [AtomicU64; BATCH_KEYS],
}

#[repr(C)]
pub(super) struct Batches {
    slots: [BatchSlot; BATCH_SLOTS],
}

// SAFETY: atomics only, no padding, valid for any bits.
unsafe impl crate::shm::layout::InShared for Batches {}

pub(super) fn batches_layout() -> Layout {
    Layout::new::<Batches>().align_to(16).expect("small")
}
impl Pool {
    /// The replay of the receipts of the ledger `h` (see `ledger_replay`).
    pub(super) fn replay_receipts(&self, h: &LedgerHead, r: &mut Replayed) {
        if let Some(b) = self.ledger_batches(h) {
            for slot in &b.slots {
                if slot.committed.load(Acquire) == 0 {
                    continue; // not committed: the run is still the pipe's
                }
                // Committing: taken if the pipe says the receive happened.
                let taken = self.receipt_taken(slot);
                for k in &slot.keys {
                    let off = k.swap(0, AcqRel);
                    if off == 0 {
                        continue;
                    }
                    if !taken {
                        r.left += 1; // the pipe's still (it hands them out again)
                        continue;
                    }
                    match self.obj(off) {
                        Ok(o) => {
                            self.release(Raw::new(o.tag, 0, off));
                            r.objects += 1;
                            r.references += 1;
                        }
                        Err(_) => r.skipped += 1,
                    }
                }
                slot.committed.store(0, Release);
            }
        }
    }

    /// Whether no receipt of the ledger `h` is in use (none made, or all free).
    pub(super) fn receipts_idle(&self, h: &LedgerHead) -> bool {
        self.ledger_batches(h).is_none_or(|b| {
            b.slots
                .iter()
                .all(|s| s.owner.load(Acquire) == 0 && s.committed.load(Acquire) == 0)
        })
    }

    /// Adds what the receipts of the ledger `h` count (a receipt committing a run
    /// its pipe still holds counts nothing: the run is the pipe's).
    pub(super) fn receipt_counts(&self, h: &LedgerHead, counts: &mut HashMap<u64, u64>) {
        if let Some(b) = self.ledger_batches(h) {
            // A receipt committing a run its pipe still holds is the pipe's.
            for slot in b
                .slots
                .iter()
                .filter(|s| s.committed.load(Acquire) != 0 && self.receipt_taken(s))
            {
                for k in &slot.keys {
                    let off = k.load(Relaxed);
                    if off != 0 {
                        *counts.entry(off).or_insert(0u64) += 1;
                    }
                }
            }
        }
    }

    /// Frees the receipts block of a ledger no word names any more.
    pub(super) fn free_receipts(&self, h: &LedgerHead) {
        if let Some(o) = Offset::new(h.batches.swap(0, AcqRel)) {
            // SAFETY: allocated by `ledger_batch` with this layout; no word names the
            // ledger, and its owner is gone.
            let _ = unsafe { self.free_own(o, batches_layout()) };
        }
    }

    /// Whether the run of the committing receipt `slot` was taken off its pipe: yes
    /// when the receipt names no pipe (it was marked after the receive), else as
    /// the pipe says ([`crate::pipe::receipt_taken`]); a pipe that is not there
    /// any more (or not the one it was) says no — the run is then leaked, never
    /// given back twice.
    fn receipt_taken(&self, slot: &BatchSlot) -> bool {
        let pipe = slot.pipe.load(Acquire);
        pipe == 0
            || crate::pipe::receipt_taken(
                self,
                pipe,
                slot.born.load(Relaxed),
                slot.from.load(Relaxed),
                slot.user.load(Relaxed),
            )
            .unwrap_or(false)
    }

    /// Before a pipe moves on past a dead receiver (`token`) that was about to
    /// commit a receive of the run at `from` and had not (the pipe hands the run
    /// out again, or releases it): that receiver's receipts naming the run are
    /// emptied, so that a replay of its ledger does not give the run back too.
    /// Each key is swapped to 0 by this or by a replay, never both.
    pub(crate) fn drop_receipts(&self, token: u64, pipe: u64, from: u64) {
        let want = token & !shmval_alloc::THREAD_MASK;
        if want == 0 {
            return;
        }
        for slot in &self.boot_header().attached {
            let off = slot.ledger.load(Acquire);
            let Some(h) = (off != 0).then(|| self.ledger_head(off)).flatten() else {
                continue;
            };
            if h.owner.load(Acquire) & !shmval_alloc::THREAD_MASK != want {
                continue;
            }
            let Some(b) = self.ledger_batches(h) else {
                continue;
            };
            for s in &b.slots {
                if s.committed.load(Acquire) != 0
                    && s.pipe.load(Acquire) == pipe
                    && s.from.load(Acquire) == from
                {
                    for k in &s.keys {
                        k.store(0, Release);
                    }
                }
            }
        }
    }
}

impl Pool {
    fn ledger_batches(&self, h: &LedgerHead) -> Option<&Batches> {
        let off = h.batches.load(Acquire);
        (off != 0).then(|| self.at::<Batches>(off).ok()).flatten()
    }

    /// A receipt for a run this thread is about to receive (see [`BatchSlot`]);
    /// `None` when this process keeps no ledger, or no receipt is free or can be
    /// made (the caller then counts the run after it commits, as before).
    pub(crate) fn ledger_batch(&self) -> Option<Receipt<'_>> {
        let View::Ready(head) = self.ledger_view() else {
            return None;
        };
        let b = match self.ledger_batches(head) {
            Some(b) => b,
            None => {
                let off = self.alloc_own(batches_layout()).ok()?;
                let size = batches_layout().size();
                let p = self.resolve(off, size)?;
                // SAFETY: a fresh block of `size` bytes, ours alone until published.
                unsafe { std::ptr::write_bytes(p.as_ptr(), 0, size) };
                if head
                    .batches
                    .compare_exchange(0, off.get(), AcqRel, Acquire)
                    .is_err()
                {
                    // SAFETY: just allocated with this layout, never published.
                    let _ = unsafe { self.free_own(off, batches_layout()) };
                }
                self.ledger_batches(head)?
            }
        };
        let me = u64::from(crate::platform::thread_id()).max(1);
        let slot = b.slots.iter().find(|s| {
            s.owner.load(Relaxed) == 0 && s.owner.compare_exchange(0, me, Acquire, Relaxed).is_ok()
        })?;
        Some(Receipt {
            pool: self,
            head,
            slot,
            n: 0,
        })
    }
}

/// A claimed receipt (see [`Pool::ledger_batch`]).
pub(crate) struct Receipt<'p> {
    pool: &'p Pool,
    head: &'p LedgerHead,
    slot: &'p BatchSlot,
    n: usize,
}

impl Receipt<'_> {
    /// Notes an object read (not yet taken); false when the receipt is full.
    #[inline]
    pub(crate) fn note(&mut self, off: u64) -> bool {
        let Some(k) = self.slot.keys.get(self.n) else {
            return false;
        };
        k.store(off, Relaxed);
        self.n += 1;
        true
    }

    /// The receive is about to commit: the run at position `from` of the pipe
    /// object `pipe` (created at `born`), received by the owner of the receive side
    /// (`user` `None`) or by the shared-side claimer of user entry `user`. From this
    /// store on, a replay asks the pipe whether the receive happened
    /// ([`crate::pipe::receipt_taken`]), and a pipe moving on past this dead
    /// receiver empties the receipt first ([`Pool::drop_receipts`]): the run is
    /// given back once or stays the pipe's, whatever instruction the receiver dies
    /// at.
    #[inline]
    pub(crate) fn intend(&mut self, pipe: u64, born: u64, from: u64, user: Option<u16>) {
        if self.n == 0 {
            return;
        }
        let s = self.slot;
        s.pipe.store(pipe, Relaxed);
        s.born.store(born, Relaxed);
        s.from.store(from, Relaxed);
        s.user.store(user.map_or(0, |u| u64::from(u) + 1), Relaxed);
        s.committed.store(1, Release);
    }

    /// The receive committed: the noted objects are this process's. Marked with one
    /// store (unless [`Receipt::intend`] marked it before), then counted in the
    /// tables one by one (each key cleared first: a death in between leaks that one
    /// reference).
    #[inline]
    pub(crate) fn commit(&mut self) {
        if self.n == 0 {
            return;
        }
        let s = self.slot;
        if s.committed.load(Relaxed) == 0 {
            s.pipe.store(0, Relaxed);
            s.committed.store(1, Release);
        }
        for k in &s.keys[..self.n] {
            let off = k.swap(0, Relaxed);
            self.pool.ledger_add_in(self.head, off);
        }
        s.committed.store(0, Release);
        self.n = 0;
    }
}

impl Drop for Receipt<'_> {
    fn drop(&mut self) {
        // Noted and never committed (the receive did not happen): the pipe's still.
        for k in &self.slot.keys[..self.n] {
            k.store(0, Relaxed);
        }
        self.slot.owner.store(0, Release);
    }
}
