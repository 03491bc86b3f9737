//! Small blocks: per-thread slot lists, the depot of batches, slab carving.
//!
//! # Crash contract
//! * A slot's list word `(count << 32) | head` has one writer. Popping writes only
//!   the list word; pushing writes the block's link word, then the list word. A
//!   process killed between the two leaves the list as before: the block is leaked.
//! * Batches move between a slot and the depot through *claimed* entries. An entry
//!   is `0` (empty), `batch` (published) or `batch | claim(slot)` (in transfer). The
//!   CAS that claims an entry records who claimed it, and the slot's list word is
//!   changed only while the claim stands, so after the claimer's death
//!   [`Heap::resolve_claims`] can tell where the batch is: if the slot's list word
//!   equals the batch, the slot has it (the entry is cleared), otherwise the entry
//!   does (it is published again). Nothing is lost or duplicated.
//! * Carving a slab: the slab is taken from the large heap first (one block), then
//!   chained privately, then installed with one store. Killed in between: the slab
//!   is leaked.

use crate::class::CLASS_SIZES;
use crate::depot::{self, CLAIM_SHIFT, LEN_MASK};
use crate::error::{AllocError, FreeError};
use crate::heap::{Heap, Offset};
use crate::layout::*;
use crate::platform::Platform;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// Blocks in one slab of each class (a table: no division on the fast path).
const NBLOCKS: [u64; crate::class::NUM_CLASSES] = {
    let mut t = [0u64; crate::class::NUM_CLASSES];
    let mut i = 0;
    while i < t.len() {
        t[i] = (SLAB_SIZE as u64 - SLAB_FIRST) / CLASS_SIZES[i] as u64;
        i += 1;
    }
    t
};

/// Blocks in one slab of `class`.
#[inline]
pub(crate) fn nblocks(class: usize) -> u64 {
    NBLOCKS[class]
}

/// What the fast paths need of a class, in one 16-byte row (one bounds check, one
/// cache line for four classes).
#[derive(Clone, Copy)]
#[repr(C, align(16))]
struct Row {
    /// `ceil(2^32 / size)`: `(rel * inv) >> 32 == rel / size` for `rel < 2^16`.
    inv: u32,
    size: u32,
    /// `nblocks * size`: a block's offset from the slab's first is below it.
    span: u32,
    /// A slot list holding this many blocks is published to the depot as one batch.
    flush_at: u32,
}

static ROWS: [Row; crate::class::NUM_CLASSES] = {
    let mut t = [Row {
        inv: 0,
        size: 0,
        span: 0,
        flush_at: 0,
    }; crate::class::NUM_CLASSES];
    let mut i = 0;
    while i < t.len() {
        let size = CLASS_SIZES[i] as u64;
        t[i] = Row {
            inv: (1u64 << 32).div_ceil(size) as u32,
            size: size as u32,
            span: (NBLOCKS[i] * size) as u32,
            flush_at: (2 * BATCH[i]) as u32,
        };
        i += 1;
    }
    t
};

/// Blocks in one depot batch of each class: about 4 KiB of blocks, 8 to 256.
const BATCH: [u64; crate::class::NUM_CLASSES] = {
    let mut t = [0u64; crate::class::NUM_CLASSES];
    let mut i = 0;
    while i < t.len() {
        let b = 4096 / CLASS_SIZES[i] as u64;
        t[i] = if b < 8 {
            8
        } else if b > 256 {
            256
        } else {
            b
        };
        i += 1;
    }
    t
};

/// The slab a block lies in.
#[inline]
fn slab_of(off: u64) -> u64 {
    off & !(SLAB_SIZE as u64 - 1)
}

#[inline]
fn unit(off: u64) -> u32 {
    (off >> 4) as u32
}

impl<P: Platform> Heap<P> {
    /// Whether `off` is the start of a block of `class` inside a slab of that class.
    ///
    /// One range check proves the whole slab lies in the arena; the slab's block
    /// header and magic word (one cache line) then say it is a slab of `class`.
    #[inline]
    pub(crate) fn check_block(&self, class: usize, off: u64) -> bool {
        self.check_block_mapped(class, off) || self.check_block_reaching(class, off)
    }

