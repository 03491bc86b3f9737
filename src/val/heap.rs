//! `Val`: a dynamic value on the ordinary heap, built without any pool.

use indexmap::IndexMap;
use num_bigint::BigInt;

/// A complex number (`re + im·j`), stored as two floats.
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize, serde::Deserialize)]
#[repr(C)]
pub struct Complex<T> {
    /// Real part.
    pub re: T,
    /// Imaginary part.
    pub im: T,
}

impl<T> Complex<T> {
    /// `re + im·j`.
    pub fn new(re: T, im: T) -> Self {
        Complex { re, im }
    }
}

/// A contiguous, typed numeric array: the bulk-data case.
#[derive(Debug, Clone, PartialEq)]
#[allow(missing_docs)] // one variant per element type, named after it
pub enum Arr {
    Bool(Vec<bool>),
    I8(Vec<i8>),
    I16(Vec<i16>),
    I32(Vec<i32>),
    I64(Vec<i64>),
    U8(Vec<u8>),
    U16(Vec<u16>),
    U32(Vec<u32>),
    U64(Vec<u64>),
    F32(Vec<f32>),
    F64(Vec<f64>),
    C32(Vec<Complex<f32>>),
    C64(Vec<Complex<f64>>),
}

/// Apply `$body` to the vector inside any [`Arr`] variant.
macro_rules! with_arr {
    ($arr:expr, $v:ident => $body:expr) => {
        match $arr {
            $crate::val::Arr::Bool($v) => $body,
            $crate::val::Arr::I8($v) => $body,
            $crate::val::Arr::I16($v) => $body,
            $crate::val::Arr::I32($v) => $body,
            $crate::val::Arr::I64($v) => $body,
            $crate::val::Arr::U8($v) => $body,
            $crate::val::Arr::U16($v) => $body,
            $crate::val::Arr::U32($v) => $body,
            $crate::val::Arr::U64($v) => $body,
            $crate::val::Arr::F32($v) => $body,
            $crate::val::Arr::F64($v) => $body,
            $crate::val::Arr::C32($v) => $body,
            $crate::val::Arr::C64($v) => $body,
        }
    };
}
pub(crate) use with_arr;

impl Arr {
    /// The elements' bytes as they lie in memory (little-endian: Linux on x86 or
    /// little-endian ARM; bools one byte of 0 or 1).
    pub fn as_bytes(&self) -> &[u8] {
        with_arr!(self, v => {
            let bytes = std::mem::size_of_val(v.as_slice());
            // SAFETY: every element type is a plain number (or `Complex`, `repr(C)`
            // of two floats; `bool`, one byte of 0/1): no padding, any reading as
            // bytes is valid.
            unsafe { std::slice::from_raw_parts(v.as_ptr().cast::<u8>(), bytes) }
        })
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        with_arr!(self, v => v.len())
    }

    /// Whether there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Element `i` as a scalar value.
    pub fn get(&self, i: usize) -> Option<Val> {
        Some(match self {
            Arr::Bool(v) => Val::Bool(*v.get(i)?),
            Arr::I8(v) => Val::I8(*v.get(i)?),
            Arr::I16(v) => Val::I16(*v.get(i)?),
            Arr::I32(v) => Val::I32(*v.get(i)?),
            Arr::I64(v) => Val::I64(*v.get(i)?),
            Arr::U8(v) => Val::U8(*v.get(i)?),
            Arr::U16(v) => Val::U16(*v.get(i)?),
            Arr::U32(v) => Val::U32(*v.get(i)?),
            Arr::U64(v) => Val::U64(*v.get(i)?),
            Arr::F32(v) => Val::F32(*v.get(i)?),
            Arr::F64(v) => Val::F64(*v.get(i)?),
            Arr::C32(v) => Val::Complex32(*v.get(i)?),
            Arr::C64(v) => Val::Complex64(*v.get(i)?),
        })
    }

    /// The element kind.
    pub fn kind(&self) -> ArrKind {
        match self {
            Arr::Bool(_) => ArrKind::Bool,
            Arr::I8(_) => ArrKind::I8,
            Arr::I16(_) => ArrKind::I16,
            Arr::I32(_) => ArrKind::I32,
            Arr::I64(_) => ArrKind::I64,
            Arr::U8(_) => ArrKind::U8,
            Arr::U16(_) => ArrKind::U16,
            Arr::U32(_) => ArrKind::U32,
            Arr::U64(_) => ArrKind::U64,
            Arr::F32(_) => ArrKind::F32,
            Arr::F64(_) => ArrKind::F64,
            Arr::C32(_) => ArrKind::C32,
            Arr::C64(_) => ArrKind::C64,
        }
    }
}

