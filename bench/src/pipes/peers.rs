//! The peers shmval's pipes are measured against, on the same `Side` set-up: a raw
//! shared cache line and raw rings (the physical limits), a Unix domain socket, a
//! Unix pipe (FIFO), iceoryx2 publish-subscribe.

use super::*;

pub(super) fn pingpong_raw(s: &Side, n: u64) -> f64 {
    let child = s.child("echo-raw", n);
    let line = &s.raw()[0];
    let t = Instant::now();
    for i in 0..n {
        line.store(2 * i + 1, Ordering::Release);
        while line.load(Ordering::Acquire) != 2 * i + 2 {
            std::hint::spin_loop();
        }
    }
    let ns = t.elapsed().as_nanos() as f64 / n as f64 / 2.0;
    finish(child);
    ns
}

/// Ping-pong through two raw lines, one each way (each side stores to its own line
/// and spins on the other's): the floor of any two one-way queues, which a ping and
/// a pong pipe are. A single line shared both ways (`pingpong_raw`) is cheaper: each
/// side reads and then writes the same line, which the cores hand over whole.
pub(super) fn pingpong_raw_two(s: &Side, n: u64) -> f64 {
    let child = s.child("echo-raw-two", n);
    let (ping, pong) = (&s.raw()[0], &s.raw()[8]);
    let t = Instant::now();
    for i in 0..n {
        ping.store(i + 1, Ordering::Release);
        while pong.load(Ordering::Acquire) != i + 1 {
            std::hint::spin_loop();
        }
    }
    let ns = t.elapsed().as_nanos() as f64 / n as f64 / 2.0;
    finish(child);
    ns
}

/// Ping-pong through two raw rings with the pipe's cell protocol (cells 0..512 of
/// the raw ring one way, 512..1024 back; each side polls the next cell's word): the
/// physical limit of the pipe's layout, for telling it from the pipe's code.
pub(super) fn pingpong_cells(s: &Side, n: u64) -> f64 {
    let child = s.child("echo-cells", n);
    let raw = s.raw();
    let t = Instant::now();
    for i in 0..n {
        cell_put(raw, (i % RING) as usize, i);
        cell_take(raw, 512 + (i % RING) as usize, i);
    }
    let ns = t.elapsed().as_nanos() as f64 / n as f64 / 2.0;
    finish(child);
    ns
}

/// Writes value `i` into raw cell `c` (slot, then the word).
pub(super) fn cell_put(raw: &[AtomicU64], c: usize, i: u64) {
    let c = 64 + 8 * c;
    raw[c + 2].store(7, Ordering::Relaxed);
    raw[c + 3].store(i, Ordering::Relaxed);
    raw[c].store(i << 16 | 2, Ordering::Release);
}

/// Waits for value `i` in raw cell `c` and reads it.
pub(super) fn cell_take(raw: &[AtomicU64], c: usize, i: u64) {
    let c = 64 + 8 * c;
    while raw[c].load(Ordering::Acquire) != i << 16 | 2 {
        std::hint::spin_loop();
    }
    let (t, v) = (
        raw[c + 2].load(Ordering::Relaxed),
        raw[c + 3].load(Ordering::Relaxed),
    );
    assert_eq!((t, v), (7, i));
}

pub(super) fn pingpong_uds(s: &Side, n: u64) -> f64 {
    let path = format!("/tmp/shmval-bench-{}.sock", std::process::id());
    let _ = std::fs::remove_file(&path);
    let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    let child = s.child("echo-uds", n);
    let (mut sock, _) = listener.accept().unwrap();
    let _ = std::fs::remove_file(&path);
    let mut rx = sock.try_clone().unwrap();
    let ns = pingpong_bytes(&mut sock, &mut rx, n);
    finish(child);
    ns
}

/// Ping-pong of `n` 8-byte counters over a byte stream (the other side echoes them):
/// ns per hop, each echo checked.
pub(super) fn pingpong_bytes(tx: &mut impl Write, rx: &mut impl Read, n: u64) -> f64 {
    let mut buf = [0u8; 8];
    let t = Instant::now();
    for i in 0..n {
        tx.write_all(&i.to_le_bytes()).unwrap();
        rx.read_exact(&mut buf).unwrap();
        assert_eq!(u64::from_le_bytes(buf), i);
    }
    t.elapsed().as_nanos() as f64 / n as f64 / 2.0
}

