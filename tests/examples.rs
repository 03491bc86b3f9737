//! The pipeline's example programs as their users run them: a server restarted while
//! the others still use its pool reattaches instead of replacing the pool. The
//! example's own code is compiled in here and run in a re-spawned process (so it is
//! always this build's, whichever test target was asked for).

mod common;

#[path = "../examples/server.rs"]
#[allow(dead_code)]
mod server;

use common::{child_done, role, spawn, Scratch};
use shmval::{Pipe, Pool, RecvError, ShmVal};
use std::process::Child;
use std::time::{Duration, Instant};

#[test]
fn child_roles() {
    if role().as_deref() != Some("server") {
        return;
    }
    let args = std::env::var("ARGS").unwrap();
    server::run(args.split(' ').map(String::from).collect()).expect("the server");
    child_done();
}

fn server(pool: &str, count: u64) -> Child {
    let args = format!("--pool {pool} --count {count} --capacity 64 --wait 10");
    spawn("child_roles", "server", &[("ARGS", args)])
}

fn seq(v: &ShmVal) -> i64 {
    let s = v.to_string();
    // {'seq': N, ...}
    s.split("'seq': ")
        .nth(1)
        .and_then(|r| r.split(',').next())
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("not a server value: {s}"))
}

/// The server is killed and restarted while another process (this one, standing in
/// for the middle) is attached and reading its pipe: the new server reattaches to
/// the same pool (same generation) and its values arrive on the same pipe, then
/// `Closed` (before: it replaced the pool, and this process waited on the old one).
#[test]
fn a_restarted_server_reattaches_to_a_pool_in_use() {
    if role().is_some() {
        return;
    }
    let s = Scratch::new("ex-restart");
    let mut first = server(s.name(), 1_000_000);
    let pool = Pool::open(s.name(), Duration::from_secs(20)).expect("the server's pool");
    let generation = pool.info().generation;
    let raw = Pipe::open(&pool, "raw", Duration::from_secs(20)).expect("the raw pipe");
    let _ = raw
        .recv_timeout(Duration::from_secs(20))
        .expect("a first value");
    first.kill().unwrap();
    first.wait().unwrap();
    let mut second = server(s.name(), 50);
    // What the first server left in the pipe, then the second server's 0..50.
    let mut tail = Vec::new();
    let t = Instant::now();
    loop {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "the pipeline stalled"
        );
        match raw.recv_timeout(Duration::from_secs(20)) {
            Ok(v) => tail.push(seq(&v)),
            Err(RecvError::Closed) => break,
            Err(e) => panic!("receive: {e} (the restarted server replaced the pool?)"),
        }
    }
    common::wait_ok(&mut second, Duration::from_secs(30), "the second server");
    assert!(tail.len() >= 50);
    assert_eq!(tail[tail.len() - 50..], (0..50).collect::<Vec<_>>()[..]);
    assert_eq!(pool.info().generation, generation, "the same pool");
}
