//! The shared half of a pipe: a bounded ring of value cells in the pool. Positions
//! are claimed in ranges by one compare-and-swap on a position counter (`tail` for
//! senders, `head` for receivers); the cells are then filled or emptied with plain
//! stores, so a stream of values costs no locked instruction per value.
//!
//! Each cell has one state word `position:48 | 0:13 | phase:3`:
//!
//! ```text
//!           sender: CAS tail past p, then store          receiver: CAS head past p, then store
//! EMPTY(p) ───────────────────────────────────▶ FULL(p) ─────────────────────────────────▶ EMPTY(p+cap)
//!    │ p claimed (tail > p), claimer dead: CAS                                                ▲
//!    ▼                                                                                        │
//! SKIP(p) ──────────────────── receiver: CAS head past p, then store ─────────────────────────┘
//! ```
//!
//! Before its CAS a claimer writes the range it is about to claim into its own user
//! entry (its *record*), and clears the record once every cell of the range is
//! filled (emptied). So a claimed cell that is not filled (emptied) is always
//! covered by the record of its claimer until it is. A cell that stays behind a
//! counter (EMPTY(p) with `tail > p`, or FULL/SKIP(p) with `head > p`) while no live
//! process's record covers it was claimed by a process that died: whoever waits
//! behind it moves it on by CAS — a half-sent cell becomes SKIP (its value, if any,
//! was in the dead sender's hands and leaks), a half-received one is released and
//! emptied (the dead receiver never had it to itself). A record may also cover
//! positions its writer failed to claim (lost CAS): that only delays recovery until
//! the writer clears or rewrites it, never makes a live claim look dead.
//!
//! Threads of one process share its user entry and so take turns (a process-local
//! lock in `Pipe`) to claim and fill; processes claim in parallel.

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
/// Most positions one claim takes (a record holds the count in 16 bits).
pub(crate) const MAX_CLAIM: usize = 0xFFFF;
/// "SVPIPE02" (02: range claims with records; 01 claimed cell by cell).
pub(crate) const MAGIC: u64 = u64::from_le_bytes(*b"SVPIPE02");

const POS_MASK: u64 = (1 << 48) - 1;
/// A sender that found the pipe full waits for this much room (or a quarter of a
/// small pipe) before trying again; see [`Ring::wait_for_room`].
const ROOM_SLACK: u64 = 32;
/// Pauses [`Ring::wait_for_room`] waits at most (~20 µs here: inside the spin phase,
/// whose deadline checks it does not replace).
const ROOM_SPINS: u32 = 1024;
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
/// A record: `n` positions from `from` (`n == 0`: none).
#[inline]
const fn record(from: u64, n: usize) -> u64 {
    (from & POS_MASK) << 16 | n as u64
}
/// Whether record `r` covers position `pos`.
#[inline]
fn covers(r: u64, pos: u64) -> bool {
    let n = r & 0xFFFF;
    n != 0 && (pos.wrapping_sub(r >> 16) & POS_MASK) < n
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

/// Offset of the first cell in a pipe object.
pub(crate) const CELLS_OFF: usize = std::mem::size_of::<PipeHead>();
const _: () = assert!(std::mem::offset_of!(PipeHead, meta) == HDR);
const _: () = assert!(std::mem::offset_of!(PipeHead, tail) == 128);
const _: () = assert!(std::mem::offset_of!(PipeHead, head) == 256);
const _: () = assert!(std::mem::offset_of!(PipeHead, not_empty) == 384);
const _: () = assert!(std::mem::offset_of!(PipeHead, not_full) == 512);
const _: () = assert!(std::mem::offset_of!(PipeHead, users) == 640);
const _: () = assert!(std::mem::size_of::<User>() == 64);
const _: () = assert!(CELLS_OFF == 640 + 64 * USERS && CELLS_OFF % 64 == 0);
const _: () = assert!(std::mem::size_of::<Cell>() == CELL);

/// Bytes of a pipe object of `cap` cells.
pub(crate) fn object_size(cap: u64) -> u64 {
    CELLS_OFF as u64 + cap * CELL as u64
}

/// A cell someone waits behind that a claimer has not finished with: its position
/// and the word seen (EMPTY: claimed by a sender; FULL/SKIP: by a receiver).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stuck {
    pub pos: u64,
    pub word: u64,
}

