//! Heap `Val` → pool (`share`, all or nothing) and pool → heap `Val` (`to_val`).

use super::guard::Guard;
use super::hash::key_hash;
use super::layout::{
    arr_kind_word, arr_shape_off, le_word, tag, ArrHead, C64Obj, ContainerHead, TextHead, TupHead,
    ARR_ELEMS, HDR, SLOT, TEXT_BYTES, TUP_SLOTS,
};
use super::mem::{corrupt, Obj, Raw, MAX_DEPTH};
use super::{Elem, ValError};
use crate::val::{Arr, ArrKind, Complex, Map, Val};
use crate::Pool;
use num_bigint::BigInt;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::{Relaxed, Release};

/// A str/bytes of at most 8 bytes, inline in the slot.
pub(super) fn inline(t: u8, b: &[u8]) -> Raw {
    debug_assert!(b.len() <= 8);
    Raw::new(t, b.len() as u8, le_word(b))
}

/// The bytes of an inline str/bytes.
pub(crate) fn inline_bytes(r: &Raw) -> Result<Vec<u8>, ValError> {
    if r.len() > 8 {
        return Err(corrupt(format!("inline length {}", r.len())));
    }
    Ok(r.payload.to_le_bytes()[..r.len() as usize].to_vec())
}

fn imm(t: u8, payload: u64) -> Raw {
    Raw::new(t, 0, payload)
}

/// Bytes of a value's elements, for copying into an array object.
fn arr_bytes(a: &Arr) -> &[u8] {
    a.as_bytes()
}

impl Pool {
    /// Writes `r` into the slot at `off` (a fresh, private block).
    fn put(&self, off: u64, r: Raw) -> Result<(), ValError> {
        self.write(self.slot_at(off)?, r);
        Ok(())
    }

    /// Copies `bytes` to `off` inside an object this thread just allocated.
    pub(super) fn copy_in(&self, off: u64, bytes: &[u8]) -> Result<(), ValError> {
        let p = shmval_alloc::Offset::new(off)
            .and_then(|o| self.resolve(o, bytes.len()))
            .ok_or_else(|| corrupt("fresh object outside the pool"))?;
        // SAFETY: `resolve` checked the range; the object is fresh, private to this
        // thread until published, and sized by the caller to hold `bytes` at `off`.
        unsafe {
            p.as_ptr()
                .copy_from_nonoverlapping(bytes.as_ptr(), bytes.len())
        };
        Ok(())
    }

    pub(super) fn new_bytes_obj(&self, t: u8, bytes: &[u8], ledger: bool) -> Result<Raw, ValError> {
        let o = self.alloc_obj_zeroed(t, HDR + 8 + bytes.len(), HDR)?;
        self.at::<TextHead>(o.off)?
            .len
            .store(bytes.len() as u64, Relaxed);
        if ledger {
            // Its header whole, its bytes not copied yet: a death during the copy
            // leaks nothing.
            self.ledger_add(o.off);
        }
        self.copy_in(o.off + TEXT_BYTES as u64, bytes)?;
        Ok(imm(t, o.off))
    }

    /// [`share_raw`](Self::share_raw) for a new handle: the object's reference is
    /// in this process's ledger on return — counted as soon as the object exists for
    /// a leaf or a dict of leaves (the copy and the filling come after), at the end
    /// for nested values (a death while building one leaks what was built).
    pub(crate) fn share_raw_ledgered(&self, v: &Val) -> Result<Raw, ValError> {
        if let Some(r) = immediate(v) {
            return Ok(r);
        }
        if is_leaf(v) {
            return match self.in_step_with(v, true)? {
                In::Raw(r) => Ok(r),
                In::Frame(_) => unreachable!("checked to be a leaf"),
            };
        }
        if let Val::Tab(m) | Val::OTab(m) = v {
            if m.iter().all(|(k, x)| is_leaf(k) && is_leaf(x)) {
                let t = if matches!(v, Val::Tab(_)) {
                    tag::TAB
                } else {
                    tag::OTAB
                };
                return self.share_flat_map(t, m, true);
            }
        }
        let r = self.share_raw(v, 0)?;
        self.ledger_add(r.payload);
        Ok(r)
    }

