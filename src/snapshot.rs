//! Snapshots: the root table's values to a file and back (`Pool::save`,
//! `Pool::load`; `shmval save` / `shmval load`), across reboots.
//!
//! File: a 40-byte header — magic `"SHMVSNAP"`, format version (u32), flags (u32),
//! the saved pool's size (u64), the payload's length (u64), its CRC-32 (u32), 4
//! reserved bytes — (format 2, written for a pool that grows: 48 bytes, the pool's
//! maximum size (u64) after them; format 1 otherwise, which older builds read) —
//! then the payload: an rkyv archive of the root table (every value
//! kind kept exactly: int widths, arrays as raw little-endian elements, ordered
//! dicts, tuples). Loading checks the length (a truncated file), the CRC (flipped
//! bytes), then rkyv's validation of the archive's structure, before a value is
//! made: a damaged snapshot is a typed error, never a panic or a wrong value.

use crate::val::{Arr, ArrKind, Complex, Map, Val};
use crate::{CreateError, Pool, PoolOptions, ValError};
use rkyv::rancor;
use std::path::Path;

const MAGIC: &[u8; 8] = b"SHMVSNAP";
/// The format of a pool that does not grow (older builds read it).
const VERSION: u32 = 1;
const HEADER: usize = 40;
/// The format of a pool that grows: the header ends with its maximum size.
const VERSION_GROWS: u32 = 2;
const HEADER_GROWS: usize = 48;

