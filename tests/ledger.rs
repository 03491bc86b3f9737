//! The reference ledger: what a process's handles held comes back when it dies (a
//! pipeline's middle killed again and again leaves nothing behind), a replay killed
//! midway is finished by the next one without giving anything back twice, and a
//! forked child dropping handles it inherited gives back nothing of its parent's.

mod common;

use common::{spawn, wait_ok, Scratch};
use shmval::{tab, Pipe, Pool, PoolOptions, ShmVal};
use std::time::{Duration, Instant};

const SECS: Duration = Duration::from_secs(1);

fn message(pool: &Pool, i: i64) -> ShmVal {
    pool.share(&tab! { "seq" => i, "payload" => "a string long enough to be an object", "data" => vec![1.0f64; 8] })
        .unwrap()
}

#[test]
fn child_role_entry() {
    let Some(role) = common::role() else { return };
    // `NO_RECOVER`: an open that leaves what earlier deaths left (to see it).
    let opts = PoolOptions::new()
        .timeout(5 * SECS)
        .recover_on_open(std::env::var_os("NO_RECOVER").is_none());
    let pool = Pool::open_with(&std::env::var("POOL").unwrap(), &opts).unwrap();
    match role.as_str() {
        // Receives from `in`, keeps the last 16 values it received, forwards each.
        "middle" => {
            let (rx, tx) = (
                Pipe::open(&pool, "in", 5 * SECS).unwrap(),
                Pipe::open(&pool, "out", 5 * SECS).unwrap(),
            );
            let mut kept = std::collections::VecDeque::new();
            while let Ok(v) = rx.recv() {
                kept.push_back(v.clone());
                if kept.len() > 16 {
                    kept.pop_front();
                }
                if tx.send(v).is_err() {
                    break;
                }
            }
        }
        // Opened with the fail point `ledger.replay.swapped` armed (by the
        // environment): its open replays the dead holder's ledger and ends the
        // process after taking one word.
        "replayer" => panic!("the replay at open was to end this process"),
        "holder" => {
            // Values nothing in the pool refers to: only these handles hold them.
            let held: Vec<ShmVal> = (0..40).map(|i| message(&pool, i)).collect();
            pool.user_word(4)
                .store(1, std::sync::atomic::Ordering::SeqCst);
            std::thread::sleep(Duration::from_secs(60)); // killed here
            drop(held);
        }
        // A table only this process holds, its value replaced (an immediate by an
        // object) and the process killed between the slot's two stores.
        "torn-writer" => {
            let t = pool.new_tab().unwrap();
            t.insert("a", 5).unwrap();
            let v = message(&pool, 2);
            shmval::fail::set("shm.overwrite.torn", shmval::fail::Action::Abort);
            t.insert("a", v).unwrap();
            panic!("the fail point was to end this process");
        }
        // Grows the shared table and the shared list until the growth fail point named
        // by `POINT` ends the process.
        "grower" => {
            let point = std::env::var("POINT").unwrap();
            let root = pool.root().unwrap();
            let t = root.get("t").unwrap().unwrap().as_tab().unwrap();
            let l = root.get("l").unwrap().unwrap();
            let l = l.as_list().unwrap();
            // Past the first growths: the ninth (a table of some 100 entries).
            shmval::fail::set_after(&point, 8, shmval::fail::Action::Abort);
            for i in 0..100_000i64 {
                t.insert(i, "a value long enough to be an object").unwrap();
                l.push("another value long enough to be an object").unwrap();
            }
            panic!("{point} never fired");
        }
        // Receives a run as the receive side's owner and dies after reading the
        // cells, before moving `head` (the values are still the pipe's).
        "batch-reader" => {
            let p = Pipe::open(&pool, "p", 5 * SECS).unwrap();
            let point = std::env::var("POINT").unwrap_or("pipe.recv.owned.read".into());
            shmval::fail::set(&point, shmval::fail::Action::Abort);
            let mut got = Vec::new();
            let _ = p.recv_many_timeout(&mut got, 10, 5 * SECS);
            panic!("the fail point was to end this process");
        }
        "many-reader" => {
            let p = Pipe::open(&pool, "out", 5 * SECS).unwrap();
            let mut got = Vec::new();
            let end = loop {
                match p.recv_many_timeout(&mut got, 40, 5 * SECS) {
                    Ok(_) => got.clear(),
                    Err(e) => break e,
                }
            };
            if !matches!(end, shmval::RecvError::Closed) {
                eprintln!("many-reader {}: ended by {end:?}", std::process::id());
            }
        }
        // Takes a handle to the root's table "t" and dies between counting the
        // reference and ledgering it (fail point `ledger.add`).
        "count-and-die" => {
            let root = pool.root().unwrap();
            shmval::fail::set("ledger.add", shmval::fail::Action::Abort);
            let _t = root.get("t");
            panic!("the fail point was to end this process");
        }
        // Makes a value and dies before its handle is ledgered: an object nothing
        // refers to.
        "share-and-die" => {
            shmval::fail::set("ledger.add", shmval::fail::Action::Abort);
            let _v = message(&pool, 7);
            panic!("the fail point was to end this process");
        }
        // Grows a table until a data block is allocated and not yet anything's
        // (fail point `shm.block.allocated`).
        "block-and-die" => {
            let t = pool.new_tab().unwrap();
            shmval::fail::set("shm.block.allocated", shmval::fail::Action::Abort);
            for i in 0..1000i64 {
                t.insert(i, i).unwrap();
            }
            panic!("the fail point was to end this process");
        }
        // Makes a nested value only it holds and drops it, killed while dismantling
        // it at the `AFTER`th child (`shm.release.dismantling`).
        "dismantler" => {
            let v = match std::env::var("SHAPE").as_deref() {
                Ok("numbers-first") => numbers_first(&pool),
                _ => nested(&pool),
            };
            let after: u64 = std::env::var("AFTER").unwrap().parse().unwrap();
            let point = std::env::var("POINT").unwrap_or("shm.release.dismantling".into());
            shmval::fail::set_after(&point, after, shmval::fail::Action::Abort);
            drop(v);
            panic!("the fail point was to end this process");
        }
        // Holds an attach entry (counted in user word 5) until user word 6 is set.
        "idle" => {
            pool.user_word(5)
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let t = Instant::now();
            while pool.user_word(6).load(std::sync::atomic::Ordering::SeqCst) == 0
                && t.elapsed() < 60 * SECS
            {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        // Makes and drops a handle (its ledger set up: the stale one of the entry's
        // dead holder, if any, replayed first), then ends.
        "handle-and-go" => {
            drop(message(&pool, 3));
        }
        // Makes a handle and forgets it (a leak), then ends.
        "forget-and-go" => {
            std::mem::forget(message(&pool, 4));
        }
        // Tells (user word 5) whether its open recovered the pool alone.
        "report-recovery" => {
            let r = pool.recovery().map_or(2, |r| 1 + 10 * r.swept as u64);
            pool.user_word(5)
                .store(r, std::sync::atomic::Ordering::SeqCst);
        }
        other => panic!("unknown role {other}"),
    }
    drop(pool); // its last handle: an empty ledger is freed
    common::child_done();
}

/// A dict of 40 entries, each a list holding two strings and a dict of a string:
/// 200 objects, nested three deep.
fn nested(pool: &Pool) -> ShmVal {
    let mut t = shmval::Map::new();
    for i in 0..40i64 {
        t.insert(
            shmval::Val::I64(i),
            shmval::Val::List(vec![
                shmval::Val::from(format!("string number {i}, an object")),
                shmval::Val::I64(i),
                tab! { "inner" => format!("inner string {i}, an object too") },
                shmval::Val::from("another string that is an object"),
            ]),
        );
    }
    pool.share(&shmval::Val::Tab(t)).unwrap()
}

/// A dict of 10 lists, each of 20 ints and then a string object: a list being
/// dismantled passes 20 immediates before its first object.
fn numbers_first(pool: &Pool) -> ShmVal {
    let mut t = shmval::Map::new();
    for i in 0..10i64 {
        let mut l: Vec<shmval::Val> = (0..20).map(shmval::Val::I64).collect();
        l.push(shmval::Val::from(format!("string number {i}, an object")));
        t.insert(shmval::Val::I64(i), shmval::Val::List(l));
    }
    pool.share(&shmval::Val::Tab(t)).unwrap()
}

/// Runs `role` in a child that must end killed (by a fail point).
fn dies(s: &Scratch, role: &str, env: &[(&str, String)]) {
    let mut env = env.to_vec();
    env.push(("POOL", s.0.clone()));
    let st = spawn("child_role_entry", role, &env).wait().unwrap();
    assert!(st.code().is_none(), "{role} was to be killed ({st:?})");
}

/// Bytes in use that one message takes.
fn value_bytes(pool: &Pool) -> u64 {
    let before = pool.stats().in_use;
    let v = message(pool, 0);
    let after = pool.stats().in_use;
    drop(v);
    after - before
}

fn pool(s: &Scratch, size: u64) -> Pool {
    Pool::create_with(s.name(), size, &PoolOptions::new().remove_on_drop(true)).unwrap()
}

#[test]
fn a_pipeline_middle_killed_again_and_again_leaves_nothing_behind() {
    let kills: u32 = std::env::var("SHMVAL_CHAOS_KILLS").map_or(40, |v| v.parse().unwrap());
    let s = Scratch::new("ledger-middle");
    let pool = pool(&s, 64 << 20);
    let (tx, rx) = (
        Pipe::create(&pool, "in", 64).unwrap(),
        Pipe::create(&pool, "out", 64).unwrap(),
    );
    let base = pool.stats().in_use;
    let env = [("POOL", s.0.clone())];
    let mut middle = spawn("child_role_entry", "middle", &env);
    let (mut sent, mut got, mut seq) = (0u64, 0u64, 0i64);
    let mut rng = 0x2545_F491_4F6C_DD1Du64;
    for _ in 0..kills {
        // Traffic until the middle forwarded something, then for 1–20 ms more: it
        // dies busy, holding values.
        let (at_spawn, spawned) = (got, Instant::now());
        let mut until = None;
        loop {
            seq += 1;
            if tx.try_send(message(&pool, seq)).is_ok() {
                sent += 1;
            }
            while let Ok(v) = rx.try_recv() {
                drop(v);
                got += 1;
            }
            let now = Instant::now();
            if until.is_none() && (got > at_spawn || now - spawned > 10 * SECS) {
                until = Some(now + Duration::from_micros(1000 + (rng >> 40) % 19_000));
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
            }
            if until.is_some_and(|u| now >= u) {
                break;
            }
        }
        middle.kill().unwrap();
        middle.wait().unwrap();
        middle = spawn("child_role_entry", "middle", &env);
    }
    tx.close();
    // The last middle forwards what is left and ends when `in` is empty.
    let t = Instant::now();
    loop {
        while let Ok(v) = rx.try_recv() {
            drop(v);
            got += 1;
        }
        if middle.try_wait().unwrap().is_some() {
            break;
        }
        assert!(t.elapsed() < 30 * SECS, "the last middle did not end");
        std::thread::sleep(Duration::from_millis(1));
    }
    wait_ok(&mut middle, 30 * SECS, "middle");
    while let Ok(v) = rx.try_recv() {
        drop(v);
        got += 1;
    }
    // The last middle detached cleanly; the dead ones' ledgers were replayed by
    // each next middle's open (and by this call, for any left).
    pool.reclaim_dead();
    let c = pool.check();
    assert!(c.is_ok(), "{:?}", c.problems);
    assert_eq!(c.dead_ledgers, 0);
    let left = pool.stats().in_use - base;
    let per_value = value_bytes(&pool);
    eprintln!(
        "pipeline middle killed {kills} times (each holding handles on up to 17 values): \
         {sent} values sent, {got} received, {left} bytes left in use ({per_value} bytes a \
         value)"
    );
    // What a death may leave (the crash contract, PROTOCOLS.md): a reference raised
    // but not yet ledgered or taken out of the ledger but not yet given back, and a
    // string or array whose count reached 0, not yet freed (`shm.release.zero`) —
    // freed by the next sweep. A dict the middle was dismantling is noted in its
    // ledger (its handle's word turned into the note) and finished by the replay.
    // Far fewer than the 17 values a middle held, which a ledger that was not
    // replayed would leave at every kill. (Measured: at most 1,600 bytes in 40 kills, 26 runs;
    // before the replay finished dismantlings, 480 to 3,552, and up to 12 values.)
    assert!(
        left <= u64::from(kills) * per_value / 5,
        "{left} bytes left after {kills} kills ({per_value} bytes a value)"
    );
}

#[test]
fn a_replay_killed_midway_is_finished_by_the_next_without_giving_anything_back_twice() {
    let s = Scratch::new("ledger-replay");
    let pool = pool(&s, 16 << 20);
    let base = pool.stats().in_use;
    let env = [("POOL", s.0.clone())];
    let mut holder = spawn("child_role_entry", "holder", &env);
    let t = Instant::now();
    while pool.user_word(4).load(std::sync::atomic::Ordering::SeqCst) == 0 {
        assert!(t.elapsed() < 30 * SECS, "holder never got ready");
        std::thread::sleep(Duration::from_millis(1));
    }
    holder.kill().unwrap();
    holder.wait().unwrap();
    assert_eq!(pool.check().dead_ledgers, 1);
    // Each replayer dies right after taking one word out of the dead ledger, whose
    // references it never gives back (leaked: at most one word's a death).
    let armed = [
        ("POOL", s.0.clone()),
        (
            "SHMVAL_FAILPOINTS",
            "ledger.replay.swapped=abort".to_string(),
        ),
    ];
    let mut replayers = 0;
    for _ in 0..3 {
        let st = spawn("child_role_entry", "replayer", &armed)
            .wait()
            .unwrap();
        assert!(!st.success(), "the replayer died at the fail point");
        replayers += 1;
    }
    let mid = pool.check();
    assert!(mid.is_ok(), "{:?}", mid.problems);
    assert_eq!(mid.dead_ledgers, 1, "not finished yet");
    let r = pool.reclaim_dead();
    assert_eq!(r.ledgers, 1);
    assert_eq!(
        r.references,
        40 - replayers,
        "the rest of the 40 handles, each once"
    );
    let c = pool.check();
    assert!(c.is_ok(), "{:?}", c.problems);
    assert_eq!(c.dead_ledgers, 0);
    // What the dead replayers took out of the ledger and never gave back stays
    // (one value each); everything else is free again.
    let per_value = value_bytes(&pool);
    assert_eq!(pool.stats().in_use - base, replayers * per_value);
}

#[test]
fn a_forked_child_dropping_inherited_handles_gives_back_nothing_of_its_parents() {
    let s = Scratch::new("ledger-fork");
    let pool = pool(&s, 16 << 20);
    let v = message(&pool, 1);
    pool.root().unwrap().insert("v", &v).unwrap();
    let v2 = v.clone();
    let off = v.offset().unwrap();
    // SAFETY: the child only drops handles, makes and drops its own, and exits.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0);
    if pid == 0 {
        // Its own handle: taken and given back in the child's ledger.
        let mine = pool.root().unwrap().get("v").unwrap().unwrap();
        drop(mine);
        // The parent's: counted in the parent's ledger; nothing to give back here.
        drop(v2);
        drop(v);
        // SAFETY: leave without running the parent's destructors.
        unsafe { libc::_exit(0) };
    }
    let mut status = 0;
    // SAFETY: waiting for our own child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0);
    let c = pool.check();
    assert!(c.is_ok(), "{:?}", c.problems);
    let h = c.held.iter().find(|h| h.offset == off).expect("held");
    assert_eq!(
        (h.count, h.found, h.handles),
        (3, 1, 2),
        "the root's reference and this process's two handles, all still there"
    );
    assert!(c.leaks().is_empty(), "{:?}", c.leaks());
    drop((v, v2));
    assert!(pool.check().held.is_empty());
}

#[test]
fn a_table_torn_by_its_dying_holder_is_repaired_before_its_replay_frees_it() {
    let s = Scratch::new("ledger-torn");
    let pool = pool(&s, 16 << 20);
    let base = pool.stats().in_use;
    let st = spawn("child_role_entry", "torn-writer", &[("POOL", s.0.clone())])
        .wait()
        .unwrap();
    assert!(!st.success(), "the writer died at the fail point");
    let r = pool.reclaim_dead();
    assert_eq!(r.references, 1, "the table's one handle");
    // The logged overwrite is finished first, so the new value (in the slot's
    // payload, under the old immediate's tag) is released with the table.
    assert_eq!(
        pool.stats().in_use,
        base,
        "the table and the value it held are freed"
    );
    assert!(pool.check().is_ok());
}

#[test]
fn a_table_or_list_growing_when_its_writer_dies_leaks_no_block() {
    for point in ["shm.growth.logged", "shm.growth.switched"] {
        let s = Scratch::new("ledger-grow");
        let pool = pool(&s, 64 << 20);
        let root = pool.root().unwrap();
        // The root's own data block, made now: the baseline is a root with room.
        root.insert("t", 0).unwrap();
        root.insert("l", 0).unwrap();
        root.remove("t").unwrap();
        root.remove("l").unwrap();
        let base = pool.stats().in_use;
        root.insert("t", pool.new_tab().unwrap()).unwrap();
        root.insert("l", shmval::Val::List(vec![])).unwrap();
        let st = spawn(
            "child_role_entry",
            "grower",
            &[("POOL", s.0.clone()), ("POINT", point.to_string())],
        )
        .wait()
        .unwrap();
        assert!(!st.success(), "the grower died at {point}");
        pool.reclaim_dead(); // its handles on the root, the table and the list
                             // The next holder of each lock finishes or undoes the growth; then both go.
        let t = root.get("t").unwrap().unwrap().as_tab().unwrap();
        let n = t.len().unwrap();
        assert!(n > 8, "{n} entries");
        for i in 0..n as i64 {
            assert!(
                t.get(i).unwrap().is_some(),
                "entry {i} of {n} after {point}"
            );
        }
        let l = root.get("l").unwrap().unwrap();
        let _ = l.as_list().unwrap().len().unwrap();
        drop((t, l));
        assert!(pool.check().is_ok());
        root.remove("t").unwrap();
        root.remove("l").unwrap();
        // What is left: the value the dying insert had made and not yet stored (one
        // reference, ~64 bytes), never a data block (over a kilobyte here).
        let left = pool.stats().in_use - base;
        assert!(
            left <= 64,
            "a killed growth at {point} left {left} bytes behind"
        );
    }
}

#[test]
fn values_a_dying_receiver_read_but_did_not_take_are_not_given_back_by_its_replay() {
    let s = Scratch::new("ledger-batch");
    let pool = pool(&s, 16 << 20);
    let p = Pipe::create(&pool, "p", 16).unwrap();
    let base = pool.stats().in_use;
    for i in 0..3 {
        p.send(message(&pool, i)).unwrap();
    }
    let st = spawn("child_role_entry", "batch-reader", &[("POOL", s.0.clone())])
        .wait()
        .unwrap();
    assert!(!st.success(), "the reader died at the fail point");
    // Its ledger must not count the three values: the pipe still holds them.
    pool.reclaim_dead();
    let c = pool.check();
    assert!(c.is_ok(), "{:?}", c.problems);
    for i in 0..3 {
        let v = p.recv_timeout(5 * SECS).unwrap();
        assert_eq!(v.to_val().unwrap(), message(&pool, i).to_val().unwrap());
    }
    assert!(pool.check().is_ok());
    assert_eq!(
        pool.stats().in_use,
        base,
        "each value freed once, by its receiver"
    );
}

/// A receiver of a run killed at every step of committing it — as the receive
/// side's owner (reads, receipt marked, `head` moved) and as a claimer of the
/// shared side (claimed, receipt marked, record cleared) — has the run given back
/// exactly once: handed out again by the pipe (the owner had not moved `head`),
/// released by the pipe's recovery of its record, or released by the replay of its
/// ledger (the receive had happened); whichever of the pipe's recovery and the
/// replay comes first. (Before the receipt named its pipe and position, a death
/// between the receive and the receipt's mark leaked the whole run: up to 64
/// values a death.)
#[test]
fn a_receiver_killed_committing_a_run_has_it_given_back_once() {
    // (point, shared side, the pipe hands the run out again)
    let points = [
        ("pipe.recv.owned.read", false, true),
        ("pipe.recv.owned.intended", false, true),
        ("pipe.recv.owned.moved", false, false),
        ("pipe.recv.shared.claimed", true, false),
        ("pipe.recv.shared.intended", true, false),
        ("pipe.recv.shared.cleared", true, false),
    ];
    for (point, shared, again) in points {
        for replay_first in [true, false] {
            let what = format!("{point}, replay first: {replay_first}");
            let s = Scratch::new("ledger-commit");
            let pool = pool(&s, 16 << 20);
            let p = Pipe::create(&pool, "p", 8).unwrap();
            let base = pool.stats().in_use;
            for i in 0..3 {
                p.send(message(&pool, i)).unwrap();
            }
            batch_reader_dies_at(&s, point, shared, &what);
            // The pipe moves on past the dead receiver: what it still has, then a
            // full pipe's worth through it (senders wait for the dead receiver's
            // record and recover it).
            let drain = || {
                let mut got = Vec::new();
                while let Ok(v) = p.recv_timeout(Duration::from_millis(50)) {
                    got.push(v.to_val().unwrap());
                }
                for i in 0..8 {
                    p.send_timeout(ShmVal::from(i), 5 * SECS).unwrap();
                }
                for _ in 0..8 {
                    p.recv_timeout(5 * SECS).unwrap();
                }
                got
            };
            // New values in the blocks the run's values had if they were freed: a
            // second release of the run would free these.
            let fresh = || (10..13).map(|i| message(&pool, i)).collect::<Vec<_>>();
            let (got, kept) = if replay_first {
                pool.reclaim_dead();
                let got = drain();
                (got, fresh())
            } else {
                let got = drain();
                let kept = fresh();
                pool.reclaim_dead();
                (got, kept)
            };
            for (v, i) in kept.iter().zip(10..) {
                assert_eq!(
                    v.to_val().ok(),
                    message(&pool, i).to_val().ok(),
                    "{what}: a value freed twice"
                );
            }
            drop(kept);
            let want: Vec<_> = if again {
                (0..3)
                    .map(|i| message(&pool, i).to_val().unwrap())
                    .collect()
            } else {
                Vec::new()
            };
            assert_eq!(got, want, "{what}: handed out again");
            let c = pool.check();
            assert!(c.is_ok(), "{what}: {:?}", c.problems);
            assert!(
                c.unreachable.is_empty(),
                "{what}: leaked {:?}",
                c.unreachable
            );
            assert_eq!(pool.stats().in_use, base, "{what}: each value freed once");
        }
    }
}

/// A process receiving runs of up to 40 values (its receipt makes a run's
/// references its own with one store once the receive commits), killed 100 times
/// while a middle feeds it: each death leaks at most one reference (without the
/// receipt, the rest of the run it was counting: a whole batch).
#[test]
fn a_run_receiver_killed_again_and_again_leaks_at_most_one_value_a_death() {
    let s = Scratch::new("ledger-runs");
    let pool = pool(&s, 64 << 20);
    let (tx, _out) = (
        Pipe::create(&pool, "in", 64).unwrap(),
        Pipe::create(&pool, "out", 64).unwrap(),
    );
    let census = |pool: &Pool| pool.heap().census().unwrap() - pool.stats().bookkeeping;
    let base = census(&pool);
    let env = [("POOL", s.0.clone())];
    let mut mid = spawn("child_role_entry", "middle", &env);
    let mut kid = spawn("child_role_entry", "many-reader", &env);
    let (kills, mut seq) = (100u64, 0);
    for _ in 0..kills {
        let until = Instant::now() + Duration::from_millis(20);
        while Instant::now() < until {
            seq += 1;
            let _ = tx.send_timeout(message(&pool, seq), Duration::from_millis(5));
        }
        kid.kill().unwrap();
        kid.wait().unwrap();
        kid = spawn("child_role_entry", "many-reader", &env);
    }
    tx.close();
    wait_ok(&mut mid, 30 * SECS, "middle");
    Pipe::open(&pool, "out", SECS).unwrap().close();
    wait_ok(&mut kid, 30 * SECS, "reader");
    let o = Pipe::open(&pool, "out", SECS).unwrap();
    while o.try_recv().is_ok() {}
    pool.reclaim_dead();
    let c = pool.check();
    assert!(c.is_ok(), "{:?}", c.problems);
    let left = census(&pool) - base;
    eprintln!(
        "run receiver killed {kills} times: {} objects nothing refers to, {left} bytes",
        c.unreachable.len()
    );
    // A value is three objects (the dict, its string, its array); a death leaks at
    // most one of them, and most deaths none (it seldom falls between two of the
    // instructions that hand a reference over).
    assert!(
        c.unreachable.len() as u64 <= kills / 2,
        "{} objects leaked by {kills} deaths",
        c.unreachable.len()
    );
}

/// What deaths left outside every ledger (a reference counted and not yet ledgered,
/// a value made and not yet handed to anyone) is freed by the next opener that finds
/// the pool to itself: the bytes in use are the baseline's again without a repair.
#[test]
fn what_deaths_left_outside_the_ledgers_is_freed_by_the_next_opener_alone() {
    let s = Scratch::new("ledger-alone");
    let (base, base_census) = {
        let pool = Pool::create_with(s.name(), 8 << 20, &PoolOptions::new()).unwrap();
        pool.root().unwrap().insert("t", tab! {"a" => 1}).unwrap();
        let census = pool.heap().census().unwrap() - pool.stats().bookkeeping;
        (pool.stats().in_use, census)
    };
    dies(&s, "count-and-die", &[]);
    dies(&s, "share-and-die", &[("NO_RECOVER", "1".into())]);
    // Without the recovery: one count too high, one value nothing refers to.
    let opts = PoolOptions::new().recover_on_open(false);
    let pool = Pool::open_with(s.name(), &opts).unwrap();
    assert!(pool.recovery().is_none());
    let c = pool.check();
    assert!(c.is_ok(), "{:?}", c.problems);
    assert_eq!(c.leaks().len(), 1, "{c:?}");
    assert_eq!(c.unreachable.len(), 1, "{c:?}");
    assert!(pool.stats().in_use > base);
    drop(pool);
    // The next opener alone frees both.
    let pool = Pool::open(s.name(), Duration::ZERO).unwrap();
    let r = pool
        .recovery()
        .expect("a recovery alone after deaths")
        .clone();
    assert_eq!((r.fixed.len(), r.swept), (1, 1), "{r:?}");
    assert!(r.deaths >= 2, "{r:?}");
    let c = pool.check();
    assert!(
        c.is_ok() && c.leaks().is_empty() && c.unreachable.is_empty(),
        "{c:?}"
    );
    assert_eq!(pool.stats().in_use, base);
    let census = pool.heap().census().unwrap() - pool.stats().bookkeeping;
    assert_eq!(census, base_census);
    drop(pool);
    // Nothing is due the next time.
    let pool = Pool::open(s.name(), Duration::ZERO).unwrap();
    assert!(pool.recovery().is_none());
}

/// No opener recovers while another process is attached (its unledgered
/// references would look leaked); a recoverer killed midway is redone by the next.
#[test]
fn no_recovery_while_others_are_attached_and_a_killed_recoverer_is_redone() {
    let s = Scratch::new("ledger-alone2");
    let pool = Pool::create_with(s.name(), 8 << 20, &PoolOptions::new()).unwrap();
    let base = pool.stats().in_use;
    dies(&s, "share-and-die", &[]);
    let word = pool.user_word(5);
    wait_ok(
        &mut spawn(
            "child_role_entry",
            "report-recovery",
            &[("POOL", s.0.clone())],
        ),
        10 * SECS,
        "report-recovery",
    );
    assert_eq!(
        word.load(std::sync::atomic::Ordering::SeqCst),
        2,
        "recovered with us attached"
    );
    assert_eq!(pool.check().unreachable.len(), 1);
    drop(pool);
    dies(
        &s,
        "report-recovery",
        &[("SHMVAL_FAILPOINTS", "pool.recover.locked=abort".into())],
    );
    // The next opener alone does it (and waits for nothing: the killed one's locks
    // went with it).
    let pool = Pool::open(s.name(), Duration::ZERO).unwrap();
    let r = pool.recovery().expect("a recovery alone after deaths");
    assert_eq!(r.swept, 1, "{r:?}");
    assert_eq!(pool.stats().in_use, base);
    assert!(pool.check().unreachable.is_empty());
}

/// A block a death left between the allocator and the value it was to become is
/// freed by the recovery alone in a pool where no block of the user's own was ever
/// allocated; in one where one was, it cannot be told from the user's and stays
/// (reported by `check`).
#[test]
fn a_stray_block_is_freed_alone_only_where_the_user_never_allocated_a_block() {
    for user_block in [false, true] {
        let s = Scratch::new("ledger-stray");
        let l = std::alloc::Layout::from_size_align(100, 16).unwrap();
        let base = {
            let pool = Pool::create_with(s.name(), 8 << 20, &PoolOptions::new()).unwrap();
            if user_block {
                let off = pool.alloc(l).unwrap();
                pool.user_word(6)
                    .store(off.get(), std::sync::atomic::Ordering::SeqCst);
            }
            pool.stats().in_use
        };
        dies(&s, "block-and-die", &[]);
        let pool = Pool::open(s.name(), Duration::ZERO).unwrap();
        let r = pool
            .recovery()
            .expect("a recovery alone after a death")
            .clone();
        let c = pool.check();
        assert!(c.is_ok() && c.unreachable.is_empty(), "{c:?}");
        if user_block {
            assert_eq!(r.stray, 0, "{r:?}");
            assert_eq!(
                c.stray_blocks, 2,
                "the user's block and the lost one: {c:?}"
            );
            assert!(pool.stats().in_use > base);
            let off =
                shmval::Offset::new(pool.user_word(6).load(std::sync::atomic::Ordering::SeqCst))
                    .unwrap();
            // SAFETY: the block this test allocated, used by nobody.
            unsafe { pool.free(off, l).unwrap() };
        } else {
            assert_eq!(r.stray, 1, "{r:?}");
            assert_eq!(c.stray_blocks, 0, "{c:?}");
            assert_eq!(pool.stats().in_use, base);
        }
    }
}

/// Runs the `batch-reader` role on pipe "p" until the fail point `point` ends it (on
/// the shared side if `shared`, else as the side's owner).
fn batch_reader_dies_at(s: &Scratch, point: &str, shared: bool, what: &str) {
    let mut env = vec![("POOL", s.0.clone()), ("POINT", point.to_string())];
    if shared {
        env.push(("SHMVAL_FAILPOINTS", "pipe.never_own=on".to_string()));
    }
    let st = spawn("child_role_entry", "batch-reader", &env)
        .wait()
        .unwrap();
    assert!(st.code().is_none(), "{what}: the reader did not die there");
}

/// A receiver killed after it made room (moved `head` as the side's owner, or cleared
/// its record on the shared side) and before it woke the senders: a sender asleep on
/// the full pipe looks again on its own and sends within a bounded time. It slept to
/// its deadline before (or forever without one: `scripts/soak ledger` found the
/// pipeline's middle asleep on an empty pipe after 100 receiver kills).
#[test]
fn a_sender_asleep_on_a_full_pipe_wakes_when_the_receiver_dies_before_waking_it() {
    for (point, shared) in [
        ("pipe.recv.owned.moved", false),
        ("pipe.recv.shared.cleared", true),
    ] {
        let s = Scratch::new("ledger-wake");
        let pool = pool(&s, 16 << 20);
        let p = Pipe::create(&pool, "p", 8).unwrap();
        for i in 0..8i64 {
            p.send(ShmVal::from(i)).unwrap();
        }
        let sender = {
            let pool = pool.clone();
            std::thread::spawn(move || {
                let p = Pipe::open(&pool, "p", SECS).unwrap();
                p.send_timeout(ShmVal::from(99i64), 20 * SECS).is_ok()
            })
        };
        std::thread::sleep(Duration::from_millis(300)); // asleep on the full pipe by now
        batch_reader_dies_at(&s, point, shared, point);
        let died = Instant::now();
        assert!(sender.join().unwrap(), "{point}: the send failed");
        assert!(
            died.elapsed() < 5 * SECS,
            "{point}: the sender slept {:?} after the death",
            died.elapsed()
        );
    }
}

#[test]
fn a_value_whose_dropper_dies_dismantling_it_is_finished_by_the_replay() {
    let s = Scratch::new("ledger-dismantle");
    let pool = pool(&s, 16 << 20);
    let base = pool.stats().in_use;
    let one = {
        let _v = nested(&pool);
        pool.stats().in_use - base
    };
    // Killed right after the handle's ledger word became the note (the count still
    // 1), at the first child (the outer dict's first list), inside the first inner
    // list, and deep in (an inner dict of a later entry); and passing over the
    // leading numbers of an inner list whose count just reached 0 (it was noted
    // only at its first object child: the list and its string were left
    // unreachable).
    for (point, after, shape) in [
        ("shm.release.noted", 0u64, "nested"),
        ("shm.release.dismantling", 0, "nested"),
        ("shm.release.dismantling", 2, "nested"),
        ("shm.release.dismantling", 117, "nested"),
        ("shm.release.scanning", 5, "numbers-first"),
        ("shm.release.scanning", 47, "numbers-first"),
    ] {
        dies(
            &s,
            "dismantler",
            &[
                ("AFTER", after.to_string()),
                ("POINT", point.to_string()),
                ("SHAPE", shape.to_string()),
            ],
        );
        let c = pool.check();
        assert!(c.is_ok(), "{point} after {after}: {:?}", c.problems);
        assert_eq!(c.dead_ledgers, 1);
        assert!(
            c.unreachable.is_empty(),
            "{point} after {after}: what is being dismantled is not unreachable: {:?}",
            c.unreachable
        );
        assert!(pool.stats().in_use > base, "the dismantling was cut short");
        let r = pool.reclaim_dead();
        assert_eq!(r.ledgers, 1);
        assert!(r.dismantled >= 1, "{point} after {after}: {r:?}");
        let c = pool.check();
        assert!(c.is_ok(), "{point} after {after}: {:?}", c.problems);
        assert!(
            c.leaks().is_empty(),
            "{point} after {after}: {:?}",
            c.leaks()
        );
        assert!(
            c.unreachable.is_empty(),
            "{point} after {after}: {:?}",
            c.unreachable
        );
        assert_eq!(
            pool.stats().in_use,
            base,
            "{point} after {after}: all {one} bytes of the value are free again"
        );
    }
}

#[test]
fn a_replayer_killed_finishing_a_dismantling_is_finished_by_the_next() {
    let s = Scratch::new("ledger-dismantle2");
    let pool = pool(&s, 16 << 20);
    let base = pool.stats().in_use;
    dies(&s, "dismantler", &[("AFTER", "5".to_string())]);
    // The replayer's open resumes the dismantling, noted now in its own ledger,
    // and dies at its tenth child.
    dies(
        &s,
        "replayer",
        &[(
            "SHMVAL_FAILPOINTS",
            "shm.release.dismantling=10@abort".to_string(),
        )],
    );
    let c = pool.check();
    assert!(c.is_ok(), "{:?}", c.problems);
    // The first one's ledger (its word taken by the replayer, the rest of the
    // ledger left to the next), and the replayer's, noting the dismantling.
    assert_eq!(c.dead_ledgers, 2);
    assert!(c.unreachable.is_empty(), "{:?}", c.unreachable);
    let r = pool.reclaim_dead();
    assert!(r.dismantled >= 1, "{r:?}");
    let c = pool.check();
    assert!(c.is_ok(), "{:?}", c.problems);
    assert!(c.unreachable.is_empty(), "{:?}", c.unreachable);
    assert_eq!(pool.stats().in_use, base, "the value is free again");
}

#[test]
fn a_dismantling_left_in_the_entry_a_new_process_takes_is_finished_when_it_sets_up() {
    // The dead dismantler's entry is the next one claimed: its stale ledger is
    // replayed when the new process sets its own up, inside which the dismantling
    // is finished (and must not set the ledger up again: it waited for itself).
    let s = Scratch::new("ledger-dismantle3");
    let pool = pool(&s, 16 << 20);
    let base = pool.stats().in_use;
    // Every never-used entry taken (this process's, 118 idle ones', the
    // dismantler's), so the next opener claims the dead one's.
    let n = 120 - 2; // a pool has 120 attach entries
    let env = [("POOL", s.0.clone())];
    let mut idle: Vec<_> = (0..n)
        .map(|_| spawn("child_role_entry", "idle", &env))
        .collect();
    let t = Instant::now();
    while pool.user_word(5).load(std::sync::atomic::Ordering::SeqCst) < n as u64 {
        assert!(t.elapsed() < 60 * SECS, "the idle processes never attached");
        std::thread::sleep(Duration::from_millis(5));
    }
    dies(&s, "dismantler", &[("AFTER", "4".to_string())]);
    let mut kid = spawn(
        "child_role_entry",
        "handle-and-go",
        &[("POOL", s.0.clone()), ("NO_RECOVER", "1".to_string())],
    );
    wait_ok(&mut kid, 30 * SECS, "the next process");
    pool.user_word(6)
        .store(1, std::sync::atomic::Ordering::SeqCst);
    for k in &mut idle {
        wait_ok(k, 30 * SECS, "an idle process");
    }
    let c = pool.check();
    assert!(c.is_ok(), "{:?}", c.problems);
    assert!(c.unreachable.is_empty(), "{:?}", c.unreachable);
    assert_eq!(
        pool.stats().in_use,
        base,
        "the value is free again (nobody but the new process replayed)"
    );
}

/// A process that ends cleanly, every handle dropped, frees its reference ledger as
/// its last pool handle goes: nothing left for the next opener to replay, and no
/// dead ledger for `check` to report (before: one per process that ever held a
/// handle, until the next open). One that leaked a handle keeps it, for the replay.
#[test]
fn a_process_that_ends_cleanly_leaves_no_ledger_and_a_leaky_one_leaves_its_leak() {
    let s = Scratch::new("ledger-close");
    let pool = pool(&s, 4 << 20);
    let _mine = message(&pool, 9); // this process's own ledger, set up
    let (ledgers, in_use) = (pool.stats().bookkeeping, pool.stats().in_use);
    let env = [("POOL", s.0.clone()), ("NO_RECOVER", "1".to_string())];
    let mut kid = spawn("child_role_entry", "handle-and-go", &env);
    wait_ok(&mut kid, 30 * SECS, "the clean process");
    let c = pool.check();
    assert_eq!(c.dead_ledgers, 0, "{c:?}");
    assert_eq!(pool.stats().bookkeeping, ledgers, "its ledger freed");
    assert_eq!(pool.stats().in_use, in_use);
    let mut kid = spawn("child_role_entry", "forget-and-go", &env);
    wait_ok(&mut kid, 30 * SECS, "the leaky process");
    let c = pool.check();
    assert_eq!(c.dead_ledgers, 1, "{c:?}");
    assert!(pool.stats().in_use > in_use, "the value it forgot");
    assert_eq!(pool.reclaim_dead().ledgers, 1);
    assert_eq!(pool.stats().in_use, in_use, "given back by the replay");
    assert_eq!(pool.stats().bookkeeping, ledgers);
}

/// Two opens of one pool in a process share its attach entry and the ledger it
/// names: the last handle of one open going frees no ledger the other still uses
/// (its handles made later are counted in it, not written into a freed block).
#[test]
fn an_open_closing_keeps_the_ledger_another_open_of_the_pool_shares() {
    let s = Scratch::new("ledger-shared");
    let a = pool(&s, 4 << 20);
    let b = Pool::open(s.name(), 5 * SECS).unwrap();
    drop(message(&b, 1)); // the shared ledger set up, and empty again
    drop(message(&a, 2));
    drop(a); // its last handle: the ledger is b's too
    let held: Vec<ShmVal> = (0..40).map(|i| message(&b, i)).collect();
    let c = b.check();
    assert!(c.is_ok(), "{:?}", c.problems);
    assert_eq!(c.handles, 40, "every handle of b counted in the ledger");
    assert!(c.leaks().is_empty(), "{:?}", c.leaks());
    drop(held);
    let c = b.check();
    assert!(c.held.is_empty() && c.unreachable.is_empty(), "{c:?}");
}
