//! What the pipeline examples share: arguments in the spirit of PicklingTools'
//! examples, Ctrl-C handling, a system-wide clock, percentiles.
#![allow(dead_code)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// The options every role of the pipeline takes (clap: a misspelled or unknown option
/// is an error, `--help` lists them).
#[derive(clap::Parser, Debug, Clone)]
#[command(
    about = "the server -> middle -> client pipeline of shmval (PicklingTools' SHMMain/ServerSide/ClientSide)"
)]
pub struct Args {
    /// Pool name.
    #[arg(long, default_value = "shmval-pipeline")]
    pub pool: String,
    /// Pool size, e.g. 64M.
    #[arg(long, default_value = "64M", value_parser = parse_size)]
    pub size: u64,
    /// The server -> middle pipe.
    #[arg(long, default_value = "raw")]
    pub raw: String,
    /// The middle -> client pipe.
    #[arg(long, default_value = "cooked")]
    pub cooked: String,
    /// Values each pipe holds.
    #[arg(long, default_value = "1024", value_parser = parse_size)]
    pub capacity: u64,
    /// Values the server sends.
    #[arg(long, default_value = "200000", value_parser = parse_size)]
    pub count: u64,
    /// f64 elements in each value.
    #[arg(long, default_value = "8", value_parser = parse_size)]
    pub payload: u64,
    /// Seconds to wait for the pool and the pipes.
    #[arg(long, default_value = "10")]
    pub wait: u64,
    /// Leave the pool in /dev/shm at the end.
    #[arg(long)]
    pub keep: bool,
}

impl Args {
    /// Parses `args` (without the program name) as role `role`; prints the help or
    /// the error and exits on `--help` or a bad option.
    pub fn parse(role: &str, args: impl IntoIterator<Item = String>) -> Args {
        <Args as clap::Parser>::parse_from(std::iter::once(role.to_string()).chain(args))
    }

    /// How long to wait for the pool and the pipes.
    pub fn wait(&self) -> Duration {
        Duration::from_secs(self.wait)
    }
}

/// A role's entry point: its arguments in, an error out.
pub type Role = fn(Vec<String>) -> Result<(), Box<dyn std::error::Error>>;

/// The `main` of a role: runs it with the command line, reports an error and exits 1.
pub fn main_of(role: &str, run: Role) {
    if let Err(e) = run(std::env::args().skip(1).collect()) {
        eprintln!("{role}: {e}");
        std::process::exit(1);
    }
}

/// `123`, `64M`, `1G`, `16k`, `1_000_000`.
fn parse_size(s: &str) -> Result<u64, String> {
    parse_size_opt(s).ok_or_else(|| format!("not a size: {s:?} (e.g. 1000, 16k, 64M, 1G)"))
}

fn parse_size_opt(s: &str) -> Option<u64> {
    let s = s.replace('_', "");
    let (num, mul) = match s.chars().last()? {
        'k' | 'K' => (&s[..s.len() - 1], 1u64 << 10),
        'm' | 'M' => (&s[..s.len() - 1], 1 << 20),
        'g' | 'G' => (&s[..s.len() - 1], 1 << 30),
        _ => (&s[..], 1),
    };
    num.parse::<u64>().ok()?.checked_mul(mul)
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: nix::libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

/// Ctrl-C (SIGINT) and SIGTERM set a flag the loops check; nothing is torn down in
/// the handler.
pub fn stop_on_ctrl_c() {
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
    let act = SigAction::new(
        SigHandler::Handler(on_signal),
        SaFlags::empty(),
        SigSet::empty(),
    );
    for sig in [Signal::SIGINT, Signal::SIGTERM] {
        // SAFETY: the handler only stores to an atomic (async-signal-safe).
        unsafe { sigaction(sig, &act) }.expect("install signal handler");
    }
}

/// Whether Ctrl-C was pressed.
pub fn stopping() -> bool {
    STOP.load(Ordering::Relaxed)
}

/// CLOCK_MONOTONIC in ns: one clock for every process on the host, so a time taken
/// in one process can be compared in another.
pub fn now_ns() -> i64 {
    let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).expect("clock");
    t.tv_sec() * 1_000_000_000 + t.tv_nsec()
}

/// The `p`-th percentile (0..=100) of sorted samples.
pub fn percentile(sorted: &[i64], p: f64) -> i64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() - 1) as f64 * p / 100.0).round() as usize;
    sorted[i]
}

/// `1.5 µs`, `230 ns`, `12.0 ms`.
pub fn human_ns(ns: i64) -> String {
    match ns {
        n if n < 10_000 => format!("{n} ns"),
        n if n < 10_000_000 => format!("{:.1} µs", n as f64 / 1e3),
        n => format!("{:.1} ms", n as f64 / 1e6),
    }
}
