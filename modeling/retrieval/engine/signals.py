"""The per-query extra scores the engine adds to its ranking: query intents, and "more like this" consistency.

- `IntentScorer`: a text (or composed) query's understood intents as soft boosts and its negations as penalties
  (`modeling.retrieval.understanding.parser`), over the catalog's attribute values.
- `ConsistencyScorer`: image and item queries ("more like this") favour items of the reference's colour and type.
  An uploaded photo's colour is estimated (the model's colour head and the catalog colours of its nearest items)
  and read at each item's catalog colour; its type probabilities (the type head) are read at each item's catalog
  type. For a catalog item the shop knows the item's colour and type, so items with the same catalog values gain
  the weight. Reading catalog values (not the items' own head predictions) is what lets a vector store add the
  same scores as payload boosts (`ScoreTerm`s, `modeling.retrieval.backends.qdrant.ranking`).

Weights were chosen on the validation split (docs/results.md has the trade-off curves).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping

import numpy as np

from modeling.retrieval.common.items import CatalogValues
from modeling.retrieval.common.ranking import AttributeTable, ScoreTerm
from modeling.retrieval.understanding.boosts import INTENT_WEIGHTS, NEGATION_WEIGHT, intent_terms
from modeling.retrieval.understanding.heads import IntentHeads
from modeling.retrieval.understanding.parser import INTENT_ATTRIBUTES, Intent, QueryIntent, QueryParser

# "More like this" of an uploaded photo (`ConsistencyScorer`). Val split (gallery val+test, runs/dual-encoder),
# type / type+colour P@10: off 0.778 / 0.314; colour head agreement 0.5 (both sides the head) 0.762 / 0.385, + type
# 0.3 0.777 / 0.385; the photo's colour distribution (head + neighbours' catalog colours) at each item's catalog
# colour, 0.3 / 0.5 / 0.7 with type 0.3: 0.783 / 0.422, 0.779 / 0.430, 0.776 / 0.436. The neighbour count (5, 10,
# 20) and temperature (0.02, 0.05) changed the third decimal. The type term read at each item's catalog type instead
# of the head-head agreement, at 0.5 / 0.3: 0.800 / 0.453 against 0.765 / 0.437 (the same 400 val photos).
# With the type distribution from the photo's nearest items (EngineSettings.photo_type_vote) the type term rose to 0.6
# on dev photos (val products, the benchmark's dev backgrounds; docs/results.md, "Shoppers' photos").
IMAGE_CONSISTENCY_WEIGHTS = {"baseColour": 0.5, "articleType": 0.6}
NEIGHBOURS = 10
NEIGHBOUR_TEMPERATURE = 0.05
# "More like this" of a catalog item: boost of the items sharing its catalog value per attribute. Val: off 0.777 /
# 0.297; 0.05 each 0.849 / 0.519; 0.1 each 0.876 / 0.571; colour 0.2 + type 0.1 0.847 / 0.608; 0.3 + 0.1 0.820 /
# 0.612. 0.1 each: the best type precision, most of the colour gain.
ITEM_CONSISTENCY_WEIGHTS = {"baseColour": 0.1, "articleType": 0.1}


def attribute_table(items, attributes) -> AttributeTable:
    """The `AttributeTable` of an item table, or the `table` of the `CatalogValues` of a catalog that holds none."""
    return items.table(attributes) if isinstance(items, CatalogValues) else AttributeTable(items, attributes)


class IntentScorer:
    """Parses queries (`QueryParser` over the catalog, with the learned heads when given) and scores intents.
    `items`: the item table, or the `CatalogValues` of a catalog that holds none (then `vocabulary` is needed)."""

    def __init__(self, items, heads: IntentHeads | None = None, weights: Mapping[str, float] | None = None,
                 negation_weight: float = NEGATION_WEIGHT, vocabulary: Mapping | None = None):
        self.items, self.vocabulary = items, vocabulary  # the parser's vocabulary when given, else read of items
        self.heads = heads
        self.weights = dict(INTENT_WEIGHTS if weights is None else weights)
        self.negation_weight = float(negation_weight)
        self._parser: QueryParser | None = None
        self._codes: AttributeTable | None = None
        self._lock = threading.Lock()

    @property
    def parser(self) -> QueryParser:
        with self._lock:
            if self._parser is None:
                self._parser = (QueryParser.from_items(self.items, heads=self.heads) if self.vocabulary is None
                                else QueryParser.from_catalog_words(self.vocabulary, heads=self.heads))
            return self._parser

    @property
    def codes(self) -> AttributeTable:
        with self._lock:
            if self._codes is None:
                self._codes = attribute_table(self.items, INTENT_ATTRIBUTES)
            return self._codes

    def terms(self, intent: QueryIntent | None, weights: Mapping[str, float] | None = None) -> list[ScoreTerm]:
        """The intent's boosts and penalties as backend-neutral terms (`intent_terms`)."""
        if not intent:
            return []
        return intent_terms(intent, self.weights if weights is None else weights, self.negation_weight)

    def scores(self, intent: QueryIntent | None, positions: np.ndarray,
               weights: Mapping[str, float] | None = None) -> np.ndarray | None:
        if not intent:
            return None
        return self.codes.evaluate(self.terms(intent, weights), positions)

    @staticmethod
    def reference(values: Mapping[str, str], confidence: float = 1.0, source: str = "reference",
                  attributes=None) -> tuple[Intent, ...]:
        """Intents naming a reference product's own values (composed search, "more like this")."""
        keep = values if attributes is None else {a: values[a] for a in attributes if a in values}
        return tuple(Intent(a, (str(v),), confidence, "the reference", source) for a, v in keep.items()
                     if str(v or "").strip())


