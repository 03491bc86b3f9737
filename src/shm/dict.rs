//! `dict`/`OrderedDict` in a pool: entries in insertion order (like CPython's compact
//! dict) plus, above 8 entries, an open-addressing index of `u64` buckets, each an
//! entry number and the high half of that entry's hash (so a probe that does not
//! match is rejected without touching the entry: one cache miss fewer per probe).
//!
//! Every change holds the container's robust lock; a lookup may read without it
//! against the container's version ([`Guard::peek`]). Crash repair: an operation
//! marks the container dirty (its version odd); an entry is fully written before the block's `used`
//! counts it; growing builds a complete new block (entries, `used`, index) and
//! switches with one store of `data`; `len` and the index are derived, so the next
//! holder after a death (or any holder that finds the dirty mark) recounts `len` and
//! rebuilds the index from the entries. A removal is one store (the key's tag word
//! becomes DELETED); overwriting a live value slot, two words, is logged in the head
//! first and replayed by the next holder ([`Guard::overwrite`]).

use super::layout::{tag, ContainerHead, Entry, TextHead, BLOCK_HEAD, ENTRY, HDR, TEXT_BYTES};
use super::mem::{corrupt, Block, Fresh, Obj, Raw};
use super::ValError;
use crate::val::Val;
use crate::Pool;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::{Relaxed, Release};

use super::guard::Guard;

mod hint;
mod private;
pub(crate) use hint::IndexHint;
pub(crate) use private::PrivateTab;

const LINEAR: u64 = 8;
/// Bucket words: low half 0 (empty), `u32::MAX` (deleted) or entry number + 1; high
/// half the high half of the entry's hash.
const EMPTY: u64 = 0;
const GONE: u64 = u32::MAX as u64;
const NUM: u64 = u32::MAX as u64;

/// The bucket word naming entry `i` of hash `hash`.
fn bucket_word(hash: u64, i: u64) -> u64 {
    (hash & !NUM) | (i + 1)
}

/// Bytes of the index of a table with `cap` entries.
pub(crate) fn index_bytes(cap: u64) -> u64 {
    buckets(cap).saturating_mul(8)
}

fn buckets(cap: u64) -> u64 {
    // Saturating: a capacity read from shared memory may be anything (a block's is
    // validated against the pool's size, so this never saturates for a real one).
    cap.saturating_mul(2)
        .checked_next_power_of_two()
        .unwrap_or(1 << 63)
        .max(16)
}

/// A dict entry found by [`Guard::find`]: validated, with its index bucket.
pub(crate) struct Found<'p> {
    pub bucket: Option<usize>,
    pub entry: &'p Entry,
    /// The entry's number in the data block.
    pub num: u64,
}

/// The validated data block of a dict and its index.
pub(super) type Cached<'p> = (Block<'p>, Option<&'p [AtomicU64]>);

