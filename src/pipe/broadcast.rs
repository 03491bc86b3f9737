//! Broadcast: a named channel on which every subscriber sees every value, in order.
//!
//! ```
//! use shmval::{Broadcast, Policy, Pool, PoolOptions};
//! use std::time::Duration;
//!
//! # let name = format!("doc-bcast-{}", std::process::id());
//! let pool = Pool::create_with(&name, 4 << 20, &PoolOptions::new().remove_on_drop(true))?;
//! let news = Broadcast::create(&pool, "news", 64, Policy::DropOldest)?;
//!
//! // Typically in other processes: open by name, subscribe, receive.
//! let a = Broadcast::open(&pool, "news", Duration::from_secs(1))?.subscribe()?;
//! let b = news.subscribe()?;
//! news.send(pool.share(&shmval::Val::from("hello"))?)?;
//! assert_eq!(a.recv()?.to_string(), "'hello'");
//! assert_eq!(b.recv()?.to_string(), "'hello'");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! A broadcast is one ring of value slots with a single write position (`tail`) and a
//! table of subscribers, each with its own read position (`cursor`). The ring holds
//! one reference to each value it carries; a subscriber's receive takes a reference
//! of its own, and the ring lets go of a value as soon as every subscriber has
//! passed it (`released` follows the slowest cursor), so a broadcast pins no value
//! nobody will read. A subscriber sees the values sent after it subscribed.
//!
//! When the slowest subscriber is a whole ring behind, the channel's [`Policy`]
//! decides: the sender waits ([`Policy::Block`]), the slowest subscribers skip the
//! oldest value and are told how many they missed ([`Policy::DropOldest`], reported
//! as [`BroadcastRecvError::Lagged`] by their next receive), or the sender waits for
//! at most a given time and then drops ([`Policy::DropAfter`]).
//!
//! All changes happen under the channel's robust lock (a holder that dies is detected
//! by the next taker), in an order that leaves the channel usable wherever a process
//! dies: a value is written to its slot before `tail` counts it, a subscriber takes
//! its reference before its cursor moves past the value, and a slot is emptied before
//! `released` moves past it and before its reference is dropped. A death therefore
//! loses at most the one reference in the dead process's hands, and never frees a
//! value twice. A subscriber process that dies is dropped from the table by the first
//! sender it would block (liveness from its process token), so it never blocks the
//! sender for long.

use super::directory::{check_name, find, make_named, BROADCASTS};
use super::wait::Deadline;
use super::wait::{Spin, STUCK_CHECK};
use super::{PipeError, SendError, DEFAULT_SPIN};
use crate::shm::layout::{tag, ObjHeader, Slot, HDR};
use crate::shm::{Raw, ShmVal, ValError};
use crate::sync::EventCount;
use crate::Pool;
use shmval_alloc::{LockError, LockState, RobustLock, LOCK_PATIENCE};
use std::fmt;
use std::ptr::NonNull;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release, SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use thiserror::Error;

/// Subscribers one broadcast can have at once.
pub const MAX_SUBSCRIBERS: usize = 256;
/// Largest capacity of a broadcast.
const MAX_CAP: u64 = 1 << 24;
/// "SVBCST01".
const MAGIC: u64 = u64::from_le_bytes(*b"SVBCST01");

/// What a broadcast does when its slowest subscriber is a whole ring behind.
///
/// ```
/// use shmval::{Broadcast, BroadcastRecvError, Policy, Pool, PoolOptions, ShmVal};
/// # let name = format!("doc-policy-{}", std::process::id());
/// let pool = Pool::create_with(&name, 4 << 20, &PoolOptions::new().remove_on_drop(true))?;
/// // A ring of 2 whose subscriber reads nothing while 3 values are sent.
/// let b = Broadcast::create(&pool, "ticks", 2, Policy::DropOldest)?;
/// let slow = b.subscribe()?;
/// for i in 0..3i64 {
///     b.send(ShmVal::from(i))?; // never waits: the oldest value is dropped
/// }
/// assert!(matches!(slow.recv(), Err(BroadcastRecvError::Lagged(1))));
/// assert_eq!(slow.recv()?.to_string(), "1");
/// assert_eq!(slow.recv()?.to_string(), "2");
/// // With Block, a send waits for the slowest subscriber instead (try_send: Full).
/// let blocking = Broadcast::create(&pool, "orders", 1, Policy::Block)?;
/// let _sub = blocking.subscribe()?;
/// blocking.send(ShmVal::from(1i64))?;
/// assert!(blocking.try_send(ShmVal::from(2i64)).is_err());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// The sender waits until the slowest subscriber has received (or has died, or
    /// unsubscribed). No subscriber misses anything.
    Block,
    /// The sender never waits: the slowest subscribers skip the oldest value, and
    /// their next receive reports how many they missed
    /// ([`BroadcastRecvError::Lagged`]).
    DropOldest,
    /// The sender waits at most this long for the slowest subscriber, then drops as
    /// [`Policy::DropOldest`] does. `try_send` never waits (it reports `Full`).
    DropAfter(Duration),
}

