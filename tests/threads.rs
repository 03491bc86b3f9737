//! Threads and forks: each thread gets its own cache slot and gives it back when it
//! exits; threads beyond the slot count share slot 0; a forked child never writes the
//! parent's slot.

mod common;

use common::{spawn, wait_ok, Scratch};
use shmval::{Pool, PoolOptions};
use std::alloc::Layout;
use std::time::Duration;

fn churn(pool: &Pool, n: usize) {
    churn_sizes(pool, n, 300)
}

fn churn_sizes(pool: &Pool, n: usize, spread: usize) {
    let mut live = Vec::new();
    for i in 0..n {
        let l = Layout::from_size_align(16 + i % spread, 8).unwrap();
        let off = pool.alloc(l).unwrap_or_else(|e| {
            let st = pool.stats();
            let per: Vec<_> = st
                .classes
                .iter()
                .filter(|c| c.slabs > 0)
                .map(|c| (c.size, c.slabs, c.in_use, c.free))
                .collect();
            panic!(
                "{e}: slabs {} arena_used {} of {}; (size, slabs, in_use, free) {per:?}",
                st.slabs, st.arena_used, st.arena
            )
        });
        live.push((off, l));
        if live.len() > 32 {
            let (o, l) = live.swap_remove(i % live.len());
            // SAFETY: our live block with its layout.
            unsafe { pool.free(o, l) }.unwrap();
        }
    }
    for (o, l) in live {
        // SAFETY: as above.
        unsafe { pool.free(o, l) }.unwrap();
    }
}

#[test]
fn threads_give_their_slots_back_when_they_exit() {
    let s = Scratch::new("threads");
    let pool =
        Pool::create_with(s.name(), 16 << 20, &PoolOptions::new().remove_on_drop(true)).unwrap();
    for _round in 0..3 {
        let hs: Vec<_> = (0..16)
            .map(|_| {
                let p = pool.clone();
                std::thread::spawn(move || {
                    churn(&p, 20_000);
                    assert!(p.slots_in_use() >= 1);
                })
            })
            .collect();
        for h in hs {
            h.join().unwrap();
        }
        assert_eq!(
            pool.slots_in_use(),
            0,
            "every exited thread released its slot"
        );
    }
    assert_eq!(pool.stats().in_use, 0);
}

#[test]
fn more_threads_than_slots_share_slot_zero() {
    let s = Scratch::new("slots");
    // 2 MiB: 15 cache slots and room for 31 slabs; 23 threads use 8 size classes, so
    // slots must share slabs through the depot (one slab per slot per class would
    // need 120; a slot keeps at most two batches of a class).
    let pool =
        Pool::create_with(s.name(), 2 << 20, &PoolOptions::new().remove_on_drop(true)).unwrap();
    let nslots = pool.heap().slots();
    let n = nslots as usize + 8;
    let arrived = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let hs: Vec<_> = (0..n)
        .map(|_| {
            let (p, a) = (pool.clone(), arrived.clone());
            std::thread::spawn(move || {
                churn_sizes(&p, 200, 112); // claims a slot or falls back to slot 0
                a.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                // Stay alive until all have their slot (no Barrier: a panicking
                // thread must not hang the others).
                let t = std::time::Instant::now();
                while a.load(std::sync::atomic::Ordering::SeqCst) < n {
                    assert!(t.elapsed() < Duration::from_secs(30), "a thread died");
                    std::thread::sleep(Duration::from_millis(1));
                }
                churn_sizes(&p, 2_000, 112);
            })
        })
        .collect();
    for h in hs {
        h.join().unwrap();
    }
    assert!(pool.stats().slabs <= 31);
    assert_eq!(pool.slots_in_use(), 0);
    assert_eq!(pool.stats().in_use, 0);
}

/// Entry point of the re-spawned child processes (a no-op in a normal run).
#[test]
fn child_role_entry() {
    let Some(role) = common::role() else { return };
    if role == "racers" {
        return racers();
    }
    assert_eq!(role, "forker");
    let pool = Pool::open(&std::env::var("POOL").unwrap(), Duration::from_secs(5)).unwrap();
    churn(&pool, 1000); // this thread now owns a slot
    let before = pool.slots_in_use();
    // SAFETY: the child only allocates, frees and exits.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0);
    if pid == 0 {
        churn(&pool, 20_000);
        // The child claimed a slot of its own instead of writing the parent's.
        let ok = pool.slots_in_use() == before + 1;
        // SAFETY: leave the child without running the parent's destructors.
        unsafe { libc::_exit(if ok { 0 } else { 1 }) };
    }
    let mut status = 0;
    // SAFETY: waiting for our own child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "forked child status {status}"
    );
    churn(&pool, 20_000);
    // The dead child's slot is reclaimed; the parent's own slot still works.
    assert_eq!(pool.reclaim_dead().slots, 1);
    assert_eq!(pool.slots_in_use(), before);
    drop(pool);
    common::child_done();
}

#[test]
fn a_forked_child_uses_its_own_slot() {
    let s = Scratch::new("fork");
    let pool =
        Pool::create_with(s.name(), 16 << 20, &PoolOptions::new().remove_on_drop(true)).unwrap();
    let mut c = spawn("child_role_entry", "forker", &[("POOL", s.0.clone())]);
    wait_ok(&mut c, Duration::from_secs(60), "forker");
    assert_eq!(pool.stats().in_use, 0);
}

/// Threads of a fresh process asking for its identity at the same moment (as two
/// threads creating pools at once do): all must get the same token. Exits 0 if so.
fn racers() {
    use shmval_alloc::Platform;
    let n = 16;
    let go = std::sync::Barrier::new(n);
    let tokens: Vec<u64> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..n)
            .map(|_| {
                let go = &go;
                s.spawn(move || {
                    go.wait();
                    shmval::LinuxPlatform::process_token()
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let later = shmval::LinuxPlatform::process_token();
    if tokens.iter().any(|&t| t != later) {
        eprintln!("one process, several tokens: {tokens:x?}, then {later:x}");
        std::process::exit(1);
    }
    common::child_done();
}

/// One process, one identity: threads that first touch a pool at the same moment
/// share one process token. (Two drawn at once, the second overwriting the first,
/// gave one process two identities: its attach entry named by one, a thread's cache
/// slot by the other, so an opener judged the live process dead, took its slot, and
/// two processes wrote one free list.) Fresh processes, 16 threads each.
#[test]
fn threads_of_a_fresh_process_share_one_identity() {
    for _ in 0..20 {
        let mut c = spawn("child_role_entry", "racers", &[]);
        wait_ok(&mut c, Duration::from_secs(30), "racers");
    }
}
