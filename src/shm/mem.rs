//! Validated access to objects in a pool, allocation, reference counting.

use super::layout::{
    tag, BlockHead, ContainerHead, Entry, InShared, ObjHeader, Slot, TupHead, BLOCK_HEAD,
    CONTAINER, ENTRY, HDR, OBJ_MAGIC, SLOT, TUP_SLOTS,
};
use super::ValError;
use crate::Pool;
use shmval_alloc::Offset;
use std::alloc::Layout;
use std::ptr::NonNull;
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};

/// A value as stored in a slot: `(tag, payload)`. For object tags the payload is an
/// offset and the pair *owns one reference* wherever it is held by Rust code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
///
/// Two whole words, like the slot it comes from: the tag word (tag in the low byte,
/// the length of an inline str/bytes in the next, the rest zero) and the payload. A
/// pair built and then read back is stored and loaded a word at a time, which the
/// CPU forwards from store to load (a byte-wise layout made the tag word a 2-byte
/// load of two 1-byte stores, which it cannot forward: a stall per value).
pub(crate) struct Raw {
    w: u64,
    pub payload: u64,
}

impl Raw {
    #[inline]
    pub(crate) const fn new(tag: u8, len: u8, payload: u64) -> Raw {
        Raw {
            w: tag as u64 | (len as u64) << 8,
            payload,
        }
    }

    /// The pair of a slot's two words (the tag word as stored: bits above 16 are
    /// dropped, as a reader of the low two bytes would).
    #[inline]
    pub(crate) const fn from_words(tag_word: u64, payload: u64) -> Raw {
        Raw {
            w: tag_word & 0xFFFF,
            payload,
        }
    }

    /// The value's tag.
    #[inline]
    pub(crate) const fn tag(self) -> u8 {
        self.w as u8
    }

    /// Length of an inline str/bytes (bits 8..16 of the tag word), else 0.
    #[inline]
    pub(crate) const fn len(self) -> u8 {
        (self.w >> 8) as u8
    }

    pub(crate) const NONE: Raw = Raw::new(tag::NONE, 0, 0);

    /// A copy of `*r` read field by field. A pair written just before with one
    /// store per field (as building a handle does) and then copied whole is read
    /// by one 16-byte load the CPU cannot forward from those stores: the load waits
    /// for the store buffer to drain, and behind a store to a line another core
    /// holds that takes hundreds of cycles. Volatile reads keep the loads apart
    /// (the compiler merges plain ones).
    #[inline]
    pub(crate) fn read_fields(r: &Raw) -> Raw {
        // SAFETY: reads of initialized fields through a valid reference.
        unsafe {
            Raw {
                w: std::ptr::read_volatile(&r.w),
                payload: std::ptr::read_volatile(&r.payload),
            }
        }
    }

    /// The slot's tag word: tag in the low byte, length in the next.
    #[inline]
    pub(crate) const fn tag_word(self) -> u64 {
        self.w
    }

    #[inline]
    pub(crate) const fn is_object(self) -> bool {
        self.tag() >= tag::FIRST_OBJECT
    }
}

/// A validated object: where it is and what it is.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Obj {
    pub off: u64,
    pub tag: u8,
    pub size: u64,
}

/// A container's data block, validated: it lies in the arena with room for `cap`
/// elements of `elem` bytes after its header. Made only by [`Pool::block_at`].
#[derive(Clone, Copy)]
pub(crate) struct Block<'p> {
    pub off: u64,
    pub cap: u64,
    pub elem: u64,
    pub head: &'p BlockHead,
    /// Where the block is mapped (its whole range was checked to lie in the arena).
    ptr: NonNull<u8>,
}

