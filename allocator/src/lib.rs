//! A crash-safe, multi-process pool allocator over a raw memory region.
//!
//! `shmval-alloc` keeps every piece of its metadata inside the region it manages, so
//! the same code runs over a POSIX shared-memory segment mapped at different addresses
//! in several processes, and over a plain heap buffer in unit and property tests. It
//! performs no system calls of its own: waiting, waking and "is that process still
//! alive?" are asked of a [`Platform`] supplied by the embedder.
//!
//! * Small sizes (up to [`MAX_SMALL`] bytes) come from size-classed 64 KiB slabs. Each
//!   thread owns a *cache slot* inside the region (a single-writer free list per class,
//!   no atomic read-modify-write on the fast path); slots exchange batches of blocks
//!   through per-class lock-free stacks with ABA-tagged heads. A slot whose owner died
//!   is reclaimed by anyone ([`Heap::reclaim_dead`]).
//! * Large blocks are best-fit within size bins, with boundary tags and immediate
//!   coalescing, under one [`RobustLock`]. The block headers are the crash-consistent
//!   truth; the bin index is rebuilt from them after a holder died.
//! * Every offset read from the region is bounds-checked; a corrupted region yields
//!   [`AllocError::Corrupt`], never undefined behaviour.
//!
//! See `docs/LAYOUT.md` (byte layout) and `docs/PROTOCOLS.md` (the crash contract:
//! which words are written in which order) in the repository.
//!
//! # Examples
//! ```
//! use shmval_alloc::{Heap, OwnedRegion, StdPlatform};
//! use std::alloc::Layout;
//!
//! let mut region = OwnedRegion::new(1 << 20);
//! // SAFETY: the buffer outlives the heap and nothing else uses it.
//! let heap = unsafe { Heap::<StdPlatform>::format(region.region()) }.unwrap();
//! let cache = heap.cache().unwrap();
//! let layout = Layout::from_size_align(100, 8).unwrap();
//! let off = cache.alloc(layout).unwrap();
//! assert_eq!(heap.stats().in_use, 112); // rounded up to the 112-byte class
//! // SAFETY: `off` was allocated above with `layout` and is freed once.
//! unsafe { cache.free(off, layout).unwrap() };
//! assert_eq!(heap.stats().in_use, 0);
//! ```
#![cfg_attr(loom, allow(dead_code, unused_imports))]

/// A fail point named `$name` (see [`fail`]): no code at all without the
/// `failpoints` feature.
macro_rules! fail_point {
    ($name:literal) => {
        #[cfg(feature = "failpoints")]
        {
            let _ = $crate::fail::fires($name);
        }
    };
}

#[cfg(feature = "failpoints")]
pub mod fail;
mod sync;

#[cfg_attr(loom, allow(dead_code))]
mod depot;
pub mod lock;
pub mod platform;

#[cfg(not(loom))]
mod class;
#[cfg(not(loom))]
mod error;
#[cfg(not(loom))]
mod heap;
#[cfg(not(loom))]
mod large;
#[cfg(not(loom))]
mod layout;
#[cfg(not(loom))]
mod region;
#[cfg(not(loom))]
mod small;
#[cfg(not(loom))]
mod stats;

#[cfg(loom)]
#[doc(hidden)]
pub use depot::loom_support;

#[cfg(not(loom))]
pub use class::{class_for, CLASS_SIZES, MAX_SMALL, NUM_CLASSES};
#[cfg(not(loom))]
pub use error::{AllocError, FormatError, FreeError, GrowError};
#[cfg(not(loom))]
pub use heap::{Cache, Grow, Growth, Heap, Offset};
#[cfg(not(loom))]
pub use layout::{
    layout_fingerprint, ALLOC_MAGIC, ALLOC_VERSION, LOCK_PATIENCE, MAX_REGION as MAX_REGION_BYTES,
    MIN_REGION, SLAB_SIZE,
};
pub use lock::{LockError, LockState, RobustLock};
#[cfg(not(loom))]
pub use platform::StdPlatform;
pub use platform::{Platform, THREAD_BITS, THREAD_MASK};
#[cfg(not(loom))]
pub use region::{OwnedRegion, Region};
#[cfg(not(loom))]
pub use stats::{ClassStats, Stats};
