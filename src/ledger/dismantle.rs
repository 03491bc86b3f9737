//! Dismantle notes: a word of the ledger saying the process is dismantling an
//! object whose count reached 0 (see `src/shm/release.rs`), which a replay
//! finishes. Key bit 43 set; it sits in the line the plain key hashes to, where a
//! handle's word for the object is, so that word can become the note by one CAS.

use super::{add_in, line_of, take_in, LedgerHead, View, COUNT_BITS, COUNT_MAX, DISMANTLE};
use super::{KEY_LIMIT, KEY_SHIFT, LEVELS, SETTING_UP};
use crate::Pool;
use std::cell::Cell;
use std::sync::atomic::Ordering::{AcqRel, Relaxed};

impl Pool {
    /// This process's ledger and the plain key of the object at `off`, for a
    /// dismantle note: `None` while this thread sets the ledger up (see
    /// [`ledger_dismantle_add`](Self::ledger_dismantle_add)), without a ledger, or
    /// for a key past the ledger's.
    fn ledger_noting(&self, off: u64) -> Option<(&LedgerHead, u64)> {
        if SETTING_UP.with(Cell::get) {
            return None;
        }
        let View::Ready(head) = self.ledger_view() else {
            return None;
        };
        let key = off >> KEY_SHIFT;
        (key < KEY_LIMIT).then_some((head, key))
    }

    /// Notes in this process's ledger that it is dismantling the object at `off`
    /// (count 0: see `shm/release.rs`). `false` if no word could hold the note (no
    /// ledger, or the pool too full to grow it): the dismantling goes on unnoted.
    ///
    /// Not while this thread sets its ledger up: the setup may replay a stale
    /// ledger of this process's entry, whose releases dismantle in turn — and would
    /// wait here for the setup they are part of (unnoted, then: a death there
    /// leaves the rest to the sweep).
    pub(crate) fn ledger_dismantle_add(&self, off: u64) -> bool {
        let Some((head, key)) = self.ledger_noting(off) else {
            return false;
        };
        // In the line of the plain key, where a handle's word for the object is
        // (see `ledger_to_dismantle`).
        for k in 0..LEVELS {
            let t = match self.ledger_table(head, k) {
                Some(t) => t,
                None => match self.ledger_grow(head, k) {
                    Some(t) => t,
                    None => return false,
                },
            };
            if add_in(&t[line_of(key, k)], key | DISMANTLE) {
                return true;
            }
        }
        false
    }

    /// Turns this process's ledger word holding the one reference to the object at
    /// `off` (a handle's, the object's only one: its count is 1) into the note that
    /// the process dismantles it, by one CAS: no instant between the last
    /// reference and the note. `false` if no word holds exactly that reference
    /// (none, or more than one of this process's): nothing changed.
    pub(crate) fn ledger_to_dismantle(&self, off: u64) -> bool {
        let Some((head, key)) = self.ledger_noting(off) else {
            return false;
        };
        for k in 0..LEVELS {
            let Some(t) = self.ledger_table(head, k) else {
                return false;
            };
            for w in &t[line_of(key, k)].0 {
                let v = w.load(Relaxed);
                if v >> COUNT_BITS == key && v & COUNT_MAX != 0 {
                    return v & COUNT_MAX == 1
                        && w.compare_exchange(
                            v,
                            (key | DISMANTLE) << COUNT_BITS | 1,
                            AcqRel,
                            Relaxed,
                        )
                        .is_ok();
                }
            }
        }
        false
    }

    /// Turns the note [`ledger_to_dismantle`](Self::ledger_to_dismantle) made back
    /// into the handle's word (the object's count moved meanwhile: not ours alone).
    pub(crate) fn ledger_from_dismantle(&self, off: u64) {
        let Some((head, key)) = self.ledger_noting(off) else {
            return;
        };
        for k in 0..LEVELS {
            let Some(t) = self.ledger_table(head, k) else {
                return;
            };
            for w in &t[line_of(key, k)].0 {
                let v = w.load(Relaxed);
                if v == (key | DISMANTLE) << COUNT_BITS | 1 {
                    let _ = w.compare_exchange(v, key << COUNT_BITS | 1, AcqRel, Relaxed);
                    return;
                }
            }
        }
    }

    /// Takes the note [`ledger_dismantle_add`](Self::ledger_dismantle_add) made
    /// out of the ledger (the object is about to be freed).
    pub(crate) fn ledger_dismantle_take(&self, off: u64) {
        let Some((head, key)) = self.ledger_noting(off) else {
            return;
        };
        for k in 0..LEVELS {
            let Some(t) = self.ledger_table(head, k) else {
                return;
            };
            if take_in(&t[line_of(key, k)], key | DISMANTLE) {
                return;
            }
        }
    }
}
