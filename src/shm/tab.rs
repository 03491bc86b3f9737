//! `dict`/`OrderedDict` in a pool: entries in insertion order (like CPython's compact
//! dict) plus, above 8 entries, an open-addressing index of `u32` entry numbers.
//!
//! Every operation holds the container's robust lock. Crash repair: an operation
//! marks the container dirty; an entry is fully written before `used` counts it, and
//! the index is derived, so the next holder after a death (or any holder that finds
//! the dirty mark) recounts `len` and rebuilds the index from the entries.

use super::layout::{tag, ContainerHead, Entry, ENTRY, HDR};
use super::mem::{corrupt, Obj, Raw};
use super::ValError;
use crate::val::Val;
use crate::Pool;
use shmval_alloc::{LockState, LOCK_PATIENCE};
use std::hash::{Hash, Hasher};
use std::sync::atomic::AtomicU32;
use std::sync::atomic::Ordering::{Relaxed, Release};

/// Tables up to this many entries are searched without an index.
const LINEAR: u64 = 8;
const EMPTY: u32 = 0;
const GONE: u32 = u32::MAX;

/// A deterministic hasher (the same in every process; std's is randomly keyed).
struct Fx(u64);

impl Hasher for Fx {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            self.add(u64::from_le_bytes(c.try_into().expect("8 bytes")));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut b = [0u8; 8];
            b[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(b) ^ (rest.len() as u64) << 59);
        }
    }
    fn write_u8(&mut self, i: u8) {
        self.add(i as u64);
    }
    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }
    fn write_i128(&mut self, i: i128) {
        self.add(i as u64);
        self.add((i >> 64) as u64);
    }
    fn finish(&self) -> u64 {
        // Final avalanche so the low bits (bucket numbers) depend on every input bit.
        let mut x = self.0;
        x ^= x >> 32;
        x = x.wrapping_mul(0xd6e8_feb8_6659_fd93);
        x ^ (x >> 32)
    }
}

impl Fx {
    #[inline]
    fn add(&mut self, w: u64) {
        self.0 = (self.0.rotate_left(5) ^ w).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

/// The hash of a key, equal for keys equal under Python semantics, in every process.
pub(crate) fn key_hash(k: &Val) -> u64 {
    let mut h = Fx(0);
    k.hash(&mut h);
    h.finish()
}

/// Bytes of the index of a table with `cap` entries.
pub(crate) fn index_bytes(cap: u64) -> u64 {
    buckets(cap) * 4
}

fn buckets(cap: u64) -> u64 {
    (cap * 2).next_power_of_two().max(16)
}

/// A container's lock, held; repairs a table or list whose last holder died.
pub(crate) struct Guard<'p> {
    pub pool: &'p Pool,
    pub obj: Obj,
    pub head: &'p ContainerHead,
}

impl<'p> Guard<'p> {
    pub(crate) fn lock(pool: &'p Pool, obj: Obj) -> Result<Guard<'p>, ValError> {
        let head = pool.container(obj)?;
        let state = head
            .lock
            .lock_within::<crate::LinuxPlatform>(Some(LOCK_PATIENCE))
            .map_err(|_| ValError::LockTimeout)?;
        let g = Guard { pool, obj, head };
        if state == LockState::Recovered || head.dirty.load(Relaxed) != 0 {
            g.repair()?;
        }
        Ok(g)
    }

    /// Marks the start of a modification (cleared when the guard drops).
    pub(crate) fn begin(&self) {
        self.head.dirty.store(1, Relaxed);
    }

    fn repair(&self) -> Result<(), ValError> {
        let h = self.head;
        let cap = h.cap.load(Relaxed);
        match self.obj.tag {
            tag::LIST => {
                if h.len.load(Relaxed) > cap {
                    h.len.store(cap, Relaxed);
                }
            }
            _ => {
                if h.used.load(Relaxed) > cap {
                    h.used.store(cap, Relaxed);
                }
                let data = h.data.load(Relaxed);
                let mut len = 0;
                for i in 0..h.used.load(Relaxed) {
                    if self.pool.read(&self.pool.entry_at(data, i)?.key).tag != tag::DELETED {
                        len += 1;
                    }
                }
                h.len.store(len, Relaxed);
                self.rebuild_index()?;
            }
        }
        h.dirty.store(0, Relaxed);
        Ok(())
    }

    fn index(&self) -> Result<Option<&'p [AtomicU32]>, ValError> {
        let off = self.head.index.load(Relaxed);
        if off == 0 {
            return Ok(None);
        }
        let n = buckets(self.head.cap.load(Relaxed));
        let bytes = self.pool.bytes_at(off, n * 4)?;
        // SAFETY: `bytes_at` checked the range; u32 atomics over 4-aligned memory
        // (blocks are 16-aligned) that only lock holders write.
        Ok(Some(unsafe {
            std::slice::from_raw_parts(bytes.as_ptr() as *const AtomicU32, n as usize)
        }))
    }

