//! The container guard shared by lists and dicts: a container's robust lock, held;
//! the modification mark and the logged two-word slot overwrite, and the repair
//! the next holder does after a holder died.
//!
//! The modification mark (`dirty`) is also the container's version: odd while a
//! modification is under way (or its holder died in one), advanced to the next even
//! number when the guard drops. A dict lookup that takes no lock ([`Guard::peek`])
//! reads an even version, looks, and reads the version again: the same number, and
//! nothing it read was being changed.

use super::dict::{Cached, IndexHint};
use super::layout::{tag, ContainerHead, Slot, SLOT};
use super::mem::{corrupt, Obj, Raw};
use super::ValError;
use crate::Pool;
use shmval_alloc::{LockState, LOCK_PATIENCE};
use std::cell::Cell;
use std::sync::atomic::fence;
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};

/// `redo_at` while a new data block is switched in.
pub(crate) const GROWING: u64 = u64::MAX;

/// A container's lock, held; repairs a table or list whose last holder died. (Also,
/// never dropped, the reads of a lookup without the lock and of a private table.)
pub(crate) struct Guard<'p> {
    pub pool: &'p Pool,
    pub obj: Obj,
    pub head: &'p ContainerHead,
    /// The dict's data block and index, validated once per guard: only the holder
    /// switches blocks, and [`rebuild`](Self::rebuild) forgets them when it does.
    pub(super) cache: Cell<Option<Cached<'p>>>,
    /// A handle's note of where the index is (see [`IndexHint`]), updated when
    /// the index is validated.
    pub(super) hint: Option<&'p IndexHint>,
}

impl<'p> Guard<'p> {
    pub(crate) fn lock(pool: &'p Pool, obj: Obj) -> Result<Guard<'p>, ValError> {
        Self::lock_noting(pool, obj, None)
    }

    /// [`lock`](Self::lock), noting where the dict's index is in `hint`.
    #[inline]
    pub(crate) fn lock_noting(
        pool: &'p Pool,
        obj: Obj,
        hint: Option<&'p IndexHint>,
    ) -> Result<Guard<'p>, ValError> {
        let head = pool.container(obj)?;
        let state = head
            .lock
            .lock_within::<crate::LinuxPlatform>(Some(LOCK_PATIENCE))
            .map_err(|e| match e {
                shmval_alloc::LockError::Timeout => ValError::LockTimeout,
                shmval_alloc::LockError::Reentrant => ValError::Reentrant,
            })?;
        let mut g = Guard::new(pool, obj, head);
        g.hint = hint;
        // A logged overwrite is always inside a `dirty` operation (`begin` comes
        // first, `redo_at` is cleared before the guard drops), so this covers it.
        if state == LockState::Recovered || head.dirty.load(Relaxed) & 1 != 0 {
            if let Err(e) = g.repair() {
                // Unlocked with the mark left: the next holder tries again, and
                // readers without the lock keep away.
                let g = std::mem::ManuallyDrop::new(g);
                // SAFETY: this thread holds the lock (taken above) and the guard
                // that would release it is never dropped.
                unsafe { g.head.lock.unlock::<crate::LinuxPlatform>() };
                return Err(e);
            }
        }
        Ok(g)
    }

