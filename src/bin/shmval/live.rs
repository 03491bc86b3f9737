//! The commands that show a pool's live state: `stat`, `pipes`, `watch`.

use super::*;
use shmval::{Broadcast, Pipe};
use std::time::Duration;

pub(super) fn stat(name: &str, json: bool, dir: &Dir) -> ExitCode {
    let Some(pool) = open("stat", name, dir) else {
        return ExitCode::from(2);
    };
    let s = pool.stats();
    let slots = pool.slots_in_use();
    let large_free = s.arena.saturating_sub(s.arena_used);
    let fragmentation = if large_free == 0 {
        0.0
    } else {
        1.0 - s.largest_free as f64 / large_free as f64
    };
    if json {
        let classes: Vec<_> = s
            .classes
            .iter()
            .map(|c| serde_json::json!({"size": c.size, "in_use": c.in_use, "free": c.free, "slabs": c.slabs}))
            .collect();
        json_out(&serde_json::json!({
            "name": name,
            "total": s.total,
            "arena": s.arena,
            "in_use": s.in_use,
            "bookkeeping": s.bookkeeping,
            "free": s.free,
            "high_water": s.high_water,
            "largest_free": s.largest_free,
            "small_in_use": s.small_in_use,
            "large_in_use": s.large_in_use,
            "large_blocks": s.large_blocks,
            "slabs": s.slabs,
            "arena_used": s.arena_used,
            "leaked": s.leaked,
            "cache_slots_in_use": slots,
            "large_free": large_free,
            "fragmentation": (fragmentation * 1000.0).round() / 1000.0,
            "classes": classes,
        }));
        return ExitCode::SUCCESS;
    }
    println!(
        "pool {name}: {} arena; {} in use by values and your own blocks, {} free, {} in \
         the processes' reference ledgers",
        human(s.arena),
        human(s.in_use),
        human(s.free),
        human(s.bookkeeping)
    );
    println!(
        "small blocks: {} handed out (ledgers included); large blocks: {} in {}",
        human(s.small_in_use),
        human(s.large_in_use),
        s.large_blocks
    );
    println!(
        "large heap: {} used (slabs included), largest free block {}, fragmentation {:.1}% \
         (1 - largest free / free); high water {}",
        human(s.arena_used),
        human(s.largest_free),
        fragmentation * 100.0,
        human(s.high_water)
    );
    println!(
        "slabs: {} of 64 KiB; cache slots in use: {slots}; blocks dropped for want of a \
         list: {}",
        s.slabs, s.leaked
    );
    println!(
        "{:>8} {:>10} {:>10} {:>6}",
        "CLASS", "IN USE", "FREE", "SLABS"
    );
    for c in s.classes.iter().filter(|c| c.slabs > 0) {
        println!(
            "{:>8} {:>10} {:>10} {:>6}",
            c.size, c.in_use, c.free, c.slabs
        );
    }
    ExitCode::SUCCESS
}

