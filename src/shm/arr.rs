//! Typed numeric arrays in a pool, read and written in place.
//!
//! Elements are accessed through atomics of their width (Relaxed): two processes may
//! read and write the same array at once without a data race, each element is never
//! torn, and no reference to shared bytes is ever formed. A multi-element update is
//! not atomic as a whole; hold a containing table's `lock()` for that.

use super::handle::ShmVal;
use super::layout::{tag, ArrHead, ARR_ELEMS};
use super::mem::{corrupt, Raw};
use super::ValError;
use crate::val::{ArrKind, Complex};
use crate::Pool;
use std::marker::PhantomData;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{
    AtomicI16, AtomicI32, AtomicI64, AtomicI8, AtomicU16, AtomicU32, AtomicU64, AtomicU8,
};

/// An element type of a shared array.
///
/// # Safety
/// `load`/`store` must access exactly `KIND.size()` bytes at a pointer aligned to that
/// size, through atomics only.
pub unsafe trait Elem: Copy + Send + Sync + 'static {
    /// The array kind holding this type.
    const KIND: ArrKind;
    /// Reads one element.
    ///
    /// # Safety
    /// `p` is valid for `KIND.size()` bytes and aligned to that size.
    unsafe fn load(p: *const u8) -> Self;
    /// Writes one element.
    ///
    /// # Safety
    /// As [`load`](Elem::load).
    unsafe fn store(p: *const u8, v: Self);
}

macro_rules! elem {
    ($t:ty, $kind:ident, $atomic:ty, $to:expr, $from:expr) => {
        // SAFETY: one atomic of exactly the element's size and alignment.
        unsafe impl Elem for $t {
            const KIND: ArrKind = ArrKind::$kind;
            unsafe fn load(p: *const u8) -> Self {
                // SAFETY: forwarded to the caller (valid and aligned for the atomic).
                $from(unsafe { (*(p as *const $atomic)).load(Relaxed) })
            }
            unsafe fn store(p: *const u8, v: Self) {
                // SAFETY: forwarded to the caller.
                unsafe { (*(p as *const $atomic)).store($to(v), Relaxed) }
            }
        }
    };
}

elem!(i8, I8, AtomicI8, |v| v, |v| v);
elem!(i16, I16, AtomicI16, |v| v, |v| v);
elem!(i32, I32, AtomicI32, |v| v, |v| v);
elem!(i64, I64, AtomicI64, |v| v, |v| v);
elem!(u8, U8, AtomicU8, |v| v, |v| v);
elem!(u16, U16, AtomicU16, |v| v, |v| v);
elem!(u32, U32, AtomicU32, |v| v, |v| v);
elem!(u64, U64, AtomicU64, |v| v, |v| v);
elem!(f32, F32, AtomicU32, f32::to_bits, f32::from_bits);
elem!(f64, F64, AtomicU64, f64::to_bits, f64::from_bits);
// Any byte other than 0 reads as true: a corrupt byte can never make an invalid bool.
elem!(bool, Bool, AtomicU8, u8::from, |v: u8| v != 0);
elem!(
    Complex<f32>,
    C32,
    AtomicU64,
    |c: Complex<f32>| u64::from(c.re.to_bits()) | u64::from(c.im.to_bits()) << 32,
    |v: u64| Complex::new(f32::from_bits(v as u32), f32::from_bits((v >> 32) as u32))
);

// SAFETY: two 8-byte atomics at p and p + 8 (16 bytes, 16-aligned in every array).
unsafe impl Elem for Complex<f64> {
    const KIND: ArrKind = ArrKind::C64;
    unsafe fn load(p: *const u8) -> Self {
        // SAFETY: forwarded to the caller: 16 valid, aligned bytes.
        unsafe {
            Complex::new(
                f64::from_bits((*(p as *const AtomicU64)).load(Relaxed)),
                f64::from_bits((*(p.add(8) as *const AtomicU64)).load(Relaxed)),
            )
        }
    }
    unsafe fn store(p: *const u8, v: Self) {
        // SAFETY: as above.
        unsafe {
            (*(p as *const AtomicU64)).store(v.re.to_bits(), Relaxed);
            (*(p.add(8) as *const AtomicU64)).store(v.im.to_bits(), Relaxed);
        }
    }
}

