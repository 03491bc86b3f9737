//! A shared dict and the allocator against a model (a `BTreeMap` and a list of
//! blocks), with "kill and recover" steps: a forked child runs the next operation
//! with a fail point armed that SIGKILLs it inside a critical section (ledger,
//! growth, slot overwrite, large allocation), then the parent gives back what the
//! child held (`Pool::reclaim_dead`), checks the pool, and requires the key the child
//! touched to hold its old value or its new one — nothing else changed, and no other
//! key. After every input the dict must equal the model, `Pool::check` find no
//! problem, and every block the allocator handed out read back what was written.
//!
//! Input: 4-byte records `op key val:u16`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shmval::fail::{self, Action};
use shmval::{Pool, PoolOptions, ShmTab, Val};
use std::alloc::Layout;
use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

/// The fail points a child may die at (each inside a critical section the next
/// operation can reach).
const POINTS: [&str; 5] = [
    "ledger.add",
    "shm.growth.logged",
    "shm.growth.switched",
    "shm.overwrite.torn",
    "alloc.large.unlinked",
];

fn pool() -> &'static Pool {
    static POOL: OnceLock<Pool> = OnceLock::new();
    POOL.get_or_init(|| {
        // Outside /dev/shm (libFuzzer exits without destructors): a directory of its
        // own, emptied of earlier runs' pools first.
        let dir = std::env::temp_dir().join("shmval-fuzz-model");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let opts = PoolOptions::new().dir(&dir);
        Pool::create_with(&format!("model-{}", std::process::id()), 8 << 20, &opts).unwrap()
    })
}

fn value(kind: u8, val: u16) -> Val {
    if kind == 0 {
        Val::I64(i64::from(val))
    } else {
        // Longer than 8 bytes: an object in the pool.
        Val::from(format!("value number {val:05}"))
    }
}

enum Op {
    Insert(i64, Val),
    Remove(i64),
    Get(i64),
    Alloc(usize, u8),
    Free(usize),
}

fn decode(r: &[u8]) -> (Op, bool) {
    let key = i64::from(r[1] % 32);
    let val = u16::from_le_bytes([r[2], r[3]]);
    let op = match r[0] % 8 {
        0 | 1 => Op::Insert(key, value(r[0] % 2, val)),
        2 => Op::Remove(key),
        3 => Op::Get(key),
        4 => Op::Alloc(1 + usize::from(val) % 9000, r[1]),
        5 => Op::Free(usize::from(val)),
        _ => Op::Insert(key, value(1, val)),
    };
    // High bit of the op byte: run this operation in a child that dies inside it.
    (op, r[0] & 0x80 != 0)
}

/// Applies `op` to the shared table or the raw blocks.
fn apply(t: &ShmTab, blocks: &mut Vec<(shmval::Offset, Layout, u8)>, op: &Op) {
    let pool = pool();
    match op {
        Op::Insert(k, v) => {
            t.insert(*k, v.clone()).unwrap();
        }
        Op::Remove(k) => {
            t.remove(*k).unwrap();
        }
        Op::Get(_) => {}
        Op::Alloc(size, fill) => {
            let l = Layout::from_size_align(*size, 8).unwrap();
            if let Ok(o) = pool.alloc(l) {
                let p = pool.resolve(o, *size).unwrap();
                // SAFETY: the block just allocated, `size` bytes, ours.
                unsafe { std::ptr::write_bytes(p.as_ptr(), *fill, *size) };
                blocks.push((o, l, *fill));
            }
        }
        Op::Free(i) => {
            if !blocks.is_empty() {
                let (o, l, _) = blocks.swap_remove(i % blocks.len());
                // SAFETY: allocated above with `l`, freed once.
                unsafe { pool.free(o, l) }.unwrap();
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let pool = pool();
    let root = pool.root().unwrap();
    root.insert("m", pool.new_tab().unwrap()).unwrap();
    let t = root.get("m").unwrap().unwrap().as_tab().unwrap();
    let mut model: BTreeMap<i64, Val> = BTreeMap::new();
    let mut blocks: Vec<(shmval::Offset, Layout, u8)> = Vec::new();
    for r in data.chunks_exact(4).take(200) {
        let (op, die) = decode(r);
        if die && matches!(op, Op::Insert(..) | Op::Remove(_) | Op::Alloc(..)) {
            let point = POINTS[usize::from(r[2]) % POINTS.len()];
            let skip = u64::from(r[3] % 3);
            // SAFETY: the child only runs the operation and leaves with `_exit`.
            let pid = unsafe { libc::fork() };
            if pid == 0 {
                // SIGKILL, not abort: libFuzzer's handlers must not report the child.
                fail::set_after(
                    point,
                    skip,
                    Action::Call(Arc::new(|| {
                        // SAFETY: ends this (child) process at once.
                        unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
                    })),
                );
                let mut mine = Vec::new();
                apply(&t, &mut mine, &op);
                // SAFETY: leave without running the parent's destructors.
                unsafe { libc::_exit(0) };
            }
            let mut status = 0;
            // SAFETY: our own child.
            unsafe { libc::waitpid(pid, &mut status, 0) };
            pool.reclaim_dead();
            // The key the child touched holds its old value or its new one.
            match &op {
                Op::Insert(k, v) => {
                    let now = t.get_val(*k).unwrap();
                    assert!(
                        now.as_ref() == model.get(k) || now.as_ref() == Some(v),
                        "key {k} after a child died at {point}: {now:?}"
                    );
                    match now {
                        Some(x) => model.insert(*k, x),
                        None => model.remove(k),
                    };
                }
                Op::Remove(k) => {
                    let now = t.get_val(*k).unwrap();
                    assert!(now.is_none() || now.as_ref() == model.get(k), "key {k}: {now:?}");
                    if now.is_none() {
                        model.remove(k);
                    }
                }
                _ => {} // a block the child allocated is its own (leaked at worst)
            }
            let c = pool.check();
            assert!(c.is_ok(), "after a child died at {point}: {:?}", c.problems);
            continue;
        }
        apply(&t, &mut blocks, &op);
        match op {
            Op::Insert(k, v) => {
                model.insert(k, v);
            }
            Op::Remove(k) => {
                model.remove(&k);
            }
            Op::Get(k) => assert_eq!(t.get_val(k).unwrap().as_ref(), model.get(&k)),
            _ => {}
        }
    }
    // The whole table, the pool, the blocks.
    let Val::Tab(now) = t.to_val().unwrap() else {
        panic!("not a dict")
    };
    let now: BTreeMap<i64, Val> = now.into_iter().map(|(k, v)| (k.as_i64().unwrap(), v)).collect();
    assert_eq!(now, model);
    let c = pool.check();
    assert!(c.is_ok(), "{:?}", c.problems);
    for (o, l, fill) in blocks.drain(..) {
        let p = pool.resolve(o, l.size()).unwrap();
        // SAFETY: our block, `size` bytes.
        let bytes = unsafe { std::slice::from_raw_parts(p.as_ptr(), l.size()) };
        assert!(bytes.iter().all(|&b| b == fill), "a block changed under its owner");
        // SAFETY: allocated with `l`, freed once.
        unsafe { pool.free(o, l) }.unwrap();
    }
    drop(t);
    root.remove("m").unwrap();
});