/// Why a snapshot could not be written or read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SnapshotError {
    /// Reading or writing the file.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// Not a snapshot (its magic is not shmval's).
    #[error("{0}: not a shmval snapshot")]
    NotSnapshot(String),
    /// A format this build does not read.
    #[error("{path}: snapshot format {found}, this build reads {VERSION}")]
    Version {
        /// The file.
        path: String,
        /// Its format version.
        found: u32,
    },
    /// Shorter (or longer) than its header says.
    #[error("{path}: truncated: {found} payload bytes, the header says {expected}")]
    Truncated {
        /// The file.
        path: String,
        /// Bytes the header announces.
        expected: u64,
        /// Bytes there are.
        found: u64,
    },
    /// Bytes changed since it was written, or an archive that does not validate.
    #[error("{path}: corrupt: {what}")]
    Corrupt {
        /// The file.
        path: String,
        /// What is wrong.
        what: String,
    },
    /// Making the pool to load into.
    #[error(transparent)]
    Create(#[from] CreateError),
    /// Reading or storing the values.
    #[error(transparent)]
    Val(#[from] ValError),
}

/// One value of a snapshot.
#[derive(rkyv::Archive, rkyv::Serialize)]
#[rkyv(serialize_bounds(
    __S: rkyv::ser::Writer + rkyv::ser::Allocator,
    __S::Error: rkyv::rancor::Source,
))]
#[rkyv(bytecheck(bounds(__C: rkyv::validation::ArchiveContext, __C::Error: rkyv::rancor::Source)))]
enum Snap {
    None,
    Bool(bool),
    I8(i8),
    I16(i16),
    I32(i32),
    I64(i64),
    U8(u8),
    U16(u16),
    U32(u32),
    U64(u64),
    /// Two's complement, little-endian.
    Big(Vec<u8>),
    F32(f32),
    F64(f64),
    C32(f32, f32),
    C64(f64, f64),
    Str(String),
    Bytes(Vec<u8>),
    /// Kind (`ArrKind as u8`), elements' little-endian bytes.
    Arr(u8, Vec<u8>),
    List(#[rkyv(omit_bounds)] Vec<Snap>),
    Tup(#[rkyv(omit_bounds)] Vec<Snap>),
    /// Keys and values, alternating.
    Tab(#[rkyv(omit_bounds)] Vec<Snap>),
    OTab(#[rkyv(omit_bounds)] Vec<Snap>),
    /// An array of 0 or 2+ dimensions: kind then the dimensions, the elements'
    /// bytes (C order). Last, and no larger than the others: format 1 files
    /// written before it existed read the same.
    NdArr(Vec<u64>, Vec<u8>),
}

// The archived value keeps its size with `NdArr` added (format 1 stays readable).
const _: () = assert!(std::mem::size_of::<ArchivedSnap>() == 24);

/// Numbers from their bytes (a length not a multiple of the size: `None`).
fn unraw<T: Copy + Default>(b: &[u8]) -> Option<Vec<T>> {
    let size = std::mem::size_of::<T>();
    if b.len() % size != 0 {
        return None;
    }
    let mut v = vec![T::default(); b.len() / size];
    // SAFETY: `v` has room for exactly `b.len()` bytes; `T` is a plain number type
    // for which every bit pattern is valid.
    unsafe { std::ptr::copy_nonoverlapping(b.as_ptr(), v.as_mut_ptr().cast::<u8>(), b.len()) };
    Some(v)
}

const _: () = assert!(
    cfg!(target_endian = "little"),
    "snapshots store little-endian"
);

fn snap(v: &Val) -> Snap {
    match v {
        Val::None => Snap::None,
        Val::Bool(b) => Snap::Bool(*b),
        Val::I8(x) => Snap::I8(*x),
        Val::I16(x) => Snap::I16(*x),
        Val::I32(x) => Snap::I32(*x),
        Val::I64(x) => Snap::I64(*x),
        Val::U8(x) => Snap::U8(*x),
        Val::U16(x) => Snap::U16(*x),
        Val::U32(x) => Snap::U32(*x),
        Val::U64(x) => Snap::U64(*x),
        Val::BigInt(b) => Snap::Big(b.to_signed_bytes_le()),
        Val::F32(x) => Snap::F32(*x),
        Val::F64(x) => Snap::F64(*x),
        Val::Complex32(c) => Snap::C32(c.re, c.im),
        Val::Complex64(c) => Snap::C64(c.re, c.im),
        Val::Str(s) => Snap::Str(s.clone()),
        Val::Bytes(b) => Snap::Bytes(b.clone()),
        Val::Arr(a) => Snap::Arr(a.kind() as u8, arr_bytes(a)),
        Val::NdArr(a) => Snap::NdArr(
            std::iter::once(a.data().kind() as u64)
                .chain(a.shape().iter().map(|&d| d as u64))
                .collect(),
            arr_bytes(a.data()),
        ),
        Val::List(v) => Snap::List(v.iter().map(snap).collect()),
        Val::Tup(v) => Snap::Tup(v.iter().map(snap).collect()),
        Val::Tab(m) => Snap::Tab(pairs(m)),
        Val::OTab(m) => Snap::OTab(pairs(m)),
    }
}

/// An array's elements as little-endian bytes.
fn arr_bytes(a: &Arr) -> Vec<u8> {
    a.as_bytes().to_vec()
}

fn pairs(m: &Map) -> Vec<Snap> {
    m.iter().flat_map(|(k, v)| [snap(k), snap(v)]).collect()
}

/// A value from its archive (already validated), depth-bounded.
fn unsnap(a: &ArchivedSnap, depth: u32) -> Result<Val, String> {
    if depth > 10_000 {
        return Err("nested deeper than 10,000".into());
    }
    let seq = |v: &rkyv::vec::ArchivedVec<ArchivedSnap>| -> Result<Vec<Val>, String> {
        v.iter().map(|x| unsnap(x, depth + 1)).collect()
    };
    let map = |v: &rkyv::vec::ArchivedVec<ArchivedSnap>| -> Result<Map, String> {
        if v.len() % 2 != 0 {
            return Err("a dict with a key without a value".into());
        }
        let mut m = Map::with_capacity(v.len() / 2);
        for kv in v.chunks(2) {
            let k = unsnap(&kv[0], depth + 1)?;
            if !k.is_hashable() {
                return Err(format!("an unhashable key ({})", k.type_name()));
            }
            m.insert(k, unsnap(&kv[1], depth + 1)?);
        }
        Ok(m)
    };
    Ok(match a {
        ArchivedSnap::None => Val::None,
        ArchivedSnap::Bool(b) => Val::Bool(*b),
        ArchivedSnap::I8(x) => Val::I8(*x),
        ArchivedSnap::I16(x) => Val::I16(x.to_native()),
        ArchivedSnap::I32(x) => Val::I32(x.to_native()),
        ArchivedSnap::I64(x) => Val::I64(x.to_native()),
        ArchivedSnap::U8(x) => Val::U8(*x),
        ArchivedSnap::U16(x) => Val::U16(x.to_native()),
        ArchivedSnap::U32(x) => Val::U32(x.to_native()),
        ArchivedSnap::U64(x) => Val::U64(x.to_native()),
        ArchivedSnap::Big(b) => Val::BigInt(num_bigint::BigInt::from_signed_bytes_le(b)),
        ArchivedSnap::F32(x) => Val::F32(x.to_native()),
        ArchivedSnap::F64(x) => Val::F64(x.to_native()),
        ArchivedSnap::C32(re, im) => Val::Complex32(Complex::new(re.to_native(), im.to_native())),
        ArchivedSnap::C64(re, im) => Val::Complex64(Complex::new(re.to_native(), im.to_native())),
        ArchivedSnap::Str(s) => Val::Str(s.as_str().to_owned()),
        ArchivedSnap::Bytes(b) => Val::Bytes(b.to_vec()),
        ArchivedSnap::Arr(kind, b) => Val::Arr(unarr(*kind, b)?),
        ArchivedSnap::NdArr(dims, b) => {
            let kind = dims.first().map_or(0, |k| k.to_native());
            let kind = u8::try_from(kind).map_err(|_| format!("an array of kind {kind}"))?;
            let shape = dims[1..]
                .iter()
                .map(|d| usize::try_from(d.to_native()).map_err(|_| "a dimension".to_string()))
                .collect::<Result<Vec<usize>, String>>()?;
            let nd = crate::NdArr::new(shape, unarr(kind, b)?).map_err(|e| e.to_string())?;
            Val::from(nd)
        }
        ArchivedSnap::List(v) => Val::List(seq(v)?),
        ArchivedSnap::Tup(v) => Val::Tup(seq(v)?),
        ArchivedSnap::Tab(v) => Val::Tab(map(v)?),
        ArchivedSnap::OTab(v) => Val::OTab(map(v)?),
    })
}

/// An array of `kind` from its elements' bytes.
fn unarr(kind: u8, b: &[u8]) -> Result<Arr, String> {
    let bad = || format!("an array of kind {kind} with {} bytes", b.len());
    let arr = match ArrKind::from_u8(kind).ok_or_else(bad)? {
        ArrKind::Bool => Arr::Bool(b.iter().map(|&x| x != 0).collect()),
        ArrKind::I8 => Arr::I8(unraw(b).ok_or_else(bad)?),
        ArrKind::I16 => Arr::I16(unraw(b).ok_or_else(bad)?),
        ArrKind::I32 => Arr::I32(unraw(b).ok_or_else(bad)?),
        ArrKind::I64 => Arr::I64(unraw(b).ok_or_else(bad)?),
        ArrKind::U8 => Arr::U8(b.to_vec()),
        ArrKind::U16 => Arr::U16(unraw(b).ok_or_else(bad)?),
        ArrKind::U32 => Arr::U32(unraw(b).ok_or_else(bad)?),
        ArrKind::U64 => Arr::U64(unraw(b).ok_or_else(bad)?),
        ArrKind::F32 => Arr::F32(unraw(b).ok_or_else(bad)?),
        ArrKind::F64 => Arr::F64(unraw(b).ok_or_else(bad)?),
        ArrKind::C32 => Arr::C32(unraw(b).ok_or_else(bad)?),
        ArrKind::C64 => Arr::C64(unraw(b).ok_or_else(bad)?),
    };
    Ok(arr)
}

/// The saved pool's sizes: what it had, and what it may grow to (the same for a
/// pool that does not grow).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Sizes {
    pub size: u64,
    pub max: u64,
}

/// The snapshot file's bytes for `root` (a dict) of a pool of `sizes`.
pub(crate) fn encode(root: &Val, sizes: Sizes) -> Result<Vec<u8>, String> {
    let payload = rkyv::to_bytes::<rancor::Error>(&snap(root)).map_err(|e| e.to_string())?;
    let grows = sizes.max > sizes.size;
    let (version, header) = if grows {
        (VERSION_GROWS, HEADER_GROWS)
    } else {
        (VERSION, HEADER)
    };
    let pool_size = sizes.size;
    let mut out = Vec::with_capacity(header + payload.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&pool_size.to_le_bytes());
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    if grows {
        out.extend_from_slice(&sizes.max.to_le_bytes());
    }
    debug_assert_eq!(out.len(), header);
    out.extend_from_slice(&payload);
    Ok(out)
}

/// The root table and the saved pool's sizes from a snapshot file's bytes.
pub(crate) fn decode(bytes: &[u8], path: &str) -> Result<(Val, Sizes), SnapshotError> {
    let p = || path.to_owned();
    if bytes.len() < 8 || &bytes[..8] != MAGIC {
        return Err(SnapshotError::NotSnapshot(p()));
    }
    if bytes.len() < HEADER {
        return Err(SnapshotError::Truncated {
            path: p(),
            expected: HEADER as u64,
            found: bytes.len() as u64,
        });
    }
    let word = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
    let half = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"));
    let version = half(8);
    let header = match version {
        VERSION => HEADER,
        VERSION_GROWS => HEADER_GROWS,
        _ => {
            return Err(SnapshotError::Version {
                path: p(),
                found: version,
            })
        }
    };
    if bytes.len() < header {
        return Err(SnapshotError::Truncated {
            path: p(),
            expected: header as u64,
            found: bytes.len() as u64,
        });
    }
    let (size, len, crc) = (word(16), word(24), half(32));
    let max = if version == VERSION_GROWS {
        word(40)
    } else {
        size
    };
    if max < size {
        return Err(SnapshotError::Corrupt {
            path: p(),
            what: format!("its maximum size {max} is below its size {size}"),
        });
    }
    let payload = &bytes[header..];
    if payload.len() as u64 != len {
        return Err(SnapshotError::Truncated {
            path: p(),
            expected: len,
            found: payload.len() as u64,
        });
    }
    let corrupt = |what: String| SnapshotError::Corrupt { path: p(), what };
    if crc32fast::hash(payload) != crc {
        return Err(corrupt("its checksum does not match its bytes".into()));
    }
    // rkyv reads from an aligned buffer.
    let mut aligned = rkyv::util::AlignedVec::<16>::with_capacity(payload.len());
    aligned.extend_from_slice(payload);
    let archived = rkyv::access::<ArchivedSnap, rancor::Error>(&aligned)
        .map_err(|e| corrupt(format!("the archive does not validate: {e}")))?;
    let root = unsnap(archived, 0).map_err(corrupt)?;
    if !matches!(root, Val::Tab(_)) {
        return Err(corrupt("its root is not a dict".into()));
    }
    Ok((root, Sizes { size, max }))
}

impl Pool {
    /// Writes the root table's values to `path` (a new file, written whole then
    /// renamed into place: a crash leaves the old file or the new, never half).
    /// Returns the bytes written.
    ///
    /// ```
    /// use shmval::{tab, Pool, PoolOptions, Val};
    /// # let (a, b) = (format!("doc-save-{}", std::process::id()), format!("doc-load-{}", std::process::id()));
    /// # let file = std::env::temp_dir().join(format!("{a}.snap"));
    /// let pool = Pool::create_with(&a, 1 << 20, &PoolOptions::new().remove_on_drop(true))?;
    /// pool.root()?.insert("cfg", tab! { "port" => 5432, "w" => vec![0.5f64, 2.0] })?;
    /// pool.save(&file)?;
    /// let copy = Pool::load(&file, &b, &PoolOptions::new().remove_on_drop(true))?;
    /// assert_eq!(copy.root()?.to_val()?, pool.root()?.to_val()?);
    /// # std::fs::remove_file(&file)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// [`SnapshotError::Io`]; a value that cannot be read.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<u64, SnapshotError> {
        let path = path.as_ref();
        let shown = path.display().to_string();
        let root = self.root()?.to_val()?;
        let sizes = Sizes {
            size: self.size(),
            max: self.max_size(),
        };
        let bytes = encode(&root, sizes).map_err(|what| SnapshotError::Corrupt {
            path: shown.clone(),
            what,
        })?;
        let io = |source| SnapshotError::Io {
            path: shown.clone(),
            source,
        };
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        let written = (|| {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
            std::fs::rename(&tmp, path)
        })();
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(io(e));
        }
        Ok(bytes.len() as u64)
    }

    /// Creates pool `name` (the saved pool's size, or `opts`' directory and mode) and
    /// fills its root table from the snapshot at `path`. Everything is read and
    /// checked before the pool is made: a damaged snapshot creates nothing. A pool
    /// that grew ([`PoolOptions::max_size`]) is made at the size it had, able to grow
    /// to the same maximum (unless `opts` says another).
    ///
    /// # Errors
    /// [`SnapshotError`]: the file (missing, truncated, corrupt, another format), or
    /// the pool (it exists, no room).
    pub fn load(
        path: impl AsRef<Path>,
        name: &str,
        opts: &PoolOptions,
    ) -> Result<Pool, SnapshotError> {
        Self::load_sized(path, name, None, opts)
    }

    /// As [`Pool::load`], into a pool of `size` bytes instead of the saved one's
    /// (`None`: the saved size).
    ///
    /// # Errors
    /// As [`Pool::load`].
    pub fn load_sized(
        path: impl AsRef<Path>,
        name: &str,
        size: Option<u64>,
        opts: &PoolOptions,
    ) -> Result<Pool, SnapshotError> {
        let path = path.as_ref();
        let shown = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|source| SnapshotError::Io {
            path: shown.clone(),
            source,
        })?;
        let (root, saved) = decode(&bytes, &shown)?;
        drop(bytes);
        let size = size.unwrap_or(saved.size);
        let grown;
        let opts = if saved.max > saved.size && opts.max_size.is_none() {
            grown = opts.clone().max_size(saved.max.max(size));
            &grown
        } else {
            opts
        };
        let pool = Pool::create_with(name, size, opts)?;
        let filled = (|| -> Result<(), ValError> {
            let r = pool.root()?;
            if let Val::Tab(m) = root {
                for (k, v) in m {
                    r.insert(k, v)?;
                }
            }
            Ok(())
        })();
        if let Err(e) = filled {
            pool.remove();
            return Err(e.into());
        }
        Ok(pool)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_round_trips_and_damage_is_refused() {
        let mut m = Map::default();
        let vals = [
            Val::None,
            Val::Bool(true),
            Val::I8(-3),
            Val::U16(7),
            Val::U64(u64::MAX),
            Val::BigInt("-123456789012345678901234567890".parse().unwrap()),
            Val::F32(1.5),
            Val::Complex64(Complex::new(1.0, -2.0)),
            Val::from("é"),
            Val::Bytes(vec![0, 255]),
            Val::Arr(Arr::F64(vec![1.0, 2.5])),
            Val::Arr(Arr::C32(vec![Complex::new(1.0, 2.0)])),
            Val::Arr(Arr::Bool(vec![true, false])),
            Val::Tup(vec![Val::I64(1)]),
            Val::OTab(
                [(Val::I64(2), Val::from("b")), (Val::I64(1), Val::from("a"))]
                    .into_iter()
                    .collect(),
            ),
        ];
        for (i, v) in vals.into_iter().enumerate() {
            m.insert(Val::I64(i as i64), v);
        }
        let root = Val::Tab(m);
        let fixed = Sizes {
            size: 1 << 20,
            max: 1 << 20,
        };
        let bytes = encode(&root, fixed).unwrap();
        let (back, sizes) = decode(&bytes, "t").unwrap();
        assert_eq!((back.clone(), sizes), (root.clone(), fixed));
        assert_eq!(u32::from_le_bytes(bytes[8..12].try_into().unwrap()), 1);
        // A pool that grows: format 2, its maximum kept.
        let grows = Sizes {
            size: 1 << 20,
            max: 64 << 20,
        };
        let bytes2 = encode(&root, grows).unwrap();
        assert_eq!(u32::from_le_bytes(bytes2[8..12].try_into().unwrap()), 2);
        assert_eq!(decode(&bytes2, "t").unwrap(), (root.clone(), grows));
        let mut below = bytes2.clone();
        below[40..48].copy_from_slice(&1u64.to_le_bytes());
        assert!(matches!(
            decode(&below, "t"),
            Err(SnapshotError::Corrupt { .. })
        ));
        assert!(matches!(
            decode(&bytes2[..44], "t"),
            Err(SnapshotError::Truncated { .. })
        ));
        let mut unknown = bytes.clone();
        unknown[8..12].copy_from_slice(&3u32.to_le_bytes());
        assert!(matches!(
            decode(&unknown, "t"),
            Err(SnapshotError::Version { found: 3, .. })
        ));
        assert_eq!(format!("{back}"), format!("{root}"));
        assert!(matches!(
            decode(&bytes[..bytes.len() - 1], "t"),
            Err(SnapshotError::Truncated { .. })
        ));
        assert!(matches!(
            decode(&bytes[..20], "t"),
            Err(SnapshotError::Truncated { .. })
        ));
        assert!(matches!(
            decode(b"garbage", "t"),
            Err(SnapshotError::NotSnapshot(_))
        ));
        for at in [HEADER, HEADER + 7, bytes.len() - 3] {
            let mut bad = bytes.clone();
            bad[at] ^= 0x41;
            assert!(
                matches!(decode(&bad, "t"), Err(SnapshotError::Corrupt { .. })),
                "{at}"
            );
        }
    }
}
