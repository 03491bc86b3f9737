//! Giving references back, and dismantling the objects whose count reaches 0 so
//! that a process killed midway leaves the rest to whoever replays its ledger.
//!
//! An object whose last reference goes is *dismantled*: each child slot in turn is
//! cleared (an immediate `None` written over it) and then the child's reference is
//! given back; then the data blocks go (the container's `data` word cleared first),
//! then the object's own block. Before the first child slot is cleared the object
//! is noted in the process's ledger as a *dismantle word*
//! ([`Pool::ledger_dismantle_add`]); it is taken out before the object's block is
//! freed. Whoever replays the ledger of a process killed in between finds the
//! object (count 0, still whole but for the slots already cleared) and dismantles
//! the rest ([`Pool::dismantle_resume`]): every child reference the dead process
//! had not given back is given back once — a slot is cleared before its child is
//! released, so a death between the two leaks that one reference, never releases
//! it twice. Objects without children (strings, bytes, arrays, big ints) and
//! containers holding only immediates are never noted: their dismantling frees
//! blocks only (a death there leaves an unreachable object of count 0, which the
//! next sweep frees).
//!
//! Iterative, so depth and length cannot overflow the stack: a frame per object
//! being dismantled, those interrupted by a child's dismantling on the heap.

use super::layout::{tag, Slot, TupHead, ENTRY, SLOT, TUP_SLOTS};
use super::mem::{Block, Obj, Raw};
use crate::Pool;
use std::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed, Release};

/// What a frame has left to give back.
enum Kids<'p> {
    /// Nothing (or nothing that validated: what it held is leaked, never freed
    /// twice).
    None,
    /// A tuple's `n` slots from `first`.
    Slots { first: u64, n: u64 },
    /// A list's first `n` slots of block `b`.
    List(Block<'p>, u64),
    /// A dict's first `n` entries of block `b` (a key, then its value).
    Dict(Block<'p>, u64),
    /// A pipe's or broadcast's values, read out at once (their cells are not
    /// cleared one by one: a death while they are given back leaks the rest).
    Held(Vec<u64>),
}

struct Frame<'p> {
    obj: Obj,
    kids: Kids<'p>,
    /// The next slot to look at (a dict: entry `next / 2`, its key or its value).
    next: u64,
    /// Whether the process's ledger names the object (a dismantle word).
    noted: bool,
}

impl Pool {
    /// Drops one reference to `r`; the last one dismantles the object (see the
    /// module). Corrupt objects are skipped (leaked), never freed twice.
    pub(crate) fn release(&self, r: Raw) {
        if !r.is_object() {
            return;
        }
        if let Some(f) = self.drop_one(r.payload) {
            self.dismantle(f);
        }
    }

    /// Finishes dismantling the object at `off` that a process now gone was
    /// dismantling (its ledger's dismantle word, taken out by the caller). `false`
    /// if it is not an object of count 0 (left alone).
    pub(crate) fn dismantle_resume(&self, off: u64) -> bool {
        let (Ok(o), Ok(h)) = (self.obj(off), self.header_at(off)) else {
            return false;
        };
        if h.refcount.load(Acquire) != 0 {
            return false;
        }
        self.dismantle(self.frame(o));
        true
    }

