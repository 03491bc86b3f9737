//! Numeric arrays and numpy: numpy arrays copied in (straight from numpy's memory),
//! shared arrays out as `shmval.Array`, whose `__array_interface__` makes
//! `numpy.asarray` a zero-copy view of the shared memory.

use crate::convert::val_to_py;
use crate::{err, Error};
use pyo3::exceptions::{PyIndexError, PyTypeError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};
use shm::{Arr, ArrKind, Complex, NdArr, Pool as CPool, ShmVal, Val};

/// Whether `obj` looks like a numpy array (numpy's array interface and a dtype).
pub(crate) fn is_numpy(obj: &Bound<'_, PyAny>) -> PyResult<bool> {
    Ok(!obj.is_instance_of::<Array>()
        && obj.hasattr("__array_interface__")?
        && obj.hasattr("dtype")?)
}

// --- numeric arrays ----------------------------------------------------------------

/// numpy's type string of an array kind (little-endian: this is Linux on x86 or
/// little-endian ARM; the pool's byte order is the host's).
pub(crate) fn typestr(kind: ArrKind) -> &'static str {
    match kind {
        ArrKind::Bool => "|b1",
        ArrKind::I8 => "|i1",
        ArrKind::I16 => "<i2",
        ArrKind::I32 => "<i4",
        ArrKind::I64 => "<i8",
        ArrKind::U8 => "|u1",
        ArrKind::U16 => "<u2",
        ArrKind::U32 => "<u4",
        ArrKind::U64 => "<u8",
        ArrKind::F32 => "<f4",
        ArrKind::F64 => "<f8",
        ArrKind::C32 => "<c8",
        ArrKind::C64 => "<c16",
    }
}

/// A numpy array as one C-contiguous, aligned, native-endian array (the same array
/// when it is one already: no copy), with its dtype's kind, item size, number of
/// elements, the address of its elements (valid while the array lives) and its
/// shape.
type NumpyParts<'py> = (Bound<'py, PyAny>, String, usize, usize, usize, Vec<usize>);

fn numpy_parts<'py>(obj: &Bound<'py, PyAny>) -> PyResult<NumpyParts<'py>> {
    let py = obj.py();
    let shape: Vec<usize> = obj.getattr("shape")?.extract()?;
    if shape.len() > shm::MAX_NDIM {
        return Err(PyTypeError::new_err(format!(
            "a {}-dimensional array: at most {} dimensions",
            shape.len(),
            shm::MAX_NDIM
        )));
    }
    let dt = obj.getattr("dtype")?;
    let kw = PyDict::new(py);
    kw.set_item("dtype", dt.call_method1("newbyteorder", ("=",))?)?;
    kw.set_item("requirements", "CA")?;
    let a = py
        .import("numpy")?
        .call_method("require", (obj,), Some(&kw))?;
    let kind: String = dt.getattr("kind")?.extract()?;
    let size: usize = dt.getattr("itemsize")?.extract()?;
    let len: usize = a.getattr("size")?.extract()?;
    let ptr: usize = a
        .getattr("__array_interface__")?
        .get_item("data")?
        .get_item(0)?
        .extract()?;
    Ok((a, kind, size, len, ptr, shape))
}

/// The `len` elements of type `T` at `ptr` (a contiguous, aligned numpy array the
/// caller keeps alive).
///
/// # Safety
/// As [`std::slice::from_raw_parts`]: `ptr` holds `len` initialised `T`s.
unsafe fn elems<'a, T>(ptr: usize, len: usize) -> &'a [T] {
    if len == 0 {
        return &[];
    }
    // SAFETY: forwarded to the caller.
    unsafe { std::slice::from_raw_parts(ptr as *const T, len) }
}

/// Runs `$body` with `$s` the numpy array's elements as a slice of their Rust type
/// (bools as `u8`), or evaluates `$other` for the kinds that have no `Elem` here.
macro_rules! with_numpy {
    ($kind:expr, $size:expr, $ptr:expr, $len:expr, |$s:ident| $body:expr, $other:expr) => {{
        macro_rules! arm {
            ($t:ty) => {{
                // SAFETY: `numpy_parts` made the array contiguous, aligned and native,
                // of this kind and item size; the caller holds it.
                let $s: &[$t] = unsafe { elems($ptr, $len) };
                $body
            }};
        }
        match ($kind, $size) {
            ("b", 1) | ("u", 1) => arm!(u8),
            ("i", 1) => arm!(i8),
            ("i", 2) => arm!(i16),
            ("i", 4) => arm!(i32),
            ("i", 8) => arm!(i64),
            ("u", 2) => arm!(u16),
            ("u", 4) => arm!(u32),
            ("u", 8) => arm!(u64),
            ("f", 4) => arm!(f32),
            ("f", 8) => arm!(f64),
            _ => $other,
        }
    }};
}

/// A numpy array as a heap array (one copy), with its shape.
pub(crate) fn numpy_to_val(obj: &Bound<'_, PyAny>) -> PyResult<Val> {
    let (_keep, kind, size, len, ptr, shape) = numpy_parts(obj)?;
    let flat = numpy_flat(&kind, size, len, ptr)?;
    if shape.len() == 1 {
        return Ok(flat);
    }
    let Val::Arr(a) = flat else {
        return Err(Error::new_err("not an array"));
    };
    Ok(Val::NdArr(NdArr::new(shape, a).map_err(err)?))
}

