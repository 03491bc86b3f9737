//! Large blocks: boundary tags, size bins, best fit, immediate coalescing.
//!
//! Block at offset `b` (16-aligned): `word(b) = size | flags` ([`B_ALLOC`],
//! [`B_SLAB`]), `word(b + 8)` = size of the previous block; a free block's payload
//! holds its bin links `next` at `b + 16` and `prev` at `b + 24`. Payload of an
//! allocated block starts at `b + 16`.
//!
//! # Crash contract
//! The chain of block headers from `arena_start` to `arena_end` is the truth. Every
//! split writes the new inner header *before* shrinking the outer one, and every
//! merge grows the surviving header in one store, so at every instant the headers
//! tile the arena. Bin links, `prev_size` words and the large stats are derived:
//! `large_dirty` is set during each operation and a lock holder that finds it set
//! (the previous holder died inside an operation) rebuilds them from the tiling.

use crate::class::CLASS_SIZES;
use crate::error::{AllocError, FreeError};
use crate::heap::{Heap, Offset};
use crate::layout::*;
use crate::lock::LockState;
use crate::platform::Platform;
use crate::stats::{ClassStats, Stats};
use std::alloc::Layout;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

mod check;
#[cfg(test)]
mod tests;

const CORRUPT: AllocError = AllocError::Corrupt("large-block heap structure is inconsistent");

/// Bin of a free block of `size` bytes.
fn bin_of(size: u64) -> usize {
    if size < 2048 {
        return (size / 32) as usize;
    }
    let fl = 63 - size.leading_zeros() as usize;
    let sl = ((size >> (fl - 3)) & 7) as usize;
    (64 + (fl - 11) * 8 + sl).min(NBINS - 1)
}

/// The large heap with its lock held. Dropping it finishes the operation.
pub(crate) struct Large<'h, P: Platform> {
    heap: &'h Heap<P>,
}

impl<P: Platform> Drop for Large<'_, P> {
    fn drop(&mut self) {
        let h = self.heap.header();
        h.large_dirty.store(0, std::sync::atomic::Ordering::Release);
        // SAFETY: `Large` exists only while this thread holds the lock.
        unsafe { h.large_lock.unlock::<P>() };
    }
}

