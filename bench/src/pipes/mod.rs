//! Pipes across two processes: ping-pong latency against a raw shared-cache-line
//! spin (the physical limit), iceoryx2 and a Unix socket; one-way throughput of bare
//! values against a raw single-producer ring; throughput of 4-key Tab messages;
//! blocking wake-up latency.
//!
//! The parent spawns this binary as `pipe-child MODE POOL N` for the other side.

mod peers;

use crate::harness::Report;
use peers::*;
use shmval::{shm_tab, tab, Offset, Pipe, Pool, ShmVal, Val};
use std::alloc::Layout;
use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

const SPIN: Duration = Duration::from_secs(1);
/// Slots of the raw ring (64 bytes each) and capacity of the pipes.
const CAP: u64 = 1024;

fn mono_ns() -> u64 {
    let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).unwrap();
    t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64
}

/// A raw block of the pool seen as `n` atomics (64-byte lines: word `8 * i`).
fn words(pool: &Pool, off: u64, n: usize) -> &[AtomicU64] {
    let p = pool.resolve(Offset::new(off).unwrap(), n * 8).unwrap();
    // SAFETY: a pool block of `n` u64 words used only through atomics; the pool
    // outlives the slice.
    unsafe { std::slice::from_raw_parts(p.as_ptr() as *const AtomicU64, n) }
}

/// Words of the raw structures: ping-pong line at 0; ring tail at 16, head at 32,
/// slots from 64 (8 words each).
const RAW_WORDS: usize = 64 + 8 * CAP as usize;
/// Cells of each direction of the raw cell ping-pong.
const RING: u64 = 512;

struct Side {
    pool: Pool,
    raw: u64,
}

impl Side {
    fn create(name: &str) -> Side {
        let pool = crate::harness::bench_pool(name, 256 << 20).expect("bench pool");
        // 128-aligned within a 16-aligned block (the base is page aligned).
        let raw = pool
            .alloc(Layout::from_size_align(RAW_WORDS * 8 + 128, 16).unwrap())
            .unwrap()
            .get()
            .next_multiple_of(128);
        pool.user_word(5).store(raw, Ordering::SeqCst);
        for p in ["ping", "pong", "one-way"] {
            Pipe::create(&pool, p, CAP).unwrap();
        }
        for cap in [4, 64] {
            Pipe::create(&pool, &format!("cap{cap}"), cap).unwrap();
        }
        Side { pool, raw }
    }

    fn open(name: &str) -> Side {
        let pool = Pool::open(name, Duration::from_secs(5)).unwrap();
        let raw = pool.user_word(5).load(Ordering::SeqCst);
        Side { pool, raw }
    }

    fn raw(&self) -> &[AtomicU64] {
        words(&self.pool, self.raw, RAW_WORDS)
    }

    fn pipe(&self, name: &str) -> Pipe {
        Pipe::open(&self.pool, name, Duration::from_secs(5)).unwrap()
    }

    fn reset(&self) {
        for w in self.raw() {
            w.store(0, Ordering::SeqCst);
        }
        self.pool.user_word(6).store(0, Ordering::SeqCst);
    }

    fn child(&self, mode: &str, n: u64) -> Child {
        self.reset();
        let child = Command::new(std::env::current_exe().unwrap())
            .args(["pipe-child", mode, self.pool.name(), &n.to_string()])
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn pipe child");
        // The child says it is ready (attached, warmed up) through user word 6.
        let t = Instant::now();
        while self.pool.user_word(6).load(Ordering::SeqCst) == 0 {
            assert!(t.elapsed() < Duration::from_secs(20), "child never ready");
            std::thread::sleep(Duration::from_micros(100));
        }
        child
    }
}

fn finish(child: Child) -> String {
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "pipe child failed");
    String::from_utf8(out.stdout).unwrap()
}

fn int(pool: &Pool, i: u64) -> ShmVal {
    pool.share(&Val::U64(i)).unwrap()
}

fn as_u64(v: &ShmVal) -> u64 {
    match v.to_val().unwrap() {
        Val::U64(x) => x,
        other => panic!("unexpected {other}"),
    }
}

