//! `serde` for [`Val`]. Mapping (what JSON sees):
//!
//! | Val | serde | JSON |
//! |---|---|---|
//! | None | unit | `null` |
//! | Bool, ints, floats | bool, i64/u64/f64 | number (NaN/inf: `null`) |
//! | BigInt | i64/u64 if it fits, else its decimal string | number or string |
//! | Complex | `(re, im)` tuple | `[re, im]` |
//! | Str / Bytes | str / bytes | string / array of numbers |
//! | Arr, List, Tup | seq | array |
//! | NdArr | nested seqs (NumPy's `tolist()`; 0 dimensions: the element) | nested arrays |
//! | Tab, OTab | map | object (non-string keys are refused by serde_json) |
//!
//! Deserializing gives None, Bool, I64 (U64 above i64::MAX), F64, Str, Bytes, List and
//! Tab; JSON therefore round-trips up to those types.

use super::heap::{with_arr, Map, Val};
use serde::de::{self, MapAccess, SeqAccess, Visitor};
use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An N-dimensional array's elements as nested sequences, outermost dimension first.
struct Nested<'a, T> {
    shape: &'a [usize],
    data: &'a [T],
}

impl<T: Serialize> Serialize for Nested<'_, T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let Some((&n, rest)) = self.shape.split_first() else {
            return match self.data.first() {
                Some(x) => x.serialize(s),
                None => s.serialize_unit(),
            };
        };
        let step: usize = rest.iter().product();
        let mut seq = s.serialize_seq(Some(n))?;
        for i in 0..n {
            let part = self.data.get(i * step..(i + 1) * step).unwrap_or(&[]);
            seq.serialize_element(&Nested {
                shape: rest,
                data: part,
            })?;
        }
        seq.end()
    }
}

impl Serialize for Val {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Val::None => s.serialize_unit(),
            Val::Bool(b) => s.serialize_bool(*b),
            Val::I8(x) => s.serialize_i8(*x),
            Val::I16(x) => s.serialize_i16(*x),
            Val::I32(x) => s.serialize_i32(*x),
            Val::I64(x) => s.serialize_i64(*x),
            Val::U8(x) => s.serialize_u8(*x),
            Val::U16(x) => s.serialize_u16(*x),
            Val::U32(x) => s.serialize_u32(*x),
            Val::U64(x) => s.serialize_u64(*x),
            Val::BigInt(b) => match (i64::try_from(b), u64::try_from(b)) {
                (Ok(i), _) => s.serialize_i64(i),
                (_, Ok(u)) => s.serialize_u64(u),
                _ => s.serialize_str(&b.to_string()),
            },
            Val::F32(x) => s.serialize_f32(*x),
            Val::F64(x) => s.serialize_f64(*x),
            Val::Complex32(c) => (c.re, c.im).serialize(s),
            Val::Complex64(c) => (c.re, c.im).serialize(s),
            Val::Str(x) => s.serialize_str(x),
            Val::Bytes(b) => s.serialize_bytes(b),
            Val::Arr(a) => with_arr!(a, v => v.serialize(s)),
            Val::NdArr(a) => with_arr!(a.data(), v => Nested {
                shape: a.shape(),
                data: v
            }
            .serialize(s)),
            Val::List(v) | Val::Tup(v) => {
                let mut seq = s.serialize_seq(Some(v.len()))?;
                for x in v {
                    seq.serialize_element(x)?;
                }
                seq.end()
            }
            Val::Tab(m) | Val::OTab(m) => {
                let mut map = s.serialize_map(Some(m.len()))?;
                for (k, v) in m {
                    map.serialize_entry(k, v)?;
                }
                map.end()
            }
        }
    }
}

struct ValVisitor;

impl<'de> Visitor<'de> for ValVisitor {
    type Value = Val;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any value")
    }
    fn visit_unit<E>(self) -> Result<Val, E> {
        Ok(Val::None)
    }
    fn visit_none<E>(self) -> Result<Val, E> {
        Ok(Val::None)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Val, D::Error> {
        Val::deserialize(d)
    }
    fn visit_bool<E>(self, b: bool) -> Result<Val, E> {
        Ok(Val::Bool(b))
    }
    fn visit_i64<E>(self, x: i64) -> Result<Val, E> {
        Ok(Val::I64(x))
    }
    fn visit_u64<E>(self, x: u64) -> Result<Val, E> {
        Ok(i64::try_from(x).map_or(Val::U64(x), Val::I64))
    }
    fn visit_f64<E>(self, x: f64) -> Result<Val, E> {
        Ok(Val::F64(x))
    }
    fn visit_str<E>(self, s: &str) -> Result<Val, E> {
        Ok(Val::Str(s.to_owned()))
    }
    fn visit_string<E>(self, s: String) -> Result<Val, E> {
        Ok(Val::Str(s))
    }
    fn visit_bytes<E>(self, b: &[u8]) -> Result<Val, E> {
        Ok(Val::Bytes(b.to_vec()))
    }
    fn visit_byte_buf<E>(self, b: Vec<u8>) -> Result<Val, E> {
        Ok(Val::Bytes(b))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Val, A::Error> {
        let mut v = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1 << 16));
        while let Some(x) = seq.next_element()? {
            v.push(x);
        }
        Ok(Val::List(v))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Val, A::Error> {
        let mut m = Map::with_capacity(map.size_hint().unwrap_or(0).min(1 << 16));
        while let Some((k, v)) = map.next_entry::<Val, Val>()? {
            if !k.is_hashable() {
                return Err(de::Error::custom(format!(
                    "unhashable key of type {}",
                    k.type_name()
                )));
            }
            m.insert(k, v);
        }
        Ok(Val::Tab(m))
    }
}

impl<'de> Deserialize<'de> for Val {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Val, D::Error> {
        d.deserialize_any(ValVisitor)
    }
}

#[cfg(test)]
mod tests {
    use crate::{tab, Val};

    #[test]
    fn json_round_trip() {
        let v = tab! { "seq" => 1, "name" => "sensor", "vals" => Val::List(vec![Val::F64(1.5), Val::None, Val::Bool(true)]), "nested" => tab! { "k" => -7 } };
        let s = serde_json::to_string(&v).unwrap();
        assert_eq!(
            s,
            r#"{"seq":1,"name":"sensor","vals":[1.5,null,true],"nested":{"k":-7}}"#
        );
        let back: Val = serde_json::from_str(&s).unwrap();
        assert_eq!(back, v);
        assert_eq!(back.to_string(), v.to_string());
    }
}
