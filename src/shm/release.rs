//! Giving references back, and dismantling the objects whose count reaches 0 so
//! that a process killed midway leaves the rest to whoever replays its ledger.
//!
//! An object whose last reference goes is *dismantled*: each child slot in turn is
//! cleared (an immediate `None` written over it) and then the child's reference is
//! given back; then the data blocks go (the container's `data` word cleared first),
//! then the object's own block. Before the first child slot is cleared the object
//! is noted in the process's ledger as a *dismantle word*
//! ([`Pool::ledger_dismantle_add`]); it is taken out before the object's block is
//! freed. (The object is noted before any of its slots is looked at, a child as
//! soon as its count reaches 0.) Whoever replays the ledger of a process killed in
//! between finds the object (count 0, still whole but for the slots already
//! cleared) and dismantles
//! the rest ([`Pool::dismantle_resume`]): every child reference the dead process
//! had not given back is given back once — a slot is cleared before its child is
//! released, so a death between the two leaks that one reference, never releases
//! it twice. Objects without children (strings, bytes, arrays, big ints) and
//! small containers holding only immediates (at most 16 slots or 8 entries) are
//! never noted: their dismantling frees
//! blocks only (a death there leaves an unreachable object of count 0, which the
//! next sweep frees).
//!
//! Iterative, so depth and length cannot overflow the stack: a frame per object
//! being dismantled, those interrupted by a child's dismantling on the heap.

use super::layout::{tag, ContainerHead, Entry, Slot, TupHead, ENTRY, SLOT, TUP_SLOTS};
use super::mem::{Block, Obj, Raw};
use crate::Pool;
use std::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed, Release};

/// What a frame has left to give back.
enum Kids<'p> {
    /// Nothing (or nothing that validated: what it held is leaked, never freed
    /// twice).
    None,
    /// A tuple's or a list's slots.
    Slots(&'p [Slot]),
    /// A dict's entries (a key, then its value).
    Entries(&'p [Entry]),
    /// A pipe's or broadcast's values, read out at once (their cells are not
    /// cleared one by one: a death while they are given back leaks the rest).
    Held(Vec<u64>),
}

struct Frame<'p> {
    obj: Obj,
    kids: Kids<'p>,
    /// A list's or dict's head and data block, freed with it.
    data: Option<(&'p ContainerHead, Block<'p>)>,
    /// The next slot to look at (a dict: entry `next / 2`, its key or its value).
    next: usize,
    /// Whether the process's ledger names the object (a dismantle word).
    noted: bool,
}

