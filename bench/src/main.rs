//! `shmval-bench`: shmval measured side by side with its peers in one run.
//!
//! ```text
//! cargo run --release -p shmval-bench -- [all|alloc|values|segments|pipes|profile-…] [--quick] [--no-write]
//! cargo run --release -p shmval-bench -- --help
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

/// shmval measured side by side with its peers in one run; the table is printed
/// and written into docs/PERFORMANCE.md.
#[derive(clap::Parser, Debug)]
#[command(name = "shmval-bench")]
struct Cli {
    /// The scenarios to run, or one workload alone for a profiler.
    #[arg(value_enum, default_value_t = What::All)]
    what: What,
    /// Fewer repetitions and smaller sizes (a smoke run); nothing is written.
    #[arg(long)]
    quick: bool,
    /// Print the table without rewriting docs/PERFORMANCE.md.
    #[arg(long)]
    no_write: bool,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum What {
    /// Every scenario.
    All,
    /// Allocation scenarios.
    Alloc,
    /// Value scenarios (tables, int keys).
    Values,
    /// Pool create and open.
    Segments,
    /// Pipes: ping-pong, one-way, backpressure, loaded machine, Tab messages.
    Pipes,
    /// The allocation workload alone (for perf/callgrind).
    Profile,
    /// The 4-key Tab build alone.
    ProfileTab,
    /// The value workloads alone.
    ProfileValues,
    /// 4-key Tabs built in place (`shm_tab!`) alone.
    ProfileBuild,
    /// Int keys inserted and looked up in one lock() transaction.
    ProfileIntkeys,
    /// Send+receive pairs in one process.
    ProfilePipe,
    /// Ping-pong across two processes alone.
    ProfilePingpong,
    /// One-way transfer alone: raw ring and pipe, alternating.
    ProfileOneway,
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // The other side of a measurement (internal, not for users).
    if let Some(mode @ ("pipe-child" | "worker")) = args.first().map(String::as_str) {
        // It dies with the run (an interrupted run must not leave children spinning
        // on a pool that is gone).
        let _ = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL);
        if mode == "pipe-child" {
            pipes::child(&args[1..]);
        } else {
            alloc::worker(&args[1..]);
        }
        return;
    }
    let cli = <Cli as clap::Parser>::parse();
    let mut report = Report::new(cli.quick);
    match cli.what {
        What::Profile => return alloc::profile(),
        What::ProfileTab => return values::profile_tab(),
        What::ProfileValues => return values::profile(),
        What::ProfileBuild => return values::profile_build(),
        What::ProfileIntkeys => return values::profile_intkeys(),
        What::ProfilePipe => return pipes::profile(),
        What::ProfilePingpong => return pipes::profile_pingpong(),
        What::ProfileOneway => return pipes::profile_oneway(),
        What::All => {
            alloc::run(&mut report);
            values::run(&mut report);
            segments::run(&mut report);
            pipes::run(&mut report);
        }
        What::Alloc => alloc::run(&mut report),
        What::Values => values::run(&mut report),
        What::Segments => segments::run(&mut report),
        What::Pipes => pipes::run(&mut report),
    }
    let table = report.markdown();
    println!("{table}");
    // A run of some scenarios only (SHMVAL_BENCH_ONLY) would replace the whole
    // table with its few rows: printed, not written.
    let partial = std::env::var_os("SHMVAL_BENCH_ONLY").is_some();
    if partial && !cli.no_write {
        eprintln!("SHMVAL_BENCH_ONLY is set: docs/PERFORMANCE.md left as it is");
    }
    if !cli.no_write && !cli.quick && !partial {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/PERFORMANCE.md");
        harness::write_between_markers(path, &table).expect("write docs/PERFORMANCE.md");
        eprintln!("wrote {path}");
    }
    let _ = Row::default;
}
