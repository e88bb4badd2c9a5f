"""A Qdrant collection as the engine's vector store: the same fused score as the in-process FAISS index, computed
by the Qdrant server (or by `qdrant-client`'s embedded local mode) instead of by numpy.

Why Qdrant: one FAISS index lives in one process's RAM. A catalog of millions of items, or several app replicas
behind a load balancer, needs a store that shards, replicates and quantises on its own; Qdrant does, and its
`query_points` API can fuse several signals server-side, so the app never pulls candidate lists into Python.

One collection per model fingerprint (`collection_name`): embeddings of two models are not comparable, so a model
never reads another's collection. Each point is one catalog item:

* `visual` (dense, cosine): the model's image embedding, what `CatalogIndex.vectors` holds;
* `title` (dense, cosine): the MiniLM embedding of `item_description(row)`, what `CatalogIndex.text_embeddings` holds;
* `keywords` (sparse, dot product): the item's BM25 term weights, exactly `BM25Index`'s per-term contributions
  (same tokenizer, idf, k1, b), so a query's sparse vector of distinct-term indicators dotted with it *is*
  `BM25Index.scores(query)` for that item: the keyword score is computed server-side;
* payload: `id`, `position` (catalog order), `title`, `image_path`, `description` (full-text index), the filter
  attributes case-folded as the engine compares them (keyword indexes), their display values under `attributes`,
  and an optional `group` (keyword index) for de-duplicating near-identical products.

`QdrantStore.rank` is the engine's `_rank`: a prefetch per signal with the filter inside each prefetch, then a
`FormulaQuery` over the prefetched points:
`score = (1 - w) * visual + w * (text + lw * keywords / max_keywords)`, `max_keywords` being the best BM25 score of
the query over *all* items (one extra sparse query, limit 1, no filter), as `BM25Index.normalised_scores` divides by.
The formula is a list of `FormulaTerm`s: a payload-condition boost is one more term (`payload_boost`).

Exactness (`QdrantStore.plan`): each signal prefetches its allowed top `prefetch_depth` (default 1,000: a bounded
plan, whatever the catalog's size), then every signal re-scores the union of those candidates, so every candidate's
fused score is exact; an item outside every signal's top `prefetch_depth` cannot be ranked, as with the engine's
own candidate fusion above `EXACT_FUSION_LIMIT`. Up to `prefetch_depth` items results equal the FAISS engine's;
above, recall@10 against the exact fused ranking is measured by `benchmarks/qdrant_plan.py` (docs/scale.md).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from modeling.data.catalog import ATTRIBUTES
from modeling.retrieval.common.lexical import KeywordEncoder, KeywordStatistics  # noqa: F401 - re-exported
from modeling.retrieval.backends.qdrant.config import (COLLECTION_PREFIX, DEFAULT_PREFETCH_DEPTH,  # noqa: F401
                                                       QdrantConfig, QdrantStoreError)
from modeling.retrieval.common.types import QueryError

try:  # an optional extra: `pip install .[qdrant]`
    from qdrant_client import QdrantClient, models
except ImportError:  # pragma: no cover - exercised only without the extra
    QdrantClient = None
    models = None

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
VISUAL, TITLE, KEYWORDS = "visual", "title", "keywords"
GROUP_FIELD = "group"
DESCRIPTION_FIELD = "description"
# Keyword payload indexes: every filter attribute, the item id (exclusions), the de-duplication group.
KEYWORD_FIELDS = ("id", *ATTRIBUTES, GROUP_FIELD)
# Collection metadata (merged key by key on update): the collection's identity, written at creation, and its
# completion record, written when the last batch is in. Builds also keep per-process progress keys there.
METADATA_KEY = "fashion_search"
COMPLETE_KEY = "fashion_search_complete"
# Point ids: UUIDv5 of the item id in this namespace, so a re-run overwrites instead of duplicating.
POINT_NAMESPACE = uuid.UUID("6f1c3a52-8d0e-4c1b-9a57-2f5d7e0b4a61")


def point_id(item_id) -> str:
    """The point id of a catalog item: a UUIDv5 of its id, the same on every run and every machine."""
    return str(uuid.uuid5(POINT_NAMESPACE, str(item_id)))


def collection_name(fingerprint: str, prefix: str = COLLECTION_PREFIX) -> str:
    """The serving name (an alias) of a model's collection: one per model fingerprint."""
    return f"{prefix}-{fingerprint}"


