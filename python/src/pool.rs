//! `shmval.Pool`.

use crate::containers::Dict;
use crate::convert::{to_handle, to_py};
use crate::{err, seconds};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use shm::{Pool as CPool, PoolOptions};

// --- Pool -------------------------------------------------------------------------

/// A pool: a named region of shared memory holding shared values.
#[pyclass(module = "shmval")]
pub struct Pool {
    inner: Option<CPool>,
}

impl Pool {
    pub(crate) fn get(&self) -> PyResult<&CPool> {
        self.inner
            .as_ref()
            .ok_or_else(|| PyValueError::new_err("the pool is closed"))
    }
}

#[pymethods]
impl Pool {
    /// Creates the pool `name` of `size` bytes (files `/dev/shm/NAME_boot` and
    /// `/dev/shm/NAME`, mode `mode`); `remove_on_drop`: its files go when this
    /// handle is closed; `max_size`: it grows as it fills, up to that many bytes,
    /// while other processes use it.
    #[staticmethod]
    #[pyo3(signature = (name, size, mode = 0o600, remove_on_drop = false, max_size = None))]
    fn create(
        py: Python<'_>,
        name: &str,
        size: u64,
        mode: u32,
        remove_on_drop: bool,
        max_size: Option<u64>,
    ) -> PyResult<Pool> {
        let mut opts = PoolOptions::new().mode(mode).remove_on_drop(remove_on_drop);
        if let Some(m) = max_size {
            opts = opts.max_size(m);
        }
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

    /// Opens the pool `name`, or creates it with `size` bytes if there is none
    /// (growing up to `max_size` bytes, if given).
    #[staticmethod]
    #[pyo3(signature = (name, size, mode = 0o600, max_size = None))]
    fn open_or_create(
        py: Python<'_>,
        name: &str,
        size: u64,
        mode: u32,
        max_size: Option<u64>,
    ) -> PyResult<Pool> {
        let mut opts = PoolOptions::new().mode(mode);
        if let Some(m) = max_size {
            opts = opts.max_size(m);
        }
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

    /// Bytes of the pool now (it grows, when made with `max_size`).
    #[getter]
    fn size(&self) -> PyResult<u64> {
        Ok(self.get()?.size())
    }

    /// Most bytes the pool may grow to (its size, when made without `max_size`).
    #[getter]
    fn max_size(&self) -> PyResult<u64> {
        Ok(self.get()?.max_size())
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
