"""glibc's allocator, where there is one: the C library handle and giving freed heap memory back to the system."""

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


def trim_heap() -> bool:
    """Give the heap's free memory back to the system (glibc `malloc_trim(0)`); False where it cannot (not glibc).

    Reading a large collection's payloads at start allocates and frees millions of small objects: the freed memory
    stays in the process's heap unless trimmed (110 MB after the 1M-item collection's scroll)."""
    try:
        return bool(libc().malloc_trim(0))
    except AttributeError:  # no C library, or not glibc
        return False


__all__ = ["libc", "trim_heap"]
