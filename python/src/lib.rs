//! The Python module `shmval` (its compiled part, `shmval._shmval`): pools, the
//! shared root dict and the containers in it as Python mapping and sequence
//! proxies, and pipes. Values are copied in from Python objects; reading a
//! container gives a proxy on the shared one, reading anything else a Python value.
//! Blocking calls release the GIL and wake for signals (Ctrl-C) every 50 ms.

use pyo3::exceptions::{PyIndexError, PyKeyError, PyTimeoutError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};
use shm::{
    Arg, Arr, ArrKind, Broadcast as CBroadcast, BroadcastRecvError, Complex, Pipe as CPipe, Policy,
    Pool as CPool, PoolOptions, RecvError, SendError, ShmList, ShmTab, ShmVal,
    Subscriber as CSubscriber, Val,
};
use std::time::{Duration, Instant};

pyo3::create_exception!(
    _shmval,
    Error,
    pyo3::exceptions::PyException,
    "An operation on a pool, a value or a pipe failed (corrupt memory, a full pool, ...)."
);
pyo3::create_exception!(
    _shmval,
    Closed,
    Error,
    "The pipe is closed (and, for a receive, drained)."
);
pyo3::create_exception!(
    _shmval,
    Lagged,
    Error,
    "This subscriber fell a whole ring behind: `args[0]` values were skipped (the next receive gives the oldest still there)."
);

fn err(e: impl std::fmt::Display) -> PyErr {
    Error::new_err(e.to_string())
}

/// How long a blocking call waits between two looks for a signal (Ctrl-C).
const SLICE: Duration = Duration::from_millis(50);

/// Deepest nesting copied in (as Python's recursion limit, roughly).
const MAX_DEPTH: usize = 1000;

// --- Python -> shmval -------------------------------------------------------------

/// A Python object as a heap value (copied in when stored).
fn to_val(obj: &Bound<'_, PyAny>, depth: usize) -> PyResult<Val> {
    if depth > MAX_DEPTH {
        return Err(PyValueError::new_err("value nested too deeply"));
    }
    if obj.is_none() {
        return Ok(Val::None);
    }
    if obj.is_instance_of::<PyBool>() {
        return Ok(Val::Bool(obj.extract()?));
    }
    if obj.is_instance_of::<PyInt>() {
        if let Ok(i) = obj.extract::<i64>() {
            return Ok(Val::I64(i));
        }
        if let Ok(u) = obj.extract::<u64>() {
            return Ok(Val::U64(u));
        }
        return Val::from_literal(&obj.str()?.to_cow()?)
            .map_err(|e| PyValueError::new_err(e.to_string()));
    }
    if obj.is_instance_of::<PyFloat>() {
        return Ok(Val::F64(obj.extract()?));
    }
    if let Ok(s) = obj.downcast::<PyString>() {
        return Ok(Val::Str(s.to_cow()?.into_owned()));
    }
    if let Ok(b) = obj.downcast::<PyBytes>() {
        return Ok(Val::Bytes(b.as_bytes().to_vec()));
    }
    if let Ok(l) = obj.downcast::<PyList>() {
        return Ok(Val::List(
            l.iter()
                .map(|x| to_val(&x, depth + 1))
                .collect::<PyResult<_>>()?,
        ));
    }
    if let Ok(t) = obj.downcast::<PyTuple>() {
        return Ok(Val::Tup(
            t.iter()
                .map(|x| to_val(&x, depth + 1))
                .collect::<PyResult<_>>()?,
        ));
    }
    if let Ok(d) = obj.downcast::<PyDict>() {
        let mut t = Val::tab();
        for (k, v) in d.iter() {
            t.insert(to_val(&k, depth + 1)?, to_val(&v, depth + 1)?)
                .map_err(|e| PyTypeError::new_err(e.to_string()))?;
        }
        return Ok(t);
    }
    if let Ok(a) = obj.downcast::<Array>() {
        return a.borrow().v.to_val().map_err(err);
    }
    if is_numpy(obj)? {
        return numpy_to_val(obj);
    }
    if let Ok(d) = obj.downcast::<Dict>() {
        return d.borrow().t.to_val().map_err(err);
    }
    if let Ok(l) = obj.downcast::<List>() {
        return l.borrow().l.to_val().map_err(err);
    }
    Err(PyTypeError::new_err(format!(
        "cannot share a {}",
        obj.get_type().name()?
    )))
}

