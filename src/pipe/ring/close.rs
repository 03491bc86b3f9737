//! Closing a pipe: senders refuse, a send that saw it open lands, then receivers
//! may report the end.

use super::env;
use super::layout::*;
use super::view::Ring;
use std::sync::atomic::Ordering::{Acquire, SeqCst};

impl Ring {
    /// Whether senders must refuse (closing or closed).
    #[inline]
    pub(crate) fn is_closed(&self) -> bool {
        self.head().meta.closed.load(Acquire) != OPEN
    }

    /// Closes the pipe: senders refuse from now on; returns once no send that saw
    /// the pipe open can still land, and only then lets receivers report the end
    /// (see [`Ring::finish_close`]).
    pub(crate) fn close(&self) {
        let c = &self.head().meta.closed;
        let _ = c.compare_exchange(OPEN, CLOSING, SeqCst, SeqCst);
        let until = std::time::Instant::now() + env::LOCK_PATIENCE;
        if !self.finish_close(Some(until)) {
            // An owner stopped inside one send for that long: close anyway.
            self.head().meta.closed.store(CLOSED, SeqCst);
        }
    }

    /// Completes a close (anyone who finds the pipe closing may: a closer that dies
    /// half way holds nobody up). A claiming sender looks at `closed` again after its
    /// claim (both SeqCst) and gives the cells up if it is no longer open, so a
    /// claim that saw it open is visible to whoever sees CLOSED (and is waited for
    /// as a claimed cell). An owning sender looks only before filling, so its open
    /// section is waited out: the asymmetric Dekker of [`Ring::revoke`] — `closed`
    /// is stored before the membarrier and `busy` read after it, the owner stores
    /// `busy` before its look at `closed` — then `busy == 0` (Acquire: its cells
    /// and `tail` are visible) or the owner is dead. The wait lasts until `until`
    /// at most (`None`: not at all); returns whether the close is complete. `close`
    /// itself waits [`env::LOCK_PATIENCE`] for an owner stopped inside one
    /// send (stopped, traced), then completes anyway: that one value may land after.
    #[cold]
    pub(crate) fn finish_close(&self, until: Option<std::time::Instant>) -> bool {
        let h = self.head();
        if h.meta.closed.load(SeqCst) == CLOSED {
            return true;
        }
        // Without the barrier (a kernel without it) no process can own a side.
        let _ = env::membarrier_global();
        let owner_out = || {
            let b = h.send_bias.load(Acquire);
            if b & OWNED == 0 || h.send_busy.load(Acquire) == 0 {
                return true;
            }
            let t = h.users[owner_user(b)].token.load(Acquire);
            t == 0 || !env::token_alive(t)
        };
        if !env::wait_until(until, owner_out) {
            return false;
        }
        h.meta.closed.store(CLOSED, SeqCst);
        true
    }
}
