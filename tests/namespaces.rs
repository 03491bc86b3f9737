//! Processes in different PID namespaces (containers sharing `/dev/shm`) share one
//! pool: liveness must never take a live process of another namespace for dead, two
//! processes that are both pid 1 must not be confused, and a process SIGKILLed in
//! another namespace must still be recovered from. Children run under
//! `unshare --pid --fork --mount-proc` (each is pid 1 of a namespace of its own,
//! with a /proc that shows only its namespace). Where `unshare` is refused the tests
//! print why and pass without running.

mod common;

use common::{child_done, role, spawn_under, wait_ok, Scratch, CHILD_OK};
use shmval::{fail, Pipe, Pool, PoolOptions, ShmVal};
use std::alloc::Layout;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::SeqCst;
use std::sync::Arc;
use std::time::{Duration, Instant};

const SECS: Duration = Duration::from_secs(1);

/// Why PID namespaces cannot be used here, if they cannot.
fn unshare_refused() -> Option<String> {
    match Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc", "true"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
    {
        Ok(o) if o.status.success() => None,
        Ok(o) => Some(format!(
            "unshare --pid --fork --mount-proc refused: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Err(e) => Some(format!("cannot run unshare: {e}")),
    }
}

macro_rules! require_pid_namespaces {
    () => {
        if let Some(why) = unshare_refused() {
            eprintln!("skipped: {why}");
            return;
        }
    };
}

/// Re-runs this test binary's `test` in `role`, as pid 1 of a new PID namespace
/// (`as_init`), or as pid 2 under a shell (a namespace's pid 1 cannot SIGKILL
/// itself: the kernel ignores signals to init from inside its namespace).
fn spawn_in_namespace_as(as_init: bool, test: &str, role: &str, env: &[(&str, String)]) -> Child {
    let mut prefix = vec![
        "unshare",
        "--pid",
        "--fork",
        "--mount-proc",
        "--kill-child",
        "--",
    ];
    if !as_init {
        prefix.extend(["sh", "-c", "\"$0\" \"$@\"; exit $?"]);
    }
    spawn_under(&prefix, test, role, env)
}

fn spawn_in_namespace(test: &str, role: &str, env: &[(&str, String)]) -> Child {
    spawn_in_namespace_as(true, test, role, env)
}

fn env(k: &str) -> String {
    std::env::var(k).unwrap_or_else(|_| panic!("{k} not set"))
}

fn open(name: &str) -> Pool {
    Pool::open(name, 5 * SECS).expect("open pool")
}

fn word(pool: &Pool, i: usize) -> &AtomicU64 {
    pool.user_word(i)
}

// ----- children -----------------------------------------------------------------

/// Locks the root table again and again for `MS` milliseconds; inside, checks that
/// nobody else is inside (user word 5), sometimes staying 15 ms (longer than a
/// waiter's liveness check interval), and counts its turns in user word 6.
fn lock_loop(pool: &Pool) {
    assert_eq!(
        std::process::id(),
        1,
        "each child is pid 1 of its own namespace"
    );
    let root = pool.root().unwrap();
    let until_t = Instant::now() + Duration::from_millis(env("MS").parse().unwrap());
    let mut i = 0u64;
    while Instant::now() < until_t {
        let g = root
            .lock()
            .expect("lock (never Reentrant, never a timeout)");
        assert_eq!(word(pool, 5).swap(1, SeqCst), 0, "two holders at once");
        if i % 8 == 0 {
            std::thread::sleep(Duration::from_millis(15));
        } else {
            std::thread::sleep(Duration::from_micros(200));
        }
        word(pool, 6).fetch_add(1, SeqCst);
        assert_eq!(word(pool, 5).swap(0, SeqCst), 1, "two holders at once");
        drop(g);
        i += 1;
        std::thread::yield_now();
    }
}

/// Allocates, stamps, verifies and frees blocks for `MS` milliseconds: a block handed
/// to two processes at once shows up as a foreign stamp.
fn alloc_loop(pool: &Pool) {
    let me: u64 = env("ID").parse().unwrap();
    let until_t = Instant::now() + Duration::from_millis(env("MS").parse().unwrap());
    let mut seq = 0u64;
    let mut held: Vec<(shmval::Offset, Layout, u64)> = Vec::new();
    while Instant::now() < until_t {
        for k in 0..64u64 {
            let l = Layout::from_size_align(16 + 8 * ((seq + k) % 24) as usize, 8).unwrap();
            let off = pool.alloc(l).expect("alloc");
            let stamp = me << 56 | seq;
            seq += 1;
            stamp_block(pool, off, l, stamp);
            held.push((off, l, stamp));
        }
        std::thread::sleep(Duration::from_micros(300));
        for (off, l, stamp) in held.drain(..) {
            check_block(pool, off, l, stamp);
            // SAFETY: allocated above with `l`, freed once.
            unsafe { pool.free(off, l).expect("free") };
        }
    }
    word(pool, 4 + me as usize).store(seq, SeqCst);
}

fn block_words(pool: &Pool, off: shmval::Offset, l: Layout) -> &[AtomicU64] {
    let p = pool.resolve(off, l.size()).expect("block inside the pool");
    // SAFETY: an 8-aligned block of ours of l.size() bytes, used through atomics.
    unsafe { std::slice::from_raw_parts(p.as_ptr().cast::<AtomicU64>(), l.size() / 8) }
}

fn stamp_block(pool: &Pool, off: shmval::Offset, l: Layout, stamp: u64) {
    for w in block_words(pool, off, l) {
        w.store(stamp, SeqCst);
    }
}

fn check_block(pool: &Pool, off: shmval::Offset, l: Layout, stamp: u64) {
    for w in block_words(pool, off, l) {
        let got = w.load(SeqCst);
        assert_eq!(got, stamp, "block {off:?} handed out twice: {got:#x} in it");
    }
}

#[test]
fn child_roles() {
    let Some(r) = role() else { return };
    let pool = open(&env("POOL"));
    match r.as_str() {
        "lock-loop" => lock_loop(&pool),
        "alloc-loop" => alloc_loop(&pool),
        "die-holding-lock" => {
            let root = pool.root().unwrap();
            let g = root.lock().unwrap();
            word(&pool, 4).store(1, SeqCst);
            std::mem::forget(g);
            // SAFETY: kill(2) on ourselves; nothing to clean up by design.
            unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
        }
        "die-holding-slot" => {
            // Claims a cache slot (its first allocation) and dies holding it.
            let l = Layout::new::<[u64; 4]>();
            let _ = pool.alloc(l).unwrap();
            word(&pool, 4).store(1, SeqCst);
            // SAFETY: as above.
            unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
        }
        "die-claiming" => {
            let pipe = Pipe::open(&pool, "p", SECS).unwrap();
            // Dies in a send on the shared side, right after its claim.
            fail::set_for_thread("pipe.never_own", fail::Action::On);
            let p2 = pool.clone();
            let die = move || {
                word(&p2, 4).store(1, SeqCst);
                // SAFETY: as above.
                unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
            };
            fail::set_for_thread(
                "pipe.send.shared.claimed",
                fail::Action::Call(Arc::new(die)),
            );
            let _ = pipe.send(pool.share(&shmval::Val::I64(1)).unwrap());
            unreachable!("killed inside the send");
        }
        other => panic!("unknown role {other}"),
    }
    drop(pool);
    child_done();
}

// ----- tests --------------------------------------------------------------------

fn new_pool(s: &Scratch) -> Pool {
    Pool::create_with(s.name(), 8 << 20, &PoolOptions::new()).expect("create")
}

/// Two pid-1 processes of two namespaces take one table lock in turn, holding it up
/// to 15 ms: mutual exclusion holds and neither is told `Reentrant` (before: each
/// saw the other's lock word as its own tid, or took the other for dead after 10 ms).
#[test]
fn a_lock_is_exclusive_between_pid_namespaces() {
    if role().is_some() {
        return;
    }
    require_pid_namespaces!();
    let s = Scratch::new("ns-lock");
    let pool = new_pool(&s);
    let _root = pool.root().unwrap();
    let e = [("POOL", s.0.clone()), ("MS", "1500".to_string())];
    let mut kids: Vec<Child> = (0..2)
        .map(|_| spawn_in_namespace("child_roles", "lock-loop", &e))
        .collect();
    // This process (another namespace again) takes turns too.
    let root = pool.root().unwrap();
    let t = Instant::now();
    while t.elapsed() < Duration::from_millis(1500) {
        let g = root.lock().unwrap();
        assert_eq!(word(&pool, 5).swap(1, SeqCst), 0, "two holders at once");
        std::thread::sleep(Duration::from_millis(12));
        assert_eq!(word(&pool, 5).swap(0, SeqCst), 1, "two holders at once");
        drop(g);
        std::thread::sleep(Duration::from_millis(3));
    }
    for k in &mut kids {
        wait_ok(k, 20 * SECS, "lock loop in a PID namespace");
    }
    assert!(word(&pool, 6).load(SeqCst) > 10, "the children took turns");
}

/// Two processes of two namespaces allocate and stamp blocks while this one opens
/// the pool again and again (each open reclaims the cache slots of dead processes):
/// no live process's slot is taken, no block is handed out twice.
#[test]
fn no_block_is_handed_out_twice_across_pid_namespaces() {
    if role().is_some() {
        return;
    }
    require_pid_namespaces!();
    let s = Scratch::new("ns-alloc");
    let pool = new_pool(&s);
    let mut kids: Vec<Child> = (1..=2)
        .map(|id| {
            spawn_in_namespace(
                "child_roles",
                "alloc-loop",
                &[
                    ("POOL", s.0.clone()),
                    ("MS", "1500".into()),
                    ("ID", id.to_string()),
                ],
            )
        })
        .collect();
    let t = Instant::now();
    while t.elapsed() < Duration::from_millis(1700) {
        let other = open(s.name());
        let l = Layout::new::<[u64; 2]>();
        let off = other.alloc(l).unwrap();
        // SAFETY: allocated just above, freed once.
        unsafe { other.free(off, l).unwrap() };
        drop(other);
        std::thread::sleep(Duration::from_millis(2));
    }
    for k in &mut kids {
        wait_ok(k, 20 * SECS, "allocating child in a PID namespace");
    }
    assert!(word(&pool, 5).load(SeqCst) > 0 && word(&pool, 6).load(SeqCst) > 0);
}

fn run_to_death(s: &Scratch, pool: &Pool, role: &str) {
    word(pool, 4).store(0, SeqCst);
    let mut kid = spawn_in_namespace_as(false, "child_roles", role, &[("POOL", s.0.clone())]);
    let st = kid.wait().unwrap();
    assert_ne!(st.code(), Some(CHILD_OK), "the child was meant to die");
    assert_eq!(word(pool, 4).load(SeqCst), 1, "the child reached its point");
}

/// A lock holder SIGKILLed in another namespace: the next taker recovers the lock
/// (within the liveness check interval, not after a timeout) and the table reads
/// whole.
#[test]
fn a_lock_holder_killed_in_another_pid_namespace_is_recovered_from() {
    if role().is_some() {
        return;
    }
    require_pid_namespaces!();
    let s = Scratch::new("ns-deadlock");
    let pool = new_pool(&s);
    let root = pool.root().unwrap();
    root.insert("before", 7).unwrap();
    run_to_death(&s, &pool, "die-holding-lock");
    let t = Instant::now();
    root.insert("after", 8).unwrap();
    assert!(t.elapsed() < 2 * SECS, "recovered in {:?}", t.elapsed());
    let v = root.to_val().unwrap();
    assert_eq!(v.to_string(), "{'before': 7, 'after': 8}");
}

/// A process SIGKILLed in another namespace holding a cache slot: the next open
/// reclaims the slot.
#[test]
fn a_cache_slot_of_a_process_killed_in_another_pid_namespace_is_reclaimed() {
    if role().is_some() {
        return;
    }
    require_pid_namespaces!();
    let s = Scratch::new("ns-deadslot");
    let pool = new_pool(&s);
    let before = pool.slots_in_use();
    run_to_death(&s, &pool, "die-holding-slot");
    assert_eq!(pool.slots_in_use(), before + 1, "the dead child's slot");
    drop(open(s.name()));
    assert_eq!(pool.slots_in_use(), before, "reclaimed by the next open");
}

/// A sender SIGKILLed in another namespace after claiming a cell: the receiver
/// skips the dead claim and gets the value behind it.
#[test]
fn a_pipe_claim_of_a_process_killed_in_another_pid_namespace_is_recovered() {
    if role().is_some() {
        return;
    }
    require_pid_namespaces!();
    let s = Scratch::new("ns-deadclaim");
    let pool = new_pool(&s);
    let p = Pipe::create(&pool, "p", 4).unwrap();
    run_to_death(&s, &pool, "die-claiming");
    p.send(ShmVal::from(2i64)).unwrap();
    let t = Instant::now();
    let v = p
        .recv_timeout(5 * SECS)
        .expect("the value behind the dead claim");
    assert_eq!(v.to_string(), "2");
    assert!(t.elapsed() < 2 * SECS, "recovered in {:?}", t.elapsed());
}
