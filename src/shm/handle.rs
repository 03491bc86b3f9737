//! Handles on shared values: each owns one reference.

use super::layout::tag;
use super::mem::Raw;
use super::tab::{ShmOTab, ShmTab};
use super::ValError;
use crate::val::Val;
use crate::Pool;
use std::fmt;
use std::sync::atomic::Ordering;

/// A handle on a value in a pool. Cloning takes a reference, dropping gives it back;
/// the last reference frees the object (and releases what it holds). A handle on an
/// object keeps its pool mapped; an immediate value (a number, a bool, `None`, a
/// `str` or `bytes` of at most 8 bytes) lives in no pool and holds none, so making,
/// cloning and dropping it touch no shared counter at all; numbers and bools convert
/// into one directly.
///
/// # Examples
/// ```
/// use shmval::ShmVal;
/// let v = ShmVal::from(-3i32); // an immediate: no pool needed, may go anywhere
/// assert!(v.pool().is_none() && v.offset().is_none());
/// assert_eq!(v.to_string(), "-3");
/// assert_eq!(ShmVal::from(true).type_name(), "bool");
/// ```
pub struct ShmVal {
    /// `Some` exactly when `raw` is an object (or was, before `into_raw`).
    pool: Option<Pool>,
    raw: Raw,
}

impl ShmVal {
    /// Wraps a raw value whose reference the caller hands over.
    #[inline(always)]
    pub(crate) fn from_owned(pool: &Pool, raw: Raw) -> ShmVal {
        if !raw.is_object() {
            return ShmVal { pool: None, raw };
        }
        pool.ledger_add(raw.payload); // after the reference was taken
        ShmVal {
            pool: Some(pool.clone()),
            raw,
        }
    }

    /// Wraps a raw value whose reference the caller hands over and has counted in
    /// this process's ledger already.
    #[inline]
    pub(crate) fn from_ledgered(pool: &Pool, raw: Raw) -> ShmVal {
        ShmVal {
            pool: raw.is_object().then(|| pool.clone()),
            raw,
        }
    }

    /// Appends the value `raw` (whose reference the caller hands over) to `out`,
    /// *not yet* counted in this process's ledger: a pipe hands values over before
    /// its receive commits (moves `head`), so the caller counts them with
    /// [`ShmVal::ledger_all`] once it has (counting them before would let a death
    /// in between give back references the pipe still holds).
    /// Written field by field: building the handle first and moving it in makes the
    /// compiler reload the raw pair as one 16-byte word from the smaller stores just
    /// made, which the CPU cannot forward (the load waits for the store buffer to
    /// drain: a stall per value when receiving runs).
    #[inline]
    pub(crate) fn push_unledgered(out: &mut Vec<ShmVal>, pool: &Pool, raw: Raw) {
        out.reserve(1);
        let len = out.len();
        let pool = raw.is_object().then(|| pool.clone());
        // SAFETY: `reserve` made room for one more element at `len`; every field is
        // written (padding needs no value) before the length covers it.
        unsafe {
            let dst = out.as_mut_ptr().add(len);
            std::ptr::addr_of_mut!((*dst).pool).write(pool);
            std::ptr::addr_of_mut!((*dst).raw).write(raw);
            out.set_len(len + 1);
        }
    }

    /// Counts the references of `vals` (appended by [`ShmVal::push_unledgered`]) in
    /// this process's ledger, once the receive that took them has committed.
    pub(crate) fn ledger_all(vals: &[ShmVal]) {
        for v in vals {
            if let Some(p) = &v.pool {
                p.ledger_add_raw(v.raw);
            }
        }
    }

    /// The pool of a handle known to be an object (the table, list, string and
    /// array handles are made only from objects, and [`ShmVal::from_owned`] keeps
    /// the pool of every object).
    #[inline]
    pub(crate) fn obj_pool(&self) -> &Pool {
        match &self.pool {
            Some(p) => p,
            None => unreachable!("an object handle without its pool"),
        }
    }

