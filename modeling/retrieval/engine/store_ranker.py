"""Ranking through a Qdrant collection: the store-backed counterpart of `Ranker.rank`, so one engine API serves both
vector stores with the same results.

`FashionSearchEngine` describes each query once; the backend it was loaded with ranks it:

- `Scope`: which items may come back, both as the local boolean mask (`Ranker`) and as the filters and excluded ids
  a store turns into a server-side filter;
- the additive per-item scores (`ExtraTerms`) in both forms: a function of index positions (`Ranker` adds it to the
  fused scores in numpy) and a list of `payload_boost` formula terms (the store adds them server-side). Both are
  built from the same weights, so the two backends score every item alike:
  `IntentTerms` (query-intent boosts, negation penalties, the Unisex half credit, "more like this" of a catalog item)
  and `PhotoConsistencyTerms` ("more like this" of a photo: the photo's colour distribution and type probabilities
  read at each item's catalog colour and type — one boost per value).
- `StoreRanker`: ranks in the store and maps its hits back to local index positions; near-duplicates collapse in
  Python with the engine's own groups, so results list the same duplicates as the in-process path.

Why the engine keeps its local item table with a store: positions, VSC, the query parser's vocabulary, the colour
vote of a photo's neighbours and the near-duplicate groups are all computed from it (docs/qdrant.md, "Limits").
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, NamedTuple, Protocol

import numpy as np

from modeling.retrieval.engine.dedup import COLLAPSE_OVERFETCH, collapse
from modeling.retrieval.understanding.boosts import UNISEX_CREDIT
from modeling.retrieval.understanding.parser import QueryIntent
from modeling.retrieval.engine.index_ranker import Ranked, Ranker
from modeling.retrieval.engine.signals import ConsistencyScorer, IntentScorer

if TYPE_CHECKING:  # qdrant-client is an optional extra, imported only when a store is used
    from modeling.retrieval.backends.qdrant.store import FormulaTerm, QdrantStore

# A photo's colour and type probabilities become one payload boost per catalog value; values whose boost is below
# this add nothing measurable (an item has one value, so the score differs from the exact one by less than this).
MIN_BOOST = 1e-6
# Extra hits a store ranks past the k asked for, so that items tied at the k-th score (identical products) come back
# and are ordered as the in-process ranking orders them (the lower index position first).
TIE_MARGIN = 5
# Visual-only queries with boosts (photos, "more like this") rank from a visual prefetch this many times deeper than
# the hits wanted (at least MIN_BOUNDED_PREFETCH), deepened while an item below it could still score into them.
BOUNDED_PREFETCH_FACTOR = 4
MIN_BOUNDED_PREFETCH = 1000
BOUND_SLACK = 1e-5  # float32 rounding of the scores compared


class Scope(NamedTuple):
    """The items a query may return: `mask` over index positions (None: every item) and the `filters` and
    `exclude_ids` it was made from (what a store filters by)."""

    mask: np.ndarray | None
    filters: Mapping | None = None
    exclude_ids: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        return self.mask is not None and not self.mask.any()


class ExtraTerms(Protocol):
    """Additive per-item scores in the two forms the backends need."""

    def __call__(self, positions: np.ndarray) -> np.ndarray | None: ...

    def boosts(self) -> list[FormulaTerm]: ...


class IntentTerms:
    """A query's intents as boosts and its negations as penalties (`AttributeCodes.intent_scores`).

    Each intent adds `weight[attribute] * confidence` to the items whose catalog value is one of its values (and,
    for a Men or Women intent, `UNISEX_CREDIT` of it to Unisex items); each negation subtracts
    `negation_weight * confidence` from the items with a negated value.
    """

    def __init__(self, scorer: IntentScorer, intent: QueryIntent, weights: Mapping[str, float] | None = None):
        self.scorer, self.intent = scorer, intent
        self.weights = scorer.weights if weights is None else dict(weights)

    def __call__(self, positions: np.ndarray) -> np.ndarray | None:
        return self.scorer.scores(self.intent, positions, self.weights)

    def boosts(self) -> list[FormulaTerm]:
        from modeling.retrieval.backends.qdrant.store import payload_boost

        codes = self.scorer.codes
        terms = []
        for sign, group in ((1.0, self.intent.intents), (-1.0, self.intent.negations)):
            for item in group:
                if item.attribute not in codes.codes:
                    continue
                vocab = codes.vocab[item.attribute]
                weight = (self.weights.get(item.attribute, 0.0) if sign > 0 else self.scorer.negation_weight)
                # float32, as the local tables hold it
                weight = float(np.float32(weight * item.confidence * sign))
                if weight == 0:
                    continue
                values = [v for v in dict.fromkeys(item.values) if v in vocab]
                if values:
                    terms.append(payload_boost(item.attribute, values, weight))
                if sign > 0 and item.attribute == "gender" and "Unisex" in vocab \
                        and {"Men", "Women"} & set(item.values) and "Unisex" not in item.values:
                    terms.append(payload_boost("gender", ["Unisex"], float(np.float32(weight * UNISEX_CREDIT))))
        return terms


class PhotoConsistencyTerms:
    """"More like this" of a photo (`ConsistencyScorer.scores`): per attribute, `weight * p(item's catalog value)`,
    `p` the photo's colour distribution (head and neighbours' vote) or type probabilities."""

    def __init__(self, scorer: ConsistencyScorer, photo: np.ndarray, weights: Mapping[str, float] | None,
                 neighbours: np.ndarray | None, similarities: np.ndarray | None):
        self.scorer, self.photo, self.weights = scorer, photo, weights
        self.neighbours, self.similarities = neighbours, similarities

    def __call__(self, positions: np.ndarray) -> np.ndarray | None:
        return self.scorer.scores(self.photo, positions, self.weights, self.neighbours, self.similarities)

    def boosts(self) -> list[FormulaTerm]:
        from modeling.retrieval.backends.qdrant.store import payload_boost

        distributions = self.scorer.distributions(self.photo, self.weights, self.neighbours, self.similarities)
        terms = []
        for attribute, (weight, distribution) in distributions.items():
            if self.scorer.catalog_labels(attribute) is None:  # a catalog without the column stores no value to
                continue  # boost (in process the term falls back to the items' own head outputs)
            for label, p in zip(self.scorer.labels[attribute], distribution.tolist()):
                boost = float(np.float32(weight * p))
                if abs(boost) >= MIN_BOOST:
                    terms.append(payload_boost(attribute, [label], boost))
        return terms


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


class StoreRanker:
    """`Ranker.rank` over a `QdrantStore`: the store ranks, hits map back to the engine's index positions.

    Args:
        store: the open collection.
        ranker: the engine's local `Ranker`, for the near-duplicate groups.
        ids: the local items' ids in index order (the collection must hold the same items).
    """

    def __init__(self, store: QdrantStore, ranker: Ranker, ids: Sequence[str]):
        self.store, self.ranker = store, ranker
        self._position = {item_id: i for i, item_id in enumerate(ids)}
        self._members: dict[int, list[int]] | None = None

    def positions(self, item_ids: Iterable[str]) -> np.ndarray:
        try:
            return np.array([self._position[str(i)] for i in item_ids], dtype=np.int64)
        except KeyError as error:
            from modeling.retrieval.backends.qdrant.store import QdrantStoreError

            raise QdrantStoreError(
                f"collection {self.store.name!r} holds item {error.args[0]!r}, which the local index lacks: build "
                "the collection and the index from the same catalog") from None

    def rank(self, visual_query: np.ndarray, k: int, scope: Scope, text_query: np.ndarray | None = None,
             weight: float = 0.0, query_text: str | None = None, lexical_weight: float = 0.0,
             extra: ExtraTerms | None = None, collapse_duplicates: bool = False) -> list[Ranked]:
        """Top `k` as `Ranker.rank` computes them, with the same arguments in the store's terms: `query_text` and
        `lexical_weight` instead of per-item keyword scores, `extra.boosts()` instead of `extra(positions)`."""
        if scope.empty:
            return []
        boosts = extra.boosts() if extra is not None else []
        fused = text_query is not None and weight > 0

        def hits(depth: int) -> list[Ranked]:
            """The top `depth`, exact ties to the lower index position as `Ranker` orders them: the store breaks
            them arbitrarily, so it ranks a little deeper (further while the tie runs past the end) and the hits
            are sorted again."""
            deeper = depth + TIE_MARGIN
            while True:
                if fused or not boosts:
                    found = self.store.rank(visual_query, text_query if fused else None,
                                            query_text if fused else None, weight if fused else 0.0,
                                            lexical_weight if fused else 0.0, k=deeper, filters=scope.filters,
                                            exclude_ids=scope.exclude_ids, boosts=boosts)
                else:
                    found = self._bounded(visual_query, deeper, scope, boosts)
                if len(found) < deeper or len(found) <= depth or found[-1].score != found[depth - 1].score:
                    break
                deeper *= 2
            positions = self.positions(h.id for h in found)
            ranked = [Ranked(int(p), h.score, h.visual_score, h.text_score, h.lexical_score)
                      for p, h in zip(positions, found)]
            return sorted(ranked, key=lambda r: (-r.score, r.position))[:depth]

        if not collapse_duplicates:
            return hits(int(k))
        return self._collapsed(hits, int(k), scope.mask)

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

    def _collapsed(self, hits, k: int, mask: np.ndarray | None) -> list[Ranked]:
        """Rank `k * COLLAPSE_OVERFETCH` deep (at least 50, as `Ranker`), doubling while fewer than `k` groups come
        back, then keep the best item of each group and list the rest of its group that `mask` allows."""
        groups = self.ranker.duplicate_groups()
        allowed = len(groups) if mask is None else int(mask.sum())
        depth = min(allowed, max(k * COLLAPSE_OVERFETCH, 50))
        while True:
            ranked = hits(depth)
            kept, _, short = collapse(np.array([r.position for r in ranked], dtype=np.int64), groups, k)
            if not short or depth >= allowed or len(ranked) < depth:
                break
            depth = min(allowed, depth * 2)
        by_position = {r.position: r for r in ranked}
        members = self._group_members(groups)
        out = []
        for position in kept:
            row = by_position[position]
            row.duplicates = [m for m in members.get(int(groups[position]), []) if m != position
                              and (mask is None or mask[m])]
            out.append(row)
        return out

    def _group_members(self, groups: np.ndarray) -> dict[int, list[int]]:
        """Positions of every group with near-duplicates, in catalog order (as `Ranker` lists them)."""
        if self._members is None:
            members: dict[int, list[int]] = {}
            for position, group in enumerate(groups.tolist()):
                members.setdefault(group, []).append(position)
            self._members = {g: m for g, m in members.items() if len(m) > 1}
        return self._members

    def nearest(self, query: np.ndarray, n: int, scope: Scope) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The `n` nearest allowed items of a visual query: (cosines, positions, unit vectors)."""
        if scope.empty or n < 1:
            return np.zeros(0, np.float32), np.zeros(0, np.int64), np.zeros((0, len(query)), np.float32)
        ids, scores, vectors = self.store.neighbours(query, n, scope.filters, scope.exclude_ids)
        return scores, self.positions(ids), vectors

    def vector(self, item_id: str) -> np.ndarray:
        """A catalog item's stored unit image vector."""
        return self.store.item_vectors([item_id])[0]


__all__ = ["MIN_BOOST", "ExtraTerms", "IntentTerms", "PhotoConsistencyTerms", "Scope", "StoreRanker", "max_boost"]
