"""A thread-safe least-recently-used cache of query embeddings, shared by the engine's encoders.

Shoppers and evaluations repeat queries and encoders cost milliseconds; batched serving fills it for a whole batch
at once (`FashionSearchEngine.prepare_text_queries`).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable

import numpy as np


class EmbeddingCache:
    """`get((encoder, text), encode)` returns the cached read-only vector or encodes, stores and returns it."""

    def __init__(self, size: int):
        self.size = int(size)
        self._data: OrderedDict = OrderedDict()
        self.lock = threading.Lock()

    def __contains__(self, key: Hashable) -> bool:
        with self.lock:
            return key in self._data

    def __len__(self) -> int:
        return len(self._data)

    def get(self, key: Hashable, encode: Callable[[], np.ndarray]) -> np.ndarray:
        with self.lock:
            if key in self._data:
                self._data.move_to_end(key)
                return self._data[key]
        return self.put(key, encode())

    def put(self, key: Hashable, value: np.ndarray) -> np.ndarray:
        value = np.array(value, copy=True)
        value.setflags(write=False)  # shared between callers
        with self.lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self.size:
                self._data.popitem(last=False)
        return value
