"""Python figures for docs/PERFORMANCE.md (issue 22), side by side in one run:

- dict get/set from Python: a shared `shmval.Dict` vs `multiprocessing.Manager().dict()`
  and, when it is installed (`pip install UltraDict atomics`), UltraDict with its
  shared lock (safe with several writing processes, as shmval's dict is) and without;
- messages Python -> Python process: `shmval.Pipe` vs `multiprocessing.Queue`;
- handing a numpy array to another process (it sums it): shmval (copied in once, the
  other side reads a zero-copy view) vs `multiprocessing.shared_memory` + copy vs a
  `multiprocessing.Queue` (pickled).

    python python/bench.py [--quick]
"""

import multiprocessing as mp
import os
import sys
import time
from multiprocessing import shared_memory

import numpy as np

import shmval

QUICK = "--quick" in sys.argv


def best(f, reps=3):
    return min(f() for _ in range(reps))


def rate(n, f):
    t = time.perf_counter()
    f()
    return n / (time.perf_counter() - t)


def dict_ops(pool):
    n = 20_000 if QUICK else 200_000
    d = pool.share({})

    def shm():
        for i in range(n // 2):
            d[i] = i
        for i in range(n // 2):
            d[i]

    with mp.Manager() as m:
        md = m.dict()

        def mgr():
            for i in range(n // 20):
                md[i] = i
            for i in range(n // 20):
                md[i]

        a = max(rate(n, shm) for _ in range(3))
        b = max(rate(n // 10, mgr) for _ in range(3))
    return a, b


def ultradict_ops():
    """UltraDict get/set rates (with its shared lock, without), or None."""
    try:
        from UltraDict import UltraDict
    except ImportError:
        return None
    n = 20_000 if QUICK else 200_000
    out = []
    for locked in (True, False):
        try:
            ud = UltraDict(buffer_size=64 << 20, shared_lock=locked)
        except Exception:  # the shared lock needs the `atomics` package
            out.append(None)
            continue

        def run():
            for i in range(n // 2):
                ud[i] = i
            for i in range(n // 2):
                ud[i]

        out.append(max(rate(n, run) for _ in range(3)))
        ud.unlink()
    return out


def _pipe_reader(name, n):
    pool = shmval.Pool.open(name)
    p = shmval.Pipe.open(pool, "b")
    for _ in range(n):
        p.recv()


def _queue_reader(q, n):
    for _ in range(n):
        q.get()


def messages(pool):
    n = 20_000 if QUICK else 200_000
    p = shmval.Pipe.create(pool, "b", 1024)
    ctx = mp.get_context("fork")
    r = ctx.Process(target=_pipe_reader, args=(pool.name, n))
    r.start()
    t = time.perf_counter()
    for i in range(n):
        p.send({"seq": i, "name": "sensor"})
    r.join()
    a = n / (time.perf_counter() - t)
    q = ctx.Queue(1024)
    r = ctx.Process(target=_queue_reader, args=(q, n))
    r.start()
    t = time.perf_counter()
    for i in range(n):
        q.put({"seq": i, "name": "sensor"})
    r.join()
    b = n / (time.perf_counter() - t)
    return a, b


def _shm_sum(name, key, out):
    pool = shmval.Pool.open(name)
    out.put(float(np.asarray(pool.root[key]).sum()))


def _sm_sum(smname, n, out):
    sm = shared_memory.SharedMemory(smname)
    a = np.ndarray((n,), dtype="f8", buffer=sm.buf)
    out.put(float(a.sum()))
    del a
    sm.close()


def _q_sum(q, out):
    out.put(float(q.get().sum()))


def handoff(pool, mb):
    n = mb * (1 << 20) // 8
    arr = np.arange(n, dtype="f8")
    want = float(arr.sum())
    ctx = mp.get_context("fork")
    out = ctx.Queue()

    def shm():
        t = time.perf_counter()
        pool.root["x"] = arr  # copied in once
        p = ctx.Process(target=_shm_sum, args=(pool.name, "x", out))
        p.start()
        got = out.get()
        p.join()
        del pool.root["x"]
        assert got == want
        return time.perf_counter() - t

    def sm():
        t = time.perf_counter()
        s = shared_memory.SharedMemory(create=True, size=arr.nbytes)
        np.ndarray(arr.shape, dtype=arr.dtype, buffer=s.buf)[:] = arr  # the copy
        p = ctx.Process(target=_sm_sum, args=(s.name, n, out))
        p.start()
        got = out.get()
        p.join()
        s.close()
        s.unlink()
        assert got == want
        return time.perf_counter() - t

    def queue():
        t = time.perf_counter()
        q = ctx.Queue()
        p = ctx.Process(target=_q_sum, args=(q, out))
        p.start()
        q.put(arr)
        got = out.get()
        p.join()
        assert got == want
        return time.perf_counter() - t

    return best(shm), best(sm), best(queue)


def main():
    name = f"shmval-pybench-{os.getpid()}"
    with shmval.Pool.create(name, 512 << 20, remove_on_drop=True) as pool:
        rows = []
        a, b = dict_ops(pool)
        rows.append(("dict get/set from Python", f"{a:,.0f} ops/s", f"Manager().dict() {b:,.0f} ops/s", a / b))
        u = ultradict_ops()
        if u is None:
            print("UltraDict is not installed: its rows are skipped", file=sys.stderr)
        else:
            for locked, r in zip(("with", "without"), u):
                if r is not None:
                    rows.append((f"dict get/set from Python vs UltraDict {locked} its shared lock",
                                 f"{a:,.0f} ops/s", f"UltraDict {r:,.0f} ops/s", a / r))
        a, b = messages(pool)
        rows.append(("messages Python -> Python (2-key dict)", f"{a:,.0f} msg/s", f"multiprocessing.Queue {b:,.0f} msg/s", a / b))
        for mb in ([1] if QUICK else [1, 100]):
            s, m, q = handoff(pool, mb)
            rows.append((f"hand a {mb} MB numpy array to another process (it sums it)", f"{s * 1e3:.1f} ms",
                         f"shared_memory + copy {m * 1e3:.1f} ms, Queue {q * 1e3:.1f} ms", m / s))
    print("| figure | shmval | peers | shmval's advantage |\n|---|---|---|---|")
    for r in rows:
        print(f"| {r[0]} | {r[1]} | {r[2]} | {r[3]:.2f}x |")


if __name__ == "__main__":
    main()
