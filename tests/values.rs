//! Shared values: copy in and out, reference counts and bytes in use, tables across
//! processes.

mod common;

use common::{spawn, wait_ok, Scratch};
use proptest::prelude::*;
use shmval::{fail, tab, Arr, Complex, Pool, PoolOptions, ShmVal, Val, ValError};
use std::time::Duration;

fn pool(s: &Scratch, size: u64) -> Pool {
    Pool::create_with(s.name(), size, &PoolOptions::new().remove_on_drop(true)).unwrap()
}

fn leaf() -> impl Strategy<Value = Val> {
    prop_oneof![
        Just(Val::None),
        any::<bool>().prop_map(Val::Bool),
        any::<i8>().prop_map(Val::I8),
        any::<i32>().prop_map(Val::I32),
        any::<i64>().prop_map(Val::I64),
        any::<u16>().prop_map(Val::U16),
        any::<u64>().prop_map(Val::U64),
        (-1e300f64..1e300).prop_map(Val::F64),
        any::<f32>()
            .prop_filter("no NaN", |f| !f.is_nan())
            .prop_map(Val::F32),
        (any::<f32>(), any::<f32>())
            .prop_filter("no NaN", |(a, b)| !a.is_nan() && !b.is_nan())
            .prop_map(|(a, b)| Val::Complex32(Complex::new(a, b))),
        (-1e9f64..1e9, -1e9f64..1e9).prop_map(|(a, b)| Val::Complex64(Complex::new(a, b))),
        ".{0,40}".prop_map(Val::Str),
        prop::collection::vec(any::<u8>(), 0..40).prop_map(Val::Bytes),
        any::<i128>().prop_map(|i| Val::BigInt(i.into())),
        prop::collection::vec(-1e6f64..1e6, 0..20).prop_map(|v| Val::Arr(Arr::F64(v))),
        prop::collection::vec(any::<i16>(), 0..20).prop_map(|v| Val::Arr(Arr::I16(v))),
        prop::collection::vec(any::<bool>(), 0..20).prop_map(|v| Val::Arr(Arr::Bool(v))),
    ]
}

fn key() -> impl Strategy<Value = Val> {
    prop_oneof![
        any::<i64>().prop_map(Val::I64),
        "[a-z]{0,8}".prop_map(Val::Str),
        any::<bool>().prop_map(Val::Bool)
    ]
}

