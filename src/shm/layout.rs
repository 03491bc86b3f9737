//! Byte layout of values inside a pool.
//!
//! A **slot** (16 bytes) holds one value: a tag word and a payload word. Scalars are
//! immediate; everything else is the offset of an **object**, which starts with a
//! 16-byte header `{kind: "SV" << 16 | tag, refcount, alloc_size}`.
//!
//! | object | after the header |
//! |---|---|
//! | Str, Bytes, BigInt | `len: u64`, then `len` bytes (BigInt: signed little-endian) |
//! | Complex64 | `re: f64, im: f64` |
//! | Arr | `kind: u64, len: u64`, then `len` elements; an array of 0 or 2+ dimensions: `ARR_SHAPED` and `ndim` in `kind`, the `ndim` dimensions (u64) after the elements (8-aligned) |
//! | Tup | `len: u64, _: u64`, then `len` slots |
//! | List | `lock (16)`, `len, data, dirty, _ ×3: u64`; `data` → `{cap, _, _, _}` then `cap` slots |
//! | Tab, OTab | `lock (16)`, `len, data, dirty, _ ×3`; `data` → `{cap, used, index, _}` then `cap` entries `{hash: u64, key: slot, value: slot}` in insertion order |

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// Tags of a slot and of an object header.
pub mod tag {
    /// `None`.
    pub const NONE: u8 = 0;
    /// `bool` (payload 0/1).
    pub const BOOL: u8 = 1;
    /// Signed integers, payload sign-extended to 64 bits.
    pub const I8: u8 = 2;
    /// See [`I8`].
    pub const I16: u8 = 3;
    /// See [`I8`].
    pub const I32: u8 = 4;
    /// See [`I8`].
    pub const I64: u8 = 5;
    /// Unsigned integers.
    pub const U8: u8 = 6;
    /// See [`U8`].
    pub const U16: u8 = 7;
    /// See [`U8`].
    pub const U32: u8 = 8;
    /// See [`U8`].
    pub const U64: u8 = 9;
    /// f32 bits in the low 32 bits.
    pub const F32: u8 = 10;
    /// f64 bits.
    pub const F64: u8 = 11;
    /// Two f32: re in the low 32 bits, im in the high.
    pub const C32: u8 = 12;
    /// A `str` of at most 8 bytes stored in the payload; its length in bits 8..16 of
    /// the tag word (no object, no allocation).
    pub const STR_INLINE: u8 = 13;
    /// `bytes` of at most 8, stored like [`STR_INLINE`].
    pub const BYTES_INLINE: u8 = 14;
    /// Last immediate tag.
    pub const LAST_IMMEDIATE: u8 = 14;
    /// First object tag: everything from here on is an object offset.
    pub const FIRST_OBJECT: u8 = 32;
    /// `str` object.
    pub const STR: u8 = 32;
    /// `bytes` object.
    pub const BYTES: u8 = 33;
    /// Arbitrary-precision int object.
    pub const BIGINT: u8 = 34;
    /// complex (two f64) object.
    pub const C64: u8 = 35;
    /// Typed numeric array object.
    pub const ARR: u8 = 36;
    /// `tuple` object.
    pub const TUP: u8 = 37;
    /// `list` object.
    pub const LIST: u8 = 38;
    /// `dict` object.
    pub const TAB: u8 = 39;
    /// `OrderedDict` object.
    pub const OTAB: u8 = 40;
    /// A pipe (not a value: found only in the pool's pipe directory).
    pub const PIPE: u8 = 41;
    /// A broadcast (not a value: found only in the pool's broadcast directory).
    pub const BCAST: u8 = 42;
    /// Last object tag.
    pub const LAST_OBJECT: u8 = 42;
    /// A deleted dict entry's key tag.
    pub const DELETED: u8 = 0xFF;
}

/// "SV" marker in the high half of an object's kind word.
pub const OBJ_MAGIC: u32 = 0x5356 << 16;

/// Types that may be viewed in place in shared memory that other processes write at
/// the same time: what `Pool::at` hands out references to.
///
/// # Safety
/// Implement only for `#[repr(C)]` types made of atomic integers (fields, arrays or
/// structs of them; plain padding that is never read is allowed), holding no pointer
/// or reference: then any bytes are a valid value, every access is atomic, and a
/// shared reference to one in a mapping that outlives it is sound whatever other
/// processes do.
pub(crate) unsafe trait InShared {}

// SAFETY: atomic integers.
unsafe impl InShared for AtomicU64 {}
// SAFETY: atomic integers.
unsafe impl InShared for AtomicU32 {}

/// A value slot.
#[repr(C)]
#[derive(Debug)]
pub struct Slot {
    /// Low 8 bits: the tag.
    pub tag: AtomicU64,
    /// Immediate bits or object offset.
    pub payload: AtomicU64,
}

