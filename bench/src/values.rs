//! Issue 3 scenarios: the small 4-key Tab, 1M int keys in one shared Tab, bytes per Tab.

use crate::harness::{ns_per_op, Report};
use shmval::{shm_tab, tab, Val};
use std::collections::HashMap;
use std::hint::black_box;

fn four_key() -> Val {
    tab! { "seq" => 1, "val" => 1.5, "name" => "sensor", "n" => 7 }
}

pub fn run(r: &mut Report) {
    let name = format!("shmval-bench-val-{}", std::process::id());
    let pool = crate::harness::bench_pool(&name, 512 << 20).expect("bench pool");
    let v = four_key();
    let n: u64 = if r.quick { 20_000 } else { 500_000 };
    let reps = r.reps(11);
    r.compare(
        "build + drop the 4-key Tab from scratch",
        "ns",
        reps,
        2,
        &["≤ 0.6× the heap HashMap", "", ""],
        vec![
            (
                "shmval shm_tab!(pool, {..}) (in place)",
                Box::new(|| {
                    ns_per_op(n, || {
                        for i in 0..n {
                            black_box(
                                shm_tab!(pool, {"seq" => i as i64, "val" => 1.5, "name" => "sensor", "n" => 7})
                                    .unwrap(),
                            );
                        }
                    })
                }),
            ),
            (
                "shmval new_tab + 4 inserts",
                Box::new(|| {
                    ns_per_op(n, || {
                        for i in 0..n {
                            let t = pool.new_tab().unwrap();
                            t.insert("seq", i as i64).unwrap();
                            t.insert("val", 1.5).unwrap();
                            t.insert("name", "sensor").unwrap();
                            t.insert("n", 7).unwrap();
                            black_box(t);
                        }
                    })
                }),
            ),
            (
                "std HashMap<String, Val> (heap)",
                Box::new(|| {
                    ns_per_op(n, || {
                        for i in 0..n {
                            let mut m: HashMap<String, Val> = HashMap::new();
                            m.insert("seq".into(), Val::I64(i as i64));
                            m.insert("val".into(), Val::F64(1.5));
                            m.insert("name".into(), Val::from("sensor"));
                            m.insert("n".into(), Val::I64(7));
                            black_box(m);
                        }
                    })
                }),
            ),
        ],
    );
    r.compare(
        "share + drop a pre-built heap 4-key Tab",
        "ns",
        reps,
        0,
        &[""],
        vec![(
            "shmval pool.share(&tab!{..})",
            Box::new(|| {
                ns_per_op(n, || {
                    for _ in 0..n {
                        black_box(pool.share(black_box(&v)).unwrap());
                    }
                })
            }),
        )],
    );
    assert_eq!(pool.stats().in_use, 0, "every Tab came back");

    let keys: u64 = if r.quick { 100_000 } else { 1_000_000 };
    let sum_want = ((keys as i64 - 1) * keys as i64).to_string();
    let boost_map = crate::harness::peer("boost_map");
    if boost_map.is_none() {
        eprintln!("Boost.Interprocess map peer not built: run bench/setup (skipped)");
    }
    r.compare(
        &format!("{keys} int-key inserts then {keys} lookups, one Tab"),
        "ns/op",
        r.reps(5),
        2,
        &["≤ 1.3× std HashMap", "≤ 1.3× std HashMap", "", ""],
        {
            let mut c: Vec<crate::harness::Candidate<'_>> = vec![
                (
                    "shmval ShmTab",
                    Box::new(|| {
                        ns_per_op(2 * keys, || {
                            let t = pool.new_tab().unwrap();
                            for i in 0..keys as i64 {
                                t.insert(i, i * 2).unwrap();
                            }
                            let mut sum = 0i64;
                            for i in 0..keys as i64 {
                                let Val::I64(x) = t.get_val(i).unwrap().unwrap() else {
                                    panic!()
                                };
                                sum += x;
                            }
                            assert_eq!(sum, (keys as i64 - 1) * keys as i64);
                        })
                    }),
                ),
                (
                    "shmval ShmTab inside one lock() transaction",
                    Box::new(|| {
                        ns_per_op(2 * keys, || {
                            let t = pool.new_tab().unwrap();
                            let tx = t.lock().unwrap();
                            for i in 0..keys as i64 {
                                tx.insert(i, i * 2).unwrap();
                            }
                            let mut sum = 0i64;
                            for i in 0..keys as i64 {
                                sum += tx.get(i).unwrap().and_then(|v| v.as_i64()).unwrap();
                            }
                            assert_eq!(sum, (keys as i64 - 1) * keys as i64);
                        })
                    }),
                ),
                (
                    "std HashMap<i64, i64> (heap)",
                    Box::new(|| {
                        ns_per_op(2 * keys, || {
                            let mut m = HashMap::new();
                            for i in 0..keys as i64 {
                                m.insert(i, i * 2);
                            }
                            let mut sum = 0i64;
                            for i in 0..keys as i64 {
                                sum += m[&black_box(i)];
                            }
                            assert_eq!(sum, (keys as i64 - 1) * keys as i64);
                        })
                    }),
                ),
            ];
            if let Some(p) = boost_map.as_ref() {
                let want = &sum_want;
                c.push((
                    "Boost unordered_map in managed_shared_memory",
                    Box::new(move || crate::harness::run_peer(p, keys, want)),
                ));
            }
            c
        },
    );
    assert_eq!(pool.stats().in_use, 0, "the big Tab came back");

    // Two threads looking keys up in one small dict at once (in shared memory the
    // same as two processes): lookups without the lock share the table's lines
    // read-only; a lock per lookup passes the lock's line between the cores.
    let lookups: i64 = if r.quick { 200_000 } else { 2_000_000 };
    let small = pool.new_tab().unwrap();
    let mut heap = HashMap::new();
    for i in 0..1000i64 {
        small.insert(i, i).unwrap();
        heap.insert(i, i);
    }
    let heap = std::sync::RwLock::new(heap);
    let want = (0..lookups).map(|i| i % 1000).sum::<i64>();
    let both = |one: &(dyn Fn() -> i64 + Sync)| -> f64 {
        let t = std::time::Instant::now();
        std::thread::scope(|s| {
            let a = s.spawn(one);
            let b = s.spawn(one);
            assert_eq!((a.join().unwrap(), b.join().unwrap()), (want, want));
        });
        2.0 * lookups as f64 / t.elapsed().as_secs_f64() / 1e6
    };
    r.compare(
        "1000-key dict, int lookups by 2 threads at once",
        "M/s",
        r.reps(5),
        2,
        &["", "", ""],
        vec![
            (
                "shmval ShmTab::get_val (no lock)",
                Box::new(|| {
                    both(&|| {
                        (0..lookups)
                            .map(|i| match small.get_val(i % 1000).unwrap() {
                                Some(Val::I64(x)) => x,
                                _ => panic!(),
                            })
                            .sum()
                    })
                }),
            ),
            (
                "shmval lock() + get per lookup",
                Box::new(|| {
                    both(&|| {
                        (0..lookups)
                            .map(|i| {
                                let tx = small.lock().unwrap();
                                tx.get(i % 1000).unwrap().and_then(|v| v.as_i64()).unwrap()
                            })
                            .sum()
                    })
                }),
            ),
            (
                "std RwLock<HashMap<i64, i64>> read() per lookup (heap)",
                Box::new(|| {
                    both(&|| {
                        (0..lookups)
                            .map(|i| heap.read().unwrap()[&black_box(i % 1000)])
                            .sum()
                    })
                }),
            ),
        ],
    );
    drop(small);

    for (label, v, target) in [
        (
            "pool bytes of a one-key Tab {'a': 1}",
            tab! { "a" => 1 },
            "≤ 256 B",
        ),
        ("pool bytes of the 4-key Tab", four_key(), ""),
    ] {
        let before = pool.stats().in_use;
        let shared = pool.share(&v).unwrap();
        let bytes = (pool.stats().in_use - before) as f64;
        drop(shared);
        r.compare(
            label,
            "B",
            1,
            0,
            &[target],
            vec![("shmval", Box::new(move || bytes))],
        );
    }
}

