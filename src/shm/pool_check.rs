//! `Pool::check`: the allocator's large-block heap (tiling, slab headers, bins,
//! counters), then every value reachable from the pool's roots (the root table, the
//! pipe and broadcast directories, and what pipes and broadcasts hold), each object
//! validated as [`check_value`](super::check_value) does, and reference counts
//! compared with the references found.
//!
//! A count above the references found is an object someone else holds: a handle of
//! a live process (or of this one: both counted in their reference ledgers), or a
//! reference a process that is gone never gave back (in its ledger until someone
//! replays it, or nowhere: a leak). A count below them is corruption: a release
//! would free the object while it is still referenced.

mod confirm;

use super::check::{visit, Visit};
use super::layout::tag;
use super::mem::MAX_DEPTH;
use super::Problem;
use crate::Pool;
use confirm::{
    confirm_bad_refs, confirm_body, confirm_counts, confirm_ledgered, Counted, CONFIRM_PRIVATE_GAP,
};
use serde::Serialize;
use std::collections::{HashMap, HashSet};
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
    /// References handles of live processes hold (their reference ledgers).
    pub handles: u64,
    /// References the ledgers of processes that are gone still count
    /// ([`Pool::reclaim_dead`], which every open runs, gives them back).
    pub dead: u64,
}

impl Held {
    /// References nobody alive accounts for: leaked (by a dead process, before its
    /// ledger is replayed, or without a ledger word), or — beside running processes —
    /// one a handle is being made or dropped with at the moment of the check.
    pub fn unaccounted(&self) -> u64 {
        self.count.saturating_sub(self.found + self.handles)
    }
}

/// An object allocated in the pool that nothing refers to: no root reaches it and
/// no live or dead process's ledger counts it (leaked by a death between two
/// instructions — or, beside running processes, one being built at that moment).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Unreachable {
    /// Offset of the object.
    pub offset: u64,
    /// Its type.
    pub kind: &'static str,
    /// Its reference count.
    pub count: u64,
    /// Bytes of its allocation (its data blocks not counted).
    pub bytes: u64,
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
    /// References held by handles of live processes, in all (their ledgers).
    pub handles: u64,
    /// Reference ledgers of processes that are gone, not replayed yet.
    pub dead_ledgers: usize,
    /// Objects nothing refers to (see [`Unreachable`]), and their bytes in all:
    /// exact when nothing runs beside the check. `Pool::repair` frees them.
    pub unreachable: Vec<Unreachable>,
    /// Bytes of [`PoolCheck::unreachable`].
    pub unreachable_bytes: u64,
    /// References counted without a ledger word by live processes (their pool was
    /// too full to grow a ledger): such a process's holdings cannot be told from
    /// leaks.
    pub untracked: u64,
    /// Blocks handed out that hold no object and belong to none (not a data block
    /// or an index of one, not a reference ledger), and their bytes: your own
    /// [`Pool::alloc`] blocks, or a block a process died holding between the
    /// allocator and the value it was to become. Never freed by shmval.
    pub stray_blocks: u64,
    /// Bytes of [`PoolCheck::stray_blocks`].
    pub stray_bytes: u64,
    /// Everything malformed: objects, counts below the references found (beside
    /// working processes, each looked at again and found wrong every time: see
    /// [`Pool::check`]).
    pub problems: Vec<Problem>,
}

impl PoolCheck {
    /// No problems (objects held elsewhere are not problems: see [`PoolCheck::held`]).
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }

    /// The objects with references nobody alive accounts for: neither found in the
    /// pool nor held by a live process's handles ([`Held::unaccounted`]). Exact when
    /// nothing runs beside the check; beside running processes a handle being made
    /// or dropped at that moment may show as one.
    pub fn leaks(&self) -> Vec<Held> {
        self.held
            .iter()
            .filter(|h| h.unaccounted() > 0)
            .cloned()
            .collect()
    }
}

