//! Python equality and hashing for [`Val`]: what makes two values the same key.
//!
//! Numbers compare by value across types (`True == 1 == 1.0 == 1+0j`, an `int` equals
//! a `float` only when the float is exactly that integer), NaN equals nothing, `list`
//! never equals `tuple`, `dict` equality ignores order, `OrderedDict` equality between
//! two ordered dicts does not. Equal values hash equally: integral numbers hash as
//! their integer value whatever their type.

use super::heap::{Arr, Val};
use num_bigint::BigInt;
use std::hash::{Hash, Hasher};

/// A number reduced to the form comparisons and hashing need.
#[derive(Debug, Clone)]
enum Num {
    Int(i128),
    Big(BigInt),
    Float(f64),
    Complex(f64, f64),
}

fn num(v: &Val) -> Option<Num> {
    Some(match v {
        Val::Bool(b) => Num::Int(*b as i128),
        Val::I8(x) => Num::Int(*x as i128),
        Val::I16(x) => Num::Int(*x as i128),
        Val::I32(x) => Num::Int(*x as i128),
        Val::I64(x) => Num::Int(*x as i128),
        Val::U8(x) => Num::Int(*x as i128),
        Val::U16(x) => Num::Int(*x as i128),
        Val::U32(x) => Num::Int(*x as i128),
        Val::U64(x) => Num::Int(*x as i128),
        Val::BigInt(b) => match i128::try_from(b) {
            Ok(i) => Num::Int(i),
            Err(_) => Num::Big(b.clone()),
        },
        Val::F32(f) => real(*f as f64),
        Val::F64(f) => real(*f),
        Val::Complex32(c) if c.im == 0.0 => real(c.re as f64),
        Val::Complex64(c) if c.im == 0.0 => real(c.re),
        Val::Complex32(c) => Num::Complex(c.re as f64, c.im as f64),
        Val::Complex64(c) => Num::Complex(c.re, c.im),
        _ => return None,
    })
}

/// A real number, integral floats turned into integers.
fn real(f: f64) -> Num {
    if f.is_finite() && f.fract() == 0.0 {
        if f.abs() < 1e38 {
            return Num::Int(f as i128);
        }
        return Num::Big(float_to_bigint(f));
    }
    Num::Float(f)
}

/// The exact integer value of an integral, finite float.
fn float_to_bigint(f: f64) -> BigInt {
    let bits = f.to_bits();
    let sign = if bits >> 63 == 1 { -1 } else { 1 };
    let exp = ((bits >> 52) & 0x7FF) as i64 - 1075;
    let mant = if (bits >> 52) & 0x7FF == 0 {
        (bits & ((1 << 52) - 1)) << 1
    } else {
        (bits & ((1 << 52) - 1)) | (1 << 52)
    };
    let m = BigInt::from(mant) * sign;
    if exp >= 0 {
        m << exp as usize
    } else {
        m >> (-exp) as usize
    }
}

fn num_eq(a: &Num, b: &Num) -> bool {
    match (a, b) {
        (Num::Int(x), Num::Int(y)) => x == y,
        (Num::Big(x), Num::Big(y)) => x == y,
        (Num::Float(x), Num::Float(y)) => x == y,
        (Num::Complex(a, b), Num::Complex(c, d)) => a == c && b == d,
        _ => false, // integral values are always Int/Big, others never are
    }
}

fn map_eq_unordered(a: &super::heap::Map, b: &super::heap::Map) -> bool {
    a.len() == b.len() && a.iter().all(|(k, v)| b.get(k).is_some_and(|w| v == w))
}

fn arr_eq(a: &Arr, b: &Arr) -> bool {
    a.len() == b.len() && (0..a.len()).all(|i| a.get(i) == b.get(i))
}

