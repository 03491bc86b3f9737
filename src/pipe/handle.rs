//! The `Pipe` handle: create, open, remove, look at, and the public send and
//! receive calls (how they proceed is in `transfer`).

use super::directory::{check_name, find, make_named, PIPES};
use super::error::{BatchError, Fault, PipeError, RecvError, SendError};
use super::ring::{self, Ring, Stuck};
use super::wait::{Adapt, Turn};
use super::{spin_ns, DEFAULT_SPIN};
use crate::pipe::wait::Wait;
use crate::shm::layout::tag;
use crate::shm::{ShmVal, ValError};
use crate::Pool;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A handle on a named pipe. Clones share one registration; every method may be
/// called from any thread.
#[derive(Clone)]
pub struct Pipe {
    pub(super) inner: Arc<Inner>,
}

pub(super) struct Inner {
    /// Keeps the pipe object alive (one reference) and the pool mapped.
    pub(super) obj: ShmVal,
    pub(super) ring: Ring,
    pub(super) name: String,
    /// This process's user entry: token and index (re-taken after a fork).
    pub(super) me_token: AtomicU64,
    pub(super) me_id: AtomicU64,
    pub(super) register: Mutex<()>,
    pub(super) spin_ns: AtomicU64,
    /// How long a blocked send and a blocked receive of this handle spin before they
    /// sleep, learnt from the last waits (see [`Adapt`]).
    pub(super) send_adapt: Adapt,
    pub(super) recv_adapt: Adapt,
    /// The claimed cell this handle last found itself waiting behind, and since when.
    pub(super) stuck: Mutex<Option<(Stuck, Instant)>>,
    /// This process's turns to claim and fill (empty) cells under its user entry.
    pub(super) send_turn: Turn,
    pub(super) recv_turn: Turn,
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