fn value() -> impl Strategy<Value = Val> {
    leaf().prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Val::List),
            prop::collection::vec(inner.clone(), 0..4).prop_map(Val::Tup),
            prop::collection::vec((key(), inner.clone()), 0..12).prop_map(|kv| {
                let mut t = Val::tab();
                for (k, v) in kv {
                    t.insert(k, v).unwrap();
                }
                t
            }),
            prop::collection::vec((key(), inner), 0..6).prop_map(|kv| {
                let mut t = Val::OTab(Default::default());
                for (k, v) in kv {
                    t.insert(k, v).unwrap();
                }
                t
            }),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    /// `to_val(share(v)) == v`, same repr (so same types), and the bytes come back.
    #[test]
    fn share_then_copy_out_round_trips(v in value()) {
        let s = Scratch::new("prop-rt");
        let pool = pool(&s, 4 << 20);
        let base = pool.stats().in_use;
        let shared = pool.share(&v).unwrap();
        let back = shared.to_val().unwrap();
        prop_assert_eq!(&back, &v);
        prop_assert_eq!(back.to_string(), v.to_string());
        let copy = shared.clone();
        drop(shared);
        prop_assert_eq!(copy.to_val().unwrap().to_string(), v.to_string());
        drop(copy);
        prop_assert_eq!(pool.stats().in_use, base);
    }

    /// Random insert/overwrite/remove/clone/drop over nested values: once every handle
    /// is gone, bytes in use are exactly back to the baseline.
    #[test]
    fn table_operations_leave_no_bytes_behind(
        init in prop::collection::vec((key(), value()), 0..10),
        ops in prop::collection::vec((0u8..5, key(), value()), 1..40),
    ) {
        let s = Scratch::new("prop-ops");
        let pool = pool(&s, 8 << 20);
        let base = pool.stats().in_use;
        // Start from a shared table (1..=8 entries: its first block is embedded in
        // the table's own allocation, then outgrown) or an empty new one.
        let mut model = Val::tab();
        for (k, v) in init {
            model.insert(k, v).unwrap();
        }
        let t = pool.share(&model).unwrap().as_tab().unwrap();
        let mut held: Vec<ShmVal> = Vec::new();
        for (op, k, v) in ops {
            match op {
                0 | 1 => {
                    let old = t.insert(k.clone(), v.clone()).unwrap();
                    let mold = model.insert(k, v).unwrap();
                    prop_assert_eq!(old.map(|o| o.to_val().unwrap()), mold);
                }
                2 => {
                    let got = t.remove(k.clone()).unwrap().map(|o| o.to_val().unwrap());
                    let want = if let Val::Tab(m) = &mut model { m.shift_remove(&k) } else { None };
                    prop_assert_eq!(got, want);
                }
                3 => {
                    if let Some(h) = t.get(k.clone()).unwrap() { held.push(h); }
                }
                _ => {
                    // A shared value stored by reference in two places.
                    let sv = pool.share(&v).unwrap();
                    t.insert(k.clone(), &sv).unwrap();
                    model.insert(k, v).unwrap();
                    held.push(sv);
                }
            }
            prop_assert_eq!(t.len().unwrap(), if let Val::Tab(m) = &model { m.len() } else { 0 });
        }
        prop_assert_eq!(t.to_val().unwrap(), model);
        drop(held);
        drop(t);
        prop_assert_eq!(pool.stats().in_use, base);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 100, ..ProptestConfig::default() })]

    /// A shared list against a `Vec` model: push/pop/set/get, then bytes come back.
    #[test]
    fn list_operations_match_a_vec(ops in prop::collection::vec((0u8..4, any::<usize>(), value()), 1..80)) {
        let s = Scratch::new("prop-list");
        let pool = pool(&s, 8 << 20);
        let base = pool.stats().in_use;
        let l = pool.new_list().unwrap();
        let mut model: Vec<Val> = Vec::new();
        for (op, i, v) in ops {
            match op {
                0 | 1 => {
                    l.push(v.clone()).unwrap();
                    model.push(v);
                }
                2 => prop_assert_eq!(l.pop().unwrap().map(|x| x.to_val().unwrap()), model.pop()),
                _ if model.is_empty() => {
                    let r = l.set(i, v);
                    prop_assert!(matches!(r, Err(ValError::Index { .. })), "set on an empty list");
                }
                _ => {
                    let k = i % model.len();
                    let old = l.set(k, v.clone()).unwrap();
                    prop_assert_eq!(old.to_val().unwrap(), std::mem::replace(&mut model[k], v));
                    prop_assert_eq!(l.get(k).unwrap().unwrap().to_val().unwrap(), model[k].clone());
                }
            }
            prop_assert_eq!(l.len().unwrap(), model.len());
        }
        prop_assert_eq!(l.to_val().unwrap(), Val::List(model));
        prop_assert!(shmval::is_shm(l.as_val()));
        drop(l);
        prop_assert_eq!(pool.stats().in_use, base);
    }
}

#[test]
fn sharing_into_a_full_pool_fails_cleanly_and_leaks_nothing() {
    let s = Scratch::new("full");
    let pool = pool(&s, 1 << 20);
    let base = pool.stats().in_use;
    let big = Val::List(
        (0..20_000)
            .map(|i| Val::Str(format!("item number {i} with some text")))
            .collect(),
    );
    match pool.share(&big) {
        Err(ValError::Alloc(_)) => {}
        other => panic!("expected Alloc, got {other:?}"),
    }
    assert_eq!(pool.stats().in_use, base, "partial build released");
    // The strings' blocks are reusable: as many strings fit again. (Blocks of classes
    // the arena no longer has slabs for may not: empty slabs are not yet returned to
    // the arena — see docs/ARCHITECTURE.md, "Limits".)
    let strs: Vec<ShmVal> = (0..1000)
        .map(|i| {
            pool.share(&Val::Str(format!("item number {i} with some text")))
                .unwrap()
        })
        .collect();
    assert_eq!(strs[999].to_string(), "'item number 999 with some text'");
    drop(strs);
    assert_eq!(pool.stats().in_use, base);
}

#[test]
fn deep_and_long_values_release_without_recursion() {
    let s = Scratch::new("deep");
    let pool = pool(&s, 64 << 20);
    let base = pool.stats().in_use;
    let mut v = Val::None;
    for _ in 0..1000 {
        v = Val::List(vec![v]);
    }
    let shared = pool.share(&v).unwrap();
    assert_eq!(shared.to_val().unwrap(), v);
    drop(shared);
    let mut too_deep = Val::None;
    for _ in 0..1001 {
        too_deep = Val::Tup(vec![too_deep]);
    }
    assert!(matches!(pool.share(&too_deep), Err(ValError::TooDeep)));
    let long = Val::List((0..200_000).map(Val::I64).collect());
    let shared = pool.share(&long).unwrap();
    drop(shared);
    assert_eq!(pool.stats().in_use, base);
    // Forget the heap values without recursion trouble in this test process.
    std::mem::forget(v);
    std::mem::forget(too_deep);
}