    /// Takes the reference out of the handle (the handle's pool clone is dropped
    /// normally; only the reference changes hands).
    ///
    /// The handle is not moved or copied whole: a handle built just before (one
    /// store per word) and then copied as a 16-byte block is a load the CPU cannot
    /// forward from those stores, which waits for every store before them to
    /// complete — in a pipe send, the stores to the cell, whose line the receiver
    /// holds: one cache-line transfer of stall per value.
    ///
    /// The reference leaves the process's ledger first (see `ledger`): a handle
    /// whose reference is in no ledger of this process (one inherited over `fork`)
    /// takes one, so that the raw value always carries a reference. `Raw::NONE` if
    /// that fails (the object was damaged since).
    #[inline(always)]
    pub(crate) fn into_raw(self) -> Raw {
        if self.pool.is_none() {
            // An immediate: no pool handle to drop, no ledger.
            return Raw::read_fields(&std::mem::ManuallyDrop::new(self).raw);
        }
        self.into_raw_object()
    }

    #[inline(never)]
    fn into_raw_object(self) -> Raw {
        let mut r = Raw::read_fields(&self.raw);
        if let Some(p) = &self.pool {
            if r.is_object() && !p.ledger_take(r.payload) && p.retain(r).is_err() {
                r = Raw::NONE;
            }
        }
        let mut me = std::mem::ManuallyDrop::new(self);
        // SAFETY: `me` is never used or dropped again; its pool handle is dropped
        // here, once, and its reference now belongs to the caller (`r`).
        unsafe { std::ptr::drop_in_place(&mut me.pool) };
        r
    }

    /// Copies the value out to the heap.
    ///
    /// # Errors
    /// [`ValError::Corrupt`] for damaged shared memory, [`ValError::TooDeep`].
    pub fn to_val(&self) -> Result<Val, ValError> {
        match &self.pool {
            Some(p) => p.to_val_raw(self.raw, 0),
            None => super::convert::immediate_val(self.raw),
        }
    }

    /// The Python type name.
    pub fn type_name(&self) -> &'static str {
        super::layout::tag_name(self.raw.tag())
    }

    /// This value as a table handle, if it is a `dict` or `OrderedDict` (an
    /// `OrderedDict` is a `dict`, as in Python).
    pub fn as_tab(&self) -> Option<ShmTab> {
        matches!(self.raw.tag(), tag::TAB | tag::OTAB).then(|| ShmTab::wrap(self.clone()))
    }

    /// This value as an `OrderedDict` handle, if it is one.
    pub fn as_otab(&self) -> Option<ShmOTab> {
        (self.raw.tag() == tag::OTAB).then(|| ShmOTab(ShmTab::wrap(self.clone())))
    }

    /// The pool this value lives in; `None` for an immediate value (a number, a
    /// bool, `None`, a `str` or `bytes` of at most 8 bytes), which lives in no pool
    /// and may be stored in or sent through any.
    ///
    /// # Examples
    /// ```
    /// # use shmval::{Pool, PoolOptions, Val};
    /// # let name = format!("doc-valpool-{}", std::process::id());
    /// let pool = Pool::create_with(&name, 1 << 20, &PoolOptions::new().remove_on_drop(true))?;
    /// assert!(pool.share(&Val::from(7))?.pool().is_none());
    /// let s = pool.share(&Val::from("longer than eight bytes"))?;
    /// assert_eq!(s.pool().map(|p| p.name()), Some(pool.name()));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn pool(&self) -> Option<&Pool> {
        self.pool.as_ref()
    }

    /// Whether this value may go into a container or pipe of `pool` by reference
    /// (an immediate may go anywhere).
    #[inline]
    pub(crate) fn fits(&self, pool: &Pool) -> bool {
        self.pool.as_ref().is_none_or(|p| Pool::same(p, pool))
    }

    /// The raw pair (read field by field: see [`Raw::read_fields`]).
    #[inline]
    pub(crate) fn raw(&self) -> Raw {
        Raw::read_fields(&self.raw)
    }

    pub(crate) fn raw_ref(&self) -> &Raw {
        &self.raw
    }

    /// Before a send: takes the handle's reference out of the process's ledger (a
    /// handle holding none in this process takes one), so that the cell owns it
    /// from the moment it is published. Then [`ShmVal::forget_sent`] once sent, or
    /// [`ShmVal::reledger`] if not.
    ///
    /// # Errors
    /// The object was damaged since the handle was made (no reference to send).
    #[inline]
    pub(crate) fn unledger(&self) -> Result<(), ValError> {
        match &self.pool {
            Some(p) if self.raw.is_object() && !p.ledger_take(self.raw.payload) => {
                p.retain(self.raw)
            }
            _ => Ok(()),
        }
    }

    /// After a failed send: the handle's reference is its own again.
    #[cold]
    pub(crate) fn reledger(&self) {
        if let Some(p) = &self.pool {
            p.ledger_add_raw(self.raw);
        }
    }

    /// Gives up the handle after its reference went elsewhere (into a pipe cell,
    /// after [`ShmVal::unledger`]): drops the pool handle only, as
    /// [`ShmVal::into_raw`] without reading the pair or the ledger.
    #[inline(always)]
    pub(crate) fn forget_sent(self) {
        let me = std::mem::ManuallyDrop::new(self);
        // SAFETY: `me` is never used or dropped again; its pool handle is moved out
        // and dropped here, once.
        drop(unsafe { std::ptr::read(&me.pool) });
    }

    /// The offset of the object in the pool (`None` for immediate values).
    pub fn offset(&self) -> Option<u64> {
        self.raw.is_object().then_some(self.raw.payload)
    }
}

