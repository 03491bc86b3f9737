//! Byte layout of the structures the allocator keeps inside its region.
//!
//! ```text
//! 0            Header          magic, version, geometry, user words, large-block lock,
//!                              large stats, per-class slab counts, bin bitmap + heads
//! DEPOT_OFF    Depot           NUM_CLASSES x DEPOT_ENTRIES batch words
//! SLOTS_OFF    Slot[nslots]    per-thread caches: owner token + per-class list/counters
//! arena_start  arena           boundary-tagged blocks; slabs are 64 KiB blocks of it
//! ```
//! Every type here is `#[repr(C)]`, made only of atomics, with its size asserted, so
//! a reference to it over shared memory is sound (rule 2 of DESIGN.md).

use crate::class::NUM_CLASSES;
use crate::lock::RobustLock;
use std::mem::{align_of, size_of};
use std::sync::atomic::{AtomicU32, AtomicU64};

/// First word of a formatted region: "SHMVALHP" little-endian.
pub const ALLOC_MAGIC: u64 = u64::from_le_bytes(*b"SHMVALHP");
/// Layout version; bumped on any change of the byte layout.
pub const ALLOC_VERSION: u32 = 3;
/// Size (and alignment, as an offset from the region base) of one slab.
pub const SLAB_SIZE: usize = 64 << 10;
/// Smallest region the allocator formats.
pub const MIN_REGION: usize = 256 << 10;
/// Largest region: small-block offsets are stored in 32 bits in units of 16 bytes.
pub const MAX_REGION: u64 = 1 << 36;
/// How long allocator operations wait for a lock whose holder looks alive before
/// failing with `LockTimeout` (holders keep it for microseconds).
pub const LOCK_PATIENCE: std::time::Duration = std::time::Duration::from_secs(5);
/// Batch entries in the depot of each class.
pub const DEPOT_ENTRIES: usize = 64;
/// Most cache slots a region has (slot 0 is the lock-protected shared slot).
pub const MAX_SLOTS: u32 = 254;
/// Number of large-block bins: 64 linear bins of 32 bytes below 2 KiB, then 8
/// sub-bins per power of two up to 2^36.
pub const NBINS: usize = 264;
/// Words of the bin bitmap.
pub const BITMAP_WORDS: usize = NBINS.div_ceil(64);
/// Words reserved for the embedding layer (e.g. the offset of a root object).
pub const USER_WORDS: usize = 8;

/// Flag in a block header: the block is allocated.
pub const B_ALLOC: u64 = 1;
/// Flag in a block header: the block is a slab.
pub const B_SLAB: u64 = 2;
/// Flag bits of a block header.
pub const B_FLAGS: u64 = 15;
/// Bytes of a large-block header (size+flags word, previous block's size).
pub const BLOCK_HDR: u64 = 16;
/// Smallest large block (header + two free-list links).
pub const MIN_BLOCK: u64 = 32;
/// Magic of a slab header ("SLB1").
pub const SLAB_MAGIC: u32 = u32::from_le_bytes(*b"SLB1");
/// Where the first block of a slab starts, from the slab's start.
pub const SLAB_FIRST: u64 = 64;

/// The region header at offset 0.
#[repr(C)]
pub struct Header {
    /// [`ALLOC_MAGIC`] once formatting is complete (written last, Release).
    pub magic: AtomicU64,
    /// [`ALLOC_VERSION`].
    pub version: AtomicU32,
    /// Number of cache slots (including the shared slot 0).
    pub nslots: AtomicU32,
    /// Most bytes the region may grow to (its reserved address range); its length
    /// at format for a heap that does not grow.
    pub max_len: AtomicU64,
    /// First byte of the arena.
    pub arena_start: AtomicU64,
    /// End of the arena (exclusive). Only grows: stored last by a growth, under
    /// the large lock (Release), once the new part is backed and holds one free
    /// block.
    pub arena_end: AtomicU64,
    /// [`layout_fingerprint`] of the formatting code.
    pub fingerprint: AtomicU64,
    /// The slab being taken from the large heap, under its lock, until the carve
    /// that takes it is logged in its slot (0 none): a holder that dies in between
    /// leaves it here, and the rebuild after that death gives it back.
    pub slab_pending: AtomicU64,
    /// Size of the last block of the arena: the previous-size field of the block
    /// a growth appends (derived, like the others; rebuilt with them).
    pub last_size: AtomicU64,
    /// Words for the embedding layer.
    pub user: [AtomicU64; USER_WORDS],
    /// Protects the large-block heap (bins, block headers, large stats).
    pub large_lock: RobustLock,
    /// Protects the shared cache slot 0 used by threads without a slot.
    pub shared_lock: RobustLock,
    /// Non-zero while a large-heap operation is in progress (rebuild if seen at lock).
    pub large_dirty: AtomicU64,
    /// Bytes of allocated large blocks, headers and slabs included.
    pub large_used: AtomicU64,
    /// Payload bytes of allocated non-slab large blocks.
    pub large_user: AtomicU64,
    /// Number of allocated non-slab large blocks.
    pub large_count: AtomicU64,
    /// Peak of `large_used`.
    pub high_water: AtomicU64,
    /// Blocks leaked because a cache could neither keep nor publish them.
    pub leaked: AtomicU64,
    /// Slabs carved per class.
    pub slabs: [AtomicU64; NUM_CLASSES],
    /// Bit `b` set when bin `b` may be non-empty.
    pub bitmap: [AtomicU64; BITMAP_WORDS],
    /// First free block of each bin (byte offset, 0 = empty).
    pub bins: [AtomicU64; NBINS],
}

