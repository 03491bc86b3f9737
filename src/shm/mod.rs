//! Shared values: objects living in a pool, reference counted across processes,
//! reached through handles ([`ShmVal`], [`ShmTab`], [`ShmList`], [`ShmArr`], [`ShmStr`],
//! [`ShmBytes`]).
//!
//! See `layout` for the bytes. Invariants: every object reachable from a slot has a
//! reference count of at least the number of slots and handles naming it; the last
//! release frees it and releases its children iteratively; every read of shared
//! memory is bounds-checked and every traversal depth-bounded.

mod arr;
mod build;
mod check;
mod convert;
mod dict;
mod guard;
mod handle;
mod hash;
pub(crate) mod layout;
mod list;
pub(crate) mod mem;
mod path;
mod pool_check;
mod release;
mod serde_shm;
mod tab;
mod text;
mod typed;

pub use arr::{Elem, ShmArr};
pub use build::{TabBuilder, ToShm, ToShmKey};
pub use check::{check_value, is_shm, CheckReport, Problem};
pub use handle::{Arg, ShmVal};
pub use list::ShmList;
pub(crate) use mem::{Obj, Raw};
pub use path::PathError;
pub(crate) use pool_check::{check_pool, sweep, sweep_stray};
pub use pool_check::{Held, PoolCheck, RepairError, RepairReport, Unreachable};
pub use tab::{ShmOTab, ShmTab, TabLock};
pub use text::{ShmBytes, ShmStr};
pub use typed::FromShm;

use crate::error::AllocError;
use thiserror::Error;

/// Why an operation on shared values failed. Nothing was changed, and nothing leaked.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ValError {
    /// The pool is full.
    #[error(transparent)]
    Alloc(#[from] AllocError),
    /// Nesting deeper than 1000 levels (as Python) (or a cycle) was met.
    #[error("value nested deeper than 1000 levels (or cyclic)")]
    TooDeep,
    /// A key that cannot be hashed (list, dict, array).
    #[error("unhashable key of type {0}")]
    Unhashable(&'static str),
    /// An index past the end of a list.
    #[error("index {index} out of range for a list of {len}")]
    Index {
        /// The index given.
        index: usize,
        /// The list's length.
        len: usize,
    },
    /// A container lock stayed held beyond the patience limit by a live process.
    #[error("container lock held too long by another process (stopped or hung)")]
    LockTimeout,
    /// This thread already holds the container's lock (a `TabLock` is alive): use the
    /// guard's own methods inside a transaction.
    #[error("this thread already holds the container's lock: use the TabLock's methods inside the transaction")]
    Reentrant,
    /// An object that is not a value (a pipe) was met where a value was expected.
    #[error("a {0} is not a value")]
    NotAValue(&'static str),
    /// A value read as a type it is not ([`ShmTab::get_as`]).
    #[error("expected a {expected}, found a {found}")]
    WrongType {
        /// The type asked for.
        expected: &'static str,
        /// The value's type.
        found: &'static str,
    },
    /// A value that has no shape of the type asked for, or a type the mapping
    /// cannot hold ([`Pool::share_ser`](crate::Pool::share_ser),
    /// [`ShmVal::deserialize`]).
    #[error("serde: {what}")]
    Serde {
        /// What did not fit.
        what: String,
    },
    /// Shared memory that is not a well-formed value.
    #[error("corrupt shared value: {what}")]
    Corrupt {
        /// What is wrong.
        what: String,
    },
}
