//! Synchronisation primitives that live in shared memory.

mod eventcount;

pub use eventcount::EventCount;
#[cfg(feature = "failpoints")]
pub use eventcount::WaitResult;