/// A numeric array of 0 or 2 and more dimensions (one dimension is an [`Arr`]):
/// the elements in C (row-major) order, and the shape.
///
/// ```
/// use shmval::{Arr, NdArr, Val};
/// let m = NdArr::new(vec![2, 3], Arr::F64(vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]))?;
/// assert_eq!((m.shape(), m.ndim(), m.data().len()), (&[2, 3][..], 2, 6));
/// assert!(NdArr::new(vec![4, 4], Arr::F64(vec![0.0; 15])).is_err());
/// // One dimension is a plain array.
/// let v = Val::from(NdArr::new(vec![3], Arr::I64(vec![1, 2, 3]))?);
/// assert_eq!(v, Val::Arr(Arr::I64(vec![1, 2, 3])));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct NdArr {
    shape: Vec<usize>,
    data: Arr,
}

/// Most dimensions an array may have (NumPy's limit).
pub const MAX_NDIM: usize = 64;

/// Why an [`NdArr`] could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("shape {shape:?} does not hold {len} elements (or has more than 64 dimensions)")]
pub struct ShapeError {
    /// The shape given.
    pub shape: Vec<usize>,
    /// The elements given.
    pub len: usize,
}

impl NdArr {
    /// The array of `shape` over `data` (C order).
    ///
    /// # Errors
    /// [`ShapeError`] when the shape's product is not `data`'s length, or it has
    /// more than [`MAX_NDIM`] dimensions.
    pub fn new(shape: Vec<usize>, data: Arr) -> Result<NdArr, ShapeError> {
        let n = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
        if n != Some(data.len()) || shape.len() > MAX_NDIM {
            return Err(ShapeError {
                shape,
                len: data.len(),
            });
        }
        Ok(NdArr { shape, data })
    }
    /// The shape.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }
    /// Number of dimensions.
    pub fn ndim(&self) -> usize {
        self.shape.len()
    }
    /// The elements, in C order.
    pub fn data(&self) -> &Arr {
        &self.data
    }
    /// The elements and the shape.
    pub fn into_parts(self) -> (Vec<usize>, Arr) {
        (self.shape, self.data)
    }
}

impl From<NdArr> for Val {
    /// [`Val::NdArr`], or [`Val::Arr`] for one dimension.
    fn from(a: NdArr) -> Val {
        if a.shape.len() == 1 {
            Val::Arr(a.data)
        } else {
            Val::NdArr(a)
        }
    }
}

/// Element type of an [`Arr`]; the discriminant is what shared memory stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
#[allow(missing_docs)]
pub enum ArrKind {
    Bool = 1,
    I8,
    I16,
    I32,
    I64,
    U8,
    U16,
    U32,
    U64,
    F32,
    F64,
    C32,
    C64,
}

impl ArrKind {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            ArrKind::Bool | ArrKind::I8 | ArrKind::U8 => 1,
            ArrKind::I16 | ArrKind::U16 => 2,
            ArrKind::I32 | ArrKind::U32 | ArrKind::F32 => 4,
            ArrKind::I64 | ArrKind::U64 | ArrKind::F64 | ArrKind::C32 => 8,
            ArrKind::C64 => 16,
        }
    }

    /// The Python `array`/NumPy type code.
    pub fn typecode(self) -> char {
        match self {
            ArrKind::Bool => '?',
            ArrKind::I8 => 'b',
            ArrKind::U8 => 'B',
            ArrKind::I16 => 'h',
            ArrKind::U16 => 'H',
            ArrKind::I32 => 'i',
            ArrKind::U32 => 'I',
            ArrKind::I64 => 'q',
            ArrKind::U64 => 'Q',
            ArrKind::F32 => 'f',
            ArrKind::F64 => 'd',
            ArrKind::C32 => 'F',
            ArrKind::C64 => 'D',
        }
    }

    /// The kind stored as `b`, if any.
    pub fn from_u8(b: u8) -> Option<ArrKind> {
        use ArrKind::*;
        [
            Bool, I8, I16, I32, I64, U8, U16, U32, U64, F32, F64, C32, C64,
        ]
        .get((b as usize).checked_sub(1)?)
        .copied()
    }
}

