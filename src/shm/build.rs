//! Building a shared dict in place: [`Pool::build_tab`] and the [`shm_tab!`] macro
//! write keys and values straight into a table nobody else can see yet (no heap
//! map first, no lock), then hand it out whole.
//!
//! Crash contract: the table's reference is in this process's ledger from the
//! moment it exists, and each entry is whole before the table counts it, so a death
//! while building leaks nothing the ledger's replay does not give back (a value
//! made and not yet appended: at most one, freed by the next recovery alone).
//!
//! [`shm_tab!`]: crate::shm_tab

// The sealed traits' methods name the crate's raw slot type: they cannot be named
// or called outside the crate (the traits live in a private module), which is the
// point; the lint cannot see that.
#![allow(private_interfaces)]

use super::handle::ShmVal;
use super::hash::{int_hash, key_hash, short_str_hash, str_hash};
use super::layout::{tag, ArrHead, ARR_ELEMS, HDR};
use super::mem::Raw;
use super::tab::{ShmOTab, ShmTab};
use super::{Elem, ShmList, ValError};
use crate::val::Val;
use crate::Pool;
use std::sync::atomic::Ordering::Relaxed;

/// A dict being built in place ([`Pool::build_tab`]): private to this thread
/// until [`finish`](TabBuilder::finish); dropped unfinished, it is freed.
pub struct TabBuilder<'p> {
    /// The table (in this process's ledger until finished).
    tab: super::dict::PrivateTab<'p>,
    /// The hashes of the first [`SEEN`] entries put (a repeated key is looked for
    /// only when its hash is among them), and how many were put.
    seen: [u32; SEEN],
    n: usize,
}

/// Entries whose hashes a builder keeps (past them the table's index answers).
const SEEN: usize = 8;

impl Pool {
    /// Starts a new shared `dict` with room for `cap` entries (it grows past that),
    /// to fill in place with [`TabBuilder::set`]: the cheapest way to make a
    /// message. See also [`shm_tab!`](crate::shm_tab).
    ///
    /// # Errors
    /// [`ValError::Alloc`].
    ///
    /// # Examples
    /// ```
    /// # use shmval::{Pool, PoolOptions};
    /// # let pool = Pool::create_with(&format!("doc-build-{}", std::process::id()), 1 << 20, &PoolOptions::new().remove_on_drop(true))?;
    /// let data = [1.0f64, 2.0, 3.0];
    /// let mut b = pool.build_tab(3)?;
    /// b.set("seq", 7)?.set("name", "sensor")?.set("data", &data[..])?;
    /// let t = b.finish();
    /// assert_eq!(t.to_string(), "{'seq': 7, 'name': 'sensor', 'data': array('d', [1.0, 2.0, 3.0])}");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[inline]
    pub fn build_tab(&self, cap: usize) -> Result<TabBuilder<'_>, ValError> {
        self.builder(tag::TAB, cap)
    }

    /// As [`Pool::build_tab`], for an `OrderedDict` ([`TabBuilder::finish_ordered`]).
    ///
    /// # Errors
    /// [`ValError::Alloc`].
    pub fn build_otab(&self, cap: usize) -> Result<TabBuilder<'_>, ValError> {
        self.builder(tag::OTAB, cap)
    }

    #[inline]
    fn builder(&self, t: u8, cap: usize) -> Result<TabBuilder<'_>, ValError> {
        let tab = self.new_private_tab(t, cap as u64)?;
        // Counted at once: a death while filling leaves a table whose replay
        // releases what it holds.
        self.ledger_add(tab.obj().off);
        Ok(TabBuilder {
            tab,
            seen: [0; SEEN],
            n: 0,
        })
    }
}

impl<'p> TabBuilder<'p> {
    /// Puts `key → value` (a later value for an equal key replaces the earlier
    /// one, as in Python). Numbers and short strings cost no allocation; a longer
    /// string or a slice of numbers is copied in as one object; a shared handle is
    /// referenced.
    ///
    /// # Errors
    /// [`ValError::Alloc`] (the table is as it was), [`ValError::Unhashable`] for a
    /// container key.
    pub fn set(&mut self, key: impl ToShmKey, value: impl ToShm) -> Result<&mut Self, ValError> {
        let pool = self.tab.pool();
        let (hash, k) = key.key_raw(pool)?;
        let v = match value.to_raw(pool) {
            Ok(v) => v,
            Err(e) => {
                pool.release(k);
                return Err(e);
            }
        };
        self.put_raw(hash, k, v)?;
        Ok(self)
    }

