"""Admission control: bounded work, and a fast refusal instead of a growing wait when the bound is reached.

Every queue of the served search has a size: the requests the service takes at once (`SearchService`
`max_in_flight`, counted from the transport's call to its answer), the text queries waiting for an encoding pass
(`TextQueryBatcher` `max_pending`) and the calls waiting for a search thread (`max_waiting`). A request over a bound
raises `Overloaded` before any work is done for it; the JSON routes answer it with 503 and `Retry-After`, the Gradio
endpoints with the same message (Gradio's own queue answers 503 when it is full).
"""

from __future__ import annotations

import collections
import contextlib
import threading
import time

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

    def current_limit(self) -> int:
        return self.limit

    def enter(self) -> None:
        with self._lock:
            if self.held >= self.current_limit():
                self.refused += 1
                raise Overloaded()
            self.held += 1

    def leave(self, *_, completed: bool = True) -> None:
        """Frees a place (extra arguments ignored: usable as a future's done callback); `completed`: whether the
        holder's work was done (False for a request that ended in an error or a refusal)."""
        with self._lock:
            self.held -= 1

    @contextlib.contextmanager
    def admitted(self):
        self.enter()
        completed = False
        try:
            yield
            completed = True
        finally:
            self.leave(completed=completed)


class PacedGate(Gate):
    """A `Gate` whose limit follows the rate it is served at: at most `budget_s` seconds of work ahead, i.e.
    `budget_s` x the completions per second of the last `window_s` seconds (Little's law: waiting time = requests
    in / throughput), never under `floor` nor over `limit`. On a quiet machine that serves 200 requests/s it takes 50
    at once; on one shared with other jobs that serves 80, 20: admitted requests keep their latency either way."""

    def __init__(self, limit: int, floor: int = 8, budget_s: float = 0.25, window_s: float = 2.0,
                 what: str = "requests", clock=time.monotonic):
        super().__init__(limit, what)
        self.floor, self.budget_s, self.window_s, self.clock = min(floor, limit), budget_s, window_s, clock
        self._done: collections.deque[float] = collections.deque()

    def current_limit(self) -> int:
        horizon = self.clock() - self.window_s
        while self._done and self._done[0] < horizon:
            self._done.popleft()
        rate = len(self._done) / self.window_s
        return max(self.floor, min(self.limit, int(self.budget_s * rate)))

    def leave(self, *_, completed: bool = True) -> None:
        """Only completed work counts towards the pace: cheap refusals and errors (an unknown model, a full search
        queue) must not raise the limit."""
        with self._lock:
            self.held -= 1
            if completed:
                self._done.append(self.clock())


__all__ = ["BUSY", "Gate", "Overloaded", "PacedGate"]
