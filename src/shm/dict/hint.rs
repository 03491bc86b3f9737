//! A dict handle's note of where its table's index is, and the bucket prefetch it
//! allows before the table's lock is taken (ARCHITECTURE.md, "A dict handle's index
//! hint").

use crate::Pool;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;

/// Where a table's index was last seen by a handle, for [`prefetch`](Self::prefetch)
/// before the table is locked: the index's offset in the low 56 bits, log2 of its
/// buckets in the high 8 (0: not known). Process-local, a hint only: a table grown
/// since (by anyone) makes it name a stale place, which costs one useless load
/// until the next operation notes the new one.
#[derive(Default)]
pub(crate) struct IndexHint(pub(super) AtomicU64);

impl Clone for IndexHint {
    fn clone(&self) -> Self {
        IndexHint(AtomicU64::new(self.0.load(Relaxed)))
    }
}

impl IndexHint {
    pub(super) const SHIFT: u32 = 56;

    /// Starts loading the index bucket where a lookup of `hash` will begin. Taking
    /// the table's lock (an atomic read-modify-write) waits for every earlier load
    /// and holds back later ones, so a bucket read under it exposes its whole cache
    /// miss on every call; a prefetch issued before overlaps that miss with the lock
    /// and the validation (a 1M-key table's lookups: ~190 → ~115 ns).
    #[inline]
    pub(crate) fn prefetch(&self, pool: &Pool, hash: u64) {
        let h = self.0.load(Relaxed);
        if h == 0 {
            return;
        }
        // Wrapping throughout: a hint may hold anything (see `any_hint_is_harmless`).
        let mask = 1u64.wrapping_shl((h >> Self::SHIFT) as u32).wrapping_sub(1);
        let at = (h & ((1 << Self::SHIFT) - 1)).wrapping_add((hash & mask).wrapping_mul(8));
        prefetch(pool.base().as_ptr().wrapping_add(at as usize));
    }

    /// Notes the validated index `idx` of a table of `pool`.
    #[inline]
    pub(super) fn note(&self, pool: &Pool, idx: &[AtomicU64]) {
        let off = (idx.as_ptr() as u64).wrapping_sub(pool.base().as_ptr() as u64);
        if off < 1 << Self::SHIFT {
            let h = off | u64::from(idx.len().trailing_zeros()) << Self::SHIFT;
            // Stored only when it changed: threads sharing a handle would otherwise
            // pass its line between them on every call.
            if self.0.load(Relaxed) != h {
                self.0.store(h, Relaxed);
            }
        }
    }
}

/// A read hint for the cache line at `p` (nothing on targets without one).
#[inline(always)]
fn prefetch(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is a hint: it reads nothing into the program and never
    // faults, whatever the address.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p as *const i8);
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

#[cfg(test)]
mod tests {
    use super::IndexHint;
    use crate::shm::guard::Guard;
    use crate::{Pool, PoolOptions, Val};
    use std::sync::atomic::Ordering::Relaxed;

    /// Where a handle's hint says the index is: (offset, buckets).
    fn hinted(h: &IndexHint) -> (u64, u64) {
        let w = h.0.load(Relaxed);
        (
            w & ((1 << IndexHint::SHIFT) - 1),
            1 << (w >> IndexHint::SHIFT),
        )
    }

    /// The index as the table's own blocks say (offset, buckets).
    fn actual(pool: &Pool, t: &crate::ShmTab) -> (u64, u64) {
        let obj = pool.obj(t.as_val().offset().unwrap()).unwrap();
        let g = Guard::lock(pool, obj).unwrap();
        let b = g.block().unwrap().unwrap();
        let idx = g.index(b).unwrap().unwrap();
        let off = idx.as_ptr() as u64 - pool.base().as_ptr() as u64;
        (off, idx.len() as u64)
    }

    /// A handle's operation notes where the table's index is, so that its next one
    /// prefetches the right bucket; a table grown through another handle is noted
    /// again by this one's next operation (a stale hint only costs a load).
    #[test]
    fn a_handle_notes_where_its_tables_index_is() {
        let name = format!("shmval-unit-hint-{}", std::process::id());
        let pool =
            Pool::create_with(&name, 8 << 20, &PoolOptions::new().remove_on_drop(true)).unwrap();
        let t = pool.new_tab().unwrap();
        let other = t.as_val().as_tab().unwrap();
        assert_eq!(t.1 .0.load(Relaxed), 0, "nothing noted yet");
        for k in 0..100i64 {
            t.insert(k, k).unwrap();
        }
        assert_eq!(hinted(&t.1), actual(&pool, &t));
        let before = hinted(&t.1);
        for k in 100..5000i64 {
            other.insert(k, k).unwrap();
        }
        assert_eq!(hinted(&t.1), before, "a hint is the handle's own");
        assert_ne!(before, actual(&pool, &t), "the table grew elsewhere");
        assert_eq!(t.get_val(4999).unwrap(), Some(Val::I64(4999)));
        assert_eq!(hinted(&t.1), actual(&pool, &t), "noted again");
    }

    /// A prefetch never faults, whatever the hint and the hash (a damaged table can
    /// be noted as anything a `u64` holds).
    #[test]
    fn any_hint_is_harmless() {
        let name = format!("shmval-unit-hint-any-{}", std::process::id());
        let pool =
            Pool::create_with(&name, 1 << 20, &PoolOptions::new().remove_on_drop(true)).unwrap();
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for w in [
            0,
            1,
            u64::MAX,
            1 << 63,
            (63 << 56) | 8,
            (64 << 56) | 16,
            255 << 56,
        ] {
            for _ in 0..1000 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                IndexHint(std::sync::atomic::AtomicU64::new(w)).prefetch(&pool, x);
                IndexHint(std::sync::atomic::AtomicU64::new(x)).prefetch(&pool, w);
            }
        }
    }
}