// --- the parent's halves ----------------------------------------------------------

/// CPU time of the calling thread, ns.
fn thread_cpu_ns() -> u64 {
    let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_THREAD_CPUTIME_ID).unwrap();
    t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64
}

/// Backpressure: a producer blocked on a full pipe of capacity `cap` whose consumer
/// takes one value per `gap_us` µs; returns the producer's CPU time per message (µs).
/// With the default spin budget: what a blocked sender burns is what is measured.
fn backpressure_pipe(s: &Side, n: u64, cap: u64, gap_us: u64) -> f64 {
    let p = s.pipe(&format!("cap{cap}"));
    let child = s.child(&format!("slow-drain-{cap}-{gap_us}"), n);
    let cpu = thread_cpu_ns();
    for i in 0..n {
        p.send(i).unwrap();
    }
    let cpu = thread_cpu_ns() - cpu;
    finish(child);
    cpu as f64 / n as f64 / 1e3
}

/// One-way throughput through a pipe of capacity `cap` (default spin budget), with
/// `busy` processes spinning on other work meanwhile (a loaded machine).
fn oneway_small(s: &Side, n: u64, cap: u64, busy: usize) -> f64 {
    let hogs: Vec<Child> = (0..busy)
        .map(|_| {
            Command::new(std::env::current_exe().unwrap())
                .args(["pipe-child", "busy", s.pool.name(), "0"])
                .spawn()
                .unwrap()
        })
        .collect();
    let p = s.pipe(&format!("cap{cap}"));
    let child = s.child(&format!("drain-cap-{cap}"), n);
    let start = mono_ns();
    for i in 0..n {
        p.send(i).unwrap();
    }
    let end: u64 = finish(child).trim().parse().unwrap();
    for mut h in hogs {
        let _ = h.kill();
        let _ = h.wait();
    }
    n as f64 / ((end - start) as f64 / 1e3)
}

fn pingpong_pipe(s: &Side, n: u64, spin: Duration) -> f64 {
    let mode = if spin.is_zero() {
        "echo-pipe-sleep"
    } else {
        "echo-pipe"
    };
    let (ping, pong) = (s.pipe("ping"), s.pipe("pong"));
    ping.set_spin(spin);
    pong.set_spin(spin);
    let child = s.child(mode, n);
    let t = Instant::now();
    for i in 0..n {
        ping.send(i).unwrap();
        let v = pong.recv().unwrap();
        debug_assert_eq!(as_u64(&v), i);
        drop(v);
    }
    let ns = t.elapsed().as_nanos() as f64 / n as f64 / 2.0;
    finish(child);
    ns
}

fn oneway_pipe(s: &Side, n: u64) -> f64 {
    let p = s.pipe("one-way");
    p.set_spin(SPIN);
    let child = s.child("drain-pipe", n);
    let start = mono_ns();
    for i in 0..n {
        p.send(i).unwrap();
    }
    let end: u64 = finish(child).trim().parse().unwrap();
    n as f64 / ((end - start) as f64 / 1e3)
}

/// As [`oneway_pipe`], moving runs of up to 64 values a call on both sides.
fn oneway_pipe_many(s: &Side, n: u64) -> f64 {
    let p = s.pipe("one-way");
    p.set_spin(SPIN);
    let child = s.child("drain-pipe-many", n);
    let mut run = Vec::with_capacity(64);
    let start = mono_ns();
    let mut i = 0;
    while i < n {
        let k = 64.min(n - i);
        run.extend((i..i + k).map(ShmVal::from));
        p.send_many(&mut run).unwrap();
        i += k;
    }
    let end: u64 = finish(child).trim().parse().unwrap();
    n as f64 / ((end - start) as f64 / 1e3)
}

/// How the sender of 4-key Tab messages makes each one.
#[derive(Clone, Copy, PartialEq)]
enum Make {
    /// 1024 pre-built tables sent round-robin (a clone is one reference-count
    /// increment).
    Prebuilt,
    /// A heap `tab!` built and copied in with `pool.share`.
    ShareHeap,
    /// Built in place with `shm_tab!` (no heap map).
    InPlace,
}

