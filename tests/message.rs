//! The message path: a dict built in place (`Pool::build_tab`, `shm_tab!`) is the
//! dict `pool.share(&tab!{..})` makes, under Python's dict semantics (a repeated key
//! keeps its first place and its last value), frees everything when dropped
//! unfinished, and leaks at most one value when its builder is killed; typed reads
//! (`get_as`, `get_path`, `as_*`); receive iterators ending at `Closed`;
//! `Broadcast::send_many`.

mod common;

use common::{child_done, spawn, Scratch};
use proptest::prelude::*;
use shmval::{
    shm_tab, tab, Broadcast, FromShm, Pipe, Policy, Pool, PoolOptions, ShmTab, ShmVal, Val,
    ValError,
};
use std::time::{Duration, Instant};

const SECS: Duration = Duration::from_secs(1);

fn pool(s: &Scratch) -> Pool {
    Pool::create_with(s.name(), 16 << 20, &PoolOptions::new().remove_on_drop(true)).unwrap()
}

#[test]
fn a_dict_built_in_place_is_the_dict_share_makes() {
    let s = Scratch::new("msg-same");
    let pool = pool(&s);
    let base = pool.stats().in_use;
    let samples = [0.5f64, 1.5, 2.5];
    let long = "a string long enough to be an object of its own";
    let inner = pool.share(&tab! {"x" => 1}).unwrap();
    let built = shm_tab!(pool, {
        "seq" => 7i64, "time" => 9u64, "f" => 1.5f32, "ok" => true, "none" => (),
        "short" => "abc", "long" => long, "owned" => String::from("s"),
        "data" => &samples[..], "ints" => vec![1i32, 2], 3i64 => "int key",
        "inner" => &inner, "heap" => Val::List(vec![Val::I64(1), Val::from("two")]),
    })
    .unwrap();
    let want = tab! {
        "seq" => 7i64, "time" => 9u64, "f" => 1.5f32, "ok" => true, "none" => Val::None,
        "short" => "abc", "long" => long, "owned" => "s",
        "data" => samples.to_vec(), "ints" => vec![1i32, 2], 3i64 => "int key",
        "inner" => tab! {"x" => 1}, "heap" => Val::List(vec![Val::I64(1), Val::from("two")]),
    };
    assert_eq!(built.to_val().unwrap(), want);
    assert_eq!(built.to_string(), pool.share(&want).unwrap().to_string());
    // Keys are found as any dict's (their hashes are the pool's).
    assert_eq!(
        built.get_as::<String>("long").unwrap().as_deref(),
        Some(long)
    );
    assert_eq!(
        built.get_as::<String>(3i64).unwrap().as_deref(),
        Some("int key")
    );
    assert!(built.contains_key("heap").unwrap());
    // The shared handle went in by reference.
    assert_eq!(
        built.get("inner").unwrap().unwrap().offset(),
        inner.offset()
    );
    // An OrderedDict too.
    let mut b = pool.build_otab(2).unwrap();
    b.set("b", 1).unwrap().set("a", 2).unwrap();
    let o = b.finish_ordered().unwrap();
    assert_eq!(o.as_tab().to_string(), "OrderedDict([('b', 1), ('a', 2)])");
    drop((built, inner, o));
    assert_eq!(pool.stats().in_use, base, "everything freed");
}

