"""The product's cut-out in a shopper's photo, chosen among several (`EngineSettings.choose_cutout`).

GrabCut from one centred box keeps the wrong object or most of the background in about one photo in seven (dev
renders: mask IoU below 0.5 for 14%). Without a user's box the engine also cuts the product out from 9 other
windows (`modeling.data.photos.cutout_candidates`) and searches the cut-out with the highest score: its mean mask
IoU with the other cut-outs (what most of them agree on) plus its cosine to its nearest allowed catalog item (how
much it looks like a product of the catalog; the fused cosine where the engine has a second encoder).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from modeling.data.images import load_image
from modeling.data.photos import Isolation, cutout_candidates, mask_consensus, parse_box, query_photo

# Weight of the nearest-item cosine beside the mask consensus, chosen on dev (200 val products on the dev backgrounds,
# served P@10 of each cut-out of each photo looked up per rule; photo / phone): the centred cut-out 0.722 / 0.668;
# consensus alone 0.761 / 0.671; + cosine at 1, 2, 4, 8: 0.763 / 0.690, 0.762 / 0.699, 0.756 / 0.718, 0.756 / 0.719.
SIMILARITY_WEIGHT = 4.0


def cutout_scores(masks: Sequence[np.ndarray], similarities: np.ndarray,
                  weight: float = SIMILARITY_WEIGHT) -> np.ndarray:
    """Each cut-out's score: its mask consensus plus `weight` times its nearest-item cosine."""
    return mask_consensus(masks) + weight * np.asarray(similarities, np.float64)


def choose_cutout(candidates: Sequence[Isolation], similarities) -> Isolation:
    """The best-scoring cut-out (the first on ties); `similarities(images)` gives the cut-outs' nearest-item
    cosines. A single candidate is returned without computing anything."""
    if len(candidates) == 1:
        return candidates[0]
    scores = cutout_scores([c.mask for c in candidates], similarities([c.image for c in candidates]))
    return candidates[int(np.argmax(scores))]


def prepared_photo(engine, image, box=None, scope=None) -> Isolation:
    """`engine.prepare_photo`: `query_photo` (a user's box, a photo already prepared, or without `choose_cutout`);
    else the best of `cutout_candidates` by their nearest items in `scope` (None: every item)."""
    settings = engine.settings
    if not settings.choose_cutout or isinstance(image, Isolation) or parse_box(box) is not None:
        return query_photo(image, box, settings.isolate_photos, settings.refine_photos)
    image = load_image(image)
    first = query_photo(image, None, settings.isolate_photos, settings.refine_photos)
    return choose_cutout(cutout_candidates(image, first, refine=settings.refine_photos),
                         lambda images: nearest_cosines(engine, images, scope))


def nearest_cosines(engine, images, scope) -> np.ndarray:
    """Each image's cosine to its nearest item allowed by `scope` (None: every item), as `search_image` finds a
    photo's neighbours: the fused cosine where the engine has a second encoder, else the model's."""
    scope = scope or engine.catalog.scope(None)
    photos = engine.encode_images(images)
    fused = engine.photo_fusion is not None and engine.settings.photo_fusion > 0
    seconds = engine.photo_fusion.encode_images(images) if fused else None
    best = []
    for i, photo in enumerate(photos):
        if seconds is None:
            scores, _, _ = engine.backend.nearest(photo, 1, scope)
        else:
            scores, _ = engine.photo_fusion.nearest(engine.item_vectors(), photo, seconds[i],
                                                    engine.settings.photo_fusion, 1, scope.mask)
        best.append(float(scores[0]) if len(scores) else -1.0)
    return np.array(best)


__all__ = ["SIMILARITY_WEIGHT", "choose_cutout", "cutout_scores", "nearest_cosines", "prepared_photo"]
