//! The pool allocator used by several real processes at once, and killed with
//! SIGKILL at random moments inside allocate and free.

mod common;

use common::{spawn, wait_ok, Scratch};
use shmval::{fail, AllocError, Offset, Pool, PoolOptions};
use std::alloc::Layout;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const MB: u64 = 1 << 20;
/// Live blocks a churning process keeps (and ledger entries it records them in).
const LIVE: usize = 63;
/// Largest block churn allocates.
const MAX_BLOCK: usize = 20_000;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn layout_of(word: u64) -> Layout {
    let size = (word & 0x7FFF) as usize;
    let align = if word & 0x8000 != 0 { 64 } else { 8 };
    Layout::from_size_align(size, align).unwrap()
}

fn ledger_word(off: Offset, l: Layout) -> u64 {
    (off.get() << 16) | l.size() as u64 | if l.align() == 64 { 0x8000 } else { 0 }
}

/// `words` atomics of a block at `off`.
fn words(pool: &Pool, off: u64, n: usize) -> &[AtomicU64] {
    let p = pool.resolve(Offset::new(off).unwrap(), n * 8).unwrap();
    // SAFETY: a block of n words, 8-aligned, used only through atomics.
    unsafe { std::slice::from_raw_parts(p.as_ptr() as *const AtomicU64, n) }
}

fn fill(pool: &Pool, off: Offset, len: usize, byte: u8) {
    let p = pool.resolve(off, len).unwrap();
    // SAFETY: a block we own.
    unsafe { std::ptr::write_bytes(p.as_ptr(), byte, len) };
}

fn verify(pool: &Pool, off: Offset, len: usize, byte: u8) {
    let p = pool.resolve(off, len).unwrap();
    // SAFETY: a block we own.
    let s = unsafe { std::slice::from_raw_parts(p.as_ptr(), len) };
    if let Some(i) = s.iter().position(|&b| b != byte) {
        panic!(
            "block {off:?} (+{len}) byte {i} is {:#x}, expected {byte:#x}: overlapping allocation",
            s[i]
        );
    }
}

/// Allocates and frees random blocks, checking each block's pattern before freeing.
/// With a ledger, records each live block there (after allocating, cleared before
/// freeing) so whoever kills this process can free what it held.
fn churn(
    pool: &Pool,
    seed: u64,
    iters: u64,
    ledger: Option<&[AtomicU64]>,
    stop: Option<&AtomicU64>,
) -> u64 {
    let mut rng = Rng(seed | 1);
    let mut live: Vec<(Offset, Layout, u8, usize)> = Vec::new();
    let mut free_slots: Vec<usize> = (0..LIVE).collect();
    let mut i = 0u64;
    while (iters == 0 || i < iters) && stop.is_none_or(|s| s.load(Ordering::Relaxed) == 0) {
        i += 1;
        let r = rng.next();
        if live.len() < LIVE && (r & 1 == 0 || live.is_empty()) {
            let size = match r >> 56 {
                0..=229 => 1 + (r >> 8) as usize % 512,
                230..=250 => 513 + (r >> 8) as usize % 3584,
                _ => 4097 + (r >> 8) as usize % (MAX_BLOCK - 4097),
            };
            let align = if r & 0x10 != 0 { 64 } else { 8 };
            let l = Layout::from_size_align(size, align).unwrap();
            match pool.alloc(l) {
                Ok(off) => {
                    let byte = (r >> 40) as u8 | 1;
                    fill(pool, off, size, byte);
                    let slot = free_slots.pop().unwrap();
                    if let Some(led) = ledger {
                        led[slot].store(ledger_word(off, l), Ordering::Release);
                    }
                    live.push((off, l, byte, slot));
                }
                Err(AllocError::Exhausted { .. }) => {}
                Err(e) => panic!("allocation failed: {e}"),
            }
        } else {
            let (off, l, byte, slot) = live.swap_remove((r >> 8) as usize % live.len());
            verify(pool, off, l.size(), byte);
            if let Some(led) = ledger {
                led[slot].store(0, Ordering::Release);
            }
            free_slots.push(slot);
            // SAFETY: our live block, its own layout, freed once.
            unsafe { pool.free(off, l) }.expect("free of a live block");
        }
    }
    for (off, l, byte, slot) in live {
        verify(pool, off, l.size(), byte);
        if let Some(led) = ledger {
            led[slot].store(0, Ordering::Release);
        }
        // SAFETY: as above.
        unsafe { pool.free(off, l) }.unwrap();
    }
    i
}

const RING: usize = 1024;

