//! Model-based property test of the allocator: random allocate/free sequences over
//! three paths (two cache slots and the shared slot) against a model of live blocks.

use proptest::prelude::*;
use shmval_alloc::{class_for, AllocError, Heap, Offset, OwnedRegion, StdPlatform, CLASS_SIZES};
use std::alloc::Layout;
use std::collections::BTreeMap;

#[derive(Debug, Clone)]
enum Op {
    Alloc {
        path: u8,
        size: usize,
        align_log2: u32,
    },
    Free {
        path: u8,
        pick: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..3u8, prop_oneof![1..300usize, 1..4200usize, 4000..40_000usize], 0..7u32)
            .prop_map(|(path, size, align_log2)| Op::Alloc { path, size, align_log2 }),
        2 => (0..3u8, any::<usize>()).prop_map(|(path, pick)| Op::Free { path, pick }),
    ]
}

struct Live {
    layout: Layout,
    fill: u8,
}

fn rounded(layout: Layout) -> Option<u64> {
    class_for(layout.size(), layout.align()).map(|c| CLASS_SIZES[c] as u64)
}

fn check_fill(heap: &Heap<StdPlatform>, off: Offset, live: &Live) {
    let p = heap
        .resolve(off, live.layout.size())
        .expect("live block resolves");
    // SAFETY: the block is live and owned by this test; nothing else writes it.
    let bytes = unsafe { std::slice::from_raw_parts(p.as_ptr(), live.layout.size()) };
    assert!(
        bytes.iter().all(|&b| b == live.fill),
        "block {off:?} was overwritten"
    );
}

fn run(ops: &[Op], region_len: usize) {
    let mut region = OwnedRegion::new(region_len);
    // SAFETY: `region` outlives every use of the heap in this function.
    let heap = unsafe { Heap::<StdPlatform>::format(region.region()) }.unwrap();
    let empty = heap.stats();
    let caches = [heap.cache().unwrap(), heap.cache().unwrap()];
    let mut live: BTreeMap<Offset, Live> = BTreeMap::new();
    let mut fill = 1u8;
    let alloc = |path: u8, layout| match path {
        0 | 1 => caches[path as usize].alloc(layout),
        _ => heap.alloc(layout),
    };
    let free = |path: u8, off, layout| match path {
        // SAFETY: the model frees only live blocks with their own layout.
        0 | 1 => unsafe { caches[path as usize].free(off, layout) },
        // SAFETY: as above.
        _ => unsafe { heap.free(off, layout) },
    };
    for op in ops {
        match *op {
            Op::Alloc {
                path,
                size,
                align_log2,
            } => {
                let layout = Layout::from_size_align(size, 1 << align_log2).unwrap();
                match alloc(path, layout) {
                    Ok(off) => {
                        let p = heap.resolve(off, size).expect("block inside the arena");
                        assert_eq!(
                            p.as_ptr() as usize % layout.align(),
                            0,
                            "alignment of {layout:?}"
                        );
                        // No overlap with the neighbours in offset order.
                        let reserve = rounded(layout).unwrap_or(size as u64);
                        if let Some((o, l)) = live.range(..off).next_back() {
                            assert!(
                                o.get() + l.layout.size() as u64 <= off.get(),
                                "overlap below"
                            );
                        }
                        if let Some((o, _)) = live.range(off..).next() {
                            assert!(
                                off.get() + reserve <= o.get()
                                    || off.get() + size as u64 <= o.get(),
                                "overlap above"
                            );
                        }
                        // SAFETY: freshly allocated block of `size` bytes, ours alone.
                        unsafe { std::ptr::write_bytes(p.as_ptr(), fill, size) };
                        live.insert(off, Live { layout, fill });
                        fill = fill.wrapping_add(1).max(1);
                    }
                    Err(AllocError::Exhausted { .. }) => {}
                    Err(e) => panic!("unexpected {e}"),
                }
            }
            Op::Free { path, pick } => {
                if live.is_empty() {
                    continue;
                }
                let off = *live.keys().nth(pick % live.len()).unwrap();
                let l = live.remove(&off).unwrap();
                check_fill(&heap, off, &l);
                free(path, off, l.layout).unwrap();
            }
        }
        let s = heap.stats();
        let small: u64 = live.values().filter_map(|l| rounded(l.layout)).sum();
        let large: Vec<u64> = live
            .values()
            .filter(|l| rounded(l.layout).is_none())
            .map(|l| (l.layout.size().max(16) as u64).next_multiple_of(16))
            .collect();
        assert_eq!(s.small_in_use, small, "small bytes in use");
        assert_eq!(s.large_blocks, large.len() as u64, "large blocks in use");
        let lo: u64 = large.iter().sum();
        assert!(s.large_in_use >= lo && s.large_in_use <= lo + 16 * large.len() as u64);
        assert_eq!(s.in_use, s.small_in_use + s.large_in_use);
        assert!(s.free + s.in_use <= s.arena);
    }
    // Free everything: back to the empty state (slabs are kept for reuse).
    for (off, l) in std::mem::take(&mut live) {
        check_fill(&heap, off, &l);
        free(0, off, l.layout).unwrap();
    }
    let s = heap.stats();
    assert_eq!((s.in_use, s.large_blocks, s.large_in_use), (0, 0, 0));
    assert_eq!(
        s.arena_used,
        s.slabs * shmval_alloc::SLAB_SIZE as u64,
        "only slabs remain taken"
    );
    assert!(s.classes.iter().all(|c| c.in_use == 0));
    drop(caches);
    // With every slab gone the arena would be one block again; with slabs kept the
    // large heap must at least hold everything else.
    assert_eq!(
        s.free,
        empty.free - s.slabs * shmval_alloc::SLAB_SIZE as u64
            + s.classes
                .iter()
                .map(|c| c.free * c.size as u64)
                .sum::<u64>()
    );
    if s.slabs == 0 {
        assert_eq!(
            s.largest_free, empty.largest_free,
            "arena coalesced back to one block"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: if cfg!(miri) { 4 } else { 256 }, ..ProptestConfig::default() })]

    #[test]
    fn model(ops in prop::collection::vec(op(), 1..400)) {
        run(&ops, 1 << 20);
    }

    #[test]
    fn model_small_pool_exhausts_cleanly(ops in prop::collection::vec(op(), 1..300)) {
        run(&ops, 256 << 10);
    }
}

