//! Named pipes: bounded multi-producer multi-consumer queues of shared values living
//! in a pool. Sending moves a reference (never the bytes); receiving takes it over.
//!
//! ```
//! use shmval::{tab, Pipe, Pool, PoolOptions};
//! use std::time::Duration;
//!
//! # let name = format!("doc-pipe-{}", std::process::id());
//! let pool = Pool::create_with(&name, 4 << 20, &PoolOptions::new().remove_on_drop(true))?;
//! let pipe = Pipe::create(&pool, "raw", 1024)?;
//! pipe.send(pool.share(&tab! { "seq" => 1 })?)?;
//!
//! // Elsewhere (typically another process): find the pipe by name and receive.
//! let same = Pipe::open(&pool, "raw", Duration::from_secs(1))?;
//! let v = same.recv_timeout(Duration::from_millis(500))?;
//! assert_eq!(v.to_string(), "{'seq': 1}");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Waiting spins first (a hand-off through a cache line costs tens of nanoseconds, a
//! futex wake-up tens of microseconds), then sleeps on a shared futex eventcount.
//! Deadlines are absolute (`CLOCK_MONOTONIC`). A process killed anywhere in a send or
//! receive stops nobody: what it claimed is recognised by its dead claimer and moved
//! on by whoever waits behind it (see `ring`), losing at most the values of the one
//! run a dead sender had claimed and not written.

mod broadcast;
mod error;
mod ring;
mod wait;

pub use broadcast::{Broadcast, BroadcastRecvError, Policy, Subscriber, MAX_SUBSCRIBERS};
pub use error::{BatchError, PipeError, RecvError, SendError};
use wait::{wake_at, Adapt, Deadline, Spin, Turn, WaitLog};

use crate::shm::layout::tag;
use crate::shm::{Raw, ShmTab, ShmVal, ValError};
use crate::Pool;
use ring::{Dir, Pop, Push, Ring, Stuck};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Processes that may use one pipe at once.
pub const MAX_PIPE_USERS: usize = ring::USERS;

/// Longest pipe name, in bytes.
pub const MAX_PIPE_NAME: usize = 255;

/// Default spin phase before a blocking call sleeps (see `docs/PERFORMANCE.md`).
pub const DEFAULT_SPIN: Duration = Duration::from_micros(50);

/// Rounds (one pause each, ~30 ns here) an owning receiver watches the next cell
/// before its general wait, and the shortest timeout for which it does so (the
/// deadline is fixed after the watch: a few µs late at most, well under 1% of it).
const FAST_SPINS: u32 = 128;
const FAST_SPIN_MIN: Duration = Duration::from_millis(1);

/// How often a waiter blocked behind a claimed cell checks whether its claimer died.
const STUCK_CHECK: Duration = Duration::from_millis(5);

/// A handle on a named pipe. Clones share one registration; every method may be
/// called from any thread.
#[derive(Clone)]
pub struct Pipe {
    inner: Arc<Inner>,
}

struct Inner {
    /// Keeps the pipe object alive (one reference) and the pool mapped.
    obj: ShmVal,
    ring: Ring,
    name: String,
    /// This process's user entry: token and index (re-taken after a fork).
    me_token: AtomicU64,
    me_id: AtomicU64,
    register: Mutex<()>,
    spin_ns: AtomicU64,
    /// How long a blocked send and a blocked receive of this handle spin before they
    /// sleep, learnt from the last waits (see [`Adapt`]).
    send_adapt: Adapt,
    recv_adapt: Adapt,
    /// The claimed cell this handle last found itself waiting behind, and since when.
    stuck: Mutex<Option<(Stuck, Instant)>>,
    /// This process's turns to claim and fill (empty) cells under its user entry.
    send_turn: Turn,
    recv_turn: Turn,
}

impl Drop for Inner {
    fn drop(&mut self) {
        let token = self.me_token.load(Ordering::Relaxed);
        if token != 0 && token == crate::platform::process_token() {
            self.ring
                .unregister(self.me_id.load(Ordering::Relaxed) as u16, token);
        }
    }
}

impl fmt::Debug for Pipe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pipe")
            .field("name", &self.inner.name)
            .field("capacity", &self.capacity())
            .field("len", &self.len())
            .field("closed", &self.is_closed())
            .finish()
    }
}

fn check_name(name: &str) -> Result<(), PipeError> {
    if name.is_empty() || name.len() > MAX_PIPE_NAME || name.contains('\0') {
        return Err(PipeError::Name(name.into()));
    }
    Ok(())
}