    /// Opens the pipe `name` if the pool has one, creates it with room for
    /// `capacity` values otherwise (racing creators: one makes it, the others open
    /// it). An existing pipe keeps its own capacity ([`Pipe::capacity`]).
    ///
    /// # Errors
    /// As [`Pipe::create`] and [`Pipe::open`].
    pub fn open_or_create(pool: &Pool, name: &str, capacity: u64) -> Result<Pipe, PipeError> {
        match Pipe::open(pool, name, Duration::ZERO) {
            Err(PipeError::NotFound { .. }) => match Pipe::create(pool, name, capacity) {
                Err(PipeError::Exists(_)) => Pipe::open(pool, name, Duration::ZERO),
                r => r,
            },
            r => r,
        }
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
    pub(super) fn me(&self) -> Result<(u16, u64), Fault> {
        let token = crate::platform::process_token();
        if self.inner.me_token.load(Ordering::Acquire) == token {
            return Ok((self.inner.me_id.load(Ordering::Relaxed) as u16, token));
        }
        Ok((self.register(token)?, token))
    }

    #[cold]
    fn register(&self, token: u64) -> Result<u16, Fault> {
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
            .ok_or_else(|| Fault::TooManyUsers(self.inner.name.clone()))?;
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

    /// A snapshot of the pipe for diagnostics (`shmval pipes`).
    pub fn status(&self) -> PipeStatus {
        use super::ring::{FREE, SHARED};
        let h = self.inner.ring.head();
        let pool = self.pool();
        let side = |bias: u64| -> String {
            match bias {
                FREE => "free".into(),
                SHARED => "shared".into(),
                b => {
                    let user = (b >> 34) as usize % h.users.len();
                    let token = h.users[user].token.load(Ordering::Relaxed);
                    let who = pool.pid_of_token(token).map_or_else(
                        || "a process that is gone".to_string(),
                        |p| format!("pid {p}"),
                    );
                    if b & 3 == 3 {
                        format!("{who} (being revoked)")
                    } else {
                        who
                    }
                }
            }
        };
        PipeStatus {
            name: self.name().to_owned(),
            capacity: self.capacity(),
            len: self.len(),
            sent: self.sent(),
            received: self.received(),
            closed: self.is_closed(),
            send_side: side(h.send_bias.load(Ordering::Acquire)),
            recv_side: side(h.recv_bias.load(Ordering::Acquire)),
            senders_sleeping: h.not_full.may_have_sleepers(),
            receivers_sleeping: h.not_empty.may_have_sleepers(),
            users: h
                .users
                .iter()
                .filter(|u| u.token.load(Ordering::Relaxed) != 0)
                .count(),
            claims: h
                .users
                .iter()
                .enumerate()
                .filter_map(|(i, u)| {
                    let (sr, rr) = (
                        u.send.load(Ordering::Acquire),
                        u.recv.load(Ordering::Acquire),
                    );
                    let token = u.token.load(Ordering::Relaxed);
                    ((sr | rr) & 0x7FFF != 0).then(|| {
                        let who = pool
                            .pid_of_token(token)
                            .map_or_else(|| "gone".to_string(), |p| format!("pid {p}"));
                        format!(
                            "user {i} ({who}): send {} from {}, receive {} from {}{}",
                            sr & 0x7FFF,
                            sr >> 16,
                            rr & 0x7FFF,
                            rr >> 16,
                            if rr & (1 << 15) != 0 { " (won)" } else { "" }
                        )
                    })
                })
                .collect(),
        }
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
        self.send_until(value.into(), Wait::Never)
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
        self.send_until(value.into(), Wait::For(timeout))
    }

    /// Sends `value`, waiting as long as it takes for room.
    ///
    /// # Errors
    /// [`SendError::Closed`], ... (the value comes back).
    #[inline]
    pub fn send(&self, value: impl Into<ShmVal>) -> Result<(), SendError> {
        self.send_until(value.into(), Wait::Forever)
    }

    /// Receives a value if one is there now.
    ///
    /// # Errors
    /// [`RecvError::Empty`], [`RecvError::Closed`].
    #[inline]
    pub fn try_recv(&self) -> Result<ShmVal, RecvError> {
        self.recv_until(Wait::Never)
    }

    /// Receives a value, waiting at most `timeout`.
    ///
    /// # Errors
    /// [`RecvError::Timeout`], [`RecvError::Closed`].
    #[inline]
    pub fn recv_timeout(&self, timeout: Duration) -> Result<ShmVal, RecvError> {
        self.recv_until(Wait::For(timeout))
    }

    /// Receives a value, waiting as long as it takes.
    ///
    /// # Errors
    /// [`RecvError::Closed`].
    #[inline]
    pub fn recv(&self) -> Result<ShmVal, RecvError> {
        self.recv_until(Wait::Forever)
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
        self.send_many_until(values, Wait::Never)
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
        self.send_many_until(values, Wait::For(timeout))
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
        self.send_many_until(values, Wait::Forever)
    }

    /// Appends to `out` up to `max` values that are in the pipe now, in order;
    /// returns how many.
    ///
    /// # Errors
    /// [`RecvError::Empty`] when there is none, [`RecvError::Closed`].
    pub fn try_recv_many(&self, out: &mut Vec<ShmVal>, max: usize) -> Result<usize, RecvError> {
        self.recv_many_until(out, max, Wait::Never)
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
        self.recv_many_until(out, max, Wait::For(timeout))
    }

    /// Waits for a value, then appends to `out` up to `max` of the values there,
    /// in order; returns how many (at least one; 0 only when `max` is 0).
    ///
    /// # Errors
    /// [`RecvError::Closed`].
    pub fn recv_many(&self, out: &mut Vec<ShmVal>, max: usize) -> Result<usize, RecvError> {
        self.recv_many_until(out, max, Wait::Forever)
    }
}

/// A pipe as [`Pipe::status`] sees it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PipeStatus {
    /// Its name.
    pub name: String,
    /// Values it holds at most.
    pub capacity: u64,
    /// Values in it now.
    pub len: u64,
    /// Values sent since its creation.
    pub sent: u64,
    /// Values received since its creation.
    pub received: u64,
    /// Whether it was closed.
    pub closed: bool,
    /// Who has the send side: `free`, `shared` (claimed by CAS), or the owner's pid.
    pub send_side: String,
    /// Who has the receive side, likewise.
    pub recv_side: String,
    /// A sender may be asleep waiting for room.
    pub senders_sleeping: bool,
    /// A receiver may be asleep waiting for a value.
    pub receivers_sleeping: bool,
    /// Processes that have used the pipe and not left it.
    pub users: usize,
    /// Claims under way (shared sides): each user entry's send and receive record.
    pub claims: Vec<String>,
}
