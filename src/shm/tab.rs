//! `ShmTab` and `ShmOTab`, handles on a shared dict and OrderedDict, and `TabLock`,
//! several operations under one hold of its lock (the dict itself is in `dict`).

use super::dict::IndexHint;
use super::guard::Guard;
use super::handle::{discard, Arg, ShmVal};
use super::hash::key_hash;
use super::mem::{Obj, Raw};
use super::ValError;
use crate::val::Val;
use crate::Pool;
use std::fmt;
use std::sync::atomic::Ordering;

/// A handle on a shared `dict` (or `OrderedDict`). Every operation is atomic with
/// respect to other processes: a change holds the table's robust lock; a lookup
/// (`get`, `get_val`, `contains_key`, `len`) of a value that is a number, bool,
/// `None` or short string reads without it, checking the table's version before and
/// after, and takes the lock only if the table changed meanwhile (or the value is an
/// object, which must be referenced under the lock).
#[derive(Clone)]
pub struct ShmTab(pub(super) ShmVal, pub(super) IndexHint);

impl fmt::Display for ShmTab {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl fmt::Debug for ShmTab {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ShmTab({self})")
    }
}

impl ShmTab {
    /// The handle of a table value.
    #[inline]
    pub(super) fn wrap(v: ShmVal) -> ShmTab {
        ShmTab(v, IndexHint::default())
    }

    fn obj(&self) -> Result<Obj, ValError> {
        self.pool().obj(self.0.raw().payload)
    }

    fn pool(&self) -> &Pool {
        self.0.obj_pool()
    }

    /// The table as a plain value handle.
    pub fn as_val(&self) -> &ShmVal {
        &self.0
    }

    /// Copies the table out to the heap.
    ///
    /// # Errors
    /// As [`ShmVal::to_val`].
    pub fn to_val(&self) -> Result<Val, ValError> {
        self.0.to_val()
    }

