//! Your own types in and out of a pool with serde, without a heap [`Val`] in
//! between: [`Pool::share_ser`] writes a `Serialize` value straight into shared
//! objects, [`ShmVal::deserialize`] reads one back from them.
//!
//! The mapping is Python's: a struct (or a map) becomes a `dict` with its fields in
//! order; a sequence of numbers all of one type (`Vec<f64>`, `[i32; 4]`, ...)
//! becomes a numeric array, any other sequence a `list`; a tuple a `tuple`;
//! `Option::None` and `()` are `None`; a unit enum variant is its name (a `str`),
//! any other variant a one-entry `dict` `{name: value}` (serde's "externally
//! tagged" form, as JSON has it). Reading accepts what writing makes, plus a list
//! where a sequence is expected and an array where a list is. An array with a shape
//! (numpy's N-D arrays) reads as nested sequences, one level a dimension
//! (`Vec<Vec<f64>>` for a 2-D array; its one element for 0 dimensions), as JSON
//! writes it; writing a nested `Vec` makes a list of arrays (no shape is guessed).

use super::build::TabBuilder;
use super::handle::ShmVal;
use super::hash::{int_hash, key_hash, str_hash};
use super::layout::{tag, ArrHead, TupHead, SLOT, TUP_SLOTS};
use super::mem::Raw;
use super::ValError;
use crate::val::{ArrKind, Val};
use crate::Pool;
use serde::de::{self, DeserializeSeed, IntoDeserializer, Visitor};
use serde::ser::{self, Serialize};
use std::sync::atomic::Ordering::Relaxed;

impl ser::Error for ValError {
    fn custom<T: std::fmt::Display>(msg: T) -> Self {
        ValError::Serde {
            what: msg.to_string(),
        }
    }
}

impl de::Error for ValError {
    fn custom<T: std::fmt::Display>(msg: T) -> Self {
        ValError::Serde {
            what: msg.to_string(),
        }
    }
}

fn serr(msg: impl std::fmt::Display) -> ValError {
    ValError::Serde {
        what: msg.to_string(),
    }
}

impl Pool {
    /// Writes `value` into the pool as shared objects (see the module doc for the
    /// mapping) and returns a handle on it.
    ///
    /// # Errors
    /// [`ValError::Alloc`] (nothing is left behind), [`ValError::Serde`] for what
    /// the mapping cannot hold (a map key that is a container), [`ValError::TooDeep`].
    ///
    /// # Examples
    /// ```
    /// # use shmval::{Pool, PoolOptions};
    /// #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
    /// struct Frame {
    ///     seq: u64,
    ///     name: String,
    ///     samples: Vec<f64>,
    ///     tag: Option<String>,
    /// }
    /// # let pool = Pool::create_with(&format!("doc-ser-{}", std::process::id()), 1 << 20, &PoolOptions::new().remove_on_drop(true))?;
    /// let f = Frame { seq: 7, name: "cam0".into(), samples: vec![0.5, 1.5], tag: None };
    /// let v = pool.share_ser(&f)?;
    /// assert_eq!(v.to_string(), "{'seq': 7, 'name': 'cam0', 'samples': array('d', [0.5, 1.5]), 'tag': None}");
    /// assert_eq!(v.deserialize::<Frame>()?, f);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn share_ser<T: Serialize + ?Sized>(&self, value: &T) -> Result<ShmVal, ValError> {
        let raw = value.serialize(Ser {
            pool: self,
            depth: 0,
        })?;
        Ok(ShmVal::from_owned(self, raw))
    }
}

impl ShmVal {
    /// Reads the value as a `T` (see [`Pool::share_ser`] for the mapping), straight
    /// from shared memory.
    ///
    /// # Errors
    /// [`ValError::Serde`] when the value does not have `T`'s shape; a corrupt value.
    pub fn deserialize<T: de::DeserializeOwned>(&self) -> Result<T, ValError> {
        T::deserialize(De {
            v: self.clone(),
            depth: 0,
        })
    }
}

