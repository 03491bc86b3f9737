//! `shmval`: the operator's tool for shmval pools (logic in the library).
//!
//! ```text
//! shmval check NAME [--json] [--dir DIR]
//! ```
//!
//! Exit codes: 0 clean, 1 problems found, 2 could not run (no such pool, not a
//! shmval pool, an incompatible layout, no permission).

use clap::{Parser, Subcommand};
use shmval::{Pool, PoolOptions};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "shmval",
    version,
    about = "Inspect and check shmval shared-memory pools"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Check a pool: every value reachable from its roots validated, every reference
    /// count compared with the references found. Exit 0 clean, 1 problems found
    /// (including, when no other process is attached, references leaked by dead
    /// processes), 2 could not run.
    Check {
        /// The pool's name.
        name: String,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
        /// The directory of the pool's files (default: `$SHMVAL_DIR`, else /dev/shm).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    match Cli::parse().cmd {
        Cmd::Check { name, json, dir } => check(&name, json, dir),
    }
}

fn check(name: &str, json: bool, dir: Option<PathBuf>) -> ExitCode {
    let mut opts = PoolOptions::new();
    if let Some(d) = dir {
        opts = opts.dir(d);
    }
    let pool = match Pool::open_with(name, &opts) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("shmval check: cannot open pool {name:?}: {e}");
            return ExitCode::from(2);
        }
    };
    let r = pool.check();
    let leaks = r.leaks();
    let clean = r.is_ok() && leaks.is_empty();
    if json {
        let mut v = serde_json::to_value(&r).expect("a report serialises");
        v["name"] = name.into();
        v["leaks"] = serde_json::to_value(leaks).expect("a report serialises");
        v["clean"] = clean.into();
        println!("{v}");
    } else {
        println!(
            "pool {name}: {} objects reachable ({} bytes), {} bytes in use, {} attached \
             process(es) including this one",
            r.objects, r.object_bytes, r.in_use, r.attached
        );
        for h in &r.held {
            let why = if leaks.is_empty() {
                "held by live processes, or leaked"
            } else {
                "LEAKED: no live process holds it"
            };
            println!(
                "  {} at {:#x}: count {}, {} reference(s) found in the pool ({why})",
                h.kind, h.offset, h.count, h.found
            );
        }
        for p in &r.problems {
            println!("  PROBLEM at {:#x}: {}", p.offset, p.what);
        }
        println!(
            "{}",
            if clean {
                "clean".to_string()
            } else {
                format!("{} problem(s), {} leak(s)", r.problems.len(), leaks.len())
            }
        );
    }
    ExitCode::from(if clean { 0 } else { 1 })
}