impl<P: Platform> Heap<P> {
    /// Locks the large heap, rebuilding its index if the last holder died mid-way.
    pub(crate) fn large(&self) -> Result<Large<'_, P>, AllocError> {
        let h = self.header();
        let state = h
            .large_lock
            .lock_within::<P>(Some(LOCK_PATIENCE))
            .map_err(|_| AllocError::LockTimeout)?;
        if let Err(e) = self.catch_up() {
            // The dirty mark stays as found: the next holder that can map the
            // arena rebuilds what a dead holder left.
            // SAFETY: locked just above by this thread.
            unsafe { h.large_lock.unlock::<P>() };
            return Err(e);
        }
        let g = Large { heap: self };
        if state == LockState::Recovered || h.large_dirty.load(Relaxed) != 0 {
            h.large_dirty.store(1, Relaxed);
            g.rebuild()?;
        }
        h.large_dirty.store(1, Relaxed);
        Ok(g)
    }

    /// Lays out the arena as one free block.
    pub(crate) fn large_init(&self) {
        let g = Large { heap: self };
        let size = self.end() - self.arena_start;
        g.set(self.arena_start, size);
        g.set(self.arena_start + 8, 0);
        g.insert(self.arena_start, size).expect("fresh arena");
        self.header().last_size.store(size, Relaxed);
        std::mem::forget(g); // the lock was never taken
    }

    pub(crate) fn large_alloc(&self, layout: Layout) -> Result<Offset, AllocError> {
        if layout.align() > 64 {
            return Err(AllocError::Unsupported(layout.align()));
        }
        let size = layout.size().max(16) as u64;
        let needed = size
            .checked_next_multiple_of(16)
            .and_then(|s| s.checked_add(BLOCK_HDR));
        let exhausted = AllocError::Exhausted {
            size: layout.size(),
            align: layout.align(),
        };
        let needed = needed.ok_or(exhausted)?;
        let g = self.large()?;
        let b = g
            .alloc_or_grow(needed, layout.align() as u64, false)?
            .ok_or(exhausted)?;
        let h = self.header();
        let got = g.size(b)?;
        h.large_user.store(
            h.large_user.load(Relaxed).wrapping_add(got - BLOCK_HDR),
            Relaxed,
        );
        h.large_count
            .store(h.large_count.load(Relaxed).wrapping_add(1), Relaxed);
        Ok(Offset::new(b + BLOCK_HDR).expect("b >= arena_start"))
    }

    /// Takes a slab for `class` from the large heap. For a cache slot other than the
    /// shared one (`log`), the carve is logged in the slot (`carving`, `carve_kept`)
    /// before the lock is let go, the slab named in `slab_pending` until then: a
    /// death at any instruction leaves the slab either logged (the slot's reclaimer
    /// finishes the carve) or pending, unlogged or without its magic (the next lock
    /// holder's rebuild gives it back).
    pub(crate) fn large_alloc_slab(
        &self,
        class: usize,
        log: Option<u32>,
    ) -> Result<u64, AllocError> {
        let g = self.large()?;
        let b = g
            .alloc_or_grow(SLAB_SIZE as u64, SLAB_SIZE as u64, true)?
            .ok_or(AllocError::Exhausted {
                size: SLAB_SIZE,
                align: SLAB_SIZE,
            })?;
        let h = self.header();
        h.slab_pending.store(b, Relaxed);
        g.set(b + 16, SLAB_MAGIC as u64 | (class as u64) << 32);
        h.slabs[class].store(h.slabs[class].load(Relaxed).wrapping_add(1), Relaxed);
        fail_point!("alloc.slab.taken");
        if let Some(slot) = log {
            let sl = self.slot(slot);
            sl.carve_kept.store(crate::small::nblocks(class), Relaxed);
            sl.carving
                .store(b | (class as u64 + 1), std::sync::atomic::Ordering::Release);
        }
        fail_point!("alloc.slab.logged");
        h.slab_pending.store(0, Relaxed);
        Ok(b)
    }

    /// Gives the slab at `b` (of `class`, every block free and in no list) back to
    /// the large heap; its magic word is cleared first, so a stale block offset into
    /// it no longer passes `check_block`.
    pub(crate) fn large_free_slab(&self, b: u64, class: usize) -> Result<(), AllocError> {
        let g = self.large()?;
        let v = g.valid(b)?;
        let size = v & !B_FLAGS;
        if v & B_FLAGS != B_ALLOC | B_SLAB
            || size != SLAB_SIZE as u64
            || g.get(b + 16)? != SLAB_MAGIC as u64 | (class as u64) << 32
        {
            return Err(CORRUPT);
        }
        g.set(b + 16, 0);
        g.free(b, size)?;
        let h = self.header();
        h.slabs[class].store(h.slabs[class].load(Relaxed).saturating_sub(1), Relaxed);
        Ok(())
    }

    pub(crate) fn large_free(&self, off: Offset, layout: Layout) -> Result<(), FreeError> {
        let invalid = FreeError::Invalid {
            offset: off.get(),
            size: layout.size(),
        };
        let b = off.get().checked_sub(BLOCK_HDR).ok_or(invalid)?;
        let need = (layout.size().max(16) as u64).next_multiple_of(16) + BLOCK_HDR;
        let g = self.large().map_err(|e| match e {
            AllocError::LockTimeout => FreeError::LockTimeout,
            _ => FreeError::Corrupt("large-block heap is corrupt"),
        })?;
        let v = g.valid(b).map_err(|_| invalid)?;
        let size = v & !B_FLAGS;
        if v & B_FLAGS != B_ALLOC || size < need || size >= need + MIN_BLOCK {
            return Err(invalid);
        }
        g.free(b, size)
            .map_err(|_| FreeError::Corrupt("large-block heap is corrupt"))?;
        let h = self.header();
        h.large_user.store(
            h.large_user.load(Relaxed).saturating_sub(size - BLOCK_HDR),
            Relaxed,
        );
        h.large_count
            .store(h.large_count.load(Relaxed).saturating_sub(1), Relaxed);
        Ok(())
    }

    /// The payload bytes of the allocated large block whose payload starts at `off`
    /// (0 if there is none), read without the lock: a size as `stats` counts it.
    pub(crate) fn large_accounted(&self, off: Offset) -> u64 {
        let g = Large { heap: self };
        let v = off
            .get()
            .checked_sub(BLOCK_HDR)
            .and_then(|b| g.valid(b).ok())
            .filter(|v| v & B_FLAGS == B_ALLOC)
            .map_or(0, |v| (v & !B_FLAGS) - BLOCK_HDR);
        std::mem::forget(g); // the lock was never taken
        v
    }

    /// A snapshot of the heap's statistics (takes the large-heap lock briefly).
    pub fn stats(&self) -> Stats {
        self.stats_with(true)
    }

    /// As [`Heap::stats`] without taking any lock or writing anything (for a
    /// read-only look at a pool other processes use): `largest_free` is 0.
    pub fn stats_unlocked(&self) -> Stats {
        self.stats_with(false)
    }

    fn stats_with(&self, locked: bool) -> Stats {
        let h = self.header();
        let mut classes = Vec::with_capacity(CLASS_SIZES.len());
        let mut small_in_use = 0u64;
        let mut small_free = 0u64;
        for (c, &cs) in CLASS_SIZES.iter().enumerate() {
            let (mut a, mut f) = (0u64, 0u64);
            for s in 0..self.nslots {
                let l = &self.slot(s).classes[c];
                a = a.wrapping_add(l.allocs.load(Relaxed));
                f = f.wrapping_add(l.frees.load(Relaxed));
            }
            // Counters live in shared memory: saturate rather than trust them.
            let slabs = h.slabs[c].load(Relaxed);
            let capacity = slabs.saturating_mul(crate::small::nblocks(c));
            let in_use = a.wrapping_sub(f).min(capacity);
            small_in_use = small_in_use.saturating_add(in_use.saturating_mul(cs as u64));
            small_free = small_free.saturating_add((capacity - in_use).saturating_mul(cs as u64));
            classes.push(ClassStats {
                size: cs,
                in_use,
                free: capacity - in_use,
                slabs,
            });
        }
        let largest_free = if locked {
            self.large().map(|g| g.largest_free()).unwrap_or(0)
        } else {
            0
        };
        let arena = self.arena_len();
        let large_used = h.large_used.load(Relaxed);
        let large_in_use = h.large_user.load(Relaxed);
        Stats {
            total: self.len(),
            arena,
            in_use: small_in_use.saturating_add(large_in_use),
            bookkeeping: 0,
            free: arena.saturating_sub(large_used).saturating_add(small_free),
            high_water: h.high_water.load(Relaxed),
            largest_free,
            small_in_use,
            large_in_use,
            large_blocks: h.large_count.load(Relaxed),
            slabs: h
                .slabs
                .iter()
                .fold(0u64, |a, s| a.saturating_add(s.load(Relaxed))),
            arena_used: large_used,
            leaked: h.leaked.load(Relaxed),
            classes,
        }
    }
}