/// A pool-wide name directory: the dict (name → object) at a user word of the pool.
/// Creators make it on first use; lookups create nothing (a reader must not
/// allocate in a pool it only reads), and a missing directory is an empty one.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Directory(usize);

/// Where pipes are named.
pub(crate) const PIPES: Directory = Directory(1);
/// Where broadcasts are named.
pub(crate) const BROADCASTS: Directory = Directory(2);

impl Directory {
    /// The directory, made if there is none yet (for creators).
    pub(crate) fn made(self, pool: &Pool) -> Result<ShmTab, ValError> {
        pool.word_tab(self.0)
    }

    fn get(self, pool: &Pool, name: &str) -> Result<Option<ShmVal>, PipeError> {
        match pool.word_tab_if_any(self.0)? {
            Some(dir) => Ok(dir.get(name)?),
            None => Ok(None),
        }
    }

    /// Removes `name`; whether it was there.
    pub(crate) fn remove(self, pool: &Pool, name: &str) -> Result<bool, PipeError> {
        match pool.word_tab_if_any(self.0)? {
            Some(dir) => Ok(dir.remove(name)?.is_some()),
            None => Ok(false),
        }
    }

    /// The names in the directory.
    pub(crate) fn names(self, pool: &Pool) -> Result<Vec<String>, PipeError> {
        let mut out = Vec::new();
        if let Some(dir) = pool.word_tab_if_any(self.0)? {
            for k in dir.keys()? {
                if let crate::Val::Str(s) = k.to_val()? {
                    out.push(s);
                }
            }
        }
        Ok(out)
    }
}

impl Pipe {
    /// Creates the pipe `name` with room for `capacity` values and registers it in
    /// the pool's pipe directory, where every process finds it.
    ///
    /// # Errors
    /// [`PipeError::Exists`], [`PipeError::Name`], [`PipeError::Capacity`], a full pool.
    pub fn create(pool: &Pool, name: &str, capacity: u64) -> Result<Pipe, PipeError> {
        check_name(name)?;
        if capacity == 0 || capacity > ring::MAX_CAP {
            return Err(PipeError::Capacity(capacity));
        }
        let obj = make_named(
            pool,
            &PIPES.made(pool)?,
            name,
            tag::PIPE,
            ring::object_size(capacity),
            |off| Ring::format(pool, off, capacity),
        )?;
        Pipe::attach(obj, name)
    }

    /// Opens the pipe `name`, waiting up to `wait` for it to be created.
    ///
    /// # Errors
    /// [`PipeError::NotFound`] after `wait`; a corrupt directory or pipe.
    pub fn open(pool: &Pool, name: &str, wait: Duration) -> Result<Pipe, PipeError> {
        check_name(name)?;
        let obj = find(pool, PIPES, name, wait)?;
        Pipe::attach(obj, name)
    }

    /// Removes `name` from the directory. Open handles keep working; the pipe (and
    /// any values still in it) is freed when the last handle goes. Returns whether a
    /// pipe of that name existed.
    ///
    /// # Errors
    /// A corrupt directory.
    pub fn remove(pool: &Pool, name: &str) -> Result<bool, PipeError> {
        PIPES.remove(pool, name)
    }

    /// Names of the pool's pipes.
    ///
    /// # Errors
    /// A corrupt directory.
    pub fn names(pool: &Pool) -> Result<Vec<String>, PipeError> {
        PIPES.names(pool)
    }

    fn attach(obj: ShmVal, name: &str) -> Result<Pipe, PipeError> {
        if obj.raw().tag() != tag::PIPE {
            return Err(ValError::Corrupt {
                what: format!("directory entry {name:?} is a {}", obj.type_name()),
            }
            .into());
        }
        let ring = Ring::attach(obj.obj_pool(), obj.raw().payload)?;
        Ok(Pipe {
            inner: Arc::new(Inner {
                obj,
                ring,
                name: name.into(),
                me_token: AtomicU64::new(0),
                me_id: AtomicU64::new(0),
                register: Mutex::new(()),
                spin_ns: AtomicU64::new(DEFAULT_SPIN.as_nanos() as u64),
                send_adapt: Adapt::new(),
                recv_adapt: Adapt::new(),
                stuck: Mutex::new(None),
                send_turn: Turn(AtomicU64::new(0)),
                recv_turn: Turn(AtomicU64::new(0)),
            }),
        })
    }

