//! The heap handle: format/attach, bounds-checked access, allocation entry points.

use crate::class::{class_for, CLASS_SIZES};
use crate::error::{AllocError, FormatError, FreeError, GrowError};
use crate::layout::*;
use crate::platform::Platform;
use crate::region::Region;
use std::alloc::Layout;
use std::marker::PhantomData;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU64 as LocalU64, Ordering};

/// The offset of a block from the region base. Never 0 (the header lives there).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Offset(u64);

impl Offset {
    /// The byte offset.
    #[inline]
    pub fn get(self) -> u64 {
        self.0
    }

    /// An offset from its byte value (`None` for 0). The value is not trusted: every
    /// use is bounds-checked against the heap.
    #[inline]
    pub fn new(v: u64) -> Option<Self> {
        (v != 0).then_some(Offset(v))
    }

    /// An offset the allocator has just proved to lie in the arena (so not 0).
    #[inline]
    pub(crate) fn in_arena(v: u64) -> Self {
        debug_assert!(v != 0);
        Offset(v)
    }
}

/// How a heap's region grows, supplied by whoever maps it (the allocator makes no
/// system calls): the region's address range is reserved up to
/// [`Growth::max`] from the start, and growing only maps more of it.
pub trait Grow: Send + Sync {
    /// Makes the backing store at least `len` bytes long, every byte of it with
    /// storage (so that no later store can fault on a full file system). Called
    /// by the one thread growing the heap, under its large-block lock.
    ///
    /// # Errors
    /// What the backing store said; the heap then stays as it was.
    fn extend(&self, len: u64) -> Result<(), GrowError>;

    /// Maps the first `len` bytes of the reserved range read-write in this process
    /// (those already mapped stay as they are). The backing store holds them:
    /// another process extended it before publishing the length.
    ///
    /// # Errors
    /// What the system said; nothing past the mapped part may be used then.
    fn map(&self, len: u64) -> Result<(), GrowError>;
}

/// What makes a heap growable: the length of the address range reserved at the
/// region's base, and how to map more of it.
pub struct Growth {
    /// Bytes reserved at the region's base (the heap never grows past them).
    pub max: u64,
    /// How to extend and map.
    pub grow: Box<dyn Grow>,
}

impl std::fmt::Debug for Growth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Growth").field("max", &self.max).finish()
    }
}

/// A handle on a heap formatted inside a [`Region`].
///
/// Every process builds its own over its own mapping. The geometry read from the
/// header is validated by [`Heap::attach`] and kept in the handle, so later bounds
/// checks never trust shared memory. A heap that grows ([`Growth`]) only ever
/// widens what this handle has mapped: a bounds check that fails takes a cold path
/// that reads the header's arena end, maps up to it and checks again.
/// Neither `Copy` nor `Clone`: a handle points into a mapping it does not own, so
/// whoever owns the mapping owns the one handle and lends it out by reference (a
/// copy could outlive the mapping).
pub struct Heap<P: Platform> {
    pub(crate) base: NonNull<u8>,
    pub(crate) arena_start: u64,
    /// End of the arena as mapped in this process (at most the header's).
    end: LocalU64,
    /// Bytes reserved at `base`; the arena never grows past them.
    max: u64,
    pub(crate) nslots: u32,
    grow: Option<Box<dyn Grow>>,
    _p: PhantomData<fn() -> P>,
}

impl<P: Platform> std::fmt::Debug for Heap<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Heap")
            .field("base", &self.base)
            .field("arena", &(self.arena_start..self.end()))
            .field("max", &self.max)
            .field("nslots", &self.nslots)
            .finish()
    }
}

// SAFETY: all shared state is reached through atomics in the region; the handle's own
// fields are immutable copies, but for the mapped end (an atomic) and the grower
// (`Send + Sync`).
unsafe impl<P: Platform> Send for Heap<P> {}
// SAFETY: as above.
unsafe impl<P: Platform> Sync for Heap<P> {}

impl<P: Platform> Heap<P> {
    /// Formats `region` as an empty heap and returns a handle on it.
    ///
    /// # Safety
    /// The region must satisfy [`Region::new`]'s contract, and no other process or
    /// thread may use it until this returns (formatting overwrites everything).
    ///
    /// # Errors
    /// [`FormatError::BadSize`] or [`FormatError::Misaligned`].
    pub unsafe fn format(region: Region) -> Result<Self, FormatError> {
        // SAFETY: forwarded.
        unsafe { Self::format_growable(region, None) }
    }