/// Size of [`Header`].
pub const HEADER_SIZE: usize = 128 + 32 + 8 * 6 + 8 * NUM_CLASSES + 8 * BITMAP_WORDS + 8 * NBINS;
const _: () = assert!(size_of::<Header>() == HEADER_SIZE);
const _: () = assert!(align_of::<Header>() == 8);

/// Offset of the depot.
pub const DEPOT_OFF: usize = HEADER_SIZE.next_multiple_of(64);
/// Offset of slot 0.
pub const SLOTS_OFF: usize = DEPOT_OFF + NUM_CLASSES * DEPOT_ENTRIES * 8;

/// One class's view of a cache slot.
#[repr(C)]
pub struct ClassLocal {
    /// `(count << 32) | head_unit`: the slot's free list of this class.
    pub list: AtomicU64,
    /// Blocks of this class allocated through this slot (single writer).
    pub allocs: AtomicU64,
    /// Blocks of this class freed through this slot (single writer).
    pub frees: AtomicU64,
}

/// A per-thread cache slot.
#[repr(C, align(64))]
pub struct Slot {
    /// Process token of the owner, 0 when free.
    pub owner: AtomicU64,
    /// The slab this slot is carving: `slab | (class + 1)` (slabs are 64 KiB
    /// aligned), 0 none. Set before its blocks are linked, cleared once they are all
    /// in lists; a reclaimer of a dead slot finishes the carve (see `small::carve`).
    pub carving: AtomicU64,
    /// While carving: the blocks `0..carve_kept` of the slab are this slot's alone
    /// (the others are published, or leaked by a death while publishing one batch).
    pub carve_kept: AtomicU64,
    _pad: [AtomicU64; 5],
    /// Per-class free lists and counters.
    pub classes: [ClassLocal; NUM_CLASSES],
}

/// Size of one [`Slot`].
pub const SLOT_SIZE: usize = 768;
const _: () = assert!(size_of::<Slot>() == SLOT_SIZE);
const _: () = assert!(size_of::<ClassLocal>() == 24);

/// Number of cache slots for a region of `len` bytes: one per 128 KiB, 8 to 254.
pub fn nslots_for(len: u64) -> u32 {
    (len / (128 << 10)).clamp(8, MAX_SLOTS as u64) as u32
}

/// First byte of the arena for `nslots` slots.
pub fn arena_start_for(nslots: u32) -> u64 {
    (SLOTS_OFF as u64 + nslots as u64 * SLOT_SIZE as u64).next_multiple_of(64)
}

const fn fnv(mut h: u64, v: u64) -> u64 {
    let bytes = v.to_le_bytes();
    let mut i = 0;
    while i < 8 {
        h ^= bytes[i] as u64;
        h = h.wrapping_mul(0x100_0000_01b3);
        i += 1;
    }
    h
}

/// A hash of every size, alignment and constant that shapes the region layout, and
/// of the pointer width: two builds that disagree on any of them refuse each other's
/// regions.
pub const fn layout_fingerprint() -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325;
    h = fnv(h, size_of::<Header>() as u64);
    h = fnv(h, align_of::<Header>() as u64);
    h = fnv(h, size_of::<Slot>() as u64);
    h = fnv(h, align_of::<Slot>() as u64);
    h = fnv(h, size_of::<RobustLock>() as u64);
    h = fnv(h, size_of::<usize>() as u64);
    h = fnv(h, NUM_CLASSES as u64);
    h = fnv(h, DEPOT_ENTRIES as u64);
    h = fnv(h, SLAB_SIZE as u64);
    h = fnv(h, NBINS as u64);
    h = fnv(h, SLAB_FIRST);
    let mut i = 0;
    while i < NUM_CLASSES {
        h = fnv(h, crate::class::CLASS_SIZES[i] as u64);
        i += 1;
    }
    h
}

// The byte offsets documented in docs/LAYOUT.md.
const _: () = {
    use std::mem::offset_of;
    assert!(offset_of!(Header, nslots) == 12);
    assert!(offset_of!(Header, fingerprint) == 40);
    assert!(offset_of!(Header, user) == 64);
    assert!(offset_of!(Header, large_lock) == 128);
    assert!(offset_of!(Header, shared_lock) == 144);
    assert!(offset_of!(Header, large_dirty) == 160);
    assert!(offset_of!(Header, leaked) == 200);
    assert!(offset_of!(Header, slabs) == 208);
    assert!(offset_of!(Header, bitmap) == 432);
    assert!(offset_of!(Header, bins) == 472);
    assert!(HEADER_SIZE == 2584);
    assert!(DEPOT_OFF == 2624);
    assert!(SLOTS_OFF == 16960);
    assert!(offset_of!(Slot, classes) == 64);
};