/// A handle on a shared numeric array of `T`, read and written in place (every
/// element through an atomic: another process may write it meanwhile).
///
/// ```
/// use shmval::{Pool, PoolOptions};
/// # let name = format!("doc-arr-{}", std::process::id());
/// let pool = Pool::create_with(&name, 4 << 20, &PoolOptions::new().remove_on_drop(true))?;
/// let a = pool.new_arr::<f64>(4)?; // zeros
/// a.set(1, 2.5)?;
/// a.write(2, &[3.0, 4.0])?;
/// assert_eq!(a.to_vec(), vec![0.0, 2.5, 3.0, 4.0]);
/// // Any handle on the same value sees it in place.
/// let again = a.as_val().as_arr::<f64>()?.expect("an array of f64");
/// assert_eq!(again.get(3), Some(4.0));
/// assert!(a.set(4, 1.0).is_err()); // out of range: an error, not a panic
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct ShmArr<T: Elem> {
    val: ShmVal,
    base: *const u8,
    len: usize,
    _t: PhantomData<T>,
}

// SAFETY: the pointer is into a mapping the handle keeps alive (through its pool), and
// every access is atomic.
unsafe impl<T: Elem> Send for ShmArr<T> {}
// SAFETY: as above.
unsafe impl<T: Elem> Sync for ShmArr<T> {}

impl<T: Elem> Clone for ShmArr<T> {
    fn clone(&self) -> Self {
        ShmArr {
            val: self.val.clone(),
            base: self.base,
            len: self.len,
            _t: PhantomData,
        }
    }
}

impl<T: Elem> ShmArr<T> {
    fn from_val(val: ShmVal) -> Result<Option<ShmArr<T>>, ValError> {
        let r = val.raw();
        if r.tag() != tag::ARR {
            return Ok(None);
        }
        let pool = val.obj_pool();
        let o = pool.obj(r.payload)?;
        let h = pool.at::<ArrHead>(o.off)?;
        if ArrKind::from_u8(h.kind.load(Relaxed) as u8) != Some(T::KIND) {
            return Ok(None);
        }
        let len = h.len.load(Relaxed);
        len.checked_mul(T::KIND.size() as u64)
            .filter(|&b| b <= o.size.saturating_sub(ARR_ELEMS as u64))
            .ok_or_else(|| corrupt("array length"))?;
        let base = pool
            .elems_at(o.off + ARR_ELEMS as u64, len, T::KIND.size())?
            .as_ptr()
            .cast_const();
        Ok(Some(ShmArr {
            val,
            base,
            len: len as usize,
            _t: PhantomData,
        }))
    }

    /// Number of elements (fixed at creation).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the array has no elements.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn at(&self, i: usize) -> *const u8 {
        debug_assert!(i < self.len);
        // SAFETY: i < len and the array's bytes were bounds-checked at construction.
        unsafe { self.base.add(i * T::KIND.size()) }
    }

    /// Element `i` (`None` past the end).
    pub fn get(&self, i: usize) -> Option<T> {
        // SAFETY: in bounds, aligned (the data starts 16-aligned), atomic access.
        (i < self.len).then(|| unsafe { T::load(self.at(i)) })
    }

    /// Sets element `i`.
    ///
    /// # Errors
    /// [`ValError::Index`] past the end.
    pub fn set(&self, i: usize, v: T) -> Result<(), ValError> {
        if i >= self.len {
            return Err(ValError::Index {
                index: i,
                len: self.len,
            });
        }
        // SAFETY: as in `get`.
        unsafe { T::store(self.at(i), v) };
        Ok(())
    }

    /// Copies `out.len()` elements starting at `start` out of the array.
    ///
    /// # Errors
    /// [`ValError::Index`] if the range passes the end.
    pub fn read(&self, start: usize, out: &mut [T]) -> Result<(), ValError> {
        let end = start
            .checked_add(out.len())
            .filter(|&e| e <= self.len)
            .ok_or(ValError::Index {
                index: start + out.len(),
                len: self.len,
            })?;
        for (o, i) in out.iter_mut().zip(start..end) {
            // SAFETY: i < len, as in `get`.
            *o = unsafe { T::load(self.at(i)) };
        }
        Ok(())
    }

    /// Copies `src` into the array starting at `start`.
    ///
    /// # Errors
    /// [`ValError::Index`] if the range passes the end.
    pub fn write(&self, start: usize, src: &[T]) -> Result<(), ValError> {
        let end = start
            .checked_add(src.len())
            .filter(|&e| e <= self.len)
            .ok_or(ValError::Index {
                index: start + src.len(),
                len: self.len,
            })?;
        for (v, i) in src.iter().zip(start..end) {
            // SAFETY: i < len, as in `get`.
            unsafe { T::store(self.at(i), *v) };
        }
        Ok(())
    }

    /// All elements, copied out.
    pub fn to_vec(&self) -> Vec<T> {
        (0..self.len).filter_map(|i| self.get(i)).collect()
    }

    /// The array as a plain value handle.
    pub fn as_val(&self) -> &ShmVal {
        &self.val
    }
}

