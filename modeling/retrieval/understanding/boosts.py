"""What an understood query adds to an item's score: the boost of each attribute, the penalty of a negated value,
the Unisex half credit, as backend-neutral `ScoreTerm`s (`intent_terms`) that each vector backend evaluates or
renders."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from modeling.retrieval.common.ranking import ScoreTerm
from modeling.retrieval.understanding.parser import QueryIntent

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


def intent_terms(intent: QueryIntent, weights: Mapping[str, float] | None = None,
                 negation_weight: float = NEGATION_WEIGHT) -> list[ScoreTerm]:
    """A query's boosts and penalties as backend-neutral terms, declared here once: each intent adds
    `weight[attribute] * confidence` to the items whose catalog value is one of its values (and, for a Men or
    Women intent, `UNISEX_CREDIT` of it to Unisex items); each negation subtracts `negation_weight * confidence`
    from the items with a negated value; each implied narrowing of a broad type (`QueryIntent.implied`) adds its
    attribute's weight times its confidence once more to the types it picks. Weights are rounded to float32, as
    the score tables hold them."""
    weights = INTENT_WEIGHTS if weights is None else weights
    terms = []
    # an implied narrowing of a broad type ("shoes to go with a suit": the Formal Shoes) boosts its types once more
    for sign, group in ((1.0, intent.intents), (-1.0, intent.negations), (1.0, intent.implied)):
        for item in group:
            w = (weights.get(item.attribute, 0.0) if sign > 0 else negation_weight) * item.confidence * sign
            if w == 0:
                continue
            terms.append(ScoreTerm(item.attribute, tuple(dict.fromkeys(item.values)), float(np.float32(w))))
            if sign > 0 and item.attribute == "gender" and {"Men", "Women"} & set(item.values) \
                    and "Unisex" not in item.values:
                terms.append(ScoreTerm("gender", ("Unisex",), float(np.float32(w * UNISEX_CREDIT))))
    return terms


__all__ = ["INTENT_WEIGHTS", "NEGATION_WEIGHT", "UNISEX_CREDIT", "intent_terms"]
