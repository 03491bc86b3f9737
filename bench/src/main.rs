//! `shmval-bench`: shmval measured side by side with its peers in one run.
//!
//! ```text
//! cargo run --release -p shmval-bench -- all|alloc|values|segments|pipes [--quick] [--no-write]
//! ```
//! Every scenario runs its candidates interleaved (A B A B …) so machine drift hits
//! all of them, repeats each several times, checks its own result, and reports
//! median and min–max. The table is printed and written into `docs/PERFORMANCE.md`
//! between the `bench:begin`/`bench:end` markers.

mod alloc;
mod harness;
mod pipes;
mod segments;
mod values;

use harness::{Report, Row};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if matches!(
        args.first().map(String::as_str),
        Some("pipe-child" | "worker")
    ) {
        // The other side of a measurement dies with the run (an interrupted run
        // must not leave children spinning on a pool that is gone).
        let _ = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL);
    }
    if args.first().map(String::as_str) == Some("profile") {
        alloc::profile();
        return;
    }
    if args.first().map(String::as_str) == Some("profile-tab") {
        values::profile_tab();
        return;
    }
    if args.first().map(String::as_str) == Some("profile-values") {
        values::profile();
        return;
    }
    if args.first().map(String::as_str) == Some("profile-pipe") {
        pipes::profile();
        return;
    }
    if args.first().map(String::as_str) == Some("profile-pingpong") {
        pipes::profile_pingpong();
        return;
    }
    if args.first().map(String::as_str) == Some("profile-oneway") {
        pipes::profile_oneway();
        return;
    }
    if args.first().map(String::as_str) == Some("pipe-child") {
        pipes::child(&args[1..]);
        return;
    }
    if args.first().map(String::as_str) == Some("worker") {
        alloc::worker(&args[1..]);
        return;
    }
    let quick = args.iter().any(|a| a == "--quick");
    let write = !args.iter().any(|a| a == "--no-write") && !quick;
    let what = args
        .iter()
        .find(|a| !a.starts_with("--"))
        .map(String::as_str)
        .unwrap_or("all");
    let mut report = Report::new(quick);
    match what {
        "all" => {
            alloc::run(&mut report);
            values::run(&mut report);
            segments::run(&mut report);
            pipes::run(&mut report);
        }
        "pipes" => pipes::run(&mut report),
        "values" => values::run(&mut report),
        "alloc" => alloc::run(&mut report),
        "segments" => segments::run(&mut report),
        other => {
            eprintln!("unknown scenario {other:?}; expected all, alloc, values, segments or pipes");
            std::process::exit(2);
        }
    }
    let table = report.markdown();
    println!("{table}");
    if write {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/PERFORMANCE.md");
        harness::write_between_markers(path, &table).expect("write docs/PERFORMANCE.md");
        eprintln!("wrote {path}");
    }
    let _ = Row::default;
}