impl PartialEq for Val {
    fn eq(&self, other: &Val) -> bool {
        if let (Some(a), Some(b)) = (num(self), num(other)) {
            return num_eq(&a, &b);
        }
        match (self, other) {
            (Val::None, Val::None) => true,
            (Val::Str(a), Val::Str(b)) => a == b,
            (Val::Bytes(a), Val::Bytes(b)) => a == b,
            (Val::List(a), Val::List(b)) | (Val::Tup(a), Val::Tup(b)) => a == b,
            (Val::OTab(a), Val::OTab(b)) => {
                a.len() == b.len()
                    && a.iter()
                        .zip(b.iter())
                        .all(|(x, y)| x.0 == y.0 && x.1 == y.1)
            }
            (Val::Tab(a) | Val::OTab(a), Val::Tab(b) | Val::OTab(b)) => map_eq_unordered(a, b),
            (Val::Arr(a), Val::Arr(b)) => arr_eq(a, b),
            (Val::NdArr(a), Val::NdArr(b)) => a.shape() == b.shape() && arr_eq(a.data(), b.data()),
            _ => false,
        }
    }
}

/// Reflexive except for NaN (and containers holding NaN), as in Python; hash maps
/// tolerate that: a NaN key is inserted but never found.
impl Eq for Val {}

impl Hash for Val {
    fn hash<H: Hasher>(&self, h: &mut H) {
        if let Some(n) = num(self) {
            match n {
                Num::Int(i) => {
                    0u8.hash(h);
                    i.hash(h);
                }
                Num::Big(b) => {
                    0u8.hash(h);
                    b.hash(h);
                }
                Num::Float(f) => {
                    1u8.hash(h);
                    f.to_bits().hash(h);
                }
                Num::Complex(re, im) => {
                    2u8.hash(h);
                    (re + 0.0).to_bits().hash(h); // -0.0 and 0.0 are equal
                    (im + 0.0).to_bits().hash(h);
                }
            }
            return;
        }
        match self {
            Val::None => 6u8.hash(h),
            Val::Str(s) => {
                3u8.hash(h);
                s.hash(h);
            }
            Val::Bytes(b) => {
                4u8.hash(h);
                b.hash(h);
            }
            Val::Tup(items) => {
                5u8.hash(h);
                items.len().hash(h);
                items.iter().for_each(|v| v.hash(h));
            }
            // Unhashable: never used as keys (insert refuses them).
            other => {
                7u8.hash(h);
                other.type_name().hash(h);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::val::heap::Complex;
    use std::collections::hash_map::DefaultHasher;

    fn h(v: &Val) -> u64 {
        let mut s = DefaultHasher::new();
        v.hash(&mut s);
        s.finish()
    }

    #[test]
    fn python_key_semantics() {
        let one = [
            Val::I64(1),
            Val::F64(1.0),
            Val::Bool(true),
            Val::U8(1),
            Val::F32(1.0),
            Val::BigInt(1.into()),
            Val::Complex64(Complex::new(1.0, 0.0)),
        ];
        for a in &one {
            for b in &one {
                assert_eq!(a, b);
                assert_eq!(h(a), h(b), "{a:?} {b:?}");
            }
        }
        assert_ne!(Val::I64(1), Val::Str("1".into()));
        assert_ne!(Val::F64(1.5), Val::I64(1));
        assert_ne!(Val::F64(f64::NAN), Val::F64(f64::NAN));
        assert_ne!(Val::List(vec![Val::I64(1)]), Val::Tup(vec![Val::I64(1)]));
        let big = Val::F64(1e40);
        let bigint: BigInt = "10000000000000000303786028427003666890752".parse().unwrap();
        assert_eq!(big, Val::BigInt(bigint.clone()));
        assert_eq!(h(&big), h(&Val::BigInt(bigint)));
        let mut t = Val::tab();
        t.insert(1, "a").unwrap();
        assert_eq!(t.insert(1.0, "b").unwrap(), Some(Val::from("a")));
        assert_eq!(t.insert(true, "c").unwrap(), Some(Val::from("b")));
        assert!(t.insert(Val::List(vec![]), 1).is_err());
        t.insert(f64::NAN, 1).unwrap();
        t.insert(f64::NAN, 2).unwrap();
        assert_eq!(t.get(&Val::F64(f64::NAN)), None);
        if let Val::Tab(m) = &t {
            assert_eq!(m.len(), 3, "1 and two distinct NaN keys");
        }
    }
}
