//! Pools that grow while processes are attached (`PoolOptions::max_size`): three
//! processes fill a pool from 1 MiB to 256 MiB while reading each other's values,
//! and a grower killed at each step of a growth leaves a pool that checks clean and
//! grows on. (Every backend's growth: `tests/backends.rs`, `conformance_growth`; a
//! full file system: `tests/full_fs.rs`.)

mod common;

use common::{child_done, role, spawn, xorshift, Scratch};
use shmval::{AllocError, Pool, PoolOptions, ValError};
use std::sync::atomic::Ordering::SeqCst;
use std::time::{Duration, Instant};

const MB: u64 = 1 << 20;
const SECS: Duration = Duration::from_secs(1);

fn env(k: &str) -> String {
    std::env::var(k).unwrap_or_else(|_| panic!("{k} not set"))
}

/// The value process `p` stores as its `i`th: an array of `p * 1e6 + i`, mostly
/// 32 KiB (small blocks... and large ones), every 16th 1 MiB.
fn value(p: u64, i: u64) -> Vec<f64> {
    let n = if i % 16 == 15 { 128 << 10 } else { 4 << 10 };
    vec![(p * 1_000_000 + i) as f64; n]
}

fn key(p: u64, i: u64) -> String {
    format!("p{p}-{i}")
}

/// Whether the value under `key(p, i)` is there and intact (`None`: not there).
fn intact(pool: &Pool, p: u64, i: u64) -> Option<bool> {
    let got: Vec<f64> = pool.root().unwrap().get_as(key(p, i).as_str()).unwrap()?;
    Some(got == value(p, i))
}

fn full(e: &ValError) -> bool {
    matches!(e, ValError::Alloc(AllocError::Exhausted { .. }))
}

#[test]
fn three_processes_fill_a_pool_from_1_to_256_mib_reading_each_others_values() {
    if let Some(r) = role() {
        // A filler: stores values until the pool is full at its maximum, reading
        // a random value of another filler after each.
        let me: u64 = r.strip_prefix("filler-").unwrap().parse().unwrap();
        let pool = Pool::open(&env("POOL"), 10 * SECS).unwrap();
        let mut rng = xorshift(me + 7);
        let (mut i, mut seen) = (0u64, 0u64);
        loop {
            match pool
                .root()
                .unwrap()
                .insert(key(me, i).as_str(), value(me, i))
            {
                Ok(_) => i += 1,
                Err(e) if full(&e) => break,
                Err(e) => panic!("filler {me}: {e}"),
            }
            let other = (me + 1 + rng() % 2) % 3;
            let done = pool.user_word(4 + other as usize).load(SeqCst);
            let upto = if done > 0 { done - 1 } else { i };
            let j = rng() % upto.max(1);
            match intact(&pool, other, j) {
                Some(true) => seen += 1,
                Some(false) => panic!("filler {me} read {} changed", key(other, j)),
                None => {}
            }
        }
        assert!(seen > 0, "filler {me} never read another's value");
        pool.user_word(4 + me as usize).store(i + 1, SeqCst);
        child_done();
    }
    let s = Scratch::new("grow3");
    let opts = PoolOptions::new().max_size(256 * MB);
    let pool = Pool::create_with(s.name(), MB, &opts).unwrap();
    drop(pool.root().unwrap());
    let t = Instant::now();
    let mut kids: Vec<_> = (0..3)
        .map(|k| {
            spawn(
                "three_processes_fill_a_pool_from_1_to_256_mib_reading_each_others_values",
                &format!("filler-{k}"),
                &[("POOL", s.0.clone())],
            )
        })
        .collect();
    for (k, kid) in kids.iter_mut().enumerate() {
        common::wait_ok(kid, 120 * SECS, &format!("filler {k}"));
    }
    eprintln!(
        "three fillers took the pool to {} MiB in {:?}",
        pool.size() >> 20,
        t.elapsed()
    );
    assert!(
        pool.size() > 250 * MB && pool.size() <= 256 * MB,
        "{}",
        pool.size()
    );
    // The parent mapped only the first megabyte; it reads everything now.
    let mut total = 0;
    for p in 0..3u64 {
        let n = pool.user_word(4 + p as usize).load(SeqCst) - 1;
        assert!(n > 100, "filler {p} stored only {n}");
        for i in 0..n {
            assert_eq!(intact(&pool, p, i), Some(true), "{}", key(p, i));
        }
        total += n;
    }
    pool.reclaim_dead();
    let c = pool.check();
    assert!(c.is_ok() && c.leaks().is_empty(), "{c:?}");
    assert!(c.objects as u64 > total);
    // Emptied, the grown pool takes one block of most of its size.
    let root = pool.root().unwrap();
    while root.popitem().unwrap().is_some() {}
    let most = std::alloc::Layout::from_size_align(128 * MB as usize, 16).unwrap();
    let off = pool.alloc(most).unwrap();
    // SAFETY: allocated just above with `most`, freed once.
    unsafe { pool.free(off, most).unwrap() };
}

/// The fail points of one growth, in order (see `Large::grow`).
const STEPS: [&str; 4] = [
    "alloc.grow.extended",
    "alloc.grow.written",
    "alloc.grow.committed",
    "alloc.grow.binned",
];