    /// As [`Heap::format`], for a heap that may grow to `growth.max` bytes.
    ///
    /// # Safety
    /// As [`Heap::format`]; with `growth`, the `growth.max` bytes at the region's
    /// base are reserved for it (nothing else is or will be mapped there).
    ///
    /// # Errors
    /// As [`Heap::format`]; `BadSize` also for a maximum below the region's length
    /// or beyond the supported one.
    pub unsafe fn format_growable(
        region: Region,
        growth: Option<Growth>,
    ) -> Result<Self, FormatError> {
        let len = region.len() as u64;
        check_geometry(region)?;
        let max = growth.as_ref().map_or(len, |g| g.max);
        if max < len || max > MAX_REGION {
            return Err(bad_size(max));
        }
        let nslots = nslots_for(len);
        let arena_start = arena_start_for(nslots);
        let arena_end = len & !15;
        if arena_end < arena_start + SLAB_SIZE as u64 * 2 {
            return Err(bad_size(len));
        }
        // SAFETY: the metadata area lies inside the region (arena_start < len) and
        // nobody else uses the region yet (caller's contract).
        unsafe { std::ptr::write_bytes(region.base().as_ptr(), 0, arena_start as usize) };
        let heap = Self::with_geometry(region, arena_start, arena_end, nslots, max, growth);
        let h = heap.header();
        h.version.store(ALLOC_VERSION, Ordering::Relaxed);
        h.nslots.store(nslots, Ordering::Relaxed);
        h.max_len.store(max, Ordering::Relaxed);
        h.arena_start.store(arena_start, Ordering::Relaxed);
        h.arena_end.store(arena_end, Ordering::Relaxed);
        h.fingerprint.store(layout_fingerprint(), Ordering::Relaxed);
        heap.large_init();
        // SYNC POINT: the magic is written last with Release; attach reads it with
        // Acquire, so a heap with a valid magic is fully formatted.
        h.magic.store(ALLOC_MAGIC, Ordering::Release);
        Ok(heap)
    }

    /// Attaches to a heap formatted (by this or another process) inside `region`,
    /// validating its header before trusting anything in it.
    ///
    /// # Safety
    /// The region must satisfy [`Region::new`]'s contract.
    ///
    /// # Errors
    /// [`FormatError::NotFormatted`], [`FormatError::Incompatible`] or
    /// [`FormatError::Corrupt`] for a region that is not a heap of this build.
    pub unsafe fn attach(region: Region) -> Result<Self, FormatError> {
        // SAFETY: forwarded.
        unsafe { Self::attach_growable(region, None) }
    }

    /// As [`Heap::attach`], mapping more of the reserved range as the heap grows.
    /// Without `growth` the handle uses what `region` covers and cannot follow a
    /// growth past it (its allocations then fail as corrupt): for a look at a heap
    /// only.
    ///
    /// # Safety
    /// As [`Heap::format_growable`].
    ///
    /// # Errors
    /// As [`Heap::attach`]; `Corrupt` also when `growth.max` is not the heap's
    /// maximum, or the arena reaches past what can be mapped.
    pub unsafe fn attach_growable(
        region: Region,
        growth: Option<Growth>,
    ) -> Result<Self, FormatError> {
        let len = region.len() as u64;
        check_geometry(region)?;
        // SAFETY: the region is at least MIN_REGION > size_of::<Header>() bytes,
        // 64-byte aligned, and Header consists of atomics only.
        let h = unsafe { &*(region.base().as_ptr() as *const Header) };
        let magic = h.magic.load(Ordering::Acquire);
        if magic != ALLOC_MAGIC {
            return Err(FormatError::NotFormatted(magic));
        }
        let (version, fp) = (
            h.version.load(Ordering::Relaxed),
            h.fingerprint.load(Ordering::Relaxed),
        );
        if version != ALLOC_VERSION || fp != layout_fingerprint() {
            return Err(FormatError::Incompatible {
                expected_version: ALLOC_VERSION,
                found_version: version,
                expected: layout_fingerprint(),
                found: fp,
            });
        }
        let max = h.max_len.load(Ordering::Relaxed);
        if max < len || max > MAX_REGION {
            return Err(FormatError::Corrupt(
                "the recorded maximum length is impossible for this region",
            ));
        }
        if growth.as_ref().is_some_and(|g| g.max != max) {
            return Err(FormatError::Corrupt(
                "the reserved range differs from the heap's maximum length",
            ));
        }
        let nslots = h.nslots.load(Ordering::Relaxed);
        if !(nslots_for(0)..=MAX_SLOTS).contains(&nslots) {
            return Err(FormatError::Corrupt("slot count out of range"));
        }
        let arena_start = h.arena_start.load(Ordering::Relaxed);
        let arena_end = h.arena_end.load(Ordering::Relaxed);
        if arena_start != arena_start_for(nslots)
            || arena_end % 16 != 0
            || arena_end > max
            || arena_end < arena_start + 2 * SLAB_SIZE as u64
        {
            return Err(FormatError::Corrupt("arena bounds are impossible"));
        }
        let can_grow = growth.is_some();
        let heap = Self::with_geometry(region, arena_start, len & !15, nslots, max, growth);
        if arena_end > len && !(can_grow && heap.reach(arena_end)) {
            return Err(FormatError::Corrupt(
                "the arena reaches past the region, and it cannot be mapped",
            ));
        }
        heap.end.store(arena_end, Ordering::Relaxed);
        Ok(heap)
    }