    /// Copies `v` into the pool with an explicit stack (no recursion; nesting up to
    /// `MAX_DEPTH`). On failure everything built so far is released.
    pub(crate) fn share_raw(&self, v: &Val, _depth: usize) -> Result<Raw, ValError> {
        // Fast paths: an immediate, a leaf, or a dict of leaves (the typical
        // message), need no stack.
        if let Some(r) = immediate(v) {
            return Ok(r);
        }
        if is_leaf(v) {
            return match self.in_step(v)? {
                In::Raw(r) => Ok(r),
                In::Frame(_) => unreachable!("checked to be a leaf"),
            };
        }
        if let Val::Tab(m) | Val::OTab(m) = v {
            if m.iter().all(|(k, x)| is_leaf(k) && is_leaf(x)) {
                return self.share_flat_map(
                    if matches!(v, Val::Tab(_)) {
                        tag::TAB
                    } else {
                        tag::OTAB
                    },
                    m,
                    false,
                );
            }
        }
        let mut stack: Vec<InFrame<'_>> = Vec::new();
        let res = self.share_iter(v, &mut stack);
        if res.is_err() {
            for f in &stack {
                self.release_all(&f.built);
            }
        }
        res
    }

    fn share_iter<'v>(&self, v: &'v Val, stack: &mut Vec<InFrame<'v>>) -> Result<Raw, ValError> {
        let mut done = match self.in_step(v)? {
            In::Raw(r) => return Ok(r),
            In::Frame(f) => {
                stack.push(f);
                None
            }
        };
        loop {
            let top = stack.last_mut().expect("a frame is open");
            if let Some(r) = done.take() {
                top.built.push(r);
            }
            if let Some(child) = top.next_child() {
                match self.in_step(child)? {
                    In::Raw(r) => done = Some(r),
                    In::Frame(f) => {
                        if stack.len() >= MAX_DEPTH {
                            return Err(ValError::TooDeep);
                        }
                        stack.push(f);
                    }
                }
            } else {
                let f = stack.pop().expect("top exists");
                let r = self.build(f)?; // releases its children itself on failure
                if stack.is_empty() {
                    return Ok(r);
                }
                done = Some(r);
            }
        }
    }

    /// A dict whose keys and values are all leaves, built directly.
    fn share_flat_map(&self, t: u8, m: &Map, ledger: bool) -> Result<Raw, ValError> {
        let o = self.new_tab_obj(t, m.len() as u64)?;
        let raw = imm(t, o.off);
        if ledger {
            // At once: each entry is whole before `used` counts it, so a death while
            // filling leaves a table whose replay releases what it holds.
            self.ledger_add(o.off);
        }
        let release = |rs: &[Raw]| {
            if ledger {
                let _ = self.ledger_take(o.off);
            }
            self.release_all(rs);
        };
        // A private table (not yet visible to anyone): no lock needed.
        let mut tab = self.private_tab(o).inspect_err(|_| release(&[raw]))?;
        for (k, x) in m {
            let leaf = |v: &Val| -> Result<Raw, ValError> {
                if let Some(r) = immediate(v) {
                    return Ok(r);
                }
                match self.in_step(v)? {
                    In::Raw(r) => Ok(r),
                    In::Frame(_) => unreachable!("checked to be a leaf"),
                }
            };
            let kr = leaf(k).inspect_err(|_| release(&[raw]))?;
            let vr = leaf(x).inspect_err(|_| release(&[kr, raw]))?;
            tab.append(key_hash(k), kr, vr)
                .inspect_err(|_| release(&[kr, vr, raw]))?;
        }
        Ok(raw)
    }

    /// One heap value: a leaf copied in now, or a container to open.
    fn in_step<'v>(&self, v: &'v Val) -> Result<In<'v>, ValError> {
        self.in_step_with(v, false)
    }

    /// [`in_step`](Self::in_step); `ledger`: a leaf's reference goes into this
    /// process's ledger as soon as the object exists (for a new handle: a big array
    /// or string is copied in after that, so a death during the copy leaks nothing).
    fn in_step_with<'v>(&self, v: &'v Val, ledger: bool) -> Result<In<'v>, ValError> {
        if let Some(r) = immediate(v) {
            return Ok(In::Raw(r));
        }
        Ok(In::Raw(match v {
            Val::Str(s) => self.new_bytes_obj(tag::STR, s.as_bytes(), ledger)?,
            Val::Bytes(b) => self.new_bytes_obj(tag::BYTES, b, ledger)?,
            Val::BigInt(b) => self.new_bytes_obj(tag::BIGINT, &b.to_signed_bytes_le(), ledger)?,
            Val::Complex64(c) => {
                let o = self.alloc_obj(tag::C64, HDR + 16)?;
                if ledger {
                    self.ledger_add(o.off);
                }
                let h = self.at::<C64Obj>(o.off)?;
                h.re.store(c.re.to_bits(), Relaxed);
                h.im.store(c.im.to_bits(), Relaxed);
                imm(tag::C64, o.off)
            }
            Val::Arr(a) => {
                let bytes = arr_bytes(a);
                let o = self.alloc_obj_zeroed(tag::ARR, ARR_ELEMS + bytes.len(), HDR)?;
                let h = self.at::<ArrHead>(o.off)?;
                h.kind.store(a.kind() as u64, Relaxed);
                h.len.store(a.len() as u64, Relaxed);
                if ledger {
                    self.ledger_add(o.off); // before the copy (see above)
                }
                self.copy_in(o.off + ARR_ELEMS as u64, bytes)?;
                imm(tag::ARR, o.off)
            }
            Val::NdArr(a) => {
                let bytes = arr_bytes(a.data());
                let dims = arr_shape_off(bytes.len() as u64);
                let size = dims as usize + 8 * a.ndim();
                let o = self.alloc_obj_zeroed(tag::ARR, size, HDR)?;
                let h = self.at::<ArrHead>(o.off)?;
                h.kind
                    .store(arr_kind_word(a.data().kind() as u8, a.ndim()), Relaxed);
                h.len.store(a.data().len() as u64, Relaxed);
                if ledger {
                    self.ledger_add(o.off); // before the copy (see above)
                }
                self.copy_in(o.off + ARR_ELEMS as u64, bytes)?;
                for (i, &d) in a.shape().iter().enumerate() {
                    self.at::<AtomicU64>(o.off + dims + 8 * i as u64)?
                        .store(d as u64, Relaxed);
                }
                imm(tag::ARR, o.off)
            }
            Val::Tup(items) => return Ok(In::Frame(InFrame::new(tag::TUP, Src::Seq(items)))),
            Val::List(items) => return Ok(In::Frame(InFrame::new(tag::LIST, Src::Seq(items)))),
            Val::Tab(m) => return Ok(In::Frame(InFrame::new(tag::TAB, Src::Map(m)))),
            Val::OTab(m) => return Ok(In::Frame(InFrame::new(tag::OTAB, Src::Map(m)))),
            _ => unreachable!("immediates were handled above"),
        }))
    }

    /// Makes the container of a finished frame; on failure releases its children.
    fn build(&self, f: InFrame<'_>) -> Result<Raw, ValError> {
        let kids = f.built;
        let n = kids.len();
        match f.kind {
            tag::TUP => {
                let o = self
                    .alloc_obj(tag::TUP, TUP_SLOTS + n * SLOT)
                    .inspect_err(|_| self.release_all(&kids))?;
                let raw = imm(tag::TUP, o.off);
                let fill = || -> Result<(), ValError> {
                    self.at::<TupHead>(o.off)?.len.store(n as u64, Relaxed);
                    for (i, k) in kids.iter().enumerate() {
                        self.put(o.off + (TUP_SLOTS + i * SLOT) as u64, *k)?;
                    }
                    Ok(())
                };
                fill().inspect_err(|_| self.release_all(&kids))?;
                Ok(raw)
            }
            tag::LIST => {
                let o = self
                    .new_list_obj(n as u64)
                    .inspect_err(|_| self.release_all(&kids))?;
                let fill = || -> Result<(), ValError> {
                    let c = self.container(o)?;
                    if let Some(b) = self.block(c, SLOT)? {
                        for (i, k) in kids.iter().enumerate() {
                            self.put(b.at(i as u64), *k)?;
                        }
                    }
                    c.len.store(n as u64, Release);
                    Ok(())
                };
                fill().inspect_err(|_| self.release_all(&kids))?;
                Ok(imm(tag::LIST, o.off))
            }
            t => {
                let Src::Map(m) = f.src else {
                    unreachable!("dict frames have a map source")
                };
                let o = self
                    .new_tab_obj(t, (n / 2) as u64)
                    .inspect_err(|_| self.release_all(&kids))?;
                let raw = imm(t, o.off);
                // A private table (not yet visible to anyone): no lock needed.
                let mut tab = match self.private_tab(o) {
                    Ok(tab) => tab,
                    Err(e) => {
                        self.release_all(&kids);
                        self.release(raw);
                        return Err(e);
                    }
                };
                for (i, pair) in kids.chunks(2).enumerate() {
                    let key = m.get_index(i).map(|(k, _)| k).expect("one pair per entry");
                    if let Err(e) = tab.append(key_hash(key), pair[0], pair[1]) {
                        self.release_all(&kids[i * 2..]);
                        self.release(raw);
                        return Err(e);
                    }
                }
                Ok(raw)
            }
        }
    }

    /// A list or tuple of `kids` (each owning a reference, which it takes; all
    /// released on failure).
    pub(super) fn seq_raw(&self, kind: u8, kids: Vec<Raw>) -> Result<Raw, ValError> {
        debug_assert!(matches!(kind, tag::LIST | tag::TUP));
        let mut f = InFrame::new(kind, Src::Seq(&[]));
        f.built = kids;
        self.build(f)
    }

    pub(crate) fn release_all(&self, rs: &[Raw]) {
        for r in rs {
            self.release(*r);
        }
    }

    /// A new list object with room for `cap` slots (len 0).
    pub(crate) fn new_list_obj(&self, cap: u64) -> Result<Obj, ValError> {
        let o = self.alloc_obj(tag::LIST, HDR + std::mem::size_of::<ContainerHead>())?;
        if cap > 0 {
            match self.new_data_block(cap, SLOT) {
                Ok(data) => self.container(o)?.data.store(data, Release),
                Err(e) => {
                    self.release(imm(tag::LIST, o.off));
                    return Err(e);
                }
            }
        }
        Ok(o)
    }

    /// Copies the value `r` (to which the caller holds a reference) out to the heap,
    /// with an explicit stack (no recursion): nesting up to `MAX_DEPTH`.
    pub(crate) fn to_val_raw(&self, r: Raw, _depth: usize) -> Result<Val, ValError> {
        if !r.is_object() {
            // An immediate: no frames, no stack.
            if let Out::Val(v) = self.out_step(r)? {
                return Ok(v);
            }
        }
        let mut stack: Vec<OutFrame> = Vec::new();
        let res = self.to_val_iter(r, &mut stack);
        // On an error, give back what the unfinished frames still hold.
        for f in &stack {
            if f.retained {
                self.release_all(&f.items);
            }
        }
        res
    }

    fn to_val_iter(&self, r: Raw, stack: &mut Vec<OutFrame>) -> Result<Val, ValError> {
        let mut done = match self.out_step(r)? {
            Out::Val(v) => return Ok(v),
            Out::Frame(f) => {
                stack.push(f);
                None
            }
        };
        loop {
            let top = stack.last_mut().expect("a frame is open");
            if let Some(v) = done.take() {
                top.out.push(v);
            }
            if top.next < top.items.len() {
                let child = top.items[top.next];
                top.next += 1;
                match self.out_step(child)? {
                    Out::Val(v) => done = Some(v),
                    Out::Frame(f) => {
                        if stack.len() >= MAX_DEPTH {
                            if f.retained {
                                self.release_all(&f.items);
                            }
                            return Err(ValError::TooDeep);
                        }
                        stack.push(f);
                    }
                }
            } else {
                let f = stack.pop().expect("top exists");
                if f.retained {
                    self.release_all(&f.items);
                }
                let v = f.finish();
                if stack.is_empty() {
                    return Ok(v);
                }
                done = Some(v);
            }
        }
    }

    /// One value: a leaf converted now, or a container to open.
    fn out_step(&self, r: Raw) -> Result<Out, ValError> {
        let (t, p) = (r.tag(), r.payload);
        if (tag::FIRST_OBJECT..=tag::LAST_OBJECT).contains(&t) {
            let o = self.obj(p)?;
            if o.tag != t {
                return Err(corrupt(format!(
                    "slot says tag {t}, object at {p:#x} is tag {}",
                    o.tag
                )));
            }
            return self.object_step(o);
        }
        immediate_val(r).map(Out::Val)
    }

    pub(crate) fn bytes_of(&self, o: Obj) -> Result<&[u8], ValError> {
        let len = self.at::<TextHead>(o.off)?.len.load(Relaxed);
        if len > o.size.saturating_sub(TEXT_BYTES as u64) {
            return Err(corrupt(format!(
                "object at {:#x}: length {len} beyond its {} bytes",
                o.off, o.size
            )));
        }
        self.bytes_at(o.off + TEXT_BYTES as u64, len)
    }

    fn object_step(&self, o: Obj) -> Result<Out, ValError> {
        Ok(Out::Val(match o.tag {
            tag::STR => Val::Str(
                String::from_utf8(self.bytes_of(o)?.to_vec())
                    .map_err(|_| corrupt("str is not UTF-8"))?,
            ),
            tag::BYTES => Val::Bytes(self.bytes_of(o)?.to_vec()),
            tag::BIGINT => Val::BigInt(BigInt::from_signed_bytes_le(self.bytes_of(o)?)),
            tag::C64 => {
                let h = self.at::<C64Obj>(o.off)?;
                Val::Complex64(Complex::new(
                    f64::from_bits(h.re.load(Relaxed)),
                    f64::from_bits(h.im.load(Relaxed)),
                ))
            }
            tag::ARR => {
                let h = self.at::<ArrHead>(o.off)?;
                let kind = ArrKind::from_u8(h.kind.load(Relaxed) as u8)
                    .ok_or_else(|| corrupt("array kind"))?;
                let len = h.len.load(Relaxed);
                len.checked_mul(kind.size() as u64)
                    .filter(|b| *b <= o.size.saturating_sub(ARR_ELEMS as u64))
                    .ok_or_else(|| corrupt("array length"))?;
                let p = self.elems_at(o.off + ARR_ELEMS as u64, len, kind.size())?;
                // SAFETY: `elems_at` checked that `len` elements of this kind lie in
                // the pool at an alignment their atomics accept.
                let flat = unsafe { arr_from_atomics(kind, p.as_ptr(), len as usize) };
                match self.arr_shape(o, h.kind.load(Relaxed), len, kind)? {
                    None => flat,
                    Some(shape) => Val::NdArr(
                        crate::NdArr::new(
                            shape,
                            match flat {
                                Val::Arr(a) => a,
                                _ => unreachable!("arr_from_atomics makes arrays"),
                            },
                        )
                        .map_err(|_| corrupt("array shape"))?,
                    ),
                }
            }
            tag::TUP => {
                // Immutable and kept alive by whoever holds the tuple: no snapshot.
                let len = self.at::<TupHead>(o.off)?.len.load(Relaxed);
                if len > o.size.saturating_sub(TUP_SLOTS as u64) / SLOT as u64 {
                    return Err(corrupt("tuple length"));
                }
                let items = (0..len)
                    .map(|i| {
                        Ok(self.read(self.slot_at(o.off + (TUP_SLOTS as u64) + i * SLOT as u64)?))
                    })
                    .collect::<Result<Vec<Raw>, ValError>>()?;
                return Ok(Out::Frame(OutFrame::new(tag::TUP, items, false)));
            }
            tag::LIST => {
                return Ok(Out::Frame(OutFrame::new(
                    tag::LIST,
                    self.list_snapshot(o)?,
                    true,
                )))
            }
            tag::PIPE => return Err(ValError::NotAValue("pipe")),
            tag::BCAST => return Err(ValError::NotAValue("broadcast")),
            t => {
                let pairs = self.tab_snapshot(o)?;
                let items = pairs.into_iter().flat_map(|(k, v)| [k, v]).collect();
                return Ok(Out::Frame(OutFrame::new(t, items, true)));
            }
        }))
    }

    /// The list's elements, each retained, read under its lock.
    pub(crate) fn list_snapshot(&self, o: Obj) -> Result<Vec<Raw>, ValError> {
        let g = Guard::lock(self, o)?;
        let len = g.head.len.load(Relaxed);
        let Some(b) = self.block(g.head, SLOT)? else {
            return Ok(Vec::new());
        };
        if len > b.cap {
            return Err(corrupt("list length beyond capacity"));
        }
        let mut out = Vec::with_capacity(len as usize);
        for i in 0..len {
            let r = self.read(self.slot_at(b.at(i))?);
            if let Err(e) = self.retain(r) {
                self.release_all(&out);
                return Err(e);
            }
            out.push(r);
        }
        Ok(out)
    }
}

