//! The reference ledger: which shared objects this process's handles hold, kept in
//! the pool so that whoever finds the process dead can give those references back
//! (see `docs/PROTOCOLS.md`, "Reclaiming what dead processes held").
//!
//! Slots of containers and cells of pipes are found by walking from the pool's roots;
//! a handle (`ShmVal`, `ShmTab`, …) is not, so each reference a handle holds is also
//! counted here. One ledger per attach entry (per process and pool), named by the
//! entry's `ledger` word: a small head and up to [`LEVELS`] tables of 64-byte lines,
//! each line eight words, each word a key (the object's offset / 16) and a count of
//! references. A key goes in the line its hash picks, in the first table with room;
//! a count that drops to 0 frees its word for any key. Every change is one
//! compare-and-swap on one word, so the threads of a process share the ledger (a
//! handle may be made in one thread and dropped in another) and a death at any
//! instruction leaves every word whole.
//!
//! Order, so that a death anywhere leaks at most one reference and never gives one
//! back twice:
//! * taking a reference: the object's count first, then the ledger;
//! * giving one back: the ledger first, then the object's count;
//! * a handle's reference going into a container or a pipe cell: the ledger first,
//!   then the store that publishes it (a failed send puts it back in the ledger).
//!
//! A handle whose reference is in no word of the process's ledger (one inherited
//! over `fork`: its reference is counted in the parent's ledger and belongs to the
//! parent) holds none: dropping it gives nothing back, and storing or sending it
//! takes one first. A reference taken when no word could hold it (the pool could not
//! give a new table) is counted in `unledgered` instead and given back on trust; a
//! process without any ledger (no attach entry after a fork into a full table, or no
//! room for the first table) releases as before ledgers existed.

use crate::liveness;
use crate::platform::process_token;
use crate::segment::boot::AttachSlot;
use crate::shm::mem::Raw;
use crate::Pool;
use shmval_alloc::Offset;
use std::alloc::Layout;
use std::cell::Cell;
use std::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed, Release};
use std::sync::atomic::{AtomicPtr, AtomicU64};

mod dismantle;
mod receipt;

pub(crate) use receipt::{Receipt, BATCH_KEYS};

/// "shmLEDG1" little-endian: the head's first word.
const MAGIC: u64 = u64::from_le_bytes(*b"shmLEDG1");
/// Tables a ledger may grow to: table `k` has `BASE_LINES << k` lines (16 MiB of
/// words in all, two million distinct objects).
pub(crate) const LEVELS: usize = 12;
/// Lines of the first table (4 KiB).
const BASE_LINES: u64 = 64;
/// Words per line (one cache line).
const WAYS: usize = 8;
/// Low bits of a word: the count.
const COUNT_BITS: u32 = 20;
const COUNT_MAX: u64 = (1 << COUNT_BITS) - 1;
/// Objects are 16-byte aligned: the key is the offset / 16.
const KEY_SHIFT: u32 = 4;
/// The key bit of a *dismantle word*: the object the key names (offset / 16, the
/// bit cleared) has count 0 and is being dismantled by the ledger's process (see
/// `shm/release.rs`); a replay finishes that instead of giving back references.
const DISMANTLE: u64 = 1 << (63 - COUNT_BITS);
/// Keys from this on (pools over 128 TiB) are counted as unledgered.
const KEY_LIMIT: u64 = DISMANTLE;

/// The head of a ledger, in the pool.
#[repr(C)]
pub(crate) struct LedgerHead {
    magic: AtomicU64,
    /// Token of the process the ledger belongs to.
    owner: AtomicU64,
    /// References taken that no word could hold (given back on trust).
    unledgered: AtomicU64,
    /// Token of the process replaying the ledger (0 none): a replayer holds the
    /// entry's lock, so one found here by another lock holder is gone, and its
    /// replay is taken over; threads of one process replay it once.
    replayer: AtomicU64,
    /// Offset of each table, 0 not made yet (they are made in order).
    tables: [AtomicU64; LEVELS],
    /// Offset of the batch receipts (`receipt::Batches`), 0 not made yet.
    batches: AtomicU64,
}