    fn rebuild_index(&self) -> Result<(), ValError> {
        let Some(idx) = self.index()? else {
            return Ok(());
        };
        idx.iter().for_each(|b| b.store(EMPTY, Relaxed));
        let data = self.head.data.load(Relaxed);
        for i in 0..self.head.used.load(Relaxed) {
            let e = self.pool.entry_at(data, i)?;
            if self.pool.read(&e.key).tag != tag::DELETED {
                Self::index_put(idx, e.hash.load(Relaxed), i as u32)?;
            }
        }
        Ok(())
    }

    fn index_put(idx: &[AtomicU32], hash: u64, i: u32) -> Result<(), ValError> {
        let mask = idx.len() - 1;
        let mut b = hash as usize & mask;
        for _ in 0..idx.len() {
            let v = idx[b].load(Relaxed);
            if v == EMPTY || v == GONE {
                idx[b].store(i + 1, Relaxed);
                return Ok(());
            }
            b = (b + 1) & mask;
        }
        Err(corrupt("dict index full"))
    }

    /// The entry number of `key`, and its index bucket when indexed.
    pub(crate) fn find(
        &self,
        hash: u64,
        key: &Val,
    ) -> Result<Option<(u64, Option<usize>)>, ValError> {
        let data = self.head.data.load(Relaxed);
        let used = self
            .head
            .used
            .load(Relaxed)
            .min(self.head.cap.load(Relaxed));
        let matches = |i: u64| -> Result<bool, ValError> {
            let e = self.pool.entry_at(data, i)?;
            if e.hash.load(Relaxed) != hash {
                return Ok(false);
            }
            self.key_eq(self.pool.read(&e.key), key)
        };
        match self.index()? {
            None => {
                for i in 0..used {
                    if matches(i)? {
                        return Ok(Some((i, None)));
                    }
                }
                Ok(None)
            }
            Some(idx) => {
                let mask = idx.len() - 1;
                let mut b = hash as usize & mask;
                for _ in 0..idx.len() {
                    match idx[b].load(Relaxed) {
                        EMPTY => return Ok(None),
                        GONE => {}
                        v if u64::from(v - 1) < used => {
                            if matches(u64::from(v - 1))? {
                                return Ok(Some((u64::from(v - 1), Some(b))));
                            }
                        }
                        _ => return Err(corrupt("dict index names a missing entry")),
                    }
                    b = (b + 1) & mask;
                }
                Ok(None)
            }
        }
    }

    fn key_eq(&self, stored: Raw, key: &Val) -> Result<bool, ValError> {
        match (stored.tag, key) {
            (tag::DELETED, _) => Ok(false),
            (tag::STR, Val::Str(s)) => {
                let o = self.pool.obj(stored.payload)?;
                let len = self
                    .pool
                    .at::<std::sync::atomic::AtomicU64>(o.off + 16)?
                    .load(Relaxed);
                Ok(len == s.len() as u64 && self.pool.bytes_at(o.off + 24, len)? == s.as_bytes())
            }
            (tag::STR, _) | (_, Val::Str(_)) => Ok(false),
            _ => Ok(self.pool.to_val_raw(stored, 1)? == *key),
        }
    }

    pub(crate) fn entry(&self, i: u64) -> Result<&'p Entry, ValError> {
        self.pool.entry_at(self.head.data.load(Relaxed), i)
    }

    /// Appends a new entry (the key is known to be absent), growing if needed. Takes
    /// over the references `k` and `v` only on success.
    pub(crate) fn append(&self, hash: u64, k: Raw, v: Raw) -> Result<(), ValError> {
        let h = self.head;
        if h.used.load(Relaxed) >= h.cap.load(Relaxed) {
            self.grow()?;
        }
        let i = h.used.load(Relaxed);
        let e = self.entry(i)?;
        e.hash.store(hash, Relaxed);
        self.pool.write(&e.key, k);
        self.pool.write(&e.value, v);
        h.used.store(i + 1, Release); // the entry exists from here on
        if let Some(idx) = self.index()? {
            Self::index_put(idx, hash, i as u32)?;
        }
        h.len.store(h.len.load(Relaxed) + 1, Relaxed);
        Ok(())
    }

