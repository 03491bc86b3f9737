//! The container guard shared by lists and dicts: a container's robust lock, held;
//! the modification mark and the logged two-word slot overwrite, and the repair
//! the next holder does after a holder died.

use super::dict::{Cached, IndexHint};
use super::layout::{tag, ContainerHead, Slot, SLOT};
use super::mem::{corrupt, Obj, Raw};
use super::ValError;
use crate::Pool;
use shmval_alloc::{LockState, LOCK_PATIENCE};
use std::cell::Cell;
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};

/// `redo_at` while a new data block is switched in.
pub(crate) const GROWING: u64 = u64::MAX;

/// A container's lock, held; repairs a table or list whose last holder died.
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
        if state == LockState::Recovered || head.dirty.load(Relaxed) != 0 {
            g.repair()?;
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

    /// Marks the start of a modification (cleared when the guard drops).
    pub(crate) fn begin(&self) {
        self.head.dirty.store(1, Relaxed);
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
        h.dirty.store(0, Relaxed);
        Ok(())
    }
}

impl Drop for Guard<'_> {
    fn drop(&mut self) {
        self.head.dirty.store(0, Release);
        // SAFETY: a Guard exists only while this thread holds the lock.
        unsafe { self.head.lock.unlock::<crate::LinuxPlatform>() };
    }
}
