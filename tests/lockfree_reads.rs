//! Dict lookups and list reads that take no lock (`get`, `get_val`, `contains_key`,
//! `len` of an immediate value): read against the container's version, they see a
//! whole container while another process changes it — overwrites, inserts and pushes
//! that grow it, removals, pops, rebuilds — and a container whose writer died
//! mid-change is read through the lock, repaired.

mod common;

use common::{child_done, spawn, wait_ok, Scratch};
use shmval::{Pool, PoolOptions, ShmList, ShmTab, Val};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

const SECS: Duration = Duration::from_secs(1);
/// Keys never removed: every lookup of one finds it.
const STAY: i64 = 64;
/// Keys inserted and removed again, a batch at a time.
const BATCH: i64 = 48;

/// The value of key `k` in generation `gen`: the key in the high half, so a value
/// read from another key's entry (or from a block reused meanwhile) shows.
fn enc(k: i64, gen: i64) -> i64 {
    (k << 32) | (gen & 0xffff_ffff)
}

fn table(pool: &Pool) -> ShmTab {
    pool.root()
        .unwrap()
        .get("t")
        .unwrap()
        .unwrap()
        .as_tab()
        .unwrap()
}

fn list(pool: &Pool) -> ShmList {
    pool.root()
        .unwrap()
        .get("l")
        .unwrap()
        .unwrap()
        .as_list()
        .unwrap()
}

/// Entry point of the re-spawned child processes (a no-op in a normal run).
#[test]
fn child_role_entry() {
    let Some(role) = common::role() else { return };
    let pool = Pool::open(&std::env::var("POOL").unwrap(), 5 * SECS).unwrap();
    let t = table(&pool);
    match role.as_str() {
        "writer" => {
            let l = list(&pool);
            let until = Instant::now() + Duration::from_millis(1500);
            let mut gen = 1;
            while Instant::now() < until {
                for k in 0..STAY {
                    t.insert(k, enc(k, gen)).unwrap();
                    l.set(k as usize, enc(k, gen)).unwrap();
                }
                // The list grows (its block switched for a bigger one the first
                // times), then shrinks back.
                for k in STAY..STAY + BATCH {
                    l.push(enc(k, gen)).unwrap();
                }
                for _ in 0..BATCH {
                    assert!(l.pop().unwrap().is_some());
                }
                // A batch of new keys (the table grows, or is rebuilt to drop the
                // removed entries), then gone again.
                let first = STAY + gen * BATCH;
                for k in first..first + BATCH {
                    t.insert(k, enc(k, gen)).unwrap();
                }
                for k in first..first + BATCH {
                    assert!(t.remove(k).unwrap().is_some());
                }
                {
                    let tx = t.lock().unwrap();
                    tx.insert(0, enc(0, gen)).unwrap();
                    tx.insert(-1, enc(-1, gen)).unwrap();
                    tx.remove(-1).unwrap();
                }
                gen += 1;
            }
            pool.root().unwrap().insert("gens", gen).unwrap();
        }
        "torn" => {
            // Killed by its fail point between the two words of the overwrite.
            t.insert("k", 2.5).unwrap();
            unreachable!("the fail point did not fire");
        }
        other => panic!("unknown role {other}"),
    }
    drop((t, pool));
    child_done();
}

fn setup(s: &Scratch) -> Pool {
    let pool =
        Pool::create_with(s.name(), 16 << 20, &PoolOptions::new().remove_on_drop(true)).unwrap();
    let t = pool.new_tab().unwrap();
    for k in 0..STAY {
        t.insert(k, enc(k, 0)).unwrap();
    }
    pool.root().unwrap().insert("t", &t).unwrap();
    let l = pool.new_list().unwrap();
    for k in 0..STAY {
        l.push(enc(k, 0)).unwrap();
    }
    pool.root().unwrap().insert("l", &l).unwrap();
    pool
}

