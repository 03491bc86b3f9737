//! Create and open of a 1 GiB pool, against the raw system calls.

use crate::harness::Report;
use nix::fcntl::OFlag;
use nix::sys::mman::{mmap, munmap, shm_open, shm_unlink, MapFlags, ProtFlags};
use nix::sys::stat::Mode;
use shmval::{Pool, PoolOptions};
use std::num::NonZeroUsize;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

const GIB: u64 = 1 << 30;

fn ms(f: impl FnOnce()) -> f64 {
    let t = Instant::now();
    f();
    t.elapsed().as_secs_f64() * 1e3
}

/// shm_open + posix_fallocate + mmap: the floor for a create that reserves memory.
fn raw_create(name: &str, size: u64) -> f64 {
    let path = format!("/{name}");
    let t = ms(|| {
        let fd = shm_open(
            path.as_str(),
            OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_RDWR,
            Mode::S_IRUSR | Mode::S_IWUSR,
        )
        .unwrap();
        nix::fcntl::posix_fallocate(fd.as_raw_fd(), 0, size as i64).unwrap();
        // SAFETY: fresh shared mapping of our file, unmapped right after.
        let p = unsafe {
            mmap(
                None,
                NonZeroUsize::new(size as usize).unwrap(),
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_SHARED,
                &fd,
                0,
            )
        }
        .unwrap();
        // SAFETY: as above.
        unsafe { munmap(p, size as usize) }.unwrap();
    });
    shm_unlink(path.as_str()).unwrap();
    t
}

pub fn run(r: &mut Report) {
    let name = format!("shmval-bench-seg-{}", std::process::id());
    let raw = format!("shmval-bench-raw-{}", std::process::id());
    crate::harness::remove_on_signal(&raw);
    let reps = r.reps(5);
    let size = if r.quick { GIB / 8 } else { GIB };
    let label = if r.quick { "128 MiB" } else { "1 GiB" };
    let n1 = name.clone();
    crate::harness::remove_on_signal(&n1);
    r.compare(
        &format!("create a {label} pool"),
        "ms",
        reps,
        1,
        &["", ""],
        vec![
            (
                "shmval Pool::create",
                Box::new(move || {
                    let t = ms(|| drop(Pool::create_with(&n1, size, &PoolOptions::new()).unwrap()));
                    Pool::destroy(&n1).unwrap();
                    t
                }),
            ),
            (
                "raw shm_open+posix_fallocate+mmap",
                Box::new(|| raw_create(&raw, size)),
            ),
        ],
    );
    let keep = crate::harness::bench_pool(&name, size).unwrap();
    r.compare(
        &format!("open a {label} pool"),
        "ms",
        reps * 4,
        0,
        &[""],
        vec![(
            "shmval Pool::open",
            Box::new(|| ms(|| drop(Pool::open(&name, Duration::ZERO).unwrap()))),
        )],
    );
    drop(keep);
    growth(r);
    snapshots(r);
}

const MIB: u64 = 1 << 20;

/// A pool of `size` bytes that may grow to `max` (`max == size`: fixed), removed
/// when dropped (and on a signal: its name is registered once, by the caller).
fn pool_of(name: &str, size: u64, max: u64) -> Pool {
    let mut o = PoolOptions::new().remove_on_drop(true);
    if max > size {
        o = o.max_size(max);
    }
    Pool::create_with(name, size, &o).unwrap()
}

/// Fills `pool` with 1 MiB arrays until it holds `n` of them.
fn fill(pool: &Pool, n: u64) {
    let root = pool.root().unwrap();
    for i in 0..n {
        root.insert(i as i64, vec![i as u8; MIB as usize]).unwrap();
    }
}