    fn guard(&self) -> Result<Guard<'_>, ValError> {
        Guard::lock(self.pool(), self.obj()?)
    }

    /// The value slot of the key of `hash` read without the lock
    /// ([`Guard::peek`]; `None`: ask under the lock), its bucket prefetched first.
    #[inline]
    fn peek(&self, hash: u64, kv: &Val) -> Option<Option<Raw>> {
        let pool = self.pool();
        self.1.prefetch(pool, hash);
        Guard::peek(pool, self.obj().ok()?, Some(&self.1), hash, kv)
    }

    /// [`guard`](Self::guard) for an operation on the key of `hash`: its index
    /// bucket is prefetched first, where this handle last saw the index
    /// ([`IndexHint`]).
    #[inline]
    fn guard_for(&self, hash: u64) -> Result<Guard<'_>, ValError> {
        let pool = self.pool();
        self.1.prefetch(pool, hash);
        Guard::lock_noting(pool, self.obj()?, Some(&self.1))
    }

    /// Locks the table for a multi-step transaction: other processes' operations on
    /// it wait until the guard drops. If the holder dies, the next locker repairs the
    /// table and goes on.
    ///
    /// # Errors
    /// A corrupt table or a lock timeout.
    ///
    /// # Examples
    /// ```
    /// # use shmval::{Pool, PoolOptions, Val};
    /// # let pool = Pool::create_with(&format!("doc-lock-{}", std::process::id()), 1 << 20, &PoolOptions::new().remove_on_drop(true))?;
    /// let t = pool.new_tab()?;
    /// {
    ///     let tx = t.lock()?;
    ///     let n = tx.get("n")?.map_or(Ok(Val::I64(0)), |v| v.to_val())?;
    ///     tx.insert("n", if let Val::I64(n) = n { n + 1 } else { 1 })?;
    /// }
    /// assert_eq!(t.get("n")?.unwrap().to_string(), "1");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn lock(&self) -> Result<TabLock<'_>, ValError> {
        Ok(TabLock { g: self.guard()? })
    }

    /// Number of entries.
    ///
    /// # Errors
    /// A corrupt table or a lock timeout.
    pub fn len(&self) -> Result<usize, ValError> {
        if let Some(n) = self
            .obj()
            .ok()
            .and_then(|o| Guard::peek_len(self.pool(), o))
        {
            return Ok(n as usize);
        }
        self.lock()?.len()
    }

    /// Whether the table is empty.
    ///
    /// # Errors
    /// As [`len`](Self::len).
    pub fn is_empty(&self) -> Result<bool, ValError> {
        Ok(self.len()? == 0)
    }

    /// Inserts `key → value` (heap values are copied in, shared handles referenced),
    /// returning the previous value of an equal key. As in Python, an existing key
    /// keeps its original form (`1` stays `1` when `1.0` is inserted).
    ///
    /// # Errors
    /// [`ValError::Unhashable`], [`ValError::Alloc`] (the table is unchanged), ...
    ///
    /// # Examples
    /// ```
    /// # use shmval::{tab, Pool, PoolOptions};
    /// # let pool = Pool::create_with(&format!("doc-insert-{}", std::process::id()), 1 << 20, &PoolOptions::new().remove_on_drop(true))?;
    /// let root = pool.root()?;
    /// let heap = tab! { "a" => 1 };
    /// root.insert("copy", heap.clone())?;        // a heap value: copied into the pool
    /// let shared = pool.share(&heap)?;
    /// root.insert("ref", &shared)?;              // a shared handle: stored by reference
    /// assert_eq!(root.get("ref")?.unwrap().offset(), shared.offset(), "the same object");
    /// assert_ne!(root.get("copy")?.unwrap().offset(), shared.offset());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn insert(
        &self,
        key: impl Into<Arg>,
        value: impl Into<Arg>,
    ) -> Result<Option<ShmVal>, ValError> {
        let (key, value) = (key.into(), value.into());
        if let Some((kv, kr, vr)) = immediates(&key, &value) {
            let hash = key_hash(kv);
            let r = self
                .guard_for(hash)
                .and_then(|g| insert_immediates(&g, hash, kr, vr, kv));
            key.discard();
            value.discard();
            return r;
        }
        // Copy heap values in before taking the lock (allocation outside the lock).
        let (key, kv, v) = prepare(key, value, self.pool())?;
        let hash = key_hash(&kv);
        insert_locked(&self.guard_for(hash)?, key, kv, hash, v)
    }

    /// The value of `key`, if present.
    ///
    /// # Errors
    /// [`ValError::Unhashable`], a corrupt table, a lock timeout.
    pub fn get(&self, key: impl Into<Arg>) -> Result<Option<ShmVal>, ValError> {
        let kv = key.into().into_key_val()?;
        let hash = key_hash(&kv);
        let r = match self.peek(hash, &kv) {
            Some(None) => Ok(None),
            // An immediate needs no reference: no lock either.
            Some(Some(v)) if !v.is_object() => Ok(Some(ShmVal::from_owned(self.pool(), v))),
            _ => self.guard_for(hash).and_then(|g| get_locked(&g, hash, &kv)),
        };
        discard(kv);
        r
    }

    /// The value of `key` copied out to the heap (no handle is made: the cheapest read).
    ///
    /// # Errors
    /// As [`get`](Self::get), or a corrupt value.
    pub fn get_val(&self, key: impl Into<Arg>) -> Result<Option<Val>, ValError> {
        let kv = key.into().into_key_val()?;
        let hash = key_hash(&kv);
        match self.peek(hash, &kv) {
            Some(None) => {
                discard(kv);
                return Ok(None);
            }
            Some(Some(v)) if !v.is_object() => {
                discard(kv);
                return super::convert::immediate_val(v).map(Some);
            }
            _ => {}
        }
        let g = self.guard_for(hash)?;
        let pool = g.pool;
        let found = g.find(hash, &kv);
        discard(kv);
        let Some(found) = found? else {
            return Ok(None);
        };
        let v = pool.read(&found.entry.value);
        if !v.is_object() {
            // An immediate: read straight from its slot, no conversion machinery.
            return super::convert::immediate_val(v).map(Some);
        }
        // An object: keep it alive past the lock, copy it out, let it go.
        pool.retain(v)?;
        drop(g);
        let out = pool.to_val_raw(v, 0);
        pool.release(v);
        out.map(Some)
    }

    /// Whether `key` is present.
    ///
    /// # Errors
    /// As [`get`](Self::get).
    pub fn contains_key(&self, key: impl Into<Arg>) -> Result<bool, ValError> {
        let kv = key.into().into_key_val()?;
        let hash = key_hash(&kv);
        let r = match self.peek(hash, &kv) {
            Some(found) => Ok(found.is_some()),
            None => self
                .guard_for(hash)
                .and_then(|g| Ok(g.find(hash, &kv)?.is_some())),
        };
        discard(kv);
        r
    }

    /// Removes `key`, returning its value.
    ///
    /// # Errors
    /// As [`get`](Self::get).
    pub fn remove(&self, key: impl Into<Arg>) -> Result<Option<ShmVal>, ValError> {
        let kv = key.into().into_key_val()?;
        let hash = key_hash(&kv);
        remove_locked(&self.guard_for(hash)?, hash, &kv)
    }

    /// A snapshot of the entries, in insertion order.
    ///
    /// # Errors
    /// A corrupt table or a lock timeout.
    pub fn entries(&self) -> Result<Vec<(ShmVal, ShmVal)>, ValError> {
        let pool = self.pool();
        Ok(pool
            .tab_snapshot(self.obj()?)?
            .into_iter()
            .map(|(k, v)| (ShmVal::from_owned(pool, k), ShmVal::from_owned(pool, v)))
            .collect())
    }

    /// A snapshot of the keys, in insertion order.
    ///
    /// # Errors
    /// As [`entries`](Self::entries).
    pub fn keys(&self) -> Result<Vec<ShmVal>, ValError> {
        Ok(self.entries()?.into_iter().map(|(k, _)| k).collect())
    }

    /// Removes and returns the last inserted entry (Python's `dict.popitem()`);
    /// `None` when the table is empty.
    ///
    /// # Errors
    /// A corrupt table or a lock timeout.
    pub fn popitem(&self) -> Result<Option<(ShmVal, ShmVal)>, ValError> {
        self.lock()?.popitem_end(true)
    }
}