    /// This process's user index in the pipe (taken on first use, again after fork)
    /// and its process token.
    #[inline]
    fn me(&self) -> Result<(u16, u64), PipeError> {
        let token = crate::platform::process_token();
        if self.inner.me_token.load(Ordering::Acquire) == token {
            return Ok((self.inner.me_id.load(Ordering::Relaxed) as u16, token));
        }
        Ok((self.register(token)?, token))
    }

    #[cold]
    fn register(&self, token: u64) -> Result<u16, PipeError> {
        let _g = self
            .inner
            .register
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if self.inner.me_token.load(Ordering::Acquire) == token {
            return Ok(self.inner.me_id.load(Ordering::Relaxed) as u16);
        }
        let id = self
            .inner
            .ring
            .register(self.pool(), token)
            .ok_or_else(|| PipeError::TooManyUsers(self.inner.name.clone()))?;
        self.inner.me_id.store(u64::from(id), Ordering::Relaxed);
        self.inner.me_token.store(token, Ordering::Release);
        Ok(id)
    }

    /// The pool the pipe lives in.
    #[inline]
    pub fn pool(&self) -> &Pool {
        self.inner.obj.obj_pool()
    }

    /// The pipe's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Values the pipe holds at most.
    pub fn capacity(&self) -> u64 {
        self.inner.ring.cap()
    }

    /// Values in the pipe now (a snapshot).
    pub fn len(&self) -> u64 {
        let h = self.inner.ring.head();
        let (t, hd) = (
            h.tail.load(Ordering::Acquire),
            h.head.load(Ordering::Acquire),
        );
        t.saturating_sub(hd).min(self.capacity())
    }

    /// Whether the pipe holds no value now.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Values sent into the pipe since its creation (by every process).
    pub fn sent(&self) -> u64 {
        self.inner.ring.head().tail.load(Ordering::Acquire)
    }

    /// Values taken out of the pipe since its creation (by every process).
    pub fn received(&self) -> u64 {
        self.inner.ring.head().head.load(Ordering::Acquire)
    }

    /// Whether the pipe was closed.
    pub fn is_closed(&self) -> bool {
        self.inner.ring.is_closed()
    }

    /// Closes the pipe for every process: senders get `Closed` from now on,
    /// receivers drain what is left and then get `Closed`. A send either lands
    /// before the close (it is received before `Closed`) or gets `Closed`; when this
    /// returns, none is still landing. Every waiter wakes.
    pub fn close(&self) {
        self.inner.ring.close();
        let h = self.inner.ring.head();
        h.not_empty.notify();
        h.not_full.notify();
    }

    /// Sets how long this handle's blocking calls spin at most before sleeping
    /// ([`DEFAULT_SPIN`]; the spin adapts below it: halved after each wait that had
    /// to sleep, doubled after one that did not). Zero sleeps at once: least CPU,
    /// ~30 µs more latency a hand-off — and the best throughput on a machine with
    /// more runnable processes than cores, where a spinning side may hold the core
    /// its peer needs (see `docs/PERFORMANCE.md`).
    pub fn set_spin(&self, spin: Duration) {
        self.inner.spin_ns.store(spin_ns(spin), Ordering::Relaxed);
    }

    /// Sends `value` if there is room now.
    ///
    /// # Errors
    /// [`SendError::Full`], [`SendError::Closed`], ... (the value comes back).
    #[inline]
    pub fn try_send(&self, value: impl Into<ShmVal>) -> Result<(), SendError> {
        self.send_until(value.into(), Some(Duration::ZERO), false)
    }

    /// Sends `value`, waiting at most `timeout` for room.
    ///
    /// # Errors
    /// [`SendError::Timeout`], [`SendError::Closed`], ... (the value comes back).
    #[inline]
    pub fn send_timeout(
        &self,
        value: impl Into<ShmVal>,
        timeout: Duration,
    ) -> Result<(), SendError> {
        self.send_until(value.into(), Some(timeout), true)
    }

    /// Sends `value`, waiting as long as it takes for room.
    ///
    /// # Errors
    /// [`SendError::Closed`], ... (the value comes back).
    #[inline]
    pub fn send(&self, value: impl Into<ShmVal>) -> Result<(), SendError> {
        self.send_until(value.into(), None, true)
    }

