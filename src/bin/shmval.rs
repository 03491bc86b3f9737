//! `shmval`: the operator's tool for shmval pools (the logic is in the library:
//! `shmval::admin`, `Pool::check`/`repair`/`save`/`load`, the path getters).
//!
//! ```text
//! shmval info [NAME] [--all] [--json]      (alias: ls)
//! shmval clean [NAME...] [--force] [--dry-run] [--json]
//! shmval create NAME SIZE [--mode 600]     shmval destroy NAME
//! shmval stat NAME [--json]                shmval pipes NAME [--json]
//! shmval dump NAME [PATH] [--json]         shmval get NAME PATH [--json]
//! shmval set NAME PATH VALUE               shmval rm NAME PATH
//! shmval watch NAME [--interval 1] [--count N]
//! shmval save NAME FILE                    shmval load FILE NAME [--size SIZE]
//! shmval check NAME [--json]               shmval repair NAME [--json]
//! ```
//! Every command takes `--dir DIR` (default `$SHMVAL_DIR`, else `/dev/shm`).
//!
//! Exit codes: 0 done (clean, for `check`/`repair`); 1 done, but problems found or
//! left (`check`, `repair`), pools refused (`clean`), a path not found (`get`,
//! `rm`); 2 could not run (bad arguments, no such pool, not a shmval pool, an
//! incompatible layout, no permission, other processes attached to a pool to
//! repair).
//!
//! `info`, `clean`, `stat` and `check` change nothing: `info` and `clean` read the
//! files without attaching; the others attach without the recovery an open would
//! otherwise run (`repair` reports all it does).

use clap::{Parser, Subcommand};
use shmval::{admin, Pool, PoolOptions, Val};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

#[path = "shmval/live.rs"]
mod live;
use live::{pipes, stat, watch};