/// The other side of [`pingpong_bytes`].
pub(super) fn echo_bytes(rx: &mut impl Read, tx: &mut impl Write, n: u64) {
    let mut buf = [0u8; 8];
    for _ in 0..n {
        rx.read_exact(&mut buf).unwrap();
        tx.write_all(&buf).unwrap();
    }
}

/// FIFOs of the Unix-pipe ping-pong: parent → child, child → parent.
pub(super) fn fifo_paths(parent: u32) -> (String, String) {
    let stem = format!("/tmp/shmval-bench-{parent}");
    (format!("{stem}.ping"), format!("{stem}.pong"))
}

pub(super) fn pingpong_fifo(s: &Side, n: u64) -> f64 {
    let (ping, pong) = fifo_paths(std::process::id());
    for p in [&ping, &pong] {
        let _ = std::fs::remove_file(p);
        nix::unistd::mkfifo(p.as_str(), nix::sys::stat::Mode::S_IRWXU).unwrap();
    }
    let child = s.child("echo-fifo", n);
    // Same opening order as the child (ping, then pong): no open blocks forever.
    let mut tx = std::fs::OpenOptions::new().write(true).open(&ping).unwrap();
    let mut rx = std::fs::File::open(&pong).unwrap();
    for p in [&ping, &pong] {
        let _ = std::fs::remove_file(p);
    }
    let ns = pingpong_bytes(&mut tx, &mut rx, n);
    finish(child);
    ns
}

/// One-way through the raw ring: this process sends `n`, the child receives; million
/// values per second from the first send to the child's last receive. `cached`: each
/// side rereads the other's index only when the one it saw says full/empty (else for
/// every value, the scheme of Boost.Lockfree's `spsc_queue`).
pub(super) fn oneway_ring(s: &Side, n: u64, cached: bool) -> f64 {
    let child = s.child(
        if cached {
            "drain-ring"
        } else {
            "drain-ring-plain"
        },
        n,
    );
    let raw = s.raw();
    let (tail, head) = (&raw[16], &raw[32]);
    let start = mono_ns();
    let mut seen_head = 0;
    for i in 0..n {
        if !cached {
            seen_head = head.load(Ordering::Acquire);
        }
        while i - seen_head >= CAP {
            seen_head = head.load(Ordering::Acquire);
            std::hint::spin_loop();
        }
        raw[64 + 8 * (i % CAP) as usize].store(i, Ordering::Relaxed);
        tail.store(i + 1, Ordering::Release);
    }
    let end: u64 = finish(child).trim().parse().unwrap();
    n as f64 / ((end - start) as f64 / 1e3)
}

/// The receiving half of [`oneway_ring`]; prints the time of the last receive.
pub(super) fn drain_ring(s: &Side, n: u64, cached: bool, ready: impl Fn()) {
    let raw = s.raw();
    let (tail, head) = (&raw[16], &raw[32]);
    ready();
    let mut seen_tail = 0;
    for i in 0..n {
        if !cached {
            seen_tail = tail.load(Ordering::Acquire);
        }
        while seen_tail == i {
            seen_tail = tail.load(Ordering::Acquire);
            std::hint::spin_loop();
        }
        let v = raw[64 + 8 * (i % CAP) as usize].load(Ordering::Relaxed);
        assert_eq!(v, i);
        head.store(i + 1, Ordering::Release);
    }
    println!("{}", mono_ns());
}

/// One-way through a raw ring with the pipe's cell protocol (64-byte cells: a state
/// word, then a two-word slot; the receiver polls the next cell's word, not an
/// index), for telling the protocol's cost from the API's.
pub(super) fn oneway_cells(s: &Side, n: u64) -> f64 {
    let child = s.child("drain-cells", n);
    let raw = s.raw();
    let head = &raw[32];
    let start = mono_ns();
    let mut seen_head = 0;
    for i in 0..n {
        while i - seen_head >= CAP {
            seen_head = head.load(Ordering::Acquire);
            std::hint::spin_loop();
        }
        cell_put(raw, (i % CAP) as usize, i);
    }
    let end: u64 = finish(child).trim().parse().unwrap();
    n as f64 / ((end - start) as f64 / 1e3)
}

