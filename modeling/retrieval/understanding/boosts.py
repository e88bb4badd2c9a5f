"""What an understood query adds to an item's score: the boost of each attribute, the penalty of a negated value,
the Unisex half credit, and `AttributeCodes` (each item's attribute values as integer codes, so a query's boosts
are one table lookup per attribute)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from modeling.retrieval.understanding.parser import INTENT_ATTRIBUTES, QueryIntent

# Soft boosts per attribute (added to the fused score, times the intent's confidence) and the penalty of a negated
# value; chosen on the dev sets (queries/shopper_dev.jsonl + queries/dev.jsonl, collapsing off). Scaling the boosts
# by 0.5 / 1 / 1.5 / 2 gave shopper-dev P@10 0.871 / 0.917 / 0.941 / 0.955 and catalog-word dev 0.764 / 0.767 /
# 0.768 / 0.769: 1.5 keeps most of the gain while an item that matches the words and the photo far better than a
# same-type item can still outrank it (at 2 the type boost, 0.5, is a filter in all but name). The negation
# penalty made no difference between 0.2 and 0.8 (negation P@10 1.0 throughout).
INTENT_WEIGHTS = {"articleType": 0.375, "gender": 0.225, "baseColour": 0.18, "usage": 0.09, "season": 0.06}
NEGATION_WEIGHT = 0.4
# An item filed as Unisex half-meets a Men or Women intent.
UNISEX_CREDIT = 0.5


class AttributeCodes:
    """Each item's attribute values as integer codes, for vectorised boosts: `scores(intent)` is one table lookup
    per attribute."""

    def __init__(self, items, attributes: Sequence[str] = INTENT_ATTRIBUTES):
        self.codes, self.vocab = {}, {}
        for attribute in attributes:
            if attribute in items:
                codes, uniques = np.unique(items[attribute].astype(str).to_numpy(), return_inverse=True)[::-1]
                self.codes[attribute] = codes.astype(np.int32)
                self.vocab[attribute] = {v: i for i, v in enumerate(uniques.tolist())}

    def table(self, attribute: str, values: Iterable[str], weight: float) -> np.ndarray:
        vocab = self.vocab[attribute]
        table = np.zeros(len(vocab), dtype=np.float32)
        for value in values:
            if value in vocab:
                table[vocab[value]] = weight
        return table

    def intent_scores(self, intent: QueryIntent, positions: np.ndarray | None = None,
                      weights: Mapping[str, float] | None = None, negation_weight: float = NEGATION_WEIGHT
                      ) -> np.ndarray | None:
        """Sum of boosts (matching intents) and penalties (negated values) for the items at `positions` (default
        all); None when the intent adds nothing."""
        weights = INTENT_WEIGHTS if weights is None else weights
        total = None
        for sign, group in ((1.0, intent.intents), (-1.0, intent.negations)):
            for item in group:
                if item.attribute not in self.codes:
                    continue
                w = (weights.get(item.attribute, 0.0) if sign > 0 else negation_weight) * item.confidence * sign
                if w == 0:
                    continue
                table = self.table(item.attribute, item.values, w)
                if sign > 0 and item.attribute == "gender" and "Unisex" in self.vocab["gender"] \
                        and {"Men", "Women"} & set(item.values) and "Unisex" not in item.values:
                    table[self.vocab["gender"]["Unisex"]] = w * UNISEX_CREDIT
                codes = self.codes[item.attribute]
                part = table[codes if positions is None else codes[positions]]
                total = part if total is None else total + part
        return total


__all__ = ["AttributeCodes", "INTENT_WEIGHTS", "NEGATION_WEIGHT", "UNISEX_CREDIT"]