const MAX_DEPTH: usize = super::mem::MAX_DEPTH;

/// The serializer: each value becomes a raw value owning one reference.
struct Ser<'p> {
    pool: &'p Pool,
    depth: usize,
}

impl<'p> Ser<'p> {
    fn deeper(&self) -> Result<Ser<'p>, ValError> {
        if self.depth >= MAX_DEPTH {
            return Err(ValError::TooDeep);
        }
        Ok(Ser {
            pool: self.pool,
            depth: self.depth + 1,
        })
    }

    fn put<T: super::ToShm>(&self, v: T) -> Result<Raw, ValError> {
        super::build::to_raw(v, self.pool)
    }

    /// A one-entry dict `{variant: value}`.
    fn tagged(&self, variant: &str, value: Raw) -> Result<Raw, ValError> {
        let mut b = self
            .pool
            .build_tab(1)
            .inspect_err(|_| self.pool.release(value))?;
        let k = self
            .put(variant)
            .inspect_err(|_| self.pool.release(value))?;
        b.put_raw(str_hash(variant), k, value)?;
        Ok(b.finish_raw())
    }
}

/// A sequence being written: its items so far (each owning a reference).
struct SeqSer<'p> {
    ser: Ser<'p>,
    items: Vec<Raw>,
    kind: u8,
    /// For a variant: its name (the sequence goes into `{name: seq}`).
    variant: Option<&'static str>,
}

impl Drop for SeqSer<'_> {
    fn drop(&mut self) {
        self.ser.pool.release_all(&self.items); // nothing once `end` took them
    }
}

impl SeqSer<'_> {
    fn push<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), ValError> {
        let r = v.serialize(self.ser.deeper()?)?;
        self.items.push(r);
        Ok(())
    }

    fn finish(mut self) -> Result<Raw, ValError> {
        let items = std::mem::take(&mut self.items);
        let pool = self.ser.pool;
        let seq = if self.kind == tag::LIST {
            match numeric(&items) {
                Some(kind) => numbers_raw(pool, kind, &items)?,
                None => pool.seq_raw(tag::LIST, items)?,
            }
        } else {
            pool.seq_raw(self.kind, items)?
        };
        match self.variant {
            Some(name) => self.ser.tagged(name, seq),
            None => Ok(seq),
        }
    }
}

/// The array kind of a non-empty sequence of numbers all of one type.
fn numeric(items: &[Raw]) -> Option<ArrKind> {
    let t = items.first()?.tag();
    let kind = match t {
        tag::I8 => ArrKind::I8,
        tag::I16 => ArrKind::I16,
        tag::I32 => ArrKind::I32,
        tag::I64 => ArrKind::I64,
        tag::U8 => ArrKind::U8,
        tag::U16 => ArrKind::U16,
        tag::U32 => ArrKind::U32,
        tag::U64 => ArrKind::U64,
        tag::F32 => ArrKind::F32,
        tag::F64 => ArrKind::F64,
        _ => return None,
    };
    items.iter().all(|r| r.tag() == t).then_some(kind)
}

/// An array of `kind` from immediates of that kind.
fn numbers_raw(pool: &Pool, kind: ArrKind, items: &[Raw]) -> Result<Raw, ValError> {
    macro_rules! arr {
        ($t:ty, $conv:expr) => {{
            let v: Vec<$t> = items.iter().map(|r| $conv(r.payload)).collect();
            super::build::to_raw(&v[..], pool)
        }};
    }
    match kind {
        ArrKind::I8 => arr!(i8, |p: u64| p as i8),
        ArrKind::I16 => arr!(i16, |p: u64| p as i16),
        ArrKind::I32 => arr!(i32, |p: u64| p as i32),
        ArrKind::I64 => arr!(i64, |p: u64| p as i64),
        ArrKind::U8 => arr!(u8, |p: u64| p as u8),
        ArrKind::U16 => arr!(u16, |p: u64| p as u16),
        ArrKind::U32 => arr!(u32, |p: u64| p as u32),
        ArrKind::U64 => arr!(u64, |p: u64| p),
        ArrKind::F32 => arr!(f32, |p: u64| f32::from_bits(p as u32)),
        ArrKind::F64 => arr!(f64, f64::from_bits),
        _ => unreachable!("`numeric` gives real kinds only"),
    }
}

