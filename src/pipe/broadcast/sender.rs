//! The `Broadcast` handle: create, open, send under a policy, make subscribers.

use super::chan::*;
use super::layout::*;
use super::*;
use crate::pipe::directory::{check_name, find, make_named, BROADCASTS};
use crate::pipe::wait::Wait;
use crate::pipe::wait::{Deadline, Spin, STUCK_CHECK};
use crate::pipe::{Fault, PipeError, SendError, DEFAULT_SPIN};
use crate::shm::layout::tag;
use crate::shm::{ShmVal, ValError};
use crate::Pool;
use std::fmt;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::{Acquire, Relaxed, SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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
    pub(super) inner: Arc<Inner>,
}

pub(super) struct Inner {
    /// Keeps the broadcast object alive (one reference) and the pool mapped.
    pub(super) obj: ShmVal,
    pub(super) ch: Chan,
    pub(super) name: String,
    pub(super) spin_ns: AtomicU64,
    /// When this handle last checked the slowest subscribers' liveness.
    pub(super) reaped: Mutex<Option<Instant>>,
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

    /// Opens the broadcast `name` if the pool has one, creates it otherwise (racing
    /// creators: one makes it, the others open it). An existing broadcast keeps its
    /// own capacity and policy ([`Broadcast::capacity`], [`Broadcast::policy`]).
    ///
    /// # Errors
    /// As [`Broadcast::create`] and [`Broadcast::open`].
    pub fn open_or_create(
        pool: &Pool,
        name: &str,
        capacity: u64,
        policy: Policy,
    ) -> Result<Broadcast, PipeError> {
        match Broadcast::open(pool, name, Duration::ZERO) {
            Err(PipeError::NotFound { .. }) => {
                match Broadcast::create(pool, name, capacity, policy) {
                    Err(PipeError::Exists(_)) => Broadcast::open(pool, name, Duration::ZERO),
                    r => r,
                }
            }
            r => r,
        }
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

    pub(super) fn attach(obj: ShmVal, name: &str) -> Result<Broadcast, PipeError> {
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

    /// A snapshot of the broadcast for diagnostics (`shmval pipes`): each
    /// subscriber's pid (if it lives) and lag (values sent it has not received).
    pub fn status(&self) -> BroadcastStatus {
        let h = self.inner.ch.head();
        let tail = h.tail.load(Acquire);
        BroadcastStatus {
            name: self.name().to_owned(),
            capacity: self.capacity(),
            policy: format!("{:?}", self.policy()),
            len: self.len(),
            sent: tail,
            closed: self.is_closed(),
            senders_sleeping: h.not_full.may_have_sleepers(),
            subscribers_sleeping: h.not_empty.may_have_sleepers(),
            subscribers: h
                .subs
                .iter()
                .filter_map(|s| {
                    let token = s.token.load(Relaxed);
                    (token != 0).then(|| SubscriberStatus {
                        pid: self.pool().pid_of_token(token),
                        lag: tail.saturating_sub(s.cursor.load(Relaxed)),
                        missed: s.missed.load(Relaxed),
                    })
                })
                .collect(),
        }
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
        self.inner
            .spin_ns
            .store(crate::pipe::spin_ns(spin), Relaxed);
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
        self.send_until(value.into(), Wait::Never)
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
        self.send_until(value.into(), Wait::For(timeout))
    }

    /// Sends `value` to every subscriber, waiting for room as the policy says.
    ///
    /// # Errors
    /// [`SendError::Closed`], ... (the value comes back).
    pub fn send(&self, value: impl Into<ShmVal>) -> Result<(), SendError> {
        self.send_until(value.into(), Wait::Forever)
    }

    /// Whether it is time to check the slowest subscribers' liveness again.
    pub(super) fn reap_due(&self) -> bool {
        let mut last = self.inner.reaped.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if last.is_some_and(|t| now.duration_since(t) < STUCK_CHECK) {
            return false;
        }
        *last = Some(now);
        true
    }

    /// One send attempt: the lock, then `v`'s reference handed over (out of the
    /// ledger) for the push only — not while waiting for the lock — and back if it
    /// did not go.
    pub(super) fn push(
        &self,
        v: &ShmVal,
        force: bool,
        reap: bool,
        patience: Duration,
    ) -> Result<Push, Fault> {
        let g = self.inner.ch.lock_within(self.pool(), patience)?;
        v.unledger()?;
        let out = g.push(v.raw(), force, reap);
        if !matches!(out, Ok(Push::Sent)) {
            v.reledger();
        }
        let out = out?;
        drop(g);
        // Published, nobody woken yet: a sender killed here leaves sleeping
        // subscribers to their own next look (`wake_at`).
        fail_point!("broadcast.sent");
        if let Push::Sent = out {
            self.inner.ch.head().not_empty.notify_waiters();
        }
        Ok(out)
    }

    pub(super) fn send_until(&self, v: ShmVal, how: Wait) -> Result<(), SendError> {
        if !v.fits(self.pool()) {
            return Err(SendError::WrongPool(v));
        }
        self.send_handed(v, how)
    }

    /// Sends `v`, its reference out of the ledger for each attempt only (back in
    /// after one that did not send it: see `transfer::Handover`).
    fn send_handed(&self, v: ShmVal, how: Wait) -> Result<(), SendError> {
        let ch = &self.inner.ch;
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
        let dl = Deadline::new(how);
        loop {
            match self.push(&v, force, reap, dl.lock_patience()) {
                Ok(Push::Sent) => {
                    v.forget_sent(); // the ring owns the reference now
                    return Ok(());
                }
                Ok(Push::Closed) => return Err(SendError::Closed(v)),
                Ok(Push::Full) => reap = false,
                Err(Fault::Val(ValError::LockTimeout)) if !how.blocks() => {
                    return Err(SendError::Full(v))
                }
                Err(Fault::Val(ValError::LockTimeout)) if how.timeout().is_some() => {
                    return Err(SendError::Timeout(v))
                }
                Err(e) => return Err(SendError::Broken(v, e)),
            }
            if !how.blocks() {
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
    pub(super) fn room(&self) -> bool {
        let (ch, h) = (&self.inner.ch, self.inner.ch.head());
        let tail = h.tail.load(SeqCst);
        tail - h.released.load(SeqCst).min(tail) < ch.cap || ch.closed()
    }
}

/// A broadcast as [`Broadcast::status`] sees it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BroadcastStatus {
    /// Its name.
    pub name: String,
    /// Values held at most.
    pub capacity: u64,
    /// What a full broadcast does.
    pub policy: String,
    /// Values held for some subscriber now.
    pub len: u64,
    /// Values sent since its creation.
    pub sent: u64,
    /// Whether it was closed.
    pub closed: bool,
    /// A sender may be asleep waiting for room.
    pub senders_sleeping: bool,
    /// A subscriber may be asleep waiting for a value.
    pub subscribers_sleeping: bool,
    /// Its subscribers.
    pub subscribers: Vec<SubscriberStatus>,
}

/// One subscriber of a broadcast.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SubscriberStatus {
    /// Its process's pid, if that process is attached and alive.
    pub pid: Option<u32>,
    /// Values sent that it has not received yet.
    pub lag: u64,
    /// Values it missed (dropped for it by the policy).
    pub missed: u64,
}