impl ShmVal {
    /// The shape of a numeric array: `[len]` for a flat one, the dimensions of an
    /// N-dimensional one (its elements, in C order, are what [`ShmVal::as_arr`]
    /// reads); `None` for another value.
    ///
    /// # Errors
    /// A corrupt array object.
    pub fn shape(&self) -> Result<Option<Vec<usize>>, ValError> {
        Ok(self.arr_parts()?.map(|p| p.3))
    }

    /// For zero-copy views from foreign code (numpy's array interface): the kind,
    /// length and address of the elements of a numeric array, and its shape (`None`
    /// for another value). The address stays valid while this handle (or a clone)
    /// lives; the elements are shared memory others may write at any time (read and
    /// write them as the atomics they are, or accept torn reads as numpy does).
    ///
    /// # Errors
    /// A corrupt array object.
    #[allow(clippy::type_complexity)]
    pub fn arr_parts(
        &self,
    ) -> Result<Option<(crate::ArrKind, usize, *const u8, Vec<usize>)>, ValError> {
        let r = self.raw();
        if r.tag() != tag::ARR {
            return Ok(None);
        }
        let pool = self.obj_pool();
        let o = pool.obj(r.payload)?;
        let h = pool.at::<ArrHead>(o.off)?;
        let kind =
            ArrKind::from_u8(h.kind.load(Relaxed) as u8).ok_or_else(|| corrupt("array kind"))?;
        let len = h.len.load(Relaxed);
        len.checked_mul(kind.size() as u64)
            .filter(|&b| b <= o.size.saturating_sub(ARR_ELEMS as u64))
            .ok_or_else(|| corrupt("array length"))?;
        let base = pool.elems_at(o.off + ARR_ELEMS as u64, len, kind.size())?;
        let shape = pool
            .arr_shape(o, h.kind.load(Relaxed), len, kind)?
            .unwrap_or_else(|| vec![len as usize]);
        Ok(Some((
            kind,
            len as usize,
            base.as_ptr().cast_const(),
            shape,
        )))
    }

    /// This value as an array of `T`, if it is an array of that element type.
    ///
    /// # Errors
    /// A corrupt array object.
    pub fn as_arr<T: Elem>(&self) -> Result<Option<ShmArr<T>>, ValError> {
        ShmArr::from_val(self.clone())
    }
}

impl Pool {
    /// The dimensions of the array object `o` (kind word `word`, `len` elements of
    /// `kind`) if it has a shape other than one dimension, checked against its
    /// size and length.
    pub(crate) fn arr_shape(
        &self,
        o: super::mem::Obj,
        word: u64,
        len: u64,
        kind: ArrKind,
    ) -> Result<Option<Vec<usize>>, ValError> {
        let ndim = super::layout::arr_ndim(word);
        if word & super::layout::ARR_SHAPED == 0 {
            return Ok(None);
        }
        if ndim == 1 || ndim > crate::MAX_NDIM {
            return Err(corrupt("array dimensions"));
        }
        let at = super::layout::arr_shape_off(len * kind.size() as u64);
        if at + 8 * ndim as u64 > o.size {
            return Err(corrupt("array shape beyond the object"));
        }
        let mut shape = Vec::with_capacity(ndim);
        let mut n = 1u64;
        for i in 0..ndim as u64 {
            let d = self.at::<AtomicU64>(o.off + at + 8 * i)?.load(Relaxed);
            n = n.checked_mul(d).ok_or_else(|| corrupt("array shape"))?;
            shape.push(usize::try_from(d).map_err(|_| corrupt("array shape"))?);
        }
        if n != len {
            return Err(corrupt("array shape does not match its length"));
        }
        Ok(Some(shape))
    }