    /// [`Heap::check_block`] without catching up with a growth: also `false` when the
    /// slab lies past this process's mapping. The fast paths' check: no call in it,
    /// so they need no saved registers; their cold paths check again in full.
    #[inline(always)]
    fn check_block_mapped(&self, class: usize, off: u64) -> bool {
        let slab = off & !(SLAB_SIZE as u64 - 1);
        // `attach`/`format` guarantee end - arena_start >= 2 * SLAB_SIZE.
        if slab.wrapping_sub(self.arena_start) > self.end() - SLAB_SIZE as u64 - self.arena_start {
            return false;
        }
        self.check_slab_block(class, slab, off)
    }

    #[cold]
    #[inline(never)]
    fn check_block_reaching(&self, class: usize, off: u64) -> bool {
        let slab = off & !(SLAB_SIZE as u64 - 1);
        slab >= self.arena_start
            && slab
                .checked_add(SLAB_SIZE as u64)
                .is_some_and(|e| e <= self.end() || self.reach(e))
            && self.check_slab_block(class, slab, off)
    }

    /// The slab-side half of [`Heap::check_block`], for a `slab` proved mapped.
    #[inline(always)]
    fn check_slab_block(&self, class: usize, slab: u64, off: u64) -> bool {
        debug_assert!(
            slab >= self.arena_start && slab + SLAB_SIZE as u64 <= self.end(),
            "slab {slab:#x}"
        );
        let row = &ROWS[class];
        // SAFETY: slab..slab + SLAB_SIZE lies inside the arena (the caller's check);
        // both words are 8-aligned (slab is 64 KiB aligned) and read atomically.
        let (hdr, meta) = unsafe {
            let p = self.base.as_ptr().add(slab as usize);
            (
                (*(p as *const AtomicU64)).load(Ordering::Relaxed),
                (*(p.add(16) as *const AtomicU64)).load(Ordering::Relaxed),
            )
        };
        let rel = off.wrapping_sub(slab + SLAB_FIRST);
        // Exact for rel < span < 2^16; a larger rel fails the span test anyway.
        let k = rel.wrapping_mul(u64::from(row.inv)) >> 32;
        (hdr & B_FLAGS == B_ALLOC | B_SLAB)
            & (meta == (SLAB_MAGIC as u64 | (class as u64) << 32))
            & (rel < u64::from(row.span))
            & (k * u64::from(row.size) == rel)
    }

    /// The link word of a block `check_block` accepted.
    #[inline]
    fn link(&self, off: u64) -> &AtomicU32 {
        debug_assert!(off >= self.arena_start && off + 16 <= self.end());
        // SAFETY: callers pass offsets accepted by `check_block`: inside a slab in
        // the arena, 16-aligned.
        unsafe { &*(self.base.as_ptr().add(off as usize) as *const AtomicU32) }
    }

    /// Pops a block from this slot's list of `class`: the fast path. Anything
    /// unusual (an empty list, a head past this process's mapping or not a block of
    /// the class) goes to one cold path, called last.
    #[inline]
    pub(crate) fn small_alloc(&self, slot: u32, class: usize) -> Result<Offset, AllocError> {
        let local = &self.slot(slot).classes[class];
        let l = local.list.load(Ordering::Relaxed);
        let (head, count) = (l as u32, (l >> 32) as u32);
        let off = u64::from(head) << 4;
        if count == 0 || !self.check_block_mapped(class, off) {
            return self.small_alloc_cold(slot, class);
        }
        Ok(self.pop(local, off, count))
    }

    /// Takes the head `off` (checked) off a list of `count > 0` blocks.
    #[inline(always)]
    fn pop(&self, local: &ClassLocal, off: u64, count: u32) -> Offset {
        // The link itself is validated when it is popped in turn.
        let next = if count > 1 {
            self.link(off).load(Ordering::Relaxed)
        } else {
            0
        };
        local.list.store(
            (u64::from(count - 1) << 32) | u64::from(next),
            Ordering::Relaxed,
        );
        local.allocs.store(
            local.allocs.load(Ordering::Relaxed).wrapping_add(1),
            Ordering::Relaxed,
        );
        Offset::in_arena(off)
    }

