//! The main job: server → middle → client as three separate processes, one summary.
//!
//! ```text
//! cargo run --release --example pipeline                      # defaults
//! cargo run --release --example pipeline -- --count 1000000 --capacity 4096 --keep
//! ```
//! This program starts itself three times, as `server`, `middle` and `client`
//! (the code of `examples/server.rs`, `middle.rs`, `client.rs`, which also run on
//! their own, in any order, each in its own terminal). The client is started first
//! to show that it waits for the server's pool and pipe. Ctrl-C reaches all three;
//! each shuts down cleanly and the server removes the pool unless `--keep` is given.

// Each role file is also an example of its own and loads `common` itself, so the
// pipeline holds one copy per role (each process uses one role's copy).
#![allow(clippy::duplicate_mod)]

#[path = "client.rs"]
mod client;
mod common;
#[path = "middle.rs"]
mod middle;
#[path = "server.rs"]
mod server;

use common::Args;
use std::process::Command;
use std::time::Instant;

fn main() {
    let mut argv: Vec<String> = std::env::args().skip(1).collect();
    let role = argv.first().cloned().unwrap_or_default();
    let run = match role.as_str() {
        "server" => server::run,
        "middle" => middle::run,
        "client" => client::run,
        _ => return launch(argv),
    };
    argv.remove(0);
    if let Err(e) = run(argv) {
        eprintln!("{role}: {e}");
        std::process::exit(1);
    }
}

fn launch(argv: Vec<String>) {
    let args = Args::parse("pipeline", argv.clone());
    // The children get Ctrl-C from the terminal; the launcher only waits for them.
    common::stop_on_ctrl_c();
    let exe = std::env::current_exe().expect("own path");
    println!(
        "pipeline: pool {}, {} values of {} f64, pipes {} -> {} (capacity {})",
        args.pool, args.count, args.payload, args.raw, args.cooked, args.capacity
    );
    let start = Instant::now();
    let mut kids: Vec<_> = ["client", "middle", "server"]
        .iter()
        .map(|role| {
            let child = Command::new(&exe)
                .arg(role)
                .args(&argv)
                .spawn()
                .unwrap_or_else(|e| panic!("start {role}: {e}"));
            (role, child)
        })
        .collect();
    let mut failed = Vec::new();
    for (role, child) in &mut kids {
        match child.wait() {
            Ok(st) if st.success() => {}
            Ok(st) => failed.push(format!("{role} ({st})")),
            Err(e) => failed.push(format!("{role} ({e})")),
        }
    }
    let pool_left = shmval::Pool::exists(&args.pool);
    println!(
        "pipeline: {} in {:.2} s; pool {}",
        if failed.is_empty() {
            "all three processes finished".to_string()
        } else {
            format!("FAILED: {}", failed.join(", "))
        },
        start.elapsed().as_secs_f64(),
        if pool_left {
            "kept in /dev/shm"
        } else {
            "removed"
        }
    );
    if !failed.is_empty() {
        std::process::exit(1);
    }
}
