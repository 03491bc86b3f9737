//! Fail points: named places inside the real code paths where a test makes the
//! process pause, hang, die, run a closure, or take another branch — compiled only
//! with the `failpoints` cargo feature (without it a fail point is no code at all).
//!
//! The crash and stall tests use them instead of re-implementing the paths they
//! test: a child process sets a point, then calls the ordinary `send`, `recv`,
//! `set`… and is stopped or killed *inside* it, at the instruction the point marks.
//!
//! A point is armed for the whole process ([`set`]), for the calling thread only
//! ([`set_for_thread`]: the test harness runs tests on parallel threads of one
//! process), or from the environment before the first point is reached:
//! `SHMVAL_FAILPOINTS="pipe.send.owned.filled=abort;alloc.large.locked=2@hang"`
//! (`N@` lets the first `N` hits pass; actions `abort`, `hang`, `on`,
//! `pause(MS)`). The names of the points are listed in `docs/TESTING.md`.
//!
//! ```
//! use shmval_alloc::fail::{self, Action};
//! fail::set_for_thread("doc.point", Action::On);
//! assert!(fail::fires("doc.point"));
//! fail::clear_thread();
//! assert!(!fail::fires("doc.point"));
//! ```

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, Once};
use std::time::Duration;

/// What an armed point does when reached.
#[derive(Clone)]
pub enum Action {
    /// Nothing but firing: a point read with [`fires`] takes its other branch.
    On,
    /// Sleeps this long, then goes on.
    Pause(Duration),
    /// Never returns: the thread sleeps until the process is killed.
    Hang,
    /// Ends the process at once (`abort`, no destructor runs): a crash right there.
    Abort,
    /// Runs the closure (it may sleep, tell a parent process, raise a signal), then
    /// goes on.
    Call(Arc<dyn Fn() + Send + Sync>),
}

impl std::fmt::Debug for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Action::On => f.write_str("On"),
            Action::Pause(d) => write!(f, "Pause({d:?})"),
            Action::Hang => f.write_str("Hang"),
            Action::Abort => f.write_str("Abort"),
            Action::Call(_) => f.write_str("Call(..)"),
        }
    }
}

/// One armed point: its action, after letting `skip` hits pass.
struct Armed {
    name: String,
    action: Action,
    skip: u64,
    hits: AtomicU64,
}

/// Points armed for the process.
static GLOBAL: Mutex<Vec<Armed>> = Mutex::new(Vec::new());
/// How many points are armed anywhere (process or any thread): 0 makes a point one
/// load.
static ARMED: AtomicUsize = AtomicUsize::new(0);
/// `SHMVAL_FAILPOINTS` read once.
static ENV: Once = Once::new();

thread_local! {
    static LOCAL: RefCell<Vec<Armed>> = const { RefCell::new(Vec::new()) };
}

fn global() -> std::sync::MutexGuard<'static, Vec<Armed>> {
    GLOBAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn arm(list: &mut Vec<Armed>, name: &str, skip: u64, action: Action) {
    match list.iter_mut().find(|a| a.name == name) {
        Some(a) => {
            a.action = action;
            a.skip = skip;
            a.hits = AtomicU64::new(0);
        }
        None => {
            ARMED.fetch_add(1, Relaxed);
            list.push(Armed {
                name: name.to_owned(),
                action,
                skip,
                hits: AtomicU64::new(0),
            });
        }
    }
}

fn disarm(list: &mut Vec<Armed>, name: Option<&str>) {
    let before = list.len();
    list.retain(|a| name.is_some_and(|n| a.name != n));
    ARMED.fetch_sub(before - list.len(), Relaxed);
}

/// Arms `name` for every thread of this process.
pub fn set(name: &str, action: Action) {
    set_after(name, 0, action);
}

/// Arms `name` for every thread, letting the first `skip` hits pass.
pub fn set_after(name: &str, skip: u64, action: Action) {
    load_env();
    arm(&mut global(), name, skip, action);
}