/// A handle on a shared `OrderedDict`: every [`ShmTab`] operation (through `Deref`;
/// an `OrderedDict` is a `dict`), plus the order changes of Python's
/// `collections.OrderedDict`. Made by [`Pool::new_otab`], by sharing a
/// [`Val::OTab`], or from a value with [`ShmVal::as_otab`].
///
/// # Examples
/// ```
/// # use shmval::{Pool, PoolOptions};
/// # let pool = Pool::create_with(&format!("doc-otab-{}", std::process::id()), 1 << 20, &PoolOptions::new().remove_on_drop(true))?;
/// let lru = pool.new_otab()?;
/// for k in ["a", "b", "c"] {
///     lru.insert(k, 0)?;
/// }
/// lru.move_to_end("a", true)?; // "a" was used: now the most recent
/// let (oldest, _) = lru.popitem(false)?.unwrap();
/// assert_eq!(oldest.to_string(), "'b'");
/// assert_eq!(lru.to_string(), "OrderedDict([('c', 0), ('a', 0)])");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct ShmOTab(pub(super) ShmTab);

impl std::ops::Deref for ShmOTab {
    type Target = ShmTab;
    fn deref(&self) -> &ShmTab {
        &self.0
    }
}

impl fmt::Display for ShmOTab {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl fmt::Debug for ShmOTab {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ShmOTab({self})")
    }
}

impl ShmOTab {
    /// The table as a `dict` handle.
    pub fn as_tab(&self) -> &ShmTab {
        &self.0
    }

    /// Moves `key`'s entry to the end (`last`) or the front; `false` if the key is
    /// absent (Python raises `KeyError`). To the end is O(1); to the front copies the
    /// entries (O(n)).
    ///
    /// # Errors
    /// [`ValError::Unhashable`], [`ValError::Alloc`] (the table is unchanged), a
    /// corrupt table, a lock timeout.
    pub fn move_to_end(&self, key: impl Into<Arg>, last: bool) -> Result<bool, ValError> {
        self.lock()?.move_to_end(key, last)
    }

