//! Python objects to shared values and back.

use crate::containers::{Dict, List};
use crate::err;
use crate::numpy::{is_numpy, numpy_to_handle, numpy_to_val, Array};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};
use shm::{Arg, Pool as CPool, ShmVal, Val};

/// Deepest nesting copied in (as Python's recursion limit, roughly).
const MAX_DEPTH: usize = 1000;

// --- Python -> shmval -------------------------------------------------------------

/// A Python object as a heap value (copied in when stored).
pub(crate) fn to_val(obj: &Bound<'_, PyAny>, depth: usize) -> PyResult<Val> {
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
        // A plain dict (the common case) without looking up OrderedDict.
        let ordered = !obj.is_exact_instance_of::<PyDict>()
            && obj.is_instance(&obj.py().import("collections")?.getattr("OrderedDict")?)?;
        let mut m = shm::Map::with_capacity(d.len());
        for (k, v) in d.iter() {
            let k = to_val(&k, depth + 1)?;
            if !k.is_hashable() {
                return Err(PyTypeError::new_err(format!(
                    "unhashable key of type {}",
                    k.type_name()
                )));
            }
            m.insert(k, to_val(&v, depth + 1)?);
        }
        return Ok(if ordered { Val::OTab(m) } else { Val::Tab(m) });
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
pub(crate) fn to_arg(obj: &Bound<'_, PyAny>, pool: &CPool) -> PyResult<Arg> {
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

/// A Python key (hashable, as a dict key is).
pub(crate) fn to_key(obj: &Bound<'_, PyAny>) -> PyResult<Val> {
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
pub(crate) fn to_handle(obj: &Bound<'_, PyAny>, pool: &CPool) -> PyResult<ShmVal> {
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
pub(crate) fn to_py(py: Python<'_>, v: ShmVal) -> PyResult<PyObject> {
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
pub(crate) fn val_to_py(py: Python<'_>, v: &Val) -> PyResult<PyObject> {
    val_to_py_with(py, v, None)
}

/// As [`val_to_py`], numeric arrays as numpy arrays when `np` is numpy.
pub(crate) fn val_to_py_with(
    py: Python<'_>,
    v: &Val,
    np: Option<&Bound<'_, PyModule>>,
) -> PyResult<PyObject> {
    use pyo3::IntoPyObjectExt;
    let val_to_py = |py, v| val_to_py_with(py, v, np);
    if let (Some(np), Val::Arr(_) | Val::NdArr(_)) = (np, v) {
        let (a, shape) = match v {
            Val::Arr(a) => (a, vec![a.len()]),
            Val::NdArr(a) => (a.data(), a.shape().to_vec()),
            _ => unreachable!(),
        };
        let bytes = PyBytes::new(py, a.as_bytes());
        let flat = np.call_method1("frombuffer", (bytes, crate::numpy::typestr(a.kind())))?;
        return Ok(flat
            .call_method1("reshape", (PyTuple::new(py, shape)?,))?
            .call_method0("copy")?
            .unbind());
    }
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
        Val::List(items) | Val::Tup(items) => {
            let items = items
                .iter()
                .map(|x| val_to_py(py, x))
                .collect::<PyResult<Vec<_>>>()?;
            if matches!(v, Val::List(_)) {
                PyList::new(py, items)?.into_any().unbind()
            } else {
                PyTuple::new(py, items)?.into_any().unbind()
            }
        }
        Val::Tab(m) => {
            let d = PyDict::new(py);
            for (k, x) in m {
                d.set_item(val_to_py(py, k)?, val_to_py(py, x)?)?;
            }
            d.into_any().unbind()
        }
        Val::OTab(m) => {
            let d = py.import("collections")?.getattr("OrderedDict")?.call0()?;
            for (k, x) in m {
                d.set_item(val_to_py(py, k)?, val_to_py(py, x)?)?;
            }
            d.unbind()
        }
        Val::Arr(a) => {
            // A numeric array copied out: a list of its numbers.
            let items = Val::List((0..a.len()).filter_map(|i| a.get(i)).collect());
            val_to_py(py, &items)?
        }
        Val::NdArr(a) => nested(py, a.shape(), a.data(), 0)?,
        other => {
            // Big ints, complex numbers: through their Python literal.
            let lit = other.to_string();
            py.import("ast")?
                .call_method1("literal_eval", (lit,))?
                .unbind()
        }
    })
}

/// The elements `at..` of `data` in the shape `shape` as nested lists (numpy's
/// `tolist()`; no dimensions: the element).
fn nested(py: Python<'_>, shape: &[usize], data: &shm::Arr, at: usize) -> PyResult<PyObject> {
    let Some((&n, rest)) = shape.split_first() else {
        return val_to_py(py, &data.get(at).unwrap_or(Val::None));
    };
    let step: usize = rest.iter().product();
    let items = (0..n)
        .map(|i| nested(py, rest, data, at + i * step))
        .collect::<PyResult<Vec<_>>>()?;
    Ok(PyList::new(py, items)?.into_any().unbind())
}
