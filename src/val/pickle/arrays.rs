//! Python `array.array` contents to [`Arr`].

use super::PickleError;
use crate::val::heap::{Arr, Val};

pub(super) fn array_from_vals(code: &str, vals: &[Val]) -> Result<Arr, PickleError> {
    let ints = || {
        vals.iter()
            .map(|v| v.as_i64().ok_or(PickleError::Malformed("array element")))
            .collect::<Result<Vec<i64>, _>>()
    };
    let floats = || {
        vals.iter()
            .map(|v| v.as_f64().ok_or(PickleError::Malformed("array element")))
            .collect::<Result<Vec<f64>, _>>()
    };
    let narrow = |e| PickleError::Malformed(e);
    Ok(match code {
        "b" => Arr::I8(
            ints()?
                .into_iter()
                .map(|x| i8::try_from(x).map_err(|_| narrow("array element")))
                .collect::<Result<_, _>>()?,
        ),
        "B" => Arr::U8(
            ints()?
                .into_iter()
                .map(|x| u8::try_from(x).map_err(|_| narrow("array element")))
                .collect::<Result<_, _>>()?,
        ),
        "h" => Arr::I16(
            ints()?
                .into_iter()
                .map(|x| i16::try_from(x).map_err(|_| narrow("array element")))
                .collect::<Result<_, _>>()?,
        ),
        "H" => Arr::U16(
            ints()?
                .into_iter()
                .map(|x| u16::try_from(x).map_err(|_| narrow("array element")))
                .collect::<Result<_, _>>()?,
        ),
        "i" => Arr::I32(
            ints()?
                .into_iter()
                .map(|x| i32::try_from(x).map_err(|_| narrow("array element")))
                .collect::<Result<_, _>>()?,
        ),
        "I" => Arr::U32(
            ints()?
                .into_iter()
                .map(|x| u32::try_from(x).map_err(|_| narrow("array element")))
                .collect::<Result<_, _>>()?,
        ),
        "l" | "q" => Arr::I64(ints()?),
        "L" | "Q" => Arr::U64(
            vals.iter()
                .map(|v| match v {
                    Val::BigInt(b) => u64::try_from(b).map_err(|_| narrow("array element")),
                    v => v
                        .as_i64()
                        .and_then(|x| u64::try_from(x).ok())
                        .ok_or(narrow("array element")),
                })
                .collect::<Result<_, _>>()?,
        ),
        "f" => Arr::F32(floats()?.into_iter().map(|x| x as f32).collect()),
        "d" => Arr::F64(floats()?),
        _ => {
            return Err(PickleError::Unsupported(format!(
                "array type code {code:?}"
            )))
        }
    })
}

/// `array._array_reconstructor` machine formats (little-endian ones; big-endian
/// codes are the odd numbers after them).
pub(super) fn array_from_machine(code: &str, fmt: i64, b: &[u8]) -> Result<Arr, PickleError> {
    fn chunks<const N: usize, T>(
        b: &[u8],
        f: impl Fn([u8; N]) -> T,
    ) -> Result<Vec<T>, PickleError> {
        if b.len() % N != 0 {
            return Err(PickleError::Malformed(
                "array bytes not a whole number of elements",
            ));
        }
        Ok(b.chunks_exact(N)
            .map(|c| f(c.try_into().expect("N bytes")))
            .collect())
    }
    let be = fmt >= 2 && fmt % 2 == 1;
    let fix = |b: &[u8], n: usize| -> Vec<u8> {
        if be {
            b.chunks(n).flat_map(|c| c.iter().rev().copied()).collect()
        } else {
            b.to_vec()
        }
    };
    let arr = match fmt {
        0 => Arr::U8(b.to_vec()),
        1 => Arr::I8(b.iter().map(|&x| x as i8).collect()),
        2 | 3 => Arr::U16(chunks(&fix(b, 2), u16::from_le_bytes)?),
        4 | 5 => Arr::I16(chunks(&fix(b, 2), i16::from_le_bytes)?),
        6 | 7 => Arr::U32(chunks(&fix(b, 4), u32::from_le_bytes)?),
        8 | 9 => Arr::I32(chunks(&fix(b, 4), i32::from_le_bytes)?),
        10 | 11 => Arr::U64(chunks(&fix(b, 8), u64::from_le_bytes)?),
        12 | 13 => Arr::I64(chunks(&fix(b, 8), i64::from_le_bytes)?),
        14 | 15 => Arr::F32(chunks(&fix(b, 4), f32::from_le_bytes)?),
        16 | 17 => Arr::F64(chunks(&fix(b, 8), f64::from_le_bytes)?),
        _ => {
            return Err(PickleError::Unsupported(format!(
                "array {code:?} machine format {fmt}"
            )))
        }
    };
    Ok(arr)
}
