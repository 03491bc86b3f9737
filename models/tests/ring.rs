//! Exhaustive model checking (loom) of the pipe ring: shared claims and the limit,
//! the owner's section against a revoker, close against a send in flight, and a
//! dead sender's claim moved on by the receiver.
//!
//! The code checked is the library's own: `src/pipe/ring/{layout,view,owned,shared,
//! close,recovery}.rs` are compiled here against a loom version of the ring's `env`
//! module (`src/pipe/ring/env.rs` is the real one). `membarrier` is modelled as a
//! SeqCst fence on the revoker's side and the owner's compiler fence as a SeqCst
//! fence: what the system call guarantees is that the owner's CPU executes a full
//! barrier between the two, which is what a pair of SeqCst fences gives in the
//! model (the asymmetric-fence argument of the membarrier(2) man page).
//!
//! Run with `RUSTFLAGS="--cfg loom" cargo test -p shmval-models --test ring --release`
//! (`.ci/run` does).
#![cfg(loom)]
#![allow(dead_code, unused_imports, missing_docs)]

/// The library's fail points are no code here.
macro_rules! fail_point {
    ($name:literal) => {};
}

/// The loom side of the seam `src/pipe/ring/env.rs`.
pub(crate) mod env {
    pub(crate) use loom::sync::atomic::AtomicU64;
    use loom::sync::atomic::{fence, AtomicBool, Ordering};
    use std::time::{Duration, Instant};

    pub(crate) const LOCK_PATIENCE: Duration = Duration::from_secs(5);

    /// The model's boxes outlive the view (the `Model` holds both).
    pub(crate) type Keep = ();

    #[derive(Debug, Default)]
    pub(crate) struct ObjHeader;

    #[derive(Debug, Default)]
    pub(crate) struct Slot {
        pub tag: AtomicU64,
        pub payload: AtomicU64,
    }

    /// Nobody sleeps in the model: waiters poll (and yield).
    #[derive(Debug, Default)]
    pub(crate) struct EventCount;
    impl EventCount {
        pub(crate) fn notify(&self) {}
        pub(crate) fn notify_waiters(&self) {}
    }

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub(crate) struct Raw {
        tag: u64,
        pub payload: u64,
    }
    impl Raw {
        pub(crate) fn from_words(tag: u64, payload: u64) -> Raw {
            Raw { tag, payload }
        }
        pub(crate) fn tag_word(&self) -> u64 {
            self.tag
        }
        /// A value of the model: an "object" `v` (tag 1).
        pub(crate) fn val(v: u64) -> Raw {
            Raw { tag: 1, payload: v }
        }
    }

    /// The pool as the ring sees it: slots, and the values it releases.
    #[derive(Debug, Default)]
    pub(crate) struct Pool {
        pub released: loom::sync::Mutex<Vec<u64>>,
    }
    impl Pool {
        pub(crate) fn read(&self, s: &Slot) -> Raw {
            Raw::from_words(
                s.tag.load(Ordering::Acquire),
                s.payload.load(Ordering::Acquire),
            )
        }
        pub(crate) fn write(&self, s: &Slot, r: Raw) {
            s.payload.store(r.payload, Ordering::Relaxed);
            s.tag.store(r.tag, Ordering::Release);
        }
        pub(crate) fn release(&self, r: Raw) {
            self.released.lock().unwrap().push(r.payload);
        }
    }

    loom::lazy_static! {
        /// Whether process token `i` (1..=3) lives.
        pub(crate) static ref ALIVE: [AtomicBool; 4] = Default::default();
    }

    pub(crate) fn token_alive(t: u64) -> bool {
        ALIVE
            .get(t as usize)
            .is_some_and(|a| a.load(Ordering::Acquire))
    }

    /// The model keeps no ledgers.
    pub(crate) fn drop_receipts<T>(_: &T, _: *const u8, _: u64, _: u64) {}

    pub(crate) fn membarrier_global() -> bool {
        fence(Ordering::SeqCst);
        true
    }

    pub(crate) fn publish_order() -> Ordering {
        Ordering::Release
    }

    pub(crate) fn sc_order() {
        fence(Ordering::SeqCst);
    }

    pub(crate) fn section_fence() {
        fence(Ordering::SeqCst);
    }

    pub(crate) fn wait_until(until: Option<Instant>, mut done: impl FnMut() -> bool) -> bool {
        loop {
            if done() {
                return true;
            }
            if until.is_none() {
                return false;
            }
            loom::thread::yield_now();
        }
    }
}

#[path = "../../src/pipe/ring/close.rs"]
mod close;
#[path = "../../src/pipe/ring/layout.rs"]
pub(crate) mod layout;
#[path = "../../src/pipe/ring/owned.rs"]
mod owned;
#[path = "../../src/pipe/ring/recovery.rs"]
mod recovery;
#[path = "../../src/pipe/ring/shared.rs"]
mod shared;
#[path = "../../src/pipe/ring/view.rs"]
pub(crate) mod view;

