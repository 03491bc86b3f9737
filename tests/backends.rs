//! One conformance suite, run against every backend (POSIX shared memory, files in a
//! chosen directory, System V, memfd): create/open handshake across processes,
//! values, pipes, crash recovery, destroy, bad input. Test names contain
//! `conformance` and the backend's name.

mod common;

use common::{child_done, spawn, wait_ok};
use shmval::{tab, Backend, OpenError, Pipe, Pool, PoolOptions, Val};
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::Child;
use std::time::Duration;

const SECS: Duration = Duration::from_secs(1);

/// A pool of one backend under test, removed (whatever the backend) when dropped.
struct Under {
    backend: Backend,
    name: String,
    dir: PathBuf,
    /// For memfd: this end of the socket the peers receive the pool from.
    socks: Vec<UnixStream>,
}

impl Under {
    fn new(backend: &str) -> Under {
        common::sweep_tmp_orphans();
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("shmval-test-be-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let backend = match backend {
            "posix" => Backend::Posix,
            "file" => Backend::File(dir.clone()),
            "sysv" => Backend::SysV,
            "memfd" => Backend::Memfd,
            b => panic!("{b}"),
        };
        Under {
            backend,
            name: format!("shmval-test-be-{}-{n}", std::process::id()),
            dir,
            socks: Vec::new(),
        }
    }
    fn opts(&self) -> PoolOptions {
        let o = PoolOptions::new().backend(self.backend.clone());
        match self.backend {
            // Named pools of the other backends live in the test's own directory.
            Backend::Posix | Backend::SysV => o.dir(&self.dir),
            _ => o,
        }
    }
    fn create(&self, size: u64) -> Pool {
        Pool::create_with(&self.name, size, &self.opts()).unwrap()
    }
    /// A child in `role` that can open the pool (by name, or from a socket).
    fn spawn(&mut self, pool: &Pool, role: &str) -> Child {
        let mut env = vec![
            ("POOL", self.name.clone()),
            ("DIR", self.dir.display().to_string()),
        ];
        if self.backend == Backend::Memfd {
            let (mine, theirs) = UnixStream::pair().unwrap();
            // The child inherits its end (not close-on-exec).
            let fd = theirs.as_raw_fd();
            nix::fcntl::fcntl(
                fd,
                nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()),
            )
            .unwrap();
            env.push(("SOCK", fd.to_string()));
            let child = spawn("child_role_entry", role, &env);
            drop(theirs);
            pool.send_to(&mine).unwrap();
            self.socks.push(mine);
            child
        } else {
            spawn("child_role_entry", role, &env)
        }
    }
}

