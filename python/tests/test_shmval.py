"""The Python package against plain Python behaviour, across real processes."""

import gc
import itertools
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import MutableMapping, MutableSequence

import pytest

import shmval

_names = itertools.count()


def _sweep_orphans():
    """Removes pools of test processes that died without cleaning up (SIGKILL, a
    timeout): names are `shmval-pytest-PID-N`, and PID no longer runs."""
    for f in os.listdir("/dev/shm"):
        if not f.startswith("shmval-pytest-"):
            continue
        pid = f.split("-")[2]
        if pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
            try:
                os.remove(f"/dev/shm/{f}")
            except FileNotFoundError:
                pass


_sweep_orphans()


@pytest.fixture
def pool():
    name = f"shmval-pytest-{os.getpid()}-{next(_names)}"
    with shmval.Pool.create(name, 16 << 20, remove_on_drop=True) as p:
        yield p
    # The files go with the last handle (proxies and pipes hold the pool too); a
    # test's frame kept alive by a traceback cycle lets go at the next collection.
    gc.collect()
    assert not os.path.exists(f"/dev/shm/{name}"), "the pool's files were removed"


def run_child(code, *args, timeout=30):
    """Runs `code` in a fresh Python process (this interpreter, this package)."""
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_root_is_a_mutable_mapping_with_python_semantics(pool):
    r = pool.root
    assert isinstance(r, MutableMapping)
    value = {"a": 1, "b": [1, 2.5, "x", None, True], "c": (1, "two"), "d": {"e": b"bytes"}}
    r["cfg"] = value
    assert r["cfg"] == value
    assert repr(r["cfg"]) == repr(value)
    assert r["cfg"].to_python() == value
    assert isinstance(r["cfg"]["b"], MutableSequence)
    assert r.get("missing") is None and r.get("missing", 7) == 7
    with pytest.raises(KeyError):
        r["missing"]
    with pytest.raises(TypeError):
        r[[1, 2]] = 3  # unhashable, as in Python
    # Python's key equality: 1 == 1.0 == True.
    r[1] = "one"
    assert r[1.0] == "one" and r[True] == "one"
    assert 2**70 == pool.share(2**70)  # big ints round-trip


def test_dict_proxy_matches_a_python_dict_under_random_operations(pool):
    rng = random.Random(1234)
    shared = pool.share({})
    plain = {}
    keys = [0, 1, 2, "a", "b", "long key of an object of its own", (1, 2), 3.5]
    for step in range(3000):
        op = rng.choice(["set", "del", "get", "pop", "setdefault", "update", "popitem", "check"])
        k = rng.choice(keys)
        v = rng.choice([step, f"v{step}", None, [step], {"n": step}])
        if op == "set":
            shared[k] = v
            plain[k] = v
        elif op == "del":
            if k in plain:
                del plain[k]
                del shared[k]
            else:
                with pytest.raises(KeyError):
                    del shared[k]
        elif op == "get":
            assert shared.get(k, "dflt") == plain.get(k, "dflt")
        elif op == "pop":
            assert shared.pop(k, "dflt") == plain.pop(k, "dflt")
        elif op == "setdefault":
            assert shared.setdefault(k, v) == plain.setdefault(k, v)
        elif op == "update":
            other = {rng.choice(keys): step}
            shared.update(other)
            plain.update(other)
        elif op == "popitem" and plain:
            assert shared.popitem() == plain.popitem()
        assert len(shared) == len(plain)
        assert (k in shared) == (k in plain)
        if op == "check":
            assert shared == plain
            assert list(shared) == list(plain)
            assert repr(shared) == repr(plain)
            assert list(shared.items()) == list(plain.items())
    assert shared == plain
    shared.clear()
    assert len(shared) == 0


def test_list_proxy_matches_a_python_list(pool):
    shared = pool.share([])
    plain = []
    for i in range(50):
        shared.append(i)
        plain.append(i)
    shared.extend(["x", None])
    plain.extend(["x", None])
    shared[-1] = "last"
    plain[-1] = "last"
    assert shared[0] == plain[0] and shared[-2] == plain[-2]
    assert shared.pop() == plain.pop()
    assert len(shared) == len(plain) and list(shared) == plain and shared == plain
    assert repr(shared) == repr(plain)
    with pytest.raises(IndexError):
        shared[len(plain)]


