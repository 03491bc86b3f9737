//! The bytes of a pipe object: words, records, the head, user entries and cells
//! (byte offsets in `docs/LAYOUT.md`; the offset assertions are in `ring/mod.rs`).

use super::env::{AtomicU64, EventCount, ObjHeader, Slot};

/// Bias word: nobody owns the side; the next user may take it.
pub(crate) const FREE: u64 = 0;
/// Bias word: the side is claimed by compare-and-swap with records, for good.
pub(crate) const SHARED: u64 = 1;
/// Low bits of an owner word ([`owner`]).
pub(super) const OWNED: u64 = 2;
/// Low bits of an owner word being revoked.
pub(super) const REVOKING: u64 = 3;

/// The bias word naming thread `tid` of user entry `user` as a side's owner.
#[inline]
pub(crate) const fn owner(user: u16, tid: u32) -> u64 {
    ((user as u64) << 32 | tid as u64) << 2 | OWNED
}

/// The user entry of an owner word.
#[inline]
pub(super) const fn owner_user(b: u64) -> usize {
    (b >> 34) as usize % USERS
}

/// Entries of a pipe's user table (processes attached to the pipe at once).
#[cfg(not(loom))]
pub(crate) const USERS: usize = 256;
/// A few entries in the loom model (each is eight more atomics to explore).
#[cfg(loom)]
pub(crate) const USERS: usize = 4;
/// Bytes of a cell (a cache line: neighbouring cells never share one).
pub(crate) const CELL: usize = 64;
/// Largest capacity of a pipe.
pub(crate) const MAX_CAP: u64 = 1 << 24;
/// Most positions one claim takes (a record holds the count in 15 bits).
pub(crate) const MAX_CLAIM: usize = 0x7FFF;
/// "SVPIPE04" (04: a side may be owned by one thread, see [`owner`]; 03: receivers
/// do not write cells, senders read the receive records; 02: receivers emptied each
/// cell; 01: cells claimed one by one).
pub(crate) const MAGIC: u64 = u64::from_le_bytes(*b"SVPIPE04");

pub(super) const POS_MASK: u64 = (1 << 48) - 1;
/// A sender that found the pipe full waits for this much room (or a quarter of a
/// small pipe) before trying again; see [`Ring::wait_for_room`].
pub(super) const ROOM_SLACK: u64 = 32;
/// Pauses [`Ring::wait_for_room`] waits at most (~20 µs here: inside the spin phase,
/// whose deadline checks it does not replace).
pub(super) const ROOM_SPINS: u32 = 1024;
/// States of `Meta::closed`.
pub(crate) const OPEN: u64 = 0;
pub(crate) const CLOSING: u64 = 1;
pub(crate) const CLOSED: u64 = 2;
pub(crate) const EMPTY: u64 = 0;
pub(crate) const FULL: u64 = 2;
pub(crate) const SKIP: u64 = 4;

/// A cell's state word.
#[inline]
pub(crate) const fn word(pos: u64, phase: u64) -> u64 {
    (pos & POS_MASK) << 16 | phase
}
#[inline]
pub(crate) const fn phase(w: u64) -> u64 {
    w & 7
}
/// Whether position `pos` is filled in a cell saying `w` (see the module comment).
#[inline]
pub(super) const fn filled(w: u64, pos: u64) -> bool {
    w == word(pos, FULL) || w == word(pos, SKIP)
}
/// A record: `n` positions from `from` (`n == 0`: none); bit 15 is [`WON`].
#[inline]
pub(super) const fn record(from: u64, n: usize) -> u64 {
    (from & POS_MASK) << 16 | n as u64
}
/// Flag of a receive record whose claim succeeded.
pub(super) const WON: u64 = 1 << 15;
/// Positions of record `r`.
#[inline]
pub(super) const fn count(r: u64) -> usize {
    (r & 0x7FFF) as usize
}
/// Whether record `r` covers position `pos`.
#[inline]
pub(super) fn covers(r: u64, pos: u64) -> bool {
    let n = count(r) as u64;
    n != 0 && (pos.wrapping_sub(r >> 16) & POS_MASK) < n
}
/// The full position whose low 48 bits are `p48`, nearest to `near` (records and
/// cell words keep 48 bits; live positions are far closer than 2^47 to a counter).
#[inline]
pub(super) fn unmask(p48: u64, near: u64) -> u64 {
    near.wrapping_add(((p48.wrapping_sub(near) << 16) as i64 >> 16) as u64)
}
/// Fixed fields of a pipe after its object header.
#[repr(C)]
#[derive(Debug)]
#[cfg_attr(loom, derive(Default))]
pub(crate) struct Meta {
    pub magic: AtomicU64,
    pub cap: AtomicU64,
    /// Entries of the user table ([`USERS`]).
    pub users: AtomicU64,
    /// [`OPEN`], [`CLOSING`] (senders refuse; a send that saw the pipe open may
    /// still be landing) or [`CLOSED`] (none is: receivers may report the end).
    pub closed: AtomicU64,
    /// Creation time (Unix ns).
    pub created_ns: AtomicU64,
    /// User entries ever taken (`1 + ` the highest index): senders read the
    /// receive records of these only.
    pub users_used: AtomicU64,
    _reserved: [AtomicU64; 2],
}

/// A pipe object: header, meta, the two position counters and the two eventcounts
/// on lines of their own, the user table; `cap` cells follow at [`CELLS_OFF`].
#[repr(C)]
#[derive(Debug)]
#[cfg_attr(loom, derive(Default))]
pub(crate) struct PipeHead {
    pub obj: ObjHeader,
    pub meta: Meta,
    _p0: [AtomicU64; 6],
    /// Positions claimed by senders (the next position to send).
    pub tail: AtomicU64,
    _p1: [AtomicU64; 15],
    /// Positions claimed by receivers (the next position to receive).
    pub head: AtomicU64,
    _p2: [AtomicU64; 15],
    /// Receivers sleep here.
    pub not_empty: EventCount,
    _p3: [u32; 31],
    /// Senders sleep here.
    pub not_full: EventCount,
    _p4: [u32; 31],
    /// Who owns the send side ([`FREE`], [`SHARED`], an [`owner`] word, or one
    /// being revoked), and whether that owner is inside a send: on a line only the
    /// owner writes (and a revoker, once), apart from `tail`, which receivers read.
    pub send_bias: AtomicU64,
    pub send_busy: AtomicU64,
    _p5: [AtomicU64; 6],
    /// The same for the receive side.
    pub recv_bias: AtomicU64,
    pub recv_busy: AtomicU64,
    _p6: [AtomicU64; 6],
    pub users: [User; USERS],
}

/// A user entry (a line of its own: its records are written at every claim).
#[repr(C)]
#[derive(Debug)]
#[cfg_attr(loom, derive(Default))]
pub(crate) struct User {
    /// Process token (0 = free).
    pub token: AtomicU64,
    /// Range this user is claiming or filling, as [`record`].
    pub send: AtomicU64,
    /// Range this user is claiming or emptying.
    pub recv: AtomicU64,
    _pad: [AtomicU64; 5],
}

/// A cell: its state word and the value slot.
#[repr(C)]
#[derive(Debug)]
#[cfg_attr(loom, derive(Default))]
pub(crate) struct Cell {
    pub word: AtomicU64,
    _pad: AtomicU64,
    pub slot: Slot,
    _pad2: [AtomicU64; 4],
}