impl Policy {
    fn encode(self) -> (u64, u64) {
        match self {
            Policy::Block => (0, 0),
            Policy::DropOldest => (1, 0),
            Policy::DropAfter(d) => (2, d.as_nanos().min(u128::from(u64::MAX)) as u64),
        }
    }

    fn decode(kind: u64, ns: u64) -> Option<Policy> {
        match kind {
            0 => Some(Policy::Block),
            1 => Some(Policy::DropOldest),
            2 => Some(Policy::DropAfter(Duration::from_nanos(ns))),
            _ => None,
        }
    }
}

/// A failed receive from a broadcast.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum BroadcastRecvError {
    /// Nothing new (`try_recv`).
    #[error("nothing new on the broadcast")]
    Empty,
    /// Nothing arrived before the deadline.
    #[error("nothing received before the deadline")]
    Timeout,
    /// The broadcast is closed and this subscriber has received everything.
    #[error("broadcast closed")]
    Closed,
    /// This subscriber fell a whole ring behind and skipped this many values (the
    /// next receive returns the oldest value still there).
    #[error("subscriber lagged: {0} values missed")]
    Lagged(u64),
    /// The broadcast is broken (corrupt shared memory), or the subscription is not
    /// this process's (a forked child must subscribe again).
    #[error("broadcast broken: {0}")]
    Broken(PipeError),
}

/// Fixed fields after the object header.
#[repr(C)]
#[derive(Debug)]
struct Meta {
    magic: AtomicU64,
    cap: AtomicU64,
    /// Entries of the subscriber table ([`MAX_SUBSCRIBERS`]).
    subs: AtomicU64,
    /// Non-zero once closed.
    closed: AtomicU64,
    /// Creation time (Unix ns).
    created_ns: AtomicU64,
    /// 0 block, 1 drop oldest, 2 drop after `drop_after_ns`.
    policy: AtomicU64,
    drop_after_ns: AtomicU64,
    _reserved: AtomicU64,
}

/// One subscriber: the process it belongs to (0: free entry), the next position it
/// receives, and how many values it skipped since its last receive.
#[repr(C)]
#[derive(Debug)]
struct Sub {
    token: AtomicU64,
    cursor: AtomicU64,
    missed: AtomicU64,
    _reserved: AtomicU64,
}

/// A broadcast object; `cap` value slots follow at [`SLOTS_OFF`].
#[repr(C)]
#[derive(Debug)]
struct BcastHead {
    obj: ObjHeader,
    meta: Meta,
    lock: RobustLock,
    /// Next position to send; positions below it were sent.
    tail: AtomicU64,
    /// Positions below it are released (their slots empty).
    released: AtomicU64,
    /// Live subscriber entries: a hint kept by subscribe/unsubscribe and made exact
    /// by every `settle` (a send with no subscriber releases its value at once).
    subscribed: AtomicU64,
    _p0: AtomicU64,
    /// Subscribers sleep here.
    not_empty: EventCount,
    _p1: [u32; 31],
    /// Senders sleep here.
    not_full: EventCount,
    _p2: [u32; 31],
    subs: [Sub; MAX_SUBSCRIBERS],
}

const SLOTS_OFF: usize = std::mem::size_of::<BcastHead>();

// SAFETY: #[repr(C)], made of atomic integers (the lock is two, an eventcount one)
// and padding (`_p1`, `_p2`: plain u32 never read or written after zeroing).
unsafe impl crate::shm::layout::InShared for BcastHead {}

/// What shapes a broadcast object's bytes, for the pool's layout hash.
pub(crate) const LAYOUT_PARTS: [u64; 8] = {
    use std::mem::{offset_of, size_of};
    [
        MAGIC,
        offset_of!(BcastHead, lock) as u64,
        offset_of!(BcastHead, tail) as u64,
        offset_of!(BcastHead, not_empty) as u64,
        offset_of!(BcastHead, subs) as u64,
        size_of::<Sub>() as u64,
        MAX_SUBSCRIBERS as u64,
        SLOTS_OFF as u64,
    ]
};
const _: () = assert!(std::mem::offset_of!(BcastHead, meta) == HDR);
const _: () = assert!(std::mem::offset_of!(BcastHead, lock) == 80);
const _: () = assert!(std::mem::offset_of!(BcastHead, tail) == 96);
const _: () = assert!(std::mem::offset_of!(BcastHead, not_empty) == 128);
const _: () = assert!(std::mem::offset_of!(BcastHead, not_full) == 256);
const _: () = assert!(std::mem::offset_of!(BcastHead, subs) == 384);
const _: () = assert!(SLOTS_OFF == 384 + 32 * MAX_SUBSCRIBERS);

