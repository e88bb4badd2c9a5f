"""The served search: one request contract for every caller of the app (UI events, Gradio API, JSON routes).

`SearchService` sits between a transport (the Gradio app, the plain JSON routes of `modeling.serving.http`) and
the engines of an `EngineRegistry`. It

* **validates every argument the same way**, whoever sends it: k a whole number in [1, `MAX_K`] (not clamped),
  filter values from the catalog, weights finite and in [0, 1], item ids of at most `MAX_ID_CHARS` characters,
  model names from the registry. A refused argument raises `QueryError` with a message meant for the user that
  never repeats a long value whole, names no exception class and no server path (`user_message`);
* **batches concurrent text queries** (`modeling.serving.batching`): the queries that arrive while one encoding
  pass runs are encoded together in the next, on one encoder thread, in bf16 where parity holds
  (`modeling.serving.tuning`); the searches themselves run on a few threads of their own (`search_slots`), which an
  asyncio server awaits (`text_async`, `run_async`) without a thread per waiting request;
* **answers with public results**: each result's `image_path` is the catalog-relative path of its photo
  ("images/15970.jpg") and `image_url` the app's own route for it (`IMAGE_ROUTE`); the absolute path on the server
  never leaves it (the UI's gallery gets it from `Answer.results`, inside the server).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from modeling.data.images import ImageError
from modeling.data.uploads import load_upload
from modeling.data.photos import parse_box
from modeling.models.composition import COMPOSITION_METHODS
from modeling.serving.arguments import (MAX_ID_CHARS, MAX_K, parse_ignore, parse_item_id, parse_k, parse_weight,
                                       shorten, user_message)
from modeling.serving.admission import Gate, Overloaded, PacedGate
from modeling.serving.batching import DEFAULT_MAX_BATCH, DEFAULT_MAX_PENDING, TextQueryBatcher
from modeling.retrieval.common.types import QueryError, SearchResult, validate_text
from modeling.serving.registry import EngineRegistry
from modeling.serving.tuning import (QUERY_PRECISIONS, bf16_when_batched, choose_query_precision,
                                     lower_thread_priority)
from modeling.retrieval.engine.vsc import summarise

logger = logging.getLogger(__name__)

DEFAULT_SEARCH_SLOTS = 2
# Requests the service takes at once (the JSON routes, Gradio's unqueued API endpoints): as many as it serves in
# LATENCY_BUDGET_S at its current pace (`PacedGate`), 8 to 64. A fixed 48 gave p95 0.95 s at 200 clients on the
# shared 2-core machine, 16 gave 0.26 s at the same throughput; docs/api.md, "Under load".
DEFAULT_MAX_IN_FLIGHT = 64
LATENCY_BUDGET_S = 0.25
DEFAULT_MAX_WAITING = 64
# How much lower the search and encoder threads run than the event loop (nice levels; 0: the same; the app reads
# FASHION_WORKER_NICE). Under overload the loop then gets a core at once: with 200 clients on the shared 2-core
# machine a separate client's refusals took p95 9-12 ms at 10 against 78-83 ms at 0 (docs/api.md, "Under load");
# admitted requests kept their p95, and the machine's other processes get more of the cores (about 10% fewer
# answers a second while they were busy).
DEFAULT_WORKER_NICE = 10
ANY = "Any"
# The filters offered to users: catalog column -> the name users see (UI labels, messages).
FILTERS = {"gender": "Gender", "articleType": "Category", "baseColour": "Colour"}
IMAGE_ROUTE = "/api/v1/images/"
# Shopper-like queries the bf16 parity is measured on.
PROBE_QUERIES = ["red summer dress", "white polo t-shirts", "watches for men", "men formal black shoes",
                 "blue denim jeans for women", "black leather handbag", "sports shoes for running",
                 "navy blue casual shirt for men", "pink floral kurta", "grey track pants for boys",
                 "gold analog watch for women", "brown leather belt", "striped cotton t-shirt for girls",
                 "silver sunglasses", "green backpack", "beige flip flops"]
def catalog_relative(path: str) -> str:
    """The photo's path as the catalog names it ("images/15970.jpg"): its folder and file name, nothing above."""
    if not path:
        return ""
    p = Path(path)
    return f"{p.parent.name}/{p.name}" if p.parent.name else p.name


