//! A growable heap over a plain buffer: growth on demand, up to the maximum and not
//! past it, a refusing backing store, and a second handle (another process's view)
//! that follows the growth on first meeting an offset in the new part.

use proptest::prelude::*;
use shmval_alloc::{
    AllocError, Grow, GrowError, Growth, Heap, Offset, OwnedRegion, Region, StdPlatform,
};
use std::alloc::Layout;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

/// The backing store's state, shared by the handles of one heap.
#[derive(Default)]
struct Store {
    /// Bytes the store holds.
    len: AtomicU64,
    /// Bytes a refusing store accepts at most (0: no limit).
    limit: AtomicU64,
    /// Calls to `extend`.
    extends: AtomicU64,
}

/// One handle's grower: the store, and what this handle mapped.
struct Grower {
    store: Arc<Store>,
    mapped: AtomicU64,
    maps: AtomicU64,
}

impl Grower {
    fn new(store: &Arc<Store>, mapped: u64) -> Self {
        Grower {
            store: store.clone(),
            mapped: AtomicU64::new(mapped),
            maps: AtomicU64::new(0),
        }
    }
}

/// What the heap holds: a grower the test can look at too.
struct Shared(Arc<Grower>);

impl Grow for Shared {
    fn extend(&self, len: u64) -> Result<(), GrowError> {
        let this = &self.0;
        let limit = this.store.limit.load(Relaxed);
        if limit != 0 && len > limit {
            return Err(GrowError::NoSpace);
        }
        this.store.extends.fetch_add(1, Relaxed);
        this.store.len.fetch_max(len, Relaxed);
        Ok(())
    }
    fn map(&self, len: u64) -> Result<(), GrowError> {
        let this = &self.0;
        if len > this.store.len.load(Relaxed) {
            return Err(GrowError::Short);
        }
        this.maps.fetch_add(1, Relaxed);
        this.mapped.fetch_max(len, Relaxed);
        Ok(())
    }
}

const START: u64 = 1 << 20;
const MAX: u64 = 16 << 20;

struct Fixture {
    // Keeps the buffer alive for the heaps below (dropped after them).
    heaps: Vec<Heap<StdPlatform>>,
    growers: Vec<Arc<Grower>>,
    store: Arc<Store>,
    _buf: OwnedRegion,
}

/// A heap of `START` bytes growable to `MAX`, and `views` more handles on it.
fn fixture(views: usize) -> Fixture {
    let mut buf = OwnedRegion::new(MAX as usize);
    let whole = buf.region();
    // SAFETY: the first START bytes of the buffer, which outlives the heaps.
    let first = unsafe { Region::new(whole.base(), START as usize) };
    let store = Arc::new(Store::default());
    store.len.store(START, Relaxed);
    let mut growers = vec![Arc::new(Grower::new(&store, START))];
    let growth = |g: &Arc<Grower>| Growth {
        max: MAX,
        grow: Box::new(Shared(g.clone())),
    };
    // SAFETY: the buffer's MAX bytes are reserved for this heap.
    let heap =
        unsafe { Heap::<StdPlatform>::format_growable(first, Some(growth(&growers[0]))) }.unwrap();
    let mut heaps = vec![heap];
    for _ in 0..views {
        let g = Arc::new(Grower::new(&store, START));
        // SAFETY: as above.
        heaps.push(unsafe { Heap::attach_growable(first, Some(growth(&g))) }.unwrap());
        growers.push(g);
    }
    Fixture {
        heaps,
        growers,
        store,
        _buf: buf,
    }
}

#[test]
fn a_heap_grows_on_demand_to_its_maximum_and_says_exhausted_past_it() {
    let f = fixture(0);
    let heap = &f.heaps[0];
    assert_eq!((heap.len(), heap.max_len()), (START, MAX));
    let big = Layout::from_size_align(200 << 10, 8).unwrap();
    let mut bigs = Vec::new();
    let err = loop {
        match heap.alloc(big) {
            Ok(o) => bigs.push(o),
            Err(e) => break e,
        }
    };
    assert!(matches!(err, AllocError::Exhausted { .. }), "{err:?}");
    assert!(
        heap.len() > MAX - (1 << 20) && heap.len() <= MAX,
        "{}",
        heap.len()
    );
    let extends = f.store.extends.load(Relaxed);
    assert!(
        (3..=12).contains(&extends),
        "grew in {extends} steps from 1 to 16 MiB"
    );
    assert!(heap.verify_large().unwrap().is_empty());
    for o in bigs {
        // SAFETY: allocated above with `big`, freed once.
        unsafe { heap.free(o, big).unwrap() };
    }
    assert!(heap.verify_large().unwrap().is_empty());
    // After freeing everything, one block of almost the maximum fits again: the
    // grown parts merged with the arena's free end.
    let most = Layout::from_size_align((MAX - (2 << 20)) as usize, 8).unwrap();
    let o = heap.alloc(most).unwrap();
    // SAFETY: as above.
    unsafe { heap.free(o, most).unwrap() };
}

