"""Batched query encoding for a served engine: concurrent text queries share one forward pass per encoder.

A server answers each request on a thread of its own. Encoding a query alone costs a full forward pass of the
query tower (and of the sentence encoder of the fused score); thirty-two queries encoded together cost a few
times one. `TextQueryBatcher` gathers the queries that arrive while an encoding is running and encodes them in the
next pass (`FashionSearchEngine.prepare_text_queries`), so each request's `search_text` then finds its embeddings
in the engine's cache and only scores. No timer is involved: under no load a query is encoded at once (no added
latency); under load, the batch is whatever queued up during the previous pass ("natural" batching), capped at
`max_batch`.

    batcher = TextQueryBatcher(engine.prepare_text_queries, max_batch=32)
    batcher.prepare("red summer dress")      # blocks until the query's embeddings are cached
    engine.search_text("red summer dress")   # scores only
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future

from modeling.serving.admission import Overloaded

logger = logging.getLogger(__name__)

DEFAULT_MAX_BATCH = 32
DEFAULT_MAX_PENDING = 4 * DEFAULT_MAX_BATCH  # queries waiting: about four passes' worth


class TextQueryBatcher:
    """Gathers concurrent text queries and encodes them together with `encode(queries)` on one thread of its own.

    `encode` must cache what it computes (it returns nothing); a failure is logged and the callers go on, each
    encoding its own query in its search call (which then raises the error meant for that caller). Encoding on one
    dedicated thread, rather than on whichever request thread comes first, also keeps torch's per-thread buffers
    to one thread: with dozens of request threads each taking a turn the server's memory grew with the traffic.
    """

    def __init__(self, encode: Callable[[Sequence[str]], None], max_batch: int = DEFAULT_MAX_BATCH,
                 window_s: float = 0.0, name: str = "query-encoder", max_pending: int = DEFAULT_MAX_PENDING,
                 on_start: Callable[[], object] | None = None):
        if max_batch < 1 or max_pending < 1:
            raise ValueError(f"max_batch and max_pending must be at least 1, got {max_batch}, {max_pending}")
        self.encode = encode
        self.max_batch = int(max_batch)
        # Optional wait before a pass that is not full, to let concurrent arrivals join it (0 = none: under load
        # queries queue up during the running pass anyway).
        self.window_s = float(window_s)
        self.name = name
        # At most `max_pending` queries wait for a pass; one more is refused at once (`Overloaded`).
        self.max_pending = int(max_pending)
        self.on_start = on_start  # called first on the encoding thread (e.g. to lower its priority)
        self._cond = threading.Condition()
        self._pending: list[tuple[str, Future]] = []
        self._worker: threading.Thread | None = None
        self.batches = 0  # passes run, and queries they encoded (for benchmarks and tests)
        self.encoded = 0

    def prepare(self, query: str) -> None:
        """Returns once `query` has been through an encoding pass (alone or with the queries around it)."""
        self.submit(query).result()

    def submit(self, query: str) -> Future:
        """Queues `query`; the future completes (with None) once it has been through an encoding pass. An asyncio
        server awaits it (`asyncio.wrap_future`) without holding a thread. `Overloaded` when `max_pending`
        queries are already waiting."""
        done: Future = Future()
        with self._cond:
            if len(self._pending) >= self.max_pending:
                raise Overloaded()
            self._pending.append((query, done))
            if self._worker is None or not self._worker.is_alive():
                self._worker = threading.Thread(target=self._run, name=self.name, daemon=True)
                self._worker.start()
            self._cond.notify()
        return done

    def _run(self) -> None:
        if self.on_start is not None:
            self.on_start()
        while True:
            with self._cond:
                while not self._pending:
                    self._cond.wait()
                short = len(self._pending) < self.max_batch
            if short and self.window_s > 0:
                time.sleep(self.window_s)
            with self._cond:
                batch, self._pending = self._pending[:self.max_batch], self._pending[self.max_batch:]
            try:
                self.encode([query for query, _ in batch])
            except Exception:  # each caller's own search reports its error
                logger.exception("batched query encoding failed; the queries are encoded one by one")
            finally:
                self.batches += 1
                self.encoded += len(batch)
                for _, done in batch:
                    done.set_result(None)


__all__ = ["DEFAULT_MAX_BATCH", "DEFAULT_MAX_PENDING", "TextQueryBatcher"]