    #[cold]
    #[inline(never)]
    fn small_alloc_cold(&self, slot: u32, class: usize) -> Result<Offset, AllocError> {
        let local = &self.slot(slot).classes[class];
        let l = local.list.load(Ordering::Relaxed);
        let (head, count) = (l as u32, (l >> 32) as u32);
        if count == 0 {
            return self.small_alloc_slow(slot, class);
        }
        let off = u64::from(head) << 4;
        if !self.check_block(class, off) {
            return Err(self.drop_corrupt_list(slot, class));
        }
        Ok(self.pop(local, off, count))
    }

    /// [`Heap::give_back`] for `slot`, which the small paths are only called with
    /// by the thread that claimed it (or with slot 0, which callers exclude).
    #[cold]
    fn give_back_mine(&self, slot: u32) -> usize {
        // SAFETY: `small_alloc`'s callers pass the calling thread's slot.
        unsafe { self.give_back(slot) }
    }

    #[cold]
    fn small_alloc_slow(&self, slot: u32, class: usize) -> Result<Offset, AllocError> {
        if !self.refill(slot, class) {
            match self.carve(slot, class) {
                Ok(()) => {}
                // The pool ran short: empty slabs of every class go back to the arena
                // (and this class's free blocks in the depot come to this slot), then
                // one more try. Slot 0 (shared, under a lock) does not.
                Err(AllocError::Exhausted { .. }) if slot != 0 && self.give_back_mine(slot) > 0 => {
                    if self.slot(slot).classes[class].list.load(Ordering::Relaxed) >> 32 == 0 {
                        self.carve(slot, class)?;
                    }
                }
                Err(e) => return Err(e),
            }
        }
        self.small_alloc(slot, class)
    }

    #[cold]
    fn drop_corrupt_list(&self, slot: u32, class: usize) -> AllocError {
        // Forget the list (its blocks are leaked, not handed out twice).
        self.slot(slot).classes[class]
            .list
            .store(0, Ordering::Relaxed);
        AllocError::Corrupt("cache list names a block outside its slab class")
    }

    /// Pushes `off` on this slot's list of `class`: the fast path. A block past this
    /// process's mapping or not of the class, and a full list, go to one cold path.
    #[inline]
    pub(crate) fn small_free(
        &self,
        slot: u32,
        class: usize,
        off: Offset,
        size: usize,
    ) -> Result<(), FreeError> {
        let off = off.get();
        let local = &self.slot(slot).classes[class];
        let l = local.list.load(Ordering::Relaxed);
        if !self.check_block_mapped(class, off) || (l >> 32) as u32 >= ROWS[class].flush_at {
            return self.small_free_cold(slot, class, off, size);
        }
        self.push(local, l, off);
        Ok(())
    }

    /// Puts `off` (checked) at the head of a list whose word was `l`.
    #[inline(always)]
    fn push(&self, local: &ClassLocal, l: u64, off: u64) {
        let (head, count) = (l as u32, (l >> 32) as u32);
        self.link(off)
            .store(if count > 0 { head } else { 0 }, Ordering::Relaxed);
        local.list.store(
            (u64::from(count + 1) << 32) | u64::from(unit(off)),
            Ordering::Release,
        );
        local.frees.store(
            local.frees.load(Ordering::Relaxed).wrapping_add(1),
            Ordering::Relaxed,
        );
    }

    #[cold]
    #[inline(never)]
    fn small_free_cold(
        &self,
        slot: u32,
        class: usize,
        off: u64,
        size: usize,
    ) -> Result<(), FreeError> {
        if !self.check_block(class, off) {
            return Err(FreeError::Invalid { offset: off, size });
        }
        let local = &self.slot(slot).classes[class];
        let mut l = local.list.load(Ordering::Relaxed);
        if (l >> 32) as u32 >= ROWS[class].flush_at {
            l = self.free_overflow(slot, class, l)?;
        }
        self.push(local, l, off);
        Ok(())
    }

    #[cold]
    fn free_overflow(&self, slot: u32, class: usize, l: u64) -> Result<u64, FreeError> {
        if self.flush(slot, class) {
            return Ok(0);
        }
        if (l >> 32) >= LEN_MASK {
            // The depot has been full for 16M frees: keep the list bounded instead.
            self.header().leaked.fetch_add(1, Ordering::Relaxed);
            return Err(FreeError::Corrupt("depot full and cache list at its limit"));
        }
        Ok(l)
    }