fn object_size(cap: u64) -> u64 {
    SLOTS_OFF as u64 + cap * std::mem::size_of::<Slot>() as u64
}

/// A validated view of a broadcast object in a mapped pool.
#[derive(Debug)]
struct Chan {
    off: u64,
    head: NonNull<BcastHead>,
    slots: NonNull<Slot>,
    cap: u64,
    policy: Policy,
}

// SAFETY: the pointers name shared memory made of atomics only, kept mapped by the
// pool handle stored next to every `Chan` (see `Inner`).
unsafe impl Send for Chan {}
// SAFETY: as above: every access is atomic.
unsafe impl Sync for Chan {}

/// Outcome of one locked send attempt.
enum Push {
    Sent,
    Full,
    Closed,
}

/// Outcome of one locked receive attempt.
enum Pull {
    Got(Raw),
    Lagged(u64),
    Empty,
    Closed,
}

fn corrupt(off: u64, what: &str) -> ValError {
    ValError::Corrupt {
        what: format!("broadcast at {off:#x}: {what}"),
    }
}

impl Chan {
    fn attach(pool: &Pool, off: u64) -> Result<Chan, ValError> {
        let o = pool.obj(off)?;
        if o.tag != tag::BCAST {
            return Err(corrupt(off, "not a broadcast object"));
        }
        let head = pool.at::<BcastHead>(off)?;
        let m = &head.meta;
        if m.magic.load(Acquire) != MAGIC {
            return Err(corrupt(off, "bad magic"));
        }
        let cap = m.cap.load(Relaxed);
        if cap == 0 || cap > MAX_CAP || object_size(cap) > o.size {
            return Err(corrupt(off, &format!("capacity {cap} vs {} bytes", o.size)));
        }
        if m.subs.load(Relaxed) != MAX_SUBSCRIBERS as u64 {
            return Err(corrupt(off, "subscriber table size"));
        }
        let policy = Policy::decode(m.policy.load(Relaxed), m.drop_after_ns.load(Relaxed))
            .ok_or_else(|| corrupt(off, "unknown policy"))?;
        let slots = pool.at::<Slot>(off + SLOTS_OFF as u64)?;
        Ok(Chan {
            off,
            head: NonNull::from(head),
            slots: NonNull::from(slots),
            cap,
            policy,
        })
    }

    fn format(pool: &Pool, off: u64, cap: u64, policy: Policy) -> Result<(), ValError> {
        let head = pool.at::<BcastHead>(off)?;
        let m = &head.meta;
        let (kind, ns) = policy.encode();
        m.cap.store(cap, Relaxed);
        m.subs.store(MAX_SUBSCRIBERS as u64, Relaxed);
        m.policy.store(kind, Relaxed);
        m.drop_after_ns.store(ns, Relaxed);
        m.created_ns.store(crate::sys::now_unix_ns(), Relaxed);
        m.magic.store(MAGIC, Release);
        Ok(())
    }

    #[inline]
    fn head(&self) -> &BcastHead {
        // SAFETY: validated in `attach`; mapped while the owning pool handle lives.
        unsafe { self.head.as_ref() }
    }

    #[inline]
    fn slot(&self, pos: u64) -> &Slot {
        // SAFETY: `pos % cap < cap`, and `cap` slots were bounds-checked in `attach`.
        unsafe { &*self.slots.as_ptr().add((pos % self.cap) as usize) }
    }

    fn off(&self) -> u64 {
        self.off
    }

    fn lock<'a>(&'a self, pool: &'a Pool) -> Result<Locked<'a>, ValError> {
        self.lock_within(pool, LOCK_PATIENCE)
    }

    /// [`Chan::lock`], waiting for a live holder no longer than `patience` (a timed
    /// call's time left; zero for a `try_` call).
    fn lock_within<'a>(
        &'a self,
        pool: &'a Pool,
        patience: Duration,
    ) -> Result<Locked<'a>, ValError> {
        let state = self
            .head()
            .lock
            .lock_within::<crate::LinuxPlatform>(Some(patience))
            .map_err(|e| match e {
                LockError::Timeout => ValError::LockTimeout,
                LockError::Reentrant => ValError::Reentrant,
            })?;
        let g = Locked { ch: self, pool };
        fail_point!("broadcast.locked");
        if state == LockState::Recovered {
            // The last holder died: whatever it left is consistent by construction
            // (see the module doc); releasing what nobody needs any more is all.
            g.settle()?;
        }
        Ok(g)
    }

    fn closed(&self) -> bool {
        self.head().meta.closed.load(Acquire) != 0
    }

    /// Values the ring holds (positions `released..tail`): what a dying broadcast
    /// releases and what `check` walks.
    fn held(&self, pool: &Pool, f: &mut dyn FnMut(Raw)) -> Result<(), ValError> {
        let h = self.head();
        let (rel, tail) = (h.released.load(Acquire), h.tail.load(Acquire));
        if rel > tail || tail - rel > self.cap {
            return Err(corrupt(self.off(), &format!("released {rel}, tail {tail}")));
        }
        for p in rel..tail {
            f(pool.read(self.slot(p)));
        }
        Ok(())
    }
}

