//! `shmval.Dict` and `shmval.List`: proxies on shared containers with Python's
//! semantics.

use crate::convert::{to_arg, to_key, to_py, val_to_py};
use crate::err;
use pyo3::exceptions::{PyIndexError, PyKeyError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyTuple};
use shm::{ShmList, ShmTab};

/// `==` of a container proxy, given as its plain copy `mine`, with `other`: another
/// container proxy compares by its plain copy too, anything else as it is (so a
/// shared dict equals a plain one with the same items, as Python's `==` says).
fn eq_plain(py: Python<'_>, mine: PyObject, other: &Bound<'_, PyAny>) -> PyResult<bool> {
    let theirs = if other.is_instance_of::<Dict>() || other.is_instance_of::<List>() {
        other.call_method0("to_python")?
    } else {
        other.clone()
    };
    mine.bind(py).eq(theirs)
}

// --- Dict -------------------------------------------------------------------------

/// A shared dict, as a Python mapping (every operation atomic across processes).
#[pyclass(module = "shmval", mapping)]
pub struct Dict {
    pub(crate) t: ShmTab,
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
    /// Removes and returns a `(key, value)` pair: the last inserted; for an
    /// OrderedDict, the first with `last=False`.
    #[pyo3(signature = (last = true))]
    fn popitem(&self, py: Python<'_>, last: bool) -> PyResult<PyObject> {
        let popped = match self.t.as_val().as_otab() {
            Some(o) => o.popitem(last).map_err(err)?,
            None if !last => {
                return Err(pyo3::exceptions::PyTypeError::new_err(
                    "popitem(last=False) is an OrderedDict's; this is a dict",
                ))
            }
            None => self.t.popitem().map_err(err)?,
        };
        match popped {
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

    /// An OrderedDict's `move_to_end`: `key` to the end (`last`) or the front;
    /// `KeyError` if absent.
    #[pyo3(signature = (key, last = true))]
    fn move_to_end(&self, key: &Bound<'_, PyAny>, last: bool) -> PyResult<()> {
        let Some(o) = self.t.as_val().as_otab() else {
            return Err(pyo3::exceptions::PyAttributeError::new_err(
                "move_to_end is an OrderedDict's; this is a dict",
            ));
        };
        if o.move_to_end(to_key(key)?, last).map_err(err)? {
            Ok(())
        } else {
            Err(PyKeyError::new_err(key.clone().unbind()))
        }
    }

    /// Whether this is a shared `collections.OrderedDict` (its equality with
    /// another OrderedDict minds the order, as Python's does).
    #[getter]
    fn ordered(&self) -> bool {
        self.t.as_val().as_otab().is_some()
    }

    fn clear(&self) -> PyResult<()> {
        while self.t.popitem().map_err(err)?.is_some() {}
        Ok(())
    }

    /// A plain Python dict, or `collections.OrderedDict` (a deep copy).
    fn to_python(&self, py: Python<'_>) -> PyResult<PyObject> {
        val_to_py(py, &self.t.to_val().map_err(err)?)
    }

    /// A plain Python dict (a deep copy), as `dict.copy()` gives a new dict.
    fn copy(&self, py: Python<'_>) -> PyResult<PyObject> {
        self.to_python(py)
    }

    fn __eq__(&self, py: Python<'_>, other: &Bound<'_, PyAny>) -> PyResult<bool> {
        eq_plain(py, self.to_python(py)?, other)
    }

    fn __repr__(&self) -> String {
        self.t.to_string()
    }
}

// --- List -------------------------------------------------------------------------

/// A shared list, as a Python sequence (every operation atomic across processes).
#[pyclass(module = "shmval", sequence)]
pub struct List {
    pub(crate) l: ShmList,
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
        eq_plain(py, self.to_python(py)?, other)
    }

    fn __repr__(&self) -> String {
        self.l.to_string()
    }
}
