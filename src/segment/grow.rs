//! How a pool's main segment grows while processes are attached: the allocator's
//! [`Grow`] over a file (POSIX shared memory, a file in a directory, a memory file).
//!
//! Every process reserves the pool's maximum of address space when it maps the
//! main segment (`Mapping::reserved`), so offsets and the base never change; the
//! one growing (the allocator's large-lock holder) extends the file with its
//! storage (`posix_fallocate`: a full file system is `GrowError::NoSpace`, never a
//! SIGBUS later) and maps it; the others map the new part on first meeting an
//! offset in it (`Heap::reach`), after checking that the file really holds it.

use crate::sys;
use nix::errno::Errno;
use shmval_alloc::{Grow, GrowError, Growth};
use std::os::fd::OwnedFd;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;

/// The grower of one process's mapping of a main segment.
pub(crate) struct FileGrow {
    /// The main segment (a descriptor of its own).
    fd: OwnedFd,
    /// Start of the reservation.
    base: NonNull<u8>,
    /// Bytes reserved.
    max: u64,
    /// Bytes mapped in this process; the lock orders the `mmap` calls of its
    /// threads.
    mapped: Mutex<u64>,
    /// The boot record's size of the main segment: what its file holds at least
    /// (stored after each extension). Points into the boot mapping of the same
    /// `Segments`, which outlives every use of the heap holding this grower.
    main_size: NonNull<AtomicU64>,
}

// SAFETY: the pointers name shared mappings that stay mapped while the heap (and
// so this grower) is in use; every access is a system call on the descriptor, an
// atomic, or under the mutex.
unsafe impl Send for FileGrow {}
// SAFETY: as above.
unsafe impl Sync for FileGrow {}

impl FileGrow {
    /// The grower of the reservation at `base` (`max` bytes, the first `mapped` of
    /// them mapped), for the file `fd`.
    pub(crate) fn new(
        fd: OwnedFd,
        base: NonNull<u8>,
        max: u64,
        mapped: u64,
        main_size: &AtomicU64,
    ) -> Self {
        FileGrow {
            fd,
            base,
            max,
            mapped: Mutex::new(mapped),
            main_size: NonNull::from(main_size),
        }
    }

    /// The allocator's [`Growth`] for a pool that grows (`fd`, its main file's
    /// descriptor, given), as [`FileGrow::new`] makes its grower.
    pub(crate) fn growth(
        fd: Option<OwnedFd>,
        base: NonNull<u8>,
        max: u64,
        mapped: u64,
        main_size: &AtomicU64,
    ) -> Option<Growth> {
        fd.map(|fd| Growth {
            max,
            grow: Box::new(FileGrow::new(fd, base, max, mapped, main_size)),
        })
    }

    fn main_size(&self) -> &AtomicU64 {
        // SAFETY: see the field.
        unsafe { self.main_size.as_ref() }
    }
}

impl Grow for FileGrow {
    fn extend(&self, len: u64) -> Result<(), GrowError> {
        if len > self.max {
            return Err(GrowError::Short);
        }
        // From what the last extension made sure of: a grower killed inside
        // `posix_fallocate` may have left the file longer with holes past it.
        let from = self.main_size().load(Relaxed).min(len);
        loop {
            match sys::reserve_range(&self.fd, from, len) {
                Ok(()) => break,
                Err(Errno::EINTR) => continue,
                Err(Errno::ENOSPC | Errno::EFBIG | Errno::ENOMEM | Errno::EDQUOT) => {
                    return Err(GrowError::NoSpace)
                }
                Err(_) => return Err(GrowError::Os("posix_fallocate")),
            }
        }
        self.main_size().fetch_max(len, Relaxed);
        Ok(())
    }

    fn map(&self, len: u64) -> Result<(), GrowError> {
        let mut mapped = self.mapped.lock().unwrap_or_else(|e| e.into_inner());
        if len <= *mapped {
            return Ok(());
        }
        if len > self.max {
            return Err(GrowError::Short);
        }
        // A file shorter than the heap says would fault (SIGBUS) where it ends.
        match sys::file_info(&self.fd) {
            Ok(i) if i.size >= len => {}
            Ok(_) => return Err(GrowError::Short),
            Err(_) => return Err(GrowError::Os("fstat")),
        }
        sys::map_over(&self.fd, self.base, *mapped as usize, len as usize)
            .map_err(|_| GrowError::Os("mmap"))?;
        *mapped = len;
        Ok(())
    }
}