impl<'p> Guard<'p> {
    #[inline]
    pub(crate) fn block(&self) -> Result<Option<Block<'p>>, ValError> {
        if let Some((b, _)) = self.cache.get() {
            return Ok(Some(b));
        }
        self.block_slow()
    }

    /// [`block`](Self::block) the first time: validated, then cached.
    #[cold]
    fn block_slow(&self) -> Result<Option<Block<'p>>, ValError> {
        let b = self.pool.block(self.head, ENTRY)?;
        if let Some(b) = b {
            let idx = self.index_of(b)?;
            if let (Some(hint), Some(idx)) = (self.hint, idx) {
                hint.note(self.pool, idx);
            }
            self.cache.set(Some((b, idx)));
        }
        Ok(b)
    }

    /// Entries written in `b` (live and deleted).
    #[inline]
    pub(super) fn used(b: Block<'_>) -> u64 {
        b.head.used.load(Relaxed).min(b.cap)
    }

    /// After a holder died (or left `dirty`): the data block is whole (it is switched
    /// by one store), so recount `len` and rebuild the derived index.
    #[inline]
    pub(super) fn index(&self, b: Block<'p>) -> Result<Option<&'p [AtomicU64]>, ValError> {
        match self.cache.get() {
            Some((c, idx)) if c.off == b.off => Ok(idx),
            _ => self.index_of(b),
        }
    }

    pub(super) fn index_of(&self, b: Block<'p>) -> Result<Option<&'p [AtomicU64]>, ValError> {
        let off = b.head.index.load(Relaxed);
        if off == 0 {
            return Ok(None);
        }
        self.pool.words_at(off, buckets(b.cap)).map(Some)
    }

    pub(super) fn rebuild_index(&self, b: Block<'p>) -> Result<(), ValError> {
        self.fill_index(b, false)
    }

    /// Puts `b`'s live entries into its index; `zeroed`: the index is a fresh,
    /// zeroed block (all `EMPTY` already).
    fn fill_index(&self, b: Block<'p>, zeroed: bool) -> Result<(), ValError> {
        let Some(idx) = self.index(b)? else {
            return Ok(());
        };
        if !zeroed {
            idx.iter().for_each(|x| x.store(EMPTY, Relaxed));
        }
        for (i, e) in b.entries(Self::used(b))?.iter().enumerate() {
            if self.pool.read(&e.key).tag() != tag::DELETED {
                Self::index_put(idx, e.hash.load(Relaxed), i as u64)?;
            }
        }
        Ok(())
    }

    pub(super) fn index_put(idx: &[AtomicU64], hash: u64, i: u64) -> Result<(), ValError> {
        let mask = idx.len() - 1;
        let mut b = hash as usize & mask;
        for _ in 0..idx.len() {
            let v = idx[b].load(Relaxed) & NUM;
            if v == EMPTY || v == GONE {
                idx[b].store(bucket_word(hash, i), Relaxed);
                return Ok(());
            }
            b = (b + 1) & mask;
        }
        Err(corrupt("dict index full"))
    }

    /// The entry holding `key` (validated once, here), its number and index bucket.
    pub(crate) fn find(&self, hash: u64, key: &Val) -> Result<Option<Found<'p>>, ValError> {
        let Some(b) = self.block()? else {
            return Ok(None);
        };
        let used = Self::used(b);
        let matches = |i: u64, bucket: Option<usize>| -> Result<Option<Found<'p>>, ValError> {
            let e = self.pool.entry_in(b, i)?;
            if e.hash.load(Relaxed) != hash || !self.key_eq(self.pool.read(&e.key), key)? {
                return Ok(None);
            }
            Ok(Some(Found {
                bucket,
                entry: e,
                num: i,
            }))
        };
        match self.index(b)? {
            None => {
                for i in 0..used {
                    if let Some(f) = matches(i, None)? {
                        return Ok(Some(f));
                    }
                }
                Ok(None)
            }
            Some(idx) => {
                let mask = idx.len() - 1;
                let mut bucket = hash as usize & mask;
                for _ in 0..idx.len() {
                    let w = idx[bucket].load(Relaxed);
                    match w & NUM {
                        EMPTY => return Ok(None),
                        GONE => {}
                        // Another hash: not this key, and its entry stays untouched.
                        _ if (w ^ hash) & !NUM != 0 => {}
                        v if v - 1 < used => {
                            // `matches`, written out: the hot probe of every lookup.
                            let e = self.pool.entry_in(b, v - 1)?;
                            if e.hash.load(Relaxed) == hash
                                && self.key_eq(self.pool.read(&e.key), key)?
                            {
                                return Ok(Some(Found {
                                    bucket: Some(bucket),
                                    entry: e,
                                    num: v - 1,
                                }));
                            }
                        }
                        _ => return Err(corrupt("dict index names a missing entry")),
                    }
                    bucket = (bucket + 1) & mask;
                }
                Ok(None)
            }
        }
    }

    /// Whether the stored key `stored` equals `key`: the commonest pair inline (an
    /// `i64` key against an int stored signed, its payload sign-extended, or unsigned
    /// below 2^32, zero-extended), the rest out of line.
    #[inline]
    pub(super) fn key_eq(&self, stored: Raw, key: &Val) -> Result<bool, ValError> {
        match (stored.tag(), key) {
            (tag::I8..=tag::U32, Val::I64(k)) => Ok(stored.payload as i64 == *k),
            _ => self.key_eq_other(stored, key),
        }
    }

    #[inline(never)]
    fn key_eq_other(&self, stored: Raw, key: &Val) -> Result<bool, ValError> {
        match (stored.tag(), key) {
            (tag::DELETED, _) => Ok(false),
            (tag::STR_INLINE, Val::Str(s)) => Ok(s.len() <= 8
                && s.len() == stored.len() as usize
                && stored.payload.to_le_bytes()[..s.len()] == *s.as_bytes()),
            (tag::STR_INLINE, _) => Ok(false),
            // Integer keys (the common case): compare as integers, no Val built.
            (t @ tag::I8..=tag::U64, k) if k.as_i64().is_some() && !matches!(k, Val::Bool(_)) => {
                let stored = if t == tag::U64 {
                    i128::from(stored.payload)
                } else {
                    i128::from(stored.payload as i64)
                };
                Ok(k.as_i64().map(i128::from) == Some(stored))
            }
            (tag::STR, Val::Str(s)) => {
                let o = self.pool.obj(stored.payload)?;
                let len = self.pool.at::<TextHead>(o.off)?.len.load(Relaxed);
                Ok(len == s.len() as u64
                    && self.pool.bytes_at(o.off + TEXT_BYTES as u64, len)? == s.as_bytes())
            }
            (tag::STR, _) | (_, Val::Str(_)) => Ok(false),
            _ => Ok(self.pool.to_val_raw(stored, 1)? == *key),
        }
    }

    /// Appends a new entry (the key is known to be absent), growing if needed. Takes
    /// over the references `k` and `v` only on success.
    /// The data block with room for one more entry (grown if it was full), for an
    /// [`append_in`](Self::append_in) after it.
    #[inline]
    pub(crate) fn room_for_one(&self) -> Result<Block<'p>, ValError> {
        match self.block()? {
            Some(b) if Self::used(b) < b.cap => Ok(b),
            _ => self.grow_cold(),
        }
    }

    #[cold]
    #[inline(never)]
    fn grow_cold(&self) -> Result<Block<'p>, ValError> {
        self.grow()
    }

    pub(crate) fn append(&self, hash: u64, k: Raw, v: Raw) -> Result<(), ValError> {
        let b = match self.block()? {
            Some(b) if Self::used(b) < b.cap => b,
            _ => self.grow()?,
        };
        self.append_in(b, hash, k, v)
    }

    /// [`append`](Self::append) into the current data block `b`, which has room.
    #[inline]
    pub(crate) fn append_in(
        &self,
        b: Block<'p>,
        hash: u64,
        k: Raw,
        v: Raw,
    ) -> Result<(), ValError> {
        let i = Self::used(b);
        let e = self.pool.entry_in(b, i)?;
        e.hash.store(hash, Relaxed);
        self.pool.write(&e.key, k);
        self.pool.write(&e.value, v);
        b.head.used.store(i + 1, Release); // the entry exists from here on
        if let Some(idx) = self.index(b)? {
            Self::index_put(idx, hash, i)?;
        }
        self.head
            .len
            .store(self.head.len.load(Relaxed) + 1, Relaxed);
        Ok(())
    }

    /// Copies the live entries into a new block (twice as large unless half the old
    /// one is deleted entries) with its own index, then switches to it with one
    /// store of `data`: a holder killed before the switch leaves the old table whole,
    /// after it the new one.
    pub(super) fn grow(&self) -> Result<Block<'p>, ValError> {
        let old = self.block()?;
        let (cap, len) = (old.map_or(0, |b| b.cap), self.head.len.load(Relaxed));
        let new_cap = if cap > 0 && len.saturating_mul(2) < cap {
            cap
        } else {
            cap.saturating_mul(2).max(4)
        };
        self.rebuild(old, new_cap, None)
    }

    /// Copies the live entries of `old` into a new block of `new_cap` entries (entry
    /// `first` of `old`, if given, before all others) and switches to it with one
    /// store of `data`.
    pub(super) fn rebuild(
        &self,
        old: Option<Block<'p>>,
        new_cap: u64,
        first: Option<u64>,
    ) -> Result<Block<'p>, ValError> {
        if new_cap >= NUM {
            // Entry numbers are 32-bit in the index (a dict of 4G entries would
            // need 200 GB of entries anyway).
            return Err(shmval_alloc::AllocError::Exhausted {
                size: usize::MAX,
                align: 16,
            }
            .into());
        }
        let data = self.pool.new_data_block(new_cap, ENTRY)?;
        let pool: &'p Pool = self.pool;
        let nb = pool.block_at(data, ENTRY)?;
        // Logged at once, before the index is made and zeroed (a big table's index
        // is a big block: its zeroing must not be a window where a death leaks both).
        self.log_growth(&nb, old.map_or(0, |b| b.off));
        if new_cap > LINEAR {
            match pool.alloc_raw_block(index_bytes(new_cap)) {
                Ok(idx) => {
                    nb.head.index.store(idx, Relaxed); // named by the logged block
                    pool.zero_block(idx, index_bytes(new_cap))?;
                }
                Err(e) => {
                    self.unlog_growth();
                    pool.free_data_block(self.obj, nb);
                    return Err(e);
                }
            }
        }
        fail_point!("shm.growth.logged");
        let mut n = 0;
        if let Some(ob) = old {
            // Both blocks as slices, validated once (a copy per entry is the cost of
            // a growth).
            let (src, dst) = (ob.entries(Self::used(ob))?, nb.entries(nb.cap)?);
            let mut copy = |e: &Entry| -> Result<(), ValError> {
                let k = pool.read(&e.key);
                if k.tag() == tag::DELETED {
                    return Ok(());
                }
                let d = dst
                    .get(n)
                    .ok_or_else(|| corrupt("a growth's new block too small"))?;
                d.hash.store(e.hash.load(Relaxed), Relaxed);
                pool.write(&d.key, k);
                pool.write(&d.value, pool.read(&e.value));
                n += 1;
                Ok(())
            };
            if let Some(f) = first {
                copy(
                    src.get(f as usize)
                        .ok_or_else(|| corrupt("entry beyond the block"))?,
                )?;
            }
            for (i, e) in src.iter().enumerate() {
                if Some(i as u64) != first {
                    copy(e)?;
                }
            }
        }
        let n = n as u64;
        nb.head.used.store(n, Relaxed);
        // A fresh index was zeroed above (a linear table has none).
        self.fill_index(nb, true)?;
        // SYNC POINT: one store switches the whole table.
        self.head.data.store(data, Release);
        self.cache.set(None);
        self.head.len.store(n, Relaxed);
        self.finish_growth(&nb);
        Ok(nb)
    }

    /// Marks an entry deleted with one store of its key's tag word (the commit: its
    /// key and value references are no longer the table's). The stale payloads stay;
    /// nothing reads a deleted entry's key payload or value.
    pub(super) fn empty_entry(e: &Entry) {
        e.key.tag.store(u64::from(tag::DELETED), Release);
    }

    /// Removes a found entry, returning its key and value (the caller now owns them).
    pub(crate) fn remove_at(&self, f: Found<'p>) -> Result<(Raw, Raw), ValError> {
        let e = f.entry;
        let (k, v) = (self.pool.read(&e.key), self.pool.read(&e.value));
        Self::empty_entry(e);
        if let (Some(b), Some(bk)) = (self.block()?, f.bucket) {
            if let Some(idx) = self.index(b)? {
                idx[bk].store(GONE, Relaxed);
            }
        }
        self.head
            .len
            .store(self.head.len.load(Relaxed).saturating_sub(1), Relaxed);
        Ok((k, v))
    }
}

