//! Scenario 1: allocate+free pairs of random sizes 16..=256 B, against glibc malloc,
//! in one process and in two processes at once on one pool.

use crate::harness::{ns_per_op, Report};
use shmval::Pool;
use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::Duration;

const SIZES: usize = 4096;

fn sizes() -> Vec<Layout> {
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    (0..SIZES)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            Layout::from_size_align(16 + (x % 241) as usize, 8).unwrap()
        })
        .collect()
}

/// Allocate, touch, free, `n` times; returns the checksum of the touched bytes.
fn pairs_pool(pool: &Pool, ls: &[Layout], n: u64) -> u64 {
    let mut acc = 0u64;
    for i in 0..n {
        let l = ls[i as usize % SIZES];
        let off = pool.alloc(l).expect("pool alloc");
        let p = pool.resolve(off, 1).unwrap().as_ptr();
        // SAFETY: our fresh block of at least one byte.
        unsafe {
            p.write(i as u8);
            acc += u64::from(p.read());
        }
        // SAFETY: allocated just above with `l`.
        unsafe { pool.free(black_box(off), l) }.expect("pool free");
    }
    acc
}

fn pairs_cache(pool: &Pool, ls: &[Layout], n: u64) -> u64 {
    let heap = pool.heap();
    let cache = heap.cache().unwrap();
    let mut acc = 0u64;
    for i in 0..n {
        let l = ls[i as usize % SIZES];
        let off = cache.alloc(l).expect("cache alloc");
        let p = heap.resolve(off, 1).unwrap().as_ptr();
        // SAFETY: our fresh block.
        unsafe {
            p.write(i as u8);
            acc += u64::from(p.read());
        }
        // SAFETY: allocated just above with `l`.
        unsafe { cache.free(black_box(off), l) }.expect("cache free");
    }
    acc
}

fn pairs_glibc(ls: &[Layout], n: u64) -> u64 {
    let mut acc = 0u64;
    for i in 0..n {
        let l = ls[i as usize % SIZES];
        // SAFETY: non-zero size layout; freed below with the same layout.
        unsafe {
            let p = System.alloc(l);
            assert!(!p.is_null());
            p.write(i as u8);
            acc += u64::from(p.read());
            System.dealloc(black_box(p), l);
        }
    }
    acc
}

/// A window of 64 live blocks: free the oldest, allocate a new one.
fn window_pool(pool: &Pool, ls: &[Layout], n: u64) -> u64 {
    let mut ring = [(shmval::Offset::new(1).unwrap(), Layout::new::<u8>()); 64];
    let mut acc = 0;
    for (i, slot) in ring.iter_mut().enumerate() {
        *slot = (pool.alloc(ls[i]).unwrap(), ls[i]);
    }
    for i in 0..n {
        let k = i as usize % 64;
        let (off, l) = ring[k];
        // SAFETY: a live block of ours with its layout.
        unsafe { pool.free(off, l) }.unwrap();
        let l = ls[i as usize % SIZES];
        let off = pool.alloc(l).unwrap();
        acc += off.get() & 1;
        ring[k] = (off, l);
    }
    for (off, l) in ring {
        // SAFETY: as above.
        unsafe { pool.free(off, l) }.unwrap();
    }
    acc
}

fn window_glibc(ls: &[Layout], n: u64) -> u64 {
    let mut ring = [(std::ptr::null_mut::<u8>(), Layout::new::<u8>()); 64];
    let mut acc = 0;
    for (i, slot) in ring.iter_mut().enumerate() {
        // SAFETY: non-zero layouts.
        *slot = (unsafe { System.alloc(ls[i]) }, ls[i]);
    }
    for i in 0..n {
        let k = i as usize % 64;
        let (p, l) = ring[k];
        // SAFETY: live block with its layout.
        unsafe { System.dealloc(p, l) };
        let l = ls[i as usize % SIZES];
        // SAFETY: non-zero layout.
        let p = unsafe { System.alloc(l) };
        acc += p as u64 & 1;
        ring[k] = (p, l);
    }
    for (p, l) in ring {
        // SAFETY: as above.
        unsafe { System.dealloc(p, l) };
    }
    acc
}

fn expected(n: u64) -> u64 {
    (0..n).map(|i| u64::from(i as u8)).sum()
}

