//! The code shown in README.md and docs/ARCHITECTURE.md, compiled and run (each
//! process's part in turn, in one process): a snippet that stops compiling or
//! working fails here.

mod common;

use common::Scratch;
use shmval::{tab, Pipe, Pool, PoolOptions};
use std::alloc::Layout;
use std::time::Duration;

#[test]
fn the_readme_and_architecture_snippets_work() -> Result<(), Box<dyn std::error::Error>> {
    let s = Scratch::new("snippets");
    let name = s.name();
    // README: a pipe between two processes.
    let pool = Pool::create_with(name, 64 << 20, &PoolOptions::new().remove_on_drop(true))?;
    let pipe = Pipe::create(&pool, "raw", 1024)?;
    pipe.send_timeout(
        pool.share(&tab! { "seq" => 1, "data" => vec![1.5f64; 8] })?,
        Duration::from_secs(3),
    )?;
    let pool2 = Pool::open(name, Duration::from_secs(5))?;
    let pipe2 = Pipe::open(&pool2, "raw", Duration::from_secs(5))?;
    let v = pipe2.recv_timeout(Duration::from_millis(500))?;
    assert_eq!(
        v.to_string(),
        "{'seq': 1, 'data': array('d', [1.5, 1.5, 1.5, 1.5, 1.5, 1.5, 1.5, 1.5])}"
    );
    // README: a named value in the root table.
    let reading =
        pool.share(&tab! { "seq" => 1, "name" => "sensor", "data" => vec![1.5f64; 8] })?;
    pool.root()?.insert("latest", &reading)?;
    assert!(pool2.root()?.get("latest")?.is_some());
    // README: raw allocation and a user word.
    let off = pool.alloc(Layout::new::<[u64; 8]>())?;
    pool.user_word(4)
        .store(off.get(), std::sync::atomic::Ordering::Release);
    assert_eq!(
        pool2
            .user_word(4)
            .load(std::sync::atomic::Ordering::Acquire),
        off.get()
    );
    // README: messages built in place, serde, typed reads, a receive loop.
    #[derive(serde::Serialize, serde::Deserialize)]
    struct Frame {
        seq: u64,
        name: String,
        samples: Vec<f64>,
    }
    let pipe = Pipe::create(&pool, "msgs", 1024)?;
    let samples = [0.5f64; 8];
    pipe.send(shmval::shm_tab!(pool, {"seq" => 1, "name" => "cam0", "data" => &samples[..]})?)?;
    pipe.send(pool.share_ser(&Frame {
        seq: 2,
        name: "cam1".into(),
        samples: samples.to_vec(),
    })?)?;
    pipe.close();
    let mut seen = Vec::new();
    for v in &pipe {
        let v = v?;
        let t = v.as_tab().unwrap();
        seen.push((t.get_as::<i64>("seq")?, t.get_as::<String>("name")?));
    }
    assert_eq!(
        seen,
        [
            (Some(1), Some("cam0".into())),
            (Some(2), Some("cam1".into()))
        ]
    );
    let back: Frame = pool
        .share_ser(&Frame {
            seq: 3,
            name: "x".into(),
            samples: vec![],
        })?
        .deserialize()?;
    assert_eq!(
        (back.seq, back.name.as_str(), back.samples.len()),
        (3, "x", 0)
    );
    // ARCHITECTURE: a heap value is copied in, a shared handle stored by reference.
    let root = pool.root()?;
    let t = tab! { "a" => 1 };
    root.insert("t", &t)?;
    let shared = pool.share(&t)?;
    root.insert("also", &shared)?;
    assert_eq!(
        root.get("t")?.map(|v| v.to_string()).as_deref(),
        Some("{'a': 1}")
    );
    Ok(())
}