/// 4-key Tab messages, made by the sender as `make` says.
fn tabs_pipe(s: &Side, n: u64, make: Make) -> f64 {
    let p = s.pipe("one-way");
    p.set_spin(SPIN);
    let data = Val::Arr(shmval::Arr::F64(vec![0.5; 8]));
    let samples = [0.5f64; 8];
    let prebuilt: Vec<ShmVal> = if make == Make::Prebuilt {
        (0..CAP)
            .map(|i| {
                s.pool
                    .share(&tab! { "seq" => i, "time" => 0u64, "name" => "server", "data" => data.clone() })
                    .unwrap()
            })
            .collect()
    } else {
        Vec::new()
    };
    let child = s.child("drain-tabs", n);
    let start = mono_ns();
    for i in 0..n {
        let v = match make {
            Make::ShareHeap => s
                .pool
                .share(&tab! { "seq" => i, "time" => 0u64, "name" => "server", "data" => data.clone() })
                .unwrap(),
            Make::InPlace => shm_tab!(s.pool, {"seq" => i, "time" => 0u64, "name" => "server", "data" => &samples[..]})
                .unwrap()
                .into(),
            Make::Prebuilt => prebuilt[(i % CAP) as usize].clone(),
        };
        p.send(v).unwrap();
    }
    let end: u64 = finish(child).trim().parse().unwrap();
    n as f64 / ((end - start) as f64 / 1e3)
}

// --- the child's halves -----------------------------------------------------------

/// `pipe-child MODE POOL N`.
pub fn child(args: &[String]) {
    let s = Side::open(&args[1]);
    let n: u64 = args[2].parse().unwrap();
    let ready = || s.pool.user_word(6).store(1, Ordering::SeqCst);
    match args[0].as_str() {
        "echo-raw" => {
            let line = &s.raw()[0];
            ready();
            for i in 0..n {
                while line.load(Ordering::Acquire) != 2 * i + 1 {
                    std::hint::spin_loop();
                }
                line.store(2 * i + 2, Ordering::Release);
            }
        }
        "echo-raw-two" => {
            let (ping, pong) = (&s.raw()[0], &s.raw()[8]);
            ready();
            for i in 0..n {
                while ping.load(Ordering::Acquire) != i + 1 {
                    std::hint::spin_loop();
                }
                pong.store(i + 1, Ordering::Release);
            }
        }
        "echo-pipe" | "echo-pipe-sleep" => {
            let (ping, pong) = (s.pipe("ping"), s.pipe("pong"));
            let spin = if args[0] == "echo-pipe" {
                SPIN
            } else {
                Duration::ZERO
            };
            ping.set_spin(spin);
            pong.set_spin(spin);
            ready();
            for _ in 0..n {
                pong.send(ping.recv().unwrap()).unwrap();
            }
        }
        "echo-uds" => {
            let path = format!("/tmp/shmval-bench-{}.sock", nix::unistd::getppid());
            let mut sock = std::os::unix::net::UnixStream::connect(path).unwrap();
            ready();
            let mut tx = sock.try_clone().unwrap();
            echo_bytes(&mut sock, &mut tx, n);
        }
        "echo-fifo" => {
            ready(); // before opening: the parent opens its ends after this
            let (ping, pong) = fifo_paths(nix::unistd::getppid().as_raw() as u32);
            let mut rx = std::fs::File::open(&ping).unwrap();
            let mut tx = std::fs::OpenOptions::new().write(true).open(&pong).unwrap();
            echo_bytes(&mut rx, &mut tx, n);
        }
        "echo-iceoryx2" => echo_iceoryx2(ready),
        "drain-ring" => drain_ring(&s, n, true, ready),
        "drain-ring-plain" => drain_ring(&s, n, false, ready),
        "drain-cells" => drain_cells(&s, n, ready),
        "echo-cells" => {
            let raw = s.raw();
            ready();
            for i in 0..n {
                cell_take(raw, (i % RING) as usize, i);
                cell_put(raw, 512 + (i % RING) as usize, i);
            }
        }
        "drain-pipe" => {
            let p = s.pipe("one-way");
            p.set_spin(SPIN);
            drain_one_by_one(&p, n, ready);
        }
        "drain-pipe-many" => {
            let p = s.pipe("one-way");
            p.set_spin(SPIN);
            ready();
            let mut got = Vec::with_capacity(64);
            let mut i = 0;
            while i < n {
                p.recv_many(&mut got, 64).unwrap();
                for v in got.drain(..) {
                    debug_assert_eq!(as_u64(&v), i);
                    drop(v);
                    i += 1;
                }
            }
            println!("{}", mono_ns());
        }
        "drain-tabs" => {
            let p = s.pipe("one-way");
            p.set_spin(SPIN);
            ready();
            for _ in 0..n {
                let v = p.recv().unwrap();
                assert!(v.as_tab().is_some());
            }
            println!("{}", mono_ns());
        }
        "busy" => {
            // A competing process: burns its core until killed.
            let mut x = 0u64;
            loop {
                x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
            }
        }
        m if m.starts_with("slow-drain-") => {
            let mut it = m["slow-drain-".len()..].split('-');
            let cap: u64 = it.next().unwrap().parse().unwrap();
            let gap = Duration::from_micros(it.next().unwrap().parse().unwrap());
            let p = s.pipe(&format!("cap{cap}"));
            ready();
            for i in 0..n {
                std::thread::sleep(gap);
                assert_eq!(as_u64(&p.recv().unwrap()), i);
            }
        }
        m if m.starts_with("drain-cap-") => {
            let p = s.pipe(&format!("cap{}", &m["drain-cap-".len()..]));
            drain_one_by_one(&p, n, ready);
        }
        other => panic!("unknown pipe-child mode {other}"),
    }
}

