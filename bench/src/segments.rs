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
    snapshots(r);
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