/// `n` alloc+free pairs of 16..256 bytes and `n` of 8 KiB (large blocks, under the
/// large lock): ns a pair.
fn pairs(pool: &Pool, n: u64) -> f64 {
    let small: Vec<_> = (0..64)
        .map(|i| std::alloc::Layout::from_size_align(16 + i * 4, 8).unwrap())
        .collect();
    let large = std::alloc::Layout::from_size_align(8 << 10, 16).unwrap();
    crate::harness::ns_per_op(2 * n, || {
        for i in 0..n as usize {
            for l in [small[i % 64], large] {
                let off = pool.alloc(l).unwrap();
                let p = pool.resolve(off, 1).unwrap().as_ptr();
                // SAFETY: our fresh block of at least one byte, freed just after.
                unsafe {
                    p.write(i as u8);
                    std::hint::black_box(p.read());
                    pool.free(off, l).unwrap();
                }
            }
        }
    })
}

/// Growth while attached: filling a pool from 1 MiB to 256 MiB against filling one
/// made at 256 MiB; another handle's first touch of a grown region (its catch-up:
/// `fstat` + `mmap`) against a touch of a mapped one; and steady-state operations
/// on a grown pool against a fixed one.
fn growth(r: &mut Report) {
    let pid = std::process::id();
    let (g, f) = (
        format!("shmval-bench-grow-{pid}"),
        format!("shmval-bench-fixed-{pid}"),
    );
    crate::harness::remove_on_signal(&g);
    crate::harness::remove_on_signal(&f);
    let reps = r.reps(5);
    let fill_n = if r.quick { 60 } else { 240 };
    let (max, label) = if r.quick {
        (64 * MIB, "64 MiB")
    } else {
        (256 * MIB, "256 MiB")
    };
    r.compare(
        &format!("fill a pool with 1 MiB arrays to {label}, create included"),
        "ms",
        reps,
        1,
        &["", ""],
        vec![
            (
                "shmval, growing from 1 MiB",
                Box::new(|| ms(|| fill(&pool_of(&g, MIB, max), fill_n))),
            ),
            (
                "shmval, made at its full size",
                Box::new(|| ms(|| fill(&pool_of(&f, max, max), fill_n))),
            ),
        ],
    );
    // The first touch: handle `a` grows a fresh pool by one 4 MiB block; handle
    // `b` (another mapping, as another process has) resolves and reads it.
    let l = std::alloc::Layout::from_size_align(4 * MIB as usize, 16).unwrap();
    let both = std::cell::RefCell::new(None::<(Pool, Pool, shmval::Offset)>);
    r.compare(
        "another process's first touch of a grown region vs a touch of a mapped one",
        "µs",
        r.reps(20),
        1,
        &["", ""],
        vec![
            (
                "first touch after a growth (catch-up: fstat + mmap)",
                Box::new(|| {
                    drop(both.borrow_mut().take());
                    let a = pool_of(&g, MIB, 64 * MIB);
                    let b = Pool::open(&g, Duration::ZERO).unwrap();
                    let off = a.alloc(l).unwrap();
                    let t = Instant::now();
                    let p = b.resolve(off, l.size()).unwrap();
                    // SAFETY: a live block of `l.size()` bytes.
                    std::hint::black_box(unsafe { p.as_ptr().read_volatile() });
                    let us = t.elapsed().as_secs_f64() * 1e6;
                    *both.borrow_mut() = Some((a, b, off));
                    us
                }),
            ),
            (
                "the same touch again (mapped)",
                Box::new(|| {
                    let g = both.borrow();
                    let (_, b, off) = g.as_ref().unwrap();
                    let t = Instant::now();
                    let p = b.resolve(*off, l.size()).unwrap();
                    // SAFETY: as above.
                    std::hint::black_box(unsafe { p.as_ptr().read_volatile() });
                    t.elapsed().as_secs_f64() * 1e6
                }),
            ),
        ],
    );
    drop(both.borrow_mut().take());
    // Steady state: the same operations on a pool grown to 64 MiB and on one made
    // at 64 MiB.
    let grown = pool_of(&g, MIB, 64 * MIB);
    fill(&grown, 40);
    let fixed = pool_of(&f, 64 * MIB, 64 * MIB);
    fill(&fixed, 40);
    let n = if r.quick { 20_000 } else { 500_000 };
    r.compare(
        "alloc+free pairs (16..256 B and 8 KiB) on a grown pool vs a fixed one",
        "ns",
        reps,
        1,
        &["", ""],
        vec![
            ("shmval, grown 1 → 64 MiB", Box::new(|| pairs(&grown, n))),
            ("shmval, made at 64 MiB", Box::new(|| pairs(&fixed, n))),
        ],
    );
}