/// Receives `n` values one a call (checking their order in debug builds), then
/// prints the time it finished.
fn drain_one_by_one(p: &Pipe, n: u64, ready: impl Fn()) {
    ready();
    for i in 0..n {
        let v = p.recv().unwrap();
        debug_assert_eq!(as_u64(&v), i);
        drop(v);
    }
    println!("{}", mono_ns());
}

pub fn run(r: &mut Report) {
    // Leave /dev/shm as found: what the iceoryx2 peer creates here is removed at
    // the end, what was there before (another iceoryx2 user) is left alone.
    let iox2_before = iox2_files();
    let s = Side::create(&format!("shmval-bench-pipes-{}", std::process::id()));
    let base = s.pool.stats().in_use;
    let q = r.quick;
    let n_pp: u64 = if q { 20_000 } else { 200_000 };
    let reps = r.reps(7);
    r.compare(
        "ping-pong of one small value, 2 processes (round trip / 2), spinning",
        "ns",
        reps,
        1,
        &["≤ 2× raw spin, ≤ iceoryx2", "", "", "", "", "", ""],
        vec![
            (
                "shmval Pipe (spin mode)",
                Box::new(|| pingpong_pipe(&s, n_pp, SPIN)),
            ),
            (
                "raw shared cache line spin",
                Box::new(|| pingpong_raw(&s, n_pp)),
            ),
            (
                "raw spin, one line each way (the floor of any two queues)",
                Box::new(|| pingpong_raw_two(&s, n_pp)),
            ),
            (
                "raw rings with the pipe's cell layout (its floor)",
                Box::new(|| pingpong_cells(&s, n_pp)),
            ),
            (
                "iceoryx2 0.10 publish-subscribe, 64 B (spin)",
                Box::new(|| pingpong_iceoryx2(&s, n_pp)),
            ),
            (
                "Unix domain socket, 8 B (blocking)",
                Box::new(|| pingpong_uds(&s, n_pp / 10)),
            ),
            (
                "Unix pipe, 8 B (blocking)",
                Box::new(|| pingpong_fifo(&s, n_pp / 10)),
            ),
        ],
    );
    r.compare(
        "blocking wake-up: ping-pong with no spin phase (futex), 2 processes",
        "ns",
        reps,
        1,
        &["reported", "", ""],
        vec![
            (
                "shmval Pipe (sleeps at once)",
                Box::new(|| pingpong_pipe(&s, n_pp / 10, Duration::ZERO)),
            ),
            (
                "Unix domain socket, 8 B (blocking)",
                Box::new(|| pingpong_uds(&s, n_pp / 10)),
            ),
            (
                "Unix pipe, 8 B (blocking)",
                Box::new(|| pingpong_fifo(&s, n_pp / 10)),
            ),
        ],
    );
    let n_ow: u64 = if q { 200_000 } else { 5_000_000 };
    let mq_want = (n_ow * (n_ow - 1) / 2).to_string();
    let boost_mq = crate::harness::peer("boost_mq");
    if boost_mq.is_none() {
        eprintln!("Boost.Interprocess message_queue peer not built: run bench/setup (skipped)");
    }
    r.compare(
        "one-way throughput of a bare small value, 1 sender → 1 receiver process, capacity 1024",
        "M msg/s",
        reps,
        2,
        &["≥ 0.5× raw ring", "≥ 0.5× raw ring", "", "", ""],
        {
            let mut c: Vec<crate::harness::Candidate<'_>> = vec![
                (
                    "shmval Pipe, one value a call (send / recv)",
                    Box::new(|| oneway_pipe(&s, n_ow)),
                ),
                (
                    "shmval Pipe, runs of 64 (send_many / recv_many)",
                    Box::new(|| oneway_pipe_many(&s, n_ow)),
                ),
                (
                    "raw SPSC ring, 64 B slots",
                    Box::new(|| oneway_ring(&s, n_ow, true)),
                ),
                (
                    "raw SPSC ring, indices read every value (Boost.Lockfree spsc_queue scheme)",
                    Box::new(|| oneway_ring(&s, n_ow, false)),
                ),
                (
                    "raw ring with the pipe's cell layout (its floor)",
                    Box::new(|| oneway_cells(&s, n_ow)),
                ),
            ];
            if let Some(p) = boost_mq.as_ref() {
                let want = &mq_want;
                c.push((
                    "Boost message_queue, 8 B",
                    Box::new(move || crate::harness::run_peer(p, n_ow, want)),
                ));
            }
            c
        },
    );
    let n_bp: u64 = if q { 100 } else { 1000 };
    let bp_want = (n_bp * (n_bp - 1) / 2).to_string();
    r.compare(
        "backpressure: producer CPU per message, capacity 4, consumer takes one value per ms",
        "µs CPU",
        reps.min(3),
        0,
        &["≤ 10 µs (PicklingTools CQ ~4 µs)", ""],
        {
            let mut c: Vec<crate::harness::Candidate<'_>> = vec![(
                "shmval Pipe, send() (default spin budget, adaptive)",
                Box::new(|| backpressure_pipe(&s, n_bp, 4, 1000)),
            )];
            if let Some(p) = boost_mq.as_ref() {
                let want = &bp_want;
                c.push((
                    "Boost message_queue, 8 B (condition variable)",
                    Box::new(move || crate::harness::run_peer_args(p, &[n_bp, 4, 1000], want)),
                ));
            }
            c
        },
    );
    let n_small: u64 = if q { 20_000 } else { 500_000 };
    r.compare(
        "small capacities on a loaded machine: one-way throughput, alone vs a busy third process",
        "M msg/s",
        reps,
        0,
        &["keeps its rate under load", "", "", ""],
        vec![
            (
                "capacity 4, alone",
                Box::new(|| oneway_small(&s, n_small, 4, 0)),
            ),
            (
                "capacity 4, one busy process",
                Box::new(|| oneway_small(&s, n_small, 4, 1)),
            ),
            (
                "capacity 64, alone",
                Box::new(|| oneway_small(&s, n_small, 64, 0)),
            ),
            (
                "capacity 64, one busy process",
                Box::new(|| oneway_small(&s, n_small, 64, 1)),
            ),
        ],
    );
    let n_tab: u64 = if q { 50_000 } else { 1_000_000 };
    r.compare(
        "4-key Tab messages, 1 process → another, capacity 1024",
        "M msg/s",
        reps,
        0,
        &[
            "≥ 2 M/s (PicklingTools CQ: 0.2–0.34 M/s)",
            "≥ 0.6× pre-built",
            "reported",
        ],
        vec![
            (
                "shmval Pipe, pre-built tables",
                Box::new(|| tabs_pipe(&s, n_tab, Make::Prebuilt)),
            ),
            (
                "shmval Pipe, sender builds each in place (shm_tab!)",
                Box::new(|| tabs_pipe(&s, n_tab, Make::InPlace)),
            ),
            (
                "shmval Pipe, sender shares a heap tab! each",
                Box::new(|| tabs_pipe(&s, n_tab, Make::ShareHeap)),
            ),
        ],
    );
    assert_eq!(s.pool.stats().in_use, base, "every message was freed");
    for f in iox2_files() {
        if !iox2_before.contains(&f) {
            let _ = std::fs::remove_file(f);
        }
    }
}

