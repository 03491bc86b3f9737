//! `shmval.Pipe`, `shmval.Broadcast` and `shmval.Subscriber`: blocking calls with
//! the GIL released, in slices that look for signals.

use crate::convert::{to_handle, to_py};
use crate::pool::Pool;
use crate::{err, seconds, Closed, Error, Lagged};
use pyo3::exceptions::{PyTimeoutError, PyValueError};
use pyo3::prelude::*;
use shm::{
    Broadcast as CBroadcast, BroadcastRecvError, Pipe as CPipe, Policy, RecvError, SendError,
    ShmVal, Subscriber as CSubscriber,
};
use std::time::{Duration, Instant};

/// How long a blocking call waits between two looks for a signal (Ctrl-C).
const SLICE: Duration = Duration::from_millis(50);

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

/// Sends `v` through `send` (a pipe's or a broadcast's `send_timeout`) in GIL-free
/// slices until it goes, `timeout` passes (`TimeoutError`, saying `full`), or it
/// cannot (`Closed`; `Error` for anything else).
fn send_blocking(
    py: Python<'_>,
    timeout: Option<f64>,
    v: ShmVal,
    full: &'static str,
    send: impl Fn(ShmVal, Duration) -> Result<(), SendError> + Sync,
) -> PyResult<()> {
    let mut v = Some(v);
    let mut failure = None;
    let sent = blocking(py, timeout, |slice| {
        match send(v.take().expect("a value to send"), slice) {
            Ok(()) => Some(()),
            Err(SendError::Timeout(back)) => {
                v = Some(back);
                None
            }
            Err(e) => {
                failure = Some(e);
                Some(())
            }
        }
    })?;
    match (sent, failure) {
        (_, Some(e @ SendError::Closed(_))) => Err(Closed::new_err(e.to_string())),
        (_, Some(e)) => Err(Error::new_err(e.to_string())),
        (Some(()), None) => Ok(()),
        (None, None) => Err(PyTimeoutError::new_err(full)),
    }
}

/// Receives through `recv` (a pipe's or a subscriber's `recv_timeout`) in GIL-free
/// slices until a value or an error other than a slice's timeout comes (`fail` makes
/// it a Python exception), or `timeout` passes (`TimeoutError`).
fn recv_blocking<E: Send>(
    py: Python<'_>,
    timeout: Option<f64>,
    recv: impl Fn(Duration) -> Result<ShmVal, E> + Sync,
    timed_out: impl Fn(&E) -> bool + Sync,
    fail: impl FnOnce(E) -> PyErr,
) -> PyResult<PyObject> {
    let got = blocking(py, timeout, |slice| match recv(slice) {
        Err(e) if timed_out(&e) => None,
        r => Some(r),
    })?;
    match got {
        Some(Ok(v)) => to_py(py, v),
        Some(Err(e)) => Err(fail(e)),
        None => Err(PyTimeoutError::new_err(
            "nothing received before the deadline",
        )),
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
        let v = to_handle(obj, self.p.pool())?;
        let x = &self.p;
        send_blocking(py, timeout, v, "the pipe stayed full", |v, slice| {
            x.send_timeout(v, slice)
        })
    }

    /// Receives the next value, waiting up to `timeout` seconds (`None`: as long
    /// as it takes). Raises `TimeoutError`, or `Closed` once closed and drained.
    #[pyo3(signature = (timeout = None))]
    fn recv(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<PyObject> {
        let p = &self.p;
        recv_blocking(
            py,
            timeout,
            |slice| p.recv_timeout(slice),
            |e| matches!(e, RecvError::Timeout),
            |e| match e {
                RecvError::Closed => Closed::new_err("pipe closed"),
                e => err(e),
            },
        )
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
        let v = to_handle(obj, self.b.pool())?;
        let x = &self.b;
        send_blocking(py, timeout, v, "the broadcast stayed full", |v, slice| {
            x.send_timeout(v, slice)
        })
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
        recv_blocking(
            py,
            timeout,
            |slice| s.recv_timeout(slice),
            |e| matches!(e, BroadcastRecvError::Timeout),
            |e| match e {
                BroadcastRecvError::Closed => Closed::new_err("broadcast closed"),
                BroadcastRecvError::Lagged(n) => Lagged::new_err(n),
                e => err(e),
            },
        )
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
