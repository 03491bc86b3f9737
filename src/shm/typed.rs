//! Typed reads: a value's number, flag or text without a heap copy
//! ([`ShmVal::as_i64`], [`ShmTab::get_as`], [`ShmTab::get_path`]), and the Rust
//! types a read can produce ([`FromShm`]).

use super::handle::{Arg, ShmVal};
use super::layout::tag;
use super::{ShmArr, ShmList, ShmTab, ValError};
use crate::val::Val;

impl ShmVal {
    /// The value as an `i64`, if it is an integer (or a `bool`) that fits, as
    /// [`Val::as_i64`]; no copy, no lock.
    ///
    /// # Examples
    /// ```
    /// use shmval::ShmVal;
    /// assert_eq!(ShmVal::from(7u8).as_i64(), Some(7));
    /// assert_eq!(ShmVal::from(u64::MAX).as_i64(), None);
    /// assert_eq!(ShmVal::from(1.5).as_i64(), None);
    /// ```
    pub fn as_i64(&self) -> Option<i64> {
        let r = self.raw();
        let p = r.payload;
        match r.tag() {
            tag::BOOL => Some((p != 0) as i64),
            tag::I8 | tag::I16 | tag::I32 | tag::I64 => Some(p as i64),
            tag::U8 | tag::U16 | tag::U32 => Some(p as i64),
            tag::U64 => i64::try_from(p).ok(),
            tag::BIGINT => self.to_val().ok()?.as_i64(),
            _ => None,
        }
    }

    /// The value as an `f64`, if it is a real number (an integer converted), as
    /// [`Val::as_f64`].
    pub fn as_f64(&self) -> Option<f64> {
        let r = self.raw();
        match r.tag() {
            tag::F64 => Some(f64::from_bits(r.payload)),
            tag::F32 => Some(f64::from(f32::from_bits(r.payload as u32))),
            _ => self.as_i64().map(|i| i as f64),
        }
    }

    /// The value as a `bool`, if it is one (Python's `True`/`False` only: not a
    /// truth test).
    pub fn as_bool(&self) -> Option<bool> {
        let r = self.raw();
        (r.tag() == tag::BOOL).then_some(r.payload != 0)
    }

    /// Whether the value is `None`.
    pub fn is_none(&self) -> bool {
        self.raw().tag() == tag::NONE
    }

    /// The value reached by following `path` through nested dicts, each key a
    /// `str` (`None` where a key is missing or a step is not a dict).
    ///
    /// # Errors
    /// A corrupt table or a lock timeout.
    pub fn get_path(&self, path: &[&str]) -> Result<Option<ShmVal>, ValError> {
        let mut cur = self.clone();
        for k in path {
            let Some(t) = cur.as_tab() else {
                return Ok(None);
            };
            match t.get(*k)? {
                Some(v) => cur = v,
                None => return Ok(None),
            }
        }
        Ok(Some(cur))
    }
}

impl ShmTab {
    /// The value of `key` as a `T` (an `i64`, `f64`, `bool`, `String`, `Vec<f64>`, a
    /// handle, ...; see [`FromShm`]); `Ok(None)` when the key is missing.
    ///
    /// # Errors
    /// [`ValError::WrongType`] when the value is not a `T`; a corrupt table, a lock
    /// timeout.
    ///
    /// # Examples
    /// ```
    /// # use shmval::{tab, Pool, PoolOptions};
    /// # let pool = Pool::create_with(&format!("doc-getas-{}", std::process::id()), 1 << 20, &PoolOptions::new().remove_on_drop(true))?;
    /// let t = pool.share(&tab! {"seq" => 7, "name" => "sensor", "data" => vec![1.5f64, 2.5]})?.as_tab().unwrap();
    /// assert_eq!(t.get_as::<i64>("seq")?, Some(7));
    /// assert_eq!(t.get_as::<String>("name")?.as_deref(), Some("sensor"));
    /// assert_eq!(t.get_as::<Vec<f64>>("data")?, Some(vec![1.5, 2.5]));
    /// assert_eq!(t.get_as::<i64>("missing")?, None);
    /// assert!(t.get_as::<bool>("seq").is_err()); // an int is not a bool
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn get_as<T: FromShm>(&self, key: impl Into<Arg>) -> Result<Option<T>, ValError> {
        self.get(key)?.map(T::from_shm).transpose()
    }

    /// The value reached by following `path` from this table through nested dicts.
    ///
    /// # Errors
    /// As [`ShmVal::get_path`].
    ///
    /// # Examples
    /// ```
    /// # use shmval::{tab, Pool, PoolOptions};
    /// # let pool = Pool::create_with(&format!("doc-path-{}", std::process::id()), 1 << 20, &PoolOptions::new().remove_on_drop(true))?;
    /// let t = pool.share(&tab! {"cfg" => tab! {"net" => tab! {"port" => 8080}}})?.as_tab().unwrap();
    /// assert_eq!(t.get_path(&["cfg", "net", "port"])?.and_then(|v| v.as_i64()), Some(8080));
    /// assert!(t.get_path(&["cfg", "disk"])?.is_none());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn get_path(&self, path: &[&str]) -> Result<Option<ShmVal>, ValError> {
        self.as_val().get_path(path)
    }
}