/// `profile-pipe`: send+receive pairs in one process (the code path without
/// cross-core transfers), for perf/callgrind.
/// Ping-pong across two processes alone (for `perf record`): raw spin, then the
/// pipe, alternating, three rounds.
pub fn profile_pingpong() {
    let s = Side::create(&format!("shmval-bench-ppprof-{}", std::process::id()));
    let n = 1_000_000u64;
    for round in 0..3 {
        let raw = pingpong_raw(&s, n);
        let two = pingpong_raw_two(&s, n);
        let cells = pingpong_cells(&s, n);
        let pipe = pingpong_pipe(&s, n, SPIN);
        println!(
            "round {round}: pipe {pipe:.1} ns a hop, raw spin {raw:.1} ns ({:.2}x), \
             a line each way {two:.1} ns ({:.2}x), raw cells {cells:.1} ns ({:.2}x)",
            pipe / raw,
            pipe / two,
            cells / raw
        );
    }
}

/// One-way single values across two processes alone (for `perf record`): the raw
/// ring, then the pipe, alternating, three rounds.
pub fn profile_oneway() {
    let s = Side::create(&format!("shmval-bench-owprof-{}", std::process::id()));
    let n = 5_000_000u64;
    for round in 0..3 {
        let raw = oneway_ring(&s, n, true);
        let cells = oneway_cells(&s, n);
        let pipe = oneway_pipe(&s, n);
        println!(
            "round {round}: pipe {pipe:.1} M/s, raw ring {raw:.1} M/s ({:.2}x), \
             raw cells {cells:.1} M/s ({:.2}x)",
            pipe / raw,
            cells / raw
        );
    }
}