#[test]
fn relocking_a_table_inside_its_own_transaction_is_refused_at_once() {
    let s = Scratch::new("reentrant");
    let pool = pool(&s, 1 << 20);
    let t = pool.new_tab().unwrap();
    let tx = t.lock().unwrap();
    let start = std::time::Instant::now();
    assert!(matches!(t.insert("k", 1), Err(ValError::Reentrant)));
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "refused at once, not after the patience limit"
    );
    tx.insert("k", 2).unwrap();
    drop(tx);
    assert_eq!(t.get_val("k").unwrap(), Some(Val::I64(2)));
}

#[test]
fn python_keys_in_shared_tables() {
    let s = Scratch::new("keys");
    let pool = pool(&s, 4 << 20);
    let t = pool.new_tab().unwrap();
    t.insert(1, "int").unwrap();
    assert_eq!(
        t.insert(1.0, "float").unwrap().unwrap().to_string(),
        "'int'"
    );
    assert_eq!(t.get(true).unwrap().unwrap().to_string(), "'float'");
    assert!(t.get("1").unwrap().is_none());
    assert!(matches!(
        t.insert(Val::List(vec![]), 1),
        Err(ValError::Unhashable("list"))
    ));
    assert_eq!(t.to_string(), "{1: 'float'}", "the original key stays");
    for i in 0..1000 {
        t.insert(format!("k{i}"), i).unwrap();
    }
    assert_eq!(t.len().unwrap(), 1001);
    for i in (0..1000).step_by(2) {
        assert_eq!(
            t.remove(format!("k{i}"))
                .unwrap()
                .unwrap()
                .to_val()
                .unwrap(),
            Val::I64(i)
        );
    }
    assert_eq!(t.len().unwrap(), 501);
    assert_eq!(
        t.get("k999").unwrap().unwrap().to_val().unwrap(),
        Val::I64(999)
    );
    assert!(t.get("k998").unwrap().is_none());
}

/// Entry point of the re-spawned child processes (a no-op in a normal run).
#[test]
fn child_role_entry() {
    let Some(role) = common::role() else { return };
    let pool = Pool::open(&std::env::var("POOL").unwrap(), Duration::from_secs(5)).unwrap();
    let root = pool.root().unwrap();
    if role == "counter" {
        let t = root.get("counters").unwrap().unwrap().as_tab().unwrap();
        let n: i64 = std::env::var("N").unwrap().parse().unwrap();
        for i in 0..n {
            let tx = t.lock().unwrap();
            let key = format!("c{}", i % 10);
            let cur = tx
                .get(key.as_str())
                .unwrap()
                .map_or(Val::I64(0), |v| v.to_val().unwrap());
            let Val::I64(cur) = cur else {
                panic!("counter is {cur}")
            };
            tx.insert(key, cur + 1).unwrap();
        }
        drop((t, root, pool));
        common::child_done();
    }
    if role == "arr-writer" {
        let a = root
            .get("samples")
            .unwrap()
            .unwrap()
            .as_arr::<f64>()
            .unwrap()
            .unwrap();
        let mut buf = vec![0.0; a.len()];
        a.read(0, &mut buf).unwrap();
        for x in &mut buf {
            *x *= 2.0;
        }
        a.write(0, &buf).unwrap();
        drop((a, root, pool));
        common::child_done();
    }
    if role == "holder" {
        // Take handles on a table and on one of its values, then get killed.
        let t = root.get("data").unwrap().unwrap();
        let v = t.as_tab().unwrap().get("big").unwrap().unwrap();
        assert_eq!(v.type_name(), "list");
        pool.user_word(4)
            .store(1, std::sync::atomic::Ordering::Release);
        std::thread::sleep(Duration::from_secs(60));
        drop((t, v));
    }
    if role == "inserter" {
        let t = root.get("grow").unwrap().unwrap().as_tab().unwrap();
        let me = std::process::id();
        pool.user_word(4)
            .store(1, std::sync::atomic::Ordering::Release);
        for i in 0.. {
            // Inserts (growing the table again and again) and removals.
            t.insert(
                format!("{me}-{i}"),
                Val::List(vec![Val::I64(i), Val::from("payload")]),
            )
            .unwrap();
            if i % 3 == 0 {
                t.remove(format!("{me}-{}", i / 2)).unwrap();
            }
            if i % 5 == 1 {
                // Replaces a value in place with one of another type (a slot
                // overwrite, which a kill must not leave torn).
                t.insert(format!("{me}-{}", i - 1), REPLACED).unwrap();
            }
        }
    }
    if role == "torn-writer" {
        let t = root.get("t").unwrap().unwrap().as_tab().unwrap();
        let l = root.get("l").unwrap().unwrap().as_list().unwrap();
        // A replace in the table and a set in the list, each stopped by a thread
        // of its own between the slot's two stores (its lock held), as by a
        // holder killed there.
        let stopped = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let stop = {
            let stopped = stopped.clone();
            fail::Action::Call(std::sync::Arc::new(move || {
                stopped.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                std::thread::sleep(Duration::from_secs(60)); // killed here
            }))
        };
        let wait_for = |n| {
            let t = std::time::Instant::now();
            while stopped.load(std::sync::atomic::Ordering::SeqCst) < n {
                assert!(t.elapsed() < Duration::from_secs(30), "not stopped inside");
                std::thread::sleep(Duration::from_millis(1));
            }
        };
        let s1 = stop.clone();
        std::thread::spawn(move || {
            fail::set_for_thread("shm.overwrite.torn", s1);
            t.insert("k7", "a string that replaced an int").unwrap();
        });
        wait_for(1);
        std::thread::spawn(move || {
            fail::set_for_thread("shm.overwrite.torn", stop);
            l.set(1, Val::List(vec![Val::I64(5), Val::I64(6)])).unwrap();
        });
        wait_for(2);
        pool.user_word(4)
            .store(1, std::sync::atomic::Ordering::Release);
        std::thread::sleep(Duration::from_secs(60)); // killed here
    }
    if role == "mover" {
        // Reorders an OrderedDict without end: to the end (in place) and to the
        // front (a new block), through growth-free and compacting paths.
        let t = root.get("lru").unwrap().unwrap().as_otab().unwrap();
        pool.user_word(4)
            .store(1, std::sync::atomic::Ordering::Release);
        for i in 0u64.. {
            let k = (i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 58) as i64 % 40;
            assert!(t.move_to_end(format!("k{k}"), i % 7 != 0).unwrap());
        }
    }
    if role == "tab-locker" {
        let t = root.get("t").unwrap().unwrap().as_tab().unwrap();
        let tx = t.lock().unwrap();
        tx.insert("half", "done").unwrap();
        pool.user_word(4)
            .store(1, std::sync::atomic::Ordering::Release);
        std::thread::sleep(Duration::from_secs(60)); // killed while holding the lock
        drop(tx);
    }
    assert_eq!(role, "modifier");
    let config = root
        .get("config")
        .unwrap()
        .expect("parent published config")
        .as_tab()
        .unwrap();
    assert_eq!(config.get("name").unwrap().unwrap().to_string(), "'sensor'");
    assert_eq!(
        config.get("data").unwrap().unwrap().to_string(),
        "array('d', [1.5, 1.5, 1.5])"
    );
    config.insert("seen_by", std::process::id() as i64).unwrap();
    config.remove("data").unwrap();
    root.insert("reply", tab! { "ok" => true }).unwrap();
    drop((config, root, pool));
    common::child_done();
}

