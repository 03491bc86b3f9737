//! The shared half of a pipe: a bounded ring of value cells in the pool, claimed cell
//! by cell with compare-and-swap, every claim naming its claimer.
//!
//! Each cell has one state word `position:48 | claimer:13 | phase:3`:
//!
//! ```text
//!            sender CAS           sender store          receiver CAS          receiver store
//! EMPTY(p) ───────────▶ WRITING(p,s) ──────────▶ FULL(p) ───────────▶ READING(p,r) ──────────▶ EMPTY(p+cap)
//!                           │ s dead: CAS                               │ r dead: read the value, CAS,
//!                           ▼                                           ▼ then release the value
//!                        SKIP(p) ──── receiver at p: CAS ──────────────────────────────────▶ EMPTY(p+cap)
//! ```
//!
//! `tail` and `head` are hints: the cell word is the truth. Whoever finds position
//! `p` claimed moves the hint from `p` to `p + 1` by CAS, so a claimer killed before
//! moving it stops nobody; the claimer itself moves it with a plain store (see
//! `advance`). Because the position is in the word, a CAS
//! can never succeed on a cell that moved on (no ABA short of 2^48 operations while
//! one caller sleeps between its load and its CAS).
//!
//! A claim names its claimer (an index into the pipe's user table of process tokens),
//! so a cell left `WRITING` or `READING` by a dead process is recognised and moved on
//! by whoever is blocked behind it: a half-written value is skipped (its reference
//! leaks: it was in the dead sender's hands), a half-read one is released (the dead
//! receiver never got it).

use crate::shm::layout::{ObjHeader, Slot, HDR};
use crate::shm::{Raw, ValError};
use crate::sync::EventCount;
use crate::Pool;
use std::ptr::NonNull;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed, Release, SeqCst};

/// Entries of a pipe's user table (processes attached to the pipe at once).
pub(crate) const USERS: usize = 256;
/// Bytes of a cell (a cache line: neighbouring cells never share one).
pub(crate) const CELL: usize = 64;
/// Largest capacity of a pipe.
pub(crate) const MAX_CAP: u64 = 1 << 24;
/// "SVPIPE01".
pub(crate) const MAGIC: u64 = u64::from_le_bytes(*b"SVPIPE01");

const POS_MASK: u64 = (1 << 48) - 1;
/// A sender that found the pipe full waits for this much room (or a quarter of a
/// small pipe) before trying again; see [`Ring::wait_for_room`].
const ROOM_SLACK: u64 = 32;
/// Pauses [`Ring::wait_for_room`] waits at most (~20 µs here: inside the spin phase,
/// whose deadline checks it does not replace).
const ROOM_SPINS: u32 = 1024;
pub(crate) const EMPTY: u64 = 0;
pub(crate) const WRITING: u64 = 1;
pub(crate) const FULL: u64 = 2;
pub(crate) const READING: u64 = 3;
pub(crate) const SKIP: u64 = 4;

/// A cell's state word.
#[inline]
pub(crate) const fn word(pos: u64, phase: u64, who: u16) -> u64 {
    (pos & POS_MASK) << 16 | (who as u64) << 3 | phase
}
#[inline]
pub(crate) const fn phase(w: u64) -> u64 {
    w & 7
}
#[inline]
pub(crate) const fn who(w: u64) -> u16 {
    ((w >> 3) & 0x1FFF) as u16
}
/// `position(w) - pos` in 48-bit modular arithmetic.
#[inline]
fn dist(w: u64, pos: u64) -> i64 {
    (((w >> 16).wrapping_sub(pos & POS_MASK) << 16) as i64) >> 16
}

/// Fixed fields of a pipe after its object header.
#[repr(C)]
#[derive(Debug)]
pub(crate) struct Meta {
    pub magic: AtomicU64,
    pub cap: AtomicU64,
    /// Entries of the user table ([`USERS`]).
    pub users: AtomicU64,
    /// Non-zero once closed.
    pub closed: AtomicU64,
    /// Creation time (Unix ns).
    pub created_ns: AtomicU64,
    _reserved: [AtomicU64; 3],
}

