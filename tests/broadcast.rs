//! Broadcast: every subscriber sees every value in order; each slow-subscriber policy
//! does what it says; subscribers join, leave and die at any time (real processes)
//! without blocking the sender; the ring releases what every subscriber has passed.

mod common;

use common::{child_done, spawn, wait_ok, Kid, Scratch};
use proptest::prelude::*;
use shmval::{
    fail, Broadcast, BroadcastRecvError as E, PipeError, Policy, Pool, PoolOptions, SendError,
    ShmVal, Subscriber, Val,
};
use std::sync::atomic::Ordering::SeqCst;
use std::sync::Arc;
use std::time::{Duration, Instant};

const SECS: Duration = Duration::from_secs(1);
const MS: Duration = Duration::from_millis(1);

fn pool(s: &Scratch, size: u64) -> Pool {
    Pool::create_with(s.name(), size, &PoolOptions::new()).unwrap()
}

fn int(pool: &Pool, i: i64) -> ShmVal {
    pool.share(&Val::I64(i)).unwrap()
}

/// A value that owns pool memory (so leaks and early frees show in the stats).
fn boxed(pool: &Pool, i: i64) -> ShmVal {
    pool.share(&Val::List(vec![Val::I64(i), Val::Str("x".repeat(40))]))
        .unwrap()
}

fn num(v: &ShmVal) -> i64 {
    match v.to_val().unwrap() {
        Val::List(l) => l[0].as_i64().unwrap(),
        other => other.as_i64().unwrap(),
    }
}

fn got(r: Result<ShmVal, E>) -> i64 {
    num(&r.unwrap())
}

/// Entry point of the re-spawned child processes (a no-op in a normal run).
#[test]
fn child_role_entry() {
    let Some(role) = common::role() else { return };
    let env = |k: &str| std::env::var(k).unwrap();
    let pool = Pool::open(&env("POOL"), 5 * SECS).unwrap();
    let b = Broadcast::open(&pool, "b", 5 * SECS).unwrap();
    match role.as_str() {
        "subscriber" => {
            // Every value, in order, exactly once; then Closed.
            let sub = b.subscribe().unwrap();
            pool.user_word(4).fetch_add(1, SeqCst);
            let mut next = 0;
            loop {
                match sub.recv_timeout(20 * SECS) {
                    Ok(v) => {
                        assert_eq!(num(&v), next, "out of order or missing");
                        next += 1;
                    }
                    Err(E::Closed) => break,
                    Err(e) => panic!("subscriber: {e}"),
                }
            }
            assert_eq!(next, env("N").parse::<i64>().unwrap());
        }
        "hopper" => {
            // Joins and leaves over and over while traffic flows: each subscription
            // sees a consecutive run.
            let mut runs = 0;
            'outer: loop {
                let sub = b.subscribe().unwrap();
                let mut last = None;
                for _ in 0..50 {
                    match sub.recv_timeout(20 * SECS) {
                        Ok(v) => {
                            let n = num(&v);
                            assert!(last.is_none_or(|l| n == l + 1), "{last:?} then {n}");
                            last = Some(n);
                        }
                        Err(E::Closed) => break 'outer,
                        Err(e) => panic!("hopper: {e}"),
                    }
                }
                runs += 1;
            }
            assert!(runs > 0);
        }
        "send-and-die" => {
            // Publishes one value and dies before waking the subscribers.
            fail::set("broadcast.sent", fail::Action::Abort);
            let _ = b.send(int(&pool, 7));
            unreachable!("the fail point was to end this process");
        }
        "idle" => {
            // Subscribes and never reads; killed by the test.
            let _sub = b.subscribe().unwrap();
            pool.user_word(4).store(1, SeqCst);
            std::thread::sleep(60 * SECS);
        }
        "lock-and-die" => {
            // Stops holding the lock (the subscribe takes it); killed there.
            let p2 = pool.clone();
            let stop = move || {
                p2.user_word(4).store(1, SeqCst);
                std::thread::sleep(60 * SECS);
            };
            fail::set_for_thread("broadcast.locked", fail::Action::Call(Arc::new(stop)));
            let _ = b.subscribe();
            unreachable!("killed holding the lock");
        }
        "chaos-sub" => {
            // Each sender slot's values in increasing order (a sender killed may
            // lose the one value in its hands, never reorder).
            let sub = b.subscribe().unwrap();
            let mut last = [-1; 2];
            loop {
                match sub.recv_timeout(20 * SECS) {
                    Ok(v) => {
                        let n = num(&v);
                        let (slot, seq) = ((n >> 40) as usize, n & ((1 << 40) - 1));
                        assert!(
                            seq > last[slot],
                            "sender {slot}: {seq} after {}",
                            last[slot]
                        );
                        last[slot] = seq;
                    }
                    Err(E::Closed) => break,
                    Err(e) => panic!("chaos subscriber: {e}"),
                }
            }
        }
        "chaos-send" => loop {
            // Sequence numbers survive the sender's deaths: the next one is taken
            // from the sender slot's pool word before each send.
            let slot = env("SLOT").parse::<usize>().unwrap();
            let seq = pool.user_word(5 + slot).fetch_add(1, SeqCst) as i64;
            match b.send_timeout(boxed(&pool, (slot as i64) << 40 | seq), 20 * SECS) {
                Ok(()) => {}
                Err(SendError::Closed(_)) => break,
                Err(e) => panic!("chaos send: {e}"),
            }
        },
        _ => return,
    }
    child_done();
}