#[test]
fn a_nested_table_under_root_is_read_and_modified_by_another_process() {
    let s = Scratch::new("root");
    let pool = pool(&s, 8 << 20);
    let base = pool.stats().in_use;
    let root = pool.root().unwrap();
    // Grow the root's entry block to what the test will use, then measure.
    root.insert("x", 0).unwrap();
    root.remove("x").unwrap();
    let after_root = pool.stats().in_use;
    root.insert(
        "config",
        tab! { "name" => "sensor", "seq" => 7, "data" => vec![1.5f64; 3] },
    )
    .unwrap();
    let mut c = spawn("child_role_entry", "modifier", &[("POOL", s.0.clone())]);
    wait_ok(&mut c, Duration::from_secs(30), "modifier");
    let config = root.get("config").unwrap().unwrap();
    let v = config.to_val().unwrap();
    assert_eq!(v.get(&Val::from("seen_by")), Some(&Val::I64(c.id() as i64)));
    assert!(v.get(&Val::from("data")).is_none());
    assert_eq!(
        root.get("reply").unwrap().unwrap().to_string(),
        "{'ok': True}"
    );
    drop(config);
    root.remove("config").unwrap();
    root.remove("reply").unwrap();
    assert_eq!(
        pool.stats().in_use,
        after_root,
        "everything but the root table came back"
    );
    assert!(after_root > base);
}

#[test]
fn two_processes_increment_shared_counters_without_losing_updates() {
    let s = Scratch::new("counters");
    let pool = pool(&s, 8 << 20);
    let root = pool.root().unwrap();
    root.insert("counters", Val::tab()).unwrap();
    let n = 100_000;
    let env = [("POOL", s.0.clone()), ("N", n.to_string())];
    let mut kids: Vec<_> = (0..2)
        .map(|_| spawn("child_role_entry", "counter", &env))
        .collect();
    for k in &mut kids {
        wait_ok(k, Duration::from_secs(120), "counter");
    }
    let t = root.get("counters").unwrap().unwrap().as_tab().unwrap();
    let mut total = 0;
    for (_, v) in t.entries().unwrap() {
        let Val::I64(x) = v.to_val().unwrap() else {
            panic!()
        };
        assert_eq!(x, 2 * n / 10, "each of the 10 counters got every increment");
        total += x;
    }
    assert_eq!(total, 2 * n);
}