#[test]
fn a_builder_dropped_unfinished_or_failing_frees_what_it_made() {
    let s = Scratch::new("msg-drop");
    let pool = pool(&s);
    let base = pool.stats().in_use;
    {
        let mut b = pool.build_tab(2).unwrap();
        b.set(
            "a long key, an object of its own",
            "and a long value, another one",
        )
        .unwrap();
        for i in 0..50i64 {
            b.set(i, "grown past its first block").unwrap();
        }
    }
    assert_eq!(pool.stats().in_use, base, "an unfinished builder is freed");
    let mut b = pool.build_tab(1).unwrap();
    b.set("k", "a value long enough to be an object").unwrap();
    let e = b.set(Val::List(vec![]), 1).err().expect("a list is no key");
    assert!(matches!(e, ValError::Unhashable("list")), "{e}");
    let t = b.finish(); // what went in before the error is there
    assert_eq!(t.len().unwrap(), 1);
    drop(t);
    assert_eq!(pool.stats().in_use, base);
    // A full pool: an error, and nothing kept.
    let tiny = Scratch::new("msg-full");
    let small = Pool::create_with(
        tiny.name(),
        1 << 20,
        &PoolOptions::new().remove_on_drop(true),
    )
    .unwrap();
    let before = small.stats().in_use;
    let big = vec![1.0f64; 200_000];
    let r = shm_tab!(small, {"a" => "x", "big" => &big});
    assert!(matches!(r, Err(ValError::Alloc(_))), "{r:?}");
    assert_eq!(small.stats().in_use, before);
}