/// The header every object starts with.
///
/// Its first word holds the kind (`OBJ_MAGIC | tag`, low 32 bits) and the reference
/// count (high 32 bits): in memory the `kind: u32, refcount: u32` pair of
/// docs/LAYOUT.md (little-endian), accessed only as the one 64-bit word, so that a
/// count can be raised only while the kind still names the object
/// ([`ObjHeader::pin`]).
#[repr(C)]
#[derive(Debug)]
pub struct ObjHeader {
    /// `kind | refcount << 32`.
    word: AtomicU64,
    /// Bytes of the allocation (what `free` needs, validated against the object).
    pub alloc_size: AtomicU64,
}

/// One reference in an [`ObjHeader`]'s word.
const ONE_REF: u64 = 1 << 32;

impl ObjHeader {
    /// The kind word (`OBJ_MAGIC | tag` in an object; 0 once freed).
    #[inline]
    pub fn kind(&self, order: Ordering) -> u32 {
        self.word.load(order) as u32
    }

    /// The reference count.
    #[inline]
    pub fn count(&self, order: Ordering) -> u32 {
        (self.word.load(order) >> 32) as u32
    }

    /// Publishes a new object of `kind` holding one reference.
    #[inline]
    pub fn publish(&self, kind: u32) {
        self.word
            .store(ONE_REF | u64::from(kind), Ordering::Release);
    }

    /// Marks the block freed (kind and count 0): a stale offset never passes
    /// `Pool::obj` again.
    #[inline]
    pub fn unpublish(&self) {
        self.word.store(0, Ordering::Release);
    }

    /// Adds one reference; returns the count before. A count at `u32::MAX` wraps to
    /// 0 (the kind half is untouched): the caller takes it back.
    #[inline]
    pub fn add_ref(&self, order: Ordering) -> u32 {
        (self.word.fetch_add(ONE_REF, order) >> 32) as u32
    }

    /// Takes one reference away; returns the count before. A count at 0 wraps to
    /// `u32::MAX` (the kind half is untouched): the caller gives it back.
    #[inline]
    pub fn sub_ref(&self, order: Ordering) -> u32 {
        (self.word.fetch_sub(ONE_REF, order) >> 32) as u32
    }

    /// Sets the count from `old` to `new` if it is `old`, the kind unchanged.
    #[inline]
    pub fn swap_count(&self, old: u32, new: u32, order: Ordering) -> bool {
        let mut w = self.word.load(Ordering::Relaxed);
        while (w >> 32) as u32 == old {
            let to = (w & 0xFFFF_FFFF) | u64::from(new) << 32;
            match self
                .word
                .compare_exchange_weak(w, to, order, Ordering::Relaxed)
            {
                Ok(_) => return true,
                Err(now) => w = now,
            }
        }
        false
    }

    /// Takes one more reference if the word still names a live object of `kind`
    /// (count at least 1): the kind and the count are compared and the count raised
    /// in one atomic step, so a block freed (kind 0) or reused as anything but an
    /// object of the same kind since the caller read its offset is never written.
    /// For readers that hold no reference to the object yet and none to a container
    /// holding it (the pool check).
    #[inline]
    pub fn pin(&self, kind: u32) -> bool {
        let mut w = self.word.load(Ordering::Relaxed);
        loop {
            let n = (w >> 32) as u32;
            if w as u32 != kind || n == 0 || n == u32::MAX {
                return false;
            }
            match self.word.compare_exchange_weak(
                w,
                w + ONE_REF,
                Ordering::Acquire,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(now) => w = now,
            }
        }
    }
}

#[cfg(not(target_endian = "little"))]
compile_error!("the object header's word is the little-endian `kind, refcount` pair");

/// The fields of a mutable container after its header.
///
/// Everything about the contents lives in the data block (see [`BlockHead`]), so one
/// store of `data` switches a container to a grown copy atomically.
#[repr(C)]
#[derive(Debug)]
pub struct ContainerHead {
    /// Serialises every operation on the container.
    pub lock: shmval_alloc::RobustLock,
    /// Live elements / entries (derived for dicts: recounted by repair).
    pub len: AtomicU64,
    /// Offset of the data block (0 = no block yet, capacity 0).
    pub data: AtomicU64,
    /// The container's version: odd while a modification is under way (or its
    /// holder died in one: the next holder repairs), the next even number once it
    /// ends. Dict lookups without the lock read it before and after.
    pub dirty: AtomicU64,
    /// A slot overwrite in progress: 0 none, else the element (list slot or dict
    /// entry's value) number + 1; `u64::MAX` while a new data block is switched in
    /// (its offset in `redo_payload`; see `Guard::log_growth`). A slot is two words, so a holder killed between
    /// them would leave a torn value; the next holder writes `redo_tag`/`redo_payload`
    /// into the slot again (idempotent) and clears this.
    pub redo_at: AtomicU64,
    /// The tag word being written (see `redo_at`).
    pub redo_tag: AtomicU64,
    /// The payload being written (see `redo_at`).
    pub redo_payload: AtomicU64,
}