    /// The finished `dict`, a handle to share, store or send.
    pub fn finish(self) -> ShmTab {
        let (pool, raw) = self.into_raw();
        ShmTab::wrap(ShmVal::from_ledgered(pool, raw))
    }

    /// The finished `OrderedDict` (started with [`Pool::build_otab`]; a builder
    /// started as a `dict` gives `None` and is freed).
    pub fn finish_ordered(self) -> Option<ShmOTab> {
        self.finish().as_val().as_otab()
    }
}

impl<'p> TabBuilder<'p> {
    /// [`TabBuilder::set`] with a key and a value made already (each owning a
    /// reference, which the table takes; released on failure).
    #[inline]
    pub(crate) fn put_raw(&mut self, hash: u64, k: Raw, v: Raw) -> Result<(), ValError> {
        let tab = &mut self.tab;
        // A new key for certain (no hash of the first entries matches): appended;
        // otherwise the table looks (by scan or index) and replaces an equal one.
        // The low half of the hash: a false match only costs a look.
        let h32 = hash as u32;
        let fresh = self.n < SEEN && !self.seen[..self.n].contains(&h32);
        let r = if fresh {
            tab.append(hash, k, v)
        } else {
            tab.put(hash, k, v)
        };
        match r {
            Ok(()) => {
                if fresh {
                    self.seen[self.n] = h32;
                    self.n += 1;
                } else if self.n < SEEN {
                    self.n = SEEN; // not tracked any more: the table looks from now on
                }
                Ok(())
            }
            Err(e) => {
                self.tab.pool().release_all(&[k, v]);
                Err(e)
            }
        }
    }

    /// The finished table as a raw value owning its reference (out of the ledger:
    /// the caller stores it somewhere at once).
    pub(crate) fn finish_raw(self) -> Raw {
        let (pool, raw) = self.into_raw();
        // Out of the ledger; a process that keeps none has no entry to take, and
        // the reference is the caller's either way.
        let _ = pool.ledger_take(raw.payload);
        raw
    }

    /// The table, its reference (counted in the ledger) handed to the caller: the
    /// builder is done (not dropped: its drop frees an unfinished table).
    fn into_raw(self) -> (&'p Pool, Raw) {
        let (pool, o) = (self.tab.pool(), self.tab.obj());
        std::mem::forget(self); // nothing else to drop: references and numbers
        (pool, Raw::new(o.tag, 0, o.off))
    }
}

/// [`ToShm`]'s conversion, for the crate.
pub(crate) fn to_raw<T: ToShm>(v: T, pool: &Pool) -> Result<Raw, ValError> {
    sealed::Put::to_raw(v, pool)
}

impl Drop for TabBuilder<'_> {
    fn drop(&mut self) {
        // Never finished: the table (and what went in) is given back.
        let (pool, o) = (self.tab.pool(), self.tab.obj());
        if pool.ledger_take(o.off) {
            pool.release(Raw::new(o.tag, 0, o.off));
        }
    }
}

mod sealed {
    use super::{Pool, Raw, ValError};
    /// Makes the raw value, owning one reference.
    pub trait Put {
        fn to_raw(self, pool: &Pool) -> Result<Raw, ValError>;
    }
    /// Makes the raw key, owning one reference, with its hash.
    pub trait Key {
        fn key_raw(self, pool: &Pool) -> Result<(u64, Raw), ValError>;
    }
}

/// A Rust value a [`TabBuilder`] can put into a shared table directly: numbers,
/// `bool`, `()` (`None`), strings, slices and vectors of numbers (as numeric
/// arrays), heap [`Val`]s (copied in) and shared handles (referenced).
pub trait ToShm: sealed::Put {}
impl<T: sealed::Put> ToShm for T {}

/// A key a [`TabBuilder`] can use directly: strings and integers (and heap
/// [`Val`]s, checked to be hashable).
pub trait ToShmKey: sealed::Key {}
impl<T: sealed::Key> ToShmKey for T {}

