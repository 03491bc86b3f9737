//! The operator's tool, run as the real binary (`info`, `clean`, `create`, `destroy`,
//! `stat`, `pipes`, `dump`, `get`, `set`, `rm`, `watch`, `save`, `load`), and the
//! library calls behind a restart (`Pool::open_or_create`, `cleanup_stray`,
//! snapshots). Every pool lives in a private directory (`--dir`), so that `clean`
//! never meets another test's pools.

mod common;

use common::{child_done, json, spawn};
use shmval::{tab, Broadcast, OpenOrCreateError, Pipe, Policy, Pool, PoolOptions, Val};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

/// A directory of its own, removed with everything in it when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        common::sweep_tmp_orphans();
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let d = std::env::temp_dir().join(format!(
            "shmval-test-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&d).unwrap();
        TempDir(d)
    }
    fn s(&self) -> &str {
        self.0.to_str().unwrap()
    }
    fn opts(&self) -> PoolOptions {
        PoolOptions::new().dir(&self.0)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn shmval(dir: &TempDir, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_shmval"))
        .args(args)
        .args(["--dir", dir.s()])
        .output()
        .expect("run shmval")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Entry point of the re-spawned child processes (a no-op in a normal run).
#[test]
fn child_role_entry() {
    let Some(role) = common::role() else { return };
    let dir = PathBuf::from(std::env::var("DIR").unwrap());
    let name = std::env::var("POOL").unwrap();
    match role.as_str() {
        // Creates a pool and ends without removing it: an orphan.
        "creator" => {
            let pool = Pool::create_with(&name, 1 << 20, &PoolOptions::new().dir(&dir)).unwrap();
            pool.root()
                .unwrap()
                .insert("left", "by a creator that ended")
                .unwrap();
        }
        // Attached, holding a table, until killed.
        "holder" => {
            let pool = Pool::open_with(&name, &PoolOptions::new().dir(&dir)).unwrap();
            let _t = pool.root().unwrap().get("cfg").unwrap();
            std::fs::write(dir.join("holder-ready"), b"").unwrap();
            std::thread::sleep(Duration::from_secs(60));
        }
        other => panic!("unknown role {other}"),
    }
    child_done();
}

fn run_creator(d: &TempDir, name: &str) {
    let st = spawn(
        "child_role_entry",
        "creator",
        &[("DIR", d.s().to_owned()), ("POOL", name.to_owned())],
    )
    .wait()
    .unwrap();
    assert_eq!(st.code(), Some(common::CHILD_OK));
}

/// Runs a child attached to pool `name` and holding a table, and SIGKILLs it.
fn kill_a_holder(d: &TempDir, name: &str) {
    let ready = d.0.join("holder-ready");
    let _ = std::fs::remove_file(&ready);
    let mut kid = spawn(
        "child_role_entry",
        "holder",
        &[("DIR", d.s().to_owned()), ("POOL", name.into())],
    );
    while !ready.exists() {
        std::thread::sleep(Duration::from_millis(5));
    }
    kid.kill().unwrap();
    kid.wait().unwrap();
}

/// Makes the pool's boot record name another layout version (a pool of another
/// build), as a file edit.
fn make_incompatible(dir: &Path, name: &str) {
    use std::io::{Seek, SeekFrom, Write};
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(dir.join(format!("{name}_boot")))
        .unwrap();
    f.seek(SeekFrom::Start(8)).unwrap();
    f.write_all(&999u32.to_le_bytes()).unwrap();
}

#[test]
fn info_lists_live_orphaned_and_incompatible_pools_and_other_files() {
    let d = TempDir::new("op-info");
    let live = Pool::create_with("live", 4 << 20, &d.opts().mode(0o640)).unwrap();
    live.root()
        .unwrap()
        .insert("k", vec![1.0f64; 1000])
        .unwrap();
    Pipe::create(&live, "p", 8).unwrap();
    Broadcast::create(&live, "b", 8, Policy::DropOldest).unwrap();
    run_creator(&d, "orphan");
    run_creator(&d, "foreign");
    make_incompatible(&d.0, "foreign");
    std::fs::write(d.0.join("not-a-pool.dat"), b"hello").unwrap();

    let o = shmval(&d, &["info", "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let v = json(&o);
    assert!(v["fs"]["size"].as_u64().unwrap() > 0, "{v}");
    let pools = v["pools"].as_array().unwrap();
    let by = |n: &str| {
        pools
            .iter()
            .find(|p| p["name"] == n)
            .unwrap_or_else(|| panic!("{n}: {v}"))
    };
    let l = by("live");
    assert_eq!(
        (l["state"].as_str(), l["orphaned"].as_bool()),
        (Some("ready"), Some(false))
    );
    assert_eq!(l["creator"], std::process::id());
    assert_eq!(l["creator_alive"], true);
    assert_eq!(l["attached"], serde_json::json!([std::process::id()]));
    assert_eq!(
        (l["pipes"].as_u64(), l["broadcasts"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(l["mode"], "0640");
    assert_eq!(l["size"], 4 << 20);
    assert!(l["used"].as_u64().unwrap() > 8000, "{l}");
    assert!(l["allocated"].as_u64().unwrap() >= 4 << 20, "{l}");
    assert!(l["created"].as_str().unwrap().starts_with("20"), "{l}");
    let o = by("orphan");
    assert_eq!(
        (o["state"].as_str(), o["orphaned"].as_bool()),
        (Some("ready"), Some(true))
    );
    assert_eq!(
        (o["creator_alive"].as_bool(), o["attached_count"].as_u64()),
        (Some(false), Some(0))
    );
    let f = by("foreign");
    assert_eq!(
        (f["state"].as_str(), f["compatible"].as_bool()),
        (Some("incompatible"), Some(false))
    );
    assert_eq!(f["layout_version"], 999);
    assert!(
        v["other"].as_array().unwrap().is_empty(),
        "without --all: {v}"
    );

    let v = json(&shmval(&d, &["ls", "--all", "--json"]));
    let other = v["other"].as_array().unwrap();
    assert_eq!(other.len(), 1, "{v}");
    assert_eq!(
        (other[0]["name"].as_str(), other[0]["kind"].as_str()),
        (Some("not-a-pool.dat"), Some("other"))
    );
    // One pool in full; the table view names every pool.
    let one = json(&shmval(&d, &["info", "live", "--json"]));
    assert_eq!(one["name"], "live");
    let t = text(&shmval(&d, &["info"]));
    assert!(
        t.contains("orphaned") && t.contains("incompatible") && t.contains("live"),
        "{t}"
    );
    let o = shmval(&d, &["info", "nothing-here"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    drop(live);
}

#[test]
fn clean_removes_orphans_refuses_live_pools_and_dry_run_removes_nothing() {
    let d = TempDir::new("op-clean");
    let live = Pool::create_with("live", 1 << 20, &d.opts()).unwrap();
    run_creator(&d, "orphan1");
    run_creator(&d, "orphan2");
    let files = || {
        let mut v: Vec<String> = std::fs::read_dir(&d.0)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        v.sort();
        v
    };
    let all = files();
    assert_eq!(all.len(), 6, "{all:?}");
    // --dry-run: names both orphans, removes nothing.
    let o = shmval(&d, &["clean", "--dry-run", "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let v = json(&o);
    let removed: Vec<&str> = v["removed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r[0].as_str().unwrap())
        .collect();
    assert_eq!(removed, ["orphan1", "orphan2"], "{v}");
    assert_eq!(files(), all);
    // A named live pool is refused (exit 1), and stays.
    let o = shmval(&d, &["clean", "live"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("in use") && text(&o).contains("--force"),
        "{}",
        text(&o)
    );
    assert!(Pool::open_with("live", &d.opts()).is_ok());
    // No names: the orphans go (both files each), the live pool stays.
    let o = shmval(&d, &["clean"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(files(), ["live", "live_boot"]);
    // --force: the live pool's files go; this process keeps working in its mapping.
    let o = shmval(&d, &["clean", "--force", "live"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(files().is_empty());
    live.root().unwrap().insert("still", "works").unwrap();
}

#[test]
fn dump_get_set_rm_round_trip_in_both_formats() {
    let d = TempDir::new("op-dump");
    let o = shmval(&d, &["create", "p", "8M", "--mode", "600"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(std::fs::metadata(d.0.join("p")).unwrap().len(), 8 << 20);
    let pool = Pool::open_with("p", &d.opts()).unwrap();
    pool.root()
        .unwrap()
        .insert(
            "config",
            tab! { "db" => tab! { "port" => 5432, "hosts" => Val::List(vec!["a".into(), "b".into()]) }, "w" => vec![0.5f64, 1.5] },
        )
        .unwrap();
    let t = text(&shmval(&d, &["dump", "p"]));
    assert_eq!(
        t.trim(),
        "{'config': {'db': {'port': 5432, 'hosts': ['a', 'b']}, 'w': array('d', [0.5, 1.5])}}"
    );
    let v = json(&shmval(&d, &["dump", "p", "/config", "--json"]));
    assert_eq!(
        v,
        serde_json::json!({"db": {"port": 5432, "hosts": ["a", "b"]}, "w": [0.5, 1.5]})
    );
    assert_eq!(
        text(&shmval(&d, &["get", "p", "/config/db/hosts/1"])).trim(),
        "'b'"
    );
    // set: a Python literal, then JSON; get reads them back.
    let o = shmval(
        &d,
        &[
            "set",
            "p",
            "/config/db/opts",
            "{'ssl': True, 'n': (1, 2.5, None)}",
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(
        text(&shmval(&d, &["get", "p", "/config/db/opts"])).trim(),
        "{'ssl': True, 'n': (1, 2.5, None)}"
    );
    let o = shmval(
        &d,
        &["set", "p", "/config/db/port", r#"{"x": [true, null]}"#],
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(
        pool.get_path("/config/db/port").unwrap().to_val().unwrap(),
        Val::from_literal("{'x': [True, None]}").unwrap()
    );
    // rm, then get of what is gone: exit 1; a bad literal or path: exit 2.
    assert_eq!(
        shmval(&d, &["rm", "p", "/config/db/port"]).status.code(),
        Some(0)
    );
    assert_eq!(
        shmval(&d, &["get", "p", "/config/db/port"]).status.code(),
        Some(1)
    );
    assert_eq!(
        shmval(&d, &["rm", "p", "/config/nothing"]).status.code(),
        Some(1)
    );
    assert_eq!(
        shmval(&d, &["set", "p", "/x", "{1, 2}"]).status.code(),
        Some(2)
    );
    assert_eq!(shmval(&d, &["get", "p", "config"]).status.code(), Some(2));
    assert_eq!(shmval(&d, &["get", "nopool", "/"]).status.code(), Some(2));
    assert_eq!(shmval(&d, &["create", "q", "12Q"]).status.code(), Some(2));
    // A pool that grows: made by the tool, grown by a process, seen grown by info.
    let o = shmval(&d, &["create", "g", "1M", "--max-size", "64M"]);
    assert!(text(&o).contains("grows to 64.0 MiB"), "{}", text(&o));
    let g = Pool::open_with("g", &d.opts()).unwrap();
    g.root().unwrap().insert("big", vec![1u8; 4 << 20]).unwrap();
    let v = json(&shmval(&d, &["info", "g", "--json"]));
    let info = &v.as_array().map_or(&v, |a| &a[0]);
    assert_eq!(info["max_size"], 64 << 20, "{v}");
    assert!(info["size"].as_u64().unwrap() > 4 << 20, "{v}");
    drop(g);
    let o = shmval(
        &d,
        &[
            "create",
            "h",
            "1M",
            "--max-size",
            "64M",
            "--backend",
            "sysv",
        ],
    );
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("cannot grow"), "{}", text(&o));
    // stat, pipes, watch: they run and say something sensible.
    let p = Pipe::create(&pool, "jobs", 16).unwrap();
    p.send(pool.share(&Val::from("a job")).unwrap()).unwrap();
    let b = Broadcast::create(&pool, "news", 4, Policy::DropOldest).unwrap();
    let sub = b.subscribe().unwrap();
    b.send(pool.share(&Val::from("news")).unwrap()).unwrap();
    let v = json(&shmval(&d, &["pipes", "p", "--json"]));
    assert_eq!(v["pipes"][0]["name"], "jobs");
    assert_eq!(
        (
            v["pipes"][0]["len"].as_u64(),
            v["pipes"][0]["capacity"].as_u64()
        ),
        (Some(1), Some(16))
    );
    assert_eq!(
        v["pipes"][0]["send_side"],
        format!("pid {}", std::process::id())
    );
    assert_eq!(v["broadcasts"][0]["subscribers"][0]["lag"], 1);
    assert_eq!(
        v["broadcasts"][0]["subscribers"][0]["pid"],
        std::process::id()
    );
    let v = json(&shmval(&d, &["stat", "p", "--json"]));
    assert!(
        v["in_use"].as_u64().unwrap() > 0 && !v["classes"].as_array().unwrap().is_empty(),
        "{v}"
    );
    let o = shmval(&d, &["watch", "p", "--count", "2", "--interval", "0.05"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        text(&o).contains("jobs") && text(&o).contains("broadcast news"),
        "{}",
        text(&o)
    );
    drop((p, b, sub, pool));
    assert_eq!(shmval(&d, &["destroy", "p"]).status.code(), Some(0));
    assert_eq!(shmval(&d, &["destroy", "p"]).status.code(), Some(2));
}

#[test]
fn save_destroy_load_gives_equal_values_and_a_damaged_snapshot_is_refused() {
    let d = TempDir::new("op-snap");
    let pool = Pool::create_with("src", 8 << 20, &d.opts()).unwrap();
    let v = Val::from_literal(
        "{'a': [1, 2.5, 'x', b'\\x00\\xff', (True, None)], 'big': 123456789012345678901234567890, \
         'c': (1-2j), 'o': OrderedDict([('z', 1), ('y', 2)])}",
    )
    .unwrap();
    let Val::Tab(m) = v.clone() else { panic!() };
    for (k, x) in m {
        pool.root().unwrap().insert(k, x).unwrap();
    }
    pool.root()
        .unwrap()
        .insert("arr", vec![0.25f64; 10_000])
        .unwrap();
    let before = pool.root().unwrap().to_val().unwrap();
    drop(pool);
    let file = d.0.join("src.snap");
    let o = shmval(&d, &["save", "src", file.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(shmval(&d, &["destroy", "src"]).status.code(), Some(0));
    let o = shmval(&d, &["load", file.to_str().unwrap(), "src"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let pool = Pool::open_with("src", &d.opts()).unwrap();
    assert_eq!(pool.root().unwrap().to_val().unwrap(), before);
    assert_eq!(pool.size(), 8 << 20, "the saved size");
    assert!(pool.check().is_ok());
    drop(pool);
    // Loading over an existing pool is refused; so are a truncated and a flipped
    // snapshot, and a file that is none: exit 2, nothing made.
    let o = shmval(&d, &["load", file.to_str().unwrap(), "src"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let bytes = std::fs::read(&file).unwrap();
    let cut = d.0.join("cut.snap");
    std::fs::write(&cut, &bytes[..bytes.len() - 100]).unwrap();
    let o = shmval(&d, &["load", cut.to_str().unwrap(), "cut"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).contains("truncated"), "{}", text(&o));
    let mut flipped = bytes.clone();
    let n = flipped.len();
    flipped[n / 2] ^= 1;
    std::fs::write(&cut, &flipped).unwrap();
    let o = shmval(&d, &["load", cut.to_str().unwrap(), "cut"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).contains("corrupt"), "{}", text(&o));
    std::fs::write(&cut, b"hello").unwrap();
    assert!(text(&shmval(&d, &["load", cut.to_str().unwrap(), "cut"]))
        .contains("not a shmval snapshot"));
    assert!(!d.0.join("cut").exists() && !d.0.join("cut_boot").exists());
    // The library says the same, typed.
    assert!(matches!(
        Pool::load(d.0.join("cut.snap"), "cut", &d.opts()),
        Err(shmval::SnapshotError::NotSnapshot(_))
    ));
}

#[test]
fn open_or_create_reattaches_to_a_fit_pool_and_refuses_or_recreates_an_unfit_one() {
    let d = TempDir::new("op-ooc");
    // Fresh, then reattached with its values after a "restart" (a clean end).
    let pool = Pool::open_or_create("svc", 1 << 20, &d.opts()).unwrap();
    pool.root()
        .unwrap()
        .insert("cfg", tab! { "n" => 1 })
        .unwrap();
    drop(pool);
    let pool = Pool::open_or_create("svc", 1 << 20, &d.opts()).unwrap();
    assert!(pool.recovery().is_none());
    assert_eq!(
        pool.get_path("/cfg/n").unwrap().to_val().unwrap(),
        Val::I64(1)
    );
    drop(pool);
    // A process killed while attached: the open recovers, the check passes, so the
    // pool is reattached.
    kill_a_holder(&d, "svc");
    let pool = Pool::open_or_create("svc", 1 << 20, &d.opts()).unwrap();
    assert!(pool.recovery().is_some(), "a recovery after the death");
    assert!(pool.check().leaks().is_empty());
    drop(pool);
    // Damaged (a count below the references, as a torn write would leave) after a
    // death: refused as inconsistent; with recreate_unfit, made anew.
    {
        let pool = Pool::open_with("svc", &d.opts()).unwrap();
        let root = pool.root().unwrap();
        root.insert("victim", "a string long enough to be an object")
            .unwrap();
        let off = root.get("victim").unwrap().unwrap().offset().unwrap();
        let p = pool.resolve(shmval::Offset::new(off).unwrap(), 16).unwrap();
        // SAFETY: the object header's count word (offset 4, see docs/LAYOUT.md).
        unsafe {
            (*(p.as_ptr().add(4) as *const std::sync::atomic::AtomicU32))
                .store(0, std::sync::atomic::Ordering::SeqCst)
        };
    }
    kill_a_holder(&d, "svc");
    match Pool::open_or_create("svc", 1 << 20, &d.opts()) {
        Err(e @ OpenOrCreateError::Inconsistent { .. }) => assert!(e.is_unfit()),
        other => panic!("a damaged pool reattached: {other:?}"),
    }
    // Still, for the next one (the open above recovered the death: the pool stays
    // unchecked until a check passes).
    assert!(matches!(
        Pool::open_or_create("svc", 1 << 20, &d.opts()),
        Err(OpenOrCreateError::Inconsistent { .. })
    ));
    let pool = Pool::open_or_create("svc", 1 << 20, &d.opts().recreate_unfit(true)).unwrap();
    assert!(pool.root().unwrap().is_empty().unwrap(), "made anew");
    drop(pool);
    // Incompatible: an error, or recreated on request.
    make_incompatible(&d.0, "svc");
    let e = Pool::open_or_create("svc", 1 << 20, &d.opts()).unwrap_err();
    assert!(e.is_unfit(), "{e}");
    let pool = Pool::open_or_create("svc", 1 << 20, &d.opts().recreate_unfit(true)).unwrap();
    drop(pool);
    // A live process keeps an unfit pool from being recreated under it.
    let keep = Pool::open_with("svc", &d.opts()).unwrap();
    make_incompatible(&d.0, "svc");
    let e = Pool::open_or_create("svc", 1 << 20, &d.opts().recreate_unfit(true)).unwrap_err();
    assert!(e.is_unfit(), "{e}");
    drop(keep);
    // cleanup_stray: whatever the state (here half made: empty files), both go.
    std::fs::write(d.0.join("half"), b"").unwrap();
    assert!(
        shmval::admin::inspect(&d.0, "half").is_err(),
        "no boot file: not a pool"
    );
    std::fs::write(d.0.join("half_boot"), b"").unwrap();
    assert!(matches!(
        Pool::open_with("half", &d.opts()),
        Err(shmval::OpenError::Timeout { .. } | shmval::OpenError::NotFound { .. })
    ));
    assert!(Pool::cleanup_stray_with("half", &d.opts()));
    assert!(!d.0.join("half").exists() && !d.0.join("half_boot").exists());
    assert!(!Pool::cleanup_stray_with("half", &d.opts()));
}

#[test]
fn pipes_and_broadcasts_open_or_create_by_name() {
    let d = TempDir::new("op-pipes");
    let pool = Pool::create_with("p", 4 << 20, &d.opts()).unwrap();
    let a = Pipe::open_or_create(&pool, "jobs", 8).unwrap();
    let b = Pipe::open_or_create(&pool, "jobs", 64).unwrap();
    assert_eq!(
        (a.capacity(), b.capacity()),
        (8, 8),
        "the existing one, its capacity"
    );
    a.send(pool.share(&Val::from("one")).unwrap()).unwrap();
    assert_eq!(b.recv().unwrap().to_val().unwrap(), Val::from("one"));
    let x = Broadcast::open_or_create(&pool, "news", 4, Policy::DropOldest).unwrap();
    let y = Broadcast::open_or_create(&pool, "news", 16, Policy::Block).unwrap();
    assert_eq!((y.capacity(), y.policy()), (4, Policy::DropOldest));
    let sub = y.subscribe().unwrap();
    x.send(pool.share(&Val::from("n")).unwrap()).unwrap();
    assert_eq!(sub.recv().unwrap().to_val().unwrap(), Val::from("n"));
    assert!(matches!(
        Pipe::open_or_create(&pool, "", 8),
        Err(shmval::PipeError::Name(_))
    ));
}

/// A pool whose files a cleaner removed: `Pool::health` says so at once, the
/// keepalive warns, `shmval info` lists it as unlinked with the pids that map it;
/// a pool made anew under the name is told from ours (`Replaced`).
#[test]
fn a_pool_unlinked_under_its_processes_is_seen_by_them_and_by_info() {
    let d = TempDir::new("op-health");
    let pool = Pool::create_with(
        "victim",
        1 << 20,
        &d.opts().keepalive(Duration::from_millis(20)),
    )
    .unwrap();
    assert!(pool.health().is_ok());
    // The keepalive refreshes the files' times (a cleaner that goes by age).
    let old = std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
    for f in ["victim", "victim_boot"] {
        std::fs::File::options()
            .write(true)
            .open(d.0.join(f))
            .unwrap()
            .set_modified(old)
            .unwrap();
    }
    std::thread::sleep(Duration::from_millis(200));
    for f in ["victim", "victim_boot"] {
        let m = std::fs::metadata(d.0.join(f)).unwrap().modified().unwrap();
        assert!(m > old + Duration::from_secs(3600), "{f}: not refreshed");
    }
    // A cleaner removes them.
    std::fs::remove_file(d.0.join("victim")).unwrap();
    std::fs::remove_file(d.0.join("victim_boot")).unwrap();
    let h = pool.health();
    assert_eq!(
        (h.main, h.boot),
        (shmval::FileState::Unlinked, shmval::FileState::Unlinked)
    );
    pool.root().unwrap().insert("still", 1).unwrap();
    let v = json(&shmval(&d, &["info", "--json"]));
    assert_eq!(v["pools"].as_array().unwrap().len(), 0, "{v}");
    let u = &v["unlinked"][0];
    assert_eq!(u["name"], "victim", "{v}");
    assert!(
        u["pids"]
            .as_array()
            .unwrap()
            .contains(&serde_json::json!(std::process::id())),
        "{v}"
    );
    assert!(text(&shmval(&d, &["info"])).contains("UNLINKED"));
    // A new pool under the name: ours is told apart.
    let other = Pool::create_with("victim", 1 << 20, &d.opts()).unwrap();
    assert_eq!(pool.health().main, shmval::FileState::Replaced);
    assert!(other.health().is_ok());
}

/// `shmval info` on a file system as small as Docker's default /dev/shm warns, with
/// the fix; creating a pool larger than its free space is a typed error that says
/// where and how to get more. (A 32 MiB tmpfs in a private mount namespace.)
#[test]
fn a_small_shm_file_system_is_warned_about_with_the_fix() {
    let d = TempDir::new("op-small");
    let script = r#"mount -t tmpfs -o size=32m shmval-test "$1" && "$2" info --dir "$1" && "$2" create big 100M --dir "$1""#;
    let o = Command::new("unshare")
        .args([
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            script,
            "sh",
        ])
        .arg(&d.0)
        .arg(env!("CARGO_BIN_EXE_shmval"))
        .output();
    let o = match o {
        Ok(o)
            if !String::from_utf8_lossy(&o.stderr).contains("unshare:")
                && !String::from_utf8_lossy(&o.stderr).contains("mount:") =>
        {
            o
        }
        Ok(o) => {
            eprintln!(
                "skipped: unshare --mount + mount -t tmpfs refused here: {}",
                text(&o)
            );
            return;
        }
        Err(e) => {
            eprintln!("skipped: cannot run unshare: {e}");
            return;
        }
    };
    let t = text(&o);
    assert!(
        t.contains("warning:") && t.contains("only 32 MiB") && t.contains("--shm-size"),
        "{t}"
    );
    assert_eq!(o.status.code(), Some(2), "the create fails: {t}");
    assert!(
        t.contains("not enough space") && t.contains("available"),
        "{t}"
    );
}