#[test]
fn every_subscriber_sees_every_value_in_order_and_late_joiners_only_later_ones() {
    let s = Scratch::new("bc-basic");
    let pool = pool(&s, 4 << 20);
    let base = baseline(&pool);
    {
        let b = Broadcast::create(&pool, "b", 8, Policy::Block).unwrap();
        assert!(matches!(
            Broadcast::create(&pool, "b", 8, Policy::Block),
            Err(PipeError::Exists(_))
        ));
        assert!(matches!(
            Broadcast::create(&pool, "", 8, Policy::Block),
            Err(PipeError::Name(_))
        ));
        assert!(matches!(
            Broadcast::create(&pool, "z", 0, Policy::Block),
            Err(PipeError::Capacity(0))
        ));
        assert!(matches!(
            Broadcast::open(&pool, "nope", Duration::ZERO),
            Err(PipeError::NotFound { .. })
        ));
        assert!(matches!(
            shmval::Pipe::open(&pool, "b", Duration::ZERO),
            Err(PipeError::NotFound { .. })
        ));
        assert_eq!(Broadcast::names(&pool).unwrap(), ["b"]);
        let other = Broadcast::open(&pool, "b", Duration::ZERO).unwrap();
        assert_eq!(other.policy(), Policy::Block);

        // Nobody subscribed: a send reaches nobody and holds nothing.
        b.try_send(boxed(&pool, -1)).unwrap();
        assert_eq!((b.sent(), b.len()), (1, 0));

        let subs: Vec<Subscriber> = (0..3).map(|_| other.subscribe().unwrap()).collect();
        assert_eq!(b.subscribers(), 3);
        for i in 0..5 {
            b.try_send(boxed(&pool, i)).unwrap();
        }
        let late = b.subscribe().unwrap();
        for i in 5..8 {
            b.try_send(boxed(&pool, i)).unwrap();
        }
        for sub in &subs {
            for i in 0..8 {
                assert_eq!(got(sub.try_recv()), i);
            }
            assert!(matches!(sub.try_recv(), Err(E::Empty)));
        }
        assert_eq!(late.pending(), 3);
        // Values the late subscriber never saw were released already.
        assert_eq!(b.len(), 3);
        assert_eq!(got(late.try_recv()), 5);
        drop(late); // lets go of 6 and 7
        assert_eq!(b.len(), 0);

        b.try_send(boxed(&pool, 8)).unwrap();
        b.close();
        assert!(b.is_closed());
        assert!(matches!(
            b.try_send(boxed(&pool, 9)),
            Err(SendError::Closed(_))
        ));
        for sub in &subs {
            assert_eq!(got(sub.recv_timeout(SECS)), 8, "drained after close");
            assert!(matches!(sub.recv(), Err(E::Closed)));
        }
        assert!(Broadcast::remove(&pool, "b").unwrap());
        assert!(!Broadcast::remove(&pool, "b").unwrap());
    }
    assert_eq!(pool.stats().in_use, base, "nothing leaked");
}

/// The pool's bytes in use once its directories exist (made by creating and
/// removing a broadcast): the baseline a test returns to.
fn baseline(pool: &Pool) -> u64 {
    shmval::Pipe::names(pool).unwrap(); // (the pipe directory too: looked in below)
    drop(Broadcast::create(pool, "warm-up", 1, Policy::Block).unwrap());
    Broadcast::remove(pool, "warm-up").unwrap();
    pool.stats().in_use
}

