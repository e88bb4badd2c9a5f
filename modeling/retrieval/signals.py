"""The per-query extra scores the engine adds to its ranking: query intents, and "more like this" consistency.

- `IntentScorer`: a text (or composed) query's understood intents as soft boosts and its negations as penalties
  (`modeling.retrieval.intent`), over the catalog's attribute values.
- `ConsistencyScorer`: image and item queries ("more like this") favour items of the reference's colour and type.
  For an uploaded photo the model's attribute heads give both sides' probabilities and the term is their dot
  product (the chance the two share the value); for a catalog item the shop knows the item's colour and type, so
  items with the same catalog values gain the weight.

Weights were chosen on the validation split (docs/results.md has the trade-off curves).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping

import numpy as np

from modeling.retrieval.intent import (INTENT_WEIGHTS, NEGATION_WEIGHT, AttributeCodes, Intent, IntentHeads,
                                       QueryIntent, QueryParser)

# "More like this" of an uploaded photo: weight of the attribute heads' agreement per attribute. Val split (gallery
# val+test, runs/dual-encoder), type / type+colour P@10 of the top 10: off 0.778 / 0.314; colour 0.3 0.770 / 0.378;
# colour 0.5 0.762 / 0.385; colour 0.5 + type 0.3 0.777 / 0.385 (the type term wins back what colour costs).
IMAGE_CONSISTENCY_WEIGHTS = {"baseColour": 0.5, "articleType": 0.3}
# "More like this" of a catalog item: boost of the items sharing its catalog value per attribute. Val: off 0.777 /
# 0.297; 0.05 each 0.849 / 0.519; 0.1 each 0.876 / 0.571; colour 0.2 + type 0.1 0.847 / 0.608; 0.3 + 0.1 0.820 /
# 0.612. 0.1 each: the best type precision, most of the colour gain.
ITEM_CONSISTENCY_WEIGHTS = {"baseColour": 0.1, "articleType": 0.1}


class IntentScorer:
    """Parses queries (`QueryParser` over the catalog, with the learned heads when given) and scores intents."""

    def __init__(self, items, heads: IntentHeads | None = None, weights: Mapping[str, float] | None = None,
                 negation_weight: float = NEGATION_WEIGHT):
        self.items = items
        self.heads = heads
        self.weights = dict(INTENT_WEIGHTS if weights is None else weights)
        self.negation_weight = float(negation_weight)
        self._parser: QueryParser | None = None
        self._codes: AttributeCodes | None = None
        self._lock = threading.Lock()

    @property
    def parser(self) -> QueryParser:
        with self._lock:
            if self._parser is None:
                self._parser = QueryParser.from_items(self.items, heads=self.heads)
            return self._parser

    @property
    def codes(self) -> AttributeCodes:
        with self._lock:
            if self._codes is None:
                self._codes = AttributeCodes(self.items)
            return self._codes

    def scores(self, intent: QueryIntent | None, positions: np.ndarray,
               weights: Mapping[str, float] | None = None) -> np.ndarray | None:
        if not intent:
            return None
        return self.codes.intent_scores(intent, positions, self.weights if weights is None else weights,
                                        self.negation_weight)

    @staticmethod
    def reference(values: Mapping[str, str], confidence: float = 1.0, source: str = "reference",
                  attributes=None) -> tuple[Intent, ...]:
        """Intents naming a reference product's own values (composed search, "more like this")."""
        keep = values if attributes is None else {a: values[a] for a in attributes if a in values}
        return tuple(Intent(a, (str(v),), confidence, "the reference", source) for a, v in keep.items()
                     if str(v or "").strip())


class ConsistencyScorer:
    """Attribute-head agreement between a photo and every item, from their image embeddings."""

    def __init__(self, model, vectors_fn, weights: Mapping[str, float] = IMAGE_CONSISTENCY_WEIGHTS):
        self.model = model
        self.vectors_fn = vectors_fn
        self.weights = dict(weights)
        self._probs: dict[str, np.ndarray] | None = None
        self._lock = threading.Lock()

    @property
    def available(self) -> bool:
        labels = getattr(self.model.config, "attribute_labels", None) or {}
        return hasattr(self.model, "predict_attributes") and any(a in labels for a in self.weights)

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

    def scores(self, photo: np.ndarray, positions: np.ndarray,
               weights: Mapping[str, float] | None = None) -> np.ndarray | None:
        weights = self.weights if weights is None else weights
        if not self.available or not any(weights.values()):
            return None
        query = self.probabilities(np.asarray(photo, np.float32)[None])
        items = self.item_probabilities()
        total = np.zeros(len(positions), dtype=np.float32)
        for attribute, p in query.items():
            if weights.get(attribute):
                total += weights[attribute] * (items[attribute][positions] @ p[0])
        return total


__all__ = ["ConsistencyScorer", "IMAGE_CONSISTENCY_WEIGHTS", "ITEM_CONSISTENCY_WEIGHTS", "IntentScorer"]
