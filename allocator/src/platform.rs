//! What the allocator needs from the operating system, supplied by the embedder.

use crate::sync::AtomicU32;
use std::time::Duration;

/// Process identity, liveness and futex-style waiting.
///
/// The allocator itself makes no system calls; `shmval` implements this trait with
/// `gettid`, `/proc/PID/stat` start times and shared (non-private) futexes.
///
/// # Safety
/// Implementations must uphold:
/// * [`thread_id`](Platform::thread_id) is non-zero, below `1 << 30`, and differs
///   between threads that are alive at the same time (across every process that
///   shares a region);
/// * [`process_token`](Platform::process_token) is non-zero and the same for all
///   threads of one process;
/// * [`is_alive`](Platform::is_alive) returns `false` only when the process that
///   produced the token can never run again (a false "dead" would let two processes
///   own one lock or one cache slot).
pub unsafe trait Platform: 'static {
    /// A non-zero id of the calling thread, unique among live threads.
    fn thread_id() -> u32;
    /// A non-zero token naming the calling process (and its incarnation).
    fn process_token() -> u64;
    /// Whether the process named by `token` may still be running.
    fn is_alive(token: u64) -> bool;
    /// Whether the thread `tid` (a value returned by [`thread_id`](Platform::thread_id)
    /// in some process) may still be running. Asked only when a lock word names a
    /// holder that never published its process token.
    fn thread_alive(tid: u32) -> bool;
    /// Block while `*word == expected`, for at most `timeout`. Spurious returns are fine.
    fn wait(word: &AtomicU32, expected: u32, timeout: Duration);
    /// Wake up to `n` threads blocked in [`wait`](Platform::wait) on `word`.
    fn wake(word: &AtomicU32, n: u32);
}

/// A portable platform for a region used by the threads of one process (tests, Miri).
///
/// The one process has token 1; any other token names no process and is dead.
/// Waiting sleeps briefly instead of using a futex.
#[cfg(not(loom))]
#[derive(Debug, Clone, Copy, Default)]
pub struct StdPlatform;

#[cfg(not(loom))]
static NEXT_TID: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(1);

// SAFETY: thread ids come from a process-wide counter (unique, non-zero, < 2^30 for
// any realistic number of threads); the only token this platform hands out is 1,
// which is always alive; a thread id never handed out cannot name a live thread.
#[cfg(not(loom))]
unsafe impl Platform for StdPlatform {
    fn thread_id() -> u32 {
        use std::sync::atomic::Ordering;
        thread_local!(static ID: u32 = NEXT_TID.fetch_add(1, Ordering::Relaxed) & ((1 << 30) - 1));
        ID.with(|id| *id)
    }
    fn process_token() -> u64 {
        1
    }
    fn is_alive(token: u64) -> bool {
        token == 1
    }
    fn thread_alive(tid: u32) -> bool {
        tid != 0 && tid < NEXT_TID.load(std::sync::atomic::Ordering::Relaxed)
    }
    fn wait(word: &AtomicU32, expected: u32, timeout: Duration) {
        if word.load(crate::sync::Ordering::Relaxed) == expected {
            std::thread::sleep(timeout.min(Duration::from_micros(50)));
        }
    }
    fn wake(_word: &AtomicU32, _n: u32) {}
}
