//! The shared-memory eventcount across real processes: a notify wakes a sleeper in
//! another process, and a sleeper killed while blocked leaves nothing behind.

mod common;

use common::{spawn, wait_ok, Scratch};
use shmval::test_support::{EventCount, WaitResult};
use shmval::{Offset, Pool, PoolOptions};
use std::alloc::Layout;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The eventcount and a flag word living in one pool block at `off`.
fn parts(pool: &Pool, off: u64) -> (&EventCount, &AtomicU64) {
    let p = pool.resolve(Offset::new(off).unwrap(), 16).unwrap();
    // SAFETY: a 16-byte, 16-aligned block of the pool used only as these two atomic
    // types (all-zero is valid for both); the pool outlives the references.
    unsafe {
        (
            &*(p.as_ptr() as *const EventCount),
            &*(p.as_ptr().add(8) as *const AtomicU64),
        )
    }
}

/// Entry point of the re-spawned child processes (a no-op in a normal run).
#[test]
fn child_role_entry() {
    let Some(role) = common::role() else { return };
    let pool = Pool::open(&std::env::var("POOL").unwrap(), Duration::from_secs(5)).unwrap();
    let off: u64 = std::env::var("BLOCK").unwrap().parse().unwrap();
    let (ec, flag) = parts(&pool, off);
    let deadline = Instant::now() + Duration::from_secs(20);
    // Announce, then sleep until the flag is set (the sleeper role never gets it).
    loop {
        let key = ec.prepare();
        pool.user_word(4).store(1, Ordering::Release);
        if flag.load(Ordering::SeqCst) != 0 {
            break;
        }
        assert_eq!(
            ec.wait(key, Some(deadline)),
            WaitResult::Changed,
            "{role}: timed out instead of being woken"
        );
    }
    drop(pool);
    common::child_done();
}

fn setup(s: &Scratch) -> (Pool, u64) {
    let pool =
        Pool::create_with(s.name(), 1 << 20, &PoolOptions::new().remove_on_drop(true)).unwrap();
    let off = pool
        .alloc(Layout::from_size_align(16, 16).unwrap())
        .unwrap()
        .get();
    let (_, flag) = parts(&pool, off);
    flag.store(0, Ordering::SeqCst);
    // SAFETY: a fresh block; zero both words.
    unsafe {
        std::ptr::write_bytes(
            pool.resolve(Offset::new(off).unwrap(), 16)
                .unwrap()
                .as_ptr(),
            0,
            16,
        )
    };
    (pool, off)
}

fn wait_until_sleeping(pool: &Pool) {
    let t = Instant::now();
    while pool.user_word(4).load(Ordering::Acquire) == 0 {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "child never started waiting"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    std::thread::sleep(Duration::from_millis(50)); // let it reach the futex
}

/// A child process asleep on the eventcount at `off` (returns once it sleeps).
fn spawn_sleeper(s: &Scratch, pool: &Pool, off: u64) -> std::process::Child {
    let c = spawn(
        "child_role_entry",
        "sleeper",
        &[("POOL", s.0.clone()), ("BLOCK", off.to_string())],
    );
    wait_until_sleeping(pool);
    c
}

#[test]
fn a_notify_wakes_a_sleeper_in_another_process() {
    let s = Scratch::new("ec");
    let (pool, off) = setup(&s);
    let mut c = spawn_sleeper(&s, &pool, off);
    let (ec, flag) = parts(&pool, off);
    let start = Instant::now();
    flag.store(1, Ordering::SeqCst);
    ec.notify();
    wait_ok(&mut c, Duration::from_secs(30), "sleeper");
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "woken promptly, not by its 20 s deadline"
    );
}

#[test]
fn a_sleeper_killed_while_blocked_leaves_nothing_behind() {
    let s = Scratch::new("eckill");
    let (pool, off) = setup(&s);
    let mut c = spawn_sleeper(&s, &pool, off);
    c.kill().unwrap();
    c.wait().unwrap();
    let (ec, _) = parts(&pool, off);
    let before = ec.events();
    ec.notify(); // clears the dead sleeper's mark
    assert_eq!(ec.events(), before + 1);
    // Nothing is left: a fresh wait with no event times out on time, and a notify with
    // no sleeper does not even need the wake syscall (the mark is clear).
    let key = ec.prepare();
    let t = Instant::now();
    assert_eq!(
        ec.wait(key, Some(t + Duration::from_millis(10))),
        WaitResult::TimedOut
    );
    assert!(t.elapsed() >= Duration::from_millis(10));
}