    /// The handle, with geometry already validated by the caller.
    fn with_geometry(
        region: Region,
        arena_start: u64,
        end: u64,
        nslots: u32,
        max: u64,
        grow: Option<Growth>,
    ) -> Self {
        Heap {
            base: region.base(),
            arena_start,
            end: LocalU64::new(end),
            max,
            nslots,
            grow: grow.map(|g| g.grow),
            _p: PhantomData,
        }
    }

    /// End of the arena as this process has mapped it.
    #[inline]
    pub(crate) fn end(&self) -> u64 {
        self.end.load(Ordering::Relaxed)
    }

    /// Whether `upto` is mapped here after catching up with a growth another
    /// process published: the cold path of every bounds check.
    #[cold]
    #[inline(never)]
    pub(crate) fn reach(&self, upto: u64) -> bool {
        let Some(grow) = &self.grow else {
            return false;
        };
        // SYNC POINT: Acquire pairs with the grower's Release store of `arena_end`,
        // made after the new part was backed and written.
        let shared = self.header().arena_end.load(Ordering::Acquire);
        if upto > shared || shared > self.max || shared % 16 != 0 {
            return false;
        }
        if grow.map(shared).is_err() {
            return false;
        }
        self.end.fetch_max(shared, Ordering::Relaxed);
        true
    }

    /// Catches this process's mapping up with the header's arena end (under the
    /// large lock, before walking or changing the tiling).
    pub(crate) fn catch_up(&self) -> Result<(), AllocError> {
        let shared = self.header().arena_end.load(Ordering::Acquire);
        let end = self.end();
        if shared < end {
            return Err(AllocError::Corrupt("the arena's end moved back"));
        }
        if shared > end && !self.reach(shared) {
            return Err(AllocError::Corrupt(
                "the arena grew past what this process can map",
            ));
        }
        Ok(())
    }

    /// Extends the arena from `old` to `new` bytes (under the large lock): the
    /// backing store first, then this process's mapping; the header is not
    /// touched (the caller publishes).
    pub(crate) fn extend_to(&self, new: u64) -> Result<(), AllocError> {
        let grow = self
            .grow
            .as_ref()
            .ok_or(AllocError::Corrupt("not growable"))?;
        let failed = |why| AllocError::GrowFailed { to: new, why };
        grow.extend(new).map_err(failed)?;
        fail_point!("alloc.grow.extended");
        grow.map(new).map_err(failed)?;
        self.end.fetch_max(new, Ordering::Relaxed);
        Ok(())
    }

    /// Bytes reserved for the region: what it may grow to (its length, for a heap
    /// that does not grow).
    pub fn max_len(&self) -> u64 {
        self.max
    }

    /// Whether the heap grows as it fills.
    pub fn is_growable(&self) -> bool {
        self.grow.is_some() && self.max > self.end()
    }

    /// The region's length now: what the header says the arena reaches (it
    /// grows), at least what this process has mapped.
    pub fn len(&self) -> u64 {
        let shared = self.header().arena_end.load(Ordering::Relaxed);
        shared.clamp(self.end(), self.max)
    }

    /// Always false: a heap spans at least [`MIN_REGION`] bytes.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Number of cache slots (slot 0 is the shared, lock-protected one).
    pub fn slots(&self) -> u32 {
        self.nslots
    }

    /// Usable bytes of the arena (region minus metadata).
    pub fn arena_len(&self) -> u64 {
        self.len() - self.arena_start
    }

