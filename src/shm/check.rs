//! Containment checking: prove that a shared value lies entirely inside its pool and
//! is well formed, or say where it is not.

use super::guard::Guard;
use super::handle::ShmVal;
use super::layout::{tag, ArrHead, TextHead, TupHead, HDR, OBJ_MAGIC, SLOT, TEXT_BYTES, TUP_SLOTS};
use super::mem::{Obj, Raw, MAX_DEPTH};
use crate::Pool;
use std::collections::HashSet;
use std::mem::offset_of;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;

/// One thing wrong with a shared value.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Problem {
    /// Offset of the object (or slot owner) where it was found.
    pub offset: u64,
    /// What is wrong.
    pub what: String,
}

/// What [`check_value`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckReport {
    /// Distinct objects visited.
    pub objects: usize,
    /// Bytes of those objects (allocation sizes, data blocks excluded).
    pub bytes: u64,
    /// Deepest nesting seen.
    pub max_depth: usize,
    /// Objects reached again from inside themselves (cycles; legal but not
    /// representable as a heap `Val`).
    pub cycles: usize,
    /// Everything malformed, in the order found.
    pub problems: Vec<Problem>,
}

impl CheckReport {
    /// No problems (cycles are not problems).
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Walks `v` and proves every part of it lies inside its pool and is well formed:
/// offsets in bounds and aligned, object headers with the object magic, tags matching
/// the slots that name them, positive reference counts, lengths within allocations,
/// depth at most 1000. Cycles are detected (each object is visited once), so a
/// self-referencing container is reported, never walked forever. Containers are
/// examined under their locks. Corrupt data gives a report, never a crash.
///
/// # Examples
/// ```
/// # use shmval::{tab, Pool, PoolOptions};
/// # let pool = Pool::create_with(&format!("doc-check-{}", std::process::id()), 1 << 20, &PoolOptions::new().remove_on_drop(true))?;
/// let v = pool.share(&tab! { "a" => vec![1.0f64, 2.0], "b" => "text" })?;
/// let r = shmval::check_value(&v);
/// assert!(r.is_ok() && r.objects == 2, "{r:?}"); // the dict and the array: short strings are inline
/// assert!(shmval::is_shm(&v));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn check_value(v: &ShmVal) -> CheckReport {
    let mut report = CheckReport::default();
    let (Some(pool), Some(root)) = (v.pool(), v.offset()) else {
        return report;
    };
    let mut seen = HashSet::new();
    let mut stack: Vec<Visit> = vec![(v.raw().tag(), root, 0, root)];
    while let Some((want, off, depth, from)) = stack.pop() {
        if depth > MAX_DEPTH {
            report.problems.push(Problem {
                offset: from,
                what: format!("nesting deeper than {MAX_DEPTH}"),
            });
            continue;
        }
        if !seen.insert(off) {
            report.cycles += 1;
            continue;
        }
        let mut bad = None;
        let o = visit(
            pool,
            (want, off, depth, from),
            false,
            &|_| false,
            &mut report.problems,
            &mut stack,
            &mut |_, p| bad = Some(p),
        );
        report.problems.extend(bad);
        let Some(o) = o else {
            continue;
        };
        match pool.header_at(off).map(|h| h.count(Relaxed)) {
            Ok(0) => report.problems.push(Problem {
                offset: from,
                what: format!("object at {off:#x} has reference count 0 (freed or corrupt)"),
            }),
            Ok(_) => {}
            Err(e) => report.problems.push(Problem {
                offset: from,
                what: e.to_string(),
            }),
        }
        report.objects += 1;
        report.bytes += o.size;
        report.max_depth = report.max_depth.max(depth);
    }
    report
}

/// A reference to visit: (expected tag, offset, depth, offset of the object holding
/// the reference).
pub(super) type Visit = (u8, u64, usize, u64);

