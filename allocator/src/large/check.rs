//! Reading the large heap whole, under its lock: the allocated blocks (for the
//! pool check) and the validation of the tiling, bins and counters.

use super::{bin_of, Large};
use crate::error::AllocError;
use crate::heap::Heap;
use crate::layout::*;
use crate::platform::Platform;
use std::sync::atomic::Ordering::Relaxed;

impl<P: Platform> Heap<P> {
    /// Validates the large-block heap under its lock, reading only: the blocks
    /// tile the arena exactly (each header in bounds, each `prev_size` right, no two
    /// free blocks side by side), every slab says `"SLB1"` and a class that exists,
    /// every bin lists free blocks of its size range once, and the counters agree
    /// with the tiling. Each problem as (offset, what); empty when all is well.
    ///
    /// # Errors
    /// [`AllocError::LockTimeout`]: the lock stayed held by a live process.
    pub fn verify_large(&self) -> Result<Vec<(u64, String)>, AllocError> {
        let g = self.large()?;
        Ok(g.verify())
    }
}

impl<P: Platform> Heap<P> {
    /// The allocated blocks of the large heap, under its lock: `(block, size,
    /// slab class)` — the class for a slab, `None` for a block handed out whole
    /// (its payload starts at `block + 16`). `None` when the tiling is malformed.
    pub(crate) fn large_blocks(&self) -> Option<Vec<(u64, u64, Option<usize>)>> {
        let g = self.large().ok()?;
        let mut out = Vec::new();
        let mut b = self.arena_start;
        while b < self.end() {
            let v = g.valid(b).ok()?;
            let size = v & !B_FLAGS;
            if size == 0 {
                return None;
            }
            if v & B_ALLOC != 0 {
                let class = (v & B_SLAB != 0).then(|| {
                    let meta = g.get(b + 16).unwrap_or(0);
                    (meta >> 32) as usize
                });
                if class.is_some_and(|c| c >= crate::class::NUM_CLASSES) {
                    return None;
                }
                out.push((b, size, class));
            }
            b += size;
        }
        Some(out)
    }
}

impl<P: Platform> Large<'_, P> {
    fn verify(&self) -> Vec<(u64, String)> {
        let h = self.heap.header();
        let (start, end) = (self.heap.arena_start, self.heap.end());
        let mut out = Vec::new();
        let (mut used, mut count, mut free_blocks) = (0u64, 0u64, 0u64);
        let (mut b, mut prev, mut prev_free) = (start, 0u64, false);
        while b < end {
            let v = match self.valid(b) {
                Ok(v) => v,
                Err(_) => {
                    out.push((
                        b,
                        "block header out of bounds or malformed: the tiling stops here".into(),
                    ));
                    return out;
                }
            };
            let size = v & !B_FLAGS;
            if b > start && self.get(b + 8).ok() != Some(prev) {
                out.push((b, format!("previous-size field does not say {prev}")));
            }
            if v & B_ALLOC == 0 {
                free_blocks += 1;
                if prev_free {
                    out.push((b, "two free blocks side by side (not coalesced)".into()));
                }
            } else {
                used += size;
                if v & B_SLAB != 0 {
                    let meta = self.get(b + 16).unwrap_or(0);
                    let class = (meta >> 32) as usize;
                    if meta as u32 != SLAB_MAGIC || class >= crate::class::NUM_CLASSES {
                        out.push((
                            b,
                            format!("slab header {meta:#x} (want \"SLB1\" and a class)"),
                        ));
                    }
                } else {
                    count += 1;
                }
            }
            prev_free = v & B_ALLOC == 0;
            prev = size;
            b += size;
        }
        if b != end {
            out.push((
                b,
                format!("the tiling ends at {b:#x}, not at the arena's end {end:#x}"),
            ));
        } else if h.last_size.load(Relaxed) != prev {
            out.push((
                0,
                format!(
                    "last_size says {}, the last block is {prev} bytes",
                    h.last_size.load(Relaxed)
                ),
            ));
        }
        if h.large_used.load(Relaxed) != used {
            out.push((
                0,
                format!(
                    "large_used says {}, the blocks add up to {used}",
                    h.large_used.load(Relaxed)
                ),
            ));
        }
        if h.large_count.load(Relaxed) != count {
            out.push((
                0,
                format!(
                    "large_count says {}, {count} allocated large blocks",
                    h.large_count.load(Relaxed)
                ),
            ));
        }
        // The bins: each lists free blocks of its range, once; all free blocks listed.
        let mut listed = 0u64;
        for bin in 0..NBINS {
            let mut f = h.bins[bin].load(Relaxed);
            let mut steps = 0u64;
            while f != 0 {
                steps += 1;
                if steps > free_blocks {
                    out.push((
                        f,
                        format!("bin {bin} lists more blocks than are free (a cycle?)"),
                    ));
                    break;
                }
                match self.valid(f) {
                    Ok(v) if v & B_ALLOC == 0 && bin_of(v & !B_FLAGS) == bin => {}
                    Ok(v) => {
                        out.push((
                            f,
                            format!(
                                "bin {bin} lists a block of {} bytes, flags {}",
                                v & !B_FLAGS,
                                v & B_FLAGS
                            ),
                        ));
                        break;
                    }
                    Err(_) => {
                        out.push((f, format!("bin {bin} lists a malformed block")));
                        break;
                    }
                }
                listed += 1;
                f = self.get(f + 16).unwrap_or(0);
            }
        }
        if listed != free_blocks && out.is_empty() {
            out.push((
                0,
                format!("{free_blocks} free blocks, {listed} in the bins"),
            ));
        }
        out
    }
}