/// What [`Pool::repair`] did.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct RepairReport {
    /// What processes that are gone held, given back first (their references and
    /// allocator cache slots).
    pub reclaimed: crate::Reclaimed,
    /// Slabs whose blocks were all free, given back to the arena.
    pub slabs_returned: usize,
    /// Objects whose count was lowered to the references found (the excess was held
    /// by dead processes): as they were before.
    pub fixed: Vec<Held>,
    /// Objects nothing referred to, freed (with what only they held).
    pub swept: usize,
    /// Their bytes.
    pub swept_bytes: u64,
    /// Stray blocks freed ([`PoolCheck::stray_blocks`]; only in a pool where no
    /// block of the user's own was ever allocated).
    pub stray: u64,
    /// Their bytes.
    pub stray_bytes: u64,
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

/// [`Pool::check`]; `alone`: the caller has the pool to itself (the repair lock
/// held exclusive, no handle of its own in any thread), so nothing moves under the
/// walk and nothing need be pinned (see `visit`).
pub(crate) fn check_pool(pool: &Pool, alone: bool) -> PoolCheck {
    // Beside working processes, what seems wrong is looked at again (see `confirm`).
    let mut r = walk(pool, alone, !alone);
    if alone {
        return r;
    }
    // Beside working processes a value can also *seem* leaked (received from a
    // pipe's cell and not yet counted in its receiver's ledger; moved from a handle
    // into a container the walk had passed) or unreachable (made after the ledgers
    // were read): what the walk calls so must be so in [`REWALKS`] more walks too.
    for _ in 0..REWALKS {
        if r.leaks().is_empty() && r.unreachable.is_empty() {
            break;
        }
        // A descheduled worker goes on meanwhile. Only the walk's leaks and
        // unreachable objects are read: its problems are not looked at again.
        std::thread::sleep(CONFIRM_PRIVATE_GAP);
        let again = walk(pool, false, false);
        let held: HashMap<u64, &Held> = again.held.iter().map(|h| (h.offset, h)).collect();
        r.held.retain_mut(|h| {
            if h.unaccounted() == 0 {
                return true;
            }
            // Its numbers in the new walk (a leak still, or accounted for now);
            // gone if it is not held there.
            match held.get(&h.offset) {
                Some(now) => {
                    *h = (*now).clone();
                    true
                }
                None => false,
            }
        });
        let still: HashSet<u64> = again.unreachable.iter().map(|u| u.offset).collect();
        r.unreachable.retain(|u| still.contains(&u.offset));
        r.unreachable_bytes = r.unreachable.iter().map(|u| u.bytes).sum();
    }
    r
}

/// Walks after the first of a check beside working processes (see `check_pool`).
const REWALKS: usize = 5;

