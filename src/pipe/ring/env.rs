//! Everything the ring's protocol code (`layout`, `view`, `owned`, `shared`, `close`,
//! `recovery`) uses from outside the ring: atomics, the pool's slots and values, the
//! eventcount, liveness, the barriers, waiting. The loom model (`models/tests/ring.rs`)
//! compiles those same files against its own version of this module (loom atomics,
//! a model pool, `membarrier` as a SeqCst fence), so the code it checks is the code
//! that runs.

pub(crate) use crate::shm::layout::{ObjHeader, Slot};
pub(crate) use crate::shm::Raw;
pub(crate) use crate::sync::EventCount;
pub(crate) use crate::Pool;
/// What keeps the memory a `Ring` points into mapped: a handle on its pool.
pub(crate) type Keep = crate::Pool;
pub(crate) use shmval_alloc::LOCK_PATIENCE;
pub(crate) use std::sync::atomic::AtomicU64;

pub(crate) use super::super::wait::wait_until;

/// Whether the process of token `t` is alive (see `liveness`).
#[inline]
pub(crate) fn token_alive(t: u64) -> bool {
    crate::platform::token_alive(t)
}

/// A full barrier on every CPU running a thread of a registered process (false: the
/// kernel refused it).
#[inline]
pub(crate) fn membarrier_global() -> bool {
    crate::sys::membarrier_global()
}

/// The order an owner publishes a cell with (Release when this process is registered
/// for membarrier, else SeqCst).
#[inline]
pub(crate) fn publish_order() -> std::sync::atomic::Ordering {
    crate::platform::publish_order()
}

/// A point where the ring's reasoning rests on the single total order of SeqCst
/// accesses (the one before it and the one after it, both SeqCst): nothing here.
/// The loom model, which treats SeqCst accesses as AcqRel (loom's README, "Unsupported
/// features"), puts a SeqCst fence here, which gives it that order.
#[inline(always)]
pub(crate) fn sc_order() {}

/// The owner's side of the asymmetric Dekker: only the compiler may not reorder
/// across it (a revoker's membarrier makes it a full barrier when it matters).
#[inline(always)]
pub(crate) fn section_fence() {
    std::sync::atomic::compiler_fence(std::sync::atomic::Ordering::SeqCst);
}

/// Empties the receipts of the dead receiver `token` for the run at `from` of the
/// pipe whose head is at `pipe` (see `Pool::drop_receipts`): before the pipe moves
/// on past that receiver.
pub(crate) fn drop_receipts(pool: &Pool, pipe: *const u8, token: u64, from: u64) {
    if let Some(off) = pool.heap().offset_of(pipe) {
        pool.drop_receipts(token, off.get(), from);
    }
}
