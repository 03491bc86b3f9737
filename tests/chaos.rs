//! One chaos harness for every role: senders (one value a call, and runs), middles
//! (forwarding, holding handles on the last values), receivers (one and runs), a table
//! writer (a dict and a list changed in place, a broadcast fed) and broadcast
//! subscribers, all in separate processes, one of them SIGKILLed every 1–50 ms and
//! started again. `SHMVAL_CHAOS_KILLS` (default 1,000; the opt-in figure is
//! 10,000).
//!
//! Asserted: no call returns later than its deadline + 1 s (each process times its
//! own calls and records any that did not: a hang); no value is received twice or
//! torn (its fields check each other); every value a sender saw acknowledged reached
//! a receiver unless a middle or a receiver died holding it (bounded by their kills);
//! every process ends by itself once its inputs close; afterwards `Pool::check` finds
//! no problem, and with the harness's own tables emptied the bytes in use are the
//! baseline's, give or take the references a death between two instructions may
//! leak (at most one each: bounded, printed), and after `Pool::repair` (which frees
//! the objects nothing refers to) within a few blocks of it. Diagnosis:
//! `SHMVAL_CHAOS_SET=send,middle,recv` runs only those roles, `SHMVAL_CHAOS_ROLES=recv`
//! kills only those, `SHMVAL_CHAOS_DEBUG=1` prints where the bytes are.

mod common;

use common::{spawn, wait_ok, Scratch};
use shmval::pipe::{BatchError, Policy, RecvError, SendError};
use shmval::{tab, Broadcast, BroadcastRecvError, Pipe, Pool, PoolOptions, ShmVal, Val};
use std::sync::atomic::Ordering::SeqCst;
use std::time::{Duration, Instant};

const SECS: Duration = Duration::from_secs(1);
/// Every timed call's deadline.
const DEADLINE: Duration = Duration::from_secs(2);
/// How late a call may return past its deadline before it counts as a hang; calls
/// without a deadline of their own (a container's lock) have the lock's patience.
const SLACK: Duration = Duration::from_secs(1);
const LOCKED_CALL: Duration = Duration::from_secs(6);
/// Pool word set when the writer is to stop.
const STOP: usize = 5;

fn value(pool: &Pool, id: i64, seq: i64) -> ShmVal {
    pool.share(&tab! {
        "id" => id, "seq" => seq, "chk" => id * 1_000_003 + seq,
        "pad" => "p".repeat((seq % 40) as usize), "data" => vec![seq as f64; (seq % 5) as usize]
    })
    .unwrap()
}

/// The problem with a value, if any (a torn slot or a wrong count shows as one).
fn torn(v: &ShmVal) -> Option<String> {
    match v.to_val() {
        Ok(Val::Tab(m)) => {
            let get = |k: &str| m.get(&Val::from(k)).and_then(Val::as_i64);
            match (get("id"), get("seq"), get("chk")) {
                (Some(id), Some(seq), Some(chk)) if chk == id * 1_000_003 + seq => None,
                other => Some(format!("torn value {other:?}")),
            }
        }
        Ok(other) => Some(format!("not a dict: {other}")),
        Err(e) => Some(format!("unreadable value: {e}")),
    }
}

fn key(v: &ShmVal) -> i64 {
    let t = v.as_tab().unwrap();
    let field = |k: &str| {
        t.get(k)
            .unwrap()
            .unwrap()
            .to_val()
            .unwrap()
            .as_i64()
            .unwrap()
    };
    let (id, seq) = (field("id"), field("seq"));
    id * 1_000_000_000 + seq
}

struct Ctx {
    pool: Pool,
    errors: shmval::ShmList,
}

impl Ctx {
    fn problem(&self, what: String) {
        // Loudly if it cannot even be recorded (a full pool): the process fails.
        if let Err(e) = self.errors.push(what.as_str()) {
            panic!("{what} (and it could not be recorded: {e})");
        }
    }

    /// Runs a timed call and records it as a hang if it returned late.
    fn timed<T>(&self, what: &str, limit: Duration, f: impl FnOnce() -> T) -> T {
        let t = Instant::now();
        let r = f();
        let took = t.elapsed();
        if took > limit + SLACK {
            self.problem(format!(
                "hang: {what} took {took:?} (limit {limit:?} + 1 s)"
            ));
        }
        r
    }