/// `profile-values`: 100k shares of the 4-key Tab, for callgrind.
pub fn profile() {
    let name = format!("shmval-bench-valprof-{}", std::process::id());
    let pool = crate::harness::bench_pool(&name, 64 << 20).unwrap();
    let v = four_key();
    for _ in 0..100_000 {
        black_box(pool.share(black_box(&v)).unwrap());
    }
}

/// `profile-tab`: 1M int-key inserts and lookups (the bench scenario), for perf
/// (`SHMVAL_PROFILE_KEYS` for another count, e.g. fewer under callgrind).
pub fn profile_tab() {
    let keys: i64 = std::env::var("SHMVAL_PROFILE_KEYS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let name = format!("shmval-bench-tabprof-{}", std::process::id());
    let pool = crate::harness::bench_pool(&name, 256 << 20).unwrap();
    let t = pool.new_tab().unwrap();
    for i in 0..keys {
        t.insert(i, i).unwrap();
    }
    for i in 0..keys {
        black_box(t.get_val(i).unwrap());
    }
}

/// `profile-build`: 100k 4-key Tabs built in place (`shm_tab!`) and dropped, for
/// callgrind.
pub fn profile_build() {
    let name = format!("shmval-bench-buildprof-{}", std::process::id());
    let pool = crate::harness::bench_pool(&name, 64 << 20).unwrap();
    for i in 0..100_000i64 {
        black_box(
            shm_tab!(pool, {"seq" => i, "val" => 1.5, "name" => "sensor", "n" => 7}).unwrap(),
        );
    }
}

/// `profile-intkeys`: 200k int keys inserted then looked up in one Tab inside one
/// `lock()` transaction, for callgrind.
pub fn profile_intkeys() {
    let name = format!("shmval-bench-intprof-{}", std::process::id());
    let pool = crate::harness::bench_pool(&name, 256 << 20).unwrap();
    let keys = 200_000i64;
    let t = pool.new_tab().unwrap();
    let tx = t.lock().unwrap();
    for i in 0..keys {
        tx.insert(i, i * 2).unwrap();
    }
    let mut sum = 0i64;
    for i in 0..keys {
        sum += tx.get(i).unwrap().and_then(|v| v.as_i64()).unwrap();
    }
    assert_eq!(sum, (keys - 1) * keys);
}