#[test]
fn a_process_killed_holding_a_table_lock_does_not_stop_the_others() {
    let s = Scratch::new("tablock");
    let pool = pool(&s, 8 << 20);
    let root = pool.root().unwrap();
    root.insert("t", tab! { "a" => 1 }).unwrap();
    let t = root.get("t").unwrap().unwrap().as_tab().unwrap();
    let held = pool.share(&Val::from("kept by the parent")).unwrap();
    let mut c = start_and_wait(&pool, &s, "tab-locker");
    // A waiter blocks on the live holder, then the holder is killed.
    let t2 = t.clone();
    let waiter = std::thread::spawn(move || {
        let t = std::time::Instant::now();
        t2.insert("b", 2).unwrap();
        t.elapsed()
    });
    std::thread::sleep(Duration::from_millis(50));
    assert!(!waiter.is_finished(), "the table is really locked");
    c.kill().unwrap();
    c.wait().unwrap();
    let waited = waiter.join().unwrap();
    assert!(
        waited < Duration::from_secs(10),
        "recovered in bounded time ({waited:?})"
    );
    let v = t.to_val().unwrap();
    assert_eq!(v.get(&Val::from("a")), Some(&Val::I64(1)));
    assert_eq!(v.get(&Val::from("b")), Some(&Val::I64(2)));
    assert_eq!(
        v.get(&Val::from("half")),
        Some(&Val::from("done")),
        "its completed insert stays"
    );
    assert_eq!(held.to_string(), "'kept by the parent'");
}

#[test]
fn remove_on_drop_removes_the_pool_once_every_handle_is_gone() {
    let s = Scratch::new("handles");
    let pool = pool(&s, 4 << 20);
    let root = pool.root().unwrap();
    let shared = pool.share(&tab! { "x" => 1 }).unwrap();
    root.insert("by-ref", &shared).unwrap();
    root.insert("moved", shared).unwrap();
    let got = root.get("by-ref").unwrap().unwrap();
    assert_eq!(got.to_string(), "{'x': 1}");
    assert!(Pool::exists(s.name()));
    drop((got, root, pool));
    assert!(
        !Pool::exists(s.name()),
        "no handle may keep the pool alive after being moved or forgotten"
    );
}

/// The value the inserter overwrites some of its list values with.
const REPLACED: &str = "a string in place of a list";

#[test]
fn a_holder_killed_between_the_two_stores_of_a_slot_leaves_the_new_value_whole() {
    let s = Scratch::new("torn");
    let pool = pool(&s, 4 << 20);
    let root = pool.root().unwrap();
    let entries: Vec<(Val, Val)> = (0..20)
        .map(|i| (Val::from(format!("k{i}")), Val::I64(i)))
        .collect();
    root.insert("t", Val::Tab(entries.into_iter().collect()))
        .unwrap();
    root.insert("l", Val::List(vec![Val::I64(1), Val::I64(2), Val::I64(3)]))
        .unwrap();
    kill_when_ready(&pool, &s, "torn-writer");
    // The next holders replay the logged writes: the new values, whole.
    let t = root.get("t").unwrap().unwrap().as_tab().unwrap();
    let l = root.get("l").unwrap().unwrap().as_list().unwrap();
    assert_eq!(
        t.get("k7").unwrap().unwrap().to_val().unwrap(),
        Val::from("a string that replaced an int")
    );
    assert_eq!(
        l.to_val().unwrap(),
        Val::List(vec![
            Val::I64(1),
            Val::List(vec![Val::I64(5), Val::I64(6)]),
            Val::I64(3)
        ])
    );
    let r = shmval::check_value(root.as_val());
    assert!(r.is_ok(), "{r:?}");
    // Both go on working.
    t.insert("k7", 8).unwrap();
    l.set(1, 9).unwrap();
    assert_eq!(t.get("k7").unwrap().unwrap().to_val().unwrap(), Val::I64(8));
    assert_eq!(l.get(1).unwrap().unwrap().to_val().unwrap(), Val::I64(9));
}

#[test]
fn processes_killed_while_growing_a_table_leave_it_whole() {
    let s = Scratch::new("growkill");
    let pool = pool(&s, 64 << 20);
    let root = pool.root().unwrap();
    root.insert("grow", Val::tab()).unwrap();
    let t = root.get("grow").unwrap().unwrap().as_tab().unwrap();
    kill_repeatedly(&pool, &s, "inserter", 100, 20_000, |k| {
        // Whole after every kill: consistent counts, every value readable.
        let r = shmval::check_value(t.as_val());
        assert!(r.is_ok(), "after kill {k}: {r:?}");
        let pr = pool.check();
        assert!(pr.is_ok(), "after kill {k}: {:?}", pr.problems);
        let v = t.to_val().unwrap();
        let Val::Tab(m) = &v else { panic!() };
        assert_eq!(m.len(), t.len().unwrap(), "after kill {k}");
        for (key, val) in m {
            assert!(
                key.as_str().is_some()
                    && (matches!(val, Val::List(l) if l.len() == 2) || *val == Val::from(REPLACED)),
                "after kill {k}: {key} = {val}"
            );
        }
        // Keep the table from growing without bound across kills.
        if m.len() > 20_000 {
            for key in m.keys().take(15_000) {
                t.remove(key.clone()).unwrap();
            }
        }
    });
}

