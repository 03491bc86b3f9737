//! The embedding use case: worker processes fill one shared results table, a reader
//! watches it fill, and when the table is removed every byte comes back.
//!
//! ```text
//! cargo run --release --example shared_table            # starts 3 workers and a reader
//! ```

use shmval::{tab, Pool, PoolOptions};
use std::process::Command;
use std::time::{Duration, Instant};

const WORKERS: usize = 3;
const RESULTS: i64 = 2000;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("worker") => return worker(&args[1], args[2].parse()?),
        Some("reader") => return reader(&args[1]),
        _ => {}
    }
    let name = format!("shared-table-{}", std::process::id());
    let pool = Pool::create_with(&name, 32 << 20, &PoolOptions::new().remove_on_drop(true))?;
    let root = pool.root()?;
    // The root keeps its entry block once it has grown; measure after that.
    root.insert("results", 0)?;
    root.remove("results")?;
    let baseline = pool.stats().in_use;
    root.insert("results", tab! { "done" => 0 })?;

    let exe = std::env::current_exe()?;
    let mut kids: Vec<_> = (0..WORKERS)
        .map(|w| {
            Command::new(&exe)
                .args(["worker", &name, &w.to_string()])
                .spawn()
        })
        .collect::<Result<_, _>>()?;
    kids.push(Command::new(&exe).args(["reader", &name]).spawn()?);
    for k in &mut kids {
        assert!(k.wait()?.success(), "a child failed");
    }

    let results = root
        .get("results")?
        .and_then(|v| v.as_tab())
        .ok_or("no results table")?;
    println!(
        "main: {} entries, done = {}",
        results.len()?,
        results.get("done")?.ok_or("no counter")?
    );
    drop(results);
    root.remove("results")?;
    println!(
        "main: removed the table: {} bytes in use (baseline {baseline})",
        pool.stats().in_use
    );
    assert_eq!(pool.stats().in_use, baseline);
    Ok(())
}

/// Opens the pool (waiting for it) and finds the shared results table.
fn results_table(name: &str) -> Result<(Pool, shmval::ShmTab), Box<dyn std::error::Error>> {
    let pool = Pool::open(name, Duration::from_secs(5))?;
    let results = pool
        .root()?
        .get("results")?
        .and_then(|v| v.as_tab())
        .ok_or("no results table")?;
    Ok((pool, results))
}

fn worker(name: &str, id: i64) -> Result<(), Box<dyn std::error::Error>> {
    let (_pool, results) = results_table(name)?;
    for i in 0..RESULTS {
        // Each worker's own keys: no coordination needed.
        results.insert(
            format!("w{id}-{i}"),
            tab! { "worker" => id, "value" => (i * i) as f64 / 7.0 },
        )?;
        // The shared counter: a read-modify-write, so inside one transaction.
        let tx = results.lock()?;
        let done = tx
            .get("done")?
            .ok_or("no counter")?
            .to_val()?
            .as_i64()
            .ok_or("counter is not an int")?;
        tx.insert("done", done + 1)?;
    }
    Ok(())
}

fn reader(name: &str) -> Result<(), Box<dyn std::error::Error>> {
    let (_pool, results) = results_table(name)?;
    let want = WORKERS as i64 * RESULTS;
    let start = Instant::now();
    loop {
        let done = results.get("done")?.ok_or("no counter")?.to_val()?.as_i64();
        println!(
            "reader: {:>6} entries, done = {}",
            results.len()?,
            done.unwrap_or(0)
        );
        if done == Some(want) {
            break;
        }
        if start.elapsed() > Duration::from_secs(60) {
            return Err("workers never finished".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    println!(
        "reader: e.g. w1-3 = {}",
        results.get("w1-3")?.ok_or("missing")?
    );
    Ok(())
}