    /// Receives a value if one is there now.
    ///
    /// # Errors
    /// [`RecvError::Empty`], [`RecvError::Closed`].
    #[inline]
    pub fn try_recv(&self) -> Result<ShmVal, RecvError> {
        self.recv_until(Some(Duration::ZERO), false)
    }

    /// Receives a value, waiting at most `timeout`.
    ///
    /// # Errors
    /// [`RecvError::Timeout`], [`RecvError::Closed`].
    #[inline]
    pub fn recv_timeout(&self, timeout: Duration) -> Result<ShmVal, RecvError> {
        self.recv_until(Some(timeout), true)
    }

    /// Receives a value, waiting as long as it takes.
    ///
    /// # Errors
    /// [`RecvError::Closed`].
    #[inline]
    pub fn recv(&self) -> Result<ShmVal, RecvError> {
        self.recv_until(None, true)
    }

    /// Sends as many values from the front of `values` as there is room for now,
    /// in order, and removes them from `values`; returns how many were sent (0 when
    /// the pipe is full). A run of values is claimed at once, so this costs far less
    /// per value than `try_send` in a loop.
    ///
    /// # Errors
    /// [`BatchError::Closed`], [`BatchError::WrongPool`], [`BatchError::Broken`]; the
    /// values not sent stay in `values`.
    pub fn try_send_many(&self, values: &mut Vec<ShmVal>) -> Result<usize, BatchError> {
        self.send_many_until(values, Some(Duration::ZERO), false)
    }

    /// Sends every value of `values` in order, waiting for room as needed at most
    /// `timeout` in all; on success `values` is empty.
    ///
    /// # Errors
    /// [`BatchError::Timeout`], [`BatchError::Closed`], ...; the values not sent stay
    /// in `values`, in order (those sent are gone from it).
    pub fn send_many_timeout(
        &self,
        values: &mut Vec<ShmVal>,
        timeout: Duration,
    ) -> Result<usize, BatchError> {
        self.send_many_until(values, Some(timeout), true)
    }

    /// Sends every value of `values` in order, waiting as long as it takes; on
    /// success `values` is empty. Values of one call arrive in order; values of
    /// other senders may be interleaved between runs of them.
    ///
    /// ```
    /// use shmval::{Pipe, Pool, PoolOptions, ShmVal};
    /// # let name = format!("doc-many-{}", std::process::id());
    /// let pool = Pool::create_with(&name, 4 << 20, &PoolOptions::new().remove_on_drop(true))?;
    /// let pipe = Pipe::create(&pool, "batch", 64)?;
    /// let mut out: Vec<ShmVal> = (0..10u64).map(ShmVal::from).collect();
    /// pipe.send_many(&mut out)?;
    /// assert!(out.is_empty());
    /// let mut got = Vec::new();
    /// pipe.recv_many(&mut got, 100)?; // whatever is there, at least one
    /// assert_eq!(got.len(), 10);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// [`BatchError::Closed`], ...; the values not sent stay in `values`.
    pub fn send_many(&self, values: &mut Vec<ShmVal>) -> Result<usize, BatchError> {
        self.send_many_until(values, None, true)
    }

    /// Appends to `out` up to `max` values that are in the pipe now, in order;
    /// returns how many.
    ///
    /// # Errors
    /// [`RecvError::Empty`] when there is none, [`RecvError::Closed`].
    pub fn try_recv_many(&self, out: &mut Vec<ShmVal>, max: usize) -> Result<usize, RecvError> {
        self.recv_many_until(out, max, Some(Duration::ZERO), false)
    }

    /// Waits at most `timeout` for a value, then appends to `out` up to `max` of
    /// the values there, in order; returns how many.
    ///
    /// # Errors
    /// [`RecvError::Timeout`], [`RecvError::Closed`].
    pub fn recv_many_timeout(
        &self,
        out: &mut Vec<ShmVal>,
        max: usize,
        timeout: Duration,
    ) -> Result<usize, RecvError> {
        self.recv_many_until(out, max, Some(timeout), true)
    }

    /// Waits for a value, then appends to `out` up to `max` of the values there,
    /// in order; returns how many (at least one; 0 only when `max` is 0).
    ///
    /// # Errors
    /// [`RecvError::Closed`].
    pub fn recv_many(&self, out: &mut Vec<ShmVal>, max: usize) -> Result<usize, RecvError> {
        self.recv_many_until(out, max, None, true)
    }

