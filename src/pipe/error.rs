//! What pipe operations report when they fail.

use crate::shm::{ShmVal, ValError};
use std::fmt;
use std::time::Duration;
use thiserror::Error;

use super::{MAX_PIPE_NAME, MAX_PIPE_USERS};

/// Why a pipe or broadcast could not be created, opened, removed, listed or
/// subscribed to.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum PipeError {
    /// A pipe of this name exists already.
    #[error("pipe {0:?} exists already")]
    Exists(String),
    /// No pipe of this name (after waiting as long as asked).
    #[error("no pipe {name:?} in the pool (waited {waited:?})")]
    NotFound {
        /// The name looked for.
        name: String,
        /// How long the call waited for it to appear.
        waited: Duration,
    },
    /// An empty name, one longer than [`MAX_PIPE_NAME`] bytes, or one with a NUL.
    #[error("invalid pipe name {0:?} (1..={MAX_PIPE_NAME} bytes, no NUL)")]
    Name(String),
    /// A capacity of 0 or beyond 2^24.
    #[error("invalid pipe capacity {0} (1..=16777216)")]
    Capacity(u64),
    /// More than [`MAX_PIPE_USERS`] live processes use the pipe.
    #[error("pipe {0:?} has no free user entry ({MAX_PIPE_USERS} live processes use it)")]
    TooManyUsers(String),
    /// Pool exhausted, or corrupt shared memory.
    #[error(transparent)]
    Val(#[from] ValError),
}

/// Why a send or a receive could not proceed at all (not a full or empty pipe, a
/// timeout or a close: those are the calls' own outcomes). The pipe or broadcast is
/// unusable for this process as it stands.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum Fault {
    /// This process's first use needed a user entry of the pipe, and more than
    /// [`MAX_PIPE_USERS`] live processes use it.
    #[error("pipe {0:?} has no free user entry ({MAX_PIPE_USERS} live processes use it)")]
    TooManyUsers(String),
    /// The subscription is gone: used from a forked child (subscribe again there),
    /// or its entry was reclaimed.
    #[error("not subscribed (a forked child must subscribe again)")]
    Unsubscribed,
    /// A blocking call without a timeout waited [`shmval_alloc::LOCK_PATIENCE`] for
    /// the thread owning this pipe side to leave one operation: a process stopped
    /// (SIGSTOP, a debugger) or traced inside it, or a corrupt ownership word naming
    /// a live process. A timed call returns its timeout instead.
    #[error("the pipe side's owner stayed inside one operation for 5 s (stopped or traced?)")]
    OwnerStuck,
    /// The kernel refused the `membarrier(2)` call that taking a pipe side over
    /// from the thread that owns it needs (see `docs/PROTOCOLS.md`).
    #[error("membarrier refused: cannot take the pipe side over from its owner thread")]
    Barrier,
    /// Corrupt shared memory (or a pool exhausted while recovering).
    #[error(transparent)]
    Val(#[from] ValError),
}

/// A failed send: the value comes back to the caller.
#[non_exhaustive]
pub enum SendError {
    /// The pipe is full (`try_send`).
    Full(ShmVal),
    /// The pipe stayed full until the deadline.
    Timeout(ShmVal),
    /// The pipe is closed.
    Closed(ShmVal),
    /// The value lives in another pool (a pipe moves references, it never copies).
    WrongPool(ShmVal),
    /// The pipe is broken (corrupt shared memory, no user entry).
    Broken(ShmVal, Fault),
}

impl SendError {
    /// The value that was not sent.
    pub fn into_value(self) -> ShmVal {
        match self {
            SendError::Full(v)
            | SendError::Timeout(v)
            | SendError::Closed(v)
            | SendError::WrongPool(v)
            | SendError::Broken(v, _) => v,
        }
    }
}

impl fmt::Debug for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SendError({self})")
    }
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendError::Full(_) => f.write_str("pipe full"),
            SendError::Timeout(_) => f.write_str("pipe full until the deadline"),
            SendError::Closed(_) => f.write_str("pipe closed"),
            SendError::WrongPool(_) => f.write_str("value lives in another pool"),
            SendError::Broken(_, e) => write!(f, "pipe broken: {e}"),
        }
    }
}

impl std::error::Error for SendError {}

/// A failed batch send (`send_many`...). The values not sent stay in the caller's
/// vector, in order.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum BatchError {
    /// The pipe stayed full until the deadline.
    #[error("pipe full until the deadline")]
    Timeout,
    /// The pipe is closed.
    #[error("pipe closed")]
    Closed,
    /// The value at this index lives in another pool (nothing was sent).
    #[error("value {0} lives in another pool")]
    WrongPool(usize),
    /// The pipe is broken (corrupt shared memory, no user entry).
    #[error("pipe broken: {0}")]
    Broken(Fault),
}

/// A failed receive.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum RecvError {
    /// Nothing to receive (`try_recv`).
    #[error("pipe empty")]
    Empty,
    /// Nothing arrived before the deadline.
    #[error("nothing received before the deadline")]
    Timeout,
    /// The pipe is closed and drained.
    #[error("pipe closed")]
    Closed,
    /// The pipe is broken (corrupt shared memory, no user entry).
    #[error("pipe broken: {0}")]
    Broken(Fault),
}