    /// Removes and returns the last (`last`) or the first entry; `None` when empty.
    ///
    /// # Errors
    /// A corrupt table or a lock timeout.
    pub fn popitem(&self, last: bool) -> Result<Option<(ShmVal, ShmVal)>, ValError> {
        self.lock()?.popitem_end(last)
    }
}

/// A locked table (see [`ShmTab::lock`]): its operations run without re-locking.
pub struct TabLock<'t> {
    g: Guard<'t>,
}

impl TabLock<'_> {
    /// Number of entries.
    ///
    /// # Errors
    /// Never today; kept for symmetry with the unlocked calls.
    pub fn len(&self) -> Result<usize, ValError> {
        Ok(self.g.head.len.load(Ordering::Relaxed) as usize)
    }

    /// Whether the table is empty.
    ///
    /// # Errors
    /// As [`len`](Self::len).
    pub fn is_empty(&self) -> Result<bool, ValError> {
        Ok(self.len()? == 0)
    }

    /// See [`ShmTab::get`].
    ///
    /// # Errors
    /// As [`ShmTab::get`].
    pub fn get(&self, key: impl Into<Arg>) -> Result<Option<ShmVal>, ValError> {
        let kv = key.into().into_key_val()?;
        let r = get_locked(&self.g, key_hash(&kv), &kv);
        discard(kv);
        r
    }

    /// See [`ShmTab::insert`].
    ///
    /// # Errors
    /// As [`ShmTab::insert`].
    pub fn insert(
        &self,
        key: impl Into<Arg>,
        value: impl Into<Arg>,
    ) -> Result<Option<ShmVal>, ValError> {
        let (key, value) = (key.into(), value.into());
        if let Some((kv, kr, vr)) = immediates(&key, &value) {
            let r = insert_immediates(&self.g, key_hash(kv), kr, vr, kv);
            key.discard();
            value.discard();
            return r;
        }
        let (key, kv, v) = prepare(key, value, self.g.pool)?;
        let hash = key_hash(&kv);
        insert_locked(&self.g, key, kv, hash, v)
    }

    /// See [`ShmTab::remove`].
    ///
    /// # Errors
    /// As [`ShmTab::remove`].
    pub fn remove(&self, key: impl Into<Arg>) -> Result<Option<ShmVal>, ValError> {
        let kv = key.into().into_key_val()?;
        remove_locked(&self.g, key_hash(&kv), &kv)
    }

    /// Removes and returns the last (`last`) or the first entry; see
    /// [`ShmOTab::popitem`] (a `dict` may use it too).
    ///
    /// # Errors
    /// As [`ShmOTab::popitem`].
    pub fn popitem_end(&self, last: bool) -> Result<Option<(ShmVal, ShmVal)>, ValError> {
        let pool = self.g.pool;
        Ok(self
            .g
            .pop_end(last)?
            .map(|(k, v)| (ShmVal::from_owned(pool, k), ShmVal::from_owned(pool, v))))
    }

    /// See [`ShmOTab::move_to_end`] (a `dict` may use it too).
    ///
    /// # Errors
    /// As [`ShmOTab::move_to_end`].
    pub fn move_to_end(&self, key: impl Into<Arg>, last: bool) -> Result<bool, ValError> {
        let kv = key.into().into_key_val()?;
        self.g.move_to_end(key_hash(&kv), &kv, last)
    }
}

/// The key's shared handle (if it came as one) and its heap form (for hashing,
/// comparing, and copying in a heap key), and the value as a handle (see
/// [`Arg::into_val_in`]).
fn prepare(
    key: impl Into<Arg>,
    value: impl Into<Arg>,
    pool: &Pool,
) -> Result<(Option<ShmVal>, Val, ShmVal), ValError> {
    let (shared, kv) = match key.into() {
        Arg::Heap(v) => (None, v),
        Arg::Shared(s) => {
            let v = s.to_val()?;
            (Some(s), v)
        }
    };
    if !kv.is_hashable() {
        return Err(ValError::Unhashable(kv.type_name()));
    }
    let v = value.into().into_val_in(pool)?;
    Ok((shared, kv, v))
}

