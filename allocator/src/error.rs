//! Typed errors of the allocator.

use thiserror::Error;

/// Why a region could not be formatted or attached.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum FormatError {
    /// The region is smaller than [`MIN_REGION`](crate::MIN_REGION) or larger than
    /// the 64 GiB the offset encoding allows.
    #[error("region of {len} bytes is outside the supported range {min}..={max}")]
    BadSize {
        /// Length given.
        len: u64,
        /// Smallest supported.
        min: u64,
        /// Largest supported.
        max: u64,
    },
    /// The region base is not aligned to 64 bytes.
    #[error("region base {0:#x} is not 64-byte aligned")]
    Misaligned(usize),
    /// The region holds no formatted heap (magic missing).
    #[error("region is not a formatted heap (magic {0:#018x})")]
    NotFormatted(u64),
    /// The region was formatted by an incompatible build.
    #[error("incompatible heap layout: expected version {expected_version} / fingerprint {expected:#x}, found version {found_version} / fingerprint {found:#x}")]
    Incompatible {
        /// Our version.
        expected_version: u32,
        /// Their version.
        found_version: u32,
        /// Our fingerprint.
        expected: u64,
        /// Their fingerprint.
        found: u64,
    },
    /// A header field is impossible for this region.
    #[error("corrupt heap header: {0}")]
    Corrupt(&'static str),
}

/// Why an allocation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum AllocError {
    /// No free block is large enough.
    #[error("pool exhausted: no free block for {size} bytes (align {align})")]
    Exhausted {
        /// Requested size.
        size: usize,
        /// Requested alignment.
        align: usize,
    },
    /// Alignments above 64 bytes are not supported.
    #[error("alignment {0} is above the supported 64 bytes")]
    Unsupported(usize),
    /// An allocator lock stayed held by a live-looking process beyond
    /// [`LOCK_PATIENCE`](crate::LOCK_PATIENCE): stopped, hung, or a corrupt lock word.
    #[error("allocator lock held for too long by another process (stopped, hung or corrupt)")]
    LockTimeout,
    /// The allocator's shared structures are corrupt; nothing was allocated.
    #[error("heap corrupt: {0}")]
    Corrupt(&'static str),
    /// A growable heap had no free block for the request and could not grow to
    /// `to` bytes (its backing store refused: a full file system, most often);
    /// nothing was allocated and the heap is as it was.
    #[error("pool could not grow to {to} bytes: {why}")]
    GrowFailed {
        /// The region length growth asked for.
        to: u64,
        /// What the backing store said.
        why: GrowError,
    },
}

/// Why a region could not grow (what a [`Grow`](crate::Grow) reports).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum GrowError {
    /// The file system holding the backing store is full (or over a quota).
    #[error("no space left on the file system that holds it")]
    NoSpace,
    /// The backing store is shorter than the heap says it is (someone truncated
    /// it, or the heap's header is corrupt): mapping it would fault.
    #[error("the backing store is shorter than the heap")]
    Short,
    /// Another system error; the name of the failing call.
    #[error("{0} failed")]
    Os(&'static str),
}

/// Why a free was refused (nothing was changed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum FreeError {
    /// The offset is not a block of the given layout handed out by this heap.
    #[error("offset {offset:#x} is not an allocated block of {size} bytes")]
    Invalid {
        /// Offset given.
        offset: u64,
        /// Size given.
        size: usize,
    },
    /// See [`AllocError::LockTimeout`]; nothing was freed.
    #[error("allocator lock held for too long by another process (stopped, hung or corrupt)")]
    LockTimeout,
    /// The allocator's shared structures are corrupt.
    #[error("heap corrupt: {0}")]
    Corrupt(&'static str),
}