impl<'p> Guard<'p> {
    /// The number of the last (or first) live entry.
    pub(super) fn end_entry(&self, b: Block<'p>, last: bool) -> Result<Option<u64>, ValError> {
        let used = Self::used(b);
        let live = |i: u64| -> Result<bool, ValError> {
            Ok(self.pool.read(&self.pool.entry_in(b, i)?.key).tag() != tag::DELETED)
        };
        if last {
            for i in (0..used).rev() {
                if live(i)? {
                    return Ok(Some(i));
                }
            }
        } else {
            for i in 0..used {
                if live(i)? {
                    return Ok(Some(i));
                }
            }
        }
        Ok(None)
    }

    /// The index bucket that names entry `i` (whose hash is `hash`).
    pub(super) fn bucket_of(
        &self,
        b: Block<'p>,
        hash: u64,
        i: u64,
    ) -> Result<Option<usize>, ValError> {
        let Some(idx) = self.index(b)? else {
            return Ok(None);
        };
        let mask = idx.len() - 1;
        let mut bucket = hash as usize & mask;
        for _ in 0..idx.len() {
            match idx[bucket].load(Relaxed) & NUM {
                EMPTY => break,
                v if v == i + 1 => return Ok(Some(bucket)),
                _ => bucket = (bucket + 1) & mask,
            }
        }
        Err(corrupt("dict index does not name a live entry"))
    }