/// Starts the child `role`, waits until it says (through user word 4) that it
/// stopped where it is to be killed, and SIGKILLs it.
fn kill_when_ready(pool: &Pool, s: &Scratch, role: &str) {
    let mut c = start_and_wait(pool, s, role);
    c.kill().unwrap();
    c.wait().unwrap();
}

/// Clears user word 4, starts the child `role` and waits until it sets the word.
fn start_and_wait(pool: &Pool, s: &Scratch, role: &str) -> std::process::Child {
    pool.user_word(4)
        .store(0, std::sync::atomic::Ordering::Release);
    let c = spawn("child_role_entry", role, &[("POOL", s.0.clone())]);
    let start = std::time::Instant::now();
    while pool.user_word(4).load(std::sync::atomic::Ordering::Acquire) == 0 {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{role} never got ready"
        );
        std::thread::sleep(Duration::from_micros(200));
    }
    c
}

/// Starts the child `role` again and again and SIGKILLs it at a random moment (up to
/// `max_us` after it said it runs, through user word 4), calling `after(n)` after kill
/// `n`. `SHMVAL_CHAOS_KILLS` overrides the number of kills.
fn kill_repeatedly(
    pool: &Pool,
    s: &Scratch,
    role: &str,
    kills: u32,
    max_us: u64,
    mut after: impl FnMut(u32),
) {
    let kills: u32 = std::env::var("SHMVAL_CHAOS_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(kills);
    let mut rng = 0x9E37_79B9u64;
    for n in 0..kills {
        let mut c = start_and_wait(pool, s, role);
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        std::thread::sleep(Duration::from_micros(rng % max_us));
        c.kill().unwrap();
        c.wait().unwrap();
        after(n);
    }
}

#[test]
fn a_reader_killed_while_holding_handles_does_not_stop_the_others() {
    let s = Scratch::new("holder");
    let pool = pool(&s, 8 << 20);
    let root = pool.root().unwrap();
    root.insert(
        "data",
        tab! { "big" => Val::List((0..1000).map(Val::I64).collect()), "n" => 1 },
    )
    .unwrap();
    kill_when_ready(&pool, &s, "holder");
    // Everyone else carries on: the table works, is well formed, and can be removed.
    let t = root.get("data").unwrap().unwrap().as_tab().unwrap();
    t.insert("n", 2).unwrap();
    assert_eq!(t.get("n").unwrap().unwrap().to_string(), "2");
    assert!(shmval::is_shm(t.as_val()));
    drop(t);
    let before = pool.stats().in_use;
    root.remove("data").unwrap();
    // The dead reader's references keep the table and the list alive (leaked by
    // design until a pool check reclaims them); nothing was freed under its feet.
    assert_eq!(
        pool.stats().in_use,
        before,
        "objects a dead process references are not freed"
    );
}

#[test]
fn numeric_arrays_are_read_and_written_in_place_across_processes() {
    let s = Scratch::new("arr");
    let pool = pool(&s, 8 << 20);
    let a = pool.new_arr::<f64>(1000).unwrap();
    let src: Vec<f64> = (0..1000).map(|i| i as f64 / 4.0).collect();
    a.write(0, &src).unwrap();
    assert!(matches!(
        a.write(999, &[1.0, 2.0]),
        Err(ValError::Index { .. })
    ));
    assert!(matches!(a.set(1000, 1.0), Err(ValError::Index { .. })));
    assert_eq!(a.get(1000), None);
    assert!(
        a.as_val().as_arr::<i32>().unwrap().is_none(),
        "wrong element type"
    );
    let root = pool.root().unwrap();
    root.insert("samples", a.as_val()).unwrap();
    let mut c = spawn("child_role_entry", "arr-writer", &[("POOL", s.0.clone())]);
    wait_ok(&mut c, Duration::from_secs(30), "arr-writer");
    assert_eq!(
        a.to_vec(),
        src.iter().map(|x| x * 2.0).collect::<Vec<_>>(),
        "the child's writes are visible in place"
    );
    // Every element type round-trips; a corrupt bool byte reads as true, never UB.
    let b = pool
        .share(&Val::Arr(Arr::Bool(vec![false, true])))
        .unwrap()
        .as_arr::<bool>()
        .unwrap()
        .unwrap();
    assert_eq!(b.to_vec(), vec![false, true]);
    let c64 = pool.new_arr::<Complex<f64>>(2).unwrap();
    c64.set(1, Complex::new(1.5, -2.0)).unwrap();
    assert_eq!(c64.as_val().to_string(), "array('D', [0j, (1.5-2j)])");
    let i8s = pool
        .share(&Val::Arr(Arr::I8(vec![-1, 2])))
        .unwrap()
        .as_arr::<i8>()
        .unwrap()
        .unwrap();
    assert_eq!(i8s.to_vec(), vec![-1, 2]);
    drop((a, b, c64, i8s));
    root.remove("samples").unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 100, ..ProptestConfig::default() })]

    /// Shared strings and bytes read back without copying: the slice of a value
    /// longer than 8 bytes lies in the pool, at the object's data.
    #[test]
    fn shared_strings_and_bytes_are_read_in_place(s in ".{0,40}", b in prop::collection::vec(any::<u8>(), 0..40)) {
        let scratch = Scratch::new("text");
        let pool = pool(&scratch, 1 << 20);
        let base = pool.stats().in_use;
        {
            let hs = pool.share_str(&s).unwrap();
            let hb = pool.share_bytes(&b).unwrap();
            prop_assert_eq!(hs.to_str().unwrap(), s.as_str());
            prop_assert_eq!(hb.to_bytes().unwrap(), b.as_slice());
            prop_assert_eq!(hs.len().unwrap(), s.len());
            for (v, data) in [(hs.as_val(), hs.to_str().unwrap().as_bytes()), (hb.as_val(), hb.to_bytes().unwrap())] {
                match v.offset() {
                    Some(off) => {
                        prop_assert!(data.len() > 8);
                        let at = pool.resolve(shmval::Offset::new(off + 24).unwrap(), data.len()).unwrap();
                        prop_assert_eq!(at.as_ptr().cast_const(), data.as_ptr(), "borrowed from the pool");
                    }
                    None => prop_assert!(data.len() <= 8),
                }
            }
            let v = ShmVal::from(hs.clone());
            prop_assert!(v.as_str().is_some() && v.as_bytes().is_none());
            prop_assert!(ShmVal::from(hb).as_str().is_none());
            prop_assert!(pool.share(&Val::I64(1)).unwrap().as_str().is_none());
        }
        prop_assert_eq!(pool.stats().in_use, base);
    }
}

