//! Named pipes: bounded multi-producer multi-consumer queues of shared values living
//! in a pool. Sending moves a reference (never the bytes); receiving takes it over.
//!
//! ```
//! use shmval::{tab, Pipe, Pool, PoolOptions};
//! use std::time::Duration;
//!
//! # let name = format!("doc-pipe-{}", std::process::id());
//! let pool = Pool::create_with(&name, 4 << 20, &PoolOptions::new().remove_on_drop(true))?;
//! let pipe = Pipe::create(&pool, "raw", 1024)?;
//! pipe.send(pool.share(&tab! { "seq" => 1 })?)?;
//!
//! // Elsewhere (typically another process): find the pipe by name and receive.
//! let same = Pipe::open(&pool, "raw", Duration::from_secs(1))?;
//! let v = same.recv_timeout(Duration::from_millis(500))?;
//! assert_eq!(v.to_string(), "{'seq': 1}");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Waiting spins first (a hand-off through a cache line costs tens of nanoseconds, a
//! futex wake-up tens of microseconds), then sleeps on a shared futex eventcount.
//! Deadlines are absolute (`CLOCK_MONOTONIC`). A process killed anywhere in a send or
//! receive stops nobody: what it claimed is recognised by its dead claimer and moved
//! on by whoever waits behind it (see `ring`), losing at most the values of the one
//! run a dead sender had claimed and not written.

mod broadcast;
mod directory;
mod error;
mod handle;
mod iter;
mod ring;
mod transfer;
mod wait;

pub use broadcast::{
    Broadcast, BroadcastRecvError, BroadcastStatus, Policy, Subscriber, SubscriberStatus,
    MAX_SUBSCRIBERS,
};
pub use error::{BatchError, Fault, PipeError, RecvError, SendError};
pub use handle::{Pipe, PipeStatus};
pub use iter::{Iter, SubscriberIter};

use crate::shm::{Raw, ValError};
use crate::Pool;
pub(crate) use ring::receipt_taken;
use ring::Ring;
use std::time::Duration;

/// Processes that may use one pipe at once.
pub const MAX_PIPE_USERS: usize = ring::USERS;

/// Longest pipe name, in bytes.
pub const MAX_PIPE_NAME: usize = 255;

/// Default spin phase before a blocking call sleeps (see `docs/PERFORMANCE.md`).
pub const DEFAULT_SPIN: Duration = Duration::from_micros(50);

/// A spin phase in nanoseconds (saturating).
fn spin_ns(spin: Duration) -> u64 {
    spin.as_nanos().min(u128::from(u64::MAX)) as u64
}

pub(crate) use broadcast::values_held as broadcast_values_held;
pub(crate) use broadcast::LAYOUT_PARTS as BROADCAST_LAYOUT;
pub(crate) use ring::LAYOUT_PARTS as PIPE_LAYOUT;

/// What a pipe object holds (for release and `check`).
pub(crate) fn values_held(
    pool: &Pool,
    o: crate::shm::Obj,
    f: &mut dyn FnMut(Raw),
) -> Result<(), ValError> {
    Ring::attach(pool, o.off)?.held(pool, f);
    Ok(())
}