/// The `len` elements at `ptr` of a numpy array of dtype kind `kind` and item
/// size `size` (held by the caller) as a flat heap array.
fn numpy_flat(kind: &str, size: usize, len: usize, ptr: usize) -> PyResult<Val> {
    let unsupported = || {
        PyTypeError::new_err(format!(
            "a numpy array of dtype kind {kind:?}, {size} bytes: not a numeric array kind"
        ))
    };
    let a = match (kind, size) {
        ("b", 1) => {
            // SAFETY: as in `with_numpy!`.
            let s: &[u8] = unsafe { elems(ptr, len) };
            Arr::Bool(s.iter().map(|&b| b != 0).collect())
        }
        ("u", 1) => {
            // SAFETY: as in `with_numpy!` (a `Vec<u8>` would become `bytes`).
            let s: &[u8] = unsafe { elems(ptr, len) };
            Arr::U8(s.to_vec())
        }
        ("c", 8) => {
            // SAFETY: as in `with_numpy!`; a complex64 is two f32.
            let s: &[f32] = unsafe { elems(ptr, 2 * len) };
            Arr::C32(
                s.chunks_exact(2)
                    .map(|c| Complex::new(c[0], c[1]))
                    .collect(),
            )
        }
        ("c", 16) => {
            // SAFETY: as above, two f64.
            let s: &[f64] = unsafe { elems(ptr, 2 * len) };
            Arr::C64(
                s.chunks_exact(2)
                    .map(|c| Complex::new(c[0], c[1]))
                    .collect(),
            )
        }
        (k, n) => {
            return with_numpy!(
                k,
                n,
                ptr,
                len,
                |s| Ok(Val::from(s.to_vec())),
                Err(unsupported())
            )
        }
    };
    Ok(Val::Arr(a))
}

/// A numpy array copied straight into `pool` with its shape (one copy, no heap
/// array in between).
pub(crate) fn numpy_to_handle(obj: &Bound<'_, PyAny>, pool: &CPool) -> PyResult<ShmVal> {
    let (_keep, kind, size, len, ptr, shape) = numpy_parts(obj)?;
    if (kind.as_str(), size) == ("b", 1) || kind == "c" {
        return pool.share(&numpy_to_val(obj)?).map_err(err);
    }
    with_numpy!(
        kind.as_str(),
        size,
        ptr,
        len,
        |s| {
            let a = pool.new_arr_shaped(&shape).map_err(err)?;
            a.write(0, s).map_err(err)?;
            Ok(a.as_val().clone())
        },
        Err(PyTypeError::new_err(format!(
            "a numpy array of dtype kind {kind:?}, {size} bytes: not a numeric array kind"
        )))
    )
}

/// A shared numeric array. `numpy.asarray(a)` is a view of the shared memory
/// itself (numpy's array interface: no copy); writes through it are seen by every
/// process.
#[pyclass(module = "shmval", sequence)]
pub struct Array {
    pub(crate) v: ShmVal,
}

impl Array {
    fn parts(&self) -> PyResult<(ArrKind, usize, *const u8, Vec<usize>)> {
        self.v
            .arr_parts()
            .map_err(err)?
            .ok_or_else(|| Error::new_err("not an array"))
    }

    /// numpy's view of the shared elements.
    fn view<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        slf.py().import("numpy")?.call_method1("asarray", (slf,))
    }
}

#[pymethods]
impl Array {
    /// numpy's array interface (version 3): the shared elements, writable.
    #[getter]
    fn __array_interface__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let (kind, _, ptr, shape) = self.parts()?;
        let d = PyDict::new(py);
        d.set_item("shape", PyTuple::new(py, shape)?)?;
        d.set_item("typestr", typestr(kind))?;
        d.set_item("data", (ptr as usize, false))?;
        d.set_item("version", 3)?;
        Ok(d)
    }

    fn __len__(&self) -> PyResult<usize> {
        match self.parts()?.3.first() {
            Some(&n) => Ok(n),
            None => Err(PyTypeError::new_err("len() of a 0-dimensional array")),
        }
    }

    /// The shape (numpy's).
    #[getter]
    fn shape<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        PyTuple::new(py, self.parts()?.3)
    }

    fn __getitem__(slf: &Bound<'_, Self>, i: &Bound<'_, PyAny>) -> PyResult<PyObject> {
        let py = slf.py();
        let me = slf.borrow();
        let shape = me.parts()?.3;
        let Ok(i) = i.extract::<isize>() else {
            // Slices, tuples of indices: numpy's (a view of the shared memory).
            return Ok(Self::view(slf)?.get_item(i)?.unbind());
        };
        if shape.len() != 1 {
            return Ok(Self::view(slf)?.get_item(i)?.unbind());
        }
        let n = shape[0] as isize;
        let j = if i < 0 { i + n } else { i };
        if j < 0 || j >= n {
            return Err(PyIndexError::new_err("array index out of range"));
        }
        let Val::Arr(a) = me.v.to_val().map_err(err)? else {
            return Err(Error::new_err("not an array"));
        };
        val_to_py(py, &a.get(j as usize).expect("in range"))
    }

    /// The elements as a Python list (a copy).
    fn tolist(&self, py: Python<'_>) -> PyResult<PyObject> {
        val_to_py(py, &self.v.to_val().map_err(err)?)
    }

    /// The elements as a Python list (a copy).
    fn to_python(&self, py: Python<'_>) -> PyResult<PyObject> {
        self.tolist(py)
    }

    fn __eq__(&self, py: Python<'_>, other: &Bound<'_, PyAny>) -> PyResult<bool> {
        let mine = self.tolist(py)?;
        let theirs = if other.hasattr("tolist")? {
            other.call_method0("tolist")?
        } else {
            other.clone()
        };
        mine.bind(py).eq(theirs)
    }

    fn __repr__(&self) -> String {
        self.v.to_string()
    }
}
