//! Pool segments across real processes: create/open handshake, addresses, waiting,
//! and every kind of bad input answered with its typed error.

mod common;

use common::{leftovers, spawn, wait_ok, Scratch};
use shmval::{CreateError, Offset, OpenError, Pool, PoolOptions};
use std::alloc::Layout;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

const MB: u64 = 1 << 20;

fn write(pool: &Pool, bytes: &[u8]) -> Offset {
    let off = pool
        .alloc(Layout::array::<u8>(bytes.len()).unwrap())
        .unwrap();
    let p = pool.resolve(off, bytes.len()).unwrap();
    // SAFETY: fresh block of bytes.len() bytes, ours alone until published.
    unsafe {
        p.as_ptr()
            .copy_from_nonoverlapping(bytes.as_ptr(), bytes.len())
    };
    off
}

fn read(pool: &Pool, off: u64, len: usize) -> Vec<u8> {
    let p = pool
        .resolve(Offset::new(off).unwrap(), len)
        .expect("offset inside the pool");
    // SAFETY: published (Release/Acquire through a user word) and immutable since.
    unsafe { std::slice::from_raw_parts(p.as_ptr(), len) }.to_vec()
}

/// Entry point of the re-spawned child processes (a no-op in a normal run).
#[test]
fn child_role_entry() {
    let Some(role) = common::role() else { return };
    let name = std::env::var("POOL").unwrap();
    match role.as_str() {
        // Occupy the parent's address first, so the pool must land elsewhere.
        "reader" => {
            let parent_base: usize = std::env::var("PARENT_BASE").unwrap().parse().unwrap();
            let _blocker = block_range(parent_base, 16 * MB as usize);
            let pool = Pool::open(&name, Duration::from_secs(5)).unwrap();
            assert_ne!(
                pool.base().as_ptr() as usize,
                parent_base,
                "mapped at a different address"
            );
            let off = pool.user_word(1).load(Ordering::Acquire);
            assert_eq!(read(&pool, off, 11), b"from parent");
            let reply = write(&pool, b"from child");
            pool.user_word(2).store(reply.get(), Ordering::Release);
        }
        "waiter" => {
            let pool = Pool::open(&name, Duration::from_secs(10)).unwrap();
            assert!(pool.size() >= MB);
        }
        "fixed" => {
            let pool = Pool::open(&name, Duration::from_secs(5)).unwrap();
            let base: usize = std::env::var("BASE").unwrap().parse().unwrap();
            assert_eq!(pool.base().as_ptr() as usize, base, "fixed base honoured");
            let off = pool.user_word(1).load(Ordering::Acquire);
            assert_eq!(read(&pool, off, 5), b"fixed");
        }
        "fixed-taken" => {
            let base: usize = std::env::var("BASE").unwrap().parse().unwrap();
            let _blocker = block_range(base, 4096);
            match Pool::open(&name, Duration::from_secs(5)) {
                Err(OpenError::AddressInUse { addr, conflict, .. }) => {
                    assert_eq!(addr, base);
                    assert!(conflict.contains('-'), "names the mapping: {conflict}");
                }
                other => panic!("expected AddressInUse, got {other:?}"),
            }
        }
        "two-handles" => {
            // Opens the pool twice, drops the first handle, then holds the root
            // table's lock through the second until told to go.
            let first = Pool::open(&name, Duration::from_secs(5)).unwrap();
            let second = Pool::open(&name, Duration::from_secs(5)).unwrap();
            drop(first);
            let root = second.root().unwrap();
            let g = root.lock().unwrap();
            second.user_word(4).store(1, Ordering::SeqCst);
            let t = Instant::now();
            while second.user_word(5).load(Ordering::SeqCst) == 0 {
                assert!(t.elapsed() < Duration::from_secs(20), "never told to go");
                std::thread::sleep(Duration::from_millis(1));
            }
            drop(g);
        }
        "old-incarnation" => {
            // Creates the pool (removed on drop), then waits until told to go.
            let pool =
                Pool::create_with(&name, MB, &PoolOptions::new().remove_on_drop(true)).unwrap();
            pool.user_word(4).store(1, Ordering::SeqCst);
            let t = Instant::now();
            while pool.user_word(5).load(Ordering::SeqCst) == 0 {
                assert!(t.elapsed() < Duration::from_secs(20), "never told to go");
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        r => panic!("unknown role {r}"),
    }
    common::child_done();
}

/// Maps an inaccessible anonymous range at exactly `addr` (kept while alive).
fn block_range(addr: usize, len: usize) -> Blocker {
    // SAFETY: MAP_FIXED_NOREPLACE never replaces an existing mapping.
    let p = unsafe {
        libc::mmap(
            addr as *mut _,
            len,
            libc::PROT_NONE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE,
            -1,
            0,
        )
    };
    assert_eq!(p as usize, addr, "could not reserve {addr:#x}");
    Blocker(addr, len)
}

struct Blocker(usize, usize);
impl Drop for Blocker {
    fn drop(&mut self) {
        // SAFETY: our own mapping.
        unsafe { libc::munmap(self.0 as *mut _, self.1) };
    }
}

/// An address range free in this process right now (map, note, unmap).
fn free_address(len: usize) -> usize {
    // SAFETY: a fresh anonymous mapping, unmapped right away.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_NONE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    assert_ne!(p, libc::MAP_FAILED);
    // SAFETY: just mapped.
    unsafe { libc::munmap(p, len) };
    // Move far from where the kernel places things by default, then align.
    (p as usize - (64 << 30)) & !0xFFFF
}

#[test]
fn two_processes_share_data_at_different_addresses() {
    let s = Scratch::new("share");
    let pool =
        Pool::create_with(s.name(), 16 * MB, &PoolOptions::new().remove_on_drop(true)).unwrap();
    let off = write(&pool, b"from parent");
    pool.user_word(1).store(off.get(), Ordering::Release);
    let base = (pool.base().as_ptr() as usize).to_string();
    let mut child = spawn(
        "child_role_entry",
        "reader",
        &[("POOL", s.0.clone()), ("PARENT_BASE", base)],
    );
    wait_ok(&mut child, Duration::from_secs(30), "reader");
    let reply = pool.user_word(2).load(Ordering::Acquire);
    assert_eq!(read(&pool, reply, 10), b"from child");
    let info = pool.info();
    assert_eq!(info.creator_pid, std::process::id());
    assert!(info.creator_alive);
    assert_eq!(
        info.attached,
        vec![std::process::id()],
        "the child detached"
    );
}

#[test]
fn open_waits_for_a_pool_created_later() {
    let s = Scratch::new("wait");
    let mut child = spawn("child_role_entry", "waiter", &[("POOL", s.0.clone())]);
    std::thread::sleep(Duration::from_millis(300));
    let _pool = Pool::create_with(s.name(), MB, &PoolOptions::new().remove_on_drop(true)).unwrap();
    wait_ok(&mut child, Duration::from_secs(30), "waiter");
}

#[test]
fn open_times_out_or_reports_not_found() {
    let s = Scratch::new("timeout");
    let t = Instant::now();
    match Pool::open(s.name(), Duration::from_millis(100)) {
        Err(OpenError::Timeout { waited, .. }) => assert!(waited >= Duration::from_millis(100)),
        other => panic!("expected Timeout, got {other:?}"),
    }
    assert!(t.elapsed() >= Duration::from_millis(100) && t.elapsed() < Duration::from_secs(10));
    assert!(matches!(
        Pool::open(s.name(), Duration::ZERO),
        Err(OpenError::NotFound { .. })
    ));
}

#[test]
fn fixed_base_is_honoured_and_conflicts_are_named() {
    let s = Scratch::new("fixed");
    let size = 4 * MB;
    let base = free_address(size as usize);
    let pool = Pool::create_with(
        s.name(),
        size,
        &PoolOptions::new().fixed_base(base).remove_on_drop(true),
    )
    .unwrap();
    assert_eq!(pool.base().as_ptr() as usize, base);
    assert!(pool.info().fixed_base);
    let off = write(&pool, b"fixed");
    pool.user_word(1).store(off.get(), Ordering::Release);
    let env = [("POOL", s.0.clone()), ("BASE", base.to_string())];
    let mut c = spawn("child_role_entry", "fixed", &env);
    wait_ok(&mut c, Duration::from_secs(30), "fixed");
    let mut c = spawn("child_role_entry", "fixed-taken", &env);
    wait_ok(&mut c, Duration::from_secs(30), "fixed-taken");

    // Creating over a range this process already uses: refused, nothing replaced,
    // nothing left behind.
    let s2 = Scratch::new("fixed-taken");
    match Pool::create_with(s2.name(), size, &PoolOptions::new().fixed_base(base)) {
        Err(CreateError::AddressInUse { addr, conflict, .. }) => {
            assert_eq!(addr, base);
            assert!(
                conflict.contains(s.name()),
                "names the pool mapping: {conflict}"
            );
        }
        other => panic!("expected AddressInUse, got {other:?}"),
    }
    assert!(!Pool::exists(s2.name()));
    assert!(leftovers(s2.name()).is_empty());
    assert_eq!(
        read(&pool, off.get(), 5),
        b"fixed",
        "the existing mapping is intact"
    );
}

#[test]
fn mode_is_exact_whatever_the_umask() {
    let s = Scratch::new("mode");
    // SAFETY: umask only affects this process's file creation.
    let old = unsafe { libc::umask(0o077) };
    let pool = Pool::create_with(
        s.name(),
        MB,
        &PoolOptions::new().mode(0o640).remove_on_drop(true),
    )
    .unwrap();
    // SAFETY: restore.
    unsafe { libc::umask(old) };
    for n in [s.0.clone(), format!("{}_boot", s.0)] {
        let m = std::fs::metadata(format!("/dev/shm/{n}")).unwrap();
        assert_eq!(m.permissions().mode() & 0o777, 0o640, "{n}");
    }
    drop(pool);
    assert!(
        leftovers(s.name()).is_empty(),
        "remove_on_drop removed both segments"
    );
}

#[test]
fn create_destroy_exists_open_or_create() {
    let s = Scratch::new("life");
    assert!(!Pool::exists(s.name()));
    let p = Pool::open_or_create(s.name(), 2 * MB, &PoolOptions::new()).unwrap();
    assert!(Pool::exists(s.name()));
    let q = Pool::open_or_create(s.name(), 2 * MB, &PoolOptions::new()).unwrap();
    assert_eq!(
        p.info().generation,
        q.info().generation,
        "the second call opened the first pool"
    );
    assert!(matches!(
        Pool::create(s.name(), 2 * MB),
        Err(CreateError::AlreadyExists { .. })
    ));
    drop((p, q));
    Pool::destroy(s.name()).unwrap();
    assert!(!Pool::exists(s.name()));
    assert!(matches!(
        Pool::destroy(s.name()),
        Err(shmval::DestroyError::NotFound { .. })
    ));
    assert!(leftovers(s.name()).is_empty());
}

#[test]
fn a_pool_survives_its_creator_and_is_reopened() {
    let s = Scratch::new("survive");
    let off = {
        let p = Pool::create(s.name(), 2 * MB).unwrap();
        let off = write(&p, b"persist");
        p.user_word(1).store(off.get(), Ordering::Release);
        off
    };
    let p = Pool::open(s.name(), Duration::ZERO).unwrap();
    assert_eq!(
        read(&p, p.user_word(1).load(Ordering::Acquire), 7),
        b"persist"
    );
    assert_eq!(off.get(), p.user_word(1).load(Ordering::Acquire));
}

fn bad_names() -> Vec<String> {
    vec![
        String::new(),
        "a/b".into(),
        "..".into(),
        "sp ace".into(),
        "x".repeat(shmval::MAX_NAME_LEN + 1),
        "é".into(),
    ]
}

#[test]
fn bad_names_and_sizes_are_refused_and_leave_nothing() {
    for n in bad_names() {
        assert!(
            matches!(Pool::create(&n, MB), Err(CreateError::InvalidName(_))),
            "{n:?}"
        );
        assert!(
            matches!(
                Pool::open(&n, Duration::ZERO),
                Err(OpenError::InvalidName(_))
            ),
            "{n:?}"
        );
    }
    let s = Scratch::new("size");
    // The longest valid name works.
    let long = format!("{}{}", s.0, "x".repeat(shmval::MAX_NAME_LEN - s.0.len()));
    let _g = Scratch(long.clone());
    drop(Pool::create_with(&long, MB, &PoolOptions::new().remove_on_drop(true)).unwrap());
    for size in [0, 1, 4096, 1 << 40] {
        assert!(
            matches!(
                Pool::create(s.name(), size),
                Err(CreateError::InvalidSize { .. })
            ),
            "{size}"
        );
    }
    // Larger than /dev/shm (24 GiB here) but inside the format's 64 GiB limit.
    match Pool::create(s.name(), 63 << 30) {
        Err(
            e @ CreateError::NoSpace {
                requested,
                available,
                ..
            },
        ) => {
            assert!(requested > available);
            // The message says where, how much, and how to get more.
            let m = e.to_string();
            assert!(m.contains("/dev/shm") && m.contains("--shm-size"), "{m}");
        }
        other => panic!("expected NoSpace, got {other:?}"),
    }
    assert!(leftovers(s.name()).is_empty());
}

fn shm(name: &str) -> String {
    format!("/dev/shm/{name}")
}

fn expect_corrupt(name: &str, what: &str) {
    match Pool::open(name, Duration::from_millis(50)) {
        Err(OpenError::Corrupt { what: w, .. }) => {
            assert!(w.contains(what), "{w:?} should mention {what:?}")
        }
        other => panic!("expected Corrupt({what}), got {other:?}"),
    }
}

#[test]
fn foreign_files_in_dev_shm_are_not_pools() {
    let s = Scratch::new("foreign");
    let boot = shm(&format!("{}_boot", s.0));
    // Random bytes of the right size.
    let noise: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    std::fs::write(&boot, &noise).unwrap();
    expect_corrupt(s.name(), "not a shmval pool");
    // A small text file.
    std::fs::write(&boot, b"hello").unwrap();
    expect_corrupt(s.name(), "not a shmval pool");
    // A directory.
    std::fs::remove_file(&boot).unwrap();
    std::fs::create_dir(&boot).unwrap();
    assert!(Pool::open(s.name(), Duration::ZERO).is_err());
    std::fs::remove_dir(&boot).unwrap();
    // A main segment without a boot segment blocks creation, with a clear error.
    std::fs::write(shm(&s.0), b"stale").unwrap();
    match Pool::create(s.name(), MB) {
        Err(CreateError::AlreadyExists { segment }) => {
            assert_eq!(segment, format!("/dev/shm/{}", s.0))
        }
        other => panic!("expected AlreadyExists, got {other:?}"),
    }
    assert!(
        !Pool::exists(s.name()),
        "the failed create removed its boot segment"
    );
}

fn patch_boot(name: &str, offset: u64, bytes: &[u8]) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(shm(&format!("{name}_boot")))
        .unwrap();
    f.write_all_at(bytes, offset).unwrap();
}

#[test]
fn wrong_version_or_layout_hash_is_incompatible() {
    let s = Scratch::new("compat");
    let _p = Pool::create(s.name(), MB).unwrap();
    let id = shmval::layout_id();
    patch_boot(s.name(), 8, &(id.version + 1).to_le_bytes());
    match Pool::open(s.name(), Duration::ZERO) {
        Err(OpenError::Incompatible {
            expected, found, ..
        }) => {
            assert_eq!(expected, id);
            assert_eq!(found.version, id.version + 1);
        }
        other => panic!("expected Incompatible, got {other:?}"),
    }
    patch_boot(s.name(), 8, &id.version.to_le_bytes());
    patch_boot(s.name(), 16, &(id.hash ^ 1).to_le_bytes());
    assert!(matches!(
        Pool::open(s.name(), Duration::ZERO),
        Err(OpenError::Incompatible { .. })
    ));
    patch_boot(s.name(), 16, &id.hash.to_le_bytes());
    assert!(Pool::open(s.name(), Duration::ZERO).is_ok());
}

#[test]
fn truncated_or_damaged_main_segment_is_refused_without_sigbus() {
    let s = Scratch::new("trunc");
    drop(Pool::create(s.name(), 4 * MB).unwrap());
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(shm(&s.0))
        .unwrap();
    f.set_len(MB).unwrap();
    expect_corrupt(s.name(), "main segment is 1048576 bytes");
    f.set_len(4 * MB).unwrap(); // right size again, but the heap header is gone
    use std::os::unix::fs::FileExt;
    f.write_all_at(&[0u8; 64], 0).unwrap();
    expect_corrupt(s.name(), "not a formatted heap");
    std::fs::remove_file(shm(&s.0)).unwrap();
    expect_corrupt(s.name(), "main segment is missing");
}

#[test]
fn another_users_segment_is_refused_unless_allowed() {
    if nix::unistd::geteuid().as_raw() != 0 {
        eprintln!("skipped: needs root to chown a segment to another user");
        return;
    }
    let s = Scratch::new("owner");
    drop(Pool::create(s.name(), MB).unwrap());
    for n in [s.0.clone(), format!("{}_boot", s.0)] {
        std::os::unix::fs::chown(shm(&n), Some(65534), Some(65534)).unwrap();
    }
    match Pool::open(s.name(), Duration::ZERO) {
        Err(OpenError::ForeignOwner { owner, ours, .. }) => assert_eq!((owner, ours), (65534, 0)),
        other => panic!("expected ForeignOwner, got {other:?}"),
    }
    let p = Pool::open_with(s.name(), &PoolOptions::new().allow_foreign_owner(true)).unwrap();
    assert_eq!(std::fs::metadata(shm(&s.0)).unwrap().uid(), 65534);
    drop(p);
}

#[test]
fn a_creator_that_died_mid_creation_is_reported() {
    let s = Scratch::new("died");
    drop(Pool::create(s.name(), MB).unwrap());
    // A pid that is certainly dead: a child we reaped.
    let mut c = std::process::Command::new("true").spawn().unwrap();
    let dead = c.id();
    c.wait().unwrap();
    patch_boot(s.name(), 12, &1u32.to_le_bytes()); // state CREATING
    patch_boot(s.name(), 24, &dead.to_le_bytes()); // creator pid
    match Pool::open(s.name(), Duration::from_secs(5)) {
        Err(OpenError::CreatorDied { pid, .. }) => assert_eq!(pid, dead),
        other => panic!("expected CreatorDied, got {other:?}"),
    }
}

/// A process whose pool was replaced under its name (a cleaner, a restart) exits:
/// its `remove_on_drop` removes nothing of the newer pool, and `Pool::remove` of an
/// old incarnation says there was nothing of its own left.
#[test]
fn an_old_incarnation_never_removes_a_newer_pool_of_its_name() {
    if common::role().is_some() {
        return;
    }
    let s = Scratch::new("incarnation");
    let mut kid = spawn(
        "child_role_entry",
        "old-incarnation",
        &[("POOL", s.0.clone())],
    );
    let old = Pool::open(s.name(), Duration::from_secs(10)).unwrap();
    let t = Instant::now();
    while old.user_word(4).load(Ordering::SeqCst) == 0 {
        assert!(t.elapsed() < Duration::from_secs(10), "child not ready");
        std::thread::sleep(Duration::from_millis(1));
    }
    // Replace it: what a cleaner and a restarted server would do.
    Pool::destroy(s.name()).unwrap();
    let new = Pool::create(s.name(), MB).unwrap();
    let generation = new.info().generation;
    old.user_word(5).store(1, Ordering::SeqCst);
    wait_ok(
        &mut kid,
        Duration::from_secs(20),
        "the old incarnation's process",
    );
    assert!(
        Pool::exists(s.name()),
        "the newer pool's boot segment is there"
    );
    let again = Pool::open(s.name(), Duration::ZERO).expect("the newer pool opens");
    assert_eq!(again.info().generation, generation);
    assert!(
        !old.remove(),
        "nothing of the old incarnation is left to remove"
    );
    assert!(Pool::exists(s.name()));
    assert!(new.remove(), "the current incarnation removes itself");
    assert!(!Pool::exists(s.name()));
}

/// The handles of one pool in one process share one attach entry (so a process may
/// hold more handles than the table has entries), and the entry lives as long as any
/// of them: a process that dropped its first handle and holds a lock through its
/// second is still alive to the others (its lock is not taken over).
#[test]
fn handles_of_one_process_share_one_entry_that_lives_as_long_as_any() {
    if common::role().is_some() {
        return;
    }
    let s = Scratch::new("handles");
    let pool = Pool::create_with(s.name(), MB, &PoolOptions::new()).unwrap();
    let many: Vec<Pool> = (0..200)
        .map(|_| Pool::open(s.name(), Duration::ZERO).expect("a handle beyond 120"))
        .collect();
    assert_eq!(pool.info().attached, vec![std::process::id()], "one entry");
    drop(many);
    let _root = pool.root().unwrap();
    let mut kid = spawn("child_role_entry", "two-handles", &[("POOL", s.0.clone())]);
    let t = Instant::now();
    while pool.user_word(4).load(Ordering::SeqCst) == 0 {
        assert!(t.elapsed() < Duration::from_secs(10), "child not ready");
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(pool.info().attached.len(), 2, "the child is attached once");
    // The child's lock is held by a live process: not taken over however long we try.
    let root = pool.root().unwrap();
    std::thread::scope(|sc| {
        let taker = sc.spawn(|| root.insert("x", 1i64));
        std::thread::sleep(Duration::from_millis(300));
        assert!(!taker.is_finished(), "the live child's lock was taken over");
        pool.user_word(5).store(1, Ordering::SeqCst);
        taker.join().unwrap().unwrap();
    });
    wait_ok(
        &mut kid,
        Duration::from_secs(20),
        "the child with two handles",
    );
    assert_eq!(
        pool.info().attached,
        vec![std::process::id()],
        "the child detached"
    );
    drop(pool);
    Pool::destroy(s.name()).unwrap();
}
