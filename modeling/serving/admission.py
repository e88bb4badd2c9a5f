"""Admission control: bounded work, and a fast refusal instead of a growing wait when the bound is reached.

Every queue of the served search has a size: the requests the service takes at once (`SearchService`
`max_in_flight`, counted from the transport's call to its answer), the text queries waiting for an encoding pass
(`TextQueryBatcher` `max_pending`) and the calls waiting for a search thread (`max_waiting`). A request over a bound
raises `Overloaded` before any work is done for it; the JSON routes answer it with 503 and `Retry-After`, the Gradio
endpoints with the same message (Gradio's own queue answers 503 when it is full).
"""

from __future__ import annotations

import contextlib
import threading

BUSY = "The server is busy; please try again in a moment."


class Overloaded(RuntimeError):
    """The server is at one of its bounds: the request was refused before any work (HTTP 503). Not a bad request."""

    def __init__(self, message: str = BUSY):
        super().__init__(message)


class Gate:
    """At most `limit` holders at once; `enter` raises `Overloaded` when full (never waits). Thread-safe."""

    def __init__(self, limit: int, what: str = "requests"):
        if limit < 1:
            raise ValueError(f"the limit of {what} must be at least 1, got {limit}")
        self.limit = int(limit)
        self.what = what
        self.held = 0
        self.refused = 0  # for benchmarks and tests
        self._lock = threading.Lock()

    def enter(self) -> None:
        with self._lock:
            if self.held >= self.limit:
                self.refused += 1
                raise Overloaded()
            self.held += 1

    def leave(self, *_) -> None:
        """Frees a place (extra arguments ignored: usable as a future's done callback)."""
        with self._lock:
            self.held -= 1

    @contextlib.contextmanager
    def admitted(self):
        self.enter()
        try:
            yield
        finally:
            self.leave()


__all__ = ["BUSY", "Gate", "Overloaded"]
