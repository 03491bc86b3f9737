//! Interleaved repetitions, medians, the markdown table, the machine description.

use std::time::Instant;

/// One line of the table.
#[derive(Debug, Default, Clone)]
pub struct Row {
    pub scenario: String,
    pub candidate: String,
    pub unit: &'static str,
    pub median: f64,
    pub min: f64,
    pub max: f64,
    /// Against the reference row, if any: the median, lowest and highest of this
    /// row's value divided by the reference's in the same repetition (candidates run
    /// back to back, so each quotient compares like with like on a VM whose speed
    /// drifts between repetitions), and the reference's name.
    pub ratio: Option<(f64, f64, f64, String)>,
    pub target: String,
}

pub struct Report {
    pub quick: bool,
    pub rows: Vec<Row>,
}

/// A candidate: a name and a closure measuring one repetition, returning the value
/// in the scenario's unit.
pub type Candidate<'a> = (&'a str, Box<dyn FnMut() -> f64 + 'a>);

impl Report {
    pub fn new(quick: bool) -> Self {
        Report {
            quick,
            rows: Vec::new(),
        }
    }

    pub fn reps(&self, full: usize) -> usize {
        if self.quick {
            3
        } else {
            full
        }
    }

    /// Runs `candidates` interleaved `reps` times; the first is shmval's, ratios are
    /// against `reference` (an index into `candidates`).
    pub fn compare(
        &mut self,
        scenario: &str,
        unit: &'static str,
        reps: usize,
        reference: usize,
        targets: &[&str],
        mut candidates: Vec<Candidate<'_>>,
    ) {
        // `SHMVAL_BENCH_ONLY=text` runs only the scenarios whose title contains it.
        if std::env::var("SHMVAL_BENCH_ONLY").is_ok_and(|only| !scenario.contains(&only)) {
            return;
        }
        let mut samples: Vec<Vec<f64>> = vec![Vec::new(); candidates.len()];
        for _ in 0..reps {
            for (i, (_, f)) in candidates.iter_mut().enumerate() {
                samples[i].push(f());
            }
        }
        let med: Vec<f64> = samples.iter().map(|s| median(&mut s.clone())).collect();
        for (i, (name, _)) in candidates.iter().enumerate() {
            let s = &samples[i];
            self.rows.push(Row {
                scenario: scenario.to_owned(),
                candidate: (*name).to_owned(),
                unit,
                median: med[i],
                min: s.iter().cloned().fold(f64::INFINITY, f64::min),
                max: s.iter().cloned().fold(0.0, f64::max),
                ratio: (i != reference).then(|| {
                    let mut q: Vec<f64> = s
                        .iter()
                        .zip(&samples[reference])
                        .map(|(a, b)| a / b)
                        .collect();
                    let (lo, hi) = (
                        q.iter().cloned().fold(f64::INFINITY, f64::min),
                        q.iter().cloned().fold(0.0, f64::max),
                    );
                    (median(&mut q), lo, hi, candidates[reference].0.to_owned())
                }),
                target: targets.get(i).copied().unwrap_or("").to_owned(),
            });
        }
    }

    pub fn markdown(&self) -> String {
        let mut s = String::new();
        s.push_str(&format!(
            "Measured{} on {}.\n\n",
            if self.quick { " (quick run)" } else { "" },
            machine()
        ));
        s.push_str("| scenario | candidate | median | min – max | ratio | target |\n|---|---|---|---|---|---|\n");
        for r in &self.rows {
            let ratio = r.ratio.as_ref().map_or("—".to_owned(), |(x, lo, hi, of)| {
                format!("{x:.2}× {of} ({lo:.2}–{hi:.2})")
            });
            s.push_str(&format!(
                "| {} | {} | {} {} | {} – {} | {} | {} |\n",
                r.scenario,
                r.candidate,
                fmt(r.median),
                r.unit,
                fmt(r.min),
                fmt(r.max),
                ratio,
                r.target
            ));
        }
        s
    }
}

