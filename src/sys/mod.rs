//! Every system call shmval makes, behind one internal API.
//!
//! Only Linux is implemented (POSIX shm on tmpfs, shared futexes, `/proc` for process
//! start times); errno is mapped to typed errors once, at this boundary's callers.

#[cfg(target_os = "linux")]
mod linux;
#[cfg(target_os = "linux")]
pub(crate) use linux::*;

#[cfg(not(target_os = "linux"))]
compile_error!("shmval currently supports Linux only (futex, /proc, MAP_FIXED_NOREPLACE)");
