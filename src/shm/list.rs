//! `list` in a pool: a data block of slots; every change under the list's lock (a
//! read of `len` or of an immediate element without it, against the list's version:
//! [`Guard::read_unlocked`]).
//!
//! Crash contract: `push` writes the slot, then `len` (the commit); `pop` lowers `len`
//! (the commit: the value now belongs to the popper), then clears the slot; `set` logs
//! the new value in the head before writing the slot's two words (the next holder
//! replays the log, see `Guard::overwrite`); growing copies the slots into a new block and switches with one
//! store of `data`. A holder killed at any point leaves a whole list (at worst the
//! one value in its hands is leaked).

use super::guard::Guard;
use super::handle::{Arg, ShmVal};
use super::layout::{tag, SLOT};
use super::mem::{Obj, Raw};
use super::ValError;
use crate::val::Val;
use crate::Pool;
use std::sync::atomic::Ordering::{Relaxed, Release};

/// A handle on a shared `list`. Every operation is atomic with respect to other
/// processes: a change holds the list's robust lock; `len` and `get` of an element
/// that is a number, bool, `None` or short string read without it, checking the
/// list's version before and after (an object element is referenced under the lock).
///
/// ```
/// use shmval::{Pool, PoolOptions, Val};
/// # let name = format!("doc-list-{}", std::process::id());
/// let pool = Pool::create_with(&name, 4 << 20, &PoolOptions::new().remove_on_drop(true))?;
/// let l = pool.new_list()?;
/// l.push(1i64)?;
/// l.push("two")?;
/// l.push(Val::List(vec![Val::F64(3.0)]))?; // copied in
/// l.set(0, 10i64)?;
/// assert_eq!(l.len()?, 3);
/// assert_eq!(l.to_val()?.to_string(), "[10, 'two', [3.0]]");
/// assert_eq!(l.pop()?.map(|v| v.to_string()).as_deref(), Some("[3.0]"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct ShmList(pub(crate) ShmVal);

impl std::fmt::Display for ShmList {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::fmt::Debug for ShmList {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ShmList({self})")
    }
}

impl ShmList {
    fn guard(&self) -> Result<Guard<'_>, ValError> {
        let pool = self.0.obj_pool();
        Guard::lock(pool, pool.obj(self.0.raw().payload)?)
    }

    /// The list as a plain value handle.
    pub fn as_val(&self) -> &ShmVal {
        &self.0
    }

    /// Every element, as handles, read under one hold of the lock.
    ///
    /// # Errors
    /// A corrupt list or a lock timeout.
    pub fn items(&self) -> Result<Vec<ShmVal>, ValError> {
        let pool = self.0.obj_pool();
        let raws = pool.list_snapshot(pool.obj(self.0.raw().payload)?)?;
        Ok(raws
            .into_iter()
            .map(|r| ShmVal::from_owned(pool, r))
            .collect())
    }

    /// Copies the list out to the heap.
    ///
    /// # Errors
    /// As [`ShmVal::to_val`].
    pub fn to_val(&self) -> Result<Val, ValError> {
        self.0.to_val()
    }

    /// Number of elements.
    ///
    /// # Errors
    /// A corrupt list or a lock timeout.
    pub fn len(&self) -> Result<usize, ValError> {
        let pool = self.0.obj_pool();
        let obj = pool.obj(self.0.raw().payload)?;
        if let Some(n) = Guard::peek_len(pool, obj) {
            return Ok(n as usize);
        }
        Ok(Guard::lock(pool, obj)?.head.len.load(Relaxed) as usize)
    }

    /// Whether the list is empty.
    ///
    /// # Errors
    /// As [`len`](Self::len).
    pub fn is_empty(&self) -> Result<bool, ValError> {
        Ok(self.len()? == 0)
    }

    /// Element `i` (`None` past the end).
    ///
    /// # Errors
    /// A corrupt list or a lock timeout.
    pub fn get(&self, i: usize) -> Result<Option<ShmVal>, ValError> {
        let pool = self.0.obj_pool();
        let obj = pool.obj(self.0.raw().payload)?;
        let seen = Guard::read_unlocked(pool, obj, |head| {
            let len = head.len.load(Relaxed);
            match pool.block(head, SLOT).ok()? {
                Some(b) if (i as u64) < len.min(b.cap) => {
                    Some(Some(pool.read(pool.slot_at(b.at(i as u64)).ok()?)))
                }
                _ => Some(None),
            }
        });
        match seen {
            Some(None) => return Ok(None),
            // An immediate needs no reference: no lock either.
            Some(Some(r)) if !r.is_object() => return Ok(Some(ShmVal::from_owned(pool, r))),
            _ => {}
        }
        let g = Guard::lock(pool, obj)?;
        let pool = g.pool;
        let len = g.head.len.load(Relaxed);
        let Some(b) = pool.block(g.head, SLOT)? else {
            return Ok(None);
        };
        if i as u64 >= len.min(b.cap) {
            return Ok(None);
        }
        let r = pool.read(pool.slot_at(b.at(i as u64))?);
        pool.retain(r)?;
        Ok(Some(ShmVal::from_owned(pool, r)))
    }

    /// Replaces element `i`, returning the old value.
    ///
    /// # Errors
    /// [`ValError::Index`] past the end; allocation for a heap value.
    pub fn set(&self, i: usize, value: impl Into<Arg>) -> Result<ShmVal, ValError> {
        let pool = self.0.obj_pool();
        let v = value.into().into_val_in(pool)?;
        let g = self.guard()?;
        let len = g.head.len.load(Relaxed);
        let slot = match pool.block(g.head, SLOT)? {
            Some(b) if (i as u64) < len.min(b.cap) => pool.slot_at(b.at(i as u64))?,
            _ => {
                drop(g);
                return Err(ValError::Index {
                    index: i,
                    len: len as usize,
                });
            }
        };
        let old = pool.read(slot);
        g.overwrite(i as u64, slot, v.into_raw()); // out of the ledger, into the slot
        Ok(ShmVal::from_owned(pool, old))
    }

    /// Appends a value (heap values are copied in, shared handles referenced).
    ///
    /// # Errors
    /// [`ValError::Alloc`] (the list is unchanged).
    pub fn push(&self, value: impl Into<Arg>) -> Result<(), ValError> {
        let pool = self.0.obj_pool();
        let v = value.into().into_val_in(pool)?;
        let g = self.guard()?;
        g.begin();
        let len = g.head.len.load(Relaxed);
        let b = match pool.block(g.head, SLOT)? {
            Some(b) if len < b.cap => b,
            old => grow(&g, old.map_or(0, |b| b.cap), len)?,
        };
        let slot = pool.slot_at(b.at(len))?;
        pool.write(slot, v.into_raw()); // out of the ledger, into the slot
        g.head.len.store(len + 1, Release); // commit
        Ok(())
    }

    /// Removes and returns the last element.
    ///
    /// # Errors
    /// A corrupt list or a lock timeout.
    pub fn pop(&self) -> Result<Option<ShmVal>, ValError> {
        let g = self.guard()?;
        let pool = g.pool;
        let len = g.head.len.load(Relaxed);
        let Some(b) = pool.block(g.head, SLOT)? else {
            return Ok(None);
        };
        if len == 0 || len > b.cap {
            return Ok(None);
        }
        g.begin();
        let slot = pool.slot_at(b.at(len - 1))?;
        let r = pool.read(slot);
        g.head.len.store(len - 1, Release); // commit: the value is ours
        pool.write(slot, Raw::NONE);
        Ok(Some(ShmVal::from_owned(pool, r)))
    }
}

