//! NumPy in pickles: arrays (`ndarray`: numpy 1.x and 2.x module names, the
//! `_reconstruct` + state form of protocols 0 to 4 and the `_frombuffer` form of
//! protocol 5 with the buffer in band) and scalars (`numpy.float64(1.5)`, ...) read
//! as arrays with their shape and as numbers; arrays of 0 or 2+ dimensions written
//! back as numpy arrays.

use super::PickleError;
use crate::val::heap::{Arr, ArrKind, Complex, NdArr, Val};

/// A dtype as a pickle describes it: `numpy.dtype('f8', False, True)` and the byte
/// order its state sets.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Dtype {
    pub descr: String,
    /// `<`, `>`, `|` or `=`.
    pub order: char,
}

impl Dtype {
    /// The element kind and whether the bytes are big-endian.
    pub(super) fn kind(&self) -> Result<(ArrKind, bool), PickleError> {
        let unsupported = || PickleError::Unsupported(format!("numpy dtype {:?}", self.descr));
        let d = self.descr.trim_start_matches(['<', '>', '|', '=']);
        let kind = match d {
            "b1" | "?" => ArrKind::Bool,
            "i1" | "b" => ArrKind::I8,
            "i2" | "h" => ArrKind::I16,
            "i4" | "i" => ArrKind::I32,
            "i8" | "q" | "l" => ArrKind::I64,
            "u1" | "B" => ArrKind::U8,
            "u2" | "H" => ArrKind::U16,
            "u4" | "I" => ArrKind::U32,
            "u8" | "Q" | "L" => ArrKind::U64,
            "f4" | "f" => ArrKind::F32,
            "f8" | "d" => ArrKind::F64,
            "c8" | "F" => ArrKind::C32,
            "c16" | "D" => ArrKind::C64,
            _ => return Err(unsupported()),
        };
        let order = self.descr.chars().next().filter(|c| "<>|=".contains(*c));
        let big = order.unwrap_or(self.order) == '>';
        Ok((kind, big))
    }
}

/// The elements of `kind` in `b` (big-endian if `big`).
pub(super) fn arr_from_bytes(kind: ArrKind, big: bool, b: &[u8]) -> Result<Arr, PickleError> {
    let size = kind.size();
    if b.len() % size != 0 {
        return Err(PickleError::Malformed(
            "numpy data not a whole number of elements",
        ));
    }
    // Each element's bytes in little-endian order (complex: each half swapped).
    let part = if matches!(kind, ArrKind::C32 | ArrKind::C64) {
        size / 2
    } else {
        size
    };
    let le: Vec<u8> = if big && part > 1 {
        b.chunks(part)
            .flat_map(|c| c.iter().rev().copied())
            .collect()
    } else {
        b.to_vec()
    };
    fn each<const N: usize, T>(b: &[u8], f: impl Fn([u8; N]) -> T) -> Vec<T> {
        b.chunks_exact(N)
            .map(|c| f(c.try_into().expect("N bytes")))
            .collect()
    }
    Ok(match kind {
        ArrKind::Bool => Arr::Bool(le.iter().map(|&x| x != 0).collect()),
        ArrKind::I8 => Arr::I8(le.iter().map(|&x| x as i8).collect()),
        ArrKind::U8 => Arr::U8(le),
        ArrKind::I16 => Arr::I16(each(&le, i16::from_le_bytes)),
        ArrKind::U16 => Arr::U16(each(&le, u16::from_le_bytes)),
        ArrKind::I32 => Arr::I32(each(&le, i32::from_le_bytes)),
        ArrKind::U32 => Arr::U32(each(&le, u32::from_le_bytes)),
        ArrKind::I64 => Arr::I64(each(&le, i64::from_le_bytes)),
        ArrKind::U64 => Arr::U64(each(&le, u64::from_le_bytes)),
        ArrKind::F32 => Arr::F32(each(&le, f32::from_le_bytes)),
        ArrKind::F64 => Arr::F64(each(&le, f64::from_le_bytes)),
        ArrKind::C32 => Arr::C32(each(&le, |c: [u8; 8]| {
            Complex::new(
                f32::from_le_bytes(c[..4].try_into().expect("4")),
                f32::from_le_bytes(c[4..].try_into().expect("4")),
            )
        })),
        ArrKind::C64 => Arr::C64(each(&le, |c: [u8; 16]| {
            Complex::new(
                f64::from_le_bytes(c[..8].try_into().expect("8")),
                f64::from_le_bytes(c[8..].try_into().expect("8")),
            )
        })),
    })
}