def fold(value) -> str:
    """Filter values compare as the engine compares them (`CatalogIndex.mask`): stripped and case-folded."""
    return str(value).strip().casefold()


@dataclass(frozen=True)
class FormulaTerm:
    """`weight * expression` in the fused score: `expression` is a prefetch score (`"$score[i]"`) or a payload
    condition (1 when the point matches it, else 0)."""

    weight: float
    expression: Any

    def to_expression(self):
        return models.MultExpression(mult=[float(self.weight), self.expression])


def payload_boost(field_name: str, values: Iterable, weight: float) -> FormulaTerm:
    """`+ weight * [payload field in values]`: e.g. `payload_boost("articleType", ["Tshirts"], 0.05)`. Filter
    attributes are stored case-folded, so their values are folded here too."""
    values = [fold(v) if field_name in ATTRIBUTES else str(v) for v in values]
    return FormulaTerm(weight, models.FieldCondition(key=field_name, match=models.MatchAny(any=values)))


class StoreHit(NamedTuple):
    """One ranked item: `score` is what ranked it; `text_score` / `lexical_score` are None when not fused."""

    id: str
    score: float
    visual_score: float
    text_score: float | None
    lexical_score: float | None
    payload: dict


class QdrantStore:
    """An open, checked collection: `rank` (the engine's fused ranking), `neighbours`, `item_vectors`.

    Open with `QdrantStore.open(config, model_info)`; `modeling.retrieval.backends.qdrant.ingest.build_collection`
    creates it.
    """

    def __init__(self, client: "QdrantClient", config: QdrantConfig, name: str, metadata: dict, num_items: int = 0):
        self.client, self.config, self.name, self.metadata = client, config, name, metadata
        self.keywords = KeywordEncoder.from_dict(metadata["keywords"]) if metadata.get("keywords") else None
        self.attributes = tuple(metadata.get("attributes", ()))
        self.num_items = int(num_items)

    def __repr__(self) -> str:
        return f"QdrantStore(collection={self.name!r}, location={self.config.location!r}, num_items={self.num_items})"

    # -- opening -------------------------------------------------------------------------------------------------
    @classmethod
    def open(cls, config: QdrantConfig, model_info: Mapping, text_dim: int | None = None,
             client: "QdrantClient | None" = None) -> "QdrantStore":
        """Connect and check the collection against the model that will query it.

        Raises:
            QdrantStoreError: unreachable server or refused key; no such collection; built by another model or with
                other dimensions; an interrupted build; a missing payload index (server only: local mode keeps none).
        """
        client = client or config.connect()
        name = config.collection or collection_name(model_info["fingerprint"], config.prefix)
        hint = (f"build it with `python -m modeling.retrieval.engine.build_index "
                f"--model {model_info.get('name', 'MODEL')} --catalog CATALOG --vector-store {config.store_name} "
                f"{'--qdrant-path ' + config.path if config.is_local else '--qdrant-url ' + str(config.url)}`")
        try:  # get_collection resolves aliases everywhere; collection_exists does not on every server version
            info = client.get_collection(name)
        except Exception as error:  # local mode: ValueError; a server: HTTP 404; anything else is reported as is
            if isinstance(error, ValueError) or getattr(error, "status_code", None) == 404:
                raise QdrantStoreError(f"no collection {name!r} at {config.location}; {hint}") from None
            raise QdrantStoreError(f"reading collection {name!r} at {config.location} failed: "
                                   f"{type(error).__name__}: {config.scrub(str(error))[:200]}") from None
        everything = info.config.metadata or {}
        metadata = everything.get(METADATA_KEY)
        if not isinstance(metadata, dict) or metadata.get("format_version") != FORMAT_VERSION:
            raise QdrantStoreError(f"collection {name!r} at {config.location} was not written by this package's build "
                                   f"(format {FORMAT_VERSION}); {hint}")
        check_collection(info, metadata, model_info, text_dim, name=name, location=config.location,
                         check_indexes=config.native)
        complete = everything.get(COMPLETE_KEY)
        if not complete:
            raise QdrantStoreError(f"collection {name!r} at {config.location} is an interrupted build; run the build "
                                   "command again to resume it")
        return cls(client, config, name, metadata, complete.get("num_items", 0))

    # -- queries -------------------------------------------------------------------------------------------------
    def query_filter(self, filters: Mapping | None = None, exclude_ids: Iterable | None = None):
        """The engine's filter semantics as a Qdrant filter: every key must match one of its values (compared
        stripped and case-folded); empty values are ignored; `exclude_ids` never come back. None when nothing."""
        must = []
        for key, values in (filters or {}).items():
            if values is None or isinstance(values, (str, int, float)):
                values = [values]
            folded = sorted({fold(v) for v in values if v is not None and str(v).strip()})
            if not folded:
                continue
            if key not in self.attributes:
                raise QueryError(f"Unknown filter in {sorted(filters)}; use one of {list(self.attributes)}.")
            must.append(models.FieldCondition(key=key, match=models.MatchAny(any=folded)))
        excluded = [point_id(i) for i in (exclude_ids or ())]
        must_not = [models.HasIdCondition(has_id=excluded)] if excluded else None
        return models.Filter(must=must, must_not=must_not) if must or must_not else None

    def _search_params(self):
        if not self.config.native:  # local mode is brute force: search parameters mean nothing there (and warn)
            return None
        quantization = (models.QuantizationSearchParams(rescore=self.config.rescore,
                                                        oversampling=self.config.oversampling)
                        if self.config.quantization else None)
        return models.SearchParams(exact=self.config.exact, quantization=quantization, hnsw_ef=self.config.hnsw_ef)

    def _depth(self, k: int) -> int:
        return max(int(self.config.prefetch_depth), int(k))

    def max_keyword_score(self, query_vector: tuple[list[int], list[float]]) -> float:
        """The best BM25 score of a query over all items (no filter): what the keyword score is divided by."""
        if not query_vector[0]:
            return 0.0
        top = self.client.query_points(self.name, query=models.SparseVector(indices=query_vector[0],
                                                                            values=query_vector[1]),
                                       using=KEYWORDS, limit=1, with_payload=False).points
        return float(top[0].score) if top else 0.0

    def rank(self, visual_query: np.ndarray, text_query: np.ndarray | None = None, query_text: str | None = None,
             weight: float = 0.0, lexical_weight: float = 0.0, k: int = 10, filters: Mapping | None = None,
             exclude_ids: Iterable | None = None, boosts: Sequence[FormulaTerm] = (),
             fusion: str = "formula", depth: int | None = None) -> list[StoreHit]:
        """The engine's `_rank`, server-side: the top `k` by visual cosine alone (no `text_query`, or `weight` 0)
        or by `(1 - weight) * visual + weight * (text + lexical_weight * keywords / max keywords)`, plus `boosts`.

        Args:
            visual_query: unit query vector in the model's space (text, image or composed embedding).
            text_query: unit MiniLM embedding of the query text (the item-text match), or None.
            query_text: the raw query for the keyword match (None or `lexical_weight` 0: no keyword term).
            filters / exclude_ids: as `FashionSearchEngine.allowed_mask`.
            boosts: extra formula terms (`payload_boost`), added to the fused score.
            fusion: `"formula"` (the engine's weighted score) or `"rrf"` (Qdrant's reciprocal rank fusion of the
                same prefetches: rank-based, ignores the weights; not the engine's ranking, an option to compare).
            depth: candidates per signal (default `max(prefetch_depth, k)`, see `plan`); a caller that can bound
                what lies below the visual top `depth` (`visual_score_at`) ranks exactly from fewer.
        """
        k = int(k)
        if k < 1:
            raise QueryError("k must be at least 1.")
        if fusion not in ("formula", "rrf") or (fusion == "rrf" and boosts):
            raise QueryError(f"fusion must be 'formula' or 'rrf' (without boosts), got {fusion!r}")
        query_filter = self.query_filter(filters, exclude_ids)
        visual_query = np.asarray(visual_query, dtype=np.float32)
        fused = text_query is not None and weight > 0
        if not fused and not boosts:
            points = self.client.query_points(self.name, query=visual_query.tolist(), using=VISUAL,
                                              query_filter=query_filter, limit=k, search_params=self._search_params(),
                                              with_payload=True).points
            return [StoreHit(str(p.payload["id"]), p.score, p.score, None, None, p.payload) for p in points]
        depth = self._depth(k) if depth is None else max(int(depth), k)
        signals = [(VISUAL, visual_query.tolist())]  # (named vector, query) per signal, $score[i] in that order
        terms = [FormulaTerm(1.0 - weight if fused else 1.0, "$score[0]")]
        keyword_query, top = None, 0.0
        if fused:
            signals.append((TITLE, np.asarray(text_query, np.float32).tolist()))
            terms.append(FormulaTerm(weight, "$score[1]"))
            if query_text and lexical_weight > 0 and self.keywords is not None:
                keyword_query = self.keywords.query_vector(query_text)
                top = self.max_keyword_score(keyword_query)
                if top > 0 or (fusion == "rrf" and keyword_query[0]):
                    signals.append((KEYWORDS, models.SparseVector(indices=keyword_query[0], values=keyword_query[1])))
                    terms.append(FormulaTerm(weight * lexical_weight / max(top, 1e-30), "$score[2]"))
        lead = signals[1] if fused and weight >= 0.5 else signals[0]  # the heavier dense signal
        prefetch = self.plan(signals, query_filter, depth, rescore=fusion == "formula",
                             boosted=(lead, boosts) if fused and fusion == "formula" else None)
        with_vectors = [VISUAL, TITLE, KEYWORDS] if fused else [VISUAL]
        if fusion == "rrf":
            points = self.client.query_points(self.name, prefetch=prefetch, limit=k, with_payload=True,
                                              query=models.FusionQuery(fusion=models.Fusion.RRF),
                                              with_vectors=with_vectors).points
        else:
            points = self.query_formula(prefetch, [*terms, *boosts], k, with_vectors=with_vectors)
        return [self._hit(p, visual_query, text_query if fused else None, keyword_query, top, fused) for p in points]

    def plan(self, signals: Sequence[tuple[str, Any]], query_filter, depth: int, rescore: bool = True,
             boosted: tuple[tuple[str, Any], Sequence[FormulaTerm]] | None = None) -> list:
        """The prefetches of a fused ranking: the allowed top `depth` of each signal, and (`rescore`, several
        signals) every signal re-scored over their union. Without the second stage an item in one signal's top but
        not another's would score that signal's default, 0; with it, every candidate's fused score is exact and the
        only approximation left is an item outside every candidate list (measured by `benchmarks/qdrant_plan.py`).

        `boosted` = (signal, boosts): the `config.boost_prefetches` heaviest positive payload boosts each add one
        candidate list, that signal's allowed top `depth` among the items the boost favours. An item a boost lifts
        into the top 10 may rank below every signal's top `depth` by similarity alone ("bellies for ladies": the
        intended type, worded unlike its titles); the boost's own list makes it a candidate."""
        params = self._search_params()
        candidates = [models.Prefetch(query=query, using=using, filter=query_filter, limit=int(depth),
                                      params=None if using == KEYWORDS else params) for using, query in signals]
        if boosted is not None:
            (using, query), boosts = boosted
            candidates += [models.Prefetch(query=query, using=using, filter=within(query_filter, term.expression),
                                           limit=int(depth), params=None if using == KEYWORDS else params)
                           for term in strongest_boosts(boosts, self.config.boost_prefetches)]
        if not rescore or len(candidates) == 1:
            return candidates
        if self.config.plan == "two-stage":
            return self.rescoring_stage(signals, self.candidate_ids(candidates, depth))
        exact = (models.SearchParams(quantization=models.QuantizationSearchParams(ignore=True))
                 if self.config.native and self.config.quantization else None)
        return [models.Prefetch(prefetch=candidates, query=query, using=using, filter=query_filter,
                                limit=int(depth) * len(candidates), params=None if using == KEYWORDS else exact)
                for using, query in signals]

    def candidate_ids(self, candidates: list, depth: int) -> list[str]:
        """The union of the signals' top `depth` (the `candidates` prefetches), ids only: one request."""
        points = self.client.query_points(self.name, prefetch=candidates, limit=int(depth) * len(candidates),
                                          query=models.FusionQuery(fusion=models.Fusion.RRF), with_payload=False,
                                          with_vectors=False).points
        return [str(p.id) for p in points]

    def rescoring_stage(self, signals: Sequence[tuple[str, Any]], ids: list[str]) -> list:
        """Every signal scored exactly over the points `ids` (a full scan of those points alone, originals)."""
        only = models.Filter(must=[models.HasIdCondition(has_id=ids)])
        full = models.SearchParams(exact=True, quantization=models.QuantizationSearchParams(ignore=True)
                                   if self.config.quantization else None) if self.config.native else None
        return [models.Prefetch(query=query, using=using, filter=only, limit=max(len(ids), 1), params=full)
                for using, query in signals]

    def query_formula(self, prefetch: list, terms: Sequence[FormulaTerm], k: int, with_vectors=False) -> list:
        """Points ranked by `sum(term.weight * term.expression)` over the prefetched candidates; a point missing
        from a prefetch counts 0 for that `$score[i]`."""
        formula = models.SumExpression(sum=[term.to_expression() for term in terms])
        defaults = {f"$score[{i}]": 0.0 for i in range(len(prefetch))}
        return self.client.query_points(self.name, prefetch=prefetch,
                                        query=models.FormulaQuery(formula=formula, defaults=defaults),
                                        limit=int(k), with_payload=True, with_vectors=with_vectors).points

    @staticmethod
    def _hit(point, visual_query, text_query, keyword_query, top, fused) -> StoreHit:
        """The fused hit with its per-signal scores, recomputed from the k returned vectors (cheap, exact)."""
        vectors = point.vector or {}
        visual = float(np.dot(_unit(vectors[VISUAL]), visual_query))
        text = lexical = None
        if fused:
            text = float(np.dot(_unit(vectors[TITLE]), text_query))
            lexical = None if keyword_query is None else 0.0  # as the engine: None when keywords are off
            sparse = vectors.get(KEYWORDS)
            if keyword_query is not None and top > 0 and sparse is not None:
                wanted = set(keyword_query[0])
                lexical = float(sum(v for i, v in zip(sparse.indices, sparse.values) if i in wanted)) / top
        return StoreHit(str(point.payload["id"]), float(point.score), visual, text, lexical, point.payload)

    def visual_score_at(self, query: np.ndarray, rank: int, filters: Mapping | None = None,
                        exclude_ids: Iterable | None = None) -> float | None:
        """The visual cosine of the `rank`-th nearest allowed item (1-based), None when fewer items are allowed: every
        item below a visual prefetch of depth `rank - 1` scores at most this."""
        points = self.client.query_points(self.name, query=np.asarray(query, np.float32).tolist(), using=VISUAL,
                                          query_filter=self.query_filter(filters, exclude_ids), limit=1,
                                          offset=int(rank) - 1, search_params=self._search_params(),
                                          with_payload=False).points
        return float(points[0].score) if points else None

    def neighbours(self, query: np.ndarray, n: int, filters: Mapping | None = None,
                   exclude_ids: Iterable | None = None, fields: Sequence[str] | None = None
                   ) -> tuple[list, np.ndarray, np.ndarray]:
        """The `n` nearest allowed items of a visual query: (ids, or their payloads' `fields` when given; cosines;
        their unit vectors), for α-query expansion of image queries (`FashionSearchEngine._expand`)."""
        points = self.client.query_points(self.name, query=np.asarray(query, np.float32).tolist(), using=VISUAL,
                                          query_filter=self.query_filter(filters, exclude_ids), limit=int(n),
                                          search_params=self._search_params(),
                                          with_payload=list(fields) if fields else ["id"],
                                          with_vectors=[VISUAL]).points
        vectors = np.array([_unit(p.vector[VISUAL]) for p in points], dtype=np.float32).reshape(len(points), -1)
        found = [p.payload if fields else str(p.payload["id"]) for p in points]
        return found, np.array([p.score for p in points], np.float32), vectors

    def item_vectors(self, item_ids: Sequence, using: str = VISUAL) -> np.ndarray:
        """Stored unit vectors (`visual` or `title`) of catalog items, in the order given; `QueryError` for an id
        the collection does not hold."""
        ids = [point_id(i) for i in item_ids]
        found = {str(p.id): p for p in self.client.retrieve(self.name, ids=ids, with_vectors=[using])}
        missing = [str(i) for i, pid in zip(item_ids, ids) if pid not in found]
        if missing:
            raise QueryError(f"No item with id {missing[0]!r} in this catalog.")
        return np.array([_unit(found[pid].vector[using]) for pid in ids], dtype=np.float32)

    def count(self) -> int:
        return int(self.client.count(self.name, exact=True).count)

    def close(self) -> None:
        """Release the client (and local mode's lock on its folder)."""
        self.client.close()