#[test]
fn a_damaged_shared_string_is_reported_not_trusted() {
    let s = Scratch::new("text-bad");
    let pool = pool(&s, 1 << 20);
    let text = pool.share_str("a string of more than eight bytes").unwrap();
    let off = text.as_val().offset().unwrap();
    let p = pool
        .resolve(shmval::Offset::new(off + 24).unwrap(), 1)
        .unwrap();
    // SAFETY: the first data byte of the string object, which only this test uses.
    unsafe { p.as_ptr().write(0xFF) };
    assert!(matches!(
        text.to_str(),
        Err(shmval::ValError::Corrupt { .. })
    ));
    assert!(text != *"a string of more than eight bytes");
}

/// The model of an `OrderedDict`: `(key, value)` in order.
fn model_pos(m: &[(i64, i64)], k: i64) -> Option<usize> {
    m.iter().position(|e| e.0 == k)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Insert, remove, move_to_end both ways and popitem both ends against a model,
    /// across the sizes with and without an index; every step compares the whole order.
    #[test]
    fn ordered_dict_operations_match_a_model(ops in prop::collection::vec((0u8..6, 0i64..24, any::<i64>()), 1..200)) {
        let s = Scratch::new("prop-otab");
        let pool = pool(&s, 8 << 20);
        let base = pool.stats().in_use;
        let t = pool.new_otab().unwrap();
        let mut m: Vec<(i64, i64)> = Vec::new();
        for (op, k, v) in ops {
            match op {
                0 | 1 => {
                    let old = t.insert(k, v).unwrap().map(|o| o.to_val().unwrap());
                    let want = match model_pos(&m, k) {
                        Some(p) => Some(Val::I64(std::mem::replace(&mut m[p].1, v))),
                        None => { m.push((k, v)); None }
                    };
                    prop_assert_eq!(old, want);
                }
                2 => {
                    let got = t.remove(k).unwrap().map(|o| o.to_val().unwrap());
                    prop_assert_eq!(got, model_pos(&m, k).map(|p| Val::I64(m.remove(p).1)));
                }
                3 | 4 => {
                    let last = op == 3;
                    let moved = t.move_to_end(k, last).unwrap();
                    prop_assert_eq!(moved, model_pos(&m, k).is_some());
                    if let Some(p) = model_pos(&m, k) {
                        let e = m.remove(p);
                        if last { m.push(e) } else { m.insert(0, e) }
                    }
                }
                _ => {
                    let last = v % 2 == 0;
                    let got = t.popitem(last).unwrap()
                        .map(|(k, v)| (k.to_val().unwrap(), v.to_val().unwrap()));
                    let want = if m.is_empty() { None } else if last { m.pop() } else { Some(m.remove(0)) };
                    prop_assert_eq!(got, want.map(|(k, v)| (Val::I64(k), Val::I64(v))));
                }
            }
            prop_assert_eq!(t.len().unwrap(), m.len());
            let order: Vec<Val> = t.keys().unwrap().iter().map(|k| k.to_val().unwrap()).collect();
            prop_assert_eq!(order, m.iter().map(|e| Val::I64(e.0)).collect::<Vec<_>>());
            // Found by key after every reordering (the index follows the moves).
            for &(k, v) in &m {
                prop_assert_eq!(t.get_val(k).unwrap(), Some(Val::I64(v)));
            }
        }
        let mut want = Val::OTab(Default::default());
        for &(k, v) in &m {
            want.insert(k, v).unwrap();
        }
        prop_assert_eq!(t.to_val().unwrap(), want);
        drop(t);
        prop_assert_eq!(pool.stats().in_use, base);
    }
}

