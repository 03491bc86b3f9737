//! Typed errors of pool operations; errno is mapped once, where it is produced.

use std::time::Duration;
use thiserror::Error;

pub use shmval_alloc::{AllocError, FreeError};

/// The identity of a segment layout: version and layout hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LayoutId {
    /// Layout version.
    pub version: u32,
    /// Hash of the sizes and alignments of every shared type and the pointer width.
    pub hash: u64,
}

impl std::fmt::Display for LayoutId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "version {} / layout {:#018x}", self.version, self.hash)
    }
}

/// Why a name was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("invalid pool name {name:?}: {reason}")]
pub struct NameError {
    /// The name given.
    pub name: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

/// Why [`Pool::create`](crate::Pool::create) failed. Nothing is left behind.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum CreateError {
    /// The name is not a valid pool name.
    #[error(transparent)]
    InvalidName(#[from] NameError),
    /// Size 0, too small for the allocator's metadata, or beyond the 64 GiB limit.
    #[error("invalid pool size {size}: must be between {min} and {max} bytes")]
    InvalidSize {
        /// Requested.
        size: u64,
        /// Smallest allowed.
        min: u64,
        /// Largest allowed.
        max: u64,
    },
    /// A segment of that name exists already.
    #[error("shared-memory segment {segment} already exists")]
    AlreadyExists {
        /// The segment found.
        segment: String,
    },
    /// The shared-memory file system (`/dev/shm` or the pool's directory) cannot
    /// hold the pool.
    #[error(
        "not enough space for the pool in {dir}: {requested} bytes requested, {available} \
         available. Free space there, or make it larger (`mount -o remount,size=4G /dev/shm`; \
         Docker: `--shm-size=4g`, 64 MB by default; Kubernetes: an emptyDir volume with \
         `medium: Memory` and a `sizeLimit`), or put the pool in another directory \
         (PoolOptions::dir, $SHMVAL_DIR)"
    )]
    NoSpace {
        /// Bytes requested (both segments).
        requested: u64,
        /// Bytes available.
        available: u64,
        /// The directory.
        dir: String,
    },
    /// The fixed base address is taken in this process.
    #[error("cannot map the pool at {addr:#x} (+{len:#x}): taken by {conflict}")]
    AddressInUse {
        /// Requested base.
        addr: usize,
        /// Length.
        len: usize,
        /// The conflicting mapping (a `/proc/self/maps` line).
        conflict: String,
    },
    /// `PoolOptions::max_size` with a backend whose segments cannot grow (System
    /// V), or a maximum below the size.
    #[error("a pool of {size} bytes cannot grow to {max} bytes with the {backend} backend{}", if max < size { " (the maximum is below the size)" } else { "" })]
    GrowthUnsupported {
        /// The size asked for.
        size: u64,
        /// The maximum asked for.
        max: u64,
        /// The backend.
        backend: &'static str,
    },
    /// Not allowed to create in the pool's directory.
    #[error("permission denied creating {segment}")]
    PermissionDenied {
        /// The segment.
        segment: String,
    },
    /// Any other system error.
    #[error("{op} failed: {source}")]
    Os {
        /// The failing operation.
        op: &'static str,
        /// The system's error (`raw_os_error()` has the errno).
        #[source]
        source: std::io::Error,
    },
}

