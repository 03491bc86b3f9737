//! A validated view of a pipe object (`Ring`), its accessors, and what one attempt
//! of a send or receive can come to.

use super::env::{AtomicU64, Keep};
use super::layout::*;
use std::ptr::NonNull;

/// Which side of a pipe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dir {
    Send,
    Recv,
}

/// What a waiter finds in its way that a claimer has not finished with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stuck {
    /// Position `pos`, claimed by a sender (`tail > pos`), not filled: the cell says
    /// `word`.
    Cell { pos: u64, word: u64 },
    /// The receive record `rec` of user entry `user` holds the senders back.
    Record { user: u16, rec: u64 },
}

/// Outcome of one send attempt.
pub(crate) enum Push {
    /// The first `n` values are in the pipe.
    Sent(usize),
    /// No room; `Some(stuck)` when a receiver's unfinished claim is what is in the
    /// way (else the receivers have not claimed the values yet).
    Full(Option<Stuck>),
    Closed,
}

/// Outcome of one receive attempt.
pub(crate) enum Pop {
    /// `n` values were handed to the caller.
    Got(usize),
    /// Nothing to take; `Some(stuck)` when the next cell is claimed by a sender that
    /// has not filled it (only looked for when asked).
    Empty(Option<Stuck>),
    Closed,
    /// The pipe is being closed: the caller finishes the close within its own
    /// deadline ([`Ring::finish_close`]) and tries again.
    Closing,
}

/// A validated view of a pipe object in a mapped pool.
#[derive(Debug)]
pub(crate) struct Ring {
    /// Keeps the mapping `head` and `cells` point into alive as long as the view.
    pub(super) _keep: Keep,
    pub(super) head: NonNull<PipeHead>,
    pub(super) cells: NonNull<Cell>,
    pub(super) cap: u64,
    /// `cap - 1` when `cap` is a power of two (the index of a position is then a
    /// mask, not a division: tens of cycles a value), else 0.
    pub(super) mask: u64,
    /// A limit this handle's senders found (see the module comment): positions
    /// below it are read for good, so a stale value is only too cautious.
    /// Process-local; written under the send turn.
    pub(super) lim: AtomicU64,
}

// SAFETY: the pointers name shared memory made of atomics only, kept mapped by the
// pool handle the `Ring` holds (`_keep`); any thread may use them.
unsafe impl Send for Ring {}
// SAFETY: as above: every access is atomic.
unsafe impl Sync for Ring {}

impl Ring {
    /// A view of the pipe head at `head` with `cap` cells at `cells`, in the
    /// memory `keep` keeps mapped.
    ///
    /// # Safety
    /// `head` and `cap` cells at `cells` lie in that memory (initialised, aligned);
    /// they are only ever accessed through atomics.
    pub(crate) unsafe fn from_raw(
        keep: Keep,
        head: NonNull<PipeHead>,
        cells: NonNull<Cell>,
        cap: u64,
    ) -> Ring {
        Ring {
            _keep: keep,
            head,
            cells,
            cap,
            mask: if cap.is_power_of_two() { cap - 1 } else { 0 },
            lim: AtomicU64::new(0),
        }
    }

    #[inline]
    pub(crate) fn head(&self) -> &PipeHead {
        // SAFETY: valid per `from_raw`; mapped while `_keep`, a field, lives.
        unsafe { self.head.as_ref() }
    }

    #[inline]
    pub(super) fn cell(&self, pos: u64) -> &Cell {
        // SAFETY: `pos % cap < cap` and `cap` cells were valid per `from_raw`.
        unsafe { &*self.cells.as_ptr().add(self.index(pos)) }
    }

    /// The cell index of position `pos` (`< cap`).
    #[inline]
    pub(super) fn index(&self, pos: u64) -> usize {
        (if self.mask != 0 {
            pos & self.mask
        } else {
            pos % self.cap
        }) as usize
    }

    /// The cells of positions `pos, pos + 1, ...` (wrapping around the ring), with
    /// their positions: one division for a whole run.
    #[inline]
    pub(super) fn run(&self, pos: u64) -> impl Iterator<Item = (u64, &Cell)> + '_ {
        let cap = self.cap as usize;
        let (mut i, mut p) = (self.index(pos), pos);
        // Positions wrap (a corrupt counter may say anything: `pos..` would
        // overflow, a panic in debug builds).
        std::iter::repeat_with(move || {
            // SAFETY: `i < cap`, and `cap` cells were valid per `from_raw`.
            let c = unsafe { &*self.cells.as_ptr().add(i) };
            let at = p;
            p = p.wrapping_add(1);
            i += 1;
            if i == cap {
                i = 0;
            }
            (at, c)
        })
    }

    #[inline]
    pub(super) fn user(&self, me: u16) -> &User {
        &self.head().users[usize::from(me) % USERS]
    }

    #[inline]
    pub(crate) fn cap(&self) -> u64 {
        self.cap
    }

    /// The counter, bias and busy words of side `d`.
    #[inline]
    pub(super) fn side(&self, d: Dir) -> (&AtomicU64, &AtomicU64, &AtomicU64) {
        let h = self.head();
        match d {
            Dir::Send => (&h.tail, &h.send_bias, &h.send_busy),
            Dir::Recv => (&h.head, &h.recv_bias, &h.recv_busy),
        }
    }
}

/// Where a receive hands the values it reads: [`Take::put`] for each, then
/// [`Take::taken`] once the receive has committed (`head` moved, or the claim's
/// record cleared: from there the values are the receiver's) and before it wakes
/// any sender (a system call, long enough for a death there to matter to a caller
/// that counts what it holds: the reference ledger).
pub(crate) trait Take {
    /// A value read (not yet the receiver's).
    fn put(&mut self, r: super::env::Raw);
    /// The values put are about to be the receiver's: the run at position `from`,
    /// by the receive side's owner (`user` `None`) or the claimer of user entry
    /// `user` (see `Receipt::intend`).
    fn intend(&mut self, _from: u64, _user: Option<u16>) {}
    /// The values put are the receiver's now.
    fn taken(&mut self) {}
}

impl<F: FnMut(super::env::Raw)> Take for F {
    fn put(&mut self, r: super::env::Raw) {
        self(r);
    }
}
