//! The pool-wide name directories of pipes and broadcasts: names checked, objects
//! made and registered, lookups that wait.

use super::{PipeError, MAX_PIPE_NAME};
use crate::shm::{Raw, ShmTab, ShmVal, ValError};
use crate::Pool;
use std::time::{Duration, Instant};

pub(super) fn check_name(name: &str) -> Result<(), PipeError> {
    if name.is_empty() || name.len() > MAX_PIPE_NAME || name.contains('\0') {
        return Err(PipeError::Name(name.into()));
    }
    Ok(())
}

/// A pool-wide name directory: the dict (name → object) at a user word of the pool.
/// Creators make it on first use; lookups create nothing (a reader must not
/// allocate in a pool it only reads), and a missing directory is an empty one.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Directory(usize);

/// Where pipes are named.
pub(crate) const PIPES: Directory = Directory(1);
/// Where broadcasts are named.
pub(crate) const BROADCASTS: Directory = Directory(2);

impl Directory {
    /// The directory, made if there is none yet (for creators).
    pub(crate) fn made(self, pool: &Pool) -> Result<ShmTab, ValError> {
        pool.word_tab(self.0)
    }

    fn get(self, pool: &Pool, name: &str) -> Result<Option<ShmVal>, PipeError> {
        match pool.word_tab_if_any(self.0)? {
            Some(dir) => Ok(dir.get(name)?),
            None => Ok(None),
        }
    }

    /// Removes `name`; whether it was there.
    pub(crate) fn remove(self, pool: &Pool, name: &str) -> Result<bool, PipeError> {
        match pool.word_tab_if_any(self.0)? {
            Some(dir) => Ok(dir.remove(name)?.is_some()),
            None => Ok(false),
        }
    }

    /// The names in the directory.
    pub(crate) fn names(self, pool: &Pool) -> Result<Vec<String>, PipeError> {
        let mut out = Vec::new();
        if let Some(dir) = pool.word_tab_if_any(self.0)? {
            for k in dir.keys()? {
                if let crate::Val::Str(s) = k.to_val()? {
                    out.push(s);
                }
            }
        }
        Ok(out)
    }
}

/// Makes the object of a named channel: allocates `size` bytes of kind `t`, lets
/// `format` write its initial state, and registers it as `name` in `dir` (refused,
/// and the object freed, if the name is taken). Returns the creator's reference.
pub(super) fn make_named(
    pool: &Pool,
    dir: &ShmTab,
    name: &str,
    t: u8,
    size: u64,
    format: impl FnOnce(u64) -> Result<(), ValError>,
) -> Result<ShmVal, PipeError> {
    let o = pool.alloc_obj(t, size as usize)?;
    let obj = ShmVal::from_owned(pool, Raw::new(t, 0, o.off));
    format(o.off)?;
    let tx = dir.lock()?;
    if tx.get(name)?.is_some() {
        return Err(PipeError::Exists(name.into()));
    }
    tx.insert(name, &obj)?;
    drop(tx);
    Ok(obj)
}

/// Looks `name` up in `dir`, polling (0.2 ms growing to 10 ms naps) until it
/// appears or `wait` has passed.
pub(super) fn find(
    pool: &Pool,
    dir: Directory,
    name: &str,
    wait: Duration,
) -> Result<ShmVal, PipeError> {
    let start = Instant::now();
    let mut nap = Duration::from_micros(200);
    loop {
        if let Some(obj) = dir.get(pool, name)? {
            return Ok(obj);
        }
        let waited = start.elapsed();
        if waited >= wait {
            return Err(PipeError::NotFound {
                name: name.into(),
                waited,
            });
        }
        std::thread::sleep(nap.min(wait - waited));
        nap = (nap * 2).min(Duration::from_millis(10));
    }
}
