"""The real Qdrant engine in process: `qdrant-edge-py` (Qdrant's Rust shard as a Python extension) behind the part of
`qdrant-client`'s interface that the store and the build use, so one collection schema and one ranking request
(`QdrantStore`, `build_collection`) run on either client.

This module is the rendering layer for the edge shard: the store and the build describe collections, points,
filters, prefetches and formulas with `qdrant_client.models`; `EdgeClient` renders each into its `qdrant_edge`
counterpart (`render_filter`, `render_query`, `render_expression`, ...) and maps answers back to objects with
the attributes `qdrant-client` returns (`.points`, `.id`, `.score`, `.payload`, `.vector`).

What a server keeps for a collection and a shard does not (collections, aliases, collection metadata) lives in the
folder, as small JSON files written atomically:

    DIR/aliases.json                       serving name -> physical collection
    DIR/collections/<name>/collection.json vector sizes, payload indexes, the collection metadata
    DIR/collections/<name>/shard/          the EdgeShard (segments, WAL)

One process opens a folder at a time (a lock file), as with qdrant-client's local mode. Unlike local mode the
shard evaluates prefetches, formulas and payload indexes natively; HNSW graphs and int8 copies are built by
`optimize` (the build calls it once the last batch is in).
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import threading
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from modeling.utils.io import atomic_write_text

try:  # optional extras: `pip install qdrant-edge-py qdrant-client`
    import qdrant_edge as edge
    from qdrant_client import models
except ImportError:  # pragma: no cover - exercised only without the extras
    edge = None
    models = None

ALIASES_FILE = "aliases.json"
COLLECTION_FILE = "collection.json"
LOCK_FILE = ".lock"


def _write_json(path: Path, value) -> None:
    """Write `value` to `path` atomically (`atomic_write_text`: a synced temporary file renamed over it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(value))


def _read_json(path: Path, default):
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else default


# -- rendering qdrant_client.models as qdrant_edge objects ------------------------------------------------------
def render_condition(condition):
    """A filter condition (field match, id set, nested filter)."""
    if isinstance(condition, models.Filter):
        return render_filter(condition)
    if isinstance(condition, models.HasIdCondition):
        return edge.HasIdCondition({str(i) for i in condition.has_id})
    if isinstance(condition, models.FieldCondition):
        match = condition.match
        if isinstance(match, models.MatchAny):
            return edge.FieldCondition(condition.key, match=edge.MatchAny(list(match.any)))
        if isinstance(match, models.MatchValue):
            return edge.FieldCondition(condition.key, match=edge.MatchValue(match.value))
        if isinstance(match, models.MatchText):
            return edge.FieldCondition(condition.key, match=edge.MatchText(match.text))
    raise TypeError(f"the edge client cannot render the condition {condition!r}")


def render_filter(query_filter):
    if query_filter is None:
        return None
    parts = {}
    for part in ("must", "should", "must_not"):
        conditions = getattr(query_filter, part) or []
        if not isinstance(conditions, list):
            conditions = [conditions]
        parts[part] = [render_condition(c) for c in conditions] or None
    return edge.Filter(**parts)


def render_expression(expression):
    """A formula expression: numbers are constants, strings (`"$score[0]"`) variables, conditions 0/1."""
    if isinstance(expression, (int, float)):
        return edge.Expression.Constant(float(expression))
    if isinstance(expression, str):
        return edge.Expression.Variable(expression)
    if isinstance(expression, models.SumExpression):
        return edge.Expression.Sum([render_expression(e) for e in expression.sum])
    if isinstance(expression, models.MultExpression):
        return edge.Expression.Mult([render_expression(e) for e in expression.mult])
    if isinstance(expression, models.NegExpression):
        return edge.Expression.Neg(render_expression(expression.neg))
    return edge.Expression.Condition(render_condition(expression))