def strongest_boosts(boosts: Sequence[FormulaTerm], count: int) -> list[FormulaTerm]:
    """The `count` payload-condition boosts of the largest positive weights (ties: the first given first)."""
    conditions = [t for t in boosts if t.weight > 0 and getattr(t.expression, "key", None) is not None]
    return sorted(conditions, key=lambda t: -t.weight)[:max(int(count), 0)]


def within(query_filter, condition):
    """`query_filter` (None: everything) narrowed to the points matching `condition`."""
    return models.Filter(must=[condition] if query_filter is None else [query_filter, condition])


def _unit(vector) -> np.ndarray:
    v = np.asarray(vector, dtype=np.float32)
    norm = float(np.linalg.norm(v))
    return v / norm if norm > 0 else v


def check_collection(info, metadata: Mapping, model_info: Mapping, text_dim: int | None, *, name: str,
                     location: str, check_indexes: bool = True) -> None:
    """Raise `QdrantStoreError` when a collection does not fit the model (fingerprint, dimensions) or lacks one of
    its payload indexes (`check_indexes`: servers report them; local mode keeps none)."""
    built_by = metadata.get("model", {})
    rebuild = ("rebuild it with `python -m modeling.retrieval.engine.build_index --vector-store qdrant ...` for the "
               "loaded model, or point --qdrant-collection at that model's collection")
    if model_info.get("fingerprint") and built_by.get("fingerprint") != model_info["fingerprint"]:
        raise QdrantStoreError(
            f"collection {name!r} at {location} was built by model {built_by.get('name')!r} (fingerprint "
            f"{built_by.get('fingerprint')}); the loaded model {model_info.get('name')!r} has fingerprint "
            f"{model_info['fingerprint']}: its embeddings are not comparable; {rebuild}")
    vectors = info.config.params.vectors or {}
    expected = {VISUAL: model_info.get("embedding_dim"), TITLE: text_dim}
    for vector, dim in expected.items():
        have = vectors[vector].size if vector in vectors else None
        if vector == VISUAL and have is None:
            raise QdrantStoreError(f"collection {name!r} at {location} has no {VISUAL!r} vector; {rebuild}")
        if dim is not None and have != dim:
            maker = "model" if vector == VISUAL else "text encoder"
            raise QdrantStoreError(f"collection {name!r} at {location} holds {vector!r} vectors of dimension {have}, "
                                   f"the loaded {maker} makes {dim}; {rebuild}")
    if check_indexes:
        schema = info.payload_schema or {}
        missing = [f for f in (*KEYWORD_FIELDS, "position", DESCRIPTION_FIELD) if f not in schema]
        if missing:
            raise QdrantStoreError(
                f"collection {name!r} at {location} lacks the payload index(es) {missing}: filtered queries would scan "
                f"every point. Create them with "
                f"`modeling.retrieval.backends.qdrant.ingest.create_payload_indexes(client, {name!r})` or rebuild the "
                "collection")


__all__ = ["COLLECTION_PREFIX", "COMPLETE_KEY", "METADATA_KEY", "FormulaTerm", "KeywordEncoder", "KeywordStatistics",
           "QdrantConfig", "QdrantStore", "QdrantStoreError", "StoreHit", "check_collection", "collection_name",
           "payload_boost", "point_id"]