/// A hash map with Python `dict` semantics for keys (see [`Val`]'s `PartialEq`),
/// iterating in insertion order.
pub type Map = IndexMap<Val, Val>;

/// A dynamic value: what a Python program would hold.
///
/// Equality and hashing follow Python: `1`, `1.0`, `True` and `1+0j` are equal and
/// are the same key; `"1"` is not; NaN is never equal to anything (a NaN key can be
/// inserted but never found again, as with distinct NaN objects in Python). Only
/// hashable values (scalars, strings, bytes, tuples of hashables) may be keys.
///
/// ```
/// use shmval::{tab, Val};
/// let mut t = tab! { "a" => 1, "b" => vec![1.5f64, 2.0] };
/// assert_eq!(t.to_string(), "{'a': 1, 'b': array('d', [1.5, 2.0])}");
/// // Python's key equality: 1, 1.0 and True are one key.
/// t.insert(1, "int").unwrap();
/// t.insert(1.0, "float").unwrap();
/// t.insert(true, "bool").unwrap();
/// assert_eq!(t.to_string(), "{'a': 1, 'b': array('d', [1.5, 2.0]), 1: 'bool'}");
/// assert!(!Val::List(vec![]).is_hashable());
/// assert_eq!(Val::from(2), Val::F64(2.0));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Default)]
pub enum Val {
    /// Python `None`.
    #[default]
    None,
    /// `bool`.
    Bool(bool),
    /// `int` stored as i8.
    I8(i8),
    /// `int` stored as i16.
    I16(i16),
    /// `int` stored as i32.
    I32(i32),
    /// `int` stored as i64.
    I64(i64),
    /// `int` stored as u8.
    U8(u8),
    /// `int` stored as u16.
    U16(u16),
    /// `int` stored as u32.
    U32(u32),
    /// `int` stored as u64.
    U64(u64),
    /// An arbitrary-precision `int`.
    BigInt(BigInt),
    /// `float` stored as f32.
    F32(f32),
    /// `float`.
    F64(f64),
    /// `complex` stored as two f32.
    Complex32(Complex<f32>),
    /// `complex`.
    Complex64(Complex<f64>),
    /// `str`.
    Str(String),
    /// `bytes`.
    Bytes(Vec<u8>),
    /// A typed numeric array.
    Arr(Arr),
    /// A numeric array with a shape other than one dimension (NumPy's `ndarray`):
    /// its elements in C order and its shape.
    NdArr(NdArr),
    /// `list`.
    List(Vec<Val>),
    /// `tuple`.
    Tup(Vec<Val>),
    /// `dict`.
    Tab(Map),
    /// `collections.OrderedDict` (order matters for equality).
    OTab(Map),
}