/// A pipe object: header, meta, the two position hints and the two eventcounts on
/// lines of their own, the user table; `cap` cells follow at [`CELLS_OFF`].
#[repr(C)]
#[derive(Debug)]
pub(crate) struct PipeHead {
    pub obj: ObjHeader,
    pub meta: Meta,
    _p0: [AtomicU64; 6],
    /// Next position to send (hint).
    pub tail: AtomicU64,
    _p1: [AtomicU64; 15],
    /// Next position to receive (hint).
    pub head: AtomicU64,
    _p2: [AtomicU64; 15],
    /// Receivers sleep here.
    pub not_empty: EventCount,
    _p3: [u32; 31],
    /// Senders sleep here.
    pub not_full: EventCount,
    _p4: [u32; 31],
    /// Process token of each user (0 = free).
    pub users: [AtomicU64; USERS],
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

/// Offset of the first cell in a pipe object.
pub(crate) const CELLS_OFF: usize = std::mem::size_of::<PipeHead>();
const _: () = assert!(std::mem::offset_of!(PipeHead, meta) == HDR);
const _: () = assert!(std::mem::offset_of!(PipeHead, tail) == 128);
const _: () = assert!(std::mem::offset_of!(PipeHead, head) == 256);
const _: () = assert!(std::mem::offset_of!(PipeHead, not_empty) == 384);
const _: () = assert!(std::mem::offset_of!(PipeHead, not_full) == 512);
const _: () = assert!(std::mem::offset_of!(PipeHead, users) == 640);
const _: () = assert!(CELLS_OFF == 640 + 8 * USERS && CELLS_OFF % 64 == 0);
const _: () = assert!(std::mem::size_of::<Cell>() == CELL);

/// Bytes of a pipe object of `cap` cells.
pub(crate) fn object_size(cap: u64) -> u64 {
    CELLS_OFF as u64 + cap * CELL as u64
}

/// A claimed cell someone is waiting behind: its position and the word seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stuck {
    pub pos: u64,
    pub word: u64,
}

/// Outcome of one send attempt.
pub(crate) enum Push {
    Sent,
    /// No room; `Some(stuck)` when the cell in the way is claimed by someone.
    Full(Option<Stuck>),
    Closed,
}

/// Outcome of one receive attempt.
pub(crate) enum Pop {
    Got(Raw),
    /// Nothing to take; `Some(stuck)` when a sender is writing the next cell.
    Empty(Option<Stuck>),
    Closed,
}