impl Drop for Under {
    fn drop(&mut self) {
        if self.backend != Backend::Memfd {
            let _ = Pool::destroy_with(&self.name, &self.opts());
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The pool a child opens: by name, or from the socket its parent passed.
fn child_pool() -> Pool {
    let name = std::env::var("POOL").unwrap();
    let dir = PathBuf::from(std::env::var("DIR").unwrap());
    match std::env::var("SOCK") {
        Ok(fd) => {
            // SAFETY: the descriptor our parent left open for us.
            let sock = unsafe { UnixStream::from_raw_fd(fd.parse().unwrap()) };
            Pool::receive(&sock, &PoolOptions::new()).unwrap()
        }
        Err(_) => Pool::open_with(&name, &PoolOptions::new().dir(dir).timeout(5 * SECS)).unwrap(),
    }
}

#[test]
fn child_role_entry() {
    let Some(role) = common::role() else { return };
    let pool = child_pool();
    let root = pool.root().unwrap();
    match role.as_str() {
        // Reads what the creator wrote, answers, then echoes a pipe's values back.
        "peer" => {
            let n = root
                .get_val("from_parent")
                .unwrap()
                .unwrap()
                .as_i64()
                .unwrap();
            root.insert("from_child", n + 1).unwrap();
            let (rx, tx) = (
                Pipe::open(&pool, "in", 5 * SECS).unwrap(),
                Pipe::open(&pool, "out", 5 * SECS).unwrap(),
            );
            while let Ok(v) = rx.recv() {
                tx.send(v).unwrap();
            }
        }
        // Holds values nothing else refers to, until killed.
        "holder" => {
            let held: Vec<_> = (0..20)
                .map(|i| {
                    pool.share(&tab! { "i" => i, "s" => "a string long enough to be an object" })
                        .unwrap()
                })
                .collect();
            pool.user_word(5)
                .store(1, std::sync::atomic::Ordering::SeqCst);
            std::thread::sleep(Duration::from_secs(60));
            drop(held);
        }
        // Fills the pool past 16 MiB (it grows), each array tagged with its index.
        "grower" => {
            let mut i = 0i64;
            while pool.size() < 16 << 20 {
                root.insert(format!("g{i}").as_str(), vec![i as f64; 16 << 10])
                    .unwrap();
                i += 1;
            }
            root.insert("grown", i).unwrap();
        }
        other => panic!("unknown role {other}"),
    }
    child_done();
}

/// Reads the arrays a grower left (`g0`, `g1`, ...: `n` of them).
fn read_grown(pool: &Pool, n: i64) {
    let root = pool.root().unwrap();
    for i in 0..n {
        let a: Vec<f64> = root.get_as(format!("g{i}").as_str()).unwrap().unwrap();
        assert_eq!(a.len(), 16 << 10);
        assert!(a.iter().all(|&x| x == i as f64), "g{i}");
    }
}

/// A pool made with a maximum grows while another process is attached: a child
/// fills it from 1 MiB past 16 MiB, and the parent, attached all along with the
/// first megabyte mapped, reads every value (mapping the grown part on the way); a
/// process opening it afterwards maps it grown. System V refuses a maximum.
fn growth(backend: &str) {
    let mut u = Under::new(backend);
    let opts = u.opts().max_size(32 << 20);
    if u.backend == Backend::SysV {
        let e = Pool::create_with(&u.name, 1 << 20, &opts).unwrap_err();
        assert!(
            matches!(
                e,
                shmval::CreateError::GrowthUnsupported {
                    backend: "sysv",
                    ..
                }
            ),
            "{e:?}"
        );
        return;
    }
    let pool = Pool::create_with(&u.name, 1 << 20, &opts).unwrap();
    assert_eq!((pool.size(), pool.max_size()), (1 << 20, 32 << 20));
    let mut kid = u.spawn(&pool, "grower");
    wait_ok(&mut kid, 30 * SECS, "grower");
    assert!(pool.size() >= 16 << 20, "{}", pool.size());
    let n = pool
        .root()
        .unwrap()
        .get_val("grown")
        .unwrap()
        .unwrap()
        .as_i64()
        .unwrap();
    read_grown(&pool, n);
    pool.reclaim_dead(); // the child exited without dropping its handles
    let c = pool.check();
    assert!(c.is_ok() && c.leaks().is_empty(), "{c:?}");
    if u.backend != Backend::Memfd {
        let again = Pool::open_with(&u.name, &u.opts()).unwrap();
        assert_eq!(again.size(), pool.size());
        read_grown(&again, n);
        let info = shmval::admin::inspect(pool.dir(), &u.name).unwrap();
        assert_eq!(
            (info.size, info.max_size),
            (pool.size(), 32 << 20),
            "{info:?}"
        );
    }
}

fn handshake_values_and_pipes(backend: &str) {
    let mut u = Under::new(backend);
    let pool = u.create(8 << 20);
    let root = pool.root().unwrap();
    root.insert("from_parent", 41).unwrap();
    let v = Val::from_literal("{'a': [1, 2.5, 'x'], 'b': (None, True), 'c': b'\\x01'}").unwrap();
    root.insert("v", v.clone()).unwrap();
    root.insert("arr", vec![0.5f64; 1000]).unwrap();
    let (tx, rx) = (
        Pipe::create(&pool, "in", 16).unwrap(),
        Pipe::create(&pool, "out", 16).unwrap(),
    );
    let mut kid = u.spawn(&pool, "peer");
    for i in 0..200i64 {
        tx.send(pool.share(&tab! { "seq" => i, "s" => "payload" }).unwrap())
            .unwrap();
        let back = rx.recv_timeout(10 * SECS).unwrap();
        assert_eq!(
            back.as_tab().unwrap().get_val("seq").unwrap(),
            Some(Val::I64(i))
        );
    }
    tx.close();
    wait_ok(&mut kid, 10 * SECS, "peer");
    assert_eq!(root.get_val("from_child").unwrap(), Some(Val::I64(42)));
    assert_eq!(root.get_val("v").unwrap(), Some(v));
    assert!(pool.check().is_ok());
    let info = shmval::admin::inspect(pool.dir(), &u.name);
    if u.backend != Backend::Memfd {
        let info = info.unwrap();
        assert_eq!(info.backend, backend, "{info:?}");
        assert_eq!(info.state, "ready", "{info:?}");
        assert!(info.used.unwrap() > 8000, "{info:?}");
    }
}

fn crash_recovery(backend: &str) {
    let mut u = Under::new(backend);
    let pool = u.create(8 << 20);
    drop(pool.root().unwrap()); // the root table exists (the child's open makes it else)
    let base = pool.stats().in_use;
    let mut kid = u.spawn(&pool, "holder");
    let t = std::time::Instant::now();
    while pool.user_word(5).load(std::sync::atomic::Ordering::SeqCst) == 0 {
        assert!(t.elapsed() < 10 * SECS, "the holder never got going");
        std::thread::sleep(Duration::from_millis(2));
    }
    assert!(pool.stats().in_use > base);
    kid.kill().unwrap();
    kid.wait().unwrap();
    let r = pool.reclaim_dead();
    assert!(r.references >= 20, "{r:?}");
    assert_eq!(pool.stats().in_use, base, "what the dead held came back");
    let c = pool.check();
    assert!(
        c.is_ok() && c.leaks().is_empty() && c.unreachable.is_empty(),
        "{c:?}"
    );
}

fn destroy(backend: &str) {
    let u = Under::new(backend);
    let pool = u.create(4 << 20);
    pool.root().unwrap().insert("k", 1).unwrap();
    match u.backend {
        Backend::Memfd => {
            // Nothing to destroy by name: not found anywhere; gone with its handles.
            assert!(matches!(
                Pool::destroy_with(&u.name, &u.opts()),
                Err(shmval::DestroyError::NotFound { .. })
            ));
            assert!(pool.health().is_ok());
        }
        Backend::SysV => {
            let key = shmval::admin::inspect(&u.dir, &u.name)
                .unwrap()
                .sysv_key
                .unwrap();
            assert!(ipcs_has(&key), "ipcs -m lists {key}");
            Pool::destroy_with(&u.name, &u.opts()).unwrap();
            assert!(!pool.health().is_ok(), "{:?}", pool.health());
            drop(pool);
            assert!(!ipcs_has(&key), "{key} still listed after the last detach");
            assert!(matches!(
                Pool::open_with(&u.name, &u.opts()),
                Err(OpenError::NotFound { .. })
            ));
        }
        _ => {
            Pool::destroy_with(&u.name, &u.opts()).unwrap();
            assert!(!pool.health().is_ok());
            pool.root().unwrap().insert("still", "works here").unwrap();
            drop(pool);
            assert!(matches!(
                Pool::open_with(&u.name, &u.opts()),
                Err(OpenError::NotFound { .. })
            ));
        }
    }
}

fn ipcs_has(key: &str) -> bool {
    let o = std::process::Command::new("ipcs").arg("-m").output();
    match o {
        Ok(o) => String::from_utf8_lossy(&o.stdout).contains(key),
        // No ipcs here: ask /proc.
        Err(_) => std::fs::read_to_string("/proc/sysvipc/shm")
            .unwrap_or_default()
            .lines()
            .any(|l| {
                l.split_whitespace()
                    .next()
                    .and_then(|k| k.parse::<i32>().ok())
                    .is_some_and(|k| format!("{k:#010x}") == key)
            }),
    }
}

fn bad_input(backend: &str) {
    let u = Under::new(backend);
    // No such pool.
    if u.backend != Backend::Memfd {
        assert!(matches!(
            Pool::open_with(&u.name, &u.opts()),
            Err(OpenError::NotFound { .. })
        ));
    }
    let pool = u.create(4 << 20);
    match u.backend {
        Backend::SysV => {
            // The segment removed under the boot record: a typed error, no SIGBUS.
            let arg = shmval::admin::inspect(&u.dir, &u.name).unwrap();
            assert_eq!(arg.backend, "sysv");
            let key = u32::from_str_radix(arg.sysv_key.unwrap().trim_start_matches("0x"), 16)
                .unwrap() as i32;
            // SAFETY: plain system calls on integers.
            let id = unsafe { libc::shmget(key, 0, 0) };
            assert!(id >= 0);
            // SAFETY: as above (IPC_RMID takes no buffer).
            let removed = unsafe { libc::shmctl(id, libc::IPC_RMID, std::ptr::null_mut()) };
            assert_eq!(removed, 0);
            drop(pool);
            match Pool::open_with(&u.name, &u.opts()) {
                Err(OpenError::Corrupt { what, .. }) => assert!(what.contains("gone"), "{what}"),
                other => panic!("{other:?}"),
            }
        }
        Backend::Memfd => {
            // A message without descriptors, then one with a foreign pair.
            let (a, b) = UnixStream::pair().unwrap();
            std::io::Write::write_all(&mut &a, b"no descriptors").unwrap();
            assert!(matches!(
                Pool::receive(&b, &PoolOptions::new()),
                Err(OpenError::Os { .. })
            ));
            // A named pool cannot be sent by descriptor.
            let named = Under::new("posix");
            let p2 = named.create(1 << 20);
            assert!(p2.send_to(&a).is_err());
            drop(pool);
        }
        _ => {
            // The main segment truncated under the boot record: refused, no SIGBUS.
            drop(pool);
            let main = u.opts().get_dir().join(&u.name);
            std::fs::OpenOptions::new()
                .write(true)
                .open(&main)
                .unwrap()
                .set_len(4096)
                .unwrap();
            assert!(matches!(
                Pool::open_with(&u.name, &u.opts()),
                Err(OpenError::Corrupt { .. })
            ));
        }
    }
}

macro_rules! conformance {
    ($($backend:ident),*) => {$(
        mod $backend {
            #[test]
            fn conformance_handshake_values_pipes() {
                super::handshake_values_and_pipes(stringify!($backend));
            }
            #[test]
            fn conformance_crash_recovery() {
                super::crash_recovery(stringify!($backend));
            }
            #[test]
            fn conformance_destroy() {
                super::destroy(stringify!($backend));
            }
            #[test]
            fn conformance_growth() {
                super::growth(stringify!($backend));
            }
            #[test]
            fn conformance_bad_input() {
                super::bad_input(stringify!($backend));
            }
        }
    )*};
}

conformance!(posix, file, sysv, memfd);