    /// Moves a depot batch into the (empty) list of `slot`. `false` if none.
    fn refill(&self, slot: u32, class: usize) -> bool {
        depot::take::<0>(
            self.depot(class),
            &self.slot(slot).classes[class].list,
            slot,
        )
    }

    /// Publishes the whole list of `slot` as one depot batch. `false` if the depot
    /// is full (the list stays).
    pub(crate) fn flush(&self, slot: u32, class: usize) -> bool {
        depot::put::<0>(
            self.depot(class),
            &self.slot(slot).classes[class].list,
            slot,
        )
    }

    /// Publishes every list of `slot` (best effort).
    pub(crate) fn flush_slot(&self, slot: u32) {
        for c in 0..CLASS_SIZES.len() {
            self.flush(slot, c);
        }
    }

    /// Settles the depot entries a dead (or lock-recovered) `slot` had claimed.
    pub(crate) fn resolve_claims(&self, slot: u32) {
        for c in 0..CLASS_SIZES.len() {
            depot::settle(self.depot(c), &self.slot(slot).classes[c].list, slot);
        }
    }

    /// Gives every slab whose blocks are all free back to the large heap (offline:
    /// see the safety contract), so that space a size class no longer uses serves
    /// other sizes. Dead threads' cache slots are reclaimed first; a slab counts as
    /// empty when all its blocks are in free lists (the depot's batches and every
    /// cache slot's lists). Returns how many slabs went back.
    ///
    /// Crash safety: an affected list (a depot entry or a slot's list word) is
    /// emptied first (its blocks then belong to nobody), relinked without the empty
    /// slabs' blocks and stored again, and only then are those slabs freed: a death
    /// anywhere leaks blocks, never hands one out twice.
    ///
    /// # Safety
    /// No other thread or process uses the heap meanwhile (`Pool::repair` holds the
    /// pool's repair lock exclusive, and its caller holds nothing).
    pub unsafe fn return_empty_slabs(&self) -> usize {
        self.reclaim_dead();
        let mut returned = 0;
        for class in 0..CLASS_SIZES.len() {
            returned += self.return_empty_slabs_of(class);
        }
        returned
    }

    /// Online, by the owner of `slot` when an allocation found the pool exhausted:
    /// reclaims dead processes' cache slots, then takes every published depot batch of each class (a CAS to 0: from there the
    /// batch is this thread's alone; a death leaks it) and the lists of unclaimed
    /// slots (each claimed for the moment), and counts, over those and this slot's
    /// own lists, the free blocks of each slab; a slab all of whose
    /// blocks are in this thread's hands is empty for certain (every block of a slab
    /// is allocated, in one list or batch, or here), so it goes back to the large
    /// heap. The other blocks become this slot's list. Returns how many slabs went
    /// back.
    ///
    /// # Safety
    /// `slot` was claimed by the calling thread.
    #[cold]
    pub(crate) unsafe fn give_back(&self, slot: u32) -> usize {
        // Dead processes' slots first: their lists become unclaimed ones (or go to
        // the depot), which this walk takes.
        self.reclaim_dead();
        let mut returned = 0;
        for class in 0..CLASS_SIZES.len() {
            returned += self.give_back_class(slot, class);
        }
        returned
    }

    /// Bytes handed out, counted from the blocks themselves instead of the cache
    /// slots' counters: per class, the blocks of its slabs less those found free in
    /// every list (the depot's batches, every slot's list); plus the large blocks'
    /// payload. A process killed inside an allocation or a free skews the counters
    /// [`Stats::in_use`](crate::Stats) sums by one block each, not this. Exact only
    /// while nothing else allocates or frees (it reads lists others may be
    /// changing; it changes nothing). `None` when a list is malformed.
    pub fn census(&self) -> Option<u64> {
        let mut total = self.header().large_user.load(Ordering::Relaxed);
        let mut seen = std::collections::HashSet::new();
        for (class, &size) in CLASS_SIZES.iter().enumerate() {
            let mut free = Vec::new();
            if !self.free_in_lists(class, &mut seen, &mut free) {
                return None;
            }
            let blocks = self.header().slabs[class]
                .load(Ordering::Relaxed)
                .saturating_mul(nblocks(class));
            total += blocks.saturating_sub(free.len() as u64) * u64::from(size);
        }
        Some(total)
    }