    /// Whether a claimed cell we keep finding in our way belongs to a dead process
    /// (checked once it has been in the way for [`STUCK_CHECK`]); recovers it if so.
    fn unstick(&self, s: Stuck) -> bool {
        let now = Instant::now();
        {
            let mut st = self.inner.stuck.lock().unwrap_or_else(|e| e.into_inner());
            match *st {
                Some((prev, since)) if prev == s => {
                    if now.duration_since(since) < STUCK_CHECK {
                        return false;
                    }
                }
                _ => {
                    *st = Some((s, now));
                    return false;
                }
            }
            *st = None;
        }
        self.inner.ring.unstick(self.pool(), s)
    }

    /// One send attempt: as the send side's owner if this thread owns it, else
    /// (after settling who does) claiming under this process's send turn.
    #[inline]
    fn push(&self, vals: &[Raw], me: (u16, u64), dl: &Deadline) -> Result<Push, PipeError> {
        let own = ring::owner(me.0, crate::platform::thread_id());
        match self.inner.ring.push_owned(self.pool(), vals, own) {
            Some(p) => Ok(p),
            None => self.push_settled(vals, me, own, dl),
        }
    }

    #[inline(never)]
    fn push_settled(
        &self,
        vals: &[Raw],
        me: (u16, u64),
        own: u64,
        dl: &Deadline,
    ) -> Result<Push, PipeError> {
        let (ring, pool) = (&self.inner.ring, self.pool());
        let r = self.settled(
            Dir::Send,
            me,
            own,
            dl,
            &mut (),
            |_| ring.push_owned(pool, vals, own),
            |_| Ok(ring.try_push(pool, vals, me.0)),
        )?;
        // The owner stayed inside its section until our limit: no room for us yet.
        Ok(r.unwrap_or(Push::Full(None)))
    }

    /// One receive attempt (as [`Pipe::push`]).
    #[inline]
    fn pop(
        &self,
        max: usize,
        me: (u16, u64),
        look: bool,
        dl: &Deadline,
        out: &mut impl FnMut(Raw),
    ) -> Result<Pop, PipeError> {
        let (ring, pool) = (&self.inner.ring, self.pool());
        let own = ring::owner(me.0, crate::platform::thread_id());
        let p = match ring.pop_owned(pool, max, own, look, out) {
            Some(p) => p,
            None => self
                .settled(
                    Dir::Recv,
                    me,
                    own,
                    dl,
                    out,
                    |out| ring.pop_owned(pool, max, own, look, out),
                    |out| Ok(ring.try_pop(pool, max, me.0, look, out)),
                )?
                // The owner stayed inside its section until our limit.
                .unwrap_or(Pop::Empty(None)),
        };
        if let Pop::Closing = p {
            // Finish the close, waiting for an owner inside a send no longer than
            // our own limit allows; until then the pipe is not closed for us.
            return if ring.finish_close(dl.other_process_limit()) {
                self.pop(max, me, look, dl, out) // closed now: look again
            } else {
                Ok(Pop::Empty(None))
            };
        }
        Ok(p)
    }

    /// An attempt on side `d` after the owner's attempt found this thread (owner word
    /// `own`) not owning it: settles who does, then tries again as the owner
    /// (`owned`, with `cx`), or claims (`shared`) under this process's turn.
    /// `Ok(None)`: the side's owner stayed inside its section until the limit `dl`
    /// allows for waiting on another process (see [`Deadline`]).
    #[allow(clippy::too_many_arguments)]
    fn settled<C: ?Sized, T>(
        &self,
        d: Dir,
        me: (u16, u64),
        own: u64,
        dl: &Deadline,
        cx: &mut C,
        mut owned: impl FnMut(&mut C) -> Option<T>,
        shared: impl FnOnce(&mut C) -> Result<T, ValError>,
    ) -> Result<Option<T>, PipeError> {
        loop {
            // A test makes its side shared (the claims of the shared protocol are
            // what it stops inside).
            let can_own =
                crate::platform::membarrier_registered() && !fail_fires!("pipe.never_own");
            match self
                .inner
                .ring
                .settle(d, own, can_own, dl.other_process_limit())
                .map_err(|()| PipeError::Barrier)?
            {
                None if dl.unlimited() => return Err(PipeError::OwnerStuck),
                None => return Ok(None),
                Some(true) => match owned(cx) {
                    Some(x) => return Ok(Some(x)),
                    None => continue, // revoked since
                },
                Some(false) => {}
            }
            let turn = match d {
                Dir::Send => &self.inner.send_turn,
                Dir::Recv => &self.inner.recv_turn,
            };
            let _turn = turn.take(me.1);
            return Ok(Some(shared(cx)?));
        }
    }