    /// Removes the last (or first) entry, returning its key and value (owned by the
    /// caller). Deleted entries at the end are dropped from `used`, so popping from
    /// the end again and again stays O(1).
    pub(crate) fn pop_end(&self, last: bool) -> Result<Option<(Raw, Raw)>, ValError> {
        let Some(b) = self.block()? else {
            return Ok(None);
        };
        let Some(i) = self.end_entry(b, last)? else {
            return Ok(None);
        };
        self.begin();
        let entry = self.pool.entry_in(b, i)?;
        let bucket = self.bucket_of(b, entry.hash.load(Relaxed), i)?;
        let kv = self.remove_at(Found {
            bucket,
            entry,
            num: i,
        })?;
        if last {
            let keep = self.end_entry(b, true)?.map_or(0, |j| j + 1);
            b.head.used.store(keep, Release);
        }
        Ok(Some(kv))
    }

    /// Moves the entry of `key` to the end (or the front). `false` if it is absent.
    ///
    /// To the end: the entry is copied to the next free place and published there
    /// before its old place is emptied (a holder killed in between leaves two entries
    /// with the same key slot, which repair resolves); the references do not move.
    /// To the front: the entries are copied into a new block, the moved one first,
    /// and switched with one store (O(n), like a compaction).
    pub(crate) fn move_to_end(&self, hash: u64, key: &Val, last: bool) -> Result<bool, ValError> {
        self.begin();
        let Some(f) = self.find(hash, key)? else {
            return Ok(false);
        };
        let b = self
            .block()?
            .ok_or_else(|| corrupt("dict entry without a block"))?;
        if self.end_entry(b, last)? == Some(f.num) {
            return Ok(true);
        }
        if !last {
            self.rebuild(Some(b), b.cap, Some(f.num))?;
            return Ok(true);
        }
        if Self::used(b) == b.cap {
            self.grow()?;
            return self.move_to_end(hash, key, last); // the table has room now
        }
        let (e, i) = (f.entry, Self::used(b));
        let d = self.pool.entry_in(b, i)?;
        d.hash.store(hash, Relaxed);
        self.pool.write(&d.key, self.pool.read(&e.key));
        self.pool.write(&d.value, self.pool.read(&e.value));
        b.head.used.store(i + 1, Release); // SYNC POINT: the copy exists from here on
        Self::empty_entry(e);
        if let (Some(idx), Some(bk)) = (self.index(b)?, f.bucket) {
            idx[bk].store(bucket_word(hash, i), Relaxed);
        }
        Ok(true)
    }
}