/// A heap key and value that are both immediates (numbers, bools, short strings:
/// nothing to copy in, no reference to count), the key hashable: their slots.
#[inline]
fn immediates<'a>(key: &'a Arg, value: &Arg) -> Option<(&'a Val, Raw, Raw)> {
    let (Arg::Heap(k), Arg::Heap(v)) = (key, value) else {
        return None;
    };
    let kr = super::convert::immediate(k)?;
    let vr = super::convert::immediate(v)?;
    // Every immediate is hashable (numbers, bools, None, short str and bytes).
    Some((k, kr, vr))
}

/// [`insert_locked`] for an immediate key and value: no handle, no ledger, nothing
/// to release on failure.
fn insert_immediates(
    g: &Guard<'_>,
    hash: u64,
    kr: Raw,
    vr: Raw,
    kv: &Val,
) -> Result<Option<ShmVal>, ValError> {
    let pool = g.pool;
    g.begin();
    if let Some(f) = g.find(hash, kv)? {
        let e = f.entry;
        let old = pool.read(&e.value);
        g.overwrite(f.num, &e.value, vr);
        return Ok(Some(ShmVal::from_owned(pool, old)));
    }
    let b = g.room_for_one()?;
    g.append_in(b, hash, kr, vr)?;
    Ok(None)
}

/// Inserts under a held lock; `v` leaves the ledger right before its slot is
/// written (dropped, as any handle, on failure).
fn insert_locked(
    g: &Guard<'_>,
    shared_key: Option<ShmVal>,
    kv: Val,
    hash: u64,
    v: ShmVal,
) -> Result<Option<ShmVal>, ValError> {
    let pool = g.pool;
    g.begin();
    if let Some(f) = g.find(hash, &kv)? {
        let e = f.entry;
        let old = pool.read(&e.value);
        g.overwrite(f.num, &e.value, v.into_raw());
        return Ok(Some(ShmVal::from_owned(pool, old)));
    }
    let key = match shared_key {
        Some(s) => Arg::Shared(s),
        None => Arg::Heap(kv),
    };
    let k = key.into_val_in(pool)?;
    // Room first (a growth copies the table): then both leave the ledger and land.
    let b = g.room_for_one()?;
    let (kr, vr) = (k.into_raw(), v.into_raw());
    if let Err(e) = g.append_in(b, hash, kr, vr) {
        pool.release_all(&[kr, vr]);
        return Err(e);
    }
    Ok(None)
}

fn get_locked(g: &Guard<'_>, hash: u64, kv: &Val) -> Result<Option<ShmVal>, ValError> {
    let pool = g.pool;
    match g.find(hash, kv)? {
        Some(f) => {
            let v = pool.read(&f.entry.value);
            pool.retain(v)?;
            Ok(Some(ShmVal::from_owned(pool, v)))
        }
        None => Ok(None),
    }
}

fn remove_locked(g: &Guard<'_>, hash: u64, kv: &Val) -> Result<Option<ShmVal>, ValError> {
    let pool = g.pool;
    g.begin();
    let Some(found) = g.find(hash, kv)? else {
        return Ok(None);
    };
    let (k, v) = g.remove_at(found)?;
    pool.release(k);
    Ok(Some(ShmVal::from_owned(pool, v)))
}

impl From<ShmTab> for ShmVal {
    fn from(t: ShmTab) -> ShmVal {
        t.0
    }
}

impl From<ShmOTab> for ShmVal {
    fn from(t: ShmOTab) -> ShmVal {
        t.0 .0
    }
}

impl From<ShmOTab> for Arg {
    fn from(v: ShmOTab) -> Arg {
        Arg::Shared(v.0 .0)
    }
}
impl From<&ShmOTab> for Arg {
    fn from(v: &ShmOTab) -> Arg {
        Arg::Shared(v.0 .0.clone())
    }
}

impl From<super::ShmList> for ShmVal {
    fn from(l: super::ShmList) -> ShmVal {
        l.0
    }
}