    /// Gives back one reference to the object at `off`: the frame to dismantle it
    /// with if it was the last (and the object has children), after freeing a
    /// childless one at once.
    fn drop_one(&self, off: u64) -> Option<Frame<'_>> {
        let (Ok(o), Ok(h)) = (self.obj(off), self.header_at(off)) else {
            return None;
        };
        let prev = h.refcount.fetch_sub(1, AcqRel);
        if prev != 1 {
            if prev == 0 {
                h.refcount.fetch_add(1, Relaxed); // corrupt: do not wrap
            }
            return None;
        }
        // Torn: the count is 0, nothing noted, nothing given back yet (a sweep
        // frees the object; what it held is then unreachable in turn).
        fail_point!("shm.release.zero");
        let f = self.frame(o);
        if matches!(f.kids, Kids::None) {
            self.finish(f);
            return None;
        }
        Some(f)
    }

    /// The frame for dismantling `o` (count 0). A container its last holder died
    /// changing (a ledger replay giving back that holder's reference) has the change
    /// finished or undone first, as the next lock holder would, so that no torn
    /// slot is given back.
    fn frame(&self, o: Obj) -> Frame<'_> {
        let kids = self.kids(o).unwrap_or(Kids::None);
        Frame {
            obj: o,
            kids,
            next: 0,
            noted: false,
        }
    }

    fn kids(&self, o: Obj) -> Result<Kids<'_>, super::ValError> {
        Ok(match o.tag {
            tag::LIST | tag::TAB | tag::OTAB => {
                let c = self.container(o)?;
                if c.dirty.load(Relaxed) & 1 != 0 {
                    drop(super::guard::Guard::lock(self, o)?);
                }
                if o.tag == tag::LIST {
                    match self.block(c, SLOT)? {
                        Some(b) => Kids::List(b, c.len.load(Relaxed).min(b.cap)),
                        None => Kids::None,
                    }
                } else {
                    match self.block(c, ENTRY)? {
                        Some(b) => Kids::Dict(b, b.head.used.load(Relaxed).min(b.cap)),
                        None => Kids::None,
                    }
                }
            }
            tag::TUP => {
                let len = self.at::<TupHead>(o.off)?.len.load(Relaxed);
                let room = o.size.saturating_sub(TUP_SLOTS as u64) / SLOT as u64;
                Kids::Slots {
                    first: o.off + TUP_SLOTS as u64,
                    n: len.min(room),
                }
            }
            tag::PIPE | tag::BCAST => {
                let mut held = Vec::new();
                self.each_child(o, &mut |off| held.push(off))?;
                Kids::Held(held)
            }
            _ => Kids::None,
        })
    }

    /// Dismantles `f`'s object and every object whose count reaches 0 meanwhile
    /// (the one being dismantled in `cur`, those it interrupted in `outer`: a flat
    /// container needs no heap).
    fn dismantle<'p>(&'p self, mut cur: Frame<'p>) {
        let mut outer: Vec<Frame<'p>> = Vec::new();
        loop {
            let Some((slot, off)) = self.next_child(&mut cur) else {
                self.finish(cur);
                match outer.pop() {
                    Some(f) => cur = f,
                    None => return,
                }
                continue;
            };
            if let Some(slot) = slot {
                if !cur.noted {
                    // From here on the rest is the ledger's to finish if we die.
                    cur.noted = self.ledger_dismantle_add(cur.obj.off);
                }
                // Torn: the object noted (if a word could hold it), this child not yet
                // given back; a replay gives back this one and the rest.
                fail_point!("shm.release.dismantling");
                // Cleared, then given back: a death in between leaks one reference.
                slot.tag.store(u64::from(tag::NONE), Release);
            }
            if let Some(child) = self.drop_one(off) {
                outer.push(std::mem::replace(&mut cur, child));
            }
        }
    }

    /// The next child of `f` to give back: its slot (`None` for a pipe's values)
    /// and the object's offset.
    fn next_child<'p>(&'p self, f: &mut Frame<'p>) -> Option<(Option<&'p Slot>, u64)> {
        loop {
            let i = f.next;
            let slot = match &mut f.kids {
                Kids::None => return None,
                Kids::Held(v) => return v.pop().map(|off| (None, off)),
                Kids::Slots { first, n } => {
                    if i >= *n {
                        return None;
                    }
                    self.slot_at(*first + i * SLOT as u64).ok()
                }
                Kids::List(b, n) => {
                    if i >= *n {
                        return None;
                    }
                    self.slot_at(b.at(i)).ok()
                }
                Kids::Dict(b, n) => {
                    if i / 2 >= *n {
                        return None;
                    }
                    let e = self.entry_in(*b, i / 2).ok();
                    match e {
                        Some(e) if i % 2 == 0 => {
                            if self.read(&e.key).tag() == tag::DELETED {
                                f.next += 2; // a deleted entry's value is not held
                                continue;
                            }
                            Some(&e.key)
                        }
                        Some(e) => Some(&e.value),
                        None => None,
                    }
                }
            };
            f.next += 1;
            let Some(slot) = slot else { continue }; // did not validate: leaked
            let r = self.read(slot);
            if r.is_object() {
                return Some((Some(slot), r.payload));
            }
        }
    }

    /// Frees a dismantled object: its data blocks (unnamed first, so a replay
    /// never frees them again), its dismantle word, its block.
    fn finish(&self, f: Frame<'_>) {
        let o = f.obj;
        if let Kids::List(b, _) | Kids::Dict(b, _) = f.kids {
            if let Ok(c) = self.container(o) {
                c.data.store(0, Release);
                self.free_data_block(o, b);
            }
        }
        if f.noted {
            self.ledger_dismantle_take(o.off);
        }
        if let Ok(h) = self.header_at(o.off) {
            h.kind.store(0, Release); // a stale offset can never pass `obj` again
        }
        self.free_block(o.off, o.size);
    }
}