/// Entry point of the re-spawned child processes (a no-op in a normal run).
#[test]
fn child_role_entry() {
    let Some(role) = common::role() else { return };
    let name = std::env::var("POOL").unwrap();
    let num = |k: &str| std::env::var(k).unwrap().parse::<u64>().unwrap();
    let pool = Pool::open(&name, Duration::from_secs(10)).unwrap();
    match role.as_str() {
        "churn" => {
            churn(&pool, num("SEED"), num("ITERS"), None, None);
        }
        "victim" => {
            let led = words(&pool, num("LEDGER"), LIVE + 1);
            led[LIVE].store(1, Ordering::Release); // running
            churn(&pool, num("SEED"), 0, Some(&led[..LIVE]), None);
        }
        "survivor" => {
            let stop = pool.user_word(5);
            let n = churn(&pool, num("SEED"), 0, None, Some(stop));
            pool.user_word(6).store(n, Ordering::Release);
        }
        "producer" | "consumer" => {
            let ring = words(&pool, num("RING"), RING + 2);
            let (head, tail) = (&ring[RING], &ring[RING + 1]);
            let total = num("ITEMS");
            let l = Layout::from_size_align(48, 8).unwrap();
            for seq in 0..total {
                if role == "producer" {
                    let off = pool.alloc(l).unwrap();
                    words(&pool, off.get(), 6)
                        .iter()
                        .for_each(|w| w.store(seq, Ordering::Relaxed));
                    while head.load(Ordering::Acquire) - tail.load(Ordering::Acquire) >= RING as u64
                    {
                        std::hint::spin_loop();
                    }
                    let h = head.load(Ordering::Relaxed);
                    ring[h as usize % RING].store(off.get(), Ordering::Relaxed);
                    head.store(h + 1, Ordering::Release);
                } else {
                    while tail.load(Ordering::Relaxed) == head.load(Ordering::Acquire) {
                        std::hint::spin_loop();
                    }
                    let t = tail.load(Ordering::Relaxed);
                    let off = ring[t as usize % RING].load(Ordering::Relaxed);
                    tail.store(t + 1, Ordering::Release);
                    for w in words(&pool, off, 6) {
                        assert_eq!(w.load(Ordering::Relaxed), seq, "handed-over block intact");
                    }
                    // SAFETY: allocated by the producer with `l`, handed over to us.
                    unsafe { pool.free(Offset::new(off).unwrap(), l) }.unwrap();
                }
            }
        }
        "lock-holder" => {
            // Stops inside a large allocation, holding the lock, its block taken
            // out of the index and not yet marked allocated; killed there.
            let p2 = pool.clone();
            let stop = move || {
                p2.user_word(4).store(1, Ordering::Release);
                std::thread::sleep(Duration::from_secs(60));
            };
            fail::set_for_thread("alloc.large.unlinked", fail::Action::Call(Arc::new(stop)));
            let _ = pool.alloc(Layout::from_size_align(100_000, 64).unwrap());
            unreachable!("killed holding the lock");
        }
        r => panic!("unknown role {r}"),
    }
    drop(pool);
    common::child_done();
}

fn new_pool(s: &Scratch, size: u64) -> Pool {
    Pool::create_with(s.name(), size, &PoolOptions::new().remove_on_drop(true)).unwrap()
}

#[test]
fn processes_allocate_and_free_concurrently_without_overlap_or_loss() {
    let s = Scratch::new("churn");
    let pool = new_pool(&s, 32 * MB);
    let base = pool.stats();
    let mut kids: Vec<_> = (0..3)
        .map(|k| {
            spawn(
                "child_role_entry",
                "churn",
                &[
                    ("POOL", s.0.clone()),
                    ("SEED", (k * 7919 + 1).to_string()),
                    ("ITERS", "200000".into()),
                ],
            )
        })
        .collect();
    // The parent churns too, at the same time.
    churn(&pool, 424242, 100_000, None, None);
    for (i, k) in kids.iter_mut().enumerate() {
        wait_ok(k, Duration::from_secs(120), &format!("churn {i}"));
    }
    let st = pool.stats();
    assert_eq!(st.in_use, base.in_use, "every block came back");
    assert_eq!(st.large_blocks, 0);
    assert_eq!(st.leaked, 0);
    assert!(st.classes.iter().all(|c| c.in_use == 0), "{:?}", st.classes);
    assert_eq!(
        pool.reclaim_dead().slots,
        0,
        "children released their slots"
    );
}

#[test]
fn blocks_freed_by_another_process_are_reused() {
    let s = Scratch::new("handoff");
    let pool = new_pool(&s, 8 * MB);
    let ring = pool
        .alloc(Layout::from_size_align((RING + 2) * 8, 64).unwrap())
        .unwrap();
    words(&pool, ring.get(), RING + 2)
        .iter()
        .for_each(|w| w.store(0, Ordering::Relaxed));
    let base = pool.stats();
    let items = 300_000u64; // 14 MB through an 8 MB pool: freed blocks must flow back
    let env = |_: &str| {
        vec![
            ("POOL", s.0.clone()),
            ("RING", ring.get().to_string()),
            ("ITEMS", items.to_string()),
        ]
    };
    let mut c = spawn("child_role_entry", "consumer", &env("c"));
    let mut p = spawn("child_role_entry", "producer", &env("p"));
    wait_ok(&mut p, Duration::from_secs(120), "producer");
    wait_ok(&mut c, Duration::from_secs(120), "consumer");
    let st = pool.stats();
    assert_eq!(st.in_use, base.in_use);
    assert!(
        st.slabs <= base.slabs + 40,
        "blocks were recycled, not carved anew: {} slabs",
        st.slabs
    );
}