/// A Rust type a shared value can be read as ([`ShmTab::get_as`]).
pub trait FromShm: Sized {
    /// Reads `v` as `Self`.
    ///
    /// # Errors
    /// [`ValError::WrongType`] when `v` is not one; a corrupt value.
    fn from_shm(v: ShmVal) -> Result<Self, ValError>;
}

fn wrong(expected: &'static str, v: &ShmVal) -> ValError {
    ValError::WrongType {
        expected,
        found: v.type_name(),
    }
}

impl FromShm for ShmVal {
    fn from_shm(v: ShmVal) -> Result<Self, ValError> {
        Ok(v)
    }
}

impl FromShm for Val {
    fn from_shm(v: ShmVal) -> Result<Self, ValError> {
        v.to_val()
    }
}

impl FromShm for i64 {
    fn from_shm(v: ShmVal) -> Result<Self, ValError> {
        match v.raw().tag() {
            tag::BOOL => Err(wrong("int", &v)),
            _ => v.as_i64().ok_or_else(|| wrong("int", &v)),
        }
    }
}

macro_rules! narrow_int {
    ($($t:ty),*) => {$(
        impl FromShm for $t {
            fn from_shm(v: ShmVal) -> Result<Self, ValError> {
                let wide = match v.raw().tag() {
                    tag::U64 => u64::try_from(v.raw().payload).ok().and_then(|x| <$t>::try_from(x).ok()),
                    _ => i64::from_shm(ShmVal::clone(&v)).ok().and_then(|x| <$t>::try_from(x).ok()),
                };
                wide.ok_or_else(|| wrong(stringify!($t), &v))
            }
        }
    )*};
}
narrow_int!(i32, u32, u64, usize);

impl FromShm for f64 {
    fn from_shm(v: ShmVal) -> Result<Self, ValError> {
        match v.raw().tag() {
            tag::BOOL => Err(wrong("float", &v)),
            _ => v.as_f64().ok_or_else(|| wrong("float", &v)),
        }
    }
}

impl FromShm for f32 {
    fn from_shm(v: ShmVal) -> Result<Self, ValError> {
        f64::from_shm(v).map(|x| x as f32)
    }
}

impl FromShm for bool {
    fn from_shm(v: ShmVal) -> Result<Self, ValError> {
        v.as_bool().ok_or_else(|| wrong("bool", &v))
    }
}

impl FromShm for String {
    fn from_shm(v: ShmVal) -> Result<Self, ValError> {
        match v.as_str() {
            Some(s) => Ok(s.to_str()?.to_owned()),
            None => Err(wrong("str", &v)),
        }
    }
}

impl FromShm for ShmTab {
    fn from_shm(v: ShmVal) -> Result<Self, ValError> {
        v.as_tab().ok_or_else(|| wrong("dict", &v))
    }
}

impl FromShm for ShmList {
    fn from_shm(v: ShmVal) -> Result<Self, ValError> {
        v.as_list().ok_or_else(|| wrong("list", &v))
    }
}

impl<T: super::Elem> FromShm for ShmArr<T> {
    fn from_shm(v: ShmVal) -> Result<Self, ValError> {
        v.as_arr::<T>()?.ok_or_else(|| wrong("array", &v))
    }
}

/// A numeric array of `T` copied out; a list of numbers is accepted too. An array
/// of 0 or 2+ dimensions gives its elements in C order, as every flat reader does
/// ([`ShmVal::as_arr`]); its shape is [`ShmVal::shape`] (serde, which has nested
/// sequences, gives one level a dimension instead).
impl<T: super::Elem + FromShm> FromShm for Vec<T> {
    fn from_shm(v: ShmVal) -> Result<Self, ValError> {
        if let Some(a) = v.as_arr::<T>()? {
            return Ok(a.to_vec());
        }
        match v.as_list() {
            Some(l) => l.items()?.into_iter().map(T::from_shm).collect(),
            None => Err(wrong("array", &v)),
        }
    }
}

impl<T: FromShm> FromShm for Option<T> {
    fn from_shm(v: ShmVal) -> Result<Self, ValError> {
        if v.is_none() {
            Ok(None)
        } else {
            T::from_shm(v).map(Some)
        }
    }
}

impl Val {
    /// The flag of a `bool`.
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Val::Bool(b) => Some(*b),
            _ => None,
        }
    }

    /// The items of a `list` or `tuple`.
    pub fn as_list(&self) -> Option<&[Val]> {
        match self {
            Val::List(v) | Val::Tup(v) => Some(v),
            _ => None,
        }
    }

    /// The elements of a numeric array.
    pub fn as_arr(&self) -> Option<&crate::val::Arr> {
        match self {
            Val::Arr(a) => Some(a),
            _ => None,
        }
    }

    /// The entries of a `dict` or `OrderedDict`.
    pub fn as_tab(&self) -> Option<&crate::val::Map> {
        match self {
            Val::Tab(m) | Val::OTab(m) => Some(m),
            _ => None,
        }
    }
}
