"""The Qdrant backend: a `RankRequest` rendered as prefetches + a formula query on the model's collection, hits
mapped back to the engine's positions by their `position` payload (and kept in the catalog's `ItemLookup`, which
reads what a result shows from them).

Each `ScoreTerm` becomes one payload-condition formula term (`payload_boost`); terms smaller than `MIN_BOOST` are
left out (an item has one value per attribute, so the score differs from the exact one by less than that).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from modeling.retrieval.backends.qdrant.lookup import ROW_FIELDS, ItemLookup
from modeling.retrieval.backends.qdrant.store import FormulaTerm, QdrantStore, payload_boost
from modeling.retrieval.common.ranking import LocalCatalog, RankRequest, Ranked, ScoreTerm, Scope

# Terms whose weight is below this add nothing measurable.
MIN_BOOST = 1e-6
# Extra hits a store ranks past the depth asked for, so that items tied at the last score (identical products) come
# back and are ordered as the in-process ranking orders them (the lower index position first).
TIE_MARGIN = 5
# Visual-only requests with terms (photos, "more like this") rank from a visual prefetch this many times deeper than
# the hits wanted (at least MIN_BOUNDED_PREFETCH), deepened while an item below it could still score into them.
BOUNDED_PREFETCH_FACTOR = 4
MIN_BOUNDED_PREFETCH = 1000
BOUND_SLACK = 1e-5  # float32 rounding of the scores compared


def render_terms(terms: Sequence[ScoreTerm]) -> list[FormulaTerm]:
    """The backend-neutral terms as payload boosts."""
    return [payload_boost(term.attribute, term.values, term.weight) for term in terms
            if term.values and abs(term.weight) >= MIN_BOOST]


def max_boost(boosts: Sequence[FormulaTerm]) -> float:
    """The most the `boosts` (payload conditions) can add to one item: per payload field, the largest sum of the
    positive weights of the terms one value matches (an item has one value per attribute). A term of another kind
    counts its full positive weight."""
    per_field: dict[str, dict[str, float]] = {}
    other = 0.0
    for term in boosts:
        condition, weight = term.expression, max(float(term.weight), 0.0)
        values = getattr(getattr(condition, "match", None), "any", None)
        if getattr(condition, "key", None) is None or values is None:
            other += weight
            continue
        field = per_field.setdefault(condition.key, {})
        for value in values:
            field[value] = field.get(value, 0.0) + weight
    return other + sum(max(field.values(), default=0.0) for field in per_field.values())


class QdrantBackend:
    """Rankings in a `QdrantStore`.

    Args:
        store: the open collection.
        lookup: the catalog's rows by position (`StoreCatalog.lookup`), fed with every hit's payload.
        local: the engine's catalog (`LocalCatalog`; unused: positions come with the hits).
    """

    collapse_growth = 2

    def __init__(self, store: QdrantStore, lookup: ItemLookup, local: LocalCatalog | None = None):
        self.store, self.lookup = store, lookup
        self.name = store.config.store_name  # "qdrant" or "qdrant-edge"

    @property
    def num_items(self) -> int:
        return self.store.num_items

    def positions(self, payloads: Iterable[dict]) -> np.ndarray:
        """The catalog positions of hits (their `position` payload), the hits kept in the lookup."""
        payloads = list(payloads)
        self.lookup.remember(payloads)
        return np.array([int(p["position"]) for p in payloads], dtype=np.int64)

    def rank(self, request: RankRequest) -> list[Ranked]:
        """The top `request.depth`, exact ties to the lower index position as the in-process ranking orders them:
        the store breaks them arbitrarily, so it ranks a little deeper (further while the tie runs past the end)
        and the hits are sorted again."""
        if request.scope.empty:
            return []
        boosts = render_terms(request.terms)
        fused, scope, depth = request.fused, request.scope, int(request.depth)
        deeper = depth + TIE_MARGIN
        while True:
            if fused or not boosts:
                found = self.store.rank(request.visual_query, request.text_query if fused else None,
                                        request.query_text if fused else None, request.weight if fused else 0.0,
                                        request.lexical_weight if fused else 0.0, k=deeper, filters=scope.filters,
                                        exclude_ids=scope.exclude_ids, boosts=boosts)
            else:
                found = self._bounded(request.visual_query, deeper, scope, boosts)
            if len(found) < deeper or len(found) <= depth or found[-1].score != found[depth - 1].score:
                break
            deeper *= 2
        positions = self.positions(h.payload for h in found)
        ranked = [Ranked(int(p), h.score, h.visual_score, h.text_score, h.lexical_score)
                  for p, h in zip(positions, found)]
        return sorted(ranked, key=lambda r: (-r.score, r.position))[:depth]

    def _bounded(self, visual_query: np.ndarray, k: int, scope: Scope, boosts: list) -> list:
        """The exact top `k` of `visual + boosts` from a visual prefetch shallower than the catalog.

        An item below the visual top `depth` scores at most the `(depth + 1)`-th visual cosine plus the largest
        boost an item can collect (`max_boost`); when the k-th hit scores more, no such item can be in the top k.
        Otherwise the prefetch deepens. A photo's consistency is one boost per colour and type value (a hundred or
        more terms), which local mode evaluates point by point in Python: scoring the whole catalog took 30-80 s.
        """
        bound = max_boost(boosts)
        depth = max(MIN_BOUNDED_PREFETCH, BOUNDED_PREFETCH_FACTOR * k)
        while True:
            found = self.store.rank(visual_query, k=k, filters=scope.filters, exclude_ids=scope.exclude_ids,
                                    boosts=boosts, depth=depth)
            if 0 < self.store.num_items <= depth:
                return found
            edge = self.store.visual_score_at(visual_query, depth + 1, scope.filters, scope.exclude_ids)
            if edge is None or (len(found) >= k and found[-1].score > edge + bound + BOUND_SLACK):
                return found
            depth *= BOUNDED_PREFETCH_FACTOR

    def nearest(self, query: np.ndarray, n: int, scope: Scope) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The `n` nearest allowed items of a visual query: (cosines, positions, unit vectors)."""
        if scope.empty or n < 1:
            return np.zeros(0, np.float32), np.zeros(0, np.int64), np.zeros((0, len(query)), np.float32)
        payloads, scores, vectors = self.store.neighbours(query, n, scope.filters, scope.exclude_ids,
                                                          fields=ROW_FIELDS)
        return scores, self.positions(payloads), vectors

    def vector(self, position: int) -> np.ndarray:
        """A catalog item's stored unit image vector."""
        return self.vectors([position])[0]

    def vectors(self, positions) -> np.ndarray:
        """The stored unit image vectors of the items at `positions` (one request)."""
        return self.store.item_vectors([row["id"] for row in self.lookup.rows_at(positions)])


def open_store(name: str, config, model_info, text_dim: int | None = None, client=None) -> QdrantStore:
    """The model's Qdrant collection that `config` locates (`QdrantStore.open` raises what is wrong with it), through
    `client` when given (engines sharing one local-mode folder); `name` "qdrant-edge" opens `config`'s folder as edge
    shards. The engine serves from it alone (`modeling.retrieval.engine.stored`)."""
    if config is None:
        raise ValueError(f"the {name} vector store needs a QdrantConfig: a server url or a local path")
    if (name == "qdrant-edge") != config.edge:
        raise ValueError(f"--vector-store {name} was given a QdrantConfig for {config.store_name}")
    return QdrantStore.open(config, model_info, text_dim=text_dim, client=client)


__all__ = ["MIN_BOOST", "QdrantBackend", "max_boost", "open_store", "render_terms"]