/// A key that cannot be hashed (a list, dict, array, or a tuple holding one).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("unhashable key of type {0}")]
pub struct UnhashableKey(pub &'static str);

impl Val {
    /// The Python type name.
    pub fn type_name(&self) -> &'static str {
        match self {
            Val::None => "NoneType",
            Val::Bool(_) => "bool",
            Val::I8(_) | Val::I16(_) | Val::I32(_) | Val::I64(_) => "int",
            Val::U8(_) | Val::U16(_) | Val::U32(_) | Val::U64(_) | Val::BigInt(_) => "int",
            Val::F32(_) | Val::F64(_) => "float",
            Val::Complex32(_) | Val::Complex64(_) => "complex",
            Val::Str(_) => "str",
            Val::Bytes(_) => "bytes",
            Val::Arr(_) => "array",
            Val::NdArr(_) => "ndarray",
            Val::List(_) => "list",
            Val::Tup(_) => "tuple",
            Val::Tab(_) => "dict",
            Val::OTab(_) => "OrderedDict",
        }
    }

    /// Whether this value may be a key.
    pub fn is_hashable(&self) -> bool {
        match self {
            Val::Arr(_) | Val::NdArr(_) | Val::List(_) | Val::Tab(_) | Val::OTab(_) => false,
            Val::Tup(items) => items.iter().all(Val::is_hashable),
            _ => true,
        }
    }

    /// The value as an `i64` if it is an integer (any width), a bool, or an integral
    /// big int in range.
    ///
    /// # Examples
    /// ```
    /// use shmval::Val;
    /// assert_eq!(Val::I32(7).as_i64(), Some(7));
    /// assert_eq!(Val::U64(u64::MAX).as_i64(), None);
    /// assert_eq!(Val::F64(7.0).as_i64(), None);
    /// ```
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Val::Bool(b) => Some(*b as i64),
            Val::I8(x) => Some(*x as i64),
            Val::I16(x) => Some(*x as i64),
            Val::I32(x) => Some(*x as i64),
            Val::I64(x) => Some(*x),
            Val::U8(x) => Some(*x as i64),
            Val::U16(x) => Some(*x as i64),
            Val::U32(x) => Some(*x as i64),
            Val::U64(x) => i64::try_from(*x).ok(),
            Val::BigInt(b) => i64::try_from(b).ok(),
            _ => None,
        }
    }

    /// The value as an `f64` if it is a real number.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Val::F32(x) => Some(*x as f64),
            Val::F64(x) => Some(*x),
            other => other.as_i64().map(|i| i as f64),
        }
    }

    /// The text of a `str`.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Val::Str(s) => Some(s),
            _ => None,
        }
    }

    /// An empty `dict`.
    pub fn tab() -> Val {
        Val::Tab(Map::new())
    }

    /// Inserts into a `Tab` or `OTab`, returning the previous value of an equal key.
    ///
    /// # Errors
    /// [`UnhashableKey`] for a list/dict/array key.
    ///
    /// # Panics
    /// If `self` is not a `Tab` or `OTab`.
    pub fn insert(
        &mut self,
        key: impl Into<Val>,
        value: impl Into<Val>,
    ) -> Result<Option<Val>, UnhashableKey> {
        let key = key.into();
        if !key.is_hashable() {
            return Err(UnhashableKey(key.type_name()));
        }
        match self {
            Val::Tab(m) | Val::OTab(m) => Ok(m.insert(key, value.into())),
            other => panic!("insert into a {}", other.type_name()),
        }
    }

    /// Looks a key up in a `Tab`/`OTab` (`None` for other values or a missing key).
    pub fn get(&self, key: &Val) -> Option<&Val> {
        match self {
            Val::Tab(m) | Val::OTab(m) => m.get(key),
            _ => None,
        }
    }
}

macro_rules! from_scalar {
    ($($t:ty => $v:ident),*) => {$(
        impl From<$t> for Val {
            fn from(x: $t) -> Val { Val::$v(x) }
        }
    )*};
}
from_scalar!(bool => Bool, i8 => I8, i16 => I16, i32 => I32, i64 => I64, u8 => U8, u16 => U16,
    u32 => U32, u64 => U64, f32 => F32, f64 => F64, String => Str, BigInt => BigInt,
    Complex<f32> => Complex32, Complex<f64> => Complex64, Arr => Arr);

impl From<&str> for Val {
    fn from(s: &str) -> Val {
        Val::Str(s.to_owned())
    }
}
/// A copy: so that a borrowed heap value can be passed where a value is copied into a
/// pool (`root.insert("t", &t)`).
impl From<&Val> for Val {
    fn from(v: &Val) -> Val {
        v.clone()
    }
}
impl From<()> for Val {
    fn from(_: ()) -> Val {
        Val::None
    }
}
impl From<usize> for Val {
    fn from(x: usize) -> Val {
        Val::U64(x as u64)
    }
}
impl From<isize> for Val {
    fn from(x: isize) -> Val {
        Val::I64(x as i64)
    }
}
impl<T: Into<Val>> From<Option<T>> for Val {
    fn from(o: Option<T>) -> Val {
        o.map_or(Val::None, Into::into)
    }
}

macro_rules! from_vec {
    ($($t:ty => $v:ident),*) => {$(
        /// Numeric vectors become typed arrays (the bulk-data case).
        impl From<Vec<$t>> for Val {
            fn from(x: Vec<$t>) -> Val { Val::Arr(Arr::$v(x)) }
        }
    )*};
}
from_vec!(bool => Bool, i8 => I8, i16 => I16, i32 => I32, i64 => I64, u16 => U16, u32 => U32,
    u64 => U64, f32 => F32, f64 => F64, Complex<f32> => C32, Complex<f64> => C64);

/// `Vec<u8>` is `bytes`, as in Python.
impl From<Vec<u8>> for Val {
    fn from(x: Vec<u8>) -> Val {
        Val::Bytes(x)
    }
}
/// A vector of values is a `list`.
impl From<Vec<Val>> for Val {
    fn from(x: Vec<Val>) -> Val {
        Val::List(x)
    }
}