impl Pool {
    /// A new, empty table object with room for `cap` entries. A small table (at
    /// most [`LINEAR`] entries, no index) gets its first data block inside its own
    /// allocation: one allocation and one free instead of two.
    pub(crate) fn new_tab_obj(&self, t: u8, cap: u64) -> Result<Obj, ValError> {
        if (1..=LINEAR).contains(&cap) {
            return self.new_small_tab(t, cap).map(|(f, _, _)| f.obj);
        }
        let o = self.alloc_obj(t, HDR + std::mem::size_of::<ContainerHead>())?;
        let raw = Raw::new(t, 0, o.off);
        if cap > 0 {
            let data = self
                .new_data_block(cap, ENTRY)
                .inspect_err(|_| self.release(raw))?;
            if cap > LINEAR {
                match self.alloc_block(index_bytes(cap)) {
                    Ok(idx) => self.block_at(data, ENTRY)?.head.index.store(idx, Relaxed),
                    Err(e) => {
                        self.free_block(data, Block::bytes(cap, ENTRY as u64));
                        self.release(raw);
                        return Err(e);
                    }
                }
            }
            self.container(o)?.data.store(data, Release);
        }
        Ok(o)
    }

    /// A new table of `cap` entries (`1..=LINEAR`) with its data block embedded in
    /// its allocation, its head and block.
    fn new_small_tab(
        &self,
        t: u8,
        cap: u64,
    ) -> Result<(Fresh<'_>, &ContainerHead, Block<'_>), ValError> {
        debug_assert!((1..=LINEAR).contains(&cap));
        let head = HDR + std::mem::size_of::<ContainerHead>();
        let f = self.alloc_obj_fresh(
            t,
            head + Block::bytes(cap, ENTRY as u64) as usize,
            head + BLOCK_HEAD, // the block head's used and index: 0
        )?;
        debug_assert_eq!(f.obj.off + head as u64, Self::embedded_block(f.obj));
        let b = f.block(head, cap, ENTRY);
        b.head.cap.store(cap, Relaxed);
        let c = f.at::<ContainerHead>(HDR);
        c.data.store(b.off, Release);
        Ok((f, c, b))
    }