/// The heap form of an immediate (not an object) value slot.
#[inline(always)]
pub(crate) fn immediate_val(r: Raw) -> Result<Val, ValError> {
    let p = r.payload;
    Ok(match r.tag() {
        tag::NONE => Val::None,
        tag::BOOL => Val::Bool(p != 0),
        tag::I8 => Val::I8(p as i8),
        tag::I16 => Val::I16(p as i16),
        tag::I32 => Val::I32(p as i32),
        tag::I64 => Val::I64(p as i64),
        tag::U8 => Val::U8(p as u8),
        tag::U16 => Val::U16(p as u16),
        tag::U32 => Val::U32(p as u32),
        tag::U64 => Val::U64(p),
        tag::F32 => Val::F32(f32::from_bits(p as u32)),
        tag::F64 => Val::F64(f64::from_bits(p)),
        tag::STR_INLINE => {
            Val::Str(String::from_utf8(inline_bytes(&r)?).map_err(|_| corrupt("str is not UTF-8"))?)
        }
        tag::BYTES_INLINE => Val::Bytes(inline_bytes(&r)?),
        tag::C32 => Val::Complex32(Complex::new(
            f32::from_bits(p as u32),
            f32::from_bits((p >> 32) as u32),
        )),
        t => return Err(corrupt(format!("unknown value tag {t}"))),
    })
}