#[test]
fn a_grower_killed_at_each_step_leaves_a_pool_that_checks_clean_and_grows_on() {
    if role().is_some() {
        // Stores arrays until the fail point ends the process inside a growth.
        let pool = Pool::open(&env("POOL"), 10 * SECS).unwrap();
        let root = pool.root().unwrap();
        for i in 0.. {
            root.insert(key(9, i).as_str(), value(9, i)).unwrap();
            pool.user_word(4).store(i + 1, SeqCst);
        }
        unreachable!();
    }
    for step in STEPS {
        let s = Scratch::new("growkill");
        let opts = PoolOptions::new().max_size(64 * MB);
        let pool = Pool::create_with(s.name(), MB, &opts).unwrap();
        pool.root().unwrap().insert("before", "the crash").unwrap();
        let mut kid = spawn(
            "a_grower_killed_at_each_step_leaves_a_pool_that_checks_clean_and_grows_on",
            "grower",
            &[
                ("POOL", s.0.clone()),
                ("SHMVAL_FAILPOINTS", format!("{step}=abort")),
            ],
        );
        let st = kid.wait().unwrap();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&st),
            Some(nix::sys::signal::Signal::SIGABRT as i32),
            "{step}: the grower did not die at the point ({st})"
        );
        let stored = pool.user_word(4).load(SeqCst);
        pool.reclaim_dead();
        let c = pool.check();
        assert!(c.is_ok() && c.leaks().is_empty(), "{step}: {c:?}");
        for i in 0..stored {
            assert_eq!(intact(&pool, 9, i), Some(true), "{step}: {}", key(9, i));
        }
        // The pool grows on past the death, to its maximum.
        let root = pool.root().unwrap();
        let mut i = 0;
        loop {
            match root.insert(key(8, i).as_str(), value(8, i)) {
                Ok(_) => i += 1,
                Err(e) if full(&e) => break,
                Err(e) => panic!("{step}: {e}"),
            }
        }
        assert!(pool.size() > 60 * MB, "{step}: {}", pool.size());
        let c = pool.check();
        assert!(c.is_ok() && c.leaks().is_empty(), "{step}: {c:?}");
        // A fresh opener agrees.
        let again = Pool::open(s.name(), SECS).unwrap();
        assert_eq!(again.size(), pool.size());
        assert_eq!(intact(&again, 8, i - 1), Some(true));
    }
}

#[test]
fn a_pool_with_a_fixed_base_grows_at_that_base_in_every_process() {
    // Far from where the kernel places mappings by default.
    const BASE: usize = 0x3f00_0000_0000;
    if role().is_some() {
        let pool = Pool::open(&env("POOL"), 10 * SECS).unwrap();
        assert_eq!(pool.base().as_ptr() as usize, BASE);
        let root = pool.root().unwrap();
        let mut i = 0;
        while pool.size() <= 16 * MB {
            root.insert(key(5, i).as_str(), value(5, i)).unwrap();
            i += 1;
        }
        pool.user_word(4).store(i, SeqCst);
        child_done();
    }
    let s = Scratch::new("growfixed");
    let opts = PoolOptions::new().max_size(64 * MB).fixed_base(BASE);
    let pool = Pool::create_with(s.name(), MB, &opts).unwrap();
    assert_eq!(pool.base().as_ptr() as usize, BASE);
    let mut kid = spawn(
        "a_pool_with_a_fixed_base_grows_at_that_base_in_every_process",
        "grower",
        &[("POOL", s.0.clone())],
    );
    common::wait_ok(&mut kid, 60 * SECS, "grower");
    let n = pool.user_word(4).load(SeqCst);
    assert!(n > 20, "{n}");
    for i in 0..n {
        assert_eq!(intact(&pool, 5, i), Some(true), "{}", key(5, i));
    }
    assert!(pool.size() > 16 * MB);
}

/// A pool that grew, saved and loaded: the copy starts at the size the pool had and
/// grows on to the same maximum (a snapshot used to make a pool of fixed size).
#[test]
fn a_grown_pool_saved_and_loaded_grows_on_to_its_maximum() {
    let (a, b) = (Scratch::new("grow-save"), Scratch::new("grow-load"));
    let opts = PoolOptions::new().max_size(64 * MB).remove_on_drop(true);
    let pool = Pool::create_with(a.name(), MB, &opts).unwrap();
    let root = pool.root().unwrap();
    for i in 0..32 {
        root.insert(key(0, i).as_str(), value(0, i)).unwrap();
    }
    assert!(pool.size() > MB, "it grew: {}", pool.size());
    let file = std::env::temp_dir().join(format!("{}.snap", a.name()));
    pool.save(&file).unwrap();
    let loaded = Pool::load(&file, b.name(), &PoolOptions::new().remove_on_drop(true));
    let _ = std::fs::remove_file(&file);
    let copy = loaded.unwrap();
    assert_eq!(copy.size(), pool.size(), "made at the size it had");
    assert_eq!(copy.max_size(), 64 * MB, "the same maximum");
    for i in 0..32 {
        assert_eq!(intact(&copy, 0, i), Some(true), "value {i}");
    }
    // It grows on: more than a fixed pool of that size would take.
    let before = copy.size();
    let r = copy.root().unwrap();
    let mut i = 32;
    while copy.size() == before {
        r.insert(key(0, i).as_str(), value(0, i)).unwrap();
        i += 1;
    }
    assert!(copy.check().is_ok());
}
