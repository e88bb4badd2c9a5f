"""Composed search's query: what the modification asks against what the reference keeps, and the composed
embedding (weighted sum or the model's learned combiner)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

import numpy as np
import torch
import torch.nn.functional as F

from modeling.retrieval.common.types import COMPOSED_CONTEXT, QueryError
from modeling.retrieval.engine.settings import KEPT_COLOUR_CONFIDENCE
from modeling.retrieval.engine.signals import IntentScorer
from modeling.retrieval.understanding.parser import QueryIntent


def reference_of(engine, image=None, item_id: str | None = None) -> tuple[int | None, np.ndarray, dict]:
    """A composed query's reference: (its position or None, its image vector, what is known of it: the catalog's
    values for an `item_id`, the attribute heads' confident predictions for an uploaded `image`)."""
    if item_id is not None:
        position = engine.position(item_id)
        return position, engine.backend.vector(position), engine.catalog.item_row(position)
    if image is not None:
        image_embeds = engine.encode_images([image])[0]
        return None, image_embeds, {**engine.predict_attributes(image_embeds), **engine.photo_attributes(image,
                                                                                                       image_embeds)}
    raise QueryError("Give a reference photo (or a catalog item) to modify.")


def keep_reference(asked: QueryIntent, reference: Mapping, sure: float) -> tuple[QueryIntent, dict]:
    """The modification's own words win over the reference's values ("same but for men"), unless they only say it
    more broadly ("same shoe in grey"); what they do not change stays: type and gender at confidence `sure`, and
    (less surely: "is darker" names no colour) the reference's colour. Returns the intent with the kept values and
    the reference without the values the words changed."""
    asked = asked.narrowed_to(reference)
    reference = {a: v for a, v in reference.items() if asked.get(a) is None}
    kept = IntentScorer.reference(reference, sure, attributes=COMPOSED_CONTEXT) + IntentScorer.reference(
        reference, sure * KEPT_COLOUR_CONFIDENCE, attributes=["baseColour"])
    # replace, not a fresh QueryIntent: the words' corrections, context hints and switched-off chips stay
    return replace(asked, intents=asked.intents + kept), reference


def compose(model, image_embeds: np.ndarray, text_embeds: np.ndarray, method: str | None,
            text_weight: float | None) -> np.ndarray:
    """The unit composed query vector; `QueryError` for a text weight outside [0, 1], an unknown method or a
    combiner the model does not have."""
    if text_weight is not None and not 0.0 <= float(text_weight) <= 1.0:
        raise QueryError(f"The text weight must be between 0 and 1, got {text_weight}.")
    try:
        with torch.inference_mode():
            composed = model.get_composed_features(
                image_embeds=torch.from_numpy(np.asarray(image_embeds, np.float32))[None],
                text_embeds=torch.tensor(text_embeds)[None], method=method, text_weight=text_weight)
    except ValueError as error:
        raise QueryError(str(error)) from None
    return F.normalize(composed, dim=-1)[0].float().numpy()


__all__ = ["compose", "keep_reference"]