/// The channel's lock, held.
struct Locked<'a> {
    ch: &'a Chan,
    pool: &'a Pool,
}

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        // SAFETY: a `Locked` exists only while this thread holds the lock.
        unsafe { self.ch.head().lock.unlock::<crate::LinuxPlatform>() };
    }
}

impl Locked<'_> {
    /// Checks `released <= tail <= released + cap`, brings every cursor into
    /// `released..=tail` (a cursor outside is corrupt: counted as missed), and
    /// releases the positions every subscriber has passed.
    fn settle(&self) -> Result<(), ValError> {
        let (ch, h) = (self.ch, self.ch.head());
        let (rel, tail) = (h.released.load(Relaxed), h.tail.load(Relaxed));
        if rel > tail || tail - rel > ch.cap {
            return Err(corrupt(ch.off(), &format!("released {rel}, tail {tail}")));
        }
        let (mut min, mut live) = (tail, 0);
        for s in &h.subs {
            if s.token.load(Relaxed) == 0 {
                continue;
            }
            live += 1;
            let c = s.cursor.load(Relaxed);
            let c = if c < rel {
                s.missed.fetch_add(rel - c, Relaxed);
                s.cursor.store(rel, Relaxed);
                rel
            } else if c > tail {
                s.cursor.store(tail, Relaxed);
                tail
            } else {
                c
            };
            min = min.min(c);
        }
        h.subscribed.store(live, Relaxed);
        for p in rel..min {
            // Count it released (the commit: the slot is no longer held, and is
            // never read again before a sender refills it), then drop the
            // reference: a death in between leaks the one value, never frees it
            // twice. The slot is not cleared: its two stores could be torn by a
            // death, and a torn slot below `released` would be read again.
            let r = self.pool.read(ch.slot(p));
            h.released.store(p + 1, SeqCst); // before `notify_waiters` below
            self.pool.release(r);
        }
        if min > rel {
            h.not_full.notify_waiters();
        }
        Ok(())
    }

    /// Frees the entries of dead subscribers that hold the oldest value back.
    fn drop_dead_laggards(&self) {
        let h = self.ch.head();
        let rel = h.released.load(Relaxed);
        for s in &h.subs {
            let t = s.token.load(Relaxed);
            if t != 0 && s.cursor.load(Relaxed) <= rel && !crate::platform::token_alive(t) {
                s.token.store(0, Release);
            }
        }
    }

    /// One send attempt: `force` drops the oldest value for the slowest subscribers
    /// when the ring is full; `reap` first checks whether those are alive.
    fn push(&self, r: Raw, force: bool, reap: bool) -> Result<Push, ValError> {
        let (ch, h) = (self.ch, self.ch.head());
        if ch.closed() {
            return Ok(Push::Closed);
        }
        let tail = h.tail.load(Relaxed);
        if tail - h.released.load(Relaxed).min(tail) >= ch.cap {
            if reap {
                self.drop_dead_laggards();
            }
            self.settle()?;
            let rel = h.released.load(Relaxed);
            if tail - rel >= ch.cap {
                if !force {
                    return Ok(Push::Full);
                }
                for s in &h.subs {
                    if s.token.load(Relaxed) != 0 && s.cursor.load(Relaxed) == rel {
                        s.missed.fetch_add(1, Relaxed);
                        s.cursor.store(rel + 1, Relaxed);
                    }
                }
                self.settle()?;
            }
        }
        self.pool.write(ch.slot(tail), r);
        // SeqCst: ordered before the sleeper check of `notify_waiters`.
        h.tail.store(tail + 1, SeqCst);
        if h.subscribed.load(Relaxed) == 0 {
            self.settle()?; // nobody will read it
        }
        Ok(Push::Sent)
    }

    /// One receive attempt by subscriber `i` of process `token`.
    fn pull(&self, i: usize, token: u64) -> Result<Pull, PipeError> {
        let h = self.ch.head();
        let s = &h.subs[i];
        if s.token.load(Relaxed) != token {
            return Err(PipeError::Unsubscribed);
        }
        let missed = s.missed.load(Relaxed);
        if missed != 0 {
            s.missed.store(0, Relaxed);
            return Ok(Pull::Lagged(missed));
        }
        let (c, tail, rel) = (
            s.cursor.load(Relaxed),
            h.tail.load(Relaxed),
            h.released.load(Relaxed),
        );
        if c < rel || c > tail {
            self.settle()?;
            return self.pull(i, token);
        }
        if c == tail {
            return Ok(if self.ch.closed() {
                Pull::Closed
            } else {
                Pull::Empty
            });
        }
        let r = self.pool.read(self.ch.slot(c));
        self.pool.retain(r)?; // ours before the cursor moves past it
        s.cursor.store(c + 1, Relaxed);
        if c == rel {
            self.settle()?; // we may have been the slowest
        }
        Ok(Pull::Got(r))
    }

    /// Takes a free subscriber entry (or a dead process's) for `token`, reading from
    /// the current tail on.
    fn subscribe(&self, token: u64) -> Option<usize> {
        let h = self.ch.head();
        let tail = h.tail.load(Relaxed);
        let free = |s: &Sub| s.token.load(Relaxed) == 0;
        let i = h.subs.iter().position(free).or_else(|| {
            self.drop_dead_laggards_all();
            h.subs.iter().position(free)
        })?;
        let s = &h.subs[i];
        s.cursor.store(tail, Relaxed);
        s.missed.store(0, Relaxed);
        s.token.store(token, Release); // last: a death before leaves the entry free
        h.subscribed.fetch_add(1, Relaxed);
        Some(i)
    }

    fn drop_dead_laggards_all(&self) {
        for s in &self.ch.head().subs {
            let t = s.token.load(Relaxed);
            if t != 0 && !crate::platform::token_alive(t) {
                s.token.store(0, Release);
            }
        }
    }

    fn unsubscribe(&self, i: usize, token: u64) -> Result<(), ValError> {
        let s = &self.ch.head().subs[i];
        if s.token.load(Relaxed) == token {
            s.token.store(0, Release);
            self.settle()?;
        }
        Ok(())
    }
}