    /// A new shared array of `len` zeroed elements of `T`.
    ///
    /// # Errors
    /// [`ValError::Alloc`].
    ///
    /// # Examples
    /// ```
    /// # use shmval::{Pool, PoolOptions};
    /// # let pool = Pool::create_with(&format!("doc-arr-{}", std::process::id()), 1 << 20, &PoolOptions::new().remove_on_drop(true))?;
    /// let a = pool.new_arr::<f64>(4)?;
    /// a.write(1, &[1.5, 2.5])?;
    /// assert_eq!(a.to_vec(), vec![0.0, 1.5, 2.5, 0.0]);
    /// assert_eq!(a.as_val().to_string(), "array('d', [0.0, 1.5, 2.5, 0.0])");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn new_arr<T: Elem>(&self, len: usize) -> Result<ShmArr<T>, ValError> {
        let bytes = len.checked_mul(T::KIND.size()).ok_or(ValError::Alloc(
            crate::AllocError::Exhausted {
                size: usize::MAX,
                align: 16,
            },
        ))?;
        let o = self.alloc_obj(tag::ARR, ARR_ELEMS + bytes)?;
        let h = self.at::<ArrHead>(o.off)?;
        h.kind.store(T::KIND as u64, Relaxed);
        h.len.store(len as u64, Relaxed);
        let val = ShmVal::from_owned(self, Raw::new(tag::ARR, 0, o.off));
        Ok(ShmArr::from_val(val)?.expect("just made an array of T"))
    }

    /// A new shared array of zeroed elements of `T` with `shape` (any number of
    /// dimensions up to [`MAX_NDIM`](crate::MAX_NDIM); one is [`Pool::new_arr`]):
    /// the returned view covers its elements in C order; [`ShmVal::shape`] tells
    /// the shape.
    ///
    /// # Errors
    /// [`ValError::Alloc`]; [`ValError::WrongType`] for more than `MAX_NDIM`
    /// dimensions.
    ///
    /// ```
    /// # use shmval::{Pool, PoolOptions};
    /// # let pool = Pool::create_with(&format!("doc-ndarr-{}", std::process::id()), 1 << 20, &PoolOptions::new().remove_on_drop(true))?;
    /// let m = pool.new_arr_shaped::<f32>(&[2, 3])?;
    /// m.write(0, &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0])?;
    /// assert_eq!(m.as_val().shape()?, Some(vec![2, 3]));
    /// assert_eq!(m.as_val().to_string(), "ndarray((2, 3), 'f', [1.0, 2.0, 3.0, 4.0, 5.0, 6.0])");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn new_arr_shaped<T: Elem>(&self, shape: &[usize]) -> Result<ShmArr<T>, ValError> {
        if shape.len() == 1 {
            return self.new_arr(shape[0]);
        }
        let too_big = || {
            ValError::Alloc(crate::AllocError::Exhausted {
                size: usize::MAX,
                align: 16,
            })
        };
        if shape.len() > crate::MAX_NDIM {
            return Err(ValError::WrongType {
                expected: "at most 64 dimensions",
                found: "more",
            });
        }
        let len = shape
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .ok_or_else(too_big)?;
        let bytes = len.checked_mul(T::KIND.size()).ok_or_else(too_big)?;
        let dims = super::layout::arr_shape_off(bytes as u64);
        let o = self.alloc_obj(tag::ARR, dims as usize + 8 * shape.len())?;
        let h = self.at::<ArrHead>(o.off)?;
        h.kind.store(
            super::layout::arr_kind_word(T::KIND as u8, shape.len()),
            Relaxed,
        );
        h.len.store(len as u64, Relaxed);
        for (i, &d) in shape.iter().enumerate() {
            self.at::<AtomicU64>(o.off + dims + 8 * i as u64)?
                .store(d as u64, Relaxed);
        }
        let val = ShmVal::from_owned(self, Raw::new(tag::ARR, 0, o.off));
        Ok(ShmArr::from_val(val)?.expect("just made an array of T"))
    }
}