/// Arms `name` for the calling thread only (it wins over a process-wide setting).
pub fn set_for_thread(name: &str, action: Action) {
    load_env();
    LOCAL.with(|l| arm(&mut l.borrow_mut(), name, 0, action));
}

/// Disarms `name` process-wide.
pub fn clear(name: &str) {
    disarm(&mut global(), Some(name));
}

/// Disarms every point armed for the calling thread.
pub fn clear_thread() {
    LOCAL.with(|l| disarm(&mut l.borrow_mut(), None));
}

/// Disarms every process-wide point.
pub fn clear_all() {
    disarm(&mut global(), None);
}

/// Reaches point `name`: runs its action if armed. Whether it fired.
#[inline]
pub fn fires(name: &str) -> bool {
    load_env();
    if ARMED.load(Relaxed) == 0 {
        return false;
    }
    match lookup(name) {
        Some(action) => {
            run(action);
            true
        }
        None => false,
    }
}

/// The action of `name` if armed and its hits to skip are used up.
#[cold]
fn lookup(name: &str) -> Option<Action> {
    let due = |a: &Armed| a.hits.fetch_add(1, Relaxed) >= a.skip;
    let local = LOCAL.with(|l| {
        let l = l.borrow();
        l.iter()
            .find(|a| a.name == name)
            .map(|a| due(a).then(|| a.action.clone()))
    });
    if let Some(hit) = local {
        return hit;
    }
    let g = global();
    let a = g.iter().find(|a| a.name == name)?;
    due(a).then(|| a.action.clone())
}

#[cold]
fn run(action: Action) {
    match action {
        Action::On => {}
        Action::Pause(d) => std::thread::sleep(d),
        Action::Hang => loop {
            std::thread::sleep(Duration::from_secs(3600));
        },
        Action::Abort => std::process::abort(),
        Action::Call(f) => f(),
    }
}

fn load_env() {
    ENV.call_once(|| {
        let Ok(spec) = std::env::var("SHMVAL_FAILPOINTS") else {
            return;
        };
        let mut g = global();
        for item in spec.split(';').map(str::trim).filter(|s| !s.is_empty()) {
            match parse(item) {
                Some((name, skip, action)) => arm(&mut g, name, skip, action),
                None => eprintln!("SHMVAL_FAILPOINTS: ignored {item:?}"),
            }
        }
    });
}

/// `name=[N@]action`.
fn parse(item: &str) -> Option<(&str, u64, Action)> {
    let (name, rest) = item.split_once('=')?;
    let (skip, act) = match rest.split_once('@') {
        Some((n, a)) => (n.trim().parse().ok()?, a.trim()),
        None => (0, rest.trim()),
    };
    let action = match act {
        "on" => Action::On,
        "hang" => Action::Hang,
        "abort" => Action::Abort,
        _ => {
            let ms = act.strip_prefix("pause(")?.strip_suffix(')')?;
            Action::Pause(Duration::from_millis(ms.trim().parse().ok()?))
        }
    };
    Some((name.trim(), skip, action))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse() {
        assert!(matches!(parse("a=abort"), Some(("a", 0, Action::Abort))));
        assert!(matches!(parse("a = 3@hang"), Some(("a", 3, Action::Hang))));
        assert!(
            matches!(parse("b=pause(20)"), Some(("b", 0, Action::Pause(d))) if d == Duration::from_millis(20))
        );
        assert!(parse("b=explode").is_none());
        assert!(parse("nothing").is_none());
    }

    #[test]
    fn thread_points_skip_and_clear() {
        set_for_thread("t.skip", Action::On);
        assert!(fires("t.skip"));
        std::thread::scope(|s| {
            s.spawn(|| assert!(!fires("t.skip"), "armed for another thread"));
        });
        clear_thread();
        assert!(!fires("t.skip"));
        set_after("t.global", 2, Action::On);
        assert!(!fires("t.global") && !fires("t.global"));
        assert!(fires("t.global"));
        clear("t.global");
        assert!(!fires("t.global"));
    }
}