/// Keys a dict sees as equal: `1`, `1.0` and `True`; str keys.
fn key() -> impl Strategy<Value = Val> {
    prop_oneof![
        (0i64..6).prop_map(Val::I64),
        (0i64..6).prop_map(|i| Val::F64(i as f64)),
        any::<bool>().prop_map(Val::Bool),
        "[a-c]{0,2}".prop_map(Val::from),
        "[a-c]{9,10}".prop_map(Val::from), // objects, not inline
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Any sequence of puts gives Python's dict: a repeated key keeps its first
    /// place (and its first form) and takes the last value.
    #[test]
    fn puts_give_pythons_dict(puts in proptest::collection::vec((key(), 0i64..100), 0..40), cap in 0usize..12) {
        let s = Scratch::new("msg-prop");
        let pool = pool(&s);
        let base = pool.stats().in_use;
        let mut want = Val::tab();
        let mut b = pool.build_tab(cap).unwrap();
        for (k, v) in &puts {
            want.insert(k.clone(), Val::I64(*v)).unwrap();
            b.set(k, *v).unwrap();
        }
        let t = b.finish();
        prop_assert_eq!(t.to_string(), want.to_string());
        prop_assert_eq!(t.len().unwrap(), puts.iter().map(|(k, _)| k).fold(Vec::<&Val>::new(), |mut seen, k| { if !seen.contains(&k) { seen.push(k) } seen }).len());
        for (k, _) in &puts {
            prop_assert_eq!(t.get_val(k.clone()).unwrap(), want.get(k).cloned());
        }
        drop(t);
        prop_assert_eq!(pool.stats().in_use, base);
    }
}

#[test]
fn typed_reads_give_the_type_asked_for_or_say_what_it_was() {
    let s = Scratch::new("msg-typed");
    let pool = pool(&s);
    let t: ShmTab = pool
        .share(&tab! {
            "i" => 7, "u" => u64::MAX, "f" => 2.5, "b" => true, "s" => "text",
            "arr" => vec![1.0f64, 2.0], "list" => Val::List(vec![Val::I64(1), Val::I64(2)]),
            "n" => Val::None, "cfg" => tab! {"net" => tab! {"port" => 8080}},
        })
        .unwrap()
        .as_tab()
        .unwrap();
    assert_eq!(t.get_as::<i64>("i").unwrap(), Some(7));
    assert_eq!(t.get_as::<i32>("i").unwrap(), Some(7));
    assert_eq!(t.get_as::<f64>("i").unwrap(), Some(7.0));
    assert_eq!(t.get_as::<u64>("u").unwrap(), Some(u64::MAX));
    assert!(matches!(
        t.get_as::<i64>("u"),
        Err(ValError::WrongType {
            expected: "int",
            found: "int"
        })
    ));
    assert_eq!(t.get_as::<f64>("f").unwrap(), Some(2.5));
    assert_eq!(t.get_as::<bool>("b").unwrap(), Some(true));
    assert!(
        t.get_as::<i64>("b").is_err(),
        "a bool is not read as an int"
    );
    assert_eq!(t.get_as::<String>("s").unwrap().as_deref(), Some("text"));
    assert_eq!(t.get_as::<Vec<f64>>("arr").unwrap(), Some(vec![1.0, 2.0]));
    assert_eq!(t.get_as::<Vec<i64>>("list").unwrap(), Some(vec![1, 2]));
    assert_eq!(t.get_as::<Option<i64>>("n").unwrap(), Some(None));
    assert_eq!(t.get_as::<Option<i64>>("i").unwrap(), Some(Some(7)));
    let e = t.get_as::<String>("i").unwrap_err();
    assert_eq!(e.to_string(), "expected a str, found a int");
    assert_eq!(t.get_as::<i64>("missing").unwrap(), None);
    assert_eq!(
        t.get_path(&["cfg", "net", "port"])
            .unwrap()
            .and_then(|v| v.as_i64()),
        Some(8080)
    );
    assert!(t
        .get_path(&["cfg", "net", "port", "deeper"])
        .unwrap()
        .is_none());
    assert!(t.get_path(&["nope"]).unwrap().is_none());
    let v = t.get("f").unwrap().unwrap();
    assert_eq!(
        (v.as_f64(), v.as_i64(), v.as_bool()),
        (Some(2.5), None, None)
    );
    assert_eq!(
        ShmTab::from_shm(t.get("cfg").unwrap().unwrap())
            .unwrap()
            .len()
            .unwrap(),
        1
    );
    let heap = t.to_val().unwrap();
    assert_eq!(heap.as_tab().map(|m| m.len()), Some(9));
    assert_eq!(heap.get(&Val::from("b")).and_then(Val::as_bool), Some(true));
    assert_eq!(
        heap.get(&Val::from("list"))
            .and_then(Val::as_list)
            .map(<[Val]>::len),
        Some(2)
    );
    assert!(heap.get(&Val::from("arr")).and_then(Val::as_arr).is_some());
}

#[test]
fn receive_iterators_end_when_the_pipe_is_closed_and_drained() {
    let s = Scratch::new("msg-iter");
    let pool = pool(&s);
    let p = Pipe::create(&pool, "p", 4).unwrap();
    let rx = Pipe::open(&pool, "p", SECS).unwrap();
    let reader = std::thread::spawn(move || {
        let mut got = Vec::new();
        for v in &rx {
            got.push(v.unwrap().as_i64().unwrap());
        }
        got
    });
    for i in 0..100i64 {
        p.send_timeout(ShmVal::from(i), 5 * SECS).unwrap();
    }
    p.close();
    assert_eq!(reader.join().unwrap(), (0..100).collect::<Vec<_>>());

    let b = Broadcast::create(&pool, "b", 8, Policy::Block).unwrap();
    let sub = b.subscribe().unwrap();
    let reader = std::thread::spawn(move || {
        sub.iter()
            .map(|v| v.unwrap().as_i64().unwrap())
            .collect::<Vec<_>>()
    });
    let mut batch: Vec<ShmVal> = (0..50i64).map(ShmVal::from).collect();
    assert_eq!(b.send_many(&mut batch).unwrap(), 50);
    assert!(batch.is_empty());
    b.close();
    assert_eq!(reader.join().unwrap(), (0..50).collect::<Vec<_>>());
    // Closed: what was not sent stays the caller's.
    let mut late = vec![ShmVal::from(1i64), ShmVal::from(2i64)];
    assert!(b.send_many(&mut late).is_err());
    assert_eq!(late.len(), 2);
}

/// Entry point of the re-spawned child processes (a no-op in a normal run).
#[test]
fn child_role_entry() {
    let Some(role) = common::role() else { return };
    assert_eq!(role, "builder");
    let pool = Pool::open(&std::env::var("POOL").unwrap(), 5 * SECS).unwrap();
    let samples = [0.25f64; 16];
    pool.user_word(4)
        .store(1, std::sync::atomic::Ordering::SeqCst);
    for i in 0i64.. {
        let t = shm_tab!(pool, {
            "seq" => i, "name" => "a name long enough to be an object", "data" => &samples[..],
        })
        .unwrap();
        std::hint::black_box(&t);
    }
    child_done();
}

/// A builder killed anywhere (again and again) leaves at most the one value it was
/// making outside the ledger: the replay of its ledger gives back the table and
/// what was in it; the next opener alone frees the rest.
#[test]
fn a_builder_killed_again_and_again_leaks_at_most_a_value_a_death() {
    let s = Scratch::new("msg-kill");
    // Kept when dropped (reopened below); the scratch removes it.
    let pool = Pool::create_with(s.name(), 16 << 20, &PoolOptions::new()).unwrap();
    let base = pool.stats().in_use;
    let kills = 30u64;
    let mut rng = 0x9E37_79B9_7F4A_7C15u64;
    for _ in 0..kills {
        pool.user_word(4)
            .store(0, std::sync::atomic::Ordering::SeqCst);
        let mut kid = spawn("child_role_entry", "builder", &[("POOL", s.0.clone())]);
        let t = Instant::now();
        while pool.user_word(4).load(std::sync::atomic::Ordering::SeqCst) == 0 {
            assert!(t.elapsed() < 10 * SECS, "the builder did not start");
            std::thread::sleep(Duration::from_micros(200));
        }
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        std::thread::sleep(Duration::from_micros(200 + rng % 3000));
        kid.kill().unwrap();
        kid.wait().unwrap();
        pool.reclaim_dead();
    }
    let c = pool.check();
    assert!(c.is_ok(), "{:?}", c.problems);
    eprintln!(
        "builder killed {kills} times: {} objects nothing refers to before the recovery ({:?})",
        c.unreachable.len(),
        c.unreachable
            .iter()
            .map(|u| u.kind)
            .collect::<std::collections::BTreeSet<_>>()
    );
    // A value is three objects (the dict, its string, its array).
    assert!(
        c.unreachable.len() as u64 <= 3 * kills,
        "{} objects left by {kills} deaths",
        c.unreachable.len()
    );
    drop(pool);
    let pool = Pool::open(s.name(), Duration::ZERO).unwrap();
    let c = pool.check();
    assert!(c.is_ok() && c.unreachable.is_empty(), "{c:?}");
    assert_eq!(pool.stats().in_use, base, "the opener alone freed the rest");
}

mod serde_types {
    use serde::{Deserialize, Serialize};
    use std::collections::{BTreeMap, HashMap};

    #[derive(Serialize, Deserialize, PartialEq, Debug, Clone)]
    pub enum Mode {
        Idle,
        Gain(f64),
        Window(u32, u32),
        Region { x: i64, y: i64 },
    }

    #[derive(Serialize, Deserialize, PartialEq, Debug, Clone)]
    pub struct Inner {
        pub id: u16,
        pub label: String,
    }

    #[derive(Serialize, Deserialize, PartialEq, Debug, Clone)]
    pub struct Frame {
        pub seq: u64,
        pub name: String,
        pub samples: Vec<f64>,
        pub counts: Vec<i32>,
        pub words: Vec<String>,
        pub empty: Vec<f64>,
        pub note: Option<String>,
        pub missing: Option<i64>,
        pub modes: Vec<Mode>,
        pub inner: Inner,
        pub pair: (i64, String),
        pub table: BTreeMap<i64, String>,
        pub by_name: HashMap<String, f32>,
        pub flag: bool,
        pub unit: (),
    }
}

#[test]
fn serde_types_go_in_as_python_values_and_come_back() {
    use serde_types::*;
    let s = Scratch::new("msg-serde");
    let pool = pool(&s);
    let base = pool.stats().in_use;
    let f = Frame {
        seq: 7,
        name: "camera 0, a name long enough".into(),
        samples: vec![0.5, 1.5, 2.5],
        counts: vec![1, -2],
        words: vec!["a".into(), "bb".into()],
        empty: vec![],
        note: Some("ok".into()),
        missing: None,
        modes: vec![
            Mode::Idle,
            Mode::Gain(2.0),
            Mode::Window(3, 4),
            Mode::Region { x: -1, y: 2 },
        ],
        inner: Inner {
            id: 9,
            label: "in".into(),
        },
        pair: (1, "one".into()),
        table: [(1, "a".to_string()), (2, "b".to_string())].into(),
        by_name: [("x".to_string(), 1.5f32)].into(),
        flag: true,
        unit: (),
    };
    let v = pool.share_ser(&f).unwrap();
    let t = v.as_tab().unwrap();
    // Field order kept; numbers of one type as arrays; other sequences as lists.
    assert_eq!(
        t.keys()
            .unwrap()
            .iter()
            .map(|k| k.to_string())
            .collect::<Vec<_>>(),
        [
            "'seq'",
            "'name'",
            "'samples'",
            "'counts'",
            "'words'",
            "'empty'",
            "'note'",
            "'missing'",
            "'modes'",
            "'inner'",
            "'pair'",
            "'table'",
            "'by_name'",
            "'flag'",
            "'unit'"
        ]
    );
    assert_eq!(
        t.get("samples").unwrap().unwrap().to_string(),
        "array('d', [0.5, 1.5, 2.5])"
    );
    assert_eq!(
        t.get("counts").unwrap().unwrap().to_string(),
        "array('i', [1, -2])"
    );
    assert_eq!(t.get("words").unwrap().unwrap().to_string(), "['a', 'bb']");
    assert_eq!(t.get("empty").unwrap().unwrap().to_string(), "[]");
    assert_eq!(
        t.get("modes").unwrap().unwrap().to_string(),
        "['Idle', {'Gain': 2.0}, {'Window': (3, 4)}, {'Region': {'x': -1, 'y': 2}}]"
    );
    assert_eq!(t.get("pair").unwrap().unwrap().to_string(), "(1, 'one')");
    assert_eq!(
        t.get("table").unwrap().unwrap().to_string(),
        "{1: 'a', 2: 'b'}"
    );
    assert_eq!(t.get_as::<Option<i64>>("missing").unwrap(), Some(None));
    // The same as the heap value it stands for, and back.
    assert_eq!(v.deserialize::<Frame>().unwrap(), f);
    // From another process's point of view too: a plain dict, read by key.
    assert_eq!(
        t.get_path(&["inner", "label"])
            .unwrap()
            .unwrap()
            .to_string(),
        "'in'"
    );
    // The wrong shape: an error that says so, nothing changed.
    let e = v.deserialize::<Inner>().unwrap_err();
    assert!(matches!(e, ValError::Serde { .. }), "{e}");
    assert!(e.to_string().contains("missing field"), "{e}");
    let e = pool
        .share_ser(&1.5)
        .unwrap()
        .deserialize::<String>()
        .unwrap_err();
    assert!(e.to_string().contains("invalid type"), "{e}");
    drop((v, t));
    // A key the mapping cannot hold (a list): an error, and what was built is freed.
    let bad: std::collections::HashMap<Vec<i32>, String> =
        [(vec![1], "a value long enough to be an object".into())].into();
    let nested = serde_types::Inner {
        id: 1,
        label: "x".repeat(100),
    };
    let e = pool.share_ser(&(nested, bad)).unwrap_err();
    assert!(e.to_string().contains("cannot be a dict key"), "{e}");
    assert_eq!(pool.stats().in_use, base, "everything freed");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    /// Whatever serde data goes in comes back equal.
    #[test]
    fn serde_round_trips(
        xs in proptest::collection::vec(any::<f64>().prop_filter("no NaN", |x| !x.is_nan()), 0..20),
        words in proptest::collection::vec(".{0,12}", 0..6),
        map in proptest::collection::btree_map(any::<i64>(), any::<Option<u8>>(), 0..10),
        nested in proptest::collection::vec(proptest::collection::vec(any::<i16>(), 0..4), 0..4),
    ) {
        let s = Scratch::new("msg-serde-prop");
        let pool = pool(&s);
        let base = pool.stats().in_use;
        let value = (xs, words, map, nested);
        let v = pool.share_ser(&value).unwrap();
        prop_assert_eq!(v.deserialize::<(Vec<f64>, Vec<String>, std::collections::BTreeMap<i64, Option<u8>>, Vec<Vec<i16>>)>().unwrap(), value);
        drop(v);
        prop_assert_eq!(pool.stats().in_use, base);
    }
}
