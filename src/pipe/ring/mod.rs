//! The shared half of a pipe: a bounded ring of value cells in the pool. Positions
//! are claimed in ranges by one compare-and-swap on a position counter (`tail` for
//! senders, `head` for receivers); senders then fill the cells with plain stores and
//! receivers read them without writing to them, so a stream of values costs no
//! locked instruction per value and no receiver store to a line senders write.
//!
//! Each cell has one state word `position:48 | 0:13 | phase:3`. Position `p` is
//! *filled* when its cell says FULL(p) (a value) or SKIP(p) (none: see below);
//! anything else there (FULL or SKIP of `p - cap`, or the EMPTY(p) a new pipe starts
//! with) says `p` is not filled yet.
//!
//! Before its CAS a claimer writes the range it is about to claim into its own user
//! entry (its *record*), and clears the record once every cell of the range is
//! filled (read). So:
//! - a receiver's record tells senders which cells are still being read: a sender
//!   writes position `p` only when `p - cap` lies below the *limit*, the smaller of
//!   `head` and every receive record (cached per handle, re-read when it says full);
//!   a receiver sets a *won* flag in its record once its CAS succeeded;
//! - a sender's claimed cell that is not filled is covered by its claimer's record
//!   until it is.
//!
//! A dead process's claims are moved on by whoever waits behind them: a receiver
//! that finds position `p` claimed (`tail > p`) but not filled while no live send
//! record covers it makes the cell SKIP(p) (the value, if any, was in the dead
//! sender's hands and leaks); a sender held back by the receive record of a dead
//! process clears it, first releasing the values of its range if the record is won
//! (the dead receiver never handed them to anyone). A record left without the won
//! flag may be a lost CAS: it is cleared without a release (a receiver killed between
//! its CAS and its flag leaks its run, never frees a value twice). A record may also
//! cover positions its writer failed to claim: that only delays recovery until the
//! writer clears or rewrites it, never makes a live claim look dead.
//!
//! Threads of one process share its user entry and so take turns (a process-local
//! lock in `Pipe`) to claim and fill; processes claim in parallel.

mod close;
mod env;
mod layout;
mod owned;
mod recovery;
mod shared;
mod view;

pub(crate) use layout::{owner, FREE, MAX_CAP, SHARED, USERS};
pub(crate) use view::{Dir, Pop, Push, Ring, Stuck, Take};

use crate::shm::layout::HDR;
use crate::shm::ValError;
use crate::Pool;
use layout::*;
use std::ptr::NonNull;
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};

// SAFETY: #[repr(C)], made of atomic integers (the eventcounts are one atomic each)
// and padding (`_p3`, `_p4`: plain u32 never read or written after zeroing).
unsafe impl crate::shm::layout::InShared for PipeHead {}
// SAFETY: #[repr(C)], atomics only.
unsafe impl crate::shm::layout::InShared for Cell {}

/// Offset of the first cell in a pipe object.
pub(crate) const CELLS_OFF: usize = std::mem::size_of::<PipeHead>();

/// What shapes a pipe object's bytes, for the pool's layout hash.
pub(crate) const LAYOUT_PARTS: [u64; 12] = {
    use std::mem::{offset_of, size_of};
    [
        MAGIC,
        size_of::<Meta>() as u64,
        offset_of!(PipeHead, tail) as u64,
        offset_of!(PipeHead, head) as u64,
        offset_of!(PipeHead, not_empty) as u64,
        offset_of!(PipeHead, send_bias) as u64,
        offset_of!(PipeHead, recv_bias) as u64,
        offset_of!(PipeHead, users) as u64,
        size_of::<User>() as u64,
        USERS as u64,
        size_of::<Cell>() as u64,
        offset_of!(Cell, slot) as u64,
    ]
};
const _: () = assert!(std::mem::offset_of!(PipeHead, meta) == HDR);
const _: () = assert!(std::mem::offset_of!(PipeHead, tail) == 128);
const _: () = assert!(std::mem::offset_of!(PipeHead, head) == 256);
const _: () = assert!(std::mem::offset_of!(PipeHead, send_bias) == 640);
const _: () = assert!(std::mem::offset_of!(PipeHead, send_busy) == 648);
const _: () = assert!(std::mem::offset_of!(PipeHead, recv_bias) == 704);
const _: () = assert!(std::mem::offset_of!(PipeHead, recv_busy) == 712);
const _: () = assert!(std::mem::offset_of!(PipeHead, not_empty) == 384);
const _: () = assert!(std::mem::offset_of!(PipeHead, not_full) == 512);
const _: () = assert!(std::mem::offset_of!(PipeHead, users) == 768);
const _: () = assert!(std::mem::size_of::<User>() == 64);
const _: () = assert!(CELLS_OFF == 768 + 64 * USERS && CELLS_OFF % 64 == 0);
const _: () = assert!(std::mem::size_of::<Cell>() == CELL);