    #[inline]
    pub(crate) fn header(&self) -> &Header {
        // SAFETY: validated at format/attach: the region holds a Header at offset 0,
        // aligned, made of atomics only.
        unsafe { &*(self.base.as_ptr() as *const Header) }
    }

    /// One of the words reserved for the embedding layer.
    ///
    /// # Panics
    /// If `i >= 8`.
    pub fn user_word(&self, i: usize) -> &AtomicU64 {
        &self.header().user[i]
    }

    #[inline]
    pub(crate) fn depot(&self, class: usize) -> &[AtomicU64; DEPOT_ENTRIES] {
        debug_assert!(class < CLASS_SIZES.len());
        // SAFETY: the depot lies in the validated metadata area; class < NUM_CLASSES;
        // 8-byte aligned atomics.
        unsafe {
            &*(self
                .base
                .as_ptr()
                .add(DEPOT_OFF + class * DEPOT_ENTRIES * 8) as *const _)
        }
    }

    #[inline]
    pub(crate) fn slot(&self, s: u32) -> &Slot {
        debug_assert!(s < self.nslots, "slot {s} of {}", self.nslots);
        // SAFETY: s < nslots (checked by every caller: slots come from claim or
        // loops bounded by nslots); the slot table lies below arena_start.
        unsafe { &*(self.base.as_ptr().add(SLOTS_OFF + s as usize * SLOT_SIZE) as *const Slot) }
    }

    /// The 8-byte word at `off` if it lies inside the region and is aligned.
    #[inline]
    pub(crate) fn word64(&self, off: u64) -> Option<&AtomicU64> {
        let end = off.checked_add(8)?;
        if off % 8 != 0 || (end > self.end() && !self.reach(end)) {
            return None;
        }
        // SAFETY: in bounds and aligned, just checked; AtomicU64 has no invalid values.
        Some(unsafe { &*(self.base.as_ptr().add(off as usize) as *const AtomicU64) })
    }

    /// The 4-byte word at `off` if it lies inside the region and is aligned.
    #[inline]
    pub(crate) fn word32(&self, off: u64) -> Option<&AtomicU32> {
        let end = off.checked_add(4)?;
        if off % 4 != 0 || (end > self.end() && !self.reach(end)) {
            return None;
        }
        // SAFETY: in bounds and aligned, just checked.
        Some(unsafe { &*(self.base.as_ptr().add(off as usize) as *const AtomicU32) })
    }

    /// A pointer to `len` bytes at `off`, if that range lies inside the arena.
    ///
    /// # Examples
    /// ```
    /// # use shmval_alloc::{Heap, OwnedRegion, StdPlatform, Offset};
    /// let mut r = OwnedRegion::new(1 << 20);
    /// // SAFETY: `r` outlives the heap.
    /// let heap = unsafe { Heap::<StdPlatform>::format(r.region()) }.unwrap();
    /// assert!(heap.resolve(Offset::new(1 << 30).unwrap(), 8).is_none());
    /// ```
    #[inline]
    pub fn resolve(&self, off: Offset, len: usize) -> Option<NonNull<u8>> {
        let end = off.0.checked_add(len as u64)?;
        if off.0 < self.arena_start || (end > self.end() && !self.reach(end)) {
            return None;
        }
        // SAFETY: inside the region, just checked.
        Some(unsafe { NonNull::new_unchecked(self.base.as_ptr().add(off.0 as usize)) })
    }

    /// The offset of `ptr` if it points into this heap's arena.
    pub fn offset_of(&self, ptr: *const u8) -> Option<Offset> {
        let off = (ptr as usize).checked_sub(self.base.as_ptr() as usize)? as u64;
        (off >= self.arena_start && off < self.end()).then_some(Offset(off))
    }

    /// Allocates without a cache slot (through the shared slot, under a lock).
    ///
    /// Prefer a [`Cache`] on hot paths.
    ///
    /// # Errors
    /// [`AllocError::Exhausted`], [`AllocError::Unsupported`] or [`AllocError::Corrupt`].
    pub fn alloc(&self, layout: Layout) -> Result<Offset, AllocError> {
        match class_for(layout.size(), layout.align()) {
            Some(c) => self
                .with_shared_slot(|h| h.small_alloc(0, c))
                .unwrap_or(Err(AllocError::LockTimeout)),
            None => self.large_alloc(layout),
        }
    }

