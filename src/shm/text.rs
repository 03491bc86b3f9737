//! Typed handles on shared `str` and `bytes`: immutable once published, so reading
//! takes no lock and copies nothing — the slices borrow the pool's memory (or, for
//! values of at most 8 bytes, the handle's own slot).
//!
//! ```
//! use shmval::{Pool, PoolOptions};
//! # let name = format!("doc-text-{}", std::process::id());
//! let pool = Pool::create_with(&name, 1 << 20, &PoolOptions::new().remove_on_drop(true))?;
//! let s = pool.share_str("a string longer than eight bytes")?;
//! assert_eq!(s.to_str()?, "a string longer than eight bytes");
//! let v = shmval::ShmVal::from(s);
//! assert_eq!(v.as_str().unwrap().len()?, 32);
//! assert!(v.as_bytes().is_none());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use super::layout::tag;
use super::mem::corrupt;
use super::{ShmVal, ValError};
use crate::Pool;
use std::fmt;

// Inline values keep their bytes in the slot's payload in little-endian order, which
// `bytes` borrows in place.
const _: () = assert!(cfg!(target_endian = "little"));

/// A handle on a shared `str`, read in place (published strings never change).
///
/// ```
/// use shmval::{Pool, PoolOptions};
/// # let name = format!("doc-str-{}", std::process::id());
/// let pool = Pool::create_with(&name, 4 << 20, &PoolOptions::new().remove_on_drop(true))?;
/// let s = pool.share_str("sensör ☃, a string longer than an inline value")?;
/// assert_eq!(s.to_str()?, "sensör ☃, a string longer than an inline value");
/// assert_eq!(s.len()?, 49); // bytes
/// assert!(s.as_val().as_str().is_some());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct ShmStr(ShmVal);

/// A handle on a shared `bytes`.
#[derive(Clone)]
pub struct ShmBytes(ShmVal);

impl ShmVal {
    /// This value as a string handle, if it is a `str`.
    pub fn as_str(&self) -> Option<ShmStr> {
        matches!(self.raw().tag(), tag::STR | tag::STR_INLINE).then(|| ShmStr(self.clone()))
    }

    /// This value as a bytes handle, if it is a `bytes`.
    pub fn as_bytes(&self) -> Option<ShmBytes> {
        matches!(self.raw().tag(), tag::BYTES | tag::BYTES_INLINE).then(|| ShmBytes(self.clone()))
    }

    /// The bytes of a `str` or `bytes` value, borrowed (see the module doc).
    fn text_bytes(&self, object: u8, inline: u8) -> Result<&[u8], ValError> {
        let r = self.raw_ref();
        if r.tag() == inline {
            if r.len() > 8 {
                return Err(corrupt(format!("inline length {}", r.len())));
            }
            // SAFETY: the payload is a u64 of this handle (8 readable bytes, which
            // live as long as `&self`); `len <= 8`.
            return Ok(unsafe {
                std::slice::from_raw_parts(
                    std::ptr::from_ref(&r.payload).cast::<u8>(),
                    r.len() as usize,
                )
            });
        }
        let o = self.obj_pool().obj(r.payload)?;
        if r.tag() != object || o.tag != object {
            return Err(corrupt(format!(
                "object at {:#x} is tag {}, not {object}",
                o.off, o.tag
            )));
        }
        self.obj_pool().bytes_of(o)
    }
}

impl ShmStr {
    /// The string, borrowed from shared memory (checked to be UTF-8).
    ///
    /// # Errors
    /// [`ValError::Corrupt`] when the object is damaged or not UTF-8.
    pub fn to_str(&self) -> Result<&str, ValError> {
        let b = self.0.text_bytes(tag::STR, tag::STR_INLINE)?;
        std::str::from_utf8(b).map_err(|_| corrupt("str is not UTF-8"))
    }

    /// Length in bytes.
    ///
    /// # Errors
    /// [`ValError::Corrupt`] when the object is damaged.
    pub fn len(&self) -> Result<usize, ValError> {
        Ok(self.0.text_bytes(tag::STR, tag::STR_INLINE)?.len())
    }

    /// Whether the string is empty.
    ///
    /// # Errors
    /// [`ValError::Corrupt`] when the object is damaged.
    pub fn is_empty(&self) -> Result<bool, ValError> {
        Ok(self.len()? == 0)
    }

    /// The handle as a plain value handle.
    pub fn as_val(&self) -> &ShmVal {
        &self.0
    }
}

impl ShmBytes {
    /// The bytes, borrowed from shared memory.
    ///
    /// # Errors
    /// [`ValError::Corrupt`] when the object is damaged.
    pub fn to_bytes(&self) -> Result<&[u8], ValError> {
        self.0.text_bytes(tag::BYTES, tag::BYTES_INLINE)
    }

    /// Length in bytes.
    ///
    /// # Errors
    /// [`ValError::Corrupt`] when the object is damaged.
    pub fn len(&self) -> Result<usize, ValError> {
        Ok(self.to_bytes()?.len())
    }

    /// Whether there are no bytes.
    ///
    /// # Errors
    /// [`ValError::Corrupt`] when the object is damaged.
    pub fn is_empty(&self) -> Result<bool, ValError> {
        Ok(self.len()? == 0)
    }

    /// The handle as a plain value handle.
    pub fn as_val(&self) -> &ShmVal {
        &self.0
    }
}

impl Pool {
    /// Shares a string.
    ///
    /// # Errors
    /// [`ValError::Alloc`] when the pool is full.
    pub fn share_str(&self, s: &str) -> Result<ShmStr, ValError> {
        Ok(ShmStr(self.share(&crate::Val::Str(s.into()))?))
    }

    /// Shares bytes.
    ///
    /// # Errors
    /// [`ValError::Alloc`] when the pool is full.
    pub fn share_bytes(&self, b: &[u8]) -> Result<ShmBytes, ValError> {
        Ok(ShmBytes(self.share(&crate::Val::Bytes(b.into()))?))
    }
}

impl From<ShmStr> for ShmVal {
    fn from(s: ShmStr) -> ShmVal {
        s.0
    }
}

impl From<ShmBytes> for ShmVal {
    fn from(b: ShmBytes) -> ShmVal {
        b.0
    }
}

impl PartialEq<str> for ShmStr {
    fn eq(&self, other: &str) -> bool {
        self.to_str().is_ok_and(|s| s == other)
    }
}

impl PartialEq<[u8]> for ShmBytes {
    fn eq(&self, other: &[u8]) -> bool {
        self.to_bytes().is_ok_and(|b| b == other)
    }
}

impl fmt::Display for ShmStr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl fmt::Debug for ShmStr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ShmStr({self})")
    }
}

impl fmt::Display for ShmBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl fmt::Debug for ShmBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ShmBytes({self})")
    }
}