impl Clone for ShmVal {
    /// Takes one more reference. If the object was damaged since this handle was
    /// made, the clone is `None` rather than a handle without a reference.
    fn clone(&self) -> Self {
        let Some(pool) = &self.pool else {
            return ShmVal {
                pool: None,
                raw: self.raw,
            };
        };
        let raw = match pool.retain(self.raw) {
            Ok(()) => {
                pool.ledger_add_raw(self.raw);
                self.raw
            }
            Err(_) => Raw::NONE,
        };
        ShmVal {
            pool: Some(pool.clone()),
            raw,
        }
    }
}

impl Drop for ShmVal {
    #[inline]
    fn drop(&mut self) {
        if let Some(p) = &self.pool {
            if self.raw.is_object() {
                p.drop_handle(self.raw);
            }
        }
    }
}

impl fmt::Display for ShmVal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.to_val() {
            Ok(v) => write!(f, "{v}"),
            Err(e) => write!(f, "<{e}>"),
        }
    }
}

impl fmt::Debug for ShmVal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ShmVal({self})")
    }
}

/// Something that can be put into a shared container: a heap value (copied in) or a
/// shared handle (referenced, not copied).
pub enum Arg {
    /// Copied into the pool.
    Heap(Val),
    /// Stored by reference.
    Shared(ShmVal),
}

impl<T: Into<Val>> From<T> for Arg {
    fn from(v: T) -> Arg {
        Arg::Heap(v.into())
    }
}
impl From<ShmVal> for Arg {
    fn from(v: ShmVal) -> Arg {
        Arg::Shared(v)
    }
}
impl From<&ShmVal> for Arg {
    fn from(v: &ShmVal) -> Arg {
        Arg::Shared(v.clone())
    }
}
impl From<super::ShmList> for Arg {
    fn from(v: super::ShmList) -> Arg {
        Arg::Shared(v.0)
    }
}
impl From<&super::ShmList> for Arg {
    fn from(v: &super::ShmList) -> Arg {
        Arg::Shared(v.0.clone())
    }
}
impl From<ShmTab> for Arg {
    fn from(v: ShmTab) -> Arg {
        Arg::Shared(v.0)
    }
}
impl From<&ShmTab> for Arg {
    fn from(v: &ShmTab) -> Arg {
        Arg::Shared(v.0.clone())
    }
}