def test_a_proxy_stored_elsewhere_is_the_same_object(pool):
    r = pool.root
    inner = pool.share({"n": 1})
    r["a"] = inner
    r["b"] = inner
    r["a"]["n"] = 2
    assert r["b"]["n"] == 2  # by reference, not a copy


def test_pipes_carry_values_between_python_processes(pool):
    pipe = shmval.Pipe.create(pool, "work", 64)
    back = shmval.Pipe.create(pool, "back", 64)
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                """
                import sys, shmval
                pool = shmval.Pool.open(sys.argv[1])
                work = shmval.Pipe.open(pool, "work")
                back = shmval.Pipe.open(pool, "back")
                for v in work:            # ends when the pipe is closed and drained
                    back.send({"seq": v["seq"], "double": v["seq"] * 2})
                back.close()
                """
            ),
            pool.name,
        ]
    )
    def produce():
        for i in range(1000):
            pipe.send({"seq": i, "payload": "x" * 20})
        pipe.close()

    import threading

    sender = threading.Thread(target=produce)
    sender.start()  # blocking sends release the GIL: this thread receives meanwhile
    got = [v["double"] for v in back]
    sender.join(timeout=30)
    assert got == [2 * i for i in range(1000)]
    assert child.wait(timeout=30) == 0


def test_timeouts_and_closed(pool):
    pipe = shmval.Pipe.create(pool, "t", 2)
    t = time.monotonic()
    with pytest.raises(TimeoutError):
        pipe.recv(timeout=0.2)
    assert 0.15 < time.monotonic() - t < 2
    pipe.send(1)
    pipe.send(2)
    with pytest.raises(TimeoutError):
        pipe.send(3, timeout=0.1)
    pipe.close()
    assert pipe.recv() == 1 and pipe.recv() == 2
    with pytest.raises(shmval.Closed):
        pipe.recv()
    with pytest.raises(shmval.Closed):
        pipe.send(4)


def test_ctrl_c_interrupts_a_blocking_recv(pool):
    shmval.Pipe.create(pool, "quiet", 4)
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                """
                import sys, shmval
                pool = shmval.Pool.open(sys.argv[1])
                pipe = shmval.Pipe.open(pool, "quiet")
                print("waiting", flush=True)
                try:
                    pipe.recv()
                except KeyboardInterrupt:
                    print("interrupted", flush=True)
                    sys.exit(3)
                """
            ),
            pool.name,
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    with child:
        assert child.stdout.readline().strip() == "waiting"
        time.sleep(0.2)
        child.send_signal(signal.SIGINT)
        assert child.wait(timeout=5) == 3
        assert child.stdout.read().strip() == "interrupted"


def test_a_python_process_killed_holding_values_leaves_nothing_behind(pool):
    base = pool.stats()["in_use"]
    pipe = shmval.Pipe.create(pool, "held", 16)
    base = pool.stats()["in_use"]
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                """
                import sys, time, shmval
                pool = shmval.Pool.open(sys.argv[1])
                held = [pool.share({"i": i, "s": "a string long enough" * 3}) for i in range(100)]
                pipe = shmval.Pipe.open(pool, "held")
                pipe.send("ready")
                time.sleep(60)
                """
            ),
            pool.name,
        ]
    )
    assert pipe.recv(timeout=20) == "ready"
    assert pool.stats()["in_use"] > base
    child.kill()
    child.wait()
    pool.reclaim_dead()
    assert pool.stats()["in_use"] == base


def test_errors_are_typed(pool):
    with pytest.raises(shmval.Error):
        shmval.Pool.open(f"shmval-pytest-missing-{os.getpid()}", timeout=0.0)
    with pytest.raises(TypeError):
        pool.share(object())
    with pytest.raises(ValueError):
        shmval.Pipe.open(pool, "p", timeout=-1)


np = pytest.importorskip("numpy")