/// Copies the slots into a block twice as large and switches to it with one store.
fn grow<'p>(g: &Guard<'p>, cap: u64, len: u64) -> Result<super::mem::Block<'p>, ValError> {
    let pool: &'p Pool = g.pool;
    let old = pool.block(g.head, SLOT)?;
    let new_cap = (cap * 2).max(4);
    let data = pool.new_data_block(new_cap, SLOT)?;
    let nb = pool.block_at(data, SLOT)?;
    g.log_growth(&nb, old.as_ref().map_or(0, |b| b.off));
    fail_point!("shm.growth.logged");
    if let Some(ob) = old {
        for i in 0..len.min(ob.cap) {
            pool.write(pool.slot_at(nb.at(i))?, pool.read(pool.slot_at(ob.at(i))?));
        }
    }
    // SYNC POINT: one store switches the whole list.
    g.head.data.store(data, Release);
    g.finish_growth(&nb);
    Ok(nb)
}

impl ShmVal {
    /// This value as a list handle, if it is a `list`.
    pub fn as_list(&self) -> Option<ShmList> {
        (self.raw().tag() == tag::LIST).then(|| ShmList(self.clone()))
    }
}

impl Pool {
    /// A new, empty shared `list`.
    ///
    /// # Errors
    /// [`ValError::Alloc`].
    ///
    /// # Examples
    /// ```
    /// # use shmval::{Pool, PoolOptions};
    /// # let pool = Pool::create_with(&format!("doc-list-{}", std::process::id()), 1 << 20, &PoolOptions::new().remove_on_drop(true))?;
    /// let l = pool.new_list()?;
    /// l.push(1)?;
    /// l.push("two")?;
    /// assert_eq!(l.to_string(), "[1, 'two']");
    /// assert_eq!(l.pop()?.unwrap().to_string(), "'two'");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn new_list(&self) -> Result<ShmList, ValError> {
        let o: Obj = self.new_list_obj(0)?;
        Ok(ShmList(ShmVal::from_owned(
            self,
            Raw::new(tag::LIST, 0, o.off),
        )))
    }
}