impl<'p> Block<'p> {
    /// The first `n` entries of a dict's data block (at most its capacity), as one
    /// slice: validated once for a loop over them.
    #[inline]
    pub(crate) fn entries(self, n: u64) -> Result<&'p [Entry], ValError> {
        if self.elem != ENTRY as u64 {
            return Err(corrupt_static("entries of a block that is not a dict's"));
        }
        // SAFETY: the block's whole range, `cap` elements of `elem` (= ENTRY) bytes
        // after its head, lies in the arena (checked when `self` was made); the head
        // is 8-aligned and BLOCK_HEAD and ENTRY are multiples of 8; entries are
        // atomics only, so any bytes are valid entries.
        Ok(unsafe {
            std::slice::from_raw_parts(
                self.ptr.as_ptr().add(BLOCK_HEAD) as *const Entry,
                n.min(self.cap) as usize,
            )
        })
    }

    /// The first `n` slots of a list's data block (at most its capacity), as one
    /// slice.
    #[inline]
    pub(crate) fn slots(self, n: u64) -> Result<&'p [Slot], ValError> {
        if self.elem != SLOT as u64 {
            return Err(corrupt_static("slots of a block that is not a list's"));
        }
        // SAFETY: as in `entries`, for SLOT-byte slots (a multiple of 8).
        Ok(unsafe {
            std::slice::from_raw_parts(
                self.ptr.as_ptr().add(BLOCK_HEAD) as *const Slot,
                n.min(self.cap) as usize,
            )
        })
    }

    /// Offset of element `i` (`i < cap`).
    pub(crate) fn at(&self, i: u64) -> u64 {
        debug_assert!(i < self.cap, "element {i} of {}", self.cap);
        self.off + BLOCK_HEAD as u64 + i * self.elem
    }

    /// Bytes of a block of `cap` elements of `elem` bytes.
    pub(crate) fn bytes(cap: u64, elem: u64) -> u64 {
        BLOCK_HEAD as u64 + cap * elem
    }
}

/// An object this thread has just allocated, which nobody else can see yet: its
/// whole range was resolved once, so its parts are addressed without looking again.
#[derive(Clone, Copy)]
pub(crate) struct Fresh<'p> {
    pub obj: Obj,
    /// Where the object is mapped (its whole `obj.size` bytes lie in the arena).
    ptr: NonNull<u8>,
    _pool: std::marker::PhantomData<&'p Pool>,
}

impl<'p> Fresh<'p> {
    /// The `T` at `rel` bytes into the object (a fixed place in its layout: the
    /// check folds away for a constant `rel`).
    #[inline]
    pub(crate) fn at<T: InShared>(self, rel: usize) -> &'p T {
        assert!(
            rel % std::mem::align_of::<T>() == 0
                && rel + std::mem::size_of::<T>() <= self.obj.size as usize,
            "a part of a fresh object outside it"
        );
        // SAFETY: inside the object's range (asserted), which lies in the arena;
        // aligned (objects are 16-aligned, `rel` a multiple of T's alignment); `T` is
        // made of atomics only.
        unsafe { &*(self.ptr.as_ptr().add(rel) as *const T) }
    }

    /// The data block of `cap` elements of `elem` bytes at `rel` bytes into the
    /// object (a container's block embedded in its allocation).
    #[inline]
    pub(crate) fn block(self, rel: usize, cap: u64, elem: usize) -> Block<'p> {
        let bytes = Block::bytes(cap, elem as u64) as usize;
        assert!(
            rel % 8 == 0 && rel + bytes <= self.obj.size as usize,
            "a block of a fresh object outside it"
        );
        Block {
            off: self.obj.off + rel as u64,
            cap,
            elem: elem as u64,
            head: self.at(rel),
            // SAFETY: inside the object (asserted above).
            ptr: unsafe { NonNull::new_unchecked(self.ptr.as_ptr().add(rel)) },
        }
    }
}

/// Limit on nesting for every traversal of shared values.
pub(crate) const MAX_DEPTH: usize = 1000;

pub(crate) fn corrupt(what: impl Into<String>) -> ValError {
    ValError::Corrupt { what: what.into() }
}

// The errors of the validations on every access, out of line: the checks inline
// to a few compares, the message is formatted only when one fails.
#[cold]
#[inline(never)]
fn corrupt_static(what: &'static str) -> ValError {
    corrupt(what)
}

#[cold]
#[inline(never)]
fn outside(off: u64) -> ValError {
    corrupt(format!("offset {off:#x} outside the pool"))
}

#[cold]
#[inline(never)]
fn no_object(off: u64, kind: u32) -> ValError {
    corrupt(format!("no object at {off:#x} (kind word {kind:#x})"))
}

#[cold]
#[inline(never)]
fn bad_object_size(off: u64, size: u64) -> ValError {
    corrupt(format!("object at {off:#x} claims {size} bytes"))
}