@pytest.mark.parametrize(
    "dtype", ["f8", "f4", "i8", "i4", "i2", "i1", "u8", "u4", "u2", "u1", "?", "c16", "c8"]
)
def test_numpy_arrays_go_in_by_copy_and_come_back_as_zero_copy_views(pool, dtype):
    src = (np.arange(10) % 3).astype(dtype)
    pool.root["a"] = src
    a = pool.root["a"]
    assert isinstance(a, shmval.Array) and len(a) == 10
    view = np.asarray(a)
    assert view.dtype == src.dtype and view.shape == (10,)
    assert (view == src).all()
    # A view of the shared memory itself: no copy, and writable.
    assert view.__array_interface__["data"][0] == a.__array_interface__["data"][0]
    view[3] = 1
    assert np.asarray(pool.root["a"])[3] == 1
    assert a == view.tolist()


def test_a_write_through_a_view_is_seen_by_another_process(pool):
    pool.root["samples"] = np.zeros(1000)
    view = np.asarray(pool.root["samples"])
    out = run_child(
        """
        import sys, numpy as np, shmval
        pool = shmval.Pool.open(sys.argv[1])
        v = np.asarray(pool.root["samples"])
        v[:] = np.arange(1000) * 0.5     # through the view: the shared memory itself
        print(float(v.sum()))
        """,
        pool.name,
    )
    assert out.returncode == 0, out.stderr
    assert float(out.stdout) == view.sum() == 0.5 * 999 * 1000 / 2
    assert view[10] == 5.0


def test_a_pool_made_with_max_size_grows_while_another_process_uses_it():
    name = f"shmval-pytest-{os.getpid()}-{next(_names)}"
    with shmval.Pool.create(name, 1 << 20, remove_on_drop=True, max_size=256 << 20) as p:
        assert (p.size, p.max_size) == (1 << 20, 256 << 20)
        p.root["seen"] = 0
        # Another process grows it to past 64 MiB; this one, attached with 1 MiB
        # mapped, reads what it stored.
        out = run_child(
            """
            import sys, numpy as np, shmval
            pool = shmval.Pool.open(sys.argv[1])
            for i in range(8):
                pool.root[f"a{i}"] = np.full(1 << 20, float(i))   # 8 MiB each
            print(pool.size)
            """,
            name,
        )
        assert out.returncode == 0, out.stderr
        assert p.size == int(out.stdout) > 64 << 20
        for i in range(8):
            a = np.asarray(p.root[f"a{i}"])
            assert a.shape == (1 << 20,) and (a == i).all()
        del a  # a view holds the pool
        with pytest.raises(shmval.Error, match="exhausted|grow"):
            p.root["too big"] = np.zeros(40 << 20)   # 320 MiB
        del p.root["seen"]
        with shmval.Pool.open_or_create(name, 1 << 20, max_size=512 << 20) as q:
            assert q.max_size == 256 << 20  # opened: the pool's own maximum
    gc.collect()
    assert not os.path.exists(f"/dev/shm/{name}")


def test_an_ordered_dict_keeps_its_order_semantics(pool):
    from collections import OrderedDict

    pool.root["o"] = OrderedDict([("b", 1), ("a", 2), ("c", 3)])
    pool.root["d"] = {"b": 1, "a": 2, "c": 3}
    o, d = pool.root["o"], pool.root["d"]
    assert o.ordered and not d.ordered
    assert list(o) == ["b", "a", "c"]
    o.move_to_end("b")
    assert list(o) == ["a", "c", "b"]
    o.move_to_end("b", last=False)
    assert list(o) == ["b", "a", "c"]
    with pytest.raises(KeyError):
        o.move_to_end("zz")
    # OrderedDict equality minds the order; with a plain dict it does not.
    assert o == OrderedDict([("b", 1), ("a", 2), ("c", 3)])
    assert o != OrderedDict([("a", 2), ("b", 1), ("c", 3)])
    assert o == {"a": 2, "b": 1, "c": 3}
    assert isinstance(o.to_python(), OrderedDict) and type(d.to_python()) is dict
    assert o.popitem(last=False) == ("b", 1)
    assert o.popitem() == ("c", 3)
    with pytest.raises(TypeError):
        d.popitem(last=False)
    with pytest.raises(AttributeError):
        d.move_to_end("a")
    import pickle

    back = shmval.from_pickle(pickle.dumps(OrderedDict([("x", 1), ("y", 2)]), 2))
    assert isinstance(back, OrderedDict) and list(back) == ["x", "y"]