/// One walk of [`check_pool`]; `confirm`: the problems it finds are looked at again
/// before they are reported.
fn walk(pool: &Pool, alone: bool, confirm: bool) -> PoolCheck {
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
    // (tag, references, where the first was found) by object.
    let mut found: HashMap<u64, (u8, u64, u64)> = HashMap::new();
    // Where the second and later references to an object were found.
    let mut more_referrers: HashMap<u64, Vec<u64>> = HashMap::new();
    let mut stack: Vec<Visit> = Vec::new();
    for w in ROOT_WORDS {
        match pool.user_word(w).load(Acquire) {
            0 => {}
            off => stack.push((tag::TAB, off, 0, 0)),
        }
    }
    // What handles hold (the reference ledgers): (live, dead) references by object.
    // Those objects are roots too (a table only a handle holds is checked whole);
    // their visit is not a reference found in the pool.
    let mut ledgered: HashMap<u64, (u64, u64)> = HashMap::new();
    // Objects a process is dismantling (count 0, each child slot either cleared or
    // still holding its reference): not unreachable. A dead process's are walked,
    // so that what they still hold is found (the replay gives it back); a live
    // one's is changing under the check and is not.
    let mut dismantling = HashSet::new();
    let mut dead_dismantling = HashSet::new();
    let mut ledger_roots = Vec::new();
    for l in pool.ledgers_read() {
        dismantling.extend(l.dismantling.iter().copied());
        if l.alive {
            r.untracked += l.unledgered;
        } else {
            r.dead_ledgers += 1;
            for &off in &l.dismantling {
                dead_dismantling.insert(off);
                if let Ok(o) = pool.obj(off) {
                    stack.push((o.tag, off, 0, off));
                    ledger_roots.push(off);
                }
            }
        }
        for (off, n) in l.counts {
            let e = ledgered.entry(off).or_default();
            if l.alive {
                e.0 += n;
                r.handles += n;
            } else {
                e.1 += n;
            }
        }
    }
    // Live processes' holdings are walked; what only a dead process held is not
    // (it may be half built: it is given back, not read, by the replay).
    let mut ledger_bad = Vec::new();
    for (&off, _) in ledgered.iter().filter(|(_, &(live, _))| live > 0) {
        match pool.obj(off) {
            Ok(o) => {
                stack.push((o.tag, off, 0, off));
                ledger_roots.push(off);
            }
            Err(e) => ledger_bad.push(Problem {
                offset: off,
                what: format!("a reference ledger counts references to a non-object: {e}"),
            }),
        }
    }
    // A dead process's dismantling (count 0) is read unpinned when no other process
    // is attached: nothing but a replay touches it, and the replays run when a
    // process opens the pool or calls `reclaim_dead` (one starting during the check
    // is the case left open).
    let others = r.attached > 1;
    let unpinned = |off| !others && dead_dismantling.contains(&off);
    // References naming no object (or one of another type): looked at again below.
    let mut bad_refs: Vec<(Visit, Problem)> = Vec::new();
    // What is wrong inside objects (each pinned and locked while read): looked at
    // again below too (a table still being built without its lock, by a process
    // whose ledger led the walk to it, reads as malformed).
    let mut body: Vec<Problem> = Vec::new();
    while let Some((want, off, depth, from)) = stack.pop() {
        if depth > MAX_DEPTH {
            r.problems.push(Problem {
                offset: from,
                what: format!("nesting deeper than {MAX_DEPTH}"),
            });
            continue;
        }
        // Where each reference was found (0: a root word; a ledger's root is its
        // own, and no reference): to look again at a count that seems low.
        let e = found.entry(off).or_insert((want, 0, NO_REFERRER));
        e.1 += 1;
        if from != off {
            if e.2 == NO_REFERRER {
                e.2 = from;
            } else {
                more_referrers.entry(off).or_default().push(from);
            }
        }
        if e.1 > 1 {
            continue; // visited: only its reference is counted
        }
        let Some(o) = visit(
            pool,
            (want, off, depth, from),
            alone,
            &unpinned,
            &mut body,
            &mut stack,
            &mut |v, p| bad_refs.push((v, p)),
        ) else {
            continue;
        };
        r.objects += 1;
        r.object_bytes += o.size;
    }
    for off in ledger_roots {
        if let Some(e) = found.get_mut(&off) {
            e.1 -= 1; // visited as a root, not a reference in the pool
        }
    }
    // Every block handed out that holds an object nothing reached; and every one
    // that is neither an object, nor an object's data block or index, nor a ledger.
    if let Some(blocks) = pool.heap().allocated_blocks() {
        for (_, size) in stray_in(pool, &blocks) {
            r.stray_blocks += 1;
            r.stray_bytes += size;
        }
        for (off, _) in blocks {
            if found.contains_key(&off) || ledgered.contains_key(&off) || dismantling.contains(&off)
            {
                continue; // reached, or held by a process (a dead one's is given back)
            }
            let (Ok(o), Ok(h)) = (pool.obj(off), pool.header_at(off)) else {
                continue; // not an object: a data block, an index, a ledger, yours
            };
            r.unreachable_bytes += o.size;
            r.unreachable.push(Unreachable {
                offset: off,
                kind: super::layout::tag_name(o.tag),
                count: u64::from(h.count(Relaxed)),
                bytes: o.size,
            });
        }
    }
    // Objects the walk reached through a live ledger only.
    let private: HashSet<u64> = found
        .iter()
        .filter(|(_, &(_, refs, _))| refs == 0)
        .map(|(&off, _)| off)
        .collect();
    let mut offs: Vec<_> = found.into_iter().collect();
    offs.sort_unstable_by_key(|&(off, _)| off);
    let mut low = Vec::new();
    let mut referrers: HashMap<u64, Vec<u64>> = HashMap::new();
    for (off, (t, refs, first)) in offs {
        let Ok(h) = pool.header_at(off) else { continue }; // reported above
        let count = u64::from(h.count(Relaxed));
        let (handles, dead) = ledgered.get(&off).copied().unwrap_or_default();
        let c = Counted {
            off,
            tag: t,
            count,
            refs,
            handles: handles + dead,
            ledgers_count: r.attached <= 1,
        };
        if c.too_low() {
            let mut at = more_referrers.remove(&off).unwrap_or_default();
            at.extend((first != NO_REFERRER).then_some(first));
            referrers.insert(off, at);
            low.push(c);
        } else if count > refs {
            r.held.push(Held {
                offset: off,
                kind: super::layout::tag_name(t),
                count,
                found: refs,
                handles,
                dead,
            });
        }
    }
    if confirm {
        confirm_counts(pool, &mut low, &referrers);
        confirm_bad_refs(pool, &mut bad_refs);
        confirm_body(pool, &mut body, &private);
        confirm_ledgered(pool, &mut ledger_bad);
    }
    r.problems.extend(ledger_bad);
    r.problems.extend(body);
    r.problems.extend(bad_refs.into_iter().map(|(_, p)| p));
    r.problems.extend(low.iter().map(Counted::problem));
    r
}

