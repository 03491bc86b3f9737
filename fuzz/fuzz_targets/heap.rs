//! Arbitrary bytes written over a live heap, then arbitrary operations on it: the
//! allocator must answer with errors, never crash, hang or touch memory outside the
//! region (run under ASan by cargo fuzz).
//!
//! Input: a list of 10-byte records. `0x00 off:u32 val:u32` writes `val` at word
//! `off` of the region; `0x01 size:u16 ..` allocates; `0x02 idx:u16 ..` frees the
//! idx-th live block; `0x03` reattaches; `0x04` reads stats.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shmval_alloc::{Heap, Offset, OwnedRegion, StdPlatform};
use std::alloc::Layout;

const LEN: usize = 512 << 10;

fuzz_target!(|data: &[u8]| {
    let mut region = OwnedRegion::new(LEN);
    // SAFETY: the region outlives every heap handle here.
    let mut heap = unsafe { Heap::<StdPlatform>::format(region.region()) }.unwrap();
    let mut live: Vec<(Offset, Layout)> = Vec::new();
    // A populated heap to corrupt: slabs of a few classes, large blocks.
    for s in [24usize, 100, 700, 3000, 9000, 50_000] {
        let l = Layout::from_size_align(s, 8).unwrap();
        if let Ok(o) = heap.alloc(l) {
            live.push((o, l));
        }
    }
    let base = region.region().base().as_ptr();
    for rec in data.chunks_exact(10) {
        let a = u32::from_le_bytes([rec[1], rec[2], rec[3], rec[4]]);
        let b = u32::from_le_bytes([rec[5], rec[6], rec[7], rec[8]]);
        match rec[0] % 5 {
            0 => {
                let off = (a as usize % (LEN / 4)) * 4;
                // SAFETY: inside our own buffer, 4-aligned.
                unsafe { (base.add(off) as *mut u32).write_volatile(b) };
            }
            1 => {
                let l = Layout::from_size_align(1 + (a as usize % 70_000), 1 << (b % 7)).unwrap();
                if let Ok(o) = heap.alloc(l) {
                    let p = heap.resolve(o, l.size()).expect("allocations resolve inside the arena");
                    // SAFETY: in-bounds bytes of the region.
                    unsafe { std::ptr::write_bytes(p.as_ptr(), rec[9], l.size()) };
                    live.push((o, l));
                }
            }
            2 if !live.is_empty() => {
                let (o, l) = live.swap_remove(a as usize % live.len());
                // SAFETY: blocks we were handed (on a corrupt heap a refusal is fine).
                let _ = unsafe { heap.free(o, l) };
            }
            3 => {
                // SAFETY: as above.
                if let Ok(h) = unsafe { Heap::<StdPlatform>::attach(region.region()) } {
                    heap = h;
                } else {
                    return;
                }
            }
            _ => {
                let _ = heap.stats();
                heap.reclaim_dead();
            }
        }
    }
});