    pub(super) fn new(pool: &'p Pool, obj: Obj, head: &'p ContainerHead) -> Guard<'p> {
        Guard {
            pool,
            obj,
            head,
            cache: Cell::new(None),
            hint: None,
        }
    }

    /// A guard that does not hold the lock: for the reads of a lookup whose result
    /// is taken only if the version did not move ([`peek`](Self::peek)), and for a
    /// private table nobody else can see; never dropped, so never unlocking.
    pub(crate) fn unlocked(
        pool: &'p Pool,
        obj: Obj,
        head: &'p ContainerHead,
        hint: Option<&'p IndexHint>,
    ) -> std::mem::ManuallyDrop<Guard<'p>> {
        let mut g = Guard::new(pool, obj, head);
        g.hint = hint;
        std::mem::ManuallyDrop::new(g)
    }

    /// Looks `key` up in the dict `obj` without its lock: the value slot of its
    /// entry (`Some(None)`: absent), or `None` when the lookup cannot tell — a
    /// modification under way or made meanwhile, a holder that died in one, or
    /// anything that did not validate (the caller then asks under the lock, which
    /// also repairs or reports). Every read is a validated atomic load in the
    /// mapping, so a block freed and reused under the reader is only read, and the
    /// version check throws that read away. The slot is a copy: an object it names
    /// may be released as soon as the version is read, so only an immediate may be
    /// used without the lock.
    #[inline]
    pub(crate) fn peek(
        pool: &'p Pool,
        obj: Obj,
        hint: Option<&'p IndexHint>,
        hash: u64,
        key: &crate::val::Val,
    ) -> Option<Option<Raw>> {
        Self::read_unlocked(pool, obj, |head| {
            let g = Self::unlocked(pool, obj, head, hint);
            let found = g.find(hash, key).ok()?;
            Some(found.map(|f| pool.read(&f.entry.value)))
        })
    }

    /// The number of entries or elements of `obj` read without the lock (`None`:
    /// ask under it), as [`peek`](Self::peek).
    #[inline]
    pub(crate) fn peek_len(pool: &'p Pool, obj: Obj) -> Option<u64> {
        Self::read_unlocked(pool, obj, |head| Some(head.len.load(Relaxed)))
    }

    /// What `read` makes of the container `obj` without its lock, if the container's
    /// version was even before and the same after (`None`: ask under the lock).
    /// `read` may only load (validated, atomic) and must not keep anything it found
    /// beyond copies: an object it names may be gone once the version is read.
    #[inline]
    pub(crate) fn read_unlocked<R>(
        pool: &'p Pool,
        obj: Obj,
        read: impl FnOnce(&'p ContainerHead) -> Option<R>,
    ) -> Option<R> {
        let head = pool.container(obj).ok()?;
        // SYNC POINT: pairs with the Release of the last modifier's `Drop`: its
        // stores are all seen.
        let v = head.dirty.load(Acquire);
        if v & 1 != 0 {
            return None;
        }
        let r = read(head)?;
        // SYNC POINT: pairs with `begin`'s fence: if any load in `read` saw a store
        // of a modification, the version below is that modification's odd one or
        // later.
        fence(Acquire);
        (head.dirty.load(Relaxed) == v).then_some(r)
    }

    /// Marks the start of a modification: the version becomes odd (it becomes even
    /// again when the guard drops).
    #[inline]
    pub(crate) fn begin(&self) {
        let v = self.head.dirty.load(Relaxed);
        if v & 1 == 0 {
            self.head.dirty.store(v.wrapping_add(1), Relaxed);
            // SYNC POINT: the odd version is ordered before every store of the
            // modification (a lock-free reader that sees one of them sees it).
            fence(Release);
        }
    }

    /// Replaces the value in `slot`, element `i` of this container (a list slot or a
    /// dict entry's value) and live, with `r`. A slot is two words: the new value is
    /// first logged in the head, so a holder killed between the two stores leaves a
    /// log the next holder replays (see [`redo`](Self::redo)) instead of a torn
    /// value. The old value is the caller's from the logged moment on.
    pub(crate) fn overwrite(&self, i: u64, slot: &Slot, r: Raw) {
        self.log_overwrite(i, r);
        // As `Pool::write`, with a fail point between the two stores.
        slot.payload.store(r.payload, Relaxed);
        fail_point!("shm.overwrite.torn");
        slot.tag.store(r.tag_word(), Release);
        self.head.redo_at.store(0, Release);
    }

    /// The first half of [`overwrite`](Self::overwrite): the log.
    pub(super) fn log_overwrite(&self, i: u64, r: Raw) {
        let h = self.head;
        self.begin();
        h.redo_tag.store(r.tag_word(), Relaxed);
        h.redo_payload.store(r.payload, Relaxed);
        h.redo_at.store(i + 1, Release); // SYNC POINT: the new value is committed
    }

    /// Logs that the data block `new` (this holder's alone, not yet `data`) is
    /// about to replace `old` (0: none): a holder killed while copying into it or
    /// switching leaves a log from which the next holder frees whichever block is
    /// no longer the container's (without it, one of the two leaked: for a big dict
    /// megabytes).
    pub(crate) fn log_growth(&self, new: &super::mem::Block<'_>, old: u64) {
        self.begin();
        new.head.replaces.store(old, Relaxed);
        self.head.redo_payload.store(new.off, Relaxed);
        self.head.redo_at.store(GROWING, Release); // SYNC POINT: the growth is logged
    }

    /// Drops the log of a growth given up before its switch (the caller then frees
    /// the new block: unlogged first, so a death in between leaks it, no more).
    pub(crate) fn unlog_growth(&self) {
        self.head.redo_at.store(0, Release);
    }

    /// After the switch (`data` names `new`): frees the block it replaced and clears
    /// the log. The block is unnamed before it is freed (a death in between leaks
    /// it; freed twice, never).
    pub(crate) fn finish_growth(&self, new: &super::mem::Block<'_>) {
        fail_point!("shm.growth.switched");
        let old = new.head.replaces.swap(0, Relaxed);
        if old != 0 {
            if let Ok(ob) = self.pool.block_at(old, new.elem as usize) {
                self.pool.free_data_block(self.obj, ob);
            }
        }
        self.head.redo_at.store(0, Release);
    }

    /// Ends a growth its holder did not: after the switch, the old block goes;
    /// before it, the new one.
    fn redo_growth(&self) -> Result<(), ValError> {
        let h = self.head;
        let b = h.redo_payload.load(Relaxed);
        let elem = if self.obj.tag == tag::LIST {
            SLOT
        } else {
            super::layout::ENTRY
        };
        let nb = self.pool.block_at(b, elem)?;
        if h.data.load(Acquire) == b {
            self.finish_growth(&nb);
        } else {
            // Not switched: the new block was the dead holder's alone. Unlogged
            // first, then freed.
            h.redo_at.store(0, Release);
            self.pool.free_data_block(self.obj, nb);
        }
        Ok(())
    }

    /// Finishes an [`overwrite`](Self::overwrite) its holder did not: writes the
    /// logged value into the logged element again (idempotent) and clears the log;
    /// or ends a logged growth ([`log_growth`](Self::log_growth)).
    pub(super) fn redo(&self) -> Result<(), ValError> {
        let h = self.head;
        let at = h.redo_at.load(Acquire);
        if at == 0 {
            return Ok(());
        }
        if at == GROWING {
            return self.redo_growth();
        }
        let i = at - 1;
        let missing = || corrupt(format!("slot overwrite logged for missing element {i}"));
        let slot = match self.obj.tag {
            tag::LIST => {
                let b = self.pool.block(h, SLOT)?.ok_or_else(missing)?;
                if i >= h.len.load(Relaxed).min(b.cap) {
                    return Err(missing());
                }
                self.pool.slot_at(b.at(i))?
            }
            _ => {
                let b = self.block()?.ok_or_else(missing)?;
                let e = self.pool.entry_in(b, i)?;
                if i >= Self::used(b) || self.pool.read(&e.key).tag() == tag::DELETED {
                    return Err(missing());
                }
                &e.value
            }
        };
        slot.payload.store(h.redo_payload.load(Relaxed), Relaxed);
        slot.tag.store(h.redo_tag.load(Relaxed), Release);
        h.redo_at.store(0, Release);
        Ok(())
    }

    /// The dict's current entry block.
    pub(super) fn repair(&self) -> Result<(), ValError> {
        let h = self.head;
        // A repair rewrites the index (readers without the lock must not see it
        // half-filled) even when the dead holder had not begun anything.
        self.begin();
        self.redo()?;
        match self.obj.tag {
            tag::LIST => {
                let cap = self.pool.block(h, SLOT)?.map_or(0, |b| b.cap);
                if h.len.load(Relaxed) > cap {
                    h.len.store(cap, Relaxed);
                }
            }
            _ => {
                let mut len = 0;
                if let Some(b) = self.block()? {
                    // A `move_to_end` cut short leaves its source entry live next to
                    // the copy: two entries holding the very same key slot (which no
                    // two distinct keys can share). The later one is the moved entry;
                    // the earlier is emptied without a release (one reference, held by
                    // the copy).
                    let mut seen = std::collections::HashSet::new();
                    for i in (0..Self::used(b)).rev() {
                        let e = self.pool.entry_in(b, i)?;
                        let k = self.pool.read(&e.key);
                        if k.tag() == tag::DELETED {
                            continue;
                        }
                        if seen.insert((k.tag(), k.len(), k.payload)) {
                            len += 1;
                        } else {
                            Self::empty_entry(e);
                        }
                    }
                    self.rebuild_index(b)?;
                }
                h.len.store(len, Relaxed);
            }
        }
        Ok(())
    }
}

impl Drop for Guard<'_> {
    fn drop(&mut self) {
        let v = self.head.dirty.load(Relaxed);
        if v & 1 != 0 {
            // SYNC POINT: the modification is complete; a reader that sees this
            // version sees all of it.
            self.head.dirty.store(v.wrapping_add(1), Release);
        }
        // SAFETY: a guard that drops was made by `lock_noting` and this thread holds
        // its lock (the guards made without it — `unlocked`, a private table's —
        // are `ManuallyDrop` and never drop).
        unsafe { self.head.lock.unlock::<crate::LinuxPlatform>() };
    }
}