/// No referrer recorded yet (offsets of objects are never this).
const NO_REFERRER: u64 = u64::MAX;

/// The blocks of `blocks` (allocated ones) that hold no object and belong to none:
/// not an object's data block or index, not a ledger's (see
/// [`PoolCheck::stray_blocks`]).
fn stray_in(pool: &Pool, blocks: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let mut owned = pool.ledger_blocks();
    for &(off, _) in blocks {
        if let Ok(o) = pool.obj(off) {
            pool.data_blocks(o, &mut |b| {
                owned.insert(b);
            });
        }
    }
    blocks
        .iter()
        .filter(|(off, _)| pool.obj(*off).is_err() && !owned.contains(off))
        .copied()
        .collect()
}

/// Frees the stray blocks ([`PoolCheck::stray_blocks`]), the caller being alone on
/// the pool and no block of the user's own ever allocated in it (`Pool::alloc`):
/// every block is then shmval's, and one that belongs to nothing was left by a
/// death between the allocator and the value it was to become. Returns (blocks,
/// bytes).
pub(crate) fn sweep_stray(pool: &Pool) -> (u64, u64) {
    if pool.had_user_blocks() {
        return (0, 0);
    }
    let Some(blocks) = pool.heap().allocated_blocks() else {
        return (0, 0);
    };
    let stray = stray_in(pool, &blocks);
    for &(off, size) in &stray {
        pool.free_block(off, size);
    }
    (stray.len() as u64, stray.iter().map(|s| s.1).sum())
}

/// Frees the objects nothing refers to ([`PoolCheck::unreachable`]), the caller
/// being alone on the pool (the repair lock): each one no other unreachable object
/// holds is given one reference and released (freeing what it alone holds); one
/// whose count is 0 (its release died midway) is freed without reading what it
/// held, which a later round finds unreachable in turn. Returns (objects, bytes).
pub(crate) fn sweep(pool: &Pool) -> (usize, u64) {
    let (mut n, mut bytes) = (0, 0);
    for _round in 0..64 {
        let c = check_pool(pool, true);
        if c.unreachable.is_empty() {
            break;
        }
        let all: HashSet<u64> = c.unreachable.iter().map(|u| u.offset).collect();
        let mut held = HashSet::new();
        for u in c.unreachable.iter().filter(|u| u.count > 0) {
            if let Ok(o) = pool.obj(u.offset) {
                let _ = pool.each_child(o, &mut |x| {
                    if all.contains(&x) && x != u.offset {
                        held.insert(x);
                    }
                });
            }
        }
        let mut tops: Vec<&Unreachable> = c
            .unreachable
            .iter()
            .filter(|u| !held.contains(&u.offset))
            .collect();
        if tops.is_empty() {
            tops.push(&c.unreachable[0]); // a cycle: break it anywhere
        }
        for u in tops {
            let (Ok(o), Ok(h)) = (pool.obj(u.offset), pool.header_at(u.offset)) else {
                continue;
            };
            if h.count(Relaxed) == 0 {
                h.unpublish();
                pool.free_block(u.offset, o.size);
            } else {
                // Alone on the pool: nothing moves the count meanwhile.
                h.swap_count(h.count(Relaxed), 1, Relaxed);
                pool.release(super::mem::Raw::new(o.tag, 0, u.offset));
            }
            n += 1;
            bytes += u.bytes;
        }
    }
    (n, bytes)
}
