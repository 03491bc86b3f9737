//! `Pool::check`: the allocator's large-block heap (tiling, slab headers, bins,
//! counters), then every value reachable from the pool's roots (the root table, the
//! pipe and broadcast directories, and what pipes and broadcasts hold), each object
//! validated as [`check_value`](super::check_value) does, and reference counts
//! compared with the references found.
//!
//! A count above the references found is an object someone else holds: a handle of
//! a live process (or of this one), or a reference a dead process never gave back
//! (a leak, until the recovery issue's ledger reclaims it). A count below them is
//! corruption: a release would free the object while it is still referenced.

use super::check::{visit, Visit};
use super::layout::tag;
use super::mem::MAX_DEPTH;
use super::Problem;
use crate::Pool;
use serde::Serialize;
use std::collections::HashMap;
use std::sync::atomic::Ordering::{Acquire, Relaxed};

/// User words of the pool header that name a root dict (the root table, the pipe
/// directory, the broadcast directory); each holds one reference.
const ROOT_WORDS: [usize; 3] = [0, 1, 2];

/// An object whose reference count is above the references found in the pool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Held {
    /// Offset of the object.
    pub offset: u64,
    /// Its type (`dict`, `list`, `pipe`, ...).
    pub kind: &'static str,
    /// Its reference count.
    pub count: u64,
    /// References to it found in the pool.
    pub found: u64,
}

/// What [`Pool::check`] found.
#[derive(Debug, Clone, Default, Serialize)]
#[non_exhaustive]
pub struct PoolCheck {
    /// Objects reachable from the roots.
    pub objects: usize,
    /// Their allocation bytes (headers and bodies; dict and list data blocks not
    /// counted).
    pub object_bytes: u64,
    /// Bytes the allocator has handed out and not been given back (all of it:
    /// reachable objects, their data blocks, handles' objects, caches, leaks).
    pub in_use: u64,
    /// Live processes attached to the pool, this one included.
    pub attached: usize,
    /// Objects whose count is above the references found: held by handles of live
    /// processes (this one's included), or leaked by dead ones.
    pub held: Vec<Held>,
    /// Everything malformed: objects, counts below the references found.
    pub problems: Vec<Problem>,
}

impl PoolCheck {
    /// No problems (objects held elsewhere are not problems: see [`PoolCheck::held`]).
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }

    /// The objects held elsewhere when no other live process is attached: for a
    /// caller that holds no handle itself (the `shmval` tool), references nobody
    /// alive holds, i.e. leaked by dead processes. Empty while others are attached
    /// (their handles cannot be told from leaks without the reference ledger).
    pub fn leaks(&self) -> &[Held] {
        if self.attached <= 1 {
            &self.held
        } else {
            &[]
        }
    }
}

/// What [`Pool::repair`] did.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct RepairReport {
    /// Cache slots of dead threads given back first.
    pub reclaimed_slots: usize,
    /// Slabs whose blocks were all free, given back to the arena.
    pub slabs_returned: usize,
    /// Objects whose count was lowered to the references found (the excess was held
    /// by dead processes): as they were before.
    pub fixed: Vec<Held>,
    /// The check after the repair.
    pub after: PoolCheck,
}

/// Why [`Pool::repair`] did not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RepairError {
    /// Other live processes are attached (their pids, each in its own PID namespace).
    #[error("other processes are attached (pids {pids:?}): a repair needs the pool to itself")]
    Attached {
        /// Their pids.
        pids: Vec<u32>,
    },
    /// The operating system refused a call.
    #[error("{op} failed: {source}")]
    Os {
        /// The call.
        op: &'static str,
        /// Its error.
        source: std::io::Error,
    },
}

pub(crate) fn check_pool(pool: &Pool) -> PoolCheck {
    let mut r = PoolCheck {
        in_use: pool.stats().in_use,
        attached: pool.info().attached.len(),
        ..PoolCheck::default()
    };
    // The allocator's large-block heap: the tiling, the slabs' headers, the bins.
    match pool.heap().verify_large() {
        Ok(found) => r
            .problems
            .extend(found.into_iter().map(|(offset, what)| Problem {
                offset,
                what: format!("allocator: {what}"),
            })),
        Err(e) => r.problems.push(Problem {
            offset: 0,
            what: format!("allocator not checked: {e}"),
        }),
    }
    // References found to each object, and the objects still to visit (expected
    // tag, offset, depth, where the reference was).
    let mut found: HashMap<u64, (u8, u64)> = HashMap::new();
    let mut stack: Vec<Visit> = Vec::new();
    for w in ROOT_WORDS {
        match pool.user_word(w).load(Acquire) {
            0 => {}
            off => stack.push((tag::TAB, off, 0, 0)),
        }
    }
    while let Some((want, off, depth, from)) = stack.pop() {
        if depth > MAX_DEPTH {
            r.problems.push(Problem {
                offset: from,
                what: format!("nesting deeper than {MAX_DEPTH}"),
            });
            continue;
        }
        let e = found.entry(off).or_insert((want, 0));
        e.1 += 1;
        if e.1 > 1 {
            continue; // visited: only its reference is counted
        }
        let Some(o) = visit(pool, (want, off, depth, from), &mut r.problems, &mut stack) else {
            continue;
        };
        r.objects += 1;
        r.object_bytes += o.size;
    }
    let mut offs: Vec<_> = found.into_iter().collect();
    offs.sort_unstable_by_key(|&(off, _)| off);
    for (off, (t, refs)) in offs {
        let Ok(h) = pool.header_at(off) else { continue }; // reported above
        let count = u64::from(h.refcount.load(Relaxed));
        if count < refs {
            r.problems.push(Problem {
                offset: off,
                what: format!(
                    "{} with reference count {count}, {refs} references found (a release \
                     would free it while referenced)",
                    super::layout::tag_name(t)
                ),
            });
        } else if count > refs {
            r.held.push(Held {
                offset: off,
                kind: super::layout::tag_name(t),
                count,
                found: refs,
            });
        }
    }
    r
}