pub fn profile() {
    let s = Side::create(&format!("shmval-bench-pprof-{}", std::process::id()));
    let p = s.pipe("one-way");
    let n = 2_000_000u64;
    for round in 0..3 {
        let t = Instant::now();
        for i in 0..n {
            p.try_send(i).unwrap();
            let v = p.try_recv().unwrap();
            std::hint::black_box(&v);
        }
        let pair = t.elapsed().as_nanos() as f64 / n as f64;
        if std::env::var("SHMVAL_PROFILE_PAIRS_ONLY").is_ok() {
            // For counting a pair's instructions (callgrind) without the rest.
            println!("round {round}: send+recv pair {pair:.1} ns");
            continue;
        }
        let t = Instant::now();
        for i in 0..n {
            std::hint::black_box(int(&s.pool, i));
        }
        let mk = t.elapsed().as_nanos() as f64 / n as f64;
        let (mut run, mut got) = (Vec::with_capacity(64), Vec::with_capacity(64));
        let t = Instant::now();
        for i in 0..n / 64 {
            run.extend((i * 64..i * 64 + 64).map(ShmVal::from));
            p.try_send_many(&mut run).unwrap();
            p.try_recv_many(&mut got, 64).unwrap();
            got.clear();
        }
        let many = t.elapsed().as_nanos() as f64 / n as f64;
        println!(
            "round {round}: send+recv pair {pair:.1} ns, in runs of 64 {many:.1} ns a value \
             (making the value {mk:.1} ns)"
        );
    }
}