/// A validated view of a pipe object in a mapped pool.
#[derive(Debug)]
pub(crate) struct Ring {
    head: NonNull<PipeHead>,
    cells: NonNull<Cell>,
    cap: u64,
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
            return Err(bad("bad magic"));
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
                .store(word(i, EMPTY, 0), Relaxed);
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
        unsafe { &*self.cells.as_ptr().add((pos % self.cap) as usize) }
    }

    pub(crate) fn cap(&self) -> u64 {
        self.cap
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.head().meta.closed.load(Acquire) != 0
    }

    /// One attempt to put `r` at the tail. On `Sent` the cell owns `r`'s reference.
    #[inline]
    pub(crate) fn try_push(
        &self,
        pool: &Pool,
        r: Raw,
        me: u16,
        mut guess: bool,
    ) -> Result<Push, ValError> {
        let h = self.head();
        if self.is_closed() {
            return Ok(Push::Closed);
        }
        let mut strange = 0u32;
        loop {
            let pos = h.tail.load(Acquire);
            let cell = self.cell(pos);
            let mine = word(pos, WRITING, me);
            let seen = Self::observe(cell, word(pos, EMPTY, 0), mine, guess);
            guess = false;
            let w = seen.unwrap_or(mine);
            let d = dist(w, pos);
            let claimed = match seen {
                None => {
                    Self::advance(&h.tail, pos);
                    true
                }
                Some(w) => d == 0 && phase(w) == EMPTY && Self::claim(cell, w, mine, &h.tail, pos),
            };
            if claimed {
                pool.write(&cell.slot, r);
                // Ordered before the sleeper check of `notify_waiters`.
                cell.word
                    .store(word(pos, FULL, 0), crate::platform::publish_order());
                h.not_empty.notify_waiters();
                return Ok(Push::Sent);
            }
            if d == 0 && phase(w) == EMPTY {
                continue; // lost the claim race
            }
            if d >= 0 {
                // Position `pos` is taken (or long done): the hint lags; move it.
                let _ = h.tail.compare_exchange(pos, pos + 1, Release, Relaxed);
                continue;
            }
            if d == -(self.cap as i64) {
                if h.tail.load(Acquire) != pos {
                    continue;
                }
                let claimed = matches!(phase(w), WRITING | READING);
                return Ok(Push::Full(claimed.then_some(Stuck { pos, word: w })));
            }
            strange += 1;
            if strange > 1000 {
                return Err(ValError::Corrupt {
                    what: format!("pipe cell word {w:#x} impossible at tail {pos}"),
                });
            }
            std::hint::spin_loop();
        }
    }

    /// One attempt to take the value at the head. On `Got` the caller owns it.
    #[inline]
    pub(crate) fn try_pop(&self, pool: &Pool, me: u16, mut guess: bool) -> Result<Pop, ValError> {
        let h = self.head();
        let mut strange = 0u32;
        loop {
            let pos = h.head.load(Acquire);
            let cell = self.cell(pos);
            let mine = word(pos, READING, me);
            let seen = Self::observe(cell, word(pos, FULL, 0), mine, guess);
            guess = false;
            // A won guess reads as FULL(pos): the claim is then taken below.
            let w = seen.unwrap_or(word(pos, FULL, 0));
            let d = dist(w, pos);
            if d == 0 {
                match phase(w) {
                    FULL => {
                        if seen.is_none() {
                            Self::advance(&h.head, pos);
                        } else if !Self::claim(cell, w, mine, &h.head, pos) {
                            continue;
                        }
                        let r = pool.read(&cell.slot);
                        cell.word.store(
                            word(pos + self.cap, EMPTY, 0),
                            crate::platform::publish_order(),
                        );
                        h.not_full.notify_waiters();
                        return Ok(Pop::Got(r));
                    }
                    SKIP => {
                        if cell
                            .word
                            .compare_exchange(w, word(pos + self.cap, EMPTY, 0), SeqCst, Relaxed)
                            .is_ok()
                        {
                            let _ = h.head.compare_exchange(pos, pos + 1, Release, Relaxed);
                            h.not_full.notify_waiters();
                        }
                        continue;
                    }
                    EMPTY => {
                        if h.head.load(Acquire) != pos {
                            continue;
                        }
                        return Ok(if self.is_closed() {
                            Pop::Closed
                        } else {
                            Pop::Empty(None)
                        });
                    }
                    WRITING => return Ok(Pop::Empty(Some(Stuck { pos, word: w }))),
                    READING => {
                        let _ = h.head.compare_exchange(pos, pos + 1, Release, Relaxed);
                        continue;
                    }
                    _ => {}
                }
            } else if d > 0 {
                let _ = h.head.compare_exchange(pos, pos + 1, Release, Relaxed);
                continue;
            } else if d == -(self.cap as i64) && phase(w) == READING {
                // The previous lap's receiver has not finished: nothing was sent at
                // `pos` yet (a sender needs this cell back first).
                if h.head.load(Acquire) != pos {
                    continue;
                }
                return Ok(if self.is_closed() {
                    Pop::Closed
                } else {
                    Pop::Empty(Some(Stuck { pos, word: w }))
                });
            }
            strange += 1;
            if strange > 1000 {
                return Err(ValError::Corrupt {
                    what: format!("pipe cell word {w:#x} impossible at head {pos}"),
                });
            }
            std::hint::spin_loop();
        }
    }

    /// The cell's word, or `None` when `guess` is set and a CAS from `usual` to
    /// `claimed` took the cell: when the cell is usually in the state wanted, one CAS
    /// fetches its line from the other side's core once, where a load and then a CAS
    /// would fetch it twice (shared, then owned). Spinning callers do not guess: a
    /// failing CAS takes the line away from the other side too.
    #[inline]
    fn observe(cell: &Cell, usual: u64, claimed: u64, guess: bool) -> Option<u64> {
        if !guess {
            return Some(cell.word.load(Acquire));
        }
        cell.word
            .compare_exchange(usual, claimed, Acquire, Acquire)
            .err()
    }

    /// Claims the cell of `pos` (seen as `w`) by one CAS to `claimed`, then moves the
    /// hint past `pos`.
    #[inline]
    fn claim(cell: &Cell, w: u64, claimed: u64, hint: &AtomicU64, pos: u64) -> bool {
        if cell
            .word
            .compare_exchange(w, claimed, Acquire, Relaxed)
            .is_err()
        {
            return false;
        }
        Self::advance(hint, pos);
        true
    }

    /// Moves a hint past the position this caller just claimed. A plain store, not a
    /// CAS (a locked instruction waits for every earlier store to reach the cache,
    /// here the other side's line): if a helper moved the hint further between the
    /// load and the store, the hint goes back a little, which costs whoever reads it
    /// a step forward per claimed cell, never a wrong answer (every decision is taken
    /// on the cell word; see `try_push`/`try_pop` on a cell ahead of the hint).
    #[inline]
    fn advance(hint: &AtomicU64, pos: u64) {
        if hint.load(Relaxed) == pos {
            hint.store(pos + 1, Release);
        }
    }

    /// Waits (a bounded spin on the receivers' position hint, not on the cell the
    /// receivers are taking, which would slow them down) until the hints say there
    /// is room for more than a few values, so that a full pipe drains in runs
    /// rather than value by value. Bounded: a hint left behind by a dead receiver
    /// costs a sender [`ROOM_SPINS`] pauses, then the cell decides.
    pub(crate) fn wait_for_room(&self) {
        let h = self.head();
        let room = self.cap - self.cap.min(ROOM_SLACK);
        for _ in 0..ROOM_SPINS {
            let (t, hd) = (h.tail.load(Relaxed), h.head.load(Relaxed));
            // A hint may step back a little (see `advance`): tail below head is room.
            if t.saturating_sub(hd) < room || self.is_closed() {
                return;
            }
            std::hint::spin_loop();
        }
    }

    /// Whether the claimer named in `w` is gone (its user entry is free or names a
    /// dead process).
    pub(crate) fn claimer_dead(&self, s: Stuck) -> bool {
        let i = who(s.word) as usize;
        let Some(u) = self.head().users.get(i) else {
            return true;
        };
        let t = u.load(Acquire);
        t == 0 || !crate::platform::token_alive(t)
    }

    /// Moves a cell claimed by a dead process on: `WRITING` becomes `SKIP` (the
    /// half-written value is abandoned), `READING` becomes the next lap's `EMPTY` and
    /// the value is released. Returns whether this call changed the cell.
    pub(crate) fn recover(&self, pool: &Pool, s: Stuck) -> bool {
        let (cell, w) = (self.cell(s.pos), s.word);
        let pos = w >> 16; // the masked position: `word` masks again
        match phase(w) {
            WRITING => {
                let ok = cell
                    .word
                    .compare_exchange(w, word(pos, SKIP, 0), SeqCst, Relaxed)
                    .is_ok();
                if ok {
                    self.head().not_empty.notify();
                }
                ok
            }
            READING => {
                // Stable while the word stays READING(pos): read it first, then own
                // it by the CAS, then release (a death in between leaks, never
                // double-frees).
                let r = pool.read(&cell.slot);
                let ok = cell
                    .word
                    .compare_exchange(w, word(pos + self.cap, EMPTY, 0), SeqCst, Relaxed)
                    .is_ok();
                if ok {
                    pool.release(r);
                    self.head().not_full.notify();
                }
                ok
            }
            _ => false,
        }
    }

    /// Recovers every cell claimed by user `i` (a dead process) before the entry is
    /// reused.
    fn sweep(&self, pool: &Pool, i: u16) {
        for c in 0..self.cap {
            let w = self.cell(c).word.load(Acquire);
            if who(w) == i && matches!(phase(w), WRITING | READING) {
                self.recover(pool, Stuck { pos: c, word: w });
            }
        }
    }

    /// Takes a user entry for the process `token`: a free one, else one of a dead
    /// process after recovering its claims.
    pub(crate) fn register(&self, pool: &Pool, token: u64) -> Option<u16> {
        let users = &self.head().users;
        for (i, u) in users.iter().enumerate() {
            if u.load(Relaxed) == 0 && u.compare_exchange(0, token, AcqRel, Relaxed).is_ok() {
                return Some(i as u16);
            }
        }
        for (i, u) in users.iter().enumerate() {
            let t = u.load(Acquire);
            if t != 0 && t != token && !crate::platform::token_alive(t) {
                self.sweep(pool, i as u16);
                if u.compare_exchange(t, token, AcqRel, Relaxed).is_ok() {
                    return Some(i as u16);
                }
            }
        }
        None
    }

    /// Gives a user entry back (no claims of it are outstanding).
    pub(crate) fn unregister(&self, i: u16, token: u64) {
        if let Some(u) = self.head().users.get(i as usize) {
            let _ = u.compare_exchange(token, 0, AcqRel, Relaxed);
        }
    }

    /// Values currently held by the cells (FULL, or READING by a dead receiver):
    /// what a dying pipe releases and what `check` walks.
    pub(crate) fn held(&self, pool: &Pool, f: &mut dyn FnMut(Raw)) {
        for c in 0..self.cap {
            let cell = self.cell(c);
            if matches!(phase(cell.word.load(Acquire)), FULL | READING) {
                f(pool.read(&cell.slot));
            }
        }
    }
}

impl Ring {
    /// Test hook: claims the next cell for writing (`write`) or reading and stops
    /// there, as a process killed at that instruction would.
    pub(crate) fn claim_and_stop(&self, me: u16, write: bool) -> bool {
        let h = self.head();
        let (hint, from, to) = if write {
            (&h.tail, EMPTY, WRITING)
        } else {
            (&h.head, FULL, READING)
        };
        let pos = hint.load(Acquire);
        let cell = self.cell(pos);
        let w = cell.word.load(Acquire);
        dist(w, pos) == 0 && phase(w) == from && Self::claim(cell, w, word(pos, to, me), hint, pos)
    }
}