/// Why [`Pool::open`](crate::Pool::open) failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The name is not a valid pool name.
    #[error(transparent)]
    InvalidName(#[from] NameError),
    /// No pool of that name (and no waiting was asked for).
    #[error("no pool named {name:?}")]
    NotFound {
        /// The name.
        name: String,
    },
    /// The pool did not appear or become ready in time.
    #[error("pool {name:?} not ready after {waited:?} ({state})")]
    Timeout {
        /// The name.
        name: String,
        /// How long we waited.
        waited: Duration,
        /// What was last seen.
        state: &'static str,
    },
    /// Built by an incompatible version of shmval.
    #[error("pool {name:?} is incompatible: expected {expected}, found {found}")]
    Incompatible {
        /// The name.
        name: String,
        /// Ours.
        expected: LayoutId,
        /// Theirs.
        found: LayoutId,
    },
    /// The segments are not a pool or are damaged.
    #[error("pool {name:?} is corrupt: {what}")]
    Corrupt {
        /// The name.
        name: String,
        /// What is wrong.
        what: String,
    },
    /// The pool's main segment is sparse (copied or restored with holes) and the
    /// file system has no room to fill them: using it could SIGBUS, so it is not
    /// opened.
    #[error("pool {name}: {requested} bytes of holes to reserve, {available} available")]
    NoSpace {
        /// The name.
        name: String,
        /// Bytes that had to be reserved.
        requested: u64,
        /// Bytes available.
        available: u64,
    },
    /// Every entry of the pool's attach table belongs to a live process.
    #[error("pool {name} has {max} attached processes already (the attach table is full)")]
    TooManyProcesses {
        /// The name.
        name: String,
        /// Entries in the table.
        max: usize,
    },
    /// A repair (`shmval repair`, `Pool::repair`) has the pool to itself; try again
    /// when it is done.
    #[error("pool {name:?} is being repaired: try again when the repair is done")]
    Repairing {
        /// The name.
        name: String,
    },
    /// The creator died before the pool became ready.
    #[error("pool {name:?} was never finished: its creator (pid {pid}) died while creating it")]
    CreatorDied {
        /// The name.
        name: String,
        /// The creator's pid.
        pid: u32,
    },
    /// The segment belongs to another user (see `PoolOptions::allow_foreign_owner`).
    #[error("pool {name:?} belongs to uid {owner}, not to us (uid {ours})")]
    ForeignOwner {
        /// The name.
        name: String,
        /// The owning uid.
        owner: u32,
        /// Our effective uid.
        ours: u32,
    },
    /// The operating system refused access.
    #[error("permission denied opening {segment}")]
    PermissionDenied {
        /// The segment.
        segment: String,
    },
    /// The recorded fixed base address is taken in this process.
    #[error("cannot map pool {name:?} at its fixed base {addr:#x}: taken by {conflict}")]
    AddressInUse {
        /// The name.
        name: String,
        /// The base.
        addr: usize,
        /// The conflicting mapping.
        conflict: String,
    },
    /// Any other system error.
    #[error("{op} failed: {source}")]
    Os {
        /// The failing operation.
        op: &'static str,
        /// The system's error (`raw_os_error()` has the errno).
        #[source]
        source: std::io::Error,
    },
}

/// Why [`Pool::open_or_create`](crate::Pool::open_or_create) failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum OpenOrCreateError {
    /// Opening failed.
    #[error(transparent)]
    Open(#[from] OpenError),
    /// Creating failed.
    #[error(transparent)]
    Create(#[from] CreateError),
    /// The pool exists but a process died attached and a check after the recovery
    /// finds it damaged (`PoolOptions::recreate_unfit` replaces such a pool).
    #[error("pool {name:?} is not consistent after a crash: {}", problems.join("; "))]
    Inconsistent {
        /// The name.
        name: String,
        /// What `Pool::check` found.
        problems: Vec<String>,
    },
}

impl OpenOrCreateError {
    /// A pool that exists but cannot be reattached to as it is: another layout
    /// version, corrupt, never finished, or damaged by a crash.
    pub fn is_unfit(&self) -> bool {
        matches!(
            self,
            OpenOrCreateError::Inconsistent { .. }
                | OpenOrCreateError::Open(
                    OpenError::Incompatible { .. }
                        | OpenError::Corrupt { .. }
                        | OpenError::CreatorDied { .. }
                )
        )
    }
}

/// Why [`Pool::destroy`](crate::Pool::destroy) failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum DestroyError {
    /// The name is not a valid pool name.
    #[error(transparent)]
    InvalidName(#[from] NameError),
    /// Neither segment exists.
    #[error("no pool named {name:?}")]
    NotFound {
        /// The name.
        name: String,
    },
    /// Any other system error.
    #[error("{op} failed: {source}")]
    Os {
        /// The failing operation.
        op: &'static str,
        /// The system's error (`raw_os_error()` has the errno).
        #[source]
        source: std::io::Error,
    },
}
