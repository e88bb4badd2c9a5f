"""KAGL-style text -> image (the fashion-CLIP leaderboards).

Each item's title queries the item images; the single target is the item itself (R@1, R@10, MRR over the full
ranking), reported beside the "any item with the same normalised title" variant.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from modeling.data.text import normalise_text
from modeling.evaluation.metrics import check_chunk, check_ks, check_pair
from modeling.evaluation.tasks import group_by_text, text_to_image_metrics

KAGL_KS = (1, 10)


def kagl_text_to_image(
    text_embeds: np.ndarray,
    image_embeds: np.ndarray,
    titles: Sequence[str],
    ks: Sequence[int] = KAGL_KS,
    chunk: int = 1024,
) -> dict[str, Any]:
    """Title -> image retrieval as on the fashion-CLIP leaderboards (KAGL / Myntra catalogs).

    Protocol, as implemented: one query per item, its title embedding `text_embeds[i]`, ranks all `N` item images
    `image_embeds` by cosine similarity (rows L2-normalised), higher first, ties broken by lower item position.

    * `"single_target"`: the only relevant image is item `i`'s own; R@k = share of queries whose item is in the
      top k; MRR = mean of 1 / (rank of the item in the full ranking).
    * `"any_same_title"`: every item whose normalised title (`normalise_text`: lower-cased, whitespace
      collapsed, stripped) equals the query's is relevant (the item itself included; an empty title matches only
      its own item); R@k and MRR of the first relevant image. Always >= the single-target numbers.

    Returns:
        `{"single_target": {"r@k"..., "mrr"}, "any_same_title": {"r@k"..., "mrr"}, "num_queries": N,
        "num_distinct_titles": number of distinct non-empty normalised titles}`.

    Raises:
        ValueError: features not `(N, D)` with the same N and D, non-finite values, `titles` not of length N, bad
            `ks` or `chunk`.
    """
    ks = check_ks(ks, sort=False)
    chunk = check_chunk(chunk)
    texts, images = check_pair(text_embeds, image_embeds, "text_embeds", "image_embeds")
    if len(texts) != len(images):
        raise ValueError(f"text_embeds ({len(texts)} rows) and image_embeds ({len(images)} rows) must both hold "
                         "one row per item")
    if isinstance(titles, str) or len(titles) != len(texts):
        raise ValueError(f"titles must hold one title per item ({len(texts)})")
    num_items = len(texts)
    keys = [normalise_text(title) for title in titles]
    group_arrays = dict(zip(*group_by_text(titles)))
    same_title = [group_arrays[key] if key else np.array([position], dtype=np.int64)
                  for position, key in enumerate(keys)]
    single = [np.array([position], dtype=np.int64) for position in range(num_items)]
    return {
        "single_target": text_to_image_metrics(texts, images, single, ks=ks, chunk=chunk),
        "any_same_title": text_to_image_metrics(texts, images, same_title, ks=ks, chunk=chunk),
        "num_queries": num_items,
        "num_distinct_titles": len(group_arrays),
    }


__all__ = ["KAGL_KS", "kagl_text_to_image"]