impl Frame<'_> {
    /// Whether the object may hold references: some child is an object, or it is
    /// too big to tell cheaply (a small message of numbers is freed without a note).
    fn may_hold_objects(&self, pool: &Pool) -> bool {
        match &self.kids {
            Kids::None => false,
            Kids::Held(v) => !v.is_empty(),
            Kids::Slots(s) => s.len() > 16 || s.iter().any(|x| pool.read(x).is_object()),
            Kids::Entries(es) => {
                es.len() > 8
                    || es.iter().any(|e| {
                        let k = pool.read(&e.key);
                        k.tag() != tag::DELETED
                            && (k.is_object() || pool.read(&e.value).is_object())
                    })
            }
        }
    }
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

    /// Gives back a handle's reference to `r` (an object): out of the ledger, then
    /// the count (see `src/ledger.rs`). A container the handle alone holds (count
    /// 1: no slot, cell or other handle holds it, so nobody can take another
    /// reference) has the handle's ledger word turned into its dismantle note by
    /// one CAS instead, then its count set to 0: no death between the last
    /// reference and the note leaves it behind.
    #[inline]
    pub(crate) fn drop_handle(&self, r: Raw) {
        if matches!(r.tag(), tag::LIST | tag::TAB | tag::OTAB | tag::TUP) {
            if let (Ok(o), Ok(h)) = (self.obj(r.payload), self.header_at(r.payload)) {
                if h.count(Acquire) == 1 {
                    let mut f = self.frame(o);
                    if !f.may_hold_objects(self) {
                        // Nothing a death could lose but blocks: no note.
                        if self.ledger_take(r.payload) && h.sub_ref(AcqRel) == 1 {
                            self.finish(&f);
                        }
                        return;
                    }
                    if self.ledger_to_dismantle(o.off) {
                        // Torn: the note made, the count still 1 (the replay sets it
                        // to 0 and dismantles).
                        fail_point!("shm.release.noted");
                        // A CAS, not a store: a forked child's inherited handle (it
                        // holds no reference of its own) takes one before storing
                        // or sending the object, and must keep it.
                        if h.swap_count(1, 0, AcqRel) {
                            f.noted = true;
                            self.dismantle(f);
                            return;
                        }
                        self.ledger_from_dismantle(o.off);
                    }
                }
            }
        }
        // A reference this process's handles do not hold (inherited over `fork`:
        // the parent's) is not given back.
        if self.ledger_take(r.payload) {
            self.release(r);
        }
    }

    /// Finishes dismantling the object at `off` that a process now gone was
    /// dismantling (its ledger's dismantle word, taken out by the caller): of count
    /// 0, or 1 if the process died right after turning its handle's word into the
    /// note ([`drop_handle`](Self::drop_handle): the count is the handle's, whose
    /// object nothing else holds). `false` if it is not such an object (left
    /// alone).
    pub(crate) fn dismantle_resume(&self, off: u64) -> bool {
        let (Ok(o), Ok(h)) = (self.obj(off), self.header_at(off)) else {
            return false;
        };
        let n = h.count(Acquire);
        if n > 1 || (n == 1 && !h.swap_count(1, 0, AcqRel)) {
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
        let prev = h.sub_ref(AcqRel);
        if prev != 1 {
            if prev == 0 {
                h.add_ref(Relaxed); // corrupt: do not wrap
            }
            return None;
        }
        // Torn: the count is 0, nothing noted, nothing given back yet (a sweep
        // frees the object; what it held is then unreachable in turn).
        fail_point!("shm.release.zero");
        let f = self.frame(o);
        if matches!(f.kids, Kids::None) {
            self.finish(&f);
            return None;
        }
        Some(f)
    }

    /// The frame for dismantling `o` (count 0, or held by the caller alone). A
    /// container its last holder died changing (a ledger replay giving back that
    /// holder's reference) has the change finished or undone first, as the next
    /// lock holder would, so that no torn slot is given back.
    fn frame(&self, o: Obj) -> Frame<'_> {
        let mut f = Frame {
            obj: o,
            kids: Kids::None,
            data: None,
            next: 0,
            noted: false,
        };
        let _ = self.fill(&mut f);
        f
    }

    fn fill<'p>(&'p self, f: &mut Frame<'p>) -> Result<(), super::ValError> {
        let o = f.obj;
        match o.tag {
            tag::LIST | tag::TAB | tag::OTAB => {
                let c = self.container(o)?;
                if c.dirty.load(Relaxed) & 1 != 0 {
                    drop(super::guard::Guard::lock(self, o)?);
                }
                let elem = if o.tag == tag::LIST { SLOT } else { ENTRY };
                let Some(b) = self.block(c, elem)? else {
                    return Ok(());
                };
                f.data = Some((c, b));
                f.kids = if o.tag == tag::LIST {
                    Kids::Slots(b.slots(c.len.load(Relaxed))?)
                } else {
                    Kids::Entries(b.entries(b.head.used.load(Relaxed))?)
                };
            }
            tag::TUP => {
                let len = self.at::<TupHead>(o.off)?.len.load(Relaxed);
                let room = o.size.saturating_sub(TUP_SLOTS as u64) / SLOT as u64;
                let first = o.off + TUP_SLOTS as u64;
                let n = len.min(room);
                if n > 0 {
                    let p = shmval_alloc::Offset::new(first)
                        .and_then(|at| self.resolve(at, (n * SLOT as u64) as usize))
                        .filter(|p| p.as_ptr() as usize % 8 == 0)
                        .ok_or_else(|| super::mem::corrupt("tuple slots outside the pool"))?;
                    // SAFETY: `n` slots in the arena (resolved), 8-aligned (checked);
                    // slots are atomics only, valid for any bits.
                    f.kids = Kids::Slots(unsafe {
                        std::slice::from_raw_parts(p.as_ptr() as *const Slot, n as usize)
                    });
                }
            }
            tag::PIPE | tag::BCAST => {
                let mut held = Vec::new();
                self.each_child(o, &mut |off| held.push(off))?;
                f.kids = Kids::Held(held);
            }
            _ => {}
        }
        Ok(())
    }

    /// Dismantles `f`'s object and every object whose count reaches 0 meanwhile
    /// (the one being dismantled in `cur`, those it interrupted in `outer`: a flat
    /// container needs no heap).
    fn dismantle<'p>(&'p self, mut cur: Frame<'p>) {
        let mut outer: Vec<Frame<'p>> = Vec::new();
        self.note(&mut cur);
        loop {
            let Some((slot, off)) = self.next_child(&mut cur) else {
                self.finish(&cur);
                match outer.pop() {
                    Some(f) => cur = f,
                    None => return,
                }
                continue;
            };
            if let Some(slot) = slot {
                // Torn: the object noted (if a word could hold it), this child not yet
                // given back; a replay gives back this one and the rest.
                fail_point!("shm.release.dismantling");
                // Cleared, then given back: a death in between leaks one reference.
                slot.tag.store(u64::from(tag::NONE), Release);
            }
            if let Some(mut child) = self.drop_one(off) {
                // Noted before any of its slots is looked at: a death while it is
                // scanned (past immediates) leaves it to the replay, not a leak.
                self.note(&mut child);
                outer.push(std::mem::replace(&mut cur, child));
            }
        }
    }

    /// Notes `f`'s object in the ledger (a dismantle word: from here on the rest is
    /// the replay's to finish if this process dies) if it may hold objects and its
    /// slots are cleared one by one; not a pipe's or broadcast's values, which are
    /// read out at once and could not be told apart from those given back.
    fn note(&self, f: &mut Frame<'_>) {
        if !f.noted && !matches!(f.kids, Kids::Held(_)) && f.may_hold_objects(self) {
            f.noted = self.ledger_dismantle_add(f.obj.off);
        }
    }

    /// The next child of `f` to give back: its slot (`None` for a pipe's values)
    /// and the object's offset.
    fn next_child<'p>(&self, f: &mut Frame<'p>) -> Option<(Option<&'p Slot>, u64)> {
        match &mut f.kids {
            Kids::None => None,
            Kids::Held(v) => v.pop().map(|off| (None, off)),
            Kids::Slots(s) => {
                let s: &'p [Slot] = s;
                while let Some(slot) = s.get(f.next) {
                    f.next += 1;
                    let r = self.read(slot);
                    if r.is_object() {
                        return Some((Some(slot), r.payload));
                    }
                    // Torn: the object noted, immediates being passed over.
                    fail_point!("shm.release.scanning");
                }
                None
            }
            Kids::Entries(es) => {
                let es: &'p [Entry] = es;
                while let Some(e) = es.get(f.next / 2) {
                    let slot = if f.next % 2 == 0 {
                        if self.read(&e.key).tag() == tag::DELETED {
                            f.next += 2; // a deleted entry's value is not held
                            continue;
                        }
                        &e.key
                    } else {
                        &e.value
                    };
                    f.next += 1;
                    let r = self.read(slot);
                    if r.is_object() {
                        return Some((Some(slot), r.payload));
                    }
                }
                None
            }
        }
    }

    /// Frees a dismantled object: its data blocks (unnamed first, so a replay
    /// never frees them again), its dismantle word, its block.
    fn finish(&self, f: &Frame<'_>) {
        let o = f.obj;
        if let Some((c, b)) = f.data {
            c.data.store(0, Release);
            self.free_data_block(o, b);
        }
        if f.noted {
            self.ledger_dismantle_take(o.off);
        }
        if let Ok(h) = self.header_at(o.off) {
            h.unpublish(); // a stale offset can never pass `obj` again
        }
        self.free_block(o.off, o.size);
    }
}