/// A map or struct being written, in place.
struct MapSer<'p> {
    ser: Ser<'p>,
    b: TabBuilder<'p>,
    key: Option<(u64, Raw)>,
    variant: Option<&'static str>,
}

impl Drop for MapSer<'_> {
    fn drop(&mut self) {
        if let Some((_, k)) = self.key.take() {
            self.ser.pool.release(k);
        }
    }
}

impl MapSer<'_> {
    fn field<T: Serialize + ?Sized>(&mut self, name: &'static str, v: &T) -> Result<(), ValError> {
        let k = self.ser.put(name)?;
        let r = match v.serialize(self.ser.deeper()?) {
            Ok(r) => r,
            Err(e) => {
                self.ser.pool.release(k);
                return Err(e);
            }
        };
        self.b.put_raw(str_hash(name), k, r)
    }

    fn finish(self) -> Result<Raw, ValError> {
        let mut me = std::mem::ManuallyDrop::new(self);
        if let Some((_, k)) = me.key.take() {
            me.ser.pool.release(k);
        }
        // SAFETY: `me` is not used or dropped again; each field is moved out once.
        let (ser, b) = unsafe { (std::ptr::read(&me.ser), std::ptr::read(&me.b)) };
        let t = b.finish_raw();
        match me.variant {
            Some(name) => ser.tagged(name, t),
            None => Ok(t),
        }
    }
}

/// The hash of a key already in the pool (checked to be hashable).
fn raw_key_hash(pool: &Pool, k: Raw) -> Result<u64, ValError> {
    match k.tag() {
        tag::I8 | tag::I16 | tag::I32 | tag::I64 => Ok(int_hash(i128::from(k.payload as i64))),
        tag::U8 | tag::U16 | tag::U32 | tag::U64 => Ok(int_hash(i128::from(k.payload))),
        _ => {
            let v = pool.to_val_raw(k, 0)?;
            if !v.is_hashable() {
                return Err(ValError::Serde {
                    what: format!("a {} cannot be a dict key", v.type_name()),
                });
            }
            Ok(key_hash(&v))
        }
    }
}

macro_rules! ser_imm {
    ($($f:ident($t:ty);)*) => {$(
        fn $f(self, v: $t) -> Result<Raw, ValError> {
            self.put(v)
        }
    )*};
}

impl<'p> ser::Serializer for Ser<'p> {
    type Ok = Raw;
    type Error = ValError;
    type SerializeSeq = SeqSer<'p>;
    type SerializeTuple = SeqSer<'p>;
    type SerializeTupleStruct = SeqSer<'p>;
    type SerializeTupleVariant = SeqSer<'p>;
    type SerializeMap = MapSer<'p>;
    type SerializeStruct = MapSer<'p>;
    type SerializeStructVariant = MapSer<'p>;

    ser_imm! {
        serialize_bool(bool);
        serialize_i64(i64);
        serialize_i32(i32);
        serialize_u64(u64);
        serialize_u32(u32);
        serialize_f64(f64);
        serialize_f32(f32);
        serialize_str(&str);
    }

