//! Space a size class no longer uses serves other sizes again: a 1 MiB pool filled
//! with small strings, all freed, takes no 1000-character string until its empty
//! slabs go back to the arena (`Pool::repair`); then as many as in a fresh pool.

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
    // Fill it with small strings (one size class), then free them all.
    let small = Val::from("a string of some forty characters, or so");
    let mut held = Vec::new();
    while let Ok(v) = pool.share(&small) {
        held.push(v);
    }
    assert!(held.len() > 5000, "{} small strings", held.len());
    drop(held);
    assert_eq!(pool.stats().in_use, base, "all freed");
    assert_eq!(
        big_strings_that_fit(&pool),
        0,
        "today's behaviour without the repair: the slabs keep the space"
    );
    eprintln!(
        "before repair: {:?}",
        pool.stats()
            .classes
            .iter()
            .filter(|c| c.slabs > 0)
            .collect::<Vec<_>>()
    );
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
        "1 MiB pool, 1000-character strings: {fresh} fresh, 0 after filling with small \
         strings and freeing them, {after} after the repair ({} slabs back)",
        r.slabs_returned
    );
}