/// Outcome of one send attempt.
pub(crate) enum Push {
    /// The first `n` values are in the pipe.
    Sent(usize),
    /// No room; `Some(stuck)` when the cell in the way is claimed by a receiver that
    /// has not emptied it.
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
        unsafe { &*self.cells.as_ptr().add((pos % self.cap) as usize) }
    }

    /// The cells of positions `pos, pos + 1, ...` (wrapping around the ring), with
    /// their positions: one division for a whole run.
    #[inline]
    fn run(&self, pos: u64) -> impl Iterator<Item = (u64, &Cell)> + '_ {
        let cap = self.cap as usize;
        let mut i = (pos % self.cap) as usize;
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

    pub(crate) fn cap(&self) -> u64 {
        self.cap
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.head().meta.closed.load(Acquire) != 0
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
        let rec = &self.user(me).send;
        let want = vals.len().min(MAX_CLAIM).min(self.cap as usize);
        let mut strange = 0u32;
        loop {
            let t = h.tail.load(Acquire);
            let n = self
                .run(t)
                .take(want)
                .take_while(|&(pos, c)| c.word.load(Acquire) == word(pos, EMPTY))
                .count();
            if n == 0 {
                let w = self.cell(t).word.load(Acquire);
                if h.tail.load(Acquire) != t || w == word(t, EMPTY) {
                    continue; // raced with another sender, or room just came
                }
                let q = t.wrapping_sub(self.cap);
                if w >> 16 == q & POS_MASK {
                    // The previous lap is still in the cell: full. The cell is stuck
                    // when its claimer has not finished with it: a receiver that
                    // claimed it (FULL/SKIP, head past it) or a sender that has not
                    // filled it (EMPTY).
                    let stuck = match phase(w) {
                        FULL | SKIP => h.head.load(Acquire) > q,
                        _ => phase(w) == EMPTY,
                    };
                    return Ok(Push::Full(stuck.then_some(Stuck { pos: q, word: w })));
                }
                Self::strange(&mut strange, w, "tail", t)?;
                continue;
            }
            if !Self::claim(&h.tail, rec, t, n) {
                continue;
            }
            let order = crate::platform::publish_order();
            for ((pos, cell), &r) in self.run(t).zip(&vals[..n]) {
                pool.write(&cell.slot, r);
                // Ordered before the sleeper check of `notify_waiters`.
                cell.word.store(word(pos, FULL), order);
            }
            rec.store(0, Release);
            h.not_empty.notify_waiters();
            return Ok(Push::Sent(n));
        }
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
        let mut strange = 0u32;
        loop {
            let hd = h.head.load(Acquire);
            let n = self
                .run(hd)
                .take(want)
                .take_while(|&(pos, c)| {
                    let w = c.word.load(Acquire);
                    w == word(pos, FULL) || w == word(pos, SKIP)
                })
                .count();
            if n == 0 {
                let w = self.cell(hd).word.load(Acquire);
                if h.head.load(Acquire) != hd || w == word(hd, FULL) || w == word(hd, SKIP) {
                    continue; // raced with another receiver, or a value just came
                }
                let closed = self.is_closed();
                if w == word(hd, EMPTY) {
                    // Empty. A sender that claimed `hd` before a close still fills
                    // it: report Closed only when nobody did.
                    let claimed = (look || closed) && h.tail.load(Acquire) > hd;
                    return Ok(if closed && !claimed {
                        Pop::Closed
                    } else {
                        Pop::Empty(claimed.then_some(Stuck { pos: hd, word: w }))
                    });
                }
                let q = hd.wrapping_sub(self.cap);
                if w >> 16 == q & POS_MASK && matches!(phase(w), FULL | SKIP) {
                    // The previous lap's receiver has not emptied the cell yet:
                    // nothing was sent at `hd` (a sender needs the cell back first).
                    return Ok(if closed {
                        Pop::Closed
                    } else {
                        Pop::Empty(Some(Stuck { pos: q, word: w }))
                    });
                }
                Self::strange(&mut strange, w, "head", hd)?;
                continue;
            }
            if !Self::claim(&h.head, rec, hd, n) {
                continue;
            }
            let order = crate::platform::publish_order();
            let mut got = 0;
            for (pos, cell) in self.run(hd).take(n) {
                // FULL(pos) or SKIP(pos), as seen before the claim: only this
                // claimer (or, once it is dead, a recoverer) changes it now.
                let full = cell.word.load(Acquire) == word(pos, FULL);
                let r = full.then(|| pool.read(&cell.slot));
                cell.word.store(word(pos + self.cap, EMPTY), order);
                if let Some(r) = r {
                    out(r);
                    got += 1;
                }
            }
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
        rec.store(record(from, n), Relaxed);
        let won = counter
            .compare_exchange(from, from + n as u64, Release, Relaxed)
            .is_ok();
        if !won {
            rec.store(0, Relaxed);
        }
        won
    }

    /// Counts a cell word no protocol step can leave where it was seen (at the
    /// counter `which`, position `pos`); after 1000 of them the pipe is corrupt.
    #[cold]
    fn strange(count: &mut u32, w: u64, which: &str, pos: u64) -> Result<(), ValError> {
        *count += 1;
        if *count > 1000 {
            return Err(ValError::Corrupt {
                what: format!("pipe cell word {w:#x} impossible at {which} {pos}"),
            });
        }
        std::hint::spin_loop();
        Ok(())
    }

    /// Waits (a bounded spin on the counters, not on the cell the receivers are
    /// taking, which would slow them down) until there is room for more than a few
    /// values, so that a full pipe drains in runs rather than value by value.
    /// Bounded: a receiver dead in the middle of a claim costs a sender
    /// [`ROOM_SPINS`] pauses, then the cell decides.
    pub(crate) fn wait_for_room(&self) {
        let h = self.head();
        let room = self.cap - self.cap.min(ROOM_SLACK);
        for _ in 0..ROOM_SPINS {
            let (t, hd) = (h.tail.load(Relaxed), h.head.load(Relaxed));
            if t.saturating_sub(hd) < room || self.is_closed() {
                return;
            }
            std::hint::spin_loop();
        }
    }

    /// Whether no live process's record covers the stuck cell (so its claimer is
    /// dead). Called after the counter was seen past the cell.
    pub(crate) fn claimer_dead(&self, s: Stuck) -> bool {
        let sending = phase(s.word) == EMPTY;
        !self.head().users.iter().any(|u| {
            let r = if sending { &u.send } else { &u.recv };
            if !covers(r.load(Acquire), s.pos) {
                return false;
            }
            let t = u.token.load(Acquire);
            t != 0 && crate::platform::token_alive(t)
        })
    }

    /// Moves on a cell whose claimer died ([`Ring::claimer_dead`]): an unfilled one
    /// becomes SKIP; an unemptied one becomes the next lap's EMPTY, its value
    /// released. Returns whether this call changed the cell.
    fn recover(&self, pool: &Pool, s: Stuck) -> bool {
        let (cell, w) = (self.cell(s.pos), s.word);
        let pos = w >> 16; // the masked position: `word` masks again
        match phase(w) {
            EMPTY => {
                let ok = cell
                    .word
                    .compare_exchange(w, word(pos, SKIP), SeqCst, Relaxed)
                    .is_ok();
                if ok {
                    self.head().not_empty.notify();
                }
                ok
            }
            FULL | SKIP => {
                // Stable while the word stays FULL(pos): read the value first, then
                // own it by the CAS, then release (a death in between leaks, never
                // double-frees).
                let r = (phase(w) == FULL).then(|| pool.read(&cell.slot));
                let ok = cell
                    .word
                    .compare_exchange(w, word(pos + self.cap, EMPTY), SeqCst, Relaxed)
                    .is_ok();
                if ok {
                    if let Some(r) = r {
                        pool.release(r);
                    }
                    self.head().not_full.notify();
                }
                ok
            }
            _ => false,
        }
    }

    /// Recovers the stuck cell `s` (its claimer found dead) and the cells after it
    /// left the same way by dead claimers (the rest of a dead process's range), so
    /// that a range costs one wait, not one per cell. Returns whether a cell changed.
    pub(crate) fn recover_run(&self, pool: &Pool, mut s: Stuck) -> bool {
        let h = self.head();
        let mut changed = false;
        for _ in 0..self.cap {
            changed |= self.recover(pool, s);
            let pos = s.pos + 1;
            let w = self.cell(pos).word.load(Acquire);
            let same = if phase(s.word) == EMPTY {
                w == word(pos, EMPTY) && h.tail.load(Acquire) > pos
            } else {
                (w == word(pos, FULL) || w == word(pos, SKIP)) && h.head.load(Acquire) > pos
            };
            s = Stuck { pos, word: w };
            if !same || !self.claimer_dead(s) {
                break;
            }
        }
        changed
    }

    /// Takes a user entry for the process `token`: a free one, else one of a dead
    /// process (its unfinished claims are then covered by no live record and are
    /// recovered by whoever waits behind them).
    pub(crate) fn register(&self, token: u64) -> Option<u16> {
        let users = &self.head().users;
        for round in 0..2 {
            for (i, u) in users.iter().enumerate() {
                let t = u.token.load(Acquire);
                if t == 0 {
                    if u.token.compare_exchange(0, token, AcqRel, Relaxed).is_ok() {
                        // The entry is ours: clear what a previous owner left.
                        u.send.store(0, Release);
                        u.recv.store(0, Release);
                        return Some(i as u16);
                    }
                } else if round == 1 && t != token && !crate::platform::token_alive(t) {
                    // Free it (a dead owner's records are ignored), then take it on
                    // the next pass like any free entry.
                    let _ = u.token.compare_exchange(t, 0, AcqRel, Relaxed);
                }
            }
            if round == 1 {
                // Entries freed in this pass.
                for (i, u) in users.iter().enumerate() {
                    if u.token.load(Acquire) == 0
                        && u.token.compare_exchange(0, token, AcqRel, Relaxed).is_ok()
                    {
                        u.send.store(0, Release);
                        u.recv.store(0, Release);
                        return Some(i as u16);
                    }
                }
            }
        }
        None
    }

    /// Gives a user entry back (no claims of it are outstanding).
    pub(crate) fn unregister(&self, i: u16, token: u64) {
        if let Some(u) = self.head().users.get(usize::from(i)) {
            let _ = u.token.compare_exchange(token, 0, AcqRel, Relaxed);
        }
    }

    /// Values currently held by the cells (FULL): what a dying pipe releases and
    /// what `check` walks.
    pub(crate) fn held(&self, pool: &Pool, f: &mut dyn FnMut(Raw)) {
        for c in 0..self.cap {
            let cell = self.cell(c);
            if phase(cell.word.load(Acquire)) == FULL {
                f(pool.read(&cell.slot));
            }
        }
    }
}

impl Ring {
    /// Test hook: claims the next position for sending (`write`) or receiving and
    /// stops there, as a process killed right after its claim would.
    pub(crate) fn claim_and_stop(&self, me: u16, write: bool) -> bool {
        let h = self.head();
        let u = self.user(me);
        let (counter, rec, from) = if write {
            (&h.tail, &u.send, EMPTY)
        } else {
            (&h.head, &u.recv, FULL)
        };
        let pos = counter.load(Acquire);
        if self.cell(pos).word.load(Acquire) != word(pos, from) {
            return false;
        }
        Self::claim(counter, rec, pos, 1)
    }
}