impl<P: Platform> Large<'_, P> {
    fn w(&self, off: u64) -> Result<&AtomicU64, AllocError> {
        self.heap.word64(off).ok_or(CORRUPT)
    }
    fn set(&self, off: u64, v: u64) {
        if let Some(w) = self.heap.word64(off) {
            w.store(v, Relaxed);
        }
    }
    fn get(&self, off: u64) -> Result<u64, AllocError> {
        Ok(self.w(off)?.load(Relaxed))
    }

    /// The header word of the block at `b`, after checking that `b` can start a
    /// block and that its size keeps it inside the arena.
    fn valid(&self, b: u64) -> Result<u64, AllocError> {
        let (start, end) = (self.heap.arena_start, self.heap.end());
        if b < start || b % 16 != 0 || b.checked_add(MIN_BLOCK).is_none_or(|e| e > end) {
            return Err(CORRUPT);
        }
        let v = self.get(b)?;
        let size = v & !B_FLAGS;
        if size < MIN_BLOCK || size > end - b {
            return Err(CORRUPT);
        }
        Ok(v)
    }

    fn size(&self, b: u64) -> Result<u64, AllocError> {
        Ok(self.valid(b)? & !B_FLAGS)
    }

    fn insert(&self, b: u64, size: u64) -> Result<(), AllocError> {
        let h = self.heap.header();
        let bin = bin_of(size);
        let head = h.bins[bin].load(Relaxed);
        self.set(b + 16, head);
        self.set(b + 24, 0);
        if head != 0 {
            self.valid(head)?;
            self.set(head + 24, b);
        }
        h.bins[bin].store(b, Relaxed);
        h.bitmap[bin / 64].fetch_or(1 << (bin % 64), Relaxed);
        Ok(())
    }

    fn remove(&self, b: u64, size: u64) -> Result<(), AllocError> {
        let h = self.heap.header();
        let bin = bin_of(size);
        let (next, prev) = (self.get(b + 16)?, self.get(b + 24)?);
        if prev != 0 {
            self.valid(prev)?;
            self.set(prev + 16, next);
        } else {
            if h.bins[bin].load(Relaxed) != b {
                return Err(CORRUPT);
            }
            h.bins[bin].store(next, Relaxed);
            if next == 0 {
                h.bitmap[bin / 64].fetch_and(!(1 << (bin % 64)), Relaxed);
            }
        }
        if next != 0 {
            self.valid(next)?;
            self.set(next + 24, prev);
        }
        Ok(())
    }

    /// Leading padding for an allocation of `needed` bytes out of block `(b, size)`,
    /// or `None` if it does not fit. `slab`: align the block start; otherwise the
    /// payload (`b + 16`).
    fn fit(b: u64, size: u64, needed: u64, align: u64, slab: bool) -> Option<u64> {
        let mut front = 0;
        if align > 16 || slab {
            let x = if slab { b } else { b + BLOCK_HDR };
            front = x.next_multiple_of(align) - x;
            if front != 0 && front < MIN_BLOCK {
                front += align;
            }
        }
        let rest = size.checked_sub(front.checked_add(needed)?)?;
        // A slab is exactly SLAB_SIZE: a tail too small to be a block of its own
        // would be absorbed into it (and the slab then never given back).
        (!slab || rest == 0 || rest >= MIN_BLOCK).then_some(front)
    }

    /// Best fit within the first bin holding a fitting block: returns `(b, size, front)`.
    fn find(
        &self,
        needed: u64,
        align: u64,
        slab: bool,
    ) -> Result<Option<(u64, u64, u64)>, AllocError> {
        let h = self.heap.header();
        let limit = (self.heap.end() - self.heap.arena_start) / MIN_BLOCK + 1;
        let mut steps = 0u64;
        let mut bin = bin_of(needed);
        while bin < NBINS {
            let word = h.bitmap[bin / 64].load(Relaxed) & (!0u64 << (bin % 64));
            if word == 0 {
                bin = (bin / 64 + 1) * 64;
                continue;
            }
            bin = (bin / 64) * 64 + word.trailing_zeros() as usize;
            if bin >= NBINS {
                break; // a bitmap bit past the last bin: only corruption sets it
            }
            let mut best: Option<(u64, u64, u64)> = None;
            let mut fitting = 0;
            let mut b = h.bins[bin].load(Relaxed);
            while b != 0 && fitting < 32 {
                steps += 1;
                if steps > limit {
                    return Err(CORRUPT);
                }
                let v = self.valid(b)?;
                if v & B_ALLOC != 0 {
                    return Err(CORRUPT);
                }
                let size = v & !B_FLAGS;
                if let Some(front) = Self::fit(b, size, needed, align, slab) {
                    fitting += 1;
                    if best.is_none_or(|(_, s, _)| size < s) {
                        best = Some((b, size, front));
                        if size == needed + front {
                            break;
                        }
                    }
                }
                b = self.get(b + 16)?;
            }
            if best.is_some() {
                return Ok(best);
            }
            bin += 1;
        }
        Ok(None)
    }

    /// Allocates a block of `needed` bytes (header included); returns its start.
    fn alloc(&self, needed: u64, align: u64, slab: bool) -> Result<Option<u64>, AllocError> {
        let Some((mut b, mut size, front)) = self.find(needed, align, slab)? else {
            return Ok(None);
        };
        self.remove(b, size)?;
        // Torn: the block is in no bin and not yet marked allocated.
        fail_point!("alloc.large.unlinked");
        if front > 0 {
            // Inner header first, then shrink the outer block: always a tiling.
            self.set(b + front, size - front);
            self.set(b + front + 8, front);
            self.set(b, front);
            self.insert(b, front)?;
            b += front;
            size -= front;
        }
        let flags = B_ALLOC | if slab { B_SLAB } else { 0 };
        let rest = size - needed;
        if rest >= MIN_BLOCK {
            let r = b + needed;
            self.set(r, rest);
            self.set(r + 8, needed);
            self.set(b, needed | flags);
            self.insert(r, rest)?;
            self.fix_prev_size(r, rest);
            size = needed;
        } else {
            self.set(b, size | flags);
            if front > 0 {
                // The block after now follows the inner block, not the old whole one
                // (a stale previous-size field stops a later free from coalescing).
                self.fix_prev_size(b, size);
            }
        }
        let h = self.heap.header();
        let used = h.large_used.load(Relaxed).wrapping_add(size);
        h.large_used.store(used, Relaxed);
        if used > h.high_water.load(Relaxed) {
            h.high_water.store(used, Relaxed);
        }
        Ok(Some(b))
    }

    fn fix_prev_size(&self, b: u64, size: u64) {
        let next = b + size;
        if next < self.heap.end() {
            self.set(next + 8, size);
        } else {
            self.heap.header().last_size.store(size, Relaxed);
        }
    }

    /// As [`alloc`](Self::alloc), growing the arena when no free block fits and
    /// the heap may grow.
    fn alloc_or_grow(
        &self,
        needed: u64,
        align: u64,
        slab: bool,
    ) -> Result<Option<u64>, AllocError> {
        if let Some(b) = self.alloc(needed, align, slab)? {
            return Ok(Some(b));
        }
        if !self.grow(needed, align)? {
            return Ok(None);
        }
        self.alloc(needed, align, slab)
    }

    /// Grows the arena so that one free block holds `needed` bytes at `align`:
    /// by half its size at least (a few growths take a pool from its first size to
    /// its maximum), capped by the maximum. `false`: the heap cannot grow that far.
    ///
    /// Crash order: the backing store is extended and the new part written as one
    /// free block past the arena's end, invisible to every walk of the tiling;
    /// storing `arena_end` (Release) commits it (a holder killed before leaves the
    /// tiling as it was, the store merely longer). Merging it with a free last
    /// block and binning it come after, under the dirty mark: a holder killed
    /// there leaves two free blocks side by side, which the rebuild merges.
    fn grow(&self, needed: u64, align: u64) -> Result<bool, AllocError> {
        let heap = self.heap;
        if !heap.is_growable() {
            return Ok(false);
        }
        let h = heap.header();
        let old = heap.end();
        if h.arena_end.load(Relaxed) != old {
            return Err(CORRUPT); // caught up when locked; only the holder grows
        }
        let cap = heap.max_len() & !(4096 - 1);
        // The padding before an aligned block (at most align + 16), and room after
        // it for a tail block (a slab takes no tail too small to be one: `fit`).
        let slack = if align > 16 { align + 2 * MIN_BLOCK } else { 0 };
        let Some(want) = old.checked_add(needed).and_then(|w| w.checked_add(slack)) else {
            return Ok(false);
        };
        let least = want.next_multiple_of(SLAB_SIZE as u64).min(cap);
        if least < want || least <= old {
            return Ok(false);
        }
        let step = ((old - heap.arena_start) / 2).max(1 << 20);
        let mut new = least
            .max(old.saturating_add(step).next_multiple_of(SLAB_SIZE as u64))
            .min(cap);
        if let Err(e) = heap.extend_to(new) {
            // Short of room for a whole step, take what the request needs.
            if new == least {
                return Err(e);
            }
            new = least;
            heap.extend_to(new)?;
        }
        let tail = h.last_size.load(Relaxed);
        self.set(old, new - old);
        self.set(old + 8, tail);
        fail_point!("alloc.grow.written");
        // SYNC POINT: the commit. Release pairs with the Acquire of every process
        // catching up (`Heap::reach`): the backing store and the block header are
        // there before anyone can walk to them.
        h.arena_end.store(new, std::sync::atomic::Ordering::Release);
        fail_point!("alloc.grow.committed");
        let last = old.checked_sub(tail).ok_or(CORRUPT)?;
        let v = self.valid(last)?;
        if v & !B_FLAGS != tail {
            return Err(CORRUPT);
        }
        if v & B_ALLOC == 0 {
            self.remove(last, tail)?;
            let merged = tail + (new - old);
            self.set(last, merged);
            self.insert(last, merged)?;
            h.last_size.store(merged, Relaxed);
        } else {
            self.insert(old, new - old)?;
            h.last_size.store(new - old, Relaxed);
        }
        fail_point!("alloc.grow.binned");
        Ok(true)
    }

    /// Frees the allocated block `(b, size)` and merges it with free neighbours.
    fn free(&self, mut b: u64, mut size: u64) -> Result<(), AllocError> {
        self.set(b, size);
        let h = self.heap.header();
        h.large_used
            .store(h.large_used.load(Relaxed).saturating_sub(size), Relaxed);
        let next = b + size;
        if next < self.heap.end() {
            let v = self.valid(next)?;
            if v & B_ALLOC == 0 {
                let ns = v & !B_FLAGS;
                self.remove(next, ns)?;
                size += ns;
                self.set(b, size);
            }
        }
        if b > self.heap.arena_start {
            let ps = self.get(b + 8)?;
            if let Some(p) = b.checked_sub(ps) {
                if ps >= MIN_BLOCK && p >= self.heap.arena_start && self.get(p)? == ps {
                    // `get(p) == ps` also says the previous block is free (no flags).
                    self.remove(p, ps)?;
                    size += ps;
                    b = p;
                    self.set(b, size);
                }
            }
        }
        self.insert(b, size)?;
        self.fix_prev_size(b, size);
        Ok(())
    }

    /// Rebuilds bins, `prev_size` words and stats from the block headers.
    fn rebuild(&self) -> Result<(), AllocError> {
        let h = self.heap.header();
        for w in h.bins.iter().chain(h.bitmap.iter()) {
            w.store(0, Relaxed);
        }
        // Slabs the holder that died was taking or giving back go back first (so
        // the pass below merges them with free neighbours).
        let pending = h.slab_pending.swap(0, Relaxed);
        let mut slabs = [0u64; crate::class::NUM_CLASSES];
        let mut b = self.heap.arena_start;
        while b < self.heap.end() {
            let v = self.valid(b)?;
            if v & B_SLAB != 0 && v & B_ALLOC != 0 {
                if self.orphan_slab(b, pending)? {
                    self.set(b + 16, 0);
                    self.set(b, v & !B_FLAGS);
                } else if let Some(class) = self.slab_class(b)? {
                    slabs[class] += 1;
                }
            }
            b += v & !B_FLAGS;
        }
        let (mut used, mut user, mut count) = (0u64, 0u64, 0u64);
        let mut b = self.heap.arena_start;
        let mut prev = 0;
        while b < self.heap.end() {
            let v = self.valid(b)?;
            let mut size = v & !B_FLAGS;
            self.set(b + 8, prev);
            if v & B_ALLOC == 0 {
                // Merge a run of free blocks (a free interrupted mid-merge).
                while b + size < self.heap.end() {
                    let nv = self.valid(b + size)?;
                    if nv & B_ALLOC != 0 {
                        break;
                    }
                    size += nv & !B_FLAGS;
                    self.set(b, size);
                }
                self.insert(b, size)?;
            } else {
                used += size;
                if v & B_SLAB == 0 {
                    user += size - BLOCK_HDR;
                    count += 1;
                }
            }
            prev = size;
            b += size;
        }
        if b != self.heap.end() {
            return Err(CORRUPT);
        }
        h.last_size.store(prev, Relaxed);
        h.large_used.store(used, Relaxed);
        h.large_user.store(user, Relaxed);
        h.large_count.store(count, Relaxed);
        for (w, n) in h.slabs.iter().zip(slabs) {
            w.store(n, Relaxed);
        }
        Ok(())
    }

    /// The class of the slab at `b` (an allocated slab tile), by its magic word.
    fn slab_class(&self, b: u64) -> Result<Option<usize>, AllocError> {
        let meta = self.get(b + 16)?;
        let class = (meta >> 32) as usize;
        Ok((meta as u32 == SLAB_MAGIC && class < crate::class::NUM_CLASSES).then_some(class))
    }

    /// Whether the allocated slab tile at `b` is one the last holder died taking or
    /// giving back: without its magic (not yet or no longer a slab), or the pending
    /// one that no slot's carve log names.
    fn orphan_slab(&self, b: u64, pending: u64) -> Result<bool, AllocError> {
        let Some(class) = self.slab_class(b)? else {
            return Ok(true);
        };
        if b != pending {
            return Ok(false);
        }
        let named = b | (class as u64 + 1);
        let logged = (1..self.heap.nslots).any(|s| {
            self.heap
                .slot(s)
                .carving
                .load(std::sync::atomic::Ordering::Acquire)
                == named
        });
        Ok(!logged)
    }

    fn largest_free(&self) -> u64 {
        let h = self.heap.header();
        for bin in (0..NBINS).rev() {
            if h.bitmap[bin / 64].load(Relaxed) & (1 << (bin % 64)) == 0 {
                continue;
            }
            let mut best = 0;
            let mut b = h.bins[bin].load(Relaxed);
            let mut steps = 0;
            while b != 0 && steps < 4096 {
                let Ok(v) = self.valid(b) else { break };
                best = best.max((v & !B_FLAGS).saturating_sub(BLOCK_HDR));
                b = self.get(b + 16).unwrap_or(0);
                steps += 1;
            }
            if best > 0 {
                return best;
            }
        }
        0
    }
}