fn imm(t: u8, payload: u64) -> Raw {
    Raw::new(t, 0, payload)
}

macro_rules! put_imm {
    ($($t:ty => $tag:expr, $conv:expr;)*) => {$(
        impl sealed::Put for $t {
            #[inline]
            fn to_raw(self, _: &Pool) -> Result<Raw, ValError> {
                #[allow(clippy::redundant_closure_call)]
                Ok(imm($tag, ($conv)(self)))
            }
        }
    )*};
}
put_imm! {
    i64 => tag::I64, |x: i64| x as u64;
    i32 => tag::I32, |x: i32| i64::from(x) as u64;
    u32 => tag::U32, u64::from;
    u64 => tag::U64, |x: u64| x;
    f64 => tag::F64, f64::to_bits;
    f32 => tag::F32, |x: f32| u64::from(x.to_bits());
    bool => tag::BOOL, u64::from;
}

impl sealed::Put for () {
    fn to_raw(self, _: &Pool) -> Result<Raw, ValError> {
        Ok(Raw::NONE)
    }
}

impl sealed::Put for &str {
    #[inline]
    fn to_raw(self, pool: &Pool) -> Result<Raw, ValError> {
        if self.len() <= 8 {
            return Ok(super::convert::inline(tag::STR_INLINE, self.as_bytes()));
        }
        pool.new_bytes_obj(tag::STR, self.as_bytes(), false)
    }
}
impl sealed::Put for &String {
    fn to_raw(self, pool: &Pool) -> Result<Raw, ValError> {
        self.as_str().to_raw(pool)
    }
}
impl sealed::Put for String {
    fn to_raw(self, pool: &Pool) -> Result<Raw, ValError> {
        self.as_str().to_raw(pool)
    }
}

impl<T: Elem> sealed::Put for &[T] {
    #[inline]
    fn to_raw(self, pool: &Pool) -> Result<Raw, ValError> {
        let size = T::KIND.size();
        debug_assert_eq!(size, std::mem::size_of::<T>());
        let bytes = std::mem::size_of_val(self);
        let o = pool.alloc_obj_zeroed(tag::ARR, ARR_ELEMS + bytes, HDR)?;
        let h = pool.at::<ArrHead>(o.off)?;
        h.kind.store(T::KIND as u64, Relaxed);
        h.len.store(self.len() as u64, Relaxed);
        // SAFETY: `Elem` types are plain numbers (or `repr(C)` pairs of floats, or a
        // one-byte bool): no padding, every byte initialised.
        let b = unsafe { std::slice::from_raw_parts(self.as_ptr().cast::<u8>(), bytes) };
        let raw = imm(tag::ARR, o.off);
        pool.copy_in(o.off + ARR_ELEMS as u64, b)
            .inspect_err(|_| pool.release(raw))?;
        Ok(raw)
    }
}
impl<T: Elem> sealed::Put for &Vec<T> {
    fn to_raw(self, pool: &Pool) -> Result<Raw, ValError> {
        self.as_slice().to_raw(pool)
    }
}
impl<T: Elem> sealed::Put for Vec<T> {
    fn to_raw(self, pool: &Pool) -> Result<Raw, ValError> {
        self.as_slice().to_raw(pool)
    }
}
impl<T: Elem, const N: usize> sealed::Put for &[T; N] {
    fn to_raw(self, pool: &Pool) -> Result<Raw, ValError> {
        self.as_slice().to_raw(pool)
    }
}

impl sealed::Put for &Val {
    fn to_raw(self, pool: &Pool) -> Result<Raw, ValError> {
        pool.share_raw(self, 0)
    }
}
impl sealed::Put for Val {
    fn to_raw(self, pool: &Pool) -> Result<Raw, ValError> {
        pool.share_raw(&self, 0)
    }
}

