//! Each thread's allocator cache slot on each pool: claimed at the thread's first
//! allocation, found again through a one-entry fast path, given back when the thread
//! ends (or the pool goes), forgotten in a forked child (the slot is the parent's).

use super::{Inner, Pool};
use crate::sys;
use std::cell::{Cell, RefCell};
use std::sync::{Arc, Weak};

impl Pool {
    #[inline]
    pub(super) fn thread_slot(&self) -> u32 {
        let id = self.inner.id;
        // After a fork the handler has reset LAST in the child's only thread, so a
        // hit is always this process's own slot.
        if let Ok((lid, lslot)) = LAST.try_with(Cell::get) {
            if lid == id {
                return lslot;
            }
        }
        self.thread_slot_lookup(id)
    }

    #[cold]
    fn thread_slot_lookup(&self, id: u64) -> u32 {
        crate::platform::ensure_fork_handler();
        static FORK: std::sync::Once = std::sync::Once::new();
        // The child's only thread is the one that forked: its cached slot is the
        // parent's and must not be used there.
        FORK.call_once(|| sys::at_fork(nothing, nothing, forget_last_slot));
        let gen = crate::platform::fork_generation();
        let hit = CACHES.try_with(|c| {
            c.borrow()
                .iter()
                .find(|e| e.pool == id && e.fork_gen == gen)
                .map(|e| e.slot)
        });
        let slot = match hit {
            Ok(Some(s)) => s,
            Ok(None) => self.claim_thread_slot(gen),
            Err(_) => return 0, // thread-local storage already destroyed: use the shared slot
        };
        let _ = LAST.try_with(|l| l.set((id, slot)));
        slot
    }

    #[cold]
    fn claim_thread_slot(&self, gen: u32) -> u32 {
        let slot = self.inner.seg.heap.claim_slot().unwrap_or(0);
        if slot != 0 {
            self.inner
                .slots
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push((slot, gen));
        }
        let entry = ThreadSlot {
            pool: self.inner.id,
            fork_gen: gen,
            slot,
            owner: Arc::downgrade(&self.inner),
        };
        let _ = CACHES.try_with(|c| {
            let mut c = c.borrow_mut();
            // Entries of pools that are gone, or from before a fork, are dropped.
            c.retain(|e| e.fork_gen == gen && e.owner.strong_count() > 0);
            c.push(entry);
        });
        slot
    }
}

/// A thread's claimed cache slot on one pool.
struct ThreadSlot {
    pool: u64,
    fork_gen: u32,
    slot: u32,
    owner: Weak<Inner>,
}

impl Drop for ThreadSlot {
    fn drop(&mut self) {
        if self.slot == 0 || self.fork_gen != crate::platform::fork_generation() {
            return; // the shared slot, or a slot the parent process owns
        }
        if let Some(inner) = self.owner.upgrade() {
            let mut slots = inner.slots.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(i) = slots.iter().position(|&s| s == (self.slot, self.fork_gen)) {
                slots.swap_remove(i);
                // SAFETY: this thread claimed the slot and stops using it now.
                unsafe { inner.seg.heap.release_slot(self.slot) };
            }
        }
    }
}

thread_local! {
    static CACHES: RefCell<Vec<ThreadSlot>> = const { RefCell::new(Vec::new()) };
    /// The last (pool id, fork generation, slot) this thread used: the fast path.
    /// Pool ids are never reused, so a stale entry can never match another pool.
    static LAST: Cell<(u64, u32)> = const { Cell::new((0, 0)) };
}

extern "C" fn nothing() {}

/// Called in the child after `fork`: the cached slot belongs to the parent.
extern "C" fn forget_last_slot() {
    let _ = LAST.try_with(|l| l.set((0, 0)));
}