#[test]
fn large_only_coalesces_back_to_one_block() {
    let mut region = OwnedRegion::new(4 << 20);
    // SAFETY: region outlives the heap.
    let heap = unsafe { Heap::<StdPlatform>::format(region.region()) }.unwrap();
    let empty = heap.stats();
    let layouts: Vec<Layout> = (0..50)
        .map(|i| Layout::from_size_align(5000 + i * 997, 64).unwrap())
        .collect();
    let offs: Vec<Offset> = layouts.iter().map(|&l| heap.alloc(l).unwrap()).collect();
    for (i, (&o, &l)) in offs.iter().zip(&layouts).enumerate().rev().step_by(1) {
        if i % 2 == 0 {
            // SAFETY: live block, its own layout.
            unsafe { heap.free(o, l).unwrap() };
        }
    }
    for (i, (&o, &l)) in offs.iter().zip(&layouts).enumerate() {
        if i % 2 == 1 {
            // SAFETY: live block, its own layout.
            unsafe { heap.free(o, l).unwrap() };
        }
    }
    let mut s = heap.stats();
    assert!(s.high_water > 0);
    s.high_water = 0; // a peak, not a state
    assert_eq!(s, empty);
}

#[test]
fn exhaustion_is_an_error_and_nothing_breaks() {
    let mut region = OwnedRegion::new(256 << 10);
    // SAFETY: region outlives the heap.
    let heap = unsafe { Heap::<StdPlatform>::format(region.region()) }.unwrap();
    let l = Layout::from_size_align(10_000, 8).unwrap();
    let mut got = vec![];
    loop {
        match heap.alloc(l) {
            Ok(o) => got.push(o),
            Err(AllocError::Exhausted { size, .. }) => {
                assert_eq!(size, 10_000);
                break;
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert!(!got.is_empty());
    let small = Layout::from_size_align(24, 8).unwrap();
    // Small classes need a slab the full arena cannot give.
    assert!(matches!(
        heap.alloc(small),
        Err(AllocError::Exhausted { .. })
    ));
    for o in got {
        // SAFETY: live blocks with their layout.
        unsafe { heap.free(o, l).unwrap() };
    }
    assert!(heap.alloc(small).is_ok());
}

#[test]
fn bad_frees_are_refused_without_damage() {
    let mut region = OwnedRegion::new(1 << 20);
    // SAFETY: region outlives the heap.
    let heap = unsafe { Heap::<StdPlatform>::format(region.region()) }.unwrap();
    let small = Layout::from_size_align(40, 8).unwrap();
    let big = Layout::from_size_align(9000, 8).unwrap();
    let a = heap.alloc(small).unwrap();
    let b = heap.alloc(big).unwrap();
    let before = heap.stats();
    for (off, l) in [
        (Offset::new(a.get() + 16).unwrap(), small),
        (a, Layout::from_size_align(200, 8).unwrap()),
        (Offset::new(b.get() + 16).unwrap(), big),
        (b, Layout::from_size_align(20_000, 8).unwrap()),
        (Offset::new(1 << 40).unwrap(), big),
        (Offset::new(8).unwrap(), small),
    ] {
        // SAFETY: deliberately wrong frees; the heap must refuse them.
        assert!(unsafe { heap.free(off, l) }.is_err(), "{off:?} {l:?}");
    }
    assert_eq!(heap.stats(), before);
    // SAFETY: the real blocks, freed once.
    unsafe { heap.free(b, big).unwrap() };
    // SAFETY: as above.
    unsafe { heap.free(a, small).unwrap() };
    // SAFETY: double free of a large block is visible and refused.
    assert!(unsafe { heap.free(b, big) }.is_err());
}

#[test]
fn attach_validates_the_header() {
    let mut region = OwnedRegion::new(1 << 20);
    // SAFETY: zeroed buffer, not formatted.
    let r = unsafe { Heap::<StdPlatform>::attach(region.region()) };
    assert!(matches!(r, Err(shmval_alloc::FormatError::NotFormatted(0))));
    // SAFETY: region outlives both handles.
    let h = unsafe { Heap::<StdPlatform>::format(region.region()) }.unwrap();
    // SAFETY: as above.
    let h2 = unsafe { Heap::<StdPlatform>::attach(region.region()) }.unwrap();
    let off = h.alloc(Layout::new::<u64>()).unwrap();
    // SAFETY: allocated by `h` on the same heap.
    unsafe { h2.free(off, Layout::new::<u64>()).unwrap() };
    // Flip the version word: refused as incompatible.
    // SAFETY: word 1 (bytes 8..12) of our own buffer.
    unsafe { *(region.region().base().as_ptr().add(8) as *mut u32) = 99 };
    // SAFETY: as above.
    let r = unsafe { Heap::<StdPlatform>::attach(region.region()) };
    assert!(matches!(
        r,
        Err(shmval_alloc::FormatError::Incompatible { .. })
    ));
}
