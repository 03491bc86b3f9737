//! Space a size class no longer uses serves other sizes again: a 1 MiB pool filled
//! with small strings, all freed, gives its empty slabs back to the arena when an
//! allocation runs short (online: the slabs whose blocks are all in the depot or in
//! the allocating thread's hands) and in `Pool::repair` (all of them).

mod common;

use common::Scratch;
use shmval::{Pool, PoolOptions, Val};

/// How many 1000-character strings the pool takes (dropped afterwards).
fn big_strings_that_fit(pool: &Pool) -> usize {
    let s = Val::from("x".repeat(1000));
    let mut held = Vec::new();
    while let Ok(v) = pool.share(&s) {
        held.push(v);
    }
    held.len()
}

/// Fills the pool with 64-byte blocks, then frees them all (raw blocks, not values:
/// holding thousands of value handles at once would also grow this process's
/// reference ledger, which keeps its size while the process stays attached).
fn fill_with_small_blocks_and_free_them(pool: &Pool) {
    let l = std::alloc::Layout::from_size_align(64, 16).unwrap();
    let mut held = Vec::new();
    while let Ok(o) = pool.alloc(l) {
        held.push(o);
    }
    assert!(held.len() > 10_000, "{} small blocks", held.len());
    for o in held {
        // SAFETY: allocated above with `l`, freed once, never used.
        unsafe { pool.free(o, l) }.unwrap();
    }
}

/// Fills the pool with distinct strings and reads every one back (a block handed
/// out twice would show another's text); how many fit (all dropped afterwards).
fn distinct_strings_fit(pool: &Pool) -> usize {
    let text = |i: usize| Val::from(format!("distinct string number {i:08}"));
    let mut held = Vec::new();
    while let Ok(v) = pool.share(&text(held.len())) {
        held.push(v);
    }
    for (i, v) in held.iter().enumerate() {
        assert_eq!(v.to_val().unwrap(), text(i), "block {i} handed out twice");
    }
    held.len()
}

#[test]
fn a_pool_that_runs_short_gives_its_empty_slabs_back_online() {
    let fresh = {
        let s = Scratch::new("slabs-fresh2");
        let pool = Pool::create_with(s.name(), 1 << 20, &PoolOptions::new()).unwrap();
        big_strings_that_fit(&pool)
    };
    let s = Scratch::new("slabs-online");
    let pool = Pool::create_with(s.name(), 1 << 20, &PoolOptions::new()).unwrap();
    // Another thread fills the pool with small blocks and frees them all (its
    // cache and the depot hold the blocks), while this one holds a table.
    let t = pool
        .share(&shmval::tab! { "kept" => "a table that stays" })
        .unwrap();
    // Joined, not scoped: `join` returns after the thread's thread-local
    // destructors ran, its cache slot given back with them (a scoped thread's end
    // is signalled before them: whether its cached blocks were back was a race).
    let p = pool.clone();
    std::thread::spawn(move || fill_with_small_blocks_and_free_them(&p))
        .join()
        .unwrap();
    // This thread's first large allocation runs short, gives the empty slabs back
    // (those whose blocks are all in the depot) and goes on: no repair needed.
    let after = big_strings_that_fit(&pool);
    // Slabs holding this thread's own table, and blocks of partly used slabs, stay:
    // most, not all, of the space returns.
    assert!(
        after * 100 >= fresh * 80,
        "{after} 1000-character strings fit after the small ones ({fresh} in a fresh pool)"
    );
    assert!(pool.check().is_ok());
    assert_eq!(
        t.to_val().unwrap(),
        shmval::tab! { "kept" => "a table that stays" }
    );
    println!("online: {after} of {fresh} 1000-character strings fit after the small ones");
}

#[test]
fn empty_slabs_go_back_to_the_arena_on_repair() {
    let fresh = {
        let s = Scratch::new("slabs-fresh");
        let pool = Pool::create_with(s.name(), 1 << 20, &PoolOptions::new()).unwrap();
        big_strings_that_fit(&pool)
    };
    assert!(fresh > 500, "a fresh 1 MiB pool takes {fresh}");
    let s = Scratch::new("slabs");
    let pool = Pool::create_with(s.name(), 1 << 20, &PoolOptions::new()).unwrap();
    let base = pool.stats().in_use;
    // Another thread fills it with small blocks (one size class) and frees them
    // all: its cache keeps part of the blocks, beyond the reach of an allocation
    // running short in this thread; a repair reaches every list.
    std::thread::scope(|sc| {
        sc.spawn(|| fill_with_small_blocks_and_free_them(&pool));
    });
    assert_eq!(pool.stats().in_use, base, "all freed");
    // SAFETY: this process holds no handle into the pool, and is alone.
    let r = unsafe { pool.repair() }.unwrap();
    assert!(r.slabs_returned >= 14, "{} slabs back", r.slabs_returned);
    assert!(r.after.is_ok(), "{:?}", r.after.problems);
    let after = big_strings_that_fit(&pool);
    assert!(
        after * 100 >= fresh * 95,
        "{after} 1000-character strings fit again ({fresh} in a fresh pool)"
    );
    assert!(pool.check().is_ok());
    println!(
        "1 MiB pool, 1000-character strings: {fresh} fresh, {after} after filling it with \
         small strings, freeing them and a repair ({} slabs back)",
        r.slabs_returned
    );
}