    /// Every live `(key, value)`, each retained, read under the lock.
    pub(crate) fn tab_snapshot(&self, o: Obj) -> Result<Vec<(Raw, Raw)>, ValError> {
        let g = Guard::lock(self, o)?;
        let Some(b) = g.block()? else {
            return Ok(Vec::new());
        };
        let mut out: Vec<(Raw, Raw)> =
            Vec::with_capacity(g.head.len.load(Relaxed).min(b.cap) as usize);
        let fail = |out: &Vec<(Raw, Raw)>, e| {
            out.iter().for_each(|(k, v)| self.release_all(&[*k, *v]));
            Err(e)
        };
        for i in 0..Guard::used(b) {
            let e = match self.entry_in(b, i) {
                Ok(e) => e,
                Err(err) => return fail(&out, err),
            };
            let (k, v) = (self.read(&e.key), self.read(&e.value));
            if k.tag() == tag::DELETED {
                continue;
            }
            if let Err(err) = self.retain(k) {
                return fail(&out, err);
            }
            if let Err(err) = self.retain(v) {
                self.release(k);
                return fail(&out, err);
            }
            out.push((k, v));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::Guard;
    use crate::shm::hash::key_hash;
    use crate::{Pool, PoolOptions, Val};
    use std::sync::atomic::Ordering::{Relaxed, Release};

    /// A `move_to_end` cut short after publishing the copy (the holder died) leaves
    /// the key in two entries; the next holder's repair keeps the moved one, and no
    /// reference is lost or released twice.
    #[test]
    fn repair_finishes_a_move_cut_short() {
        for n in [3i64, 20] {
            // 20 entries: with an index; 3: without.
            let name = format!("shmval-unit-move-{}-{n}", std::process::id());
            let pool = Pool::create_with(&name, 1 << 20, &PoolOptions::new().remove_on_drop(true))
                .unwrap();
            let base = pool.stats().in_use;
            let t = pool.new_otab().unwrap();
            for k in 0..n {
                t.insert(k, Val::List(vec![Val::I64(k)])).unwrap();
            }
            let obj = pool.obj(t.as_val().offset().unwrap()).unwrap();
            {
                let g = Guard::lock(&pool, obj).unwrap();
                g.begin();
                let key = Val::I64(1);
                let f = g.find(key_hash(&key), &key).unwrap().unwrap();
                let b = g.block().unwrap().unwrap();
                // Room for the copy (grow made the capacity a power of two ≥ n + 1).
                let i = Guard::used(b);
                assert!(i < b.cap);
                let d = pool.entry_in(b, i).unwrap();
                d.hash.store(f.entry.hash.load(Relaxed), Relaxed);
                pool.write(&d.key, pool.read(&f.entry.key));
                pool.write(&d.value, pool.read(&f.entry.value));
                b.head.used.store(i + 1, Release);
                // ... and here the holder "dies": the guard is forgotten with the
                // mark still set, as a recovered lock would find it.
                std::mem::forget(g);
                // SAFETY: this thread holds the lock (the forgotten guard took it).
                unsafe {
                    pool.container(obj)
                        .unwrap()
                        .lock
                        .unlock::<crate::LinuxPlatform>()
                };
            }
            assert_eq!(t.len().unwrap() as i64, n, "repair recounts");
            let keys: Vec<String> = t.keys().unwrap().iter().map(|k| k.to_string()).collect();
            let mut want: Vec<String> = (0..n).filter(|&k| k != 1).map(|k| k.to_string()).collect();
            want.push("1".into());
            assert_eq!(keys, want, "the moved copy is kept, at the end");
            assert_eq!(t.get_val(1).unwrap(), Some(Val::List(vec![Val::I64(1)])));
            assert!(t.remove(1).unwrap().is_some());
            assert!(t.get_val(1).unwrap().is_none(), "no stale second entry");
            drop(t);
            assert_eq!(pool.stats().in_use, base, "every reference released once");
        }
    }
}