def render_query(query, using: str | None = None):
    """A nearest-neighbour query (dense list / array or sparse vector, on the named vector `using`), a formula, a
    fusion or a random sample."""
    if isinstance(query, models.SampleQuery):
        return edge.Sample.Random  # the only sampling Qdrant offers
    if isinstance(query, models.FormulaQuery):
        return edge.Formula(render_expression(query.formula), defaults=dict(query.defaults or {}))
    if isinstance(query, models.FusionQuery):
        if query.fusion == models.Fusion.RRF:
            return edge.Fusion.Rrf(k=2)  # qdrant's default RRF constant
        return edge.Fusion.Dbsf()
    if isinstance(query, models.SparseVector):
        return edge.Query.Nearest(edge.SparseVector(list(query.indices), [float(v) for v in query.values]),
                                  using=using)
    return edge.Query.Nearest([float(v) for v in np.asarray(query, np.float32).ravel()], using=using)


def render_params(params):
    if params is None:
        return None
    quantization = None
    if params.quantization is not None:
        quantization = edge.QuantizationSearchParams(ignore=bool(params.quantization.ignore),
                                                     rescore=params.quantization.rescore,
                                                     oversampling=params.quantization.oversampling)
    return edge.SearchParams(hnsw_ef=params.hnsw_ef, exact=bool(params.exact), quantization=quantization)


def render_prefetch(prefetch):
    """A prefetch stage, nested stages included (a query over them re-scores their union)."""
    nested = prefetch.prefetch if isinstance(prefetch.prefetch, list) else [prefetch.prefetch] * bool(prefetch.prefetch)
    return edge.Prefetch(limit=int(prefetch.limit), query=render_query(prefetch.query, prefetch.using),
                         prefetches=[render_prefetch(p) for p in nested] or None,
                         filter=render_filter(prefetch.filter), params=render_params(prefetch.params))


def render_vector(vector):
    """A point's named vectors: dense lists and sparse vectors."""
    return {name: (edge.SparseVector(list(v.indices), [float(x) for x in v.values])
                   if isinstance(v, models.SparseVector) else [float(x) for x in v]) for name, v in vector.items()}


def render_index(schema):
    """A payload index: keyword, or full text (word tokenizer, lower-cased)."""
    if isinstance(schema, models.TextIndexParams):
        return edge.TextIndexParams(tokenizer=edge.TokenizerType.Word, lowercase=bool(schema.lowercase))
    if schema == models.PayloadSchemaType.KEYWORD:
        return edge.PayloadSchemaType.Keyword
    if schema == models.PayloadSchemaType.INTEGER:
        return edge.PayloadSchemaType.Integer
    raise TypeError(f"the edge client cannot render the payload index {schema!r}")


def _with_vector(with_vectors):
    return list(with_vectors) if isinstance(with_vectors, (list, tuple)) else bool(with_vectors)


def _point(point) -> SimpleNamespace:
    """A scored point or record as qdrant-client shows it (string id, payload dict, named vectors)."""
    return SimpleNamespace(id=str(point.id), score=float(getattr(point, "score", 0.0) or 0.0),
                           payload=point.payload, vector=point.vector)


def shard_config(config, sizes: dict[str, int]):
    """The shard's vectors (`sizes`: each named dense vector's dimension, all cosine), storage and quantization
    from a `QdrantConfig` (as `create_collection` asks a server)."""
    memory = edge.Memory.Cold if config.on_disk else edge.Memory.Cached
    vectors = {name: edge.EdgeVectorParams(size=int(size), distance=edge.Distance.Cosine, memory=memory)
               for name, size in sizes.items()}
    quantization = (edge.ScalarQuantizationConfig(edge.ScalarType.Int8, quantile=config.quantile,
                                                  memory=edge.Memory.Cached) if config.quantization else None)
    return edge.EdgeConfig(vectors=vectors, sparse_vectors={"keywords": edge.EdgeSparseVectorParams()},
                           quantization_config=quantization, payload_memory=memory)