/// The slot of a value stored in the slot itself (no object), if `v` is one.
#[inline]
pub(crate) fn immediate(v: &Val) -> Option<Raw> {
    Some(match v {
        Val::None => Raw::NONE,
        Val::Bool(b) => imm(tag::BOOL, *b as u64),
        Val::I8(x) => imm(tag::I8, *x as i64 as u64),
        Val::I16(x) => imm(tag::I16, *x as i64 as u64),
        Val::I32(x) => imm(tag::I32, *x as i64 as u64),
        Val::I64(x) => imm(tag::I64, *x as u64),
        Val::U8(x) => imm(tag::U8, *x as u64),
        Val::U16(x) => imm(tag::U16, *x as u64),
        Val::U32(x) => imm(tag::U32, *x as u64),
        Val::U64(x) => imm(tag::U64, *x),
        Val::F32(x) => imm(tag::F32, x.to_bits() as u64),
        Val::F64(x) => imm(tag::F64, x.to_bits()),
        Val::Complex32(c) => imm(
            tag::C32,
            c.re.to_bits() as u64 | (c.im.to_bits() as u64) << 32,
        ),
        Val::Str(s) if s.len() <= 8 => inline(tag::STR_INLINE, s.as_bytes()),
        Val::Bytes(b) if b.len() <= 8 => inline(tag::BYTES_INLINE, b),
        _ => return None,
    })
}