/// The header of a container's data block; slots (list) or entries (dict) follow.
#[repr(C)]
#[derive(Debug)]
pub struct BlockHead {
    /// Slots or entries the block has room for.
    pub cap: AtomicU64,
    /// Dict: entries written (live + deleted). List: unused.
    pub used: AtomicU64,
    /// Dict: offset of the hash index (`u32` per bucket), 0 for small tables.
    pub index: AtomicU64,
    /// While this block is being switched in (a growth logged in the container's
    /// head): the block it replaces, freed once the switch is done (0 none).
    pub replaces: AtomicU64,
}

/// Bytes of a data block's header.
pub const BLOCK_HEAD: usize = 32;
const _: () = assert!(std::mem::size_of::<BlockHead>() == BLOCK_HEAD);

/// A dict entry.
#[repr(C)]
#[derive(Debug)]
pub struct Entry {
    /// Hash of the key.
    pub hash: AtomicU64,
    /// Key (tag DELETED when removed).
    pub key: Slot,
    /// Value.
    pub value: Slot,
}

/// A string, bytes or big integer: the header, the byte length, then the bytes at
/// [`TEXT_BYTES`] (immutable once published).
#[repr(C)]
#[derive(Debug)]
pub struct TextHead {
    /// The object header.
    pub obj: ObjHeader,
    /// Bytes that follow.
    pub len: AtomicU64,
}
/// Offset of a text object's bytes.
pub const TEXT_BYTES: usize = std::mem::size_of::<TextHead>();
const _: () = assert!(TEXT_BYTES == 24 && std::mem::offset_of!(TextHead, len) == 16);

/// A complex double.
#[repr(C)]
#[derive(Debug)]
pub struct C64Obj {
    /// The object header.
    pub obj: ObjHeader,
    /// Bits of the real part.
    pub re: AtomicU64,
    /// Bits of the imaginary part.
    pub im: AtomicU64,
}
const _: () = assert!(std::mem::size_of::<C64Obj>() == 32);

/// A numeric array: the header, the element kind, the length, then the elements at
/// [`ARR_ELEMS`] (written in place through atomics: `ShmArr::set`).
#[repr(C)]
#[derive(Debug)]
pub struct ArrHead {
    /// The object header.
    pub obj: ObjHeader,
    /// `ArrKind` of the elements.
    pub kind: AtomicU64,
    /// Elements that follow.
    pub len: AtomicU64,
}
/// Offset of an array's elements.
pub const ARR_ELEMS: usize = std::mem::size_of::<ArrHead>();

/// Bit of an array's kind word (above the element kind in its low 8 bits) set for
/// an array with a shape other than one dimension; the number of dimensions is
/// then in bits 16..24, and the dimensions (u64 each) follow the elements, at
/// [`arr_shape_off`]. The elements stay where a flat array has them.
pub const ARR_SHAPED: u64 = 1 << 8;

/// The kind word of an array of `kind` with `ndim` dimensions.
pub const fn arr_kind_word(kind: u8, ndim: usize) -> u64 {
    if ndim == 1 {
        kind as u64
    } else {
        kind as u64 | ARR_SHAPED | (ndim as u64) << 16
    }
}

/// The number of dimensions a kind word says (1 for a flat array).
pub const fn arr_ndim(word: u64) -> usize {
    if word & ARR_SHAPED == 0 {
        1
    } else {
        ((word >> 16) & 0xFF) as usize
    }
}

/// Offset, from the array object's start, of the dimensions of a shaped array of
/// `bytes` bytes of elements.
pub const fn arr_shape_off(bytes: u64) -> u64 {
    ARR_ELEMS as u64 + bytes.next_multiple_of(8)
}
const _: () = assert!(ARR_ELEMS == 32 && std::mem::offset_of!(ArrHead, len) == 24);

/// A tuple: the header, the length, then the slots at [`TUP_SLOTS`] (immutable once
/// published).
#[repr(C)]
#[derive(Debug)]
pub struct TupHead {
    /// The object header.
    pub obj: ObjHeader,
    /// Slots that follow.
    pub len: AtomicU64,
    _pad: AtomicU64,
}
/// Offset of a tuple's slots.
pub const TUP_SLOTS: usize = std::mem::size_of::<TupHead>();
const _: () = assert!(TUP_SLOTS == 32 && std::mem::offset_of!(TupHead, len) == 16);

/// Bytes of a slot.
pub const SLOT: usize = 16;
/// Bytes of an object header.
pub const HDR: usize = 16;
/// Bytes of a container's fields (header excluded).
pub const CONTAINER: usize = 64;
/// Bytes of a dict entry.
pub const ENTRY: usize = 40;