/// Drops `v`, skipping `Val`'s drop glue (an out-of-line call) for the values that
/// own no heap memory — the numbers, bools and `None` of hot dict paths — which a
/// `forget` drops exactly.
#[inline]
pub(crate) fn discard(v: Val) {
    match v {
        Val::None
        | Val::Bool(_)
        | Val::I8(_)
        | Val::I16(_)
        | Val::I32(_)
        | Val::I64(_)
        | Val::U8(_)
        | Val::U16(_)
        | Val::U32(_)
        | Val::U64(_)
        | Val::F32(_)
        | Val::F64(_)
        | Val::Complex32(_)
        | Val::Complex64(_) => std::mem::forget(v),
        v => drop(v),
    }
}

impl Arg {
    /// Drops the argument, as [`discard`] drops a value.
    #[inline]
    pub(crate) fn discard(self) {
        match self {
            Arg::Heap(v) => discard(v),
            shared => drop(shared),
        }
    }

    /// The heap form of a key (for hashing and comparing), checked to be hashable.
    #[inline]
    pub(super) fn into_key_val(self) -> Result<Val, ValError> {
        match self {
            // The common keys, settled inline (an int of any width, a str).
            Arg::Heap(
                v @ (Val::I64(_) | Val::I32(_) | Val::U64(_) | Val::U32(_) | Val::Str(_)),
            ) => Ok(v),
            a => a.into_key_val_slow(),
        }
    }

    #[inline(never)]
    fn into_key_val_slow(self) -> Result<Val, ValError> {
        let v = match self {
            Arg::Heap(v) => v,
            Arg::Shared(s) => s.to_val()?,
        };
        if !v.is_hashable() {
            return Err(ValError::Unhashable(v.type_name()));
        }
        Ok(v)
    }

    /// The value as a handle in `pool` (a heap value copied in, counted in this
    /// process's ledger; a handle of another pool copied too): to be turned into a
    /// raw reference ([`ShmVal::into_raw`]) right before it is stored, so that a
    /// death while the store waits for a lock or a growth leaks nothing.
    pub(crate) fn into_val_in(self, pool: &Pool) -> Result<ShmVal, ValError> {
        match self {
            Arg::Heap(v) => pool.share(&v),
            Arg::Shared(s) if s.fits(pool) => Ok(s),
            Arg::Shared(s) => pool.share(&s.to_val()?),
        }
    }
}

impl Pool {
    #[inline]
    pub(crate) fn same(a: &Pool, b: &Pool) -> bool {
        a.base() == b.base()
    }

    /// Copies a heap value into the pool (deep, all or nothing: if the pool fills up
    /// midway, everything built so far is released and the error returned).
    ///
    /// # Errors
    /// [`ValError::Alloc`], [`ValError::TooDeep`].
    ///
    /// # Examples
    /// ```
    /// # use shmval::{tab, Pool, PoolOptions};
    /// # let pool = Pool::create_with(&format!("doc-share-{}", std::process::id()), 1 << 20, &PoolOptions::new().remove_on_drop(true))?;
    /// let v = pool.share(&tab! { "seq" => 1, "data" => vec![1.5f64, 2.5] })?;
    /// assert_eq!(v.to_string(), "{'seq': 1, 'data': array('d', [1.5, 2.5])}");
    /// drop(v);
    /// assert_eq!(pool.stats().in_use, 0);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[inline]
    pub fn share(&self, v: &Val) -> Result<ShmVal, ValError> {
        if let Some(raw) = super::convert::immediate(v) {
            return Ok(ShmVal { pool: None, raw }); // no object, nothing can fail
        }
        // Not an immediate: an object, which keeps its pool (its reference is in the
        // ledger already).
        let raw = self.share_raw_ledgered(v)?;
        Ok(ShmVal {
            pool: Some(self.clone()),
            raw,
        })
    }