/// A handle on a named broadcast: sends, and makes subscribers. Clones share one
/// handle; every method may be called from any thread.
///
/// ```
/// use shmval::{tab, Broadcast, Policy, Pool, PoolOptions};
/// use std::time::Duration;
/// # let name = format!("doc-broadcast-{}", std::process::id());
/// let pool = Pool::create_with(&name, 4 << 20, &PoolOptions::new().remove_on_drop(true))?;
/// let prices = Broadcast::create(&pool, "prices", 16, Policy::Block)?;
/// let sub = prices.subscribe()?; // sees what is sent from now on
/// prices.send(pool.share(&tab! { "sym" => "ACME", "px" => 101.5 })?)?;
/// let v = sub.recv_timeout(Duration::from_secs(1))?;
/// assert_eq!(v.to_string(), "{'sym': 'ACME', 'px': 101.5}");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct Broadcast {
    inner: Arc<Inner>,
}

struct Inner {
    /// Keeps the broadcast object alive (one reference) and the pool mapped.
    obj: ShmVal,
    ch: Chan,
    name: String,
    spin_ns: AtomicU64,
    /// When this handle last checked the slowest subscribers' liveness.
    reaped: Mutex<Option<Instant>>,
}

impl fmt::Debug for Broadcast {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Broadcast")
            .field("name", &self.inner.name)
            .field("capacity", &self.capacity())
            .field("policy", &self.policy())
            .field("subscribers", &self.subscribers())
            .field("closed", &self.is_closed())
            .finish()
    }
}

impl Broadcast {
    /// Creates the broadcast `name` with room for `capacity` values not yet received
    /// by every subscriber, and registers it in the pool's broadcast directory.
    ///
    /// # Errors
    /// [`PipeError::Exists`], [`PipeError::Name`], [`PipeError::Capacity`], a full pool.
    pub fn create(
        pool: &Pool,
        name: &str,
        capacity: u64,
        policy: Policy,
    ) -> Result<Broadcast, PipeError> {
        check_name(name)?;
        if capacity == 0 || capacity > MAX_CAP {
            return Err(PipeError::Capacity(capacity));
        }
        let obj = make_named(
            pool,
            &BROADCASTS.made(pool)?,
            name,
            tag::BCAST,
            object_size(capacity),
            |off| Chan::format(pool, off, capacity, policy),
        )?;
        Broadcast::attach(obj, name)
    }

    /// Opens the broadcast `name`, waiting up to `wait` for it to be created.
    ///
    /// # Errors
    /// [`PipeError::NotFound`] after `wait`; a corrupt directory or broadcast.
    pub fn open(pool: &Pool, name: &str, wait: Duration) -> Result<Broadcast, PipeError> {
        check_name(name)?;
        let obj = find(pool, BROADCASTS, name, wait)?;
        Broadcast::attach(obj, name)
    }

    /// Removes `name` from the directory. Open handles and subscribers keep working;
    /// the broadcast (and the values in it) is freed when the last one goes. Returns
    /// whether a broadcast of that name existed.
    ///
    /// # Errors
    /// A corrupt directory.
    pub fn remove(pool: &Pool, name: &str) -> Result<bool, PipeError> {
        BROADCASTS.remove(pool, name)
    }

    /// Names of the pool's broadcasts.
    ///
    /// # Errors
    /// A corrupt directory.
    pub fn names(pool: &Pool) -> Result<Vec<String>, PipeError> {
        BROADCASTS.names(pool)
    }

