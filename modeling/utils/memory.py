"""glibc's allocator, where there is one: the C library handle (`modeling.serving.tuning` sets its options)."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools


@functools.lru_cache(maxsize=1)
def libc():
    """The C library (ctypes), or None where it cannot be loaded."""
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None


__all__ = ["libc"]