    /// Sends `vals` in order, waiting at most `timeout` (`None`: no limit) if
    /// `block`. Returns how many went in (the cells own their references) and, if
    /// not all, why not. The deadline is fixed at the first failed attempt (no
    /// clock read on the fast path).
    fn push_until(
        &self,
        vals: &[Raw],
        timeout: Option<Duration>,
        block: bool,
    ) -> (usize, Option<Stop>) {
        let me = match self.me() {
            Ok(me) => me,
            Err(e) => return (0, Some(Stop::Broken(e))),
        };
        let ring = &self.inner.ring;
        let mut done = 0;
        let dl = Deadline::new(timeout, block);
        let budget = if block {
            self.inner.spin_ns.load(Ordering::Relaxed)
        } else {
            0
        };
        let mut wait = WaitLog::new(&self.inner.send_adapt, budget);
        loop {
            let stuck = match self.push(&vals[done..], me, &dl) {
                Ok(Push::Sent(n)) => {
                    done += n;
                    if done == vals.len() {
                        return (done, None);
                    }
                    // Room for part of the run only: let the receivers get ahead
                    // instead of chasing them cell by cell (which takes the lines
                    // they are emptying away from them) — within the spin budget.
                    if block {
                        wait.waited();
                        ring.wait_for_room(|| wait.spin.more(dl.at()));
                    }
                    continue;
                }
                Ok(Push::Closed) => return (done, Some(Stop::Closed)),
                Ok(Push::Full(stuck)) => stuck,
                Err(e) => return (done, Some(Stop::Broken(e))),
            };
            if let Some(s) = stuck {
                if self.unstick(s) {
                    continue;
                }
            }
            if !block {
                return (done, Some(Stop::Full));
            }
            wait.waited();
            let deadline = dl.at();
            if wait.spin.more(deadline) {
                if stuck.is_none() {
                    ring.wait_for_room(|| wait.spin.more(deadline));
                }
                continue;
            }
            let ec = &ring.head().not_full;
            let key = ec.prepare();
            match self.push(&vals[done..], me, &dl) {
                Ok(Push::Sent(n)) => done += n,
                Ok(Push::Closed) => return (done, Some(Stop::Closed)),
                Ok(Push::Full(stuck)) => {
                    if deadline.is_some_and(|d| Instant::now() >= d) {
                        return (done, Some(Stop::Timeout));
                    }
                    wait.slept();
                    ec.wait(key, wake_at(deadline, stuck.is_some()));
                }
                Err(e) => return (done, Some(Stop::Broken(e))),
            }
            if done == vals.len() {
                return (done, None);
            }
        }
    }

    /// Sends one value: the owner's send of one value inline (a few loads and
    /// stores, no call), anything else (not the owner, full, closed, another pool)
    /// round [`Pipe::send_slow`].
    #[inline(always)]
    fn send_until(
        &self,
        v: ShmVal,
        timeout: Option<Duration>,
        block: bool,
    ) -> Result<(), SendError> {
        if let Some(own) = self.owner_word() {
            if v.fits(self.pool()) && self.inner.ring.push_one_owned(v.raw(), own) {
                v.forget_sent(); // the cell owns the reference now
                return Ok(());
            }
        }
        self.send_slow(v, timeout, block)
    }

    /// The general send of one value (see `push_until`).
    #[inline(never)]
    fn send_slow(
        &self,
        v: ShmVal,
        timeout: Option<Duration>,
        block: bool,
    ) -> Result<(), SendError> {
        if !v.fits(self.pool()) {
            return Err(SendError::WrongPool(v));
        }
        match self.push_until(&[v.raw()], timeout, block) {
            (_, None) => {
                let _ = v.into_raw(); // the cell owns the reference now
                Ok(())
            }
            (_, Some(Stop::Full)) => Err(SendError::Full(v)),
            (_, Some(Stop::Timeout)) => Err(SendError::Timeout(v)),
            (_, Some(Stop::Closed)) => Err(SendError::Closed(v)),
            (_, Some(Stop::Broken(e))) => Err(SendError::Broken(v, e)),
        }
    }