/// Whether a value has no children (copied in without a work stack).
fn is_leaf(v: &Val) -> bool {
    !matches!(v, Val::Tup(_) | Val::List(_) | Val::Tab(_) | Val::OTab(_))
}

/// Where the children of a container being copied in come from.
enum Src<'v> {
    Seq(&'v [Val]),
    Map(&'v Map),
}

/// A container being copied in: its heap children and the raw values built so far.
struct InFrame<'v> {
    kind: u8,
    src: Src<'v>,
    next: usize,
    built: Vec<Raw>,
}

impl<'v> InFrame<'v> {
    fn new(kind: u8, src: Src<'v>) -> Self {
        let n = match &src {
            Src::Seq(s) => s.len(),
            Src::Map(m) => 2 * m.len(),
        };
        InFrame {
            kind,
            src,
            next: 0,
            built: Vec::with_capacity(n),
        }
    }

    /// The next child to copy in (a dict gives key, value, key, value, ...).
    fn next_child(&mut self) -> Option<&'v Val> {
        let j = self.next;
        self.next += 1;
        match self.src {
            Src::Seq(s) => s.get(j),
            Src::Map(m) => m
                .get_index(j / 2)
                .map(|(k, v)| if j % 2 == 0 { k } else { v }),
        }
    }
}

