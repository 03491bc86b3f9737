//! shmval: typed, reference-counted values shared between processes on one host,
//! living *inside* shared memory and moved between processes through named pipes
//! and broadcasts without being copied — the Rust successor to PicklingTools'
//! shared-memory layer.
//!
//! A **pool** is a named pair of files (`/dev/shm/NAME_boot`, one page describing the
//! pool, and `/dev/shm/NAME`, the data; `PoolOptions::dir` or `$SHMVAL_DIR` for
//! another directory). **Values** — dicts, lists, strings, numbers, numeric arrays —
//! are built in it with [`Pool::share`] (a deep copy of a heap [`Val`]) or in place
//! ([`ShmTab`], [`ShmList`], [`ShmArr`](shm::ShmArr)), are reference counted across
//! processes, and refer to each other by offset, so every process may map the pool
//! at another address. A **pipe** ([`Pipe`]) is a bounded queue of values: sending
//! moves a reference. A **broadcast** ([`Broadcast`]) gives every subscriber every
//! value. Processes may crash at any instruction (what they held is recovered, see
//! `docs/PROTOCOLS.md`), live in other PID namespaces, or write garbage: nothing read
//! from shared memory is trusted.
//!
//! ```
//! use shmval::{tab, Broadcast, Pipe, Policy, Pool, PoolOptions};
//! use std::time::Duration;
//!
//! # let name = format!("doc-lib-{}", std::process::id());
//! // Process 1 creates the pool, a pipe, and shares a table.
//! let pool = Pool::create_with(&name, 16 << 20, &PoolOptions::new().remove_on_drop(true))?;
//! let raw = Pipe::create(&pool, "raw", 1024)?;
//! let reading = pool.share(&tab! { "seq" => 1, "name" => "sensor", "data" => vec![1.5f64; 3] })?;
//! pool.root()?.insert("latest", &reading)?; // a named value anyone can look up
//! raw.send_timeout(reading, Duration::from_secs(1))?; // moves a reference, no copy
//!
//! // Process 2 (here: another handle) waits for both, then receives.
//! let pool2 = Pool::open(&name, Duration::from_secs(5))?;
//! let raw2 = Pipe::open(&pool2, "raw", Duration::from_secs(5))?;
//! let v = raw2.recv_timeout(Duration::from_millis(500))?;
//! assert_eq!(v.to_string(), "{'seq': 1, 'name': 'sensor', 'data': array('d', [1.5, 1.5, 1.5])}");
//! let latest = pool2.root()?.get("latest")?.expect("shared by process 1");
//! assert_eq!(latest.to_val()?, v.to_val()?); // the same object, seen twice
//!
//! // A broadcast: every subscriber sees every value.
//! let news = Broadcast::create(&pool, "news", 64, Policy::DropOldest)?;
//! let sub = news.subscribe()?;
//! news.send(pool.share(&shmval::Val::from("hello"))?)?;
//! assert_eq!(sub.recv()?.to_string(), "'hello'");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Below the values sits a crash-safe multi-process allocator ([`Pool::alloc`],
//! [`Pool::resolve`], offsets valid in every process) for data of your own layout.

/// A fail point named `$name` (see `shmval::fail`, feature `failpoints`): no code
/// at all without the feature.
macro_rules! fail_point {
    ($name:literal) => {
        #[cfg(feature = "failpoints")]
        {
            let _ = shmval_alloc::fail::fires($name);
        }
    };
}

/// Whether the fail point `$name` fired (it takes another branch then); `false`
/// without the `failpoints` feature.
macro_rules! fail_fires {
    ($name:literal) => {{
        #[cfg(feature = "failpoints")]
        let fired = shmval_alloc::fail::fires($name);
        #[cfg(not(feature = "failpoints"))]
        let fired = false;
        fired
    }};
}

mod error;
mod ledger;
#[cfg(feature = "failpoints")]
pub use shmval_alloc::fail;
pub mod admin;
mod liveness;
mod name;
mod options;
pub mod pipe;
mod platform;
mod pool;
mod segment;
pub mod shm;
mod snapshot;
mod sync;
/// Internals the cross-process tests drive directly (the futex eventcount); only
/// with the `failpoints` feature, which `cargo test` turns on. Not API.
#[cfg(feature = "failpoints")]
#[doc(hidden)]
pub mod test_support {
    pub use crate::sync::{EventCount, WaitResult};
}
mod sys;
pub mod val;

pub use error::{CreateError, DestroyError, LayoutId, NameError, OpenError, OpenOrCreateError};

/// The layout identity (version and hash of every shared layout) this build writes
/// into the pools it creates and requires of the pools it opens; a pool of another
/// is refused with [`OpenError::Incompatible`].
pub fn layout_id() -> LayoutId {
    segment::boot::layout_id()
}
pub use name::{validate_name, BOOT_SUFFIX, MAX_NAME_LEN};
pub use options::{Backend, PoolOptions};
pub use pipe::{
    BatchError, Broadcast, BroadcastRecvError, BroadcastStatus, Fault, Iter, Pipe, PipeError,
    PipeStatus, Policy, RecvError, SendError, Subscriber, SubscriberIter, SubscriberStatus,
};
pub use platform::LinuxPlatform;
pub use pool::{FileState, Health, Pool, PoolInfo, Reclaimed, Recovery};
pub use shm::{
    check_value, is_shm, Arg, CheckReport, FromShm, Held, PathError, PoolCheck, Problem,
    RepairError, RepairReport, ShmBytes, ShmList, ShmOTab, ShmStr, ShmTab, ShmVal, TabBuilder,
    TabLock, ToShm, ToShmKey, Unreachable, ValError,
};
pub use shmval_alloc::{AllocError, FreeError, GrowError, Offset, Stats};
pub use snapshot::SnapshotError;
pub use val::{
    from_pickle, from_pickle_with, to_pickle, to_pickle_numpy, Arr, ArrKind, Complex, LiteralError,
    Map, NdArr, PickleError, PickleLimits, ShapeError, UnhashableKey, Val, DEFAULT_PICKLE_BYTES,
    MAX_NDIM,
};