    fn serialize_i8(self, v: i8) -> Result<Raw, ValError> {
        Ok(Raw::new(tag::I8, 0, v as i64 as u64))
    }
    fn serialize_i16(self, v: i16) -> Result<Raw, ValError> {
        Ok(Raw::new(tag::I16, 0, v as i64 as u64))
    }
    fn serialize_u8(self, v: u8) -> Result<Raw, ValError> {
        Ok(Raw::new(tag::U8, 0, u64::from(v)))
    }
    fn serialize_u16(self, v: u16) -> Result<Raw, ValError> {
        Ok(Raw::new(tag::U16, 0, u64::from(v)))
    }
    fn serialize_i128(self, v: i128) -> Result<Raw, ValError> {
        self.pool.share_raw(&Val::BigInt(v.into()), 0)
    }
    fn serialize_u128(self, v: u128) -> Result<Raw, ValError> {
        self.pool.share_raw(&Val::BigInt(v.into()), 0)
    }
    fn serialize_char(self, v: char) -> Result<Raw, ValError> {
        self.put(v.encode_utf8(&mut [0; 4]) as &str)
    }
    fn serialize_bytes(self, v: &[u8]) -> Result<Raw, ValError> {
        self.pool.share_raw(&Val::Bytes(v.to_vec()), 0)
    }
    fn serialize_none(self) -> Result<Raw, ValError> {
        Ok(Raw::NONE)
    }
    fn serialize_some<T: Serialize + ?Sized>(self, v: &T) -> Result<Raw, ValError> {
        v.serialize(self)
    }
    fn serialize_unit(self) -> Result<Raw, ValError> {
        Ok(Raw::NONE)
    }
    fn serialize_unit_struct(self, _: &'static str) -> Result<Raw, ValError> {
        Ok(Raw::NONE)
    }
    fn serialize_unit_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
    ) -> Result<Raw, ValError> {
        self.put(variant)
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        v: &T,
    ) -> Result<Raw, ValError> {
        v.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        v: &T,
    ) -> Result<Raw, ValError> {
        let inner = v.serialize(self.deeper()?)?;
        self.tagged(variant, inner)
    }
    fn serialize_seq(self, len: Option<usize>) -> Result<SeqSer<'p>, ValError> {
        Ok(SeqSer {
            items: Vec::with_capacity(len.unwrap_or(0).min(1 << 16)),
            ser: self,
            kind: tag::LIST,
            variant: None,
        })
    }
    fn serialize_tuple(self, len: usize) -> Result<SeqSer<'p>, ValError> {
        Ok(SeqSer {
            items: Vec::with_capacity(len.min(1 << 16)),
            ser: self,
            kind: tag::TUP,
            variant: None,
        })
    }
    fn serialize_tuple_struct(self, _: &'static str, len: usize) -> Result<SeqSer<'p>, ValError> {
        self.serialize_tuple(len)
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<SeqSer<'p>, ValError> {
        let mut s = self.serialize_tuple(len)?;
        s.variant = Some(variant);
        Ok(s)
    }
    fn serialize_map(self, len: Option<usize>) -> Result<MapSer<'p>, ValError> {
        Ok(MapSer {
            b: self.pool.build_tab(len.unwrap_or(0))?,
            ser: self,
            key: None,
            variant: None,
        })
    }
    fn serialize_struct(self, _: &'static str, len: usize) -> Result<MapSer<'p>, ValError> {
        self.serialize_map(Some(len))
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<MapSer<'p>, ValError> {
        let mut m = self.serialize_map(Some(len))?;
        m.variant = Some(variant);
        Ok(m)
    }
}

macro_rules! seq_impl {
    ($($tr:ident::$f:ident),*) => {$(
        impl ser::$tr for SeqSer<'_> {
            type Ok = Raw;
            type Error = ValError;
            fn $f<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), ValError> {
                self.push(v)
            }
            fn end(self) -> Result<Raw, ValError> {
                self.finish()
            }
        }
    )*};
}
seq_impl!(
    SerializeSeq::serialize_element,
    SerializeTuple::serialize_element,
    SerializeTupleStruct::serialize_field,
    SerializeTupleVariant::serialize_field
);