#[derive(Parser)]
#[command(
    name = "shmval",
    version,
    about = "See, clean, check, repair, dump, save and restore shmval shared-memory pools"
)]
struct Cli {
    /// The directory of the pools' files (default: `$SHMVAL_DIR`, else /dev/shm).
    #[arg(long, global = true)]
    dir: Option<PathBuf>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// The file system, then each pool: size, use, creator, attached processes,
    /// pipes, owner, mode, creation time, layout version; one pool in full with
    /// NAME. Read without attaching.
    #[command(visible_alias = "ls")]
    Info {
        /// One pool.
        name: Option<String>,
        /// Every other file of the directory too, typed "other".
        #[arg(long)]
        all: bool,
        /// JSON: {"fs": {...}, "pools": [...], "other": [...]} (one pool: its object).
        #[arg(long)]
        json: bool,
    },
    /// Remove pools: with no NAME every orphaned pool (creator dead, no live process
    /// attached), both files; a named pool in use is refused unless --force.
    Clean {
        /// Pools to remove.
        names: Vec<String>,
        /// Remove named pools even while processes use them (they keep their
        /// mappings; the name is free again).
        #[arg(long)]
        force: bool,
        /// Print what would be removed, remove nothing.
        #[arg(long)]
        dry_run: bool,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Create a pool (SIZE like 64M, 1G).
    Create {
        /// The pool's name.
        name: String,
        /// Its size: bytes, or K, M, G, T.
        size: String,
        /// Permission bits, octal (default 600).
        #[arg(long, default_value = "600")]
        mode: String,
        /// Where its memory lives: posix (files in the directory), sysv (System V
        /// shared memory, see `ipcs -m`), file:DIR (files in DIR: a disk, hugetlbfs).
        #[arg(long, default_value = "posix")]
        backend: String,
        /// Let the pool grow as it fills, up to this size (bytes, or K, M, G, T),
        /// while processes are attached (not with sysv).
        #[arg(long)]
        max_size: Option<String>,
    },
    /// Remove a pool's files, whatever its state.
    Destroy {
        /// The pool's name.
        name: String,
    },
    /// The allocator: use by size class, slabs, cache slots, fragmentation.
    Stat {
        /// The pool's name.
        name: String,
        /// JSON.
        #[arg(long)]
        json: bool,
    },
    /// Each pipe and broadcast: length, capacity, sent, received, closed, sleeping
    /// waiters, owners, subscribers and their lag.
    Pipes {
        /// The pool's name.
        name: String,
        /// JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print the values at PATH (default: the whole root table) as a Python repr,
    /// or JSON.
    Dump {
        /// The pool's name.
        name: String,
        /// Like /config/db (default /).
        path: Option<String>,
        /// JSON instead of a Python repr.
        #[arg(long)]
        json: bool,
    },
    /// Print the value at PATH.
    Get {
        /// The pool's name.
        name: String,
        /// Like /config/db/port.
        path: String,
        /// JSON instead of a Python repr.
        #[arg(long)]
        json: bool,
    },
    /// Store VALUE (a Python literal or JSON) at PATH.
    Set {
        /// The pool's name.
        name: String,
        /// Like /config/db/port.
        path: String,
        /// Like 5432, 'text', [1, 2.5], {"a": true}.
        value: String,
    },
    /// Remove the key PATH names from its dict.
    Rm {
        /// The pool's name.
        name: String,
        /// Like /config/db/port.
        path: String,
    },
    /// Refreshing pool use and per-pipe rates, like top (Ctrl-C ends it).
    Watch {
        /// The pool's name.
        name: String,
        /// Seconds between refreshes.
        #[arg(long, default_value_t = 1.0)]
        interval: f64,
        /// Refreshes, then end (default: until interrupted).
        #[arg(long)]
        count: Option<u64>,
    },
    /// Save the root table's values to FILE (a snapshot).
    Save {
        /// The pool's name.
        name: String,
        /// The snapshot file.
        file: PathBuf,
    },
    /// Create pool NAME from the snapshot FILE.
    Load {
        /// The snapshot file.
        file: PathBuf,
        /// The new pool's name.
        name: String,
        /// Its size (default: the saved pool's).
        #[arg(long)]
        size: Option<String>,
    },
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
    },
    /// Repair a pool no other process is attached to: what dead processes held
    /// given back, counts lowered to the references found, what nothing refers to
    /// freed, empty slabs back to the arena; then the check again. Openers wait
    /// meanwhile. Exit 0 clean afterwards, 1 problems left, 2 could not run (other
    /// processes attached, no such pool).
    Repair {
        /// The pool's name.
        name: String,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// The directory option.
struct Dir(Option<PathBuf>);

impl Dir {
    fn opts(&self) -> PoolOptions {
        let o = PoolOptions::new();
        match &self.0 {
            Some(d) => o.dir(d),
            None => o,
        }
    }
    fn path(&self) -> PathBuf {
        self.opts().get_dir()
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let dir = Dir(cli.dir);
    match cli.cmd {
        Cmd::Info { name, all, json } => info(name.as_deref(), all, json, &dir),
        Cmd::Clean {
            names,
            force,
            dry_run,
            json,
        } => clean(&names, force, dry_run, json, &dir),
        Cmd::Create {
            name,
            size,
            mode,
            backend,
            max_size,
        } => create(&name, &size, &mode, &backend, max_size.as_deref(), &dir),
        Cmd::Destroy { name } => destroy(&name, &dir),
        Cmd::Stat { name, json } => stat(&name, json, &dir),
        Cmd::Pipes { name, json } => pipes(&name, json, &dir),
        Cmd::Dump { name, path, json } => get(&name, path.as_deref().unwrap_or("/"), json, &dir),
        Cmd::Get { name, path, json } => get(&name, &path, json, &dir),
        Cmd::Set { name, path, value } => set(&name, &path, &value, &dir),
        Cmd::Rm { name, path } => rm(&name, &path, &dir),
        Cmd::Watch {
            name,
            interval,
            count,
        } => watch(&name, interval, count, &dir),
        Cmd::Save { name, file } => save(&name, &file, &dir),
        Cmd::Load { file, name, size } => load(&file, &name, size.as_deref(), &dir),
        Cmd::Check { name, json } => check(&name, json, &dir),
        Cmd::Repair { name, json } => repair(&name, json, &dir),
    }
}

/// Opens a pool without the recovery an open runs after deaths (the tool changes
/// nothing it does not report).
fn open(what: &str, name: &str, dir: &Dir) -> Option<Pool> {
    Pool::open_with(name, &dir.opts().recover_on_open(false))
        .inspect_err(|e| eprintln!("shmval {what}: cannot open pool {name:?}: {e}"))
        .ok()
}

fn human(n: u64) -> String {
    const U: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < U.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", U[u])
    }
}

fn json_out(v: &impl serde::Serialize) {
    println!(
        "{}",
        serde_json::to_string_pretty(v).expect("a report serialises")
    );
}

fn info(name: Option<&str>, all: bool, json: bool, dir: &Dir) -> ExitCode {
    let d = dir.path();
    if let Some(name) = name {
        return match admin::inspect(&d, name) {
            Ok(p) if json => {
                json_out(&p);
                ExitCode::SUCCESS
            }
            Ok(p) => {
                print_pool_full(&p);
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("shmval info: {e}");
                ExitCode::from(2)
            }
        };
    }
    let l = match admin::list(&d, all) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("shmval info: cannot read {}: {e}", d.display());
            return ExitCode::from(2);
        }
    };
    if json {
        json_out(&l);
        return ExitCode::SUCCESS;
    }
    println!(
        "{}: {} of {} free",
        l.fs.dir.display(),
        human(l.fs.free),
        human(l.fs.size)
    );
    if l.pools.is_empty() {
        println!("no shmval pools");
    } else {
        println!(
            "{:<24} {:>10} {:>10} {:>6} {:>8} {:>5} {:>6} {:<10} {:<8} {:<20} {:<7} STATE",
            "NAME",
            "SIZE",
            "USED",
            "USE%",
            "CREATOR",
            "ATT",
            "PIPES",
            "USER",
            "MODE",
            "CREATED",
            "BACKEND"
        );
    }
    for p in &l.pools {
        let state = match (p.state, p.orphaned) {
            ("ready", true) => "orphaned".to_string(),
            ("ready", false) => "live".to_string(),
            (s, _) => s.to_string(),
        };
        println!(
            "{:<24} {:>10} {:>10} {:>6} {:>8} {:>5} {:>6} {:<10} {:<8} {:<20} {:<7} {}",
            p.name,
            human(p.size),
            p.used.map_or("-".into(), human),
            p.used_pct.map_or("-".into(), |u| format!("{u:.1}")),
            format!(
                "{}{}",
                p.creator_pid,
                if p.creator_alive { "" } else { "†" }
            ),
            p.attached_count,
            p.pipes
                .zip(p.broadcasts)
                .map_or("-".into(), |(a, b)| format!("{a}+{b}")),
            p.user.clone().unwrap_or_else(|| p.uid.to_string()),
            p.mode,
            p.created.as_deref().unwrap_or("-"),
            p.backend,
            state
        );
    }
    for u in &l.unlinked {
        println!(
            "{:<24} UNLINKED: its files were removed while pids {:?} still map it (they go \
             on; no new process can open it)",
            u.name, u.pids
        );
    }
    for w in &l.warnings {
        println!("warning: {w}");
    }
    for o in &l.other {
        println!(
            "{:<24} {:>10} {:>10} {:>6} {:>8} {:>5} {:>6} {:<10} {:<8} {:<20} {:<7} other",
            o.name,
            human(o.size),
            "-",
            "-",
            "-",
            "-",
            "-",
            o.user.clone().unwrap_or_else(|| o.uid.to_string()),
            o.mode,
            "-",
            "-"
        );
    }
    ExitCode::SUCCESS
}

fn print_pool_full(p: &admin::PoolSummary) {
    println!("pool {}", p.name);
    println!(
        "  state          {}{}",
        p.state,
        if p.orphaned { " (orphaned)" } else { "" }
    );
    if let Some(why) = &p.problem {
        println!("  problem        {why}");
    }
    println!("  size           {} ({} bytes)", human(p.size), p.size);
    if p.max_size > p.size {
        println!(
            "  grows to       {} ({} bytes)",
            human(p.max_size),
            p.max_size
        );
    }
    println!(
        "  files          {} ({} allocated)",
        human(p.file_size),
        human(p.allocated)
    );
    if let (Some(u), Some(pct), Some(hw)) = (p.used, p.used_pct, p.high_water) {
        println!(
            "  in use         {} ({pct:.1}%), high water {}",
            human(u),
            human(hw)
        );
    }
    println!(
        "  creator        pid {} ({})",
        p.creator_pid,
        if p.creator_alive { "alive" } else { "gone" }
    );
    println!("  attached       {} {:?}", p.attached_count, p.attached);
    if p.dead > 0 {
        println!("  died attached  {} (reclaimed by the next opener)", p.dead);
    }
    if let (Some(a), Some(b)) = (p.pipes, p.broadcasts) {
        println!("  pipes          {a}, broadcasts {b}");
    }
    println!(
        "  owner          {}:{} mode {}",
        p.user.clone().unwrap_or_else(|| p.uid.to_string()),
        p.group.clone().unwrap_or_else(|| p.gid.to_string()),
        p.mode
    );
    println!("  created        {}", p.created.as_deref().unwrap_or("-"));
    println!(
        "  backend        {}{}",
        p.backend,
        p.sysv_key
            .as_ref()
            .map_or(String::new(), |k| format!(" (key {k}: ipcs -m)"))
    );
    println!(
        "  layout         version {}{}",
        p.layout_version,
        if p.compatible {
            ""
        } else {
            " (incompatible with this build)"
        }
    );
}

fn clean(names: &[String], force: bool, dry_run: bool, json: bool, dir: &Dir) -> ExitCode {
    let r = admin::clean(&dir.path(), names, force, dry_run);
    if json {
        json_out(&r);
    } else {
        for (n, bytes) in &r.removed {
            println!(
                "{} {n} ({})",
                if dry_run { "would remove" } else { "removed" },
                human(*bytes)
            );
        }
        for (n, why) in &r.refused {
            println!("left {n}: {why}");
        }
        if r.removed.is_empty() && r.refused.is_empty() {
            println!("nothing to clean");
        }
    }
    ExitCode::from(if r.refused.is_empty() { 0 } else { 1 })
}

fn create(
    name: &str,
    size: &str,
    mode: &str,
    backend: &str,
    max_size: Option<&str>,
    dir: &Dir,
) -> ExitCode {
    let backend = match backend {
        "posix" => shmval::Backend::Posix,
        "sysv" => shmval::Backend::SysV,
        b if b.starts_with("file:") && b.len() > 5 => shmval::Backend::File(PathBuf::from(&b[5..])),
        "memfd" => {
            eprintln!(
                "shmval create: a memfd pool is anonymous and lives with its processes: make \
                 it in the program (Backend::Memfd) and pass it with Pool::send_to"
            );
            return ExitCode::from(2);
        }
        b => {
            eprintln!("shmval create: unknown backend {b:?} (posix, sysv, file:DIR)");
            return ExitCode::from(2);
        }
    };
    let size = match admin::parse_size(size) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("shmval create: {e}");
            return ExitCode::from(2);
        }
    };
    let Ok(mode) = u32::from_str_radix(mode.trim_start_matches("0o"), 8) else {
        eprintln!("shmval create: mode {mode:?} is not octal (like 600 or 660)");
        return ExitCode::from(2);
    };
    let mut opts = dir.opts().mode(mode).backend(backend);
    if let Some(m) = max_size {
        match admin::parse_size(m) {
            Ok(m) => opts = opts.max_size(m),
            Err(e) => {
                eprintln!("shmval create: --max-size: {e}");
                return ExitCode::from(2);
            }
        }
    }
    match Pool::create_with(name, size, &opts) {
        Ok(p) => {
            let grows = if p.max_size() > p.size() {
                format!(", grows to {}", human(p.max_size()))
            } else {
                String::new()
            };
            println!(
                "created {name}: {} ({} bytes){grows}, mode {mode:04o}",
                human(p.size()),
                p.size()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("shmval create: {e}");
            ExitCode::from(2)
        }
    }
}