/// Validates the object `v` names (in bounds, an object header, the tag its slot
/// says) and its own fields, and pushes the objects it refers to onto `stack`; the
/// object, unless it could not be read.
///
/// Beside anything else running on the pool (`alone` false), its body is read and
/// a container's lock taken only while the walk holds a reference to it ([`pin`]):
/// its offset was read from a container whose lock is released since, or from the
/// ledger of a process (or a thread of this one) that may drop its handle at any
/// moment, so the object may be freed, and its block reused, before the visit. An
/// object that cannot be pinned (count 0: being freed, a dead process's
/// dismantling, or a count corrupted to 0) has only its header checked, unless
/// `unpinned` says it may be read all the same (nothing can free it meanwhile).
/// `alone`: the caller has the pool to itself (the repair lock), and no other
/// thread of it uses the pool: nothing is pinned.
pub(super) fn visit(
    pool: &Pool,
    v: Visit,
    alone: bool,
    unpinned: &dyn Fn(u64) -> bool,
    problems: &mut Vec<Problem>,
    stack: &mut Vec<Visit>,
    bad_ref: &mut dyn FnMut(Visit, Problem),
) -> Option<Obj> {
    let (want, off, depth, from) = v;
    let o = match header(pool, want, off, from) {
        Ok(o) => o,
        Err(p) => {
            bad_ref(v, p);
            return None;
        }
    };
    // Torn: the header read and found good, no reference held yet (the object may
    // be freed and its block reused from here on).
    fail_point!("shm.check.visiting");
    let pinned = if alone { None } else { pin(pool, o) };
    let o = match &pinned {
        // Held now: read it again (a block reused for an object of the same type
        // since has its own size).
        Some(_) => match pool.obj(off) {
            Ok(o) => o,
            Err(_) => return None, // unreachable while pinned; nothing to report
        },
        None if alone || unpinned(off) => o,
        None => return Some(o),
    };
    let mut children = Vec::new();
    if let Err(what) = inspect(pool, o, &mut children) {
        problems.push(Problem { offset: off, what });
    }
    drop(pinned); // its last reference, if everyone else let go meanwhile: freed
    for r in children {
        if (tag::FIRST_OBJECT..=tag::LAST_OBJECT).contains(&r.tag()) {
            stack.push((r.tag(), r.payload, depth + 1, off));
        } else if r.tag() > tag::LAST_IMMEDIATE || (r.tag() >= tag::STR_INLINE && r.len() > 8) {
            problems.push(Problem {
                offset: off,
                what: format!("unknown value tag {}", r.tag()),
            });
        }
    }
    Some(o)
}

/// The object at `off`, which a reference of tag `want` found in the object at
/// `from` names, or what is wrong with it (said at `from`).
pub(super) fn header(pool: &Pool, want: u8, off: u64, from: u64) -> Result<Obj, Problem> {
    let o = pool.obj(off).map_err(|e| Problem {
        offset: from,
        what: e.to_string(),
    })?;
    if o.tag != want {
        return Err(Problem {
            offset: from,
            what: format!("slot says tag {want}, object at {off:#x} has tag {}", o.tag),
        });
    }
    Ok(o)
}

/// A reference to `o` for the walk (counted in this process's ledger), if `o` is
/// still a live object of its type: taken by one compare-and-swap of its header
/// word ([`ObjHeader::pin`](super::layout::ObjHeader::pin)), which fails on a block
/// freed or reused since, never writing to it.
pub(super) fn pin(pool: &Pool, o: Obj) -> Option<ShmVal> {
    let h = pool.header_at(o.off).ok()?;
    h.pin(OBJ_MAGIC | u32::from(o.tag))
        .then(|| ShmVal::from_owned(pool, Raw::new(o.tag, 0, o.off)))
}

/// Whether every part of `v` lies inside its pool and is well formed.
pub fn is_shm(v: &ShmVal) -> bool {
    check_value(v).is_ok()
}