    /// The owner word of the calling thread, if this process has its user entry
    /// (else the general path takes one).
    #[inline(always)]
    fn owner_word(&self) -> Option<u64> {
        (self.inner.me_token.load(Ordering::Acquire) == crate::platform::process_token()).then(
            || {
                ring::owner(
                    self.inner.me_id.load(Ordering::Relaxed) as u16,
                    crate::platform::thread_id(),
                )
            },
        )
    }

    /// Sends the values of `values` in order (see `send_many`).
    fn send_many_until(
        &self,
        values: &mut Vec<ShmVal>,
        timeout: Option<Duration>,
        block: bool,
    ) -> Result<usize, BatchError> {
        if let Some(i) = values.iter().position(|v| !v.fits(self.pool())) {
            return Err(BatchError::WrongPool(i));
        }
        let mut raws = [Raw::new(0, 0, 0); 64];
        let mut sent = 0;
        let mut stop = None;
        // In chunks, so that no allocation is needed for the raw words.
        for chunk in values.chunks(raws.len()) {
            for (r, v) in raws.iter_mut().zip(chunk) {
                *r = *v.raw_ref(); // a plain copy: the run is read whole below
            }
            let (n, why) = self.push_until(&raws[..chunk.len()], timeout, block);
            sent += n;
            if why.is_some() {
                stop = why;
                break;
            }
        }
        // The cells own the references of the values sent.
        for v in values.drain(..sent) {
            let _ = v.into_raw();
        }
        match stop {
            None => Ok(sent),
            Some(Stop::Full) if !block => Ok(sent),
            Some(Stop::Full | Stop::Timeout) => Err(BatchError::Timeout),
            Some(Stop::Closed) => Err(BatchError::Closed),
            Some(Stop::Broken(e)) => Err(BatchError::Broken(e)),
        }
    }

    /// Receives up to `max` values (at least one unless it fails), handing each to
    /// `out`, waiting at most `timeout` (`None`: no limit) if `block`; the deadline
    /// is fixed at the first failed attempt.
    fn pop_until(
        &self,
        max: usize,
        timeout: Option<Duration>,
        block: bool,
        out: &mut impl FnMut(Raw),
    ) -> Result<usize, RecvError> {
        let me = self.me().map_err(RecvError::Broken)?;
        let ring = &self.inner.ring;
        let broken = RecvError::Broken;
        let dl = Deadline::new(timeout, block);
        let budget = if block {
            self.inner.spin_ns.load(Ordering::Relaxed)
        } else {
            0
        };
        let mut wait = WaitLog::new(&self.inner.recv_adapt, budget);
        // Whether an attempt also looks for a sender stuck in the middle of a claim
        // (a read of the senders' counter: not on every spin round).
        let mut look = !block;
        loop {
            let stuck = match self.pop(max, me, look, &dl, out).map_err(broken)? {
                Pop::Got(n) => return Ok(n),
                Pop::Closed => return Err(RecvError::Closed),
                Pop::Empty(stuck) => stuck,
                Pop::Closing => continue, // never: `pop` finishes a close itself
            };
            if let Some(s) = stuck {
                if self.unstick(s) {
                    continue;
                }
            }
            if !block {
                return Err(RecvError::Empty);
            }
            wait.waited();
            let deadline = dl.at();
            if wait.spin.more(deadline) {
                look = wait.spin.round % 64 == 0;
                continue;
            }
            let ec = &ring.head().not_empty;
            let key = ec.prepare();
            match self.pop(max, me, true, &dl, out).map_err(broken)? {
                Pop::Got(n) => return Ok(n),
                Pop::Closed => return Err(RecvError::Closed),
                Pop::Closing => continue, // never: `pop` finishes a close itself
                Pop::Empty(stuck) => {
                    if let Some(s) = stuck {
                        if self.unstick(s) {
                            continue;
                        }
                    }
                    if deadline.is_some_and(|d| Instant::now() >= d) {
                        return Err(RecvError::Timeout);
                    }
                    wait.slept();
                    ec.wait(key, wake_at(deadline, stuck.is_some()));
                }
            }
        }
    }