fn destroy(name: &str, dir: &Dir) -> ExitCode {
    match Pool::destroy_with(name, &dir.opts()) {
        Ok(()) => {
            println!("destroyed {name}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("shmval destroy: {e}");
            ExitCode::from(2)
        }
    }
}

fn get(name: &str, path: &str, json: bool, dir: &Dir) -> ExitCode {
    let Some(pool) = open("get", name, dir) else {
        return ExitCode::from(2);
    };
    let v = match pool.get_path(path).and_then(|v| Ok(v.to_val()?)) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("shmval: {name}: {e}");
            return ExitCode::from(match e {
                shmval::PathError::Syntax(_) => 2,
                _ => 1,
            });
        }
    };
    if json {
        match serde_json::to_string_pretty(&v) {
            Ok(s) => println!("{s}"),
            Err(e) => {
                eprintln!("shmval: {name}{path}: no JSON for this value ({e}); the repr is:\n{v}");
                return ExitCode::from(1);
            }
        }
    } else {
        println!("{v}");
    }
    ExitCode::SUCCESS
}

fn set(name: &str, path: &str, value: &str, dir: &Dir) -> ExitCode {
    let v = match Val::from_literal(value) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("shmval set: {e}");
            return ExitCode::from(2);
        }
    };
    let Some(pool) = open("set", name, dir) else {
        return ExitCode::from(2);
    };
    match pool.set_path(path, &v) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("shmval set: {name}: {e}");
            ExitCode::from(1)
        }
    }
}