pub(super) fn pipes(name: &str, json: bool, dir: &Dir) -> ExitCode {
    let Some(pool) = open("pipes", name, dir) else {
        return ExitCode::from(2);
    };
    let (ps, bs) = match (Pipe::names(&pool), Broadcast::names(&pool)) {
        (Ok(p), Ok(b)) => (p, b),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("shmval pipes: {name}: {e}");
            return ExitCode::from(2);
        }
    };
    let pipes: Vec<_> = ps
        .iter()
        .filter_map(|n| Pipe::open(&pool, n, Duration::ZERO).ok())
        .map(|p| p.status())
        .collect();
    let bcasts: Vec<_> = bs
        .iter()
        .filter_map(|n| Broadcast::open(&pool, n, Duration::ZERO).ok())
        .map(|b| b.status())
        .collect();
    if json {
        json_out(&serde_json::json!({ "pipes": pipes, "broadcasts": bcasts }));
        return ExitCode::SUCCESS;
    }
    if pipes.is_empty() && bcasts.is_empty() {
        println!("pool {name}: no pipes, no broadcasts");
    }
    for p in &pipes {
        println!(
            "pipe {}: {}/{} values, {} sent, {} received{}; send side {}, receive side {}; \
             {} user(s){}{}",
            p.name,
            p.len,
            p.capacity,
            p.sent,
            p.received,
            if p.closed { ", CLOSED" } else { "" },
            p.send_side,
            p.recv_side,
            p.users,
            if p.senders_sleeping {
                "; a sender sleeps"
            } else {
                ""
            },
            if p.receivers_sleeping {
                "; a receiver sleeps"
            } else {
                ""
            },
        );
    }
    for b in &bcasts {
        println!(
            "broadcast {}: {}/{} values held, {} sent, policy {}{}; {} subscriber(s){}",
            b.name,
            b.len,
            b.capacity,
            b.sent,
            b.policy,
            if b.closed { ", CLOSED" } else { "" },
            b.subscribers.len(),
            if b.subscribers_sleeping {
                "; a subscriber sleeps"
            } else {
                ""
            },
        );
        for s in &b.subscribers {
            println!(
                "  subscriber {}: lag {}, missed {}",
                s.pid.map_or("(gone)".to_string(), |p| format!("pid {p}")),
                s.lag,
                s.missed
            );
        }
    }
    ExitCode::SUCCESS
}

pub(super) fn watch(name: &str, interval: f64, count: Option<u64>, dir: &Dir) -> ExitCode {
    let Some(pool) = open("watch", name, dir) else {
        return ExitCode::from(2);
    };
    let every = Duration::from_secs_f64(interval.clamp(0.05, 3600.0));
    let mut last: std::collections::HashMap<String, (u64, u64)> = Default::default();
    let mut at = Instant::now();
    let tty = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let mut n = 0u64;
    loop {
        let s = pool.stats();
        let info = pool.info();
        let dt = at.elapsed().as_secs_f64().max(1e-9);
        at = Instant::now();
        if tty {
            print!("\x1b[2J\x1b[H");
        }
        println!(
            "pool {name}: {} of {} in use ({:.1}%), high water {}, {} attached",
            human(s.in_use),
            human(s.arena),
            s.in_use as f64 * 100.0 / s.arena.max(1) as f64,
            human(s.high_water),
            info.attached.len()
        );
        println!(
            "{:<24} {:>10} {:>12} {:>12} {:>12}",
            "PIPE", "LEN/CAP", "SENT/S", "RECV/S", "TOTAL SENT"
        );
        for p in Pipe::names(&pool).unwrap_or_default() {
            let Ok(h) = Pipe::open(&pool, &p, Duration::ZERO) else {
                continue;
            };
            let (sent, recv) = (h.sent(), h.received());
            let (ls, lr) = last.get(&p).copied().unwrap_or((sent, recv));
            last.insert(p.clone(), (sent, recv));
            println!(
                "{:<24} {:>10} {:>12.0} {:>12.0} {:>12}",
                p,
                format!("{}/{}", h.len(), h.capacity()),
                (sent - ls) as f64 / dt,
                (recv - lr) as f64 / dt,
                sent
            );
        }
        for b in Broadcast::names(&pool).unwrap_or_default() {
            let Ok(h) = Broadcast::open(&pool, &b, Duration::ZERO) else {
                continue;
            };
            let key = format!("broadcast {b}");
            let sent = h.sent();
            let (ls, _) = last.get(&key).copied().unwrap_or((sent, 0));
            last.insert(key.clone(), (sent, 0));
            println!(
                "{:<24} {:>10} {:>12.0} {:>12} {:>12}",
                key,
                format!("{}/{}", h.len(), h.capacity()),
                (sent - ls) as f64 / dt,
                format!("{} subs", h.subscribers()),
                sent
            );
        }
        n += 1;
        if count.is_some_and(|c| n >= c) {
            return ExitCode::SUCCESS;
        }
        std::thread::sleep(every);
    }
}
