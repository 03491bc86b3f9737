//! Filling a table nobody else can see yet (a builder's, or one copied in): no
//! lock, its appendable entries as one slice.

use super::{Guard, LINEAR};
use crate::shm::layout::{BlockHead, ContainerHead, Entry, ENTRY};
use crate::shm::mem::{Block, Obj, Raw};
use crate::shm::ValError;
use crate::Pool;
use std::sync::atomic::Ordering::{Relaxed, Release};

impl Pool {
    /// A new table (as [`new_tab_obj`](Self::new_tab_obj)) to fill privately: a
    /// small one's parts are addressed from its allocation, not looked up again.
    pub(crate) fn new_private_tab(&self, t: u8, cap: u64) -> Result<PrivateTab<'_>, ValError> {
        if (1..=LINEAR).contains(&cap) {
            let (f, c, b) = self.new_small_tab(t, cap)?;
            return PrivateTab::new(self, f.obj, c, Some(b))
                .inspect_err(|_| self.release(Raw::new(t, 0, f.obj.off)));
        }
        let o = self.new_tab_obj(t, cap)?;
        self.private_tab(o)
            .inspect_err(|_| self.release(Raw::new(t, 0, o.off)))
    }

    /// A table this thread just made, which nobody else can see yet, to fill.
    pub(crate) fn private_tab(&self, o: Obj) -> Result<PrivateTab<'_>, ValError> {
        let head = self.container(o)?;
        PrivateTab::new(self, o, head, self.block(head, ENTRY)?)
    }
}

/// Appending to a table nobody else can see yet: no lock (the guard is never
/// dropped, so never unlocks), and the data block is validated once, not per entry.
pub(crate) struct PrivateTab<'p> {
    pool: &'p Pool,
    obj: Obj,
    head: &'p ContainerHead,
    /// The current block's head when its entries are in `room` (it has no index).
    bhead: Option<&'p BlockHead>,
    /// The current block's entries when it has no index (empty otherwise, or with
    /// no block): [`append`](Self::append)'s fast path writes the next of them.
    room: &'p [Entry],
    /// Entries written in the block (its `used`: only this thread writes it).
    used: u64,
}

impl<'p> PrivateTab<'p> {
    fn new(
        pool: &'p Pool,
        obj: Obj,
        head: &'p ContainerHead,
        b: Option<Block<'p>>,
    ) -> Result<PrivateTab<'p>, ValError> {
        let mut t = PrivateTab {
            pool,
            obj,
            head,
            bhead: None,
            room: &[],
            used: 0,
        };
        t.set_block(b)?;
        Ok(t)
    }

    /// The table (kept by [`TabBuilder`](super::TabBuilder)).
    pub(crate) fn obj(&self) -> Obj {
        self.obj
    }

    pub(crate) fn pool(&self) -> &'p Pool {
        self.pool
    }

    /// A guard of the table: not locked (nobody else can see the table), and never
    /// dropped, so never unlocking.
    fn guard(&self) -> std::mem::ManuallyDrop<Guard<'p>> {
        Guard::unlocked(self.pool, self.obj, self.head, None)
    }

    /// Makes `b` the block appended to.
    fn set_block(&mut self, b: Option<Block<'p>>) -> Result<(), ValError> {
        (self.bhead, self.room, self.used) = match b {
            Some(b) if b.head.index.load(Relaxed) == 0 => {
                (Some(b.head), b.entries(b.cap)?, Guard::used(b))
            }
            _ => (None, &[][..], 0),
        };
        Ok(())
    }

    /// Puts `k → v` (the table owns both on success): a key equal to one already in
    /// the table replaces that entry's value (the first key stays, as in Python).
    pub(crate) fn put(&mut self, hash: u64, k: Raw, v: Raw) -> Result<(), ValError> {
        let g = self.guard();
        if let Some(b) = g.block()? {
            let pool = self.pool;
            // Without an index, a scan of the hashes settles it (no key is read
            // unless a hash matches); with one, the index does.
            let maybe = b.head.index.load(Relaxed) != 0
                || (0..Guard::used(b)).any(|i| {
                    pool.entry_in(b, i)
                        .is_ok_and(|e| e.hash.load(Relaxed) == hash)
                });
            if maybe {
                let key = pool.to_val_raw(k, 0)?;
                if let Some(f) = g.find(hash, &key)? {
                    let old = pool.read(&f.entry.value);
                    pool.write(&f.entry.value, v);
                    pool.release(old);
                    pool.release(k);
                    return Ok(());
                }
            }
        }
        self.append(hash, k, v)
    }

    /// Appends an entry whose key is not in the table (the caller's map has unique
    /// keys); the table owns `k` and `v` on success.
    #[inline]
    pub(crate) fn append(&mut self, hash: u64, k: Raw, v: Raw) -> Result<(), ValError> {
        // The fast path: a block without an index, with room. The entry is whole
        // before `used` counts it (the crash contract); `len` follows.
        if let (Some(e), Some(bh)) = (self.room.get(self.used as usize), self.bhead) {
            e.hash.store(hash, Relaxed);
            self.pool.write(&e.key, k);
            self.pool.write(&e.value, v);
            self.used += 1;
            bh.used.store(self.used, Release);
            let len = &self.head.len;
            len.store(len.load(Relaxed) + 1, Relaxed);
            return Ok(());
        }
        self.append_slow(hash, k, v)
    }

    #[cold]
    fn append_slow(&mut self, hash: u64, k: Raw, v: Raw) -> Result<(), ValError> {
        let g = self.guard();
        match g.block()? {
            Some(b) if Guard::used(b) < b.cap => g.append_in(b, hash, k, v)?,
            _ => g.append(hash, k, v)?,
        }
        let b = g.block()?;
        self.set_block(b)
    }
}
