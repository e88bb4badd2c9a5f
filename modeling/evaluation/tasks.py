"""
Retrieval metrics of the evaluation tasks, numpy only: image -> image ([`image_to_image_metrics`]), text -> image
([`text_to_image_metrics`], with [`group_by_text`] to turn captions into queries) and composed retrieval
([`composed_metrics`]).

Each is built on the rankings and metrics of `modeling.evaluation.metrics` (ranking by descending cosine
similarity, ties broken by lower gallery position; queries processed in chunks, so a 15k x 15k similarity matrix
never exists in memory at once), where every ranking metric (recall, hit, precision, mAP, nDCG, MRR) is defined.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from modeling.data.text import normalise_text
from modeling.evaluation.metrics import (check_chunk, check_k, check_ks, check_pair, check_rel_topk, hit_at_k,
                                         normalise_rows, pad_ranks, ranked_relevance, reciprocal_rank)
from modeling.utils.topk import topk_indices


def image_to_image_metrics(
    embeddings: np.ndarray, labels: dict[str, np.ndarray], k: int = 10, chunk: int = 1024
) -> dict[str, float]:
    """
    Every item queries all the others (itself excluded) by cosine similarity.

    Args:
        embeddings (`np.ndarray` of shape `(num_items, dim)`):
            Item embeddings; normalised here.
        labels (`dict[str, np.ndarray]`):
            Per-item `"articleType"` and `"baseColour"` labels.
        k (`int`, *optional*, defaults to 10):
            Ranking depth.
        chunk (`int`, *optional*, defaults to 1024):
            Queries scored at once; bounds memory at `chunk * num_items` similarities.

    Returns:
        `dict[str, float]` with `"p@{k}"` (mean precision@k, relevant = same articleType), `"top1"` (share of
        queries whose first result has the same articleType) and `"p@{k}_colour"` (mean precision@k, relevant =
        same articleType and baseColour).
    """
    k = check_k(k)
    chunk = check_chunk(chunk)
    embeddings = normalise_rows(embeddings, "embeddings")
    num_items = len(embeddings)
    if num_items < 2:
        raise ValueError("image-to-image retrieval needs at least 2 items")
    codes = {}
    for key in ("articleType", "baseColour"):
        if key not in labels:
            raise ValueError(f"labels must contain {key!r}; got keys {sorted(labels)}")
        values = np.asarray(labels[key]).astype(str)
        if values.shape != (num_items,):
            raise ValueError(f"labels[{key!r}] must have shape ({num_items},), got {values.shape}")
        # Integer codes compare much faster than strings in the (chunk, k) gathers below.
        codes[key] = np.unique(values, return_inverse=True)[1].reshape(-1)
    article, colour = codes["articleType"], codes["baseColour"]

    # Integer counts, divided once at the end, make the result independent of the chunk size.
    relevant, relevant_colour, top1 = 0, 0, 0
    for start in range(0, num_items, chunk):
        stop = min(start + chunk, num_items)
        top = topk_indices(embeddings[start:stop] @ embeddings.T, k, np.arange(start, stop))
        same_article = article[top] == article[start:stop, None]
        same_colour = same_article & (colour[top] == colour[start:stop, None])
        relevant += int(same_article.sum())
        relevant_colour += int(same_colour.sum())
        top1 += int(same_article[:, 0].sum())
    return {
        f"p@{k}": relevant / (k * num_items),
        "top1": top1 / num_items,
        f"p@{k}_colour": relevant_colour / (k * num_items),
    }


def _relevance_rows(relevant: list[np.ndarray] | np.ndarray, start: int, stop: int, num_items: int) -> np.ndarray:
    if isinstance(relevant, np.ndarray) and relevant.dtype == bool:
        return relevant[start:stop]
    rows = np.zeros((stop - start, num_items), dtype=bool)
    for row, positions in enumerate(relevant[start:stop]):
        rows[row, np.asarray(positions, dtype=np.int64)] = True
    return rows


def text_to_image_metrics(
    query_embeddings: np.ndarray,
    gallery_embeddings: np.ndarray,
    relevant: list[np.ndarray] | np.ndarray,
    ks: Sequence[int] = (1, 10),
    chunk: int = 1024,
) -> dict[str, float]:
    """
    Text queries against an image gallery, by cosine similarity.

    Args:
        query_embeddings (`np.ndarray` of shape `(num_queries, dim)`):
            Query embeddings; normalised here.
        gallery_embeddings (`np.ndarray` of shape `(num_items, dim)`):
            Gallery embeddings; normalised here.
        relevant (`list[np.ndarray]` or `np.ndarray`):
            Per query, the gallery positions relevant to it, or a boolean `(num_queries, num_items)` matrix.
        ks (`Sequence[int]`, *optional*, defaults to `(1, 10)`):
            Depths at which to report recall.
        chunk (`int`, *optional*, defaults to 1024):
            Queries scored at once.

    Returns:
        `dict[str, float]` with `"r@{k}"` for each k (share of queries with at least one relevant item in the
        top k) and `"mrr"` (mean reciprocal rank of the first relevant item).
    """
    ks = check_ks(ks, sort=False)
    chunk = check_chunk(chunk)
    queries, gallery = check_pair(query_embeddings, gallery_embeddings, "query_embeddings", "gallery_embeddings")
    num_queries, num_items = len(queries), len(gallery)
    if isinstance(relevant, np.ndarray) and relevant.dtype == bool:
        if relevant.shape != (num_queries, num_items):
            raise ValueError(f"a relevance matrix must have shape ({num_queries}, {num_items}), got {relevant.shape}")
    else:
        if len(relevant) != num_queries:
            raise ValueError(f"relevant has {len(relevant)} entries for {num_queries} queries")
        for positions in relevant:
            positions = np.asarray(positions)
            if positions.size and (
                not np.issubdtype(positions.dtype, np.integer) or positions.min() < 0 or positions.max() >= num_items
            ):
                raise ValueError(f"relevant positions must be integers in [0, {num_items})")

    depth = max(ks)
    hits = dict.fromkeys(ks, 0)
    reciprocal_ranks = np.empty(num_queries)
    for start in range(0, num_queries, chunk):
        stop = min(start + chunk, num_queries)
        scores = queries[start:stop] @ gallery.T
        relevance = _relevance_rows(relevant, start, stop, num_items)
        rel_topk = pad_ranks(np.take_along_axis(relevance, topk_indices(scores, depth), axis=1), depth)
        for k in ks:
            hits[k] += int(hit_at_k(rel_topk, k).sum())
        reciprocal_ranks[start:stop] = reciprocal_rank(scores, relevance)
    metrics = {f"r@{k}": hits[k] / num_queries for k in ks}
    metrics["mrr"] = float(reciprocal_ranks.mean())
    return metrics


def group_by_text(texts: Sequence[str | None]) -> tuple[list[str], list[np.ndarray]]:
    """
    Groups positions by normalised text (lower-cased, whitespace collapsed and stripped), e.g. to turn item
    captions into distinct text queries whose relevant items are all items sharing the caption.

    Empty texts and non-strings (`None`, NaN) are dropped.

    Returns:
        `tuple[list[str], list[np.ndarray]]`: the distinct normalised texts in first-seen order, and for each the
        int64 array of positions having it.
    """
    groups: dict[str, list[int]] = {}
    for position, text in enumerate(texts):
        normalised = normalise_text(text)
        if normalised:
            groups.setdefault(normalised, []).append(position)
    return list(groups), [np.asarray(positions, dtype=np.int64) for positions in groups.values()]


def composed_metrics(
    relevance: np.ndarray,
    exact_relevance: np.ndarray | None = None,
    ks: Sequence[int] = (1, 10, 50),
    scores: np.ndarray | None = None,
) -> dict[str, float]:
    """
    Recall of composed retrieval (reference image + modification text -> target), for two definitions of a hit.

    Args:
        relevance (`np.ndarray`):
            "Any matching item" relevance (e.g. from `modeling.data.composed.composed_relevance_matrix`): without
            `scores`, the relevance of each query's top-K ranked results, shape `(num_queries, K)` (from
            [`ranked_relevance`]); with `scores`, the full `(num_queries, num_items)` matrix.
        exact_relevance (`np.ndarray`, *optional*):
            The same for the exact-target definition (only the triplet's target item is relevant).
        ks (`Sequence[int]`, *optional*, defaults to `(1, 10, 50)`):
            Depths at which to report recall; without `scores`, depths beyond K are left out.
        scores (`np.ndarray` of shape `(num_queries, num_items)`, *optional*):
            Query-item similarities; when given, the rankings are computed here with [`ranked_relevance`].

    Returns:
        `dict[str, float]` with `"r@{k}"` (share of queries with at least one relevant item in the top k) and,
        with `exact_relevance`, `"exact_r@{k}"` (share of queries whose target is in the top k), for each k.
    """
    ks = check_ks(ks)
    named = {"": relevance} if exact_relevance is None else {"": relevance, "exact_": exact_relevance}
    if scores is not None:
        named = {prefix: ranked_relevance(scores, matrix, ks[-1]) for prefix, matrix in named.items()}
    named = {prefix: np.asarray(matrix, dtype=bool) for prefix, matrix in named.items()}
    shapes = {matrix.shape for matrix in named.values()}
    if len(shapes) != 1:
        raise ValueError(f"relevance and exact_relevance must have the same shape, got {sorted(shapes)}")
    check_rel_topk(named[""], 1)  # a non-empty (num_queries, depth) array
    depth = named[""].shape[1]
    reported = [k for k in ks if k <= depth]
    if not reported:
        raise ValueError(f"the rankings hold {depth} ranks, fewer than every k in {ks}")
    ks = reported
    return {f"{prefix}r@{k}": float(hit_at_k(matrix, k).mean()) for prefix, matrix in named.items() for k in ks}


__all__ = ["composed_metrics", "group_by_text", "image_to_image_metrics", "text_to_image_metrics"]
