//! The bytes of a broadcast object: its head (meta, lock, tail, eventcounts,
//! subscriber table) and the value slots after it.

use super::*;
use crate::shm::layout::{ObjHeader, Slot, HDR};
use crate::sync::EventCount;
use shmval_alloc::RobustLock;
use std::sync::atomic::AtomicU64;

/// Fixed fields after the object header.
#[repr(C)]
#[derive(Debug)]
pub(super) struct Meta {
    pub(super) magic: AtomicU64,
    pub(super) cap: AtomicU64,
    /// Entries of the subscriber table ([`MAX_SUBSCRIBERS`]).
    pub(super) subs: AtomicU64,
    /// Non-zero once closed.
    pub(super) closed: AtomicU64,
    /// Creation time (Unix ns).
    pub(super) created_ns: AtomicU64,
    /// 0 block, 1 drop oldest, 2 drop after `drop_after_ns`.
    pub(super) policy: AtomicU64,
    pub(super) drop_after_ns: AtomicU64,
    pub(super) _reserved: AtomicU64,
}

/// One subscriber: the process it belongs to (0: free entry), the next position it
/// receives, and how many values it skipped since its last receive.
#[repr(C)]
#[derive(Debug)]
pub(super) struct Sub {
    pub(super) token: AtomicU64,
    pub(super) cursor: AtomicU64,
    pub(super) missed: AtomicU64,
    pub(super) _reserved: AtomicU64,
}

/// A broadcast object; `cap` value slots follow at [`SLOTS_OFF`].
#[repr(C)]
#[derive(Debug)]
pub(super) struct BcastHead {
    pub(super) obj: ObjHeader,
    pub(super) meta: Meta,
    pub(super) lock: RobustLock,
    /// Next position to send; positions below it were sent.
    pub(super) tail: AtomicU64,
    /// Positions below it are released (their slots empty).
    pub(super) released: AtomicU64,
    /// Live subscriber entries: a hint kept by subscribe/unsubscribe and made exact
    /// by every `settle` (a send with no subscriber releases its value at once).
    pub(super) subscribed: AtomicU64,
    pub(super) _p0: AtomicU64,
    /// Subscribers sleep here.
    pub(super) not_empty: EventCount,
    pub(super) _p1: [u32; 31],
    /// Senders sleep here.
    pub(super) not_full: EventCount,
    pub(super) _p2: [u32; 31],
    pub(super) subs: [Sub; MAX_SUBSCRIBERS],
}

pub(super) const SLOTS_OFF: usize = std::mem::size_of::<BcastHead>();

// SAFETY: #[repr(C)], made of atomic integers (the lock is two, an eventcount one)
// and padding (`_p1`, `_p2`: plain u32 never read or written after zeroing).
unsafe impl crate::shm::layout::InShared for BcastHead {}

/// What shapes a broadcast object's bytes, for the pool's layout hash.
pub(crate) const LAYOUT_PARTS: [u64; 8] = {
    use std::mem::{offset_of, size_of};
    [
        MAGIC,
        offset_of!(BcastHead, lock) as u64,
        offset_of!(BcastHead, tail) as u64,
        offset_of!(BcastHead, not_empty) as u64,
        offset_of!(BcastHead, subs) as u64,
        size_of::<Sub>() as u64,
        MAX_SUBSCRIBERS as u64,
        SLOTS_OFF as u64,
    ]
};
const _: () = assert!(std::mem::offset_of!(BcastHead, meta) == HDR);
const _: () = assert!(std::mem::offset_of!(BcastHead, lock) == 80);
const _: () = assert!(std::mem::offset_of!(BcastHead, tail) == 96);
const _: () = assert!(std::mem::offset_of!(BcastHead, not_empty) == 128);
const _: () = assert!(std::mem::offset_of!(BcastHead, not_full) == 256);
const _: () = assert!(std::mem::offset_of!(BcastHead, subs) == 384);
const _: () = assert!(SLOTS_OFF == 384 + 32 * MAX_SUBSCRIBERS);

pub(super) fn object_size(cap: u64) -> u64 {
    SLOTS_OFF as u64 + cap * std::mem::size_of::<Slot>() as u64
}