#[test]
fn lookups_without_the_lock_see_whole_tables_while_another_process_changes_them() {
    let s = Scratch::new("lockfree");
    let pool = setup(&s);
    let mut kid = spawn("child_role_entry", "writer", &[("POOL", s.0.clone())]);
    let done = AtomicBool::new(false);
    let looks = AtomicU64::new(0);
    std::thread::scope(|sc| {
        for reader in 0..2 {
            let (pool, done, looks) = (&pool, &done, &looks);
            sc.spawn(move || {
                let (t, l) = (table(pool), list(pool));
                let mut n = 0u64;
                while !done.load(Ordering::Relaxed) {
                    for k in 0..STAY {
                        match t.get_val(k).unwrap() {
                            Some(Val::I64(v)) => assert_eq!(v >> 32, k, "reader {reader}"),
                            other => panic!("reader {reader}: key {k} read as {other:?}"),
                        }
                        assert!(t.contains_key(k).unwrap(), "reader {reader}: key {k} gone");
                        let got = t.get(k).unwrap().and_then(|v| v.as_i64());
                        assert_eq!(got.map(|v| v >> 32), Some(k), "reader {reader}");
                        // A key of the batches: absent, or its own value.
                        let b = STAY + (k * 7919 + n as i64) % 4096;
                        if let Some(v) = t.get_val(b).unwrap() {
                            assert!(matches!(v, Val::I64(v) if v >> 32 == b), "{b}: {v:?}");
                        }
                        let len = t.len().unwrap() as i64;
                        assert!((STAY..=STAY + BATCH + 1).contains(&len), "len {len}");
                        // The list: element k is k's; one past the kept ones is
                        // absent or its own.
                        let got = l.get(k as usize).unwrap().and_then(|v| v.as_i64());
                        assert_eq!(got.map(|v| v >> 32), Some(k), "reader {reader}: [{k}]");
                        let j = STAY + (n as i64 % BATCH);
                        if let Some(v) = l.get(j as usize).unwrap() {
                            assert_eq!(v.as_i64().map(|v| v >> 32), Some(j), "[{j}]");
                        }
                        let len = l.len().unwrap() as i64;
                        assert!((STAY..=STAY + BATCH).contains(&len), "list len {len}");
                        n += 1;
                    }
                }
                looks.fetch_add(n, Ordering::Relaxed);
            });
        }
        wait_ok(&mut kid, 30 * SECS, "the writer");
        done.store(true, Ordering::Relaxed);
    });
    let gens = pool.root().unwrap().get_val("gens").unwrap();
    let Some(Val::I64(gens)) = gens else {
        panic!("the writer left {gens:?}")
    };
    assert!(gens > 10, "the writer made only {gens} generations");
    eprintln!(
        "{} lookups while the writer made {gens} generations",
        looks.load(Ordering::Relaxed)
    );
    assert_eq!(table(&pool).len().unwrap() as i64, STAY);
    assert_eq!(list(&pool).len().unwrap() as i64, STAY);
    let r = pool.check();
    assert!(r.is_ok(), "{:?}", r.problems);
}

/// A writer killed between the two words of an overwrite leaves the slot torn (an
/// int's tag over a float's bits) and the table marked: a lookup without the lock
/// must not take the torn slot, and reads through the lock, which replays the
/// logged value.
#[test]
fn a_lookup_after_a_writer_died_mid_overwrite_gets_the_logged_value() {
    let s = Scratch::new("lockfree-torn");
    let pool = setup(&s);
    let t = table(&pool);
    t.insert("k", 7).unwrap();
    let mut kid = spawn(
        "child_role_entry",
        "torn",
        &[
            ("POOL", s.0.clone()),
            ("SHMVAL_FAILPOINTS", "shm.overwrite.torn=abort".into()),
        ],
    );
    let st = kid.wait().unwrap();
    assert!(
        st.code().is_none(),
        "the writer was not killed at its point: {st:?}"
    );
    assert_eq!(t.get_val("k").unwrap(), Some(Val::F64(2.5)));
    assert_eq!(
        t.get("k").unwrap().unwrap().to_val().unwrap(),
        Val::F64(2.5)
    );
    assert!(t.contains_key("k").unwrap());
    assert_eq!(t.len().unwrap() as i64, STAY + 1);
    // Repaired once: the same answers again, now without the lock.
    for _ in 0..3 {
        assert_eq!(t.get_val("k").unwrap(), Some(Val::F64(2.5)));
    }
}