/// The receiving half of [`oneway_cells`].
pub(super) fn drain_cells(s: &Side, n: u64, ready: impl Fn()) {
    let raw = s.raw();
    let head = &raw[32];
    ready();
    for i in 0..n {
        cell_take(raw, (i % CAP) as usize, i);
        head.store(i + 1, Ordering::Release);
    }
    println!("{}", mono_ns());
}

/// The iceoryx2 peer's files in /dev/shm (its global management segment outlives
/// its nodes by design).
pub(super) fn iox2_files() -> Vec<std::path::PathBuf> {
    std::fs::read_dir("/dev/shm")
        .map(|d| {
            d.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with("iox2_"))
                })
                .collect()
        })
        .unwrap_or_default()
}

// --- iceoryx2 publish-subscribe, 64-byte payload ----------------------------------

pub(super) type Payload = [u8; 64];
pub(super) type IceNode = iceoryx2::node::Node<iceoryx2::service::ipc::Service>;
pub(super) type IcePub =
    iceoryx2::port::publisher::Publisher<iceoryx2::service::ipc::Service, Payload, ()>;
pub(super) type IceSub =
    iceoryx2::port::subscriber::Subscriber<iceoryx2::service::ipc::Service, Payload, ()>;

pub(super) fn ice_ports(
    tag: &str,
    publish_on: &str,
    subscribe_on: &str,
) -> (IceNode, IcePub, IceSub) {
    use iceoryx2::prelude::*;
    let node = NodeBuilder::new()
        .create::<ipc::Service>()
        .expect("iceoryx2 node");
    let service = |name: &str| {
        node.service_builder(
            &format!("shmval-bench/{tag}/{name}")
                .as_str()
                .try_into()
                .unwrap(),
        )
        .publish_subscribe::<Payload>()
        .open_or_create()
        .expect("iceoryx2 service")
    };
    let publisher = service(publish_on).publisher_builder().create().unwrap();
    let subscriber = service(subscribe_on).subscriber_builder().create().unwrap();
    (node, publisher, subscriber)
}

pub(super) fn ice_send(p: &IcePub, b: u8) {
    let sample = p.loan_uninit().unwrap();
    sample.write_payload([b; 64]).send().unwrap();
}

pub(super) fn pingpong_iceoryx2(s: &Side, n: u64) -> f64 {
    let tag = format!("{}", std::process::id());
    let (_node, ping, pong) = ice_ports(&tag, "ping", "pong");
    let child = s.child("echo-iceoryx2", n);
    // Warm up until the child's subscriber is connected (a ping may be missed).
    'warm: loop {
        ice_send(&ping, 1);
        let t = Instant::now();
        while t.elapsed() < Duration::from_millis(10) {
            if pong.receive().unwrap().is_some() {
                break 'warm;
            }
        }
    }
    std::thread::sleep(Duration::from_millis(20));
    while pong.receive().unwrap().is_some() {}
    let t = Instant::now();
    for i in 0..n {
        ice_send(&ping, (i % 200) as u8);
        loop {
            if let Some(sample) = pong.receive().unwrap() {
                debug_assert_eq!(sample[63], (i % 200) as u8);
                break;
            }
            std::hint::spin_loop();
        }
    }
    let ns = t.elapsed().as_nanos() as f64 / n as f64 / 2.0;
    ice_send(&ping, 0xFF);
    finish(child);
    ns
}

pub(super) fn echo_iceoryx2(ready: impl Fn()) {
    let tag = format!("{}", nix::unistd::getppid());
    let (_node, pong, ping) = ice_ports(&tag, "pong", "ping");
    ready();
    loop {
        let Some(sample) = ping.receive().unwrap() else {
            std::hint::spin_loop();
            continue;
        };
        let b = sample[0];
        drop(sample);
        if b == 0xFF {
            return;
        }
        ice_send(&pong, b);
    }
}