fn rm(name: &str, path: &str, dir: &Dir) -> ExitCode {
    let Some(pool) = open("rm", name, dir) else {
        return ExitCode::from(2);
    };
    match pool.remove_path(path) {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("shmval rm: {name}: {e}");
            ExitCode::from(1)
        }
    }
}

fn save(name: &str, file: &std::path::Path, dir: &Dir) -> ExitCode {
    let Some(pool) = open("save", name, dir) else {
        return ExitCode::from(2);
    };
    let t = Instant::now();
    match pool.save(file) {
        Ok(n) => {
            println!(
                "saved {name} to {} ({}, {:.1?})",
                file.display(),
                human(n),
                t.elapsed()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("shmval save: {e}");
            ExitCode::from(2)
        }
    }
}

fn load(file: &std::path::Path, name: &str, size: Option<&str>, dir: &Dir) -> ExitCode {
    let size = match size.map(admin::parse_size).transpose() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("shmval load: {e}");
            return ExitCode::from(2);
        }
    };
    let t = Instant::now();
    match Pool::load_sized(file, name, size, &dir.opts()) {
        Ok(p) => {
            println!(
                "loaded {} into {name} ({}, {} in use, {:.1?})",
                file.display(),
                human(p.size()),
                human(p.stats().in_use),
                t.elapsed()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("shmval load: {e}");
            ExitCode::from(2)
        }
    }
}

fn repair(name: &str, json: bool, dir: &Dir) -> ExitCode {
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

fn check(name: &str, json: bool, dir: &Dir) -> ExitCode {
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
