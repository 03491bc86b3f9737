//! What the allocator needs from the operating system, supplied by the embedder.

use crate::sync::AtomicU32;
use std::time::Duration;

/// Bits of a [`holder id`](Platform::holder_id) that name the thread within its
/// process; the bits above name the process (its [`process
/// token`](Platform::process_token)).
pub const THREAD_BITS: u32 = 22;
/// The thread part of a holder id.
pub const THREAD_MASK: u64 = (1 << THREAD_BITS) - 1;

/// Process identity, liveness and futex-style waiting.
///
/// The allocator itself makes no system calls; `shmval` implements this trait with
/// random process tokens, liveness proven by open-file-description locks on the
/// pool's boot segment (valid across PID namespaces) and shared futexes.
///
/// # Safety
/// Implementations must uphold:
/// * [`thread_id`](Platform::thread_id) is non-zero, below `1 << THREAD_BITS`, and
///   differs between the live threads of one process;
/// * [`process_token`](Platform::process_token) is the same for all threads of one
///   process, has its low [`THREAD_BITS`] bits zero and its other bits non-zero, and
///   differs between processes that share a region — whatever PID namespace they
///   live in (so `process_token() | thread_id()` names one live thread among all of
///   them);
/// * [`is_alive`](Platform::is_alive) returns `false` only when the process that
///   produced the token is proven unable to run again, or to use the region again (a
///   false "dead" would let two processes own one lock or one cache slot); when in
///   doubt it says alive.
pub unsafe trait Platform: 'static {
    /// A non-zero id of the calling thread, unique among the live threads of its
    /// process, below `1 << THREAD_BITS`.
    fn thread_id() -> u32;
    /// A token naming the calling process (and its incarnation): non-zero above the
    /// low [`THREAD_BITS`] bits, which are zero.
    fn process_token() -> u64;
    /// Whether the process named by `token` (the bits above [`THREAD_BITS`]; the
    /// thread bits are ignored, so a holder id may be passed) may still be running.
    fn is_alive(token: u64) -> bool;
    /// The calling thread's id among every thread of every process sharing the region:
    /// its process token with its thread id in the low bits.
    #[inline]
    fn holder_id() -> u64 {
        Self::process_token() | (u64::from(Self::thread_id()) & THREAD_MASK)
    }
    /// Block while `*word == expected`, for at most `timeout`. Spurious returns are fine.
    fn wait(word: &AtomicU32, expected: u32, timeout: Duration);
    /// Wake up to `n` threads blocked in [`wait`](Platform::wait) on `word`.
    fn wake(word: &AtomicU32, n: u32);
}

/// A portable platform for a region used by the threads of one process (tests, Miri).
///
/// The one process has token `1 << THREAD_BITS`; any other token names no process
/// and is dead.
/// Waiting sleeps briefly instead of using a futex.
#[cfg(not(loom))]
#[derive(Debug, Clone, Copy, Default)]
pub struct StdPlatform;

#[cfg(not(loom))]
static NEXT_TID: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(1);

// SAFETY: thread ids come from a process-wide counter (unique, non-zero, below
// 2^THREAD_BITS for any realistic number of threads); the only token this platform
// hands out is 1 << THREAD_BITS, which is always alive.
#[cfg(not(loom))]
unsafe impl Platform for StdPlatform {
    fn thread_id() -> u32 {
        use std::sync::atomic::Ordering;
        thread_local!(static ID: u32 = NEXT_TID.fetch_add(1, Ordering::Relaxed) & THREAD_MASK as u32);
        ID.with(|id| *id)
    }
    fn process_token() -> u64 {
        1 << THREAD_BITS
    }
    fn is_alive(token: u64) -> bool {
        token >> THREAD_BITS == 1
    }
    fn wait(word: &AtomicU32, expected: u32, timeout: Duration) {
        if word.load(crate::sync::Ordering::Relaxed) == expected {
            std::thread::sleep(timeout.min(Duration::from_micros(50)));
        }
    }
    fn wake(_word: &AtomicU32, _n: u32) {}
}
