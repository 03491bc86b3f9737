//! The client of the pipeline (PicklingTools' ClientSide): waits for the pool and the
//! `cooked` pipe, receives until the pipe closes, checks the sequence numbers and
//! reports the rate and the end-to-end latency (server `time` → now, one clock for
//! every process).
//!
//! ```text
//! cargo run --release --example client       # waits for the pool and the pipe
//! ```

#[path = "common/mod.rs"]
mod common;

use common::{human_ns, now_ns, percentile, stop_on_ctrl_c, stopping, Args};
use shmval::{Pipe, Pool, RecvError};
use std::error::Error;
use std::time::{Duration, Instant};

#[allow(dead_code)]
fn main() {
    common::main_of("client", run);
}

/// Runs this role with its command-line arguments.
pub fn run(argv: Vec<String>) -> Result<(), Box<dyn Error>> {
    let args = Args::parse("client", argv);
    stop_on_ctrl_c();
    let wait = args.wait();
    let pool = Pool::open(&args.pool, wait)?;
    let pipe = Pipe::open(&pool, &args.cooked, wait)?;
    let mut latency = Vec::with_capacity(args.count as usize);
    let (mut next, mut missing, mut disordered) = (0i64, 0i64, 0u64);
    let mut first: Option<Instant> = None;
    loop {
        let v = match pipe.recv_timeout(Duration::from_millis(100)) {
            Ok(v) => v,
            Err(RecvError::Timeout) if !stopping() => continue,
            Err(RecvError::Timeout) | Err(RecvError::Closed) => break,
            Err(e) => return Err(e.into()),
        };
        let now = now_ns();
        first.get_or_insert_with(Instant::now);
        let t = v.as_tab().ok_or("a value that is not a table")?;
        let field = |k: &str| -> Result<i64, Box<dyn Error>> {
            Ok(t.get_val(k)?
                .and_then(|v| v.as_i64())
                .ok_or(format!("no {k:?}"))?)
        };
        let seq = field("seq")?;
        latency.push(now - field("time")?);
        if seq >= next {
            missing += seq - next;
            next = seq + 1;
        } else {
            disordered += 1;
        }
    }
    let took = first.map_or(Duration::ZERO, |f| f.elapsed());
    latency.sort_unstable();
    let n = latency.len();
    println!(
        "client: received {n} values in {:.2} s ({:.0}/s), {missing} missing, {disordered} out of order{}",
        took.as_secs_f64(),
        n as f64 / took.as_secs_f64().max(1e-9),
        if stopping() { " — interrupted" } else { "" }
    );
    println!(
        "client: end-to-end latency p50 {}  p90 {}  p99 {}  max {}",
        human_ns(percentile(&latency, 50.0)),
        human_ns(percentile(&latency, 90.0)),
        human_ns(percentile(&latency, 99.0)),
        human_ns(percentile(&latency, 100.0)),
    );
    if missing != 0 || disordered != 0 {
        return Err("sequence check failed".into());
    }
    Ok(())
}