    fn tab(&self, name: &str) -> shmval::ShmTab {
        self.pool
            .root()
            .unwrap()
            .get(name)
            .unwrap()
            .unwrap()
            .as_tab()
            .unwrap()
    }
}

#[test]
fn child_role_entry() {
    let Some(role) = common::role() else { return };
    let pool = Pool::open(&std::env::var("POOL").unwrap(), 5 * SECS).unwrap();
    let id: i64 = std::env::var("ID").unwrap().parse().unwrap();
    let errors = pool.root().unwrap().get("errors").unwrap().unwrap();
    let cx = Ctx {
        errors: errors.as_list().unwrap(),
        pool: pool.clone(),
    };
    match role.as_str() {
        "send" | "send-many" => {
            let p = Pipe::open(&pool, "in", 5 * SECS).unwrap();
            let acked = cx.tab("acked");
            let mut seq = 0i64;
            let mut batch = Vec::new();
            loop {
                let r = if role == "send" {
                    let v = value(&pool, id, seq);
                    match cx.timed("send", DEADLINE, || p.send_timeout(v, DEADLINE)) {
                        Ok(()) => Ok(1),
                        Err(SendError::Timeout(_)) => Ok(0),
                        Err(SendError::Closed(_)) => Err(()),
                        Err(e) => panic!("send: {e}"),
                    }
                } else {
                    let k = seq % 40 + 1;
                    batch.extend((seq..seq + k).map(|q| value(&pool, id, q)));
                    match cx.timed("send_many", DEADLINE, || {
                        p.send_many_timeout(&mut batch, DEADLINE)
                    }) {
                        Ok(n) => Ok(n as i64),
                        // The part sent is acknowledged; the rest is dropped.
                        Err(BatchError::Timeout) => Ok(k - batch.len() as i64),
                        Err(BatchError::Closed) => Err(()),
                        Err(e) => panic!("send_many: {e}"),
                    }
                };
                match r {
                    Ok(n) if n > 0 => {
                        seq += n;
                        // Acknowledged: 0..seq are in the pipe or beyond.
                        acked.insert(id, seq).unwrap();
                    }
                    Ok(_) => {}
                    Err(()) => break,
                }
                // What did not go is made again from `seq` on.
                batch.clear();
            }
        }
        "middle" => {
            let (rx, tx) = (
                Pipe::open(&pool, "in", 5 * SECS).unwrap(),
                Pipe::open(&pool, "out", 5 * SECS).unwrap(),
            );
            let mut kept = std::collections::VecDeque::new();
            loop {
                let v = match cx.timed("recv", DEADLINE, || rx.recv_timeout(DEADLINE)) {
                    Ok(v) => v,
                    Err(RecvError::Timeout) => continue,
                    Err(RecvError::Closed) => break,
                    Err(e) => panic!("middle recv: {e}"),
                };
                kept.push_back(v.clone());
                if kept.len() > 8 {
                    kept.pop_front();
                }
                let mut v = v;
                loop {
                    match cx.timed("forward", DEADLINE, || tx.send_timeout(v, DEADLINE)) {
                        Ok(()) => break,
                        Err(SendError::Timeout(back)) => v = back,
                        Err(SendError::Closed(_)) => {
                            cx.problem("out closed before the middles ended".into());
                            break;
                        }
                        Err(e) => panic!("middle send: {e}"),
                    }
                }
            }
        }
        "recv" | "recv-many" => {
            let p = Pipe::open(&pool, "out", 5 * SECS).unwrap();
            let seen = cx.tab("seen");
            let mut got = Vec::new();
            loop {
                let r = if role == "recv" {
                    cx.timed("recv", DEADLINE, || p.recv_timeout(DEADLINE))
                        .map(|v| got.push(v))
                } else {
                    cx.timed("recv_many", DEADLINE, || {
                        p.recv_many_timeout(&mut got, 40, DEADLINE)
                    })
                    .map(|_| ())
                };
                match r {
                    Ok(()) | Err(RecvError::Timeout) => {}
                    Err(RecvError::Closed) => break,
                    Err(e) => panic!("recv: {e}"),
                }
                for v in got.drain(..) {
                    if let Some(what) = torn(&v) {
                        cx.problem(what);
                        continue;
                    }
                    let k = key(&v);
                    match cx.timed("seen insert", LOCKED_CALL, || seen.insert(k, true)) {
                        Ok(None) => {}
                        Ok(Some(_)) => cx.problem(format!("duplicate {k}")),
                        Err(e) => cx.problem(format!("seen table: {e}")),
                    }
                }
            }
        }
        "writer" => {
            let b = Broadcast::open(&pool, "b", 5 * SECS).unwrap();
            let (tw, lst) = (
                cx.tab("tw"),
                pool.root().unwrap().get("lst").unwrap().unwrap(),
            );
            let lst = lst.as_list().unwrap();
            let mut i = 0i64;
            while pool.user_word(STOP).load(SeqCst) == 0 {
                i += 1;
                let v = value(&pool, id, i);
                cx.timed("dict insert", LOCKED_CALL, || {
                    tw.insert(format!("k{}", i % 64), &v)
                })
                .unwrap();
                if i % 3 == 0 {
                    let popped = cx.timed("list pop", LOCKED_CALL, || lst.pop()).unwrap();
                    if let Some(p) = popped.as_ref().and_then(torn) {
                        cx.problem(p);
                    }
                } else {
                    cx.timed("list push", LOCKED_CALL, || lst.push(&v)).unwrap();
                }
                match cx.timed("broadcast", DEADLINE, || b.send_timeout(v, DEADLINE)) {
                    Ok(()) | Err(SendError::Timeout(_)) => {}
                    Err(SendError::Closed(_)) => break,
                    Err(e) => panic!("broadcast: {e}"),
                }
            }
        }
        "sub" => {
            let b = Broadcast::open(&pool, "b", 5 * SECS).unwrap();
            let s = b.subscribe().unwrap();
            loop {
                match cx.timed("subscriber recv", DEADLINE, || s.recv_timeout(DEADLINE)) {
                    Ok(v) => {
                        if let Some(p) = torn(&v) {
                            cx.problem(p);
                        }
                    }
                    Err(BroadcastRecvError::Timeout | BroadcastRecvError::Lagged(_)) => {}
                    Err(BroadcastRecvError::Closed) => break,
                    Err(e) => panic!("subscriber: {e}"),
                }
            }
        }
        other => panic!("unknown role {other}"),
    }
    drop(cx);
    common::child_done();
}