    /// Appends to `out` the blocks of `class` in every free list (the depot's
    /// published batches, every slot's list; batches being moved are skipped);
    /// false when a list is malformed or lists a block twice.
    fn free_in_lists(
        &self,
        class: usize,
        seen: &mut std::collections::HashSet<u64>,
        out: &mut Vec<u64>,
    ) -> bool {
        let lists = self
            .depot(class)
            .iter()
            .chain((0..self.nslots).map(|s| &self.slot(s).classes[class].list));
        for word in lists {
            let e = word.load(Ordering::Acquire);
            if e != 0 && e >> CLAIM_SHIFT == 0 && !self.walk_chain(class, e, seen, out) {
                return false;
            }
        }
        true
    }

    /// Every block handed out and not given back: `(offset, size)`, the offset as
    /// the allocation returned it — small blocks (the blocks of each slab that no
    /// free list holds) and large ones (their payload). The ground a sweep stands
    /// on. Exact only while nothing else allocates or frees (as [`Heap::census`]);
    /// `None` when a list or the tiling is malformed.
    pub fn allocated_blocks(&self) -> Option<Vec<(u64, u64)>> {
        let mut free = std::collections::HashSet::new();
        for class in 0..CLASS_SIZES.len() {
            if !self.free_in_lists(class, &mut free, &mut Vec::new()) {
                return None;
            }
        }
        let mut out = Vec::new();
        for (b, size, class) in self.large_blocks()? {
            match class {
                Some(c) => {
                    let bs = u64::from(CLASS_SIZES[c]);
                    let first = b + SLAB_FIRST;
                    for k in 0..nblocks(c) {
                        let off = first + k * bs;
                        if !free.contains(&off) {
                            out.push((off, bs));
                        }
                    }
                }
                None => out.push((
                    b + crate::layout::BLOCK_HDR,
                    size - crate::layout::BLOCK_HDR,
                )),
            }
        }
        Some(out)
    }

    /// Appends the blocks of the chain `(len << 32) | head` of `class` to `out`;
    /// false (and `out` as it was) when a block is malformed or already in `seen`.
    fn walk_chain(
        &self,
        class: usize,
        e: u64,
        seen: &mut std::collections::HashSet<u64>,
        out: &mut Vec<u64>,
    ) -> bool {
        let at = out.len();
        let mut off = (e & 0xFFFF_FFFF) << 4;
        for _ in 0..((e >> 32) & LEN_MASK) {
            if !self.check_block(class, off) || !seen.insert(off) {
                out.truncate(at);
                return false;
            }
            out.push(off);
            off = u64::from(self.link(off).load(Ordering::Relaxed)) << 4;
        }
        true
    }