enum In<'v> {
    Raw(Raw),
    Frame(InFrame<'v>),
}

/// A container being copied out: its children (a snapshot, retained for lists and
/// dicts) and the values made of them so far.
struct OutFrame {
    kind: u8,
    items: Vec<Raw>,
    retained: bool,
    next: usize,
    out: Vec<Val>,
}

impl OutFrame {
    fn new(kind: u8, items: Vec<Raw>, retained: bool) -> Self {
        let n = items.len();
        OutFrame {
            kind,
            items,
            retained,
            next: 0,
            out: Vec::with_capacity(n),
        }
    }

    fn finish(self) -> Val {
        match self.kind {
            tag::TUP => Val::Tup(self.out),
            tag::LIST => Val::List(self.out),
            t => {
                let mut m = Map::with_capacity(self.out.len() / 2);
                let mut it = self.out.into_iter();
                while let (Some(k), Some(v)) = (it.next(), it.next()) {
                    m.insert(k, v);
                }
                if t == tag::TAB {
                    Val::Tab(m)
                } else {
                    Val::OTab(m)
                }
            }
        }
    }
}

enum Out {
    Val(Val),
    Frame(OutFrame),
}

/// Copies `len` elements of `kind` at `p` out, each through its atomic (another
/// process may be writing them: a plain read would be a data race).
///
/// # Safety
/// `len` elements of `kind` lie at `p` inside a live mapping, aligned for the
/// atomics [`Elem::load`] uses.
unsafe fn arr_from_atomics(kind: ArrKind, p: *const u8, len: usize) -> Val {
    fn read<T: Elem>(p: *const u8, len: usize) -> Vec<T> {
        (0..len)
            // SAFETY: element `i < len` lies in the range the caller vouched for.
            .map(|i| unsafe { T::load(p.add(i * std::mem::size_of::<T>())) })
            .collect()
    }
    Val::Arr(match kind {
        ArrKind::Bool => Arr::Bool(read(p, len)),
        ArrKind::I8 => Arr::I8(read(p, len)),
        ArrKind::U8 => Arr::U8(read(p, len)),
        ArrKind::I16 => Arr::I16(read(p, len)),
        ArrKind::U16 => Arr::U16(read(p, len)),
        ArrKind::I32 => Arr::I32(read(p, len)),
        ArrKind::U32 => Arr::U32(read(p, len)),
        ArrKind::F32 => Arr::F32(read(p, len)),
        ArrKind::I64 => Arr::I64(read(p, len)),
        ArrKind::U64 => Arr::U64(read(p, len)),
        ArrKind::F64 => Arr::F64(read(p, len)),
        ArrKind::C32 => Arr::C32(read(p, len)),
        ArrKind::C64 => Arr::C64(read(p, len)),
    })
}
