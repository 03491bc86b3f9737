//! `shmval`: the operator's tool for shmval pools (logic in the library).
//!
//! ```text
//! shmval check NAME [--json] [--dir DIR]
//! shmval repair NAME [--json] [--dir DIR]
//! ```
//!
//! Exit codes: 0 clean (after the repair, for `repair`), 1 problems found (left), 2
//! could not run (no such pool, not a shmval pool, an incompatible layout, no
//! permission, other processes attached to a pool to repair).

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
    /// Repair a pool no other process is attached to: reference counts above the
    /// references found (held by dead processes) are lowered to them, the dead
    /// threads' cache slots given back; then the check again. Openers are refused
    /// meanwhile. Exit 0 clean afterwards, 1 problems left, 2 could not run (other
    /// processes attached, no such pool).
    Repair {
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
        Cmd::Repair { name, json, dir } => repair(&name, json, dir),
    }
}

fn open(what: &str, name: &str, dir: Option<PathBuf>) -> Option<Pool> {
    // The tool changes nothing at open: `check` only reads, and `repair` reports
    // all it does (a recovery at open would do part of it unreported).
    let mut opts = PoolOptions::new().recover_on_open(false);
    if let Some(d) = dir {
        opts = opts.dir(d);
    }
    Pool::open_with(name, &opts)
        .inspect_err(|e| eprintln!("shmval {what}: cannot open pool {name:?}: {e}"))
        .ok()
}

fn repair(name: &str, json: bool, dir: Option<PathBuf>) -> ExitCode {
    let Some(pool) = open("repair", name, dir) else {
        return ExitCode::from(2);
    };
    // SAFETY: this process holds no handle into the pool, only the `Pool`.
    let r = match unsafe { pool.repair() } {
        Ok(r) => r,
        Err(e) => {
            eprintln!("shmval repair: {name}: {e}");
            return ExitCode::from(2);
        }
    };
    let clean = r.after.is_ok() && r.after.leaks().is_empty() && r.after.unreachable.is_empty();
    if json {
        let mut v = serde_json::to_value(&r).expect("a report serialises");
        v["name"] = name.into();
        v["clean"] = clean.into();
        println!("{v}");
    } else {
        println!(
            "pool {name}: {} reference(s) of {} process(es) that are gone given back, {} dead \
             cache slot(s) given back, {} count(s) fixed, {} object(s) nothing referred to \
             freed ({} bytes), {} stray block(s) freed ({} bytes), {} empty slab(s) back to \
             the arena",
            r.reclaimed.references,
            r.reclaimed.ledgers,
            r.reclaimed.slots,
            r.fixed.len(),
            r.swept,
            r.swept_bytes,
            r.stray,
            r.stray_bytes,
            r.slabs_returned
        );
        for h in &r.fixed {
            println!(
                "  {} at {:#x}: count {} -> {}",
                h.kind, h.offset, h.count, h.found
            );
        }
        for p in &r.after.problems {
            println!("  PROBLEM left at {:#x}: {}", p.offset, p.what);
        }
        println!(
            "{}",
            if clean {
                "clean".to_string()
            } else {
                format!("{} problem(s) left", r.after.problems.len())
            }
        );
    }
    ExitCode::from(if clean { 0 } else { 1 })
}

fn check(name: &str, json: bool, dir: Option<PathBuf>) -> ExitCode {
    let Some(pool) = open("check", name, dir) else {
        return ExitCode::from(2);
    };
    let r = pool.check();
    let leaks = r.leaks();
    let clean = r.is_ok() && leaks.is_empty() && r.unreachable.is_empty();
    if json {
        let mut v = serde_json::to_value(&r).expect("a report serialises");
        v["name"] = name.into();
        v["leaks"] = serde_json::to_value(&leaks).expect("a report serialises");
        v["clean"] = clean.into();
        println!("{v}");
    } else {
        println!(
            "pool {name}: {} objects reachable ({} bytes), {} bytes in use, {} attached \
             process(es) including this one",
            r.objects, r.object_bytes, r.in_use, r.attached
        );
        if r.handles > 0 {
            println!(
                "  {} reference(s) held by handles of live processes",
                r.handles
            );
        }
        for h in r.held.iter().filter(|h| h.unaccounted() > 0) {
            println!(
                "  {} at {:#x}: count {}, {} reference(s) found in the pool, {} held by \
                 live handles: {} LEAKED",
                h.kind,
                h.offset,
                h.count,
                h.found,
                h.handles,
                h.unaccounted()
            );
        }
        if !r.unreachable.is_empty() {
            println!(
                "  {} object(s) nothing refers to, {} bytes: LEAKED (`shmval repair` frees \
                 them)",
                r.unreachable.len(),
                r.unreachable_bytes
            );
        }
        if r.stray_blocks > 0 {
            println!(
                "  {} block(s) that are no value's, {} bytes: your own (Pool::alloc), or lost \
                 by a death (`shmval repair` frees them in a pool where Pool::alloc was never used)",
                r.stray_blocks, r.stray_bytes
            );
        }
        if r.untracked > 0 {
            println!(
                "  {} reference(s) held by live processes without a ledger word: leaks \
                 cannot be told from them",
                r.untracked
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
                format!(
                    "{} problem(s), {} leak(s)",
                    r.problems.len(),
                    leaks.len() + r.unreachable.len()
                )
            }
        );
    }
    ExitCode::from(if clean { 0 } else { 1 })
}