    /// The slabs all of whose blocks of `class` are among `blocks`.
    fn all_free_slabs<'b>(
        class: usize,
        blocks: impl Iterator<Item = &'b u64>,
    ) -> std::collections::HashSet<u64> {
        let mut per_slab: std::collections::HashMap<u64, u64> = Default::default();
        for b in blocks {
            *per_slab.entry(slab_of(*b)).or_default() += 1;
        }
        per_slab
            .into_iter()
            .filter(|&(_, n)| n == nblocks(class))
            .map(|(slab, _)| slab)
            .collect()
    }

    /// Links `keep` (blocks no one else holds) into one chain.
    fn relink(&self, keep: &[u64]) {
        for w in keep.windows(2) {
            self.link(w[0]).store(unit(w[1]), Ordering::Relaxed);
        }
    }

    /// Stores the chain `relink` made of `keep` in `word` (left 0 when empty).
    fn publish_chain(&self, word: &AtomicU64, keep: &[u64]) {
        if let Some(&first) = keep.first() {
            word.store(
                ((keep.len() as u64) << 32) | u64::from(unit(first)),
                Ordering::Release,
            );
        }
    }

    /// Frees each slab of `empty` (of `class`) to the large heap; how many went.
    fn free_slabs(&self, empty: std::collections::HashSet<u64>, class: usize) -> usize {
        empty
            .into_iter()
            .filter(|&slab| self.large_free_slab(slab, class).is_ok())
            .count()
    }

    fn give_back_class(&self, slot: u32, class: usize) -> usize {
        let list = &self.slot(slot).classes[class].list;
        let mut mine: Vec<u64> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        let mut walk = |e: u64, mine: &mut Vec<u64>| self.walk_chain(class, e, &mut seen, mine);
        // This slot's own list first (nobody else writes it), taken out of the list
        // word before anything is relinked (a death leaks, never hands out twice).
        let own = list.load(Ordering::Relaxed);
        if own >> 32 != 0 && !walk(own, &mut mine) {
            return 0; // malformed: left as it is
        }
        list.store(0, Ordering::Release);
        // The lists unclaimed slots kept (a thread that ended with the depot full):
        // each slot claimed for the moment, its list taken the same way.
        let me = P::process_token();
        for s in (1..self.nslots).filter(|&s| s != slot) {
            let owner = &self.slot(s).owner;
            if owner.load(Ordering::Relaxed) != 0
                || owner
                    .compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed)
                    .is_err()
            {
                continue;
            }
            let theirs = &self.slot(s).classes[class].list;
            let e = theirs.load(Ordering::Relaxed);
            if e >> 32 != 0 {
                theirs.store(0, Ordering::Release);
                if !walk(e, &mut mine) {
                    theirs.store(e, Ordering::Release);
                }
            }
            owner.store(0, Ordering::Release);
        }
        for entry in self.depot(class) {
            let e = entry.load(Ordering::Acquire);
            if e == 0 || e >> CLAIM_SHIFT != 0 {
                continue;
            }
            // SYNC POINT: the batch is ours alone from here (a death leaks it).
            if entry
                .compare_exchange(e, 0, Ordering::Acquire, Ordering::Relaxed)
                .is_err()
            {
                continue;
            }
            if !walk(e, &mut mine) {
                // Malformed: put it back untouched, and stop looking.
                let _ = entry.compare_exchange(0, e, Ordering::Release, Ordering::Relaxed);
                break;
            }
        }
        let empty = Self::all_free_slabs(class, mine.iter());
        let keep: Vec<u64> = mine
            .into_iter()
            .filter(|b| !empty.contains(&slab_of(*b)))
            .collect();
        self.relink(&keep);
        // Linked, not yet stored: the blocks are this thread's alone (a death leaks).
        fail_point!("alloc.give_back.relinked");
        self.publish_chain(list, &keep);
        self.free_slabs(empty, class)
    }

    fn return_empty_slabs_of(&self, class: usize) -> usize {
        // Every free list of the class: the depot's published batches and the slots'
        // lists, all `(len << 32) | head_unit` words.
        let lists = self
            .depot(class)
            .iter()
            .chain((1..self.nslots).map(|s| &self.slot(s).classes[class].list));
        let mut chains: Vec<(&AtomicU64, Vec<u64>)> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for word in lists {
            let e = word.load(Ordering::Acquire);
            if e == 0 || e >> CLAIM_SHIFT != 0 {
                continue;
            }
            let mut blocks = Vec::new();
            if !self.walk_chain(class, e, &mut seen, &mut blocks) {
                return 0; // a malformed list: the class is left alone
            }
            chains.push((word, blocks));
        }
        let empty = Self::all_free_slabs(class, chains.iter().flat_map(|(_, b)| b));
        if empty.is_empty() {
            return 0;
        }
        for (word, blocks) in chains {
            if !blocks.iter().any(|b| empty.contains(&slab_of(*b))) {
                continue;
            }
            // SYNC POINT: the list belongs to nobody from here (a death leaks it).
            word.store(0, Ordering::Release);
            fail_point!("alloc.slabs.unlisted");
            let keep: Vec<u64> = blocks
                .into_iter()
                .filter(|b| !empty.contains(&slab_of(*b)))
                .collect();
            self.relink(&keep);
            self.publish_chain(word, &keep);
        }
        self.free_slabs(empty, class)
    }

    /// Takes a new slab for `class` from the large heap, links all its blocks, keeps
    /// one batch in the (empty) list of `slot` and publishes the other batches to the
    /// depot, so other slots refill from this slab instead of carving their own.
    /// (A list's count bounds every walk, so a batch is just `(first, len)` of the
    /// chain; the link after its last block is never followed.)
    #[cold]
    ///
    /// Logged (slots other than the shared one): `carving` names the slab from
    /// before the large heap lets it go (see [`Heap::large_alloc_slab`]) and `carve_kept` says how many leading blocks are still the
    /// slot's alone; before each batch goes to the depot `carve_kept` drops to its
    /// start (a death between the two leaks that one batch, never hands it out twice),
    /// and after the rest is stored as the slot's list the log is cleared. A
    /// reclaimer of a dead slot finishes a logged carve ([`Heap::finish_carve`]).
    fn carve(&self, slot: u32, class: usize) -> Result<(), AllocError> {
        let log = slot != 0;
        // Logged in the slot (when `log`) before the large heap's lock is let go.
        let slab = self.large_alloc_slab(class, log.then_some(slot))?;
        let size = u64::from(CLASS_SIZES[class]);
        let n = nblocks(class);
        let first = slab + SLAB_FIRST;
        let sl = self.slot(slot);
        self.link_run(first, size, n)?;
        fail_point!("alloc.carve.linked");
        // Publish batches from the last one down; whatever the depot cannot take
        // stays contiguous with batch 0 and goes into the slot's list.
        let b = BATCH[class];
        let mut kept = n;
        let depot = self.depot(class);
        'publish: while kept > b {
            let start = (kept - 1) / b * b;
            let batch = ((kept - start) << 32) | u64::from(unit(first + start * size));
            if log {
                sl.carve_kept.store(start, Ordering::Release); // before it can be taken
            }
            for entry in depot {
                if entry.load(Ordering::Relaxed) == 0
                    && entry
                        .compare_exchange(0, batch, Ordering::Release, Ordering::Relaxed)
                        .is_ok()
                {
                    kept = start;
                    continue 'publish;
                }
            }
            if log {
                sl.carve_kept.store(kept, Ordering::Release); // not published after all
            }
            break;
        }
        sl.classes[class]
            .list
            .store((kept << 32) | u64::from(unit(first)), Ordering::Release);
        fail_point!("alloc.carve.listed");
        if log {
            sl.carving.store(0, Ordering::Release);
        }
        Ok(())
    }

    /// Links the `n` blocks of `size` bytes from `first` into one chain.
    fn link_run(&self, first: u64, size: u64, n: u64) -> Result<(), AllocError> {
        for k in 0..n {
            let off = first + k * size;
            let next = if k + 1 < n { unit(off + size) } else { 0 };
            self.word32(off)
                .ok_or(AllocError::Corrupt("slab outside region"))?
                .store(next, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Finishes the carve a dead `slot` (won by the caller) had logged: the blocks
    /// still its alone become its list (linked again: the death may have come while
    /// linking), unless that list was stored already; then the log is cleared.
    pub(crate) fn finish_carve(&self, slot: u32) {
        let sl = self.slot(slot);
        let c = sl.carving.load(Ordering::Acquire);
        if c == 0 {
            return;
        }
        // A death under the large heap's lock, right after logging: the rebuild
        // the next holder runs must see the log (or it would give the slab back);
        // be that holder before clearing it.
        drop(self.large());
        let (slab, class) = (c & !0xFFFF, (c & 0xFFFF) as usize);
        if class == 0 || class > CLASS_SIZES.len() {
            sl.carving.store(0, Ordering::Release); // not a log this build wrote
            return;
        }
        let class = class - 1;
        let (size, first) = (u64::from(CLASS_SIZES[class]), slab + SLAB_FIRST);
        let kept = sl.carve_kept.load(Ordering::Acquire).min(nblocks(class));
        let list = &sl.classes[class].list;
        let stored = (kept << 32) | u64::from(unit(first));
        // The carve runs on an empty list: one naming anything else is the stored
        // rest (taken from since? not by a dead slot) or nothing of ours.
        if kept > 0 && list.load(Ordering::Acquire) == 0 && self.link_run(first, size, kept).is_ok()
        {
            list.store(stored, Ordering::Release);
        }
        sl.carving.store(0, Ordering::Release);
    }
}