#[test]
fn a_refusing_store_fails_the_allocation_with_its_reason_and_loses_nothing() {
    let f = fixture(0);
    let heap = &f.heaps[0];
    f.store.limit.store(4 << 20, Relaxed);
    let l = Layout::from_size_align(300 << 10, 8).unwrap();
    let mut got = Vec::new();
    let err = loop {
        match heap.alloc(l) {
            Ok(o) => got.push(o),
            Err(e) => break e,
        }
    };
    assert!(
        matches!(err, AllocError::GrowFailed { why: GrowError::NoSpace, to } if to > 4 << 20),
        "{err:?}"
    );
    assert!(heap.len() <= 4 << 20);
    assert!(heap.verify_large().unwrap().is_empty());
    // The store gets room again: the heap grows on.
    f.store.limit.store(0, Relaxed);
    got.push(heap.alloc(l).unwrap());
    assert!(heap.len() > 4 << 20);
    for o in got {
        // SAFETY: allocated above with `l`, freed once.
        unsafe { heap.free(o, l).unwrap() };
    }
    assert!(heap.verify_large().unwrap().is_empty());
}

#[test]
fn another_handle_maps_the_grown_part_when_it_first_meets_an_offset_there() {
    let f = fixture(1);
    let (a, b) = (&f.heaps[0], &f.heaps[1]);
    let l = Layout::from_size_align(512 << 10, 8).unwrap();
    let mut offs = Vec::new();
    for i in 0..8u8 {
        let o = a.alloc(l).unwrap();
        let p = a.resolve(o, l.size()).unwrap();
        // SAFETY: a live block of `l.size()` bytes owned by this test.
        unsafe { p.as_ptr().write_bytes(i + 1, l.size()) };
        offs.push(o);
    }
    assert!(a.len() > START);
    assert_eq!(f.growers[1].maps.load(Relaxed), 0, "b has not looked yet");
    assert_eq!(f.growers[1].mapped.load(Relaxed), START);
    // `b` reads every block, those past its mapping included: one map call catches
    // it up to the whole arena.
    for (i, &o) in offs.iter().enumerate() {
        let p = b.resolve(o, l.size()).expect("b resolves a grown offset");
        // SAFETY: as above; `a` wrote it before.
        let s = unsafe { std::slice::from_raw_parts(p.as_ptr(), l.size()) };
        assert!(s.iter().all(|&x| x == i as u8 + 1));
    }
    assert_eq!(f.growers[1].maps.load(Relaxed), 1);
    assert_eq!(f.growers[1].mapped.load(Relaxed), a.len());
    // Past the arena's end stays out of reach, grown or not.
    assert!(b.resolve(Offset::new(MAX - 64).unwrap(), 8).is_none());
    // `b` frees `a`'s blocks and then grows the heap itself.
    for o in offs {
        // SAFETY: allocated by `a` with `l`, freed once.
        unsafe { b.free(o, l).unwrap() };
    }
    let before = b.len();
    let mut more = Vec::new();
    while b.len() == before {
        more.push(b.alloc(l).unwrap());
    }
    assert!(a.verify_large().unwrap().is_empty());
    assert!(b.verify_large().unwrap().is_empty());
    for o in more {
        // SAFETY: as above.
        unsafe { a.free(o, l).unwrap() };
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// Random allocations and frees through two handles on a growable heap: every
    /// live block keeps its bytes across growths, the tiling checks clean, and the
    /// heap only grows.
    #[test]
    fn growth_keeps_every_block_and_the_tiling(
        ops in prop::collection::vec((any::<bool>(), 0..2usize, 16..300_000usize, any::<u16>()), 1..300)
    ) {
        let f = fixture(1);
        let mut live: Vec<(Offset, Layout, u8)> = Vec::new();
        let mut len = f.heaps[0].len();
        for (i, (alloc, h, size, pick)) in ops.into_iter().enumerate() {
            let heap = &f.heaps[h];
            if alloc || live.is_empty() {
                let l = Layout::from_size_align(size, 8).unwrap();
                match heap.alloc(l) {
                    Ok(o) => {
                        let fill = i as u8 | 1;
                        let p = heap.resolve(o, size).unwrap();
                        // SAFETY: a fresh live block of `size` bytes.
                        unsafe { p.as_ptr().write_bytes(fill, size) };
                        live.push((o, l, fill));
                    }
                    Err(AllocError::Exhausted { .. }) => {}
                    Err(e) => panic!("{e:?}"),
                }
            } else {
                let (o, l, fill) = live.swap_remove(pick as usize % live.len());
                let p = heap.resolve(o, l.size()).unwrap();
                // SAFETY: live until the free below.
                let s = unsafe { std::slice::from_raw_parts(p.as_ptr(), l.size()) };
                prop_assert!(s.iter().all(|&x| x == fill));
                // SAFETY: allocated with `l`, freed once.
                unsafe { heap.free(o, l).unwrap() };
            }
            prop_assert!(f.heaps[0].len() >= len);
            len = f.heaps[0].len();
        }
        prop_assert_eq!(f.heaps[0].verify_large().unwrap(), vec![]);
        prop_assert_eq!(f.heaps[1].verify_large().unwrap(), vec![]);
    }
}