#[test]
fn a_lock_holder_killed_mid_operation_does_not_stop_the_others() {
    let s = Scratch::new("lockdeath");
    let pool = new_pool(&s, 8 * MB);
    let big = Layout::from_size_align(100_000, 64).unwrap();
    let keep = pool.alloc(big).unwrap();
    let before = pool.stats();
    let mut holder = spawn("child_role_entry", "lock-holder", &[("POOL", s.0.clone())]);
    let t = Instant::now();
    while pool.user_word(4).load(Ordering::Acquire) == 0 {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "holder never took the lock"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    // A waiter in this process blocks on the dead-to-be holder.
    let p2 = pool.clone();
    let waiter = std::thread::spawn(move || {
        let t = Instant::now();
        let off = p2.alloc(big).unwrap();
        (off, t.elapsed())
    });
    std::thread::sleep(Duration::from_millis(50));
    assert!(!waiter.is_finished(), "the lock is really held");
    holder.kill().unwrap();
    holder.wait().unwrap();
    let (off, waited) = waiter.join().unwrap();
    assert!(
        waited < Duration::from_secs(10),
        "recovered in bounded time ({waited:?})"
    );
    // The index was rebuilt from the block headers: everything is as before.
    // SAFETY: allocated just above with `big`.
    unsafe { pool.free(off, big) }.unwrap();
    let mut after = pool.stats();
    after.high_water = before.high_water;
    assert_eq!(after, before);
    // SAFETY: allocated above.
    unsafe { pool.free(keep, big) }.unwrap();
}

#[test]
fn processes_sigkilled_inside_alloc_and_free_leave_the_pool_consistent() {
    let kills: u64 = std::env::var("SHMVAL_CHAOS_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let s = Scratch::new("chaos");
    let pool = new_pool(&s, 64 * MB);
    let base = pool.stats();
    let mut survivor = spawn(
        "child_role_entry",
        "survivor",
        &[("POOL", s.0.clone()), ("SEED", "99".into())],
    );
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let ledger_layout = Layout::from_size_align((LIVE + 1) * 8, 64).unwrap();
    let mut freed = 0;
    for k in 0..kills {
        let ledger = pool.alloc(ledger_layout).unwrap();
        let led = words(&pool, ledger.get(), LIVE + 1);
        led.iter().for_each(|w| w.store(0, Ordering::Relaxed));
        let mut v = spawn(
            "child_role_entry",
            "victim",
            &[
                ("POOL", s.0.clone()),
                ("SEED", (k + 1).to_string()),
                ("LEDGER", ledger.get().to_string()),
            ],
        );
        let t = Instant::now();
        while led[LIVE].load(Ordering::Acquire) == 0 && t.elapsed() < Duration::from_secs(20) {
            if v.try_wait().unwrap().is_some() {
                panic!("victim {k} exited early");
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        std::thread::sleep(Duration::from_micros(rng.next() % 8000));
        v.kill().unwrap();
        v.wait().unwrap();
        // Free what the victim recorded as live: each must be a valid block.
        for w in &led[..LIVE] {
            let e = w.load(Ordering::Acquire);
            if e != 0 {
                // SAFETY: the victim is dead; the ledger says it held this block.
                unsafe { pool.free(Offset::new(e >> 16).unwrap(), layout_of(e)) }
                    .expect("ledger block is valid");
                freed += 1;
            }
        }
        // SAFETY: allocated above with ledger_layout.
        unsafe { pool.free(ledger, ledger_layout) }.unwrap();
    }
    pool.user_word(5).store(1, Ordering::Release);
    wait_ok(&mut survivor, Duration::from_secs(60), "survivor");
    assert!(
        pool.user_word(6).load(Ordering::Acquire) > 1000,
        "the survivor kept working"
    );
    pool.reclaim_dead();
    let st = pool.stats();
    assert_eq!(st.leaked, 0);
    // Each kill may leak the one block in flight and skew a counter by one block.
    let blocks: u64 = st.classes.iter().map(|c| c.in_use).sum::<u64>() + st.large_blocks;
    assert!(
        blocks <= 2 * kills,
        "{blocks} blocks unaccounted after {kills} kills"
    );
    assert!(
        st.in_use - base.in_use <= kills * (MAX_BLOCK as u64 + 4096),
        "{} bytes",
        st.in_use
    );
    assert!(freed > 0, "the kills hit processes holding blocks");
    // The pool is fully usable: fill it with 4 KiB blocks, then empty it.
    let l = Layout::from_size_align(4000, 8).unwrap();
    let mut got = Vec::new();
    loop {
        match pool.alloc(l) {
            Ok(o) => got.push(o),
            Err(AllocError::Exhausted { .. }) => break,
            Err(e) => panic!("{e}"),
        }
    }
    assert!(
        got.len() as u64 * 4096 > st.arena / 2,
        "only {} blocks fit",
        got.len()
    );
    for o in got {
        // SAFETY: allocated just above.
        unsafe { pool.free(o, l) }.unwrap();
    }
    eprintln!("chaos: {kills} kills, {freed} ledger blocks freed, {blocks} blocks unaccounted");
}