    /// Frees a block allocated with `layout` by any cache or process.
    ///
    /// # Safety
    /// `off` must have been returned by an allocation of this heap with the same
    /// `layout` and not freed since; nothing may use the block afterwards.
    ///
    /// # Errors
    /// [`FreeError::Invalid`] when `off` is visibly not such a block (nothing changed).
    pub unsafe fn free(&self, off: Offset, layout: Layout) -> Result<(), FreeError> {
        match class_for(layout.size(), layout.align()) {
            Some(c) => self
                .with_shared_slot(|h| h.small_free(0, c, off, layout.size()))
                .unwrap_or(Err(FreeError::LockTimeout)),
            None => self.large_free(off, layout),
        }
    }

    /// Runs `f` with the shared slot's lock held (`None`: the lock timed out).
    fn with_shared_slot<R>(&self, f: impl FnOnce(&Self) -> R) -> Option<R> {
        let lock = &self.header().shared_lock;
        if lock.lock_within::<P>(Some(LOCK_PATIENCE)).ok()? == crate::LockState::Recovered {
            // The holder died inside a slot-0 operation: settle its depot claims.
            self.resolve_claims(0);
        }
        let r = f(self);
        // SAFETY: locked just above by this thread.
        unsafe { lock.unlock::<P>() };
        Some(r)
    }

    /// A per-thread cache: claims a free slot, or falls back to the shared slot when
    /// all are taken (still correct, slower).
    ///
    /// # Errors
    /// Never fails today; the `Result` leaves room for per-heap limits.
    pub fn cache(&self) -> Result<Cache<'_, P>, AllocError> {
        let slot = self.claim_slot();
        Ok(Cache {
            heap: self,
            slot,
            _not_send: PhantomData,
        })
    }

    /// Claims a free cache slot for the calling thread (`None` when all are taken
    /// even after reclaiming dead owners' slots).
    ///
    /// The slot is single-writer: only the claiming thread may pass it to
    /// [`alloc_in`](Self::alloc_in)/[`free_in`](Self::free_in), and it must give it
    /// back with [`release_slot`](Self::release_slot).
    pub fn claim_slot(&self) -> Option<u32> {
        let me = P::process_token();
        for round in 0..2 {
            for s in 1..self.nslots {
                let owner = &self.slot(s).owner;
                if owner.load(Ordering::Relaxed) == 0
                    && owner
                        .compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed)
                        .is_ok()
                {
                    return Some(s);
                }
            }
            if round == 0 && self.reclaim_dead() == 0 {
                break;
            }
        }
        None
    }

    /// How many cache slots are claimed right now (slot 0 not counted).
    pub fn slots_in_use(&self) -> u32 {
        (1..self.nslots)
            .filter(|&s| self.slot(s).owner.load(Ordering::Relaxed) != 0)
            .count() as u32
    }

    /// Returns a slot claimed by [`claim_slot`](Self::claim_slot), publishing its
    /// cached free blocks to the depot where there is room.
    ///
    /// # Safety
    /// `slot` was claimed by the calling thread, which does not use it afterwards.
    pub unsafe fn release_slot(&self, slot: u32) {
        if slot == 0 || slot >= self.nslots {
            return;
        }
        self.flush_slot(slot);
        self.slot(slot).owner.store(0, Ordering::Release);
    }

    /// Reclaims the cache slots of processes that died: settles the depot entries
    /// they had claimed, publishes their cached blocks and frees the slot. Returns
    /// how many slots were reclaimed.
    pub fn reclaim_dead(&self) -> usize {
        let me = P::process_token();
        let mut n = 0;
        for s in 1..self.nslots {
            let owner = &self.slot(s).owner;
            let t = owner.load(Ordering::Acquire);
            if t == 0 || t == me || P::is_alive(t) {
                continue;
            }
            // SYNC POINT: one reclaimer wins the slot by CAS from the dead token.
            if owner
                .compare_exchange(t, me, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
            {
                self.finish_carve(s);
                self.resolve_claims(s);
                self.flush_slot(s);
                owner.store(0, Ordering::Release);
                n += 1;
            }
        }
        // A holder that died inside a large-heap operation (taking a slab, say):
        // the next lock holder rebuilds and gives back what it was taking; now.
        if self.header().large_dirty.load(Ordering::Acquire) != 0 {
            drop(self.large());
        }
        n
    }

    /// Allocates through cache slot `slot`.
    ///
    /// # Safety
    /// `slot` was claimed by the calling thread and not released.
    ///
    /// # Errors
    /// As [`Heap::alloc`].
    #[inline(always)]
    pub unsafe fn alloc_in(&self, slot: u32, layout: Layout) -> Result<Offset, AllocError> {
        if slot == 0 {
            return self.alloc(layout);
        }
        match class_for(layout.size(), layout.align()) {
            // A small allocation that finds the pool short gives empty slabs back in
            // its slow path (`small_alloc_slow`).
            Some(c) => self.small_alloc(slot, c),
            // SAFETY: forwarded: `slot` is the calling thread's.
            None => unsafe { self.large_alloc_in(slot, layout) },
        }
    }

    /// A large allocation; if the pool is short, this slot's lists, unclaimed
    /// slots' lists and the depot give back every slab whose blocks are all free,
    /// and it is tried once more (out of line: the small path stays as small as it
    /// was).
    ///
    /// # Safety
    /// As [`Heap::alloc_in`].
    #[inline(never)]
    unsafe fn large_alloc_in(&self, slot: u32, layout: Layout) -> Result<Offset, AllocError> {
        match self.large_alloc(layout) {
            Err(AllocError::Exhausted { .. }) => {
                // SAFETY: forwarded.
                unsafe { self.give_back(slot) };
                self.large_alloc(layout)
            }
            r => r,
        }
    }

    /// The bytes [`crate::Stats::in_use`] counts for the block at `off` allocated with
    /// `layout` (its size class, or a large block's payload); 0 if `off` is not
    /// such a block.
    pub fn accounted(&self, off: Offset, layout: Layout) -> u64 {
        match class_for(layout.size(), layout.align()) {
            Some(c) => u64::from(crate::class::CLASS_SIZES[c]),
            None => self.large_accounted(off),
        }
    }

    /// Frees through cache slot `slot`.
    ///
    /// # Safety
    /// As [`Heap::free`], and `slot` was claimed by the calling thread.
    ///
    /// # Errors
    /// As [`Heap::free`].
    #[inline(always)]
    pub unsafe fn free_in(&self, slot: u32, off: Offset, layout: Layout) -> Result<(), FreeError> {
        if slot == 0 {
            // SAFETY: forwarded to the caller.
            return unsafe { self.free(off, layout) };
        }
        match class_for(layout.size(), layout.align()) {
            Some(c) => self.small_free(slot, c, off, layout.size()),
            None => self.large_free(off, layout),
        }
    }
}