const HEAD_SIZE: usize = 144;

/// The ledger's layout parts (for the pool's layout identity).
pub(crate) const LEDGER_LAYOUT: [u64; 5] = [
    HEAD_SIZE as u64,
    std::mem::size_of::<receipt::BatchSlot>() as u64,
    receipt::BATCH_SLOTS as u64,
    BATCH_KEYS as u64,
    LEVELS as u64,
];

const _: () = assert!(std::mem::size_of::<LedgerHead>() <= HEAD_SIZE);

/// One line of a table.
#[repr(C, align(64))]
pub(crate) struct Line([AtomicU64; WAYS]);

// SAFETY: atomics only, no padding, valid for any bits.
unsafe impl crate::shm::layout::InShared for LedgerHead {}
// SAFETY: as above.
unsafe impl crate::shm::layout::InShared for Line {}

fn table_layout(k: usize) -> Layout {
    Layout::from_size_align((BASE_LINES << k) as usize * 64, 64).expect("small table")
}

fn head_layout() -> Layout {
    Layout::from_size_align(HEAD_SIZE, 16).expect("small head")
}

#[inline(always)]
fn line_of(key: u64, k: usize) -> usize {
    let bits = BASE_LINES.trailing_zeros() + k as u32;
    (key.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - bits)) as usize
}

#[inline(always)]
fn add_in(line: &Line, key: u64) -> bool {
    'again: loop {
        let mut free = None;
        for w in &line.0 {
            let v = w.load(Relaxed);
            let n = v & COUNT_MAX;
            if v >> COUNT_BITS == key && n < COUNT_MAX {
                // Release: the object's count was raised before (see the module).
                if w.compare_exchange(v, v + 1, Release, Relaxed).is_ok() {
                    return true;
                }
                continue 'again;
            }
            if n == 0 && free.is_none() {
                free = Some((w, v));
            }
        }
        let Some((w, v)) = free else { return false };
        if w.compare_exchange(v, key << COUNT_BITS | 1, Release, Relaxed)
            .is_ok()
        {
            return true;
        }
    }
}

#[inline(always)]
fn take_in(line: &Line, key: u64) -> bool {
    'again: loop {
        for w in &line.0 {
            let v = w.load(Relaxed);
            if v >> COUNT_BITS == key && v & COUNT_MAX != 0 {
                if w.compare_exchange(v, v - 1, Relaxed, Relaxed).is_ok() {
                    return true;
                }
                continue 'again;
            }
        }
        return false;
    }
}

thread_local! {
    /// Whether this thread is setting its process's ledger up (see
    /// [`Pool::ledger_dismantle_add`]).
    static SETTING_UP: Cell<bool> = const { Cell::new(false) };
}

/// A process's view of its ledger in one pool handle.
pub(crate) struct Ledger {
    /// The process token this view was set up for (0: not yet; after `fork` the
    /// child's token differs and the view is set up again, for the child's entry).
    token: AtomicU64,
    head: AtomicPtr<LedgerHead>,
    tables: [AtomicPtr<Line>; LEVELS],
}

impl Ledger {
    pub(crate) const fn new() -> Ledger {
        Ledger {
            token: AtomicU64::new(0),
            head: AtomicPtr::new(std::ptr::null_mut()),
            tables: [const { AtomicPtr::new(std::ptr::null_mut()) }; LEVELS],
        }
    }
}

/// What the view says for this process.
enum View<'a> {
    Ready(&'a LedgerHead),
    /// This process keeps no ledger in the pool.
    None,
}

