//! Hashing of dict keys (the same for every process and build: it is stored in the
//! index).

use crate::val::Val;
use std::hash::{Hash, Hasher};

/// A deterministic hasher (the same in every process; std's is randomly keyed).
struct Fx(u64);

impl Hasher for Fx {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            self.add(u64::from_le_bytes(c.try_into().expect("8 bytes")));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            self.add(super::layout::le_word(rest) ^ (rest.len() as u64) << 59);
        }
    }
    fn write_u8(&mut self, i: u8) {
        self.add(i as u64);
    }
    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }
    fn write_i128(&mut self, i: i128) {
        self.add(i as u64);
        self.add((i >> 64) as u64);
    }
    fn finish(&self) -> u64 {
        // Final avalanche so the low bits (bucket numbers) depend on every input bit.
        let mut x = self.0;
        x ^= x >> 32;
        x = x.wrapping_mul(0xd6e8_feb8_6659_fd93);
        x ^ (x >> 32)
    }
}

impl Fx {
    #[inline]
    fn add(&mut self, w: u64) {
        self.0 = (self.0.rotate_left(5) ^ w).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

/// [`key_hash`] of a `str` key, without a heap [`Val`].
pub(crate) fn str_hash(s: &str) -> u64 {
    if s.len() <= 8 {
        return short_str_hash(super::layout::le_word(s.as_bytes()), s.len());
    }
    let mut h = Fx(0);
    h.write_u8(3);
    s.hash(&mut h);
    h.finish()
}

/// [`str_hash`] of a string of at most 8 bytes whose zero-padded little-endian word
/// is `w` (an inline string's payload): exactly what the generic path feeds the
/// hasher (the tag 3, the bytes as one word, std's `0xff` end of a `str`), without
/// its byte loop.
#[inline]
pub(crate) fn short_str_hash(w: u64, len: usize) -> u64 {
    debug_assert!(len <= 8);
    let mut h = Fx(0);
    h.add(3);
    match len {
        0 => {}
        8 => h.add(w),
        _ => h.add(w ^ (len as u64) << 59),
    }
    h.add(0xff);
    h.finish()
}

/// [`key_hash`] of an integer key, without a heap [`Val`].
#[inline]
pub(crate) fn int_hash(i: i128) -> u64 {
    let mut h = Fx(0);
    h.write_u8(0);
    h.write_i128(i);
    h.finish()
}

/// The hash of a key, equal for keys equal under Python semantics, in every process.
pub(crate) fn key_hash(k: &Val) -> u64 {
    let mut h = Fx(0);
    // Fast paths for the common int and str keys: exactly what `Val::hash` feeds the
    // hasher (an int: tag 0, then the value as i128; a str: tag 3, then the str),
    // without its numeric classification.
    let int = match k {
        Val::I64(x) => Some(i128::from(*x)),
        Val::I32(x) => Some(i128::from(*x)),
        Val::U64(x) => Some(i128::from(*x)),
        Val::U32(x) => Some(i128::from(*x)),
        Val::Str(s) => return str_hash(s),
        _ => None,
    };
    match int {
        Some(i) => {
            h.write_u8(0);
            h.write_i128(i);
        }
        None => k.hash(&mut h),
    }
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::{int_hash, key_hash, str_hash, Fx};
    use crate::val::Val;
    use std::hash::{Hash, Hasher};

    /// Strings of 0 to 8 bytes (every byte value at every place): the one-word
    /// path gives what the hasher's byte path gives.
    #[test]
    fn short_strings_hash_as_the_byte_path_does() {
        let bytes = |s: &str| {
            let mut h = Fx(0);
            h.write_u8(3);
            s.hash(&mut h);
            h.finish()
        };
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        for len in 0..=12usize {
            for _ in 0..200 {
                let s: String = (0..len)
                    .map(|_| {
                        seed ^= seed << 13;
                        seed ^= seed >> 7;
                        seed ^= seed << 17;
                        char::from(b' ' + (seed % 95) as u8)
                    })
                    .collect();
                assert_eq!(str_hash(&s), bytes(&s), "{s:?}");
                assert_eq!(key_hash(&Val::Str(s.clone())), bytes(&s), "{s:?}");
            }
        }
        assert_eq!(str_hash("\u{e9}t\u{e9}"), bytes("\u{e9}t\u{e9}"));
    }

    /// The int and str fast paths of `key_hash` give what `Val::hash` gives (stored hashes of
    /// existing pools, and `1 == 1.0 == True` as keys, depend on it).
    #[test]
    fn int_keys_hash_as_the_generic_path_does() {
        let generic = |v: &Val| {
            let mut h = Fx(0);
            v.hash(&mut h);
            h.finish()
        };
        for x in [0i64, 1, -1, 7, i64::MIN, i64::MAX, 1 << 40] {
            for v in [
                Val::I64(x),
                Val::I32(x as i32),
                Val::U64(x as u64),
                Val::U32(x as u32),
            ] {
                assert_eq!(key_hash(&v), generic(&v), "{v:?}");
            }
        }
        for s in ["", "a", "sensor", "exactly8", "a longer key of many bytes"] {
            let v = Val::from(s);
            assert_eq!(key_hash(&v), generic(&v), "{v:?}");
        }
        assert_eq!(key_hash(&Val::I64(1)), key_hash(&Val::F64(1.0)));
        assert_eq!(key_hash(&Val::I64(1)), key_hash(&Val::Bool(true)));
    }

    /// The builder's key hashes are `key_hash`'s (a key put by the builder is found by
    /// `get`, and one equal to it is not put twice).
    #[test]
    fn builder_key_hashes_are_key_hash() {
        for s in ["", "a", "seq", "a string longer than eight bytes", "é"] {
            assert_eq!(str_hash(s), key_hash(&Val::from(s)), "{s:?}");
        }
        for i in [0i64, 1, -1, i64::MIN, i64::MAX] {
            assert_eq!(int_hash(i128::from(i)), key_hash(&Val::I64(i)), "{i}");
        }
        assert_eq!(int_hash(u64::MAX.into()), key_hash(&Val::U64(u64::MAX)));
    }
}
