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

use super::check::{visit, Visit};
use super::layout::tag;
use super::mem::MAX_DEPTH;
use super::Problem;
use crate::Pool;
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
    let mut r = walk(pool, alone);
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
        std::thread::sleep(CONFIRM_PRIVATE_GAP); // a descheduled worker goes on
        let again = walk(pool, false);
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

/// One walk of [`check_pool`].
fn walk(pool: &Pool, alone: bool) -> PoolCheck {
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
    if !alone {
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

/// An object's reference count against the references found to it.
struct Counted {
    off: u64,
    tag: u8,
    count: u64,
    /// References found in the pool.
    refs: u64,
    /// References the ledgers count (live and dead processes').
    handles: u64,
    /// Whether the ledgers' references must fit in the count too (the checker
    /// alone: nothing moves them).
    ledgers_count: bool,
}

impl Counted {
    /// A count a release would take to 0 while references remain.
    fn too_low(&self) -> bool {
        self.count < self.refs || (self.ledgers_count && self.count < self.refs + self.handles)
    }

    fn problem(&self) -> Problem {
        let kind = super::layout::tag_name(self.tag);
        let (count, refs) = (self.count, self.refs);
        let what = if count < refs {
            format!(
                "{kind} with reference count {count}, {refs} references found (a release \
                 would free it while referenced)"
            )
        } else {
            // Alone, nothing moves the counts: a ledger counting more than the
            // object has would release it while referenced when replayed.
            format!(
                "{kind} with reference count {count}: {refs} references found, {} held \
                 by handles (reference ledgers)",
                self.handles
            )
        };
        Problem {
            offset: self.off,
            what,
        }
    }
}

/// How many times a problem seen beside running processes is looked at again
/// before it is reported (see [`confirm_counts`]): one a working process makes for a
/// moment (a table it is building, a value it is moving) must be caught again each
/// time, [`CONFIRM_GAP`] apart; corruption stays put.
const CONFIRM_ROUNDS: usize = 20;

/// The pause between two looks of [`CONFIRM_ROUNDS`].
const CONFIRM_GAP: std::time::Duration = std::time::Duration::from_micros(50);

/// The pause between two looks at an object no container holds (see
/// `confirm_body`): 20 rounds span some 20 ms.
const CONFIRM_PRIVATE_GAP: std::time::Duration = std::time::Duration::from_millis(1);

/// The rounds of a confirmation: `0..CONFIRM_ROUNDS`, a pause before each but the
/// first.
fn rounds() -> impl Iterator<Item = usize> {
    (0..CONFIRM_ROUNDS).inspect(|&i| {
        if i > 0 {
            std::thread::sleep(CONFIRM_GAP);
        }
    })
}

/// Beside other processes (or threads) a count can only *seem* below the references
/// found: a value moved from one container to another during the walk is found in
/// both. Each such count is looked at again, [`CONFIRM_ROUNDS`] times, in the
/// containers where its references were found (each pinned and locked in turn, a
/// root word read): one still too low every time is kept; one whose object is gone,
/// or whose count now covers its references, was the walk's doing and is dropped.
/// A count really too low (corruption) does not move, and stays.
fn confirm_counts(pool: &Pool, low: &mut Vec<Counted>, referrers: &HashMap<u64, Vec<u64>>) {
    for _ in rounds() {
        if low.is_empty() {
            return;
        }
        let wanted: HashSet<u64> = low.iter().map(|c| c.off).collect();
        let counts_before: HashMap<u64, u64> = low
            .iter()
            .filter_map(|c| {
                let h = pool.header_at(c.off).ok()?;
                Some((c.off, u64::from(h.count(Relaxed))))
            })
            .collect();
        let mut holders: HashSet<u64> = HashSet::new();
        for c in low.iter() {
            holders.extend(referrers.get(&c.off).into_iter().flatten().copied());
        }
        // References to the wanted objects, found again holder by holder.
        let mut refs: HashMap<u64, u64> = HashMap::new();
        for &from in &holders {
            if from == 0 {
                for w in ROOT_WORDS {
                    let off = pool.user_word(w).load(Acquire);
                    if wanted.contains(&off) {
                        *refs.entry(off).or_default() += 1;
                    }
                }
                continue;
            }
            let Ok(o) = pool.obj(from) else { continue };
            let Some(_pin) = super::check::pin(pool, o) else {
                continue; // gone meanwhile: holds nothing now
            };
            let mut kids = Vec::new();
            let _ = super::check::inspect(pool, o, &mut kids);
            for k in kids {
                if k.is_object() && wanted.contains(&k.payload) {
                    *refs.entry(k.payload).or_default() += 1;
                }
            }
        }
        // References the ledgers count: (all, live processes' only).
        let ledgered = low.iter().any(|c| c.ledgers_count).then(|| {
            let mut held: HashMap<u64, u64> = HashMap::new();
            for l in pool.ledgers_read() {
                for (off, n) in l.counts {
                    if wanted.contains(&off) {
                        *held.entry(off).or_default() += n;
                    }
                }
            }
            held
        });
        low.retain_mut(|c| {
            let same = pool.obj(c.off).is_ok_and(|o| o.tag == c.tag);
            let Ok(h) = pool.header_at(c.off) else {
                return false;
            };
            if !same {
                return false; // freed (and perhaps reused) since the walk: not settled
            }
            // Read before the references were counted again and after: a count
            // that moved with them meanwhile covers them in one of the two.
            c.count = counts_before
                .get(&c.off)
                .copied()
                .unwrap_or(0)
                .max(u64::from(h.count(Relaxed)));
            c.refs = refs.get(&c.off).copied().unwrap_or(0);
            if let Some(held) = &ledgered {
                c.handles = held.get(&c.off).copied().unwrap_or(0);
            }
            c.too_low()
        });
    }
}

/// Whether the object `from` (0: the pool header's root words) holds a reference to
/// `off` now (`false` when `from` is gone).
fn holds(pool: &Pool, from: u64, off: u64) -> bool {
    if from == 0 {
        return ROOT_WORDS
            .iter()
            .any(|&w| pool.user_word(w).load(Acquire) == off);
    }
    let Ok(o) = pool.obj(from) else { return false };
    let Some(_pin) = super::check::pin(pool, o) else {
        return false;
    };
    let mut kids = Vec::new();
    let _ = super::check::inspect(pool, o, &mut kids);
    kids.iter().any(|k| k.is_object() && k.payload == off)
}

/// Beside other processes a reference read from a container (or a pipe's cell)
/// that is released before the object is visited may name a block freed since: a
/// reference found naming no object of its type is looked at again,
/// [`CONFIRM_ROUNDS`] times, and kept only if its holder still holds it and it
/// still names no such object each time.
fn confirm_bad_refs(pool: &Pool, bad: &mut Vec<(Visit, Problem)>) {
    for _ in rounds() {
        if bad.is_empty() {
            return;
        }
        bad.retain_mut(|((want, off, _, from), p)| {
            if *from == *off || !holds(pool, *from, *off) {
                return false; // a ledger's root that went, or a reference that did
            }
            match super::check::header(pool, *want, *off, *from) {
                Ok(_) => false,
                Err(now) => {
                    *p = now;
                    true
                }
            }
        });
    }
}

/// Beside other processes, what is wrong inside an object may be a moment of its
/// making (a table filled without its lock before it is published): each object
/// found malformed is read again, [`CONFIRM_ROUNDS`] times, and kept only if it
/// is malformed each time (and still there).
///
/// An object no container holds (the walk reached it through a live process's
/// ledger only) may be a table its process is still filling without the lock, and
/// that process may be descheduled mid-way for a while: its rounds are
/// [`CONFIRM_PRIVATE_GAP`] apart.
fn confirm_body(pool: &Pool, body: &mut Vec<Problem>, private: &HashSet<u64>) {
    for i in 0..CONFIRM_ROUNDS {
        if body.is_empty() {
            return;
        }
        if i > 0 {
            let unpublished = body.iter().any(|p| private.contains(&p.offset));
            std::thread::sleep(if unpublished {
                CONFIRM_PRIVATE_GAP
            } else {
                CONFIRM_GAP
            });
        }
        let offs: HashSet<u64> = body.iter().map(|p| p.offset).collect();
        let mut now = Vec::new();
        for off in offs {
            let Ok(o) = pool.obj(off) else { continue };
            let mut found = Vec::new();
            visit(
                pool,
                (o.tag, off, 0, off),
                false,
                &|_| false,
                &mut found,
                &mut Vec::new(),
                &mut |_, _| {},
            );
            now.extend(found);
        }
        *body = now;
    }
}

/// Beside other processes a live process's handle may be dropped, and its object
/// freed, between the reading of its ledger and the look at the object: an object a
/// live ledger counts that is no object is looked at again, [`CONFIRM_ROUNDS`]
/// times, the ledgers read again each time.
fn confirm_ledgered(pool: &Pool, bad: &mut Vec<Problem>) {
    for _ in rounds() {
        if bad.is_empty() {
            return;
        }
        let live: HashSet<u64> = pool
            .ledgers_read()
            .into_iter()
            .filter(|l| l.alive)
            .flat_map(|l| l.counts.into_keys())
            .collect();
        bad.retain(|p| live.contains(&p.offset) && pool.obj(p.offset).is_err());
    }
}

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