impl Pool {
    #[inline(always)]
    fn ledger_view(&self) -> View<'_> {
        let l = self.ledger_cache();
        if l.token.load(Acquire) != process_token() {
            return self.ledger_setup();
        }
        let h = l.head.load(Relaxed);
        if h.is_null() {
            View::None
        } else {
            // SAFETY: set by `ledger_setup` to a head inside the mapping, which
            // lives as long as `self`.
            View::Ready(unsafe { &*h })
        }
    }

    #[inline(always)]
    fn ledger_table(&self, head: &LedgerHead, k: usize) -> Option<&[Line]> {
        let p = self.ledger_cache().tables[k].load(Acquire);
        if p.is_null() {
            return self.ledger_table_slow(head, k);
        }
        // SAFETY: cached from a resolved table of `BASE_LINES << k` lines, inside
        // the mapping; tables are freed only by a replay, after the process that
        // used them is gone.
        Some(unsafe { std::slice::from_raw_parts(p, (BASE_LINES << k) as usize) })
    }

    #[cold]
    fn ledger_table_slow(&self, head: &LedgerHead, k: usize) -> Option<&[Line]> {
        let t = self.ledger_lines(head, k)?;
        self.ledger_cache().tables[k].store(t.as_ptr().cast_mut(), Release);
        Some(t)
    }

    /// Table `k` of the ledger `head`, if it names one inside the mapping and
    /// aligned (a damaged head may name anything).
    fn ledger_lines(&self, head: &LedgerHead, k: usize) -> Option<&[Line]> {
        let off = head.tables[k].load(Acquire);
        if off % 64 != 0 {
            return None;
        }
        let p = self.resolve(Offset::new(off)?, table_layout(k).size())?;
        if p.as_ptr() as usize % 64 != 0 {
            return None; // a mapping is page-aligned: cannot happen, but cheap
        }
        // SAFETY: inside the mapping for the table's size, 64-aligned; lines are
        // atomics, valid for any bits.
        Some(unsafe { std::slice::from_raw_parts(p.as_ptr().cast(), (BASE_LINES << k) as usize) })
    }

    /// Frees this process's ledger if it counts nothing, as the last handle of this
    /// open goes (the caller's `Pool` is the last clone: no value, pipe or other
    /// handle of it is left, each holding one), unless another open of the same
    /// pool in this process shares the entry and with it the ledger: a process that
    /// exits cleanly leaves no ledger for the next opener to replay, nor for `check`
    /// to report as a dead one. A ledger that still counts something (a handle
    /// leaked with `mem::forget`) stays, for the replay to give back.
    pub(crate) fn ledger_close(&self) {
        let me = process_token();
        if self.ledger_cache().token.load(Acquire) != me {
            return; // no ledger set up by this process (a forked child's view)
        }
        let Some(entry) = liveness::entry_of(self.pool_id()) else {
            return;
        };
        let slot = &self.boot_header().attached[entry];
        let off = slot.ledger.load(Acquire);
        let Some(h) = (off != 0).then(|| self.ledger_head(off)).flatten() else {
            return;
        };
        // Nothing adds to it meanwhile: this open has no handle left, and another
        // open sharing the entry is seen below (one registering later finds the
        // ledger unnamed and makes its own).
        let empty = h.owner.load(Acquire) == me
            && h.unledgered.load(Acquire) == 0
            && self.receipts_idle(h)
            && (0..LEVELS).all(|k| {
                h.tables[k].load(Acquire) == 0
                    || self.ledger_lines(h, k).is_some_and(|lines| {
                        lines
                            .iter()
                            .flat_map(|l| &l.0)
                            .all(|w| w.load(Acquire) & COUNT_MAX == 0)
                    })
            });
        if !empty {
            return;
        }
        // Unnamed (only if no other open shares it), then freed: a death in between
        // leaks the blocks, no more.
        let unnamed = liveness::with_entry_unshared(self.pool_id(), |e| {
            e == entry
                && slot
                    .ledger
                    .compare_exchange(off, 0, AcqRel, Acquire)
                    .is_ok()
        });
        if unnamed == Some(true) {
            self.ledger_cache().token.store(0, Release);
            self.ledger_free(off);
        }
    }

    /// Counts one more reference to the object at `off`, held by a handle of this
    /// process (after the object's own count was raised).
    #[inline]
    pub(crate) fn ledger_add(&self, off: u64) {
        // Torn: the object's count was raised, the ledger does not say so yet.
        fail_point!("ledger.add");
        let View::Ready(head) = self.ledger_view() else {
            return;
        };
        self.ledger_add_in(head, off);
    }

    /// [`Pool::ledger_add`] for a raw value: nothing for an immediate (it holds no
    /// reference). The check inline, the count a call: small enough to stay inline
    /// in the receive fast path (an immediate there costs one compare).
    #[inline(always)]
    pub(crate) fn ledger_add_raw(&self, r: Raw) {
        if r.is_object() {
            self.ledger_add_call(r.payload);
        }
    }

    #[inline(never)]
    fn ledger_add_call(&self, off: u64) {
        self.ledger_add(off);
    }

    /// [`Pool::ledger_add`] into the ledger `head` (this process's, set up).
    #[inline]
    fn ledger_add_in(&self, head: &LedgerHead, off: u64) {
        let key = off >> KEY_SHIFT;
        if key < KEY_LIMIT {
            if let Some(t) = self.ledger_table(head, 0) {
                if add_in(&t[line_of(key, 0)], key) {
                    return;
                }
            }
        }
        self.ledger_add_slow(head, key);
    }

    #[cold]
    fn ledger_add_slow(&self, head: &LedgerHead, key: u64) {
        if key < KEY_LIMIT {
            for k in 1..LEVELS {
                let t = match self.ledger_table(head, k) {
                    Some(t) => t,
                    None => match self.ledger_grow(head, k) {
                        Some(t) => t,
                        None => break,
                    },
                };
                if add_in(&t[line_of(key, k)], key) {
                    return;
                }
            }
        }
        head.unledgered.fetch_add(1, Release);
    }

    /// Takes one reference to the object at `off` out of this process's ledger
    /// (before the object's count is lowered). `false`: this process's handles hold
    /// no such reference (a handle inherited over `fork`): nothing is to be given
    /// back.
    #[inline]
    pub(crate) fn ledger_take(&self, off: u64) -> bool {
        let View::Ready(head) = self.ledger_view() else {
            return true;
        };
        let key = off >> KEY_SHIFT;
        if let Some(t) = self.ledger_table(head, 0) {
            if take_in(&t[line_of(key, 0)], key) {
                return true;
            }
        }
        self.ledger_take_slow(head, key)
    }

    #[cold]
    fn ledger_take_slow(&self, head: &LedgerHead, key: u64) -> bool {
        for k in 1..LEVELS {
            let Some(t) = self.ledger_table(head, k) else {
                break;
            };
            if take_in(&t[line_of(key, k)], key) {
                return true;
            }
        }
        // A reference counted on trust, if any.
        head.unledgered
            .fetch_update(AcqRel, Relaxed, |n| n.checked_sub(1))
            .is_ok()
    }

    /// Makes table `k` (the one before it is full where a key hashed).
    #[cold]
    fn ledger_grow(&self, head: &LedgerHead, k: usize) -> Option<&[Line]> {
        let off = self.alloc_own(table_layout(k)).ok()?;
        let size = table_layout(k).size();
        let Some(p) = self.resolve(off, size) else {
            // SAFETY: just allocated with this layout, never published.
            let _ = unsafe { self.free_own(off, table_layout(k)) };
            return None;
        };
        // SAFETY: a fresh block of `size` bytes, ours alone until published.
        unsafe { std::ptr::write_bytes(p.as_ptr(), 0, size) };
        // Another thread of this process may have made it meanwhile: one wins.
        if head.tables[k]
            .compare_exchange(0, off.get(), AcqRel, Acquire)
            .is_err()
        {
            // SAFETY: as above.
            let _ = unsafe { self.free_own(off, table_layout(k)) };
        }
        self.ledger_table(head, k)
    }

    /// Sets this handle's view up for the calling process: its entry's ledger if it
    /// is this process's, else a new one (a stale one there, of a process that held
    /// the entry before, is replayed first).
    #[cold]
    #[inline(never)]
    fn ledger_setup(&self) -> View<'_> {
        let me = process_token();
        let l = self.ledger_cache();
        let was = SETTING_UP.with(|s| s.replace(true));
        let head = self.ledger_for(me);
        SETTING_UP.with(|s| s.set(was));
        for t in &l.tables {
            t.store(std::ptr::null_mut(), Relaxed);
        }
        l.head.store(
            head.map_or(std::ptr::null_mut(), |h| std::ptr::from_ref(h).cast_mut()),
            Relaxed,
        );
        l.token.store(me, Release);
        match head {
            Some(h) => View::Ready(h),
            None => View::None,
        }
    }

    fn ledger_for(&self, me: u64) -> Option<&LedgerHead> {
        let entry = liveness::entry_of(self.pool_id())?;
        let slot = &self.boot_header().attached[entry];
        let mut fresh: Option<u64> = None;
        let result = loop {
            let cur = slot.ledger.load(Acquire);
            if cur != 0 {
                match self.ledger_head(cur) {
                    Some(h) if h.owner.load(Acquire) == me => break Some(h),
                    // A stale ledger of the entry's previous holder (we hold the
                    // entry's lock, so it is gone): given back first — or by another
                    // thread of ours, which we wait for.
                    _ => {
                        if self.ledger_retire(slot, cur, me).is_none() {
                            std::thread::yield_now();
                        }
                        continue;
                    }
                }
            }
            let new = match fresh {
                Some(n) => n,
                None => match self.ledger_new(me) {
                    Some(n) => *fresh.insert(n),
                    None => break None,
                },
            };
            if slot
                .ledger
                .compare_exchange(0, new, AcqRel, Acquire)
                .is_ok()
            {
                fresh = None;
                break self.ledger_head(new);
            }
        };
        if let Some(n) = fresh {
            self.ledger_free(n); // another thread of ours set one up first
        }
        result
    }

    /// Replays and frees the ledger `off` that `slot` names, the caller holding the
    /// slot's lock (its owner is gone). `None`: another thread of this process is
    /// at it. The word keeps naming the ledger until the replay is done, so a
    /// replayer that dies midway leaves the rest to the next one.
    fn ledger_retire(&self, slot: &AttachSlot, off: u64, me: u64) -> Option<Replayed> {
        let mut r = Replayed::default();
        if let Some(h) = self.ledger_head(off) {
            let was = h.replayer.load(Acquire);
            if was == me
                || h.replayer
                    .compare_exchange(was, me, AcqRel, Acquire)
                    .is_err()
            {
                return None;
            }
            r = self.ledger_replay(h);
        }
        // Unnamed, then freed: a death in between leaks the blocks, no more.
        if slot
            .ledger
            .compare_exchange(off, 0, AcqRel, Acquire)
            .is_ok()
        {
            self.ledger_free(off);
        }
        Some(r)
    }

    fn ledger_head(&self, off: u64) -> Option<&LedgerHead> {
        let h = self.at::<LedgerHead>(off).ok()?;
        (h.magic.load(Acquire) == MAGIC).then_some(h)
    }

    fn ledger_new(&self, me: u64) -> Option<u64> {
        let head = self.alloc_own(head_layout()).ok()?;
        let t0 = match self.alloc_own(table_layout(0)) {
            Ok(t) => t,
            Err(_) => {
                // SAFETY: just allocated with this layout, never published.
                let _ = unsafe { self.free_own(head, head_layout()) };
                return None;
            }
        };
        for (off, size) in [(head, HEAD_SIZE), (t0, table_layout(0).size())] {
            match self.resolve(off, size) {
                // SAFETY: a fresh block of `size` bytes, ours alone until published.
                Some(p) => unsafe { std::ptr::write_bytes(p.as_ptr(), 0, size) },
                None => return None, // not inside the arena: cannot happen, leak
            }
        }
        let h = self.at::<LedgerHead>(head.get()).ok()?;
        h.owner.store(me, Relaxed);
        h.tables[0].store(t0.get(), Relaxed);
        h.magic.store(MAGIC, Release);
        Some(head.get())
    }

    /// Frees the blocks of a ledger no word names any more.
    fn ledger_free(&self, off: u64) {
        let Some(h) = self.ledger_head(off) else {
            return;
        };
        h.magic.store(0, Release);
        self.free_receipts(h);
        for (k, t) in h.tables.iter().enumerate() {
            if let Some(o) = Offset::new(t.swap(0, AcqRel)) {
                // SAFETY: allocated by `ledger_new`/`ledger_grow` with this layout;
                // no word names the ledger, and its owner is gone.
                let _ = unsafe { self.free_own(o, table_layout(k)) };
            }
        }
        if let Some(o) = Offset::new(off) {
            // SAFETY: as above.
            let _ = unsafe { self.free_own(o, head_layout()) };
        }
    }

    /// Gives back every reference the ledger `h` counts (each word swapped to 0
    /// first: a replay that dies midway leaks the references of one word at most,
    /// and the next one goes on with the rest).
    fn ledger_replay(&self, h: &LedgerHead) -> Replayed {
        let mut r = Replayed::default();
        // Receipts first: the pipe a receipt names is still held by the dead
        // process's handle, whose reference the tables give back.
        self.replay_receipts(h, &mut r);
        for k in 0..LEVELS {
            let Some(lines) = self.ledger_lines(h, k) else {
                continue;
            };
            for w in lines.iter().flat_map(|l| &l.0) {
                if w.load(Relaxed) & COUNT_MAX == 0 {
                    continue;
                }
                let v = w.swap(0, AcqRel);
                let n = v & COUNT_MAX;
                let key = v >> COUNT_BITS;
                fail_point!("ledger.replay.swapped");
                if key & DISMANTLE != 0 {
                    // The process died dismantling the object: the rest is done here.
                    if self.dismantle_resume((key & !DISMANTLE) << KEY_SHIFT) {
                        r.dismantled += 1;
                    } else {
                        r.skipped += n;
                    }
                    continue;
                }
                let off = key << KEY_SHIFT;
                let Ok(o) = self.obj(off) else {
                    r.skipped += n;
                    continue;
                };
                for _ in 0..n {
                    self.release(Raw::new(o.tag, 0, off));
                }
                r.objects += 1;
                r.references += n;
            }
        }
        r.untracked = h.unledgered.swap(0, AcqRel);
        r.ledgers = 1;
        r
    }

    /// Replays the ledgers of entries whose process is gone (dead, or detached
    /// with references it never gave back), each under the entry's lock so that
    /// nobody else replays or claims it meanwhile. Returns what was given back.
    pub(crate) fn ledgers_reclaim(&self) -> Replayed {
        let me = process_token();
        let boot = self.boot_header();
        let mut total = Replayed::default();
        for (i, slot) in boot.attached.iter().enumerate() {
            if slot.ledger.load(Acquire) == 0 || slot.token.load(Acquire) == me {
                continue;
            }
            liveness::with_entry_lock(self.boot_fd(), i, || {
                // The lock is ours: whoever held the entry is gone.
                if slot.token.load(Acquire) == me {
                    return;
                }
                let off = slot.ledger.load(Acquire);
                if off != 0 {
                    // Another thread of ours at it (the lock is the description's,
                    // shared by our threads): it finishes.
                    if let Some(r) = self.ledger_retire(slot, off, me) {
                        total.add(r);
                    }
                }
            });
        }
        total
    }

    /// Every ledger named by an entry of the attach table, read without changing
    /// anything.
    pub(crate) fn ledgers_read(&self) -> Vec<LedgerRead> {
        let boot = self.boot_header();
        let mine = liveness::entry_of(self.pool_id());
        let mut out = Vec::new();
        for (i, slot) in boot.attached.iter().enumerate() {
            let off = slot.ledger.load(Acquire);
            let Some(h) = (off != 0).then(|| self.ledger_head(off)).flatten() else {
                continue;
            };
            let token = slot.token.load(Acquire);
            let alive = token != 0
                && h.owner.load(Relaxed) == token
                && liveness::entry_alive(self.boot_fd(), i, mine);
            let mut counts = std::collections::HashMap::new();
            let mut dismantling = Vec::new();
            for k in 0..LEVELS {
                let Some(lines) = self.ledger_lines(h, k) else {
                    continue;
                };
                for w in lines.iter().flat_map(|l| &l.0) {
                    let v = w.load(Relaxed);
                    let key = v >> COUNT_BITS;
                    if v & COUNT_MAX == 0 {
                        continue;
                    }
                    if key & DISMANTLE != 0 {
                        dismantling.push((key & !DISMANTLE) << KEY_SHIFT);
                    } else {
                        *counts.entry(key << KEY_SHIFT).or_insert(0u64) += v & COUNT_MAX;
                    }
                }
            }
            self.receipt_counts(h, &mut counts);
            out.push(LedgerRead {
                alive,
                counts,
                dismantling,
                unledgered: h.unledgered.load(Relaxed),
            });
        }
        out
    }
}

