//! How a send or a receive proceeds: one attempt as the side's owner or by claim,
//! settling who owns a side, and the waiting loops (spin, then sleep on the
//! eventcount) up to the caller's deadline.

use super::error::{BatchError, Fault, RecvError, SendError};
use super::handle::Pipe;
use super::ring::{self, Dir, Pop, Push, Stuck};
use super::wait::{wake_at, Deadline, WaitLog, STUCK_CHECK};
use crate::pipe::wait::Wait;
use crate::shm::{Raw, ShmVal, ValError};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// Rounds (one pause each, ~30 ns here) an owning receiver watches the next cell
/// before its general wait, and the shortest timeout for which it does so (the
/// deadline is fixed after the watch: a few µs late at most, well under 1% of it).
const FAST_SPINS: u32 = 128;
const FAST_SPIN_MIN: Duration = Duration::from_millis(1);

impl Pipe {
    /// Whether a claimed cell we keep finding in our way belongs to a dead process
    /// (checked once it has been in the way for [`STUCK_CHECK`]); recovers it if so.
    pub(super) fn unstick(&self, s: Stuck) -> bool {
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
    ///
    /// `h` hands the references of `vals` (values `from..` of the send) over around
    /// each call into the ring only, never around a wait for another process to
    /// settle ownership: a sender killed while it waits leaks nothing.
    #[inline]
    fn push(
        &self,
        vals: &[Raw],
        me: (u16, u64),
        dl: &Deadline,
        h: &mut dyn Handover,
        from: usize,
    ) -> Result<Push, Fault> {
        let own = ring::owner(me.0, crate::platform::thread_id());
        let (ring, pool) = (&self.inner.ring, self.pool());
        match handed(h, from, || ring.push_owned(pool, vals, own))? {
            Some(p) => Ok(p),
            None => self.push_settled(vals, me, own, dl, h, from),
        }
    }

    #[inline(never)]
    fn push_settled(
        &self,
        vals: &[Raw],
        me: (u16, u64),
        own: u64,
        dl: &Deadline,
        h: &mut dyn Handover,
        from: usize,
    ) -> Result<Push, Fault> {
        let (ring, pool) = (&self.inner.ring, self.pool());
        let r = self.settled(
            Dir::Send,
            me,
            own,
            dl,
            h,
            // A hand-over that fails (a damaged value) ends the attempt, not `None`
            // (which would settle again, and again).
            |h| handed(h, from, || ring.push_owned(pool, vals, own)).transpose(),
            |h| {
                Ok(handed(h, from, || Some(ring.try_push(pool, vals, me.0)))
                    .map(|p| p.expect("tried")))
            },
        )?;
        match r {
            Some(p) => p.map_err(Fault::Val),
            // The owner stayed inside its section until our limit: no room for us yet.
            None => Ok(Push::Full(None)),
        }
    }

    /// One receive attempt (as [`Pipe::push`]).
    #[inline]
    fn pop(
        &self,
        max: usize,
        me: (u16, u64),
        look: bool,
        dl: &Deadline,
        out: &mut impl ring::Take,
    ) -> Result<Pop, Fault> {
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
    ) -> Result<Option<T>, Fault> {
        loop {
            // A test makes its side shared (the claims of the shared protocol are
            // what it stops inside).
            let can_own =
                crate::platform::membarrier_registered() && !fail_fires!("pipe.never_own");
            match self
                .inner
                .ring
                .settle(d, own, can_own, dl.other_process_limit())
                .map_err(|()| Fault::Barrier)?
            {
                None if dl.unlimited() => return Err(Fault::OwnerStuck),
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
        how: Wait,
        handover: &mut dyn Handover,
    ) -> (usize, Option<Stop>) {
        let me = match self.me() {
            Ok(me) => me,
            Err(e) => return (0, Some(Stop::Broken(e))),
        };
        let ring = &self.inner.ring;
        let mut done = 0;
        let dl = Deadline::new(how);
        let budget = if how.blocks() {
            self.inner.spin_ns.load(Ordering::Relaxed)
        } else {
            0
        };
        let mut wait = WaitLog::new(&self.inner.send_adapt, budget);
        loop {
            let stuck = match self.push(&vals[done..], me, &dl, handover, done) {
                Ok(Push::Sent(n)) => {
                    done += n;
                    if done == vals.len() {
                        return (done, None);
                    }
                    // Room for part of the run only: let the receivers get ahead
                    // instead of chasing them cell by cell (which takes the lines
                    // they are emptying away from them) — within the spin budget.
                    if how.blocks() {
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
            if !how.blocks() {
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
            match self.push(&vals[done..], me, &dl, handover, done) {
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
    pub(super) fn send_until(&self, v: ShmVal, how: Wait) -> Result<(), SendError> {
        if let Some(own) = self.owner_word() {
            if v.fits(self.pool()) && v.unledger().is_ok() {
                if self.inner.ring.push_one_owned(v.raw(), own) {
                    v.forget_sent(); // the cell owns the reference now
                    return Ok(());
                }
                v.reledger();
            }
        }
        self.send_slow(v, how)
    }

    /// The general send of one value (see `push_until`).
    #[inline(never)]
    fn send_slow(&self, v: ShmVal, how: Wait) -> Result<(), SendError> {
        if !v.fits(self.pool()) {
            return Err(SendError::WrongPool(v));
        }
        let stop = self
            .push_until(&[v.raw()], how, &mut Values(std::slice::from_ref(&v)))
            .1;
        match stop {
            None => {
                v.forget_sent(); // the cell owns the reference now
                Ok(())
            }
            Some(Stop::Full) => Err(SendError::Full(v)),
            Some(Stop::Timeout) => Err(SendError::Timeout(v)),
            Some(Stop::Closed) => Err(SendError::Closed(v)),
            Some(Stop::Broken(e)) => Err(SendError::Broken(v, e)),
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
    pub(super) fn send_many_until(
        &self,
        values: &mut Vec<ShmVal>,
        how: Wait,
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
            let (n, why) = self.push_until(&raws[..chunk.len()], how, &mut Values(chunk));
            sent += n;
            if why.is_some() {
                stop = why;
                break;
            }
        }
        // The cells own the references of the values sent.
        for v in values.drain(..sent) {
            v.forget_sent();
        }
        match stop {
            None => Ok(sent),
            Some(Stop::Full) if !how.blocks() => Ok(sent),
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
        how: Wait,
        out: &mut impl ring::Take,
    ) -> Result<usize, RecvError> {
        let me = self.me().map_err(RecvError::Broken)?;
        let ring = &self.inner.ring;
        let broken = RecvError::Broken;
        let dl = Deadline::new(how);
        let budget = if how.blocks() {
            self.inner.spin_ns.load(Ordering::Relaxed)
        } else {
            0
        };
        let mut wait = WaitLog::new(&self.inner.recv_adapt, budget);
        // Whether an attempt also looks for a sender stuck in the middle of a claim
        // (a read of the senders' counter: not on every spin round).
        let mut look = !how.blocks();
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
            if !how.blocks() {
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
    pub(super) fn recv_until(&self, how: Wait) -> Result<ShmVal, RecvError> {
        if let Some(own) = self.owner_word() {
            let watch = how.blocks()
                && how.timeout().is_none_or(|t| t >= FAST_SPIN_MIN)
                && self.inner.spin_ns.load(Ordering::Relaxed) != 0;
            let rounds = if watch { FAST_SPINS } else { 0 };
            let pool = self.pool();
            // Counted once taken, before any sender is woken.
            if let Some(r) = self
                .inner
                .ring
                .pop_one_owned(own, rounds, |r| pool.ledger_add_raw(r))
            {
                return Ok(ShmVal::from_ledgered(pool, r));
            }
        }
        self.recv_slow(how)
    }

    /// The general receive of one value (see `pop_until`).
    #[inline(never)]
    fn recv_slow(&self, how: Wait) -> Result<ShmVal, RecvError> {
        // The value as two words (a tag word of `u64::MAX`: none), each stored and
        // loaded whole (see `Raw::read_fields`).
        let mut one = One {
            pool: self.pool(),
            tag: u64::MAX,
            payload: 0,
        };
        self.pop_until(1, how, &mut one)?;
        if one.tag == u64::MAX {
            return Err(RecvError::Broken(Fault::Val(ValError::Corrupt {
                what: "pipe receive reported a value it did not hand over".into(),
            })));
        }
        Ok(ShmVal::from_ledgered(
            self.pool(),
            Raw::from_words(one.tag, one.payload),
        ))
    }

    /// Receives into `out` (see `recv_many`).
    pub(super) fn recv_many_until(
        &self,
        out: &mut Vec<ShmVal>,
        max: usize,
        how: Wait,
    ) -> Result<usize, RecvError> {
        if max == 0 {
            return Ok(0);
        }
        let pool = self.pool();
        out.reserve(max.min(MAX_BATCH_RESERVE));
        let start = out.len();
        // A receipt makes the run's references this process's with one store once the
        // receive commits (a run is at most a receipt long then); without one, they
        // are counted after it commits.
        let receipt = pool.ledger_batch();
        let max = if receipt.is_some() {
            max.min(crate::ledger::BATCH_KEYS)
        } else {
            max
        };
        self.pop_until(
            max,
            how,
            &mut Many {
                out,
                pool,
                start,
                receipt,
                pipe: (
                    self.inner.obj.raw().payload,
                    self.inner
                        .ring
                        .head()
                        .meta
                        .created_ns
                        .load(Ordering::Relaxed),
                ),
            },
        )
    }
}

/// Why a send stopped short.
enum Stop {
    Full,
    Timeout,
    Closed,
    Broken(Fault),
}

/// Most room `recv_many` reserves in its output ahead of time.
const MAX_BATCH_RESERVE: usize = 1024;

/// How the references of the values a send attempt may publish leave the sending
/// process's ledger: just before each attempt, and back after it for those that did
/// not go (a value waiting for room stays in the ledger, so a sender killed while it
/// waits leaks nothing; see `ledger`).
pub(super) trait Handover {
    /// Before an attempt to publish values `from..`.
    ///
    /// # Errors
    /// A value's object was damaged since its handle was made.
    fn before(&mut self, from: usize) -> Result<(), ValError>;
    /// After it: `sent` of them went, from `from` on.
    fn after(&mut self, from: usize, sent: usize);
}

/// One call into the ring that may publish values `from..`, their references handed
/// over around it (`None`: it did not try: this thread does not own the side).
#[inline]
fn handed(
    h: &mut dyn Handover,
    from: usize,
    push: impl FnOnce() -> Option<Push>,
) -> Result<Option<Push>, ValError> {
    h.before(from)?;
    let r = push();
    h.after(from, if let Some(Push::Sent(n)) = r { n } else { 0 });
    Ok(r)
}

/// The handles being sent.
struct Values<'a>(&'a [ShmVal]);

impl Handover for Values<'_> {
    fn before(&mut self, from: usize) -> Result<(), ValError> {
        for (i, v) in self.0[from..].iter().enumerate() {
            if let Err(e) = v.unledger() {
                self.0[from..from + i].iter().for_each(ShmVal::reledger);
                return Err(e);
            }
        }
        Ok(())
    }

    fn after(&mut self, from: usize, sent: usize) {
        self.0[from + sent..].iter().for_each(ShmVal::reledger);
    }
}

/// A receive of one value: its two words (a tag word of `u64::MAX`: none), each
/// stored and loaded whole (see `Raw::read_fields`), counted in the ledger once taken.
struct One<'a> {
    pool: &'a crate::Pool,
    tag: u64,
    payload: u64,
}

impl ring::Take for One<'_> {
    fn put(&mut self, r: Raw) {
        self.tag = r.tag_word();
        self.payload = r.payload;
    }

    fn taken(&mut self) {
        if self.tag != u64::MAX {
            self.pool
                .ledger_add_raw(Raw::from_words(self.tag, self.payload));
        }
    }
}

/// A receive into a vector: handles appended as read, counted in the ledger once
/// taken (not before: values read are still the pipe's until the receive commits).
struct Many<'a> {
    out: &'a mut Vec<ShmVal>,
    pool: &'a crate::Pool,
    /// The first value not yet counted.
    start: usize,
    receipt: Option<crate::ledger::Receipt<'a>>,
    /// The pipe object's offset and creation time (named in the receipt).
    pipe: (u64, u64),
}

impl ring::Take for Many<'_> {
    fn put(&mut self, r: Raw) {
        ShmVal::push_unledgered(self.out, self.pool, r);
        if let Some(rc) = &mut self.receipt {
            if r.is_object() && !rc.note(r.payload) {
                self.receipt = None; // cannot happen: the run is a receipt long
            }
        }
    }

    fn intend(&mut self, from: u64, user: Option<u16>) {
        if let Some(rc) = &mut self.receipt {
            rc.intend(self.pipe.0, self.pipe.1, from, user);
        }
    }

    fn taken(&mut self) {
        match &mut self.receipt {
            Some(rc) => rc.commit(),
            None => ShmVal::ledger_all(&self.out[self.start..]),
        }
        self.start = self.out.len();
    }
}