    /// Moves the live entries into a block twice as large (dropping deleted ones).
    fn grow(&self) -> Result<(), ValError> {
        let h = self.head;
        let (cap, used, data, index) = (
            h.cap.load(Relaxed),
            h.used.load(Relaxed),
            h.data.load(Relaxed),
            h.index.load(Relaxed),
        );
        let len = h.len.load(Relaxed);
        let new_cap = if len * 2 < cap { cap } else { (cap * 2).max(4) }; // compact in place if half dead
        let new_data = self.pool.alloc_raw_block(new_cap * ENTRY as u64)?;
        let new_index = if new_cap > LINEAR {
            match self.pool.alloc_block(index_bytes(new_cap)) {
                Ok(x) => x,
                Err(e) => {
                    self.pool.free_block(new_data, new_cap * ENTRY as u64);
                    return Err(e);
                }
            }
        } else {
            0
        };
        let mut n = 0;
        for i in 0..used.min(cap) {
            let e = self.pool.entry_at(data, i)?;
            let k = self.pool.read(&e.key);
            if k.tag == tag::DELETED {
                continue;
            }
            let d = self.pool.entry_at(new_data, n)?;
            d.hash.store(e.hash.load(Relaxed), Relaxed);
            self.pool.write(&d.key, k);
            self.pool.write(&d.value, self.pool.read(&e.value));
            n += 1;
        }
        // Switch over (dirty is set: a death in between is repaired from the new block
        // if `data` was stored, else the old one is still whole).
        h.data.store(new_data, Relaxed);
        h.cap.store(new_cap, Relaxed);
        h.used.store(n, Relaxed);
        h.len.store(n, Relaxed);
        h.index.store(new_index, Relaxed);
        self.rebuild_index()?;
        if data != 0 {
            self.pool.free_block(data, cap * ENTRY as u64);
        }
        if index != 0 {
            self.pool.free_block(index, index_bytes(cap));
        }
        Ok(())
    }

    /// Removes entry `i`, returning its key and value (the caller now owns them).
    pub(crate) fn remove_at(&self, i: u64, bucket: Option<usize>) -> Result<(Raw, Raw), ValError> {
        let e = self.entry(i)?;
        let (k, v) = (self.pool.read(&e.key), self.pool.read(&e.value));
        self.pool.write(
            &e.key,
            Raw {
                tag: tag::DELETED,
                payload: 0,
            },
        );
        self.pool.write(&e.value, Raw::NONE);
        if let (Some(idx), Some(b)) = (self.index()?, bucket) {
            idx[b].store(GONE, Relaxed);
        }
        self.head
            .len
            .store(self.head.len.load(Relaxed).saturating_sub(1), Relaxed);
        Ok((k, v))
    }
}

impl Drop for Guard<'_> {
    fn drop(&mut self) {
        self.head.dirty.store(0, Release);
        // SAFETY: a Guard exists only while this thread holds the lock.
        unsafe { self.head.lock.unlock::<crate::LinuxPlatform>() };
    }
}

impl Pool {
    /// A new, empty table object with room for `cap` entries.
    pub(crate) fn new_tab_obj(&self, t: u8, cap: u64) -> Result<Obj, ValError> {
        let o = self.alloc_obj(t, HDR + std::mem::size_of::<ContainerHead>())?;
        let raw = Raw {
            tag: t,
            payload: o.off,
        };
        if cap > 0 {
            let c = self.container(o)?;
            let data = self
                .alloc_raw_block(cap * ENTRY as u64)
                .inspect_err(|_| self.release(raw))?;
            c.data.store(data, Relaxed);
            c.cap.store(cap, Relaxed);
            if cap > LINEAR {
                let idx = self
                    .alloc_block(index_bytes(cap))
                    .inspect_err(|_| self.release(raw))?;
                c.index.store(idx, Relaxed);
            }
        }
        Ok(o)
    }

    /// Appends to a table being built that no one else can see yet (no equal key
    /// present), without taking its lock.
    pub(crate) fn tab_append_private(
        &self,
        o: Obj,
        hash: u64,
        k: Raw,
        v: Raw,
    ) -> Result<(), ValError> {
        let g = std::mem::ManuallyDrop::new(Guard {
            pool: self,
            obj: o,
            head: self.container(o)?,
        });
        g.append(hash, k, v)
    }

    /// Every live `(key, value)`, each retained, read under the lock.
    pub(crate) fn tab_snapshot(&self, o: Obj) -> Result<Vec<(Raw, Raw)>, ValError> {
        let g = Guard::lock(self, o)?;
        let used = g.head.used.load(Relaxed).min(g.head.cap.load(Relaxed));
        let mut out: Vec<(Raw, Raw)> =
            Vec::with_capacity(g.head.len.load(Relaxed).min(used) as usize);
        let fail = |out: &Vec<(Raw, Raw)>, e| {
            out.iter().for_each(|(k, v)| self.release_all(&[*k, *v]));
            Err(e)
        };
        for i in 0..used {
            let e = match g.entry(i) {
                Ok(e) => e,
                Err(err) => return fail(&out, err),
            };
            let (k, v) = (self.read(&e.key), self.read(&e.value));
            if k.tag == tag::DELETED {
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
