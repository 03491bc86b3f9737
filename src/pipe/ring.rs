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

use crate::shm::layout::{ObjHeader, Slot, HDR};
use crate::shm::{Raw, ValError};
use crate::sync::EventCount;
use crate::Pool;
use std::ptr::NonNull;
use std::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed, Release, SeqCst};
use std::sync::atomic::{compiler_fence, AtomicU64};

/// Which side of a pipe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dir {
    Send,
    Recv,
}

/// Bias word: nobody owns the side; the next user may take it.
pub(crate) const FREE: u64 = 0;
/// Bias word: the side is claimed by compare-and-swap with records, for good.
pub(crate) const SHARED: u64 = 1;
/// Low bits of an owner word ([`owner`]).
const OWNED: u64 = 2;
/// Low bits of an owner word being revoked.
const REVOKING: u64 = 3;

/// The bias word naming thread `tid` of user entry `user` as a side's owner.
#[inline]
pub(crate) const fn owner(user: u16, tid: u32) -> u64 {
    ((user as u64) << 32 | tid as u64) << 2 | OWNED
}

/// The user entry of an owner word.
#[inline]
const fn owner_user(b: u64) -> usize {
    (b >> 34) as usize % USERS
}

/// Entries of a pipe's user table (processes attached to the pipe at once).
pub(crate) const USERS: usize = 256;
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

const POS_MASK: u64 = (1 << 48) - 1;
/// A sender that found the pipe full waits for this much room (or a quarter of a
/// small pipe) before trying again; see [`Ring::wait_for_room`].
const ROOM_SLACK: u64 = 32;
/// Pauses [`Ring::wait_for_room`] waits at most (~20 µs here: inside the spin phase,
/// whose deadline checks it does not replace).
const ROOM_SPINS: u32 = 1024;
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
const fn filled(w: u64, pos: u64) -> bool {
    w == word(pos, FULL) || w == word(pos, SKIP)
}
/// A record: `n` positions from `from` (`n == 0`: none); bit 15 is [`WON`].
#[inline]
const fn record(from: u64, n: usize) -> u64 {
    (from & POS_MASK) << 16 | n as u64
}
/// Flag of a receive record whose claim succeeded.
const WON: u64 = 1 << 15;
/// Positions of record `r`.
#[inline]
const fn count(r: u64) -> usize {
    (r & 0x7FFF) as usize
}
/// Whether record `r` covers position `pos`.
#[inline]
fn covers(r: u64, pos: u64) -> bool {
    let n = count(r) as u64;
    n != 0 && (pos.wrapping_sub(r >> 16) & POS_MASK) < n
}
/// The full position whose low 48 bits are `p48`, nearest to `near` (records and
/// cell words keep 48 bits; live positions are far closer than 2^47 to a counter).
#[inline]
fn unmask(p48: u64, near: u64) -> u64 {
    near.wrapping_add(((p48.wrapping_sub(near) << 16) as i64 >> 16) as u64)
}

/// Fixed fields of a pipe after its object header.
#[repr(C)]
#[derive(Debug)]
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
pub(crate) struct Cell {
    pub word: AtomicU64,
    _pad: AtomicU64,
    pub slot: Slot,
    _pad2: [AtomicU64; 4],
}

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

/// What a waiter finds in its way that a claimer has not finished with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stuck {
    /// Position `pos`, claimed by a sender (`tail > pos`), not filled: the cell says
    /// `word`.
    Cell { pos: u64, word: u64 },
    /// The receive record `rec` of user entry `user` holds the senders back.
    Record { user: u16, rec: u64 },
}

/// Outcome of one send attempt.
pub(crate) enum Push {
    /// The first `n` values are in the pipe.
    Sent(usize),
    /// No room; `Some(stuck)` when a receiver's unfinished claim is what is in the
    /// way (else the receivers have not claimed the values yet).
    Full(Option<Stuck>),
    Closed,
}

/// Outcome of one receive attempt.
pub(crate) enum Pop {
    /// `n` values were handed to the caller.
    Got(usize),
    /// Nothing to take; `Some(stuck)` when the next cell is claimed by a sender that
    /// has not filled it (only looked for when asked).
    Empty(Option<Stuck>),
    Closed,
    /// The pipe is being closed: the caller finishes the close within its own
    /// deadline ([`Ring::finish_close`]) and tries again.
    Closing,
}