/// Entry point of the re-spawned child processes (a no-op in a normal run).
#[test]
fn child_role_entry() {
    let Some(role) = common::role() else { return };
    if role == "give-back-and-die" {
        // Fills the pool with small strings from another thread, frees them, then
        // runs short on a large string: the online give-back runs, and the fail point
        // `alloc.give_back.relinked` (SHMVAL_FAILPOINTS) kills this process inside it.
        let pool = Pool::open(
            &std::env::var("POOL").unwrap(),
            std::time::Duration::from_secs(5),
        )
        .unwrap();
        std::thread::scope(|sc| {
            sc.spawn(|| {
                let small = Val::from("a string of some forty characters, or so");
                let mut held = Vec::new();
                while let Ok(v) = pool.share(&small) {
                    held.push(v);
                }
            });
        });
        let _ = big_strings_that_fit(&pool);
        common::child_done();
    }
    if role == "carve-and-die" {
        // Allocates small blocks until a carve (a new slab) runs into the fail point
        // (SHMVAL_FAILPOINTS) and ends this process.
        let pool = Pool::open(
            &std::env::var("POOL").unwrap(),
            std::time::Duration::from_secs(5),
        )
        .unwrap();
        let l = std::alloc::Layout::from_size_align(64, 16).unwrap();
        while pool.alloc(l).is_ok() {}
        common::child_done();
    }
    assert_eq!(role, "repair-and-die");
    // Alone on the pool: fill it with small strings, free them, repair; the fail
    // point `alloc.slabs.unlisted` (SHMVAL_FAILPOINTS=…=N@abort) kills this process
    // between emptying a free list and storing it again.
    let pool = Pool::open(
        &std::env::var("POOL").unwrap(),
        std::time::Duration::from_secs(5),
    )
    .unwrap();
    let small = Val::from("a string of some forty characters, or so");
    let mut held = Vec::new();
    while let Ok(v) = pool.share(&small) {
        held.push(v);
    }
    drop(held);
    // SAFETY: this process holds no handle into the pool, and is alone.
    let _ = unsafe { pool.repair() };
    common::child_done();
}

/// Runs child `role` on `s`'s pool, killed (abort) at fail point `point` after
/// `skip` hits of it; fails unless it died there.
fn die_at(s: &Scratch, role: &str, point: &str, skip: u32) {
    let spec = format!("{point}={skip}@abort");
    let mut kid = common::spawn(
        "child_role_entry",
        role,
        &[("POOL", s.0.clone()), ("SHMVAL_FAILPOINTS", spec)],
    );
    let st = kid.wait().unwrap();
    assert!(st.code().is_none(), "killed at {point} ({st:?})");
}

#[test]
fn a_repair_killed_while_giving_slabs_back_leaks_and_never_hands_a_block_out_twice() {
    for skip in [0, 3] {
        let s = Scratch::new("slabs-die");
        drop(Pool::create_with(s.name(), 1 << 20, &PoolOptions::new()).unwrap());
        die_at(&s, "repair-and-die", "alloc.slabs.unlisted", skip);
        let pool = Pool::open(s.name(), std::time::Duration::ZERO).unwrap();
        let r = pool.check();
        assert!(r.is_ok(), "{:?}", r.problems);
        // A second repair finishes the job for the slabs whose blocks are all still
        // listed; the blocks of the list the dead repairer held are leaked.
        // SAFETY: this process holds no handle into the pool, and is alone.
        let r = unsafe { pool.repair() }.unwrap();
        assert!(r.after.is_ok(), "{:?}", r.after.problems);
        // Every block handed out is handed out once: distinct strings all read back.
        let n = distinct_strings_fit(&pool);
        assert!(n > 1000, "{n} strings");
        assert!(pool.check().is_ok());
    }
}

#[test]
fn a_thread_killed_while_giving_slabs_back_online_leaks_and_never_hands_a_block_out_twice() {
    // The filler's own last (failing) allocation gives back once: 28 classes, 28
    // hits of the point. Then the large strings' first give-back: at its first
    // class (nothing taken: nothing leaks), or at the 64-byte class (its blocks are
    // in the dying thread's hands: they leak, with their slabs).
    for (skip, leaks) in [(28, false), (31, true)] {
        let s = Scratch::new("slabs-gb-die");
        let pool = Pool::create_with(s.name(), 1 << 20, &PoolOptions::new()).unwrap();
        die_at(&s, "give-back-and-die", "alloc.give_back.relinked", skip);
        let r = pool.check();
        assert!(r.is_ok(), "{:?}", r.problems);
        // This process goes on: every block it is handed out is handed out once.
        let n = distinct_strings_fit(&pool);
        assert!(leaks || n > 100, "{n} strings");
        assert!(pool.check().is_ok());
    }
}

/// A process killed while carving a slab (taking it from the large heap, its blocks
/// linked, or its rest listed): the next holder of the large heap's lock gives back
/// a slab no carve log names, the reclaimer of its slot finishes a logged carve, so
/// no block of the slab is lost
/// (the census, counting blocks, agrees with the counters) and none is handed out
/// twice.
#[test]
fn a_process_killed_while_carving_a_slab_loses_no_block_of_it() {
    for (point, skip) in [
        ("alloc.slab.taken", 0),
        ("alloc.slab.taken", 1),
        ("alloc.slab.logged", 0),
        ("alloc.carve.linked", 0),
        ("alloc.carve.linked", 2),
        ("alloc.carve.listed", 1),
    ] {
        let s = Scratch::new("slabs-carve");
        let pool = Pool::create_with(s.name(), 4 << 20, &PoolOptions::new()).unwrap();
        die_at(&s, "carve-and-die", point, skip);
        pool.reclaim_dead();
        let census = pool
            .heap()
            .census()
            .unwrap_or_else(|| panic!("{point} {skip}: malformed list"))
            - pool.stats().bookkeeping;
        assert_eq!(
            census,
            pool.stats().in_use,
            "after a death at {point} ({skip} skipped): blocks in no list and not in use"
        );
        distinct_strings_fit(&pool);
        assert!(pool.check().is_ok());
    }
}