#[test]
fn values_left_in_a_broadcast_are_freed_with_it() {
    let s = Scratch::new("bc-free");
    let pool = pool(&s, 4 << 20);
    let b = Broadcast::create(&pool, "b", 16, Policy::DropOldest).unwrap();
    let sub = b.subscribe().unwrap();
    b.try_send(boxed(&pool, 0)).unwrap();
    let base = pool.stats().in_use;
    for i in 1..40 {
        b.try_send(boxed(&pool, i)).unwrap();
    }
    assert!(pool.stats().in_use > base);
    Broadcast::remove(&pool, "b").unwrap();
    drop(b);
    let held = sub.broadcast().len();
    assert_eq!(held, 16);
    drop(sub); // the last handle: the broadcast and its 16 values go
    assert!(
        pool.stats().in_use < base,
        "{} >= {base}",
        pool.stats().in_use
    );
}

#[test]
fn block_makes_the_sender_wait_for_the_slowest_subscriber() {
    let s = Scratch::new("bc-block");
    let pool = pool(&s, 4 << 20);
    let b = Broadcast::create(&pool, "b", 4, Policy::Block).unwrap();
    let fast = b.subscribe().unwrap();
    let slow = b.subscribe().unwrap();
    for i in 0..4 {
        b.try_send(int(&pool, i)).unwrap();
        assert_eq!(got(fast.try_recv()), i);
    }
    match b.try_send(int(&pool, 4)) {
        Err(SendError::Full(v)) => assert_eq!(num(&v), 4, "the value comes back"),
        other => panic!("{other:?}"),
    }
    let t = Instant::now();
    assert!(matches!(
        b.send_timeout(int(&pool, 4), 20 * MS),
        Err(SendError::Timeout(_))
    ));
    assert!(t.elapsed() >= 20 * MS && t.elapsed() < 2 * SECS);
    assert_eq!(got(slow.try_recv()), 0);
    b.try_send(int(&pool, 4)).unwrap();
    assert!(matches!(b.try_send(int(&pool, 5)), Err(SendError::Full(_))));
    // A sender blocked on the slow subscriber wakes when it reads.
    std::thread::scope(|sc| {
        sc.spawn(|| {
            std::thread::sleep(30 * MS);
            assert_eq!(got(slow.recv()), 1);
        });
        b.send_timeout(int(&pool, 5), 10 * SECS).unwrap();
    });
    // Unsubscribing the slow one makes room at once; nobody lagged under Block.
    drop(slow);
    for i in 5..6 {
        assert_eq!(got(fast.try_recv()), i - 1);
    }
    assert_eq!(got(fast.try_recv()), 5);
    for i in 6..10 {
        b.try_send(int(&pool, i)).unwrap();
    }
    for i in 6..10 {
        assert_eq!(got(fast.try_recv()), i);
    }
}

#[test]
fn drop_oldest_tells_the_slow_subscriber_how_many_it_missed() {
    let s = Scratch::new("bc-dropold");
    let pool = pool(&s, 4 << 20);
    let base = baseline(&pool);
    let b = Broadcast::create(&pool, "b", 4, Policy::DropOldest).unwrap();
    let with_b = pool.stats().in_use;
    let fast = b.subscribe().unwrap();
    let slow = b.subscribe().unwrap();
    for i in 0..10 {
        b.try_send(boxed(&pool, i)).unwrap(); // never Full
        assert_eq!(got(fast.try_recv()), i);
    }
    assert!(matches!(slow.try_recv(), Err(E::Lagged(6))));
    for i in 6..10 {
        assert_eq!(got(slow.try_recv()), i);
    }
    assert!(matches!(slow.try_recv(), Err(E::Empty)));
    assert_eq!(pool.stats().in_use, with_b, "every value released");
    drop((fast, slow, b));
    Broadcast::remove(&pool, "b").unwrap();
    assert_eq!(pool.stats().in_use, base);
}

