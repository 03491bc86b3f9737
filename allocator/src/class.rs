//! Size classes of the small-block allocator.

/// The largest request (after rounding to its alignment) served from slabs.
pub const MAX_SMALL: usize = 4096;

/// Block sizes of the small classes: 16-byte steps up to 128, then four classes per
/// doubling (at most 25% internal waste above 128 bytes).
pub const CLASS_SIZES: [u32; NUM_CLASSES] = [
    16, 32, 48, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384, 448, 512, 640, 768, 896, 1024,
    1280, 1536, 1792, 2048, 2560, 3072, 3584, 4096,
];

/// Number of small size classes.
pub const NUM_CLASSES: usize = 28;

/// `LOOKUP[(s - 1) / 16]` is the smallest class holding `s` bytes (`1 <= s <= 4096`).
static LOOKUP: [u8; MAX_SMALL / 16] = {
    let mut t = [0u8; MAX_SMALL / 16];
    let mut i = 0;
    let mut c = 0;
    while i < t.len() {
        let s = ((i + 1) * 16) as u32;
        while CLASS_SIZES[c] < s {
            c += 1;
        }
        t[i] = c as u8;
        i += 1;
    }
    t
};

/// The class serving `size` bytes at alignment `align` (a power of two), or `None`
/// when the request is for a large block.
///
/// A block of class `c` at index `k` of its slab starts at `slab + 64 + k * size_c`,
/// so it is aligned to `align` exactly when `size_c` is a multiple of `align`; for
/// alignments above 16 the first such class is chosen.
///
/// # Examples
/// ```
/// use shmval_alloc::{class_for, CLASS_SIZES};
/// assert_eq!(CLASS_SIZES[class_for(1, 1).unwrap()], 16);
/// assert_eq!(CLASS_SIZES[class_for(100, 8).unwrap()], 112);
/// assert_eq!(CLASS_SIZES[class_for(80, 64).unwrap()], 128);
/// assert_eq!(class_for(5000, 8), None);
/// ```
#[inline]
pub fn class_for(size: usize, align: usize) -> Option<usize> {
    debug_assert!(align.is_power_of_two());
    let s = size.max(1);
    if align <= 16 {
        if s > MAX_SMALL {
            return None;
        }
        return Some(LOOKUP[(s - 1) / 16] as usize);
    }
    class_for_aligned(s, align)
}

#[cold]
fn class_for_aligned(size: usize, align: usize) -> Option<usize> {
    if align > 64 {
        return None;
    }
    let s = size.checked_next_multiple_of(align)?;
    if s > MAX_SMALL {
        return None;
    }
    let mut c = LOOKUP[(s - 1) / 16] as usize;
    while c < NUM_CLASSES && CLASS_SIZES[c] as usize % align != 0 {
        c += 1;
    }
    (c < NUM_CLASSES).then_some(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_size_and_alignment_gets_a_fitting_aligned_class() {
        for align in [1usize, 2, 4, 8, 16, 32, 64] {
            for size in 0..=MAX_SMALL {
                match class_for(size, align) {
                    Some(c) => {
                        let cs = CLASS_SIZES[c] as usize;
                        assert!(cs >= size.max(1), "size {size} align {align} -> {cs}");
                        assert_eq!(cs % align.clamp(1, 16), 0);
                        if align > 16 {
                            assert_eq!(cs % align, 0, "size {size} align {align}");
                        }
                        if c > 0 && align <= 16 {
                            assert!((CLASS_SIZES[c - 1] as usize) < size.max(1));
                        }
                    }
                    None => assert!(size.next_multiple_of(align) > MAX_SMALL),
                }
            }
        }
    }
}
