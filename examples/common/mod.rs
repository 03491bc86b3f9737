//! What the pipeline examples share: arguments in the spirit of PicklingTools'
//! examples, Ctrl-C handling, a system-wide clock, percentiles.
#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// `--key value` and `--flag` arguments with defaults.
pub struct Args(HashMap<String, String>);

impl Args {
    /// Parses `args` (without the program name).
    pub fn parse(args: impl IntoIterator<Item = String>) -> Args {
        let mut map = HashMap::new();
        let mut it = args.into_iter().peekable();
        while let Some(a) = it.next() {
            let Some(key) = a.strip_prefix("--") else {
                eprintln!("ignoring argument {a:?}");
                continue;
            };
            let value = match it.peek() {
                Some(v) if !v.starts_with("--") => it.next().unwrap_or_default(),
                _ => "true".to_string(),
            };
            map.insert(key.to_string(), value);
        }
        Args(map)
    }

    /// The arguments again, for a child process.
    pub fn to_vec(&self) -> Vec<String> {
        self.0
            .iter()
            .flat_map(|(k, v)| [format!("--{k}"), v.clone()])
            .collect()
    }

    pub fn str(&self, key: &str, default: &str) -> String {
        self.0
            .get(key)
            .cloned()
            .unwrap_or_else(|| default.to_string())
    }

    pub fn num(&self, key: &str, default: u64) -> u64 {
        self.0.get(key).map_or(default, |v| {
            parse_size(v).unwrap_or_else(|| {
                eprintln!("--{key}: not a number: {v:?}");
                std::process::exit(2)
            })
        })
    }

    pub fn flag(&self, key: &str) -> bool {
        self.0.get(key).is_some_and(|v| v != "false")
    }

    pub fn pool(&self) -> String {
        self.str("pool", "shmval-pipeline")
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
fn parse_size(s: &str) -> Option<u64> {
    let s = s.replace('_', "");
    let (num, mul) = match s.chars().last()? {
        'k' | 'K' => (&s[..s.len() - 1], 1u64 << 10),
        'm' | 'M' => (&s[..s.len() - 1], 1 << 20),
        'g' | 'G' => (&s[..s.len() - 1], 1 << 30),
        _ => (&s[..], 1),
    };
    num.parse::<u64>().ok()?.checked_mul(mul)
}

pub const USAGE: &str = "\
options (all optional):
  --pool NAME        pool name                       (shmval-pipeline)
  --size BYTES       pool size, e.g. 64M             (64M)
  --raw PIPE         server -> middle pipe           (raw)
  --cooked PIPE      middle -> client pipe           (cooked)
  --capacity N       values each pipe holds          (1024)
  --count N          values the server sends         (200000)
  --payload N        f64 elements in each value      (8)
  --wait SECS        how long to wait for the pool and pipes (10)
  --keep             leave the pool in /dev/shm at the end";

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

/// How long to wait for the pool and the pipes.
pub fn wait(args: &Args) -> Duration {
    Duration::from_secs(args.num("wait", 10))
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
