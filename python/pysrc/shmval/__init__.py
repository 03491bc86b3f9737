"""shmval: dicts, lists and pipes living in shared memory, shared by processes on
one host (Rust and Python alike), reference counted across processes.

    import shmval
    with shmval.Pool.create("sensors", 64 << 20, remove_on_drop=True) as pool:
        pool.root["cfg"] = {"rate": 100, "name": "cam0"}
        pipe = shmval.Pipe.create(pool, "raw", 1024)
        pipe.send({"seq": 1})
        print(pipe.recv(timeout=1.0))
"""

from collections.abc import MutableMapping, MutableSequence

from ._shmval import (
    Array,
    Broadcast,
    Closed,
    Dict,
    Error,
    Lagged,
    List,
    Pipe,
    Pool,
    Subscriber,
    from_pickle,
    to_pickle,
)

MutableMapping.register(Dict)
MutableSequence.register(List)

__all__ = [
    "Array",
    "Broadcast",
    "Closed",
    "Dict",
    "Error",
    "Lagged",
    "List",
    "Pipe",
    "Pool",
    "Subscriber",
    "from_pickle",
    "to_pickle",
]
