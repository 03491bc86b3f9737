//! Moving batches of free blocks between a cache slot's list and the depot.
//!
//! A list word is `(count << 32) | head_unit` and has one writer (its slot). A depot
//! entry is `0` (empty), a published batch `(len << 32) | head_unit`, or a batch in
//! transfer `batch | claim << 56` where `claim = slot + 1`.
//!
//! Every transfer is: CAS an entry to *claimed by me*, then change my list word, then
//! store the entry's final value. The claim is what makes it crash-safe: if the slot's
//! owner dies anywhere in between, [`settle`] decides from the slot's list word alone
//! who owns the batch (the list equals the batch exactly iff the slot has it, since a
//! refill starts from an empty list and a flush empties it only after claiming).
//!
//! `CRASH_AT` (0 in real code) stops an operation after that many shared-memory
//! steps, to test every crash point of the protocol deterministically.

use crate::sync::{AtomicU64, Ordering};

/// Bits of a batch's length.
pub(crate) const LEN_MASK: u64 = 0xFF_FFFF;
/// The batch part (length and head) of an entry.
pub(crate) const BATCH_MASK: u64 = (LEN_MASK << 32) | 0xFFFF_FFFF;
/// Where the claim byte of an entry sits.
pub(crate) const CLAIM_SHIFT: u32 = 56;

/// Moves a published batch into `list` (which must be empty). `false` if none.
#[inline]
pub(crate) fn take<const CRASH_AT: u8>(depot: &[AtomicU64], list: &AtomicU64, slot: u32) -> bool {
    debug_assert_eq!(
        list.load(Ordering::Relaxed) >> 32,
        0,
        "refill into a non-empty list"
    );
    let claim = u64::from(slot + 1) << CLAIM_SHIFT;
    let n = depot.len();
    for i in 0..n {
        let entry = &depot[(slot as usize * 7 + i) % n];
        let e = entry.load(Ordering::Relaxed);
        if e == 0 || e >> CLAIM_SHIFT != 0 {
            continue;
        }
        // SYNC POINT: the claim names this slot, so a reclaimer can settle it.
        if entry
            .compare_exchange(e, e | claim, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            continue;
        }
        if CRASH_AT == 1 {
            return true;
        }
        list.store(e & BATCH_MASK, Ordering::Relaxed);
        if CRASH_AT == 2 {
            return true;
        }
        entry.store(0, Ordering::Release);
        return true;
    }
    false
}

/// Publishes the whole of `list` as one batch. `false` if the depot is full.
#[inline]
pub(crate) fn put<const CRASH_AT: u8>(depot: &[AtomicU64], list: &AtomicU64, slot: u32) -> bool {
    let l = list.load(Ordering::Relaxed);
    if l >> 32 == 0 {
        return true;
    }
    let batch = l & BATCH_MASK;
    let claim = u64::from(slot + 1) << CLAIM_SHIFT;
    let n = depot.len();
    for i in 0..n {
        let entry = &depot[(slot as usize * 7 + i) % n];
        if entry.load(Ordering::Relaxed) != 0 {
            continue;
        }
        // SYNC POINT: claimed entry first, then the list is emptied, then the batch
        // is published: at every point exactly one of the two owns it.
        if entry
            .compare_exchange(0, batch | claim, Ordering::AcqRel, Ordering::Relaxed)
            .is_err()
        {
            continue;
        }
        if CRASH_AT == 1 {
            return true;
        }
        list.store(0, Ordering::Relaxed);
        if CRASH_AT == 2 {
            return true;
        }
        entry.store(batch, Ordering::Release);
        return true;
    }
    false
}

/// Settles the entries `slot` had claimed when it stopped (died, or its lock holder
/// died). Only the slot's new owner may call it, before using the list.
pub(crate) fn settle(depot: &[AtomicU64], list: &AtomicU64, slot: u32) {
    let claim = u64::from(slot + 1);
    let l = list.load(Ordering::Acquire);
    for entry in depot {
        let e = entry.load(Ordering::Acquire);
        if e >> CLAIM_SHIFT != claim {
            continue;
        }
        let batch = e & BATCH_MASK;
        entry.store(if l == batch { 0 } else { batch }, Ordering::Release);
    }
}

/// Model-checking support (not public API).
#[cfg(loom)]
pub mod loom_support {
    use super::*;
    /// See [`super::take`].
    pub fn take(depot: &[AtomicU64], list: &AtomicU64, slot: u32) -> bool {
        super::take::<0>(depot, list, slot)
    }
    /// See [`super::put`].
    pub fn put(depot: &[AtomicU64], list: &AtomicU64, slot: u32) -> bool {
        super::put::<0>(depot, list, slot)
    }
    /// See [`super::settle`].
    pub fn settle(depot: &[AtomicU64], list: &AtomicU64, slot: u32) {
        super::settle(depot, list, slot)
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    fn depot(entries: &[u64]) -> Vec<AtomicU64> {
        entries.iter().map(|&e| AtomicU64::new(e)).collect()
    }

    /// Where the batch `b` is after settling: (in the list, in the depot).
    fn owners(d: &[AtomicU64], list: &AtomicU64, b: u64) -> (bool, usize) {
        let in_list = list.load(Ordering::Relaxed) == b;
        let in_depot = d.iter().filter(|e| e.load(Ordering::Relaxed) == b).count();
        (in_list, in_depot)
    }

    #[test]
    fn take_crashing_at_every_step_keeps_exactly_one_owner() {
        let batch = (5 << 32) | 0x1234;
        for crash in 0..=3u8 {
            let d = depot(&[0, batch, 0]);
            let list = AtomicU64::new(0);
            match crash {
                1 => assert!(take::<1>(&d, &list, 3)),
                2 => assert!(take::<2>(&d, &list, 3)),
                _ => assert!(take::<0>(&d, &list, 3)),
            }
            settle(&d, &list, 3);
            let (l, n) = owners(&d, &list, batch);
            assert_eq!(
                u8::from(l) as usize + n,
                1,
                "crash point {crash}: list {l}, depot {n}"
            );
            assert!(d
                .iter()
                .all(|e| e.load(Ordering::Relaxed) >> CLAIM_SHIFT == 0));
        }
    }

    #[test]
    fn put_crashing_at_every_step_keeps_exactly_one_owner() {
        let batch = (7 << 32) | 0x99;
        for crash in 0..=3u8 {
            let d = depot(&[(1 << 32) | 5, 0]);
            let list = AtomicU64::new(batch);
            match crash {
                1 => assert!(put::<1>(&d, &list, 0)),
                2 => assert!(put::<2>(&d, &list, 0)),
                _ => assert!(put::<0>(&d, &list, 0)),
            }
            settle(&d, &list, 0);
            let (l, n) = owners(&d, &list, batch);
            assert_eq!(u8::from(l) as usize + n, 1, "crash point {crash}");
            assert_eq!(
                d[0].load(Ordering::Relaxed),
                (1 << 32) | 5,
                "other batch untouched"
            );
        }
    }

    #[test]
    fn full_depot_refuses_and_keeps_the_list() {
        let d = depot(&[(1 << 32) | 1, (1 << 32) | 2]);
        let list = AtomicU64::new((3 << 32) | 9);
        assert!(!put::<0>(&d, &list, 1));
        assert_eq!(list.load(Ordering::Relaxed), (3 << 32) | 9);
    }

    #[test]
    fn claimed_entries_are_not_taken_by_others() {
        let d = depot(&[(1 << 32) | 1 | (4 << CLAIM_SHIFT)]);
        let list = AtomicU64::new(0);
        assert!(!take::<0>(&d, &list, 1));
    }
}
