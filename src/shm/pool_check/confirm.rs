//! The second looks of a check beside working processes (see `Pool::check`): a
//! problem the walk saw is looked at again, [`CONFIRM_ROUNDS`] times, and kept only
//! if it is there every time.

use super::{Problem, ROOT_WORDS};
use crate::shm::check::{header, inspect, pin, visit, Visit};
use crate::Pool;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering::{Acquire, Relaxed};

/// An object's reference count against the references found to it.
pub(super) struct Counted {
    pub(super) off: u64,
    pub(super) tag: u8,
    pub(super) count: u64,
    /// References found in the pool.
    pub(super) refs: u64,
    /// References the ledgers count (live and dead processes').
    pub(super) handles: u64,
    /// Whether the ledgers' references must fit in the count too (the checker
    /// alone: nothing moves them).
    pub(super) ledgers_count: bool,
}

impl Counted {
    /// A count a release would take to 0 while references remain.
    pub(super) fn too_low(&self) -> bool {
        self.count < self.refs || (self.ledgers_count && self.count < self.refs + self.handles)
    }

    pub(super) fn problem(&self) -> Problem {
        let kind = crate::shm::layout::tag_name(self.tag);
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
pub(super) const CONFIRM_PRIVATE_GAP: std::time::Duration = std::time::Duration::from_millis(1);

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
pub(super) fn confirm_counts(
    pool: &Pool,
    low: &mut Vec<Counted>,
    referrers: &HashMap<u64, Vec<u64>>,
) {
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
            for off in held_by(pool, from) {
                if wanted.contains(&off) {
                    *refs.entry(off).or_default() += 1;
                }
            }
        }
        // References the ledgers count.
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
                return false; // freed (and perhaps reused) since the walk
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

/// The objects `from` holds a reference to now (0: the pool header's root words), a
/// value held twice twice; none when `from` is gone (it is pinned while read).
fn held_by(pool: &Pool, from: u64) -> Vec<u64> {
    if from == 0 {
        return ROOT_WORDS
            .iter()
            .map(|&w| pool.user_word(w).load(Acquire))
            .filter(|&off| off != 0)
            .collect();
    }
    let Ok(o) = pool.obj(from) else {
        return Vec::new();
    };
    let Some(_pin) = pin(pool, o) else {
        return Vec::new(); // gone meanwhile: holds nothing now
    };
    let mut kids = Vec::new();
    let _ = inspect(pool, o, &mut kids);
    kids.iter()
        .filter(|k| k.is_object())
        .map(|k| k.payload)
        .collect()
}

/// Beside other processes a reference read from a container (or a pipe's cell)
/// that is released before the object is visited may name a block freed since: a
/// reference found naming no object of its type is looked at again,
/// [`CONFIRM_ROUNDS`] times, and kept only if its holder still holds it and it
/// still names no such object each time.
pub(super) fn confirm_bad_refs(pool: &Pool, bad: &mut Vec<(Visit, Problem)>) {
    for _ in rounds() {
        if bad.is_empty() {
            return;
        }
        bad.retain_mut(|((want, off, _, from), p)| {
            if *from == *off || !held_by(pool, *from).contains(off) {
                return false; // a ledger's root that went, or a reference that did
            }
            match header(pool, *want, *off, *from) {
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
pub(super) fn confirm_body(pool: &Pool, body: &mut Vec<Problem>, private: &HashSet<u64>) {
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
pub(super) fn confirm_ledgered(pool: &Pool, bad: &mut Vec<Problem>) {
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