    /// Receives one value: the owner's receive of one value inline, anything else
    /// round [`Pipe::recv_slow`].
    /// A blocking owner receive that finds nothing watches the next cell for
    /// [`FAST_SPINS`] pauses right here (no call between seeing the value and
    /// returning it) before the general wait.
    #[inline(always)]
    fn recv_until(&self, timeout: Option<Duration>, block: bool) -> Result<ShmVal, RecvError> {
        if let Some(own) = self.owner_word() {
            let watch = block
                && timeout.is_none_or(|t| t >= FAST_SPIN_MIN)
                && self.inner.spin_ns.load(Ordering::Relaxed) != 0;
            let rounds = if watch { FAST_SPINS } else { 0 };
            if let Some(r) = self.inner.ring.pop_one_owned(own, rounds) {
                return Ok(ShmVal::from_owned(self.pool(), r));
            }
        }
        self.recv_slow(timeout, block)
    }

    /// The general receive of one value (see `pop_until`).
    #[inline(never)]
    fn recv_slow(&self, timeout: Option<Duration>, block: bool) -> Result<ShmVal, RecvError> {
        // The value as two words (a tag word of `u64::MAX`: none), each stored and
        // loaded whole (see `Raw::read_fields`).
        let (mut tag, mut payload) = (u64::MAX, 0);
        self.pop_until(1, timeout, block, &mut |r: Raw| {
            tag = r.tag_word();
            payload = r.payload;
        })?;
        if tag == u64::MAX {
            return Err(RecvError::Broken(PipeError::Val(ValError::Corrupt {
                what: "pipe receive reported a value it did not hand over".into(),
            })));
        }
        Ok(ShmVal::from_owned(
            self.pool(),
            Raw::from_words(tag, payload),
        ))
    }

    /// Receives into `out` (see `recv_many`).
    fn recv_many_until(
        &self,
        out: &mut Vec<ShmVal>,
        max: usize,
        timeout: Option<Duration>,
        block: bool,
    ) -> Result<usize, RecvError> {
        if max == 0 {
            return Ok(0);
        }
        let pool = self.pool();
        out.reserve(max.min(MAX_BATCH_RESERVE));
        self.pop_until(max, timeout, block, &mut |r| {
            ShmVal::push_owned(out, pool, r);
        })
    }
}

/// Why a send stopped short.
enum Stop {
    Full,
    Timeout,
    Closed,
    Broken(PipeError),
}

/// Most room `recv_many` reserves in its output ahead of time.
const MAX_BATCH_RESERVE: usize = 1024;

/// Makes the object of a named channel: allocates `size` bytes of kind `t`, lets
/// `format` write its initial state, and registers it as `name` in `dir` (refused,
/// and the object freed, if the name is taken). Returns the creator's reference.
fn make_named(
    pool: &Pool,
    dir: &ShmTab,
    name: &str,
    t: u8,
    size: u64,
    format: impl FnOnce(u64) -> Result<(), ValError>,
) -> Result<ShmVal, PipeError> {
    let o = pool.alloc_obj(t, size as usize)?;
    let obj = ShmVal::from_owned(pool, Raw::new(t, 0, o.off));
    format(o.off)?;
    let tx = dir.lock()?;
    if tx.get(name)?.is_some() {
        return Err(PipeError::Exists(name.into()));
    }
    tx.insert(name, &obj)?;
    drop(tx);
    Ok(obj)
}

/// A spin phase in nanoseconds (saturating).
fn spin_ns(spin: Duration) -> u64 {
    spin.as_nanos().min(u128::from(u64::MAX)) as u64
}

/// Looks `name` up in `dir`, polling (0.2 ms growing to 10 ms naps) until it
/// appears or `wait` has passed.
fn find(pool: &Pool, dir: Directory, name: &str, wait: Duration) -> Result<ShmVal, PipeError> {
    let start = Instant::now();
    let mut nap = Duration::from_micros(200);
    loop {
        if let Some(obj) = dir.get(pool, name)? {
            return Ok(obj);
        }
        let waited = start.elapsed();
        if waited >= wait {
            return Err(PipeError::NotFound {
                name: name.into(),
                waited,
            });
        }
        std::thread::sleep(nap.min(wait - waited));
        nap = (nap * 2).min(Duration::from_millis(10));
    }
}

pub(crate) use broadcast::values_held as broadcast_values_held;
pub(crate) use broadcast::LAYOUT_PARTS as BROADCAST_LAYOUT;
pub(crate) use ring::LAYOUT_PARTS as PIPE_LAYOUT;

/// What a pipe object holds (for release and `check`).
pub(crate) fn values_held(
    pool: &Pool,
    o: crate::shm::Obj,
    f: &mut dyn FnMut(Raw),
) -> Result<(), ValError> {
    Ring::attach(pool, o.off)?.held(pool, f);
    Ok(())
}