const _: () = assert!(std::mem::size_of::<Slot>() == SLOT);
const _: () = assert!(std::mem::size_of::<ObjHeader>() == HDR);
const _: () = assert!(std::mem::size_of::<ContainerHead>() == CONTAINER);
const _: () = assert!(std::mem::size_of::<Entry>() == ENTRY);

/// What shapes the bytes of values in a pool, for the pool's layout hash (see
/// `segment::boot::layout_hash`): a build that changes any of it refuses pools made
/// by another as `Incompatible`.
pub(crate) const LAYOUT_PARTS: [u64; 21] = {
    use std::mem::{align_of, offset_of, size_of};
    [
        size_of::<Slot>() as u64,
        align_of::<Slot>() as u64,
        size_of::<ObjHeader>() as u64,
        offset_of!(ObjHeader, alloc_size) as u64,
        size_of::<ContainerHead>() as u64,
        offset_of!(ContainerHead, len) as u64,
        offset_of!(ContainerHead, data) as u64,
        offset_of!(ContainerHead, redo_at) as u64,
        size_of::<BlockHead>() as u64,
        offset_of!(BlockHead, index) as u64,
        offset_of!(BlockHead, replaces) as u64,
        size_of::<Entry>() as u64,
        offset_of!(Entry, key) as u64,
        OBJ_MAGIC as u64,
        tag::LAST_IMMEDIATE as u64,
        tag::LAST_OBJECT as u64,
        tag::DELETED as u64,
        TEXT_BYTES as u64,
        ARR_ELEMS as u64,
        TUP_SLOTS as u64,
        // Arrays with a shape (their dimensions after the elements).
        ARR_SHAPED,
    ]
};

// SAFETY: each is #[repr(C)] and made of atomic integers only (the lock of a
// container head is two atomics too).
unsafe impl InShared for Slot {}
// SAFETY: as above.
unsafe impl InShared for ObjHeader {}
// SAFETY: as above.
unsafe impl InShared for ContainerHead {}
// SAFETY: as above.
unsafe impl InShared for BlockHead {}
// SAFETY: as above.
unsafe impl InShared for Entry {}
// SAFETY: as above.
unsafe impl InShared for TextHead {}
// SAFETY: as above.
unsafe impl InShared for C64Obj {}
// SAFETY: as above.
unsafe impl InShared for ArrHead {}
// SAFETY: as above.
unsafe impl InShared for TupHead {}

/// The Python type name of values of tag `t` (`"?"` for a tag no value has).
pub(crate) fn tag_name(t: u8) -> &'static str {
    match t {
        tag::NONE => "NoneType",
        tag::BOOL => "bool",
        tag::I8..=tag::U64 | tag::BIGINT => "int",
        tag::F32 | tag::F64 => "float",
        tag::C32 | tag::C64 => "complex",
        tag::STR | tag::STR_INLINE => "str",
        tag::BYTES | tag::BYTES_INLINE => "bytes",
        tag::ARR => "array",
        tag::TUP => "tuple",
        tag::LIST => "list",
        tag::TAB => "dict",
        tag::OTAB => "OrderedDict",
        tag::PIPE => "pipe",
        tag::BCAST => "broadcast",
        _ => "?",
    }
}

/// The zero-padded little-endian word of at most 8 bytes, built without a `memcpy`
/// call (a call for a few bytes cost a fifth of building a small table).
#[inline]
pub(crate) fn le_word(b: &[u8]) -> u64 {
    debug_assert!(b.len() <= 8);
    let n = b.len();
    // Overlapping loads (no loop, no call): bytes read twice land in the same place.
    if n >= 4 {
        let n = n.min(8);
        let lo = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        let hi = u32::from_le_bytes([b[n - 4], b[n - 3], b[n - 2], b[n - 1]]);
        u64::from(lo) | u64::from(hi) << (8 * (n - 4))
    } else if n > 0 {
        u64::from(b[0])
            | u64::from(b[n / 2]) << (8 * (n / 2))
            | u64::from(b[n - 1]) << (8 * (n - 1))
    } else {
        0
    }
}

#[cfg(test)]
mod le_word_tests {
    use super::le_word;

    /// `le_word` is the zero-padded little-endian word: stored inline values and the
    /// key hashes (kept in pools) depend on it not changing.
    #[test]
    fn le_word_is_the_zero_padded_little_endian_word() {
        let bytes: Vec<u8> = (1..=8u32).map(|i| (i * 37 + 5) as u8).collect();
        for n in 0..=8 {
            let mut p = [0u8; 8];
            p[..n].copy_from_slice(&bytes[..n]);
            assert_eq!(le_word(&bytes[..n]), u64::from_le_bytes(p), "{n} bytes");
        }
    }
}