impl ser::SerializeMap for MapSer<'_> {
    type Ok = Raw;
    type Error = ValError;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, k: &T) -> Result<(), ValError> {
        let r = k.serialize(self.ser.deeper()?)?;
        let h = raw_key_hash(self.ser.pool, r).inspect_err(|_| self.ser.pool.release(r))?;
        if let Some((_, old)) = self.key.replace((h, r)) {
            self.ser.pool.release(old);
        }
        Ok(())
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), ValError> {
        let (h, k) = self.key.take().ok_or_else(|| ValError::Serde {
            what: "a map value without its key".into(),
        })?;
        let r = match v.serialize(self.ser.deeper()?) {
            Ok(r) => r,
            Err(e) => {
                self.ser.pool.release(k);
                return Err(e);
            }
        };
        self.b.put_raw(h, k, r)
    }
    fn end(self) -> Result<Raw, ValError> {
        self.finish()
    }
}

macro_rules! struct_impl {
    ($($tr:ident),*) => {$(
        impl ser::$tr for MapSer<'_> {
            type Ok = Raw;
            type Error = ValError;
            fn serialize_field<T: Serialize + ?Sized>(
                &mut self,
                name: &'static str,
                v: &T,
            ) -> Result<(), ValError> {
                self.field(name, v)
            }
            fn end(self) -> Result<Raw, ValError> {
                self.finish()
            }
        }
    )*};
}
struct_impl!(SerializeStruct, SerializeStructVariant);

// --- reading ---------------------------------------------------------------------

/// The deserializer over one shared value.
struct De {
    v: ShmVal,
    depth: usize,
}

impl De {
    fn child(&self, v: ShmVal) -> Result<De, ValError> {
        if self.depth >= MAX_DEPTH {
            return Err(ValError::TooDeep);
        }
        Ok(De {
            v,
            depth: self.depth + 1,
        })
    }

    fn pool(&self) -> &Pool {
        self.v.obj_pool()
    }

    /// The items of a list or tuple, as handles.
    fn items(&self) -> Result<Vec<ShmVal>, ValError> {
        let r = self.v.raw();
        if r.tag() == tag::LIST {
            return self.v.as_list().expect("a list").items();
        }
        let pool = self.pool();
        let o = pool.obj(r.payload)?;
        let len = pool.at::<TupHead>(o.off)?.len.load(Relaxed);
        if len > o.size.saturating_sub(TUP_SLOTS as u64) / SLOT as u64 {
            return Err(super::mem::corrupt("tuple length"));
        }
        (0..len)
            .map(|i| {
                let r = pool.read(pool.slot_at(o.off + TUP_SLOTS as u64 + i * SLOT as u64)?);
                pool.retain(r)?;
                Ok(ShmVal::from_owned(pool, r))
            })
            .collect()
    }
}

/// A sequence of handles.
struct Items {
    it: std::vec::IntoIter<ShmVal>,
    depth: usize,
}

impl<'de> de::SeqAccess<'de> for Items {
    type Error = ValError;
    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, ValError> {
        match self.it.next() {
            Some(v) => seed
                .deserialize(De {
                    v,
                    depth: self.depth,
                })
                .map(Some),
            None => Ok(None),
        }
    }
    fn size_hint(&self) -> Option<usize> {
        Some(self.it.len())
    }
}

/// The entries of a dict.
struct Entries {
    it: std::vec::IntoIter<(ShmVal, ShmVal)>,
    value: Option<ShmVal>,
    depth: usize,
}

impl<'de> de::MapAccess<'de> for Entries {
    type Error = ValError;
    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, ValError> {
        match self.it.next() {
            Some((k, v)) => {
                self.value = Some(v);
                seed.deserialize(De {
                    v: k,
                    depth: self.depth,
                })
                .map(Some)
            }
            None => Ok(None),
        }
    }
    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, ValError> {
        let v = self.value.take().ok_or_else(|| ValError::Serde {
            what: "a map value read before its key".into(),
        })?;
        seed.deserialize(De {
            v,
            depth: self.depth,
        })
    }
    fn size_hint(&self) -> Option<usize> {
        Some(self.it.len())
    }
}