    /// A new, empty shared `dict`.
    ///
    /// # Errors
    /// [`ValError::Alloc`].
    pub fn new_tab(&self) -> Result<ShmTab, ValError> {
        self.new_tab_of(tag::TAB)
    }

    /// A new, empty shared `OrderedDict`.
    ///
    /// # Errors
    /// [`ValError::Alloc`].
    pub fn new_otab(&self) -> Result<ShmOTab, ValError> {
        self.new_tab_of(tag::OTAB).map(ShmOTab)
    }

    fn new_tab_of(&self, t: u8) -> Result<ShmTab, ValError> {
        let o = self.new_tab_obj(t, 0)?;
        Ok(ShmTab::wrap(ShmVal::from_owned(
            self,
            Raw::new(t, 0, o.off),
        )))
    }

    /// The root table: named values every attached process can find. Created on
    /// first use (racing creators settle by CAS); it lives as long as the pool.
    ///
    /// # Errors
    /// [`ValError::Alloc`] on first use in a full pool; a corrupt root.
    pub fn root(&self) -> Result<ShmTab, ValError> {
        self.word_tab(0)
    }

    /// The dict named by user word `i`, created on first use (racing creators
    /// settle by CAS); the word owns one reference for the pool's lifetime.
    pub(crate) fn word_tab(&self, i: usize) -> Result<ShmTab, ValError> {
        let word = self.user_word(i);
        let mut off = word.load(Ordering::Acquire);
        if off == 0 {
            let fresh = self.new_tab()?;
            let new = fresh.0.raw.payload;
            match word.compare_exchange(0, new, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => {
                    fresh.0.into_raw(); // the root word owns this reference now
                    off = new;
                }
                Err(cur) => off = cur, // another process won; `fresh` is released
            }
        }
        self.tab_of_word(i, off)
    }

    /// The table named by user word `i`, if one was made (a lookup that creates
    /// nothing: opening a pipe must not allocate in a pool it only reads).
    pub(crate) fn word_tab_if_any(&self, i: usize) -> Result<Option<ShmTab>, ValError> {
        match self.user_word(i).load(Ordering::Acquire) {
            0 => Ok(None),
            off => self.tab_of_word(i, off).map(Some),
        }
    }

    /// A handle on the table at `off`, which user word `i` names.
    fn tab_of_word(&self, i: usize, off: u64) -> Result<ShmTab, ValError> {
        let o = self.obj(off)?;
        if o.tag != tag::TAB {
            return Err(super::mem::corrupt(format!(
                "user word {i} does not name a dict"
            )));
        }
        let raw = Raw::new(tag::TAB, 0, off);
        self.retain(raw)?;
        Ok(ShmTab::wrap(ShmVal::from_owned(self, raw)))
    }
}

// Numbers and bools are immediate values: `ShmVal::from(7u64)` belongs to no pool.
macro_rules! immediate_from {
    ($($t:ty => $tag:ident, $bits:expr;)*) => {$(
        impl From<$t> for ShmVal {
            #[inline]
            fn from(x: $t) -> ShmVal {
                let bits: fn($t) -> u64 = $bits;
                ShmVal {
                    pool: None,
                    raw: Raw::new(tag::$tag, 0, bits(x)),
                }
            }
        }
    )*};
}
immediate_from! {
    bool => BOOL, |x| x as u64;
    i8 => I8, |x| x as i64 as u64;
    i16 => I16, |x| x as i64 as u64;
    i32 => I32, |x| x as i64 as u64;
    i64 => I64, |x| x as u64;
    u8 => U8, |x| x as u64;
    u16 => U16, |x| x as u64;
    u32 => U32, |x| x as u64;
    u64 => U64, |x| x;
    f32 => F32, |x| x.to_bits() as u64;
    f64 => F64, |x| x.to_bits();
}