@dataclass
class Answer:
    """One answered request: the engine's results (absolute image paths, for use inside the server) and the public
    structured data that goes out."""

    results: list[SearchResult]
    data: dict
    searched: "Image.Image | None" = None  # the photo a photo search encoded (the product cut out, or the box)


@dataclass(frozen=True)
class _Blocking:
    """A step of `SearchService._text`: a call that may block (loading a model, making its batcher)."""

    call: Callable


@dataclass(frozen=True)
class _Search:
    """A step of `SearchService._text`: a call for the search threads."""

    call: Callable


class SearchService:
    """Validated, batched access to the engines of a registry; see the module docstring."""

    def __init__(self, registry: EngineRegistry, max_batch: int = DEFAULT_MAX_BATCH, batch_window_s: float = 0.0,
                 query_precision: str = "fp32", search_slots: int | None = DEFAULT_SEARCH_SLOTS,
                 max_in_flight: int | None = DEFAULT_MAX_IN_FLIGHT, max_waiting: int = DEFAULT_MAX_WAITING,
                 max_pending: int = DEFAULT_MAX_PENDING, latency_budget_s: float | None = LATENCY_BUDGET_S,
                 worker_nice: int = DEFAULT_WORKER_NICE):
        if query_precision not in ("auto", *QUERY_PRECISIONS):
            raise ValueError(f"query_precision must be auto, fp32 or bf16, got {query_precision!r}")
        self.registry = registry
        # Searches run on `search_slots` threads of their own (None: on the caller's thread). Dozens of request
        # threads scoring together only fight over the cores and the GIL, starving the server's event loop, and
        # each grows its own BLAS and allocator buffers; here the others wait their turn in arrival order.
        self._pool = ThreadPoolExecutor(search_slots, thread_name_prefix="search",
                                        initializer=self._mark_search_thread) if search_slots else None
        self._local = threading.local()
        if not 0 <= int(worker_nice) <= 19:
            raise ValueError(f"worker_nice must be a nice level from 0 to 19, got {worker_nice}")
        self.worker_nice = int(worker_nice)
        # Admission control (`modeling.serving.admission`): requests taken at once through `call` / `call_async`
        # (None: no bound), calls waiting for a search thread, text queries waiting for an encoding pass; one more
        # is refused at once with `Overloaded` (HTTP 503) instead of waiting longer.
        # `latency_budget_s` None: a fixed limit of `max_in_flight`.
        self.admission = None if not max_in_flight else Gate(max_in_flight) if latency_budget_s is None else \
            PacedGate(max_in_flight, budget_s=latency_budget_s)
        self.waiting = Gate((search_slots or 0) + max_waiting, "searches")
        self.max_pending = max_pending
        # Batched query encoding in bfloat16 autocast ("bf16", "auto") where parity holds, decided per model when
        # its first text query arrives (`choose_query_precision`); `precisions` keeps what was decided.
        self.query_precision = query_precision
        self.precisions: dict[str, tuple[str, float | None]] = {}
        self.max_batch = max_batch
        self.batch_window_s = batch_window_s
        self._batchers: dict[str, TextQueryBatcher] = {}
        self._lock = threading.Lock()
        self._choices: dict[str, dict[str, str]] | None = None

    # -- arguments --------------------------------------------------------------------------------------------
    def model_name(self, model) -> str:
        """The registry's name for `model` ("" or None = the default)."""
        if model is None or model == "":
            return self.registry.default
        if not isinstance(model, str) or model not in self.registry.specs:
            raise QueryError(f"Unknown model {shorten(model)}; choose one of {', '.join(self.registry.names)}.")
        return model

    def filter_choices(self) -> dict[str, list[str]]:
        """The values each filter accepts (besides "Any"), from the default model's catalog."""
        return {column: sorted(values.values()) for column, values in self._filter_values().items()}

    def _filter_values(self) -> dict[str, dict[str, str]]:
        if self._choices is None:
            engine = self.registry.get()
            self._choices = {c: {v.casefold(): v for v in engine.catalog.attribute_values(c) if v} for c in FILTERS}
        return self._choices

    def filters(self, gender=ANY, category=ANY, colour=ANY) -> dict[str, str]:
        """The filters of a request as engine filters; "Any", "" or None leave one off. Values compare without
        case; one the catalog does not hold is refused (it would silently return nothing)."""
        chosen = {}
        for (column, label), value in zip(FILTERS.items(), (gender, category, colour)):
            if value is None or value == "" or (isinstance(value, str) and value.casefold() == ANY.casefold()):
                continue
            known = self._filter_values()[column]
            canonical = known.get(value.casefold()) if isinstance(value, str) else None
            if canonical is None:
                examples = ", ".join(sorted(known.values())[:8])
                raise QueryError(f"Unknown {label.lower()} {shorten(value)}; use '{ANY}' or one of the catalog's "
                                 f"values ({examples}, ...: the app's {label} list).")
            chosen[column] = canonical
        return chosen

    def _engine(self, model):
        name = self.model_name(model)
        return name, self.registry.get(name)

    # -- searches ---------------------------------------------------------------------------------------------
    def _text(self, query, k=10, model=None, gender=ANY, category=ANY, colour=ANY, ignore=None):
        """Text search (batched with the concurrent text queries of the same model). `ignore`: chip keys of the
        query's understood intents to switch off ("gender", "not:baseColour"; see `understood`).

        Written once for both ways of waiting: a generator that yields what it waits for (`_Blocking`: a call that
        may block, `_Search`: a call for the search threads, a `Future`) and returns the `Answer`; `text` runs it
        on the caller's thread, `text_async` awaits it on an event loop (`_drive`, `_drive_async`)."""
        start = time.perf_counter()
        k = parse_k(k)
        name = self.model_name(model)
        engine = self.registry.get(name) if self.registry.is_loaded(name) else (
            yield _Blocking(functools.partial(self.registry.get, name)))
        filters = self.filters(gender, category, colour)
        query = validate_text(query)
        ignore = parse_ignore(ignore)
        if engine.supports_text:
            batcher = self._batchers.get(name) or (yield _Blocking(functools.partial(self._batcher, name, engine)))
            yield batcher.submit(query)
        # The query's understanding is a search-thread step too: waiting for it inline would hold an asyncio
        # server's event loop (every other request, refusals included) until a search thread got to it.
        full = (yield _Search(functools.partial(engine.understand, query))) if self._understands(engine) else None
        understood, intent = self._understood(engine, query, ignore, full)
        results = yield _Search(functools.partial(engine.search_text, query, k=k, filters=filters, intent=intent))
        return self._answer(results, name, "text", start, {"text": query}, understood)

    def _drive(self, steps):
        """Runs a generator of `_text`'s kind on the caller's thread: blocking calls inline, searches on the search
        threads (`_run`), futures waited for."""
        value = None
        while True:
            try:
                step = steps.send(value)
            except StopIteration as done:
                return done.value
            if isinstance(step, _Search):
                value = self._run(step.call)
            elif isinstance(step, _Blocking):
                value = step.call()
            else:
                value = step.result()

    async def _drive_async(self, steps):
        """Awaits a generator of `_text`'s kind: blocking calls and searches on the search threads (`run_async`),
        futures awaited; no thread waits."""
        value = None
        while True:
            try:
                step = steps.send(value)
            except StopIteration as done:
                return done.value
            if isinstance(step, (_Search, _Blocking)):
                value = await self.run_async(step.call)
            else:
                value = await asyncio.wrap_future(step)

    @functools.wraps(_text, assigned=("__doc__",))
    def text(self, *args, **kwargs) -> Answer:
        return self._drive(self._text(*args, **kwargs))

    # `text` for an asyncio server: the request waits for its encoding pass and its search without a thread of its
    # own (two thread hand-offs fewer per request than `text` on a worker thread); same arguments, same code.
    @functools.wraps(_text, assigned=("__doc__",))
    async def text_async(self, *args, **kwargs) -> Answer:
        return await self._drive_async(self._text(*args, **kwargs))

    def understand(self, query, model=None) -> dict:
        """What the engine understands of a text query (`understood` of a text answer, nothing ignored)."""
        _, engine = self._engine(model)
        return self._understood(engine, validate_text(query), [])[0] or {}

    @staticmethod
    def _understands(engine) -> bool:
        return engine.supports_text and engine.use_intents

    def _understood(self, engine, query: str, ignore: list[str], full=None):
        """(the query's full understanding as the API returns it, the intent the search uses) — (None, None) for
        an engine with query understanding off or without a text tower. `full`: `engine.understand(query)` when
        already computed."""
        if not self._understands(engine):
            return None, None
        full = self._run(engine.understand, query) if full is None else full
        return {**full.to_dict(), "chip_keys": [key for _, key in full.chip_keys()], "ignored": ignore}, \
            full.without(*ignore) if ignore else full

    def image(self, image=None, k=10, model=None, gender=ANY, category=ANY, colour=ANY, hybrid: bool = False,
              rerank_weight=0.3, item_id=None, box=None) -> Answer:
        """Image search: an uploaded photo (a file path; its product inside `box`, "left,top,right,bottom", when
        given), or "more like this" catalog item (`item_id`). With `hybrid`, the top candidates are re-ranked by the
        re-ranking model with `rerank_weight`. The answer carries the photo that was searched."""
        start = time.perf_counter()
        k = parse_k(k)
        name, engine = self._engine(model)
        filters = self.filters(gender, category, colour)
        weight = self._rerank_weight(engine, hybrid, rerank_weight)
        if item_id is not None:
            item_id = parse_item_id(item_id)
            results = self._run(engine.search_item, item_id, k=k, filters=filters, rerank_weight=weight)
            query = {"item_id": item_id}
        elif image is None:
            raise QueryError("Upload a photo of a product first (or pick a random product).")
        else:
            photo = self._photo(engine, image, box, engine.catalog.scope(filters))  # chosen among what may come back
            results = self._run(engine.search_image, photo, k=k, filters=filters, rerank_weight=weight)
            return self._answer(results, name, "image", start, {"image": "upload", **searched(photo)}, photo=photo)
        return self._answer(results, name, "image", start, query)

    def _photo(self, engine, image, box, scope=None):
        """The uploaded photo as the engine will search it (`prepare_photo`, its cut-out chosen among the items of
        `scope`), decoded with bounded memory (`load_upload`) on the search threads (so at most `search_slots`
        photos are decoded at once); the answer's box is in the upload's pixels. A bad box is refused."""
        try:
            return self._run(prepare_upload, engine, image, parse_box(box), scope)
        except ValueError as error:
            if isinstance(error, REFUSED):
                raise
            raise QueryError(str(error)) from None

    def similar(self, item_id, k=10, model=None, gender=ANY, category=ANY, colour=ANY, rerank_weight=0.0) -> Answer:
        """More like a catalog item; `rerank_weight` > 0 turns hybrid re-ranking on (the API's one knob)."""
        weight = parse_weight(rerank_weight, "re-ranking weight")
        return self.image(None, k, model, gender, category, colour, hybrid=weight > 0, rerank_weight=weight,
                          item_id=parse_item_id(item_id))

    def composed(self, image=None, text="", k=10, model=None, gender=ANY, category=ANY, colour=ANY,
                 method: str | None = None, text_weight=None, item_id=None, box=None) -> Answer:
        """Reference (uploaded photo or catalog item) + modification text. `method` "combiner" (the model's
        learned combiner; the weighted sum for a model without one) or "sum" with `text_weight`; None = the
        combiner when the model has one."""
        start = time.perf_counter()
        k = parse_k(k)
        name, engine = self._engine(model)
        filters = self.filters(gender, category, colour)
        if method is not None and method not in COMPOSITION_METHODS:
            raise QueryError(f"Unknown composition method {shorten(method)}; use one of {COMPOSITION_METHODS}.")
        if item_id is not None:
            item_id = parse_item_id(item_id)
        elif image is None:
            raise QueryError("Upload a photo of the product to start from.")
        text = validate_text(text)
        if (method or "combiner") == "combiner" and getattr(engine.model, "combiner", None) is None:
            method = "sum"  # this model composes by weighted sum only
        method = method or "combiner"
        weight = parse_weight(text_weight, "text influence") if method == "sum" and text_weight is not None else None
        photo = None if item_id else self._photo(engine, image, box)
        results = self._run(engine.search_composed, photo, text, k=k, filters=filters,
                            item_id=item_id, method=method, text_weight=weight)
        query = {"item_id": item_id} if item_id else {"image": "upload", **searched(photo)}
        understood, _ = self._understood(engine, text, [])  # what the change asks for
        return self._answer(results, name, "composed", start, {**query, "text": text, "method": method}, understood,
                            photo=photo)

    def _mark_search_thread(self) -> None:
        self._local.search_thread = True
        self.lower_worker_priority()

    def lower_worker_priority(self) -> None:
        """Lowers the calling thread to the workers' priority (`worker_nice` below the event loop's)."""
        lower_thread_priority(self.worker_nice)

    def _submit(self, fn, *args, **kwargs):
        """`fn` queued for the search threads; `Overloaded` when `max_waiting` calls already wait for one."""
        self.waiting.enter()
        try:
            future = self._pool.submit(fn, *args, **kwargs)
        except BaseException:
            self.waiting.leave()
            raise
        future.add_done_callback(self.waiting.leave)
        return future

    def _run(self, search, *args, **kwargs):
        """`search(*args, **kwargs)` on the search threads (its exception, if any, raised here)."""
        if self._pool is None or getattr(self._local, "search_thread", False):
            return search(*args, **kwargs)
        return self._submit(search, *args, **kwargs).result()

    async def run_async(self, fn, *args, **kwargs):
        """`fn(*args, **kwargs)` on the search threads, awaited by an asyncio server (no thread of its own waits):
        a whole `similar` / `composed` request, or `image_path`."""
        if self._pool is None:
            return await asyncio.get_running_loop().run_in_executor(None, functools.partial(fn, *args, **kwargs))
        return await asyncio.wrap_future(self._submit(fn, *args, **kwargs))

    def _admitted(self):
        return self.admission.admitted() if self.admission is not None else contextlib.nullcontext()

    def call(self, method: str, **kwargs) -> Answer:
        """The search method `method` (`text`, `similar`, `composed`, ...) as a transport calls it: admitted first
        (`Overloaded` when `max_in_flight` requests are already in), then run on the caller's thread."""
        with self._admitted():
            return getattr(self, method)(**kwargs)

    async def call_async(self, method: str, **kwargs) -> Answer:
        """`call` for an asyncio server: its `_async` twin where it has one (the same code, awaited), else the whole
        call on the search threads."""
        with self._admitted():
            twin = getattr(self, f"{method}_async", None)
            if twin is not None:
                return await twin(**kwargs)
            return await self.run_async(getattr(self, method), **kwargs)

    @staticmethod
    def _rerank_weight(engine, hybrid: bool, weight) -> float:
        if not hybrid:
            return 0.0
        weight = parse_weight(weight, "re-ranking weight")
        if engine.reranker is None:
            raise QueryError("Hybrid re-ranking is not available for this model (no re-ranking model is loaded).")
        return weight

    # -- models and catalog items -----------------------------------------------------------------------------
    def model_info(self, model=None) -> dict:
        """What a model can do, for the UI (loads it on first use): its name, number of products, whether it
        searches by text, composes with a learned combiner (and its default text weight), and the name of its
        re-ranking model (None: no hybrid re-ranking)."""
        name, engine = self._engine(model)
        return {"name": name, "products": len(engine.index), "supports_text": engine.supports_text,
                "has_combiner": getattr(engine.model, "combiner", None) is not None,
                "text_weight": float(getattr(engine.model.config, "composition_text_weight", 0.5) or 0.5),
                "reranker": engine.reranker.name if engine.reranker is not None else None}

    def catalog_items(self, model=None):
        """The catalog items (a DataFrame: ids, titles, attributes, photo paths) of `model`'s index; None when it
        serves from a collection alone (no item table: `example_photos`, `image_folders`)."""
        return self._engine(model)[1].index.items

    def example_photos(self, types, model=None) -> dict[str, str]:
        """One photo per article type of `types` (`CatalogPositions.example_photos`)."""
        return self._engine(model)[1].catalog.example_photos(types)

    def image_folders(self, model=None) -> list[str]:
        """The folders of `model`'s catalog photos (where the app may serve files from)."""
        return self._engine(model)[1].catalog.image_folders()

    def index_manifest(self, model=None) -> dict:
        """The manifest of `model`'s index (model fingerprint, number of items, build time)."""
        return getattr(self._engine(model)[1].index, "manifest", {}) or {}

    def random_item(self, model=None, gender=ANY, category=ANY, colour=ANY) -> tuple[str, str]:
        """(id, absolute photo path) of a random catalog item within the filters; refused when none matches."""
        _, engine = self._engine(model)
        row = engine.catalog.random_row(self.filters(gender, category, colour))
        if row is None:
            raise QueryError("No product matches these filters.")
        return str(row["id"]), row["image_path"]

    def image_path(self, item_id, model=None) -> str:
        """The absolute path of a catalog item's photo (inside the server: the UI, the image route)."""
        item_id = parse_item_id(item_id)
        _, engine = self._engine(model)
        return str(engine.catalog.item_row(engine.position(item_id))["image_path"])

    # -- output -----------------------------------------------------------------------------------------------
    @staticmethod
    def public_result(result: SearchResult) -> dict:
        """A result as it leaves the server: the photo's catalog-relative path and the app's URL for it."""
        # to_dict() without dataclasses.asdict's recursive deep copies (a tenth of a millisecond per answer)
        data = {key: dict(value) if isinstance(value, dict) else list(value) if isinstance(value, list) else value
                for key, value in vars(result).items()}
        data["image_path"] = catalog_relative(result.image_path)
        data["image_url"] = IMAGE_ROUTE + quote(result.id, safe="") if result.image_path else None
        return data

    def structured(self, results: list[SearchResult], model: str, mode: str, seconds: float, query: Mapping,
                   understood: dict | None = None) -> dict:
        """What API clients read: ids, titles, attributes, scores, VSC and collapsed near-duplicates
        (`duplicates`) per result, the query's summary and, for text, what the engine understood of it."""
        out = {"model": model, "mode": mode, "query": dict(query), "took_ms": round(seconds * 1000, 1),
               "summary": summarise(results), "results": [self.public_result(r) for r in results]}
        if understood is not None:
            out["understood"] = understood
        return out

    def _answer(self, results, model, mode, start, query, understood=None, photo=None) -> Answer:
        return Answer(results, self.structured(results, model, mode, time.perf_counter() - start, query, understood),
                      photo.image if photo is not None else None)

    def _batcher(self, name: str, engine) -> TextQueryBatcher:
        with self._lock:
            batcher = self._batchers.get(name)
            if batcher is None:
                encode = engine.prepare_text_queries
                self.precisions[name] = choose_query_precision(engine, PROBE_QUERIES, self.query_precision)
                logger.info("text queries of %s are encoded in %s (bf16 parity: %s)", name,
                            *self.precisions[name])
                if self.precisions[name][0] == "bf16":
                    encode = functools.partial(bf16_when_batched, encode)
                batcher = self._batchers[name] = TextQueryBatcher(encode, self.max_batch, self.batch_window_s,
                                                                  name=f"query-encoder-{name}",
                                                                  max_pending=self.max_pending,
                                                                  on_start=self.lower_worker_priority)
            return batcher


