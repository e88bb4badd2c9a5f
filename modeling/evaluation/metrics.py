# coding=utf-8
"""
Retrieval metrics.

Every metric is defined on a ranking of the gallery by descending similarity, ties broken by lower gallery
position, so results are deterministic and can be checked against a brute-force `sorted(...)` reference. The
implementations are vectorised and process queries in chunks, so a 15k x 15k similarity matrix never exists in
memory at once.

Conventions:

* precision@k divides by `k` even when the gallery holds fewer than `k` items (missing slots count as
  non-relevant);
* "r@k" / hit@k is the share of queries with at least one relevant item in the top `k`;
* queries without any relevant item count as misses (hit 0, reciprocal rank 0); nDCG is undefined (NaN) for them.

General ranking metrics ([`ranking_metrics`], [`score_metrics`], [`single_target_metrics`]) accept graded
relevance (non-negative gains; an item is relevant when its gain is > 0) as well as binary relevance and single
targets. In these:

* recall@k is the share of a query's relevant items retrieved in the top `k` (not the hit rate), hit@k the share of
  queries with at least one relevant item in the top `k` (the two agree for single targets);
* AP@k is `sum_{i <= k} precision@i * rel_i / min(k, num_relevant)`; nDCG@k uses linear gains `g / log2(rank + 1)`
  and the ideal DCG of the `k` largest gains of the query's relevant items;
* recall, mAP and nDCG are undefined for queries without any relevant item: they are left out of those means
  (NaN per query) and counted separately, while hit, precision and MRR count them as misses (0).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np


def _check_k(k: int) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    return int(k)


def _check_scores(scores: np.ndarray, relevance: np.ndarray, exclude_self: bool) -> tuple[np.ndarray, np.ndarray]:
    scores = np.asarray(scores)
    if not np.issubdtype(scores.dtype, np.floating):
        # Rankings negate scores, which wraps around for unsigned integers.
        scores = scores.astype(np.float64)
    relevance = np.asarray(relevance, dtype=bool)
    if scores.ndim != 2 or relevance.shape != scores.shape:
        raise ValueError(
            f"scores and relevance must be 2-D arrays of the same shape, got {scores.shape} and {relevance.shape}"
        )
    if scores.shape[0] == 0:
        raise ValueError("no queries")
    if exclude_self and scores.shape[0] != scores.shape[1]:
        raise ValueError(f"exclude_self needs a square score matrix, got {scores.shape}")
    if np.isnan(scores).any():
        raise ValueError("scores contain NaN")
    return scores, relevance


def topk_indices(scores: np.ndarray, k: int, self_index: np.ndarray | None = None) -> np.ndarray:
    """
    Gallery positions of the top `min(k, gallery size)` items per row of `scores`, best first, ties broken by
    lower position. `self_index[i]`, when given, is a column that row `i` must not return.
    """
    num_queries, num_items = scores.shape
    top = min(k, num_items - (self_index is not None))
    if top <= 0:
        return np.empty((num_queries, 0), dtype=np.int64)
    rows = np.arange(num_queries)
    if self_index is not None:
        scores = scores.astype(np.result_type(scores.dtype, np.float32), copy=True)
        scores[rows, self_index] = -np.inf

    # Select exactly `top` columns per row without sorting whole rows: everything above the top-th largest value,
    # then the lowest-positioned items equal to it.
    threshold = np.partition(scores, num_items - top, axis=1)[:, num_items - top]
    selected = scores > threshold[:, None]
    equal = scores == threshold[:, None]
    if self_index is not None:
        # The excluded item is -inf and could only tie with a -inf threshold.
        equal[rows, self_index] = False
    need = top - selected.sum(axis=1)
    tied = equal.sum(axis=1) > need
    if tied.any():
        ties = equal[tied]
        ties &= np.cumsum(ties, axis=1, dtype=np.int32) <= need[tied, None]
        equal[tied] = ties
    selected |= equal

    # np.nonzero walks row by row in column order, so each row's `top` positions come out ascending and the
    # stable sort keeps lower positions first among equal scores.
    columns = np.nonzero(selected)[1].reshape(num_queries, top)
    order = np.argsort(-np.take_along_axis(scores, columns, axis=1), axis=1, kind="stable")
    return np.take_along_axis(columns, order, axis=1)


def _pad(rel_topk: np.ndarray, k: int) -> np.ndarray:
    if rel_topk.shape[1] == k:
        return rel_topk
    return np.pad(rel_topk, ((0, 0), (0, k - rel_topk.shape[1])), constant_values=False)


def ranked_relevance(
    scores: np.ndarray, relevance: np.ndarray, k: int, exclude_self: bool = False
) -> np.ndarray:
    """
    Relevance of the top-`k` items of each query's ranking.

    Args:
        scores (`np.ndarray` of shape `(num_queries, num_items)`):
            Similarities; higher ranks first, ties broken by lower item position.
        relevance (`np.ndarray` of shape `(num_queries, num_items)`):
            Whether each item is relevant to each query.
        k (`int`):
            Ranking depth.
        exclude_self (`bool`, *optional*, defaults to `False`):
            Queries are the gallery items themselves (square matrices): item `i` is removed from query `i`'s ranking.

    Returns:
        `np.ndarray` of shape `(num_queries, k)`, bool: relevance at ranks 1..k, `False` past the end of the gallery.
    """
    k = _check_k(k)
    scores, relevance = _check_scores(scores, relevance, exclude_self)
    self_index = np.arange(len(scores)) if exclude_self else None
    top = topk_indices(scores, k, self_index)
    return _pad(np.take_along_axis(relevance, top, axis=1), k)


def _check_rel_topk(rel_topk: np.ndarray, k: int) -> np.ndarray:
    k = _check_k(k)
    rel_topk = np.asarray(rel_topk, dtype=bool)
    if rel_topk.ndim != 2 or rel_topk.shape[0] == 0:
        raise ValueError(f"rel_topk must be a non-empty (num_queries, depth) array, got shape {rel_topk.shape}")
    if rel_topk.shape[1] < k:
        raise ValueError(f"rel_topk holds {rel_topk.shape[1]} ranks, fewer than k={k}")
    return rel_topk[:, :k]


def precision_at_k(rel_topk: np.ndarray, k: int) -> np.ndarray:
    """Per query: number of relevant items among the first `k` of `rel_topk` (from [`ranked_relevance`]), over `k`."""
    return _check_rel_topk(rel_topk, k).sum(axis=1) / k


def hit_at_k(rel_topk: np.ndarray, k: int) -> np.ndarray:
    """Per query: 1.0 if any of the first `k` items of `rel_topk` is relevant, else 0.0 (its mean is R@k)."""
    return _check_rel_topk(rel_topk, k).any(axis=1).astype(np.float64)


def ndcg_at_k(rel_topk: np.ndarray, n_relevant: np.ndarray, k: int) -> np.ndarray:
    """
    Per query: binary-gain nDCG@k, `sum(rel_i / log2(i + 1))` over ranks `i = 1..k` divided by the same sum for
    an ideal ranking with `min(k, n_relevant)` relevant items first. NaN where `n_relevant == 0`, so callers can
    skip and count those queries.
    """
    rel_topk = _check_rel_topk(rel_topk, k)
    n_relevant = np.asarray(n_relevant)
    if n_relevant.shape != (len(rel_topk),) or not np.issubdtype(n_relevant.dtype, np.integer):
        raise ValueError(f"n_relevant must be an integer array of shape ({len(rel_topk)},), got {n_relevant.shape}")
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    dcg = rel_topk @ discounts
    ideal = np.concatenate([[0.0], np.cumsum(discounts)])[np.clip(n_relevant, 0, k)]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n_relevant > 0, dcg / ideal, np.nan)


def _first_relevant_rank(
    scores: np.ndarray, relevance: np.ndarray, exclude: np.ndarray | None = None
) -> np.ndarray:
    """
    Per row: the 1-based rank of the first relevant item in the full ranking of `scores` (ties broken by lower
    position), 0 when the row has no relevant item. Items where the boolean mask `exclude` is set are removed
    from both the ranking and the relevant set.
    """
    num_items = scores.shape[1]
    if exclude is not None:
        relevance = relevance & ~exclude
    has_relevant = relevance.any(axis=1)
    # The first relevant item in the ranking is the best-scoring relevant one, lowest position among ties.
    best = np.where(relevance, scores, -np.inf).max(axis=1)
    first = np.argmax(relevance & (scores == best[:, None]), axis=1)
    ahead = (scores > best[:, None]) | ((scores == best[:, None]) & (np.arange(num_items) < first[:, None]))
    if exclude is not None:
        ahead &= ~exclude
    return np.where(has_relevant, 1 + ahead.sum(axis=1), 0)


def _reciprocal_rank(scores: np.ndarray, relevance: np.ndarray, self_index: np.ndarray | None) -> np.ndarray:
    exclude = None
    if self_index is not None:
        exclude = np.zeros(scores.shape, dtype=bool)
        exclude[np.arange(len(scores)), self_index] = True
    rank = _first_relevant_rank(scores, relevance, exclude)
    return np.where(rank > 0, 1.0 / np.maximum(rank, 1), 0.0)


def reciprocal_rank(scores: np.ndarray, relevance: np.ndarray, exclude_self: bool = False) -> np.ndarray:
    """
    Per query: `1 / rank` of the first relevant item in the full ranking (see [`ranked_relevance`] for the
    arguments), 0 when the query has no relevant item.
    """
    scores, relevance = _check_scores(scores, relevance, exclude_self)
    return _reciprocal_rank(scores, relevance, np.arange(len(scores)) if exclude_self else None)


def _normalise(x: np.ndarray, name: str) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"{name} must be a non-empty 2-D array, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)


def check_chunk(chunk: int) -> int:
    if isinstance(chunk, bool) or not isinstance(chunk, (int, np.integer)) or chunk < 1:
        raise ValueError(f"chunk must be a positive integer, got {chunk!r}")
    return int(chunk)


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
    k = _check_k(k)
    chunk = check_chunk(chunk)
    embeddings = _normalise(embeddings, "embeddings")
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
    ks = [_check_k(k) for k in ks]
    if not ks:
        raise ValueError("ks must not be empty")
    chunk = check_chunk(chunk)
    queries = _normalise(query_embeddings, "query_embeddings")
    gallery = _normalise(gallery_embeddings, "gallery_embeddings")
    if queries.shape[1] != gallery.shape[1]:
        raise ValueError(f"query dim {queries.shape[1]} != gallery dim {gallery.shape[1]}")
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
        rel_topk = _pad(np.take_along_axis(relevance, topk_indices(scores, depth), axis=1), depth)
        for k in ks:
            hits[k] += int(rel_topk[:, :k].any(axis=1).sum())
        reciprocal_ranks[start:stop] = _reciprocal_rank(scores, relevance, None)
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
        if not isinstance(text, str):
            continue
        normalised = re.sub(r"\s+", " ", text).strip().lower()
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
            "Any matching item" relevance (e.g. from `modeling.composed_data.composed_relevance_matrix`): without
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
    ks = sorted({_check_k(k) for k in ks})
    if not ks:
        raise ValueError("ks must not be empty")
    named = {"": relevance} if exact_relevance is None else {"": relevance, "exact_": exact_relevance}
    if scores is not None:
        named = {prefix: ranked_relevance(scores, matrix, ks[-1]) for prefix, matrix in named.items()}
    named = {prefix: np.asarray(matrix, dtype=bool) for prefix, matrix in named.items()}
    shapes = {matrix.shape for matrix in named.values()}
    if len(shapes) != 1:
        raise ValueError(f"relevance and exact_relevance must have the same shape, got {sorted(shapes)}")
    _check_rel_topk(named[""], 1)  # a non-empty (num_queries, depth) array
    depth = named[""].shape[1]
    reported = [k for k in ks if k <= depth]
    if not reported:
        raise ValueError(f"the rankings hold {depth} ranks, fewer than every k in {ks}")
    ks = reported
    return {f"{prefix}r@{k}": float(hit_at_k(matrix, k).mean()) for prefix, matrix in named.items() for k in ks}


# -- general ranking metrics: graded relevance, binary relevance and single targets ---------------------------------


def _check_ks(ks: Sequence[int]) -> list[int]:
    ks = sorted({_check_k(k) for k in ks})
    if not ks:
        raise ValueError("ks must not be empty")
    return ks


def _is_real(dtype: np.dtype) -> bool:
    return dtype == bool or np.issubdtype(dtype, np.integer) or np.issubdtype(dtype, np.floating)


def _as_gains(gains: np.ndarray, name: str) -> np.ndarray:
    """`gains` as float64 (bool -> 0/1), rejecting non-numeric, non-finite and negative values."""
    gains = np.asarray(gains)
    if not _is_real(gains.dtype):
        raise ValueError(f"{name} must hold bool or real non-negative gains, got dtype {gains.dtype}")
    gains = gains.astype(np.float64)
    if not np.isfinite(gains).all():
        raise ValueError(f"{name} contains NaN or infinite gains")
    if (gains < 0).any():
        raise ValueError(f"{name} contains negative gains")
    return gains


def _ranking_per_query(
    gains: np.ndarray, num_relevant: np.ndarray, ideal_topk: np.ndarray, ks: list[int]
) -> dict[str, np.ndarray]:
    """
    Per-query metrics from validated float64 `gains` of shape `(num_queries, depth >= max(ks))`, the relevant
    counts and the `max(ks)` largest ideal gains of each query, descending (zero-padded). Every value is computed
    row by row (cumulative sums, no reductions across rows), so it does not depend on how queries are chunked.
    """
    depth = ks[-1]
    relevant = gains > 0
    positions = np.arange(1, depth + 1)
    discounts = 1.0 / np.log2(positions + 1.0)
    retrieved = np.cumsum(relevant[:, :depth], axis=1)  # relevant items among ranks 1..i
    precision_sum = np.cumsum(relevant[:, :depth] * (retrieved / positions), axis=1)
    dcg = np.cumsum(gains[:, :depth] * discounts, axis=1)
    ideal_dcg = np.cumsum(ideal_topk * discounts, axis=1)
    defined = num_relevant > 0
    safe_relevant = np.maximum(num_relevant, 1)

    per_query = {}
    for k in ks:
        count = retrieved[:, k - 1]
        per_query[f"recall@{k}"] = np.where(defined, count / safe_relevant, np.nan)
        per_query[f"hit@{k}"] = (count > 0).astype(np.float64)
        per_query[f"precision@{k}"] = count / k
        per_query[f"map@{k}"] = np.where(defined, precision_sum[:, k - 1] / np.minimum(k, safe_relevant), np.nan)
        with np.errstate(invalid="ignore", divide="ignore"):
            per_query[f"ndcg@{k}"] = np.where(defined, dcg[:, k - 1] / ideal_dcg[:, k - 1], np.nan)
    any_relevant = relevant.any(axis=1)
    first = np.argmax(relevant, axis=1)
    per_query["mrr"] = np.where(any_relevant, 1.0 / (1 + first), 0.0)
    return per_query


def _summarise(per_query: dict[str, np.ndarray], num_relevant: np.ndarray) -> dict[str, float]:
    defined = num_relevant > 0
    metrics: dict[str, float] = {}
    # Group the keys by metric ("recall@1", "recall@5", ..., "hit@1", ...) for readable tables.
    names = sorted(per_query, key=lambda key: ["recall", "hit", "precision", "map", "ndcg", "mrr"].index(
        key.split("@")[0]))
    for key in names:
        values = per_query[key]
        if key.split("@")[0] in ("recall", "map", "ndcg"):
            metrics[key] = float(values[defined].mean()) if defined.any() else float("nan")
        else:
            metrics[key] = float(values.mean())
    metrics["num_queries"] = len(num_relevant)
    metrics["num_queries_without_relevant"] = int((~defined).sum())
    return metrics


def ranking_metrics(
    gains_topk: np.ndarray,
    num_relevant: np.ndarray,
    ks: Sequence[int] = (1, 5, 10, 50),
    ideal_gains: Sequence[np.ndarray] | None = None,
    *,
    per_query: bool = False,
) -> dict[str, float] | tuple[dict[str, float], dict[str, np.ndarray]]:
    """
    Ranking metrics of already-ranked results, for binary or graded relevance.

    Args:
        gains_topk (`np.ndarray` of shape `(num_queries, depth)`):
            Non-negative gain of each query's results at ranks 1..depth (bool: binary gains); an item is relevant
            when its gain is > 0. Ranks past the end of a short gallery hold 0. `depth` must be at least `max(ks)`.
        num_relevant (`np.ndarray` of shape `(num_queries,)`, integer):
            Number of items with gain > 0 for each query in the whole gallery (at least the number visible in
            `gains_topk`).
        ks (`Sequence[int]`, *optional*, defaults to `(1, 5, 10, 50)`):
            Depths at which to report the metrics.
        ideal_gains (`Sequence[np.ndarray]`, *optional*):
            Per query, the gains of all its relevant items in any order (zeros are ignored), for graded nDCG.
            Defaults to `num_relevant` gains of 1, which needs binary `gains_topk` (a `ValueError` is raised for
            graded gains without `ideal_gains`).
        per_query (`bool`, *optional*, defaults to `False`):
            Also return the per-query values, e.g. to average over subsets of queries.

    Returns:
        `dict[str, float]` with, for each k, `"recall@{k}"` (share of the query's relevant items in the top k),
        `"hit@{k}"` (share of queries with at least one relevant item in the top k), `"precision@{k}"` (relevant
        items in the top k over k), `"map@{k}"` (mean AP@k, `sum_{i <= k} precision@i * rel_i / min(k,
        num_relevant)`), `"ndcg@{k}"` (linear gains `g / log2(rank + 1)` over the DCG of the k largest ideal
        gains); `"mrr"` (mean reciprocal rank of the first relevant item within the `depth` ranks given, 0 when
        there is none); `"num_queries"` and `"num_queries_without_relevant"` (ints).

        Recall, mAP and nDCG are undefined for queries with `num_relevant == 0`: they are averaged over the other
        queries only (NaN if there are none); hit, precision and MRR average over all queries, counting those as
        misses. With `per_query=True`, a second `dict[str, np.ndarray]` holds the `(num_queries,)` values of every
        metric (NaN where undefined).
    """
    ks = _check_ks(ks)
    gains = _as_gains(gains_topk, "gains_topk")
    if gains.ndim != 2 or gains.shape[0] == 0:
        raise ValueError(f"gains_topk must be a non-empty (num_queries, depth) array, got shape {gains.shape}")
    num_queries, depth = gains.shape
    if depth < ks[-1]:
        raise ValueError(f"gains_topk holds {depth} ranks, fewer than max(ks)={ks[-1]}")
    num_relevant = np.asarray(num_relevant)
    if num_relevant.shape != (num_queries,) or not np.issubdtype(num_relevant.dtype, np.integer):
        raise ValueError(
            f"num_relevant must be an integer array of shape ({num_queries},), got {num_relevant.dtype} "
            f"{num_relevant.shape}"
        )
    num_relevant = num_relevant.astype(np.int64)
    visible = (gains > 0).sum(axis=1)
    if (num_relevant < visible).any():
        query = int(np.argmax(num_relevant < visible))
        raise ValueError(
            f"num_relevant[{query}]={num_relevant[query]} is smaller than the {visible[query]} relevant items "
            "visible in gains_topk"
        )

    top = ks[-1]
    if ideal_gains is None:
        if not np.isin(gains, (0.0, 1.0)).all():
            raise ValueError("gains_topk holds graded gains: pass ideal_gains for graded nDCG")
        ideal_topk = (np.arange(top) < num_relevant[:, None]).astype(np.float64)
    else:
        if len(ideal_gains) != num_queries:
            raise ValueError(f"ideal_gains has {len(ideal_gains)} entries for {num_queries} queries")
        ideal_topk = np.zeros((num_queries, top))
        for query, ideal in enumerate(ideal_gains):
            ideal = _as_gains(ideal, f"ideal_gains[{query}]")
            if ideal.ndim != 1:
                raise ValueError(f"ideal_gains[{query}] must be 1-D, got shape {ideal.shape}")
            ideal = -np.sort(-ideal[ideal > 0])
            if len(ideal) != num_relevant[query]:
                raise ValueError(
                    f"ideal_gains[{query}] holds {len(ideal)} positive gains but num_relevant[{query}]="
                    f"{num_relevant[query]}"
                )
            # The visible gains are some of the query's relevant gains: the i-th largest of them cannot exceed the
            # i-th largest ideal gain (this also keeps nDCG <= 1).
            shown = -np.sort(-gains[query][gains[query] > 0])
            if (shown > ideal[: len(shown)]).any():
                raise ValueError(f"gains_topk[{query}] holds gains that ideal_gains[{query}] does not contain")
            ideal_topk[query, : min(top, len(ideal))] = ideal[:top]

    values = _ranking_per_query(gains, num_relevant, ideal_topk, ks)
    metrics = _summarise(values, num_relevant)
    return (metrics, values) if per_query else metrics


def _check_exclude(exclude: np.ndarray | str | None, shape: tuple[int, int]) -> np.ndarray | str | None:
    if exclude is None:
        return None
    if isinstance(exclude, str):
        if exclude != "self":
            raise ValueError(f"exclude must be None, 'self' or a boolean mask, got {exclude!r}")
        if shape[0] != shape[1]:
            raise ValueError(f"exclude='self' needs a square score matrix, got {shape}")
        return exclude
    exclude = np.asarray(exclude)
    if exclude.dtype != bool or exclude.shape != shape:
        raise ValueError(f"exclude must be a boolean mask of shape {shape}, got {exclude.dtype} {exclude.shape}")
    return exclude


def _exclude_rows(exclude: np.ndarray | str | None, start: int, stop: int, num_items: int) -> np.ndarray | None:
    if exclude is None:
        return None
    if isinstance(exclude, str):  # "self"
        rows = np.zeros((stop - start, num_items), dtype=bool)
        rows[np.arange(stop - start), np.arange(start, stop)] = True
        return rows
    return exclude[start:stop]


def _check_score_matrix(scores: np.ndarray) -> np.ndarray:
    scores = np.asarray(scores)
    if not _is_real(scores.dtype):
        raise ValueError(f"scores must be a real-valued array, got dtype {scores.dtype}")
    if scores.ndim != 2 or scores.shape[0] == 0 or scores.shape[1] == 0:
        raise ValueError(f"scores must be a non-empty 2-D array, got shape {scores.shape}")
    return scores


def _score_rows(scores: np.ndarray, start: int, stop: int) -> np.ndarray:
    rows = scores[start:stop]
    if not np.issubdtype(rows.dtype, np.floating):
        # Rankings negate scores, which wraps around for unsigned integers.
        rows = rows.astype(np.float64)
    if np.isnan(rows).any():
        raise ValueError("scores contain NaN")
    return rows


def _ranked_gains(scores: np.ndarray, gains: np.ndarray, exclude: np.ndarray | None, depth: int) -> np.ndarray:
    """Gains at ranks 1..depth of each row's ranking, excluded items removed, zero-padded past the gallery's end."""
    if exclude is None or not exclude.any():
        top = topk_indices(scores, depth)
        return _pad(np.take_along_axis(gains, top, axis=1), depth)
    # Excluded items sink to -inf, below every other item unless some scores are -inf themselves: then they tie
    # with those, and looking `max excluded` ranks deeper guarantees `depth` items that are not excluded.
    masked = np.where(exclude, -np.inf, scores)
    extra = int(exclude.sum(axis=1).max()) if np.isneginf(scores[~exclude]).any() else 0
    top = topk_indices(masked, depth + extra)
    kept = ~np.take_along_axis(exclude, top, axis=1)
    # A stable sort moves the kept ranks first, in ranking order.
    order = np.argsort(~kept, axis=1, kind="stable")[:, :depth]
    ranked = np.where(kept, np.take_along_axis(gains, top, axis=1), 0.0)
    return _pad(np.take_along_axis(ranked, order, axis=1), depth)


def _largest(gains: np.ndarray, depth: int) -> np.ndarray:
    """The `depth` largest values of each row, descending, zero-padded."""
    num_items = gains.shape[1]
    if num_items > depth:
        gains = np.partition(gains, num_items - depth, axis=1)[:, num_items - depth :]
    largest = np.sort(gains, axis=1)[:, ::-1]
    return _pad(largest, depth)


def score_metrics(
    scores: np.ndarray,
    relevance: np.ndarray,
    ks: Sequence[int] = (1, 5, 10, 50),
    exclude: np.ndarray | str | None = None,
    chunk: int = 1024,
    per_query: bool = False,
) -> dict[str, float] | tuple[dict[str, float], dict[str, np.ndarray]]:
    """
    [`ranking_metrics`] of the rankings of a score matrix, for binary or graded relevance.

    Args:
        scores (`np.ndarray` of shape `(num_queries, num_items)`):
            Query-item similarities; higher ranks first, ties broken by lower item position.
        relevance (`np.ndarray` of shape `(num_queries, num_items)`):
            Bool relevance or non-negative gains (graded nDCG uses the gains; relevant means gain > 0).
        ks (`Sequence[int]`, *optional*, defaults to `(1, 5, 10, 50)`):
            Depths at which to report the metrics; depths beyond the gallery count the missing ranks as misses.
        exclude (`np.ndarray` or `"self"`, *optional*):
            Boolean `(num_queries, num_items)` mask of items removed from each query's ranking and from its relevant
            set (e.g. the query image itself); `"self"` removes item `i` from query `i` (square matrices).
        chunk (`int`, *optional*, defaults to 1024):
            Queries ranked at once; bounds memory at a few `chunk * num_items` arrays.
        per_query (`bool`, *optional*, defaults to `False`):
            Also return the per-query values (see [`ranking_metrics`]).

    Returns:
        The same as [`ranking_metrics`] (ideal gains taken from each relevance row after exclusion), except that
        `"mrr"` is the reciprocal rank of the first relevant item in the full ranking, not only within `max(ks)`
        ranks (as in [`reciprocal_rank`]).
    """
    ks = _check_ks(ks)
    chunk = check_chunk(chunk)
    scores = _check_score_matrix(scores)
    relevance = np.asarray(relevance)
    if relevance.shape != scores.shape:
        raise ValueError(f"relevance must have the shape of scores {scores.shape}, got {relevance.shape}")
    exclude = _check_exclude(exclude, scores.shape)
    num_queries, num_items = scores.shape
    depth = ks[-1]

    parts: list[dict[str, np.ndarray]] = []
    num_relevant = np.empty(num_queries, dtype=np.int64)
    for start in range(0, num_queries, chunk):
        stop = min(start + chunk, num_queries)
        rows = _score_rows(scores, start, stop)
        gains = _as_gains(relevance[start:stop], "relevance")
        excluded = _exclude_rows(exclude, start, stop, num_items)
        if excluded is not None:
            gains[excluded] = 0.0
        relevant = gains > 0
        num_relevant[start:stop] = relevant.sum(axis=1)
        values = _ranking_per_query(
            _ranked_gains(rows, gains, excluded, depth), num_relevant[start:stop], _largest(gains, depth), ks
        )
        rank = _first_relevant_rank(rows, relevant, excluded)
        values["mrr"] = np.where(rank > 0, 1.0 / np.maximum(rank, 1), 0.0)
        parts.append(values)
    values = {key: np.concatenate([part[key] for part in parts]) for key in parts[0]}
    metrics = _summarise(values, num_relevant)
    return (metrics, values) if per_query else metrics


def single_target_metrics(
    scores: np.ndarray,
    targets: np.ndarray,
    ks: Sequence[int] = (1, 5, 10, 50),
    exclude: np.ndarray | str | None = None,
    chunk: int = 1024,
    *,
    per_query: bool = False,
) -> dict[str, float] | tuple[dict[str, float], dict[str, np.ndarray]]:
    """
    Recall@K of single-target retrieval (one relevant item per query), the published Recall@K convention.

    Args:
        scores (`np.ndarray` of shape `(num_queries, num_items)`):
            Query-item similarities; higher ranks first, ties broken by lower item position.
        targets (`np.ndarray` of shape `(num_queries,)`, integer):
            The gallery position of each query's target.
        ks (`Sequence[int]`, *optional*, defaults to `(1, 5, 10, 50)`):
            Depths at which to report recall.
        exclude (`np.ndarray` or `"self"`, *optional*):
            Items removed from each query's ranking, as in [`score_metrics`]; a query's target must not be excluded.
        chunk (`int`, *optional*, defaults to 1024):
            Queries scored at once.
        per_query (`bool`, *optional*, defaults to `False`):
            Also return the per-query values: `"rank"` (1-based rank of the target), `"r@{k}"` and `"mrr"`.

    Returns:
        `dict[str, float]` with `"r@{k}"` for each k (share of queries whose target is in the top k) and `"mrr"`
        (mean of 1 / the target's rank in the full ranking, not truncated at `max(ks)`).
    """
    ks = _check_ks(ks)
    chunk = check_chunk(chunk)
    scores = _check_score_matrix(scores)
    num_queries, num_items = scores.shape
    targets = np.asarray(targets)
    if targets.shape != (num_queries,) or not np.issubdtype(targets.dtype, np.integer):
        raise ValueError(f"targets must be an integer array of shape ({num_queries},), got {targets.dtype} "
                         f"{targets.shape}")
    if targets.min() < 0 or targets.max() >= num_items:
        raise ValueError(f"targets must be gallery positions in [0, {num_items})")
    exclude = _check_exclude(exclude, scores.shape)

    ranks = np.empty(num_queries, dtype=np.int64)
    for start in range(0, num_queries, chunk):
        stop = min(start + chunk, num_queries)
        rows = _score_rows(scores, start, stop)
        local = np.arange(stop - start)
        relevance = np.zeros(rows.shape, dtype=bool)
        relevance[local, targets[start:stop]] = True
        excluded = _exclude_rows(exclude, start, stop, num_items)
        if excluded is not None and excluded[local, targets[start:stop]].any():
            query = start + int(np.argmax(excluded[local, targets[start:stop]]))
            raise ValueError(f"the target of query {query} is excluded from its ranking")
        ranks[start:stop] = _first_relevant_rank(rows, relevance, excluded)
    values = {f"r@{k}": (ranks <= k).astype(np.float64) for k in ks}
    values["mrr"] = 1.0 / ranks
    metrics = {key: float(value.mean()) for key, value in values.items()}
    return (metrics, {"rank": ranks, **values}) if per_query else metrics