mod checks {
    use super::env::{Pool, Raw, ALIVE};
    use super::layout::*;
    use super::view::{Dir, Pop, Push, Ring};
    use loom::sync::atomic::Ordering::{Release, SeqCst};
    use loom::sync::Arc;
    use loom::thread;
    use std::ptr::NonNull;

    /// Attempts a thread makes while others run before it gives up (loom explores
    /// every schedule, unfair ones too, in which a waiting thread could spin
    /// forever; what is left is received single-threaded after the joins).
    const TRIES: usize = 3;

    /// A pipe in the model's memory.
    struct Model {
        ring: Ring,
        pool: Pool,
        _head: Box<PipeHead>,
        _cells: Box<[Cell]>,
    }

    /// How a send ended.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Sent {
        Yes,
        /// Refused: the pipe is closed.
        Closed,
        /// Full (or an owner inside its section) for all its tries.
        GaveUp,
    }

    /// What a receiver saw.
    #[derive(Debug, Default)]
    struct Got {
        vals: Vec<u64>,
        /// The end, after `vals`.
        closed: bool,
    }

    impl Model {
        /// A fresh pipe of `cap` cells (as `Ring::format` leaves it), tokens 1..=3
        /// alive.
        fn new(cap: u64) -> Arc<Model> {
            let head = Box::<PipeHead>::default();
            let cells: Box<[Cell]> = (0..cap).map(|_| Cell::default()).collect();
            head.meta.cap.store(cap, SeqCst);
            head.meta.users.store(USERS as u64, SeqCst);
            for (i, c) in cells.iter().enumerate() {
                c.word.store(word(i as u64, EMPTY), SeqCst);
            }
            for a in ALIVE.iter().skip(1) {
                a.store(true, SeqCst);
            }
            // SAFETY: both boxes live as long as the model that holds the view.
            let ring =
                unsafe { Ring::from_raw((), NonNull::from(&*head), NonNull::from(&cells[0]), cap) };
            Arc::new(Model {
                ring,
                pool: Pool::default(),
                _head: head,
                _cells: cells,
            })
        }

        /// Registers process `token` and settles side `d` for it: owned when
        /// `own` (by thread 1 of it), else shared.
        fn user(&self, token: u64, d: Dir, own: bool) -> (u16, u64) {
            let me = self.ring.register(&self.pool, token).expect("a free entry");
            let word = owner(me, 1);
            let got = self.ring.settle(d, word, own, None);
            assert_eq!(got, Ok(Some(own)), "side settled");
            (me, word)
        }

        /// Sends `v` as the pipe's general path does: as the owner while it owns
        /// the side, else (after settling) by claim; up to `tries` attempts.
        fn send(&self, me: (u16, u64), v: u64, tries: usize) -> Sent {
            let vals = [Raw::val(v)];
            for _ in 0..tries {
                let r = match self.ring.push_owned(&self.pool, &vals, me.1) {
                    Some(r) => r,
                    None => match self.ring.settle(Dir::Send, me.1, false, None) {
                        Ok(Some(true)) => continue,
                        Ok(Some(false)) => self.ring.try_push(&self.pool, &vals, me.0),
                        // An owner inside its section: try again later.
                        Ok(None) => Push::Full(None),
                        Err(()) => unreachable!("the model's barrier never fails"),
                    },
                };
                match r {
                    Push::Sent(1) => return Sent::Yes,
                    Push::Closed => return Sent::Closed,
                    Push::Sent(_) => unreachable!("one value"),
                    Push::Full(_) => thread::yield_now(),
                }
            }
            Sent::GaveUp
        }

        /// Receives on the shared side until `n` values came, the end, or `tries`
        /// looks found nothing; moves on what dead claimers left.
        fn recv(&self, me: u16, n: usize, tries: usize, got: &mut Got) {
            let mut empty = 0;
            while got.vals.len() < n && !got.closed && empty < tries {
                let out = &mut got.vals;
                match self
                    .ring
                    .try_pop(&self.pool, 1, me, true, &mut |r: Raw| out.push(r.payload))
                {
                    Pop::Got(_) => {}
                    Pop::Closed => got.closed = true,
                    Pop::Closing => {
                        empty += 1;
                        if !self.ring.finish_close(None) {
                            thread::yield_now();
                        }
                    }
                    Pop::Empty(stuck) => {
                        empty += 1;
                        if !stuck.is_some_and(|s| self.ring.unstick(&self.pool, s)) {
                            thread::yield_now();
                        }
                    }
                }
            }
        }

        /// What is left, once every other thread is done (nothing can change
        /// under this thread: a few looks settle it).
        fn drain(&self, me: u16, got: &mut Got) {
            self.recv(me, usize::MAX, 4, got);
        }
    }

    fn model(f: impl Fn() + Sync + Send + 'static) {
        let mut b = loom::model::Builder::new();
        if b.preemption_bound.is_none() {
            b.preemption_bound = Some(2);
        }
        b.check(f);
    }

    /// Two processes send on the shared side of a one-cell pipe while a third
    /// receives: what was sent arrives once, nothing else does — the second sender
    /// waits for the receiver's record to clear before refilling the cell.
    #[test]
    fn shared_claims_conserve_values_through_a_one_cell_ring() {
        model(|| {
            let m = Model::new(1);
            let a = m.user(1, Dir::Send, false);
            let b = m.user(2, Dir::Send, false);
            let r = m.user(3, Dir::Recv, false);
            let ts: Vec<_> = [(a, 10), (b, 20)]
                .into_iter()
                .map(|(me, v)| {
                    let m = m.clone();
                    thread::spawn(move || (v, m.send(me, v, TRIES)))
                })
                .collect();
            let mut got = Got::default();
            m.recv(r.0, 2, TRIES, &mut got);
            let mut sent: Vec<_> = ts
                .into_iter()
                .map(|t| t.join().unwrap())
                .filter(|&(_, s)| s == Sent::Yes)
                .map(|(v, _)| v)
                .collect();
            m.drain(r.0, &mut got);
            got.vals.sort();
            sent.sort();
            assert_eq!(got.vals, sent);
        });
    }

    /// The send side's owner sends two values while another process revokes its
    /// ownership and sends one: the owner either finishes a send inside its
    /// section (and the revoker waits it out) or finds itself revoked and claims;
    /// every value sent arrives once, the owner's in order.
    #[test]
    fn a_revoked_owner_loses_nothing_and_keeps_its_order() {
        model(|| {
            let m = Model::new(4);
            let o = m.user(1, Dir::Send, true);
            // Registered only: its first send finds the side owned.
            let s = m.ring.register(&m.pool, 2).unwrap();
            let r = m.user(3, Dir::Recv, false);
            let owning = {
                let m = m.clone();
                thread::spawn(move || [m.send(o, 1, TRIES), m.send(o, 2, TRIES)])
            };
            // Another process's thread: its word is not the owner's.
            let other = {
                let m = m.clone();
                thread::spawn(move || m.send((s, owner(s, 2)), 9, TRIES))
            };
            let mut got = Got::default();
            let mine = owning.join().unwrap();
            let theirs = other.join().unwrap();
            m.drain(r.0, &mut got);
            let want_mine: Vec<u64> = [1, 2]
                .into_iter()
                .zip(mine)
                .filter(|&(_, s)| s == Sent::Yes)
                .map(|(v, _)| v)
                .collect();
            let got_mine: Vec<u64> = got.vals.iter().copied().filter(|&v| v != 9).collect();
            assert_eq!(got_mine, want_mine, "the owner's values, in order");
            let nines = got.vals.iter().filter(|&&v| v == 9).count();
            assert_eq!(nines, usize::from(theirs == Sent::Yes), "{:?}", got.vals);
        });
    }

    /// A close races with a send (by the side's owner, or by claim) and a
    /// receiver: the receiver never reports the end before a value whose send
    /// succeeded, and a refused value never arrives.
    #[test]
    fn close_never_overtakes_a_send_that_succeeded() {
        for own in [true, false] {
            model(move || {
                let m = Model::new(2);
                let s = m.user(1, Dir::Send, own);
                let r = m.user(2, Dir::Recv, false);
                let sender = {
                    let m = m.clone();
                    thread::spawn(move || m.send(s, 7, TRIES))
                };
                let closer = {
                    let m = m.clone();
                    thread::spawn(move || m.ring.close())
                };
                let mut got = Got::default();
                m.recv(r.0, 1, TRIES, &mut got);
                let sent = sender.join().unwrap();
                closer.join().unwrap();
                m.drain(r.0, &mut got);
                assert!(got.closed, "closed in the end (owner: {own})");
                let want: &[u64] = if sent == Sent::Yes { &[7] } else { &[] };
                assert_eq!(got.vals, want, "sent: {sent:?} (owner: {own})");
            });
        }
    }

    /// A sender dies right after its claim (its cell never filled) while another
    /// process sends: the receiver skips the dead claim once the claimer is found
    /// dead and gets the live sender's value.
    #[test]
    fn a_dead_senders_claim_is_skipped() {
        model(|| {
            let m = Model::new(2);
            let d = m.user(1, Dir::Send, false).0;
            let s = m.user(2, Dir::Send, false);
            let r = m.user(3, Dir::Recv, false);
            let dying = {
                let m = m.clone();
                thread::spawn(move || {
                    let h = m.ring.head();
                    let t = h.tail.load(SeqCst);
                    if Ring::claim(&h.tail, &m.ring.user(d).send, t, 1) {
                        ALIVE[1].store(false, Release); // dies holding the claim
                    }
                })
            };
            let live = {
                let m = m.clone();
                thread::spawn(move || m.send(s, 5, TRIES))
            };
            let mut got = Got::default();
            m.recv(r.0, 1, TRIES, &mut got);
            let sent = live.join().unwrap();
            dying.join().unwrap();
            m.drain(r.0, &mut got);
            let want: &[u64] = if sent == Sent::Yes { &[5] } else { &[] };
            assert_eq!(got.vals, want);
        });
    }
}