def test_arrays_numpy_cannot_share_are_refused(pool):
    with pytest.raises(TypeError):
        pool.root["s"] = np.array(["text"])
    with pytest.raises(TypeError):
        pool.root["o"] = np.array([{}, 1], dtype=object)


@pytest.mark.parametrize("shape", [(2, 3), (2, 3, 4), (), (3, 0), (1, 1, 1, 5)])
@pytest.mark.parametrize("dtype", ["f8", "i2", "u1", "c8", "?"])
def test_n_dimensional_arrays_keep_their_shape(pool, shape, dtype):
    src = (np.arange(int(np.prod(shape))) % 3).astype(dtype).reshape(shape)
    pool.root["m"] = src
    a = pool.root["m"]
    assert a.shape == shape
    v = np.asarray(a)
    assert v.shape == shape and v.dtype == src.dtype and (v == src).all()
    assert a.tolist() == src.tolist() and a == src
    if shape:
        assert len(a) == shape[0]
    else:
        with pytest.raises(TypeError):
            len(a)
    if len(shape) > 1 and src.size > 0:
        assert (a[0] == src[0]).all()  # numpy's indexing, a view
        assert np.shares_memory(a[0], v)
    # Inside containers too, and copied out as nested lists.
    pool.root["d"] = {"m": src, "l": [src]}
    assert pool.root["d"]["m"].shape == shape
    assert pool.root["d"].to_python()["l"][0] == src.tolist()
    # Fortran-ordered and strided sources are copied in C order.
    if len(shape) == 2:
        pool.root["f"] = np.asfortranarray(src)
        pool.root["t"] = src.T
        assert (np.asarray(pool.root["f"]) == src).all()
        assert (np.asarray(pool.root["t"]) == src.T).all()
    del a, v