/// Checks one object's own fields and collects the slots it holds.
pub(super) fn inspect(pool: &Pool, o: Obj, out: &mut Vec<Raw>) -> Result<(), String> {
    let word = |off: u64| {
        pool.at::<AtomicU64>(off)
            .map(|w| w.load(Relaxed))
            .map_err(|e| e.to_string())
    };
    // Every size below comes from shared memory: checked arithmetic only.
    let body = o
        .size
        .checked_sub(HDR as u64)
        .ok_or_else(|| format!("object of {} bytes is smaller than its header", o.size))?;
    match o.tag {
        tag::STR | tag::BYTES | tag::BIGINT => {
            let len = word(o.off + offset_of!(TextHead, len) as u64)?;
            if len > body.saturating_sub(8) {
                return Err(format!("length {len} beyond the object's {} bytes", o.size));
            }
            if o.tag == tag::STR
                && std::str::from_utf8(
                    pool.bytes_at(o.off + TEXT_BYTES as u64, len)
                        .map_err(|e| e.to_string())?,
                )
                .is_err()
            {
                return Err("str is not UTF-8".into());
            }
        }
        tag::C64 => {}
        tag::ARR => {
            let kind =
                crate::val::ArrKind::from_u8(word(o.off + offset_of!(ArrHead, kind) as u64)? as u8)
                    .ok_or("unknown array element kind")?;
            let len = word(o.off + offset_of!(ArrHead, len) as u64)?;
            if len
                .checked_mul(kind.size() as u64)
                .is_none_or(|b| b > body.saturating_sub(16))
            {
                return Err(format!(
                    "array of {len} elements beyond the object's {} bytes",
                    o.size
                ));
            }
            let w = word(o.off + offset_of!(ArrHead, kind) as u64)?;
            pool.arr_shape(o, w, len, kind).map_err(|e| e.to_string())?;
        }
        tag::TUP => {
            let len = word(o.off + offset_of!(TupHead, len) as u64)?;
            if len > body.saturating_sub(16) / SLOT as u64 {
                return Err(format!("tuple of {len} beyond the object"));
            }
            for i in 0..len {
                out.push(
                    pool.read(
                        pool.slot_at(o.off + TUP_SLOTS as u64 + i * SLOT as u64)
                            .map_err(|e| e.to_string())?,
                    ),
                );
            }
        }
        tag::LIST => {
            let g = Guard::lock(pool, o).map_err(|e| e.to_string())?;
            let len = g.head.len.load(Relaxed);
            let block = pool.block(g.head, SLOT).map_err(|e| e.to_string())?;
            let cap = block.map_or(0, |b| b.cap);
            if len > cap {
                return Err(format!("list length {len} beyond capacity {cap}"));
            }
            if let Some(b) = block {
                for i in 0..len {
                    out.push(pool.read(pool.slot_at(b.at(i)).map_err(|e| e.to_string())?));
                }
            }
        }
        tag::PIPE => {
            crate::pipe::values_held(pool, o, &mut |r| out.push(r)).map_err(|e| e.to_string())?;
        }
        tag::BCAST => {
            crate::pipe::broadcast_values_held(pool, o, &mut |r| out.push(r))
                .map_err(|e| e.to_string())?;
        }
        _ => {
            let g = Guard::lock(pool, o).map_err(|e| e.to_string())?;
            let len = g.head.len.load(Relaxed);
            let Some(b) = g.block().map_err(|e| e.to_string())? else {
                return if len == 0 {
                    Ok(())
                } else {
                    Err(format!("dict says {len} entries, has no block"))
                };
            };
            let used = b.head.used.load(Relaxed);
            if used > b.cap || len > used {
                return Err(format!(
                    "dict counts impossible: len {len}, used {used}, cap {}",
                    b.cap
                ));
            }
            let mut live = 0;
            for i in 0..used {
                let e = pool.entry_in(b, i).map_err(|e| e.to_string())?;
                let k = pool.read(&e.key);
                if k.tag() == tag::DELETED {
                    continue;
                }
                if matches!(k.tag(), tag::ARR | tag::LIST | tag::TAB | tag::OTAB) {
                    return Err(format!("dict key of unhashable type (tag {})", k.tag()));
                }
                live += 1;
                out.push(k);
                out.push(pool.read(&e.value));
            }
            if live != len {
                return Err(format!("dict says {len} entries, holds {live}"));
            }
        }
    }
    Ok(())
}
