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
}
