//! shmval: typed, reference-counted values shared between processes through POSIX
//! shared memory.
//!
//! This layer provides the pool: a named pair of segments (`/dev/shm/NAME_boot`, one
//! page describing the pool, and `/dev/shm/NAME`, the data) with a crash-safe
//! multi-process allocator. Everything inside refers to everything else by offset,
//! so each process may map a pool at a different address.
//!
//! ```
//! use shmval::{Pool, PoolOptions};
//! use std::alloc::Layout;
//! use std::time::Duration;
//!
//! let name = format!("doc-lib-{}", std::process::id());
//! let pool = Pool::create_with(&name, 4 << 20, &PoolOptions::new().remove_on_drop(true))?;
//! let layout = Layout::array::<u8>(5)?;
//! let off = pool.alloc(layout)?;
//! let p = pool.resolve(off, 5).unwrap();
//! // SAFETY: a fresh 5-byte block of ours.
//! unsafe { p.as_ptr().copy_from_nonoverlapping(b"hello".as_ptr(), 5) };
//! pool.user_word(7).store(off.get(), std::sync::atomic::Ordering::Release);
//!
//! // Another process (here: another handle) finds it by offset.
//! let other = Pool::open(&name, Duration::from_secs(1))?;
//! let off2 = shmval::Offset::new(other.user_word(7).load(std::sync::atomic::Ordering::Acquire)).unwrap();
//! let q = other.resolve(off2, 5).unwrap();
//! // SAFETY: published with Release above and immutable since.
//! assert_eq!(unsafe { std::slice::from_raw_parts(q.as_ptr(), 5) }, b"hello");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod error;
mod liveness;
mod name;
pub mod pipe;
mod platform;
mod pool;
pub mod segment;
pub mod shm;
pub mod sync;
mod sys;
pub mod val;

pub use error::{CreateError, DestroyError, LayoutId, NameError, OpenError, OpenOrCreateError};
pub use name::{validate_name, BOOT_SUFFIX, MAX_NAME_LEN};
pub use pipe::{
    BatchError, Broadcast, BroadcastRecvError, Pipe, PipeError, Policy, RecvError, SendError,
    Subscriber,
};
pub use platform::LinuxPlatform;
pub use pool::{Pool, PoolInfo, PoolOptions};
pub use shm::{
    check_value, is_shm, Arg, CheckReport, Problem, ShmBytes, ShmList, ShmOTab, ShmStr, ShmTab,
    ShmVal, TabLock, ValError,
};
pub use shmval_alloc::{AllocError, FreeError, Offset, Stats};
pub use val::{
    from_pickle, from_pickle_with, to_pickle, Arr, ArrKind, Complex, Map, PickleError,
    PickleLimits, UnhashableKey, Val, DEFAULT_PICKLE_BYTES,
};