    fn attach(obj: ShmVal, name: &str) -> Result<Broadcast, PipeError> {
        if obj.raw().tag() != tag::BCAST {
            return Err(ValError::Corrupt {
                what: format!(
                    "broadcast directory entry {name:?} is a {}",
                    obj.type_name()
                ),
            }
            .into());
        }
        let ch = Chan::attach(obj.obj_pool(), obj.raw().payload)?;
        Ok(Broadcast {
            inner: Arc::new(Inner {
                obj,
                ch,
                name: name.into(),
                spin_ns: AtomicU64::new(DEFAULT_SPIN.as_nanos() as u64),
                reaped: Mutex::new(None),
            }),
        })
    }

    /// The pool the broadcast lives in.
    pub fn pool(&self) -> &Pool {
        self.inner.obj.obj_pool()
    }

    /// The broadcast's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Values the ring holds at most.
    pub fn capacity(&self) -> u64 {
        self.inner.ch.cap
    }

    /// The slow-subscriber policy chosen at creation.
    pub fn policy(&self) -> Policy {
        self.inner.ch.policy
    }

    /// Subscribers now (a snapshot; a dead one counts until it is noticed).
    pub fn subscribers(&self) -> usize {
        let h = self.inner.ch.head();
        h.subs.iter().filter(|s| s.token.load(Relaxed) != 0).count()
    }

    /// Values sent since creation (by every process).
    pub fn sent(&self) -> u64 {
        self.inner.ch.head().tail.load(Acquire)
    }

    /// Values still held for some subscriber (a snapshot).
    pub fn len(&self) -> u64 {
        let h = self.inner.ch.head();
        let (t, r) = (h.tail.load(Acquire), h.released.load(Acquire));
        t.saturating_sub(r).min(self.capacity())
    }

    /// Whether no value is held for any subscriber now.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the broadcast was closed.
    pub fn is_closed(&self) -> bool {
        self.inner.ch.closed()
    }

    /// Closes the broadcast for every process: senders get `Closed`, subscribers
    /// receive what is left for them and then get `Closed`. Every waiter wakes.
    /// A send looks at the flag and publishes inside one hold of the channel lock
    /// and a receive reports `Closed` inside one, so a send lands before the close
    /// or gets `Closed`, never after a subscriber was told `Closed`.
    pub fn close(&self) {
        let h = self.inner.ch.head();
        h.meta.closed.store(1, SeqCst);
        h.not_empty.notify();
        h.not_full.notify();
    }

    /// Sets how long this handle's blocking sends spin before sleeping
    /// (see [`crate::Pipe::set_spin`]).
    pub fn set_spin(&self, spin: Duration) {
        self.inner.spin_ns.store(super::spin_ns(spin), Relaxed);
    }

    /// A new subscriber: it receives every value sent from now on.
    ///
    /// # Errors
    /// [`PipeError::TooManyUsers`] when [`MAX_SUBSCRIBERS`] live subscribers exist.
    pub fn subscribe(&self) -> Result<Subscriber, PipeError> {
        let token = crate::platform::process_token();
        let g = self.inner.ch.lock(self.pool())?;
        let i = g
            .subscribe(token)
            .ok_or_else(|| PipeError::TooManyUsers(self.inner.name.clone()))?;
        drop(g);
        Ok(Subscriber {
            b: self.clone(),
            i,
            token,
            spin_ns: AtomicU64::new(self.inner.spin_ns.load(Relaxed)),
        })
    }

    /// Sends `value` to every subscriber if there is room now (with
    /// [`Policy::DropOldest`] there always is).
    ///
    /// # Errors
    /// [`SendError::Full`], [`SendError::Closed`], ... (the value comes back).
    pub fn try_send(&self, value: impl Into<ShmVal>) -> Result<(), SendError> {
        self.send_until(value.into(), Some(Duration::ZERO), false)
    }

    /// Sends `value`, waiting at most `timeout` for room.
    ///
    /// # Errors
    /// [`SendError::Timeout`], [`SendError::Closed`], ... (the value comes back).
    pub fn send_timeout(
        &self,
        value: impl Into<ShmVal>,
        timeout: Duration,
    ) -> Result<(), SendError> {
        self.send_until(value.into(), Some(timeout), true)
    }

    /// Sends `value` to every subscriber, waiting for room as the policy says.
    ///
    /// # Errors
    /// [`SendError::Closed`], ... (the value comes back).
    pub fn send(&self, value: impl Into<ShmVal>) -> Result<(), SendError> {
        self.send_until(value.into(), None, true)
    }

    /// Whether it is time to check the slowest subscribers' liveness again.
    fn reap_due(&self) -> bool {
        let mut last = self.inner.reaped.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if last.is_some_and(|t| now.duration_since(t) < STUCK_CHECK) {
            return false;
        }
        *last = Some(now);
        true
    }