#[cold]
#[inline(never)]
fn block_outside(off: u64, cap: u64) -> ValError {
    corrupt(format!("data block at {off:#x} of {cap} outside the pool"))
}

impl Pool {
    /// The object at `off`, after checking that its header lies in the arena, carries
    /// the object magic and a known tag, and that its recorded size is plausible.
    #[inline]
    pub(crate) fn obj(&self, off: u64) -> Result<Obj, ValError> {
        let h = self.header_at(off)?;
        let kind = h.kind(Acquire);
        let t = kind as u8;
        if kind & 0xFFFF_0000 != OBJ_MAGIC
            || kind & 0xFF00 != 0
            || !(tag::FIRST_OBJECT..=tag::LAST_OBJECT).contains(&t)
        {
            return Err(no_object(off, kind));
        }
        let size = h.alloc_size.load(Relaxed);
        if size < HDR as u64
            || self
                .resolve(Offset::new(off).expect("checked"), size as usize)
                .is_none()
        {
            return Err(bad_object_size(off, size));
        }
        Ok(Obj { off, tag: t, size })
    }

    #[inline]
    pub(crate) fn header_at(&self, off: u64) -> Result<&ObjHeader, ValError> {
        self.at::<ObjHeader>(off)
    }

    /// A reference to a `T` (made of atomics: [`InShared`]) at `off`, bounds- and
    /// alignment-checked.
    #[inline]
    pub(crate) fn at<T: InShared>(&self, off: u64) -> Result<&T, ValError> {
        let Some(p) = Offset::new(off)
            .and_then(|o| self.resolve(o, std::mem::size_of::<T>()))
            .filter(|p| p.as_ptr() as usize % std::mem::align_of::<T>() == 0)
        else {
            return Err(outside(off));
        };
        // SAFETY: in bounds and aligned (checked); `T: InShared` is made of atomics
        // only, so any bytes are a valid value and sharing is sound.
        Ok(unsafe { &*(p.as_ptr() as *const T) })
    }

    #[inline]
    pub(crate) fn slot_at(&self, off: u64) -> Result<&Slot, ValError> {
        self.at::<Slot>(off)
    }

    #[inline]
    pub(crate) fn container(&self, o: Obj) -> Result<&ContainerHead, ValError> {
        if o.size < (HDR + CONTAINER) as u64 {
            return Err(corrupt_static("container too small"));
        }
        self.at::<ContainerHead>(o.off + HDR as u64)
    }