/// Polls `done` until it says so or `until` passes (`None`: one look): spinning a
/// little, then napping 50 µs between looks (an owner's section is a few hundred
/// instructions: it is out at once unless preempted or stopped inside). Whether
/// `done` said so.
fn wait_until(until: Option<std::time::Instant>, mut done: impl FnMut() -> bool) -> bool {
    let mut rounds = 0u32;
    loop {
        if done() {
            return true;
        }
        let Some(until) = until else { return false };
        rounds += 1;
        if rounds < 64 {
            std::hint::spin_loop();
            continue;
        }
        let now = std::time::Instant::now();
        if now >= until {
            return false;
        }
        std::thread::sleep((until - now).min(std::time::Duration::from_micros(50)));
    }
}

/// A validated view of a pipe object in a mapped pool.
#[derive(Debug)]
pub(crate) struct Ring {
    head: NonNull<PipeHead>,
    cells: NonNull<Cell>,
    cap: u64,
    /// `cap - 1` when `cap` is a power of two (the index of a position is then a
    /// mask, not a division: tens of cycles a value), else 0.
    mask: u64,
    /// A limit this handle's senders found (see the module comment): positions
    /// below it are read for good, so a stale value is only too cautious.
    /// Process-local; written under the send turn.
    lim: AtomicU64,
}