/// A shared handle: referenced if it lives in this pool (or is an immediate),
/// copied in otherwise.
impl sealed::Put for &ShmVal {
    fn to_raw(self, pool: &Pool) -> Result<Raw, ValError> {
        if !self.fits(pool) {
            return pool.share_raw(&self.to_val()?, 0);
        }
        let r = self.raw();
        pool.retain(r)?;
        Ok(r)
    }
}
impl sealed::Put for ShmVal {
    fn to_raw(self, pool: &Pool) -> Result<Raw, ValError> {
        (&self).to_raw(pool)
    }
}
impl sealed::Put for &ShmTab {
    fn to_raw(self, pool: &Pool) -> Result<Raw, ValError> {
        self.as_val().to_raw(pool)
    }
}
impl sealed::Put for ShmTab {
    fn to_raw(self, pool: &Pool) -> Result<Raw, ValError> {
        self.as_val().to_raw(pool)
    }
}
impl sealed::Put for &ShmList {
    fn to_raw(self, pool: &Pool) -> Result<Raw, ValError> {
        self.as_val().to_raw(pool)
    }
}

impl sealed::Key for &str {
    #[inline]
    fn key_raw(self, pool: &Pool) -> Result<(u64, Raw), ValError> {
        if self.len() <= 8 {
            // The inline string's payload word is what the hash takes, made once.
            let w = super::layout::le_word(self.as_bytes());
            let raw = Raw::new(tag::STR_INLINE, self.len() as u8, w);
            return Ok((short_str_hash(w, self.len()), raw));
        }
        long_str_key(self, pool)
    }
}
/// A key of more than 8 bytes: an object (out of line: short keys are the rule).
#[inline(never)]
fn long_str_key(s: &str, pool: &Pool) -> Result<(u64, Raw), ValError> {
    Ok((
        str_hash(s),
        pool.new_bytes_obj(tag::STR, s.as_bytes(), false)?,
    ))
}

impl sealed::Key for &String {
    fn key_raw(self, pool: &Pool) -> Result<(u64, Raw), ValError> {
        self.as_str().key_raw(pool)
    }
}
impl sealed::Key for String {
    fn key_raw(self, pool: &Pool) -> Result<(u64, Raw), ValError> {
        self.as_str().key_raw(pool)
    }
}
macro_rules! int_key {
    ($($t:ty),*) => {$(
        impl sealed::Key for $t {
            #[inline]
            fn key_raw(self, pool: &Pool) -> Result<(u64, Raw), ValError> {
                Ok((int_hash(i128::from(self)), sealed::Put::to_raw(self, pool)?))
            }
        }
    )*};
}
int_key!(i64, i32, u32, u64);

impl sealed::Key for &Val {
    fn key_raw(self, pool: &Pool) -> Result<(u64, Raw), ValError> {
        if !self.is_hashable() {
            return Err(ValError::Unhashable(self.type_name()));
        }
        Ok((key_hash(self), pool.share_raw(self, 0)?))
    }
}
impl sealed::Key for Val {
    fn key_raw(self, pool: &Pool) -> Result<(u64, Raw), ValError> {
        (&self).key_raw(pool)
    }
}

/// Builds a shared `dict` in `pool` in place: `shm_tab!(pool, {"seq" => i,
/// "data" => &samples[..]})` — keys and values as [`TabBuilder::set`] takes them.
/// Evaluates to `Result<ShmTab, ValError>`.
///
/// # Examples
/// ```
/// # use shmval::{shm_tab, Pool, PoolOptions};
/// # let pool = Pool::create_with(&format!("doc-shmtab-{}", std::process::id()), 1 << 20, &PoolOptions::new().remove_on_drop(true))?;
/// let seq = 41;
/// let t = shm_tab!(pool, {"seq" => seq + 1, "ok" => true, "xs" => vec![1i32, 2]})?;
/// assert_eq!(t.get_as::<i64>("seq")?, Some(42));
/// assert_eq!(t.to_string(), "{'seq': 42, 'ok': True, 'xs': array('i', [1, 2])}");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[macro_export]
macro_rules! shm_tab {
    ($pool:expr, {}) => { $pool.build_tab(0).map(|b| b.finish()) };
    ($pool:expr, { $($k:expr => $v:expr),+ $(,)? }) => {{
        (|| -> ::std::result::Result<$crate::ShmTab, $crate::ValError> {
            let mut b = $pool.build_tab(0 $(+ $crate::shm_tab!(@one $k))+)?;
            $( b.set($k, $v)?; )+
            Ok(b.finish())
        })()
    }};
    (@one $k:expr) => { 1 };
}
