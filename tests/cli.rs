//! The `shmval` tool against real pools: `check` of a healthy pool, of a corrupt
//! count, of references a SIGKILLed process leaked, of no pool at all; exit codes and
//! `--json`.

mod common;

use common::{child_done, json, spawn, Scratch};
use shmval::{tab, Broadcast, Offset, Pipe, Policy, Pool, PoolOptions, Val};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering::SeqCst};
use std::time::{Duration, Instant};

fn shmval(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_shmval"))
        .args(args)
        .output()
        .expect("run shmval")
}

/// A pool with a table in the root, a pipe holding a value, a broadcast holding one
/// (for its subscriber); the handles on the pipe, broadcast and subscriber.
fn populated(s: &Scratch) -> (Pool, Pipe, Broadcast, shmval::Subscriber) {
    let pool = Pool::create_with(s.name(), 4 << 20, &PoolOptions::new()).unwrap();
    let t = pool
        .share(&tab! { "name" => "sensor", "data" => vec![1.5f64; 4], "tags" => Val::List(vec![Val::from("a long enough string")]) })
        .unwrap();
    pool.root().unwrap().insert("t", &t).unwrap();
    let p = Pipe::create(&pool, "p", 8).unwrap();
    p.send(
        pool.share(&Val::from("a value in flight in the pipe"))
            .unwrap(),
    )
    .unwrap();
    let b = Broadcast::create(&pool, "b", 4, Policy::DropOldest).unwrap();
    let sub = b.subscribe().unwrap(); // keeps the value in the ring until it drops
    b.send(
        pool.share(&Val::from("a value in flight in the broadcast"))
            .unwrap(),
    )
    .unwrap();
    (pool, p, b, sub)
}

/// Entry point of the re-spawned child processes (a no-op in a normal run).
#[test]
fn child_role_entry() {
    let Some(role) = common::role() else { return };
    if role == "repairer" {
        // Repairs, stopping inside with the repair lock held until told to go on.
        let pool = Pool::open(&std::env::var("POOL").unwrap(), Duration::from_secs(5)).unwrap();
        let marker = std::env::var("MARKER").unwrap();
        shmval::fail::set(
            "pool.repair.locked",
            shmval::fail::Action::Call(std::sync::Arc::new(move || {
                std::fs::write(&marker, b"locked").unwrap();
                let go = format!("{marker}.go");
                let t = Instant::now();
                while !std::path::Path::new(&go).exists() && t.elapsed() < Duration::from_secs(30) {
                    std::thread::sleep(Duration::from_millis(1));
                }
            })),
        );
        // SAFETY: this process holds no handle into the pool.
        unsafe { pool.repair() }.unwrap();
        drop(pool);
        child_done();
    }
    if role == "leak-and-die" {
        let pool = Pool::open(&std::env::var("POOL").unwrap(), Duration::from_secs(5)).unwrap();
        let root = pool.root().unwrap();
        shmval::fail::set("ledger.add", shmval::fail::Action::Abort);
        let _t = root.get("t"); // the count is raised, then the process ends
        unreachable!("the fail point ends the process");
    }
    if role == "build-and-die" {
        let pool = Pool::open(&std::env::var("POOL").unwrap(), Duration::from_secs(5)).unwrap();
        shmval::fail::set("ledger.add", shmval::fail::Action::Abort);
        // Made (count 1), not yet counted as this process's: nothing refers to it.
        let _t = pool.share(&tab! { "built" => "by a process that died", "n" => vec![1i64, 2] });
        unreachable!("the fail point ends the process");
    }
    assert_eq!(role, "hold-and-die");
    let pool = Pool::open(&std::env::var("POOL").unwrap(), Duration::from_secs(5)).unwrap();
    // Two handles on the table the parent shared, and a list of its own in the root,
    // of which it keeps a second handle too.
    let t = pool.root().unwrap().get("t").unwrap().unwrap();
    let t2 = t.clone();
    pool.root()
        .unwrap()
        .insert("mine", Val::List(vec![Val::I64(1)]))
        .unwrap();
    let l = pool.root().unwrap().get("mine").unwrap().unwrap();
    pool.user_word(4).store(1, SeqCst);
    std::thread::sleep(Duration::from_secs(60)); // killed here
    drop((t, t2, l));
    child_done();
}