#[test]
fn ordered_dicts_are_their_own_type_and_reorder_like_python() {
    let s = Scratch::new("otab");
    let pool = pool(&s, 1 << 20);
    let base = pool.stats().in_use;
    let mut heap = Val::OTab(Default::default());
    for (k, v) in [("b", 1), ("a", 2), ("c", 3)] {
        heap.insert(k, v).unwrap();
    }
    let shared = pool.share(&heap).unwrap();
    assert_eq!(shared.type_name(), "OrderedDict");
    let t = shared.as_otab().expect("an OrderedDict");
    assert!(shared.as_tab().is_some(), "an OrderedDict is a dict");
    assert!(
        pool.share(&Val::tab()).unwrap().as_otab().is_none(),
        "a dict is not an OrderedDict"
    );
    assert!(t.move_to_end("b", true).unwrap());
    assert!(t.move_to_end("c", false).unwrap());
    assert!(!t.move_to_end("zz", true).unwrap(), "absent key");
    assert!(matches!(
        t.move_to_end(Val::List(vec![]), true),
        Err(ValError::Unhashable(_))
    ));
    assert_eq!(t.to_string(), "OrderedDict([('c', 3), ('a', 2), ('b', 1)])");
    // Copied out it is still ordered: equal only to the same order (Python's rule).
    let mut other = Val::OTab(Default::default());
    for (k, v) in [("a", 2), ("c", 3), ("b", 1)] {
        other.insert(k, v).unwrap();
    }
    assert_ne!(t.to_val().unwrap(), other);
    assert_eq!(t.popitem(false).unwrap().unwrap().0.to_string(), "'c'");
    assert_eq!(t.popitem(true).unwrap().unwrap().0.to_string(), "'b'");
    // A plain dict pops LIFO, as dict.popitem() does.
    let d = pool.new_tab().unwrap();
    d.insert(1, "x").unwrap();
    d.insert(2, "y").unwrap();
    assert_eq!(d.popitem().unwrap().unwrap().1.to_string(), "'y'");
    assert_eq!(d.popitem().unwrap().unwrap().1.to_string(), "'x'");
    assert!(d.popitem().unwrap().is_none());
    let fresh = pool.new_otab().unwrap();
    assert_eq!(fresh.to_string(), "OrderedDict()");
    drop((shared, t, d, fresh));
    assert_eq!(pool.stats().in_use, base);
}

#[test]
fn processes_killed_while_reordering_an_ordered_dict_leave_it_whole() {
    let s = Scratch::new("otabkill");
    let pool = pool(&s, 8 << 20);
    let root = pool.root().unwrap();
    let t = pool.new_otab().unwrap();
    for k in 0..40 {
        t.insert(format!("k{k}"), Val::List(vec![Val::I64(k)]))
            .unwrap();
    }
    root.insert("lru", &t).unwrap();
    kill_repeatedly(&pool, &s, "mover", 40, 5_000, |n| {
        // Every key exactly once, with its own value, found by lookup.
        let r = shmval::check_value(t.as_val());
        assert!(r.is_ok(), "after kill {n}: {r:?}");
        let pr = pool.check();
        assert!(pr.is_ok(), "after kill {n}: {:?}", pr.problems);
        let keys: Vec<String> = t.keys().unwrap().iter().map(|k| k.to_string()).collect();
        assert_eq!(t.len().unwrap(), 40, "after kill {n}: {keys:?}");
        let mut sorted = keys.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), 40, "after kill {n}: duplicates in {keys:?}");
        for k in 0..40 {
            let v = t.get_val(format!("k{k}")).unwrap();
            assert_eq!(v, Some(Val::List(vec![Val::I64(k)])), "after kill {n}");
        }
    });
}