class ConsistencyScorer:
    """"More like this" of a photo: how likely each item shares the photo's colour and type.

    Colour: the photo's colour distribution — half the model's colour head, half the catalog colours of its
    `NEIGHBOURS` nearest allowed items weighted by `softmax(cosine / NEIGHBOUR_TEMPERATURE)` — read at each item's
    catalog colour. Type: the type head's probability of each item's catalog type (before, the dot product of the
    photo's and the item's head distributions: val type / type+colour P@10 0.765 / 0.437, now 0.800 / 0.453 on
    the same 400 photos).
    """

    def __init__(self, model, vectors_fn, items=None, weights: Mapping[str, float] = IMAGE_CONSISTENCY_WEIGHTS):
        self.model = model
        self.vectors_fn = vectors_fn
        self.items = items
        self.weights = dict(weights)
        self._probs: dict[str, np.ndarray] | None = None
        self._catalog: dict[str, np.ndarray] = {}  # attribute -> each item's catalog value as a head label index
        self._table: AttributeTable | None = None
        self._lock = threading.Lock()

    @property
    def labels(self) -> dict:
        return getattr(self.model.config, "attribute_labels", None) or {}

    @property
    def available(self) -> bool:
        return hasattr(self.model, "predict_attributes") and any(a in self.labels for a in self.weights)

    def probabilities(self, vectors: np.ndarray) -> dict[str, np.ndarray]:
        import torch

        with torch.inference_mode():
            probs = self.model.predict_attributes(torch.from_numpy(np.array(vectors, np.float32)))
        return {a: p.float().numpy() for a, p in probs.items() if a in self.weights}

    def item_probabilities(self) -> dict[str, np.ndarray]:
        with self._lock:
            if self._probs is None:
                self._probs = self.probabilities(self.vectors_fn())
            return self._probs

    def catalog_labels(self, attribute: str) -> np.ndarray | None:
        """Each item's catalog value of `attribute` as an index into the head's labels (-1: not a label)."""
        if self.items is None or attribute not in self.items or attribute not in self.labels:
            return None
        with self._lock:
            if attribute not in self._catalog:
                if isinstance(self.items, CatalogValues):
                    self._catalog[attribute] = self.items.labels(attribute, self.labels[attribute])
                else:
                    lookup = {v: i for i, v in enumerate(self.labels[attribute])}
                    self._catalog[attribute] = np.array([lookup.get(v, -1)
                                                         for v in self.items[attribute].astype(str)])
            return self._catalog[attribute]

    def vote(self, attribute: str, size: int, neighbours: np.ndarray | None,
             similarities: np.ndarray | None) -> np.ndarray | None:
        """The neighbours' catalog values of `attribute` as a distribution over the head's labels, weighted by
        `softmax(cosine / NEIGHBOUR_TEMPERATURE)` (None without neighbours or the catalog column)."""
        catalog = self.catalog_labels(attribute)
        if neighbours is None or catalog is None or len(neighbours) == 0:
            return None
        weights = np.exp((similarities - similarities.max()) / NEIGHBOUR_TEMPERATURE)
        vote = np.zeros(size, np.float32)
        for label, weight in zip(catalog[neighbours], weights / weights.sum()):
            if label >= 0:
                vote[label] += weight
        return vote

    def colour_distribution(self, head: np.ndarray, neighbours: np.ndarray | None,
                            similarities: np.ndarray | None) -> np.ndarray:
        """Half the head's distribution, half the neighbours' catalog colours (the head alone without them)."""
        vote = self.vote("baseColour", len(head), neighbours, similarities)
        return head if vote is None else 0.5 * head + 0.5 * vote

    def type_distribution(self, head: np.ndarray, neighbours: np.ndarray | None, similarities: np.ndarray | None,
                          share: float) -> np.ndarray:
        """`(1 - share)` of the type head's distribution and `share` of the neighbours' catalog types."""
        vote = self.vote("articleType", len(head), neighbours, similarities) if share > 0 else None
        return head if vote is None else (1.0 - share) * head + share * vote

    def distributions(self, photo: np.ndarray, weights: Mapping[str, float] | None = None,
                      neighbours: np.ndarray | None = None, similarities: np.ndarray | None = None,
                      type_vote: float = 0.0) -> dict[str, tuple[float, np.ndarray]]:
        """Per weighted attribute, (weight, the photo's probability of each head label): the type head's
        distribution (with `type_vote` of the neighbours' types mixed in), the colour distribution mixed with the
        neighbours' vote. {} when the model has no heads or every weight is 0. A store reads the same numbers at
        each item's catalog value (`PhotoConsistencyTerms`)."""
        weights = self.weights if weights is None else weights
        if not self.available or not any(weights.values()):
            return {}
        query = self.probabilities(np.asarray(photo, np.float32)[None])
        mixed = {"baseColour": lambda p: self.colour_distribution(p, neighbours, similarities),
                 "articleType": lambda p: self.type_distribution(p, neighbours, similarities, type_vote)}
        return {attribute: (float(weights[attribute]), mixed.get(attribute, lambda p: p)(p[0]))
                for attribute, p in query.items() if weights.get(attribute)}

    def terms(self, parts: Mapping[str, tuple[float, np.ndarray]]) -> list[ScoreTerm]:
        """The `distributions` read at each item's catalog value, as backend-neutral terms: per attribute with a
        catalog column, `weight * p(label)` for the items whose value is that label (float32, as numpy scores
        them)."""
        terms = []
        for attribute, (weight, distribution) in parts.items():
            if self.catalog_labels(attribute) is None:
                continue
            for label, product in zip(self.labels[attribute], (np.float32(weight) * distribution).tolist()):
                terms.append(ScoreTerm(attribute, (str(label),), float(product)))
        return terms

    def local_scores(self, parts: Mapping[str, tuple[float, np.ndarray]], positions: np.ndarray) -> np.ndarray | None:
        """A catalog without an attribute's column: agreement with the items' own head distributions (in process
        only; a store has no value to boost)."""
        total = None
        for attribute, (weight, distribution) in parts.items():
            if self.catalog_labels(attribute) is None:
                part = weight * (self.item_probabilities()[attribute][positions] @ distribution)
                total = part if total is None else total + part
        return total

    def request_terms(self, photo: np.ndarray, weights: Mapping[str, float] | None = None,
                      neighbours: np.ndarray | None = None, similarities: np.ndarray | None = None,
                      type_vote: float = 0.0) -> dict:
        """The ranking request's fields of a photo's consistency: `terms` (catalog columns) and `local_scores` (the
        head agreement where the catalog lacks the column; None when it has them all)."""
        parts = self.distributions(photo, weights, neighbours, similarities, type_vote)
        local = any(self.catalog_labels(a) is None for a in parts)
        return {"terms": tuple(self.terms(parts)),
                "local_scores": (lambda positions: self.local_scores(parts, positions)) if local else None}

    def table(self) -> AttributeTable:
        with self._lock:
            if self._table is None:
                self._table = attribute_table(self.items, list(self.labels))
            return self._table

    def scores(self, photo: np.ndarray, positions: np.ndarray, weights: Mapping[str, float] | None = None,
               neighbours: np.ndarray | None = None, similarities: np.ndarray | None = None) -> np.ndarray | None:
        """Consistency of the items at `positions` with `photo` (its embedding); `neighbours` / `similarities`: its
        nearest allowed items and their cosines. None when the model has no heads or every weight is 0."""
        parts = self.distributions(photo, weights, neighbours, similarities)
        if not parts:
            return None
        total = np.zeros(len(positions), dtype=np.float32)
        catalog = self.table().evaluate(self.terms(parts), positions) if self.items is not None else None
        local = self.local_scores(parts, positions)
        for part in (catalog, local):
            if part is not None:
                total = total + part
        return total


__all__ = ["ConsistencyScorer", "IMAGE_CONSISTENCY_WEIGHTS", "ITEM_CONSISTENCY_WEIGHTS", "IntentScorer", "NEIGHBOURS"]