const ROLES: [&str; 9] = [
    "send",
    "send-many",
    "middle",
    "middle",
    "recv",
    "recv-many",
    "writer",
    "sub",
    "sub",
];

fn make_pipes(pool: &Pool) -> (Pipe, Pipe, Broadcast) {
    (
        Pipe::create(pool, "in", 64).unwrap(),
        Pipe::create(pool, "out", 64).unwrap(),
        Broadcast::create(pool, "b", 64, Policy::DropAfter(Duration::from_millis(20))).unwrap(),
    )
}

#[test]
fn every_role_killed_at_random_loses_duplicates_tears_and_hangs_nothing() {
    let kills: u32 = std::env::var("SHMVAL_CHAOS_KILLS").map_or(1000, |v| v.parse().unwrap());
    let s = Scratch::new("chaos-all");
    let size = if cfg!(debug_assertions) {
        512 << 20
    } else {
        2 << 30
    };
    let size = size * u64::from(kills.div_ceil(1000).max(1));
    // Kept on drop (the scratch name removes it): reopened at the end.
    let pool = Pool::create_with(s.name(), size, &PoolOptions::new()).unwrap();
    let (pin, pout, b) = make_pipes(&pool);
    let root = pool.root().unwrap();
    let fresh = |root: &shmval::ShmTab| {
        root.insert("seen", pool.new_tab().unwrap()).unwrap();
        root.insert("acked", pool.new_tab().unwrap()).unwrap();
        root.insert("tw", pool.new_tab().unwrap()).unwrap();
        root.insert("errors", Val::List(vec![])).unwrap();
        root.insert("lst", Val::List(vec![])).unwrap();
    };
    fresh(&root);
    let base = pool.stats().in_use;
    // The blocks themselves (the counters `in_use` sums are skewed by one block by a
    // process killed inside an allocation or a free; the census is not).
    let census = |pool: &Pool| pool.heap().census().unwrap() - pool.stats().bookkeeping;
    let base_census = census(&pool);
    let mut next_id = 0i64;
    let mut start = |role: &str| {
        next_id += 1;
        let env = [("POOL", s.0.clone()), ("ID", next_id.to_string())];
        (role.to_string(), spawn("child_role_entry", role, &env))
    };
    // `SHMVAL_CHAOS_SET=send,middle,recv`: run only these roles (diagnosis).
    let set: Vec<String> = std::env::var("SHMVAL_CHAOS_SET").map_or_else(
        |_| ROLES.iter().map(|r| r.to_string()).collect(),
        |v| v.split(',').map(str::to_string).collect(),
    );
    let mut kids: Vec<_> = set.iter().map(|r| start(r)).collect();
    let mut rand = common::xorshift(0x9E37_79B9_7F4A_7C15);
    let only: Option<Vec<String>> = std::env::var("SHMVAL_CHAOS_ROLES")
        .ok()
        .map(|v| v.split(',').map(str::to_string).collect());
    let mut consumer_kills = 0u64;
    let t0 = Instant::now();
    for _ in 0..kills {
        std::thread::sleep(Duration::from_micros(1000 + rand() % 49_000));
        // `SHMVAL_CHAOS_ROLES=middle,recv`: kill only these (to find which death
        // leaves what); all by default.
        let victims: Vec<usize> = (0..kids.len())
            .filter(|&k| only.as_ref().is_none_or(|o| o.contains(&kids[k].0)))
            .collect();
        let i = victims[(rand() % victims.len() as u64) as usize];
        let (role, mut kid) = kids.swap_remove(i);
        if let Some(st) = kid.try_wait().unwrap() {
            panic!("{role} ended by itself: {st}");
        }
        kid.kill().unwrap();
        kid.wait().unwrap();
        if matches!(role.as_str(), "middle" | "recv" | "recv-many") {
            consumer_kills += 1;
        }
        kids.push(start(&role));
    }
    let chaos_time = t0.elapsed();
    // Wind down, inputs first: senders stop at `in` closed, middles when it is
    // drained, receivers when `out` is; the writer at its flag, then subscribers.
    let wait_for = |kids: &mut Vec<(String, std::process::Child)>, roles: &[&str]| {
        for (role, k) in kids.iter_mut().filter(|(r, _)| roles.contains(&r.as_str())) {
            wait_ok(k, 30 * SECS, role);
        }
    };
    pin.close();
    wait_for(&mut kids, &["send", "send-many", "middle"]);
    pout.close();
    wait_for(&mut kids, &["recv", "recv-many"]);
    pool.user_word(STOP).store(1, SeqCst);
    wait_for(&mut kids, &["writer"]);
    b.close();
    wait_for(&mut kids, &["sub"]);

    let errors = root.get_val("errors").unwrap().unwrap();
    assert_eq!(errors, Val::List(vec![]), "problems the processes saw");
    // Every acknowledged value reached a receiver, but for those a consumer died
    // holding (a middle keeps one in flight, a receiver a run of up to 40).
    let seen = root.get_val("seen").unwrap().unwrap();
    let Val::Tab(seen) = seen else { panic!("seen") };
    let Val::Tab(acked) = root.get_val("acked").unwrap().unwrap() else {
        panic!("acked")
    };
    let mut acked_n = 0u64;
    let mut missing = 0u64;
    for (id, upto) in &acked {
        let (id, upto) = (id.as_i64().unwrap(), upto.as_i64().unwrap());
        for seq in 0..upto {
            acked_n += 1;
            if !seen.contains_key(&Val::I64(id * 1_000_000_000 + seq)) {
                missing += 1;
            }
        }
    }
    assert!(
        missing <= consumer_kills * 40,
        "{missing} acknowledged values never received ({consumer_kills} consumer kills)"
    );
    // What every process that is gone held comes back (each open did it; once more
    // here for the last ones); then the pool is whole, and without the harness's own
    // tables, back to its baseline but for what deaths between two instructions leak.
    pool.reclaim_dead();
    let c = pool.check();
    assert!(c.is_ok(), "after the chaos: {:?}", c.problems);
    assert_eq!(c.dead_ledgers, 0);
    let received = seen.len();
    drop((seen, acked));
    // The harness's tables emptied, the pipes and the broadcast made anew (a
    // broadcast keeps its last values until they are overwritten).
    let dbg = std::env::var_os("SHMVAL_CHAOS_DEBUG").is_some();
    if dbg {
        for k in ["seen", "acked", "tw", "errors", "lst"] {
            let before = pool.stats().in_use;
            root.insert(k, Val::None).unwrap();
            eprintln!("DBG {k}: {} bytes", before - pool.stats().in_use);
        }
        eprintln!(
            "DBG after tables: {} beyond base (census {})",
            pool.stats().in_use as i64 - base as i64,
            census(&pool) as i64 - base_census as i64
        );
    }
    fresh(&root);
    drop((pin, pout, b));
    assert!(Pipe::remove(&pool, "in").unwrap() && Pipe::remove(&pool, "out").unwrap());
    assert!(Broadcast::remove(&pool, "b").unwrap());
    let again = make_pipes(&pool);
    let left = census(&pool).saturating_sub(base_census);
    let skew = pool.stats().in_use as i64 - base as i64 - left as i64;
    let per_value = {
        let before = pool.stats().in_use;
        let v = value(&pool, 1, 39);
        let after = pool.stats().in_use;
        drop(v);
        after - before
    };
    let after = pool.check();
    let leaks: u64 = after.leaks().iter().map(|h| h.unaccounted()).sum();
    if dbg {
        let mut kinds = std::collections::BTreeMap::new();
        for u in &after.unreachable {
            *kinds.entry((u.kind, u.count)).or_insert(0) += 1;
        }
        eprintln!("DBG unreachable by (kind, count): {kinds:?}");
    }
    eprintln!(
        "chaos, every role: {kills} kills in {chaos_time:.1?} ({consumer_kills} of consumers), \
         {received} values received, {acked_n} acknowledged, {missing} of those lost with a \
         consumer; 0 hangs, 0 duplicates, 0 torn; {left} bytes left in use beyond the \
         baseline (~{} values of {per_value} bytes; the allocator's counters say {skew} \
         more), {leaks} reachable references leaked",
        left / per_value.max(1)
    );
    // What a death between two instructions leaked (one reference each at most, a
    // value or a part of one): far fewer than the kills.
    assert!(
        left <= u64::from(kills) * per_value / 4,
        "{left} bytes left after {kills} kills: more than a death's one reference each"
    );
    // When every process has ended, the next opener has the pool to itself and
    // frees what the deaths left outside their ledgers: back to the baseline,
    // without a repair.
    drop((again, root, pool));
    let t = Instant::now();
    let pool = Pool::open(s.name(), Duration::ZERO).unwrap();
    let opened_in = t.elapsed();
    let r = pool.recovery().cloned().unwrap_or_default();
    let c = pool.check();
    let after = census(&pool).saturating_sub(base_census);
    eprintln!(
        "chaos, the next opener alone (in {opened_in:.1?}): {} deaths, {} objects nothing \
         referred to freed ({} bytes), {} counts fixed, {} stray blocks freed ({} bytes), \
         {} empty slabs given back; \
         {after} bytes left beyond the baseline ({} blocks of {} bytes that are no value's); \
         the allocator dropped {} free blocks it had no list for",
        r.deaths,
        r.swept,
        r.swept_bytes,
        r.fixed.len(),
        r.stray,
        r.stray_bytes,
        r.slabs_returned,
        c.stray_blocks,
        c.stray_bytes,
        pool.stats().leaked
    );
    assert!(
        c.is_ok() && c.unreachable.is_empty() && c.leaks().is_empty(),
        "{c:?}"
    );
    assert_eq!(
        after, 0,
        "bytes left beyond the baseline ({left} before the recovery)"
    );
}
