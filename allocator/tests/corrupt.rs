//! Rule 1: nothing in the region is trusted. Random words written over a live heap
//! (metadata, lists, block headers, slab headers) must yield errors, never a panic,
//! an out-of-region access or a hang.

use proptest::prelude::*;
use shmval_alloc::{Heap, Offset, OwnedRegion, StdPlatform};
use std::alloc::Layout;

const LEN: usize = 1 << 20;

fn scribble(region: &mut OwnedRegion, writes: &[(usize, u64)]) {
    let base = region.region().base().as_ptr();
    for &(pos, v) in writes {
        let off = (pos % (LEN / 8)) * 8;
        // SAFETY: inside our own buffer, 8-aligned.
        unsafe { (base.add(off) as *mut u64).write_volatile(v) };
    }
}

fn interesting(v: u64, pick: u8) -> u64 {
    match pick % 6 {
        0 => v,
        1 => v & 0xFFFF_FFFF,   // a plausible unit/offset
        2 => (v & 0xFFFF) << 4, // a small, aligned offset
        3 => 0,
        4 => u64::MAX,
        _ => (v & 0xFF_FFFF) << 32 | (v & 0xFFFF), // a list word: count | head
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn scribbled_heaps_fail_cleanly(
        writes in prop::collection::vec((0usize..LEN / 8, any::<u64>(), any::<u8>()), 1..40),
        hot in prop::collection::vec((0usize..4096, any::<u64>(), any::<u8>()), 0..20),
        sizes in prop::collection::vec(1usize..12_000, 1..60),
    ) {
        let mut region = OwnedRegion::new(LEN);
        // SAFETY: region outlives the heap handles below.
        let heap = unsafe { Heap::<StdPlatform>::format(region.region()) }.unwrap();
        // Populate: slabs of several classes, large blocks, cached lists.
        let mut live = vec![];
        {
            let c = heap.cache().unwrap();
            for &s in &sizes {
                let l = Layout::from_size_align(s, 8).unwrap();
                if let Ok(o) = c.alloc(l) { live.push((o, l)); }
            }
            for (o, l) in live.drain(..).step_by(2) {
                // SAFETY: live blocks freed once.
                let _ = unsafe { c.free(o, l) };
            }
        }
        let w: Vec<(usize, u64)> = writes.iter().map(|&(p, v, k)| (p, interesting(v, k)))
            // Also aim at the metadata pages, where most structure lives.
            .chain(hot.iter().map(|&(p, v, k)| (p, interesting(v, k))))
            .collect();
        scribble(&mut region, &w);
        // SAFETY: as above; attach validates the header and may refuse.
        let Ok(heap) = (unsafe { Heap::<StdPlatform>::attach(region.region()) }) else { return Ok(()); };
        let c = heap.cache().unwrap();
        let mut mine = vec![];
        for &s in sizes.iter().chain(sizes.iter()) {
            let l = Layout::from_size_align(s, 16).unwrap();
            if let Ok(o) = c.alloc(l) {
                // The block handed out lies inside the arena: writing it is in bounds.
                let p = heap.resolve(o, s).expect("allocations resolve inside the arena");
                // SAFETY: in-bounds bytes of our buffer (possibly shared with another
                // corrupt block, which is data corruption, not memory unsafety).
                unsafe { std::ptr::write_bytes(p.as_ptr(), 0xAB, s) };
                mine.push((o, l));
            }
        }
        for (o, l) in mine {
            // SAFETY: blocks we were handed (double hand-out is possible only on a
            // corrupt heap and is refused or absorbed, never unsafe).
            let _ = unsafe { c.free(o, l) };
        }
        let _ = heap.stats();
        // SAFETY: arbitrary offsets: the heap must refuse, not crash.
        let _ = unsafe { heap.free(Offset::new(0x10_0000 - 16).unwrap(), Layout::new::<[u8; 9000]>()) };
        drop(c);
        heap.reclaim_dead();
    }
}
