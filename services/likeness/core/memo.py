"""A small thread-safe LRU of results by content key.

Services keep recent results of pure, expensive work (a face assessment of given pixels under a
given policy) so a call that is repeated (a client retrying after a deadline, an orchestrator
replica resuming a job its predecessor had in flight) costs a lookup, not a model run. The work
itself fills the cache from the worker thread, so a result computed for a caller that has gone
away is still there for the retry.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict

import numpy as np


def content_key(*parts) -> str:
    """sha256 over arrays' bytes (with shape and dtype) and the repr of everything else."""
    h = hashlib.sha256()
    for p in parts:
        if isinstance(p, np.ndarray):
            h.update(repr((p.shape, p.dtype.str)).encode())
            h.update(np.ascontiguousarray(p).data)
        else:
            h.update(repr(p).encode())
        h.update(b"\0")
    return h.hexdigest()


class LruCache:
    def __init__(self, max_entries: int):
        self.max_entries = max_entries
        self._data: OrderedDict[str, object] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str):
        with self._lock:
            value = self._data.get(key)
            if value is not None:
                self._data.move_to_end(key)
            return value

    def put(self, key: str, value) -> None:
        if self.max_entries <= 0:
            return
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self.max_entries:
                self._data.popitem(last=False)

    def __len__(self) -> int:
        return len(self._data)