/// Bytes of a pipe object of `cap` cells.
pub(crate) fn object_size(cap: u64) -> u64 {
    CELLS_OFF as u64 + cap * CELL as u64
}

impl Ring {
    /// Validates the pipe object at `off` (tag, magic, capacity against its size).
    pub(crate) fn attach(pool: &Pool, off: u64) -> Result<Ring, ValError> {
        let o = pool.obj(off)?;
        let bad = |what: &str| ValError::Corrupt {
            what: format!("pipe at {off:#x}: {what}"),
        };
        if o.tag != crate::shm::layout::tag::PIPE {
            return Err(bad("not a pipe object"));
        }
        let head = pool.at::<PipeHead>(off)?;
        if head.meta.magic.load(Acquire) != MAGIC {
            return Err(bad("bad magic (not a pipe of this version)"));
        }
        let cap = head.meta.cap.load(Relaxed);
        if cap == 0 || cap > MAX_CAP || object_size(cap) > o.size {
            return Err(bad(&format!(
                "capacity {cap} does not fit {} bytes",
                o.size
            )));
        }
        if head.meta.users.load(Relaxed) != USERS as u64 {
            return Err(bad("user table size"));
        }
        // The whole object was bounds-checked by `obj`; the cells start 64-aligned
        // within it (objects are 16-aligned, cells need 8).
        let cells = pool.at::<Cell>(off + CELLS_OFF as u64)?;
        // SAFETY: both validated above: within the mapping, which the pool handle
        // the `Ring` keeps keeps mapped; atomics only.
        Ok(unsafe { Ring::from_raw(pool.clone(), NonNull::from(head), NonNull::from(cells), cap) })
    }

    /// Writes the initial state of a fresh, zeroed pipe object.
    pub(crate) fn format(pool: &Pool, off: u64, cap: u64) -> Result<(), ValError> {
        let head = pool.at::<PipeHead>(off)?;
        head.meta.cap.store(cap, Relaxed);
        head.meta.users.store(USERS as u64, Relaxed);
        head.meta
            .created_ns
            .store(crate::sys::now_unix_ns(), Relaxed);
        for i in 0..cap {
            pool.at::<Cell>(off + CELLS_OFF as u64 + i * CELL as u64)?
                .word
                .store(word(i, EMPTY), Relaxed);
        }
        head.meta.magic.store(MAGIC, Release);
        Ok(())
    }
}

/// Whether the receive a dead receiver was committing (its receipt: the run at
/// `from` of the pipe object at `off`, created at `born`, by the receive side's
/// owner (`user` 0) or the claimer of user entry `user - 1`) happened: the owner
/// moved `head` past `from`, or the claimer cleared its record. `None` when `off`
/// is not that pipe any more. (Before a pipe moves on past the dead receiver
/// otherwise, it empties the receipt: see `Pool::drop_receipts`.)
pub(crate) fn receipt_taken(
    pool: &Pool,
    off: u64,
    born: u64,
    from: u64,
    user: u64,
) -> Option<bool> {
    let ring = Ring::attach(pool, off).ok()?;
    let h = ring.head();
    if h.meta.created_ns.load(Acquire) != born {
        return None;
    }
    if user == 0 {
        return Some(h.head.load(Acquire) > from);
    }
    let u = h.users.get(usize::try_from(user - 1).ok()?)?;
    let r = u.recv.load(Acquire);
    let standing = r & WON != 0 && count(r) != 0 && (r >> 16) == from & POS_MASK;
    Some(!standing)
}