class EdgeClient:
    """The collections of a folder, each one `EdgeShard`, behind `qdrant-client`'s calls (see the module
    docstring). Open through `QdrantConfig(path=DIR, edge=True).connect()`."""

    def __init__(self, path: str | os.PathLike, config):
        if edge is None:
            raise ImportError("the qdrant-edge vector store needs qdrant-edge-py and qdrant-client: "
                              "pip install qdrant-edge-py qdrant-client")
        self.root, self.config = Path(path), config
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock = open(self.root / LOCK_FILE, "a+")
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock.close()
            raise RuntimeError(f"Storage folder {self.root} is already accessed by another instance") from None
        self._shards: dict[str, object] = {}
        self._aliases_read: dict | None = None  # this process alone writes the folder: read once, kept current
        self._opening = threading.Lock()

    # -- collections, aliases, metadata ----------------------------------------------------------------------------
    def _folder(self, name: str) -> Path:
        return self.root / "collections" / name

    def _aliases(self) -> dict:
        if self._aliases_read is None:
            self._aliases_read = _read_json(self.root / ALIASES_FILE, {})
        return dict(self._aliases_read)

    def _resolve(self, name: str) -> str:
        physical = self._aliases().get(name, name)
        if physical not in self._shards and not (self._folder(physical) / COLLECTION_FILE).is_file():
            raise ValueError(f"Collection {name} not found")
        return physical

    def _record(self, name: str) -> dict:
        return _read_json(self._folder(self._resolve(name)) / COLLECTION_FILE, {})

    def _shard(self, name: str):
        physical = self._resolve(name)
        if physical not in self._shards:
            with self._opening:  # concurrent first queries open the shard once
                if physical not in self._shards:
                    self._shards[physical] = edge.EdgeShard.load(str(self._folder(physical) / "shard"))
        return self._shards[physical]

    def get_collections(self):
        folder = self.root / "collections"
        names = sorted(p.name for p in folder.iterdir() if (p / COLLECTION_FILE).is_file()) if folder.is_dir() else []
        return SimpleNamespace(collections=[SimpleNamespace(name=n) for n in names])

    def get_aliases(self):
        return SimpleNamespace(aliases=[SimpleNamespace(alias_name=a, collection_name=c)
                                        for a, c in self._aliases().items()])

    def get_collection(self, name: str):
        record, shard = self._record(name), self._shard(name)
        vectors = {v: SimpleNamespace(size=size) for v, size in record["vectors"].items()}
        params = SimpleNamespace(vectors=vectors)
        return SimpleNamespace(config=SimpleNamespace(params=params, metadata=record.get("metadata", {})),
                               payload_schema=dict(shard.info().payload_schema),
                               points_count=shard.info().points_count)

    def create_collection(self, name: str, *, vectors_config: dict, metadata: dict | None = None, **_options):
        """A new shard; `vectors_config` as qdrant-client's (`VectorParams` per dense name); the rest of the
        server's options (shards, replicas, quantization) come from the `QdrantConfig` the client was opened with."""
        folder = self._folder(name)
        if folder.exists():
            raise ValueError(f"Collection {name} already exists")
        sizes = {v: int(p.size) for v, p in vectors_config.items()}
        try:  # the shard and its record together, or neither: no folder the client can neither list nor delete
            self._shards[name] = edge.EdgeShard.create(str(folder / "shard"),
                                                       shard_config(self.config, sizes))
            _write_json(folder / COLLECTION_FILE, {"vectors": sizes, "metadata": dict(metadata or {})})
        except BaseException:
            self._shards.pop(name, None)
            shutil.rmtree(folder, ignore_errors=True)
            raise

    def update_collection(self, name: str, metadata: dict | None = None, **_options) -> None:
        """Merge `metadata` key by key into the collection's (as a server does)."""
        physical = self._resolve(name)
        record = self._record(physical)
        record["metadata"] = {**record.get("metadata", {}), **(metadata or {})}
        _write_json(self._folder(physical) / COLLECTION_FILE, record)

    def update_collection_aliases(self, change_aliases_operations) -> None:
        """Delete and create aliases, applied together in one atomic write."""
        aliases = self._aliases()
        for operation in change_aliases_operations:
            if getattr(operation, "delete_alias", None) is not None:
                aliases.pop(operation.delete_alias.alias_name, None)
            if getattr(operation, "create_alias", None) is not None:
                self._resolve(operation.create_alias.collection_name)
                aliases[operation.create_alias.alias_name] = operation.create_alias.collection_name
        _write_json(self.root / ALIASES_FILE, aliases)
        self._aliases_read = aliases

    def delete_collection(self, name: str) -> None:
        physical = self._resolve(name)
        shard = self._shards.pop(physical, None)
        if shard is not None:
            shard.close()
        shutil.rmtree(self._folder(physical))

    def create_payload_index(self, name: str, field_name: str, field_schema=None, **_options) -> None:
        self._shard(name).update(edge.UpdateOperation.create_field_index(field_name, render_index(field_schema)))

    # -- points ----------------------------------------------------------------------------------------------------
    def upsert(self, name: str, points, **_options) -> None:
        shard = self._shard(name)
        shard.update(edge.UpdateOperation.upsert_points(
            [edge.Point(str(p.id), render_vector(p.vector), p.payload) for p in points]))
        shard.flush()  # what wait=True promises: the batch is on disk before its progress is recorded

    def set_payload(self, name: str, payload: dict, points, **_options) -> None:
        """Set `payload`'s fields on the points `points` (ids), keeping their other fields."""
        shard = self._shard(name)
        shard.update(edge.UpdateOperation.set_payload([str(i) for i in points], payload))
        shard.flush()

    def optimize(self, name: str) -> None:
        """Build the shard's HNSW graphs, int8 copies and merged segments (a server does it in the background)."""
        shard = self._shard(name)
        shard.optimize()
        shard.flush()

    def count(self, name: str, count_filter=None, exact: bool = True, **_options):
        request = edge.CountRequest(exact=bool(exact), filter=render_filter(count_filter))
        return SimpleNamespace(count=int(self._shard(name).count(request)))

    def retrieve(self, name: str, ids, with_vectors=False, with_payload=True, **_options) -> list:
        records = self._shard(name).retrieve([str(i) for i in ids], with_payload=with_payload,
                                             with_vector=_with_vector(with_vectors))
        return [_point(r) for r in records]

    def scroll(self, name: str, limit: int = 10, offset=None, scroll_filter=None, with_payload=True,
               with_vectors=False, **_options) -> tuple[list, str | None]:
        """A page of points in id order and the id the next page starts from (None after the last)."""
        records, following = self._shard(name).scroll(edge.ScrollRequest(
            offset=None if offset is None else str(offset), limit=int(limit), filter=render_filter(scroll_filter),
            with_payload=with_payload, with_vector=_with_vector(with_vectors)))
        return [_point(r) for r in records], None if following is None else str(following)

    def query_points(self, name: str, query=None, *, using: str | None = None, prefetch=None, query_filter=None,
                     limit: int = 10, offset: int | None = None, search_params=None, with_payload=True,
                     with_vectors=False, **_options):
        request = edge.QueryRequest(limit=int(limit), offset=int(offset or 0), query=render_query(query, using),
                                    prefetches=[render_prefetch(p) for p in prefetch or []] or None,
                                    filter=render_filter(query_filter), params=render_params(search_params),
                                    with_payload=with_payload, with_vector=_with_vector(with_vectors))
        return SimpleNamespace(points=[_point(p) for p in self._shard(name).query(request)])

    def close(self) -> None:
        for shard in self._shards.values():
            shard.close()
        self._shards.clear()
        if not self._lock.closed:
            fcntl.flock(self._lock, fcntl.LOCK_UN)
            self._lock.close()


__all__ = ["EdgeClient", "render_condition", "render_expression", "render_filter", "render_prefetch",
           "render_query", "shard_config"]