#[test]
fn drop_after_waits_that_long_then_drops() {
    let s = Scratch::new("bc-dropafter");
    let pool = pool(&s, 4 << 20);
    let b = Broadcast::create(&pool, "b", 2, Policy::DropAfter(50 * MS)).unwrap();
    let slow = b.subscribe().unwrap();
    b.send(int(&pool, 0)).unwrap();
    b.send(int(&pool, 1)).unwrap();
    assert!(matches!(b.try_send(int(&pool, 2)), Err(SendError::Full(_))));
    // A shorter timeout than the policy's wait: the send times out, nothing dropped.
    assert!(matches!(
        b.send_timeout(int(&pool, 2), 10 * MS),
        Err(SendError::Timeout(_))
    ));
    let t = Instant::now();
    b.send(int(&pool, 2)).unwrap();
    let took = t.elapsed();
    assert!(took >= 50 * MS && took < 2 * SECS, "{took:?}");
    assert!(matches!(slow.try_recv(), Err(E::Lagged(1))));
    assert_eq!(got(slow.try_recv()), 1);
    assert_eq!(got(slow.try_recv()), 2);
    // A subscriber that keeps up is never waited for.
    let t = Instant::now();
    for i in 3..100 {
        b.send(int(&pool, i)).unwrap();
        assert_eq!(got(slow.try_recv()), i);
    }
    assert!(t.elapsed() < 50 * MS * 10);
}

