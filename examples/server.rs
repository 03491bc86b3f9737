//! The server of the pipeline (PicklingTools' SHMMain + ServerSide): creates the pool
//! and the `raw` pipe, sends `--count` small tables, closes the pipe.
//!
//! ```text
//! cargo run --release --example server -- --count 100000     # any order with middle/client
//! ```
//! Each value is a shared table `{'seq': n, 'time': ns, 'name': 'server', 'data':
//! array('d', …)}`; sending moves a reference to it, never its bytes.

#[path = "common/mod.rs"]
mod common;

use common::{now_ns, stop_on_ctrl_c, stopping, Args};
use shmval::{tab, Arr, CreateError, OpenError, Pipe, Pool, PoolOptions, SendError, Val};
use std::error::Error;
use std::time::{Duration, Instant};

#[allow(dead_code)]
fn main() {
    common::main_of("server", run);
}

/// Creates the pool, or takes the one already there: a pool that live processes are
/// attached to (a middle and a client still running while this server restarts) is
/// reattached as it is, and the pipeline goes on; one that nobody uses any more (left
/// by an earlier run) is replaced; one that cannot be opened is left alone, with the
/// reason.
fn create_pool(name: &str, size: u64, keep: bool) -> Result<Pool, Box<dyn Error>> {
    let opts = PoolOptions::new().remove_on_drop(!keep);
    match Pool::create_with(name, size, &opts) {
        Err(CreateError::AlreadyExists { .. }) => {}
        other => return Ok(other?),
    }
    match Pool::open_with(name, &opts.clone().timeout(Duration::from_secs(2))) {
        Ok(old) => {
            // Ourselves included.
            let others = old.info().attached.len().saturating_sub(1);
            if others > 0 {
                eprintln!(
                    "server: pool {name} is in use by {others} other process(es): reattaching"
                );
                return Ok(old);
            }
            eprintln!("server: replacing pool {name} left by an earlier run");
            old.remove();
        }
        Err(OpenError::CreatorDied { .. }) => {
            eprintln!("server: replacing pool {name} whose creator died making it");
            Pool::destroy(name)?;
        }
        Err(e) => {
            return Err(format!(
                "pool {name} exists but cannot be opened ({e}); if nobody uses it, remove it \
                 (Pool::destroy, or rm {dir}/{name} {dir}/{name}_boot)",
                dir = opts.get_dir().display()
            )
            .into())
        }
    }
    Ok(Pool::create_with(name, size, &opts)?)
}

/// Runs this role with its command-line arguments.
pub fn run(argv: Vec<String>) -> Result<(), Box<dyn Error>> {
    let args = Args::parse("server", argv);
    stop_on_ctrl_c();
    let pool = create_pool(&args.pool, args.size, args.keep)?;
    let pipe = match Pipe::create(&pool, &args.raw, args.capacity) {
        Err(shmval::PipeError::Exists(name)) => Pipe::open(&pool, &name, Duration::ZERO)?,
        other => other?,
    };
    let count = args.count;
    let data = Val::Arr(Arr::F64(
        (0..args.payload).map(|i| i as f64 * 0.5).collect(),
    ));
    let start = Instant::now();
    let mut sent = 0u64;
    'values: for seq in 0..count {
        let mut v = pool.share(&tab! {
            "seq" => seq,
            "time" => now_ns(),
            "name" => "server",
            "data" => data.clone(),
        })?;
        loop {
            // Short timeouts so that Ctrl-C is noticed while the pipe is full.
            match pipe.send_timeout(v, Duration::from_millis(100)) {
                Ok(()) => break,
                Err(SendError::Timeout(back)) if !stopping() => v = back,
                Err(SendError::Timeout(_)) | Err(SendError::Closed(_)) => break 'values,
                Err(e) => return Err(e.into()),
            }
        }
        sent += 1;
        if stopping() {
            break;
        }
    }
    pipe.close();
    let took = start.elapsed();
    println!(
        "server: sent {sent} values in {:.2} s ({:.0}/s){}",
        took.as_secs_f64(),
        sent as f64 / took.as_secs_f64(),
        if stopping() { " — interrupted" } else { "" }
    );
    // Stay until the middle has taken everything (or gave up), so that the pool's
    // name exists as long as someone may still look for it.
    let t = Instant::now();
    while !pipe.is_empty() && !stopping() && t.elapsed() < args.wait() {
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(())
}