/// The bytes of `b` holding elements of `size` bytes in Fortran order for `shape`,
/// rearranged into C order.
pub(super) fn fortran_to_c(b: &[u8], size: usize, shape: &[usize]) -> Vec<u8> {
    let n = b.len() / size.max(1);
    if shape.len() < 2 {
        return b.to_vec();
    }
    let mut out = vec![0u8; b.len()];
    let mut idx = vec![0usize; shape.len()];
    for c in 0..n {
        // `idx` is element c's index in C order; its Fortran position:
        let mut f = 0;
        let mut stride = 1;
        for (d, &i) in idx.iter().enumerate() {
            f += i * stride;
            stride *= shape[d];
        }
        out[c * size..(c + 1) * size].copy_from_slice(&b[f * size..(f + 1) * size]);
        for d in (0..shape.len()).rev() {
            idx[d] += 1;
            if idx[d] < shape[d] {
                break;
            }
            idx[d] = 0;
        }
    }
    out
}

/// An array of `shape` from pickled data: a flat array for one dimension.
pub(super) fn ndarray(
    dtype: &Dtype,
    shape: Vec<usize>,
    fortran: bool,
    data: &[u8],
) -> Result<Val, PickleError> {
    let (kind, big) = dtype.kind()?;
    let n = shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or(PickleError::Malformed("numpy shape"))?;
    if n.checked_mul(kind.size()) != Some(data.len()) {
        return Err(PickleError::Malformed(
            "numpy data does not fill the array's shape",
        ));
    }
    let c;
    let bytes = if fortran && shape.len() > 1 {
        c = fortran_to_c(data, kind.size(), &shape);
        &c[..]
    } else {
        data
    };
    let arr = arr_from_bytes(kind, big, bytes)?;
    NdArr::new(shape, arr)
        .map(Val::from)
        .map_err(|_| PickleError::Malformed("numpy shape"))
}

/// `numpy.core.multiarray.scalar(dtype, bytes)`: the number.
pub(super) fn scalar(dtype: &Dtype, data: &[u8]) -> Result<Val, PickleError> {
    let (kind, big) = dtype.kind()?;
    if data.len() != kind.size() {
        return Err(PickleError::Malformed("numpy scalar size"));
    }
    arr_from_bytes(kind, big, data)?
        .get(0)
        .ok_or(PickleError::Malformed("numpy scalar"))
}

/// numpy's dtype string of an element kind (little-endian).
pub(super) fn descr(kind: ArrKind) -> &'static str {
    match kind {
        ArrKind::Bool => "b1",
        ArrKind::I8 => "i1",
        ArrKind::I16 => "i2",
        ArrKind::I32 => "i4",
        ArrKind::I64 => "i8",
        ArrKind::U8 => "u1",
        ArrKind::U16 => "u2",
        ArrKind::U32 => "u4",
        ArrKind::U64 => "u8",
        ArrKind::F32 => "f4",
        ArrKind::F64 => "f8",
        ArrKind::C32 => "c8",
        ArrKind::C64 => "c16",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fortran_order_becomes_c_order() {
        // [[1, 2, 3], [4, 5, 6]] in Fortran order: 1 4 2 5 3 6.
        let f: Vec<u8> = [1u8, 4, 2, 5, 3, 6].to_vec();
        assert_eq!(fortran_to_c(&f, 1, &[2, 3]), vec![1, 2, 3, 4, 5, 6]);
        // 2x2x2
        let f: Vec<u8> = (0..8u8).collect(); // F index = i + 2j + 4k
        let c = fortran_to_c(&f, 1, &[2, 2, 2]);
        // C order (i, j, k) = 4i + 2j + k -> value i + 2j + 4k
        assert_eq!(c, vec![0, 4, 2, 6, 1, 5, 3, 7]);
    }

    #[test]
    fn big_endian_data_reads_right() {
        let d = Dtype {
            descr: ">i4".into(),
            order: '>',
        };
        let v = ndarray(&d, vec![2], false, &[0, 0, 0, 1, 0, 0, 1, 0]).unwrap();
        assert_eq!(v, Val::Arr(Arr::I32(vec![1, 256])));
    }
}
