//! Helpers shared by the integration tests: unique pool names that are removed even
//! when a test fails, and re-spawning the test binary in a named role.
#![allow(dead_code)]

use shmval::Pool;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Environment variable naming the role a re-spawned test binary plays.
pub const ROLE: &str = "SHMVAL_TEST_ROLE";

/// A unique pool name, destroyed (both segments) when dropped.
pub struct Scratch(pub String);

/// Removes scratch pools left by test processes that died without unwinding (abort,
/// SIGKILL, timeout): names are `shmval-test-TAG-PID-N`, and PID no longer runs.
fn sweep_orphans() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        for name in leftovers("shmval-test-") {
            let stem = name.strip_suffix("_boot").unwrap_or(&name);
            let pid = stem.rsplit('-').nth(1).and_then(|p| p.parse::<i32>().ok());
            let alive = pid.is_some_and(|p| std::path::Path::new(&format!("/proc/{p}")).exists());
            if pid.is_some() && !alive {
                let _ = std::fs::remove_file(format!("/dev/shm/{name}"));
            }
        }
    });
}

impl Scratch {
    pub fn new(tag: &str) -> Scratch {
        sweep_orphans();
        static N: AtomicU32 = AtomicU32::new(0);
        Scratch(format!(
            "shmval-test-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ))
    }
    pub fn name(&self) -> &str {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = Pool::destroy(&self.0);
        for suffix in ["", "_boot"] {
            let _ = std::fs::remove_file(format!("/dev/shm/{}{suffix}", self.0));
        }
    }
}

/// Exit code of a child whose role ran to the end (a child that matched no test
/// exits 0, one that panicked 101: neither passes for success).
pub const CHILD_OK: i32 = 42;

/// Ends a child process successfully.
pub fn child_done() -> ! {
    std::process::exit(CHILD_OK)
}

/// The role this process was started in, if it is a re-spawned child.
pub fn role() -> Option<String> {
    std::env::var(ROLE).ok()
}

/// Re-runs this test binary's `test` function (exactly) in `role`, with `env`.
pub fn spawn(test: &str, role: &str, env: &[(&str, String)]) -> Child {
    spawn_under(&[], test, role, env)
}

/// [`spawn`] under a wrapper command (`prefix`: the program and its arguments, to
/// which the test binary and its arguments are appended), e.g. `unshare`.
pub fn spawn_under(prefix: &[&str], test: &str, role: &str, env: &[(&str, String)]) -> Child {
    let exe = std::env::current_exe().expect("test binary path");
    let mut cmd = match prefix.split_first() {
        Some((program, args)) => {
            let mut c = Command::new(program);
            c.args(args).arg(exe);
            c
        }
        None => Command::new(exe),
    };
    cmd.args([test, "--exact", "--nocapture", "--test-threads=1", "-q"])
        .env(ROLE, role)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.spawn().expect("spawn test binary")
}

/// A child process killed (and reaped) when dropped still running: a test that
/// fails while its children loop (senders, chaos roles) leaves none behind.
pub struct Kid(pub Child);

impl std::ops::Deref for Kid {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Kid {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for Kid {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Waits for `child` at most `limit`; kills it and fails if it takes longer.
pub fn wait_ok(child: &mut Child, limit: Duration, what: &str) {
    let start = Instant::now();
    loop {
        if let Some(st) = child.try_wait().expect("try_wait") {
            assert_eq!(st.code(), Some(CHILD_OK), "{what} failed: {st}");
            return;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not finish within {limit:?} (hang)");
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// A xorshift generator seeded with `seed` (non-zero): the chaos tests' repeatable
/// randomness.
#[allow(dead_code)] // not every test binary draws numbers
pub fn xorshift(mut seed: u64) -> impl FnMut() -> u64 {
    move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    }
}

/// Names in /dev/shm that start with `prefix`.
pub fn leftovers(prefix: &str) -> Vec<String> {
    std::fs::read_dir("/dev/shm")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(prefix))
                .collect()
        })
        .unwrap_or_default()
}

/// A command's standard output parsed as JSON (the failure says what it printed).
pub fn json(o: &std::process::Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    })
}

/// Removes the private directories (`$TMPDIR/shmval-test-…-PID-N`) of test processes
/// that died without unwinding (a signal skips every destructor), as `Scratch` does
/// for `/dev/shm`.
pub fn sweep_tmp_orphans() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let Ok(rd) = std::fs::read_dir(std::env::temp_dir()) else {
            return;
        };
        for e in rd.filter_map(|e| e.ok()) {
            let name = e.file_name().to_string_lossy().into_owned();
            if !name.starts_with("shmval-test-") {
                continue;
            }
            let pid = name.rsplit('-').nth(1).and_then(|p| p.parse::<i32>().ok());
            let alive = pid.is_some_and(|p| std::path::Path::new(&format!("/proc/{p}")).exists());
            if pid.is_some() && !alive {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    });
}
