//! The smallest real use of a pool: one process writes records into shared memory,
//! another process (this program re-started as `reader`) finds and reads them.
//!
//! ```text
//! cargo run --release --example hello_pool            # writer, starts the reader
//! cargo run --release --example hello_pool -- reader NAME   # a reader by hand
//! ```
//! The writer keeps no pointers in shared memory: records are found by offset, so
//! the reader may map the pool at any address.

use shmval::{Offset, Pool, PoolOptions};
use std::alloc::Layout;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

const RECORDS: usize = 10_000;
const TEXT: usize = 48;

/// A record: a sequence number and a fixed-size text.
#[repr(C)]
struct Record {
    seq: u64,
    text: [u8; TEXT],
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("reader") {
        return reader(&args[1]);
    }
    let name = format!("hello-pool-{}", std::process::id());
    let pool = Pool::create_with(&name, 16 << 20, &PoolOptions::new().remove_on_drop(true))?;
    let t = Instant::now();
    // An index block of RECORDS offsets, then the records themselves.
    let index_layout = Layout::array::<u64>(RECORDS)?;
    let index = pool.alloc(index_layout)?;
    let slots = words(&pool, index, RECORDS);
    for (i, slot) in slots.iter().enumerate() {
        let off = pool.alloc(Layout::new::<Record>())?;
        let p = pool
            .resolve(off, std::mem::size_of::<Record>())
            .expect("in the pool")
            .as_ptr() as *mut Record;
        let mut text = [b' '; TEXT];
        let s = format!("record {i} written by pid {}", std::process::id());
        text[..s.len()].copy_from_slice(s.as_bytes());
        // SAFETY: a fresh block of the right size and alignment, ours until published.
        unsafe {
            p.write(Record {
                seq: i as u64,
                text,
            })
        };
        slot.store(off.get(), Ordering::Relaxed);
    }
    // Publish: readers that see the index offset (Acquire) see every record.
    pool.user_word(1).store(index.get(), Ordering::Release);
    let wrote = t.elapsed();
    println!(
        "writer {}: {RECORDS} records in pool {name} ({:?}), base {:p}",
        std::process::id(),
        wrote,
        pool.base()
    );

    let status = Command::new(std::env::current_exe()?)
        .args(["reader", &name])
        .status()?;
    assert!(status.success(), "reader failed: {status}");

    for slot in words(&pool, index, RECORDS) {
        let off = Offset::new(slot.load(Ordering::Relaxed)).expect("written above");
        // SAFETY: allocated above with this layout; nobody uses it any more.
        unsafe { pool.free(off, Layout::new::<Record>())? };
    }
    // SAFETY: allocated above with index_layout.
    unsafe { pool.free(index, index_layout)? };
    let s = pool.stats();
    println!(
        "writer: freed everything, {} bytes in use, {} slabs kept for reuse",
        s.in_use, s.slabs
    );
    Ok(())
}

fn reader(name: &str) -> Result<(), Box<dyn std::error::Error>> {
    let pool = Pool::open(name, Duration::from_secs(5))?;
    let index =
        Offset::new(pool.user_word(1).load(Ordering::Acquire)).ok_or("nothing published")?;
    let t = Instant::now();
    let mut sum = 0u64;
    for (i, slot) in words(&pool, index, RECORDS).iter().enumerate() {
        let off = Offset::new(slot.load(Ordering::Relaxed)).ok_or("empty slot")?;
        let p = pool
            .resolve(off, std::mem::size_of::<Record>())
            .ok_or("record outside the pool")?
            .as_ptr() as *const Record;
        // SAFETY: published before the index (Release/Acquire) and immutable since.
        let seq = unsafe { std::ptr::addr_of!((*p).seq).read() };
        assert_eq!(seq, i as u64, "records in order");
        sum += seq;
        if i == RECORDS - 1 {
            // SAFETY: as above.
            let text = unsafe { std::ptr::addr_of!((*p).text).read() };
            println!(
                "reader {}: last record says {:?}",
                std::process::id(),
                String::from_utf8_lossy(&text).trim_end()
            );
        }
    }
    assert_eq!(sum, (RECORDS as u64 - 1) * RECORDS as u64 / 2);
    let info = pool.info();
    println!(
        "reader {}: read {RECORDS} records in {:?} at base {:p} (creator pid {}, {} attached), {} bytes in use",
        std::process::id(),
        t.elapsed(),
        pool.base(),
        info.creator_pid,
        info.attached.len(),
        pool.stats().in_use
    );
    Ok(())
}

/// The `n` offset words of an index block.
fn words(pool: &Pool, off: Offset, n: usize) -> &[AtomicU64] {
    let p = pool.resolve(off, n * 8).expect("index inside the pool");
    // SAFETY: an 8-aligned block of n words, accessed only atomically.
    unsafe { std::slice::from_raw_parts(p.as_ptr() as *const AtomicU64, n) }
}