impl Pool {
    /// Bytes the ledgers named by the attach table take, as `Stats::in_use` counts
    /// them.
    /// The blocks of every ledger named by an entry of the attach table.
    pub(crate) fn ledger_blocks(&self) -> std::collections::HashSet<u64> {
        let mut out = std::collections::HashSet::new();
        for slot in &self.boot_header().attached {
            let off = slot.ledger.load(Acquire);
            let Some(h) = (off != 0).then(|| self.ledger_head(off)).flatten() else {
                continue;
            };
            out.insert(off);
            out.insert(h.batches.load(Acquire));
            out.extend(h.tables.iter().map(|t| t.load(Acquire)));
        }
        out.remove(&0);
        out
    }

    pub(crate) fn ledger_bytes(&self) -> u64 {
        let heap = self.heap();
        let mut n = 0;
        for slot in &self.boot_header().attached {
            let off = slot.ledger.load(Acquire);
            let Some(h) = (off != 0).then(|| self.ledger_head(off)).flatten() else {
                continue;
            };
            let at = |o: u64, l: Layout| Offset::new(o).map_or(0, |o| heap.accounted(o, l));
            n += at(off, head_layout());
            n += at(h.batches.load(Acquire), receipt::batches_layout());
            for (k, t) in h.tables.iter().enumerate() {
                n += at(t.load(Acquire), table_layout(k));
            }
        }
        n
    }
}

/// One ledger as `Pool::check` reads it.
pub(crate) struct LedgerRead {
    /// Its process is attached and alive (this one included).
    pub alive: bool,
    pub counts: std::collections::HashMap<u64, u64>,
    /// Objects its process is dismantling (count 0; see `shm/release.rs`).
    pub dismantling: Vec<u64>,
    pub unledgered: u64,
}

/// What replaying ledgers gave back (see [`crate::Reclaimed`]).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Replayed {
    /// Ledgers replayed.
    pub ledgers: u64,
    /// Objects whose references were given back.
    pub objects: u64,
    /// References given back.
    pub references: u64,
    /// References counted on trust, which cannot be given back (leaked).
    pub untracked: u64,
    /// References to objects that no longer validate (left alone).
    pub skipped: u64,
    /// Values of a receive the process died committing, found not taken: the
    /// pipe's still.
    pub left: u64,
    /// Objects the process died dismantling, finished.
    pub dismantled: u64,
}

impl Replayed {
    fn add(&mut self, o: Replayed) {
        self.ledgers += o.ledgers;
        self.objects += o.objects;
        self.references += o.references;
        self.untracked += o.untracked;
        self.skipped += o.skipped;
        self.left += o.left;
        self.dismantled += o.dismantled;
    }
}
