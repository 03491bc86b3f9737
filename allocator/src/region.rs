//! The raw memory region a heap manages.

use std::ptr::NonNull;

/// A `(base, len)` view of memory managed by a [`Heap`](crate::Heap).
///
/// A `Region` is only an address range; whoever maps the memory keeps it alive.
#[derive(Debug, Clone, Copy)]
pub struct Region {
    base: NonNull<u8>,
    len: usize,
}

// SAFETY: a Region is an address range; all access through it goes through atomics
// or raw reads whose synchronisation the heap documents.
unsafe impl Send for Region {}
// SAFETY: as above.
unsafe impl Sync for Region {}

impl Region {
    /// Describes `len` bytes at `base`.
    ///
    /// # Safety
    /// `base..base + len` must be readable and writable memory, aligned to 64 bytes,
    /// that stays mapped while any `Heap` or `Cache` built over this region is used.
    /// Other processes may map and modify the same memory concurrently (that is the
    /// point), but nothing may access it except through a `Heap` or through blocks
    /// the heap handed out.
    pub unsafe fn new(base: NonNull<u8>, len: usize) -> Self {
        debug_assert_eq!(base.as_ptr() as usize % 64, 0);
        Region { base, len }
    }

    /// Start of the region in this process.
    pub fn base(&self) -> NonNull<u8> {
        self.base
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the region is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// A zeroed, 64-byte aligned heap buffer to run a heap over without shared memory
/// (unit tests, property tests, Miri).
#[derive(Debug)]
pub struct OwnedRegion {
    ptr: NonNull<u8>,
    layout: std::alloc::Layout,
}

impl OwnedRegion {
    /// Allocates `len` zeroed bytes (rounded up to 4 KiB).
    ///
    /// # Panics
    /// If `len` is zero or the system allocator fails.
    pub fn new(len: usize) -> Self {
        assert!(len > 0, "OwnedRegion of zero bytes");
        let layout = std::alloc::Layout::from_size_align(len.next_multiple_of(4096), 4096)
            .expect("OwnedRegion size overflows");
        // SAFETY: the layout has a non-zero size.
        let raw = unsafe { std::alloc::alloc_zeroed(layout) };
        let ptr = NonNull::new(raw).unwrap_or_else(|| std::alloc::handle_alloc_error(layout));
        OwnedRegion { ptr, layout }
    }

    /// The region covering the whole buffer.
    pub fn region(&mut self) -> Region {
        // SAFETY: the buffer is ours, 4096-aligned, and outlives the borrow's user
        // only if the caller keeps `self` alive, as `Heap::format` requires.
        unsafe { Region::new(self.ptr, self.layout.size()) }
    }
}

impl Drop for OwnedRegion {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout.
        unsafe { std::alloc::dealloc(self.ptr.as_ptr(), self.layout) }
    }
}

// SAFETY: plain owned memory.
unsafe impl Send for OwnedRegion {}