REFUSED = (QueryError, ImageError)


def prepare_upload(engine, image, box, scope=None):
    """`engine.prepare_photo` of an upload (a file path or bytes: decoded by `load_upload`, at most `WORKING_SIDE`
    pixels a side) or of an image already in memory, its cut-out chosen among the items of `scope` (None: every
    item); the returned box is in the upload's pixels."""
    if not isinstance(image, (str, os.PathLike, bytes, bytearray)):
        return engine.prepare_photo(image, box, scope)
    upload = load_upload(image)
    photo = engine.prepare_photo(upload.image, upload.to_image(box), scope)
    return dataclasses.replace(photo, box=upload.to_upload(photo.box)) if upload.scale != 1 else photo


def searched(photo) -> dict:
    """What the answer says of the searched photo: the box it started from (pixels of the upload) and whether the
    product was cut out of its background."""
    return {"searched": {"box": [int(v) for v in photo.box], "isolated": bool(photo.applied), "how": photo.reason}}

__all__ = ["ANY", "COMPOSITION_METHODS", "FILTERS", "IMAGE_ROUTE", "MAX_ID_CHARS", "MAX_K", "REFUSED", "Answer",
           "Overloaded", "QueryError", "SearchResult", "SearchService",
           "catalog_relative", "parse_item_id", "parse_k", "parse_weight", "searched", "shorten", "user_message"]