/// An enum variant: its name and (for a one-entry dict) its value.
struct Variant {
    name: String,
    value: Option<De>,
}

impl<'de> de::EnumAccess<'de> for Variant {
    type Error = ValError;
    type Variant = VariantBody;
    fn variant_seed<V: DeserializeSeed<'de>>(
        self,
        seed: V,
    ) -> Result<(V::Value, VariantBody), ValError> {
        let name: de::value::StringDeserializer<ValError> = self.name.into_deserializer();
        Ok((seed.deserialize(name)?, VariantBody(self.value)))
    }
}

struct VariantBody(Option<De>);

impl<'de> de::VariantAccess<'de> for VariantBody {
    type Error = ValError;
    fn unit_variant(self) -> Result<(), ValError> {
        Ok(())
    }
    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, ValError> {
        seed.deserialize(
            self.0
                .ok_or_else(|| serr("a unit variant where a value was expected"))?,
        )
    }
    fn tuple_variant<V: Visitor<'de>>(self, _: usize, visitor: V) -> Result<V::Value, ValError> {
        de::Deserializer::deserialize_any(
            self.0
                .ok_or_else(|| serr("a unit variant where a tuple was expected"))?,
            visitor,
        )
    }
    fn struct_variant<V: Visitor<'de>>(
        self,
        _: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, ValError> {
        de::Deserializer::deserialize_any(
            self.0
                .ok_or_else(|| serr("a unit variant where fields were expected"))?,
            visitor,
        )
    }
}

/// The elements of a numeric array, copied out (no `Val`): a sequence, or for an
/// array with a shape nested sequences, one level a dimension (a 0-dimensional
/// array is its one element), as JSON writes it.
fn arr_items<'de, V: Visitor<'de>>(v: &ShmVal, visitor: V) -> Result<V::Value, ValError> {
    let pool = v.obj_pool();
    let kind = pool.at::<ArrHead>(v.raw().payload)?.kind.load(Relaxed);
    let shape = v.shape()?.unwrap_or_default();
    macro_rules! seq {
        ($t:ty) => {{
            let a = v
                .as_arr::<$t>()?
                .ok_or_else(|| super::mem::corrupt("array kind"))?
                .to_vec();
            if shape.len() == 1 {
                visitor.visit_seq(de::value::SeqDeserializer::new(a.into_iter()))
            } else {
                let n = shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d));
                if n != Some(a.len()) {
                    return Err(super::mem::corrupt("an array's shape and length disagree"));
                }
                de::Deserializer::deserialize_any(
                    Nd {
                        data: &a,
                        shape: &shape,
                    },
                    visitor,
                )
            }
        }};
    }
    match ArrKind::from_u8(kind as u8) {
        Some(ArrKind::Bool) => seq!(bool),
        Some(ArrKind::I8) => seq!(i8),
        Some(ArrKind::I16) => seq!(i16),
        Some(ArrKind::I32) => seq!(i32),
        Some(ArrKind::I64) => seq!(i64),
        Some(ArrKind::U8) => seq!(u8),
        Some(ArrKind::U16) => seq!(u16),
        Some(ArrKind::U32) => seq!(u32),
        Some(ArrKind::U64) => seq!(u64),
        Some(ArrKind::F32) => seq!(f32),
        Some(ArrKind::F64) => seq!(f64),
        _ => Err(serr("an array of complex numbers has no serde form")),
    }
}

/// The elements `data` under `shape` (their product is `data.len()`, checked by
/// the caller): a sequence of the sub-arrays of the first dimension, or with no
/// dimension left the one element.
struct Nd<'a, T> {
    data: &'a [T],
    shape: &'a [usize],
}

