//! The middle of the pipeline: reads `raw`, transforms each table in place (adds
//! `'hops'` and `'middle_time'`), writes the same reference to `cooked`.
//!
//! ```text
//! cargo run --release --example middle       # waits for the server's pool and pipe
//! ```

#[path = "common/mod.rs"]
mod common;

use common::{now_ns, stop_on_ctrl_c, stopping, Args};
use shmval::{Pipe, PipeError, Pool, RecvError, SendError};
use std::error::Error;
use std::time::Duration;

#[allow(dead_code)]
fn main() {
    common::main_of("middle", run);
}

/// Runs this role with its command-line arguments.
pub fn run(argv: Vec<String>) -> Result<(), Box<dyn Error>> {
    let args = Args::parse("middle", argv);
    stop_on_ctrl_c();
    let wait = args.wait();
    let pool = Pool::open(&args.pool, wait)?;
    let input = Pipe::open(&pool, &args.raw, wait)?;
    let output = match Pipe::create(&pool, &args.cooked, args.capacity) {
        Err(PipeError::Exists(name)) => Pipe::open(&pool, &name, Duration::ZERO)?,
        other => other?,
    };
    let mut moved = 0u64;
    'values: loop {
        let v = match input.recv_timeout(Duration::from_millis(100)) {
            Ok(v) => v,
            Err(RecvError::Timeout) if !stopping() => continue,
            Err(RecvError::Timeout) | Err(RecvError::Closed) => break,
            Err(e) => return Err(e.into()),
        };
        if let Some(t) = v.as_tab() {
            t.insert("hops", 1)?;
            t.insert("middle_time", now_ns())?;
        }
        let mut v = v;
        loop {
            match output.send_timeout(v, Duration::from_millis(100)) {
                Ok(()) => break,
                Err(SendError::Timeout(back)) if !stopping() => v = back,
                Err(SendError::Timeout(_)) | Err(SendError::Closed(_)) => break 'values,
                Err(e) => return Err(e.into()),
            }
        }
        moved += 1;
    }
    output.close();
    println!(
        "middle: moved {moved} values{}",
        if stopping() { " — interrupted" } else { "" }
    );
    Ok(())
}