// SAFETY: the pointers name shared memory made of atomics only, kept mapped by the
// pool handle every `Ring` is stored next to (see `Inner`); any thread may use them.
unsafe impl Send for Ring {}
// SAFETY: as above: every access is atomic.
unsafe impl Sync for Ring {}

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
        Ok(Ring {
            head: NonNull::from(head),
            cells: NonNull::from(cells),
            cap,
            mask: if cap.is_power_of_two() { cap - 1 } else { 0 },
            lim: AtomicU64::new(0),
        })
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

    #[inline]
    pub(crate) fn head(&self) -> &PipeHead {
        // SAFETY: validated in `attach`; mapped while the owning pool handle lives.
        unsafe { self.head.as_ref() }
    }

    #[inline]
    fn cell(&self, pos: u64) -> &Cell {
        // SAFETY: `pos % cap < cap` and `cap` cells were bounds-checked in `attach`.
        unsafe { &*self.cells.as_ptr().add(self.index(pos)) }
    }

    /// The cell index of position `pos` (`< cap`).
    #[inline]
    fn index(&self, pos: u64) -> usize {
        (if self.mask != 0 {
            pos & self.mask
        } else {
            pos % self.cap
        }) as usize
    }

    /// The cells of positions `pos, pos + 1, ...` (wrapping around the ring), with
    /// their positions: one division for a whole run.
    #[inline]
    fn run(&self, pos: u64) -> impl Iterator<Item = (u64, &Cell)> + '_ {
        let cap = self.cap as usize;
        let mut i = self.index(pos);
        (pos..).map(move |p| {
            // SAFETY: `i < cap`, and `cap` cells were bounds-checked in `attach`.
            let c = unsafe { &*self.cells.as_ptr().add(i) };
            i += 1;
            if i == cap {
                i = 0;
            }
            (p, c)
        })
    }

    #[inline]
    fn user(&self, me: u16) -> &User {
        &self.head().users[usize::from(me) % USERS]
    }

    #[inline]
    pub(crate) fn cap(&self) -> u64 {
        self.cap
    }

    /// Whether senders must refuse (closing or closed).
    #[inline]
    pub(crate) fn is_closed(&self) -> bool {
        self.head().meta.closed.load(Acquire) != OPEN
    }

    /// Closes the pipe: senders refuse from now on; returns once no send that saw
    /// the pipe open can still land, and only then lets receivers report the end
    /// (see [`Ring::finish_close`]).
    pub(crate) fn close(&self) {
        let c = &self.head().meta.closed;
        let _ = c.compare_exchange(OPEN, CLOSING, SeqCst, SeqCst);
        let until = std::time::Instant::now() + shmval_alloc::LOCK_PATIENCE;
        if !self.finish_close(Some(until)) {
            // An owner stopped inside one send for that long: close anyway.
            self.head().meta.closed.store(CLOSED, SeqCst);
        }
    }

    /// Completes a close (anyone who finds the pipe closing may: a closer that dies
    /// half way holds nobody up). A claiming sender looks at `closed` again after its
    /// claim (both SeqCst) and gives the cells up if it is no longer open, so a
    /// claim that saw it open is visible to whoever sees CLOSED (and is waited for
    /// as a claimed cell). An owning sender looks only before filling, so its open
    /// section is waited out: the asymmetric Dekker of [`Ring::revoke`] — `closed`
    /// is stored before the membarrier and `busy` read after it, the owner stores
    /// `busy` before its look at `closed` — then `busy == 0` (Acquire: its cells
    /// and `tail` are visible) or the owner is dead. The wait lasts until `until`
    /// at most (`None`: not at all); returns whether the close is complete. `close`
    /// itself waits [`shmval_alloc::LOCK_PATIENCE`] for an owner stopped inside one
    /// send (stopped, traced), then completes anyway: that one value may land after.
    #[cold]
    pub(crate) fn finish_close(&self, until: Option<std::time::Instant>) -> bool {
        let h = self.head();
        if h.meta.closed.load(SeqCst) == CLOSED {
            return true;
        }
        // Without the barrier (a kernel without it) no process can own a side.
        let _ = crate::sys::membarrier_global();
        let owner_out = || {
            let b = h.send_bias.load(Acquire);
            if b & OWNED == 0 || h.send_busy.load(Acquire) == 0 {
                return true;
            }
            let t = h.users[owner_user(b)].token.load(Acquire);
            t == 0 || !crate::platform::token_alive(t)
        };
        if !wait_until(until, owner_out) {
            return false;
        }
        h.meta.closed.store(CLOSED, SeqCst);
        true
    }

    /// The counter, bias and busy words of side `d`.
    #[inline]
    fn side(&self, d: Dir) -> (&AtomicU64, &AtomicU64, &AtomicU64) {
        let h = self.head();
        match d {
            Dir::Send => (&h.tail, &h.send_bias, &h.send_busy),
            Dir::Recv => (&h.head, &h.recv_bias, &h.recv_busy),
        }
    }

    /// Enters an owner's section of the side with words `bias` and `busy`: whether
    /// `me` owns the side (then leave with `busy := 0`, Release).
    #[inline]
    fn enter(bias: &AtomicU64, busy: &AtomicU64, me: u64) -> bool {
        if bias.load(Relaxed) != me {
            return false;
        }
        busy.store(1, Relaxed);
        // The asymmetric Dekker pattern: a revoker changes `bias`, then issues a
        // membarrier (a full barrier on every CPU running a registered process,
        // owners all are), then reads `busy`. So either this store is seen by the
        // revoker, or the load below sees its change; the compiler must not swap them.
        compiler_fence(SeqCst);
        if bias.load(Relaxed) == me {
            return true;
        }
        busy.store(0, Release);
        false
    }

    /// A send by `me`, if it owns the send side (else `None`): as [`Ring::try_push`]
    /// without a claim. The owner fills the cells, then moves `tail` past them with
    /// a plain store; no record, no locked instruction.
    #[inline]
    pub(crate) fn push_owned(&self, pool: &Pool, vals: &[Raw], me: u64) -> Option<Push> {
        let h = self.head();
        if !Self::enter(&h.send_bias, &h.send_busy, me) {
            return None;
        }
        let r = self.push_run(pool, vals);
        h.send_busy.store(0, Release);
        if matches!(r, Push::Sent(_)) {
            h.not_empty.notify_waiters();
        }
        Some(r)
    }

    /// The owner's send of one value, all or nothing, with nothing on the way that
    /// a plain single-producer ring would not do: `false` (nothing done) unless `me`
    /// owns the send side, the pipe is open and the limit this handle last saw
    /// leaves room; the general path ([`Ring::push_owned`]) handles every other case.
    #[inline(always)]
    pub(crate) fn push_one_owned(&self, r: Raw, me: u64) -> bool {
        let h = self.head();
        if !Self::enter(&h.send_bias, &h.send_busy, me) {
            return false;
        }
        let t = h.tail.load(Relaxed);
        let ok = !self.is_closed() && t < self.lim.load(Relaxed) + self.cap;
        if ok {
            fail_point!("pipe.send.owned.looked");
            let cell = self.cell(t);
            cell.slot.payload.store(r.payload, Relaxed);
            cell.slot.tag.store(r.tag_word(), Relaxed);
            // Release is enough for the sleeper check below: an owner's process is
            // registered for membarrier, which every sleeper issues (`EventCount`).
            cell.word.store(word(t, FULL), Release);
            fail_point!("pipe.send.owned.filled");
            h.tail.store(t + 1, Release);
        }
        h.send_busy.store(0, Release);
        if ok {
            h.not_empty.notify_waiters();
        }
        ok
    }

    /// The owner's send, inside its section.
    #[inline]
    fn push_run(&self, pool: &Pool, vals: &[Raw]) -> Push {
        let h = self.head();
        if self.is_closed() {
            return Push::Closed;
        }
        let want = vals.len().min(MAX_CLAIM).min(self.cap as usize) as u64;
        let t = h.tail.load(Relaxed);
        let (room, by) = self.room(t, want);
        if room == 0 {
            return Push::Full(by);
        }
        let n = want.min(room) as usize;
        fail_point!("pipe.send.owned.looked");
        self.fill(pool, t, &vals[..n]);
        fail_point!("pipe.send.owned.filled");
        // Release: whoever sees the new tail sees the cells (and a revoker that
        // counts filled cells past a dead owner's tail finds the same ones).
        h.tail.store(t + n as u64, Release);
        Push::Sent(n)
    }

    /// Writes `vals` into the cells of positions `t ..` and marks them FULL.
    #[inline]
    fn fill(&self, pool: &Pool, t: u64, vals: &[Raw]) {
        let order = crate::platform::publish_order();
        for ((pos, cell), &r) in self.run(t).zip(vals) {
            pool.write(&cell.slot, r);
            // Ordered before the sleeper check of `notify_waiters`.
            cell.word.store(word(pos, FULL), order);
        }
    }

    /// A receive by `me`, if it owns the receive side (else `None`): as
    /// [`Ring::try_pop`] without a claim or a record. The owner reads the filled
    /// cells, then moves `head` past them (Release: after its reads).
    #[inline]
    pub(crate) fn pop_owned(
        &self,
        pool: &Pool,
        max: usize,
        me: u64,
        look: bool,
        out: &mut impl FnMut(Raw),
    ) -> Option<Pop> {
        let h = self.head();
        if !Self::enter(&h.recv_bias, &h.recv_busy, me) {
            return None;
        }
        let want = max.clamp(1, MAX_CLAIM).min(self.cap as usize);
        let mut moved = false;
        let r = loop {
            let hd = h.head.load(Relaxed);
            // One pass: read each FULL cell, step over SKIP ones, stop at the first
            // that is not filled.
            let (mut n, mut got) = (0, 0);
            for (pos, cell) in self.run(hd).take(want) {
                let w = cell.word.load(Acquire);
                if w == word(pos, FULL) {
                    out(pool.read(&cell.slot));
                    got += 1;
                } else if w != word(pos, SKIP) {
                    break;
                }
                n += 1;
            }
            if n == 0 {
                break self.empty(hd, look);
            }
            fail_point!("pipe.recv.owned.read");
            h.head.store(hd + n, Release);
            moved = true;
            if got > 0 {
                break Pop::Got(got);
            }
        };
        h.recv_busy.store(0, Release);
        if moved {
            h.not_full.notify_waiters();
        }
        Some(r)
    }

    /// The owner's receive of one value (as [`Ring::push_one_owned`]): `None`
    /// (nothing done) unless `me` owns the receive side and the cell at `head` holds
    /// a value; [`Ring::pop_owned`] handles every other case.
    /// With `rounds` > 0 it looks at the cell again after a pause up to `rounds`
    /// more times while it is not filled, inside one owner's section (a revoker
    /// waits those few microseconds out): between looks nothing but the cell's word
    /// is read, so a hand-off is seen as soon as the line arrives.
    #[inline(always)]
    pub(crate) fn pop_one_owned(&self, me: u64, rounds: u32) -> Option<Raw> {
        let h = self.head();
        if !Self::enter(&h.recv_bias, &h.recv_busy, me) {
            return None;
        }
        let hd = h.head.load(Relaxed);
        let cell = self.cell(hd);
        let full = word(hd, FULL);
        let mut left = rounds;
        while cell.word.load(Acquire) != full && left > 0 {
            std::hint::spin_loop();
            left -= 1;
        }
        let got = (cell.word.load(Acquire) == full).then(|| {
            let r = Raw::from_words(cell.slot.tag.load(Relaxed), cell.slot.payload.load(Relaxed));
            fail_point!("pipe.recv.owned.read");
            // Release: after the reads (a sender may refill the cell once it sees this).
            h.head.store(hd + 1, Release);
            r
        });
        h.recv_busy.store(0, Release);
        if got.is_some() {
            h.not_full.notify_waiters();
        }
        got
    }

    /// What an empty pipe at position `hd` says: closed (when no sender claimed
    /// `hd` before the close: it still fills it), or empty, with the claimed cell
    /// if asked to `look`.
    #[inline]
    fn empty(&self, hd: u64, look: bool) -> Pop {
        let h = self.head();
        let closed = h.meta.closed.load(SeqCst);
        if closed == CLOSING {
            return Pop::Closing;
        }
        let closed = closed != OPEN;
        // SeqCst: ordered after the load that saw CLOSED (see `finish_close`).
        let claimed = (look || closed) && h.tail.load(SeqCst) > hd;
        if closed && !claimed {
            Pop::Closed
        } else {
            let w = self.cell(hd).word.load(Acquire);
            Pop::Empty(claimed.then_some(Stuck::Cell { pos: hd, word: w }))
        }
    }

    /// Settles how the caller, owner word `me`, uses side `d`: returns whether `me`
    /// owns it now (else the side is shared, for good). A free side is taken when
    /// `can_own` (this process is registered for membarrier), else made shared;
    /// another thread's ownership is revoked (see [`Ring::revoke`]), waiting for
    /// the owner to leave its section until `until` at most (`None`: not at all);
    /// `Ok(None)`: the owner was still inside then (stopped, traced, or a corrupt
    /// word naming a live process). `Err(())`: the kernel refused the membarrier a
    /// revocation needs.
    #[cold]
    pub(crate) fn settle(
        &self,
        d: Dir,
        me: u64,
        can_own: bool,
        until: Option<std::time::Instant>,
    ) -> Result<Option<bool>, ()> {
        let (_, bias, busy) = self.side(d);
        loop {
            let b = bias.load(Acquire);
            if b == me {
                return Ok(Some(true));
            }
            if b == SHARED {
                return Ok(Some(false));
            }
            if b == FREE {
                let new = if can_own { me } else { SHARED };
                if bias.compare_exchange(FREE, new, AcqRel, Relaxed).is_ok() {
                    if new == me {
                        // Only owners write it; a dead one may have left it set.
                        busy.store(0, Release);
                    }
                    return Ok(Some(new == me));
                }
            } else if b & 3 == OWNED {
                let _ = bias.compare_exchange(b, b | REVOKING, AcqRel, Relaxed);
            } else if !self.revoke(d, b, until)? {
                return Ok(None);
            }
        }
    }

    /// Completes the revocation of side `d`'s owner (bias word `b`, REVOKING; any
    /// number of threads may do this at once). After a membarrier every section the
    /// owner enters sees `b`; the section it may be in is waited out (`busy` goes
    /// to 0) unless the owner is dead. A dead sender's cells filled past `tail` are
    /// counted in; a dead receiver needs nothing (it moves `head` after its reads:
    /// what it read and did not count is read again). The side becomes free if the
    /// owner is gone, else shared. The wait for a live owner lasts until `until` at
    /// most (`None`: one look); `Ok(false)` then: the side stays being revoked, and
    /// the next caller (anyone) goes on with it.
    #[cold]
    fn revoke(&self, d: Dir, b: u64, until: Option<std::time::Instant>) -> Result<bool, ()> {
        let (_, bias, busy) = self.side(d);
        if !crate::sys::membarrier_global() {
            return Err(());
        }
        let u = &self.head().users[owner_user(b)];
        let gone = || {
            let t = u.token.load(Acquire);
            t == 0 || !crate::platform::token_alive(t)
        };
        let mut dead = false;
        let out = wait_until(until, || {
            if busy.load(Acquire) == 0 {
                dead = gone();
                return true;
            }
            dead = gone();
            dead
        });
        if !out {
            return Ok(false);
        }
        if dead && d == Dir::Send {
            self.count_filled();
        }
        let _ = bias.compare_exchange(b, if dead { FREE } else { SHARED }, AcqRel, Relaxed);
        Ok(true)
    }

    /// Moves `tail` past the cells a dead send owner filled without counting them
    /// (a cell filled at position `tail` can be nothing else: everyone else fills
    /// only what they claimed). A compare-and-swap each, so concurrent callers agree.
    fn count_filled(&self) {
        let h = self.head();
        loop {
            let t = h.tail.load(Acquire);
            if !filled(self.cell(t).word.load(Acquire), t) {
                return;
            }
            let _ = h.tail.compare_exchange(t, t + 1, AcqRel, Relaxed);
        }
    }

    /// One attempt to put the values of `vals` (not empty) at the tail, as many as
    /// there is room for. On `Sent(n)` the cells own the first `n` references.
    /// The caller holds its process's send turn (see the module comment).
    #[inline]
    pub(crate) fn try_push(&self, pool: &Pool, vals: &[Raw], me: u16) -> Result<Push, ValError> {
        let h = self.head();
        if self.is_closed() {
            return Ok(Push::Closed);
        }
        fail_point!("pipe.send.shared.looked");
        let rec = &self.user(me).send;
        let want = vals.len().min(MAX_CLAIM).min(self.cap as usize) as u64;
        loop {
            let t = h.tail.load(Acquire);
            let (room, by) = self.room(t, want);
            if room == 0 {
                if h.tail.load(Acquire) != t {
                    continue; // another sender moved on: look again
                }
                return Ok(Push::Full(by));
            }
            let n = want.min(room) as usize;
            if !Self::claim(&h.tail, rec, t, n) {
                continue;
            }
            fail_point!("pipe.send.shared.claimed");
            if h.meta.closed.load(SeqCst) != OPEN {
                // Closed since the look above: the claimed cells are given up
                // (SKIP), the values stay the caller's (see `finish_close`).
                for (pos, cell) in self.run(t).take(n) {
                    cell.word.store(word(pos, SKIP), Release);
                }
                rec.store(0, Release);
                h.not_empty.notify_waiters();
                return Ok(Push::Closed);
            }
            self.fill(pool, t, &vals[..n]);
            rec.store(0, Release);
            h.not_empty.notify_waiters();
            return Ok(Push::Sent(n));
        }
    }

    /// Room for sending at position `t`: from the cached limit if it leaves room for
    /// `want`, else from the limit now (cached for next time), with the receive
    /// record that set it. `t >= lim`: a limit is at most a head seen, and tail never
    /// falls behind it.
    #[inline]
    fn room(&self, t: u64, want: u64) -> (u64, Option<Stuck>) {
        let room = (self.lim.load(Relaxed) + self.cap).saturating_sub(t);
        if room >= want {
            return (room, None);
        }
        let (lim, by) = self.limit();
        if lim > self.lim.load(Relaxed) {
            self.lim.store(lim, Relaxed);
        }
        ((lim + self.cap).saturating_sub(t), by)
    }

    /// The senders' limit now: `head`, or the start of the oldest receive record
    /// below it, with that record (the receiver senders wait for).
    fn limit(&self) -> (u64, Option<Stuck>) {
        let h = self.head();
        // Head first: a record of every claim below it is then seen (written before
        // the claimer's CAS), or its clearing (after the claimer's last read).
        let hd = h.head.load(Acquire);
        let used = (h.meta.users_used.load(Acquire) as usize).min(USERS);
        let mut lim = (hd, None);
        for (i, u) in h.users[..used].iter().enumerate() {
            let r = u.recv.load(Acquire);
            if count(r) != 0 {
                let from = unmask(r >> 16, hd);
                if from < lim.0 {
                    lim = (
                        from,
                        Some(Stuck::Record {
                            user: i as u16,
                            rec: r,
                        }),
                    );
                }
            }
        }
        lim
    }

    /// One attempt to take up to `max` (≥ 1) values at the head, handing each to
    /// `out` in order. `look`: on an empty pipe, also tell whether the next cell is
    /// claimed by a sender that has not filled it (reads the senders' counter).
    /// The caller holds its process's receive turn.
    #[inline]
    pub(crate) fn try_pop(
        &self,
        pool: &Pool,
        max: usize,
        me: u16,
        look: bool,
        out: &mut impl FnMut(Raw),
    ) -> Result<Pop, ValError> {
        let h = self.head();
        let rec = &self.user(me).recv;
        let want = max.clamp(1, MAX_CLAIM).min(self.cap as usize);
        loop {
            let hd = h.head.load(Acquire);
            let n = self
                .run(hd)
                .take(want)
                .take_while(|&(pos, c)| filled(c.word.load(Acquire), pos))
                .count();
            if n == 0 {
                let w = self.cell(hd).word.load(Acquire);
                if h.head.load(Acquire) != hd || filled(w, hd) {
                    continue; // raced with another receiver, or a value just came
                }
                return Ok(self.empty(hd, look));
            }
            if !Self::claim(&h.head, rec, hd, n) {
                continue;
            }
            // Won: a recoverer may release the run if this process dies now.
            rec.store(record(hd, n) | WON, Relaxed);
            fail_point!("pipe.recv.shared.claimed");
            let mut got = 0;
            for (pos, cell) in self.run(hd).take(n) {
                // Filled as seen before the claim (Acquire); nobody writes it until
                // the record is cleared.
                if cell.word.load(Relaxed) == word(pos, FULL) {
                    out(pool.read(&cell.slot));
                    got += 1;
                }
            }
            // The cells are free for the senders' next lap.
            rec.store(0, Release);
            h.not_full.notify_waiters();
            if got > 0 {
                return Ok(Pop::Got(got));
            }
        }
    }

    /// Claims positions `from .. from + n` by moving `counter` past them, the range
    /// written into the claimer's record `rec` first (Release on the counter:
    /// whoever sees it past `from` sees the record); a lost CAS clears the record.
    #[inline]
    fn claim(counter: &AtomicU64, rec: &AtomicU64, from: u64, n: usize) -> bool {
        // Release: whoever reads this record also sees the clearing of the last one
        // (and what came before it).
        rec.store(record(from, n), Release);
        // A claimer killed here leaves a record of a claim it never made.
        fail_point!("pipe.claim.recorded");
        // SeqCst: a sender's look at `closed` after its claim must not be ordered
        // before it (see `finish_close`).
        let won = counter
            .compare_exchange(from, from + n as u64, SeqCst, Relaxed)
            .is_ok();
        if !won {
            rec.store(0, Release);
        }
        won
    }

    /// Waits (a spin on the counters, not on the cell the receivers are taking,
    /// which would slow them down) until there is room for more than a few values
    /// (half the ring, at most [`ROOM_SLACK`]), so that a full pipe drains in runs
    /// rather than value by value — for as long as `more` (the caller's spin budget)
    /// says. A small ring waits for half of it to be free: for a ring of 32 or fewer
    /// the old threshold (32 free) could never be met and every blocked send spun
    /// its full count, ~500 µs.
    pub(crate) fn wait_for_room(&self, mut more: impl FnMut() -> bool) {
        let h = self.head();
        let room = self.cap - ROOM_SLACK.min(self.cap / 2);
        for _ in 0..ROOM_SPINS {
            let (t, hd) = (h.tail.load(Relaxed), h.head.load(Relaxed));
            if t.saturating_sub(hd) < room || self.is_closed() || !more() {
                return;
            }
        }
    }

    /// Whether what holds a waiter up belongs to a dead process; if so, moves it on
    /// (see [`Ring::recover_cells`], [`Ring::recover_record`]). Returns whether
    /// anything changed.
    pub(crate) fn unstick(&self, pool: &Pool, s: Stuck) -> bool {
        match s {
            Stuck::Cell { pos, word } => self.sender_dead(pos) && self.recover_cells(pos, word),
            Stuck::Record { user, rec } => {
                let u = &self.head().users[usize::from(user) % USERS];
                let t = u.token.load(Acquire);
                u.recv.load(Acquire) == rec
                    && (t == 0 || !crate::platform::token_alive(t))
                    && self.recover_record(pool, user, rec)
            }
        }
    }

    /// Whether no live process's send record covers position `pos` (claimed, not
    /// filled: so its claimer is dead). Called after `tail` was seen past `pos`.
    fn sender_dead(&self, pos: u64) -> bool {
        !self.head().users.iter().any(|u| {
            if !covers(u.send.load(Acquire), pos) {
                return false;
            }
            let t = u.token.load(Acquire);
            t != 0 && crate::platform::token_alive(t)
        })
    }

    /// Makes position `pos` (its cell saying `w`, its claimer found dead) SKIP, and
    /// the positions after it left unfilled by dead claimers too (the rest of a dead
    /// sender's range), so that a range costs one wait, not one per cell. Returns
    /// whether a cell changed.
    fn recover_cells(&self, mut pos: u64, mut w: u64) -> bool {
        let h = self.head();
        let mut changed = false;
        for _ in 0..self.cap {
            let ok = self
                .cell(pos)
                .word
                .compare_exchange(w, word(pos, SKIP), SeqCst, Relaxed)
                .is_ok();
            if ok {
                h.not_empty.notify();
            }
            changed |= ok;
            pos += 1;
            w = self.cell(pos).word.load(Acquire);
            if filled(w, pos) || h.tail.load(Acquire) <= pos || !self.sender_dead(pos) {
                break;
            }
        }
        changed
    }

    /// Clears the receive record `r` of the dead user entry `user`. A won record's
    /// values are released: its claimer never handed them on (they were read into
    /// its own hands at most, which died with it). Returns whether this call cleared
    /// the record.
    fn recover_record(&self, pool: &Pool, user: u16, r: u64) -> bool {
        let h = self.head();
        let u = &h.users[usize::from(user) % USERS];
        let mut vals = Vec::new();
        if r & WON != 0 {
            // Stable while the record stands (senders stop below it): read first,
            // own them by the CAS, then release (a death in between leaks, never
            // frees twice).
            let from = unmask(r >> 16, h.head.load(Acquire));
            for (pos, c) in self.run(from).take(count(r)) {
                if c.word.load(Acquire) == word(pos, FULL) {
                    vals.push(pool.read(&c.slot));
                }
            }
        }
        if u.recv.compare_exchange(r, 0, AcqRel, Relaxed).is_err() {
            return false;
        }
        for v in vals {
            pool.release(v);
        }
        h.not_full.notify();
        true
    }

    /// Takes a user entry for the process `token`: a free one, else one of a dead
    /// process (its receive record recovered first; its unfinished send claims are
    /// then covered by no live record and are recovered by whoever waits behind
    /// them).
    pub(crate) fn register(&self, pool: &Pool, token: u64) -> Option<u16> {
        let h = self.head();
        let take = |i: usize, u: &User| {
            if u.token.load(Acquire) != 0
                || u.token.compare_exchange(0, token, AcqRel, Relaxed).is_err()
            {
                return None;
            }
            // The entry is ours: clear what a previous owner left.
            u.send.store(0, Release);
            u.recv.store(0, Release);
            h.meta.users_used.fetch_max(i as u64 + 1, AcqRel);
            Some(i as u16)
        };
        if let Some(i) = h.users.iter().enumerate().find_map(|(i, u)| take(i, u)) {
            return Some(i);
        }
        for (i, u) in h.users.iter().enumerate() {
            let t = u.token.load(Acquire);
            if t != 0 && t != token && !crate::platform::token_alive(t) {
                let r = u.recv.load(Acquire);
                if r != 0 {
                    self.recover_record(pool, i as u16, r);
                }
                // A side it owned is revoked while its token still says who it was
                // (a revoker judges the owner by its entry).
                for d in [Dir::Send, Dir::Recv] {
                    let b = self.side(d).1.load(Acquire);
                    if b & 2 != 0 && owner_user(b) == i {
                        let _ = self
                            .side(d)
                            .1
                            .compare_exchange(b, b | REVOKING, AcqRel, Relaxed);
                        // The owner is dead: one look completes it.
                        if self.revoke(d, b | REVOKING, None) != Ok(true) {
                            return None; // entry left to a revoker that can
                        }
                    }
                }
                // Free it, then take it like any free entry.
                let _ = u.token.compare_exchange(t, 0, AcqRel, Relaxed);
            }
        }
        h.users.iter().enumerate().find_map(|(i, u)| take(i, u))
    }

    /// Gives a user entry back (no claims of it are outstanding, no section of it
    /// is open): a side one of its threads owns is freed first.
    pub(crate) fn unregister(&self, i: u16, token: u64) {
        for d in [Dir::Send, Dir::Recv] {
            let bias = self.side(d).1;
            let b = bias.load(Acquire);
            if b & 3 == OWNED && owner_user(b) == usize::from(i) {
                let _ = bias.compare_exchange(b, FREE, AcqRel, Relaxed);
            }
        }
        if let Some(u) = self.head().users.get(usize::from(i)) {
            let _ = u.token.compare_exchange(token, 0, AcqRel, Relaxed);
        }
    }

    /// Values the pipe holds: those sent and not claimed, and those of won receive
    /// records (a dead receiver's run, released by its recoverer). What a dying pipe
    /// releases and what `check` walks.
    pub(crate) fn held(&self, pool: &Pool, f: &mut dyn FnMut(Raw)) {
        let h = self.head();
        let hd = h.head.load(Acquire);
        for (_, cell) in self.run(0).take(self.cap as usize) {
            let w = cell.word.load(Acquire);
            if phase(w) == FULL && unmask(w >> 16, hd).wrapping_sub(hd) < self.cap {
                f(pool.read(&cell.slot));
            }
        }
        for u in &h.users {
            let r = u.recv.load(Acquire);
            if r & WON != 0 && count(r) != 0 {
                for (pos, c) in self.run(unmask(r >> 16, hd)).take(count(r)) {
                    if c.word.load(Acquire) == word(pos, FULL) {
                        f(pool.read(&c.slot));
                    }
                }
            }
        }
    }
}
