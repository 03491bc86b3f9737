//! The atomics facade: `std` normally, `loom` under `cfg(loom)` so the lock-free
//! stack and the robust lock can be model-checked exhaustively.

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicU32, AtomicU64, Ordering};
#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
