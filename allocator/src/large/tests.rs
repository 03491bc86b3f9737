//! Unit tests of the large heap.

use super::bin_of;
use crate::{Heap, OwnedRegion, StdPlatform};
use std::alloc::Layout;

#[test]
fn verify_finds_a_sound_heap_sound_and_each_planted_fault() {
    let mut region = OwnedRegion::new(4 << 20);
    // SAFETY: the buffer outlives the heap and nothing else uses it.
    let heap = unsafe { Heap::<StdPlatform>::format(region.region()) }.unwrap();
    let cache = heap.cache().unwrap();
    let big = Layout::from_size_align(100_000, 64).unwrap();
    let a = cache.alloc(big).unwrap();
    let b = cache.alloc(big).unwrap();
    let _small = cache
        .alloc(Layout::from_size_align(48, 8).unwrap())
        .unwrap(); // a slab
                   // SAFETY: allocated above with `big`, freed once: a free block between two.
    unsafe { cache.free(a, big) }.unwrap();
    assert_eq!(heap.verify_large().unwrap(), vec![], "a sound heap");
    let hdr = b.get() - crate::layout::BLOCK_HDR;
    let g = heap.large().unwrap();
    let prev = g.get(hdr + 8).unwrap();
    g.set(hdr + 8, prev + 16);
    drop(g);
    let p = heap.verify_large().unwrap();
    assert!(
        p.iter()
            .any(|(o, w)| *o == hdr && w.contains("previous-size")),
        "{p:?}"
    );
    let g = heap.large().unwrap();
    g.set(hdr + 8, prev);
    let used = heap
        .header()
        .large_used
        .load(std::sync::atomic::Ordering::Relaxed);
    heap.header()
        .large_used
        .store(used + 16, std::sync::atomic::Ordering::Relaxed);
    drop(g);
    let p = heap.verify_large().unwrap();
    assert!(p.iter().any(|(_, w)| w.contains("large_used")), "{p:?}");
    heap.header()
        .large_used
        .store(used, std::sync::atomic::Ordering::Relaxed);
    let g = heap.large().unwrap();
    let size = g.get(hdr).unwrap();
    g.set(hdr, 8); // a size smaller than any block: the tiling stops
    drop(g);
    let p = heap.verify_large().unwrap();
    assert!(
        p.iter()
            .any(|(o, w)| *o == hdr && w.contains("tiling stops")),
        "{p:?}"
    );
    let g = heap.large().unwrap();
    g.set(hdr, size);
    drop(g);
    assert_eq!(heap.verify_large().unwrap(), vec![], "sound again");
    // A bin head at the end of the address space: reported, no overflow (a panic
    // in debug builds before `valid` checked its addition).
    let bins = &heap.header().bins;
    let head = (0..bins.len())
        .find(|&i| bins[i].load(std::sync::atomic::Ordering::Relaxed) != 0)
        .unwrap();
    let was = bins[head].swap(!15, std::sync::atomic::Ordering::Relaxed);
    let p = heap.verify_large().unwrap();
    assert!(p.iter().any(|(_, w)| w.contains("malformed")), "{p:?}");
    bins[head].store(was, std::sync::atomic::Ordering::Relaxed);
    assert_eq!(heap.verify_large().unwrap(), vec![]);
}

/// A slab cut from a free block with front padding and nothing left behind: the
/// block after it must learn its new neighbour's size (it kept the old whole
/// block's, and `verify` found "previous-size" after a later chaos run).
#[test]
fn a_slab_that_uses_the_rest_of_a_padded_block_fixes_its_neighbours_previous_size() {
    use crate::layout::{MIN_BLOCK, SLAB_SIZE};
    let mut region = OwnedRegion::new(4 << 20);
    // SAFETY: the buffer outlives the heap and nothing else uses it.
    let heap = unsafe { Heap::<StdPlatform>::format(region.region()) }.unwrap();
    let slab = SLAB_SIZE as u64;
    let b0 = heap.arena_start;
    // A free block at `q` (not slab aligned) of exactly front + slab bytes, between
    // two allocated blocks. A layout of n bytes takes a block of n + 16.
    let block = |n: u64| Layout::from_size_align((n - 16) as usize, 16).unwrap();
    let x = 4096;
    let q = b0 + x;
    let mut front = q.next_multiple_of(slab) - q;
    if front < MIN_BLOCK {
        front += slab;
    }
    let a = heap.large_alloc(block(x)).unwrap();
    assert_eq!(a.get(), b0 + 16);
    let f = heap.large_alloc(block(front + slab)).unwrap();
    assert_eq!(f.get(), q + 16);
    let c = heap.large_alloc(block(4096)).unwrap();
    assert_eq!(c.get(), q + front + slab + 16);
    heap.large_free(f, block(front + slab)).unwrap();
    assert_eq!(heap.verify_large().unwrap(), vec![], "before the slab");
    let s = heap.large_alloc_slab(0, None).unwrap();
    assert_eq!(s, q + front, "the slab came from the padded block");
    assert_eq!(heap.verify_large().unwrap(), vec![], "after the slab");
    heap.large_free_slab(s, 0).unwrap();
    heap.large_free(c, block(4096)).unwrap();
    heap.large_free(a, block(x)).unwrap();
    assert_eq!(heap.verify_large().unwrap(), vec![], "all freed again");
}
use crate::layout::NBINS;

#[test]
fn bins_are_monotonic_and_in_range() {
    let mut last = 0;
    for s in (32..1u64 << 36)
        .step_by(1 << 20)
        .chain((32..1 << 16).step_by(16))
    {
        let b = bin_of(s);
        assert!(b < NBINS);
        if s < 1 << 16 {
            assert!(b >= last);
            last = b;
        }
    }
}

/// A slab is exactly `SLAB_SIZE`: a free block 16 bytes longer (a tail too small
/// to be a block) does not fit one, where it once did and the slab absorbed the
/// tail (its bytes then never given back, found by the model test).
#[test]
fn a_slab_takes_no_tail_too_small_to_be_a_block() {
    use crate::layout::{MIN_BLOCK, SLAB_SIZE};
    let slab = SLAB_SIZE as u64;
    let fit = |b, size| super::Large::<StdPlatform>::fit(b, size, slab, slab, true);
    assert_eq!(fit(slab, slab), Some(0), "exactly a slab");
    assert_eq!(fit(slab, slab + 16), None, "a 16-byte tail");
    assert_eq!(
        fit(slab, slab + MIN_BLOCK),
        Some(0),
        "a tail that is a block"
    );
    assert_eq!(fit(slab - 48, 2 * slab), Some(48), "padding before it");
    // An ordinary block may take up to 16 bytes more than it asked for.
    let any = super::Large::<StdPlatform>::fit(slab, 80, 64, 16, false);
    assert_eq!(any, Some(0));
}