#[test]
fn subscribers_in_other_processes_see_every_value_and_may_come_and_go() {
    let s = Scratch::new("bc-procs");
    let pool = pool(&s, 64 << 20);
    let b = Broadcast::create(&pool, "b", 256, Policy::Block).unwrap();
    let n: i64 = std::env::var("SHMVAL_BCAST_VALUES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let env = vec![("POOL", s.0.clone()), ("N", n.to_string())];
    let mut kids: Vec<_> = (0..3)
        .map(|_| spawn("child_role_entry", "subscriber", &env))
        .collect();
    let t = Instant::now();
    while pool.user_word(4).load(SeqCst) < 3 {
        assert!(t.elapsed() < 20 * SECS, "subscribers did not start");
        std::thread::sleep(MS);
    }
    let mut hopper = spawn("child_role_entry", "hopper", &env);
    for i in 0..n {
        b.send_timeout(int(&pool, i), 20 * SECS).unwrap();
    }
    b.close();
    for k in &mut kids {
        wait_ok(k, 60 * SECS, "subscriber");
    }
    wait_ok(&mut hopper, 60 * SECS, "hopper");
    assert_eq!(b.subscribers(), 0, "everyone unsubscribed");
    assert_eq!(b.len(), 0);
}

/// Spawns `role` and waits until it says it is ready (pool word 4), then kills it.
fn kill_when_ready(s: &Scratch, pool: &Pool, role: &str) {
    pool.user_word(4).store(0, SeqCst);
    let mut kid = spawn("child_role_entry", role, &[("POOL", s.0.clone())]);
    let t = Instant::now();
    while pool.user_word(4).load(SeqCst) == 0 {
        assert!(t.elapsed() < 20 * SECS, "child not ready");
        std::thread::sleep(MS);
    }
    kid.kill().unwrap();
    kid.wait().unwrap();
}

#[test]
fn a_dead_subscriber_never_blocks_the_sender() {
    let s = Scratch::new("bc-deadsub");
    let pool = pool(&s, 4 << 20);
    let b = Broadcast::create(&pool, "b", 4, Policy::Block).unwrap();
    let live = b.subscribe().unwrap();
    kill_when_ready(&s, &pool, "idle");
    assert_eq!(b.subscribers(), 2);
    let t = Instant::now();
    for i in 0..20 {
        b.send_timeout(int(&pool, i), 5 * SECS).unwrap();
        assert_eq!(got(live.try_recv()), i);
    }
    assert!(t.elapsed() < 2 * SECS, "took {:?}", t.elapsed());
    assert_eq!(b.subscribers(), 1, "the dead one was dropped");
}

#[test]
fn a_process_killed_holding_the_lock_stops_nobody() {
    let s = Scratch::new("bc-deadlock");
    let pool = pool(&s, 4 << 20);
    let b = Broadcast::create(&pool, "b", 4, Policy::Block).unwrap();
    let sub = b.subscribe().unwrap();
    b.send(int(&pool, 1)).unwrap();
    kill_when_ready(&s, &pool, "lock-and-die");
    let t = Instant::now();
    b.send_timeout(int(&pool, 2), 5 * SECS).unwrap();
    assert_eq!(got(sub.recv_timeout(5 * SECS)), 1);
    assert_eq!(got(sub.recv_timeout(5 * SECS)), 2);
    assert!(t.elapsed() < 2 * SECS, "took {:?}", t.elapsed());
}

/// A live process holding the lock (stopped in a debugger, say): timed calls return
/// by their deadline, `try_` calls at once.
#[test]
fn a_live_lock_holder_holds_no_timed_call_past_its_deadline() {
    let s = Scratch::new("bc-heldlock");
    let pool = pool(&s, 4 << 20);
    let b = Broadcast::create(&pool, "b", 4, Policy::Block).unwrap();
    let sub = b.subscribe().unwrap();
    b.send(int(&pool, 1)).unwrap();
    pool.user_word(4).store(0, SeqCst);
    let mut kid = spawn("child_role_entry", "lock-and-die", &[("POOL", s.0.clone())]);
    let t = Instant::now();
    while pool.user_word(4).load(SeqCst) == 0 {
        assert!(t.elapsed() < 10 * SECS, "child never took the lock");
        std::thread::sleep(MS);
    }
    let late = 40 * MS;
    for _ in 0..10 {
        let t = Instant::now();
        let r = b.send_timeout(int(&pool, 2), 10 * MS);
        assert!(matches!(r, Err(shmval::SendError::Timeout(_))), "{r:?}");
        assert!(
            t.elapsed() < 10 * MS + late,
            "send_timeout took {:?}",
            t.elapsed()
        );
        let t = Instant::now();
        let r = b.try_send(int(&pool, 2));
        assert!(matches!(r, Err(shmval::SendError::Full(_))), "{r:?}");
        assert!(t.elapsed() < late, "try_send took {:?}", t.elapsed());
        let t = Instant::now();
        let r = sub.recv_timeout(10 * MS);
        assert!(matches!(r, Err(E::Timeout)), "{r:?}");
        assert!(
            t.elapsed() < 10 * MS + late,
            "recv_timeout took {:?}",
            t.elapsed()
        );
        let t = Instant::now();
        let r = sub.try_recv();
        assert!(matches!(r, Err(E::Empty)), "{r:?}");
        assert!(t.elapsed() < late, "try_recv took {:?}", t.elapsed());
    }
    kid.kill().unwrap();
    kid.wait().unwrap();
    assert_eq!(got(sub.recv_timeout(5 * SECS)), 1);
}

#[test]
fn chaos_senders_and_subscribers_killed_at_random_under_traffic() {
    let kills: usize = std::env::var("SHMVAL_BCAST_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let s = Scratch::new("bc-chaos");
    let pool = pool(&s, 64 << 20);
    let b = Broadcast::create(&pool, "b", 64, Policy::Block).unwrap();
    let env = vec![("POOL", s.0.clone())];
    let mut rng = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let sender = |slot: usize| {
        let mut env = env.clone();
        env.push(("SLOT", slot.to_string()));
        Kid(spawn("child_role_entry", "chaos-send", &env))
    };
    let mut senders: Vec<_> = (0..2).map(sender).collect();
    let mut subs: Vec<_> = (0..3)
        .map(|_| Kid(spawn("child_role_entry", "chaos-sub", &env)))
        .collect();
    let watch = b.subscribe().unwrap();
    let mut seen = 0u64;
    for _ in 0..kills {
        std::thread::sleep(Duration::from_micros(next() % 8000));
        let r = next() as usize;
        let kid = if r % 3 == 0 {
            &mut senders[r / 3 % 2]
        } else {
            &mut subs[r / 3 % 3]
        };
        // A chaos child ends only when killed (or at the close): one that ended by
        // itself failed (a subscriber that saw a value out of order panics).
        assert!(
            kid.try_wait().unwrap().is_none(),
            "a chaos child ended by itself"
        );
        kid.kill().unwrap();
        kid.wait().unwrap();
        // The replacement starts only now: a sender of the same slot running beside
        // the one being killed could send a later number before the old one's
        // earlier one landed.
        *kid = if r % 3 == 0 {
            sender(r / 3 % 2)
        } else {
            Kid(spawn("child_role_entry", "chaos-sub", &env))
        };
        // Keep the watching subscriber from blocking the senders.
        while let Ok(v) = watch.try_recv() {
            let _ = num(&v);
            seen += 1;
        }
    }
    // Traffic still flows after the kills: the watcher gets more values.
    let before = seen;
    let t = Instant::now();
    while seen < before + 1000 {
        match watch.recv_timeout(10 * SECS) {
            Ok(_) => seen += 1,
            Err(e) => panic!("after the kills: {e}"),
        }
        assert!(t.elapsed() < 30 * SECS, "traffic stalled");
    }
    eprintln!(
        "broadcast chaos: {kills} kills, {} values sent, {seen} watched",
        b.sent()
    );
    b.close();
    drop(watch);
    for k in senders.iter_mut().chain(subs.iter_mut()) {
        wait_ok(k, 60 * SECS, "chaos child");
    }
    let r = pool.check();
    assert!(r.is_ok(), "after the chaos: {:?}", r.problems);
}

#[derive(Debug, Clone)]
enum Op {
    Subscribe,
    Unsubscribe(usize),
    Send,
    Recv(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        1 => Just(Op::Subscribe),
        1 => (0..8usize).prop_map(Op::Unsubscribe),
        4 => Just(Op::Send),
        4 => (0..8usize).prop_map(Op::Recv),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Against a model (a queue per subscriber), under both non-waiting policies:
    /// what each subscriber receives, what it is told it missed, when a send is
    /// refused; and once everything is dropped the pool's bytes are back.
    #[test]
    fn broadcast_matches_its_model(ops in prop::collection::vec(op(), 1..120),
                                   drop_oldest in any::<bool>(), cap in 1u64..6) {
        let s = Scratch::new("bc-prop");
        let pool = pool(&s, 4 << 20);
        let base = baseline(&pool);
        {
            let policy = if drop_oldest { Policy::DropOldest } else { Policy::Block };
            let b = Broadcast::create(&pool, "b", cap, policy).unwrap();
            // Model: per subscriber, the values still to receive and the missed count.
            let mut subs: Vec<(Subscriber, std::collections::VecDeque<i64>, u64)> = Vec::new();
            let mut n = 0;
            for op in ops {
                match op {
                    Op::Subscribe => subs.push((b.subscribe().unwrap(), Default::default(), 0)),
                    Op::Unsubscribe(i) if !subs.is_empty() => {
                        subs.remove(i % subs.len());
                    }
                    Op::Send => {
                        let full = subs.iter().any(|(_, q, _)| q.len() as u64 == cap);
                        let r = b.try_send(boxed(&pool, n));
                        if full && !drop_oldest {
                            prop_assert!(matches!(r, Err(SendError::Full(_))));
                            continue;
                        }
                        prop_assert!(r.is_ok());
                        for (_, q, missed) in &mut subs {
                            if q.len() as u64 == cap {
                                q.pop_front();
                                *missed += 1;
                            }
                            q.push_back(n);
                        }
                        n += 1;
                    }
                    Op::Recv(i) if !subs.is_empty() => {
                        let k = i % subs.len();
                        let (sub, q, missed) = &mut subs[k];
                        let r = sub.try_recv();
                        if *missed > 0 {
                            prop_assert!(matches!(r, Err(E::Lagged(m)) if m == *missed));
                            *missed = 0;
                        } else if let Some(want) = q.pop_front() {
                            prop_assert_eq!(got(r), want);
                        } else {
                            prop_assert!(matches!(r, Err(E::Empty)));
                        }
                    }
                    _ => {}
                }
                let held = subs.iter().map(|(_, q, _)| q.len()).max().unwrap_or(0);
                prop_assert_eq!(b.len(), held as u64, "the ring holds exactly what is owed");
            }
            Broadcast::remove(&pool, "b").unwrap();
        }
        prop_assert_eq!(pool.stats().in_use, base);
    }
}

/// A sender killed after publishing a value and before waking the subscribers: a
/// subscriber asleep in `recv` looks again on its own and gets the value within a
/// bounded time (it slept to its deadline before, or forever without one).
#[test]
fn a_subscriber_asleep_gets_a_value_whose_sender_died_before_waking_it() {
    let s = Scratch::new("bcast-wake");
    let pool = pool(&s, 8 << 20);
    let b = Broadcast::create(&pool, "b", 8, Policy::Block).unwrap();
    let sub = b.subscribe().unwrap();
    let waiter = std::thread::spawn(move || sub.recv_timeout(20 * SECS).map(|v| num(&v)));
    std::thread::sleep(300 * MS); // asleep on the empty broadcast by now
    let st = spawn("child_role_entry", "send-and-die", &[("POOL", s.0.clone())])
        .wait()
        .unwrap();
    assert!(st.code().is_none(), "the sender did not die there");
    let died = Instant::now();
    assert_eq!(waiter.join().unwrap().ok(), Some(7));
    assert!(
        died.elapsed() < 5 * SECS,
        "the subscriber slept {:?} after the death",
        died.elapsed()
    );
}