fn fmt(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

pub fn median(s: &mut [f64]) -> f64 {
    s.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

/// Nanoseconds per operation of `ops` operations run by `f`.
pub fn ns_per_op(ops: u64, f: impl FnOnce()) -> f64 {
    let t = Instant::now();
    f();
    t.elapsed().as_nanos() as f64 / ops as f64
}

pub fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("{cores} cores, {cpu}, Linux {}", kernel.trim())
}

pub fn write_between_markers(path: &str, table: &str) -> std::io::Result<()> {
    let (begin, end) = ("<!-- bench:begin -->", "<!-- bench:end -->");
    let old = std::fs::read_to_string(path)
        .unwrap_or_else(|_| format!("# Performance\n\n{begin}\n{end}\n"));
    let new = match (old.find(begin), old.find(end)) {
        (Some(b), Some(e)) if b < e => format!("{}{begin}\n{table}{}", &old[..b], &old[e..]),
        _ => format!("{old}\n{begin}\n{table}{end}\n"),
    };
    std::fs::write(path, new)
}

/// A C++ peer program `bench/setup` built into `target/peers/`, if it is there.
pub fn peer(name: &str) -> Option<std::path::PathBuf> {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/peers")
        .join(name);
    p.exists().then_some(p)
}

/// Runs a peer program with `n`; it prints "`<figure> <checksum>`": checks the
/// checksum against `want` and returns the figure.
pub fn run_peer(peer: &std::path::Path, n: u64, want: &str) -> f64 {
    run_peer_args(peer, &[n], want)
}

/// [`run_peer`] with several arguments.
pub fn run_peer_args(peer: &std::path::Path, args: &[u64], want: &str) -> f64 {
    let out = std::process::Command::new(peer)
        .args(args.iter().map(u64::to_string))
        .output()
        .expect("run the peer program");
    assert!(out.status.success(), "peer {} failed", peer.display());
    let s = String::from_utf8(out.stdout).expect("peer output");
    let mut it = s.split_whitespace();
    let figure: f64 = it.next().and_then(|x| x.parse().ok()).expect("peer figure");
    assert_eq!(it.next(), Some(want), "checksum of peer {}", peer.display());
    figure
}

/// Paths of the shared-memory objects of the pools this run made, for the signal
/// handler (leaked C strings: the handler may run at any time).
static ON_SIGNAL: [std::sync::atomic::AtomicPtr<std::ffi::c_char>; 32] =
    [const { std::sync::atomic::AtomicPtr::new(std::ptr::null_mut()) }; 32];

/// Creates the pool `name` of `size` bytes for a benchmark: removed when dropped,
/// and when the run is interrupted (see [`remove_on_signal`]).
pub fn bench_pool(name: &str, size: u64) -> Result<shmval::Pool, shmval::CreateError> {
    remove_on_signal(name);
    shmval::Pool::create_with(name, size, &shmval::PoolOptions::new().remove_on_drop(true))
}

/// Makes sure pool `name` (made with `remove_on_drop`) is also removed when the run
/// is interrupted (SIGINT, SIGTERM, SIGHUP), which skips every destructor: the
/// handler unlinks the pool's two objects in /dev/shm (`unlink` is
/// async-signal-safe), then dies of the signal as it would have.
pub fn remove_on_signal(name: &str) {
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
    use std::sync::atomic::Ordering::SeqCst;
    static INSTALL: std::sync::Once = std::sync::Once::new();
    for n in [name.to_owned(), format!("{name}{}", shmval::BOOT_SUFFIX)] {
        let path = std::ffi::CString::new(format!("/dev/shm/{n}")).expect("pool names have no NUL");
        let p = path.into_raw();
        if !ON_SIGNAL.iter().any(|slot| {
            slot.compare_exchange(std::ptr::null_mut(), p, SeqCst, SeqCst)
                .is_ok()
        }) {
            eprintln!("more pools than the signal handler tracks: {n} is not removed on a signal");
        }
    }
    INSTALL.call_once(|| {
        let act = SigAction::new(
            SigHandler::Handler(unlink_and_die),
            SaFlags::SA_RESETHAND,
            SigSet::empty(),
        );
        for sig in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
            // SAFETY: the handler only calls async-signal-safe functions.
            unsafe { sigaction(sig, &act) }.expect("install signal handler");
        }
    });
}

extern "C" fn unlink_and_die(sig: nix::libc::c_int) {
    for slot in &ON_SIGNAL {
        let p = slot.load(std::sync::atomic::Ordering::SeqCst);
        if !p.is_null() {
            // SAFETY: `p` is a leaked, NUL-terminated C string; unlink is
            // async-signal-safe.
            unsafe { nix::libc::unlink(p) };
        }
    }
    // SA_RESETHAND restored the default action: die of the signal.
    // SAFETY: raise is async-signal-safe.
    unsafe { nix::libc::raise(sig) };
}
