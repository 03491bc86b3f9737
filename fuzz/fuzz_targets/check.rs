//! A pool image with arbitrary words written over it, then the pool-wide check and a
//! traversal: `Pool::check`, the root table read out, `check_value`. Each must answer
//! with a report, a value or a typed error — never crash, hang or read outside the
//! mapping (run under ASan by cargo fuzz). The image is restored after each input.
//!
//! Input: 12-byte records `off:u32 word:u64`: `word` is written at the 8-aligned word
//! `off` (modulo the image) of the pool's used bytes (allocator header included).
#![no_main]

use libfuzzer_sys::fuzz_target;
use shmval::{check_value, tab, Pipe, Pool, PoolOptions, ShmVal, Val};
use std::sync::OnceLock;

struct Image {
    pool: Pool,
    _pipe: Pipe,
    snapshot: Vec<u8>,
}

// SAFETY: only the fuzzing thread touches the image; `Pool` and `Pipe` are Sync.
unsafe impl Sync for Image {}

fn image() -> &'static Image {
    static IMAGE: OnceLock<Image> = OnceLock::new();
    IMAGE.get_or_init(|| {
        // Outside /dev/shm (libFuzzer exits without destructors): a directory of
        // its own, emptied of earlier runs' pools first.
        let dir = std::env::temp_dir().join("shmval-fuzz-check");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let opts = PoolOptions::new().dir(&dir);
        let pool = Pool::create_with(&format!("check-{}", std::process::id()), 1 << 20, &opts)
            .unwrap();
        let root = pool.root().unwrap();
        root.insert("t", tab! { "name" => "a sensor name", "data" => vec![1.5f64; 16] })
            .unwrap();
        root.insert(
            "l",
            Val::List(vec![Val::from("alpha and omega"), Val::I64(7), Val::Tup(vec![Val::None])]),
        )
        .unwrap();
        let pipe = Pipe::create(&pool, "p", 4).unwrap();
        pipe.send(pool.share(&Val::from("a string in flight")).unwrap())
            .unwrap();
        let _ = pool.check(); // warm: this thread's slot, the locks
        let len = pool.stats().high_water.max(64 << 10).min(pool.size()) as usize;
        // SAFETY: the first `len` bytes of the mapping; nobody else uses the pool.
        let snapshot = unsafe { std::slice::from_raw_parts(pool.base().as_ptr(), len) }.to_vec();
        Image {
            pool,
            _pipe: pipe,
            snapshot,
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let img = image();
    let base = img.pool.base().as_ptr();
    let words = img.snapshot.len() / 8;
    for rec in data.chunks_exact(12).take(32) {
        let at = u32::from_le_bytes(rec[..4].try_into().unwrap()) as usize % words * 8;
        let w = u64::from_le_bytes(rec[4..].try_into().unwrap());
        // SAFETY: an 8-aligned word inside the mapping; the corruption is the test.
        unsafe {
            (*(base.add(at) as *const std::sync::atomic::AtomicU64))
                .store(w, std::sync::atomic::Ordering::Relaxed)
        };
    }
    let r = img.pool.check();
    let _ = (r.is_ok(), r.leaks().len(), r.objects);
    if let Ok(root) = img.pool.root() {
        let _ = root.to_val();
        let _ = check_value(&ShmVal::from(root));
    }
    // SAFETY: restores bytes copied out of the same range.
    unsafe { std::ptr::copy_nonoverlapping(img.snapshot.as_ptr(), base, img.snapshot.len()) };
});