    /// The current data block of a container (`None`: none yet), validated.
    #[inline]
    pub(crate) fn block(
        &self,
        c: &ContainerHead,
        elem: usize,
    ) -> Result<Option<Block<'_>>, ValError> {
        match c.data.load(Acquire) {
            0 => Ok(None),
            off => self.block_at(off, elem).map(Some),
        }
    }

    /// The data block at `off` of `elem`-byte elements, validated: its header is
    /// aligned and its whole range (for the capacity it states) lies in the arena.
    #[inline]
    pub(crate) fn block_at(&self, off: u64, elem: usize) -> Result<Block<'_>, ValError> {
        let head = self.at::<BlockHead>(off)?;
        let cap = head.cap.load(Relaxed);
        let Some(ptr) = cap
            .checked_mul(elem as u64)
            .and_then(|b| b.checked_add(BLOCK_HEAD as u64))
            .and_then(|bytes| Offset::new(off).and_then(|o| self.resolve(o, bytes as usize)))
        else {
            return Err(block_outside(off, cap));
        };
        Ok(Block {
            off,
            cap,
            elem: elem as u64,
            head,
            ptr,
        })
    }

    /// A new data block for `cap` elements (header written, contents not zeroed).
    pub(crate) fn new_data_block(&self, cap: u64, elem: usize) -> Result<u64, ValError> {
        let off = self.alloc_raw_block(Block::bytes(cap, elem as u64))?;
        let h = self.at::<BlockHead>(off)?;
        h.cap.store(cap, Relaxed);
        h.used.store(0, Relaxed);
        h.index.store(0, Relaxed);
        Ok(off)
    }

    /// Frees a data block of container `owner` (and a dict block's index). A block
    /// embedded in its owner's allocation (see [`Pool::embedded_block`]) goes with
    /// the owner.
    pub(crate) fn free_data_block(&self, owner: Obj, b: Block<'_>) {
        let index = b.head.index.load(Relaxed);
        if b.elem == ENTRY as u64 && index != 0 {
            self.free_block(index, super::dict::index_bytes(b.cap));
        }
        let embedded =
            b.off == Self::embedded_block(owner) && owner.size > (HDR + CONTAINER) as u64;
        if !embedded {
            self.free_block(b.off, Block::bytes(b.cap, b.elem));
        }
    }

    /// Where a container's embedded first block sits: right after its head, inside
    /// the container's own allocation. Only a container whose allocation is larger
    /// than its head has one (a separate block may well start right after a
    /// head-only allocation).
    pub(crate) fn embedded_block(owner: Obj) -> u64 {
        owner.off + (HDR + CONTAINER) as u64
    }

    #[inline]
    pub(crate) fn entry_in<'b>(&self, b: Block<'b>, i: u64) -> Result<&'b Entry, ValError> {
        if i >= b.cap || b.elem != ENTRY as u64 {
            return Err(corrupt_static("entry beyond the block"));
        }
        // SAFETY: the block's whole range lies in the arena (checked when `b` was
        // made) and `i < cap`; the header is 8-aligned (checked) and BLOCK_HEAD and
        // ENTRY are multiples of 8, so the entry is too; entries are atomics only.
        Ok(unsafe { &*(b.ptr.as_ptr().add(BLOCK_HEAD + i as usize * ENTRY) as *const Entry) })
    }

    /// `n` 64-bit words at `off` (a dict's index: written by lock holders only, read
    /// through atomics), checked for size overflow, bounds and 8-byte alignment: an
    /// offset read from shared memory may be anything.
    pub(crate) fn words_at(
        &self,
        off: u64,
        n: u64,
    ) -> Result<&[std::sync::atomic::AtomicU64], ValError> {
        let p = n
            .checked_mul(8)
            .and_then(|bytes| Offset::new(off).and_then(|o| self.resolve(o, bytes as usize)))
            .filter(|p| {
                p.as_ptr() as usize % std::mem::align_of::<std::sync::atomic::AtomicU64>() == 0
            })
            .ok_or_else(|| {
                corrupt(format!(
                    "{n} words at {off:#x}: outside the pool or misaligned"
                ))
            })?;
        // SAFETY: in bounds and 8-aligned (checked); AtomicU64 has no invalid bit
        // patterns and is shared through atomic operations only.
        Ok(unsafe {
            std::slice::from_raw_parts(
                p.as_ptr() as *const std::sync::atomic::AtomicU64,
                n as usize,
            )
        })
    }

    /// Where the `n` elements of `elem` bytes (a power of two up to 8, or 16 for
    /// complex doubles, each read as atomics of up to 8 bytes) at `off` are, checked
    /// for size overflow, bounds and alignment — a pointer, never a reference: array
    /// elements may be written by another process at any time (`ShmArr::set`), so
    /// they are only ever accessed through atomics.
    pub(crate) fn elems_at(&self, off: u64, n: u64, elem: usize) -> Result<NonNull<u8>, ValError> {
        let align = elem.min(8);
        n.checked_mul(elem as u64)
            .and_then(|bytes| Offset::new(off).and_then(|o| self.resolve(o, bytes as usize)))
            .filter(|p| p.as_ptr() as usize % align == 0)
            .ok_or_else(|| {
                corrupt(format!(
                    "{n} elements at {off:#x}: outside the pool or misaligned"
                ))
            })
    }

    /// `len` bytes at `off` of an immutable, published object (strings, bytes, big
    /// integers: never written again once published).
    pub(crate) fn bytes_at(&self, off: u64, len: u64) -> Result<&[u8], ValError> {
        let p = Offset::new(off)
            .and_then(|o| self.resolve(o, len as usize))
            .ok_or_else(|| corrupt(format!("{len} bytes at {off:#x} outside the pool")))?;
        // SAFETY: in bounds; the bytes of a published Str/Bytes/BigInt/Arr are never
        // written again (immutable once published), so reading them is race-free.
        Ok(unsafe { std::slice::from_raw_parts(p.as_ptr(), len as usize) })
    }

    #[inline]
    pub(crate) fn read(&self, s: &Slot) -> Raw {
        Raw::from_words(s.tag.load(Acquire), s.payload.load(Acquire))
    }

    /// Writes a slot nobody else reads yet, or one whose old value a crash cannot
    /// expose half overwritten (two stores: see `Guard::overwrite` for live slots).
    #[inline]
    pub(crate) fn write(&self, s: &Slot, r: Raw) {
        s.payload.store(r.payload, Relaxed);
        s.tag.store(r.tag_word(), Release);
    }

    fn obj_layout(size: u64) -> Layout {
        Layout::from_size_align(size as usize, 16).expect("object sizes are small multiples of 16")
    }

    /// Allocates an object of `size` bytes with refcount 1, its first `zeroed` bytes
    /// cleared (recycled memory must not leak old lengths or offsets into fields the
    /// caller does not write itself).
    pub(crate) fn alloc_obj_zeroed(
        &self,
        t: u8,
        size: usize,
        zeroed: usize,
    ) -> Result<Obj, ValError> {
        self.alloc_obj_fresh(t, size, zeroed).map(|f| f.obj)
    }

    /// [`alloc_obj_zeroed`](Self::alloc_obj_zeroed), with the object's mapping kept
    /// to address its parts.
    pub(crate) fn alloc_obj_fresh(
        &self,
        t: u8,
        size: usize,
        zeroed: usize,
    ) -> Result<Fresh<'_>, ValError> {
        let size = size.next_multiple_of(16) as u64;
        let off = self.alloc_own(Self::obj_layout(size))?.get();
        let p = self
            .resolve(Offset::new(off).expect("non-zero"), size as usize)
            .ok_or_else(|| corrupt("fresh object"))?;
        // SAFETY: a fresh block of `size` bytes, ours alone until published.
        unsafe { std::ptr::write_bytes(p.as_ptr(), 0, zeroed.min(size as usize)) };
        let f = Fresh {
            obj: Obj { off, tag: t, size },
            ptr: p,
            _pool: std::marker::PhantomData,
        };
        let h = f.at::<ObjHeader>(0);
        h.alloc_size.store(size, Relaxed);
        h.publish(OBJ_MAGIC | u32::from(t));
        Ok(f)
    }

    /// An object whose every byte the caller writes (or that is all zero).
    pub(crate) fn alloc_obj(&self, t: u8, size: usize) -> Result<Obj, ValError> {
        self.alloc_obj_zeroed(t, size, size)
    }

    /// A data block whose contents the protocol never reads before writing.
    pub(crate) fn alloc_raw_block(&self, size: u64) -> Result<u64, ValError> {
        let off = self
            .alloc_own(Self::obj_layout(size.max(16).next_multiple_of(16)))?
            .get();
        fail_point!("shm.block.allocated");
        Ok(off)
    }

    /// Zeroes `size` bytes of the block at `off` (the caller's alone).
    pub(crate) fn zero_block(&self, off: u64, size: u64) -> Result<(), ValError> {
        let p = Offset::new(off)
            .and_then(|o| self.resolve(o, size as usize))
            .ok_or_else(|| corrupt("fresh block"))?;
        // SAFETY: `size` bytes inside the mapping, the caller's alone.
        unsafe { std::ptr::write_bytes(p.as_ptr(), 0, size as usize) };
        Ok(())
    }

    /// A raw block (not an object: container data), zeroed.
    pub(crate) fn alloc_block(&self, size: u64) -> Result<u64, ValError> {
        let off = self
            .alloc_own(Self::obj_layout(size.max(16).next_multiple_of(16)))?
            .get();
        let p = self
            .resolve(Offset::new(off).expect("non-zero"), size as usize)
            .ok_or_else(|| corrupt("fresh block"))?;
        // SAFETY: a fresh block of `size` bytes, ours alone until published.
        unsafe { std::ptr::write_bytes(p.as_ptr(), 0, size as usize) };
        Ok(off)
    }

    pub(crate) fn free_block(&self, off: u64, size: u64) {
        if let Some(o) = Offset::new(off) {
            // SAFETY: callers pass a block they own, with the size it was allocated with.
            let _ =
                unsafe { self.free_own(o, Self::obj_layout(size.max(16).next_multiple_of(16))) };
        }
    }

    /// Takes one more reference to `r` (nothing for immediates).
    #[inline]
    pub(crate) fn retain(&self, r: Raw) -> Result<(), ValError> {
        if r.is_object() {
            return self.retain_object(r);
        }
        Ok(())
    }

    #[inline(never)]
    fn retain_object(&self, r: Raw) -> Result<(), ValError> {
        let h = self.header_at(self.obj(r.payload)?.off)?;
        if h.add_ref(Relaxed) == u32::MAX {
            h.sub_ref(Relaxed);
            return Err(corrupt("reference count overflow"));
        }
        Ok(())
    }

    /// Calls `f` with the offset of each block `o` owns besides its own: a
    /// container's data block (unless embedded) and a dict's index, and the block a
    /// logged growth is switching from or to.
    pub(crate) fn data_blocks(&self, o: Obj, f: &mut dyn FnMut(u64)) {
        let elem = match o.tag {
            tag::LIST => SLOT,
            tag::TAB | tag::OTAB => ENTRY,
            _ => return,
        };
        let Ok(c) = self.container(o) else { return };
        let own = |b: Block<'_>, f: &mut dyn FnMut(u64)| {
            if b.off != Self::embedded_block(o) || o.size <= (HDR + CONTAINER) as u64 {
                f(b.off);
            }
            let index = b.head.index.load(Relaxed);
            if elem == ENTRY && index != 0 {
                f(index);
            }
        };
        if let Ok(Some(b)) = self.block(c, elem) {
            own(b, f);
        }
        // A growth under way (its holder may have died): the new block and the one
        // it replaces are the container's too until the next holder ends it.
        if c.redo_at.load(Acquire) == super::guard::GROWING {
            if let Ok(nb) = self.block_at(c.redo_payload.load(Relaxed), elem) {
                let old = nb.head.replaces.load(Relaxed);
                own(nb, f);
                if let Ok(ob) = self.block_at(old, elem) {
                    own(ob, f);
                }
            }
        }
    }

    /// Calls `f` with the offset of each object `o` holds a reference to (a value
    /// held twice, twice).
    pub(crate) fn each_child(&self, o: Obj, f: &mut dyn FnMut(u64)) -> Result<(), ValError> {
        let mut push = |s: &Slot| {
            let r = self.read(s);
            if r.is_object() {
                f(r.payload);
            }
        };
        match o.tag {
            tag::TUP => {
                let len = self.at::<TupHead>(o.off)?.len.load(Relaxed);
                let room = o.size.saturating_sub(TUP_SLOTS as u64) / SLOT as u64;
                for i in 0..len.min(room) {
                    push(self.slot_at(o.off + TUP_SLOTS as u64 + i * SLOT as u64)?);
                }
            }
            tag::LIST | tag::TAB | tag::OTAB => {
                return self.container_children(o, self.container(o)?, f)
            }
            tag::PIPE => crate::pipe::values_held(self, o, &mut |r| {
                if r.is_object() {
                    f(r.payload);
                }
            })?,
            tag::BCAST => crate::pipe::broadcast_values_held(self, o, &mut |r| {
                if r.is_object() {
                    f(r.payload);
                }
            })?,
            _ => {}
        }
        Ok(())
    }

    /// [`each_child`](Self::each_child) of a list or dict whose head `c` is read.
    fn container_children(
        &self,
        o: Obj,
        c: &ContainerHead,
        f: &mut dyn FnMut(u64),
    ) -> Result<(), ValError> {
        let mut push = |r: Raw| {
            if r.is_object() {
                f(r.payload);
            }
        };
        if o.tag == tag::LIST {
            let Some(b) = self.block(c, SLOT)? else {
                return Ok(());
            };
            for i in 0..c.len.load(Relaxed).min(b.cap) {
                push(self.read(self.slot_at(b.at(i))?));
            }
        } else {
            let Some(b) = self.block(c, ENTRY)? else {
                return Ok(());
            };
            for e in b.entries(b.head.used.load(Relaxed))? {
                let k = self.read(&e.key);
                if k.tag() != tag::DELETED {
                    push(k);
                    push(self.read(&e.value));
                }
            }
        }
        Ok(())
    }
}