#[test]
fn a_healthy_pool_checks_clean_with_values_in_flight() {
    let s = Scratch::new("cli-clean");
    let (pool, p, b, sub) = populated(&s);
    let o = shmval(&["check", s.name()]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{text}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(text.trim_end().ends_with("clean"), "{text}");
    let o = shmval(&["check", s.name(), "--json"]);
    assert_eq!(o.status.code(), Some(0));
    let v = json(&o);
    assert_eq!(v["clean"], true);
    assert_eq!(v["problems"].as_array().unwrap().len(), 0);
    // Root, the table, its array, its list, the list's string; the two directories,
    // the pipe and the broadcast; the value in each.
    assert_eq!(v["objects"], 11, "{v}");
    assert_eq!(v["attached"], 2, "this test and the tool");
    // This process's handles on the pipe and the broadcast hold one reference each
    // beyond the directories'.
    let held: Vec<_> = v["held"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h["kind"].as_str().unwrap(),
                h["count"].as_u64().unwrap(),
                h["found"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(held.len(), 2, "{v}");
    assert!(
        held.contains(&("pipe", 2, 1)) && held.contains(&("broadcast", 2, 1)),
        "{v}"
    );
    assert_eq!(
        v["leaks"].as_array().unwrap().len(),
        0,
        "others are attached: {v}"
    );
    drop((sub, b, p));
    let v = json(&shmval(&["check", s.name(), "--json"]));
    assert_eq!(
        (v["held"].as_array().unwrap().len(), v["objects"].as_u64()),
        (0, Some(10)),
        "the broadcast's value went with its last subscriber: {v}"
    );
    drop(pool);
}

#[test]
fn a_count_below_its_references_is_a_problem() {
    let s = Scratch::new("cli-count");
    let pool = Pool::create_with(s.name(), 1 << 20, &PoolOptions::new()).unwrap();
    let t = pool.share(&tab! { "k" => vec![1i64, 2, 3] }).unwrap();
    pool.root().unwrap().insert("t", &t).unwrap();
    pool.root().unwrap().insert("again", &t).unwrap();
    let off = t.offset().unwrap();
    drop(t); // count 2: the two root entries
    let count = pool.resolve(Offset::new(off + 4).unwrap(), 4).unwrap();
    // SAFETY: the object header's refcount word (docs/LAYOUT.md), aligned, in the pool;
    // nobody else uses this pool.
    let count = unsafe { &*(count.as_ptr() as *const AtomicU32) };
    assert_eq!(count.load(SeqCst), 2);
    count.store(1, SeqCst);
    let o = shmval(&["check", s.name(), "--json"]);
    assert_eq!(o.status.code(), Some(1));
    let v = json(&o);
    let p = &v["problems"][0];
    assert_eq!(p["offset"], off);
    assert!(
        p["what"]
            .as_str()
            .unwrap()
            .contains("reference count 1, 2 references found"),
        "{v}"
    );
    count.store(2, SeqCst); // as it was, so that dropping the pool frees it whole
    assert_eq!(shmval(&["check", s.name()]).status.code(), Some(0));
}

#[test]
fn references_a_killed_process_held_come_back_at_the_next_open() {
    let s = Scratch::new("cli-dead");
    let pool = pool_with_a_table(&s);
    let mut kid = spawn("child_role_entry", "hold-and-die", &[("POOL", s.0.clone())]);
    wait_ready(&pool);
    kid.kill().unwrap();
    kid.wait().unwrap();
    // Read in place (this process's check replays nothing): the dead child's
    // ledger still counts its three references.
    let c = pool.check();
    assert_eq!(c.dead_ledgers, 1, "{c:?}");
    let mut leaks: Vec<_> = c
        .leaks()
        .iter()
        .map(|h| (h.kind, h.count, h.found, h.handles, h.dead))
        .collect();
    leaks.sort();
    assert_eq!(
        leaks,
        [("dict", 3, 1, 0, 2), ("list", 2, 1, 0, 1)],
        "the table's two handles and the list's one, counted in the dead child's ledger"
    );
    // The tool's open replays the ledger: nothing is held any more.
    let o = shmval(&["check", s.name(), "--json"]);
    let v = json(&o);
    assert_eq!(o.status.code(), Some(0), "{v}");
    assert_eq!(v["held"].as_array().unwrap().len(), 0, "{v}");
    assert_eq!(v["dead_ledgers"], 0, "{v}");
    let c = pool.check();
    assert!(c.held.is_empty() && c.dead_ledgers == 0, "{c:?}");
    // And the list the child made goes when the root lets go of it.
    let before = pool.stats().in_use;
    pool.root().unwrap().remove("mine").unwrap();
    assert!(pool.stats().in_use < before);
    assert!(pool.check().held.is_empty());
}

/// `shmval repair NAME --json`, which must succeed: its report.
fn repaired(s: &Scratch) -> serde_json::Value {
    let o = shmval(&["repair", s.name(), "--json"]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    json(&o)
}

/// A pool of `s` whose root holds a table `t` (the root's is its only reference).
fn pool_with_a_table(s: &Scratch) -> Pool {
    let pool = Pool::create_with(s.name(), 1 << 20, &PoolOptions::new()).unwrap();
    let t = pool.share(&tab! { "seq" => 7 }).unwrap();
    pool.root().unwrap().insert("t", &t).unwrap();
    pool
}

fn wait_ready(pool: &Pool) {
    let start = Instant::now();
    while pool.user_word(4).load(SeqCst) == 0 {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "child never got ready"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn a_reference_taken_but_not_yet_ledgered_is_a_leak_that_repair_fixes() {
    let s = Scratch::new("cli-leak");
    let pool = pool_with_a_table(&s);
    // The child dies between raising the table's count and ledgering it.
    let mut kid = spawn("child_role_entry", "leak-and-die", &[("POOL", s.0.clone())]);
    let st = kid.wait().unwrap();
    assert!(!st.success(), "the child died at the fail point: {st:?}");
    let o = shmval(&["check", s.name(), "--json"]);
    assert_eq!(o.status.code(), Some(1), "a leak is a problem");
    let v = json(&o);
    let leaks: Vec<_> = v["leaks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h["kind"].as_str().unwrap().to_string(),
                h["count"].as_u64().unwrap(),
                h["found"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(leaks, [("dict".to_string(), 2, 1)], "{v}");
    assert!(v["problems"].as_array().unwrap().is_empty());
    let text = String::from_utf8_lossy(&shmval(&["check", s.name()]).stdout).to_string();
    assert!(
        text.contains("LEAKED") && text.contains("0 problem(s), 1 leak(s)"),
        "{text}"
    );
    // While this process is attached a repair is refused.
    let o = shmval(&["repair", s.name()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("attached"),
        "{o:?}"
    );
    drop(pool);
    // Alone, the repair lowers the count to the references found.
    let v = repaired(&s);
    assert_eq!(v["fixed"].as_array().unwrap().len(), 1, "{v}");
    assert_eq!(v["after"]["held"].as_array().unwrap().len(), 0, "{v}");
    assert_eq!(shmval(&["check", s.name()]).status.code(), Some(0));
    let pool = Pool::open(s.name(), Duration::ZERO).unwrap();
    pool.root().unwrap().remove("t").unwrap();
    assert!(pool.check().held.is_empty());
}

#[test]
fn openers_are_refused_while_a_repair_runs() {
    let s = Scratch::new("cli-repairing");
    let pool = Pool::create_with(s.name(), 1 << 20, &PoolOptions::new()).unwrap();
    pool.root().unwrap().insert("k", 1).unwrap();
    drop(pool);
    let marker = format!("/tmp/{}-marker", s.name());
    let _ = std::fs::remove_file(&marker);
    let _ = std::fs::remove_file(format!("{marker}.go"));
    let mut kid = spawn(
        "child_role_entry",
        "repairer",
        &[("POOL", s.0.clone()), ("MARKER", marker.clone())],
    );
    let t = Instant::now();
    while !std::path::Path::new(&marker).exists() {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "the repair never locked"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    let r = Pool::open(s.name(), Duration::ZERO);
    assert!(
        matches!(r, Err(shmval::OpenError::Repairing { .. })),
        "{r:?}"
    );
    std::fs::write(format!("{marker}.go"), b"go").unwrap();
    common::wait_ok(&mut kid, Duration::from_secs(30), "repairer");
    let pool = Pool::open(s.name(), Duration::ZERO).expect("open once the repair is done");
    assert!(pool.check().is_ok());
    let _ = std::fs::remove_file(&marker);
    let _ = std::fs::remove_file(format!("{marker}.go"));
}

#[test]
fn a_damaged_allocator_is_a_problem() {
    let s = Scratch::new("cli-alloc");
    let pool = Pool::create_with(s.name(), 1 << 20, &PoolOptions::new()).unwrap();
    let l = std::alloc::Layout::from_size_align(10_000, 16).unwrap();
    let off = pool.alloc(l).unwrap();
    // The pool's base from a block's address; `large_used` is at offset 168 of the
    // allocator header (docs/LAYOUT.md).
    let base = pool.resolve(off, 1).unwrap().as_ptr() as usize - off.get() as usize;
    // SAFETY: the allocator header's aligned `large_used` word inside the mapping;
    // only this test uses the pool.
    let used = unsafe { &*((base + 168) as *const std::sync::atomic::AtomicU64) };
    let was = used.load(SeqCst);
    used.store(was + 4096, SeqCst);
    let o = shmval(&["check", s.name(), "--json"]);
    assert_eq!(o.status.code(), Some(1));
    let v = json(&o);
    assert!(
        v["problems"][0]["what"]
            .as_str()
            .unwrap()
            .starts_with("allocator: large_used says"),
        "{v}"
    );
    used.store(was, SeqCst);
    assert_eq!(shmval(&["check", s.name()]).status.code(), Some(0));
    // SAFETY: allocated above with `l`.
    unsafe { pool.free(off, l) }.unwrap();
}

#[test]
fn no_such_pool_cannot_be_checked() {
    let o = shmval(&["check", "shmval-test-no-such-pool-anywhere"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("cannot open"));
    let o = shmval(&["check"]);
    assert_eq!(o.status.code(), Some(2), "clap's usage error");
    let o = shmval(&["chekc", "x"]);
    assert_eq!(o.status.code(), Some(2), "a misspelled command");
}

#[test]
fn an_object_nothing_refers_to_is_reported_and_swept_by_repair() {
    let s = Scratch::new("cli-sweep");
    let pool = Pool::create_with(s.name(), 1 << 20, &PoolOptions::new()).unwrap();
    let base = pool.stats().in_use;
    let st = spawn(
        "child_role_entry",
        "build-and-die",
        &[("POOL", s.0.clone())],
    )
    .wait()
    .unwrap();
    assert!(!st.success(), "the child died at the fail point");
    assert!(pool.stats().in_use > base, "the dict it made stays");
    let o = shmval(&["check", s.name(), "--json"]);
    assert_eq!(o.status.code(), Some(1), "an unreachable object is a leak");
    let v = json(&o);
    let u = v["unreachable"].as_array().unwrap();
    assert_eq!(
        u.len(),
        1,
        "the dict (its string and list are inside it): {v}"
    );
    assert_eq!(
        (u[0]["kind"].as_str(), u[0]["count"].as_u64()),
        (Some("dict"), Some(1))
    );
    drop(pool);
    let v = repaired(&s);
    assert_eq!(v["swept"], 1, "{v}");
    assert_eq!(
        v["after"]["unreachable"].as_array().unwrap().len(),
        0,
        "{v}"
    );
    let pool = Pool::open(s.name(), Duration::ZERO).unwrap();
    assert_eq!(
        pool.stats().in_use,
        base,
        "the dict and what it held are freed"
    );
    assert_eq!(shmval(&["check", s.name()]).status.code(), Some(0));
}
