//! Broadcast: a named channel on which every subscriber sees every value, in order.
//!
//! ```
//! use shmval::{Broadcast, Policy, Pool, PoolOptions};
//! use std::time::Duration;
//!
//! # let name = format!("doc-bcast-{}", std::process::id());
//! let pool = Pool::create_with(&name, 4 << 20, &PoolOptions::new().remove_on_drop(true))?;
//! let news = Broadcast::create(&pool, "news", 64, Policy::DropOldest)?;
//!
//! // Typically in other processes: open by name, subscribe, receive.
//! let a = Broadcast::open(&pool, "news", Duration::from_secs(1))?.subscribe()?;
//! let b = news.subscribe()?;
//! news.send(pool.share(&shmval::Val::from("hello"))?)?;
//! assert_eq!(a.recv()?.to_string(), "'hello'");
//! assert_eq!(b.recv()?.to_string(), "'hello'");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! A broadcast is one ring of value slots with a single write position (`tail`) and a
//! table of subscribers, each with its own read position (`cursor`). The ring holds
//! one reference to each value it carries; a subscriber's receive takes a reference
//! of its own, and the ring lets go of a value as soon as every subscriber has
//! passed it (`released` follows the slowest cursor), so a broadcast pins no value
//! nobody will read. A subscriber sees the values sent after it subscribed.
//!
//! When the slowest subscriber is a whole ring behind, the channel's [`Policy`]
//! decides: the sender waits ([`Policy::Block`]), the slowest subscribers skip the
//! oldest value and are told how many they missed ([`Policy::DropOldest`], reported
//! as [`BroadcastRecvError::Lagged`] by their next receive), or the sender waits for
//! at most a given time and then drops ([`Policy::DropAfter`]).
//!
//! All changes happen under the channel's robust lock (a holder that dies is detected
//! by the next taker), in an order that leaves the channel usable wherever a process
//! dies: a value is written to its slot before `tail` counts it, a subscriber takes
//! its reference before its cursor moves past the value, and a slot is emptied before
//! `released` moves past it and before its reference is dropped. A death therefore
//! loses at most the one reference in the dead process's hands, and never frees a
//! value twice. A subscriber process that dies is dropped from the table by the first
//! sender it would block (liveness from its process token), so it never blocks the
//! sender for long.

mod chan;
mod layout;
mod sender;
mod subscriber;

pub(crate) use layout::LAYOUT_PARTS;
pub use sender::{Broadcast, BroadcastStatus, SubscriberStatus};
pub use subscriber::Subscriber;

use crate::pipe::Fault;
use crate::shm::{Raw, ValError};
use crate::Pool;
use chan::Chan;
use std::time::Duration;
use thiserror::Error;

/// Subscribers one broadcast can have at once.
pub const MAX_SUBSCRIBERS: usize = 256;
/// Largest capacity of a broadcast.
pub(super) const MAX_CAP: u64 = 1 << 24;
/// "SVBCST01".
pub(super) const MAGIC: u64 = u64::from_le_bytes(*b"SVBCST01");

/// What a broadcast does when its slowest subscriber is a whole ring behind.
///
/// ```
/// use shmval::{Broadcast, BroadcastRecvError, Policy, Pool, PoolOptions, ShmVal};
/// # let name = format!("doc-policy-{}", std::process::id());
/// let pool = Pool::create_with(&name, 4 << 20, &PoolOptions::new().remove_on_drop(true))?;
/// // A ring of 2 whose subscriber reads nothing while 3 values are sent.
/// let b = Broadcast::create(&pool, "ticks", 2, Policy::DropOldest)?;
/// let slow = b.subscribe()?;
/// for i in 0..3i64 {
///     b.send(ShmVal::from(i))?; // never waits: the oldest value is dropped
/// }
/// assert!(matches!(slow.recv(), Err(BroadcastRecvError::Lagged(1))));
/// assert_eq!(slow.recv()?.to_string(), "1");
/// assert_eq!(slow.recv()?.to_string(), "2");
/// // With Block, a send waits for the slowest subscriber instead (try_send: Full).
/// let blocking = Broadcast::create(&pool, "orders", 1, Policy::Block)?;
/// let _sub = blocking.subscribe()?;
/// blocking.send(ShmVal::from(1i64))?;
/// assert!(blocking.try_send(ShmVal::from(2i64)).is_err());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// The sender waits until the slowest subscriber has received (or has died, or
    /// unsubscribed). No subscriber misses anything.
    Block,
    /// The sender never waits: the slowest subscribers skip the oldest value, and
    /// their next receive reports how many they missed
    /// ([`BroadcastRecvError::Lagged`]).
    DropOldest,
    /// The sender waits at most this long for the slowest subscriber, then drops as
    /// [`Policy::DropOldest`] does. `try_send` never waits (it reports `Full`).
    DropAfter(Duration),
}

impl Policy {
    fn encode(self) -> (u64, u64) {
        match self {
            Policy::Block => (0, 0),
            Policy::DropOldest => (1, 0),
            Policy::DropAfter(d) => (2, d.as_nanos().min(u128::from(u64::MAX)) as u64),
        }
    }

    fn decode(kind: u64, ns: u64) -> Option<Policy> {
        match kind {
            0 => Some(Policy::Block),
            1 => Some(Policy::DropOldest),
            2 => Some(Policy::DropAfter(Duration::from_nanos(ns))),
            _ => None,
        }
    }
}

/// A failed receive from a broadcast.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum BroadcastRecvError {
    /// Nothing new (`try_recv`).
    #[error("nothing new on the broadcast")]
    Empty,
    /// Nothing arrived before the deadline.
    #[error("nothing received before the deadline")]
    Timeout,
    /// The broadcast is closed and this subscriber has received everything.
    #[error("broadcast closed")]
    Closed,
    /// This subscriber fell a whole ring behind and skipped this many values (the
    /// next receive returns the oldest value still there).
    #[error("subscriber lagged: {0} values missed")]
    Lagged(u64),
    /// The broadcast is broken (corrupt shared memory), or the subscription is not
    /// this process's (a forked child must subscribe again).
    #[error("broadcast broken: {0}")]
    Broken(Fault),
}

/// What a broadcast object holds (for release and `check`).
pub(crate) fn values_held(
    pool: &Pool,
    o: crate::shm::Obj,
    f: &mut dyn FnMut(Raw),
) -> Result<(), ValError> {
    Chan::attach(pool, o.off)?.held(pool, f)
}