impl<'de, T> de::Deserializer<'de> for Nd<'_, T>
where
    T: Copy + IntoDeserializer<'de, ValError>,
{
    type Error = ValError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ValError> {
        let Some((&n, rest)) = self.shape.split_first() else {
            return match self.data.first() {
                Some(&x) => x.into_deserializer().deserialize_any(visitor),
                None => Err(super::mem::corrupt(
                    "a 0-dimensional array without its element",
                )),
            };
        };
        let stride: usize = rest.iter().product();
        let data = self.data;
        // i < n and data.len() == n * stride: every range lies inside `data`.
        visitor.visit_seq(de::value::SeqDeserializer::new((0..n).map(move |i| Nd {
            data: &data[i * stride..(i + 1) * stride],
            shape: rest,
        })))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
        byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map
        struct enum identifier ignored_any
    }
}

impl<'de, T> IntoDeserializer<'de, ValError> for Nd<'_, T>
where
    T: Copy + IntoDeserializer<'de, ValError>,
{
    type Deserializer = Self;

    fn into_deserializer(self) -> Self {
        self
    }
}

impl<'de> de::Deserializer<'de> for De {
    type Error = ValError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ValError> {
        let r = self.v.raw();
        let p = r.payload;
        match r.tag() {
            tag::NONE => visitor.visit_unit(),
            tag::BOOL => visitor.visit_bool(p != 0),
            tag::I8 | tag::I16 | tag::I32 | tag::I64 => visitor.visit_i64(p as i64),
            tag::U8 | tag::U16 | tag::U32 | tag::U64 => visitor.visit_u64(p),
            tag::F32 => visitor.visit_f32(f32::from_bits(p as u32)),
            tag::F64 => visitor.visit_f64(f64::from_bits(p)),
            tag::STR | tag::STR_INLINE => {
                let s = self.v.as_str().expect("a str");
                visitor.visit_str(s.to_str()?)
            }
            tag::BYTES | tag::BYTES_INLINE => {
                let b = self.v.as_bytes().expect("bytes");
                visitor.visit_bytes(b.to_bytes()?)
            }
            tag::ARR => arr_items(&self.v, visitor),
            tag::LIST | tag::TUP => visitor.visit_seq(Items {
                it: self.items()?.into_iter(),
                depth: self.depth + 1,
            }),
            tag::TAB | tag::OTAB => visitor.visit_map(Entries {
                it: self.v.as_tab().expect("a dict").entries()?.into_iter(),
                value: None,
                depth: self.depth + 1,
            }),
            _ => match self.v.to_val()? {
                Val::BigInt(b) => match (i128::try_from(&b), u128::try_from(&b)) {
                    (Ok(i), _) => visitor.visit_i128(i),
                    (_, Ok(u)) => visitor.visit_u128(u),
                    _ => Err(serr("an int too big for 128 bits")),
                },
                other => Err(serr(format!("a {} has no serde form", other.type_name()))),
            },
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ValError> {
        if self.v.is_none() {
            visitor.visit_none()
        } else {
            visitor.visit_some(self)
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        visitor: V,
    ) -> Result<V::Value, ValError> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _: &'static str,
        _: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, ValError> {
        if let Some(s) = self.v.as_str() {
            return visitor.visit_enum(Variant {
                name: s.to_str()?.to_owned(),
                value: None,
            });
        }
        let t = self
            .v
            .as_tab()
            .ok_or_else(|| serr(format!("a {} is not an enum variant", self.v.type_name())))?;
        let mut entries = t.entries()?;
        if entries.len() != 1 {
            return Err(serr("an enum variant is a dict of one entry"));
        }
        let (k, v) = entries.pop().expect("one entry");
        let name = k
            .as_str()
            .ok_or_else(|| serr("an enum variant's name is a str"))?
            .to_str()?
            .to_owned();
        let value = Some(self.child(v)?);
        visitor.visit_enum(Variant { name, value })
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf unit unit_struct seq tuple tuple_struct map struct
        identifier ignored_any
    }
}