/// A Python object as something to store in `pool`: a proxy of this pool by
/// reference, anything else copied in.
fn to_arg(obj: &Bound<'_, PyAny>, pool: &CPool) -> PyResult<Arg> {
    if let Ok(d) = obj.downcast::<Dict>() {
        let h = d.borrow().t.as_val().clone();
        if h.pool().is_some_and(|p| p.name() == pool.name()) {
            return Ok(Arg::Shared(h));
        }
    }
    if let Ok(l) = obj.downcast::<List>() {
        let h = l.borrow().l.as_val().clone();
        if h.pool().is_some_and(|p| p.name() == pool.name()) {
            return Ok(Arg::Shared(h));
        }
    }
    if let Ok(a) = obj.downcast::<Array>() {
        let h = a.borrow().v.clone();
        if h.pool().is_some_and(|p| p.name() == pool.name()) {
            return Ok(Arg::Shared(h));
        }
    }
    if is_numpy(obj)? {
        return Ok(Arg::Shared(numpy_to_handle(obj, pool)?));
    }
    Ok(Arg::Heap(to_val(obj, 0)?))
}

/// Whether `obj` looks like a numpy array (numpy's array interface and a dtype).
fn is_numpy(obj: &Bound<'_, PyAny>) -> PyResult<bool> {
    Ok(!obj.is_instance_of::<Array>()
        && obj.hasattr("__array_interface__")?
        && obj.hasattr("dtype")?)
}

/// A Python key (hashable, as a dict key is).
fn to_key(obj: &Bound<'_, PyAny>) -> PyResult<Val> {
    let v = to_val(obj, 0)?;
    if !v.is_hashable() {
        return Err(PyTypeError::new_err(format!(
            "unhashable type: '{}'",
            v.type_name()
        )));
    }
    Ok(v)
}

/// A Python object as a handle in `pool` (copied in unless it is a proxy there).
fn to_handle(obj: &Bound<'_, PyAny>, pool: &CPool) -> PyResult<ShmVal> {
    if is_numpy(obj)? {
        return numpy_to_handle(obj, pool);
    }
    match to_arg(obj, pool)? {
        Arg::Shared(h) => Ok(h),
        Arg::Heap(v) => pool.share(&v).map_err(err),
    }
}

// --- shmval -> Python -------------------------------------------------------------

/// A shared value for Python: a proxy for a dict or list, a Python value otherwise.
fn to_py(py: Python<'_>, v: ShmVal) -> PyResult<PyObject> {
    if let Some(t) = v.as_tab() {
        return Ok(Py::new(py, Dict { t })?.into_any());
    }
    if let Some(l) = v.as_list() {
        return Ok(Py::new(py, List { l })?.into_any());
    }
    if v.arr_parts().map_err(err)?.is_some() {
        return Ok(Py::new(py, Array { v })?.into_any());
    }
    val_to_py(py, &v.to_val().map_err(err)?)
}

/// A heap value as a plain Python object (a copy).
fn val_to_py(py: Python<'_>, v: &Val) -> PyResult<PyObject> {
    use pyo3::IntoPyObjectExt;
    Ok(match v {
        Val::None => py.None(),
        Val::Bool(b) => b.into_py_any(py)?,
        Val::I8(x) => x.into_py_any(py)?,
        Val::I16(x) => x.into_py_any(py)?,
        Val::I32(x) => x.into_py_any(py)?,
        Val::I64(x) => x.into_py_any(py)?,
        Val::U8(x) => x.into_py_any(py)?,
        Val::U16(x) => x.into_py_any(py)?,
        Val::U32(x) => x.into_py_any(py)?,
        Val::U64(x) => x.into_py_any(py)?,
        Val::F32(x) => x.into_py_any(py)?,
        Val::F64(x) => x.into_py_any(py)?,
        Val::Str(s) => s.into_py_any(py)?,
        Val::Bytes(b) => PyBytes::new(py, b).into_any().unbind(),
        Val::List(items) => PyList::new(
            py,
            items
                .iter()
                .map(|x| val_to_py(py, x))
                .collect::<PyResult<Vec<_>>>()?,
        )?
        .into_any()
        .unbind(),
        Val::Tup(items) => PyTuple::new(
            py,
            items
                .iter()
                .map(|x| val_to_py(py, x))
                .collect::<PyResult<Vec<_>>>()?,
        )?
        .into_any()
        .unbind(),
        Val::Tab(m) | Val::OTab(m) => {
            let d = PyDict::new(py);
            for (k, x) in m {
                d.set_item(val_to_py(py, k)?, val_to_py(py, x)?)?;
            }
            d.into_any().unbind()
        }
        Val::Arr(a) => {
            // A numeric array: a list of its numbers for now (numpy views: next).
            let items = Val::List((0..a.len()).filter_map(|i| a.get(i)).collect());
            val_to_py(py, &items)?
        }
        other => {
            // Big ints, complex numbers: through their Python literal.
            let lit = other.to_string();
            py.import("ast")?
                .call_method1("literal_eval", (lit,))?
                .unbind()
        }
    })
}