    fn push(&self, r: Raw, force: bool, reap: bool, patience: Duration) -> Result<Push, PipeError> {
        let g = self.inner.ch.lock_within(self.pool(), patience)?;
        let out = g.push(r, force, reap)?;
        drop(g);
        if let Push::Sent = out {
            self.inner.ch.head().not_empty.notify_waiters();
        }
        Ok(out)
    }

    fn send_until(
        &self,
        v: ShmVal,
        timeout: Option<Duration>,
        block: bool,
    ) -> Result<(), SendError> {
        if !v.fits(self.pool()) {
            return Err(SendError::WrongPool(v));
        }
        let ch = &self.inner.ch;
        let r = v.raw();
        let drop_after = match ch.policy {
            Policy::Block => None,
            Policy::DropOldest => Some(Duration::ZERO),
            Policy::DropAfter(d) => Some(d),
        };
        let mut force = drop_after == Some(Duration::ZERO);
        let mut reap = false;
        // (user deadline, drop deadline), fixed at the first failed attempt.
        let mut deadlines: Option<(Option<Instant>, Option<Instant>)> = None;
        let mut spin = Spin::new(Duration::from_nanos(self.inner.spin_ns.load(Relaxed)));
        // A lock holder stopped in a debugger keeps no attempt past its deadline.
        let dl = Deadline::new(timeout, block);
        loop {
            match self.push(r, force, reap, dl.lock_patience()) {
                Ok(Push::Sent) => {
                    let _ = v.into_raw(); // the ring owns the reference now
                    return Ok(());
                }
                Ok(Push::Closed) => return Err(SendError::Closed(v)),
                Ok(Push::Full) => reap = false,
                Err(PipeError::Val(ValError::LockTimeout)) if !block => {
                    return Err(SendError::Full(v))
                }
                Err(PipeError::Val(ValError::LockTimeout)) if timeout.is_some() => {
                    return Err(SendError::Timeout(v))
                }
                Err(e) => return Err(SendError::Broken(v, e)),
            }
            if !block {
                return Err(SendError::Full(v));
            }
            let (deadline, drop_at) = *deadlines.get_or_insert_with(|| {
                let now = Instant::now();
                (dl.at(), drop_after.and_then(|d| now.checked_add(d)))
            });
            let limit = [deadline, drop_at].into_iter().flatten().min();
            // Wait (without the lock) for room, a deadline, or the next liveness
            // check of the slowest subscribers (a dead one wakes nobody).
            loop {
                if self.room() {
                    break;
                }
                if spin.more(limit) {
                    continue;
                }
                let now = Instant::now();
                if drop_at.is_some_and(|d| now >= d) {
                    force = true;
                    break;
                }
                if deadline.is_some_and(|d| now >= d) {
                    return Err(SendError::Timeout(v));
                }
                if self.reap_due() {
                    reap = true;
                    break;
                }
                let ec = &ch.head().not_full;
                let key = ec.prepare();
                if self.room() {
                    break;
                }
                let check = now + STUCK_CHECK;
                ec.wait(key, Some(limit.map_or(check, |l| l.min(check))));
            }
        }
    }

    /// Whether a send could go through now (read without the lock), or the
    /// broadcast is closed.
    fn room(&self) -> bool {
        let (ch, h) = (&self.inner.ch, self.inner.ch.head());
        let tail = h.tail.load(SeqCst);
        tail - h.released.load(SeqCst).min(tail) < ch.cap || ch.closed()
    }
}

/// One subscription: receives every value sent after it was made, in order. Dropping
/// it unsubscribes (and lets go of what only it still needed).
///
/// ```
/// use shmval::{Broadcast, BroadcastRecvError, Policy, Pool, PoolOptions, ShmVal};
/// # let name = format!("doc-subscriber-{}", std::process::id());
/// let pool = Pool::create_with(&name, 4 << 20, &PoolOptions::new().remove_on_drop(true))?;
/// let b = Broadcast::create(&pool, "events", 8, Policy::Block)?;
/// b.send(ShmVal::from(0i64))?; // nobody subscribed: nobody sees it
/// let sub = b.subscribe()?;
/// b.send(ShmVal::from(1i64))?;
/// assert_eq!(sub.try_recv()?.to_string(), "1");
/// assert!(matches!(sub.try_recv(), Err(BroadcastRecvError::Empty)));
/// b.close();
/// assert!(matches!(sub.recv(), Err(BroadcastRecvError::Closed)));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Subscriber {
    b: Broadcast,
    i: usize,
    token: u64,
    spin_ns: AtomicU64,
}

impl fmt::Debug for Subscriber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscriber")
            .field("broadcast", &self.b.inner.name)
            .field("entry", &self.i)
            .field("pending", &self.pending())
            .finish()
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        if self.token != crate::platform::process_token() {
            return; // a forked child's copy: the entry is the parent's
        }
        let ch = &self.b.inner.ch;
        if let Ok(g) = ch.lock(self.b.pool()) {
            let _ = g.unsubscribe(self.i, self.token);
        }
    }
}