pub fn run(r: &mut Report) {
    let name = format!("shmval-bench-alloc-{}", std::process::id());
    let pool = crate::harness::bench_pool(&name, 256 << 20).expect("create bench pool");
    let ls = sizes();
    let n: u64 = if r.quick { 200_000 } else { 2_000_000 };
    let want = expected(n);
    let reps = r.reps(15);
    r.compare(
        "alloc+free pair, 16..256 B, 1 process",
        "ns/pair",
        reps,
        2,
        &["≤ 1.5× glibc", "≤ 1.5× glibc", ""],
        vec![
            (
                "shmval Pool::alloc/free",
                Box::new(|| ns_per_op(n, || assert_eq!(pairs_pool(&pool, &ls, n), want))),
            ),
            (
                "shmval Cache (explicit slot)",
                Box::new(|| ns_per_op(n, || assert_eq!(pairs_cache(&pool, &ls, n), want))),
            ),
            (
                "glibc malloc/free",
                Box::new(|| ns_per_op(n, || assert_eq!(pairs_glibc(&ls, n), want))),
            ),
        ],
    );
    if let Some(peer) = crate::harness::peer("boost_alloc") {
        r.compare(
            "alloc+free pair, 16..256 B, vs Boost.Interprocess",
            "ns/pair",
            reps,
            1,
            &["≤ 0.2× Boost (≥ 5× faster)", ""],
            vec![
                (
                    "shmval Pool::alloc/free",
                    Box::new(|| ns_per_op(n, || assert_eq!(pairs_pool(&pool, &ls, n), want))),
                ),
                (
                    "Boost managed_shared_memory",
                    Box::new(|| crate::harness::run_peer(&peer, n, &want.to_string())),
                ),
            ],
        );
    } else {
        eprintln!("Boost.Interprocess peer not built: run bench/setup (skipped)");
    }
    r.compare(
        "free oldest + alloc, 64 live, 16..256 B",
        "ns/pair",
        reps,
        1,
        &["", ""],
        vec![
            (
                "shmval Pool::alloc/free",
                Box::new(|| {
                    ns_per_op(n, || {
                        black_box(window_pool(&pool, &ls, n));
                    })
                }),
            ),
            (
                "glibc malloc/free",
                Box::new(|| {
                    ns_per_op(n, || {
                        black_box(window_glibc(&ls, n));
                    })
                }),
            ),
        ],
    );
    assert_eq!(pool.stats().in_use, 0, "every block came back");
    let n2: u64 = if r.quick { 500_000 } else { 5_000_000 };
    r.compare(
        "alloc+free pairs, processes on one pool (aggregate)",
        "M pairs/s",
        r.reps(7),
        0,
        &["", "≥ 1.5× one process", ""],
        vec![
            (
                "shmval, 1 process",
                Box::new(|| processes(&name, 1, n2, "shm")),
            ),
            (
                "shmval, 2 processes",
                Box::new(|| processes(&name, 2, n2, "shm")),
            ),
            (
                "glibc, 2 processes (private heaps)",
                Box::new(|| processes(&name, 2, n2, "glibc")),
            ),
        ],
    );
    assert_eq!(pool.stats().in_use, 0, "every block came back");
}

/// Runs `k` worker processes doing `n` pairs each after a common start signal;
/// returns aggregate millions of pairs per second (from the first start to the
/// last finish, on CLOCK_MONOTONIC, comparable across processes).
fn processes(pool_name: &str, k: usize, n: u64, mode: &str) -> f64 {
    let pool = Pool::open(pool_name, Duration::from_secs(5)).unwrap();
    let go = pool.user_word(7);
    let ready = pool.user_word(6);
    go.store(0, Ordering::SeqCst);
    ready.store(0, Ordering::SeqCst);
    let exe = std::env::current_exe().unwrap();
    let kids: Vec<_> = (0..k)
        .map(|_| {
            Command::new(&exe)
                .args(["worker", pool_name, &n.to_string(), mode])
                .stdout(Stdio::piped())
                .spawn()
                .expect("spawn worker")
        })
        .collect();
    while ready.load(Ordering::SeqCst) < k as u64 {
        std::thread::sleep(Duration::from_micros(200));
    }
    go.store(1, Ordering::SeqCst);
    let (mut start, mut end) = (u64::MAX, 0u64);
    for kid in kids {
        let out = kid.wait_with_output().unwrap();
        assert!(out.status.success(), "worker failed");
        let s = String::from_utf8(out.stdout).unwrap();
        let mut it = s.split_whitespace().map(|v| v.parse::<u64>().unwrap());
        start = start.min(it.next().unwrap());
        end = end.max(it.next().unwrap());
    }
    (k as u64 * n) as f64 / ((end - start) as f64 / 1e9) / 1e6
}

fn mono_ns() -> u64 {
    let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).unwrap();
    t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64
}

/// `worker POOL N MODE`: a child process of the two-process scenario.
pub fn worker(args: &[String]) {
    let pool = Pool::open(&args[0], Duration::from_secs(5)).unwrap();
    let n: u64 = args[1].parse().unwrap();
    let ls = sizes();
    // Warm up the thread's cache slot and slabs before the start signal.
    pairs_pool(&pool, &ls, 10_000);
    pool.user_word(6).fetch_add(1, Ordering::SeqCst);
    while pool.user_word(7).load(Ordering::SeqCst) == 0 {
        std::hint::spin_loop();
    }
    let start = mono_ns();
    let acc = if args[2] == "shm" {
        pairs_pool(&pool, &ls, n)
    } else {
        pairs_glibc(&ls, n)
    };
    let end = mono_ns();
    assert_eq!(acc, expected(n));
    println!("{start} {end}");
}

/// `profile`: only the explicit-cache pair loop, for callgrind/perf.
pub fn profile() {
    let name = format!("shmval-bench-prof-{}", std::process::id());
    let pool = crate::harness::bench_pool(&name, 64 << 20).unwrap();
    let ls = sizes();
    let n = 1_000_000;
    assert_eq!(pairs_cache(&pool, &ls, n), expected(n));
    assert_eq!(pairs_pool(&pool, &ls, n), expected(n));
    assert_eq!(pairs_glibc(&ls, n), expected(n));
}
