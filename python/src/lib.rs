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