def test_a_write_through_a_2d_view_is_seen_by_another_process(pool):
    pool.root["img"] = np.zeros((4, 5), dtype="f4")
    out = run_child(
        """
        import sys, numpy as np, shmval
        pool = shmval.Pool.open(sys.argv[1])
        img = np.asarray(pool.root["img"])
        img[2, :] = 7                       # a row, through the view
        print(img.shape, float(img.sum()))
        """,
        pool.name,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["(4,", "5)", "35.0"]
    v = np.asarray(pool.root["img"])
    assert (v[2] == 7).all() and v.sum() == 35
    del v


@pytest.mark.parametrize("protocol", range(0, 6))
def test_numpy_pickles_read_and_written(protocol):
    import pickle

    cases = [
        np.arange(6, dtype="f8").reshape(2, 3),
        np.asfortranarray(np.arange(12, dtype=">i4").reshape(3, 4)),
        np.array(2.5),
        np.array([[True, False]]),
        np.ones((2, 1, 2), dtype="c8"),
        np.arange(5, dtype="u2"),
    ]
    for a in cases:
        got = shmval.from_pickle(pickle.dumps({"a": a, "n": 1}, protocol=protocol))
        assert isinstance(got["a"], np.ndarray), a
        assert got["a"].shape == a.shape and (got["a"] == a).all(), (a, got)
    for x in (np.float32(1.5), np.int64(-7), np.bool_(True), np.complex128(1 + 2j)):
        assert shmval.from_pickle(pickle.dumps(x, protocol=protocol)) == x
    with pytest.raises(shmval.Error, match="object"):
        shmval.from_pickle(pickle.dumps(np.array([1, "a"], dtype=object), protocol=protocol))
    if protocol >= 2:
        m = np.arange(24, dtype="i8").reshape(2, 3, 4)
        back = pickle.loads(shmval.to_pickle({"m": m, "z": np.array(1.5)}, protocol))
        assert back["m"].dtype == m.dtype and (back["m"] == m).all()
        assert back["z"].shape == () and back["z"] == 1.5
        flat = np.arange(4.0)
        import array

        assert isinstance(pickle.loads(shmval.to_pickle(flat, protocol)), array.array)
        back = pickle.loads(shmval.to_pickle(flat, protocol, numpy=True))
        assert isinstance(back, np.ndarray) and (back == flat).all()


def test_broadcasts_give_every_subscriber_every_value(pool):
    b = shmval.Broadcast.create(pool, "news", 8)
    subs = [b.subscribe() for _ in range(3)]
    assert b.subscribers == 3
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                """
                import sys, shmval
                pool = shmval.Pool.open(sys.argv[1])
                b = shmval.Broadcast.open(pool, "news")
                for i in range(100):
                    b.send({"i": i})
                b.close()
                """
            ),
            pool.name,
        ]
    )
    import threading

    got = [[] for _ in subs]

    def drain(k):
        for v in subs[k]:
            got[k].append(v["i"])

    threads = [threading.Thread(target=drain, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert child.wait(timeout=30) == 0
    assert got == [list(range(100))] * 3


def test_a_lagging_subscriber_is_told_what_it_missed(pool):
    b = shmval.Broadcast.create(pool, "fast", 4, policy="drop_oldest")
    s = b.subscribe()
    for i in range(10):
        b.send(i)
    with pytest.raises(shmval.Lagged) as e:
        s.recv(timeout=1)
    assert e.value.args[0] == 6
    assert [s.recv(timeout=1) for _ in range(4)] == [6, 7, 8, 9]


def test_numpy_arrays_inside_containers_stay_arrays(pool):
    pool.root["d"] = {"u8": np.arange(3, dtype="u1"), "f": np.ones(2), "rev": np.arange(4)[::-1]}
    d = pool.root["d"]
    assert np.asarray(d["u8"]).dtype == np.uint8  # an array, not bytes
    assert list(np.asarray(d["rev"])) == [3, 2, 1, 0]  # a strided view, copied in order
    pool.root["big-endian"] = np.arange(3, dtype=">i4")
    assert np.asarray(pool.root["big-endian"]).tolist() == [0, 1, 2]


REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def rust_examples(*names):
    """The Rust example programs `names`, built (release) if need be; skips the test
    (saying why) where cargo is not there."""
    try:
        subprocess.run(
            ["cargo", "build", "--release", "-q", *(a for n in names for a in ("--example", n))],
            cwd=REPO,
            check=True,
            timeout=900,
        )
    except (FileNotFoundError, subprocess.CalledProcessError) as e:
        pytest.skip(f"the Rust examples could not be built: {e}")
    target = os.path.join(REPO, os.environ.get("CARGO_TARGET_DIR") or "target")
    return [os.path.join(target, "release", "examples", n) for n in names]


def test_a_rust_server_and_client_with_a_python_middle():
    """Rust -> Python -> Rust: the pipeline's Rust server sends tables, this Python
    process forwards each (the same shared table, a field added), the Rust client
    checks every sequence number arrived, in order."""
    server, client = rust_examples("server", "client")
    name = f"shmval-pytest-{os.getpid()}-{next(_names)}"
    n = 5000
    common = ["--pool", name, "--count", str(n), "--keep"]
    srv = subprocess.Popen([server, *common], stdout=subprocess.DEVNULL)
    try:
        pool = shmval.Pool.open(name, timeout=10)
        raw = shmval.Pipe.open(pool, "raw", timeout=10)
        cooked = shmval.Pipe.create(pool, "cooked", 1024)
        cli = subprocess.Popen([client, *common], stdout=subprocess.PIPE, text=True)
        seen = 0
        for msg in raw:  # the Rust server's tables, as shmval.Dict proxies
            assert msg["name"] == "server" and msg["seq"] == seen
            msg["hops"] = 1  # written into the shared table itself
            cooked.send(msg)  # the same table, by reference, to the Rust client
            seen += 1
        cooked.close()
        out, _ = cli.communicate(timeout=60)
        assert cli.returncode == 0, out
        assert f"received {n} values" in out and "0 missing, 0 out of order" in out, out
        assert srv.wait(timeout=30) == 0
        assert seen == n
        del msg, raw, cooked
        pool.close()
    finally:
        srv.kill()
        gc.collect()
        for f in (name, name + "_boot"):
            try:
                os.remove(f"/dev/shm/{f}")
            except FileNotFoundError:
                pass