// --- numeric arrays ----------------------------------------------------------------

/// numpy's type string of an array kind (little-endian: this is Linux on x86 or
/// little-endian ARM; the pool's byte order is the host's).
fn typestr(kind: ArrKind) -> &'static str {
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

/// A one-dimensional numpy array as one C-contiguous, aligned, native-endian array
/// (the same array when it is one already: no copy), with its dtype's kind, item
/// size, length and the address of its elements (valid while the array lives).
type NumpyParts<'py> = (Bound<'py, PyAny>, String, usize, usize, usize);

fn numpy_parts<'py>(obj: &Bound<'py, PyAny>) -> PyResult<NumpyParts<'py>> {
    let py = obj.py();
    let ndim: usize = obj.getattr("ndim")?.extract()?;
    if ndim != 1 {
        return Err(PyTypeError::new_err(format!(
            "a {ndim}-dimensional array: only one-dimensional arrays are shared so far"
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
    Ok((a, kind, size, len, ptr))
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

/// A one-dimensional numpy array as a heap array (one copy).
fn numpy_to_val(obj: &Bound<'_, PyAny>) -> PyResult<Val> {
    let (_keep, kind, size, len, ptr) = numpy_parts(obj)?;
    let unsupported = || {
        PyTypeError::new_err(format!(
            "a numpy array of dtype kind {kind:?}, {size} bytes: not a numeric array kind"
        ))
    };
    let a = match (kind.as_str(), size) {
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

/// A one-dimensional numpy array copied straight into `pool` (one copy, no heap
/// array in between).
fn numpy_to_handle(obj: &Bound<'_, PyAny>, pool: &CPool) -> PyResult<ShmVal> {
    let (_keep, kind, size, len, ptr) = numpy_parts(obj)?;
    if (kind.as_str(), size) == ("b", 1) || kind == "c" {
        return pool.share(&numpy_to_val(obj)?).map_err(err);
    }
    with_numpy!(
        kind.as_str(),
        size,
        ptr,
        len,
        |s| {
            let a = pool.new_arr(s.len()).map_err(err)?;
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
    v: ShmVal,
}

impl Array {
    fn parts(&self) -> PyResult<(ArrKind, usize, *const u8)> {
        self.v
            .arr_parts()
            .map_err(err)?
            .ok_or_else(|| Error::new_err("not an array"))
    }
}

#[pymethods]
impl Array {
    /// numpy's array interface (version 3): the shared elements, writable.
    #[getter]
    fn __array_interface__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let (kind, len, ptr) = self.parts()?;
        let d = PyDict::new(py);
        d.set_item("shape", (len,))?;
        d.set_item("typestr", typestr(kind))?;
        d.set_item("data", (ptr as usize, false))?;
        d.set_item("version", 3)?;
        Ok(d)
    }

    fn __len__(&self) -> PyResult<usize> {
        Ok(self.parts()?.1)
    }

    fn __getitem__(&self, py: Python<'_>, i: isize) -> PyResult<PyObject> {
        let n = self.__len__()? as isize;
        let j = if i < 0 { i + n } else { i };
        if j < 0 || j >= n {
            return Err(PyIndexError::new_err("array index out of range"));
        }
        let Val::Arr(a) = self.v.to_val().map_err(err)? else {
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

// --- Pool -------------------------------------------------------------------------

/// A pool: a named region of shared memory holding shared values.
#[pyclass(module = "shmval")]
pub struct Pool {
    inner: Option<CPool>,
}

impl Pool {
    fn get(&self) -> PyResult<&CPool> {
        self.inner
            .as_ref()
            .ok_or_else(|| PyValueError::new_err("the pool is closed"))
    }
}

#[pymethods]
impl Pool {
    /// Creates the pool `name` of `size` bytes (files `/dev/shm/NAME_boot` and
    /// `/dev/shm/NAME`, mode `mode`); `remove_on_drop`: its files go when this
    /// handle is closed.
    #[staticmethod]
    #[pyo3(signature = (name, size, mode = 0o600, remove_on_drop = false))]
    fn create(
        py: Python<'_>,
        name: &str,
        size: u64,
        mode: u32,
        remove_on_drop: bool,
    ) -> PyResult<Pool> {
        let opts = PoolOptions::new().mode(mode).remove_on_drop(remove_on_drop);
        let p = py
            .allow_threads(|| CPool::create_with(name, size, &opts))
            .map_err(err)?;
        Ok(Pool { inner: Some(p) })
    }

    /// Opens the pool `name`, waiting up to `timeout` seconds for it to exist.
    #[staticmethod]
    #[pyo3(signature = (name, timeout = 5.0))]
    fn open(py: Python<'_>, name: &str, timeout: f64) -> PyResult<Pool> {
        let opts = PoolOptions::new().timeout(seconds(timeout)?);
        let p = py
            .allow_threads(|| CPool::open_with(name, &opts))
            .map_err(err)?;
        Ok(Pool { inner: Some(p) })
    }

    /// Opens the pool `name`, or creates it with `size` bytes if there is none.
    #[staticmethod]
    #[pyo3(signature = (name, size, mode = 0o600))]
    fn open_or_create(py: Python<'_>, name: &str, size: u64, mode: u32) -> PyResult<Pool> {
        let opts = PoolOptions::new().mode(mode);
        let p = py
            .allow_threads(|| CPool::open_or_create(name, size, &opts))
            .map_err(err)?;
        Ok(Pool { inner: Some(p) })
    }

    /// Detaches (values and pipes of it stay usable until they are dropped).
    fn close(&mut self) {
        self.inner = None;
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __exit__(
        &mut self,
        _t: &Bound<'_, PyAny>,
        _v: &Bound<'_, PyAny>,
        _tb: &Bound<'_, PyAny>,
    ) -> bool {
        self.close();
        false
    }

    /// The pool's name.
    #[getter]
    fn name(&self) -> PyResult<String> {
        Ok(self.get()?.name().to_owned())
    }

    /// The shared root dict, where named values live.
    #[getter]
    fn root(&self) -> PyResult<Dict> {
        Ok(Dict {
            t: self.get()?.root().map_err(err)?,
        })
    }

    /// Copies `obj` into the pool: a proxy for a dict or list, the value otherwise.
    fn share(&self, py: Python<'_>, obj: &Bound<'_, PyAny>) -> PyResult<PyObject> {
        let pool = self.get()?;
        to_py(py, to_handle(obj, pool)?)
    }

    /// Gives back what processes that died attached still held (their handles'
    /// references, their allocator caches); every open does it too. Returns how
    /// many references and cache slots came back.
    fn reclaim_dead<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let r = self.get()?.reclaim_dead();
        let d = PyDict::new(py);
        d.set_item("references", r.references)?;
        d.set_item("slots", r.slots)?;
        Ok(d)
    }

    /// Bytes: `total`, `in_use`, `free`, `largest_free`, `high_water`.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let s = self.get()?.stats();
        let d = PyDict::new(py);
        d.set_item("total", s.total)?;
        d.set_item("in_use", s.in_use)?;
        d.set_item("free", s.free)?;
        d.set_item("largest_free", s.largest_free)?;
        d.set_item("high_water", s.high_water)?;
        Ok(d)
    }

    fn __repr__(&self) -> String {
        match &self.inner {
            Some(p) => format!("shmval.Pool({:?})", p.name()),
            None => "shmval.Pool(<closed>)".into(),
        }
    }
}

fn seconds(t: f64) -> PyResult<Duration> {
    Duration::try_from_secs_f64(t)
        .map_err(|_| PyValueError::new_err("a timeout is a non-negative number of seconds"))
}

// --- Dict -------------------------------------------------------------------------

/// A shared dict, as a Python mapping (every operation atomic across processes).
#[pyclass(module = "shmval", mapping)]
pub struct Dict {
    t: ShmTab,
}

#[pymethods]
impl Dict {
    fn __getitem__(&self, py: Python<'_>, key: &Bound<'_, PyAny>) -> PyResult<PyObject> {
        match self.t.get(to_key(key)?).map_err(err)? {
            Some(v) => to_py(py, v),
            None => Err(PyKeyError::new_err(key.clone().unbind())),
        }
    }

    fn __setitem__(&self, key: &Bound<'_, PyAny>, value: &Bound<'_, PyAny>) -> PyResult<()> {
        let pool = self.t.as_val().pool().expect("a dict lives in a pool");
        self.t
            .insert(to_key(key)?, to_arg(value, pool)?)
            .map_err(err)?;
        Ok(())
    }

    fn __delitem__(&self, key: &Bound<'_, PyAny>) -> PyResult<()> {
        match self.t.remove(to_key(key)?).map_err(err)? {
            Some(_) => Ok(()),
            None => Err(PyKeyError::new_err(key.clone().unbind())),
        }
    }

    fn __len__(&self) -> PyResult<usize> {
        self.t.len().map_err(err)
    }

    fn __contains__(&self, key: &Bound<'_, PyAny>) -> PyResult<bool> {
        match to_key(key) {
            Ok(k) => self.t.contains_key(k).map_err(err),
            Err(_) => Ok(false),
        }
    }

    fn __iter__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        Ok(self.keys(py)?.into_any().try_iter()?.into_any())
    }

    /// The keys (a snapshot list).
    fn keys<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let ks = self
            .t
            .keys()
            .map_err(err)?
            .into_iter()
            .map(|k| to_py(py, k))
            .collect::<PyResult<Vec<_>>>()?;
        PyList::new(py, ks)
    }

    /// The values (a snapshot list).
    fn values<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let vs = self
            .t
            .entries()
            .map_err(err)?
            .into_iter()
            .map(|(_, v)| to_py(py, v))
            .collect::<PyResult<Vec<_>>>()?;
        PyList::new(py, vs)
    }

    /// The `(key, value)` pairs (a snapshot list).
    fn items<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let items = self
            .t
            .entries()
            .map_err(err)?
            .into_iter()
            .map(|(k, v)| Ok(PyTuple::new(py, [to_py(py, k)?, to_py(py, v)?])?.into_any()))
            .collect::<PyResult<Vec<_>>>()?;
        PyList::new(py, items)
    }

    #[pyo3(signature = (key, default = None))]
    fn get(
        &self,
        py: Python<'_>,
        key: &Bound<'_, PyAny>,
        default: Option<PyObject>,
    ) -> PyResult<PyObject> {
        match self.t.get(to_key(key)?).map_err(err)? {
            Some(v) => to_py(py, v),
            None => Ok(default.unwrap_or_else(|| py.None())),
        }
    }

    #[pyo3(signature = (key, *default))]
    fn pop(
        &self,
        py: Python<'_>,
        key: &Bound<'_, PyAny>,
        default: &Bound<'_, PyTuple>,
    ) -> PyResult<PyObject> {
        match self.t.remove(to_key(key)?).map_err(err)? {
            Some(v) => to_py(py, v),
            None if !default.is_empty() => Ok(default.get_item(0)?.unbind()),
            None => Err(PyKeyError::new_err(key.clone().unbind())),
        }
    }

    #[pyo3(signature = (key, default = None))]
    fn setdefault(
        &self,
        py: Python<'_>,
        key: &Bound<'_, PyAny>,
        default: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<PyObject> {
        let k = to_key(key)?;
        let lock = self.t.lock().map_err(err)?;
        if let Some(v) = lock.get(k.clone()).map_err(err)? {
            return to_py(py, v);
        }
        let pool = self.t.as_val().pool().expect("a dict lives in a pool");
        let none = py.None().into_bound(py);
        let d = default.unwrap_or(&none);
        lock.insert(k.clone(), to_arg(d, pool)?).map_err(err)?;
        let v = lock.get(k).map_err(err)?.expect("just inserted");
        drop(lock);
        to_py(py, v)
    }

    /// Removes and returns the last `(key, value)` pair inserted.
    fn popitem(&self, py: Python<'_>) -> PyResult<PyObject> {
        match self.t.popitem().map_err(err)? {
            Some((k, v)) => Ok(PyTuple::new(py, [to_py(py, k)?, to_py(py, v)?])?
                .into_any()
                .unbind()),
            None => Err(PyKeyError::new_err("popitem(): dictionary is empty")),
        }
    }

    #[pyo3(signature = (other = None, **kwargs))]
    fn update(
        &self,
        other: Option<&Bound<'_, PyAny>>,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<()> {
        if let Some(o) = other {
            let pairs = if o.hasattr("keys")? {
                o.call_method0("keys")?
                    .try_iter()?
                    .map(|k| {
                        let k = k?;
                        let v = o.get_item(&k)?;
                        Ok((k, v))
                    })
                    .collect::<PyResult<Vec<_>>>()?
            } else {
                o.try_iter()?
                    .map(|kv| {
                        let kv = kv?;
                        Ok((kv.get_item(0)?, kv.get_item(1)?))
                    })
                    .collect::<PyResult<Vec<_>>>()?
            };
            for (k, v) in pairs {
                self.__setitem__(&k, &v)?;
            }
        }
        if let Some(kw) = kwargs {
            for (k, v) in kw.iter() {
                self.__setitem__(&k, &v)?;
            }
        }
        Ok(())
    }

    fn clear(&self) -> PyResult<()> {
        while self.t.popitem().map_err(err)?.is_some() {}
        Ok(())
    }

    /// A plain Python dict (a deep copy).
    fn to_python(&self, py: Python<'_>) -> PyResult<PyObject> {
        val_to_py(py, &self.t.to_val().map_err(err)?)
    }

    /// A plain Python dict (a deep copy), as `dict.copy()` gives a new dict.
    fn copy(&self, py: Python<'_>) -> PyResult<PyObject> {
        self.to_python(py)
    }

    fn __eq__(&self, py: Python<'_>, other: &Bound<'_, PyAny>) -> PyResult<bool> {
        let mine = self.to_python(py)?;
        let theirs = match other.downcast::<Dict>() {
            Ok(d) => d.borrow().to_python(py)?.into_bound(py),
            Err(_) => other.clone(),
        };
        mine.bind(py).eq(theirs)
    }

    fn __repr__(&self) -> String {
        self.t.to_string()
    }
}

// --- List -------------------------------------------------------------------------

/// A shared list, as a Python sequence (every operation atomic across processes).
#[pyclass(module = "shmval", sequence)]
pub struct List {
    l: ShmList,
}

impl List {
    fn index(&self, i: isize) -> PyResult<usize> {
        let n = self.l.len().map_err(err)? as isize;
        let j = if i < 0 { i + n } else { i };
        if j < 0 || j >= n {
            return Err(PyIndexError::new_err("list index out of range"));
        }
        Ok(j as usize)
    }
}

#[pymethods]
impl List {
    fn __len__(&self) -> PyResult<usize> {
        self.l.len().map_err(err)
    }

    fn __getitem__(&self, py: Python<'_>, i: isize) -> PyResult<PyObject> {
        let j = self.index(i)?;
        match self.l.get(j).map_err(err)? {
            Some(v) => to_py(py, v),
            None => Err(PyIndexError::new_err("list index out of range")),
        }
    }

    fn __setitem__(&self, i: isize, value: &Bound<'_, PyAny>) -> PyResult<()> {
        let j = self.index(i)?;
        let pool = self.l.as_val().pool().expect("a list lives in a pool");
        self.l.set(j, to_arg(value, pool)?).map_err(err)?;
        Ok(())
    }

    fn append(&self, value: &Bound<'_, PyAny>) -> PyResult<()> {
        let pool = self.l.as_val().pool().expect("a list lives in a pool");
        self.l.push(to_arg(value, pool)?).map_err(err)
    }

    fn extend(&self, values: &Bound<'_, PyAny>) -> PyResult<()> {
        for v in values.try_iter()? {
            self.append(&v?)?;
        }
        Ok(())
    }

    /// Removes and returns the last item.
    fn pop(&self, py: Python<'_>) -> PyResult<PyObject> {
        match self.l.pop().map_err(err)? {
            Some(v) => to_py(py, v),
            None => Err(PyIndexError::new_err("pop from empty list")),
        }
    }

    fn __iter__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let items = self
            .l
            .items()
            .map_err(err)?
            .into_iter()
            .map(|v| to_py(py, v))
            .collect::<PyResult<Vec<_>>>()?;
        Ok(PyList::new(py, items)?.into_any().try_iter()?.into_any())
    }

    /// A plain Python list (a deep copy).
    fn to_python(&self, py: Python<'_>) -> PyResult<PyObject> {
        val_to_py(py, &self.l.to_val().map_err(err)?)
    }

    fn copy(&self, py: Python<'_>) -> PyResult<PyObject> {
        self.to_python(py)
    }

    fn __eq__(&self, py: Python<'_>, other: &Bound<'_, PyAny>) -> PyResult<bool> {
        let mine = self.to_python(py)?;
        let theirs = match other.downcast::<List>() {
            Ok(l) => l.borrow().to_python(py)?.into_bound(py),
            Err(_) => other.clone(),
        };
        mine.bind(py).eq(theirs)
    }

    fn __repr__(&self) -> String {
        self.l.to_string()
    }
}

// --- Pipe -------------------------------------------------------------------------

/// A named pipe: a bounded queue of shared values between processes.
#[pyclass(module = "shmval")]
pub struct Pipe {
    p: CPipe,
}

/// Runs `attempt` with the GIL released in slices of [`SLICE`] until it gives a
/// result or `timeout` passes (`None`: no limit), looking for signals between
/// slices; `attempt` gets the slice's length and says `None` for "timed out".
fn blocking<T: Send>(
    py: Python<'_>,
    timeout: Option<f64>,
    mut attempt: impl FnMut(Duration) -> Option<T> + Send,
) -> PyResult<Option<T>> {
    let deadline = timeout
        .map(seconds)
        .transpose()?
        .map(|d| Instant::now() + d);
    loop {
        let slice = match deadline {
            Some(d) => d.saturating_duration_since(Instant::now()).min(SLICE),
            None => SLICE,
        };
        if let Some(r) = py.allow_threads(|| attempt(slice)) {
            return Ok(Some(r));
        }
        py.check_signals()?;
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Ok(None);
        }
    }
}

#[pymethods]
impl Pipe {
    /// Creates the pipe `name` in `pool` with room for `capacity` values.
    #[staticmethod]
    fn create(pool: &Pool, name: &str, capacity: u64) -> PyResult<Pipe> {
        Ok(Pipe {
            p: CPipe::create(pool.get()?, name, capacity).map_err(err)?,
        })
    }

    /// Opens the pipe `name` of `pool`, waiting up to `timeout` seconds for it.
    #[staticmethod]
    #[pyo3(signature = (pool, name, timeout = 5.0))]
    fn open(py: Python<'_>, pool: &Pool, name: &str, timeout: f64) -> PyResult<Pipe> {
        let (p, t) = (pool.get()?, seconds(timeout)?);
        let pipe = py.allow_threads(|| CPipe::open(p, name, t)).map_err(err)?;
        Ok(Pipe { p: pipe })
    }

    /// Sends `obj` (copied into the pool, or a proxy's value by reference), waiting
    /// up to `timeout` seconds for room (`None`: as long as it takes).
    #[pyo3(signature = (obj, timeout = None))]
    fn send(&self, py: Python<'_>, obj: &Bound<'_, PyAny>, timeout: Option<f64>) -> PyResult<()> {
        let mut v = Some(to_handle(obj, self.p.pool())?);
        let p = &self.p;
        let mut failure = None;
        let sent = blocking(py, timeout, |slice| {
            match p.send_timeout(v.take().expect("a value to send"), slice) {
                Ok(()) => Some(()),
                Err(SendError::Timeout(back)) => {
                    v = Some(back);
                    None
                }
                Err(e) => {
                    failure = Some(e.to_string());
                    Some(())
                }
            }
        })?;
        match (sent, failure) {
            (_, Some(f)) if f.contains("closed") => Err(Closed::new_err(f)),
            (_, Some(f)) => Err(Error::new_err(f)),
            (Some(()), None) => Ok(()),
            (None, None) => Err(PyTimeoutError::new_err("the pipe stayed full")),
        }
    }

    /// Receives the next value, waiting up to `timeout` seconds (`None`: as long
    /// as it takes). Raises `TimeoutError`, or `Closed` once closed and drained.
    #[pyo3(signature = (timeout = None))]
    fn recv(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<PyObject> {
        let p = &self.p;
        let got = blocking(py, timeout, |slice| match p.recv_timeout(slice) {
            Err(RecvError::Timeout) => None,
            r => Some(r),
        })?;
        match got {
            Some(Ok(v)) => to_py(py, v),
            Some(Err(RecvError::Closed)) => Err(Closed::new_err("pipe closed")),
            Some(Err(e)) => Err(err(e)),
            None => Err(PyTimeoutError::new_err(
                "nothing received before the deadline",
            )),
        }
    }

    /// Closes the pipe: senders are refused; receivers get what is in it, then
    /// `Closed`.
    fn close(&self) {
        self.p.close();
    }

    /// The pipe's name.
    #[getter]
    fn name(&self) -> String {
        self.p.name().to_owned()
    }

    fn __len__(&self) -> usize {
        self.p.len() as usize
    }

    fn __iter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __next__(&self, py: Python<'_>) -> PyResult<Option<PyObject>> {
        match self.recv(py, None) {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.is_instance_of::<Closed>(py) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

// --- Broadcast --------------------------------------------------------------------

/// A broadcast: every subscriber receives every value (as its policy allows).
#[pyclass(module = "shmval")]
pub struct Broadcast {
    b: CBroadcast,
}

/// A subscription to a broadcast.
#[pyclass(module = "shmval")]
pub struct Subscriber {
    s: CSubscriber,
}

fn policy(name: &str, wait: Option<f64>) -> PyResult<Policy> {
    Ok(match (name, wait) {
        ("block", _) => Policy::Block,
        ("drop_oldest", None) => Policy::DropOldest,
        ("drop_oldest", Some(t)) => Policy::DropAfter(seconds(t)?),
        _ => {
            return Err(PyValueError::new_err(
                "policy is 'block' or 'drop_oldest' (with an optional wait)",
            ))
        }
    })
}

#[pymethods]
impl Broadcast {
    /// Creates the broadcast `name` with room for `capacity` values; `policy`
    /// `"block"` (the sender waits for the slowest subscriber) or `"drop_oldest"`
    /// (the slowest skip values; with `wait`, after waiting that long).
    #[staticmethod]
    #[pyo3(signature = (pool, name, capacity, policy = "block", wait = None))]
    fn create(
        pool: &Pool,
        name: &str,
        capacity: u64,
        policy: &str,
        wait: Option<f64>,
    ) -> PyResult<Broadcast> {
        let p = self::policy(policy, wait)?;
        Ok(Broadcast {
            b: CBroadcast::create(pool.get()?, name, capacity, p).map_err(err)?,
        })
    }

    /// Opens the broadcast `name` of `pool`, waiting up to `timeout` seconds for it.
    #[staticmethod]
    #[pyo3(signature = (pool, name, timeout = 5.0))]
    fn open(py: Python<'_>, pool: &Pool, name: &str, timeout: f64) -> PyResult<Broadcast> {
        let (p, t) = (pool.get()?, seconds(timeout)?);
        let b = py
            .allow_threads(|| CBroadcast::open(p, name, t))
            .map_err(err)?;
        Ok(Broadcast { b })
    }

    /// A new subscription: it receives what is sent from now on.
    fn subscribe(&self) -> PyResult<Subscriber> {
        Ok(Subscriber {
            s: self.b.subscribe().map_err(err)?,
        })
    }

    /// Sends `obj` to every subscriber, waiting up to `timeout` seconds for room
    /// (`None`: as long as the policy says).
    #[pyo3(signature = (obj, timeout = None))]
    fn send(&self, py: Python<'_>, obj: &Bound<'_, PyAny>, timeout: Option<f64>) -> PyResult<()> {
        let mut v = Some(to_handle(obj, self.b.pool())?);
        let b = &self.b;
        let mut failure = None;
        let sent = blocking(py, timeout, |slice| {
            match b.send_timeout(v.take().expect("a value to send"), slice) {
                Ok(()) => Some(()),
                Err(SendError::Timeout(back)) => {
                    v = Some(back);
                    None
                }
                Err(e) => {
                    failure = Some(e.to_string());
                    Some(())
                }
            }
        })?;
        match (sent, failure) {
            (_, Some(f)) if f.contains("closed") => Err(Closed::new_err(f)),
            (_, Some(f)) => Err(Error::new_err(f)),
            (Some(()), None) => Ok(()),
            (None, None) => Err(PyTimeoutError::new_err("the broadcast stayed full")),
        }
    }

    /// Closes the broadcast: subscribers get what is in it, then `Closed`.
    fn close(&self) {
        self.b.close();
    }

    /// How many subscribe now.
    #[getter]
    fn subscribers(&self) -> usize {
        self.b.subscribers()
    }
}

#[pymethods]
impl Subscriber {
    /// Receives the next value, waiting up to `timeout` seconds (`None`: as long
    /// as it takes). Raises `TimeoutError`, `shmval.Lagged(n)` after skipping `n`
    /// values, or `Closed` once the broadcast is closed and drained.
    #[pyo3(signature = (timeout = None))]
    fn recv(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<PyObject> {
        let s = &self.s;
        let got = blocking(py, timeout, |slice| match s.recv_timeout(slice) {
            Err(BroadcastRecvError::Timeout) => None,
            r => Some(r),
        })?;
        match got {
            Some(Ok(v)) => to_py(py, v),
            Some(Err(BroadcastRecvError::Closed)) => Err(Closed::new_err("broadcast closed")),
            Some(Err(BroadcastRecvError::Lagged(n))) => Err(Lagged::new_err(n)),
            Some(Err(e)) => Err(err(e)),
            None => Err(PyTimeoutError::new_err(
                "nothing received before the deadline",
            )),
        }
    }

    fn __iter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __next__(&self, py: Python<'_>) -> PyResult<Option<PyObject>> {
        match self.recv(py, None) {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.is_instance_of::<Closed>(py) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// The compiled part of the `shmval` package.
#[pymodule]
fn _shmval(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Pool>()?;
    m.add_class::<Dict>()?;
    m.add_class::<List>()?;
    m.add_class::<Array>()?;
    m.add_class::<Pipe>()?;
    m.add_class::<Broadcast>()?;
    m.add_class::<Subscriber>()?;
    m.add("Lagged", m.py().get_type::<Lagged>())?;
    m.add("Error", m.py().get_type::<Error>())?;
    m.add("Closed", m.py().get_type::<Closed>())?;
    Ok(())
}
