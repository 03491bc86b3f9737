//! Corrupt shared memory never panics (debug builds included) and never reaches
//! undefined behaviour: a pool holding nested values, a pipe with values in flight
//! and the allocator's metadata is mutated one word at a time (a flipped bit, zero,
//! all ones, a random word, an offset into the pool — aligned or not), and a round
//! of operations (`Pool::check` first) runs over it each time. Every result must be a value or a typed
//! error. The pool's bytes are restored between mutations. `SHMVAL_MUTATIONS` sets
//! how many (2,000 by default).

mod common;

use common::Scratch;
use shmval::{check_value, tab, Arr, Pipe, Pool, PoolOptions, ShmVal, Val};
use std::alloc::Layout;
use std::time::{Duration, Instant};

/// A small deterministic generator (xorshift*), so a failure names its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn nested() -> Val {
    let list = Val::List(vec![
        Val::from("alpha"),
        Val::from(7i64),
        Val::F64(2.5),
        Val::Tup(vec![Val::from(1i64), Val::from("one"), Val::None]),
        Val::Bytes(b"\x00\x01\x02 bytes".to_vec()),
    ]);
    let mut ordered = Val::OTab(shmval::Map::new());
    for i in 0..6i64 {
        ordered
            .insert(Val::from(format!("k{i}")), Val::from(i * 11))
            .unwrap();
    }
    tab! {
        "db" => tab! { "host" => "db.example", "port" => 5432i64, "tags" => list },
        "arr" => Val::Arr(Arr::F64((0..32).map(f64::from).collect())),
        "ints" => Val::Arr(Arr::I32((0..16).collect())),
        "big" => Val::BigInt(num_bigint::BigInt::from(1u8) << 100u32),
        "ordered" => ordered,
        "text" => "a longer string that does not fit in an immediate handle",
        "many" => Val::List((0..40i64).map(|i| tab! { "i" => i, "s" => format!("v{i}") }).collect()),
    }
}

/// One round of operations over the (maybe corrupt) pool: each returns a value or
/// a typed error; none may panic or hang.
fn exercise(pool: &Pool, pipe: &Pipe) {
    // The pool-wide check reads everything (allocator, every object, counts) first.
    let r = pool.check();
    let _ = (r.is_ok(), r.leaks().len());
    let Ok(root) = pool.root() else { return };
    let _ = root.to_val();
    let _ = check_value(&ShmVal::from(root.clone()));
    for k in [
        "db", "arr", "ints", "big", "ordered", "text", "many", "missing",
    ] {
        if let Ok(Some(v)) = root.get(k) {
            let _ = v.to_val();
            let _ = check_value(&v);
            let _ = v.to_string();
        }
    }
    let _ = root.insert("new", 1i64);
    let _ = root.remove("text");
    for _ in 0..3 {
        if let Ok(v) = pipe.try_recv() {
            let _ = v.to_val();
        }
    }
    let _ = pipe.recv_timeout(Duration::from_millis(1));
    let _ = pipe.try_send(ShmVal::from(5i64));
    for size in [24usize, 200, 3000, 9000] {
        let l = Layout::from_size_align(size, 8).unwrap();
        if let Ok(off) = pool.alloc(l) {
            // SAFETY: allocated just above with `l` (a corrupt allocator may hand out
            // a block twice: it is only freed, never written).
            let _ = unsafe { pool.free(off, l) };
        }
    }
    let _ = pool.share(&tab! { "after" => "corruption", "n" => 3i64 });
}

#[test]
fn mutated_pools_give_values_or_typed_errors_never_panics() {
    let n: u64 = std::env::var("SHMVAL_MUTATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let seed: u64 = std::env::var("SHMVAL_MUTATION_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x5EED_1234_ABCD_0001);
    let s = Scratch::new("mutation");
    let pool = Pool::create_with(s.name(), 1 << 20, &PoolOptions::new()).unwrap();
    let root = pool.root().unwrap();
    let Val::Tab(m) = nested() else {
        unreachable!()
    };
    for (k, v) in m.iter() {
        root.insert(k.clone(), pool.share(v).unwrap()).unwrap();
    }
    let pipe = Pipe::create(&pool, "p", 8).unwrap();
    for i in 0..5i64 {
        pipe.send(
            pool.share(&tab! { "seq" => i, "name" => "in flight" })
                .unwrap(),
        )
        .unwrap();
    }
    pipe.send(pool.share(&Val::from("a string in flight")).unwrap())
        .unwrap();
    // Warm up (this thread's cache slot, the pipe's receive side), then snapshot.
    exercise(&pool, &pipe);
    let len = pool.stats().high_water.max(64 << 10).min(pool.size()) as usize;
    let base = pool.base().as_ptr();
    // SAFETY: the first `len` bytes of the mapping; nobody else uses the pool.
    let snapshot = unsafe { std::slice::from_raw_parts(base, len) }.to_vec();
    let watchdog = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    {
        let w = watchdog.clone();
        std::thread::spawn(move || {
            let mut last = (u64::MAX, Instant::now());
            loop {
                std::thread::sleep(Duration::from_millis(500));
                let now = w.load(std::sync::atomic::Ordering::Relaxed);
                if now == u64::MAX {
                    return;
                }
                if now != last.0 {
                    last = (now, Instant::now());
                } else if last.1.elapsed() > Duration::from_secs(30) {
                    eprintln!("mutation {now} hangs (seed {seed:#x})");
                    std::process::abort();
                }
            }
        });
    }
    let mut rng = Rng(seed);
    let mut panics = Vec::new();
    for i in 0..n {
        watchdog.store(i, std::sync::atomic::Ordering::Relaxed);
        // SAFETY: restores bytes this test copied out of the same range.
        unsafe { std::ptr::copy_nonoverlapping(snapshot.as_ptr(), base, len) };
        let at = rng.below(len as u64 / 8) * 8;
        let old = u64::from_le_bytes(snapshot[at as usize..at as usize + 8].try_into().unwrap());
        let new = match rng.below(6) {
            0 => old ^ (1 << rng.below(64)),
            1 => 0,
            2 => u64::MAX,
            3 => rng.next(),
            4 => rng.below(len as u64) & !15,
            _ => rng.below(len as u64),
        };
        // SAFETY: an 8-aligned word inside the mapping; the corruption is the test.
        unsafe {
            (base.add(at as usize) as *const std::sync::atomic::AtomicU64)
                .as_ref()
                .unwrap()
                .store(new, std::sync::atomic::Ordering::Relaxed)
        };
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| exercise(&pool, &pipe)));
        if r.is_err() {
            panics.push(format!("mutation {i}: word {at:#x} {old:#x} -> {new:#x}"));
        }
    }
    watchdog.store(u64::MAX, std::sync::atomic::Ordering::Relaxed);
    // SAFETY: as above: the pool goes back to a sound state before it is dropped.
    unsafe { std::ptr::copy_nonoverlapping(snapshot.as_ptr(), base, len) };
    assert!(
        panics.is_empty(),
        "{} of {n} mutations panicked (seed {seed:#x}):\n{}",
        panics.len(),
        panics.join("\n")
    );
}