/// Saving the root table's values to a file and loading them into a new pool:
/// `Pool::save` / `Pool::load` (rkyv) against writing the same values as a pickle
/// (protocol 5) and reading it back into a new pool, in MB/s of the values' bytes
/// in the pool.
fn snapshots(r: &mut Report) {
    use shmval::{tab, Val};
    let pid = std::process::id();
    let (src, dst) = (
        format!("shmval-bench-snap-{pid}"),
        format!("shmval-bench-snapl-{pid}"),
    );
    crate::harness::remove_on_signal(&src);
    crate::harness::remove_on_signal(&dst);
    let n = if r.quick { 500 } else { 5000 };
    let pool = crate::harness::bench_pool(&src, 512 << 20).unwrap();
    let root = pool.root().unwrap();
    let mut records = Vec::with_capacity(n);
    for i in 0..n as i64 {
        records.push(tab! {
            "id" => i,
            "name" => format!("sensor-{i}"),
            "w" => vec![i as f64 * 0.5; 64],
            "tags" => Val::List(vec![Val::from("a"), Val::from("calibrated")]),
        });
    }
    root.insert("records", Val::List(records)).unwrap();
    root.insert("big", vec![0.25f64; n * 200]).unwrap();
    let mb = pool.stats().in_use as f64 / 1e6;
    let dir = std::env::temp_dir();
    let (snap, pkl) = (
        dir.join(format!("{src}.snap")),
        dir.join(format!("{src}.pkl")),
    );
    let reps = r.reps(5);
    let title = format!("save the root's values ({mb:.0} MB in the pool) to a file");
    r.compare(
        &title,
        "MB/s",
        reps,
        1,
        &["", ""],
        vec![
            (
                "shmval Pool::save (rkyv)",
                Box::new(|| {
                    let t = Instant::now();
                    pool.save(&snap).unwrap();
                    mb / t.elapsed().as_secs_f64()
                }),
            ),
            (
                "pickle protocol 5 written to a file",
                Box::new(|| {
                    let t = Instant::now();
                    let v = pool.root().unwrap().to_val().unwrap();
                    let bytes = shmval::to_pickle(&v, 5).unwrap();
                    std::fs::write(&pkl, &bytes).unwrap();
                    std::fs::File::open(&pkl).unwrap().sync_all().unwrap();
                    mb / t.elapsed().as_secs_f64()
                }),
            ),
        ],
    );
    let size = pool.size();
    let title = format!("load a snapshot into a new pool ({mb:.0} MB of values)");
    r.compare(
        &title,
        "MB/s",
        reps,
        1,
        &["", ""],
        vec![
            (
                "shmval Pool::load (rkyv)",
                Box::new(|| {
                    let t = Instant::now();
                    let p = Pool::load(&snap, &dst, &PoolOptions::new()).unwrap();
                    let rate = mb / t.elapsed().as_secs_f64();
                    drop(p);
                    Pool::destroy(&dst).unwrap();
                    rate
                }),
            ),
            (
                "pickle read back into a new pool",
                Box::new(|| {
                    let t = Instant::now();
                    let bytes = std::fs::read(&pkl).unwrap();
                    let v = shmval::from_pickle(&bytes).unwrap();
                    let p = Pool::create_with(&dst, size, &PoolOptions::new()).unwrap();
                    if let Val::Tab(m) = v {
                        let root = p.root().unwrap();
                        for (k, x) in m {
                            root.insert(k, x).unwrap();
                        }
                    }
                    let rate = mb / t.elapsed().as_secs_f64();
                    drop(p);
                    Pool::destroy(&dst).unwrap();
                    rate
                }),
            ),
        ],
    );
    let _ = std::fs::remove_file(&snap);
    let _ = std::fs::remove_file(&pkl);
    drop((root, pool));
}