fn bad_size(len: u64) -> FormatError {
    FormatError::BadSize {
        len,
        min: MIN_REGION as u64,
        max: MAX_REGION,
    }
}

fn check_geometry(region: Region) -> Result<(), FormatError> {
    let len = region.len() as u64;
    if len < MIN_REGION as u64 || len > MAX_REGION {
        return Err(bad_size(len));
    }
    let base = region.base().as_ptr() as usize;
    if base % 64 != 0 {
        return Err(FormatError::Misaligned(base));
    }
    Ok(())
}

/// A thread's cache slot on a heap: the fast path for allocation.
///
/// Not `Send`: a slot has exactly one writer. Dropping it publishes its cached free
/// blocks and frees the slot.
pub struct Cache<'h, P: Platform> {
    heap: &'h Heap<P>,
    slot: Option<u32>,
    _not_send: PhantomData<*const ()>,
}

impl<P: Platform> Cache<'_, P> {
    /// Allocates a block for `layout`.
    ///
    /// # Errors
    /// As [`Heap::alloc`].
    #[inline]
    pub fn alloc(&self, layout: Layout) -> Result<Offset, AllocError> {
        match self.slot {
            // SAFETY: the slot was claimed by this (non-Send) cache's thread.
            Some(s) => unsafe { self.heap.alloc_in(s, layout) },
            None => self.heap.alloc(layout),
        }
    }

    /// Frees a block.
    ///
    /// # Safety
    /// As [`Heap::free`].
    ///
    /// # Errors
    /// As [`Heap::free`].
    #[inline]
    pub unsafe fn free(&self, off: Offset, layout: Layout) -> Result<(), FreeError> {
        match self.slot {
            // SAFETY: slot claimed by this thread; the rest is forwarded to the caller.
            Some(s) => unsafe { self.heap.free_in(s, off, layout) },
            // SAFETY: forwarded to the caller.
            None => unsafe { self.heap.free(off, layout) },
        }
    }

    /// The slot index (`None`: the shared slot).
    pub fn slot(&self) -> Option<u32> {
        self.slot
    }
}

impl<P: Platform> Drop for Cache<'_, P> {
    fn drop(&mut self) {
        if let Some(s) = self.slot {
            // SAFETY: claimed by this cache, not used after this.
            unsafe { self.heap.release_slot(s) };
        }
    }
}
