//! The Python module `shmval` (its compiled part, `shmval._shmval`): pools, the
//! shared root dict and the containers in it as Python mapping and sequence
//! proxies, numeric arrays as numpy views, pipes and broadcasts. Values are copied
//! in from Python objects; reading a container gives a proxy on the shared one,
//! reading anything else a Python value. Blocking calls release the GIL and wake for
//! signals (Ctrl-C) every 50 ms.

mod containers;
mod convert;
mod numpy;
mod pipes;
mod pool;

use containers::{Dict, List};
use numpy::Array;
use pipes::{Broadcast, Pipe, Subscriber};
use pool::Pool;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use std::time::Duration;

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

pub(crate) fn err(e: impl std::fmt::Display) -> PyErr {
    Error::new_err(e.to_string())
}

pub(crate) fn seconds(t: f64) -> PyResult<Duration> {
    Duration::try_from_secs_f64(t)
        .map_err(|_| PyValueError::new_err("a timeout is a non-negative number of seconds"))
}

/// Reads a pickle (protocols 0 to 5) of the values shmval holds: dicts, lists,
/// tuples, numbers, strings, bytes, `array.array`, numpy arrays of numbers (with
/// their shape) and numpy scalars; numeric arrays come back as numpy arrays when
/// numpy is installed (lists otherwise). Never runs code from the pickle: anything
/// else (a class instance, a set) raises `shmval.Error`.
#[pyfunction]
fn from_pickle(py: Python<'_>, data: &[u8]) -> PyResult<PyObject> {
    let v = shm::from_pickle(data).map_err(err)?;
    let np = py.import("numpy").ok();
    convert::val_to_py_with(py, &v, np.as_ref())
}

/// Writes `obj` as a pickle of `protocol` (2 to 5) the way shmval (and the Rust
/// `to_pickle`) writes it: arrays of 0 or 2+ dimensions as numpy arrays, one
/// dimension as `array.array` — or as numpy arrays too with `numpy=True`.
#[pyfunction]
#[pyo3(signature = (obj, protocol = 2, numpy = false))]
fn to_pickle<'py>(
    py: Python<'py>,
    obj: &Bound<'py, PyAny>,
    protocol: u8,
    numpy: bool,
) -> PyResult<Bound<'py, pyo3::types::PyBytes>> {
    let v = convert::to_val(obj, 0)?;
    let write = if numpy {
        shm::to_pickle_numpy
    } else {
        shm::to_pickle
    };
    let b = write(&v, protocol).map_err(err)?;
    Ok(pyo3::types::PyBytes::new(py, &b))
}

/// The compiled part of the `shmval` package.
#[pymodule]
fn _shmval(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(from_pickle, m)?)?;
    m.add_function(wrap_pyfunction!(to_pickle, m)?)?;
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