impl Subscriber {
    /// The broadcast subscribed to.
    pub fn broadcast(&self) -> &Broadcast {
        &self.b
    }

    /// Values sent that this subscriber has not received yet (a snapshot).
    pub fn pending(&self) -> u64 {
        let h = self.b.inner.ch.head();
        let c = h.subs[self.i].cursor.load(Acquire);
        h.tail.load(Acquire).saturating_sub(c)
    }

    /// Sets how long blocking receives spin before sleeping.
    pub fn set_spin(&self, spin: Duration) {
        self.spin_ns.store(super::spin_ns(spin), Relaxed);
    }

    /// Receives the next value if there is one now.
    ///
    /// # Errors
    /// [`BroadcastRecvError::Empty`], `Lagged`, `Closed`.
    pub fn try_recv(&self) -> Result<ShmVal, BroadcastRecvError> {
        self.recv_until(Some(Duration::ZERO), false)
    }

    /// Receives the next value, waiting at most `timeout`.
    ///
    /// # Errors
    /// [`BroadcastRecvError::Timeout`], `Lagged`, `Closed`.
    pub fn recv_timeout(&self, timeout: Duration) -> Result<ShmVal, BroadcastRecvError> {
        self.recv_until(Some(timeout), true)
    }

    /// Receives the next value, waiting as long as it takes.
    ///
    /// # Errors
    /// [`BroadcastRecvError::Lagged`], `Closed`.
    pub fn recv(&self) -> Result<ShmVal, BroadcastRecvError> {
        self.recv_until(None, true)
    }

    /// Whether a locked attempt could find something (read without the lock).
    fn maybe_ready(&self) -> bool {
        let h = self.b.inner.ch.head();
        let s = &h.subs[self.i];
        s.missed.load(SeqCst) != 0
            || s.cursor.load(SeqCst) < h.tail.load(SeqCst)
            || self.b.inner.ch.closed()
            || s.token.load(Relaxed) != self.token
    }

    /// One locked attempt, waiting for the lock's holder at most `patience`
    /// (`LockTimeout` then).
    fn pull(&self, patience: Duration) -> Result<Pull, BroadcastRecvError> {
        if self.token != crate::platform::process_token() {
            return Err(BroadcastRecvError::Broken(PipeError::Unsubscribed));
        }
        let ch = &self.b.inner.ch;
        let g = ch
            .lock_within(self.b.pool(), patience)
            .map_err(|e| BroadcastRecvError::Broken(e.into()))?;
        let out = g
            .pull(self.i, self.token)
            .map_err(BroadcastRecvError::Broken)?;
        Ok(out)
    }

    fn recv_until(
        &self,
        timeout: Option<Duration>,
        block: bool,
    ) -> Result<ShmVal, BroadcastRecvError> {
        let pool = self.b.pool();
        let mut deadline: Option<Option<Instant>> = None;
        // As in `Broadcast::send_until`.
        let dl = Deadline::new(timeout, block);
        let lock_timeout = |e: &BroadcastRecvError| {
            matches!(
                e,
                BroadcastRecvError::Broken(PipeError::Val(ValError::LockTimeout))
            )
        };
        let mut spin = Spin::new(if block {
            Duration::from_nanos(self.spin_ns.load(Relaxed))
        } else {
            Duration::ZERO
        });
        loop {
            if self.maybe_ready() {
                let got = match self.pull(dl.lock_patience()) {
                    Err(e) if lock_timeout(&e) && !block => return Err(BroadcastRecvError::Empty),
                    Err(e) if lock_timeout(&e) && timeout.is_some() => {
                        return Err(BroadcastRecvError::Timeout)
                    }
                    r => r?,
                };
                match got {
                    Pull::Got(r) => return Ok(ShmVal::from_owned(pool, r)),
                    Pull::Lagged(n) => return Err(BroadcastRecvError::Lagged(n)),
                    Pull::Closed => return Err(BroadcastRecvError::Closed),
                    Pull::Empty => {}
                }
            }
            if !block {
                return Err(BroadcastRecvError::Empty);
            }
            let deadline = *deadline.get_or_insert_with(|| dl.at());
            if spin.more(deadline) {
                continue;
            }
            let ec = &self.b.inner.ch.head().not_empty;
            let key = ec.prepare();
            if self.maybe_ready() {
                continue;
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Err(BroadcastRecvError::Timeout);
            }
            ec.wait(key, deadline);
        }
    }
}

/// What a broadcast object holds (for release and `check`).
pub(crate) fn values_held(
    pool: &Pool,
    o: crate::shm::Obj,
    f: &mut dyn FnMut(Raw),
) -> Result<(), ValError> {
    Chan::attach(pool, o.off)?.held(pool, f)
}
